package FluxGate::Cluster;

# A private Redis Cluster for the cluster tests (t/7xx), whatever the
# stack's own Redis is: N masters with one replica each, redis-server with
# cluster-enabled and AOF off (the tests kill nodes on purpose), on free
# loopback ports, made with `redis-cli --cluster create`.  The gates of
# FluxGate::Fleet reach it with redis => cluster_directive($c).
#
#   my $c = cluster_start(masters => 3, node_timeout => 2000);
#   cluster_redis($c, 'GET', 'k')        redis-cli -c on a live node
#   cluster_master_of($c, $key)          "127.0.0.1:port" serving its slot
#   cluster_masters($c)                  [{addr, port, id, slots => [[a,b]]}]
#   cluster_kill($c, $port)              kill -9 of one node
#   cluster_restart($c, $port)           ... and back (as a replica)
#   node_redis($port, @cmd)              one node, no redirection followed
#   cluster_migrate_slot($c, $slot, $to_port, during => sub { ... })
#                                        moves a slot by hand (SETSLOT
#                                        IMPORTING/MIGRATING, MIGRATE, SETSLOT
#                                        NODE); `during` runs while the keys
#                                        are moved but the slot is still
#                                        migrating (the ASK window)
#   cluster_stop($c)

use strict;
use warnings;
use Exporter 'import';
use File::Path qw(make_path remove_tree);
use IO::Socket::INET;
use Time::HiRes qw(time sleep);
use Test::More ();
use FluxGate::Test;

our @EXPORT = qw(cluster_start cluster_stop cluster_redis cluster_directive
                 cluster_master_of cluster_masters cluster_kill cluster_nodes
                 cluster_wait_ok node_redis cluster_migrate_slot
                 cluster_restart cluster_alive);

my $Seq = 0;
my @Started;

sub cluster_start {
    my (%o) = @_;
    my $n = $o{masters} // 3;
    my $dir = "$ENV{FG_RUN_DIR}/cluster-$$-" . ++$Seq;
    my @ports = free_ports(4 * $n);
    my @bus = splice @ports, 2 * $n;
    my %bus = map { $ports[$_] => $bus[$_] } 0 .. $#ports;
    my $c = { dir => $dir, ports => \@ports, pids => {} };
    for my $p (@ports) {
        make_path("$dir/$p");
        $c->{args}{$p} = [
            '--port', $p, '--bind', '127.0.0.1', '--cluster-enabled', 'yes',
            '--cluster-config-file', "$dir/$p/nodes.conf",
            # the bus port is not port + 10000: that may be over 65535
            '--cluster-port', $bus{$p},
            '--cluster-node-timeout', $o{node_timeout} // 2000,
            # a master down stops only its own slots
            '--cluster-require-full-coverage', 'no',
            '--dir', "$dir/$p", '--daemonize', 'yes',
            '--pidfile', "$dir/$p/redis.pid", '--save', '',
            '--appendonly', 'no', '--repl-diskless-sync-delay', 0,
            '--logfile', "$dir/$p/redis.log" ];
        system('redis-server', @{ $c->{args}{$p} }) == 0
            or die "redis-server on $p did not start";
    }
    for my $p (@ports) {
        wait_until(10, sub { `redis-cli -p $p ping 2>&1` =~ /PONG/ })
            or die "redis node $p does not answer";
        $c->{pids}{$p} = do { local (@ARGV, $/) = "$dir/$p/redis.pid"; <> } + 0;
    }
    my $addrs = join ' ', map { "127.0.0.1:$_" } @ports;
    my $out = `redis-cli --cluster create $addrs --cluster-replicas 1 --cluster-yes 2>&1`;
    die "cluster create failed: $out" if $?;
    push @Started, $c;
    cluster_wait_ok($c, 30) or die "cluster_state is not ok";
    # every replica synced: a replica without its master's data cannot
    # take over (cluster-replica-validity-factor)
    wait_until(30, sub {
        my @replicas = grep { $_->{flags} =~ /slave/ } @{ cluster_nodes($c) };
        @replicas == $n && !grep {
            `redis-cli -p $_->{port} info replication 2>&1` !~ /master_link_status:up/
        } @replicas;
    }) or die "the replicas did not sync";
    # ... and every master sees its replica acknowledge a write (WAIT), so
    # a test's first write is not the one that finds replication starting
    for my $m (@{ cluster_masters($c) }) {
        my $key;
        for my $i (1 .. 1000) {
            my $slot = node_redis($m->{port}, 'CLUSTER', 'KEYSLOT', "fg-ready-$i");
            next unless grep { $slot >= $_->[0] && $slot <= $_->[1] } @{ $m->{slots} };
            $key = "fg-ready-$i";
            last;
        }
        die "no key found for the slots of $m->{addr}" unless defined $key;
        my $acks = `printf 'SET $key 1\nWAIT 1 30000\nDEL $key\n' | redis-cli -p $m->{port} 2>&1`;
        $acks =~ /^OK\n1\n/ or die "$m->{addr}: no replica acknowledged a write: $acks";
    }
    return $c;
}

# whatever a test leaves running when it dies is killed with it
END { my $died = $?; cluster_stop($_, $died) for grep { !$_->{stopped} } @Started }

# the nodes that answer: alive, and not frozen by a test ($c->{frozen}{$port})
sub cluster_alive {
    my ($c) = @_;
    grep { !$c->{frozen}{$_} && kill 0, $c->{pids}{$_} } @{ $c->{ports} };
}

# every live node says cluster_state:ok and agrees on the masters
sub cluster_wait_ok {
    my ($c, $secs) = @_;
    return wait_until($secs // 30, sub {
        !grep { `redis-cli -p $_ cluster info 2>&1` !~ /cluster_state:ok/ }
            cluster_alive($c);
    });
}

sub cluster_directive {
    my ($c) = @_;
    return 'cluster ' . join ' ', map { "127.0.0.1:$_" } @{ $c->{ports} };
}

sub cluster_redis {
    my ($c, @cmd) = @_;
    my ($p) = cluster_alive($c);
    my $q = join ' ', map { (my $s = $_) =~ s/'/'\\''/g; "'$s'" } @cmd;
    my $out = `redis-cli -c -p $p --raw $q 2>&1`;
    chomp $out;
    return wantarray ? split(/\n/, $out) : $out;
}

# CLUSTER NODES of a live node: [{id, addr, port, flags, master, slots}]
sub cluster_nodes {
    my ($c) = @_;
    my ($p) = cluster_alive($c);
    my @nodes;
    for my $l (split /\n/, `redis-cli -p $p cluster nodes 2>&1`) {
        my ($id, $addr, $flags, $master, undef, undef, undef, undef, @slots)
            = split ' ', $l;
        next unless $addr;
        my ($port) = $addr =~ /:(\d+)/;
        push @nodes, { id => $id, addr => "127.0.0.1:$port", port => $port,
                       flags => $flags, master => $master,
                       slots => [ map { [ /^(\d+)(?:-(\d+))?$/ ? ($1, $2 // $1) : () ] }
                                  grep { /^\d/ } @slots ] };
    }
    return \@nodes;
}

sub cluster_masters {
    my ($c) = @_;
    return [ grep { $_->{flags} =~ /master/ && $_->{flags} !~ /fail/
                    && @{ $_->{slots} } } @{ cluster_nodes($c) } ];
}

sub cluster_master_of {
    my ($c, $key) = @_;
    my $slot = cluster_redis($c, 'CLUSTER', 'KEYSLOT', $key);
    for my $m (@{ cluster_masters($c) }) {
        for my $r (@{ $m->{slots} }) {
            return $m->{addr} if @$r == 2 && $slot >= $r->[0] && $slot <= $r->[1];
        }
    }
    return undef;
}

sub node_redis {
    my ($port, @cmd) = @_;
    my $q = join ' ', map { (my $s = $_) =~ s/'/'\\''/g; "'$s'" } @cmd;
    my $out = `redis-cli -p $port --raw $q 2>&1`;
    chomp $out;
    return wantarray ? split(/\n/, $out) : $out;
}

sub _migrate_keys {
    my ($slot, $from, $to) = @_;
    my $moved = 0;
    while (my @keys = node_redis($from, 'CLUSTER', 'GETKEYSINSLOT', $slot, 100)) {
        my $out = node_redis($from, 'MIGRATE', '127.0.0.1', $to, '', 0, 5000,
                             'REPLACE', 'KEYS', @keys);
        die "MIGRATE: $out" unless $out =~ /OK|NOKEY/;
        $moved += @keys;
    }
    return $moved;
}

sub cluster_migrate_slot {
    my ($c, $slot, $to, %o) = @_;
    my %id = map { $_->{port} => $_->{id} } @{ cluster_nodes($c) };
    my ($from) = map { $_->{port} } grep {
        grep { $slot >= $_->[0] && $slot <= $_->[1] } @{ $_->{slots} }
    } @{ cluster_masters($c) };
    die "slot $slot: no master" unless $from;
    die "slot $slot is on $to already" if $from == $to;
    node_redis($to, 'CLUSTER', 'SETSLOT', $slot, 'IMPORTING', $id{$from}) =~ /OK/
        or die 'SETSLOT IMPORTING';
    node_redis($from, 'CLUSTER', 'SETSLOT', $slot, 'MIGRATING', $id{$to}) =~ /OK/
        or die 'SETSLOT MIGRATING';
    my $moved = _migrate_keys($slot, $from, $to);
    $o{during}->() if $o{during};
    $moved += _migrate_keys($slot, $from, $to);
    for my $m ($to, $from, grep { $_ != $to && $_ != $from }
                              map { $_->{port} } @{ cluster_masters($c) }) {
        node_redis($m, 'CLUSTER', 'SETSLOT', $slot, 'NODE', $id{$to});
    }
    return { from => $from, to => $to, keys => $moved };
}

sub cluster_kill {
    my ($c, $port) = @_;
    kill 'KILL', $c->{pids}{$port};
    wait_until(5, sub { !kill 0, $c->{pids}{$port} });
}

# a killed node started again: it rejoins (nodes.conf), as a replica of
# whoever took its slots
sub cluster_restart {
    my ($c, $port) = @_;
    unlink "$c->{dir}/$port/redis.pid";
    system('redis-server', @{ $c->{args}{$port} }) == 0
        or die "redis-server on $port did not start";
    wait_until(10, sub { `redis-cli -p $port ping 2>&1` =~ /PONG/ })
        or die "redis node $port does not answer";
    $c->{pids}{$port} = do { local (@ARGV, $/) = "$c->{dir}/$port/redis.pid"; <> } + 0;
}

# the nodes killed; their directories (redis.log, nodes.conf) are kept for
# the reader when a test has failed
sub cluster_stop {
    my ($c, $died) = @_;
    kill 'KILL', grep { $_ } values %{ $c->{pids} };
    $c->{stopped} = 1;
    if ($died || !Test::More->builder->is_passing) {
        print STDERR "# the cluster's nodes kept in $c->{dir}\n" if -d $c->{dir};
    } else {
        remove_tree($c->{dir});
    }
}

1;
