/*
 * Mustache compiler and renderer.
 *
 * Compile walks the source once with the current delimiters and emits a flat
 * instruction array. Standalone lines (a section, inverted, close, comment, partial
 * or set-delimiter tag alone on its line) are resolved here: their whitespace and
 * line ending never become TEXT. Partial indentation is the one thing that depends on
 * the call site, so compile marks every line start of the template (INDENT, skipped
 * for removed standalone lines and for the end of the source) and the renderer writes
 * the current indentation there; with no indentation INDENT writes nothing. This is
 * the spec's "prepend the indentation to each line of the partial" without re-parsing
 * the partial per call site.
 *
 * Render is one loop over the instructions with explicit stacks (section frames,
 * partial frames, context values), so neither the template nor the data can make it
 * recurse on the C stack.
 */
#include "md_template.h"

#include <stdio.h>
#include <stdlib.h>

enum {
    OP_TEXT,     /* a = source offset, b = length */
    OP_INDENT,   /* line start: write the current partial indentation */
    OP_VAR,      /* a = first segment, b = segment count (0: {{.}}), raw = no escaping */
    OP_SECTION,  /* as VAR; jump = pc after the matching OP_END */
    OP_INVERTED, /* as VAR; jump = pc after the matching OP_INV_END */
    OP_END,      /* jump = pc of the OP_SECTION it closes */
    OP_INV_END,  /* no effect: keeps the structure visible when debugging */
    OP_PARTIAL   /* a = name offset in names, b = name length; standalone: indent
                    is source [jump, jump + c) */
};

typedef struct {
    uint8_t op;
    uint8_t raw;
    uint8_t standalone;
    uint32_t a;
    uint32_t b;
    uint32_t jump;
    uint32_t c;
} md_tpl_ins_t;

typedef struct {
    uint32_t off; /* in names */
    uint32_t len;
} md_tpl_seg_t;

struct md_template_s {
    char *src; /* private copy, NUL-terminated */
    size_t src_len;
    md_tpl_ins_t *code;
    size_t ncode, code_cap;
    md_tpl_seg_t *segs;
    size_t nsegs, segs_cap;
    char *names; /* NUL-terminated copies of name segments and partial names */
    size_t names_len, names_cap;
};

/* ---- compile ---------------------------------------------------------------- */

typedef struct {
    uint32_t pc;
    uint32_t tag_pos;
    const char *name;
    size_t name_len;
} md_tpl_open_t;

typedef struct {
    md_template_t *t;
    const char *s;
    size_t len;
    const char *otag, *ctag;
    size_t olen, clen;
    md_tpl_open_t open[MD_TEMPLATE_MAX_NESTING];
    size_t nopen;
    md_template_error_t *err;
} md_tpl_comp_t;

static void tpl_error_at(md_template_error_t *err, const char *s, size_t pos, const char *fmt, ...)
    md_printf_like(4, 5);

/* Fills err (if any) with the message and the 1-based line and column of s[pos];
 * the column counts UTF-8 characters (continuation bytes are not counted). */
static void
tpl_error_at(md_template_error_t *err, const char *s, size_t pos, const char *fmt, ...)
{
    if (err == NULL)
        return;
    unsigned line = 1, col = 1;
    for (size_t i = 0; i < pos; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n') {
            line++;
            col = 1;
        } else if ((c & 0xc0) != 0x80) {
            col++;
        }
    }
    err->line = s ? line : 0;
    err->column = s ? col : 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
}

static int
tpl_is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static md_tpl_ins_t *
tpl_emit(md_template_t *t, int op)
{
    if (t->ncode == t->code_cap) {
        t->code_cap = t->code_cap ? t->code_cap * 2 : 32;
        t->code = md_xrealloc(t->code, t->code_cap * sizeof(*t->code));
    }
    md_tpl_ins_t *ins = &t->code[t->ncode++];
    memset(ins, 0, sizeof(*ins));
    ins->op = (uint8_t)op;
    return ins;
}

/* Copies name[0..len) NUL-terminated into the names arena; returns its offset. */
static uint32_t
tpl_add_name(md_template_t *t, const char *name, size_t len)
{
    if (t->names_len + len + 1 > t->names_cap) {
        size_t cap = t->names_cap ? t->names_cap : 64;
        while (cap < t->names_len + len + 1)
            cap *= 2;
        t->names = md_xrealloc(t->names, cap);
        t->names_cap = cap;
    }
    uint32_t off = (uint32_t)t->names_len;
    memcpy(t->names + off, name, len);
    t->names[off + len] = '\0';
    t->names_len += len + 1;
    return off;
}

/*
 * Emits s[a..b) as TEXT, with an INDENT at each line start inside [a, b]: a itself
 * when it starts a line, and after each newline. A line start at the end of the
 * source gets none (nothing follows to indent), nor an empty line, nor one at b when
 * suppress_b says b starts a standalone line that is being removed.
 */
static void
tpl_emit_text(md_tpl_comp_t *c, size_t a, size_t b, int suppress_b)
{
    const char *s = c->s;
    size_t cur = a, scan = a, ls;
    int first = 1;
    for (;;) {
        if (first) {
            first = 0;
            if (a != 0 && s[a - 1] != '\n')
                continue;
            ls = a;
        } else {
            const char *nl = scan < b ? memchr(s + scan, '\n', b - scan) : NULL;
            if (nl == NULL)
                break;
            ls = (size_t)(nl - s) + 1;
            scan = ls;
        }
        /* An empty line gets no indentation either: it would only be trailing
         * whitespace (s is NUL-terminated, so s[ls + 1] is readable). */
        if (ls < c->len && !(ls == b && suppress_b) && s[ls] != '\n' &&
            !(s[ls] == '\r' && s[ls + 1] == '\n')) {
            if (ls > cur) {
                md_tpl_ins_t *ins = tpl_emit(c->t, OP_TEXT);
                ins->a = (uint32_t)cur;
                ins->b = (uint32_t)(ls - cur);
                cur = ls;
            }
            tpl_emit(c->t, OP_INDENT);
        }
    }
    if (b > cur) {
        md_tpl_ins_t *ins = tpl_emit(c->t, OP_TEXT);
        ins->a = (uint32_t)cur;
        ins->b = (uint32_t)(b - cur);
    }
}

/* Splits a trimmed tag name into segments (a.b.c); "." is the implicit iterator
 * (no segment). Fills ins->a/b. */
static int
tpl_parse_name(md_tpl_comp_t *c, md_tpl_ins_t *ins, const char *name, size_t len, size_t tag_pos)
{
    md_template_t *t = c->t;
    ins->a = (uint32_t)t->nsegs;
    ins->b = 0;
    if (len == 1 && name[0] == '.')
        return MD_OK;
    size_t i = 0;
    for (;;) {
        const char *dot = memchr(name + i, '.', len - i);
        size_t e = dot ? (size_t)(dot - name) : len;
        if (e == i) {
            tpl_error_at(c->err, c->s, tag_pos, "empty segment in name '%.*s'",
                         (int)md_min(len, 60), name);
            return MD_ERROR;
        }
        if (t->nsegs == t->segs_cap) {
            t->segs_cap = t->segs_cap ? t->segs_cap * 2 : 16;
            t->segs = md_xrealloc(t->segs, t->segs_cap * sizeof(*t->segs));
        }
        md_tpl_seg_t *seg = &t->segs[t->nsegs++];
        seg->len = (uint32_t)(e - i);
        seg->off = tpl_add_name(t, name + i, e - i);
        ins->b++;
        if (dot == NULL)
            return MD_OK;
        i = e + 1;
    }
}

/* Parses the inside of a set-delimiter tag ("<% %>") into c->otag / c->ctag, which
 * then point into the template's own copy of the source. */
static int
tpl_set_delims(md_tpl_comp_t *c, const char *p, size_t n, size_t tag_pos)
{
    const char *end = p + n;
    while (p < end && tpl_is_ws(*p))
        p++;
    while (end > p && tpl_is_ws(end[-1]))
        end--;
    const char *o = p;
    while (p < end && !tpl_is_ws(*p))
        p++;
    size_t olen = (size_t)(p - o);
    while (p < end && tpl_is_ws(*p))
        p++;
    const char *cl = p;
    while (p < end && !tpl_is_ws(*p))
        p++;
    size_t clen = (size_t)(p - cl);
    if (olen == 0 || clen == 0 || p != end || memchr(o, '=', olen) || memchr(cl, '=', clen)) {
        tpl_error_at(c->err, c->s, tag_pos,
                     "bad set-delimiter tag: expected two delimiters without '=' separated "
                     "by whitespace, like {{=<%% %%>=}}");
        return MD_ERROR;
    }
    c->otag = o;
    c->olen = olen;
    c->ctag = cl;
    c->clen = clen;
    return MD_OK;
}

static int
tpl_compile(md_tpl_comp_t *c)
{
    const char *s = c->s;
    size_t len = c->len, pos = 0, text_start = 0, last_tag_end = 0;

    for (;;) {
        const char *hit = pos < len ? memmem(s + pos, len - pos, c->otag, c->olen) : NULL;
        if (hit == NULL) {
            tpl_emit_text(c, text_start, len, 0);
            break;
        }
        size_t tag_pos = (size_t)(hit - s);
        size_t p = tag_pos + c->olen;
        char type = 0;
        size_t q = p;
        while (q < len && tpl_is_ws(s[q]))
            q++;
        if (p < len && (s[p] == '{' || s[p] == '=')) {
            type = s[p++];
        } else if (q < len && strchr("#^/!>&", s[q]) && s[q] != '\0') {
            type = s[q];
            p = q + 1;
        }

        /* Find the end of the tag: '{' closes with '}' + ctag, '=' with '=' + ctag. */
        size_t content_end, tag_end;
        const char *close = NULL;
        if (type == '{' || type == '=') {
            const char *from = s + p;
            while (from < s + len) {
                const char *h = memmem(from, (size_t)(s + len - from), c->ctag, c->clen);
                if (h == NULL)
                    break;
                if (h > s + p && h[-1] == (type == '{' ? '}' : '=')) {
                    close = h - 1;
                    break;
                }
                from = h + 1;
            }
            if (close) {
                content_end = (size_t)(close - s);
                tag_end = content_end + 1 + c->clen;
            }
        } else {
            close = p <= len ? memmem(s + p, len - p, c->ctag, c->clen) : NULL;
            if (close) {
                content_end = (size_t)(close - s);
                tag_end = content_end + c->clen;
            }
        }
        if (close == NULL) {
            tpl_error_at(c->err, s, tag_pos, "unclosed tag: '%.*s' without a matching '%s%.*s'",
                         (int)c->olen, c->otag,
                         type == '{'   ? "}"
                         : type == '=' ? "="
                                       : "",
                         (int)c->clen, c->ctag);
            return MD_ERROR;
        }

        /* Trimmed name (not used for comments and delimiters). */
        const char *name = s + p;
        size_t nlen = content_end - p;
        while (nlen && tpl_is_ws(*name))
            name++, nlen--;
        while (nlen && tpl_is_ws(name[nlen - 1]))
            nlen--;

        /* Standalone: only whitespace around a non-interpolation tag on its line. */
        int standalone = 0;
        size_t line_start = tag_pos, next = tag_end;
        if (type != 0 && type != '&' && type != '{') {
            while (line_start > 0 && (s[line_start - 1] == ' ' || s[line_start - 1] == '\t'))
                line_start--;
            if ((line_start == 0 || s[line_start - 1] == '\n') && line_start >= last_tag_end) {
                size_t e = tag_end;
                while (e < len && (s[e] == ' ' || s[e] == '\t'))
                    e++;
                if (e == len) {
                    standalone = 1, next = len;
                } else if (s[e] == '\n') {
                    standalone = 1, next = e + 1;
                } else if (s[e] == '\r' && e + 1 < len && s[e + 1] == '\n') {
                    standalone = 1, next = e + 2;
                }
            }
        }
        if (standalone)
            tpl_emit_text(c, text_start, line_start, 1);
        else
            tpl_emit_text(c, text_start, tag_pos, 0), next = tag_end;

        if (type != '!' && type != '=' && nlen == 0) {
            tpl_error_at(c->err, s, tag_pos, "empty tag name");
            return MD_ERROR;
        }

        md_tpl_ins_t *ins;
        switch (type) {
        case '!':
            break;
        case '=':
            if (tpl_set_delims(c, s + p, content_end - p, tag_pos) != MD_OK)
                return MD_ERROR;
            break;
        case '#':
        case '^':
            if (c->nopen == MD_TEMPLATE_MAX_NESTING) {
                tpl_error_at(c->err, s, tag_pos, "sections nested deeper than %d",
                             MD_TEMPLATE_MAX_NESTING);
                return MD_ERROR;
            }
            ins = tpl_emit(c->t, type == '#' ? OP_SECTION : OP_INVERTED);
            if (tpl_parse_name(c, ins, name, nlen, tag_pos) != MD_OK)
                return MD_ERROR;
            c->open[c->nopen++] =
                (md_tpl_open_t){(uint32_t)(c->t->ncode - 1), (uint32_t)tag_pos, name, nlen};
            break;
        case '/': {
            if (c->nopen == 0) {
                tpl_error_at(c->err, s, tag_pos, "closing tag '%.*s' without an open section",
                             (int)md_min(nlen, 60), name);
                return MD_ERROR;
            }
            md_tpl_open_t *o = &c->open[c->nopen - 1];
            if (o->name_len != nlen || memcmp(o->name, name, nlen) != 0) {
                md_template_error_t oe;
                tpl_error_at(&oe, s, o->tag_pos, "-");
                tpl_error_at(c->err, s, tag_pos,
                             "closing tag '%.*s' does not match section '%.*s' opened at line "
                             "%u, column %u",
                             (int)md_min(nlen, 40), name, (int)md_min(o->name_len, 40), o->name,
                             oe.line, oe.column);
                return MD_ERROR;
            }
            int is_section = c->t->code[o->pc].op == OP_SECTION;
            ins = tpl_emit(c->t, is_section ? OP_END : OP_INV_END);
            ins->jump = o->pc;
            c->t->code[o->pc].jump = (uint32_t)c->t->ncode;
            c->nopen--;
            break;
        }
        case '>':
            ins = tpl_emit(c->t, OP_PARTIAL);
            ins->a = tpl_add_name(c->t, name, nlen);
            ins->b = (uint32_t)nlen;
            ins->standalone = (uint8_t)standalone;
            ins->jump = (uint32_t)line_start;
            ins->c = (uint32_t)(tag_pos - line_start);
            break;
        default: /* 0, '&', '{' */
            ins = tpl_emit(c->t, OP_VAR);
            ins->raw = type != 0;
            if (tpl_parse_name(c, ins, name, nlen, tag_pos) != MD_OK)
                return MD_ERROR;
            break;
        }
        last_tag_end = tag_end;
        pos = text_start = next;
    }

    if (c->nopen) {
        md_tpl_open_t *o = &c->open[c->nopen - 1];
        tpl_error_at(c->err, s, o->tag_pos, "unclosed section '%.*s'", (int)md_min(o->name_len, 60),
                     o->name);
        return MD_ERROR;
    }
    return MD_OK;
}

int
md_template_compile(const char *src, size_t len, md_template_t **out, md_template_error_t *err)
{
    *out = NULL;
    if (len > MD_TEMPLATE_MAX_SOURCE) {
        if (err) {
            err->line = err->column = 0;
            snprintf(err->msg, sizeof(err->msg), "template longer than %u bytes",
                     MD_TEMPLATE_MAX_SOURCE);
        }
        return MD_ERROR;
    }
    md_template_t *t = md_xcalloc(1, sizeof(*t));
    t->src = md_xmalloc(len + 1);
    if (len)
        memcpy(t->src, src, len);
    t->src[len] = '\0';
    t->src_len = len;

    md_tpl_comp_t *c = md_xcalloc(1, sizeof(*c));
    c->t = t;
    c->s = t->src;
    c->len = len;
    c->otag = "{{";
    c->ctag = "}}";
    c->olen = c->clen = 2;
    c->err = err;
    int rc = tpl_compile(c);
    free(c);
    if (rc != MD_OK) {
        md_template_free(t);
        return MD_ERROR;
    }
    *out = t;
    return MD_OK;
}

size_t
md_template_size(const md_template_t *t)
{
    return t ? t->ncode : 0;
}

size_t
md_template_partials(const md_template_t *t, void (*fn)(void *ctx, const char *name, size_t len),
                     void *ctx)
{
    size_t n = 0;
    if (t == NULL)
        return 0;
    for (size_t i = 0; i < t->ncode; i++) {
        const md_tpl_ins_t *ins = &t->code[i];
        if (ins->op != OP_PARTIAL)
            continue;
        n++;
        if (fn)
            fn(ctx, t->names + ins->a, ins->b);
    }
    return n;
}

void
md_template_free(md_template_t *t)
{
    if (t == NULL)
        return;
    free(t->src);
    free(t->code);
    free(t->segs);
    free(t->names);
    free(t);
}

/* ---- render ----------------------------------------------------------------- */

enum { FRAME_LIST, FRAME_ONE, FRAME_PARTIAL };

typedef struct {
    uint8_t kind;
    json_t *list;               /* FRAME_LIST */
    size_t idx;                 /* FRAME_LIST: item; FRAME_PARTIAL: return pc */
    const md_template_t *tpl;   /* FRAME_PARTIAL: caller */
    unsigned ind_base, ind_top; /* FRAME_PARTIAL: caller's indentation spans */
} md_tpl_frame_t;

typedef struct {
    md_buf_t *out;
    size_t base, max_out;
    md_template_error_t *err;
    int failed;

    json_t **ctx;
    size_t nctx, ctx_cap;
    md_tpl_frame_t *frames;
    size_t nframes, frames_cap;
    /* The current indentation is ind[ind_base .. ind_top): one whitespace span per
     * standalone partial level, pointing into the including templates' sources (alive
     * for the whole render by the lookup contract), so nothing is copied and a
     * partial level adds at most one span. */
    md_str_t ind[MD_TEMPLATE_MAX_PARTIAL_DEPTH + 1];
    unsigned ind_base, ind_top;
} md_tpl_run_t;

static void tpl_run_error(md_tpl_run_t *r, const char *fmt, ...) md_printf_like(2, 3);

static void
tpl_run_error(md_tpl_run_t *r, const char *fmt, ...)
{
    r->failed = 1;
    if (r->err == NULL)
        return;
    r->err->line = r->err->column = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->err->msg, sizeof(r->err->msg), fmt, ap);
    va_end(ap);
}

static int
tpl_put(md_tpl_run_t *r, const char *p, size_t n)
{
    if (r->max_out && md_buf_len(r->out) - r->base + n > r->max_out) {
        tpl_run_error(r, "rendered output exceeds %zu bytes", r->max_out);
        return MD_ERROR;
    }
    md_buf_append(r->out, p, n);
    return MD_OK;
}

static int
tpl_put_html(md_tpl_run_t *r, const char *s, size_t n)
{
    const char *end = s + n;
    while (s < end) {
        const char *run = s;
        while (s < end && *s != '&' && *s != '<' && *s != '>' && *s != '"' && *s != '\'')
            s++;
        if (s > run && tpl_put(r, run, (size_t)(s - run)) != MD_OK)
            return MD_ERROR;
        if (s == end)
            break;
        const char *ent;
        switch (*s) {
        case '&':
            ent = "&amp;";
            break;
        case '<':
            ent = "&lt;";
            break;
        case '>':
            ent = "&gt;";
            break;
        case '"':
            ent = "&quot;";
            break;
        default:
            ent = "&#39;";
            break;
        }
        if (tpl_put(r, ent, strlen(ent)) != MD_OK)
            return MD_ERROR;
        s++;
    }
    return MD_OK;
}

static int
tpl_put_value(md_tpl_run_t *r, json_t *v, int escape)
{
    char num[64];
    int n;
    switch (json_typeof(v)) {
    case JSON_STRING:
        if (escape)
            return tpl_put_html(r, json_string_value(v), json_string_length(v));
        return tpl_put(r, json_string_value(v), json_string_length(v));
    case JSON_INTEGER:
        n = snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return tpl_put(r, num, (size_t)n);
    case JSON_REAL: {
        /* The shortest %g that reads back to the same double: 1.21 stays 1.21. */
        double d = json_real_value(v);
        n = 0;
        for (int prec = 15; prec <= 17; prec++) {
            n = snprintf(num, sizeof(num), "%.*g", prec, d);
            if (strtod(num, NULL) == d)
                break;
        }
        return tpl_put(r, num, (size_t)n);
    }
    case JSON_TRUE:
        return tpl_put(r, "true", 4);
    default: /* null, false, objects and lists render empty */
        return MD_OK;
    }
}

static int
tpl_truthy(json_t *v)
{
    if (v == NULL)
        return 0;
    switch (json_typeof(v)) {
    case JSON_NULL:
    case JSON_FALSE:
        return 0;
    case JSON_ARRAY:
        return json_array_size(v) > 0;
    case JSON_STRING:
        return json_string_length(v) > 0;
    default:
        return 1;
    }
}

/* The spec's name resolution: the first segment is looked up through the context
 * stack, innermost first (only objects have keys); the rest strictly inside what it
 * found, so a broken chain is a miss rather than a lookup further out. */
static json_t *
tpl_resolve(md_tpl_run_t *r, const md_template_t *t, const md_tpl_ins_t *ins)
{
    if (ins->b == 0)
        return r->ctx[r->nctx - 1];
    const md_tpl_seg_t *seg = &t->segs[ins->a];
    json_t *v = NULL;
    for (size_t k = r->nctx; k > 0; k--) {
        json_t *c = r->ctx[k - 1];
        if (json_is_object(c) && (v = json_object_getn(c, t->names + seg->off, seg->len)) != NULL)
            break;
    }
    for (uint32_t i = 1; v && i < ins->b; i++) {
        seg++;
        v = json_is_object(v) ? json_object_getn(v, t->names + seg->off, seg->len) : NULL;
    }
    return v;
}

static void
tpl_push_ctx(md_tpl_run_t *r, json_t *v)
{
    if (r->nctx == r->ctx_cap) {
        r->ctx_cap = r->ctx_cap ? r->ctx_cap * 2 : 16;
        r->ctx = md_xrealloc(r->ctx, r->ctx_cap * sizeof(*r->ctx));
    }
    r->ctx[r->nctx++] = v;
}

static md_tpl_frame_t *
tpl_push_frame(md_tpl_run_t *r, int kind)
{
    if (r->nframes == r->frames_cap) {
        r->frames_cap = r->frames_cap ? r->frames_cap * 2 : 16;
        r->frames = md_xrealloc(r->frames, r->frames_cap * sizeof(*r->frames));
    }
    md_tpl_frame_t *f = &r->frames[r->nframes++];
    memset(f, 0, sizeof(*f));
    f->kind = (uint8_t)kind;
    return f;
}

int
md_template_render(const md_template_t *t, json_t *data, md_template_escape_t mode,
                   md_template_partial_pt lookup, void *lookup_ctx, size_t max_out, md_buf_t *out,
                   md_template_error_t *err)
{
    md_tpl_run_t run, *r = &run;
    memset(r, 0, sizeof(*r));
    r->out = out;
    r->base = md_buf_len(out);
    r->max_out = max_out;
    r->err = err;

    size_t max_steps = (size_t)1 << 26;
    if (max_out)
        max_steps = max_out > (SIZE_MAX - ((size_t)1 << 20)) / 16
                        ? SIZE_MAX
                        : ((size_t)1 << 20) + 16 * max_out;
    size_t steps = 0;
    unsigned depth = 0;

    const md_template_t *cur = t;
    const md_tpl_ins_t *code = t->code;
    size_t n = t->ncode, pc = 0;
    tpl_push_ctx(r, data);

    while (!r->failed) {
        if (pc >= n) {
            if (r->nframes == 0)
                break;
            /* Only a partial frame can be on top at the end of a template: every
             * section frame was popped by its OP_END inside that template. */
            md_tpl_frame_t *f = &r->frames[--r->nframes];
            cur = f->tpl;
            code = cur->code;
            n = cur->ncode;
            pc = f->idx;
            r->ind_base = f->ind_base;
            r->ind_top = f->ind_top;
            depth--;
            continue;
        }
        if (++steps > max_steps) {
            tpl_run_error(r, "template rendering exceeds %zu steps", max_steps);
            break;
        }
        const md_tpl_ins_t *ins = &code[pc];
        json_t *v;
        switch (ins->op) {
        case OP_TEXT:
            tpl_put(r, cur->src + ins->a, ins->b);
            pc++;
            break;
        case OP_INDENT:
            for (unsigned i = r->ind_base; i < r->ind_top && !r->failed; i++)
                tpl_put(r, r->ind[i].data, r->ind[i].len);
            pc++;
            break;
        case OP_VAR:
            v = tpl_resolve(r, cur, ins);
            if (v)
                tpl_put_value(r, v, mode == MD_TEMPLATE_ESCAPE_HTML && !ins->raw);
            pc++;
            break;
        case OP_SECTION:
            v = tpl_resolve(r, cur, ins);
            if (!tpl_truthy(v)) {
                pc = ins->jump;
            } else if (json_is_array(v)) {
                md_tpl_frame_t *f = tpl_push_frame(r, FRAME_LIST);
                f->list = v;
                tpl_push_ctx(r, json_array_get(v, 0));
                pc++;
            } else {
                tpl_push_frame(r, FRAME_ONE);
                tpl_push_ctx(r, v);
                pc++;
            }
            break;
        case OP_INVERTED:
            v = tpl_resolve(r, cur, ins);
            pc = tpl_truthy(v) ? ins->jump : pc + 1;
            break;
        case OP_END: {
            md_tpl_frame_t *f = &r->frames[r->nframes - 1];
            if (f->kind == FRAME_LIST && ++f->idx < json_array_size(f->list)) {
                r->ctx[r->nctx - 1] = json_array_get(f->list, f->idx);
                pc = ins->jump + 1;
            } else {
                r->nframes--;
                r->nctx--;
                pc++;
            }
            break;
        }
        case OP_INV_END:
            pc++;
            break;
        case OP_PARTIAL: {
            const md_template_t *p =
                lookup ? lookup(lookup_ctx, cur->names + ins->a, ins->b) : NULL;
            if (p == NULL || p->ncode == 0) {
                pc++;
                break;
            }
            if (depth >= MD_TEMPLATE_MAX_PARTIAL_DEPTH) {
                tpl_run_error(r, "partials nested deeper than %d (recursive partial '%.*s'?)",
                              MD_TEMPLATE_MAX_PARTIAL_DEPTH, (int)md_min(ins->b, 60),
                              cur->names + ins->a);
                break;
            }
            md_tpl_frame_t *f = tpl_push_frame(r, FRAME_PARTIAL);
            f->tpl = cur;
            f->idx = pc + 1;
            f->ind_base = r->ind_base;
            f->ind_top = r->ind_top;
            if (!ins->standalone) {
                r->ind_base = r->ind_top; /* an inline partial starts unindented */
            } else if (ins->c > 0) {
                /* Indentation accumulates: the caller's spans, then this tag's own.
                 * depth < MAX here, so ind_top <= depth < md_nelems(r->ind). */
                r->ind[r->ind_top].data = cur->src + ins->jump;
                r->ind[r->ind_top].len = ins->c;
                r->ind_top++;
            }
            depth++;
            cur = p;
            code = p->code;
            n = p->ncode;
            pc = 0;
            break;
        }
        default:
            tpl_run_error(r, "corrupt template instruction %u", ins->op);
            break;
        }
    }

    free(r->ctx);
    free(r->frames);
    if (r->failed) {
        if (out->pos != NULL)
            out->last = out->pos + r->base;
        return MD_ERROR;
    }
    return MD_OK;
}
