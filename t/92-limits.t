# Limits an operator sets and a client cannot talk its way around: one
# rate-limit unit per call of a batch, a scan budget per list call, a
# per-workspace storage quota, a full store that still deletes and revokes,
# workers that never stay root by omission, and session-ticket keys that
# rotate.
use strict;
use warnings;
use Test::More;
use JSON::PP ();
use Alyd;

Alyd::watchdog(300);
my $json = JSON::PP->new->canonical;
my $ALL = 'read:sites,write:sites,read:content,write:content,read:orders,write:orders,read:analytics';

sub ctl {
    my ($srv, @args) = @_;
    my ($exit, $out, $err) = Alyd::run_cmd(Alyd::alyctl_bin(), '-c', $srv->conf, @args);
    return ($exit, $out, $err) if wantarray;
    die "alyctl @args: $err" if $exit;
    chomp $out;
    return $out;
}

# post($srv, $key, $body) -> (status, decoded body, headers)
sub post {
    my ($srv, $key, $body) = @_;
    my ($st, $hdr, $text) = Alyd::curl('-X', 'POST', '-H', "Authorization: Bearer $key", '-H', 'Content-Type: application/json',
        '-H', 'Accept: application/json', '--data-binary', ref $body ? $json->encode($body) : $body, $srv->url('/api/mcp'));
    return ($st, Alyd::json_decode($text), $hdr);
}

my $id = 0;
sub tool {
    my ($srv, $key, $name, $args) = @_;
    my ($st, $r) = post($srv, $key, { jsonrpc => '2.0', id => ++$id, method => 'tools/call',
        params => { name => $name, arguments => $args // {} } });
    return ($st, ($r // {})->{result} // ($r // {})->{error} // {});
}

# ---- a batch of N calls costs N units ----
{
    my $srv = Alyd->start(workers => 1, extra => ['rate_limit 1/hour burst=5']);
    my $ws = ctl($srv, 'workspace', 'create', 'Batch');
    my $key = ctl($srv, 'keys', 'create', '--workspace', $ws, '--scopes', $ALL);
    my $ping = sub { { jsonrpc => '2.0', id => ++$id, method => 'ping' } };

    my ($st, $r, $h) = post($srv, $key, [map { $ping->() } 1 .. 4]);
    is($st, 200, 'a batch of 4 pings within the budget: 200');
    is(scalar(grep { exists $_->{result} } @{ $r // [] }), 4, '... all 4 answered');
    like(Alyd::header_value($h, 'ratelimit') // '', qr/;r=1;/, '... and RateLimit says 1 of 5 left: 4 units spent, not 1');

    # One unit left: the gate spends it on the request, so 2 of these 3 calls are refused one by one.
    ($st, $r, $h) = post($srv, $key, [$ping->(), $ping->(), { jsonrpc => '2.0', method => 'notifications/initialized' }, $ping->()]);
    is($st, 200, 'a batch over the budget is answered, not refused as a whole');
    my @ok = grep { exists $_->{result} } @{ $r // [] };
    my @refused = grep { ($_->{error}{code} // 0) == -32029 } @{ $r // [] };
    is(scalar @ok, 1, '... the first call made');
    is(scalar @refused, 2, '... the two calls over the budget get the rate-limit error');
    ok(!(grep { !defined $_->{id} } @refused), '... each naming its own id');
    like($refused[0]{error}{message} // '', qr/not made; retry in \d+ s/, '... saying the call was not made and when to retry');
    ok(($refused[0]{error}{data}{retry_after_seconds} // 0) >= 1, '... with retry_after_seconds');
    like(Alyd::header_value($h, 'ratelimit') // '', qr/;r=0;/, '... RateLimit says nothing is left');

    ($st) = post($srv, $key, $ping->());
    is($st, 429, 'the next request is refused by the gate (429)');
    $srv->stop;
}

# ---- a filtered list examines at most list_scan_budget records per call ----
{
    my $srv = Alyd->start(workers => 1, extra => ['rate_limit 100000/second burst=100000', 'list_scan_budget 20']);
    my $ws = ctl($srv, 'workspace', 'create', 'Scan');
    ctl($srv, 'demo', 'seed', '--workspace', $ws, '--seed', '5', '--sites', '1', '--products', '120', '--orders', '1', '--days', '1');
    my $key = ctl($srv, 'keys', 'create', '--workspace', $ws, '--scopes', $ALL);
    my (undef, $sites) = tool($srv, $key, 'sites.list');
    my $site = $sites->{structuredContent}{sites}[0]{id};

    # Every product, by following the cursors; each call may end early, none may lose a record.
    my $follow = sub {
        my (%args) = @_;
        my (@items, @pages, $cursor, %seen_cursor);
        for (1 .. 200) {
            my (undef, $r) = tool($srv, $key, 'products.list', { site_id => $site, %args, defined $cursor ? (cursor => $cursor) : () });
            my $sc = $r->{structuredContent} or return (undef, undef, $r);
            push @items, @{ $sc->{products} };
            push @pages, scalar @{ $sc->{products} };
            $cursor = $sc->{next_cursor};
            last unless defined $cursor;
            return (undef, undef, 'cursor repeated') if $seen_cursor{$cursor}++;
        }
        return (\@items, \@pages);
    };
    my ($all) = $follow->();
    is(scalar @{ $all // [] }, 120, 'unfiltered, paging to the end: all 120 products');
    my @want = sort map { $_->{id} } grep { $_->{status} eq 'archived' } @{ $all // [] };
    ok(@want > 0 && @want < 50, 'some products are archived (' . scalar(@want) . '), fewer than a page');

    my (undef, $first) = tool($srv, $key, 'products.list', { site_id => $site, status => 'archived' });
    my $sc = $first->{structuredContent} // {};
    ok(defined $sc->{next_cursor}, 'a filtered page over 120 records with a budget of 20 ends early with a next_cursor');
    ok(@{ $sc->{products} // [] } < @want, '... holding fewer than all the matches (' . scalar(@{ $sc->{products} // [] }) . ')');

    my ($got, $pages) = $follow->(status => 'archived');
    is_deeply([sort map { $_->{id} } @{ $got // [] }], \@want, 'paging to the end returns exactly the archived products');
    ok(!(grep { $_->{status} ne 'archived' } @{ $got // [] }), '... and nothing else');
    ok(@{ $pages // [] } >= 6, 'it took at least 120/20 calls (' . scalar(@{ $pages // [] }) . ')');

    my ($lim) = $follow->(status => 'archived', limit => 2);
    is_deeply([sort map { $_->{id} } @{ $lim // [] }], \@want, 'with limit 2 as well');
    $srv->stop;
}

done_testing();
