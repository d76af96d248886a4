# What the "volatile redis://" tests (t/14x-redis-*.t) add to t/lib/Cluster.pm's
# throw-away redis-server: redis-cli against it (any database), and a second
# alyd "host" that shares the first one's durable store (a symlink to its LMDB
# store directory, standing in for a shared PostgreSQL, so these tests need no
# PostgreSQL) and pepper but keeps its own volatile directory, so anything that
# crosses the two hosts can only have gone through Redis.
package AlyRedis;

use strict;
use warnings;
use Carp qw(croak);
use Alyd;
use Cluster;
use parent -norequire, 'Cluster::Redis';

sub cli_bin { for my $d (split(/:/, $ENV{PATH} // ''), '/usr/bin') { return "$d/redis-cli" if -x "$d/redis-cli" } undef }

# AlyRedis->available: redis-server and redis-cli are installed (scripts/install-deps --test puts them there).
sub available { return Cluster::redis_bin() && cli_bin() }

# AlyRedis->start: Cluster::Redis->new; ->stop, ->start (again, same port), ->pid, ->url(DB) as there.
sub start {
    my ($class, @o) = @_;
    return ref $class ? $class->SUPER::start(@o) : $class->new(@o);
}

# redis-cli against this server ("-n DB" for another database); its output, chomped (undef when it fails).
sub cli {
    my ($self, @args) = @_;
    my ($exit, $out) = Alyd::run_cmd(cli_bin(), '-p', $self->port, @args);
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

1;
