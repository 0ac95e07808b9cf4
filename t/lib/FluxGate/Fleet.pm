package FluxGate::Fleet;

# What the fleet tests (t/6xx) share: private gates (nginx instances with
# the module, several worker processes each) on the stack's Redis, Kafka
# topic and worker, a sale run through them, and the books checked after
# it the way the fault matrix does:
#   - every 200 has exactly one row, and it is `accepted`;
#   - no row of the sale's products is `rejected`;
#   - per product and generation: recorded units = sold in that generation,
#     never more than its stock; for the current generation Redis stock +
#     pending claims + recorded units = the stock set.

use strict;
use warnings;
use Exporter 'import';
use Cwd qw(abs_path);
use File::Path qw(make_path);
use IO::Socket::INET;
use Test::More;
use Time::HiRes qw(time sleep);
use FluxGate::Test;

our @EXPORT = qw(gate_start gate_stop gate_workers gate_workers_by_load gate_kafka_up gate_url gate_log
                 init_stock sale_start sale_wait ok_orders books_balance
                 wait_settled reconcile settle_claims wait_selling);

my $Module = $ENV{FG_MODULE} || abs_path('build/ngx_fluxgate_module.so');
my $Nginx  = $ENV{TEST_NGINX_BINARY} || '/usr/sbin/nginx';
my $Seq    = 0;

# gate_start(workers => 4, extra => "fluxgate_... ;", main => "env ...;",
#            topic => 'another', redis => 'host:port', log_level => 'debug',
#            server => "location ... { ... }") -> {dir, port}
# server: more of the server block (the waiting room, the shop's pages)
sub gate_start {
    my (%o) = @_;
    my $workers = $o{workers} // 4;
    my $dir = "$ENV{FG_RUN_DIR}/fleet-$$-" . ++$Seq;
    my $port = free_port();
    my $topic = $o{topic} || $ENV{KAFKA_TOPIC} || 'orders';
    my $user = $> == 0 ? 'user nobody nogroup;' : '';
    make_path("$dir/logs", "$dir/tmp");
    chmod 0777, "$dir/tmp", "$dir/logs";
    my $extra = $o{extra} // '';
    my $redis = $o{redis} // "127.0.0.1:$ENV{REDIS_PORT}";
    my $main = $o{main} // '';
    my $server = $o{server} // '';
    my $level = $o{log_level} // 'info';
    open my $fh, '>', "$dir/nginx.conf" or die $!;
    print $fh <<"EOF";
load_module $Module;
worker_processes $workers;
$user
pid $dir/nginx.pid;
error_log $dir/logs/error.log $level;
$main
worker_rlimit_nofile 20000;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path $dir/tmp;
    fluxgate_redis $redis;
    fluxgate_kafka_brokers $ENV{KAFKA_BOOTSTRAP};
    fluxgate_kafka_topic $topic;
    $extra
    server {
        listen 127.0.0.1:$port reuseport;
        location = /order { fluxgate_order; }
        location = /init { fluxgate_stock_admin; }
        $server
    }
}
EOF
    close $fh;
    my $pre = $ENV{FG_LD_PRELOAD} ? "LD_PRELOAD=$ENV{FG_LD_PRELOAD} " : '';
    my $out = `$pre$Nginx -p $dir/ -c $dir/nginx.conf 2>&1`;
    die "gate did not start: $out" if $? != 0;
    my $g = { dir => $dir, port => $port, workers => $workers,
              reports => _sanitizer_reports() };
    wait_until(10, sub { IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port") })
        or die "gate did not listen on $port";
    # every worker process up (and so its Kafka producer made)
    wait_until(10, sub { my @w = gate_workers($g); @w == $workers });
    # a cluster gate answers 503 until its processes have the slot map
    if ($redis =~ /^cluster\b/) {
        wait_until(20, sub {
            my %mapped = map { $_ => 1 } gate_log($g)
                =~ /\s(\d+)#\d+: fluxgate: redis cluster: 16384 of 16384 slots mapped/g;
            grep({ $mapped{$_} } gate_workers($g)) == $workers;
        }) or die "gate's processes did not map the cluster's slots";
    }
    return $g;
}

sub gate_master {
    my ($g) = @_;
    open my $fh, '<', "$g->{dir}/nginx.pid" or return undef;
    my $pid = <$fh>;
    chomp $pid if defined $pid;
    return $pid;
}

sub gate_workers { my ($g) = @_; my $m = gate_master($g) or return (); nginx_workers($m) }

sub gate_url { "http://127.0.0.1:$_[0]{port}" }

# the gate's worker processes, the one holding most client connections
# first: (pid, connections) pairs from ss (the listen sockets are reuseport,
# so the kernel spreads connections over every process)
sub gate_workers_by_load {
    my ($g) = @_;
    my %n = map { $_ => 0 } gate_workers($g);
    for (`ss -Htnp state established '( sport = :$g->{port} )' 2>/dev/null`) {
        while (/pid=(\d+)/g) { $n{$1}++ if exists $n{$1} }
    }
    return map { [$_, $n{$_}] } sort { $n{$b} <=> $n{$a} } keys %n;
}

# whether every worker process of the gate has a Kafka broker up: the last
# word of each on it ("no broker is up" / "broker(s) up again") is not down
sub gate_kafka_up {
    my ($g) = @_;
    my %down;
    for (split /\n/, gate_log($g)) {
        next unless /\s(\d+)#\d+: fluxgate: kafka: (?:(no broker is up)|\d+ broker\(s\) up again)/;
        $down{$1} = $2 ? 1 : 0;
    }
    return !grep { $down{$_} } gate_workers($g);
}

sub gate_log {
    my ($g) = @_;
    open my $fh, '<', "$g->{dir}/logs/error.log" or return '';
    local $/;
    return <$fh>;
}

# gate_stop($gate, allow => ['alert', qr/.../]): a graceful stop (QUIT).  Whatever
# is still there after 30 s (FG_NGINX_STOP_TIMEOUT), master or worker, is a
# failure, said as such,
# and killed with SIGKILL, so no gate outlives its test.  Then the gate's
# whole error log must hold no [alert], [crit] or [emerg] line (but the
# levels a test allows, and the lines matching a regex it allows: one
# that kills a worker on purpose gets the master's alert about it) and no
# sanitizer report.
sub gate_stop {
    my ($g, %o) = @_;
    my $name = $o{name} // "gate on port $g->{port}";
    my $pid = gate_master($g) or return;
    my @workers = gate_workers($g);
    my $timeout = $ENV{FG_NGINX_STOP_TIMEOUT} || 30;
    kill 'QUIT', $pid;
    wait_until($timeout, sub { !grep { kill 0, $_ } $pid, @workers });
    my @left = grep { kill 0, $_ } $pid, @workers;
    if (@left) {
        diag(`ps -o pid,stat,wchan:20,cmd -p @{[join ',', @left]} 2>&1`);
        kill 'KILL', @left;
        fail("$name did not stop within $timeout s of QUIT: killed with SIGKILL (@left)");
    }
    my %allowed = map { $_ => 1 } grep { !ref } @{ $o{allow} || [] };
    my @excused = grep { ref } @{ $o{allow} || [] };
    my @levels = grep { !$allowed{$_} } qw(alert crit emerg);
    my $log = gate_log($g);
    if (@levels) {
        my $re = join '|', @levels;
        my @lines = grep { my $l = $_; !grep { $l =~ $_ } @excused }
                    $log =~ /^(.*\[(?:$re)\].*)$/mg;
        ok(!@lines, "$name - no [" . join('], [', @levels) . "] in its error log")
            or diag(join "\n", @lines[0 .. ($#lines < 9 ? $#lines : 9)]);
    }
    my $now = _sanitizer_reports();
    my @new = grep { ($g->{reports}{$_} // -1) != $now->{$_} } sort keys %$now;
    ok(!@new && $log !~ /AddressSanitizer|runtime error:/,
       "$name - no sanitizer report") or diag(map { slurp_file($_) } @new);
    return !@left;
}

# make test's sanitizer reports (t/run: ASan and UBSan write them to the
# stack's logs), with their sizes
sub _sanitizer_reports {
    return { map { $_ => -s $_ } glob("$ENV{FG_RUN_DIR}/logs/sanitizer.*") };
}

sub slurp_file { my ($f) = @_; open my $fh, '<', $f or return ''; local $/; <$fh> // '' }

# init_stock($gate, $product, $n, key => K, if_generation => G) -> response
sub init_stock {
    my ($g, $p, $n, %o) = @_;
    my %body = (productId => $p, quantity => $n);
    $body{ifGeneration} = $o{if_generation} if defined $o{if_generation};
    my $res = http_post(gate_url($g) . '/init', json_encode(\%body),
                        { $o{key} ? ('X-Idempotency-Key' => $o{key}) : () });
    $res->{json} = eval { json_decode($res->{content}) } || {};
    return $res;
}

# sale_start($gate, product => 'x', products => 12, c => 40, n => 480)
sub sale_start {
    my ($g, %o) = @_;
    return loadgen_start(port => $g->{port}, log => 1, once => 1, %o);
}

sub sale_wait { loadgen_wait(@_) }

# the orderIds the sales answered 200, each with its body status checked
sub ok_orders {
    my @ids;
    for my $r (@_) {
        for my $l (@{ $r->{log} || [] }) {
            push @ids, $l->[1] if $l->[0] == 200;
        }
    }
    return @ids;
}

# books_balance($name, \@products, \@ok_ids) -> true when everything holds;
# redis => sub { ... } reads another Redis than the stack's (a cluster).
# The ids go to PostgreSQL as rows of a temporary table (psql's ids), not
# as a list in the statement: a sale on a fast machine answers more 200s.
sub books_balance {
    my ($name, $products, $ok, %o) = @_;
    my $redis = $o{redis} || \&redis;
    my $all = 1;

    # the worker has recorded every 200: everything produced until now is
    # in PostgreSQL once the worker's group committed it
    my $want = scalar @$ok;
    $all &= ok(drained(), "$name - the worker drained the topic");
    my ($got, $accepted) = split /\|/, psql(
        "select count(*), count(*) filter (where status = 'accepted')"
        . " from orders where id in (select id::uuid from ids)", ids => $ok);
    $all &= is($got, $want, "$name - every 200 has its row ($want)");
    $all &= is($accepted, $want, "$name - and every one is accepted");
    my $rejected = psql("select count(*) from orders where status = 'rejected'"
                        . " and product_id in (select id from ids)",
                        ids => $products);
    $all &= is($rejected, 0, "$name - no order of the sale was rejected");

    for my $p (@$products) {
        my ($g, $s) = $redis->('HMGET', "fg:{$p}:gen", 'g', 's');
        my $stock = $redis->('GET', "fg:{$p}:stock");
        my $pending = 0;
        for my $k ($redis->('ZRANGE', "fg:{$p}:pending", 0, -1)) {
            $pending += $redis->('HGET', "fg:{$p}:idem:$k", 'q') || 0;
        }
        my %rec = map { split /\|/ } psql(
            "select generation, coalesce(sum(quantity), 0) from orders"
            . " where product_id = '$p' and status = 'accepted' group by 1");
        my %gens = map { my ($gg, $st, $so) = split /\|/; ($gg => [$st, $so]) } psql(
            "select generation, stock, sold from stock_generations"
            . " where product_id = '$p'");
        for my $gg (sort keys %gens) {
            my ($st, $so) = @{ $gens{$gg} };
            $all &= is($so, $rec{$gg} // 0,
                       "$name - $p generation $gg: sold = recorded units")
                if ($rec{$gg} // 0) != $so;
            $all &= ok($so <= $st, "$name - $p generation $gg: sold $so <= stock $st")
                if $so > $st;
        }
        my $line = "$p generation $g: Redis $stock + pending $pending"
                 . " + recorded " . ($rec{$g} // 0) . " = set $s";
        $all &= is($stock + $pending + ($rec{$g} // 0), $s, "$name - $line");
    }
    return $all;
}

# fluxgate-reconcile once with the stack's settings -> (exit status,
# stdout and stderr together)
sub reconcile {
    my ($rc, $out, $err) = run_reconcile(@_);
    return ($rc, $out . $err);
}

# settle_claims($product) -> true once the product has no pending claim:
# its overdue claims settled the way the stack's settler does, with the
# shortest deadline the contract allows: the producer's 5 s delivery
# timeout plus the gate's 10 s finishing grace (the settler's own 30 s
# would do too, only later).  Shorter is wrong: t/750 with 8 s once
# released 5 claims whose orders (timed out in the producer while the
# partition had no leader) were recorded afterwards: 5 units back in the
# stock that were sold already.
my $ClaimDeadline = 16000;
sub settle_claims {
    my ($p, %o) = @_;
    my $out = '';
    my $ok = wait_until($o{timeout} // 90, sub {
        return 1 if redis('ZCARD', "fg:{$p}:pending") == 0;
        (undef, $out) = reconcile('--repair', '--claim-deadline',
                                  $o{deadline} // $ClaimDeadline,
                                  '--product', $p);
        # a round settles what is overdue by now; the next one is due
        # when the next claim is
        return redis('ZCARD', "fg:{$p}:pending") == 0 || do { sleep 1; 0 };
    });
    diag($out) unless $ok;
    return $ok;
}

# wait_selling($product, $units, $secs, redis => sub { ... }) -> true once
# $units of the product's current stock are taken: a fault meant for a
# running sale is injected into one that is running, however long the sale
# took to start; redis as for books_balance
sub wait_selling {
    my ($p, $units, $secs, %o) = @_;
    my $redis = $o{redis} || \&redis;
    my ($set) = $redis->('HGET', "fg:{$p}:gen", 's');
    my $ok = wait_until($secs // 30, sub {
        $set - $redis->('GET', "fg:{$p}:stock") >= $units });
    diag("$p: fewer than $units units sold after " . ($secs // 30) . " s")
        unless $ok;
    return $ok;
}

# waits until no product of the list has a pending claim
sub wait_settled {
    my ($secs, @products) = @_;
    return wait_until($secs, sub {
        !grep { redis('ZCARD', "fg:{$_}:pending") > 0 } @products;
    });
}

1;
