# "store postgresql://postgres@NAME:PORT/DB": the host name is looked up by
# alyd anew for every connection, within store_timeout, and handed to libpq
# as hostaddr; libpq's own getaddrinfo would stop the worker's loop for as
# long as the DNS server takes.  alyd and alyctl run in a mount namespace of
# their own whose /etc/resolv.conf names a DNS server of this test
# (t/lib/slowdns.py) that sits on the A query for as long as the test says.
# While it does and PostgreSQL has dropped alyd's connection, reads are
# served from the replica and writes refused ("the store is unavailable")
# at once rather than after the DNS delay, the outage and the unanswered
# lookup are logged, and a single lookup is in flight; once the answer comes
# the same worker writes again and logs the recovery.  alyctl, one-shot,
# fails within store_timeout saying why.  Shutting down with a lookup in
# flight is prompt and clean (no sanitizer report).  A list of hosts whose
# first name the DNS server sits on: that name is left out after half of
# store_timeout and the next host is connected to.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use Alyd;
use Cluster;
use SlowDNS;

Cluster::need_engines(redis => 0);
if (my $why = SlowDNS->unavailable) { plan skip_all => $why }
Alyd::watchdog(180);

my $S = $Alyd::SCALE;
my $DELAY = 4 * $S;          # how long the DNS server sits on an A query while slow
my $BOUND = 1.5 * $S;        # longest a request may take meanwhile (without the fix: the DNS delay)
my $TIMEOUT = int(400 * $S); # store_timeout, ms
my $NAME = 'pg.slow.test';

my $dns = eval { SlowDNS->start(name => $NAME, wait => $DELAY + 5, lifetime => 180 * $S) };
ok($dns, 'the DNS server is up') or BAIL_OUT($@);
unlike(Alyd::slurp('/etc/hosts') // '', qr/\Q$NAME\E/i, "$NAME is not in /etc/hosts");
sub a_queries { $dns->queries(1, @_) }

# alyd and alyctl in their own mount namespace, asking that server.
my $wrap = $dns->wrapper('alyd', Alyd::alyd_bin());
$ENV{ALYCTL} = $dns->wrapper('alyctl', Alyd::alyctl_bin());    # alyctl init and every ->ctl reach it by name too

my $pg = start_postgres();
my $t_start = time;
my $c = Cluster->hosts(1, workers => 1, volatile => 'lmdb', pg => $pg, bin => $wrap,
    store_url => "postgresql://postgres\@$NAME:" . $pg->port . '/alyd', extra => ["store_timeout ${TIMEOUT}ms"]);
my $h = $c->host(0);
my $ws = $h->ctl('workspace', 'create', 'DNS');
my $key = $h->ctl('keys', 'create', '--workspace', $ws, '--scopes', 'read:sites,write:sites');

my $n = 0;
sub timed { my $t0 = time; my ($st, $r) = $_[0] eq 'w' ? create() : list(); return { status => $st, r => $r, secs => time - $t0 } }
sub create { $n++; return mcp_call($h->port, $key, 'sites.create', { name => "s$n", domain => "s$n.example", currency => 'EUR' }) }
sub list { return mcp_call($h->port, $key, 'sites.list', {}) }
sub ok_result { my ($st, $r) = @_; return $st == 200 && ref $r eq 'HASH' && !$r->{isError} && $r->{structuredContent} }
sub text_of { my ($r) = @_; return ref $r eq 'HASH' ? $r->{content}[0]{text} // $r->{message} // '' : '' }
sub backends { $pg->psql(q{SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'alyd'}) }

# ---- the DNS answers at once: connected through the name ----
ok(ok_result(create()), 'DNS quick: a write (sites.create) goes through PostgreSQL');
ok(a_queries($t_start) >= 1, "alyd asked the test's DNS server for $NAME (the namespace took)");
is($pg->psql(q{SELECT count(*) > 0 FROM pg_stat_activity WHERE application_name = 'alyd' AND client_addr = '127.0.0.1'}), 't',
    '... and is connected to PostgreSQL at the address it answered');
my @pids = ($h->master_pid, sort $h->worker_pids);

# ---- the DNS sits on the answer; PostgreSQL drops the connection: the reconnect must not wait for it ----
$dns->delay($DELAY);
my $t_slow = time;
cmp_ok(backends(), '>=', 1, "PostgreSQL drops alyd's connection");
my $w = timed('w');
is($w->{status}, 503, 'DNS slow: a write is refused with 503');
is(text_of($w->{r}), 'the store is unavailable; try again shortly', '... saying the store is unavailable');
cmp_ok($w->{secs}, '<', $BOUND, sprintf('... at once (%.2f s), not after the DNS delay (%.0f s)', $w->{secs}, $DELAY));
my $rd = timed('r');
ok(ok_result($rd->{status}, $rd->{r}), 'DNS slow: a read is served from the replica');
cmp_ok($rd->{secs}, '<', $BOUND, sprintf('... at once (%.2f s)', $rd->{secs}));
my (%st, @secs);
while (@secs < 6 || time < $t_slow + $DELAY / 2) {
    my $x = timed(@secs % 2 ? 'r' : 'w');
    $st{ (@secs % 2 ? 'read ' : 'write ') . $x->{status} }++;
    push @secs, $x->{secs};
    sleep 0.2;
}
is_deeply([sort keys %st], ['read 200', 'write 503'], 'meanwhile every read is served and every write refused')
  or diag(join ' ', %st);
my ($slowest) = sort { $b <=> $a } @secs;
cmp_ok($slowest, '<', $BOUND, sprintf('%d requests meanwhile, each at once (slowest %.2f s)', scalar @secs, $slowest));
ok($h->wait_log(qr/PostgreSQL is unreachable: .*writes are refused, reads use the local replica/), 'the outage is logged');
ok($h->wait_log(qr/resolving \Q$NAME\E: no answer within store_timeout/), '... and the unanswered lookup, naming the name');
is(a_queries($t_slow), 1, 'one lookup in flight, not one per attempt');

# alyctl, one-shot, through the same slow DNS server: fails within store_timeout, saying why.
{
    my $t0 = time;
    my ($exit, undef, $err) = Alyd::run_cmd($ENV{ALYCTL}, '-c', $h->conf, 'workspace', 'create', 'Other');
    my $took = time - $t0;
    isnt($exit, 0, 'alyctl: a write fails while the lookup is unanswered');
    like($err, qr/resolving \Q$NAME\E: no answer within store_timeout/, '... saying so');
    cmp_ok($took, '<', $BOUND + 1 * $S, sprintf('... within store_timeout (%.2f s), not after the DNS delay', $took));
}

# ---- the answer comes: the same worker writes again ----
$dns->delay(0);
ok(Alyd::poll_until($DELAY + 10 * $S, sub { ok_result(create()) }, 0.2), 'the late answer taken: writes go through again');
my $back = time - $t_slow;
ok($h->wait_log(qr/PostgreSQL is reachable again/), 'the recovery is logged');
is_deeply([$h->master_pid, sort $h->worker_pids], \@pids, 'the same master and worker');
{
    my ($exit, undef, $err) = Alyd::run_cmd($ENV{ALYCTL}, '-c', $h->conf, 'workspace', 'create', 'Other');
    is($exit, 0, 'alyctl: a write works again') or diag($err);
}

# ---- a list of hosts: a name the DNS server sits on is left out, and the next host is connected to ----
# libpq would resolve the list itself, blocking, name by name, for as long as the DNS server takes.
{
    $dns->delay($DELAY);
    my $t0 = time;
    my $list = "postgresql://postgres\@$NAME:" . $pg->port . ',127.0.0.1:' . $pg->port . '/alyd';
    my $c2 = Cluster->hosts(1, workers => 1, volatile => 'lmdb', pg => $pg, bin => $wrap, pepper_from => $c->pepper,
        store_url => $list, extra => ["store_timeout ${TIMEOUT}ms"]);
    my $h2 = $c2->host(0);
    my $started = time - $t0;
    cmp_ok($started, '<', $DELAY, sprintf('a host list (%s, then 127.0.0.1): alyctl init and the start took %.2f s, '
          . 'not the DNS delay (%.0f s)', $NAME, $started, $DELAY));
    my $t1 = time;
    my ($st, $r) = mcp_call($h2->port, $key, 'sites.create', { name => 'listed', domain => 'listed.example', currency => 'EUR' });
    ok(ok_result($st, $r), 'a host list: a write goes through the next host') or diag("$st " . text_of($r));
    cmp_ok(time - $t1, '<', $BOUND, sprintf('... at once (%.2f s)', time - $t1));
    ok(a_queries($t0) >= 1, "... and $NAME was asked for (then left out)");
    my $left_out = qr/resolving \Q$NAME\E: no answer within store_timeout; connecting to the other hosts/;
    ok($h2->wait_log($left_out), 'the name left out is logged');
    # Connected, the name's lookup (still unanswered) is dropped: the next connection asks afresh, and now the DNS
    # server answers at once, so the name is not left out again (a kept lookup would still be unanswered).
    my $lines = () = ($h2->error_log_text // '') =~ /$left_out/g;
    $dns->delay(0);
    my $t_re = time;
    cmp_ok(backends(), '>=', 1, 'PostgreSQL drops the connections');
    ok(poll_until(10 * $S, sub { ok_result(mcp_call($h2->port, $key, 'sites.create', { name => 'again', domain => 'again.example',
        currency => 'EUR' })) }, 0.2), 'a host list: a write after the drop goes through');
    cmp_ok(time - $t_re, '<', $DELAY, '... before the first lookup would have been answered');
    my $after = () = ($h2->error_log_text // '') =~ /$left_out/g;
    is($after, $lines, '... through a new lookup of the name, not the one left unanswered (the name not left out again)');
    my @pids2 = ($h2->master_pid, $h2->worker_pids);
    ok($h2->stop, 'that alyd stops');
    unlike(($h2->error_log_text // '') . ($h2->stderr_text // ''), qr/AddressSanitizer|LeakSanitizer|runtime error/,
        '... without a sanitizer report in its logs');
    my ($san) = ($ENV{ASAN_OPTIONS} // '') =~ /(?:^|:)log_path=([^:]+)/;
    SKIP: {
        skip 'sanitizer reports go to the logs (no log_path)', 1 unless $san;
        is_deeply([grep { -e "$san.$_" } @pids2], [], "... nor in $san.PID");
    }
    $dns->delay(0);

    # Lists that leave one host, run by alyctl (one-shot) with h's configuration but another store URL: libpq is given
    # that host as a value (an empty value would be no value, and libpq would take the URL's whole list again).
    my $conf = Alyd::slurp($h->conf);
    my $with_store = sub {
        my ($url) = @_;
        (my $c2 = $conf) =~ s/^store .*$/store $url/m;
        my $path = $h->conf . '.list';
        Alyd::spew($path, $c2);
        my ($exit, undef, $err) = Alyd::run_cmd($ENV{ALYCTL}, '-c', $path, 'workspace', 'create', 'Listed');
        return ($exit, $err // '');
    };
    # No port for the host left (the URL form gives a port list: "PORT,"): libpq's default port, not a list of two.
    my ($exit, $err) = $with_store->("postgresql://postgres\@nx.slow.test:" . $pg->port . ',127.0.0.1/alyd');
    isnt($exit, 0, 'a list leaving 127.0.0.1 without a port: alyctl fails (nothing of ours at the default port)');
    like($err, qr/port 5432\b/, '... trying 127.0.0.1 at the default port') or diag($err);
    unlike($err, qr/could not match \d+ port numbers/, '... with a port list that matches the hosts');
    # An empty host item left (libpq's default: its socket directory).
    ($exit, $err) = $with_store->('postgresql://postgres@nx.slow.test:' . $pg->port . ',:' . $pg->port . '/alyd');
    isnt($exit, 0, 'a list leaving the empty host item: alyctl fails (no server in the default socket directory)');
    like($err, qr/socket/, '... trying the default socket') or diag($err);
    unlike($err, qr/could not translate host name/, '... and libpq asked no resolver for the name left out');
    # A service names the host (PGSERVICE, a service file): libpq's to read, over PGHOST, which alyd must not look up.
    my $svc = $h->conf . '.pg_service.conf';
    Alyd::spew($svc, "[alydtest]\nhost=127.0.0.1\nport=" . $pg->port . "\nuser=postgres\n");
    $dns->delay($DELAY);
    {
        local $ENV{PGSERVICEFILE} = $svc;
        local $ENV{PGSERVICE} = 'alydtest';
        local $ENV{PGHOST} = $NAME;
        my $t2 = time;
        ($exit, $err) = $with_store->('postgresql:///alyd');
        is($exit, 0, "a service (PGSERVICE) with PGHOST=$NAME set too: alyctl connects through the service") or diag($err);
        cmp_ok(time - $t2, '<', $BOUND, sprintf('... at once (%.2f s): nothing waited for the name', time - $t2));
    }
    $dns->delay(0);
    # More hosts than alyd looks up (8): left to libpq, and the store set up and freed without harm.
    ($exit, $err) = $with_store->('postgresql://postgres@' . join(',', ('127.0.0.1:' . $pg->port) x 9) . '/alyd');
    is($exit, 0, 'a list of 9 hosts: left to libpq, which connects') or diag($err);
    unlike($err, qr/double free|AddressSanitizer|runtime error/, '... cleanly');
    # The first alyd lost its connection with the others above: connected again before the last part.
    ok(poll_until(10 * $S, sub { ok_result(create()) }, 0.2), 'the first alyd writes again');
}

# ---- shutting down with a lookup in flight ----
$dns->delay($DELAY);
my $t_last = time;
cmp_ok(backends(), '>=', 1, "PostgreSQL drops alyd's connection again");
is(timed('w')->{status}, 503, 'a write refused again');
# The refused write may have met the retry pause (store_poll) rather than a new attempt: write on until one asks the DNS server.
ok(poll_until(10, sub { a_queries($t_last) >= 1 || (timed('w') && 0) }, 0.3), 'a lookup is in flight again');
my $t0 = time;
ok($h->stop, 'alyd stops by itself');
my $stop_secs = time - $t0;
cmp_ok($stop_secs, '<', $BOUND * 2, sprintf('... promptly (%.2f s), not after the lookup', $stop_secs));
ok(a_queries($t_last) >= 1 && time - $t_last < $DELAY, '(it was in flight: asked, and the stop came before its answer was due)');
my $logs = ($h->error_log_text // '') . ($h->stderr_text // '');
unlike($logs, qr/AddressSanitizer|LeakSanitizer|runtime error/, 'no sanitizer report in the logs');
my ($san) = ($ENV{ASAN_OPTIONS} // '') =~ /(?:^|:)log_path=([^:]+)/;
SKIP: {
    skip 'sanitizer reports go to the logs (no log_path)', 1 unless $san;
    my @reports = grep { -e "$san.$_" } @pids;
    is_deeply(\@reports, [], "no sanitizer report of alyd's processes in $san.PID");
}
diag(sprintf('DNS delay %.0f s; store_timeout %d ms; while slow: first write %.2f s, slowest request %.2f s; writes back %.2f s '
      . 'after the drop; stop %.2f s', $DELAY, $TIMEOUT, $w->{secs}, $slowest, $back, $stop_secs));

done_testing();
