#!/usr/bin/perl
# HTTP/2 and HTTP/1 abuse against a real alyd with 2 workers: body floods,
# headers-only streams kept alive by PINGs, Rapid Reset, MadeYouReset,
# slowloris on HTTP/1 (headers and body) and HTTP/2, connections per address
# and strikes.  Each attack comes from its own loopback address (127.0.0.N)
# while a legitimate client on 127.0.0.1 keeps asking for /healthz.  For each
# one: the attacking connection is cut within its budget, no worker dies or
# grows past RSS_BOUND_KB, and every legitimate request succeeds.  The
# attackers are t/lib/h2attack.py.
use strict;
use warnings;
use Test::More;
use IO::Select;
use IO::Socket::INET;
use Socket ();
use JSON::PP ();
use Time::HiRes qw(time sleep);
use Alyd;

watchdog(300);

my $python = `command -v python3 2>/dev/null`;
chomp $python;
plan skip_all => 'python3 is needed for the attack clients' unless $python;
my $srcdir = srcdir() // plan skip_all => 'ALY_SRCDIR is not set';
my $attacker = "$srcdir/t/lib/h2attack.py";

# The peak RSS any worker may reach over the whole run.  An optimised build
# stays far below (scripts/bench-abuse prints it); under AddressSanitizer the
# quarantine keeps freed request buffers resident, so the bound is wider.
# Without the limits a single body flood took a sanitized worker past 700 MB.
my $RSS_BOUND_KB = 300 * 1024;

my $srv = Alyd->start(
    workers => 2,
    extra   => [
        'idle_timeout 60s',    # longer than any attack: what cuts them is ours, not h2o's idle timer
        'header_timeout 1s',
        'body_timeout 2s',
        'send_timeout 2s',
        'reset_budget 100',
        'max_connections_per_address 8',
        'address_strikes 3',
        'strike_window 60s',
    ]
);
my $port = $srv->port;
my @workers = sort { $a <=> $b } $srv->worker_pids;
is(scalar @workers, 2, 'two workers');

sub metrics { my (undef, undef, $body) = curl($srv->metrics_url('/metrics')); return $body }
sub metric  { metric_value(metrics(), $_[0]) // 0 }

# Runs one attack to its end; returns the decoded summary (or dies).
sub attack {
    my ($name, $addr, @opt) = @_;
    my ($exit, $out, $err) = run_cmd($python, $attacker, $name, '--port', $port, '--bind', $addr, @opt);
    die "h2attack $name failed ($exit): $err" if $exit != 0;
    return JSON::PP::decode_json($out);
}

# Runs $n copies of one attack at once; returns their summaries.
sub attack_parallel {
    my ($n, $name, $addr, @opt) = @_;
    my $dir = $srv->dir;
    my @pids;
    for my $i (1 .. $n) {
        my $pid = fork // die "fork: $!";
        if ($pid == 0) {
            open(STDOUT, '>', "$dir/attack-$i.json") or POSIX::_exit(2);
            open(STDERR, '>', "$dir/attack-$i.err");
            exec($python, $attacker, $name, '--port', $port, '--bind', $addr, @opt) or POSIX::_exit(127);
        }
        push @pids, $pid;
    }
    poll_until(60, sub { !grep { waitpid($_, POSIX::WNOHANG()) == 0 } @pids }, 0.05);
    kill 'KILL', @pids;
    waitpid($_, 0) for @pids;
    return map { JSON::PP::decode_json(slurp("$dir/attack-$_.json") // '{}') } 1 .. $n;
}

sub hwm_kb {
    my ($pid) = @_;
    my ($kb) = (slurp("/proc/$pid/status") // '') =~ /^VmHWM:\s+(\d+) kB/m;
    return $kb // 0;
}

# Runs $code while a prober asks for /healthz; checks what every attack must leave intact.
sub under_attack {
    my ($label, $code) = @_;
    my $file = $srv->dir . "/probe-$label.txt";
    my $prober = start_prober($port, $file, 3);
    $code->();
    ok(finish_prober($prober, 30), "$label: the legitimate client finished");
    my @r = prober_results($file);
    my @bad = grep { $_->[1] != 200 } @r;
    ok(@r > 0 && !@bad, "$label: every legitimate request succeeded (" . scalar(@r) . ' made, ' . scalar(@bad) . ' failed)')
      or diag(join "\n", map { "@$_" } @bad[0 .. ($#bad < 4 ? $#bad : 4)]);
    is_deeply([sort { $a <=> $b } $srv->worker_pids], \@workers, "$label: the same two workers still serve");
    for my $w (@workers) {
        my $kb = hwm_kb($w);
        ok($kb > 0 && $kb < $RSS_BOUND_KB, "$label: worker $w peak RSS $kb kB < $RSS_BOUND_KB kB");
    }
}

sub cut_within {
    my ($r, $secs, $label) = @_;
    my $run = $r->{runs}[0];
    ok($run->{closed}, "$label: the server closed the connection (" . ($run->{closed} // 'still open') . ')');
    ok($run->{seconds} < $secs * $Alyd::SCALE, "$label: cut after $run->{seconds} s (attack would go on for longer)");
}

# Access-log lines of one client address that were not the 429 of a cut connection.
sub served_lines {
    my ($addr) = @_;
    return scalar grep { (split ' ')[1] eq $addr && (split ' ')[6] ne '429' } split /\n/, ($srv->access_log_text // '');
}

subtest 'body flood: 4 MiB of DATA on each of 100 streams' => sub {
    my $before = metric('alyd_connections_cut_total{reason="body"}');
    under_attack('body-flood', sub {
        my $r = attack('body-flood', '127.0.0.11', '--duration', 15);
        cut_within($r, 12, 'body flood');
        my $sent = $r->{runs}[0]{sent_bytes};
        ok($sent < 100 * 1024 * 1024, "body flood: cut after $sent bytes of the 400 MiB it meant to send");
    });
    ok(metric('alyd_connections_cut_total{reason="body"}') > $before, 'counted as a cut for body bytes in flight');
};

subtest 'body flood behind tiny requests: they buy no body room' => sub {
    under_attack('credit-flood', sub {
        my $r = attack('credit-flood', '127.0.0.45', '--duration', 15, '--streams', 40, '--body', 1024 * 1024);
        my $run = $r->{runs}[0];
        ok($run->{closed}, 'credit flood: the server closed the connection (' . ($run->{closed} // 'still open') . ')');
        my $queued = $run->{body_bytes_queued} // 0;
        # max_inflight_body is 8m: a request is credited its headers' cost, not 16 KiB, so the cut comes near 8 MiB.
        ok($queued < 12 * 1024 * 1024, "credit flood: cut after $queued bytes of body (max_inflight_body 8m)");
    });
};

subtest 'body flood from one address over 4 connections at once' => sub {
    my $before = metric('alyd_connections_cut_total{reason="body"}');
    my $before_deadline = metric('alyd_connections_cut_total{reason="deadline"}');
    my @r;
    under_attack('body-flood-x4', sub {
        @r = attack_parallel(4, 'body-flood', '127.0.0.12', '--duration', 15);
        is(scalar(grep { $_->{runs}[0]{closed} } @r), 4, 'all four flooding connections were cut');
    });
    my $body = metric('alyd_connections_cut_total{reason="body"}') - $before;
    my $deadline = metric('alyd_connections_cut_total{reason="deadline"}') - $before_deadline;
    # A flood the machine's load slows (its sender starved of CPU) can meet body_timeout before the byte limits: a
    # deadline cut, as right as a body one.  Seen once with a busy loop on one of two cores.
    ok($body >= 1, "body cuts counted ($body)");
    ok($body + $deadline >= 4, "four more cuts counted ($body for body bytes in flight, $deadline at the request deadline)")
      or diag(join '; ', map { sprintf '%s after %s s, %s bytes sent', $_->{runs}[0]{closed} // 'open', $_->{runs}[0]{seconds} // '?',
          $_->{runs}[0]{sent_bytes} // '?' } @r);
};

subtest 'headers-only streams kept alive by PINGs' => sub {
    under_attack('hold', sub {
        my $r = attack('hold', '127.0.0.13', '--duration', 15);
        cut_within($r, 8, 'hold');
        ok($r->{runs}[0]{pings} > 0, 'the attacker was sending PINGs');
    });
};

subtest 'Rapid Reset: 3000 HEADERS + RST_STREAM on one connection' => sub {
    my $before = metric('alyd_connections_cut_total{reason="resets"}');
    under_attack('rapid-reset', sub {
        my $r = attack('rapid-reset', '127.0.0.14', '--duration', 10, '--count', 3000);
        ok($r->{runs}[0]{closed}, 'rapid reset: the server closed the connection (' . ($r->{runs}[0]{closed} // 'still open') . ')');
    });
    my $served = 0;
    poll_until(5, sub { ($served = served_lines('127.0.0.14')) >= 100 });
    ok($served >= 100 && $served <= 150, "rapid reset: $served requests reached a route before the cut (budget 100)");
    ok(metric('alyd_connections_cut_total{reason="resets"}') > $before, 'counted as a cut for resets');
};

subtest 'MadeYouReset: complete requests the server is made to reset (WINDOW_UPDATE of 0)' => sub {
    under_attack('made-you-reset', sub {
        my $r = attack('made-you-reset', '127.0.0.15', '--duration', 10, '--count', 3000);
        ok($r->{runs}[0]{closed}, 'MadeYouReset: the server closed the connection (' . ($r->{runs}[0]{closed} // 'still open') . ')');
    });
    my $served = 0;
    poll_until(5, sub { ($served = served_lines('127.0.0.15')) >= 100 });
    ok($served >= 100 && $served <= 150, "MadeYouReset: $served requests reached a route before the cut (budget 100)");
};

subtest 'slowloris' => sub {
    my $before = metric('alyd_connections_cut_total{reason="deadline"}');
    my $i = 16;
    for my $a (['slow-h1', 'HTTP/1 headers one byte at a time'], ['slow-h1-body', 'HTTP/1 body one byte at a time'],
        ['slow-h2', 'HTTP/2 body one byte per DATA frame'])
    {
        my ($name, $what) = @$a;
        under_attack($name, sub {
            my $r = attack($name, '127.0.0.' . $i++, '--duration', 15, '--interval', 0.2);
            cut_within($r, 8, $what);
        });
    }
    ok(metric('alyd_connections_cut_total{reason="deadline"}') >= $before + 3, 'three deadline cuts counted');
};

subtest 'slow-read: pipelined requests whose answers are never read' => sub {
    my $before = metric('alyd_connections_cut_total{reason="deadline"}');
    my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.46', PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp')
      or die "connect: $!";
    setsockopt($s, Socket::SOL_SOCKET(), Socket::SO_RCVBUF(), 4096);
    $s->blocking(0);
    my $req = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:$port\r\n\r\n";
    my $sent = 0;
    # As many as go out in 2 s; the answers pile up in the server's send queue, since nothing reads them.
    my $t0 = time;
    while (time - $t0 < 2) { my $n = syswrite($s, $req x 100); $n ? ($sent += $n) : sleep 0.05 }
    my $cut = poll_until(10, sub { metric('alyd_connections_cut_total{reason="deadline"}') > $before }, 0.2);
    ok($cut, sprintf('the stalled reader is cut (send_timeout 2s) after %.1f s, %d bytes of requests sent', time - $t0, $sent));
    close $s;
    is((curl($srv->url('/healthz')))[0], 200, 'others are served');

    # Every request answered, the answers parked in the socket: no request is
    # in progress, yet the reader is as stalled.  Its receive buffer is shrunk
    # before connect, so the window it offers stays small.
    # Each scrape is itself a 200 (counted once it is answered) and the one
    # request in flight while it runs: k scrapes after the baseline one add k.
    my $m = metrics();
    $before = metric_value($m, 'alyd_connections_cut_total{reason="deadline"}') // 0;
    my $base = metric_value($m, 'alyd_requests_total{status="200"}') // 0;
    $s = IO::Socket::INET->new(LocalAddr => '127.0.0.47', Proto => 'tcp') or die "socket: $!";
    setsockopt($s, Socket::SOL_SOCKET(), Socket::SO_RCVBUF(), 2048) or die "SO_RCVBUF: $!";
    $s->connect(Socket::pack_sockaddr_in($port, Socket::inet_aton('127.0.0.1'))) or die "connect: $!";
    my $n = 60;
    syswrite($s, $req x $n) == length($req) * $n or die "write: $!";
    my ($k, $answered) = (0, 0);
    my $idle = poll_until(5, sub {
        $m = metrics();
        $k++;
        $answered = (metric_value($m, 'alyd_requests_total{status="200"}') // 0) - $base - $k;
        return $answered >= $n && (metric_value($m, 'alyd_requests_in_flight') // 0) == 1;
    });
    ok($idle, "all $n requests answered ($answered), none in progress");
    $t0 = time;
    $cut = poll_until(10, sub { metric('alyd_connections_cut_total{reason="deadline"}') > $before }, 0.2);
    ok($cut, sprintf('a reader whose requests are all answered but who reads none is cut too, after %.1f s', time - $t0));
    close $s;
};

subtest 'connections per address' => sub {
    my $before = metric('alyd_connections_refused_total{reason="per_address"}');
    my @socks;
    for (1 .. 24) {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, LocalAddr => '127.0.0.30', Proto => 'tcp')
          or last;
        push @socks, $s;
    }
    is(scalar @socks, 24, 'the kernel completed 24 connections from one address');
    my $closed = 0;
    poll_until(5, sub {
        $closed = 0;
        for my $s (@socks) {
            next unless IO::Select->new($s)->can_read(0);
            my $n = sysread($s, my $buf, 1);
            $closed++ if defined $n && $n == 0 || !defined $n;
        }
        $closed >= 8;
    });
    # Two workers, each allowing 8: at least 24 - 16 are refused, however accept spreads them.
    ok($closed >= 8, "$closed of 24 connections closed at once (max_connections_per_address 8 per worker)");
    ok(metric('alyd_connections_refused_total{reason="per_address"}') >= $before + 8, 'counted as refused per address');
    my ($st) = raw_http($port, 'GET', '/healthz');
    is($st, 200, 'another address is still served meanwhile');
    close $_ for @socks;
};

subtest 'strikes: an address cut address_strikes times is refused at accept' => sub {
    my $before = metric('alyd_connections_refused_total{reason="strikes"}');
    my $r = attack('slow-h2', '127.0.0.31', '--duration', 8, '--interval', 0.2, '--connections', 10);
    my @runs = @{ $r->{runs} };
    # Two workers with their own tables: at most 2 x 3 connections get served before both refuse.
    my @served = grep { !$_->{no_reply} } @runs;
    my @quick = grep { $_->{no_reply} && $_->{seconds} < 0.5 * $Alyd::SCALE } @runs;
    ok(@served <= 6, scalar(@served) . ' of 10 connections were served (at most 3 per worker)');
    ok(@quick >= 4, scalar(@quick) . ' of 10 were closed at once, unanswered');
    ok(metric('alyd_connections_refused_total{reason="strikes"}') >= $before + 4, 'counted as refused for strikes');
    ok(metric('alyd_address_bans_total') >= 1, 'the ban is counted');
    ok($srv->wait_log(qr/refusing connections from 127\.0\.0\.31 for 60000 ms/), 'the ban is in the error log, once per worker');
    my ($st) = raw_http($port, 'GET', '/healthz');
    is($st, 200, 'other addresses are still served');
};

subtest 'the limits are checked against each other' => sub {
    my $conf = $srv->dir . '/bad.conf';
    spew($conf, "max_request_body 2m\nmax_inflight_body 1m\n");
    my ($exit, $out, $err) = run_cmd(alyd_bin(), '-t', '-c', $conf);
    is($exit, 1, 'max_inflight_body below max_request_body: alyd -t fails');
    like($err, qr/bad\.conf:2: max_inflight_body \(1048576 bytes\) is below max_request_body/, 'and names the line');
    spew($conf, "max_inflight_body 64m\nmax_inflight_body_per_address 32m\n");
    ($exit, $out, $err) = run_cmd(alyd_bin(), '-t', '-c', $conf);
    is($exit, 1, 'max_inflight_body_per_address below max_inflight_body: alyd -t fails');
    like($err, qr/bad\.conf:2: max_inflight_body_per_address/, 'and names the line');
    spew($conf, "max_inflight_body 64m\nmax_inflight_body_per_address 64m\nreset_budget 1\naddress_strikes 1\n" . ($> == 0 ? "user root\n" : ''));
    ($exit, $out, $err) = run_cmd(alyd_bin(), '-t', '-c', $conf);
    is($exit, 0, 'equal limits are fine') or diag($err);
};

# A drain closes only quiet connections.  "Quiet" once compared h2o's
# sock->bytes_read, which holds the size of the last read, not a total: a
# next request arriving in a read as long as the previous one looked like
# silence, and the drain closed the connection under it.
subtest 'QUIT: a connection whose next request is arriving is not taken for idle' => sub {
    my $partial = "POST /api/mcp HTTP/1.1\r\nHost: 127.0.0.1:$port\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n{\"a\":";
    my $first = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:$port\r\nX-Pad: \r\n\r\n";
    $first =~ s/X-Pad: /'X-Pad: ' . ('a' x (length($partial) - length($first)))/e;
    is(length $first, length $partial, 'the first request and the partial second one are the same length');
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp') or die "connect: $!";
    syswrite($s, $first);
    my $buf = '';
    my $sel = IO::Select->new($s);
    poll_until(5, sub {
        if ($sel->can_read(0.05)) { sysread($s, my $chunk, 65536) or return 1; $buf .= $chunk }
        $buf =~ /\r\n\r\n\{.*\}/s;
    });
    like($buf, qr{^HTTP/1\.1 200}, 'first response on a keep-alive connection');
    sleep 0.3;    # the response is logged and swept
    syswrite($s, $partial);
    sleep 0.1;
    ok($srv->signal('QUIT'), 'QUIT sent with the next request half received');
    sleep 0.4;    # several drain sweeps, well within header_timeout
    syswrite($s, '"bc"}');
    $buf = '';
    poll_until(5, sub {
        return 0 unless $sel->can_read(0.05);
        my $n = sysread($s, my $chunk, 65536);
        return 1 unless $n;    # closed
        $buf .= $chunk;
        return $buf =~ /\r\n\r\n\{.*\}/s;
    });
    like($buf, qr{^HTTP/1\.1 401}, 'the request completed during the drain gets its normal answer (401)')
      or diag("got: " . substr($buf, 0, 200) . "\n" . ($srv->error_log_text // ''));
    ok(defined $srv->wait_exit(10), 'the master exits after the drain');
};

ok($srv->stop, 'alyd stops cleanly');
done_testing();
