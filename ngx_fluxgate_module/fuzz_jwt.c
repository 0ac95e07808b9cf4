
/*
 * Flux-Gate: libFuzzer target over ngx_fluxgate_jwt.c, the check of the
 * buyer's token, which reads what any client sends before Redis sees the
 * request.  Not built by config: see the Makefile's fuzzers target.
 *
 * An input is "secret\nnow\ntoken" (now in decimal unix seconds), so the
 * kept corpus in t/fuzz/fuzz_jwt reads as text; without two newlines the
 * whole input is the token, under a fixed secret and time.  Each input is
 *   1. verified as it is: no crash, no leak, and an accepted token has a
 *      valid, NUL-terminated sub and an exp not past;
 *   2. taken as a payload and signed with the secret: the signature and
 *      the header always hold, only the claims may be refused;
 *   3. used as a seed for a token of random valid claims, signed with the
 *      secret, with times near the edges of the leeway: verified exactly
 *      when a plain reading of the rules says so; when it verifies, every
 *      byte of its signature changed, one byte of its header or payload
 *      changed, its last byte cut or one byte added: none verifies.
 */


#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "ngx_fluxgate_jwt.h"


#define FUZZ_SECRET  "fuzz-jwt-secret"
#define FUZZ_NOW     1764000000LL
#define FUZZ_BUF     (3 * 8192)
#define LEEWAY       NGX_FLUXGATE_JWT_LEEWAY


typedef struct {
    const unsigned char  *secret;
    size_t                secret_len;
    long long             now;
    const unsigned char  *token;
    size_t                token_len;
} fuzz_input_t;


static uint64_t  rng;
static char      tok[FUZZ_BUF];
static char      bad[FUZZ_BUF];

static const char  *headers[] = {
    "{\"alg\":\"HS256\",\"typ\":\"JWT\"}",
    "{\"alg\":\"HS256\"}",
    " {\"typ\" : \"jwt\", \"kid\": \"k\\u00e9\", \"alg\" : \"HS256\"}\n",
};

/* what only a token's signature or header can be refused for */
static const char  *not_claims[] = {
    "no token", "no secret", "not a JWT", "header is not base64url",
    "header is not a JSON object", "duplicate key in header", "not HS256",
    "typ is not JWT", "crit header not supported", "bad signature",
    "HMAC-SHA256 failed", "payload is not base64url",
};


static void
fail(const char *what, const char *why)
{
    fprintf(stderr, "fuzz_jwt: %s: %s\n", what, why ? why : "accepted");
    abort();
}


static uint64_t
next(void)
{
    uint64_t  z;

    /* splitmix64 */
    z = (rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;

    return z ^ (z >> 31);
}


static long long
range(long long lo, long long hi)
{
    return lo + (long long) (next() % (uint64_t) (hi - lo + 1));
}


static void
split(const uint8_t *data, size_t size, fuzz_input_t *in)
{
    int             neg;
    const uint8_t  *nl1, *nl2, *p;
    long long       now;

    nl1 = memchr(data, '\n', size);
    nl2 = nl1 ? memchr(nl1 + 1, '\n', data + size - nl1 - 1) : NULL;

    if (nl2 == NULL) {
        in->secret = (const unsigned char *) FUZZ_SECRET;
        in->secret_len = sizeof(FUZZ_SECRET) - 1;
        in->now = FUZZ_NOW;
        in->token = data;
        in->token_len = size;
        return;
    }

    in->secret = data;
    in->secret_len = nl1 - data;

    /* digits after an optional '-', saturating: any now must do */
    p = nl1 + 1;
    neg = p < nl2 && *p == '-';
    p += neg;
    now = 0;

    for ( /* void */ ; p < nl2 && *p >= '0' && *p <= '9'; p++) {
        now = now > (INT64_MAX - 9) / 10 ? INT64_MAX : now * 10 + *p - '0';
    }

    in->now = neg ? -now : now;
    in->token = nl2 + 1;
    in->token_len = data + size - nl2 - 1;
}


static int
verify(const void *token, size_t len, const fuzz_input_t *in,
    ngx_fluxgate_jwt_t *jwt, const char **why)
{
    int  rc;

    *why = NULL;
    rc = ngx_fluxgate_jwt_verify(token, len, in->secret, in->secret_len,
                                 in->now, jwt, why);

    if (rc == 0) {
        if (*why != NULL
            || jwt->sub_len == 0 || jwt->sub_len > FG_ID_MAX
            || jwt->sub[jwt->sub_len] != '\0'
            || !fg_id_valid(jwt->sub, jwt->sub_len)
            || strlen(jwt->sub) != jwt->sub_len
            || in->now >= jwt->exp + LEEWAY
            || in->secret_len == 0)
        {
            fail("an accepted token", "breaks a promise of its claims");
        }

    } else if (rc != -1 || *why == NULL || (*why)[0] == '\0'
               || strlen(*why) > 64)
    {
        fail("a refused token", "no short reason");
    }

    return rc;
}


static void
b64url(const unsigned char *src, size_t len, char *dst)
{
    size_t       i;
    unsigned     acc;
    int          bits;
    const char  *abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                       "0123456789-_";

    acc = 0;
    bits = 0;

    for (i = 0; i < len; i++) {
        acc = (acc << 8) | src[i];
        bits += 8;

        while (bits >= 6) {
            bits -= 6;
            *dst++ = abc[(acc >> bits) & 63];
        }
    }

    if (bits > 0) {
        *dst++ = abc[(acc << (6 - bits)) & 63];
    }

    *dst = '\0';
}


/* tok = header "." payload "." signature; its length, the signature's at
 * tok + length - 43 */

static size_t
sign(const char *header, const unsigned char *payload, size_t payload_len,
    const fuzz_input_t *in)
{
    char           *p;
    unsigned int    n;
    unsigned char   mac[EVP_MAX_MD_SIZE];

    b64url((const unsigned char *) header, strlen(header), tok);
    p = tok + strlen(tok);
    *p++ = '.';
    b64url(payload, payload_len, p);
    p += strlen(p);

    if (HMAC(EVP_sha256(), in->secret, (int) in->secret_len,
             (unsigned char *) tok, p - tok, mac, &n)
        == NULL)
    {
        abort();
    }

    *p++ = '.';
    b64url(mac, n, p);

    return p - tok + strlen(p);
}


/* 2. the input as a payload, well signed */

static void
resign(const fuzz_input_t *in)
{
    size_t               i, len;
    const char          *why;
    ngx_fluxgate_jwt_t   jwt;

    if (in->secret_len == 0 || in->token_len > 8192) {
        return;
    }

    len = sign(headers[in->token_len % 3], in->token, in->token_len, in);

    if (verify(tok, len, in, &jwt, &why) == 0) {
        return;
    }

    if (len > NGX_FLUXGATE_JWT_MAX) {
        if (strcmp(why, "token too long") != 0) {
            fail("a well signed token over the limit", why);
        }

        return;
    }

    /* an empty part makes no JWT, however signed */
    if (in->token_len == 0) {
        if (strcmp(why, "not a JWT") != 0) {
            fail("a well signed empty payload", why);
        }

        return;
    }

    for (i = 0; i < sizeof(not_claims) / sizeof(not_claims[0]); i++) {
        if (strcmp(why, not_claims[i]) == 0) {
            fail("a well signed payload", why);
        }
    }
}


/* 3. a token that follows the rules, or misses one by a few seconds */

static void
made(const fuzz_input_t *in)
{
    int                  frac;
    char                *payload;
    char                 sub[FG_ID_MAX + 1];
    size_t               i, len, sub_len, off;
    json_t              *claims, *extra;
    long long            now, exp, nbf, iat;
    const char          *why, *want;
    ngx_fluxgate_jwt_t   jwt;
    fuzz_input_t         at;

    static const char    id_chars[] = "abcdefghijklmnopqrstuvwxyz"
                                      "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                      "0123456789._-";

    if (in->secret_len == 0) {
        return;
    }

    /* a time of today's order; the raw one stays with the raw input */
    at = *in;
    at.now = (long long) ((uint64_t) in->now % (1ULL << 40)) + 100;
    now = at.now;

    claims = json_object();
    if (claims == NULL) {
        abort();
    }

    sub_len = (size_t) range(1, FG_ID_MAX);
    for (i = 0; i < sub_len; i++) {
        sub[i] = id_chars[next() % (sizeof(id_chars) - 1)];
    }

    json_object_set_new(claims, "sub", json_stringn(sub, sub_len));

    /* exp near the edge half the time, nbf and iat now and then */
    exp = now + (next() % 2 ? range(-40, 40) : range(-LEEWAY + 1, 1 << 20));
    frac = next() % 4 == 0;
    json_object_set_new(claims, "exp", frac ? json_real(exp + 0.5)
                                            : json_integer(exp));
    nbf = 0;
    iat = 0;

    if (next() % 3 == 0) {
        nbf = now + range(-40, 40);
        frac = next() % 4 == 0;
        json_object_set_new(claims, "nbf", frac ? json_real(nbf - 0.5)
                                                : json_integer(nbf));
    }

    if (next() % 3 == 0) {
        iat = now + range(-40, 40);
        json_object_set_new(claims, "iat", json_integer(iat));
    }

    /*
     * bytes of the input as a claim of no meaning, if they are UTF-8
     * without a NUL (a \u0000 escape is refused, as the order parser
     * refuses it)
     */
    len = in->token_len < 200 ? in->token_len : 200;

    if (len > 0 && memchr(in->token, '\0', len) == NULL) {
        extra = json_stringn((const char *) in->token, len);
        if (extra != NULL) {
            json_object_set_new(claims, "x-note", extra);
        }
    }

    payload = json_dumps(claims, next() % 2 ? JSON_COMPACT : JSON_INDENT(1));
    json_decref(claims);

    if (payload == NULL) {
        abort();
    }

    len = sign(headers[next() % 3], (unsigned char *) payload,
               strlen(payload), &at);
    free(payload);

    /* the rules, read plainly, in the verifier's order */
    want = now >= exp + LEEWAY ? "expired"
           : now < nbf - LEEWAY ? "not yet valid"
           : now < iat - LEEWAY ? "issued in the future"
           : NULL;

    /* with a Bearer prefix of any case and one to three spaces */
    off = 0;

    if (next() % 2) {
        memcpy(bad, next() % 2 ? "Bearer" : "bEaReR", 6);
        off = 6 + range(1, 3);
        memset(bad + 6, ' ', off - 6);
    }

    memcpy(bad + off, tok, len);

    if (verify(bad, off + len, &at, &jwt, &why) != (want ? -1 : 0)) {
        fail("a made token", want ? want : why);
    }

    if (want != NULL) {
        if (strcmp(why, want) != 0) {
            fail("a made token refused for another reason", why);
        }

        return;
    }

    if (jwt.sub_len != sub_len || memcmp(jwt.sub, sub, sub_len) != 0
        || jwt.exp != exp)
    {
        fail("a made token", "other claims than were signed");
    }

    /* every byte of the signature changed */
    for (i = len - 43; i < len; i++) {
        memcpy(bad, tok, len);
        bad[i] ^= (char) range(1, 255);

        if (verify(bad, len, &at, &jwt, &why) == 0) {
            fail("a changed signature", "verified");
        }
    }

    /* one byte of the signed part changed (its last dot included) */
    memcpy(bad, tok, len);
    bad[next() % (len - 43)] ^= (char) range(1, 255);

    if (verify(bad, len, &at, &jwt, &why) == 0) {
        fail("a changed header or payload", "verified");
    }

    /* cut short, or one byte longer */
    if (verify(tok, len - 1, &at, &jwt, &why) == 0) {
        fail("a token cut short", "verified");
    }

    memcpy(bad, tok, len);
    bad[len] = (char) range(0, 255);

    if (verify(bad, len + 1, &at, &jwt, &why) == 0) {
        fail("a token one byte longer", "verified");
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t               i;
    const char          *why;
    fuzz_input_t         in;
    ngx_fluxgate_jwt_t   jwt;

    if (size > 8192) {
        return 0;
    }

    split(data, size, &in);

    /* 1. as it is */
    (void) verify(in.token, in.token_len, &in, &jwt, &why);

    resign(&in);

    /* FNV-1a of the input: the same input makes the same token */
    rng = 0xcbf29ce484222325ULL;
    for (i = 0; i < size; i++) {
        rng = (rng ^ data[i]) * 0x100000001b3ULL;
    }

    made(&in);

    return 0;
}
