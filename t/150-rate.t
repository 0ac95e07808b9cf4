# fluxgate_threshold: a crowd on one product for about three seconds; the
# orders admitted never came faster than the configured rate allows (GCRA
# on Redis TIME, burst included: checked on the reservations' own Redis
# times, whatever the crowd's pace), an order that comes when Redis's clock
# says the bucket has room passes, the rest get 302 to the waiting room,
# and two nginx workers share the one limit.
use strict;
use warnings;
use lib 't/lib';
use Test::Nginx::Socket::Lite;
use FluxGate::Test;
use HTTP::Tiny;
use Time::HiRes qw(time sleep);


our $HTTP = <<'EOF';
    fluxgate_redis 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    fluxgate_kafka_brokers $TEST_NGINX_KAFKA_BROKERS;
    fluxgate_kafka_topic $TEST_NGINX_TOPIC;
    fluxgate_kafka_option linger.ms 1;
EOF

our $CONFIG = <<'EOF';
    location = /order {
        fluxgate_threshold 20 burst=5;
        fluxgate_waiting_room /waiting-room/;
        fluxgate_order;
    }
    location = /t {
        return 200 "ok\n";
    }
EOF

$ENV{TEST_NGINX_TOPIC} = uniq('t150');
kafka_create_topic($ENV{TEST_NGINX_TOPIC});

# $clients loops post for $seconds; returns (admitted, redirected, other)
sub crowd {
    my ($seconds, $clients) = @_;
    my $p = $ENV{TEST_NGINX_P};
    my $url = "http://127.0.0.1:" . server_port() . "/order";
    my @pipes;
    for my $c (1 .. $clients) {
        pipe(my $r, my $w) or die $!;
        my $pid = fork // die $!;
        if ($pid == 0) {
            close $r;
            my %n = (200 => 0, 302 => 0, other => 0);
            my $http = HTTP::Tiny->new(timeout => 5, max_redirect => 0);
            my $end = time + $seconds;
            my $i = 0;
            while (time < $end) {
                my $res = $http->request('POST', $url, {
                    headers => { 'Content-Type' => 'application/json',
                                 'X-Idempotency-Key' => "k$c-$i" },
                    content => qq({"productId":"$p","userId":"u$c-$i"}) });
                $i++;
                if ($res->{status} == 302) {
                    $n{302}++;
                    $n{bad_location}++
                        unless ($res->{headers}{location} // '') =~ m{/waiting-room/\?productId=\Q$p\E&retryAfter=\d+$};
                } elsif ($res->{status} == 200) {
                    $n{200}++;
                } else {
                    $n{other}++;
                }
            }
            print $w join(' ', map { "$_=$n{$_}" } sort keys %n), "\n";
            close $w;
            POSIX::_exit(0);
        }
        close $w;
        push @pipes, [$pid, $r];
    }
    my %total;
    for my $pp (@pipes) {
        my $line = readline($pp->[1]) // '';
        waitpid $pp->[0], 0;
        for (split ' ', $line) { my ($k, $v) = split /=/; $total{$k} += $v }
    }
    return \%total;
}

plan 'no_plan';
run_tests();

__DATA__

=== TEST 1: 3 s of a crowd at 20/s burst=5: admitted at the rate, never faster, never slower; the rest 302
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- init
$ENV{TEST_NGINX_P} = uniq('p');
set_stock("$ENV{TEST_NGINX_P}", 100000);
--- request
GET /t
--- error_code: 200
--- timeout: 20
--- check
require POSIX;
my $p = $ENV{TEST_NGINX_P};
my $t0 = time;
my $n = main::crowd(3, 4);
my $elapsed = time - $t0;
diag(sprintf "admitted %d, redirected %d, other %d in %.2fs (about %.0f at 20/s + 5)",
             $n->{200}, $n->{302}, $n->{other}, $elapsed, 20 * $elapsed + 6);
ok($n->{302} > $n->{200}, "$main::name - the crowd was over the rate");
is($n->{other}, 0, "$main::name - nothing but 200 and 302");
ok(!$n->{bad_location}, "$main::name - every 302 points at the waiting room");
is(redis('GET', "fg:{$p}:stock"), 100000 - $n->{200},
   "$main::name - exactly the admitted ones reserved");

# the admitted orders as Kafka has them, each reserved at the Redis time
# its idempotency key holds: never more since the first than the rate and
# the burst allow (however fast or slow the crowd was)
my @msgs = grep { $_->{key} eq $p } kafka_consume($ENV{TEST_NGINX_TOPIC}, timeout => 30);
is(scalar @msgs, $n->{200}, "$main::name - every 200 is on Kafka, nothing else");
my @t = sort { $a <=> $b } map {
    redis('HGET', "fg:{$p}:idem:" . json_decode($_->{payload})->{idempotencyKey}, 't')
} @msgs;
my @fast = grep { $_ + 1 > 5 + 1 + 20 * ($t[$_] - $t[0] + 1) / 1000 } 0 .. $#t;
is(scalar @fast, 0, "$main::name - never faster than 20/s and a burst of 5 since the first");

# and never slower: each time Redis's clock says the line has a free turn
# (its record fg:{p}:q: h turns admitted at time t, n handed out, 20/s),
# one more passes
my $order = sub { queue_order(server_port(), $p, uniq('k'))->{status} };
my $full = 0;
$full ||= $order->() == 302 for 1 .. 10;
ok($full, "$main::name - the bucket is full again");
for my $i (1 .. 3) {
    ok(wait_next_turn($p, 20, 5), "$main::name - room for one more by Redis's clock ($i)");
    is($order->(), 200, "$main::name - and it passes ($i)");
}
