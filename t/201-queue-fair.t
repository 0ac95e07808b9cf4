# The waiting room is a fair line: a crowd of 200 buyers arriving at once
# is queued in the order the gate took them, admitted in exactly that
# order at the product's threshold and never faster, and someone who
# keeps retrying without a ticket never gets ahead of the line: as the
# same buyer they get the same place again (one place per buyer), as a
# new buyer each time a new place at the end.  What the shop got is read
# from Kafka (the orders' own timestamps and order in the topic), and
# held against Redis's clock: turn k is admitted when floor(H) > k, the
# head H moving at the rate from h turns at t (the line record fg:{p}:q;
# docs: queue-v3 "Head").  Printed: how many were admitted out of order
# (the goal is 0).
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
    fluxgate_threshold $TEST_NGINX_QUEUE_RATE;
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

queue_setup('t201');

# FG_QUEUE_CLIENTS=2000 FG_QUEUE_RATE=250 for a bigger crowd than the
# suite's (which stays a few seconds long)
our $RATE = $ENV{TEST_NGINX_QUEUE_RATE} = $ENV{FG_QUEUE_RATE} // 50;
our $PROCS = 10;
our $EACH = int(($ENV{FG_QUEUE_CLIENTS} // 200) / $PROCS);

sub port { server_port() }

# One client process: $EACH arrivals one after the other (all processes
# at once), each a buyer of its own, then each of its tickets, in the
# order it got them, waits for its turn and orders with it: in odd
# processes as the waiting room's page does (GET /queue/status until
# admitted), in even ones by sending the order with the ticket until it
# goes through (what the gate admits, not what the polls say, is then
# what Kafka shows).  One line per buyer: "<process> <arrival> <key>
# <first status> <turn or -> <final status> <orders answered 'not yet'
# after an 'admitted' poll> <orders answered 'not yet' (impatient)>".
sub clients {
    my ($proc, $p) = @_;
    my @c;
    for my $i (1 .. $EACH) {
        my $key = "k$proc-$i-" . uniq('c');
        my $res = order(port(), $p, key => $key);
        my $t = $res->{status} == 302 ? $res->{json}{ticket} : undef;
        push @c, { i => $i, key => $key, first => $res->{status},
                   ticket => $t, final => $res->{status} };
    }
    my $deadline = time + 30 + $PROCS * $EACH / $RATE;
    for my $c (grep { $_->{ticket} } @c) {
        while (time < $deadline) {
            if ($proc % 2 == 0) {
                # impatient: the order again and again, the gate alone
                # says when (302 with the same ticket until its turn)
                my $res = order(port(), $p, key => $c->{key},
                                ticket => $c->{ticket});
                $c->{final} = $res->{status};
                last unless $res->{status} == 302
                            && ($res->{json}{ticket} // '') eq $c->{ticket};
                $c->{early}++;
                sleep(($res->{json}{position} // 0) > $RATE ? 0.5 : 0.02);
                next;
            }
            my ($st, $b) = poll(port(), $p, $c->{ticket});
            if ($b->{admitted}) {
                my $res = order(port(), $p, key => $c->{key},
                                ticket => $c->{ticket});
                $c->{final} = $res->{status};
                # the poll's word came a moment before Redis's (the
                # gate's clock runs from its last look at Redis): not
                # yet, the same ticket again, as a page would be told
                last unless $res->{status} == 302
                            && ($res->{json}{ticket} // '') eq $c->{ticket};
                $c->{again}++;
                next;
            }
            # close to its turn: look often; far from it: wait
            sleep(($b->{etaSeconds} // 0) > 1 ? 0.5 : 0.01);
        }
    }
    return map { join ' ', $proc, @$_{qw(i key first)},
                 ($_->{ticket} ? ticket_decode($_->{ticket})->{seq} : '-'),
                 $_->{final}, $_->{again} // 0, $_->{early} // 0 } @c;
}

# Someone who keeps sending orders without a ticket while the line is
# long, with a fresh key each time: as the same buyer ($who 'same'), or
# as a new buyer each time ('fresh').  One line per try: "retry <who>
# <status> <turn or -> <position> <turns handed out before the try>".
# It stops when its place is under a second from its turn (the next try
# may then rightly pass), or after $tries tries.
sub retrier {
    my ($p, $who, $tries) = @_;
    my @out;
    for my $n (1 .. $tries) {
        my $user = $who eq 'same' ? 'retrier' : "retrier-$n";
        my $before = line_of($p)->{n};
        my $res = order(port(), $p, user => $user);
        my $turn = $res->{json}{ticket} ? ticket_decode($res->{json}{ticket})->{seq} : '-';
        my $pos = $res->{json}{position} // 0;
        push @out, "retry $who $res->{status} $turn $pos $before";
        last if $pos < $RATE;
        sleep 0.1;
    }
    return @out;
}

plan 'no_plan';
run_tests();

__DATA__

=== TEST 1: 200 buyers at once, 50/s (by default): admitted in the order they were queued, never faster
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- request
GET /t
--- error_code: 200
--- timeout: 120
--- check
my $p = uniq('p');
set_stock($p, 100000);
my $rate = $main::RATE;
my $interval = 1e6 / $rate;    # us between turns
my $t0 = time;
my $start = redis_now();
my @procs = map { spawn(\&main::clients, $_, $p) } 1 .. $main::PROCS;
# the retriers come once half the crowd has its places: the line is then
# seconds long (places are booked far faster than admitted)
ok(wait_until(60, sub { (line_of($p)->{n} // 0) >= $main::PROCS * $main::EACH / 2 }),
   "$main::name - half the crowd is in line");
my @retry = map { spawn(\&main::retrier, $p, $_, 20) } qw(same fresh);
my @lines = collect(@procs, @retry);
my $elapsed = time - $t0;
my $line = line_of($p);
# turn k is admitted at $admit->(k), by Redis's clock
my $admit = sub { $line->{t} + ($_[0] + 1 - $line->{h}) * $interval };

my (@clients, %retries);
for (@lines) {
    my @f = split ' ';
    if ($f[0] eq 'retry') {
        push @{ $retries{$f[1]} }, { status => $f[2], turn => $f[3],
                                     position => $f[4], before => $f[5] };
    } else {
        push @clients, { proc => $f[0], i => $f[1], key => $f[2],
                         first => $f[3], turn => $f[4], final => $f[5],
                         again => $f[6], early => $f[7] };
    }
}
my $n = @clients;
is($n, $main::PROCS * $main::EACH, "$main::name - every buyer reported");
my @queued = grep { $_->{turn} ne '-' } @clients;
my @passed = grep { $_->{turn} eq '-' } @clients;
ok(@queued >= $n - 20, "$main::name - the crowd was queued: " . scalar(@queued) . " places");
is(scalar(grep { $_->{first} != 200 } @passed), 0, "$main::name - the others passed at once");
# a free turn is only there while the line is empty: nobody passed at
# once after a place was given in the same process
my $late_pass = 0;
for my $proc (1 .. $main::PROCS) {
    my $placed;
    for my $c (sort { $a->{i} <=> $b->{i} } grep { $_->{proc} == $proc } @clients) {
        $late_pass++ if $placed && $c->{turn} eq '-';
        $placed ||= $c->{turn} ne '-';
    }
}
is($late_pass, 0, "$main::name - passing at once only before the line formed");
is(scalar(grep { $_->{final} != 200 } @clients), 0, "$main::name - everyone bought in the end");
is($line->{st} // '', '', "$main::name - the line was never paused or closed");
# the head's schedule is the threshold's from the crowd's start: nothing
# was admitted before it came, at most one turn at once (a GCRA's
# capacity saved up, burst 0), then one per interval
my ($kmin) = sort { $a <=> $b } map { $_->{turn} } @queued;
ok($admit->($kmin) >= $start + $kmin * $interval - 1,
   "$main::name - the first place's turn (turn $kmin) came no sooner than the threshold allows after the crowd's start");

# the orders as the shop got them: the messages on Kafka, each with the
# time its producer (the gate) made it, in the order of the topic (one
# partition).  Not the gate's own bookkeeping in Redis.
my %by_key = map { $_->{key} => $_ } @clients;
my @msgs = grep { $_->{key} eq $p } kafka_consume($ENV{TEST_NGINX_TOPIC}, timeout => 30);
my %seen;
for my $m (@msgs) {
    my $o = json_decode($m->{payload});
    my $c = $by_key{ $o->{idempotencyKey} // '' } or next;
    $seen{ $c->{key} }++;
    @$c{qw(ts offset)} = ($m->{ts}, $m->{offset});
}
is(scalar(grep { ($seen{ $_->{key} } // 0) != 1 } @clients), 0,
   "$main::name - every buyer's order is on Kafka, once");
my $out_of_order = 0;

# 1. the line is in arrival order: a process's later arrival never got
#    an earlier turn than its earlier one, and no two buyers one turn
my %turns;
for my $proc (1 .. $main::PROCS) {
    my @mine = sort { $a->{i} <=> $b->{i} }
               grep { $_->{proc} == $proc && $_->{turn} ne '-' } @clients;
    for my $k (1 .. $#mine) {
        $out_of_order++ if $mine[$k]{turn} <= $mine[$k - 1]{turn};
    }
}
$turns{ $_->{turn} }++ for @queued;
is(scalar(grep { $_ > 1 } values %turns), 0, "$main::name - one turn per place");

# 2. the shop got no order before its turn: each was produced at or
#    after its own turn's admission, so after the turn of everyone ahead
#    of it in line (the gate and Redis share the machine's clock; Kafka's
#    timestamp is in ms)
my ($early, $fast, $behind) = (0, 0, 0);
my $served = -1;
for my $c (sort { $a->{offset} <=> $b->{offset} } grep { defined $_->{offset} } @queued) {
    $early++ if $c->{ts} < int($admit->($c->{turn}) / 1000);
    # served after someone behind it in line: its client came late
    $behind++ if $c->{turn} < $served;
    $served = $c->{turn} if $c->{turn} > $served;
}
$out_of_order += $early;

# 3. never faster than the threshold: by any moment, the shop had no more
#    orders from the line than turns admitted by then (the j-th order in
#    time came no sooner than the j-th turn from the line's first)
my @t = sort { $a <=> $b } map { $_->{ts} // () } @queued;
for my $j (0 .. $#t) {
    $fast++ if $t[$j] < int($admit->($kmin + $j) / 1000);
}

# 4. retrying without a ticket while the line is long never gets ahead:
#    the same buyer gets the same place each time, a new buyer a place at
#    the end; 302 each time
my @same = @{ $retries{same} || [] };
my @fresh = @{ $retries{fresh} || [] };
my @jumped = grep { $_->{status} != 302 } @same, @fresh;
my %same_turns = map { $_->{turn} => 1 } @same;
my $ahead = grep { $_->{turn} ne '-' && $_->{turn} < $_->{before} } $same[0] // (), @fresh;
my ($again, $impatient) = (0, 0);
$again += $_->{again} for @queued;
$impatient += $_->{early} for @queued;
my $moved_up = grep { $same[$_]{position} > $same[$_ - 1]{position} } 1 .. $#same;

diag(sprintf "fairness: %d buyers at once, %d queued, %d admitted out of "
     . "order (%d on Kafka before their turn, %d served after someone behind"
     . " them whose client was quicker); %d faster than %d/s; %d + %d retries"
     . " without a ticket, %d got ahead; %d orders sent on a poll's"
     . " 'admitted' told 'not yet'; %d impatient orders told 'not yet';"
     . " %.1fs", $n, scalar(@queued), $out_of_order, $early, $behind,
     $fast, $rate, scalar(@same), scalar(@fresh), scalar(@jumped) + $ahead,
     $again, $impatient, $elapsed);
is($out_of_order, 0, "$main::name - nobody admitted out of order");
is($fast, 0, "$main::name - never faster than the threshold");
ok($impatient >= 1, "$main::name - impatient buyers sent orders before their turn ($impatient), told to wait");
for ([same => \@same], [fresh => \@fresh]) {
    my ($who, $r) = @$_;
    ok(@$r >= 1 && $r->[0]{position} >= $rate,
       "$main::name - the $who retrier tried while the line was long (" . scalar(@$r)
       . " tries, first placed " . ($r->[0]{position} // '-') . ")");
}
is(scalar(@jumped), 0, "$main::name - retrying without a ticket always queues");
is($ahead, 0, "$main::name - each place at the end of the line when first given");
is(scalar(keys %same_turns), 1, "$main::name - the same buyer: one place, the same turn each time");
is($moved_up, 0, "$main::name - the same buyer's position only comes down");
my @fresh_turns = map { $_->{turn} } @fresh;
is_deeply(\@fresh_turns, [sort { $a <=> $b } @fresh_turns], "$main::name - a new buyer each time: a new place each time, further back");
is(scalar(keys %{ { map { $_ => 1 } @fresh_turns } }), scalar(@fresh_turns), "$main::name - never the same turn twice");
