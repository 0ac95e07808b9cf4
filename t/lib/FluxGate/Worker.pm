package FluxGate::Worker;

# What the worker's tests (t/4xx) share on top of FluxGate::Test: building
# the Kafka messages of DESIGN.md (v2: with generation and generationStock),
# producing them to the stack's topic (also from several producers at once,
# or into chosen partitions),
# reading the worker's log from a mark, holding a PostgreSQL lock that
# parks the worker mid-batch (so a kill or a signal lands while a batch is
# in flight, however fast the worker drains), and running a private worker
# beside the stack's own.

use strict;
use warnings;
use Exporter 'import';
use Time::HiRes qw(time sleep);
use IO::Handle;
use POSIX ();
use FluxGate::Test;

our @EXPORT = qw(uuid7 order_msg stock_msg produce topic worker_log
                 log_mark log_since hold_lock worker_blocked orders_of
                 count_orders product_stock wait_rows worker_bin
                 start_private_worker stop_private_worker end_offsets
                 committed_in_log caught_up db_fingerprint slurp
                 produce_backlog check_backlog worker_restarted
                 message_at batches_in_log supervisor_mark supervisor_since
                 produce_concurrently produce_to_partition
                 generation_row product_generation pg_conninfo
                 exec_unit_test stack_pg produce_claim claim_recorded
                 worker_metrics worker_health);

sub topic { $ENV{KAFKA_TOPIC} || 'orders' }

# the worker under test: the sanitized build under `make test`
sub worker_bin { $ENV{FG_WORKER} || "$ENV{FG_ROOT}/build/fluxgate-worker" }

sub worker_log { "$ENV{FG_RUN_DIR}/logs/worker.log" }

# the stack worker's /metrics as prom_samples() parses them ({} when it
# does not answer); worker_metrics(raw => 1) -> the text itself
sub worker_metrics {
    my (%o) = @_;
    my $res = http_get($ENV{FLUXGATE_WORKER_METRICS_URL}
                       // die "FLUXGATE_WORKER_METRICS_URL is not set\n");
    return $o{raw} ? $res->{content} : {} unless $res->{status} == 200;
    return $o{raw} ? $res->{content} : prom_samples($res->{content});
}

# the stack worker's /healthz -> (status, decoded body or {})
sub worker_health {
    (my $url = $ENV{FLUXGATE_WORKER_METRICS_URL}) =~ s{/metrics$}{/healthz};
    my $res = http_get($url);
    return ($res->{status}, eval { json_decode($res->{content}) } || {});
}

# the stack's PostgreSQL as a libpq conninfo (its socket, no password);
# stack_pg('other') for another database of it
sub stack_pg {
    my ($db) = @_;
    return "host=$ENV{FG_RUN_DIR}/pg/sock port=$ENV{PGPORT} dbname="
         . ($db // 'fluxgate') . " user=fluxgate";
}

# a UUIDv7 like the module's: 48 bits of ms, version 7, variant 10
sub uuid7 {
    my $ms = int(time * 1000);
    my $hex = sprintf '%012x', $ms;
    my @r = map { int(rand(65536)) } 1 .. 5;
    return sprintf '%s-%s-7%03x-%04x-%04x%04x%04x',
        substr($hex, 0, 8), substr($hex, 8, 4), $r[0] & 0xfff,
        0x8000 | ($r[1] & 0x3fff), @r[2 .. 4];
}

# order_msg(productId => 'p', generation => 2, generationStock => 10, ...)
# -> (hashref, json).  By default generation 1 of a product set to
# 1,000,000 units (what produce_backlog sets); a key given as undef is left
# out, as an older gate would.
sub order_msg {
    my %m = (type => 'order', orderId => uuid7(), userId => 'u-1',
             quantity => 1, idempotencyKey => uniq('k'),
             acceptedAt => int(time * 1000), generation => 1,
             generationStock => 1_000_000, @_);
    delete @m{ grep { !defined $m{$_} } keys %m };
    return (\%m, json_encode(\%m));
}

# stock_msg($product, $stock, $generation = 1) -> json
sub stock_msg {
    my ($product, $stock, $generation) = @_;
    return json_encode({ type => 'stock_set', productId => $product,
                         stock => $stock, generation => $generation // 1,
                         at => int(time * 1000) });
}

# produce([key, value], ...) to the stack's topic
sub produce { kafka_produce(topic(), [@_]) }

# produce_claim($product, $claim, $generationStock): the order message the
# module produces for a reservation (a claim of pending_claim)
sub produce_claim {
    my ($p, $c, $stock) = @_;
    # + 0: numbers that went through redis-cli's arguments are strings to
    # JSON::PP, and the worker wants integers
    my (undef, $json) = order_msg(productId => $p, orderId => $c->{orderId},
        userId => $c->{user}, quantity => $c->{quantity} + 0,
        idempotencyKey => $c->{key}, generation => $c->{generation} + 0,
        generationStock => $stock + 0);
    produce([$p, $json]);
}

# the worker has a row for the claim's orderId (whatever its status)
sub claim_recorded {
    my ($c) = @_;
    return scalar psql("select count(*) from orders where id = '$c->{orderId}'");
}

# produce_to_partition($partition, [key, value], ...): one kcat run that
# writes into that partition whatever the key, as a producer with another
# partitioner (or a topic whose partitions were added) would
sub produce_to_partition {
    my ($partition, @msgs) = @_;
    my $file = "$ENV{FG_RUN_DIR}/produce-p$partition.$$";
    open my $fh, '>', $file or die $!;
    print $fh "$_->[0]\x1f$_->[1]\x1e" for @msgs;
    close $fh;
    my $out = `kcat -P -b $ENV{KAFKA_BOOTSTRAP} -t @{[topic()]} -p $partition -K '\x1f' -D '\x1e' -X acks=all -l $file 2>&1`;
    die "kcat -p $partition failed ($?): $out" if $?;
    unlink $file;
}

# produce_concurrently(sub { produce(...) }, sub { produce_to_partition(...) },
# ...): each sub in its own process, all at once, like the producers of
# several nginx worker processes; returns when all are acknowledged
sub produce_concurrently {
    my @producers = @_;
    my @pids;
    for my $producer (@producers) {
        my $pid = fork // die "fork: $!";
        if ($pid == 0) {
            my $ok = eval { $producer->(); 1 };
            print STDERR $@ unless $ok;
            POSIX::_exit($ok ? 0 : 1);
        }
        push @pids, $pid;
    }
    my $failed = 0;
    for (@pids) {
        waitpid $_, 0;
        $failed++ if $?;
    }
    die "produce_concurrently: $failed producer(s) failed\n" if $failed;
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

# the generation products shows for $product ('' when no row)
sub product_generation {
    my ($product) = @_;
    return scalar psql("select generation from products where id = '$product'");
}

# generation_row($product, $g) -> 'stock|sold|set' (set: t when its
# stock_set was recorded), '' when the generation has no row
sub generation_row {
    my ($product, $g) = @_;
    $g = 0 unless ($g // '') =~ /^\d+$/;
    return scalar psql(qq{select stock || '|' || sold || '|'
                                 || case when set_at is null then 'f' else 't' end
                          from stock_generations
                          where product_id = '$product' and generation = $g});
}

# wait_rows($secs, $like, $n) -> true when $n orders of products LIKE $like
sub wait_rows {
    my ($secs, $like, $n) = @_;
    return wait_until($secs, sub { count_orders($like) >= $n });
}

# the stack's PostgreSQL as a libpq conninfo
sub pg_conninfo { stack_pg() }

# a worker outside supervisord: start_private_worker(topic => .., group => ..)
# -> {pid, log}
sub start_private_worker {
    my (%o) = @_;
    my $log = "$ENV{FG_RUN_DIR}/logs/" . uniq('private-worker') . '.log';
    my @cmd = (worker_bin(), '--brokers', $ENV{KAFKA_BOOTSTRAP},
               '--topic', $o{topic}, '--group', $o{group}, '--pg', pg_conninfo(),
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

# batches_in_log($text) -> one {messages, accepted, ..., transactions, ms}
# per "batch committed" line, in order
sub batches_in_log {
    my ($text) = @_;
    my @b;
    for my $line ($text =~ /^.*batch committed.*$/mg) {
        my %kv = $line =~ /\b(\w+)=(\d+)\b/g;
        push @b, \%kv;
    }
    return @b;
}

# supervisord's own log (spawned/exited lines), from a mark
sub supervisor_log { "$ENV{FG_RUN_DIR}/logs/supervisord.log" }

sub supervisor_mark { -s supervisor_log() || 0 }

sub supervisor_since {
    my ($mark) = @_;
    return substr(slurp(supervisor_log()), $mark);
}

# produce_backlog($prefix, products => 10, orders => 20000, stock => 10**6):
# one stock_set per product "$prefix-<i>" (generation 1), then the orders
# spread over them
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
        push @m, [$p, (order_msg(productId => $p, userId => "u$i",
                                 generationStock => $stock))[1]];
    }
    produce(@m);
}

# check_backlog($prefix, $orders, $stock): every order once, all accepted,
# and each product's stock (and its generation's sold) is what it started
# with minus its orders
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
    Test::More::is(psql(qq{select count(*) from stock_generations g
                           where g.product_id like '$prefix-%' and g.sold <>
                             (select coalesce(sum(quantity), 0) from orders o
                              where o.product_id = g.product_id
                                and o.generation = g.generation
                                and o.status = 'accepted')}),
                   0, "$prefix: each generation's sold is its accepted orders");
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

# exec_unit_test('test_plan'): this test becomes the worker's C unit test
# of that name (TAP on stdout), built beside the worker under test
sub exec_unit_test {
    my ($name) = @_;
    (my $dir = worker_bin()) =~ s{/[^/]+$}{};
    my $bin = "$dir/worker-tests/$name";
    unless (-x $bin) {
        print "1..1\nnot ok 1 - $bin is built (make worker-tests)\n";
        exit 1;
    }
    exec $bin or die "exec $bin: $!";
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
                      kafka_partition, kafka_offset, generation), ',' order by id)
                      from orders), '')
        || coalesce((select string_agg(concat_ws('|', id, stock, generation), ','
                      order by id) from products), '')
        || coalesce((select string_agg(concat_ws('|', product_id, generation, stock,
                      sold, set_at), ',' order by product_id, generation)
                      from stock_generations), '')
        || coalesce((select string_agg(concat_ws('|', topic, "partition", "offset",
                      md5(payload), reason), ',' order by topic, "partition", "offset")
                      from dead_letters), ''))});
}

1;
