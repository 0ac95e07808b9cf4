package FluxGate::Prometheus;

# A real Prometheus for one test: started on a free loopback port with the
# scrape config scripts/stack rendered for the stack (FG_PROMETHEUS_CONF:
# the gate's and the worker's /metrics, 1 s apart), its data in the run
# directory, stopped (and its data removed) when the test ends.  Queried
# over its HTTP API, as Grafana would.

use strict;
use warnings;
use Exporter 'import';
use IO::Socket::INET;
use JSON::PP ();
use Time::HiRes qw(time sleep);
use FluxGate::Test;

our @EXPORT = qw(prometheus_start prometheus_stop prom_query prom_value
                 prom_wait_target prom_wait_scrape);

my @Started;

# -> {pid, url, log, data}; dies when it does not come up within 30 s
sub prometheus_start {
    my (%o) = @_;
    my $conf = $o{conf} // $ENV{FG_PROMETHEUS_CONF}
        // "$ENV{FG_RUN_DIR}/prometheus/prometheus.yml";
    die "no scrape config $conf: restart the stack with this scripts/stack\n"
        unless -f $conf;
    my ($bin) = grep { -x } map { "$_/prometheus" } split /:/, $ENV{PATH};
    die "prometheus is not installed (scripts/setup.sh installs Debian's"
        . " prometheus package)\n" unless $bin;
    my $port = IO::Socket::INET->new(Listen => 1, LocalAddr => '127.0.0.1',
                                     LocalPort => 0)->sockport;
    my $tag = uniq('prometheus');
    my $data = "$ENV{FG_RUN_DIR}/prometheus/$tag";
    my $log = "$ENV{FG_RUN_DIR}/logs/$tag.log";
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        open STDOUT, '>', $log or die "$log: $!";
        open STDERR, '>&', \*STDOUT or die;
        exec $bin, "--config.file=$conf", "--storage.tsdb.path=$data",
            "--web.listen-address=127.0.0.1:$port", '--log.level=warn'
            or die "exec $bin: $!";
    }
    my $p = { pid => $pid, url => "http://127.0.0.1:$port", log => $log,
              data => $data };
    push @Started, $p;
    wait_until(30, sub { http_get("$p->{url}/-/ready")->{status} == 200 })
        or die "prometheus did not become ready:\n" . `tail -5 $log`;
    return $p;
}

sub prometheus_stop {
    my ($p) = @_;
    return unless $p->{pid};
    kill 'TERM', $p->{pid};
    waitpid $p->{pid}, 0;
    $p->{pid} = 0;
    system('rm', '-rf', $p->{data});
}

END { prometheus_stop($_) for @Started }

# prom_query($p, $expr, time => t) -> the API's decoded answer
# ({status, data => {resultType, result}}), or {status => 'error', error}
sub prom_query {
    my ($p, $expr, %o) = @_;
    require HTTP::Tiny;
    my $http = HTTP::Tiny->new(timeout => 10);
    my $res = $http->post_form("$p->{url}/api/v1/query",
        { query => $expr, defined $o{time} ? (time => $o{time}) : () });
    return eval { JSON::PP->new->decode($res->{content}) }
        || { status => 'error', error => "$res->{status} $res->{content}" };
}

# prom_value($p, $expr) -> the value of a one-sample instant vector or of a
# scalar, undef when there is none
sub prom_value {
    my $r = prom_query(@_);
    return undef unless ($r->{status} // '') eq 'success';
    my $d = $r->{data};
    return $d->{result}[1] + 0 if $d->{resultType} eq 'scalar';
    return undef unless @{ $d->{result} } == 1;
    return $d->{result}[0]{value}[1] + 0;
}

# prom_wait_scrape($p, $job, $after) -> true once Prometheus holds a
# scrape of job's target taken after the epoch time $after: what it says
# from then on includes everything the target had counted by $after
sub prom_wait_scrape {
    my ($p, $job, $after, $timeout) = @_;
    return wait_until($timeout // 30,
        sub { (prom_value($p, qq{timestamp(up{job="$job"})}) // 0) > $after });
}

# waits until Prometheus scraped job's target successfully
sub prom_wait_target {
    my ($p, $job, $timeout) = @_;
    return wait_until($timeout // 20,
        sub { (prom_value($p, qq{up{job="$job"}}) // 0) == 1 });
}

1;
