# Session housekeeping and session streams under the master's signals:
#  - expired sessions are swept even when more than a sweep's scan of live
#    sessions sit in front of them in key order (the sweep resumes where it
#    stopped instead of starting over at the first key every time);
#  - an open GET event stream during HUP or QUIT ends cleanly: the worker
#    exits normally (it used to unlink the stream twice and crash, losing the
#    other requests it was serving).
use strict;
use warnings;
use Test::More;
use HTTP::Tiny;
use JSON::PP ();
use Time::HiRes qw(sleep time);
use Alyd;

Alyd::watchdog(300);

my @fast = ('rate_limit 1000000/second burst=1000000');
my $srv = Alyd->start(workers => 1, extra => [@fast]);
my $http = HTTP::Tiny->new(keep_alive => 1, timeout => 30);
my $init = JSON::PP->new->encode({ jsonrpc => '2.0', id => 1, method => 'initialize',
    params => { protocolVersion => '2025-11-25', capabilities => {}, clientInfo => { name => 't', version => '1' } } });

sub ctl { my ($s, @args) = @_; return $s->ctl(@args) }

sub key_for {
    my ($s) = @_;
    my $ws = ctl($s, 'workspace', 'create', 'Sessions');
    return ctl($s, 'keys', 'create', '--workspace', $ws, '--scopes', 'read:sites');
}

# n initializes over one keep-alive connection; returns the session ids.
sub open_sessions {
    my ($s, $key, $n) = @_;
    my @ids;
    for (1 .. $n) {
        my $r = $http->post($s->url('/api/mcp'), { content => $init, headers => {
            'content-type' => 'application/json', accept => 'application/json, text/event-stream',
            authorization => "Bearer $key" } });
        return @ids unless $r->{status} == 200;
        push @ids, $r->{headers}{'mcp-session-id'};
    }
    return @ids;
}

sub session_records {
    my $stats = Alyd::json_decode(ctl($srv, '--json', 'stats'));
    return $stats->{environments}{store}{databases}{sessions};
}

# --- expired sessions behind more than a sweep's worth of live ones --------
# 1100 long-lived sessions first (more than the 1000 a sweep looks at), then
# 200 short-lived ones, interleaved with them in key order, left to expire.
# Reloads with session_ttl, and waits until the old worker is gone, so every
# session from here on is made under the new setting (on a new connection).
sub reload_ttl {
    my ($ttl, $gen) = @_;
    my @old = $srv->worker_pids;
    $srv->write_conf(extra => [@fast, "session_ttl $ttl"]);
    ok($srv->signal('HUP'), "HUP: session_ttl $ttl");
    ok($srv->wait_log(qr/reloaded: generation $gen/, 20) && Alyd::poll_until(20, sub { !grep { Alyd::proc_alive($_) } @old }),
       'reloaded, the old worker gone');
    $http = HTTP::Tiny->new(keep_alive => 1, timeout => 30);
}

my $key = key_for($srv);
reload_ttl('1h', 2);
is(scalar(open_sessions($srv, $key, 1100)), 1100, '1100 live sessions opened');
reload_ttl('4s', 3);
my @old = open_sessions($srv, $key, 200);
is(scalar @old, 200, '200 sessions opened with session_ttl 4s');
sleep 4.5;    # those expire
# Two sweeps' worth of initializes (under a long session_ttl again, so none of
# them expires meanwhile): between them the sweeps must find all 200.
reload_ttl('1h', 4);
is(scalar(open_sessions($srv, $key, 128)), 128, '128 more sessions (two sweeps)');
is(session_records(), 1228, 'every expired session was swept: the 1100 + 128 live ones remain');

my $r = $http->post($srv->url('/api/mcp'), { content => JSON::PP->new->encode({ jsonrpc => '2.0', id => 2, method => 'ping' }),
    headers => { 'content-type' => 'application/json', accept => 'application/json, text/event-stream',
        authorization => "Bearer $key", 'mcp-session-id' => $old[0], 'mcp-protocol-version' => '2025-11-25' } });
is($r->{status}, 404, 'an expired (swept) session is unknown: 404');

# --- an open GET stream while the master reloads or drains ----------------
for my $sig (qw(HUP QUIT)) {
    my $s = $sig eq 'HUP' ? $srv : Alyd->start(workers => 1);
    my $k = $sig eq 'HUP' ? $key : key_for($s);
    my ($sid) = open_sessions($s, $k, 1);
    ok(defined $sid, "$sig: a session for the stream");
    my @workers = $s->worker_pids;
    my $out = $s->dir . "/stream-$sig.txt";
    my $pid = fork // die;
    if ($pid == 0) {
        exec('curl', '-sN', '--max-time', '20', '-H', "Authorization: Bearer $k", '-H', 'Accept: text/event-stream',
             '-H', "Mcp-Session-Id: $sid", '-H', 'MCP-Protocol-Version: 2025-11-25', '-o', $out, $s->url('/api/mcp'));
        exit 127;
    }
    ok(Alyd::poll_until(10, sub { (Alyd::slurp($out) // '') =~ /stream open/ }), "$sig: the event stream is open");
    ok($s->signal($sig), "$sig sent");
    ok(Alyd::poll_until(15, sub { !grep { Alyd::proc_alive($_) } @workers }), "$sig: the old worker exited");
    waitpid($pid, 0);
    my $log = $s->error_log_text // '';
    unlike($log, qr/killed by signal/, "$sig: no worker was killed by a signal");
    if ($sig eq 'HUP') {
        my ($st) = Alyd::curl($s->url('/healthz'));
        is($st, 200, 'HUP: the new worker serves');
    } else {
        ok(defined $s->wait_exit(15), 'QUIT: alyd exited');
    }
}

done_testing;
