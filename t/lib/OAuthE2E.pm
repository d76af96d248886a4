# OAuthE2E.pm -- what the end-to-end OAuth tests (t/13x-oauth-*.t) share: the
# Node clients' whereabouts, a workspace with a user who can sign in, a clock
# for alyd that a test can move forward (so an access token really expires and
# a client has to refresh it), and background processes with deadlines.
#
#   my $e = OAuthE2E->node_or_skip('@modelcontextprotocol/sdk');
#   my $clock = OAuthE2E::Clock->new;              # before Alyd->start
#   my $srv = Alyd->start(env => $clock->env, ...);
#   my $who = OAuthE2E::user($srv);                # {ws, email, password}
#   $clock->advance('+2h');
package OAuthE2E;
use strict;
use warnings;
use Carp qw(croak);
use File::Temp ();
use POSIX ();
use Test::More ();
use Alyd ();

# The Node 22 of scripts/install-node and the packages a test needs, or skip_all.
sub node_or_skip {
    my ($class, @pkgs) = @_;
    my $dir = $ENV{ALY_NODE_DIR} // '';
    my $node = "$dir/node_modules/node/bin/node";
    my @missing = grep { !-d "$dir/node_modules/$_" } @pkgs;
    Test::More::plan(skip_all => "Node and @pkgs are not installed in ALY_NODE_DIR ($dir): run scripts/install-node")
      unless -x $node && !@missing;
    return bless { dir => $dir, node => $node }, $class;
}

sub node { $_[0]{node} }
sub dir  { $_[0]{dir} }

# Copies t/interop/NAME beside node_modules (ESM resolves packages from the script's directory);
# returns its path.  Renamed into place: tests running side by side copy the same scripts, and a
# node reading one must never see it half-written.
sub script {
    my ($self, $name) = @_;
    my $src = Alyd::srcdir() . "/t/interop/$name";
    my $dst = "$self->{dir}/$name";
    system('cp', $src, "$dst.$$") == 0 or croak "cp $src: $!";
    rename("$dst.$$", $dst) or croak "rename $dst: $!";
    return $dst;
}

# A workspace and a user of it with a password, through alyctl.
sub user {
    my ($srv, %o) = @_;
    my $ws = $srv->ctl('workspace', 'create', $o{workspace_name} // 'OAuth E2E');
    my $email = $o{email} // 'ada@example.com';
    my $password = $o{password} // 'correct horse battery staple';
    my $tmp = File::Temp->new;
    print $tmp "$password\n";
    close $tmp;
    $srv->ctl('users', 'add', '--workspace', $ws, '--email', $email, '--password-file', $tmp->filename,
        $o{scopes} ? ('--scopes', $o{scopes}) : ());
    return { ws => $ws, email => $email, password => $password };
}

# A process in the background with its stdin a pipe and stdout/stderr in files.
sub spawn {
    my ($self, $env, @cmd) = @_;
    return _spawn($env, @cmd);
}

sub _spawn {
    my ($env, @cmd) = @_;
    my $dir = File::Temp->newdir;
    pipe(my $r, my $w) or croak "pipe: $!";
    my $pid = fork // croak "fork: $!";
    if ($pid == 0) {
        close $w;
        open(STDIN, '<&', $r) or POSIX::_exit(126);
        open(STDOUT, '>', "$dir/out") or POSIX::_exit(126);
        open(STDERR, '>', "$dir/err") or POSIX::_exit(126);
        %ENV = (%ENV, %$env);
        exec(@cmd) or POSIX::_exit(127);
    }
    close $r;
    $w->autoflush(1);
    return bless { pid => $pid, in => $w, tmp => $dir, out => "$dir/out", err => "$dir/err" }, 'OAuthE2E::Proc';
}

package OAuthE2E::Proc;
use Time::HiRes qw(sleep);

sub stdout { Alyd::slurp($_[0]{out}) // '' }
sub stderr { Alyd::slurp($_[0]{err}) // '' }
sub pid    { $_[0]{pid} }

# Waits until stdout matches $re (returns the first capture or the match) or $secs pass (undef).
sub wait_for {
    my ($self, $re, $secs) = @_;
    my @m;
    Alyd::poll_until($secs, sub { @m = $self->stdout =~ $re; @m || !$self->alive }, 0.05);
    @m = $self->stdout =~ $re unless @m;
    return @m ? $m[0] : undef;
}

sub say {
    my ($self, $line) = @_;
    local $SIG{PIPE} = 'IGNORE';
    print { $self->{in} } "$line\n";
}

sub alive {
    my ($self) = @_;
    return 0 if defined $self->{status};
    my $r = waitpid($self->{pid}, POSIX::WNOHANG());
    if ($r == $self->{pid}) { $self->{status} = $? >> 8; return 0 }
    return 1;
}

# Waits for the exit (killing it after $secs); returns the exit status (-1 when killed).
sub finish {
    my ($self, $secs) = @_;
    close $self->{in} if $self->{in};
    delete $self->{in};
    return $self->{status} if Alyd::poll_until($secs, sub { !$self->alive }, 0.05);
    kill 'TERM', $self->{pid};
    sleep 0.5;
    kill 'KILL', $self->{pid};
    waitpid($self->{pid}, 0);
    return $self->{status} = -1;
}

sub DESTROY {
    my ($self) = @_;
    return if defined $self->{status};
    kill 'KILL', $self->{pid};
    waitpid($self->{pid}, 0);
}

# alyd's wall clock, movable by the test: libfaketime preloaded into the daemon
# reads an offset from a file on every call, so writing "+2h" there makes every
# worker's token checks an hour past an access token's expiry at once.  Only the
# wall clock moves (FAKETIME_DONT_FAKE_MONOTONIC): timers and rate limits keep
# real time.  A sanitized build needs its runtime first in LD_PRELOAD.
package OAuthE2E::Clock;
use Carp qw(croak);
use Time::HiRes ();

sub available { defined Alyd::faketime_preload('/bin/true') }

sub new {
    my ($class, $bin) = @_;
    my $dir = File::Temp->newdir;
    my $self = bless { tmp => $dir, file => "$dir/offset" }, $class;
    Alyd::spew($self->{file}, "+0\n");
    $self->{env} = { LD_PRELOAD => Alyd::faketime_preload($bin), FAKETIME_TIMESTAMP_FILE => $self->{file}, FAKETIME_NO_CACHE => 1,
        FAKETIME_DONT_FAKE_MONOTONIC => 1 };
    return $self;
}

sub env { $_[0]{env} }

# Moves the clock to $offset (from real time, e.g. "+2h").  h2o's loop reads the same clock, so
# the jump also expires every idle keep-alive connection -- but only when a worker's loop next
# wakes.  Waking every worker now (a burst of fresh connections to $srv) makes them close those
# connections before a client reuses one, instead of under its next request.
sub advance {
    my ($self, $offset, $srv) = @_;
    Alyd::spew("$self->{file}.new", "$offset\n");
    rename("$self->{file}.new", $self->{file}) or croak "rename: $!";
    return unless $srv;
    Alyd::raw_http($srv->port, 'GET', '/healthz') for 1 .. 24;
    Time::HiRes::sleep(0.3);
}

1;
