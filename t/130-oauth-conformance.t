# The official MCP conformance suite's authorization-server scenarios
# (@modelcontextprotocol/conformance 0.2.0-alpha.12, `conformance
# authorization`) against alyd's built-in authorization server: the RFC 8414
# metadata scenario and the code grant.  The grant scenario prints an
# authorization URL and waits for the browser to come back to its callback
# server; here the person at the browser is t/interop/oauth-consent.mjs, which
# signs in on alyd's consent page, approves, and follows the redirect.  The
# grant runs twice: for a client registered with alyctl, and for one whose
# client_id is a metadata document alyd fetches over HTTPS.
#
# The criterion is every scenario passing and the suite's exit status.  A
# second run where the person denies must fail the grant scenario (the suite
# sees error=access_denied): the test can tell a pass from a fail.
use strict;
use warnings;
use Test::More;
use File::Temp ();
use JSON::PP ();
use Alyd;
use OAuthE2E;

Alyd::watchdog(300);
my $e = OAuthE2E->node_or_skip('@modelcontextprotocol/conformance');
my $suite = $e->dir . '/node_modules/@modelcontextprotocol/conformance/dist/index.js';
my $consent = $e->script('oauth-consent.mjs');

# The suite's client also as a client-ID metadata document, served over HTTPS for "localhost".
my $tmp = File::Temp->newdir;
my ($cert, $key) = Alyd->make_cert("$tmp");
my $cbport = Alyd::free_port();
mkdir "$tmp/docs" or die "mkdir: $!";
Alyd::spew("$tmp/docs/suite.json", JSON::PP->new->encode({ client_id => '{{origin}}/docs/suite.json',
    client_name => 'MCP conformance (CIMD)', redirect_uris => ["http://127.0.0.1:$cbport/callback"],
    token_endpoint_auth_method => 'none' }));
my $docs = $e->spawn({}, $e->node, Alyd::srcdir() . '/t/fixtures/cimd-server.mjs', $key, $cert, "$tmp/docs");
my $docport = $docs->wait_for(qr/^port (\d+)$/m, 20) or BAIL_OUT('the CIMD document server did not start: ' . $docs->stderr);

my $srv = Alyd->start(workers => 2, extra => ['oauth_cimd_allow localhost', "oauth_cimd_ca_file $cert"]);
my $who = OAuthE2E::user($srv);
my $app = Alyd::json_decode($srv->ctl('--json', 'oauth', 'clients', 'create', '--name', 'MCP conformance',
    '--redirect-uri', "http://127.0.0.1:$cbport/callback"));
like($app->{client_id} // '', qr/\S/, 'a public client registered for the suite with its callback');

# One run of the suite; $action is what the person at the consent page does.
sub run_suite {
    my ($action, $client_id) = @_;
    my $p = $e->spawn({}, $e->node, $suite, 'authorization', '--url', $srv->url(''), '--client-id', $client_id // $app->{client_id},
        '--resource', $srv->url('/api/mcp'), '-p', $cbport);
    my $url = $p->wait_for(qr{^(http://\S+/oauth/authorize\?\S+)$}m, 30);
    my $person;
    if ($url) {
        my ($x, $out, $err) = Alyd::run_cmd('env', "ALY_OAUTH_EMAIL=$who->{email}", "ALY_OAUTH_PASSWORD=$who->{password}",
            "ALY_OAUTH_ACTION=$action", $e->node, $consent, $url);
        $person = Alyd::json_decode($out) // { error => "$out$err" };
    }
    my $exit = $p->finish(60);
    my %res;
    my $out = $p->stdout;
    # The pretty printer's scenario lines: "✓ name: N passed, M failed" (or ✗).
    while ($out =~ /^\s*(✓|✗)\s+(\S+):\s+(\d+) passed, (\d+) failed/mg) {
        $res{$2} = { ok => $1 eq '✓' && $4 == 0, pass => $3, fail => $4 };
    }
    return { url => $url, person => $person, exit => $exit, res => \%res, out => $out, err => $p->stderr };
}

my $r = run_suite('approve');
ok($r->{url}, 'the code-grant scenario asked for the browser at /oauth/authorize') or diag($r->{out} . $r->{err});
is($r->{person}{status}, 302, 'the person approved on the consent page: 302') or diag(explain $r->{person});
is($r->{person}{callbackStatus}, 200, "the suite's callback server took the redirect");
ok($r->{res}{'authorization-server-metadata-endpoint'}{ok}, 'authorization-server-metadata-endpoint passes')
  or diag($r->{out});
ok($r->{res}{'authorization-code-grant'}{ok}, 'authorization-code-grant passes') or diag($r->{out});
is(scalar(grep { !$_->{ok} } values %{ $r->{res} }), 0, 'no scenario failed');
is($r->{exit}, 0, 'the suite exits 0') or diag($r->{out} . $r->{err});
my ($checks, $failed) = (0, 0);
for (values %{ $r->{res} }) { $checks += $_->{pass} + $_->{fail}; $failed += $_->{fail} }
diag('conformance authorization: ' . scalar(keys %{ $r->{res} }) . " scenarios, $checks checks, $failed failed");

$r = run_suite('approve', "https://localhost:$docport/docs/suite.json");
is($r->{person}{status}, 302, 'CIMD client: the person approved');
ok($r->{res}{'authorization-code-grant'}{ok}, 'CIMD client: authorization-code-grant passes') or diag($r->{out} . $r->{err});
is($r->{exit}, 0, 'CIMD client: the suite exits 0');

$r = run_suite('deny');
is($r->{person}{status}, 302, 'denied: alyd still redirects to the registered callback');
is($r->{person}{params}{error}, 'access_denied', 'denied: error=access_denied');
ok($r->{res}{'authorization-code-grant'} && !$r->{res}{'authorization-code-grant'}{ok},
    'denied: the suite reports the code grant as failed (so a pass above means something)') or diag($r->{out});
isnt($r->{exit}, 0, 'denied: the suite exits non-zero');

$srv->stop;
$docs->finish(1);
done_testing;
