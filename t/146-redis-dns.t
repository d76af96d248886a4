# "volatile redis://NAME": the host name is looked up anew for every
# connection, and a DNS server that answers late stops no worker for longer
# than volatile_timeout.  alyd runs in a mount namespace of its own whose
# /etc/resolv.conf names a DNS server of this test (t/lib/slowdns.py) that
# sits on the A query for as long as the test says.  While it does, a
# request and /healthz are answered at once (503: volatile_failure closed)
# rather than after the DNS delay, the outage is logged, and a single lookup
# is in flight; once the answer comes alyd connects (the rate limit is
# enforced through Redis again) and logs the recovery.  Shutting down with a
# lookup in flight is prompt and clean (no sanitizer report).
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use Alyd;
use AlyRedis;
use SlowDNS;

plan skip_all => 'redis-server and redis-cli are not installed (scripts/install-deps --test installs them)' unless AlyRedis->available;
if (my $why = SlowDNS->unavailable) { plan skip_all => $why }
Alyd::watchdog(120);

my $S = $Alyd::SCALE;
my $DELAY = 4 * $S;    # how long the DNS server sits on an A query while slow
my $BOUND = 1.5 * $S;  # longest a request may take meanwhile (without the fix: the DNS delay)
my $NAME = 'redis.slow.test';

my $dns = eval { SlowDNS->start(name => $NAME, wait => $DELAY + 5, lifetime => 120 * $S) };
ok($dns, 'the DNS server is up') or BAIL_OUT($@);
unlike(Alyd::slurp('/etc/hosts') // '', qr/\Q$NAME\E/i, "$NAME is not in /etc/hosts");
sub queries { $dns->queries(@_) }
sub a_queries { queries(1, @_) }
my $wrap = $dns->wrapper('alyd', Alyd::alyd_bin());

my $redis = AlyRedis->start;
my $t_start = time;
# A shorter deadline than other tests': two of them must stay well under $BOUND.
my $srv = Alyd->start(workers => 1, bin => $wrap,
    extra => ["volatile redis://$NAME:" . $redis->port . '/0', Cluster::volatile_timeout_line(150)]);
my $ws = $srv->ctl('workspace', 'create', 'DNS');
my $key = $srv->ctl('keys', 'create', '--workspace', $ws, '--scopes', 'read:sites', '--rate-limit', '1/hour burst=3');

my $CALL = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"sites.list","arguments":{}}}';
sub call {
    my $t0 = time;
    my ($st, $h) = Alyd::curl('-X', 'POST', '-H', 'Content-Type: application/json', '-H', 'Accept: application/json, text/event-stream',
        '-H', "Authorization: Bearer $key", '--data', $CALL, $srv->url('/api/mcp'));
    return { status => $st, h => $h, secs => time - $t0 };
}
sub healthz {
    my $t0 = time;
    my ($st, undef, $body) = Alyd::curl($srv->url('/healthz'));
    return { status => $st, j => Alyd::json_decode($body) // {}, secs => time - $t0 };
}
sub redis_up { Alyd::metric_value((Alyd::curl($srv->metrics_url('/metrics')))[2], 'alyd_redis_up') }

# ---- the DNS answers at once: connected through the name ----
is(call()->{status}, 200, 'DNS quick: a tools/call is served');
ok(a_queries($t_start) >= 1, "alyd asked the test's DNS server for $NAME (the namespace took)");
like($redis->cli('--scan', '--pattern', 'aly:*:rl') // '', qr/:rl$/, "the rate-limit cell is in Redis: reached through $NAME");
is(redis_up(), 1, '/metrics: alyd_redis_up 1');
my @pids = ($srv->master_pid, $srv->worker_pids);

# ---- the DNS sits on the answer; the connection goes: the reconnect must not wait for it ----
$dns->delay($DELAY);
my $t_slow = time;
ok(($redis->cli('CLIENT', 'KILL', 'TYPE', 'normal') // 0) >= 1, "Redis drops alyd's connection");
my $r = call();
is($r->{status}, 503, 'DNS slow: a tools/call gets 503 (volatile_failure closed)');
cmp_ok($r->{secs}, '<', $BOUND, sprintf('... at once (%.2f s), not after the DNS delay (%.0f s)', $r->{secs}, $DELAY));
is(Alyd::header_value($r->{h}, 'retry-after'), '1', '... with Retry-After');
my $hz = healthz();
is($hz->{status}, 503, 'DNS slow: /healthz answers 503');
cmp_ok($hz->{secs}, '<', $BOUND, sprintf('... at once (%.2f s)', $hz->{secs}));
like($hz->{j}{error} // '', qr/redis/, '... naming redis');
# Several back-off steps while the lookup is still unanswered: each attempt waits volatile_timeout on it, no more.
my (@st, @secs);
while (@secs < 3 || time < $t_slow + $DELAY / 2) {
    my $x = call();
    push @st, $x->{status};
    push @secs, $x->{secs};
    sleep 0.3;
}
is_deeply([sort { $a <=> $b } keys %{ { map { $_ => 1 } @st } }], [503], 'every request meanwhile gets 503') or diag("@st");
my ($slowest) = sort { $b <=> $a } @secs;
cmp_ok($slowest, '<', $BOUND, sprintf('%d requests meanwhile, each at once (slowest %.2f s)', scalar @secs, $slowest));
ok($srv->wait_log(qr/volatile: redis at \Q$NAME\E:\d+ unreachable \(resolving \Q$NAME\E: no answer within volatile_timeout\)/),
    'the outage is logged, naming the lookup');
is(a_queries($t_slow), 1, 'one lookup in flight, not one per attempt');

# ---- the answer comes: alyd connects ----
$dns->delay(0);
ok(Alyd::poll_until(10, sub { healthz()->{status} == 200 }, 0.2), 'the late answer taken: /healthz 200 again');
my $back = time - $t_slow;
ok($srv->wait_log(qr/volatile: redis at \Q$NAME\E:\d+ reachable again/), 'the recovery is logged');
is(redis_up(), 1, '/metrics: alyd_redis_up 1 again');
my @after = map { call()->{status} } 1 .. 4;
is_deeply(\@after, [200, 200, 429, 429], 'the rate limit holds through Redis again (burst 3, one spent before)') or diag("@after");
is_deeply([$srv->master_pid, $srv->worker_pids], \@pids, 'the worker stayed up');

# ---- the AAAA answer comes late, the A answer at once: IPv4 is asked alone, as hiredis did ----
$dns->aaaa_delay($DELAY);
my $t_v4 = time;
ok(($redis->cli('CLIENT', 'KILL', 'TYPE', 'normal') // 0) >= 1, "Redis drops alyd's connection again");
my $v4 = healthz();
is($v4->{status}, 200, 'AAAA slow, A quick: /healthz 200 on a new connection');
cmp_ok($v4->{secs}, '<', $BOUND, sprintf('... at once (%.2f s), not after the AAAA delay', $v4->{secs}));
ok(queries(1, $t_v4) >= 1, '... after an A query');
is(queries(28, $t_v4), 0, '... and no AAAA query: a name with an IPv4 address is not asked for IPv6');
$dns->aaaa_delay(0);

# ---- shutting down with a lookup in flight ----
$dns->delay($DELAY);
my $t_last = time;
$redis->cli('CLIENT', 'KILL', 'TYPE', 'normal');
is(call()->{status}, 503, 'a lookup in flight again');
my $t0 = time;
ok($srv->stop, 'alyd stops by itself');
my $stop_secs = time - $t0;
cmp_ok($stop_secs, '<', $BOUND * 2, sprintf('... promptly (%.2f s), not after the lookup', $stop_secs));
ok(a_queries($t_last) >= 1, '(it was in flight: asked, unanswered at the stop)');
my $logs = ($srv->error_log_text // '') . ($srv->stderr_text // '');
unlike($logs, qr/AddressSanitizer|LeakSanitizer|runtime error/, 'no sanitizer report in the logs');
my ($san) = ($ENV{ASAN_OPTIONS} // '') =~ /(?:^|:)log_path=([^:]+)/;
SKIP: {
    skip 'sanitizer reports go to the logs (no log_path)', 1 unless $san;
    my @reports = grep { -e "$san.$_" } @pids;
    is_deeply(\@reports, [], "no sanitizer report of alyd's processes in $san.PID");
}
diag(sprintf('DNS delay %.0f s; requests while slow: first %.2f s, slowest %.2f s; recovered %.2f s after the drop; stop %.2f s',
    $DELAY, $r->{secs}, $slowest, $back, $stop_secs));

done_testing();
