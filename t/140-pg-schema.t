# Cluster mode's PostgreSQL schema and the commands around it: the store
# directive's grammar; alyctl init creating the versioned schema, again
# (idempotent), upgrading a version-1 database step by step and refusing a
# newer one; a database without the schema refusing writes with what to run;
# and alyctl migrate copying an LMDB store into PostgreSQL (counts, an empty
# target only unless --force), after which a PostgreSQL host serves the same
# keys and data.
use strict;
use warnings;
use Test::More;
use File::Temp ();
use Alyd;
use Cluster;

Cluster::need_engines(redis => 0);
Alyd::watchdog(300);

my $tmp = File::Temp->newdir;
my $dir = $tmp->dirname;
my $n = 0;

# alyctl on a configuration of @lines (data_dir in a fresh directory unless given): (exit, stdout, stderr).
sub ctl_on {
    my ($lines, @args) = @_;
    my $path = "$dir/c" . ++$n . ".conf";
    my @l = @$lines;
    push @l, "data_dir $dir/data$n" unless grep { /^data_dir / } @l;
    Alyd::spew($path, join("\n", @l) . "\n");
    return Alyd::run_cmd(Alyd::alyctl_bin(), '-c', $path, @args);
}

# ---- the directive ----
for my $case (['store lmdb', 0], ['store postgresql://u@127.0.0.1:5/db', 0], ['store postgres://127.0.0.1/db', 0],
    ['store mysql://x', 1], ['store /var/lib/x', 1], ['store_timeout 50ms', 1], ['store_timeout 2s', 0], ['store_poll 5ms', 1],
    ['store_poll 200ms', 0], ['store_changes_keep 500ms', 1], ['store_changes_keep 1h', 0])
{
    my $path = "$dir/t" . ++$n . ".conf";
    Alyd::spew($path, "$case->[0]\n" . ($> == 0 ? "user root\n" : ''));    # as root, alyd -t refuses a configuration without "user"
    my ($exit, undef, $err) = Alyd::run_cmd(Alyd::alyd_bin(), '-t', '-c', $path);
    is($exit, $case->[1], "alyd -t: \"$case->[0]\" " . ($case->[1] ? 'refused' : 'accepted'));
    like($err, qr/\Q$path\E:1: /, "\"$case->[0]\": the message names the line") if $case->[1];
}
my $p = "$dir/t" . ++$n . ".conf";
Alyd::spew($p, "store mysql://x\n");
like((Alyd::run_cmd(Alyd::alyd_bin(), '-t', '-c', $p))[2], qr/must be "lmdb" or a postgresql:\/\/ URL/, 'the message says what a store may be');

my $pg = start_postgres();
my $url = $pg->create_db('fresh');

# ---- alyctl init creates the schema, and is idempotent ----
my ($exit, $out, $err) = ctl_on(["store $url"], 'init');
is($exit, 0, 'alyctl init on an empty PostgreSQL database') or diag($err);
like($out, qr/PostgreSQL schema 2/, 'init says which PostgreSQL schema');
is($pg->psql('SELECT version FROM schema_version', db => 'fresh'), '2', 'schema_version is 2');
is($pg->psql("SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables WHERE schemaname = 'public'", db => 'fresh'),
    'changes,kv,replica_horizon,schema_version', 'the tables: kv, changes, replica_horizon, schema_version');
($exit, undef, $err) = ctl_on(["store $url"], 'init');
is($exit, 0, 'alyctl init again: nothing to do') or diag($err);
is($pg->psql('SELECT count(*) FROM schema_version', db => 'fresh'), '1', 'still one schema_version row');

# ---- the upgrade path: a version-1 database keeps its rows and gains version 2 ----
my $old = $pg->create_db('old');
$pg->psql('CREATE TABLE schema_version (version integer NOT NULL); INSERT INTO schema_version VALUES (1);'
      . ' CREATE TABLE kv (db smallint NOT NULL, k bytea NOT NULL, v bytea NOT NULL, PRIMARY KEY (db, k));'
      . ' CREATE TABLE changes (seq bigserial PRIMARY KEY, db smallint NOT NULL, k bytea NOT NULL, v bytea, at timestamptz NOT NULL DEFAULT now());'
      . " INSERT INTO kv VALUES (6, 'x', 'y')", db => 'old');
ctl_on(["data_dir $dir/oldlm"], 'init');
my ($e2, undef, $err2) = ctl_on(["store $old", "data_dir $dir/oldlm"], 'workspace', 'create', 'W');
isnt($e2, 0, 'a version-1 database: alyd refuses to write to it');
like($err2, qr/schema is version 1, this alyd needs 2: run alyctl init/, 'and says to run alyctl init');
($exit, undef, $err) = ctl_on(["store $old"], 'init');
is($exit, 0, 'alyctl init upgrades version 1') or diag($err);
is($pg->psql('SELECT version FROM schema_version', db => 'old'), '2', 'to version 2');
is($pg->psql('SELECT upto FROM replica_horizon', db => 'old'), '0', 'with the step-2 table');
is($pg->psql('SELECT count(*) FROM kv', db => 'old'), '1', 'keeping the rows it had');

# ---- a newer schema is refused ----
my $new = $pg->create_db('newer');
$pg->psql('CREATE TABLE schema_version (version integer NOT NULL); INSERT INTO schema_version VALUES (99)', db => 'newer');
($exit, undef, $err) = ctl_on(["store $new"], 'init');
isnt($exit, 0, 'alyctl init refuses a newer schema');
like($err, qr/schema is version 99, newer than this alyd's 2/, 'saying so');

# ---- no schema at all ----
my $bare = $pg->create_db('bare');
($exit, undef, $err) = ctl_on(["store $bare", "data_dir $dir/bare"], 'init');
$pg->psql('DROP TABLE kv, changes, replica_horizon, schema_version', db => 'bare');
($exit, undef, $err) = ctl_on(["store $bare", "data_dir $dir/bare"], 'workspace', 'create', 'W');
isnt($exit, 0, 'a database without the schema: writes are refused');
like($err, qr/the store is unavailable \(PostgreSQL: it has no alyd schema: run alyctl init\)/, 'with what to run');

# ---- unreachable at init ----
my $port = Alyd::free_port();
($exit, undef, $err) = ctl_on(["store postgresql://postgres\@127.0.0.1:$port/x", 'store_timeout 500ms'], 'init');
isnt($exit, 0, 'alyctl init with PostgreSQL unreachable fails');
like($err, qr/the store is unavailable \(PostgreSQL: .*(refused|connect)/i, 'naming PostgreSQL');

# ---- migrate: an LMDB store into PostgreSQL ----
my $lm = Alyd->start(workers => 1);
my $ws = $lm->ctl('workspace', 'create', 'Moving Shop');
$lm->ctl('demo', 'seed', '--workspace', $ws, '--seed', '5', '--sites', '2', '--products', '10', '--orders', '20', '--days', '10');
my $key = $lm->ctl('keys', 'create', '--workspace', $ws, '--scopes', 'read:sites,read:content');
my ($st0, $before) = mcp_call($lm->port, $key, 'sites.list', {});
is($st0, 200, 'the LMDB host serves the key');
my $target = $pg->create_db('target');
($exit, undef, $err) = Alyd::run_cmd(Alyd::alyctl_bin(), '-c', $lm->conf, 'migrate');
isnt($exit, 0, 'migrate without --to is refused');
like($err, qr/usage: migrate --to/, 'with its usage');
($exit, undef, $err) = Alyd::run_cmd(Alyd::alyctl_bin(), '-c', $lm->conf, 'migrate', '--to', 'mysql://x');
like($err, qr/not a postgresql:\/\/ URL/, 'migrate --to must be a postgresql:// URL');
($exit, $out, $err) = Alyd::run_cmd(Alyd::alyctl_bin(), '-c', $lm->conf, '--json', 'migrate', '--to', $target);
is($exit, 0, 'alyctl migrate --to an empty database') or diag($err);
my $rep = Alyd::json_decode($out) // {};
my $rows = $pg->psql('SELECT count(*) FROM kv', db => 'target');
is($rep->{records}, $rows, "migrate reports the records it copied ($rows)");
is($rep->{databases}{workspaces}, 1, 'one workspace');
is($rep->{databases}{keys}, 1, 'one key');
is($pg->psql('SELECT count(*) FROM kv WHERE db = 6', db => 'target'), $rep->{databases}{data}, 'the workspace data, as counted');
is($pg->psql("SELECT count(*) FROM kv WHERE db = 0 AND k = 'pg/applied'::bytea", db => 'target'), '0', 'no replica bookkeeping copied');
ok($pg->psql('SELECT upto FROM replica_horizon', db => 'target') > 0, 'the horizon moved: every replica copies the table once');
($exit, undef, $err) = Alyd::run_cmd(Alyd::alyctl_bin(), '-c', $lm->conf, 'migrate', '--to', $target);
isnt($exit, 0, 'migrate into a database that holds records is refused');
like($err, qr/already holds $rows records.*--force/, 'naming the count and --force');
$lm->ctl('workspace', 'create', 'Second');
# A record the source never had, already in the target: --force replaces the target's records, it does not merge.
$pg->psql("INSERT INTO kv (db, k, v) VALUES (6, 'zz/stray'::bytea, '\\x00'::bytea)", db => 'target');
is($pg->psql("SELECT count(*) FROM kv WHERE k = 'zz/stray'::bytea", db => 'target'), '1', 'a stray record put into the target');
($exit, $out, $err) = Alyd::run_cmd(Alyd::alyctl_bin(), '-c', $lm->conf, 'migrate', '--to', $target, '--force');
is($exit, 0, 'migrate --force replaces them') or diag($err);
like($out, qr/copied \d+ records into PostgreSQL: meta \d+, workspaces 2,/, 'and reports the counts per database');
is($pg->psql('SELECT count(*) FROM kv WHERE db = 1', db => 'target'), '2', 'two workspaces now');
is($pg->psql("SELECT count(*) FROM kv WHERE k = 'zz/stray'::bytea", db => 'target'), '0', 'and the stray record is gone');

# A PostgreSQL host with an empty data_dir and the same pepper serves what was migrated.
my $pgh = Alyd->start(workers => 1, extra => ["store $target", 'key_pepper_file ' . $lm->data_dir . '/pepper']);
my ($st1, $after) = mcp_call($pgh->port, $key, 'sites.list', {});
is($st1, 200, 'the PostgreSQL host accepts the key minted before the migration');
is_deeply($after->{structuredContent}, $before->{structuredContent}, 'and lists the same sites');
like($pgh->ctl('workspace', 'list'), qr/Moving Shop.*\n.*Second|Second.*\n.*Moving Shop/, 'alyctl on it lists both workspaces');
like($pgh->error_log_text // '', qr/copied \d+ records whole/, 'its replica copied the table whole (behind the horizon)');
$pgh->stop;
$lm->stop;
done_testing;
