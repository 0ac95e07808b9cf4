# scripts/stack works out every port it will use, the ones a fleet derives
# (instance i: the variable's port + 10 * (i - 1); Redis Cluster node i:
# FG_REDIS_PORT + i, and + i + 10000 for its bus) included, before it
# starts anything.  Two that are the same, or one that is no port, make
# `up` refuse at once, naming both variables (and the instances) and the
# port, with nothing started and no DIR/stack.env kept.  A fleet started
# with FG_KAFKA_BROKERS=3 FG_KAFKA_PORT=19680 FG_KAFKA_CONTROLLER_PORT=19690
# used to die with "kafka-2 exited too quickly": broker 1's controller port
# was broker 2's client port.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use File::Temp qw(tempdir);
use FluxGate::Test;

my $stack = "$ENV{FG_ROOT}/scripts/stack";
my $dir = tempdir('/tmp/fluxgate-t041.XXXXXX', CLEANUP => 1);
# a stack directory must be reachable by nobody and postgres (tempdir is 0700)
chmod 0755, $dir;

# every port variable set, on ports nothing listens on, one of each: what a
# case does not set is not what it is about
my @vars = qw(FG_HTTP_PORT FG_ADMIN_PORT FG_REDIS_PORT FG_PG_PORT FG_KAFKA_PORT
              FG_KAFKA_CONTROLLER_PORT FG_WORKER_METRICS_PORT);
my %base;
@base{@vars} = free_ports(scalar @vars);
my %one = (FG_FREE_PORTS => 0, FG_KAFKA_BROKERS => 1, FG_NGINX_INSTANCES => 1,
           FG_WORKER_PROCS => 1, FG_REDIS_CLUSTER => 0);

my %used;

# however the test ends, nothing it may have started keeps running
END { system("bash $stack down $dir/$_ >/dev/null 2>&1") for keys %used }

# stack(CMD, NAME, VAR => value, ...) -> (exit status, output) of
# `scripts/stack CMD $dir/NAME` with these variables over %base and %one
sub stack {
    my ($cmd, $name, %env) = @_;
    local @ENV{keys %base} = values %base;
    local @ENV{keys %one} = values %one;
    local @ENV{keys %env} = values %env;
    $used{$name} = 1 if $name ne '';
    my $out = `bash $stack $cmd $dir/$name 2>&1`;
    return ($? >> 8, $out);
}

# said($output, $line, $name): the output has "stack: $line" as a line
sub said {
    my ($out, $line, $name) = @_;
    like($out, qr/^stack: \Q$line\E$/m, $name);
}

# nothing of the stack in DIR: no supervisord, no service's directory, no
# stack.env to pin the refused ports on the next start
sub started_nothing {
    my ($name, $what) = @_;
    my $d = "$dir/$name";
    my @there = grep { -e "$d/$_" }
                qw(stack.env supervisor.sock supervisord.pid pg kafka redis nginx env);
    is_deeply(\@there, [], "$what: nothing was started, no stack.env kept")
        or diag("left in $d: @there");
}

{
    my ($rc, $out) = stack('--help', '');
    is($rc, 0, 'scripts/stack --help');
    like($out, qr/Instance i of a fleet\s+uses its variable's port \+ 10 \* \(i - 1\)/,
         'says how a fleet derives its ports');
    like($out, qr/When two of these ports are\s+the same.*refuse, naming the variables/s,
         'and that two that are the same are refused');
}

# the fleet of the report: broker 1's controller port is broker 2's client
# port, broker 2's controller port broker 3's
{
    my $k = $base{FG_KAFKA_PORT};
    my ($rc, $out) = stack('up', 'kafka', FG_KAFKA_BROKERS => 3, FG_KAFKA_PORT => $k,
                           FG_KAFKA_CONTROLLER_PORT => $k + 10);
    is($rc, 1, 'three brokers, the controller port 10 above the client port: up refuses');
    my $p = $k + 10;
    said($out, "port $p is both FG_KAFKA_PORT + 10 (broker 2's client port)"
               . " and FG_KAFKA_CONTROLLER_PORT (broker 1's controller port)",
         "naming port $p, both variables and both brokers");
    $p = $k + 20;
    said($out, "port $p is both FG_KAFKA_PORT + 20 (broker 3's client port)"
               . " and FG_KAFKA_CONTROLLER_PORT + 10 (broker 2's controller port)",
         "and port $p, the next clash of the same kind");
    like($out, qr/set the variables further apart, or FG_FREE_PORTS=1\.  Nothing was started/,
         'saying what to do');
    unlike($out, qr/exited too quickly|formatting|initdb/, 'before starting anything');
    started_nothing('kafka', 'the clashing brokers');

    ($rc, $out) = stack('up', 'kafka', FG_KAFKA_BROKERS => 3, FG_KAFKA_PORT => $k,
                        FG_KAFKA_CONTROLLER_PORT => $k + 10);
    is($rc, 1, 'refused again on a second try: nothing of the first one was kept');
}

# the two ports of one nginx
{
    my ($rc, $out) = stack('up', 'nginx', FG_ADMIN_PORT => $base{FG_HTTP_PORT});
    is($rc, 1, 'FG_ADMIN_PORT = FG_HTTP_PORT: refused');
    said($out, "port $base{FG_HTTP_PORT} is both FG_HTTP_PORT (nginx 1's shop port)"
               . " and FG_ADMIN_PORT (nginx 1's admin port)",
         'naming both variables and the port');
    started_nothing('nginx', 'one nginx, one port');
}

# a Redis Cluster's nodes and bus ports, next to the other services
{
    my $r = $base{FG_REDIS_PORT};
    my ($rc, $out) = stack('up', 'cluster', FG_REDIS_CLUSTER => 3, FG_PG_PORT => $r + 2,
                           FG_HTTP_PORT => $r + 10001);
    is($rc, 1, 'a Redis Cluster whose node and bus ports land on PostgreSQL\'s and the shop\'s');
    my ($pg, $bus) = ($r + 2, $r + 10001);
    said($out, "port $pg is both FG_PG_PORT (PostgreSQL)"
               . " and FG_REDIS_PORT + 2 (Redis Cluster node 2)", 'names the node');
    said($out, "port $bus is both FG_REDIS_PORT + 10001 (Redis Cluster node 1's bus)"
               . " and FG_HTTP_PORT (nginx 1's shop port)", 'and the bus');
    started_nothing('cluster', 'the clashing cluster');
}

# ports that are no ports
{
    my ($rc, $out) = stack('up', 'range', FG_KAFKA_BROKERS => 3, FG_KAFKA_PORT => 65530,
                           FG_KAFKA_CONTROLLER_PORT => 65500);
    is($rc, 1, 'a broker past port 65535: refused');
    said($out, "FG_KAFKA_PORT + 10 (broker 2's client port) is 65540,"
               . " not a port from 1 to 65535", 'naming the variable, the broker and the port');
    started_nothing('range', 'a port out of range');

    ($rc, $out) = stack('up', 'word', FG_PG_PORT => '54x');
    is($rc, 1, 'FG_PG_PORT=54x: refused');
    like($out, qr/^stack: FG_PG_PORT must be a port from 1 to 65535, not '54x'$/m, 'saying so');
    started_nothing('word', 'a port that is no number');
}

# a directory whose stack.env has them already (written by a first start):
# refused as well, and the file is the directory's, so it stays
{
    my ($rc, $out) = stack('check', 'kept');
    is($rc, 0, 'stack check writes a directory\'s stack.env') or diag($out);
    my $file = "$dir/kept/stack.env";
    my $text = do { local (@ARGV, $/) = $file; <> };
    $text =~ s/^export FG_ADMIN_PORTS=.*$/export FG_ADMIN_PORTS='$base{FG_HTTP_PORT}'/m;
    $text =~ s/^export FG_ADMIN_PORT=.*$/export FG_ADMIN_PORT=$base{FG_HTTP_PORT}/m;
    open my $fh, '>', $file or die "$file: $!";
    print $fh $text;
    close $fh;
    ($rc, $out) = stack('up', 'kept');
    is($rc, 1, 'up of a directory whose stack.env has two ports the same: refused');
    like($out, qr/^stack: port $base{FG_HTTP_PORT} is both FG_HTTP_PORT.*and FG_ADMIN_PORT/m,
         'naming them');
    like($out, qr{\Q$dir\E/kept/stack\.env has them from the directory's first start},
         'and where they come from');
    ok(!-e "$dir/kept/supervisor.sock", 'nothing was started');
}

done_testing();
