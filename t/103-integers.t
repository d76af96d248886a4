# Integers written as reals.  JSON Schema counts 1999.0 as an integer, so the
# tools must take it as 1999: a price, an inventory, an expected_version or a
# page size sent as an integral real means that integer, never 0 or the
# default.  A real with a fraction (1999.5), or one no integer can hold
# (1e300), is refused with a clear error and nothing is written.  The
# arguments are written as raw JSON text, so the reals reach alyd as reals.
use strict;
use warnings;
use Test::More;
use JSON::PP ();
use Alyd;

Alyd::watchdog(120);
my $srv = Alyd->start(workers => 1, extra => ['rate_limit 100000/second burst=100000']);
my $url = $srv->url('/api/mcp');

sub ctl { $srv->ctl(@_) }
my $ws  = ctl('workspace', 'create', 'Reals');
my $key = ctl('keys', 'create', '--workspace', $ws, '--scopes', 'read:sites,write:sites,read:content,write:content');
my $id  = 0;

# call($tool, $raw_arguments_json) -> (HTTP status, result or error hash)
sub call {
    my ($tool, $args) = @_;
    my $body = sprintf('{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"%s","arguments":%s}}', ++$id, $tool, $args);
    my ($st, $hdr, $out) = Alyd::curl('-X', 'POST', '-H', "Authorization: Bearer $key", '-H', 'Content-Type: application/json',
        '-H', 'Accept: application/json', '--data-binary', $body, $url);
    my $r = Alyd::json_decode($out) // {};
    return ($st, $r->{result} // $r->{error} // {});
}

sub ok_call {
    my ($tool, $args, $name) = @_;
    my ($st, $r) = call($tool, $args);
    ok($st == 200 && !$r->{isError} && $r->{structuredContent}, "$tool: $name") or diag(JSON::PP->new->encode($r));
    return $r->{structuredContent} // {};
}

sub err_call {
    my ($tool, $args, $re, $name) = @_;
    my ($st, $r) = call($tool, $args);
    ok($st == 200 && $r->{isError}, "$tool: $name is refused");
    like($r->{content}[0]{text} // '', $re, "$tool: $name says why");
}

my $site = ok_call('sites.create', '{"name":"Reals","domain":"reals.example","currency":"EUR"}', 'a site');
my $sid  = $site->{id} // '';

# ---- price and inventory ----
my $p = ok_call('products.create', qq({"site_id":"$sid","title":"Mug","sku":"M-1","price":1999.0,"inventory":5.0}), 'price 1999.0');
is($p->{price}{amount}, 1999, 'products.create: price 1999.0 costs 1999');
is($p->{inventory}, 5, 'products.create: inventory 5.0 is 5');
my $pid = $p->{id} // '';
is(ok_call('products.get', qq({"site_id":"$sid","product_id":"$pid"}), 'the product')->{price}{amount}, 1999,
    'products.get: the stored price is 1999');
my $big = ok_call('products.create', qq({"site_id":"$sid","title":"Car","sku":"C-1","price":1e11}), 'price 1e11 (the maximum)');
is($big->{price}{amount}, 100000000000, 'products.create: 1e11 is 100000000000');
my $zero = ok_call('products.create', qq({"site_id":"$sid","title":"Free","sku":"F-1","price":-0.0}), 'price -0.0');
is($zero->{price}{amount}, 0, 'products.create: -0.0 is 0');
err_call('products.create', qq({"site_id":"$sid","title":"Half","sku":"H-1","price":1999.5}), qr/price: must be of type integer/,
    'price 1999.5');
err_call('products.create', qq({"site_id":"$sid","title":"Huge","sku":"H-2","price":1e300}), qr/price: must be of type integer/,
    'price 1e300');
err_call('products.create', qq({"site_id":"$sid","title":"Over","sku":"H-3","price":1e12}), qr/price: must be <= 1e\+11/,
    'price 1e12 (over the maximum)');
is(ok_call('sites.get', qq({"site_id":"$sid"}), 'counts')->{product_count}, 3, 'the refused products were not written');

# ---- expected_version ----
ok_call('products.update', qq({"site_id":"$sid","product_id":"$pid","price":2000}), 'to version 2');
ok_call('products.update', qq({"site_id":"$sid","product_id":"$pid","price":2001}), 'to version 3');
err_call('products.update', qq({"site_id":"$sid","product_id":"$pid","price":1,"expected_version":2.0}),
    qr/expected_version: the product is at version 3, not 2; nothing was written/, 'expected_version 2.0 at version 3');
my $u = ok_call('products.update', qq({"site_id":"$sid","product_id":"$pid","price":2500.0,"expected_version":3.0}),
    'expected_version 3.0 at version 3');
is($u->{version}, 4, 'products.update: expected_version 3.0 behaves as 3');
is($u->{price}{amount}, 2500, 'products.update: price 2500.0 is 2500');
err_call('products.update', qq({"site_id":"$sid","product_id":"$pid","price":1,"expected_version":4.5}),
    qr/expected_version: must be of type integer/, 'expected_version 4.5');
err_call('products.delete', qq({"site_id":"$sid","product_id":"$pid","expected_version":3.0}),
    qr/expected_version: the product is at version 4, not 3/, 'delete with expected_version 3.0 at version 4');
is(ok_call('products.get', qq({"site_id":"$sid","product_id":"$pid"}), 'after the refusals')->{price}{amount}, 2500,
    'the refused calls changed nothing');
is(ok_call('sites.update', qq({"site_id":"$sid","name":"Renamed","expected_version":1.0}), 'site expected_version 1.0')->{version}, 2,
    'sites.update: expected_version 1.0 behaves as 1');

# ---- a page size ----
my $page = ok_call('products.list', qq({"site_id":"$sid","limit":2.0}), 'limit 2.0');
is(scalar @{ $page->{products} // [] }, 2, 'products.list: limit 2.0 gives pages of 2');
ok($page->{next_cursor}, 'products.list: and a cursor for the rest');
err_call('products.list', qq({"site_id":"$sid","limit":2.5}), qr/limit: must be of type integer/, 'limit 2.5');

is((Alyd::curl($srv->url('/healthz')))[0], 200, 'still serving');
done_testing();
