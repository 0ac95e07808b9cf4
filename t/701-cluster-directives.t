# `fluxgate_redis cluster host:port ...` and `fluxgate_redis_wait N
# timeout`: accepted where the other Redis directives are, and every bad
# form fails `nginx -t` naming the directive.  A cluster whose nodes are
# not a cluster (the stack's plain Redis answers CLUSTER SLOTS with an
# error) leaves the gate without a slot map: orders get 503, never a
# command sent to a guessed node.
use strict;
use warnings;
use lib 't/lib';
use Test::Nginx::Socket::Lite;

plan 'no_plan';
run_tests();

__DATA__

=== TEST 1: both directives, at every level
--- http_config
    fluxgate_redis cluster 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    fluxgate_redis_wait 1 100ms;
    fluxgate_kafka_brokers $TEST_NGINX_KAFKA_BROKERS;
--- config
    fluxgate_redis cluster 127.0.0.1:$TEST_NGINX_REDIS_PORT localhost:$TEST_NGINX_REDIS_PORT;
    fluxgate_redis_wait 0 0;
    location = /order {
        fluxgate_redis cluster 127.0.0.1:$TEST_NGINX_REDIS_PORT;
        fluxgate_redis_wait 2 50ms;
        fluxgate_order;
    }
    location = /t {
        return 200 "ok\n";
    }
--- request
GET /t
--- error_code: 200
--- response_body
ok



=== TEST 2: not a cluster: no slot map, orders get 503
--- http_config
    fluxgate_redis cluster 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    fluxgate_kafka_brokers $TEST_NGINX_KAFKA_BROKERS;
--- config
    location = /order {
        fluxgate_order;
    }
--- request
POST /order
{"productId":"p701","userId":"u1"}
--- more_headers
Content-Type: application/json
X-Idempotency-Key: k701
--- error_code: 503
--- error_log
CLUSTER SLOTS from 127.0.0.1:



=== TEST 3: cluster without a node
--- http_config
    fluxgate_redis cluster;
--- must_die
--- error_log
"fluxgate_redis" directive takes one address, or "cluster" and one or more



=== TEST 4: two plain addresses
--- http_config
    fluxgate_redis 127.0.0.1:6379 127.0.0.1:6380;
--- must_die
--- error_log
"fluxgate_redis" directive takes one address



=== TEST 5: a cluster node on a unix socket
--- http_config
    fluxgate_redis cluster unix:/tmp/redis.sock;
--- must_die
--- error_log
a cluster node is host:port, not "unix:/tmp/redis.sock"



=== TEST 6: a cluster node that does not resolve
--- http_config
    fluxgate_redis cluster 127.0.0.1:6379 no-such-host.invalid:6379;
--- must_die
--- error_log
"fluxgate_redis" directive



=== TEST 7: fluxgate_redis_wait: not a number
--- http_config
    fluxgate_redis_wait one 100ms;
--- must_die
--- error_log
"fluxgate_redis_wait" directive wants a number of replicas



=== TEST 8: fluxgate_redis_wait: no timeout
--- http_config
    fluxgate_redis_wait 1 0;
--- must_die
--- error_log
"fluxgate_redis_wait" directive wants a positive timeout



=== TEST 9: fluxgate_redis_wait: a bad time
--- http_config
    fluxgate_redis_wait 1 soon;
--- must_die
--- error_log
"fluxgate_redis_wait" directive wants a positive timeout



=== TEST 10: fluxgate_redis_wait: a timeout at or past fluxgate_redis_timeout
--- http_config
    fluxgate_redis_timeout 200ms;
    fluxgate_redis_wait 1 200ms;
--- must_die
--- error_log
"fluxgate_redis_wait" timeout 200ms must be shorter than "fluxgate_redis_timeout" 200ms
