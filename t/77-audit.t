# The audit trail keeps audit_retention: each mutation writes its record and
# retires up to two records older than the retention, oldest first, in the
# same transaction; with no old records nothing else is touched.
use strict;
use warnings;
use Test::More;
use HTTP::Tiny;
use JSON::PP;
use Time::HiRes qw(sleep);
use Alyd;

Alyd::watchdog(120);
my $RET = int(3 * $Alyd::SCALE);    # the last checks need the records made after the sleep to stay younger than this
my $srv = Alyd->start(workers => 1, extra => ["audit_retention ${RET}s", 'rate_limit 1000000/second burst=1000000']);
sub ctl { $srv->ctl(@_) }
my $ws  = ctl('workspace', 'create', 'Audit');
my $key = ctl('keys', 'create', '--workspace', $ws, '--scopes', 'read:sites,write:sites');
my $http = HTTP::Tiny->new(keep_alive => 1);
my $n = 0;
sub create_site {
    my ($on) = @_;
    $on //= $srv;
    $n++;
    my $r = $http->post($on->url('/api/mcp'), { content => encode_json({ jsonrpc => '2.0', id => 1, method => 'tools/call',
        params => { name => 'sites.create', arguments => { name => "Shop $n", domain => "shop$n.example", currency => 'EUR' } } }),
        headers => { 'content-type' => 'application/json', accept => 'application/json, text/event-stream', authorization => "Bearer $key" } });
    my $j = eval { decode_json($r->{content}) } // {};
    return $j->{result}{structuredContent}{id};
}
sub audit { @{ Alyd::json_decode(ctl('--json', 'audit', '--workspace', $ws)) // [] } }

ok(create_site(), "mutation $_ answered") for 1 .. 5;
is(scalar(audit()), 5, 'five mutations, five audit records');
sleep $RET + 0.5;    # all five are past the retention now
ok(create_site(), 'a mutation after the retention');
is(scalar(audit()), 4, 'its record written, the two oldest retired: 4');
ok(create_site(), 'another');
is(scalar(audit()), 3, 'one more in, two more out: 3');
ok(create_site(), 'and another');
my @left = audit();
is(scalar @left, 3, 'the last old record retired with it: only the three recent ones remain');
is(scalar(grep { $_->{object} } @left), 3, 'each remaining record names its object');
ok(create_site(), 'a fourth recent mutation');
is(scalar(audit()), 4, 'nothing recent is retired: 4');

# Two workers with the same pid writing in the same millisecond, as two hosts'
# containers do on one cluster store: each run of alyd below is pid 1 of its own
# pid namespace (so its worker has the same pid both times) and its wall clock
# is frozen at the same instant by libfaketime.  Both records must be kept.
SKIP: {
    my $preload = Alyd::faketime_preload();
    skip 'libfaketime is not installed (scripts/install-deps --test)', 4 unless $preload;
    my ($ns) = Alyd::run_cmd('unshare', '--pid', '--fork', '--kill-child=TERM', 'true');
    skip 'unshare --pid is not permitted here', 4 if $ns != 0;
    my $wrap = $srv->dir . '/alyd-in-pid-ns';
    # The preload is alyd's alone: a sanitizer runtime preloaded into unshare hangs it.
    Alyd::spew($wrap, "#!/bin/sh\nexec unshare --pid --fork --kill-child=TERM env LD_PRELOAD=\"\$FROZEN_PRELOAD\" " . Alyd::alyd_bin() . ' "$@"' . "\n");
    chmod 0755, $wrap or die "chmod: $!";
    my @t = gmtime(time + 86400);
    my %env = (FROZEN_PRELOAD => $preload, TZ => 'UTC', FAKETIME_DONT_FAKE_MONOTONIC => 1,
        FAKETIME => sprintf('%04d-%02d-%02d %02d:%02d:%02d', $t[5] + 1900, $t[4] + 1, @t[3, 2, 1, 0]));
    my $frozen = Alyd->start(workers => 1, bin => $wrap, env => \%env, wait => 0, extra => ['rate_limit 1000000/second burst=1000000']);
    my $wsF = $frozen->ctl('workspace', 'create', 'Frozen');
    $key = $frozen->ctl('keys', 'create', '--workspace', $wsF, '--scopes', 'read:sites,write:sites');
    my @made;
    for my $run (1, 2) {
        $frozen->spawn if $run == 2;
        poll_until(10, sub { (Alyd::raw_http($frozen->port, 'GET', '/healthz', timeout => 2))[0] == 200 }) or die "alyd in a pid namespace did not start";
        push @made, create_site($frozen);
        $frozen->stop;
    }
    is(scalar(grep { defined } @made), 2, 'a site made by each run, at the same frozen instant');
    my @trail = @{ Alyd::json_decode($frozen->ctl('--json', 'audit', '--workspace', $wsF)) // [] };
    is(scalar @trail, 2, 'two mutations by same-pid workers in the same millisecond: two audit records');
    is(scalar(keys %{ { map { $_->{at} => 1 } @trail } }), 1, 'both stamped with the same time');
    is_deeply([sort map { $_->{object} } @trail], [sort @made], 'each names its own site');
}

done_testing;
