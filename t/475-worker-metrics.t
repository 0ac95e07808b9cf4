# The worker's /metrics (--metrics-listen, on in the stack): a known set of
# messages moves each counter by exactly what it holds (3 accepted, 1
# rejected, 1 stock_set, 1 dead letter, then 1 duplicate), the batch size
# histogram adds up, the consumer lag of the partitions appears and falls
# to 0 once the worker has caught up, the last commit's time is now,
# promtool finds the exposition valid, and anything but GET /metrics or
# GET /healthz is answered 404 or 405 without taking the responder down.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use IO::Socket::INET;
use Time::HiRes qw(time sleep);
use FluxGate::Test;
use FluxGate::Worker;

my $url = $ENV{FLUXGATE_WORKER_METRICS_URL};
ok($url, "FLUXGATE_WORKER_METRICS_URL in the stack's env ($url)")
    or BAIL_OUT('the stack does not export FLUXGATE_WORKER_METRICS_URL');
ok(wait_until(20, sub { %{ worker_metrics() } }), 'the worker answers GET /metrics')
    or BAIL_OUT('no /metrics: ' . `tail -5 @{[worker_log()]}`);

my @counters = (
    'fluxgate_worker_orders_total{status="accepted"}',
    'fluxgate_worker_orders_total{status="rejected"}',
    'fluxgate_worker_orders_total{status="duplicate"}',
    'fluxgate_worker_stock_sets_total',
    'fluxgate_worker_dead_letters_total',
    'fluxgate_worker_batches_total',
    'fluxgate_worker_batch_size_sum',
    'fluxgate_worker_batch_size_count',
    'fluxgate_worker_db_errors_total',
    'fluxgate_worker_db_retries_total',
);

sub delta {
    my ($before) = @_;
    my $now = worker_metrics();
    return { map { $_ => ($now->{$_} // 0) - ($before->{$_} // 0) } @counters };
}

my $before = worker_metrics();
is($before->{$_} // 'missing', $before->{$_}, "$_ is exposed") for @counters;

# generation 1 of $p holds 3: the fourth order does not fit and is
# recorded as rejected; the garbage becomes a dead letter
my $p = uniq('p475');
my @orders = map { (order_msg(productId => $p, userId => "u$_",
                              generationStock => 3))[1] } 1 .. 4;
my $t0 = time;
produce([$p, stock_msg($p, 3)], map({ [$p, $_] } @orders),
        [$p, 'not json at all']);

my %want = (
    'fluxgate_worker_orders_total{status="accepted"}' => 3,
    'fluxgate_worker_orders_total{status="rejected"}' => 1,
    'fluxgate_worker_orders_total{status="duplicate"}' => 0,
    'fluxgate_worker_stock_sets_total' => 1,
    'fluxgate_worker_dead_letters_total' => 1,
    'fluxgate_worker_batch_size_sum' => 6,
    'fluxgate_worker_db_errors_total' => 0,
    'fluxgate_worker_db_retries_total' => 0,
);
# every message produced so far is written and its offset committed;
# the worker counts a batch right after committing its offsets
ok(drained(), 'the worker drained the topic') or diag(`tail -5 @{[worker_log()]}`);
ok(wait_until(10, sub { delta($before)->{'fluxgate_worker_batch_size_sum'} >= 6 }),
   'the six messages were counted') or diag(`tail -5 @{[worker_log()]}`);
my $d = delta($before);
is($d->{$_}, $want{$_}, "$_ moved by $want{$_}") for sort keys %want;
cmp_ok($d->{fluxgate_worker_batches_total}, '>=', 1, 'at least one batch');
is($d->{fluxgate_worker_batch_size_count}, $d->{fluxgate_worker_batches_total},
   'batch_size_count counts the batches');
is(orders_of($p), 4, 'and PostgreSQL has the four orders');

my $m = worker_metrics();
my $last = $m->{fluxgate_worker_last_commit_timestamp_seconds} // 0;
ok($last >= $t0 - 1 && $last <= time + 1,
   "last_commit_timestamp_seconds is the batch's time ($last)");
is($m->{'fluxgate_worker_batch_size_bucket{le="+Inf"}'},
   $m->{fluxgate_worker_batch_size_count}, 'the +Inf bucket is the count');
my @le = sort { $a <=> $b } map { /le="(\d+)"/ ? $1 : () }
         grep { /^fluxgate_worker_batch_size_bucket\{le="\d+"\}$/ } keys %$m;
my @cum = map { $m->{"fluxgate_worker_batch_size_bucket{le=\"$_\"}"} } @le;
ok(@le >= 5 && !grep({ $cum[$_] < $cum[$_ - 1] } 1 .. $#cum),
   'buckets are cumulative (' . join(',', @le) . ')');

# a redelivered message (the same bytes again) counts as a duplicate only
$before = worker_metrics();
produce([$p, $orders[0]]);
ok(drained(), 'the replay was consumed');
ok(wait_until(10, sub { delta($before)->{'fluxgate_worker_batch_size_sum'} >= 1 }),
   '... and counted');
$d = delta($before);
is($d->{'fluxgate_worker_orders_total{status="duplicate"}'}, 1, 'duplicate moved by 1');
is($d->{'fluxgate_worker_orders_total{status="accepted"}'}, 0, 'accepted did not move');
is(orders_of($p), 4, 'still four orders');

# consumer lag, per partition, from librdkafka's statistics (every second)
my %lag;
ok(wait_until(15, sub {
    my $s = worker_metrics();
    %lag = map { /partition="(\d+)"/ ? ($1 => $s->{$_}) : () }
           grep { /^fluxgate_worker_consumer_lag\{/ } keys %$s;
    %lag && !grep { $_ != 0 } values %lag;
}), 'consumer_lag appears per partition and is 0 once caught up: '
    . join(' ', map { "$_=$lag{$_}" } sort keys %lag));
my $parts = worker_metrics()->{fluxgate_worker_assigned_partitions} // 0;
cmp_ok($parts, '>=', 1, "assigned_partitions ($parts)");
cmp_ok(scalar(keys %lag), '<=', $parts, 'no lag for partitions it does not own');

# what Prometheus itself says of the page
{
    my $file = "$ENV{FG_RUN_DIR}/worker-metrics.$$.txt";
    open my $fh, '>', $file or die $!;
    print $fh worker_metrics(raw => 1);
    close $fh;
    my $out = `promtool check metrics < $file 2>&1`;
    is($?, 0, 'promtool check metrics: no problems') or diag($out);
    unlink $file;
    my $text = worker_metrics(raw => 1);
    for my $name (qw(fluxgate_worker_orders_total fluxgate_worker_batch_size
                     fluxgate_worker_consumer_lag fluxgate_worker_dead_letters_total
                     fluxgate_worker_db_errors_total fluxgate_worker_db_retries_total
                     fluxgate_worker_stock_sets_total fluxgate_worker_batches_total
                     fluxgate_worker_last_commit_timestamp_seconds)) {
        like($text, qr/^# HELP \Q$name\E \S.*\n# TYPE \Q$name\E (counter|gauge|histogram)$/m,
             "$name has HELP and TYPE");
    }
}

# the responder: 404, 405, an oversized request, a silent client
(my $base = $url) =~ s{/metrics$}{};
is(http_get("$base/")->{status}, 404, 'GET / is 404');
is(http_get("$base/metrics/x")->{status}, 404, 'GET /metrics/x is 404');
is(http_post("$base/metrics", '{}')->{status}, 405, 'POST /metrics is 405');
my ($host, $port) = $base =~ m{//([^:]+):(\d+)};
{
    my $s = IO::Socket::INET->new(PeerAddr => $host, PeerPort => $port) or die $!;
    print $s "GET /metrics HTTP/1.0\r\nX-Big: " . ('a' x 10000) . "\r\n\r\n";
    my $reply = do { local $/; <$s> } // '';
    like($reply, qr{^HTTP/1\.0 431 }, 'a request over 4 KiB is refused (431)');
}
{
    # one client that says nothing must not keep the next scrape out for long
    my $idle = IO::Socket::INET->new(PeerAddr => $host, PeerPort => $port) or die $!;
    my $t = time;
    my $res = http_get($url);
    is($res->{status}, 200, 'a scrape behind a silent client is answered');
    cmp_ok(time - $t, '<', 3.5, sprintf('within the 2 s read timeout (%.1f s)', time - $t));
    like($res->{headers}{connection} // '', qr/close/i, 'Connection: close');
    close $idle;
}
is(http_get($url)->{status}, 200, 'and the responder still serves');

done_testing();
