package FluxGate::Test;

# What Flux-Gate's Perl tests share: reaching the stack that t/run started
# (its DIR/env is in %ENV), Redis and PostgreSQL through their own command
# line clients, Kafka through kcat and Kafka's TopicCommand, and the stack's
# services through supervisorctl, so a test can stop, kill or freeze one.

use strict;
use warnings;
use Exporter 'import';
use Time::HiRes qw(time sleep);
use JSON::PP ();

our @EXPORT = qw(redis psql kafka_produce kafka_consume kafka_create_topic
                 svc svc_pid wait_until uniq json_encode json_decode
                 http_post stack_env);

for my $v (qw(FG_ROOT FG_RUN_DIR REDIS_PORT PGPORT KAFKA_BOOTSTRAP)) {
    die "FluxGate::Test: $v is not set; run the suite with `make test`\n"
        unless defined $ENV{$v};
}

my $JSON = JSON::PP->new->canonical;

sub json_encode { $JSON->encode(shift) }
sub json_decode { JSON::PP->new->decode(shift) }

sub stack_env { $ENV{$_[0]} }

sub _shell_quote {
    my $s = shift;
    $s =~ s/'/'\\''/g;
    return "'$s'";
}

sub _run {
    my ($cmd) = @_;
    my $out = `$cmd`;
    die "command failed ($?): $cmd\n$out" if $? != 0;
    return $out;
}

# redis('GET', 'k') -> the reply as redis-cli --raw prints it, chomped;
# in list context one element per line
sub redis {
    my $cmd = "redis-cli -h 127.0.0.1 -p $ENV{REDIS_PORT} --raw "
            . join(' ', map { _shell_quote($_) } @_) . ' 2>&1';
    my $out = _run($cmd);
    chomp $out;
    return wantarray ? split(/\n/, $out) : $out;
}

# psql('select ...') -> rows, columns joined by '|'
sub psql {
    my ($sql) = @_;
    my $out = _run("psql -X -v ON_ERROR_STOP=1 -Atq -c " . _shell_quote($sql)
                   . " 2>&1");
    chomp $out;
    return wantarray ? split(/\n/, $out) : $out;
}

# kafka_produce($topic, [[key, value], ...]) with acks from all replicas
sub kafka_produce {
    my ($topic, $msgs) = @_;
    my $file = "$ENV{FG_RUN_DIR}/produce.$$";
    open my $fh, '>', $file or die $!;
    for my $m (@$msgs) {
        die "kafka_produce: no record separators in test messages\n"
            if "$m->[0]$m->[1]" =~ /[\x1e\x1f]/;
        print $fh "$m->[0]\x1f$m->[1]\x1e";
    }
    close $fh;
    _run("kcat -P -b $ENV{KAFKA_BOOTSTRAP} -t " . _shell_quote($topic)
         . " -K \$'\\x1f' -D \$'\\x1e' -X acks=all -l $file 2>&1");
    unlink $file;
}

# kafka_consume($topic, count => N, timeout => s, offset => 'beginning')
# -> list of {partition, offset, key, payload}
sub kafka_consume {
    my ($topic, %o) = @_;
    my $offset = $o{offset} // 'beginning';
    my $count  = $o{count} ? "-c $o{count}" : '';
    my $cmd = "timeout " . ($o{timeout} || 20) . " kcat -C -b $ENV{KAFKA_BOOTSTRAP}"
            . " -t " . _shell_quote($topic) . " -o $offset -e $count -J -q 2>&1";
    my $out = `$cmd`;
    my @msgs;
    for my $line (split /\n/, $out) {
        next unless $line =~ /^\{/;
        my $m = eval { JSON::PP->new->decode($line) } or next;
        push @msgs, $m;
    }
    return @msgs;
}

sub kafka_create_topic {
    my ($topic, $partitions) = @_;
    $partitions ||= 1;
    _run("java -cp '$ENV{FG_KAFKA_LIBS}/*'"
         . " -Dlog4j.configuration=file:$ENV{FG_RUN_DIR}/kafka/tools-log4j.properties"
         . " org.apache.kafka.tools.TopicCommand --bootstrap-server $ENV{KAFKA_BOOTSTRAP}"
         . " --create --if-not-exists --topic " . _shell_quote($topic)
         . " --partitions $partitions --replication-factor 1 2>&1");
}

# svc('stop', 'postgres'); svc('start', 'worker'); svc('status', 'redis')
sub svc {
    my ($action, $name) = @_;
    my $out = `FG_RUN_DIR=$ENV{FG_RUN_DIR} supervisorctl -c $ENV{FG_ROOT}/conf/supervisord.conf $action $name 2>&1`;
    chomp $out;
    return $out;
}

sub svc_pid {
    my ($name) = @_;
    my $pid = svc('pid', $name);
    return $pid =~ /^\d+$/ && $pid > 0 ? $pid : undef;
}

# wait_until(10, sub { ... }) -> true when the sub returned true in time
sub wait_until {
    my ($timeout, $cond) = @_;
    my $deadline = time + $timeout;
    while (time < $deadline) {
        my $ok = eval { $cond->() };
        return $ok if $ok;
        sleep 0.1;
    }
    return 0;
}

my $Seq = 0;

# uniq('p') -> an id no other test run used: product ids, keys, topics
sub uniq {
    my ($prefix) = @_;
    return sprintf "%s-%d-%d-%d", $prefix, $$, int(time * 1000) % 100000000,
        ++$Seq;
}

# http_post($url, $body, {header => value}) -> {status, headers, content}
sub http_post {
    my ($url, $body, $headers) = @_;
    require HTTP::Tiny;
    my $res = HTTP::Tiny->new(timeout => 10, max_redirect => 0)->request(
        'POST', $url, { headers => { 'Content-Type' => 'application/json',
                                     %{ $headers || {} } },
                        content => $body });
    return $res;
}

1;
