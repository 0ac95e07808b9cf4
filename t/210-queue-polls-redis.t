# The waiting room's polls and Redis (DESIGN.md v3, "Polls without
# Redis"): /queue/status answers from the gate's shared memory, where each
# gate keeps the product's head of line, asked again from Redis at most
# every refresh interval (100 ms).  On a Redis of the test's own, so that
# every command it runs is the gate's (INFO commandstats before and
# after):
#   1. a flood of polls, once the head is known, makes Redis run nothing
#      but that refresh: at most one queue_head.lua per refresh interval
#      per worker process over the flood's duration (with one and with two
#      processes), the commands inside those scripts, and the health asks
#      (PING and ROLE on each connection each second); a fixed number of
#      polls, however long they take, against a bound made of the elapsed
#      time and the refresh interval;
#      Then 3 s of polls by the clock, with buyers waiting: three commands
#      inside each refresh, the statistics (no-shows, oldest wait) at most
#      once a second;
#   2. a product that sells out is reported by /queue/status within the
#      refresh interval (plus the refresh's own round trip, bounded by
#      fluxgate_redis_timeout, and one poll);
#   3. a zone's bound: a small zone evicts the least recently polled
#      product, never fails a poll, and asks an evicted product again;
#   4. two secrets in one gate: each ticket is good where its secret is.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use File::Temp qw(tempdir);
use Time::HiRes qw(time);
use FluxGate::Test;
use FluxGate::Fleet;
use FluxGate::Queue qw(ticket_decode ticket_sign secret_of);

my $Refresh = 0.1;        # the zone's default refresh
my $Timeout = 0.2;        # fluxgate_redis_timeout below
my $Polls = 20_000;

my $dir = tempdir(CLEANUP => 1);
chmod 0755, $dir;
my ($rport) = free_ports(1);
system('redis-server', '--port', $rport, '--bind', '127.0.0.1', '--save', '',
       '--appendonly', 'no', '--daemonize', 'yes', '--dir', $dir,
       '--pidfile', "$dir/redis.pid", '--logfile', "$dir/redis.log") == 0
    or BAIL_OUT('redis-server');
wait_until(10, sub { `redis-cli -p $rport ping 2>&1` =~ /PONG/ }) or BAIL_OUT('redis');
END { system("redis-cli -p $rport shutdown nosave >/dev/null 2>&1") if $rport }

sub private {
    my $q = join ' ', map { (my $s = $_) =~ s/'/'\\''/g; "'$s'" } @_;
    my $out = `redis-cli -p $rport --raw $q 2>&1`;
    chomp $out;
    return wantarray ? split(/\n/, $out) : $out;
}

# calls per command since the server started
sub calls {
    my %c;
    for (private('INFO', 'commandstats')) {
        $c{$1} = $2 if /^cmdstat_([^:]+):calls=(\d+)/;
    }
    return \%c;
}

# the gate's connections to our Redis (not redis-cli's)
sub gate_connections {
    return scalar grep { !/cmd=client/ } private('CLIENT', 'LIST');
}

my $topic = uniq('t208');
kafka_create_topic($topic);
my $secret = queue_secret();

my $other = queue_secret('other');

sub gate {
    my ($workers) = @_;
    return gate_start(
        workers => $workers, redis => "127.0.0.1:$rport", topic => $topic,
        extra => "fluxgate_queue_secret $secret;\n"
               . "    fluxgate_threshold 1 burst=0;\n"
               . "    fluxgate_redis_timeout 200ms;\n",
        server => "location = /queue/status { fluxgate_queue_status; }\n"
                . "        location = /other/status { fluxgate_queue_secret $other; "
                . "fluxgate_queue_status; }\n"
                . "        location = /vip { fluxgate_threshold off; fluxgate_order; }\n");
}

sub order {
    my ($g, $p, $path) = @_;
    my $key = uniq('k');
    return http_post(gate_url($g) . ($path // '/order'),
                     json_encode({ productId => $p, userId => "u-$key" }),
                     { 'X-Idempotency-Key' => $key });
}

# a ticket in the product's line: the first order takes the free turn,
# the next one waits
sub ticket {
    my ($g, $p) = @_;
    is(order($g, $p)->{status}, 200, "$p: the first order passes");
    my $res = order($g, $p);
    is($res->{status}, 302, "$p: the next one gets a place") or diag($res->{content});
    return json_decode($res->{content})->{ticket};
}

sub poll {
    my ($g, $p, $t, $path) = @_;
    my $res = http_request_get(gate_url($g) . ($path // '/queue/status') . "?productId=$p", $t);
    return ($res->{status}, eval { json_decode($res->{content}) } || {});
}

my $Http;
sub http_request_get {
    my ($url, $ticket) = @_;
    require HTTP::Tiny;
    $Http //= HTTP::Tiny->new(timeout => 10, keep_alive => 1);
    return $Http->get($url, { headers => { 'X-Queue-Ticket' => $ticket } });
}

for my $workers (1, 2) {
    my $g = gate($workers);
    my $p = uniq('p');
    set_stock($p, 100, via => \&private);
    my $t = ticket($g, $p);
    my $file = "$dir/ticket-$workers";
    open my $fh, '>', $file or die;
    print $fh "$t\n";
    close $fh;

    # the head known to the gate, then the flood
    my ($st) = poll($g, $p, $t);
    is($st, 200, "$workers process(es): the first poll answers");
    my $conns = gate_connections();
    my $before = calls();
    my $t0 = time;
    my $r = loadgen(port => $g->{port}, c => 20, n => $Polls, path => '/queue/status',
                    product => $p, poll_file => $file, expect => '200');
    my $elapsed = time - $t0;
    my $after = calls();
    my %d = map { $_ => ($after->{$_} // 0) - ($before->{$_} // 0) } keys %$after;
    $d{info}--;     # ours, after
    is($r->{rc}, 0, "$workers process(es): $Polls polls, all 200") or diag($r->{raw});
    is($r->{status}{200}{count}, $Polls, "$workers process(es): each answered");

    my $allowed = $workers * (int($elapsed / $Refresh) + 1);
    my $scripts = $d{evalsha} // 0;
    cmp_ok($scripts, '<=', $allowed,
           sprintf('%d process(es): %d queue_head.lua in %.2f s of polls, at most one '
                   . 'per %.1f s per process: %d', $workers, $scripts, $elapsed, $Refresh,
                   $allowed));
    # the health asks go by the clock, on each of the gate's connections
    my $asks = ($d{ping} // 0) + ($d{role} // 0);
    cmp_ok($asks, '<=', 2 * $conns * (int($elapsed) + 2),
           "$workers process(es): health asks by the clock ($asks on $conns connections)");
    # everything else ran inside those scripts: a refresh for the head
    # runs TIME, GET and HMGET; at most once a second (the zone keeps when, for all processes) one
    # also counts the no-shows and reads the oldest wait (BITCOUNT, HSET,
    # and a ZRANGE or two ZRANGEBYSCOREs: four more at most; the product
    # has a stock, so no EXISTS of its generation)
    my $inner = 0;
    $inner += $d{$_} for grep { !/^(evalsha|ping|role|info)$/ } keys %d;
    my $full = int($elapsed) + 2;
    cmp_ok($inner, '<=', 3 * $scripts + 4 * $full,
           "$workers process(es): nothing else: $inner commands inside $scripts scripts, "
           . "three each and four more in at most $full with the statistics")
        or diag(explain \%d);
    cmp_ok(($d{eval} // 0) + ($d{'script|load'} // 0), '==', 0,
           "$workers process(es): no EVAL, no SCRIPT LOAD during the flood");

    # polls for 3 s by the clock, with ten buyers waiting all along (at
    # 1/s): some 30 refreshes, of which at most 5 count the statistics
    # (read the oldest wait: a ZREVRANGEBYSCORE, and a ZRANGEBYSCORE when
    # no booking time was sampled before the head); the rest cost Redis
    # three commands inside the script
    for my $i (1 .. 10) {
        my $res = order($g, $p);
        die "a place: $res->{status} $res->{content}\n" unless $res->{status} == 302;
    }
    $before = calls();
    $t0 = time;
    my $n = 0;
    while (time - $t0 < 3) {
        my ($s) = poll($g, $p, $t);
        $n++ if $s == 200;
    }
    $elapsed = time - $t0;
    $after = calls();
    %d = map { $_ => ($after->{$_} // 0) - ($before->{$_} // 0) } keys %$after;
    $d{info}--;
    $scripts = $d{evalsha} // 0;
    $inner = 0;
    $inner += $d{$_} for grep { !/^(evalsha|ping|role|info)$/ } keys %d;
    $full = int($elapsed) + 2;
    cmp_ok($scripts, '>=', 10, "$workers process(es): $n polls in 3 s refreshed the head $scripts times");
    cmp_ok($inner, '<=', 3 * $scripts + 4 * $full,
           "$workers process(es): $inner commands inside them, three each and four more in at "
           . "most $full with the statistics")
        or diag(explain \%d);
    my $stats = 0;
    $stats += $d{$_} // 0 for qw(zrange zrangebyscore zrevrangebyscore bitcount);
    cmp_ok($stats, '<=', 2 * $full,
           "$workers process(es): the statistics read at most once a second: $stats commands "
           . "in $scripts refreshes") or diag(explain \%d);
    gate_stop($g);
}

# 2. sold out, reported within the refresh interval
{
    my $g = gate(2);
    my $p = uniq('p');
    set_stock($p, 2, via => \&private);
    my $t = ticket($g, $p);
    my ($st, $b) = poll($g, $p, $t);
    ok($st == 200 && !$b->{soldOut}, 'in line, not sold out') or diag(explain $b);
    # the last unit, bought past the line while the ticket's holder polls
    # (the sale's 200 waits for Kafka; the stock is 0 once its order.lua
    # ran, some time after $sold)
    my $sold = time;
    my $h = loadgen_start(port => $g->{port}, c => 1, n => 1, once => 1, path => '/vip',
                          product => $p, expect => '200');
    my ($seen, $slowest) = (undef, 0);
    wait_until(10, sub {
        my $at = time;
        my ($s, $body) = poll($g, $p, $t);
        $slowest = time - $at if time - $at > $slowest;
        $seen = time if $s == 200 && $body->{soldOut};
        return $seen;
    });
    my $r = loadgen_wait($h);
    is($r->{status}{200}{count}, 1, 'the last unit sold') or diag($r->{raw});
    is(private('GET', "fg:{$p}:stock"), 0, 'the stock is 0');
    ok($seen, 'the poll says soldOut');
    my $took = ($seen // time) - $sold;
    cmp_ok($took, '<=', $Refresh + $Timeout + 2 * $slowest,
           sprintf('within the refresh interval (%.0f ms), its round trip (at most %.0f ms) '
                   . 'and a poll (%.0f ms): %.0f ms after the sale', 1000 * $Refresh,
                   1000 * $Timeout, 1000 * $slowest, 1000 * $took));
    gate_stop($g);
}

# 3. a zone's memory is bounded: a zone of 32 KB (the least nginx makes)
# holds far fewer than 400 products; polling 400 evicts the least
# recently polled, never fails a poll, and an evicted product is asked
# from Redis again when polled; one polled between each of the others
# stays, as does the latest
{
    my $g = gate_start(
        workers => 1, redis => "127.0.0.1:$rport", topic => $topic,
        extra => "fluxgate_queue_secret $secret;\n"
               . "    fluxgate_queue_zone zone=tiny:32k refresh=1h;\n"
               . "    fluxgate_redis_timeout 200ms;\n",
        server => "location = /queue/status { fluxgate_queue_status; }\n");
    my $key = secret_of($secret);
    my @p = map { uniq("z$_") } 1 .. 400;
    my %t = map { $_ => ticket_sign($key, product => $_, buyer => 'b', epoch => 0,
                                    kind => 'q', seq => 5, expires => int(time) + 600) } @p;
    my %st;
    for my $p (@p) {
        my ($st) = poll($g, $p, $t{$p});
        $st{$st}++;
        # the first product is polled again after each of the others
        ($st) = poll($g, $p[0], $t{$p[0]});
        $st{$st}++;
    }
    is_deeply(\%st, { 404 => 800 }, '400 products polled through a 32 KB zone: each answered (unknown product), none failed');
    my $asked = sub {
        my ($p) = @_;
        my $before = calls();
        my ($st) = poll($g, $p, $t{$p});
        my $after = calls();
        return (($after->{evalsha} // 0) - ($before->{evalsha} // 0), $st);
    };
    is_deeply([ $asked->($p[-1]) ], [ 0, 404 ], 'the product polled last is still held: no Redis command');
    is_deeply([ $asked->($p[0]) ], [ 0, 404 ], 'the first, polled all along, is still held: no Redis command');
    is_deeply([ $asked->($p[1]) ], [ 1, 404 ], 'the second was evicted: asked from Redis again, and answered');
    is_deeply([ $asked->($p[1]) ], [ 0, 404 ], 'and held again');
    gate_stop($g);
}

# 4. two secrets in one gate, polled in turns: each process keeps one
# keyed MAC and re-keys it when the secret changes; a ticket is good
# only where its own secret is
{
    my $g = gate(1);
    my $p = uniq('p');
    set_stock($p, 100, via => \&private);
    my $t = ticket($g, $p);
    my $f = ticket_decode($t);
    my $t2 = ticket_sign(secret_of($other), %$f);
    my (%seen, @bad);
    for my $i (1 .. 6) {
        for ([ $t, '/queue/status', 200 ], [ $t2, '/other/status', 200 ],
             [ $t2, '/queue/status', 400 ], [ $t, '/other/status', 400 ]) {
            my ($tk, $path, $want) = @$_;
            my ($st, $b) = poll($g, $p, $tk, $path);
            $seen{"$path " . ($tk eq $t ? 'first' : 'other') . " $st"}++;
            push @bad, "$path $st: " . ($b->{error} // '') if $st != $want;
        }
    }
    is_deeply(\%seen, { '/queue/status first 200' => 6, '/other/status other 200' => 6,
                        '/queue/status other 400' => 6, '/other/status first 400' => 6 },
              'two secrets in turns: each ticket good where its secret is, refused where not')
        or diag(join "\n", @bad);
    gate_stop($g);
}

done_testing();
