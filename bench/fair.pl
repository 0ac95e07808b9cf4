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

# INFO <section> as a hash
sub redis_info {
    my ($section) = @_;
    my %h;
    for (redis('INFO', $section)) {
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
    my $rounds = $ENV{BENCH_ROUNDS} // 3;
    my $secret = "$DIR/bench-line.secret";
    system("head -c 48 /dev/urandom | base64 -w0 > $secret") == 0 or die;
    my $http = main::flux_http(threshold => "$rate burst=200")
             . "    fluxgate_queue_secret $secret;\n";
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
    my $m0 = redis_info('memory')->{used_memory};
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
    my $m1 = redis_info('memory')->{used_memory};
    my $per_buyer = ($m1 - $m0) / ($places || 1);
    my $stats = http_get("http://127.0.0.1:$port/queue/stats?productId=$p");
    my $st = eval { json_decode($stats->{content}) } || {};
    # what the bytes are: the keys of the product's line
    my %usage;
    for my $k (grep { length } redis('KEYS', "fg:{$p}:*")) {
        (my $kind = $k) =~ s/^fg:\{[^}]+\}://;
        $kind =~ s/^idem:.*/idem:<key>/;
        $kind =~ s/^q:\d+:b:\d+$/q:<e>:b:<bucket>/;
        $kind =~ s/^q:\d+:/q:<e>:/;
        $usage{$kind}{keys}++;
        $usage{$kind}{bytes} += redis('MEMORY', 'USAGE', $k, 'SAMPLES', '0') || 0;
    }
    my ($buyer_len) = map { length((ticket_fields($_))[1]) }
                      grep { length } split /\n/, `head -1 $files[0]`;
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
            my $r = loadgen(port => $who eq 'gate' ? $port : $ceiling,
                            c => $CONNS, d => $SECONDS, path => '/queue/status',
                            product => $p, poll_file => $all, poll_from => $next_from,
                            expect => $who eq 'gate' ? '200,400' : '200');
            die "line: $who polls failed: $r->{raw}" if $r->{rc};
            push @{ $who eq 'gate' ? \@gate : \@ceil }, $r;
            $next_from = ($next_from + $r->{responses} * $off / ($count || 1)) % $off;
            fair_say(sprintf 'line: round %d %-7s %.0f answers/s (200: %d, 400: %d) p99 %s ms',
                     $round, $who, $r->{rps}, $r->{status}{200}{count} // 0,
                     $r->{status}{400}{count} // 0, $r->{p99_ms});
        }
    }
    my $g = main::median(map { $_->{rps} } @gate);
    my $c = main::median(map { $_->{rps} } @ceil);
    my $ratio = $g / ($c || 1);
    my @pairs = map { sprintf '%.2f', $gate[$_]{rps} / ($ceil[$_]{rps} || 1) } 0 .. $#gate;
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

    # the line's keys go, so that Redis gives its memory back
    redis('UNLINK', grep { length } redis('KEYS', "fg:{$p}:*"));
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
                . '(%.0f vs %.0f/s, medians of %d alternating rounds; pairs %s; goal >= 0.8): %s',
                $ratio, $g, $c, $rounds, join(' ', @pairs), $verdict->($ratio >= 0.8)),
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
    push @md, "The gate: two nginx workers, fluxgate_threshold $rate/s burst 200 (the shipped "
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
                      . "%.1f MB before, %.1f MB after: **%.1f bytes per waiting buyer**.  "
                      . "After the polls: %.1f MB (polls write nothing).\n\n",
                      $places, $CONNS, 'u-b1<pid>-<n>', $buyer_len // 0, $book_s, $book_rate,
                      $p99, $passed, $m0 / 1e6, $m1 / 1e6, $per_buyer, $m2 / 1e6)
            . "| key | keys | MB (MEMORY USAGE) | bytes per place |\n| --- | ---: | ---: | ---: |\n"
            . $usage
            . sprintf("\nGET /queue/stats after booking: %s\n", $stats->{content} // '?')
            . "\n## Polls against nginx return 200\n\n"
            . "fg-loadgen --poll-file: $CONNS connections, each poll the next of the $count "
            . "tickets in booking order (X-Queue-Ticket), ${SECONDS}s per run, gate and "
            . "ceiling alternating.\n\n"
            . "| round | gate answers/s | 200 | 400 (window passed) | p99 ms | ceiling answers/s | p99 ms | gate / ceiling |\n"
            . "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
            . join('', map {
                  sprintf "| %d | %.0f | %d | %d | %s | %.0f | %s | %.2f |\n", $_ + 1,
                      $gate[$_]{rps}, $gate[$_]{status}{200}{count} // 0,
                      $gate[$_]{status}{400}{count} // 0, $gate[$_]{p99_ms},
                      $ceil[$_]{rps}, $ceil[$_]{p99_ms}, $gate[$_]{rps} / ($ceil[$_]{rps} || 1)
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
    write_part('line', 'A line of a million: booking, memory, polls, admission', @md);
    fair_say($_) for @goals;
}

1;
