package FluxGate::FleetStack;

# What the fleet-fault tests (t/750 to t/760, t/7xx-fleet-*.t) share.  They
# run against the stack `make test-fleet` starts (t/run with FG_FLEET=1: scripts/stack with
# FG_KAFKA_BROKERS=3, FG_NGINX_INSTANCES=2, FG_WORKER_PROCS=2) and skip
# against a single one.  A sale is spread over every gate the way a load
# balancer spreads a crowd (fg-loadgen with one -u per gate: a connection
# whose gate fails moves to the next), one fault is injected while it
# runs, and the books are checked as the fault matrix (t/510) checks them:
#   - only 200, 409 and 503 answered; each 200 has its own orderId;
#   - every 200 has its row, accepted; no row of the sale is rejected;
#   - no row without a 200 beyond the orders whose outcome the client never
#     learnt (503 "possibly persisted", or no answer from a killed gate);
#   - no idempotency key recorded twice;
#   - every pending claim settled, and Redis stock + recorded units = the
#     initial stock.
# 503s (and unanswered requests) are allowed during the failover only: the
# window from the first to the last of them is printed.

use strict;
use warnings;
use Exporter 'import';
use Test::More;
use Time::HiRes qw(time sleep);
use FluxGate::Test;
use FluxGate::Fleet qw(books_balance reconcile settle_claims wait_selling);

our @EXPORT = qw(fleet_or_skip gates admin_url brokers kafka_program
                 partition_of partition_leader partition_isr fleet_sale
                 fleet_books failover_window longest_gap first_order);

sub gates   { split ' ', $ENV{FLUXGATE_URLS} // '' }
sub brokers { split /,/, $ENV{KAFKA_BOOTSTRAP} // '' }
sub workers { split ' ', $ENV{FLUXGATE_WORKER_METRICS_URLS} // '' }
sub admin_url { $ENV{FLUXGATE_ADMIN_URL} }

# skip the whole file unless the stack is a fleet of at least this size
sub fleet_or_skip {
    my (%need) = (brokers => 1, gates => 1, workers => 1, @_);
    my %have = (brokers => scalar(brokers()), gates => scalar(gates()),
                workers => scalar(workers()));
    for my $k (sort keys %need) {
        plan skip_all => "needs a fleet stack with $need{$k} $k (it has"
            . " $have{$k}): run `make test-fleet`"
            if $have{$k} < $need{$k};
    }
}

# the supervisord program of broker $id (scripts/stack: kafka, kafka-2, ..)
sub kafka_program { $_[0] == 1 ? 'kafka' : "kafka-$_[0]" }

sub _metadata {
    my $topic = $ENV{KAFKA_TOPIC} || 'orders';
    my $out = `timeout 20 kcat -b $ENV{KAFKA_BOOTSTRAP} -L -J -t $topic -m 5 2>/dev/null`;
    my $md = eval { json_decode($out) } or return undef;
    my ($t) = grep { $_->{topic} eq $topic } @{ $md->{topics} || [] };
    return $t;
}

sub _partition {
    my ($n) = @_;
    my $t = _metadata() or return undef;
    my ($p) = grep { $_->{partition} == $n } @{ $t->{partitions} || [] };
    return $p;
}

# the topic's partition numbers
sub partitions {
    my $t = _metadata() or return ();
    return map { $_->{partition} } @{ $t->{partitions} || [] };
}

# the broker id leading partition $n (undef while none does)
sub partition_leader {
    my $p = _partition($_[0]) or return undef;
    return $p->{leader} >= 0 ? $p->{leader} : undef;
}

# the ids in partition $n's in-sync replica set
sub partition_isr {
    my $p = _partition($_[0]) or return ();
    return map { $_->{id} } @{ $p->{isrs} || [] };
}

# one order of $product through the first gate, recorded: (orderId,
# partition), so a test knows where the product's orders go
sub first_order {
    my ($product) = @_;
    my $res = http_post((gates())[0] . '/order',
        json_encode({ productId => $product, userId => uniq('u-first') }),
        { 'X-Idempotency-Key' => uniq('k-first') });
    my $id = eval { json_decode($res->{content})->{orderId} };
    die "first order of $product: $res->{status} $res->{content}\n"
        unless $res->{status} == 200 && $id;
    wait_until(60, sub { psql("select count(*) from orders where id = '$id'") })
        or die "first order $id of $product not recorded\n";
    return ($id, scalar psql("select kafka_partition from orders where id = '$id'"));
}

sub partition_of { (first_order(@_))[1] }

# the gates' error logs: nginx-error.log, nginx2-error.log, ...
sub _gate_logs { glob("$ENV{FG_RUN_DIR}/logs/nginx*-error.log") }

sub _log_marks { return { map { $_ => (-s $_ || 0) } _gate_logs() } }

sub _possibly_persisted {
    my ($marks) = @_;
    my $n = 0;
    for my $f (_gate_logs()) {
        open my $fh, '<', $f or next;
        seek $fh, $marks->{$f} // 0, 0;
        local $/;
        my $text = <$fh> // '';
        $n += () = $text =~ /possibly persisted/g;
    }
    return $n;
}

# fleet_sale(product => $p, inject => sub { ... }, sold => 250, d => 10,
#            rate => 250, c => 20) -> the loadgen result, with
# {statuses => {200 => n, ...}, marks => the gates' log offsets before,
# inject_ms => when the fault was injected, on the log's time line}.
# The fault is injected once the sale has sold `sold` units (it is
# running, whatever the machine's speed), the sale lasting d seconds.
sub fleet_sale {
    my (%o) = @_;
    my $marks = _log_marks();
    my $h = loadgen_start(urls => [gates()], log => 1, log_errors => 1,
                          c => $o{c} // 20, rate => $o{rate} // 250,
                          d => $o{d} // 10, product => $o{product},
                          run => $o{run} // 'fleet');
    ok(wait_selling($o{product}, $o{sold} // 250, 30),
       "the sale of $o{product} is selling before the fault");
    my $at = time;
    $o{inject}->();
    my $r = loadgen_wait($h);
    my %st;
    $st{ $_->[0] }++ for @{ $r->{log} };
    $r->{statuses} = \%st;
    $r->{marks} = $marks;
    # fg-loadgen's log counts from started_at_ms (the same wall clock)
    $r->{inject_ms} = $at * 1000 - $r->{started_at_ms};
    diag("sale of $o{product}: " . join(' ', map { "$_=$st{$_}" } sort keys %st)
         . " (0 = no answer)");
    return $r;
}

# (first, last) ms since the sale's start of the answers that are 503s or
# none at all; () when there were none
sub failover_window {
    my ($r) = @_;
    my @t = sort { $a <=> $b }
            map { $_->[4] } grep { $_->[0] == 503 || $_->[0] == 0 } @{ $r->{log} };
    return @t ? ($t[0], $t[-1]) : ();
}

# (from, to) ms since the sale's start: the longest time without a 200
sub longest_gap {
    my ($r) = @_;
    my @t = sort { $a <=> $b } map { $_->[4] } grep { $_->[0] == 200 } @{ $r->{log} };
    my ($from, $to) = (0, 0);
    for my $i (1 .. $#t) {
        ($from, $to) = @t[$i - 1, $i] if $t[$i] - $t[$i - 1] > $to - $from;
    }
    return ($from, $to);
}

# fleet_books($name, $product, $initial_stock, $sale_result, extra_ok => [ids])
sub fleet_books {
    my ($name, $p, $stock, $r, %o) = @_;
    my %st = %{ $r->{statuses} };
    my $all = 1;
    my @bad = grep { !/^(0|200|409|503)$/ } keys %st;
    $all &= is(scalar @bad, 0, "$name - only 200/409/503 answered")
        or diag(join ' ', map { "$_=$st{$_}" } sort keys %st);
    my @ok = ((map { $_->[1] } grep { $_->[0] == 200 } @{ $r->{log} }),
              @{ $o{extra_ok} || [] });
    my %ok = map { $_ => 1 } @ok;
    $all &= is(scalar keys %ok, scalar @ok, "$name - each 200 has its own orderId");

    $all &= ok(settle_claims($p), "$name - every pending claim settled");
    $all &= books_balance($name, [$p], \@ok);

    # rows without a 200: only orders whose outcome the client never learnt
    my $possibly = _possibly_persisted($r->{marks});
    my $unknown = ($st{0} // 0) + $possibly;
    my @rows = psql("select id from orders where product_id = '$p'");
    my $extra = grep { !$ok{$_} } @rows;
    $all &= ok($extra <= $unknown, "$name - no row without a 200 ($extra) beyond"
               . " the unanswered (" . ($st{0} // 0) . ") and possibly persisted ($possibly)");
    my $twice = psql("select count(*) - count(distinct idempotency_key) from orders"
                     . " where product_id = '$p'");
    $all &= is($twice, 0, "$name - no key recorded twice");
    my $units = psql("select coalesce(sum(quantity), 0) from orders"
                     . " where product_id = '$p' and status = 'accepted'");
    my $left = redis('GET', "fg:{$p}:stock");
    $all &= is($left + $units, $stock,
               "$name - Redis stock $left + recorded units $units = initial stock");
    diag(sprintf "%s: 200=%d 409=%d 503=%d unanswered=%d, possibly persisted %d,"
         . " rows without a 200 %d; books %s", $name, $st{200} // 0,
         $st{409} // 0, $st{503} // 0, $st{0} // 0, $possibly, $extra,
         $all ? 'balanced' : 'NOT balanced');
    return $all;
}

1;
