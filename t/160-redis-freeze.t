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
use Time::HiRes qw(time sleep);


our $HTTP = <<'EOF';
    fluxgate_redis 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    fluxgate_redis_timeout 300ms;
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
set_stock("$ENV{TEST_NGINX_P}", 5);
--- request
GET /static
--- error_code: 200
--- timeout: 30
--- check
my $p = $ENV{TEST_NGINX_P};
my $k1 = uniq('k');
my ($order, $static, $t_order, $t_static, $fast);
eval {
    kill 'STOP', $main::Redis; $main::frozen = 1;
    my $t0 = time;
    my $s = main::send_only(main::order_request($k1, 'u1'));
    sleep 0.05;
    my $t1 = time;
    $static = http_request("GET /static HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", 5);
    $t_static = time - $t1;
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
ok($t_order < 1.0, sprintf("$main::name - within the 300ms deadline (%.3fs)", $t_order));
is($static->{status}, 200, "$main::name - static location answers");
ok($t_static < 0.1, sprintf("$main::name - at once (%.3fs) while the order waits", $t_static));
# per worker: with two, the next order may meet the one not stalled yet
my ($workers) = `cat @{[servroot()]}/conf/nginx.conf` =~ /worker_processes (\d+)/;
ok($fast < ($workers == 1 ? 0.2 : 1.0),
   sprintf("$main::name - fails fast while stalled (%.3fs)", $fast));

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
