# Clients identified by a client-ID metadata document, through the consent
# page: a client_id that is an https URL on an allowed host is fetched
# (oauth_cimd.c) from a local HTTPS document server (t/fixtures/cimd-server.mjs)
# and checked here: the document's client_id must be its URL, the
# redirect_uri one it lists, and its server's certificate must name the host
# fetched (a second server has one the test CA signed for another name).
# Every refusal is an HTML page, never a redirect, and a slow document server
# holds up nothing else on the worker.
use strict;
use warnings;
use Test::More;
use File::Temp ();
use POSIX ();
use Alyd;
use AlyOAuth;

my $src = Alyd::srcdir() // '.';
my ($node) = grep { -x } (($ENV{ALY_NODE_DIR} ? "$ENV{ALY_NODE_DIR}/node_modules/node/bin/node" : ()), '/usr/bin/node', '/usr/local/bin/node');
plan skip_all => 'needs the metadata-document fetcher (src/oauth_cimd.c) and its fixture server'
  unless -f "$src/src/oauth_cimd.c" && -f "$src/t/fixtures/cimd-server.mjs";
plan skip_all => 'needs node (scripts/install-node)' unless $node;

Alyd::watchdog(300);

my $tmp = File::Temp->newdir;
my $dir = "$tmp";
# One test CA; two leaves it signs: "leaf" for localhost, the name every document URL uses, and "other" for
# another host name (a document server whose certificate is trusted but not for the name fetched).
my ($ca_exit, undef, $ca_err) = Alyd::run_cmd(qw(openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=alyd-test-ca
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign), '-keyout', "$dir/ca.key", '-out', "$dir/ca.pem");
BAIL_OUT("openssl: $ca_err") if $ca_exit;
for my $leaf (['leaf', 'localhost'], ['other', 'other.example']) {
    my ($name, $host) = @$leaf;
    Alyd::spew("$dir/$name.ext", "subjectAltName=DNS:$host\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n");
    for my $cmd (
        [qw(openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes), '-subj', "/CN=$host", '-keyout', "$dir/$name.key", '-out',
            "$dir/$name.csr"],
        ['openssl', 'x509', '-req', '-in', "$dir/$name.csr", '-CA', "$dir/ca.pem", '-CAkey', "$dir/ca.key", '-CAcreateserial', '-days', 2,
            '-extfile', "$dir/$name.ext", '-out', "$dir/$name.pem"])
    {
        my ($exit, undef, $err) = Alyd::run_cmd(@$cmd);
        BAIL_OUT("openssl: $err") if $exit;
    }
}
# Package variables: a file-scoped lexical handle would be closed (waiting for node) before END could stop node.
our ($docs_fh, $docs, $other_fh, $other);
$docs = open($docs_fh, '-|', $node, "$src/t/fixtures/cimd-server.mjs", "$dir/leaf.key", "$dir/leaf.pem") or BAIL_OUT("node: $!");
my ($port) = (scalar <$docs_fh> // '') =~ /port (\d+)/;
BAIL_OUT('the document server did not start') unless $port;
$other = open($other_fh, '-|', $node, "$src/t/fixtures/cimd-server.mjs", "$dir/other.key", "$dir/other.pem") or BAIL_OUT("node: $!");
my ($other_port) = (scalar <$other_fh> // '') =~ /port (\d+)/;
BAIL_OUT('the second document server did not start') unless $other_port;
END { kill 'TERM', grep { $_ } $docs, $other }

my $srv = Alyd->start(workers => 1, extra => ['oauth_cimd_allow localhost', "oauth_cimd_ca_file $dir/ca.pem"]);
my $ws = $srv->ctl('workspace', 'create', 'Acme');
Alyd::spew("$dir/pw", "right-password\n");
$srv->ctl('users', 'add', '--workspace', $ws, '--email', 'ann@example.com', '--password-file', "$dir/pw");
my $o   = AlyOAuth->new($srv);
my $cid = "https://localhost:$port/ok.json";
my $cb  = 'http://127.0.0.1:33418/callback';    # the one redirect URI the fixture's documents list

my ($t, $f) = $o->tokens(client_id => $cid, redirect_uri => $cb, email => 'ann@example.com', password => 'right-password',
    scope => 'read:sites');
is($f->{page}{status}, 200, 'a metadata-document client gets the consent page');
like($f->{page}{body}, qr/CIMD test client/, 'named by the document\'s client_name');
like($f->{page}{body}, qr/127\.0\.0\.1:33418/, 'with its redirect host');
is($f->{decision}{status}, 302, 'approved');
like($f->{decision}{location} // '', qr/^\Q$cb\E\?code=/, 'to the redirect URI the document lists');
ok($t && $t->{access_token}, 'the code is exchanged with client_id = the document URL (a public client)');
is(AlyOAuth::claims($t->{access_token})->{client_id}, $cid, 'the token names the document URL as client_id');
is(AlyOAuth::mcp_status($srv, $t->{access_token}), 200, 'and works at /api/mcp');
{
    my $g = $o->get_code(client_id => $cid, redirect_uri => $cb, scope => 'read:sites');
    my ($st, undef, $j) = $o->token(grant_type => 'authorization_code', code => $g->{code}, redirect_uri => $cb,
        code_verifier => $g->{pkce}{verifier}, client_id => $cid, client_secret => 'anything');
    is($j->{error}, 'invalid_client', 'a metadata-document client presenting a secret: invalid_client');
}

sub refused {
    my ($client, $redirect, $what, $re) = @_;
    my $p = $o->authorize_page(response_type => 'code', client_id => $client, redirect_uri => $redirect, state => 's',
        code_challenge => AlyOAuth::pkce()->{challenge}, code_challenge_method => 'S256');
    is($p->{status}, 400, "$what: 400");
    ok(!defined Alyd::header_value($p->{headers}, 'location'), "$what: no redirect");
    like($p->{body}, $re, "$what: says why");
}
refused($cid, 'http://127.0.0.1:33418/other', 'a redirect URI the document does not list', qr/not one this client registered/);
refused("https://localhost:$port/wrongid.json", $cb, 'a document whose client_id is another URL', qr/client_id is not its own URL/);
# A document may list a redirect URI that registration would refuse: that one is not taken, the good one still is.
refused("https://localhost:$port/badredirect.json", 'http://evil.example/cb', 'a listed redirect URI no client may register',
    qr/not one this client registered/);
is($o->authorize_page(response_type => 'code', client_id => "https://localhost:$port/badredirect.json", redirect_uri => $cb,
    state => 's', code_challenge => AlyOAuth::pkce()->{challenge}, code_challenge_method => 'S256')->{status}, 200,
    'the same document\'s loopback redirect URI: the consent page');
refused("https://localhost:$port/redirect.json", $cb, 'a document server that redirects', qr/redirect/);
# The same documents from a server whose certificate the CA signed for other.example, fetched as localhost.
refused("https://localhost:$other_port/ok.json", $cb, 'a document server whose trusted certificate names another host', qr/cannot be used: hostname mismatch/);
refused("https://localhost:$port/big.json", $cb, 'a document over 5 KB', qr/larger than/);
refused("https://localhost:$port/html.json", $cb, 'a document that is not JSON', qr/cannot be used/);
refused("https://evil.example/ok.json", $cb, 'a host not in oauth_cimd_allow', qr/will not fetch/);
refused("http://localhost:$port/ok.json", $cb, 'a plain-http client_id', qr/unknown client_id|will not fetch/);

# A slow document server: the one worker keeps serving while the fetch waits for its deadline.
{
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        my $p = AlyOAuth->new($srv)->authorize_page(response_type => 'code', client_id => "https://localhost:$port/slow.json",
            redirect_uri => $cb, code_challenge => AlyOAuth::pkce()->{challenge}, code_challenge_method => 'S256');
        Alyd::spew("$dir/slow", "$p->{status}\n$p->{body}");
        POSIX::_exit(0);
    }
    select(undef, undef, undef, 0.5);
    my ($st) = Alyd::curl($srv->url('/healthz'));
    is($st, 200, 'while a slow document is being fetched, the worker answers other requests');
    my $pg = $o->authorize_page(response_type => 'code', client_id => $cid, redirect_uri => $cb,
        code_challenge => AlyOAuth::pkce()->{challenge}, code_challenge_method => 'S256');
    is($pg->{status}, 200, 'and other consent pages (from the cache)');
    waitpid($pid, 0);
    my ($status, $body) = split /\n/, Alyd::slurp("$dir/slow") // "0\n", 2;
    is($status, 400, 'the slow document is refused');
    like($body // '', qr/cannot be used/, 'with a page that says so');
}

ok($srv->stop, 'server stops');
done_testing();
