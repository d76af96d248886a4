# "volatile redis://": the configuration grammar, and rate limits that are
# one budget across two alyd hosts sharing one Redis (each host with its own
# volatile directory, so nothing else could carry the budget across): exactly
# burst requests pass over both, then 429 with Retry-After and the RateLimit
# headers from either host; one cell per principal named aly:{ID}:rl (Redis
# Cluster hashes the tag) with a TTL; the failed-authentication budget of an
# address shared too (aly:{a:HEX}:af), whether the host saw the address fail
# (checked first) or not (checked with the principal's charge); no
# shared-memory table on the hosts;
# last-used stamps in Redis.
use strict;
use warnings;
use Test::More;
use JSON::PP ();
use Alyd;
use AlyRedis;
use OAuthE2E;

plan skip_all => 'redis-server and redis-cli are not installed (scripts/install-deps --test installs them)' unless AlyRedis->available;
Alyd::watchdog(120);

# ---- configuration ----
{
    my $dir = File::Temp::tempdir('alyd-rcfg-XXXXXX', TMPDIR => 1, CLEANUP => 1);
    my $check = sub {
        my (@lines) = @_;
        Alyd::spew("$dir/alyd.conf", join("\n", "data_dir $dir/data", "error_log off", "access_log off", @lines, ($> == 0 ? ('user root') : ())) . "\n");
        my ($exit, $out, $err) = Alyd::run_cmd(Alyd::alyd_bin(), '-t', '-c', "$dir/alyd.conf");
        return ($exit, $out . $err);
    };
    for my $good ('volatile redis://127.0.0.1:6379/3', 'volatile redis://localhost', 'volatile redis://[::1]:7000/', 'volatile lmdb') {
        my ($exit, $text) = $check->($good, 'volatile_failure open', 'volatile_timeout 20ms');
        is($exit, 0, "\"$good\" is accepted") or diag($text);
    }
    for my $bad (['volatile memcached://127.0.0.1', qr/alyd\.conf:4: volatile must be "lmdb" or redis:/],
        ['volatile redis://127.0.0.1:0/1', qr/alyd\.conf:4: .*port must be from 1 to 65535/],
        ['volatile redis://user:pw@127.0.0.1', qr/alyd\.conf:4: .*credentials/],
        ['volatile redis://127.0.0.1/x', qr/alyd\.conf:4: .*database must be a number/],
        ['volatile redis://', qr/alyd\.conf:4: .*no host/],
        ['volatile_failure sideways', qr/alyd\.conf:4: volatile_failure must be "closed" or "open"/],
        ['volatile_timeout 0ms', qr/alyd\.conf:4: volatile_timeout must be from 1ms/]) {
        my ($exit, $text) = $check->($bad->[0]);
        isnt($exit, 0, "\"$bad->[0]\" is refused");
        like($text, $bad->[1], "\"$bad->[0]\": says where and why");
    }
}

# ---- two hosts, one Redis ----
my $redis = AlyRedis->start;
my @conf = ('volatile ' . $redis->url(5), 'auth_failure_limit 3/hour burst=3', Cluster::volatile_timeout_line());
my $a = Alyd->start(workers => 2, extra => \@conf);
my $ws = $a->ctl('workspace', 'create', 'Across hosts');
my %k1 = %{ Alyd::json_decode($a->ctl('--json', 'keys', 'create', '--workspace', $ws, '--scopes', 'read:sites', '--rate-limit', '1/hour burst=10')) };
my %k2 = %{ Alyd::json_decode($a->ctl('--json', 'keys', 'create', '--workspace', $ws, '--scopes', 'read:sites', '--rate-limit', '1/hour burst=10')) };
my $b = AlyRedis::twin($a, workers => 2, extra => \@conf);

my $PING = '{"jsonrpc":"2.0","id":1,"method":"ping"}';
sub ping {
    my ($host, $key, @more) = @_;
    my ($st, $h, $body) = Alyd::curl('-X', 'POST', '-H', 'Content-Type: application/json', '-H', 'Accept: application/json, text/event-stream',
        '-H', "Authorization: Bearer $key", @more, '--data', $PING, $host->url('/api/mcp'));
    return { status => $st, h => $h, body => $body, j => Alyd::json_decode($body) // {} };
}

my (@status, %refused_by);
for my $i (0 .. 15) {
    my $host = $i % 2 ? $b : $a;
    my $r = ping($host, $k1{key});
    push @status, $r->{status};
    $refused_by{ $i % 2 ? 'b' : 'a' } //= $r if $r->{status} == 429;
}
is(scalar(grep { $_ == 200 } @status), 10, 'a burst of 10 over two hosts: exactly 10 admitted') or diag("@status");
is_deeply([@status[10 .. 15]], [(429) x 6], 'then every request is refused, on either host') or diag("@status");
for my $name ('a', 'b') {
    my $r = $refused_by{$name} or next;
    my $ra = Alyd::header_value($r->{h}, 'retry-after') // '';
    ok($ra =~ /^\d+$/ && $ra > 3500 && $ra <= 3600, "host $name: Retry-After is one emission interval (3600 s) less the time since") or diag($ra);
    is(Alyd::header_value($r->{h}, 'ratelimit-policy'), '"principal";q=1;w=3600;aly-burst=10', "host $name: RateLimit-Policy");
    is(Alyd::header_value($r->{h}, 'ratelimit'), "\"principal\";r=0;t=$ra", "host $name: RateLimit says none left");
    is($r->{j}{error}{code}, -32029, "host $name: the JSON-RPC rate-limit error");
    is($r->{j}{error}{data}{retry_after_seconds}, $ra, "host $name: retry_after_seconds equals Retry-After");
}
is(ping($b, $k2{key})->{status}, 200, 'another principal has its own budget');

# ---- a 2025-03-26 batch spends one unit per call, across hosts too ----
{
    my $k4 = $a->ctl('keys', 'create', '--workspace', $ws, '--scopes', 'read:sites', '--rate-limit', '1/hour burst=5');
    my $n = 0;
    my $batch = sub {
        my ($host, @msgs) = @_;
        my ($st, $h, $body) = Alyd::curl('-X', 'POST', '-H', "Authorization: Bearer $k4", '-H', 'Content-Type: application/json',
            '-H', 'Accept: application/json', '--data-binary', JSON::PP->new->encode(\@msgs), $host->url('/api/mcp'));
        return ($st, Alyd::json_decode($body) // [], $h);
    };
    my $ping = sub { { jsonrpc => '2.0', id => ++$n, method => 'ping' } };
    my ($st, $r, $h) = $batch->($a, map { $ping->() } 1 .. 4);
    is(scalar(grep { exists $_->{result} } @$r), 4, 'a batch of 4 on host A: all answered');
    like(Alyd::header_value($h, 'ratelimit') // '', qr/;r=1;/, '... 4 units spent');
    ($st, $r, $h) = $batch->($b, $ping->(), $ping->(), $ping->());
    is($st, 200, 'a batch of 3 on host B with one unit left: answered');
    is(scalar(grep { exists $_->{result} } @$r), 1, '... one call made');
    is(scalar(grep { ($_->{error}{code} // 0) == -32029 } @$r), 2, '... two refused one by one with the rate-limit error');
}

# ---- the cells in Redis ----
my @cells = sort split /\n/, $redis->cli('-n', 5, '--raw', 'KEYS', 'aly:*:rl') // '';
is_deeply([grep { !/^aly:\{key_[A-Za-z0-9]+\}:rl$/ } @cells], [], 'every cell is named aly:{PRINCIPAL}:rl');
ok(@cells == 3 && (grep { $_ eq "aly:{$k1{id}}:rl" || $_ eq "aly:{$k2{id}}:rl" } @cells) == 2,
    'one cell for each of the three principals that spent, whichever host served them') or diag(join ',', @cells);
my $pttl = $redis->cli('-n', 5, 'PTTL', "aly:{$k1{id}}:rl") // -1;
ok($pttl > 9 * 3600 * 1000 && $pttl <= 10 * 3600 * 1000, 'the cell expires when its bucket is full again (10 x 3600 s)') or diag($pttl);
is($redis->cli('-n', 0, 'DBSIZE'), 0, 'nothing in the other databases: /5 of the URL is used');
ok(!-e $a->data_dir . '/volatile/ratelimit.cells' && !-e $b->data_dir . '/volatile/ratelimit.cells',
    'no shared-memory rate-limit table on either host');
my $stamp = $redis->cli('-n', 5, 'GET', "aly:{$k1{id}}:lu") // 0;
ok($stamp =~ /^\d+$/ && abs($stamp / 1000 - time) < 120, 'the key\'s last-used stamp is in Redis (ms)') or diag($stamp);
my $shown = Alyd::json_decode($b->ctl('--json', 'keys', 'show', $k1{id})) // {};
like($shown->{last_used} // '', qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d/, 'alyctl keys show reads it from Redis (on any host)')
  or diag($shown->{last_used});

# A deleted cell is a full bucket again: the budget really is the Redis key.
$redis->cli('-n', 5, 'DEL', "aly:{$k1{id}}:rl");
is(ping($a, $k1{key})->{status}, 200, 'with its cell gone, the principal is admitted again');

# ---- the cost: one round trip per authenticated request (/metrics) ----
{
    my $k3 = $a->ctl('keys', 'create', '--workspace', $ws, '--scopes', 'read:sites', '--rate-limit', '1000/second burst=1000');
    my $scrape = sub {
        my (undef, undef, $m) = Alyd::curl($a->metrics_url('/metrics'));
        return map { Alyd::metric_value($m, $_) // -1 } 'alyd_redis_roundtrips_total', 'alyd_redis_commands_total', 'alyd_redis_up';
    };
    my ($rt0, $cmd0, $up) = $scrape->();
    is($up, 1, '/metrics: alyd_redis_up 1');
    my @st = map { ping($a, $k3, '--interface', '127.0.0.9')->{status} } 1 .. 10;
    my ($rt1, $cmd1) = $scrape->();
    is_deeply(\@st, [(200) x 10], 'ten requests of a fresh key from a fresh address');
    # Each: the address check and the principal's script in one round trip; plus, at most once per
    # worker, the key's last-used stamp.
    ok($rt1 - $rt0 >= 10 && $rt1 - $rt0 <= 12, 'one Redis round trip per request (+ at most one stamp per worker): ' . ($rt1 - $rt0));
    ok($cmd1 - $cmd0 >= 20 && $cmd1 - $cmd0 <= 22, 'carrying two commands each: ' . ($cmd1 - $cmd0));
}

# ---- failed authentications: one budget per address across hosts ----
my $bad = 'aly_' . ('A' x 30) . '000000';
my @fail;
for my $i (0 .. 4) {
    push @fail, ping($i % 2 ? $b : $a, $bad, '--interface', '127.0.0.5')->{status};
}
is_deeply(\@fail, [401, 401, 401, 429, 429], 'three failures from one address over two hosts, then 429 on either') or diag("@fail");
my $af = $redis->cli('-n', 5, '--raw', 'KEYS', 'aly:*:af') // '';
is($af, 'aly:{a:347f000005}:af', 'the address cell is keyed by family and address');
my $r = ping($b, $k2{key}, '--interface', '127.0.0.5');
is($r->{status}, 429, 'a good key from that address is refused before any credential work');
like(Alyd::header_value($r->{h}, 'ratelimit-policy') // '', qr/^"auth-failures";q=3;w=3600/, 'by the auth-failures policy');
is(ping($b, $k2{key}, '--interface', '127.0.0.6')->{status}, 200, 'another address is not affected');
# Failures seen only by host A; host B's workers never saw that address fail, so they check it in the
# same round trip as the principal's charge (after the credential): still refused, by the same budget.
ping($a, $bad, '--interface', '127.0.0.7') for 1 .. 3;
$r = ping($b, $k2{key}, '--interface', '127.0.0.7');
is($r->{status}, 429, 'an address over its budget through another host only: a good key from it is refused too');
like(Alyd::header_value($r->{h}, 'ratelimit-policy') // '', qr/^"auth-failures"/, 'by the auth-failures policy');
is(ping($b, $bad, '--interface', '127.0.0.7')->{status}, 429, 'and a bad one gets 429, not 401');

# Another deployment on the same Redis database, with a volatile_prefix of its own: none of A's cells are its cells.
{
    my $other = Alyd->start(workers => 1, extra => [@conf, 'volatile_prefix other-shop']);
    my $ows = $other->ctl('workspace', 'create', 'Elsewhere');
    my $okey = $other->ctl('keys', 'create', '--workspace', $ows, '--scopes', 'read:sites');
    ping($a, $bad, '--interface', '127.0.0.9') for 1 .. 4;
    is(ping($a, $bad, '--interface', '127.0.0.9')->{status}, 429, 'deployment A: an address over its failure budget');
    is(ping($other, $okey, '--interface', '127.0.0.9')->{status}, 200, 'the other deployment: a good key from it is served');
    is(ping($other, $bad, '--interface', '127.0.0.9')->{status}, 401, 'and a bad one is its first failure there (401, not 429)');
    ok(defined $redis->cli('-n', 5, 'EXISTS', 'aly:{a:7f000009}:af') && $redis->cli('-n', 5, '--scan', '--pattern', 'other-shop:*') =~ /\S/,
        'its keys carry its prefix');
    $other->stop;
}

# A host whose clock runs 2 h fast (more than the 20 min in which 3/hour earns one failure back) still keeps the failure budget: the check before credential work decides on
# Redis' clock, as the charge does (on its own clock every failure read as earned back, and nothing was refused).
SKIP: {
    skip 'libfaketime is not installed (scripts/install-deps --test)', 2 unless OAuthE2E::Clock->available;
    my $clock = OAuthE2E::Clock->new;
    $clock->advance('+2h');
    my $fast = AlyRedis::twin($a, workers => 1, extra => \@conf, env => $clock->env);
    my @st = map { ping($fast, $bad, '--interface', '127.0.0.8')->{status} } 1 .. 6;
    is_deeply(\@st, [401, 401, 401, 429, 429, 429], 'a host 2 h fast: 3 failures (burst 3), then 429') or diag("@st");
    ok($fast->stop, 'the fast host stops');
}

$_->stop for $a, $b;
done_testing();
