# Runs t/unit-store-pg (the store API in cluster mode) against a throw-away
# PostgreSQL: two data directories on one database and one on LMDB alone.
use strict;
use warnings;
use Test::More;
use File::Temp ();
use Alyd;
use Cluster;

Cluster::need_engines(redis => 0);
Alyd::watchdog(120);

my $bin = $ENV{ALY_UNIT_STORE_PG} // (defined $ENV{ALYD} ? ($ENV{ALYD} =~ s{src/alyd$}{t/unit-store-pg}r) : undef);
plan(skip_all => 't/unit-store-pg is not built') unless defined $bin && -x $bin;
my $pg = start_postgres();
my $dir = File::Temp->newdir;
my @conf;
for my $name ('a', 'b', 'lmdb') {
    my $path = "$dir/$name.conf";
    Alyd::spew($path, "data_dir $dir/$name\nkey_pepper_file $dir/pepper\n" . ($name eq 'lmdb' ? '' : 'store ' . $pg->url . "\n"));
    my ($exit, undef, $err) = Alyd::run_cmd(Alyd::alyctl_bin(), '-c', $path, 'init');
    is($exit, 0, "alyctl init ($name)") or diag($err);
    push @conf, $path;
}
my ($exit, $out, $err) = Alyd::run_cmd($bin, @conf);
my @lines = split /\n/, $out;
my ($plan) = grep { /^1\.\.\d+$/ } @lines;
ok(defined $plan && $plan ne '1..0', 't/unit-store-pg ran its tests') or diag($out . $err);
for my $l (grep { /^(not )?ok \d+/ } @lines) {
    my ($good, $name) = $l =~ /^(not )?ok \d+ - (.*)/;
    ok(!$good, "unit-store-pg: $name");
}
diag($_) for grep { /^#/ } @lines;
is($exit, 0, 't/unit-store-pg exits 0') or diag($err);
done_testing;
