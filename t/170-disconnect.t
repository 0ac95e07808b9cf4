# Clients that disconnect mid-flight (the request sent, the socket closed
# before the answer): the orders still complete, exactly as if the clients
# had stayed; the worker does not crash and nothing is logged as leaked.
use strict;
use warnings;
use lib 't/lib';
use Test::Nginx::Socket::Lite;
use FluxGate::Test;
use IO::Socket::INET;
use Time::HiRes qw(time sleep);


our $HTTP = <<'EOF';
    fluxgate_redis 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    fluxgate_kafka_brokers $TEST_NGINX_KAFKA_BROKERS;
    fluxgate_kafka_topic $TEST_NGINX_TOPIC;
EOF

our $CONFIG = <<'EOF';
    location = /order {
        fluxgate_order;
    }
    location = /init {
        fluxgate_stock_admin;
    }
EOF

our $Nginx = $ENV{FG_NGINX} || '/usr/sbin/nginx';

$ENV{TEST_NGINX_TOPIC} = uniq('t170');
kafka_create_topic($ENV{TEST_NGINX_TOPIC});

sub hang_up {
    my ($uri, $body, $key) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => server_port(),
                                  Proto => 'tcp', Timeout => 5) or die $!;
    print $s "POST $uri HTTP/1.1\r\nHost: localhost\r\n"
           . "Content-Type: application/json\r\n"
           . ($key ? "X-Idempotency-Key: $key\r\n" : '')
           . "Content-Length: " . length($body) . "\r\n\r\n$body";
    close $s;
}

plan 'no_plan';
run_tests();

__DATA__

=== TEST 1: 50 orders whose clients hang up: all 50 completed, worker alive
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- init
$ENV{TEST_NGINX_P} = uniq('p');
set_stock("$ENV{TEST_NGINX_P}", 100);
--- request
POST /order
{"productId":"$TEST_NGINX_P","userId":"first"}
--- more_headers
Content-Type: application/json
X-Idempotency-Key: first
--- error_code: 200
--- timeout: 30
--- check
my $p = $ENV{TEST_NGINX_P};
my $from = -s servroot() . "/logs/error.log";
my $pid = nginx_pid();
main::hang_up('/order', qq({"productId":"$p","userId":"u$_"}), "gone-$_") for 1 .. 50;
ok(wait_until(15, sub { redis('GET', "fg:{$p}:stock") == 49 }),
   "$main::name - every order reserved once") or diag(redis('GET', "fg:{$p}:stock"));
ok(wait_until(15, sub { !grep { redis('HGET', "fg:{$p}:idem:gone-$_", 's') ne '200' } 1 .. 50 }),
   "$main::name - every key marked done: the orders reached Kafka");
my @m;
wait_until(15, sub {
    @m = grep { $_->{key} eq $p } kafka_consume($ENV{TEST_NGINX_TOPIC}, timeout => 10);
    @m >= 51;
});
is(scalar @m, 51, "$main::name - 51 messages on Kafka");
is(nginx_pid(), $pid, "$main::name - master alive");
# a crash ("exited on signal"), a leaked connection ("open socket ...
# left") or an order unfinished at exit is an [alert]: the runner fails
# the block on any
my $res = http_post("http://127.0.0.1:" . server_port() . "/order",
                    qq({"productId":"$p","userId":"after"}), { 'X-Idempotency-Key' => 'after' });
is($res->{status}, 200, "$main::name - the worker still serves");

# the workers leave on a reload: each must have freed every order's state
$from = -s servroot() . "/logs/error.log";
my $pre = $ENV{FG_LD_PRELOAD} ? "LD_PRELOAD=$ENV{FG_LD_PRELOAD} " : '';
system("$pre$main::Nginx -p " . servroot() . "/ -c " . servroot()
       . "/conf/nginx.conf -s reload 2>/dev/null");
ok(wait_until(10, sub { error_log_since($from) =~ /exited with code 0/ }),
   "$main::name - the old worker exited") or diag(error_log_since($from));
unlike(error_log_since($from), qr/unfinished at exit/,
       "$main::name - nothing left in flight");



=== TEST 2: a stock admin client that hangs up: the stock is set and published anyway
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- init
$ENV{TEST_NGINX_P} = uniq('p');
--- request
GET /init
--- error_code: 405
--- timeout: 30
--- check
my $p = $ENV{TEST_NGINX_P};
main::hang_up('/init', qq({"productId":"$p","quantity":11}));
ok(wait_until(10, sub { redis('GET', "fg:{$p}:stock") eq '11' }), "$main::name - stock set");
my @m;
wait_until(15, sub {
    @m = grep { $_->{key} eq $p } kafka_consume($ENV{TEST_NGINX_TOPIC}, timeout => 10);
    @m >= 1;
});
like($m[0]{payload} // '', qr/"type":"stock_set".*"stock":11/, "$main::name - stock_set published");
