# build/fg-loadgen, the client of the benchmarks and the crowd tests, is
# honest about what it measures:
#  - open loop (-R): latency is timed from each request's due time, so a
#    gate stalled for 300 ms (Redis frozen with SIGSTOP) shows the stall in
#    every request that fell due during it, not only in the few that were
#    on the wire (no coordinated omission), and every due request is sent;
#  - --expect: an answer with another status fails the run (rc 3, a line
#    on stderr), and a run with only expected answers passes;
#  - --queue: a crowd that follows the waiting room (polls, comes back with
#    its ticket) buys the whole stock exactly once, polls counted apart;
#    against a server of our own it solves the challenge of a 302 (checked
#    here with Digest::SHA), resends the same order with X-Queue-Proof,
#    polls with the ticket in X-Queue-Ticket, and counts a ticket seen
#    admitted ahead of an earlier turn as out of order; against the gate
#    with fluxgate_queue_pow, every proof is taken and nobody is overtaken.
use strict;
use warnings;
use lib 't/lib';
use Test::Nginx::Socket::Lite;
use FluxGate::Test;
use Time::HiRes qw(time sleep);

our $HttpConfig = <<'EOF';
    fluxgate_redis 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    fluxgate_redis_timeout 5s;
    fluxgate_kafka_brokers $TEST_NGINX_KAFKA_BROKERS;
    fluxgate_kafka_topic orders;
    fluxgate_threshold 100000 burst=100000;
    fluxgate_waiting_room /waiting-room/;
    keepalive_requests 100000;
EOF

our $Redis = svc_pid('redis') or die "no redis pid";
our $frozen = 0;
END { kill 'CONT', $Redis if $frozen }

# A waiting room of our own for two shoppers, on one port: POST /order
# answers a challenge of 8 bits, then (with a good X-Queue-Proof) a place
# whose ticket names turn 1 or 2 in the order the proofs came; a poll of
# turn 2 is admitted at once, turn 1 only from its fourth poll on (after
# turn 2 was told it is in: out of order); an order with its ticket gets
# 200.  Returns what it saw, once both bought or the deadline passed.
sub fake_room {
    my ($srv, $deadline) = @_;
    require IO::Select;
    require Digest::SHA;
    my $sel = IO::Select->new($srv);
    my (%buf, %seen, @bad);
    my ($turns, $bought, %polls) = (0, 0);
    my $b64 = sub {
        (my $s = MIME::Base64::encode_base64(shift, '')) =~ tr{+/}{-_};
        $s =~ s/=+$//;
        $s;
    };
    require MIME::Base64;
    my $reply = sub {
        my ($c, $code, $body) = @_;
        syswrite($c, "HTTP/1.1 $code X\r\nContent-Type: application/json\r\n"
                     . 'Content-Length: ' . length($body) . "\r\n\r\n$body");
    };
    my $end = time + $deadline;
    while ($bought < 2 && time < $end) {
        for my $c ($sel->can_read(0.1)) {
            if ($c == $srv) {
                $sel->add($srv->accept);
                next;
            }
            my $n = sysread($c, $buf{$c}, 65536, length($buf{$c} // ''));
            if (!$n) {
                $sel->remove($c);
                close $c;
                next;
            }
            for (;;) {
                my $at = index($buf{$c}, "\r\n\r\n");
                last if $at < 0;
                my $head = substr($buf{$c}, 0, $at);
                my $len = $head =~ /Content-Length: (\d+)/i ? $1 : 0;
                last if length($buf{$c}) < $at + 4 + $len;
                my $body = substr($buf{$c}, $at + 4, $len);
                $buf{$c} = substr($buf{$c}, $at + 4 + $len);
                my %h = map { /^([^:]+):\s*(.*)$/ ? (lc $1 => $2) : () }
                        split /\r\n/, $head;
                my ($method, $target) = $head =~ /^(\S+) (\S+)/;
                if ($method eq 'GET') {
                    push @bad, "poll with the ticket in the query: $target"
                        if $target =~ /ticket=/;
                    my $t = $h{'x-queue-ticket'} // '';
                    push @bad, 'poll without X-Queue-Ticket' unless $t;
                    my ($turn) = MIME::Base64::decode_base64(
                        ($t =~ /^([^.]+)/)[0] =~ tr/-_/+\//r) =~ /^[^|]*\|[^|]*\|\d+\|q\|(\d+)\|/;
                    $polls{$turn // 'none'}++;
                    my $in = defined $turn && ($turn == 2 || $polls{1} >= 4);
                    $reply->($c, 200, $in ? '{"position":0,"admitted":true,"etaSeconds":0,"soldOut":false}'
                                          : '{"position":1,"admitted":false,"etaSeconds":1,"soldOut":false}');
                    next;
                }
                my $key = $h{'x-idempotency-key'};
                $seen{$key}{body} //= $body;
                push @bad, "key $key came back with another body"
                    if $seen{$key}{body} ne $body;
                if (my $t = $h{'x-queue-ticket'}) {
                    $bought++;
                    $reply->($c, 200, '{"status":"accepted","orderId":"o' . $bought . '"}');
                } elsif (my $proof = $h{'x-queue-proof'}) {
                    my ($chal, $nonce) = $proof =~ /^(.+)\.(\d+)$/;
                    my $md = Digest::SHA::sha256($proof);
                    my $ok = defined $chal && $chal eq $seen{$key}{challenge}
                             && unpack('B8', $md) eq '00000000';
                    push @bad, "a bad proof: $proof" unless $ok;
                    $seen{$key}{proof} = $proof;
                    my $turn = ++$turns;
                    my $ticket = $b64->("p|u|1|q|$turn|9999999999") . '.sig';
                    $reply->($c, 302, qq({"status":"queued","ticket":"$ticket","position":$turn,"retryAfter":1}));
                } else {
                    my $chal = $b64->("p|$key|9999999999|" . ('ab' x 16)) . '.mac';
                    $seen{$key}{challenge} = $chal;
                    $reply->($c, 302, qq({"status":"challenge","challenge":"$chal","bits":8}));
                }
            }
        }
    }
    return { bought => $bought, bad => \@bad, seen => \%seen, polls => \%polls };
}

plan 'no_plan';
run_tests();

__DATA__

=== TEST 1: open loop: a 300 ms stall shows in the p99 of 200 requests/s
--- init
$ENV{TEST_NGINX_PRODUCT} = uniq('lg-stall');
--- http_config eval: $::HttpConfig
--- config
    location = /order { fluxgate_order; }
    location = /init { fluxgate_stock_admin; }
--- request
POST /init
{"productId":"$TEST_NGINX_PRODUCT","quantity":0}
--- more_headers
Content-Type: application/json
--- error_code: 200
--- timeout: 30
--- check
my $p = $ENV{TEST_NGINX_PRODUCT};
my $calls = sub { my $c = redis_commandstats(); ($c->{evalsha} // 0) + ($c->{eval} // 0) };
my $c0 = $calls->();
# 20 connections: a hiccup of a loaded machine at the run's end leaves no
# due request unsent; the stall still holds far more requests than that
my $h = loadgen_start(port => server_port(), c => 20, rate => 200, d => 3,
                      product => $p, expect => '409');
# the stall falls inside the run: once Redis has answered the run's first
# 100 requests (a third of a second of it)
ok(wait_until(30, sub { $calls->() - $c0 >= 100 }), "$name - the run is under way");
eval {
    kill 'STOP', $main::Redis; $main::frozen = 1;
    sleep 0.3;
};
kill 'CONT', $main::Redis; $main::frozen = 0;
die $@ if $@;
my $r = loadgen_wait($h);
is($r->{rc}, 0, "$name - the run passed") or diag($r->{raw});
is($r->{mode}, 'open', "$name - open loop");
# every request due in the 3 s was sent and answered
ok($r->{responses} >= 598, "$name - 600 requests due, $r->{responses} answered");
is($r->{unsent}, 0, "$name - none left unsent");
# ~60 requests fell due while Redis was frozen (10% of the run), waiting
# 150 ms on average: with the latency timed from when they were written,
# only the 20 on the wire would have seen it and p99 would stay small
ok($r->{status}{409}{p99_ms} >= 100,
   "$name - the stall is in the p99 ($r->{status}{409}{p99_ms} ms)")
    or diag($r->{raw});
ok($r->{max_behind_ms} >= 100,
   "$name - the client knew it sent late ($r->{max_behind_ms} ms)");

=== TEST 2: --expect: a status outside the list fails the run loudly
--- init
$ENV{TEST_NGINX_PRODUCT} = uniq('lg-expect');
--- http_config eval: $::HttpConfig
--- config
    location = /order { fluxgate_order; }
    location = /init { fluxgate_stock_admin; }
--- request
POST /init
{"productId":"$TEST_NGINX_PRODUCT","quantity":0}
--- more_headers
Content-Type: application/json
--- error_code: 200
--- timeout: 30
--- check
my $p = $ENV{TEST_NGINX_PRODUCT};
my $r = loadgen(port => server_port(), c => 5, n => 50, product => $p,
                expect => '200,302');
is($r->{rc}, 3, "$name - rc 3");
is($r->{unexpected}, 50, "$name - 50 unexpected answers");
is($r->{status}{409}{count}, 50, "$name - counted per status too");
like($r->{raw}, qr/FAILED: 0 errors, 50 answers not in --expect 200,302/,
     "$name - said so");
$r = loadgen(port => server_port(), c => 5, n => 50, product => $p,
             expect => '200,409');
is($r->{rc}, 0, "$name - only expected answers: rc 0") or diag($r->{raw});
is($r->{unexpected}, 0, "$name - nothing unexpected");
is($r->{mode}, 'closed', "$name - closed loop without -R");
# a port nobody listens on: every request an error
my $dead = do {
    require IO::Socket::INET;
    my $s = IO::Socket::INET->new(Listen => 1, LocalAddr => '127.0.0.1',
                                  LocalPort => 0);
    my $port = $s->sockport;
    close $s;
    $port;
};
$r = loadgen(port => $dead, c => 2, n => 10, d => 2, product => $p);
isnt($r->{rc}, 0, "$name - nobody listening: the run fails ($r->{rc})");

=== TEST 3: --queue: a crowd that follows the waiting room buys the whole stock, and nothing more
--- init
$ENV{TEST_NGINX_PRODUCT} = uniq('lg-queue');
$ENV{TEST_NGINX_QUEUE_SECRET} = queue_secret();
--- http_config
    fluxgate_redis 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    fluxgate_redis_timeout 5s;
    fluxgate_kafka_brokers $TEST_NGINX_KAFKA_BROKERS;
    fluxgate_kafka_topic orders;
    fluxgate_queue_secret $TEST_NGINX_QUEUE_SECRET;
    fluxgate_threshold 100 burst=20;
    fluxgate_waiting_room /waiting-room/;
    keepalive_requests 100000;
--- config
    location = /order { fluxgate_order; }
    location = /init { fluxgate_stock_admin; }
    location = /queue/status { fluxgate_queue_status; }
--- request
POST /init
{"productId":"$TEST_NGINX_PRODUCT","quantity":150}
--- more_headers
Content-Type: application/json
--- error_code: 200
--- timeout: 60
--- check
my $p = $ENV{TEST_NGINX_PRODUCT};
# 100 shoppers at 100 admissions/s after a burst of 20: 150 units take
# about 1.3 s of admissions plus the shoppers' polling
my $r = loadgen(port => server_port(), c => 100, d => 5, product => $p,
                expect => '200,302,409', queue => '/queue/status', log => 1);
is($r->{rc}, 0, "$name - the run passed") or diag($r->{raw});
my $q = $r->{queue} || {};
ok(($q->{queued} // 0) > 0, "$name - shoppers were queued ($q->{queued})")
    or diag($r->{raw});
ok(($q->{admitted} // 0) > 0, "$name - and admitted ($q->{admitted})");
ok(($q->{polls} // 0) >= $q->{queued}, "$name - each queued shopper polled");
is($r->{status}{200}{count}, 150, "$name - the whole stock sold, once");
my %ids;
$ids{$_->[1]}++ for grep { $_->[0] == 200 } @{ $r->{log} };
is(scalar(grep { $ids{$_} > 1 } keys %ids), 0, "$name - no orderId twice");

# what the shop got: once the worker drained, the product's rows are the
# 150 orders answered 200
ok(drained(), "$name - the worker drained the topic");
my @rows = psql("select id, idempotency_key from orders where product_id = '$p'"
                . " and status = 'accepted'");
is_deeply([sort map { (split /\|/)[0] } @rows], [sort keys %ids],
          "$name - PostgreSQL holds exactly the 150 orders answered 200");
# and never faster than the threshold: the line is jumped when more orders
# are reserved since the first than 100/s and the burst of 20 allow.  Each
# order's key holds the Redis time it was reserved at (ms), the clock the
# threshold is kept on; a ticket only makes an order later than its turn,
# never earlier
my @t = sort { $a <=> $b }
        redis_each(map { ['HGET', "fg:{$p}:idem:" . (split /\|/)[1], 't'] } @rows);
my @fast = grep { $_ + 1 > 20 + 1 + 100 * ($t[$_] - $t[0] + 1) / 1000 } 0 .. $#t;
is(scalar @fast, 0, "$name - no order reserved sooner than 100/s and the burst allow")
    or diag("the first too soon: order " . ($fast[0] + 1) . " at +"
            . ($t[$fast[0]] - $t[0]) . " ms");
# no poll is logged or counted as an answer to an order
is(scalar(grep { $_->[0] == 200 && $_->[1] eq '-' } @{ $r->{log} }), 0,
   "$name - polls are not answers");
ok($r->{status}{409}{count} > 0, "$name - then the crowd is told sold_out");

=== TEST 4: an answer is timed to its arrival: a client that reads it 300 ms late says so and does not charge the server
--- config
    location = /t { return 200; }
--- request
GET /t
--- error_code: 200
--- timeout: 30
--- check
# a server of our own, so the answer is written while the client is
# stopped (SIGSTOP, as a client starved of a core would be)
require IO::Socket::INET;
my $srv = IO::Socket::INET->new(Listen => 1, LocalAddr => '127.0.0.1',
                                LocalPort => 0, ReuseAddr => 1)
    or die "listen: $!";
my $h = loadgen_start(port => $srv->sockport, c => 1, n => 1, rate => 10,
                      d => 2, product => 'lg-arrival', expect => '409');
my $c = $srv->accept or die "accept: $!";
my $req = '';
until ($req =~ /\r\n\r\n/ && length($req) >= length($`) + 4
                              + ($req =~ /Content-Length: (\d+)/i ? $1 : 0)) {
    sysread($c, $req, 4096, length $req) or die "read: $!";
}
kill 'STOP', $h->{pid};
my $body = '{"status":"sold_out"}';
syswrite($c, "HTTP/1.1 409 Conflict\r\nContent-Type: application/json\r\n"
             . "Content-Length: " . length($body) . "\r\n\r\n$body");
my $written = time;
# the client stays stopped 300 ms with the answer in its socket
sleep 0.3;
kill 'CONT', $h->{pid};
my $r = loadgen_wait($h);
is($r->{rc}, 0, "$name - the run passed") or diag($r->{raw});
is($r->{sched}, 'fifo', "$name - open loop runs SCHED_FIFO (as root)");
is($r->{stamped}, 1, "$name - the answer carried the kernel's receive time");
ok($r->{client_lag_max_ms} >= 250,
   "$name - the client read it late and says so ($r->{client_lag_max_ms} ms)")
    or diag($r->{raw});
# its one request was due when the run started; the answer was written
# $to_write ms later, then waited 300 ms to be read: timed to its reading
# the latency would hold those 300 ms, timed to its arrival it does not
my $to_write = $written * 1000 - $r->{started_at_ms};
ok($r->{status}{409}{max_ms} < $to_write + 150,
   sprintf("$name - the latency ends when it arrived (%s ms; the answer was"
           . " written %.0f ms after the request was due)",
           $r->{status}{409}{max_ms}, $to_write))
    or diag($r->{raw});

=== TEST 5: --queue against a waiting room of our own: the challenge solved, the same order resent with its proof, polls with X-Queue-Ticket, an overtaken ticket counted out of order
--- config
    location = /t { return 200; }
--- request
GET /t
--- error_code: 200
--- timeout: 60
--- check
require IO::Socket::INET;
my $srv = IO::Socket::INET->new(Listen => 8, LocalAddr => '127.0.0.1',
                                LocalPort => 0, ReuseAddr => 1)
    or die "listen: $!";
my $h = loadgen_start(port => $srv->sockport, c => 2, once => 1, d => 30,
                      product => 'p', queue => '/queue/status',
                      poll_min => 0.1, track => 1);
my $seen = main::fake_room($srv, 40);
my $r = loadgen_wait($h);
is($r->{rc}, 0, "$name - the run passed") or diag($r->{raw});
is_deeply($seen->{bad}, [], "$name - every proof good, every poll by header, one body per key");
is($seen->{bought}, 2, "$name - both bought with their tickets");
is(scalar(grep { $_->{proof} } values %{ $seen->{seen} }), 2,
   "$name - each order was resent with its proof");
my $q = $r->{queue} || {};
is($q->{challenged}, 2, "$name - two challenges") or diag($r->{raw});
is($q->{proofs}, 2, "$name - two proofs");
is($q->{done}, 2, "$name - both shoppers done");
is($q->{turns_known}, 2, "$name - both turns read from the tickets");
is($q->{out_of_order}, 1, "$name - turn 1 was overtaken by turn 2, and that is counted");
is(scalar @{ $r->{track} || [] }, 2, "$name - a track line per shopper");
ok((grep { $_->[8] > 0 } @{ $r->{track} }) == 2, "$name - hashes counted");

=== TEST 6: --queue against fluxgate_queue_pow 12: every challenge is solved and taken, everyone buys once, nobody is overtaken
--- init
$ENV{TEST_NGINX_PRODUCT} = uniq('lg-pow');
$ENV{TEST_NGINX_QUEUE_SECRET} = queue_secret();
--- http_config
    fluxgate_redis 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    fluxgate_redis_timeout 5s;
    fluxgate_kafka_brokers $TEST_NGINX_KAFKA_BROKERS;
    fluxgate_kafka_topic orders;
    fluxgate_queue_secret $TEST_NGINX_QUEUE_SECRET;
    fluxgate_queue_pow 12;
    fluxgate_threshold 40 burst=0;
    fluxgate_waiting_room /waiting-room/;
    keepalive_requests 100000;
    log_format q '$request_method $uri "$args" "$http_x_queue_ticket" "$http_x_queue_proof" $status $fluxgate_outcome';
--- config
    access_log $TEST_NGINX_SERVROOT/logs/queue.log q;
    location = /order { fluxgate_order; }
    location = /init { fluxgate_stock_admin; }
    location = /queue/status { fluxgate_queue_status; }
--- request
POST /init
{"productId":"$TEST_NGINX_PRODUCT","quantity":1000}
--- more_headers
Content-Type: application/json
--- error_code: 200
--- timeout: 90
--- check
my $p = $ENV{TEST_NGINX_PRODUCT};
my $log = servroot() . '/logs/queue.log';
truncate $log, 0;
my $r = loadgen(port => server_port(), c => 60, once => 1, d => 60,
                product => $p, expect => '200,302', queue => '/queue/status',
                track => 1);
is($r->{rc}, 0, "$name - the run passed") or diag($r->{raw});
my $q = $r->{queue} || {};
is($q->{done}, 60, "$name - all 60 shoppers done") or diag($r->{raw});
is($r->{status}{200}{count}, 60, "$name - each bought once");
ok($q->{challenged} >= 1, "$name - challenged ($q->{challenged})");
is($q->{proofs}, $q->{challenged}, "$name - every challenge solved");
is(scalar(grep { $_->[7] > 1 } @{ $r->{track} || [] }), 0,
   "$name - nobody challenged twice: every proof was taken");
is($q->{out_of_order}, 0, "$name - nobody overtaken");
is($q->{turns_known}, $q->{queued}, "$name - every place's turn known");
my @lines = do { open my $fh, '<', $log or die "$log: $!"; <$fh> };
my @polls = grep { /^GET \/queue\/status / } @lines;
ok(@polls >= $q->{queued}, "$name - polls logged") or diag(scalar @polls);
is(scalar(grep { !/^GET \S+ "productId=[^"&]+" "[^"-][^"]*" "-" 200 / } @polls), 0,
   "$name - every poll carried X-Queue-Ticket, not a query parameter, and got 200")
    or diag(join '', grep { !/^GET \S+ "productId=[^"&]+" "[^"-][^"]*" "-" 200 / } @polls);
my @proved = grep { /^POST \S+ "-" "-" "[^"-][^"]*" / } @lines;
is(scalar @proved, $q->{proofs}, "$name - one order with X-Queue-Proof per proof");
is(scalar(grep { !/ 302 redirected$/ && !/ 200 accepted$/ } @proved), 0,
   "$name - each of them queued (or passed), none challenged again");
my @with = grep { /^POST \S+ "-" "[^"-][^"]*" "-" / } @lines;
is(scalar(grep { / 200 accepted$/ } @with), $q->{queued},
   "$name - each place bought with its ticket");
