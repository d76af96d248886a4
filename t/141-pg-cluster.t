# Cluster mode's durable store across hosts: two alyd hosts on one PostgreSQL,
# each with its own LMDB replica.  alyctl works the same on either host; a key
# minted on one works on the other; a write is read back at once on the host
# that made it and within 1 s on the other; a revocation is refused everywhere
# within 1 s; two hosts racing on one expected_version, one idempotency key or
# one sku: exactly one wins; and a read-only tool call costs no PostgreSQL
# round trip while a write costs two (the counter in /metrics).
use strict;
use warnings;
use Test::More;
use File::Temp ();
use JSON::PP ();
use POSIX ();
use Time::HiRes qw(time sleep);
use Alyd;
use Cluster;

Cluster::need_engines(redis => 0);
Alyd::watchdog(300);

my $json = JSON::PP->new->canonical;
my $c = Cluster->hosts(2, workers => 2, volatile => 'lmdb');
my ($h0, $h1) = ($c->host(0), $c->host(1));
my $ALL = 'read:sites,write:sites,read:content,write:content,read:orders,write:orders,read:analytics';

# Polls $cb every 10 ms for up to $secs; returns the seconds it took, or undef.
sub took {
    my ($secs, $cb) = @_;
    my $t0 = time;
    while (time - $t0 < $secs) {
        return time - $t0 if $cb->();
        sleep 0.01;
    }
    return undef;
}
my $BOUND = 1.0 * $Alyd::SCALE;

sub ok_result { my ($st, $r) = @_; return $st == 200 && ref $r eq 'HASH' && !$r->{isError} && $r->{structuredContent} }
sub text_of   { my ($r) = @_; return $r->{content}[0]{text} // $r->{message} // '' }

# Runs the calls ([port, key, tool, args] each) at the same moment from separate processes.
sub race_calls {
    my (@calls) = @_;
    my $dir = File::Temp->newdir;
    my $go = time + 0.2;
    my @pids;
    for my $i (0 .. $#calls) {
        my $pid = fork // die "fork: $!";
        if ($pid == 0) {
            sleep($go - time) if $go > time;
            my ($st, $r) = mcp_call(@{ $calls[$i] });
            Alyd::spew("$dir/$i", $json->encode({ st => $st, r => $r }));
            POSIX::_exit(0);
        }
        push @pids, $pid;
    }
    waitpid($_, 0) for @pids;
    return map { Alyd::json_decode(Alyd::slurp("$dir/$_") // 'null') // { st => 0, r => {} } } 0 .. $#calls;
}

# ---- alyctl on either host, through PostgreSQL ----
my $ws = $h0->ctl('workspace', 'create', 'Shop A');
like($ws, qr/^ws_\w{20}$/, 'alyctl workspace create on host 0');
like($h1->ctl('workspace', 'list'), qr/^\Q$ws\E\s.*Shop A/m, 'alyctl workspace list on host 1 shows it (alyctl catches the replica up)');
my $made = Alyd::json_decode($h1->ctl('--json', 'keys', 'create', '--workspace', $ws, '--scopes', $ALL, '--name', 'k1'));
my ($kid, $key) = ($made->{id}, $made->{key});
like($key, qr/^aly_/, 'alyctl keys create on host 1');
like($h0->ctl('keys', 'list', '--workspace', $ws), qr/\Q$kid\E/, 'alyctl keys list on host 0 shows the key minted on host 1');
like($h0->ctl('keys', 'show', $kid), qr/k1/, 'alyctl keys show on host 0');
is($c->pg->psql("SELECT count(*) FROM kv WHERE db = 1"), '1', 'PostgreSQL holds the workspace record (kv, db 1)');
ok($c->pg->psql('SELECT count(*) FROM changes') >= 3, 'and the change log its writes');

# ---- a key minted on one host works on every host within 1 s ----
for my $h ($h0, $h1) {
    my $t = took($BOUND, sub { (mcp_call($h->port, $key, 'sites.list', {}))[0] == 200 });
    ok(defined $t, 'the key works on host ' . ($h == $h0 ? 0 : 1) . sprintf(' (after %.3f s)', $t // -1));
}

# ---- read-your-writes on the writing host, every host within 1 s ----
my (@sites, @lag);
for my $i (1 .. 5) {
    my ($w, $r) = $i % 2 ? ($h0, $h1) : ($h1, $h0);
    my ($st, $s) = mcp_call($w->port, $key, 'sites.create', { name => "Site $i", domain => "s$i.example", currency => 'EUR' });
    ok(ok_result($st, $s), "sites.create $i") or diag($json->encode($s));
    my $id = $s->{structuredContent}{id} // 'none';
    push @sites, $id;
    my ($st2, $g) = mcp_call($w->port, $key, 'sites.get', { site_id => $id });
    ok(ok_result($st2, $g), "read-your-writes: the writing host reads site $i at once") or diag($json->encode($g));
    my $t = took($BOUND, sub { my ($s3, $g3) = mcp_call($r->port, $key, 'sites.get', { site_id => $id }); ok_result($s3, $g3) });
    ok(defined $t, "the other host reads site $i" . sprintf(' after %.3f s', $t // -1));
    push @lag, $t // 99;
}
diag(sprintf('cross-host visibility: %s s', join(' ', map { sprintf '%.3f', $_ } @lag)));
my ($st, $l) = mcp_call($h1->port, $key, 'sites.list', {});
is(scalar @{ $l->{structuredContent}{sites} // [] }, 5, 'sites.list on host 1 lists the five sites');

# ---- a read-only tool call costs no PostgreSQL round trip; a write costs two ----
sub txn_trips {
    my ($h) = @_;
    my (undef, undef, $m) = Alyd::curl($h->metrics_url('/metrics'));
    return Alyd::metric_value($m, 'alyd_pg_roundtrips_total{purpose="transaction"}');
}
my $before = txn_trips($h0);
ok(defined $before, '/metrics has alyd_pg_roundtrips_total{purpose="transaction"}');
for my $i (1 .. 10) {
    mcp_call($h0->port, $key, 'sites.list', {});
    mcp_call($h0->port, $key, 'sites.get', { site_id => $sites[ $i % 5 ] });
    mcp_call($h0->port, $key, 'products.list', { site_id => $sites[0] });
}
is(txn_trips($h0), $before, 'thirty read-only tool calls: no PostgreSQL round trip');
($st, my $u) = mcp_call($h0->port, $key, 'sites.update', { site_id => $sites[0], name => 'Renamed' });
ok(ok_result($st, $u), 'sites.update');
is(txn_trips($h0), $before + 2, 'one write: two round trips (BEGIN + lock + catch-up; batch + COMMIT)');
my (undef, undef, $m) = Alyd::curl($h0->metrics_url('/metrics'));
ok(Alyd::metric_value($m, 'alyd_pg_roundtrips_total{purpose="replication"}') > 0, '/metrics counts the replication polls apart');
is(Alyd::metric_value($m, 'alyd_pg_up'), 1, '/metrics: alyd_pg_up 1');
ok(Alyd::metric_value($m, 'alyd_pg_replica_applied_seq') > 0, '/metrics: the replica\'s applied seq');
ok(defined Alyd::metric_value($m, 'alyd_pg_replica_lag_ms'), '/metrics: the replica\'s lag');

# ---- two hosts racing on the same expected_version: exactly one wins ----
my $site = $sites[1];
sub version_on { my ($h) = @_; my (undef, $g) = mcp_call($h->port, $key, 'sites.get', { site_id => $site }); $g->{structuredContent}{version} // 0 }
my $v = version_on($h0);
for my $round (1 .. 4) {
    ok(defined took($BOUND, sub { version_on($h0) == $v && version_on($h1) == $v }), "race $round: both hosts see version $v");
    my @r = race_calls([ $h0->port, $key, 'sites.update', { site_id => $site, name => "A$round", expected_version => $v } ],
        [ $h1->port, $key, 'sites.update', { site_id => $site, name => "B$round", expected_version => $v } ]);
    my @won = grep { ok_result($_->{st}, $_->{r}) } @r;
    is(scalar @won, 1, "expected_version race $round: exactly one host wins") or diag($json->encode(\@r));
    my @lost = grep { !ok_result($_->{st}, $_->{r}) } @r;
    like(text_of($lost[0]{r} // {}), qr/expected_version: the site is at version @{[$v + 1]}, not $v/,
        "race $round: the loser is told the version moved");
    $v++;
}

# ---- the same idempotency key on two hosts: exactly one product ----
my %p = (site_id => $site, title => 'Mug', price => 1299, sku => 'MUG-1', inventory => 5);
my @r = race_calls([ $h0->port, $key, 'products.create', { %p, idempotency_key => 'race-key-0001' } ],
    [ $h1->port, $key, 'products.create', { %p, idempotency_key => 'race-key-0001' } ]);
ok(ok_result($r[0]{st}, $r[0]{r}) && ok_result($r[1]{st}, $r[1]{r}), 'same idempotency key and body on two hosts: both answered')
  or diag($json->encode(\@r));
is($r[0]{r}{structuredContent}{id}, $r[1]{r}{structuredContent}{id}, 'with the same product (one created it, the other replayed)');
@r = race_calls([ $h0->port, $key, 'products.create', { %p, sku => 'MUG-2', title => 'Mug A', idempotency_key => 'race-key-0002' } ],
    [ $h1->port, $key, 'products.create', { %p, sku => 'MUG-2', title => 'Mug B', idempotency_key => 'race-key-0002' } ]);
is(scalar(grep { ok_result($_->{st}, $_->{r}) } @r), 1, 'same idempotency key, different bodies: exactly one wins') or diag($json->encode(\@r));
like(join(' ', map { text_of($_->{r}) } grep { !ok_result($_->{st}, $_->{r}) } @r), qr/idempotency_key: already used/, 'the other is told the key is used');

# ---- sku uniqueness across hosts ----
@r = race_calls([ $h0->port, $key, 'products.create', { %p, sku => 'MUG-3', idempotency_key => 'race-key-0003' } ],
    [ $h1->port, $key, 'products.create', { %p, sku => 'MUG-3', idempotency_key => 'race-key-0004' } ]);
is(scalar(grep { ok_result($_->{st}, $_->{r}) } @r), 1, 'the same sku from two hosts: exactly one wins') or diag($json->encode(\@r));
like(join(' ', map { text_of($_->{r}) } grep { !ok_result($_->{st}, $_->{r}) } @r), qr/sku: MUG-3 is already used/, 'the other is told the sku is taken');
my $count = took($BOUND, sub {
    my (undef, $pl) = mcp_call($h0->port, $key, 'products.list', { site_id => $site });
    my @mine = grep { ($_->{sku} // '') =~ /^MUG-/ } @{ $pl->{structuredContent}{products} // [] };
    @mine == 3;
});
ok(defined $count, 'products.list: three MUG products in all, on either host');

# ---- a legacy session made on one host works on the other ----
my ($ist, undef, $ihd) = mcp_request($h0, $key, 'initialize',
    { protocolVersion => '2025-06-18', capabilities => {}, clientInfo => { name => 't141', version => '1' } });
my ($sid) = ($ihd // '') =~ /^mcp-session-id:\s*(\S+)/mi;
ok($ist == 200 && defined $sid, 'initialize on host 0 makes a session');
my ($sst, $sr) = mcp_request($h1, $key, 'tools/list', {}, session => $sid, headers => { 'MCP-Protocol-Version' => '2025-06-18' });
ok($sst == 200 && ref $sr->{result}{tools} eq 'ARRAY', 'host 1 serves that session at once (the lookup that missed read through)')
  or diag("status $sst");
my ($bst) = mcp_request($h1, $key, 'tools/list', {}, session => 'mcp_' . ('x' x 32), headers => { 'MCP-Protocol-Version' => '2025-06-18' });
is($bst, 404, 'an unknown session is still 404');
my ($dst) = http_request($h1->port, 'DELETE', '/api/mcp', headers => { Authorization => "Bearer $key", 'Mcp-Session-Id' => $sid });
is($dst, 204, 'host 1 ends it');
ok(defined took($BOUND, sub { (mcp_request($h0, $key, 'tools/list', {}, session => $sid, headers => { 'MCP-Protocol-Version' => '2025-06-18' }))[0] == 404 }),
    'and host 0 then refuses it (404)');

# ---- a revocation is refused everywhere within 1 s ----
$h1->ctl('keys', 'revoke', $kid);
for my $h ($h0, $h1) {
    my $t = took($BOUND, sub { (mcp_call($h->port, $key, 'sites.list', {}))[0] == 401 });
    ok(defined $t, 'the revoked key is refused on host ' . ($h == $h0 ? 0 : 1) . sprintf(' after %.3f s', $t // -1));
}

# ---- the audit trail went through PostgreSQL too ----
like($h1->ctl('audit', '--workspace', $ws), qr/sites\.update/, 'alyctl audit on host 1 lists the updates made on both hosts');

for my $h ($h0, $h1) {
    my $log = $h->error_log_text // '';
    unlike($log, qr/\[error\]/, 'no error in host ' . ($h == $h0 ? 0 : 1) . "'s log") or diag($log);
}
$c->stop;
done_testing;
