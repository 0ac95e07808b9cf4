# Releases that are due while Redis is not there to take them.  The gate
# sends its orders to a topic that does not exist, so each one is reserved
# in Redis and then comes back "not delivered" after the delivery timeout:
# release.lua must give it back.  Three ways Redis is away right then:
#   1. restarted (down until the releases are due): they wait and retry,
#      and land;
#   2. down for longer than the gate's grace (until the gate says it gave
#      up): the claims stay pending, and fluxgate-reconcile releases them;
#   3. up, but answering every script with an error (OOM, until both
#      releases met it): retried, and released once it answers again.
# Each time the stock, the buyers and the keys end exactly as before.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use POSIX ();
use Time::HiRes qw(time sleep);
use FluxGate::Test;
use FluxGate::Fleet;

# a gate of its own for each case, on a topic of its own that does not
# exist: librdkafka holds the first messages until their timeout (once it
# knows the topic is missing it refuses new ones at once)
my $g;
sub gate { $g = gate_start(workers => 2, topic => uniq('t630-missing'),
                           extra => 'fluxgate_kafka_option message.timeout.ms 1500;') }

my $parent = $$;
END { eval { redis('CONFIG', 'SET', 'maxmemory', 0) } if $$ == $parent }

sub orders {
    my ($p, $n) = @_;
    my @pids;
    for my $i (1 .. $n) {
        my $pid = fork // die;
        if (!$pid) {
            my $r = http_post(gate_url($g) . '/order',
                              json_encode({ productId => $p, userId => "u$i" }),
                              { 'X-Idempotency-Key' => "k$i" });
            POSIX::_exit($r->{status} == 503 ? 0 : 1);
        }
        push @pids, $pid;
    }
    return @pids;
}

sub answers { my @rc; for (@_) { waitpid $_, 0; push @rc, $? >> 8 } return @rc }

sub redis_up { wait_until(30, sub { eval { redis('PING') } eq 'PONG' && svc('status', 'redis') =~ /RUNNING/ }) }

sub as_before {
    my ($name, $p) = @_;
    is(redis('GET', "fg:{$p}:stock"), 10, "$name - the stock is whole again");
    is(redis('EXISTS', "fg:{$p}:buyers"), 0, "$name - no buyer counted");
    is(redis('ZCARD', "fg:{$p}:pending"), 0, "$name - no claim pending");
    my @keys = redis('KEYS', "fg:{$p}:idem:*");
    is(scalar @keys, 0, "$name - no idempotency key left");
}

{
    my $name = 'Redis restarted while releases are due';
    my $p = uniq('f630a');
    set_stock($p, 10);
    gate();
    my $mark = length gate_log($g);
    my @pids = orders($p, 4);
    ok(wait_until(5, sub { redis('GET', "fg:{$p}:stock") == 6 }), "$name - 4 reserved");
    like(svc('stop', 'redis'), qr/stopped/, "$name - Redis stopped");
    # Redis comes back once the four releases are due (their deliveries
    # failed while it was down): they wait for it
    ok(wait_until(30, sub { (() = substr(gate_log($g), $mark)
                                   =~ /not delivered to kafka: .*releasing it/g) == 4 }),
       "$name - the four releases came due while Redis was down");
    is_deeply([answers(@pids)], [0, 0, 0, 0], "$name - the clients got 503");
    like(svc('start', 'redis'), qr/started/, "$name - and started again");
    redis_up();
    ok(wait_until(15, sub { redis('GET', "fg:{$p}:stock") == 10 }),
       "$name - the releases landed after the restart");
    as_before($name, $p);
    gate_stop($g);
}

{
    my $name = 'Redis away for longer than the grace';
    my $p = uniq('f630b');
    set_stock($p, 10);
    gate();
    my $mark = length gate_log($g);
    my @pids = orders($p, 3);
    ok(wait_until(5, sub { redis('GET', "fg:{$p}:stock") == 7 }), "$name - 3 reserved");
    svc('stop', 'redis');
    # Redis comes back once the gate's grace is over for all three
    ok(wait_until(60, sub { (() = substr(gate_log($g), $mark)
                                   =~ /could not release the reservation .*claim stays pending/g) == 3 }),
       "$name - the gate gave up and said each claim stays pending");
    svc('start', 'redis');
    redis_up();
    answers(@pids);
    is(redis('ZCARD', "fg:{$p}:pending"), 3, "$name - 3 claims pending, none expired");
    ok(settle_claims($p, deadline => 3000), "$name - fluxgate-reconcile released them");
    as_before($name, $p);
    gate_stop($g);
}

{
    my $name = 'Redis answers errors (OOM) while releases are due';
    my $p = uniq('f630c');
    set_stock($p, 10);
    gate();
    my $mark = length gate_log($g);
    my @pids = orders($p, 2);
    ok(wait_until(5, sub { redis('GET', "fg:{$p}:stock") == 8 }), "$name - 2 reserved");
    redis('CONFIG', 'SET', 'maxmemory', 1);
    # Redis has room again once both releases met its error and retry
    ok(wait_until(30, sub { my %o = map { $_ => 1 } substr(gate_log($g), $mark)
                                =~ /release\.lua: OOM[^\n]*retrying[^\n]*, order: (\S+),/g;
                            keys %o == 2 }),
       "$name - both releases met the OOM error and retry");
    redis('CONFIG', 'SET', 'maxmemory', 0);
    answers(@pids);
    ok(wait_until(10, sub { redis('GET', "fg:{$p}:stock") == 10 }), "$name - released");
    as_before($name, $p);
    gate_stop($g);
}

done_testing();
