
/*
 * Flux-Gate: what the waiting room hands out and takes back, signed with
 * the queue secret (HMAC-SHA256, OpenSSL), checked here before any I/O:
 *
 *   a ticket     a place in a product's line, for one buyer:
 *                product|buyer|epoch|kind|seq|expires
 *   a challenge  a proof of work to do before a place is booked:
 *                product|buyer|expires|nonce
 *   a proof      "<challenge>.<n>": SHA-256 of it has the configured
 *                number of leading zero bits (one hash to check)
 *
 * Each is base64url(payload) "." base64url(HMAC-SHA256(secret, the first
 * part as sent)): safe in a URL, a header and a cookie.  A ticket carries
 * its own turn, so where it stands needs no per-ticket state anywhere; a
 * challenge carries a random nonce, and a proof is good once (the gate
 * remembers the nonces it took, ngx_fluxgate_line.c).
 */


#include "ngx_fluxgate.h"

#include <openssl/crypto.h>
#if (OPENSSL_VERSION_NUMBER >= 0x30000000L)
#include <openssl/core_names.h>
#endif
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>


#define NGX_FLUXGATE_SEAL_MAC         32
#define NGX_FLUXGATE_SEAL_MAC_TEXT    43          /* base64url, no padding */

/* productId, a buyer (an id or a key), and up to four more fields */
#define NGX_FLUXGATE_SEAL_PAYLOAD                                            \
    (NGX_FLUXGATE_ID_MAX + NGX_FLUXGATE_ID_MAX + 4 * (NGX_INT64_LEN + 1)    \
     + 2 * NGX_FLUXGATE_NONCE_LEN + 2)
#define NGX_FLUXGATE_SEAL_MAX                                                \
    (ngx_base64_encoded_length(NGX_FLUXGATE_SEAL_PAYLOAD) + 1                \
     + NGX_FLUXGATE_SEAL_MAC_TEXT)

#define NGX_FLUXGATE_PROOF_MAX                                               \
    (NGX_FLUXGATE_SEAL_MAX + 1 + NGX_INT64_LEN)


static ngx_int_t ngx_fluxgate_seal(ngx_pool_t *pool, ngx_str_t *secret,
    u_char *payload, size_t len, ngx_str_t *text);
static ngx_int_t ngx_fluxgate_unseal(ngx_str_t *secret, ngx_str_t *text,
    u_char *payload, size_t *len);
static ngx_int_t ngx_fluxgate_mac(ngx_str_t *secret, u_char *data,
    size_t len, u_char *mac);
static u_char *ngx_fluxgate_field(u_char *p, u_char *last, ngx_str_t *f);
static ngx_uint_t ngx_fluxgate_zero_bits(u_char *md, size_t len);


/* a ticket of the buyer's place */

ngx_int_t
ngx_fluxgate_ticket_sign(ngx_pool_t *pool, ngx_str_t *secret,
    ngx_str_t *product, ngx_str_t *buyer, ngx_fluxgate_ticket_t *t,
    ngx_str_t *text)
{
    u_char  payload[NGX_FLUXGATE_SEAL_PAYLOAD], *p;

    p = ngx_snprintf(payload, sizeof(payload), "%V|%V|%L|%c|%L|%L",
                     product, buyer, t->epoch, t->kind, t->seq, t->expires);

    return ngx_fluxgate_seal(pool, secret, payload, p - payload, text);
}


/*
 * NULL: the ticket is ours, for this product and (buyer not NULL) this
 * buyer, and filled in; else what is wrong with it, for a 400
 */

const char *
ngx_fluxgate_ticket_verify(ngx_str_t *secret, ngx_str_t *text,
    ngx_str_t *product, ngx_str_t *buyer, ngx_fluxgate_ticket_t *t)
{
    u_char     payload[NGX_FLUXGATE_SEAL_PAYLOAD], *p, *last;
    size_t     len;
    ngx_str_t  f[6];
    ngx_int_t  rc;
    ngx_uint_t i;

    rc = ngx_fluxgate_unseal(secret, text, payload, &len);

    if (rc == NGX_DECLINED) {
        return "has a signature this gate did not make";
    }

    if (rc != NGX_OK) {
        return "is not a ticket of this gate";
    }

    p = payload;
    last = payload + len;

    for (i = 0; i < 6; i++) {
        p = ngx_fluxgate_field(p, last, &f[i]);

        if (p == NULL || (i < 5) == (p > last)) {
            return "is not a ticket of this gate";
        }
    }

    if (f[0].len != product->len
        || ngx_memcmp(f[0].data, product->data, product->len) != 0)
    {
        return "is for another product";
    }

    if (buyer != NULL
        && (f[1].len != buyer->len
            || ngx_memcmp(f[1].data, buyer->data, buyer->len) != 0))
    {
        return "belongs to another buyer";
    }

    t->epoch = ngx_atoof(f[2].data, f[2].len);
    t->kind = f[3].len == 1 ? f[3].data[0] : 0;
    t->seq = ngx_atoof(f[4].data, f[4].len);
    t->expires = ngx_atoof(f[5].data, f[5].len);

    if (t->epoch == NGX_ERROR || t->seq == NGX_ERROR
        || t->expires == NGX_ERROR || (t->kind != 'q' && t->kind != 'p'))
    {
        return "is not a ticket of this gate";
    }

    return NULL;
}


/* a challenge for this buyer and product, good until expires */

ngx_int_t
ngx_fluxgate_challenge_make(ngx_pool_t *pool, ngx_str_t *secret,
    ngx_str_t *product, ngx_str_t *buyer, time_t expires, ngx_str_t *text)
{
    u_char  payload[NGX_FLUXGATE_SEAL_PAYLOAD], *p;
    u_char  nonce[NGX_FLUXGATE_NONCE_LEN];

    if (RAND_bytes(nonce, sizeof(nonce)) != 1) {
        return NGX_ERROR;
    }

    p = ngx_snprintf(payload, sizeof(payload), "%V|%V|%T|", product, buyer,
                     expires);
    p = ngx_hex_dump(p, nonce, sizeof(nonce));

    return ngx_fluxgate_seal(pool, secret, payload, p - payload, text);
}


/*
 * X-Queue-Proof: "<challenge>.<n>".  The work first (one SHA-256: a
 * proof without it costs the gate nothing more), then the challenge's
 * signature, product, buyer and expiry.  On NGX_OK the nonce (binary) is
 * in nonce, for the caller to take it once.
 */

ngx_fluxgate_proof_e
ngx_fluxgate_proof_check(ngx_str_t *secret, ngx_str_t *proof,
    ngx_uint_t bits, ngx_str_t *product, ngx_str_t *buyer, time_t now,
    u_char *nonce)
{
    u_char      *dot, *p, *last;
    u_char       md[SHA256_DIGEST_LENGTH];
    u_char       payload[NGX_FLUXGATE_SEAL_PAYLOAD];
    size_t       len;
    ngx_str_t    challenge, f[4];
    ngx_int_t    n;
    ngx_uint_t   i;

    if (proof->len == 0 || proof->len > NGX_FLUXGATE_PROOF_MAX) {
        return NGX_FLUXGATE_PROOF_FORGED;
    }

    for (dot = proof->data + proof->len - 1; dot > proof->data; dot--) {
        if (*dot == '.') {
            break;
        }
    }

    if (dot == proof->data
        || dot == proof->data + proof->len - 1
        || (size_t) (proof->data + proof->len - dot - 1) > NGX_INT64_LEN)
    {
        return NGX_FLUXGATE_PROOF_FORGED;
    }

    for (p = dot + 1; p < proof->data + proof->len; p++) {
        if (*p < '0' || *p > '9') {
            return NGX_FLUXGATE_PROOF_FORGED;
        }
    }

    (void) SHA256(proof->data, proof->len, md);

    if (ngx_fluxgate_zero_bits(md, sizeof(md)) < bits) {
        return NGX_FLUXGATE_PROOF_WEAK;
    }

    challenge.data = proof->data;
    challenge.len = dot - proof->data;

    if (ngx_fluxgate_unseal(secret, &challenge, payload, &len) != NGX_OK) {
        return NGX_FLUXGATE_PROOF_FORGED;
    }

    p = payload;
    last = payload + len;

    for (i = 0; i < 4; i++) {
        p = ngx_fluxgate_field(p, last, &f[i]);

        if (p == NULL || (i < 3) == (p > last)) {
            return NGX_FLUXGATE_PROOF_FORGED;
        }
    }

    if (f[0].len != product->len
        || ngx_memcmp(f[0].data, product->data, product->len) != 0
        || f[1].len != buyer->len
        || ngx_memcmp(f[1].data, buyer->data, buyer->len) != 0)
    {
        return NGX_FLUXGATE_PROOF_OTHER;
    }

    n = ngx_atotm(f[2].data, f[2].len);

    if (n == NGX_ERROR || f[3].len != 2 * NGX_FLUXGATE_NONCE_LEN) {
        return NGX_FLUXGATE_PROOF_FORGED;
    }

    if (now >= n) {
        return NGX_FLUXGATE_PROOF_STALE;
    }

    for (i = 0; i < NGX_FLUXGATE_NONCE_LEN; i++) {
        n = ngx_hextoi(&f[3].data[2 * i], 2);
        if (n == NGX_ERROR) {
            return NGX_FLUXGATE_PROOF_FORGED;
        }

        nonce[i] = (u_char) n;
    }

    return NGX_FLUXGATE_PROOF_OK;
}


/* sealing */

static ngx_int_t
ngx_fluxgate_seal(ngx_pool_t *pool, ngx_str_t *secret, u_char *payload,
    size_t len, ngx_str_t *text)
{
    u_char     mac[NGX_FLUXGATE_SEAL_MAC];
    ngx_str_t  src, enc, sig;

    text->data = ngx_pnalloc(pool, NGX_FLUXGATE_SEAL_MAX);
    if (text->data == NULL) {
        return NGX_ERROR;
    }

    src.data = payload;
    src.len = len;
    enc.data = text->data;
    ngx_encode_base64url(&enc, &src);

    if (ngx_fluxgate_mac(secret, enc.data, enc.len, mac) != NGX_OK) {
        return NGX_ERROR;
    }

    enc.data[enc.len] = '.';

    sig.data = enc.data + enc.len + 1;
    src.data = mac;
    src.len = sizeof(mac);
    ngx_encode_base64url(&sig, &src);

    text->len = enc.len + 1 + sig.len;

    return NGX_OK;
}


/*
 * NGX_OK: text was sealed with secret, its payload decoded into payload
 * (NGX_FLUXGATE_SEAL_PAYLOAD bytes); NGX_DECLINED: well formed, but not
 * our signature; NGX_ERROR: not a sealed text at all
 */

static ngx_int_t
ngx_fluxgate_unseal(ngx_str_t *secret, ngx_str_t *text, u_char *payload,
    size_t *len)
{
    u_char     *dot;
    u_char      sent[ngx_base64_decoded_length(NGX_FLUXGATE_SEAL_MAC_TEXT)
                     + 1];
    u_char      mac[NGX_FLUXGATE_SEAL_MAC];
    ngx_str_t   enc, sig, dec;

    if (text->len > NGX_FLUXGATE_SEAL_MAX) {
        return NGX_ERROR;
    }

    dot = ngx_strlchr(text->data, text->data + text->len, '.');

    if (dot == NULL
        || dot == text->data
        || (size_t) (text->data + text->len - dot - 1)
           != NGX_FLUXGATE_SEAL_MAC_TEXT)
    {
        return NGX_ERROR;
    }

    enc.data = text->data;
    enc.len = dot - text->data;
    sig.data = dot + 1;
    sig.len = NGX_FLUXGATE_SEAL_MAC_TEXT;

    dec.data = sent;

    if (ngx_decode_base64url(&dec, &sig) != NGX_OK
        || dec.len != NGX_FLUXGATE_SEAL_MAC)
    {
        return NGX_ERROR;
    }

    if (ngx_fluxgate_mac(secret, enc.data, enc.len, mac) != NGX_OK
        || CRYPTO_memcmp(mac, sent, NGX_FLUXGATE_SEAL_MAC) != 0)
    {
        return NGX_DECLINED;
    }

    /* signed by us: the rest can only be well formed, checked anyway */

    if (enc.len > ngx_base64_encoded_length(NGX_FLUXGATE_SEAL_PAYLOAD)) {
        return NGX_ERROR;
    }

    dec.data = payload;

    if (ngx_decode_base64url(&dec, &enc) != NGX_OK) {
        return NGX_ERROR;
    }

    *len = dec.len;

    return NGX_OK;
}


/*
 * HMAC-SHA256 of data under secret.  OpenSSL 3's one-shot HMAC() looks
 * the algorithm up and keys a new context on every call, 2 us on a
 * 2-CPU machine: more than the rest of a poll.  So each process keeps
 * one context keyed with the last secret it used (a copy of the key, to
 * compare: a reload may put another secret at the same address) and only
 * resets it per call, 0.4 us.  Another secret re-keys it; should OpenSSL
 * refuse any of it, the one-shot call does the work.  OpenSSL before
 * 3.0.3 said yes to the reset without doing it (openssl#17811): there,
 * and before 3.0, the one-shot call does all the work.
 */

#if (OPENSSL_VERSION_NUMBER >= 0x30000000L)

static EVP_MAC_CTX  *ngx_fluxgate_mac_ctx;
static u_char       *ngx_fluxgate_mac_key;
static size_t        ngx_fluxgate_mac_key_len;
static ngx_uint_t    ngx_fluxgate_mac_off;


static EVP_MAC_CTX *
ngx_fluxgate_mac_keyed(ngx_str_t *secret)
{
    u_char       *key;
    EVP_MAC      *hmac;
    OSSL_PARAM    params[2];

    if (ngx_fluxgate_mac_off) {
        return NULL;
    }

    /* both sides are the gate's own secret: no timing to hide here */
    if (ngx_fluxgate_mac_key != NULL
        && ngx_fluxgate_mac_key_len == secret->len
        && ngx_memcmp(ngx_fluxgate_mac_key, secret->data, secret->len) == 0)
    {
        return EVP_MAC_init(ngx_fluxgate_mac_ctx, NULL, 0, NULL)
               ? ngx_fluxgate_mac_ctx : NULL;
    }

    if (ngx_fluxgate_mac_ctx == NULL) {

        /* once per process: whatever the answer, it stays */
        if (OpenSSL_version_num() < 0x30000030L) {
            ngx_fluxgate_mac_off = 1;
            return NULL;
        }

        hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
        if (hmac == NULL) {
            ngx_fluxgate_mac_off = 1;
            return NULL;
        }

        ngx_fluxgate_mac_ctx = EVP_MAC_CTX_new(hmac);
        EVP_MAC_free(hmac);

        if (ngx_fluxgate_mac_ctx == NULL) {
            ngx_fluxgate_mac_off = 1;
            return NULL;
        }
    }

    key = OPENSSL_malloc(secret->len ? secret->len : 1);
    if (key == NULL) {
        return NULL;
    }

    ngx_memcpy(key, secret->data, secret->len);

    if (ngx_fluxgate_mac_key != NULL) {
        OPENSSL_clear_free(ngx_fluxgate_mac_key, ngx_fluxgate_mac_key_len);
    }

    ngx_fluxgate_mac_key = key;
    ngx_fluxgate_mac_key_len = secret->len;

    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
                                                 (char *) "SHA256", 0);
    params[1] = OSSL_PARAM_construct_end();

    if (!EVP_MAC_init(ngx_fluxgate_mac_ctx, secret->data, secret->len,
                      params))
    {
        /* a half-keyed context is never reused */
        OPENSSL_clear_free(ngx_fluxgate_mac_key, ngx_fluxgate_mac_key_len);
        ngx_fluxgate_mac_key = NULL;
        ngx_fluxgate_mac_key_len = 0;
        return NULL;
    }

    return ngx_fluxgate_mac_ctx;
}


#endif


static ngx_int_t
ngx_fluxgate_mac(ngx_str_t *secret, u_char *data, size_t len, u_char *mac)
{
    unsigned int   n;

#if (OPENSSL_VERSION_NUMBER >= 0x30000000L)
    size_t         out;
    EVP_MAC_CTX   *ctx;

    ctx = ngx_fluxgate_mac_keyed(secret);

    if (ctx != NULL
        && EVP_MAC_update(ctx, data, len)
        && EVP_MAC_final(ctx, mac, &out, NGX_FLUXGATE_SEAL_MAC)
        && out == NGX_FLUXGATE_SEAL_MAC)
    {
        return NGX_OK;
    }
#endif

    n = NGX_FLUXGATE_SEAL_MAC;

    if (HMAC(EVP_sha256(), secret->data, (int) secret->len, data, len, mac,
             &n)
        == NULL
        || n != NGX_FLUXGATE_SEAL_MAC)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* the next "|"-separated field; past last + 1 once the last was taken */

static u_char *
ngx_fluxgate_field(u_char *p, u_char *last, ngx_str_t *f)
{
    u_char  *bar;

    if (p > last) {
        return NULL;
    }

    bar = ngx_strlchr(p, last, '|');
    if (bar == NULL) {
        bar = last;
    }

    f->data = p;
    f->len = bar - p;

    if (f->len == 0) {
        return NULL;
    }

    return bar + 1;
}


static ngx_uint_t
ngx_fluxgate_zero_bits(u_char *md, size_t len)
{
    u_char      b;
    size_t      i;
    ngx_uint_t  n;

    n = 0;

    for (i = 0; i < len; i++) {
        if (md[i] == 0) {
            n += 8;
            continue;
        }

        for (b = md[i]; !(b & 0x80); b <<= 1) {
            n++;
        }

        break;
    }

    return n;
}
