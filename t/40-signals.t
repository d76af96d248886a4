#!/usr/bin/perl
# Signals to the master: HUP reloads (a bad configuration keeps the old one
# running), USR1 reopens the logs, QUIT drains (in-flight requests finish,
# idle connections close), TERM/INT stop at once and remove the pid file.
# And the buffered access log around them: lines wait in a worker's buffer
# until it fills, the flush interval, USR1 or the worker's exit; a worker
# killed outright loses only what its buffer held; whole lines only.
use strict;
use warnings;
use Test::More;
use IO::Select;
use IO::Socket::INET;
use File::Temp;
use POSIX ();
use Time::HiRes qw(time sleep);
use Alyd;

watchdog(180);

sub same_set { join(',', sort { $a <=> $b } @{ $_[0] }) eq join(',', sort { $a <=> $b } @{ $_[1] }) }

# Reads from $sock until $cb->($buffer) is true, EOF or $timeout seconds.
# Returns ($buffer, $eof, $error).
sub read_until {
    my ($sock, $timeout, $cb) = @_;
    my $buf = '';
    my $sel = IO::Select->new($sock);
    my $deadline = time + $timeout * $Alyd::SCALE;
    while (1) {
        return ($buf, 0, undef) if $cb && $cb->($buf);
        my $left = $deadline - time;
        return ($buf, 0, 'timeout') if $left <= 0;
        next unless $sel->can_read($left);
        my $n = sysread($sock, my $chunk, 65536);
        return ($buf, 1, "read: $!") unless defined $n;
        return ($buf, 1, undef) if $n == 0;
        $buf .= $chunk;
    }
}

sub complete_response {
    my ($buf) = @_;
    return 0 unless $buf =~ /\r\n\r\n/;
    my ($h, $b) = split /\r\n\r\n/, $buf, 2;
    my ($len) = $h =~ /^content-length:\s*(\d+)/mi;
    return defined $len && length($b) >= $len;
}

# HTTP/2 by hand: the client preface with empty SETTINGS, a GET with
# END_STREAM (HPACK literals, no Huffman), and a frame splitter that returns
# [type, flags, stream, payload] for each complete frame.
sub h2_frame { my ($type, $flags, $stream, $payload) = @_; substr(pack('N', length $payload), 1) . pack('CCN', $type, $flags, $stream) . $payload }
sub h2_preface { "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" . h2_frame(4, 0, 0, '') }

sub h2_get {
    my ($stream, $path, $authority) = @_;
    my $hb = "\x82\x86"                                   # :method GET, :scheme http
      . "\x04" . chr(length $path) . $path               # :path, literal without indexing
      . "\x01" . chr(length $authority) . $authority;    # :authority
    return h2_frame(1, 0x5, $stream, $hb);              # HEADERS, END_STREAM | END_HEADERS
}

sub h2_frames {
    my ($buf) = @_;
    my @f;
    for (my $i = 0; $i + 9 <= length $buf;) {
        my ($l1, $l2, $type, $flags, $stream) = unpack('nCCCN', substr($buf, $i, 9));
        my $len = $l1 << 8 | $l2;
        last if $i + 9 + $len > length $buf;
        push @f, [$type, $flags, $stream & 0x7fffffff, substr($buf, $i + 9, $len)];
        $i += 9 + $len;
    }
    return @f;
}

sub connect_to {
    my ($port) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp', Timeout => 5)
      or die "connect: $!";
    return $s;
}

# --- HUP with a good, changed configuration ---------------------------------
{
    my $srv = Alyd->start(workers => 2, workers_via => 'config');
    my @old = $srv->worker_pids;
    is(scalar @old, 2, 'HUP: two workers from "workers 2"');
    my $probe_file = $srv->dir . '/probe-hup.txt';
    my $prober = start_prober($srv->port, $probe_file, 2.5 * $Alyd::SCALE);    # long enough for 30 probes with sanitized workers forking
    sleep 0.5;
    $srv->write_conf(workers => 3);
    my $t0 = time;
    ok($srv->signal('HUP'), 'HUP sent after changing workers 2 -> 3');
    my @new;
    my $done = poll_until(
        10,
        sub {
            @new = $srv->serving_workers;
            return @new == 3 && !(grep { my $o = $_; grep { $_ == $o } @new } @old) && !(grep { proc_alive($_) } @old);
        }
    );
    ok($done, sprintf('three new workers serve and every old worker exited (%.2fs)', time - $t0))
      or diag("old: @old; now: @new; alive old: @{[ grep { proc_alive($_) } @old ]}");
    ok(finish_prober($prober, 10), 'prober finished');
    my @probes = prober_results($probe_file);
    my @fails = grep { $_->[1] != 200 } @probes;
    ok(@probes >= 30, scalar(@probes) . ' /healthz requests during the reload');
    is(scalar @fails, 0, '/healthz answered 200 throughout the reload') or do {
        diag(sprintf("%+.3fs after HUP: status %d %s", $_->[0] - $t0, $_->[1], $_->[3])) for @fails;
    };
    my %served = map { $_->[2] => 1 } grep { $_->[1] == 200 } @probes;
    ok((grep { my $n = $_; grep { $_ == $n } @new } keys %served), 'new workers answered during the probe');
    ok($srv->wait_log(qr/reloaded: generation 2 with 3 worker\(s\)/), 'error log: reloaded, generation 2, 3 workers');
    my (undef, undef, $m) = curl($srv->metrics_url('/metrics'));
    is(metric_value($m, 'alyd_workers'), 3, 'alyd_workers 3 after the reload');
    is(metric_value($m, 'alyd_worker_restarts_total'), 0, 'a reload is not counted as worker restarts');

    # --- HUP with a bad configuration ---
    my @good = $srv->worker_pids;
    $srv->write_conf(workers => 3, extra => ['listn 127.0.0.1:1']);
    my $bad_line = () = $srv->config_text(workers => 3, extra => ['listn 127.0.0.1:1']) =~ /\n/g;
    ok($srv->signal('HUP'), 'HUP sent with a typo in the configuration');
    my $conf = $srv->conf;
    my $msg = $srv->wait_log(qr/reload failed, keeping the running configuration: \Q$conf\E:\d+: [^\n]*/);
    ok($msg, 'error log: reload failed, keeping the running configuration') or diag($srv->error_log_text);
    like($msg // '', qr/:$bad_line: unknown directive "listn"/, "... naming file:$bad_line and the problem");
    my @still = $srv->worker_pids;
    ok(same_set(\@still, \@good), 'the old workers keep running') or diag("before: @good; after: @still");
    my ($st, $body) = raw_http($srv->port, 'GET', '/healthz');
    is($st, 200, 'and keep serving /healthz');
    ok($body =~ /"pid":(\d+)/ && (grep { $_ == $1 } @good), '... from one of the old workers');
    ok(!$srv->exited, 'the master is still running');

    # A configuration that parses but cannot be applied (the new port is taken).
    my $blocker = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 1, ReuseAddr => 0)
      or die "bind: $!";
    my $taken = $blocker->sockport;
    $srv->write_conf(workers => 3, extra => ["listen 127.0.0.1:$taken"]);
    my $before = () = ($srv->error_log_text =~ /reload failed/g);
    ok($srv->signal('HUP'), 'HUP sent with a listen address that is in use');
    ok(poll_until(5, sub { my $n = () = ($srv->error_log_text =~ /reload failed/g); $n > $before }),
        'error log: reload failed for the busy address');
    like($srv->error_log_text, qr/reload failed[^\n]*127\.0\.0\.1:$taken/, '... naming the address');
    ok(same_set([$srv->worker_pids], \@good), 'the old workers keep running');
    ($st) = raw_http($srv->port, 'GET', '/healthz');
    is($st, 200, 'and keep serving');
    close $blocker;

    # Fixed again: the next HUP works.
    $srv->write_conf(workers => 2);
    ok($srv->signal('HUP'), 'HUP with the configuration fixed');
    ok(poll_until(10, sub {
        my @w = $srv->serving_workers;
        @w == 2 && !(grep { proc_alive($_) } @good);
    }), 'a later good reload replaces the workers');
    ok($srv->stop, 'stops on TERM');
}

# --- USR1: reopen logs ------------------------------------------------------
{
    my $srv = Alyd->start(workers => 2);
    my ($st) = raw_http($srv->port, 'GET', '/healthz?usr1=before');
    ok(poll_until(5, sub { ($srv->access_log_text // '') =~ /usr1=before/ }), 'access log written before rotation');
    my ($al, $el) = ($srv->access_log, $srv->error_log);
    ok(rename($al, "$al.1") && rename($el, "$el.1"), 'renamed access.log and error.log away (logrotate)');
    ok($srv->signal('USR1'), 'USR1 sent');
    ok(poll_until(5, sub { -f $el && ($srv->error_log_text // '') =~ /reopened log files/ }),
        'a new error.log is created and gets "reopened log files"');
    my $k = 0;
    my $first = poll_until(5, sub {
        $k++;
        raw_http($srv->port, 'GET', "/healthz?usr1=after$k");
        -f $al && ($srv->access_log_text // '') =~ /usr1=after\d+\b/;    # lines wait up to access_log_flush
    });
    ok($first, 'a new access.log is created and receives request lines');
    my $old_size = -s "$al.1";
    raw_http($srv->port, 'GET', "/healthz?usr1=next$_") for 1 .. 10;
    my $all = poll_until(5, sub {
        my $t = $srv->access_log_text // '';
        !(grep { $t !~ /usr1=next$_\b/ } 1 .. 10);
    });
    ok($all, 'the next 10 requests all go to the new access.log');
    is(-s "$al.1", $old_size, 'the rotated access.log.1 receives nothing more');
    unlike(slurp("$al.1"), qr/usr1=next/, '... none of those lines');
    ok($srv->stop, 'stops on TERM');
}

# --- QUIT while a request is in flight ----------------------------------------
{
    my $srv = Alyd->start(workers => 2, extra => ['shutdown_timeout 10s']);
    my $port = $srv->port;
    my $body = '{"jsonrpc":"2.0","id":1,"method":"ping","params":{}}';
    $body .= ' ' x (100 - length $body);
    my $head = "POST /api/mcp HTTP/1.1\r\nHost: 127.0.0.1:$port\r\nContent-Type: application/json\r\n"
      . "Accept: application/json, text/event-stream\r\nContent-Length: 100\r\n\r\n";

    # What this request gets from a running server, for comparison.
    my $s0 = connect_to($port);
    syswrite($s0, $head . $body);
    my ($normal) = read_until($s0, 5, \&complete_response);
    close $s0;
    my ($normal_status) = $normal =~ m{^HTTP/1\.1 (\d{3})};
    ok($normal_status, "POST /api/mcp normally answers $normal_status");

    my $s = connect_to($port);
    syswrite($s, $head . substr($body, 0, 50));
    # The server has accepted it (our connection plus the metrics request's own).
    ok(poll_until(5, sub {
        my (undef, undef, $m) = curl($srv->metrics_url('/metrics'));
        (metric_value($m, 'alyd_connections') // 0) >= 2;
    }), 'the slow request is accepted');
    sleep 0.3;    # ordering only: let the worker read the headers and half the body
    my $t0 = time;
    ok($srv->signal('QUIT'), 'QUIT sent with half a request body outstanding');
    sleep 1;
    my $wrote = syswrite($s, substr($body, 50));
    is($wrote, 50, 'the rest of the body sent 1 s after QUIT');
    my ($resp, $eof, $err) = read_until($s, 5, \&complete_response);
    my ($status) = $resp =~ m{^HTTP/1\.1 (\d{3})};
    is($status, $normal_status, "the in-flight request gets its normal response ($normal_status) during the drain")
      or diag('got: ' . (length $resp ? $resp : '(nothing)') . ($eof ? ' [connection closed]' : '') . ($err ? " [$err]" : ''));
    close $s;
    my $elapsed = $srv->wait_exit(12);
    ok(defined $elapsed, 'the master exits by itself after the drain');
    ok(defined $elapsed && time - $t0 < 10, sprintf('within shutdown_timeout (%.2fs after QUIT)', time - $t0));
    is($srv->exit_status, 0, 'master exit status 0');
    like($srv->error_log_text, qr/received QUIT: draining/, 'error log: received QUIT: draining');
    $srv->kill_all;
}

# --- QUIT with idle keep-alive connections ------------------------------------
{
    my $srv = Alyd->start(workers => 2, extra => ['shutdown_timeout 20s']);
    my $port = $srv->port;
    my $s = connect_to($port);
    syswrite($s, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:$port\r\n\r\n");
    my ($resp, $eof) = read_until($s, 5, \&complete_response);
    like($resp, qr{^HTTP/1\.1 200}, 'keep-alive connection: first response 200');
    ok(!$eof, 'connection stays open after the response');

    # Idle HTTP/2 (h2c prior knowledge) connections: one that has served a
    # request, and one that has only exchanged SETTINGS.
    my $h2 = connect_to($port);
    syswrite($h2, h2_preface() . h2_get(1, '/healthz', "127.0.0.1:$port"));
    my ($pre) = read_until($h2, 5, sub { grep { $_->[0] == 0 && $_->[1] & 1 } h2_frames($_[0]) });
    ok((grep { $_->[0] == 0 && $_->[1] & 1 } h2_frames($pre)), 'h2c connection: GET /healthz answered');
    my $h2fresh = connect_to($port);
    syswrite($h2fresh, h2_preface());
    my ($pre2) = read_until($h2fresh, 5, sub { grep { $_->[0] == 4 } h2_frames($_[0]) });
    ok((grep { $_->[0] == 4 } h2_frames($pre2)), 'second h2c connection: server SETTINGS received');

    my $t0 = time;
    ok($srv->signal('QUIT'), 'QUIT sent');
    my ($rest, $closed, $err) = read_until($s, 5);
    ok($closed && !length($rest), sprintf('the idle HTTP/1.1 connection is closed by the server (%.2fs)', time - $t0))
      or diag("got: $rest" . ($err ? " [$err]" : ''));
    my ($frames, $h2closed) = read_until($h2, 8);
    ok((grep { $_->[0] == 7 } h2_frames($frames)), 'the idle HTTP/2 connection gets GOAWAY');
    ok($h2closed, 'and is then closed');
    my ($frames2, $closed2) = read_until($h2fresh, 8);
    ok($closed2, 'the HTTP/2 connection that made no request is closed');
    ok((grep { $_->[0] == 7 } h2_frames($frames2)), '... after a GOAWAY (RFC 9113 6.8: SHOULD)');
    my $elapsed = $srv->wait_exit(10);
    ok(defined $elapsed && time - $t0 < 5 * $Alyd::SCALE, sprintf('the master exits well before shutdown_timeout 20s (%.2fs after QUIT)', time - $t0));
    is($srv->exit_status, 0, 'master exit status 0');
    $srv->kill_all;
}

# --- TERM and INT -----------------------------------------------------------------
for my $sig ('TERM', 'INT') {
    my $srv = Alyd->start(workers => 2, pid_file => 1);
    my $pidf = $srv->pid_file;
    my $written = slurp($pidf) // '';
    is($written, $srv->master_pid . "\n", "$sig: pid_file holds the master pid");
    my @w = $srv->worker_pids;
    my $t0 = time;
    ok($srv->signal($sig), "$sig sent");
    my $elapsed = $srv->wait_exit(2);
    ok(defined $elapsed, sprintf("$sig: master exits within 2 s (%s)", defined $elapsed ? sprintf('%.2fs', $elapsed) : 'still running'));
    ok(poll_until(2 - (time - $t0) > 0.1 ? 2 - (time - $t0) : 0.1, sub { !(grep { proc_alive($_) } @w) }),
        "$sig: workers exit within 2 s");
    is($srv->exit_status, 0, "$sig: exit status 0");
    ok(!-e $pidf, "$sig: pid_file removed");
    $srv->kill_all;
}

# --- the buffered access log ---------------------------------------------------

# One access-log line: time client principal method path rpc status bytes duration protocol pid.
my $LINE = qr{^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z [0-9.:a-f]+ \S+ [A-Z]+ /\S* \S+ \d{3} \d+ \d+\.\d{3} HTTP/[12](?:\.[01])? \d+$};

# The access log's lines carrying "tag=<t>-<n>", as { n => count }, and every line that is not well formed.
sub tagged {
    my ($text, $t) = @_;
    my (%n, @bad);
    for my $l (split /\n/, $text // '') {
        push @bad, $l unless $l =~ $LINE;
        $n{$1}++ if $l =~ /[?&]tag=\Q$t\E-(\d+)\b/;
    }
    return (\%n, \@bad);
}

# Requests GET /healthz?tag=<t>-<n> for n in @ns, each on a fresh connection; the count answered 200.
sub tag_requests {
    my ($srv, $t, @ns) = @_;
    my $ok = 0;
    for my $n (@ns) {
        my ($st) = raw_http($srv->port, 'GET', "/healthz?tag=$t-$n");
        $ok++ if $st == 200;
    }
    return $ok;
}

sub exactly_once {
    my ($n, @want) = @_;
    my @missing = grep { !$n->{$_} } @want;
    my @twice = grep { $n->{$_} > 1 } @want;
    my %w = map { $_ => 1 } @want;
    my @extra = grep { !$w{$_} } keys %$n;
    diag("missing: @missing") if @missing;
    diag("more than once: @twice") if @twice;
    diag("unexpected: @extra") if @extra;
    return !@missing && !@twice && !@extra;
}

# Bounds of the two directives, checked by alyd -t.
{
    my $dir = File::Temp->newdir;
    my @cases = (['access_log_buffer 0', 1], ['access_log_buffer 16m', 1], ['access_log_buffer 17m', 0],
        ['access_log_buffer 64q', 0], ['access_log_flush 10ms', 1], ['access_log_flush 1h', 1],
        ['access_log_flush 9ms', 0], ['access_log_flush 2h', 0], ['access_log_flush soon', 0]);
    for my $c (@cases) {
        my ($line, $good) = @$c;
        spew("$dir/a.conf", "listen 127.0.0.1:1\ndata_dir $dir/data\n$line\n" . ($> == 0 ? "user root\n" : ''));
        my ($exit, $out, $err) = run_cmd(Alyd::alyd_bin(), '-t', '-c', "$dir/a.conf");
        if ($good) {
            is($exit, 0, "alyd -t accepts \"$line\"") or diag($err);
        } else {
            my ($name) = $line =~ /^(\S+)/;
            ok($exit != 0 && $err =~ /a\.conf:3: \Q$name\E/, "alyd -t refuses \"$line\" at line 3") or diag($err);
        }
    }
}

# Lines wait in the buffer: with a 1 h interval nothing is written while the
# buffer has room; with a short interval the timer writes them.
{
    my $srv = Alyd->start(workers => 1, extra => ['access_log_flush 1h']);
    is(tag_requests($srv, 'held', 1 .. 5), 5, 'flush 1h: 5 requests answered');
    sleep 1.5;    # ordering only: time in which an unbuffered log would have had them long since
    my ($n) = tagged($srv->access_log_text, 'held');
    is(scalar(keys %$n), 0, 'flush 1h: their lines are still in the buffer');
    ok($srv->stop, 'stops on TERM');
    ($n) = tagged($srv->access_log_text, 'held');
    ok(exactly_once($n, 1 .. 5), 'and are written, each once, when the worker exits');
}
{
    my $srv = Alyd->start(workers => 1, extra => ['access_log_flush 200ms']);
    my $t0 = time;
    is(tag_requests($srv, 'timer', 1 .. 5), 5, 'flush 200ms: 5 requests answered');
    my $n;
    my $seen = poll_until(5, sub { ($n) = tagged($srv->access_log_text, 'timer'); keys %$n == 5 });
    ok($seen, sprintf('their lines are written by the timer, the worker still running (%.2fs)', time - $t0));
    ok(exactly_once($n, 1 .. 5), '... each once');
    ok($srv->stop, 'stops on TERM');
}

# A full buffer is written at once; a worker killed with SIGKILL loses only
# the lines its buffer held, and what was written is a prefix of the requests
# (one worker serves them in order).
{
    my $srv = Alyd->start(workers => 1, extra => ['access_log_flush 1h', 'access_log_buffer 4k']);
    my ($w) = $srv->worker_pids;
    my $m = 150;
    is(tag_requests($srv, 'kill', 1 .. $m), $m, "$m requests answered");
    ok(kill('KILL', $w), 'SIGKILL to the worker');
    ok(poll_until(5, sub { !proc_alive($w) }), 'the worker is gone');
    my $text = $srv->access_log_text // '';
    my ($n, $bad) = tagged($text, 'kill');
    my $k = keys %$n;
    is(scalar @$bad, 0, 'every line in the file is whole') or diag("bad: $bad->[0]");
    ok($k > 0, "lines were written while the buffer filled ($k of $m)");
    ok(exactly_once($n, 1 .. $k), '... the first k requests, each once');
    # A lost line is at most a few digits shorter than the shortest written one.
    my ($shortest) = sort { $a <=> $b } map { length($_) + 1 } grep { /tag=kill-/ } split /\n/, $text;
    my $lost = $m - $k;
    ok($lost >= 1 && $lost * (($shortest // 9) - 8) <= 4096,
        "the lost lines ($lost of about $shortest bytes) are at most what a 4k buffer holds");
    my $why = $srv->wait_ready(1);
    ok(!defined $why, 'the master replaces the worker') or diag($why);
    $srv->kill_all;
}

# USR1: every line logged before the signal lands in the rotated file, every
# line after it in the new one; none lost, none twice.
{
    my $srv = Alyd->start(workers => 1, extra => ['access_log_flush 1h']);
    my $al = $srv->access_log;
    is(tag_requests($srv, 'rot', 1 .. 20), 20, '20 requests before the rotation');
    ok(rename($al, "$al.1"), 'access.log renamed away');
    ok($srv->signal('USR1'), 'USR1 sent');
    my $n;
    ok(poll_until(5, sub { ($n) = tagged(slurp("$al.1"), 'rot'); keys %$n == 20 }),
        'the buffered lines are written to the rotated file on USR1 (flush 1h)');
    is(tag_requests($srv, 'rot', 21 .. 40), 20, '20 requests after the rotation');
    ok($srv->stop, 'stops on TERM');
    my $bad;
    ($n, $bad) = tagged(slurp("$al.1"), 'rot');
    ok(exactly_once($n, 1 .. 20), 'access.log.1 holds requests 1-20, each once');
    is(scalar @$bad, 0, '... as whole lines');
    ($n, $bad) = tagged($srv->access_log_text, 'rot');
    ok(exactly_once($n, 21 .. 40), 'the new access.log holds requests 21-40, each once');
    is(scalar @$bad, 0, '... as whole lines');
}

# Workers write their buffers when they exit: after a reload (the old
# workers drain), on QUIT and on TERM.
for my $sig ('HUP', 'QUIT', 'TERM') {
    my $srv = Alyd->start(workers => 2, extra => ['access_log_flush 1h']);
    my @old = $srv->worker_pids;
    is(tag_requests($srv, $sig, 1 .. 30), 30, "$sig: 30 requests answered");
    my ($n) = tagged($srv->access_log_text, $sig);
    is(scalar(keys %$n), 0, "$sig: their lines are buffered");
    ok($srv->signal($sig), "$sig sent");
    if ($sig eq 'HUP') {
        ok(poll_until(10, sub { !(grep { proc_alive($_) } @old) }), 'HUP: the old workers exit');
        ok(!$srv->exited, 'HUP: the master keeps running');
    } else {
        ok(defined $srv->wait_exit(10), "$sig: the master exits");
        is($srv->exit_status, 0, "$sig: exit status 0");
    }
    my $bad;
    ($n, $bad) = tagged($srv->access_log_text, $sig);
    ok(exactly_once($n, 1 .. 30), "$sig: all 30 lines are written, each once");
    is(scalar @$bad, 0, "$sig: as whole lines");
    $srv->kill_all;
}

# Concurrent clients on two workers with small buffers (many writes racing
# for the end of the file), and with no buffer: exactly one whole line per request.
for my $buffer ('1k', '0') {
    my $srv = Alyd->start(workers => 2, extra => ['access_log_flush 1h', "access_log_buffer $buffer"]);
    my ($clients, $each) = (8, 40);
    my $pad = 'p' x 300;    # long lines: a 1k buffer holds two or three
    my @kids;
    for my $c (1 .. $clients) {
        my $pid = fork // die "fork: $!";
        if ($pid == 0) {
            my $ok = 0;
            for my $i (1 .. $each) {
                my ($st) = raw_http($srv->port, 'GET', "/healthz?tag=conc-" . ($c * 1000 + $i) . "&pad=$pad");
                $ok++ if $st == 200;
            }
            POSIX::_exit($ok == $each ? 0 : 1);
        }
        push @kids, $pid;
    }
    my $fails = 0;
    for my $pid (@kids) { waitpid($pid, 0); $fails++ if $? != 0 }
    is($fails, 0, "buffer $buffer: $clients concurrent clients x $each requests all answered");
    ok($srv->stop, "buffer $buffer: stops on TERM");
    my $text = $srv->access_log_text // '';
    my ($n, $bad) = tagged($text, 'conc');
    ok(exactly_once($n, map { my $c = $_; map { $c * 1000 + $_ } 1 .. $each } 1 .. $clients),
        "buffer $buffer: exactly " . $clients * $each . ' lines, one per request');
    is(scalar @$bad, 0, "buffer $buffer: every line whole") or diag("first bad line: $bad->[0]");
    like($text, qr/\n\z/, "buffer $buffer: the file ends with a whole line");
    my %pids = map { /(\d+)$/ ? ($1 => 1) : () } grep { /tag=conc-/ } split /\n/, $text;
    diag("buffer $buffer: lines from " . scalar(keys %pids) . ' worker(s)');
}

done_testing();
