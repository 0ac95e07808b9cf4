/*
 * fluxgate_slot.h: the Redis Cluster hash slot of a key, as Redis computes
 * it (CRC16-XMODEM of the key, or of its hash tag, modulo 16384).  Pure C,
 * header only: the nginx module routes its commands with it
 * (ngx_fluxgate_redis_cluster.c) and fluxgate-reconcile does the same
 * (reconcile_redis.c); include/test_slot.c tests it, t/700-cluster-slot.t
 * compares it to a real Redis's CLUSTER KEYSLOT.
 *
 * The hash tag is what lies between the first '{' and the first '}' after
 * it, when that is not empty; every key of a product is fg:{<id>}:..., so
 * all of them share one slot.
 */
#ifndef FLUXGATE_SLOT_H
#define FLUXGATE_SLOT_H

#include <stddef.h>
#include <stdint.h>

#define FG_CLUSTER_SLOTS  16384


static inline uint16_t
fg_crc16(const unsigned char *p, size_t len)
{
    size_t    i;
    int       b;
    uint16_t  crc = 0;

    for (i = 0; i < len; i++) {
        crc ^= (uint16_t) (p[i] << 8);

        for (b = 0; b < 8; b++) {
            crc = (crc & 0x8000) ? (uint16_t) ((crc << 1) ^ 0x1021)
                                 : (uint16_t) (crc << 1);
        }
    }

    return crc;
}


/* the part of the key that is hashed: its hash tag, or all of it */
static inline void
fg_hash_tag(const unsigned char *key, size_t len, const unsigned char **tag,
    size_t *tag_len)
{
    size_t  s, e;

    *tag = key;
    *tag_len = len;

    for (s = 0; s < len && key[s] != '{'; s++) { /* void */ }

    if (s == len) {
        return;
    }

    for (e = s + 1; e < len && key[e] != '}'; e++) { /* void */ }

    if (e == len || e == s + 1) {
        return;
    }

    *tag = key + s + 1;
    *tag_len = e - s - 1;
}


static inline unsigned
fg_key_slot(const unsigned char *key, size_t len)
{
    size_t                tag_len;
    const unsigned char  *tag;

    fg_hash_tag(key, len, &tag, &tag_len);

    return fg_crc16(tag, tag_len) & (FG_CLUSTER_SLOTS - 1);
}


#endif /* FLUXGATE_SLOT_H */
