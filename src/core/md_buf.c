#include "md_buf.h"

#include <stdio.h>
#include <stdlib.h>

void
md_buf_init(md_buf_t *b)
{
    b->start = b->pos = b->last = b->end = NULL;
}

void
md_buf_compact(md_buf_t *b)
{
    if (b->start == NULL || b->pos == b->start)
        return;
    size_t n = md_buf_len(b);
    if (n)
        memmove(b->start, b->pos, n);
    b->pos = b->start;
    b->last = b->start + n;
}

void
md_buf_grow(md_buf_t *b, size_t n)
{
    if (md_buf_avail(b) >= n)
        return;
    size_t live = md_buf_len(b);
    size_t cap = (size_t)(b->end - b->start);
    if (b->start && cap - live >= n && (b->pos - b->start) >= (ptrdiff_t)(cap / 4)) {
        md_buf_compact(b);
        return;
    }
    size_t want = live + n;
    size_t ncap = cap ? cap : 256;
    while (ncap < want)
        ncap *= 2;
    char *p = md_xmalloc(ncap);
    if (live)
        memcpy(p, b->pos, live);
    free(b->start);
    b->start = b->pos = p;
    b->last = p + live;
    b->end = p + ncap;
}

void
md_buf_append_str(md_buf_t *b, const char *s)
{
    md_buf_append(b, s, strlen(s));
}

void
md_buf_vprintf(md_buf_t *b, const char *fmt, va_list ap)
{
    va_list cp;
    va_copy(cp, ap);
    size_t room = md_buf_avail(b);
    int n = vsnprintf(b->last, room, fmt, cp);
    va_end(cp);
    if (n < 0)
        return;
    if ((size_t)n >= room) {
        md_buf_reserve(b, (size_t)n + 1);
        vsnprintf(b->last, (size_t)n + 1, fmt, ap);
    }
    b->last += n;
}

void
md_buf_printf(md_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    md_buf_vprintf(b, fmt, ap);
    va_end(ap);
}

size_t
md_utf8_seq_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    uint32_t cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
        (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
        return 0;
    return len;
}

bool
md_utf8_valid(const void *s, size_t n)
{
    const unsigned char *p = s;
    for (size_t i = 0; i < n;) {
        size_t k = md_utf8_seq_len(p + i, n - i);
        if (k == 0)
            return false;
        i += k;
    }
    return true;
}

void
md_buf_append_json_escaped(md_buf_t *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    md_buf_reserve(b, n + 16);
    while (p < end) {
        const unsigned char *run = p;
        while (p < end && *p >= 0x20 && *p != '"' && *p != '\\' && *p < 0x80)
            p++;
        md_buf_append(b, run, (size_t)(p - run));
        if (p >= end)
            break;
        unsigned char c = *p;
        if (c >= 0x80) {
            size_t l = md_utf8_seq_len(p, (size_t)(end - p));
            if (l) {
                md_buf_append(b, p, l);
                p += l;
            } else {
                md_buf_append(b, "\xef\xbf\xbd", 3);
                p++;
            }
            continue;
        }
        char esc[7];
        switch (c) {
        case '"':
            md_buf_append(b, "\\\"", 2);
            break;
        case '\\':
            md_buf_append(b, "\\\\", 2);
            break;
        case '\n':
            md_buf_append(b, "\\n", 2);
            break;
        case '\r':
            md_buf_append(b, "\\r", 2);
            break;
        case '\t':
            md_buf_append(b, "\\t", 2);
            break;
        default:
            esc[0] = '\\';
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            md_buf_append(b, esc, 6);
        }
        p++;
    }
}

void
md_buf_reset(md_buf_t *b)
{
    b->pos = b->last = b->start;
}

void
md_buf_free(md_buf_t *b)
{
    free(b->start);
    md_buf_init(b);
}
