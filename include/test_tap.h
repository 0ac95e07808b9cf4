/*
 * include/test_tap.h: the few Test::More words every C unit test needs,
 * printing TAP so that prove runs them like the Perl tests.  Header only:
 * each test is one .c file.
 *
 * Used by the module's test_jwt.c (t/105-jwt.t), the worker's test_plan.c
 * and test_message.c (t/405-plan.t, t/406-message.t) and include/'s
 * test_slot.c and test_shuffle.c (t/700-cluster-slot.t, t/207-shuffle.t).
 */
#ifndef FG_TEST_TAP_H
#define FG_TEST_TAP_H

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static int tap_count;
static int tap_failed;

static inline int
tap_vok(int pass, const char *fmt, va_list ap)
{
    tap_count++;
    if (!pass) {
        tap_failed++;
    }
    printf("%sok %d - ", pass ? "" : "not ", tap_count);
    vprintf(fmt, ap);
    printf("\n");
    fflush(stdout);
    return pass;
}

static inline int __attribute__((format(printf, 2, 3)))
ok(int pass, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    pass = tap_vok(pass, fmt, ap);
    va_end(ap);
    return pass;
}

static inline int __attribute__((format(printf, 3, 4)))
is_int(long long got, long long want, const char *fmt, ...)
{
    va_list ap;
    int     pass = got == want;

    va_start(ap, fmt);
    tap_vok(pass, fmt, ap);
    va_end(ap);
    if (!pass) {
        printf("#          got: %lld\n#     expected: %lld\n", got, want);
    }
    return pass;
}

static inline int __attribute__((format(printf, 3, 4)))
is_str(const char *got, const char *want, const char *fmt, ...)
{
    va_list ap;
    int     pass = got != NULL && strcmp(got, want) == 0;

    va_start(ap, fmt);
    tap_vok(pass, fmt, ap);
    va_end(ap);
    if (!pass) {
        printf("#          got: '%s'\n#     expected: '%s'\n",
               got ? got : "(null)", want);
    }
    return pass;
}

static inline void __attribute__((format(printf, 1, 2)))
diag(const char *fmt, ...)
{
    va_list ap;

    printf("# ");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
}

/* the exit status: 0 when every test passed */
static inline int
done_testing(void)
{
    printf("1..%d\n", tap_count);
    return tap_failed != 0;
}

#endif
