# Text is limited in characters and stored in bytes.  Every text argument
# of the workspace tools, at the longest the schema allows, in characters of
# 2, 3 and 4 UTF-8 bytes, must be stored whole: the call succeeds, get
# returns exactly what was sent, and lists (and analytics) show it.  One
# character more is refused by the schema with nothing written.
use strict;
use warnings;
use utf8;
use Test::More;
use JSON::PP ();
use Alyd;

Alyd::watchdog(180);
my $srv = Alyd->start(workers => 1, extra => ['rate_limit 100000/second burst=100000']);
my $url = $srv->url('/api/mcp');

sub ctl { $srv->ctl(@_) }
my $ws  = ctl('workspace', 'create', 'Texts');
my $key = ctl('keys', 'create', '--workspace', $ws, '--scopes',
    'read:sites,write:sites,read:content,write:content,read:orders,write:orders,read:analytics');

binmode(Test::More->builder->$_, ':encoding(UTF-8)') for qw(output failure_output todo_output);
my $json = JSON::PP->new->utf8->canonical;
my $id   = 0;

# call($tool, $args) -> (HTTP status, result or error hash)
sub call {
    my ($tool, $args) = @_;
    my ($st, $hdr, $body) = Alyd::curl('-X', 'POST', '-H', "Authorization: Bearer $key", '-H', 'Content-Type: application/json',
        '-H', 'Accept: application/json', '--data-binary',
        $json->encode({ jsonrpc => '2.0', id => ++$id, method => 'tools/call', params => { name => $tool, arguments => $args } }),
        $url);
    my $r = eval { $json->decode($body) } // {};
    return ($st, $r->{result} // $r->{error} // {});
}

sub ok_call {
    my ($tool, $args, $name) = @_;
    my ($st, $r) = call($tool, $args);
    ok($st == 200 && !$r->{isError} && $r->{structuredContent}, "$tool: $name") or diag(substr($json->encode($r), 0, 300));
    return $r->{structuredContent} // {};
}

sub err_call {
    my ($tool, $args, $re, $name) = @_;
    my ($st, $r) = call($tool, $args);
    ok($st == 200 && $r->{isError}, "$tool: $name is refused");
    like($r->{content}[0]{text} // '', $re, "$tool: $name says why");
}

my $emoji = "\x{1F600}";                     # 4 bytes in UTF-8
my $euro  = "\x{20AC}";                      # 3 bytes
my $e     = "\x{E9}";                        # 2 bytes
my $jp    = '日本製の手作り陶器マグカップ' x 5; # 70 characters, 3 bytes each
is(length $jp, 70, 'the Japanese title is 70 characters');

# ---- sites: a 127-emoji name ----
my $name = $emoji x 127;
my $site = ok_call('sites.create', { name => $name, domain => 'emoji.example', currency => 'JPY' }, '127-emoji name');
is($site->{name}, $name, 'sites.create: answers the whole name');
my $sid = $site->{id} // '';
is(ok_call('sites.get', { site_id => $sid }, 'the emoji site')->{name}, $name, 'sites.get: the exact name');
my ($listed) = grep { ($_->{id} // '') eq $sid } @{ ok_call('sites.list', {}, 'lists the emoji site')->{sites} // [] };
is($listed && $listed->{name}, $name, 'sites.list: shows it with the exact name');
my $name2 = $euro x 127;
is(ok_call('sites.update', { site_id => $sid, name => $name2 }, '127-euro name')->{name}, $name2, 'sites.update: the whole name');
is(ok_call('sites.get', { site_id => $sid }, 'after the rename')->{name}, $name2, 'sites.get: the exact new name');
err_call('sites.create', { name => $emoji x 128, domain => 'long.example', currency => 'EUR' }, qr/name: must be at most 127 characters/,
    'a 128-character name');
is(scalar @{ ok_call('sites.list', {}, 'after the refusal')->{sites} // [] }, 1, 'the refused site was not written');

# ---- products: title, description, tags at their limits (in a site of its own, so each part stands alone) ----
$sid = ok_call('sites.create', { name => 'Ceramics', domain => 'ceramics.example', currency => 'JPY' }, 'a plain site')->{id} // '';
my @tags = map { ($emoji x 31) . chr(0x1F601 + $_) } 0 .. 9;
my %jp_args = (site_id => $sid, title => $jp, sku => 'JP-1', price => 1500, description => $euro x 2000, tags => \@tags);
my $p = ok_call('products.create', \%jp_args, '70-character Japanese title, 2000-euro description, 10 tags of 32 emoji');
my $pid = $p->{id} // '';
my $got = ok_call('products.get', { site_id => $sid, product_id => $pid }, 'the Japanese product');
is($got->{title}, $jp, 'products.get: the exact title');
is($got->{description}, $euro x 2000, 'products.get: the exact description');
is_deeply($got->{tags}, \@tags, 'products.get: the exact tags');
my $euros = ok_call('products.create', { site_id => $sid, title => $euro x 200, sku => 'EUR-1', price => 1 }, '200-euro title');
is(ok_call('products.get', { site_id => $sid, product_id => $euros->{id} // '' }, 'the euro product')->{title}, $euro x 200,
    'products.get: 200 euro signs');
my $four = ok_call('products.create', { site_id => $sid, title => $emoji x 200, sku => 'EMO-1', price => 1 }, '200-emoji title');
is($four->{title}, $emoji x 200, 'products.create: 200 emoji answered whole');
my $upd = ok_call('products.update', { site_id => $sid, product_id => $four->{id} // '', title => $e x 200, tags => [$e x 32] },
    'title of 200 e-acute');
is($upd->{title}, $e x 200, 'products.update: the whole title');
is(ok_call('products.get', { site_id => $sid, product_id => $four->{id} // '' }, 'after the update')->{title}, $e x 200,
    'products.get: the exact updated title');
my %titles = map { ($_->{id} // '') => $_->{title} } @{ ok_call('products.list', { site_id => $sid }, 'all products')->{products} // [] };
is_deeply(\%titles, { $pid => $jp, $euros->{id} => $euro x 200, $four->{id} => $e x 200 }, 'products.list: every title, exact');
my $found = ok_call('products.list', { site_id => $sid, query => '陶器' }, 'query in Japanese')->{products} // [];
is_deeply([map { $_->{id} } @$found], [$pid], 'products.list: a Japanese query finds the Japanese product');
err_call('products.create', { site_id => $sid, title => $euro x 201, sku => 'EUR-2', price => 1 }, qr/title: must be at most 200 characters/,
    'a 201-character title');
is(ok_call('sites.get', { site_id => $sid }, 'counts')->{product_count}, 3, 'the refused product was not written');

# ---- orders: an imported order of the Japanese product, fulfilled by a 63-character carrier ----
my $oid  = 'ord_' . ('J' x 20);
my $file = $srv->dir . '/order.jsonl';
Alyd::spew($file, qq({"type":"order","site_id":"$sid","id":"$oid","status":"paid","created":"2026-11-01",)
      . qq("items":[{"product_id":"$pid","quantity":2,"unit_price":1500}]}\n));
ctl('import', '--workspace', $ws, $file);
my $o = ok_call('orders.get', { order_id => $oid }, 'the imported order');
is($o->{line_items}[0]{title}, $jp, 'orders.get: the line item keeps the whole title');
my $top = ok_call('analytics.summary', { site_id => $sid, from => '2026-11-01', to => '2026-11-01' }, 'the day of the order');
is($top->{top_products}[0]{title}, $jp, 'analytics.summary: the top product with its whole title');
my $carrier = $e x 63;
my $f = ok_call('orders.fulfill', { order_id => $oid, carrier => $carrier, tracking_number => 'JP 0001' }, '63 e-acute carrier');
is($f->{fulfillment}{carrier}, $carrier, 'orders.fulfill: answers the whole carrier');
is(ok_call('orders.get', { order_id => $oid }, 'after fulfilment')->{fulfillment}{carrier}, $carrier, 'orders.get: the exact carrier');
my ($lo) = grep { ($_->{id} // '') eq $oid } @{ ok_call('orders.list', { site_id => $sid }, 'the orders')->{orders} // [] };
is($lo && $lo->{fulfillment}{carrier}, $carrier, 'orders.list: shows the exact carrier');
ok_call('orders.fulfill', { order_id => $oid, carrier => $carrier, tracking_number => 'JP 0001' }, 'the same fulfilment again');
err_call('orders.fulfill', { order_id => $oid, carrier => $e x 64, tracking_number => 'JP 0001' }, qr/carrier: must be at most 63/,
    'a 64-character carrier');

# ---- a cancellation's reason at its limit, in 4-byte characters ----
{
    my $cid = 'ord_' . ('K' x 20);
    Alyd::spew($file, qq({"type":"order","site_id":"$sid","id":"$cid","status":"paid","created":"2026-11-01",)
          . qq("items":[{"product_id":"$pid","quantity":1,"unit_price":1500}]}\n));
    ctl('import', '--workspace', $ws, $file);
    my $emoji = "\x{1F600}";
    err_call('orders.cancel', { order_id => $cid, reason => $emoji x 501 }, qr/reason: must be at most 500 characters/,
        'a 501-character reason');
    is(ok_call('orders.get', { order_id => $cid }, 'the refused cancel')->{status}, 'paid', 'the refused cancel changed nothing');
    my $c = ok_call('orders.cancel', { order_id => $cid, reason => $emoji x 500 }, '500 four-byte characters');
    is($c->{cancel_reason}, $emoji x 500, 'orders.cancel: the whole reason kept');
    is(ok_call('orders.get', { order_id => $cid }, 'after')->{cancel_reason}, $emoji x 500, 'orders.get: the exact reason');
}

unlike(Alyd::slurp($srv->error_log) // '', qr/tool store error|could not be built/, 'no store error was logged');
is((Alyd::curl($srv->url('/healthz')))[0], 200, 'still serving');
done_testing();
