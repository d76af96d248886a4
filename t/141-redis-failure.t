# "volatile redis://" when Redis goes away and comes back: with
# volatile_failure closed (the default) a request gets 503 with Retry-After
# and /healthz answers 503 naming redis; with open, requests are served
# without rate limits and the outage is logged once; a Redis that accepts but
# never answers costs volatile_timeout, not a hung worker; and after Redis
# is back both hosts serve (and limit) again without a restart.
use strict;
use warnings;
use Test::More;
use Alyd;
use AlyRedis;

plan skip_all => 'redis-server and redis-cli are not installed (scripts/install-deps --test installs them)' unless AlyRedis->available;
Alyd::watchdog(120);

my $redis = AlyRedis->start;
my $TIMEOUT = Cluster::volatile_timeout_line();    # on both hosts
my $closed = Alyd->start(workers => 1, extra => ['volatile ' . $redis->url, $TIMEOUT]);
my $ws = $closed->ctl('workspace', 'create', 'Outages');
my $key = $closed->ctl('keys', 'create', '--workspace', $ws, '--scopes', 'read:sites', '--rate-limit', '1/hour burst=3');
my $open = AlyRedis::twin($closed, workers => 1, extra => ['volatile ' . $redis->url, 'volatile_failure open', $TIMEOUT]);

my $PING = '{"jsonrpc":"2.0","id":1,"method":"ping"}';
sub ping {
    my ($host, $k) = @_;
    my ($st, $h, $body) = Alyd::curl('-X', 'POST', '-H', 'Content-Type: application/json', '-H', 'Accept: application/json, text/event-stream',
        '-H', 'Authorization: Bearer ' . ($k // $key), '--data', $PING, $host->url('/api/mcp'));
    return { status => $st, h => $h, body => $body, j => Alyd::json_decode($body) // {} };
}
sub healthz { my ($st, $h, $body) = Alyd::curl($_[0]->url('/healthz')); return { status => $st, h => $h, j => Alyd::json_decode($body) // {} } }
sub outage_lines { my ($host, $re) = @_; my @l = ($host->error_log_text // '') =~ /$re/g; return scalar @l }

is(ping($closed)->{status}, 200, 'Redis up: the closed host serves');
is(ping($open)->{status}, 200, 'Redis up: the open host serves');
my @pids = ($closed->master_pid, $closed->worker_pids, $open->master_pid, $open->worker_pids);

# ---- Redis stopped ----
$redis->stop;
my $r = ping($closed);
is($r->{status}, 503, 'closed: 503 while Redis is down');
is(Alyd::header_value($r->{h}, 'retry-after'), '1', 'closed: with Retry-After');
like($r->{j}{error}{message} // '', qr/redis/, 'closed: the error names redis');
# A bad credential gets the same 503: a 401 would count no failure (an open budget for guessing) and tell a guess from a hit.
for my $bad ('aly_' . ('x' x 40), 'not-a-key') {
    my ($bst) = Alyd::curl('-X', 'POST', '-H', 'Content-Type: application/json', '-H', 'Accept: application/json, text/event-stream',
        '-H', "Authorization: Bearer $bad", '--data', $PING, $closed->url('/api/mcp'));
    is($bst, 503, "closed: a bad credential ($bad) also gets 503 while Redis is down");
}
my $hz = healthz($closed);
is($hz->{status}, 503, 'closed: /healthz answers 503');
is($hz->{j}{status}, 'unavailable', 'closed: /healthz says unavailable');
like($hz->{j}{error} // '', qr/^redis .*unreachable/, 'closed: /healthz names redis');
ok($closed->wait_log(qr/volatile: redis at 127\.0\.0\.1:\d+ unreachable[^\n]*answering 503/), 'closed: the outage is logged');

my @open_status = map { ping($open)->{status} } 1 .. 6;
is_deeply(\@open_status, [(200) x 6], 'open: served, and without rate limits (6 requests over a burst of 3 with one used)')
  or diag("@open_status");
is(outage_lines($open, qr/serving WITHOUT rate limits/), 1, 'open: the outage is logged once, not per request');
$hz = healthz($open);
is($hz->{status}, 200, 'open: /healthz still 200 (the host serves)');
is($hz->{j}{status}, 'degraded', 'open: /healthz says degraded');
like($hz->{j}{error} // '', qr/^redis .*unreachable: serving without rate limits/, 'open: /healthz names redis and what it means');

# ---- Redis back on the same port: no restart of either host ----
$redis->start;
ok(Alyd::poll_until(10, sub { ping($closed)->{status} == 200 }, 0.1), 'closed: serves again once Redis is back');
ok(Alyd::poll_until(10, sub { healthz($closed)->{status} == 200 }, 0.1), 'closed: /healthz 200 again');
ok($closed->wait_log(qr/volatile: redis at [^\n]* reachable again/), 'closed: the recovery is logged');
# The open host reconnects after its back-off (until then it still serves unlimited); the restarted
# Redis lost every cell: the burst of 3 is whole again, and the open host limits again.
ok(Alyd::poll_until(10, sub { (healthz($open)->{j}{status} // '') eq 'ok' }, 0.1), 'open: /healthz ok again once reconnected');
my @after = map { ping($open)->{status} } 1 .. 5;
is_deeply(\@after, [200, 200, 429, 429, 429], 'open: rate limits apply again (a fresh burst of 3, one spent by the closed host)')
  or diag("@after");
is(outage_lines($open, qr/serving WITHOUT rate limits/), 1, 'open: still one outage line');
is_deeply([$closed->master_pid, $closed->worker_pids, $open->master_pid, $open->worker_pids], \@pids,
    'no process of either host was restarted');

# ---- a Redis that accepts and never answers: the deadline ----
kill('STOP', $redis->pid);
$r = ping($closed);
is($r->{status}, 503, 'Redis stalled: closed answers 503 (volatile_timeout), not a hung request');
like($r->{j}{error}{message} // '', qr/redis/, 'stalled: the error names redis');
ok($closed->wait_log(qr/unreachable \([^)]*no answer within volatile_timeout\)/), 'stalled: logged as a timeout');
kill('CONT', $redis->pid);
ok(Alyd::poll_until(10, sub { ping($closed)->{status} != 503 }, 0.1), 'closed: decides again once Redis answers');

# ---- a Redis that answers but refuses writes (a replica after a failover): an outage, not "ok" ----
# (a key of its own, with room: the one above is over its 1/hour budget by now, which a replica can still read)
my $roomy = $closed->ctl('keys', 'create', '--workspace', $ws, '--scopes', 'read:sites', '--rate-limit', '1000/minute burst=1000');
is(ping($closed, $roomy)->{status}, 200, 'a key with room: served');
ok(defined $redis->cli('REPLICAOF', '127.0.0.1', '1'), 'Redis made a replica (READONLY)');
$r = ping($closed, $roomy);
is($r->{status}, 503, 'READONLY: closed answers 503');
$hz = healthz($closed);
is($hz->{status}, 503, 'READONLY: closed /healthz answers 503, not ok');
is(healthz($open)->{j}{status}, 'degraded', 'READONLY: open /healthz says degraded');
my $ro_lines = outage_lines($closed, qr/unreachable \(READONLY[^)]*\)/);
ok($ro_lines >= 1, 'READONLY: the outage is logged, with the reason');
ping($closed, $roomy) for 1 .. 5;
is(outage_lines($closed, qr/unreachable \(READONLY[^)]*\)/), $ro_lines, 'READONLY: logged once, not per request');
unlike($closed->error_log_text, qr/request admitted: redis script: READONLY/, 'READONLY: never called an admitted decision');
ok(defined $redis->cli('REPLICAOF', 'NO', 'ONE'), 'Redis a primary again');
ok(Alyd::poll_until(10, sub { ping($closed, $roomy)->{status} == 200 }, 0.1), 'closed: serves again');
ok(Alyd::poll_until(10, sub { healthz($closed)->{status} == 200 }, 0.1), 'closed: /healthz 200 again');

$_->stop for $closed, $open;
done_testing();
