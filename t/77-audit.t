# The audit trail keeps audit_retention: each mutation writes its record and
# retires up to two records older than the retention, oldest first, in the
# same transaction; with no old records nothing else is touched.
use strict;
use warnings;
use Test::More;
use HTTP::Tiny;
use JSON::PP;
use Time::HiRes qw(sleep);
use Alyd;

Alyd::watchdog(120);
my $srv = Alyd->start(workers => 1, extra => ['audit_retention 3s', 'rate_limit 1000000/second burst=1000000']);
sub ctl { $srv->ctl(@_) }
my $ws  = ctl('workspace', 'create', 'Audit');
my $key = ctl('keys', 'create', '--workspace', $ws, '--scopes', 'read:sites,write:sites');
my $http = HTTP::Tiny->new(keep_alive => 1);
my $n = 0;
sub create_site {
    $n++;
    my $r = $http->post($srv->url('/api/mcp'), { content => encode_json({ jsonrpc => '2.0', id => 1, method => 'tools/call',
        params => { name => 'sites.create', arguments => { name => "Shop $n", domain => "shop$n.example", currency => 'EUR' } } }),
        headers => { 'content-type' => 'application/json', accept => 'application/json, text/event-stream', authorization => "Bearer $key" } });
    my $j = eval { decode_json($r->{content}) } // {};
    return $j->{result}{structuredContent}{id};
}
sub audit { @{ Alyd::json_decode(ctl('--json', 'audit', '--workspace', $ws)) // [] } }

ok(create_site(), "mutation $_ answered") for 1 .. 5;
is(scalar(audit()), 5, 'five mutations, five audit records');
sleep 3.5;    # all five are past the retention now
ok(create_site(), 'a mutation after the retention');
is(scalar(audit()), 4, 'its record written, the two oldest retired: 4');
ok(create_site(), 'another');
is(scalar(audit()), 3, 'one more in, two more out: 3');
ok(create_site(), 'and another');
my @left = audit();
is(scalar @left, 3, 'the last old record retired with it: only the three recent ones remain');
is(scalar(grep { $_->{object} } @left), 3, 'each remaining record names its object');
ok(create_site(), 'a fourth recent mutation');
is(scalar(audit()), 4, 'nothing recent is retired: 4');

done_testing;
