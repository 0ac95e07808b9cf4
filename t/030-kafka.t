# Kafka of the stack (KRaft, one node): the orders topic exists with several
# partitions, and a message produced to it is consumed back whole.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use FluxGate::Test;

my $topic = $ENV{KAFKA_TOPIC} || 'orders';
my $meta = `kcat -L -b $ENV{KAFKA_BOOTSTRAP} -t $topic 2>&1`;
my ($parts) = $meta =~ /topic "\Q$topic\E" with (\d+) partitions/;
ok($parts && $parts >= 2, "topic $topic has several partitions ("
   . ($parts // 'none') . ")") or diag($meta);

# a stock_set for a product of this test only: the stack's worker will
# apply it, which is harmless
my $product = uniq('t030');
my $value = json_encode({ type => 'stock_set', productId => $product,
                          stock => 7, at => int(time() * 1000) });
kafka_produce($topic, [[$product, $value]]);

my @got = grep { ($_->{key} // '') eq $product }
          kafka_consume($topic, timeout => 20);
is(scalar @got, 1, 'the produced message is consumed back once');
is($got[0]{payload}, $value, 'with the same bytes');
ok(defined $got[0]{partition} && defined $got[0]{offset},
   "at partition $got[0]{partition}, offset $got[0]{offset}");

done_testing();
