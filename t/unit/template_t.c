/*
 * Unit tests for md_template: every case of the mustache spec files we support
 * (t/data/mustache-spec), then escape modes, number formatting, syntax errors with
 * line and column, partial indentation and recursion cap, output and work caps, and a
 * bounded fuzz loop (random and mutated templates) meant to run under the sanitizers.
 * MD_FUZZ_SECONDS (default 2) and MD_FUZZ_SEED change the fuzz budget and seed.
 */
#include "md_template.h"
#include "tap.h"

#include <stdlib.h>
#include <time.h>

/* ---- helpers ------------------------------------------------------------------ */

typedef struct {
    const char *name[8];
    const md_template_t *tpl[8];
    size_t n;
    unsigned calls;
} partials_t;

static const md_template_t *
lookup(void *ctx, const char *name, size_t len)
{
    partials_t *p = ctx;
    p->calls++;
    for (size_t i = 0; i < p->n; i++)
        if (strlen(p->name[i]) == len && memcmp(p->name[i], name, len) == 0)
            return p->tpl[i];
    return NULL;
}

/* Compiles and renders; returns a malloc'ed NUL-terminated string, or NULL with err
 * filled. */
static char *
render_ex(const char *src, json_t *data, md_template_escape_t mode, partials_t *parts,
          size_t max_out, md_template_error_t *err)
{
    md_template_t *t;
    if (md_template_compile(src, strlen(src), &t, err) != MD_OK)
        return NULL;
    md_buf_t b;
    md_buf_init(&b);
    int rc = md_template_render(t, data, mode, parts ? lookup : NULL, parts, max_out, &b, err);
    md_template_free(t);
    char *s = NULL;
    if (rc == MD_OK) {
        s = malloc(md_buf_len(&b) + 1);
        memcpy(s, b.pos, md_buf_len(&b));
        s[md_buf_len(&b)] = '\0';
    }
    md_buf_free(&b);
    return s;
}

/* Renders src with data given as JSON text, HTML mode, no partials. */
static void
check(const char *src, const char *json, md_template_escape_t mode, const char *want,
      const char *desc)
{
    json_error_t je;
    json_t *data = json ? json_loads(json, JSON_DECODE_ANY, &je) : NULL;
    md_template_error_t err = {0};
    char *got = render_ex(src, data, mode, NULL, 0, &err);
    is_str(got, want, "%s", desc);
    if (got == NULL)
        printf("#   error: %s (line %u col %u)\n", err.msg, err.line, err.column);
    free(got);
    json_decref(data);
}

static void
check_error(const char *src, unsigned line, unsigned col, const char *msg_part, const char *desc)
{
    md_template_t *t = NULL;
    md_template_error_t err = {0};
    int rc = md_template_compile(src, strlen(src), &t, &err);
    ok(rc == MD_ERROR && t == NULL && err.line == line && err.column == col &&
           strstr(err.msg, msg_part) != NULL,
       "syntax error: %s", desc);
    if (!(rc == MD_ERROR && err.line == line && err.column == col && strstr(err.msg, msg_part)))
        printf("#   rc %d, line %u col %u, msg '%s' (want %u:%u '%s')\n", rc, err.line, err.column,
               err.msg, line, col, msg_part);
    md_template_free(t);
}

/* ---- the spec ----------------------------------------------------------------- */

static void
run_spec_file(const char *file)
{
    const char *dir = getenv("MD_SRCDIR");
    char path[1024];
    snprintf(path, sizeof(path), "%s/t/data/mustache-spec/%s.json", dir ? dir : MD_SRCDIR, file);
    json_error_t je;
    json_t *spec = json_load_file(path, 0, &je);
    ok(spec != NULL, "load %s", path);
    if (spec == NULL) {
        printf("#   %s\n", je.text);
        return;
    }
    json_t *tests = json_object_get(spec, "tests");
    size_t i, passed = 0, total = json_array_size(tests);
    json_t *tc;
    json_array_foreach(tests, i, tc)
    {
        const char *name = json_string_value(json_object_get(tc, "name"));
        json_t *tmpl = json_object_get(tc, "template");
        json_t *expected = json_object_get(tc, "expected");
        partials_t parts = {0};
        int good = 1;
        md_template_error_t err = {0};

        const char *pname;
        json_t *pv;
        json_object_foreach(json_object_get(tc, "partials"), pname, pv)
        {
            md_template_t *pt = NULL;
            if (parts.n == md_nelems(parts.tpl) ||
                md_template_compile(json_string_value(pv), json_string_length(pv), &pt, &err) !=
                    MD_OK) {
                good = 0;
                break;
            }
            parts.name[parts.n] = pname;
            parts.tpl[parts.n++] = pt;
        }

        md_template_t *t = NULL;
        md_buf_t b;
        md_buf_init(&b);
        if (good && md_template_compile(json_string_value(tmpl), json_string_length(tmpl), &t,
                                        &err) != MD_OK)
            good = 0;
        if (good && md_template_render(t, json_object_get(tc, "data"), MD_TEMPLATE_ESCAPE_HTML,
                                       lookup, &parts, 1 << 20, &b, &err) != MD_OK)
            good = 0;
        size_t want_len = json_string_length(expected);
        int same = good && md_buf_len(&b) == want_len &&
                   (want_len == 0 || memcmp(b.pos, json_string_value(expected), want_len) == 0);
        ok(same, "%s: %s", file, name);
        if (!same) {
            if (!good)
                printf("#   error: %s (line %u col %u)\n", err.msg, err.line, err.column);
            else
                printf("#   got:  '%.*s'\n#   want: '%s'\n", (int)md_buf_len(&b), b.pos,
                       json_string_value(expected));
        }
        passed += same;
        md_buf_free(&b);
        md_template_free(t);
        for (size_t k = 0; k < parts.n; k++)
            md_template_free((md_template_t *)parts.tpl[k]);
    }
    printf("# spec %s: %zu/%zu cases pass\n", file, passed, total);
    is_int(passed, total, "%s: every spec case passes (%zu/%zu)", file, passed, total);
    json_decref(spec);
}

/* ---- behaviour beyond the spec ------------------------------------------------- */

static void
test_escape_and_values(void)
{
    const char *data = "{\"x\":\"<a href='u'>&\\\"</a>\"}";
    check("{{x}}", data, MD_TEMPLATE_ESCAPE_HTML, "&lt;a href=&#39;u&#39;&gt;&amp;&quot;&lt;/a&gt;",
          "html mode escapes & < > \" '");
    check("{{x}}", data, MD_TEMPLATE_ESCAPE_NONE, "<a href='u'>&\"</a>",
          "none mode (text, subject) writes variables as they are");
    check("{{{x}}}|{{&x}}", data, MD_TEMPLATE_ESCAPE_HTML,
          "<a href='u'>&\"</a>|<a href='u'>&\"</a>", "triple and ampersand never escape");

    check("{{a}} {{b}} {{c}} {{d}} {{e}} {{f}} {{g}}",
          "{\"a\":1.0,\"b\":1.5,\"c\":-3,\"d\":0.1,\"e\":9007199254740993,\"f\":1e300,\"g\":-0.25}",
          MD_TEMPLATE_ESCAPE_NONE, "1 1.5 -3 0.1 9007199254740993 1e+300 -0.25",
          "numbers: integers exact, reals shortest round-trip");
    check("[{{t}}][{{f}}][{{n}}][{{o}}][{{l}}]",
          "{\"t\":true,\"f\":false,\"n\":null,\"o\":{\"k\":1},\"l\":[1,2]}",
          MD_TEMPLATE_ESCAPE_NONE, "[true][][][][]",
          "true renders 'true'; false, null, objects and lists render empty");
    check("{{#e}}yes{{/e}}{{^e}}no{{/e}} {{#z}}zero{{/z}}", "{\"e\":\"\",\"z\":0}",
          MD_TEMPLATE_ESCAPE_NONE, "no zero", "empty string is falsy, 0 is truthy");
    check("{{ #t }}yes{{ / t }}{{ ^t}}no{{/t}}|{{ &h}}|{{ !c}}|", "{\"t\":1,\"h\":\"<\"}",
          MD_TEMPLATE_ESCAPE_HTML, "yes|<||", "whitespace before a sigil is allowed");
    check("{{#t}}{{/t}}\n{{#t}}\n.{{/t}}\n", "{\"t\":1}", MD_TEMPLATE_ESCAPE_HTML, "\n.\n",
          "two tags on a line: not standalone; one tag: standalone");
    check("Hi {{name}}!", NULL, MD_TEMPLATE_ESCAPE_HTML, "Hi !", "NULL data is an empty context");
    check("{{#list}}{{.}},{{/list}}", "{\"list\":[\"a\",null,3]}", MD_TEMPLATE_ESCAPE_NONE, "a,,3,",
          "null items in a list are iterated and render empty");
    check("{{#o}}{{k}}-{{top}}{{/o}}", "{\"o\":{\"k\":\"in\"},\"top\":\"out\"}",
          MD_TEMPLATE_ESCAPE_NONE, "in-out", "object section pushes a context, parent still seen");

    /* Bytes with NUL and invalid UTF-8 in the template are just text. */
    md_template_t *t;
    md_template_error_t err;
    const char bin[] = "\xff\0{{x}}\xfe";
    ok(md_template_compile(bin, sizeof(bin) - 1, &t, &err) == MD_OK, "binary template compiles");
    md_buf_t b;
    md_buf_init(&b);
    json_t *d = json_pack("{s:s}", "x", "<");
    ok(md_template_render(t, d, MD_TEMPLATE_ESCAPE_HTML, NULL, NULL, 0, &b, &err) == MD_OK &&
           md_buf_len(&b) == 7 && memcmp(b.pos, "\xff\0&lt;\xfe", 7) == 0,
       "binary template renders byte-exact");

    /* One compiled template, many renders: immutable and reusable. */
    md_buf_reset(&b);
    md_template_render(t, d, MD_TEMPLATE_ESCAPE_NONE, NULL, NULL, 0, &b, &err);
    md_template_render(t, d, MD_TEMPLATE_ESCAPE_NONE, NULL, NULL, 0, &b, &err);
    ok(md_buf_len(&b) == 8 && memcmp(b.pos, "\xff\0<\xfe\xff\0<\xfe", 8) == 0,
       "renders append and the template is reusable");
    ok(md_template_size(t) > 0, "md_template_size counts instructions (%zu)", md_template_size(t));
    md_template_free(t);
    md_template_free(NULL);
    json_decref(d);
    md_buf_free(&b);
}

static void
test_errors(void)
{
    check_error("Hello {{name", 1, 7, "unclosed tag", "unclosed variable tag");
    check_error("Hello {{{name}}", 1, 7, "unclosed tag", "triple mustache needs }}}");
    check_error("a\nb {{#s}}x\n", 2, 3, "unclosed section 's'", "unclosed section");
    check_error("{{#a}}{{#b}}{{/a}}{{/b}}", 1, 13,
                "does not match section 'b' opened at line 1, column 7", "mismatched close");
    check_error("x\n\n  {{/a}}", 3, 3, "without an open section", "close without open");
    check_error("{{=<%>=}}", 1, 1, "bad set-delimiter", "one delimiter");
    check_error("{{=<% = %>=}}", 1, 1, "bad set-delimiter", "three delimiters");
    check_error("ok\n {{=a= b=}}", 2, 2, "bad set-delimiter", "delimiter containing =");
    check_error("{{=<% %>=}}\n<%x", 2, 1, "'<%' without a matching '%>'",
                "unclosed tag under new delimiters names them");
    check_error("{{}}", 1, 1, "empty tag name", "empty variable");
    check_error("{{ # }}", 1, 1, "empty tag name", "empty section name");
    check_error("{{>  }}", 1, 1, "empty tag name", "empty partial name");
    check_error("{{{ }}}", 1, 1, "empty tag name", "empty triple");
    check_error("{{a..b}}", 1, 1, "empty segment", "empty name segment");
    check_error("{{#a.}}{{/a.}}", 1, 1, "empty segment", "trailing dot");
    check_error("h\xc3\xa9llo {{x", 1, 7, "unclosed tag", "column counts UTF-8 characters");

    char deep[2000] = "";
    for (int i = 0; i < MD_TEMPLATE_MAX_NESTING + 1; i++)
        strcat(deep, "{{#a}}");
    check_error(deep, 1, 1 + 6 * MD_TEMPLATE_MAX_NESTING, "nested deeper", "nesting cap");

    md_template_error_t err = {0};
    md_template_t *t = (md_template_t *)1;
    ok(md_template_compile("", MD_TEMPLATE_MAX_SOURCE + 1, &t, &err) == MD_ERROR && t == NULL &&
           strstr(err.msg, "longer"),
       "oversized source refused before reading it");
    ok(md_template_compile("", 0, &t, &err) == MD_OK && md_template_size(t) == 0,
       "empty template compiles");
    md_buf_t b;
    md_buf_init(&b);
    ok(md_template_render(t, NULL, MD_TEMPLATE_ESCAPE_HTML, NULL, NULL, 0, &b, &err) == MD_OK &&
           md_buf_len(&b) == 0,
       "empty template renders empty");
    md_template_free(t);
    md_buf_free(&b);
}

static md_template_t *
compile_or_die(const char *s)
{
    md_template_t *t;
    md_template_error_t err;
    if (md_template_compile(s, strlen(s), &t, &err) != MD_OK) {
        printf("Bail out! cannot compile '%s': %s\n", s, err.msg);
        exit(1);
    }
    return t;
}

static void
test_partials(void)
{
    partials_t p = {0};
    p.name[0] = "a";
    p.tpl[0] = compile_or_die("x\n  {{>b}}\nlast{{>c}}\n");
    p.name[1] = "b";
    p.tpl[1] = compile_or_die("y\nz\n");
    p.name[2] = "c";
    p.tpl[2] = compile_or_die("<{{v}}\n{{v}}>");
    p.name[3] = "self";
    p.tpl[3] = compile_or_die("{{>self}}");
    p.name[4] = "ping";
    p.tpl[4] = compile_or_die("{{#t}}.{{>pong}}{{/t}}");
    p.name[5] = "pong";
    p.tpl[5] = compile_or_die("{{>ping}}");
    p.n = 6;
    json_t *d = json_pack("{s:s,s:b}", "v", "<&>", "t", 1);
    md_template_error_t err = {0};

    char *got = render_ex("  {{>a}}\n-\n", d, MD_TEMPLATE_ESCAPE_HTML, &p, 0, &err);
    is_str(got, "  x\n    y\n    z\n  last<&lt;&amp;&gt;\n&lt;&amp;&gt;>\n-\n",
           "standalone indentation accumulates; an inline partial is not indented");
    free(got);

    got = render_ex("{{>a}}", d, MD_TEMPLATE_ESCAPE_NONE, &p, 0, &err);
    is_str(got, "x\n  y\n  z\nlast<<&>\n<&>>\n", "partials render in the caller's escape mode");
    free(got);

    p.name[6] = "gap";
    p.tpl[6] = compile_or_die("a\n\nb\r\n\r\nc");
    p.n = 7;
    got = render_ex("  {{>gap}}\n", d, MD_TEMPLATE_ESCAPE_HTML, &p, 0, &err);
    is_str(got, "  a\n\n  b\r\n\r\n  c", "empty lines of a partial get no indentation");
    free(got);

    got = render_ex("[{{>missing}}]", d, MD_TEMPLATE_ESCAPE_HTML, NULL, 0, &err);
    is_str(got, "[]", "no lookup function: partials are empty");
    free(got);

    md_buf_t b;
    md_buf_init(&b);
    md_buf_append_str(&b, "keep");
    md_template_t *t = compile_or_die("before {{>self}} after");
    int rc = md_template_render(t, d, MD_TEMPLATE_ESCAPE_HTML, lookup, &p, 0, &b, &err);
    ok(rc == MD_ERROR && strstr(err.msg, "deeper than 32") && strstr(err.msg, "'self'") &&
           err.line == 0,
       "self-recursive partial stops at depth %d: %s", MD_TEMPLATE_MAX_PARTIAL_DEPTH, err.msg);
    ok(md_buf_len(&b) == 4 && memcmp(b.pos, "keep", 4) == 0,
       "failed render leaves the buffer as it was");
    md_template_free(t);

    t = compile_or_die("{{>ping}}");
    p.calls = 0;
    rc = md_template_render(t, d, MD_TEMPLATE_ESCAPE_HTML, lookup, &p, 0, &b, &err);
    ok(rc == MD_ERROR && strstr(err.msg, "deeper than"), "mutual recursion stops too");
    is_int(p.calls, MD_TEMPLATE_MAX_PARTIAL_DEPTH + 1, "lookup called once per expansion");
    md_template_free(t);

    /* A chain of distinct partials, each including the next. */
    partials_t chain = {0};
    static const char *const names[8] = {"p0", "p1", "p2", "p3", "p4", "p5", "p6", "p7"};
    static const char *const srcs[8] = {"0{{>p1}}", "1{{>p2}}", "2{{>p3}}", "3{{>p4}}",
                                        "4{{>p5}}", "5{{>p6}}", "6{{>p7}}", "7"};
    for (int i = 0; i < 8; i++) {
        chain.name[i] = names[i];
        chain.tpl[i] = compile_or_die(srcs[i]);
    }
    chain.n = 8;
    got = render_ex("{{>p0}}", d, MD_TEMPLATE_ESCAPE_HTML, &chain, 0, &err);
    is_str(got, "01234567", "a chain of partials renders");
    free(got);
    for (size_t i = 0; i < chain.n; i++)
        md_template_free((md_template_t *)chain.tpl[i]);

    for (size_t i = 0; i < p.n; i++)
        md_template_free((md_template_t *)p.tpl[i]);
    md_buf_free(&b);
    json_decref(d);
}

static void
test_caps(void)
{
    json_t *l = json_array();
    for (int i = 0; i < 1000; i++)
        json_array_append_new(l, json_integer(i));
    json_t *d = json_pack("{s:o}", "l", l);
    md_template_error_t err = {0};
    md_buf_t b;
    md_buf_init(&b);
    md_buf_append_str(&b, "keep");

    md_template_t *t = compile_or_die("{{#l}}{{#l}}{{#l}}xxxxxxxx{{/l}}{{/l}}{{/l}}");
    clock_t t0 = clock();
    int rc = md_template_render(t, d, MD_TEMPLATE_ESCAPE_NONE, NULL, NULL, 65536, &b, &err);
    ok(rc == MD_ERROR && strstr(err.msg, "exceeds 65536 bytes"),
       "nested sections over a large list hit the output cap: %s", err.msg);
    ok(md_buf_len(&b) == 4, "output cut back to its length on entry");
    md_template_free(t);

    t = compile_or_die("{{#l}}{{#l}}{{#l}}{{#l}}{{/l}}{{/l}}{{/l}}{{/l}}");
    rc = md_template_render(t, d, MD_TEMPLATE_ESCAPE_NONE, NULL, NULL, 65536, &b, &err);
    ok(rc == MD_ERROR && strstr(err.msg, "steps"), "work without output hits the step cap: %s",
       err.msg);
    md_template_free(t);
    double secs = (double)(clock() - t0) / CLOCKS_PER_SEC;
    ok(secs < 5.0, "both caps stop quickly (%.2f s)", secs);

    t = compile_or_die("{{#l}}{{.}}{{/l}}");
    md_buf_reset(&b);
    rc = md_template_render(t, d, MD_TEMPLATE_ESCAPE_NONE, NULL, NULL, 2890, &b, &err);
    ok(rc == MD_OK && md_buf_len(&b) == 2890, "output exactly at the cap is accepted");
    md_buf_reset(&b);
    rc = md_template_render(t, d, MD_TEMPLATE_ESCAPE_NONE, NULL, NULL, 2889, &b, &err);
    ok(rc == MD_ERROR && md_buf_len(&b) == 0, "one byte over is refused");
    md_template_free(t);

    /* The cap also holds inside escaping, and err may be NULL everywhere. */
    json_t *h = json_pack("{s:s}", "h", "<<<<<<<<<<");
    t = compile_or_die("ab{{h}}");
    md_buf_reset(&b);
    rc = md_template_render(t, h, MD_TEMPLATE_ESCAPE_HTML, NULL, NULL, 20, &b, NULL);
    ok(rc == MD_ERROR && md_buf_len(&b) == 0, "cap counts escaped bytes; NULL err is allowed");
    md_buf_reset(&b);
    rc = md_template_render(t, h, MD_TEMPLATE_ESCAPE_HTML, NULL, NULL, 8, &b, NULL);
    ok(rc == MD_ERROR && md_buf_len(&b) == 0, "cap hit in the middle of an entity run");
    md_template_free(t);
    json_decref(h);
    md_template_t *bad = (md_template_t *)1;
    ok(md_template_compile("{{#x}}", 6, &bad, NULL) == MD_ERROR && bad == NULL,
       "syntax error with a NULL err");

    md_buf_free(&b);
    json_decref(d);
}

/* ---- fuzz ----------------------------------------------------------------------- */

static uint64_t rng_state;

static uint32_t
rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 11);
}

static const char *const fragments[] = {
    "{{",        "}}",     "{{{",    "}}}",         "{{#",    "{{^",    "{{/",      "{{!",
    "{{>",       "{{&",    "{{=",    "=}}",         "<%",     "%>",     "a",        "b",
    "l",         ".",      "a.b",    " ",           "\n",     "\r\n",   "\t",       "x",
    "|",         "=",      "{",      "}",           "{{#a}}", "{{/a}}", "{{#l}}",   "{{/l}}",
    "{{>p}}",    "{{>q}}", "{{.}}",  "{{=<% %>=}}", "<%#a%>", "<%/a%>", "\xc3\xa9", "\xff",
    "{{a.b.c}}", "{{^n}}", "{{/n}}", "  {{>p}}\n"};

static void
random_template(char *buf, size_t cap, size_t *len)
{
    size_t n = 0, parts = rng() % 24;
    for (size_t i = 0; i < parts; i++) {
        const char *f = fragments[rng() % md_nelems(fragments)];
        size_t fl = strlen(f);
        if (n + fl >= cap)
            break;
        memcpy(buf + n, f, fl);
        n += fl;
    }
    *len = n;
}

/* Mutates buf in place: flip, insert or delete a few bytes. */
static void
mutate(char *buf, size_t cap, size_t *len)
{
    int k = 1 + (int)(rng() % 4);
    while (k--) {
        size_t n = *len, at = n ? rng() % n : 0;
        switch (rng() % 3) {
        case 0:
            if (n)
                buf[at] = "{}#^/!>&=.\n a"[rng() % 13];
            break;
        case 1:
            if (n + 1 < cap) {
                memmove(buf + at + 1, buf + at, n - at);
                buf[at] = "{}#^/!>&=.\n a"[rng() % 13];
                (*len)++;
            }
            break;
        default:
            if (n) {
                memmove(buf + at, buf + at + 1, n - at - 1);
                (*len)--;
            }
        }
    }
}

static void
test_fuzz(json_t *spec_templates)
{
    const char *secs_env = getenv("MD_FUZZ_SECONDS");
    const char *seed_env = getenv("MD_FUZZ_SEED");
    double budget = secs_env ? atof(secs_env) : 2.0;
    rng_state = seed_env ? strtoull(seed_env, NULL, 10) : (uint64_t)time(NULL);
    if (rng_state == 0)
        rng_state = 1;
    uint64_t seed = rng_state;

    json_error_t je;
    json_t *data =
        json_loads("{\"a\":{\"b\":{\"c\":\"<deep>\"}},\"l\":[1,{\"a\":\"x\"},[2,3],\"\"],"
                   "\"n\":null,\"t\":true,\"s\":\"s&s\",\"e\":[]}",
                   0, &je);
    char buf[4096], pbuf[2][512];
    size_t len, plen[2];
    unsigned long iters = 0, compiled = 0, rendered = 0, bad = 0;
    clock_t start = clock();
    md_buf_t out;
    md_buf_init(&out);

    while ((double)(clock() - start) / CLOCKS_PER_SEC < budget) {
        iters++;
        size_t ns = json_array_size(spec_templates);
        if (ns && rng() % 2) {
            json_t *s = json_array_get(spec_templates, rng() % ns);
            len = md_min(json_string_length(s), sizeof(buf) - 64);
            memcpy(buf, json_string_value(s), len);
            mutate(buf, sizeof(buf), &len);
        } else {
            random_template(buf, sizeof(buf), &len);
        }
        random_template(pbuf[0], sizeof(pbuf[0]), &plen[0]);
        random_template(pbuf[1], sizeof(pbuf[1]), &plen[1]);

        /* Exact-size heap copies so ASan sees any read past the end. */
        char *src = malloc(len ? len : 1);
        memcpy(src, buf, len);
        md_template_t *t = NULL;
        md_template_error_t err = {0};
        int rc = md_template_compile(src, len, &t, &err);
        if (rc != MD_OK) {
            size_t lines = 1;
            for (size_t i = 0; i < len; i++)
                lines += buf[i] == '\n';
            if (t != NULL || err.line < 1 || err.line > lines || err.column < 1 ||
                err.column > len + 1 || err.msg[0] == '\0')
                bad++;
            free(src);
            continue;
        }
        compiled++;
        partials_t p = {0};
        for (int i = 0; i < 2; i++) {
            char *ps = malloc(plen[i] ? plen[i] : 1);
            memcpy(ps, pbuf[i], plen[i]);
            md_template_t *pt;
            if (md_template_compile(ps, plen[i], &pt, &err) == MD_OK) {
                p.name[p.n] = i ? "q" : "p";
                p.tpl[p.n++] = pt;
            }
            free(ps);
        }
        p.name[p.n] = "self";
        p.tpl[p.n++] = t;
        free(src); /* the template must own its copy */
        for (int mode = 0; mode < 2; mode++) {
            md_buf_reset(&out);
            rc = md_template_render(t, data, (md_template_escape_t)mode, lookup, &p, 65536, &out,
                                    &err);
            if (rc == MD_OK)
                rendered++;
            else if (md_buf_len(&out) != 0 || err.msg[0] == '\0')
                bad++;
        }
        for (size_t i = 0; i < p.n; i++)
            md_template_free((md_template_t *)p.tpl[i]);
    }

    /* A template without tags renders as itself. */
    unsigned long plain_bad = 0;
    for (int i = 0; i < 200; i++) {
        size_t n = rng() % 300;
        for (size_t k = 0; k < n; k++) {
            buf[k] = (char)(rng() % 256);
            if (buf[k] == '{')
                buf[k] = '(';
        }
        md_template_t *t;
        md_template_error_t err;
        md_buf_reset(&out);
        if (md_template_compile(buf, n, &t, &err) != MD_OK ||
            md_template_render(t, data, MD_TEMPLATE_ESCAPE_HTML, NULL, NULL, 0, &out, &err) !=
                MD_OK ||
            md_buf_len(&out) != n || (n && memcmp(out.pos, buf, n) != 0))
            plain_bad++;
        md_template_free(t);
    }

    printf("# fuzz seed %llu: %lu templates, %lu compiled, %lu renders ok\n",
           (unsigned long long)seed, iters, compiled, rendered);
    ok(bad == 0 && iters > 100, "fuzz: %lu templates without a bad error or crash (seed %llu)",
       iters, (unsigned long long)seed);
    is_int(plain_bad, 0, "fuzz: templates without tags render as themselves");
    md_buf_free(&out);
    json_decref(data);
}

int
main(void)
{
    static const char *const files[] = {"interpolation", "sections", "inverted",
                                        "comments",      "partials", "delimiters"};
    for (size_t i = 0; i < md_nelems(files); i++)
        run_spec_file(files[i]);

    test_escape_and_values();
    test_errors();
    test_partials();
    test_caps();

    /* Seed the mutation fuzzer with every spec template and partial. */
    json_t *seeds = json_array();
    for (size_t i = 0; i < md_nelems(files); i++) {
        const char *dir = getenv("MD_SRCDIR");
        char path[1024];
        snprintf(path, sizeof(path), "%s/t/data/mustache-spec/%s.json", dir ? dir : MD_SRCDIR,
                 files[i]);
        json_t *spec = json_load_file(path, 0, NULL);
        size_t k;
        json_t *tc;
        json_array_foreach(json_object_get(spec, "tests"), k, tc)
        {
            json_array_append(seeds, json_object_get(tc, "template"));
            const char *pn;
            json_t *pv;
            json_object_foreach(json_object_get(tc, "partials"), pn, pv)
                json_array_append(seeds, pv);
        }
        json_decref(spec);
    }
    test_fuzz(seeds);
    json_decref(seeds);
    return done_testing();
}
