/*
 * fluxgate_ids.h: the one place for the rules of Flux-Gate's ids and keys
 * (DESIGN.md, "HTTP API"), shared by the nginx module's parser
 * (ngx_fluxgate_parse.h) and its JWT check, fluxgate-worker's message
 * parser (message.h) and fluxgate-reconcile's --product (reconcile.c), so
 * that what the gate accepts is exactly what the worker and the tools
 * accept:
 *   productId, userId       1-64 of [A-Za-z0-9._-]
 *   X-Idempotency-Key       1-64 of [A-Za-z0-9_-] (no '.')
 * Header only and pure (libc types, no allocation), so each side and each
 * fuzz target includes it without linking anything.
 */
#ifndef FLUXGATE_IDS_H
#define FLUXGATE_IDS_H

#include <stddef.h>

#define FG_ID_MAX    64
#define FG_KEY_MAX   64

/* what an error message shows of each rule */
#define FG_ID_CHARSET   "A-Za-z0-9._-"
#define FG_KEY_CHARSET  "A-Za-z0-9_-"

static inline int
fg_key_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z')
           || (ch >= '0' && ch <= '9') || ch == '_' || ch == '-';
}

static inline int
fg_id_char(char ch)
{
    return fg_key_char(ch) || ch == '.';
}

/* 1: s[0..len) is a valid productId or userId (a NUL inside is not) */
static inline int
fg_id_valid(const char *s, size_t len)
{
    size_t  i;

    if (len == 0 || len > FG_ID_MAX) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if (!fg_id_char(s[i])) {
            return 0;
        }
    }

    return 1;
}

/* 1: s[0..len) is a valid idempotency key */
static inline int
fg_key_valid(const char *s, size_t len)
{
    size_t  i;

    if (len == 0 || len > FG_KEY_MAX) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if (!fg_key_char(s[i])) {
            return 0;
        }
    }

    return 1;
}

#endif
