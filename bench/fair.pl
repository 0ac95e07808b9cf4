# bench/bench.pl, part three: the fair sale (DESIGN.md, "Contract additions
# (v3)"), each part with its goals, printed and written to
# bench/results/<date>-<part>.md:
#
#   line   a line of 1,000,000 places on one product booked through the
#          real API (two fg-loadgen processes, a buyer per place), then
#          polled at full speed (fg-loadgen --poll-file, every ticket in
#          turn) beside nginx `return 200` with the same settings, while
#          10,000 tracked tickets are followed to their admission
#          (fg-loadgen --watch): booking rate, Redis memory per waiting
#          buyer (INFO memory), polls/s against return 200, Redis commands
#          per poll (INFO commandstats), the pace and order of admission
#   flood  proof-less orders at full speed on a product whose line is
#          busy, while 200 honest buyers solve their challenges and queue
#          (fg-loadgen --queue, as the page does): the flood's answers/s
#          against the sold-out path's, and the honest buyers' order and
#          time, with the flood and without it
#   pow    the gate's cost per proof-of-work check: instructions counted
#          by valgrind (callgrind) in ngx_fluxgate_proof_check and per
#          request of each kind, and answers/s of a flood of bad proofs
#          against the sold-out path
use strict;
use warnings;
use File::Path qw(make_path);
use POSIX qw(strftime);
use Time::HiRes qw(sleep time);

our ($DIR, $ROOT, %fig, $SECONDS, $CONNS, @rows, %Nginx);
our (@line_bars, @flood_bars);

my $Module = "$ROOT/build/ngx_fluxgate_module.so";
my $Buffered = 'buffer=64k flush=1s';

sub fair_say { main::say(@_) }

# a redis-server of the part's own on a free port, so that its memory
# and its commands are the part's alone (the stack's Redis also holds
# what the other parts left, expiring while a line is booked, and serves
# the stack's worker and settler): the port
our @Private_redis;
sub private_redis {
    my ($name) = @_;
    my $port = free_port();
    my $dir = "$DIR/redis-$name";
    make_path($dir);
    system('redis-server', '--port', $port, '--bind', '127.0.0.1', '--save', '',
           '--appendonly', 'no', '--daemonize', 'yes', '--dir', $dir,
           '--pidfile', "$dir/redis.pid", '--logfile', "$dir/redis.log") == 0
        or die "redis-server for $name did not start\n";
    wait_until(10, sub { `redis-cli -p $port ping 2>&1` =~ /PONG/ })
        or die "redis-server for $name did not answer\n";
    push @Private_redis, $port;
    return $port;
}

sub private_redis_stop {
    my ($port) = @_;
    system("redis-cli -p $port shutdown nosave >/dev/null 2>&1");
    @Private_redis = grep { $_ != $port } @Private_redis;
}

END { system("redis-cli -p $_ shutdown nosave >/dev/null 2>&1") for @Private_redis }

# redis-cli on a port, as FluxGate::Test's redis() on the stack's
our $Redis_port;
sub rcli {
    my $q = join ' ', map { (my $s = $_) =~ s/'/'\\''/g; "'$s'" } @_;
    my $port = $Redis_port // $ENV{REDIS_PORT};
    my $out = `redis-cli -h 127.0.0.1 -p $port --raw $q 2>&1`;
    chomp $out;
    return wantarray ? split(/\n/, $out) : $out;
}

# INFO <section> as a hash
sub redis_info {
    my ($section) = @_;
    my %h;
    for (rcli('INFO', $section)) {
        s/\r//;
        $h{$1} = $2 if /^([^:#]+):(.*)$/;
    }
    return \%h;
}

# every command Redis ran (those scripts call included), by name
sub redis_calls {
    my $s = redis_info('commandstats');
    my %c;
    for my $k (keys %$s) {
        next unless $k =~ /^cmdstat_(.+)$/;
        my $name = $1;
        $c{$name} = $s->{$k} =~ /calls=(\d+)/ ? $1 : 0;
    }
    return \%c;
}

sub calls_delta {
    my ($a, $b) = @_;
    my %d;
    for my $k (keys %$b) {
        my $n = $b->{$k} - ($a->{$k} // 0);
        $d{$k} = $n if $n;
    }
    # our own INFO commandstats, one before and one after
    $d{info} -= 1 if $d{info};
    delete $d{info} unless $d{info};
    return \%d;
}

sub sum_of { my $t = 0; $t += $_ for @_; return $t }

sub write_part {
    my ($part, $title, @md) = @_;
    my $date = strftime('%Y-%m-%d', localtime);
    my $nproc = `nproc`; chomp $nproc;
    my $cpu = `grep -m1 'model name' /proc/cpuinfo`;
    $cpu =~ s/.*:\s*//; chomp $cpu;
    my $load = `cut -d' ' -f1-3 /proc/loadavg`; chomp $load;
    my $file = "$ROOT/bench/results/$date-$part.md";
    make_path("$ROOT/bench/results");
    open my $fh, '>', $file or die "$file: $!";
    print $fh "# $title, $date\n\n"
            . "`BENCH_ONLY=$part make bench` on $nproc CPUs ($cpu), "
            . "client (build/fg-loadgen) and stack on the same CPUs, loopback; "
            . "load average $load at the end of the part; "
            . main::machine_share((split ' ', $load)[0]) . ".\n\n"
            . join('', @md);
    close $fh;
    fair_say("written $file");
    return $file;
}

# bench/results/<date>-<part>.png: the part's panel of the make bench
# chart (bench/questions.pl's line_panel, flood_panel) on its own
sub part_chart {
    my ($part, $data, $plot) = @_;
    my $date = strftime('%Y-%m-%d', localtime);
    my $file = "$ROOT/bench/results/$date-$part.png";
    open my $gp, '|-', 'gnuplot' or return;
    print $gp "set terminal png size 900,560 font \",10\" noenhanced\n"
            . "set output \"$file\"\nset grid ytics\nset bmargin 4\n$data$plot";
    close $gp;
    fair_say("written $file") if -s $file;
}

# the text of a ticket's payload: product|buyer|epoch|kind|seq|expires
sub ticket_fields {
    my ($t) = @_;
    require MIME::Base64;
    my ($p) = split /\./, $t, 2;
    $p =~ tr{-_}{+/};
    $p .= '=' x ((4 - length($p) % 4) % 4);
    return split /\|/, MIME::Base64::decode_base64($p);
}

sub pct_of {
    my ($p, @v) = @_;
    @v = sort { $a <=> $b } @v;
    return undef unless @v;
    return $v[int($p * $#v + 0.5)];
}

# --- the line of a million ----------------------------------------------------

# The gate as shipped for a sale (two workers, fluxgate_threshold 1000/s
# burst 200, a queue secret, the buffered access log), but without
# fluxgate_queue_pow: a million proofs of 16 bits are 6.5e10 SHA-256
# computations, hours of the two CPUs the gate itself runs on; what a
# proof costs the gate and the people is the pow and flood parts' question.
sub bench_line {
    my $quick = $ENV{BENCH_QUICK};
    my $n = $ENV{BENCH_LINE_PLACES} // ($quick ? 100_000 : 1_000_000);
    my $tracked = $ENV{BENCH_LINE_TRACKED} // ($quick ? 2_000 : 10_000);
    my $rate = 1000;
    my $poll_s = $ENV{BENCH_LINE_SECONDS} // ($SECONDS > 20 ? $SECONDS : 20);
    # the two nginx side by side on a shared box: five pairs by default
    my $rounds = $ENV{BENCH_LINE_ROUNDS} // 5;
    my $tick_us = 1e6 / (`getconf CLK_TCK` || 100);
    my $secret = "$DIR/bench-line.secret";
    system("head -c 48 /dev/urandom | base64 -w0 > $secret") == 0 or die;
    # a Redis of the line's own: INFO memory and commandstats are the line's
    my $rport = private_redis('line');
    local $Redis_port = $rport;
    (my $http = main::flux_http(threshold => "$rate burst=200")
             . "    fluxgate_queue_secret $secret;\n")
        =~ s/fluxgate_redis 127\.0\.0\.1:\d+;/fluxgate_redis 127.0.0.1:$rport;/;
    my $server = <<'EOF';
        location = /order { client_max_body_size 4k; fluxgate_order; }
        location = /init { fluxgate_stock_admin; }
        location = /queue/status { fluxgate_queue_status; }
        location = /queue/stats { fluxgate_queue_stats; }
EOF
    my $port = main::nginx_start('line', 'auto', "load_module $Module;", $http,
                                 $server, { log => $Buffered });
    # the same answer's size and headers, from nginx alone
    my $ceiling = main::nginx_start('line-ceiling', 'auto', '', '',
        q(        location = /queue/status { default_type application/json;
            add_header Retry-After 5;
            return 200 '{"position":512345,"admitted":false,"etaSeconds":513,"soldOut":false}'; }),
        { log => $Buffered });
    my $p = uniq('line');
    main::init_at($port, $p, 1_000_000_000);
    my @md;

    # --- booking -----------------------------------------------------------
    my $mem0 = redis_info('memory');
    my $m0 = $mem0->{used_memory};
    my $procs = 2;
    my @files = map { "$DIR/line-tickets-$_.txt" } 1 .. $procs;
    my $t0 = time;
    my @h = map {
        loadgen_start(port => $port, c => $CONNS, n => int($n / $procs),
                      product => $p, run => "b$_", expect => '200,302',
                      tickets_out => $files[$_ - 1])
    } 1 .. $procs;
    my @r = map { loadgen_wait($_) } @h;
    my $book_s = time - $t0;
    for (@r) {
        die "line: booking failed: $_->{raw}" if $_->{rc};
    }
    my $places = sum_of(map { ($_->{raw} =~ /tickets written=(\d+)/)[0] // 0 } @r);
    my $passed = sum_of(map { $_->{status}{200}{count} // 0 } @r);
    my $book_rate = $places / $book_s;
    my $p99 = main::median(map { $_->{status}{302}{p99_ms} // 0 } @r);
    # let the connections' buffers go before the memory is read
    sleep 1;
    my $mem1 = redis_info('memory');
    my $m1 = $mem1->{used_memory};
    # INFO memory's own split: the data, and Redis's overhead for it
    my %split = map { $_ => (($mem1->{"used_memory_$_"} // 0) - ($mem0->{"used_memory_$_"} // 0))
                             / ($places || 1) } qw(dataset overhead);
    my $per_buyer = ($m1 - $m0) / ($places || 1);
    my $stats = http_get("http://127.0.0.1:$port/queue/stats?productId=$p");
    my $st = eval { json_decode($stats->{content}) } || {};
    # what the bytes are: the keys of the product's line
    my %usage;
    for my $k (grep { length } rcli('KEYS', "fg:{$p}:*")) {
        (my $kind = $k) =~ s/^fg:\{[^}]+\}://;
        $kind =~ s/^idem:.*/idem:<key>/;
        $kind =~ s/^q:\d+:b:\d+$/q:<e>:b:<bucket>/;
        $kind =~ s/^q:\d+:/q:<e>:/;
        $usage{$kind}{keys}++;
        $usage{$kind}{bytes} += rcli('MEMORY', 'USAGE', $k, 'SAMPLES', '0') || 0;
    }
    my ($buyer_len) = map { length((ticket_fields($_))[1]) }
                      grep { length } split /\n/, `tail -1 $files[0]`;
    fair_say(sprintf 'line: %d places booked in %.1f s (%.0f/s, 302 p99 %.1f ms), '
             . '%d passed at once; Redis %+.1f MB: %.1f bytes per waiting buyer',
             $places, $book_s, $book_rate, $p99, $passed, ($m1 - $m0) / 1e6, $per_buyer);
    $fig{line_book_rate} = $book_rate;
    $fig{line_bytes} = $per_buyer;
    push @rows, [ 'line', "book $places places (2 fg-loadgen, $CONNS conns each)",
                  sprintf('%.0f', $book_rate), '-', sprintf('%.1f', $p99), '-',
                  sprintf('%.1f bytes of Redis per waiting buyer', $per_buyer) ];

    # --- every ticket, in turn order, at an offset in one file ----------------
    my $all = "$DIR/line-tickets.txt";
    system("cat @files > $all") == 0 or die;
    unlink @files;
    my ($where, $count, $max) = ('', 0, -1);
    open my $fh, '<', $all or die "$all: $!";
    my $off = 0;
    while (my $t = <$fh>) {
        my @f = ticket_fields($t);
        if (($f[3] // '') eq 'q') {
            $where .= "\0" x (8 * $f[4] + 8 - length $where)
                if length($where) < 8 * $f[4] + 8;
            substr($where, 8 * $f[4], 8, pack('Q', $off + 1));
            $max = $f[4] if $f[4] > $max;
            $count++;
        }
        $off += length $t;
    }
    my $ticket_at = sub {
        my ($turn) = @_;
        return undef if 8 * $turn >= length $where;
        my $o = unpack('Q', substr($where, 8 * $turn, 8)) or return undef;
        seek $fh, $o - 1, 0;
        my $t = <$fh>;
        return $t;
    };

    # --- polls against return 200, side by side -------------------------------
    my (@gate, @ceil);
    # each run goes on where the last stopped: the whole line is polled
    my $next_from = 0;
    for my $round (1 .. $rounds) {
        my @order = $round % 2 ? ('gate', 'ceiling') : ('ceiling', 'gate');
        for my $who (@order) {
            my $name = $who eq 'gate' ? 'line' : 'line-ceiling';
            my $c0 = main::nginx_worker_cpu_ticks($name);
            my $r = loadgen(port => $who eq 'gate' ? $port : $ceiling,
                            c => $CONNS, d => $SECONDS, path => '/queue/status',
                            product => $p, poll_file => $all, poll_from => $next_from,
                            expect => $who eq 'gate' ? '200,400' : '200');
            die "line: $who polls failed: $r->{raw}" if $r->{rc};
            # the workers' CPU per answer: what each answer costs nginx,
            # whatever else the box ran meanwhile
            $r->{cpu_us} = (main::nginx_worker_cpu_ticks($name) - $c0) * $tick_us
                           / ($r->{responses} || 1);
            push @{ $who eq 'gate' ? \@gate : \@ceil }, $r;
            $next_from = ($next_from + $r->{responses} * $off / ($count || 1)) % $off;
            fair_say(sprintf 'line: round %d %-7s %.0f answers/s (200: %d, 400: %d) p99 %s ms, '
                     . '%.1f us of worker CPU per answer',
                     $round, $who, $r->{rps}, $r->{status}{200}{count} // 0,
                     $r->{status}{400}{count} // 0, $r->{p99_ms}, $r->{cpu_us});
        }
    }
    my $g = main::median(map { $_->{rps} } @gate);
    my $c = main::median(map { $_->{rps} } @ceil);
    my $ratio = $g / ($c || 1);
    my @pairs = map { sprintf '%.2f', $gate[$_]{rps} / ($ceil[$_]{rps} || 1) } 0 .. $#gate;
    my $gcpu = main::median(map { $_->{cpu_us} } @gate);
    my $ccpu = main::median(map { $_->{cpu_us} } @ceil);
    my $cpu_ratio = $ccpu / ($gcpu || 1);
    $fig{line_cpu_ratio} = $cpu_ratio;
    $fig{line_polls} = $g;
    $fig{line_ceiling} = $c;
    $fig{line_ratio} = $ratio;
    my $g400 = sum_of(map { $_->{status}{400}{count} // 0 } @gate);
    my $gall = sum_of(map { $_->{responses} } @gate);
    push @rows, [ 'line', "GET /queue/status, $count tickets in turn", sprintf('%.0f', $g),
                  $gate[-1]{p50_ms}, $gate[-1]{p99_ms}, $gate[-1]{p999_ms},
                  sprintf('median of %d; %.1f%% answered 400 (their window passed)',
                          $rounds, 100 * $g400 / ($gall || 1)) ];
    push @rows, [ 'line', 'nginx return 200, same settings', sprintf('%.0f', $c),
                  $ceil[-1]{p50_ms}, $ceil[-1]{p99_ms}, $ceil[-1]{p999_ms},
                  "median of $rounds" ];

    # --- the million poll while tracked tickets are admitted -----------------
    # what Redis runs anyway (the health asks, the stack's worker and
    # settler), the gate idle, for as long as the polls will run
    my $idle0 = redis_calls();
    my $ti = time;
    sleep $poll_s;
    my $idle = calls_delta($idle0, redis_calls());
    my $idle_s = time - $ti;
    my $stats0 = eval { json_decode(http_get("http://127.0.0.1:$port/queue/stats?productId=$p")->{content}) } || {};
    my $head = $stats0->{admitted} // 0;
    # turns the head passes during the run: from 3 s after its start
    my $from = $head + 3 * $rate;
    my $span = int(($poll_s - 5) * $rate);
    $span = $tracked if $span < $tracked;
    my $watch = "$DIR/line-watch.txt";
    open my $wf, '>', $watch or die;
    my $picked = 0;
    for my $i (0 .. $tracked - 1) {
        my $t = $ticket_at->($from + int($i * $span / $tracked)) // next;
        print $wf $t;
        $picked++;
    }
    close $wf;
    close $fh;
    my $calls0 = redis_calls();
    my $t1 = time;
    my $hw = loadgen_start(port => $port, c => $picked, once => 1, d => $poll_s + 10,
                           product => $p, queue => '/queue/status', watch => $watch,
                           poll_min => 0.1, track => 1);
    my $hp = loadgen_start(port => $port, c => $CONNS, d => $poll_s, path => '/queue/status',
                           product => $p, poll_file => $all, poll_from => $next_from,
                           expect => '200,400');
    my $rp = loadgen_wait($hp);
    my $rw = loadgen_wait($hw);
    my $elapsed = time - $t1;
    my $calls = calls_delta($calls0, redis_calls());
    my $stats1 = eval { json_decode(http_get("http://127.0.0.1:$port/queue/stats?productId=$p")->{content}) } || {};
    my $m2 = redis_info('memory')->{used_memory};
    die "line: polls failed: $rp->{raw}" if $rp->{rc};
    my $q = $rw->{queue} || {};
    my $polls = $rp->{responses} + ($q->{polls} // 0);
    my $all_calls = sum_of(values %$calls);
    my $evalsha = $calls->{evalsha} // 0;
    # what the gates sent themselves: the scripts they ran and their
    # health asks (the commands inside the scripts are the rest)
    my $sent = sum_of(map { $calls->{$_} // 0 } qw(evalsha eval ping role));
    my $idle_all = sum_of(values %$idle) * $elapsed / ($idle_s || 1);
    my $idle_sent = sum_of(map { $idle->{$_} // 0 } qw(evalsha eval ping role))
                    * $elapsed / ($idle_s || 1);
    # what the polls added to what Redis runs anyway
    my $per_poll = ($all_calls - $idle_all) / ($polls || 1);
    my $sent_per_poll = ($sent - $idle_sent) / ($polls || 1);
    my $raw_per_poll = $all_calls / ($polls || 1);
    my $idle_text = join ', ', map { "$_ $idle->{$_}" }
                    sort { $idle->{$b} <=> $idle->{$a} } keys %$idle;
    my $admit_redis = (($stats1->{admitted} // 0) - $head) / ($elapsed || 1);
    my $ooo = $q->{out_of_order};
    my $seen = scalar(grep { $_->[5] >= 0 } @{ $rw->{track} || [] });
    $fig{line_cmds_per_poll} = $per_poll;
    $fig{line_sent_per_poll} = $sent_per_poll;
    $fig{line_ooo} = $ooo;
    $fig{line_tracked} = $seen;
    my $calls_text = join ', ', map { "$_ $calls->{$_}" }
                     sort { $calls->{$b} <=> $calls->{$a} } keys %$calls;
    fair_say(sprintf 'line: %d polls in %.1f s (%.0f/s by the poller, %d by %d watchers); '
             . 'Redis ran %d commands (%s): %.5f per poll beyond the idle rate; %d EVALSHA '
             . '(queue_head; one per 100 ms per gate would be %.0f); admitted %.0f/s by Redis, %.0f/s as the polls saw it; '
             . '%d of %d tracked seen admitted, %s out of order',
             $polls, $elapsed, $rp->{rps}, $q->{polls} // 0, $picked, $all_calls, $calls_text,
             $per_poll, $evalsha, $elapsed * 10 + 1, $admit_redis, $q->{admit_rate} // 0,
             $seen, $picked, $ooo // '?');
    push @rows, [ 'line', "the million poll + $picked watched tickets", sprintf('%.0f', $polls / $elapsed),
                  $rp->{p50_ms}, $rp->{p99_ms}, $rp->{p999_ms},
                  sprintf('%.5f Redis commands per poll; %d of %d watched admitted at %.0f/s, %s out of order',
                          $per_poll, $seen, $picked, $q->{admit_rate} // 0, $ooo // '?') ];
    @line_bars = ([ 'GET /queue/status (gate)', $g ], [ 'nginx return 200', $c ]);

    private_redis_stop($rport);
    unlink $all, $watch;
    main::nginx_stop('line');
    main::nginx_stop('line-ceiling');

    my $usage = join '', map {
        sprintf "| %s | %d | %.1f | %.1f |\n", $_, $usage{$_}{keys}, $usage{$_}{bytes} / 1e6,
            $usage{$_}{bytes} / ($places || 1)
    } sort { $usage{$b}{bytes} <=> $usage{$a}{bytes} } keys %usage;
    my $verdict = sub { $_[0] ? 'met' : 'NOT met' };
    my @goals = (
        sprintf('Redis memory per waiting buyer: %.1f bytes (used_memory %+.1f MB for %d places; '
                . 'goal <= 100): %s', $per_buyer, ($m1 - $m0) / 1e6, $places,
                $verdict->($per_buyer <= 100)),
        sprintf('poll answers/s / nginx return 200 with the same settings: %.2f '
                . '(%.0f vs %.0f/s, medians of %d alternating rounds; pairs %s; goal >= 0.8): %s; '
                . 'by the nginx workers\' CPU per answer (%.1f us a poll, %.1f us a return 200, '
                . 'medians), the capacity ratio is %.2f',
                $ratio, $g, $c, $rounds, join(' ', @pairs), $verdict->($ratio >= 0.8),
                $gcpu, $ccpu, $cpu_ratio),
        sprintf('Redis commands per poll over the run (what the polls added to what Redis runs '
                . 'with the gate idle, measured for as long just before): %.5f counting every '
                . 'command Redis ran, those inside scripts included (%d in %.1f s for %d polls, '
                . 'against %.0f idle); %.5f counting the scripts and asks the gate sent '
                . '(EVALSHA %d: queue_head, at most %d allowed at one per 100 ms per worker '
                . 'process); without subtracting the idle rate %.5f (goal <= 0.001): %s counting '
                . 'every command, %s counting the commands the gate sent',
                $per_poll, $all_calls, $elapsed, $polls, $idle_all, $sent_per_poll, $evalsha,
                2 * ($elapsed * 10 + 1), $raw_per_poll,
                $verdict->($per_poll <= 0.001), $verdict->($sent_per_poll <= 0.001)),
        sprintf('admission while the million poll: %.0f/s by Redis (GET /queue/stats, admitted '
                . '%d -> %d in %.1f s), %.0f/s as the watched tickets saw it, at the product\'s '
                . 'rate %d/s; %d of %d watched tickets seen admitted, %s out of order (goal 0): %s',
                $admit_redis, $head, $stats1->{admitted} // 0, $elapsed, $q->{admit_rate} // 0,
                $rate, $seen, $picked, $ooo // '?',
                $verdict->(defined $ooo && $ooo == 0 && $seen > 0)),
    );
    $fig{line_goals} = \@goals;
    push @md, "The gate: two nginx workers on a Redis of the part's own (so that INFO memory "
            . "and commandstats count the line and its polls only; Kafka, the worker and "
            . "PostgreSQL are the bench stack's), fluxgate_threshold $rate/s burst 200 (the shipped "
            . "rate), a queue secret, ticket life 1 h, window 30 s, the buffered access log; "
            . "**fluxgate_queue_pow off** for this part: a million proofs of 16 bits are "
            . "6.5e10 SHA-256 computations, hours of the CPUs the gate itself runs on (the "
            . "flood and pow parts measure what proofs cost).  The ceiling: nginx `return 200` "
            . "with the same workers, log and keep-alive, answering the same bytes "
            . "(a 70-byte JSON body and Retry-After).\n\n"
            . "## Goals\n\n" . join('', map { "- $_\n" } @goals)
            . "\n## Booking\n\n"
            . sprintf("%d places booked through POST /order by 2 fg-loadgen processes of %d "
                      . "connections (a new buyer and key per request, buyer ids like `%s`, "
                      . "%d bytes) in %.1f s: **%.0f places/s**, 302 p99 %.1f ms; %d orders "
                      . "passed at once (the burst) before the line formed.  Redis used_memory "
                      . "%.1f MB before, %.1f MB after: **%.1f bytes per waiting buyer** "
                      . "(INFO memory's used_memory_dataset %.1f and used_memory_overhead %.1f "
                      . "bytes per buyer).  After the polls: %.1f MB (polls write nothing).  "
                      . "The one-place-per-buyer hash (buyer -> \"seq:second\", MEMORY USAGE "
                      . "below) is the only key that grows with the line; the pre-queue's is "
                      . "the same shape (q:<e>:pb, with the expiry itself), and its keyed permutation keeps a seed and "
                      . "a count in the line's own hash, nothing per buyer.\n\n",
                      $places, $CONNS, 'u-b1<pid>-<n>', $buyer_len // 0, $book_s, $book_rate,
                      $p99, $passed, $m0 / 1e6, $m1 / 1e6, $per_buyer, $split{dataset},
                      $split{overhead}, $m2 / 1e6)
            . "| key | keys | MB (MEMORY USAGE) | bytes per place |\n| --- | ---: | ---: | ---: |\n"
            . $usage
            . sprintf("\nGET /queue/stats after booking: %s\n", $stats->{content} // '?')
            . "\n## Polls against nginx return 200\n\n"
            . "fg-loadgen --poll-file: $CONNS connections, each poll the next of the $count "
            . "tickets in booking order (X-Queue-Ticket), ${SECONDS}s per run, gate and "
            . "ceiling alternating.\n\n"
            . "| round | gate answers/s | 200 | 400 (window passed) | p99 ms | CPU us/answer | ceiling answers/s | p99 ms | CPU us/answer | gate / ceiling |\n"
            . "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
            . join('', map {
                  sprintf "| %d | %.0f | %d | %d | %s | %.1f | %.0f | %s | %.1f | %.2f |\n", $_ + 1,
                      $gate[$_]{rps}, $gate[$_]{status}{200}{count} // 0,
                      $gate[$_]{status}{400}{count} // 0, $gate[$_]{p99_ms}, $gate[$_]{cpu_us},
                      $ceil[$_]{rps}, $ceil[$_]{p99_ms}, $ceil[$_]{cpu_us},
                      $gate[$_]{rps} / ($ceil[$_]{rps} || 1)
              } 0 .. $#gate)
            . "\n## The million poll while the line moves\n\n"
            . sprintf("For %.1f s: the poller (fg-loadgen --poll-file, %d connections, %.0f polls/s, "
                      . "p99 %s ms) and %d watched tickets (fg-loadgen --watch, a connection each, "
                      . "polled every max(0.1 s, eta/4), up to 5 s: %d polls), turns %d to %d "
                      . "spread evenly (the head was at %d).  Redis commands in that time, from "
                      . "INFO commandstats (minus this script's INFO): %s; in %.1f s idle just "
                      . "before: %s.\n\n",
                      $elapsed, $CONNS, $rp->{rps}, $rp->{p99_ms}, $picked, $q->{polls} // 0,
                      $from, $from + $span, $head, $calls_text, $idle_s, $idle_text)
            . "A watched ticket is out of order when a ticket of a later turn was seen admitted "
            . "before its own last \"waiting\" poll was sent (fg-loadgen's out_of_order).\n\n"
            . "fg-loadgen --watch said: `$rw->{raw}`\n";
    my @keep = grep { /^(total|queue|status)/ } split /\n/, $rp->{raw};
    $md[-1] .= "\nThe poller said: `" . join('` `', @keep) . "`\n";
    $md[-1] .= "\n![the line's panel](" . strftime('%Y-%m-%d', localtime) . "-line.png)\n";
    write_part('line', 'A line of a million: booking, memory, polls, admission', @md);
    part_chart('line', main::line_panel());
    fair_say($_) for @goals;
}

# --- a bot flood and the people ---------------------------------------------

# the gate for the flood and pow parts: as shipped for a sale (two
# workers, the buffered access log, no sold-out flag on /order), with
# fluxgate_queue_pow 16 and a low rate without burst, so that 200 people
# make a line that lasts; /order-flag is the same with the sold-out flag
sub fair_gate {
    my ($name, $workers) = @_;
    my $secret = "$DIR/bench-$name.secret";
    system("head -c 48 /dev/urandom | base64 -w0 > $secret") == 0 or die;
    my $http = main::flux_http(threshold => '20 burst=0')
             . "    fluxgate_queue_secret $secret;\n    fluxgate_queue_pow 16;\n";
    my $server = <<'EOF';
        location = /order { client_max_body_size 4k; fluxgate_sold_out_cache off;
                            fluxgate_order; }
        location = /order-flag { client_max_body_size 4k; fluxgate_order; }
        location = /init { fluxgate_stock_admin; }
        location = /queue/status { fluxgate_queue_status; }
        location = /queue/stats { fluxgate_queue_stats; }
        location = /queue/control { fluxgate_queue_control; }
EOF
    return main::nginx_start($name, $workers, "load_module $Module;", $http, $server,
                             { log => $Buffered });
}

# POST /init, again while the gate answers 503 (nginx under valgrind
# connects to Redis and Kafka slowly)
sub init_retry {
    my ($port, $p, $n) = @_;
    my $res;
    for my $try (1 .. 120) {
        $res = http_post("http://127.0.0.1:$port/init",
                         qq({"productId":"$p","quantity":$n}),
                         { 'X-Idempotency-Key' => "init-$p" });
        return if $res->{status} == 200;
        last unless $res->{status} == 503;
        sleep 0.5;
    }
    die "set stock $p: $res->{status} $res->{content}\n";
}

sub queue_stats {
    my ($port, $p) = @_;
    return eval { json_decode(http_get("http://127.0.0.1:$port/queue/stats?productId=$p")->{content}) } || {};
}

sub queue_control {
    my ($port, $p, $action) = @_;
    my $res = http_post("http://127.0.0.1:$port/queue/control",
                        qq({"productId":"$p","action":"$action"}),
                        { 'X-Idempotency-Key' => uniq('ctl') });
    die "queue control $action $p: $res->{status} $res->{content}\n"
        unless $res->{status} == 200;
}

# a challenge for buyer $user on product $p, solved here: "C.n"
sub solved_proof {
    my ($port, $p, $user, $bits) = @_;
    require Digest::SHA;
    my $res = http_post("http://127.0.0.1:$port/order",
                        qq({"productId":"$p","userId":"$user"}),
                        { 'X-Idempotency-Key' => uniq('k') });
    my $b = eval { json_decode($res->{content}) } || {};
    die "no challenge for $p: $res->{status} $res->{content}\n"
        unless $res->{status} == 302 && $b->{challenge};
    my $want = '0' x $b->{bits};
    for (my $n = 0; ; $n++) {
        my $bin = unpack('B*', substr(Digest::SHA::sha256("$b->{challenge}.$n"), 0, 4));
        return ("$b->{challenge}.$n", $b->{challenge}) if substr($bin, 0, $b->{bits}) eq $want;
    }
}

# 200 people who solve their challenge as the page does and queue
sub honest_run {
    my ($port, $p, %o) = @_;
    return loadgen_start(port => $port, c => 200, once => 1, d => 120, product => $p,
                         queue => '/queue/status', expect => '200,302', run => 'h',
                         track => 1, %o);
}

sub honest_summary {
    my ($r) = @_;
    my $q = $r->{queue} || {};
    my %s = map { $_ => $q->{$_} } qw(done bought out_of_order turns_known challenged proofs
                                      solve_p50_ms solve_p99_ms wait_p50_ms buy_p50_ms buy_p99_ms);
    $s{poll_p50} = $q->{p50_ms};
    $s{poll_p99} = $q->{p99_ms};
    $s{order_p99} = $r->{p99_ms};
    $s{rc} = $r->{rc};
    return \%s;
}

sub bench_flood {
    my $rounds = $ENV{BENCH_ROUNDS} // 3;
    my $port = fair_gate('flood', 'auto');
    my @md;

    # --- refusing a script against telling a buyer "sold out" -------------
    my $busy = uniq('flood-paused');
    main::init_at($port, $busy, 1_000_000);
    # a paused line is busy whoever is in it: every proof-less order is
    # challenged in nginx, however long the rounds take
    queue_control($port, $busy, 'pause');
    my $sold = uniq('flood-soldout');
    main::init_at($port, $sold, 0);
    my (%rps, %last);
    my @kinds = ([ 'flood', 'no proof: challenged', '/order', $busy, '302' ],
                 [ 'soldout', 'sold out (Redis, as shipped)', '/order', $sold, '409' ],
                 [ 'flag', 'sold out (the flag)', '/order-flag', $sold, '409' ]);
    # the flag up before the rounds
    main::run_load(port => $port, path => '/order-flag', product => $sold, d => 1);
    for my $round (1 .. $rounds) {
        my @order = $round % 2 ? @kinds : reverse @kinds;
        for my $k (@order) {
            my ($key, $what, $path, $prod, $expect) = @$k;
            my $r = main::run_load(port => $port, path => $path, product => $prod,
                                   expect => $expect);
            die "flood $key failed: $r->{raw}" if $r->{rc};
            push @{ $rps{$key} }, $r->{rps};
            $last{$key} = $r;
            fair_say(sprintf 'flood round %d: %-44s %8.0f/s p99 %s ms', $round, $what,
                     $r->{rps}, $r->{p99_ms});
        }
    }
    my %m = map { $_ => main::median(@{ $rps{$_} }) } keys %rps;
    my $ratio = $m{flood} / ($m{soldout} || 1);
    my $ratio_flag = $m{flood} / ($m{flag} || 1);
    $fig{flood_ratio} = $ratio;
    $fig{flood_ratio_flag} = $ratio_flag;
    for my $k (@kinds) {
        my ($key, $what) = @$k;
        push @rows, [ 'flood', $what, sprintf('%.0f', $m{$key}),
                      @{ $last{$key} }{qw(p50_ms p99_ms p999_ms)},
                      'runs: ' . join(' ', map { sprintf '%.0f', $_ } @{ $rps{$key} }) ];
    }
    @flood_bars = map { [ $_->[1], $m{ $_->[0] } ] } @kinds;

    # --- the people, without a flood and then with one ----------------------
    my %h;
    for my $with (0, 1) {
        my $p = uniq($with ? 'flood-people' : 'calm-people');
        main::init_at($port, $p, 1_000_000);
        my $hh = honest_run($port, $p, run => $with ? 'hf' : 'hc');
        my $f;
        if ($with) {
            # the flood once the people's line is busy
            wait_until(60, sub { (queue_stats($port, $p)->{waiting} // 0) >= 20 });
            $f = loadgen_start(port => $port, c => $CONNS, d => $SECONDS, product => $p,
                               expect => '200,302', run => 'bot');
        }
        my $hr = loadgen_wait($hh);
        my $fr = $f ? loadgen_wait($f) : undef;
        $h{$with} = { r => $hr, s => honest_summary($hr), f => $fr };
        fair_say(sprintf 'flood: 200 people %s: %s', $with ? 'under a flood' : 'alone',
                 join ' ', map { "$_=" . ($h{$with}{s}{$_} // '?') } sort keys %{ $h{$with}{s} });
        fair_say(sprintf 'flood: the flood beside them: %.0f answers/s (302 %d, 200 %d), p99 %s ms',
                 $fr->{rps}, $fr->{status}{302}{count} // 0, $fr->{status}{200}{count} // 0,
                 $fr->{p99_ms}) if $fr;
    }
    main::nginx_stop('flood');
    my ($calm, $storm) = map { $h{$_}{s} } 0, 1;
    my $fr = $h{1}{f};
    $fig{flood_people_ooo} = ($calm->{out_of_order} // 1) + ($storm->{out_of_order} // 1);
    push @rows, [ 'flood', 'flood beside 200 queued people', sprintf('%.0f', $fr->{rps}),
                  @{$fr}{qw(p50_ms p99_ms p999_ms)},
                  sprintf('302 %d, 200 %d', $fr->{status}{302}{count} // 0,
                          $fr->{status}{200}{count} // 0) ];
    for my $with (0, 1) {
        my $s = $h{$with}{s};
        push @rows, [ 'flood', '200 people ' . ($with ? 'under the flood' : 'alone'),
                      $s->{bought} // 0, $s->{poll_p50}, $s->{poll_p99}, '-',
                      sprintf('bought in p50 %s / p99 %s ms; solve p50 %s ms; %s out of order',
                              $s->{buy_p50_ms}, $s->{buy_p99_ms}, $s->{solve_p50_ms},
                              $s->{out_of_order} // '?') ];
    }
    my $verdict = sub { $_[0] ? 'met' : 'NOT met' };
    my $people_ok = $calm->{done} == 200 && $storm->{done} == 200 && !$calm->{rc} && !$storm->{rc};
    my @goals = (
        sprintf('a flood of proof-less orders on a busy line (challenged in nginx, no Redis) '
                . 'against the sold-out path as shipped (order.lua in Redis): %.2f (%.0f vs %.0f '
                . 'answers/s, medians of %d alternating rounds; goal >= 0.8): %s; against the '
                . 'sold-out flag (no Redis either): %.2f (%.0f/s)',
                $ratio, $m{flood}, $m{soldout}, $rounds, $verdict->($ratio >= 0.8), $ratio_flag,
                $m{flag}),
        sprintf('200 honest buyers (fluxgate_queue_pow 16, solved as the page does) under a '
                . 'flood of %.0f answers/s: %d of 200 bought, %s out of order (alone: %d '
                . 'bought, %s out of order; goal 0): %s',
                $fr->{rps}, $storm->{bought} // 0, $storm->{out_of_order} // '?',
                $calm->{bought} // 0, $calm->{out_of_order} // '?',
                $verdict->($people_ok && defined $storm->{out_of_order}
                           && $storm->{out_of_order} == 0 && $calm->{out_of_order} == 0)),
        sprintf('the people under the flood and alone: status polls p50 %s / p99 %s ms against '
                . '%s / %s; start to 200 p50 %s / p99 %s ms against %s / %s; their orders\' '
                . 'answers p99 %s against %s ms',
                @{$storm}{qw(poll_p50 poll_p99)}, @{$calm}{qw(poll_p50 poll_p99)},
                @{$storm}{qw(buy_p50_ms buy_p99_ms)}, @{$calm}{qw(buy_p50_ms buy_p99_ms)},
                $storm->{order_p99}, $calm->{order_p99}),
    );
    $fig{flood_goals} = \@goals;
    push @md, "The gate: two nginx workers, fluxgate_queue_pow 16, fluxgate_threshold 20/s "
            . "burst 0 (200 people make a line of 10 s), a queue secret, the buffered access "
            . "log; /order without the sold-out flag (as shipped), /order-flag with it.  The "
            . "flood: fg-loadgen, $CONNS connections, a new buyer and key per order, no proof, "
            . "${SECONDS}s per run.  In the rounds the flood's product has its line paused "
            . "(POST /queue/control): a paused line is busy whoever waits in it, so every "
            . "order is challenged in nginx without Redis; the sold-out product has stock 0.  "
            . "The people: fg-loadgen --queue --once, 200 connections, each a buyer who "
            . "solves the challenge (SHA-256, 16 bits), resends the order with X-Queue-Proof, "
            . "polls /queue/status with X-Queue-Ticket and buys when admitted; once alone, "
            . "once with the flood (the same, on their product, started when 20 of them "
            . "waited).\n\n## Goals\n\n" . join('', map { "- $_\n" } @goals)
            . "\n## Rounds\n\n| round | "
            . join(' | ', map { "$_->[1] (answers/s)" } @kinds) . " |\n| ---: |"
            . join('', map { ' ---: |' } @kinds) . "\n"
            . join('', map { my $i = $_; sprintf "| %d | %s |\n", $i + 1,
                             join(' | ', map { sprintf '%.0f', $rps{ $_->[0] }[$i] } @kinds) }
                   0 .. $rounds - 1)
            . "\n## The people\n\n| | alone | under the flood |\n| --- | ---: | ---: |\n"
            . join('', map {
                  my $k = $_;
                  sprintf "| %s | %s | %s |\n", $k, $calm->{$k} // '-', $storm->{$k} // '-'
              } qw(done bought out_of_order turns_known challenged proofs solve_p50_ms
                   solve_p99_ms wait_p50_ms buy_p50_ms buy_p99_ms poll_p50 poll_p99 order_p99))
            . "\n(solve: from the challenge to the proof found, the 200 sharing one client "
            . "process; wait: from the place booked to the first poll that said admitted; buy: "
            . "from the first request to the 200.)\n\nThe flood beside the people said: `"
            . join('` `', grep { /^(total|status)/ } split /\n/, $fr->{raw}) . "`\n";
    $md[-1] .= "\n![the flood's panel](" . strftime('%Y-%m-%d', localtime) . "-flood.png)\n";
    write_part('flood', 'A bot flood and the people', @md);
    part_chart('flood', main::flood_panel());
    fair_say($_) for @goals;
}

# --- what a proof check costs the gate -----------------------------------------

# Instructions counted by valgrind (callgrind) in one nginx process
# (master_process off), $n orders of one kind per run: inclusive counts of
# the module's functions per call (ngx_fluxgate_proof_check,
# ngx_fluxgate_queue_send_challenge, the order handler; HMAC and SHA256
# inside them); a machine's speed does not change them
sub callgrind_kind {
    my ($kind, $n, %o) = @_;
    my $root = "$DIR/nginx-cg-$kind";
    make_path("$root/logs", "$root/tmp");
    system("chown -R nobody:nogroup $root/tmp") if $> == 0;
    my $port = free_port();
    my $secret = "$DIR/bench-pow.secret";
    system("head -c 48 /dev/urandom | base64 -w0 > $secret") == 0 or die unless -s $secret;
    my $http = main::flux_http(threshold => '20 burst=0')
             . "    fluxgate_queue_secret $secret;\n    fluxgate_queue_pow 16;\n";
    open my $fh, '>', "$root/nginx.conf" or die;
    print $fh <<"EOF";
load_module $Module;
daemon off;
master_process off;
worker_processes 1;
pid $root/logs/nginx.pid;
error_log $root/logs/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    keepalive_requests 100000;
    client_body_temp_path $root/tmp/body;
$http
    server {
        listen 127.0.0.1:$port;
        location = /order { fluxgate_sold_out_cache off; fluxgate_order; }
        location = /init { fluxgate_stock_admin; }
        location = /queue/control { fluxgate_queue_control; }
    }
}
EOF
    close $fh;
    my $out = "$root/callgrind.out";
    my $pid = fork // die;
    if ($pid == 0) {
        open STDOUT, '>', "$root/valgrind.log";
        open STDERR, '>&', \*STDOUT;
        exec 'valgrind', '--tool=callgrind', "--callgrind-out-file=$out",
             'nginx', '-p', $root, '-c', "$root/nginx.conf";
        die "exec valgrind: $!";
    }
    wait_until(120, sub { http_get("http://127.0.0.1:$port/nope")->{status} == 404 })
        or die "nginx under valgrind did not start: " . `tail -5 $root/valgrind.log`;
    my %r = (kind => $kind, n => $n);
    my $p = $o{product}->($port);
    my @args = (port => $port, c => 4, product => $p, expect => $o{expect},
                $o{body} ? (body => $o{body}->($p)) : (),
                $o{header} ? (header => $o{header}->($port, $p)) : ());
    # once warm (OpenSSL's generators made, the line's record in shared
    # memory, the connections up), the counts start from zero
    my $warm = loadgen(@args, n => 100);
    die "callgrind $kind: warm-up failed: $warm->{raw}" if $warm->{rc};
    system("callgrind_control -z $pid >/dev/null 2>&1") == 0
        or die "callgrind_control -z $pid failed\n";
    my $load = loadgen(@args, n => $n);
    die "callgrind $kind: failed: $load->{raw}" if $load->{rc};
    $r{load} = $load;
    kill 'QUIT', $pid;
    waitpid $pid, 0;
    my $ann = `callgrind_annotate --inclusive=yes --threshold=100 $out 2>/dev/null`;
    for my $f (qw(ngx_fluxgate_proof_check ngx_fluxgate_queue_send_challenge
                  ngx_fluxgate_order_handler ngx_fluxgate_order_decided
                  ngx_fluxgate_line_take_proof ngx_fluxgate_line_busy
                  ngx_fluxgate_challenge_make HMAC SHA256 ngx_http_process_request_line
                  ngx_http_finalize_request)) {
        $r{$f} = $1 =~ tr/,//dr if $ann =~ /^\s*([\d,]+)\s+(?:\([^)]*\)\s+)?\S*:\Q$f\E\b/m;
    }
    ($r{total}) = $ann =~ /^\s*([\d,]+)\s+(?:\([^)]*\)\s+)?PROG TOTALS/m;
    $r{total} =~ tr/,//d if $r{total};
    return \%r;
}

sub bench_pow {
    my $n = $ENV{BENCH_POW_ORDERS} // ($ENV{BENCH_QUICK} ? 500 : 2000);
    my $rounds = $ENV{BENCH_ROUNDS} // 3;
    my @md;
    die "bench pow: valgrind is not installed\n" if system('command -v valgrind >/dev/null') != 0;

    # --- answers/s: floods of bad proofs against the sold-out path ----------
    my $port = fair_gate('pow', 'auto');
    my $busy = uniq('pow-paused');
    main::init_at($port, $busy, 1_000_000);
    queue_control($port, $busy, 'pause');
    my $sold = uniq('pow-soldout');
    main::init_at($port, $sold, 0);
    my $user = 'u-replayer';
    my ($proof, $challenge) = solved_proof($port, $busy, $user, 16);
    # taken once: every use after this one is a replay
    my $res = http_post("http://127.0.0.1:$port/order", qq({"productId":"$busy","userId":"$user"}),
                        { 'X-Idempotency-Key' => uniq('k'), 'X-Queue-Proof' => $proof });
    die "the solved proof was not taken: $res->{status} $res->{content}\n"
        unless $res->{status} == 302 && $res->{content} =~ /"queued"/;
    # the same challenge with an n whose hash has fewer than 16 zero bits
    require Digest::SHA;
    my $weak;
    for (my $i = 0; ; $i++) {
        next if unpack('B16', Digest::SHA::sha256("$challenge.$i")) eq '0' x 16;
        $weak = "$challenge.$i";
        last;
    }
    my $body = qq({"productId":"$busy","userId":"$user"});
    my @kinds = ([ 'none', 'no proof (challenged)', {} ],
                 [ 'weak', 'a proof short of the bits (one SHA-256)',
                   { body => $body, header => "X-Queue-Proof: $weak" } ],
                 [ 'replay', 'a good proof replayed (SHA-256, HMAC, the nonce looked up)',
                   { body => $body, header => "X-Queue-Proof: $proof" } ],
                 [ 'soldout', 'sold-out path as shipped (Redis)', {} ]);
    my (%rps, %last);
    for my $round (1 .. $rounds) {
        my @order = $round % 2 ? @kinds : reverse @kinds;
        for my $k (@order) {
            my ($key, $what, $extra) = @$k;
            my $r = main::run_load(port => $port, product => $key eq 'soldout' ? $sold : $busy,
                                   expect => $key eq 'soldout' ? '409' : '302', %$extra);
            die "pow $key failed: $r->{raw}" if $r->{rc};
            push @{ $rps{$key} }, $r->{rps};
            $last{$key} = $r;
            fair_say(sprintf 'pow round %d: %-58s %8.0f/s', $round, $what, $r->{rps});
        }
    }
    main::nginx_stop('pow');
    my %m = map { $_ => main::median(@{ $rps{$_} }) } keys %rps;
    for my $k (@kinds) {
        push @rows, [ 'pow', "flood: $k->[1]", sprintf('%.0f', $m{ $k->[0] }),
                      @{ $last{ $k->[0] } }{qw(p50_ms p99_ms p999_ms)},
                      sprintf('%.2f of the sold-out path; runs: %s', $m{ $k->[0] } / ($m{soldout} || 1),
                              join(' ', map { sprintf '%.0f', $_ } @{ $rps{ $k->[0] } })) ];
    }

    # --- instructions, one nginx process under callgrind -----------------------
    my $paused = sub {
        my ($port) = @_;
        my $p = uniq('cg');
        init_retry($port, $p, 1_000_000);
        queue_control($port, $p, 'pause');
        return $p;
    };
    my %cg;
    $cg{none} = callgrind_kind('none', $n, product => $paused, expect => '302');
    $cg{weak} = callgrind_kind('weak', $n, product => $paused, expect => '302',
        body => sub { qq({"productId":"$_[0]","userId":"$user"}) },
        header => sub {
            my ($port, $p) = @_;
            my (undef, $c) = solved_proof($port, $p, $user, 16);
            for (my $i = 0; ; $i++) {
                return "X-Queue-Proof: $c.$i"
                    if unpack('B16', Digest::SHA::sha256("$c.$i")) ne '0' x 16;
            }
        });
    $cg{replay} = callgrind_kind('replay', $n, product => $paused, expect => '302',
        body => sub { qq({"productId":"$_[0]","userId":"$user"}) },
        header => sub {
            my ($port, $p) = @_;
            my ($good) = solved_proof($port, $p, $user, 16);
            http_post("http://127.0.0.1:$port/order", qq({"productId":"$p","userId":"$user"}),
                      { 'X-Idempotency-Key' => uniq('k'), 'X-Queue-Proof' => $good });
            return "X-Queue-Proof: $good";
        });
    $cg{soldout} = callgrind_kind('soldout', $n, expect => '409',
        product => sub { my $p = uniq('cg-sold'); init_retry($_[0], $p, 0); $p });
    my $per = sub { my ($k, $f) = @_; defined $cg{$k}{$f} ? $cg{$k}{$f} / $n : undef };
    my $check = $per->('replay', 'ngx_fluxgate_proof_check');
    my $check_weak = $per->('weak', 'ngx_fluxgate_proof_check');
    $fig{pow_check_ir} = $check;
    $fig{pow_check_weak_ir} = $check_weak;
    my $fmt = sub { defined $_[0] ? sprintf('%.0f', $_[0]) : '-' };
    my @cgrows = map {
        my $k = $_;
        sprintf "| %s | %s | %s | %s | %s | %s | %s |\n", $k,
            $fmt->($per->($k, 'ngx_fluxgate_order_handler')),
            $fmt->(($per->($k, 'ngx_fluxgate_order_handler') // 0)
                   + ($per->($k, 'ngx_fluxgate_order_decided') // 0)),
            $fmt->($per->($k, 'ngx_fluxgate_proof_check')),
            $fmt->($per->($k, 'ngx_fluxgate_queue_send_challenge')),
            $fmt->($per->($k, 'ngx_fluxgate_line_busy')),
            $fmt->($per->($k, 'HMAC'))
    } qw(none weak replay soldout);
    my @goals = (
        sprintf('the gate\'s cost per proof-of-work check (ngx_fluxgate_proof_check, callgrind, '
                . 'instructions per call): %s for a good proof (SHA-256, the challenge\'s HMAC, '
                . 'its fields), %s for one short of the bits (SHA-256 only); each refusal then '
                . 'costs a new challenge, %s instructions (ngx_fluxgate_queue_send_challenge)',
                $fmt->($check), $fmt->($check_weak),
                $fmt->($per->('none', 'ngx_fluxgate_queue_send_challenge'))),
        sprintf('floods against the sold-out path as shipped (Redis), answers/s, medians of %d '
                . 'rounds: no proof %.2f, a proof short of the bits %.2f, a good proof replayed '
                . '%.2f (%.0f, %.0f, %.0f vs %.0f/s)', $rounds,
                (map { $m{$_} / ($m{soldout} || 1) } qw(none weak replay)),
                @m{qw(none weak replay soldout)}),
    );
    $fig{pow_goals} = \@goals;
    push @md, "The gate as in the flood part (two workers, fluxgate_queue_pow 16, the "
            . "buffered access log, no sold-out flag); the orders go to a product whose line "
            . "is paused (busy: every order without a good proof is challenged in nginx), the "
            . "sold-out ones to a product of stock 0.  A replayed proof: one solved here for "
            . "a buyer, taken once, then sent by every order of that buyer (each a new key): "
            . "the most a flood can make the check do without solving each time.\n\n"
            . "## Results\n\n" . join('', map { "- $_\n" } @goals)
            . "\n## Instructions per order (callgrind, one nginx process, master_process off, "
            . "$n orders of each kind over 4 connections, inclusive counts / $n)\n\n"
            . "| orders | order handler | + order.lua's reply | proof check | new challenge | line busy? | HMAC |\n"
            . "| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n" . join('', @cgrows)
            . "\n(order handler: ngx_fluxgate_order_handler inclusive, which reads the body, "
            . "checks the proof and sends a challenge or EVALSHA; \"+ order.lua's reply\" adds "
            . "ngx_fluxgate_order_decided, where the sold-out answer is made; nginx's own "
            . "request parsing and finalizing are outside both and the same for every kind; "
            . "the Redis side of the sold-out path is not counted.)\n\n"
            . "## Floods, answers/s\n\n| round | "
            . join(' | ', map { $_->[1] } @kinds) . " |\n| ---: |"
            . join('', map { ' ---: |' } @kinds) . "\n"
            . join('', map { my $i = $_; sprintf "| %d | %s |\n", $i + 1,
                             join(' | ', map { sprintf '%.0f', $rps{ $_->[0] }[$i] } @kinds) }
                   0 .. $rounds - 1);
    write_part('pow', 'What a proof-of-work check costs the gate', @md);
    fair_say($_) for @goals;
}

1;
