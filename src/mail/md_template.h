/*
 * Mustache templates for message parts (subject, text, html).
 *
 * Supported: interpolation ({{name}}, {{{name}}}, {{& name}}), dotted names and the
 * implicit iterator {{.}}, sections, inverted sections, comments, partials and set
 * delimiters, as the mustache spec (github.com/mustache/spec, files interpolation,
 * sections, inverted, comments, partials, delimiters) defines them, standalone-line
 * rules included. Lambdas, dynamic partial names and inheritance are not supported:
 * data is JSON, which has no functions.
 *
 * A template is compiled once into a flat instruction array that owns a copy of the
 * source; it is immutable afterwards, so one compiled template may be shared by any
 * number of renders (a per-worker cache keeps them). Rendering never reads outside
 * the template or the data, whatever the template says, and is bounded in partial
 * depth, output size and work.
 *
 * Truthiness (sections): missing, null, false, the empty list and the empty string
 * are falsy; everything else (0 included) is truthy. The empty string is falsy so
 * that "{{#name}}Hi {{name}}{{/name}}{{^name}}Hi there{{/name}}" does what a sender
 * means when a variable is sent as "".
 *
 * Whitespace: a line holding only whitespace and exactly one section, inverted, close,
 * comment, partial or set-delimiter tag is "standalone" and removed whole, as the spec
 * (and its Ruby reference) reads it; a line with two such tags is kept. A standalone
 * partial's indentation is written before each non-empty line of the partial (empty
 * lines get none: it would only be trailing whitespace); an inline partial is not
 * indented. Whitespace may stand between the opening delimiter and a # ^ / ! > &
 * sigil ("{{ #items }}"), not before { or =.
 *
 * Interpolation: strings as they are; integers in decimal; reals in the shortest form
 * that reads back to the same double (1.21 -> "1.21", 1.0 -> "1"); true -> "true";
 * null, false, objects and lists -> "" (a template shows scalars, not structures).
 */
#ifndef MD_TEMPLATE_H
#define MD_TEMPLATE_H

#include "md_core.h"
#include "md_buf.h"

#include <jansson.h>

/* Partials may nest (a partial including itself through data recursion) this deep. */
#define MD_TEMPLATE_MAX_PARTIAL_DEPTH 32
/* Sections may nest this deep within one template: deeper is a syntax error. */
#define MD_TEMPLATE_MAX_NESTING 100
/* Templates longer than this are refused by compile (offsets are 32-bit). */
#define MD_TEMPLATE_MAX_SOURCE (64u * 1024 * 1024)

typedef struct md_template_s md_template_t;

typedef enum {
    MD_TEMPLATE_ESCAPE_NONE = 0, /* text and subject parts: {{x}} is written as is */
    MD_TEMPLATE_ESCAPE_HTML = 1  /* html parts: {{x}} escapes & < > " ' */
} md_template_escape_t;

/* Why a compile or a render failed. For syntax errors line and column (1-based;
 * the column counts UTF-8 characters, not bytes) point at the start of the offending
 * tag; render errors have line = column = 0. */
typedef struct md_template_error_s {
    unsigned line;
    unsigned column;
    char msg[160];
} md_template_error_t;

/*
 * Resolves a partial by name ({{> name}}, name trimmed, not NUL-containing; name is
 * NUL-terminated and len excludes the NUL). Returns a compiled template that stays
 * valid and unchanged at least until the render that asked returns (the caller keeps
 * ownership: a cache of compiled templates is the intended owner), or NULL, which
 * renders as the empty string as the spec asks for a failed lookup. Called once per
 * expansion, so a caller without a cache should memoise.
 */
typedef const md_template_t *(*md_template_partial_pt)(void *ctx, const char *name, size_t len);

/*
 * Compiles src[0..len) (need not be NUL-terminated; may contain any bytes). On
 * success *out is a new template the caller frees with md_template_free, and MD_OK
 * is returned. On a syntax error (unclosed tag, unclosed or mismatched section, a
 * close without an open, bad set-delimiter tag, empty tag name or name segment,
 * nesting deeper than MD_TEMPLATE_MAX_NESTING, source over MD_TEMPLATE_MAX_SOURCE)
 * returns MD_ERROR, leaves *out NULL and fills err (when not NULL).
 */
int md_template_compile(const char *src, size_t len, md_template_t **out, md_template_error_t *err);

/*
 * Renders t with data as the root context (NULL means an empty object), appending to
 * out. mode applies to {{x}} in t and in every partial it includes. lookup (may be
 * NULL: every partial is then empty) resolves partials with lookup_ctx.
 * max_out caps the bytes this call appends (0 = no cap); work is capped too, at
 * 2^20 + 16 * max_out executed instructions (2^26 when max_out is 0), so nested
 * sections over large lists that produce little output still stop.
 * Returns MD_OK, or MD_ERROR with err filled (output cap, work cap, partials deeper
 * than MD_TEMPLATE_MAX_PARTIAL_DEPTH); on error out is cut back to the length it had
 * on entry. data is only read (borrowed); t is not modified.
 */
int md_template_render(const md_template_t *t, json_t *data, md_template_escape_t mode,
                       md_template_partial_pt lookup, void *lookup_ctx, size_t max_out,
                       md_buf_t *out, md_template_error_t *err);

/* Number of instructions in t (tests and metrics; 0 only for an empty template). */
size_t md_template_size(const md_template_t *t);

/* Calls fn(ctx, name, len) for each partial tag of t in source order (a name that is
 * used twice comes twice; name is NUL-terminated, len excludes the NUL, and it lives
 * as long as t). Returns the number of partial tags. Lets a cache load every partial
 * a template names before it renders, so rendering needs no I/O. */
size_t md_template_partials(const md_template_t *t,
                            void (*fn)(void *ctx, const char *name, size_t len), void *ctx);

/* Frees t and everything it owns; NULL is allowed. */
void md_template_free(md_template_t *t);

#endif
