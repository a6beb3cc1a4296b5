#include "md_core.h"
#include "md_log.h"

#include <stdio.h>
#include <stdlib.h>

static void
md_oom(size_t n)
{
    /* No allocation here: the log path may allocate nothing either. */
    fprintf(stderr, "mailerd: out of memory allocating %zu bytes\n", n);
    abort();
}

void *
md_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL)
        md_oom(n);
    return p;
}

void *
md_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (p == NULL)
        md_oom(n * size);
    return p;
}

void *
md_xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (q == NULL)
        md_oom(n);
    return q;
}

char *
md_xstrdup(const char *s)
{
    return md_xstrndup(s, strlen(s));
}

char *
md_xstrndup(const char *s, size_t n)
{
    char *p = md_xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

size_t
md_strlcpy(char *dst, const char *src, size_t size)
{
    size_t n = strlen(src);
    if (size == 0)
        return n;
    size_t k = n < size ? n : size - 1;
    memcpy(dst, src, k);
    dst[k] = '\0';
    return n;
}

bool
md_str_caseeq(md_str_t a, const char *s)
{
    size_t n = strlen(s);
    if (a.len != n)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char x = (unsigned char)a.data[i], y = (unsigned char)s[i];
        if (x >= 'A' && x <= 'Z')
            x += 32;
        if (y >= 'A' && y <= 'Z')
            y += 32;
        if (x != y)
            return false;
    }
    return true;
}
