# The workspace tools against a real alyd with demo data: for every
# tool a good call, a bad input, a call without its scope (403) and a call
# naming another workspace's record ("not found", never "forbidden").  Then
# paging, idempotency, optimistic concurrency, order state rules, analytics,
# resources, prompts, completion, audit, races between workers, and the
# end-to-end question of connect-claude-desktop.txt through the official SDK.
use strict;
use warnings;
use Test::More;
use JSON::PP ();
use POSIX ();
use Time::Local ();
use Alyd;

Alyd::watchdog(300);
my $srv = Alyd->start(workers => 2, extra => ['rate_limit 100000/second burst=100000']);
my $url = $srv->url('/api/mcp');

sub ctl { $srv->ctl(@_) }
my $ALL = 'read:sites,write:sites,read:content,write:content,read:orders,write:orders,read:analytics';
my $wsA = ctl('workspace', 'create', 'Shop A');
my $wsB = ctl('workspace', 'create', 'Shop B');
ctl('demo', 'seed', '--workspace', $wsA, '--seed', '3');
ctl('demo', 'seed', '--workspace', $wsB, '--seed', '4', '--sites', '2', '--products', '12', '--orders', '40', '--days', '30');
my $keyA = ctl('keys', 'create', '--workspace', $wsA, '--scopes', $ALL);
my $keyB = ctl('keys', 'create', '--workspace', $wsB, '--scopes', $ALL);

my $json = JSON::PP->new->canonical;
my $id = 0;

# call($key, $tool, $args) -> (status, result-or-error hash, headers)
sub call {
    my ($key, $tool, $args) = @_;
    my ($st, $hdr, $body) = Alyd::curl('-X', 'POST', '-H', "Authorization: Bearer $key", '-H', 'Content-Type: application/json',
        '-H', 'Accept: application/json', '--data-binary',
        $json->encode({ jsonrpc => '2.0', id => ++$id, method => 'tools/call', params => { name => $tool, arguments => $args // {} } }),
        $url);
    my $r = Alyd::json_decode($body) // {};
    return ($st, $r->{result} // $r->{error} // {}, $hdr);
}

sub ok_call {
    my ($key, $tool, $args, $name) = @_;
    my ($st, $r) = call($key, $tool, $args);
    ok($st == 200 && !$r->{isError} && $r->{structuredContent}, "$tool: $name") or diag($json->encode($r));
    is_deeply(Alyd::json_decode($r->{content}[0]{text} // 'null'), $r->{structuredContent}, "$tool: text block = structuredContent")
      if $r->{structuredContent};
    return $r->{structuredContent} // {};
}

sub err_call {
    my ($key, $tool, $args, $re, $name) = @_;
    my ($st, $r) = call($key, $tool, $args);
    ok($st == 200 && $r->{isError}, "$tool: $name is an isError result");
    like($r->{content}[0]{text} // '', $re, "$tool: $name says why");
}

my %scope_of = (
    'sites.list' => 'read:sites', 'sites.get' => 'read:sites', 'sites.create' => 'write:sites', 'sites.update' => 'write:sites',
    'products.list' => 'read:content', 'products.get' => 'read:content', 'products.create' => 'write:content',
    'products.update' => 'write:content', 'products.delete' => 'write:content', 'orders.list' => 'read:orders',
    'orders.get' => 'read:orders', 'orders.fulfill' => 'write:orders', 'orders.cancel' => 'write:orders',
    'analytics.summary' => 'read:analytics', 'analytics.timeseries' => 'read:analytics',
);

# ---- tools/list: every workspace tool, fully described ----
{
    my ($st, $hdr, $body) = Alyd::curl('-X', 'POST', '-H', "Authorization: Bearer $keyA", '-H', 'Content-Type: application/json',
        '--data', '{"jsonrpc":"2.0","id":1,"method":"tools/list"}', $url);
    my %tools = map { $_->{name} => $_ } @{ (Alyd::json_decode($body) // {})->{result}{tools} // [] };
    for my $t (sort keys %scope_of) {
        my $d = $tools{$t};
        ok($d && $d->{title} && $d->{description} && $d->{inputSchema}{type} eq 'object' && $d->{outputSchema},
            "$t: listed with title, description, inputSchema, outputSchema");
        is($d->{inputSchema}{additionalProperties}, JSON::PP::false, "$t: inputSchema forbids unknown fields");
        is($d->{_meta}{'aly/scope'}, $scope_of{$t}, "$t: declares scope $scope_of{$t}");
        is($d->{annotations}{openWorldHint}, JSON::PP::false, "$t: openWorldHint false");
    }
    is($tools{'sites.list'}{annotations}{readOnlyHint}, JSON::PP::true, 'reads are readOnlyHint');
    is($tools{'products.delete'}{annotations}{destructiveHint}, JSON::PP::true, 'products.delete is destructive');
    is($tools{'orders.cancel'}{annotations}{destructiveHint}, JSON::PP::true, 'orders.cancel is destructive');
    is($tools{'orders.fulfill'}{annotations}{idempotentHint}, JSON::PP::true, 'orders.fulfill is idempotent');
}

# ---- 403 for every tool without its scope ----
for my $t (sort keys %scope_of) {
    my $other = $scope_of{$t} eq 'read:sites' ? 'read:content' : 'read:sites';
    my $k = ctl('keys', 'create', '--workspace', $wsA, '--scopes', $other);
    my ($st, $r, $hdr) = call($k, $t, {});
    is($st, 403, "$t: 403 without $scope_of{$t}");
    like(Alyd::header_value($hdr, 'www-authenticate') // '', qr/insufficient_scope.*\Q$scope_of{$t}\E/, "$t: challenge names $scope_of{$t}");
}

# ---- sites ----
my $sitesA = ok_call($keyA, 'sites.list', {}, 'lists the sites')->{sites};
is(scalar @$sitesA, 3, 'sites.list: the three demo sites');
ok(!grep({ !defined $_->{product_count} || !defined $_->{order_count} } @$sitesA), 'sites.list: counts on every site');
my $site = $sitesA->[0]{id};
my ($siteB) = map { $_->{id} } @{ ok_call($keyB, 'sites.list', {}, 'lists B\'s sites')->{sites} };
err_call($keyA, 'sites.list', { limit => 0 }, qr/limit: must be >= 1/, 'limit 0');
{
    my $p1 = ok_call($keyA, 'sites.list', { limit => 2 }, 'first page');
    ok($p1->{next_cursor}, 'sites.list: next_cursor when more remain');
    my $p2 = ok_call($keyA, 'sites.list', { limit => 2, cursor => $p1->{next_cursor} }, 'second page');
    is(scalar(@{ $p1->{sites} }) + scalar(@{ $p2->{sites} }), 3, 'sites.list: pages cover every site once');
    ok(!defined $p2->{next_cursor}, 'sites.list: last page has next_cursor null');
    (my $bad = $p1->{next_cursor}) =~ s/^(.)/$1 eq 'A' ? 'B' : 'A'/e;
    err_call($keyA, 'sites.list', { cursor => $bad }, qr/cursor/, 'tampered cursor');
    # A cursor resumes the listing that made it, in that workspace: B's key cannot page on with A's cursor.
    err_call($keyB, 'sites.list', { limit => 2, cursor => $p1->{next_cursor} }, qr/cursor: made for another sites\.list/,
        'another workspace\'s cursor');
    is(scalar @{ ok_call($keyA, 'sites.list', { limit => 1, cursor => $p1->{next_cursor} }, 'another limit')->{sites} }, 1,
        'sites.list: a cursor resumes with another limit');
}
{
    # A products.list cursor of one site, or of one filter, resumes that listing only (it would skip records elsewhere).
    my ($s0, $s1) = map { $_->{id} } @$sitesA[0, 1];
    my $p = ok_call($keyA, 'products.list', { site_id => $s0, limit => 1 }, 'a products.list cursor');
    ok($p->{next_cursor}, 'products.list: a next_cursor');
    err_call($keyA, 'products.list', { site_id => $s1, limit => 1, cursor => $p->{next_cursor} },
        qr/cursor: made for another products\.list \(another site, workspace or filter\)/, 'another site\'s cursor');
    err_call($keyA, 'products.list', { site_id => $s0, status => 'active', limit => 1, cursor => $p->{next_cursor} },
        qr/cursor: made for another products\.list/, 'a cursor made without the status filter');
    err_call($keyA, 'products.list', { site_id => $s0, query => 'a', limit => 1, cursor => $p->{next_cursor} },
        qr/cursor: made for another products\.list/, 'a cursor made without the query filter');
    my $q = ok_call($keyA, 'products.list', { site_id => $s0, query => 'a', limit => 1 }, 'a cursor of a query');
    ok($q->{next_cursor}, 'products.list: query a has a next page') and
        err_call($keyA, 'products.list', { site_id => $s0, query => 'b', limit => 1, cursor => $q->{next_cursor} },
        qr/cursor: made for another products\.list/, 'a cursor made for another query');
    ok(ok_call($keyA, 'products.list', { site_id => $s0, limit => 1, cursor => $p->{next_cursor} }, 'its own listing')->{products},
        'products.list: the cursor resumes its own listing');
    my $o = ok_call($keyA, 'orders.list', { site_id => $s0, status => 'paid', limit => 1 }, 'an orders.list cursor');
    err_call($keyA, 'orders.list', { site_id => $s0, limit => 1, cursor => $o->{next_cursor} },
        qr/cursor: made for another orders\.list/, 'a cursor of paid orders used for every order');
    err_call($keyA, 'orders.list', { site_id => $s1, status => 'paid', limit => 1, cursor => $o->{next_cursor} },
        qr/cursor: made for another orders\.list/, 'an orders cursor of another site');
}
is(ok_call($keyA, 'sites.get', { site_id => $site }, 'gets a site')->{id}, $site, 'sites.get: the site');
err_call($keyA, 'sites.get', { site_id => 'nope' }, qr/site_id: must match the pattern/, 'malformed id');
err_call($keyB, 'sites.get', { site_id => $site }, qr/no site/, 'another workspace\'s site');
my $new = ok_call($keyA, 'sites.create', { name => 'Pop-up', domain => 'popup.example.com', currency => 'CHF' }, 'creates a site');
like($new->{id}, qr/^site_[0-9A-Za-z]{20}$/, 'sites.create: a site_ id');
err_call($keyA, 'sites.create', { name => 'X', domain => 'Not A Domain', currency => 'CHF' }, qr/domain: must match/, 'bad domain');
err_call($keyA, 'sites.create', { name => 'X', domain => 'x.example.com', currency => 'chf' }, qr/currency/, 'bad currency');
my $upd = ok_call($keyA, 'sites.update', { site_id => $new->{id}, name => 'Pop-up 2', expected_version => 1 }, 'renames');
is($upd->{version}, 2, 'sites.update: version bumped');
err_call($keyA, 'sites.update', { site_id => $new->{id}, name => 'Y', expected_version => 1 },
    qr/expected_version: the site is at version 2, not 1; nothing was written/, 'stale version');
is(ok_call($keyA, 'sites.get', { site_id => $new->{id} }, 'after the refused update')->{name}, 'Pop-up 2', 'a refused site update wrote nothing');
err_call($keyA, 'sites.update', { site_id => $new->{id} }, qr/at least one field/, 'nothing to change');
err_call($keyB, 'sites.update', { site_id => $new->{id}, name => 'hijack' }, qr/no site/, 'another workspace\'s site');

# ---- products ----
my %count;
for my $s (@$sitesA) {
    my ($n, $c, $pages) = (0, undef, 0);
    do {
        my $p = ok_call($keyA, 'products.list', { site_id => $s->{id}, limit => 7, $c ? (cursor => $c) : () }, "pages $s->{id}");
        $n += @{ $p->{products} };
        $c = $p->{next_cursor};
        $pages++;
    } while ($c && $pages < 50);
    is($n, $s->{product_count}, "products.list: paging $s->{id} yields product_count ($n)");
}
my $plist = ok_call($keyA, 'products.list', { site_id => $site, status => 'active' }, 'filters by status');
ok(!grep({ $_->{status} ne 'active' } @{ $plist->{products} }), 'products.list: status filter holds');
my $prod = $plist->{products}[0];
is(ref $prod->{price}, 'HASH', 'money is an object');
like($prod->{price}{amount}, qr/^\d+$/, 'money amount is an integer in minor units');
like($prod->{price}{currency}, qr/^[A-Z]{3}$/, 'money carries an ISO 4217 currency');
my $q = ok_call($keyA, 'products.list', { site_id => $site, query => $prod->{sku} }, 'queries by sku');
is($q->{products}[0]{id}, $prod->{id}, 'products.list: query finds the sku');
err_call($keyA, 'products.list', { site_id => $site, status => 'sold' }, qr/status: must be one of/, 'bad status');
err_call($keyB, 'products.list', { site_id => $site }, qr/no site/, 'another workspace\'s site');
is(ok_call($keyA, 'products.get', { site_id => $site, product_id => $prod->{id} }, 'gets a product')->{sku}, $prod->{sku}, 'products.get');
err_call($keyA, 'products.get', { site_id => $site, product_id => 'prod_x' }, qr/product_id: must match/, 'malformed id');
err_call($keyB, 'products.get', { site_id => $siteB, product_id => $prod->{id} }, qr/no product/, 'another workspace\'s product');

my %create = (site_id => $site, title => 'Test Mug', price => 1299, sku => 'TEST-MUG-1', inventory => 5, tags => ['test'],
    idempotency_key => 'create-test-mug-0001');
my $made = ok_call($keyA, 'products.create', \%create, 'creates a product');
is($made->{price}{amount}, 1299, 'products.create: price stored in minor units');
is($made->{status}, 'draft', 'products.create: status defaults to draft');
is(ok_call($keyA, 'products.create', \%create, 'same idempotency key and body')->{id}, $made->{id}, 'idempotent replay returns the same product');
err_call($keyA, 'products.create', { %create, price => 1 }, qr/idempotency_key: already used/, 'same key, different body');
err_call($keyA, 'products.create', { %create, idempotency_key => 'create-test-mug-0002' }, qr/sku: TEST-MUG-1 is already used/, 'duplicate sku');
err_call($keyA, 'products.create', { site_id => $site, title => 'Float', price => 12.5, sku => 'F1' }, qr/price: must be of type integer/, 'float price');
err_call($keyA, 'products.create', { site_id => $site, title => 'Neg', price => -1, sku => 'N1' }, qr/price: must be >= 0/, 'negative price');
err_call($keyB, 'products.create', { site_id => $site, title => 'X', price => 1, sku => 'X1' }, qr/no site/, 'into another workspace');
my $u = ok_call($keyA, 'products.update', { site_id => $site, product_id => $made->{id}, price => 1499, expected_version => 1 }, 'updates');
is($u->{version}, 2, 'products.update: version 2');
is($u->{title}, 'Test Mug', 'products.update: untouched fields kept');
err_call($keyA, 'products.update', { site_id => $site, product_id => $made->{id}, price => 1, expected_version => 1 }, qr/expected_version/,
    'stale expected_version');
is(ok_call($keyA, 'products.get', { site_id => $site, product_id => $made->{id} }, 'after the refused update')->{price}{amount}, 1499,
    'a refused update wrote nothing');
err_call($keyA, 'products.update', { site_id => $site, product_id => $made->{id}, colour => 'red' }, qr/colour: is not a known field/, 'unknown field');
err_call($keyB, 'products.update', { site_id => $siteB, product_id => $made->{id}, price => 1 }, qr/no product/, 'another workspace\'s product');
err_call($keyA, 'products.delete', { site_id => $site, product_id => $made->{id}, expected_version => 1 }, qr/expected_version/, 'stale delete');
err_call($keyB, 'products.delete', { site_id => $siteB, product_id => $made->{id} }, qr/no product/, 'another workspace\'s product');
ok(ok_call($keyA, 'products.delete', { site_id => $site, product_id => $made->{id}, expected_version => 2 }, 'deletes')->{deleted}, 'deleted');
err_call($keyA, 'products.get', { site_id => $site, product_id => $made->{id} }, qr/no product/, 'deleted product');

# ---- orders ----
my $orders = ok_call($keyA, 'orders.list', { site_id => $site, limit => 100 }, 'lists orders')->{orders};
ok(@$orders > 0, 'orders.list: the demo orders');
my ($paid) = grep { $_->{status} eq 'paid' } @$orders;
my ($pending) = grep { $_->{status} eq 'pending' } @$orders;
my ($cancelled) = grep { $_->{status} eq 'cancelled' } @$orders;
my ($paid2) = grep { $_->{status} eq 'paid' && $_->{id} ne $paid->{id} } @$orders;
my $since = ok_call($keyA, 'orders.list', { site_id => $site, since => '2100-01-01' }, 'since in the future');
is(scalar @{ $since->{orders} }, 0, 'orders.list: since filters by time');
ok(!grep({ $_->{status} ne 'paid' } @{ ok_call($keyA, 'orders.list', { site_id => $site, status => 'paid' }, 'status paid')->{orders} }),
    'orders.list: status filter holds');
err_call($keyA, 'orders.list', { site_id => $site, since => 'yesterday' }, qr/since/, 'bad since');
err_call($keyB, 'orders.list', { site_id => $site }, qr/no site/, 'another workspace\'s site');

# Paging walks the time index: small pages give the same orders in the same
# order as large ones, a filter applies before the limit (a page is never cut
# short by orders it leaves out), and since combines with a cursor.
sub all_pages {
    my ($tool, $args, $field) = @_;
    my (@items, $c);
    my $pages = 0;
    do {
        my ($st, $r) = call($keyA, $tool, { %$args, $c ? (cursor => $c) : () });
        my $p = $r->{structuredContent} // {};
        push @items, @{ $p->{$field} // [] };
        $c = $p->{next_cursor};
        $pages++;
    } while ($c && $pages < 500);
    return (\@items, $pages);
}
{
    my ($big) = all_pages('orders.list', { site_id => $site, limit => 100 }, 'orders');
    is(scalar @$big, $sitesA->[0]{order_count}, 'orders.list: paging yields order_count orders');
    my ($small, $pages) = all_pages('orders.list', { site_id => $site, limit => 7 }, 'orders');
    is_deeply([map { $_->{id} } @$small], [map { $_->{id} } @$big], 'orders.list: pages of 7 and of 100 give the same orders in the same order');
    cmp_ok($pages, '>=', int(@$big / 7), 'orders.list: it took that many pages');
    is_deeply([map { $_->{created_at} } @$big], [sort map { $_->{created_at} } @$big], 'orders.list: oldest first');
    my ($paid_pages) = all_pages('orders.list', { site_id => $site, status => 'paid', limit => 3 }, 'orders');
    is_deeply([map { $_->{id} } @$paid_pages], [map { $_->{id} } grep { $_->{status} eq 'paid' } @$big],
        'orders.list: a status filter pages over exactly the matching orders');
    my $np = scalar(grep { $_->{status} eq 'paid' } @$big);
    my $one = ok_call($keyA, 'orders.list', { site_id => $site, status => 'paid', limit => $np }, 'every paid order in one page');
    is(scalar @{ $one->{orders} }, $np, 'orders.list: a page of exactly the matching orders');
    ok(!defined $one->{next_cursor}, 'orders.list: and no next_cursor, though other orders follow');
    my $mid = substr($big->[int(@$big / 2)]{created_at}, 0, 19);
    my ($later) = all_pages('orders.list', { site_id => $site, since => "${mid}Z", limit => 5 }, 'orders');
    is_deeply([map { $_->{id} } @$later], [map { $_->{id} } grep { substr($_->{created_at}, 0, 19) ge $mid } @$big],
        'orders.list: since with paging gives the orders from that second on');
    # The same instant written as RFC 3339 allows: an offset, a fraction, lower case.
    my $want = [map { $_->{id} } @$later];
    my ($y, $mo, $d, $h, $mi, $s) = $mid =~ /^(\d+)-(\d+)-(\d+)T(\d+):(\d+):(\d+)$/;
    my @local = gmtime(Time::Local::timegm($s, $mi, $h, $d, $mo - 1, $y) + 5 * 3600 + 30 * 60);
    my $plus = sprintf('%04d-%02d-%02dT%02d:%02d:%02d+05:30', $local[5] + 1900, $local[4] + 1, @local[3, 2, 1, 0]);
    @local = gmtime(Time::Local::timegm($s, $mi, $h, $d, $mo - 1, $y) - 7 * 3600);
    my $minus = sprintf('%04d-%02d-%02dt%02d:%02d:%02d.000-07:00', $local[5] + 1900, $local[4] + 1, @local[3, 2, 1, 0]);
    for my $same ($plus, $minus, "${mid}.000Z", "${mid}z") {
        my ($got) = all_pages('orders.list', { site_id => $site, since => $same, limit => 50 }, 'orders');
        is_deeply([map { $_->{id} } @$got], $want, "orders.list: since $same is the instant ${mid}Z");
    }
    my ($half) = all_pages('orders.list', { site_id => $site, since => "${mid}.5Z", limit => 50 }, 'orders');
    is_deeply([map { $_->{id} } @$half], [map { $_->{id} } grep { $_->{created_at} ge "${mid}.500Z" } @$big],
        'orders.list: a fraction of a second counts');
    # An order's own created_at with one more digit: 0 still includes it, 1 is after it.
    my $at = $big->[int(@$big / 3)]{created_at};
    like($at, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/, 'orders.list: created_at has milliseconds');
    (my $stem = $at) =~ s/Z$//;
    my ($incl) = all_pages('orders.list', { site_id => $site, since => "${stem}0Z", limit => 50 }, 'orders');
    is_deeply([map { $_->{id} } @$incl], [map { $_->{id} } grep { $_->{created_at} ge $at } @$big],
        'orders.list: since an order\'s own instant includes it');
    my ($finer) = all_pages('orders.list', { site_id => $site, since => "${stem}1Z", limit => 50 }, 'orders');
    is_deeply([map { $_->{id} } @$finer], [map { $_->{id} } grep { $_->{created_at} gt $at } @$big],
        'orders.list: a fraction finer than a millisecond rounds up (at or after since), past that order');
    for my $bad ("${mid}", "${mid}garbage!!", "${mid}Zx", "${mid}+0530", "${mid}+05:3", "${mid}+24:00", "${mid}+05:60", "${mid}.Z",
        "${mid}.1234567890Z", substr($mid, 0, 11) . '99:99:99Z', substr($mid, 0, 11) . '24:00:00Z', substr($mid, 0, 11) . '23:60:00Z',
        substr($mid, 0, 11) . '23:59:60Z', substr($mid, 0, 11) . '1:02:03Z', '2026-02-30T00:00:00Z', "${mid} Z", '1970-01-01T00:00:00+01:00') {
        err_call($keyA, 'orders.list', { site_id => $site, since => $bad }, qr/since: must be a date \(YYYY-MM-DD\) or an RFC 3339 time/,
            "since $bad is refused");
    }
    my $sc = ok_call($keyA, 'sites.list', { limit => 1 }, 'a sites.list cursor')->{next_cursor};
    err_call($keyA, 'products.list', { site_id => $site, cursor => $sc }, qr/cursor: not a cursor from products\.list/, 'another list\'s cursor');
    err_call($keyA, 'orders.list', { site_id => $site, cursor => $sc }, qr/cursor: not a cursor from orders\.list/, 'another list\'s cursor');
}
my $o = ok_call($keyA, 'orders.get', { order_id => $paid->{id} }, 'gets an order');
ok(@{ $o->{line_items} } >= 1 && $o->{total}{amount} > 0, 'orders.get: line items and total');
err_call($keyA, 'orders.get', { order_id => 'ord_' }, qr/order_id: must match/, 'malformed id');
err_call($keyB, 'orders.get', { order_id => $paid->{id} }, qr/no order/, 'another workspace\'s order');
my $f = ok_call($keyA, 'orders.fulfill', { order_id => $paid->{id}, carrier => 'DHL', tracking_number => 'JD0001' }, 'fulfils a paid order');
is($f->{status}, 'fulfilled', 'orders.fulfill: fulfilled');
is($f->{fulfillment}{tracking_number}, 'JD0001', 'orders.fulfill: tracking recorded');
is(ok_call($keyA, 'orders.fulfill', { order_id => $paid->{id}, carrier => 'DHL', tracking_number => 'JD0001' }, 'again')->{version},
    $f->{version}, 'orders.fulfill: idempotent (same call, same version)');
err_call($keyA, 'orders.fulfill', { order_id => $pending->{id}, carrier => 'DHL', tracking_number => 'X1' }, qr/pending/, 'unpaid order') if $pending;
err_call($keyA, 'orders.fulfill', { order_id => $cancelled->{id}, carrier => 'DHL', tracking_number => 'X1' }, qr/cancelled/, 'cancelled order') if $cancelled;
err_call($keyA, 'orders.fulfill', { order_id => $paid->{id}, carrier => 'DHL' }, qr/tracking_number: is required/, 'missing field');
err_call($keyB, 'orders.fulfill', { order_id => $paid2->{id}, carrier => 'DHL', tracking_number => 'X' }, qr/no order/, 'another workspace\'s order');
err_call($keyA, 'orders.cancel', { order_id => $paid->{id} }, qr/already fulfilled/, 'fulfilled order');
my $cx = ok_call($keyA, 'orders.cancel', { order_id => $paid2->{id}, reason => 'customer asked' }, 'cancels');
is($cx->{status}, 'cancelled', 'cancelled');
is($cx->{cancel_reason}, 'customer asked', 'orders.cancel: the reason is kept with the order');
is(ok_call($keyA, 'orders.get', { order_id => $paid2->{id} }, 'the cancelled order')->{cancel_reason}, 'customer asked',
    'orders.get: shows it');
my $again = ok_call($keyA, 'orders.cancel', { order_id => $paid2->{id}, reason => 'another reason' }, 'again');
is($again->{status}, 'cancelled', 'orders.cancel: idempotent');
is($again->{cancel_reason}, 'customer asked', 'orders.cancel: a repeated cancel changes nothing, the first reason stays');
is($again->{version}, $cx->{version}, '... nor the version');
err_call($keyA, 'orders.cancel', { order_id => 42 }, qr/order_id: must be of type string/, 'id of the wrong type');
err_call($keyB, 'orders.cancel', { order_id => $paid->{id} }, qr/no order/, 'another workspace\'s order');

# ---- analytics ----
my @t = gmtime(time);
my $today = POSIX::strftime('%Y-%m-%d', @t);
my $from = POSIX::strftime('%Y-%m-%d', gmtime(time - 89 * 86400));
my $sum = ok_call($keyA, 'analytics.summary', { site_id => $site, from => $from, to => $today }, '90 days');
ok($sum->{visits} > 0 && $sum->{orders} > 0, 'analytics.summary: visits and orders');
like($sum->{revenue}{amount}, qr/^\d+$/, 'analytics.summary: revenue in integer minor units');
is($sum->{average_order_value}{amount}, int(($sum->{revenue}{amount} + int($sum->{orders} / 2)) / $sum->{orders}), 'average order value');
ok(abs($sum->{conversion_rate} - $sum->{orders} / $sum->{visits}) < 0.0001, 'conversion rate = orders / visits');
ok(@{ $sum->{top_products} } >= 1 && @{ $sum->{top_products} } <= 5, 'top products');
my $ts = ok_call($keyA, 'analytics.timeseries', { site_id => $site, from => $from, to => $today }, 'daily series');
is(scalar @{ $ts->{points} }, 90, 'analytics.timeseries: one point per day');
my ($v, $n) = (0, 0);
$v += $_->{visits}, $n += $_->{orders} for @{ $ts->{points} };
is($v, $sum->{visits}, 'series visits add up to the summary');
is($n, $sum->{orders}, 'series orders add up to the summary');
err_call($keyA, 'analytics.summary', { site_id => $site, from => '2025-01-01', to => '2026-06-01' }, qr/at most 366 days/, 'range too long');
err_call($keyA, 'analytics.summary', { site_id => $site, from => $today, to => $from }, qr/before from/, 'reversed range');
err_call($keyA, 'analytics.timeseries', { site_id => $site, from => '2026-02-30', to => $today }, qr/date/, 'impossible date');
err_call($keyB, 'analytics.summary', { site_id => $site, from => $from, to => $today }, qr/no site/, 'another workspace\'s site');
err_call($keyB, 'analytics.timeseries', { site_id => $site, from => $from, to => $today }, qr/no site/, 'another workspace\'s site');

# Top products are exact however many products a range holds: here the best seller is the 1001st product met.
{
    my $ws = ctl('workspace', 'create', 'Many products');
    my $key = ctl('keys', 'create', '--workspace', $ws, '--scopes', $ALL);
    my $sid = 'site_' . ('M' x 20);
    my @lines = (qq({"type":"site","id":"$sid","name":"Many","domain":"many.example","currency":"EUR"}));
    my $pid = sub { sprintf('prod_%020d', $_[0]) };
    push @lines, map { sprintf('{"type":"product","site_id":"%s","id":"%s","title":"P%d","sku":"S-%d","price":1}', $sid, $pid->($_), $_, $_) } 0 .. 1000;
    push @lines, map { sprintf('{"type":"order","site_id":"%s","id":"ord_%020d","status":"paid","created":"2026-11-01",'
            . '"items":[{"product_id":"%s","quantity":1,"unit_price":1}]}', $sid, $_, $pid->($_)) } 0 .. 999;
    push @lines, sprintf('{"type":"order","site_id":"%s","id":"ord_%020d","status":"paid","created":"2026-11-02",'
        . '"items":[{"product_id":"%s","quantity":2,"unit_price":500000000}]}', $sid, 1000, $pid->(1000));
    Alyd::spew($srv->dir . '/many.jsonl', join("\n", @lines) . "\n");
    ctl('import', '--workspace', $ws, $srv->dir . '/many.jsonl');
    my $top = ok_call($key, 'analytics.summary', { site_id => $sid, from => '2026-11-01', to => '2026-11-02' }, '1001 products');
    is($top->{revenue}{amount}, 1000 + 1000000000, 'analytics.summary: revenue of every order');
    is_deeply([map { [$_->{product_id}, $_->{title}, $_->{quantity}, $_->{revenue}{amount}] } @{ $top->{top_products} }],
        [[$pid->(1000), 'P1000', 2, 1000000000], map { [$pid->($_), "P$_", 1, 1] } 0 .. 3],
        'analytics.summary: the best seller although 1000 products came before it, then the ties by id');
    # Past 50,000 distinct products in one range the answer is refused, not computed from some of them.
    my $big = 'site_' . ('N' x 20);
    @lines = (qq({"type":"site","id":"$big","name":"Huge","domain":"huge.example","currency":"EUR"}));
    my $qid = sub { sprintf('prod_9%019d', $_[0]) };
    push @lines, map { sprintf('{"type":"product","site_id":"%s","id":"%s","title":"Q","sku":"Q-%d","price":1}', $big, $qid->($_), $_) } 0 .. 50000;
    for my $o (0 .. 2500) {
        my $items = join(',', map { sprintf('{"product_id":"%s","quantity":1,"unit_price":1}', $qid->($_)) } grep { $_ <= 50000 } $o * 20 .. $o * 20 + 19);
        push @lines, sprintf('{"type":"order","site_id":"%s","id":"ord_9%019d","status":"paid","created":"2026-11-0%d","items":[%s]}',
            $big, $o, $o < 2500 ? 1 : 2, $items);
    }
    Alyd::spew($srv->dir . '/huge.jsonl', join("\n", @lines) . "\n");
    ctl('import', '--workspace', $ws, $srv->dir . '/huge.jsonl');
    err_call($key, 'analytics.summary', { site_id => $big, from => '2026-11-01', to => '2026-11-02' },
        qr/this range holds orders of more than 50000 distinct products; ask for a shorter range/, '50,001 products in the range');
    is(ok_call($key, 'analytics.summary', { site_id => $big, from => '2026-11-01', to => '2026-11-01' }, '50,000 products')->{orders},
        2500, 'analytics.summary: 50,000 products in one range are counted');
}

# ---- resources, prompts, completion ----
sub rpc {
    my ($key, $method, $params) = @_;
    my ($st, $hdr, $body) = Alyd::curl('-X', 'POST', '-H', "Authorization: Bearer $key", '-H', 'Content-Type: application/json',
        '--data-binary', $json->encode({ jsonrpc => '2.0', id => ++$id, method => $method, params => $params }), $url);
    return ($st, Alyd::json_decode($body) // {});
}
{
    my ($st, $r) = rpc($keyA, 'resources/templates/list', {});
    my %tpl = map { $_->{uriTemplate} => 1 } @{ $r->{result}{resourceTemplates} // [] };
    ok($tpl{'aly://sites/{site_id}'} && $tpl{'aly://sites/{site_id}/products/{product_id}'} && $tpl{'aly://orders/{order_id}'},
        'resource templates listed');
    ($st, $r) = rpc($keyA, 'resources/read', { uri => "aly://sites/$site" });
    is((Alyd::json_decode($r->{result}{contents}[0]{text} // '{}') // {})->{id}, $site, 'aly://sites/{id} reads the site');
    ($st, $r) = rpc($keyA, 'resources/read', { uri => "aly://sites/$site/products/$prod->{id}" });
    is((Alyd::json_decode($r->{result}{contents}[0]{text} // '{}') // {})->{sku}, $prod->{sku}, 'product resource');
    ($st, $r) = rpc($keyA, 'resources/read', { uri => "aly://orders/$paid->{id}" });
    is((Alyd::json_decode($r->{result}{contents}[0]{text} // '{}') // {})->{status}, 'fulfilled', 'order resource');
    ($st, $r) = rpc($keyB, 'resources/read', { uri => "aly://orders/$paid->{id}" });
    is($r->{error}{code}, -32002, 'another workspace\'s order resource: not found');
    ($st, $r) = rpc($keyA, 'resources/read', { uri => "aly://sites/$site/products/prod_" . ('Z' x 20) });
    is($r->{error}{code}, -32002, 'a product resource that does not exist: not found');
    ($st, $r) = rpc($keyB, 'resources/read', { uri => "aly://sites/$site" });
    is($r->{error}{code}, -32002, 'another workspace\'s site resource: not found');
    my $k = ctl('keys', 'create', '--workspace', $wsA, '--scopes', 'read:sites');
    ($st, $r) = rpc($k, 'resources/read', { uri => "aly://orders/$paid->{id}" });
    is($st, 403, 'order resource without read:orders: 403');
    ($st, $r) = rpc($keyA, 'prompts/list', {});
    my %pr = map { $_->{name} => 1 } @{ $r->{result}{prompts} // [] };
    ok($pr{'sales-report'} && $pr{'fulfilment-queue'}, 'prompts listed');
    ($st, $r) = rpc($keyA, 'prompts/get', { name => 'sales-report', arguments => { site_id => $site, period => 'October' } });
    like($r->{result}{messages}[0]{content}{text} // '', qr/\Q$site\E.*October/s, 'sales-report names the site and period');
    ($st, $r) = rpc($keyA, 'prompts/get', { name => 'fulfilment-queue', arguments => {} });
    is($r->{error}{code}, -32602, 'prompt without its required argument: -32602');
    ($st, $r) = rpc($keyA, 'completion/complete', { ref => { type => 'ref/prompt', name => 'sales-report' }, argument => { name => 'site_id', value => 'site_' } });
    is_deeply([sort @{ $r->{result}{completion}{values} // [] }], [sort map { $_->{id} } @$sitesA, $new], 'completion suggests the workspace\'s site ids');
    ($st, $r) = rpc($keyB, 'completion/complete', { ref => { type => 'ref/prompt', name => 'sales-report' }, argument => { name => 'site_id', value => '' } });
    ok(!grep({ my $x = $_; grep { $_->{id} eq $x } @$sitesA } @{ $r->{result}{completion}{values} // [] }), 'completion never suggests another workspace\'s sites');
    # A prompt or a completion needs the scope of what it reads, like the tool behind it.
    ($st, $r) = rpc($k, 'prompts/get', { name => 'sales-report', arguments => { site_id => $site } });
    is($st, 403, 'sales-report without read:analytics: 403');
    ok(!$r->{result}, '... and no prompt text');
    ($st, $r) = rpc($k, 'completion/complete', { ref => { type => 'ref/prompt', name => 'fulfilment-queue' }, argument => { name => 'site_id', value => '' } });
    is($st, 403, 'completing a prompt argument without the prompt\'s read:orders: 403');
    ok(!$r->{result}, '... and no suggestions');
    my $k2 = ctl('keys', 'create', '--workspace', $wsA, '--scopes', 'read:orders');
    ($st, $r) = rpc($k2, 'completion/complete', { ref => { type => 'ref/resource', uri => 'aly://sites/{site_id}' }, argument => { name => 'site_id', value => '' } });
    is($st, 403, 'completing aly://sites/{site_id} without read:sites: 403');
    ok(!@{ $r->{result}{completion}{values} // [] }, '... and no site ids');
    ($st, $r) = rpc($k2, 'completion/complete', { ref => { type => 'ref/prompt', name => 'fulfilment-queue' }, argument => { name => 'site_id', value => '' } });
    is($st, 200, 'with read:orders, the same prompt completes');
}

# ---- audit ----
{
    my $audit = Alyd::json_decode(ctl('--json', 'audit', '--workspace', $wsA)) // [];
    my %tools = map { $_->{tool} => 1 } @$audit;
    ok($tools{$_}, "audit records $_") for qw(sites.create sites.update products.create products.update products.delete orders.fulfill orders.cancel);
    my ($del) = grep { $_->{tool} eq 'products.delete' } @$audit;
    is_deeply([$del->{object}, $del->{before_version}, $del->{after_version}], [$made->{id}, 2, 0], 'audit: object and versions');
    like($del->{principal}, qr/^key_/, 'audit: the principal');
    is(scalar(grep { $_->{tool} eq 'products.create' && $_->{object} eq $made->{id} } @$audit), 1,
        'audit: an idempotent replay of products.create writes no second record');
    my ($fu) = grep { $_->{tool} eq 'orders.fulfill' && $_->{object} eq $paid->{id} } @$audit;
    is_deeply([$fu->{before_version}, $fu->{after_version}], [$paid->{version}, $paid->{version} + 1], 'audit: fulfil moves the version by one');
    my $auditB = Alyd::json_decode(ctl('--json', 'audit', '--workspace', $wsB)) // [];
    is(scalar @$auditB, 0, 'audit of B shows none of A\'s mutations (B only tried and failed)');
}

# ---- races between workers ----
sub race {
    my (@calls) = @_;
    my @pids;
    my $dir = $srv->dir;
    for my $i (0 .. $#calls) {
        my $pid = fork // die;
        if ($pid == 0) {
            my ($st, $r) = call(@{ $calls[$i] });
            Alyd::spew("$dir/race.$i", $r->{isError} ? 'lost' : 'won');
            POSIX::_exit(0);
        }
        push @pids, $pid;
    }
    waitpid($_, 0) for @pids;
    return map { Alyd::slurp("$dir/race.$_") // 'none' } 0 .. $#calls;
}
{
    my $won_once = 0;
    for my $round (1 .. 8) {
        my $p = ok_call($keyA, 'products.create', { site_id => $site, title => "Race $round", price => 100, sku => "RACE-$round" }, "race $round product");
        my @r = race(map { [$keyA, 'products.update', { site_id => $site, product_id => $p->{id}, price => 200 + $_, expected_version => 1 }] } 1 .. 2);
        $won_once++ if (grep { $_ eq 'won' } @r) == 1 && (grep { $_ eq 'lost' } @r) == 1;
        my $after = ok_call($keyA, 'products.get', { site_id => $site, product_id => $p->{id} }, "race $round result");
        is($after->{version}, 2, "race $round: exactly one update applied (version 2)");
    }
    is($won_once, 8, 'two concurrent updates with expected_version: exactly one wins every time');
    my $fc = 0;
    my @paid = grep { $_->{status} eq 'paid' } @{ ok_call($keyA, 'orders.list', { site_id => $sitesA->[1]{id}, status => 'paid', limit => 100 }, 'paid orders')->{orders} };
    for my $o (@paid[0 .. 5]) {
        next unless $o;
        my @r = race([$keyA, 'orders.fulfill', { order_id => $o->{id}, carrier => 'UPS', tracking_number => 'R1' }], [$keyA, 'orders.cancel', { order_id => $o->{id} }]);
        my $final = ok_call($keyA, 'orders.get', { order_id => $o->{id} }, 'after the race');
        $fc++ if (grep { $_ eq 'won' } @r) == 1
          && ($final->{status} eq 'fulfilled' ? $r[0] eq 'won' : $final->{status} eq 'cancelled' && $r[1] eq 'won');
    }
    is($fc, scalar(grep { defined } @paid[0 .. 5]), 'fulfil racing cancel: exactly one wins, and the order shows the winner');
}

# ---- the customer's question, through the official SDK ----
SKIP: {
    my $nodedir = $ENV{ALY_NODE_DIR} // '';
    my $node = "$nodedir/node_modules/node/bin/node";
    skip 'Node clients not installed (scripts/install-node)', 4 unless -x $node && -d "$nodedir/node_modules/\@modelcontextprotocol/sdk";
    system('cp', Alyd::srcdir() . '/t/interop/sdk-e2e.mjs', "$nodedir/sdk-e2e.mjs") == 0 or die;
    my $k = ctl('keys', 'create', '--workspace', $wsA, '--scopes', 'read:sites,read:content');
    my ($e, $out, $err) = Alyd::run_cmd($node, "$nodedir/sdk-e2e.mjs", $url, $k);
    my $r = Alyd::json_decode((split /\n/, $out)[-1] // '') // {};
    is($e, 0, 'SDK: sites.list then products.list per site ran') or diag("$out $err");
    my $stats = Alyd::json_decode(ctl('--json', 'stats', '--workspace', $wsA)) // {};
    my %want = map { $_->{id} => $_->{products} } @{ $stats->{sites} // [] };
    is_deeply($r->{counts}, \%want, 'SDK: products counted through paging = alyctl stats');
    my ($most) = sort { $want{$b} <=> $want{$a} } keys %want;
    is($r->{most}, $most, "SDK: the site with the most products ($most) is the one alyctl stats shows");
    cmp_ok($r->{pages}, '>', scalar(keys %want), 'SDK: it had to follow next_cursor');
}

is((Alyd::curl($srv->url('/healthz')))[0], 200, 'still serving');
$srv->stop;
done_testing;
