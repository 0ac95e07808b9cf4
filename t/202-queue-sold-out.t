# The waiting room and the stock: a sold-out product answers 409 before
# any rate or queue decision (its crowd is not sent to wait), the people
# already in line see soldOut at their next poll, and a ticket nobody uses
# loses its turn without holding up the line behind it.
use strict;
use warnings;
use lib 't/lib';
use Test::Nginx::Socket::Lite;
use FluxGate::Test;
use Time::HiRes qw(time sleep);


our $HTTP = <<'EOF';
    fluxgate_redis 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    fluxgate_kafka_brokers $TEST_NGINX_KAFKA_BROKERS;
    fluxgate_kafka_topic $TEST_NGINX_TOPIC;
    fluxgate_kafka_option linger.ms 1;
    fluxgate_queue_secret $TEST_NGINX_QUEUE_SECRET;
EOF

our $CONFIG = <<'EOF';
    location = /order {
        fluxgate_threshold 1;
        fluxgate_order;
    }
    location = /quick {
        fluxgate_threshold 4;
        fluxgate_queue_window 5s;
        fluxgate_order;
    }
    location = /vip {
        fluxgate_threshold off;
        fluxgate_order;
    }
    location = /queue/status {
        fluxgate_queue_status;
    }
    location = /t {
        return 200 "ok\n";
    }
EOF

$ENV{TEST_NGINX_TOPIC} = uniq('t202');
kafka_create_topic($ENV{TEST_NGINX_TOPIC});
$ENV{TEST_NGINX_QUEUE_SECRET} = queue_secret();

sub port { server_port() }

sub ticket_of {
    my ($res) = @_;
    return $res->{status} == 302 ? json_decode($res->{content})->{ticket}
                                 : undef;
}

plan 'no_plan';
run_tests();

__DATA__

=== TEST 1: stock 0, threshold 1/s, a crowd of 200: all 409, nobody queued
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- request
GET /t
--- error_code: 200
--- timeout: 30
--- check
my $p = uniq('p');
set_stock($p, 0);
my $r = loadgen(port => main::port(), c => 50, n => 200, once => 1,
                product => $p);
is($r->{status}{409}{count}, 200, "$main::name - 200 times 409")
    or diag($r->{raw});
is(join(',', sort keys %{ $r->{status} }), '409', "$main::name - nothing else, no 302");
is(redis('EXISTS', "fg:{$p}:q:seq"), 0, "$main::name - no ticket was issued");
is(redis('EXISTS', "fg:{$p}:rate"), 0, "$main::name - the rate was not even looked at");



=== TEST 2: the line sees the sell-out at its next poll; its tickets then get 409
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- request
GET /t
--- error_code: 200
--- check
my $p = uniq('p');
set_stock($p, 3);
is(queue_order(main::port(), $p, uniq('k'))->{status}, 200, "$main::name - the first buys");
my @t = map { main::ticket_of(queue_order(main::port(), $p, uniq('k'))) } 1 .. 3;
is(scalar(grep { defined } @t), 3, "$main::name - three in line");
my ($st, $b) = queue_status(main::port(), $p, $t[0]);
ok(!$b->{soldOut}, "$main::name - not sold out yet");
is(queue_order(main::port(), $p, uniq('k'), path => '/vip')->{status}, 200, "$main::name - another channel buys");
is(queue_order(main::port(), $p, uniq('k'), path => '/vip')->{status}, 200, "$main::name - and the last unit");
for my $k (0 .. 2) {
    ($st, $b) = queue_status(main::port(), $p, $t[$k]);
    is($st, 200, "$main::name - ticket " . ($k + 1) . ": 200");
    ok($b->{soldOut}, "$main::name - ticket " . ($k + 1) . ": soldOut") or diag(explain $b);
}
my $seq = redis('GET', "fg:{$p}:q:seq");
my $res = queue_order(main::port(), $p, uniq('k'), ticket => $t[0]);
is($res->{status}, 409, "$main::name - ordering with a ticket: 409");
is(json_decode($res->{content})->{status}, 'sold_out', "$main::name - sold_out");
$res = queue_order(main::port(), $p, uniq('k'));
is($res->{status}, 409, "$main::name - a new arrival: 409, not queued");
is(redis('GET', "fg:{$p}:q:seq"), $seq, "$main::name - no new ticket");



=== TEST 3: a no-show loses its turn; the next is admitted on time and the line goes on
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- request
GET /t
--- error_code: 200
--- timeout: 30
--- check
my $p = uniq('p');
set_stock($p, 100);
queue_order(main::port(), $p, uniq('k'), path => '/quick');
my @k = map { uniq('k') } 1 .. 3;
my @t = map { main::ticket_of(queue_order(main::port(), $p, $_, path => '/quick')) } @k;
my @d = map { ticket_decode($_) } @t;
is($d[1]{admit} - $d[0]{admit}, 250000, "$main::name - turns a quarter second apart");
# the first never comes back; the second waits for its turn and buys
ok(wait_until(5, sub { (queue_status(main::port(), $p, $t[1]))[1]{admitted} }),
   "$main::name - the second is admitted");
my $res = queue_order(main::port(), $p, $k[1], ticket => $t[1], path => '/quick');
is($res->{status}, 200, "$main::name - and buys") or diag($res->{content});
# the no-show's window is 5 s: the second's turn, a quarter second after
# the no-show's, came while that window was open, so nobody waited for it
my $at = redis('HGET', "fg:{$p}:idem:$k[1]", 't');
is($d[1]{admit} - $d[0]{admit}, 250000, "$main::name - the second's turn is the no-show's + 250 ms");
ok($at * 1000 < $d[0]{until}, "$main::name - it bought before the no-show's window ended: nobody waited for it");
ok(wait_until(5, sub { (queue_status(main::port(), $p, $t[2]))[1]{admitted} }),
   "$main::name - the third is admitted in its turn");
is(queue_order(main::port(), $p, $k[2], ticket => $t[2], path => '/quick')->{status}, 200,
   "$main::name - and buys");
ok(wait_until(15, sub { (queue_status(main::port(), $p, $t[0]))[0] == 400 }),
   "$main::name - the no-show's window passes");
$res = queue_order(main::port(), $p, $k[0], ticket => $t[0], path => '/quick');
is($res->{status}, 400, "$main::name - coming back late: 400");
like($res->{content}, qr/window has passed.*X-Queue-Ticket/, "$main::name - it says why");
is(queue_order(main::port(), $p, uniq('k'), path => '/quick')->{status}, 200,
   "$main::name - the line is empty: a new arrival passes");
