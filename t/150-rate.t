# fluxgate_threshold: a crowd on one product for about three seconds; the
# number admitted matches the configured rate (GCRA on Redis TIME, burst
# included) within a tolerance, the rest get 302 to the waiting room, and
# two nginx workers share the one limit.
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

=== TEST 1: 3 s of a crowd at 20/s burst=5: about 3 * 20 + 5 admitted, the rest 302
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
my $t0 = time;
my $n = main::crowd(3, 4);
my $elapsed = time - $t0;
my $expect = 20 * $elapsed + 5 + 1;
diag(sprintf "admitted %d, redirected %d, other %d in %.2fs (expected about %.0f)",
             $n->{200}, $n->{302}, $n->{other}, $elapsed, $expect);
ok($n->{302} > $n->{200}, "$main::name - the crowd was over the rate");
ok(abs($n->{200} - $expect) <= $expect * 0.15 + 2,
   "$main::name - admitted $n->{200} within 15% of $expect");
is($n->{other}, 0, "$main::name - nothing but 200 and 302");
ok(!$n->{bad_location}, "$main::name - every 302 points at the waiting room");
is(redis('GET', "fg:{$ENV{TEST_NGINX_P}}:stock"), 100000 - $n->{200},
   "$main::name - exactly the admitted ones reserved");
