# Product use without site_id, in both protocol eras: a workspace with one
# site uses it; with several, a client that declared elicitation is asked
# which (an input_required round on a modern request, a real
# elicitation/create on a legacy session's stream) and the call goes on on
# the chosen site; a client that did not declare it gets an isError listing
# the sites; with none, an isError saying so.  Declined, cancelled, foreign
# and unlisted answers are refused and write nothing, and the result cache
# (one worker, so every call meets the same cache) never keeps or serves a
# result that depended on an answer.
use strict;
use warnings;
use Test::More;
use JSON::PP ();
use Alyd;

Alyd::watchdog(240);

my $srv = Alyd->start(workers => 1, extra => ['rate_limit 100000/second burst=100000']);
my $url = $srv->url('/api/mcp');
my $MODERN = '2026-07-28';
my $ELICIT = { elicitation => {} };
my $json = JSON::PP->new->canonical;
my $next_id = 1;

sub ctl { $srv->ctl(@_) }
my $SCOPES = 'read:sites,write:sites,read:content,write:content,read:orders,read:analytics';
my %key = map { my $ws = ctl('workspace', 'create', "Workspace $_"); ($_ => ctl('keys', 'create', '--workspace', $ws, '--scopes', $SCOPES)) }
  qw(none one many);

sub j { my $v = Alyd::json_decode($_[0]); return $v // {} }

# The JSON-RPC response in a JSON or SSE body (the last message with an id).
sub response_of {
    my ($b) = @_;
    return j($b) unless ($b // '') =~ /^(event|data|:)/m;
    my ($r) = grep { exists $_->{id} } reverse map { j($_) } $b =~ /^data: (.*)$/mg;
    return $r // {};
}

# modern($key, $params, $caps) -> the result (or error) of a modern tools/call.
sub modern {
    my ($key, $params, $caps) = @_;
    my $body = $json->encode({ jsonrpc => '2.0', id => $next_id++, method => 'tools/call', params => { %$params, _meta => {
        'io.modelcontextprotocol/protocolVersion' => $MODERN, 'io.modelcontextprotocol/clientCapabilities' => $caps // $ELICIT,
        'io.modelcontextprotocol/clientInfo' => { name => 't', version => '1' } } } });
    $body =~ s/"LIMIT"/5.0/g; # a number written as a real, as some JSON encoders write it
    my (undef, undef, $b) = Alyd::curl('-X', 'POST', '-H', 'Content-Type: application/json', '-H', 'Accept: application/json, text/event-stream',
        '-H', "Authorization: Bearer $key", '-H', "MCP-Protocol-Version: $MODERN", '-H', 'Mcp-Method: tools/call',
        '-H', "Mcp-Name: $params->{name}", '--data-binary', $body, $url);
    my $r = response_of($b);
    return $r->{result} // $r->{error} // {};
}

sub tool { my ($key, $name, $args, $caps) = @_; return modern($key, { name => $name, arguments => $args // {} }, $caps) }

sub sites_of {
    my ($key) = @_;
    return { map { $_->{id} => $_ } @{ tool($key, 'sites.list')->{structuredContent}{sites} // [] } };
}

# ---- the workspaces: none, one and two sites ----
my $only = tool($key{one}, 'sites.create', { name => 'Only Shop', domain => 'only.example', currency => 'EUR' })->{structuredContent}{id};
my $north = tool($key{many}, 'sites.create', { name => 'North Shop', domain => 'north.example', currency => 'EUR' })->{structuredContent}{id};
my $south = tool($key{many}, 'sites.create', { name => 'South Shop', domain => 'south.example', currency => 'USD' })->{structuredContent}{id};
ok($only && $north && $south, 'three sites made in two workspaces');
for my $s ($north, $south) {
    tool($key{many}, 'products.create', { site_id => $s, title => "Mug of $s", price => 100, sku => 'MUG' });
}

# ---- one worker, one result cache: a cached answer never crosses workspaces; a product belongs to its site ----
{
    my $mug = (tool($key{many}, 'products.list', { site_id => $north })->{structuredContent}{products} // [])->[0]{id};
    ok($mug, 'a product of North, listed (and the list cached)');
    is(tool($key{one}, 'sites.get', { site_id => $only })->{structuredContent}{id}, $only, 'sites.get of Only Shop, by its workspace (cached)');
    my $r = tool($key{many}, 'sites.get', { site_id => $only });
    ok($r->{isError}, 'the same sites.get from another workspace: isError, not the cached answer') or diag($json->encode($r));
    like($r->{content}[0]{text} // '', qr/no site \Q$only\E in this workspace/, '... naming the site it does not have');
    $r = tool($key{one}, 'products.list', { site_id => $north });
    ok($r->{isError} && !$r->{structuredContent}, 'North\'s product list asked from another workspace: isError, no list');
    is(tool($key{many}, 'products.get', { site_id => $north, product_id => $mug })->{structuredContent}{id}, $mug,
        'the product through its own site (cached)');
    $r = tool($key{many}, 'products.get', { site_id => $south, product_id => $mug });
    ok($r->{isError}, 'the same product through another site of its workspace: isError') or diag($json->encode($r));
    like($r->{content}[0]{text} // '', qr/no product \Q$mug\E in site \Q$south\E/, '... saying the site has no such product');
    $r = tool($key{many}, 'products.update', { site_id => $south, product_id => $mug, title => 'Stolen' });
    ok($r->{isError}, 'updating it through the other site: isError');
    $r = tool($key{many}, 'products.delete', { site_id => $south, product_id => $mug });
    ok($r->{isError}, 'deleting it through the other site: isError');
    my $p = tool($key{many}, 'products.get', { site_id => $north, product_id => $mug })->{structuredContent} // {};
    ok($p->{title} eq "Mug of $north" && $p->{version} == 1, 'the product is as it was');
}

# ---- modern ----
{
    my $r = tool($key{none}, 'products.list', {});
    ok($r->{isError}, 'no site: isError');
    like($r->{content}[0]{text} // '', qr/no site yet/, 'no site: says so');

    $r = tool($key{one}, 'products.list', {});
    is($r->{structuredContent}{site_id}, $only, 'one site: products.list without site_id uses it') or diag($json->encode($r));
    $r = tool($key{one}, 'products.create', { title => 'Cup', price => 250, sku => 'CUP' });
    is($r->{structuredContent}{site_id}, $only, 'one site: products.create without site_id writes into it');
    is(sites_of($key{one})->{$only}{product_count}, 1, 'one site: its count moved');
    is(tool($key{one}, 'sites.get', {})->{structuredContent}{id}, $only, 'one site: sites.get without site_id');
    is(tool($key{one}, 'analytics.summary', { from => '2026-01-01', to => '2026-01-31' })->{structuredContent}{site_id}, $only,
        'one site: analytics.summary without site_id');
    is(tool($key{one}, 'orders.list', {})->{structuredContent}{site_id}, $only, 'one site: orders.list without site_id');

    # Several sites, no elicitation declared: the sites, by name and id, in an isError.
    $r = tool($key{many}, 'products.list', {}, {});
    ok($r->{isError}, 'several sites, no elicitation: isError');
    my $text = $r->{content}[0]{text} // '';
    like($text, qr/North Shop \(\Q$north\E\)/, 'it names the first site and its id');
    like($text, qr/South Shop \(\Q$south\E\)/, 'and the second');
    ok(!exists $r->{inputRequests}, 'and asks nothing');

    # Several sites, elicitation declared: a form listing the sites by name.
    my $create = { title => 'Teapot', price => 900, sku => 'POT' };
    $r = tool($key{many}, 'products.create', $create);
    is($r->{resultType}, 'input_required', 'several sites: input_required') or diag($json->encode($r));
    my $ask = $r->{inputRequests}{site} // {};
    is($ask->{method}, 'elicitation/create', 'the question is a form elicitation');
    my $prop = $ask->{params}{requestedSchema}{properties}{site_id} // {};
    is_deeply([sort { $a->{title} cmp $b->{title} } @{ $prop->{oneOf} // [] }],
        [{ const => $north, title => 'North Shop' }, { const => $south, title => 'South Shop' }], 'a titled enum of the sites');
    is_deeply($ask->{params}{requestedSchema}{required}, ['site_id'], 'the answer must name one');
    my $before = sites_of($key{many});
    # Each answer goes with a state of its own round: a requestState answers once.
    my $state;
    my $answer = sub {
        my ($content, $action) = @_;
        $state = tool($key{many}, 'products.create', $create)->{requestState};
        return modern($key{many}, { name => 'products.create', arguments => $create, requestState => $state,
            inputResponses => { site => { action => $action // 'accept', $content ? (content => $content) : () } } });
    };
    for my $bad (['declined', undef, 'decline'], ['cancelled', undef, 'cancel'],
        ['a site of another workspace', { site_id => $only }], ['a site not in the list', { site_id => 'site_' . ('Z' x 20) }],
        ['no site_id in the answer', {}]) {
        my ($what, $content, $action) = @$bad;
        $r = $answer->($content, $action);
        ok($r->{isError}, "answer $what: isError") or diag($json->encode($r));
        like($r->{content}[0]{text} // '', $action ? qr/no site was chosen \(\Q$what\E\)/ : qr/no site that was offered/, "answer $what: says why");
    }
    $r = modern($key{many}, { name => 'products.create', arguments => $create,
        inputResponses => { site => { action => 'accept', content => { site_id => $south } } } });
    ok($r->{isError}, 'an answer without the requestState that offered the sites: refused');
    is_deeply(sites_of($key{many}), $before, 'the refused answers wrote nothing');

    $r = $answer->({ site_id => $south });
    is($r->{resultType}, 'complete', 'answered: the call completes');
    is($r->{structuredContent}{site_id}, $south, 'on the chosen site') or diag($json->encode($r));
    my $after = sites_of($key{many});
    is($after->{$south}{product_count}, $before->{$south}{product_count} + 1, 'the product went into the chosen site');
    is($after->{$north}{product_count}, $before->{$north}{product_count}, 'and not into the other');
    # Replayed naming North, where the sku is still free: only the single use keeps it from writing.
    $r = modern($key{many}, { name => 'products.create', arguments => $create, requestState => $state,
        inputResponses => { site => { action => 'accept', content => { site_id => $north } } } });
    is($r->{code}, -32602, 'the same requestState again: refused (-32602)') or diag($json->encode($r));
    like($r->{message} // '', qr/already used/, 'it says the state was used');
    is_deeply(sites_of($key{many}), $after, 'the replay wrote nothing');
    # A fresh state, wrong in one way each: altered, for other arguments, or posted by another workspace's key.
    # Each answer names North, where the sku is free, so only the refusal keeps the product out.
    my $north_answer = { site => { action => 'accept', content => { site_id => $north } } };
    my $one_before = sites_of($key{one});
    for my $bad (['altered', sub { $_[0] . 'x' }, $create, $key{many}, qr/integrity/],
        ['for other arguments', sub { $_[0] }, { %$create, title => 'Kettle' }, $key{many}, qr/another request/],
        ['posted with another key', sub { $_[0] }, $create, $key{one}, qr/another credential/]) {
        my ($what, $edit, $args, $k, $why) = @$bad;
        my $fresh = tool($key{many}, 'products.create', $create)->{requestState};
        $r = modern($k, { name => 'products.create', arguments => $args, requestState => $edit->($fresh), inputResponses => $north_answer });
        is($r->{code}, -32602, "a requestState $what: refused (-32602)") or diag($json->encode($r));
        like($r->{message} // '', $why, "a requestState $what: says why");
    }
    is_deeply(sites_of($key{many}), $after, 'the altered, rebound and foreign states wrote nothing');
    is_deeply(sites_of($key{one}), $one_before, 'nor in the other workspace');

    # Reads: an answer steers the result, so the cache neither keeps nor serves it.
    my $list = tool($key{many}, 'products.list', {});
    is($list->{resultType}, 'input_required', 'products.list: asks too');
    my %got;
    for my $s ($north, $south, $north) {
        $r = modern($key{many}, { name => 'products.list', arguments => {}, requestState => tool($key{many}, 'products.list', {})->{requestState},
            inputResponses => { site => { action => 'accept', content => { site_id => $s } } } });
        is($r->{structuredContent}{site_id}, $s, "products.list answered with $s: that site's products (no cached answer served)");
        ok(!grep({ $_->{site_id} ne $s } @{ $r->{structuredContent}{products} // [] }), 'only its products');
    }
    is(tool($key{many}, 'products.list', {})->{resultType}, 'input_required', 'an unanswered call still asks (no answered result kept)');
    ok(tool($key{many}, 'products.list', {}, {})->{isError}, 'and without elicitation still lists the sites');
    is(tool($key{many}, 'analytics.timeseries', { from => '2026-01-01', to => '2026-01-02' })->{resultType}, 'input_required',
        'analytics.timeseries asks as well');
    is(tool($key{many}, 'products.list', { site_id => $north })->{structuredContent}{site_id}, $north, 'site_id given: used as before');

    # The retry repeats the params as the client sent them: a limit written 5.0 (which the schema check reads as 5).
    my $real = tool($key{many}, 'products.list', { limit => 'LIMIT' });
    is($real->{resultType}, 'input_required', 'products.list with limit 5.0: asks');
    $r = modern($key{many}, { name => 'products.list', arguments => { limit => 'LIMIT' }, requestState => $real->{requestState},
        inputResponses => { site => { action => 'accept', content => { site_id => $south } } } });
    is($r->{structuredContent}{site_id}, $south, 'the same params with limit 5.0 again: the retry completes') or diag($json->encode($r));
    # Elicitation declared for URL mode only (or not as an object) is no form: the sites are listed, nobody is asked.
    for my $caps ([{ elicitation => { url => {} } }, 'URL mode only'], [{ elicitation => undef }, 'null'],
        [{ elicitation => 1 }, 'not an object']) {
        $r = tool($key{many}, 'products.list', {}, $caps->[0]);
        ok($r->{isError} && !$r->{inputRequests}, "elicitation declared $caps->[1]: not asked, isError") or diag($json->encode($r));
        like($r->{content}[0]{text} // '', qr/North Shop/, "elicitation declared $caps->[1]: the sites listed");
    }
    is(tool($key{many}, 'products.list', {}, { elicitation => { form => {}, url => {} } })->{resultType}, 'input_required',
        'elicitation declared with form mode: asked');
}

# ---- legacy sessions ----
sub legacy_session {
    my ($key, $caps) = @_;
    my (undef, $hdr) = Alyd::curl('-X', 'POST', '-H', 'Content-Type: application/json', '-H', 'Accept: application/json, text/event-stream',
        '-H', "Authorization: Bearer $key", '--data', $json->encode({ jsonrpc => '2.0', id => 1, method => 'initialize',
        params => { protocolVersion => '2025-11-25', capabilities => $caps, clientInfo => { name => 't', version => '1' } } }), $url);
    return Alyd::header_value($hdr, 'mcp-session-id');
}

# A tools/call on a legacy session's POST stream; returns (a reader that waits for a pattern, the text read so far).
sub legacy_call {
    my ($key, $sid, $name, $args) = @_;
    my $body = $json->encode({ jsonrpc => '2.0', id => 'call-1', method => 'tools/call', params => { name => $name, arguments => $args } });
    return Alyd::post_stream($srv->port, $body, "Authorization: Bearer $key", "Mcp-Session-Id: $sid", 'MCP-Protocol-Version: 2025-11-25');
}

my $QUESTION = qr/data: (\{[^\n]*"method":"elicitation\/create"[^\n]*\})/;
# The call's response: an SSE data line once something went out on the stream, else the JSON body.
my $RESULT = qr/(\{"jsonrpc"[^\n]*"id":"call-1"[^\n]*\})/;

sub legacy_answer {
    my ($key, $sid, $qid, $result) = @_;
    my ($st) = Alyd::curl('-X', 'POST', '-H', 'Content-Type: application/json', '-H', 'Accept: application/json, text/event-stream',
        '-H', "Authorization: Bearer $key", '-H', "Mcp-Session-Id: $sid", '--data',
        $json->encode({ jsonrpc => '2.0', id => $qid, result => $result }), $url);
    return $st;
}

sub result_in { my ($got) = @_; my ($m) = ($got // '') =~ $RESULT; return j($m)->{result} // {} }

{
    my $sid = legacy_session($key{many}, $ELICIT);
    ok($sid, 'legacy: a session that declared elicitation');
    my $before = sites_of($key{many});
    my $create = { title => 'Kettle', price => 1500, sku => 'KETTLE' };

    # Asked on the stream; the answer picks North.
    my $read = legacy_call($key{many}, $sid, 'products.create', $create);
    my $got = $read->($QUESTION);
    ok($got, 'legacy, several sites: an elicitation/create on the call\'s stream') or diag($got);
    my ($q) = ($got // '') =~ $QUESTION;
    $q = j($q);
    is_deeply([sort { $a->{title} cmp $b->{title} } @{ $q->{params}{requestedSchema}{properties}{site_id}{oneOf} // [] }],
        [{ const => $north, title => 'North Shop' }, { const => $south, title => 'South Shop' }], 'legacy: the same titled enum');
    is(legacy_answer($key{many}, $sid, $q->{id}, { action => 'accept', content => { site_id => $north } }), 202, 'legacy: answer accepted');
    my $r = result_in($read->($RESULT));
    is($r->{structuredContent}{site_id}, $north, 'legacy: the call completed on the chosen site') or diag($json->encode($r));
    unlike($read->($RESULT) // '', qr/input_required|requestState/, 'legacy: nothing of the modern round trip on the wire');
    my $after = sites_of($key{many});
    is($after->{$north}{product_count}, $before->{$north}{product_count} + 1, 'legacy: the product went into North');
    is($after->{$south}{product_count}, $before->{$south}{product_count}, 'legacy: and not into South');

    # Declined, cancelled, foreign and unlisted answers: isError, nothing written.
    for my $bad (['declined', { action => 'decline' }, qr/no site was chosen \(declined\)/],
        ['cancelled', { action => 'cancel' }, qr/no site was chosen \(cancelled\)/],
        ['a site of another workspace', { action => 'accept', content => { site_id => $only } }, qr/no site that was offered/],
        ['a site not in the list', { action => 'accept', content => { site_id => 'site_' . ('Z' x 20) } }, qr/no site that was offered/]) {
        my ($what, $answer, $re) = @$bad;
        $read = legacy_call($key{many}, $sid, 'products.create', { %$create, sku => 'K2' });
        ($q) = ($read->($QUESTION) // '') =~ $QUESTION;
        legacy_answer($key{many}, $sid, j($q)->{id}, $answer);
        $r = result_in($read->($RESULT));
        ok($r->{isError}, "legacy, answer $what: isError") or diag($json->encode($r));
        like($r->{content}[0]{text} // '', $re, "legacy, answer $what: says why");
    }
    is_deeply(sites_of($key{many}), $after, 'legacy: the refused answers wrote nothing');

    # A session that did not declare elicitation is never asked: the sites are listed instead.
    my $plain = legacy_session($key{many}, {});
    $read = legacy_call($key{many}, $plain, 'products.list', {});
    $got = $read->($RESULT);
    unlike($got // '', qr/elicitation\/create/, 'legacy without elicitation: not asked');
    $r = result_in($got);
    ok($r->{isError}, 'legacy without elicitation: isError');
    like($r->{content}[0]{text} // '', qr/North Shop \(\Q$north\E\).*South Shop \(\Q$south\E\)|South Shop \(\Q$south\E\).*North Shop \(\Q$north\E\)/,
        'legacy without elicitation: the sites by name and id');

    # Nor one that declared elicitation for URL mode only.
    my $url_only = legacy_session($key{many}, { elicitation => { url => {} } });
    $got = legacy_call($key{many}, $url_only, 'products.list', {})->($RESULT);
    unlike($got // '', qr/elicitation\/create/, 'legacy with URL-mode elicitation only: not asked');
    ok(result_in($got)->{isError}, 'legacy with URL-mode elicitation only: isError, the sites listed');

    # A call waiting for its answer is cancelled from its own session only, not from a POST without one.
    $read = legacy_call($key{many}, $sid, 'products.list', {});
    ($q) = ($read->($QUESTION) // '') =~ $QUESTION;
    ok($q, 'legacy: a call waits for its answer');
    my ($cst) = Alyd::curl('-X', 'POST', '-H', 'Content-Type: application/json', '-H', 'Accept: application/json, text/event-stream',
        '-H', "Authorization: Bearer $key{many}", '--data',
        $json->encode({ jsonrpc => '2.0', method => 'notifications/cancelled', params => { requestId => 'call-1' } }), $url);
    is($cst, 202, 'legacy: a cancellation without a session is accepted');
    legacy_answer($key{many}, $sid, j($q)->{id}, { action => 'accept', content => { site_id => $south } });
    $r = result_in($read->($RESULT));
    is($r->{structuredContent}{site_id}, $south, 'legacy: and cancels nothing of the session\'s call') or diag($json->encode($r));

    # One site and no site, on legacy sessions.
    my $one = legacy_session($key{one}, {});
    $r = result_in(legacy_call($key{one}, $one, 'products.list', {})->($RESULT));
    is($r->{structuredContent}{site_id}, $only, 'legacy, one site: used');
    my $none = legacy_session($key{none}, $ELICIT);
    $r = result_in(legacy_call($key{none}, $none, 'products.list', {})->($RESULT));
    ok($r->{isError} && ($r->{content}[0]{text} // '') =~ /no site yet/, 'legacy, no site: isError saying so');
}

is_deeply([sort keys %{ sites_of($key{none}) }], [], 'the empty workspace is still empty');
done_testing();
