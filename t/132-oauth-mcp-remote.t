# mcp-remote (the stdio bridge Claude Desktop runs for remote servers) with no
# Authorization header: it meets alyd's 401, discovers the authorization
# server, registers itself dynamically, and opens the user's browser on the
# consent page.  The browser here is $BROWSER (which mcp-remote's opener, the
# xdg-open it bundles, honours): a script that runs t/interop/oauth-consent.mjs
# -- sign in, approve, follow the redirect to mcp-remote's own callback server.
# Then initialize, tools/list and tools/call go through as the user's
# workspace; a second bridge finds the stored tokens and asks nobody; and a
# user who denies leaves the bridge without a connection.
use strict;
use warnings;
use Test::More;
use File::Temp ();
use JSON::PP ();
use Alyd;
use OAuthE2E;

Alyd::watchdog(300);
my $e = OAuthE2E->node_or_skip('mcp-remote');
my $consent = $e->script('oauth-consent.mjs');
my $proxy = $e->dir . '/node_modules/mcp-remote/dist/proxy.js';

my $srv = Alyd->start(workers => 2);
my $who = OAuthE2E::user($srv);
my $tmp = File::Temp->newdir;
my $browser = "$tmp/browser";
Alyd::spew($browser, "#!/bin/sh\nexec '" . $e->node . "' '$consent' \"\$1\"\n", 0755);

# One bridge: its own config dir (where mcp-remote keeps client and tokens), a browser log.
sub bridge {
    my (%o) = @_;
    my $port = Alyd::free_port();
    my %env = (HOME => "$tmp/home", MCP_REMOTE_CONFIG_DIR => $o{config}, BROWSER => $browser, DISPLAY => '',
        WAYLAND_DISPLAY => '', XDG_CURRENT_DESKTOP => '', ALY_OAUTH_LOG => $o{log}, ALY_OAUTH_EMAIL => $who->{email},
        ALY_OAUTH_PASSWORD => $who->{password}, ALY_OAUTH_ACTION => $o{action} // 'approve');
    return $e->spawn(\%env, $e->node, $proxy, $srv->url('/api/mcp'), $port, '--allow-http', '--transport', 'http-only');
}

sub rpc {
    my ($p, $msg, $secs) = @_;
    $p->say(JSON::PP->new->encode($msg));
    return undef unless defined $msg->{id};
    my $line = $p->wait_for(qr/^(\{.*"id":\s*$msg->{id}\b.*\})$/m, $secs);
    return Alyd::json_decode($line // '');
}

sub browser_log {
    my ($file) = @_;
    return [map { Alyd::json_decode($_) // { bad => $_ } } split /\n/, Alyd::slurp($file) // ''];
}

my $init = { jsonrpc => '2.0', id => 1, method => 'initialize',
    params => { protocolVersion => '2025-06-18', capabilities => {}, clientInfo => { name => 'claude-desktop-like', version => '1' } } };

my $config = "$tmp/mcp-auth";
my $log = "$tmp/browser.log";
{
    my $p = bridge(config => $config, log => $log);
    my $r = rpc($p, $init, 60);
    is($r->{result}{serverInfo}{name}, 'alyd', 'mcp-remote without a header: initialize reached alyd after its own OAuth')
      or diag($p->stderr);
    Alyd::poll_until(10, sub { scalar @{ browser_log($log) } });    # written once the callback has answered
    my $b = browser_log($log);
    is(scalar @$b, 1, 'the browser was opened once');
    like($b->[0]{url} // '', qr{^\Q${\ $srv->url('/oauth/authorize?')}\E}, 'on the consent page');
    is($b->[0]{status}, 302, 'the person approved');
    is($b->[0]{params}{iss}, $srv->url(''), 'the redirect carried iss');
    like($b->[0]{location} // '', qr{^http://(localhost|127\.0\.0\.1):\d+/}, "to mcp-remote's loopback callback");
    is($b->[0]{callbackStatus}, 200, "mcp-remote's callback server took the code");
    rpc($p, { jsonrpc => '2.0', method => 'notifications/initialized' });
    my $list = rpc($p, { jsonrpc => '2.0', id => 2, method => 'tools/list' }, 30);
    ok((grep { $_->{name} eq 'sites.list' } @{ $list->{result}{tools} // [] }), 'tools/list through the bridge');
    my $call = rpc($p, { jsonrpc => '2.0', id => 3, method => 'tools/call', params => { name => 'sites.list', arguments => {} } }, 30);
    ok($call->{result} && !$call->{result}{isError}, 'tools/call through the bridge') or diag(explain $call);
    $p->finish(2);
}

# What mcp-remote stored, and what alyd saw: the calls came with the user's token.
my @stored = map { Alyd::json_decode(Alyd::slurp($_) // '') } glob("$config/*/*_tokens.json");
like($stored[0]{access_token} // '', qr/^aly_oauth_/, 'mcp-remote stored an alyd access token');
like($stored[0]{refresh_token} // '', qr/^aly_oauth_rt_/, 'and a refresh token (it asked for offline_access)');
my $seen = Alyd::poll_until(10, sub {
    my $t = $srv->access_log_text // '';
    $t =~ m{oauth:\Q$who->{ws}\E:\S+ POST /api/mcp tools/call:sites\.list 200} ? $t : undef;
}, 0.2);
ok($seen, "alyd's access log: tools/call as the user, in the user's workspace");

{
    my $p = bridge(config => $config, log => $log);
    my $r = rpc($p, $init, 60);
    is($r->{result}{serverInfo}{name}, 'alyd', 'a second bridge connects with the stored tokens');
    is(scalar @{ browser_log($log) }, 1, 'without opening the browser again');
    $p->finish(2);
}

{
    my $denylog = "$tmp/deny.log";
    my $p = bridge(config => "$tmp/mcp-auth-deny", log => $denylog, action => 'deny');
    $p->say(JSON::PP->new->encode($init));
    # mcp-remote reports the refusal and keeps waiting for a sign-in that will not come.
    # The browser writes its log after the callback answered, so wait for both.
    Alyd::poll_until(30, sub { (@{ browser_log($denylog) } && $p->stderr =~ /Authorization failed/) || !$p->alive }, 0.1);
    my ($said) = $p->stderr =~ /(Authorization failed: access_denied)/;
    my $b = browser_log($denylog);
    is($b->[0]{params}{error}, 'access_denied', 'a person who denies: error=access_denied to the callback');
    is($said, 'Authorization failed: access_denied', 'mcp-remote reports the refusal') or diag($p->stderr);
    unlike($p->stdout, qr/"id":\s*1\b/, 'and the bridge answers no initialize');
    ok(!glob("$tmp/mcp-auth-deny/*/*_tokens.json"), 'and stores no token');
    $p->finish(1);
}

$srv->stop;
done_testing;
