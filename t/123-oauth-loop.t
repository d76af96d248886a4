#!/usr/bin/perl
# A sign-in does not stop the worker: the Argon2id check (a tenth of a
# second of CPU by design) runs on the worker's verifier thread, so with one
# worker a /healthz sent while a sign-in is being checked is answered first;
# a check on the event loop would hold it until the password was judged.
# Both the right and a wrong password are checked this way, and the
# answers are the ones the form gives without it.
use strict;
use warnings;
use Test::More;
use File::Temp;
use IO::Select;
use IO::Socket::INET;
use Time::HiRes qw(time sleep);
use Alyd;
use AlyOAuth;

watchdog(120);

my $srv = Alyd->start(workers => 1);
my $tmp = File::Temp->newdir;
my $cb  = 'http://127.0.0.1:' . Alyd::free_port() . '/callback';
my $ws  = $srv->ctl('workspace', 'create', 'Acme');
spew("$tmp/pw", "right-password\n");
$srv->ctl('users', 'add', '--workspace', $ws, '--email', 'ann@example.com', '--password-file', "$tmp/pw");
my $app = Alyd::json_decode($srv->ctl('--json', 'oauth', 'clients', 'create', '--name', 'App', '--redirect-uri', $cb));

sub page {
    my ($o) = @_;
    my $p = AlyOAuth::pkce();
    return $o->authorize_page(response_type => 'code', client_id => $app->{client_id}, redirect_uri => $cb, state => 's',
        code_challenge => $p->{challenge}, code_challenge_method => 'S256', scope => 'read:sites');
}

# Raw HTTP/1.1 on a socket of its own: the request goes out now, the answer is read later.
sub send_raw {
    my ($req) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $srv->port, Proto => 'tcp', Timeout => 10) or die "connect: $!";
    $s->autoflush(1);
    print $s $req;
    return $s;
}

# Reads the answers on all sockets at once (each Connection: close), noting when each one was complete: [status, time].
sub finish_all {
    my (@socks) = @_;
    my $sel = IO::Select->new(@socks);
    my %buf = map { ("$_" => '') } @socks;
    my %done;
    my $deadline = time + 30 * $Alyd::SCALE;
    while ($sel->count && time < $deadline) {
        for my $s ($sel->can_read(1)) {
            my $n = sysread($s, $buf{"$s"}, 65536, length $buf{"$s"});
            next if $n;
            $done{"$s"} = time;
            $sel->remove($s);
        }
    }
    return map { [($buf{"$_"} =~ m{^HTTP/1\.1 (\d{3})})[0] // 0, $done{"$_"} // 9e9] } @socks;
}

my $signins = 0;
for my $case (['wrong-password', 401], ['right-password', 302]) {
    my ($password, $want) = @$case;
    my $o  = AlyOAuth->new($srv);
    my $pg = page($o);
    is($pg->{status}, 200, "$password: the consent page");
    my $body = AlyOAuth::form(request => $pg->{page}{request}, csrf => $pg->{page}{csrf}, email => 'ann@example.com',
        password => $password, scope => 'read:sites', action => 'approve');
    my (undef, $cookie) = $o->cookie_header;
    my $signin = send_raw("POST /oauth/authorize HTTP/1.1\r\nHost: 127.0.0.1:" . $srv->port . "\r\n$cookie\r\nConnection: close\r\n"
          . "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: " . length($body) . "\r\n\r\n$body");
    sleep 0.005;    # the sign-in reaches the worker first
    my $health = send_raw("GET /healthz?case=$password HTTP/1.1\r\nHost: 127.0.0.1:" . $srv->port . "\r\nConnection: close\r\n\r\n");
    my ($si, $he) = finish_all($signin, $health);
    my ($status, $signin_done, $hst, $health_done) = (@$si, @$he);
    is($hst, 200, "$password: /healthz answered during the sign-in");
    is($status, $want, "$password: the sign-in's answer is $want");
    # Which was answered first is read from the worker's access log, which it writes in the order its answers end
    # (one worker): when this process gets the CPU late, both answers are waiting at once and the times above say
    # nothing.  Lines wait in the worker's buffer up to access_log_flush (1 s).
    $signins++;
    my ($log, @posts);
    poll_until(5, sub {
        $log   = $srv->access_log_text // '';
        @posts = $log =~ m{ POST /oauth/authorize }g;
        @posts >= $signins && index($log, " GET /healthz?case=$password ") >= 0;
    });
    my $health_at = index($log, " GET /healthz?case=$password ");
    ok(@posts == $signins && $health_at >= 0 && $health_at < rindex($log, ' POST /oauth/authorize '),
        sprintf('%s: /healthz was answered before the sign-in (the worker\'s access log; here, %.0f ms before)', $password,
            1000 * ($signin_done - $health_done)));
}
done_testing;
