# The Redis connection of each worker: scripts flushed from Redis are
# loaded again (NOSCRIPT), a unix socket address works, and a Redis that
# goes away and comes back is reconnected to with backoff while orders
# fail fast with 503 in between.
use strict;
use warnings;
use lib 't/lib';
use Test::Nginx::Socket::Lite;
use FluxGate::Test;
use File::Temp qw(tempdir);
use Time::HiRes qw(time sleep);


# a private Redis on a unix socket, this file's to stop and start
our $Dir = tempdir('/tmp/fg-t190.XXXXXX', CLEANUP => 1);
chmod 0755, $Dir;
$ENV{TEST_NGINX_REDIS_SOCK} = "$Dir/redis.sock";

sub private_redis {
    my ($up) = @_;
    if ($up) {
        system("redis-server --port 0 --unixsocket $Dir/redis.sock --unixsocketperm 777"
               . " --save '' --appendonly no --daemonize yes --pidfile $Dir/redis.pid"
               . " --logfile $Dir/redis.log") == 0 or die "redis-server: $?";
        wait_until(5, sub { -S "$Dir/redis.sock" }) or die "no socket";
    } else {
        system("redis-cli -s $Dir/redis.sock shutdown nosave >/dev/null 2>&1");
        wait_until(5, sub { !-S "$Dir/redis.sock" });
    }
}

sub sock {
    my $cmd = join ' ', map { (my $w = $_) =~ s/'/'\\''/g; "'$w'" } @_;
    my $o = `redis-cli -s $Dir/redis.sock $cmd`;
    chomp $o;
    return $o;
}

sub order {
    my ($uri, $key) = @_;
    return http_post("http://127.0.0.1:" . server_port() . $uri,
                     qq({"productId":"$ENV{TEST_NGINX_P}","userId":"u-$key"}),
                     { 'X-Idempotency-Key' => $key });
}

private_redis(1);
END { private_redis(0) if $Dir }

# long enough that an order waiting for it is told from one refused at once
our $RedisTimeout = 3;
$ENV{TEST_NGINX_REDIS_TIMEOUT} = "${RedisTimeout}s";

our $HTTP = <<'EOF';
    fluxgate_redis 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    fluxgate_redis_timeout $TEST_NGINX_REDIS_TIMEOUT;
    fluxgate_kafka_brokers $TEST_NGINX_KAFKA_BROKERS;
EOF

our $CONFIG = <<'EOF';
    location = /order {
        fluxgate_order;
    }
    location = /unix {
        fluxgate_redis unix:$TEST_NGINX_REDIS_SOCK;
        fluxgate_order;
    }
EOF

plan 'no_plan';
run_tests();

__DATA__

=== TEST 1: SCRIPT FLUSH: the next order loads the script again and succeeds
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- init
$ENV{TEST_NGINX_P} = uniq('p');
set_stock($ENV{TEST_NGINX_P}, 5);
--- request
POST /order
{"productId":"$TEST_NGINX_P","userId":"u1"}
--- more_headers
Content-Type: application/json
X-Idempotency-Key: before
--- error_code: 200
--- check
my $from = -s servroot() . "/logs/error.log";
redis('SCRIPT', 'FLUSH');
is(main::order('/order', 'flushed')->{status}, 200, "$main::name - 200 after the flush");
like(error_log_since($from), qr/order\.lua was not loaded, loading it again/,
     "$main::name - NOSCRIPT seen and handled");
is(redis('GET', "fg:{$ENV{TEST_NGINX_P}}:stock"), 3, "$main::name - each reserved once");
ok(wait_until(3, sub { redis('HGET', "fg:{$ENV{TEST_NGINX_P}}:idem:flushed", 's') eq '200' }),
   "$main::name - done.lua ran too");



=== TEST 2: unix socket; Redis gone: fast 503; Redis back: orders flow, no restart
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- init
$ENV{TEST_NGINX_P} = uniq('p');
set_stock($ENV{TEST_NGINX_P}, 5, via => \&main::sock);
--- request
POST /unix
{"productId":"$TEST_NGINX_P","userId":"u1"}
--- more_headers
Content-Type: application/json
X-Idempotency-Key: first
--- error_code: 200
--- timeout: 20
--- check
is(main::sock('GET', "fg:{$ENV{TEST_NGINX_P}}:stock"), 4, "$main::name - reserved through the socket");
main::private_redis(0);
my $t0 = time;
my $res = main::order('/unix', 'while-down');
is($res->{status}, 503, "$main::name - Redis down: 503");
# refused at once, not after waiting for Redis: well under the timeout
my $took = time - $t0;
ok($took < $main::RedisTimeout / 2,
   sprintf("$main::name - at once (%.3fs, a wait would take the %ds timeout)",
           $took, $main::RedisTimeout));
is($res->{headers}{'retry-after'}, 1, "$main::name - with Retry-After");
main::private_redis(1);
set_stock($ENV{TEST_NGINX_P}, 5, via => \&main::sock);
ok(wait_until(10, sub { main::order('/unix', 'after-' . int(time * 10))->{status} == 200 }),
   "$main::name - orders flow again after the reconnect");
