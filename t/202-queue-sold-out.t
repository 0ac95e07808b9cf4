# The waiting room and the stock: a sold-out product answers 409 before
# any rate or line decision (its crowd is not sent to wait, no place is
# booked, Redis is not written), the people already in line see soldOut
# at their next poll and their tickets then get 409 sold_out, and a turn
# nobody uses is a no-show: the turns behind it are admitted on time
# (nobody waits for it), its admission window closes once W more turns
# were admitted (W = the window's seconds at the rate, in turns;
# docs: queue-v3 "Head"), and its ticket is then refused with 400.
# Times are Redis's: the line record's head (h turns admitted at t, moving
# at the rate) says when a turn is admitted, and an order's reservation
# time is Redis TIME.
use strict;
use warnings;
use lib 't/lib';
use Test::Nginx::Socket::Lite;
use FluxGate::Test;
use FluxGate::Queue;
use Time::HiRes qw(time sleep);


our $BASE = <<'EOF';
    fluxgate_redis 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    fluxgate_kafka_brokers $TEST_NGINX_KAFKA_BROKERS;
    fluxgate_kafka_topic $TEST_NGINX_TOPIC;
    fluxgate_kafka_option linger.ms 1;
    fluxgate_queue_secret $TEST_NGINX_QUEUE_SECRET;

    server {
        listen 127.0.0.1:$TEST_NGINX_ADMIN_PORT;
        location = /queue/control { fluxgate_queue_control; }
        location = /queue/stats { fluxgate_queue_stats; }
    }
EOF

# one turn a second
our $HTTP = $BASE . <<'EOF';
    fluxgate_threshold 1;
EOF

# four turns a second, a window of 3 s: W = 12 turns
our $QUICK = $BASE . <<'EOF';
    fluxgate_threshold 4;
    fluxgate_queue_window 3s;
EOF

our $CONFIG = <<'EOF';
    location = /order {
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

queue_setup('t202');

sub port { server_port() }
sub admin { $ENV{TEST_NGINX_ADMIN_PORT} }

# an order that must get a place: its ticket
sub place {
    my ($p, $user) = @_;
    my $res = order(port(), $p, user => $user);
    die "no place for $user: $res->{status} $res->{content}\n"
        unless $res->{status} == 302 && $res->{json}{ticket};
    return $res->{json}{ticket};
}

sub turn_of { ticket_decode($_[0])->{seq} }

plan 'no_plan';
run_tests();

__DATA__

=== TEST 1: stock 0, threshold 1/s, a crowd of 200: all 409, nobody queued, Redis unchanged
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- request
GET /t
--- error_code: 200
--- timeout: 30
--- check
my $p = uniq('p');
set_stock($p, 0);
my $before = redis_snapshot($p);
my $r = loadgen(port => main::port(), c => 50, n => 200, once => 1,
                product => $p);
is($r->{status}{409}{count}, 200, "$main::name - 200 times 409")
    or diag($r->{raw});
is(join(',', sort keys %{ $r->{status} }), '409', "$main::name - nothing else, no 302");
is_deeply(line_of($p), {}, "$main::name - no line record: no turn handed out, the rate not looked at");
is(places_of($p), 0, "$main::name - no place booked");
is(redis_snapshot($p), $before, "$main::name - Redis unchanged");



=== TEST 2: the line sees the sell-out at its next poll; its tickets then get 409 sold_out
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- request
GET /t
--- error_code: 200
--- timeout: 30
--- check
my $p = uniq('p');
set_stock($p, 3);
is(order(main::port(), $p, user => 'first')->{status}, 200, "$main::name - the first buys: the line was empty");
my @who = map { "in-line-$_" } 1 .. 3;
my @t = map { main::place($p, $_) } @who;
is_deeply([map { main::turn_of($_) } @t], [1, 2, 3], "$main::name - three in line, turns 1 to 3");
my ($st, $b) = poll(main::port(), $p, $t[0]);
is($st, 200, "$main::name - polled: 200");
ok(!$b->{soldOut}, "$main::name - not sold out yet") or diag(explain $b);
is(order(main::port(), $p, user => 'vip-1', path => '/vip')->{status}, 200, "$main::name - another channel buys");
is(order(main::port(), $p, user => 'vip-2', path => '/vip')->{status}, 200, "$main::name - and the last unit");
is(redis('GET', "fg:{$p}:stock"), 0, "$main::name - stock 0");
# the gate refreshes its record of the line at most every 100 ms: the
# first poll after that says sold out, and so does every later one
ok(wait_until(5, sub { (poll(main::port(), $p, $t[0]))[1]{soldOut} }),
   "$main::name - ticket 1: soldOut once the gate's record is refreshed");
for my $k (0 .. 2) {
    my ($st, $b, $res) = poll(main::port(), $p, $t[$k]);
    is($st, 200, "$main::name - ticket " . ($k + 1) . ": 200");
    ok($b->{soldOut}, "$main::name - ticket " . ($k + 1) . ": soldOut at its next poll") or diag(explain $b);
    ok(!exists $res->{headers}{'retry-after'}, "$main::name - ticket " . ($k + 1) . ": nothing to wait for, no Retry-After");
}
my $before = redis_snapshot($p);
my $n = line_of($p)->{n};
for my $k (0, 2) {
    my $res = order(main::port(), $p, user => $who[$k], ticket => $t[$k]);
    is($res->{status}, 409, "$main::name - ordering with ticket " . ($k + 1) . ": 409");
    is($res->{json}{status}, 'sold_out', "$main::name - sold_out") or diag($res->{content});
}
my $res = order(main::port(), $p, user => $who[1]);
is("$res->{status} " . ($res->{json}{status} // $res->{content}), '409 sold_out',
   "$main::name - a buyer in line, without the ticket: 409 sold_out, not the place again");
$res = order(main::port(), $p, user => 'newcomer');
is("$res->{status} " . ($res->{json}{status} // $res->{content}), '409 sold_out',
   "$main::name - a new arrival: 409 sold_out, not queued");
is(line_of($p)->{n}, $n, "$main::name - no turn handed out ($n)");
is(places_of($p), 3, "$main::name - no new place");
is(redis_snapshot($p), $before, "$main::name - none of the refusals wrote to Redis");



=== TEST 3: a no-show loses its turn: the next is admitted on time, the window closes after W turns, coming back late is 400
--- http_config eval: $::QUICK
--- config eval: $::CONFIG
--- request
GET /t
--- error_code: 200
--- timeout: 60
--- check
my $rate = 4;
my $W = 12;    # 3 s at 4/s
# the line paused while it fills (nobody admitted, no free turn): 13
# places, turns 0 to 12, the no-show first; the twelve behind it are
# what its window has to wait for
my $p = paused_product(main::admin(), stock => 100);
my @who = ('no-show', 'second', 'third', map { "behind-$_" } 4 .. 13);
my @t = map { main::place($p, $_) } @who;
is_deeply([map { main::turn_of($_) } @t], [0 .. 12], "$main::name - 13 places, turns 0 to 12");
is(control(main::admin(), $p, 'resume')->{status}, 200, "$main::name - the line resumed");
# when turn k is admitted, by Redis's clock: floor(H) > k, H moving at
# the rate from h turns at t
my $line = line_of($p);
my $admit = sub { $line->{t} + ($_[0] + 1 - $line->{h}) * 1e6 / $rate };
# the no-show's window: closed once floor(H) > 0 + W
my $closes = $admit->($W);
is($line->{st}, '', "$main::name - the line record: open, h $line->{h} at t $line->{t}");
# the no-show never comes; the third sends its order with the ticket
# until the gate lets it through (302 until its turn), the second then
# waits for its turn as the waiting room's page does (polls until
# admitted): both buy while the no-show's window is open
for my $k (2, 1) {
    my $key = uniq('k');
    my $res;
    if ($k == 1) {
        ok(wait_until(10, sub { (poll(main::port(), $p, $t[$k]))[1]{admitted} }),
           "$main::name - $who[$k] is admitted");
        $res = order(main::port(), $p, user => $who[$k], key => $key, ticket => $t[$k]);
    } else {
        my $told = 0;
        my $first = redis_now();
        ok(wait_until(10, sub {
            $res = order(main::port(), $p, user => $who[$k], key => $key, ticket => $t[$k]);
            return 1 unless $res->{status} == 302 && $res->{json}{ticket} eq $t[$k];
            $told++;
            return 0;
        }), "$main::name - $who[$k] is let through");
        # it came at once after the resume, its turn 750 ms later
        ok($told >= 1 || $first >= $admit->($k),
           "$main::name - $who[$k] came before its turn and was told to wait ($told times)");
    }
    is($res->{status}, 200, "$main::name - $who[$k] buys") or diag($res->{content});
    my $at = redis('HGET', "fg:{$p}:idem:$key", 't') * 1000;
    ok($at >= $admit->($k) - 1000, "$main::name - $who[$k]: not before its turn ("
       . sprintf('%.0f ms after it', ($at - $admit->($k)) / 1000) . ")");
    ok($at < $closes, "$main::name - $who[$k]: bought before the no-show's window closed: nobody waited for it ("
       . sprintf('%.0f ms before', ($closes - $at) / 1000) . ")");
}
# the no-show's turn came, and its window was open: it could have bought
my ($st, $b);
SKIP: {
    skip "$main::name - the window is closing already", 1 if redis_now() > $closes - 1e6;
    ($st, $b) = poll(main::port(), $p, $t[0]);
    ok($st == 200 && $b->{admitted}, "$main::name - the no-show's turn was admitted, its window open")
        or diag(explain $b);
}
ok(wait_until(15, sub { (poll(main::port(), $p, $t[0]))[0] == 400 }),
   "$main::name - the no-show's window closes");
# the poll's clock is the gate's, run on from its last look at Redis:
# a few ms of leeway
my $late = redis_now() - $closes;
ok($late >= -20000, "$main::name - not before W = $W turns behind it were admitted ("
   . sprintf('%.0f ms after', $late / 1000) . ")");
ok(wait_until(5, sub { redis_now() >= $closes }), "$main::name - by Redis's clock too");
($st, $b) = poll(main::port(), $p, $t[0]);
is("$st " . ($b->{field} // '-'), '400 X-Queue-Ticket', "$main::name - its poll: 400 naming X-Queue-Ticket");
like($b->{error} // '', qr/window has passed/, "$main::name - its poll says why");
my $before = redis_snapshot($p);
my $res = order(main::port(), $p, user => 'no-show', ticket => $t[0]);
is($res->{status}, 400, "$main::name - coming back late with the ticket: 400");
is($res->{json}{field}, 'X-Queue-Ticket', "$main::name - names X-Queue-Ticket");
like($res->{json}{error} // '', qr/window has passed/, "$main::name - it says why") or diag($res->{content});
is(redis_snapshot($p), $before, "$main::name - Redis unchanged");
is(spent($p, 0), 0, "$main::name - turn 0 was never spent");
is(stats(main::admin(), $p)->{noShows}, 1, "$main::name - stats: one no-show (the turns whose window closed: 0, unused)");
# turn 13, the next to hand out, is free once the head passes it: the
# line is through, the no-shows hold nobody up
ok(wait_until(10, sub { redis_now() >= $admit->(13) }), "$main::name - the head passed the last turn");
is(order(main::port(), $p, user => 'newcomer')->{status}, 200,
   "$main::name - the line is through: a new arrival passes at once");
