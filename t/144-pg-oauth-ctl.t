# The OAuth server's alyctl commands on the PostgreSQL store, across two
# hosts: a user added through one host is listed, checked and removed
# through the other; a client registered on one is listed on the other; a
# signing key rotated on one is published in the other's jwks within the
# replication bound.  (Cluster mode keeps users, clients, grants and keys in
# the durable store, so the commands must not care which host runs them.)
use strict;
use warnings;
use Test::More;
use File::Temp ();
use Time::HiRes qw(time sleep);
use Alyd;
use Cluster;

Cluster::need_engines(redis => 0);
Alyd::watchdog(180);

my $c = Cluster->hosts(2, workers => 1, volatile => 'lmdb');
my ($h0, $h1) = ($c->host(0), $c->host(1));
my $BOUND = 1.0 * $Alyd::SCALE;
my $tmp = File::Temp->newdir;
Alyd::spew("$tmp/pw", "a long enough password\n");

my $ws = $h0->ctl('workspace', 'create', 'Shop');
$h0->ctl('users', 'add', '--workspace', $ws, '--email', 'Ann@Example.com', '--password-file', "$tmp/pw");
like($h1->ctl('users', 'list'), qr/ann\@example\.com/i, 'a user added through host 0 is listed through host 1');

my $cl = Alyd::json_decode($h1->ctl('--json', 'oauth', 'clients', 'create', '--name', 'App', '--redirect-uri', 'http://127.0.0.1:9/cb'));
ok($cl && $cl->{client_id}, 'a client registered through host 1');
like($h0->ctl('oauth', 'clients', 'list'), qr/\Q$cl->{client_id}\E/, 'is listed through host 0');
my $conf = Alyd::json_decode($h0->ctl('--json', 'oauth', 'clients', 'create', '--name', 'Srv', '--redirect-uri', 'https://app.example/cb',
    '--confidential'));
ok($conf && $conf->{client_secret}, 'a confidential client through host 0 shows its secret once');
unlike($h1->ctl('--json', 'oauth', 'clients', 'list'), qr/\Q$conf->{client_secret}\E/, 'and no listing on host 1 shows it again');

sub kids {
    my ($h) = @_;
    my ($st, undef, $b) = Alyd::curl($h->url('/oauth/jwks'));
    return $st == 200 ? [map { $_->{kid} } @{ (Alyd::json_decode($b) // {})->{keys} // [] }] : undef;
}
my $before = kids($h1);
ok(defined $before, 'host 1 answers /oauth/jwks (' . scalar(@{ $before // [] }) . ' keys: the first is made when first needed)');
$h0->ctl('oauth', 'rotate-key');
my $t0 = time;
my $seen;
while (time - $t0 < 2 * $BOUND) {
    my $k = kids($h1) // [];
    $seen = time - $t0, last if @$k == @$before + 1;
    sleep 0.05;
}
ok(defined $seen, sprintf('a key rotated through host 0 is in host 1\'s jwks after %s s', defined $seen ? sprintf('%.2f', $seen) : 'never'));
my $k0 = join ',', sort @{ kids($h0) // [] };
my $k1 = join ',', sort @{ kids($h1) // [] };
is($k1, $k0, 'both hosts publish the same keys');

$h1->ctl('users', 'remove', 'ann@example.com');
unlike($h0->ctl('users', 'list'), qr/ann\@example\.com/i, 'a user removed through host 1 is gone through host 0');
like($h0->ctl('oauth', 'grants', 'list'), qr/^/, 'oauth grants list runs on host 0');
my ($exit, undef, $err) = Alyd::run_cmd(Alyd::alyctl_bin(), '-c', $h1->conf, 'users', 'remove', 'nobody@example.com');
isnt($exit, 0, 'removing an unknown user fails');
like($err, qr/\S/, 'saying why');
done_testing;
