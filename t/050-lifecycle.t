# `make up` / `make down` on a second stack directory: up is idempotent,
# down is idempotent, up again after down comes back on the same ports with
# the same data, DIR/env is right each time, and a port already in use is
# a clear error rather than a hang.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use IO::Socket::INET;
use File::Temp qw(tempdir);
use FluxGate::Test;

my $stack = "$ENV{FG_ROOT}/scripts/stack";
my $dir = tempdir('/tmp/fluxgate-t050.XXXXXX', CLEANUP => 1);
# a stack directory must be reachable by nobody and postgres (tempdir is 0700)
chmod 0755, $dir;

my %ports;
# distinct: free_port() twice may give the same port, and the stack refuses
# one port for two services
my @names = qw(FG_HTTP_PORT FG_ADMIN_PORT FG_REDIS_PORT FG_PG_PORT FG_KAFKA_PORT
               FG_KAFKA_CONTROLLER_PORT FG_WORKER_METRICS_PORT);
@ports{@names} = free_ports(scalar @names);
my $env = join ' ', map { "$_=$ports{$_}" } sort keys %ports;

sub run { my $out = `@_ 2>&1`; return ($? >> 8, $out) }

sub env_of {
    my %e;
    open my $fh, '<', "$dir/env" or return {};
    while (<$fh>) { $e{$1} = $2 if /^export (\w+)=(.*)$/ }
    return \%e;
}

END { system("bash $stack down $dir >/dev/null 2>&1") if $dir }

# a port in use: clear error, quickly, nothing started
{
    my $busy = IO::Socket::INET->new(Listen => 1, LocalAddr => '127.0.0.1',
                                     LocalPort => $ports{FG_REDIS_PORT},
                                     ReuseAddr => 1) or die $!;
    my $t0 = time;
    my ($rc, $out) = run("env $env bash $stack up $dir/busy");
    isnt($rc, 0, 'up fails when a port is taken');
    like($out, qr/port $ports{FG_REDIS_PORT} \(FG_REDIS_PORT\) is already in use/,
         'and names the port and its variable');
    ok(time - $t0 < 15, 'without hanging');
    ok(!-S "$dir/busy/supervisor.sock", 'nothing was started');
}

my ($rc, $out) = run("env $env bash $stack up $dir");
is($rc, 0, 'up') or diag($out);
my $e = env_of();
is($e->{FLUXGATE_URL}, "http://127.0.0.1:$ports{FG_HTTP_PORT}", 'env: FLUXGATE_URL');
is($e->{FLUXGATE_ADMIN_URL}, "http://127.0.0.1:$ports{FG_ADMIN_PORT}", 'env: FLUXGATE_ADMIN_URL');
is($e->{REDIS_PORT}, $ports{FG_REDIS_PORT}, 'env: REDIS_PORT');
is($e->{PGPORT}, $ports{FG_PG_PORT}, 'env: PGPORT');
is($e->{KAFKA_BOOTSTRAP}, "127.0.0.1:$ports{FG_KAFKA_PORT}", 'env: KAFKA_BOOTSTRAP');
is($e->{FLUXGATE_WORKER_METRICS_URL}, "http://127.0.0.1:$ports{FG_WORKER_METRICS_PORT}/metrics",
   'env: FLUXGATE_WORKER_METRICS_URL');
like(`curl -s $e->{FLUXGATE_ADMIN_URL}/health`, qr/ok/, 'nginx answers');
`redis-cli -p $e->{REDIS_PORT} set t050 kept`;

($rc, $out) = run("bash $stack up $dir");
is($rc, 0, 'up again while up is a no-op');
like($out, qr/already up/, 'and says so');

($rc, $out) = run("bash $stack down $dir");
is($rc, 0, 'down');
ok(!IO::Socket::INET->new(PeerAddr => "127.0.0.1:$ports{FG_HTTP_PORT}"),
   'nginx is gone after down');
($rc, $out) = run("bash $stack down $dir");
is($rc, 0, 'down again is a no-op');

($rc, $out) = run("bash $stack up $dir");
is($rc, 0, 'up after down') or diag($out);
is_deeply(env_of(), $e, 'env is the same after up/down/up');
is(`redis-cli -p $e->{REDIS_PORT} get t050`, "kept\n", 'redis data kept');
is(`psql -X -Atq -h 127.0.0.1 -p $e->{PGPORT} -U fluxgate -d fluxgate -c 'select count(*) > 0 from schema_migrations'`,
   "t\n", 'postgres data kept');

($rc, $out) = run("bash $stack down $dir");
is($rc, 0, 'down at the end');

done_testing();
