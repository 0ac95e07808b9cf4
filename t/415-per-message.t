# --per-message (one transaction per message, the benchmark's baseline)
# decides exactly what a batch decides: the same messages on two topics,
# one drained batched and one per message, give the same accepted and
# rejected orders, the same generations and stock and the same dead
# letters.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use FluxGate::Test;
use FluxGate::Worker;

my %outcome;
my $run = int(rand(2**32));
for my $mode ('batched', 'per-message') {
    # the same ids in both modes apart from their second group
    my $m = $mode eq 'batched' ? 1 : 2;
    my $topic = uniq("t415-$mode");
    kafka_create_topic($topic, 2);
    my $tag = uniq('p415');
    my @m;
    for my $k (1 .. 3) {
        my $p = "$tag-$k";
        push @m, [$p, stock_msg($p, 10, 1)];
        for my $i (1 .. 12) {
            # generation 1 (10 units) is asked for 17, generation 2 (4) for 7
            my ($g, $s) = $i <= 8 ? (1, 10) : (2, 4);
            push @m, [$p, (order_msg(productId => $p, quantity => 1 + $i % 3,
                                     generation => $g, generationStock => $s,
                                     orderId => sprintf('%08x-%04x-7000-8000-%06d%06d',
                                                        $run, $m, $k, $i)))[1]];
            push @m, [$p, 'not json'] if $i == 5;
            push @m, [$p, stock_msg($p, 4, 2)] if $i == 8;
        }
    }
    # a copy of an order, as a redelivery would bring it
    push @m, $m[3];
    kafka_produce($topic, \@m);

    my $w = start_private_worker(topic => $topic, group => uniq('g415'),
                                 args => [$mode eq 'per-message' ? '--per-message' : ()]);
    ok(wait_until(60, sub { caught_up($w->{log}, end_offsets($topic)) }), "$mode: drained");
    is(stop_private_worker($w), 0, "$mode: stopped with status 0");
    # every batch line, read whole: its transactions against its messages
    my @b = batches_in_log(slurp($w->{log}));
    my $sum = 0;
    $sum += $_->{messages} // 0 for @b;
    is($sum, scalar @m, "$mode: its batches hold the " . scalar(@m) . ' messages');
    ok(scalar(grep { ($_->{messages} // 0) > 1 } @b),
       "$mode: a batch of more than one message (where the modes differ)");
    if ($mode eq 'per-message') {
        is(scalar(grep { !defined $_->{transactions}
                         || $_->{transactions} != $_->{messages} } @b), 0,
           "$mode: one transaction per message (transactions = messages in every batch)");
    } else {
        is(scalar(grep { !defined $_->{transactions} || $_->{transactions} != 1 } @b), 0,
           "$mode: one transaction per batch (transactions = 1 in every batch)");
    }

    $outcome{$mode} = [
        psql(qq{select substr(product_id, length('$tag') + 2) || ' ' || right(id::text, 12)
                       || ' ' || status || ' ' || replace(coalesce(reason, ''), '$tag', 'TAG')
                from orders where kafka_topic = '$topic' order by 1}),
        psql(qq{select substr(id, length('$tag') + 2) || ' ' || stock || ' ' || generation
                from products where id like '$tag-%' order by 1}),
        psql(qq{select substr(product_id, length('$tag') + 2) || ' ' || generation || ' '
                       || stock || ' ' || sold || ' ' || (set_at is not null)
                from stock_generations where product_id like '$tag-%' order by 1}),
        psql(qq{select "offset" || ' ' || reason from dead_letters where topic = '$topic' order by 1}),
    ];
}

is(scalar(grep { / rejected generation 1 / } @{ $outcome{batched} }) > 0, 1,
   'the messages reject some orders in generation 1');
is(scalar(grep { / rejected generation 2 / } @{ $outcome{batched} }) > 0, 1, 'and in generation 2');
is_deeply($outcome{'per-message'}, $outcome{batched},
          'per message and batched: same orders, statuses, reasons, stock and dead letters');

done_testing();
