# `nginx -s reload` while a stream of orders flows: no order that got a 200
# is lost (each is on Kafka), none is reserved twice or left reserved
# without an answer (Redis stock = initial - number of 200s = number of
# messages), and the stream keeps being served.
use strict;
use warnings;
use lib 't/lib';
use Test::Nginx::Socket::Lite;
use FluxGate::Test;
use HTTP::Tiny;
use Time::HiRes qw(time sleep);
use POSIX ();


our $HTTP = <<'EOF';
    fluxgate_redis 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    fluxgate_kafka_brokers $TEST_NGINX_KAFKA_BROKERS;
    fluxgate_kafka_topic $TEST_NGINX_TOPIC;
    # a slower ack makes more orders in flight at each reload
    fluxgate_kafka_option linger.ms 50;
EOF

our $CONFIG = <<'EOF';
    location = /order {
        fluxgate_order;
    }
EOF

$ENV{TEST_NGINX_TOPIC} = uniq('t180');
kafka_create_topic($ENV{TEST_NGINX_TOPIC});

our $Nginx = $ENV{FG_NGINX} || '/usr/sbin/nginx';

# $clients loops of orders until the file $stop exists; returns a sub that
# stops them and collects {other => n, ids => [...]}
sub stream {
    my ($stop, $clients) = @_;
    my $p = $ENV{TEST_NGINX_P};
    my $url = "http://127.0.0.1:" . server_port() . "/order";
    unlink $stop;
    my @kids;
    for my $c (1 .. $clients) {
        pipe(my $r, my $w) or die $!;
        my $pid = fork // die $!;
        if ($pid == 0) {
            close $r;
            my $http = HTTP::Tiny->new(timeout => 10, keep_alive => 0);
            my ($i, $other, @ids) = (0, 0);
            until (-e $stop) {
                my $res = $http->request('POST', $url, {
                    headers => { 'Content-Type' => 'application/json',
                                 'X-Idempotency-Key' => "r$c-$i" },
                    content => qq({"productId":"$p","userId":"u$c"}) });
                $i++;
                if ($res->{status} == 200 && $res->{content} =~ /"orderId":"([^"]+)"/) {
                    push @ids, $1;
                } else {
                    $other++;
                }
            }
            print $w "other=$other ids=@ids\n";
            close $w;
            POSIX::_exit(0);
        }
        close $w;
        push @kids, [$pid, $r];
    }
    return sub {
        open my $fh, '>', $stop or die "$stop: $!";
        close $fh;
        my (%n, @ids);
        for my $k (@kids) {
            my $line = readline($k->[1]) // '';
            waitpid $k->[0], 0;
            $n{other} += $1 if $line =~ /other=(\d+)/;
            push @ids, split ' ', $1 if $line =~ /ids=(.*)$/;
        }
        $n{ids} = \@ids;
        return \%n;
    };
}

plan 'no_plan';
run_tests();

__DATA__

=== TEST 1: three reloads under a stream of orders lose nothing
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- init
$ENV{TEST_NGINX_P} = uniq('p');
set_stock("$ENV{TEST_NGINX_P}", 100000);
--- request
POST /order
{"productId":"$TEST_NGINX_P","userId":"first"}
--- more_headers
Content-Type: application/json
X-Idempotency-Key: first
--- error_code: 200
--- timeout: 60
--- check
my $p = $ENV{TEST_NGINX_P};
my $from = -s servroot() . "/logs/error.log";
my $done = main::stream(servroot() . "/stream.stop", 4);
# each reload lands on a stream that is being served, and the stream is
# served again after it: 20 more orders reserved each time (Redis says so)
my $sold = sub { 100000 - redis('GET', "fg:{$p}:stock") };
for my $i (1 .. 3) {
    my $at = $sold->();
    ok(wait_until(30, sub { $sold->() >= $at + 20 }),
       "$main::name - orders served before reload $i");
    ok(reload_nginx(), "$main::name - reload $i: the new workers serve, the old ones left");
}
my $at = $sold->();
ok(wait_until(30, sub { $sold->() >= $at + 20 }),
   "$main::name - orders served after the last reload");
my $n = $done->();
my @ids = ($main::responses->[0]{body} =~ /"orderId":"([^"]+)"/, @{ $n->{ids} });
diag(sprintf "%d orders got 200, %d got something else", scalar @ids, $n->{other});
is($n->{other}, 0, "$main::name - every order got a 200");
my %on_kafka;
wait_until(20, sub {
    %on_kafka = map { (json_decode($_->{payload})->{orderId} => 1) }
                grep { $_->{key} eq $p } kafka_consume($ENV{TEST_NGINX_TOPIC}, timeout => 15);
    keys %on_kafka >= @ids;
});
my @lost = grep { !$on_kafka{$_} } @ids;
is(scalar @lost, 0, "$main::name - every 200 is on Kafka") or diag("lost: @lost[0..4]");
is(scalar keys %on_kafka, scalar @ids, "$main::name - and nothing else");
is(redis('GET', "fg:{$p}:stock"), 100000 - @ids, "$main::name - stock = initial - 200s");
my $pending = redis('EVAL', q{local n = 0
    for _, k in ipairs(redis.call('KEYS', ARGV[1])) do
        if redis.call('HGET', k, 's') ~= '200' then n = n + 1 end
    end
    return n}, 0, "fg:{$p}:idem:*");
is($pending, 0, "$main::name - every key marked done, none left pending");
my $log = error_log_since($from);
my $reloads = () = $log =~ /: reconfiguring$/mg;
is($reloads, 3, "$main::name - nginx reloaded three times");
# a worker that crashed ("exited on signal") is an [alert]: the runner
# fails the block on any
