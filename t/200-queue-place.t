# One place per buyer, and a ticket is its buyer's (DESIGN.md v3, "One
# place per buyer"; issue 19): the same request, the same user with fresh
# keys, the same key standing for the buyer: one place, the same ticket
# and position again; a client's share of places
# (fluxgate_queue_per_client); a ticket sent by another buyer, forged,
# damaged, expired: 400 naming X-Queue-Ticket, Redis unchanged; a turn
# spent by the first order it admits whatever its answer, and given back
# by a 503; the ticket never in a query string; and what nginx -t
# refuses.
use strict;
use warnings;
use lib 't/lib';
use Test::Nginx::Socket::Lite;
use FluxGate::Test;
use FluxGate::Queue;
use FluxGate::Fleet qw(gate_start gate_stop gate_log);
use Time::HiRes qw(time sleep);


our $HTTP = <<'EOF';
    fluxgate_redis 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    fluxgate_kafka_brokers $TEST_NGINX_KAFKA_BROKERS;
    fluxgate_kafka_topic $TEST_NGINX_TOPIC;
    fluxgate_kafka_option linger.ms 1;
    fluxgate_queue_secret $TEST_NGINX_QUEUE_SECRET;
    fluxgate_threshold 1;

    server {
        listen 127.0.0.1:$TEST_NGINX_ADMIN_PORT;
        location = /queue/control { fluxgate_queue_control; }
        location = /queue/stats { fluxgate_queue_stats; }
    }
EOF

our $CONFIG = <<'EOF';
    fluxgate_waiting_room /waiting-room/;

    location = /order {
        fluxgate_order;
    }
    location = /capped {
        fluxgate_queue_per_client 5;
        fluxgate_order;
    }
    location = /by-client {
        fluxgate_queue_per_client 2 key=$http_x_client;
        fluxgate_order;
    }
    location = /limited {
        fluxgate_per_user_limit 1;
        fluxgate_order;
    }
    location = /anonymous {
        fluxgate_user_token $cookie_shop_session secret=$TEST_NGINX_USER_SECRET;
        fluxgate_order;
    }
    location = /queue/status {
        fluxgate_queue_status;
    }
    location = /t {
        return 200 "ok\n";
    }
EOF

our $SECRET = queue_setup('t200', user => 1);

sub port { server_port() }
sub admin { $ENV{TEST_NGINX_ADMIN_PORT} }

# an order that must get a place: its 302
sub place {
    my ($p, %o) = @_;
    my $res = order(port(), $p, %o);
    die "no place: $res->{status} $res->{content}\n"
        unless $res->{status} == 302 && $res->{json}{ticket};
    return $res;
}

# the line of $p moves on at once (1000/s), until $ticket is admitted
sub admit {
    my ($p, $ticket) = @_;
    for (['rate', rate => 1000], ['resume']) {
        my $res = control(admin(), $p, @$_);
        die "control: $res->{status} $res->{content}\n" unless $res->{status} == 200;
    }
    wait_until(10, sub { (poll(port(), $p, $ticket))[1]{admitted} })
        or die "$ticket never admitted\n";
}

# the order is refused with 400 naming X-Queue-Ticket, Redis unchanged
sub refused {
    my ($p, $ticket, $like, $name, %o) = @_;
    my $before = redis_snapshot($p);
    my $res = order(port(), $p, ticket => $ticket, %o);
    is($res->{status}, 400, "$name: 400");
    is($res->{json}{field}, 'X-Queue-Ticket', "$name: names X-Queue-Ticket");
    like($res->{json}{error} // '', $like, "$name: says why");
    is(redis_snapshot($p), $before, "$name: Redis unchanged");
}

plan 'no_plan';
run_tests();

__DATA__

=== TEST 1: nginx -t: an idempotency key shorter-lived than a ticket's window, with a queue secret
--- http_config eval: $::HTTP
--- config
    fluxgate_queue_window 30s;
    location = /order {
        fluxgate_idempotency_ttl 20s;
        fluxgate_order;
    }
--- must_die
--- error_log
"fluxgate_idempotency_ttl" 20000ms is shorter than "fluxgate_queue_window" 30000ms



=== TEST 2: nginx -t: the same without a queue secret is a gate without a line, and starts
--- http_config
    fluxgate_redis 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    fluxgate_kafka_brokers $TEST_NGINX_KAFKA_BROKERS;
--- config
    fluxgate_queue_window 30s;
    location = /order {
        fluxgate_idempotency_ttl 20s;
        fluxgate_order;
    }
    location = /t {
        return 200 "ok\n";
    }
--- request
GET /t
--- error_code: 200



=== TEST 3: nginx -t: fluxgate_queue_pow needs a queue secret
--- http_config
    fluxgate_redis 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    fluxgate_kafka_brokers $TEST_NGINX_KAFKA_BROKERS;
--- config
    location = /order {
        fluxgate_queue_pow 8;
        fluxgate_order;
    }
--- must_die
--- error_log
"fluxgate_queue_pow" or "fluxgate_queue_per_client" needs "fluxgate_queue_secret"



=== TEST 4: nginx -t: fluxgate_queue_per_client needs a queue secret
--- http_config
    fluxgate_redis 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    fluxgate_kafka_brokers $TEST_NGINX_KAFKA_BROKERS;
--- config
    fluxgate_queue_per_client 5;
    location = /order {
        fluxgate_order;
    }
--- must_die
--- error_log
"fluxgate_queue_pow" or "fluxgate_queue_per_client" needs "fluxgate_queue_secret"



=== TEST 5: a place: 302, the ticket in the body, the fragment and a cookie, never in a query string
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- request
GET /t
--- error_code: 200
--- check
my $p = paused_product(main::admin());
my $res = main::place($p, user => 'alice');
my $t = $res->{json}{ticket};
is_deeply([sort keys %{ $res->{json} }], [qw(position retryAfter status ticket)],
          "$main::name - body: status, ticket, position, retryAfter");
is($res->{json}{status}, 'queued', "$main::name - queued");
is($res->{json}{position}, 1, "$main::name - first in line");
is($res->{headers}{'retry-after'}, $res->{json}{retryAfter}, "$main::name - Retry-After as in the body");
my ($path, $query, $frag) = location_parts($res);
is($path, '/waiting-room/', "$main::name - Location: the waiting room");
is($query, "productId=$p", "$main::name - its query string names the product only");
is($frag, "ticket=$t", "$main::name - the ticket after '#': a fragment is never sent to a server");
unlike($res->{headers}{location}, qr/\?[^#]*\Q$t\E/, "$main::name - the ticket is in no query string");
my $c = cookies_of($res)->{"fluxgate_ticket_$p"};
ok($c, "$main::name - Set-Cookie fluxgate_ticket_<product>") or diag(explain $res->{headers});
is($c->{value}, $t, "$main::name - the cookie carries the ticket");
is($c->{attr}{path}, '/', "$main::name - cookie Path=/");
is($c->{attr}{samesite}, 'Strict', "$main::name - cookie SameSite=Strict");
ok(!$c->{attr}{httponly}, "$main::name - cookie readable by the waiting room's page");
my $d = ticket_decode($t);
is_deeply([@$d{qw(product buyer kind seq)}], [$p, 'alice', 'q', 0],
          "$main::name - ticket: product, buyer, kind q, turn 0");
ok(abs($c->{attr}{'max-age'} - ($d->{expires} - time)) <= 5,
   "$main::name - the cookie lives as long as the ticket ($c->{attr}{'max-age'} s)");
ok(abs($d->{expires} - time - 3600) <= 5, "$main::name - a ticket lives an hour by default");
like($t, qr/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{43}$/, "$main::name - URL-safe, HMAC-SHA256");
is(ticket_sign($main::SECRET, %$d), $t, "$main::name - signed with the queue secret over its fields");
my ($st, $b) = poll(main::port(), $p, $t);
is($st, 200, "$main::name - polled with X-Queue-Ticket");
is($b->{position}, 1, "$main::name - the poll agrees: first");



=== TEST 6: the same request 300 times, the same user with 300 keys: one place, the same ticket and position
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- request
GET /t
--- error_code: 200
--- timeout: 120
--- check
my $p = paused_product(main::admin());
main::place($p, user => "ahead-$_") for 1 .. 2;
my $first = main::place($p, user => 'bob', key => 'bob-key');
my $t = $first->{json}{ticket};
is($first->{json}{position}, 3, "$main::name - bob is third");
my %seen;
for my $i (1 .. 300) {
    my $res = order(main::port(), $p, user => 'bob', key => 'bob-key');
    $seen{"$res->{status} " . ($res->{json}{ticket} // '-') . " " . ($res->{json}{position} // '-')}++;
}
is_deeply(\%seen, { "302 $t 3" => 300 }, "$main::name - the same request 300 times: the same ticket, third each time");
%seen = ();
for my $i (1 .. 300) {
    my $res = order(main::port(), $p, user => 'bob', key => "bob-$i");
    $seen{"$res->{status} " . ($res->{json}{ticket} // '-') . " " . ($res->{json}{position} // '-')}++;
}
is_deeply(\%seen, { "302 $t 3" => 300 }, "$main::name - 300 fresh keys of bob: the same ticket, third each time");
is(line_of($p)->{n}, 3, "$main::name - three turns handed out");
is(places_of($p), 3, "$main::name - three places in Redis");
# what Redis keeps of bob's place: "seq:second of its bucket" (12 bytes
# at most for a line of up to ten million, a 16-byte allocation); the
# ticket's expiry is the bucket's start, that second and a ticket's life
my $e = epoch_of($p);
my ($bk) = grep { /:b:\d+$/ } redis('KEYS', "fg:{$p}:q:$e:b:*");
my ($bucket) = $bk =~ /:b:(\d+)$/;
my $v = redis('HGET', $bk, 'bob');
like($v, qr/^2:\d+$/, "$main::name - bob's place is seq:second ($v)");
my $tf = ticket_decode($t);
my $ttl = 3600;
my ($seq, $at) = split /:/, $v;
ok($at < $ttl, "$main::name - the second is within the bucket");
is($bucket * $ttl + $at + $ttl, $tf->{expires}, "$main::name - the ticket's expiry is the bucket's start, the second and a ticket's life");
# a place written in the older form, "seq:expiry", still reads the same
redis('HSET', $bk, 'bob', "2:$tf->{expires}");
my $old = order(main::port(), $p, user => 'bob', key => 'bob-old');
is("$old->{status} " . ($old->{json}{ticket} // '-'), "302 $t", "$main::name - a place in the older form: the same ticket");
redis('HSET', $bk, 'bob', $v);
my $res = main::place($p, user => 'carol');
is($res->{json}{position}, 4, "$main::name - the next buyer is fourth");
# a place booked in the bucket before this one is read with that bucket's
# start: its last second expires at the end of this bucket (not in the
# last three seconds of a bucket, which could pass before the order runs)
wait_until(5, sub { int(redis_now() / 1e6) % $ttl < $ttl - 3 });
my $now_b = int(redis_now() / 1e6 / $ttl);
redis('HSET', "fg:{$p}:q:$e:b:" . ($now_b - 1), 'olda', '9:' . ($ttl - 1));
my $prev = order(main::port(), $p, user => 'olda', key => 'olda-1');
my $pf = ticket_decode($prev->{json}{ticket} // '');
is("$prev->{status} $pf->{seq} $pf->{expires}", '302 9 ' . (($now_b - 1) * $ttl + 2 * $ttl - 1),
   "$main::name - a place of the bucket before: its turn, and its expiry from that bucket's start");



=== TEST 7: the key stands for an anonymous buyer: the same key 300 times is one place
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- request
GET /t
--- error_code: 200
--- timeout: 120
--- check
my $p = paused_product(main::admin());
my $first = main::place($p, user => undef, key => 'anon-key', path => '/anonymous');
my $t = $first->{json}{ticket};
is(ticket_decode($t)->{buyer}, 'anon-key', "$main::name - no user, no token: the key is the buyer");
my %seen;
for my $i (1 .. 300) {
    my $res = order(main::port(), $p, user => undef, key => 'anon-key', path => '/anonymous');
    $seen{"$res->{status} " . ($res->{json}{ticket} // '-') . " " . ($res->{json}{position} // '-')}++;
}
is_deeply(\%seen, { "302 $t 1" => 300 }, "$main::name - 300 times: the same ticket, first each time");
my $other = main::place($p, user => undef, key => 'anon-key-2', path => '/anonymous');
is($other->{json}{position}, 2, "$main::name - another key is another buyer, second");
is(places_of($p), 2, "$main::name - two places");



=== TEST 8: 300 users from one address, five places per client: five places, the rest 429 with nothing booked
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- request
GET /t
--- error_code: 200
--- timeout: 120
--- check
my $p = paused_product(main::admin());
my (%status, @placed, @refused);
for my $i (1 .. 300) {
    my $res = order(main::port(), $p, user => "crowd-$i", path => '/capped');
    $status{$res->{status}}++;
    push @placed, $res if $res->{status} == 302;
    push @refused, $res if $res->{status} == 429;
}
is_deeply(\%status, { 302 => 5, 429 => 295 }, "$main::name - 5 places, 295 refused")
    or diag(explain \%status);
is_deeply([map { $_->{json}{position} } @placed], [1 .. 5], "$main::name - the first five, in order");
is(scalar(grep { ($_->{json}{status} // '') eq 'too_many_places' } @refused), 295,
   "$main::name - every refusal says too_many_places");
is(scalar(grep { ($_->{headers}{'retry-after'} // 0) >= 1 } @refused), 295,
   "$main::name - every refusal has Retry-After ($refused[0]{headers}{'retry-after'})");
is(line_of($p)->{n}, 5, "$main::name - five turns handed out");
is(places_of($p), 5, "$main::name - five places in Redis");
my $before = redis_snapshot($p);
my $res = order(main::port(), $p, user => 'one-more', path => '/capped');
is($res->{status}, 429, "$main::name - one more: 429");
is(redis_snapshot($p), $before, "$main::name - a refusal changes nothing in Redis");
$res = order(main::port(), $p, user => 'crowd-3', path => '/capped');
is($res->{status}, 302, "$main::name - a buyer with a place gets it again, not 429");
is($res->{json}{ticket}, $placed[2]{json}{ticket}, "$main::name - the same ticket");
$res = order(main::port(), $p, user => 'free-buyer');
is($res->{status}, 302, "$main::name - where there is no cap, the same address gets places");
my %by;
for my $c (qw(a b)) {
    $by{$c} = join ' ', map { order(main::port(), $p, user => "client-$c-$_", path => '/by-client',
                                    headers => { 'X-Client' => "client-$c" })->{status} } 1 .. 3;
}
is_deeply(\%by, { a => '302 302 429', b => '302 302 429' },
          "$main::name - key=\$http_x_client: two places per client, each client its own");



=== TEST 9: a ticket sent by another buyer, forged, damaged, expired: 400 naming X-Queue-Ticket, Redis unchanged
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- request
GET /t
--- error_code: 200
--- check
my $p = paused_product(main::admin());
my $q = paused_product(main::admin());
my $waiting = main::place($p, user => 'dave')->{json}{ticket};
my $t = main::place($p, user => 'erin')->{json}{ticket};
main::refused($p, $waiting, qr/^X-Queue-Ticket belongs to another buyer$/, "$main::name - moved to another buyer, waiting", user => 'mallory');
my $d = ticket_decode($t);
main::refused($p, ticket_forge($t, buyer => 'mallory'), qr/signature/, "$main::name - rewritten for another buyer", user => 'mallory');
main::refused($p, ticket_forge($t, seq => 0), qr/signature/, "$main::name - jumping the line", user => 'erin');
main::refused($p, ticket_forge($t, expires => $d->{expires} + 86400), qr/signature/, "$main::name - a longer life", user => 'erin');
main::refused($q, $t, qr/another product/, "$main::name - another product's", user => 'erin');
main::refused($p, 'garbage', qr/not a ticket/, "$main::name - garbage", user => 'erin');
main::refused($p, 'a' x 5000, qr/not a ticket/, "$main::name - huge", user => 'erin');
main::refused($p, "$t.x", qr/not a ticket/, "$main::name - damaged", user => 'erin');
my $other = ticket_sign('another secret, 32 bytes or more....', %$d);
main::refused($p, $other, qr/signature/, "$main::name - another gate's secret", user => 'erin');
main::refused($p, ticket_sign($main::SECRET, %$d, expires => int(time) - 5), qr/expired/, "$main::name - expired", user => 'erin');
main::refused($p, ticket_sign($main::SECRET, %$d, epoch => $d->{epoch} + 1), qr/expired/, "$main::name - of another sale", user => 'erin');
my $before = redis_snapshot($p);
my $res = order(main::port(), $p, user => 'erin', headers => { 'X-Queue-Ticket' => [$t, $t] });
is($res->{status}, 400, "$main::name - two tickets: 400");
is($res->{json}{field}, 'X-Queue-Ticket', "$main::name - two tickets: named");
is(redis_snapshot($p), $before, "$main::name - two tickets: Redis unchanged");
main::admit($p, $t);
main::refused($p, $t, qr/^X-Queue-Ticket belongs to another buyer$/, "$main::name - moved to another buyer, admitted", user => 'mallory');
$res = order(main::port(), $p, user => 'erin', ticket => $t);
is($res->{status}, 200, "$main::name - its own buyer orders with it") or diag($res->{content});



=== TEST 10: a ticket not admitted yet: 302 with the same ticket and place, Redis unchanged
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- request
GET /t
--- error_code: 200
--- check
my $p = paused_product(main::admin());
main::place($p, user => 'frank');
my $t = main::place($p, user => 'grace')->{json}{ticket};
my $before = redis_snapshot($p);
my $res = order(main::port(), $p, user => 'grace', ticket => $t);
is($res->{status}, 302, "$main::name - 302");
is($res->{json}{ticket}, $t, "$main::name - the same ticket");
is($res->{json}{position}, 2, "$main::name - the same place");
is(redis_snapshot($p), $before, "$main::name - Redis unchanged");



=== TEST 11: a turn is spent by the first order it admits, limit_reached too; its key replays
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- request
GET /t
--- error_code: 200
--- check
my $p = uniq('p');
set_stock($p, 100);
my $res = order(main::port(), $p, user => 'heidi', path => '/limited');
is($res->{status}, 200, "$main::name - heidi buys her one unit while nobody waits") or diag($res->{content});
is(control(main::admin(), $p, 'pause')->{status}, 200, "$main::name - the line paused");
my $placed = main::place($p, user => 'heidi', path => '/limited');
my $t = $placed->{json}{ticket};
my $turn = ticket_decode($t)->{seq};
main::admit($p, $t);
is(spent($p, $turn), 0, "$main::name - admitted, not spent yet");
my $key = uniq('k');
$res = order(main::port(), $p, user => 'heidi', key => $key, ticket => $t, path => '/limited');
is($res->{status}, 409, "$main::name - with the ticket: 409");
is($res->{json}{status}, 'limit_reached', "$main::name - limit_reached");
is(spent($p, $turn), 1, "$main::name - the turn is spent all the same");
$res = order(main::port(), $p, user => 'heidi', key => $key, ticket => $t, path => '/limited');
is($res->{status}, 409, "$main::name - the same key again: 409");
is($res->{headers}{'idempotent-replayed'}, 'true', "$main::name - replayed");
main::refused($p, $t, qr/used for another order/, "$main::name - another key with the spent ticket", user => 'heidi', path => '/limited');
my ($st, $b) = poll(main::port(), $p, $t);
is($st, 200, "$main::name - a poll cannot know it was spent: still 200");



=== TEST 12: an admitted buyer ordering without the ticket is admitted by the place, and spends it
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- request
GET /t
--- error_code: 200
--- check
my $p = paused_product(main::admin());
my $t = main::place($p, user => 'ivan')->{json}{ticket};
my $turn = ticket_decode($t)->{seq};
main::admit($p, $t);
my $res = order(main::port(), $p, user => 'ivan');
is($res->{status}, 200, "$main::name - 200 without the ticket") or diag($res->{content});
is(spent($p, $turn), 1, "$main::name - the place's turn is spent");
main::refused($p, $t, qr/used for another order/, "$main::name - the ticket is spent", user => 'ivan');



=== TEST 13: a 503 gives the turn back with the reservation: the same ticket then buys
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- request
GET /t
--- error_code: 200
--- timeout: 60
--- check
# a second gate on the same Redis whose Kafka refuses every order: its
# topic does not exist (the brokers create none on the fly)
my $g = gate_start(workers => 1, topic => uniq('t200-missing'),
                   extra => "fluxgate_queue_secret $ENV{TEST_NGINX_QUEUE_SECRET};\n"
                          . "    fluxgate_threshold 1;\n"
                          . "    fluxgate_kafka_option message.timeout.ms 1500;");
my $p = paused_product(main::admin(), stock => 10);
my $t = main::place($p, user => 'judy')->{json}{ticket};
my $turn = ticket_decode($t)->{seq};
main::admit($p, $t);
my $key = uniq('k');
my $res = order($g->{port}, $p, user => 'judy', key => $key, ticket => $t);
is($res->{status}, 503, "$main::name - Kafka refused: 503") or diag($res->{content});
like($res->{json}{error} // '', qr/kafka/, "$main::name - says kafka");
like(gate_log($g), qr/not delivered to kafka/, "$main::name - after order.lua reserved it: Kafka did not take it");
ok(wait_until(10, sub { spent($p, $turn) == 0 }),
   "$main::name - the turn is given back");
is(redis('GET', "fg:{$p}:stock"), 10, "$main::name - and the unit");
is(redis('EXISTS', "fg:{$p}:idem:$key"), 0, "$main::name - and the key");
$res = order(main::port(), $p, user => 'judy', key => $key, ticket => $t);
is($res->{status}, 200, "$main::name - the same order with the same ticket buys") or diag($res->{content});
is(spent($p, $turn), 1, "$main::name - spent now");
gate_stop($g);
