/*
 * MIME message builder (see md_mime.h). Everything is written in one pass into the
 * caller's buffer; on any refusal the buffer is cut back to its length on entry, so
 * a caller never sees half a message.
 *
 * Choices made here, and why:
 * - Header lines fold at 78 columns (RFC 5322 2.1.1 SHOULD) and never exceed 998
 *   (MUST). A value that cannot fold at whitespace (a long subject word) is written
 *   as encoded-words instead, which can always be split.
 * - A header value that needs RFC 2047 is written word by word: plain words as they
 *   are, each run of other words as encoded-words with the spaces of the run inside
 *   them (decoders drop whitespace between adjacent encoded-words, RFC 2047 6.2).
 *   Values with tabs or runs of spaces are encoded whole, to round-trip exactly.
 * - Q encoding uses the "phrase" safe set (RFC 2047 5(3)) everywhere; it is also
 *   valid in unstructured text, so one encoder serves Subject and display names.
 * - The multipart boundary starts with "=_": quoted-printable output only ever has
 *   "=" before a hex digit or CRLF and base64 only before "=" or CRLF, so the
 *   boundary cannot occur in those parts; a 7bit part that happens to contain it is
 *   re-encoded as quoted-printable. No retry loop, whatever the input.
 */
#include "md_mime.h"
#include "md_id.h"
#include "md_address.h"

#include <stdarg.h>
#include <stdio.h>
#include <strings.h>

#define MD_MIME_FOLD       78 /* preferred header line length */
#define MD_MIME_MAX_LINE   998
#define MD_MIME_EW_MAX     75 /* RFC 2047 2: an encoded-word is at most 75 chars */
#define MD_MIME_EW_OVER    12 /* strlen("=?UTF-8?Q?") + strlen("?=") */
#define MD_MIME_7BIT_LINE  78 /* longest body line still sent as 7bit */
#define MD_MIME_B64_LINE   76
#define MD_MIME_ADDR_MAX   254
#define MD_MIME_MSGID_MAX  250
#define MD_MIME_HNAME_MAX  76
#define MD_MIME_BOUND_RAND 16

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char hex_upper[] = "0123456789ABCDEF";

static int fail(char *err, size_t errlen, const char *fmt, ...) md_printf_like(3, 4);

/* Formats a refusal into err (when there is room) and returns MD_ERROR. */
static int
fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return MD_ERROR;
}

/* ---- encoders ------------------------------------------------------------------ */

size_t
md_mime_base64_len(size_t n, size_t line_len)
{
    size_t chars = 4 * ((n + 2) / 3);
    if (line_len == 0 || chars == 0)
        return chars;
    return chars + 2 * ((chars + line_len - 1) / line_len);
}

void
md_mime_base64_encode(md_buf_t *out, const void *data, size_t n, size_t line_len)
{
    const unsigned char *p = data;
    md_buf_reserve(out, md_mime_base64_len(n, line_len));
    char *w = out->last;
    size_t col = 0;
    for (size_t i = 0; i < n; i += 3) {
        size_t left = n - i;
        uint32_t v = (uint32_t)p[i] << 16;
        if (left > 1)
            v |= (uint32_t)p[i + 1] << 8;
        if (left > 2)
            v |= p[i + 2];
        char q[4] = {b64_alphabet[(v >> 18) & 63], b64_alphabet[(v >> 12) & 63],
                     left > 1 ? b64_alphabet[(v >> 6) & 63] : '=',
                     left > 2 ? b64_alphabet[v & 63] : '='};
        for (int k = 0; k < 4; k++) {
            *w++ = q[k];
            if (line_len && ++col == line_len) {
                *w++ = '\r';
                *w++ = '\n';
                col = 0;
            }
        }
    }
    if (line_len && col) {
        *w++ = '\r';
        *w++ = '\n';
    }
    out->last = w;
}

void
md_mime_qp_encode(md_buf_t *out, const void *data, size_t n)
{
    const unsigned char *p = data;
    /* Worst case: every octet "=XX", and a soft break ("=\r\n") after every 73 or
     * more output characters. */
    md_buf_reserve(out, 3 * n + (3 * n / 72 + 1) * 3);
    char *w = out->last;
    size_t col = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = p[i];
        if (c == '\r' && i + 1 < n && p[i + 1] == '\n') {
            *w++ = '\r';
            *w++ = '\n';
            col = 0;
            i++;
            continue;
        }
        /* Whitespace at the end of a line may be stripped in transport (RFC 2045
         * 6.7 rule 3), so it is encoded there; elsewhere it stays readable. */
        bool at_eol = i + 1 == n || (p[i + 1] == '\r' && i + 2 < n && p[i + 2] == '\n');
        bool literal = (c >= 33 && c <= 126 && c != '=') || ((c == ' ' || c == '\t') && !at_eol);
        size_t len = literal ? 1 : 3;
        /* 76 chars per line; a line that continues needs one of them for the "=". */
        if (col + len > (at_eol ? 76u : 75u)) {
            *w++ = '=';
            *w++ = '\r';
            *w++ = '\n';
            col = 0;
        }
        if (literal) {
            *w++ = (char)c;
        } else {
            *w++ = '=';
            *w++ = hex_upper[c >> 4];
            *w++ = hex_upper[c & 15];
        }
        col += len;
    }
    out->last = w;
}

/* ---- header lines ---------------------------------------------------------------- */

typedef struct md_mime_hdr_s {
    md_buf_t *out;
    size_t col;     /* octets on the current physical line */
    size_t max_col; /* longest physical line written so far */
    bool has_token; /* something follows "Name:" on the logical line */
} md_mime_hdr_t;

static void
hdr_start(md_mime_hdr_t *h, md_buf_t *out, const char *name)
{
    h->out = out;
    md_buf_append_str(out, name);
    md_buf_append(out, ":", 1);
    h->col = strlen(name) + 1;
    h->max_col = h->col;
    h->has_token = false;
}

/* Appends one token. A token that begins with a space or tab may be moved to a new
 * line (the CRLF goes before its whitespace, so unfolding restores it exactly);
 * other tokens (",") stay attached to what precedes them. */
static void
hdr_token(md_mime_hdr_t *h, const char *tok, size_t n)
{
    if (n == 0)
        return;
    if (h->has_token && (tok[0] == ' ' || tok[0] == '\t') && h->col + n > MD_MIME_FOLD) {
        md_buf_append(h->out, "\r\n", 2);
        h->col = 0;
    }
    md_buf_append(h->out, tok, n);
    h->col += n;
    h->max_col = md_max(h->max_col, h->col);
    h->has_token = true;
}

static void
hdr_end(md_mime_hdr_t *h)
{
    md_buf_append(h->out, "\r\n", 2);
}

/* RFC 2047 5(3): the characters a Q-encoded word may carry literally in a phrase. */
static bool
q_literal(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '!' ||
           c == '*' || c == '+' || c == '-' || c == '/';
}

static size_t
q_len(unsigned char c)
{
    return (q_literal(c) || c == ' ') ? 1 : 3;
}

/* Writes s (valid UTF-8) as a run of encoded-words, each preceded by a space, each
 * at most 75 characters, split only between characters, sized to the room left on
 * the current line so folded lines stay within 78 columns. B or Q, whichever is
 * shorter for the whole value (Q on a tie: it stays readable). */
static void
hdr_encoded(md_mime_hdr_t *h, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t qtotal = 0;
    for (size_t i = 0; i < n; i++)
        qtotal += q_len(p[i]);
    bool use_b = 4 * ((n + 2) / 3) < qtotal;

    size_t i = 0;
    while (i < n) {
        /* Room for " " + word on this line; too little and the word goes to the next
         * line (unless nothing is on this one yet: a very long header name). */
        size_t room = h->col + 1 < MD_MIME_FOLD ? MD_MIME_FOLD - h->col - 1 : 0;
        size_t rest = SIZE_MAX / 2; /* encoded length of what is left, when small */
        if (n - i <= MD_MIME_EW_MAX) {
            rest = use_b ? 4 * ((n - i + 2) / 3) : 0;
            for (size_t t = i; !use_b && t < n; t++)
                rest += q_len(p[t]);
        }
        /* What is left goes whole onto a new line rather than split in two:
         * adjacent encoded-words are where lax decoders go wrong. */
        bool whole_on_next = h->has_token && MD_MIME_EW_OVER + rest <= MD_MIME_EW_MAX &&
                             MD_MIME_EW_OVER + rest > room;
        size_t wmax = MD_MIME_EW_MAX;
        if (!whole_on_next && (room >= 2 * MD_MIME_EW_OVER || !h->has_token))
            wmax = md_min(wmax, md_max(room, 2 * MD_MIME_EW_OVER));
        size_t pmax = wmax - MD_MIME_EW_OVER;

        /* Take whole characters while the encoded payload fits. */
        size_t j = i, plen = 0;
        while (j < n) {
            size_t k = md_utf8_seq_len(p + j, n - j);
            size_t add;
            if (use_b) {
                add = 4 * ((j + k - i + 2) / 3) - plen;
            } else {
                add = 0;
                for (size_t t = 0; t < k; t++)
                    add += q_len(p[j + t]);
            }
            if (plen + add > pmax)
                break;
            plen += add;
            j += k;
        }
        if (j == i) /* cannot happen: pmax fits any 4-byte character */
            j = i + md_utf8_seq_len(p + i, n - i);

        char w[MD_MIME_EW_MAX + 64];
        size_t wl = 0;
        memcpy(w, use_b ? " =?UTF-8?B?" : " =?UTF-8?Q?", 11);
        wl = 11;
        if (use_b) {
            md_buf_t tmp;
            md_buf_init(&tmp);
            md_mime_base64_encode(&tmp, p + i, j - i, 0);
            memcpy(w + wl, tmp.pos, md_buf_len(&tmp));
            wl += md_buf_len(&tmp);
            md_buf_free(&tmp);
        } else {
            for (size_t t = i; t < j; t++) {
                unsigned char c = p[t];
                if (c == ' ') {
                    w[wl++] = '_';
                } else if (q_literal(c)) {
                    w[wl++] = (char)c;
                } else {
                    w[wl++] = '=';
                    w[wl++] = hex_upper[c >> 4];
                    w[wl++] = hex_upper[c & 15];
                }
            }
        }
        w[wl++] = '?';
        w[wl++] = '=';
        hdr_token(h, w, wl);
        i = j;
    }
}

static bool
is_wsp(char c)
{
    return c == ' ' || c == '\t';
}

/* Checks an unstructured value: valid UTF-8, no CR or LF. Sets *plain when it can be
 * written as is: printable ASCII and tabs only, no "=?" (a reader would take it for
 * an encoded-word), and, when words_must_fit, no leading or trailing whitespace and
 * no word too long to fit on a folded line. */
static int
check_text(const char *what, const char *v, bool words_must_fit, bool *plain, char *err,
           size_t errlen)
{
    size_t n = strlen(v);
    if (!md_utf8_valid(v, n))
        return fail(err, errlen, "%s is not valid UTF-8", what);
    *plain = true;
    size_t word = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c == '\r' || c == '\n')
            return fail(err, errlen, "%s contains a line break", what);
        if ((c < 0x20 && c != '\t') || c >= 0x7f)
            *plain = false;
        if (c == '=' && i + 1 < n && v[i + 1] == '?')
            *plain = false;
        word = is_wsp((char)c) ? 0 : word + 1;
        if (words_must_fit && word > MD_MIME_FOLD - 1)
            *plain = false;
    }
    if (words_must_fit && n && (is_wsp(v[0]) || is_wsp(v[n - 1])))
        *plain = false;
    return MD_OK;
}

/* Writes a plain ASCII value as tokens "whitespace run + word", the first one given a
 * leading space, so it folds at its own whitespace and unfolds to itself. */
static void
hdr_plain(md_mime_hdr_t *h, const char *v)
{
    size_t n = strlen(v);
    if (n == 0)
        return;
    md_buf_t tok;
    md_buf_init(&tok);
    size_t i = 0;
    md_buf_append(&tok, " ", 1);
    while (i < n) {
        size_t s = i;
        while (i < n && is_wsp(v[i]))
            i++;
        while (i < n && !is_wsp(v[i]))
            i++;
        md_buf_append(&tok, v + s, i - s);
        hdr_token(h, tok.pos, md_buf_len(&tok));
        md_buf_reset(&tok);
    }
    md_buf_free(&tok);
}

static bool
is_atext(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/* A word that can stand as is next to encoded-words: an atom in a phrase, any
 * visible ASCII in unstructured text; never anything a reader could take for an
 * encoded-word, never too long to fold. */
static bool
plain_word(const char *w, size_t n, bool phrase)
{
    if (n == 0 || n > MD_MIME_FOLD - 1)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)w[i];
        if (phrase ? !is_atext(c) : (c < 0x21 || c > 0x7e))
            return false;
        if (c == '=' && i + 1 < n && w[i + 1] == '?')
            return false;
    }
    return true;
}

/* Words separated by single spaces, nothing before the first or after the last, no
 * other whitespace or control characters: a phrase keeps exactly that spacing. */
static bool
single_spaced(const char *s, size_t n)
{
    if (n == 0 || s[0] == ' ' || s[n - 1] == ' ')
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f || (c == ' ' && s[i + 1] == ' '))
            return false;
    }
    return true;
}

/* Writes a display name (phrase) or unstructured text that is single_spaced() and
 * valid UTF-8 word by word, as RFC 2047 5 describes: plain words as they are, each
 * run of other words as encoded-words with its inner spaces encoded. The text stays
 * readable and there are fewer adjacent encoded-words, which matters because some
 * decoders keep the space between two of them (CPython's email in address headers
 * before gh-128110, for one) while RFC 2047 6.2 says to drop it. */
static void
hdr_words(md_mime_hdr_t *h, const char *s, size_t n, bool phrase)
{
    size_t i = 0;
    while (i < n) {
        size_t e = i;
        while (e < n && s[e] != ' ')
            e++;
        if (plain_word(s + i, e - i, phrase)) {
            md_buf_t tok;
            md_buf_init(&tok);
            md_buf_append(&tok, " ", 1);
            md_buf_append(&tok, s + i, e - i);
            hdr_token(h, tok.pos, md_buf_len(&tok));
            md_buf_free(&tok);
            i = e + 1;
            continue;
        }
        size_t r = e;
        while (r < n) {
            size_t ws = r + 1, we = ws;
            while (we < n && s[we] != ' ')
                we++;
            if (plain_word(s + ws, we - ws, phrase))
                break;
            r = we;
        }
        hdr_encoded(h, s + i, r - i);
        i = r + 1;
    }
}

/* Unstructured text that needs RFC 2047: word by word when its spacing allows,
 * otherwise (tabs, runs of spaces, control characters) encoded whole. */
static void
hdr_text_encoded(md_mime_hdr_t *h, const char *v)
{
    size_t n = strlen(v);
    if (single_spaced(v, n))
        hdr_words(h, v, n, false);
    else
        hdr_encoded(h, v, n);
}

/* ---- addresses ------------------------------------------------------------------- */

/* A structural check of an ASCII addr-spec, enough that it cannot break the header
 * it is written into: dot-atom or quoted local part, "@", dot-atom or [literal]
 * domain, at most 254 octets. The address module does the full validation. */
static int
check_addr(const char *what, const char *a, char *err, size_t errlen)
{
    if (a == NULL || *a == '\0')
        return fail(err, errlen, "%s: address is missing", what);
    size_t n = strlen(a);
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)a[i] >= 0x80)
            return fail(err, errlen, "%s: address is not ASCII", what);
    }
    if (n > MD_MIME_ADDR_MAX)
        return fail(err, errlen, "%s: address longer than %d octets", what, MD_MIME_ADDR_MAX);
    size_t i = 0;
    if (a[0] == '"') {
        for (i = 1; i < n && a[i] != '"'; i++) {
            if (a[i] == '\\')
                i++;
            if (i < n && ((unsigned char)a[i] < 0x20 || a[i] == 0x7f))
                return fail(err, errlen, "%s: bad character in quoted local part", what);
        }
        if (i >= n)
            return fail(err, errlen, "%s: unterminated quoted local part", what);
        i++;
    } else {
        size_t s = i;
        while (i < n && (is_atext((unsigned char)a[i]) || a[i] == '.'))
            i++;
        if (i == s)
            return fail(err, errlen, "%s: empty or invalid local part", what);
    }
    if (i >= n || a[i] != '@')
        return fail(err, errlen, "%s: address has no @domain", what);
    i++;
    if (i >= n)
        return fail(err, errlen, "%s: empty domain", what);
    if (a[i] == '[') {
        for (i++; i < n && a[i] != ']'; i++) {
            if ((unsigned char)a[i] <= 0x20 || a[i] == 0x7f || a[i] == '[' || a[i] == '\\')
                return fail(err, errlen, "%s: bad domain literal", what);
        }
        if (i + 1 != n)
            return fail(err, errlen, "%s: bad domain literal", what);
    } else {
        for (; i < n; i++) {
            if (!is_atext((unsigned char)a[i]) && a[i] != '.')
                return fail(err, errlen, "%s: bad character in domain", what);
        }
    }
    return MD_OK;
}

/* Headers carry the A-label form of an IDN domain (RFC 5890; no SMTPUTF8 here): a
 * UTF-8 domain is converted with md_address_domain_to_ascii() into buf and *addr is
 * pointed at it. A non-ASCII local part cannot be expressed without SMTPUTF8 and is
 * refused. An ASCII address is left alone. */
static int
to_ascii(const char *what, const char **addr, char *buf, size_t size, char *err, size_t errlen)
{
    const char *a = *addr;
    if (a == NULL)
        return MD_OK;
    size_t n = strlen(a);
    bool ascii = true;
    for (size_t i = 0; i < n; i++)
        ascii = ascii && (unsigned char)a[i] < 0x80;
    if (ascii)
        return MD_OK;
    const char *at = memrchr(a, '@', n);
    if (at == NULL)
        return fail(err, errlen, "%s: address has no @domain", what);
    for (const char *p = a; p < at; p++) {
        if ((unsigned char)*p >= 0x80)
            return fail(err, errlen, "%s: non-ASCII local part (needs SMTPUTF8)", what);
    }
    size_t local = (size_t)(at - a), dlen;
    if (local + 1 >= size)
        return fail(err, errlen, "%s: address longer than %d octets", what, MD_MIME_ADDR_MAX);
    memcpy(buf, a, local + 1);
    md_address_error_t aerr;
    if (md_address_domain_to_ascii(at + 1, n - local - 1, buf + local + 1, size - local - 1, &dlen,
                                   &aerr) != MD_OK)
        return fail(err, errlen, "%s: IDN domain: %s", what, aerr.message ? aerr.message : "");
    *addr = buf;
    return MD_OK;
}

/* Writes " name <addr>" or " addr". An all-atom name is written as atoms (it folds
 * between them); other printable ASCII names as a quoted-string when it fits on a
 * line; anything else word by word (hdr_words) or, with odd spacing, as one run of
 * encoded-words. */
static int
hdr_mailbox(md_mime_hdr_t *h, const char *what, const md_mime_addr_t *a, char *err, size_t errlen)
{
    char ascii[MD_ADDRESS_MAX + 1];
    const char *addr = a->addr;
    if (to_ascii(what, &addr, ascii, sizeof(ascii), err, errlen) != MD_OK ||
        check_addr(what, addr, err, errlen) != MD_OK)
        return MD_ERROR;
    const char *name = a->name ? a->name : "";
    size_t n = strlen(name);
    if (n) {
        if (!md_utf8_valid(name, n))
            return fail(err, errlen, "%s: display name is not valid UTF-8", what);
        bool printable = true, atoms = true, has_ew = false;
        size_t specials = 0, word = 0;
        for (size_t i = 0; i < n; i++) {
            unsigned char c = (unsigned char)name[i];
            word = c == ' ' ? 0 : word + 1;
            if (word > MD_MIME_FOLD - 1)
                atoms = false;
            if (c == '\r' || c == '\n')
                return fail(err, errlen, "%s: display name contains a line break", what);
            if (c < 0x20 || c >= 0x7f)
                printable = false;
            if (c == '=' && i + 1 < n && name[i + 1] == '?')
                has_ew = true;
            if (c == '"' || c == '\\')
                specials++;
            if (!is_atext(c) && !(c == ' ' && i > 0 && i + 1 < n && name[i + 1] != ' '))
                atoms = false;
        }
        if (printable && !has_ew && atoms) {
            hdr_plain(h, name);
        } else if (printable && !has_ew && n + specials + 3 <= MD_MIME_FOLD - 1) {
            char q[MD_MIME_FOLD + 4];
            size_t ql = 0;
            q[ql++] = ' ';
            q[ql++] = '"';
            for (size_t i = 0; i < n; i++) {
                if (name[i] == '"' || name[i] == '\\')
                    q[ql++] = '\\';
                q[ql++] = name[i];
            }
            q[ql++] = '"';
            hdr_token(h, q, ql);
        } else if (single_spaced(name, n)) {
            hdr_words(h, name, n, true);
        } else {
            hdr_encoded(h, name, n);
        }
    }
    /* check_addr() bounds addr at MD_MIME_ADDR_MAX octets. */
    size_t al = strlen(addr);
    char tok[MD_MIME_ADDR_MAX + 4];
    size_t tl = 0;
    tok[tl++] = ' ';
    if (n)
        tok[tl++] = '<';
    memcpy(tok + tl, addr, al);
    tl += al;
    if (n)
        tok[tl++] = '>';
    hdr_token(h, tok, tl);
    return MD_OK;
}

static int
hdr_addr_list(md_buf_t *out, const char *name, const md_mime_addr_t *list, size_t count, char *err,
              size_t errlen)
{
    if (count == 0)
        return MD_OK;
    if (list == NULL)
        return fail(err, errlen, "%s: list is NULL", name);
    md_mime_hdr_t h;
    hdr_start(&h, out, name);
    for (size_t i = 0; i < count; i++) {
        if (i)
            hdr_token(&h, ",", 1);
        if (hdr_mailbox(&h, name, &list[i], err, errlen) != MD_OK)
            return MD_ERROR;
    }
    hdr_end(&h);
    return MD_OK;
}

/* ---- the other header fields ----------------------------------------------------- */

static int
hdr_date(md_buf_t *out, time_t t, char *err, size_t errlen)
{
    static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL || tm.tm_year + 1900 < 1900 || tm.tm_year + 1900 > 9999)
        return fail(err, errlen, "date is out of range");
    /* Written by hand: strftime's names follow the locale. */
    md_buf_printf(out, "Date: %s, %02d %s %04d %02d:%02d:%02d +0000\r\n", days[tm.tm_wday],
                  tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                  tm.tm_sec);
    return MD_OK;
}

/* "<left@right>", both sides dot-atom text (our ids are "<uuid@domain>"). */
static int
check_msgid(const char *id, char *err, size_t errlen)
{
    size_t n = id ? strlen(id) : 0;
    if (n == 0)
        return fail(err, errlen, "message_id is missing");
    if (n > MD_MIME_MSGID_MAX || n < 5 || id[0] != '<' || id[n - 1] != '>')
        return fail(err, errlen, "message_id must be <left@right>");
    size_t at = 0;
    for (size_t i = 1; i + 1 < n; i++) {
        if (id[i] == '@') {
            if (at)
                return fail(err, errlen, "message_id has more than one @");
            at = i;
        } else if (!is_atext((unsigned char)id[i]) && id[i] != '.') {
            return fail(err, errlen, "message_id has a character outside dot-atom text");
        }
    }
    if (at <= 1 || at >= n - 2)
        return fail(err, errlen, "message_id must be <left@right>");
    return MD_OK;
}

static bool
reserved_header(const char *name)
{
    static const char *const names[] = {
        "from",    "sender", "to",         "cc",           "bcc",         "reply-to",
        "subject", "date",   "message-id", "mime-version", "return-path", "x-mailerd-message-id"};
    if (strncasecmp(name, "content-", 8) == 0)
        return true;
    for (size_t i = 0; i < md_nelems(names); i++) {
        if (strcasecmp(name, names[i]) == 0)
            return true;
    }
    return false;
}

static int
hdr_extra(md_buf_t *out, const md_mime_header_t *x, char *err, size_t errlen)
{
    if (x->name == NULL || x->value == NULL)
        return fail(err, errlen, "header with a NULL name or value");
    size_t n = strlen(x->name);
    if (n == 0 || n > MD_MIME_HNAME_MAX)
        return fail(err, errlen, "header name must be 1 to %d characters", MD_MIME_HNAME_MAX);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)x->name[i];
        if (c < 33 || c > 126 || c == ':')
            return fail(err, errlen, "header name has a character outside RFC 5322 ftext");
    }
    if (reserved_header(x->name))
        return fail(err, errlen, "header %s is set by mailerd and cannot be given", x->name);

    char what[MD_MIME_HNAME_MAX + 16];
    snprintf(what, sizeof(what), "header %s", x->name);
    bool plain;
    if (check_text(what, x->value, false, &plain, err, errlen) != MD_OK)
        return MD_ERROR;
    md_mime_hdr_t h;
    hdr_start(&h, out, x->name);
    /* An ASCII value may be structured (List-Unsubscribe: <https://...>), so it is
     * never encoded, only folded; one that cannot fold under 998 is refused. */
    if (plain)
        hdr_plain(&h, x->value);
    else
        hdr_text_encoded(&h, x->value);
    if (h.max_col > MD_MIME_MAX_LINE) /* md_mime_build() cuts the output back */
        return fail(err, errlen, "%s has a word too long to fold under %d octets", what,
                    MD_MIME_MAX_LINE);
    hdr_end(&h);
    return MD_OK;
}

/* ---- bodies ---------------------------------------------------------------------- */

typedef enum { MD_MIME_7BIT, MD_MIME_QP, MD_MIME_B64 } md_mime_cte_e;

static const char *const cte_names[] = {"7bit", "quoted-printable", "base64"};

typedef struct md_mime_part_s {
    const char *subtype; /* "plain" or "html" */
    md_mime_cte_e cte;
    md_buf_t canon; /* the body with CRLF line ends */
    md_buf_t enc;   /* the body as it goes on the wire */
} md_mime_part_t;

/* Validates and encodes one body: 7bit when it is ASCII without NUL and every line is
 * at most 78 octets; otherwise quoted-printable, unless that is over 25% larger than
 * base64 (mostly non-Latin text), then base64. The part owns both buffers. */
static int
part_prepare(md_mime_part_t *pt, const char *subtype, md_str_t body, char *err, size_t errlen)
{
    pt->subtype = subtype;
    md_buf_init(&pt->canon);
    md_buf_init(&pt->enc);
    if (!md_utf8_valid(body.data, body.len))
        return fail(err, errlen, "%s body is not valid UTF-8", subtype);

    bool seven = true;
    const unsigned char *b = (const unsigned char *)body.data;
    md_buf_reserve(&pt->canon, body.len + body.len / 16 + 2);
    size_t i = 0;
    while (i < body.len) {
        /* One line (a run up to a CR or LF) is copied whole, then its line end
         * as CRLF whatever it was (CR, LF or CRLF). */
        size_t start = i;
        while (i < body.len && b[i] != '\r' && b[i] != '\n') {
            if (b[i] == 0 || b[i] >= 0x80)
                seven = false;
            i++;
        }
        if (i - start > MD_MIME_7BIT_LINE)
            seven = false;
        md_buf_append(&pt->canon, b + start, i - start);
        if (i < body.len) {
            if (b[i] == '\r' && i + 1 < body.len && b[i + 1] == '\n')
                i++;
            i++;
            md_buf_append(&pt->canon, "\r\n", 2);
        }
    }
    size_t n = md_buf_len(&pt->canon);
    if (seven) {
        pt->cte = MD_MIME_7BIT;
        md_buf_append(&pt->enc, pt->canon.pos, n);
        return MD_OK;
    }
    md_mime_qp_encode(&pt->enc, pt->canon.pos, n);
    size_t b64 = md_mime_base64_len(n, MD_MIME_B64_LINE);
    if (md_buf_len(&pt->enc) * 4 > b64 * 5) {
        md_buf_reset(&pt->enc);
        md_mime_base64_encode(&pt->enc, pt->canon.pos, n, MD_MIME_B64_LINE);
        pt->cte = MD_MIME_B64;
    } else {
        pt->cte = MD_MIME_QP;
    }
    return MD_OK;
}

static void
part_free(md_mime_part_t *pt)
{
    md_buf_free(&pt->canon);
    md_buf_free(&pt->enc);
}

static void
part_headers(md_buf_t *out, const md_mime_part_t *pt)
{
    md_buf_append_str(out, "Content-Type: text/");
    md_buf_append_str(out, pt->subtype);
    md_buf_append_str(out, "; charset=utf-8\r\nContent-Transfer-Encoding: ");
    md_buf_append_str(out, cte_names[pt->cte]);
    md_buf_append(out, "\r\n", 2);
}

static bool
contains(const md_buf_t *b, const char *s)
{
    /* an empty part's buffer may have no memory at all (pos NULL) */
    return md_buf_len(b) > 0 && memmem(b->pos, md_buf_len(b), s, strlen(s)) != NULL;
}

static int
default_random(void *ctx, void *buf, size_t n)
{
    md_unused(ctx);
    return md_random_bytes(buf, n);
}

/* ---- the message ----------------------------------------------------------------- */

static int
build(const md_mime_message_t *m, md_buf_t *out, md_mime_part_t *parts, size_t *nparts, char *err,
      size_t errlen)
{
    if (m->text.data == NULL && m->html.data == NULL)
        return fail(err, errlen, "message has neither a text nor an html part");
    if (check_msgid(m->message_id, err, errlen) != MD_OK)
        return MD_ERROR;
    if (m->mailerd_id) {
        size_t n = strlen(m->mailerd_id);
        if (n == 0 || n > MD_MIME_MSGID_MAX)
            return fail(err, errlen, "mailerd_id must be 1 to %d characters", MD_MIME_MSGID_MAX);
        for (size_t i = 0; i < n; i++) {
            if ((unsigned char)m->mailerd_id[i] < 33 || (unsigned char)m->mailerd_id[i] > 126)
                return fail(err, errlen, "mailerd_id must be visible ASCII");
        }
    }
    if (m->nheaders && m->headers == NULL)
        return fail(err, errlen, "headers: list is NULL");

    /* Bodies first: the boundary has to be checked against them. */
    if (m->text.data) {
        if (part_prepare(&parts[(*nparts)++], "plain", m->text, err, errlen) != MD_OK)
            return MD_ERROR;
    }
    if (m->html.data) {
        if (part_prepare(&parts[(*nparts)++], "html", m->html, err, errlen) != MD_OK)
            return MD_ERROR;
    }

    char boundary[2 + 8 + 2 * MD_MIME_BOUND_RAND + 1];
    if (*nparts == 2) {
        unsigned char rnd[MD_MIME_BOUND_RAND];
        md_mime_random_pt rf = m->random ? m->random : default_random;
        if (rf(m->random_ctx, rnd, sizeof(rnd)) != MD_OK)
            return fail(err, errlen, "no random bytes for the MIME boundary");
        memcpy(boundary, "=_mailerd", 9);
        for (size_t i = 0; i < sizeof(rnd); i++) {
            boundary[9 + 2 * i] = "0123456789abcdef"[rnd[i] >> 4];
            boundary[10 + 2 * i] = "0123456789abcdef"[rnd[i] & 15];
        }
        boundary[9 + 2 * sizeof(rnd)] = '\0';
        for (size_t k = 0; k < 2; k++) {
            md_mime_part_t *pt = &parts[k];
            if (pt->cte == MD_MIME_7BIT && contains(&pt->enc, boundary)) {
                md_buf_reset(&pt->enc);
                md_mime_qp_encode(&pt->enc, pt->canon.pos, md_buf_len(&pt->canon));
                pt->cte = MD_MIME_QP;
            }
        }
    }

    if (hdr_date(out, m->date, err, errlen) != MD_OK)
        return MD_ERROR;
    if (hdr_addr_list(out, "From", &m->from, 1, err, errlen) != MD_OK ||
        hdr_addr_list(out, "To", m->to, m->nto, err, errlen) != MD_OK ||
        hdr_addr_list(out, "Cc", m->cc, m->ncc, err, errlen) != MD_OK ||
        hdr_addr_list(out, "Reply-To", m->reply_to, m->nreply_to, err, errlen) != MD_OK)
        return MD_ERROR;
    if (m->subject) {
        bool plain;
        if (check_text("subject", m->subject, true, &plain, err, errlen) != MD_OK)
            return MD_ERROR;
        md_mime_hdr_t h;
        hdr_start(&h, out, "Subject");
        if (plain)
            hdr_plain(&h, m->subject);
        else
            hdr_text_encoded(&h, m->subject);
        hdr_end(&h);
    }
    md_buf_append_str(out, "Message-ID: ");
    md_buf_append_str(out, m->message_id);
    md_buf_append_str(out, "\r\nMIME-Version: 1.0\r\n");
    if (m->mailerd_id) {
        md_buf_append_str(out, "X-Mailerd-Message-Id: ");
        md_buf_append_str(out, m->mailerd_id);
        md_buf_append(out, "\r\n", 2);
    }
    for (size_t i = 0; i < m->nheaders; i++) {
        if (hdr_extra(out, &m->headers[i], err, errlen) != MD_OK)
            return MD_ERROR;
    }

    if (*nparts == 1) {
        part_headers(out, &parts[0]);
        md_buf_append(out, "\r\n", 2);
        md_buf_append(out, parts[0].enc.pos, md_buf_len(&parts[0].enc));
        return MD_OK;
    }

    md_buf_append_str(out, "Content-Type: multipart/alternative;\r\n boundary=\"");
    md_buf_append_str(out, boundary);
    md_buf_append_str(out, "\"\r\n\r\n");
    for (size_t k = 0; k < 2; k++) {
        md_buf_append(out, "--", 2);
        md_buf_append_str(out, boundary);
        md_buf_append(out, "\r\n", 2);
        part_headers(out, &parts[k]);
        md_buf_append(out, "\r\n", 2);
        md_buf_append(out, parts[k].enc.pos, md_buf_len(&parts[k].enc));
        /* The CRLF before a delimiter belongs to the delimiter (RFC 2046 5.1.1);
         * base64 output already ends with one and the decoder ignores line ends. */
        if (!(parts[k].cte == MD_MIME_B64 && md_buf_len(&parts[k].enc)))
            md_buf_append(out, "\r\n", 2);
    }
    md_buf_append(out, "--", 2);
    md_buf_append_str(out, boundary);
    md_buf_append(out, "--\r\n", 4);
    return MD_OK;
}

int
md_mime_build(const md_mime_message_t *m, md_buf_t *out, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    size_t base = md_buf_len(out);
    md_mime_part_t parts[2];
    size_t nparts = 0;
    int rc = build(m, out, parts, &nparts, err, errlen);
    for (size_t k = 0; k < nparts; k++)
        part_free(&parts[k]);
    if (rc != MD_OK && out->pos)
        out->last = out->pos + base;
    return rc;
}
