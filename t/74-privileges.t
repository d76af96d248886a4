# The root master never follows a path the worker user can plant.  alyd runs
# as root with "user nobody"; the test plays that user, who owns data_dir and
# (here) the log directory, and plants symlinks to a root-only file:
#  - where LMDB keeps its lock file, before a worker death makes the master
#    check the store's readers (it used to open the environment as root: LMDB
#    would have truncated the target to a lock file's size);
#  - where the error log and the access log live, before a HUP makes the
#    master reopen them (it used to append to the target and fchown it to the
#    worker user).
# The target must come out unchanged: same bytes, same owner, same mode.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(sleep);
use Alyd;

plan skip_all => 'needs root (alyd drops to "user nobody")' if $> != 0;
my ($nuid, $ngid) = (getpwnam('nobody'))[2, 3];
plan skip_all => 'no user nobody' unless defined $nuid;
Alyd::watchdog(120);

my $srv = Alyd->start(workers => 1, extra => ['user nobody', 'group ' . (getgrgid($ngid))[0]], init => 0, wait => 0);
sleep 0.3;    # let it exec before it is stopped
$srv->stop;
# The test directory plays /var/log/alyd and /var/lib/alyd: owned by the worker user.
chown($nuid, $ngid, $srv->dir) or die "chown: $!";
chmod(0755, $srv->dir);
{
    my ($exit, undef, $err) = Alyd::run_cmd(Alyd::alyctl_bin(), '-c', $srv->conf, 'init');
    die "alyctl init: $err" if $exit;
}
$srv->spawn;
is($srv->wait_ready, undef, 'alyd serves with user nobody');

my $target = $srv->dir . '/../' . 'alyd-root-only-' . $$;
Alyd::spew($target, "root's secret\n", 0600);
my @before = (stat $target)[2, 4, 7];
END { unlink $target if defined $target }
sub unchanged {
    my ($what) = @_;
    is(Alyd::slurp($target), "root's secret\n", "$what: the root-only file's bytes are unchanged");
    is_deeply([(stat $target)[2, 4, 7]], \@before, "$what: its mode, owner and size are unchanged");
}

# The worker user replaces the volatile environment's lock file with a symlink.
my $lock = $srv->data_dir . '/volatile/lock.mdb';
ok(-e $lock, 'the volatile lock file exists');
unlink $lock;
symlink($target, $lock) or die "symlink: $!";
my ($w) = $srv->worker_pids;
kill 'KILL', $w;    # the master checks the readers after a worker death
ok($srv->wait_log(qr/reader check after a worker death: [^\n]*Permission denied/, 10),
   'the reader check runs as the worker user: the planted link leads nowhere it may open');
unchanged('reader check after a worker death');
unlink $lock;
ok(Alyd::poll_until(20, sub { my ($st) = Alyd::curl($srv->url('/healthz')); $st == 200 }), 'with the link gone, a worker serves again');

# The worker user replaces both logs with symlinks; HUP reopens them.
for my $log ($srv->error_log, $srv->access_log) {
    unlink $log;
    symlink($target, $log) or die "symlink: $!";
}
ok($srv->signal('HUP'), 'HUP with the logs replaced by symlinks');
sleep 1.5;
unchanged('log reopen on HUP');
# The master still writes to the log it had open (now unlinked): the refusal is there.
my $old_log = '';
Alyd::poll_until(5, sub {
    for my $fd (glob '/proc/' . $srv->master_pid . '/fd/*') {
        my $to = readlink($fd) // next;
        $old_log = Alyd::slurp($fd) // '' if $to =~ m{/error\.log \(deleted\)$};
    }
    $old_log =~ /reload failed/;
});
like($old_log, qr/reload failed[^\n]*symbolic link/, 'the reload is refused, naming the symbolic link');
my ($st) = Alyd::curl($srv->url('/healthz'));
is($st, 200, 'alyd still serves');

done_testing;
