# bench/bench.pl, the questions of issue 12, each answered in this one run:
#
#   soldout  the sold-out path, like for like: Flux-Gate as `make run`
#            ships it (the bench stack's own nginx, rendered from
#            conf/nginx.conf: flag off, buffered access log, one worker per
#            CPU) against the OpenResty peer running the same lua/order.lua
#            with no cache; Flux-Gate with fluxgate_sold_out_cache 1s
#            against the peer with the same idea (a lua_shared_dict flag);
#            redis-benchmark EVALSHA of the same script with the same number
#            of connections (Redis's own capacity); nginx `return 200`
#   accept   the accept path of the shipped gate (Kafka acks=all): its
#            closed-loop maximum, then open-loop runs at 25/50/75% of it
#            (latency from each request's due time to its answer's
#            arrival), each beside build/fg-bare at the same rate: the same
#            EVALSHA and produce with the gate's producer settings, no
#            nginx (the gate's p50/p99 over the bare client's, five pairs
#            at 50%); and where the time of the 50% run went, from the
#            access log's $request_time, $fluxgate_redis_time and
#            $fluxgate_kafka_time, and per order from fg-loadgen's own log
#            (request written to answer arrived) less those two: the time
#            inside nginx beyond Redis and Kafka
#   flash    flash sales of stock 1,000 and 10,000 under 500 connections on
#            the shipped gate: time to sold out, the share of the crowd
#            answered sold_out within 10 ms, acknowledged orders/s
use strict;
use warnings;
use File::Path qw(make_path);
use Time::HiRes qw(sleep time);

our ($DIR, $ROOT, %fig, $SECONDS, $CONNS, @rows);
our (@curves, @accept_runs, @soldout_bars, @stages, @flash, @bare_runs);

my $ROUNDS = $ENV{BENCH_ROUNDS} // 3;
my $BUFFERED = 'buffer=64k flush=1s';

sub shipped_port { ($ENV{FLUXGATE_URL} =~ /:(\d+)$/)[0] }
sub shipped_admin { ($ENV{FLUXGATE_ADMIN_URL} =~ /:(\d+)$/)[0] }

sub slurp { my ($f) = @_; local (@ARGV, $/) = $f; return scalar <> }

# a second nginx from the stack's rendered conf/nginx.conf, on its own
# ports and logs, with $edit applied to the text
sub start_shipped_variant {
    my ($name, $edit) = @_;
    my $conf = slurp("$DIR/nginx/nginx.conf");
    my $root = "$DIR/nginx-$name";
    make_path("$root/logs");
    my ($port, $admin) = (main::free_port(), main::free_port());
    my ($p0, $a0) = (shipped_port(), shipped_admin());
    $conf =~ s/listen $p0 /listen $port /;
    $conf =~ s/listen 127\.0\.0\.1:$a0;/listen 127.0.0.1:$admin;/;
    $conf =~ s{^pid \S+;}{pid $root/logs/nginx.pid;}m;
    $conf =~ s{^error_log \S+}{error_log $root/logs/error.log}m;
    $conf =~ s{access_log \S+/nginx-access\.log}{access_log $root/logs/access.log};
    $edit->(\$conf);
    open my $fh, '>', "$root/nginx.conf" or die;
    print $fh $conf;
    close $fh;
    system("nginx -p $root -c $root/nginx.conf") == 0
        or die "nginx $name did not start: " . `tail -5 $root/logs/error.log`;
    wait_until(5, sub { -s "$root/logs/nginx.pid" });
    $main::Nginx{$name} = { root => $root, port => $port };
    sleep 0.5;
    return ($port, $admin);
}

# POST /init, retried with the same idempotency key while it answers 503
# (Redis past the shipped 200 ms deadline on a busy shared machine)
sub init_stock {
    my ($admin, $p, $n) = @_;
    my $key = "bench-$p";
    my $res;
    for my $try (1 .. 10) {
        $res = http_post("http://127.0.0.1:$admin/init",
                         qq({"productId":"$p","quantity":$n}),
                         { 'X-Idempotency-Key' => $key });
        return if $res->{status} == 200;
        last unless $res->{status} == 503;
        sleep 0.5;
    }
    die "set stock $p: $res->{status} $res->{content}\n";
}

sub median_of {
    my @v = sort { $a <=> $b } grep { defined } @_;
    return undef unless @v;
    # an even count: the mean of the middle two, not the lower one
    return @v % 2 ? $v[$#v / 2] : ($v[@v / 2 - 1] + $v[@v / 2]) / 2;
}

# --- the sold-out path, like for like ------------------------------------------

sub bench_soldout {
    my $sha = main::script_sha();
    # the peer loads the script as Redis gets it (lua/expand.sh's)
    open my $sf, '>', "$DIR/order-expanded.lua" or die;
    print $sf main::script_text();
    close $sf;
    chmod 0644, "$DIR/order-expanded.lua";
    my %port;
    $port{shipped} = shipped_port();
    my $flag_admin;
    ($port{flag}, $flag_admin) = start_shipped_variant('flag', sub {
        ${ $_[0] } =~ s/#\s*fluxgate_sold_out_cache 1s;/fluxgate_sold_out_cache 1s;/
            or die "no fluxgate_sold_out_cache line in conf/nginx.conf\n";
    });
    # the peer and the ceiling as the shipped nginx runs: a worker per CPU,
    # a buffered access log
    my $peer_loc = sub {
        my ($path, $flag) = @_;
        return qq(        location = $path {
            client_max_body_size 4k;
            client_body_buffer_size 4k;
            set \$fg_redis_port $ENV{REDIS_PORT};
            set \$fg_script_sha $sha;
            set \$fg_rate 0;
            set \$fg_burst 0;
            set \$fg_flag $flag;
            content_by_lua_file $ROOT/bench/peers/openresty/gate.lua;
        }
);
    };
    $port{peer} = main::nginx_start('peer', 'auto',
        "load_module /usr/lib/nginx/modules/ndk_http_module.so;\n"
        . "load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;",
        qq(    lua_package_path "/usr/share/lua/5.1/?.lua;;";
    lua_shared_dict fg_sold_out 1m;
    init_by_lua_block {
        local f = assert(io.open("$DIR/order-expanded.lua"))
        GATE_SCRIPT = f:read("*a")
        f:close()
    }),
        $peer_loc->('/order', 0) . $peer_loc->('/order-dict', 1),
        { log => $BUFFERED });
    $port{ceiling} = main::nginx_start('ceiling', 'auto', '', '',
        q(        location = /order { default_type application/json;
            return 409 '{"status":"sold_out"}'; }), { log => $BUFFERED });

    my $p = uniq('soldout');
    init_stock(shipped_admin(), $p, 0);

    my @variants = (
        [ 'shipped', 'Flux-Gate as shipped (flag off)', $port{shipped}, '/order' ],
        [ 'peer', 'OpenResty peer, same script (no cache)', $port{peer}, '/order' ],
        [ 'flag', 'Flux-Gate + fluxgate_sold_out_cache 1s', $port{flag}, '/order' ],
        [ 'peer_dict', 'OpenResty peer + lua_shared_dict flag', $port{peer}, '/order-dict' ],
        [ 'ceiling', 'nginx return 409 (same settings)', $port{ceiling}, '/order' ],
    );
    my (%rps, %lat, %bad);
    for my $round (1 .. $ROUNDS) {
        for my $v (@variants) {
            my ($key, undef, $port, $path) = @$v;
            my $r = main::run_load(port => $port, path => $path, product => $p,
                                   expect => '409');
            # only the 409s count; anything else is said beside the figure
            push @{ $rps{$key} }, ($r->{status}{409}{count} // 0) / ($r->{seconds} || 1);
            $lat{$key} = $r;
            if ($r->{rc}) {
                $bad{$key} .= sprintf(' round %d: %s;', $round, join(', ',
                    (map { "$r->{status}{$_}{count}x$_" } grep { $_ != 409 } sort keys %{ $r->{status} }),
                    $r->{errors} ? "$r->{errors} errors" : ()));
            }
        }
        push @{ $rps{redis} }, redis_capacity($p, $sha);
    }
    for my $v (@variants) {
        my ($key, $what) = @$v;
        my $m = median_of(@{ $rps{$key} });
        $fig{"so_$key"} = $m;
        my $r = $lat{$key};
        push @rows, [ 'sold-out', $what, sprintf('%.0f', $m),
                      @{$r}{qw(p50_ms p99_ms p999_ms)},
                      'runs: ' . join(' ', map { sprintf '%.0f', $_ } @{ $rps{$key} })
                      . ($bad{$key} ? "; NOT ALL 409:$bad{$key}" : '') ];
        push @soldout_bars, [ $what, $m ];
        main::say(sprintf '%-44s %8.0f/s  (%s)', $what, $m,
                  join(' ', map { sprintf '%.0f', $_ } @{ $rps{$key} }));
    }
    my $m = $fig{so_redis} = median_of(@{ $rps{redis} });
    # the gate against Redis round by round: each pair ran a minute apart
    $fig{so_redis_rounds} = [ map { $rps{redis}[$_] ? $rps{shipped}[$_] / $rps{redis}[$_] : 0 }
                              0 .. $#{ $rps{redis} } ];
    push @rows, [ 'sold-out', "redis-benchmark EVALSHA order.lua, $CONNS conns",
                  sprintf('%.0f', $m), '-', '-', '-',
                  'runs: ' . join(' ', map { sprintf '%.0f', $_ } @{ $rps{redis} }) ];
    push @soldout_bars, [ "Redis capacity (EVALSHA, $CONNS conns)", $m ];
    main::say(sprintf '%-44s %8.0f/s', 'redis-benchmark EVALSHA', $m);
    main::nginx_stop($_) for qw(flag peer ceiling);
}

# redis-benchmark of the same script on the sold-out path, a fresh
# idempotency key per call, $CONNS connections, no pipelining: what Redis
# alone can answer, the bound of any gate that asks it every time
sub redis_capacity {
    my ($p, $sha) = @_;
    my $loaded = redis('SCRIPT', 'LOAD', main::script_text());
    die "SCRIPT LOAD: $loaded\n" unless $loaded eq $sha;
    my $n = $SECONDS * 25000;
    my $t = "fg:{$p}:";
    # KEYS and ARGV as ngx_fluxgate_order_decide() sends them (the shipped
    # gate's queue on, no ticket); "" for the empty ones
    my @args = ('u1', 1, 'u1:1', '00000000-0000-7000-8000-000000000000', 60000, 1000, 200,
                0, 'k__rand_int__', 1, 30000000, 3600000000, 'u1', '', 0, 0,
                '0123456789abcdef0123456789abcdef', '', '', '', '');
    my $argv = join ' ', map { length $_ ? $_ : '""' } @args;
    my $out = `redis-benchmark -h 127.0.0.1 -p $ENV{REDIS_PORT} -n $n -c $CONNS -P 1 -r 1000000000 -q EVALSHA $sha 7 ${t}stock ${t}q ${t}buyers ${t}idem:k__rand_int__ ${t}gen ${t}pending ${t}q: $argv 2>&1`;
    my ($rps) = $out =~ /([\d.]+) requests per second/;
    die "redis-benchmark: $out" unless $rps;
    # it must have been the sold-out branch, not an error reply
    $args[8] = 'check';
    my $check = redis('EVALSHA', $sha, 7, "${t}stock", "${t}q", "${t}buyers",
                      "${t}idem:check", "${t}gen", "${t}pending", "${t}q:", @args);
    die "the script did not answer sold out: $check\n" unless $check =~ /^6\b/;
    return $rps;
}

# --- the accept path -----------------------------------------------------------

sub drained {
    my ($prefix, $n) = @_;
    wait_until(180, sub {
        psql("select count(*) from orders where product_id like '$prefix-%'") >= $n });
}

# the last seven fields of conf/nginx.conf's "fluxgate" log line: status,
# outcome, order id, $request_time, $fluxgate_redis_time,
# $fluxgate_kafka_time, $fluxgate_gate_time; undef for another line
sub log_fields {
    my @f = split ' ', $_[0];
    return undef unless @f >= 7;
    my %l;
    @l{qw(status outcome id request redis kafka gate)} = @f[-7 .. -1];
    return \%l;
}

# p50/p99 of the access log's timings of 200s written since $from
sub stage_times {
    my ($log, $from) = @_;
    open my $fh, '<', $log or return {};
    seek $fh, $from, 0;
    my (%t);
    while (<$fh>) {
        my $l = log_fields($_) or next;
        next unless $l->{status} eq '200' && $l->{outcome} eq 'accepted';
        push @{ $t{request} }, $l->{request} * 1000;
        push @{ $t{$_} }, $l->{$_} * 1000 for grep { $l->{$_} ne '-' } qw(redis kafka gate);
    }
    my %r;
    for my $k (keys %t) {
        my @v = sort { $a <=> $b } @{ $t{$k} };
        $r{$k} = { n => scalar @v, map { ("p$_" => $v[int($_ / 100 * $#v + 0.5)]) } 50, 99 };
    }
    return \%r;
}

# the shipped gate's settings that order.lua gets, from its rendered
# conf (the module's defaults where it says nothing)
sub shipped_settings {
    my $conf = slurp("$DIR/nginx/nginx.conf");
    my %ms = (ms => 1, s => 1000, m => 60000, h => 3600000);
    my $time = sub {
        my ($name, $dflt) = @_;
        return $dflt unless $conf =~ /^\s*$name\s+(\d+)(ms|s|m|h)?\s*;/m;
        return $1 * $ms{$2 // 's'};
    };
    my ($rate, $burst) = $conf =~ /^\s*fluxgate_threshold\s+(\d+)(?:\s+burst=(\d+))?\s*;/m;
    return {
        rate => $rate // 0, burst => $burst // 0,
        window_ms => $time->('fluxgate_queue_window', 30000),
        ticket_ttl_ms => $time->('fluxgate_queue_ticket_ttl', 3600000),
        idem_ttl_ms => $time->('fluxgate_idempotency_ttl', 60000),
        per_user => ($conf =~ /^\s*fluxgate_per_user_limit\s+(\d+)\s*;/m)[0] // 0,
        queue => $conf =~ /^\s*fluxgate_queue_secret\s/m ? 1 : 0,
        # without a proof the gate says '1' (needed if a place is due)
        proof => ($conf =~ /^\s*fluxgate_queue_pow\s+(\d+)\s*;/m)[0] ? 1 : 0,
        workers => ($conf =~ /^\s*worker_processes\s+(\S+)\s*;/m)[0] // 1,
    };
}

# build/fg-bare at $rate/s for $SECONDS on products $prefix-0 .. -N-1, one
# process per gate worker (each a Redis connection and a producer, as a
# worker has): the merged latencies' percentiles
sub bare_run {
    my ($prefix, $products, $rate, $set) = @_;
    my $procs = $set->{workers} eq 'auto' ? `nproc` + 0 : $set->{workers};
    my @scripts = map { "$DIR/bare-$_.lua" } qw(order done);
    for my $s (qw(order done)) {
        system("sh $ROOT/lua/expand.sh $ROOT/lua/$s.lua > $DIR/bare-$s.lua") == 0
            or die "expand $s.lua\n";
    }
    my @h;
    for my $i (1 .. $procs) {
        my $out = "$DIR/bare-$i.out";
        my @args = ('--redis', "127.0.0.1:$ENV{REDIS_PORT}", '--brokers', $ENV{KAFKA_BOOTSTRAP},
                    '--topic', $ENV{KAFKA_TOPIC}, '--script', $scripts[0],
                    '--done', $scripts[1], '-R', $rate / $procs, '-d', $SECONDS,
                    '--product', $prefix, '--products', $products, '--run', "bare$i",
                    '--latencies', "$DIR/bare-$i.lat",
                    map({ ("--$_" =~ tr/_/-/r, $set->{$_}) }
                        qw(burst window_ms ticket_ttl_ms idem_ttl_ms per_user queue proof)),
                    '--rate-limit', $set->{rate});
        my $pid = fork // die "fork: $!";
        if ($pid == 0) {
            open STDOUT, '>', $out or die;
            open STDERR, '>&', \*STDOUT or die;
            exec "$ROOT/build/fg-bare", @args or die "exec fg-bare: $!";
        }
        push @h, [ $pid, $out, "$DIR/bare-$i.lat" ];
    }
    my (@lat, %sum, $raw, $rc);
    for my $h (@h) {
        waitpid $h->[0], 0;
        $rc ||= $? >> 8;
        my $out = slurp($h->[1]);
        $raw .= $out;
        my %kv = $out =~ /(\w+)=(\S+)/g;
        $sum{$_} += $kv{$_} // 0 for qw(due sent reserved other delivered failed unsent done_errors);
        $sum{sched} = $kv{sched};
        open my $fh, '<', $h->[2] or next;
        push @lat, map { $_ / 1000 } <$fh>;
        unlink $h->[1], $h->[2];
    }
    @lat = sort { $a <=> $b } @lat;
    my $q = sub { @lat ? sprintf('%.3f', $lat[int($_[0] * $#lat + 0.5)]) : undef };
    return { %sum, rc => $rc, raw => $raw, n => scalar @lat, p50_ms => $q->(0.5),
             p90_ms => $q->(0.9), p99_ms => $q->(0.99), p999_ms => $q->(0.999),
             max_ms => @lat ? $lat[-1] : undef, procs => $procs };
}

# per order of the 50% run: fg-loadgen's wire time (written to arrived,
# kernel-stamped) and the access log's $request_time, less
# $fluxgate_redis_time and $fluxgate_kafka_time.  Those two are logged in
# whole milliseconds (truncated), $request_time on nginx's cached
# millisecond clock: "less the logged times" is an upper bound, "less
# them plus the millisecond each may have lost" a lower one.
sub inside_nginx {
    my ($log, $from, $client) = @_;
    my %wire = map { $_->[1] => $_->[5] } grep { $_->[0] == 200 && defined $_->[5] } @$client;
    open my $fh, '<', $log or return {};
    seek $fh, $from, 0;
    my (@up, @low, @req, @gate);
    while (<$fh>) {
        my $l = log_fields($_) or next;
        next unless $l->{status} eq '200' && $l->{outcome} eq 'accepted'
                    && $l->{redis} ne '-' && $l->{kafka} ne '-';
        my ($redis, $kafka) = map { $_ * 1000 } @{$l}{qw(redis kafka)};
        push @req, $l->{request} * 1000 - $redis - $kafka;
        push @gate, $l->{gate} * 1000 if $l->{gate} ne '-';
        my $w = $wire{ $l->{id} } // next;
        push @up, $w - $redis - $kafka;
        push @low, $w - $redis - $kafka - 2;
    }
    my $p = sub {
        my ($q, @v) = @_;
        @v = sort { $a <=> $b } @v;
        return @v ? sprintf('%.3f', $v[int($q * $#v + 0.5)]) : undef;
    };
    return { n => scalar @up, n_log => scalar @req, n_gate => scalar @gate,
             gate_p50 => $p->(0.5, @gate), gate_p99 => $p->(0.99, @gate),
             gate_p999 => $p->(0.999, @gate),
             up_p50 => $p->(0.5, @up), up_p99 => $p->(0.99, @up),
             low_p50 => $p->(0.5, @low), low_p99 => $p->(0.99, @low),
             req_p50 => $p->(0.5, @req), req_p99 => $p->(0.99, @req) };
}

# the pairs at half the maximum: each 10 s run's p99 on two shared CPUs
# moves by a factor of two from run to run, gate and bare client alike
our $Pairs = $ENV{BENCH_ACCEPT_PAIRS} // 5;

sub bench_accept {
    my $port = shipped_port();
    my $prefix = uniq('acc');
    my $products = 64;   # the shipped threshold is 1000/s per product
    init_stock(shipped_admin(), "$prefix-$_", 1_000_000_000) for 0 .. $products - 1;
    my %o = (port => $port, product => $prefix, products => $products,
             expect => '200');
    my $sent = 0;
    my $r = main::run_load(%o, c => 2 * $CONNS);
    my $ok200 = sub { ($_[0]{status}{200}{count} // 0) / ($_[0]{seconds} || 1) };
    my $failed = sub {
        my ($r) = @_;
        return '' unless $r->{rc};
        my @other = map { "$_: $r->{status}{$_}{count}" } grep { $_ != 200 } sort keys %{ $r->{status} };
        return sprintf('; RUN FAILED: errors %d, unsent %d, other answers (%s)',
                       $r->{errors} // 0, $r->{unsent} // 0, join(', ', @other));
    };
    my $max = $fig{accept_max} = $ok200->($r);
    $sent += $r->{status}{200}{count} // 0;
    push @rows, [ 'accept', 'closed loop, ' . 2 * $CONNS . ' conns (maximum)',
                  sprintf('%.0f', $max), @{ $r->{status}{200} || {} }{qw(p50_ms p99_ms p999_ms)},
                  'acks=all; 200s only' . $failed->($r) ];
    main::say(sprintf 'accept max %.0f/s p99 %s ms', $max, $r->{p99_ms});
    my $log = "$DIR/logs/nginx-access.log";
    my $set = shipped_settings();
    my @pairs;
    for my $frac (0.25, 0.5, 0.75) {
        drained($prefix, $sent);
        my $rate = int($max * $frac) || 1;
        my $from = -s $log || 0;
        $r = main::run_load(%o, c => 2 * $CONNS, rate => $rate, log => $frac == 0.5);
        $sent += $r->{status}{200}{count} // 0;
        if ($frac == 0.5) {
            $fig{accept_half_p99} = $r->{p99_ms};
            $fig{accept_half_p50} = $r->{p50_ms};
            $fig{accept_half_rate} = $rate;
            $fig{accept_half_ok} = !$r->{rc};
            sleep 1.5;   # the access log's flush, before anything else is logged
            my $s = stage_times($log, $from);
            for my $k (qw(request redis kafka)) {
                next unless $s->{$k};
                push @stages, [ $k, $s->{$k}{p50}, $s->{$k}{p99}, $s->{$k}{n} ];
                $fig{"stage_${k}_p99"} = $s->{$k}{p99};
                $fig{"stage_${k}_p50"} = $s->{$k}{p50};
            }
            push @stages, [ 'client (fg-loadgen, from due time to arrival)',
                            $r->{p50_ms}, $r->{p99_ms}, $r->{responses} ];
            my $in = inside_nginx($log, $from, $r->{log} || []);
            $fig{inside} = $in;
            push @stages, [ 'inside nginx beyond Redis and Kafka, the module\'s own clock ($fluxgate_gate_time, to the microsecond)',
                            $in->{gate_p50}, $in->{gate_p99}, $in->{n_gate} ];
            push @stages, [ 'inside nginx beyond Redis and Kafka, upper bound (wire time less the logged Redis and Kafka times)',
                            $in->{up_p50}, $in->{up_p99}, $in->{n} ];
            push @stages, [ 'inside nginx beyond Redis and Kafka, lower bound (the same less the 2 ms the logged times may have lost)',
                            $in->{low_p50}, $in->{low_p99}, $in->{n} ];
            push @stages, [ 'inside nginx beyond Redis and Kafka, from the log alone ($request_time less both)',
                            $in->{req_p50}, $in->{req_p99}, $in->{n_log} ];
            delete $r->{log};
            push @stages, [ "client's own lag reading answers (not counted above; sched $r->{sched})",
                            $r->{client_lag_p50_ms}, $r->{client_lag_p99_ms}, $r->{stamped} ];
        }
        # the same orders at the same rate without the gate, once the
        # worker caught up; at 50% $Pairs pairs, in turns (gate first in
        # the odd ones)
        my @bare;
        for my $round (1 .. ($frac == 0.5 ? $Pairs : 1)) {
            my $g = $r;
            if ($round > 1) {
                drained($prefix, $sent);
                if ($round % 2 == 0) {
                    push @bare, bare_run($prefix, $products, $rate, $set);
                    $sent += $bare[-1]{delivered};
                    drained($prefix, $sent);
                }
                $g = main::run_load(%o, c => 2 * $CONNS, rate => $rate);
                $sent += $g->{status}{200}{count} // 0;
                if ($round % 2 == 1) {
                    drained($prefix, $sent);
                    push @bare, bare_run($prefix, $products, $rate, $set);
                    $sent += $bare[-1]{delivered};
                }
            } else {
                drained($prefix, $sent);
                push @bare, bare_run($prefix, $products, $rate, $set);
                $sent += $bare[-1]{delivered};
            }
            my $b = $bare[-1];
            push @pairs, [ $frac, $rate, $round, $g, $b ];
            push @bare_runs, [ $rate, $b->{p99_ms} ] if $round == 1;
            push @rows, [ 'accept', "bare client (fg-bare, $b->{procs} procs), offered $rate/s",
                          sprintf('%.0f', $b->{delivered} / ($SECONDS || 1)),
                          @{$b}{qw(p50_ms p99_ms p999_ms)},
                          sprintf('EVALSHA order.lua + produce (gate\'s settings), due time to '
                                  . 'delivery report; client %s; gate / bare p50 %.2f, p99 %.2f%s',
                                  $b->{sched} // '?', $g->{p50_ms} / ($b->{p50_ms} || 1),
                                  $g->{p99_ms} / ($b->{p99_ms} || 1),
                                  $b->{rc} ? "; RUN FAILED: $b->{raw}" : '') ];
            main::say(sprintf 'accept at %d/s round %d: gate p50 %s p99 %s; bare p50 %s p99 %s',
                      $rate, $round, @{$g}{qw(p50_ms p99_ms)}, @{$b}{qw(p50_ms p99_ms)});
        }
        if ($frac == 0.5) {
            my @p = grep { $_->[0] == 0.5 } @pairs;
            $fig{share_p50} = median_of(map { $_->[3]{p50_ms} / ($_->[4]{p50_ms} || 1) } @p);
            $fig{share_p99} = median_of(map { $_->[3]{p99_ms} / ($_->[4]{p99_ms} || 1) } @p);
            $fig{share_pairs} = join ', ', map {
                sprintf('%s/%s vs %s/%s ms', $_->[3]{p50_ms}, $_->[3]{p99_ms},
                        $_->[4]{p50_ms}, $_->[4]{p99_ms})
            } @p;
            $fig{share_ok} = !grep { $_->[3]{rc} || $_->[4]{rc} } @p;
        }
        # the instrument's own error: how long answers waited in the
        # socket for the client (not counted: latency ends at arrival)
        my $note = sprintf('open loop at %d%% of max; all answers timed, '
                           . 'to arrival; client %s, answers read %s ms '
                           . 'after arrival (p99)', 100 * $frac,
                           $r->{sched} // '?', $r->{client_lag_p99_ms} // '?')
                 . $failed->($r);
        push @rows, [ 'accept', "open loop, offered $rate/s",
                      sprintf('%.0f', $ok200->($r)),
                      @{$r}{qw(p50_ms p99_ms p999_ms)}, $note ];
        push @accept_runs, [ $rate, $ok200->($r), @{$r}{qw(p50_ms p99_ms p999_ms)} ];
        push @curves, [ sprintf('%d/s (%d%%)', $rate, 100 * $frac),
                        @{$r}{qw(p50_ms p90_ms p99_ms p999_ms max_ms)} ];
        main::say(sprintf 'accept at %d/s: p50 %s p99 %s p99.9 %s (%s)', $rate,
                  @{$r}{qw(p50_ms p99_ms p999_ms)}, $note);
    }
    # the gate's share, in its own file (make bench writes <date>.md too)
    my $in = $fig{inside} || {};
    my @goals = (
        sprintf("the gate's p50 / the bare client's at half the maximum (%s/s): %.2f, p99 / p99: "
                . '%.2f (medians of %d pairs; goal <= 1.2): %s', $fig{accept_half_rate} // '?',
                $fig{share_p50} // 0, $fig{share_p99} // 0, $Pairs,
                defined $fig{share_p99} && $fig{share_p99} <= 1.2 && $fig{share_p50} <= 1.2
                ? 'met' : 'NOT met'),
        sprintf('time inside nginx beyond Redis and Kafka at half the maximum, p99: %s ms '
                . '(p50 %s, p99.9 %s; $fluxgate_gate_time, the module\'s own monotonic clock from '
                . 'the body in hand to the log line, less both round trips; goal p99 <= 1 ms): %s; '
                . 'seen from the client, the wire time less the logged round trips (which also '
                . 'holds the loopback, the kernel\'s queues and the CPUs the client shares) '
                . 'is between %s and %s ms at p99',
                $in->{gate_p99} // '?', $in->{gate_p50} // '?', $in->{gate_p999} // '?',
                !defined $in->{gate_p99} ? 'n/a' : $in->{gate_p99} <= 1 ? 'met' : 'NOT met',
                $in->{low_p99} // '?', $in->{up_p99} // '?'),
    );
    $fig{accept_goals} = \@goals;
    main::write_part('accept', "The gate's own share of an order's latency",
        "The accept path of the bench stack's gate, rendered from conf/nginx.conf as `make run` "
        . "ships it (two workers, Kafka acks=all), $products products; its closed-loop maximum "
        . sprintf('%.0f orders/s, then open loop at 25, 50 and 75%% of it, each run beside '
                  . 'build/fg-bare at the same rate on the same stack: the same EVALSHA of '
                  . 'order.lua (KEYS and ARGV of ngx_fluxgate_order_decide(), the gate\'s '
                  . 'settings from its conf: %s), the same message produced with the gate\'s '
                  . 'librdkafka settings (enable.idempotence, acks=all, linger.ms 5, '
                  . 'message.timeout.ms 5000), done.lua after the delivery (not timed, as the '
                  . 'gate answers first), one process per gate worker.  Both are open loop, timed '
                  . 'from each order\'s due time: the gate to the answer\'s arrival (fg-loadgen), '
                  . "the bare client to the delivery report.  At 50%%: $Pairs pairs in turns "
                  . '(gate, bare; bare, gate; ...), after the worker drained the last '
                  . "run's orders.\n\n", $max,
                  join(', ', map { "$_ $set->{$_}" } sort keys %$set))
        . "## Goals\n\n" . join('', map { "- $_\n" } @goals)
        . "\n## Pairs\n\n| offered/s | pair | gate p50 ms | gate p99 ms | bare p50 ms | bare p99 ms | p50 ratio | p99 ratio | notes |\n"
        . "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n"
        . join('', map {
              my ($f, $rate, $round, $g, $b) = @$_;
              sprintf "| %d | %d | %s | %s | %s | %s | %.2f | %.2f | %s |\n", $rate, $round,
                  $g->{p50_ms}, $g->{p99_ms}, $b->{p50_ms}, $b->{p99_ms},
                  $g->{p50_ms} / ($b->{p50_ms} || 1), $g->{p99_ms} / ($b->{p99_ms} || 1),
                  join('; ', ($g->{rc} ? 'gate run failed' : ()), ($b->{rc} ? 'bare run failed' : ()),
                       sprintf('bare reserved %d of %d', $b->{reserved} // 0, $b->{due} // 0))
          } @pairs)
        . "\n## Where the 50% run's time went (ms)\n\n| stage | p50 | p99 | samples |\n| --- | ---: | ---: | ---: |\n"
        . join('', map { '| ' . join(' | ', map { $_ // '-' } @$_) . " |\n" } @stages)
        . "\n\$fluxgate_gate_time is the module's own measure, to the microsecond: from the "
        . "request's body in hand to its log line, less order.lua's round trip and the Kafka "
        . "delivery as the module timed them.  \$fluxgate_redis_time and \$fluxgate_kafka_time "
        . "are logged in whole milliseconds (the module truncates its microseconds), so each "
        . "may read up to 1 ms short: the wire time less both is an upper bound of the time "
        . "between the client's write and its read that neither Redis nor Kafka took, less "
        . "both and 2 ms a lower one.  The wire time runs from fg-loadgen's write of the "
        . "request to the kernel's receive stamp of the answer: it also holds the loopback's "
        . "two crossings, the request's wait in the socket for a worker, and on a 2-CPU "
        . "machine whatever else the CPUs were running.\n");
    main::say($_) for @goals;
}

# --- flash sales ---------------------------------------------------------------

sub bench_flash {
    my $port = shipped_port();
    for my $stock (1000, 10_000) {
        my $p = uniq("flash$stock");
        init_stock(shipped_admin(), $p, $stock);
        # the shipped threshold (1000/s per product, burst 200) paces it;
        # each connection is a shopper that follows the waiting room as
        # the shipped page does (polls /queue/status, comes back with its
        # ticket when admitted): a crowd that gave up at the 302 would
        # never buy, since while anyone is queued new arrivals queue
        my $d = 3 + $stock / 1000 * 1.5;
        my $r = loadgen(port => $port, c => 500, d => $d, product => $p,
                        log => 1, expect => '200,302,409',
                        queue => '/queue/status');
        my $q = $r->{queue} || {};
        my $total = @{ $r->{log} } || 1;
        my ($ok, $fast, $sold) = (0, 0, 0);
        for (@{ $r->{log} }) {
            $ok++ if $_->[0] == 200;
            next unless $_->[2] eq 'sold_out';
            $sold++;
            $fast++ if $_->[3] <= 10;
        }
        my $t = ($r->{last_200_ms} || 0) / 1000;
        my %f = (stock => $stock, sold => $ok, time_s => $t,
                 share_fast => 100 * $fast / $total,
                 share_fast_of_sold_out => $sold ? 100 * $fast / $sold : 0,
                 ack_rps => $t ? $ok / $t : 0, rps => $r->{rps},
                 rc => $r->{rc}, p302 => $r->{status}{302}{count} // 0,
                 admitted => $q->{admitted} // 0, polls => $q->{polls} // 0,
                 queue_sold_out => $q->{sold_out} // 0);
        push @flash, \%f;
        $fig{"flash_$stock"} = \%f;
        $f{sold_out} = $ok >= $stock;
        my $note = ($f{sold_out} ? 'sold out: ' : sprintf('NOT SOLD OUT in the %.0f s run: ', $d))
                 . sprintf('%d sold in %.2f s; %.1f%% of all answers were sold_out '
                           . 'within 10 ms (%.1f%% of the sold_out ones); '
                           . '%.0f acknowledged orders/s; %d queued (302), of them '
                           . '%d admitted and %d told sold out while waiting '
                           . '(%d status polls)%s',
                           $ok, $t, $f{share_fast}, $f{share_fast_of_sold_out},
                           $f{ack_rps}, $f{p302}, $f{admitted}, $f{queue_sold_out},
                           $f{polls}, $r->{rc} ? '; RUN FAILED: '
                           . join(', ', map { "$r->{status}{$_}{count}x$_" }
                                  grep { !/^(200|302|409)$/ } sort keys %{ $r->{status} }) : '');
        push @rows, [ 'flash', "stock $stock, 500 conns", sprintf('%.0f', $r->{rps}),
                      @{$r}{qw(p50_ms p99_ms p999_ms)}, $note ];
        main::say("flash $stock: $note");
    }
}

# --- the picture: one panel per question ----------------------------------------

sub chart_questions {
    my ($base) = @_;
    open my $gp, '|-', 'gnuplot' or return;
    my $bars = join '', map { (my $l = $_->[0]) =~ s/"/'/g; qq("$l" $_->[1]\n) } @soldout_bars;
    my $acc = join '', map { "@$_[0,1,3]\n" } @accept_runs;
    my $bare = join '', map { "@$_\n" } @bare_runs;
    my @pl = ('p50', 'p90', 'p99', 'p99.9', 'max');
    my $cur = '';
    for my $i (0 .. $#pl) {
        $cur .= "$i \"$pl[$i]\" " . join(' ', map { $_->[$i + 1] // 'NaN' } @curves) . "\n";
    }
    my $fl = join '', map { qq("stock $_->{stock}" $_->{time_s} $_->{share_fast} $_->{ack_rps}\n) } @flash;
    my $curve_plot = join ', ', map {
        sprintf q($cur using 1:%d:xtic(2) with linespoints lw 2 title "offered %s"),
            $_ + 3, $curves[$_][0]
    } 0 .. $#curves;
    my $none = 'set label 1 "not run" at graph 0.5, graph 0.5 center; '
             . 'plot [0:1] [0:1] NaN notitle; unset label 1';
    my %plot = (
        bars => @soldout_bars ? 'plot $bars using 0:2:xtic(1) with boxes notitle lc rgb "#3070b0", '
                . '$bars using 0:2:(sprintf("%.0f", $2)) with labels offset 0,0.7 notitle' : $none,
        acc => @accept_runs ? 'plot $acc using 1:3 with linespoints lw 2 title "p99 (due time to arrival)", '
                . '$acc using 1:2 axes x1y2 with linespoints lw 2 title "achieved 200s/s", '
                . (@bare_runs ? '$bare using 1:2 with linespoints lw 2 dt 2 title "p99 of the bare client '
                   . '(fg-bare: the same EVALSHA and produce, no nginx)"' : 'NaN notitle') : $none,
        cur => @curves ? "plot $curve_plot" : "unset logscale y; $none",
        fl => @flash ? 'plot $fl using 2:xtic(1) title "time to sold out (s)" lc rgb "#3070b0", '
                . '$fl using 3 axes x1y2 title "% of crowd sold_out within 10 ms" lc rgb "#b05030"' : $none,
    );
    my ($line_data, $line_plot) = line_panel();
    my ($flood_data, $flood_plot) = flood_panel();
    my $nproc = `nproc`; chomp $nproc;
    my $machine = $main::Machine =~ /^quiet/
        ? "a quiet $nproc-CPU machine" : "a shared $nproc-CPU machine (ratios, not absolutes)";
    print $gp <<"EOF";
set terminal png size 1600,1650 font ",10" noenhanced
set output "$base.png"
set yrange [0:*]
set multiplot layout 3,2 title "Flux-Gate, one make bench run on $machine"
$line_data
$flood_data
\$bars << EOD
$bars
EOD
\$acc << EOD
$acc
EOD
\$bare << EOD
$bare
EOD
\$cur << EOD
$cur
EOD
\$fl << EOD
$fl
EOD
set title "Sold-out path: answers/s ($CONNS connections, fresh keys, stock 0)"
set style fill solid 0.8
set boxwidth 0.6
set xtics rotate by -20 left
set ylabel "answers/s"
set grid ytics
set bmargin 8
$plot{bars}
set title "Accept path (shipped config, Kafka acks=all): achieved vs p99, open loop, beside a bare client"
set xtics norotate
set xlabel "offered orders/s"
set ylabel "ms"
set y2label "acknowledged orders/s"
set y2tics
set bmargin 4
$plot{acc}
unset y2tics
unset y2label
set title "Accept path latency percentiles (open loop, from each request's due time to the answer's arrival)"
set xlabel "percentile"
set ylabel "ms (log)"
set logscale y
set yrange [*:*]
$plot{cur}
unset logscale y
set yrange [0:*]
set title "Flash sales (shipped config: threshold 1000/s burst 200), 500 connections"
set xlabel ""
set ylabel "seconds to sold out"
set y2label "% of crowd answered sold_out within 10 ms"
set y2range [0:100]
set y2tics
set style data histograms
set style histogram clustered
set boxwidth 0.8
$plot{fl}
unset y2tics
unset y2label
unset y2range
set style data lines
$line_plot
$flood_plot
unset multiplot
EOF
    close $gp;
}

# the line of a million (bench/fair.pl, BENCH_ONLY=line): status polls/s
# beside nginx return 200, and the Redis commands per poll in the title;
# (data block, plot commands) for a panel of a gnuplot multiplot
sub line_panel {
    our (@line_bars);
    my $none = 'set label 1 "not run" at graph 0.5, graph 0.5 center; '
             . "plot [0:1] [0:1] NaN notitle; unset label 1\n";
    my $title = "A line of a million: GET /queue/status polls/s against nginx return 200";
    return ('', qq(set title "$title"\n$none)) unless @line_bars;
    my $bars = join '', map { (my $l = $_->[0]) =~ s/"/'/g; qq("$l" $_->[1]\n) } @line_bars;
    my $sub = sprintf('polls / return 200: %.2f (goal >= 0.8); by worker CPU per answer %.2f\\n'
                      . 'Redis commands per poll: %.5f, '
                      . 'of them scripts and asks the gate sent %.5f (goal <= 0.001)\\n'
                      . '%.0f bytes of Redis per waiting buyer; out of order: %s of %s watched',
                      $fig{line_ratio} // 0, $fig{line_cpu_ratio} // 0, $fig{line_cmds_per_poll} // 0,
                      $fig{line_sent_per_poll} // 0, $fig{line_bytes} // 0,
                      $fig{line_ooo} // '?', $fig{line_tracked} // '?');
    return ("\$line << EOD\n${bars}EOD\n",
            qq(set title "$title\\n$sub"
set style fill solid 0.8
set boxwidth 0.5
set xtics rotate by 0
set xlabel ""
set ylabel "answers/s"
set yrange [0:*]
unset logscale y
plot \$line using 0:2:xtic(1) with boxes notitle lc rgb "#30a070", \\
     \$line using 0:2:(sprintf("%.0f", \$2)) with labels offset 0,0.7 notitle
));
}

# a bot flood (bench/fair.pl, BENCH_ONLY=flood): answers/s of proof-less
# orders challenged in nginx beside the sold-out path's
sub flood_panel {
    our (@flood_bars);
    my $none = 'set label 1 "not run" at graph 0.5, graph 0.5 center; '
             . "plot [0:1] [0:1] NaN notitle; unset label 1\n";
    my $title = "A bot flood: challenged in nginx against the sold-out path (answers/s)";
    return ('', qq(set title "$title"\n$none)) unless @flood_bars;
    my $bars = join '', map { (my $l = $_->[0]) =~ s/"/'/g; qq("$l" $_->[1]\n) } @flood_bars;
    my $sub = sprintf('flood / sold-out as shipped %.2f (goal >= 0.8)\\n200 people, alone and '
                      . 'under the flood: %s out of order', $fig{flood_ratio} // 0, $fig{flood_people_ooo} // '?');
    return ("\$flood << EOD\n${bars}EOD\n",
            qq(set title "$title\\n$sub"
set style fill solid 0.8
set boxwidth 0.5
set ylabel "answers/s"
set yrange [0:*]
plot \$flood using 0:2:xtic(1) with boxes notitle lc rgb "#a07030", \\
     \$flood using 0:2:(sprintf("%.0f", \$2)) with labels offset 0,0.7 notitle
));
}

1;
