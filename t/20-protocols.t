#!/usr/bin/perl
# The HTTP surface over every protocol alyd speaks: HTTP/1.1, h2c (prior
# knowledge and Upgrade), h2 over TLS (ALPN), checked with curl and nghttp;
# routing (404, 405), max_request_body (413), protected-resource metadata,
# /metrics and the access log.
use strict;
use warnings;
use Test::More;
use File::Temp ();
use Time::Local ();
use Alyd;

watchdog(60);

my ($vexit, $vout) = run_cmd(alyd_bin(), '-v');
my ($version) = $vout =~ /^alyd (\S+)/;
ok(defined $version, "alyd -v gives a version") or $version = '?';

my $srv = Alyd->start(workers => 2, tls => 1);
my @workers = $srv->worker_pids;
is(scalar @workers, 2, 'two workers running');
my %is_worker = map { $_ => 1 } @workers;
my $probe = 0;    # requests tagged ?probe=N, looked for in the access log later
my @logged;       # [method, path, status] expected in the access log

sub check_healthz {
    my ($name, $want_version, @args) = @_;
    my $path = '/healthz?probe=' . ++$probe;
    my $url  = pop @args;
    my ($st, $h, $body, $ver) = curl(@args, $url . $path);
    is($st, 200, "$name: /healthz 200");
    is($ver, $want_version, "$name: HTTP version $want_version");
    like(header_value($h, 'content-type') // '', qr{^application/json}, "$name: JSON content type");
    my $j = json_decode($body);
    ok($j && ref $j eq 'HASH', "$name: body is a JSON object") or diag("body: $body");
    $j ||= {};
    is($j->{status}, 'ok', "$name: status ok");
    ok($j->{pid} && $is_worker{ $j->{pid} }, "$name: pid $j->{pid} is a worker of the master")
      or diag("workers: @workers");
    is($j->{version}, $version, "$name: version matches alyd -v");
    ok(defined $j->{uptime_seconds} && $j->{uptime_seconds} =~ /^\d+$/, "$name: uptime_seconds is an integer");
    ok(defined $j->{worker} && $j->{worker} =~ /^\d+$/ && $j->{worker} < 2, "$name: worker number");
    push @logged, ['GET', $path, 200];
}

check_healthz('HTTP/1.1',                '1.1', '--http1.1',                $srv->url);
check_healthz('h2c prior knowledge',     '2',   '--http2-prior-knowledge',  $srv->url);
check_healthz('h2c Upgrade',             '2',   '--http2',                  $srv->url);
check_healthz('h2 over TLS (ALPN)',      '2',   '-k', '--http2',            $srv->tls_url);
check_healthz('HTTP/1.1 over TLS',       '1.1', '-k', '--http1.1',          $srv->tls_url);

# The h2c upgrade really went through 101 Switching Protocols.
{
    my ($st, $h) = curl('--http2', $srv->url('/healthz?probe=' . ++$probe));
    like($h, qr{^HTTP/1\.1 101 }m, 'h2c Upgrade: 101 Switching Protocols');
    like($h, qr{^upgrade:\s*h2c}mi, 'h2c Upgrade: upgrade: h2c');
    push @logged, ['GET', "/healthz?probe=$probe", 200];
}

# nghttp, the nghttp2 reference client.
{
    my ($exit, $out, $err) = run_cmd('nghttp', '-nv', $srv->url('/healthz?probe=' . ++$probe));
    push @logged, ['GET', "/healthz?probe=$probe", 200];
    is($exit, 0, 'nghttp h2c prior knowledge: exit 0') or diag($err);
    like($out, qr/recv SETTINGS frame/, 'nghttp h2c: server sent an HTTP/2 SETTINGS frame');
    like($out, qr/recv \(stream_id=\d+\) :status: 200/, 'nghttp h2c: :status 200');

    ($exit, $out, $err) = run_cmd('nghttp', '-nvu', $srv->url('/healthz?probe=' . ++$probe));
    push @logged, ['GET', "/healthz?probe=$probe", 200];
    is($exit, 0, 'nghttp h2c Upgrade: exit 0') or diag($err);
    like($out, qr/HTTP Upgrade success/, 'nghttp h2c Upgrade: upgrade succeeded');
    like($out, qr/recv \(stream_id=\d+\) :status: 200/, 'nghttp h2c Upgrade: :status 200');

    ($exit, $out, $err) = run_cmd('nghttp', '-nv', $srv->tls_url('/healthz?probe=' . ++$probe));
    push @logged, ['GET', "/healthz?probe=$probe", 200];
    is($exit, 0, 'nghttp TLS: exit 0') or diag($err);
    like($out, qr/negotiated protocol: h2\b/, 'nghttp TLS: ALPN negotiated h2');
    like($out, qr/recv SETTINGS frame/, 'nghttp TLS: server sent an HTTP/2 SETTINGS frame');
    like($out, qr/recv \(stream_id=\d+\) :status: 200/, 'nghttp TLS: :status 200');
}

# Unknown paths: 404 with a JSON body, on every protocol.
for my $p (['--http1.1', $srv->url], ['--http2-prior-knowledge', $srv->url], ['-k', '--http2', $srv->tls_url]) {
    my @args = @$p;
    my $base = pop @args;
    my ($st, $h, $body, $ver) = curl(@args, "$base/no/such/thing");
    is($st, 404, "404 for an unknown path over HTTP/$ver");
    like(header_value($h, 'content-type') // '', qr{^application/json}, "404 over HTTP/$ver is JSON");
    my $j = json_decode($body) // {};
    is($j->{error}, 'not_found', "404 body has error not_found over HTTP/$ver") or diag("body: $body");
    push @logged, ['GET', '/no/such/thing', 404];
}
{
    my ($st) = curl($srv->url('/healthz/extra'));
    is($st, 404, '404 for /healthz/extra (exact routes)');
    ($st) = curl($srv->url('/api/mcpx'));
    is($st, 404, '404 for /api/mcpx');
}

# Wrong methods: 405 with Allow.
for my $c (['PUT', '/healthz', qr/^GET$/], ['POST', '/.well-known/oauth-protected-resource', qr/^GET$/],
    ['PATCH', '/api/mcp', qr/^(?=.*\bGET\b)(?=.*\bPOST\b)(?=.*\bDELETE\b)/])
{
    my ($m, $path, $allow) = @$c;
    my ($st, $h, $body) = curl('-X', $m, $srv->url($path));
    is($st, 405, "$m $path: 405");
    like(header_value($h, 'allow') // '', $allow, "$m $path: Allow header") or diag($h);
    like(header_value($h, 'content-type') // '', qr{^application/json}, "$m $path: JSON body");
    push @logged, [$m, $path, 405];
}

# max_request_body (default 1m).
my $tmp = File::Temp->newdir;
my $big = "$tmp/big.json";
my $ok_size = "$tmp/ok.json";
spew($big, '[' . ('0,' x (1024 * 1024)) . '0]');    # a little over 2 MiB
spew($ok_size, '"' . ('a' x (1000 * 1000)) . '"');  # just under 1 MiB
{
    my ($st, $h, $body, $ver) = curl('--http1.1', '-H', 'Content-Type: application/json', '--data-binary', "\@$big",
        $srv->url('/api/mcp?probe=big1'));
    is($st, 413, '2 MiB POST /api/mcp over HTTP/1.1: 413') or diag("status $st, body: $body");
    push @logged, ['POST', '/api/mcp?probe=big1', 413];

    ($st, $h, $body) = curl('--http1.1', '-H', 'Expect:', '-H', 'Content-Type: application/json', '--data-binary',
        "\@$big", $srv->url('/api/mcp?probe=big2'));
    is($st, 413, '2 MiB POST without Expect: 100-continue: 413') or diag("status $st, body: $body");

    ($st, $h, $body, $ver) = curl('--http2-prior-knowledge', '-H', 'Content-Type: application/json', '--data-binary',
        "\@$big", $srv->url('/api/mcp?probe=big3'));
    is($st, 413, '2 MiB POST /api/mcp over h2c: 413') or diag("status $st (0 = no HTTP response), body: $body");

    # Over 4 x max_request_body h2o refuses the body itself, before any of alyd runs: still one line, still counted.
    my $huge = "$tmp/huge.json";
    spew($huge, '"' . ('b' x (5 * 1024 * 1024)) . '"');
    ($st, $h, $body) = curl('--http1.1', '-H', 'Content-Type: application/json', '--data-binary', "\@$huge",
        $srv->url('/api/mcp?probe=huge'));
    is($st, 413, '5 MiB POST, refused by h2o itself: 413') or diag("status $st, body: $body");
    push @logged, ['POST', '/api/mcp?probe=huge', 413];

    ($st, $h, $body) = curl('--http1.1', '-H', 'Content-Type: application/json', '--data-binary', "\@$ok_size",
        $srv->url('/api/mcp?probe=okbody'));
    ok($st != 413 && $st != 404 && $st != 405 && $st != 0, "a body just under 1 MiB is accepted (got $st)");
    push @logged, ['POST', '/api/mcp?probe=okbody', $st];
}

# RFC 9728 protected-resource metadata, both paths.
for my $path ('/.well-known/oauth-protected-resource', '/.well-known/oauth-protected-resource/api/mcp') {
    my ($st, $h, $body) = curl($srv->url($path));
    is($st, 200, "$path: 200");
    like(header_value($h, 'content-type') // '', qr{^application/json}, "$path: JSON");
    my $j = json_decode($body) // {};
    is($j->{resource}, 'http://127.0.0.1:' . $srv->port . '/api/mcp', "$path: resource is public_url/api/mcp");
    is(ref $j->{scopes_supported}, 'ARRAY', "$path: scopes_supported is a list");
    is(scalar @{ $j->{scopes_supported} // [] }, 7, "$path: 7 scopes");
    ok((grep { $_ eq 'read:sites' } @{ $j->{scopes_supported} // [] }), "$path: read:sites among the scopes");
    is_deeply($j->{bearer_methods_supported}, ['header'], "$path: bearer_methods_supported [header]");
    ok(defined $j->{resource_name} && length $j->{resource_name}, "$path: resource_name");
    push @logged, ['GET', $path, 200];
}

# /metrics: on metrics_listen only.
{
    my ($st, $h, $body) = curl($srv->metrics_url('/metrics'));
    is($st, 200, '/metrics on metrics_listen: 200');
    like(header_value($h, 'content-type') // '', qr{^text/plain}, '/metrics is text/plain');
    my $ok200 = metric_value($body, 'alyd_requests_total{status="200"}');
    ok(defined $ok200 && $ok200 >= 10, "alyd_requests_total{status=\"200\"} counts our requests (" . ($ok200 // 'missing') . ')')
      or diag($body);
    my $nf = metric_value($body, 'alyd_requests_total{status="404"}');
    ok(defined $nf && $nf >= 3, "alyd_requests_total{status=\"404\"} counts the 404s (" . ($nf // 'missing') . ')');
    my $na = metric_value($body, 'alyd_requests_total{status="405"}');
    ok(defined $na && $na >= 3, "alyd_requests_total{status=\"405\"} counts the 405s (" . ($na // 'missing') . ')');
    my $tl = metric_value($body, 'alyd_requests_total{status="413"}');
    ok(defined $tl && $tl >= 4, "alyd_requests_total{status=\"413\"} counts the 413s, h2o's own too (" . ($tl // 'missing') . ')');
    is(metric_value($body, 'alyd_workers'), 2, 'alyd_workers 2');
    is(metric_value($body, 'alyd_worker_restarts_total'), 0, 'alyd_worker_restarts_total 0');
    ok(defined metric_value($body, $_), "$_ present") for qw(alyd_requests_in_flight alyd_connections alyd_uptime_seconds);
    like($body, qr/^# TYPE alyd_requests_total counter$/m, 'TYPE line for alyd_requests_total');

    # A reverse proxy on the same host makes every client a loopback peer: /metrics stays off the public listener.
    ($st, $h, $body) = curl($srv->url('/metrics'));
    is($st, 404, '/metrics on the main listener, even from loopback: 404');
    unlike($body, qr/alyd_requests_total/, '... and shows no metric');

    ($st) = curl($srv->metrics_url('/healthz'));
    is($st, 200, '/healthz on metrics_listen: 200');
    ($st) = curl('-d', '{}', $srv->metrics_url('/api/mcp'));
    is($st, 404, '/api/mcp is not served on metrics_listen');
    ($st) = curl($srv->metrics_url('/.well-known/oauth-protected-resource'));
    is($st, 404, 'metadata is not served on metrics_listen');
}

# The access log: one line per request, with method, path and status.
{
    my $text;
    my $all = poll_until(
        5,
        sub {
            $text = $srv->access_log_text // '';
            for my $e (@logged) {
                my ($m, $p, $s) = @$e;
                return 0 unless $text =~ /\s\Q$m\E \Q$p\E\s.*\b$s\b/;
            }
            return 1;
        }
    );
    my %seen;
    for my $e (@logged) {
        my ($m, $p, $s) = @$e;
        next if $seen{"$m $p $s"}++;
        ok($text =~ /\s\Q$m\E \Q$p\E\s.*\b$s\b/, "access log has \"$m $p\" with status $s");
    }
    my @nf = grep { /\sGET \/no\/such\/thing\s.*\b404\b/ } split /\n/, $text;
    is(scalar @nf, 3, 'three 404 requests, three access log lines');
    my @probe1 = grep { /\sGET \/healthz\?probe=1\s/ } split /\n/, $text;
    is(scalar @probe1, 1, 'exactly one access log line for one request');
    like($probe1[0] // '', qr/^\S+\s+127\.0\.0\.1\s/, 'access log line has time and client address');
    my ($ts) = ($probe1[0] // '') =~ /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) /;
    ok(defined $ts, 'access log time is RFC 3339 UTC with milliseconds');
    # Read as UTC, it is within a minute of now (a day's date alone would fail across midnight).
    my @f = ($ts // '') =~ /^(\d+)-(\d+)-(\d+)T(\d+):(\d+):(\d+)/;
    my $at = @f ? eval { Time::Local::timegm($f[5], $f[4], $f[3], $f[2], $f[1] - 1, $f[0]) } : undef;
    ok(defined $at && abs($at - time) < 60, sprintf('access log time is now, in UTC (%s)', $ts // 'none'));
    my %workers = map { $_ => 1 } $srv->worker_pids;
    my @pids = map { /\s(\d+)$/ ? $1 : () } grep { length } split /\n/, $text;
    is(scalar(grep { !$workers{$_} } @pids), 0, 'the last field of every access log line is a worker pid');
}

# public_url and authorization_servers reach the metadata.
{
    my $tmpk = File::Temp->newdir;
    spew("$tmpk/hs256", 'x' x 32);
    my $s2 = Alyd->start(workers => 1, metrics => 0, extra => ['public_url https://aly.example/',
        'oauth_issuer https://auth.example', "oauth_hs256_secret_file $tmpk/hs256"]);
    my ($st, $h, $body) = curl($s2->url('/.well-known/oauth-protected-resource'));
    my $j = json_decode($body) // {};
    is($j->{resource}, 'https://aly.example/api/mcp', 'public_url (trailing slash dropped) + /api/mcp');
    is_deeply($j->{authorization_servers}, ['https://auth.example'], 'authorization_servers defaults to oauth_issuer');
    ok($s2->stop, 'second server stops on TERM');
}

ok($srv->stop, 'server stops on TERM');
done_testing();
