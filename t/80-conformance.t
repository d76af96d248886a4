# The official MCP conformance suite (@modelcontextprotocol/conformance 0.1.16,
# --suite all) against the test build of alyd (t/alyd-test: the daemon plus
# the suite's fixtures).  The suite connects without credentials; the test
# build grants such requests an anonymous principal (t/fixtures/main.c).
# Every scenario must pass; t/conformance-expected-failures.yml lists none.
use strict;
use warnings;
use Test::More;
use Alyd;

Alyd::watchdog(300);
my $nodedir = $ENV{ALY_NODE_DIR} // '';
my $node = "$nodedir/node_modules/node/bin/node";
plan skip_all => "Node 22 and the conformance suite are not installed in ALY_NODE_DIR ($nodedir): run scripts/install-node"
  unless -x $node && -e "$nodedir/node_modules/.bin/conformance";

my $srv = Alyd->start(
    workers => 2,
    bin     => $ENV{ALYD_TEST},
    env     => { ALYD_TEST_ANONYMOUS_WORKSPACE => 'ws_conformance00000000' }
);
my $url = $srv->url('/api/mcp');
my ($exit, $out, $err) = Alyd::run_cmd(
    'env', "PATH=$nodedir/node_modules/.bin:$ENV{PATH}", $node, "$nodedir/node_modules/.bin/conformance",
    'server', '--url', $url, '--suite', 'all', '--expected-failures', Alyd::srcdir() . '/t/conformance-expected-failures.yml'
);
my @scenarios = $out =~ /^(✓|✗) (\S+): (\d+) passed, (\d+) failed$/mg;
my %seen;
while (my ($mark, $name, $pass, $fail) = splice(@scenarios, 0, 4)) {
    $seen{$name} = 1;
    ok($mark eq '✓' && $fail == 0, "conformance: $name ($pass passed, $fail failed)");
}
cmp_ok(scalar keys %seen, '>=', 32, 'all 32 scenarios of --suite all ran');
my ($total_pass, $total_fail) = $out =~ /^Total: (\d+) passed, (\d+) failed$/m;
is($total_fail, 0, "conformance total: $total_pass passed, 0 failed");
is($exit, 0, 'conformance exits 0 (baseline check passed)') or diag($out . $err);
diag("conformance: $1") if $out =~ /^(Total: .*)$/m;

# The fixtures never loosen the shipped daemon: alyd itself has no test_ tools
# and refuses a request without credentials.
my $prod = Alyd->start(workers => 1);
my ($st) = Alyd::curl('-X', 'POST', '-H', 'Content-Type: application/json', '-H', 'Accept: application/json, text/event-stream',
    '--data', '{"jsonrpc":"2.0","id":1,"method":"tools/list"}', $prod->url('/api/mcp'));
is($st, 401, 'the shipped alyd answers an anonymous request with 401');
$prod->stop;
$srv->stop;
done_testing;
