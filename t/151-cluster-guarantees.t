# Three alyd hosts sharing one PostgreSQL and one Redis, requests spread
# round robin, must act as one server: a key minted through one host works on
# every host (at once on the one that minted it); a write is visible at once
# through the host that made it and through every host within 1 s, and no host
# ever shows an older version after a newer one; a revocation is refused by
# every host within 1 s while clients keep hammering all three; one rate budget
# across the three; a legacy session opened on one host works on the others and
# ends everywhere; and three hosts racing on one expected_version, one
# idempotency key or one sku: exactly one wins.
use strict;
use warnings;
use Test::More;
use File::Temp;
use Time::HiRes qw(time sleep);
use Alyd;
use Cluster;

Cluster::need_engines();
Alyd::watchdog(400);

# The bounds are 1 s on a production build; the sanitized build runs everything
# ALY_TIME_SCALE times slower, the replication tick included.
my $BOUND = 1.0 * $Alyd::SCALE;

my $c = Cluster->hosts(3, workers => 2);
my @H = $c->all;
my $ws = $H[0]->ctl('workspace', 'create', 'Cluster');
$H[0]->ctl('demo', 'seed', '--workspace', $ws, '--seed', '5', '--sites', '2', '--products', '8', '--orders', '10', '--days', '5');
my $SCOPES = 'read:sites,write:sites,read:content,write:content,read:orders';

sub mint {
    my ($h, @more) = @_;
    my $k = Alyd::json_decode($h->ctl('--json', 'keys', 'create', '--workspace', $ws, '--scopes', $SCOPES, @more)) // {};
    return ($k->{key}, $k->{id});
}

sub ok_call {
    my ($h, $key, $tool, $args, $name) = @_;
    my ($st, $r) = mcp_call($h, $key, $tool, $args);
    ok($st == 200 && !$r->{isError} && $r->{structuredContent}, $name) or diag("status $st: " . JSON::PP->new->canonical->encode($r));
    return $r->{structuredContent} // {};
}

# The first time (seconds after $t0) a call on $h answers 200 (or $want), polling; undef if never within $limit.
sub first_time {
    my ($h, $t0, $limit, $cb) = @_;
    my $when;
    poll_until($limit, sub { return 0 unless $cb->($h); $when = time - $t0; 1 }, 0.02);
    return $when;
}

# A 200 tools/call that is no error.
sub works {
    my ($h, $key, $tool, $args) = @_;
    my ($st, $r) = mcp_call($h, $key, $tool, $args // {});
    return $st == 200 && !$r->{isError};
}

# The site ids are the same through every host once replicated.
my ($key, $key_id) = mint($H[0]);
my $sites = ok_call($H[0], $key, 'sites.list', {}, 'the minting host serves its new key at once')->{sites};
my $site = $sites->[0]{id};

# ---- a key minted on one host works on all ----
for my $i (0 .. 2) {
    my $t0 = time;
    my ($k) = mint($H[$i]);
    ok(works($H[$i], $k, 'sites.list'), "key minted on host $i: works on host $i at once");
    for my $j (grep { $_ != $i } 0 .. 2) {
        my $dt = first_time($H[$j], $t0, 2 * $BOUND, sub { works($_[0], $k, 'sites.list') });
        ok(defined $dt && $dt <= $BOUND, sprintf('key minted on host %d: works on host %d within %.1f s (%s)', $i, $j, $BOUND,
            defined $dt ? sprintf('%.3f s', $dt) : 'never'));
    }
}
{
    my @lists = map { ok_call($_, $key, 'sites.list', {}, 'sites.list on host ' . $_->port) } @H;
    is_deeply([map { [map { $_->{id} } @{ $_->{sites} }] } @lists[1, 2]], [([map { $_->{id} } @{ $lists[0]{sites} }]) x 2],
        'the three hosts list the same sites');
}

# ---- writes: at once on the writer, within 1 s everywhere, never backwards; under read load ----
{
    my $p = ok_call($H[0], $key, 'products.create', { site_id => $site, title => 'Replicated', price => 100, sku => 'REPL-1' }, 'a product to update');
    my $dir = File::Temp->newdir;
    # Readers on every host watch the product's version: a host may lag, never go back.
    my $load = start_load(ports => [$c->ports], clients => 3, secs => 6 * $Alyd::SCALE, file => "$dir/read", pause => 0.01,
        req => sub {
            my ($port) = @_;
            my ($st, $r) = mcp_call($port, $key, 'products.get', { site_id => $site, product_id => $p->{id} });
            return ($st, $r->{structuredContent} ? $r->{structuredContent}{version} : 'err:' . ($r->{message} // $r->{content}[0]{text} // ''));
        });
    my $v = $p->{version};
    my (@late, @writer_stale);
    for my $round (0 .. 5) {
        my $w = $H[ $round % 3 ];
        my $t0 = time;
        my $u = ok_call($w, $key, 'products.update', { site_id => $site, product_id => $p->{id}, title => "Round $round",
            expected_version => $v }, "update $round through host " . ($round % 3));
        next unless $u->{version};
        $v = $u->{version};
        my $got = ok_call($w, $key, 'products.get', { site_id => $site, product_id => $p->{id} }, "read back on the writer, round $round");
        push @writer_stale, $round unless ($got->{version} // 0) == $v && ($got->{title} // '') eq "Round $round";
        for my $o (grep { $_ != $round % 3 } 0 .. 2) {
            my $dt = first_time($H[$o], $t0, 2 * $BOUND, sub {
                my ($st, $r) = mcp_call($_[0], $key, 'products.get', { site_id => $site, product_id => $p->{id} });
                ($r->{structuredContent}{version} // 0) >= $v;
            });
            push @late, "round $round host $o: " . (defined $dt ? sprintf('%.3f s', $dt) : 'never') unless defined $dt && $dt <= $BOUND;
        }
    }
    is_deeply(\@writer_stale, [], 'read-your-writes: the writing host shows the new version at once, every round');
    is_deeply(\@late, [], "every other host shows it within $BOUND s, every round");
    my @res = finish_load($load);
    my %last;
    my @back;
    for my $r (@res) {
        next unless $r->{status} == 200 && $r->{note} =~ /^\d+$/;
        my $k = "$r->{client}:$r->{port}";
        push @back, "$r->{port}: $last{$k} then $r->{note}" if defined $last{$k} && $r->{note} < $last{$k};
        $last{$k} = $r->{note};
    }
    ok(@res > 30, 'the readers made requests (' . scalar(@res) . ')');
    is_deeply([map { "$_->{port} $_->{status} $_->{note}" } grep { $_->{status} != 200 } @res], [], 'every read under the writes answered 200');
    is_deeply(\@back, [], 'no host ever showed an older version after a newer one');
}

# ---- a revocation: refused by every host within 1 s, under load ----
{
    my ($k, $id) = mint($H[1]);
    poll_until(2 * $BOUND, sub { !grep { !works($_, $k, 'sites.list') } @H });
    my $dir = File::Temp->newdir;
    my $load = start_load(ports => [$c->ports], clients => 3, secs => 3 * $Alyd::SCALE, file => "$dir/rev",
        req => sub { my ($port) = @_; my ($st) = mcp_call($port, $k, 'sites.list', {}); ($st) });
    sleep 1 * $Alyd::SCALE;
    my $t_before = time;
    $H[2]->ctl('keys', 'revoke', $id);
    my $t_revoked = time;
    my @res = finish_load($load);
    my %ok_before = map { $_->{port} => 1 } grep { $_->{status} == 200 && $_->{end} < $t_before } @res;
    is(scalar keys %ok_before, 3, 'the key worked on all three hosts before the revocation');
    my @after = grep { $_->{start} > $t_revoked + $BOUND } @res;
    my %seen = map { $_->{port} => 1 } @after;
    is(scalar keys %seen, 3, 'requests reached all three hosts after the bound');
    is_deeply([map { "$_->{port}: $_->{status}" } grep { $_->{status} != 401 } @after], [],
        "every request started more than $BOUND s after the revocation got 401, on every host");
    my ($last_ok) = sort { $b <=> $a } map { $_->{start} - $t_revoked } grep { $_->{status} == 200 } @res;
    diag(sprintf('last request admitted %.3f s after the revocation returned', $last_ok // 0));
    is(scalar(grep { $_->{status} != 200 && $_->{status} != 401 } @res), 0, 'nothing but 200 and 401 around the revocation');
}

# ---- one rate budget across the three hosts ----
{
    # A budget that refills negligibly during the test: exactly burst requests pass.
    my ($k, $id) = mint($H[0], '--rate-limit', '1/hour burst=24', '--name', 'budget');
    # Wait until every replica has the key without spending any of its budget.
    ok(poll_until(2 * $BOUND, sub { !grep { !eval { $_->ctl('keys', 'show', $id); 1 } } @H }), 'the budget key reached every replica');
    my @res = race(map {
        my $h = $H[$_];
        sub {
            my @st;
            for (1 .. 16) { my ($st, undef, $hd) = mcp_call($h, $k, 'sites.list', {}); push @st, [$st, header_value($hd, 'Retry-After')] }
            return \@st;
        }
    } 0 .. 2);
    my @all = map { @$_ } grep { ref $_ eq 'ARRAY' } @res;
    is(scalar @all, 48, 'three hosts, 16 requests each, in parallel');
    my $ok = grep { $_->[0] == 200 } @all;
    my @refused = grep { $_->[0] == 429 } @all;
    is($ok + @refused, 48, 'every answer is 200 or 429');
    is($ok, 24, 'exactly the budget (24) passed across the three hosts');
    is(scalar(grep { !defined $_->[1] || $_->[1] !~ /^[1-9]\d*$/ } @refused), 0, 'every 429 carries a Retry-After');
    my @per_host = map { scalar grep { $_->[0] == 200 } @{ $res[$_] } } 0 .. 2;
    diag("admitted per host: @per_host");
}

# ---- a legacy session opened on one host works on the others ----
{
    my ($st, $r, $hd) = mcp_request($H[0], $key, 'initialize',
        { protocolVersion => '2025-11-25', capabilities => {}, clientInfo => { name => 'cluster-test', version => '1' } });
    my $sid = header_value($hd, 'Mcp-Session-Id');
    ok($st == 200 && $sid, 'initialize on host 0 issues a session');
    my %hv = ('MCP-Protocol-Version' => '2025-11-25');
    # host 1 may not have the session yet: give it the bound.
    my $t0 = time;
    my $dt = first_time($H[1], $t0, 2 * $BOUND, sub {
        my ($s2, $r2) = mcp_call($_[0], $key, 'sites.list', {}, session => $sid, headers => \%hv);
        $s2 == 200 && $r2->{structuredContent};
    });
    ok(defined $dt && $dt <= $BOUND, "the session works on host 1 within $BOUND s");
    my ($nst) = mcp_request($H[1], $key, 'notifications/initialized', {}, session => $sid, notification => 1, headers => \%hv);
    is($nst, 202, 'notifications/initialized on host 1: 202');
    for my $i (0 .. 2) {
        my ($s3, $r3) = mcp_call($H[$i], $key, 'sites.list', {}, session => $sid, headers => \%hv);
        ok($s3 == 200 && $r3->{structuredContent}, "the session serves tools/call on host $i");
    }
    my ($s4) = mcp_request($H[2], $key, 'ping', {}, session => $sid, headers => \%hv);
    is($s4, 200, 'ping in the session on host 2');
    my ($dst) = http_request($H[2]->port, 'DELETE', '/api/mcp',
        headers => { Authorization => "Bearer $key", 'Mcp-Session-Id' => $sid, %hv });
    ok($dst == 200 || $dst == 204, "DELETE ends the session on host 2 ($dst)");
    my $t1 = time;
    my @gone = map {
        my $h = $_;
        first_time($h, $t1, 2 * $BOUND, sub { my ($s5) = mcp_request($_[0], $key, 'ping', {}, session => $sid, headers => \%hv); $s5 == 404 });
    } @H;
    is(scalar(grep { defined $_ && $_ <= $BOUND } @gone), 3, "the ended session is 404 on every host within $BOUND s");
}

# ---- races across three hosts: exactly one wins ----
# How many products of the site host $h lists with this sku (-1: the call failed).
sub count_sku {
    my ($h, $sku) = @_;
    my ($st, $r) = mcp_call($h, $key, 'products.list', { site_id => $site, query => $sku });
    return -1 unless $st == 200 && $r->{structuredContent};
    return scalar grep { $_->{sku} eq $sku } @{ $r->{structuredContent}{products} };
}
{
    my $won_every_round = 0;
    for my $round (1 .. 5) {
        my $p = ok_call($H[$round % 3], $key, 'products.create', { site_id => $site, title => "Race $round", price => 100, sku => "RACE3-$round" },
            "race $round: a product");
        poll_until(2 * $BOUND, sub { !grep { !works($_, $key, 'products.get', { site_id => $site, product_id => $p->{id} }) } @H });
        my @r = race(map {
            my ($h, $n) = ($H[$_], $_);
            sub {
                my ($st, $r) = mcp_call($h, $key, 'products.update',
                    { site_id => $site, product_id => $p->{id}, price => 200 + $n, expected_version => $p->{version} });
                return $st != 200 ? "status $st" : !$r->{isError} ? 'won' : ($r->{content}[0]{text} // '') =~ /expected_version/ ? 'lost' : 'other';
            }
        } 0 .. 2);
        my @won = grep { $r[$_] eq 'won' } 0 .. 2;
        # Every host, once the winner's write reached it (the winner may be another host), shows the winner.
        my $shown = @won == 1 && poll_until(2 * $BOUND, sub {
            !grep {
                my ($st, $g) = mcp_call($_, $key, 'products.get', { site_id => $site, product_id => $p->{id} });
                my $a = $g->{structuredContent} // {};
                !(($a->{version} // 0) == $p->{version} + 1 && ($a->{price}{amount} // 0) == 200 + $won[0]);
            } @H;
        });
        $won_every_round++ if @won == 1 && (grep { $_ eq 'lost' } @r) == 2 && $shown;
        diag("race $round: @r" . ($shown ? '' : ', not shown everywhere')) unless @won == 1 && $shown;
    }
    is($won_every_round, 5, 'three hosts on one expected_version: exactly one wins, and the product shows the winner, every round');

    my $idem_ok = 0;
    my $sku_ok = 0;
    for my $round (1 .. 4) {
        my %body = (site_id => $site, title => "Idem $round", price => 300, sku => "IDEM3-$round", idempotency_key => "cluster-idem-$round-$$");
        my @r = race(map { my $h = $H[$_]; sub { my ($st, $r) = mcp_call($h, $key, 'products.create', \%body); $r->{isError} ? 'error' : $r->{structuredContent}{id} } } 0 .. 2);
        my %ids = map { $_ => 1 } grep { defined && !ref && /^prod_/ } @r;
        my $one = poll_until(2 * $BOUND, sub { !grep { count_sku($_, "IDEM3-$round") != 1 } @H });
        $idem_ok++ if keys %ids == 1 && (grep { defined && !ref && /^prod_/ } @r) == 3 && $one;
        diag("idempotency $round: @r" . ($one ? '' : ', not one product on every host')) unless keys %ids == 1 && $one;

        my @s = race(map {
            my ($h, $n) = ($H[$_], $_);
            sub { my ($st, $r) = mcp_call($h, $key, 'products.create', { site_id => $site, title => "Sku $round $n", price => 1, sku => "SKU3-$round" });
                  $st != 200 ? "status $st" : !$r->{isError} ? 'won' : ($r->{content}[0]{text} // '') =~ /sku/ ? 'lost' : 'other' }
        } 0 .. 2);
        my $one_sku = poll_until(2 * $BOUND, sub { !grep { count_sku($_, "SKU3-$round") != 1 } @H });
        $sku_ok++ if (grep { $_ eq 'won' } @s) == 1 && (grep { $_ eq 'lost' } @s) == 2 && $one_sku;
        diag("sku $round: @s" . ($one_sku ? '' : ', not one product on every host')) unless (grep { $_ eq 'won' } @s) == 1 && $one_sku;
    }
    is($idem_ok, 4, 'three hosts on one idempotency key: one product, all three answered with it, every round');
    is($sku_ok, 4, 'three hosts creating one sku: exactly one wins, every round');
}

$c->stop;
done_testing;
