/*
 * The clock and the latency series of fg-loadgen and fg-bare (series.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "series.h"


uint64_t
now_us(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void
series_push(series_t *s, uint64_t us)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 4096;
        s->v = realloc(s->v, s->cap * sizeof(uint64_t));
        if (s->v == NULL) {
            perror("realloc");
            exit(1);
        }
    }
    s->v[s->n++] = us;
}

static int
cmp_u64(const void *a, const void *b)
{
    uint64_t  x = *(const uint64_t *) a, y = *(const uint64_t *) b;

    return x < y ? -1 : x > y;
}

void
series_sort(series_t *s)
{
    if (s->n) {
        qsort(s->v, s->n, sizeof(uint64_t), cmp_u64);
    }
}

double
series_pct(const series_t *s, double p)
{
    return s->n ? s->v[(size_t) (p * (s->n - 1) + 0.5)] / 1000.0 : 0;
}

double
series_max_ms(const series_t *s)
{
    return s->n ? s->v[s->n - 1] / 1000.0 : 0;
}
