# alyctl demo seed and alyctl import: deterministic demo data, and JSON-lines
# import that reports every bad line by number and imports nothing then.
use strict;
use warnings;
use Test::More;
use JSON::PP ();
use Alyd;

Alyd::watchdog(120);
my $srv = Alyd->start(workers => 1);
sub ctl { return Alyd::run_cmd(Alyd::alyctl_bin(), '-c', $srv->conf, @_) }
sub ctl_ok { my ($e, $o, $err) = ctl(@_); die "alyctl @_: $err" if $e; chomp $o; return $o }

my $ws = ctl_ok('workspace', 'create', 'Imports');
my $ws2 = ctl_ok('workspace', 'create', 'Demo 1');
my $ws3 = ctl_ok('workspace', 'create', 'Demo 2');

# ---- demo seed: the same seed gives the same data ----
my $d1 = Alyd::json_decode(ctl_ok('--json', 'demo', 'seed', '--workspace', $ws2, '--seed', '9', '--sites', '2', '--products', '10', '--orders', '20', '--days', '7'));
ctl_ok('demo', 'seed', '--workspace', $ws3, '--seed', '9', '--sites', '2', '--products', '10', '--orders', '20', '--days', '7');
is_deeply([@$d1{qw(sites products orders visit_days)}], [2, 10, 20, 14], 'demo seed: the requested sizes');
my $s2 = Alyd::json_decode(ctl_ok('--json', 'stats', '--workspace', $ws2));
my $s3 = Alyd::json_decode(ctl_ok('--json', 'stats', '--workspace', $ws3));
is_deeply([map { [@$_{qw(id products orders)}] } @{ $s2->{sites} }], [map { [@$_{qw(id products orders)}] } @{ $s3->{sites} }],
    'demo seed: the same seed gives the same sites, ids and counts');
my ($e) = ctl('demo', 'seed', '--workspace', 'ws_nope');
isnt($e, 0, 'demo seed into an unknown workspace fails');
($e, my $o, my $err) = ctl('demo', 'seed', '--workspace', $ws2, '--sites', '0');
isnt($e, 0, 'demo seed with 0 sites fails');

# ---- import ----
my $dir = $srv->dir;
my $site = 'site_' . ('A' x 20);
my $prod = 'prod_' . ('B' x 20);
my @good = (
    qq({"type":"site","id":"$site","name":"Imported","domain":"imported.example","currency":"EUR"}),
    qq({"type":"product","site_id":"$site","id":"$prod","title":"Lamp","sku":"L-1","price":2500,"inventory":3,"status":"active"}),
    qq({"type":"order","site_id":"$site","id":"ord_CCCCCCCCCCCCCCCCCCCC","status":"paid","created":"2026-11-01","items":[{"product_id":"$prod","quantity":2,"unit_price":2500}]}),
    qq({"type":"visits","site_id":"$site","date":"2026-11-01","count":120}),
);
my @bad = (
    '{"type":"site","id":"site_short","name":"x","domain":"x.example","currency":"EUR"}',
    'not json at all',
    qq({"type":"product","site_id":"site_ZZZZZZZZZZZZZZZZZZZZ","id":"$prod","title":"x","sku":"y","price":1}),
    qq({"type":"product","site_id":"$site","id":"prod_DDDDDDDDDDDDDDDDDDDD","title":"x","sku":"L-1","price":1}),
    qq({"type":"visits","site_id":"$site","date":"2026-13-40","count":1}),
    '{"type":"refund"}',
    qq({"type":"product","site_id":"$site","id":"prod_EEEEEEEEEEEEEEEEEEEE","title":"x","sku":"z","price":-5}),
);
Alyd::spew("$dir/mixed.jsonl", join("\n", @good[0, 1], $bad[0], $good[2], @bad[1 .. $#bad], $good[3]) . "\n");
($e, $o, $err) = ctl('import', '--workspace', $ws, "$dir/mixed.jsonl");
isnt($e, 0, 'import with bad lines fails');
my @lines = $err =~ /^\Q$dir\E\/mixed\.jsonl:(\d+): /mg;
is_deeply(\@lines, [3, 5, 6, 7, 8, 9, 10], 'every bad line is reported with its number, and only those');
like($err, qr/mixed\.jsonl:7: sku L-1 is already used/, 'a duplicate sku inside the file is caught');
like($err, qr/mixed\.jsonl:9: type must be/, 'unknown type named');
like($err, qr/nothing was imported/, 'says nothing was imported');
my $st = Alyd::json_decode(ctl_ok('--json', 'stats', '--workspace', $ws));
is(scalar @{ $st->{sites} }, 0, 'nothing was partially imported');

Alyd::spew("$dir/good.jsonl", join("\n", @good) . "\n");
my $r = Alyd::json_decode(ctl_ok('--json', 'import', '--workspace', $ws, "$dir/good.jsonl"));
is_deeply([@$r{qw(sites products orders visit_days)}], [1, 1, 1, 1], 'a clean file imports every line');
$st = Alyd::json_decode(ctl_ok('--json', 'stats', '--workspace', $ws));
is_deeply([@{ $st->{sites}[0] }{qw(id products orders)}], [$site, 1, 1], 'imported counts on the site');
($e, $o, $err) = ctl('import', '--workspace', $ws, "$dir/good.jsonl");
isnt($e, 0, 'importing the same ids again fails');
like($err, qr/good\.jsonl:1: site \Q$site\E already exists/, 'and says which line');
($e) = ctl('import', '--workspace', $ws, "$dir/nope.jsonl");
isnt($e, 0, 'a missing file fails');

# ---- every field is held to the rule the tools declare for it ----
# Each line breaks one rule (the rest of it is valid), against the site and
# product imported above; the message names the field and the rule.
my ($f, $g, $h, $nosite) = map { 'site_' . ($_ x 20) } qw(F G H V);
my ($pr, $ps, $pt, $nop) = map { 'prod_' . ($_ x 20) } qw(R S T U);
my $ord = 'ord_' . ('Q' x 20);
my @rules = (
    [qq({"type":"site","id":"site_short","name":"x","domain":"x.example","currency":"EUR"}), qr/^id: must match the pattern/, 'an id of the wrong shape'],
    [qq({"type":"site","id":"$f","name":"Upper","domain":"Shop.Example","currency":"EUR"}), qr/^domain: must match the pattern/, 'a domain sites.create refuses'],
    [qq({"type":"site","id":"$g","name":"Lower","domain":"lower.example","currency":"eur"}), qr/^currency: must match the pattern/, 'a currency sites.create refuses'],
    [qq({"type":"site","id":"$h","domain":"h.example","currency":"EUR"}), qr/^name: is required/, 'a missing required field'],
    [qq({"type":"product","site_id":"$site","id":"$pr","title":"x","sku":"has space"}), qr/^sku: must match the pattern/, 'a sku products.create refuses'],
    [qq({"type":"product","site_id":"$site","id":"$ps","title":"x","sku":"s-1","status":"sold"}), qr/^status: must be one of: draft, active, archived/, 'a status outside the enum'],
    [qq({"type":"product","site_id":"$site","id":"$pt","title":"x","sku":"t-1","tags":["a","a"]}), qr/^tags\[1\]: repeats an earlier item/, 'repeated tags'],
    [qq({"type":"product","site_id":"$site","id":"$prod","title":"Again","sku":"L-2"}), qr/^product \Q$prod\E already exists/, 'a product id that exists'],
    [qq({"type":"order","site_id":"$site","id":"$ord","status":"paid","created":"2026-11-02","items":[{"product_id":"$prod","quantity":0}]}), qr/^items\[0\]\.quantity: must be >= 1/, 'a quantity of 0'],
    [qq({"type":"order","site_id":"$site","id":"$ord","status":"paid","created":"2026-11-02","items":[{"product_id":"$nop","quantity":1}]}), qr/^items\[0\]\.product_id: no product/, 'an item naming no product of the site'],
    [qq({"type":"order","site_id":"$site","id":"$ord","status":"shipped","created":"2026-11-02","items":[{"product_id":"$prod","quantity":1}]}), qr/^status: must be one of: pending, paid, fulfilled, cancelled/, 'an order status outside the enum'],
    [qq({"type":"order","site_id":"$site","id":"$ord","status":"paid","created":"2026-11-02","items":[]}), qr/^items: must have at least 1 items/, 'an order without items'],
    [qq({"type":"visits","site_id":"$site","date":"1969-12-31","count":1}), qr/^date: must be a date from 1970-01-01 on/, 'a day before the epoch'],
    [qq({"type":"visits","site_id":"$site","date":"2026-11-02","count":-1}), qr/^count: must be >= 0/, 'a negative count'],
    [qq({"type":"visits","site_id":"$nosite","date":"2026-11-02","count":1}), qr/^site_id: \S+ is not a site of this workspace/, 'a site that does not exist'],
    [qq({"site_id":"$site"}), qr/^type must be site, product, order or visits$/, 'no type'],
    [qq({"type":"refund"}), qr/^type must be site, product, order or visits, not "refund"$/, 'an unknown type, named'],
);
Alyd::spew("$dir/rules.jsonl", join("\n", map { $_->[0] } @rules) . "\n");
($e, $o, $err) = ctl('import', '--workspace', $ws, "$dir/rules.jsonl");
isnt($e, 0, 'import of lines that each break one rule fails');
my %why = $err =~ /^\Q$dir\E\/rules\.jsonl:(\d+): (.*)$/mg;
is(scalar(keys %why), scalar(@rules), 'every rule-breaking line is reported');
like($why{ $_ + 1 } // '', $rules[$_][1], "import refuses $rules[$_][2]") for 0 .. $#rules;
$st = Alyd::json_decode(ctl_ok('--json', 'stats', '--workspace', $ws));
is_deeply([@{ $st->{sites}[0] }{qw(id products orders)}], [$site, 1, 1], 'and changes nothing');

# The fields the tools accept, import accepts too, with the same meaning: tags arrive, description may be empty.
my $tagged = 'prod_' . ('W' x 20);
Alyd::spew("$dir/tags.jsonl", qq({"type":"product","site_id":"$site","id":"$tagged","title":"Mug","sku":"M-1","price":900,"description":"","tags":["gift","eco"]}) . "\n");
$r = Alyd::json_decode(ctl_ok('--json', 'import', '--workspace', $ws, "$dir/tags.jsonl"));
is($r->{products}, 1, 'a product with tags and an empty description imports');
my $key = ctl_ok('keys', 'create', '--workspace', $ws, '--scopes', 'read:content');
my (undef, undef, $body) = Alyd::curl('-X', 'POST', '-H', "Authorization: Bearer $key", '-H', 'Content-Type: application/json',
    '-H', 'Accept: application/json', '--data-binary',
    qq({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"products.get","arguments":{"site_id":"$site","product_id":"$tagged"}}}),
    $srv->url('/api/mcp'));
my $p = (Alyd::json_decode($body) // {})->{result}{structuredContent} // {};
is_deeply([@$p{qw(sku status description)}, $p->{tags}, $p->{price}{amount}], ['M-1', 'draft', '', ['gift', 'eco'], 900],
    'products.get shows the imported product as imported');

# ---- an imported order's status comes with the times and fulfilment the tools would have left ----
# A fulfilled order needs its carrier and tracking_number (orders.get shows them, an orders.fulfill retry
# must match them); a cancelled one was cancelled, not paid; the line gives a day, so every step is dated then.
my $okey = ctl_ok('keys', 'create', '--workspace', $ws, '--scopes', 'read:orders,write:orders');
my $call = sub {
    my ($name, $args) = @_;
    my (undef, undef, $b) = Alyd::curl('-X', 'POST', '-H', "Authorization: Bearer $okey", '-H', 'Content-Type: application/json',
        '-H', 'Accept: application/json', '--data-binary',
        JSON::PP->new->canonical->encode({ jsonrpc => '2.0', id => 1, method => 'tools/call', params => { name => $name, arguments => $args } }),
        $srv->url('/api/mcp'));
    return (Alyd::json_decode($b) // {})->{result} // {};
};
my ($of, $oc, $op, $ox) = map { 'ord_' . ($_ x 20) } qw(J K M N);
my $items = qq("items":[{"product_id":"$prod","quantity":1,"unit_price":2500}]);
my @state_bad = (
    [qq({"type":"order","site_id":"$site","id":"$ox","status":"fulfilled","created":"2026-11-03",$items}), qr/^carrier, tracking_number: a fulfilled order needs both/, 'a fulfilled order without carrier and tracking_number'],
    [qq({"type":"order","site_id":"$site","id":"$ox","status":"fulfilled","created":"2026-11-03","carrier":"DHL",$items}), qr/^carrier, tracking_number: a fulfilled order needs both/, 'a fulfilled order without tracking_number'],
    [qq({"type":"order","site_id":"$site","id":"$ox","status":"paid","created":"2026-11-03","carrier":"DHL","tracking_number":"T1",$items}), qr/^carrier, tracking_number: only a fulfilled order has them, not a paid one/, 'a paid order with a carrier'],
    [qq({"type":"order","site_id":"$site","id":"$ox","status":"fulfilled","created":"2026-11-03","carrier":"DHL","tracking_number":"T 1;",$items}), qr/^tracking_number: must match the pattern/, 'a tracking_number orders.fulfill refuses'],
);
Alyd::spew("$dir/state-bad.jsonl", join("\n", map { $_->[0] } @state_bad) . "\n");
($e, $o, $err) = ctl('import', '--workspace', $ws, "$dir/state-bad.jsonl");
my %swhy = $err =~ /^\Q$dir\E\/state-bad\.jsonl:(\d+): (.*)$/mg;
like($swhy{ $_ + 1 } // '', $state_bad[$_][1], "import refuses $state_bad[$_][2]") for 0 .. $#state_bad;

Alyd::spew("$dir/states.jsonl", join("\n",
    qq({"type":"order","site_id":"$site","id":"$of","status":"fulfilled","created":"2026-11-03","carrier":"La Poste","tracking_number":"TRK-42",$items}),
    qq({"type":"order","site_id":"$site","id":"$oc","status":"cancelled","created":"2026-11-04",$items}),
    qq({"type":"order","site_id":"$site","id":"$op","status":"paid","created":"2026-11-05",$items})) . "\n");
$r = Alyd::json_decode(ctl_ok('--json', 'import', '--workspace', $ws, "$dir/states.jsonl"));
is($r->{orders}, 3, 'fulfilled, cancelled and paid orders import');

my $fo = $call->('orders.get', { order_id => $of })->{structuredContent} // {};
is_deeply($fo->{fulfillment}, { carrier => 'La Poste', tracking_number => 'TRK-42', fulfilled_at => '2026-11-03T12:00:00.000Z' },
    'orders.get: an imported fulfilled order shows its fulfilment');
is_deeply([@$fo{qw(status paid_at cancelled_at)}], ['fulfilled', '2026-11-03T12:00:00.000Z', undef], '... and was paid, not cancelled');
my $again = $call->('orders.fulfill', { order_id => $of, carrier => 'La Poste', tracking_number => 'TRK-42' });
ok(!$again->{isError}, 'orders.fulfill again with the same values: unchanged, not an error') or diag(JSON::PP->new->encode($again));
is(($again->{structuredContent} // {})->{version}, $fo->{version}, '... at the same version');
my $other = $call->('orders.fulfill', { order_id => $of, carrier => 'DHL', tracking_number => 'X1' });
like(($other->{content} // [{}])->[0]{text} // '', qr/already fulfilled with La Poste TRK-42; nothing was changed/,
    '... with other values: refused, naming the fulfilment it has');

my $c = $call->('orders.get', { order_id => $oc })->{structuredContent} // {};
is_deeply([@$c{qw(status paid_at cancelled_at fulfillment)}], ['cancelled', undef, '2026-11-04T12:00:00.000Z', undef],
    'orders.get: an imported cancelled order was cancelled that day and never paid');
my $pd = $call->('orders.fulfill', { order_id => $op, carrier => 'UPS', tracking_number => 'U-1' })->{structuredContent} // {};
is_deeply([$pd->{status}, $pd->{paid_at}, ($pd->{fulfillment} // {})->{carrier}], ['fulfilled', '2026-11-05T12:00:00.000Z', 'UPS'],
    'an imported paid order was paid that day, and orders.fulfill fulfils it');
$srv->stop;
done_testing;
