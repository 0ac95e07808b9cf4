/*
 * strmap.c: open addressing with linear probing and FNV-1a; grows by
 * rebuilding, which is rare since reset sizes it for the whole batch.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "strmap.h"

static size_t
hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL;

    while (*s != '\0') {
        h ^= (unsigned char) *s++;
        h *= 1099511628211ULL;
    }
    return (size_t) h;
}

static size_t
probe(const struct fg_strmap *m, const char *key)
{
    size_t i = hash(key) & (m->cap - 1);

    while (m->keys[i] != NULL && strcmp(m->keys[i], key) != 0) {
        i = (i + 1) & (m->cap - 1);
    }
    return i;
}

static int
resize(struct fg_strmap *m, size_t cap)
{
    const char **keys;
    long        *vals;

    if (cap <= m->cap) {
        memset(m->keys, 0, m->cap * sizeof(*m->keys));
        return 0;
    }
    keys = calloc(cap, sizeof(*keys));
    vals = malloc(cap * sizeof(*vals));
    if (keys == NULL || vals == NULL) {
        free(keys);
        free(vals);
        return -1;
    }
    free(m->keys);
    free(m->vals);
    m->keys = keys;
    m->vals = vals;
    m->cap = cap;
    return 0;
}

int
fg_strmap_reset(struct fg_strmap *m, size_t n)
{
    size_t cap = 16;

    while (cap < 2 * n) {
        cap *= 2;
    }
    m->count = 0;
    return resize(m, cap);
}

long *
fg_strmap_slot(struct fg_strmap *m, const char *key, long dflt)
{
    struct fg_strmap  old;
    size_t            i, j;

    if (m->cap == 0 && fg_strmap_reset(m, 8) != 0) {
        return NULL;
    }

    i = probe(m, key);
    if (m->keys[i] != NULL) {
        return &m->vals[i];
    }

    if (2 * (m->count + 1) > m->cap) {
        old = *m;
        m->keys = NULL;
        m->vals = NULL;
        m->cap = 0;
        if (resize(m, old.cap * 2) != 0) {
            *m = old;
            return NULL;
        }
        for (j = 0; j < old.cap; j++) {
            if (old.keys[j] != NULL) {
                i = probe(m, old.keys[j]);
                m->keys[i] = old.keys[j];
                m->vals[i] = old.vals[j];
            }
        }
        free(old.keys);
        free(old.vals);
        i = probe(m, key);
    }

    m->keys[i] = key;
    m->vals[i] = dflt;
    m->count++;
    return &m->vals[i];
}

long *
fg_strmap_find(const struct fg_strmap *m, const char *key)
{
    size_t i;

    if (m->cap == 0) {
        return NULL;
    }
    i = probe(m, key);
    return m->keys[i] != NULL ? &m->vals[i] : NULL;
}

void
fg_strmap_free(struct fg_strmap *m)
{
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof(*m));
}
