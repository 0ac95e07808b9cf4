# fluxgate-worker's command line: --help and --version, bad flags and bad
# values end with status 2 and a message naming them, --fail-fast turns
# an unreachable PostgreSQL or Kafka at start-up into a clear error and a
# non-zero exit instead of a wait, and a schema older than the worker
# (before 002_generations.sql) is refused until --migrate brings it up.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use IO::Socket::INET;
use File::Copy qw(copy);
use File::Temp qw(tempdir);
use FluxGate::Test;
use FluxGate::Worker;

my $bin = worker_bin();

sub run {
    my $out = `@_ 2>&1`;
    return ($? >> 8, $out);
}

# a port nothing listens on
sub dead_port {
    my $s = IO::Socket::INET->new(Listen => 1, LocalAddr => '127.0.0.1',
                                  LocalPort => 0);
    my $port = $s->sockport;
    close $s;
    return $port;
}

my $pg = pg_conninfo();

{
    my ($rc, $out) = run("$bin --help");
    is($rc, 0, '--help exits 0');
    like($out, qr/--brokers.*--topic.*--group.*--pg.*--batch-size.*--batch-wait.*-X NAME=VALUE.*--migrate/s,
         '--help lists the flags');
    like($out, qr/FLUXGATE_BROKERS.*FLUXGATE_PG/s, '--help names the environment fallbacks');
}

{
    my ($rc, $out) = run("$bin --version");
    is($rc, 0, '--version exits 0');
    like($out, qr/^fluxgate-worker \d+\.\d+/, '--version prints the version');
}

{
    my ($rc, $out) = run("$bin --no-such-flag");
    is($rc, 2, 'an unknown flag exits 2');
    like($out, qr/no-such-flag/, 'and names it');
    like($out, qr/--help/, 'and points at --help');
}

{
    my ($rc, $out) = run("$bin --batch-size=0");
    is($rc, 2, 'a batch size of 0 exits 2');
    like($out, qr/--batch-size must be an integer from 1/, 'and says what is allowed');

    ($rc, $out) = run("$bin --batch-wait=soon");
    is($rc, 2, 'a non-numeric batch wait exits 2');

    ($rc, $out) = run("FLUXGATE_BATCH_SIZE=lots $bin");
    is($rc, 2, 'a bad environment fallback exits 2');
    like($out, qr/FLUXGATE_BATCH_SIZE/, 'and names the variable');

    ($rc, $out) = run("$bin -X novalue");
    is($rc, 2, '-X without NAME=VALUE exits 2');

    ($rc, $out) = run("$bin extra-argument");
    is($rc, 2, 'a stray argument exits 2');
}

{
    my ($rc, $out) = run("$bin --fail-fast --pg 'host=127.0.0.1 port=" . dead_port()
                         . " dbname=fluxgate user=fluxgate connect_timeout=3'"
                         . " --brokers $ENV{KAFKA_BOOTSTRAP} --group " . uniq('g'));
    is($rc, 1, '--fail-fast with PostgreSQL unreachable exits 1');
    like($out, qr/PostgreSQL: cannot connect: .*giving up \(--fail-fast\)/,
         'and says PostgreSQL cannot be reached');
}

{
    my ($rc, $out) = run("$bin --fail-fast --pg '$pg' --brokers 127.0.0.1:"
                         . dead_port() . " --group " . uniq('g')
                         . " -X socket.connection.setup.timeout.ms=2000");
    is($rc, 1, '--fail-fast with Kafka unreachable exits 1');
    like($out, qr/Kafka: cannot reach brokers 127\.0\.0\.1:\d+: .*giving up \(--fail-fast\)/,
         'and says Kafka cannot be reached');
}

{
    my ($rc, $out) = run("$bin --fail-fast --pg '$pg' --brokers $ENV{KAFKA_BOOTSTRAP}"
                         . " --topic " . uniq('no-such-topic') . " --group " . uniq('g'));
    is($rc, 1, '--fail-fast with a missing topic exits 1');
    like($out, qr/topic \S+ does not exist/, 'and names the topic');
}

{
    my ($rc, $out) = run("$bin --pg '$pg' --brokers $ENV{KAFKA_BOOTSTRAP}"
                         . " -X no.such.property=1");
    is($rc, 2, 'an unknown librdkafka property exits 2');
    like($out, qr/-X no\.such\.property=1: .*No such configuration property/,
         'with librdkafka\'s reason');

    ($rc, $out) = run("$bin -X fetch.wait.max.ms=soon");
    is($rc, 2, 'a librdkafka property with a bad value exits 2');
    like($out, qr/-X fetch\.wait\.max\.ms=soon: /, 'and names it');
}

{
    my ($rc, $out) = run("$bin --migrate --pg '$pg' --sql-dir /nonexistent");
    is($rc, 1, '--migrate with a missing SQL directory exits 1');
    like($out, qr{cannot open SQL directory /nonexistent}, 'and names it');

    ($rc, $out) = run("$bin --migrate --pg '$pg' --sql-dir $ENV{FG_ROOT}/sql");
    is($rc, 0, '--migrate on an up-to-date schema exits 0');
    like($out, qr/schema up to date .* 0 applied now/, 'and applies nothing');
}

{
    # a database migrated by an older release (001 only, with a product in
    # it), in a schema of its own so the stack's tables stay as they are
    my $schema = 't400_old_' . $$;
    my $old = "$pg options='-c search_path=$schema'";
    my $dir = tempdir(CLEANUP => 1);
    copy("$ENV{FG_ROOT}/sql/001_schema.sql", $dir) or die "copy: $!";
    psql("drop schema if exists $schema cascade; create schema $schema");
    my ($rc, $out) = run("$bin --migrate --pg \"$old\" --sql-dir $dir");
    is($rc, 0, 'a schema as release 0.1 left it (001 only)') or diag($out);
    psql("insert into $schema.products (id, stock, stock_set_offset) values ('p-old', 7, 41)");

    ($rc, $out) = run("timeout 60 $bin --pg \"$old\" --brokers $ENV{KAFKA_BOOTSTRAP}"
                      . " --group " . uniq('g'));
    is($rc, 1, 'the worker on a schema older than 002 exits 1');
    like($out, qr/error: PostgreSQL: schema older than this worker \(.*002_generations\.sql\): run fluxgate-worker --migrate; exiting/,
         'and says to run --migrate');
    unlike($out, qr/Kafka: assigned/, 'before consuming anything');

    ($rc, $out) = run("$bin --migrate --pg \"$old\" --sql-dir $ENV{FG_ROOT}/sql");
    is($rc, 0, '--migrate on it exits 0');
    like($out, qr/applied 002_generations\.sql/, 'applying 002');
    is(psql("select id || '|' || stock || '|' || generation from $schema.products"), 'p-old|7|0',
       'a product keeps its stock, in generation 0 until its first v2 message');
    is(psql("select count(*) from information_schema.columns where table_schema = '$schema'"
            . " and column_name like 'stock_set_%'"), 0, 'the offset guard columns are gone');
    is(psql("select string_agg(column_name, ',' order by column_name) from information_schema.columns"
            . " where table_schema = '$schema' and table_name = 'stock_generations'"),
       'generation,product_id,set_at,sold,stock', 'stock_generations is there');
    ($rc, $out) = run("$bin --migrate --pg \"$old\" --sql-dir $ENV{FG_ROOT}/sql");
    like($out, qr/schema up to date .* 0 applied now/, 'a second --migrate applies nothing');

    ($rc, $out) = run("timeout --preserve-status 10 $bin --pg \"$old\" --brokers $ENV{KAFKA_BOOTSTRAP}"
                      . " --topic " . uniq('t400-none') . " --group " . uniq('g'));
    like($out, qr/PostgreSQL: connected/, 'and the worker starts on it');
    is($rc, 0, 'running until stopped');
    psql("drop schema $schema cascade");
}

{
    # a worker that cannot reach PostgreSQL (without --fail-fast) waits,
    # says so, and still stops cleanly on SIGTERM
    my $log = "$ENV{FG_RUN_DIR}/logs/" . uniq('t400') . '.log';
    my $pid = fork // die;
    if ($pid == 0) {
        open STDERR, '>', $log or die;
        exec $bin, '--pg', 'host=127.0.0.1 port=' . dead_port() . ' dbname=x user=x',
            '--brokers', $ENV{KAFKA_BOOTSTRAP};
    }
    ok(wait_until(10, sub { slurp($log) =~ /PostgreSQL: cannot connect: .*retrying in \d+ ms/ }),
       'without --fail-fast an unreachable PostgreSQL is waited for, logged');
    kill 'TERM', $pid;
    waitpid $pid, 0;
    is($?, 0, 'and SIGTERM while waiting exits 0');
}

done_testing();
