/*
 * Email address parser and validator; the rules are listed in md_address.h.
 *
 * One pass over the input for characters (controls, CR/LF, UTF-8), then a split
 * into display name and addr-spec, then the local part, the domain and the length
 * limits. Work happens in fixed stack buffers bounded by the RFC limits; only the
 * final strings are copied into the caller's pool, so validation without a pool
 * allocates nothing but libidn2's result for a label with non-ASCII characters.
 */
#include "md_address.h"

#include <idn2.h>
#include <string.h>
#include <strings.h>

static const char *const code_names[MD_ADDRESS_NCODES] = {
    [MD_ADDRESS_OK] = "ok",
    [MD_ADDRESS_EMPTY] = "empty",
    [MD_ADDRESS_CONTROL_CHARACTER] = "control_character",
    [MD_ADDRESS_INVALID_UTF8] = "invalid_utf8",
    [MD_ADDRESS_INVALID_DISPLAY_NAME] = "invalid_display_name",
    [MD_ADDRESS_INVALID_ANGLE_ADDR] = "invalid_angle_addr",
    [MD_ADDRESS_MISSING_AT] = "missing_at",
    [MD_ADDRESS_INVALID_LOCAL_PART] = "invalid_local_part",
    [MD_ADDRESS_NON_ASCII_LOCAL_PART] = "non_ascii_local_part",
    [MD_ADDRESS_LOCAL_PART_TOO_LONG] = "local_part_too_long",
    [MD_ADDRESS_INVALID_DOMAIN] = "invalid_domain",
    [MD_ADDRESS_DOMAIN_NEEDS_DOT] = "domain_needs_dot",
    [MD_ADDRESS_DOMAIN_LABEL_TOO_LONG] = "domain_label_too_long",
    [MD_ADDRESS_DOMAIN_TOO_LONG] = "domain_too_long",
    [MD_ADDRESS_INVALID_ADDRESS_LITERAL] = "invalid_address_literal",
    [MD_ADDRESS_ADDRESS_TOO_LONG] = "address_too_long",
};

const char *
md_address_code_name(md_address_code_t code)
{
    if ((unsigned)code >= MD_ADDRESS_NCODES)
        return "unknown";
    return code_names[code];
}

/* Fills *err (when given) and returns MD_ERROR, so every failure is one line. */
static int
fail(md_address_error_t *err, md_address_code_t code, const char *message, size_t offset)
{
    if (err) {
        err->code = code;
        err->name = code_names[code];
        err->message = message;
        err->offset = offset;
    }
    return MD_ERROR;
}

/* RFC 5322 atext, ASCII only (the callers decide what to do with UTF-8). */
static bool
is_atext(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    switch (c) {
    case '!':
    case '#':
    case '$':
    case '%':
    case '&':
    case '\'':
    case '*':
    case '+':
    case '-':
    case '/':
    case '=':
    case '?':
    case '^':
    case '_':
    case '`':
    case '{':
    case '|':
    case '}':
    case '~':
        return true;
    default:
        return false;
    }
}

static bool
is_ldh(uint32_t c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
}

static unsigned char
ascii_lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

/* Decodes one UTF-8 sequence from s[0..n). Returns its length (1..4) and sets *cp,
 * or returns 0 for a malformed one: truncated, bad continuation, overlong, a
 * surrogate, or above U+10FFFF. */
static size_t
utf8_decode(const unsigned char *s, size_t n, uint32_t *cp)
{
    unsigned char c = s[0];
    size_t k;
    uint32_t v, min;
    if (c < 0x80) {
        *cp = c;
        return 1;
    } else if (c >= 0xc2 && c <= 0xdf) {
        k = 2, v = c & 0x1f, min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
        k = 3, v = c & 0x0f, min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        k = 4, v = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (n < k)
        return 0;
    for (size_t i = 1; i < k; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        v = (v << 6) | (s[i] & 0x3f);
    }
    if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
        return 0;
    *cp = v;
    return k;
}

/* Refuses what may appear nowhere in an address: C0 controls (CR and LF named:
 * they are the header-injection vector), DEL, C1 controls, U+2028/U+2029 (line
 * breaks to some readers) and invalid UTF-8. */
static int
scan_chars(const char *s, size_t len, md_address_error_t *err)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        unsigned char c = u[i];
        if (c < 0x80) {
            if (c == '\r' || c == '\n')
                return fail(err, MD_ADDRESS_CONTROL_CHARACTER,
                            "line break (CR or LF) is not allowed", i);
            if (c < 0x20 || c == 0x7f)
                return fail(err, MD_ADDRESS_CONTROL_CHARACTER, "control character is not allowed",
                            i);
            i++;
            continue;
        }
        uint32_t cp;
        size_t k = utf8_decode(u + i, len - i, &cp);
        if (k == 0)
            return fail(err, MD_ADDRESS_INVALID_UTF8, "invalid UTF-8", i);
        if (cp <= 0x9f)
            return fail(err, MD_ADDRESS_CONTROL_CHARACTER, "C1 control character is not allowed",
                        i);
        if (cp == 0x2028 || cp == 0x2029)
            return fail(err, MD_ADDRESS_CONTROL_CHARACTER,
                        "line or paragraph separator is not allowed", i);
        i += k;
    }
    return MD_OK;
}

/* ---- domains ---- */

/* Non-ASCII code points refused in a domain label before libidn2 sees it, with
 * a message saying why (UTS-46 would map the dot look-alikes to '.', and
 * libidn2 reports all of these as "disallowed"); NULL when not one of them. */
static const char *
idn_refused(uint32_t c)
{
    if (c == 0xa0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x202f || c == 0x205f ||
        c == 0x3000)
        return "whitespace is not allowed in a domain";
    if (c == 0x3002 || c == 0xff0e || c == 0xff61)
        return "labels must be separated by '.' (U+002E)";
    if (c == 0x200b || c == 0xfeff || c == 0xfffd || (c & 0xfffe) == 0xfffe ||
        (c >= 0xfdd0 && c <= 0xfdef) || (c >= 0xe000 && c <= 0xf8ff) || c >= 0xf0000)
        return "character not allowed in a domain";
    return NULL;
}

/*
 * One label with non-ASCII characters to its A-label (label, *llen; no NUL) by
 * UTS-46 processing, nontransitional, with the STD3 rules (libidn2): IDNA2008's
 * validity (no disallowed or unassigned code point, CONTEXTJ/CONTEXTO, the
 * Bidi rule, no leading combining mark), case folding of every script,
 * normalization to NFC (a decomposed "u" + U+0308 and "ü" name the same
 * domain), and ß/ς/ZWJ kept as IDNA2008 has them (not mapped to "ss" or
 * dropped, as IDNA2003 did). The label may map to pure ASCII (full-width
 * Latin letters, say); it must map to one LDH label. at: the label's offset in
 * the domain, for the error.
 */
static int
idn_label(const char *s, size_t n, char *label, size_t *llen, size_t at, md_address_error_t *err)
{
    char in[MD_ADDRESS_DOMAIN_MAX + 1];
    memcpy(in, s, n); /* n <= len <= MD_ADDRESS_DOMAIN_MAX */
    in[n] = '\0';
    char *a = NULL;
    int rc =
        idn2_to_ascii_8z(in, &a, IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL | IDN2_USE_STD3_ASCII_RULES);
    if (rc != IDN2_OK) {
        if (rc == IDN2_TOO_BIG_LABEL || rc == IDN2_TOO_BIG_DOMAIN ||
            rc == IDN2_PUNYCODE_BIG_OUTPUT || rc == IDN2_PUNYCODE_OVERFLOW)
            return fail(err, MD_ADDRESS_DOMAIN_LABEL_TOO_LONG,
                        "domain label is longer than 63 octets as an A-label", at);
        /* libidn2's messages are static strings ("string contains a disallowed
         * character", "string violates the Bidi rule", ...). */
        return fail(err, MD_ADDRESS_INVALID_DOMAIN, idn2_strerror(rc), at);
    }
    size_t m = strlen(a);
    int ok = m > 0 && m <= MD_ADDRESS_LABEL_MAX;
    for (size_t k = 0; ok && k < m; k++)
        ok = is_ldh((unsigned char)a[k]);
    if (ok)
        memcpy(label, a, m);
    idn2_free(a);
    if (!ok)
        return fail(err, MD_ADDRESS_INVALID_DOMAIN,
                    m > MD_ADDRESS_LABEL_MAX ? "domain label is longer than 63 octets as an A-label"
                                             : "domain label does not map to one DNS label",
                    at);
    *llen = m;
    return MD_OK;
}

int
md_address_domain_to_ascii(const char *d, size_t len, char *out, size_t size, size_t *outlen,
                           md_address_error_t *err)
{
    const unsigned char *u = (const unsigned char *)d;
    char buf[MD_ADDRESS_DOMAIN_MAX + 1];
    size_t o = 0, labels = 0, i = 0;
    bool tld_numeric = false;

    if (len == 0)
        return fail(err, MD_ADDRESS_INVALID_DOMAIN, "domain is empty", 0);
    if (len > MD_ADDRESS_DOMAIN_MAX)
        return fail(err, MD_ADDRESS_DOMAIN_TOO_LONG, "domain is longer than 253 octets", 0);
    /* md_address_parse() did this already; other callers pass raw input. */
    if (scan_chars(d, len, err) != MD_OK)
        return MD_ERROR;

    for (;;) {
        size_t j = i;
        bool ascii = true;
        while (j < len && u[j] != '.') {
            if (u[j] >= 0x80)
                ascii = false;
            j++;
        }
        if (j == i) {
            const char *m = i == 0     ? "domain starts with a dot"
                            : i == len ? "domain ends with a dot"
                                       : "domain has consecutive dots";
            return fail(err, MD_ADDRESS_INVALID_DOMAIN, m, i);
        }

        char label[MD_ADDRESS_LABEL_MAX];
        size_t llen = 0;
        if (ascii) {
            for (size_t k = i; k < j; k++) {
                if (u[k] == ' ')
                    return fail(err, MD_ADDRESS_INVALID_DOMAIN,
                                "whitespace is not allowed in a domain", k);
                if (!is_ldh(u[k]))
                    return fail(err, MD_ADDRESS_INVALID_DOMAIN,
                                "domain may only contain letters, digits, hyphens and dots", k);
            }
            if (j - i > MD_ADDRESS_LABEL_MAX)
                return fail(err, MD_ADDRESS_DOMAIN_LABEL_TOO_LONG,
                            "domain label is longer than 63 octets", i);
            if (u[i] == '-')
                return fail(err, MD_ADDRESS_INVALID_DOMAIN, "domain label starts with a hyphen", i);
            if (u[j - 1] == '-')
                return fail(err, MD_ADDRESS_INVALID_DOMAIN, "domain label ends with a hyphen",
                            j - 1);
            tld_numeric = true;
            for (size_t k = i; k < j; k++) {
                label[llen++] = (char)ascii_lower(u[k]);
                if (u[k] < '0' || u[k] > '9')
                    tld_numeric = false;
            }
        } else {
            uint32_t first = 0, last = 0;
            size_t n = 0;
            for (size_t k = i; k < j;) {
                uint32_t c;
                size_t sz = utf8_decode(u + k, j - k, &c); /* valid: scanned above */
                if (c < 0x80 && c != ' ' && !is_ldh(c))
                    return fail(err, MD_ADDRESS_INVALID_DOMAIN,
                                "domain may only contain letters, digits, hyphens and dots", k);
                const char *why = c == ' '    ? "whitespace is not allowed in a domain"
                                  : c >= 0x80 ? idn_refused(c)
                                              : NULL;
                if (why)
                    return fail(err, MD_ADDRESS_INVALID_DOMAIN, why, k);
                if (n == 0)
                    first = c;
                last = c;
                n++;
                k += sz;
            }
            if (first == '-')
                return fail(err, MD_ADDRESS_INVALID_DOMAIN, "domain label starts with a hyphen", i);
            if (last == '-')
                return fail(err, MD_ADDRESS_INVALID_DOMAIN, "domain label ends with a hyphen",
                            j - 1);
            if (idn_label(d + i, j - i, label, &llen, i, err) != MD_OK)
                return MD_ERROR;
            tld_numeric = true;
            for (size_t k = 0; k < llen; k++)
                if (label[k] < '0' || label[k] > '9')
                    tld_numeric = false;
        }

        if (o + (labels ? 1 : 0) + llen > MD_ADDRESS_DOMAIN_MAX)
            return fail(err, MD_ADDRESS_DOMAIN_TOO_LONG,
                        "domain is longer than 253 octets as A-labels", i);
        if (labels)
            buf[o++] = '.';
        memcpy(buf + o, label, llen);
        o += llen;
        labels++;

        if (j == len)
            break;
        i = j + 1;
    }

    if (labels < 2)
        return fail(err, MD_ADDRESS_DOMAIN_NEEDS_DOT,
                    "domain needs at least one dot (a bare host or TLD is not deliverable)", 0);
    if (tld_numeric)
        return fail(err, MD_ADDRESS_INVALID_DOMAIN, "top-level domain is all-numeric", 0);
    if (out) {
        if (size <= o)
            return fail(err, MD_ADDRESS_DOMAIN_TOO_LONG, "output buffer too small", 0);
        memcpy(out, buf, o);
        out[o] = '\0';
    }
    if (outlen)
        *outlen = o;
    return MD_OK;
}

/* ---- address literals (RFC 5321 section 4.1.3) ---- */

static bool
ipv4_ok(const char *s, size_t len)
{
    size_t i = 0;
    for (int part = 0; part < 4; part++) {
        if (part > 0) {
            if (i >= len || s[i] != '.')
                return false;
            i++;
        }
        unsigned v = 0, digits = 0;
        while (i < len && s[i] >= '0' && s[i] <= '9' && digits < 4) {
            v = v * 10 + (unsigned)(s[i] - '0');
            digits++;
            i++;
        }
        if (digits == 0 || digits > 3 || v > 255)
            return false;
    }
    return i == len;
}

static bool
is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* IPv6-full, IPv6-comp ("::" stands for at least two groups, at most six groups
 * besides it), IPv6v4-full and IPv6v4-comp (at most four groups besides "::"). */
static bool
ipv6_ok(const char *s, size_t len)
{
    size_t i = 0, groups = 0;
    bool dbl = false, v4 = false;

    if (len >= 2 && s[0] == ':' && s[1] == ':') {
        dbl = true;
        i = 2;
    } else if (len >= 1 && s[0] == ':') {
        return false;
    }
    while (i < len) {
        size_t j = i;
        bool dot = false;
        while (j < len && s[j] != ':') {
            if (s[j] == '.')
                dot = true;
            j++;
        }
        if (dot) {
            if (j != len || !ipv4_ok(s + i, j - i))
                return false;
            v4 = true;
            break;
        }
        if (j == i || j - i > 4)
            return false;
        for (size_t k = i; k < j; k++)
            if (!is_hex(s[k]))
                return false;
        groups++;
        if (j == len)
            break;
        if (j + 1 < len && s[j + 1] == ':') {
            if (dbl)
                return false;
            dbl = true;
            i = j + 2;
            continue;
        }
        i = j + 1;
        if (i == len)
            return false; /* a single trailing colon */
    }
    if (v4)
        return dbl ? groups <= 4 : groups == 6;
    return dbl ? groups <= 6 : groups == 8;
}

/* Validates "[...]" at s[0..len) and writes the canonical form (tag "IPv6:", hex in
 * lower case) to out (size >= len + 1). */
static int
parse_literal(const char *s, size_t len, size_t base, char *out, md_address_error_t *err)
{
    if (len < 2 || s[len - 1] != ']')
        return fail(err, MD_ADDRESS_INVALID_ADDRESS_LITERAL, "address literal has no closing ']'",
                    base);
    const char *c = s + 1;
    size_t clen = len - 2;
    if (clen >= 5 && strncasecmp(c, "IPv6:", 5) == 0) {
        if (!ipv6_ok(c + 5, clen - 5))
            return fail(err, MD_ADDRESS_INVALID_ADDRESS_LITERAL, "not a valid IPv6 address literal",
                        base);
        memcpy(out, "[IPv6:", 6);
        for (size_t i = 5; i < clen; i++)
            out[i + 1] = (char)ascii_lower((unsigned char)c[i]);
    } else if (memchr(c, ':', clen)) {
        return fail(err, MD_ADDRESS_INVALID_ADDRESS_LITERAL,
                    "only [IPv4] and [IPv6:...] address literals are accepted", base);
    } else {
        if (!ipv4_ok(c, clen))
            return fail(err, MD_ADDRESS_INVALID_ADDRESS_LITERAL, "not a valid IPv4 address literal",
                        base);
        memcpy(out, s, len);
    }
    out[len - 1] = ']';
    out[len] = '\0';
    return MD_OK;
}

/* ---- display name ---- */

/* Validates the phrase at s[b..e) (no trailing spaces; the caller stripped them)
 * and, when dst is not NULL, writes its unquoted, unescaped value there (at most
 * e - b bytes) and its length to *dlen. Spaces between words are kept as given. */
static int
parse_display(const char *s, size_t b, size_t e, char *dst, size_t *dlen, md_address_error_t *err)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t o = 0, i = b;
    while (i < e) {
        unsigned char c = u[i];
        if (c == '"') {
            size_t open = i++;
            for (;;) {
                if (i >= e)
                    return fail(err, MD_ADDRESS_INVALID_DISPLAY_NAME,
                                "unclosed quoted string in display name", open);
                c = u[i];
                if (c == '"') {
                    i++;
                    break;
                }
                if (c == '\\') {
                    if (i + 1 >= e)
                        return fail(err, MD_ADDRESS_INVALID_DISPLAY_NAME,
                                    "unclosed quoted string in display name", open);
                    c = u[++i];
                }
                if (dst)
                    dst[o] = (char)c;
                o++;
                i++;
            }
            continue;
        }
        if (c != ' ' && c != '.' && c < 0x80 && !is_atext(c))
            return fail(err, MD_ADDRESS_INVALID_DISPLAY_NAME,
                        "special characters in a display name must be in double quotes", i);
        if (dst)
            dst[o] = (char)c;
        o++;
        i++;
    }
    if (dlen)
        *dlen = o;
    return MD_OK;
}

/* ---- addr-spec ---- */

static md_str_t
pool_str(md_pool_t *pool, const char *s, size_t n)
{
    md_str_t r = {n, md_pstrndup(pool, s, n)};
    return r;
}

static md_str_t
pool_join(md_pool_t *pool, const char *a, size_t alen, const char *b, size_t blen)
{
    char *p = md_palloc(pool, alen + 1 + blen + 1);
    memcpy(p, a, alen);
    p[alen] = '@';
    memcpy(p + alen + 1, b, blen);
    p[alen + 1 + blen] = '\0';
    md_str_t r = {alen + 1 + blen, p};
    return r;
}

/* Validates the addr-spec at s[b..e) and fills out from pool when pool is given. */
static int
parse_spec(md_pool_t *pool, const char *s, size_t b, size_t e, md_address_t *out,
           md_address_error_t *err)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t at;
    bool quoted = u[b] == '"';

    if (quoted) {
        size_t i = b + 1, content = 0;
        for (;;) {
            if (i >= e)
                return fail(err, MD_ADDRESS_INVALID_LOCAL_PART,
                            "unclosed quoted string in local part", b);
            unsigned char c = u[i];
            if (c == '"')
                break;
            if (c == '\\') {
                if (i + 1 >= e)
                    return fail(err, MD_ADDRESS_INVALID_LOCAL_PART,
                                "unclosed quoted string in local part", b);
                c = u[++i];
            }
            if (c >= 0x80)
                return fail(err, MD_ADDRESS_NON_ASCII_LOCAL_PART,
                            "non-ASCII local part needs SMTPUTF8, which is not supported", i);
            content++;
            i++;
        }
        at = i + 1;
        if (content == 0)
            return fail(err, MD_ADDRESS_INVALID_LOCAL_PART, "local part is an empty quoted string",
                        b);
        if (at >= e || u[at] != '@') {
            if (at < e && memchr(s + at, '@', e - at))
                return fail(err, MD_ADDRESS_INVALID_LOCAL_PART, "text after the quoted local part",
                            at);
            return fail(err, MD_ADDRESS_MISSING_AT, "address has no '@'", at);
        }
    } else {
        const char *p = NULL;
        for (size_t i = e; i > b; i--)
            if (u[i - 1] == '@') {
                p = s + i - 1;
                break;
            }
        if (!p)
            return fail(err, MD_ADDRESS_MISSING_AT, "address has no '@'", b);
        at = (size_t)(p - s);
        if (at == b)
            return fail(err, MD_ADDRESS_INVALID_LOCAL_PART, "local part is empty", b);
        for (size_t i = b; i < at; i++) {
            unsigned char c = u[i];
            if (c >= 0x80)
                return fail(err, MD_ADDRESS_NON_ASCII_LOCAL_PART,
                            "non-ASCII local part needs SMTPUTF8, which is not supported", i);
            if (c == '.') {
                if (i == b)
                    return fail(err, MD_ADDRESS_INVALID_LOCAL_PART, "local part starts with a dot",
                                i);
                if (i == at - 1)
                    return fail(err, MD_ADDRESS_INVALID_LOCAL_PART, "local part ends with a dot",
                                i);
                if (u[i - 1] == '.')
                    return fail(err, MD_ADDRESS_INVALID_LOCAL_PART,
                                "local part has consecutive dots", i);
                continue;
            }
            if (c == ' ')
                return fail(err, MD_ADDRESS_INVALID_LOCAL_PART,
                            "whitespace is not allowed in an unquoted local part", i);
            if (!is_atext(c))
                return fail(err, MD_ADDRESS_INVALID_LOCAL_PART,
                            "character not allowed in an unquoted local part", i);
        }
    }
    size_t local_len = at - b;
    if (local_len > MD_ADDRESS_LOCAL_MAX)
        return fail(err, MD_ADDRESS_LOCAL_PART_TOO_LONG, "local part is longer than 64 octets", b);

    size_t d = at + 1, dlen = e - d;
    char ascii[MD_ADDRESS_DOMAIN_MAX + 1];
    size_t alen;
    bool literal = dlen > 0 && u[d] == '[';
    if (literal) {
        if (dlen > MD_ADDRESS_DOMAIN_MAX)
            return fail(err, MD_ADDRESS_DOMAIN_TOO_LONG, "domain is longer than 253 octets", d);
        if (parse_literal(s + d, dlen, d, ascii, err) != MD_OK)
            return MD_ERROR;
        alen = dlen;
    } else {
        if (md_address_domain_to_ascii(s + d, dlen, ascii, sizeof(ascii), &alen, err) != MD_OK) {
            if (err)
                err->offset += d;
            return MD_ERROR;
        }
    }
    if (e - b > MD_ADDRESS_MAX || local_len + 1 + alen > MD_ADDRESS_MAX)
        return fail(err, MD_ADDRESS_ADDRESS_TOO_LONG, "address is longer than 254 octets", b);

    if (pool && out) {
        out->local = pool_str(pool, s + b, local_len);
        out->domain = pool_str(pool, s + d, dlen);
        out->domain_ascii = pool_str(pool, ascii, alen);
        out->addr = pool_str(pool, s + b, e - b);
        out->addr_ascii = pool_join(pool, s + b, local_len, ascii, alen);
        out->quoted_local = quoted;
        out->literal = literal;
        out->idn = false;
        for (size_t i = d; i < e; i++)
            if (u[i] >= 0x80)
                out->idn = true;
    }
    return MD_OK;
}

int
md_address_parse(md_pool_t *pool, const char *s, size_t len, md_address_t *out,
                 md_address_error_t *err)
{
    if (len == 0)
        return fail(err, MD_ADDRESS_EMPTY, "address is empty", 0);
    if (scan_chars(s, len, err) != MD_OK)
        return MD_ERROR;

    /* A '<' outside quoted strings means name-addr; quotes may hold '<' and '@'. */
    size_t lt = len;
    bool inq = false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (inq) {
            if (c == '\\')
                i++;
            else if (c == '"')
                inq = false;
        } else if (c == '"') {
            inq = true;
        } else if (c == '<') {
            lt = i;
            break;
        }
    }

    if (lt == len) {
        if (inq && s[len - 1] == '>')
            return fail(err, MD_ADDRESS_INVALID_DISPLAY_NAME,
                        "unclosed quoted string in display name", 0);
        if (parse_spec(pool, s, 0, len, out, err) != MD_OK)
            return MD_ERROR;
        if (pool && out) {
            out->display = pool_str(pool, "", 0);
            out->angle = false;
        }
        return MD_OK;
    }

    if (s[len - 1] != '>')
        return fail(err, MD_ADDRESS_INVALID_ANGLE_ADDR,
                    "address in '<' must end with '>' and nothing after it", len - 1);
    if (lt + 2 >= len)
        return fail(err, MD_ADDRESS_INVALID_ANGLE_ADDR, "nothing between '<' and '>'", lt);
    if (s[0] == ' ')
        return fail(err, MD_ADDRESS_INVALID_DISPLAY_NAME, "display name starts with a space", 0);
    size_t dend = lt;
    while (dend > 0 && s[dend - 1] == ' ')
        dend--;
    size_t dlen = 0;
    if (parse_display(s, 0, dend, NULL, NULL, err) != MD_OK)
        return MD_ERROR;
    if (parse_spec(pool, s, lt + 1, len - 1, out, err) != MD_OK)
        return MD_ERROR;
    if (pool && out) {
        char *dst = md_palloc(pool, dend + 1);
        parse_display(s, 0, dend, dst, &dlen, NULL);
        dst[dlen] = '\0';
        out->display.data = dst;
        out->display.len = dlen;
        out->angle = true;
    }
    return MD_OK;
}

/* ---- output helpers ---- */

/* snprintf-style appender: counts everything, stores what fits, keeps a NUL. */
typedef struct {
    char *buf;
    size_t size, n;
} writer_t;

static void
put(writer_t *w, char c)
{
    if (w->n + 1 < w->size)
        w->buf[w->n] = c;
    w->n++;
}

static void
put_n(writer_t *w, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        put(w, s[i]);
}

static size_t
finish(writer_t *w)
{
    if (w->size > 0)
        w->buf[w->n < w->size ? w->n : w->size - 1] = '\0';
    return w->n;
}

/* Quoted string with only the two characters that must be escaped escaped. */
static void
put_quoted(writer_t *w, const char *s, size_t n)
{
    put(w, '"');
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"' || s[i] == '\\')
            put(w, '\\');
        put(w, s[i]);
    }
    put(w, '"');
}

static bool
is_dot_atom(const char *s, size_t n)
{
    if (n == 0 || s[0] == '.' || s[n - 1] == '.')
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '.') {
            if (s[i - 1] == '.')
                return false;
        } else if (!is_atext((unsigned char)s[i])) {
            return false;
        }
    }
    return true;
}

size_t
md_address_normalize(const md_address_t *a, char *buf, size_t size)
{
    writer_t w = {buf, size, 0};
    if (a->quoted_local) {
        /* The content without quotes and escapes is at most as long as the local part. */
        char content[MD_ADDRESS_LOCAL_MAX];
        size_t n = 0;
        for (size_t i = 1; i + 1 < a->local.len && n < sizeof(content); i++) {
            if (a->local.data[i] == '\\')
                i++;
            content[n++] = a->local.data[i];
        }
        if (is_dot_atom(content, n))
            put_n(&w, content, n);
        else
            put_quoted(&w, content, n);
    } else {
        put_n(&w, a->local.data, a->local.len);
    }
    put(&w, '@');
    put_n(&w, a->domain_ascii.data, a->domain_ascii.len);
    return finish(&w);
}

bool
md_address_display_needs_encoding(md_str_t display)
{
    for (size_t i = 0; i < display.len; i++) {
        if ((unsigned char)display.data[i] >= 0x80)
            return true;
        if (display.data[i] == '=' && i + 1 < display.len && display.data[i + 1] == '?')
            return true;
    }
    return false;
}

/* Words of atext (or UTF-8) separated by single spaces: can be written unquoted. */
static bool
is_plain_phrase(const char *s, size_t n)
{
    if (n == 0 || s[0] == ' ' || s[n - 1] == ' ')
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == ' ') {
            if (s[i - 1] == ' ')
                return false;
        } else if (c < 0x80 && !is_atext(c)) {
            return false;
        }
    }
    return true;
}

ssize_t
md_address_format(char *buf, size_t size, md_str_t display, md_str_t addr, bool *needs_encoding)
{
    writer_t w = {buf, size, 0};
    if (size > 0)
        buf[0] = '\0';
    /* A bare addr-spec never ends in '>': that excludes the "<...>" forms. */
    if ((display.len && scan_chars(display.data, display.len, NULL) != MD_OK) || addr.len == 0 ||
        addr.data[addr.len - 1] == '>' ||
        md_address_parse(NULL, addr.data, addr.len, NULL, NULL) != MD_OK)
        return -1;
    if (needs_encoding)
        *needs_encoding = md_address_display_needs_encoding(display);
    if (display.len == 0) {
        put_n(&w, addr.data, addr.len);
        return (ssize_t)finish(&w);
    }
    if (is_plain_phrase(display.data, display.len))
        put_n(&w, display.data, display.len);
    else
        put_quoted(&w, display.data, display.len);
    put_n(&w, " <", 2);
    put_n(&w, addr.data, addr.len);
    put(&w, '>');
    return (ssize_t)finish(&w);
}
