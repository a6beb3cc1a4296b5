/*
 * The Mustache compiler and renderer on any template and data: the input is
 * a template, a NUL, then JSON for the data (ignored when it is not JSON).
 * The template also serves as its own partial "p", so recursion is reached.
 * Renders in both escaping modes with an output cap; beyond the sanitizers'
 * checks: a compile error has a position inside the template, an error
 * leaves the output as it was, and the cap holds.
 */
#include "md_buf.h"
#include "md_template.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char md_fuzz_target[] = "template";

#define CAP 65536

static const md_template_t *
self_partial(void *ctx, const char *name, size_t len)
{
    return len == 1 && name[0] == 'p' ? ctx : NULL;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    const char *nul = memchr(s, '\0', size);
    size_t tlen = nul ? (size_t)(nul - s) : size;
    md_template_t *t = NULL;
    md_template_error_t err;
    if (md_template_compile(s, tlen, &t, &err) != MD_OK) {
        if (t != NULL || err.line == 0 || err.column == 0 || err.line > tlen + 1) {
            fprintf(stderr, "a compile error without a position in the template\n");
            abort();
        }
        return 0;
    }
    json_t *vars = NULL;
    if (nul != NULL)
        vars = json_loadb(nul + 1, size - tlen - 1, JSON_DECODE_ANY, NULL);
    for (int mode = 0; mode < 2; mode++) {
        md_buf_t out;
        md_buf_init(&out);
        md_buf_append(&out, "x", 1);
        int rc =
            md_template_render(t, vars, mode ? MD_TEMPLATE_ESCAPE_HTML : MD_TEMPLATE_ESCAPE_NONE,
                               self_partial, t, CAP, &out, &err);
        size_t got = md_buf_len(&out);
        if ((rc != MD_OK && got != 1) || got > CAP + 1) {
            fprintf(stderr, "render: rc %d left %zu bytes (cap %d)\n", rc, got, CAP);
            abort();
        }
        md_buf_free(&out);
    }
    json_decref(vars);
    md_template_free(t);
    return 0;
}
