package FluxGate::Queue;

# What the waiting room's tests (t/200-t/209) share:
#   - the gate's signed texts, read and made as the gate makes them:
#     tickets, challenges, and the shop's HS256 user tokens (HMAC-SHA256
#     from Digest::SHA, keyed with the test's own copy of the secret
#     file), and proofs of work (FluxGate::Shop's solver);
#   - orders and polls with their JSON decoded, the admin listener's
#     levers (/init, /queue/control, /queue/stats);
#   - Redis observed: a product's line record, its places, the command
#     counts of INFO commandstats (writes among them), the key count;
#   - the statistics of the fairness checks: Spearman's rho, chi-square.

use strict;
use warnings;
use Exporter 'import';
use Digest::SHA qw(hmac_sha256);
use HTTP::Tiny;
use MIME::Base64 qw(encode_base64 decode_base64);
use POSIX ();
use Time::HiRes qw(time sleep);
use FluxGate::Test;
use FluxGate::Shop qw(pow_solve pow_bits);

our @EXPORT = qw(b64url b64url_decode secret_of queue_setup
                 ticket_decode ticket_sign ticket_forge
                 challenge_decode challenge_sign proof_of pow_solve pow_bits
                 jwt
                 order poll admin_post control stats init_sale paused_product
                 line_of epoch_of spent places_of redis_now redis_calls redis_writes
                 redis_keys open_now redis_monitor order_calls product_writes
                 cookies_of location_parts
                 spawn collect parallel spearman chi_square $CHI2_DF9_P01);

# chi-square's critical value for 9 degrees of freedom at p = 0.01
our $CHI2_DF9_P01 = 21.666;

sub b64url {
    (my $s = encode_base64(shift, '')) =~ tr{+/}{-_};
    $s =~ s/=+$//;
    return $s;
}

sub b64url_decode {
    (my $s = shift // '') =~ tr{-_}{+/};
    return decode_base64($s . '=' x ((4 - length($s) % 4) % 4));
}

# secret_of($file) -> the key as the gate reads it: trailing newlines
# are not part of it
sub secret_of {
    my ($file) = @_;
    open my $fh, '<', $file or die "$file: $!";
    local $/;
    my $s = <$fh>;
    $s =~ s/[\r\n]+\z//;
    return $s;
}

# base64url(payload) "." base64url(HMAC-SHA256(secret, the first part))
sub _seal {
    my ($secret, $payload) = @_;
    my $enc = b64url($payload);
    return "$enc." . b64url(hmac_sha256($enc, $secret));
}

my @TICKET = qw(product buyer epoch kind seq expires);
my @CHALLENGE = qw(product buyer expires nonce);

sub _fields {
    my ($text, $names) = @_;
    my ($payload) = split /\./, $text // '';
    my %f;
    @f{@$names} = split /\|/, b64url_decode($payload), -1;
    return \%f;
}

# ticket_decode($ticket) -> {product, buyer, epoch, kind ('q' in line,
# 'p' pre-queue), seq, expires (unix s)}
sub ticket_decode { _fields($_[0], \@TICKET) }

# ticket_sign($secret, product => p, buyer => b, epoch => e, kind => 'q',
# seq => n, expires => s) -> a ticket as the gate signs one
sub ticket_sign {
    my ($secret, %f) = @_;
    return _seal($secret, join '|', map { $f{$_} // die "ticket_sign: $_" } @TICKET);
}

# ticket_forge($ticket, seq => 0, ...) -> the same ticket with fields
# changed and the gate's MAC kept: what a client jumping the line sends
sub ticket_forge {
    my ($t, %change) = @_;
    my (undef, $mac) = split /\./, $t;
    my $f = ticket_decode($t);
    %$f = (%$f, %change);
    return b64url(join '|', @$f{@TICKET}) . ".$mac";
}

# challenge_decode($c) -> {product, buyer, expires, nonce (hex)}
sub challenge_decode { _fields($_[0], \@CHALLENGE) }

# challenge_sign($secret, product => p, buyer => b, expires => s
# [, nonce => 32 hex]) -> a challenge as the gate signs one
sub challenge_sign {
    my ($secret, %f) = @_;
    $f{nonce} //= join '', map { sprintf '%02x', int rand 256 } 1 .. 16;
    return _seal($secret, join '|', map { $f{$_} // die "challenge_sign: $_" } @CHALLENGE);
}

# proof_of($challenge, $bits) -> "<challenge>.<n>", the X-Queue-Proof
sub proof_of {
    my ($c, $bits) = @_;
    return "$c." . pow_solve($c, $bits);
}

# jwt($secret, {sub => 'u', exp => ...}, header => {...}, signature =>
# 'text') -> a compact JWS: HS256 over "<header>.<claims>" unless a
# signature (or a header naming another alg) is given
sub jwt {
    my ($secret, $claims, %o) = @_;
    my $h = b64url(ref $o{header} ? json_encode($o{header})
                   : $o{header} // json_encode({ alg => 'HS256', typ => 'JWT' }));
    my $c = b64url(ref $claims ? json_encode($claims) : $claims);
    my $sig = exists $o{signature} ? $o{signature}
            : b64url(hmac_sha256("$h.$c", $secret));
    return "$h.$c.$sig";
}

sub _http { HTTP::Tiny->new(timeout => 30, max_redirect => 0) }

sub _decoded {
    my ($res) = @_;
    $res->{json} = eval { json_decode($res->{content}) } || {};
    return $res;
}

# order($port, $p, key => k, user => u (undef: the body has no userId;
# default "u-<key>"), ticket => T, proof => P, token => jwt (the
# shop_session cookie), auth => 'Bearer ...', headers => {...},
# path => '/order', quantity => n) -> the response, {json} decoded,
# {key} the key sent
sub order {
    my ($port, $p, %o) = @_;
    my $key = $o{key} // uniq('k');
    my %body = (productId => $p);
    my $user = exists $o{user} ? $o{user} : "u-$key";
    $body{userId} = $user if defined $user;
    $body{quantity} = $o{quantity} if defined $o{quantity};
    my %h = ('Content-Type' => 'application/json',
             'X-Idempotency-Key' => $key, %{ $o{headers} || {} });
    $h{'X-Queue-Ticket'} = $o{ticket} if defined $o{ticket};
    $h{'X-Queue-Proof'} = $o{proof} if defined $o{proof};
    $h{Cookie} = "shop_session=$o{token}" if defined $o{token};
    $h{Authorization} = $o{auth} if defined $o{auth};
    my $res = _http()->request('POST', "http://127.0.0.1:$port"
                               . ($o{path} // '/order'),
                               { headers => \%h, content => json_encode(\%body) });
    $res->{key} = $key;
    return _decoded($res);
}

# poll($port, $p, $ticket, query => 1, path => '/queue/status') ->
# (status, JSON or {}, response): the ticket in X-Queue-Ticket, or with
# query the old pages' ?ticket=
sub poll {
    my ($port, $p, $t, %o) = @_;
    my $url = "http://127.0.0.1:$port" . ($o{path} // '/queue/status')
            . "?productId=$p" . ($o{query} ? "&ticket=$t" : '');
    my $res = _http()->request('GET', $url,
        { headers => $o{query} || !defined $t ? {} : { 'X-Queue-Ticket' => $t } });
    _decoded($res);
    return ($res->{status}, $res->{json}, $res);
}

# admin_post($port, '/queue/control', {...} or 'raw', key => k (undef:
# none; default a fresh one)) -> the response, {json} decoded
sub admin_post {
    my ($port, $path, $body, %o) = @_;
    my $key = exists $o{key} ? $o{key} : uniq('admin');
    return _decoded(_http()->request('POST', "http://127.0.0.1:$port$path", {
        headers => { 'Content-Type' => 'application/json',
                     defined $key ? ('X-Idempotency-Key' => $key) : () },
        content => ref $body ? json_encode($body) : $body }));
}

# control($admin_port, $p, 'pause' | 'resume' | 'close' | 'rate',
# rate => N, key => k) -> the response (not checked)
sub control {
    my ($port, $p, $action, %o) = @_;
    my %body = (productId => $p, action => $action);
    $body{rate} = $o{rate} if defined $o{rate};
    return admin_post($port, '/queue/control', \%body,
                      exists $o{key} ? (key => $o{key}) : ());
}

# stats($admin_port, $p) -> GET /queue/stats's JSON (dies unless 200)
sub stats {
    my ($port, $p) = @_;
    my $res = _http()->get("http://127.0.0.1:$port/queue/stats?productId=$p");
    die "stats($p): $res->{status} $res->{content}\n" unless $res->{status} == 200;
    return json_decode($res->{content});
}

# init_sale($admin_port, $p, $quantity, opensAt => unix s) -> the
# response of POST /init (dies unless 200)
sub init_sale {
    my ($port, $p, $n, %o) = @_;
    my %body = (productId => $p, quantity => $n);
    $body{opensAt} = $o{opensAt} if defined $o{opensAt};
    my $res = admin_post($port, '/init', \%body);
    die "init_sale($p): $res->{status} $res->{content}\n" unless $res->{status} == 200;
    return $res;
}

# paused_product($admin_port, stock => n) -> a new product on sale whose
# line is paused: every arrival gets a place, and nobody is admitted
# until it is resumed (positions stay put meanwhile)
sub paused_product {
    my ($port, %o) = @_;
    my $p = uniq('p');
    set_stock($p, $o{stock} // 100);
    my $res = control($port, $p, 'pause');
    die "pause($p): $res->{status} $res->{content}\n" unless $res->{status} == 200;
    return $p;
}

# a Lua reply as JSON: every field, empty ones too (redis-cli drops none)
sub _redis_json {
    my ($lua, @keys) = @_;
    return json_decode(scalar redis('EVAL', $lua, scalar(@keys), @keys));
}

# line_of($p) -> the line record fg:{p}:q as a hash ({} when none)
sub line_of {
    my ($p) = @_;
    my $flat = _redis_json("return cjson.encode(redis.call('HGETALL', KEYS[1]))",
                           "fg:{$p}:q");
    return { ref $flat eq 'ARRAY' ? @$flat : () };
}

# epoch_of($p) -> the product's current sale (0 until /init announces one)
sub epoch_of { line_of($_[0])->{e} // 0 }

# spent($p, $turn) -> 1 when the turn of the current sale was spent by an
# order, else 0
sub spent {
    my ($p, $turn) = @_;
    return scalar redis('GETBIT', "fg:{$p}:q:" . epoch_of($p) . ':spent', $turn);
}

# places_of($p) -> the places the product's current sale holds: one entry
# per buyer in the pre-queue and in the line's buckets
sub places_of {
    my ($p) = @_;
    my $e = epoch_of($p);
    my $n = 0;
    for my $k (grep { length } redis('KEYS', "fg:{$p}:q:$e:*")) {
        next unless $k =~ /:(?:b:\d+|pb)$/;
        $n += redis('HLEN', $k);
    }
    return $n;
}

# redis_now() -> Redis TIME in microseconds
sub redis_now {
    my ($s, $us) = redis('TIME');
    return $s * 1000000 + $us;
}

# open_now($p): the opening announced for later comes now.  What waiting
# for it would do (the first script at or after opensAt opens the sale),
# without the test depending on how long its arrivals took to arrive.
sub open_now {
    my ($p) = @_;
    redis('HSET', "fg:{$p}:q", 'o', redis_now());
}

# redis_calls() -> {command => calls} from INFO commandstats (commands a
# script runs are counted too)
sub redis_calls {
    my %c;
    for (redis('INFO', 'commandstats')) {
        $c{$1} = $2 if /^cmdstat_(\S+?):calls=(\d+)/;
    }
    return \%c;
}

my %Write;

# redis_writes($calls) -> the calls of write commands among them
# (COMMAND LIST FILTERBY ACLCAT write), by name
sub redis_writes {
    my ($c) = @_;
    %Write = map { $_ => 1 } grep { length } redis('COMMAND', 'LIST',
                                                   'FILTERBY', 'ACLCAT', 'write')
        unless %Write;
    return { map { $_ => $c->{$_} } grep { $Write{$_} } keys %$c };
}

# redis_keys() -> keys in the database
sub redis_keys { scalar redis('DBSIZE') }

# redis_monitor(sub { ... }) -> (the commands Redis ran while the sub
# ran, one MONITOR line each, those of scripts included; what the sub
# returned).  A mark before and after (ECHO) bounds the lines exactly.
sub redis_monitor {
    my ($code) = @_;
    my $file = "$ENV{FG_RUN_DIR}/monitor." . uniq('m');
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        open STDOUT, '>', $file or die "$file: $!";
        exec 'redis-cli', '-h', '127.0.0.1', '-p', $ENV{REDIS_PORT}, 'monitor'
            or die "exec redis-cli: $!";
    }
    my $mark = uniq('fg-monitor');
    my $seen = sub {
        open my $fh, '<', $file or return 0;
        local $/;
        return index(<$fh> // '', $_[0]) >= 0;
    };
    wait_until(10, sub { redis('ECHO', "$mark-start"); $seen->("$mark-start") })
        or die "redis_monitor: MONITOR never started\n";
    my @r = $code->();
    redis('ECHO', "$mark-end");
    my $ended = wait_until(10, sub { $seen->("$mark-end") });
    kill 'TERM', $pid;
    waitpid $pid, 0;
    die "redis_monitor: the end mark never came\n" unless $ended;
    open my $fh, '<', $file or die "$file: $!";
    my @lines = map { chomp; $_ } <$fh>;
    unlink $file;
    my ($from) = grep { index($lines[$_], "\"$mark-start\"") >= 0 } 0 .. $#lines;
    my ($to) = grep { index($lines[$_], "\"$mark-end\"") >= 0 } 0 .. $#lines;
    return ([ @lines[$from + 1 .. $to - 1] ], @r);
}

# order_calls(\@monitor_lines, $p) -> the lines that ran order.lua for $p
# (its EVALSHA names the order's key, fg:{p}:idem:<key>)
sub order_calls {
    my ($lines, $p) = @_;
    return grep { /\] "EVALSHA?" / && index($_, "\"fg:{$p}:idem:") >= 0 } @$lines;
}

# product_writes(\@monitor_lines, $p) -> the lines that wrote a key of
# $p (from a script or not)
sub product_writes {
    my ($lines, $p) = @_;
    redis_writes({});
    return grep { /\] "([^"]+)" "fg:\{\Q$p\E\}:/ && $Write{lc $1} } @$lines;
}

# cookies_of($res) -> {name => {value => v, attr => {lc name => value}}}
sub cookies_of {
    my ($res) = @_;
    my $h = $res->{headers}{'set-cookie'};
    my %c;
    for my $line (ref $h ? @$h : defined $h ? ($h) : ()) {
        my ($nv, @attr) = split /;\s*/, $line;
        my ($n, $v) = split /=/, $nv, 2;
        $c{$n} = { value => $v, attr => { map { my ($k, $a) = split /=/, $_, 2;
                                                 (lc $k => $a // 1) } @attr } };
    }
    return \%c;
}

# location_parts($res) -> (path, query, fragment) of its Location
sub location_parts {
    my ($res) = @_;
    my $loc = $res->{headers}{location} // '';
    $loc =~ s{^https?://[^/]+}{};
    my ($pq, $frag) = split /#/, $loc, 2;
    my ($path, $query) = split /\?/, $pq, 2;
    return ($path, $query // '', $frag // '');
}

# queue_setup($name, user => 1) -> the waiting room's secret (raw bytes):
# a topic of the file's own (TEST_NGINX_TOPIC), a queue secret file
# (TEST_NGINX_QUEUE_SECRET), with user => 1 a user token secret
# (TEST_NGINX_USER_SECRET), and a port for the admin listener
# (TEST_NGINX_ADMIN_PORT)
sub queue_setup {
    my ($name, %o) = @_;
    $ENV{TEST_NGINX_TOPIC} = uniq($name);
    kafka_create_topic($ENV{TEST_NGINX_TOPIC});
    $ENV{TEST_NGINX_QUEUE_SECRET} = queue_secret();
    $ENV{TEST_NGINX_USER_SECRET} = queue_secret('user') if $o{user};
    $ENV{TEST_NGINX_ADMIN_PORT} = free_port();
    return secret_of($ENV{TEST_NGINX_QUEUE_SECRET});
}

# spawn(sub { ... return @lines }) -> a process running the sub now;
# collect(@spawned) -> their lines, in the order given (waits for them)
sub spawn {
    my ($code, @args) = @_;
    pipe(my $r, my $w) or die "pipe: $!";
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        close $r;
        my @out = eval { $code->(@args) };
        print $w "died: $@\n" if $@;
        print $w "$_\n" for @out;
        close $w;
        POSIX::_exit(0);
    }
    close $w;
    return [$pid, $r];
}

sub collect {
    my @lines;
    for my $k (@_) {
        my $fh = $k->[1];
        push @lines, map { chomp; $_ } <$fh>;
        waitpid $k->[0], 0;
    }
    die join("\n", grep { /^died: / } @lines) . "\n" if grep { /^died: / } @lines;
    return @lines;
}

# parallel($n, sub { my ($i) = @_; ... return @lines }) -> the lines of
# $n processes run at once, in process order
sub parallel {
    my ($n, $code) = @_;
    return collect(map { spawn($code, $_) } 0 .. $n - 1);
}

sub _ranks {
    my ($v) = @_;
    my @idx = sort { $v->[$a] <=> $v->[$b] } 0 .. $#$v;
    my @rank;
    my $i = 0;
    while ($i < @idx) {
        my $j = $i;
        $j++ while $j + 1 < @idx && $v->[$idx[$j + 1]] == $v->[$idx[$i]];
        $rank[$idx[$_]] = ($i + $j) / 2 + 1 for $i .. $j;    # ties: mean rank
        $i = $j + 1;
    }
    return \@rank;
}

# spearman(\@x, \@y) -> Spearman's rank correlation (Pearson's over ranks)
sub spearman {
    my ($x, $y) = @_;
    die "spearman: lengths differ\n" unless @$x == @$y && @$x > 1;
    my ($rx, $ry) = (_ranks($x), _ranks($y));
    my $n = @$x;
    my $m = ($n + 1) / 2;
    my ($sxy, $sxx, $syy) = (0, 0, 0);
    for my $i (0 .. $n - 1) {
        my ($a, $b) = ($rx->[$i] - $m, $ry->[$i] - $m);
        $sxy += $a * $b;
        $sxx += $a * $a;
        $syy += $b * $b;
    }
    return $sxy / sqrt($sxx * $syy);
}

# chi_square(\@observed, \@expected) -> the statistic
sub chi_square {
    my ($o, $e) = @_;
    my $x = 0;
    $x += ($o->[$_] - $e->[$_]) ** 2 / $e->[$_] for 0 .. $#$o;
    return $x;
}

1;
