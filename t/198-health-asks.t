# fluxgate_health asks instead of waiting to be told: with no traffic at
# all, a frozen Redis (SIGSTOP) reads down within 3 s and a frozen broker
# within 10 s, and both read up again within 10 s of thawing.  A Redis that
# answers but does not serve (a replica: READONLY; loading its dataset:
# LOADING) is down as well, and a reconnect to a frozen Redis (the kernel
# accepts the connection) is not "up" before a reply.  The topic of the
# producer must be fit: a deleted topic is down.
use strict;
use warnings;
use lib 't/lib';
use Test::Nginx::Socket::Lite;
use FluxGate::Test;
use File::Temp qw(tempdir);
use Time::HiRes qw(time sleep);

$ENV{TEST_NGINX_TOPIC} = uniq('t198');
kafka_create_topic($ENV{TEST_NGINX_TOPIC});

# a private Redis (port PRIVATE), and another it can be made a replica of
our $Dir = tempdir(CLEANUP => 1);
chmod 0755, $Dir;
our ($Private, $Upstream) = free_ports(2);
$ENV{TEST_NGINX_PRIVATE_PORT} = $Private;
for my $port ($Private, $Upstream) {
    system('redis-server', '--port', $port, '--bind', '127.0.0.1',
           '--save', '', '--appendonly', 'no', '--daemonize', 'yes',
           '--enable-debug-command', 'local',
           '--dir', $Dir, '--pidfile', "$Dir/redis-$port.pid",
           '--logfile', "$Dir/redis-$port.log") == 0
        or BAIL_OUT("redis-server on $port");
}
wait_until(10, sub { `redis-cli -p $Private ping 2>&1` =~ /PONG/
                     && `redis-cli -p $Upstream ping 2>&1` =~ /PONG/ })
    or BAIL_OUT('the private Redis servers did not start');

our @Frozen;
END {
    kill 'CONT', @Frozen if @Frozen;
    system("redis-cli -p $_ shutdown nosave >/dev/null 2>&1")
        for $Private, $Upstream;
}

sub private { my $cmd = join ' ', @_; my $o = `redis-cli -p $Private $cmd 2>&1`; chomp $o; $o }

our $HTTP = <<'EOF';
    fluxgate_redis 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    fluxgate_kafka_brokers $TEST_NGINX_KAFKA_BROKERS;
    fluxgate_kafka_topic $TEST_NGINX_TOPIC;
EOF

our $HTTP_PRIVATE = <<'EOF';
    fluxgate_redis 127.0.0.1:$TEST_NGINX_PRIVATE_PORT;
    fluxgate_kafka_brokers $TEST_NGINX_KAFKA_BROKERS;
    fluxgate_kafka_topic $TEST_NGINX_TOPIC;
EOF

our $CONFIG = <<'EOF';
    location = /health {
        fluxgate_health;
    }
    location = /metrics {
        fluxgate_metrics;
    }
    location = /order {
        fluxgate_order;
    }
EOF

sub url { "http://127.0.0.1:" . server_port() . $_[0] }

sub health { my $r = http_get(url('/health')); "$r->{status} $r->{content}" }

our $UP = '200 {"status":"ok","redis":"up","kafka":"up"}';
our $REDIS_DOWN = '503 {"status":"unavailable","redis":"down","kafka":"up"}';
our $KAFKA_DOWN = '503 {"status":"unavailable","redis":"up","kafka":"down"}';

# every worker answers $want, several times in a row (a connection per
# request: the answers come from whichever worker accepts); returns the
# seconds it took, or undef when $within passed first
sub becomes {
    my ($want, $within) = @_;
    my $t0 = time;
    my $ok = wait_until($within, sub {
        for (1 .. 4) { return 0 if health() ne $want }
        return 1;
    });
    return $ok ? time - $t0 : undef;
}

# the error log of this nginx has $re (within a few seconds: a worker
# writes it as it happens)
# since the block's start (mark())
our $LogFrom = 0;
sub mark { $LogFrom = -s servroot() . '/logs/error.log' // 0 }
sub logged {
    my ($re) = @_;
    return wait_until(5, sub { error_log_since($LogFrom) =~ $re });
}

# the answer stays $want for $secs: sampled every 0.2 s
sub stays {
    my ($want, $secs) = @_;
    my $end = time + $secs;
    while (time < $end) {
        my $h = health();
        return $h if $h ne $want;
        sleep 0.2;
    }
    return $want;
}

plan 'no_plan';
run_tests();

__DATA__

=== TEST 1: Redis frozen, no traffic: down within 3 s, up within 10 s of SIGCONT
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- request
GET /metrics
--- error_code: 200
--- check
main::mark();
ok(defined main::becomes($::UP, 20), "$main::name - up first");
my $redis = svc_pid('redis') or die 'no redis pid';
push @::Frozen, $redis;
kill 'STOP', $redis;
my $t0 = time;
my $took = main::becomes($::REDIS_DOWN, 10);
ok(defined $took && time - $t0 <= 3,
   "$main::name - down within 3 s (took " . ($took // 'more than 10 s') . ")");
# the connection is replaced meanwhile: the kernel accepts the new one,
# but nothing answers it, so it is not up
is(main::stays($::REDIS_DOWN, 4), $::REDIS_DOWN,
   "$main::name - stays down while frozen, across reconnects");
is(metrics_scrape(main::url('/metrics'))->{fluxgate_redis_up}, 0,
   "$main::name - fluxgate_redis_up 0");
kill 'CONT', $redis;
@::Frozen = ();
$t0 = time;
$took = main::becomes($::UP, 15);
ok(defined $took && time - $t0 <= 10,
   "$main::name - up within 10 s of SIGCONT (took " . ($took // 'more than 15 s') . ")");
ok(wait_until(5, sub { metrics_scrape(main::url('/metrics'))->{fluxgate_redis_up} == 1 }),
   "$main::name - fluxgate_redis_up 1");
ok(main::logged(qr/no answer to the heartbeat within 1000ms/),
   "$main::name - the missed heartbeat is logged");



=== TEST 2: broker frozen, no traffic: down within 10 s, up within 10 s of SIGCONT
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- request
GET /metrics
--- error_code: 200
--- check
main::mark();
ok(defined main::becomes($::UP, 20), "$main::name - up first");
my $kafka = svc_pid('kafka') or die 'no kafka pid';
push @::Frozen, $kafka;
kill 'STOP', $kafka;
my $t0 = time;
my $took = main::becomes($::KAFKA_DOWN, 20);
ok(defined $took && time - $t0 <= 10,
   "$main::name - down within 10 s (took " . ($took // 'more than 20 s') . ")");
is(metrics_scrape(main::url('/metrics'))->{fluxgate_kafka_up}, 0,
   "$main::name - fluxgate_kafka_up 0");
# orders now fail fast, without waiting message.timeout.ms: only one per
# worker process every 2 s goes on, to find out whether deliveries work
# (a product Redis does not know: it reserves nothing either way)
my $p = uniq('p');
my $fast = grep {
    my $res = http_post(main::url('/order'), qq({"productId":"$p","userId":"u"}),
                        { 'X-Idempotency-Key' => uniq('k') });
    $res->{status} == 503 && $res->{content} =~ /kafka unavailable/
} 1 .. 5;
ok($fast >= 3, "$main::name - orders refused at once ($fast of 5)");
ok(main::logged(qr/fluxgate: kafka: topic "[^"]+": no metadata within \d+ms/),
   "$main::name - the reason is logged");
kill 'CONT', $kafka;
@::Frozen = ();
$t0 = time;
$took = main::becomes($::UP, 20);
ok(defined $took && time - $t0 <= 10,
   "$main::name - up within 10 s of SIGCONT (took " . ($took // 'more than 20 s') . ")");
is(redis('EXISTS', "fg:{$p}:stock"), 0, "$main::name - Redis untouched");



=== TEST 3: a Redis that became a replica (READONLY): down; a master again: up
--- http_config eval: $::HTTP_PRIVATE
--- config eval: $::CONFIG
--- request
GET /metrics
--- error_code: 200
--- check
main::mark();
ok(defined main::becomes($::UP, 20), "$main::name - up first");
is(main::private("REPLICAOF 127.0.0.1 $::Upstream"), 'OK', "$main::name - REPLICAOF");
my $t0 = time;
my $took = main::becomes($::REDIS_DOWN, 10);
ok(defined $took && time - $t0 <= 3,
   "$main::name - down within 3 s (took " . ($took // 'more than 10 s') . ")");
# orders fail fast: nothing is sent to a replica
my $res = http_post(main::url('/order'), '{"productId":"p1","userId":"u"}',
                    { 'X-Idempotency-Key' => uniq('k') });
is($res->{status}, 503, "$main::name - an order: 503");
like($res->{content}, qr/redis unavailable/, "$main::name - refused before sending");
is(main::private('REPLICAOF NO ONE'), 'OK', "$main::name - REPLICAOF NO ONE");
$t0 = time;
$took = main::becomes($::UP, 15);
ok(defined $took && time - $t0 <= 10,
   "$main::name - up within 10 s (took " . ($took // 'more than 15 s') . ")");
ok(main::logged(qr/refusing commands \(not a master \(ROLE\)\)/),
   "$main::name - the refusal is logged");
ok(main::logged(qr/serving again/), "$main::name - and the return");



=== TEST 4: a Redis loading its dataset (LOADING): down; loaded: up
--- http_config eval: $::HTTP_PRIVATE
--- config eval: $::CONFIG
--- request
GET /metrics
--- error_code: 200
--- check
main::mark();
ok(defined main::becomes($::UP, 20), "$main::name - up first");
# a dataset that loads slowly (Redis's own test knobs), reloaded while
# nginx watches: the server answers LOADING meanwhile
is(main::private('DEBUG POPULATE 40000'), 'OK', "$main::name - populated");
main::private('CONFIG SET key-load-delay 50');
main::private('CONFIG SET loading-process-events-interval-bytes 1024');
my $pid = fork // die;
if ($pid == 0) { exec "redis-cli -p $::Private DEBUG RELOAD >/dev/null 2>&1" or exit 1 }
my $t0 = time;
ok(wait_until(10, sub { main::private('PING') =~ /LOADING/ }),
   "$main::name - the server is loading");
my $took = main::becomes($::REDIS_DOWN, 10);
ok(defined $took, "$main::name - down while loading (in " . ($took // 'never') . " s)");
ok(main::logged(qr/refusing commands \(LOADING\)/), "$main::name - LOADING logged");
waitpid $pid, 0;
main::private('CONFIG SET key-load-delay 0');
$t0 = time;
$took = main::becomes($::UP, 15);
ok(defined $took && time - $t0 <= 10,
   "$main::name - up within 10 s of the end of loading (took " . ($took // 'more than 15 s') . ")");
main::private('FLUSHALL');



=== TEST 5: the producer's topic deleted: kafka down
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- request
GET /metrics
--- error_code: 200
--- check
main::mark();
ok(defined main::becomes($::UP, 20), "$main::name - up first");
system("java -cp '$ENV{FG_KAFKA_LIBS}/*'"
       . " -Dlog4j.configuration=file:$ENV{FG_RUN_DIR}/kafka/tools-log4j.properties"
       . " org.apache.kafka.tools.TopicCommand --bootstrap-server $ENV{KAFKA_BOOTSTRAP}"
       . " --delete --topic $ENV{TEST_NGINX_TOPIC} >/dev/null 2>&1") == 0
    or die 'topic not deleted';
my $t0 = time;
my $took = main::becomes($::KAFKA_DOWN, 20);
ok(defined $took && time - $t0 <= 10,
   "$main::name - down within 10 s (took " . ($took // 'more than 20 s') . ")");
ok(main::logged(qr/Unknown topic or partition/), "$main::name - the reason is logged");
kafka_create_topic($ENV{TEST_NGINX_TOPIC});
ok(defined main::becomes($::UP, 20), "$main::name - up again once it exists");
