# The module on a Redis Cluster (`fluxgate_redis cluster ...`): a private
# cluster of 3 masters (one replica each), products spread so that every
# master serves some (checked with CLUSTER KEYSLOT), and through one gate:
# /init (and its replay), orders to sold out, done (no claim left pending),
# the sold-out cache (answers while the product's master is frozen: a
# minute, longer than the sale's end takes to settle), and a
# release (a topic Kafka does not have: 503, the units go back on the
# product's own master).  The books balance against PostgreSQL.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(time sleep);
use FluxGate::Test;
use FluxGate::Fleet;
use FluxGate::Cluster;

my $c = cluster_start(masters => 3);
my $cr = sub { cluster_redis($c, @_) };
is(scalar @{ cluster_masters($c) }, 3, 'a cluster of 3 masters');

# a Redis deadline far above any stall of a loaded machine: the sale's
# answers are decided by the stock, not by how busy the machine is
my $g = gate_start(workers => 2, redis => cluster_directive($c),
                   extra => "fluxgate_sold_out_cache 60s;\n"
                          . "    fluxgate_redis_timeout 2s;",
                   server => 'location = /metrics { fluxgate_metrics; }');
like(gate_log($g), qr/redis cluster: 16384 of 16384 slots mapped/,
     'every worker process fetched the slot map');

# products prefix-0 .. prefix-5 (fg-loadgen's names), over all 3 masters
my ($prefix, %on);
for my $try (1 .. 50) {
    $prefix = uniq('c710');
    %on = ();
    push @{ $on{ cluster_master_of($c, "fg:{$prefix-$_}:stock") } }, "$prefix-$_"
        for 0 .. 5;
    last if keys %on == 3;
}
is(scalar keys %on, 3, 'the 6 products live on all 3 masters')
    or diag(explain \%on);
my @products = map { "$prefix-$_" } 0 .. 5;

for my $p (@products) {
    my $res = init_stock($g, $p, 20, key => "init-$p");
    is($res->{status}, 200, "/init $p: 200") or diag($res->{content});
}
my $again = init_stock($g, $products[0], 20, key => "init-$products[0]");
is($again->{status}, 200, '/init replayed with its key');
is($again->{json}{generation}, 1, '... and the same generation');
is($cr->('GET', "fg:{$products[1]}:stock"), 20, 'stock set on its own master');

# 6 x 20 units, 200 orders: 120 sold, the rest sold out
my $r = sale_wait(sale_start($g, product => $prefix, products => 6,
                             c => 30, n => 200, run => 'c710'));
my %st = map { $_ => $r->{status}{$_}{count} } keys %{ $r->{status} };
diag('answers: ' . join ' ', map { "$_=$st{$_}" } sort keys %st);
is($st{200} // 0, 120, '120 orders accepted: every unit sold once');
is($st{409} // 0, 80, 'the other 80 sold out');
is($st{503} // 0, 0, 'no 503')
    or diag(join "\n", grep { /redis|kafka/ } split /\n/, gate_log($g));
is($cr->('GET', "fg:{$_}:stock"), 0, "$_ sold out") for @products;
ok(wait_until(30, sub { !grep { $cr->('ZCARD', "fg:{$_}:pending") } @products }),
   'done.lua ended every claim on its master');

# the sold-out cache answers without Redis: freeze the product's master.
# A frozen Redis cannot answer, so a 409 can only come from the cache
# (through Redis it would be a 503 at the 2 s deadline), and the cache
# counts the hit
my $hits = sub { prom_samples(http_get(gate_url($g) . '/metrics')->{content})
                     ->{fluxgate_sold_out_flag_hits_total} // 0 };
my $hits0 = $hits->();
my ($port) = cluster_master_of($c, "fg:{$products[0]}:stock") =~ /:(\d+)$/;
kill 'STOP', $c->{pids}{$port};
my $so = http_post(gate_url($g) . '/order',
                   json_encode({ productId => $products[0], userId => 'late' }),
                   { 'X-Idempotency-Key' => uniq('k') });
kill 'CONT', $c->{pids}{$port};
is($so->{status}, 409, 'sold out answered while its master is frozen');
is(eval { json_decode($so->{content})->{status} }, 'sold_out', '... sold_out');
is($hits->() - $hits0, 1, '... from the cache: fluxgate_sold_out_flag_hits_total + 1');

books_balance('cluster sale', \@products, [ ok_orders($r) ], redis => $cr);

# release: a gate whose topic Kafka does not have gives the units back
my $bad = gate_start(workers => 1, redis => cluster_directive($c),
                     topic => uniq('no-such-topic'),
                     extra => 'fluxgate_kafka_option message.timeout.ms 1500;');
my $p = uniq('c710r');
is(init_stock($g, $p, 5)->{status}, 200, "/init $p (5 units)");
my $rel = http_post(gate_url($bad) . '/order',
                    json_encode({ productId => $p, userId => 'u-rel' }),
                    { 'X-Idempotency-Key' => uniq('k') });
is($rel->{status}, 503, 'an order Kafka could not take: 503');
ok(wait_until(10, sub { $cr->('GET', "fg:{$p}:stock") == 5
                        && $cr->('ZCARD', "fg:{$p}:pending") == 0 }),
   'release.lua gave the unit back on the product\'s master');

gate_stop($_) for $bad, $g;
cluster_stop($c);
done_testing();
