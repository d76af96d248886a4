# SlowDNS.pm -- a DNS server that answers one name as late as the test says
# (t/lib/slowdns.py), and wrappers that run a program in a mount namespace of
# its own whose resolv.conf and nsswitch.conf ask that server: the tests of
# host name lookups bounded by a deadline (t/146 Redis, t/147 PostgreSQL).
#
#   plan skip_all => $why if my $why = SlowDNS->unavailable;
#   my $dns = SlowDNS->start(name => 'redis.slow.test', wait => $DELAY + 5);
#   my $bin = $dns->wrapper('alyd', Alyd::alyd_bin());   # for Alyd->start(bin => ...)
#   $dns->delay($DELAY);          # A answers late from now on; ->delay(0): at once
#   $dns->aaaa_delay($DELAY);     # the same for AAAA (empty) answers
#   $dns->queries(1, $since);     # A queries for the name asked since then
#
# The server stops with the object, and at the latest after `lifetime`.
package SlowDNS;
use strict;
use warnings;
use Carp qw(croak);
use File::Temp ();
use POSIX ();
use Alyd;

my $PYTHON = `command -v python3 2>/dev/null`;
chomp $PYTHON;

# Why these tests cannot run here, or undef.
sub unavailable {
    return 'python3 and ALY_SRCDIR are needed for the DNS server' unless $PYTHON && Alyd::srcdir();
    return 'a DNS server on port 53 and a mount namespace need root' unless $> == 0;
    return 'the test resolver would be bypassed: nscd is running' if -S '/var/run/nscd/socket';
    my ($ns, undef, $err) = Alyd::run_cmd('unshare', '--mount', 'sh', '-c', 'mount --bind /etc/hosts /etc/resolv.conf');
    return "unshare --mount and mount --bind are not permitted here: $err" if $ns != 0;
    return undef;
}

# name: the one name it answers (with 127.0.0.1); wait: seconds glibc waits for an answer (one try);
# lifetime: seconds after which the server exits whatever happens.  Croaks when it does not come up.
sub start {
    my ($class, %o) = @_;
    my $dir = File::Temp::tempdir('alyd-dns-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{ALY_KEEP_TMP});
    my $self = bless { name => $o{name}, dir => $dir, owner => $$ }, $class;
    $self->delay(0);
    $self->aaaa_delay(0);
    my $pid = fork // croak "fork: $!";
    if ($pid == 0) {
        open(STDIN, '<', '/dev/null');
        open(STDERR, '>', "$dir/dns.err");
        exec($PYTHON, Alyd::srcdir() . '/t/lib/slowdns.py', '--name', $o{name}, '--answer', '127.0.0.1', '--delay-file',
            "$dir/delay", '--aaaa-delay-file', "$dir/aaaa-delay", '--ready', "$dir/ready", '--log', "$dir/dns.log",
            '--lifetime', $o{lifetime} // 300) or POSIX::_exit(127);
    }
    $self->{pid} = $pid;
    Alyd::poll_until(10, sub { -s "$dir/ready" }) or croak 'slowdns.py did not start: ' . (Alyd::slurp("$dir/dns.err") // '');
    my ($addr) = (Alyd::slurp("$dir/ready") // '') =~ /^(\S+)/;
    # One try, waiting longer than any delay the test sets: glibc takes the late answer.
    Alyd::spew("$dir/resolv.conf", "nameserver $addr\noptions timeout:" . int($o{wait} // 10) . " attempts:1\n");
    my $nss = Alyd::slurp('/etc/nsswitch.conf') // '';
    $nss =~ s/^hosts:.*$/hosts: files dns/m or $nss .= "hosts: files dns\n";
    Alyd::spew("$dir/nsswitch.conf", $nss);
    return $self;
}

sub delay      { Alyd::spew("$_[0]{dir}/delay",      "$_[1]\n") }
sub aaaa_delay { Alyd::spew("$_[0]{dir}/aaaa-delay", "$_[1]\n") }

# Queries of type (1 A, 28 AAAA) for the name that arrived at or after since (epoch seconds).
sub queries {
    my ($self, $type, $since) = @_;
    return scalar grep { /^(\S+) \Q$self->{name}\E $type / && $1 >= $since } split /\n/, (Alyd::slurp("$self->{dir}/dns.log") // '');
}

# A script that runs bin in a mount namespace asking this server; nothing is
# preloaded into unshare or sh (a sanitizer runtime there hangs them).
sub wrapper {
    my ($self, $tag, $bin) = @_;
    my ($d, $path) = ($self->{dir}, "$self->{dir}/$tag-with-slow-dns");
    Alyd::spew($path, "#!/bin/sh\nexec unshare --mount sh -c 'mount --bind \"$d/resolv.conf\" /etc/resolv.conf && "
        . "mount --bind \"$d/nsswitch.conf\" /etc/nsswitch.conf && exec \"$bin\" \"\$\@\"' sh \"\$\@\"\n");
    chmod 0755, $path or croak "chmod $path: $!";
    return $path;
}

sub DESTROY {
    my ($self) = @_;
    return unless $self->{pid} && $self->{owner} == $$;
    local $?;
    kill('TERM', $self->{pid});
    waitpid($self->{pid}, 0);
}

1;
