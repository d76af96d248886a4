# The official MCP conformance suite (@modelcontextprotocol/conformance
# 0.2.0-alpha.12) against the test build of alyd (t/alyd-test: the daemon
# plus the suite's fixtures), once per protocol era: --requirements
# 2025-11-25 (initialize and sessions) and --requirements 2026-07-28
# (stateless, per-request _meta).  One run does not cover the other.  The
# suite connects without credentials; the test build grants such requests an
# anonymous principal (t/fixtures/main.c).
#
# The criterion is the suite's exit status and every scenario the
# requirements file scores.  The Total: line also counts scenarios the suite
# runs without scoring them (the optional tasks extension, pending ones), so
# it is reported, not judged.  t/conformance-expected-failures.yml lists none.
use strict;
use warnings;
use Test::More;
use Alyd;

Alyd::watchdog(400);
my $nodedir = $ENV{ALY_NODE_DIR} // '';
my $node = "$nodedir/node_modules/node/bin/node";
my $pkg = "$nodedir/node_modules/\@modelcontextprotocol/conformance";
plan skip_all => "Node 22 and the conformance suite are not installed in ALY_NODE_DIR ($nodedir): run scripts/install-node"
  unless -x $node && -e "$pkg/dist/index.js";

# The server scenarios a requirements file scores (its top-level server: list).
sub scored {
    my ($revision) = @_;
    my $text = Alyd::slurp("$pkg/requirements/$revision.yaml") // '';
    my ($list) = $text =~ /^server:\n((?:  - \S+\n)+)/m;
    return ($list // '') =~ /^  - (\S+)$/mg;
}

my $srv = Alyd->start(
    workers => 2,
    bin     => $ENV{ALYD_TEST},
    env     => { ALYD_TEST_ANONYMOUS_WORKSPACE => 'ws_conformance00000000' }
);
my $url = $srv->url('/api/mcp');
for my $revision ('2025-11-25', '2026-07-28') {
    my @scored = scored($revision);
    cmp_ok(scalar @scored, '>=', 20, "$revision: the requirements file scores " . scalar(@scored) . ' server scenarios');
    my ($exit, $out, $err) = Alyd::run_cmd(
        'env', "PATH=$nodedir/node_modules/.bin:$ENV{PATH}", $node, "$pkg/dist/index.js",
        'server', '--url', $url, '--requirements', $revision,
        '--expected-failures', Alyd::srcdir() . '/t/conformance-expected-failures.yml'
    );
    my %result;
    while ($out =~ /^(✓|✗) (\S+): (\d+) passed, (\d+) failed$/mg) {
        $result{$2} = { ok => $1 eq '✓' && $4 == 0, pass => $3, fail => $4 };
    }
    my ($checks, $failed) = (0, 0);
    for my $name (@scored) {
        my $r = $result{$name};
        ok($r && $r->{ok}, "$revision: $name" . ($r ? " ($r->{pass} passed, $r->{fail} failed)" : ' did not run'));
        $checks += $r ? $r->{pass} + $r->{fail} : 0;
        $failed += $r ? $r->{fail} : 0;
    }
    is($exit, 0, "$revision: the suite exits 0") or diag($out . $err);
    my ($total) = $out =~ /^(Total: .*)$/m;
    diag("conformance --requirements $revision: scored " . scalar(@scored) . " scenarios, "
        . ($checks - $failed) . " of $checks checks passed; " . ($total // 'no Total: line'));
}

# The fixtures never loosen the shipped daemon: alyd itself has no test_ tools
# and refuses a request without credentials, in either era.
my $prod = Alyd->start(workers => 1);
my ($st) = Alyd::curl('-X', 'POST', '-H', 'Content-Type: application/json', '-H', 'Accept: application/json, text/event-stream',
    '--data', '{"jsonrpc":"2.0","id":1,"method":"tools/list"}', $prod->url('/api/mcp'));
is($st, 401, 'the shipped alyd answers an anonymous legacy request with 401');
($st) = Alyd::curl('-X', 'POST', '-H', 'Content-Type: application/json', '-H', 'Accept: application/json, text/event-stream',
    '-H', 'MCP-Protocol-Version: 2026-07-28', '-H', 'Mcp-Method: server/discover',
    '--data', '{"jsonrpc":"2.0","id":1,"method":"server/discover","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":'
      . '"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}', $prod->url('/api/mcp'));
is($st, 401, 'the shipped alyd answers an anonymous modern request with 401');
$prod->stop;
$srv->stop;
done_testing;
