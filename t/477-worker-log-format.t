# --log-format json (FLUXGATE_LOG_FORMAT) makes every stderr line of the
# worker and of fluxgate-reconcile one JSON object (ts, level, program,
# pid, msg) whatever bytes the message carries; a bad value is a usage
# error.  --metrics-listen is read from the --config file too, serves
# while the worker still waits for PostgreSQL (503 naming it), and a bad
# address is refused at start-up.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use IO::Socket::INET;
use Time::HiRes qw(time sleep);
use FluxGate::Test;
use FluxGate::Worker;

my $reconcile = $ENV{FG_RECONCILE} || "$ENV{FG_ROOT}/build/fluxgate-reconcile";
my $dir = "$ENV{FG_RUN_DIR}/t477.$$";
mkdir $dir or die "$dir: $!";

# runs a command with stderr into a file -> (exit status, [stderr lines])
sub run_err {
    my ($env, @cmd) = @_;
    my $pid = fork // die;
    if ($pid == 0) {
        open STDERR, '>', "$dir/err" or die;
        open STDOUT, '>', '/dev/null' or die;
        %ENV = (%ENV, %$env);
        exec @cmd or die "exec: $!";
    }
    waitpid $pid, 0;
    my $rc = $? >> 8;
    open my $fh, '<:raw', "$dir/err" or die;
    return ($rc, [map { chomp; $_ } <$fh>]);
}

sub all_json {
    my ($lines, $program) = @_;
    my @objs = map { eval { JSON::PP->new->utf8->decode($_) } } @$lines;
    return @objs == @$lines && @objs > 0
        && !grep { !(ref $_ eq 'HASH'
                     && ($_->{ts} // '') =~ /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/
                     && ($_->{level} // '') =~ /^(debug|info|warning|error)$/
                     && ($_->{program} // '') eq $program
                     && ($_->{pid} // '') =~ /^\d+$/ && defined $_->{msg}) } @objs;
}

# a quote and bytes that are not UTF-8 in the message: the socket path
my $pg = "host=/no/such\"dir\xff\xc3\xa9 port=1 dbname=x";
my ($rc, $lines) = run_err({}, worker_bin(), '--log-format', 'json', '--fail-fast',
                           '--pg', $pg, '--brokers', '127.0.0.1:1');
is($rc, 1, 'worker gives up on PostgreSQL (--fail-fast)');
ok(all_json($lines, 'fluxgate-worker'), 'every line is a JSON object with ts, level, program, pid, msg')
    or diag(join "\n", @$lines);
my ($err) = grep { $_->{level} eq 'error' } map { JSON::PP->new->utf8->decode($_) } @$lines;
like($err->{msg} // '', qr{socket "/no/such"dir\x{fffd}\x{e9}/}, 'the quote kept, the bad byte U+FFFD, é kept');

($rc, $lines) = run_err({ FLUXGATE_LOG_FORMAT => 'json' }, worker_bin(), '--fail-fast',
                        '--pg', 'host=/nonexistent port=1', '--brokers', '127.0.0.1:1');
ok($rc == 1 && all_json($lines, 'fluxgate-worker'), 'FLUXGATE_LOG_FORMAT=json does the same');

($rc, $lines) = run_err({ FLUXGATE_LOG_FORMAT => 'json' }, worker_bin(), '--log-format', 'text',
                        '--fail-fast', '--pg', 'host=/nonexistent port=1');
ok($rc == 1 && !grep({ /^\{/ } @$lines) && grep({ /^\S+Z fluxgate-worker\[\d+\] error: / } @$lines),
   'the flag wins over the environment: text lines') or diag(join "\n", @$lines);

for my $case ([['--log-format', 'xml'], {}, qr/--log-format must be text or json, not "xml"/],
              [[], { FLUXGATE_LOG_FORMAT => 'yaml' }, qr/FLUXGATE_LOG_FORMAT must be text or json/]) {
    ($rc, $lines) = run_err($case->[1], worker_bin(), @{ $case->[0] });
    is($rc, 2, "worker @{$case->[0]} @{[%{$case->[1]}]}: usage error");
    like(join("\n", @$lines), $case->[2], 'naming it');
}

($rc, $lines) = run_err({}, $reconcile, '--log-format', 'json', '--redis', '127.0.0.1:1',
                        '--brokers', '127.0.0.1:1', '--pg', 'host=/nonexistent');
ok($rc != 0 && all_json($lines, 'fluxgate-reconcile'), 'fluxgate-reconcile --log-format json too')
    or diag(join "\n", @$lines);
($rc, $lines) = run_err({}, $reconcile, '--log-format', 'xml');
like(join("\n", @$lines), qr/--log-format must be text or json/, 'and refuses xml');

# --metrics-listen
($rc, $lines) = run_err({}, worker_bin(), '--metrics-listen', 'nope', '--pg', 'host=/nonexistent');
is($rc, 1, '--metrics-listen nope: exit 1');
like(join("\n", @$lines), qr/--metrics-listen wants ADDR:PORT, not "nope"/, 'naming it');

my $busy = IO::Socket::INET->new(Listen => 1, LocalAddr => '127.0.0.1', LocalPort => 0) or die;
($rc, $lines) = run_err({}, worker_bin(), '--metrics-listen', '127.0.0.1:' . $busy->sockport,
                        '--pg', 'host=/nonexistent');
ok($rc == 1 && grep({ /--metrics-listen 127\.0\.0\.1:\d+: Address already in use/ } @$lines),
   'a port in use: exit 1 saying so') or diag(join "\n", @$lines);

my $port = do {
    my $s = IO::Socket::INET->new(Listen => 1, LocalAddr => '127.0.0.1', LocalPort => 0);
    $s->sockport;
};
open my $conf, '>', "$dir/worker.conf" or die;
print $conf "FLUXGATE_METRICS_LISTEN=127.0.0.1:$port\nFLUXGATE_LOG_FORMAT=json\n"
          . "FLUXGATE_PG=host=/nonexistent port=1\n";
close $conf;
my $w = start_private_worker(topic => topic(), group => uniq('g477'),
                             args => ['--config', "$dir/worker.conf", '--pg', 'host=/nonexistent port=1']);
my $res;
ok(wait_until(10, sub { ($res = http_get("http://127.0.0.1:$port/healthz"))->{status} == 503 }),
   '--config FLUXGATE_METRICS_LISTEN: /healthz answers 503 while PostgreSQL is away');
my $h = eval { json_decode($res->{content}) } || {};
is($h->{postgres}, 'down', 'naming postgres');
like($h->{postgres_error} // '', qr/nonexistent/, "and why ($h->{postgres_error})");
is(http_get("http://127.0.0.1:$port/metrics")->{status}, 200, '/metrics is served meanwhile');
is(stop_private_worker($w) >> 8, 0, 'SIGTERM: exit 0');
ok(all_json([grep { /\S/ } split /\n/, slurp($w->{log})], 'fluxgate-worker'),
   'FLUXGATE_LOG_FORMAT=json from the config file');

system('rm', '-rf', $dir);
done_testing();
