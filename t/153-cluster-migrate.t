# Moving a single-host installation to cluster mode: alyctl migrate --to
# copies an LMDB store (demo data, keys -- one revoked --, versions, audit)
# into an empty PostgreSQL database, refuses a non-empty one unless --force,
# refuses what is not a reachable postgresql:// URL; then three hosts on that
# database, with the installation's pepper file, answer exactly what the
# single host answered, honour its keys and its revocation, continue its
# versions, and share what they write from then on.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use Alyd;
use Cluster;

Cluster::need_engines();
Alyd::watchdog(300);
my $BOUND = 1.0 * $Alyd::SCALE;
my $SCOPES = 'read:sites,write:sites,read:content,write:content,read:orders,write:orders,read:analytics';
my @t = gmtime(time);
my $today = sprintf('%04d-%02d-%02d', $t[5] + 1900, $t[4] + 1, $t[3]);
my @f = gmtime(time - 60 * 86400);
my $from = sprintf('%04d-%02d-%02d', $f[5] + 1900, $f[4] + 1, $f[3]);

# ---- the single host, on LMDB ----
my $one = Alyd->start(workers => 1, extra => ['rate_limit 100000/second burst=100000']);
my $ws = $one->ctl('workspace', 'create', 'Before');
$one->ctl('demo', 'seed', '--workspace', $ws, '--seed', '11', '--sites', '2', '--products', '30', '--orders', '40', '--days', '20');
my $key = $one->ctl('keys', 'create', '--workspace', $ws, '--scopes', $SCOPES);
my $gone = Alyd::json_decode($one->ctl('--json', 'keys', 'create', '--workspace', $ws, '--scopes', 'read:sites')) // {};
$one->ctl('keys', 'revoke', $gone->{id});

sub result {
    my ($h, $k, $tool, $args) = @_;
    my ($st, $r) = mcp_call($h, $k, $tool, $args // {});
    return $st == 200 && !$r->{isError} ? $r->{structuredContent} : { status => $st, error => $r };
}

my $sites = result($one, $key, 'sites.list');
my $site = $sites->{sites}[0]{id};
my $prod = result($one, $key, 'products.list', { site_id => $site, limit => 100 })->{products}[0];
my $upd = result($one, $key, 'products.update', { site_id => $site, product_id => $prod->{id}, title => 'Renamed before', expected_version => $prod->{version} });
is($upd->{version}, $prod->{version} + 1, 'a write on the single host (audited, version bumped)');
my %before = (
    sites    => result($one, $key, 'sites.list'),
    products => result($one, $key, 'products.list', { site_id => $site, limit => 100 }),
    orders   => result($one, $key, 'orders.list', { site_id => $site, limit => 100 }),
    summary  => result($one, $key, 'analytics.summary', { site_id => $site, from => $from, to => $today }),
);
is_deeply([grep { exists $before{$_}{status} } sort keys %before], [], 'the single host answered all four');
my $audit_before = Alyd::json_decode($one->ctl('--json', 'audit', '--workspace', $ws));
my $keys_before = Alyd::json_decode($one->ctl('--json', 'keys', 'list', '--workspace', $ws));
ok(ref $audit_before eq 'ARRAY' && @$audit_before >= 1, 'the single host has an audit trail');
ok($one->stop, 'the single host stops');

# ---- migrate ----
my $pg = start_postgres();
my $url = $pg->create_db('migrated');
my @ctl = (alyctl_bin(), '-c', $one->conf);
{
    my ($exit, $out, $err) = run_cmd(@ctl, '--json', 'migrate', '--to', $url);
    is($exit, 0, 'migrate into an empty database succeeds') or diag($err);
    my $j = Alyd::json_decode($out) // {};
    ok(($j->{records} // 0) > 100, "it reports what it copied ($j->{records} records)");
    my $rows = $pg->psql('SELECT count(*) FROM kv', db => 'migrated');
    is($rows, $j->{records}, 'as many rows in PostgreSQL as it reported');

    ($exit, $out, $err) = run_cmd(@ctl, 'migrate', '--to', $url);
    isnt($exit, 0, 'migrate into a non-empty database is refused');
    like($err, qr/--force|not empty|non-empty/i, '... saying why and how to insist');
    is($pg->psql('SELECT count(*) FROM kv', db => 'migrated'), $rows, '... and changes nothing');
    ($exit, $out, $err) = run_cmd(@ctl, '--json', 'migrate', '--to', $url, '--force');
    is($exit, 0, 'migrate --force over it succeeds') or diag($err);
    is($pg->psql('SELECT count(*) FROM kv', db => 'migrated'), $rows, '... leaving the same rows');

    ($exit, $out, $err) = run_cmd(@ctl, 'migrate', '--to', 'http://127.0.0.1/x');
    ok($exit != 0 && $err =~ /postgresql/, 'a URL that is not postgresql:// is refused');
    my $dead = 'postgresql://postgres@127.0.0.1:' . Alyd::free_port() . '/x';
    ($exit, $out, $err) = run_cmd(@ctl, 'migrate', '--to', $dead);
    ok($exit != 0 && length $err, 'an unreachable PostgreSQL fails with a message') or diag($err);
    ($exit) = run_cmd(@ctl, 'migrate');
    isnt($exit, 0, 'migrate without --to is refused');
}

# ---- three hosts on the migrated database ----
my $c = Cluster->hosts(3, pg => $pg, store_url => $url, pepper_from => $one->data_dir . '/pepper', workers => 1);
my @H = $c->all;
for my $i (0 .. 2) {
    my $h = $H[$i];
    my %now = (
        sites    => result($h, $key, 'sites.list'),
        products => result($h, $key, 'products.list', { site_id => $site, limit => 100 }),
        orders   => result($h, $key, 'orders.list', { site_id => $site, limit => 100 }),
        summary  => result($h, $key, 'analytics.summary', { site_id => $site, from => $from, to => $today }),
    );
    # Cursors are sealed with a key derived from the pepper: the same pepper, the same cursors.
    is_deeply(\%now, \%before, "host $i answers sites, products, orders and analytics exactly as the single host did");
    my ($st) = mcp_call($h, $gone->{key}, 'sites.list', {});
    is($st, 401, "host $i refuses the key revoked before the migration");
}
is_deeply(Alyd::json_decode($H[2]->ctl('--json', 'audit', '--workspace', $ws)), $audit_before, 'alyctl audit on a cluster host: the same trail');
is_deeply(Alyd::json_decode($H[1]->ctl('--json', 'keys', 'list', '--workspace', $ws)), $keys_before, 'alyctl keys list: the same keys');

# Versions continue; what one host writes now, the others see.
my $again = result($H[1], $key, 'products.update', { site_id => $site, product_id => $prod->{id}, title => 'Renamed after',
    expected_version => $upd->{version} });
is($again->{version}, $upd->{version} + 1, 'expected_version carries over: host 1 updates from the migrated version');
my $t0 = time;
my $seen = poll_until(2 * $BOUND, sub { (result($H[0], $key, 'products.get', { site_id => $site, product_id => $prod->{id} })->{title} // '') eq 'Renamed after' });
ok($seen && time - $t0 <= $BOUND, "host 0 sees it within $BOUND s");
my $k2 = $H[2]->ctl('keys', 'create', '--workspace', $ws, '--scopes', 'read:sites');
ok(poll_until(2 * $BOUND, sub { my ($s) = mcp_call($H[0], $k2, 'sites.list', {}); $s == 200 }), 'a key minted on host 2 after the migration works on host 0');

$c->stop;
done_testing;
