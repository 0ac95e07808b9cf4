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
#            arrival), and where the time of the 50% run went, from the
#            access log's $request_time,
#            $fluxgate_redis_time and $fluxgate_kafka_time
#   flash    flash sales of stock 1,000 and 10,000 under 500 connections on
#            the shipped gate: time to sold out, the share of the crowd
#            answered sold_out within 10 ms, acknowledged orders/s
use strict;
use warnings;
use File::Path qw(make_path);
use Time::HiRes qw(sleep time);

our ($DIR, $ROOT, %fig, $SECONDS, $CONNS, @rows);
our (@curves, @accept_runs, @soldout_bars, @stages, @flash);

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
        local f = assert(io.open("$ROOT/lua/order.lua"))
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
    my $loaded = redis('SCRIPT', 'LOAD', slurp("$ROOT/lua/order.lua"));
    die "SCRIPT LOAD: $loaded\n" unless $loaded eq $sha;
    my $n = $SECONDS * 25000;
    my $t = "fg:{$p}:";
    my $out = `redis-benchmark -h 127.0.0.1 -p $ENV{REDIS_PORT} -n $n -c $CONNS -P 1 -r 1000000000 -q EVALSHA $sha 6 ${t}stock ${t}rate ${t}buyers ${t}idem:k__rand_int__ ${t}gen ${t}pending u1 1 u1:1 00000000-0000-7000-8000-000000000000 60000 0 0 0 k__rand_int__ 2>&1`;
    my ($rps) = $out =~ /([\d.]+) requests per second/;
    die "redis-benchmark: $out" unless $rps;
    # it must have been the sold-out branch, not an error reply
    my $check = redis('EVALSHA', $sha, 6, "${t}stock", "${t}rate", "${t}buyers",
                      "${t}idem:check", "${t}gen", "${t}pending", 'u1', 1, 'u1:1',
                      '00000000-0000-7000-8000-000000000000', 60000, 0, 0, 0, 'check');
    die "the script did not answer sold out: $check\n" unless $check =~ /^6\b/;
    return $rps;
}

# --- the accept path -----------------------------------------------------------

sub drained {
    my ($prefix, $n) = @_;
    wait_until(180, sub {
        psql("select count(*) from orders where product_id like '$prefix-%'") >= $n });
}

# p50/p99 of the access log's timings of 200s written since $from
sub stage_times {
    my ($log, $from) = @_;
    open my $fh, '<', $log or return {};
    seek $fh, $from, 0;
    my (%t);
    while (<$fh>) {
        my @f = split ' ';
        next unless @f >= 3 && $f[-6] && $f[-6] eq '200' && $f[-5] eq 'accepted';
        push @{ $t{request} }, $f[-3] * 1000;
        push @{ $t{redis} }, $f[-2] * 1000 if $f[-2] ne '-';
        push @{ $t{kafka} }, $f[-1] * 1000 if $f[-1] ne '-';
    }
    my %r;
    for my $k (keys %t) {
        my @v = sort { $a <=> $b } @{ $t{$k} };
        $r{$k} = { n => scalar @v, map { ("p$_" => $v[int($_ / 100 * $#v + 0.5)]) } 50, 99 };
    }
    return \%r;
}

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
    for my $frac (0.25, 0.5, 0.75) {
        drained($prefix, $sent);
        my $rate = int($max * $frac) || 1;
        my $from = -s $log || 0;
        $r = main::run_load(%o, c => 2 * $CONNS, rate => $rate);
        $sent += $r->{status}{200}{count} // 0;
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
        if ($frac == 0.5) {
            $fig{accept_half_p99} = $r->{p99_ms};
            $fig{accept_half_p50} = $r->{p50_ms};
            $fig{accept_half_rate} = $rate;
            $fig{accept_half_ok} = !$r->{rc};
            sleep 1.5;   # the access log's flush
            my $s = stage_times($log, $from);
            for my $k (qw(request redis kafka)) {
                next unless $s->{$k};
                push @stages, [ $k, $s->{$k}{p50}, $s->{$k}{p99}, $s->{$k}{n} ];
                $fig{"stage_${k}_p99"} = $s->{$k}{p99};
                $fig{"stage_${k}_p50"} = $s->{$k}{p50};
            }
            push @stages, [ 'client (fg-loadgen, from due time to arrival)',
                            $r->{p50_ms}, $r->{p99_ms}, $r->{responses} ];
            push @stages, [ "client's own lag reading answers (not counted above; sched $r->{sched})",
                            $r->{client_lag_p50_ms}, $r->{client_lag_p99_ms}, $r->{stamped} ];
        }
    }
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
                . '10 with lines dt 2 lc rgb "red" title "goal: p99 10 ms"' : $none,
        cur => @curves ? "plot $curve_plot" : $none,
        fl => @flash ? 'plot $fl using 2:xtic(1) title "time to sold out (s)" lc rgb "#3070b0", '
                . '$fl using 3 axes x1y2 title "% of crowd sold_out within 10 ms" lc rgb "#b05030"' : $none,
    );
    my $nproc = `nproc`; chomp $nproc;
    my $machine = $main::Machine =~ /^quiet/
        ? "a quiet $nproc-CPU machine" : "a shared $nproc-CPU machine (ratios, not absolutes)";
    print $gp <<"EOF";
set terminal png size 1600,1100 font ",10" noenhanced
set output "$base.png"
set yrange [0:*]
set multiplot layout 2,2 title "Flux-Gate, one make bench run on $machine"
\$bars << EOD
$bars
EOD
\$acc << EOD
$acc
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
set title "Accept path (shipped config, Kafka acks=all): achieved vs p99, open loop"
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
unset multiplot
EOF
    close $gp;
}

1;
