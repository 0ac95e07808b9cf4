# fluxgate-worker's configuration file (--config FILE, or FLUXGATE_CONFIG)
# and its PostgreSQL password file (--pg-password-file, or
# FLUXGATE_PG_PASSWORD_FILE).  A setting comes from the flag, else the
# environment, else the file, else the default; the example
# conf/worker.conf is one the worker, systemd's EnvironmentFile= and
# docker's --env-file all read alike; a bad file is exit 2 naming the file
# and the line; the password read from a file is the one PostgreSQL checks.
#
# What the worker took is read from its "starting:" line, with --fail-fast
# and a topic that does not exist, so each run ends by itself.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use File::Temp qw(tempdir);
use FluxGate::Test;
use FluxGate::Worker;

my $bin = worker_bin();
my $dir = tempdir('/tmp/fluxgate-t405.XXXXXX', CLEANUP => 1);
my $pg = stack_pg();

sub write_file {
    my ($name, $text) = @_;
    open my $fh, '>', "$dir/$name" or die "$dir/$name: $!";
    print $fh $text;
    close $fh;
    return "$dir/$name";
}

# run_worker({NAME => value}, args...) -> (exit status, output): the worker
# with no FLUXGATE_* in its environment but the ones given
sub run_worker {
    my ($env, @args) = @_;
    my $pid = open(my $fh, '-|') // die "fork: $!";
    if ($pid == 0) {
        delete $ENV{$_} for grep { /^FLUXGATE_/ } keys %ENV;
        $ENV{$_} = $env->{$_} for keys %$env;
        open STDERR, '>&', \*STDOUT or die;
        exec 'timeout', '30', $bin, @args or die "exec: $!";
    }
    my $out = do { local $/; <$fh> } // '';
    close $fh;
    return ($? >> 8, $out);
}

# what the worker started with: {topic, group, brokers, size, wait}
sub started {
    my ($out) = @_;
    my @m = $out =~ /starting: topic (\S+), group (\S+), brokers (\S+), (?x)
                     batches \s of \s up \s to \s (\d+) \s messages \s or \s (\d+) \s ms/;
    return {} unless @m;
    return { topic => $m[0], group => $m[1], brokers => $m[2], size => $m[3],
             wait => $m[4] };
}

my $t_file = uniq('t405-file');
my $conf = write_file('worker.conf', <<"EOF");
# settings of test 405
FLUXGATE_BROKERS=$ENV{KAFKA_BOOTSTRAP}
FLUXGATE_TOPIC=$t_file

  FLUXGATE_GROUP=g405-file
FLUXGATE_PG=$pg
FLUXGATE_BATCH_SIZE=111
FLUXGATE_BATCH_WAIT=22   
FLUXGATE_FAIL_FAST=1
FLUXGATE_KAFKA_OPTIONS=client.id=t405 socket.connection.setup.timeout.ms=5000
EOF

{
    my ($rc, $out) = run_worker({}, '--config', $conf);
    is_deeply(started($out), { topic => $t_file, group => 'g405-file',
                               brokers => $ENV{KAFKA_BOOTSTRAP}, size => 111,
                               wait => 22 },
              '--config: every setting from the file') or diag($out);
    like($out, qr/PostgreSQL: connected/, 'FLUXGATE_PG from the file (spaces kept)');
    like($out, qr/topic \Q$t_file\E does not exist.*giving up \(--fail-fast\)/,
         'FLUXGATE_FAIL_FAST from the file');
    is($rc, 1, 'and it exits 1 on the missing topic');

    ($rc, $out) = run_worker({ FLUXGATE_CONFIG => $conf });
    is(started($out)->{topic}, $t_file, 'FLUXGATE_CONFIG names the file too');
}

{
    my ($rc, $out) = run_worker({ FLUXGATE_TOPIC => 't405-env', FLUXGATE_BATCH_SIZE => 222 },
                                '--config', $conf);
    my $s = started($out);
    is($s->{topic}, 't405-env', 'the environment wins over the file');
    is($s->{size}, 222, 'for numbers too');
    is($s->{group}, 'g405-file', 'settings the environment lacks still come from the file');

    ($rc, $out) = run_worker({ FLUXGATE_TOPIC => 't405-env', FLUXGATE_BATCH_SIZE => 222 },
                             '--config', $conf, '--topic', 't405-flag', '-n', 333);
    $s = started($out);
    is($s->{topic}, 't405-flag', 'a flag wins over the environment');
    is($s->{size}, 333, 'for numbers too');

    ($rc, $out) = run_worker({ FLUXGATE_TOPIC => '' }, '--config', $conf);
    is(started($out)->{topic}, $t_file, 'an empty variable counts as unset');

    my $other = write_file('other.conf', "FLUXGATE_TOPIC=t405-other\nFLUXGATE_TOPIC=t405-later\n"
                                         . "FLUXGATE_PG=$pg\nFLUXGATE_FAIL_FAST=yes\n"
                                         . "FLUXGATE_BROKERS=$ENV{KAFKA_BOOTSTRAP}\n");
    ($rc, $out) = run_worker({ FLUXGATE_CONFIG => $other }, '--config', $conf);
    is(started($out)->{topic}, $t_file, '--config wins over FLUXGATE_CONFIG');

    ($rc, $out) = run_worker({}, '--config', $other);
    my $s2 = started($out);
    is($s2->{topic}, 't405-later', 'a later line wins over an earlier one');
    is_deeply([@$s2{qw(group size wait)}], ['fluxgate-inventory', 5000, 100],
              'what the file leaves out has its default');
}

# the example: what the package installs as /etc/fluxgate/worker.conf
{
    my $example = "$ENV{FG_ROOT}/conf/worker.conf";
    my ($help) = (run_worker({}, '--help'))[1];
    my %documented = map { $_ => 1 } $help =~ /\[(FLUXGATE_[A-Z_]+)/g;
    open my $fh, '<', $example or die "$example: $!";
    my (@bad, %names);
    while (my $line = <$fh>) {
        chomp $line;
        next if $line =~ /^(#.*)?$/;
        # docker takes the rest of the line as it is; systemd drops outer
        # quotes, unescapes backslashes and trims: none of that may apply
        if ($line !~ /^([A-Z][A-Z0-9_]*)=([^"'\\\s](?:[^"'\\]*[^"'\\\s])?)?$/) {
            push @bad, $line;
            next;
        }
        $names{$1} = 1;
    }
    is_deeply(\@bad, [], 'conf/worker.conf: NAME=VALUE lines without quotes, '
              . 'backslashes or white space at the ends, comments, blank lines');
    is_deeply([grep { !$documented{$_} } sort keys %names], [],
              'every name in it is one --help documents');
    ok(keys %names >= 8, 'it sets the worker\'s settings');

    my $t = uniq('t405-example');
    my ($rc, $out) = run_worker({}, '--config', $example, '--brokers',
                                $ENV{KAFKA_BOOTSTRAP}, '--pg', $pg, '--topic', $t,
                                '--fail-fast');
    is_deeply(started($out), { topic => $t, group => 'fluxgate-inventory',
                               brokers => $ENV{KAFKA_BOOTSTRAP}, size => 5000,
                               wait => 100 },
              'the worker reads it (its librdkafka options pass the check)')
        or diag($out);
    is($rc, 1, 'and stops on the missing topic, not on the file');
}

# a bad file: exit 2, naming the file and the line
for my $case (
    [ 'quoted value', qq{FLUXGATE_TOPIC=orders\nFLUXGATE_PG="host=/x dbname=y"\n},
      qr/bad\.conf:2: FLUXGATE_PG: write the value without quotes/ ],
    [ 'single quotes', qq{FLUXGATE_TOPIC='orders'\n},
      qr/bad\.conf:1: FLUXGATE_TOPIC: write the value without quotes/ ],
    [ 'unknown name', qq{# typo\nFLUXGATE_TOPICS=orders\n},
      qr/bad\.conf:2: unknown setting FLUXGATE_TOPICS/ ],
    [ 'no =', qq{FLUXGATE_TOPIC orders\n},
      qr/bad\.conf:1: NAME=VALUE expected, not "FLUXGATE_TOPIC orders"/ ],
    [ 'bad number', qq{\n\nFLUXGATE_BATCH_WAIT=soon\n},
      qr/FLUXGATE_BATCH_WAIT \(\S*bad\.conf:3\) must be an integer from 0 to 600000, not "soon"/ ],
    [ 'bad switch', qq{FLUXGATE_FAIL_FAST=maybe\n},
      qr/FLUXGATE_FAIL_FAST \(\S*bad\.conf:1\) must be 1\/0/ ],
    [ 'bad librdkafka option', qq{FLUXGATE_KAFKA_OPTIONS=no.such.property=1\n},
      qr/no\.such\.property=1: .*No such configuration property/ ],
) {
    my ($name, $text, $want) = @$case;
    my $f = write_file('bad.conf', $text);
    my ($rc, $out) = run_worker({}, '--config', $f, '--topic', 'never');
    is($rc, 2, "$name: exit 2");
    like($out, $want, "$name: says where and what");
}

{
    my ($rc, $out) = run_worker({}, '--config', "$dir/no-such.conf");
    is($rc, 2, 'a missing --config file: exit 2');
    like($out, qr{cannot read \S*no-such\.conf: No such file or directory}, 'naming it');
}

# --- the password file --------------------------------------------------
#
# The stack's PostgreSQL trusts everyone, so a role of this test gets a
# pg_hba.conf line of its own that asks it for its password.

my $role = 't405_' . $$;
my $secret = 'pw-' . int(rand(1e9)) . ' with spaces';
my $hba = "$ENV{FG_RUN_DIR}/pg/data/pg_hba.conf";
my $hba_line = "host all $role 127.0.0.1/32 scram-sha-256  # t/405-worker-config.t\n";

sub set_hba {
    my ($on) = @_;
    open my $in, '<', $hba or die "$hba: $!";
    my @lines = grep { $_ ne $hba_line } <$in>;
    close $in;
    unshift @lines, $hba_line if $on;
    # rewritten in place: the file keeps its owner, postgres
    open my $out, '+<', $hba or die "$hba: $!";
    truncate $out, 0;
    print $out @lines;
    close $out;
    psql('select pg_reload_conf()');
}

END {
    if ($role && -f $hba) {
        set_hba(0);
        eval { psql("drop role if exists $role") };
    }
}

psql("create role $role login password '$secret'");
set_hba(1);
my $tcp = "host=127.0.0.1 port=$ENV{PGPORT} dbname=fluxgate user=$role connect_timeout=5";
ok(wait_until(10, sub {
    `PGPASSWORD=wrong psql -X -Atq '$tcp' -c 'select 1' 2>&1` =~ /password authentication failed/
}), "PostgreSQL asks $role for its password");

my $t_pw = uniq('t405-pw');
my @common = ('--brokers', $ENV{KAFKA_BOOTSTRAP}, '--topic', $t_pw, '--fail-fast',
              '--pg', $tcp);
my $right = write_file('pg-password', "$secret\n");
my $crlf = write_file('pg-password-crlf', "$secret\r\nsecond line\n");
my $wrong = write_file('pg-password-wrong', "not-$secret\n");

{
    my ($rc, $out) = run_worker({}, @common, '--pg-password-file', $right);
    like($out, qr/PostgreSQL: connected/, '--pg-password-file: the password is accepted')
        or diag($out);
    unlike($out, qr/\Q$secret\E/, 'and never printed');

    ($rc, $out) = run_worker({ FLUXGATE_PG_PASSWORD_FILE => $crlf }, @common);
    like($out, qr/PostgreSQL: connected/,
         'FLUXGATE_PG_PASSWORD_FILE: the first line, without its CRLF');

    my $c = write_file('pw.conf', "FLUXGATE_PG_PASSWORD_FILE=$right\n");
    ($rc, $out) = run_worker({}, @common, '--config', $c);
    like($out, qr/PostgreSQL: connected/, 'FLUXGATE_PG_PASSWORD_FILE in the --config file');

    ($rc, $out) = run_worker({ FLUXGATE_PG_PASSWORD_FILE => $right }, @common,
                             '--pg-password-file', $wrong);
    like($out, qr/PostgreSQL: cannot connect: .*password authentication failed.*giving up/,
         'the flag wins over the environment: the wrong password is refused');
    is($rc, 1, 'exit 1 with --fail-fast');

    ($rc, $out) = run_worker({}, @common);
    like($out, qr/password/, 'without it, no password: refused');
}

{
    my ($rc, $out) = run_worker({}, @common, '--pg-password-file', "$dir/none");
    is($rc, 2, 'a missing password file: exit 2');
    like($out, qr{--pg-password-file: cannot read \S+/none: No such file}, 'naming it');

    my $empty = write_file('empty', "\n");
    ($rc, $out) = run_worker({ FLUXGATE_PG_PASSWORD_FILE => $empty }, @common);
    is($rc, 2, 'an empty password file: exit 2');
    like($out, qr/FLUXGATE_PG_PASSWORD_FILE: no password on the first line of \S+empty/,
         'naming the variable and the file');
}

done_testing();
