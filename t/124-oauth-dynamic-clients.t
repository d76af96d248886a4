# What dynamic registration may cost the server, against a real alyd:
#
#   - the per-address limits of the authorization server (30 registrations an
#     hour, 20 failed sign-ins in 15 minutes) count an IPv6 /64 as one
#     address, as every other address limit of alyd does.  The test runs in a
#     network namespace of its own (unshare -n) where lo carries fd00:1::/64
#     and fd00:2::1, alyd listens on [fd00:1::1], and curl --interface sends
#     from one address of the /64 after another;
#   - a dynamic client unused for 30 days is deleted, with its grants
#     revoked, by a later registration (alyd's wall clock moved by
#     libfaketime), and one in use is kept;
#   - at most oauth_max_dynamic_clients live dynamic clients: past it a
#     registration is an RFC 7591 error and nothing is stored; clients remove
#     and the sweep make room again.
use strict;
use warnings;
use Test::More;
use File::Temp ();
use JSON::PP ();
use Alyd;
use AlyOAuth;
use OAuthE2E;

# Into a network namespace of our own, once, when the system lets us (root, or user namespaces).
my $netns_why;
if (!$ENV{ALY_T124_NETNS}) {
    my ($rc, undef, $err) = Alyd::run_cmd('unshare', '-n', 'ip', 'link', 'set', 'lo', 'up');
    if ($rc == 0) {
        $ENV{ALY_T124_NETNS} = 1;
        exec('unshare', '-n', $^X, (map { "-I$_" } grep { !ref } @INC), $0, @ARGV) or die "exec unshare: $!";
    }
    $netns_why = "no network namespace for the IPv6 addresses (unshare -n ip link set lo up: exit $rc: $err)";
} else {
    for my $cmd ([qw(ip link set lo up)], [qw(ip addr add fd00:1::1/64 dev lo nodad)],
        (map { [ 'ip', 'addr', 'add', sprintf('fd00:1::%x/128', $_), 'dev', 'lo', 'nodad' ] } 2 .. 80),
        [qw(ip addr add fd00:2::1/128 dev lo nodad)])
    {
        my ($rc, undef, $err) = Alyd::run_cmd(@$cmd);
        $netns_why = "in the namespace, @$cmd failed ($rc): $err" and last if $rc != 0;
    }
}

Alyd::watchdog(300);

my $tmp = File::Temp->newdir;
my $cb  = 'http://127.0.0.1:' . Alyd::free_port() . '/callback';
Alyd::spew("$tmp/pw", "right-password\n");

sub register_json {
    my ($srv, $doc, @curl) = @_;
    my ($st, $h, $b) = Alyd::curl(@curl, '-H', 'Content-Type: application/json', '--data-binary', JSON::PP->new->encode($doc),
        $srv->url('/oauth/register'));
    return ($st, Alyd::json_decode($b) // {}, $h);
}

# ---- the per-address limits: an IPv6 /64 is one address ----
SKIP: {
    skip $netns_why, 9 if defined $netns_why;
    my $p6  = Alyd::free_port();
    my $srv = Alyd->start(workers => 2, extra => ["listen [fd00:1::1]:$p6"]);
    my $host = '127.0.0.1:' . $srv->port;    # the name alyd serves (public_url); the connection goes to [fd00:1::1]
    my $v6 = "http://[fd00:1::1]:$p6";
    my $reg = sub {
        my ($src) = @_;
        my ($st) = Alyd::curl('--interface', $src, '-H', "Host: $host", '-H', 'Content-Type: application/json', '--data-binary',
            '{"redirect_uris":["http://127.0.0.1/cb"]}', "$v6/oauth/register");
        return $st;
    };
    my %by;
    $by{ $reg->(sprintf 'fd00:1::%x', $_) }++ for 2 .. 36;
    is($by{201} // 0, 30, '35 registrations from 35 addresses of one /64: 30 are taken') or diag(explain(\%by));
    is($by{429} // 0, 5, 'and the other 5 refused (429): the /64 has one budget');
    is($reg->('fd00:2::1'), 201, 'an address of another /64 has a budget of its own');
    my ($st) = Alyd::curl('-H', 'Content-Type: application/json', '--data-binary', '{"redirect_uris":["http://127.0.0.1/cb"]}',
        $srv->url('/oauth/register'));
    is($st, 201, 'and so has 127.0.0.1');

    my $ws = $srv->ctl('workspace', 'create', 'Acme');
    $srv->ctl('users', 'add', '--workspace', $ws, '--email', 'ann@example.com', '--password-file', "$tmp/pw");
    my $app = Alyd::json_decode($srv->ctl('--json', 'oauth', 'clients', 'create', '--name', 'App', '--redirect-uri', $cb));
    my $o = AlyOAuth->new($srv);
    my $p = AlyOAuth::pkce();
    my $pg = $o->authorize_page(response_type => 'code', client_id => $app->{client_id}, redirect_uri => $cb, state => 's',
        code_challenge => $p->{challenge}, code_challenge_method => 'S256', scope => 'read:sites');
    my $sign_in = sub {
        my ($src, $email, $password) = @_;
        my $body = AlyOAuth::form(request => $pg->{page}{request}, csrf => $pg->{page}{csrf}, email => $email,
            password => $password, scope => 'read:sites', action => 'approve');
        my ($s) = Alyd::curl($o->cookie_header, '--interface', $src, '-H', "Host: $host", '-H',
            'Content-Type: application/x-www-form-urlencoded', '--data-binary', $body, "$v6/oauth/authorize");
        return $s;
    };
    # A different unknown account each time, so only the address limit can stop them.
    my @st = map { $sign_in->(sprintf('fd00:1::%x', 40 + $_), "nobody$_\@example.com", 'wrong') } 1 .. 21;
    is(scalar(grep { $_ == 401 } @st[0 .. 19]), 20, '20 failed sign-ins from 20 addresses of one /64: each 401');
    is($st[20], 429, 'the 21st, from yet another address of it: 429') or diag("@st");
    is($sign_in->('fd00:1::50', 'ann@example.com', 'right-password'), 429, 'then the right password from the /64 is refused too');
    is($sign_in->('fd00:2::1', 'ann@example.com', 'right-password'), 302, 'but not from another /64');
    ok($srv->stop, 'server stops');
}

# ---- idle dynamic clients are deleted; the cap on live ones ----
SKIP: {
    skip 'libfaketime is not installed (scripts/install-deps --test): the idle sweep needs a movable clock', 27
      unless OAuthE2E::Clock->available;
    my $clock = OAuthE2E::Clock->new;
    my $srv = Alyd->start(workers => 2, env => $clock->env, extra => ['oauth_max_dynamic_clients 3']);
    my $ws = $srv->ctl('workspace', 'create', 'Acme');
    $srv->ctl('users', 'add', '--workspace', $ws, '--email', 'ann@example.com', '--password-file', "$tmp/pw");
    my $o = AlyOAuth->new($srv);
    my $dynamic = sub {
        my $list = Alyd::json_decode($srv->ctl('--json', 'oauth', 'clients', 'list')) // [];
        return { map { $_->{name} => $_->{client_id} } grep { $_->{registered_by} eq 'dynamic' } @$list };
    };
    my $reg = sub { my ($name) = @_; return register_json($srv, { redirect_uris => [$cb], client_name => $name }) };
    my $tokens = sub {
        my ($id) = @_;
        my ($t) = $o->tokens(client_id => $id, redirect_uri => $cb, scope => 'read:sites', email => 'ann@example.com',
            password => 'right-password');
        return $t;
    };
    my %id;
    for my $name (qw(A B C)) {
        my ($st, $j) = $reg->($name);
        is($st, 201, "dynamic client $name registered");
        $id{$name} = $j->{client_id};
    }
    my $ta = $tokens->($id{A});
    ok($ta && $ta->{access_token}, 'A completes a code flow (so it has a grant)');
    my $gid = (split /\./, AlyOAuth::claims($ta->{access_token})->{jti})[0];

    my ($st, $j) = $reg->('D');
    is($st, 400, 'a fourth registration with oauth_max_dynamic_clients 3: 400');
    is($j->{error}, 'invalid_client_metadata', 'an RFC 7591 error');
    like($j->{error_description} // '', qr/oauth_max_dynamic_clients/, 'saying which limit') or diag($j->{error_description});
    ok(!exists $j->{client_id} && !exists $j->{client_secret}, 'and no client_id');
    is_deeply([ sort keys %{ $dynamic->() } ], [qw(A B C)], 'nothing was stored');
    ($st) = register_json($srv, { redirect_uris => [$cb], client_name => 'D', token_endpoint_auth_method => 'client_secret_post' });
    is($st, 400, 'a confidential one is refused the same');
    my $app = Alyd::json_decode($srv->ctl('--json', 'oauth', 'clients', 'create', '--name', 'Ops', '--redirect-uri', $cb));
    like($app->{client_id} // '', qr/^cli_/, 'alyctl still creates clients: they do not count');

    $srv->ctl('oauth', 'clients', 'remove', $id{B});
    ($st, $j) = $reg->('D');
    is($st, 201, 'clients remove of a dynamic client makes room at once');
    $id{D} = $j->{client_id};
    ($st) = $reg->('E');
    is($st, 400, 'and the next is over the cap again');

    $clock->advance('+20d', $srv);
    ok($tokens->($id{C}), '20 days on, C is used (a code flow)');
    $clock->advance('+31d', $srv);
    my $pg = $o->authorize_page(response_type => 'code', client_id => $id{A}, redirect_uri => $cb, code_challenge => 'x' x 43,
        code_challenge_method => 'S256');
    is($pg->{status}, 400, '31 days on, A (unused for 31 days) is unknown to /oauth/authorize');
    like($pg->{body}, qr/unknown client_id/, '... as unknown');
    is_deeply([ sort keys %{ $dynamic->() } ], [qw(A C D)], 'but still stored until a registration sweeps');

    ($st, $j) = $reg->('E');
    is($st, 201, 'a registration is taken: A and D no longer count');
    $id{E} = $j->{client_id};
    is_deeply([ sort keys %{ $dynamic->() } ], [qw(C E)], 'and it deleted A and D (idle 31 days) and kept C (used 11 days ago)');
    my $grants = Alyd::json_decode($srv->ctl('--json', 'oauth', 'grants', 'list')) // [];
    my ($ga) = grep { $_->{id} eq $gid } @$grants;
    ok($ga && $ga->{revoked} ne '-', "A's grant is revoked with it") or diag(explain($ga));
    my ($gc) = grep { $_->{client_id} eq $id{C} } @$grants;
    ok($gc && $gc->{revoked} eq '-', "C's grant is not");
    my $all = Alyd::json_decode($srv->ctl('--json', 'oauth', 'clients', 'list')) // [];
    ok((grep { $_->{client_id} eq $app->{client_id} } @$all), 'the alyctl client, unused as long, is kept');
    ok($tokens->($id{C}), 'C still completes a code flow');
    ($st) = $reg->('F');
    is($st, 201, 'one more fits (C, E, F)');
    ($st) = $reg->('G');
    is($st, 400, 'then the cap again');
    is_deeply([ sort keys %{ $dynamic->() } ], [qw(C E F)], 'three dynamic clients stored');
    ok($srv->stop, 'server stops');
}

# ---- clocks: a client stamped ahead of this clock is not idle; removing one gone idle since the count makes room ----
SKIP: {
    skip 'libfaketime is not installed (scripts/install-deps --test)', 8 unless OAuthE2E::Clock->available;
    my $clock = OAuthE2E::Clock->new;
    my $srv = Alyd->start(workers => 1, env => $clock->env, extra => ['oauth_max_dynamic_clients 2']);
    my $o = AlyOAuth->new($srv);
    my $names = sub {
        my $list = Alyd::json_decode($srv->ctl('--json', 'oauth', 'clients', 'list')) // [];
        return [ sort map { $_->{name} } grep { $_->{registered_by} eq 'dynamic' } @$list ];
    };
    my $reg = sub { my ($name) = @_; return register_json($srv, { redirect_uris => [$cb], client_name => $name }) };
    # X registered by a clock 2 s ahead (another host's, or this one before it stepped back).
    $clock->advance('+2s', $srv);
    my ($st, $x) = $reg->('X');
    is($st, 201, 'X registered with the clock 2 s ahead');
    $clock->advance('+0', $srv);
    ($st) = $reg->('Y');
    is($st, 201, 'Y registered 2 s "earlier": its registration sweeps (the last sweep lies ahead)');
    is_deeply($names->(), [qw(X Y)], 'and X, seen 2 s ahead of this clock, is not idle: kept');
    my $pg = $o->authorize_page(response_type => 'code', client_id => $x->{client_id}, redirect_uri => $cb, code_challenge => 'x' x 43,
        code_challenge_method => 'S256');
    unlike($pg->{body} // '', qr/unknown client_id/, 'and known to /oauth/authorize');
    $srv->ctl('oauth', 'clients', 'remove', $_) for map { $_->{client_id} } grep { $_->{registered_by} eq 'dynamic' }
      @{ Alyd::json_decode($srv->ctl('--json', 'oauth', 'clients', 'list')) // [] };

    # A counted at a sweep 30 days less 10 minutes after it registered; idle a minute past 30 days; then removed.
    ($st, my $a) = $reg->('A');
    $clock->advance('+43190m', $srv);
    ($st) = $reg->('B');
    is($st, 201, 'B registered; its sweep counts A live');
    $clock->advance('+43201m', $srv);
    {
        local @ENV{ keys %{ $clock->env } } = values %{ $clock->env };
        $srv->ctl('oauth', 'clients', 'remove', $a->{client_id});
    }
    is_deeply($names->(), ['B'], 'A, idle since that count, removed');
    ($st, my $j) = $reg->('C');
    is($st, 201, 'its removal made room at once (cap 2: B and C)') or diag($j->{error_description});
    ok($srv->stop, 'server stops');
}

done_testing();
