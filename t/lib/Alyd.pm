# Alyd.pm -- test helpers: start the real alyd on free loopback ports with a
# temporary data directory, talk to it with curl or raw sockets, and make sure
# nothing it started outlives the test.
#
#   my $srv = Alyd->start(workers => 2, tls => 1);
#   my ($status, $headers, $body) = curl("http://127.0.0.1:" . $srv->port . "/healthz");
#   $srv->stop;
#
# Every wait has a deadline.  alyd runs in its own process group, so a test
# that dies half-way (or hits the watchdog) kills master and workers at once.
package Alyd;

use strict;
use warnings;

use Carp qw(croak);
use Cwd qw(abs_path);
use Exporter qw(import);
use File::Temp qw(tempdir);
use IO::Select;
use IO::Socket::INET;
use JSON::PP ();
use POSIX qw(:sys_wait_h);
use Scalar::Util qw(weaken);
use Time::HiRes qw(time sleep);

our @EXPORT = qw(curl header_value free_port slurp spew poll_until raw_http json_decode
  alyd_bin alyctl_bin srcdir run_cmd proc_alive children_of metric_value watchdog
  start_prober finish_prober prober_results);

# Deadlines scale for slow builds (ASan): ALY_TIME_SCALE=2 doubles them.
our $SCALE = $ENV{ALY_TIME_SCALE} && $ENV{ALY_TIME_SCALE} > 0 ? $ENV{ALY_TIME_SCALE} : 1;

my %live;    # "$self" => weak ref, for END
my $openssl_ok;

sub alyd_bin   { _bin('ALYD',   'alyd') }
sub alyctl_bin { _bin('ALYCTL', 'alyctl') }

sub _bin {
    my ($var, $name) = @_;
    my $p = $ENV{$var};
    croak "set $var to the absolute path of $name" unless defined $p && length $p;
    croak "$var=$p is not executable" unless -x $p;
    return $p;
}

sub srcdir {
    my $d = $ENV{ALY_SRCDIR};
    return $d if defined $d && -d $d;
    return undef;
}

# A whole-file watchdog: a test that hangs dies (running END, which kills the servers).
sub watchdog {
    my ($secs) = @_;
    $SIG{ALRM} = sub { die "watchdog: test file still running after ${secs}s\n" };
    alarm($secs * $SCALE);
}

$SIG{INT} = $SIG{TERM} = sub { die "interrupted by signal $_[0]\n" };

# Become a child subreaper (Linux), so workers orphaned by a killed master are
# reparented to the test and reaped here rather than left as zombies.
eval {
    require 'syscall.ph';
    syscall(&SYS_prctl, 36, 1, 0, 0, 0);    # PR_SET_CHILD_SUBREAPER
};

sub json_decode {
    my ($text) = @_;
    my $v = eval { JSON::PP->new->decode($text) };
    return $v;
}

sub slurp {
    my ($path) = @_;
    open(my $fh, '<', $path) or return undef;
    local $/;
    my $t = <$fh>;
    close $fh;
    return $t;
}

sub spew {
    my ($path, $text, $mode) = @_;
    open(my $fh, '>', $path) or croak "cannot write $path: $!";
    print $fh $text;
    close $fh or croak "cannot write $path: $!";
    chmod($mode, $path) if defined $mode;
}

# Calls $cb every $step seconds until it returns true or $timeout seconds pass.
# Returns the callback's last value (false on timeout).
sub poll_until {
    my ($timeout, $cb, $step) = @_;
    $step //= 0.05;
    my $deadline = time + $timeout * $SCALE;
    while (1) {
        my $v = $cb->();
        return $v if $v;
        return $v if time >= $deadline;
        sleep $step;
    }
}

# A loopback TCP port nobody listens on right now.
sub free_port {
    my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Proto => 'tcp', Listen => 1, ReuseAddr => 1)
      or croak "cannot bind a loopback port: $!";
    my $port = $s->sockport;
    close $s;
    return $port;
}

# Runs a command (list form, no shell); returns (exit status, stdout, stderr).
sub run_cmd {
    my (@cmd) = @_;
    my $tmp = File::Temp->newdir;
    my $dir = $tmp->dirname;
    my $pid = fork // croak "fork: $!";
    if ($pid == 0) {
        open(STDIN,  '<', '/dev/null');
        open(STDOUT, '>', "$dir/out");
        open(STDERR, '>', "$dir/err");
        exec(@cmd) or POSIX::_exit(127);
    }
    my $deadline = time + 30 * $SCALE;
    my $rc;
    while (1) {
        my $r = waitpid($pid, WNOHANG);
        if ($r == $pid) { $rc = $?; last }
        if (time > $deadline) {
            kill 'KILL', $pid;
            waitpid($pid, 0);
            $rc = -1;
            last;
        }
        sleep 0.01;
    }
    my $exit = $rc == -1 ? -1 : ($rc & 127) ? 128 + ($rc & 127) : $rc >> 8;
    return ($exit, slurp("$dir/out") // '', slurp("$dir/err") // '');
}

# curl(@args): runs curl -s with the given arguments and returns
# (status, headers, body, http_version).  status is the HTTP code as a
# number (0 when no response came).  A --max-time is added unless given.
sub curl {
    my (@args) = @_;
    my $tmp = File::Temp->newdir;
    my $dir = $tmp->dirname;
    my @cmd = ('curl', '-s', '-o', "$dir/body", '-D', "$dir/headers", '-w', '%{http_code} %{http_version}');
    push @cmd, '--max-time', 10 * $SCALE unless grep { $_ eq '--max-time' || $_ eq '-m' } @args;
    my ($exit, $out, $err) = run_cmd(@cmd, @args);
    my ($code, $ver) = split ' ', $out;
    return ($code // 0) + 0, slurp("$dir/headers") // '', slurp("$dir/body") // '', $ver // '';
}

# The value of header $name in a raw header block (last response in it), or undef.
sub header_value {
    my ($headers, $name) = @_;
    my @blocks = split /\r?\n\r?\n/, $headers;
    my $last = @blocks ? $blocks[-1] : '';
    for my $line (split /\r?\n/, $last) {
        return $1 if $line =~ /^\Q$name\E:\s*(.*?)\s*$/i;
    }
    return undef;
}

# Value of a Prometheus sample (name with labels exactly as printed), or undef.
sub metric_value {
    my ($text, $name) = @_;
    for my $line (split /\n/, $text // '') {
        next if $line =~ /^#/;
        return $1 + 0 if $line =~ /^\Q$name\E\s+(\S+)$/;
    }
    return undef;
}

# One HTTP/1.1 request on a fresh connection with "Connection: close".
# Returns (status, body, error); status 0 and an error string on failure.
sub raw_http {
    my ($port, $method, $path, %o) = @_;
    my $timeout = ($o{timeout} // 5) * $SCALE;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp', Timeout => $timeout)
      or return (0, '', "connect: $!");
    my $req = "$method $path HTTP/1.1\r\nHost: 127.0.0.1:$port\r\nConnection: close\r\n";
    my $body = $o{body} // '';
    $req .= "Content-Length: " . length($body) . "\r\n" if length $body || $method eq 'POST';
    $req .= "\r\n$body";
    $s->syswrite($req) or return (0, '', "write: $!");
    my $resp = '';
    my $sel = IO::Select->new($s);
    my $deadline = time + $timeout;
    while (1) {
        my $left = $deadline - time;
        return (0, $resp, "timeout after ${timeout}s") if $left <= 0;
        next unless $sel->can_read($left);
        my $n = $s->sysread(my $buf, 65536);
        return (0, $resp, "read: $!") unless defined $n;
        last if $n == 0;
        $resp .= $buf;
    }
    close $s;
    return (0, $resp, "connection closed with no status line") unless $resp =~ m{^HTTP/1\.[01] (\d{3})};
    my $status = $1;
    my ($h, $b) = split /\r\n\r\n/, $resp, 2;
    return ($status + 0, $b // '', undef);
}

# POSTs body to /api/mcp over a raw HTTP/1.1 connection with the extra header
# lines given ("Name: value") and returns a reader of the answer as it comes:
# reader(qr/.../[, SECONDS]) waits up to SECONDS (10; scaled) for the text read
# so far to match and returns that text, or undef; reader() returns the text.
sub post_stream {
    my ($port, $body, @headers) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp') or die "connect: $!";
    $s->syswrite("POST /api/mcp HTTP/1.1\r\nHost: 127.0.0.1:$port\r\nContent-Type: application/json\r\n"
        . "Accept: application/json, text/event-stream\r\n" . join('', map { "$_\r\n" } @headers)
        . "Content-Length: " . length($body) . "\r\nConnection: close\r\n\r\n$body");
    my $got = '';
    my $sel = IO::Select->new($s);
    return sub {
        my ($re, $secs) = @_;
        return $got unless defined $re;
        my $deadline = time + ($secs // 10) * $SCALE;
        while ($got !~ $re && time < $deadline) {
            next unless $sel->can_read(1);
            my $n = $s->sysread(my $chunk, 65536);
            last if defined $n && $n == 0;
            $got .= $chunk if $n;
        }
        return $got =~ $re ? $got : undef;
    };
}

# A client in a child process: GET /healthz on a fresh connection every ~20 ms
# for $secs seconds; one line per request, "time status pid error", into $file.
sub start_prober {
    my ($port, $file, $secs) = @_;
    my $pid = fork // croak "fork: $!";
    if ($pid == 0) {
        %live = ();    # the parent owns the servers
        $SIG{ALRM} = 'DEFAULT';
        alarm(int($secs * $SCALE) + 20);
        open(my $out, '>', $file) or POSIX::_exit(2);
        $out->autoflush(1);
        my $end = time + $secs;
        while (time < $end) {
            my $t = time;
            my ($st, $body, $err) = raw_http($port, 'GET', '/healthz', timeout => 3);
            my ($wpid) = $body =~ /"pid":(\d+)/;
            $err //= '-';
            $err =~ s/\s+/_/g;
            printf $out "%.3f %d %s %s\n", $t, $st, $wpid // '-', $err;
            sleep 0.02;
        }
        close $out;
        POSIX::_exit(0);
    }
    return $pid;
}

# Waits for a prober to finish (kills it after $timeout s); true if it finished.
sub finish_prober {
    my ($pid, $timeout) = @_;
    my $done = poll_until($timeout, sub { waitpid($pid, WNOHANG) == $pid }, 0.05);
    if (!$done) { kill 'KILL', $pid; waitpid($pid, 0) }
    return $done;
}

# A prober's results: a list of [time, status, pid, error].
sub prober_results {
    my ($file) = @_;
    return map { [split ' ', $_, 4] } split /\n/, (slurp($file) // '');
}

sub proc_alive {
    my ($pid) = @_;
    return 0 unless $pid;
    my $stat = slurp("/proc/$pid/stat") // return 0;
    my ($state) = $stat =~ /\)\s+(\S)/;
    return defined $state && $state ne 'Z' && $state ne 'X';
}

# Every process, from /proc/*/stat: a list of [pid, state, ppid, pgid].
sub processes {
    my @procs;
    opendir(my $dh, '/proc') or return ();
    for my $d (readdir $dh) {
        next unless $d =~ /^\d+$/;
        my $stat = slurp("/proc/$d/stat") // next;
        # pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses.
        my $rp = rindex($stat, ')');
        next if $rp < 0;
        my @f = split ' ', substr($stat, $rp + 2);
        push @procs, [$d + 0, @f[0 .. 2]] if @f >= 3;
    }
    closedir $dh;
    return @procs;
}

sub _live { $_[0][1] ne 'Z' && $_[0][1] ne 'X' }

# Live (non-zombie) children of $ppid.
sub children_of {
    my ($ppid) = @_;
    return sort { $a <=> $b } map { $_->[0] } grep { $_->[2] == $ppid && _live($_) } processes();
}

sub _make_cert {
    my ($dir) = @_;
    my ($exit, $out, $err) = run_cmd(
        'openssl', 'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1',
        '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
        '-keyout', "$dir/key.pem", '-out', "$dir/cert.pem"
    );
    croak "openssl req failed ($exit): $err" if $exit != 0;
    return ("$dir/cert.pem", "$dir/key.pem");
}

# Writes a JWKS file holding the public half of the P-256 key $key (PEM);
# returns its path.
# The LD_PRELOAD that puts Debian's libfaketime into bin (default alyd): a
# sanitized build needs its runtimes first.  undef when libfaketime is not installed.
sub faketime_preload {
    my ($bin) = @_;
    my ($lib) = glob('/usr/lib/*/faketime/libfaketime.so.1');    # whatever the architecture
    return undef unless defined $lib && -e $lib;
    my (undef, $ldd) = run_cmd('ldd', $bin // alyd_bin());
    my @san = $ldd =~ /^\s*lib(?:a|ub)san\.so\S* => (\S+)/mg;
    return join(' ', @san, $lib);
}

sub make_jwks {
    my ($class, $dir, $key, $kid) = @_;
    my ($exit, $der, $err) = run_cmd('openssl', 'pkey', '-in', $key, '-pubout', '-outform', 'DER');
    croak "openssl pkey failed ($exit): $err" if $exit != 0 || length($der) < 65;
    my $point = substr($der, -65);    # 0x04 || x || y
    croak 'not an uncompressed P-256 point' unless substr($point, 0, 1) eq "\x04";
    require MIME::Base64;
    my $b64u = sub { my $t = MIME::Base64::encode_base64($_[0], ''); $t =~ tr{+/}{-_}; $t =~ s/=+$//; $t };
    my $jwks = JSON::PP->new->canonical->encode({ keys => [{ kty => 'EC', crv => 'P-256', kid => $kid // 'test-key',
        use => 'sig', alg => 'ES256', x => $b64u->(substr($point, 1, 32)), y => $b64u->(substr($point, 33, 32)) }] });
    spew("$dir/jwks.json", $jwks);
    return "$dir/jwks.json";
}

# Makes a throw-away self-signed certificate in $dir; returns (cert, key).
sub make_cert { my ($class, $dir) = @_; return _make_cert($dir) }

# Alyd->start(%opts)
#   workers   => N        worker count (default 2)
#   workers_via => 'flag' (default: alyd -w N) or 'config' ("workers N" in the file)
#   tls       => 1        add a "listen 127.0.0.1:PORT tls" listener and a certificate
#   metrics   => 0        no metrics_listen (default on)
#   pid_file  => 1        add pid_file DIR/alyd.pid
#   extra     => [lines]  more directives, appended to the file
#   init      => 0        skip "alyctl init"
#   wait      => 0        do not wait for /healthz and the workers
#   bin       => PATH     run this daemon binary (e.g. $ENV{ALYD_TEST}, the fixture build)
#   env       => {K=>V}   extra environment for the daemon
#   no_user   => 1        no "user root" line even when the tests run as root
sub start {
    my ($class, %o) = @_;
    my $self = bless { opts => \%o, owner => $$ }, $class;
    $self->{dir} = tempdir('alyd-test-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{ALY_KEEP_TMP});
    $self->{dir} = abs_path($self->{dir});
    $self->{conf} = "$self->{dir}/alyd.conf";
    $self->{workers} = $o{workers} // 2;
    ($self->{cert}, $self->{key}) = _make_cert($self->{dir}) if $o{tls};
    $live{"$self"} = $self;
    weaken($live{"$self"});

    for my $attempt (1 .. 3) {
        $self->{port}         = free_port();
        $self->{tls_port}     = $o{tls} ? free_port() : undef;
        $self->{metrics_port} = ($o{metrics} // 1) ? free_port() : undef;
        $self->write_conf;
        if ($attempt == 1 && ($o{init} // 1)) {
            my ($exit, $out, $err) = run_cmd(alyctl_bin(), '-c', $self->{conf}, 'init');
            croak "alyctl init failed ($exit): $err" if $exit != 0;
        }
        $self->spawn;
        return $self if defined $o{wait} && !$o{wait};
        my $err = $self->wait_ready;
        return $self unless defined $err;
        my $text = ($self->error_log_text // '') . ($self->stderr_text // '');
        $self->kill_all;
        # Another process took one of our ports between probing and binding: try again.
        next if $text =~ /Address already in use/ && $attempt < 3;
        croak "alyd did not start: $err\n--- error log and stderr:\n$text";
    }
}

sub dir          { $_[0]{dir} }
sub conf         { $_[0]{conf} }
sub port         { $_[0]{port} }
sub tls_port     { $_[0]{tls_port} }
sub metrics_port { $_[0]{metrics_port} }
sub master_pid   { $_[0]{pid} }
sub data_dir     { "$_[0]{dir}/data" }
sub error_log    { "$_[0]{dir}/error.log" }
sub access_log   { "$_[0]{dir}/access.log" }
sub pid_file     { "$_[0]{dir}/alyd.pid" }
sub cert         { $_[0]{cert} }
sub url          { "http://127.0.0.1:$_[0]{port}" . ($_[1] // '') }
sub tls_url      { "https://127.0.0.1:$_[0]{tls_port}" . ($_[1] // '') }
sub metrics_url  { "http://127.0.0.1:$_[0]{metrics_port}" . ($_[1] // '') }

# The configuration text; %over replaces options (workers, extra) for this rendering.
sub config_text {
    my ($self, %over) = @_;
    my %o = (%{ $self->{opts} }, %over);
    my $d = $self->{dir};
    my @l = ("# written by t/lib/Alyd.pm", "listen 127.0.0.1:$self->{port}");
    push @l, "listen 127.0.0.1:$self->{tls_port} tls", "tls_certificate $self->{cert}", "tls_key $self->{key}"
      if $self->{tls_port};
    push @l, "metrics_listen 127.0.0.1:$self->{metrics_port}" if $self->{metrics_port};
    push @l, "data_dir $d/data", "error_log $d/error.log", "access_log $d/access.log";
    push @l, "pid_file $d/alyd.pid" if $o{pid_file};
    push @l, "workers " . ($o{workers} // 2) if ($o{workers_via} // 'flag') eq 'config';
    # alyd refuses to run its workers as root by omission; the tests run as root knowingly unless they say otherwise.
    push @l, "user root" if $> == 0 && !(grep { /^\s*user\s/ } @{ $o{extra} // [] }) && !$o{no_user};
    push @l, @{ $o{extra} // [] };
    return join("\n", @l) . "\n";
}

sub write_conf {
    my ($self, %over) = @_;
    spew($self->{conf}, $self->config_text(%over));
}

sub spawn {
    my ($self) = @_;
    my @cmd = ($self->{opts}{bin} // alyd_bin(), '-f', '-c', $self->{conf});
    push @cmd, '-w', $self->{workers} unless ($self->{opts}{workers_via} // 'flag') eq 'config';
    my $pid = fork // croak "fork: $!";
    if ($pid == 0) {
        setpgrp(0, 0);
        my $env = $self->{opts}{env} // {};
        $ENV{$_} = $env->{$_} for keys %$env;
        open(STDIN,  '<',  '/dev/null');
        open(STDOUT, '>>', "$self->{dir}/stdout.txt");
        open(STDERR, '>>', "$self->{dir}/stderr.txt");
        exec(@cmd) or POSIX::_exit(127);
    }
    setpgrp($pid, $pid);    # also here, so the group exists before we might signal it
    $self->{pid} = $pid;
    $self->{pgid} = $pid;
    $self->{exit} = undef;
    return $pid;
}

# Has the master exited?  Reaps it; the wait status is in ->exit_status.
sub exited {
    my ($self) = @_;
    return 1 if defined $self->{exit};
    return 1 unless $self->{pid};
    my $r = waitpid($self->{pid}, WNOHANG);
    if ($r == $self->{pid} || $r == -1) {
        $self->{exit} = $r == -1 ? -1 : $?;
        return 1;
    }
    return 0;
}

sub exit_status { $_[0]{exit} }

# Waits until /healthz answers 200 and the expected number of workers say
# they are serving.  Returns undef when ready, else the reason.
sub wait_ready {
    my ($self, $n) = @_;
    $n //= $self->{workers};
    my $why = 'timeout';
    my $ok = poll_until(
        10,
        sub {
            if ($self->exited) { $why = "alyd exited with wait status $self->{exit}"; return 1 }
            my @w = $self->serving_workers;
            return 0 unless @w == $n;
            my ($st) = raw_http($self->{port}, 'GET', '/healthz', timeout => 2);
            return $st == 200;
        }
    );
    return undef if $ok && !defined $self->{exit};
    return defined $self->{exit} ? $why : "no 200 from /healthz with $n serving worker(s) within 10 s";
}

# Worker pids: the master's live children.
sub worker_pids {
    my ($self) = @_;
    return () if !$self->{pid} || $self->exited;
    return children_of($self->{pid});
}

# Children of the master that have logged "serving", i.e. finished starting.
sub serving_workers {
    my ($self) = @_;
    my @kids = $self->worker_pids;
    my $log = $self->error_log_text // '';
    return grep { $log =~ /alyd\[$_\][^\n]*\bserving\b/ } @kids;
}

# alyctl against this server's configuration: its standard output, chomped;
# dies (with alyctl's standard error) when it fails.
sub ctl {
    my ($self, @args) = @_;
    my ($exit, $out, $err) = run_cmd(alyctl_bin(), '-c', $self->{conf}, @args);
    croak "alyctl @args: $err" if $exit;
    chomp $out;
    return $out;
}

sub error_log_text  { slurp($_[0]->error_log) }
sub access_log_text { slurp($_[0]->access_log) }
sub stderr_text     { slurp("$_[0]{dir}/stderr.txt") }

# Polls the error log for $re; returns the match (true) or false at the deadline.
sub wait_log {
    my ($self, $re, $timeout) = @_;
    my $hit;
    poll_until($timeout // 5, sub { my $t = $self->error_log_text // ''; ($hit) = $t =~ /($re)/; defined $hit });
    return $hit;
}

sub signal {
    my ($self, $sig) = @_;
    return kill($sig, $self->{pid});
}

# Waits up to $timeout seconds for the master to exit; returns the elapsed
# seconds, or undef if it is still running.
sub wait_exit {
    my ($self, $timeout) = @_;
    my $t0 = time;
    poll_until($timeout, sub { $self->exited }, 0.01);
    return $self->exited ? time - $t0 : undef;
}

# TERM and wait (default 10 s); kills the process group when that fails.
# Returns true when the master exited by itself.
sub stop {
    my ($self, $timeout) = @_;
    return 1 if !$self->{pid} || $self->exited && !$self->_group_alive;
    $self->signal('TERM') unless $self->exited;
    my $ok = defined $self->wait_exit($timeout // 10);
    $self->kill_all;
    return $ok;
}

# Is any live (non-zombie) process left in the server's process group?
sub _group_alive {
    my ($self) = @_;
    return 0 unless $self->{pgid};
    return scalar grep { $_->[3] == $self->{pgid} && _live($_) } processes();
}

# Stops everything the server started: TERM to a master still running (it
# reaps its workers), then SIGKILL to the whole process group, then reaps
# whatever was reparented to us.
sub kill_all {
    my ($self) = @_;
    return unless $self->{pgid} && $self->{owner} == $$;    # not from a forked helper
    if (!$self->exited) {
        kill('TERM', $self->{pid});
        poll_until(3, sub { $self->exited }, 0.01);
    }
    kill('KILL', -$self->{pgid}) if $self->_group_alive;
    poll_until(5, sub { $self->exited }, 0.01);
    poll_until(5, sub { $self->_reap_orphans; !$self->_group_alive }, 0.02);
    $self->_reap_orphans;
}

# Reaps zombies of our process group that were reparented to this process.
sub _reap_orphans {
    my ($self) = @_;
    waitpid($_->[0], WNOHANG) for grep { $_->[2] == $$ && $_->[3] == $self->{pgid} } processes();
}

sub DESTROY {
    my ($self) = @_;
    local ($?, $!, $@);
    $self->kill_all if $self->{pgid};
    delete $live{"$self"};
}

END {
    local $?;
    for my $s (values %live) {
        $s->kill_all if $s;
    }
}

1;
