# "volatile redis://" carries what a request on one host leaves for a
# request on another: a legacy session's server->client request
# (elicitation/create) asked on host A is answered by a POST that lands on
# host B, and the call on A completes with that answer; a modern
# requestState is used once across hosts (answered on B, replayed on A:
# refused).  The two hosts share the durable store (a legacy session must be
# known to both) but not their volatile directories, so only Redis can carry
# the reply and the single-use mark.
use strict;
use warnings;
use Test::More;
use IO::Select;
use IO::Socket::INET;
use JSON::PP ();
use Alyd;
use AlyRedis;

plan skip_all => 'redis-server and redis-cli are not installed (scripts/install-deps --test installs them)' unless AlyRedis->available;
Alyd::watchdog(120);

my $redis = AlyRedis->start;
my @conf = ('volatile ' . $redis->url, 'rate_limit 100000/second burst=100000');
my $a = Alyd->start(workers => 1, extra => \@conf);
my $ws = $a->ctl('workspace', 'create', 'Hand-over');
my %k = %{ Alyd::json_decode($a->ctl('--json', 'keys', 'create', '--workspace', $ws, '--scopes',
    'read:sites,write:sites,read:content,write:content')) };
my $b = AlyRedis::twin($a, workers => 1, extra => \@conf);
my $json = JSON::PP->new->canonical;
my $MODERN = '2026-07-28';

sub j { Alyd::json_decode($_[0]) // {} }

sub response_of {
    my ($body) = @_;
    return j($body) unless ($body // '') =~ /^(event|data|:)/m;
    my ($r) = grep { exists $_->{id} } reverse map { j($_) } $body =~ /^data: (.*)$/mg;
    return $r // {};
}

# A modern tools/call on $host: the result (or the error).
sub modern {
    my ($host, $params) = @_;
    my $body = $json->encode({ jsonrpc => '2.0', id => 1, method => 'tools/call', params => { %$params, _meta => {
        'io.modelcontextprotocol/protocolVersion' => $MODERN, 'io.modelcontextprotocol/clientCapabilities' => { elicitation => {} },
        'io.modelcontextprotocol/clientInfo' => { name => 't', version => '1' } } } });
    my (undef, undef, $b) = Alyd::curl('-X', 'POST', '-H', 'Content-Type: application/json', '-H', 'Accept: application/json, text/event-stream',
        '-H', "Authorization: Bearer $k{key}", '-H', "MCP-Protocol-Version: $MODERN", '-H', 'Mcp-Method: tools/call',
        '-H', "Mcp-Name: $params->{name}", '--data-binary', $body, $host->url('/api/mcp'));
    my $r = response_of($b);
    return $r->{result} // $r->{error} // {};
}
sub tool { my ($host, $name, $args) = @_; modern($host, { name => $name, arguments => $args // {} }) }

my $north = tool($a, 'sites.create', { name => 'North Shop', domain => 'north.example', currency => 'EUR' })->{structuredContent}{id};
my $south = tool($b, 'sites.create', { name => 'South Shop', domain => 'south.example', currency => 'EUR' })->{structuredContent}{id};
ok($north && $south, 'two sites, made through either host');

# ---- legacy: asked on A, answered through B ----
my (undef, $hdr) = Alyd::curl('-X', 'POST', '-H', 'Content-Type: application/json', '-H', 'Accept: application/json, text/event-stream',
    '-H', "Authorization: Bearer $k{key}", '--data', $json->encode({ jsonrpc => '2.0', id => 1, method => 'initialize',
    params => { protocolVersion => '2025-11-25', capabilities => { elicitation => {} }, clientInfo => { name => 't', version => '1' } } }),
    $a->url('/api/mcp'));
my $sid = Alyd::header_value($hdr, 'mcp-session-id');
ok($sid, 'a legacy session on host A that declared elicitation');

my $call = $json->encode({ jsonrpc => '2.0', id => 'call-1', method => 'tools/call',
    params => { name => 'products.create', arguments => { title => 'Kettle', price => 1500, sku => 'KETTLE' } } });
my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $a->port, Proto => 'tcp') or die "connect: $!";
$s->syswrite("POST /api/mcp HTTP/1.1\r\nHost: 127.0.0.1:" . $a->port . "\r\nContent-Type: application/json\r\n"
    . "Accept: application/json, text/event-stream\r\nAuthorization: Bearer $k{key}\r\nMcp-Session-Id: $sid\r\n"
    . "MCP-Protocol-Version: 2025-11-25\r\nContent-Length: " . length($call) . "\r\nConnection: close\r\n\r\n$call");
my $got = '';
my $read = sub {
    my ($re) = @_;
    my $deadline = time + 10 * $Alyd::SCALE;
    my $sel = IO::Select->new($s);
    while ($got !~ $re && time < $deadline) {
        next unless $sel->can_read(1);
        my $n = $s->sysread(my $chunk, 65536);
        last if defined $n && $n == 0;
        $got .= $chunk if $n;
    }
    return $got =~ $re ? $1 : undef;
};
my $q = j($read->(qr/data: (\{[^\n]*"method":"elicitation\/create"[^\n]*\})/));
like($q->{id} // '', qr/^aly-/, 'host A asks on the call\'s stream');
is($redis->cli('GET', "aly:{$q->{id}}:p"), $k{id}, 'the pending request is in Redis, naming its principal');
my $pttl = $redis->cli('PTTL', "aly:{$q->{id}}:p") // -1;
ok($pttl > 0 && $pttl <= 120000, 'and expires') or diag($pttl);

# Another workspace's key answers that question through host B first, on a session of its own: set aside.
{
    my $ws2 = $a->ctl('workspace', 'create', 'Other');
    my $key2 = $a->ctl('keys', 'create', '--workspace', $ws2, '--scopes', 'read:sites');
    my @h2 = ('-H', 'Content-Type: application/json', '-H', 'Accept: application/json, text/event-stream', '-H', "Authorization: Bearer $key2");
    my (undef, $h) = Alyd::curl('-X', 'POST', @h2, '--data', $json->encode({ jsonrpc => '2.0', id => 1, method => 'initialize',
        params => { protocolVersion => '2025-11-25', capabilities => {}, clientInfo => { name => 't', version => '1' } } }), $b->url('/api/mcp'));
    my $sid2 = Alyd::header_value($h, 'mcp-session-id') // '';
    my ($fs) = Alyd::curl('-X', 'POST', @h2, '-H', "Mcp-Session-Id: $sid2", '-H', 'MCP-Protocol-Version: 2025-11-25', '--data',
        $json->encode({ jsonrpc => '2.0', id => $q->{id}, result => { action => 'accept', content => { site_id => $north } } }),
        $b->url('/api/mcp'));
    is($fs, 202, 'host B takes a reply from another workspace\'s key (202)');
    is($redis->cli('EXISTS', "aly:{$q->{id}}:r"), 0, 'but hands nothing over: no reply in Redis for that question');
}

my ($st) = Alyd::curl('-X', 'POST', '-H', 'Content-Type: application/json', '-H', 'Accept: application/json, text/event-stream',
    '-H', "Authorization: Bearer $k{key}", '-H', "Mcp-Session-Id: $sid", '-H', 'MCP-Protocol-Version: 2025-11-25', '--data',
    $json->encode({ jsonrpc => '2.0', id => $q->{id}, result => { action => 'accept', content => { site_id => $south } } }),
    $b->url('/api/mcp'));
is($st, 202, 'host B takes the answer');
my $result = j($read->(qr/(\{"jsonrpc"[^\n]*"id":"call-1"[^\n]*\})/))->{result} // {};
is($result->{structuredContent}{site_id}, $south, 'the call on host A completes with the answer given to host B')
  or diag($json->encode($result), $got);
ok(Alyd::poll_until(5, sub { ($redis->cli('EXISTS', "aly:{$q->{id}}:p", "aly:{$q->{id}}:r") // -1) == 0 }, 0.05),
    'and the pending request and its reply are gone from Redis');
close $s;

# ---- modern: a requestState answers once, whichever host sees it ----
my $create = { title => 'Teapot', price => 900, sku => 'POT' };
my $r = tool($a, 'products.create', $create);
is($r->{resultType}, 'input_required', 'host A asks which site') or diag($json->encode($r));
my $state = $r->{requestState};
my $answer = sub {
    my ($host, $site) = @_;
    modern($host, { name => 'products.create', arguments => $create, requestState => $state,
        inputResponses => { site => { action => 'accept', content => { site_id => $site } } } });
};
$r = $answer->($b, $north);
is($r->{structuredContent}{site_id}, $north, 'answered on host B: the product goes into the chosen site') or diag($json->encode($r));
my @marks = split /\n/, $redis->cli('--raw', 'KEYS', 'aly:{s:*}:s') // '';
is(scalar @marks, 1, 'the use is marked in Redis (aly:{s:MAC}:s)');
$pttl = $redis->cli('PTTL', $marks[0] // 'none') // -1;
ok($pttl > 0 && $pttl <= 600000, 'the mark expires with the state (ten minutes)') or diag($pttl);
$r = $answer->($a, $south);
is($r->{code}, -32602, 'the same requestState replayed on host A: refused') or diag($json->encode($r));
like($r->{message} // '', qr/already used/, 'it says the state was used');
my $products = tool($a, 'products.list', { site_id => $south })->{structuredContent}{products} // [];
ok(!grep({ $_->{sku} eq 'POT' } @$products), 'the replay wrote nothing');

$_->stop for $a, $b;
done_testing();
