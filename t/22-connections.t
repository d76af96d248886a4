# Connection settings h2o enforces for us, checked from outside:
# idle_timeout closes an idle connection once it has been idle that long, and
# not before (an HTTP/1.1 keep-alive connection after its answer, an h2c
# connection that only said its preface and SETTINGS; one that keeps asking
# stays open); max_streams_per_connection bounds how many of one HTTP/2
# connection's streams reach a route at once; max_connections bounds how many
# connections a worker holds (the next waits, unanswered, until one closes).
use strict;
use warnings;
use Test::More;
use IO::Select;
use IO::Socket::INET;
use POSIX ();
use Time::HiRes qw(time sleep);
use Alyd;

Alyd::watchdog(120);

my $srv = Alyd->start(workers => 1, bin => $ENV{ALYD_TEST}, extra => ['idle_timeout 1s', 'max_streams_per_connection 2']);
my $port = $srv->port;
my $SC = $Alyd::SCALE;

# Opens a connection, sends $hello, and returns how long the server took to close it (reading all it sends), or undef.
sub closed_after {
    my ($hello, $limit) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp') or die "connect: $!";
    my $t0 = time;    # before the write: a pause of this process after it would shorten the time measured
    $s->syswrite($hello);
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

# Busy is not idle: ten requests 0.3 s apart (3 s and more, three idle_timeouts) on one connection keep it open.
{
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp') or die "connect: $!";
    my $sel = IO::Select->new($s);
    my $answers = 0;
    my $t0 = time;
    for (1 .. 10) {
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
        sleep 0.3;
    }
    is($answers, 10, sprintf('a connection asking every 0.3 s stays open: 10 of 10 answered over %.1f s', time - $t0));
}

# Six streams on one h2c connection, each a call that waits on the client (test_sampling): two at a time reach it.
SKIP: {
    my $nghttp = `command -v nghttp 2>/dev/null`;
    chomp $nghttp;
    skip 'nghttp is needed for several streams on one connection', 3 unless $nghttp;
    my $ws = $srv->ctl('workspace', 'create', 'Streams');
    my $key = $srv->ctl('keys', 'create', '--workspace', $ws, '--scopes', 'read:sites');
    my @h = ('-H', 'Content-Type: application/json', '-H', 'Accept: application/json, text/event-stream', '-H', "Authorization: Bearer $key");
    my (undef, $hdr) = Alyd::curl(@h, '--data', '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25",'
        . '"capabilities":{"sampling":{}},"clientInfo":{"name":"t","version":"1"}}}', $srv->url('/api/mcp'));
    my $sid = Alyd::header_value($hdr, 'mcp-session-id') // '';
    my $body = $srv->dir . '/sampling.json';
    Alyd::spew($body, '{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"test_sampling","arguments":{"prompt":"hi"}}}');
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        open STDOUT, '>', '/dev/null';
        open STDERR, '>', '/dev/null';
        exec($nghttp, '-n', '-m', '6', '-H', 'content-type: application/json', '-H', 'accept: application/json, text/event-stream',
            '-H', "authorization: Bearer $key", '-H', "mcp-session-id: $sid", '-H', 'mcp-protocol-version: 2025-11-25', '-d', $body,
            $srv->url('/api/mcp')) or POSIX::_exit(127);
    }
    my $in_flight = sub {
        my (undef, undef, $m) = Alyd::curl($srv->metrics_url('/metrics'));
        return Alyd::metric_value($m // '', 'alyd_requests_in_flight') // -1;
    };
    my $seen = 0;
    ok(Alyd::poll_until(5, sub { ($seen = $in_flight->()) >= 2 }), "calls from the connection reach the route ($seen in flight)");
    my $most = $seen;
    for (1 .. 10) {
        my $n = $in_flight->();
        $most = $n if $n > $most;
        sleep 0.1;
    }
    # The /metrics request counts itself.
    ok($most <= 3, "no more than 2 of the connection's 6 streams at once (most seen $most, with /metrics itself)");
    kill 'TERM', $pid;
    waitpid($pid, 0);
    ok(Alyd::poll_until(5, sub { $in_flight->() <= 1 }), 'the connection gone, its calls end');
}

ok($srv->stop, 'server stops');

# max_connections 3 on one worker: three kept-alive connections are all it takes; a fourth is left in the
# listen queue, unanswered, until one of the three closes, and is then served.
{
    my $lim = Alyd->start(workers => 1, bin => $ENV{ALYD_TEST}, extra => ['max_connections 3']);
    my $lport = $lim->port;
    my $ask = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:$lport\r\n\r\n";
    # Reads from $s until a whole healthz answer came, the peer closed, or $limit seconds passed.
    my $answer = sub {
        my ($s, $limit) = @_;
        my $sel = IO::Select->new($s);
        my ($got, $t0) = ('', time);
        while ($got !~ /\r\n\r\n.*\}/s && time - $t0 < $limit) {
            next unless $sel->can_read(0.05);
            my $n = $s->sysread(my $buf, 65536);
            last if !$n;
            $got .= $buf;
        }
        return $got;
    };
    my @held;
    for my $i (1 .. 3) {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $lport, Proto => 'tcp') or die "connect: $!";
        $s->syswrite($ask);
        like($answer->($s, 5 * $SC), qr{^HTTP/1\.1 200}, "max_connections 3: connection $i is served and kept open");
        push @held, $s;
    }
    my $fourth = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $lport, Proto => 'tcp') or die "connect: $!";
    $fourth->syswrite($ask);
    is($answer->($fourth, 1.5), '', 'a fourth connection gets no answer while three are held');
    # The three are still served: the limit holds connections, it does not stop them.
    $held[0]->syswrite($ask);
    like($answer->($held[0], 5 * $SC), qr{^HTTP/1\.1 200}, 'a held connection is still answered meanwhile');
    close(shift @held);
    like($answer->($fourth, 5 * $SC), qr{^HTTP/1\.1 200}, 'one of the three closed: the fourth is accepted and answered');
    close $_ for @held, $fourth;
    ok($lim->stop, 'the max_connections server stops');
}
done_testing;
