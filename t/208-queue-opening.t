# A scheduled opening and its shuffled pre-queue (DESIGN.md v3,
# "Scheduled opening and a shuffled pre-queue"; issue 20).  Before
# opensAt every arrival gets a pre-queue place (one per buyer); at the
# opening each gets a uniformly random turn from a seed made then, ahead
# of everyone who comes after, who queue FIFO behind.  Measured: 1,000
# arrivals in a known order against their turns (Spearman's rho, the
# goal |rho| < 0.1), and the first arrival's turn over 50 openings
# (chi-square over the ten possible turns, p > 0.01).  Printed: rho and
# the chi-square.
#
# The line is paused before its opening, so that at the opening every
# position is exactly turn + 1 and stays put while it is read.  Sales
# are announced an hour ahead and the opening then brought forward in
# Redis once the arrivals are in (FluxGate::Queue's open_now): what the
# wait would do, whatever the machine's speed.  One opening comes by the
# clock alone.
#
# Two worker processes only (the polls and the opening then cross the
# processes' shared zone): the statistics are of the shuffle, which does
# not depend on them, and each comparison may fail by chance (p = 0.01 for
# the chi-square by design; about 0.002 for |rho| >= 0.1 under a uniform
# shuffle of 1,000), so they run once.
use strict;
use warnings;
use lib 't/lib';
use Test::Nginx::Socket::Lite;
use FluxGate::Test;
use FluxGate::Queue;
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
        location = /init { fluxgate_stock_admin; }
        location = /queue/control { fluxgate_queue_control; }
        location = /queue/stats { fluxgate_queue_stats; }
    }
EOF

our $CONFIG = <<'EOF';
    fluxgate_waiting_room /waiting-room/;

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

queue_setup('t208');

sub port { server_port() }
sub admin { $ENV{TEST_NGINX_ADMIN_PORT} }

sub ok_control {
    my ($p, @a) = @_;
    my $res = control(admin(), $p, @a);
    die "control @a: $res->{status} $res->{content}\n" unless $res->{status} == 200;
}

# a sale announced an hour ahead, its line paused: [product, opensAt]
sub announced {
    my $p = uniq('p');
    my $at = int(time) + 3600;
    init_sale(admin(), $p, 100000, opensAt => $at);
    ok_control($p, 'pause');
    return ($p, $at);
}

# $n arrivals, one after the other, buyers "<prefix>-<i>": their tickets
# (dies on anything but a place)
sub arrive {
    my ($p, $n, $prefix, $kind) = @_;
    my @t;
    for my $i (0 .. $n - 1) {
        my $res = order(port(), $p, user => sprintf('%s-%04d', $prefix, $i));
        die "arrival $i: $res->{status} $res->{content}\n"
            unless $res->{status} == 302 && ($res->{json}{status} // '') eq $kind;
        push @t, $res->{json}{ticket};
    }
    return @t;
}

# the position a poll gives a ticket; undef before the opening
sub position {
    my ($p, $t) = @_;
    my ($st, $b) = poll(port(), $p, $t);
    die "poll: $st " . json_encode($b) . "\n" unless $st == 200;
    return $b->{position};
}

workers(2);
plan 'no_plan';
run_tests();

__DATA__

=== TEST 1: before the opening: a pre-queue place, one per buyer, a countdown, no seed yet
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- request
GET /t
--- error_code: 200
--- check
my $p = uniq('p');
my $at = int(time) + 3600;
my $init = init_sale(main::admin(), $p, 10, opensAt => $at);
is($init->{json}{opensAt}, $at, "$main::name - /init names the opening");
my $res = order(main::port(), $p, user => 'alice');
is($res->{status}, 302, "$main::name - 302") or diag($res->{content});
is_deeply([sort keys %{ $res->{json} }], [qw(opensAt retryAfter status ticket)],
          "$main::name - body: status, ticket, opensAt, retryAfter");
is($res->{json}{status}, 'prequeue', "$main::name - prequeue");
is($res->{json}{opensAt}, $at, "$main::name - when it opens");
my $t = $res->{json}{ticket};
my (undef, $query, $frag) = location_parts($res);
is("$query#$frag", "productId=$p#ticket=$t", "$main::name - the ticket in the fragment");
my $d = ticket_decode($t);
is_deeply([@$d{qw(buyer kind seq)}], ['alice', 'p', 0], "$main::name - a pre-queue ticket, place 0");
is($d->{expires}, $at + 3600, "$main::name - it lives a ticket's life from the opening on");
my $again = order(main::port(), $p, user => 'alice');
is("$again->{json}{status} " . ($again->{json}{ticket} // '-'), "prequeue $t", "$main::name - alice again: the same place");
is(order(main::port(), $p, user => 'bob')->{json}{status}, 'prequeue', "$main::name - bob: a place too");
is(places_of($p), 2, "$main::name - two places");
my ($st, $b, $r) = poll(main::port(), $p, $t);
is($st, 200, "$main::name - poll: 200");
is_deeply([sort keys %$b], [qw(admitted etaSeconds opensAt position soldOut)], "$main::name - poll: the countdown's fields");
ok(!defined $b->{position} && !$b->{admitted} && !$b->{soldOut}, "$main::name - no position yet")
    or diag(explain $b);
is($b->{opensAt}, $at, "$main::name - poll: opensAt");
ok(abs($b->{etaSeconds} - 3600) <= 5, "$main::name - poll: ETA the time to the opening ($b->{etaSeconds})");
ok($r->{headers}{'retry-after'} >= 1 && $r->{headers}{'retry-after'} <= 5, "$main::name - Retry-After at most 5");
my $s = stats(main::admin(), $p);
is($s->{state}, 'scheduled', "$main::name - stats: scheduled");
is($s->{opensAt}, $at, "$main::name - stats: opensAt");
is($s->{waiting}, 2, "$main::name - stats: two waiting");
my $line = line_of($p);
ok(!exists $line->{s} && !exists $line->{P}, "$main::name - no seed nor size in Redis before the opening")
    or diag(explain $line);



=== TEST 2: 1,000 arrivals in a known order: turns uncorrelated with arrival, all ahead of later arrivals
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- request
GET /t
--- error_code: 200
--- timeout: 600
--- check
my $N = 1000;
my ($p) = main::announced();
my @t = main::arrive($p, $N, 'early', 'prequeue');
is_deeply([map { ticket_decode($_)->{seq} } @t], [0 .. $N - 1], "$main::name - places numbered in arrival order");
my $e = epoch_of($p);
my $pb = "fg:{$p}:q:$e:pb";
my $dump = unpack 'H*', scalar redis('DUMP', $pb);
is(redis('HLEN', $pb), $N, "$main::name - one small entry per buyer");
ok(!exists line_of($p)->{s}, "$main::name - no seed before the opening");
open_now($p);
ok(wait_until(10, sub { defined main::position($p, $t[0]) }), "$main::name - the sale opens");
my $line = line_of($p);
is($line->{P}, $N, "$main::name - the pre-queue's size frozen at the opening");
like($line->{s} // '', qr/^[0-9a-f]{32}$/, "$main::name - a seed made at the opening");
is(unpack('H*', scalar redis('DUMP', $pb)), $dump, "$main::name - no buyer's entry rewritten at the opening");
my @pos = map { main::position($p, $_) } @t;
is_deeply([sort { $a <=> $b } @pos], [1 .. $N], "$main::name - positions 1..$N: every turn once");
my @turn = map { $_ - 1 } @pos;
my $rho = spearman([0 .. $N - 1], \@turn);
diag(sprintf "pre-queue shuffle: %d arrivals, Spearman's rho (arrival, turn) = %.4f", $N, $rho);
# a random permutation's rho has a standard deviation of 1/sqrt(999) =
# 0.0316: 0.15 is 4.7 of them, passed by chance by all but 2 in a million
# openings (include/test_shuffle.c measures the spread over 500 seeds)
ok(abs($rho) < 0.15, "$main::name - |rho| = " . sprintf('%.4f', abs $rho) . " < 0.15");
my $moved = grep { $pos[$_] != main::position($p, $t[$_]) } 0 .. $N - 1;
is($moved, 0, "$main::name - paused: every position stays put");
srand(208);
my @sample = (0, $N - 1, map { int rand $N } 1 .. 48);
my @lua = map { order(main::port(), $p, user => sprintf('early-%04d', $_), ticket => $t[$_])->{json}{position} // -1 } @sample;
is_deeply(\@lua, [@pos[@sample]], "$main::name - order.lua (Lua shuffle) places 50 of them where the polls (C shuffle) do");
my @late = main::arrive($p, 20, 'late', 'queued');
is_deeply([map { ticket_decode($_)->{seq} } @late], [$N .. $N + 19], "$main::name - arrivals after the opening: turns $N on, in order");
is_deeply([map { main::position($p, $_) } @late], [$N + 1 .. $N + 20], "$main::name - behind the whole pre-queue");
main::ok_control($p, 'rate', rate => 500);
main::ok_control($p, 'resume');
ok(wait_until(60, sub { (poll(main::port(), $p, $late[0]))[1]{admitted} }),
   "$main::name - resumed: the first later arrival's turn comes");
my $waiting = grep { !(poll(main::port(), $p, $_))[1]{admitted} } @t;
is($waiting, 0, "$main::name - by then every pre-queue buyer was admitted");
my $first = (sort { $pos[$a] <=> $pos[$b] } 0 .. $N - 1)[0];
my $res = order(main::port(), $p, user => sprintf('early-%04d', $first), ticket => $t[$first]);
is($res->{status}, 200, "$main::name - the first turn's buyer (arrival $first) orders") or diag($res->{content});



=== TEST 3: over 50 openings the first arrival's turn is uniform over the pre-queue (chi-square)
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- request
GET /t
--- error_code: 200
--- timeout: 600
--- check
my ($OPENINGS, $P) = (50, 10);
my (@count, %seeds);
$count[$_] = 0 for 0 .. $P - 1;
for my $k (1 .. $OPENINGS) {
    my ($p) = main::announced();
    my @t = main::arrive($p, $P, 'a', 'prequeue');
    open_now($p);
    my $pos;
    wait_until(10, sub { $pos = main::position($p, $t[0]) }) or die "opening $k never came\n";
    $count[$pos - 1]++;
    $seeds{line_of($p)->{s} // ''}++;
}
my $chi = chi_square(\@count, [($OPENINGS / $P) x $P]);
diag(sprintf "opening shuffle: first arrival's turn over %d openings of %d places: %s; chi-square %.2f (9 df, p = 0.01 at %.3f)",
     $OPENINGS, $P, join(' ', @count), $chi, $CHI2_DF9_P01);
cmp_ok($chi, '<', $CHI2_DF9_P01, "$main::name - chi-square " . sprintf('%.2f', $chi) . ": p > 0.01");
is(scalar(keys %seeds), $OPENINGS, "$main::name - a seed of its own for every opening");



=== TEST 4: an order can be what opens the sale; the clock alone opens it too
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- request
GET /t
--- error_code: 200
--- timeout: 60
--- check
my ($p) = main::announced();
my @t = main::arrive($p, 3, 'b', 'prequeue');
open_now($p);
my $res = order(main::port(), $p, user => 'after');
is($res->{json}{status}, 'queued', "$main::name - the first order after the opening: a place in line") or diag($res->{content});
is(ticket_decode($res->{json}{ticket})->{seq}, 3, "$main::name - behind the pre-queue's three");
like(line_of($p)->{s} // '', qr/^[0-9a-f]{32}$/, "$main::name - it made the seed");
is($res->{json}{position}, 4, "$main::name - fourth");
my $q = uniq('p');
my $at = int(time) + 2;
init_sale(main::admin(), $q, 10, opensAt => $at);
my $early = order(main::port(), $q, user => 'on-time');
SKIP: {
    skip "the arrival came after its opening (a slow machine)", 3
        unless ($early->{json}{status} // '') eq 'prequeue';
    my $asked = time;
    my ($st, $b) = poll(main::port(), $q, $early->{json}{ticket});
    ok(!defined $b->{position} || $asked + 0.2 >= $at, "$main::name - before opensAt: no position");
    ok(wait_until(15, sub { (poll(main::port(), $q, $early->{json}{ticket}))[1]{admitted} }),
       "$main::name - at opensAt, by the clock: the pre-queue's only place is admitted");
    cmp_ok(time, '>=', $at, "$main::name - not before opensAt");
}



=== TEST 5: a new announcement is a new sale: the last one's tickets are void
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- request
GET /t
--- error_code: 200
--- check
my ($p) = main::announced();
my ($t) = main::arrive($p, 1, 'c', 'prequeue');
my $e = epoch_of($p);
init_sale(main::admin(), $p, 10, opensAt => int(time) + 3600);
is(epoch_of($p), $e + 1, "$main::name - a new epoch");
my ($st, $b) = poll(main::port(), $p, $t);
ok(wait_until(5, sub { ($st, $b) = poll(main::port(), $p, $t); $st == 400 }), "$main::name - the old ticket polls 400");
like($b->{error} // '', qr/expired/, "$main::name - expired");
my $res = order(main::port(), $p, user => 'c-0000', ticket => $t);
is($res->{status}, 400, "$main::name - and orders 400");
$res = order(main::port(), $p, user => 'c-0000');
is("$res->{json}{status} " . ticket_decode($res->{json}{ticket})->{seq}, 'prequeue 0',
   "$main::name - its buyer gets a place in the new pre-queue, the first");
