/*
 * Address parser tests: the isemail corpus (t/data/isemail, BSD-3-Clause, see its
 * README.md), display names, IDN (UTS-46 processing, with the spec's own examples),
 * length limits at the
 * exact boundaries, address literals, CR/LF and other control characters, every
 * error code, normalisation, formatting, and a deterministic mutation run for the
 * sanitizer build.
 */
#include "md_address.h"
#include "tap.h"

#include <stdlib.h>

static md_pool_t *pool;

static const char *
srcdir(void)
{
    const char *s = getenv("MD_SRCDIR");
    return s && *s ? s : MD_SRCDIR;
}

/* Printable rendering of arbitrary bytes for test names. */
static const char *
show(const char *s, size_t n)
{
    static char out[4][1200];
    static int slot;
    char *o = out[slot++ & 3];
    size_t k = 0;
    /* UTF-8 is shown as is unless the input holds malformed UTF-8, C1 controls or
     * U+2028/U+2029, which would garble the TAP stream: then every high byte is
     * escaped. */
    bool raw8 = true;
    for (size_t i = 0; i < n && raw8;) {
        unsigned char c = (unsigned char)s[i];
        size_t len = c < 0x80 ? 1 : c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : 4;
        if (c >= 0xf5 || (c >= 0x80 && c < 0xc2) || i + len > n)
            raw8 = false;
        for (size_t j = 1; raw8 && j < len; j++)
            if (((unsigned char)s[i + j] & 0xc0) != 0x80)
                raw8 = false;
        if (raw8 && c == 0xc2 && (unsigned char)s[i + 1] < 0xa0)
            raw8 = false;
        if (raw8 && c == 0xe2 && (unsigned char)s[i + 1] == 0x80 &&
            ((unsigned char)s[i + 2] == 0xa8 || (unsigned char)s[i + 2] == 0xa9))
            raw8 = false;
        if (raw8 && c == 0xe0 && (unsigned char)s[i + 1] < 0xa0)
            raw8 = false; /* overlong */
        if (raw8 && c == 0xed && (unsigned char)s[i + 1] >= 0xa0)
            raw8 = false; /* surrogate */
        if (raw8 && c == 0xf0 && (unsigned char)s[i + 1] < 0x90)
            raw8 = false; /* overlong */
        if (raw8 && c == 0xf4 && (unsigned char)s[i + 1] >= 0x90)
            raw8 = false; /* above U+10FFFF */
        i += len;
    }
    for (size_t i = 0; i < n && k < sizeof(out[0]) - 8; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f || c == '\\' || (c >= 0x80 && !raw8))
            k += (size_t)snprintf(o + k, 8, "\\x%02x", c);
        else
            o[k++] = (char)c;
    }
    o[k] = '\0';
    return o;
}

static int
parse(const char *s, size_t n, md_address_t *a, md_address_error_t *e)
{
    memset(a, 0, sizeof(*a));
    memset(e, 0, sizeof(*e));
    return md_address_parse(pool, s, n, a, e);
}

/* Expects success; returns the parsed address for further checks. */
static md_address_t
accept_n(const char *s, size_t n)
{
    md_address_t a;
    md_address_error_t e;
    int rc = parse(s, n, &a, &e);
    ok(rc == MD_OK, "accept '%s'", show(s, n));
    if (rc != MD_OK)
        printf("#   refused: %s (%s) at %zu\n", e.name, e.message, e.offset);
    return a;
}

static md_address_t
accept(const char *s)
{
    return accept_n(s, strlen(s));
}

static void
refuse_n(const char *s, size_t n, const char *code)
{
    md_address_t a;
    md_address_error_t e;
    int rc = parse(s, n, &a, &e);
    ok(rc == MD_ERROR && e.name && strcmp(e.name, code) == 0, "refuse '%s' with %s", show(s, n),
       code);
    if (rc != MD_ERROR)
        printf("#   accepted\n");
    else if (!e.name || strcmp(e.name, code) != 0)
        printf("#   got %s (%s) at %zu\n", e.name, e.message, e.offset);
    /* Validation without a pool must agree and allocate nothing (but libidn2's result). */
    md_address_error_t e2;
    ok(md_address_parse(NULL, s, n, NULL, &e2) == MD_ERROR && e2.code == e.code,
       "  same verdict without a pool");
}

static void
refuse(const char *s, const char *code)
{
    refuse_n(s, strlen(s), code);
}

/* ---- isemail corpus ---- */

static char *
read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        fclose(f);
        return NULL;
    }
    b[n] = '\0';
    fclose(f);
    *len = (size_t)n;
    return b;
}

static size_t
put_utf8(char *o, unsigned long cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    } else if (cp < 0x800) {
        o[0] = (char)(0xc0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    } else if (cp < 0x10000) {
        o[0] = (char)(0xe0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    o[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* Decodes XML text s[0..n) into o (at least n bytes): the five named entities and
 * numeric references; U+2400..U+241F become bytes 0x00..0x1F (the corpus's way of
 * writing control characters). Returns the decoded length. */
static size_t
xml_text(const char *s, size_t n, char *o)
{
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        if (s[i] != '&') {
            o[k++] = s[i++];
            continue;
        }
        const char *semi = memchr(s + i, ';', n - i);
        if (!semi) {
            o[k++] = s[i++];
            continue;
        }
        size_t elen = (size_t)(semi - (s + i)) + 1;
        if (s[i + 1] == '#') {
            unsigned long cp =
                s[i + 2] == 'x' ? strtoul(s + i + 3, NULL, 16) : strtoul(s + i + 2, NULL, 10);
            if (cp >= 0x2400 && cp <= 0x241f)
                o[k++] = (char)(cp - 0x2400);
            else
                k += put_utf8(o + k, cp);
        } else if (elen == 5 && memcmp(s + i, "&amp;", 5) == 0) {
            o[k++] = '&';
        } else if (elen == 4 && memcmp(s + i, "&lt;", 4) == 0) {
            o[k++] = '<';
        } else if (elen == 4 && memcmp(s + i, "&gt;", 4) == 0) {
            o[k++] = '>';
        } else if (elen == 6 && memcmp(s + i, "&quot;", 6) == 0) {
            o[k++] = '"';
        } else if (elen == 6 && memcmp(s + i, "&apos;", 6) == 0) {
            o[k++] = '\'';
        } else {
            memcpy(o + k, s + i, elen);
            k += elen;
        }
        i += elen;
    }
    return k;
}

/* Text of <tag>...</tag> inside [b, e), decoded into o; "" for <tag/>. Returns
 * false when the element is missing. */
static bool
xml_elem(const char *b, const char *e, const char *tag, char *o, size_t *olen)
{
    char open[64], close[64], empty[64];
    snprintf(open, sizeof(open), "<%s>", tag);
    snprintf(close, sizeof(close), "</%s>", tag);
    snprintf(empty, sizeof(empty), "<%s/>", tag);
    const char *p = memmem(b, (size_t)(e - b), open, strlen(open));
    if (!p) {
        *olen = 0;
        return memmem(b, (size_t)(e - b), empty, strlen(empty)) != NULL;
    }
    p += strlen(open);
    const char *q = memmem(p, (size_t)(e - p), close, strlen(close));
    if (!q)
        return false;
    *olen = xml_text(p, (size_t)(q - p), o);
    return true;
}

/* Our decision for each test outside the plainly valid (VALID, DNSWARN) and plainly
 * invalid (ERR) categories, and the exceptions to "valid means accepted". "" means
 * accepted. The reasons are the rules in md_address.h:
 *   - a domain needs a dot, and the TLD may not be all-numeric (5, 23, 24, 166);
 *   - the empty quoted local part "" is refused (43): no ESP takes it;
 *   - comments, folding white space and whitespace outside quotes: refused (CFWS,
 *     DEPREC); CR, LF and other controls refused with control_character;
 *   - deprecated forms are refused, including "::" standing for one group (71,
 *     RFC 5321 4.1.3: "::" represents at least 2 groups);
 *   - RFC 5322-only forms (general domain literals, over-long parts) are refused. */
static const struct {
    int id;
    const char *code;
} decisions[] = {
    /* ISEMAIL_VALID_CATEGORY exception */
    {5, "domain_needs_dot"}, /* test@io */
    /* ISEMAIL_RFC5321 */
    {23, "invalid_domain"},
    {24, "invalid_domain"},
    {42, ""},
    {43, "invalid_local_part"},
    {45, ""},
    {46, ""},
    {48, ""},
    {55, ""},
    {61, ""},
    {68, ""},
    {72, ""},
    {75, ""},
    {77, ""},
    {79, ""},
    {81, ""},
    {166, "domain_needs_dot"},
    /* ISEMAIL_DEPREC */
    {54, "invalid_local_part"},
    {56, "invalid_local_part"},
    {58, "control_character"},
    {71, "invalid_address_literal"},
    {85, "invalid_local_part"},
    {86, "invalid_domain"},
    {87, "invalid_local_part"},
    {89, "control_character"},
    {93, "invalid_domain"},
    {95, "invalid_domain"},
    {97, "invalid_domain"},
    {124, "control_character"},
    {125, "control_character"},
    {126, "control_character"},
    {134, "control_character"},
    {138, "control_character"},
    {139, "control_character"},
    {140, "control_character"},
    {149, "control_character"},
    {165, "invalid_local_part"},
    /* ISEMAIL_CFWS */
    {88, "control_character"},
    {90, "invalid_local_part"},
    {92, "invalid_local_part"},
    {96, "invalid_local_part"},
    {98, "invalid_local_part"},
    {144, "control_character"},
    {148, "control_character"},
    {153, "control_character"},
    {157, "invalid_local_part"},
    {158, "invalid_domain"},
    /* ISEMAIL_RFC5322 */
    {26, "local_part_too_long"},
    {28, "domain_label_too_long"},
    {39, "address_too_long"},
    {40, "domain_too_long"},
    {41, "domain_too_long"},
    {59, "local_part_too_long"},
    {60, "local_part_too_long"},
    {63, "invalid_address_literal"},
    {64, "invalid_address_literal"},
    {65, "invalid_address_literal"},
    {66, "invalid_address_literal"},
    {67, "invalid_address_literal"},
    {69, "invalid_address_literal"},
    {70, "invalid_address_literal"},
    {73, "invalid_address_literal"},
    {74, "invalid_address_literal"},
    {76, "invalid_address_literal"},
    {78, "invalid_address_literal"},
    {80, "invalid_address_literal"},
    {82, "invalid_address_literal"},
    {83, "invalid_address_literal"},
    {84, "invalid_address_literal"},
    {112, "invalid_address_literal"},
    {115, "control_character"},
    {116, "control_character"},
    {117, "invalid_address_literal"},
    {120, "invalid_address_literal"},
    {121, "invalid_address_literal"},
    {159, "invalid_address_literal"},
    {161, "invalid_domain"},
};

static void
test_isemail(void)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/t/data/isemail/tests.xml", srcdir());
    size_t len;
    char *xml = read_file(path, &len);
    ok(xml != NULL, "read %s", path);
    if (!xml)
        return;

    int seen = 0, used_decisions = 0;
    const char *end = xml + len;
    const char *p = xml;
    while ((p = memmem(p, (size_t)(end - p), "<test id=\"", 10)) != NULL) {
        int id = atoi(p + 10);
        const char *te = memmem(p, (size_t)(end - p), "</test>", 7);
        if (!te)
            break;
        char addr[1024], cat[128], diag[128];
        size_t alen, clen, dlen;
        bool have = xml_elem(p, te, "address", addr, &alen) &&
                    xml_elem(p, te, "category", cat, &clen) &&
                    xml_elem(p, te, "diagnosis", diag, &dlen);
        p = te;
        ok(have, "isemail #%d has address, category and diagnosis", id);
        if (!have)
            continue;
        cat[clen] = diag[dlen] = '\0';
        seen++;

        const char *want = NULL; /* NULL: any refusal */
        bool decided = false;
        for (size_t i = 0; i < md_nelems(decisions); i++)
            if (decisions[i].id == id) {
                want = decisions[i].code;
                decided = true;
                used_decisions++;
            }
        bool valid_cat =
            strcmp(cat, "ISEMAIL_VALID_CATEGORY") == 0 || strcmp(cat, "ISEMAIL_DNSWARN") == 0;
        bool err_cat = strcmp(cat, "ISEMAIL_ERR") == 0;
        if (!decided && valid_cat)
            want = "";
        ok(decided || valid_cat || err_cat, "isemail #%d (%s) has a documented decision", id, cat);
        if (decided && err_cat)
            ok(0, "isemail #%d: ISEMAIL_ERR may not be overridden", id);

        md_address_t a;
        md_address_error_t e;
        int rc = parse(addr, alen, &a, &e);
        if (want && *want == '\0') {
            ok(rc == MD_OK, "isemail #%d %s %s '%s' accepted", id, cat, diag, show(addr, alen));
            if (rc != MD_OK)
                printf("#   refused: %s (%s)\n", e.name, e.message);
        } else if (want) {
            ok(rc == MD_ERROR && strcmp(e.name, want) == 0, "isemail #%d %s %s '%s' refused: %s",
               id, cat, diag, show(addr, alen), want);
            if (rc == MD_ERROR && strcmp(e.name, want) != 0)
                printf("#   got %s (%s)\n", e.name, e.message);
        } else {
            ok(rc == MD_ERROR, "isemail #%d %s %s '%s' refused (%s: %s)", id, cat, diag,
               show(addr, alen), rc == MD_ERROR ? e.name : "-", rc == MD_ERROR ? e.message : "-");
        }
    }
    is_int(seen, 164, "isemail: all 164 tests of v3.05 read");
    is_int(used_decisions, (int)md_nelems(decisions), "isemail: every decision matched a test");
    free(xml);
}

/* ---- IDN ---- */

static void
idn(const char *in, const char *domain_ascii)
{
    md_address_t a = accept(in);
    is_str(a.domain_ascii.data, domain_ascii, "  A-label of '%s'", in);
    ok(a.idn, "  flagged idn");
}

static void
test_idn(void)
{
    idn("user@bücher.example", "xn--bcher-kva.example");
    idn("user@Bücher.Example", "xn--bcher-kva.example");
    idn("user@BÜCHER.EXAMPLE", "xn--bcher-kva.example");
    idn("user@MÜNCHEN.de", "xn--mnchen-3ya.de");
    idn("user@παράδειγμα.δοκιμή", "xn--hxajbheg2az3al.xn--jxalpdlp");
    idn("user@ΠΑΡΆΔΕΙΓΜΑ.ΔΟΚΙΜΉ", "xn--hxajbheg2az3al.xn--jxalpdlp");
    idn("user@пример.рф", "xn--e1afmkfd.xn--p1ai");
    idn("user@ПРИМЕР.РФ", "xn--e1afmkfd.xn--p1ai");
    idn("user@例え.テスト", "xn--r8jz45g.xn--zckzah");
    idn("user@mail.bücher.example", "mail.xn--bcher-kva.example");
    /* UTS #46 (Unicode IDNA Compatibility Processing), section 2.3 Table 3's
     * deviations: nontransitional processing keeps them, as IDNA2008 does
     * (transitional would give fass.de, xn--nxasmq6b.com, xn--10cl1a0b.com,
     * xn--mgba3gch31f.com: other domains). */
    idn("user@faß.de", "xn--fa-hia.de");
    idn("user@βόλος.com", "xn--nxasmm1c.com");
    idn("user@ශ්‍රී.com", "xn--10cl1a0b660p.com");
    idn("user@نامه‌ای.com", "xn--mgba3gch31f060k.com");
    /* Normalized to NFC: "u" + U+0308 COMBINING DIAERESIS names bücher. */
    idn("user@bu\xcc\x88"
        "cher.example",
        "xn--bcher-kva.example");
    /* Case folding of every script, not only Latin, Greek and Cyrillic. */
    idn("user@İstanbul.example", "xn--istanbul-o0e.example");
    idn("user@ΣΑΣ.example", "xn--mxa9ab.example");
    idn("user@ǅ.example", "xn--d-toa.example"); /* titlecase U+01C5 */
    /* Full-width Latin maps to plain ASCII. */
    idn("user@ｅｘａｍｐｌｅ.com", "example.com");

    md_address_t a = accept("Jane <Jane.Doe@Bücher.Example>");
    is_str(a.domain.data, "Bücher.Example", "domain kept as given");
    is_str(a.addr.data, "Jane.Doe@Bücher.Example", "addr as given");
    is_str(a.addr_ascii.data, "Jane.Doe@xn--bcher-kva.example", "addr_ascii");
    a = accept("user@Example.COM");
    is_str(a.domain_ascii.data, "example.com", "ASCII domain lower-cased");
    ok(!a.idn, "  not idn");
    accept("user@xn--bcher-kva.example"); /* an A-label given as is */

    refuse("user@bücher。example", "invalid_domain"); /* U+3002 */
    refuse("user@bücher．example", "invalid_domain"); /* U+FF0E */
    refuse("user@bü cher.example", "invalid_domain");
    refuse("user@bü\xc2\xa0"
           "cher.example",
           "invalid_domain"); /* NBSP */
    refuse("user@bü\xe2\x80\x8b"
           "cher.example",
           "invalid_domain"); /* ZWSP */
    refuse("user@-bücher.example", "invalid_domain");
    refuse("user@bücher-.example", "invalid_domain");
    refuse("user@bü_cher.example", "invalid_domain");
    refuse("user@bücher", "domain_needs_dot");
    refuse("user@bücher.123", "invalid_domain");
    /* IDNA2008 validity, which the A-label alone would not show. */
    refuse("user@♥.example", "invalid_domain");            /* disallowed (a symbol) */
    refuse("user@\xe2\x92\x88.example", "invalid_domain"); /* U+2488 maps to "1." */
    refuse("user@a\xe2\x80\x8d"
           "b.example",
           "invalid_domain");                     /* ZWJ between Latin letters: CONTEXTJ */
    refuse("user@abא.example", "invalid_domain"); /* the Bidi rule */
    refuse("user@\xcc\x88"
           "bc.example",
           "invalid_domain");                          /* a leading combining mark */
    refuse("user@\xc2\xad.example", "invalid_domain"); /* maps to nothing */
    {
        md_address_t h;
        md_address_error_t e;
        ok(parse("user@♥.example", strlen("user@♥.example"), &h, &e) != MD_OK &&
               strstr(e.message, "disallowed") != NULL && e.offset == 5,
           "a disallowed character is named, at its label (%s at %zu)", e.message, e.offset);
    }
    {
        char label[200];
        memset(label, 0, sizeof(label));
        for (int i = 0; i < 30; i++)
            strcat(label, "ü");
        char addr[2 * sizeof(label) + 16];
        snprintf(addr, sizeof(addr), "user@%s%s.example", label, label);
        refuse(addr, "domain_label_too_long"); /* 60 code points: well over 63 as an A-label */
    }

    /* A label of 57 x U+00FC is 114 octets of UTF-8, refused before conversion;
     * "a"x55 + "ü" is 57 octets given and exactly 63 as an A-label, one more is 64. */
    char buf[512];
    snprintf(buf, sizeof(buf), "u@%.*sü.example", 55,
             "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    a = accept(buf);
    ok(a.domain_ascii.len == 63 + 8, "A-label of exactly 63 octets accepted");
    snprintf(buf, sizeof(buf), "u@%.*sü.example", 56,
             "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    refuse(buf, "domain_label_too_long");

    /* The limits hold for the A-label form too: L is 57 octets given, 63 converted. */
    char L[64];
    snprintf(L, sizeof(L), "%.*sü", 55,
             "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    snprintf(buf, sizeof(buf), "u@%s.%s.%s.%s.com", L, L, L, L); /* 235 given, 259 ASCII */
    refuse(buf, "domain_too_long");
    snprintf(buf, sizeof(buf), "%.*s@%s.%s.%s.com", 58,
             "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", L, L, L);
    a = accept(buf); /* 236 given, exactly 254 ASCII */
    is_int(a.addr_ascii.len, 254, "  addr_ascii is exactly 254 octets");
    snprintf(buf, sizeof(buf), "%.*s@%s.%s.%s.com", 59,
             "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", L, L, L);
    refuse(buf, "address_too_long"); /* 237 given, 255 ASCII */
}

/* ---- display names ---- */

static void
display(const char *in, const char *name, const char *addr)
{
    md_address_t a = accept(in);
    is_str(a.display.data, name, "  display name of '%s'", in);
    is_int(a.display.len, strlen(name), "  display length");
    is_str(a.addr.data, addr, "  addr");
    ok(a.angle, "  angle form");
}

static void
test_display(void)
{
    display("Acme <billing@acme.example>", "Acme", "billing@acme.example");
    display("\"Doe, Jane\" <jane@x.example>", "Doe, Jane", "jane@x.example");
    display("Jürgen Müller <j@x.example>", "Jürgen Müller", "j@x.example");
    display("\"Jürgen Müller\" <j@x.example>", "Jürgen Müller", "j@x.example");
    display("株式会社 <info@x.example>", "株式会社", "info@x.example");
    display("<a@b.example>", "", "a@b.example");
    display("\"\" <a@b.example>", "", "a@b.example");
    display("\"Jane \\\"JJ\\\" Doe\" <jane@x.example>", "Jane \"JJ\" Doe", "jane@x.example");
    display("\"back\\\\slash\" <a@b.example>", "back\\slash", "a@b.example");
    display("Acme Inc. <a@b.example>", "Acme Inc.", "a@b.example");
    display("Acme<a@b.example>", "Acme", "a@b.example");
    display("Acme   <a@b.example>", "Acme", "a@b.example");
    display("Jane  Doe <a@b.example>", "Jane  Doe", "a@b.example");
    display("\"Doe\" Jane <a@b.example>", "Doe Jane", "a@b.example");
    display("\"a <b@c.example>\" <real@x.example>", "a <b@c.example>", "real@x.example");
    display("Billing <\"john doe\"@x.example>", "Billing", "\"john doe\"@x.example");
    display("B <\"a<b>\"@x.example>", "B", "\"a<b>\"@x.example");
    display("=?utf-8?q?Acme?= <a@b.example>", "=?utf-8?q?Acme?=", "a@b.example");

    md_address_t a = accept("plain@x.example");
    ok(!a.angle && a.display.len == 0 && a.display.data && a.display.data[0] == '\0',
       "bare addr-spec: empty display, not angle");

    refuse("Doe, Jane <jane@x.example>", "invalid_display_name");
    refuse("a@b <c@d.example>", "invalid_display_name");
    refuse("Acme (Billing) <a@b.example>", "invalid_display_name");
    refuse("Acme: <a@b.example>", "invalid_display_name");
    refuse(" Acme <a@b.example>", "invalid_display_name");
    refuse("\"Doe <a@b.example>", "invalid_display_name");
    refuse("Acme > <a@b.example>", "invalid_display_name");
    refuse("Acme <a@b.example", "invalid_angle_addr");
    refuse("Acme <a@b.example> ", "invalid_angle_addr");
    refuse("Acme <a@b.example> x", "invalid_angle_addr");
    refuse("Acme <>", "invalid_angle_addr");
    refuse("<>", "invalid_angle_addr");
    refuse("Acme < a@b.example>", "invalid_local_part");
    refuse("Acme <a@b.example >", "invalid_domain");
    refuse("Acme <a@b.example>>", "invalid_domain");
    refuse("Acme <<a@b.example>", "invalid_local_part");
    refuse("Acme <a@b.example>, Other <c@d.example>", "invalid_local_part");
    refuse("Acme <billing>", "missing_at");
}

/* ---- length limits ---- */

static char *
rep(char *o, char c, size_t n)
{
    memset(o, c, n);
    return o + n;
}

static void
test_lengths(void)
{
    char buf[600], *p;

    /* local part: 64 and 65 octets */
    p = rep(buf, 'l', 64);
    strcpy(p, "@example.com");
    accept(buf);
    p = rep(buf, 'l', 65);
    strcpy(p, "@example.com");
    refuse(buf, "local_part_too_long");
    /* quoted: 64 octets including the quotes */
    buf[0] = '"';
    p = rep(buf + 1, 'q', 62);
    strcpy(p, "\"@example.com");
    accept(buf);
    p = rep(buf + 1, 'q', 63);
    strcpy(p, "\"@example.com");
    refuse(buf, "local_part_too_long");

    /* label: 63 and 64 octets */
    p = buf;
    *p++ = 'a', *p++ = '@';
    p = rep(p, 'd', 63);
    strcpy(p, ".com");
    accept(buf);
    p = buf + 2;
    p = rep(p, 'd', 64);
    strcpy(p, ".com");
    refuse(buf, "domain_label_too_long");

    /* whole address: 64 + 1 + 189 = 254, then 255 */
    p = rep(buf, 'l', 64);
    *p++ = '@';
    p = rep(p, 'b', 63);
    *p++ = '.';
    p = rep(p, 'c', 63);
    *p++ = '.';
    p = rep(p, 'd', 61);
    *p = '\0';
    is_int(strlen(buf), 254, "address of 254 octets built");
    md_address_t a = accept(buf);
    is_int(a.addr_ascii.len, 254, "  addr_ascii is 254 octets");
    char with_name[700];
    snprintf(with_name, sizeof(with_name), "Some Name <%s>", buf);
    accept(with_name); /* the limit is on the addr-spec, not the display name */
    p[0] = 'd', p[1] = '\0';
    refuse(buf, "address_too_long");
    snprintf(with_name, sizeof(with_name), "Some Name <%s>", buf);
    refuse(with_name, "address_too_long");

    /* domain: 253 and 254 octets (tested on the domain alone: with a local part
     * a 253-octet domain already makes the address longer than 254) */
    char out[MD_ADDRESS_DOMAIN_MAX + 1];
    size_t olen;
    md_address_error_t e;
    p = rep(buf, 'a', 63);
    *p++ = '.';
    p = rep(p, 'b', 63);
    *p++ = '.';
    p = rep(p, 'c', 63);
    *p++ = '.';
    p = rep(p, 'd', 61);
    *p = '\0';
    is_int(strlen(buf), 253, "domain of 253 octets built");
    ok(md_address_domain_to_ascii(buf, 253, out, sizeof(out), &olen, &e) == MD_OK && olen == 253,
       "domain of 253 octets accepted");
    p[0] = 'd', p[1] = '\0';
    ok(md_address_domain_to_ascii(buf, 254, out, sizeof(out), &olen, &e) == MD_ERROR &&
           e.code == MD_ADDRESS_DOMAIN_TOO_LONG,
       "domain of 254 octets: domain_too_long");
    ok(md_address_domain_to_ascii("example.com", 11, out, 11, &olen, &e) == MD_ERROR,
       "domain_to_ascii refuses a buffer without room for the NUL");
}

/* ---- address literals ---- */

static void
test_literals(void)
{
    md_address_t a = accept("user@[127.0.0.1]");
    ok(a.literal, "  literal flag");
    is_str(a.domain_ascii.data, "[127.0.0.1]", "  canonical IPv4 literal");
    accept("user@[255.255.255.255]");
    accept("user@[0.0.0.0]");
    accept("user@[IPv6:::1]");
    accept("user@[IPv6:::]");
    accept("user@[IPv6:2001:db8::1]");
    accept("user@[IPv6:1:2:3:4:5:6:7:8]");
    accept("user@[IPv6:1:2:3:4:5:6::]");
    accept("user@[IPv6:::1:2:3:4:5:6]");
    accept("user@[IPv6:::ffff:192.0.2.1]");
    accept("user@[IPv6:1:2:3:4:5:6:192.0.2.1]");
    accept("user@[IPv6:1:2:3:4::192.0.2.1]");
    a = accept("user@[ipv6:2001:DB8::AbCd]");
    is_str(a.domain_ascii.data, "[IPv6:2001:db8::abcd]", "  canonical IPv6 literal");
    is_str(a.domain.data, "[ipv6:2001:DB8::AbCd]", "  as given");

    refuse("user@[256.0.0.1]", "invalid_address_literal");
    refuse("user@[1.2.3]", "invalid_address_literal");
    refuse("user@[1.2.3.4.5]", "invalid_address_literal");
    refuse("user@[1.2.3.]", "invalid_address_literal");
    refuse("user@[1.2..3]", "invalid_address_literal");
    refuse("user@[0001.2.3.4]", "invalid_address_literal");
    refuse("user@[ 1.2.3.4]", "invalid_address_literal");
    refuse("user@[]", "invalid_address_literal");
    refuse("user@[", "invalid_address_literal");
    refuse("user@[1.2.3.4", "invalid_address_literal");
    refuse("user@[1.2.3.4]x", "invalid_address_literal");
    refuse("user@[IPv6:1:2:3:4:5:6:7]", "invalid_address_literal");
    refuse("user@[IPv6:1:2:3:4:5:6:7:8:9]", "invalid_address_literal");
    refuse("user@[IPv6:1::2::3]", "invalid_address_literal");
    refuse("user@[IPv6:1:2:3:4:5:6:7::]", "invalid_address_literal");
    refuse("user@[IPv6:12345::1]", "invalid_address_literal");
    refuse("user@[IPv6:g::1]", "invalid_address_literal");
    refuse("user@[IPv6:1:]", "invalid_address_literal");
    refuse("user@[IPv6::1]", "invalid_address_literal");
    refuse("user@[IPv6:1:2:3:4:5::1.2.3.4]", "invalid_address_literal");
    refuse("user@[IPv6:::1.2.3]", "invalid_address_literal");
    refuse("user@[IPv6:1.2.3.4::]", "invalid_address_literal");
    refuse("user@[IPv6:]", "invalid_address_literal");
    refuse("user@[2001:db8::1]", "invalid_address_literal");
    refuse("user@[x-tag:content]", "invalid_address_literal");
    refuse("user@[bücher]", "invalid_address_literal");
    refuse("user@x.[1.2.3.4]", "invalid_domain");
}

/* ---- control characters ---- */

static void
ctl(const char *s, size_t n, const char *msg_part)
{
    refuse_n(s, n, "control_character");
    md_address_error_t e;
    md_address_parse(NULL, s, n, NULL, &e);
    ok(strstr(e.message, msg_part) != NULL, "  message '%s' mentions '%s'", e.message, msg_part);
}

#define CTL(lit, part) ctl(lit, sizeof(lit) - 1, part)

static void
test_controls(void)
{
    CTL("a@b.example\r\n", "CR or LF");
    CTL("a@b.example\n", "CR or LF");
    CTL("a@b.example\r", "CR or LF");
    CTL("a\r\n@b.example", "CR or LF");
    CTL("\"a\r\nb\"@x.example", "CR or LF");
    CTL("\"a\\\nb\"@x.example", "CR or LF");
    CTL("Acme\r\nBcc: victim@x.example <a@b.example>", "CR or LF");
    CTL("\"Acme\r\nBcc: victim@x.example\" <a@b.example>", "CR or LF");
    CTL("Acme <a@b.example>\r\nBcc: victim@x.example", "CR or LF");
    CTL("a@b.exa\nmple", "CR or LF");
    CTL("a\0b@x.example", "control character");
    CTL("a@x.example\0", "control character");
    CTL("a\tb@x.example", "control character");
    CTL("\"a\tb\"@x.example", "control character");
    CTL("Jane\tDoe <a@b.example>", "control character");
    CTL("a\x7f@x.example", "control character");
    CTL("a\x1b@x.example", "control character");
    CTL("a@b\xc2\x85.example", "C1");
    CTL("Jane\xc2\x85 <a@b.example>", "C1");
    CTL("Jane\xe2\x80\xa8 <a@b.example>", "separator");
    CTL("a@b\xe2\x80\xa9.example", "separator");

    md_address_error_t e;
    ok(md_address_parse(NULL, "ab\r\n@x.example", 14, NULL, &e) == MD_ERROR && e.offset == 2,
       "offset points at the CR");
}

/* ---- every code, and the name table ---- */

static void
test_codes(void)
{
    static const char *const names[] = {
        "ok",
        "empty",
        "control_character",
        "invalid_utf8",
        "invalid_display_name",
        "invalid_angle_addr",
        "missing_at",
        "invalid_local_part",
        "non_ascii_local_part",
        "local_part_too_long",
        "invalid_domain",
        "domain_needs_dot",
        "domain_label_too_long",
        "domain_too_long",
        "invalid_address_literal",
        "address_too_long",
    };
    is_int(md_nelems(names), MD_ADDRESS_NCODES, "one name per code");
    for (size_t i = 0; i < md_nelems(names); i++)
        is_str(md_address_code_name((md_address_code_t)i), names[i], "code %zu is %s", i, names[i]);
    is_str(md_address_code_name(MD_ADDRESS_NCODES), "unknown", "out of range");

    refuse("", "empty");
    refuse_n("", 0, "empty");
    refuse("a@b\xff.example", "invalid_utf8");
    refuse("a@b\xc3.example", "invalid_utf8"); /* truncated */
    refuse("a@b\xc0\xae"
           "example",
           "invalid_utf8");                                /* overlong '.' */
    refuse("a@b\xed\xa0\x80.example", "invalid_utf8");     /* surrogate */
    refuse("a@b\xf4\x90\x80\x80.example", "invalid_utf8"); /* above U+10FFFF */
    refuse("Jane \xe9 <a@b.example>", "invalid_utf8");     /* Latin-1, not UTF-8 */
    refuse("test", "missing_at");
    refuse("test.example.com", "missing_at");
    refuse("\"test\"", "missing_at");
    refuse("@example.com", "invalid_local_part");
    refuse(".a@example.com", "invalid_local_part");
    refuse("a.@example.com", "invalid_local_part");
    refuse("a..b@example.com", "invalid_local_part");
    refuse("a b@example.com", "invalid_local_part");
    refuse("a(b)@example.com", "invalid_local_part");
    refuse("a,b@example.com", "invalid_local_part");
    refuse("a\\b@example.com", "invalid_local_part");
    refuse("a@b@example.com", "invalid_local_part");
    refuse("\"\"@example.com", "invalid_local_part");
    refuse("\"a\"b@example.com", "invalid_local_part");
    refuse("\"a\".b@example.com", "invalid_local_part");
    refuse("\"unclosed@example.com", "invalid_local_part");
    refuse("\"a\\\"@example.com", "invalid_local_part");
    refuse("jürgen@example.com", "non_ascii_local_part");
    refuse("\"jürgen\"@example.com", "non_ascii_local_part");
    refuse("\"j\\ürgen\"@example.com", "non_ascii_local_part");
    refuse("用户@例子.广告", "non_ascii_local_part");
    refuse("a@", "invalid_domain");
    refuse("a@.example.com", "invalid_domain");
    refuse("a@example.com.", "invalid_domain");
    refuse("a@example..com", "invalid_domain");
    refuse("a@-example.com", "invalid_domain");
    refuse("a@example-.com", "invalid_domain");
    refuse("a@exa_mple.com", "invalid_domain");
    refuse("a@example.c_m", "invalid_domain");
    refuse("a@example.123", "invalid_domain");
    refuse("a@1.2.3.4", "invalid_domain");
    refuse("a@localhost", "domain_needs_dot");
    refuse("a@com", "domain_needs_dot");

    /* accepted corner cases */
    accept("a@b.c");
    accept("a@123.example");
    accept("a@example.c0m");
    accept("a@x--y.example");
    accept("a@example.co-uk");
    accept("!#$%&'*+-/=?^_`{|}~@example.com");
    accept("first.last+tag@example.com");
    accept("\"john doe\"@example.com");
    accept("\"a@b\"@example.com");
    accept("\"a\\\"b\"@example.com");
    accept("\"a..b\"@example.com");
    accept("\"(comment)\"@example.com");

    md_address_t a = accept("\"John.Doe\"@Example.com");
    ok(a.quoted_local, "  quoted_local flag");
    is_str(a.local.data, "\"John.Doe\"", "  local kept as given");
}

/* ---- normalize ---- */

static void
norm(const char *in, const char *want)
{
    md_address_t a = accept(in);
    char buf[MD_ADDRESS_MAX + 1];
    size_t n = md_address_normalize(&a, buf, sizeof(buf));
    is_str(buf, want, "  normalize '%s'", in);
    is_int(n, strlen(want), "  length");
}

static void
test_normalize(void)
{
    norm("John.Doe@Example.COM", "John.Doe@example.com");
    norm("Acme <Bill@ACME.example>", "Bill@acme.example");
    norm("user@BÜCHER.example", "user@xn--bcher-kva.example");
    norm("user@bücher.example", "user@xn--bcher-kva.example");
    norm("\"john\"@x.example", "john@x.example");
    norm("\"John.Doe\"@x.example", "John.Doe@x.example");
    norm("\"j\\ohn\"@x.example", "john@x.example");
    norm("\"john doe\"@x.example", "\"john doe\"@x.example");
    norm("\"john\\ doe\"@x.example", "\"john doe\"@x.example");
    norm("\"a\\\"b\"@x.example", "\"a\\\"b\"@x.example");
    norm("\"a\\\\b\"@x.example", "\"a\\\\b\"@x.example");
    norm("\"a..b\"@x.example", "\"a..b\"@x.example");
    norm("\".a\"@x.example", "\".a\"@x.example");
    norm("a@[IPv6:2001:DB8::1]", "a@[IPv6:2001:db8::1]");

    md_address_t a = accept("abcdef@x.example");
    char small[5];
    size_t n = md_address_normalize(&a, small, sizeof(small));
    is_int(n, 16, "normalize returns the full length");
    is_str(small, "abcd", "  and truncates with a NUL");
    is_int(md_address_normalize(&a, NULL, 0), 16, "  size 0 writes nothing");
}

/* ---- format ---- */

static void
fmt(const char *display, const char *addr, const char *want, bool want_enc)
{
    char buf[600];
    bool enc = !want_enc;
    md_str_t d = {strlen(display), display}, a = {strlen(addr), addr};
    ssize_t n = md_address_format(buf, sizeof(buf), d, a, &enc);
    is_str(n >= 0 ? buf : NULL, want, "format '%s' + '%s'", display, addr);
    ok(n == (ssize_t)strlen(want) && enc == want_enc, "  length %zd, needs_encoding %d", n, enc);
    /* round trip: what we write parses back to the same display name and address */
    md_address_t r;
    md_address_error_t e;
    ok(parse(buf, (size_t)n, &r, &e) == MD_OK && strcmp(r.display.data, display) == 0 &&
           strcmp(r.addr.data, addr) == 0,
       "  parses back");
}

static void
test_format(void)
{
    fmt("", "a@b.example", "a@b.example", false);
    fmt("Acme", "billing@acme.example", "Acme <billing@acme.example>", false);
    fmt("Jane Doe", "jane@x.example", "Jane Doe <jane@x.example>", false);
    fmt("Doe, Jane", "jane@x.example", "\"Doe, Jane\" <jane@x.example>", false);
    fmt("Acme Inc.", "a@b.example", "\"Acme Inc.\" <a@b.example>", false);
    fmt("Jane \"JJ\" Doe", "a@b.example", "\"Jane \\\"JJ\\\" Doe\" <a@b.example>", false);
    fmt("back\\slash", "a@b.example", "\"back\\\\slash\" <a@b.example>", false);
    fmt("Jane  Doe", "a@b.example", "\"Jane  Doe\" <a@b.example>", false);
    fmt(" lead", "a@b.example", "\" lead\" <a@b.example>", false);
    fmt("a <b@c.example>", "a@b.example", "\"a <b@c.example>\" <a@b.example>", false);
    fmt("Jürgen Müller", "j@x.example", "Jürgen Müller <j@x.example>", true);
    fmt("Müller, Jürgen", "j@x.example", "\"Müller, Jürgen\" <j@x.example>", true);
    fmt("=?utf-8?q?x?=", "a@b.example", "=?utf-8?q?x?= <a@b.example>", true);
    fmt("Acme", "\"john doe\"@x.example", "Acme <\"john doe\"@x.example>", false);
    fmt("Acme", "a@[IPv6:::1]", "Acme <a@[IPv6:::1]>", false);

    char buf[64];
    md_str_t good = md_string("a@b.example");
    md_str_t inj = md_string("Acme\r\nBcc: x@y.example");
    md_str_t tab = md_string("a\tb");
    md_str_t bad8 = md_string("a\xff");
    ok(md_address_format(buf, sizeof(buf), inj, good, NULL) == -1 && buf[0] == '\0',
       "format refuses CR/LF in the display name");
    ok(md_address_format(buf, sizeof(buf), tab, good, NULL) == -1, "  and a tab");
    ok(md_address_format(buf, sizeof(buf), bad8, good, NULL) == -1, "  and invalid UTF-8");
    md_str_t none = md_null_string;
    md_str_t angle = md_string("<a@b.example>");
    md_str_t named = md_string("Acme <a@b.example>");
    md_str_t broken = md_string("a@b.example>\r\nBcc: x@y.example");
    md_str_t noat = md_string("nobody");
    ok(md_address_format(buf, sizeof(buf), none, angle, NULL) == -1, "format refuses '<addr>'");
    ok(md_address_format(buf, sizeof(buf), none, named, NULL) == -1, "  a name-addr as addr");
    ok(md_address_format(buf, sizeof(buf), none, broken, NULL) == -1, "  an injected addr");
    ok(md_address_format(buf, sizeof(buf), none, noat, NULL) == -1, "  a non-address");
    ok(md_address_format(buf, sizeof(buf), none, none, NULL) == -1, "  an empty addr");

    md_str_t acme = md_string("Acme");
    char small[8];
    ok(md_address_format(small, sizeof(small), acme, good, NULL) == 18 &&
           strcmp(small, "Acme <a") == 0,
       "format truncates like snprintf and returns the full length");
    ok(md_address_format(NULL, 0, acme, good, NULL) == 18, "  size 0");
}

/* ---- mutations: no crash, and invariants on whatever is accepted ---- */

static uint32_t rng = 2463534242u;

static uint32_t
xorshift(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 17;
    rng ^= rng << 5;
    return rng;
}

static void
test_mutations(void)
{
    static const char *const seeds[] = {
        "Acme <billing@acme.example>",
        "\"Doe, Jane\" <jane@x.example>",
        "user@bücher.example",
        "\"a\\\"b\"@[IPv6:2001:db8::1]",
        "x@[192.0.2.1]",
        "Jürgen <j.m+tag@mail.例え.テスト>",
    };
    static const char pieces[] = "\"\\<>@.[]: -\r\n\t(),a1\xc3\xbc\xe2\x80\xa8\x80\xff";
    int accepted = 0, bad = 0;
    for (int iter = 0; iter < 30000; iter++) {
        char buf[128];
        const char *seed = seeds[xorshift() % md_nelems(seeds)];
        size_t n = strlen(seed);
        memcpy(buf, seed, n);
        int edits = 1 + (int)(xorshift() % 4);
        for (int k = 0; k < edits; k++) {
            size_t at = n ? xorshift() % n : 0;
            switch (xorshift() % 3) {
            case 0: /* replace */
                if (n)
                    buf[at] = pieces[xorshift() % (sizeof(pieces) - 1)];
                break;
            case 1: /* insert */
                if (n < sizeof(buf) - 1) {
                    memmove(buf + at + 1, buf + at, n - at);
                    buf[at] = pieces[xorshift() % (sizeof(pieces) - 1)];
                    n++;
                }
                break;
            default: /* delete */
                if (n) {
                    memmove(buf + at, buf + at + 1, n - at - 1);
                    n--;
                }
            }
        }
        /* An exact-size heap copy lets the sanitizer catch any read past the end. */
        char *in = malloc(n ? n : 1);
        memcpy(in, buf, n);
        md_address_t a;
        md_address_error_t e;
        int rc = parse(in, n, &a, &e);
        if (rc == MD_OK) {
            accepted++;
            char norm[MD_ADDRESS_MAX + 1], out[1024];
            size_t nl = md_address_normalize(&a, norm, sizeof(norm));
            ssize_t fl = md_address_format(out, sizeof(out), a.display, a.addr_ascii, NULL);
            md_address_t r;
            md_address_error_t e2;
            bool good = a.addr_ascii.len <= MD_ADDRESS_MAX && a.local.len <= 64 &&
                        a.domain_ascii.len <= 253 && nl <= MD_ADDRESS_MAX && fl > 0 &&
                        (size_t)fl < sizeof(out) && parse(out, (size_t)fl, &r, &e2) == MD_OK &&
                        strcmp(r.display.data, a.display.data) == 0 &&
                        strcmp(r.addr.data, a.addr_ascii.data) == 0;
            for (size_t i = 0; i < a.addr_ascii.len; i++) {
                unsigned char c = (unsigned char)a.addr_ascii.data[i];
                if (c < 0x20 || c >= 0x7f)
                    good = false;
            }
            /* lower case, except the "IPv6:" tag of a literal */
            for (size_t i = a.literal ? 5 : 0; i < a.domain_ascii.len; i++)
                if (a.domain_ascii.data[i] >= 'A' && a.domain_ascii.data[i] <= 'Z')
                    good = false;
            if (!good && bad++ < 5)
                printf("# invariant broken for '%s'\n", show(in, n));
        } else if (!e.name || !e.message || e.code <= MD_ADDRESS_OK ||
                   e.code >= MD_ADDRESS_NCODES || e.offset > n) {
            if (bad++ < 5)
                printf("# bad error for '%s'\n", show(in, n));
        }
        free(in);
        md_pool_reset(pool);
    }
    ok(bad == 0, "30000 mutated inputs: no broken invariant (%d accepted)", accepted);
    ok(accepted > 100, "  the mutations left some valid addresses");
}

int
main(void)
{
    pool = md_pool_create(4096);
    test_isemail();
    test_idn();
    test_display();
    test_lengths();
    test_literals();
    test_controls();
    test_codes();
    test_normalize();
    test_format();
    test_mutations();
    md_pool_destroy(pool);
    return done_testing();
}
