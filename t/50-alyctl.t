#!/usr/bin/perl
# alyctl: init creates the data directory, the pepper and the store, and is
# idempotent; stats reads the store (JSON and text); keys create --expires
# takes alyd.conf's durations; errors and exit codes.
use strict;
use warnings;
use Test::More;
use File::Temp ();
use Time::Local qw(timegm);
use Alyd;

watchdog(60);

my $ctl = alyctl_bin();
my $tmp = File::Temp->newdir;
my $dir = $tmp->dirname;
my $data = "$dir/data";
my $conf = "$dir/alyd.conf";
spew($conf, "listen 127.0.0.1:" . free_port() . "\ndata_dir $data\nerror_log off\naccess_log off\n");

# --- init ---------------------------------------------------------------------
ok(!-e $data, 'data_dir does not exist yet');
my ($exit, $out, $err) = run_cmd($ctl, '-c', $conf, 'init');
is($exit, 0, 'alyctl init exits 0') or diag($err);
ok(-d $data, 'init creates data_dir');
ok(-d "$data/store" && -f "$data/store/data.mdb", 'init creates the durable LMDB environment');
ok(-d "$data/volatile" && -f "$data/volatile/data.mdb", 'init creates the volatile LMDB environment');
my $pepper = "$data/pepper";
ok(-f $pepper, 'init creates the pepper file');
is((stat $pepper)[2] & 07777, 0600, 'pepper file mode 0600');
is(-s $pepper, 32, 'pepper is 32 bytes');
my $p1 = slurp($pepper);
isnt($p1, "\0" x 32, 'pepper is not all zero bytes');
ok(!((stat $data)[2] & 07), 'data_dir is not world-accessible');

($exit, $out, $err) = run_cmd($ctl, '-c', $conf, 'init');
is($exit, 0, 'second init exits 0 (idempotent)') or diag($err);
is(slurp($pepper), $p1, 'second init keeps the same pepper');

($exit, $out, $err) = run_cmd($ctl, '-c', $conf, '--json', 'init');
is($exit, 0, 'init --json exits 0');
my $j = json_decode($out);
ok($j && $j->{data_dir} eq $data, 'init --json names data_dir') or diag($out);

# A second data dir with key_pepper_file elsewhere: init honours it.
{
    my $conf2 = "$dir/alt.conf";
    spew($conf2, "data_dir $dir/data2\nkey_pepper_file $dir/secret/pepper.bin\n");
    mkdir "$dir/secret";
    ($exit, $out, $err) = run_cmd($ctl, '-c', $conf2, 'init');
    is($exit, 0, 'init with key_pepper_file elsewhere') or diag($err);
    ok(-f "$dir/secret/pepper.bin" && -s _ == 32, 'pepper written to key_pepper_file');
    is((stat "$dir/secret/pepper.bin")[2] & 07777, 0600, '... with mode 0600');
    ok(!-e "$dir/data2/pepper", '... and not to data_dir/pepper');
}

# --- stats ---------------------------------------------------------------------
($exit, $out, $err) = run_cmd($ctl, '-c', $conf, '--json', 'stats');
is($exit, 0, 'alyctl --json stats exits 0') or diag($err);
$j = json_decode($out);
ok($j && ref $j eq 'HASH', 'stats --json output parses as a JSON object') or diag($out);
$j ||= {};
is($j->{data_dir}, $data, 'stats names data_dir');
my $envs = $j->{environments} // {};
is_deeply([sort keys %$envs], ['store', 'volatile'], 'stats shows both environments');
for my $e (qw(store volatile)) {
    my $s = $envs->{$e} // {};
    ok(($s->{map_size} // 0) > 0, "$e: map_size");
    ok(($s->{used_bytes} // 0) > 0, "$e: used_bytes");
    ok(($s->{max_readers} // 0) > 0, "$e: max_readers");
    is(ref $s->{databases}, 'HASH', "$e: databases");
}
is($envs->{store}{map_size}, 1 << 30, 'store map_size defaults to 1g');

($exit, $out, $err) = run_cmd($ctl, '-c', $conf, 'stats', '--json');
is($exit, 0, '--json also works after the command name');
ok(json_decode($out), '... and prints JSON');

($exit, $out, $err) = run_cmd($ctl, '-c', $conf, 'stats');
is($exit, 0, 'stats (text) exits 0');
like($out, qr/^store\b/m, 'text stats lists the store environment');
like($out, qr/^volatile\b/m, 'text stats lists the volatile environment');

# Stats while alyd runs on the same data directory.
{
    my $srv = Alyd->start(workers => 2, metrics => 0);
    ($exit, $out, $err) = run_cmd($ctl, '-c', $srv->conf, '--json', 'stats');
    is($exit, 0, 'stats works while alyd is running') or diag($err);
    my $r = (json_decode($out) // {})->{environments}{store}{readers};
    ok(defined $r && $r >= 1, "stats reports readers while alyd runs ($r)") if defined $r;
    $srv->stop;
}

# --- keys create --expires: the one duration grammar of alyd.conf -----------------
{
    # RFC 3339 with milliseconds to ms since the epoch.
    my $ms = sub {
        my ($y, $mo, $d, $h, $mi, $s, $f) = $_[0] =~ /^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)\.(\d{3})Z$/ or return undef;
        return timegm($s, $mi, $h, $d, $mo - 1, $y) * 1000 + $f;
    };
    ($exit, $out, $err) = run_cmd($ctl, '-c', $conf, 'workspace', 'create', 'Durations');
    is($exit, 0, 'workspace for the duration tests') or diag($err);
    chomp(my $ws = $out);
    for my $case (['90', 90_000, 'a bare number is seconds'], ['1500ms', 1500, 'milliseconds'], ['45s', 45_000, 'seconds'],
                  ['30m', 1_800_000, 'minutes'], ['12h', 43_200_000, 'hours'], ['3650d', 315_360_000_000, 'ten years, the most']) {
        my ($text, $want, $what) = @$case;
        ($exit, $out, $err) = run_cmd($ctl, '-c', $conf, '--json', 'keys', 'create', '--workspace', $ws, '--scopes', 'read:sites',
                                      '--expires', $text);
        is($exit, 0, "--expires $text: $what") or diag($err);
        my $k = json_decode($out) // {};
        my ($c, $e) = ($ms->($k->{created} // ''), $ms->($k->{expires} // ''));
        ok(defined $c && defined $e && $e - $c == $want, "--expires $text: expires $want ms after created")
            or diag("created $k->{created}, expires $k->{expires}");
    }
    ($exit, $out, $err) = run_cmd($ctl, '-c', $conf, '--json', 'keys', 'list', '--workspace', $ws);
    my $before = scalar @{ json_decode($out) // [] };
    is($before, 6, 'six keys minted');
    for my $bad ('0d', '0', '3651d', '10w', 'soon', '-5s', '1.5h', ' 5s', '5 s', '') {
        ($exit, $out, $err) = run_cmd($ctl, '-c', $conf, 'keys', 'create', '--workspace', $ws, '--scopes', 'read:sites',
                                      '--expires', $bad);
        is($exit, 1, "--expires '$bad' refused with 1");
        like($err, qr/^alyctl: --expires "\Q$bad\E" must be a duration like 90d, 12h, 30m or 45s$/, '... saying why');
        is($out, '', '... and no key printed');
    }
    ($exit, $out, $err) = run_cmd($ctl, '-c', $conf, '--json', 'keys', 'list', '--workspace', $ws);
    is(scalar @{ json_decode($out) // [] }, $before, 'no key stored by a refused --expires');
}

# --- errors ----------------------------------------------------------------------
{
    my $conf3 = "$dir/uninit.conf";
    spew($conf3, "data_dir $dir/never\n");
    ($exit, $out, $err) = run_cmd($ctl, '-c', $conf3, 'stats');
    isnt($exit, 0, 'stats on an uninitialised data_dir fails');
    like($err, qr/alyctl/, '... the message mentions alyctl');
    like($err, qr/\binit\b/, '... and init');
    is($out, '', '... and nothing goes to stdout');
    ok(!-e "$dir/never", 'stats does not create data_dir');

    ($exit, $out, $err) = run_cmd($ctl, '-c', $conf3, '--json', 'stats');
    isnt($exit, 0, 'stats --json on an uninitialised data_dir fails too');
}

($exit, $out, $err) = run_cmd($ctl, '-c', $conf, 'frobnicate');
is($exit, 2, 'unknown command exits 2');
like($err, qr/unknown command "frobnicate"/, '... and says so');
($exit, $out, $err) = run_cmd($ctl, '-c', $conf);
is($exit, 2, 'no command exits 2');
like($err, qr/usage/, '... with the usage');
($exit, $out, $err) = run_cmd($ctl, '--bogus-option', 'stats');
is($exit, 2, 'unknown option exits 2');
($exit, $out, $err) = run_cmd($ctl, '-c', $conf, 'init', 'extra');
isnt($exit, 0, 'init with an extra argument fails');
($exit, $out, $err) = run_cmd($ctl, '-c', "$dir/missing.conf", 'stats');
is($exit, 1, 'a missing config file fails with 1');
like($err, qr/missing\.conf/, '... naming the file');
{
    my $bad = "$dir/bad.conf";
    spew($bad, "data_dir $data\nlistn 1\n");
    ($exit, $out, $err) = run_cmd($ctl, '-c', $bad, 'stats');
    isnt($exit, 0, 'a bad config file fails');
    like($err, qr/\Q$bad\E:2: unknown directive/, '... with file:line');
}

# --- backup: a copy that fails leaves nothing behind -----------------------------------
# A file size limit stops the copy half-way, as a full disk would; the write
# fails with EFBIG (SIGXFSZ ignored).  "ulimit -f 8" is 4 or 8 KB, whichever
# unit sh counts in: less than the two meta pages and a root page of a copy.
{
    my $dest = "$dir/backup";
    ($exit, $out, $err) = run_cmd('sh', '-c', 'ulimit -f 8 && trap "" XFSZ && exec "$@"', 'sh', $ctl, '-c', $conf, 'backup', $dest);
    is($exit, 1, 'backup: a copy that cannot be written fails');
    like($err, qr/backup to \Q$dest\E failed: File too large/, '... saying why') or diag($err);
    ok(!-e "$dest/data.mdb", '... and leaves no (truncated) data.mdb');
    opendir(my $dh, $dest) or die "opendir: $!";
    my @left = grep { !/^\.\.?$/ } readdir $dh;
    is("@left", '', '... nor a temporary file');
    ($exit, $out, $err) = run_cmd($ctl, '-c', $conf, 'backup', $dest);
    is($exit, 0, 'the retry into the same directory succeeds') or diag($err);
    ok((-s "$dest/data.mdb" // 0) > 8192, '... and writes data.mdb');
}

# --- backup killed mid-copy (SIGXFSZ not ignored): the retry removes what it left ----------
{
    my $dest = "$dir/backup-killed";
    ($exit) = run_cmd('sh', '-c', 'ulimit -f 8 && exec "$@"', 'sh', $ctl, '-c', $conf, 'backup', $dest);
    isnt($exit, 0, 'backup killed by the file size limit');
    opendir(my $dh, $dest) or die "opendir: $!";
    my @left = grep { /^\.data\.mdb\./ } readdir $dh;
    is(scalar @left, 1, '... leaves its temporary copy (@left)');
    ($exit, $out, $err) = run_cmd($ctl, '-c', $conf, 'backup', $dest);
    is($exit, 0, 'the retry succeeds') or diag($err);
    opendir($dh, $dest) or die "opendir: $!";
    is(join(' ', sort grep { !/^\.\.?$/ } readdir $dh), 'data.mdb', '... and removes the dead backup\'s temporary copy');
}

# --- two backups into one directory at once: one data.mdb, never silently replaced -------
{
    my ($both, $rounds) = (0, 5);
    for my $r (1 .. $rounds) {
        my $dest = "$dir/backup-race-$r";
        mkdir $dest;
        system('sh', '-c', '("$1" -c "$2" backup "$3" >/dev/null 2>"$3.a.err"; echo $? >"$3.a") & '
            . '("$1" -c "$2" backup "$3" >/dev/null 2>"$3.b.err"; echo $? >"$3.b") & wait', 'sh', $ctl, $conf, $dest);
        my ($a, $b) = map { my $v = Alyd::slurp("$dest.$_") // ''; chomp $v; $v } qw(a b);
        $both++ if $a eq '0' && $b eq '0';
        my $loser = $a eq '0' ? 'b' : 'a';
        like(Alyd::slurp("$dest.$loser.err") // '', qr/already holds a data\.mdb|another backup wrote data\.mdb there meanwhile/,
            "round $r: the other backup is refused, saying why") unless $a eq '0' && $b eq '0';
    }
    is($both, 0, "two concurrent backups into one directory: never both report success ($rounds rounds)");
}

done_testing();
