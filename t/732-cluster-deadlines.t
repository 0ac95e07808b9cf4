# Deadlines on a Redis Cluster, so one hung node never holds the gate:
#   - a master frozen (SIGSTOP): the first /init of one of its products
#     times out, and that deadline marks the node stalled at once: the
#     next /init fails fast, never sent to it (the product's own node is
#     checked, not only the cluster's map);
#   - CLUSTER SLOTS has a deadline: with a replica node frozen (the gate
#     asks nodes for the map in turn, and would wait for that one forever),
#     a master killed is still replaced in the map by its promoted replica,
#     and its products sell again; a gate started with the frozen node as
#     its first seed gets its map from another node after that deadline.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(time sleep);
use FluxGate::Test;
use FluxGate::Fleet;
use FluxGate::Cluster;

my $c = cluster_start(masters => 3, node_timeout => 2000);
my $g = gate_start(workers => 1, redis => cluster_directive($c), log_level => ($ENV{T732_DEBUG} ? "debug" : "info"),
                   extra => "fluxgate_redis_timeout 300ms;");
my @frozen;
END { kill 'CONT', @frozen if @frozen }

# two products on two different masters
my ($prefix, @m);
for my $try (1 .. 100) {
    $prefix = uniq('c732');
    @m = map { cluster_master_of($c, "fg:{$prefix-$_}:stock") } 0 .. 1;
    last if $m[0] ne $m[1];
}
isnt($m[0], $m[1], 'two products on two masters');
my @products = map { "$prefix-$_" } 0 .. 1;
is(init_stock($g, $_, 1000)->{status}, 200, "/init $_") for @products;
my %pid = %{ $c->{pids} };

# an order for product $p through a gate ($g unless another is named)
sub order {
    my ($p, $gate) = @_;
    return http_post(gate_url($gate // $g) . '/order',
                     json_encode({ productId => $p, userId => uniq('u') }),
                     { 'X-Idempotency-Key' => uniq('k') });
}

# 1. a timed-out /init marks its node stalled
{
    my ($port) = $m[0] =~ /:(\d+)$/;
    kill 'STOP', $pid{$port};
    push @frozen, $pid{$port};
    $c->{frozen}{$port} = 1;
    my $first = init_stock($g, $products[0], 500);
    my $second = init_stock($g, $products[0], 500);
    is($first->{status}, 503, 'frozen master: the first /init gets 503');
    like($first->{content}, qr/redis timed out/, '... when its deadline passed');
    is($second->{status}, 503, 'the next /init: 503');
    like($second->{content}, qr/redis unavailable/,
         '... at once: the deadline marked the node stalled, nothing was sent');
    is(init_stock($g, $products[1], 1000, key => uniq('i'))->{status}, 200,
       'a product on another master is set meanwhile');
    kill 'CONT', $pid{$port};
    @frozen = ();
    delete $c->{frozen}{$port};
    ok(wait_until(15, sub { order($products[0])->{status} == 200 }),
       'thawed: its orders sell again');
}

# 2. a frozen replica does not stop the map's refresh
{
    # the masters now (a slow machine's freeze above may have failed one
    # over), and the victim's replica holding all of its writes: the
    # replication is asynchronous here (no fluxgate_redis_wait), and this
    # is about the map, not about a write lost with its master
    @m = map { cluster_master_of($c, "fg:{$_}:stock") } @products;
    my ($victim) = $m[0] =~ /:(\d+)$/;
    my ($other) = $m[1] =~ /:(\d+)$/;
    my %masters = map { $_->{port} => $_ } @{ cluster_masters($c) };
    my $nodes = cluster_nodes($c);
    my $replica_of = sub {
        my ($port) = @_;
        map { $_->{port} } grep {
            $_->{flags} =~ /slave/ && $_->{master} eq $masters{$port}{id}
        } @$nodes;
    };
    my ($replica) = $replica_of->($other);
    ok($replica, "a replica of $m[1] to freeze: $replica");
    my ($heir) = $replica_of->($victim);
    my $offset = sub {
        my ($port, $field) = @_;
        (join("\n", node_redis($port, 'INFO', 'replication')) =~ /^$field:(\d+)/m)[0] // -1;
    };
    ok($heir && wait_until(20, sub {
        $offset->($heir, 'slave_repl_offset') >= $offset->($victim, 'master_repl_offset')
    }), "$m[0]'s replica $heir has all its writes");
    kill 'STOP', $pid{$replica};
    push @frozen, $pid{$replica};
    $c->{frozen}{$replica} = 1;

    my $t0 = time;
    cluster_kill($c, $victim);
    my $new;
    ok(wait_until(30, sub {
        $new = cluster_master_of($c, "fg:{$products[0]}:stock");
        $new && $new ne $m[0];
    }), "the killed master's replica is promoted ($new)");
    # orders on its products keep asking, and so the map is fetched again
    # and again, from each node in turn, the frozen one among them
    my $res;
    ok(wait_until(40, sub { $res = order($products[0]); $res->{status} == 200 }),
       'its products sell again with a node frozen: the map was refreshed')
        or diag("the last answer: $res->{status} $res->{content}; "
                . join '; ', map {
                    my $role = (node_redis($_, 'ROLE'))[0] // '?';
                    "$_ $role: gen " . (node_redis($_, 'EXISTS', "fg:{$products[0]}:gen") // '?')
                } grep { $_ != $victim } cluster_alive($c));
    diag(sprintf 'first 200 on the promoted master %.1f s after kill -9', time - $t0);

    # whether that gate asked the frozen node for the map or had already
    # marked it stalled (its heartbeat) is a race; a gate whose first seed
    # is the frozen node asks it first, always: the kernel accepts the
    # connection, and CLUSTER SLOTS is never answered
    my @rest = grep { $_ != $replica } cluster_alive($c);
    my $g2 = gate_start(workers => 1, extra => "fluxgate_redis_timeout 300ms;",
                        redis => 'cluster ' . join ' ', map { "127.0.0.1:$_" } $replica, @rest);
    like(gate_log($g2), qr/no reply to CLUSTER SLOTS from 127\.0\.0\.1:$replica within 1000ms, asking another node/,
         'a gate whose first seed is frozen: its CLUSTER SLOTS missed the deadline, another node was asked');
    my $res2;
    ok(wait_until(20, sub { $res2 = order($products[0], $g2); $res2->{status} == 200 }),
       '... and it sells from the map another node gave')
        or diag("the last answer: $res2->{status} $res2->{content}");
    gate_stop($g2);    # which checks its log for alerts
    kill 'CONT', $pid{$replica};
    @frozen = ();
    delete $c->{frozen}{$replica};
}

unlike(gate_log($g), qr/\[(alert|crit|emerg)\]/, 'no alert in the log');
gate_stop($g);
done_testing();
