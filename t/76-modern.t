# The modern era (MCP 2026-07-28) beside the legacy one on /api/mcp, against
# the test build: Claude Code's discover probe and what follows it, the
# fields every modern result carries, the standard headers, and every bad
# input the stateless path must refuse -- each with its status and JSON-RPC
# code, nothing written, no session made, the workers still serving.  Also
# multi round-trip requests (requestState sealed, bound and short-lived) for
# tools, prompts and resource reads, and on a legacy session the same
# handlers asking with real elicitation and sampling requests; logging and
# progress only on request; a client that resets its stream before its
# request is whole (h2cancel.py); and the loopback aliases of the Origin check.
use strict;
use warnings;
use Test::More;
use JSON::PP ();
use Digest::SHA qw(hmac_sha256);
use MIME::Base64 qw(encode_base64url decode_base64url encode_base64);
use Alyd;

Alyd::watchdog(240);

my $srv = Alyd->start(workers => 2, bin => $ENV{ALYD_TEST}, extra => ['rate_limit 100000/second burst=100000']);
my $url = $srv->url('/api/mcp');

sub ctl_ok { $srv->ctl(@_) }
my $ws    = ctl_ok('workspace', 'create', 'Modern tests');
my $ws2   = ctl_ok('workspace', 'create', 'Other');
my $key   = ctl_ok('keys', 'create', '--workspace', $ws,  '--scopes', 'read:sites,write:sites');
my $key2  = ctl_ok('keys', 'create', '--workspace', $ws2, '--scopes', 'read:sites,write:sites');
my $MODERN = '2026-07-28';
my $CAPS   = { elicitation => {}, roots => { listChanged => JSON::PP::true } };
my $json   = JSON::PP->new->canonical;
my $next_id = 1;

sub j { my $v = Alyd::json_decode($_[0]); return $v // {} }

# The Mcp-Name a modern request repeats from its body, if any.
sub name_of {
    my ($method, $params) = @_;
    return $params->{name} if $method eq 'tools/call' || $method eq 'prompts/get';
    return $params->{uri}  if $method eq 'resources/read';
    return undef;
}

# modern($method, $params, %o) -> (status, headers, body, decoded).  Builds a
# well-formed modern request; o{meta} replaces _meta (undef: none), o{headers}
# replaces or removes (value undef) standard headers, o{raw} is the whole body.
sub modern {
    my ($method, $params, %o) = @_;
    $params = { %{ $params // {} } };
    my $meta = exists $o{meta} ? $o{meta}
      : { 'io.modelcontextprotocol/protocolVersion' => $MODERN, 'io.modelcontextprotocol/clientCapabilities' => $o{caps} // $CAPS,
          'io.modelcontextprotocol/clientInfo' => { name => 't', version => '1' }, %{ $o{meta_extra} // {} } };
    $params->{_meta} = $meta if defined $meta;
    my %h = ('MCP-Protocol-Version' => $MODERN, 'Mcp-Method' => $method);
    my $n = name_of($method, $params);
    $h{'Mcp-Name'} = $n if defined $n;
    while (my ($k, $v) = each %{ $o{headers} // {} }) {
        delete $h{$_} for grep { lc $_ eq lc $k } keys %h;
        $h{$k} = $v if defined $v;
    }
    my $body = $o{raw} // $json->encode({ jsonrpc => '2.0', (exists $o{id} ? (defined $o{id} ? (id => $o{id}) : ()) : (id => $next_id++)),
        method => $method, params => $params });
    my @args = ('-X', 'POST', '-H', 'Content-Type: application/json', '-H', 'Accept: ' . ($o{accept} // 'application/json, text/event-stream'),
        '-H', 'Authorization: Bearer ' . ($o{key} // $key));
    push @args, '-H', "$_: $h{$_}" for sort keys %h;
    push @args, map { ('-H', $_) } @{ $o{extra_headers} // [] };
    my ($st, $hdr, $b) = Alyd::curl(@args, '--data-binary', $body, $url);
    return ($st, $hdr, $b, response_of($b));
}

# The JSON-RPC response in a JSON or SSE body (the last message with an id).
sub response_of {
    my ($b) = @_;
    return j($b) unless ($b // '') =~ /^(event|data|:)/m;
    my @msgs = map { j($_) } $b =~ /^data: (.*)$/mg;
    my ($r) = grep { exists $_->{id} } reverse @msgs;
    return $r // {};
}

sub sse_messages { my ($b) = @_; return map { j($_) } ($b // '') =~ /^data: (.*)$/mg }

sub site_count {
    my (undef, undef, undef, $r) = modern('tools/call', { name => 'sites.list', arguments => {} });
    return scalar @{ $r->{result}{structuredContent}{sites} // [] };
}

sub session_count {
    my $stats = Alyd::json_decode(ctl_ok('--json', 'stats'));
    return $stats->{environments}{store}{databases}{sessions} // 0;
}

my @pids = $srv->worker_pids;
my $create = { name => 'sites.create', arguments => { name => 'Shop', domain => 'shop.example', currency => 'EUR' } };

# A refused modern request: the status, the code, and the id echoed.
sub refused {
    my ($what, $status, $code, $method, $params, %o) = @_;
    my ($st, $hdr, $b, $r) = modern($method, $params, id => "bad-$next_id", %o);
    $next_id++;
    is($st, $status, "$what: HTTP $status");
    is($r->{error}{code}, $code, "$what: JSON-RPC error $code") or diag($b);
    return $r;
}

# ---- Claude Code's probe, then a modern session-less conversation ----
{
    my ($st, $hdr, $b, $r) = modern('server/discover', {}, id => 'server-discover-probe-1',
        meta => { 'io.modelcontextprotocol/protocolVersion' => $MODERN, 'io.modelcontextprotocol/clientCapabilities' => $CAPS });
    is($st, 200, 'discover (Claude Code probe): 200');
    is($r->{id}, 'server-discover-probe-1', 'discover: the probe id echoed');
    my $d = $r->{result} // {};
    is($d->{resultType}, 'complete', 'discover: resultType complete');
    is_deeply($d->{supportedVersions}, [$MODERN], 'discover: supportedVersions');
    ok(ref $d->{capabilities}{tools} eq 'HASH' && ref $d->{capabilities}{resources} eq 'HASH' && ref $d->{capabilities}{prompts} eq 'HASH',
        'discover: tools, resources and prompts declared');
    ok(!exists $d->{capabilities}{tools}{listChanged} && !exists $d->{capabilities}{resources}{subscribe},
        'discover: no listChanged or subscribe (no subscriptions/listen)');
    ok(defined $d->{ttlMs} && $d->{ttlMs} =~ /^\d+$/, 'discover: integer ttlMs');
    like($d->{cacheScope} // '', qr/^(public|private)$/, 'discover: cacheScope');
    is($d->{_meta}{'io.modelcontextprotocol/serverInfo'}{name}, 'alyd', 'discover: serverInfo in result _meta');
    ok(!exists $d->{serverInfo} && !exists $d->{protocolVersion}, 'discover: nothing of initialize in the body');
    ok(length($d->{instructions} // ''), 'discover: instructions');
    ok(!defined Alyd::header_value($hdr, 'mcp-session-id'), 'discover: no session');

    ($st, $hdr, $b, $r) = modern('tools/list', {});
    is($st, 200, 'modern tools/list: 200');
    is($r->{result}{resultType}, 'complete', 'tools/list: resultType');
    is($r->{result}{cacheScope}, 'public', 'tools/list: the same for every credential, so public');
    ok($r->{result}{ttlMs} > 0, 'tools/list: ttlMs');
    ok((grep { $_->{name} eq 'sites.list' } @{ $r->{result}{tools} // [] }), 'tools/list: sites.list listed');

    ($st, $hdr, $b, $r) = modern('tools/call', { name => 'sites.list', arguments => {} });
    is($st, 200, 'modern tools/call sites.list: 200');
    is($r->{result}{resultType}, 'complete', 'tools/call: resultType');
    ok(!exists $r->{result}{ttlMs} && !exists $r->{result}{cacheScope}, 'tools/call: no caching hints');
    is_deeply($r->{result}{structuredContent}{sites}, [], 'tools/call: no sites yet');
    ok(!defined Alyd::header_value($hdr, 'mcp-session-id'), 'tools/call: no session');
    # The second call is served from the result cache: it must be modern too.
    ($st, $hdr, $b, $r) = modern('tools/call', { name => 'sites.list', arguments => {} });
    is($r->{result}{resultType}, 'complete', 'a cached result still carries resultType on the modern path');

    ($st, $hdr, $b, $r) = modern('resources/list', {});
    is($r->{result}{cacheScope}, 'public', 'resources/list: public');
    ($st, $hdr, $b, $r) = modern('resources/read', { uri => 'test://static-text' });
    is($st, 200, 'modern resources/read: 200');
    is($r->{result}{cacheScope}, 'private', 'resources/read: what a credential may read is its own, so private');
    ok(defined $r->{result}{ttlMs} && $r->{result}{ttlMs} =~ /^\d+$/, 'resources/read: integer ttlMs');
    ($st, $hdr, $b, $r) = modern('resources/templates/list', {});
    ok(defined $r->{result}{ttlMs}, 'resources/templates/list: ttlMs');
    ($st, $hdr, $b, $r) = modern('prompts/list', {});
    ok(defined $r->{result}{ttlMs}, 'prompts/list: ttlMs');
}

# ---- legacy replies stay as they were ----
{
    my @h = ('-X', 'POST', '-H', 'Content-Type: application/json', '-H', 'Accept: application/json, text/event-stream',
        '-H', "Authorization: Bearer $key");
    # The session declares elicitation: a legacy handler asks only a client that said it can answer.
    my ($st, $hdr, $b) = Alyd::curl(@h, '--data', $json->encode({ jsonrpc => '2.0', id => 1, method => 'initialize',
        params => { protocolVersion => '2025-11-25', capabilities => { elicitation => {} },
        clientInfo => { name => 't', version => '1' } } }), $url);
    my $sid = Alyd::header_value($hdr, 'mcp-session-id');
    is(j($b)->{result}{protocolVersion}, '2025-11-25', 'legacy initialize still negotiates 2025-11-25');
    unlike($b, qr/resultType|ttlMs|cacheScope/, 'legacy initialize: no modern fields');
    ($st, $hdr, $b) = Alyd::curl(@h, '-H', "Mcp-Session-Id: $sid", '-H', 'MCP-Protocol-Version: 2025-11-25', '--data',
        '{"jsonrpc":"2.0","id":2,"method":"tools/list"}', $url);
    is($st, 200, 'legacy tools/list: 200');
    unlike($b, qr/"resultType"|"ttlMs"|"cacheScope"|serverInfo/, 'legacy tools/list: byte-for-byte the legacy result');
    # sites.list was answered on the modern path above, so this one comes from the result cache that call filled.
    ($st, $hdr, $b) = Alyd::curl(@h, '-H', "Mcp-Session-Id: $sid", '-H', 'MCP-Protocol-Version: 2025-11-25', '--data',
        '{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"sites.list","arguments":{}}}', $url);
    is($st, 200, 'legacy tools/call sites.list: 200');
    like($b, qr/^\{"jsonrpc":"2.0","id":5,"result":\{"content":\[/, 'legacy tools/call: the result opens with content, as before');
    unlike($b, qr/"resultType"|"ttlMs"|"cacheScope"|serverInfo/, 'legacy tools/call from a cache the modern path filled: no modern field');
    ($st, $hdr, $b) = Alyd::curl(@h, '-H', "Mcp-Session-Id: $sid", '-H', 'MCP-Protocol-Version: 2025-11-25', '--data',
        '{"jsonrpc":"2.0","id":6,"method":"resources/read","params":{"uri":"test://static-text"}}', $url);
    unlike($b, qr/"resultType"|"ttlMs"|"cacheScope"|serverInfo/, 'legacy resources/read: no modern field');
    ($st, $hdr, $b) = Alyd::curl(@h, '-H', "Mcp-Session-Id: $sid", '--data',
        '{"jsonrpc":"2.0","id":3,"method":"resources/read","params":{"uri":"test://nope"}}', $url);
    is(j($b)->{error}{code}, -32002, 'legacy: a missing resource is still -32002');
    my (undef, undef, undef, $r) = modern('resources/read', { uri => 'test://nope' });
    is($r->{error}{code}, -32602, 'modern: a missing resource is -32602');
    is($r->{error}{data}{uri}, 'test://nope', 'modern: data.uri names it');

    # The same handler on a legacy session: its question goes out as a real
    # elicitation/create on the call's stream, and the answer posted back
    # completes the call.
    my $ask = sub { # posts a tools/call on the session; returns a reader of its stream
        my ($session, $body) = @_;
        return Alyd::post_stream($srv->port, $body, "Authorization: Bearer $key", "Mcp-Session-Id: $session");
    };
    my $asked = qr/data: (\{[^\n]*"method":"elicitation\/create"[^\n]*\})/;
    my $read_until = $ask->($sid, '{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"test_input_required_result_elicitation"}}');
    ok($read_until->($asked), 'legacy session: the handler asks with a real elicitation/create');
    my ($q) = $read_until->() =~ $asked;
    my $qid = j($q)->{id} // '';
    # Another workspace's key answers that question first, on its own session, on fresh connections (so on either
    # worker: the one holding the call, and the other, which hands replies over through the volatile store).
    my (undef, $h2) = Alyd::curl('-X', 'POST', '-H', 'Content-Type: application/json', '-H', 'Accept: application/json, text/event-stream',
        '-H', "Authorization: Bearer $key2", '--data', $json->encode({ jsonrpc => '2.0', id => 1, method => 'initialize',
        params => { protocolVersion => '2025-11-25', capabilities => { elicitation => {} }, clientInfo => { name => 't', version => '1' } } }),
        $url);
    my $sid_b = Alyd::header_value($h2, 'mcp-session-id');
    my @foreign = map {
        (Alyd::curl('-X', 'POST', '-H', 'Content-Type: application/json', '-H', 'Accept: application/json, text/event-stream',
            '-H', "Authorization: Bearer $key2", '-H', "Mcp-Session-Id: $sid_b", '--data',
            $json->encode({ jsonrpc => '2.0', id => $qid, result => { action => 'accept', content => { name => 'Mallory' } } }), $url))[0]
    } 1 .. 6;
    is(join(',', @foreign), '202,202,202,202,202,202', 'a reply from another credential to that question: taken (202) and set aside');
    # Cancels naming the call's request id from another credential, and from the same key on another session.
    my (undef, $h3) = Alyd::curl(@h, '--data', $json->encode({ jsonrpc => '2.0', id => 1, method => 'initialize',
        params => { protocolVersion => '2025-11-25', capabilities => {}, clientInfo => { name => 't', version => '1' } } }), $url);
    my $sid_c = Alyd::header_value($h3, 'mcp-session-id');
    my $cancel = $json->encode({ jsonrpc => '2.0', method => 'notifications/cancelled', params => { requestId => 4 } });
    my @cancels = map {
        (Alyd::curl('-X', 'POST', '-H', 'Content-Type: application/json', '-H', 'Accept: application/json, text/event-stream',
            '-H', "Authorization: Bearer $_->[0]", '-H', "Mcp-Session-Id: $_->[1]", '--data', $cancel, $url))[0]
    } ([$key2, $sid_b]) x 3, ([$key, $sid_c]) x 3;
    is(join(',', @cancels), '202,202,202,202,202,202', 'cancels of that request id from another credential or session: 202');
    ok(!$read_until->(qr/Hello, /, 2), 'the call waits on: no other credential\'s answer completes it') or diag($read_until->());
    ($st) = Alyd::curl(@h, '-H', "Mcp-Session-Id: $sid", '--data',
        $json->encode({ jsonrpc => '2.0', id => $qid, result => { action => 'accept', content => { name => 'Ada' } } }), $url);
    is($st, 202, 'legacy session: the answer is accepted');
    # A cancelled call would end its stream with no response: completing shows the foreign cancels did nothing.
    ok($read_until->(qr/Hello, Ada!/), 'legacy session: the handler ran again with the answer and completed') or diag($read_until->());
    unlike($read_until->(), qr/Mallory/, 'with its own client\'s answer, not the other credential\'s');
    unlike($read_until->(), qr/input_required|requestState/, 'legacy session: nothing of the modern round trip on the wire');

    # Sampling goes the same way, on a session that declared it.
    (undef, $hdr) = Alyd::curl(@h, '--data', $json->encode({ jsonrpc => '2.0', id => 1, method => 'initialize',
        params => { protocolVersion => '2025-11-25', capabilities => { sampling => {} }, clientInfo => { name => 't', version => '1' } } }), $url);
    my $sid2 = Alyd::header_value($hdr, 'mcp-session-id');
    $asked = qr/data: (\{[^\n]*"method":"sampling\/createMessage"[^\n]*\})/;
    $read_until = $ask->($sid2, '{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"test_input_required_result_sampling"}}');
    ok($read_until->($asked), 'legacy session: the same handler asks with a real sampling/createMessage');
    ($q) = $read_until->() =~ $asked;
    ($st) = Alyd::curl(@h, '-H', "Mcp-Session-Id: $sid2", '--data', $json->encode({ jsonrpc => '2.0', id => j($q)->{id} // '',
        result => { role => 'assistant', content => { type => 'text', text => 'Paris' }, model => 'test-model' } }), $url);
    is($st, 202, 'legacy session: the sampling answer is accepted');
    ok($read_until->(qr/Sampling result: Paris/), 'legacy session: the handler completed with the sampled text') or diag($read_until->());
}

# ---- bad input on the modern path: right status and code, nothing written ----
my $sessions_before = session_count();
refused('_meta missing', 400, -32602, 'tools/call', $create, meta => undef);
refused('_meta not an object', 400, -32602, 'tools/call', $create, meta => 'x');
refused('protocolVersion not a string', 400, -32602, 'tools/call', $create,
    meta => { 'io.modelcontextprotocol/protocolVersion' => 20260728, 'io.modelcontextprotocol/clientCapabilities' => {} });
refused('clientCapabilities missing', 400, -32602, 'tools/call', $create,
    meta => { 'io.modelcontextprotocol/protocolVersion' => $MODERN });
refused('clientCapabilities not an object', 400, -32602, 'tools/call', $create,
    meta => { 'io.modelcontextprotocol/protocolVersion' => $MODERN, 'io.modelcontextprotocol/clientCapabilities' => [] });
refused('a modern header without _meta', 400, -32602, 'tools/list', {}, meta => undef);
refused('MCP-Protocol-Version header differs from _meta', 400, -32020, 'tools/call', $create,
    headers => { 'MCP-Protocol-Version' => '2025-11-25' });
refused('MCP-Protocol-Version header missing', 400, -32020, 'tools/call', $create, headers => { 'MCP-Protocol-Version' => undef });
my $r = refused('unsupported version v999.0.0', 400, -32022, 'tools/call', $create,
    headers => { 'MCP-Protocol-Version' => 'v999.0.0' },
    meta => { 'io.modelcontextprotocol/protocolVersion' => 'v999.0.0', 'io.modelcontextprotocol/clientCapabilities' => {} });
is_deeply($r->{error}{data}, { supported => [$MODERN], requested => 'v999.0.0' }, 'v999.0.0: data.supported and data.requested');
refused('a claim of 2025-11-25', 400, -32022, 'tools/list', {}, headers => { 'MCP-Protocol-Version' => '2025-11-25' },
    meta => { 'io.modelcontextprotocol/protocolVersion' => '2025-11-25', 'io.modelcontextprotocol/clientCapabilities' => {} });
refused('Mcp-Method missing', 400, -32020, 'tools/call', $create, headers => { 'Mcp-Method' => undef });
refused('Mcp-Method differs from the body', 400, -32020, 'tools/call', $create, headers => { 'Mcp-Method' => 'tools/list' });
refused('Mcp-Method in another case', 400, -32020, 'tools/list', {}, headers => { 'Mcp-Method' => 'TOOLS/LIST' });
refused('Mcp-Name missing', 400, -32020, 'tools/call', $create, headers => { 'Mcp-Name' => undef });
refused('Mcp-Name differs from params.name', 400, -32020, 'tools/call', $create, headers => { 'Mcp-Name' => 'sites.list' });
refused('Mcp-Name with malformed Base64', 400, -32020, 'tools/call', $create, headers => { 'Mcp-Name' => '=?base64?c2l0ZXMu!!!Y3JlYXRl?=' });
refused('Mcp-Name Base64 with bad padding', 400, -32020, 'tools/call', $create, headers => { 'Mcp-Name' => '=?base64?c2l0ZXMuY3JlYXRl=?=' });
refused('Mcp-Name Base64 of another name', 400, -32020, 'tools/call', $create,
    headers => { 'Mcp-Name' => '=?base64?' . encode_base64('sites.list', '') . '?=' });
refused('initialize that claims modern', 404, -32601, 'initialize',
    { protocolVersion => '2025-11-25', capabilities => {}, clientInfo => { name => 't', version => '1' } });
refused('initialize under a modern header', 400, -32020, 'initialize',
    { protocolVersion => '2025-11-25', capabilities => {}, clientInfo => { name => 't', version => '1' } }, meta => undef);
for my $m ('ping', 'logging/setLevel', 'resources/subscribe', 'resources/unsubscribe', 'subscriptions/listen', 'unknown/method') {
    my $r = refused("$m on the modern path", 404, -32601, $m, { level => 'info', uri => 'test://static-text' });
    like($r->{id} // '', qr/^bad-/, "$m: the id echoed");
}
{
    my $one = { jsonrpc => '2.0', id => 1, method => 'tools/call', params => { %$create, _meta => {
        'io.modelcontextprotocol/protocolVersion' => $MODERN, 'io.modelcontextprotocol/clientCapabilities' => {} } } };
    my ($st, undef, $b, $rr) = modern('tools/call', $create, raw => $json->encode([$one]),
        headers => { 'MCP-Protocol-Version' => '2025-03-26' });
    is($st, 400, 'a modern claim in a batch: 400');
    is($rr->{error}{code}, -32600, 'a modern claim in a batch: -32600');
}
refused('inputResponses not an object', 200, -32602, 'tools/call',
    { name => 'test_input_required_result_elicitation', inputResponses => 'x' });
refused('an inputResponses value of the wrong type', 200, -32602, 'tools/call',
    { name => 'test_input_required_result_elicitation', inputResponses => { user_name => 12345 } });
refused('an undeclared capability', 400, -32021, 'tools/call', { name => 'test_missing_capability' }, caps => {});
is(site_count(), 0, 'no bad request wrote anything');
is(session_count(), $sessions_before, 'the modern path made no session');
is_deeply([sort $srv->worker_pids], [sort @pids], 'the workers that served the bad input are the ones still serving');

# ---- headers: case, padding, the Base64 form ----
{
    my ($st, undef, $b, $r) = modern('tools/call', $create, headers => { 'mcp-name' => '  sites.create  ', 'MCP-METHOD' => 'tools/call' });
    is($st, 200, 'header names in any case, values with spaces around: accepted');
    my ($vst, undef, $vb) = modern('tools/list', {}, headers => { 'MCP-Protocol-Version' => "$MODERN  " });
    is($vst, 200, 'an MCP-Protocol-Version with trailing spaces: the same version') or diag($vb);
    is($r->{result}{structuredContent}{name}, 'Shop', 'the write went through') or diag($b);
    ($st, undef, $b, $r) = modern('tools/call', { name => 'sites.list', arguments => {} },
        headers => { 'Mcp-Name' => '=?base64?' . encode_base64('sites.list', '') . '?=' });
    is($st, 200, 'Mcp-Name in the =?base64?...?= form: accepted');
    is(scalar @{ $r->{result}{structuredContent}{sites} // [] }, 1, 'and answered');
    ($st, undef, $b, $r) = modern('tools/call', { name => '=?base64?', arguments => {} }, headers => { 'Mcp-Name' => '=?base64?' });
    is($r->{error}{code}, -32602, 'a value lacking the closing marker is literal (then the tool is unknown)');
    # A tool name in another script (UTF-8 on the wire, Base64 in Mcp-Name): matched byte for byte, then unknown.
    my $utf8 = JSON::PP->new->utf8->canonical;
    my $cafe = "caf\x{e9}-\x{65e5}";
    my $raw = $utf8->encode({ jsonrpc => '2.0', id => 'utf-1', method => 'tools/call', params => { name => $cafe, arguments => {},
        _meta => { 'io.modelcontextprotocol/protocolVersion' => $MODERN, 'io.modelcontextprotocol/clientCapabilities' => {} } } });
    my $b64 = '=?base64?' . encode_base64($utf8->encode([$cafe]) =~ s/^\["|"\]$//gr, '') . '?=';
    ($st, undef, $b, $r) = modern('tools/call', {}, raw => $raw, headers => { 'Mcp-Name' => $b64 });
    is($st, 200, 'a multi-byte tool name, its Mcp-Name in the Base64 form: 200');
    is($r->{id}, 'utf-1', '... answering it');
    is($r->{error}{code}, -32602, '... as an unknown tool (-32602), not a header mismatch');
    like($r->{error}{message} // '', qr/unknown tool/i, '... saying so');
    ($st, undef, $b, $r) = modern('tools/call', {}, raw => $raw, headers => { 'Mcp-Name' => '=?base64?' . encode_base64('cafe', '') . '?=' });
    is($r->{error}{code}, -32020, 'the same name against another Mcp-Name: -32020');
    ($st) = modern('notifications/cancelled', { requestId => 1 }, id => undef);
    is($st, 202, 'a modern notification: 202');
    ($st, undef, $b) = modern('notifications/cancelled', { requestId => 1 }, id => undef, meta => undef);
    is($st, 202, 'a notification without _meta under a modern header: 202 (nothing to answer)');
    is($b // '', '', '... with no body');
    ($st, undef, $b, $r) = modern('tools/call', { name => 'sites.list', arguments => {} },
        extra_headers => ['Mcp-Session-Id: mcp_doesnotexist']);
    is($st, 200, 'a modern request ignores Mcp-Session-Id');
}

# ---- a client that walks away: its stream reset before the request was whole ----
# A modern call runs to completion once its request is whole (its work is
# synchronous); a stream the client resets before then never reaches a handler.
{
    my $python = `command -v python3 2>/dev/null`;
    chomp $python;
    my $srcdir = Alyd::srcdir();
    SKIP: {
        skip 'python3 and ALY_SRCDIR are needed for the raw HTTP/2 client', 7 unless $python && $srcdir;
        my $before = site_count();
        my $meta = { 'io.modelcontextprotocol/protocolVersion' => $MODERN, 'io.modelcontextprotocol/clientCapabilities' => {} };
        my $first = $json->encode({ jsonrpc => '2.0', id => 'walk-1', method => 'tools/call', params => { name => 'sites.create',
            arguments => { name => 'Walked Away', domain => 'away.example', currency => 'EUR' }, _meta => $meta } });
        my $then = $json->encode({ jsonrpc => '2.0', id => 'walk-2', method => 'tools/call',
            params => { name => 'sites.list', arguments => {}, _meta => $meta } });
        my ($exit, $out, $err) = Alyd::run_cmd($python, "$srcdir/t/lib/h2cancel.py", '--port', $srv->port, '--key', $key,
            '--first', $first, '--name1', 'sites.create', '--then', $then, '--name2', 'sites.list');
        is($exit, 0, 'the client that walks away ran') or diag($err);
        my $res = Alyd::json_decode($out) // {};
        ok(!$res->{stream1_answered}, 'the reset stream got no answer') or diag($out);
        is($res->{status_byte}, 0x88, 'the next stream on the same connection: 200') or diag($out);
        my $r = j($res->{body});
        is($r->{id}, 'walk-2', '... and its answer');
        ok(!(grep { ($_->{name} // '') eq 'Walked Away' } @{ $r->{result}{structuredContent}{sites} // [] }),
            'the request reset before it was whole never ran');
        is(site_count(), $before, 'nothing was written');
        ok(!$res->{closed}, 'the connection stayed open');
    }
}

# ---- logging only when _meta asks ----
{
    my ($st, undef, $b) = modern('tools/call', { name => 'test_logging_tool' });
    ok(!(grep { ($_->{method} // '') eq 'notifications/message' } sse_messages($b)), 'no logLevel: no log messages') or diag($b);
    ($st, undef, $b) = modern('tools/call', { name => 'test_logging_tool' }, meta_extra => { 'io.modelcontextprotocol/logLevel' => 'info' });
    ok((grep { ($_->{method} // '') eq 'notifications/message' } sse_messages($b)), 'logLevel info: the info message comes') or diag($b);
    ($st, undef, $b) = modern('tools/call', { name => 'test_logging_tool' }, meta_extra => { 'io.modelcontextprotocol/logLevel' => 'error' });
    ok(!(grep { ($_->{method} // '') eq 'notifications/message' } sse_messages($b)), 'logLevel error: no info message');
    refused('an unknown logLevel', 400, -32602, 'tools/call', { name => 'test_logging_tool' },
        meta_extra => { 'io.modelcontextprotocol/logLevel' => 'loud' });
}

# ---- progress on the request's stream, only when _meta asks ----
{
    my ($st, $hdr, $b, $r) = modern('tools/call', { name => 'test_tool_with_progress', arguments => {} },
        meta_extra => { progressToken => 'p-7' });
    like(Alyd::header_value($hdr, 'content-type') // '', qr{^text/event-stream}, 'a progressToken: the answer is an event stream');
    my @msgs = sse_messages($b);
    my @progress = grep { ($_->{method} // '') eq 'notifications/progress' } @msgs;
    ok(@progress >= 1, 'progress notifications on the request\'s own stream') or diag($b);
    is_deeply([sort keys %{ { map { ($_->{params}{progressToken} // "none") => 1 } @progress } }], ["p-7"],
        'each carries the request\'s token');
    is($msgs[-1]{id}, $r->{id}, 'the response comes last');
    is($r->{result}{resultType}, 'complete', 'and is a complete result');
    ($st, $hdr, $b, $r) = modern('tools/call', { name => 'test_tool_with_progress', arguments => {} });
    like(Alyd::header_value($hdr, 'content-type') // '', qr{^application/json}, 'no progressToken: one JSON answer');
    unlike($b, qr/notifications\/progress/, '... without progress');
    ($st, $hdr, $b, $r) = modern('tools/call', { name => 'test_tool_with_progress', arguments => {} },
        meta_extra => { progressToken => 'p-8' }, accept => 'application/json');
    like(Alyd::header_value($hdr, 'content-type') // '', qr{^application/json}, 'a JSON-only client gets the answer without progress');
    is($r->{result}{resultType}, 'complete', '... complete');
}

# ---- multi round-trip requests and requestState ----
sub state_key {
    open my $f, '<:raw', $srv->data_dir . '/pepper' or die "pepper: $!";
    local $/;
    my $pepper = <$f>;
    return hmac_sha256('aly-mcp-request-state-v1', $pepper);
}

# A requestState sealed with the server's key around a payload we choose: only the field under test is wrong.
sub forge {
    my (%p) = @_;
    my $body = 'v1.' . encode_base64url($json->encode(\%p));
    return $body . '.' . encode_base64url(hmac_sha256($body, state_key()));
}

{
    my $tool = { name => 'test_input_required_result_tampered_state', arguments => {} };
    my ($st, undef, $b, $r) = modern('tools/call', $tool);
    is($r->{result}{resultType}, 'input_required', 'round 1: input_required');
    ok(!exists $r->{result}{ttlMs}, 'input_required carries no caching hints');
    my $state = $r->{result}{requestState} // '';
    like($state, qr/^v1\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/, 'requestState: v1.payload.mac');
    my $answers = { confirm => { action => 'accept', content => { ok => JSON::PP::true } } };
    (undef, undef, $b, $r) = modern('tools/call', { %$tool, inputResponses => $answers, requestState => $state });
    is($r->{result}{resultType}, 'complete', 'the echoed state completes');
    like($r->{result}{content}[0]{text} // '', qr/integrity-ok/, 'the handler saw its state');
    my $used = refused('requestState used a second time', 200, -32602, 'tools/call',
        { %$tool, inputResponses => $answers, requestState => $state });
    like($used->{error}{message} // '', qr/already used/, 'a used requestState: says so');
    my $fresh = (modern('tools/call', $tool))[3]{result}{requestState};
    (undef, undef, $b, $r) = modern('tools/call', { %$tool, inputResponses => { %$answers, unknown_extra => { action => 'accept' } },
        requestState => $fresh });
    is($r->{result}{resultType}, 'complete', 'unknown inputResponses keys are ignored');

    my $payload = j(decode_base64url((split /\./, $state)[1]));
    my %bad = (
        'truncated'          => substr($state, 0, length($state) - 5),
        'altered'            => $state . '-TAMPERED',
        'payload swapped'    => do { my @p = split /\./, $state; $p[1] = encode_base64url($json->encode({ %$payload, s => { kind => 'x' } })); join '.', @p },
        'expired'            => forge(%$payload, e => 1000),
        'too far ahead'      => forge(%$payload, e => $payload->{e} + 3600_000),
        'another method'     => forge(%$payload, m => 'prompts/get'),
        'other params'       => forge(%$payload, d => '0' x 64),
        'not a string'       => 42,
    );
    for my $what (sort keys %bad) {
        refused("requestState $what", 200, -32602, 'tools/call', { %$tool, inputResponses => $answers, requestState => $bad{$what} });
    }
    # Unused states, so that only the binding under test can refuse them (a used one is refused for that alone).
    my $other = refused('requestState replayed by another key', 200, -32602, 'tools/call',
        { %$tool, inputResponses => $answers, requestState => (modern('tools/call', $tool))[3]{result}{requestState} }, key => $key2);
    like($other->{error}{message} // '', qr/another credential/, 'another key: refused for the credential it is bound to');
    my $args = refused('requestState with other arguments', 200, -32602, 'tools/call',
        { %$tool, arguments => { extra => 1 }, inputResponses => $answers, requestState => (modern('tools/call', $tool))[3]{result}{requestState} });
    like($args->{error}{message} // '', qr/another request/, 'other arguments: refused for the params digest it is bound to');
    my $issued = j(decode_base64url((split /\./, (modern('tools/call', $tool))[3]{result}{requestState})[1]));
    my $now_ms = int(time * 1000);
    ok($issued->{e} > $now_ms && $issued->{e} <= $now_ms + 600_000 + 5_000, 'a requestState is issued to expire within 10 minutes')
        or diag("e=$issued->{e} now=$now_ms");
    (undef, undef, $b, $r) = modern('tools/call', { %$tool, inputResponses => $answers, requestState => forge(%$payload) });
    is($r->{result}{resultType}, 'complete', 'the forgery helper seals as the server does (so each refusal above is its one field)');

    # Several rounds, a new state each time.
    my $mr = { name => 'test_input_required_result_multi_round', arguments => {} };
    (undef, undef, $b, $r) = modern('tools/call', $mr);
    my $s1 = $r->{result}{requestState};
    (undef, undef, $b, $r) = modern('tools/call', { %$mr, requestState => $s1,
        inputResponses => { step1 => { action => 'accept', content => { name => 'Ada' } } } });
    is($r->{result}{resultType}, 'input_required', 'multi-round: round 2 asks again');
    isnt($r->{result}{requestState}, $s1, 'multi-round: with a new state');
    (undef, undef, $b, $r) = modern('tools/call', { %$mr, requestState => $r->{result}{requestState},
        inputResponses => { step2 => { action => 'accept', content => { color => 'green' } } } });
    like($r->{result}{content}[0]{text} // '', qr/Ada who likes green/, 'multi-round: complete with both answers');

    # Ask only for what the request declared.
    (undef, undef, $b, $r) = modern('tools/call', { name => 'test_input_required_result_capabilities', arguments => {} },
        caps => { sampling => {} });
    is_deeply([sort keys %{ $r->{result}{inputRequests} // {} }], ['sample_input'], 'only the declared kind is asked for');
    (undef, undef, $b, $r) = modern('prompts/get', { name => 'test_input_required_result_prompt' });
    is($r->{result}{resultType}, 'input_required', 'prompts/get may answer input_required');
    ok($r->{result}{inputRequests}{user_context}, 'prompts/get: asks for user_context');

    # A resource read asks the same way; its answer comes back with the state, bound to resources/read and the uri.
    my $res = { uri => 'test://input-required' };
    (undef, undef, $b, $r) = modern('resources/read', $res);
    is($r->{result}{resultType}, 'input_required', 'resources/read may answer input_required');
    ok(!exists $r->{result}{ttlMs}, 'resources/read input_required: no caching hints');
    my $rs = $r->{result}{requestState};
    my $word = { passphrase => { action => 'accept', content => { word => 'swordfish' } } };
    (undef, undef, $b, $r) = modern('resources/read', { %$res, inputResponses => $word, requestState => $rs });
    is($r->{result}{resultType}, 'complete', 'resources/read: the answer completes it');
    is($r->{result}{contents}[0]{text}, 'Unlocked with swordfish', 'resources/read: with the answer') or diag($b);
    is($r->{result}{cacheScope}, 'private', 'resources/read: the completed read carries its caching hints');
    $rs = (modern('resources/read', $res))[3]{result}{requestState};
    my $moved = refused('a resources/read state used for another uri', 200, -32602, 'resources/read',
        { uri => 'test://static-text', inputResponses => $word, requestState => $rs });
    like($moved->{error}{message} // '', qr/another request/, 'another uri: refused for the params it is bound to');
}

# ---- the Origin check accepts the loopback aliases of a loopback public_url ----
{
    my $port = $srv->port;
    my %want = ("http://localhost:$port" => 200, "http://127.0.0.1:$port" => 200, "http://[::1]:$port" => 200,
        "http://evil.example.com" => 403, "http://localhost:1" => 403, "https://localhost:$port" => 403,
        "http://localhost.evil.example.com:$port" => 403);
    for my $o (sort keys %want) {
        my ($st) = modern('server/discover', {}, extra_headers => ["Origin: $o"]);
        is($st, $want{$o}, "Origin $o: $want{$o}");
    }
}

# ---- a body the flat reader declines is read whole, and answered alike ----
# The modern era reads the usual body shape flat (no tree); an extra member
# sends it down the whole read.  Both must give the same answer, refusal or result.
{
    my $meta = { 'io.modelcontextprotocol/protocolVersion' => $MODERN, 'io.modelcontextprotocol/clientCapabilities' => {} };
    my $raw = sub {
        my ($params, $extra, $id) = @_;
        return $json->encode({ jsonrpc => '2.0', id => $id, method => 'tools/call', params => { %$params, _meta => $meta }, %$extra });
    };
    for my $case (['sites.list', { name => 'sites.list', arguments => {} }, {}],
        ['an unknown tool', { name => 'no.such', arguments => {} }, {}],
        ['bad arguments', { name => 'sites.get', arguments => { site_id => 5 } }, {}],
        ['an Mcp-Name that differs', { name => 'sites.list', arguments => {} }, { 'Mcp-Name' => 'sites.get' }]) {
        my ($what, $params, $hdrs) = @$case;
        my ($st1, undef, $b1, $r1) = modern('tools/call', $params, headers => $hdrs, raw => $raw->($params, {}, 'same-1'));
        my ($st2, undef, $b2, $r2) = modern('tools/call', $params, headers => $hdrs, raw => $raw->($params, { 'x-extra' => 1 }, 'same-1'));
        is($st2, $st1, "$what: the same status read flat and read whole ($st1)");
        is_deeply($r2, $r1, "$what: the same answer read flat and read whole") or diag("$b1\n$b2");
    }
    my $r = refused('params that is no object', 400, -32602, 'tools/call', {},
        raw => '{"jsonrpc":"2.0","id":"p5","method":"tools/call","params":5}', headers => { 'Mcp-Name' => undef });
    is($r->{id}, 'p5', 'params that is no object: the id echoed');
    ($r) = (modern('tools/call', {}, raw => '{"jsonrpc":"2.0","id":"d1","id":"d2","method":"tools/call","params":{"name":"sites.list",'
        . '"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}',
        headers => { 'Mcp-Name' => 'sites.list' }))[3];
    is($r->{id}, 'd2', 'a duplicate id: the last one counts, as jansson reads it');
}

# ---- refusals before a method: their codes lie outside JSON-RPC's reserved range on the modern path ----
{
    refused('no valid credential', 401, -31401, 'tools/call', { name => 'sites.list', arguments => {} }, key => 'aly_' . ('x' x 40));
    my $r = refused('a tool outside the key\'s scopes', 403, -31403, 'tools/call', { name => 'orders.list', arguments => {} });
    is($r->{error}{data}{required_scope}, 'read:orders', 'the missing scope named');
    my $slow = ctl_ok('keys', 'create', '--workspace', $ws, '--scopes', 'read:sites', '--rate-limit', '1/minute burst=1');
    my ($st) = modern('tools/call', { name => 'sites.list', arguments => {} }, key => $slow);
    is($st, 200, 'a key of one request a minute: the first passes');
    refused('over the rate limit', 429, -31429, 'tools/call', { name => 'sites.list', arguments => {} }, key => $slow);
    # The legacy era keeps its codes, byte for byte.
    my @legacy = ('-X', 'POST', '-H', 'Content-Type: application/json', '-H', 'Accept: application/json, text/event-stream',
        '--data', '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"sites.list","arguments":{}}}', $url);
    my ($lst, undef, $lb) = Alyd::curl('-H', "Authorization: Bearer $slow", @legacy);
    is($lst, 429, 'legacy, over the rate limit: 429');
    is(j($lb)->{error}{code}, -32029, 'legacy: -32029 as before');
    ($lst, undef, $lb) = Alyd::curl('-H', 'Authorization: Bearer aly_' . ('x' x 40), @legacy);
    is(j($lb)->{error}{code}, -32001, 'legacy, no valid credential: -32001 as before');
}

is_deeply([sort $srv->worker_pids], [sort @pids], 'the same workers serve at the end');
$srv->stop;
done_testing;
