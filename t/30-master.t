#!/usr/bin/perl
# The master as supervisor: a worker killed with SIGKILL is replaced at once
# while the other worker keeps answering; a worker that keeps dying is
# respawned with back-off, and comes back once the cause is gone.
use strict;
use warnings;
use Test::More;
use POSIX qw(:sys_wait_h);
use Time::HiRes qw(time sleep);
use Alyd;

watchdog(60);

my $srv = Alyd->start(workers => 2);
my @before = $srv->worker_pids;
is(scalar @before, 2, 'two workers at start') or BAIL_OUT('cannot see the workers');
my $port = $srv->port;

# --- SIGKILL one worker -----------------------------------------------------
my $probe_file = $srv->dir . '/probe.txt';
my $prober = start_prober($port, $probe_file, 3);
sleep 1;    # let the prober run before the kill, so "around the kill" means something
my $victim = $before[0];
my ($survivor) = grep { $_ != $victim } @before;
my $t_kill = time;
ok(kill('KILL', $victim), "SIGKILL worker $victim");

my @after;
my $replaced = poll_until(
    2,
    sub {
        @after = $srv->serving_workers;
        return @after == 2 && !(grep { $_ == $victim } @after);
    },
    0.02
);
my $t_replaced = time - $t_kill;
ok($replaced, sprintf('a replacement worker is serving %.2fs after the kill (limit 2 s)', $t_replaced))
  or diag("workers now: @after");
my ($newpid) = grep { $_ != $survivor } @after;
ok($newpid && $newpid != $victim, 'the replacement is a new process');
ok(!proc_alive($victim), 'the killed worker is gone (reaped, not a zombie)');
ok(proc_alive($survivor), 'the other worker was left alone');

ok(finish_prober($prober, 10), 'prober finished');
my @probes = prober_results($probe_file);
my @fails  = grep { $_->[1] != 200 } @probes;
my @around = grep { $_->[0] >= $t_kill - 0.5 && $_->[0] <= $t_kill + 1 } @probes;
# One client, one request at a time in a fixed window: on a slower (sanitized, loaded) machine it makes fewer.
ok(@probes >= 50 / $Alyd::SCALE, 'the prober made ' . scalar(@probes) . ' requests');
ok(@around >= 10 / $Alyd::SCALE, scalar(@around) . ' requests within 1 s of the kill');
# The prober sends one request at a time: one may be in the victim's hands when it dies (it began before the kill and
# is the only one that may fail); every request begun after the kill is answered by a live worker.
my @in_flight = grep { $_->[0] <= $t_kill + 0.01 } @fails;    # times are printed to the ms
my @later     = grep { $_->[0] > $t_kill + 0.01 } @fails;
is(scalar @later, 0, '/healthz answered 200 to every request begun after the kill') or do {
    diag(sprintf("%+.3fs after kill: status %d, %s", $_->[0] - $t_kill, $_->[1], $_->[3])) for @later;
};
ok(@in_flight <= 1, 'at most the one request in flight at the kill failed (' . scalar(@in_flight) . ')') or do {
    diag(sprintf("%+.3fs after kill: status %d, %s", $_->[0] - $t_kill, $_->[1], $_->[3])) for @in_flight;
};

# The new worker serves requests itself.
{
    my $hit = poll_until(
        5,
        sub {
            my ($st, $body) = raw_http($port, 'GET', '/healthz', timeout => 2);
            return $st == 200 && $body =~ /"pid":$newpid\b/;
        },
        0.01
    );
    ok($hit, "the replacement worker $newpid answers /healthz");
}

my $restarts;
poll_until(3, sub {
    my (undef, undef, $m) = curl($srv->metrics_url('/metrics'));
    $restarts = metric_value($m, 'alyd_worker_restarts_total');
    return defined $restarts && $restarts == 1;
});
is($restarts, 1, 'alyd_worker_restarts_total is 1');

like($srv->wait_log(qr/worker \d+ \(pid $victim\) was killed by signal 9[^\n]*; respawning/) // '',
    qr/respawning/, 'error log: the master says worker was killed by signal 9 and is respawned');
unlike($srv->error_log_text, qr/pid $victim\)[^\n]*keeps dying/, 'a single death is not reported as back-off');

# --- a worker that keeps dying ----------------------------------------------
# The store directory is moved away, so a new worker cannot open it and exits
# at once; running workers keep their open environment.
{
    my $store = $srv->data_dir . '/store';
    ok(rename($store, "$store.away"), 'moved the store away');
    my @w = $srv->serving_workers;
    my $target = $w[0];
    my ($other) = grep { $_ != $target } @w;
    ok(kill('KILL', $target), "SIGKILL worker $target");

    my $backoff = $srv->wait_log(qr/[^\n]*keeps dying[^\n]*respawning in \d+ ms/, 8);
    ok($backoff, 'error log reports back-off: "keeps dying ... respawning in N ms"') or diag($srv->error_log_text);
    diag("back-off message: $backoff") if $backoff;
    my ($st, $body) = raw_http($port, 'GET', '/healthz');
    is($st, 200, 'the other worker keeps serving meanwhile');
    like($body, qr/"pid":$other\b/, '... and it is the surviving worker') if $other;
    my @now = $srv->worker_pids;
    ok(!(grep { $_ == $target } @now), 'the killed worker is gone');

    # Respawns are spaced: the log shows growing delays, not a tight loop.
    my @delays = ($srv->error_log_text =~ /respawning in (\d+) ms/g);
    ok(@delays >= 1 && @delays <= 4, scalar(@delays) . ' back-off respawn(s) logged in a few seconds, not a tight loop');
    is($delays[0], 500, 'the first back-off delay is 0.5 s (README and alyd(8): doubling from 0.5 seconds)');
    is($delays[1], 1000, '... and the next one 1 s') if @delays >= 2;

    ok(rename("$store.away", $store), 'put the store back');
    my @rec;
    my $recovered = poll_until(
        35,    # at most one back-off delay (capped at 30 s) plus a start
        sub {
            @rec = $srv->serving_workers;
            return @rec == 2 && !(grep { $_ == $target } @rec);
        },
        0.05
    );
    ok($recovered, 'two workers are serving again after the store came back') or diag("workers: @rec");
    my ($fresh) = grep { !$other || $_ != $other } @rec;
    # It stays up (it is not just between two deaths).
    sleep 0.5;
    ok($fresh && proc_alive($fresh), "the respawned worker $fresh stays up");
    my $served = poll_until(5, sub {
        my ($s, $b) = raw_http($port, 'GET', '/healthz', timeout => 2);
        return $s == 200 && $fresh && $b =~ /"pid":$fresh\b/;
    }, 0.01);
    ok($served, 'the respawned worker answers /healthz');
}

my @last = $srv->worker_pids;
ok($srv->stop, 'master stops on TERM');
ok(!(grep { proc_alive($_) } @last), "workers @last gone after stop");
done_testing();
