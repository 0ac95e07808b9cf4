/*
 * test_shuffle.c: unit tests of include/fluxgate_shuffle.h, the pre-queue's
 * keyed permutation, printed as TAP (t/207-shuffle.t runs it).
 *
 *   test_shuffle                 the TAP tests
 *   test_shuffle SEED N K...     prints the turn of each K among N, one per
 *                                line: t/207 compares them with the same
 *                                function in lua/order.lua run by Redis
 */
#include <math.h>
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


/* Spearman's rho between place and turn over [0, n) for one seed */
static double
rho(const char *s, uint64_t n)
{
    double    d, sum;
    uint64_t  k;

    sum = 0;

    for (k = 0; k < n; k++) {
        d = (double) fg_shuffle(s, strlen(s), k, n) - (double) k;
        sum += d * d;
    }

    return 1 - 6 * sum / ((double) n * ((double) n * n - 1));
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

    /*
     * Turns uncorrelated with arrival, as a random permutation's are: over
     * 500 seeds (fixed, so the result is the same on every machine), rho
     * between place and turn in a line of 1,000 spreads with a standard
     * deviation near 1/sqrt(999) = 0.0316 (measured to about 0.001); four
     * rounds measure 0.040 and fail.
     */
    {
        char    s[40];
        double  r, sum, sum2, sd, expected;

        sum = 0;
        sum2 = 0;

        for (i = 0; i < 500; i++) {
            snprintf(s, sizeof(s), "%08x%024d", (unsigned) i * 2654435761u, i);
            r = rho(s, 1000);
            sum += r;
            sum2 += r * r;
        }

        sd = sqrt(sum2 / 500 - (sum / 500) * (sum / 500));
        expected = 1 / sqrt(999);

        ok(fabs(sum / 500) < 0.005, "mean rho over 500 seeds: %.4f", sum / 500);
        ok(sd < expected * 1.1,
           "rho's spread over 500 seeds: %.4f (a random permutation's: %.4f)",
           sd, expected);
    }

    /* a large line: computed, in range */
    n = (uint64_t) 1 << 40;
    k = fg_shuffle(seed, strlen(seed), n - 1, n);
    ok(k < n, "the last of 2^40 places has a turn in range");

    return done_testing();
}
