# A host's connections to PostgreSQL and Redis that went stale while idle
# (each server restarted, and nothing of the host's own asked meanwhile:
# store_poll 60s) cost the next request nothing: its first statement and its
# first Redis command find the dead connection, and each is tried once more on
# a fresh one.  The request is served, its write is in PostgreSQL, and the
# host counts the PostgreSQL failure once.
use strict;
use warnings;
use Test::More;
use JSON::PP ();
use Alyd;
use Cluster;

Cluster::need_engines(redis => 1);
Alyd::watchdog(180);

my $c = Cluster->hosts(1, workers => 1, extra => ['store_poll 60s']);
my $h = $c->host(0);
my $ws = $h->ctl('workspace', 'create', 'Stale');
my $key = $h->ctl('keys', 'create', '--workspace', $ws, '--scopes', 'read:sites,write:sites', '--rate-limit', '1000/second burst=1000');

sub ok_result { my ($st, $r) = @_; return $st == 200 && ref $r eq 'HASH' && !$r->{isError} && $r->{structuredContent} }
sub create { my ($n) = @_; return mcp_call($h->port, $key, 'sites.create', { name => $n, domain => "$n.example", currency => 'EUR' }) }
sub pg_failures {
    my (undef, undef, $m) = Alyd::curl($h->metrics_url('/metrics'));
    return Alyd::metric_value($m // '', 'alyd_pg_failures_total') // -1;
}

my ($st, $r) = create('first');
ok(ok_result($st, $r), 'a write while both engines are up (the worker now holds a connection to each)');
my $pg0 = pg_failures();
is($pg0, 0, 'no PostgreSQL failure counted yet');

$c->pg->restart;
$c->redis->restart;
($st, $r) = create('after-restarts');
ok(ok_result($st, $r), 'the first write after both engines restarted is served') or diag(JSON::PP->new->encode($r // {}));
my $id = ref $r eq 'HASH' ? $r->{structuredContent}{id} // 'none' : 'none';
ok($c->pg->psql("SELECT count(*) FROM kv WHERE position(convert_to('$id', 'UTF8') in v) > 0") > 0, 'and its record is in PostgreSQL');
my $pg1 = pg_failures();
is($pg1 - $pg0, 1, 'the stale PostgreSQL connection was found once (and the statement tried again on a fresh one)');
($st, $r) = create('again');
ok(ok_result($st, $r), 'and the next write is served as usual');
my $pg2 = pg_failures();
is($pg2, $pg1, 'with no further failure');
$c->stop;
done_testing;
