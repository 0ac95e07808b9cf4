# fluxgate_queue_pow: a cost per place (DESIGN.md v3, "A cost per place";
# issue 19).  While the line is busy an order without a proof gets a
# challenge (302) and Redis is not asked; a valid proof books one place,
# the buyer's only one; a forged, weak, stale, another buyer's or reused
# proof gets a new challenge with Redis unchanged; a ticket holder is
# never asked for work; and a flood of 10,000 proof-less orders writes
# nothing to Redis.  Proofs are found here with Digest::SHA, as the
# waiting room's page finds them; challenges the gate could not have
# made (stale ones) are signed here with the test's copy of the secret.
#
# The first blocks run with the lines' zone refreshed once an hour: the
# gate then asks Redis for a product's head once, so any EVALSHA counted
# in INFO commandstats while they run is an order's.
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
    fluxgate_threshold 1;
    fluxgate_queue_pow 8;
    log_format outcome '$status $fluxgate_outcome';

    server {
        listen 127.0.0.1:$TEST_NGINX_ADMIN_PORT;
        location = /init { fluxgate_stock_admin; }
        location = /queue/control { fluxgate_queue_control; }
        location = /metrics { fluxgate_metrics; }
    }
EOF

# a refresh of an hour: one queue_head.lua per product, then none
our $HTTP = $BASE . "    fluxgate_queue_zone zone=lines:1m refresh=1h;\n";

our $CONFIG = <<'EOF';
    fluxgate_waiting_room /waiting-room/;
    access_log $TEST_NGINX_SERVROOT/logs/outcome.log outcome;

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

our $SECRET = queue_setup('t204');
our $BITS = 8;

sub port { server_port() }
sub admin { $ENV{TEST_NGINX_ADMIN_PORT} }

sub evalsha { redis_calls()->{evalsha} // 0 }

# fluxgate_queue_challenges_total by result
sub challenges {
    my $m = metrics_scrape("http://127.0.0.1:" . admin() . "/metrics");
    return { map { $_ => $m->{"fluxgate_queue_challenges_total{result=\"$_\"}"} // 'none' }
             qw(issued solved failed reused) };
}

# the last line of the shop's access log: "<status> <$fluxgate_outcome>"
sub last_outcome {
    open my $fh, '<', servroot() . '/logs/outcome.log' or return '';
    my @l = <$fh>;
    chomp(my $last = $l[-1] // '');
    return $last;
}

# the order must be answered with a challenge: its JSON
sub challenged {
    my ($res, $name) = @_;
    is("$res->{status} " . ($res->{json}{status} // $res->{content}), '302 challenge',
       "$name: 302 with a challenge");
    return $res->{json};
}

# a paused product the gate knows is busy: an order without a proof is
# answered by the gate alone (one with Redis first, for the gate to learn
# of the line)
sub busy_product {
    my $p = paused_product(admin());
    my $res = order(port(), $p);
    die "no challenge: $res->{status} $res->{content}\n"
        unless ($res->{json}{status} // '') eq 'challenge';
    wait_until(10, sub {
        my $n = evalsha();
        my $r = order(port(), $p);
        ($r->{json}{status} // '') eq 'challenge' && evalsha() == $n;
    }) or die "the gate never answered a challenge without Redis\n";
    return $p;
}

# an order of $user with a proof that must fail: a new challenge, Redis
# unchanged, no EVALSHA, the counter of $result up by one
sub refused_proof {
    my ($p, $proof, $user, $result, $name) = @_;
    my ($before, $n, $c) = (redis_snapshot($p), evalsha(), challenges());
    my $res = order(port(), $p, user => $user, proof => $proof);
    my $j = main::challenged($res, $name);
    (my $sent = $proof) =~ s/\.\d+$//;
    isnt($j->{challenge}, $sent, "$name: a new challenge");
    is(redis_snapshot($p), $before, "$name: Redis unchanged");
    is(evalsha(), $n, "$name: no EVALSHA");
    my $after = challenges();
    is($after->{$result} - $c->{$result}, 1, "$name: counted as $result");
}

plan 'no_plan';
run_tests();

__DATA__

=== TEST 1: no line, no work: an order that finds a free turn passes without a proof
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- request
GET /t
--- error_code: 200
--- check
my $p = uniq('p');
set_stock($p, 10);
my $c = main::challenges();
my $res = order(main::port(), $p);
is($res->{status}, 200, "$main::name - 200") or diag($res->{content});
is(main::challenges()->{issued}, $c->{issued}, "$main::name - no challenge issued");



=== TEST 2: a busy line: no proof, a challenge; the gate alone answers it once it knows the line
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- request
GET /t
--- error_code: 200
--- check
my $p = paused_product(main::admin());
my $c0 = main::challenges();
my $before = redis_snapshot($p);
my $res = order(main::port(), $p, user => 'alice');
my $j = main::challenged($res, "$main::name - the first, Redis asked");
is_deeply([sort keys %$j], [qw(bits challenge status)], "$main::name - body: status, challenge, bits");
is($j->{bits}, $main::BITS, "$main::name - bits as configured");
is(redis_snapshot($p), $before, "$main::name - nothing written for it");
my ($path, $query, $frag) = location_parts($res);
is("$path?$query", "/waiting-room/?productId=$p", "$main::name - Location: the waiting room");
is($frag, "challenge=$j->{challenge}&bits=$main::BITS", "$main::name - the challenge in the fragment");
my $cookie = cookies_of($res)->{"fluxgate_challenge_$p"};
is($cookie->{value}, "$main::BITS:$j->{challenge}", "$main::name - and in a cookie, <bits>:<challenge>");
is($cookie->{attr}{'max-age'}, 120, "$main::name - good for two minutes");
my $d = challenge_decode($j->{challenge});
is_deeply([@$d{qw(product buyer)}], [$p, 'alice'], "$main::name - for this product and buyer");
ok(abs($d->{expires} - time - 120) <= 5, "$main::name - expires in 120 s");
like($d->{nonce}, qr/^[0-9a-f]{32}$/, "$main::name - a random nonce");
is(challenge_sign($main::SECRET, %$d), $j->{challenge}, "$main::name - signed with the queue secret");
is(main::last_outcome(), '302 challenged', "$main::name - \$fluxgate_outcome: challenged");
ok(wait_until(10, sub {
    my $n = main::evalsha();
    my $r = order(main::port(), $p);
    ($r->{json}{status} // '') eq 'challenge' && main::evalsha() == $n;
}), "$main::name - the gate learns the line is busy");
my %seen;
my ($n, $c) = (main::evalsha(), main::challenges());
for my $i (1 .. 20) {
    my $r = order(main::port(), $p, user => "user-$i");
    $seen{$r->{json}{status} // $r->{status}}++;
}
is_deeply(\%seen, { challenge => 20 }, "$main::name - 20 more orders without a proof: 20 challenges");
is(main::evalsha(), $n, "$main::name - and not one EVALSHA");
is(redis_snapshot($p), $before, "$main::name - nor a change in Redis");
is(main::challenges()->{issued} - $c->{issued}, 20,
   "$main::name - fluxgate_queue_challenges_total{result=\"issued\"} counts them");
cmp_ok($c->{issued} - $c0->{issued}, '>=', 1, "$main::name - the one Redis asked for too");



=== TEST 3: a valid proof books a place, the buyer's only one; the same proof again is refused
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- request
GET /t
--- error_code: 200
--- check
my $p = main::busy_product();
my $n0 = line_of($p)->{n} // 0;
my $c0 = main::challenges();
my $key = uniq('k');
my $j = main::challenged(order(main::port(), $p, user => 'bob', key => $key), "$main::name - bob");
my $proof = proof_of($j->{challenge}, $j->{bits});
ok(pow_bits(Digest::SHA::sha256($proof)) >= $main::BITS, "$main::name - the proof has $main::BITS zero bits");
my $res = order(main::port(), $p, user => 'bob', key => $key, proof => $proof);
is($res->{status}, 302, "$main::name - the same order with X-Queue-Proof: 302") or diag($res->{content});
is($res->{json}{status}, 'queued', "$main::name - a place");
my $t = $res->{json}{ticket};
is(ticket_decode($t)->{buyer}, 'bob', "$main::name - bob's");
is(line_of($p)->{n}, $n0 + 1, "$main::name - one turn handed out");
my $c = main::challenges();
is($c->{solved} - $c0->{solved}, 1, "$main::name - counted as solved");
main::challenged(order(main::port(), $p, user => 'bob'), "$main::name - bob again without a proof");
main::refused_proof($p, $proof, 'bob', 'reused', "$main::name - the same proof again");
$j = main::challenged(order(main::port(), $p, user => 'bob'), "$main::name - bob, a new challenge");
$res = order(main::port(), $p, user => 'bob', proof => proof_of($j->{challenge}, $j->{bits}));
is("$res->{status} " . ($res->{json}{ticket} // '-'), "302 $t", "$main::name - solved again: the same place, not a second");
is(line_of($p)->{n}, $n0 + 1, "$main::name - still one turn for bob");
is(places_of($p), 1, "$main::name - one place");
my ($st, $b) = poll(main::port(), $p, $t);
is($st, 200, "$main::name - the ticket polls");



=== TEST 4: forged, weak, stale, another buyer's or another product's proof: a new challenge, Redis unchanged
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- request
GET /t
--- error_code: 200
--- check
my $p = main::busy_product();
my $q = main::busy_product();
my $j = main::challenged(order(main::port(), $p, user => 'carol'), "$main::name - carol");
my $c = $j->{challenge};
my $weak = 0;
$weak++ while pow_bits(Digest::SHA::sha256("$c.$weak")) >= $main::BITS;
main::refused_proof($p, "$c.$weak", 'carol', 'failed', "$main::name - too weak");
main::refused_proof($p, "$c.", 'carol', 'failed', "$main::name - no number");
main::refused_proof($p, "$c.12x", 'carol', 'failed', "$main::name - not a number");
main::refused_proof($p, "garbage", 'carol', 'failed', "$main::name - garbage");
my $d = challenge_decode($c);
my (undef, $mac) = split /\./, $c;
my $forged = b64url(join '|', $d->{product}, $d->{buyer}, $d->{expires} + 3600, $d->{nonce}) . ".$mac";
main::refused_proof($p, proof_of($forged, $main::BITS), 'carol', 'failed', "$main::name - forged: a longer life");
main::refused_proof($p, proof_of(challenge_sign('another secret of at least 32 bytes....', %$d), $main::BITS),
                    'carol', 'failed', "$main::name - another gate's secret");
main::refused_proof($p, proof_of(challenge_sign($main::SECRET, %$d, expires => int(time) - 1), $main::BITS),
                    'carol', 'failed', "$main::name - stale: its expiry passed");
main::refused_proof($p, proof_of($c, $main::BITS), 'mallory', 'failed', "$main::name - carol's proof sent by another buyer");
my $jq = main::challenged(order(main::port(), $q, user => 'carol'), "$main::name - carol, another product");
main::refused_proof($p, proof_of($jq->{challenge}, $main::BITS), 'carol', 'failed', "$main::name - another product's proof");
my $res = order(main::port(), $p, user => 'carol',
                proof => proof_of(challenge_sign($main::SECRET, %$d, expires => int(time) + 60), $main::BITS));
is($res->{json}{status}, 'queued', "$main::name - (a challenge signed here and still good is taken: the stale one failed for its expiry)")
    or diag($res->{content});
$res = order(main::port(), $p, user => 'carol', proof => proof_of($c, $main::BITS));
is($res->{json}{status}, 'challenge', "$main::name - the nonce was taken by that proof: the gate's own challenge with it is refused now");



=== TEST 5: a ticket holder is never asked for work; a pre-queue place costs a proof too
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- request
GET /t
--- error_code: 200
--- check
my $p = main::busy_product();
my $j = main::challenged(order(main::port(), $p, user => 'dan'), "$main::name - dan");
my $t = order(main::port(), $p, user => 'dan', proof => proof_of($j->{challenge}, $j->{bits}))->{json}{ticket};
ok($t, "$main::name - dan has a place");
my $res = order(main::port(), $p, user => 'dan', ticket => $t);
is("$res->{status} " . ($res->{json}{status} // '-') . " " . ($res->{json}{ticket} // '-'), "302 queued $t",
   "$main::name - with the ticket: his place, no challenge");
my $s = uniq('p');
init_sale(main::admin(), $s, 10, opensAt => int(time) + 3600);
$j = main::challenged(order(main::port(), $s, user => 'erin'), "$main::name - before the opening");
$res = order(main::port(), $s, user => 'erin', proof => proof_of($j->{challenge}, $j->{bits}));
is($res->{json}{status}, 'prequeue', "$main::name - with a proof: a pre-queue place") or diag($res->{content});



=== TEST 6: a flood of 10,000 orders without a proof on a busy line writes nothing to Redis
--- http_config eval: $::BASE
--- config eval: $::CONFIG
--- request
GET /t
--- error_code: 200
--- timeout: 600
--- check
# the default zone here (refreshed every 100 ms while the line is asked
# about): what a gate in production does
my $p = main::busy_product();
my $c0 = main::challenges();
my ($keys, $calls) = (redis_keys(), redis_calls());
my $t0 = time;
my ($lines, $r) = redis_monitor(sub {
    loadgen(port => main::port(), c => 50, n => 10000, product => $p, expect => '302') });
my $elapsed = time - $t0;
my $after = redis_calls();
is($r->{status}{302}{count}, 10000, "$main::name - 10,000 answers 302") or diag($r->{raw});
is($r->{rc}, 0, "$main::name - nothing else");
is(main::challenges()->{issued} - $c0->{issued}, 10000, "$main::name - 10,000 challenges issued");
is(scalar(order_calls($lines, $p)), 0, "$main::name - order.lua never ran");
my $w0 = redis_writes($calls);
my $w1 = redis_writes($after);
my @moved = grep { ($w1->{$_} // 0) != ($w0->{$_} // 0) } keys %$w1;
is_deeply(\@moved, [], "$main::name - no write command's count moved (INFO commandstats)")
    or diag(join ', ', map { "$_: $w0->{$_} -> $w1->{$_}" } @moved);
cmp_ok(redis_keys(), '<=', $keys, "$main::name - no key made");
my $asks = grep { /\] "EVALSHA" / && index($_, "\"fg:{$p}:gen\"") >= 0 } @$lines;
diag(sprintf "pow flood: 10,000 orders without a proof in %.1f s (%d/s), %d order.lua, %d refreshes of the line's head (at most one per 100 ms), evalsha %d -> %d",
     $elapsed, 10000 / $elapsed, scalar(order_calls($lines, $p)), $asks, $calls->{evalsha} // 0, $after->{evalsha} // 0);
cmp_ok($asks, '<=', 2 + $elapsed * 10, "$main::name - Redis asked at most every 100 ms, for the line's head");
