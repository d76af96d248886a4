# idle_timeout: an idle connection is closed once it has been idle that long,
# and not before: an HTTP/1.1 keep-alive connection after its answer, and an
# HTTP/2 (h2c) connection that only said its preface and SETTINGS.  A
# connection that keeps asking is not cut.
use strict;
use warnings;
use Test::More;
use IO::Select;
use IO::Socket::INET;
use Time::HiRes qw(time sleep);
use Alyd;

Alyd::watchdog(120);

my $srv = Alyd->start(workers => 1, extra => ['idle_timeout 1s']);
my $port = $srv->port;
my $SC = $Alyd::SCALE;

# Opens a connection, sends $hello, and returns how long the server took to close it (reading all it sends), or undef.
sub closed_after {
    my ($hello, $limit) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp') or die "connect: $!";
    $s->syswrite($hello);
    my $t0 = time;
    my $sel = IO::Select->new($s);
    my $got = '';
    while (time - $t0 < $limit) {
        next unless $sel->can_read(0.05);
        my $n = $s->sysread(my $buf, 65536);
        return (time - $t0, $got) if !$n;
        $got .= $buf;
    }
    return (undef, $got);
}

my ($t, $got) = closed_after("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:$port\r\n\r\n", 5 * $SC);
like($got, qr{^HTTP/1\.1 200}, 'HTTP/1.1: the request is answered on a keep-alive connection');
ok(defined $t, 'HTTP/1.1: the idle keep-alive connection is closed');
ok(defined $t && $t >= 0.8 && $t < 1 + 1.5 * $SC, sprintf('HTTP/1.1: after about idle_timeout 1s (%.2f s)', $t // -1));

# h2c with prior knowledge: the preface and an empty SETTINGS frame, then silence.
($t, $got) = closed_after("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" . pack('CnCCN', 0, 0, 4, 0, 0), 5 * $SC);
ok(length($got) >= 9 && unpack('C', substr($got, 3, 1)) == 4, 'h2c: the server answers with its SETTINGS');
ok(defined $t, 'h2c: the idle connection is closed');
ok(defined $t && $t >= 0.8 && $t < 1 + 1.5 * $SC, sprintf('h2c: after about idle_timeout 1s (%.2f s)', $t // -1));

# Busy is not idle: a request every 0.4 s for 3 s on one connection keeps it open.
{
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp') or die "connect: $!";
    my $sel = IO::Select->new($s);
    my $answers = 0;
    my $t0 = time;
    while (time - $t0 < 3) {
        $s->syswrite("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:$port\r\n\r\n") or last;
        my $got = '';
        my $until = time + 2 * $SC;
        while ($got !~ /\r\n\r\n.*\}/s && time < $until) {
            next unless $sel->can_read(0.05);
            my $n = $s->sysread(my $buf, 65536);
            last if !$n;
            $got .= $buf;
        }
        last unless $got =~ m{^HTTP/1\.1 200};
        $answers++;
        sleep 0.4;
    }
    ok($answers >= 6, "a connection asking every 0.4 s for 3 s stays open ($answers answers)");
}

ok($srv->stop, 'server stops');
done_testing;
