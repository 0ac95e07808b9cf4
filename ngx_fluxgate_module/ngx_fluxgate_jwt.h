
/*
 * Flux-Gate: the buyer's JWT (DESIGN.md v3, "The buyer"), checked before
 * any Redis call.  Pure C (libc, jansson and OpenSSL's HMAC, no nginx
 * headers) so that fuzz_jwt.c and test_jwt.c link it alone.
 *
 * A token is accepted when it is exactly three base64url parts without
 * padding, its header says "alg":"HS256" (and "typ":"JWT" if it says a
 * typ), its signature is HMAC-SHA256(secret, header "." payload), and its
 * payload holds a "sub" that is a valid user id (fluxgate_ids.h) and an
 * "exp" not past; "nbf" and "iat" are honoured when present.  Every time
 * is given NGX_FLUXGATE_JWT_LEEWAY seconds of leeway for skewed clocks.
 */


#ifndef _NGX_FLUXGATE_JWT_H_INCLUDED_
#define _NGX_FLUXGATE_JWT_H_INCLUDED_


#include <stddef.h>

#include "fluxgate_ids.h"


/* longer tokens (after any "Bearer " prefix) are refused before decoding */
#define NGX_FLUXGATE_JWT_MAX       4096
#define NGX_FLUXGATE_JWT_LEEWAY    30
/* exp, nbf and iat: whole seconds in [0, 2^53 - 1], what a double holds */
#define NGX_FLUXGATE_JWT_TIME_MAX  9007199254740991LL


typedef struct {
    char         sub[FG_ID_MAX + 1];     /* NUL-terminated */
    size_t       sub_len;
    long long    exp;                    /* unix seconds */
} ngx_fluxgate_jwt_t;


/*
 * 0: valid, *out filled in, *why NULL.  -1: not, *out untouched, *why a
 * short static reason ("no token", "not a JWT", "not HS256", "bad
 * signature", "expired", ...) fit for a log line.  token may start with
 * "Bearer" (any case) and one or more spaces.  now: unix seconds.
 */
int ngx_fluxgate_jwt_verify(const unsigned char *token, size_t len,
    const unsigned char *secret, size_t secret_len, long long now,
    ngx_fluxgate_jwt_t *out, const char **why);


#endif /* _NGX_FLUXGATE_JWT_H_INCLUDED_ */
