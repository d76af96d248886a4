# The consent page in a real browser: Debian's headless Chromium, driven by
# playwright-core through t/interop/oauth-browser.mjs.  A person signs in,
# unticks write:content, presses Allow and arrives at the client's callback
# with a code (state and iss beside it); the token that code buys lacks the
# unticked scope.  A second visit presses Deny and arrives with
# error=access_denied, still signed in (the browser kept the sign-in cookie, so
# it asks for no password).  The page renders under its own Content-Security-Policy
# with no violation in the console, while the same policy on a page with an
# inline script does report one (so the console check can fail).
use strict;
use warnings;
use Test::More;
use File::Temp ();
use Alyd;
use AlyOAuth;
use OAuthE2E;

Alyd::watchdog(300);
my $e = OAuthE2E->node_or_skip('playwright-core');
my $chromium = $ENV{ALY_CHROMIUM} // '/usr/bin/chromium';
plan skip_all => "no Chromium at $chromium (scripts/install-deps --test installs Debian's)" unless -x $chromium;
my $script = $e->script('oauth-browser.mjs');

my $srv = Alyd->start(workers => 2);
my $who = OAuthE2E::user($srv);
my $cbport = Alyd::free_port();
my $cb = "http://127.0.0.1:$cbport/callback";
my $app = Alyd::json_decode($srv->ctl('--json', 'oauth', 'clients', 'create', '--name', 'Browser Test App', '--redirect-uri', $cb));
my $issuer = $srv->url('');

my %pkce = (approve => AlyOAuth::pkce(), deny => AlyOAuth::pkce());
my %state = (approve => 'st-a-' . int(rand 1e9), deny => 'st-d-' . int(rand 1e9));
sub authorize_url {
    my ($which) = @_;
    return $srv->url('/oauth/authorize?') . AlyOAuth::form(response_type => 'code', client_id => $app->{client_id},
        redirect_uri => $cb, state => $state{$which}, code_challenge => $pkce{$which}{challenge}, code_challenge_method => 'S256',
        scope => 'read:sites write:content offline_access', resource => $srv->url('/api/mcp'));
}

my $tmp = File::Temp->newdir;
my $opts = JSON::PP->new->encode({ chromium => $chromium, callbackPort => $cbport, approveUrl => authorize_url('approve'),
    denyUrl => authorize_url('deny'), email => $who->{email}, password => $who->{password}, untick => 'write:content',
    screenshot => $ENV{ALY_SCREENSHOT} });
my ($exit, $out, $err) = Alyd::run_cmd('env', "HOME=$tmp", $e->node, $script, $opts);
my $r = Alyd::json_decode((split /\n/, $out)[-1] // '') // {};
is($exit, 0, 'Chromium ran the consent page to the callback twice') or diag("$out\n$err");

my $a = $r->{visits}{approve} // {};
is($a->{status}, 200, 'consent page: 200 in the browser');
like($a->{heading} // '', qr/Browser Test App/, 'it names the client');
ok((grep { $_->{name} eq 'request' && $_->{type} eq 'hidden' } @{ $a->{fields} // [] }), 'hidden request field');
ok((grep { $_->{name} eq 'csrf' && $_->{type} eq 'hidden' } @{ $a->{fields} // [] }), 'hidden csrf field');
my @boxes = grep { $_->{type} eq 'checkbox' && $_->{name} eq 'scope' } @{ $a->{fields} // [] };
ok(@boxes >= 2 && !(grep { !$_->{checked} } @boxes), 'the scope checkboxes are ticked by default');
my $csp = $a->{headers}{'content-security-policy'} // '';
like($csp, qr/frame-ancestors 'none'/, "the page's CSP forbids framing");
is($a->{headers}{'x-frame-options'}, 'DENY', 'X-Frame-Options: DENY');
is_deeply($a->{violations}, [], 'no CSP violation while the page rendered and was submitted') or diag(explain $a->{console});
# The browser's own favicon probe may 404 (on either origin); anything else is the page's doing.
ok(!(grep { ($_->{type} eq 'error' || $_->{type} eq 'pageerror') && ($_->{url} // '') !~ m{/favicon\.ico$} } @{ $a->{console} // [] }),
    'no other console error')
  or diag(explain $a->{console});

my $landed = AlyOAuth::query_params($a->{landed});
like($a->{landed} // '', qr{^\Q$cb\E\?}, 'Allow: the browser arrived at the callback');
is($a->{landedText}, 'signed in', "and the callback's page rendered");
is($landed->{state}, $state{approve}, 'with the state');
is($landed->{iss}, $issuer, 'with iss');
ok(length($landed->{code} // ''), 'with a code');
ok(!exists $landed->{error}, 'without an error');

my ($st, $h, $j) = AlyOAuth->new($srv)->token(grant_type => 'authorization_code', code => $landed->{code} // '',
    redirect_uri => $cb, code_verifier => $pkce{approve}{verifier}, client_id => $app->{client_id});
is($st, 200, 'the code buys a token');
my @scope = split / /, $j->{scope} // '';
ok((grep { $_ eq 'read:sites' } @scope), 'the token has the scope left ticked');
ok(!(grep { $_ eq 'write:content' } @scope), 'and not the one unticked');
my $claims = AlyOAuth::claims($j->{access_token} // '') // {};
unlike($claims->{scope} // '', qr/write:content/, 'nor does the access token itself');
like($claims->{scope} // '', qr/read:sites/, 'which carries the ticked scope');

my $d = $r->{visits}{deny} // {};
my $dl = AlyOAuth::query_params($d->{landed});
like($d->{landed} // '', qr{^\Q$cb\E\?}, 'Deny: the browser arrived at the callback');
is($dl->{error}, 'access_denied', 'with error=access_denied');
is($dl->{state}, $state{deny}, 'and the state');
is($dl->{iss}, $issuer, 'and iss');
ok(!exists $dl->{code}, 'and no code');
is_deeply($d->{violations}, [], 'no CSP violation on the second visit either');
ok(!(grep { $_->{name} eq 'password' } @{ $d->{fields} // [] }),
    "the second visit asks for no password: the browser kept alyd's __Host- sign-in cookie");
ok((grep { $_->{name} eq 'password' } @{ $a->{fields} // [] }), 'while the first one did');

ok(@{ $r->{probe}{violations} // [] } >= 1, "control: the page's own CSP on a page with an inline script is reported in the console")
  or diag(explain $r->{probe});
isnt($r->{probe}{title}, 'ran', 'control: and the inline script did not run');
is(scalar @{ $r->{callbacks} // [] }, 2, 'the callback was reached exactly twice');

$srv->stop;
done_testing;
