# Credentials against a real alyd: the API key matrix and the JWT matrix
# (well-formed, malformed, unknown, revoked, expired, wrong algorithm).  Every refusal must be a 401 with the right WWW-Authenticate and
# Cache-Control: no-store, and must change nothing in the store.
use strict;
use warnings;
use Test::More;
use File::Temp qw(tempdir);
use JSON::PP ();
use MIME::Base64 qw(encode_base64url);
use POSIX ();
use Alyd;

sub json_encode { JSON::PP->new->canonical->encode($_[0]) }

# Runs $cb in a child process; returns its pid.
sub in_child {
    my ($cb) = @_;
    my $pid = fork // die "fork: $!";
    if ($pid == 0) { $cb->(); POSIX::_exit(0) }
    return $pid;
}

Alyd::watchdog(240);

my $python = -x '/usr/bin/python3' ? '/usr/bin/python3' : 'python3';
my $mint   = Alyd::srcdir() . '/t/lib/mintjwt.py';
my $keys   = tempdir('alyd-jwt-XXXXXX', TMPDIR => 1, CLEANUP => 1);

sub sh {
    my (@cmd) = @_;
    my ($exit, $out, $err) = Alyd::run_cmd(@cmd);
    die "@cmd failed: $err" if $exit != 0;
    return $out;
}

# Keys made here, for this run only.
sh('openssl', 'genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', "$keys/rsa.pem");
sh('openssl', 'genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', "$keys/$_.pem") for qw(ec ec2);
sh('openssl', 'pkey', '-in', "$keys/rsa.pem", '-pubout', '-out', "$keys/rsa.pub.pem");
Alyd::spew("$keys/jwks.json", sh($python, $mint, 'jwks', "rsa1=$keys/rsa.pem", "ec1=$keys/ec.pem", "ec2=$keys/ec2.pem"));

my $issuer = 'https://auth.example.test';
my $srv = Alyd->start(
    workers => 2,
    bin     => $ENV{ALYD_TEST},
    # This test refuses dozens of credentials from one address on purpose: lift the brute-force limit (t/90 tests it).
    extra   => ["oauth_issuer $issuer", "oauth_jwks_file $keys/jwks.json", "oauth_leeway 60s",
        'auth_failure_limit 100000/second burst=100000', 'rate_limit 100000/second burst=100000',
        # Tokens issued to this client get a budget small enough to spend in a test.
        'oauth_client_rate_limit tight-client 3/minute burst=3']
);
my $resource = $srv->url('/api/mcp');
my $metadata = $srv->url('/.well-known/oauth-protected-resource/api/mcp');

sub ctl {
    my (@args) = @_;
    return Alyd::run_cmd(Alyd::alyctl_bin(), '-c', $srv->conf, @args);
}

sub ctl_ok {
    my ($exit, $out, $err) = ctl(@_);
    die "alyctl @_ failed: $err" if $exit != 0;
    chomp $out;
    return $out;
}

my $ws_a = ctl_ok('workspace', 'create', 'Shop A');
my $ws_b = ctl_ok('workspace', 'create', 'Shop B');
like($ws_a, qr/^ws_[0-9A-Za-z]{20}$/, 'workspace id shape');

sub mcp {
    my ($auth) = @_;
    my @h = defined $auth ? ('-H', "Authorization: $auth") : ();
    my ($st, $hdr, $body) = Alyd::curl('-X', 'POST', @h, '-H', 'Content-Type: application/json',
        '--data', '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"aly_test_whoami"}}', $resource);
    return ($st, $hdr, $body);
}

# The same call with each credential in turn over one connection (curl --next): [status, new connections] per call.
sub one_connection {
    my @args;
    for my $auth (@_) {
        push @args, '--next' if @args;
        push @args, '-s', '-o', '/dev/null', '-w', '%{http_code} %{num_connects}\n', '-X', 'POST', '-H', "Authorization: $auth", '-H',
            'Content-Type: application/json', '--data', '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"aly_test_whoami"}}',
            $resource;
    }
    my ($exit, $out) = Alyd::run_cmd('curl', '--max-time', 20, @args);
    return map { [split ' '] } split /\n/, $out // '';
}

# Passing the gate: the test build's aly_test_whoami tool names the principal.
sub passes {
    my ($auth, $name, $want_ws) = @_;
    my ($st, $hdr, $body) = mcp($auth);
    is($st, 200, "$name: passes the gate");
    my $j = eval { Alyd::json_decode($body) } // {};
    is($j->{result}{structuredContent}{workspace}, $want_ws, "$name: principal of the right workspace") if $want_ws;
    return $j->{result}{structuredContent}{principal};
}

sub refused {
    my ($auth, $name, $desc_re) = @_;
    my ($st, $hdr, $body) = mcp($auth);
    is($st, 401, "$name: 401");
    my $www = Alyd::header_value($hdr, 'www-authenticate') // '';
    like($www, qr/^Bearer realm="aly"/, "$name: Bearer challenge");
    like($www, qr/error="invalid_token"/, "$name: invalid_token");
    like($www, qr/resource_metadata="\Q$metadata\E"/, "$name: resource_metadata");
    like($www, qr/error_description="[^"]*$desc_re/, "$name: says why") if $desc_re;
    is(Alyd::header_value($hdr, 'cache-control'), 'no-store', "$name: no-store");
    my $j = eval { Alyd::json_decode($body) } // {};
    is($j->{error}{code}, -32001, "$name: JSON-RPC error body");
}

# ---- API keys ----
my $key_a = ctl_ok('keys', 'create', '--workspace', $ws_a, '--scopes', 'read:sites,read:content', '--name', 'a');
my $key_b = ctl_ok('keys', 'create', '--workspace', $ws_b, '--scopes', 'read:sites');
like($key_a, qr/^aly_[0-9A-Za-z]{38}$/, 'key shape: aly_ + 32 secret + 6 checksum');
my $stats_before = ctl_ok('--json', 'stats');

my $pa = passes("Bearer $key_a", 'valid key', $ws_a);
like($pa // '', qr/^key_/, 'key principal id');
passes("bearer   $key_a", 'scheme is case-insensitive', $ws_a);
my $pb = passes("Bearer $key_b", 'key of workspace B', $ws_b);
isnt($pa, $pb, 'two keys are two principals');

{
    my ($st, $hdr) = mcp(undef);
    is($st, 401, 'no credential: 401');
    my $www = Alyd::header_value($hdr, 'www-authenticate') // '';
    like($www, qr/^Bearer realm="aly", resource_metadata="\Q$metadata\E"$/, 'no credential: challenge without error');
    is(Alyd::header_value($hdr, 'cache-control'), 'no-store', 'no credential: no-store');
}
refused("Basic $key_a", 'wrong scheme', 'Bearer scheme');
refused("Bearer", 'empty bearer');
(my $typo = $key_a) =~ s/(.)$/$1 eq 'A' ? 'B' : 'A'/e;
refused("Bearer $typo", 'bad checksum', 'malformed');
refused("Bearer " . substr($key_a, 0, -1), 'truncated key', 'malformed');
refused("Bearer ghp_abcdefghijklmnopqrstuvwxyz0123456789", 'not an Aly credential', 'not an Aly credential');

# A well-formed key nobody issued: valid checksum, unknown to the store.
my $unknown = do {
    my ($exit, $out) = Alyd::run_cmd($python, '-c', <<'PY');
import random, zlib
b62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
s = "".join(random.choice(b62) for _ in range(32))
c = zlib.crc32(s.encode()); t = ""
for _ in range(6): t = b62[c % 62] + t; c //= 62
print("aly_" + s + t, end="")
PY
    $out;
};
refused("Bearer $unknown", 'unknown key', 'unknown API key');

my $expiring = ctl_ok('keys', 'create', '--workspace', $ws_a, '--scopes', 'read:sites', '--expires', int(2 * $Alyd::SCALE) . 's');
passes("Bearer $expiring", 'key before its expiry', $ws_a);
my $revoked = ctl_ok('keys', 'create', '--workspace', $ws_a, '--scopes', 'read:sites');
my $rid = passes("Bearer $revoked", 'key before revocation', $ws_a);
ctl_ok('keys', 'revoke', $rid);
refused("Bearer $revoked", 'revoked key', 'revoked');
Alyd::poll_until(5, sub { (mcp("Bearer $expiring"))[0] == 401 });
refused("Bearer $expiring", 'expired key', 'expired');

{
    my ($exit, $out, $err) = ctl('keys', 'create', '--workspace', $ws_a, '--scopes', 'read:everything');
    isnt($exit, 0, 'unknown scope refused at creation');
    like($err, qr/unknown scope "read:everything"/, 'names the scope');
    ($exit, $out, $err) = ctl('keys', 'create', '--workspace', 'ws_doesnotexist', '--scopes', 'read:sites');
    isnt($exit, 0, 'unknown workspace refused at creation');
    my $shown = Alyd::json_decode(ctl_ok('--json', 'keys', 'show', $pa));
    is($shown->{workspace}, $ws_a, 'keys show names the workspace');
    ok(!exists $shown->{key} && !exists $shown->{hash}, 'keys show never prints the key or its hash');
    like($shown->{last_used}, qr/^\d{4}-/, 'last-used stamp recorded');
    my $list = ctl_ok('keys', 'list', '--workspace', $ws_b);
    unlike($list, qr/\Q$ws_a\E/, 'keys list --workspace B shows no key of A');
}

# ---- OAuth tokens ----
sub jwt {
    my (%o) = @_;
    my $now = time;
    my %claims = (iss => $issuer, aud => $resource, sub => 'user-1', ws => $ws_a, scope => 'read:sites read:orders',
        exp => $now + 600, iat => $now, jti => 'jti-' . int(rand(1e9)), %{ $o{claims} // {} });
    delete @claims{ @{ $o{drop} // [] } };
    my @cmd = ($python, $mint, 'token', '--alg', $o{alg} // 'RS256');
    push @cmd, '--key', $o{key} // "$keys/rsa.pem";
    push @cmd, '--kid', $o{kid} // 'rsa1' unless $o{no_kid};
    push @cmd, '--secret-file', $o{secret} if $o{secret};
    push @cmd, '--header', $o{header} if $o{header};
    push @cmd, '--raw-header', $o{raw_header} if $o{raw_header};
    push @cmd, '--claims', json_encode(\%claims);
    return 'aly_oauth_' . sh(@cmd);
}

my $p = passes('Bearer ' . jwt(), 'valid RS256', $ws_a);
is($p, "oauth:$ws_a:user-1", 'OAuth principal from the workspace and sub');
passes('Bearer ' . jwt(alg => 'ES256', key => "$keys/ec.pem", kid => 'ec1'), 'valid ES256', $ws_a);
passes('Bearer ' . jwt(claims => { aud => ['https://other.example', $resource] }), 'aud array holding our resource', $ws_a);
passes('Bearer ' . jwt(claims => { ws => $ws_b, sub => 'user-2' }), 'token of workspace B', $ws_b);
my $warm = jwt();
passes("Bearer $warm", 'same token twice (cache)', $ws_a) for 1 .. 2;

refused('Bearer ' . jwt(alg => 'none'), 'alg none', 'not accepted');
{
    # alg none header, empty signature, but otherwise a real token's header and claims.
    my ($h, $c) = split /\./, substr(jwt(), 10);
    my $none = encode_base64url(json_encode({ alg => 'none', typ => 'JWT', kid => 'rsa1' }));
    refused("Bearer aly_oauth_$none.$c.", 'alg none with empty signature', 'not accepted');
    refused("Bearer aly_oauth_$h.$c.", 'RS256 header with an empty signature', 'not signed');
}
refused('Bearer ' . jwt(alg => 'HS256', secret => "$keys/rsa.pub.pem"), 'HS256 keyed with the RSA public PEM', 'HS256');
refused('Bearer ' . jwt(alg => 'RS256', kid => 'ec1'), "RS256 claiming the ES key's kid", 'ES256');
refused('Bearer ' . jwt(kid => 'nope'), 'unknown kid', 'unknown signing key');
refused('Bearer ' . jwt(key => "$keys/ec.pem", alg => 'ES256', kid => 'rsa1'), 'ES256 naming the RSA kid');
refused('Bearer ' . jwt(claims => { exp => time - 120 }), 'expired', 'expired');
refused('Bearer ' . jwt(claims => { nbf => time + 600 }), 'not yet valid', 'not valid yet');
refused('Bearer ' . jwt(claims => { iat => time + 600 }), 'issued in the future', 'future');
refused('Bearer ' . jwt(claims => { iss => 'https://evil.example' }), 'wrong iss', 'another issuer');
refused('Bearer ' . jwt(drop => ['aud']), 'aud missing', 'audience');
refused('Bearer ' . jwt(claims => { aud => 'https://other.example/api/mcp' }), 'aud other', 'audience');
refused('Bearer ' . jwt(claims => { exp => (time + 600) . '.5' + 0 }), 'exp as a float', 'exp');
refused('Bearer ' . jwt(claims => { exp => '' . (time + 600) }), 'exp as a string', 'exp');
refused('Bearer ' . jwt(drop => ['exp']), 'exp missing', 'exp');
refused('Bearer ' . jwt(drop => ['ws']), 'ws missing', 'ws');
refused('Bearer ' . jwt(drop => ['sub']), 'sub missing', 'sub');
refused('Bearer ' . jwt(drop => ['scope']), 'scope missing', 'no scope claim');
# Without a kid a key is chosen by alg only when one key fits: one RSA key, two EC keys.
passes('Bearer ' . jwt(no_kid => 1), 'RS256 without a kid (one RSA key)', $ws_a);
refused('Bearer ' . jwt(alg => 'ES256', key => "$keys/ec.pem", no_kid => 1), 'ES256 without a kid (two EC keys)', 'several keys');
passes('Bearer ' . jwt(alg => 'ES256', key => "$keys/ec2.pem", kid => 'ec2'), 'the second EC key, named by its kid', $ws_a);
refused('Bearer ' . jwt(claims => { scope => ['read:sites'] }), 'scope as an array', 'no scope claim');
refused('Bearer ' . jwt(header => '{"typ":"at+jwt"}'), 'typ at+jwt (signed, all else valid)', 'typ must be');
refused('Bearer ' . jwt(raw_header => '{"alg":"RS256","typ":"JWT","kid":"rsa1","alg":"none"}'), 'a header naming alg twice (signed)',
    'not a JSON object');
passes('Bearer ' . jwt(raw_header => '{"alg":"RS256","typ":"JWT","kid":"rsa1"}'), 'the same header text once each: passes', $ws_a);
refused('Bearer ' . jwt(claims => { ws => 'ws_doesnotexist' }), 'unknown workspace', 'unknown workspace');
refused('Bearer aly_oauth_%%%.***.!!!', 'garbage base64', 'base64url');

# ---- time claims at the ends of their range: refused or accepted as the rules say, no overflow, no crash ----
{
    my @before = sort $srv->worker_pids;
    my $max = 9223372036854775807; # INT64_MAX
    my $far = 4611686018427387904; # 2^62
    my $now = time;
    for my $exp ($max, $max - 30, $far, $now + 5) {
        my $tok = jwt(claims => { exp => $exp });
        passes("Bearer $tok", "exp $exp", $ws_a);
        passes("Bearer $tok", "exp $exp again (from the cache)", $ws_a);
    }
    refused('Bearer ' . jwt(claims => { exp => -1 }), 'exp -1', 'exp');
    refused('Bearer ' . jwt(claims => { exp => -$max - 1 }), 'exp INT64_MIN', 'exp');
    refused('Bearer ' . jwt(claims => { exp => 0 }), 'exp 0', 'exp');
    refused('Bearer ' . jwt(claims => { exp => $now - 61 }), 'exp just past the leeway', 'expired');
    passes('Bearer ' . jwt(claims => { exp => $now - 30 }), 'exp within the leeway', $ws_a);
    {
        # Cached by every worker while valid, then its time runs out: the cache never outlives exp + leeway.
        my $left = int(4 * $Alyd::SCALE);    # the four uses below must all come before it runs out
        my $tok = jwt(claims => { exp => int(time) - 60 + $left });
        passes("Bearer $tok", "a token with $left s left (use $_, cached)", $ws_a) for 1 .. 4;
        sleep $left + 1;
        refused("Bearer $tok", sprintf('the same token %d s later (try %d): expired, though cached', $left + 1, $_), 'expired') for 1 .. 4;
    }
    refused('Bearer ' . jwt(claims => { exp => '9223372036854775808' + 0 }), 'exp 2^63 (no integer holds it)');
    refused('Bearer ' . jwt(claims => { exp => 1e300 }), 'exp 1e300', 'exp');
    refused('Bearer ' . jwt(claims => { nbf => $max }), 'nbf INT64_MAX', 'not valid yet');
    refused('Bearer ' . jwt(claims => { nbf => $max, exp => $max }), 'nbf and exp INT64_MAX', 'not valid yet');
    refused('Bearer ' . jwt(claims => { nbf => -1 }), 'nbf -1', 'nbf');
    passes('Bearer ' . jwt(claims => { nbf => 1 }), 'nbf 1 (1970)', $ws_a);
    passes('Bearer ' . jwt(claims => { nbf => $now + 30 }), 'nbf within the leeway', $ws_a);
    refused('Bearer ' . jwt(claims => { iat => $max }), 'iat INT64_MAX', 'future');
    refused('Bearer ' . jwt(claims => { iat => $max, exp => $max }), 'iat and exp INT64_MAX', 'future');
    refused('Bearer ' . jwt(claims => { iat => -1 }), 'iat -1', 'iat');
    passes('Bearer ' . jwt(claims => { iat => 1 }), 'iat 1 (1970)', $ws_a);
    is_deeply([sort $srv->worker_pids], \@before, 'time claim extremes: no worker died');
}

# ---- the same sub in two workspaces is two principals ----
{
    my %tight = (sub => 'shared-user', client_id => 'tight-client', scope => 'read:sites');
    my $tok_a = jwt(claims => { %tight, ws => $ws_a });
    my $tok_b = jwt(claims => { %tight, ws => $ws_b });
    my $pa_o = passes("Bearer $tok_a", 'sub shared-user in workspace A', $ws_a);
    my $pb_o = passes("Bearer $tok_b", 'sub shared-user in workspace B', $ws_b);
    isnt($pa_o, $pb_o, 'the same sub in two workspaces: two principal ids');
    my $spent;
    for (1 .. 8) { if ((mcp("Bearer $tok_a"))[0] == 429) { $spent = 1; last } }
    ok($spent, "workspace A's principal spends its budget (3/minute) and gets 429");
    is((mcp("Bearer $tok_a"))[0], 429, 'workspace A: still 429');
    is((mcp("Bearer $tok_b"))[0], 200, "workspace B's principal of the same sub: a budget of its own");

    # A session belongs to the principal that opened it: the same sub in another workspace cannot use it.
    my $init = sub {
        my ($tok) = @_;
        my ($st, $hdr) = Alyd::curl('-X', 'POST', '-H', "Authorization: Bearer $tok", '-H', 'Content-Type: application/json',
            '-H', 'Accept: application/json, text/event-stream', '--data',
            '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},'
              . '"clientInfo":{"name":"t","version":"1"}}}', $resource);
        return ($st, Alyd::header_value($hdr, 'mcp-session-id'));
    };
    my $ping = sub {
        my ($tok, $sid) = @_;
        return (Alyd::curl('-X', 'POST', '-H', "Authorization: Bearer $tok", '-H', 'Content-Type: application/json', '-H',
            'Accept: application/json, text/event-stream', '-H', "Mcp-Session-Id: $sid", '-H', 'MCP-Protocol-Version: 2025-11-25',
            '--data', '{"jsonrpc":"2.0","id":2,"method":"ping"}', $resource))[0];
    };
    my $tok_c = jwt(claims => { sub => 'shared-user-2', ws => $ws_b });
    my $tok_d = jwt(claims => { sub => 'shared-user-2', ws => $ws_a });
    my ($ist, $sid) = $init->($tok_c);
    is($ist, 200, 'initialize as shared-user-2 of workspace B');
    is($ping->($tok_c, $sid // ''), 200, 'its session works for it');
    is($ping->($tok_d, $sid // ''), 404, 'the same sub in workspace A: not its session (404)');
}
refused('Bearer aly_oauth_' . ('A' x 10240), '10 KB token', 'longer than');
refused('Bearer aly_oauth_' . substr($warm, 10, -3), 'signature cut short', 'signature');
# One byte of the signature changed, its length kept, header and claims untouched: only the signature check refuses it.
for my $k (['RS256', jwt(claims => { jti => 'flip-rs' })], ['ES256', jwt(alg => 'ES256', key => "$keys/ec.pem", kid => 'ec1', claims => { jti => 'flip-es' })]) {
    my ($alg, $tok) = @$k;
    my ($h, $c, $sig) = split /\./, substr($tok, 10);
    my $raw = MIME::Base64::decode_base64url($sig);
    substr($raw, length($raw) / 2, 1) = chr(ord(substr($raw, length($raw) / 2, 1)) ^ 0x01);
    my $flipped = "Bearer aly_oauth_$h.$c." . MIME::Base64::encode_base64url($raw);
    refused($flipped, "$alg: one signature byte flipped", 'signature');
    passes("Bearer $tok", "$alg: the same token unflipped", $ws_a);
    # The token cache is keyed by the whole token.  On one connection (so one worker) the real token, which that
    # worker then has cached, and the flipped one, in turn: the flipped one never finds the real one's entry.
    my @r = one_connection(map { ("Bearer $tok", $flipped) } 1 .. 3);
    is(join(' ', map { $_->[0] } @r), '200 401 200 401 200 401', "$alg: real, flipped, real, flipped ... on one connection");
    is(scalar(grep { $_->[1] != 0 } @r[1 .. $#r]), 0, "$alg: ... the other five on the first one's connection");
}
{
    my $tok = jwt(claims => { jti => 'to-revoke' });
    passes("Bearer $tok", 'token before its jti is revoked', $ws_a);
    ctl_ok('oauth', 'revoke-jti', 'to-revoke');
    refused("Bearer $tok", 'revoked jti (cached token dropped)', 'revoked');
    my $tok2 = jwt(claims => { sub => 'mallory' });
    passes("Bearer $tok2", 'token before its subject is revoked', $ws_a);
    ctl_ok('oauth', 'revoke-sub', 'mallory');
    refused("Bearer $tok2", 'revoked subject', 'revoked');
}

# Nothing a refused credential did changed the store (counts as before, but the
# revocation and key records this test made on purpose).
my $after = Alyd::json_decode(ctl_ok('--json', 'stats'));
my $before = Alyd::json_decode($stats_before);
is($after->{environments}{store}{databases}{workspaces}, $before->{environments}{store}{databases}{workspaces},
    'no workspace appeared');
is($after->{environments}{store}{databases}{key_hash}, $before->{environments}{store}{databases}{key_hash} + 2,
    'only the two keys this test minted appeared');
is((Alyd::curl($srv->url('/healthz')))[0], 200, 'still serving after the matrix');

# ---- store consistency ----
{
    my $dest = "$keys/backup";
    my $out = ctl_ok('backup', $dest);
    ok(-s "$dest/data.mdb", 'backup wrote data.mdb');
    my ($exit, $o2, $err) = ctl('backup', $dest);
    isnt($exit, 0, 'backup refuses a directory that already holds a store');
    # Open the copy through alyctl with a config pointing at it.
    mkdir "$keys/restored";
    mkdir "$keys/restored/store";
    system('cp', "$dest/data.mdb", "$keys/restored/store/data.mdb") == 0 or die;
    mkdir "$keys/restored/volatile";
    Alyd::spew("$keys/restored.conf", "data_dir $keys/restored\nlisten 127.0.0.1:1\n");
    my ($e3, $ws_list) = Alyd::run_cmd(Alyd::alyctl_bin(), '-c', "$keys/restored.conf", 'init');
    is($e3, 0, 'restored copy opens');
    my ($e4, $list) = Alyd::run_cmd(Alyd::alyctl_bin(), '-c', "$keys/restored.conf", 'workspace', 'list');
    like($list, qr/\Q$ws_a\E.*Shop A/, 'backup holds workspace A');
    like($list, qr/\Q$ws_b\E.*Shop B/, 'backup holds workspace B');
}

# A worker killed while writing (last-used stamps are written on use) leaves the store readable.
{
    my @w = $srv->worker_pids;
    is(scalar @w, 2, 'two workers before the kill');
    my $pid = in_child(sub { mcp("Bearer $key_a") for 1 .. 200 });
    kill 'KILL', $w[0];
    Alyd::finish_prober($pid, 30);
    ok(Alyd::poll_until(5, sub { my @now = $srv->worker_pids; @now == 2 && !grep { $_ == $w[0] } @now }), 'killed worker replaced');
    passes("Bearer $key_a", 'keys still verify after the kill', $ws_a);
    my $j = Alyd::json_decode(ctl_ok('--json', 'stats'));
    is($j->{environments}{store}{databases}{keys}, $after->{environments}{store}{databases}{keys}, 'key records intact');
}

$srv->stop;

# ---- HS256, on a server given a shared secret (and no JWKS) ----
{
    Alyd::spew("$keys/hs.secret", 'h' x 40);
    Alyd::spew("$keys/other.secret", 'o' x 40);
    my $hs = Alyd->start(workers => 1, bin => $ENV{ALYD_TEST},
        extra => ["oauth_issuer $issuer", "oauth_hs256_secret_file $keys/hs.secret", 'oauth_leeway 60s']);
    my $ws = $hs->ctl('workspace', 'create', 'HS');
    my %c = (aud => $hs->url('/api/mcp'), ws => $ws);
    my $call = sub {
        my ($tok) = @_;
        my ($st, $hdr) = Alyd::curl('-X', 'POST', '-H', "Authorization: Bearer $tok", '-H', 'Content-Type: application/json', '--data',
            '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"aly_test_whoami"}}', $hs->url('/api/mcp'));
        return ($st, Alyd::header_value($hdr, 'www-authenticate') // '');
    };
    my $good = jwt(alg => 'HS256', secret => "$keys/hs.secret", no_kid => 1, claims => \%c);
    my ($h, $cl, $sig) = split /\./, substr($good, 10);
    my $raw = MIME::Base64::decode_base64url($sig);
    substr($raw, 10, 1) = chr(ord(substr($raw, 10, 1)) ^ 0x01);
    my ($st, $why) = $call->("aly_oauth_$h.$cl." . MIME::Base64::encode_base64url($raw));
    is($st, 401, 'HS256 with one MAC byte flipped: 401');
    like($why, qr/signature/, '... for its signature');
    ($st) = $call->($good);
    is($st, 200, 'the same HS256 token unflipped: passes');
    ($st, $why) = $call->(jwt(alg => 'HS256', secret => "$keys/other.secret", no_kid => 1, claims => \%c));
    is($st, 401, 'HS256 under another secret: 401');
    ($st, $why) = $call->(jwt(claims => \%c));
    is($st, 401, 'RS256 on a server with no JWKS: 401');
    like($why, qr/no key fits|unknown signing key/, '... no key to check it with');
    $hs->stop;
}
done_testing;
