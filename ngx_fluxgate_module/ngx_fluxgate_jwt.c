
/*
 * Flux-Gate: verification of the buyer's HS256 JWT (RFC 7519, RFC 7515's
 * compact serialization).  Pure C over jansson and OpenSSL: no nginx
 * types, no I/O, no state, no allocation of its own (the decoded parts
 * live on the stack, jansson's trees are released on every path), so the
 * libFuzzer target in fuzz_jwt.c and the unit test in test_jwt.c link this
 * file alone.
 *
 * Strict on purpose, so that a token has one spelling and one meaning:
 * - base64url without '=' padding (RFC 7515, section 2), and the unused
 *   low bits of a last character must be zero: two strings never decode
 *   to the same signature;
 * - the header is checked before the signature (so "alg":"none" or HS512
 *   is named as such), and the payload is parsed only once the signature
 *   holds: nothing a stranger wrote reaches the claims;
 * - "crit" is refused (RFC 7515, 4.1.11: we understand no extension);
 * - a JSON object with a duplicate key is refused, as the order parser
 *   refuses one: no claim has two values; so is a \u0000 escape
 *   (jansson's default), which no id or time needs.
 * "aud" and "iss" are not checked: the shop that holds the secret is the
 * only issuer.
 */


#include <limits.h>
#include <string.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "ngx_fluxgate_jwt.h"


#define NGX_FLUXGATE_JWT_MAC       32       /* HMAC-SHA256 */
#define NGX_FLUXGATE_JWT_MAC_TEXT  43       /* its base64url, no padding */
/* what the longest part of the longest token decodes to, at most */
#define NGX_FLUXGATE_JWT_DECODED   (NGX_FLUXGATE_JWT_MAX / 4 * 3)


/* what to say about a part that is not a JSON object */
typedef struct {
    const char  *not_base64url;
    const char  *not_json;
    const char  *duplicate_key;
} ngx_fluxgate_jwt_part_t;


static const char *ngx_fluxgate_jwt_check(const unsigned char *token,
    size_t len, const unsigned char *secret, size_t secret_len,
    long long now, ngx_fluxgate_jwt_t *jwt);
static void ngx_fluxgate_jwt_strip_bearer(const unsigned char **token,
    size_t *len);
static const char *ngx_fluxgate_jwt_load(const unsigned char *text,
    size_t len, const ngx_fluxgate_jwt_part_t *part, json_t **root);
static int ngx_fluxgate_jwt_decode(const unsigned char *src, size_t len,
    unsigned char *dst, size_t *dst_len);
static int ngx_fluxgate_jwt_base64url(unsigned char ch);
static const char *ngx_fluxgate_jwt_header(json_t *header);
static const char *ngx_fluxgate_jwt_signature(const unsigned char *input,
    size_t input_len, const unsigned char *sig, size_t sig_len,
    const unsigned char *secret, size_t secret_len);
static const char *ngx_fluxgate_jwt_claims(json_t *payload, long long now,
    ngx_fluxgate_jwt_t *jwt);
static int ngx_fluxgate_jwt_time(json_t *payload, const char *name,
    int round_up, long long *t);
static int ngx_fluxgate_jwt_string_is(json_t *v, const char *want,
    int ignore_case);
static unsigned char ngx_fluxgate_jwt_lower(unsigned char ch);


static const ngx_fluxgate_jwt_part_t  ngx_fluxgate_jwt_header_part = {
    "header is not base64url",
    "header is not a JSON object",
    "duplicate key in header"
};

static const ngx_fluxgate_jwt_part_t  ngx_fluxgate_jwt_payload_part = {
    "payload is not base64url",
    "payload is not a JSON object",
    "duplicate key in payload"
};


int
ngx_fluxgate_jwt_verify(const unsigned char *token, size_t len,
    const unsigned char *secret, size_t secret_len, long long now,
    ngx_fluxgate_jwt_t *out, const char **why)
{
    const char          *reason;
    ngx_fluxgate_jwt_t   jwt;

    reason = ngx_fluxgate_jwt_check(token, len, secret, secret_len, now,
                                    &jwt);

    if (reason != NULL) {
        *why = reason;
        return -1;
    }

    *out = jwt;
    *why = NULL;

    return 0;
}


/* NULL: the token is good and *jwt holds its claims; else why not */

static const char *
ngx_fluxgate_jwt_check(const unsigned char *token, size_t len,
    const unsigned char *secret, size_t secret_len, long long now,
    ngx_fluxgate_jwt_t *jwt)
{
    size_t                header_len, payload_len, sig_len;
    json_t               *root;
    const char           *reason;
    const unsigned char  *dot1, *dot2, *payload, *sig;

    if (token == NULL) {
        return "no token";
    }

    ngx_fluxgate_jwt_strip_bearer(&token, &len);

    if (len == 0) {
        return "no token";
    }

    if (len > NGX_FLUXGATE_JWT_MAX) {
        return "token too long";
    }

    if (secret == NULL || secret_len == 0 || secret_len > INT_MAX) {
        return "no secret";
    }

    /* header "." payload "." signature, and no other dot */

    dot1 = memchr(token, '.', len);
    if (dot1 == NULL) {
        return "not a JWT";
    }

    payload = dot1 + 1;

    dot2 = memchr(payload, '.', token + len - payload);
    if (dot2 == NULL) {
        return "not a JWT";
    }

    sig = dot2 + 1;
    sig_len = token + len - sig;

    if (memchr(sig, '.', sig_len) != NULL) {
        return "not a JWT";
    }

    header_len = dot1 - token;
    payload_len = dot2 - payload;

    if (header_len == 0 || payload_len == 0) {
        return "not a JWT";
    }

    reason = ngx_fluxgate_jwt_load(token, header_len,
                                   &ngx_fluxgate_jwt_header_part, &root);
    if (reason != NULL) {
        return reason;
    }

    reason = ngx_fluxgate_jwt_header(root);
    json_decref(root);

    if (reason != NULL) {
        return reason;
    }

    reason = ngx_fluxgate_jwt_signature(token, dot2 - token, sig, sig_len,
                                        secret, secret_len);
    if (reason != NULL) {
        return reason;
    }

    reason = ngx_fluxgate_jwt_load(payload, payload_len,
                                   &ngx_fluxgate_jwt_payload_part, &root);
    if (reason != NULL) {
        return reason;
    }

    reason = ngx_fluxgate_jwt_claims(root, now, jwt);
    json_decref(root);

    return reason;
}


/*
 * "Bearer" in any case and one or more spaces (RFC 6750, 2.1; the scheme
 * is case-insensitive by RFC 9110, 11.1), so that $http_authorization
 * works as it comes; a cookie's value has no such prefix.
 */

static void
ngx_fluxgate_jwt_strip_bearer(const unsigned char **token, size_t *len)
{
    size_t                i, n;
    const unsigned char  *p;

    static const char     scheme[] = "bearer";

    p = *token;
    n = *len;

    if (n <= sizeof(scheme) - 1 || p[sizeof(scheme) - 1] != ' ') {
        return;
    }

    for (i = 0; i < sizeof(scheme) - 1; i++) {
        if (ngx_fluxgate_jwt_lower(p[i]) != (unsigned char) scheme[i]) {
            return;
        }
    }

    while (i < n && p[i] == ' ') {
        i++;
    }

    *token = p + i;
    *len = n - i;
}


/* NULL: *root is the part as a JSON object, for the caller to release */

static const char *
ngx_fluxgate_jwt_load(const unsigned char *text, size_t len,
    const ngx_fluxgate_jwt_part_t *part, json_t **root)
{
    size_t          n;
    json_t         *j;
    json_error_t    jerr;
    unsigned char   buf[NGX_FLUXGATE_JWT_DECODED];

    if (len > NGX_FLUXGATE_JWT_MAX
        || ngx_fluxgate_jwt_decode(text, len, buf, &n) != 0)
    {
        return part->not_base64url;
    }

    j = json_loadb((const char *) buf, n, JSON_REJECT_DUPLICATES, &jerr);

    if (j == NULL) {
        return json_error_code(&jerr) == json_error_duplicate_key
               ? part->duplicate_key : part->not_json;
    }

    if (!json_is_object(j)) {
        json_decref(j);
        return part->not_json;
    }

    *root = j;

    return NULL;
}


/*
 * 0: dst[0..*dst_len) is src decoded; dst has room for len * 3 / 4.
 * -1: a character outside [A-Za-z0-9_-] ('=' included), a length no
 * encoding has, or unused bits that are not zero.
 */

static int
ngx_fluxgate_jwt_decode(const unsigned char *src, size_t len,
    unsigned char *dst, size_t *dst_len)
{
    int           v;
    size_t        i, n;
    unsigned int  acc, bits;

    if (len % 4 == 1) {
        return -1;
    }

    acc = 0;
    bits = 0;
    n = 0;

    for (i = 0; i < len; i++) {
        v = ngx_fluxgate_jwt_base64url(src[i]);
        if (v < 0) {
            return -1;
        }

        acc = ((acc << 6) | (unsigned int) v) & 0xfff;
        bits += 6;

        if (bits >= 8) {
            bits -= 8;
            dst[n++] = (unsigned char) (acc >> bits);
        }
    }

    if ((acc & ((1u << bits) - 1)) != 0) {
        return -1;
    }

    *dst_len = n;

    return 0;
}


static int
ngx_fluxgate_jwt_base64url(unsigned char ch)
{
    if (ch >= 'A' && ch <= 'Z') {
        return ch - 'A';
    }

    if (ch >= 'a' && ch <= 'z') {
        return ch - 'a' + 26;
    }

    if (ch >= '0' && ch <= '9') {
        return ch - '0' + 52;
    }

    if (ch == '-') {
        return 62;
    }

    if (ch == '_') {
        return 63;
    }

    return -1;
}


static const char *
ngx_fluxgate_jwt_header(json_t *header)
{
    json_t  *typ;

    /* "none", another algorithm, a missing alg: all refused alike */
    if (!ngx_fluxgate_jwt_string_is(json_object_get(header, "alg"), "HS256",
                                    0))
    {
        return "not HS256";
    }

    /* a media type: case-insensitive (RFC 7515, 4.1.9) */
    typ = json_object_get(header, "typ");

    if (typ != NULL && !ngx_fluxgate_jwt_string_is(typ, "JWT", 1)) {
        return "typ is not JWT";
    }

    if (json_object_get(header, "crit") != NULL) {
        return "crit header not supported";
    }

    return NULL;
}


static const char *
ngx_fluxgate_jwt_signature(const unsigned char *input, size_t input_len,
    const unsigned char *sig, size_t sig_len, const unsigned char *secret,
    size_t secret_len)
{
    size_t         n;
    unsigned int   mac_len;
    unsigned char  mac[EVP_MAX_MD_SIZE];
    unsigned char  sent[NGX_FLUXGATE_JWT_MAC_TEXT];

    if (sig_len != NGX_FLUXGATE_JWT_MAC_TEXT
        || ngx_fluxgate_jwt_decode(sig, sig_len, sent, &n) != 0
        || n != NGX_FLUXGATE_JWT_MAC)
    {
        return "bad signature";
    }

    if (HMAC(EVP_sha256(), secret, (int) secret_len, input, input_len, mac,
             &mac_len)
        == NULL
        || mac_len != NGX_FLUXGATE_JWT_MAC)
    {
        return "HMAC-SHA256 failed";
    }

    if (CRYPTO_memcmp(mac, sent, NGX_FLUXGATE_JWT_MAC) != 0) {
        return "bad signature";
    }

    return NULL;
}


static const char *
ngx_fluxgate_jwt_claims(json_t *payload, long long now,
    ngx_fluxgate_jwt_t *jwt)
{
    int          rc;
    size_t       len;
    json_t      *sub;
    long long    exp, nbf, iat;
    const char  *s;

    sub = json_object_get(payload, "sub");

    if (!json_is_string(sub)) {
        return "sub missing or not a valid user id";
    }

    s = json_string_value(sub);
    len = json_string_length(sub);

    if (!fg_id_valid(s, len)) {
        return "sub missing or not a valid user id";
    }

    /*
     * A fractional time is rounded the strict way: exp down, nbf and iat
     * up.  Absent nbf and iat are 0, which every now since 1970 is past.
     */

    rc = ngx_fluxgate_jwt_time(payload, "exp", 0, &exp);
    if (rc == 1) {
        return "no exp";
    }

    if (rc != 0) {
        return "exp is not a valid time";
    }

    if (ngx_fluxgate_jwt_time(payload, "nbf", 1, &nbf) < 0) {
        return "nbf is not a valid time";
    }

    if (ngx_fluxgate_jwt_time(payload, "iat", 1, &iat) < 0) {
        return "iat is not a valid time";
    }

    /*
     * The times are at most 2^53 - 1, so adding or taking the leeway
     * cannot overflow whatever now is.  RFC 7519: now must be before exp,
     * and not before nbf.
     */

    if (now >= exp + NGX_FLUXGATE_JWT_LEEWAY) {
        return "expired";
    }

    if (now < nbf - NGX_FLUXGATE_JWT_LEEWAY) {
        return "not yet valid";
    }

    if (now < iat - NGX_FLUXGATE_JWT_LEEWAY) {
        return "issued in the future";
    }

    memcpy(jwt->sub, s, len);
    jwt->sub[len] = '\0';
    jwt->sub_len = len;
    jwt->exp = exp;

    return NULL;
}


/*
 * 0: *t is the claim in whole seconds; 1: no such claim (*t = 0);
 * -1: not a number in [0, NGX_FLUXGATE_JWT_TIME_MAX].
 */

static int
ngx_fluxgate_jwt_time(json_t *payload, const char *name, int round_up,
    long long *t)
{
    double      d;
    json_t     *v;
    long long   n;

    v = json_object_get(payload, name);

    if (v == NULL) {
        *t = 0;
        return 1;
    }

    if (json_is_integer(v)) {
        n = json_integer_value(v);

        if (n < 0 || n > NGX_FLUXGATE_JWT_TIME_MAX) {
            return -1;
        }

        *t = n;
        return 0;
    }

    if (!json_is_real(v)) {
        return -1;
    }

    d = json_real_value(v);

    /* written so that a NaN fails too */
    if (!(d >= 0 && d <= (double) NGX_FLUXGATE_JWT_TIME_MAX)) {
        return -1;
    }

    n = (long long) d;

    /* d has a fraction, so n + 1 is still at most the maximum */
    if (round_up && (double) n < d) {
        n++;
    }

    *t = n;

    return 0;
}


/* 1: v is a JSON string equal to want (ASCII case aside if asked) */

static int
ngx_fluxgate_jwt_string_is(json_t *v, const char *want, int ignore_case)
{
    size_t       i, len;
    const char  *s;

    if (!json_is_string(v)) {
        return 0;
    }

    s = json_string_value(v);
    len = json_string_length(v);

    if (len != strlen(want)) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if (s[i] == want[i]) {
            continue;
        }

        if (!ignore_case
            || ngx_fluxgate_jwt_lower(s[i]) != ngx_fluxgate_jwt_lower(want[i]))
        {
            return 0;
        }
    }

    return 1;
}


/* ASCII only: the locale has no say in a protocol's words */

static unsigned char
ngx_fluxgate_jwt_lower(unsigned char ch)
{
    return (ch >= 'A' && ch <= 'Z') ? ch + ('a' - 'A') : ch;
}
