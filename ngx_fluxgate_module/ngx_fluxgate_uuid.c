
/*
 * Flux-Gate: order ids, UUIDv7 (RFC 9562): 48 bits of Unix milliseconds,
 * then a 12-bit counter that keeps the ids of one worker in order within a
 * millisecond (seeded at random each new millisecond, the RFC's "method
 * 1"), then 62 random bits.  Randomness comes from getrandom(2) through a
 * per-process buffer, so the ids of two workers never follow one sequence.
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include <sys/random.h>

#include "ngx_fluxgate.h"


static uint64_t ngx_fluxgate_uuid_random(void);


static uint64_t  ngx_fluxgate_uuid_last_ms;
static uint64_t  ngx_fluxgate_uuid_seq;
static pid_t     ngx_fluxgate_uuid_pid;
static uint64_t  ngx_fluxgate_uuid_pool[64];
static ngx_uint_t  ngx_fluxgate_uuid_left;


void
ngx_fluxgate_uuid7(u_char *dst, uint64_t now_ms)
{
    u_char           bytes[16];
    uint64_t         rand_b;
    ngx_uint_t       i;
    static u_char    hex[] = "0123456789abcdef";

    if (now_ms <= ngx_fluxgate_uuid_last_ms) {
        /* same millisecond (or the clock stepped back): count on */
        now_ms = ngx_fluxgate_uuid_last_ms;

        if (++ngx_fluxgate_uuid_seq > 0xfff) {
            now_ms++;
            ngx_fluxgate_uuid_seq = ngx_fluxgate_uuid_random() & 0x3ff;
        }

    } else {
        /* leave room to count up within the millisecond */
        ngx_fluxgate_uuid_seq = ngx_fluxgate_uuid_random() & 0x3ff;
    }

    ngx_fluxgate_uuid_last_ms = now_ms;

    rand_b = ngx_fluxgate_uuid_random();

    bytes[0] = (u_char) (now_ms >> 40);
    bytes[1] = (u_char) (now_ms >> 32);
    bytes[2] = (u_char) (now_ms >> 24);
    bytes[3] = (u_char) (now_ms >> 16);
    bytes[4] = (u_char) (now_ms >> 8);
    bytes[5] = (u_char) now_ms;
    bytes[6] = (u_char) (0x70 | (ngx_fluxgate_uuid_seq >> 8));
    bytes[7] = (u_char) ngx_fluxgate_uuid_seq;
    bytes[8] = (u_char) (0x80 | ((rand_b >> 56) & 0x3f));

    for (i = 9; i < 16; i++) {
        bytes[i] = (u_char) (rand_b >> ((15 - i) * 8));
    }

    for (i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) {
            *dst++ = '-';
        }

        *dst++ = hex[bytes[i] >> 4];
        *dst++ = hex[bytes[i] & 0xf];
    }
}


static uint64_t
ngx_fluxgate_uuid_random(void)
{
    ssize_t     n;
    ngx_uint_t  i;

    /* a forked worker must not reuse its parent's buffer */

    if (ngx_fluxgate_uuid_pid != ngx_pid) {
        ngx_fluxgate_uuid_pid = ngx_pid;
        ngx_fluxgate_uuid_left = 0;
        ngx_fluxgate_uuid_last_ms = 0;
    }

    if (ngx_fluxgate_uuid_left == 0) {
        n = getrandom(ngx_fluxgate_uuid_pool, sizeof(ngx_fluxgate_uuid_pool),
                      0);

        if (n != (ssize_t) sizeof(ngx_fluxgate_uuid_pool)) {
            /* not expected after boot; still never return a constant */
            for (i = 0; i < 64; i++) {
                ngx_fluxgate_uuid_pool[i] ^= ((uint64_t) ngx_random() << 32)
                                             ^ (uint64_t) ngx_random()
                                             ^ (uint64_t) ngx_pid << 16
                                             ^ ngx_current_msec;
            }
        }

        ngx_fluxgate_uuid_left = 64;
    }

    return ngx_fluxgate_uuid_pool[--ngx_fluxgate_uuid_left];
}
