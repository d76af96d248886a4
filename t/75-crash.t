# Crash safety: workers SIGKILLed in the middle of a stream of writes, then
# the whole process group SIGKILLed, lose no write that was answered as
# committed, and the store opens clean afterwards (alyctl reads it, a new
# alyd serves it, and every answered product is there exactly once).
use strict;
use warnings;
use Test::More;
use HTTP::Tiny;
use JSON::PP;
use POSIX ();
use Time::HiRes qw(sleep time);
use Alyd;

Alyd::watchdog(240);

my $srv = Alyd->start(workers => 2, extra => ['rate_limit 1000000/second burst=1000000']);
sub ctl { $srv->ctl(@_) }
my $ws  = ctl('workspace', 'create', 'Crash');
my $key = ctl('keys', 'create', '--workspace', $ws, '--scopes', 'read:sites,write:sites,read:content,write:content');

sub call {
    my ($http, $name, $args) = @_;
    my $r = $http->post($srv->url('/api/mcp'), { content => encode_json({ jsonrpc => '2.0', id => 1, method => 'tools/call',
        params => { name => $name, arguments => $args } }), headers => { 'content-type' => 'application/json',
        accept => 'application/json, text/event-stream', authorization => "Bearer $key" } });
    return $r->{status} == 200 ? (eval { decode_json($r->{content}) } // {}) : {};
}
my $site = call(HTTP::Tiny->new, 'sites.create', { name => 'Crash shop', domain => 'crash.example', currency => 'EUR' })
  ->{result}{structuredContent}{id};
ok($site, 'a site to write into');

# Four writers, each creating products as fast as it can and appending the id
# of every creation answered as committed to its own file.
my $dir = $srv->dir;
my @writers;
for my $w (1 .. 4) {
    my $pid = fork // die;
    if ($pid == 0) {
        open(my $out, '>', "$dir/answered-$w") or POSIX::_exit(1);
        $out->autoflush(1);
        my $http = HTTP::Tiny->new(keep_alive => 1, timeout => 5);
        for my $n (1 .. 100000) {
            my $r = call($http, 'products.create', { site_id => $site, title => "W$w #$n", sku => "W$w-$n", price => $n });
            my $id = $r->{result}{structuredContent}{id};
            print $out "$id\n" if defined $id && !$r->{result}{isError};
        }
        POSIX::_exit(0);
    }
    push @writers, $pid;
}
sub answered { my $n = 0; for (1 .. 4) { my $t = Alyd::slurp("$dir/answered-$_") // ''; $n += () = $t =~ /\n/g } $n }

ok(Alyd::poll_until(20, sub { answered() >= 50 }), 'writes are being answered');
for my $round (1 .. 3) {
    my ($victim) = $srv->worker_pids;
    kill 'KILL', $victim;
    my $before = answered();
    ok(Alyd::poll_until(20, sub { answered() >= $before + 30 }), "worker SIGKILLed mid-write ($round): writes go on");
}
kill 'KILL', -$srv->master_pid;    # the whole process group, master included
ok(Alyd::poll_until(10, sub { $srv->exited }), 'the whole process group SIGKILLed');
$srv->kill_all;
kill 'KILL', @writers;
waitpid($_, 0) for @writers;

my %want;
for my $w (1 .. 4) { $want{$_} = 1 for grep { length } split /\n/, Alyd::slurp("$dir/answered-$w") // '' }
my $n = keys %want;
cmp_ok($n, '>=', 140, "$n creations were answered as committed before the kill");

my $stats = eval { decode_json(ctl('--json', 'stats')) };
ok($stats && $stats->{environments}{store}, 'alyctl reads the store after the crash');

$srv->spawn;
is($srv->wait_ready, undef, 'a new alyd opens the store and serves');
my $http = HTTP::Tiny->new(keep_alive => 1);
my @missing = grep { !call($http, 'products.get', { site_id => $site, product_id => $_ })->{result}{structuredContent} } sort keys %want;
is(scalar @missing, 0, 'every answered creation is in the store') or diag("missing: @missing[0 .. ($#missing < 9 ? $#missing : 9)]");

# No product twice, and the site's count agrees with what the store holds.
my (%seen, $dupes, $cursor, $listed);
do {
    my $r = call($http, 'products.list', { site_id => $site, limit => 100, ($cursor ? (cursor => $cursor) : ()) })->{result}{structuredContent};
    for (@{ $r->{products} // [] }) { $dupes++ if $seen{ $_->{id} }++; $listed++ }
    $cursor = $r->{next_cursor};
} while ($cursor);
ok(!$dupes, 'no product listed twice');
my $count = call($http, 'sites.get', { site_id => $site })->{result}{structuredContent}{product_count};
is($count, $listed, "the site's product_count ($count) matches the products stored");

done_testing;
