/*
 * Unit tests for md_mime: the base64 and quoted-printable encoders against RFC 4648
 * and RFC 2045, byte-exact messages, RFC 2047 subjects, line limits, refusals.
 *
 * `mime_t --emit DIR` writes a set of .eml files with a .json of the inputs next to
 * each, for t/50-mime.t to check with an independent parser (Python's email).
 */
#include "md_mime.h"
#include "tap.h"

#include <stdio.h>
#include <stdlib.h>

/* A fixed "random" source: byte i is seed + i, so boundaries are predictable. */
static int
fixed_random(void *ctx, void *buf, size_t n)
{
    unsigned char *p = buf;
    unsigned seed = ctx ? *(unsigned *)ctx : 0;
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(seed + i);
    return MD_OK;
}

static char *
b64(const char *s, size_t n, size_t line)
{
    md_buf_t b;
    md_buf_init(&b);
    md_mime_base64_encode(&b, s, n, line);
    md_buf_append(&b, "", 1);
    return b.pos;
}

static char *
qp(const char *s, size_t n)
{
    md_buf_t b;
    md_buf_init(&b);
    md_mime_qp_encode(&b, s, n);
    md_buf_append(&b, "", 1);
    return b.pos;
}

static int
hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* A strict decoder written from RFC 2045 6.7, independent of the encoder: returns the
 * decoded length, or -1 on a malformed escape. */
static long
qp_decode(const char *s, char *out)
{
    long o = 0;
    for (size_t i = 0; s[i];) {
        if (s[i] == '=') {
            if (s[i + 1] == '\r' && s[i + 2] == '\n') {
                i += 3;
                continue;
            }
            int h = hexval(s[i + 1]), l = h < 0 ? -1 : hexval(s[i + 2]);
            if (h < 0 || l < 0)
                return -1;
            out[o++] = (char)(h * 16 + l);
            i += 3;
        } else {
            out[o++] = s[i++];
        }
    }
    return o;
}

static size_t
longest_line(const char *s, size_t n)
{
    size_t max = 0, cur = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\r' && i + 1 < n && s[i + 1] == '\n') {
            max = md_max(max, cur);
            cur = 0;
            i++;
        } else {
            cur++;
        }
    }
    return md_max(max, cur);
}

/* True when every LF is preceded by CR and every CR followed by LF. */
static bool
crlf_only(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\n' && (i == 0 || s[i - 1] != '\r'))
            return false;
        if (s[i] == '\r' && (i + 1 == n || s[i + 1] != '\n'))
            return false;
    }
    return true;
}

/* Longest physical line among the headers (up to the blank line). */
static size_t
longest_header_line(const char *s, size_t n)
{
    const char *end = memmem(s, n, "\r\n\r\n", 4);
    return longest_line(s, end ? (size_t)(end - s) : n);
}

static void
base_message(md_mime_message_t *m)
{
    static const md_mime_addr_t to[] = {{NULL, "alice@example.com"}};
    memset(m, 0, sizeof(*m));
    m->from.name = "Acme Billing";
    m->from.addr = "billing@acme.example";
    m->to = to;
    m->nto = 1;
    m->subject = "Your invoice";
    m->text.data = "Hello Alice,\nYour invoice is ready.\n";
    m->text.len = strlen(m->text.data);
    m->message_id = "<0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b@mailerd.example>";
    m->mailerd_id = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
    m->date = 1700000000; /* Tue, 14 Nov 2023 22:13:20 UTC */
    m->random = fixed_random;
}

static char *
build_str(const md_mime_message_t *m, size_t *len, char *err, size_t errlen)
{
    md_buf_t b;
    md_buf_init(&b);
    if (md_mime_build(m, &b, err, errlen) != MD_OK) {
        md_buf_free(&b);
        return NULL;
    }
    if (len)
        *len = md_buf_len(&b);
    md_buf_append(&b, "", 1);
    return b.pos;
}

/* Returns the unfolded value of header name (malloc'd) or NULL. */
static char *
header_value(const char *msg, const char *name)
{
    size_t nl = strlen(name);
    const char *end = strstr(msg, "\r\n\r\n");
    for (const char *p = msg; p && p < end; p = strstr(p, "\r\n") + 2) {
        if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            md_buf_t b;
            md_buf_init(&b);
            for (;;) {
                const char *e = strstr(v, "\r\n");
                md_buf_append(&b, v, (size_t)(e - v));
                if (e[2] != ' ' && e[2] != '\t')
                    break;
                v = e + 2;
            }
            md_buf_append(&b, "", 1);
            return b.pos;
        }
    }
    return NULL;
}

static int
b64val(int c)
{
    const char *a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const char *p = c ? strchr(a, c) : NULL;
    return p ? (int)(p - a) : -1;
}

/* Decodes an unfolded header value as RFC 2047 6.2 says: whitespace between two
 * encoded-words is dropped, any other is kept, the leading run is not part of the
 * value. Checks each encoded-word is at most 75 characters and holds whole UTF-8
 * characters. Returns the number of encoded-words, or -1 on anything unexpected. */
static int
decode_words(const char *v, md_buf_t *out, size_t *longest)
{
    int words = 0;
    bool prev_ew = false, first = true;
    *longest = 0;
    while (*v) {
        const char *ws = v;
        while (*v == ' ' || *v == '\t')
            v++;
        size_t wsl = (size_t)(v - ws);
        if (!*v) {
            md_buf_append(out, ws, wsl);
            break;
        }
        const char *tok = v;
        while (*v && *v != ' ' && *v != '\t')
            v++;
        size_t tl = (size_t)(v - tok);
        bool ew = tl >= 12 && strncmp(tok, "=?UTF-8?", 8) == 0 && tok[9] == '?' &&
                  strncmp(tok + tl - 2, "?=", 2) == 0;
        if (!first && !(ew && prev_ew))
            md_buf_append(out, ws, wsl);
        first = false;
        prev_ew = ew;
        if (!ew) {
            if (memmem(tok, tl, "=?", 2))
                return -1; /* a broken encoded-word */
            md_buf_append(out, tok, tl);
            continue;
        }
        *longest = md_max(*longest, tl);
        const char *p = tok + 10, *e = tok + tl - 2;
        char enc = tok[8];
        md_buf_t w;
        md_buf_init(&w);
        if (enc == 'Q') {
            for (; p < e; p++) {
                if (*p == '_') {
                    md_buf_append(&w, " ", 1);
                } else if (*p == '=') {
                    char c = (char)(hexval(p[1]) * 16 + hexval(p[2]));
                    md_buf_append(&w, &c, 1);
                    p += 2;
                } else {
                    md_buf_append(&w, p, 1);
                }
            }
        } else if (enc == 'B') {
            unsigned acc = 0, bits = 0;
            for (; p < e && *p != '='; p++) {
                acc = acc << 6 | (unsigned)b64val(*p);
                bits += 6;
                if (bits >= 8) {
                    bits -= 8;
                    char c = (char)(acc >> bits);
                    md_buf_append(&w, &c, 1);
                }
            }
        } else {
            md_buf_free(&w);
            return -1;
        }
        /* A word ending inside a character would leave a lead byte without its
         * continuation bytes. */
        size_t wl = md_buf_len(&w);
        const unsigned char *wp = (const unsigned char *)w.pos;
        size_t i = 0;
        while (i < wl) {
            size_t k = wp[i] < 0x80 ? 1 : wp[i] < 0xe0 ? 2 : wp[i] < 0xf0 ? 3 : 4;
            if (i + k > wl) {
                md_buf_free(&w);
                return -1;
            }
            i += k;
        }
        md_buf_append(out, w.pos, wl);
        md_buf_free(&w);
        words++;
    }
    return words;
}

static void
test_base64(void)
{
    /* RFC 4648 section 10 test vectors. */
    static const char *const vec[][2] = {{"", ""},
                                         {"f", "Zg=="},
                                         {"fo", "Zm8="},
                                         {"foo", "Zm9v"},
                                         {"foob", "Zm9vYg=="},
                                         {"fooba", "Zm9vYmE="},
                                         {"foobar", "Zm9vYmFy"}};
    for (size_t i = 0; i < md_nelems(vec); i++) {
        char *got = b64(vec[i][0], strlen(vec[i][0]), 0);
        is_str(got, vec[i][1], "base64 \"%s\" (RFC 4648 section 10)", vec[i][0]);
        is_int(md_mime_base64_len(strlen(vec[i][0]), 0), strlen(vec[i][1]), "... length");
        free(got);
    }
    char bin[256];
    for (int i = 0; i < 256; i++)
        bin[i] = (char)i;
    char *got = b64(bin, 3, 0);
    is_str(got, "AAEC", "binary bytes");
    free(got);
    got = b64("\xfb\xff\xbf", 3, 0);
    is_str(got, "+/+/", "the two high characters of the alphabet");
    free(got);

    /* 57 bytes make exactly one 76-character MIME line. */
    char a[200];
    memset(a, 'a', sizeof(a));
    got = b64(a, 57, 76);
    ok(strlen(got) == 78 && strcmp(got + 76, "\r\n") == 0 && !strchr(got, '='),
       "57 bytes: one full 76-char line and CRLF");
    is_int(md_mime_base64_len(57, 76), 78, "... length");
    free(got);
    got = b64(a, 58, 76);
    ok(strlen(got) == 84 && memcmp(got + 76, "\r\nYQ==\r\n", 8) == 0, "58 bytes: a second line");
    is_int(md_mime_base64_len(58, 76), 84, "... length");
    free(got);
    got = b64(a, 0, 76);
    is_str(got, "", "nothing in, nothing out (no CRLF)");
    free(got);
    size_t total = 0;
    for (size_t n = 0; n < 200; n++) {
        char *g = b64(a, n, 76);
        total += strlen(g) == md_mime_base64_len(n, 76) && longest_line(g, strlen(g)) <= 76;
        free(g);
    }
    is_int(total, 200, "length formula and 76-char lines for 0..199 bytes");
}

static void
test_qp(void)
{
    char *got;
    got = qp("hello world", 11);
    is_str(got, "hello world", "printable ASCII stays as is");
    free(got);
    got = qp("a=b", 3);
    is_str(got, "a=3Db", "= is encoded (rule 1)");
    free(got);
    got = qp("caf\xc3\xa9", 5);
    is_str(got, "caf=C3=A9", "non-ASCII octets are =XX in upper case");
    free(got);
    got = qp("end \r\nnext\t\r\nlast ", 18);
    is_str(got, "end=20\r\nnext=09\r\nlast=20",
           "trailing space and tab before CRLF and at the end (rule 3)");
    free(got);
    got = qp("a b\tc", 5);
    is_str(got, "a b\tc", "inner whitespace stays literal");
    free(got);
    got = qp("x\ry\nz", 5);
    is_str(got, "x=0Dy=0Az", "bare CR and LF are encoded, not taken for line breaks");
    free(got);

    char line[300];
    memset(line, 'a', sizeof(line));
    got = qp(line, 76);
    ok(strlen(got) == 76 && !strchr(got, '='), "a 76-char line needs no soft break");
    free(got);
    got = qp(line, 77);
    ok(strlen(got) == 80 && memcmp(got + 75, "=\r\n", 3) == 0 && strlen(got + 78) == 2,
       "a 77-char line: 75 chars, soft break, the rest (rule 5)");
    free(got);
    memcpy(line + 74, "=", 1);
    got = qp(line, 80);
    ok(memcmp(got + 74, "=\r\n=3D", 6) == 0, "an =XX escape is never split by a soft break");
    free(got);
    memset(line, 'a', sizeof(line));
    memcpy(line + 75, " \r\n", 3);
    got = qp(line, 78);
    ok(memcmp(got + 75, "=\r\n=20\r\n", 8) == 0,
       "a space that ends up last on a line is still encoded");
    free(got);

    /* Round trip through an independent decoder over awkward inputs. */
    unsigned seed = 12345;
    int good = 0;
    for (int round = 0; round < 200; round++) {
        char in[600];
        size_t n = (size_t)(round * 3);
        for (size_t i = 0; i < n; i++) {
            seed = seed * 1103515245u + 12345u;
            unsigned r = (seed >> 16) % 10;
            in[i] = r < 5    ? 'a'
                    : r == 5 ? ' '
                    : r == 6 ? '='
                    : r == 7 ? '\t'
                    : r == 8 ? (char)0xe9
                             : '.';
            if (r == 9 && i + 1 < n) {
                in[i] = '\r';
                in[++i] = '\n';
            }
        }
        char *enc = qp(in, n);
        char dec[2000];
        long dl = qp_decode(enc, dec);
        size_t el = strlen(enc);
        bool trailing_ws = false;
        for (size_t i = 0; i + 2 < el + 1; i++) {
            if ((enc[i] == ' ' || enc[i] == '\t') && (i + 1 == el || enc[i + 1] == '\r'))
                trailing_ws = true;
        }
        if (dl == (long)n && memcmp(dec, in, n) == 0 && longest_line(enc, el) <= 76 &&
            crlf_only(enc, el) && !trailing_ws)
            good++;
        free(enc);
    }
    is_int(good, 200, "200 random inputs: decode back, lines <= 76, no trailing whitespace");

    /* The encoder writes into room it reserves up front for the worst case:
     * every octet encoded, soft breaks all along (ASan checks the bound). */
    for (size_t n = 1; n <= 3000; n = n * 3 + 1) {
        char *in = malloc(n);
        memset(in, '=', n);
        char *enc = qp(in, n);
        char *dec = malloc(n + 1);
        long dl = qp_decode(enc, dec);
        size_t el = strlen(enc);
        size_t breaks = 3 * n / 75 - (3 * n % 75 == 0 ? 1 : 0);
        ok(dl == (long)n && memcmp(dec, in, n) == 0 && longest_line(enc, el) <= 76 &&
               el == 3 * n + 3 * breaks,
           "%zu octets that all need encoding: %zu characters, %zu soft breaks, decode back", n, el,
           breaks);
        free(in);
        free(dec);
        free(enc);
    }
}

static const char exact_single[] =
    "Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"
    "From: Acme Billing <billing@acme.example>\r\n"
    "To: alice@example.com\r\n"
    "Subject: Your invoice\r\n"
    "Message-ID: <0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b@mailerd.example>\r\n"
    "MIME-Version: 1.0\r\n"
    "X-Mailerd-Message-Id: 0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 7bit\r\n"
    "\r\n"
    "Hello Alice,\r\n"
    "Your invoice is ready.\r\n";

static const char exact_multi[] =
    "Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"
    "From: =?UTF-8?B?Sm9zw6kgTcO8bGxlcg==?= <jose@example.com>\r\n"
    "To: alice@example.com, Bob Smith <bob@example.org>\r\n"
    "Cc: \"Doe, Jane\" <jane@example.net>\r\n"
    "Reply-To: =?UTF-8?Q?Z=C3=BCrich-Flughafen?= <support@acme.example>\r\n"
    "Subject: =?UTF-8?B?Q2Fmw6kg4piV?= order\r\n"
    "Message-ID: <id1@mailerd.example>\r\n"
    "MIME-Version: 1.0\r\n"
    "List-Unsubscribe: <https://u.example/x>\r\n"
    "Content-Type: multipart/alternative;\r\n"
    " boundary=\"=_mailerd000102030405060708090a0b0c0d0e0f\"\r\n"
    "\r\n"
    "--=_mailerd000102030405060708090a0b0c0d0e0f\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: quoted-printable\r\n"
    "\r\n"
    "Merci, caf=C3=A9 =3D bien!\r\n"
    "\r\n"
    "--=_mailerd000102030405060708090a0b0c0d0e0f\r\n"
    "Content-Type: text/html; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 7bit\r\n"
    "\r\n"
    "<p>Merci</p>\r\n"
    "--=_mailerd000102030405060708090a0b0c0d0e0f--\r\n";

static void
test_exact(void)
{
    md_mime_message_t m;
    char err[256];
    base_message(&m);
    char *got = build_str(&m, NULL, err, sizeof(err));
    is_str(got, exact_single, "ASCII text-only message, byte for byte");
    free(got);

    static const md_mime_addr_t to[] = {{NULL, "alice@example.com"},
                                        {"Bob Smith", "bob@example.org"}};
    static const md_mime_addr_t cc[] = {{"Doe, Jane", "jane@example.net"}};
    static const md_mime_addr_t rt[] = {{"Z\xc3\xbcrich-Flughafen", "support@acme.example"}};
    static const md_mime_header_t hx[] = {{"List-Unsubscribe", "<https://u.example/x>"}};
    base_message(&m);
    m.from.name = "Jos\xc3\xa9 M\xc3\xbcller";
    m.from.addr = "jose@example.com";
    m.to = to;
    m.nto = 2;
    m.cc = cc;
    m.ncc = 1;
    m.reply_to = rt;
    m.nreply_to = 1;
    m.subject = "Caf\xc3\xa9 \xe2\x98\x95 order";
    m.text = (md_str_t){strlen("Merci, caf\xc3\xa9 = bien!\n"), "Merci, caf\xc3\xa9 = bien!\n"};
    m.html = (md_str_t){strlen("<p>Merci</p>"), "<p>Merci</p>"};
    m.headers = hx;
    m.nheaders = 1;
    m.message_id = "<id1@mailerd.example>";
    m.mailerd_id = NULL;
    got = build_str(&m, NULL, err, sizeof(err));
    is_str(got, exact_multi, "UTF-8 names and subject, both parts, byte for byte");
    free(got);

    /* html only: a single part, 7bit. */
    base_message(&m);
    m.text = (md_str_t)md_null_string;
    m.html = (md_str_t){7, "<b>x</b"};
    got = build_str(&m, NULL, err, sizeof(err));
    ok(got && strstr(got, "Content-Type: text/html; charset=utf-8\r\n") &&
           !strstr(got, "multipart") && strstr(got, "\r\n\r\n<b>x</b") &&
           strcmp(got + strlen(got) - 7, "<b>x</b") == 0,
       "html only: a single text/html part");
    free(got);

    /* Bare LF and CR become CRLF; nothing is added at the end. */
    base_message(&m);
    m.text = (md_str_t){8, "a\nb\rc\r\nd"};
    got = build_str(&m, NULL, err, sizeof(err));
    ok(got && strcmp(strstr(got, "\r\n\r\n") + 4, "a\r\nb\r\nc\r\nd") == 0,
       "bare LF and CR are normalised to CRLF");
    free(got);
}

static void
test_subjects(void)
{
    md_mime_message_t m;
    char err[256];
    /* Long subjects in several scripts: every word <= 75, decodes back, lines <= 78. */
    static const char *const pieces[] = {"\xc3\xa9t\xc3\xa9 ", "\xd0\x9f\xd1\x80\xd0\xb8 ",
                                         "\xe6\x97\xa5\xe6\x9c\xac ", "\xf0\x9f\x98\x80",
                                         "plain words "};
    for (size_t k = 0; k < md_nelems(pieces); k++) {
        md_buf_t s;
        md_buf_init(&s);
        md_buf_append_str(&s, "R\xc3\xa9sum\xc3\xa9: ");
        for (int i = 0; i < 40; i++)
            md_buf_append_str(&s, pieces[k]);
        md_buf_append(&s, "", 1);
        base_message(&m);
        m.subject = s.pos;
        size_t len;
        char *got = build_str(&m, &len, err, sizeof(err));
        char *v = got ? header_value(got, "Subject") : NULL;
        md_buf_t dec;
        md_buf_init(&dec);
        size_t longest = 0;
        int words = v ? decode_words(v, &dec, &longest) : -1;
        md_buf_append(&dec, "", 1);
        ok(words > 2 && longest <= 75, "long subject %zu: %d encoded-words, longest %zu <= 75", k,
           words, longest);
        is_str(dec.pos, s.pos, "... decodes back to the input");
        ok(got && longest_header_line(got, len) <= 78, "... folded at 78");
        free(v);
        free(got);
        md_buf_free(&dec);
        md_buf_free(&s);
    }

    /* Plain ASCII folds at its own spaces and unfolds to itself. */
    md_buf_t s;
    md_buf_init(&s);
    for (int i = 0; i < 30; i++)
        md_buf_append_str(&s, "word  and\tmore ");
    md_buf_append_str(&s, "end");
    md_buf_append(&s, "", 1);
    base_message(&m);
    m.subject = s.pos;
    size_t len;
    char *got = build_str(&m, &len, err, sizeof(err));
    char *v = header_value(got, "Subject");
    ok(v && v[0] == ' ' && strcmp(v + 1, s.pos) == 0 && !strstr(v, "=?"),
       "a long ASCII subject stays ASCII and unfolds to itself");
    ok(longest_header_line(got, len) <= 78, "... folded at 78");
    free(v);
    free(got);
    md_buf_free(&s);

    /* A word too long to fold, and text that looks like an encoded-word, are encoded. */
    char longword[400];
    memset(longword, 'x', sizeof(longword) - 1);
    longword[sizeof(longword) - 1] = '\0';
    m.subject = longword;
    got = build_str(&m, &len, err, sizeof(err));
    ok(got && longest_header_line(got, len) <= 78 && strstr(got, "Subject: =?UTF-8?"),
       "a 399-char word is encoded so that it folds");
    free(got);
    m.subject = "=?UTF-8?B?aGk=?=";
    got = build_str(&m, &len, err, sizeof(err));
    v = got ? header_value(got, "Subject") : NULL;
    md_buf_t dec;
    md_buf_init(&dec);
    size_t longest;
    decode_words(v ? v : "", &dec, &longest);
    md_buf_append(&dec, "", 1);
    is_str(dec.pos,
           "=?UTF-8?B?aGk=?=", "a subject that looks encoded is encoded, not passed through");
    md_buf_free(&dec);
    free(v);
    free(got);

    /* Display names. */
    static md_mime_addr_t to[4];
    to[0] = (md_mime_addr_t){"Dr. Who", "who@example.com"};
    to[1] = (md_mime_addr_t){"Say \"hi\" \\o/", "hi@example.com"};
    to[2] =
        (md_mime_addr_t){"\xe5\xb1\xb1\xe7\x94\xb0 \xe5\xa4\xaa\xe9\x83\x8e", "taro@example.jp"};
    to[3] = (md_mime_addr_t){NULL, "user@B\xc3\xbc"
                                   "cher.example"};
    base_message(&m);
    m.to = to;
    m.nto = 4;
    got = build_str(&m, &len, err, sizeof(err));
    v = got ? header_value(got, "To") : NULL;
    ok(v && strstr(v, "\"Dr. Who\" <who@example.com>"), "a name with a special is quoted");
    ok(v && strstr(v, "\"Say \\\"hi\\\" \\\\o/\" <hi@example.com>"), "... with \" and \\ escaped");
    ok(v && strstr(v, "=?UTF-8?B?5bGx55SwIOWkqumDjg==?= <taro@example.jp>"),
       "a non-ASCII name is an encoded-word");
    ok(v && strstr(v, ", user@xn--bcher-kva.example"), "a UTF-8 domain is written as its A-label");
    ok(got && longest_header_line(got, len) <= 78, "To with four addresses folds at 78");
    free(v);
    free(got);

    /* Printable ASCII too long for a quoted-string on one line: word by word. */
    static const char longname[] = "Acme Corporation, Customer Success & Billing Department "
                                   "(EMEA), Dublin Office";
    to[0] = (md_mime_addr_t){longname, "emea@example.com"};
    m.nto = 1;
    got = build_str(&m, &len, err, sizeof(err));
    v = got ? header_value(got, "To") : NULL;
    char *lt = v ? strstr(v, " <emea@example.com>") : NULL;
    if (lt)
        *lt = '\0';
    md_buf_init(&dec);
    int words = lt ? decode_words(v, &dec, &longest) : -1;
    md_buf_append(&dec, "", 1);
    ok(words >= 1 && strncmp(v, " Acme =?UTF-8?Q?Corporation=2C?= Customer", 40) == 0,
       "a long name with specials: atoms stay plain, the rest is encoded (%d words)", words);
    is_str(dec.pos, longname, "... and it decodes back");
    ok(got && longest_header_line(got, len) <= 78, "... folded at 78");
    md_buf_free(&dec);
    free(v);
    free(got);
}

/* An empty part next to a full one: its encoded buffer has no memory at all,
 * and the boundary check searched it (memmem on NULL: scripts/fuzz under
 * UBSan). Both parts are written, the empty one with an empty body. */
static void
test_empty_part(void)
{
    md_mime_message_t m;
    char err[256];
    size_t len;
    base_message(&m);
    m.text = (md_str_t){0, ""};
    m.html = (md_str_t){8, "<p>x</p>"};
    char *got = build_str(&m, &len, err, sizeof(err));
    ok(got != NULL, "an empty text part beside an html part builds (%s)", got ? "ok" : err);
    ok(got && strstr(got, "multipart/alternative") && strstr(got, "Content-Type: text/plain") &&
           strstr(got, "<p>x</p>"),
       "... as multipart/alternative with both parts");
    free(got);
}

static void
test_lines(void)
{
    md_mime_message_t m;
    char err[256];
    size_t len;
    md_buf_t html;
    md_buf_init(&html);
    md_buf_append_str(&html, "<html><body><p>");
    for (int i = 0; i < 5000; i++)
        md_buf_append(&html, i % 7 ? "x" : " ", 1);
    md_buf_append_str(&html, "</p></body></html>");
    base_message(&m);
    m.text = (md_str_t)md_null_string;
    m.html = (md_str_t){md_buf_len(&html), html.pos};
    char *got = build_str(&m, &len, err, sizeof(err));
    ok(got && strstr(got, "Content-Transfer-Encoding: quoted-printable"),
       "a 5,000-char ASCII html line is quoted-printable");
    ok(got && longest_line(got, len) <= 76 && crlf_only(got, len),
       "... every line <= 76, CRLF only");
    free(got);

    /* Mostly non-Latin text goes base64, with 76-char lines. */
    md_buf_t t;
    md_buf_init(&t);
    for (int i = 0; i < 3000; i++)
        md_buf_append_str(&t, "\xe6\x97\xa5");
    base_message(&m);
    m.text = (md_str_t){md_buf_len(&t), t.pos};
    m.html = (md_str_t){md_buf_len(&html), html.pos};
    got = build_str(&m, &len, err, sizeof(err));
    ok(got && strstr(got, "Content-Transfer-Encoding: base64"), "3,000 CJK characters: base64");
    ok(got && strstr(got, "Content-Transfer-Encoding: quoted-printable"),
       "... while the html part of the same message is quoted-printable");
    ok(got && longest_line(got, len) <= 78 && crlf_only(got, len),
       "... no line over 78, CRLF only");
    free(got);
    md_buf_free(&t);
    md_buf_free(&html);

    /* A body holding the very boundary the generator will produce. */
    const char *bnd = "=_mailerd000102030405060708090a0b0c0d0e0f";
    char body[200];
    snprintf(body, sizeof(body), "before\n--%s\nafter\n--%s--\n", bnd, bnd);
    base_message(&m);
    m.text = (md_str_t){strlen(body), body};
    m.html = (md_str_t){3, "<p>"};
    got = build_str(&m, &len, err, sizeof(err));
    int count = 0;
    for (const char *p = got; p && (p = strstr(p, bnd)) != NULL; p++)
        count++;
    is_int(count, 4, "the boundary occurs only in the header and the three delimiters");
    ok(got && strstr(got, "quoted-printable\r\n\r\nbefore\r\n--=3D_mailerd"),
       "... the colliding 7bit part was re-encoded as quoted-printable");
    free(got);
    unsigned seed = 77;
    m.random_ctx = &seed;
    got = build_str(&m, &len, err, sizeof(err));
    ok(got && strstr(got, "boundary=\"=_mailerd4d4e4f50") && strstr(got, "7bit\r\n\r\nbefore"),
       "another seed gives another boundary and the part stays 7bit");
    free(got);

    /* The default generator gives a boundary too, and differs between calls. */
    base_message(&m);
    m.html = (md_str_t){3, "<p>"};
    m.random = NULL;
    char *a = build_str(&m, NULL, err, sizeof(err));
    char *b = build_str(&m, NULL, err, sizeof(err));
    ok(a && b && strstr(a, "boundary=\"=_mailerd") && strcmp(a, b) != 0,
       "the default random source gives a fresh boundary each time");
    free(a);
    free(b);
}

/* Builds m into a buffer holding "x" first and checks the call fails, says why
 * (matching want), and leaves the buffer as it was. */
static void
refused(const md_mime_message_t *m, const char *want, const char *what)
{
    md_buf_t b;
    md_buf_init(&b);
    md_buf_append(&b, "x", 1);
    char err[256];
    int rc = md_mime_build(m, &b, err, sizeof(err));
    ok(rc == MD_ERROR && md_buf_len(&b) == 1 && strstr(err, want) != NULL, "refused: %s (%s)", what,
       err);
    md_buf_free(&b);
}

static void
test_refusals(void)
{
    md_mime_message_t m;
    static md_mime_header_t h[1];
    static const char *const reserved[] = {"From",
                                           "to",
                                           "CC",
                                           "Bcc",
                                           "Reply-To",
                                           "Subject",
                                           "date",
                                           "Message-Id",
                                           "MIME-Version",
                                           "Content-Type",
                                           "content-transfer-encoding",
                                           "X-Mailerd-Message-Id",
                                           "Sender",
                                           "Return-Path"};
    for (size_t i = 0; i < md_nelems(reserved); i++) {
        base_message(&m);
        h[0] = (md_mime_header_t){reserved[i], "x"};
        m.headers = h;
        m.nheaders = 1;
        refused(&m, "cannot be given", reserved[i]);
    }
    base_message(&m);
    m.headers = h;
    m.nheaders = 1;
    h[0] = (md_mime_header_t){"X-Tag", "a\r\nBcc: victim@example.com"};
    refused(&m, "line break", "CRLF in a header value");
    h[0] = (md_mime_header_t){"X-Tag", "a\nb"};
    refused(&m, "line break", "bare LF in a header value");
    h[0] = (md_mime_header_t){"X-Tag", "a\rb"};
    refused(&m, "line break", "bare CR in a header value");
    h[0] = (md_mime_header_t){"X-Tag: y", "a"};
    refused(&m, "ftext", "a colon or space in a header name");
    h[0] = (md_mime_header_t){"X-T\xc3\xa4g", "a"};
    refused(&m, "ftext", "non-ASCII in a header name");
    h[0] = (md_mime_header_t){"", "a"};
    refused(&m, "header name", "an empty header name");
    char big[1200];
    memset(big, 'y', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    h[0] = (md_mime_header_t){"X-Long", big};
    refused(&m, "too long", "an ASCII header value that cannot fold under 998");
    h[0] = (md_mime_header_t){"X-Bad", "\xff"};
    refused(&m, "UTF-8", "invalid UTF-8 in a header value");

    base_message(&m);
    m.subject = "Hi\r\nBcc: victim@example.com";
    refused(&m, "line break", "CRLF in the subject");
    m.subject = "caf\xc3";
    refused(&m, "UTF-8", "a truncated UTF-8 sequence in the subject");
    m.subject = "\xed\xa0\x80";
    refused(&m, "UTF-8", "a UTF-16 surrogate in the subject");
    m.subject = "\xc0\xaf";
    refused(&m, "UTF-8", "an overlong sequence in the subject");

    static md_mime_addr_t to[1];
    base_message(&m);
    m.to = to;
    to[0] = (md_mime_addr_t){"Eve\r\nBcc: x@y.z", "eve@example.com"};
    refused(&m, "line break", "CRLF in a display name");
    to[0] = (md_mime_addr_t){NULL, "eve@example.com>\r\nBcc: x@y.z"};
    refused(&m, "To", "CRLF in an address");
    to[0] = (md_mime_addr_t){NULL, "a@b, c@d"};
    refused(&m, "To", "two addresses in one");
    to[0] = (md_mime_addr_t){NULL, "j\xc3\xbcrgen@example.de"};
    refused(&m, "SMTPUTF8", "a non-ASCII local part");
    to[0] = (md_mime_addr_t){NULL, "user@bad_label\xc3\xbc.example"};
    refused(&m, "IDN domain", "an IDN domain the address module refuses");
    to[0] = (md_mime_addr_t){NULL, "no-at-sign"};
    refused(&m, "@domain", "an address without @");
    to[0] = (md_mime_addr_t){NULL, NULL};
    refused(&m, "missing", "a NULL address");

    base_message(&m);
    m.message_id = "no-brackets@x";
    refused(&m, "message_id", "a Message-ID without brackets");
    m.message_id = "<a b@x>";
    refused(&m, "message_id", "a Message-ID with a space");
    m.message_id = NULL;
    refused(&m, "message_id", "no Message-ID");
    base_message(&m);
    m.mailerd_id = "a\r\nb";
    refused(&m, "mailerd_id", "CRLF in X-Mailerd-Message-Id");
    base_message(&m);
    m.text = (md_str_t)md_null_string;
    refused(&m, "neither", "no body at all");
    m.html = (md_str_t){2, "\xc3("};
    refused(&m, "UTF-8", "invalid UTF-8 in the html body");
}

/* ---- --emit: files for the independent parser ----------------------------------- */

static void
json_field(md_buf_t *j, const char *key, const char *v, size_t n, bool last)
{
    md_buf_printf(j, "\"%s\":", key);
    if (v == NULL) {
        md_buf_append_str(j, "null");
    } else {
        md_buf_append(j, "\"", 1);
        md_buf_append_json_escaped(j, v, n);
        md_buf_append(j, "\"", 1);
    }
    md_buf_append_str(j, last ? "}\n" : ",");
}

static int
write_file(const char *dir, const char *name, const char *ext, const char *data, size_t n)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s.%s", dir, name, ext);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(data, 1, n, f) != n || fclose(f) != 0) {
        fprintf(stderr, "mime_t: cannot write %s\n", path);
        return 1;
    }
    return 0;
}

/* Writes NAME.eml and NAME.json (the inputs the parser should get back). */
static int
emit_one(const char *dir, const char *name, const md_mime_message_t *m)
{
    md_buf_t out, j;
    md_buf_init(&out);
    md_buf_init(&j);
    char err[256];
    if (md_mime_build(m, &out, err, sizeof(err)) != MD_OK) {
        fprintf(stderr, "mime_t: %s: %s\n", name, err);
        return 1;
    }
    md_buf_append_str(&j, "{\"to\":[");
    for (size_t i = 0; i < m->nto; i++) {
        md_buf_append_str(&j, i ? ",[" : "[");
        const char *nm = m->to[i].name ? m->to[i].name : "";
        md_buf_append(&j, "\"", 1);
        md_buf_append_json_escaped(&j, nm, strlen(nm));
        md_buf_printf(&j, "\",\"%s\"]", m->to[i].addr);
    }
    md_buf_append_str(&j, "],");
    const char *fn = m->from.name ? m->from.name : "";
    json_field(&j, "from_name", fn, strlen(fn), false);
    json_field(&j, "from_addr", m->from.addr, strlen(m->from.addr), false);
    json_field(&j, "subject", m->subject, m->subject ? strlen(m->subject) : 0, false);
    json_field(&j, "text", m->text.data, m->text.len, false);
    json_field(&j, "html", m->html.data, m->html.len, true);
    int rc = write_file(dir, name, "eml", out.pos, md_buf_len(&out)) ||
             write_file(dir, name, "json", j.pos, md_buf_len(&j));
    md_buf_free(&out);
    md_buf_free(&j);
    return rc;
}

static int
emit(const char *dir)
{
    md_mime_message_t m;
    int rc = 0;
    static const md_mime_addr_t to_utf8[] = {
        {"Fran\xc3\xa7ois L'\xc3\x89tranger", "francois@example.fr"},
        {"\xe5\xb1\xb1\xe7\x94\xb0 \xe5\xa4\xaa\xe9\x83\x8e", "taro@example.jp"},
        {"Doe, Jane \"JD\"", "jane@example.net"},
        {NULL, "plain@example.com"}};

    base_message(&m);
    rc |= emit_one(dir, "ascii", &m);

    base_message(&m);
    m.from.name = "Jos\xc3\xa9 M\xc3\xbcller";
    m.to = to_utf8;
    m.nto = md_nelems(to_utf8);
    m.subject =
        "R\xc3\xa9sum\xc3\xa9 \xe2\x80\x94 \xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82, "
        "\xe4\xb8\x96\xe7\x95\x8c! A longer subject line so that it has to be folded "
        "across more than one line of the header";
    m.text =
        (md_str_t){strlen("Bonjour Fran\xc3\xa7ois,\n\nVoil\xc3\xa0 = le r\xc3\xa9sum\xc3\xa9. \n"),
                   "Bonjour Fran\xc3\xa7ois,\n\nVoil\xc3\xa0 = le r\xc3\xa9sum\xc3\xa9. \n"};
    rc |= emit_one(dir, "utf8", &m);

    base_message(&m);
    m.html = (md_str_t){strlen("<p>Hello <b>Alice</b> &amp; co</p>\n"),
                        "<p>Hello <b>Alice</b> &amp; co</p>\n"};
    rc |= emit_one(dir, "both", &m);

    base_message(&m);
    m.text = (md_str_t)md_null_string;
    m.html = (md_str_t){strlen("<h1>Only html</h1>"), "<h1>Only html</h1>"};
    rc |= emit_one(dir, "htmlonly", &m);

    md_buf_t lt, lh;
    md_buf_init(&lt);
    md_buf_init(&lh);
    for (int i = 0; i < 5000; i++)
        md_buf_append(&lh, i % 9 ? "y" : " ", 1);
    for (int i = 0; i < 300; i++)
        md_buf_append_str(&lt, "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e ");
    md_buf_append_str(&lt, "\r\nCRLF line\rCR line\nLF line\t \n");
    base_message(&m);
    m.text = (md_str_t){md_buf_len(&lt), lt.pos};
    m.html = (md_str_t){md_buf_len(&lh), lh.pos};
    rc |= emit_one(dir, "longlines", &m);
    md_buf_free(&lt);
    md_buf_free(&lh);

    base_message(&m);
    m.from.name = "\xf0\x9f\x9a\x80 Rocket \xf0\x9f\x98\x80\xf0\x9f\x98\x80\xf0\x9f\x98\x80 Team "
                  "\xf0\x9f\x8e\x89\xf0\x9f\x8e\x89\xf0\x9f\x8e\x89\xf0\x9f\x8e\x89";
    m.subject =
        "\xf0\x9f\x8e\x89\xf0\x9f\x8e\x89 Party \xf0\x9f\x8e\x89\xf0\x9f\x8e\x89\xf0\x9f\x8e"
        "\x89\xf0\x9f\x8e\x89\xf0\x9f\x8e\x89\xf0\x9f\x8e\x89\xf0\x9f\x8e\x89\xf0\x9f\x8e"
        "\x89\xf0\x9f\x8e\x89\xf0\x9f\x8e\x89\xf0\x9f\x8e\x89\xf0\x9f\x8e\x89\xf0\x9f\x8e"
        "\x89\xf0\x9f\x8e\x89 time \xf0\x9f\x98\x80";
    m.text = (md_str_t){strlen("Emoji \xf0\x9f\x98\x80 body \xf0\x9f\x8e\x89\n"),
                        "Emoji \xf0\x9f\x98\x80 body \xf0\x9f\x8e\x89\n"};
    m.html = (md_str_t){strlen("<p>Emoji \xf0\x9f\x98\x80</p>"), "<p>Emoji \xf0\x9f\x98\x80</p>"};
    rc |= emit_one(dir, "emoji", &m);

    /* Names long enough to need adjacent encoded-words (CJK without spaces), and the
     * name from CPython's gh-128110 report, which word-by-word encoding keeps apart. */
    static const md_mime_addr_t to_long[] = {
        {"\xe5\xb1\xb1\xe7\x94\xb0\xe5\xa4\xaa\xe9\x83\x8e\xe3\x81\xa8\xe8\x8a\xb1\xe5"
         "\xad\x90\xe3\x81\xa8\xe4\xb8\x80\xe9\x83\x8e\xe3\x81\xa8\xe6\xac\xa1\xe9\x83"
         "\x8e\xe3\x81\xa8\xe4\xb8\x89\xe9\x83\x8e\xe3\x81\xa8\xe5\x9b\x9b\xe9\x83\x8e",
         "family@example.jp"},
        {"B\xc3\xa9r\xc3\xa9nice-Am\xc3\xa9lie Rosemonde D\xc3\xbb"
         "bois-B\xc3\xa9nard",
         "rose@example.com"},
        {"Acme Corporation, Customer Success & Billing Department (EMEA), Dublin Office",
         "emea@example.com"}};
    base_message(&m);
    m.to = to_long;
    m.nto = md_nelems(to_long);
    m.subject = "\xe5\xb1\xb1\xe7\x94\xb0\xe5\xa4\xaa\xe9\x83\x8e\xe3\x81\xa8\xe8\x8a\xb1"
                "\xe5\xad\x90\xe3\x81\xa8\xe4\xb8\x80\xe9\x83\x8e\xe3\x81\xa8\xe6\xac\xa1"
                "\xe9\x83\x8e\xe3\x81\xa8\xe4\xb8\x89\xe9\x83\x8e";
    rc |= emit_one(dir, "longname", &m);
    return rc;
}

int
main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--emit") == 0)
        return emit(argv[2]);
    test_base64();
    test_qp();
    test_exact();
    test_subjects();
    test_lines();
    test_empty_part();
    test_refusals();
    return done_testing();
}
