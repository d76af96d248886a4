#!/usr/bin/perl
# Reloads and stops that go wrong: a configuration whose workers cannot start
# is refused by alyd -t and by HUP, and a new generation that does not come up
# leaves the old one serving; a failed reload leaves no listener behind; old
# workers are killed after shutdown_timeout; TERM during a QUIT drain stops at
# once; alyd -t refuses what alyd refuses to start; USR1 after a rotation
# hands the new log files to the worker user.
use strict;
use warnings;
use Test::More;
use IO::Socket::INET;
use File::Temp;
use POSIX ();
use Time::HiRes qw(time sleep);
use Alyd;

watchdog(120);

sub same_set { join(',', sort { $a <=> $b } @{ $_[0] }) eq join(',', sort { $a <=> $b } @{ $_[1] }) }

sub refused {
    my ($port) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp', Timeout => 2);
    return !$s;
}

# Line numbers in the error log of pid's lines matching $re.
sub log_lines_of {
    my ($text, $pid, $re) = @_;
    my @l = split /\n/, $text // '';
    return grep { $l[$_] =~ /alyd\[$pid\]/ && $l[$_] =~ $re } 0 .. $#l;
}

my $base = ['shutdown_timeout 1s'];

# --- a pepper file that does not exist ------------------------------------------
my $srv = Alyd->start(workers => 2, extra => $base);
my @old = $srv->worker_pids;
{
    my $typo = $srv->data_dir . '/pepper.typo';
    $srv->write_conf(extra => [@$base, "key_pepper_file $typo"]);
    my ($exit, $out, $err) = run_cmd(alyd_bin(), '-t', '-c', $srv->conf);
    is($exit, 1, 'alyd -t refuses a key_pepper_file that does not exist');
    like($err, qr/cannot open key_pepper_file \Q$typo\E/, '... naming it') or diag($err);

    ok($srv->signal('HUP'), 'HUP with that configuration');
    my $msg = $srv->wait_log(qr/reload failed, keeping the running configuration: [^\n]*/);
    like($msg // '', qr/cannot open key_pepper_file \Q$typo\E/, 'the reload is refused before a worker starts, naming the file')
      or diag($srv->error_log_text);
    sleep 0.3;    # ordering only: time for a worker that should not exist to start and die
    ok(same_set([$srv->worker_pids], \@old), 'the old workers keep running, and no new one was started');
    unlike($srv->error_log_text, qr/\] alyd\[\d+\] worker \d+: [^\n]*key_pepper_file/, 'no worker tried to start with it');
    my ($st) = raw_http($srv->port, 'GET', '/healthz');
    is($st, 200, '/healthz still answers');
}

# --- a pepper that never answers (a FIFO without a writer): the check gives up after 10 s --
{
    my $fifo = $srv->data_dir . '/pepper.fifo';
    POSIX::mkfifo($fifo, 0600) or die "mkfifo: $!";
    $srv->write_conf(extra => [@$base, "key_pepper_file $fifo"]);
    my $t0 = time;
    ok($srv->signal('HUP'), 'HUP with a pepper that blocks whoever opens it');
    my $msg = $srv->wait_log(qr/reload failed, keeping the running configuration: [^\n]*took over 10000 ms[^\n]*/, 20);
    ok($msg, sprintf('the reload gives up on the check after its bound (%.1f s)', time - $t0)) or diag($srv->error_log_text);
    ok(same_set([$srv->worker_pids], \@old), 'the old workers keep running');
    my ($st) = raw_http($srv->port, 'GET', '/healthz');
    is($st, 200, 'and the master serves on: /healthz answers');
    unlink $fifo;
}

# --- a new generation that fails at start-up ------------------------------------
# The pepper is a FIFO that gives the check its two reads (the API keys' and
# the cursor key's) and then a short one: the file changed between the check
# and the new worker's start.  The new configuration also listens on a new port.
{
    my $fifo = $srv->dir . '/pepper.fifo';
    POSIX::mkfifo($fifo, 0600) or die "mkfifo: $!";
    my $pepper = slurp($srv->data_dir . '/pepper');
    my $writer = fork // die "fork: $!";
    if ($writer == 0) {
        # One end held open for reading and writing (Linux): no reader ever meets EOF between two chunks, and a
        # chunk waits in the pipe for the next reader's one read().  The next chunk goes in once this one is read.
        sysopen(my $f, $fifo, POSIX::O_RDWR()) or POSIX::_exit(1);
        for my $chunk ($pepper, $pepper, 'short') {
            syswrite($f, $chunk);
            my $left = pack('i', 1);
            for (1 .. 2000) { ioctl($f, 0x541B, $left) or last; last if unpack('i', $left) == 0; sleep 0.01 }
        }
        sleep 2;    # the worker has read 'short' (and died); then the pipe may go
        POSIX::_exit(0);
    }
    my $p1 = free_port();
    $srv->write_conf(extra => [@$base, "key_pepper_file $fifo", "listen 127.0.0.1:$p1"]);
    my $before = () = ($srv->error_log_text =~ /reload failed/g);
    ok($srv->signal('HUP'), 'HUP with a pepper that the new workers will find short');
    my $msg;
    poll_until(10, sub { my @m = ($srv->error_log_text =~ /(reload failed[^\n]*)/g); $msg = $m[$before]; defined $msg });
    like($msg // '', qr/reload failed, keeping the running configuration: new worker \d \(pid \d+\) exited with status 1 before it served/,
        'error log: the reload failed because a new worker died before it served') or diag($srv->error_log_text);
    like($srv->error_log_text, qr/worker \d: key_pepper_file \Q$fifo\E must hold 32 to 256 bytes/, '... and the worker said why');
    ok(poll_until(5, sub { same_set([$srv->worker_pids], \@old) }), 'the new workers are gone; the old ones are still running')
      or diag("old: @old; now: @{[ $srv->worker_pids ]}");
    my ($st, $body) = raw_http($srv->port, 'GET', '/healthz');
    ok($st == 200 && $body =~ /"pid":(\d+)/ && (grep { $_ == $1 } @old), 'and the old workers serve /healthz');
    # The master logs the failed reload before it closes the listeners it opened for it.
    ok(poll_until(2, sub { refused($p1) }), "the new listener 127.0.0.1:$p1 is closed again");
    kill 'KILL', $writer;
    waitpid($writer, 0);
}

# --- a listen address that is taken -----------------------------------------------
{
    my $blocker = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 1) or die "bind: $!";
    my ($p1, $p2) = (free_port(), $blocker->sockport);
    $srv->write_conf(extra => [@$base, "listen 127.0.0.1:$p1", "listen 127.0.0.1:$p2"]);
    my $before = () = ($srv->error_log_text =~ /reload failed/g);
    ok($srv->signal('HUP'), "HUP listening on a free port $p1 and a taken one $p2");
    ok(poll_until(5, sub { my $n = () = ($srv->error_log_text =~ /reload failed[^\n]*Address already in use/g); $n > 0 }),
        'error log: reload failed, address in use');
    ok(poll_until(2, sub { refused($p1) }), "127.0.0.1:$p1, bound before the failure, is closed again");
    ok(same_set([$srv->worker_pids], \@old), 'the old workers keep running');
    close $blocker;
}

# --- a good reload: the old workers drain only once the new ones serve ------------------
{
    $srv->write_conf(extra => $base);
    ok($srv->signal('HUP'), 'HUP with a good configuration');
    ok($srv->wait_log(qr/reloaded: generation \d+ with 2 worker\(s\)/, 10), 'error log: reloaded');
    ok(poll_until(10, sub { !(grep { proc_alive($_) } @old) }), 'the old workers exit');
    my @new = $srv->worker_pids;
    my $text = $srv->error_log_text;
    my @serving = map { log_lines_of($text, $_, qr/ serving /) } @new;
    my @draining = map { log_lines_of($text, $_, qr/ draining /) } @old;
    is(scalar @serving, 2, 'both new workers logged "serving"');
    is(scalar @draining, 2, 'both old workers logged "draining"');
    my ($last_serving) = sort { $b <=> $a } @serving;
    my ($first_draining) = sort { $a <=> $b } @draining;
    ok(@serving && @draining && $last_serving < $first_draining, 'every new worker served before any old worker began to drain')
      or diag($text);
    @old = @new;
}

# --- a listen line a reload removes: its port refuses connections after it ---------------
{
    my $p3 = free_port();
    my $reloads = sub { my $n = () = ($srv->error_log_text =~ /reloaded: generation \d+/g); $n };
    my $n = $reloads->();
    $srv->write_conf(extra => [@$base, "listen 127.0.0.1:$p3"]);
    ok($srv->signal('HUP'), "HUP adding listen 127.0.0.1:$p3");
    ok(poll_until(10, sub { $reloads->() > $n }), 'reloaded');
    ok(!refused($p3), "127.0.0.1:$p3 accepts");
    $n = $reloads->();
    $srv->write_conf(extra => $base);
    ok($srv->signal('HUP'), "HUP removing it");
    ok(poll_until(10, sub { $reloads->() > $n }), 'reloaded again');
    ok(poll_until(10, sub { refused($p3) }), "127.0.0.1:$p3 refuses connections: no worker of the new generation holds it");
    ok(poll_until(10, sub { my @w = $srv->worker_pids; @w == 2 }), 'the previous generation has drained');
    @old = $srv->worker_pids;
}

# --- a pid_file a reload adds, moves, cannot write and removes --------------------------
{
    my ($pf1, $pf2, $bad) = map { $srv->dir . "/$_" } 'one.pid', 'two.pid', 'no-such-dir/three.pid';
    my $master = $srv->master_pid;
    my $pid_in = sub { my $t = slurp($_[0]); defined $t && $t =~ /^(\d+)\n\z/ ? $1 : undef };
    my $reloads = sub { my $n = () = ($srv->error_log_text =~ /reloaded: generation \d+/g); $n };
    my $n = $reloads->();
    $srv->write_conf(extra => [@$base, "pid_file $pf1"]);
    ok($srv->signal('HUP'), 'HUP adding a pid_file');
    ok(poll_until(10, sub { $reloads->() > $n }), 'reloaded');
    is($pid_in->($pf1), $master, 'the new pid_file holds the master pid');
    $n = $reloads->();
    $srv->write_conf(extra => [@$base, "pid_file $pf2"]);
    ok($srv->signal('HUP'), 'HUP moving it');
    ok(poll_until(10, sub { $reloads->() > $n }), 'reloaded');
    is($pid_in->($pf2), $master, 'the pid_file at its new path holds the master pid');
    ok(!-e $pf1, 'the old one is removed');
    $n = $reloads->();
    (my $alias = $pf2) =~ s{/([^/]+)\z}{//$1};
    $srv->write_conf(extra => [@$base, "pid_file $alias"]);
    ok($srv->signal('HUP'), "HUP naming the same file another way ($alias)");
    ok(poll_until(10, sub { $reloads->() > $n }), 'reloaded');
    is($pid_in->($pf2), $master, 'the pid_file is still there: another name for it is no move');
    ok(poll_until(10, sub { my @w = $srv->worker_pids; @w == 2 }), 'the previous generation has drained');
    my @before = $srv->worker_pids;
    $srv->write_conf(extra => [@$base, "pid_file $bad"]);
    ok($srv->signal('HUP'), 'HUP with a pid_file that cannot be written');
    like($srv->wait_log(qr/reload failed, keeping the running configuration: [^\n]*three\.pid[^\n]*/) // '',
        qr/cannot write pid_file \Q$bad\E/, 'the reload is refused, naming the file');
    is($pid_in->($pf2), $master, 'the running pid_file is kept');
    ok(same_set([$srv->worker_pids], \@before), 'the workers are the same');
    $n = $reloads->();
    $srv->write_conf(extra => $base);
    ok($srv->signal('HUP'), 'HUP without a pid_file (alyd -f: none)');
    ok(poll_until(10, sub { $reloads->() > $n }), 'reloaded');
    ok(!-e $pf2, 'the pid_file is removed');
    ok(poll_until(10, sub { my @w = $srv->worker_pids; @w == 2 }), 'the previous generation has drained');
    @old = $srv->worker_pids;
}

# --- old workers are killed after shutdown_timeout ------------------------------------
{
    my ($stuck) = @old;
    ok(kill('STOP', $stuck), "SIGSTOP to worker $stuck");
    my $t0 = time;
    ok($srv->signal('HUP'), 'HUP (shutdown_timeout 1s)');
    my $gone = poll_until(8, sub { !proc_alive($stuck) });
    ok($gone, sprintf('the stopped old worker is gone after shutdown_timeout (%.1fs)', time - $t0));
    like($srv->error_log_text, qr/worker \d \(pid $stuck\) of generation \d+ is still running past shutdown_timeout; killing it/,
        'error log: the master says it killed it');
    is($srv->wait_ready(2), undef, 'two new workers serve');
    @old = $srv->worker_pids;
}
ok($srv->stop, 'stops on TERM');

# --- TERM during a QUIT drain ----------------------------------------------------------
{
    my $s2 = Alyd->start(workers => 1, extra => ['shutdown_timeout 60s', 'header_timeout 5m']);
    my $port = $s2->port;
    my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp') or die "connect: $!";
    syswrite($sock, "POST /api/mcp HTTP/1.1\r\nHost: 127.0.0.1:$port\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"jsonrpc\"");
    ok(poll_until(5, sub { my (undef, undef, $m) = curl($s2->metrics_url('/metrics')); (metric_value($m, 'alyd_connections') // 0) >= 2 }),
        'a slow upload is open');
    ok($s2->signal('QUIT'), 'QUIT (shutdown_timeout 60s)');
    ok($s2->wait_log(qr/draining 1 connection/), 'the worker drains, waiting for the upload');
    my $t0 = time;
    ok($s2->signal('TERM'), 'TERM during the drain');
    my $elapsed = $s2->wait_exit(3);
    ok(defined $elapsed, sprintf('the master exits at once (%s)', defined $elapsed ? sprintf('%.2fs', $elapsed) : 'still running'));
    like($s2->error_log_text, qr/received TERM while draining: stopping now/, 'error log: TERM while draining');
    close $sock;
    $s2->kill_all;
}

# --- alyd -t refuses what alyd refuses to start ----------------------------------------
SKIP: {
    skip('not root: the implicit-root refusal applies to a root master', 2) if $> != 0;
    my $dir = File::Temp->newdir;
    spew("$dir/a.conf", "listen 127.0.0.1:1\ndata_dir $dir/data\n");
    my ($exit, $out, $err) = run_cmd(alyd_bin(), '-t', '-c', "$dir/a.conf");
    is($exit, 1, 'as root, alyd -t refuses a configuration without "user"');
    like($err, qr/"user" is not set/, '... with the message alyd gives at start') or diag($err);
}

# --- USR1 after a rotation, with a worker user -----------------------------------------
SKIP: {
    skip('needs root (the workers run as "user nobody")', 5) if $> != 0;
    my ($nuid, $ngid) = (getpwnam('nobody'))[2, 3];
    skip('no user nobody', 5) unless defined $nuid;
    my $s3 = Alyd->start(workers => 1, extra => ['user nobody', 'group ' . (getgrgid($ngid))[0]], init => 0, wait => 0);
    sleep 0.3;    # let it exec before it is stopped
    $s3->stop;
    chown($nuid, $ngid, $s3->dir) or die "chown: $!";
    chmod(0755, $s3->dir);
    my ($exit, undef, $err) = run_cmd(alyctl_bin(), '-c', $s3->conf, 'init');
    die "alyctl init: $err" if $exit;
    $s3->spawn;
    is($s3->wait_ready, undef, 'alyd serves with user nobody');
    my $al = $s3->access_log;
    ok(rename($al, "$al.1"), 'access.log renamed away');
    ok($s3->signal('USR1'), 'USR1');
    ok(poll_until(5, sub { -f $al }), 'a new access.log is created');
    is((stat $al)[4], $nuid, '... owned by the worker user');
    my $k = 0;
    ok(poll_until(5, sub { raw_http($s3->port, 'GET', '/healthz?rot=' . ++$k); ($s3->access_log_text // '') =~ /rot=\d/ }),
        'the worker writes its lines to the new access.log') or diag($s3->error_log_text);
    unlike($s3->error_log_text, qr/cannot open log file/, 'no worker failed to reopen its logs');
    $s3->stop;
}

done_testing();
