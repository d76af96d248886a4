# The cluster harness itself (t/lib/Cluster.pm), so the cross-host tests stand
# on something checked: a throw-away PostgreSQL that runs unprivileged, keeps
# committed data across a stop, refuses connections while stopped and comes back
# on the same port; a redis-server likewise; N alyd hosts sharing one pepper file
# with their own data directories; the round robin; the load generator; and
# nothing of it outliving a test that dies half-way.
use strict;
use warnings;
use Test::More;
use Alyd;
use Cluster;

Cluster::need_engines();
Alyd::watchdog(240);

sub proc_uid {
    my ($pid) = @_;
    my ($uid) = (slurp("/proc/$pid/status") // '') =~ /^Uid:\s+(\d+)/m;
    return $uid;
}

# ---- PostgreSQL ----
my $pg = start_postgres();
like($pg->url, qr{^postgresql://postgres\@127\.0\.0\.1:\d+/alyd$}, 'postgres: url names the loopback port and the database');
is($pg->psql('SELECT 1'), '1', 'postgres: answers SQL');
if ($> == 0) {
    isnt(proc_uid($pg->pid), 0, 'postgres: the postmaster does not run as root');
} else {
    is(proc_uid($pg->pid), $>, 'postgres: runs as the test user');
}
$pg->psql('CREATE TABLE t(k int primary key, v text); INSERT INTO t VALUES (1, \'one\')');
my $port = $pg->port;
ok($pg->stop, 'postgres: fast stop finishes');
ok(!$pg->running, 'postgres: not running after stop');
ok(!eval { $pg->psql('SELECT 1'); 1 }, 'postgres: refuses connections while stopped');
ok(!IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp'), 'postgres: the TCP port is closed while stopped');
$pg->start;
is($pg->port, $port, 'postgres: restarted on the same port');
is($pg->psql('SELECT v FROM t WHERE k = 1'), 'one', 'postgres: committed data survives a stop');
my $pid1 = $pg->pid;
my @backends = Alyd::children_of($pid1);
ok(@backends >= 3, 'postgres: has its background processes (' . scalar(@backends) . ')');
$pg->kill;
ok(!Alyd::proc_alive($pid1), 'postgres: kill leaves no postmaster');
ok(!grep({ Alyd::proc_alive($_) } @backends), 'postgres: kill leaves none of its processes');
$pg->start;
is($pg->psql('SELECT count(*) FROM t'), '1', 'postgres: starts again after a SIGKILL (crash recovery)');
my $other = $pg->create_db('second');
like($other, qr{/second$}, 'postgres: create_db returns its URL');
is($pg->psql('SELECT count(*) FROM pg_tables WHERE tablename = \'t\'', db => 'second'), '0', 'postgres: a new database is empty');
ok(!eval { $pg->psql('SELECT nonsense_column FROM t'); 1 }, 'postgres: psql dies on an SQL error');

# ---- Redis ----
my $r = start_redis();
like($r->url, qr{^redis://127\.0\.0\.1:\d+/0$}, 'redis: url names the loopback port and db 0');
is($r->cmd('PING'), 'PONG', 'redis: answers PING');
is($r->cmd('SET', 'aly:{x}:k', "v\r\n2"), 'OK', 'redis: SET');
is($r->cmd('GET', 'aly:{x}:k'), "v\r\n2", 'redis: GET returns a binary-safe bulk string');
is($r->cmd('GET', 'missing'), undef, 'redis: nil is undef');
is_deeply($r->cmd('KEYS', 'aly:*'), ['aly:{x}:k'], 'redis: arrays');
ok(!eval { $r->cmd('NOSUCHCOMMAND'); 1 }, 'redis: an error reply dies');
my $rport = $r->port;
ok($r->stop, 'redis: stops');
ok(!eval { $r->cmd('PING'); 1 }, 'redis: refuses connections while stopped');
$r->start;
is($r->port, $rport, 'redis: restarted on the same port');
is($r->cmd('GET', 'aly:{x}:k'), undef, 'redis: no persistence: a restart empties it');
my $rpid = $r->pid;
$r->kill;
ok(!Alyd::proc_alive($rpid), 'redis: kill leaves no process');
$r->start;
is($r->cmd('PING'), 'PONG', 'redis: starts again after a SIGKILL');

# ---- hosts ----
my $c = Cluster->hosts(3, pg => $pg, redis => $r, db => 'hosts', workers => 1);
is($c->size, 3, 'hosts: three hosts');
like($c->store_url, qr{/hosts$}, 'hosts: their own database');
my %ports = map { $_ => 1 } $c->ports;
is(scalar keys %ports, 3, 'hosts: each on its own port');
my %dirs = map { $_->data_dir => 1 } $c->all;
is(scalar keys %dirs, 3, 'hosts: each with its own data_dir (local replica)');
ok(-s $c->pepper == 32, 'hosts: one pepper file, created by the first host\'s init');
for my $h ($c->all) {
    my $conf = slurp($h->conf);
    ok($conf =~ /^key_pepper_file \Q${\ $c->pepper}\E$/m && $conf =~ /^store \Q${\ $c->store_url}\E$/m
          && $conf =~ /^volatile \Q${\ $c->volatile_url}\E$/m, 'hosts: a host names the shared pepper, store and volatile');
    my ($st) = http_request($h->port, 'GET', '/healthz');
    is($st, 200, 'hosts: each answers /healthz');
}
{
    # The engines are really shared: a workspace made through host 0 is listed by host 2's alyctl.
    my $w = $c->host(0)->ctl('workspace', 'create', 'Shared');
    ok(poll_until(2, sub { $c->host(2)->ctl('workspace', 'list') =~ /\Q$w\E/ }), 'hosts: one store behind them');
    my @cells = @{ $r->cmd('KEYS', 'aly:*') // [] };
    my $k = $c->host(1)->ctl('keys', 'create', '--workspace', $w, '--scopes', 'read:sites');
    poll_until(2, sub { my ($st) = mcp_call($c->host(1), $k, 'sites.list', {}); $st == 200 });
    ok(@{ $r->cmd('KEYS', 'aly:*') // [] } > @cells, 'hosts: one Redis behind them (a request left its rate cell there)');
}
my @rr = map { $c->next->port } 1 .. 6;
is_deeply(\@rr, [($c->ports) x 2], 'hosts: next is round robin');

# ---- the client ----
{
    my ($st, $r1, $hd) = mcp_call($c->host(0), 'aly_live_not_a_real_key', 'sites.list', {});
    is($st, 401, 'mcp_call: an unknown key gets 401');
    like($hd, qr/^www-authenticate:/mi, 'mcp_call: returns the headers');
    my ($st2, undef, undef, $err) = http_request(Alyd::free_port(), 'GET', '/healthz', timeout => 1);
    ok($st2 == 0 && $err =~ /connect/, 'http_request: a closed port is status 0 with the reason');
}

# ---- load ----
{
    my $dir = File::Temp->newdir;
    my $l = start_load(ports => [$c->ports], clients => 3, secs => 1, file => "$dir/load",
        req => sub { my ($p) = @_; my ($st, undef, undef, $e) = http_request($p, 'GET', '/healthz'); ($st, $e) });
    my @res = finish_load($l);
    ok(@res > 10, 'load: requests were made (' . scalar(@res) . ')');
    is(scalar(grep { $_->{status} != 200 } @res), 0, 'load: every one answered 200');
    my %seen = map { $_->{port} => 1 } @res;
    is(scalar keys %seen, 3, 'load: spread over every host');
    my %cl = map { $_->{client} => 1 } @res;
    is(scalar keys %cl, 3, 'load: from every client');
}

# ---- a test that dies leaves nothing behind ----
{
    my $dir = File::Temp->newdir;
    my $script = <<'EOS';
use strict; use warnings; use Alyd; use Cluster;
my $c = Cluster->hosts(1, workers => 1, db => 'dying');
print join(' ', $c->pg->pid, $c->redis->pid, $c->host(0)->master_pid, $c->host(0)->worker_pids), "\n";
die "dying on purpose\n";
EOS
    Alyd::spew("$dir/die.pl", $script);
    my @inc = map { ('-I', $_) } grep { !ref } @INC;
    my ($exit, $out, $err) = run_cmd($^X, @inc, "$dir/die.pl");
    isnt($exit, 0, 'a dying test exits non-zero');
    my @pids = split ' ', $out;
    ok(@pids >= 4, 'it had started postgres, redis, alyd and a worker') or diag($err);
    my $gone = poll_until(10, sub { !grep { Alyd::proc_alive($_) } @pids });
    ok($gone, 'nothing it started outlives it') or diag("alive: @{[grep { Alyd::proc_alive($_) } @pids]}");
}

# ---- nor does one killed outright (no END runs: the engines' watchers act) ----
{
    my $dir = File::Temp->newdir;
    Alyd::spew("$dir/kill.pl", <<'EOS');
use strict; use warnings; use Alyd; use Cluster;
my $pg = Cluster::start_postgres(); my $r = Cluster::start_redis();
$| = 1;
print join(' ', $pg->dir, $r->dir, $pg->pid, Alyd::children_of($pg->pid), $r->pid), "\n";
kill 'KILL', $$;
EOS
    my @inc = map { ('-I', $_) } grep { !ref } @INC;
    my ($exit, $out, $err) = run_cmd($^X, @inc, "$dir/kill.pl");
    is($exit, 128 + 9, 'a test killed by SIGKILL');
    my ($pgdir, $rdir, @pids) = split ' ', $out;
    ok(@pids >= 4 && ($pgdir // '') =~ /alyd-pg-/ && ($rdir // '') =~ /alyd-redis-/, 'it had started postgres (with its processes) and redis') or diag($err);
    ok(poll_until(10, sub { !grep { Alyd::proc_alive($_) } @pids }), 'its engines do not outlive it')
      or diag("alive: @{[grep { Alyd::proc_alive($_) } @pids]}");
    ok(poll_until(10, sub { !-e $pgdir && !-e $rdir }), 'nor do their directories') unless $ENV{ALY_KEEP_TMP};
}

$c->stop;
done_testing;
