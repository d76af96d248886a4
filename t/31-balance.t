#!/usr/bin/perl
# Connections are shared out between workers: 40 clients connecting at once
# end up spread over both workers (each connection's /healthz names the worker
# that accepted it), where whichever worker woke first used to take most of a
# burst.  A worker holding more than one connection above the other leaves the
# listener to it for a millisecond; under load the other may not come in time,
# so the check asks for a fair share, not an exact split.
use strict;
use warnings;
use Test::More;
use IO::Socket::INET;
use IO::Select;
use Time::HiRes qw(time sleep);
use Alyd;

watchdog(60);

my $srv = Alyd->start(workers => 2);
my @workers = $srv->worker_pids;
is(scalar @workers, 2, 'two workers');
ok(poll_until(10, sub { $srv->serving_workers == 2 }), 'both serving');

my $N = 40;
for my $round (1 .. 3) {
    # Connect all at once, then ask each connection which worker holds it.
    my @socks = map {
        IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $srv->port, Proto => 'tcp', Timeout => 5)
          or die "connect: $!";
    } 1 .. $N;
    $_->syswrite("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n") for @socks;
    my %by;
    for my $s (@socks) {
        my ($buf, $deadline) = ('', time + 10 * $Alyd::SCALE);
        my $sel = IO::Select->new($s);
        while (time < $deadline && $buf !~ /"pid":\d+/) {
            last unless $sel->can_read(1);
            last unless sysread($s, $buf, 4096, length $buf);
        }
        my ($pid) = $buf =~ /"pid":(\d+)/;
        $by{ $pid // 'none' }++;
    }
    close $_ for @socks;
    my @counts = map { $by{$_} // 0 } @workers;
    is($by{none} // 0, 0, "round $round: every connection answered");
    ok((grep { $_ >= $N / 4 } @counts) == 2, "round $round: each worker holds at least a quarter of $N connections (@counts)");
}
done_testing;
