# The worker's /healthz follows PostgreSQL: 200 with both dependencies up,
# 503 naming PostgreSQL (and why) within seconds of it stopping, even with
# no message to write, and 200 again once it is back.  A message that
# arrives meanwhile is retried (db_retries_total, db_errors_total move)
# and written after the restart.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use FluxGate::Test;
use FluxGate::Worker;

my ($status, $h) = worker_health();
is($status, 200, 'healthy stack: /healthz 200');
is_deeply([@$h{qw(status postgres kafka)}], [qw(ok up up)], 'status ok, postgres up, kafka up');
cmp_ok($h->{partitions} // 0, '>=', 1, "it names its partitions ($h->{partitions})");

my $before = worker_metrics();
END { svc('start', 'postgres') if $before }
like(svc('stop', 'postgres'), qr/stopped/, 'PostgreSQL stopped');

ok(wait_until(10, sub { (worker_health())[0] == 503 }),
   'idle worker: /healthz 503 within seconds');
($status, $h) = worker_health();
is($h->{status}, 'down', 'status down');
is($h->{postgres}, 'down', 'postgres down');
is($h->{kafka}, 'up', 'kafka still up');
like($h->{postgres_error} // '', qr/\S/, "and why: $h->{postgres_error}");
is(worker_metrics()->{fluxgate_worker_postgres_up}, 0, 'postgres_up 0');

my $p = uniq('p476');
my ($msg, $json) = order_msg(productId => $p);
produce([$p, $json]);
ok(wait_until(20, sub {
    (worker_metrics()->{fluxgate_worker_db_retries_total} // 0)
        > ($before->{fluxgate_worker_db_retries_total} // 0)
}), 'an order arriving meanwhile is retried: db_retries_total moves');
cmp_ok(worker_metrics()->{fluxgate_worker_db_errors_total}, '>',
       $before->{fluxgate_worker_db_errors_total}, 'db_errors_total moved');

like(svc('start', 'postgres'), qr/started/, 'PostgreSQL started');
ok(wait_until(20, sub { svc('status', 'postgres') =~ /RUNNING/ }), 'RUNNING');
ok(wait_until(30, sub { (worker_health())[0] == 200 }), '/healthz 200 again')
    or diag(join ' ', worker_health());
ok(wait_until(30, sub { orders_of($p) == 1 }), 'the waiting order was written');
is(worker_metrics()->{fluxgate_worker_postgres_up}, 1, 'postgres_up 1');
undef $before;

done_testing();
