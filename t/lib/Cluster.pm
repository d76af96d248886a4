# Cluster.pm -- test harness for cluster mode: a throw-away PostgreSQL 15 and
# redis-server 7 on free loopback ports in temporary directories, N alyd hosts
# sharing them (and one key_pepper_file, each host keeping its own data_dir as
# its local replica), a fork-free HTTP/MCP client and a multi-process load
# generator for "under load" checks.  Everything it starts is stopped when the
# test exits, whichever way it exits.
#
#   use Cluster;
#   Cluster::need_engines();                    # skip_all only if a binary is missing
#   my $c = Cluster->hosts(3, workers => 2);     # starts its own PostgreSQL + Redis
#   my $key = $c->host(0)->ctl('keys', 'create', ...);
#   my ($st, $r) = mcp_call($c->next, $key, 'sites.list', {});   # round robin
#   $c->pg->stop; $c->pg->start; $c->redis->restart;
#
# PostgreSQL refuses to run as root, so when the tests run as root (CI does)
# initdb and the postmaster run as an unprivileged user (ALY_PG_USER, default
# "nobody") that owns the temporary directory.  The engines are spawned directly
# (not through pg_ctl or --daemonize) in their own process groups, so stopping,
# killing and reaping them is as exact as it is for alyd.
package Cluster;

use strict;
use warnings;

use Carp qw(croak);
use Cwd qw(abs_path);
use Exporter qw(import);
use File::Path ();
use File::Spec;
use File::Temp qw(tempdir);
use IO::Select;
use IO::Socket::INET;
use JSON::PP ();
use POSIX qw(:sys_wait_h);
use Scalar::Util qw(weaken);
use Time::HiRes qw(time sleep);
use Alyd;

our @EXPORT = qw(start_postgres start_redis need_engines pg_bindir redis_bin http_request mcp_call mcp_request
  start_load finish_load race);

my %live;    # "$obj" => weak ref to every engine and cluster, for END
my $json = JSON::PP->new->canonical;

# ---- where the engines live -------------------------------------------------------------

sub pg_bindir {
    for my $d ($ENV{ALY_PG_BINDIR}, '/usr/lib/postgresql/15/bin') {
        return $d if defined $d && -x "$d/initdb" && -x "$d/postgres" && -x "$d/psql";
    }
    return undef;
}

sub redis_bin {
    for my $p ($ENV{ALY_REDIS_SERVER}, map { "$_/redis-server" } split /:/, $ENV{PATH} // '') {
        return $p if defined $p && -x $p;
    }
    return undef;
}

# The volatile_timeout line for a test's alyd: the default deadline (50ms) is for production builds on a quiet
# machine; a sanitized build on a loaded CI box misses it now and then, and a miss is (rightly) a 503, or a retry
# that may charge the request twice (src/volatile_redis.c), which an exact rate-limit count reads as a wrong limit.
# $ms (default 250) is scaled by ALY_TIME_SCALE.  Tests of the deadline set their own.
sub volatile_timeout_line {
    my ($ms) = @_;
    return 'volatile_timeout ' . int(($ms // 250) * $Alyd::SCALE) . 'ms';
}

# Skips the whole test file when an engine's binaries are not installed (the
# only acceptable reason: scripts/test installs them, so in CI these tests run).
sub need_engines {
    my (%o) = @_;
    my @missing;
    push @missing, 'PostgreSQL 15 (initdb, postgres, psql in /usr/lib/postgresql/15/bin or ALY_PG_BINDIR)'
      if ($o{pg} // 1) && !pg_bindir();
    push @missing, 'redis-server (on PATH or ALY_REDIS_SERVER)' if ($o{redis} // 1) && !redis_bin();
    return 1 unless @missing;
    require Test::More;
    Test::More::plan(skip_all => 'cluster engines not installed: ' . join('; ', @missing) . ' (scripts/install-deps --test installs them)');
}

# The uid/gid an engine runs as: ourselves, or an unprivileged user when we are root.
sub _engine_user {
    return ($>, (split ' ', $))[0], undef) if $> != 0;
    my $name = $ENV{ALY_PG_USER} // 'nobody';
    my @pw = getpwnam($name) or croak "no user $name to run PostgreSQL as (set ALY_PG_USER)";
    return ($pw[2], $pw[3], $name);
}

# A temporary directory the engine's user owns.  Under root, the parents must
# let that user through; when TMPDIR does not, /tmp does.
sub _engine_dir {
    my ($prefix, $uid, $gid) = @_;
    my $base = File::Spec->tmpdir;
    if ($> == 0 && $uid != 0) {
        my $p = abs_path($base) // '/tmp';
        my $ok = 1;
        while (length $p > 1) {
            my @st = stat($p) or do { $ok = 0; last };
            $ok = 0 unless $st[2] & 0001;
            $p =~ s{/[^/]*$}{};
        }
        $base = '/tmp' unless $ok;
    }
    my $dir = abs_path(tempdir("$prefix-XXXXXX", DIR => $base, CLEANUP => !$ENV{ALY_KEEP_TMP}));
    chown($uid, $gid, $dir) or croak "chown $dir: $!" if $> == 0;
    return $dir;
}

# Forks and execs @cmd as $uid/$gid in a new process group, stdout+stderr to $log.
sub _spawn_as {
    my ($uid, $gid, $log, @cmd) = @_;
    my $pid = fork // croak "fork: $!";
    if ($pid == 0) {
        setpgrp(0, 0);
        open(STDIN, '<', '/dev/null');
        open(STDOUT, '>>', $log) or POSIX::_exit(126);
        open(STDERR, '>&', \*STDOUT);
        if ($> == 0 && $uid != 0) {
            $ENV{HOME} = '/';
            POSIX::setgid($gid) or POSIX::_exit(125);
            $) = "$gid $gid";
            POSIX::setuid($uid) or POSIX::_exit(125);
        }
        $ENV{LC_ALL} = 'C';
        exec(@cmd) or POSIX::_exit(127);
    }
    setpgrp($pid, $pid);
    return $pid;
}

# Runs @cmd as $uid/$gid to completion (30 s deadline); returns (exit, output).
sub _run_as {
    my ($uid, $gid, $dir, @cmd) = @_;
    my $log = "$dir/.run-$$-" . int(rand(1e9));
    my $pid = _spawn_as($uid, $gid, $log, @cmd);
    my $done = poll_until(30, sub { waitpid($pid, WNOHANG) == $pid }, 0.02);
    if (!$done) { kill 'KILL', -$pid; waitpid($pid, 0); return (-1, slurp($log) // '') }
    my $rc = $?;
    my $out = slurp($log) // '';
    unlink $log;
    return (($rc & 127) ? 128 + ($rc & 127) : $rc >> 8, $out);
}

# A watcher for an engine: a small process that kills the engine (and, for
# PostgreSQL, its backends, which are session leaders of their own) once the
# test process is gone however it went -- SIGKILL, or SIGPIPE when its output
# pipe closed -- which leaves END no chance, and then removes its directory
# (unless ALY_KEEP_TMP).  It exits with the engine.
sub _guard {
    my ($pid, $dir) = @_;
    my $owner = $$;
    my $g = fork // croak "fork: $!";
    return if $g;
    open(STDIN, '<', '/dev/null');
    open(STDOUT, '>', '/dev/null');
    open(STDERR, '>', '/dev/null');
    $SIG{$_} = 'IGNORE' for qw(INT TERM PIPE HUP);
    $SIG{ALRM} = 'DEFAULT';
    alarm(0);
    while (kill(0, $pid)) {
        if (!kill(0, $owner) || getppid() != $owner) {
            kill('KILL', $pid, children_of($pid));
            kill('KILL', -$pid);
            if ($dir && !$ENV{ALY_KEEP_TMP}) {
                poll_until(5, sub { !kill(0, $pid) }, 0.05);    # reaped by whoever inherited it
                File::Path::remove_tree($dir);
            }
            last;
        }
        sleep 0.2;
    }
    POSIX::_exit(0);
}

sub _group_alive {
    my ($pgid) = @_;
    return 0 unless $pgid;
    return kill(0, -$pgid) ? 1 : 0;
}

# Kills a process group for good and reaps its leader (and anything of it reparented to us).
sub _kill_group {
    my ($pid, $sig) = @_;
    return unless $pid;
    CORE::kill($sig // 'KILL', -$pid);
    poll_until(10, sub { my $r = waitpid($pid, WNOHANG); $r == $pid || $r == -1 }, 0.01);
    poll_until(5, sub { 1 while waitpid(-$pid, WNOHANG) > 0; !_group_alive($pid) }, 0.02);
}

END {
    local $?;
    for my $o (grep { defined } values %live) {
        $o->_cleanup if $o->{owner} == $$;
    }
}

# ---- PostgreSQL -----------------------------------------------------------------------------

package Cluster::Pg;

use strict;
use warnings;
use Carp qw(croak);
use POSIX qw(:sys_wait_h);
use Scalar::Util qw(weaken);
use Time::HiRes qw(time sleep);
use Alyd;

# Cluster::start_postgres(%o): initdb in a temporary directory, then start it.
#   conf => [lines]   more postgresql.conf settings
#   db   => NAME      the database ->url names (created; default "alyd")
sub new {
    my ($class, %o) = @_;
    my $bin = Cluster::pg_bindir() or croak 'PostgreSQL binaries not found (see Cluster::need_engines)';
    my ($uid, $gid, $user) = Cluster::_engine_user();
    my $self = bless { bin => $bin, uid => $uid, gid => $gid, user => $user, owner => $$, db => $o{db} // 'alyd' }, $class;
    $self->{dir} = Cluster::_engine_dir('alyd-pg', $uid, $gid);
    $live{"$self"} = $self;
    weaken($live{"$self"});
    my ($exit, $out) = Cluster::_run_as($uid, $gid, $self->{dir}, "$bin/initdb", '-D', "$self->{dir}/data", '-U', 'postgres',
        '-A', 'trust', '-E', 'UTF8', '--locale=C', '--no-sync');
    croak "initdb failed ($exit):\n$out" if $exit != 0;
    $self->{port} = free_port();
    # Speed where it cannot change what a test sees: fsync off only matters if the
    # machine itself crashes.  synchronous_commit stays on: off would acknowledge
    # commits still in PostgreSQL's memory, which ->kill then loses.  Small buffers:
    # several test files may run a PostgreSQL each at the same time (make -j2).
    my @conf = (
        "port = $self->{port}", "listen_addresses = '127.0.0.1'", "unix_socket_directories = '$self->{dir}'",
        'fsync = off', 'full_page_writes = off', 'shared_buffers = 16MB',
        'max_connections = 60', 'dynamic_shared_memory_type = mmap', "log_line_prefix = '%m [%p] '",
        'log_min_messages = warning', @{ $o{conf} // [] }
    );
    open(my $fh, '>>', "$self->{dir}/data/postgresql.conf") or croak "postgresql.conf: $!";
    print $fh join("\n", '', '# written by t/lib/Cluster.pm', @conf), "\n";
    close $fh;
    $self->start;
    $self->psql("CREATE DATABASE \"$self->{db}\"", db => 'postgres');
    return $self;
}

sub dir     { $_[0]{dir} }
sub port    { $_[0]{port} }
sub pid     { $_[0]{pid} }
sub log     { "$_[0]{dir}/postgres.log" }
sub running { my $p = $_[0]{pid}; $p && waitpid($p, WNOHANG) == 0 }

# postgresql://postgres@127.0.0.1:PORT/DB (DB defaults to the harness's database).
sub url { my ($self, $db) = @_; return "postgresql://postgres\@127.0.0.1:$self->{port}/" . ($db // $self->{db}) }

# Starts the postmaster (after initdb, or again after stop/kill) and waits until it answers.
sub start {
    my ($self) = @_;
    croak 'PostgreSQL is already running' if $self->running;
    $self->{pid} = Cluster::_spawn_as($self->{uid}, $self->{gid}, $self->log, "$self->{bin}/postgres", '-D', "$self->{dir}/data");
    Cluster::_guard($self->{pid}, $self->{dir});
    my $ok = poll_until(30, sub { return 0 unless $self->running; my ($e) = $self->_psql_raw('postgres', 'SELECT 1'); $e == 0 }, 0.1);
    croak "PostgreSQL did not start:\n" . (slurp($self->log) // '') unless $ok && $self->running;
    return $self;
}

# Stops it: mode fast (default; SIGINT: aborts transactions, disconnects clients),
# smart (SIGTERM: waits for clients) or immediate (SIGQUIT: no shutdown checkpoint,
# crash recovery on the next start).
sub stop {
    my ($self, $mode) = @_;
    my $pid = $self->{pid} or return 1;
    my %sig = (smart => 'TERM', fast => 'INT', immediate => 'QUIT');
    my $sig = $sig{ $mode // 'fast' } or croak "unknown stop mode $mode";
    CORE::kill($sig, $pid);
    my $ok = poll_until(30, sub { my $r = waitpid($pid, WNOHANG); $r == $pid || $r == -1 }, 0.02);
    Cluster::_kill_group($pid);    # backends, should any outlive the postmaster
    $self->{pid} = undef;
    return $ok;
}

# SIGKILL to the postmaster and every backend at once: the machine "lost power".
# Backends are session leaders of their own (not in the postmaster's group), so
# they are named one by one.
sub kill {
    my ($self) = @_;
    my $pid = $self->{pid} or return;
    my @kids = children_of($pid);
    CORE::kill('KILL', $pid, @kids);
    Cluster::_kill_group($pid);
    Alyd::poll_until(5, sub { !grep { Alyd::proc_alive($_) } @kids }, 0.02);
    $self->{pid} = undef;
}

sub restart { my ($self, $mode) = @_; $self->stop($mode); return $self->start }

sub _psql_raw {
    my ($self, $db, $sql) = @_;
    my ($exit, $out, $err) = run_cmd("$self->{bin}/psql", '-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-h', $self->{dir},
        '-p', $self->{port}, '-U', 'postgres', '-d', $db, '-c', $sql);
    return ($exit, $out, $err);
}

# Runs SQL (as the superuser, over the unix socket); returns the rows as
# "a|b" lines, chomped; dies on an error.  db => NAME (default: ->url's).
sub psql {
    my ($self, $sql, %o) = @_;
    my ($exit, $out, $err) = $self->_psql_raw($o{db} // $self->{db}, $sql);
    croak "psql: $sql: $err" if $exit != 0;
    chomp $out;
    return $out;
}

# A new empty database on this server; returns its URL.
sub create_db {
    my ($self, $name) = @_;
    $self->psql("CREATE DATABASE \"$name\"", db => 'postgres');
    return $self->url($name);
}

sub _cleanup { $_[0]->kill }
sub DESTROY  { my ($self) = @_; local ($?, $!, $@); $self->kill if $self->{owner} == $$; delete $live{"$self"} }

# ---- Redis ----------------------------------------------------------------------------------

package Cluster::Redis;

use strict;
use warnings;
use Carp qw(croak);
use IO::Select;
use IO::Socket::INET;
use POSIX qw(:sys_wait_h);
use Scalar::Util qw(weaken);
use Time::HiRes qw(time sleep);
use Alyd;

# Cluster::start_redis(%o): a redis-server with no persistence (a restart
# empties it, as a replaced cache node would be) unless persist => 1 (append-only file).
#   args => [...]    more redis-server arguments ("--name", "value", ...)
sub new {
    my ($class, %o) = @_;
    my $bin = Cluster::redis_bin() or croak 'redis-server not found (see Cluster::need_engines)';
    my $self = bless { bin => $bin, owner => $$, opts => \%o }, $class;
    $self->{dir} = Cluster::_engine_dir('alyd-redis', $>, (split ' ', $))[0]);
    $live{"$self"} = $self;
    weaken($live{"$self"});
    $self->{port} = free_port();
    $self->start;
    return $self;
}

sub dir     { $_[0]{dir} }
sub port    { $_[0]{port} }
sub pid     { $_[0]{pid} }
sub log     { "$_[0]{dir}/redis.log" }
sub url     { my ($self, $db) = @_; return "redis://127.0.0.1:$self->{port}/" . ($db // 0) }
sub running { my $p = $_[0]{pid}; $p && waitpid($p, WNOHANG) == 0 }

sub start {
    my ($self) = @_;
    croak 'redis-server is already running' if $self->running;
    my @args = ('--port', $self->{port}, '--bind', '127.0.0.1', '--dir', $self->{dir}, '--daemonize', 'no', '--logfile', '',
        '--save', '', '--appendonly', ($self->{opts}{persist} ? 'yes' : 'no'), '--protected-mode', 'yes',
        @{ $self->{opts}{args} // [] });
    $self->{pid} = Cluster::_spawn_as($>, (split ' ', $))[0], $self->log, $self->{bin}, @args);
    Cluster::_guard($self->{pid}, $self->{dir});
    my $ok = poll_until(20, sub { return 0 unless $self->running; my $r = eval { $self->cmd('PING') }; ($r // '') eq 'PONG' }, 0.05);
    croak "redis-server did not start:\n" . (slurp($self->log) // '') unless $ok && $self->running;
    return $self;
}

# SIGTERM (a clean shutdown); kill => SIGKILL.
sub stop {
    my ($self) = @_;
    my $pid = $self->{pid} or return 1;
    CORE::kill('TERM', $pid);
    my $ok = poll_until(20, sub { my $r = waitpid($pid, WNOHANG); $r == $pid || $r == -1 }, 0.02);
    Cluster::_kill_group($pid);
    $self->{pid} = undef;
    return $ok;
}

sub kill {
    my ($self) = @_;
    Cluster::_kill_group($self->{pid}) if $self->{pid};
    $self->{pid} = undef;
}

sub restart { my ($self) = @_; $self->stop; return $self->start }

# One command on a fresh connection; returns the reply (arrays as array refs,
# nil as undef); dies on a connection failure or an error reply.
sub cmd {
    my ($self, @args) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $self->{port}, Proto => 'tcp', Timeout => 5 * $Alyd::SCALE)
      or die "redis connect: $!\n";
    my $req = '*' . @args . "\r\n" . join('', map { '$' . length($_) . "\r\n$_\r\n" } @args);
    $s->syswrite($req) or die "redis write: $!\n";
    my $buf = '';
    my $sel = IO::Select->new($s);
    my $deadline = time + 5 * $Alyd::SCALE;
    my $read = sub {    # at least $n more bytes than consumed so far
        my ($need) = @_;
        while (length($buf) < $need) {
            my $left = $deadline - time;
            die "redis: timeout\n" if $left <= 0 || !$sel->can_read($left);
            my $n = $s->sysread($buf, 65536, length $buf);
            die "redis: connection closed\n" unless $n;
        }
    };
    my $pos = 0;
    my $line = sub {
        while (1) {
            my $i = index($buf, "\r\n", $pos);
            if ($i >= 0) { my $l = substr($buf, $pos, $i - $pos); $pos = $i + 2; return $l }
            $read->(length($buf) + 1);
        }
    };
    my $parse;
    $parse = sub {
        my $l = $line->();
        my ($t, $v) = (substr($l, 0, 1), substr($l, 1));
        return $v if $t eq '+';
        die "redis: $v\n" if $t eq '-';
        return $v + 0 if $t eq ':';
        if ($t eq '$') {
            return undef if $v < 0;
            $read->($pos + $v + 2);
            my $d = substr($buf, $pos, $v);
            $pos += $v + 2;
            return $d;
        }
        if ($t eq '*') {
            return undef if $v < 0;
            return [map { $parse->() } 1 .. $v];
        }
        die "redis: unexpected reply line $l\n";
    };
    my $r = $parse->();
    undef $parse;
    close $s;
    return $r;
}

sub _cleanup { $_[0]->kill }
sub DESTROY  { my ($self) = @_; local ($?, $!, $@); $self->kill if $self->{owner} == $$; delete $live{"$self"} }

# ---- N alyd hosts on the shared engines -----------------------------------------------------

package Cluster;

sub start_postgres { Cluster::Pg->new(@_) }
sub start_redis    { Cluster::Redis->new(@_) }

# Cluster->hosts($n, %o): $n alyd hosts, each with its own temporary data_dir
# (its local replica), all naming one PostgreSQL database, one Redis database and
# one key_pepper_file.
#   pg => $pg | undef  a Cluster::Pg to use (default: start one); store => 'lmdb': no PostgreSQL
#   redis => $r        a Cluster::Redis to use (default: start one); volatile => 'lmdb': no Redis
#   db => NAME         a fresh database of that name on $pg (default: the harness's database)
#   store_url => URL   an existing database instead (e.g. one alyctl migrate filled)
#   workers => N       per host (default 2); extra => [lines] for every host;
#   host_extra => sub { my ($i) = @_; [lines] } for host $i; bin => alyd binary (e.g. $ENV{ALYD_TEST})
#   rate_limit => 'N/unit burst=B', auth_failure_limit => ... (defaults: high enough not to interfere)
#   pepper_from => PATH  start from a copy of this pepper file (e.g. of a migrated LMDB installation)
sub hosts {
    my ($class, $n, %o) = @_;
    croak 'hosts: at least one host' unless $n && $n >= 1;
    my $self = bless { owner => $$, opts => \%o, rr => 0, hosts => [] }, $class;
    $live{"$self"} = $self;
    weaken($live{"$self"});
    my $store = $o{store} // 'postgresql';
    my $volatile = $o{volatile} // 'redis';
    if ($store eq 'postgresql') {
        $self->{pg} = $o{pg} // Cluster::Pg->new;
        $self->{store_url} = $o{store_url} // (defined $o{db} ? $self->{pg}->create_db($o{db}) : $self->{pg}->url);
    }
    if ($volatile eq 'redis') {
        $self->{redis} = $o{redis} // Cluster::Redis->new;
        $self->{volatile_url} = $self->{redis}->url($o{redis_db});
    }
    $self->{dir} = abs_path(tempdir('alyd-cluster-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{ALY_KEEP_TMP}));
    $self->{pepper} = "$self->{dir}/pepper";
    if ($o{pepper_from}) {    # an existing installation's pepper (its keys' hashes depend on it)
        my $p = slurp($o{pepper_from}) // croak "cannot read $o{pepper_from}";
        spew($self->{pepper}, $p, 0600);
    }
    for my $i (0 .. $n - 1) {
        push @{ $self->{hosts} }, $self->start_host($i);
    }
    return $self;
}

# The directives every host of this cluster shares, plus host $i's own.
sub host_config {
    my ($self, $i) = @_;
    my $o = $self->{opts};
    my @l = ("key_pepper_file $self->{pepper}");
    push @l, "store $self->{store_url}"       if $self->{store_url};
    push @l, "volatile $self->{volatile_url}" if $self->{volatile_url};
    push @l, Cluster::volatile_timeout_line()
      if $self->{volatile_url} && !grep { /^\s*volatile_timeout\s/ } @{ $o->{extra} // [] };
    push @l, 'rate_limit ' . ($o->{rate_limit} // '100000/second burst=100000');
    # Every test client shares 127.0.0.1: tests that expect many 401s must not turn them into the address's 429s.
    push @l, 'auth_failure_limit ' . ($o->{auth_failure_limit} // '100000/second burst=100000');
    push @l, @{ $o->{extra} // [] };
    push @l, @{ $o->{host_extra}->($i) // [] } if $o->{host_extra};
    return \@l;
}

# Starts host $i (alyctl init, which creates the shared pepper file on the
# first host and the local replica on every host, then alyd); returns the Alyd.
sub start_host {
    my ($self, $i) = @_;
    my $o = $self->{opts};
    return Alyd->start(workers => $o->{workers} // 2, extra => $self->host_config($i), ($o->{bin} ? (bin => $o->{bin}) : ()),
        ($o->{env} ? (env => $o->{env}) : ()));
}

sub pg           { $_[0]{pg} }
sub redis        { $_[0]{redis} }
sub store_url    { $_[0]{store_url} }
sub volatile_url { $_[0]{volatile_url} }
sub pepper       { $_[0]{pepper} }
sub dir          { $_[0]{dir} }
sub host         { $_[0]{hosts}[ $_[1] ] }
sub all          { @{ $_[0]{hosts} } }
sub size         { scalar @{ $_[0]{hosts} } }
sub ports        { map { $_->port } @{ $_[0]{hosts} } }

# The next host, round robin (what a load balancer would pick).
sub next {
    my ($self) = @_;
    my $h = $self->{hosts}[ $self->{rr}++ % @{ $self->{hosts} } ];
    return $h;
}

# Replaces host $i by a fresh one (new ports, new empty data_dir: a replacement machine).
sub replace_host {
    my ($self, $i) = @_;
    $self->{hosts}[$i]->kill_all if $self->{hosts}[$i];
    $self->{hosts}[$i] = $self->start_host($i);
    return $self->{hosts}[$i];
}

sub stop {
    my ($self) = @_;
    $_->stop for grep { defined } @{ $self->{hosts} };
}

sub _cleanup {
    my ($self) = @_;
    $_->kill_all for grep { defined } @{ $self->{hosts} // [] };
}

sub DESTROY {
    my ($self) = @_;
    local ($?, $!, $@);
    $self->_cleanup if $self->{owner} == $$;
    delete $live{"$self"};
}

# ---- a fork-free HTTP client and the MCP calls the cluster tests make -----------------------

# http_request($port, $method, $path, headers => {..}, body => ..., timeout => s)
# -> (status, headers text, body, error).  One request on a fresh connection
# (Connection: close); status 0 and an error string when no response came.
sub http_request {
    my ($port, $method, $path, %o) = @_;
    my $timeout = ($o{timeout} // 5) * $Alyd::SCALE;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp', Timeout => $timeout)
      or return (0, '', '', "connect: $!");
    my $body = $o{body} // '';
    my $req = "$method $path HTTP/1.1\r\nHost: 127.0.0.1:$port\r\nConnection: close\r\n";
    my %h = %{ $o{headers} // {} };
    $req .= "$_: $h{$_}\r\n" for sort keys %h;
    $req .= 'Content-Length: ' . length($body) . "\r\n" if length $body || $method eq 'POST';
    $req .= "\r\n$body";
    local $SIG{PIPE} = 'IGNORE';
    defined $s->syswrite($req) or return (0, '', '', "write: $!");
    my $resp = '';
    my $sel = IO::Select->new($s);
    my $deadline = time + $timeout;
    while (1) {
        my $left = $deadline - time;
        return (0, '', $resp, "timeout after ${timeout}s") if $left <= 0;
        next unless $sel->can_read($left);
        my $n = $s->sysread(my $buf, 65536);
        return (0, '', $resp, "read: $!") unless defined $n;
        last if $n == 0;
        $resp .= $buf;
    }
    close $s;
    return (0, '', $resp, length $resp ? 'truncated response' : 'connection closed with no response')
      unless $resp =~ m{^HTTP/1\.[01] (\d{3})};
    my $status = $1;
    my ($hdr, $b) = split /\r\n\r\n/, $resp, 2;
    $b //= '';
    if ($hdr =~ /^transfer-encoding:\s*chunked/mi) {
        my $out = '';
        while ($b =~ s/^([0-9a-fA-F]+)[^\r\n]*\r\n//) {
            my $len = hex $1;
            last if $len == 0;
            $out .= substr($b, 0, $len, '');
            $b =~ s/^\r\n//;
        }
        $b = $out;
    }
    return ($status + 0, $hdr, $b, undef);
}

# mcp_request($host_or_port, $key, $method, $params, %o) -> (status, decoded
# response, headers, error).  A stateless JSON POST to /api/mcp (o{session}:
# Mcp-Session-Id, o{headers}: more headers, o{path}: another endpoint).
my $next_id = 0;

sub mcp_request {
    my ($h, $key, $method, $params, %o) = @_;
    my $port = ref $h ? $h->port : $h;
    my %hdr = ('Content-Type' => 'application/json', 'Accept' => 'application/json, text/event-stream', %{ $o{headers} // {} });
    $hdr{Authorization} = "Bearer $key" if defined $key;
    $hdr{'Mcp-Session-Id'} = $o{session} if defined $o{session};
    my $msg = { jsonrpc => '2.0', method => $method, params => $params // {} };
    $msg->{id} = ++$next_id unless $o{notification};
    my ($st, $hd, $body, $err) = http_request($port, 'POST', $o{path} // '/api/mcp', headers => \%hdr, body => $json->encode($msg),
        timeout => $o{timeout});
    my $r;
    if (($body // '') =~ /^(event|data|:)/m) {
        my @msgs = grep { defined } map { Alyd::json_decode($_) } $body =~ /^data: (.*)$/mg;
        ($r) = grep { exists $_->{id} } reverse @msgs;
    } else {
        $r = Alyd::json_decode($body // '');
    }
    return ($st, $r // {}, $hd, $err);
}

# mcp_call($host_or_port, $key, $tool, $args, %o) -> (status, result or error
# hash, headers, error): tools/call.  A tool's result is in ->{structuredContent}.
sub mcp_call {
    my ($h, $key, $tool, $args, %o) = @_;
    my ($st, $r, $hd, $err) = mcp_request($h, $key, 'tools/call', { name => $tool, arguments => $args // {} }, %o);
    return ($st, $r->{result} // $r->{error} // {}, $hd, $err);
}

# ---- races: several processes released at the same instant -------------------------------------

# race(@subs): runs each sub in a process of its own, all released at one
# instant; returns what each returned (JSON-able; {died => msg} if it died), in order.
sub race {
    my (@subs) = @_;
    my $dir = File::Temp->newdir;
    my $at = time + 0.3 * $Alyd::SCALE;    # after the last fork
    my @pids;
    for my $i (0 .. $#subs) {
        my $pid = fork // croak "fork: $!";
        if ($pid == 0) {
            $SIG{ALRM} = 'DEFAULT';
            alarm(int(60 * $Alyd::SCALE));
            my $wait = $at - time;
            sleep $wait if $wait > 0;
            my $r = eval { $subs[$i]->() };
            $r = { died => "$@" } if $@;
            spew("$dir/$i", $json->encode([$r]));
            POSIX::_exit(0);
        }
        push @pids, $pid;
    }
    waitpid($_, 0) for @pids;
    return map { (Alyd::json_decode(slurp("$dir/$_") // '') // [{ died => 'no result' }])->[0] } 0 .. $#subs;
}

# ---- load: several client processes, each looping over the hosts ----------------------------

# start_load(ports => [...], clients => N, secs => S, file => PATH, req => sub { my ($port, $client, $i) = @_; (status, note) })
# Each client cycles over the ports (client c starts at port c), calls req and
# writes "start end port status client note" per request into FILE.c.
# Returns a handle for finish_load.
sub start_load {
    my (%o) = @_;
    my @ports = @{ $o{ports} } or croak 'start_load: no ports';
    my $n = $o{clients} // 4;
    my @pids;
    for my $c (0 .. $n - 1) {
        my $pid = fork // croak "fork: $!";
        if ($pid == 0) {
            $SIG{ALRM} = 'DEFAULT';
            alarm(int($o{secs} * $Alyd::SCALE) + 30);
            open(my $out, '>', "$o{file}.$c") or POSIX::_exit(2);
            $out->autoflush(1);
            my $end = time + $o{secs};
            my $i = 0;
            while (time < $end) {
                my $port = $ports[ ($c + $i) % @ports ];
                my $t0 = time;
                my ($st, $note) = eval { $o{req}->($port, $c, $i) };
                ($st, $note) = (0, "died: $@") unless defined $st;
                $note //= '-';
                $note =~ s/\s+/_/g;
                printf $out "%.4f %.4f %d %d %d %s\n", $t0, time, $port, $st, $c, $note;
                $i++;
                sleep $o{pause} if $o{pause};
            }
            close $out;
            POSIX::_exit(0);
        }
        push @pids, $pid;
    }
    return { pids => \@pids, file => $o{file}, clients => $n, secs => $o{secs} };
}

# Waits for the clients (killing them past the deadline); returns every request
# as a hash {start, end, port, status, client, note}.
sub finish_load {
    my ($h) = @_;
    for my $pid (@{ $h->{pids} }) {
        my $done = poll_until($h->{secs} + 30, sub { waitpid($pid, WNOHANG) == $pid }, 0.05);
        if (!$done) { kill 'KILL', $pid; waitpid($pid, 0) }
    }
    my @r;
    for my $c (0 .. $h->{clients} - 1) {
        for my $line (split /\n/, slurp("$h->{file}.$c") // '') {
            my @f = split ' ', $line, 6;
            push @r, { start => $f[0], end => $f[1], port => $f[2], status => $f[3], client => $f[4], note => $f[5] };
        }
    }
    return sort { $a->{start} <=> $b->{start} } @r;
}

1;
