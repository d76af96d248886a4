#!/usr/bin/perl
# alyd -t: good configurations pass, bad ones fail with "file:line: why" and
# exit status 1; -v and unknown flags.
use strict;
use warnings;
use Test::More;
use File::Temp ();
use Alyd;

watchdog(60);

my $alyd = alyd_bin();
my $tmp  = File::Temp->newdir;
my $dir  = $tmp->dirname;
my ($cert, $key) = Alyd->make_cert($dir);
my $jwks = Alyd->make_jwks($dir, $key);
spew("$dir/hs256.secret", 'k' x 40);
my $n = 0;

# Writes @lines to a fresh file and runs alyd -t on it: (exit, stdout, stderr, path).
sub check_conf {
    my (@lines) = @_;
    my $path = "$dir/c" . ++$n . ".conf";
    spew($path, join("\n", @lines) . "\n");
    return (run_cmd($alyd, '-t', '-c', $path), $path);
}

sub good {
    my ($name, @lines) = @_;
    # Started as root, alyd (and so alyd -t) refuses a configuration without "user"; the tests run as root knowingly.
    push @lines, 'user root' if $> == 0 && !(grep { /^\s*user\s/ } @lines);
    my ($exit, $out, $err, $path) = check_conf(@lines);
    is($exit, 0, "$name: alyd -t exits 0") or diag("stderr: $err");
    like($out, qr/^\Q$path\E: configuration OK$/m, "$name: prints configuration OK");
}

# bad(name, expected line, qr/what the message must say/, lines...)
sub bad {
    my ($name, $line, $why, @lines) = @_;
    my ($exit, $out, $err, $path) = check_conf(@lines);
    is($exit, 1, "$name: alyd -t exits 1");
    like($err, qr/\A\Q$path\E:\Q$line\E: /, "$name: message starts with $path:$line:") or diag("stderr: $err");
    like($err, $why, "$name: message names the problem") or diag("stderr: $err");
    unlike($out, qr/configuration OK/, "$name: no configuration OK");
}

my $p = free_port();

# --- good configurations -------------------------------------------------
good('minimal', "listen 127.0.0.1:$p", "data_dir $dir/data");
good('empty file');
good('comments and blank lines', '# a comment', '', "  listen 127.0.0.1:$p   # trailing comment", "\tworkers 2");

# Every directive of the table, with valid values.
good(
    'every directive',
    "listen 127.0.0.1:$p",
    "listen 127.0.0.1:" . ($p + 1) . " tls",
    "listen [::1]:$p",
    "tls_certificate $cert",
    "tls_key $key",
    'workers 4',
    'max_connections 512',
    'idle_timeout 15s',
    "data_dir $dir/data",
    'map_size 64m',
    'volatile_map_size 32m',
    "pid_file $dir/alyd.pid",
    'user ' . scalar(getpwuid($<)),     # ourselves: valid whether or not we are root
    'group ' . scalar(getgrgid($( + 0)),
    "error_log $dir/error.log",
    'access_log off',
    'public_url https://aly.example/',
    'allowed_origins https://aly.example https://claude.ai',
    'allowed_hosts aly.example',
    "key_pepper_file $dir/pepper",
    'rate_limit 120/minute burst=20',
    'auth_failure_limit 10/minute',
    'oauth_client_rate_limit my-client 60/minute burst=10',
    'oauth_issuer https://auth.example',
    "oauth_hs256_secret_file $dir/hs256.secret",
    "oauth_jwks_file $jwks",
    'oauth_leeway 30s',
    'authorization_servers https://auth.example https://auth2.example',
    'max_request_body 512k',
    'shutdown_timeout 5s',
    'session_ttl 2h',
    'metrics_listen 127.0.0.1:' . ($p + 2),
);
good('workers auto', 'workers auto');
good('bare duration is seconds', 'shutdown_timeout 30');

# The shipped example.  It names a "user alyd" that only exists on installed
# systems; without that user the user/group lines are dropped (they are
# checked against the password database, not by the parser).
SKIP: {
    my $src = srcdir();
    my $example = defined $src ? "$src/etc/alyd.conf" : undef;
    skip('no ALY_SRCDIR/etc/alyd.conf', 2) unless defined $example && -f $example;
    my $text = slurp($example);
    if (!defined getpwnam('alyd') || !defined getgrnam('alyd')) {
        $text =~ s/^(\s*(?:user|group)\s)/#$1/mg;
    }
    my @lines = split /\n/, $text;
    good('etc/alyd.conf', @lines);
}

# etc/alyd.conf documents every directive of the parser's table.
SKIP: {
    my $src = srcdir();
    skip('no ALY_SRCDIR', 1) unless defined $src && -f "$src/src/config.c" && -f "$src/etc/alyd.conf";
    my $table = slurp("$src/src/config.c");
    my @names = $table =~ /^\s*\{"([a-z0-9_]+)",\s*K_/mg;
    my $doc = slurp("$src/etc/alyd.conf");
    my @missing = grep { $doc !~ /^#?\s*\Q$_\E\b/m } @names;
    ok(@names >= 25 && !@missing, 'etc/alyd.conf mentions every directive (' . scalar(@names) . ')')
      or diag("not documented: @missing");
}

# --- bad configurations ---------------------------------------------------
bad('typo', 3, qr/unknown directive "listn"/, '# first', "data_dir $dir/data", "listn 127.0.0.1:$p");
bad('port too big', 1, qr/port "99999"/, 'listen 127.0.0.1:99999');
bad('port zero', 2, qr/port "0"/, '', 'listen 127.0.0.1:0');
bad('port not a number', 1, qr/port "http"/, 'listen 127.0.0.1:http');
bad('listen host', 1, qr/listen host "example\.com"/, 'listen example.com:80');
bad('listen junk after address', 1, qr/listen .*"ssl"/, "listen 127.0.0.1:$p ssl");
bad('size suffix', 2, qr/max_request_body "1x".*size/, 'workers 1', 'max_request_body 1x');
bad('size too small', 1, qr/max_request_body must be from/, 'max_request_body 10');
bad('duration unit', 1, qr/shutdown_timeout "10w".*duration/, 'shutdown_timeout 10w');
bad('duration not a number', 1, qr/idle_timeout "soon".*duration/, 'idle_timeout soon');
bad('seconds with a fraction', 1, qr/oauth_leeway "1500ms" must be whole seconds/, 'oauth_leeway 1500ms');
bad('a Redis key prefix with a brace', 1, qr/volatile_prefix must be 1 to 16 of/, 'volatile_prefix a{b}');
bad('rate period', 1, qr/rate_limit.*period "fortnight"/, 'rate_limit 10/fortnight');
bad('rate without period', 1, qr/rate_limit.*600\/minute/, 'rate_limit 10');
bad('rate burst', 1, qr/burst "x"/, 'rate_limit 10/minute burst=x');
bad('duplicate singleton', 4, qr/"data_dir" is already set on line 2/, '# dup', "data_dir $dir/a", 'workers 2',
    "data_dir $dir/b");
bad('duplicate listen address', 2, qr/listen 127\.0\.0\.1:$p appears twice/, "listen 127.0.0.1:$p",
    "listen 127.0.0.1:$p");
bad('tls listener without certificate', 2, qr/tls listener needs both tls_certificate and tls_key/,
    "listen 127.0.0.1:$p", "listen 127.0.0.1:" . ($p + 1) . " tls");
bad('tls listener without key', 2, qr/tls_certificate and tls_key/, "tls_certificate $cert",
    "listen 127.0.0.1:$p tls");
bad('unreadable tls_certificate', 3, qr/tls_certificate: cannot read "\Q$dir\E\/missing\.pem"/,
    "listen 127.0.0.1:$p tls", "tls_key $key", "tls_certificate $dir/missing.pem");
bad('oauth_issuer without key source', 2, qr/oauth_issuer is set but no key source/, '# oauth',
    'oauth_issuer https://auth.example');
bad('workers 0', 1, qr/workers "0" must be/, 'workers 0');
bad('workers 999', 1, qr/workers "999" must be/, 'workers 999');
bad('workers not a number', 1, qr/workers "many"/, 'workers many');
bad('public_url ftp', 1, qr/public_url "ftp:\/\/x".*URL/, 'public_url ftp://x');
bad('public_url with query', 1, qr/public_url .*URL/, 'public_url https://x/?a=b');
bad('authorization_servers not a URL', 1, qr/authorization_servers: "nope"/, 'authorization_servers nope');
bad('missing value', 1, qr/"data_dir" needs a value/, 'data_dir');
bad('two values for a singleton', 1, qr/"workers" takes one value/, 'workers 1 2');
bad('metrics on a listen address', 2, qr/metrics_listen 127\.0\.0\.1:$p is also a listen address/,
    "listen 127.0.0.1:$p", "metrics_listen 127.0.0.1:$p");

# A readable file that is not a certificate: caught when alyd -t loads it.
{
    spew("$dir/garbage.pem", "not a certificate\n");
    my ($exit, $out, $err, $path) = check_conf("listen 127.0.0.1:$p tls", "tls_certificate $dir/garbage.pem",
        "tls_key $key");
    is($exit, 1, 'garbage certificate: alyd -t exits 1');
    like($err, qr/\A\Q$path\E:/, 'garbage certificate: message names the file') or diag("stderr: $err");
}

# A missing configuration file.
{
    my ($exit, $out, $err) = run_cmd($alyd, '-t', '-c', "$dir/nonexistent.conf");
    is($exit, 1, 'missing file: exit 1');
    like($err, qr/\Q$dir\E\/nonexistent\.conf: cannot open/, 'missing file: says it cannot open it');
}

# --- command line -----------------------------------------------------------
{
    my ($exit, $out, $err) = run_cmd($alyd, '-v');
    is($exit, 0, 'alyd -v exits 0');
    like($out, qr/^alyd \d+\.\d+\.\d+$/m, 'alyd -v prints the version');
    ($exit, $out, $err) = run_cmd($alyd, '-Z');
    isnt($exit, 0, 'unknown flag exits non-zero');
    like($err, qr/usage: alyd/, 'unknown flag prints the usage');
    ($exit, $out, $err) = run_cmd($alyd, '-t', '-c', "$dir/c1.conf", 'extra');
    isnt($exit, 0, 'stray argument exits non-zero');
    ($exit, $out, $err) = run_cmd($alyd, '-t', '-w', '0', '-c', "$dir/c1.conf");
    isnt($exit, 0, '-w 0 is refused');
}

done_testing();
