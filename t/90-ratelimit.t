# Rate limits against the real alyd: per-principal GCRA budgets
# shared by 4 workers, exact Retry-After, the IETF RateLimit headers, separate
# budgets per key and per OAuth principal, a steady client getting the
# sustained rate, and brute force: bad credentials from one address are
# refused before any credential work while a good key from another address
# still passes.  Requests go over keep-alive HTTP/1.1 connections bound to
# chosen loopback addresses (127/8 is all loopback on Linux).
use strict;
use warnings;
use Test::More;
use Compress::Zlib ();
use File::Temp qw(tempdir);
use IO::Select;
use IO::Socket::INET;
use JSON::PP ();
use List::Util ();
use POSIX ();
use Time::HiRes qw(time sleep);
use Alyd;

Alyd::watchdog(120);
$SIG{PIPE} = 'IGNORE';

my $python = -x '/usr/bin/python3' ? '/usr/bin/python3' : 'python3';
my $mint   = Alyd::srcdir() . '/t/lib/mintjwt.py';
my $tmp    = tempdir('alyd-rl-XXXXXX', TMPDIR => 1, CLEANUP => 1);

sub sh {
    my (@cmd) = @_;
    my ($exit, $out, $err) = Alyd::run_cmd(@cmd);
    die "@cmd failed: $err" if $exit != 0;
    chomp $out;
    return $out;
}

sh('openssl', 'genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', "$tmp/ec.pem");
Alyd::spew("$tmp/jwks.json", sh($python, $mint, 'jwks', "ec1=$tmp/ec.pem"));
my $issuer = 'https://auth.example.test';

# The production daemon; OAuth principals get the server-wide rate_limit.
my $srv = Alyd->start(
    workers => 4,
    extra   => ["oauth_issuer $issuer", "oauth_jwks_file $tmp/jwks.json", 'rate_limit 60/minute burst=10']
);
my $port = $srv->port;

sub ctl_ok { sh(Alyd::alyctl_bin(), '-c', $srv->conf, @_) }
my $ws = ctl_ok('workspace', 'create', 'Rate limits');
sub new_key { ctl_ok('keys', 'create', '--workspace', $ws, '--scopes', 'read:sites', '--rate-limit', $_[0] // '60/minute burst=10') }

sub metrics {
    my ($st, undef, $body) = Alyd::curl($srv->metrics_url('/metrics'));
    die "metrics: HTTP $st" unless $st == 200;
    my %m;
    for my $name ('alyd_ratelimit_decisions_total{result="allowed"}', 'alyd_ratelimit_decisions_total{result="refused"}',
        'alyd_ratelimit_decisions_total{result="error"}', 'alyd_credential_checks_total', 'alyd_auth_failures_total',
        'alyd_auth_failures_refused_total') {
        $m{$name} = Alyd::metric_value($body, $name);
    }
    return \%m;
}

# ---- a keep-alive HTTP/1.1 client bound to a loopback address ----
my $PING = '{"jsonrpc":"2.0","id":1,"method":"ping"}';

sub ka_open {
    my ($local) = @_;
    my $c = { local => $local // '127.0.0.1', buf => '' };
    ka_connect($c);
    return $c;
}

sub ka_connect {
    my ($c) = @_;
    $c->{sock} = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, LocalAddr => $c->{local}, Proto => 'tcp',
        Timeout => 5)
      or die "connect from $c->{local}: $!";
    $c->{buf} = '';
}

sub ka_fill {
    my ($c, $deadline) = @_;
    my $left = $deadline - time;
    return 0 if $left <= 0 || !IO::Select->new($c->{sock})->can_read($left);
    my $n = sysread($c->{sock}, my $chunk, 65536);
    return 0 unless $n;
    $c->{buf} .= $chunk;
    return 1;
}

sub ka_response {
    my ($c) = @_;
    my $deadline = time + 10 * $Alyd::SCALE;
    while ((my $i = index($c->{buf}, "\r\n\r\n")) < 0) { return undef unless ka_fill($c, $deadline) }
    my $i = index($c->{buf}, "\r\n\r\n");
    my ($head) = substr($c->{buf}, 0, $i);
    my ($status) = $head =~ m{^HTTP/1\.[01] (\d{3})} or return undef;
    my %h;
    for (split /\r\n/, $head) { $h{ lc $1 } = $2 if /^([^:]+):\s*(.*?)\s*$/ }
    my $len = $h{'content-length'} // 0;
    while (length($c->{buf}) < $i + 4 + $len) { return undef unless ka_fill($c, $deadline) }
    my $body = substr($c->{buf}, $i + 4, $len);
    $c->{buf} = substr($c->{buf}, $i + 4 + $len);
    return { status => $status + 0, h => \%h, body => $body };
}

# POST a ping with "Authorization: $auth" (none when undef); returns {status, h, body, t0, t1}.
sub ka_post {
    my ($c, $auth) = @_;
    my $req = "POST /api/mcp HTTP/1.1\r\nHost: 127.0.0.1:$port\r\nContent-Type: application/json\r\nAccept: application/json\r\n"
      . (defined $auth ? "Authorization: $auth\r\n" : '')
      . 'Content-Length: ' . length($PING) . "\r\n\r\n$PING";
    for my $try (1 .. 2) {
        my $t0 = time;
        my $r = defined syswrite($c->{sock}, $req) ? ka_response($c) : undef;
        if ($r) { @$r{qw(t0 t1)} = ($t0, time); return $r }
        ka_connect($c);    # the server closed the connection before answering: the request was not served
    }
    die 'no response from alyd';
}

sub retry_after { my ($r) = @_; $r->{h}{'retry-after'} }

# Checks one principal 429 in full; returns the Retry-After.
my %principal_429_checked;
sub check_principal_429 {
    my ($r, $name, $rate, $q, $w, $burst) = @_;
    my $ra = retry_after($r) // '';
    my $j = Alyd::json_decode($r->{body}) // {};
    my $ok = $ra =~ /^[1-9]\d*$/
      && ($r->{h}{'ratelimit-policy'} // '') eq "\"principal\";q=$q;w=$w;aly-burst=$burst"
      && ($r->{h}{ratelimit} // '') eq "\"principal\";r=0;t=$ra"
      && ($j->{error}{code} // 0) == -32029
      && ($j->{error}{data}{retry_after_seconds} // -1) == $ra
      && ($j->{error}{data}{policy} // '') eq $rate
      && ($j->{error}{message} // '') =~ /retry in $ra s/
      && exists $j->{id} && !defined $j->{id}
      && ($r->{h}{'cache-control'} // '') eq 'no-store';
    unless ($ok || $principal_429_checked{$name}++) {
        diag("$name: a 429 not as expected: " . JSON::PP->new->canonical->encode({ h => $r->{h}, body => $r->{body} }));
    }
    return $ok ? $ra : undef;
}

# Every request this test sends to /api/mcp with a good credential is tallied, to check the metrics at the end.
my %tally = (allowed => 0, refused => 0);
sub tally {
    for my $r (@_) {
        $tally{allowed}++ if $r->{status} == 200;
        $tally{refused}++ if $r->{status} == 429 && ($r->{h}{ratelimit} // '') =~ /^"principal"/;
    }
    return @_;
}

my $m0 = metrics();

# ---- no credential is no failure ----
{
    my $c = ka_open('127.0.0.5');
    my @r = map { ka_post($c, undef) } 1 .. 50;
    is(scalar(grep { $_->{status} == 401 } @r), 50, 'requests without a credential: 401');
    my $m = metrics();
    is($m->{alyd_auth_failures_total}, $m0->{alyd_auth_failures_total}, 'and none of them counts as a failed authentication');
    is($m->{alyd_credential_checks_total}, $m0->{alyd_credential_checks_total}, 'nor as a credential check');
    ok(!grep({ defined $_->{h}{ratelimit} } @r), 'no RateLimit header without a principal');
}

# ---- steady client, in the background from 127.0.0.3: 2 requests/s for 20 s against 60/minute burst=10 ----
my $steady_key  = new_key('60/minute burst=10');
my $steady_file = "$tmp/steady";
my $steady_pid  = fork // die "fork: $!";
if ($steady_pid == 0) {
    alarm(60);
    open(my $out, '>', $steady_file) or POSIX::_exit(2);
    my $c     = ka_open('127.0.0.3');
    my $start = time;
    for my $k (0 .. 39) {
        my $at = $start + 0.5 * $k;
        sleep($at - time) if $at > time;
        my $r = ka_post($c, "Bearer $steady_key");
        printf $out "%.4f %d %s %s\n", $r->{t0}, $r->{status}, retry_after($r) // '-', $r->{h}{ratelimit} // '-';
    }
    close $out;
    POSIX::_exit(0);
}

# ---- 300 requests over 8 connections as fast as possible, 4 workers, 60/minute burst=10 ----
{
    my $key = new_key('60/minute burst=10');
    my @pids;
    for my $n (0 .. 7) {
        my $pid = fork // die "fork: $!";
        if ($pid == 0) {
            alarm(60);
            my $c = ka_open('127.0.0.1');
            open(my $out, '>', "$tmp/flood.$n") or POSIX::_exit(2);
            for my $i (1 .. ($n < 4 ? 38 : 37)) {
                my $r = ka_post($c, "Bearer $key");
                print $out JSON::PP->new->canonical->encode($r), "\n";
            }
            close $out;
            POSIX::_exit(0);
        }
        push @pids, $pid;
    }
    waitpid($_, 0) for @pids;
    my @r = tally(map { Alyd::json_decode($_) } map { split /\n/, (Alyd::slurp($_) // '') } glob("$tmp/flood.*"));
    is(scalar @r, 300, '300 answers');
    my ($first, $last) = (List::Util::min(map { $_->{t0} } @r), List::Util::max(map { $_->{t1} } @r));
    my $elapsed = $last - $first;
    my @ok  = grep { $_->{status} == 200 } @r;
    my @lim = grep { $_->{status} == 429 } @r;
    is(@ok + @lim, 300, 'every answer is 200 or 429');
    my $max = 10 + 1 + $elapsed;
    ok(@ok >= 10 && @ok <= $max, sprintf('admitted %d: between the burst (10) and 10 + 1 + %.2f s elapsed', scalar @ok, $elapsed));
    is(scalar(grep { defined check_principal_429($_, 'flood', '60/minute burst=10', 60, 60, 10) } @lim), scalar @lim,
        'every refusal: 429, Retry-After >= 1, RateLimit-Policy, RateLimit r=0 t=Retry-After, JSON-RPC -32029 with retry_after_seconds');
    is(scalar(grep { ($_->{h}{ratelimit} // '') =~ /^"principal";r=\d+;t=[1-9]\d*$/ } @ok), scalar @ok,
        'every admitted answer carries RateLimit with what remains');
    ok(!grep({ ($_->{body} // '') =~ /rate/i } @ok), 'no limit is reported inside a 200 result');

    # Spend whatever came back since, then wait exactly Retry-After: the next request passes.
    my $c = ka_open('127.0.0.1');
    my ($r, $n) = (undef, 0);
    do { ($r) = tally(ka_post($c, "Bearer $key")) } while ($r->{status} == 200 && ++$n < 15);
    is($r->{status}, 429, 'the budget is spent');
    my $ra = retry_after($r) // 1;
    is($ra, 1, 'Retry-After of 60/minute: 1 s');
    sleep($ra);
    ($r) = tally(ka_post($c, "Bearer $key"));
    is($r->{status}, 200, 'after waiting Retry-After seconds the request passes');
}

# ---- Retry-After is exact, not a constant: 60/hour burst=1 asks for a minute ----
{
    my $key = new_key('60/hour burst=1');
    my $c   = ka_open('127.0.0.1');
    my ($a, $b) = tally(ka_post($c, "Bearer $key"), ka_post($c, "Bearer $key"));
    is($a->{status}, 200, '60/hour burst=1: the first passes');
    is($a->{h}{ratelimit}, '"principal";r=0;t=60', 'its RateLimit: nothing left, the next one in 60 s');
    is($b->{status}, 429, 'the second is refused');
    my $ra = check_principal_429($b, 'hourly', '60/hour burst=1', 60, 3600, 1);
    ok(defined $ra && $ra >= 59 && $ra <= 60, 'Retry-After: the rest of the minute (' . ($ra // 'none') . ')');
}

# ---- two keys, and an OAuth principal of the same workspace, have separate budgets ----
{
    my $now = time;
    my $claims = JSON::PP->new->canonical->encode({ iss => $issuer, aud => $srv->url('/api/mcp'), sub => 'user-rl', ws => $ws,
        scope => 'read:sites', exp => int($now) + 600, iat => int($now), jti => 'rl-' . int(rand(1e9)) });
    my $jwt = 'aly_oauth_' . sh($python, $mint, 'token', '--alg', 'ES256', '--key', "$tmp/ec.pem", '--kid', 'ec1', '--claims', $claims);
    my ($key_a, $key_b) = (new_key('60/minute burst=10'), new_key('60/minute burst=10'));
    my $c = ka_open('127.0.0.1');
    my @a = tally(map { ka_post($c, "Bearer $key_a") } 1 .. 12);
    my $passed = grep { $_->{status} == 200 } @a;
    ok($passed >= 10 && $passed <= 11, "key A: its burst passes ($passed of 12)");
    is($a[-1]{status}, 429, 'key A: then 429');
    my ($b) = tally(ka_post($c, "Bearer $key_b"));
    is($b->{status}, 200, 'key B of the same workspace: passes');
    is($b->{h}{ratelimit}, '"principal";r=9;t=1', 'key B: a full budget of its own');
    my ($o) = tally(ka_post($c, "Bearer $jwt"));
    is($o->{status}, 200, 'an OAuth principal of the same workspace: passes');
    is($o->{h}{ratelimit}, '"principal";r=9;t=1', 'OAuth principal: a full budget of its own (rate_limit)');
    my @o = tally(map { ka_post($c, "Bearer $jwt") } 1 .. 11);
    is($o[-1]{status}, 429, 'the OAuth principal spends its own budget');
    check_principal_429($o[-1], 'oauth', '60/minute burst=10', 60, 60, 10);
    my ($b2) = tally(ka_post($c, "Bearer $key_b"));
    is($b2->{status}, 200, "key B still passes after the OAuth principal's budget is spent");
}

# ---- the steady client: about 1 per second once its burst is spent ----
{
    ok(Alyd::finish_prober($steady_pid, 40), 'the steady client finished');
    my @s = map { [split ' '] } split /\n/, (Alyd::slurp($steady_file) // '');
    is(scalar @s, 40, 'steady client: 40 requests in 20 s');
    my $span = $s[-1][0] - $s[0][0];
    my $admitted = grep { $_->[1] == 200 } @s;
    $tally{allowed} += $admitted;
    $tally{refused} += grep { $_->[1] == 429 } @s;
    # GCRA: B at once, then one per T = 1 s; over the span the bound is B + floor(span / T); timing jitter moves it by one.
    my $expect = 10 + int($span);
    ok(abs($admitted - $expect) <= 1, sprintf('steady 2 req/s: %d admitted, GCRA says %d (10 + %.2f s)', $admitted, $expect, $span));
    my $late = grep { $_->[1] == 200 } @s[20 .. 39];
    ok($late >= 8 && $late <= 11, "the last 10 s, after the burst: about 1 per second ($late)");
    ok(!grep({ $_->[1] == 429 && $_->[2] !~ /^[1-9]\d*$/ } @s), 'its refusals carry Retry-After');
}

# ---- brute force: 1000 bad keys from 127.0.0.1, a good key from 127.0.0.2 ----
{
    my @b62 = ('0' .. '9', 'A' .. 'Z', 'a' .. 'z');
    my $bad_key = sub {
        my ($well_formed) = @_;
        my $s = join '', map { $b62[ int(rand 62) ] } 1 .. 32;
        my ($c, $t) = (Compress::Zlib::crc32($s), '');
        for (1 .. 6) { $t = $b62[ $c % 62 ] . $t; $c = int($c / 62) }
        substr($t, -1, 1) = $t =~ /A$/ ? 'B' : 'A' unless $well_formed;
        return "aly_$s$t";
    };
    my $good  = new_key('600/minute burst=60');
    my $before = metrics();
    my $c = ka_open('127.0.0.1');
    my @r = map { ka_post($c, 'Bearer ' . $bad_key->($_ % 2)) } 1 .. 1000;
    my $elapsed = $r[-1]{t1} - $r[0]{t0};
    my $after = metrics();
    my @fail = grep { $_->{status} == 401 } @r;
    my @lim  = grep { $_->{status} == 429 } @r;
    is(@fail + @lim, 1000, '1000 bad keys: every answer is 401 or 429');
    my $first429 = (grep { $r[$_]{status} == 429 } 0 .. $#r)[0] // 1000;
    is($first429, 30, 'the first 30 failures are 401 (auth_failure_limit 30/minute, burst 30), the 31st is 429');
    my $late401 = grep { $_->{status} == 401 } @r[$first429 .. $#r];
    ok($late401 <= 1 + $elapsed / 2,
        sprintf('after the threshold all are 429 but what 30/minute restores: %d in %.2f s', $late401, $elapsed));
    my $ok429 = grep {
        my $ra = retry_after($_) // '';
        $ra =~ /^[1-9]\d*$/ && ($_->{h}{'ratelimit-policy'} // '') eq '"auth-failures";q=30;w=60;aly-burst=30'
          && ($_->{h}{ratelimit} // '') eq "\"auth-failures\";r=0;t=$ra" && !defined $_->{h}{'www-authenticate'}
          && ((Alyd::json_decode($_->{body}) // {})->{error}{data}{retry_after_seconds} // 0) == $ra
    } @lim;
    is($ok429, scalar @lim, 'each 429: Retry-After, the auth-failures policy and RateLimit, retry_after_seconds');
    # The measurement: credential checks (HMAC, key lookup) happened only for the 401s.
    my $checks = $after->{alyd_credential_checks_total} - $before->{alyd_credential_checks_total};
    is($checks, scalar @fail, sprintf('credential checks: %d for %d requests (one per 401, none per 429)', $checks, 1000));
    is($after->{alyd_auth_failures_refused_total} - $before->{alyd_auth_failures_refused_total}, scalar @lim,
        'alyd_auth_failures_refused_total counts the 429s');
    is($after->{alyd_auth_failures_total} - $before->{alyd_auth_failures_total}, scalar @fail,
        'alyd_auth_failures_total counts the 401s');
    my $median = sub { my @v = sort { $a <=> $b } @_; @v ? $v[ $#v / 2 ] : 0 };
    diag(sprintf('latency median: 401 (credential checked) %.0f us, 429 (refused before) %.0f us',
        1e6 * $median->(map { $_->{t1} - $_->{t0} } @fail), 1e6 * $median->(map { $_->{t1} - $_->{t0} } @lim)));

    my ($st, $hdr, $body) = Alyd::curl('--interface', '127.0.0.2', '-X', 'POST', '-H', "Authorization: Bearer $good",
        '-H', 'Content-Type: application/json', '--data', $PING, $srv->url('/api/mcp'));
    is($st, 200, 'a good key from another address (127.0.0.2) still passes');
    $tally{allowed}++ if $st == 200;
    my ($g) = ka_post($c, "Bearer $good");
    is($g->{status}, 429, 'the same good key from the attacking address: 429, before its credential is looked at');
    is(ka_post($c, undef)->{status}, 401, 'a request without a credential from that address: still the 401 challenge');
    my $m = metrics();
    is($m->{alyd_credential_checks_total} - $after->{alyd_credential_checks_total}, 1, 'only the request from 127.0.0.2 was checked');
}

# ---- metrics agree with what the clients saw ----
{
    my $m = metrics();
    is($m->{'alyd_ratelimit_decisions_total{result="allowed"}'} - $m0->{'alyd_ratelimit_decisions_total{result="allowed"}'},
        $tally{allowed}, "alyd_ratelimit_decisions_total{result=\"allowed\"}: $tally{allowed}");
    is($m->{'alyd_ratelimit_decisions_total{result="refused"}'} - $m0->{'alyd_ratelimit_decisions_total{result="refused"}'},
        $tally{refused}, "alyd_ratelimit_decisions_total{result=\"refused\"}: $tally{refused}");
    is($m->{'alyd_ratelimit_decisions_total{result="error"}'}, 0, 'no limiter errors');
    # The state is a fixed-size table file shared by the workers: thousands of
    # decisions later it has the size it was created with, and no LMDB write
    # happened for them.
    my $table = $srv->data_dir . '/volatile/ratelimit.cells';
    ok(-f $table, 'the rate-limit table file exists');
    is(-s $table, 4096 + (65536 + 100000) * 32, 'it has its fixed size: header + principal cells + address cells');
    my $stats = Alyd::json_decode(ctl_ok('--json', 'stats')) // {};
    is($stats->{environments}{volatile}{databases}{rate} // 0, 0, 'no rate-limit record in the volatile LMDB environment');
}

ok($srv->stop, 'alyd stops cleanly');
done_testing;
