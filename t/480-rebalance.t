# A second worker joins the group mid-backlog and leaves again: each
# rebalance writes and commits the batch in hand before partitions move, so
# every order is recorded exactly once whichever worker took it.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use FluxGate::Test;
use FluxGate::Worker;

my $N = 40000;
my $prefix = uniq('p480');
my $mark = log_mark();

produce_backlog($prefix, orders => $N, products => 40);
my $w = start_private_worker(topic => topic(), group => 'fluxgate-inventory');
ok(wait_until(60, sub { slurp($w->{log}) =~ /Kafka: assigned \S/ }),
   'a second worker in the same group got partitions')
    or diag(slurp($w->{log}));
ok(wait_until(30, sub { log_since($mark) =~ /Kafka: (revoked|lost)/ }),
   'the stack\'s worker gave partitions up');
ok(wait_rows(120, "$prefix-%", $N), "all $N orders recorded");
is(stop_private_worker($w), 0, 'the second worker leaves with status 0');
like(slurp($w->{log}), qr/Kafka: revoked .*writing the batch in hand first/,
     'and gave its partitions back through the revoke callback');

# after it left, the stack's worker owns everything again
my $x = uniq('p480x');
my (undef, $j) = order_msg(productId => $x, generationStock => 1);
produce([$x, stock_msg($x, 1)], [$x, $j]);
ok(wait_until(60, sub { orders_of($x) == 1 }), 'the stack\'s worker takes over again');
check_backlog($prefix, $N);

done_testing();
