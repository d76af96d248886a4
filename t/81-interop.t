# Real MCP clients against a real alyd, over cleartext and TLS, with an API
# key in the Authorization header:
#   - the official TypeScript SDK client (StreamableHTTPClientTransport):
#     connect, list tools, call tools, terminate the session;
#   - the official TypeScript SDK v2 client (@modelcontextprotocol/client) in
#     the modern era (pinned to 2026-07-28: discover, list, call, a question
#     answered through input_required), in auto mode (it probes and stays
#     modern) and in its default legacy mode (initialize, a session, the same
#     question as a real elicitation/create);
#   - mcp-remote, the stdio bridge Claude Desktop uses for remote servers:
#     initialize, tools/list, tools/call through it.
use strict;
use warnings;
use Test::More;
use File::Temp qw(tempdir);
use IO::Select;
use IPC::Open3;
use JSON::PP ();
use POSIX ();
use Symbol 'gensym';
use Alyd;

Alyd::watchdog(300);
my $nodedir = $ENV{ALY_NODE_DIR} // '';
my $node = "$nodedir/node_modules/node/bin/node";
plan skip_all => "the Node clients are not installed in ALY_NODE_DIR ($nodedir): run scripts/install-node"
  unless -x $node && -d "$nodedir/node_modules/\@modelcontextprotocol/sdk" && -d "$nodedir/node_modules/mcp-remote"
  && -d "$nodedir/node_modules/\@modelcontextprotocol/client";

my $srv = Alyd->start(workers => 2, tls => 1, bin => $ENV{ALYD_TEST});
my ($exit, $ws) = Alyd::run_cmd(Alyd::alyctl_bin(), '-c', $srv->conf, 'workspace', 'create', 'Interop');
chomp $ws;
my (undef, $key) = Alyd::run_cmd(Alyd::alyctl_bin(), '-c', $srv->conf, 'keys', 'create', '--workspace', $ws, '--scopes',
    'read:sites,read:orders');
chomp $key;
like($key, qr/^aly_/, 'minted a key');

# The client script must sit beside node_modules for ESM resolution.
for my $f ('sdk-client.mjs', 'sdk2-client.mjs') {
    system('cp', Alyd::srcdir() . "/t/interop/$f", "$nodedir/$f") == 0 or die "cp: $!";
}
my $home = tempdir('alyd-interop-XXXXXX', TMPDIR => 1, CLEANUP => 1);
my %nodeenv = (HOME => $home, NODE_EXTRA_CA_CERTS => $srv->cert, MCP_REMOTE_CONFIG_DIR => "$home/mcp-auth");

for my $t (['cleartext', $srv->url('/api/mcp')], ['TLS', $srv->tls_url('/api/mcp')]) {
    my ($name, $url) = @$t;
    my $script = JSON::PP->new->encode({ calls => [
        { name => 'test_simple_text' },
        { name => 'aly_test_scoped', arguments => { count => 2 } },
        { name => 'aly_test_scoped', arguments => { count => 99 } },
    ] });
    my ($e, $out, $err) = Alyd::run_cmd('env', map({ "$_=$nodeenv{$_}" } keys %nodeenv), $node, "$nodedir/sdk-client.mjs", $url, $key, $script);
    my $r = Alyd::json_decode((split /\n/, $out)[-1] // '') // {};
    is($e, 0, "SDK client over $name: ran cleanly") or diag("$out\n$err");
    is($r->{serverVersion}{name}, 'alyd', "SDK client over $name: connected to alyd");
    like($r->{sessionId} // '', qr/^mcp_/, "SDK client over $name: got a session");
    ok((grep { $_ eq 'aly_test_scoped' } @{ $r->{tools} // [] }), "SDK client over $name: listed the tools");
    is($r->{results}[0]{content}[0]{text}, 'This is a simple text response for testing.', "SDK client over $name: called a tool");
    is($r->{results}[1]{structuredContent}{workspace}, $ws, "SDK client over $name: structuredContent accepted by the SDK");
    ok($r->{results}[2]{isError}, "SDK client over $name: a schema violation comes back as isError");
    ok($r->{terminated}, "SDK client over $name: terminated the session (DELETE)");
}

for my $t (['cleartext', $srv->url('/api/mcp')], ['TLS', $srv->tls_url('/api/mcp')]) {
    my ($name, $url) = @$t;
    my $script = JSON::PP->new->encode({ calls => [
        { name => 'test_simple_text' },
        { name => 'aly_test_scoped', arguments => { count => 2 } },
        { name => 'test_input_required_result_elicitation' },
    ] });
    for my $mode ('modern', 'auto', 'legacy') {
        my $what = "SDK v2 client ($mode) over $name";
        my ($e, $out, $err) = Alyd::run_cmd('env', map({ "$_=$nodeenv{$_}" } keys %nodeenv), $node, "$nodedir/sdk2-client.mjs",
            $url, $key, $mode, $script);
        my $r = Alyd::json_decode((split /\n/, $out)[-1] // '') // {};
        is($e, 0, "$what: ran cleanly") or diag("$out\n$err");
        is($r->{serverInfo}{name}, 'alyd', "$what: reached alyd");
        if ($mode eq 'legacy') {
            is($r->{protocolVersion}, '2025-11-25', "$what: negotiated 2025-11-25 through initialize");
            like($r->{sessionId} // '', qr/^mcp_/, "$what: got a session");
        } else {
            is($r->{protocolVersion}, '2026-07-28', "$what: speaks 2026-07-28");
            ok(!defined $r->{sessionId}, "$what: no session");
            is_deeply($r->{discover}{supportedVersions}, ['2026-07-28'], "$what: discover accepted by the SDK");
        }
        ok((grep { $_ eq 'aly_test_scoped' } @{ $r->{tools} // [] }), "$what: listed the tools");
        is($r->{results}[0]{content}[0]{text}, 'This is a simple text response for testing.', "$what: called a tool");
        is($r->{results}[1]{structuredContent}{workspace}, $ws, "$what: structuredContent accepted by the SDK");
        is($r->{results}[2]{content}[0]{text}, 'Hello, Ada!', "$what: a question to the user answered and the call completed");
        is($r->{elicited}, 1, "$what: the client's elicitation handler was asked once");
    }
}

# mcp-remote over stdio: one JSON-RPC message per line.
sub bridge {
    my ($url) = @_;
    my $errfh = gensym;
    my $pid = open3(my $in, my $outfh, $errfh, 'env', map({ "$_=$nodeenv{$_}" } keys %nodeenv), $node,
        "$nodedir/node_modules/mcp-remote/dist/proxy.js", $url, '--header', "Authorization: Bearer $key", '--allow-http',
        '--transport', 'http-only');
    return ($pid, $in, $outfh, $errfh);
}

sub read_msg {
    my ($fh, $id, $timeout) = @_;
    my $sel = IO::Select->new($fh);
    my $deadline = time + $timeout;
    my $buf = '';
    while (time < $deadline) {
        last unless $sel->can_read($deadline - time);
        my $line = <$fh>;
        last unless defined $line;
        my $m = Alyd::json_decode($line);
        return $m if $m && defined $m->{id} && $m->{id} == $id;
    }
    return undef;
}

for my $t (['cleartext', $srv->url('/api/mcp')], ['TLS', $srv->tls_url('/api/mcp')]) {
    my ($name, $url) = @$t;
    my ($pid, $in, $out, $err) = bridge($url);
    my $send = sub { print {$in} JSON::PP->new->encode($_[0]), "\n"; $in->flush };
    $send->({ jsonrpc => '2.0', id => 1, method => 'initialize',
        params => { protocolVersion => '2025-06-18', capabilities => {}, clientInfo => { name => 'claude-desktop-like', version => '1' } } });
    my $init = read_msg($out, 1, 60);
    is($init->{result}{serverInfo}{name}, 'alyd', "mcp-remote over $name: initialize reached alyd");
    $send->({ jsonrpc => '2.0', method => 'notifications/initialized' });
    $send->({ jsonrpc => '2.0', id => 2, method => 'tools/list' });
    my $list = read_msg($out, 2, 30);
    ok((grep { $_->{name} eq 'test_simple_text' } @{ $list->{result}{tools} // [] }), "mcp-remote over $name: tools/list");
    $send->({ jsonrpc => '2.0', id => 3, method => 'tools/call', params => { name => 'aly_test_scoped', arguments => { count => 1 } } });
    my $call = read_msg($out, 3, 30);
    is($call->{result}{structuredContent}{workspace}, $ws, "mcp-remote over $name: tools/call");
    close $in;
    kill 'TERM', $pid;
    my $done = Alyd::poll_until(10, sub { waitpid($pid, POSIX::WNOHANG()) == $pid });
    if (!$done) { kill 'KILL', $pid; waitpid($pid, 0) }
    if (!$init || !$call) {
        my $e = do { local $/; <$err> } // '';
        diag("mcp-remote stderr: $e");
    }
}

# What the bridges did, from the server's side: every request authenticated as the key.
my $log = $srv->access_log_text // '';
my @mcp = grep { m{ /api/mcp } } split /\n/, $log;
ok(@mcp > 10, 'the clients made their requests through /api/mcp');
my @anon = grep { / 401 / } @mcp;
ok(!grep({ !/ GET / } @anon), 'no POST was refused (a first GET probe without a session may be)');

$srv->stop;
done_testing;
