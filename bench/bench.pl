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
#                without one (counting on and off), in interleaved pairs;
#                also written to results/<date>-metrics-overhead.md
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
our $Load_start; # /proc/loadavg when the run began
our @Others_start; # other_stacks() then
our $Machine = '';  # machine_share()'s verdict, once report() made it

# the Kafka brokers and PostgreSQL servers on this machine that are not the
# bench stack's (their command lines name their own directories): another
# stack sharing the CPUs, which load average alone cannot tell from ours
sub other_stacks {
    my @found;
    for my $cmd (glob '/proc/[0-9]*/cmdline') {
        open my $fh, '<', $cmd or next;
        my $line = do { local $/; <$fh> } // '';
        $line =~ tr/\0/ /;
        next unless $line =~ /kafka\.Kafka |bin\/postgres -D /;
        next if index($line, $DIR) >= 0;
        push @found, $line =~ /kafka/ ? 'kafka' : 'postgres';
    }
    return @found;
}

# the "cpu" line of /proc/stat: user nice system idle iowait irq softirq steal
our @Stat_start;
sub cpu_stat { return (split ' ', `head -1 /proc/stat`)[1 .. 8] }

# the share of the machine's CPU time the host took (steal) since the start
sub steal_share {
    my @end = cpu_stat();
    my @d = map { $end[$_] - ($Stat_start[$_] // 0) } 0 .. 7;
    my $total = 0;
    $total += $_ for @d;
    return $total ? 100 * $d[7] / $total : 0;
}

# the machine line's verdict: quiet, or shared and with what
sub machine_share {
    my ($load_end) = @_;
    my @end = other_stacks();
    my $before = $ENV{BENCH_LOAD_BEFORE} // '?';
    my $nproc = `nproc`; chomp $nproc;
    my $steal = sprintf('the host took %.1f%% of the CPU time as steal during '
                        . 'the run', steal_share());
    my $others = @Others_start + @end;
    if (!$others && $before ne '?' && $before < $nproc) {
        return "quiet: no other stack's Kafka or PostgreSQL on the machine at "
             . "the start or the end, load average $before before the bench stack "
             . "started (the build's), $Load_start once it was up, $load_end at the "
             . "end (the bench's own); $steal";
    }
    my $what = $others ? sprintf('%d other Kafka and %d other PostgreSQL processes '
                            . 'at the start, %d and %d at the end',
                            scalar(grep { $_ eq 'kafka' } @Others_start),
                            scalar(grep { $_ eq 'postgres' } @Others_start),
                            scalar(grep { $_ eq 'kafka' } @end),
                            scalar(grep { $_ eq 'postgres' } @end))
                  : 'no other stack seen';
    return "SHARED: load average $before before the bench stack started, $what "
         . "($Load_start once it was up, $load_end at the end), so absolute figures "
         . "are noisy; the ratios compare runs made minutes apart in this one run; "
         . $steal;
}
our (@curves, @stages, @flash);   # filled by bench/questions.pl
our %fig;        # named figures for the ratios

sub say { print "bench: @_\n" }

# --- nginx instances of our own ----------------------------------------------

our %Nginx;     # name -> {root, port}

# nginx_start(name, workers, main, http, server, {log => 'buffer=...'}):
# log => the instance writes an access log (combined, with those options)
# instead of none
sub nginx_start {
    my ($name, $workers, $main, $http, $server, $o) = @_;
    my $access = $o && $o->{log}
        ? "access_log $DIR/nginx-$name/logs/access.log combined $o->{log};"
        : 'access_log off;';
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
events { worker_connections 8192; multi_accept on; }
http {
    $access
    keepalive_requests 100000;
    keepalive_timeout 30s;
    client_body_temp_path $root/tmp/body;
    proxy_temp_path $root/tmp/proxy;
    fastcgi_temp_path $root/tmp/fastcgi;
    uwsgi_temp_path $root/tmp/uwsgi;
    scgi_temp_path $root/tmp/scgi;
$http
    server {
        listen 127.0.0.1:$port reuseport backlog=4096;
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
do "$ROOT/bench/questions.pl" or die "bench/questions.pl: $@ $!";
do "$ROOT/bench/fair.pl" or die "bench/fair.pl: $@ $!";

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

# --- the waiting room's status poll ---------------------------------------------

# GET /queue/status of one ticket in line, as every queued user polls it:
# one worker, wrk, keep-alive.  Its cost per poll: the EVALSHA Redis ran
# per answer (INFO commandstats), and the nginx worker's CPU time.
sub bench_queue {
    my $secret = "$DIR/bench-queue.secret";
    system("head -c 48 /dev/urandom | base64 -w0 > $secret") == 0 or die;
    my $http = flux_http(threshold => 1) . "    fluxgate_queue_secret $secret;\n";
    my $port = nginx_start('queue', 1, "load_module $Module;", $http,
                           $FluxServer . "        location = /queue/status { fluxgate_queue_status; }\n");
    my $p = uniq('queue');
    init_at($port, $p, 1000);
    my $ticket;
    for my $i (1 .. 3) {
        my $res = http_post("http://127.0.0.1:$port/order",
                            qq({"productId":"$p","userId":"u$i"}),
                            { 'X-Idempotency-Key' => uniq('k') });
        $ticket = (eval { JSON::PP->new->decode($res->{content}) } || {})->{ticket}
            if $res->{status} == 302;
    }
    die "bench queue: no ticket\n" unless $ticket;
    my $evalsha = sub {
        my ($line) = grep { /^cmdstat_evalsha:/ } redis('INFO', 'commandstats');
        return $line && $line =~ /calls=(\d+)/ ? $1 : 0;
    };
    my $tick_us = 1e6 / (`getconf CLK_TCK` || 100);
    my ($e0, $c0) = ($evalsha->(), nginx_worker_cpu_ticks('queue'));
    my $out = `wrk -t1 -c$CONNS -d$SECONDS --latency 'http://127.0.0.1:$port/queue/status?productId=$p&ticket=$ticket' 2>&1`;
    my ($e1, $c1) = ($evalsha->(), nginx_worker_cpu_ticks('queue'));
    my ($rps) = $out =~ /Requests\/sec:\s*([\d.]+)/;
    my ($total) = $out =~ /(\d+) requests in/;
    my ($p50) = $out =~ /^\s*50%\s+([\d.]+\w+)/m;
    my ($p99) = $out =~ /^\s*99%\s+([\d.]+\w+)/m;
    my ($non2xx) = $out =~ /Non-2xx or 3xx responses:\s*(\d+)/;
    die "wrk failed: $out" unless $rps && $total;
    nginx_stop('queue');
    $fig{queue_status} = $rps;
    $fig{queue_evalsha} = ($e1 - $e0) / $total;
    $fig{queue_cpu} = ($c1 - $c0) * $tick_us / $total;
    my $note = sprintf('%.2f EVALSHA and %.1f us of worker CPU per poll; wrk; non-2xx: %d',
                       $fig{queue_evalsha}, $fig{queue_cpu}, $non2xx // 0);
    push @rows, [ 'queue', 'flux-1w GET /queue/status', sprintf('%.0f', $rps),
                  $p50 // '-', $p99 // '-', '-', $note ];
    say sprintf "%-14s %-26s %9.0f/s  p50 %s  p99 %s  %s", 'queue',
        'flux-1w GET /queue/status', $rps, $p50 // '-', $p99 // '-', $note;
}

# --- metrics on and off -----------------------------------------------------------

# The sold-out path of one worker with a fluxgate_metrics location (every
# answer counted in shared memory) and without one (nothing counted), with
# the sold-out flag (no Redis: where counting weighs most) and without it
# (order.lua every time).  Other engineers' builds and tests share this
# machine, so a single off run against a single on run says little: both
# instances run side by side and are measured in BENCH_METRICS_PAIRS (10)
# interleaved pairs of BENCH_METRICS_SECONDS (5) runs, in turns off-on and
# on-off so that neither always goes first, after a warm-up run of each.  A
# pair's two runs are seconds apart and see about the same machine: the
# figure is the median over the pairs of on / off, for req/s and for the
# nginx worker's CPU time (utime + stime from /proc) per answer.  Then one
# more run of "on" under perf (when it is installed) gives the share of the
# worker's CPU samples in the counting functions themselves: an upper bound
# of what counting costs that the machine's load does not blur.  Printed,
# and written to bench/results/<date>-metrics-overhead.md.
sub bench_metrics {
    my $pairs = $ENV{BENCH_METRICS_PAIRS} // 10;
    my $secs = $ENV{BENCH_METRICS_SECONDS} // ($QUICK ? 3 : 5);
    my $tick_us = 1e6 / (`getconf CLK_TCK` || 100);
    my @md;
    for my $flag (1, 0) {
        my $http = $flag ? flux_http()
                 : flux_http() =~ s/fluxgate_sold_out_cache 1s/fluxgate_sold_out_cache off/r;
        my $what = $flag ? 'sold-out (flag)' : 'sold-out (Redis)';
        my (%rps, %cpu, %port, @rps_ratio, @cpu_ratio);
        $port{off} = nginx_start('metrics-off', 1, "load_module $Module;", $http,
                                 $FluxServer);
        $port{on} = nginx_start('metrics-on', 1, "load_module $Module;", $http,
                                $FluxServer . "        location = /metrics { fluxgate_metrics; }\n");
        my $p = uniq('metrics-soldout');
        init_at($port{off}, $p, 0);
        # the flag up, connections and Redis warm in both
        run_load(port => $port{$_}, product => $p, d => 2) for 'off', 'on';
        push @md, "### $what\n\n| pair | order | off req/s | on req/s | on/off req/s "
                  . "| off CPU us/answer | on CPU us/answer | on/off CPU |\n"
                  . "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n";
        for my $i (1 .. $pairs) {
            my @order = $i % 2 ? ('off', 'on') : ('on', 'off');
            my (%r, %c);
            for my $m (@order) {
                my $t0 = nginx_worker_cpu_ticks("metrics-$m");
                my $r = run_load(port => $port{$m}, product => $p, d => $secs);
                my $t1 = nginx_worker_cpu_ticks("metrics-$m");
                my $n = ($r->{status}{409} || {})->{count} // 0;
                die "metrics-$m: no 409 answers: $r->{raw}" unless $n;
                $r{$m} = $n / ($r->{seconds} || 1);
                $c{$m} = ($t1 - $t0) * $tick_us / $n;
                push @{ $rps{$m} }, $r{$m};
                push @{ $cpu{$m} }, $c{$m};
            }
            push @rps_ratio, $r{on} / $r{off};
            push @cpu_ratio, $c{on} / $c{off};
            my $line = sprintf '%d | %s | %.0f | %.0f | %.1f%% | %.2f | %.2f | %.1f%%',
                $i, "@order", $r{off}, $r{on}, 100 * $rps_ratio[-1],
                $c{off}, $c{on}, 100 * $cpu_ratio[-1];
            push @md, "| $line |\n";
            say sprintf "metrics %-16s pair %s", $what, $line =~ s/ \| /  /gr;
        }
        my ($share, $samples) = metrics_perf_share('metrics-on', $port{on}, $p, $secs);
        nginx_stop('metrics-off');
        nginx_stop('metrics-on');
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
        $fig{"metrics_ratio_$flag"} = median(@rps_ratio);
        $fig{"metrics_cpu_ratio_$flag"} = median(@cpu_ratio);
        $fig{"metrics_spread_$flag"} = half_iqr(@rps_ratio);
        $fig{"metrics_cpu_spread_$flag"} = half_iqr(@cpu_ratio);
        my $sum = sprintf('on / off, %s, median of %d pairs: req/s %.1f%% '
                          . '(pairs +-%.1f%%, %.1f%% .. %.1f%%), worker CPU per answer '
                          . '%.1f%% (pairs +-%.1f%%, %.1f%% .. %.1f%%)', $what, $pairs,
                          map { 100 * $_ } median(@rps_ratio), half_iqr(@rps_ratio),
                          (sort { $a <=> $b } @rps_ratio)[0, -1],
                          median(@cpu_ratio), half_iqr(@cpu_ratio),
                          (sort { $a <=> $b } @cpu_ratio)[0, -1]);
        say "metrics $sum";
        push @md, "\n$sum\n\n";
        if (defined $share) {
            $fig{"metrics_perf_$flag"} = $share;
            my $line = sprintf('perf, one more run of "on": %.2f%% of the nginx '
                               . "worker's %s CPU samples in ngx_fluxgate_metrics_* "
                               . '(outcome, count, observe, in_flight, product, state)',
                               $share, $samples);
            say "metrics $what: $line";
            push @md, "- $line\n";
        }
        push @md, '- ' . metrics_verdict($flag) . "\n\n";
    }
    my $date = strftime('%Y-%m-%d', localtime);
    my $nproc = `nproc`; chomp $nproc;
    my $load = `cut -d' ' -f1-3 /proc/loadavg`; chomp $load;
    my $file = "$ROOT/bench/results/$date-metrics-overhead.md";
    make_path("$ROOT/bench/results");
    open my $fh, '>', $file or die "$file: $!";
    print $fh "# fluxgate_metrics on and off, $date\n\n"
            . "`BENCH_ONLY=metrics make bench`: one nginx worker, $CONNS connections, "
            . "${secs}s per run, build/fg-loadgen on the same $nproc CPUs; "
            . "load average $load at the end.  Off and on run in interleaved pairs "
            . "(turns off-on, on-off); each figure is the median over the pairs of "
            . "on / off; +-x% is half the interquartile range of the pairs' ratios, "
            . "the noise of one pair.  CPU is the nginx worker's utime + stime per "
            . "answer.\n\n"
            . join('', @md);
    close $fh;
    say "written $file";
}

sub median {
    my @v = sort { $a <=> $b } @_;
    return @v % 2 ? $v[$#v / 2] : ($v[@v / 2 - 1] + $v[@v / 2]) / 2;
}

# half the interquartile range: the spread of the middle half
sub half_iqr {
    my @v = sort { $a <=> $b } @_;
    my $h = int(@v / 2);
    return (median(@v[-$h .. -1]) - median(@v[0 .. $h - 1])) / 2;
}

# "< 3% loss": met, NOT met, or not to be told apart from the noise when the
# pairs scatter more than the target's width
sub metrics_verdict {
    my ($flag) = @_;
    my $r = $fig{"metrics_ratio_$flag"} // return 'n/a';
    my $spread = $fig{"metrics_spread_$flag"};
    my $v = $spread > 0.03 ? sprintf('inconclusive (pairs scatter +-%.1f%%, '
                                     . 'wider than the 3%% to resolve)', 100 * $spread)
          : $r > 0.97 ? 'met' : 'NOT met';
    my $perf = $fig{"metrics_perf_$flag"};
    $v .= sprintf('; the counting functions take %.2f%% of the worker\'s CPU (perf)',
                  $perf) if defined $perf;
    return sprintf('sold-out path%s, loss of req/s with fluxgate_metrics on '
                   . '(median of pairs): %.1f%% (target < 3%%): %s',
                   $flag ? ' (flag)' : ' (Redis)', 100 * (1 - $r), $v);
}

# the share (%) of an nginx's worker CPU samples spent in the functions that
# count (not the clock reads: $fluxgate_redis_time needs them either way),
# sampled by perf during one run; () when perf is missing or fails
sub metrics_perf_share {
    my ($name, $port, $product, $secs) = @_;
    return () if system('command -v perf >/dev/null 2>&1') != 0;
    my $master = `cat $Nginx{$name}{root}/logs/nginx.pid`;
    chomp $master;
    my ($w) = nginx_workers($master);
    my $data = "$DIR/perf-$name.data";
    my $h = loadgen_start(port => $port, c => $CONNS, d => $secs + 2,
                          product => $product);
    sleep 1;
    # a sample every 20 us of the worker's CPU time: frequency mode (-F)
    # takes next to no samples on this virtual machine under load
    system("perf record -q -e task-clock -c 20000 -p $w -o $data -- sleep $secs >/dev/null 2>&1");
    loadgen_wait($h);
    my $out = `perf report -i $data --no-children --sort symbol -g none --percent-limit 0 --stdio 2>/dev/null`;
    unlink $data;
    my ($ns) = $out =~ /^# Event count \(approx\.\): (\d+)/m or return ();
    my $samples = int($ns / 20000);
    my $share = 0;
    $share += $1 while $out =~ /([\d.]+)%\s+\[\.\]\s+ngx_fluxgate_metrics_(?:outcome|count|observe|in_flight|product|state)\b/g;
    return ($share, $samples);
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
    # the questions of issue 12 first, each with its goal
    $r = ratio($fig{so_shipped}, $fig{so_peer});
    push @ratios, sprintf('sold-out path, like for like (no cache either side): '
                          . 'Flux-Gate as shipped / OpenResty peer = %.2fx (%.0f vs %.0f/s)',
                          $r // 0, $fig{so_shipped} // 0, $fig{so_peer} // 0) if defined $r;
    $r = ratio($fig{so_flag}, $fig{so_peer_dict});
    push @ratios, sprintf('sold-out path, both with a shared-memory flag: '
                          . 'Flux-Gate (fluxgate_sold_out_cache) / peer (lua_shared_dict) = %.2fx (%.0f vs %.0f/s)',
                          $r // 0, $fig{so_flag} // 0, $fig{so_peer_dict} // 0) if defined $r;
    $r = ratio($fig{so_shipped}, $fig{so_redis});
    my $rounds = join ', ', map { sprintf '%.2f', $_ } @{ $fig{so_redis_rounds} || [] };
    push @ratios, verdict($r, '>= 0.9', 'Flux-Gate as shipped / Redis capacity for the same script '
                          . "(redis-benchmark EVALSHA, $CONNS connections): %.2f "
                          . "(medians; round by round $rounds)",
                          defined $r && $r >= 0.9) if defined $r;
    $r = ratio($fig{so_shipped}, $fig{so_ceiling});
    push @ratios, sprintf('Flux-Gate as shipped / nginx return 409 with the same settings: %.0f%%; '
                          . 'with the flag: %.0f%%', 100 * ($r // 0),
                          100 * (ratio($fig{so_flag}, $fig{so_ceiling}) // 0)) if defined $r;
    push @ratios, sprintf('accept path (shipped config, acks=all), closed-loop maximum: %.0f acknowledged orders/s',
                          $fig{accept_max}) if defined $fig{accept_max};
    push @ratios, sprintf("accept path p99 at half that rate ($fig{accept_half_rate}/s, open loop, "
                          . 'from each request\'s due time to its answer\'s arrival): %s ms '
                          . '(no absolute target: the gate\'s share below replaces it)',
                          $fig{accept_half_p99})
        if defined $fig{accept_half_p99};
    push @ratios, verdict($fig{share_p99}, '<= 1.2',
                          "the gate's share at half the maximum ($fig{accept_half_rate}/s): the gate's "
                          . 'p50 / the bare client\'s (fg-bare: the same EVALSHA and produce, the '
                          . sprintf('gate\'s producer settings, no nginx) %.2f, p99 / p99 %%.2f '
                                    . '(medians of ' . ($main::Pairs // 5) . ' pairs: gate p50/p99 vs bare p50/p99: %s)',
                                    $fig{share_p50} // 0, $fig{share_pairs} // ''),
                          defined $fig{share_p99} && $fig{share_p99} <= 1.2
                          && $fig{share_p50} <= 1.2 && $fig{share_ok})
        if defined $fig{share_p99};
    if (my $in = $fig{inside}) {
        push @ratios, verdict($in->{up_p99}, '<= 1 ms',
                              'time inside nginx beyond Redis and Kafka at half the maximum, p99 '
                              . 'per order (fg-loadgen\'s wire time less $fluxgate_redis_time and '
                              . '$fluxgate_kafka_time, which the module logs in whole ms): '
                              . sprintf('between %s and %%s ms (p50 %s to %s; %d orders; '
                                        . '$request_time less both: p99 %s ms)',
                                        $in->{low_p99} // '?', $in->{low_p50} // '?',
                                        $in->{up_p50} // '?', $in->{n} // 0,
                                        $in->{req_p99} // '?'),
                              defined $in->{up_p99} && $in->{up_p99} <= 1);
    }
    if (defined $fig{stage_request_p99}) {
        push @ratios, sprintf('where the 50%% run\'s time went (p50 / p99 ms, from the access log): '
                              . 'whole request in nginx %s / %s, order.lua round trip %s / %s, '
                              . 'Kafka delivery %s / %s; at the client %s / %s',
                              map { $_ // '-' } @fig{qw(stage_request_p50 stage_request_p99
                              stage_redis_p50 stage_redis_p99 stage_kafka_p50 stage_kafka_p99
                              accept_half_p50 accept_half_p99)});
    }
    # the metrics comparison, when run (BENCH_ONLY=metrics)
    for my $flag (1, 0) {
        next unless defined $fig{"metrics_ratio_$flag"};
        push @ratios, metrics_verdict($flag);
        my $c = $fig{"metrics_cpu_ratio_$flag"};
        push @ratios, sprintf('sold-out path%s, nginx worker CPU per answer with '
                              . 'fluxgate_metrics on: %+.1f%%', $flag ? ' (flag)' : ' (Redis)',
                              100 * (($c // 1) - 1));
    }
    for my $f (@main::flash) {
        push @ratios, sprintf('flash sale, stock %d, 500 connections, shipped config: %s %.2f s '
                              . '(%d sold); %.1f%% of all answers sold_out within 10 ms '
                              . '(%.1f%% of the sold_out answers); %.0f acknowledged orders/s',
                              $f->{stock}, $f->{sold_out} ? 'sold out in' : 'NOT sold out; last 200 at',
                              @{$f}{qw(time_s sold share_fast share_fast_of_sold_out ack_rps)});
    }
    # the older parts, when run (BENCH_ONLY)
    push @ratios, verdict($fig{drain}, '>= 20,000/s', 'worker drain: %s orders/s',
                          ($fig{drain} // 0) >= 20000) if defined $fig{drain};
    push @ratios, verdict($fig{mem_delta_mb}, '<= 10 MB',
                          "nginx worker RSS growth 10k -> $MEM_N orders: %+.1f MB",
                          $fig{mem_delta_mb} <= 10) if defined $fig{mem_delta_mb};
    push @ratios, "worker daemon RSS during the drain: $fig{drain_rss}"
        if defined $fig{drain_rss};
    push @ratios, sprintf('waiting room: GET /queue/status %.0f/s on 1 worker, '
                          . '%.2f EVALSHA per poll', $fig{queue_status},
                          $fig{queue_evalsha} // 0) if defined $fig{queue_status};
    # the fair sale (bench/fair.pl), each part's goals as it wrote them
    push @ratios, @{ $fig{line_goals} } if $fig{line_goals};
    push @ratios, @{ $fig{flood_goals} } if $fig{flood_goals};
    push @ratios, @{ $fig{pow_goals} } if $fig{pow_goals};

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
    my $load_end = (split ' ', `cat /proc/loadavg`)[0];

    my $stages = '';
    if (@main::stages) {
        $stages = "\n## Where an accepted order's time goes (50% run)\n\n"
                . "| stage | p50 ms | p99 ms | samples |\n| --- | ---: | ---: | ---: |\n"
                . join('', map { "| $_->[0] | $_->[1] | $_->[2] | $_->[3] |\n" } @main::stages);
    }
    my $curves = '';
    if (@main::curves) {
        $curves = "\n## Accept path latency percentiles (open loop, ms from due time to arrival)\n\n"
                . "| offered | p50 | p90 | p99 | p99.9 | max |\n| --- | ---: | ---: | ---: | ---: | ---: |\n"
                . join('', map { '| ' . join(' | ', @$_) . " |\n" } @main::curves);
    }
    my $md = "# Flux-Gate benchmark, $date\n\n"
           . "Machine: $nproc CPUs, $cpu, " . ($Machine = machine_share($load_end))
           . ". Versions: $versions.\n"
           . "Client: build/fg-loadgen on the same machine (loopback), "
           . "$CONNS keep-alive connections, ${SECONDS}s per run unless noted "
           . "(sold-out variants: median of $ENV{BENCH_ROUNDS_SHOWN} alternating rounds); "
           . "client and server share the CPUs. \"Flux-Gate as shipped\" is the "
           . "bench stack's own nginx, rendered from conf/nginx.conf as `make run` "
           . "ships it (fluxgate_sold_out_cache off, buffered access log, one worker "
           . "per CPU, fluxgate_threshold 1000/s per product).\n\n"
           . "| variant | what | req/s | p50 ms | p99 ms | p99.9 ms | note |\n"
           . "| --- | --- | ---: | ---: | ---: | ---: | --- |\n"
           . join('', map { '| ' . join(' | ', map { $_ // '-' } @$_) . " |\n" } @rows)
           . "\n## Ratios and targets\n\n"
           . join('', map { "- $_\n" } @ratios)
           . $stages . $curves
           . "\n![one panel per question]($date.png)\n";
    print "\n$md";

    my $dir = "$ROOT/bench/results";
    make_path($dir);
    open my $fh, '>', "$dir/$date.md" or die; print $fh $md; close $fh;
    open $fh, '>', "$dir/$date.tsv" or die;
    print $fh join("\t", qw(variant what rps p50_ms p99_ms p999_ms note)), "\n";
    print $fh join("\t", map { $_ // '-' } @$_), "\n" for @rows;
    close $fh;
    chart_questions("$dir/$date");
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
$Load_start = (split ' ', `cat /proc/loadavg`)[0];
@Others_start = other_stacks();
@Stat_start = cpu_stat();
$ENV{BENCH_ROUNDS_SHOWN} = $ENV{BENCH_ROUNDS} // 3;
# BENCH_ONLY="soldout accept": only these, printed and not written to
# results/.  The default is the questions of issue 12 (soldout accept
# flash) and the fair sale's (line flood); the older parts (flux wrk
# metrics memory drain) and pow (valgrind) run when named.
my %Only = map { $_ => 1 } split /[\s,]+/, $ENV{BENCH_ONLY} // '';
my %Default = map { $_ => 1 } qw(soldout accept flash line flood);
sub want { %Only ? $Only{$_[0]} : $Default{$_[0]} }

bench_soldout() if want('soldout');
bench_accept() if want('accept');
bench_flash() if want('flash');
bench_flux(1) if want('flux');
bench_flux(2) if want('flux');
bench_wrk() if want('wrk');
bench_metrics() if want('metrics');
bench_queue() if want('queue');
bench_line() if want('line');
bench_flood() if want('flood');
bench_pow() if want('pow');
bench_memory() if want('memory');
bench_drain() if want('drain');
# the fleet part only when asked for: BENCH_ONLY=fleet
bench_fleet() if %Only && want('fleet');
# the cost of fluxgate_redis_wait on a Redis Cluster: BENCH_ONLY=wait
if (%Only && want('wait')) {
    my $out = `perl $ROOT/bench/redis-wait.pl 2>&1`;
    print $out;
    say "redis-wait failed: $?" if $?;
}
if (%Only && !$ENV{BENCH_WRITE}) {
    print join('', map { '| ' . join(' | ', map { $_ // '-' } @$_) . " |\n" } @rows);
    for my $flag (1, 0) {
        my $r = $fig{"metrics_ratio_$flag"};
        printf "%s; worker CPU per answer on / off %.1f%%\n", metrics_verdict($flag),
            100 * $fig{"metrics_cpu_ratio_$flag"}
            if defined $r;
    }
} else {
    report();
}
