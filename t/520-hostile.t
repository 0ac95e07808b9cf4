# The hostile input corpus (t/hostile/corpus.pl) against the live gate: the
# stack's own nginx with conf/nginx.conf.  Each request must get its
# documented status with a JSON error body, and none may change anything:
# the Redis script is never run (EVALSHA call count and key count unchanged),
# nothing is produced to Kafka (end offsets unchanged), and the nginx workers
# that answered are the same processes afterwards.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use IO::Socket::INET;
use Time::HiRes qw(sleep time);
use FluxGate::Test;

my $cases = do './t/hostile/corpus.pl' or die "corpus: $@ $!";
my ($port) = $ENV{FLUXGATE_URL} =~ /:(\d+)$/;

sub evalsha_calls {
    my $n = 0;
    for (grep { /^cmdstat_eval(sha)?:/ } redis('INFO', 'commandstats')) {
        $n += $1 if /calls=(\d+)/;
    }
    return $n;
}

sub kafka_end_offsets {
    my $out = `kcat -b $ENV{KAFKA_BOOTSTRAP} -Q -t $ENV{KAFKA_TOPIC}:0:-1 -t $ENV{KAFKA_TOPIC}:1:-1 -t $ENV{KAFKA_TOPIC}:2:-1 -t $ENV{KAFKA_TOPIC}:3:-1 2>&1`;
    return join ',', sort $out =~ /(\[\d+\]\s+offset\s+-?\d+)/g;
}

sub request_bytes {
    my ($c) = @_;
    return $c->{raw} if defined $c->{raw};
    my $method = $c->{method} // 'POST';
    my $head = "$method /order HTTP/1.1\r\nHost: gate\r\nConnection: close\r\n";
    my $ctype = exists $c->{ctype} ? $c->{ctype} : 'application/json';
    $head .= "Content-Type: $ctype\r\n" if defined $ctype;
    my $key = exists $c->{key} ? $c->{key} : 'hostile-' . int(rand 1e9);
    $head .= "X-Idempotency-Key: $key\r\n" if defined $key;
    if ($c->{chunked}) {
        my $b = $c->{body};
        my $chunks = '';
        while (length $b) {
            my $piece = substr($b, 0, 1000, '');
            $chunks .= sprintf("%x\r\n%s\r\n", length $piece, $piece);
        }
        return "${head}Transfer-Encoding: chunked\r\n\r\n${chunks}0\r\n\r\n";
    }
    return $head . "Content-Length: " . length($c->{body}) . "\r\n\r\n$c->{body}";
}

# sends one case; returns (status or 'closed', body)
sub send_case {
    my ($c) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                  Timeout => 5) or die "connect: $!";
    binmode $s;
    my @pieces = $c->{pieces} ? @{ $c->{pieces} } : (request_bytes($c));
    for my $i (0 .. $#pieces) {
        sleep 0.3 if $i;
        print $s $pieces[$i];
    }
    sleep $c->{stall} if $c->{stall};
    my $resp = '';
    my $deadline = time + 15;
    while (time < $deadline) {
        my $n = sysread($s, my $buf, 65536);
        last unless $n;
        $resp .= $buf;
    }
    return ('closed', '') unless $resp =~ m{^HTTP/1\.\d (\d{3})};
    my $status = $1;
    my ($body) = $resp =~ /\r\n\r\n(.*)\z/s;
    return ($status, $body // '');
}

my $master = svc_pid('nginx');
my @workers = nginx_workers($master);
ok(@workers, 'the gate has workers');
# every key the corpus could have reached: the products its bodies name
my @products = qw(p1 p2 hostile-p);
sub product_keys {
    return join ',', map { my $p = $_;
        (redis('EXISTS', "fg:{$p}:stock", "fg:{$p}:q", "fg:{$p}:buyers"),
         scalar(() = redis('--scan', '--pattern', "fg:{$p}:idem:*"))) } @products;
}
my $keys = product_keys();
my $calls = evalsha_calls();
my $offsets = kafka_end_offsets();
like($offsets, qr/offset/, 'Kafka end offsets readable') or diag($offsets);

for my $c (@$cases) {
    my ($status, $body) = send_case($c);
    if (ref $c->{status}) {
        like($status, $c->{status}, "$c->{name}: $status");
    } else {
        is($status, $c->{status}, "$c->{name}: $c->{status}")
            or diag(substr($body, 0, 200));
    }
    # our own 400s name what was wrong, in JSON
    if ($status eq '400' && $body =~ /^\s*\{/) {
        like($body, qr/"status"\s*:\s*"error"/, "$c->{name}: JSON error body");
    }
}

is(evalsha_calls(), $calls, 'the Redis script never ran');
is(product_keys(), $keys, 'no Redis key created');
is(kafka_end_offsets(), $offsets, 'nothing produced to Kafka');
is(svc_pid('nginx'), $master, 'the nginx master is the same');
is_deeply([nginx_workers($master)], \@workers, 'the same nginx workers answered')
    or diag("before @workers, after @{[nginx_workers($master)]}");
diag(scalar(@$cases) . ' hostile inputs');

done_testing();
