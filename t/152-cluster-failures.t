# Three alyd hosts sharing one PostgreSQL and one Redis, under a steady mix of
# reads and writes spread round robin, while things break:
#  - a host is killed (SIGKILL to master and workers): only requests in flight
#    on it fail, and only as broken connections; the other hosts answer every
#    request; every write any host acknowledged is there afterwards, and a
#    replacement host with an empty data_dir catches up;
#  - PostgreSQL is stopped, then started (and later killed outright): every
#    answer is a 200 or a 503 with Retry-After, reads keep being served from
#    the replicas, /healthz names postgresql, a refused write left nothing
#    behind, and every host recovers without a restart;
#  - Redis is stopped and started: volatile_failure closed answers 503 with
#    Retry-After and /healthz names redis, then recovers without a restart;
#    volatile_failure open keeps serving and says so in the error log.
use strict;
use warnings;
use Test::More;
use File::Temp;
use Time::HiRes qw(time sleep);
use Alyd;
use Cluster;

Cluster::need_engines();
Alyd::watchdog(600);

my $S = $Alyd::SCALE;
my $BOUND = 1.0 * $S;
my $RECOVER = 10 * $S;    # reconnect backoff included

my $c = Cluster->hosts(3, workers => 2);
my @H = $c->all;
my $ws = $H[0]->ctl('workspace', 'create', 'Failures');
$H[0]->ctl('demo', 'seed', '--workspace', $ws, '--seed', '7', '--sites', '1', '--products', '3', '--orders', '3', '--days', '2');
my $key = $H[0]->ctl('keys', 'create', '--workspace', $ws, '--scopes', 'read:sites,read:content,write:content');
my ($st0, $r0) = mcp_call($H[0], $key, 'sites.list', {});
my $site = $r0->{structuredContent}{sites}[0]{id};
ok($st0 == 200 && $site, 'a site to write into');
poll_until(2 * $BOUND, sub { !grep { my ($s) = mcp_call($_, $key, 'sites.list', {}); $s != 200 } @H });

# One request of the load: even $i reads, odd $i creates a product with a sku
# unique to (tag, client, i).  The note says what happened: "r" (read ok),
# "w:<id>:<sku>" (write acknowledged), or "x:<sku>:<why>" (write refused).
sub mixed {
    my ($tag) = @_;
    return sub {
        my ($port, $cl, $i) = @_;
        if ($i % 2 == 0) {
            my ($st, $r, $hd, $err) = mcp_call($port, $key, 'sites.list', {}, timeout => 5);
            return ($st, $st == 200 && !$r->{isError} ? 'r' : 'rx:' . ($err // retry_note($hd)));
        }
        my $sku = "$tag-$cl-$i";
        my ($st, $r, $hd, $err) = mcp_call($port, $key, 'products.create', { site_id => $site, title => $sku, price => 1, sku => $sku },
            timeout => 5);
        return ($st, "w:$r->{structuredContent}{id}:$sku") if $st == 200 && !$r->{isError} && $r->{structuredContent};
        my $why = $err // ($st != 200 ? retry_note($hd) : ($r->{content}[0]{text} // '') =~ /the store is unavailable/ ? 'unavailable' : 'isError');
        return ($st, "x:$sku:$why");
    };
}

sub retry_note { my ($hd) = @_; my $ra = header_value($hd // '', 'Retry-After'); return defined $ra ? "retry-after=$ra" : 'no-retry-after' }

# Every product of the site, by sku, through host $h.
sub skus_on {
    my ($h) = @_;
    my (%sku, $cursor);
    for (1 .. 200) {
        my ($st, $r) = mcp_call($h, $key, 'products.list', { site_id => $site, limit => 100, ($cursor ? (cursor => $cursor) : ()) });
        return undef unless $st == 200 && $r->{structuredContent};
        $sku{ $_->{sku} } = $_->{id} for @{ $r->{structuredContent}{products} };
        $cursor = $r->{structuredContent}{next_cursor} or last;
    }
    return \%sku;
}

sub healthz { my ($h) = @_; my ($st, undef, $body) = http_request($h->port, 'GET', '/healthz', timeout => 3); return ($st, $body) }

# ---- a host killed under load ----
{
    my $dir = File::Temp->newdir;
    my $victim = $H[1];
    my $load = start_load(ports => [$c->ports], clients => 4, secs => 5 * $S, file => "$dir/kill", req => mixed('K'));
    sleep 2 * $S;
    my $t_kill = time;
    kill 'KILL', -$victim->master_pid;    # its process group: the master and every worker at once
    my @res = finish_load($load);
    $victim->kill_all;
    my $vp = $victim->port;
    my @others = grep { $_->{port} != $vp } @res;
    my @mine = grep { $_->{port} == $vp } @res;
    ok(@others > 20 && @mine > 5, sprintf('load reached the survivors (%d) and the victim (%d)', scalar @others, scalar @mine));
    is_deeply([map { "$_->{port} $_->{status} $_->{note}" } grep { $_->{status} != 200 || $_->{note} =~ /^(x|rx):/ } @others], [],
        'the surviving hosts answered every request');
    is_deeply([map { "$_->{status} $_->{note}" } grep { $_->{end} < $t_kill && ($_->{status} != 200 || $_->{note} =~ /^(x|rx):/) } @mine],
        [], 'the victim answered every request that finished before the kill');
    my @failed = grep { $_->{status} != 200 || $_->{note} =~ /^(x|rx):/ } @mine;
    is_deeply([map { "$_->{status} $_->{note}" } grep { $_->{status} != 0 } @failed], [],
        'its failures are broken connections, never a wrong answer');
    my @inflight = grep { $_->{start} <= $t_kill && $_->{end} >= $t_kill } @mine;
    my @failed_inflight = grep { $_->{start} <= $t_kill } @failed;
    ok(@failed_inflight <= @inflight && @failed_inflight <= 4, sprintf('of the requests started before the kill only those in flight failed (%d, at most one per client)', scalar @failed_inflight));
    ok(!grep({ $_->{start} > $t_kill + 0.5 * $S && $_->{status} != 0 } @mine), 'after the kill the victim refuses connections (a balancer takes it out)');

    my %acked = map { (split /:/, $_->{note})[2] => (split /:/, $_->{note})[1] } grep { $_->{note} =~ /^w:/ } @res;
    ok(keys(%acked) > 10, 'writes were acknowledged (' . scalar(keys %acked) . ')');
    for my $h (@H[0, 2]) {
        my $ok = poll_until(2 * $BOUND, sub { my $s = skus_on($h); $s && !grep { ($s->{$_} // '') ne $acked{$_} } keys %acked });
        ok($ok, 'every acknowledged write, the victim\'s included, is on host ' . $h->port);
    }
    my $fresh = $c->replace_host(1);
    @H = $c->all;
    my $ok = poll_until($RECOVER, sub { my $s = skus_on($fresh); $s && !grep { ($s->{$_} // '') ne $acked{$_} } keys %acked });
    ok($ok, 'a replacement host with an empty data_dir serves the key and every acknowledged write');
}

# ---- PostgreSQL stopped (fast), then started; later killed, then started ----
for my $how ('stop', 'kill') {
    my $dir = File::Temp->newdir;
    my $load = start_load(ports => [$c->ports], clients => 3, secs => 9 * $S, file => "$dir/pg", req => mixed("P$how"), pause => 0.01);
    sleep 2 * $S;
    my $t_down = time;
    $how eq 'stop' ? $c->pg->stop : $c->pg->kill;
    my @unhealthy = map {
        my $h = $_;
        my $body = '';
        poll_until(3 * $BOUND, sub { my ($st, $b) = healthz($h); $body = $b; $st == 503 });
        $body;
    } @H;
    is(scalar(grep { /postgresql/i } @unhealthy), 3, "PostgreSQL down ($how): /healthz on every host is 503 and names postgresql")
      or diag(join "\n", @unhealthy);
    # Reads are served from the replicas all through the outage.
    my @reads = map { my ($st) = mcp_call($_, $key, 'sites.list', {}); $st } @H;
    is_deeply(\@reads, [200, 200, 200], "PostgreSQL down ($how): reads keep working on every host");
    my ($wst, $wr, $whd) = mcp_call($H[2], $key, 'products.create', { site_id => $site, title => 'down', price => 1, sku => "DOWN-$how" });
    like($wr->{message} // '', qr/the store is unavailable/, "PostgreSQL down ($how): a write is refused: the store is unavailable");
    ok($wst == 503 && (header_value($whd, 'Retry-After') // '') =~ /^[1-9]\d*$/, "PostgreSQL down ($how): a write is 503 with Retry-After")
      or diag("status $wst");
    sleep 1 * $S;
    my $t_up = time;
    $c->pg->start;
    my @back = map {
        my $h = $_;
        my $t;
        poll_until($RECOVER, sub {
            my ($st) = healthz($h);
            my ($w) = mcp_call($h, $key, 'products.create', { site_id => $site, title => 'up', price => 1, sku => "UP-$how-" . $h->port });
            return 0 unless $st == 200 && $w == 200;
            $t = time - $t_up;
        }, 0.1);
        $t;
    } @H;
    is(scalar(grep { defined } @back), 3, "PostgreSQL back ($how): every host writes again without a restart ("
        . join(', ', map { defined $_ ? sprintf('%.1f s', $_) : 'never' } @back) . ')');
    my @res = finish_load($load);
    is_deeply([map { "$_->{port} $_->{status} $_->{note}" } grep { $_->{status} != 200 && $_->{status} != 503 } @res], [],
        "PostgreSQL $how under load: every answer is a 200 or a 503");
    is_deeply([map { "$_->{port} $_->{note}" } grep { $_->{status} == 503 && $_->{note} !~ /retry-after=[1-9]/ } @res], [],
        'every 503 carries Retry-After');
    is(scalar(grep { $_->{note} =~ /^rx:/ } @res), 0, 'no read failed during the outage');
    my @x = grep { $_->{note} =~ /^x:/ } @res;
    ok(@x > 0, 'writes during the outage were refused (' . scalar(@x) . ')');
    is_deeply([map { "$_->{port} $_->{status} $_->{note}" } grep { $_->{note} !~ /:(unavailable|retry-after=[1-9]\d*)$/ } @x], [],
        'each refused write said the store is unavailable (or 503 with Retry-After)');
    is(scalar(grep { $_->{status} != 503 } @x), 0, 'each refused write was a 503');
    my %acked = map { (split /:/, $_->{note})[2] => 1 } grep { $_->{note} =~ /^w:/ } @res;
    # The last writes went through any host: give them the bound to reach host 0.
    my $after;
    poll_until(2 * $BOUND, sub { $after = skus_on($H[0]); $after && !grep { !$after->{$_} } keys %acked });
    my @refused = map { (split /:/, $_->{note})[1] } grep { $_->{note} =~ /^x:/ } @res;
    is_deeply([grep { !$after->{$_} } sort keys %acked], [], "PostgreSQL $how: every acknowledged write is there");
    is_deeply([grep { $after->{$_} } @refused, "DOWN-$how"], [], "PostgreSQL $how: no refused write left anything behind");
    # Replication resumed: a write through host 0 reaches host 2 within the bound.
    my ($ust, $ur) = mcp_call($H[0], $key, 'products.create', { site_id => $site, title => 'after', price => 1, sku => "AFTER-$how" });
    my $t0 = time;
    my $seen = poll_until(2 * $BOUND, sub { my ($s, $r) = mcp_call($H[2], $key, 'products.get', { site_id => $site, product_id => $ur->{structuredContent}{id} // 'x' }); $s == 200 && !$r->{isError} });
    ok($ust == 200 && $seen && time - $t0 <= $BOUND, "PostgreSQL $how: replication resumed (a write reaches another host within $BOUND s)");
}

# ---- Redis stopped, then started: volatile_failure closed (the default) ----
{
    my $dir = File::Temp->newdir;
    my $load = start_load(ports => [$c->ports], clients => 3, secs => 7 * $S, file => "$dir/redis", pause => 0.01,
        req => sub { my ($port) = @_; my ($st, undef, $hd, $err) = mcp_call($port, $key, 'sites.list', {}); ($st, $err // retry_note($hd)) });
    sleep 1.5 * $S;
    $c->redis->stop;
    my @unhealthy = map {
        my $h = $_;
        my $body = '';
        poll_until(3 * $BOUND, sub { my ($st, $b) = healthz($h); $body = $b; $st == 503 });
        $body;
    } @H;
    is(scalar(grep { /redis/i } @unhealthy), 3, 'Redis down, closed: /healthz on every host is 503 and names redis') or diag(join "\n", @unhealthy);
    my @calls = map { my ($st, undef, $hd) = mcp_call($_, $key, 'sites.list', {}); [$st, header_value($hd, 'Retry-After')] } @H;
    is(scalar(grep { $_->[0] == 503 && ($_->[1] // '') =~ /^[1-9]\d*$/ } @calls), 3, 'Redis down, closed: requests get 503 with Retry-After on every host');
    sleep 1 * $S;
    my $t_up = time;
    $c->redis->start;
    my @back = map {
        my $h = $_;
        my $t;
        poll_until($RECOVER, sub { my ($st) = healthz($h); my ($m) = mcp_call($h, $key, 'sites.list', {}); return 0 unless $st == 200 && $m == 200; $t = time - $t_up }, 0.1);
        $t;
    } @H;
    is(scalar(grep { defined } @back), 3, 'Redis back: every host serves again without a restart ('
        . join(', ', map { defined $_ ? sprintf('%.1f s', $_) : 'never' } @back) . ')');
    my @res = finish_load($load);
    is_deeply([map { "$_->{port} $_->{status} $_->{note}" } grep { $_->{status} != 200 && $_->{status} != 503 } @res], [],
        'Redis stop under load: every answer is a 200 or a 503');
    is_deeply([map { "$_->{port} $_->{note}" } grep { $_->{status} == 503 && $_->{note} !~ /retry-after=[1-9]/ } @res], [],
        'every 503 carries Retry-After');
}

# ---- Redis stopped with volatile_failure open: served, and said ----
{
    my $o = Cluster->hosts(3, workers => 1, pg => $c->pg, redis => $c->redis, db => 'open_mode', redis_db => 1,
        extra => ['volatile_failure open']);
    my @O = $o->all;
    my $ows = $O[0]->ctl('workspace', 'create', 'Open');
    my $okey = $O[0]->ctl('keys', 'create', '--workspace', $ows, '--scopes', 'read:sites');
    poll_until(2 * $BOUND, sub { !grep { my ($s) = mcp_call($_, $okey, 'sites.list', {}); $s != 200 } @O });
    $o->redis->stop;
    my @during;
    for (1 .. 3) { push @during, map { my ($s) = mcp_call($_, $okey, 'sites.list', {}); $s } @O }
    is_deeply(\@during, [(200) x 9], 'Redis down, open: every host keeps serving');
    is(scalar(grep { $_->wait_log(qr/redis[^\n]*/i, 3) } @O), 3, 'Redis down, open: every host says so in its error log');
    $o->redis->start;
    my @after = map { my $h = $_; poll_until($RECOVER, sub { my ($s) = mcp_call($h, $okey, 'sites.list', {}); $s == 200 }) } @O;
    is(scalar(grep { $_ } @after), 3, 'Redis back, open: still serving');
    $o->stop;
}

$c->stop;
done_testing;
