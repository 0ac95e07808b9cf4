# POST /init when Kafka misbehaves.
#   1. /init answered 503 (Kafka frozen: its stock_set's delivery report
#      never came), orders sold meanwhile, then the same request retried
#      with its X-Idempotency-Key: the replay changes nothing in Redis and
#      publishes the event again; the worker applies the generation once.
#   2. Orders reserved in generation 1 fail in Kafka after an /init started
#      generation 2: what they give back never reaches generation 2.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use POSIX ();
use Time::HiRes qw(time sleep);
use FluxGate::Test;
use FluxGate::Fleet;

my $g = gate_start(workers => 2,
                   extra => 'fluxgate_kafka_option message.timeout.ms 2000;');
my $kafka = svc_pid('kafka') or BAIL_OUT('no Kafka pid from supervisord');

sub order {
    my ($p, $key, $user) = @_;
    return http_post(gate_url($g) . '/order',
                     json_encode({ productId => $p, userId => $user // "u-$key" }),
                     { 'X-Idempotency-Key' => $key });
}

# freezes the broker for the length of $code
sub kafka_frozen {
    my ($code) = @_;
    kill 'STOP', $kafka;
    my @r = eval { $code->() };
    my $err = $@;
    kill 'CONT', $kafka;
    die $err if $err;
    return @r;
}

{
    my $name = '/init retried after a 503';
    my $p = uniq('f610a');
    my ($res) = kafka_frozen(sub { init_stock($g, $p, 20, key => "k-$p") });
    is($res->{status}, 503, "$name - 503 while Kafka does not answer")
        or diag($res->{content});
    is(redis('HGET', "fg:{$p}:gen", 'g'), 1, "$name - Redis has generation 1 already");

    # Kafka is back: sell two units (a 503 while the producer reconnects
    # is retried with a fresh key; it may leave a claim to settle)
    my @sold;
    ok(wait_until(30, sub {
           my $r = order($p, "before-retry-" . scalar(@sold) . '-' . int(time * 1000));
           push @sold, $r if $r->{status} == 200;
           @sold >= 2;
       }), "$name - Kafka is back: two orders go through");
    my $stock = redis('GET', "fg:{$p}:stock");
    cmp_ok($stock, '<=', 18, "$name - at least two units gone from Redis ($stock)");

    # a client retries a 503: each worker process finds the broker again
    # on its own (within about 2 s of its return)
    wait_until(15, sub { $res = init_stock($g, $p, 20, key => "k-$p"); $res->{status} != 503 });
    is($res->{status}, 200, "$name - the retry answers 200") or diag($res->{content});
    is($res->{headers}{'idempotent-replayed'}, 'true', "$name - as a replay");
    is($res->{json}{generation}, 1, "$name - of generation 1");
    is(redis('GET', "fg:{$p}:stock"), $stock, "$name - the stock was not set again");

    my ($rc, $out) = reconcile('--repair', '--claim-deadline', 3000, '--product', $p);
    ok(wait_settled(60, $p), "$name - no claim left pending") or diag($out);
    my $recorded = psql("select coalesce(sum(quantity), 0) from orders where product_id = '$p'");
    cmp_ok($recorded, '>=', 2, "$name - the two orders recorded ($recorded units)");
    ok(wait_until(30, sub { psql("select stock from products where id = '$p'") eq 20 - $recorded }),
       "$name - PostgreSQL: 20 set, $recorded sold")
        or diag(psql("select * from products where id = '$p'"));
    books_balance($name, [$p], [map { json_decode($_->{content})->{orderId} } @sold]);
    is(psql("select count(*) || ':' || min(stock) from stock_generations where product_id = '$p'"),
       '1:20', "$name - one generation of 20, however often its event came");
}

{
    my $name = 'Kafka failures across an /init';
    my $p = uniq('f610b');
    # every process found the broker again after the block before (each
    # refuses at once while it has none)
    ok(wait_until(15, sub { gate_kafka_up($g) }), "$name - every gate process has Kafka");
    is(init_stock($g, $p, 10, key => "a-$p")->{status}, 200, "$name - generation 1 of 10");

    my (@res, $init);
    kafka_frozen(sub {
        # reserved in generation 1; their messages wait for the broker
        my @pids;
        for my $i (1 .. 5) {
            my $pid = fork // die;
            if (!$pid) {
                my $r = order($p, "frozen-$i");
                POSIX::_exit($r->{status} == 503 ? 0 : 1);
            }
            push @pids, $pid;
        }
        wait_until(5, sub { redis('GET', "fg:{$p}:stock") == 5 });
        is(redis('GET', "fg:{$p}:stock"), 5, "$name - 5 reserved in generation 1");
        # generation 2 is set in Redis while they wait (its event waits too)
        my $ip = fork // die;
        if (!$ip) { init_stock($g, $p, 10, key => "b-$p"); POSIX::_exit(0) }
        wait_until(5, sub { redis('HGET', "fg:{$p}:gen", 'g') == 2 });
        is(redis('HGET', "fg:{$p}:gen", 'g'), 2, "$name - generation 2 set meanwhile");
        for (@pids) { waitpid $_, 0; push @res, $? >> 8 }
        waitpid $ip, 0;
    });
    is_deeply(\@res, [0, 0, 0, 0, 0], "$name - the 5 orders got 503");
    is(redis('GET', "fg:{$p}:stock"), 10,
       "$name - generation 2 still holds its 10: nothing released into it");

    # what Kafka may have kept is settled against PostgreSQL
    my ($rc, $out) = reconcile('--repair', '--claim-deadline', 3000, '--product', $p);
    ok(wait_settled(60, $p) || do { ($rc, $out) = reconcile('--repair', '--claim-deadline', 3000,
                                                            '--product', $p); wait_settled(30, $p) },
       "$name - no claim left pending") or diag($out);
    is(redis('GET', "fg:{$p}:stock"), 10, "$name - and still 10 after settling");
    my $recorded = psql("select count(*) from orders where product_id = '$p'");
    is(redis('HLEN', "fg:{$p}:buyers"), $recorded,
       "$name - a buyer counted only for an order Kafka kept ($recorded)");
    # retried as a client retries a 503 (each process finds Kafka again)
    my $again;
    wait_until(15, sub { $again = init_stock($g, $p, 10, key => "b-$p"); $again->{status} != 503 });
    is($again->{json}{generation}, 2,
       "$name - the /init retried: generation 2, published");
    books_balance($name, [$p], []);
}

gate_stop($g);
done_testing();
