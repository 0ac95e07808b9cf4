# The stack as a whole: every service RUNNING under supervisord, nginx serves
# the shop on FLUXGATE_URL with the module loaded, the worker runs, and
# DIR/env says where everything is; the settler runs beside the worker.
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
my $res = $http->get("$ENV{FLUXGATE_URL}/health");
is($res->{status}, 200, 'nginx answers on FLUXGATE_URL');

$res = $http->get("$ENV{FLUXGATE_URL}/waiting-room/");
is($res->{status}, 200, 'the waiting room page is served');
like($res->{content}, qr/<html/i, 'and it is a page');

$res = $http->get("$ENV{FLUXGATE_URL}/order");
is($res->{status}, 405, 'GET /order reaches the module (405)');

my $env = `cat $ENV{FG_RUN_DIR}/env`;
for my $v (qw(FLUXGATE_URL REDIS_HOST REDIS_PORT PGHOST PGPORT PGDATABASE
              PGUSER KAFKA_BOOTSTRAP)) {
    like($env, qr/^export $v=\S+$/m, "env has $v");
}

my $access = "$ENV{FG_RUN_DIR}/logs/nginx-access.log";
ok(wait_until(5, sub { -s $access }), 'access log written');

done_testing();
