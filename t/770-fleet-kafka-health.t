# Kafka health is the topic's, not "some broker is up": with two of the
# three brokers stopped, a broker still answers, yet
#   - a topic replicated three times with min.insync.replicas 2 has one
#     in-sync replica left: acks=all cannot succeed, so the gate reads
#     kafka down (and says why);
#   - a topic whose only replica lived on a stopped broker has a partition
#     without a leader: down as well.
# Both read up again once the brokers are back.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(time sleep);
use FluxGate::Test;
use FluxGate::Fleet;
use FluxGate::FleetStack;

fleet_or_skip(brokers => 3);

sub topic_create {
    my ($topic, @args) = @_;
    my $out = `java -cp '$ENV{FG_KAFKA_LIBS}/*' -Dlog4j.configuration=file:$ENV{FG_RUN_DIR}/kafka/tools-log4j.properties org.apache.kafka.tools.TopicCommand --bootstrap-server $ENV{KAFKA_BOOTSTRAP} --create --topic $topic @args 2>&1`;
    die "topic $topic: $out" if $?;
}

my $replicated = uniq('t770-rf3');
topic_create($replicated, '--partitions', 1, '--replication-factor', 3,
             '--config', 'min.insync.replicas=2');
# one replica, on broker 3 (the brokers default to min.insync.replicas 2,
# which a single replica can never meet: health would rightly read down)
my $single = uniq('t770-rf1');
topic_create($single, '--replica-assignment', 3, '--config', 'min.insync.replicas=1');

my $health = "location = /health { fluxgate_health; }";
my $ga = gate_start(workers => 1, topic => $replicated, server => $health);
my $gb = gate_start(workers => 1, topic => $single, server => $health);

sub health { my $r = http_get(gate_url($_[0]) . '/health'); "$r->{status} $r->{content}" }
my $up = '200 {"status":"ok","redis":"up","kafka":"up"}';
my $down = '503 {"status":"unavailable","redis":"up","kafka":"down"}';

ok(wait_until(30, sub { health($ga) eq $up && health($gb) eq $up }), 'both gates up')
    or diag(health($ga) . ' / ' . health($gb));

my @stopped = map { kafka_program($_) } 2, 3;
END { svc('start', $_) for @stopped }
like(svc('stop', $_), qr/stopped/, "$_ stopped") for @stopped;
my $t0 = time;

ok(wait_until(30, sub { health($gb) eq $down }), 'the topic whose partition lost its leader: kafka down')
    or diag(health($gb));
ok(wait_until(30, sub { health($ga) eq $down }), 'the replicated topic with one in-sync replica: kafka down')
    or diag(health($ga));
diag(sprintf 'both down %.1f s after the brokers stopped', time - $t0);
like(gate_log($gb), qr/topic "\Q$single\E": partition 0 has no leader/, 'why: no leader');
like(gate_log($ga), qr/topic "\Q$replicated\E": partition 0 has 1 in-sync replicas, min\.insync\.replicas is 2/,
     'why: too few in-sync replicas');

like(svc('start', $_), qr/started/, "$_ started") for @stopped;
@stopped = ();
ok(wait_until(90, sub { health($ga) eq $up && health($gb) eq $up }), 'both up again')
    or diag(health($ga) . ' / ' . health($gb));
like(gate_log($ga), qr/topic "\Q$replicated\E" is fit again/, 'the return is logged');

gate_stop($_) for $ga, $gb;
done_testing();
