/*
 * test_shuffle.c: unit tests of include/fluxgate_shuffle.h, the pre-queue's
 * keyed permutation, printed as TAP (t/207-shuffle.t runs it).
 *
 *   test_shuffle                 the TAP tests
 *   test_shuffle SEED N K...     prints the turn of each K among N, one per
 *                                line: t/207 compares them with the same
 *                                function in lua/order.lua run by Redis
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fluxgate_shuffle.h"
#include "test_tap.h"


static const char  *seed = "00112233445566778899aabbccddeeff";


/* every k in [0, n) maps into [0, n), and no two onto the same turn */
static int
bijective(const char *s, uint64_t n)
{
    int            ok = 1;
    uint64_t       k, t;
    unsigned char *seen;

    seen = calloc(n ? n : 1, 1);

    for (k = 0; k < n; k++) {
        t = fg_shuffle(s, strlen(s), k, n);

        if (t >= n || seen[t]) {
            ok = 0;
            break;
        }

        seen[t] = 1;
    }

    free(seen);
    return ok;
}


int
main(int argc, char **argv)
{
    int       i, moved, same;
    uint64_t  n, k;

    if (argc >= 3) {
        n = strtoull(argv[2], NULL, 10);

        for (i = 3; i < argc; i++) {
            k = strtoull(argv[i], NULL, 10);
            printf("%llu\n", (unsigned long long)
                   fg_shuffle(argv[1], strlen(argv[1]), k, n));
        }

        return 0;
    }

    is_int(fg_shuffle(seed, strlen(seed), 0, 1), 0, "n = 1: the only turn");
    is_int(fg_shuffle(seed, strlen(seed), 5, 3), 5, "k out of range: unchanged");
    is_int(fg_shuffle_bits(1), 1, "half width of 1: 1");
    is_int(fg_shuffle_bits(5), 2, "half width of 5: 2 (16 values)");
    is_int(fg_shuffle_bits(1000000), 10, "half width of a million: 10");

    ok(bijective(seed, 2), "a permutation of [0, 2)");
    ok(bijective(seed, 3), "a permutation of [0, 3)");
    ok(bijective(seed, 17), "a permutation of [0, 17)");
    ok(bijective(seed, 1000), "a permutation of [0, 1000)");
    ok(bijective(seed, 65536), "a permutation of [0, 65536) (a full domain)");
    ok(bijective(seed, 100003), "a permutation of [0, 100003)");
    ok(bijective("another seed", 1000), "another seed: a permutation too");

    /* another seed, another order: few turns stay the same */
    same = 0;
    moved = 0;

    for (k = 0; k < 1000; k++) {
        uint64_t  a = fg_shuffle(seed, strlen(seed), k, 1000);
        uint64_t  b = fg_shuffle("another seed", 12, k, 1000);

        same += (a == b);
        moved += (a != k);
    }

    ok(same < 20, "two seeds agree on %d turns of 1000 (chance: about 1)", same);
    ok(moved > 980, "%d of 1000 places moved", moved);

    /* a large line: computed, in range */
    n = (uint64_t) 1 << 40;
    k = fg_shuffle(seed, strlen(seed), n - 1, n);
    ok(k < n, "the last of 2^40 places has a turn in range");

    return done_testing();
}
