package FluxGate::Worker;

# What the worker's tests (t/4xx) share on top of FluxGate::Test: building
# the Kafka messages of DESIGN.md, producing them to the stack's topic,
# reading the worker's log from a mark, holding a PostgreSQL lock that
# parks the worker mid-batch (so a kill or a signal lands while a batch is
# in flight, however fast the worker drains), and running a private worker
# beside the stack's own.

use strict;
use warnings;
use Exporter 'import';
use Time::HiRes qw(time sleep);
use IO::Handle;
use FluxGate::Test;

our @EXPORT = qw(uuid7 order_msg stock_msg produce topic worker_log
                 log_mark log_since hold_lock worker_blocked orders_of
                 count_orders product_stock wait_rows worker_bin
                 start_private_worker stop_private_worker end_offsets
                 committed_in_log caught_up db_fingerprint slurp
                 produce_backlog check_backlog worker_restarted
                 message_at produce_claim claim_recorded);

sub topic { $ENV{KAFKA_TOPIC} || 'orders' }

# the worker under test: the sanitized build under `make test`
sub worker_bin { $ENV{FG_WORKER} || "$ENV{FG_ROOT}/build/fluxgate-worker" }

sub worker_log { "$ENV{FG_RUN_DIR}/logs/worker.log" }

# a UUIDv7 like the module's: 48 bits of ms, version 7, variant 10
sub uuid7 {
    my $ms = int(time * 1000);
    my $hex = sprintf '%012x', $ms;
    my @r = map { int(rand(65536)) } 1 .. 5;
    return sprintf '%s-%s-7%03x-%04x-%04x%04x%04x',
        substr($hex, 0, 8), substr($hex, 8, 4), $r[0] & 0xfff,
        0x8000 | ($r[1] & 0x3fff), @r[2 .. 4];
}

# order_msg(productId => 'p', ...) -> (hashref, json)
sub order_msg {
    my %m = (type => 'order', orderId => uuid7(), userId => 'u-1',
             quantity => 1, idempotencyKey => uniq('k'),
             acceptedAt => int(time * 1000), @_);
    return (\%m, json_encode(\%m));
}

sub stock_msg {
    my ($product, $stock) = @_;
    return json_encode({ type => 'stock_set', productId => $product,
                         stock => $stock, at => int(time * 1000) });
}

# produce([key, value], ...) to the stack's topic
sub produce { kafka_produce(topic(), [@_]) }

# produce_claim($product, $claim, $generationStock): the order message the
# module produces for a reservation (a claim of pending_claim)
sub produce_claim {
    my ($p, $c, $stock) = @_;
    my (undef, $json) = order_msg(productId => $p, orderId => $c->{orderId},
        userId => $c->{user}, quantity => $c->{quantity},
        idempotencyKey => $c->{key}, generation => $c->{generation},
        generationStock => $stock);
    produce([$p, $json]);
}

# the worker has a row for the claim's orderId (whatever its status)
sub claim_recorded {
    my ($c) = @_;
    return scalar psql("select count(*) from orders where id = '$c->{orderId}'");
}

sub log_mark { -s worker_log() || 0 }

sub log_since {
    my ($mark) = @_;
    open my $fh, '<', worker_log() or return '';
    seek $fh, $mark, 0;
    local $/;
    return <$fh> // '';
}

# hold_lock('orders') -> a handle; the lock goes with close($handle).
# SHARE mode lets readers through but parks the worker's INSERT.
sub hold_lock {
    my ($table) = @_;
    open my $fh, '|-', 'psql -X -q -v ON_ERROR_STOP=1 >/dev/null 2>&1'
        or die "psql: $!";
    $fh->autoflush(1);
    print $fh "begin;\nlock table $table in share mode;\n";
    wait_until(10, sub {
        psql(qq{select count(*) from pg_locks l join pg_class c on c.oid = l.relation
                where c.relname = '$table' and l.mode = 'ShareLock' and l.granted}) > 0
    }) or die "could not lock $table";
    return $fh;
}

# the worker's statement waits for a lock (see hold_lock)
sub worker_blocked {
    return psql(q{select count(*) from pg_stat_activity
                  where application_name = 'fluxgate-worker'
                    and wait_event_type = 'Lock'}) > 0;
}

sub orders_of {
    my ($product) = @_;
    return psql("select count(*) from orders where product_id = '$product'");
}

sub count_orders {
    my ($like) = @_;
    return psql("select count(*) from orders where product_id like '$like'");
}

sub product_stock {
    my ($product) = @_;
    return scalar psql("select stock from products where id = '$product'");
}

# wait_rows($secs, $like, $n) -> true when $n orders of products LIKE $like
sub wait_rows {
    my ($secs, $like, $n) = @_;
    return wait_until($secs, sub { count_orders($like) >= $n });
}

# a worker outside supervisord: start_private_worker(topic => .., group => ..)
# -> {pid, log}
sub start_private_worker {
    my (%o) = @_;
    my $log = "$ENV{FG_RUN_DIR}/logs/" . uniq('private-worker') . '.log';
    my $pg = "host=$ENV{FG_RUN_DIR}/pg/sock port=$ENV{PGPORT} dbname=fluxgate user=fluxgate";
    my @cmd = (worker_bin(), '--brokers', $ENV{KAFKA_BOOTSTRAP},
               '--topic', $o{topic}, '--group', $o{group}, '--pg', $pg,
               @{ $o{args} || [] });
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        open STDERR, '>', $log or die $!;
        open STDOUT, '>&', \*STDERR;
        exec @cmd or die "exec: $!";
    }
    return { pid => $pid, log => $log };
}

# -> the exit status (waitpid's $?)
sub stop_private_worker {
    my ($w, $signal) = @_;
    kill $signal || 'TERM', $w->{pid};
    waitpid $w->{pid}, 0;
    return $?;
}

# end_offsets($topic) -> {partition => next offset to be written}
sub end_offsets {
    my ($topic) = @_;
    my $meta = `kcat -L -b $ENV{KAFKA_BOOTSTRAP} -t $topic 2>&1`;
    my @parts = $meta =~ /^\s+partition (\d+),/mg;
    my $q = `kcat -Q -b $ENV{KAFKA_BOOTSTRAP} @{[ map { "-t $topic:$_:-1" } @parts ]} 2>&1`;
    my %end = $q =~ /\[(\d+)\] offset (\d+)/g;
    die "end_offsets($topic): no partitions in\n$meta$q" unless @parts && %end;
    return \%end;
}

# committed_in_log($text) -> {partition => highest offset committed}, from
# the worker's "batch committed ... offsets=topic[p]@o,..." lines
sub committed_in_log {
    my ($text) = @_;
    my %done;
    for my $list ($text =~ /batch committed.* offsets=(\S+)/g) {
        while ($list =~ /\[(\d+)\]\@(\d+)/g) {
            $done{$1} = $2 if !defined $done{$1} || $2 > $done{$1};
        }
    }
    return \%done;
}

# produce_backlog($prefix, products => 10, orders => 20000, stock => 10**6):
# one stock_set per product "$prefix-<i>", then the orders spread over them
sub produce_backlog {
    my ($prefix, %o) = @_;
    my $np = $o{products} || 10;
    my $stock = $o{stock} // 1_000_000;
    my @m;
    unless ($o{no_stock}) {
        push @m, ["$prefix-$_", stock_msg("$prefix-$_", $stock)] for 1 .. $np;
    }
    for my $i (1 .. ($o{orders} || 20000)) {
        my $p = "$prefix-" . (1 + $i % $np);
        push @m, [$p, (order_msg(productId => $p, userId => "u$i"))[1]];
    }
    produce(@m);
}

# check_backlog($prefix, $orders, $stock): every order once, all accepted,
# and each product's stock is what it started with minus its orders
sub check_backlog {
    my ($prefix, $orders, $stock) = @_;
    $stock //= 1_000_000;
    Test::More::is(count_orders("$prefix-%"), $orders, "$prefix: $orders orders recorded");
    Test::More::is(psql("select count(*) from orders where product_id like '$prefix-%'"
                        . " and status <> 'accepted'"), 0, "$prefix: all accepted");
    Test::More::is(psql(qq{select count(*) from products p
                           where p.id like '$prefix-%' and p.stock <> $stock -
                             (select coalesce(sum(quantity), 0) from orders o
                              where o.product_id = p.id and o.status = 'accepted')}),
                   0, "$prefix: stock taken exactly once per order");
}

# worker_restarted($old_pid, $secs) -> the new pid once supervisord restarted it
sub worker_restarted {
    my ($old, $secs) = @_;
    my $new;
    wait_until($secs || 30, sub { $new = svc_pid('worker'); $new && $new != $old });
    return $new && $new != $old ? $new : undef;
}

# message_at($topic, $partition, $offset) -> [key, payload] of that message
sub message_at {
    my ($topic, $partition, $offset) = @_;
    my $out = `timeout 20 kcat -C -b $ENV{KAFKA_BOOTSTRAP} -t $topic -p $partition -o $offset -c 1 -e -q -f '%k\x1f%s'`;
    my ($key, $payload) = split /\x1f/, $out, 2;
    return [$key, $payload];
}

sub slurp {
    my ($file) = @_;
    open my $fh, '<', $file or return '';
    local $/;
    return scalar <$fh> // '';
}

# caught_up($log_file, $end_offsets) -> every non-empty partition committed
sub caught_up {
    my ($file, $end) = @_;
    my $done = committed_in_log(slurp($file));
    for my $p (keys %$end) {
        next if $end->{$p} == 0;
        return 0 unless ($done->{$p} // -1) >= $end->{$p};
    }
    return 1;
}

# everything the worker decides, as one md5 (timestamps it sets left out)
sub db_fingerprint {
    return scalar psql(q{select md5(
        coalesce((select string_agg(concat_ws('|', id, product_id, user_id, quantity,
                      idempotency_key, status, reason, accepted_at, kafka_topic,
                      kafka_partition, kafka_offset), ',' order by id) from orders), '')
        || coalesce((select string_agg(concat_ws('|', id, stock, stock_set_at,
                      stock_set_topic, stock_set_partition, stock_set_offset), ','
                      order by id) from products), '')
        || coalesce((select string_agg(concat_ws('|', topic, "partition", "offset",
                      md5(payload), reason), ',' order by topic, "partition", "offset")
                      from dead_letters), ''))});
}

1;
