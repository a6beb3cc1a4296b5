/*
 * Common definitions for every mailerd module: the status vocabulary, string
 * views, and small helpers. Every source file includes this first.
 */
#ifndef MD_CORE_H
#define MD_CORE_H

#include "config.h"

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <string.h>
#include <sys/types.h>

/* One status vocabulary for every step (see DESIGN.md). */
#define MD_OK       0
#define MD_ERROR    -1
#define MD_AGAIN    -2 /* would block: re-armed, call again later */
#define MD_DONE     -4
#define MD_DECLINED -5

#define MD_VERSION PACKAGE_VERSION

/* A string view: not NUL-terminated unless the producer says so. */
typedef struct md_str_s {
    size_t len;
    const char *data;
} md_str_t;

#define md_string(lit)                                                                             \
    {                                                                                              \
        sizeof(lit) - 1, (lit)                                                                     \
    }
#define md_null_string                                                                             \
    {                                                                                              \
        0, NULL                                                                                    \
    }

#define md_nelems(a)                       (sizeof(a) / sizeof((a)[0]))
#define md_min(a, b)                       ((a) < (b) ? (a) : (b))
#define md_max(a, b)                       ((a) > (b) ? (a) : (b))
#define md_container_of(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))
#define md_unused(x)                       ((void)(x))

#if defined(__GNUC__)
#define md_likely(x)         __builtin_expect(!!(x), 1)
#define md_unlikely(x)       __builtin_expect(!!(x), 0)
#define md_printf_like(f, a) __attribute__((format(printf, f, a)))
#else
#define md_likely(x)   (x)
#define md_unlikely(x) (x)
#define md_printf_like(f, a)
#endif

/* The value of one hex digit, or -1. */
static inline int
md_hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* n bytes as 2n lower-case hex digits and a NUL into out (2n + 1 bytes). */
static inline void
md_hex_encode(char *out, const void *in, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    const unsigned char *b = in;
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[b[i] >> 4];
        out[2 * i + 1] = digits[b[i] & 15];
    }
    out[2 * n] = '\0';
}

static inline bool
md_str_eq(md_str_t a, const char *lit)
{
    size_t n = strlen(lit);
    return a.len == n && memcmp(a.data, lit, n) == 0;
}

/* ASCII case-insensitive comparison of a view against a NUL-terminated string. */
bool md_str_caseeq(md_str_t a, const char *s);

/* Allocation that aborts the process on failure: out-of-memory in a worker is not
 * recoverable in any useful way, and checking every small allocation hides logic. */
void *md_xmalloc(size_t n);
void *md_xcalloc(size_t n, size_t size);
void *md_xrealloc(void *p, size_t n);
char *md_xstrdup(const char *s);
char *md_xstrndup(const char *s, size_t n);

/* Copies src into dst of size octets, cut to fit and NUL-terminated;
 * returns strlen(src), so a result >= size means it was cut (BSD strlcpy). What
 * md_strlcpy(dst, src, size) does, without the format machinery on hot paths. */
size_t md_strlcpy(char *dst, const char *src, size_t size);

#endif
