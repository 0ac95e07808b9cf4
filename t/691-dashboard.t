# conf/grafana/fluxgate.json is a Grafana dashboard whose every panel
# queries Prometheus, and every metric its PromQL names is one the contract
# promises (the gate's list in DESIGN.md's "Metrics and health") or one the
# stack's worker really exposes: a renamed metric breaks this test, not
# the dashboard of someone's sale.  conf/prometheus.yml passes promtool.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use FluxGate::Test;
use FluxGate::Worker;

my %gate = map { $_ => 1 } qw(
    fluxgate_orders_total fluxgate_redis_duration_seconds
    fluxgate_kafka_delivery_duration_seconds fluxgate_in_flight
    fluxgate_redis_up fluxgate_kafka_up fluxgate_sold_out_flag_hits_total
    fluxgate_releases_total fluxgate_claims_settled_total
    fluxgate_queue_waiting fluxgate_queue_oldest_wait_seconds
    fluxgate_queue_admitted_total fluxgate_queue_no_shows_total
    fluxgate_queue_challenges_total fluxgate_queue_controls_total);
my %worker = map { /^# TYPE (\S+) / ? ($1 => 1) : () }
             split /\n/, worker_metrics(raw => 1);
ok(keys %worker >= 9, 'the worker lists its metrics (' . join(' ', sort keys %worker) . ')');

my $file = "$ENV{FG_ROOT}/conf/grafana/fluxgate.json";
my $board = eval { json_decode(slurp($file)) };
ok($board, "$file is JSON") or diag($@);
ok($board->{title} && $board->{uid}, "with a title and a uid ($board->{uid})");
my @panels = @{ $board->{panels} || [] };
cmp_ok(scalar @panels, '>=', 6, scalar(@panels) . ' panels');

my %seen;
my @rows = grep { ($_->{type} // '') eq 'row' } @panels;
ok((grep { $_->{title} =~ /line/i } @rows), 'a row for the line');
@panels = grep { ($_->{type} // '') ne 'row' } @panels;
for my $p (@panels) {
    my @t = @{ $p->{targets} || [] };
    ok($p->{title} && @t, "panel $p->{id} \"$p->{title}\" has targets");
    is($p->{datasource}{type}, 'prometheus', '... from Prometheus');
    for my $t (@t) {
        my @names = $t->{expr} =~ /\b(fluxgate_\w+)/g;
        ok(@names, "... $t->{refId}: $t->{expr}");
        for my $n (@names) {
            (my $base = $n) =~ s/_(bucket|sum|count)$//;
            $seen{$base}++;
            ok($gate{$base} || $worker{$base}, "... $n is a metric of the contract or of the worker");
        }
    }
}
for my $want (qw(fluxgate_orders_total fluxgate_redis_duration_seconds
                 fluxgate_kafka_delivery_duration_seconds fluxgate_in_flight
                 fluxgate_worker_consumer_lag fluxgate_worker_dead_letters_total
                 fluxgate_worker_db_errors_total fluxgate_queue_waiting
                 fluxgate_queue_oldest_wait_seconds fluxgate_queue_admitted_total
                 fluxgate_queue_no_shows_total fluxgate_queue_challenges_total)) {
    ok($seen{$want}, "the dashboard shows $want");
}

# the scrape config as the stack rendered it
my $conf = $ENV{FG_PROMETHEUS_CONF} // "$ENV{FG_RUN_DIR}/prometheus/prometheus.yml";
my $out = `promtool check config $conf 2>&1`;
is($?, 0, "promtool check config $conf") or diag($out);
my $text = slurp($conf);
my ($worker_port) = $ENV{FLUXGATE_WORKER_METRICS_URL} =~ /:(\d+)\//;
like($text, qr/job_name: fluxgate-worker\b.*'127\.0\.0\.1:$worker_port'/s,
     'the worker target is the stack\'s worker');
my ($admin) = $ENV{FLUXGATE_ADMIN_URL} =~ /:(\d+)$/;
like($text, qr/job_name: fluxgate-gate\b.*'127\.0\.0\.1:$admin'/s, 'the gate target is its admin listener');

done_testing();
