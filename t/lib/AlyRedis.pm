# Test helpers for "volatile redis://": a throw-away redis-server on a free
# loopback port in a temporary directory (stop it, start it again on the same
# port), a redis-cli wrapper, and a second alyd "host" that shares the first
# one's durable store (a symlink to its LMDB store directory, standing in for
# a shared PostgreSQL) and pepper but keeps its own volatile directory, so
# anything that crosses the two hosts can only have gone through Redis.
package AlyRedis;

use strict;
use warnings;
use Carp qw(croak);
use File::Temp qw(tempdir);
use POSIX ();
use Time::HiRes qw(sleep);
use Alyd;

my %live;

sub redis_bin { my ($name) = @_; for my $d (split(/:/, $ENV{PATH} // ''), '/usr/bin', '/usr/sbin') { return "$d/$name" if -x "$d/$name" } undef }

# AlyRedis->available: redis-server and redis-cli are installed (scripts/install-deps --test puts them there).
sub available { return redis_bin('redis-server') && redis_bin('redis-cli') }

# AlyRedis->start: a redis-server without persistence on a free port; dies when it does not answer PING.
sub start {
    my ($class) = @_;
    my $self = bless { dir => tempdir('alyd-redis-XXXXXX', TMPDIR => 1, CLEANUP => 1), owner => $$ }, $class;
    $self->{port} = Alyd::free_port();
    $self->spawn;
    $live{"$self"} = $self;
    return $self;
}

sub port { $_[0]{port} }
sub url  { "redis://127.0.0.1:$_[0]{port}/" . ($_[1] // 0) }

sub spawn {
    my ($self) = @_;
    my $pid = fork // croak "fork: $!";
    if ($pid == 0) {
        open(STDIN,  '<',  '/dev/null');
        open(STDOUT, '>>', "$self->{dir}/redis.log");
        open(STDERR, '>&', \*STDOUT);
        exec(redis_bin('redis-server'), '--port', $self->{port}, '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
            '--dir', $self->{dir}, '--daemonize', 'no') or POSIX::_exit(127);
    }
    $self->{pid} = $pid;
    Alyd::poll_until(10, sub { ($self->cli('PING') // '') eq 'PONG' }, 0.05)
      or croak "redis-server on port $self->{port} did not answer PING:\n" . (Alyd::slurp("$self->{dir}/redis.log") // '');
}

# Stops the server (SIGTERM, then reaped); start again with ->spawn.
sub stop {
    my ($self) = @_;
    return unless $self->{pid} && $self->{owner} == $$;
    kill('TERM', $self->{pid});
    Alyd::poll_until(10, sub { waitpid($self->{pid}, POSIX::WNOHANG()) != 0 }, 0.02) or kill('KILL', $self->{pid});
    waitpid($self->{pid}, 0);
    $self->{pid} = undef;
}

# redis-cli against this server; its output, chomped (undef when it fails).
sub cli {
    my ($self, @args) = @_;
    my ($exit, $out) = Alyd::run_cmd(redis_bin('redis-cli'), '-p', $self->{port}, @args);
    return undef if $exit != 0;
    chomp $out;
    return $out;
}

# AlyRedis::twin($host, %opts): a second alyd sharing $host's store and pepper (see the top).
sub twin {
    my ($host, %o) = @_;
    my $b = Alyd->start(%o);
    $b->stop;
    my $d = $b->data_dir;
    system('rm', '-rf', "$d/store") == 0 or croak 'rm store';
    symlink($host->data_dir . '/store', "$d/store") or croak "symlink: $!";
    system('cp', $host->data_dir . '/pepper', "$d/pepper") == 0 or croak 'cp pepper';
    $b->spawn;
    my $err = $b->wait_ready;
    croak "twin alyd did not start: $err\n" . ($b->error_log_text // '') if defined $err;
    return $b;
}

sub DESTROY { my ($self) = @_; local ($?, $!, $@); $self->stop if $self->{pid}; delete $live{"$self"} }

END { local $?; $_->stop for grep { $_ && $_->{pid} } values %live }

1;
