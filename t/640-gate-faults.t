# Faults inside the gate's own connections, each injected for real:
#   1. Redis behind an address that goes silent without a FIN or RST (a
#      partition, a failover behind a virtual IP): the gate replaces the
#      stalled connection within about a second and orders flow again,
#      instead of answering 503 until TCP gives up minutes later.
#   2. The idempotent producer hits a fatal error: the gate replaces it and
#      orders flow again without a reload (test builds: make test's
#      sanitized module has the injection hook).
#   3. A fast shutdown while delivery reports are still to come and Redis
#      is gone: each report is answered without touching freed memory
#      (AddressSanitizer watches: t/990), and the claims no script could
#      end are settled afterwards.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use IO::Select;
use IO::Socket::INET;
use POSIX ();
use Time::HiRes qw(time sleep);
use FluxGate::Test;
use FluxGate::Fleet;

# A TCP proxy to Redis.  SIGUSR1: every connection open now goes silent
# (kept open, nothing forwarded either way), as behind a dead virtual IP;
# connections made after it are forwarded as usual.
sub silent_proxy {
    my $listen = IO::Socket::INET->new(Listen => 64, LocalAddr => '127.0.0.1',
                                       LocalPort => 0, ReuseAddr => 1) or die $!;
    my $port = $listen->sockport;
    my $pid = fork // die;
    if ($pid) { close $listen; return ($pid, $port) }
    my (%peer, %silent);
    my $dead = 0;
    $SIG{USR1} = sub { $dead = 1 };
    my $sel = IO::Select->new($listen);
    my $stop = time + 300;
    while (time < $stop) {
        if ($dead) {
            $silent{$_} = 1 for keys %peer;
            $dead = 0;
            # says so: the test goes on once the connections are silent
            if (open my $fh, '>', "$ENV{FG_RUN_DIR}/silent.$$") { close $fh }
        }
        for my $s ($sel->can_read(0.05)) {
            if ($s == $listen) {
                my $c = $listen->accept or next;
                my $r = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$ENV{REDIS_PORT}") or next;
                @peer{$c, $r} = ($r, $c);
                $sel->add($c, $r);
                next;
            }
            next if $silent{$s};
            my $n = sysread($s, my $buf, 65536);
            my $o = $peer{$s};
            if (!$n) {
                $sel->remove($s, $o);
                delete @peer{$s, $o};
                close $s; close $o;
                next;
            }
            syswrite($o, $buf);
        }
    }
    POSIX::_exit(0);
}

sub order_at {
    my ($g, $p, $key) = @_;
    return http_post(gate_url($g) . '/order',
                     json_encode({ productId => $p, userId => "u-$key" }),
                     { 'X-Idempotency-Key' => $key });
}

{
    my $name = 'a stalled Redis connection';
    my ($proxy, $port) = silent_proxy();
    my $g = gate_start(workers => 1, redis => "127.0.0.1:$port");
    my $p = uniq('f640a');
    set_stock($p, 100);
    is(order_at($g, $p, 'before')->{status}, 200, "$name - orders pass through the proxy");
    kill 'USR1', $proxy;
    ok(wait_until(10, sub { -e "$ENV{FG_RUN_DIR}/silent.$proxy" }),
       "$name - the proxy went silent");
    my $t0 = time;
    is(order_at($g, $p, 'silent')->{status}, 503, "$name - the silent connection: 503");
    my $ok_at;
    wait_until(20, sub {
        my $r = order_at($g, $p, 'after-' . int(time * 1000));
        $ok_at = time if $r->{status} == 200;
        $ok_at;
    });
    ok($ok_at, "$name - orders flow again on a new connection");
    my $took = ($ok_at // time) - $t0;
    diag(sprintf "%s: 200 again %.2f s after the silence began", $name, $took);
    cmp_ok($took, '<', 5, "$name - within seconds (the bound is 1 s of silence + backoff)");
    like(gate_log($g), qr/no reply for 1000ms after a deadline passed, replacing the connection/,
         "$name - the log says why");
    gate_stop($g);
    kill 'KILL', $proxy;
    waitpid $proxy, 0;
}

# the hook is compiled into the test build (make test, SANITIZE=1) only;
# SANITIZE=0 tests the shipped module, which has none: by design, a skip.
# In a test build a missing hook is a failure.
my $module = $ENV{FG_MODULE} || "$ENV{FG_ROOT}/build/ngx_fluxgate_module.so";
my $hook = `grep -c FLUXGATE_TEST_KAFKA_FATAL_AFTER $module 2>/dev/null` > 0;
SKIP: {
    skip 'the fatal-error hook is in test builds only (make test, SANITIZE=1)', 7
        unless $ENV{FG_SANITIZE};
    skip_missing("the test build $module has no fatal-error hook", 7)
        unless $hook;
    my $name = 'a fatal producer error';
    my $g = gate_start(workers => 1, main => 'env FLUXGATE_TEST_KAFKA_FATAL_AFTER=3;');
    my $p = uniq('f640b');
    my @ok;
    my $ordered = sub {
        my $res = order_at($g, $p, shift);
        push @ok, json_decode($res->{content})->{orderId} if $res->{status} == 200;
        return $res->{status};
    };
    is(init_stock($g, $p, 100, key => "k-$p")->{status}, 200, "$name - product set (1st message)");
    is($ordered->('k1'), 200, "$name - an order (2nd message)");
    # the 3rd message is the one the producer fails on: not persisted, it
    # is released (503); possibly persisted, its claim is settled later
    my $third = $ordered->('k2');
    ok($third == 200 || $third == 503, "$name - the order caught in the fatal error: $third");
    ok(wait_until(10, sub { gate_log($g) =~ /fatal producer error.*replacing the producer/ }),
       "$name - the fatal error is logged");
    ok(wait_until(10, sub { gate_log($g) =~ /producer replaced after a fatal error/ }),
       "$name - and the producer replaced");
    my @after = map { $ordered->("after$_") } 1 .. 5;
    is_deeply(\@after, [(200) x 5], "$name - orders flow again without a reload");
    ok(settle_claims($p, deadline => 3000), "$name - the caught order's claim settled");
    books_balance($name, [$p], \@ok);
    gate_stop($g);
}

{
    my $name = 'fast shutdown with reports due and Redis gone';
    my $g = gate_start(workers => 1);
    my $p = uniq('f640c');
    is(init_stock($g, $p, 50, key => "k-$p")->{status}, 200, "$name - product set");
    my $kafka = svc_pid('kafka');
    kill 'STOP', $kafka;
    my @pids;
    for my $i (1 .. 6) {
        my $pid = fork // die;
        if (!$pid) { order_at($g, $p, "c$i"); POSIX::_exit(0) }
        push @pids, $pid;
    }
    ok(wait_until(5, sub { redis('GET', "fg:{$p}:stock") == 44 }), "$name - 6 reserved, waiting for Kafka");
    svc('stop', 'redis');
    my ($master) = `cat $g->{dir}/nginx.pid` =~ /(\d+)/;
    kill 'TERM', $master;
    # Kafka thaws once the gate is shutting down: the reports come due then
    ok(wait_until(10, sub { gate_log($g) =~ /signal 15 \(SIGTERM\) received/ }),
       "$name - the gate is shutting down");
    kill 'CONT', $kafka;
    ok(wait_until(20, sub { !kill 0, $master }), "$name - the gate exited");
    waitpid $_, 0 for @pids;
    svc('start', 'redis');
    wait_until(30, sub { eval { redis('PING') } eq 'PONG' && svc('status', 'redis') =~ /RUNNING/ });
    unlike(gate_log($g), qr/AddressSanitizer|heap-use-after-free/, "$name - no use after free");
    ok(settle_claims($p, deadline => 3000), "$name - the claims left pending were settled");
    books_balance($name, [$p], []);
}

done_testing();
