/*
 * The clock and the latency series fg-loadgen and fg-bare share: a
 * growing array of microseconds, sorted once at the end and read by
 * percentile.
 */
#ifndef FG_BENCH_SERIES_H
#define FG_BENCH_SERIES_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t  *v;             /* microseconds */
    size_t     n, cap;
} series_t;

/* CLOCK_MONOTONIC, in microseconds */
uint64_t now_us(void);

/* appends us; exits when memory runs out */
void series_push(series_t *s, uint64_t us);

/* sorts the series in place, once it is complete */
void series_sort(series_t *s);

/* the p-th percentile of a sorted series, in ms; 0 when empty */
double series_pct(const series_t *s, double p);

/* the largest value of a sorted series, in ms; 0 when empty */
double series_max_ms(const series_t *s);

#endif
