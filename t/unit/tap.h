/* Minimal TAP producer for C unit tests (automake's tap-driver reads it). */
#ifndef MD_TAP_H
#define MD_TAP_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int tap_n, tap_failed;

#define ok(cond, ...)                                                                              \
    do {                                                                                           \
        int ok_ = !!(cond);                                                                        \
        printf("%s %d - ", ok_ ? "ok" : "not ok", ++tap_n);                                        \
        printf(__VA_ARGS__);                                                                       \
        printf("\n");                                                                              \
        if (!ok_) {                                                                                \
            tap_failed++;                                                                          \
            printf("#   failed at %s:%d\n", __FILE__, __LINE__);                                   \
        }                                                                                          \
    } while (0)

#define is_str(got, want, ...)                                                                     \
    do {                                                                                           \
        const char *g_ = (got), *w_ = (want);                                                      \
        int same_ = (g_ && w_) ? strcmp(g_, w_) == 0 : g_ == w_;                                   \
        ok(same_, __VA_ARGS__);                                                                    \
        if (!same_)                                                                                \
            printf("#   got:  '%s'\n#   want: '%s'\n", g_ ? g_ : "(null)", w_ ? w_ : "(null)");    \
    } while (0)

#define is_int(got, want, ...)                                                                     \
    do {                                                                                           \
        long long g_ = (long long)(got), w_ = (long long)(want);                                   \
        ok(g_ == w_, __VA_ARGS__);                                                                 \
        if (g_ != w_)                                                                              \
            printf("#   got:  %lld\n#   want: %lld\n", g_, w_);                                    \
    } while (0)

/* The source tree (test data lives under it): $MD_SRCDIR, else the build's
 * MD_SRCDIR, else ".". */
static inline const char *
tap_srcdir(void)
{
    const char *s = getenv("MD_SRCDIR");
#ifdef MD_SRCDIR
    if (s == NULL || *s == '\0')
        s = MD_SRCDIR;
#endif
    return s && *s ? s : ".";
}

static inline int
done_testing(void)
{
    printf("1..%d\n", tap_n);
    return tap_failed ? 1 : 0;
}

#endif
