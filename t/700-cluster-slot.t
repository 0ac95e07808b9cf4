# The Redis Cluster slot function (include/fluxgate_slot.h) that the
# module and fluxgate-reconcile route with: its C unit test (TAP,
# include/test_slot.c), then the same function against a real Redis's
# CLUSTER KEYSLOT over many keys, tricky hash tags among them ("{}", "{",
# "a{}{b}", the empty key, UTF-8, binary bytes).  The Redis is a private
# cluster-enabled one (no slots needed for KEYSLOT), whatever the stack is.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use File::Temp qw(tempdir);
use IO::Socket::INET;
use FluxGate::Test;
use FluxGate::Worker;

(my $dir = $ENV{FG_WORKER} || "$ENV{FG_ROOT}/build/fluxgate-worker") =~ s{/[^/]+$}{};
my $bin = "$dir/include-tests/test_slot";
ok(-x $bin, "$bin is built") or BAIL_OUT('make include-tests');

# the C unit test, its TAP folded into one subtest
subtest 'test_slot (C unit test)' => sub {
    my $out = `$bin`;
    my ($plan) = $out =~ /^1\.\.(\d+)$/m;
    ok($plan && $plan > 10, "it ran $plan tests");
    for my $l (grep { /^(not )?ok / } split /\n/, $out) {
        ok($l =~ /^ok /, $l);
    }
    is($? >> 8, 0, 'it exits 0');
};

# a private cluster-enabled Redis
my $tmp = tempdir(CLEANUP => 1);
my ($port, $bus) = free_ports(2);
system('redis-server', '--port', $port, '--bind', '127.0.0.1',
       '--cluster-enabled', 'yes', '--cluster-config-file', "$tmp/nodes.conf",
       # the bus port is not port + 10000: that may be over 65535, and then
       # Redis refuses to start
       '--cluster-port', $bus,
       '--dir', $tmp, '--daemonize', 'yes', '--save', '', '--appendonly', 'no',
       '--logfile', "$tmp/redis.log") == 0 or BAIL_OUT('redis-server');
my $s;
unless (wait_until(10, sub { $s = IO::Socket::INET->new("127.0.0.1:$port") })) {
    diag(do { local (@ARGV, $/) = "$tmp/redis.log"; <> } // 'no redis.log');
    BAIL_OUT("no cluster-enabled redis on port $port (bus $bus)");
}

my @keys = ('', '{', '}', '{}', '}{', 'a{}{b}', '{}{b}', 'a{b}c', '{a}{b}',
            'foo{{bar}}zap', 'foo{bar}{zap}', '{héllo}wörld', 'héllo',
            "\x{2603}", '{{}}', 'a{', 'a}', "a\0b", "{\0}", "\xff\xfe",
            'fg:{p1}:stock', 'fg:{}:stock', 'fg:{p{1}:gen', 'fg:{p1:gen');
srand(7);
for my $i (1 .. 2000) {
    my $len = int(rand 24);
    my $k = join '', map { (qw({ } a b c 0 : é), chr(rand 256))[int rand 9] } 1 .. $len;
    push @keys, $k, "fg:{p$i}:stock", "fg:{p$i}:idem:k$i";
}
@keys = map { utf8::is_utf8($_) ? do { my $b = $_; utf8::encode($b); $b } : $_ } @keys;

# Redis's answers, pipelined
my $req = join '', map { "*3\r\n\$7\r\nCLUSTER\r\n\$7\r\nKEYSLOT\r\n\$"
                         . length($_) . "\r\n$_\r\n" } @keys;
# (asked again on a fresh connection if one closes early: a Redis that
# just started may drop its first clients)
my @want;
for my $try (1 .. 5) {
    @want = ();
    print $s $req;
    while (@want < @keys) {
        my $l = <$s> // last;
        push @want, $l =~ /^:(\d+)/ ? $1 : "error $l";
    }
    last if @want == @keys;
    sleep 1;
    $s = IO::Socket::INET->new("127.0.0.1:$port") or next;
}

# ours
my $hex = "$tmp/keys.hex";
open my $fh, '>', $hex or die $!;
print $fh unpack('H*', $_), "\n" for @keys;
close $fh;
my @got = split /\n/, `$bin --keys < $hex`;

is(scalar @got, scalar @keys, scalar(@keys) . ' keys hashed by fg_key_slot');
my @bad = grep { ($got[$_] // '') ne ($want[$_] // '') } 0 .. $#keys;
is(scalar @bad, 0, 'every slot equals CLUSTER KEYSLOT')
    or diag(join "\n", map { sprintf '%s: ours %s, redis %s', unpack('H*', $keys[$_]),
                                     $got[$_] // '-', $want[$_] // '-' } @bad[0 .. ($#bad < 9 ? $#bad : 9)]);

system("redis-cli -p $port shutdown nosave >/dev/null 2>&1");
done_testing();
