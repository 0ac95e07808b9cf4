# What the gate does when Redis refuses, or may still run a script late:
#   - an error that proves order.lua never ran (OOM: a script is refused
#     at its first write) answers 503 and releases nothing: no release.lua
#     retried for seconds, no "claim stays pending" in the log;
#   - release.lua, run for an order whose order.lua may still be on its way
#     (its connection was replaced with the script in flight), leaves a
#     tombstone that the late order.lua obeys, reserving nothing, while a
#     retry of the same key (another orderId) is decided as usual;
#   - /init is covered by fluxgate_redis_wait: without a replica to confirm
#     the new generation, 503, and its stock_set event is not published.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use File::Temp qw(tempdir);
use FluxGate::Test;
use FluxGate::Fleet;

my $dir = tempdir(CLEANUP => 1);
chmod 0755, $dir;
my ($port) = free_ports(1);
system('redis-server', '--port', $port, '--bind', '127.0.0.1', '--save', '',
       '--appendonly', 'no', '--daemonize', 'yes', '--dir', $dir,
       '--pidfile', "$dir/redis.pid", '--logfile', "$dir/redis.log") == 0
    or BAIL_OUT('redis-server');
wait_until(10, sub { `redis-cli -p $port ping 2>&1` =~ /PONG/ }) or BAIL_OUT('redis');
END { system("redis-cli -p $port shutdown nosave >/dev/null 2>&1") if $port }
my $private = sub { redis_at($port, @_) };

sub redis_at {
    my ($p, @cmd) = @_;
    my $q = join ' ', map { (my $s = $_) =~ s/'/'\\''/g; "'$s'" } @cmd;
    my $out = `redis-cli -p $p --raw $q 2>&1`;
    chomp $out;
    return wantarray ? split(/\n/, $out) : $out;
}

sub calls {
    my ($run, $cmd) = @_;
    my ($line) = grep { /^cmdstat_$cmd:/ } $run->('INFO', 'commandstats');
    return $line && $line =~ /calls=(\d+)/ ? $1 : 0;
}

sub order_at {
    my ($g, $p, $key) = @_;
    return http_post(gate_url($g) . '/order',
                     json_encode({ productId => $p, userId => "u-$key" }),
                     { 'X-Idempotency-Key' => $key });
}

# 1. OOM: refused before it ran, nothing to release
{
    my $topic = uniq('t161');
    kafka_create_topic($topic);
    my $g = gate_start(workers => 1, redis => "127.0.0.1:$port", topic => $topic);
    my $p = uniq('p');
    set_stock($p, 10, via => $private);
    is(order_at($g, $p, uniq('k'))->{status}, 200, 'an order sells');
    $private->('CONFIG', 'SET', 'maxmemory', 1);
    my $before = calls($private, 'evalsha');
    my $res = order_at($g, $p, uniq('k'));
    is($res->{status}, 503, 'out of memory: 503');
    # the grace in which release.lua would be retried is 10 s; evidence,
    # not a sleep: the gate logs the refusal at once, and by the time a
    # later order was decided, a release loop would have run many times
    ok(wait_until(5, sub { gate_log($g) =~ /order\.lua refused: OOM/ }),
       'the refusal is logged');
    $private->('CONFIG', 'SET', 'maxmemory', 0);
    ok(wait_until(10, sub { order_at($g, $p, uniq('k'))->{status} == 200 }),
       'memory back: orders sell');
    my $after = calls($private, 'evalsha');
    # order.lua for the refused one, for the next 200 (and its done.lua),
    # the tries of the wait above: never 50 releases
    my $log = gate_log($g);
    unlike($log, qr/releasing what it may have reserved/, 'no release started');
    unlike($log, qr/claim stays pending/, 'no claim said to be pending');
    unlike($log, qr/release\.lua: .*retrying/, 'no release.lua retried');
    cmp_ok($after - $before, '<', 20,
           "EVALSHA calls while refused: " . ($after - $before) . ' (a release loop makes 50)');
    is($private->('GET', "fg:{$p}:stock"), 8, 'the stock: the two sales only');
    gate_stop($g);
}

# 2. the tombstone
{
    my $read = sub { my $f = "$ENV{FG_ROOT}/lua/$_[0].lua"; local (@ARGV, $/) = $f; <> };
    my ($order, $release) = ($read->('order'), $read->('release'));
    my $p = uniq('p');
    set_stock($p, 5, via => $private);
    my $key = uniq('k');
    # order.lua as lua/expand.sh makes it, called as the gate calls it
    $order = `sh $ENV{FG_ROOT}/lua/expand.sh $ENV{FG_ROOT}/lua/order.lua`;
    my @k = map { "fg:{$p}:$_" } qw(stock q buyers), "idem:$key", qw(gen pending q:);
    my $run_order = sub {
        my ($oid) = @_;
        return $private->('EVAL', $order, scalar(@k), @k, 'u-1', 1, 'u-1:1', $oid,
                          60000, 0, 0, 0, $key, 0, 30000000, 3600000000,
                          'u-1', '', 0, '0', 'abcd', '', '', '', '');
    };
    my $oid = '0193aaaa-0000-7000-8000-000000000001';
    is($private->('EVAL', $release, 6, map({ "fg:{$p}:$_" } qw(stock buyers), "idem:$key", qw(gen pending q:)),
                  $oid, $key, 60000), 0, 'release.lua before order.lua: nothing to release');
    is($private->('HGET', "fg:{$p}:idem:$key", 's'), 'released', 'a tombstone');
    cmp_ok($private->('PTTL', "fg:{$p}:idem:$key"), '>', 0, '... that expires');
    is(join(',', $run_order->($oid)), '12', 'the late order.lua of that order: reserves nothing');
    is($private->('GET', "fg:{$p}:stock"), 5, 'the stock is whole');
    is($private->('ZCARD', "fg:{$p}:pending"), 0, 'no pending claim');
    my $retry = '0193aaaa-0000-7000-8000-000000000002';
    my @r = $run_order->($retry);
    is($r[0], 1, 'a retry of the key (another order): reserved');
    is($private->('HGET', "fg:{$p}:idem:$key", 's'), 'pending', 'its claim');
    is($private->('PTTL', "fg:{$p}:idem:$key"), -1, 'a claim has no TTL');
    is($private->('GET', "fg:{$p}:stock"), 4, 'one unit taken');
    # release.lua without the gate's ttl (fluxgate-reconcile) writes nothing
    my $k2 = uniq('k');
    is($private->('EVAL', $release, 5, map({ "fg:{$p}:$_" } qw(stock buyers), "idem:$k2", qw(gen pending)),
                  $oid, $k2), 0, 'release.lua without a ttl');
    is($private->('EXISTS', "fg:{$p}:idem:$k2"), 0, '... leaves no tombstone');
}

# 3. /init under fluxgate_redis_wait with no replica
{
    my $topic = uniq('t161w');
    kafka_create_topic($topic);
    my $g = gate_start(workers => 1, redis => "127.0.0.1:$port", topic => $topic,
                       extra => "fluxgate_redis_wait 1 100ms;\n    fluxgate_redis_timeout 500ms;");
    my $p = uniq('p');
    my $res = init_stock($g, $p, 100, key => uniq('i'));
    is($res->{status}, 503, '/init, no replica to confirm it: 503');
    like(gate_log($g), qr/stock of "\Q$p\E" not confirmed by redis \(WAIT: 0 of 1 replicas/,
         'logged: not confirmed, not published');
    my $g2 = gate_start(workers => 1, redis => "127.0.0.1:$port", topic => $topic);
    my $q = uniq('p');
    is(init_stock($g2, $q, 7)->{status}, 200, 'a gate without WAIT publishes its /init');
    my @events = grep { $_->{payload} =~ /"stock_set"/ }
                 kafka_consume($topic, count => 1, timeout => 20);
    is(scalar @events, 1, 'one event in the topic');
    like($events[0]{payload} // '', qr/"productId":"\Q$q\E"/, '... the second gate\'s');
    gate_stop($_) for $g, $g2;
}

done_testing();
