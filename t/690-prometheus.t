# A real Prometheus, started for this test with the scrape config the stack
# rendered from conf/prometheus.yml, scrapes the worker's /metrics and the
# gate's (FLUXGATE_METRICS_URL, the admin listener).  After a sale through
# the front door (stock set with POST /init, orders from fg-loadgen), its
# HTTP API must say what the sale did: the gate's accepted orders are the
# 200s sent, and the worker's accepted orders moved by as many.  Every
# expression of conf/grafana/fluxgate.json is valid PromQL that Prometheus
# answers, and bench/dashboard.pl draws the dashboard's panels from it
# (FG_DASHBOARD_PNG=path keeps a copy of the PNG).
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use File::Copy qw(copy);
use Time::HiRes qw(time sleep);
use FluxGate::Test;
use FluxGate::Worker;
use FluxGate::Prometheus;

my $gate_url = $ENV{FLUXGATE_METRICS_URL} // "$ENV{FLUXGATE_ADMIN_URL}/metrics";
my $gate = http_get($gate_url);
my $gate_ok = $gate->{status} == 200
           && $gate->{content} =~ /^fluxgate_orders_total\{/m;
diag("the gate serves no metrics at $gate_url ($gate->{status}): its assertions"
     . " are skipped until the module's fluxgate_metrics; is in this tree")
    unless $gate_ok;

my $prom = prometheus_start();
ok($prom->{pid}, "Prometheus up at $prom->{url}");
ok(prom_wait_target($prom, 'fluxgate-worker'), 'it scrapes the worker')
    or diag(`tail -5 $prom->{log}`);
SKIP: {
    skip_missing("gate target: no fluxgate_metrics at $gate_url", 1) unless $gate_ok;
    ok(prom_wait_target($prom, 'fluxgate-gate'), 'it scrapes the gate');
}

my $accepted_gate = 'sum(fluxgate_orders_total{outcome="accepted"})';
my $accepted_worker = 'sum(fluxgate_worker_orders_total{status="accepted"})';
# the baseline: a scrape of the idle stack, taken after this moment
my $idle = time;
ok(prom_wait_scrape($prom, $_, $idle), "a scrape of $_ after the stack went idle")
    for 'fluxgate-worker', $gate_ok ? 'fluxgate-gate' : ();
my %base = (gate => prom_value($prom, $accepted_gate) // 0,
            worker => prom_value($prom, $accepted_worker));
ok(defined $base{worker}, "worker accepted so far: $base{worker}");

# the sale: 600 units, 1200 buyers at 100 a second
my $p = uniq('p690');
my $init = http_post("$ENV{FLUXGATE_ADMIN_URL}/init",
                     json_encode({ productId => $p, quantity => 600 }),
                     { 'X-Idempotency-Key' => uniq('k690') });
is($init->{status}, 200, "POST /init: $p has 600") or diag($init->{content});
my $start = time - 5;
my ($port) = $ENV{FLUXGATE_URL} =~ /:(\d+)$/;
my $r = loadgen(port => $port, c => 10, n => 1200, rate => 100, product => $p);
my $ok = $r->{status}{200}{count} // 0;
is($ok, 600, "loadgen: 600 of 1200 orders answered 200 ($r->{raw})");

ok(drained(), 'the worker drained the topic');
is(orders_of($p), $ok, 'the worker wrote them');
# a scrape of each taken after the drain holds all of it
my $drained = time;
ok(prom_wait_scrape($prom, 'fluxgate-worker', $drained), 'Prometheus scraped the worker after the drain');
is(prom_value($prom, $accepted_worker) - $base{worker}, $ok,
   "$accepted_worker moved by the 200s sent ($ok)");

SKIP: {
    skip_missing("gate assertions: no fluxgate_metrics at $gate_url", 2) unless $gate_ok;
    ok(prom_wait_scrape($prom, 'fluxgate-gate', $drained), 'Prometheus scraped the gate after the sale');
    is(prom_value($prom, $accepted_gate) - $base{gate}, $ok,
       "$accepted_gate moved by the 200s sent ($ok)");
}

# lag: all partitions at 0 again once drained
ok(wait_until(15, sub { (prom_value($prom, 'max(fluxgate_worker_consumer_lag)') // -1) == 0 }),
   'max(fluxgate_worker_consumer_lag) back to 0');
my $end = time + 1;

# every panel of the dashboard, as Prometheus sees it
my $board = json_decode(slurp("$ENV{FG_ROOT}/conf/grafana/fluxgate.json"));
for my $panel (@{ $board->{panels} }) {
    for my $t (@{ $panel->{targets} || [] }) {
        (my $expr = $t->{expr}) =~ s/\$__rate_interval/5s/g;
        my $q = prom_query($prom, $expr, time => $end - 3);
        is($q->{status}, 'success', "$panel->{title}: valid PromQL: $expr")
            or diag($q->{error});
        next if $expr !~ /fluxgate_worker_/ && !$gate_ok;
        next if $expr =~ /db_(errors|retries)|dead_letters/;    # none here
        ok(@{ $q->{data}{result} || [] }, "... and answered with data");
    }
}

# the picture
my $png = "$ENV{FG_RUN_DIR}/dashboard.png";
my $out = `$^X $ENV{FG_ROOT}/bench/dashboard.pl --prometheus $prom->{url} --start $start --end $end --out $png 2>&1`;
is($?, 0, 'bench/dashboard.pl drew the panels') or diag($out);
my $magic = -f $png ? do { open my $fh, '<:raw', $png; read $fh, my $b, 8; $b } : '';
is($magic, "\x89PNG\r\n\x1a\n", "$png is a PNG");
cmp_ok(-s $png // 0, '>', 20_000, 'with charts in it (' . (-s $png // 0) . ' bytes)');
copy($png, $ENV{FG_DASHBOARD_PNG}) or die "$ENV{FG_DASHBOARD_PNG}: $!"
    if $ENV{FG_DASHBOARD_PNG};

my $pid = $prom->{pid};
prometheus_stop($prom);
ok(!kill(0, $pid), "Prometheus (pid $pid) stopped");
done_testing();
