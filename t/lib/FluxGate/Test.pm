package FluxGate::Test;

# What Flux-Gate's Perl tests share: reaching the stack that t/run started
# (its DIR/env is in %ENV), Redis and PostgreSQL through their own command
# line clients, Kafka through kcat and Kafka's TopicCommand, and the stack's
# services through supervisorctl, so a test can stop, kill or freeze one.

use strict;
use warnings;
use Exporter 'import';
use IO::Socket::INET;
use Time::HiRes qw(time sleep);
use JSON::PP ();

our @EXPORT = qw(redis psql kafka_produce kafka_consume kafka_create_topic
                 svc svc_pid wait_until uniq json_encode json_decode
                 http_post http_get prom_samples stack_env loadgen loadgen_start loadgen_wait order_rows wait_drained
                 nginx_workers set_stock pending_claim claim_state
                 run_reconcile metrics_scrape promtool_check
                 queue_secret redis_snapshot
                 queue_order queue_status free_port free_ports drained
                 skip_all_missing skip_missing redis_commandstats
                 redis_time_us wait_next_turn redis_each);

for my $v (qw(FG_ROOT FG_RUN_DIR REDIS_PORT PGPORT KAFKA_BOOTSTRAP)) {
    die "FluxGate::Test: $v is not set; run the suite with `make test`\n"
        unless defined $ENV{$v};
}

my $JSON = JSON::PP->new->canonical;
my $Seq = 0;

sub json_encode { $JSON->encode(shift) }
sub json_decode { JSON::PP->new->decode(shift) }

sub stack_env { $ENV{$_[0]} }

sub _shell_quote {
    my $s = shift;
    $s =~ s/'/'\\''/g;
    return "'$s'";
}

sub _run {
    my ($cmd) = @_;
    my $out = `$cmd`;
    die "command failed ($?): $cmd\n$out" if $? != 0;
    return $out;
}

# redis('GET', 'k') -> the reply as redis-cli --raw prints it, chomped;
# in list context one element per line.  On a stack with FG_REDIS_CLUSTER
# (REDIS_CLUSTER_NODES set) redis-cli follows MOVED and ASK (-c).
sub redis {
    my $cmd = "redis-cli -h 127.0.0.1 -p $ENV{REDIS_PORT} --raw "
            . ($ENV{REDIS_CLUSTER_NODES} ? '-c ' : '')
            . join(' ', map { _shell_quote($_) } @_) . ' 2>&1';
    my $out = _run($cmd);
    chomp $out;
    return wantarray ? split(/\n/, $out) : $out;
}

# redis_each(['HGET', 'k1', 't'], ['HGET', 'k2', 't'], ...) -> one reply
# line per command, in order: many commands through one redis-cli, read
# from a file (a command line would grow with the work).  Words with
# white space or quotes are not for it.
sub redis_each {
    my (@cmds) = @_;
    my $file = "$ENV{FG_RUN_DIR}/redis-each.$$." . ++$Seq;
    open my $fh, '>', $file or die "$file: $!";
    for my $c (@cmds) {
        die "redis_each: a word with white space or a quote: @$c\n"
            if grep { /[\s"']/ } @$c;
        print $fh join(' ', @$c), "\n";
    }
    close $fh;
    my @out = split /\n/, _run("redis-cli -h 127.0.0.1 -p $ENV{REDIS_PORT} --raw"
                               . " < $file 2>&1");
    unlink $file;
    die "redis_each: " . scalar(@out) . " replies to " . scalar(@cmds) . " commands\n"
        unless @out == @cmds;
    return @out;
}

# set_stock($product, $n) -> the new generation: what POST /init does in
# Redis (a new generation of the product's stock, holding $n units), for
# tests that want a product on sale without going through nginx.
# via => sub { ... } runs the command on another Redis than the stack's
# (called like redis(), with the command's words).
sub set_stock {
    my ($p, $n, %o) = @_;
    my $run = $o{via} || \&redis;
    return scalar $run->('EVAL',
        "local g = redis.call('HINCRBY', KEYS[2], 'g', 1) "
        . "redis.call('HSET', KEYS[2], 's', ARGV[1]) "
        . "redis.call('SET', KEYS[1], ARGV[1]) return g",
        2, "fg:{$p}:stock", "fg:{$p}:gen", $n);
}

# pending_claim($product, user => 'u', quantity => 1, age_ms => 60000,
#               key => ..., orderId => ...)
# -> {key, orderId, user, quantity, generation, at}: a reservation exactly
# as lua/order.lua leaves one whose Kafka outcome nginx never learnt (the
# v2 contract): stock and the buyer's count taken in the current
# generation, the idem hash pending without TTL, the key in fg:{p}:pending;
# reserved age_ms ago by Redis TIME; via => sub { ... } as for set_stock
sub pending_claim {
    my ($p, %o) = @_;
    my %c = (key => $o{key} // uniq('k'), user => $o{user} // 'u-1',
             quantity => $o{quantity} // 1,
             orderId => $o{orderId} // sprintf('%08x-%04x-7%03x-%04x-%012x',
                 int(time * 1000) % 2**32, int(rand 2**16), int(rand 2**12),
                 0x8000 | int(rand 2**14), int(rand 2**47)));
    my ($g, $at) = ($o{via} || \&redis)->('EVAL', q{
        local t = redis.call('TIME')
        local at = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
                   - tonumber(ARGV[5])
        local g = redis.call('HGET', KEYS[3], 'g')
        if not g then return redis.error_reply('no generation: set_stock first') end
        redis.call('DECRBY', KEYS[1], ARGV[3])
        redis.call('HINCRBY', KEYS[2], ARGV[2], ARGV[3])
        redis.call('HSET', KEYS[4], 's', 'pending', 'f', ARGV[2] .. ':' .. ARGV[3],
                   'o', ARGV[1], 'g', g, 'u', ARGV[2], 'q', ARGV[3], 't', at)
        redis.call('ZADD', KEYS[5], at, ARGV[4])
        return {g, at}},
        5, "fg:{$p}:stock", "fg:{$p}:buyers", "fg:{$p}:gen",
        "fg:{$p}:idem:$c{key}", "fg:{$p}:pending",
        $c{orderId}, $c{user}, $c{quantity}, $c{key}, $o{age_ms} // 60000);
    die "pending_claim($p): $g\n" unless defined $at;
    return { %c, generation => $g, at => $at };
}

# claim_state($product, $claim) -> 'pending', '200', 'gone', ...: the idem
# hash's s (gone: no hash), with ':listed' when the key is still in
# fg:{p}:pending
sub claim_state {
    my ($p, $c) = @_;
    my $s = redis('HGET', "fg:{$p}:idem:$c->{key}", 's');
    $s = 'gone' if $s eq '';
    my $listed = redis('ZSCORE', "fg:{$p}:pending", $c->{key});
    return $listed ne '' ? "$s:listed" : $s;
}

# run_reconcile('--repair', '-p', $p) -> (exit status, stdout, stderr):
# fluxgate-reconcile with this stack's Redis, PostgreSQL and Kafka
sub run_reconcile {
    my @args = @_;
    my $bin = $ENV{FG_RECONCILE} || "$ENV{FG_ROOT}/build/fluxgate-reconcile";
    my $base = "$ENV{FG_RUN_DIR}/reconcile.$$";
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        open STDOUT, '>', "$base.out" or die $!;
        open STDERR, '>', "$base.err" or die $!;
        exec $bin, '--redis', "127.0.0.1:$ENV{REDIS_PORT}",
            '--pg', "host=$ENV{FG_RUN_DIR}/pg/sock port=$ENV{PGPORT}"
                    . " dbname=fluxgate user=fluxgate",
            '--brokers', $ENV{KAFKA_BOOTSTRAP},
            '--topic', $ENV{KAFKA_TOPIC} || 'orders', @args
            or die "exec $bin: $!";
    }
    waitpid $pid, 0;
    my $rc = $? >> 8;
    my @out = map { local (@ARGV, $/) = $_; scalar(<>) // '' }
              "$base.out", "$base.err";
    unlink "$base.out", "$base.err";
    return ($rc, @out);
}

# psql('select ...') -> rows, columns joined by '|'.
# psql($sql, ids => [...]) first fills a temporary table ids(id text) with
# the list, for "where id in (select id::uuid from ids)": a list of any
# length.  The statements go to psql in a file, never on its command line,
# which would grow with the work (exec refuses one over 128 KB).
sub psql {
    my ($sql, %o) = @_;
    my $file = "$ENV{FG_RUN_DIR}/psql.$$." . ++$Seq;
    open my $fh, '>', $file or die "$file: $!";
    if ($o{ids}) {
        for (@{ $o{ids} }) {
            die "psql: an id with a tab, a newline or a backslash: $_\n"
                if /[\t\n\\]/;
        }
        print $fh "create temporary table ids (id text);\n",
                  "copy ids from stdin;\n", map({ "$_\n" } @{ $o{ids} }),
                  "\\.\n";
    }
    print $fh $sql, ($sql =~ /;\s*$/ ? "\n" : ";\n");
    close $fh;
    my $out = `psql -X -v ON_ERROR_STOP=1 -Atq -f $file 2>&1`;
    my $rc = $?;
    unlink $file;
    die "psql failed ($rc): $sql\n$out" if $rc != 0;
    chomp $out;
    return wantarray ? split(/\n/, $out) : $out;
}

# kafka_produce($topic, [[key, value], ...]) with acks from all replicas
sub kafka_produce {
    my ($topic, $msgs) = @_;
    my $file = "$ENV{FG_RUN_DIR}/produce.$$";
    open my $fh, '>', $file or die $!;
    for my $m (@$msgs) {
        die "kafka_produce: no record separators in test messages\n"
            if "$m->[0]$m->[1]" =~ /[\x1e\x1f]/;
        print $fh "$m->[0]\x1f$m->[1]\x1e";
    }
    close $fh;
    _run("kcat -P -b $ENV{KAFKA_BOOTSTRAP} -t " . _shell_quote($topic)
         # the separator bytes themselves, single-quoted: /bin/sh may be
         # dash, which has no $'\x1f'
         . " -K '\x1f' -D '\x1e' -X acks=all -l $file 2>&1");
    unlink $file;
}

# kafka_consume($topic, count => N, timeout => s, offset => 'beginning')
# -> list of {partition, offset, key, payload}
sub kafka_consume {
    my ($topic, %o) = @_;
    my $offset = $o{offset} // 'beginning';
    my $count  = $o{count} ? "-c $o{count}" : '';
    my $cmd = "timeout " . ($o{timeout} || 20) . " kcat -C -b $ENV{KAFKA_BOOTSTRAP}"
            . " -t " . _shell_quote($topic) . " -o $offset -e $count -J -q 2>&1";
    my $out = `$cmd`;
    my @msgs;
    for my $line (split /\n/, $out) {
        next unless $line =~ /^\{/;
        my $m = eval { JSON::PP->new->decode($line) } or next;
        push @msgs, $m;
    }
    return @msgs;
}

sub kafka_create_topic {
    my ($topic, $partitions) = @_;
    $partitions ||= 1;
    _run("java -cp '$ENV{FG_KAFKA_LIBS}/*'"
         . " -Dlog4j.configuration=file:$ENV{FG_RUN_DIR}/kafka/tools-log4j.properties"
         . " org.apache.kafka.tools.TopicCommand --bootstrap-server $ENV{KAFKA_BOOTSTRAP}"
         . " --create --if-not-exists --topic " . _shell_quote($topic)
         . " --partitions $partitions --replication-factor 1 2>&1");
}

# svc('stop', 'postgres'); svc('start', 'worker'); svc('status', 'redis')
sub svc {
    my ($action, $name) = @_;
    my $out = `FG_RUN_DIR=$ENV{FG_RUN_DIR} supervisorctl -c $ENV{FG_ROOT}/conf/supervisord.conf $action $name 2>&1`;
    chomp $out;
    return $out;
}

sub svc_pid {
    my ($name) = @_;
    my $pid = svc('pid', $name);
    return $pid =~ /^\d+$/ && $pid > 0 ? $pid : undef;
}

# wait_until(10, sub { ... }) -> true when the sub returned true in time
sub wait_until {
    my ($timeout, $cond) = @_;
    my $deadline = time + $timeout;
    while (time < $deadline) {
        my $ok = eval { $cond->() };
        return $ok if $ok;
        sleep 0.1;
    }
    return 0;
}

# uniq('p') -> an id no other test run used: product ids, keys, topics
sub uniq {
    my ($prefix) = @_;
    return sprintf "%s-%d-%d-%d", $prefix, $$, int(time * 1000) % 100000000,
        ++$Seq;
}

# http_post($url, $body, {header => value}) -> {status, headers, content}
sub http_post {
    my ($url, $body, $headers) = @_;
    require HTTP::Tiny;
    my $res = HTTP::Tiny->new(timeout => 10, max_redirect => 0)->request(
        'POST', $url, { headers => { 'Content-Type' => 'application/json',
                                     %{ $headers || {} } },
                        content => $body });
    return $res;
}

# http_get($url) -> {status, headers, content}
sub http_get {
    my ($url, $method) = @_;
    require HTTP::Tiny;
    return HTTP::Tiny->new(timeout => 10, max_redirect => 0)
        ->request($method // 'GET', $url);
}

# prom_samples($exposition_text [, raw => 1]) -> {'name{label="v",...}' =>
# value, ...}: the samples of a Prometheus text exposition, keyed as
# written (labels in the order the exporter wrote them); values are numbers
# unless raw
sub prom_samples {
    my ($text, %o) = @_;
    my %s;
    for my $line (split /\n/, $text // '') {
        next if $line =~ /^\s*(#|$)/;
        my ($k, $v) = $line =~ /^(\S+?(?:\{[^}]*\})?)\s+(\S+)/ or next;
        $s{$k} = $o{raw} ? $v : $v + 0;
    }
    return \%s;
}

# metrics_scrape($url) -> {text => exposition, status, type,
# 'name{label="v",...}' => value as written, ...}
sub metrics_scrape {
    my ($url) = @_;
    my $res = http_get($url);
    return { %{ prom_samples($res->{content}, raw => 1) },
             text => $res->{content}, status => $res->{status},
             type => $res->{headers}{'content-type'} // '' };
}

# promtool_check($exposition) -> (ok, output); ok is undef when promtool
# (Debian's prometheus package) is not installed
sub promtool_check {
    my ($text) = @_;
    chomp(my $bin = `command -v promtool 2>/dev/null`);
    return (undef, 'promtool not installed') unless $bin;
    my $file = "/tmp/fg-promtool.$$";
    open my $fh, '>', $file or die "$file: $!";
    print $fh $text;
    close $fh;
    my $out = `$bin check metrics < $file 2>&1`;
    my $ok = $? == 0;
    unlink $file;
    return ($ok, $out);
}

# loadgen(port => P, c => 200, n => 2000, product => 'p', log => 1, ...)
# runs build/fg-loadgen and returns {rps, total, errors, unexpected, unsent,
# p50_ms, p99_ms, p999_ms (every answer), rc (0, or 3 when the run failed),
# status => {200 => {count, p50_ms, p99_ms, ...}},
# log => [[st, id, body st, latency ms, ms since the start]]}
# rate => R is the open loop (latency from each request's due time);
# expect => '200,409' counts any other status as a failure of the run;
# urls => [...] instead of port spreads the connections over several gates;
# log_errors => 1 logs each request left without an answer as
# [0, '-', what, '-', ms since the start]; queue => '/queue/status' makes
# each connection a shopper that follows the waiting room (polls counted
# in {queue} => {queued, polls, admitted, sold_out, lost, p50_ms, p99_ms,
# challenged, proofs, out_of_order, ...}); with track => 1 also
# {track} => [[turn, kind, started, booked, last waiting sent, admitted
# seen, bought, challenges, hashes, solve ms, status]] per shopper;
# watch => FILE follows the tickets of FILE without ordering (with
# queue and once); poll_min => S; tickets_out => FILE keeps each 302's
# ticket; poll_file => FILE polls (path) with the tickets of FILE, from
# the line after byte poll_from; header => 'Name: value' on every order,
# body => JSON instead of the generated one
# loadgen_start(...) runs it in the background; loadgen_wait($h) collects.
sub loadgen { loadgen_wait(loadgen_start(@_)) }

sub loadgen_start {
    my (%o) = @_;
    my $bin = "$ENV{FG_ROOT}/build/fg-loadgen";
    my $base = "/tmp/fg-loadgen.$$." . ++$Seq;
    my $log = $o{log} ? "$base.log" : undef;
    # urls => [...]: several gates, as a load balancer spreads a crowd
    my @args = $o{urls}
        ? map { ('-u', m{^(?:http://)?([^/]+)} ? $1 : die "loadgen: url $_") } @{ $o{urls} }
        : ('-u', "127.0.0.1:" . ($o{port} // die "loadgen: port"));
    push @args, '-c', $o{c} // 50;
    push @args, '-n', $o{n} if $o{n};
    push @args, '-d', $o{d} if $o{d};
    push @args, '-R', $o{rate} if $o{rate};
    push @args, '-p', $o{path} if $o{path};
    push @args, '--product', $o{product} if $o{product};
    push @args, '--products', $o{products} if $o{products};
    push @args, '--quantity', $o{quantity} if $o{quantity};
    push @args, '--users', $o{users} if $o{users};
    push @args, '--run', $o{run} if $o{run};
    push @args, '--same-key' if $o{same_key};
    push @args, '--once' if $o{once};
    push @args, '--log', $log if $log;
    push @args, '--expect', $o{expect} if $o{expect};
    push @args, '--log-errors' if $log && $o{log_errors};
    push @args, '--queue', $o{queue} if $o{queue};
    my $track = $o{track} ? "$base.track" : undef;
    push @args, '--track', $track if $track;
    push @args, '--watch', $o{watch} if $o{watch};
    push @args, '--poll-min', $o{poll_min} if $o{poll_min};
    push @args, '--tickets-out', $o{tickets_out} if $o{tickets_out};
    push @args, '--poll-file', $o{poll_file} if $o{poll_file};
    push @args, '--poll-from', int($o{poll_from}) if $o{poll_from};
    push @args, '--header', $o{header} if $o{header};
    push @args, '--body', $o{body} if $o{body};
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        open STDOUT, '>', "$base.out" or die;
        open STDERR, '>&', \*STDOUT or die;
        exec $bin, @args or die "exec $bin: $!";
    }
    return { pid => $pid, out => "$base.out", log => $log, track => $track };
}

sub loadgen_wait {
    my ($h) = @_;
    waitpid $h->{pid}, 0;
    my $out = do { local (@ARGV, $/) = $h->{out}; <> } // '';
    unlink $h->{out};
    my %r = (raw => $out, status => {},
             rc => ($? & 127) ? 128 + ($? & 127) : $? >> 8);
    for my $line (split /\n/, $out) {
        my %kv = $line =~ /(\w+)=(\S+)/g;
        if (defined $kv{status}) {
            $r{status}{$kv{status}} = \%kv;
        } elsif ($line =~ /^queue /) {
            $r{queue} = \%kv;
        } elsif (defined $kv{requests}) {
            %r = (%r, %kv);
        }
    }
    if ($h->{log}) {
        open my $fh, '<', $h->{log} or die "loadgen log: $!";
        $r{log} = [ map { chomp; [split / /] } <$fh> ];
        unlink $h->{log};
    }
    if ($h->{track}) {
        # absent when the run failed before its summary
        if (open my $fh, '<', $h->{track}) {
            $r{track} = [ map { chomp; [split / /] } <$fh> ];
        }
        unlink $h->{track};
    }
    return \%r;
}

# rows of one product in the orders table: [[id, user, quantity, status]]
sub order_rows {
    my ($product) = @_;
    return [ map { [split /\|/] } psql("select id, user_id, quantity, status "
        . "from orders where product_id = '$product' order by id") ];
}

# drained(timeout => 60, topic => 'orders', group => 'fluxgate-inventory')
# -> true once the worker's consumer group has committed every partition
# of the topic up to the end offsets it had when this was called: every
# message produced before it (every order answered 200 by then) is in
# PostgreSQL, and nothing more of it will come (build/fg-drained).  The
# barrier between a sale and its books; no sleep "long enough" for the
# worker.  Says on failure which partition stayed behind.
sub drained {
    my (%o) = @_;
    my $bin = "$ENV{FG_ROOT}/build/fg-drained";
    die "drained: $bin is not built (make test-tools)\n" unless -x $bin;
    my @cmd = ($bin, '-b', $ENV{KAFKA_BOOTSTRAP},
               '-t', $o{topic} // $ENV{KAFKA_TOPIC} // 'orders',
               '-g', $o{group} // 'fluxgate-inventory',
               '-w', $o{timeout} // 90);
    my $out = `@{[ join ' ', map { _shell_quote($_) } @cmd ]} 2>&1`;
    return 1 if $? == 0;
    require Test::More;
    Test::More::diag("not drained: $out");
    return 0;
}

# wait_drained($product, timeout => 90) -> the product's rows once every
# order produced so far is recorded (drained)
sub wait_drained {
    my ($product, %o) = @_;
    drained(%o);
    return order_rows($product);
}

# skip_all_missing($why): the whole file cannot run here because something
# it needs is missing.  Under `make test` (t/run sets FG_REQUIRE_ALL=1) that
# is a failure, not a skip: a suite that silently skips what it cannot run
# passes on a machine where nothing of it ran.
sub skip_all_missing {
    my ($why) = @_;
    require Test::More;
    if ($ENV{FG_REQUIRE_ALL}) {
        Test::More::plan(tests => 1);
        Test::More::fail("cannot run: $why (a skip is a failure under"
                         . " FG_REQUIRE_ALL=1, as make test runs)");
        exit 1;
    }
    Test::More::plan(skip_all => $why);
}

# skip_missing($why, $n) inside a SKIP block: the same for $n tests
sub skip_missing {
    my ($why, $n) = @_;
    require Test::More;
    if ($ENV{FG_REQUIRE_ALL}) {
        Test::More::fail("cannot run: $why (a skip is a failure under"
                         . " FG_REQUIRE_ALL=1, as make test runs)");
        $n--;
    }
    Test::More::skip($why, $n);
}

# queue_secret() -> the path of a fluxgate_queue_secret file (48 random
# bytes, base64) in the stack's run directory; queue_secret('short') one
# that is too short
sub queue_secret {
    my ($kind) = @_;
    my $file = "$ENV{FG_RUN_DIR}/queue-test-" . ($kind // 'secret');
    return $file if -s $file;
    my $text = $kind && $kind eq 'short' ? 'only-31-bytes-of-secret-0123456'
             : `head -c 48 /dev/urandom | base64 -w0`;
    open my $fh, '>', $file or die "$file: $!";
    print $fh "$text\n";
    close $fh;
    chmod 0600, $file;
    return $file;
}

sub _b64url_decode {
    my ($s) = @_;
    require MIME::Base64;
    $s =~ tr{-_}{+/};
    $s .= '=' x ((4 - length($s) % 4) % 4);
    return MIME::Base64::decode_base64($s);
}

sub _b64url_encode {
    require MIME::Base64;
    (my $s = MIME::Base64::encode_base64(shift, '')) =~ tr{+/}{-_};
    $s =~ s/=+$//;
    return $s;
}

# a TCP port on 127.0.0.1 nothing listens on now
sub free_port {
    my $s = IO::Socket::INET->new(Listen => 1, LocalAddr => '127.0.0.1',
                                  LocalPort => 0, Proto => 'tcp', ReuseAddr => 1)
        or die "no free port: $!";
    my $p = $s->sockport;
    close $s;
    return $p;
}

# free_ports($n) -> $n distinct such ports (two asked at once may repeat)
sub free_ports {
    my ($n) = @_;
    my (%taken, @ports);
    while (@ports < $n) {
        my $p = free_port();
        push @ports, $p unless $taken{$p}++;
    }
    return @ports;
}

# redis_commandstats() -> {command => calls} from INFO commandstats: what
# Redis was asked to do, counted by Redis itself
sub redis_commandstats {
    my %calls;
    for (redis('INFO', 'commandstats')) {
        my ($cmd, $n) = /^cmdstat_([\w|]+):calls=(\d+)/ or next;
        $calls{$cmd} = $n;
    }
    return \%calls;
}

# Redis TIME in microseconds: the clock every reservation, rate and
# ticket of the gate is decided on
sub redis_time_us {
    my ($s, $us) = redis('TIME');
    return $s * 1_000_000 + $us;
}

# wait_next_turn($product, $rate, $secs) -> true once, by Redis's clock,
# the product's line has a free turn at $rate a second (the line record
# fg:{p}:q: h turns admitted at time t, n handed out): the next order
# passes the threshold.  What a test waits for instead of sleeping "a
# second".  No record yet: true at once.
sub wait_next_turn {
    my ($p, $rate, $secs) = @_;
    my ($n, $h, $t) = redis('HMGET', "fg:{$p}:q", 'n', 'h', 't');
    return 1 unless defined $t && length $t;
    my $due = $t + (($n || 0) + 1 - ($h || 0)) * 1_000_000 / $rate;
    return wait_until($secs // 30, sub { redis_time_us() >= $due + 1000 });
}

# redis_snapshot($product) -> every key of the product with its DUMP, as
# one string: equal snapshots mean Redis did not change for it
sub redis_snapshot {
    my ($p) = @_;
    my @keys = sort grep { length } redis('KEYS', "fg:{$p}:*");
    return join "\n", map { my $d = redis('DUMP', $_); unpack('H*', $d) . " $_" } @keys;
}

# queue_order($port, $product, $key, ticket => T, user => u) -> the
# response of POST /order (HTTP::Tiny's hash)
sub queue_order {
    my ($port, $p, $key, %o) = @_;
    my %h = ('X-Idempotency-Key' => $key);
    $h{'X-Queue-Ticket'} = $o{ticket} if defined $o{ticket};
    return http_post("http://127.0.0.1:$port" . ($o{path} // '/order'),
                     json_encode({ productId => $p,
                                   userId => $o{user} // "u-$key" }), \%h);
}

# queue_status($port, $product, $ticket) -> (status, decoded body or
# undef, response)
sub queue_status {
    my ($port, $p, $t, $path) = @_;
    my $res = http_get("http://127.0.0.1:$port" . ($path // '/queue/status')
                       . "?productId=$p&ticket=$t");
    my $body = eval { json_decode($res->{content}) };
    return ($res->{status}, $body, $res);
}

# pids of an nginx master's worker processes
sub nginx_workers {
    my ($master) = @_;
    return sort { $a <=> $b } grep { /\d/ }
        split /\s+/, `pgrep -P $master 2>/dev/null`;
}

1;
