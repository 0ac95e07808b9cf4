# fluxgate-reconcile's command line: --help names every flag and its
# environment fallback, bad flags and values exit 2 naming them, an
# unreachable Redis, PostgreSQL or Kafka exits 3 saying what failed and
# what it does next, and FLUXGATE_* variables stand in for the flags.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use IO::Socket::INET;
use FluxGate::Test;

my $bin = $ENV{FG_RECONCILE} || "$ENV{FG_ROOT}/build/fluxgate-reconcile";
my $pg = "host=$ENV{FG_RUN_DIR}/pg/sock port=$ENV{PGPORT} dbname=fluxgate user=fluxgate";

sub run {
    my $out = `@_ 2>&1`;
    return ($? >> 8, $out);
}

sub dead_port {
    my $s = IO::Socket::INET->new(Listen => 1, LocalAddr => '127.0.0.1',
                                  LocalPort => 0);
    my $port = $s->sockport;
    close $s;
    return $port;
}

{
    my ($rc, $out) = run("$bin --help");
    is($rc, 0, '--help exits 0');
    for my $flag (qw(--redis --pg --brokers --topic --group --product
                     --claim-deadline --idempotency-ttl --settle-wait
                     --repair --watch --json -X)) {
        like($out, qr/\Q$flag\E\b/, "--help names $flag");
    }
    for my $var (qw(FLUXGATE_REDIS FLUXGATE_PG FLUXGATE_BROKERS FLUXGATE_TOPIC
                    FLUXGATE_GROUP FLUXGATE_CLAIM_DEADLINE FLUXGATE_KAFKA_OPTIONS)) {
        like($out, qr/\[$var\b/, "--help names $var");
    }
    like($out, qr/Exit status: 0 .*1 .*2 .*3/s, '--help gives the exit statuses');

    ($rc, $out) = run("$bin --version");
    is($rc, 0, '--version exits 0');
    like($out, qr/^fluxgate-reconcile \d+\.\d+/, 'and prints the version');
}

for my $case (
    ['--no-such-flag',            qr/no-such-flag/],
    ['--claim-deadline=soon',     qr/--claim-deadline must be an integer from 1000/],
    ['--claim-deadline=10',       qr/--claim-deadline must be an integer from 1000/],
    ['--watch=0',                 qr/--watch must be an integer from 1/],
    ['--idempotency-ttl=-1',      qr/--idempotency-ttl must be an integer/],
    ['--settle-wait=x',           qr/--settle-wait must be an integer/],
    ['--redis=localhost',         qr/--redis wants HOST:PORT or unix:\/PATH/],
    ['--redis=unix:relative',     qr/--redis wants unix:\/absolute\/path/],
    ['--redis=127.0.0.1:99999',   qr/--redis wants a port/],
    ['--product="a b"',           qr/--product wants 1 to 64 of/],
    ['-X fetch.wait.max.ms=soon', qr/-X fetch.wait.max.ms=soon: .*fetch.wait.max.ms/],
    ['-X novalue',                qr/-X wants NAME=VALUE, not "novalue"/],
    ['--topic=^orders.*',         qr/--topic must name one topic/],
    ['extra',                     qr/unexpected argument "extra"/],
) {
    my ($args, $re) = @$case;
    my ($rc, $out) = run("$bin $args");
    is($rc, 2, "$args exits 2");
    like($out, $re, "$args: the message names it");
    like($out, qr/Try "fluxgate-reconcile --help"/, "$args: and points at --help");
}

{
    my ($rc, $out) = run("FLUXGATE_CLAIM_DEADLINE=never $bin");
    is($rc, 2, 'a bad FLUXGATE_CLAIM_DEADLINE exits 2');
    like($out, qr/FLUXGATE_CLAIM_DEADLINE must be an integer/, 'naming the variable');
}

my $good = "--redis 127.0.0.1:$ENV{REDIS_PORT} --pg '$pg' --brokers $ENV{KAFKA_BOOTSTRAP}";

{
    my $port = dead_port();
    my ($rc, $out) = run("$bin --pg '$pg' --brokers $ENV{KAFKA_BOOTSTRAP} --redis 127.0.0.1:$port");
    is($rc, 3, 'Redis unreachable: exit 3');
    like($out, qr/error: Redis 127\.0\.0\.1:$port: cannot connect: .*; giving up \(exit status 3\)/,
         'the message says Redis, what failed and what it does');

    ($rc, $out) = run("$bin --redis 127.0.0.1:$ENV{REDIS_PORT} --brokers $ENV{KAFKA_BOOTSTRAP}"
                      . " --pg 'host=127.0.0.1 port=$port dbname=fluxgate user=fluxgate connect_timeout=2'");
    is($rc, 3, 'PostgreSQL unreachable: exit 3');
    like($out, qr/error: PostgreSQL: cannot connect: .*; giving up \(exit status 3\)/,
         'the message says PostgreSQL');

    ($rc, $out) = run("$bin --redis 127.0.0.1:$ENV{REDIS_PORT} --pg '$pg' --brokers 127.0.0.1:$port");
    is($rc, 3, 'Kafka unreachable: exit 3');
    like($out, qr/error: Kafka 127\.0\.0\.1:$port: .*; giving up \(exit status 3\)/,
         'the message says Kafka');

    ($rc, $out) = run("$bin $good --topic " . uniq('no-such-topic'));
    is($rc, 3, 'a topic that does not exist: exit 3');
    like($out, qr/error: Kafka .*topic no-such-topic-\S+: /, 'naming the topic');
}

{
    my $p = uniq('p680');
    set_stock($p, 7);
    my ($rc, $out) = run("FLUXGATE_REDIS=127.0.0.1:$ENV{REDIS_PORT} FLUXGATE_PG='$pg'"
                         . " FLUXGATE_BROKERS=$ENV{KAFKA_BOOTSTRAP} $bin --product $p");
    is($rc, 0, 'the environment stands in for --redis, --pg and --brokers');
    like($out, qr/^product\s+generation\s+set\s+stock\s+pending\s+units\s+overdue\s+recorded\s+drift\s+state\s*$/m,
         'the human table has its header');
    like($out, qr/^\Q$p\E\s+1\s+7\s+7\s+0\s+0\s+0\s+0\s+\+0\s+balanced\s*$/m,
         'and one line for the product: generation 1, 7 set, 7 in Redis, balanced');

    ($rc, $out) = run("$bin $good --json -p $p");
    is($rc, 0, '--json: exit 0');
    my @lines = grep { /^\{/ } split /\n/, $out;
    is(scalar @lines, 1, 'one JSON line for one product');
    my $j = eval { json_decode($lines[0]) } || {};
    is_deeply([@$j{qw(productId state generation stockSet stock pending pendingUnits
                      overdue recordedUnits drift)}],
              [$p, 'balanced', 1, 7, 7, 0, 0, 0, 0, 0], 'with every field');

    my $unknown = uniq('p680-never-set');
    ($rc, $out) = run("$bin $good -p $p -p $unknown");
    is($rc, 1, 'a --product Redis has no generation for: exit 1');
    like($out, qr/product \Q$unknown\E has no generation in Redis/, 'saying so');
    like($out, qr/^\Q$unknown\E\s.*\sunknown\s*$/m, 'its line says unknown');
    ok(!grep({ /\Q$unknown\E/ } redis('KEYS', "fg:{$unknown}:*")),
       'and reconcile wrote nothing for it');
}

{
    my $p = uniq('p680-all');
    set_stock($p, 3);
    my ($rc, $out) = run("$bin $good");
    like($out, qr/^\Q$p\E\s/m, 'without --product: every product with a generation is listed');
}

done_testing();
