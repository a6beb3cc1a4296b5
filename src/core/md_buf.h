/*
 * Growable byte buffers. Live data is [pos, last) inside [start, end), so a
 * consumer advances pos and a producer advances last without copying.
 */
#ifndef MD_BUF_H
#define MD_BUF_H

#include "md_core.h"
#include <stdarg.h>
#include <string.h>

typedef struct md_buf_s {
    char *start;
    char *pos;
    char *last;
    char *end;
} md_buf_t;

#define md_buf_len(b)   ((size_t)((b)->last - (b)->pos))
#define md_buf_avail(b) ((size_t)((b)->end - (b)->last))

void md_buf_init(md_buf_t *b);
/* md_buf_reserve's slow path: makes the room (see there). */
void md_buf_grow(md_buf_t *b, size_t n);

/* Ensures at least n bytes of room after last; moves data to the front first if
 * that is enough. Pointers into the buffer are invalid afterwards if it had to.
 * Inline, with md_buf_append: building the accept statement's parameters
 * appends a few bytes at a time (array headers, element lengths), and the
 * calls were a tenth of a worker's time there. */
static inline void
md_buf_reserve(md_buf_t *b, size_t n)
{
    if (md_buf_avail(b) < n)
        md_buf_grow(b, n);
}

static inline void
md_buf_append(md_buf_t *b, const void *data, size_t n)
{
    if (n == 0)
        return;
    md_buf_reserve(b, n);
    memcpy(b->last, data, n);
    b->last += n;
}

void md_buf_append_str(md_buf_t *b, const char *s);
void md_buf_printf(md_buf_t *b, const char *fmt, ...) md_printf_like(2, 3);
void md_buf_vprintf(md_buf_t *b, const char *fmt, va_list ap);
/* Appends s as the inside of a JSON string (no quotes), escaping as RFC 8259 asks;
 * bytes that are not valid UTF-8 become U+FFFD so the output is always valid JSON. */
void md_buf_append_json_escaped(md_buf_t *b, const char *s, size_t n);

/* Length of the well-formed UTF-8 sequence at s[0..n) (1..4; RFC 3629: no
 * overlong forms, surrogates or code points past U+10FFFF), or 0. */
size_t md_utf8_seq_len(const unsigned char *s, size_t n);
/* True when s[0..n) is well-formed UTF-8 throughout (md_utf8_seq_len's rules). */
bool md_utf8_valid(const void *s, size_t n);
/* Drops consumed bytes: pos = last = start when empty, else moves live data down. */
void md_buf_compact(md_buf_t *b);
void md_buf_reset(md_buf_t *b);
void md_buf_free(md_buf_t *b);

#endif
