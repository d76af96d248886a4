# Attacks on the built-in authorization server, each refused by a test that
# tampers exactly what the check verifies: bad or look-alike redirect URIs
# and clients (an HTML page, never a redirect), open-redirect tricks in state,
# a dynamic client's errors and Deny before anyone signed in (a page, not a
# redirect to whatever URI its registrant chose),
# missing or plain PKCE, a wrong verifier, code replay (revoking what the code
# issued), codes of other clients, CSRF tokens missing or from another
# request or browser, a forged request blob, wrong passwords and brute force
# (per account and per address), refresh-token reuse, another resource, a
# wrong client_secret, oversized and malformed forms and JSON, XSS in what the
# page shows, and registration abuse.
use strict;
use POSIX ();
use warnings;
use Test::More;
use File::Temp ();
use JSON::PP ();
use MIME::Base64 ();
use Digest::SHA ();
use Alyd;
use AlyOAuth;

Alyd::watchdog(400);

my $srv      = Alyd->start(workers => 2);
my $base     = $srv->url('');
my $resource = $srv->url('/api/mcp');
my $port     = Alyd::free_port();
my $cb       = "http://127.0.0.1:$port/callback";
my $tmp      = File::Temp->newdir;
Alyd::spew("$tmp/pw", "right-password\n");
my $ws = $srv->ctl('workspace', 'create', 'Acme');
$srv->ctl('users', 'add', '--workspace', $ws, '--email', "$_\@example.com", '--password-file', "$tmp/pw") for qw(ann carl dora eve fay gus hal);
my $app   = Alyd::json_decode($srv->ctl('--json', 'oauth', 'clients', 'create', '--name', 'App', '--redirect-uri', $cb));
my $other = Alyd::json_decode($srv->ctl('--json', 'oauth', 'clients', 'create', '--name', 'Other', '--redirect-uri', $cb));
my $conf  = Alyd::json_decode(
    $srv->ctl('--json', 'oauth', 'clients', 'create', '--name', 'Conf', '--redirect-uri', $cb, '--confidential'));
my $o = AlyOAuth->new($srv);

sub req_for {
    my (%over) = @_;
    my $p = AlyOAuth::pkce();
    return ($p, response_type => 'code', client_id => $app->{client_id}, redirect_uri => $cb, state => 's1',
        code_challenge => $p->{challenge}, code_challenge_method => 'S256', scope => 'read:sites offline_access', %over);
}

# An HTML refusal that redirects nowhere.
sub html_refusal {
    my ($r, $what, $re) = @_;
    is($r->{status}, 400, "$what: 400");
    ok(!defined Alyd::header_value($r->{headers}, 'location'), "$what: no redirect");
    like(Alyd::header_value($r->{headers}, 'content-type') // '', qr{^text/html}, "$what: an HTML page");
    like($r->{body}, $re, "$what: says why") if $re;
}

# What the server MACs its cookies, request blobs and CSRF tokens with: HMAC-SHA256 under the pepper file of
# "domain:data", base64url.  Lets a test seal a value with one field wrong and everything else right.
sub mac {
    my ($domain, $data) = @_;
    open my $f, '<:raw', $srv->data_dir . '/pepper' or die "pepper: $!";
    local $/;
    my $pepper = <$f>;
    return MIME::Base64::encode_base64url(Digest::SHA::hmac_sha256("$domain:$data", $pepper));
}

# ---- DNS rebinding: a name alyd does not serve gets neither a page nor a token ----
{
    my (undef, %q) = req_for();
    my $qs = AlyOAuth::form(map { ($_ => $q{$_}) } sort keys %q);
    for my $path ("/oauth/authorize?$qs", '/.well-known/oauth-authorization-server', '/oauth/jwks') {
        my ($st, $h, $b) = Alyd::curl('-H', 'Host: rebind.example', $srv->url($path));
        (my $name = $path) =~ s/\?.*//;
        is($st, 421, "GET $name under another Host: 421") or diag(substr($h . $b, 0, 300));
        unlike($b, qr/<form|"issuer"|"keys"/, "GET $name under another Host: nothing of the page");
    }
    my ($st) = Alyd::curl('-H', 'Host: rebind.example', '-H', 'Content-Type: application/x-www-form-urlencoded', '--data-binary',
        'grant_type=authorization_code&code=x', $srv->url('/oauth/token'));
    is($st, 421, 'POST /oauth/token under another Host: 421');
    my ($ok) = Alyd::curl($srv->url('/oauth/jwks'));
    is($ok, 200, 'the served name still gets it') or diag("status $ok");
}

# ---- client_id and redirect_uri: an error page, never a redirect ----
{
    my (undef, %q) = req_for();
    html_refusal($o->authorize_page(%q, client_id => 'cli_doesnotexist0000000'), 'unknown client_id', qr/unknown client_id/);
    html_refusal($o->authorize_page(%q, client_id => undef), 'missing client_id', qr/client_id is missing/);
    for my $bad ("http://127.0.0.1:$port/callback/", "http://127.0.0.1:$port/callback?x=1", "http://127.0.0.1:$port/callbacK",
        "http://127.0.0.1:" . ($port + 1) . "/callback", "http://localhost:$port/callback", "https://127.0.0.1:$port/callback",
        "http://127.0.0.1:$port\@evil.example/callback", "http://evil.example/callback", "http://127.0.0.1:$port/callback#x",
        "http://127.0.0.1:$port/callback/../callback")
    {
        html_refusal($o->authorize_page(%q, redirect_uri => $bad), "look-alike redirect_uri $bad", qr/not one this client registered/);
    }
    my $r = $o->authorize_page(%q, redirect_uri => "http://127.0.0.1:$port/<script>alert(1)</script>");
    html_refusal($r, 'a redirect_uri with markup');
    unlike($r->{body}, qr/<script>/, 'the error page escapes the redirect_uri it shows');
    like($r->{body}, qr/&lt;script&gt;/, 'escaped as text');
    my $csp = Alyd::header_value($r->{headers}, 'content-security-policy') // '';
    like($csp, qr/frame-ancestors 'none'/, 'error pages carry the CSP too');
    my $qs = AlyOAuth::form(%q) . '&redirect_uri=' . AlyOAuth::enc('http://evil.example/cb');
    my ($st, $h) = Alyd::curl($srv->url("/oauth/authorize?$qs"));
    is($st, 400, 'redirect_uri given twice (the second evil): 400');
    ok(!defined Alyd::header_value($h, 'location'), 'and no redirect');
}

# ---- errors after the redirect URI is settled go back to it, with state and iss (a client of alyctl) ----
my %early_errors;
{
    my %cases = (
        'missing PKCE'           => [ { code_challenge => undef, code_challenge_method => undef }, 'invalid_request', qr/PKCE/ ],
        'plain PKCE method'      => [ { code_challenge_method => 'plain' },                          'invalid_request', qr/S256/ ],
        'no challenge method'    => [ { code_challenge_method => undef },                            'invalid_request', qr/S256/ ],
        'short challenge'        => [ { code_challenge => 'abc' },                                   'invalid_request', qr/43/ ],
        'response_type token'    => [ { response_type => 'token' },                    'unsupported_response_type', qr/code/ ],
        'another resource'       => [ { resource => 'https://evil.example/api/mcp' },  'invalid_target',            qr/resource/ ],
        'unknown scope'          => [ { scope => 'read:sites admin:all' },             'invalid_scope',             qr/scope/ ],
    );
    for my $name (sort keys %cases) {
        my ($over, $err, $re) = @{ $cases{$name} };
        my (undef, %q) = req_for(%$over);
        my $r = $o->authorize_page(%q);
        my $loc = Alyd::header_value($r->{headers}, 'location') // '';
        my $p = AlyOAuth::query_params($loc);
        is($r->{status}, 302, "$name: redirected back");
        like($loc, qr/^\Q$cb\E\?/, "$name: only to the registered URI");
        is($p->{error}, $err, "$name: error=$err");
        like($p->{error_description} // '', $re, "$name: described");
        is($p->{state}, 's1', "$name: state");
        is($p->{iss}, $base, "$name: iss");
        ok(!exists $p->{code}, "$name: no code");
    }
    %early_errors = %cases;
}

# ---- a dynamic client's redirect URI is its registrant's choice: errors reach it only through a signed-in browser ----
{
    my $phish = 'https://phish.example/landing';
    my ($st, undef, $b) = Alyd::curl('-H', 'Content-Type: application/json', '--data-binary',
        JSON::PP->new->encode({ redirect_uris => [ $phish, $cb ], client_name => 'Dyn' }), $srv->url('/oauth/register'));
    my $dyn = Alyd::json_decode($b) // {};
    is($st, 201, 'anyone may register a dynamic client with an https redirect URI of their choosing');
    my $stranger = AlyOAuth->new($srv);
    for my $name (sort keys %early_errors) {
        my ($over, $err, $re) = @{ $early_errors{$name} };
        my (undef, %q) = req_for(client_id => $dyn->{client_id}, redirect_uri => $phish, %$over);
        my $r = $stranger->authorize_page(%q);
        html_refusal($r, "dynamic client, $name, no one signed in", $re);
        like($r->{body}, qr/\Q$err\E/, "dynamic client, $name: the page names $err");
    }
    my (undef, %q) = req_for(client_id => $dyn->{client_id}, redirect_uri => $phish);
    my $pg = $stranger->authorize_page(%q);
    is($pg->{status}, 200, "a dynamic client's valid request: the consent page");
    my $d = $stranger->decide($pg, action => 'deny');
    is($d->{status}, 200, 'Deny without signing in: a page of this server');
    ok(!defined $d->{location}, 'not a redirect to the registered URI');
    like($d->{body}, qr/Access denied/, 'saying access was denied');
    $d = $stranger->decide($pg, action => 'deny', email => 'ann@example.com', password => 'wrong-password');
    is($d->{status}, 401, 'Deny with a wrong password: the sign-in fails (401)');
    ok(!defined $d->{location}, 'and nothing goes back');
    $d = $stranger->decide($pg, action => 'deny', email => 'dora@example.com', password => 'right-password');
    is($d->{status}, 302, 'Deny with the right password signs in, and then goes back');
    like($d->{location} // '', qr/^\Q$phish\E\?error=access_denied&/, 'with access_denied');
    ok(!exists $d->{params}{code}, 'and no code');

    my $si = AlyOAuth->new($srv);
    my (undef, %ok) = req_for(client_id => $dyn->{client_id}, redirect_uri => $cb);
    $d = $si->decide($si->authorize_page(%ok), email => 'ann@example.com', password => 'right-password');
    is($d->{status}, 302, 'ann signs in and approves the dynamic client');
    (undef, %q) = req_for(client_id => $dyn->{client_id}, redirect_uri => $phish, response_type => 'token');
    my $r = $si->authorize_page(%q);
    my $loc = Alyd::header_value($r->{headers}, 'location') // '';
    is($r->{status}, 302, 'signed in, an error of the dynamic client goes back to it');
    like($loc, qr/^\Q$phish\E\?error=unsupported_response_type&/, 'to its redirect URI, with the error');
    (undef, %q) = req_for(client_id => $dyn->{client_id}, redirect_uri => $phish);
    $d = $si->decide($si->authorize_page(%q), action => 'deny');
    is($d->{status}, 302, 'signed in, Deny goes back to it');
    is($d->{params}{error}, 'access_denied', 'with access_denied');
}

# ---- open-redirect tricks in state ----
{
    my $evil = "x&redirect_uri=https://evil.example/&code=forged#frag\r\nLocation: https://evil.example/";
    my ($p, %q) = req_for(state => $evil);
    my $pg = $o->authorize_page(%q);
    is($pg->{status}, 200, 'a state full of tricks still gets the page');
    my $d = $o->decide($pg, email => 'ann@example.com', password => 'right-password');
    is($d->{status}, 302, 'approved');
    like($d->{location}, qr/^\Q$cb\E\?code=[A-Za-z0-9]+&state=[^&#\s]+&iss=[^&#\s]+$/, 'the Location is the registered URI with encoded parameters');
    is($d->{params}{state}, $evil, 'state comes back byte for byte');
    ok(!ref $d->{params}{code} && $d->{params}{code} ne 'forged', 'one code, not the forged one');
    unlike($d->{headers}, qr/^Location: https:\/\/evil/mi, 'no injected header');
}

# ---- a code whose user was removed before it is redeemed buys nothing ----
{
    my $fo = AlyOAuth->new($srv);
    my $f = $fo->get_code(client_id => $app->{client_id}, redirect_uri => $cb, scope => 'read:sites', email => 'fay@example.com',
        password => 'right-password');
    ok($f->{code}, 'fay approves: a code');
    $srv->ctl('users', 'remove', 'fay@example.com');
    my ($st, undef, $j) = $fo->token(grant_type => 'authorization_code', code => $f->{code}, redirect_uri => $cb,
        code_verifier => $f->{pkce}{verifier}, client_id => $app->{client_id});
    is($st, 400, 'fay removed before the code is redeemed: 400');
    is($j->{error}, 'invalid_grant', 'invalid_grant');
    like($j->{error_description} // '', qr/no longer a member/, 'saying the account is gone');
    ok(!defined $j->{access_token} && !defined $j->{refresh_token}, 'and no token');

    # Removed and added again under the same email: a new account, which never approved the code.
    my $go = AlyOAuth->new($srv);
    $f = $go->get_code(client_id => $app->{client_id}, redirect_uri => $cb, scope => 'read:sites', email => 'gus@example.com',
        password => 'right-password');
    ok($f->{code}, 'gus approves: a code');
    $srv->ctl('users', 'remove', 'gus@example.com');
    $srv->ctl('users', 'add', '--workspace', $ws, '--email', 'gus@example.com', '--password-file', "$tmp/pw");
    ($st, undef, $j) = $go->token(grant_type => 'authorization_code', code => $f->{code}, redirect_uri => $cb,
        code_verifier => $f->{pkce}{verifier}, client_id => $app->{client_id});
    is($j->{error}, 'invalid_grant', 'gus removed and added again before the code is redeemed: invalid_grant');
    ok(!defined $j->{access_token}, 'no token for the new account');
}

# ---- PKCE at the token endpoint ----
{
    my $f = $o->get_code(client_id => $app->{client_id}, redirect_uri => $cb, scope => 'read:sites');
    my ($st, $h, $j) = $o->token(grant_type => 'authorization_code', code => $f->{code}, redirect_uri => $cb,
        code_verifier => AlyOAuth::pkce()->{verifier}, client_id => $app->{client_id});
    is($st, 400, 'a wrong code_verifier: 400');
    is($j->{error}, 'invalid_grant', 'invalid_grant');
    is(Alyd::header_value($h, 'cache-control'), 'no-store', 'errors are no-store too');
    ($st, undef, $j) = $o->token(grant_type => 'authorization_code', code => $f->{code}, redirect_uri => $cb,
        code_verifier => $f->{pkce}{verifier}, client_id => $app->{client_id});
    is($j->{error}, 'invalid_grant', 'the code is burned by the wrong verifier: the right one no longer works');

    $f = $o->get_code(client_id => $app->{client_id}, redirect_uri => $cb, scope => 'read:sites');
    ($st, undef, $j) = $o->token(grant_type => 'authorization_code', code => $f->{code}, redirect_uri => $cb,
        client_id => $app->{client_id});
    is($st, 400, 'no code_verifier: 400');
    is($j->{error}, 'invalid_request', 'invalid_request');
    ($st, undef, $j) = $o->token(grant_type => 'authorization_code', code => $f->{code}, redirect_uri => "$cb/x",
        code_verifier => $f->{pkce}{verifier}, client_id => $app->{client_id});
    is($j->{error}, 'invalid_grant', 'a redirect_uri other than the authorization request\'s: invalid_grant');

    $f = $o->get_code(client_id => $app->{client_id}, redirect_uri => $cb, scope => 'read:sites');
    ($st, undef, $j) = $o->token(grant_type => 'authorization_code', code => $f->{code}, redirect_uri => $cb,
        code_verifier => $f->{pkce}{verifier}, client_id => $other->{client_id});
    is($j->{error}, 'invalid_grant', 'another client presenting the code: invalid_grant');

    # A 42-character verifier (RFC 7636 asks 43 to 128) sent with the very challenge made from it.
    my $short = 'a' x 42;
    my (undef, %sq) = req_for(code_challenge => MIME::Base64::encode_base64url(Digest::SHA::sha256($short)));
    my $sd = $o->decide($o->authorize_page(%sq), email => 'ann@example.com', password => 'right-password');
    ok($sd->{params}{code}, 'a code for a challenge made from a 42-character verifier');
    ($st, undef, $j) = $o->token(grant_type => 'authorization_code', code => $sd->{params}{code} // '', redirect_uri => $cb,
        code_verifier => $short, client_id => $app->{client_id});
    is($j->{error}, 'invalid_grant', 'that verifier, though its challenge matches: invalid_grant');

    # resource twice, the good one first.
    $f = $o->get_code(client_id => $app->{client_id}, redirect_uri => $cb, scope => 'read:sites');
    ($st, undef, $j) = $o->token(raw => AlyOAuth::form(grant_type => 'authorization_code', code => $f->{code}, redirect_uri => $cb,
        code_verifier => $f->{pkce}{verifier}, client_id => $app->{client_id}, resource => $resource, resource => 'https://evil.example/api/mcp'));
    is($st, 400, 'resource twice at the token endpoint: 400');
    like($j->{error_description} // '', qr/resource appears more than once/, '... saying so');
    ok(!defined $j->{access_token}, '... and no token');
    ($st, undef, $j) = $o->token(grant_type => 'authorization_code', code => $f->{code}, redirect_uri => $cb,
        code_verifier => $f->{pkce}{verifier}, client_id => $app->{client_id}, resource => 'https://evil.example/api/mcp');
    is($st, 400, 'a token for another resource: 400');
    is($j->{error}, 'invalid_target', 'invalid_target');
    ($st, undef, $j) = $o->token(grant_type => 'authorization_code', code => $f->{code}, redirect_uri => $cb,
        code_verifier => $f->{pkce}{verifier}, client_id => $app->{client_id});
    is($st, 200, 'the code was not spent by those refusals');
}

# ---- code replay revokes what the code issued ----
{
    my $f = $o->get_code(client_id => $app->{client_id}, redirect_uri => $cb, scope => 'read:sites offline_access');
    my @ex = (grant_type => 'authorization_code', code => $f->{code}, redirect_uri => $cb, code_verifier => $f->{pkce}{verifier},
        client_id => $app->{client_id});
    my ($st, undef, $t) = $o->token(@ex);
    is($st, 200, 'first redemption');
    is(AlyOAuth::mcp_status($srv, $t->{access_token}), 200, 'its token works');
    my ($st2, undef, $j) = $o->token(@ex);
    is($st2, 400, 'a replayed code: 400');
    is($j->{error}, 'invalid_grant', 'invalid_grant');
    is(AlyOAuth::mcp_status($srv, $t->{access_token}), 401, 'the replay revoked the access token the code issued');
    (undef, undef, $j) = $o->token(grant_type => 'refresh_token', refresh_token => $t->{refresh_token}, client_id => $app->{client_id});
    is($j->{error}, 'invalid_grant', 'and its refresh token');
    (undef, undef, $j) = $o->token(@ex, code => 'A' x 43);
    is($j->{error}, 'invalid_grant', 'a made-up code: invalid_grant');
}

# ---- refresh-token reuse revokes the family ----
{
    my ($t) = $o->tokens(client_id => $app->{client_id}, redirect_uri => $cb, scope => 'read:sites offline_access');
    my (undef, undef, $t2) = $o->token(grant_type => 'refresh_token', refresh_token => $t->{refresh_token}, client_id => $app->{client_id});
    ok($t2->{refresh_token}, 'rotated once');
    my ($st, undef, $j) = $o->token(grant_type => 'refresh_token', refresh_token => $t->{refresh_token}, client_id => $app->{client_id});
    is($st, 400, 'the rotated refresh token again: 400');
    is($j->{error}, 'invalid_grant', 'invalid_grant');
    is(AlyOAuth::mcp_status($srv, $t2->{access_token}), 401, 'the family\'s newest access token is revoked');
    (undef, undef, $j) = $o->token(grant_type => 'refresh_token', refresh_token => $t2->{refresh_token}, client_id => $app->{client_id});
    is($j->{error}, 'invalid_grant', 'and its newest refresh token');
    my ($t3) = $o->tokens(client_id => $app->{client_id}, redirect_uri => $cb, scope => 'read:sites offline_access');
    (undef, undef, $j) = $o->token(grant_type => 'refresh_token', refresh_token => $t3->{refresh_token}, client_id => $other->{client_id});
    is($j->{error}, 'invalid_grant', 'another client presenting a refresh token: invalid_grant');
    (undef, undef, $j) = $o->token(grant_type => 'refresh_token', refresh_token => $t3->{refresh_token}, client_id => $app->{client_id});
    ok($j->{access_token}, 'which did not spend it');
}

# ---- client authentication ----
{
    my $f = $o->get_code(client_id => $conf->{client_id}, redirect_uri => $cb, scope => 'read:sites');
    my @ex = (grant_type => 'authorization_code', code => $f->{code}, redirect_uri => $cb, code_verifier => $f->{pkce}{verifier});
    my $wrong = $conf->{client_secret};
    substr($wrong, -1, 1) = substr($wrong, -1) eq 'A' ? 'B' : 'A';
    my ($st, $h, $j) = $o->token(@ex, curl => [ '-u', "$conf->{client_id}:$wrong" ]);
    is($st, 401, 'client_secret_basic with a wrong secret: 401');
    is($j->{error}, 'invalid_client', 'invalid_client');
    like(Alyd::header_value($h, 'www-authenticate') // '', qr/^Basic/, 'with a Basic challenge');
    ($st, undef, $j) = $o->token(@ex, client_id => $conf->{client_id}, client_secret => $wrong);
    is($j->{error}, 'invalid_client', 'client_secret_post with a wrong secret: invalid_client');
    ($st, undef, $j) = $o->token(@ex, client_id => $conf->{client_id});
    is($j->{error}, 'invalid_client', 'a confidential client without its secret: invalid_client');
    ($st, undef, $j) = $o->token(@ex, client_id => $conf->{client_id}, client_secret => $conf->{client_secret},
        curl => [ '-u', "$conf->{client_id}:$conf->{client_secret}" ]);
    is($j->{error}, 'invalid_request', 'two authentication methods at once: invalid_request');
    ($st, undef, $j) = $o->token(@ex, client_id => $app->{client_id}, curl => [ '-u', "$conf->{client_id}:$conf->{client_secret}" ]);
    is($st, 401, 'Basic credentials of one client, client_id of another in the form: 401');
    like($j->{error_description} // '', qr/differs/, '... saying they differ');
    ($st, undef, $j) = $o->token(@ex, client_id => $app->{client_id}, client_secret => 'made-up');
    is($j->{error}, 'invalid_client', 'a public client presenting a secret: invalid_client');
    ($st, undef, $j) = $o->token(@ex, client_id => $conf->{client_id}, client_secret => $conf->{client_secret});
    is($st, 200, 'the right secret: 200 (the refusals spent nothing)');
}

# ---- CSRF and the request blob ----
{
    my (undef, %q) = req_for();
    my $pa = $o->authorize_page(%q, state => 'A');
    my $pb = $o->authorize_page(%q, state => 'B');
    my $d = $o->decide($pa, csrf => '', email => 'ann@example.com', password => 'right-password');
    is($d->{status}, 403, 'no CSRF token: 403');
    ok(!defined $d->{location}, 'no redirect');
    $d = $o->decide($pa, csrf => $pb->{page}{csrf}, email => 'ann@example.com', password => 'right-password');
    is($d->{status}, 403, 'the CSRF token of another request: 403');
    my $stranger = AlyOAuth->new($srv);
    my $ps = $stranger->authorize_page(%q);
    $d = $o->decide($ps, email => 'ann@example.com', password => 'right-password');
    is($d->{status}, 403, 'a form made for another browser (its CSRF cookie): 403');
    my $req = $pa->{page}{request};
    my ($body, $mac) = split /\./, $req;
    my $json = Alyd::json_decode(MIME::Base64::decode_base64url($body));
    $json->{r} = 'https://evil.example/cb';
    my $forged = MIME::Base64::encode_base64url(JSON::PP->new->encode($json)) . ".$mac";
    $d = $o->decide($pa, request => $forged, email => 'ann@example.com', password => 'right-password');
    is($d->{status}, 400, 'a request blob with another redirect URI (old MAC): 400');
    like($d->{body}, qr/missing, expired or altered/, 'refused for its MAC (not for the CSRF token that goes with it)');
    ok(!defined $d->{location}, 'no redirect to it');
    # Sealed as the server seals, with a CSRF token made for it: only the expiry is wrong.
    my $sealed = sub { my ($j) = @_; my $b = MIME::Base64::encode_base64url(JSON::PP->new->encode($j)); return "$b." . mac('authz-request', $b) };
    my $ck = $o->{cookies}{'__Host-aly_csrf'};
    is(mac('authz-request', $body), $mac, 'the test seals a request blob as the server does');
    my $late = $sealed->({ %$json, r => $cb, t => 1000 });
    $d = $o->decide($pa, request => $late, csrf => mac('csrf', "$ck|$late"), email => 'ann@example.com', password => 'right-password');
    is($d->{status}, 400, 'an expired request blob (its MAC and CSRF token right): 400');
    like($d->{body}, qr/missing, expired or altered/, 'an expired request blob: says why');
    my $fresh = $sealed->({ %$json, r => $cb });
    $d = $o->decide($pa, request => $fresh, csrf => mac('csrf', "$ck|$fresh"), action => 'deny');
    is($d->{status}, 302, 'the same sealing with a live expiry is taken (so the refusal above is the expiry)');
    $d = $o->decide($pa, action => 'steal', email => 'ann@example.com', password => 'right-password');
    is($d->{status}, 400, 'an unknown action: 400');
    $d = $o->decide($pa, email => 'ann@example.com', password => 'right-password');
    is($d->{status}, 302, 'the untampered form still works');
}

# ---- XSS in what the page shows ----
{
    my $name = q{<script>alert("x")</script><img src=x onerror=alert(1)>'"};
    my ($st, undef, $b) = Alyd::curl('-H', 'Content-Type: application/json', '--data-binary',
        JSON::PP->new->encode({ redirect_uris => ["http://127.0.0.1:$port/cb?q='onmouseover=alert(1)"], client_name => $name }),
        $srv->url('/oauth/register'));
    my $c = Alyd::json_decode($b) // {};
    is($st, 201, 'a client named with markup registers');
    my $p = AlyOAuth::pkce();
    my $pg = $o->authorize_page(response_type => 'code', client_id => $c->{client_id},
        redirect_uri => "http://127.0.0.1:$port/cb?q='onmouseover=alert(1)", code_challenge => $p->{challenge},
        code_challenge_method => 'S256', state => q{"><script>alert(2)</script>});
    is($pg->{status}, 200, 'its consent page');
    unlike($pg->{body}, qr/<script|<img|<[^>]*onerror|'onmouseover/i, 'no markup of the client name, redirect URI or state reaches the page');
    like($pg->{body}, qr/&lt;script&gt;alert\(&quot;x&quot;\)&lt;\/script&gt;/, 'the name is shown escaped');
}

# ---- malformed and oversized input ----
{
    my (undef, %q) = req_for();
    my $pg = $o->authorize_page(%q);
    my $d = $o->decide($pg, raw => 'request=%zz&csrf=x');
    is($d->{status}, 400, 'a bad % escape in the consent form: 400');
    $d = $o->decide($pg, raw => "request=\xff\xfe&csrf=x");
    is($d->{status}, 400, 'invalid UTF-8 in the consent form: 400');
    $d = $o->decide($pg, raw => 'a=1&' x 100);
    is($d->{status}, 400, 'more than 64 fields: 400');
    $d = $o->decide($pg, raw => 'request=' . ('A' x 70000));
    is($d->{status}, 413, 'a 70 KB form: 413');
    $d = $o->decide($pg, type => 'application/json', raw => '{"action":"approve"}');
    is($d->{status}, 415, 'not a form: 415');
    my ($st, undef, $j) = $o->token(raw => 'grant_type=authorization_code&code=%g0');
    is($st, 400, 'token endpoint, bad escape: 400');
    is($j->{error}, 'invalid_request', 'invalid_request');
    ($st, undef, $j) = $o->token(raw => 'grant_type=password&client_id=' . $app->{client_id});
    is($j->{error}, 'unsupported_grant_type', 'grant_type password: unsupported_grant_type');
    ($st, undef, $j) = $o->token(raw => "grant_type=refresh_token&grant_type=authorization_code&client_id=$app->{client_id}");
    is($j->{error}, 'invalid_request', 'a repeated parameter: invalid_request');
    ($st, undef, $j) = $o->token(raw => 'x=' . ('A' x 70000));
    is($st, 413, 'token endpoint, 70 KB: 413');
    my ($s2, undef, $b2) = Alyd::curl('-H', 'Content-Type: application/json', '--data-binary', '{"redirect_uris":["http://127.0.0.1/cb"],',
        $srv->url('/oauth/register'));
    is($s2, 400, 'registration, truncated JSON: 400');
    is((Alyd::json_decode($b2) // {})->{error}, 'invalid_client_metadata', 'invalid_client_metadata');
    ($s2, undef, $b2) = Alyd::curl('-H', 'Content-Type: application/json', '--data-binary',
        '{"redirect_uris":["http://127.0.0.1/cb"],"redirect_uris":["https://evil.example/"]}', $srv->url('/oauth/register'));
    is($s2, 400, 'registration, duplicate keys: 400');
    ($s2, undef, $b2) = Alyd::curl('-H', 'Content-Type: application/json', '--data-binary',
        JSON::PP->new->encode({ redirect_uris => ['http://127.0.0.1/cb'], client_name => 'x' x 70000 }), $srv->url('/oauth/register'));
    is($s2, 413, 'registration, 70 KB: 413');
    for my $u ('http://evil.example/cb', 'javascript:alert(1)', 'https://example.com/cb#frag', 'https://user@example.com/cb',
        'custom-scheme:/cb')
    {
        ($s2, undef, $b2) = Alyd::curl('-H', 'Content-Type: application/json', '--data-binary',
            JSON::PP->new->encode({ redirect_uris => [$u] }), $srv->url('/oauth/register'));
        is((Alyd::json_decode($b2) // {})->{error}, 'invalid_redirect_uri', "registration refuses redirect URI $u");
    }
    ($s2, undef, $b2) = Alyd::curl('-H', 'Content-Type: application/json', '--data-binary',
        JSON::PP->new->encode({ redirect_uris => ['https://ok.example/cb'], grant_types => ['client_credentials'] }),
        $srv->url('/oauth/register'));
    is((Alyd::json_decode($b2) // {})->{error}, 'invalid_client_metadata', 'registration refuses grant_types it does not do');
}

# ---- the sign-in cookie: email, account id, expiry and password generation under one MAC ----
{
    my (undef, %q) = req_for();
    my ($da, $an) = (AlyOAuth->new($srv), AlyOAuth->new($srv));
    is($da->decide($da->authorize_page(%q), email => 'dora@example.com', password => 'right-password')->{status}, 302, 'dora signs in');
    is($an->decide($an->authorize_page(%q), email => 'ann@example.com', password => 'right-password')->{status}, 302,
        'ann signs in, in another browser');
    my %id = map { $_->{email} => $_->{id} } @{ Alyd::json_decode($srv->ctl('--json', 'users', 'list')) };
    my $cookie = $da->{cookies}{'__Host-aly_session'} // '';
    my ($email, $uid, $exp, $gen, $m) = split /\./, $cookie;
    my (undef, undef, undef, $ann_gen) = split /\./, $an->{cookies}{'__Host-aly_session'} // '';
    is($uid, $id{'dora@example.com'}, "the cookie names dora's account id");
    is($gen, $ann_gen, 'dora and ann are at the same password generation (so only the MAC can tell their cookies apart)');
    is(mac('session', "$email.$uid.$exp.$gen"), $m, 'the test seals a sign-in cookie as the server does');
    my $ann = MIME::Base64::encode_base64url('ann@example.com');
    my $aid = $id{'ann@example.com'};
    my $flip = $m;
    substr($flip, 3, 1) = substr($flip, 3, 1) eq 'A' ? 'B' : 'A';
    my $seal = sub { my $b = join '.', @_; return "$b." . mac('session', $b) };
    my %bad = (
        "ann's email under dora's MAC"     => "$ann.$uid.$exp.$gen.$m",
        "ann's id under dora's MAC"        => "$email.$aid.$exp.$gen.$m",
        'a later expiry under the same MAC' => join('.', $email, $uid, $exp + 86400, $gen, $m),
        'one character of the MAC changed'  => "$email.$uid.$exp.$gen.$flip",
        'an expiry past, sealed'            => $seal->($email, $uid, 1000, $gen),
        'another generation, sealed'        => $seal->($email, $uid, $exp, $gen + 1),
        "dora's email with ann's id, sealed" => $seal->($email, $aid, $exp, $gen),
        'no account id, sealed (the old form)' => $seal->($email, $exp, $gen),
    );
    for my $what (sort keys %bad) {
        $da->{cookies}{'__Host-aly_session'} = $bad{$what};
        my $pg = $da->authorize_page(%q);
        ok($pg->{page}{inputs}{password}, "a sign-in cookie with $what: the page asks for the password");
        my $d = $da->decide($pg);
        is($d->{status}, 401, "$what: approving without signing in is refused (401)");
        ok(!defined $d->{location}, "$what: no code");
    }
    $da->{cookies}{'__Host-aly_session'} = $seal->($ann, $aid, $exp, $gen);
    my $d = $da->decide($da->authorize_page(%q));
    is($d->{status}, 302, 'a cookie sealed right is taken as it names (the refusals above are each their one field)');
}

# ---- a sign-in cookie dies with its account: removed and added again under the same email is another account ----
{
    my (undef, %q) = req_for();
    my $ho = AlyOAuth->new($srv);
    is($ho->decide($ho->authorize_page(%q), email => 'hal@example.com', password => 'right-password')->{status}, 302,
        'hal signs in and approves');
    my $old = $ho->{cookies}{'__Host-aly_session'};
    ok($old, 'hal has a sign-in cookie');
    my $pg = $ho->authorize_page(%q);
    like($pg->{body}, qr/Signed in as hal\@example\.com/, 'with it the consent page says who is signed in');
    $srv->ctl('users', 'remove', 'hal@example.com');
    Alyd::spew("$tmp/pw2", "another-password\n");
    $srv->ctl('users', 'add', '--workspace', $ws, '--email', 'hal@example.com', '--password-file', "$tmp/pw2");
    my (undef, undef, undef, $gen_old) = split /\./, $old;
    my $new = AlyOAuth->new($srv);
    $new->decide($new->authorize_page(%q), email => 'hal@example.com', password => 'another-password');
    my (undef, $new_id, undef, $gen_new) = split /\./, $new->{cookies}{'__Host-aly_session'} // '';
    is($gen_new, $gen_old, 'the new account is at the generation the old one was (so only the account id tells them apart)');
    isnt($new_id, (split /\./, $old)[1], 'and has another id');
    $pg = $ho->authorize_page(%q);
    is($pg->{status}, 200, 'the old cookie, after hal was removed and added again: a page');
    unlike($pg->{body}, qr/Signed in as/, 'that does not say anyone is signed in');
    ok($pg->{page}{inputs}{password}, 'but asks for the password');
    my $d = $ho->decide($pg);
    is($d->{status}, 401, 'approving with the old cookie and no password: 401');
    ok(!defined $d->{location}, 'no code for the new account');
    $d = $ho->decide($pg, email => 'hal@example.com', password => 'right-password');
    is($d->{status}, 401, "nor with the removed account's password");
}

# ---- the client is read again when the form comes back ----
{
    my $gone = Alyd::json_decode($srv->ctl('--json', 'oauth', 'clients', 'create', '--name', 'Gone', '--redirect-uri', $cb));
    my ($p, %q) = req_for(client_id => $gone->{client_id});
    my $ob = AlyOAuth->new($srv);
    my $pg = $ob->authorize_page(%q);
    is($pg->{status}, 200, 'a client about to be removed: its consent page');
    $srv->ctl('oauth', 'clients', 'remove', $gone->{client_id});
    my $d = $ob->decide($pg, email => 'dora@example.com', password => 'right-password');
    html_refusal($d, 'the client removed before the form came back', qr/no longer registered/);
}

# ---- wrong passwords sent at once: the account's 5 count every attempt in flight ----
# Each sign-in's password check runs on a verifier thread; attempts sent
# together are all in flight before any has failed.  Each takes its unit of
# the budgets before its check starts, so 12 at once give 5 failures and 7
# refusals, not 12 guesses.
{
    my (undef, %q) = req_for();
    my $ob = AlyOAuth->new($srv);
    my $pg = $ob->authorize_page(%q);
    my @kids;
    for my $i (1 .. 12) {
        pipe(my $r, my $w) or die "pipe: $!";
        my $pid = fork // die "fork: $!";
        if ($pid == 0) {
            close $r;
            my $d = $ob->decide($pg, email => 'eve@example.com', password => "wrong-at-once-$i");
            print {$w} $d->{status};
            close $w;
            POSIX::_exit(0);
        }
        close $w;
        push @kids, [$pid, $r];
    }
    my %by;
    for my $k (@kids) {
        my $st = readline($k->[1]) // 'none';
        waitpid($k->[0], 0);
        $by{$st}++;
    }
    is($by{401} // 0, 5, '12 wrong passwords at once: 5 are checked and fail (401)') or diag(join ' ', %by);
    is($by{429} // 0, 7, 'and 7 are refused before any check (429)');
    my $d = $ob->decide($pg, email => 'eve@example.com', password => 'right-password');
    is($d->{status}, 429, 'then the right password is refused too');
}

# ---- wrong password, then brute force: per account, then per address ----
{
    my (undef, %q) = req_for();
    my $ob = AlyOAuth->new($srv);
    my $pg = $ob->authorize_page(%q);
    my $d = $ob->decide($pg, email => 'carl@example.com', password => 'wrong-password');
    is($d->{status}, 401, 'a wrong password: 401');
    ok(!defined $d->{location}, 'no redirect');
    like($d->{body}, qr/wrong email or password/, 'the page says so');
    ok($d->{page}{request} && $d->{page}{csrf}, 'and offers the form again');
    $d = $ob->decide($pg, email => 'nobody@example.com', password => 'right-password');
    is($d->{status}, 401, 'an unknown account: the same 401');
    # An unknown account is checked against a stand-in hash (same time); its password must not open it.
    $d = $ob->decide($pg, email => 'nobody@example.com', password => "not anyone's password");
    is($d->{status}, 401, 'an unknown account with the stand-in hash\'s own password: 401');
    ok(!defined $d->{location}, 'and no code');
    $ob->decide($pg, email => 'carl@example.com', password => "wrong-$_") for 2 .. 5;
    $d = $ob->decide($pg, email => 'carl@example.com', password => 'right-password');
    is($d->{status}, 429, 'after 5 failures the account refuses even the right password');
    ok((Alyd::header_value($d->{headers}, 'retry-after') // 0) > 0, 'with Retry-After');
    $d = $ob->decide($pg, email => 'CARL@Example.COM', password => 'right-password');
    is($d->{status}, 429, 'the same account in other letter case: still refused (the limit is per account, not per spelling)');
    $d = $ob->decide($pg, email => 'dora@example.com', password => 'right-password');
    is($d->{status}, 302, 'another account from the same address still signs in');
    $ob->forget_cookies;
    $pg = $ob->authorize_page(%q);
    my $n = 0;
    $n++ while $n < 30 && $ob->decide($pg, email => "user$n\@example.com", password => 'x')->{status} == 401;
    ok($n <= 20, "the address is stopped after at most 20 failures across accounts ($n)");
    $d = $ob->decide($pg, email => 'dora@example.com', password => 'right-password');
    is($d->{status}, 429, 'then even a right password from that address is refused');
}

# ---- registration is rate-limited per address ----
{
    my $n = 0;
    while ($n < 40) {
        my ($s) = Alyd::curl('-H', 'Content-Type: application/json', '--data-binary', '{"redirect_uris":["http://127.0.0.1/cb"]}',
            $srv->url('/oauth/register'));
        last if $s != 201;
        $n++;
    }
    ok($n >= 10 && $n < 40, "registrations stop at the per-address limit ($n)");
    my ($s, $h) = Alyd::curl('-H', 'Content-Type: application/json', '--data-binary', '{"redirect_uris":["http://127.0.0.1/cb"]}',
        $srv->url('/oauth/register'));
    is($s, 429, 'then 429');
    ok((Alyd::header_value($h, 'retry-after') // 0) > 0, 'with Retry-After');
}

ok($srv->stop, 'server stops');

done_testing();
