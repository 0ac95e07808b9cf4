#!/usr/bin/env perl
# The Flux-Gate benchmarks, run by bench/run (make bench) against a private
# stack.  Everything is measured in this one run on this machine, loopback
# only, with build/fg-loadgen as the client:
#
#   ceiling      nginx `return 200` for the same request
#   redis        redis-benchmark of the gate script (EVALSHA), plain and
#                pipelined
#   peer         the OpenResty way (bench/peers/openresty): lua-resty-redis,
#                one EVALSHA of the same script per request, keepalive pool
#   metrics      the sold-out path with a fluxgate_metrics location and
#                without one (counting on and off)
#   flux-1w/2w   Flux-Gate with one and two nginx workers: sold-out path,
#                accept path (Kafka acknowledging every 200), a flash sale
#   drain        fluxgate-worker draining pre-filled orders into PostgreSQL,
#                batched against one transaction per message
#   memory       nginx worker RSS after 10,000 and after 1,000,000 orders;
#                the worker daemon's RSS across the drain
#   fleet        (BENCH_ONLY=fleet) the drain with one and two worker
#                processes in one consumer group; the sold-out and accept
#                paths on one Redis and on a Redis Cluster of 3 masters
#
# It prints one table and writes it, with the machine and the versions, to
# bench/results/<date>.md (+ .tsv and a PNG chart).
use strict;
use warnings;
use lib 't/lib';
use FluxGate::Test;
use POSIX qw(strftime);
use Time::HiRes qw(sleep time);
use File::Path qw(make_path);

our $DIR     = shift or die "usage: bench.pl STACK_DIR\n";
our $ROOT    = $ENV{FG_ROOT};
my $QUICK   = $ENV{BENCH_QUICK} // 0;
our $SECONDS = $ENV{BENCH_SECONDS} // ($QUICK ? 3 : 10);
my $MEM_N   = $QUICK ? 100_000 : 1_000_000;
our $CONNS   = $ENV{BENCH_CONNS} // 100;

our @rows;       # [variant, what, rps, p50, p99, p999, note]
our %fig;        # named figures for the ratios

sub say { print "bench: @_\n" }

sub free_port {
    require IO::Socket::INET;
    IO::Socket::INET->new(Listen => 1, LocalAddr => '127.0.0.1',
                          LocalPort => 0)->sockport;
}

# --- nginx instances of our own ----------------------------------------------

my %Nginx;      # name -> {root, port}

sub nginx_start {
    my ($name, $workers, $main, $http, $server) = @_;
    my $root = "$DIR/nginx-$name";
    my $port = free_port();
    make_path("$root/logs", "$root/tmp");
    system("chown -R nobody:nogroup $root/tmp") if $> == 0;
    open my $fh, '>', "$root/nginx.conf" or die;
    print $fh <<"EOF";
$main
worker_processes $workers;
@{[ $> == 0 ? 'user nobody nogroup;' : '' ]}
pid $root/logs/nginx.pid;
error_log $root/logs/error.log warn;
worker_rlimit_nofile 20000;
events { worker_connections 8192; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $root/tmp/body;
    proxy_temp_path $root/tmp/proxy;
    fastcgi_temp_path $root/tmp/fastcgi;
    uwsgi_temp_path $root/tmp/uwsgi;
    scgi_temp_path $root/tmp/scgi;
$http
    server {
        listen 127.0.0.1:$port backlog=4096;
$server
    }
}
EOF
    close $fh;
    system("nginx -p $root -c $root/nginx.conf") == 0
        or die "nginx $name did not start: " . `tail -5 $root/logs/error.log`;
    wait_until(5, sub { -s "$root/logs/nginx.pid" });
    $Nginx{$name} = { root => $root, port => $port };
    sleep 0.5;
    return $port;
}

sub nginx_stop {
    my ($name) = @_;
    my $n = delete $Nginx{$name} or return;
    system("nginx -p $n->{root} -c $n->{root}/nginx.conf -s quit 2>/dev/null");
    sleep 1;
}

# CPU time (user + system, in clock ticks) of an nginx's worker processes
sub nginx_worker_cpu_ticks {
    my ($name) = @_;
    my $pid = `cat $Nginx{$name}{root}/logs/nginx.pid`;
    chomp $pid;
    my $ticks = 0;
    for my $w (nginx_workers($pid)) {
        open my $fh, '<', "/proc/$w/stat" or next;
        my $stat = <$fh>;
        $stat =~ s/^.*\)\s+//;
        my @f = split ' ', $stat;
        $ticks += $f[11] + $f[12];
    }
    return $ticks;
}

sub nginx_worker_rss_kb {
    my ($name) = @_;
    my $pid = `cat $Nginx{$name}{root}/logs/nginx.pid`;
    chomp $pid;
    my ($w) = nginx_workers($pid);
    my $rss = `ps -o rss= -p $w`;
    $rss =~ s/\s//g;
    return $rss;
}

# --- the gate's configuration ---------------------------------------------------

my $Module = "$ROOT/build/ngx_fluxgate_module.so";

sub flux_http {
    my (%o) = @_;
    my $threshold = $o{threshold} // '1000000 burst=1000000';
    return <<"EOF";
    fluxgate_redis 127.0.0.1:$ENV{REDIS_PORT};
    fluxgate_redis_timeout 1s;
    fluxgate_kafka_brokers $ENV{KAFKA_BOOTSTRAP};
    fluxgate_kafka_topic $ENV{KAFKA_TOPIC};
    fluxgate_threshold $threshold;
    fluxgate_waiting_room /waiting-room/;
    fluxgate_max_quantity 10;
    # the sold-out flag in shared memory (README: its trade-off)
    fluxgate_sold_out_cache 1s;
EOF
}

my $FluxServer = <<'EOF';
        location = /order { client_max_body_size 4k; fluxgate_order; }
        location = /init { fluxgate_stock_admin; }
EOF

sub init_at {
    my ($port, $product, $n) = @_;
    my $res = http_post("http://127.0.0.1:$port/init",
                        qq({"productId":"$product","quantity":$n}));
    die "set stock $product: $res->{status} $res->{content}\n"
        unless $res->{status} == 200;
}

# --- measuring ---------------------------------------------------------------------

sub run_load {
    my (%o) = @_;
    my $r = loadgen(c => $CONNS, d => $SECONDS, %o);
    die "loadgen failed: $r->{raw}" unless defined $r->{rps};
    return $r;
}

sub row {
    my ($variant, $what, $r, $status, $note) = @_;
    my $s = $r->{status}{$status} || {};
    my $rps = $status eq 'all' ? $r->{rps}
            : ($s->{count} // 0) / ($r->{seconds} || 1);
    push @rows, [ $variant, $what, sprintf('%.0f', $rps),
                  map({ $s->{$_} // '-' } qw(p50_ms p99_ms p999_ms)),
                  $note // '' ];
    say sprintf "%-14s %-26s %9.0f/s  p50 %s  p99 %s  p99.9 %s  %s",
        $variant, $what, $rps, map({ $s->{$_} // '-' } qw(p50_ms p99_ms p999_ms)),
        $note // '';
    return $rps;
}

# --- 1. the ceiling ----------------------------------------------------------------

sub bench_ceiling {
    my $port = nginx_start('ceiling', 1, '', '',
        q(        location = /order { default_type application/json;
            return 200 '{"status":"sold_out"}'; }));
    my $r = run_load(port => $port, product => 'ceiling');
    $fig{ceiling} = row('ceiling', 'nginx return 200', $r, 200);
    nginx_stop('ceiling');
}

do "$ROOT/bench/peers.pl" or die "bench/peers.pl: $@ $!";

# --- 3. Flux-Gate ------------------------------------------------------------------

sub bench_flux {
    my ($w) = @_;
    my $name = "flux-${w}w";
    my $port = nginx_start($name, $w, "load_module $Module;", flux_http(),
                           $FluxServer);

    # sold out: the stock is 0, every answer is a 409
    my $p = uniq('soldout');
    init_at($port, $p, 0);
    my $r = run_load(port => $port, product => $p);
    $fig{"soldout_$w"} = row($name, 'sold-out path (409)', $r, 409);

    # accepted: stock never runs out, every 200 acknowledged by Kafka
    $p = uniq('accept');
    init_at($port, $p, 1_000_000_000);
    # each 200 waits for Kafka: more connections keep the gate busy
    $r = run_load(port => $port, product => $p, c => 2 * $CONNS);
    my $rps = $fig{"accept_$w"} = row($name, 'accept path (200), ' . 2 * $CONNS . ' conns', $r, 200);
    # latency at half that rate, open loop, once the worker has drained
    # the previous run's orders (it shares these CPUs with the gate)
    my $accepted = $r->{status}{200}{count} // 0;
    wait_until(120, sub {
        psql("select count(*) from orders where product_id = '$p'") >= $accepted });
    my $half = int($rps / 2) || 1;
    $r = run_load(port => $port, product => $p, rate => $half, c => 2 * $CONNS);
    $fig{"accept_half_p99_$w"} = $r->{status}{200}{p99_ms};
    row($name, "accept path at $half/s", $r, 200);

    # a flash sale: stock 1,000, hundreds of connections, the example
    # config's threshold
    nginx_stop($name);
    $port = nginx_start($name, $w, "load_module $Module;",
                        flux_http(threshold => '1000 burst=200'), $FluxServer);
    $p = uniq('flash');
    init_at($port, $p, 1000);
    $r = loadgen(port => $port, c => 500, d => 5, product => $p);
    my $total = $r->{responses} || 1;
    my %share = map { $_ => ($r->{status}{$_}{count} // 0) / $total }
                qw(200 302 409);
    my $note = sprintf('sold out in %.0f ms; 200 %.1f%%, 302 %.1f%%, 409 %.1f%%',
                       $r->{last_200_ms}, map { 100 * $share{$_} } qw(200 302 409));
    $fig{"flash_$w"} = $note;
    row($name, 'flash sale: all', $r, 'all', $note);
    for my $s (200, 302, 409) {
        row($name, "flash sale: $s", $r, $s) if $r->{status}{$s};
    }
    nginx_stop($name);
}

# --- 3b. the same three with wrk, one nginx worker -------------------------

sub wrk_run {
    my ($port, $product, $conns) = @_;
    my $out = `WRK_PRODUCT=$product wrk -t1 -c$conns -d$SECONDS -s $ROOT/bench/wrk/order.lua http://127.0.0.1:$port/order 2>&1`;
    my ($rps) = $out =~ /Requests\/sec:\s*([\d.]+)/;
    my ($p50, $p99) = $out =~ /wrk: p50 ([\d.]+) ms, p99 ([\d.]+) ms/;
    my ($non2xx) = $out =~ /Non-2xx or 3xx responses:\s*(\d+)/;
    die "wrk failed: $out" unless defined $rps;
    return { rps => $rps, p50 => $p50, p99 => $p99, non2xx => $non2xx // 0 };
}

sub wrk_row {
    my ($variant, $what, $w) = @_;
    push @rows, [ $variant, $what, sprintf('%.0f', $w->{rps}), $w->{p50},
                  $w->{p99}, '-', "wrk; non-2xx: $w->{non2xx}" ];
    say sprintf "%-14s %-26s %9.0f/s  p50 %s  p99 %s  (wrk)", $variant, $what,
        $w->{rps}, $w->{p50}, $w->{p99};
    return $w->{rps};
}

sub bench_wrk {
    my $port = nginx_start('wrk-ceiling', 1, '', '',
        q(        location = /order { default_type application/json;
            return 200 '{"status":"sold_out"}'; }));
    $fig{wrk_ceiling} = wrk_row('wrk', 'nginx return 200', wrk_run($port, 'x', $CONNS));
    nginx_stop('wrk-ceiling');

    $port = nginx_start('wrk-flux', 1, "load_module $Module;", flux_http(),
                        $FluxServer);
    my $p = uniq('wrk-soldout');
    init_at($port, $p, 0);
    $fig{wrk_soldout} = wrk_row('wrk', 'flux-1w sold-out (409)', wrk_run($port, $p, $CONNS));
    $p = uniq('wrk-accept');
    init_at($port, $p, 1_000_000_000);
    $fig{wrk_accept} = wrk_row('wrk', 'flux-1w accept (200), ' . 2 * $CONNS . ' conns',
                               wrk_run($port, $p, 2 * $CONNS));
    nginx_stop('wrk-flux');

    # the sold-out path without the shared-memory flag: Redis every time
    $port = nginx_start('wrk-flux', 1, "load_module $Module;",
                        flux_http() =~ s/fluxgate_sold_out_cache 1s/fluxgate_sold_out_cache off/r,
                        $FluxServer);
    $p = uniq('wrk-soldout-redis');
    init_at($port, $p, 0);
    $fig{wrk_soldout_redis} = wrk_row('wrk', 'flux-1w sold-out, flag off',
                                      wrk_run($port, $p, $CONNS));
    nginx_stop('wrk-flux');
}

# --- metrics on and off -----------------------------------------------------------

# The sold-out path of one worker with a fluxgate_metrics location (every
# answer counted in shared memory) and without one (nothing counted), runs
# alternating so that a busy machine weighs on both alike; the median of
# BENCH_METRICS_RUNS (3) each.  With the sold-out flag (no Redis: where
# counting weighs most) and without it (order.lua every time).  Besides
# req/s, the nginx worker's CPU time per answer, which other processes on
# the machine disturb far less.
sub bench_metrics {
    my $runs = $ENV{BENCH_METRICS_RUNS} // 3;
    my $tick_us = 1e6 / (`getconf CLK_TCK` || 100);
    for my $flag (1, 0) {
        my $http = $flag ? flux_http()
                 : flux_http() =~ s/fluxgate_sold_out_cache 1s/fluxgate_sold_out_cache off/r;
        my (%rps, %cpu, %port);
        $port{off} = nginx_start('metrics-off', 1, "load_module $Module;", $http,
                                 $FluxServer);
        $port{on} = nginx_start('metrics-on', 1, "load_module $Module;", $http,
                                $FluxServer . "        location = /metrics { fluxgate_metrics; }\n");
        my $p = uniq('metrics-soldout');
        init_at($port{off}, $p, 0);
        for my $i (1 .. $runs) {
            for my $m ('off', 'on') {
                my $t0 = nginx_worker_cpu_ticks("metrics-$m");
                my $r = run_load(port => $port{$m}, product => $p);
                my $t1 = nginx_worker_cpu_ticks("metrics-$m");
                my $n = ($r->{status}{409} || {})->{count} // 0;
                push @{ $rps{$m} }, $n / ($r->{seconds} || 1);
                push @{ $cpu{$m} }, $n ? ($t1 - $t0) * $tick_us / $n : 0;
            }
        }
        nginx_stop('metrics-off');
        nginx_stop('metrics-on');
        my $what = $flag ? 'sold-out (flag)' : 'sold-out (Redis)';
        for my $m ('off', 'on') {
            my $rps = median(@{ $rps{$m} });
            my $cpu = median(@{ $cpu{$m} });
            $fig{"metrics_${m}_$flag"} = $rps;
            $fig{"metrics_cpu_${m}_$flag"} = $cpu;
            my $note = sprintf('worker CPU %.2f us/answer; runs: %s', $cpu,
                               join(' ', map { sprintf '%.0f', $_ } @{ $rps{$m} }));
            push @rows, [ "metrics-$m", "flux-1w $what", sprintf('%.0f', $rps),
                          '-', '-', '-', $note ];
            say sprintf "%-14s %-26s %9.0f/s  %s", "metrics-$m", "flux-1w $what",
                $rps, $note;
        }
    }
}

sub median {
    my @v = sort { $a <=> $b } @_;
    return $v[$#v / 2];
}

# --- 4. memory of an nginx worker ------------------------------------------------

sub bench_memory {
    my $name = 'flux-mem';
    my $port = nginx_start($name, 1, "load_module $Module;", flux_http(),
                           $FluxServer);
    my $p = uniq('mem');
    init_at($port, $p, 1_000_000_000);
    loadgen(port => $port, c => $CONNS, n => 10_000, product => $p);
    my $rss1 = nginx_worker_rss_kb($name);
    my $r = loadgen(port => $port, c => $CONNS, n => $MEM_N - 10_000,
                    product => $p);
    my $rss2 = nginx_worker_rss_kb($name);
    my $delta = ($rss2 - $rss1) / 1024;
    $fig{mem_delta_mb} = $delta;
    push @rows, [ 'memory', "nginx worker RSS 10k -> $MEM_N orders", '-', '-',
                  '-', '-', sprintf('%.1f MB -> %.1f MB (%+.1f MB)',
                                    $rss1 / 1024, $rss2 / 1024, $delta) ];
    say "memory: nginx worker RSS $rss1 kB after 10,000, $rss2 kB after $MEM_N";
    nginx_stop($name);
}

# --- 5. the worker drain -----------------------------------------------------------

sub bench_drain {
    my $n = $QUICK ? 50_000 : 200_000;
    my $out = `bash $ROOT/bench/drain.sh -n $n $DIR 2>&1`;
    print $out;
    my ($batched) = $out =~ /batched:\s*([\d.]+)\s*orders\/s/;
    my ($single)  = $out =~ /per-message:\s*([\d.]+)\s*orders\/s/;
    my ($rss)     = $out =~ /worker rss:\s*(.+)$/m;
    $fig{drain} = $batched;
    $fig{drain_single} = $single;
    $fig{drain_rss} = $rss;
    push @rows, [ 'drain', "$n orders Kafka -> PostgreSQL, batched",
                  $batched // '?', '-', '-', '-', $rss // '' ];
    push @rows, [ 'drain', 'one transaction per message', $single // '?',
                  '-', '-', '-', '' ];
}

# --- the table ------------------------------------------------------------------

# --- 6. the fleet: worker processes of one group, Redis masters ------------------
#
# On this box every process shares the same two cores, so a second worker
# process or a second Redis master adds no CPU: what these show is the
# shape (the partitions spread over the group, the work spread over the
# masters, nothing serialised behind one process), not the peak a fleet of
# machines reaches.

sub bench_fleet {
    my $n = $QUICK ? 50_000 : 200_000;
    for my $w (1, 2) {
        my $out = `bash $ROOT/bench/drain.sh -B -w $w -n $n $DIR 2>&1`;
        my ($rate, $steady) = $out =~ /batched:\s+(\d+) orders\/s.*steady (\d+)/;
        say "fleet drain with $w worker processes: " . ($rate // "failed:\n$out");
        $fig{"fleet_drain_$w"} = $rate;
        push @rows, [ 'fleet', "drain $n orders, $w worker process" . ($w > 1 ? 'es' : '')
                      . ' in one group', $rate // '?', '-', '-', '-',
                      defined $steady ? "steady $steady/s" : 'failed' ];
    }
    my $r = ratio($fig{fleet_drain_2}, $fig{fleet_drain_1});
    say sprintf "fleet drain, 2 / 1 worker processes: %.2fx", $r if defined $r;
    bench_fleet_redis();
}

# The gate (2 nginx workers) on the stack's one Redis and on a Redis Cluster
# of 3 masters (one replica each, FluxGate::Cluster), with the orders
# spread over 6 products that the cluster spreads over its masters.
# Sold-out: stock 0, the sold-out flag off, so every 409 is an order.lua
# run in Redis; accept: every 200 acknowledged by Kafka.
sub bench_fleet_redis {
    require FluxGate::Cluster;
    my $c = FluxGate::Cluster::cluster_start(masters => 3, node_timeout => 5000);
    my $np = 6;
    for my $v ([ '1 Redis', "127.0.0.1:$ENV{REDIS_PORT}", 1 ],
               [ '3 masters', FluxGate::Cluster::cluster_directive($c), 3 ]) {
        my ($label, $addr, $n) = @$v;
        (my $http = flux_http()) =~ s/fluxgate_redis 127\.0\.0\.1:\S+;/fluxgate_redis $addr;/;
        $http =~ s/fluxgate_sold_out_cache 1s;//;
        my $name = "fleet-redis-$n";
        my $port = nginx_start($name, 2, "load_module $Module;", $http, $FluxServer);
        my %masters;
        my $prefix = uniq('fr-soldout');
        for my $i (0 .. $np - 1) {
            init_at($port, "$prefix-$i", 0);
            $masters{ FluxGate::Cluster::cluster_master_of($c, "fg:{$prefix-$i}:stock") }++
                if $n > 1;
        }
        my $spread = $n > 1 ? join('/', map { $masters{$_} } sort keys %masters) : $np;
        my $r = run_load(port => $port, product => $prefix, products => $np);
        $fig{"fleet_soldout_$n"} = row('fleet', "sold-out path, $label, $np products", $r, 409,
                                       "products per master: $spread; no sold-out flag");
        $prefix = uniq('fr-accept');
        init_at($port, "$prefix-$_", 1_000_000_000) for 0 .. $np - 1;
        $r = run_load(port => $port, product => $prefix, products => $np, c => 2 * $CONNS);
        $fig{"fleet_accept_$n"} = row('fleet', "accept path, $label, $np products", $r, 200,
                                      "products per master: $spread");
        nginx_stop($name);
    }
    FluxGate::Cluster::cluster_stop($c);
    for my $k (qw(soldout accept)) {
        my $r = ratio($fig{"fleet_${k}_3"}, $fig{"fleet_${k}_1"});
        say sprintf "fleet %s, 3 masters / 1 Redis: %.2fx", $k, $r if defined $r;
    }
}

sub ratio { defined $_[0] && defined $_[1] && $_[1] > 0 ? $_[0] / $_[1] : undef }

sub verdict {
    my ($value, $target, $fmt, $ok) = @_;
    return sprintf("$fmt (target %s): n/a", 0, $target) unless defined $value;
    return sprintf("$fmt (target %s): %s", $value, $target,
                   $ok ? 'met' : 'NOT met');
}

sub report {
    my @ratios;
    my $r;
    $r = ratio($fig{soldout_1}, $fig{peer});
    push @ratios, verdict($r, '>= 2x', 'sold-out path, 1 worker / OpenResty peer: %.2fx',
                          defined $r && $r >= 2);
    $r = ratio($fig{soldout_1}, $fig{ceiling});
    push @ratios, verdict(defined $r ? 100 * $r : undef, '>= 60%',
                          'sold-out path, 1 worker / nginx return 200: %.0f%%',
                          defined $r && $r >= 0.6);
    $r = ratio($fig{soldout_2}, $fig{ceiling});
    push @ratios, sprintf('sold-out path, 2 workers / nginx return 200: %.0f%%', 100 * ($r // 0));
    push @ratios, sprintf('with wrk, 1 worker: sold-out %.0f/s (%.0f%% of return 200 at %.0f/s), '
                          . 'sold-out with the flag off %.0f/s (%.0f%%), accept %.0f/s',
                          $fig{wrk_soldout} // 0, 100 * (ratio($fig{wrk_soldout}, $fig{wrk_ceiling}) // 0),
                          $fig{wrk_ceiling} // 0, $fig{wrk_soldout_redis} // 0,
                          100 * (ratio($fig{wrk_soldout_redis}, $fig{wrk_ceiling}) // 0),
                          $fig{wrk_accept} // 0);
    for my $flag (1, 0) {
        $r = ratio($fig{"metrics_on_$flag"}, $fig{"metrics_off_$flag"});
        push @ratios, verdict(defined $r ? 100 * (1 - $r) : undef, '< 3%',
                              'sold-out path' . ($flag ? ' (flag)' : ' (Redis)')
                              . ', loss with fluxgate_metrics on: %.1f%%',
                              defined $r && $r > 0.97);
        my $c = ratio($fig{"metrics_cpu_on_$flag"}, $fig{"metrics_cpu_off_$flag"});
        push @ratios, sprintf('sold-out path%s, nginx worker CPU per answer with '
                              . 'fluxgate_metrics on: %+.1f%%', $flag ? ' (flag)' : ' (Redis)',
                              100 * (($c // 1) - 1));
    }
    push @ratios, verdict($fig{accept_1}, '>= 20,000/s',
                          'accept path, acknowledged orders/s, 1 worker: %.0f',
                          ($fig{accept_1} // 0) >= 20000);
    push @ratios, sprintf('accept path, acknowledged orders/s, 2 workers: %.0f', $fig{accept_2} // 0);
    push @ratios, verdict($fig{accept_half_p99_1}, '< 10 ms',
                          'accept path p99 at half that rate: %s ms',
                          defined $fig{accept_half_p99_1} && $fig{accept_half_p99_1} < 10);
    push @ratios, verdict($fig{drain}, '>= 20,000/s', 'worker drain: %s orders/s',
                          ($fig{drain} // 0) >= 20000);
    $r = ratio($fig{drain}, $fig{drain_single});
    push @ratios, verdict($r, '>= 10x', 'worker drain, batched / per message: %.1fx',
                          defined $r && $r >= 10);
    push @ratios, verdict($fig{mem_delta_mb}, '<= 10 MB',
                          "nginx worker RSS growth 10k -> $MEM_N orders: %+.1f MB",
                          defined $fig{mem_delta_mb} && $fig{mem_delta_mb} <= 10);
    push @ratios, "worker daemon RSS during the drain: " . ($fig{drain_rss} // 'n/a');
    push @ratios, sprintf('Redis EVALSHA of the gate script: %.0f/s, pipelined %.0f/s',
                          $fig{redis} // 0, $fig{redis_pipelined} // 0);

    my $date = strftime('%Y-%m-%d', localtime);
    my $cpu = `grep -m1 'model name' /proc/cpuinfo`;
    $cpu =~ s/.*:\s*//; chomp $cpu;
    my $nproc = `nproc`; chomp $nproc;
    my %v = (
        nginx    => (`nginx -v 2>&1` =~ m{nginx/(\S+)})[0],
        redis    => (`redis-server --version` =~ /v=(\S+)/)[0],
        postgres => (`psql -V` =~ /(\d+\.\d+)/)[0],
        kafka    => (`grep -m1 '<kafka.version>' $ROOT/scripts/pom.xml` =~ />(.+)</)[0],
        librdkafka => `pkg-config --modversion rdkafka`,
        hiredis  => `pkg-config --modversion hiredis`,
        openresty_lua => (`dpkg-query -W -f='\${Version}' libnginx-mod-http-lua` // ''),
    );
    chomp %v;
    my $versions = join ', ', map { "$_ $v{$_}" } sort keys %v;

    my $md = "# Flux-Gate benchmark, $date\n\n"
           . "Machine: $nproc CPUs, $cpu. Versions: $versions.\n"
           . "Client: build/fg-loadgen on the same machine (loopback), "
           . "$CONNS keep-alive connections, ${SECONDS}s per run unless noted; "
           . "client and server share the CPUs.\n\n"
           . "| variant | what | req/s | p50 ms | p99 ms | p99.9 ms | note |\n"
           . "| --- | --- | ---: | ---: | ---: | ---: | --- |\n"
           . join('', map { '| ' . join(' | ', @$_) . " |\n" } @rows)
           . "\n## Ratios and targets\n\n"
           . join('', map { "- $_\n" } @ratios)
           . "\n![throughput and latency]($date.png)\n";
    print "\n$md";

    my $dir = "$ROOT/bench/results";
    make_path($dir);
    open my $fh, '>', "$dir/$date.md" or die; print $fh $md; close $fh;
    open $fh, '>', "$dir/$date.tsv" or die;
    print $fh join("\t", qw(variant what rps p50_ms p99_ms p999_ms note)), "\n";
    print $fh join("\t", @$_), "\n" for @rows;
    close $fh;
    chart("$dir/$date");
    system("cp $dir/$date.md $dir/latest.md");
    say "written $dir/$date.md, .tsv, .png";
}

sub chart {
    my ($base) = @_;
    my @plot = grep { $_->[2] =~ /^\d/ && $_->[0] ne 'drain' && $_->[4] ne '-' } @rows;
    open my $fh, '>', "$base.chart.dat" or die;
    my $i = 0;
    for (@plot) {
        (my $label = "$_->[0] $_->[1]") =~ s/"/'/g;
        printf $fh "%d \"%s\" %s %s\n", $i++, $label, $_->[2], $_->[4];
    }
    close $fh;
    open my $gp, '|-', 'gnuplot' or return;
    print $gp <<"EOF";
set terminal png size 1400,900 font ",10"
set output "$base.png"
set multiplot layout 2,1 title "Flux-Gate benchmark"
set style fill solid 0.8
set boxwidth 0.7
set xtics rotate by -35 left
set grid ytics
set bmargin 10
set rmargin 14
set ylabel "requests/s"
plot "$base.chart.dat" using 1:3:xtic(2) with boxes notitle lc rgb "#3070b0"
set ylabel "p99 latency (ms)"
set logscale y
plot "$base.chart.dat" using 1:4:xtic(2) with boxes notitle lc rgb "#b05030"
unset multiplot
EOF
    close $gp;
    unlink "$base.chart.dat";
}

# --- run -------------------------------------------------------------------------

say "stack in $DIR; ${SECONDS}s per run, $CONNS connections";
# BENCH_ONLY="metrics wrk": only these, printed and not written to results/
my %Only = map { $_ => 1 } split /[\s,]+/, $ENV{BENCH_ONLY} // '';
sub want { !%Only || $Only{$_[0]} }

bench_ceiling() if want('ceiling');
bench_redis() if want('redis');
bench_peer() if want('peer');
bench_flux(1) if want('flux');
bench_flux(2) if want('flux');
bench_wrk() if want('wrk');
bench_metrics() if want('metrics');
bench_memory() if want('memory');
bench_drain() if want('drain');
# the fleet part only when asked for: BENCH_ONLY=fleet
bench_fleet() if %Only && want('fleet');
if (%Only) {
    print join('', map { '| ' . join(' | ', @$_) . " |\n" } @rows);
    for my $flag (1, 0) {
        my $r = ratio($fig{"metrics_on_$flag"}, $fig{"metrics_off_$flag"});
        printf "metrics on / off, sold-out %s: req/s %.1f%%, worker CPU per answer %.1f%%\n",
            $flag ? 'flag' : 'Redis', 100 * $r,
            100 * ratio($fig{"metrics_cpu_on_$flag"}, $fig{"metrics_cpu_off_$flag"})
            if defined $r;
    }
} else {
    report();
}
