# The stack as a whole: every service RUNNING under supervisord, nginx serves
# the shop on FLUXGATE_URL with the module loaded and the admin locations on
# FLUXGATE_ADMIN_URL (loopback) only, the worker runs, the settler runs
# beside it, and DIR/env says where everything is.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use HTTP::Tiny;
use FluxGate::Test;

for my $s (qw(redis postgres kafka nginx worker settler)) {
    like(svc('status', $s), qr/RUNNING/, "$s is running");
}
like(svc('status', 'bootstrap'), qr/EXITED|STOPPED/, 'bootstrap finished');
unlike(`cat $ENV{FG_RUN_DIR}/logs/bootstrap.log`, qr/not ready|ERROR/i,
       'bootstrap reported no failure');

my $http = HTTP::Tiny->new(timeout => 5);
my $res = $http->get("$ENV{FLUXGATE_HEALTH_URL}");
is($res->{status}, 200, 'nginx answers on FLUXGATE_HEALTH_URL');
is($res->{content}, '{"status":"ok","redis":"up","kafka":"up"}',
   'and it is fluxgate_health: Redis and Kafka up');
$res = $http->get("$ENV{FLUXGATE_METRICS_URL}");
is($res->{status}, 200, 'nginx answers on FLUXGATE_METRICS_URL');
like($res->{content}, qr/^fluxgate_orders_total\{outcome="accepted"\} \d+$/m,
     'with the gate\'s metrics');
like($ENV{FLUXGATE_METRICS_URL}, qr{^\Q$ENV{FLUXGATE_ADMIN_URL}\E/}, 'on the admin listener');
like($ENV{FLUXGATE_ADMIN_URL}, qr{^http://127\.0\.0\.1:\d+$}, 'the admin listener is on loopback');
isnt($ENV{FLUXGATE_ADMIN_URL}, $ENV{FLUXGATE_URL}, 'and not the shop\'s port');

$res = http_post("$ENV{FLUXGATE_URL}/init", '{"productId":"p040","quantity":1}');
is($res->{status}, 404, 'the shop\'s port does not serve /init');
$res = $http->get("$ENV{FLUXGATE_URL}/health");
is($res->{status}, 404, 'nor /health');
$res = $http->get("$ENV{FLUXGATE_URL}/metrics");
is($res->{status}, 404, 'nor /metrics');
$res = $http->get("$ENV{FLUXGATE_ADMIN_URL}/init");
is($res->{status}, 405, 'the admin listener serves /init (GET: 405)');

$res = $http->get("$ENV{FLUXGATE_URL}/waiting-room/");
is($res->{status}, 200, 'the waiting room page is served');
like($res->{content}, qr/<html/i, 'and it is a page');
$res = $http->get("$ENV{FLUXGATE_URL}/waiting-room/waiting-room.js");
is($res->{status}, 200, 'with its script');
like(`cat $ENV{FG_RUN_DIR}/nginx/nginx.conf`, qr{alias \Q$ENV{FG_RUN_DIR}\E/www/waiting-room/;},
     'from the run directory, not the checkout');
$res = $http->get("$ENV{FLUXGATE_URL}/");
is($res->{status}, 200, 'the demo shop is served at /');
like($res->{content}, qr/Buy now/, 'and it is the shop page');
$res = $http->get("$ENV{FLUXGATE_URL}/products.json");
like($res->{content}, qr/"productId":"[^"]+".*"stock":(?:null|\d+)/s,
     'its products.json, written by the stack');

$res = $http->get("$ENV{FLUXGATE_URL}/order");
is($res->{status}, 405, 'GET /order reaches the module (405)');

my $env = `cat $ENV{FG_RUN_DIR}/env`;
for my $v (qw(FLUXGATE_URL FLUXGATE_ADMIN_URL FLUXGATE_HEALTH_URL
              FLUXGATE_METRICS_URL REDIS_HOST
              REDIS_PORT PGHOST PGPORT PGDATABASE PGUSER KAFKA_BOOTSTRAP)) {
    like($env, qr/^export $v=\S+$/m, "env has $v");
}

my $access = "$ENV{FG_RUN_DIR}/logs/nginx-access.log";
ok(wait_until(5, sub { -s $access }), 'access log written');

done_testing();
