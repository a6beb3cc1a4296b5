/*
 * md_json_parse(): see md_json.h. A recursive descent over the buffer; every
 * path that is not plainly valid returns NULL (after releasing what it built),
 * which sends the body to jansson.
 */
#include "md_json.h"
#include "md_buf.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Below jansson's JSON_PARSER_MAX_DEPTH (2048): deeper bodies go to jansson. */
#define MD_JSON_MAX_DEPTH 256
/* Digits of an integer that cannot overflow json_int_t (long long). */
#define MD_JSON_INT_DIGITS 18
/* A string up to this many octets is unescaped on the stack. */
#define MD_JSON_STACK_STR 512

typedef struct {
    const unsigned char *p, *end;
    int depth;
} md_json_in_t;

static json_t *value(md_json_in_t *in);

static void
skip_ws(md_json_in_t *in)
{
    while (in->p < in->end && (*in->p == ' ' || *in->p == '\n' || *in->p == '\r' || *in->p == '\t'))
        in->p++;
}

/* Consumes c when it comes next, after whitespace. */
static bool
eat(md_json_in_t *in, char c)
{
    skip_ws(in);
    if (in->p < in->end && *in->p == (unsigned char)c) {
        in->p++;
        return true;
    }
    return false;
}

static int
hex4(const unsigned char *p)
{
    int v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char c = p[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

/* A string at in->p (the opening quote). Its unescaped octets are at *out, *len
 * of them: the input itself when it has no escape (not NUL-terminated), else
 * `stack` (MD_JSON_STACK_STR octets, room for a NUL after them) or, when longer,
 * a malloc'd buffer of len + 1 (*owned). */
static bool
string(md_json_in_t *in, char *stack, char **out, size_t *len, bool *owned)
{
    const unsigned char *p = in->p + 1, *end = in->end;
    /* First pass: find the end and the unescaped length; most strings have no
     * escape and are taken as they stand. */
    const unsigned char *q = p;
    bool escaped = false;
    size_t n = 0;
    *owned = false;
    while (q < end && *q != '"') {
        if (*q == '\\') {
            escaped = true;
            if (end - q < 2)
                return false;
            if (q[1] == 'u') {
                if (end - q < 6)
                    return false;
                int cp = hex4(q + 2);
                /* NUL (jansson refuses it without JSON_ALLOW_NUL) and surrogate
                 * pairs go to jansson. */
                if (cp <= 0 || (cp >= 0xd800 && cp <= 0xdfff))
                    return false;
                n += cp < 0x80 ? 1 : cp < 0x800 ? 2 : 3;
                q += 6;
            } else {
                if (q[1] == '\0' || strchr("\"\\/bfnrt", q[1]) == NULL)
                    return false;
                n++;
                q += 2;
            }
        } else if (*q < 0x20) {
            return false;
        } else if (*q < 0x80) {
            n++;
            q++;
        } else {
            size_t l = md_utf8_seq_len(q, (size_t)(end - q));
            if (l == 0)
                return false;
            n += l;
            q += l;
        }
    }
    if (q >= end)
        return false;
    in->p = q + 1;
    *len = n;
    if (!escaped) {
        *out = (char *)p;
        return true;
    }
    char *w = stack;
    if (n >= MD_JSON_STACK_STR) {
        w = malloc(n + 1);
        if (w == NULL)
            return false;
        *owned = true;
    }
    *out = w;
    for (const unsigned char *s = p; s < q;) {
        if (*s != '\\') {
            *w++ = (char)*s++;
            continue;
        }
        unsigned char e = s[1];
        if (e == 'u') {
            int cp = hex4(s + 2);
            if (cp < 0x80) {
                *w++ = (char)cp;
            } else if (cp < 0x800) {
                *w++ = (char)(0xc0 | (cp >> 6));
                *w++ = (char)(0x80 | (cp & 0x3f));
            } else {
                *w++ = (char)(0xe0 | (cp >> 12));
                *w++ = (char)(0x80 | ((cp >> 6) & 0x3f));
                *w++ = (char)(0x80 | (cp & 0x3f));
            }
            s += 6;
            continue;
        }
        *w++ = e == 'b'   ? '\b'
               : e == 'f' ? '\f'
               : e == 'n' ? '\n'
               : e == 'r' ? '\r'
               : e == 't' ? '\t'
                          : (char)e;
        s += 2;
    }
    return true;
}

static json_t *
string_value(md_json_in_t *in)
{
    char stack[MD_JSON_STACK_STR], *s;
    size_t n;
    bool owned;
    if (!string(in, stack, &s, &n, &owned))
        return NULL;
    json_t *v = json_stringn_nocheck(s, n);
    if (owned)
        free(s);
    return v;
}

static json_t *
number(md_json_in_t *in)
{
    const unsigned char *p = in->p, *end = in->end, *start = p;
    if (p < end && *p == '-')
        p++;
    if (p >= end || *p < '0' || *p > '9')
        return NULL;
    if (*p == '0') {
        p++;
    } else {
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    bool real = false;
    if (p < end && *p == '.') {
        real = true;
        p++;
        if (p >= end || *p < '0' || *p > '9')
            return NULL;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        real = true;
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (p >= end || *p < '0' || *p > '9')
            return NULL;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    /* jansson's lexer reads a number up to the first character that cannot
     * continue it and then wants a separator: "01" or "1x" are its errors. */
    if (p < end && ((*p >= '0' && *p <= '9') || *p == '.' || *p == 'e' || *p == 'E' || *p == '+' ||
                    *p == '-' || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')))
        return NULL;
    size_t len = (size_t)(p - start);
    in->p = p;
    if (!real) {
        size_t digits = len - (start[0] == '-');
        if (digits > MD_JSON_INT_DIGITS)
            return NULL;
        long long v = 0;
        for (const unsigned char *d = start + (start[0] == '-'); d < p; d++)
            v = v * 10 + (*d - '0');
        return json_integer(start[0] == '-' ? -v : v);
    }
    char buf[64];
    if (len >= sizeof(buf))
        return NULL;
    memcpy(buf, start, len);
    buf[len] = '\0';
    errno = 0;
    char *stop;
    double d = strtod(buf, &stop);
    if (errno != 0 || stop != buf + len || !isfinite(d))
        return NULL;
    return json_real(d);
}

static bool
literal(md_json_in_t *in, const char *word, size_t n)
{
    if ((size_t)(in->end - in->p) < n || memcmp(in->p, word, n) != 0)
        return false;
    in->p += n;
    return true;
}

static json_t *
object(md_json_in_t *in)
{
    json_t *o = json_object();
    in->p++;
    if (eat(in, '}'))
        return o;
    for (;;) {
        skip_ws(in);
        if (in->p >= in->end || *in->p != '"')
            break;
        char stack[MD_JSON_STACK_STR], *k;
        size_t kn;
        bool owned;
        if (!string(in, stack, &k, &kn, &owned))
            break;
        /* jansson wants keys as C strings (one with a NUL went to jansson above). */
        char *key = k;
        if (k != stack && !owned) {
            /* a slice of the input: copied so it can be terminated */
            if (kn < MD_JSON_STACK_STR) {
                key = stack;
            } else if ((key = malloc(kn + 1)) == NULL) {
                break;
            } else {
                owned = true;
            }
            memcpy(key, k, kn);
        }
        key[kn] = '\0';
        bool dup = json_object_get(o, key) != NULL;
        json_t *v = !dup && eat(in, ':') ? value(in) : NULL;
        if (v != NULL && json_object_set_new_nocheck(o, key, v) != 0)
            v = NULL;
        if (owned)
            free(key);
        if (v == NULL)
            break;
        if (eat(in, ','))
            continue;
        if (eat(in, '}'))
            return o;
        break;
    }
    json_decref(o);
    return NULL;
}

static json_t *
array(md_json_in_t *in)
{
    json_t *a = json_array();
    in->p++;
    if (eat(in, ']'))
        return a;
    for (;;) {
        json_t *v = value(in);
        if (v == NULL || json_array_append_new(a, v) != 0)
            break;
        if (eat(in, ','))
            continue;
        if (eat(in, ']'))
            return a;
        break;
    }
    json_decref(a);
    return NULL;
}

static json_t *
value(md_json_in_t *in)
{
    skip_ws(in);
    if (in->p >= in->end)
        return NULL;
    json_t *v = NULL;
    switch (*in->p) {
    case '{':
    case '[':
        if (++in->depth > MD_JSON_MAX_DEPTH)
            return NULL;
        v = *in->p == '{' ? object(in) : array(in);
        in->depth--;
        return v;
    case '"':
        return string_value(in);
    case 't':
        return literal(in, "true", 4) ? json_true() : NULL;
    case 'f':
        return literal(in, "false", 5) ? json_false() : NULL;
    case 'n':
        return literal(in, "null", 4) ? json_null() : NULL;
    default:
        return number(in);
    }
}

json_t *
md_json_parse(const char *s, size_t n)
{
    md_json_in_t in = {(const unsigned char *)s, (const unsigned char *)s + n, 0};
    skip_ws(&in);
    if (in.p >= in.end || (*in.p != '{' && *in.p != '['))
        return NULL;
    json_t *v = value(&in);
    if (v == NULL)
        return NULL;
    skip_ws(&in);
    if (in.p != in.end) {
        json_decref(v);
        return NULL;
    }
    return v;
}

json_t *
md_json_load(const char *s, size_t n, json_error_t *err)
{
    json_t *v = md_json_parse(s, n);
    return v ? v : json_loadb(s, n, JSON_REJECT_DUPLICATES, err);
}
