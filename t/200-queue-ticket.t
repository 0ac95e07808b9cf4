# The waiting room's tickets: the fluxgate_queue_* directives, a 302 that
# carries a signed ticket and a place in line, GET /queue/status, the
# admitted ticket that lets one order through and is then spent, and every
# ticket the gate must refuse (400 naming X-Queue-Ticket) with Redis left
# exactly as it was.
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

# one order a second: the second order of a block waits a second (room
# enough for a loaded machine between two requests of a block)
our $CONFIG = <<'EOF';
    fluxgate_threshold 1;
    fluxgate_waiting_room /waiting-room/;

    location = /order {
        fluxgate_order;
    }
    location = /short {
        fluxgate_queue_window 1s;
        fluxgate_queue_ticket_ttl 2s;
        fluxgate_order;
    }
    location = /narrow {
        fluxgate_queue_window 1s;
        fluxgate_order;
    }
    location = /other-secret {
        fluxgate_queue_secret $TEST_NGINX_OTHER_SECRET;
        fluxgate_order;
    }
    location = /queue/status {
        fluxgate_queue_status;
    }
    location = /t {
        return 200 "ok\n";
    }
EOF

$ENV{TEST_NGINX_TOPIC} = uniq('t200');
kafka_create_topic($ENV{TEST_NGINX_TOPIC});
$ENV{TEST_NGINX_QUEUE_SECRET} = queue_secret();
$ENV{TEST_NGINX_OTHER_SECRET} = queue_secret('other');

# a product of its own with stock, and its first order admitted at once:
# the next one is over the rate
sub product {
    my ($stock) = @_;
    my $p = uniq('p');
    set_stock($p, $stock // 100);
    return $p;
}

sub port { server_port() }

# an order over the rate: (its ticket, the 302)
sub queued {
    my ($p, $key, %o) = @_;
    my $res = queue_order(port(), $p, $key, %o);
    return ($res->{status} == 302
            && (json_decode($res->{content})->{ticket} // ''), $res);
}

# a ticket of $p that is admitted now (its turn came): [ticket, key]
sub admitted_ticket {
    my ($p, %o) = @_;
    queue_order(port(), $p, uniq('k'), %o);          # takes the slot
    my $key = uniq('k');
    my ($t, $res) = queued($p, $key, %o);
    die "no ticket: $res->{status} $res->{content}\n" unless $t;
    wait_until(5, sub { (queue_status(port(), $p, $t))[1]{admitted} })
        or die "ticket never admitted\n";
    return ($t, $key);
}

# the product's keys as they are; the rate key's TTL must not end it
# before the snapshot it is compared with
sub snapshot {
    my ($p) = @_;
    redis('PERSIST', "fg:{$p}:rate");
    return redis_snapshot($p);
}

# the order is refused with 400 naming X-Queue-Ticket, Redis unchanged
sub refused {
    my ($p, $ticket, $like, $name, %o) = @_;
    my $before = main::snapshot($p);
    my $res = queue_order(port(), $p, $o{key} // uniq('k'), ticket => $ticket,
                          %o);
    is($res->{status}, 400, "$name: 400");
    my $b = eval { json_decode($res->{content}) } || {};
    is($b->{status}, 'bad_request', "$name: bad_request");
    is($b->{field}, 'X-Queue-Ticket', "$name: names X-Queue-Ticket");
    like($b->{error} // '', $like, "$name: says why ($b->{error})");
    is(redis_snapshot($p), $before, "$name: Redis unchanged");
}

plan 'no_plan';
run_tests();

__DATA__

=== TEST 1: the secret file must exist
--- http_config
    fluxgate_queue_secret /nonexistent/fluxgate.secret;
--- config
--- must_die
--- error_log
"fluxgate_queue_secret": cannot read the secret file "/nonexistent/fluxgate.secret"



=== TEST 2: the secret must hold 32 bytes
--- http_config eval
"fluxgate_queue_secret " . FluxGate::Test::queue_secret('short') . ";"
--- config
--- must_die
--- error_log eval
qr/"fluxgate_queue_secret": the secret file ".*short" holds 31 bytes, at least 32 are needed/



=== TEST 3: fluxgate_queue_status needs a secret to check tickets
--- http_config
    fluxgate_redis 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    fluxgate_kafka_brokers $TEST_NGINX_KAFKA_BROKERS;
--- config
    location = /queue/status {
        fluxgate_queue_status;
    }
--- must_die
--- error_log
"fluxgate_queue_status" needs "fluxgate_queue_secret"



=== TEST 4: a ticket cannot outlive its window
--- http_config eval: $::HTTP
--- config
    fluxgate_queue_window 1m;
    fluxgate_queue_ticket_ttl 30s;
    location = /order {
        fluxgate_order;
    }
--- must_die
--- error_log
"fluxgate_queue_ticket_ttl" 30000ms must be longer than "fluxgate_queue_window" 60000ms



=== TEST 5: every queue directive, at every level it is allowed
--- http_config eval
$::HTTP . "    fluxgate_queue_window 20s;\n    fluxgate_queue_ticket_ttl 30m;\n"
--- config
    fluxgate_queue_secret $TEST_NGINX_OTHER_SECRET;
    fluxgate_queue_window 10s;
    fluxgate_queue_ticket_ttl 1m;
    location = /order {
        fluxgate_queue_secret $TEST_NGINX_QUEUE_SECRET;
        fluxgate_queue_window 5s;
        fluxgate_queue_ticket_ttl 10s;
        fluxgate_order;
    }
    location = /queue/status {
        fluxgate_queue_status;
    }
    location = /t {
        return 200 "ok\n";
    }
--- request
GET /t
--- error_code: 200



=== TEST 6: over the rate: 302 with a ticket, its place, Retry-After
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- request
GET /t
--- error_code: 200
--- check
my $p = main::product();
my $first = queue_order(main::port(), $p, uniq('k'));
is($first->{status}, 200, "$main::name - the first order passes");
my ($t, $res) = main::queued($p, uniq('k'));
ok($t, "$main::name - the second gets a ticket") or diag($res->{content});
my $b = json_decode($res->{content});
is($b->{status}, 'queued', "$main::name - status queued");
is($b->{position}, 1, "$main::name - first in line");
ok($b->{retryAfter} >= 1 && $b->{retryAfter} <= 5, "$main::name - retryAfter $b->{retryAfter}");
is($res->{headers}{'retry-after'}, $b->{retryAfter}, "$main::name - Retry-After header");
like($res->{headers}{location}, qr{^(http://[^/]+)?\Q/waiting-room/?productId=$p&ticket=$t\E$},
   "$main::name - Location: the waiting room with product and ticket");
like($t, qr/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{43}$/, "$main::name - URL-safe ticket");
my $d = ticket_decode($t);
is($d->{product}, $p, "$main::name - bound to its product");
ok($d->{expires} - $d->{admit} > 3000e6, "$main::name - lives about an hour");
is($d->{until} - $d->{admit}, 30e6, "$main::name - window 30s by default");
my ($t2) = main::queued($p, uniq('k'));
is(ticket_decode($t2)->{seq}, $d->{seq} + 1, "$main::name - the next ticket is the next in line");
is(json_decode(queue_order(main::port(), $p, uniq('k'))->{content})->{position}, 3,
   "$main::name - and the one after is third");



=== TEST 7: status: position and ETA, then admitted; Retry-After while waiting
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- request
GET /t
--- error_code: 200
--- check
my $p = main::product();
queue_order(main::port(), $p, uniq('k'));
my ($t) = main::queued($p, uniq('k'));
my ($t2) = main::queued($p, uniq('k'));
my ($st, $b, $res) = queue_status(main::port(), $p, $t2);
is($st, 200, "$main::name - 200");
is($res->{headers}{'content-type'}, 'application/json', "$main::name - JSON");
is_deeply([sort keys %$b], [qw(admitted etaSeconds position soldOut)], "$main::name - the four fields");
ok($b->{position} == 2 && !$b->{admitted} && !$b->{soldOut}, "$main::name - second, waiting")
    or diag(explain $b);
ok($b->{etaSeconds} >= 1 && $b->{etaSeconds} <= 2, "$main::name - ETA $b->{etaSeconds}s");
ok($res->{headers}{'retry-after'} <= 5, "$main::name - polled again within 5s");
ok($res->{headers}{'retry-after'} >= 1, "$main::name - Retry-After while waiting");
ok(wait_until(5, sub { (queue_status(main::port(), $p, $t2))[1]{admitted} }),
   "$main::name - admitted in its turn");
($st, $b, $res) = queue_status(main::port(), $p, $t2);
is_deeply($b, {position => 0, admitted => JSON::PP::true, etaSeconds => 0,
               soldOut => JSON::PP::false}, "$main::name - admitted: position 0, ETA 0");
ok(!exists $res->{headers}{'retry-after'}, "$main::name - nothing to wait for");
my $before = main::snapshot($p);
queue_status(main::port(), $p, $t) for 1 .. 3;
is(redis_snapshot($p), $before, "$main::name - a poll writes nothing");



=== TEST 8: status refuses what is not a ticket of this product
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- request
GET /t
--- error_code: 200
--- check
my $p = main::product();
my $q = main::product();
queue_order(main::port(), $p, uniq('k'));
my ($t) = main::queued($p, uniq('k'));
for my $c (["garbage", $p, 'garbage', 'ticket'],
           ["another product's", $q, $t, 'ticket'],
           ["forged", $p, ticket_forge($t, admit => 0), 'ticket'],
           ["no ticket", $p, '', 'ticket'],
           ["bad productId", 'a%20b', $t, 'productId']) {
    my ($st, $b) = queue_status(main::port(), $c->[1], $c->[2]);
    is($st, 400, "$main::name - $c->[0]: 400");
    is($b->{field}, $c->[3], "$main::name - $c->[0]: names $c->[3]");
}
my $res = http_post("http://127.0.0.1:" . main::port() . "/queue/status", '{}');
is($res->{status}, 405, "$main::name - POST: 405");



=== TEST 9: an admitted ticket passes once; a retry of the same order replays
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- request
GET /t
--- error_code: 200
--- check
my $p = main::product(10);
my ($t, $key) = main::admitted_ticket($p);
my $res = queue_order(main::port(), $p, $key, ticket => $t);
is($res->{status}, 200, "$main::name - 200 with the ticket") or diag($res->{content});
my $id = json_decode($res->{content})->{orderId};
wait_until(5, sub { redis('HGET', "fg:{$p}:idem:$key", 's') eq '200' });
my $again = queue_order(main::port(), $p, $key, ticket => $t);
is($again->{status}, 200, "$main::name - the same key and ticket: 200 again");
is($again->{headers}{'idempotent-replayed'}, 'true', "$main::name - replayed");
is(json_decode($again->{content})->{orderId}, $id, "$main::name - the same orderId");
main::refused($p, $t, qr/used for another order/, "$main::name - spent, another key");
my ($st, $b) = queue_status(main::port(), $p, $t);
is($st, 400, "$main::name - status of a spent ticket: 400");
is(redis('GET', "fg:{$p}:stock"), 8, "$main::name - one unit sold with the ticket, one before it");



=== TEST 10: a ticket not admitted yet: 302 again with the same ticket
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- request
GET /t
--- error_code: 200
--- check
my $p = main::product();
queue_order(main::port(), $p, uniq('k'));
main::queued($p, uniq('k'));
my ($t) = main::queued($p, uniq('k'));
my $before = main::snapshot($p);
my $res = queue_order(main::port(), $p, uniq('k'), ticket => $t);
is($res->{status}, 302, "$main::name - 302");
my $b = json_decode($res->{content});
is($b->{ticket}, $t, "$main::name - the same ticket");
is($b->{position}, 2, "$main::name - the same place");
is(redis_snapshot($p), $before, "$main::name - Redis unchanged");



=== TEST 11: forged, garbage, other secret, other product: 400 before Redis
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- request
GET /t
--- error_code: 200
--- check
my $p = main::product();
my $q = main::product();
my ($t, $key) = main::admitted_ticket($p);
my ($u) = main::queued($p, uniq('k'));
main::refused($p, ticket_forge($u, admit => 0), qr/signature/, "$main::name - jumping the line");
main::refused($p, ticket_forge($u, until => 9e15, expires => 9e15), qr/signature/, "$main::name - a longer life");
main::refused($p, 'garbage', qr/not a ticket/, "$main::name - garbage");
main::refused($p, 'a' x 5000, qr/not a ticket/, "$main::name - huge");
main::refused($p, "$t.x", qr/not a ticket/, "$main::name - damaged");
main::refused($q, $t, qr/another product/, "$main::name - another product's");
# a line of its own a few seconds long (one place a second): the order
# through the other secret's location queues whatever the machine's pace
my $r = main::product();
queue_order(main::port(), $r, uniq('k'));
main::queued($r, uniq('k')) for 1 .. 5;
my ($o, $ores) = main::queued($r, uniq('k'), path => '/other-secret');
ok($o, "$main::name - a ticket signed with another secret")
    or diag("$ores->{status} $ores->{content}");
main::refused($r, $o, qr/signature/, "$main::name - another gate's secret");
my $before = main::snapshot($p);
my $res = http_post("http://127.0.0.1:" . main::port() . "/order",
                    json_encode({productId => $p, userId => 'u'}),
                    {'X-Idempotency-Key' => uniq('k'),
                     'X-Queue-Ticket' => [$t, $t]});
is($res->{status}, 400, "$main::name - two tickets: 400");
like($res->{content}, qr/X-Queue-Ticket/, "$main::name - two tickets: named");
is(redis_snapshot($p), $before, "$main::name - two tickets: Redis unchanged");



=== TEST 12: expired, and a window that passed: 400, Redis unchanged
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- request
GET /t
--- error_code: 200
--- timeout: 20
--- check
my $p = main::product();
my ($t) = main::admitted_ticket($p, path => '/short');
my ($w) = main::admitted_ticket($p, path => '/narrow');
my $d = ticket_decode($t);
ok($d->{expires} - $d->{admit} <= 2e6, "$main::name - life 2s");
is($d->{until} - $d->{admit}, 1e6, "$main::name - window 1s");
# until Redis's clock, which the gate decides on, is past both
my $e = ticket_decode($w);
ok(wait_until(10, sub { redis_time_us() > $d->{expires} && redis_time_us() > $e->{until} }),
   "$main::name - Redis's clock passed the ticket's end and the other's window");
main::refused($p, $t, qr/expired/, "$main::name - expired", path => '/short');
main::refused($p, $w, qr/window has passed/, "$main::name - window passed", path => '/narrow');
my ($st, $b) = queue_status(main::port(), $p, $w);
is($st, 400, "$main::name - status of a missed turn: 400");
like($b->{error}, qr/window has passed/, "$main::name - says so");



=== TEST 13: a line longer than a ticket lives: 503 "waiting room full", Redis unchanged
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- request
GET /t
--- error_code: 200
--- check
my $from = -s servroot() . '/logs/error.log';
# /short: one place a second, a window of 1 s, tickets living 2 s: a place
# whose turn comes later than a ticket's life would outlive its ticket.
# Each arrival books a place a second further out, far faster than a
# second passes, so the line outgrows the tickets within a few arrivals
my $p = main::product();
my ($res, $before, @st);
for (1 .. 20) {
    $before = main::snapshot($p);
    $res = queue_order(main::port(), $p, uniq('k'), path => '/short');
    push @st, $res->{status};
    last if $res->{status} == 503;
}
is($res->{status}, 503, "$main::name - an arrival is refused: 503 (answers: @st)");
my $b = eval { json_decode($res->{content}) } || {};
is($b->{status}, 'error', "$main::name - status error");
is($b->{error}, 'waiting room full', "$main::name - says the waiting room is full");
ok($res->{headers}{'retry-after'} >= 1, "$main::name - Retry-After set");
is(redis_snapshot($p), $before, "$main::name - Redis unchanged: no place booked");
ok((grep { $_ == 302 } @st) >= 1, "$main::name - the places before it were booked (302)");
ok(wait_until(10, sub { error_log_since($from) =~ /the line for "\Q$p\E" is longer than a ticket lives/ }),
   "$main::name - the gate logs why");
