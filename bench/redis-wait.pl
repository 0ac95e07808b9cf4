#!/usr/bin/env perl
# The cost of fluxgate_redis_wait (WAIT after each reservation), measured
# on a private Redis Cluster (3 masters, one replica each, loopback) with
# the Kafka and worker of a running stack:
#
#   . DIR/env; perl bench/redis-wait.pl [orders]
#
# Gates of 2 worker processes on the same cluster: without WAIT
# (fluxgate_redis_timeout 200ms, the example config's), with
# `fluxgate_redis_wait 1 100ms` (and fluxgate_redis_timeout 1s), and the
# same with the sold-out cache; the same crowd (fg-loadgen, 50
# connections, one product) on each: the accept path (stock enough for
# all) and the sold-out path (stock 0: order.lua answers, or the cache).
# Prints a Markdown table.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../t/lib";
use Test::More ();
use FluxGate::Test;
use FluxGate::Fleet;
use FluxGate::Cluster;

my $n = shift // 20000;
my $c = cluster_start(masters => 3);
my $wait = "fluxgate_redis_wait 1 100ms;\n    fluxgate_redis_timeout 1s;";
my %gate = (
    'no WAIT'        => gate_start(workers => 2, redis => cluster_directive($c)),
    'WAIT 1'         => gate_start(workers => 2, redis => cluster_directive($c),
                                   extra => $wait),
    'WAIT 1 + cache' => gate_start(workers => 2, redis => cluster_directive($c),
                                   extra => "$wait\n    fluxgate_sold_out_cache 1s;"),
);
my @rows;
for my $run (['accept', 'no WAIT'], ['accept', 'WAIT 1'],
             ['sold out', 'no WAIT'], ['sold out', 'WAIT 1'],
             ['sold out', 'WAIT 1 + cache']) {
    my ($path, $name) = @$run;
    my $g = $gate{$name};
    my $p = uniq('bw');
    init_stock($g, $p, $path eq 'accept' ? 10 * $n : 0);
    # a first crowd warms the connections (and raises the sold-out flag)
    loadgen(port => $g->{port}, c => 50, n => 2000, product => $p, run => uniq('warm'));
    my $r = loadgen(port => $g->{port}, c => 50, n => $n, product => $p,
                    run => uniq('bw'));
    my $st = $path eq 'accept' ? 200 : 409;
    my $s = $r->{status}{$st} || {};
    push @rows, sprintf '| %s | %s | %d | %.0f | %.2f | %.2f | %s |',
        $path, $name, $s->{count} // 0, $r->{rps} // 0, $s->{p50_ms} // 0,
        $s->{p99_ms} // 0,
        join(' ', map { "$_=$r->{status}{$_}{count}" } sort keys %{ $r->{status} });
}
gate_stop($_) for values %gate;
cluster_stop($c);
print "| path | gate | answered | orders/s | p50 ms | p99 ms | all answers |\n";
print "|---|---|---|---|---|---|---|\n";
print "$_\n" for @rows;
