# The pre-queue's shuffle: include/fluxgate_shuffle.h (the gate answers
# polls with it) and lua/lib/shuffle.lua (order.lua admits with it) must
# give every place the same turn.  The C unit tests first
# (include/test_shuffle.c: a permutation, keyed), then both sides on the
# same seeds, sizes and places, Redis running the Lua.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use FluxGate::Test;

(my $dir = $ENV{FG_WORKER} || "$ENV{FG_ROOT}/build/fluxgate-worker") =~ s{/[^/]+$}{};
my $bin = "$dir/include-tests/test_shuffle";
ok(-x $bin, "$bin is built") or BAIL_OUT('make include-tests');

subtest 'test_shuffle (C unit test)' => sub {
    my $out = `$bin`;
    is($?, 0, 'exit status 0');
    unlike($out, qr/^not ok/m, 'every test passed') or diag($out);
};

my $lib = do { local (@ARGV, $/) = "$ENV{FG_ROOT}/lua/lib/shuffle.lua"; <> };
my $lua = $lib . "\nlocal out = {}\n"
        . "for i = 3, #ARGV do out[#out + 1] = shuffle(ARGV[1], tonumber(ARGV[i]), tonumber(ARGV[2])) end\n"
        . "return out\n";

srand(207);
for my $case (['00112233445566778899aabbccddeeff', 1000],
              ['a seed', 3], ['a seed', 17], ['x' x 32, 65536],
              [join('', map { sprintf '%02x', int rand 256 } 1 .. 16), 1_000_000],
              [join('', map { sprintf '%02x', int rand 256 } 1 .. 16), 123_457],
              ['big', 2 ** 40]) {
    my ($seed, $n) = @$case;
    my @k = map { int rand $n } 1 .. 50;
    push @k, 0, $n - 1;
    my @c = split /\n/, `$bin '$seed' $n @k`;
    my @l = redis('EVAL', $lua, 0, $seed, $n, @k);
    is_deeply(\@l, \@c, "seed '$seed', $n places: C and Lua agree on " . scalar(@k) . ' turns');
    ok(!grep({ $_ >= $n } @c), '... every turn in range');
}

done_testing();
