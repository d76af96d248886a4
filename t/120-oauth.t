# The built-in authorization server's flows against a real alyd: RFC 8414
# metadata, the consent page and its form contract, the code grant with PKCE,
# tokens the MCP endpoint accepts, refresh rotation, confidential and
# dynamically registered clients, workspaces and scope caps, revocation
# (RFC 7009 and alyctl) reaching every worker, key rotation, and the
# directive that turns it all off.
use strict;
use warnings;
use Test::More;
use File::Temp ();
use JSON::PP ();
use Alyd;
use AlyOAuth;
use OAuthE2E;

Alyd::watchdog(400);

my $srv = Alyd->start(workers => 2);
my $base     = $srv->url('');
my $resource = $srv->url('/api/mcp');
my $cb       = 'http://127.0.0.1:' . Alyd::free_port() . '/callback';
my $tmp      = File::Temp->newdir;
Alyd::spew("$tmp/pw-ann", "ann-password-1\n");
Alyd::spew("$tmp/pw-bob", "bob-password-1\n");
Alyd::spew("$tmp/pw-new", "ann-password-2\n");

my $ws  = $srv->ctl('workspace', 'create', 'Acme');
my $ws2 = $srv->ctl('workspace', 'create', 'Beta');
$srv->ctl('users', 'add', '--workspace', $ws, '--email', 'Ann@Example.com', '--password-file', "$tmp/pw-ann");
$srv->ctl('users', 'add', '--workspace', $ws, '--email', 'bob@example.com', '--scopes', 'read:sites,read:content',
    '--password-file', "$tmp/pw-bob");
$srv->ctl('users', 'add', '--workspace', $ws2, '--email', 'bob@example.com');
my $app  = Alyd::json_decode($srv->ctl('--json', 'oauth', 'clients', 'create', '--name', 'Test App', '--redirect-uri', $cb));
my $conf = Alyd::json_decode(
    $srv->ctl('--json', 'oauth', 'clients', 'create', '--name', 'Back Office', '--redirect-uri', $cb, '--confidential'));
like($app->{client_id}, qr/^cli_[A-Za-z0-9]{20}$/, 'alyctl oauth clients create prints a client_id');
ok(!exists $app->{client_secret}, 'a public client has no secret');
like($conf->{client_secret} // '', qr/^aly_cs_[A-Za-z0-9]{32}$/, 'a confidential client gets its secret once');

# ---- metadata ----
{
    my ($st, $h, $b) = Alyd::curl($srv->url('/.well-known/oauth-authorization-server'));
    my $m = Alyd::json_decode($b) // {};
    is($st, 200, 'RFC 8414 metadata: 200');
    is($m->{issuer}, $base, 'issuer is public_url exactly');
    my %ep = (authorization => 'authorize', token => 'token', registration => 'register', revocation => 'revoke');
    is($m->{"${_}_endpoint"}, "$base/oauth/$ep{$_}", "${_}_endpoint under /oauth/") for sort keys %ep;
    is($m->{authorization_endpoint}, "$base/oauth/authorize", 'authorization_endpoint');
    is($m->{jwks_uri}, "$base/oauth/jwks", 'jwks_uri');
    is_deeply($m->{response_types_supported}, ['code'], 'response_types_supported');
    is_deeply($m->{grant_types_supported}, [qw(authorization_code refresh_token)], 'grant_types_supported');
    is_deeply($m->{code_challenge_methods_supported}, ['S256'], 'S256 only');
    is_deeply($m->{token_endpoint_auth_methods_supported}, [qw(none client_secret_post client_secret_basic)], 'token auth methods');
    ok((grep { $_ eq 'offline_access' } @{ $m->{scopes_supported} }) && (grep { $_ eq 'read:sites' } @{ $m->{scopes_supported} }),
        'scopes_supported: the catalogue and offline_access');
    ok(JSON::PP::is_bool($m->{client_id_metadata_document_supported}) && $m->{client_id_metadata_document_supported},
        'client_id_metadata_document_supported: true');
    ok($m->{authorization_response_iss_parameter_supported}, 'authorization_response_iss_parameter_supported: true');
    ($st, $h, $b) = Alyd::curl($srv->url('/.well-known/oauth-protected-resource/api/mcp'));
    my $prm = Alyd::json_decode($b) // {};
    is_deeply($prm->{authorization_servers}, [$base], 'protected-resource metadata names public_url as authorization server');
    ok(!(grep { $_ eq 'offline_access' } @{ $prm->{scopes_supported} // [] }), 'offline_access is not a resource scope');
}

my $o = AlyOAuth->new($srv);

# ---- the consent page ----
my $pkce = AlyOAuth::pkce();
my %req = (response_type => 'code', client_id => $app->{client_id}, redirect_uri => $cb, state => 'st<&>1',
    code_challenge => $pkce->{challenge}, code_challenge_method => 'S256', scope => 'read:sites write:content offline_access',
    resource => $resource);
my $page = $o->authorize_page(%req);
{
    my ($h, $b, $p) = @{$page}{qw(headers body page)};
    is($page->{status}, 200, 'consent page: 200');
    like(Alyd::header_value($h, 'content-type'), qr{^text/html; charset=utf-8}, 'consent page is HTML');
    my $csp = Alyd::header_value($h, 'content-security-policy') // '';
    like($csp, qr/frame-ancestors 'none'/, "CSP has frame-ancestors 'none'");
    like($csp, qr/default-src 'none'/, 'CSP defaults to none (no script runs)');
    unlike($csp, qr/script-src/, 'CSP allows no script');
    is(Alyd::header_value($h, 'x-frame-options'), 'DENY', 'X-Frame-Options: DENY');
    is(Alyd::header_value($h, 'cache-control'), 'no-store', 'Cache-Control: no-store');
    is(Alyd::header_value($h, 'referrer-policy'), 'no-referrer', 'Referrer-Policy: no-referrer');
    my ($csrf_cookie) = grep { /^__Host-aly_csrf=/ } ($h =~ /^set-cookie:\s*(.*?)\r?$/mgi);
    ok($csrf_cookie, 'the page sets a __Host- CSRF cookie');
    like($csrf_cookie // '', qr/; Path=\/;.*HttpOnly;.*Secure;.*SameSite=Lax/, 'cookie: Path=/, HttpOnly, Secure, SameSite=Lax');
    unlike($csrf_cookie // '', qr/Domain=/i, 'a __Host- cookie has no Domain');
    is($p->{action}, '/oauth/authorize', 'the form posts to /oauth/authorize');
    is(lc($p->{method} // ''), 'post', 'method post');
    ok(length($p->{request} // '') > 20 && length($p->{csrf} // '') > 20, 'hidden request and csrf fields');
    ok($p->{inputs}{email} && $p->{inputs}{password}, 'email and password inputs when not signed in');
    unlike($b, qr/\brequired\b/, 'none of them required: Deny works without signing in');
    is_deeply([ sort @{ $p->{scopes} } ], [qw(offline_access read:sites write:content)], 'one scope checkbox per requested scope');
    is_deeply([ sort @{ $p->{checked} } ], [qw(offline_access read:sites write:content)], 'checked by default');
    is_deeply([ sort @{ $p->{buttons} } ], [qw(approve deny)], 'buttons name=action approve and deny');
    like($b, qr/Test App/, 'the page names the client');
    my ($host) = $cb =~ m{^http://([^/]+)};
    like($b, qr/\Q$host\E/, 'the page names the redirect host');
    unlike($b, qr/<script/i, 'no script on the page');
}

# ---- approve with one scope unticked ----
my $d = $o->decide($page, email => 'ann@example.com', password => 'ann-password-1', scopes => [qw(read:sites offline_access)]);
is($d->{status}, 302, 'approve: 302');
like($d->{location} // '', qr/^\Q$cb\E\?code=/, 'to the registered redirect URI with a code');
is($d->{params}{state}, 'st<&>1', 'state passed back unchanged');
is($d->{params}{iss}, $base, 'iss in the authorization response');
my ($session) = grep { /^__Host-aly_session=/ } ($d->{headers} =~ /^set-cookie:\s*(.*?)\r?$/mgi);
like($session // '', qr/HttpOnly;.*Secure;.*SameSite=Lax/, 'the sign-in cookie: __Host-, HttpOnly, Secure, SameSite=Lax');

my ($st, $h, $tok) = $o->token(grant_type => 'authorization_code', code => $d->{params}{code}, redirect_uri => $cb,
    code_verifier => $pkce->{verifier}, client_id => $app->{client_id}, resource => $resource);
is($st, 200, 'code exchanged for tokens');
is(Alyd::header_value($h, 'cache-control'), 'no-store', 'token response: Cache-Control no-store');
is($tok->{token_type}, 'Bearer', 'token_type Bearer');
is($tok->{expires_in}, 3600, 'one hour');
is($tok->{scope}, 'read:sites offline_access', 'only the ticked scopes');
like($tok->{access_token}, qr/^aly_oauth_[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/, 'access token: aly_oauth_ + JWS');
like($tok->{refresh_token}, qr/^aly_oauth_rt_[A-Za-z0-9]{43}$/, 'offline_access gives an opaque refresh token');
my $c = AlyOAuth::claims($tok->{access_token});
my $hd = AlyOAuth::header_of($tok->{access_token});
is($hd->{alg}, 'ES256', 'signed ES256');
like($hd->{kid}, qr/^alyk_/, 'with the kid of a key alyd made');
is($c->{iss}, $base, 'iss = public_url');
is($c->{aud}, $resource, 'aud = the MCP resource');
is($c->{ws}, $ws, 'ws = the user\'s workspace');
like($c->{sub}, qr/^usr_/, 'sub = the user id');
is($c->{scope}, 'read:sites', 'scope claim: catalogue scopes only');
is($c->{client_id}, $app->{client_id}, 'client_id claim');
is($c->{exp} - $c->{iat}, 3600, 'exp = iat + 1 h');
like($c->{jti}, qr/^grt_\w+\.\w+$/, 'jti names the grant');

{
    my ($st, undef, $b) = Alyd::curl($srv->url('/oauth/jwks'));
    my $k = Alyd::json_decode($b) // {};
    my ($key) = grep { $_->{kid} eq $hd->{kid} } @{ $k->{keys} // [] };
    is($st, 200, 'JWKS: 200');
    ok($key && $key->{kty} eq 'EC' && $key->{crv} eq 'P-256' && $key->{alg} eq 'ES256', 'the signing key is in the JWKS');
    ok($key && !exists $key->{d}, 'the JWKS holds no private part');
}

is(AlyOAuth::mcp_status($srv, $tok->{access_token}), 200, 'the MCP endpoint accepts the access token');
sub call_tool {
    my ($token, $name, $args) = @_;
    my $body = JSON::PP->new->encode({ jsonrpc => '2.0', id => 2, method => 'tools/call', params => { name => $name, arguments => $args } });
    my ($st) = Alyd::curl('-H', "Authorization: Bearer $token", '-H', 'Content-Type: application/json', '-H',
        'Accept: application/json, text/event-stream', '--data-binary', $body, $srv->url('/api/mcp'));
    return $st;
}
is(call_tool($tok->{access_token}, 'sites.list', {}), 200, 'a tool of a granted scope runs');
is(call_tool($tok->{access_token}, 'products.delete', { product_id => 'p_x', site_id => 's_x' }), 403,
    'a tool of the unticked scope is 403');

# ---- signed in: the next authorization asks no password ----
{
    my $p2 = AlyOAuth::pkce();
    my $pg = $o->authorize_page(%req, code_challenge => $p2->{challenge}, state => 'again');
    ok(!$pg->{page}{inputs}{email} && !$pg->{page}{inputs}{password}, 'signed in: no email or password inputs');
    like($pg->{body}, qr/Workspace: Acme/, 'the one workspace is named');
    my $d2 = $o->decide($pg);
    is($d2->{status}, 302, 'approve with the sign-in cookie alone');
    ok($d2->{params}{code}, 'a code');
}

# ---- refresh rotation ----
my ($st2, $h2, $r1) = $o->token(grant_type => 'refresh_token', refresh_token => $tok->{refresh_token}, client_id => $app->{client_id});
is($st2, 200, 'refresh: 200');
isnt($r1->{refresh_token}, $tok->{refresh_token}, 'the refresh token is rotated');
is(AlyOAuth::mcp_status($srv, $r1->{access_token}), 200, 'the new access token works');
{
    my ($s, undef, $j) = $o->token(grant_type => 'refresh_token', refresh_token => $r1->{refresh_token}, client_id => $app->{client_id},
        scope => 'read:sites');
    is($s, 200, 'refresh may narrow the scopes');
    is($j->{scope}, 'read:sites offline_access', 'narrowed scope');
    $r1 = $j;
    ($s, undef, $j) = $o->token(grant_type => 'refresh_token', refresh_token => $r1->{refresh_token}, client_id => $app->{client_id},
        scope => 'write:content');
    is($s, 400, 'refresh cannot widen the scopes');
    is($j->{error}, 'invalid_scope', 'invalid_scope');
    ($s, undef, $j) = $o->token(grant_type => 'refresh_token', refresh_token => $r1->{refresh_token}, client_id => $app->{client_id});
    is($s, 200, 'a refused widening did not spend the refresh token');
    $r1 = $j;
}

# ---- a confidential client, both ways of authenticating ----
for my $how (qw(basic post)) {
    my $f = $o->get_code(client_id => $conf->{client_id}, redirect_uri => $cb, scope => 'read:sites');
    my @auth = $how eq 'basic'
      ? (curl => [ '-u', "$conf->{client_id}:$conf->{client_secret}" ])
      : (client_id => $conf->{client_id}, client_secret => $conf->{client_secret});
    my ($s, undef, $j) = $o->token(grant_type => 'authorization_code', code => $f->{code}, redirect_uri => $cb,
        code_verifier => $f->{pkce}{verifier}, @auth);
    is($s, 200, "confidential client with client_secret_$how");
    ok(!exists $j->{refresh_token}, 'no offline_access, no refresh token');
}

# ---- workspaces and scope caps ----
{
    my $ob = AlyOAuth->new($srv);
    my $p = AlyOAuth::pkce();
    my $pg = $ob->authorize_page(%req, code_challenge => $p->{challenge}, scope => 'read:sites write:content');
    my $dd = $ob->decide($pg, email => 'bob@example.com', password => 'bob-password-1');
    is($dd->{status}, 400, 'a user of two workspaces must choose one');
    like($dd->{body}, qr/choose one of your workspaces/, 'the page says so');
    ok($dd->{page}{request}, 'and shows the form again');
    is_deeply([ sort @{ $dd->{page}{workspaces} // [] } ], [ sort $ws, $ws2 ], 'with a choice of the user\'s two workspaces');
    like($dd->{body}, qr/Acme \(\Q$ws\E\)/, 'by name');
    $dd = $ob->decide($dd, workspace => $ws, scopes => [qw(read:sites write:content)]);
    is($dd->{status}, 302, 'with a workspace chosen: approved');
    my ($s, undef, $j) = $ob->token(grant_type => 'authorization_code', code => $dd->{params}{code}, redirect_uri => $cb,
        code_verifier => $p->{verifier}, client_id => $app->{client_id});
    is(AlyOAuth::claims($j->{access_token})->{ws}, $ws, 'the token is for the chosen workspace');
    is($j->{scope}, 'read:sites', 'scopes past the membership cap are not granted');
    $pg = $ob->authorize_page(%req, code_challenge => $p->{challenge}, scope => 'read:sites');
    $dd = $ob->decide($pg, workspace => 'ws_notamemberofthisone');
    is($dd->{status}, 400, 'a workspace the user does not belong to is refused');

    # Only scopes past the cap ticked: nothing the membership allows, so no code.
    $pg = $ob->authorize_page(%req, code_challenge => $p->{challenge}, scope => 'read:sites write:content');
    $dd = $ob->decide($pg, workspace => $ws, scopes => ['write:content']);
    is($dd->{status}, 400, 'only a scope past the membership cap ticked: 400');
    like($dd->{body}, qr/tick at least one scope your membership allows/, 'the page says so');
    ok(!defined $dd->{location}, 'and no code');

    # A scope ticked that the request did not ask for is not granted.
    my $q = AlyOAuth::pkce();
    $pg = $ob->authorize_page(%req, code_challenge => $q->{challenge}, scope => 'read:sites');
    $dd = $ob->decide($pg, workspace => $ws, scopes => [qw(read:sites read:content)]);
    is($dd->{status}, 302, 'read:content ticked beside the requested read:sites: approved');
    (undef, undef, $j) = $ob->token(grant_type => 'authorization_code', code => $dd->{params}{code}, redirect_uri => $cb,
        code_verifier => $q->{verifier}, client_id => $app->{client_id});
    is($j->{scope}, 'read:sites', 'only the requested scope is granted');

    # The cap is read again when the code is redeemed: lowered in between, the token has only what is left.
    $srv->ctl('users', 'add', '--workspace', $ws, '--email', 'cy@example.com', '--password-file', "$tmp/pw-bob");
    my $co = AlyOAuth->new($srv);
    my $f = $co->get_code(client_id => $app->{client_id}, redirect_uri => $cb, scope => 'read:sites read:content',
        email => 'cy@example.com', password => 'bob-password-1');
    ok($f->{code}, 'cy approves read:sites and read:content');
    $srv->ctl('users', 'add', '--workspace', $ws, '--email', 'cy@example.com', '--scopes', 'read:content');
    (undef, undef, $j) = $co->token(grant_type => 'authorization_code', code => $f->{code}, redirect_uri => $cb,
        code_verifier => $f->{pkce}{verifier}, client_id => $app->{client_id});
    is($j->{scope}, 'read:content', 'her cap lowered before redemption: the token carries only read:content');
    is((AlyOAuth::claims($j->{access_token} // '') // {})->{scope}, 'read:content', 'and so does the access token');

    # Every refresh reads the cap again: lowered, the next token narrows; left with nothing, the authorization ends.
    $srv->ctl('users', 'add', '--workspace', $ws, '--email', 'eli@example.com', '--password-file', "$tmp/pw-bob");
    my $eo = AlyOAuth->new($srv);
    my ($et) = $eo->tokens(client_id => $app->{client_id}, redirect_uri => $cb, scope => 'read:sites read:content offline_access',
        email => 'eli@example.com', password => 'bob-password-1');
    is(join(' ', sort split / /, $et->{scope} // ''), 'offline_access read:content read:sites', 'eli: read:sites, read:content, offline');
    $srv->ctl('users', 'add', '--workspace', $ws, '--email', 'eli@example.com', '--scopes', 'read:content');
    my (undef, undef, $rj) = $eo->token(grant_type => 'refresh_token', refresh_token => $et->{refresh_token}, client_id => $app->{client_id});
    is(join(' ', sort split / /, $rj->{scope} // ''), 'offline_access read:content', 'her cap lowered: the refresh carries only what is left');
    is((AlyOAuth::claims($rj->{access_token} // '') // {})->{scope}, 'read:content', 'and so does its access token');
    my (undef, undef, $wj) = $eo->token(grant_type => 'refresh_token', refresh_token => $rj->{refresh_token}, client_id => $app->{client_id},
        scope => 'read:sites');
    is($wj->{error}, 'invalid_scope', 'asking the refresh for the scope the cap took away: invalid_scope');
    $srv->ctl('users', 'add', '--workspace', $ws, '--email', 'eli@example.com', '--scopes', 'read:orders');
    my (undef, undef, $nj) = $eo->token(grant_type => 'refresh_token', refresh_token => $rj->{refresh_token}, client_id => $app->{client_id});
    is($nj->{error}, 'invalid_grant', 'her cap leaving none of the granted scopes: the refresh is invalid_grant');
    like($nj->{error_description} // '', qr/no longer allows any scope/, '... saying why');
    is(AlyOAuth::mcp_status($srv, $rj->{access_token}), 401, 'and the authorization ends: its access token is refused');
}

# ---- deny ----
{
    my $pg = $o->authorize_page(%req, state => 'deny-me');
    my $dd = $o->decide($pg, action => 'deny');
    is($dd->{status}, 302, 'deny: 302');
    is($dd->{params}{error}, 'access_denied', 'error=access_denied');
    is($dd->{params}{state}, 'deny-me', 'with state');
    is($dd->{params}{iss}, $base, 'and iss');
    ok(!exists $dd->{params}{code}, 'and no code');
    my $stranger = AlyOAuth->new($srv);
    $pg = $stranger->authorize_page(%req, state => 'deny-signed-out');
    $dd = $stranger->decide($pg, action => 'deny');
    is($dd->{params}{error}, 'access_denied', 'deny works without signing in');
    is($dd->{params}{state}, 'deny-signed-out', 'with its state');
}

# ---- dynamic client registration ----
{
    my $reg = sub {
        my ($doc) = @_;
        my ($s, $h, $b) = Alyd::curl('-H', 'Content-Type: application/json', '--data-binary', JSON::PP->new->encode($doc),
            $srv->url('/oauth/register'));
        return ($s, Alyd::json_decode($b), $h);
    };
    my ($s, $j, $hh) = $reg->({ redirect_uris => [$cb], client_name => 'Dyn Native', token_endpoint_auth_method => 'none',
        application_type => 'native', grant_types => [qw(authorization_code refresh_token)] });
    is($s, 201, 'RFC 7591 registration: 201');
    like($j->{client_id} // '', qr/^cli_/, 'a client_id');
    ok(!exists $j->{client_secret}, 'auth method none: no secret');
    is(Alyd::header_value($hh, 'cache-control'), 'no-store', 'registration answer: no-store');
    my ($t) = $o->tokens(client_id => $j->{client_id}, redirect_uri => $cb, scope => 'read:sites');
    ok($t && $t->{access_token}, 'a dynamically registered client completes the flow');
    ($s, $j) = $reg->({ redirect_uris => [$cb], client_name => 'Dyn Basic', token_endpoint_auth_method => 'client_secret_basic' });
    is($s, 201, 'a confidential dynamic client');
    like($j->{client_secret} // '', qr/^aly_cs_/, 'gets a secret');
    my $f = $o->get_code(client_id => $j->{client_id}, redirect_uri => $cb, scope => 'read:sites');
    my ($s2) = $o->token(grant_type => 'authorization_code', code => $f->{code}, redirect_uri => $cb,
        code_verifier => $f->{pkce}{verifier}, curl => [ '-u', "$j->{client_id}:$j->{client_secret}" ]);
    is($s2, 200, 'and authenticates with client_secret_basic');

    # The answer is what was stored, never an echo of the request (RFC 7591 3.2.1).
    my %chosen = (client_secret => 'aly_cs_chosenbytheclient00000000000', client_secret_expires_at => 4102444800,
        scope => 'admin:everything', registration_access_token => 'rat-of-my-own', registration_client_uri => 'https://evil.example/',
        logo_uri => 'https://evil.example/logo.png', client_id => 'cli_mine', client_id_issued_at => 1);
    ($s, $j) = $reg->({ redirect_uris => [$cb], client_name => 'Echo', token_endpoint_auth_method => 'none',
        grant_types => ['authorization_code'], application_type => 'web', %chosen });
    is($s, 201, 'a registration carrying fields the server does not issue: 201');
    is_deeply([ sort keys %$j ], [ sort qw(client_id client_id_issued_at client_name redirect_uris token_endpoint_auth_method
        grant_types response_types) ], 'the answer holds what was stored, and none of the fields the client chose to send');
    isnt($j->{client_id}, 'cli_mine', 'the client_id is the issued one');
    ok(abs(($j->{client_id_issued_at} // 0) - time) < 600, 'issued now');
    is_deeply($j->{redirect_uris}, [$cb], 'redirect_uris as stored');
    is($j->{token_endpoint_auth_method}, 'none', 'token_endpoint_auth_method none');
    is_deeply($j->{grant_types}, [qw(authorization_code refresh_token)], 'grant_types: what the server lets every client use');
    my ($st3, undef, $j3) = $o->token(grant_type => 'authorization_code', code => 'x', redirect_uri => $cb, code_verifier => 'y' x 43,
        client_id => $j->{client_id}, client_secret => $chosen{client_secret});
    is($j3->{error}, 'invalid_client', 'the secret the client chose is not one: invalid_client');
    ($s, $j) = $reg->({ redirect_uris => [$cb], client_name => 'Echo Conf', token_endpoint_auth_method => 'client_secret_post', %chosen });
    is($s, 201, 'a confidential registration carrying its own client_secret: 201');
    like($j->{client_secret} // '', qr/^aly_cs_[A-Za-z0-9]{32}$/, 'gets a secret of the server');
    isnt($j->{client_secret}, $chosen{client_secret}, 'not the one it sent');
    is($j->{client_secret_expires_at}, 0, 'which does not expire');
    ok(!exists $j->{scope} && !exists $j->{registration_access_token}, 'and no scope or registration_access_token');
}

# ---- redirect_uri at the token endpoint: required only when the authorization request carried it (RFC 6749 4.1.3) ----
{
    my $code_for = sub {
        my ($redirect) = @_;
        my $f = $o->get_code(client_id => $app->{client_id}, redirect_uri => $redirect, scope => 'read:sites');
        return $f;
    };
    my $redeem = sub {
        my ($f, @redirect) = @_;
        return $o->token(grant_type => 'authorization_code', code => $f->{code} // '', code_verifier => $f->{pkce}{verifier},
            client_id => $app->{client_id}, @redirect);
    };
    my $f = $code_for->(undef);
    like($f->{decision}{location} // '', qr/^\Q$cb\E\?code=/, 'no redirect_uri in the request: the code goes to the client\'s only one');
    my ($s, undef, $j) = $redeem->($f);
    is($s, 200, 'and the token request may omit it too') or diag(explain($j));
    ok($j->{access_token}, 'an access token');
    ($s) = $redeem->($code_for->(undef), redirect_uri => $cb);
    is($s, 200, 'or send it, when it is that one');
    $f = $code_for->(undef);
    ($s, undef, $j) = $redeem->($f, redirect_uri => "$cb/x");
    is($j->{error}, 'invalid_grant', 'sent anyway, another one: invalid_grant');
    ($s, undef, $j) = $redeem->($f, redirect_uri => $cb);
    is($j->{error}, 'invalid_grant', 'and the code is burned');
    $f = $code_for->($cb);
    ($s, undef, $j) = $redeem->($f);
    is($s, 400, 'the authorization request named redirect_uri, the token request does not: 400');
    is($j->{error}, 'invalid_request', 'invalid_request');
    like($j->{error_description} // '', qr/redirect_uri is missing/, 'saying redirect_uri is missing');
    ($s, undef, $j) = $redeem->($f, redirect_uri => '');
    is($j->{error}, 'invalid_request', 'an empty redirect_uri is a missing one');
    ($s) = $redeem->($f, redirect_uri => $cb);
    is($s, 200, 'those refusals did not spend the code');
}

# ---- RFC 7009 revocation ----
{
    my ($t) = $o->tokens(client_id => $app->{client_id}, redirect_uri => $cb, scope => 'read:sites offline_access');
    my ($s) = $o->token(path => '/oauth/revoke', token => $t->{refresh_token}, client_id => $app->{client_id});
    is($s, 200, 'revoking a refresh token: 200');
    is(AlyOAuth::mcp_status($srv, $t->{access_token}), 401, 'its grant\'s access token is refused');
    my (undef, undef, $j) = $o->token(grant_type => 'refresh_token', refresh_token => $t->{refresh_token}, client_id => $app->{client_id});
    is($j->{error}, 'invalid_grant', 'and the refresh token is dead');
    ($t) = $o->tokens(client_id => $app->{client_id}, redirect_uri => $cb, scope => 'read:sites');
    ($s) = $o->token(path => '/oauth/revoke', token => $t->{access_token}, client_id => $conf->{client_id},
        client_secret => $conf->{client_secret});
    is($s, 200, 'another client revoking a token gets 200 (RFC 7009)');
    is(AlyOAuth::mcp_status($srv, $t->{access_token}), 200, 'but the token lives: it was not that client\'s');
    # The token names the grant to end, so only one this server signed counts: its claims under a broken signature do not.
    my ($head, $claims, $sig) = split /\./, $t->{access_token};
    my $mid = int(length($sig) / 2);
    (my $bent = $sig) =~ s/^(.{$mid})(.)/$1 . ($2 eq 'A' ? 'B' : 'A')/e;
    for my $forged (["a changed signature byte", "$head.$claims.$bent"], ['no signature', "$head.$claims."]) {
        ($s) = $o->token(path => '/oauth/revoke', token => $forged->[1],
            client_id => $app->{client_id});
        is($s, 200, "revoking an access token with $forged->[0]: 200 (RFC 7009)");
        is(AlyOAuth::mcp_status($srv, $t->{access_token}), 200, "... and its grant lives: $forged->[0] ends nothing");
    }
    ($s) = $o->token(path => '/oauth/revoke', token => $t->{access_token}, client_id => $app->{client_id});
    is($s, 200, 'revoking an access token: 200');
    is(AlyOAuth::mcp_status($srv, $t->{access_token}), 401, 'the access token is refused');
    ($s) = $o->token(path => '/oauth/revoke', token => 'aly_oauth_rt_unknown', client_id => $app->{client_id});
    is($s, 200, 'an unknown token: 200 as well');
    ($t) = $o->tokens(client_id => $app->{client_id}, redirect_uri => $cb, scope => 'read:sites offline_access');
    ($s) = $o->token(path => '/oauth/revoke', token => $t->{refresh_token}, client_id => $conf->{client_id},
        client_secret => $conf->{client_secret});
    is($s, 200, 'another client revoking a refresh token: 200 (RFC 7009)');
    is(AlyOAuth::mcp_status($srv, $t->{access_token}), 200, 'but its grant lives: the access token still works');
    my (undef, undef, $rj) = $o->token(grant_type => 'refresh_token', refresh_token => $t->{refresh_token}, client_id => $app->{client_id});
    ok($rj->{access_token}, 'and the refresh token too: it was not that client\'s');
}

# ---- alyctl: users, clients, grants; revocation reaches every worker ----
{
    my $users = Alyd::json_decode($srv->ctl('--json', 'users', 'list'));
    my ($ann) = grep { $_->{email} eq 'ann@example.com' } @$users;
    ok($ann, 'users list shows the user (email lower-cased)');
    is($ann->{workspaces}[0]{workspace}, $ws, 'with the membership');
    unlike(JSON::PP->new->encode($users), qr/argon2|hash/i, 'and never the password hash');
    my $clients = Alyd::json_decode($srv->ctl('--json', 'oauth', 'clients', 'list'));
    ok((grep { $_->{client_id} eq $app->{client_id} } @$clients), 'clients list shows the client');
    unlike(JSON::PP->new->encode($clients), qr/aly_cs_/, 'and no secret');
    my ($t) = $o->tokens(client_id => $app->{client_id}, redirect_uri => $cb, scope => 'read:sites');
    my $gid = (split /\./, AlyOAuth::claims($t->{access_token})->{jti})[0];
    my $grants = Alyd::json_decode($srv->ctl('--json', 'oauth', 'grants', 'list', '--workspace', $ws));
    my ($g) = grep { $_->{id} eq $gid } @$grants;
    ok($g, 'grants list shows the grant');
    is($g->{email}, 'ann@example.com', 'with its user');
    is($g->{client_name}, 'Test App', 'and client');
    isnt($g->{last_used}, '-', 'and its last use');
    is(scalar(grep { $_->{workspace} ne $ws } @$grants), 0, '--workspace filters');
    is(AlyOAuth::mcp_status($srv, $t->{access_token}), 200, 'the token works') for 1 .. 4;    # warms both workers' caches
    $srv->ctl('oauth', 'grants', 'revoke', $gid);
    is(join(',', map { AlyOAuth::mcp_status($srv, $t->{access_token}) } 1 .. 6), '401,401,401,401,401,401',
        'after grants revoke, every worker refuses the token at once');
}

# ---- key rotation ----
{
    my ($old) = $o->tokens(client_id => $app->{client_id}, redirect_uri => $cb, scope => 'read:sites');
    my $kid = AlyOAuth::header_of($old->{access_token})->{kid};
    # Rotated by a host whose clock is ahead (alyctl under libfaketime, 5 s on): its retirement stamp lies in this
    # server's future, and the retired key must still verify here.
    my $ahead = OAuthE2E::Clock->available ? OAuthE2E::Clock->new(Alyd::alyctl_bin()) : undef;
    $ahead->advance('+5s') if $ahead;
    my $out;
    {
        local @ENV{ keys %{ $ahead ? $ahead->env : {} } } = values %{ $ahead ? $ahead->env : {} };
        $out = Alyd::json_decode($srv->ctl('--json', 'oauth', 'rotate-key'));
    }
    like($out->{kid} // '', qr/^alyk_/, 'rotate-key names the new key');
    isnt($out->{kid}, $kid, 'a new kid');
    is(AlyOAuth::mcp_status($srv, $old->{access_token}), 200,
        'tokens of the retired key still verify' . ($ahead ? ', retired by a clock 5 s ahead' : ''));
    my ($new) = $o->tokens(client_id => $app->{client_id}, redirect_uri => $cb, scope => 'read:sites');
    is(AlyOAuth::header_of($new->{access_token})->{kid}, $out->{kid}, 'new tokens are signed with the new key');
    is(AlyOAuth::mcp_status($srv, $new->{access_token}), 200, 'and verify');
    my (undef, undef, $b) = Alyd::curl($srv->url('/oauth/jwks'));
    my %kids = map { $_->{kid} => 1 } @{ (Alyd::json_decode($b) // {})->{keys} // [] };
    ok($kids{$kid} && $kids{ $out->{kid} }, 'the JWKS holds the retired and the new key');
}

# ---- password change and removal ----
{
    $srv->ctl('users', 'passwd', 'ann@example.com', '--password-file', "$tmp/pw-new");
    my $pg = $o->authorize_page(%req);
    ok($pg->{page}{inputs}{password}, 'after users passwd, the old sign-in cookie no longer counts');
    my $dd = $o->decide($pg, email => 'ann@example.com', password => 'ann-password-1');
    is($dd->{status}, 401, 'the old password is refused');
    $dd = $o->decide($pg, email => 'ann@example.com', password => 'ann-password-2');
    is($dd->{status}, 302, 'the new one works');
    my ($t) = $o->tokens(client_id => $app->{client_id}, redirect_uri => $cb, scope => 'read:sites');
    is(AlyOAuth::mcp_status($srv, $t->{access_token}), 200, 'a token of the user works');
    $srv->ctl('users', 'remove', 'ann@example.com');
    is(AlyOAuth::mcp_status($srv, $t->{access_token}), 401, 'after users remove, the user\'s tokens are refused');
    my ($ok) = Alyd::run_cmd(Alyd::alyctl_bin(), '-c', $srv->conf, 'users', 'remove', 'ann@example.com');
    isnt($ok, 0, 'removing an unknown user fails');
}

# ---- client removal revokes its grants ----
{
    my $ob = AlyOAuth->new($srv);
    my ($t) = $ob->tokens(client_id => $conf->{client_id}, redirect_uri => $cb, scope => 'read:sites', email => 'bob@example.com',
        password => 'bob-password-1', workspace => $ws, token_extra => { client_secret => $conf->{client_secret} });
    is(AlyOAuth::mcp_status($srv, $t->{access_token}), 200, 'a confidential client\'s token works');
    $srv->ctl('oauth', 'clients', 'remove', $conf->{client_id});
    is(AlyOAuth::mcp_status($srv, $t->{access_token}), 401, 'after clients remove, its tokens are refused');
}

# ---- the signing key is sealed under the pepper: a store without its pepper cannot sign ----
{
    ok($srv->stop, 'server stops');
    my $pepper = $srv->data_dir . '/pepper';
    my $old = Alyd::slurp($pepper);
    Alyd::spew($pepper, join('', map { chr int rand 256 } 1 .. 32));
    $srv->spawn;
    is($srv->wait_ready, undef, 'the store restarts under another pepper');
    my $ob = AlyOAuth->new($srv);
    my $f = $ob->get_code(client_id => $app->{client_id}, redirect_uri => $cb, scope => 'read:sites', email => 'bob@example.com',
        password => 'bob-password-1', workspace => $ws);
    ok($f->{code}, 'a code is issued');
    my ($st, $h, $j) = $ob->token(grant_type => 'authorization_code', code => $f->{code}, redirect_uri => $cb,
        code_verifier => $f->{pkce}{verifier}, client_id => $app->{client_id});
    is($st, 500, 'but the sealed signing key does not open: no token');
    is($j->{error}, 'server_error', 'server_error');
    like($srv->error_log_text // '', qr/does not open with this pepper/, 'and the error log says why');
    ok($srv->stop, 'server stops');
    Alyd::spew($pepper, $old);
    $srv->spawn;
    is($srv->wait_ready, undef, 'back on its own pepper');
    ($f) = $ob->get_code(client_id => $app->{client_id}, redirect_uri => $cb, scope => 'read:sites', email => 'bob@example.com',
        password => 'bob-password-1', workspace => $ws);
    ($st) = $ob->token(grant_type => 'authorization_code', code => $f->{code}, redirect_uri => $cb,
        code_verifier => $f->{pkce}{verifier}, client_id => $app->{client_id});
    is($st, 200, 'it signs again');
}

# ---- no secret reaches a log ----
# Every kind of secret the server handles, used the usual ways and some wrong ones; then the server stops (its
# buffered access log flushed) and no log holds any of them.
{
    $srv->ctl('users', 'add', '--workspace', $ws, '--email', 'dee@example.com', '--password-file', "$tmp/pw-ann");
    my $cc = Alyd::json_decode(
        $srv->ctl('--json', 'oauth', 'clients', 'create', '--name', 'Logs', '--redirect-uri', $cb, '--confidential'));
    my $od = AlyOAuth->new($srv);
    my %secret;
    my $pg = $od->authorize_page(%req);
    $od->decide($pg, email => 'dee@example.com', password => 'wrong-but-secret-9431');
    my $f = $od->get_code(client_id => $cc->{client_id}, redirect_uri => $cb, scope => 'read:sites offline_access',
        email => 'dee@example.com', password => 'ann-password-1');
    my (undef, undef, $j) = $od->token(grant_type => 'authorization_code', code => $f->{code} // '', redirect_uri => $cb,
        code_verifier => $f->{pkce}{verifier}, client_id => $cc->{client_id}, client_secret => $cc->{client_secret});
    my (undef, undef, $j2) = $od->token(grant_type => 'refresh_token', refresh_token => $j->{refresh_token} // '',
        curl => [ '-u', "$cc->{client_id}:$cc->{client_secret}" ]);
    $od->token(grant_type => 'refresh_token', refresh_token => $j->{refresh_token} // '', client_id => $cc->{client_id},
        client_secret => 'aly_cs_wrongwrongwrongwrongwrongwrong');
    is(AlyOAuth::mcp_status($srv, $j2->{access_token} // ''), 200, 'the refreshed access token works');
    my $key = $srv->ctl('keys', 'create', '--workspace', $ws, '--scopes', 'read:sites');
    is(AlyOAuth::mcp_status($srv, $key), 200, 'an API key works');
    (my $bent = $key) =~ s/.$/$& eq 'A' ? 'B' : 'A'/e;
    AlyOAuth::mcp_status($srv, $bent);
    %secret = ('the client secret' => $cc->{client_secret}, 'the code' => $f->{code}, 'the PKCE verifier' => $f->{pkce}{verifier},
        'the access token' => $j->{access_token}, 'the refresh token' => $j->{refresh_token},
        'the refreshed access token' => $j2->{access_token}, 'the new refresh token' => $j2->{refresh_token},
        'the password' => 'ann-password-1', 'a wrong password' => 'wrong-but-secret-9431', 'the API key' => $key,
        'a mistyped API key' => $bent);
    ok(!grep({ !defined $_ || length $_ < 8 } values %secret), 'every secret was issued and used') or diag(explain(\%secret));
    ok($srv->stop, 'server stops (its access log flushed)');
    my $logs = join "\n", $srv->access_log_text // '', $srv->error_log_text // '', $srv->stderr_text // '';
    like($logs, qr{POST /oauth/token}, 'the access log holds the token requests');
    for my $what (sort keys %secret) {
        my $v = $secret{$what} // next;
        ok(index($logs, $v) < 0, "no log holds $what");
        # The JWTs' signatures, and any 24 characters of a secret, are secrets too.
        ok(index($logs, substr($v, -24)) < 0, "nor the last 24 characters of $what") if length $v > 24;
    }
}

# ---- oauth_server off ----
{
    my $s2 = Alyd->start(workers => 1, extra => ['oauth_server off']);
    for my $path ('/.well-known/oauth-authorization-server', '/oauth/jwks', '/oauth/authorize') {
        my ($st) = Alyd::curl($s2->url($path));
        is($st, 404, "oauth_server off: $path is 404");
    }
    my ($st) = Alyd::curl('--data-binary', 'grant_type=x', $s2->url('/oauth/token'));
    is($st, 404, 'oauth_server off: /oauth/token is 404');
    my (undef, undef, $b) = Alyd::curl($s2->url('/.well-known/oauth-protected-resource'));
    is_deeply((Alyd::json_decode($b) // {})->{authorization_servers}, [], 'and the protected-resource metadata names no server');
    ok($s2->stop, 'second server stops');
}

done_testing();
