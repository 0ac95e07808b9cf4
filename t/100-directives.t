# ngx_fluxgate_module's directives: every one is accepted where DESIGN.md
# puts it, and every bad value fails `nginx -t` with a message that names
# the directive.
use strict;
use warnings;
use lib 't/lib';
use Test::Nginx::Socket::Lite;
use FluxGate::Test ();

plan 'no_plan';
run_tests();

__DATA__

=== TEST 1: every directive, at every level it is allowed
--- http_config
    fluxgate_redis 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    fluxgate_redis_timeout 200ms;
    fluxgate_kafka_brokers $TEST_NGINX_KAFKA_BROKERS;
    fluxgate_kafka_topic orders;
    fluxgate_kafka_option linger.ms 1;
    fluxgate_kafka_option message.timeout.ms 3000;
    fluxgate_threshold 1000 burst=200;
    fluxgate_waiting_room /waiting-room/;
    fluxgate_idempotency_ttl 60s;
    fluxgate_max_quantity 10;
    fluxgate_per_user_limit 0;
    fluxgate_sold_out_cache 1s;
--- config
    fluxgate_redis localhost:$TEST_NGINX_REDIS_PORT;
    fluxgate_redis_timeout 1s;
    fluxgate_threshold off;
    fluxgate_waiting_room /wait/;
    fluxgate_idempotency_ttl 5m;
    fluxgate_max_quantity 3;
    fluxgate_per_user_limit 2;
    fluxgate_sold_out_cache off;

    location = /order {
        fluxgate_redis 127.0.0.1:$TEST_NGINX_REDIS_PORT;
        fluxgate_redis_timeout 300ms;
        fluxgate_threshold 10;
        fluxgate_waiting_room /w/;
        fluxgate_idempotency_ttl 20s;
        fluxgate_max_quantity 5;
        fluxgate_per_user_limit 1;
        fluxgate_sold_out_cache 500ms;
        fluxgate_order;
    }
    location = /init {
        fluxgate_stock_admin;
    }
    location = /t {
        return 200 "ok\n";
    }
--- request
GET /t
--- error_code: 200
--- response_body
ok
--- error_log
fluxgate: redis 127.0.0.1:
fluxgate: redis localhost:
--- no_error_log
retrying in



=== TEST 2: the module loaded but unused connects to nothing
--- config
    location = /t {
        return 200 "ok\n";
    }
--- request
GET /t
--- error_code: 200
--- no_error_log
fluxgate:
--- check
# a worker that answered has run its init_process, where a connection
# would have been opened (non-blocking, so its socket exists at once)
my @pids = (nginx_pid(), FluxGate::Test::nginx_workers(nginx_pid()));
my $re = join '|', map { "pid=$_," } @pids;
my @socks = grep { /$re/ } `ss -Htanp 2>/dev/null`;
my @out = grep { !/^LISTEN/ } @socks;
ok(@pids > 1, "$main::name - nginx runs workers (@pids)");
is(scalar @out, 0, "$main::name - no socket of nginx's but its listening one")
    or diag(@out);



=== TEST 3: fluxgate_threshold: not a number
--- http_config
    fluxgate_threshold abc;
--- must_die
--- error_log
invalid value "abc" in "fluxgate_threshold" directive



=== TEST 4: fluxgate_threshold: a bad burst
--- http_config
    fluxgate_threshold 10 burst=x;
--- must_die
--- error_log
invalid parameter "burst=x" in "fluxgate_threshold" directive



=== TEST 5: fluxgate_threshold: something else than burst=
--- http_config
    fluxgate_threshold 10 nodelay;
--- must_die
--- error_log
invalid parameter "nodelay" in "fluxgate_threshold" directive



=== TEST 6: fluxgate_threshold: twice at one level
--- http_config
    fluxgate_threshold 10;
    fluxgate_threshold 20;
--- must_die
--- error_log
"fluxgate_threshold" directive is duplicate



=== TEST 7: fluxgate_redis_timeout: not a time
--- http_config
    fluxgate_redis_timeout abc;
--- must_die
--- error_log
"fluxgate_redis_timeout" directive invalid value



=== TEST 8: fluxgate_redis_timeout: zero
--- http_config
    fluxgate_redis_timeout 0;
--- must_die
--- error_log
"fluxgate_redis_timeout" directive must be positive



=== TEST 9: fluxgate_idempotency_ttl: not a time
--- http_config
    fluxgate_idempotency_ttl forever;
--- must_die
--- error_log
"fluxgate_idempotency_ttl" directive invalid value



=== TEST 10: fluxgate_max_quantity: zero
--- http_config
    fluxgate_max_quantity 0;
--- must_die
--- error_log
"fluxgate_max_quantity" directive must be positive



=== TEST 11: fluxgate_max_quantity: not a number
--- http_config
    fluxgate_max_quantity ten;
--- must_die
--- error_log
"fluxgate_max_quantity" directive invalid number



=== TEST 12: fluxgate_per_user_limit: negative
--- http_config
    fluxgate_per_user_limit -1;
--- must_die
--- error_log
"fluxgate_per_user_limit" directive invalid number



=== TEST 13: fluxgate_redis: a host that does not resolve
--- http_config
    fluxgate_redis no-such-host.invalid:6379;
--- must_die
--- error_log
"fluxgate_redis" directive



=== TEST 14: fluxgate_redis: a bad port
--- http_config
    fluxgate_redis 127.0.0.1:99999;
--- must_die
--- error_log
invalid port in "127.0.0.1:99999" of the "fluxgate_redis" directive



=== TEST 15: fluxgate_kafka_option: an unknown property
--- http_config
    fluxgate_kafka_option no.such.property 1;
--- must_die
--- error_log
No such configuration property: "no.such.property" in "fluxgate_kafka_option" directive



=== TEST 16: fluxgate_kafka_option: a bad value
--- http_config
    fluxgate_kafka_option acks banana;
--- must_die
--- error_log
in "fluxgate_kafka_option" directive



=== TEST 17: fluxgate_kafka_option: one argument
--- http_config
    fluxgate_kafka_option linger.ms;
--- must_die
--- error_log
invalid number of arguments in "fluxgate_kafka_option" directive



=== TEST 18: fluxgate_kafka_brokers: only in http
--- config
    fluxgate_kafka_brokers 127.0.0.1:9092;
--- must_die
--- error_log
"fluxgate_kafka_brokers" directive is not allowed here



=== TEST 19: fluxgate_order: no Kafka brokers
--- config
    location = /order {
        fluxgate_order;
    }
--- must_die
--- error_log
"fluxgate_order" and "fluxgate_stock_admin" need "fluxgate_kafka_brokers"



=== TEST 20: fluxgate_order: takes no arguments
--- http_config
    fluxgate_kafka_brokers 127.0.0.1:9092;
--- config
    location = /order {
        fluxgate_order on;
    }
--- must_die
--- error_log
invalid number of arguments in "fluxgate_order" directive



=== TEST 21: fluxgate_order: only in a location
--- http_config
    fluxgate_kafka_brokers 127.0.0.1:9092;
    fluxgate_order;
--- must_die
--- error_log
"fluxgate_order" directive is not allowed here



=== TEST 22: fluxgate_stock_admin: twice in one location
--- http_config
    fluxgate_kafka_brokers 127.0.0.1:9092;
--- config
    location = /init {
        fluxgate_stock_admin;
        fluxgate_stock_admin;
    }
--- must_die
--- error_log
"fluxgate_stock_admin" directive is duplicate



=== TEST 23: fluxgate_idempotency_ttl shorter than Kafka's delivery timeout plus the finishing grace
--- http_config
    fluxgate_kafka_brokers 127.0.0.1:9092;
    fluxgate_kafka_option message.timeout.ms 30000;
--- config
    location = /order {
        fluxgate_idempotency_ttl 30s;
        fluxgate_order;
    }
--- must_die
--- error_log
"fluxgate_idempotency_ttl" 30000ms is shorter than the kafka delivery timeout (message.timeout.ms 30000ms) plus the 10000ms the gate may take to finish an order: a retried order could be sold twice; make it at least 40000ms



=== TEST 24: the same TTL with the default delivery timeout (5 s) is fine
--- http_config
    fluxgate_kafka_brokers 127.0.0.1:9092;
--- config
    location = /order {
        fluxgate_idempotency_ttl 15s;
        fluxgate_order;
    }
--- request
GET /order
--- error_code: 405
