# Cluster mode when PostgreSQL fails.  A COMMIT refused on a live connection
# fails that write alone: nothing of it anywhere, the next write goes through.
# Stopped, every write is refused at once
# with "the store is unavailable" while reads go on from the replica, /healthz
# answers 503 with Retry-After naming postgresql, alyctl writes fail and reads
# work; started again, the same alyd processes write again with no restart.
# Hung (every PostgreSQL process stopped), a write gives up after
# store_timeout instead of holding the worker.  And a host that slept past the
# change log's horizon copies the table whole when it comes back, dropping
# what was deleted meanwhile.
use strict;
use warnings;
use Test::More;
use JSON::PP ();
use Time::HiRes qw(time sleep);
use File::Temp ();
use Alyd;
use AlyOAuth;
use Cluster;

Cluster::need_engines(redis => 0);
Alyd::watchdog(300);

my $json = JSON::PP->new->canonical;
my $c = Cluster->hosts(2, workers => 2, volatile => 'lmdb', extra => ['store_timeout 1s', 'store_changes_keep 1s']);
my ($h0, $h1) = ($c->host(0), $c->host(1));
my $ws = $h0->ctl('workspace', 'create', 'Shop');
my $key = $h0->ctl('keys', 'create', '--workspace', $ws, '--scopes', 'read:sites,write:sites');
my $SC = $Alyd::SCALE;

sub ok_result { my ($st, $r) = @_; return $st == 200 && ref $r eq 'HASH' && !$r->{isError} && $r->{structuredContent} }
sub text_of   { my ($r) = @_; return $r->{content}[0]{text} // $r->{message} // '' }
sub healthz   { my ($h) = @_; return http_request($h->port, 'GET', '/healthz') }
sub create    { my ($h, $n) = @_; return mcp_call($h->port, $key, 'sites.create', { name => $n, domain => "$n.example", currency => 'EUR' }) }

my ($st, $r) = create($h0, 'before');
ok(ok_result($st, $r), 'a write while PostgreSQL is up');
my $site = $r->{structuredContent}{id};
ok(poll_until(2 * $SC, sub { ok_result(mcp_call($h1->port, $key, 'sites.get', { site_id => $site })) }), 'host 1 has it');
my @pids = map { [ $_->master_pid, sort $_->worker_pids ] } $h0, $h1;

# An OAuth code approved while PostgreSQL is up, exchanged while it is down (and again once it is back).
my $tmp = File::Temp->newdir;
Alyd::spew("$tmp/pw", "a long enough password\n");
$h0->ctl('users', 'add', '--workspace', $ws, '--email', 'ann@example.com', '--password-file', "$tmp/pw");
my $cb = 'http://127.0.0.1:9/cb';
my $app = Alyd::json_decode($h0->ctl('--json', 'oauth', 'clients', 'create', '--name', 'App', '--redirect-uri', $cb));
my $oa = AlyOAuth->new($h0);
my $code = $oa->get_code(client_id => $app->{client_id}, redirect_uri => $cb, scope => 'read:sites', email => 'ann@example.com',
    password => 'a long enough password');
ok($code->{code}, 'an OAuth code, approved while PostgreSQL is up');
my @exchange = (grant_type => 'authorization_code', code => $code->{code} // '', redirect_uri => $cb,
    code_verifier => $code->{pkce}{verifier}, client_id => $app->{client_id});

# ---- a COMMIT refused on a live connection ----
# A deferred constraint trigger refuses, at COMMIT and not before, any record holding the marker: the connection
# stays up, only that transaction fails.  The write is refused with the store's own words, nothing of it is in
# PostgreSQL, the change log or either host's replica, and the next write on the same hosts goes through.
$c->pg->psql(q{CREATE FUNCTION refuse_marked() RETURNS trigger LANGUAGE plpgsql AS $f$ BEGIN }
      . q{IF position(convert_to('refused-at-commit', 'UTF8') in NEW.v) > 0 THEN RAISE EXCEPTION 'marked record refused'; END IF; }
      . q{RETURN NULL; END $f$; CREATE CONSTRAINT TRIGGER refuse_marked AFTER INSERT OR UPDATE ON kv }
      . q{DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_marked()});
{
    my $rows    = $c->pg->psql('SELECT count(*) FROM kv');
    # The newest row's seq, 0 if none: the log is pruned past store_changes_keep (1 s here), so its max may fall meanwhile;
    # a row of the refused writes would come after it whatever was pruned.
    my $changes = $c->pg->psql('SELECT coalesce(max(seq), 0) FROM changes');
    my ($gs, $g0) = mcp_call($h0->port, $key, 'sites.get', { site_id => $site });
    my $version = ok_result($gs, $g0) ? $g0->{structuredContent}{version} : -1;
    my ($cs, $cr) = create($h0, 'refused-at-commit');
    ok(!ok_result($cs, $cr), 'COMMIT refused: a sites.create is refused');
    is(text_of($cr), 'the store could not complete this request; try again', 'COMMIT refused: saying the store could not complete it');
    unlike($json->encode($cr // {}), qr/marked record|refuse_marked|plpgsql/, 'COMMIT refused: nothing of PostgreSQL\'s own error reaches the client');
    my ($us, $ur) = mcp_call($h1->port, $key, 'sites.update', { site_id => $site, name => 'refused-at-commit' });
    ok(!ok_result($us, $ur), 'COMMIT refused: a sites.update on the other host is refused');
    is(text_of($ur), 'the store could not complete this request; try again', 'COMMIT refused: saying so too');
    is($c->pg->psql('SELECT count(*) FROM kv'), $rows, 'COMMIT refused: PostgreSQL holds no new record');
    is($c->pg->psql("SELECT count(*) FROM kv WHERE position(convert_to('refused-at-commit', 'UTF8') in v) > 0"), '0',
        'COMMIT refused: and no record with the refused name');
    is($c->pg->psql("SELECT count(*) FROM changes WHERE seq > $changes"), '0', 'COMMIT refused: the change log has no new row');
    for my $h ($h0, $h1) {
        my $name = 'host ' . ($h == $h0 ? 0 : 1);
        my ($ls, $lr) = mcp_call($h->port, $key, 'sites.list', {});
        my @names = map { $_->{name} } @{ $lr->{structuredContent}{sites} // [] };
        is_deeply(\@names, ['before'], "COMMIT refused: $name lists only the site it had");
        my ($ss, $sr) = mcp_call($h->port, $key, 'sites.get', { site_id => $site });
        is(ok_result($ss, $sr) ? $sr->{structuredContent}{version} : -2, $version, "COMMIT refused: $name has the site at its version");
    }
    # The refusal was one transaction's: the connection, /healthz and the next writes are fine.
    my ($hs) = healthz($h0);
    is($hs, 200, 'COMMIT refused: /healthz still 200 (the connection was not dropped)');
    for my $h ($h0, $h1) {
        my $name = 'host ' . ($h == $h0 ? 0 : 1);
        my ($ws2, $wr) = mcp_call($h->port, $key, 'sites.update', { site_id => $site, name => 'before' });
        ok(ok_result($ws2, $wr), "COMMIT refused: the next write on $name goes through");
    }
    unlike(($h0->error_log_text // '') . ($h1->error_log_text // ''), qr/PostgreSQL is unreachable/,
        'COMMIT refused: no host took PostgreSQL for unreachable');
}
$c->pg->psql('DROP TRIGGER refuse_marked ON kv; DROP FUNCTION refuse_marked()');

# ---- PostgreSQL stopped ----
$c->pg->stop;
for my $h ($h0, $h1) {
    my $name = 'host ' . ($h == $h0 ? 0 : 1);
    my ($hs, $hh, $hb);
    ok(poll_until(2 * $SC, sub { ($hs, $hh, $hb) = healthz($h); $hs == 503 }), "$name: /healthz answers 503 once PostgreSQL is down");
    my $doc = Alyd::json_decode($hb) // {};
    is($doc->{engine}, 'postgresql', "$name: /healthz names postgresql");
    like($doc->{error} // '', qr/reads are served from this host's replica/, "$name: and says reads go on");
    like($hh, qr/^retry-after: 1\r?$/mi, "$name: /healthz carries Retry-After");
}
my $t0 = time;
my $hd;
($st, $r, $hd) = create($h0, 'during');
my $took = time - $t0;
ok(!ok_result($st, $r), 'a write while PostgreSQL is down fails');
is(text_of($r), 'the store is unavailable; try again shortly', 'saying the store is unavailable, and nothing of PostgreSQL\'s own error');
ok($took < 3 * $SC, sprintf('and is answered at once (%.3f s), not after a hang', $took));
is($st, 503, 'a write while PostgreSQL is down: HTTP 503');
like($hd // '', qr/^retry-after: 1\r?$/mi, 'with Retry-After: 1');
is($r->{code}, -32603, 'a JSON-RPC internal error');
is($r->{data}{retry_after_seconds}, 1, 'whose data says when to retry');
($st, $r) = mcp_call($h1->port, $key, 'sites.get', { site_id => $site });
ok(ok_result($st, $r), 'reads keep working from the replica');
($st, $r) = mcp_call($h1->port, $key, 'sites.list', {});
is(scalar @{ $r->{structuredContent}{sites} // [] }, 1, 'sites.list from the replica');
my ($exit, $out, $err) = Alyd::run_cmd(Alyd::alyctl_bin(), '-c', $h1->conf, 'workspace', 'create', 'Nope');
isnt($exit, 0, 'an alyctl write while PostgreSQL is down fails');
like($err, qr/the store is unavailable/, 'saying so');
($exit, $out, $err) = Alyd::run_cmd(Alyd::alyctl_bin(), '-c', $h1->conf, 'workspace', 'list');
is($exit, 0, 'an alyctl read works from the replica');
like($out, qr/\Q$ws\E/, 'and lists the workspace');
my (undef, undef, $m) = Alyd::curl($h0->metrics_url('/metrics'));
is(Alyd::metric_value($m, 'alyd_pg_up'), 0, '/metrics: alyd_pg_up 0');
ok(Alyd::metric_value($m, 'alyd_pg_failures_total') > 0, '/metrics: the failures are counted');
like($h0->error_log_text // '', qr/PostgreSQL is unreachable: .*writes are refused, reads use the local replica/, 'the error log says so');
{
    # The authorization server's writes: 503 with Retry-After, like every other request that needs the store.
    my ($ts, $th, $tj) = $oa->token(@exchange);
    is($ts, 503, 'OAuth: the code exchange while PostgreSQL is down: 503');
    like($th, qr/^retry-after: 1\r?$/mi, 'OAuth: with Retry-After: 1');
    is($tj->{error}, 'temporarily_unavailable', 'OAuth: temporarily_unavailable');
    unlike($tj->{error_description} // '', qr/postgres|password|connection/i, 'OAuth: nothing of PostgreSQL\'s own error');
    my ($rs, $rh, $rb) = Alyd::curl('-H', 'Content-Type: application/json', '--data-binary', '{"redirect_uris":["http://127.0.0.1:9/x"]}',
        $h0->url('/oauth/register'));
    is($rs, 503, 'OAuth: a registration while PostgreSQL is down: 503');
    like($rh, qr/^retry-after: 1\r?$/mi, 'OAuth: with Retry-After: 1');
    is((Alyd::json_decode($rb) // {})->{error}, 'temporarily_unavailable', 'OAuth: temporarily_unavailable');
}
{
    # A legacy initialize stores its session: refused the same way, and no session id handed out.
    my ($is, $ir, $ih) = Cluster::mcp_request($h0, $key, 'initialize',
        { protocolVersion => '2025-11-25', capabilities => {}, clientInfo => { name => 't', version => '1' } });
    is($is, 503, 'initialize while PostgreSQL is down: 503');
    like($ih // '', qr/^retry-after: 1\r?$/mi, 'initialize: with Retry-After: 1');
    is($ir->{error}{message}, 'the store is unavailable; try again shortly', 'initialize: saying the store is unavailable');
    unlike($ih // '', qr/^mcp-session-id:/mi, 'initialize: no session id');
}

# ---- PostgreSQL back: recovery without restarting alyd ----
$c->pg->start;
for my $h ($h0, $h1) {
    ok(poll_until(3 * $SC, sub { (healthz($h))[0] == 200 }), '/healthz answers 200 again on host ' . ($h == $h0 ? 0 : 1));
}
# /healthz answers from whichever worker takes the connection: the other may have tried PostgreSQL while it was
# still starting and wait out its retry interval (up to a second), refusing a write meanwhile with the clean 503 and
# Retry-After: 1.  So the write is retried as a client told to retry would, every refusal must be that one, and
# the sites counted at the end show the refused attempts wrote nothing.
my @refusals;
ok(poll_until(3, sub {
    ($st, $r) = create($h1, 'after');
    return 1 if ok_result($st, $r);
    push @refusals, "$st " . $json->encode($r);
    return 0;
}, 0.2), 'a write succeeds again') or diag($json->encode($r));
is_deeply([ grep { !/^503 .*"the store is unavailable; try again shortly"/ } @refusals ], [],
    'any write refused before it got the 503 "try again shortly" (' . scalar(@refusals) . ' refused)');
my $site2 = $r->{structuredContent}{id} // 'none';
ok(poll_until(2 * $SC, sub { ok_result(mcp_call($h0->port, $key, 'sites.get', { site_id => $site2 })) }), 'and reaches the other host');
is_deeply([ map { [ $_->master_pid, sort $_->worker_pids ] } $h0, $h1 ], \@pids, 'the same alyd processes (no restart)');
like($h0->error_log_text // '', qr/PostgreSQL is reachable again/, 'the error log says PostgreSQL is back');
{
    # The refused exchange spent nothing: the same code buys its token now.
    my ($ts, undef, $tj) = $oa->token(@exchange);
    is($ts, 200, 'OAuth: the same code, exchanged once PostgreSQL is back: 200');
    ok($tj->{access_token}, 'OAuth: an access token (the refusal spent nothing)');
}

# ---- PostgreSQL hung: a write gives up after store_timeout ----
my @pg = ($c->pg->pid, Alyd::children_of($c->pg->pid));
kill 'STOP', @pg;
$t0 = time;
($st, $r) = create($h0, 'hung');
$took = time - $t0;
kill 'CONT', @pg;
ok(!ok_result($st, $r), 'a write while PostgreSQL hangs fails');
is(text_of($r), 'the store is unavailable; try again shortly', 'saying the store is unavailable');
like($h0->error_log_text // '', qr/PostgreSQL is unreachable: no (answer|connection) within store_timeout/, 'the error log names the deadline');
ok($took < 1 + 2 * $SC, sprintf('after the deadline, not a hang (%.3f s; store_timeout 1s)', $took));
ok(poll_until(3 * $SC, sub { ok_result(create($h0, 'unhung')) }), 'PostgreSQL resumed: writes work again');
sleep 1 * $SC;    # every worker's timer reconnects (the one that served the write above may not be the next one)

# ---- a host asleep past the horizon copies the table whole ----
# A product host 1 has, deleted while it is away: the whole copy must drop it, not merge over it.
my $ckey = $h0->ctl('keys', 'create', '--workspace', $ws, '--scopes', 'read:content,write:content');
($st, $r) = mcp_call($h0->port, $ckey, 'products.create', { site_id => $site, title => 'Gone Mug', price => 900, sku => 'GONE-1' });
my $gone = ok_result($st, $r) ? $r->{structuredContent}{id} : 'none';
ok(ok_result($st, $r), 'a product made before host 1 goes away');
ok(poll_until(2 * $SC, sub { ok_result(mcp_call($h1->port, $ckey, 'products.get', { site_id => $site, product_id => $gone })) }),
    'host 1 has it');
$h1->stop;
($st, $r) = mcp_call($h0->port, $ckey, 'products.delete', { site_id => $site, product_id => $gone, expected_version => 1 });
ok(ok_result($st, $r) && $r->{structuredContent}{deleted}, 'and deleted while host 1 is away');
($st, $r) = create($h0, 'while-away');
my $site3 = $r->{structuredContent}{id} // 'none';
ok(ok_result($st, $r), 'a write while host 1 is away') or diag($json->encode($r));
ok(poll_until(6 * $SC, sub { $c->pg->psql('SELECT upto FROM replica_horizon') > 0 && $c->pg->psql('SELECT count(*) FROM changes') == 0 }),
    'the change log is pruned past it (store_changes_keep 1s)');
$h1->spawn;
is($h1->wait_ready, undef, 'host 1 starts again');
ok(poll_until(2 * $SC, sub { ok_result(mcp_call($h1->port, $key, 'sites.get', { site_id => $site3 })) }), 'and has the write made while it was away');
like($h1->error_log_text // '', qr/behind the change log's horizon: copied \d+ records whole/, 'by copying the table whole');
($st, $r) = mcp_call($h1->port, $ckey, 'products.get', { site_id => $site, product_id => $gone });
ok($st == 200 && $r->{isError} && text_of($r) =~ /no product/, 'the product deleted while it was away is gone from host 1 too');
($st, $r) = mcp_call($h1->port, $ckey, 'products.list', { site_id => $site });
ok(ok_result($st, $r) && !grep({ $_->{id} eq $gone } @{ $r->{structuredContent}{products} // [] }), 'and not in its products.list');
my @lists = map { (mcp_call($_->port, $key, 'sites.list', {}))[1]{structuredContent}{sites} // [] } $h0, $h1;
is(scalar @{ $lists[0] }, 4, 'host 0 lists four sites (before, after, unhung, while-away; the failed writes left nothing)');
is_deeply($lists[1], $lists[0], 'host 1 lists the same, none twice');

$c->stop;
done_testing;
