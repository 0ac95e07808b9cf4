# A fleet sells: two gates (one nginx with 4 worker processes, one with 2)
# on the stack's Redis, Kafka and worker, a dozen products of 20 units
# sold to 40 buyers each through both, half of them restocked by a second
# POST /init in the middle of the sale.  Every worker process is a Kafka
# producer of its own, so the /init's stock_set and the orders around it
# reach the topic in any order; generations make that order not matter.
# Afterwards the books balance: every 200 has exactly one accepted row, no
# order was rejected, and per product and generation Redis stock + pending
# + recorded units = the stock set.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(time sleep);
use FluxGate::Test;
use FluxGate::Fleet;

# a child still running (not exited, not a zombie), without reaping it
sub running {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/stat" or return 0;
    return (<$fh> // '') !~ /\) [ZX] /;
}

# the point is the order of messages, not latency: a generous Redis
# deadline keeps a loaded 2-core machine from turning orders into 503s
my $a = gate_start(workers => 4, extra => 'fluxgate_redis_timeout 2s;');
my $b = gate_start(workers => 2, extra => 'fluxgate_redis_timeout 2s;');
is(scalar(my @w = gate_workers($a)), 4, 'gate A runs 4 worker processes');

for my $round (1 .. 2) {
    my $name = "round $round";
    my $prefix = uniq("f600r$round");
    my @products = map { "$prefix-$_" } 0 .. 11;

    for my $p (@products) {
        my $res = init_stock($a, $p, 20, key => "init-$p");
        is($res->{status}, 200, "$name - $p set") or diag($res->{content});
    }

    # 40 buyers per product, half through each gate, at a pace (about
    # 2.4 s) that lets the restock land while orders are in flight on
    # every worker process
    my @sales = map {
        sale_start($_, product => $prefix, products => 12, c => 20, n => 240,
                   rate => 100, run => "r$round-$_->{port}")
    } $a, $b;

    # the restock lands once each of its products sold in its first
    # generation, not a fixed time after the start
    my @restocked = @products[0 .. 5];
    ok(wait_until(30, sub { !grep { redis('GET', "fg:{$_}:stock") == 20 } @restocked }),
       "$name - the products to restock sell in generation 1");
    for my $p (@restocked) {
        my $res = init_stock($b, $p, 20, key => "restock-$p");
        is($res->{json}{generation}, 2, "$name - $p restocked: generation 2")
            or diag($res->{content});
    }
    # ... and while the sale still runs: its buyers are still arriving
    ok(!grep({ !main::running($_->{pid}) } @sales),
       "$name - the restock landed while both sales ran");

    my @r = map { sale_wait($_) } @sales;
    my @ok = ok_orders(@r);
    my $other = 0;
    for my $r (@r) {
        $other += $r->{status}{$_}{count} for grep { $_ != 200 && $_ != 409 } keys %{ $r->{status} };
    }
    is($other, 0, "$name - every answer was 200 or 409 sold_out")
        or diag(join ' ', map { my $r = $_; map { "$_=$r->{status}{$_}{count}" }
                                sort keys %{ $r->{status} } } @r);
    cmp_ok(scalar @ok, '>', 240, "$name - more than the first generations' 240 units sold ("
           . scalar(@ok) . ")");
    cmp_ok(scalar @ok, '<=', 360, "$name - never more than 12 x 20 + 6 x 20");

    books_balance($name, \@products, \@ok);

    my $gens = psql("select count(*) from stock_generations where product_id in"
                    . " (select id from ids) and generation = 2", ids => \@restocked);
    is($gens, 6, "$name - the worker knows the second generation of each restocked product");
    my %by_gen = map { split /\|/ } psql("select generation, count(*) from orders"
        . " where product_id in (select id from ids) group by 1", ids => \@restocked);
    ok($by_gen{1} && $by_gen{2}, "$name - the restocked products sold in both generations"
       . " (" . ($by_gen{1} // 0) . " + " . ($by_gen{2} // 0) . ")");
}

gate_stop($_) for $a, $b;
done_testing();
