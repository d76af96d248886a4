# The official TypeScript SDK clients connecting to alyd with OAuth alone, end
# to end and headless: v1 (@modelcontextprotocol/sdk 1.32.2) and v2
# (@modelcontextprotocol/client 2.4.0), each through t/interop/oauth-sdk-client.mjs,
# an application whose OAuthClientProvider sends its "browser" to the consent
# page (oauth-consent.mjs signs in and approves).  Per SDK and per way of
# registering (dynamic registration; a client-ID metadata document served over
# HTTPS by t/fixtures/cimd-server.mjs on an allowed test host), and v2 once more
# pinned to the 2026-07-28 era:
#   discovery from the 401, registration, one consent, the code with state and
#   iss, the token, tools/list and tools/call as the user's workspace; then
#   alyd's clock moves two hours on, the access token is refused, and the SDK
#   refreshes it by itself (no second consent) and the call goes through; the
#   refresh token it replaced is then refused and revokes the family.
use strict;
use warnings;
use Test::More;
use File::Temp ();
use JSON::PP ();
use MIME::Base64 qw(decode_base64url);
use Alyd;
use OAuthE2E;

Alyd::watchdog(400);
my $e = OAuthE2E->node_or_skip('@modelcontextprotocol/sdk', '@modelcontextprotocol/client');
plan skip_all => 'libfaketime is not installed (scripts/install-deps --test)' unless OAuthE2E::Clock->available;
$e->script('oauth-consent.mjs');
my $client = $e->script('oauth-sdk-client.mjs');
my $docsrv = Alyd::srcdir() . '/t/fixtures/cimd-server.mjs';

# The document server: HTTPS on a loopback port with a throw-away certificate for
# "localhost", which alyd is told to allow and to trust.
my $tmp = File::Temp->newdir;
my ($cert, $key) = Alyd->make_cert("$tmp");
my $cbport = Alyd::free_port();
my $redirect = "http://127.0.0.1:$cbport/callback";
mkdir "$tmp/docs" or die "mkdir: $!";
Alyd::spew("$tmp/docs/app.json", JSON::PP->new->canonical->encode({
    client_id => '{{origin}}/docs/app.json', client_name => 'CIMD app (TypeScript SDK)', redirect_uris => [$redirect],
    grant_types => ['authorization_code', 'refresh_token'], response_types => ['code'], token_endpoint_auth_method => 'none' }));
my $docs = $e->spawn({}, $e->node, $docsrv, $key, $cert, "$tmp/docs");
my $docport = $docs->wait_for(qr/^port (\d+)$/m, 20) or BAIL_OUT('the CIMD document server did not start: ' . $docs->stderr);
my $docurl = "https://localhost:$docport/docs/app.json";

my $clock = OAuthE2E::Clock->new;
my $srv = Alyd->start(workers => 2, env => $clock->env,
    extra => ['oauth_cimd_allow localhost', "oauth_cimd_ca_file $cert"]);
my $who = OAuthE2E::user($srv);
my $issuer = $srv->url('');
my $hours = 0;

sub claims {
    my ($t) = @_;
    my ($jws) = ($t // '') =~ /^aly_oauth_(.+)$/ or return {};
    return Alyd::json_decode(decode_base64url((split /\./, $jws)[1] // '')) // {};
}

sub refresh_status {
    my ($id, $rt) = @_;
    my ($st, $h, $b) = Alyd::curl('--data-urlencode', 'grant_type=refresh_token', '--data-urlencode', "refresh_token=$rt",
        '--data-urlencode', "client_id=$id", $srv->url('/oauth/token'));
    return ($st, Alyd::json_decode($b) // {});
}

sub mcp_status {
    my ($token) = @_;
    my ($st) = Alyd::curl('-H', "Authorization: Bearer $token", '-H', 'Content-Type: application/json', '-H',
        'Accept: application/json, text/event-stream', '--data-binary', '{"jsonrpc":"2.0","id":1,"method":"ping"}',
        $srv->url('/api/mcp'));
    return $st;
}

for my $case (['v1', 'dcr'], ['v2', 'dcr'], ['v1', 'cimd'], ['v2', 'cimd'], ['v2', 'dcr', 'modern']) {
    my ($sdk, $reg, $modern) = @$case;
    my $what = "SDK $sdk ($reg" . ($modern ? ", 2026-07-28" : '') . ')';
    my %opt = (email => $who->{email}, password => $who->{password}, redirectUrl => $redirect,
        calls => [{ name => 'sites.list', arguments => {} }], later => [{ name => 'sites.list', arguments => {} }]);
    $opt{clientMetadataUrl} = $docurl if $reg eq 'cimd';
    $opt{modern} = JSON::PP::true if $modern;
    # v2 asks for offline_access itself (alyd lists it in scopes_supported); v1 leaves it to the application.
    $opt{offlineAccess} = JSON::PP::true if $sdk eq 'v1';
    my $p = $e->spawn({}, $e->node, $client, $sdk, $srv->url('/api/mcp'), JSON::PP->new->encode(\%opt));
    my $phase = $p->wait_for(qr/^(\{"phase":"connected"\})$/m, 30);
    ok($phase, "$what: connected and called a tool") or diag($p->stdout . $p->stderr);
    $hours += 2;
    $clock->advance("+${hours}h", $srv);
    $p->say('go');
    my $exit = $p->finish(30);
    my $r = Alyd::json_decode((grep { /^\{"sdk"/ } split /\n/, $p->stdout)[-1] // '') // {};
    is($exit, 0, "$what: ran cleanly") or diag($p->stdout . $p->stderr);

    my $consents = $r->{consents} // [];
    is(scalar @$consents, 1, "$what: one consent for the whole run, refresh included");
    my $c = $consents->[0] // {};
    my $q = { URI::_q($c->{url}) };
    is($c->{status}, 302, "$what: the consent page approved with a redirect");
    is($c->{params}{iss}, $issuer, "$what: the redirect carries iss = the issuer");
    ok(defined $c->{params}{state} && length $c->{params}{code}, "$what: and the code with the client's state");
    is($q->{code_challenge_method}, 'S256', "$what: the SDK used PKCE S256");
    is($q->{resource}, $srv->url('/api/mcp'), "$what: and named the resource");
    ok((grep { $_ eq 'offline_access' } split / /, $q->{scope} // ''), "$what: asked for offline_access");
    if ($reg eq 'dcr') {
        is(scalar @{ $r->{registrations} }, 1, "$what: registered once, dynamically");
        like($r->{registrations}[0]{client_id} // '', qr/^cli_/, "$what: got a client_id from /oauth/register");
        is($q->{client_id}, $r->{registrations}[0]{client_id}, "$what: and used it");
    } else {
        # The SDK saves the URL as its client information; a dynamic registration would save a cli_ id.
        ok(!(grep { ($_->{client_id} // '') ne $docurl } @{ $r->{registrations} }), "$what: no dynamic registration");
        is($q->{client_id}, $docurl, "$what: the client_id is the metadata document's URL");
    }
    my $id = $q->{client_id} // '';

    my @tok = @{ $r->{tokens} // [] };
    is(scalar @tok, 2, "$what: two token responses: the code's and the refresh's");
    my $cl = claims($tok[0]{access_token});
    is($cl->{iss}, $issuer, "$what: access token iss");
    is($cl->{aud}, $srv->url('/api/mcp'), "$what: access token aud is the MCP resource");
    is($cl->{ws}, $who->{ws}, "$what: access token is for the user's workspace");
    is($cl->{client_id}, $id, "$what: access token names the client");
    like($tok[0]{refresh_token} // '', qr/^aly_oauth_rt_/, "$what: a refresh token came with offline_access");
    ok(@tok == 2 && $tok[1]{access_token} ne $tok[0]{access_token} && $tok[1]{refresh_token} ne $tok[0]{refresh_token},
        "$what: the refresh gave a new access token and rotated the refresh token");
    is(claims($tok[1]{access_token})->{ws}, $who->{ws}, "$what: the refreshed token is for the same workspace");

    is($r->{protocolVersion}, '2026-07-28', "$what: spoke the modern era") if $modern;
    ok((grep { $_ eq 'sites.list' } @{ $r->{tools} // [] }), "$what: tools/list");
    ok($r->{results}[0] && !$r->{results}[0]{isError}, "$what: tools/call before expiry") or diag(explain $r->{results});
    ok($r->{later}[0] && !$r->{later}[0]{isError}, "$what: tools/call after expiry, on the refreshed token")
      or diag(explain $r);

    # Seen from outside: the first access token is past its expiry, the current one works, and
    # presenting the replaced refresh token is reuse: refused, and the family goes with it.
    is(mcp_status($tok[0]{access_token}), 401, "$what: the first access token has expired");
    is(mcp_status($tok[1]{access_token} // ''), 200, "$what: the refreshed access token is accepted");
    my ($st, $j) = refresh_status($id, $tok[0]{refresh_token} // '');
    is($st, 400, "$what: the replaced refresh token is refused");
    is($j->{error}, 'invalid_grant', "$what: invalid_grant");
    is(mcp_status($tok[1]{access_token} // ''), 401, "$what: and its reuse revoked the family's access token");
    ($st) = refresh_status($id, $tok[1]{refresh_token} // '');
    is($st, 400, "$what: and the family's current refresh token");
}

# The same runs from alyd's side (the access log is written in batches: stop flushes it).  Each
# client began without a token and found the authorization server from the 401; only the three
# DCR runs registered; every run exchanged a code and, after the clock moved, a refresh token.
$srv->stop;
my @log = split /\n/, $srv->access_log_text // '';
my $count = sub { my ($re) = @_; scalar grep { $_ =~ $re } @log };
cmp_ok($count->(qr{ - POST /api/mcp - 401 }), '>=', 10, 'alyd: each run met a 401 first and again at expiry');
cmp_ok($count->(qr{ GET /\.well-known/oauth-protected-resource/api/mcp - 200 }), '>=', 5,
    'alyd: the clients read the protected-resource metadata the 401 pointed at');
cmp_ok($count->(qr{ GET /\.well-known/oauth-authorization-server - 200 }), '>=', 5, 'alyd: and the RFC 8414 metadata');
is($count->(qr{ POST /oauth/register - 201 }), 3, 'alyd: three dynamic registrations (none for the metadata-document client)');
is($count->(qr{ POST /oauth/token - 200 }), 10, 'alyd: ten token responses: a code and a refresh per run');
is($count->(qr{ POST /oauth/authorize - 302 }), 5, 'alyd: five consents, one per run');
$docs->finish(1);
done_testing;

package URI;
# The query of a URL as a hash (last value wins).
sub _q {
    my ($url) = @_;
    my ($qs) = ($url // '') =~ /\?(.*)$/ or return ();
    my %q;
    for (split /&/, $qs) {
        my ($k, $v) = map { my $s = $_ // ''; $s =~ tr/+/ /; $s =~ s/%([0-9A-Fa-f]{2})/chr hex $1/ge; $s } split /=/, $_, 2;
        $q{$k} = $v;
    }
    return %q;
}
