# The MCP transport and JSON-RPC layer against a real alyd (the test build,
# for its fixture tools): negotiation, sessions across workers, SSE answers,
# scope refusals, schema validation, and every kind of malformed input --
# each with the right status and JSON-RPC error, and the worker still serving.
use strict;
use warnings;
use Test::More;
use JSON::PP ();
use POSIX ();
use List::Util ();
use Alyd;

Alyd::watchdog(240);

my $srv = Alyd->start(workers => 2, bin => $ENV{ALYD_TEST}, extra => ['session_ttl 2s', 'rate_limit 100000/second burst=100000']);
my $url = $srv->url('/api/mcp');

sub ctl_ok { $srv->ctl(@_) }
my $ws  = ctl_ok('workspace', 'create', 'MCP tests');
my $ws2 = ctl_ok('workspace', 'create', 'Other');
my $key_sites  = ctl_ok('keys', 'create', '--workspace', $ws, '--scopes', 'read:sites');
my $key_orders = ctl_ok('keys', 'create', '--workspace', $ws, '--scopes', 'read:sites,read:orders');
my $key_other  = ctl_ok('keys', 'create', '--workspace', $ws2, '--scopes', 'read:orders');

my $ACCEPT = 'application/json, text/event-stream';

# post($body, key => K, session => S, accept => A, headers => [...]) -> (status, headers, body)
sub post {
    my ($body, %o) = @_;
    my @h = ('-H', 'Content-Type: ' . ($o{ctype} // 'application/json'), '-H', 'Accept: ' . ($o{accept} // $ACCEPT));
    push @h, '-H', 'Authorization: Bearer ' . ($o{key} // $key_sites) unless $o{anonymous};
    push @h, '-H', "Mcp-Session-Id: $o{session}" if $o{session};
    push @h, map { ('-H', $_) } @{ $o{headers} // [] };
    my @data = ref $body eq 'SCALAR' ? ('--data-binary', "\@${$body}") : ('--data-binary', $body);
    return Alyd::curl('-X', $o{method} // 'POST', @h, @data, $url);
}

sub rpc { JSON::PP->new->canonical->encode({ jsonrpc => '2.0', @_ }) }
sub j { my $v = Alyd::json_decode($_[0]); return $v // {} }

sub rpc_error {
    my ($body, $status, $code, $name, %o) = @_;
    my ($st, $hdr, $b) = post($body, %o);
    is($st, $status, "$name: HTTP $status");
    my $r = j($b);
    is($r->{error}{code}, $code, "$name: JSON-RPC error $code") or diag($b);
    return ($r, $hdr);
}

sub initialize {
    my (%o) = @_;
    my ($st, $hdr, $b) = post(rpc(id => 1, method => 'initialize',
        params => { protocolVersion => $o{version} // '2025-11-25', capabilities => {}, clientInfo => { name => 't', version => '1' } }), %o);
    return ($st, Alyd::header_value($hdr, 'mcp-session-id'), j($b));
}

# ---- negotiation and lifecycle ----
{
    my ($st, $sid, $r) = initialize(version => '2025-06-18');
    is($st, 200, 'initialize: 200');
    is($r->{result}{protocolVersion}, '2025-06-18', 'a supported version is echoed');
    like($sid // '', qr/^[\x21-\x7e]{32,}$/, 'session id: visible ASCII, long enough for 128 random bits');
    ($st, undef, $r) = initialize(version => '2024-01-01');
    is($r->{result}{protocolVersion}, '2025-11-25', 'an unsupported version gets our newest');
    ok($r->{result}{capabilities}{tools} && $r->{result}{capabilities}{logging}, 'capabilities advertised');
    is($r->{result}{serverInfo}{name}, 'alyd', 'serverInfo');
    ($st) = post(rpc(id => 1, method => 'initialize', params => { protocolVersion => '2025-11-25', capabilities => {}, clientInfo => {} }),
        session => 'mcp_doesnotexist');
    is($st, 200, 'initialize with a stale session id is never 404 (bridges would fall back to SSE)');
    my $hdr;
    ($st, $hdr) = post(rpc(method => 'notifications/initialized'));
    is($st, 202, 'a notification gets 202');
    ($st, $hdr, my $b) = post(rpc(id => 'p', method => 'ping'));
    is($b, '{"jsonrpc":"2.0","id":"p","result":{}}', 'ping answers {} and echoes a string id');
}

# ---- sessions: any worker, bound to the principal, ended by DELETE ----
{
    # Each worker in turn serves the session, the other stopped so that the shared listener's connections can only
    # go to it.  (Left to the kernel, all of a run of connections sometimes went to one worker, and waiting for the
    # access log to tell outlived the session: session_ttl is 2 s here, counted from initialize.)  Everything the
    # session is needed for is asked at once; the access log is read after the DELETE, from a mark taken once the
    # one ping above is in it (lines wait in the workers' buffers up to access_log_flush, 1 s).
    poll_until(5, sub { ($srv->access_log_text // '') =~ /ping 200 / });
    my $log_mark = length($srv->access_log_text // '');
    my ($st, $sid) = initialize();
    my @w = $srv->worker_pids;
    is(scalar @w, 2, 'two workers');
    my $ok = 0;
    for my $stopped (@w) {
        sleep 0.05;    # whatever a worker does after its last answer (a store write), it is done before it stops
        kill 'STOP', $stopped;
        for my $i (1 .. 3) {
            my ($s2, undef, $b) = post(rpc(id => $i, method => 'ping'), session => $sid, headers => ['Connection: close']);
            $ok++ if $s2 == 200 && j($b)->{result};
        }
        kill 'CONT', $stopped;
    }
    is($ok, 6, 'every request on the session succeeded: three with each worker stopped in turn');
    rpc_error(rpc(id => 1, method => 'ping'), 404, -32600, 'session of another principal', session => $sid, key => $key_orders);
    my ($ds) = post('', method => 'DELETE', session => $sid);
    is($ds, 204, 'DELETE ends the session');
    for my $try (1 .. 4) {
        my ($s3) = post(rpc(id => 1, method => 'ping'), session => $sid, headers => ['Connection: close']);
        is($s3, 404, "ended session is 404 on a new connection ($try)");
    }
    my ($dd) = post('', method => 'DELETE', session => $sid);
    is($dd, 404, 'DELETE of an ended session: 404');
    my %n;
    poll_until(5, sub {
        %n = ();
        $n{$_}++ for substr($srv->access_log_text // '', $log_mark) =~ /ping 200 \d+ \S+ \S+ (\d+)$/mg;
        List::Util::sum(0, values %n) >= 6;
    });
    ok(!(grep { ($n{$_} // 0) != 3 } @w), 'the access log has three of the session\'s pings from each worker ('
          . join(', ', map { "$_: " . ($n{$_} // 0) } @w) . ')');
    my ($dn) = post('', method => 'DELETE');
    is($dn, 400, 'DELETE without a session id: 400');
    ($st, my $exp) = initialize();
    sleep 3;
    rpc_error(rpc(id => 1, method => 'ping'), 404, -32600, 'expired session (session_ttl 2s)', session => $exp);
    rpc_error(rpc(id => 1, method => 'ping'), 404, -32600, 'unknown session', session => 'mcp_nope');

    # Expired sessions do not pile up: workers sweep them every 64 initializes.
    my $count = sub { (Alyd::json_decode(ctl_ok('--json', 'stats')) // {})->{environments}{store}{databases}{sessions} };
    my $before = $count->();
    initialize(headers => ['Connection: close']) for 1 .. 140;
    sleep 3;
    initialize(headers => ['Connection: close']) for 1 .. 140;
    my $after = $count->();
    cmp_ok($after, '<', $before + 280, "expired sessions were swept ($before before, 280 created, $after left)");
    my ($g) = Alyd::curl('-H', "Authorization: Bearer $key_sites", '-H', 'Accept: text/event-stream', $url);
    is($g, 405, 'GET without a session: 405');

    # The session's event stream stays open and sends a keep-alive comment every 20 s
    # (Node's fetch drops a stream silent for 300 s).
    my (undef, $live) = initialize();
    my ($gs, $gh, $gb) = Alyd::curl('-N', '--max-time', 23, '-H', "Authorization: Bearer $key_sites", '-H', 'Accept: text/event-stream',
        '-H', "Mcp-Session-Id: $live", $url);
    like(Alyd::header_value($gh, 'content-type') // '', qr{^text/event-stream}, 'GET with a session: an event stream');
    like($gb, qr/^: stream open$/m, 'the stream opens at once');
    like($gb, qr/^: keep-alive$/m, 'a keep-alive comment arrives within 20 s');
    my ($gw) = Alyd::curl('-H', "Authorization: Bearer $key_sites", '-H', 'Accept: application/json', '-H', "Mcp-Session-Id: $live", $url);
    is($gw, 406, 'GET with a session but without Accept: text/event-stream: 406');
}

# ---- the registry: listing, scope, validation ----
{
    my ($st, $hdr, $b) = post(rpc(id => 1, method => 'tools/list'));
    my $tools = j($b)->{result}{tools} // [];
    my ($scoped) = grep { $_->{name} eq 'aly_test_scoped' } @$tools;
    ok($scoped, 'tools/list lists tools the principal cannot call');
    is($scoped->{_meta}{'aly/scope'}, 'read:orders', 'a tool names its scope in _meta');
    is($scoped->{annotations}{readOnlyHint}, JSON::PP::true, 'annotations carried');
    ok(!grep({ !$_->{inputSchema} || $_->{inputSchema}{type} ne 'object' } @$tools), 'every inputSchema is an object schema');

    my $call = sub { rpc(id => 7, method => 'tools/call', params => { name => 'aly_test_scoped', arguments => $_[0] }) };
    my ($r, $h) = rpc_error($call->({ count => 1 }), 403, -32003, 'tool without its scope');
    my $www = Alyd::header_value($h, 'www-authenticate') // '';
    like($www, qr/error="insufficient_scope"/, '403: insufficient_scope challenge');
    like($www, qr/scope="read:sites read:orders"/, '403: scope lists held + required');
    like($r->{error}{message}, qr/read:orders/, '403: the message names the missing scope');

    ($st, $hdr, $b) = post($call->({ count => 3, tags => ['a'] }), key => $key_orders);
    my $res = j($b)->{result};
    is($st, 200, 'tool with its scope: 200');
    is($res->{structuredContent}{workspace}, $ws, 'the tool runs in the principal\'s workspace');
    is_deeply(j($res->{content}[0]{text}), $res->{structuredContent}, 'the text block is the same JSON as structuredContent');
    ($st, $hdr, $b) = post($call->({ count => 3 }), key => $key_other);
    is(j($b)->{result}{structuredContent}{workspace}, $ws2, 'a key of another workspace sees only its own');

    my @bad = (
        [{}, qr/count: is required/, 'missing required field'],
        [{ count => 0 }, qr/count: must be >= 1/, 'below minimum'],
        [{ count => 11 }, qr/count: must be <= 10/, 'above maximum'],
        [{ count => '3' }, qr/count: must be of type integer/, 'wrong type'],
        [{ count => 1, id => 'ord_short' }, qr/id: must match the pattern/, 'pattern for ids'],
        [{ count => 1, status => 'lost' }, qr/status: must be one of: pending, paid/, 'enum'],
        [{ count => 1, tags => ['toolong'] }, qr/tags\[0\]: must be at most 5 characters/, 'array item maxLength'],
        [{ count => 1, tags => [1, 2, 3, 4] }, qr/tags: must have at most 3 items/, 'maxItems'],
        [{ count => 1, extra => 1 }, qr/extra: is not a known field/, 'additionalProperties false'],
    );
    for my $case (@bad) {
        ($st, $hdr, $b) = post($call->($case->[0]), key => $key_orders);
        my $rr = j($b)->{result} // {};
        ok($st == 200 && $rr->{isError}, "schema violation ($case->[2]): isError result");
        like($rr->{content}[0]{text} // '', $case->[1], "schema violation ($case->[2]): names the field and the rule");
    }
    rpc_error(rpc(id => 1, method => 'tools/call', params => { name => 'no_such_tool' }), 200, -32602, 'unknown tool');
    rpc_error(rpc(id => 1, method => 'tools/call', params => { name => 'aly_test_scoped', arguments => [1] }), 200, -32602,
        'arguments not an object', key => $key_orders);
    rpc_error(rpc(id => 1, method => 'tools/list', params => { cursor => 'forged' }), 200, -32602, 'bad cursor');
    rpc_error(rpc(id => 1, method => 'logging/setLevel', params => { level => 'loud' }), 200, -32602, 'bad log level');
    rpc_error(rpc(id => 1, method => 'resources/read', params => { uri => 'test://nope' }), 200, -32002, 'unknown resource');
}

# ---- JSON or SSE ----
{
    my $body = rpc(id => 5, method => 'tools/call', params => { name => 'test_tool_with_progress', arguments => {}, _meta => { progressToken => 'tok' } });
    my ($st, $hdr, $b) = post($body);
    like(Alyd::header_value($hdr, 'content-type') // '', qr{^text/event-stream}, 'notifications first: the answer is an event stream');
    my @events = map { j($_) } $b =~ /^data: (.+)$/mg;
    my @progress = grep { ($_->{method} // '') eq 'notifications/progress' } @events;
    is(scalar @progress, 3, 'three progress notifications');
    is($progress[0]{params}{progressToken}, 'tok', 'progress carries the token');
    is($events[-1]{id}, 5, 'the response comes last');
    ($st, $hdr, $b) = post($body, accept => 'application/json');
    like(Alyd::header_value($hdr, 'content-type') // '', qr{^application/json}, 'a JSON-only client gets JSON');
    is(j($b)->{id}, 5, '... with the response');
    ($st, $hdr, $b) = post(rpc(id => 6, method => 'tools/call', params => { name => 'test_simple_text' }));
    like(Alyd::header_value($hdr, 'content-type') // '', qr{^application/json}, 'no notifications: plain JSON even when SSE is accepted');
}

# ---- notifications/cancelled ----
{
    # test_sampling holds its request open while it waits for the client's reply; cancelling it must end the
    # stream at once, without a response.
    my (undef, $sid) = initialize();
    my $out = $srv->dir . '/cancel.out';
    my $pid = fork // die;
    if ($pid == 0) {
        exec('curl', '-s', '-N', '--max-time', '30', '-o', $out, '-X', 'POST', '-H', "Authorization: Bearer $key_sites",
            '-H', 'Content-Type: application/json', '-H', "Accept: $ACCEPT", '-H', "Mcp-Session-Id: $sid", '--data',
            rpc(id => 9, method => 'tools/call', params => { name => 'test_sampling', arguments => { prompt => 'hi' } }), $url) or POSIX::_exit(127);
    }
    ok(Alyd::poll_until(10, sub { (Alyd::slurp($out) // '') =~ /sampling\/createMessage/ }), 'the server asked the client for sampling');
    my ($st) = post(rpc(method => 'notifications/cancelled', params => { requestId => 9, reason => 'user stopped' }), session => $sid);
    is($st, 202, 'notifications/cancelled: 202');
    my $t0 = time;
    my $done = Alyd::poll_until(5, sub { waitpid($pid, POSIX::WNOHANG()) == $pid });
    ok($done, sprintf('the cancelled request\'s stream ended (%.1fs after the cancel)', time - $t0));
    kill 'KILL', $pid unless $done;
    unlike(Alyd::slurp($out) // '', qr/"id":9,"result"/, 'and carried no response for the cancelled request');
    my ($ok) = post(rpc(id => 10, method => 'ping'), session => $sid);
    is($ok, 200, 'the session still serves');
}

# ---- batches (2025-03-26 only) ----
{
    my $batch = '[' . join(',', rpc(id => 1, method => 'ping'), rpc(method => 'notifications/x'), rpc(id => 2, method => 'nope'), '5') . ']';
    my ($st, $hdr, $b) = post($batch, headers => ['MCP-Protocol-Version: 2025-03-26']);
    my $r = Alyd::json_decode($b) // [];
    is($st, 200, 'batch: 200');
    is(scalar @$r, 3, 'batch: a response per request and per invalid message, none for notifications');
    is_deeply([map { $_->{error} ? $_->{error}{code} : 'ok' } @$r], ['ok', -32601, -32600], 'batch: results in order');
    rpc_error($batch, 400, -32600, 'batch under 2025-06-18', headers => ['MCP-Protocol-Version: 2025-06-18']);
    rpc_error('[]', 400, -32600, 'empty batch', headers => ['MCP-Protocol-Version: 2025-03-26']);
    my $big = '[' . join(',', (rpc(id => 1, method => 'ping')) x 10000) . ']';
    my $f = $srv->dir . '/big.json';
    Alyd::spew($f, $big);
    rpc_error(\$f, 400, -32600, '10 000-element batch', headers => ['MCP-Protocol-Version: 2025-03-26']);
    # The bound itself: 100 messages are served, 101 are refused whole, each message a distinct id.
    my $of = sub { '[' . join(',', map { rpc(id => $_, method => 'ping') } 1 .. $_[0]) . ']' };
    ($st, $hdr, $b) = post($of->(100), headers => ['MCP-Protocol-Version: 2025-03-26']);
    is($st, 200, 'a batch of 100: 200');
    is(scalar @{ Alyd::json_decode($b) // [] }, 100, '... with 100 answers');
    my ($r101) = rpc_error($of->(101), 400, -32600, 'a batch of 101', headers => ['MCP-Protocol-Version: 2025-03-26']);
    like($r101->{error}{message} // '', qr/at most 100/, 'a batch of 101: says the bound');
    ($st, $hdr, $b) = post('[' . rpc(method => 'notifications/x') . ']', headers => ['MCP-Protocol-Version: 2025-03-26']);
    is($st, 202, 'batch of notifications only: 202');
}

# ---- malformed input ----
{
    rpc_error('{"jsonrpc":"2.0","id":1,"method":', 400, -32700, 'invalid JSON');
    rpc_error('42', 400, -32600, 'JSON that is not an object');
    rpc_error('"ping"', 400, -32600, 'a JSON string');
    rpc_error(rpc(id => 1, method => 'ping', jsonrpc => '1.0'), 400, -32600, 'wrong jsonrpc version');
    rpc_error('{"id":1,"method":"ping"}', 400, -32600, 'missing jsonrpc');
    rpc_error('{"jsonrpc":"2.0","id":1.5,"method":"ping"}', 400, -32600, 'float id');
    rpc_error('{"jsonrpc":"2.0","id":true,"method":"ping"}', 400, -32600, 'boolean id');
    rpc_error('{"jsonrpc":"2.0","id":{},"method":"ping"}', 400, -32600, 'object id');
    rpc_error('{"jsonrpc":"2.0","id":1,"method":5}', 400, -32600, 'method not a string');
    rpc_error('{"jsonrpc":"2.0","id":1}', 400, -32600, 'no method, no result');
    rpc_error(rpc(id => 1, method => 'no/such/method'), 200, -32601, 'unknown method');
    rpc_error(rpc(id => 1, method => 'ping', params => [1]), 200, -32602, 'params of the wrong type');
    rpc_error(rpc(id => 1, method => 'tools/call', params => 'x'), 200, -32602, 'params a string');
    my $deep = ('[' x 10000) . (']' x 10000);
    my $f = $srv->dir . '/deep.json';
    Alyd::spew($f, $deep);
    rpc_error(\$f, 400, -32700, 'nesting 10 000 deep');
    my $utf = $srv->dir . '/utf.json';
    Alyd::spew($utf, qq({"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":"\xff\xfe"}}));
    rpc_error(\$utf, 400, -32700, 'invalid UTF-8');
    my $huge = $srv->dir . '/huge.json';
    Alyd::spew($huge, '{"jsonrpc":"2.0","id":1,"method":"ping","params":{"pad":"' . ('x' x (1024 * 1024 + 10)) . '"}}');
    my ($st) = post(\$huge);
    is($st, 413, 'body over max_request_body: 413');
    ($st) = post(\$huge, headers => []), my @h2 = Alyd::curl('--http2-prior-knowledge', '-X', 'POST', '-H', 'Content-Type: application/json',
        '-H', "Authorization: Bearer $key_sites", '--data-binary', "\@$huge", $url);
    is($h2[0], 413, 'body over max_request_body over h2c: 413');
    rpc_error(rpc(id => 1, method => 'ping'), 400, -32600, 'unsupported MCP-Protocol-Version', headers => ['MCP-Protocol-Version: 1999-01-01']);
    rpc_error(rpc(id => 1, method => 'ping'), 406, -32600, 'Accept without JSON or SSE', accept => 'text/html');
    rpc_error(rpc(id => 1, method => 'ping'), 415, -32600, 'Content-Type not JSON', ctype => 'text/plain');
    rpc_error(rpc(id => 1, method => 'ping'), 403, -32600, 'foreign Origin', headers => ['Origin: https://evil.example.com']);
    rpc_error(rpc(id => 1, method => 'ping'), 421, -32600, 'foreign Host (DNS rebinding)', headers => ['Host: evil.example.com']);
    my ($ok) = post(rpc(id => 1, method => 'ping'), headers => ['Origin: ' . $srv->url]);
    is($ok, 200, 'our own Origin is allowed');
    my ($hs) = Alyd::curl($srv->url('/healthz'));
    is($hs, 200, 'the workers still serve after all of the above');
    unlike(Alyd::slurp($srv->error_log) // '', qr/AddressSanitizer|runtime error/, 'no sanitizer report in the error log');
}

# The access log takes the method from the body: a quote, control bytes, a space, DEL and non-ASCII are each written as '?',
# so a method cannot end its line or forge a field.
{
    post('{"jsonrpc":"2.0","id":7,"method":"probe\\"\\n\\tforged\\u00e9\\u007f end"}');
    my $text = '';
    poll_until(5, sub { $text = $srv->access_log_text // ''; $text =~ /probe/ });
    my @lines = grep { /probe/ } split /\n/, $text;
    is(scalar @lines, 1, 'a method with a newline in it: one access log line');
    like($lines[0] // '', qr/ probe\?\?\?forged\?\?\?\?end \d{3} /, 'its quote, newline, tab, two UTF-8 bytes, DEL and space are each "?"');
    is(scalar(grep { /^\s*forged/ } split /\n/, $text), 0, 'no line starts with what followed the newline');
    unlike(Alyd::slurp($srv->error_log) // '', qr/AddressSanitizer|runtime error/, 'no sanitizer report after it either');
}

$srv->stop;
done_testing;
