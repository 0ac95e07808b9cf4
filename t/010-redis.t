# Redis of the stack: answers, and keeps what it was told across a restart
# (AOF with appendfsync everysec), including a crash a second after a write.
#
# kill -9 does not lose what Redis write()s to its AOF, fsynced or not: the
# page cache outlives the process.  So surviving the kill alone would pass
# with `appendfsync no` too.  What makes the write durable is checked
# itself, at the moment of the kill: the AOF is on with a policy that
# fsyncs within a second, the write is in the AOF file on disk, and Redis
# reports no failed write and no postponed or outstanding fsync.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use FluxGate::Test;

# CONFIG GET name -> its value
sub config { (redis('CONFIG', 'GET', $_[0]))[1] // '' }

sub persistence {
    return { map { /^(\w+):(.*?)\r?$/ ? ($1, $2) : () } redis('INFO', 'persistence') };
}

# the AOF's incremental files, as its manifest lists them, concatenated
sub aof_incr {
    my $dir = config('dir') . '/' . config('appenddirname');
    open my $m, '<', "$dir/" . config('appendfilename') . '.manifest'
        or return '';
    my $text = '';
    for my $line (<$m>) {
        my %f = $line =~ /(\w+) (\S+)/g;
        next unless ($f{type} // '') eq 'i' && defined $f{file};
        open my $fh, '<', "$dir/$f{file}" or next;
        local $/;
        $text .= <$fh> // '';
    }
    return $text;
}

sub resp { join('', '*' . @_ . "\r\n", map { '$' . length($_) . "\r\n$_\r\n" } @_) }

is(redis('PING'), 'PONG', 'redis answers');
is(config('appendonly'), 'yes', 'AOF is on');
is(config('appendfsync'), 'everysec', 'AOF fsyncs every second');

my $p = uniq('t010');
my $key = "fg:{$p}:stock";
set_stock($p, 42);

like(svc('restart', 'redis'), qr/started/, 'redis restarted (SIGTERM)');
ok(wait_until(10, sub { redis('PING') eq 'PONG' }), 'redis back after restart');
is(redis('GET', $key), 42, 'stock survives a clean restart');

my $delayed = persistence()->{aof_delayed_fsync};
redis('DECRBY', $key, 2);
# the durability of that write, as Redis holds it at the moment of the kill
like(config('appendonly') . ' ' . config('appendfsync'), qr/^yes (everysec|always)$/,
     'at the kill: AOF on, fsynced at least every second');
# Redis writes a command to its AOF before it answers: the file has it now
like(aof_incr(), qr/\Q${\ resp('DECRBY', $key, 2)}\E/, 'the write is in the AOF file');
ok(wait_until(5, sub { persistence()->{aof_pending_bio_fsync} eq '0' }),
   'no fsync outstanding');
my $info = persistence();
is($info->{aof_last_write_status}, 'ok', 'the last AOF write succeeded');
is($info->{aof_delayed_fsync}, $delayed, 'no fsync was postponed since the write');

my $pid = svc_pid('redis');
ok($pid, "redis pid $pid");
kill 'KILL', $pid;
# RUNNING too, not only answering: the tests after this one find the
# stack as it was (supervisord says STARTING for its first second)
ok(wait_until(15, sub { my $p = svc_pid('redis'); $p && $p != $pid
                        && redis('PING') eq 'PONG'
                        && svc('status', 'redis') =~ /RUNNING/ }),
   'supervisord restarted redis after kill -9');
is(redis('GET', $key), 40, 'stock survives kill -9 after the write');

redis('DEL', $key, "fg:{$p}:gen");
done_testing();
