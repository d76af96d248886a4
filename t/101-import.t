# alyctl demo seed and alyctl import: deterministic demo data, and JSON-lines
# import that reports every bad line by number and imports nothing then.
use strict;
use warnings;
use Test::More;
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
$srv->stop;
done_testing;
