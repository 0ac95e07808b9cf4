# The operator's levers and figures (DESIGN.md v3, "Live controls" and
# "Polls without Redis"; issue 20): pause holds every admission while
# buyers poll and resume goes on in turn order; a rate change reaches two
# gates on the same Redis within a second (measured and printed); close
# answers 409 and polls say so; /queue/stats agrees with the turns handed
# out, admitted and missed; POST /queue/control is idempotent with its
# key, refuses bad input, logs who did what and counts it; GET
# /queue/status answers from shared memory (header or old ?ticket=, its
# refusals, its flags, a first poll that waits for the record); and the
# line's metrics, per product and summed.
use strict;
use warnings;
use lib 't/lib';
use Test::Nginx::Socket::Lite;
use FluxGate::Test;
use FluxGate::Queue;
use FluxGate::Fleet qw(gate_start gate_stop);
use Time::HiRes qw(time sleep);


our $BASE = <<'EOF';
    fluxgate_redis 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    fluxgate_kafka_brokers $TEST_NGINX_KAFKA_BROKERS;
    fluxgate_kafka_topic $TEST_NGINX_TOPIC;
    fluxgate_kafka_option linger.ms 1;
    fluxgate_queue_secret $TEST_NGINX_QUEUE_SECRET;
    fluxgate_threshold 10;

    server {
        listen 127.0.0.1:$TEST_NGINX_ADMIN_PORT;
        location = /init { fluxgate_stock_admin; }
        location = /queue/control { fluxgate_queue_control; }
        location = /queue/stats { fluxgate_queue_stats; }
        location = /metrics { fluxgate_metrics; }
    }
EOF

our $HTTP = $BASE;

# a window of two seconds, 20 turns at 10/s; the line's figures per
# product in the metrics
our $SHORT = $BASE . <<'EOF';
    fluxgate_queue_window 2s;
    fluxgate_metrics_products 100;
EOF

# the same, the figures summed over the products
our $SUMMED = $BASE . <<'EOF';
    fluxgate_queue_window 2s;
EOF

our $CONFIG = <<'EOF';
    location = /order {
        fluxgate_order;
    }
    location = /queue/status {
        fluxgate_queue_status;
    }
    location = /t {
        return 200 "ok\n";
    }
EOF

our $SECRET = queue_setup('t209');

sub port { server_port() }
sub admin { $ENV{TEST_NGINX_ADMIN_PORT} }

sub ok_control {
    my ($p, @a) = @_;
    my $res = control(admin(), $p, @a);
    die "control @a: $res->{status} $res->{content}\n" unless $res->{status} == 200;
    return $res->{json};
}

# $n places in $p's line, one after the other: their tickets
sub book {
    my ($p, $n, $prefix, $port) = @_;
    return map {
        my $res = order($port // port(), $p, user => "$prefix-$_");
        die "no place: $res->{status} $res->{content}\n" unless $res->{status} == 302;
        $res->{json}{ticket};
    } 0 .. $n - 1;
}

sub turn_of { ticket_decode($_[0])->{seq} }

# the line's metrics of the admin listener: {name => value} for $p (or
# the sum without a product label)
sub line_metrics {
    my ($p) = @_;
    my $m = metrics_scrape("http://127.0.0.1:" . admin() . "/metrics");
    my $label = defined $p ? "{product=\"$p\"}" : '';
    return { map { $_ => $m->{"fluxgate_queue_$_$label"} }
             qw(waiting oldest_wait_seconds admitted_total no_shows_total) };
}

plan 'no_plan';
run_tests();

__DATA__

=== TEST 1: pause holds every admission while buyers poll; resume goes on in turn order
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- request
GET /t
--- error_code: 200
--- timeout: 120
--- check
# paused while the places are booked: at 1/s a line's first turn is free,
# and a slow machine's booking could outlast a second
my $p = paused_product(main::admin(), stock => 1000);
main::ok_control($p, 'rate', rate => 1);
my @t = main::book($p, 30, 'pb');
my $paused = main::ok_control($p, 'pause');
is($paused->{state}, 'paused', "$main::name - control: paused");
my $s = stats(main::admin(), $p);
my $A = $s->{admitted};
is($s->{state}, 'paused', "$main::name - stats: paused");
cmp_ok($s->{waiting}, '>', 0, "$main::name - $s->{waiting} waiting, $A admitted");
is($s->{waiting} + $A, line_of($p)->{n}, "$main::name - waiting + admitted = turns handed out");
my @waiting = grep { main::turn_of($_) >= $A } @t;
ok(wait_until(5, sub { (poll(main::port(), $p, $waiting[0]))[1]{paused} }), "$main::name - polls say paused");
# five seconds of buyers polling: nobody is admitted
my $t0 = time;
my @seen = parallel(5, sub {
    my ($i) = @_;
    my ($polls, $admitted, $unpaused) = (0, 0, 0);
    while (time < $t0 + 5) {
        for my $k (grep { $_ % 5 == $i } 0 .. $#waiting) {
            my ($st, $b) = poll(main::port(), $p, $waiting[$k]);
            $polls++;
            $admitted++ if $b->{admitted};
            $unpaused++ unless $b->{paused} && $b->{etaSeconds} == -1;
        }
    }
    return "$polls $admitted $unpaused";
});
my ($polls, $admitted, $unpaused) = (0, 0, 0);
for (@seen) { my @f = split; $polls += $f[0]; $admitted += $f[1]; $unpaused += $f[2] }
cmp_ok($polls, '>', 0, "$main::name - $polls polls in 5 s");
is($admitted, 0, "$main::name - none of them admitted");
is($unpaused, 0, "$main::name - every one said paused, ETA -1");
is(stats(main::admin(), $p)->{admitted}, $A, "$main::name - stats: still $A admitted");
my $res = order(main::port(), $p, user => 'pb-' . main::turn_of($waiting[0]), ticket => $waiting[0]);
is($res->{status}, 302, "$main::name - an order with a waiting ticket: 302, not admitted");
my $late = order(main::port(), $p, user => 'late');
is($late->{json}{position}, scalar(@waiting) + 1, "$main::name - an arrival while paused: a place at the end");
push @waiting, $late->{json}{ticket};
main::ok_control($p, 'rate', rate => 5);
is(main::ok_control($p, 'resume')->{state}, 'open', "$main::name - resumed");
# polls from the last turn to the first: once one is admitted, every
# earlier one must be (a turn's neighbour may differ by the gate's clock)
my ($samples, $bad) = (0, 0);
my $done = wait_until(60, sub {
    my @adm = map { (poll(main::port(), $p, $_))[1]{admitted} ? 1 : 0 } reverse @waiting;
    $samples++;
    for my $i (0 .. $#adm) {
        $bad++ if $adm[$i] && grep { !$adm[$_] } $i + 2 .. $#adm;
    }
    !grep { !$_ } @adm;
});
ok($done, "$main::name - every waiting place admitted after the resume ($samples looks)");
is($bad, 0, "$main::name - never a later turn admitted before an earlier one");
$s = stats(main::admin(), $p);
is("$s->{waiting} $s->{admitted}", "0 " . line_of($p)->{n}, "$main::name - stats: nobody waiting, every turn admitted");



=== TEST 2: a rate change and a pause made on one gate reach another gate's polls within a second
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- request
GET /t
--- error_code: 200
--- timeout: 120
--- check
my $g = gate_start(workers => 2, extra => "fluxgate_queue_secret $ENV{TEST_NGINX_QUEUE_SECRET};\n"
                                        . "    fluxgate_threshold 10;",
                   server => "location = /queue/status { fluxgate_queue_status; }");
my $p = paused_product(main::admin());
my @t = main::book($p, 40, 'g2', $g->{port});
my ($st, $b) = poll(main::port(), $p, $t[39]);
is("$st $b->{position}", '200 40', "$main::name - this gate's first poll of a line booked on the other: waits for the record, 40th");
main::ok_control($p, 'rate', rate => 1);
main::ok_control($p, 'resume');
my $far = $t[39];
for my $port (main::port(), $g->{port}) {
    ok(wait_until(5, sub { my $b = (poll($port, $p, $far))[1]; $b->{etaSeconds} && $b->{etaSeconds} > 30 }),
       "$main::name - at 1/s the 40th waits over 30 s (gate $port)");
}
my %latency;
# the first moment each gate's polls show $seen, polling both in turn
my $watch = sub {
    my ($label, $what, $prod, $ticket, $seen) = @_;
    my $changed = time;
    my @r = $what->();
    my %todo = (A => main::port(), B => $g->{port});
    wait_until(10, sub {
        for my $gate (sort keys %todo) {
            next unless $seen->((poll($todo{$gate}, $prod, $ticket))[1]);
            $latency{"$label $gate"} = time - $changed;
            delete $todo{$gate};
        }
        !%todo;
    });
    return @r;
};
$watch->('rate', sub { main::ok_control($p, 'rate', rate => 100) }, $p, $far,
         sub { $_[0]{admitted} || ($_[0]{etaSeconds} // 99) <= 1 });
my $q = paused_product(main::admin());
my @u = main::book($q, 3, 'g2q', main::port());
main::ok_control($q, 'resume');
for my $port (main::port(), $g->{port}) {
    wait_until(5, sub { !(poll($port, $q, $u[2]))[1]{paused} });
}
$watch->('pause', sub { main::ok_control($q, 'pause') }, $q, $u[2], sub { $_[0]{paused} });
my $res = order($g->{port}, $q, user => 'during-pause');
is("$res->{status} " . ($res->{json}{status} // $res->{content}), '302 queued',
   "$main::name - the other gate's orders see the pause at once: an empty line, yet a place");
diag('controls reach the gates\' polls: ' . join(', ', map { sprintf "%s %.0f ms", $_, 1000 * $latency{$_} } sort keys %latency));
for my $k ('rate A', 'rate B', 'pause A', 'pause B') {
    ok(defined $latency{$k} && $latency{$k} < 1, "$main::name - $k within 1 s")
        or diag("$k: " . ($latency{$k} // 'never'));
}
gate_stop($g);



=== TEST 3: close: arrivals and ticket holders get 409 closed, polls say closed
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- request
GET /t
--- error_code: 200
--- check
my $p = paused_product(main::admin());
my @t = main::book($p, 2, 'cl');
is(main::ok_control($p, 'close')->{state}, 'closed', "$main::name - control: closed");
my $res = order(main::port(), $p, user => 'newcomer');
is("$res->{status} $res->{content}", '409 {"status":"closed"}', "$main::name - an arrival: 409 closed");
$res = order(main::port(), $p, user => 'cl-0', ticket => $t[0]);
is("$res->{status} $res->{content}", '409 {"status":"closed"}', "$main::name - a ticket holder: 409 closed");
my ($st, $b, $r);
ok(wait_until(5, sub { ($st, $b, $r) = poll(main::port(), $p, $t[1]); $b->{closed} }), "$main::name - polls say closed")
    or diag(explain $b);
ok(!exists $r->{headers}{'retry-after'}, "$main::name - nothing to come back for: no Retry-After");
is(stats(main::admin(), $p)->{state}, 'closed', "$main::name - stats: closed");
my $s = uniq('p');
init_sale(main::admin(), $s, 10, opensAt => int(time) + 3600);
my ($pre) = main::book($s, 1, 'pre');
main::ok_control($s, 'close');
is(stats(main::admin(), $s)->{state}, 'closed', "$main::name - closed before its opening: stats say closed");
is(order(main::port(), $s, user => 'pre-late')->{status}, 409, "$main::name - and arrivals get 409");
ok(wait_until(5, sub { (poll(main::port(), $s, $pre))[1]{closed} }), "$main::name - and the pre-queue's polls say closed")
    or diag(explain((poll(main::port(), $s, $pre))[1]));



=== TEST 4: stats agree with the turns: waiting + admitted = handed out; missed windows are no-shows; the metrics follow
--- http_config eval: $::SHORT
--- config eval: $::CONFIG
--- request
GET /t
--- error_code: 200
--- timeout: 120
--- check
my $p = paused_product(main::admin());
my $booked = time;
my @t = main::book($p, 40, 'st');
my $s = stats(main::admin(), $p);
is_deeply([@$s{qw(state rate waiting admitted noShows)}], ['paused', 10, 40, 0, 0],
          "$main::name - paused: 40 waiting, 0 admitted, no no-show");
ok(wait_until(10, sub { stats(main::admin(), $p)->{oldestWaitSeconds} >= 2 }), "$main::name - the oldest wait grows");
cmp_ok(stats(main::admin(), $p)->{oldestWaitSeconds}, '<=', time - $booked + 1, "$main::name - no longer than it has waited");
poll(main::port(), $p, $t[0]);
my $m;
ok(wait_until(5, sub { $m = main::line_metrics($p); ($m->{waiting} // -1) == 40 }),
   "$main::name - fluxgate_queue_waiting{product} 40") or diag(explain $m);
cmp_ok($m->{oldest_wait_seconds}, '>=', 1, "$main::name - fluxgate_queue_oldest_wait_seconds{product} $m->{oldest_wait_seconds}");
is($m->{admitted_total}, 0, "$main::name - fluxgate_queue_admitted_total{product} 0");
# three buyers among the first twenty come as soon as their turn comes
my @spenders = (0, 5, 12);
my $go = time;
my @kids = map { my $k = $_; spawn(sub {
    wait_until(30, sub { (poll(main::port(), $p, $t[$k]))[1]{admitted} }) or return "$k never";
    return "$k " . order(main::port(), $p, user => "st-$k", ticket => $t[$k])->{status};
}) } @spenders;
main::ok_control($p, 'resume');
my @checks;
ok(wait_until(30, sub {
    my $s = stats(main::admin(), $p);
    push @checks, $s->{waiting} + $s->{admitted};
    $s->{admitted} == 40;
}), "$main::name - every turn admitted at 10/s");
my @bought = collect(@kids);
is_deeply([sort @bought], [sort map { "$_ 200" } @spenders], "$main::name - the three bought in their windows");
is_deeply([grep { $_ != 40 } @checks], [], "$main::name - all along, waiting + admitted = 40 (" . scalar(@checks) . " looks)");
$s = stats(main::admin(), $p);
is_deeply([@$s{qw(state waiting admitted noShows)}], ['open', 0, 40, 17],
          "$main::name - 40 admitted; of the 20 whose window closed, 17 no-shows (3 bought)")
    or diag(explain $s);
is(stats(main::admin(), $p)->{oldestWaitSeconds}, 0, "$main::name - nobody waiting, no wait");
poll(main::port(), $p, $t[39]);
ok(wait_until(5, sub { $m = main::line_metrics($p); ($m->{admitted_total} // -1) == 40 }),
   "$main::name - fluxgate_queue_admitted_total{product} 40") or diag(explain $m);
is($m->{no_shows_total}, 17, "$main::name - fluxgate_queue_no_shows_total{product} 17");
is($m->{waiting}, 0, "$main::name - fluxgate_queue_waiting{product} 0");



=== TEST 5: the line's metrics without fluxgate_metrics_products: summed over the products
--- http_config eval: $::SUMMED
--- config eval: $::CONFIG
--- request
GET /t
--- error_code: 200
--- check
my $before = main::line_metrics();
my $p = paused_product(main::admin());
my @t = main::book($p, 4, 'sa');
my $q = paused_product(main::admin());
my @u = main::book($q, 3, 'sb');
# the metrics show each line as the gate last saw it: buyers polling
# keep it fresh (the record is refreshed at most every 100 ms)
my $m;
ok(wait_until(5, sub { poll(main::port(), $p, $t[0]); poll(main::port(), $q, $u[0]);
                       $m = main::line_metrics(); ($m->{waiting} // -1) == ($before->{waiting} // 0) + 7 }),
   "$main::name - fluxgate_queue_waiting: 7 more, the two products summed") or diag(explain [$before, $m]);
my $labelled = grep { /^fluxgate_queue_waiting\{/ } keys %{ metrics_scrape("http://127.0.0.1:" . main::admin() . "/metrics") };
is($labelled, 0, "$main::name - no product label");
main::ok_control($q, 'rate', rate => 1000);
main::ok_control($q, 'resume');
ok(wait_until(5, sub { poll(main::port(), $q, $u[2]); poll(main::port(), $p, $t[0]); $m = main::line_metrics();
                       ($m->{admitted_total} // -1) == ($before->{admitted_total} // 0) + 3 }),
   "$main::name - fluxgate_queue_admitted_total moves with q's admissions") or diag(explain $m);
is($m->{waiting}, ($before->{waiting} // 0) + 4, "$main::name - and fluxgate_queue_waiting is p's 4 only");



=== TEST 6: POST /queue/control: idempotent with its key, bad input refused, 404, logged, counted
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- request
GET /t
--- error_code: 200
--- check
my $p = uniq('p');
set_stock($p, 10);
my $metrics = sub { my $m = metrics_scrape("http://127.0.0.1:" . main::admin() . "/metrics");
                    return { map { $_ => $m->{"fluxgate_queue_controls_total{action=\"$_\"}"} } qw(pause resume close rate) } };
my $c0 = $metrics->();
my $log0 = -s (servroot() . '/logs/error.log');
my $k1 = uniq('ctl');
my $res = control(main::admin(), $p, 'pause', key => $k1);
is($res->{status}, 200, "$main::name - pause: 200");
is_deeply($res->{json}, { status => 'success', productId => $p, action => 'pause', state => 'paused', rate => 10 },
          "$main::name - the answer: action, state, rate");
my $first = $res->{content};
$res = control(main::admin(), $p, 'resume');
is($res->{json}{state}, 'open', "$main::name - resume (another key): open");
$res = control(main::admin(), $p, 'pause', key => $k1);
is($res->{status}, 200, "$main::name - the first key again: 200");
is($res->{headers}{'idempotent-replayed'}, 'true', "$main::name - Idempotent-Replayed: true");
is($res->{content}, $first, "$main::name - the first answer");
is(stats(main::admin(), $p)->{state}, 'open', "$main::name - and nothing changed: still open");
$res = control(main::admin(), $p, 'resume', key => $k1);
is($res->{status}, 422, "$main::name - the same key, another body: 422");
is($res->{json}{field}, 'X-Idempotency-Key', "$main::name - names X-Idempotency-Key");
$res = control(main::admin(), $p, 'rate', rate => 20);
is("$res->{json}{state} $res->{json}{rate}", 'open 20', "$main::name - rate 20");
is(stats(main::admin(), $p)->{rate}, 20, "$main::name - stats: rate 20");
my $before = redis_snapshot($p);
for my $bad (['{"productId":"P","action":"stop"}', 'action', 'an unknown action'],
             ['{"productId":"P"}', 'action', 'no action'],
             ['{"productId":"P","action":"rate"}', 'rate', 'rate without a rate'],
             ['{"productId":"P","action":"rate","rate":0}', 'rate', 'rate 0'],
             ['{"productId":"P","action":"rate","rate":-1}', 'rate', 'rate -1'],
             ['{"productId":"P","action":"rate","rate":"x"}', 'rate', 'rate "x"'],
             ['{"productId":"P","action":"rate","rate":1.5}', 'rate', 'rate 1.5'],
             ['{"productId":"P","action":"rate","rate":1000001}', 'rate', 'rate over 1,000,000'],
             ['{"productId":"P","action":"pause","rate":5}', 'rate', 'a rate with pause'],
             ['{"action":"pause"}', 'productId', 'no productId'],
             ['{"productId":"a b","action":"pause"}', 'productId', 'a bad productId'],
             ['{"productId":"P","action":"pause"', 'body', 'broken JSON']) {
    my ($body, $field, $what) = @$bad;
    $body =~ s/"P"/"$p"/;
    $res = admin_post(main::admin(), '/queue/control', $body);
    is($res->{status}, 400, "$main::name - $what: 400");
    is($res->{json}{field}, $field, "$main::name - $what: names $field") or diag($res->{content});
}
$res = admin_post(main::admin(), '/queue/control', { productId => $p, action => 'pause' }, key => undef);
is("$res->{status} " . ($res->{json}{field} // ''), '400 X-Idempotency-Key', "$main::name - no key: 400");
$res = admin_post(main::admin(), '/queue/control', { productId => $p, action => 'pause' }, key => 'a b');
is("$res->{status} " . ($res->{json}{field} // ''), '400 X-Idempotency-Key', "$main::name - a bad key: 400");
is(redis_snapshot($p), $before, "$main::name - none of them changed Redis");
$res = control(main::admin(), uniq('never-set'), 'pause');
is("$res->{status} $res->{content}", '404 {"status":"unknown_product"}', "$main::name - a product never set: 404");
my $c = $metrics->();
is_deeply({ map { $_ => $c->{$_} - $c0->{$_} } keys %$c }, { pause => 1, resume => 1, close => 0, rate => 1 },
          "$main::name - fluxgate_queue_controls_total{action}: what was done, not the replay");
my $log = error_log_since($log0);
like($log, qr/\[notice\].*queue control: "\Q$p\E" pause by 127\.0\.0\.1 \(key "\Q$k1\E"\): the line is now paused/,
     "$main::name - a notice names who (the address) and what: pause");
like($log, qr/\[notice\].*queue control: "\Q$p\E" rate 20 by 127\.0\.0\.1 .*at 20\/s/,
     "$main::name - and the rate change with its rate");
my @notices = $log =~ /queue control: "\Q$p\E"/g;
is(scalar @notices, 3, "$main::name - one notice per change, none for the replay");



=== TEST 7: GET /queue/status: header or ?ticket=, refusals, soldOut, unknown product
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- request
GET /t
--- error_code: 200
--- check
my $p = paused_product(main::admin(), stock => 5);
my $q = paused_product(main::admin());
my @t = main::book($p, 2, 'qs');
my ($st, $b, $r) = poll(main::port(), $p, $t[1]);
is($st, 200, "$main::name - X-Queue-Ticket: 200");
is($r->{headers}{'content-type'}, 'application/json', "$main::name - JSON");
is_deeply($b, { position => 2, admitted => JSON::PP::false, etaSeconds => -1, soldOut => JSON::PP::false,
                paused => JSON::PP::true }, "$main::name - second, paused, no ETA");
my ($st2, $b2) = poll(main::port(), $p, $t[1], query => 1);
is_deeply([$st2, $b2], [$st, $b], "$main::name - ?ticket= (older pages): the same answer");
my $d = ticket_decode($t[1]);
for my $c (['forged', $p, ticket_forge($t[1], seq => 0), qr/signature/],
           ["another product's", $q, $t[1], qr/another product/],
           ['garbage', $p, 'garbage', qr/not a ticket/],
           ['expired', $p, ticket_sign($main::SECRET, %$d, expires => int(time) - 1), qr/expired/],
           ['of another sale', $p, ticket_sign($main::SECRET, %$d, epoch => $d->{epoch} + 1), qr/expired/]) {
    my ($what, $prod, $ticket, $why) = @$c;
    ($st, $b) = poll(main::port(), $prod, $ticket);
    is("$st " . ($b->{field} // '-'), '400 X-Queue-Ticket', "$main::name - $what, in the header: 400 naming X-Queue-Ticket");
    like($b->{error} // '', $why, "$main::name - $what: says why");
    ($st, $b) = poll(main::port(), $prod, $ticket, query => 1);
    is("$st " . ($b->{field} // '-'), '400 ticket', "$main::name - $what, in ?ticket=: 400 naming ticket");
}
($st, $b) = poll(main::port(), $p, undef);
is("$st " . ($b->{field} // '-'), '400 X-Queue-Ticket', "$main::name - no ticket: 400 naming X-Queue-Ticket");
($st, $b) = poll(main::port(), 'a%20b', $t[1]);
is("$st " . ($b->{field} // '-'), '400 productId', "$main::name - a bad productId: 400 naming productId");
my $res = http_post("http://127.0.0.1:" . main::port() . "/queue/status?productId=$p", '{}');
is($res->{status}, 405, "$main::name - POST: 405");
my $never = uniq('never-set');
($st, $b) = poll(main::port(), $never, ticket_sign($main::SECRET, %$d, product => $never));
is("$st " . json_encode($b), '404 {"status":"unknown_product"}', "$main::name - a product never set: 404");
redis('SET', "fg:{$p}:stock", 0);
ok(wait_until(5, sub { (poll(main::port(), $p, $t[0]))[1]{soldOut} }), "$main::name - stock 0: soldOut within the refresh");
my $before = redis_snapshot($p);
poll(main::port(), $p, $t[0]) for 1 .. 5;
is(redis_snapshot($p), $before, "$main::name - polls write nothing");



=== TEST 8: the last turns' windows stay open while the line is empty: as long as any turn's, and no no-show counted early
--- http_config eval: $::BASE . "    fluxgate_queue_window 250ms;\n"
--- config eval: $::CONFIG
--- request
GET /t
--- error_code: 200
--- check
# 4/s and a window of 250 ms: W = 1 turn.  Two places, then the line runs
# dry: the head stops a free turn (and the burst) past the turns handed
# out.  Turn 1 was admitted last: its window is open until another turn
# is admitted; turn 0's closed when turn 1 was admitted.
my $p = paused_product(main::admin());
main::ok_control($p, 'rate', rate => 4);
my @t = main::book($p, 2, 'w');
main::ok_control($p, 'resume');
my $line = line_of($p);
# the head at its cap, n + 1 (burst 0), by Redis's clock
my $due = $line->{t} + ($line->{n} + 1 - ($line->{h} || 0)) * 1_000_000 / 4;
ok(wait_until(10, sub { redis_time_us() >= $due + 1000 }), "$main::name - the line ran dry");
my ($st, $b);
ok(wait_until(5, sub { ($st, $b) = poll(main::port(), $p, $t[1]); $b->{admitted} }),
   "$main::name - the last turn's poll: admitted") or diag(explain $b);
($st, $b) = poll(main::port(), $p, $t[0]);
is("$st " . ($b->{field} // '-'), '400 X-Queue-Ticket', "$main::name - the first turn's window has passed");
my $s = stats(main::admin(), $p);
is($s->{noShows}, 1, "$main::name - one no-show counted: the first turn, not the last");
my $res = order(main::port(), $p, user => 'w-1', ticket => $t[1]);
is($res->{status}, 200, "$main::name - the last turn buys") or diag("$res->{status} $res->{content}");
