/*
 * Unit tests for md_track: token round trips in both encodings, every single-byte
 * change and truncation refused, key rotation, HTML rewriting on a set of cases with
 * exact expected output (quotes, entities, case, notrack, mailto, comments, raw text,
 * malformed and nested tags, the open pixel), links mapping back to the original URL,
 * a bounded fuzz run (exact-size heap copies, so the sanitizers catch any read
 * outside the input), List-Unsubscribe headers, and the one-click POST bodies as
 * Gmail and Yahoo send them. MD_FUZZ_SECONDS (default 2) and MD_FUZZ_SEED change the
 * fuzz budget and seed.
 */
#include "md_track.h"
#include "tap.h"

#include <stdlib.h>
#include <time.h>

static const uint8_t secret_a[32] = "0123456789abcdef0123456789abcdef";
static const uint8_t secret_b[32] = "fedcba9876543210fedcba9876543210";
static const uint8_t msgid[16] = {0x01, 0x8f, 0x3c, 0x2a, 0x7b, 0x11, 0x70, 0x00,
                                  0x80, 0x00, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff};

static md_track_key_t key_a = {1, secret_a, sizeof(secret_a)};
static md_track_key_t key_b = {2, secret_b, sizeof(secret_b)};

#define BASE "https://t.example.com"

/* ---- tokens ------------------------------------------------------------------------ */

static void
test_roundtrip(void)
{
    md_track_keys_t keys = {key_a, {0, NULL, 0}};
    md_track_kind_t kinds[] = {MD_TRACK_CLICK, MD_TRACK_OPEN, MD_TRACK_UNSUBSCRIBE};
    uint16_t links[] = {0, 1, 999, 65535};
    for (size_t k = 0; k < 3; k++)
        for (size_t l = 0; l < (kinds[k] == MD_TRACK_CLICK ? 4u : 1u); l++) {
            md_track_token_t t = {.kind = kinds[k], .link = links[l]}, got;
            memcpy(t.msgid, msgid, 16);
            char s[MD_TRACK_TOKEN_SIZE], b[MD_TRACK_TOKEN_SIZE];
            size_t n = md_track_token_make(&key_a, &t, s);
            size_t nb = md_track_token_make_b32(&key_a, &t, b);
            is_int(n, kinds[k] == MD_TRACK_CLICK ? 50 : 47, "kind %d link %u: base64url length",
                   kinds[k], links[l]);
            is_int(nb, kinds[k] == MD_TRACK_CLICK ? 60 : 56, "kind %d: base32 length", kinds[k]);
            is_int(strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"), n,
                   "token is URL-safe");
            int rc = md_track_token_parse(&keys, s, n, &got);
            ok(rc == MD_OK && got.kind == kinds[k] && got.link == links[l] && got.key_id == 1 &&
                   memcmp(got.msgid, msgid, 16) == 0,
               "kind %d link %u: round trip", kinds[k], links[l]);
            rc = md_track_token_parse_b32(&keys, b, nb, &got);
            ok(rc == MD_OK && got.kind == kinds[k] && got.link == links[l] &&
                   memcmp(got.msgid, msgid, 16) == 0,
               "kind %d: base32 round trip", kinds[k]);
            /* Upper case base32 (a mail system may change case) still verifies. */
            for (size_t i = 0; i < nb; i++)
                if (b[i] >= 'a' && b[i] <= 'z')
                    b[i] = (char)(b[i] - 32);
            ok(md_track_token_parse_b32(&keys, b, nb, &got) == MD_OK, "base32 in upper case");
            /* The base64url parser does not take the base32 form and vice versa. */
            ok(md_track_token_parse(&keys, b, nb, &got) == MD_DECLINED &&
                   md_track_token_parse_b32(&keys, s, n, &got) == MD_DECLINED,
               "encodings are not interchangeable");
        }
    md_track_token_t bad = {.kind = 7};
    char s[MD_TRACK_TOKEN_SIZE];
    is_int(md_track_token_make(&key_a, &bad, s), 0, "unknown kind refused");
    md_track_key_t shortkey = {3, secret_a, 8};
    md_track_token_t t = {.kind = MD_TRACK_OPEN};
    is_int(md_track_token_make(&shortkey, &t, s), 0, "short secret refused");
}

/* Every changed byte (all 255 other values at every position), every truncation and
 * an extension must be refused. */
static void
test_tamper(void)
{
    md_track_keys_t keys = {key_a, {0, NULL, 0}};
    md_track_kind_t kinds[] = {MD_TRACK_CLICK, MD_TRACK_OPEN, MD_TRACK_UNSUBSCRIBE};
    for (size_t k = 0; k < 3; k++) {
        md_track_token_t t = {.kind = kinds[k], .link = 3}, got;
        memcpy(t.msgid, msgid, 16);
        char s[MD_TRACK_TOKEN_SIZE], m[MD_TRACK_TOKEN_SIZE + 1];
        size_t n = md_track_token_make(&key_a, &t, s);
        unsigned accepted = 0, tried = 0;
        for (size_t i = 0; i < n; i++)
            for (int v = 0; v < 256; v++) {
                if ((char)v == s[i])
                    continue;
                memcpy(m, s, n);
                m[i] = (char)v;
                tried++;
                if (md_track_token_parse(&keys, m, n, &got) != MD_DECLINED)
                    accepted++;
            }
        ok(accepted == 0 && tried == n * 255, "kind %d: all %u single-byte changes refused",
           kinds[k], tried);
        accepted = 0;
        for (size_t l = 0; l < n; l++)
            if (md_track_token_parse(&keys, s, l, &got) != MD_DECLINED)
                accepted++;
        memcpy(m, s, n);
        m[n] = 'A';
        if (md_track_token_parse(&keys, m, n + 1, &got) != MD_DECLINED)
            accepted++;
        ok(accepted == 0, "kind %d: every truncation and an extension refused", kinds[k]);
        ok(md_track_token_parse(&keys, s, n, &got) == MD_OK, "kind %d: the original passes",
           kinds[k]);

        /* The base32 form: any change other than letter case is refused. */
        n = md_track_token_make_b32(&key_a, &t, s);
        accepted = 0;
        for (size_t i = 0; i < n; i++)
            for (int v = 0; v < 256; v++) {
                if ((char)v == s[i] || (s[i] >= 'a' && s[i] <= 'z' && v == s[i] - 32))
                    continue;
                memcpy(m, s, n);
                m[i] = (char)v;
                if (md_track_token_parse_b32(&keys, m, n, &got) != MD_DECLINED)
                    accepted++;
            }
        for (size_t l = 0; l < n; l++)
            if (md_track_token_parse_b32(&keys, s, l, &got) != MD_DECLINED)
                accepted++;
        ok(accepted == 0, "kind %d: base32 changes and truncations refused", kinds[k]);
    }
    /* A click token's bytes re-signed as another kind by someone without the key is
     * covered by the MAC; here: a token is never valid under another key. */
    md_track_token_t t = {.kind = MD_TRACK_CLICK};
    md_track_token_t got;
    char s[MD_TRACK_TOKEN_SIZE];
    size_t n = md_track_token_make(&key_a, &t, s);
    md_track_key_t same_id_other_secret = {1, secret_b, sizeof(secret_b)};
    md_track_keys_t other = {same_id_other_secret, {0, NULL, 0}};
    ok(md_track_token_parse(&other, s, n, &got) == MD_DECLINED && got.kind == 0,
       "same key id, other secret: refused and output zeroed");
    ok(md_track_token_parse(NULL, s, n, &got) == MD_DECLINED, "no keys: refused");
}

static void
test_rotation(void)
{
    md_track_token_t t = {.kind = MD_TRACK_CLICK, .link = 7}, got;
    memcpy(t.msgid, msgid, 16);
    char old[MD_TRACK_TOKEN_SIZE], cur[MD_TRACK_TOKEN_SIZE];
    size_t no = md_track_token_make(&key_a, &t, old);
    size_t nc = md_track_token_make(&key_b, &t, cur);
    ok(strcmp(old, cur) != 0, "tokens under two keys differ");

    md_track_keys_t rotated = {key_b, key_a};
    ok(md_track_token_parse(&rotated, old, no, &got) == MD_OK && got.key_id == 1 && got.link == 7,
       "after rotation: a token under the previous key verifies (key id 1)");
    ok(md_track_token_parse(&rotated, cur, nc, &got) == MD_OK && got.key_id == 2,
       "after rotation: a token under the current key verifies (key id 2)");
    md_track_keys_t dropped = {key_b, {0, NULL, 0}};
    ok(md_track_token_parse(&dropped, old, no, &got) == MD_DECLINED,
       "previous key dropped: its tokens are refused");
    md_track_keys_t before = {key_a, {0, NULL, 0}};
    ok(md_track_token_parse(&before, cur, nc, &got) == MD_DECLINED,
       "a token under an unknown key id is refused");
    /* The previous key's id with the current secret: the id picks the secret. */
    md_track_key_t liar = {2, secret_a, sizeof(secret_a)};
    md_track_keys_t mixed = {key_b, liar};
    ok(md_track_token_parse(&mixed, old, no, &got) == MD_DECLINED,
       "a token verifies only under the secret its id names");
}

/* ---- HTML -------------------------------------------------------------------------- */

/* Expands {C0}..{C9} to BASE/t/c/<click token i> and {O} to the open pixel. */
static char *
expand(const char *tpl)
{
    md_buf_t b;
    md_buf_init(&b);
    for (const char *p = tpl; *p; p++) {
        if (p[0] == '{' && p[1] == 'C' && p[2] >= '0' && p[2] <= '9' && p[3] == '}') {
            md_track_token_t t = {.kind = MD_TRACK_CLICK, .link = (uint16_t)(p[2] - '0')};
            memcpy(t.msgid, msgid, 16);
            char s[MD_TRACK_TOKEN_SIZE];
            md_track_token_make(&key_a, &t, s);
            md_buf_printf(&b, "%s/t/c/%s", BASE, s);
            p += 3;
        } else if (p[0] == '{' && p[1] == 'O' && p[2] == '}') {
            md_track_token_t t = {.kind = MD_TRACK_OPEN};
            memcpy(t.msgid, msgid, 16);
            char s[MD_TRACK_TOKEN_SIZE];
            md_track_token_make(&key_a, &t, s);
            md_buf_printf(&b,
                          "<img src=\"%s/t/o/%s\" width=\"1\" height=\"1\" alt=\"\" "
                          "style=\"display:none\">",
                          BASE, s);
            p += 2;
        } else {
            md_buf_append(&b, p, 1);
        }
    }
    md_buf_append(&b, "", 1);
    char *r = md_xstrdup(b.pos);
    md_buf_free(&b);
    return r;
}

/* Rewrites html (an exact-size heap copy) and returns the output as a string. */
static char *
rewrite(const char *html, size_t len, bool clicks, bool opens, md_track_links_t *links)
{
    md_track_html_opts_t o = {&key_a, msgid, md_string(BASE), clicks, opens};
    char *in = malloc(len ? len : 1);
    memcpy(in, html, len);
    md_buf_t out;
    md_buf_init(&out);
    int rc = md_track_rewrite_html(&o, in, len, &out, links);
    free(in);
    char *r = NULL;
    if (rc == MD_OK) {
        md_buf_append(&out, "", 1);
        r = md_xstrdup(out.pos);
    }
    md_buf_free(&out);
    return r;
}

/* One case: input, expected output (with placeholders), and the expected URLs. */
static void
check(const char *desc, const char *html, const char *want_tpl, const char *const *urls)
{
    md_track_links_t links = {0};
    char *got = rewrite(html, strlen(html), true, false, &links);
    char *want = expand(want_tpl);
    is_str(got, want, "rewrite: %s", desc);
    size_t nurls = 0;
    while (urls && urls[nurls])
        nurls++;
    bool same = links.n == nurls;
    for (size_t i = 0; same && i < nurls; i++)
        same = links.len[i] == strlen(urls[i]) && strcmp(links.url[i], urls[i]) == 0;
    ok(same, "rewrite: %s: links map to the original URLs", desc);
    if (!same)
        for (size_t i = 0; i < links.n; i++)
            printf("#   link %zu: '%s'\n", i, links.url[i]);
    free(got);
    free(want);
    md_track_links_free(&links);
}

#define URLS(...) ((const char *const[]){__VA_ARGS__, NULL})

static void
test_rewrite(void)
{
    check("double quotes", "<p><a href=\"https://ex.com/a?x=1&amp;y=2\">A</a></p>",
          "<p><a href=\"{C0}\">A</a></p>", URLS("https://ex.com/a?x=1&y=2"));
    check("single quotes, upper case", "<A HREF='http://ex.com/b'>B</A>", "<A HREF=\"{C0}\">B</A>",
          URLS("http://ex.com/b"));
    check("unquoted, mixed case scheme", "<a class=x hReF=HTTPS://Ex.com/c>C</a>",
          "<a class=x hReF=\"{C0}\">C</a>", URLS("HTTPS://Ex.com/c"));
    check("spaces around =", "<a href = \"https://ex.com/d\" >D</a>", "<a href = \"{C0}\" >D</a>",
          URLS("https://ex.com/d"));
    check("numeric and named entities in the scheme",
          "<a href=\"https&#x3a;//ex.com/&#58;&colon;&#X41;&#65\">E</a>", "<a href=\"{C0}\">E</a>",
          URLS("https://ex.com/::AA"));
    check("legacy entities: &copy= kept, &amp without ; decoded before non-alnum",
          "<a href=\"https://ex.com/?a=1&copy=2&ampb=3&amp&c=&lt\">F</a>", "<a href=\"{C0}\">F</a>",
          URLS("https://ex.com/?a=1&copy=2&ampb=3&&c=<"));
    check("odd numeric references",
          "<a href=\"https://ex.com/&#0;&#x80;&#xD800;&#x110000;&#;&#x;&#99999999999;\">G</a>",
          "<a href=\"{C0}\">G</a>",
          URLS("https://ex.com/\xef\xbf\xbd\xe2\x82\xac\xef\xbf\xbd\xef\xbf\xbd&#;&#x;"
               "\xef\xbf\xbd"));
    check("unknown entity stays", "<a href=\"https://ex.com/?q=&bogus;&\">H</a>",
          "<a href=\"{C0}\">H</a>", URLS("https://ex.com/?q=&bogus;&"));
    check("surrounding whitespace and inner newlines removed",
          "<a href=\"  \n https://ex.com/\n/i\t \">I</a>", "<a href=\"{C0}\">I</a>",
          URLS("https://ex.com//i"));
    check("entity-encoded scheme-relative and javascript: left alone",
          "<a href=\"//ex.com/x\">1</a><a href=\"javascript:alert(1)\">2</a>"
          "<a href=\"http:ex.com\">3</a><a href=\"https://\">4</a>",
          "<a href=\"//ex.com/x\">1</a><a href=\"javascript:alert(1)\">2</a>"
          "<a href=\"http:ex.com\">3</a><a href=\"https://\">4</a>",
          NULL);
    check("mailto, tel, anchor, relative left alone",
          "<a href=\"mailto:a@ex.com\">m</a><a href='tel:+1'>t</a><a href=#top>#</a>"
          "<a href=\"/rel\">r</a><a href=\"page.html\">p</a><a>none</a><a href>empty</a>",
          "<a href=\"mailto:a@ex.com\">m</a><a href='tel:+1'>t</a><a href=#top>#</a>"
          "<a href=\"/rel\">r</a><a href=\"page.html\">p</a><a>none</a><a href>empty</a>",
          NULL);
    check("data-mailerd-notrack in any case and position",
          "<a href=\"https://ex.com/1\" data-mailerd-notrack>1</a>"
          "<a DATA-MAILERD-NOTRACK=\"yes\" href=\"https://ex.com/2\">2</a>"
          "<a href=\"https://ex.com/3\">3</a>",
          "<a href=\"https://ex.com/1\" data-mailerd-notrack>1</a>"
          "<a DATA-MAILERD-NOTRACK=\"yes\" href=\"https://ex.com/2\">2</a>"
          "<a href=\"{C0}\">3</a>",
          URLS("https://ex.com/3"));
    check("comments, script and style untouched",
          "<!-- <a href=\"https://ex.com/c\">c</a> --><!--><a href=\"https://ex.com/1\">1</a>"
          "<script>var s='<a href=\"https://ex.com/s\">';</script>"
          "<STYLE>a[href=\"https://ex.com/y\"]{}</style ><a href=\"https://ex.com/2\">2</a>",
          "<!-- <a href=\"https://ex.com/c\">c</a> --><!--><a href=\"{C0}\">1</a>"
          "<script>var s='<a href=\"https://ex.com/s\">';</script>"
          "<STYLE>a[href=\"https://ex.com/y\"]{}</style ><a href=\"{C1}\">2</a>",
          URLS("https://ex.com/1", "https://ex.com/2"));
    check("duplicate href: the first wins",
          "<a href=\"https://ex.com/first\" href=\"https://evil.example/\">x</a>",
          "<a href=\"{C0}\" href=\"https://evil.example/\">x</a>", URLS("https://ex.com/first"));
    check("no space after a quoted value, slash separators",
          "<a href=\"https://ex.com/a\"class=x>1</a><a/href='https://ex.com/b'/>2</a>",
          "<a href=\"{C0}\"class=x>1</a><a/href=\"{C1}\"/>2</a>",
          URLS("https://ex.com/a", "https://ex.com/b"));
    check("nested and malformed tags",
          "<a href=\"https://ex.com/1\"><a href=\"https://ex.com/2\">x</a></a>"
          "<a <a href=\"https://ex.com/3\">y</a><abbr href=\"https://ex.com/no\">z</abbr>"
          "<a href=\"https://ex.com/4\" title='>'>w</a>< a href=\"https://ex.com/no\">",
          "<a href=\"{C0}\"><a href=\"{C1}\">x</a></a>"
          "<a <a href=\"{C2}\">y</a><abbr href=\"https://ex.com/no\">z</abbr>"
          "<a href=\"{C3}\" title='>'>w</a>< a href=\"https://ex.com/no\">",
          URLS("https://ex.com/1", "https://ex.com/2", "https://ex.com/3", "https://ex.com/4"));
    check("a '>' inside a quoted value of another attribute",
          "<a title=\"a > b\" href=\"https://ex.com/t\">t</a>",
          "<a title=\"a > b\" href=\"{C0}\">t</a>", URLS("https://ex.com/t"));
    check("unterminated tag left as is", "<p>x</p><a href=\"https://ex.com/cut\"",
          "<p>x</p><a href=\"https://ex.com/cut\"", NULL);
    check("unterminated quote left as is", "<a href=\"https://ex.com/cut>x</a>",
          "<a href=\"https://ex.com/cut>x</a>", NULL);
    check("unterminated comment", "<a href=https://ex.com/1>1</a><!-- <a href=https://ex.com/2>",
          "<a href=\"{C0}\">1</a><!-- <a href=https://ex.com/2>", URLS("https://ex.com/1"));
    check("doctype, processing instruction, CDATA, bogus end tags",
          "<!DOCTYPE html><?xml x?><![CDATA[<a href=\"https://ex.com/no\">]]>"
          "</ a><a href=\"https://ex.com/yes\"></>x",
          "<!DOCTYPE html><?xml x?><![CDATA[<a href=\"https://ex.com/no\">]]>"
          "</ a><a href=\"{C0}\"></>x",
          URLS("https://ex.com/yes"));
    check("non-ASCII URL kept as bytes", "<a href=\"https://ex.com/caf\xc3\xa9?q=&eacute;\">c</a>",
          "<a href=\"{C0}\">c</a>", URLS("https://ex.com/caf\xc3\xa9?q=\xc3\xa9"));
    check("control character in the URL: left untracked",
          "<a href=\"https://ex.com/\x01x\">c</a><a href=\"https://ex.com/&#1;y\">d</a>",
          "<a href=\"https://ex.com/\x01x\">c</a><a href=\"https://ex.com/&#1;y\">d</a>", NULL);
    check("leading and trailing controls stripped as the URL parser does",
          "<a href=\"&#1; https://ex.com/e&#31;\">e</a>", "<a href=\"{C0}\">e</a>",
          URLS("https://ex.com/e"));
    check("empty input", "", "", NULL);

    /* The open pixel. */
    struct {
        const char *in, *want, *desc;
    } px[] = {
        {"<html><body><p>hi</p></body></html>", "<html><body><p>hi</p>{O}</body></html>",
         "before </body>"},
        {"<BODY>x</BODY >", "<BODY>x{O}</BODY >", "</BODY > in upper case"},
        {"<p>no body</p>", "<p>no body</p>{O}", "at the end without </body>"},
        {"<!-- </body> --><script></body></script>x</body>",
         "<!-- </body> --><script></body></script>x{O}</body>", "not inside a comment or script"},
        {"x</body></body>", "x{O}</body></body>", "only once"},
        {"", "{O}", "empty input"},
    };
    for (size_t i = 0; i < md_nelems(px); i++) {
        md_track_links_t links = {0};
        char *got = rewrite(px[i].in, strlen(px[i].in), false, true, &links);
        char *want = expand(px[i].want);
        is_str(got, want, "pixel: %s", px[i].desc);
        free(got);
        free(want);
        md_track_links_free(&links);
    }

    /* Both, and neither. */
    const char *doc = "<body><a href=\"https://ex.com/\">x</a></body>";
    md_track_links_t links = {0};
    char *got = rewrite(doc, strlen(doc), true, true, &links);
    char *want = expand("<body><a href=\"{C0}\">x</a>{O}</body>");
    is_str(got, want, "clicks and opens together");
    free(got);
    free(want);
    md_track_links_free(&links);
    got = rewrite(doc, strlen(doc), false, false, &links);
    is_str(got, doc, "neither: the HTML is unchanged");
    is_int(links.n, 0, "neither: no links");
    free(got);

    /* A trailing slash on the base; bad options. */
    md_track_html_opts_t o = {&key_a, msgid, md_string(BASE "//"), true, false};
    md_buf_t out;
    md_buf_init(&out);
    ok(md_track_rewrite_html(&o, doc, strlen(doc), &out, &links) == MD_OK &&
           memmem(out.pos, md_buf_len(&out), BASE "/t/c/", strlen(BASE "/t/c/")) != NULL &&
           memmem(out.pos, md_buf_len(&out), "//t/c/", 6) == NULL,
       "a trailing slash on the base is dropped");
    md_track_links_free(&links);
    const char *bad_bases[] = {"ftp://x",     "https://t.example.com/\"x",
                               "https://a b", "t.example",
                               "https://x/<", "https://x/&"};
    for (size_t i = 0; i < md_nelems(bad_bases); i++) {
        o.base.data = bad_bases[i];
        o.base.len = strlen(bad_bases[i]);
        md_buf_reset(&out);
        ok(md_track_rewrite_html(&o, doc, strlen(doc), &out, &links) == MD_ERROR,
           "bad base '%s' refused", bad_bases[i]);
    }
    o.base = (md_str_t)md_string(BASE);
    md_track_key_t weak = {9, secret_a, 4};
    o.key = &weak;
    ok(md_track_rewrite_html(&o, doc, strlen(doc), &out, &links) == MD_ERROR,
       "a short secret refused");
    md_buf_free(&out);

    /* The link cap. */
    md_buf_t many;
    md_buf_init(&many);
    for (int i = 0; i < MD_TRACK_MAX_LINKS + 5; i++)
        md_buf_printf(&many, "<a href=\"https://ex.com/%d\">%d</a>", i, i);
    got = rewrite(many.pos, md_buf_len(&many), true, false, &links);
    ok(got != NULL && links.n == MD_TRACK_MAX_LINKS &&
           strcmp(links.url[MD_TRACK_MAX_LINKS - 1], "https://ex.com/999") == 0 &&
           strstr(got, "<a href=\"https://ex.com/1000\">") != NULL,
       "links past %d stay as they are", MD_TRACK_MAX_LINKS);
    free(got);
    md_track_links_free(&links);
    md_buf_free(&many);
}

/* Every /t/c/ token in out parses, names this message, and has an index < n.
 * Returns the number found, or -1 on a bad one. */
static long
check_tokens(const char *out, size_t len, size_t nlinks)
{
    md_track_keys_t keys = {key_a, {0, NULL, 0}};
    const char *pat = BASE "/t/c/";
    size_t pl = strlen(pat);
    long found = 0;
    if (out == NULL)
        return 0; /* an empty md_buf_t has no storage */
    const char *p = out, *end = out + len;
    while ((p = memmem(p, (size_t)(end - p), pat, pl)) != NULL) {
        p += pl;
        if ((size_t)(end - p) < 50)
            return -1;
        md_track_token_t t;
        if (md_track_token_parse(&keys, p, 50, &t) != MD_OK || t.kind != MD_TRACK_CLICK ||
            t.link != found || t.link >= nlinks || memcmp(t.msgid, msgid, 16) != 0)
            return -1;
        found++;
    }
    return found;
}

static const char *const fragments[] = {
    "<a href=\"https://ex.com/\">",
    "<a href='http://x.y/?a=1&amp;b=2'>",
    "<a href=https://u/>",
    "<A HREF=",
    "\"",
    "'",
    "<",
    ">",
    "/",
    "=",
    "&",
    "&#",
    "&#x",
    "&amp;",
    "&amp",
    "&#x3a;",
    "&colon;",
    "<!--",
    "-->",
    "--!>",
    "<!",
    "<?",
    "</",
    "</body>",
    "</BODY",
    "<body>",
    "<script>",
    "</script>",
    "<style>",
    "</style",
    "<textarea>",
    "<plaintext>",
    "data-mailerd-notrack",
    " ",
    "\n",
    "\t",
    "\0",
    "href",
    "https://",
    "mailto:x@y",
    "<a",
    "<a ",
    " href=\"",
    "#",
    "\xc3\xa9",
    "\xff",
    "&#0;",
    "&#x80;",
    "&notin;",
    "&not",
};

static void
test_fuzz(void)
{
    const char *secs_env = getenv("MD_FUZZ_SECONDS");
    const char *seed_env = getenv("MD_FUZZ_SEED");
    double secs = secs_env ? atof(secs_env) : 2.0;
    unsigned long long seed =
        seed_env ? strtoull(seed_env, NULL, 10) : (unsigned long long)time(NULL);
    srandom((unsigned)seed);
    time_t start = time(NULL);
    unsigned long iters = 0, bad = 0, unchanged_bad = 0, tracked = 0;
    char buf[2048];
    while (difftime(time(NULL), start) < secs || iters < 200) {
        size_t len = 0;
        int pieces = (int)(random() % 40);
        for (int k = 0; k < pieces; k++) {
            if (random() % 4 == 0) {
                if (len < sizeof(buf))
                    buf[len++] = (char)(random() % 256);
                continue;
            }
            const char *f = fragments[random() % md_nelems(fragments)];
            size_t fl = strlen(f) ? strlen(f) : 1; /* "\0" adds one NUL byte */
            if (len + fl > sizeof(buf))
                break;
            memcpy(buf + len, f, fl);
            len += fl;
        }
        /* Any prefix, so that input ends in every state. */
        if (len > 0 && random() % 2)
            len = (size_t)random() % len;

        md_track_links_t links = {0};
        md_track_html_opts_t o = {&key_a, msgid, md_string(BASE), true, random() % 2 == 0};
        char *in = malloc(len ? len : 1); /* exact size: the sanitizers see any overread */
        memcpy(in, buf, len);
        md_buf_t out;
        md_buf_init(&out);
        int rc = md_track_rewrite_html(&o, in, len, &out, &links);
        long n = rc == MD_OK ? check_tokens(out.pos, md_buf_len(&out), links.n) : -1;
        if (n < 0 || (size_t)n != links.n)
            bad++;
        tracked += links.n;
        for (size_t i = 0; i < links.n; i++)
            if (strncasecmp(links.url[i], "http", 4) != 0)
                bad++;
        md_track_links_free(&links);

        /* With nothing to do the output is the input, byte for byte. */
        o.clicks = o.opens = false;
        md_buf_reset(&out);
        rc = md_track_rewrite_html(&o, in, len, &out, &links);
        if (rc != MD_OK || md_buf_len(&out) != len || (len && memcmp(out.pos, in, len) != 0) ||
            links.n != 0)
            unchanged_bad++;
        md_buf_free(&out);
        free(in);

        /* The token parsers on the same bytes. */
        md_track_keys_t keys = {key_a, key_b};
        md_track_token_t t;
        if (md_track_token_parse(&keys, buf, md_min(len, 50), &t) == MD_OK ||
            md_track_token_parse_b32(&keys, buf, md_min(len, 60), &t) == MD_OK)
            bad++;
        iters++;
    }
    printf("# fuzz seed %llu: %lu inputs, %lu links tracked\n", seed, iters, tracked);
    ok(bad == 0 && iters >= 200,
       "fuzz: %lu inputs rewritten, every token valid and mapped (seed %llu)", iters, seed);
    is_int(unchanged_bad, 0, "fuzz: with clicks and opens off the output is the input");
    ok(tracked > 0, "fuzz: some links were tracked (%lu)", tracked);
}

/* ---- List-Unsubscribe and the one-click body ---------------------------------------- */

static void
test_list_unsubscribe(void)
{
    md_track_token_t t = {.kind = MD_TRACK_UNSUBSCRIBE};
    memcpy(t.msgid, msgid, 16);
    char tok[MD_TRACK_TOKEN_SIZE], b32[MD_TRACK_TOKEN_SIZE];
    md_track_token_make(&key_a, &t, tok);
    md_track_token_make_b32(&key_a, &t, b32);
    char want[512];
    snprintf(want, sizeof(want),
             "List-Unsubscribe: <" BASE "/u/%s>,\r\n <mailto:unsub+%s@mail.example.com>\r\n"
             "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
             tok, b32);
    md_buf_t b;
    md_buf_init(&b);
    int rc = md_track_list_unsubscribe(&key_a, msgid, (md_str_t)md_string(BASE "/"),
                                       (md_str_t)md_string("mail.example.com"), &b);
    md_buf_append(&b, "", 1);
    ok(rc == MD_OK, "List-Unsubscribe made");
    is_str(b.pos, want, "List-Unsubscribe and List-Unsubscribe-Post, exact");
    ok(strlen("unsub+") + strlen(b32) <= 64, "the mailto local part fits 64 characters");

    md_track_keys_t keys = {key_a, {0, NULL, 0}};
    md_track_token_t got;
    ok(md_track_token_parse(&keys, tok, strlen(tok), &got) == MD_OK &&
           got.kind == MD_TRACK_UNSUBSCRIBE && memcmp(got.msgid, msgid, 16) == 0,
       "the URL token is an unsubscribe token for the message");
    ok(md_track_token_parse_b32(&keys, b32, strlen(b32), &got) == MD_OK &&
           got.kind == MD_TRACK_UNSUBSCRIBE,
       "the mailto token is too");

    md_buf_reset(&b);
    rc = md_track_list_unsubscribe(&key_a, msgid, (md_str_t)md_string("http://localhost:8025"),
                                   (md_str_t)md_null_string, &b);
    md_buf_append(&b, "", 1);
    snprintf(want, sizeof(want), "List-Unsubscribe: <http://localhost:8025/u/%s>\r\n", tok);
    ok(rc == MD_OK, "plain http base, no domain");
    is_str(b.pos, want, "http base: no List-Unsubscribe-Post (RFC 8058 wants https), no mailto");
    md_buf_reset(&b);
    ok(md_track_list_unsubscribe(&key_a, msgid, (md_str_t)md_string(BASE),
                                 (md_str_t)md_string("ex ample.com>"), &b) == MD_ERROR,
       "a bad domain is refused");
    md_buf_free(&b);
}

static void
oneclick(const char *ct, const char *body, int want, const char *desc)
{
    md_str_t c = {ct ? strlen(ct) : 0, ct};
    size_t n = strlen(body);
    char *copy = malloc(n ? n : 1);
    memcpy(copy, body, n);
    is_int(md_track_oneclick_body(c, copy, n), want, "one-click: %s", desc);
    free(copy);
}

static void
test_oneclick(void)
{
    const char *form = "application/x-www-form-urlencoded";
    oneclick(form, "List-Unsubscribe=One-Click", MD_OK, "Gmail's urlencoded body");
    oneclick(form, "List-Unsubscribe=One-Click\r\n", MD_OK, "with a trailing CRLF");
    oneclick("application/x-www-form-urlencoded; charset=UTF-8", "List-Unsubscribe=One-Click",
             MD_OK, "with a charset parameter");
    oneclick(NULL, "List-Unsubscribe=One-Click", MD_OK, "no Content-Type");
    oneclick(form, "List%2DUnsubscribe=One%2dClick", MD_OK, "percent-encoded");
    oneclick(form, "a=b&List-Unsubscribe=One-Click&c", MD_OK, "among other fields");
    oneclick(form, "list-unsubscribe=one-click", MD_OK, "in lower case");
    oneclick(form, "List-Unsubscribe=Two-Click", MD_DECLINED, "another value");
    oneclick(form, "", MD_DECLINED, "an empty body");
    oneclick(form, "List-Unsubscribe", MD_DECLINED, "no value");
    oneclick(form, "=&&=One-Click&%", MD_DECLINED, "junk");
    oneclick("text/plain", "List-Unsubscribe=One-Click", MD_ERROR, "text/plain");

    const char *yahoo_ct = "multipart/form-data; boundary=----=_Part_1234_5678.1700000000000";
    oneclick(yahoo_ct,
             "------=_Part_1234_5678.1700000000000\r\n"
             "Content-Disposition: form-data; name=\"List-Unsubscribe\"\r\n"
             "\r\n"
             "One-Click\r\n"
             "------=_Part_1234_5678.1700000000000--\r\n",
             MD_OK, "Yahoo's multipart body");
    oneclick("multipart/form-data; boundary=\"b; q\"",
             "preamble\r\n--b; q\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nx\r\n"
             "--b; q\r\nContent-Type: text/plain\r\ncontent-disposition: FORM-DATA; "
             "name=List-Unsubscribe\r\n\r\nOne-Click\r\n--b; q--",
             MD_OK, "quoted boundary, preamble, second part, unquoted name");
    oneclick("multipart/form-data; boundary=XyZ",
             "--XyZ\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\n\nOne-Click\n"
             "--XyZ--\n",
             MD_OK, "bare LF line ends");
    oneclick("multipart/form-data; boundary=XyZ",
             "--XyZ\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\nNo\r\n"
             "--XyZ--\r\n",
             MD_DECLINED, "multipart with another value");
    oneclick("multipart/form-data; boundary=XyZ",
             "--XyZ\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\nOne-Click",
             MD_ERROR, "multipart cut off before the delimiter");
    oneclick("multipart/form-data", "--XyZ\r\n\r\n--XyZ--", MD_ERROR, "no boundary");
    oneclick("multipart/form-data; boundary=XyZ", "nothing", MD_ERROR, "no delimiter");

    /* Every truncation of the Yahoo body is handled without reading past it. */
    const char *y = "------=_P\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n"
                    "\r\nOne-Click\r\n------=_P--\r\n";
    md_str_t c = md_string("multipart/form-data; boundary=----=_P");
    int oks = 0;
    for (size_t l = 0; l <= strlen(y); l++) {
        char *copy = malloc(l ? l : 1);
        memcpy(copy, y, l);
        if (md_track_oneclick_body(c, copy, l) == MD_OK)
            oks++;
        free(copy);
    }
    ok(oks >= 1 && oks <= 4, "truncated multipart bodies: only (nearly) whole ones pass (%d)", oks);
}

int
main(void)
{
    test_roundtrip();
    test_tamper();
    test_rotation();
    test_rewrite();
    test_fuzz();
    test_list_unsubscribe();
    test_oneclick();
    return done_testing();
}
