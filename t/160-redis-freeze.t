# Redis frozen with SIGSTOP: /order answers 503 within the deadline while a
# static location of the same nginx keeps answering at once (nothing
# blocks the worker); after SIGCONT orders flow again without restarting
# nginx, and the order that timed out is released when its late reply
# comes, so the stock is right.
use strict;
use warnings;
use lib 't/lib';
use Test::Nginx::Socket::Lite;
use FluxGate::Test;
use IO::Socket::INET;
use IO::Select;
use Time::HiRes qw(time sleep);

# the deadline of an order's Redis call, in seconds: long enough that
# "at once" and "after the deadline" are far apart on a loaded machine
our $Deadline = 1.5;
$ENV{TEST_NGINX_REDIS_TIMEOUT} = ($Deadline * 1000) . 'ms';

our $HTTP = <<'EOF';
    fluxgate_redis 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    fluxgate_redis_timeout $TEST_NGINX_REDIS_TIMEOUT;
    fluxgate_kafka_brokers $TEST_NGINX_KAFKA_BROKERS;
    fluxgate_kafka_topic $TEST_NGINX_TOPIC;
EOF

our $CONFIG = <<'EOF';
    location = /order {
        fluxgate_order;
    }
    location = /static {
        return 200 "static\n";
    }
EOF

$ENV{TEST_NGINX_TOPIC} = uniq('t160');
kafka_create_topic($ENV{TEST_NGINX_TOPIC});

our $Redis = svc_pid('redis') or die "no redis pid";
our $frozen = 0;
END { kill 'CONT', $Redis if $frozen }

sub order_request {
    my ($key, $user) = @_;
    my $body = qq({"productId":"$ENV{TEST_NGINX_P}","userId":"$user"});
    return "POST /order HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
         . "Content-Type: application/json\r\nX-Idempotency-Key: $key\r\n"
         . "Content-Length: " . length($body) . "\r\n\r\n$body";
}

sub send_only {
    my ($raw) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => server_port(),
                                  Proto => 'tcp', Timeout => 5) or die $!;
    print $s $raw;
    return $s;
}

sub read_all {
    my ($s, $timeout) = @_;
    my $resp = '';
    $s->blocking(0);
    my $end = time + $timeout;
    while (time < $end) {
        my $n = sysread($s, my $buf, 65536);
        last if defined $n && $n == 0;
        if (defined $n) { $resp .= $buf; next }
        sleep 0.005;
    }
    return $resp;
}

plan 'no_plan';
run_tests();

__DATA__

=== TEST 1: frozen Redis: 503 within the deadline, static answers at once, orders resume
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- init
$ENV{TEST_NGINX_P} = uniq('p');
set_stock($ENV{TEST_NGINX_P}, 5);
--- request
GET /static
--- error_code: 200
--- timeout: 30
--- check
my $p = $ENV{TEST_NGINX_P};
my $k1 = uniq('k');
my ($order, $static, $t_order, $t_static, $fast, $order_waiting);
eval {
    kill 'STOP', $main::Redis; $main::frozen = 1;
    my $t0 = time;
    my $s = main::send_only(main::order_request($k1, 'u1'));
    sleep 0.05;
    my $t1 = time;
    $static = http_request("GET /static HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", 5);
    $t_static = time - $t1;
    # nothing from the order yet: it is still waiting for Redis
    $order_waiting = !IO::Select->new($s)->can_read(0);
    $order = main::read_all($s, 5);
    $t_order = time - $t0;
    # while stalled, a new order fails fast instead of queueing up
    my $t2 = time;
    my $again = main::read_all(main::send_only(main::order_request(uniq('k'), 'u2')), 5);
    $fast = time - $t2;
    like($again, qr{^HTTP/1.1 503}, "$main::name - the next order 503 too");
};
kill 'CONT', $main::Redis; $main::frozen = 0;
die $@ if $@;
like($order, qr{^HTTP/1.1 503}, "$main::name - order: 503");
like($order, qr{\r\nRetry-After: 1\r\n}, "$main::name - with Retry-After");
# the bounds are the deadline's: what each check rules out takes it whole
my $d = $main::Deadline;
ok($t_order < $d + 1.5, sprintf("$main::name - within the %.1fs deadline (%.3fs)", $d, $t_order));
is($static->{status}, 200, "$main::name - static location answers");
# the proof that nothing blocks the worker is the order of events: the
# static answer came while the order still waited for Redis; how long it
# took is the machine's
ok($order_waiting, "$main::name - static answered while the order still waited");
diag(sprintf "static answered in %.3fs while Redis was frozen (the order's deadline %.1fs)",
             $t_static, $d);
# per worker: with two, the next order may meet the one not stalled yet,
# which waits its deadline like the first
my ($workers) = `cat @{[servroot()]}/conf/nginx.conf` =~ /worker_processes (\d+)/;
ok($fast < ($workers == 1 ? $d / 2 : $d + 1.5),
   sprintf("$main::name - fails fast while stalled (%.3fs, deadline %.1fs)", $fast, $d));

# after SIGCONT: the late reply of the first order is released, orders flow
ok(wait_until(10, sub {
    http_post("http://127.0.0.1:" . server_port() . "/order",
              qq({"productId":"$p","userId":"u3"}),
              { 'X-Idempotency-Key' => "after-$k1" })->{status} == 200 }),
   "$main::name - orders flow again without restarting nginx");
ok(wait_until(5, sub { redis('GET', "fg:{$p}:stock") == 4 }),
   "$main::name - stock: 5 minus the one 200, the timed-out one released")
    or diag("stock " . redis('GET', "fg:{$p}:stock"));
is(redis('EXISTS', "fg:{$p}:idem:$k1"), 0, "$main::name - the timed-out key is free again");
is(redis('HGET', "fg:{$p}:buyers", 'u1'), '', "$main::name - u1 bought nothing");
