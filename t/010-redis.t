# Redis of the stack: answers, and keeps what it was told across a restart
# (AOF with appendfsync everysec), including a crash a second after a write.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use FluxGate::Test;

is(redis('PING'), 'PONG', 'redis answers');
is(redis('CONFIG', 'GET', 'appendonly'), "appendonly\nyes", 'AOF is on');
is(redis('CONFIG', 'GET', 'appendfsync'), "appendfsync\neverysec",
   'AOF fsyncs every second');

my $key = 'fg:{' . uniq('t010') . '}:stock';
redis('SET', $key, 42);

like(svc('restart', 'redis'), qr/started/, 'redis restarted (SIGTERM)');
ok(wait_until(10, sub { redis('PING') eq 'PONG' }), 'redis back after restart');
is(redis('GET', $key), 42, 'stock survives a clean restart');

redis('DECRBY', $key, 2);
sleep 1.5;                       # one everysec fsync later
my $pid = svc_pid('redis');
ok($pid, "redis pid $pid");
kill 'KILL', $pid;
# RUNNING too, not only answering: the tests after this one find the
# stack as it was (supervisord says STARTING for its first second)
ok(wait_until(15, sub { my $p = svc_pid('redis'); $p && $p != $pid
                        && redis('PING') eq 'PONG'
                        && svc('status', 'redis') =~ /RUNNING/ }),
   'supervisord restarted redis after kill -9');
is(redis('GET', $key), 40, 'stock survives kill -9 a second after the write');

redis('DEL', $key);
done_testing();
