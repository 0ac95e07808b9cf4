/*
 * fluxgate_shuffle.h: the pre-queue's shuffle.  At a sale's opening every
 * place booked before it (seq k in [0, n)) gets a turn, fg_shuffle(seed,
 * k, n): a keyed permutation of [0, n), so the opening rewrites nothing per
 * buyer and each turn costs O(1) to compute, by anyone who knows the seed
 * (made at the opening, so nobody can know it before).
 *
 * A balanced Feistel network of eight rounds over the smallest domain of
 * 2^(2h) >= n values, walked in cycles until the result falls in [0, n)
 * (the cycle through k holds k itself, so the walk ends).  Eight, not the
 * four of Luby-Rackoff: the halves of a small line are a few bits wide, and
 * four rounds over 5-bit halves (a line of 1,000) left arrival and turn
 * correlated beyond chance (Spearman's rho spread 26% wider than a random
 * permutation's, |rho| > 0.1 in 1.7% of openings); six rounds and more
 * spread as a random permutation does (include/test_shuffle.c measures it).  The round
 * function is SHA-1 of "<seed>:<round>:<half>" in hex, its first eight
 * digits as a number, masked to h bits: lua/order.lua computes the same
 * with redis.sha1hex(), and t/207-shuffle.t checks that both agree.
 * Pure C, header only (OpenSSL's SHA-1); n at most 2^40.  Used by the
 * module (ngx_fluxgate_line.c); include/test_shuffle.c tests it.
 */
#ifndef FLUXGATE_SHUFFLE_H
#define FLUXGATE_SHUFFLE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <openssl/sha.h>

#define FG_SHUFFLE_MAX    ((uint64_t) 1 << 40)
#define FG_SHUFFLE_ROUNDS 8


static inline uint64_t
fg_shuffle_round(const char *seed, size_t seed_len, unsigned round,
    uint64_t half, uint64_t mask)
{
    int            len;
    char           text[160], hex[9];
    unsigned char  md[SHA_DIGEST_LENGTH];
    static const char  digits[] = "0123456789abcdef";
    unsigned       i;

    len = snprintf(text, sizeof(text), "%.*s:%u:%llu", (int) seed_len, seed,
                   round, (unsigned long long) half);

    (void) SHA1((const unsigned char *) text, (size_t) len, md);

    for (i = 0; i < 4; i++) {
        hex[2 * i] = digits[md[i] >> 4];
        hex[2 * i + 1] = digits[md[i] & 0xf];
    }

    hex[8] = '\0';

    return (uint64_t) strtoul(hex, NULL, 16) & mask;
}


static inline uint64_t
fg_shuffle_encrypt(const char *seed, size_t seed_len, uint64_t x,
    unsigned bits)
{
    unsigned  r;
    uint64_t  mask, left, right, f;

    mask = ((uint64_t) 1 << bits) - 1;
    left = x >> bits;
    right = x & mask;

    for (r = 0; r < FG_SHUFFLE_ROUNDS; r++) {
        f = fg_shuffle_round(seed, seed_len, r, right, mask);
        f ^= left;
        left = right;
        right = f;
    }

    return (left << bits) | right;
}


/* the half width h: 2^(2h) >= n, at least 1 */
static inline unsigned
fg_shuffle_bits(uint64_t n)
{
    unsigned  bits;

    bits = 1;

    while (((uint64_t) 1 << (2 * bits)) < n) {
        bits++;
    }

    return bits;
}


/* the turn of seq k among n (k < n <= FG_SHUFFLE_MAX) */
static inline uint64_t
fg_shuffle(const char *seed, size_t seed_len, uint64_t k, uint64_t n)
{
    unsigned  bits;
    uint64_t  y;

    if (n <= 1 || k >= n) {
        return k;
    }

    bits = fg_shuffle_bits(n);
    y = fg_shuffle_encrypt(seed, seed_len, k, bits);

    while (y >= n) {
        y = fg_shuffle_encrypt(seed, seed_len, y, bits);
    }

    return y;
}

#endif /* FLUXGATE_SHUFFLE_H */
