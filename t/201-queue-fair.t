# The waiting room is a fair line: a crowd of 200 clients arriving at once
# is queued in the order the gate took them, admitted in exactly that
# order at the product's threshold and never faster, and a client that
# keeps retrying without a ticket never gets ahead of the line.  What the
# shop got is read from Kafka (the orders' own timestamps and order in the
# topic), not from the gate's bookkeeping.  Printed: how many were admitted
# out of order (the goal is 0).
use strict;
use warnings;
use lib 't/lib';
use Test::Nginx::Socket::Lite;
use FluxGate::Test;
use HTTP::Tiny;
use POSIX ();
use Time::HiRes qw(time sleep);


our $HTTP = <<'EOF';
    fluxgate_redis 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    fluxgate_kafka_brokers $TEST_NGINX_KAFKA_BROKERS;
    fluxgate_kafka_topic $TEST_NGINX_TOPIC;
    fluxgate_kafka_option linger.ms 1;
    fluxgate_queue_secret $TEST_NGINX_QUEUE_SECRET;
EOF

our $CONFIG = <<'EOF';
    fluxgate_threshold $TEST_NGINX_QUEUE_RATE;
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

$ENV{TEST_NGINX_TOPIC} = uniq('t201');
kafka_create_topic($ENV{TEST_NGINX_TOPIC});
$ENV{TEST_NGINX_QUEUE_SECRET} = queue_secret();

# FG_QUEUE_CLIENTS=2000 FG_QUEUE_RATE=250 for a bigger crowd than the
# suite's (which stays a few seconds long)
our $RATE = $ENV{TEST_NGINX_QUEUE_RATE} = $ENV{FG_QUEUE_RATE} // 50;
our $PROCS = 10;
our $EACH = int(($ENV{FG_QUEUE_CLIENTS} // 200) / $PROCS);

# One client process: $EACH arrivals one after the other (all processes
# at once), then each of its tickets, in the order it got them, waits for
# its turn (GET /queue/status) and orders with it.  Prints one line per
# client: "<process> <arrival> <key> <first status> <seq or -> <final
# status> <its turn, us>".
sub clients {
    my ($proc, $p, $w) = @_;
    my $port = server_port();
    my $http = HTTP::Tiny->new(timeout => 10, max_redirect => 0);
    my $post = sub {
        my ($key, $ticket) = @_;
        return $http->request('POST', "http://127.0.0.1:$port/order", {
            headers => { 'Content-Type' => 'application/json',
                         'X-Idempotency-Key' => $key,
                         $ticket ? ('X-Queue-Ticket' => $ticket) : () },
            content => qq({"productId":"$p","userId":"u-$key"}) });
    };
    my @c;
    for my $i (1 .. $EACH) {
        my $key = "k$proc-$i-$$";
        my $res = $post->($key);
        my $t = $res->{status} == 302 ? json_decode($res->{content})->{ticket}
                                       : undef;
        push @c, { i => $i, key => $key, first => $res->{status},
                   ticket => $t, final => $res->{status} };
    }
    my $deadline = time + 30 + $PROCS * $EACH / $RATE;
    for my $c (grep { $_->{ticket} } @c) {
        while (time < $deadline) {
            my $res = $http->get("http://127.0.0.1:$port/queue/status"
                                 . "?productId=$p&ticket=$c->{ticket}");
            my $b = eval { json_decode($res->{content}) } || {};
            last if $b->{admitted};
            # close to its turn: look often; far from it: wait
            sleep($b->{etaSeconds} && $b->{etaSeconds} > 1 ? 0.5 : 0.01);
        }
        $c->{final} = $post->($c->{key}, $c->{ticket})->{status};
    }
    for my $c (@c) {
        my $seq = $c->{ticket} ? ticket_decode($c->{ticket})->{seq} : '-';
        my $admit = $c->{ticket} ? ticket_decode($c->{ticket})->{admit} : 0;
        print $w "$proc $c->{i} $c->{key} $c->{first} $seq $c->{final} $admit\n";
    }
}

# Someone who keeps sending fresh orders without a ticket while the line
# is long: "retry <key> <status> <seq> <position>" per try.  It stops when
# the line it was put in is under a second long (its end is near, and the
# next try may rightly pass), or after $tries tries.
sub retrier {
    my ($p, $w, $tries) = @_;
    my $port = server_port();
    my $http = HTTP::Tiny->new(timeout => 10, max_redirect => 0);
    for my $n (1 .. $tries) {
        my $key = "retry-$n-$$";
        my $res = $http->request('POST', "http://127.0.0.1:$port/order", {
            headers => { 'Content-Type' => 'application/json',
                         'X-Idempotency-Key' => $key },
            content => qq({"productId":"$p","userId":"u-$key"}) });
        my $b = eval { json_decode($res->{content}) } || {};
        my $seq = $b->{ticket} ? ticket_decode($b->{ticket})->{seq} : '-';
        print $w "retry $key $res->{status} $seq " . ($b->{position} // '-') . "\n";
        last if ($b->{position} // 0) < $RATE;
        sleep 0.1;
    }
}

sub spawn {
    my ($code) = @_;
    pipe(my $r, my $w) or die $!;
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        close $r;
        $code->($w);
        close $w;
        POSIX::_exit(0);
    }
    close $w;
    return [$pid, $r];
}

sub collect {
    my @lines;
    for my $c (@_) {
        push @lines, readline($c->[1]);
        waitpid $c->[0], 0;
    }
    chomp @lines;
    return @lines;
}

plan 'no_plan';
run_tests();

__DATA__

=== TEST 1: 200 clients at once, 50/s (by default): admitted in the order they were queued, never faster
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- request
GET /t
--- error_code: 200
--- timeout: 120
--- check
my $p = uniq('p');
set_stock($p, 100000);
my $t0 = time;
my @procs = map { my $i = $_; main::spawn(sub { main::clients($i, $p, shift) }) }
            1 .. $main::PROCS;
# the retrier comes once half the crowd has its places: the line is then
# seconds long (places are booked far faster than admitted)
ok(wait_until(60, sub { redis('GET', "fg:{$p}:q:seq") >= $main::PROCS * $main::EACH / 2 }),
   "$main::name - half the crowd is in line");
my $retry = main::spawn(sub { main::retrier($p, shift, 20) });
my @lines = main::collect(@procs, $retry);
my $elapsed = time - $t0;

my (@clients, @retries);
for (@lines) {
    my @f = split ' ';
    if ($f[0] eq 'retry') {
        push @retries, { key => $f[1], status => $f[2], seq => $f[3],
                         position => $f[4] };
    } else {
        push @clients, { proc => $f[0], i => $f[1], key => $f[2],
                         first => $f[3], seq => $f[4], final => $f[5],
                         admit => $f[6] };
    }
}
my $n = @clients;
is($n, $main::PROCS * $main::EACH, "$main::name - every client reported");
my @queued = grep { $_->{seq} ne '-' } @clients;
ok(@queued >= $n - 20, "$main::name - the crowd was queued: " . scalar(@queued) . " tickets");
is(scalar(grep { $_->{final} != 200 } @clients), 0, "$main::name - everyone bought in the end");

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
   "$main::name - every client's order is on Kafka, once");
my $out_of_order = 0;

# 1. the line is in arrival order: a client's later arrival never got an
#    earlier place than its earlier one
for my $proc (1 .. $main::PROCS) {
    my @mine = sort { $a->{i} <=> $b->{i} }
               grep { $_->{proc} == $proc && $_->{seq} ne '-' } @clients;
    for my $k (1 .. $#mine) {
        $out_of_order++ if $mine[$k]{seq} <= $mine[$k - 1]{seq};
    }
}

# 2. turns come in ticket order, one interval apart at least (never faster
#    than the threshold) ...
my @by_seq = sort { $a->{seq} <=> $b->{seq} } @queued;
my $interval = 1e6 / $main::RATE;
my ($early, $fast) = (0, 0);
for my $k (1 .. $#by_seq) {
    $out_of_order++ if $by_seq[$k]{admit} <= $by_seq[$k - 1]{admit};
    $fast++ if $by_seq[$k]{admit} - $by_seq[$k - 1]{admit} < $interval - 1;
}

# ... and the shop got no order before its turn: walking the topic in its
#    order, each order was produced at or after its own turn, so after the
#    turn of everyone ahead of it in line (the gate and Redis share the
#    machine's clock; Kafka's timestamp is in ms)
my $behind = 0;
my $served = -1;
for my $c (sort { $a->{offset} <=> $b->{offset} } grep { defined $_->{offset} } @queued) {
    $early++ if $c->{ts} < int($c->{admit} / 1000);
    # served after someone behind it in line: its client came late
    $behind++ if $c->{seq} < $served;
    $served = $c->{seq} if $c->{seq} > $served;
}
$out_of_order += $early;

# 3. what the shop saw: by any moment, no more orders than the threshold
#    allows since the first (lagging clients only make it fewer)
my @t = sort { $a <=> $b } map { $_->{ts} // () } @clients;
for my $k (1 .. $#t) {
    $fast++ if ($t[$k] - $t[0] + 1) * 1000 < ($k - 1) * $interval;
}

# 4. retrying without a ticket while the line is long never gets ahead
my @jumped = grep { $_->{status} != 302 } @retries;

diag(sprintf "fairness: %d clients at once, %d queued, %d admitted out of "
     . "order (%d on Kafka before their turn, %d served after someone behind"
     . " them whose client was quicker); %d faster than %d/s; %d retries"
     . " without a ticket, %d got ahead; %.1fs", $n, scalar(@queued),
     $out_of_order, $early, $behind, $fast, $main::RATE, scalar(@retries),
     scalar(@jumped), $elapsed);
is($out_of_order, 0, "$main::name - nobody admitted out of order");
is($fast, 0, "$main::name - never faster than the threshold");
ok(@retries >= 1 && $retries[0]{position} >= $main::RATE,
   "$main::name - the retrier tried while the line was long (" . scalar(@retries)
   . " tries, first placed " . ($retries[0]{position} // '-') . ")");
is(scalar(@jumped), 0, "$main::name - retrying without a ticket always queues");
