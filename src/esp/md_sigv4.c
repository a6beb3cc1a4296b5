/*
 * AWS Signature Version 4 (see md_sigv4.h for the rules and the contract).
 *
 * Everything is built in the caller's md_sigv4_out_t: the canonical request,
 * string to sign and Authorization in their buffers, the normalised path and
 * the encoded query parameters in out->scratch, found again by offset because a
 * buffer may move when it grows. Sorting works on small index arrays on the
 * stack (bounded by MD_SIGV4_MAX_*), so nothing else is allocated.
 */
#include "md_sigv4.h"
#include "md_digest.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>

#define SECRET_MAX 256 /* bytes of secret key; AWS's are 40 */

static const char hexdig[] = "0123456789abcdef";
static const char hexdig_upper[] = "0123456789ABCDEF";

/* --- small helpers ------------------------------------------------------------ */

static void
buf_terminate(md_buf_t *b)
{
    md_buf_reserve(b, 1);
    *b->last = '\0';
}

static void
buf_clear(md_buf_t *b)
{
    b->pos = b->last = b->start;
}

static void
buf_append_view(md_buf_t *b, md_str_t s)
{
    md_buf_append(b, s.data, s.len);
}

static void
hex_encode(const unsigned char *in, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hexdig[in[i] >> 4];
        out[2 * i + 1] = hexdig[in[i] & 15];
    }
    out[2 * n] = '\0';
}

static unsigned char
lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

static bool
is_unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.' || c == '~';
}

/* RFC 9110 token characters, the only ones allowed in a header name. */
static bool
is_tchar(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static bool
is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static md_str_t
trim(md_str_t s)
{
    while (s.len && is_space((unsigned char)s.data[0])) {
        s.data++;
        s.len--;
    }
    while (s.len && is_space((unsigned char)s.data[s.len - 1]))
        s.len--;
    return s;
}

static bool
view_caseeq(md_str_t a, md_str_t b)
{
    if (a.len != b.len)
        return false;
    for (size_t i = 0; i < a.len; i++)
        if (lower((unsigned char)a.data[i]) != lower((unsigned char)b.data[i]))
            return false;
    return true;
}

/* Byte-wise comparison of a and b lower-cased, shorter first on a common prefix. */
static int
view_casecmp(md_str_t a, md_str_t b)
{
    size_t n = md_min(a.len, b.len);
    for (size_t i = 0; i < n; i++) {
        unsigned char x = lower((unsigned char)a.data[i]), y = lower((unsigned char)b.data[i]);
        if (x != y)
            return x < y ? -1 : 1;
    }
    return a.len < b.len ? -1 : a.len > b.len ? 1 : 0;
}

static bool
valid_header_name(md_str_t n)
{
    if (n.len == 0)
        return false;
    for (size_t i = 0; i < n.len; i++)
        if (!is_tchar((unsigned char)n.data[i]))
            return false;
    return true;
}

static bool
is_hex64(md_str_t s)
{
    if (s.len != MD_SIGV4_HEX_LEN)
        return false;
    for (size_t i = 0; i < s.len; i++)
        if (md_hexval((char)s.data[i]) < 0)
            return false;
    return true;
}

static int
sha256_hex(const void *data, size_t n, char out[MD_SIGV4_HEX_LEN + 1])
{
    unsigned char md[32];
    if (md_sha256(data, n, md) != MD_OK)
        return MD_ERROR;
    hex_encode(md, 32, out);
    return MD_OK;
}

static int
hmac(const void *key, size_t klen, const void *data, size_t n, unsigned char out[32])
{
    unsigned int len = 32;
    const EVP_MD *md = md_sha256_md();
    if (md == NULL || HMAC(md, key, (int)klen, data, n, out, &len) == NULL || len != 32)
        return MD_ERROR;
    return MD_OK;
}

void
md_sigv4_uri_encode(md_buf_t *b, md_str_t s, bool keep_slash)
{
    /* Worst case every byte triples; reserving once keeps the loop simple. */
    md_buf_reserve(b, 3 * s.len);
    char *p = b->last;
    for (size_t i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.data[i];
        if (is_unreserved(c) || (keep_slash && c == '/')) {
            *p++ = (char)c;
        } else {
            *p++ = '%';
            *p++ = hexdig_upper[c >> 4];
            *p++ = hexdig_upper[c & 15];
        }
    }
    b->last = p;
}

int
md_sigv4_parse_date(md_str_t s, time_t *t)
{
    if (s.len != MD_SIGV4_DATE_LEN || s.data[8] != 'T' || s.data[15] != 'Z')
        return MD_ERROR;
    int v[6];
    static const int at[6] = {0, 4, 6, 9, 11, 13}, width[6] = {4, 2, 2, 2, 2, 2};
    for (int k = 0; k < 6; k++) {
        v[k] = 0;
        for (int i = 0; i < width[k]; i++) {
            char c = s.data[at[k] + i];
            if (c < '0' || c > '9')
                return MD_ERROR;
            v[k] = v[k] * 10 + (c - '0');
        }
    }
    if (v[1] < 1 || v[1] > 12 || v[2] < 1 || v[2] > 31 || v[3] > 23 || v[4] > 59 || v[5] > 60)
        return MD_ERROR;
    struct tm tm = {0};
    tm.tm_year = v[0] - 1900;
    tm.tm_mon = v[1] - 1;
    tm.tm_mday = v[2];
    tm.tm_hour = v[3];
    tm.tm_min = v[4];
    tm.tm_sec = v[5];
    /* timegm is a pure computation (no time zone files), unlike mktime. */
    *t = timegm(&tm);
    return MD_OK;
}

const char *
md_sigv4_verdict_name(md_sigv4_verdict_t v)
{
    switch (v) {
    case MD_SIGV4_VERIFIED:
        return "verified";
    case MD_SIGV4_BAD_SIGNATURE:
        return "bad_signature";
    case MD_SIGV4_STALE:
        return "stale";
    case MD_SIGV4_MALFORMED:
        return "malformed";
    }
    return "unknown";
}

void
md_sigv4_out_init(md_sigv4_out_t *out)
{
    memset(out, 0, sizeof(*out));
    md_buf_init(&out->creq);
    md_buf_init(&out->sts);
    md_buf_init(&out->authz);
    md_buf_init(&out->scratch);
}

void
md_sigv4_out_free(md_sigv4_out_t *out)
{
    md_buf_free(&out->creq);
    md_buf_free(&out->sts);
    md_buf_free(&out->authz);
    md_buf_free(&out->scratch);
    memset(out, 0, sizeof(*out));
}

static void
out_reset(md_sigv4_out_t *out)
{
    buf_clear(&out->creq);
    buf_clear(&out->sts);
    buf_clear(&out->authz);
    buf_clear(&out->scratch);
    out->signature[0] = out->amz_date[0] = out->payload_hash[0] = '\0';
    out->nsend = 0;
    out->reason = NULL;
}

/* --- canonical request ---------------------------------------------------------- */

/*
 * Appends the canonical URI of the wire path to creq: dot segments and empty
 * segments removed (the normalised path is built in scratch first, because ".."
 * takes back what was written), then every segment URI-encoded once more.
 */
static void
canon_path(md_sigv4_out_t *out, md_str_t path)
{
    md_buf_t *s = &out->scratch;
    size_t base = md_buf_len(s);
    bool trailing = false;
    size_t i = 0;

    while (i <= path.len) {
        size_t j = i;
        while (j < path.len && path.data[j] != '/')
            j++;
        md_str_t seg = {j - i, path.data + i};
        bool last = j >= path.len;
        if (seg.len == 0 || md_str_eq(seg, ".")) {
            trailing = last;
        } else if (md_str_eq(seg, "..")) {
            /* Drop the last "/segment" written, never going above the root. */
            size_t end = md_buf_len(s);
            while (end > base && s->pos[end - 1] != '/')
                end--;
            if (end > base)
                end--;
            s->last = s->pos + end;
            trailing = last;
        } else {
            md_buf_append(s, "/", 1);
            buf_append_view(s, seg);
            trailing = false;
        }
        i = j + 1;
    }
    if (md_buf_len(s) == base || trailing)
        md_buf_append(s, "/", 1);

    md_str_t norm = {md_buf_len(s) - base, s->pos + base};
    md_sigv4_uri_encode(&out->creq, norm, true);
    s->last = s->pos + base; /* scratch space is free again */
}

typedef struct param_s {
    size_t k_off, k_len, v_off, v_len; /* encoded key and value in scratch */
} param_t;

/* Percent-decodes s and encodes it again the canonical way into b. */
static int
reencode(md_buf_t *b, md_str_t s)
{
    md_buf_reserve(b, 3 * s.len);
    char *p = b->last;
    for (size_t i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.data[i];
        if (c == '%') {
            int hi = i + 2 < s.len ? md_hexval((char)s.data[i + 1]) : -1;
            int lo = i + 2 < s.len ? md_hexval((char)s.data[i + 2]) : -1;
            if (hi < 0 || lo < 0)
                return MD_ERROR;
            c = (unsigned char)(hi << 4 | lo);
            i += 2;
        }
        if (is_unreserved(c)) {
            *p++ = (char)c;
        } else {
            *p++ = '%';
            *p++ = hexdig_upper[c >> 4];
            *p++ = hexdig_upper[c & 15];
        }
    }
    b->last = p;
    return MD_OK;
}

static int
param_cmp(const md_buf_t *s, const param_t *a, const param_t *b)
{
    size_t n = md_min(a->k_len, b->k_len);
    int c = memcmp(s->pos + a->k_off, s->pos + b->k_off, n);
    if (c)
        return c;
    if (a->k_len != b->k_len)
        return a->k_len < b->k_len ? -1 : 1;
    n = md_min(a->v_len, b->v_len);
    c = memcmp(s->pos + a->v_off, s->pos + b->v_off, n);
    if (c)
        return c;
    return a->v_len < b->v_len ? -1 : a->v_len > b->v_len ? 1 : 0;
}

/* Appends the canonical query string of the wire query to creq. */
static int
canon_query(md_sigv4_out_t *out, md_str_t query)
{
    md_buf_t *s = &out->scratch;
    size_t base = md_buf_len(s);
    param_t params[MD_SIGV4_MAX_PARAMS];
    size_t np = 0;

    for (size_t i = 0; i < query.len;) {
        size_t j = i;
        while (j < query.len && query.data[j] != '&')
            j++;
        if (j > i) {
            if (np == md_nelems(params)) {
                out->reason = "too many query parameters";
                return MD_ERROR;
            }
            md_str_t k = {j - i, query.data + i}, v = {0, ""};
            const char *eq = memchr(k.data, '=', k.len);
            if (eq) {
                v.data = eq + 1;
                v.len = (size_t)(k.data + k.len - v.data);
                k.len = (size_t)(eq - k.data);
            }
            param_t *p = &params[np++];
            p->k_off = md_buf_len(s);
            if (reencode(s, k) != MD_OK) {
                out->reason = "malformed percent escape in the query";
                return MD_ERROR;
            }
            p->k_len = md_buf_len(s) - p->k_off;
            p->v_off = md_buf_len(s);
            if (reencode(s, v) != MD_OK) {
                out->reason = "malformed percent escape in the query";
                return MD_ERROR;
            }
            p->v_len = md_buf_len(s) - p->v_off;
        }
        i = j + 1;
    }

    /* Insertion sort: few parameters, and it needs no comparator context. */
    for (size_t i = 1; i < np; i++) {
        param_t t = params[i];
        size_t j = i;
        while (j > 0 && param_cmp(s, &params[j - 1], &t) > 0) {
            params[j] = params[j - 1];
            j--;
        }
        params[j] = t;
    }

    /* creq is a different buffer, so the offsets into scratch stay valid. */
    for (size_t i = 0; i < np; i++) {
        if (i)
            md_buf_append(&out->creq, "&", 1);
        md_buf_append(&out->creq, s->pos + params[i].k_off, params[i].k_len);
        md_buf_append(&out->creq, "=", 1);
        md_buf_append(&out->creq, s->pos + params[i].v_off, params[i].v_len);
    }
    s->last = s->pos + base;
    return MD_OK;
}

/* Appends v with surrounding whitespace dropped and inner runs made one space. */
static void
append_header_value(md_buf_t *b, md_str_t v)
{
    v = trim(v);
    md_buf_reserve(b, v.len);
    char *p = b->last;
    for (size_t i = 0; i < v.len; i++) {
        unsigned char c = (unsigned char)v.data[i];
        if (is_space(c)) {
            if (!is_space((unsigned char)v.data[i - 1]))
                *p++ = ' ';
        } else {
            *p++ = (char)c;
        }
    }
    b->last = p;
}

/*
 * Appends the canonical headers (each "name:value\n") to creq and the signed
 * header list ("a;b;c") to `signed_hdrs`. h: the headers to sign, n of them.
 */
static int
canon_headers(md_sigv4_out_t *out, const md_sigv4_header_t *h, size_t n, md_buf_t *signed_hdrs)
{
    size_t idx[MD_SIGV4_MAX_HEADERS];

    if (n > md_nelems(idx)) {
        out->reason = "too many headers";
        return MD_ERROR;
    }
    for (size_t i = 0; i < n; i++) {
        if (!valid_header_name(h[i].name)) {
            out->reason = "invalid header name";
            return MD_ERROR;
        }
        /* Stable insertion sort by lower-cased name keeps repeated names in order. */
        size_t j = i;
        while (j > 0 && view_casecmp(h[idx[j - 1]].name, h[i].name) > 0) {
            idx[j] = idx[j - 1];
            j--;
        }
        idx[j] = i;
    }

    for (size_t i = 0; i < n;) {
        md_str_t name = h[idx[i]].name;
        size_t at = md_buf_len(&out->creq);
        md_buf_append(&out->creq, name.data, name.len);
        for (size_t k = at; k < md_buf_len(&out->creq); k++)
            out->creq.pos[k] = (char)lower((unsigned char)out->creq.pos[k]);
        if (i)
            md_buf_append(signed_hdrs, ";", 1);
        md_buf_append(signed_hdrs, out->creq.pos + at, name.len);
        md_buf_append(&out->creq, ":", 1);
        size_t j = i;
        for (; j < n && view_caseeq(h[idx[j]].name, name); j++) {
            if (j > i)
                md_buf_append(&out->creq, ",", 1);
            append_header_value(&out->creq, h[idx[j]].value);
        }
        md_buf_append(&out->creq, "\n", 1);
        i = j;
    }
    return MD_OK;
}

/*
 * The common core of sign and verify: builds the canonical request, string to
 * sign, signature and Authorization in out from the parts. payload_hash is 64
 * lowercase hex digits, amz_date a checked 16-character X-Amz-Date.
 */
void
md_sigv4_key_cache_clear(md_sigv4_key_cache_t *kc)
{
    OPENSSL_cleanse(kc, sizeof(*kc));
}

/* Does kc hold the signing key of this secret, date, region and service? */
static bool
key_cache_hit(const md_sigv4_key_cache_t *kc, const md_sigv4_cred_t *cred, md_str_t date8)
{
    return kc->valid && memcmp(kc->date8, date8.data, 8) == 0 &&
           kc->secret_len == cred->secret_key.len && kc->region_len == cred->region.len &&
           kc->service_len == cred->service.len &&
           (cred->secret_key.len == 0 ||
            CRYPTO_memcmp(kc->secret, cred->secret_key.data, cred->secret_key.len) == 0) &&
           memcmp(kc->region, cred->region.data, cred->region.len) == 0 &&
           memcmp(kc->service, cred->service.data, cred->service.len) == 0;
}

/* kSigning for cred at date8 into key: from kc when it holds it, else derived
 * (and kept in kc when kc is given and the scope fits it). keybuf is the
 * caller's scratch of 4 + SECRET_MAX bytes, which it cleanses. */
static int
signing_key(md_sigv4_key_cache_t *kc, const md_sigv4_cred_t *cred, md_str_t date8, char *keybuf,
            unsigned char key[32])
{
    if (kc && key_cache_hit(kc, cred, date8)) {
        memcpy(key, kc->key, 32);
        return MD_OK;
    }
    unsigned char k[32];
    memcpy(keybuf, "AWS4", 4);
    if (cred->secret_key.len)
        memcpy(keybuf + 4, cred->secret_key.data, cred->secret_key.len);
    int rc = hmac(keybuf, 4 + cred->secret_key.len, date8.data, date8.len, k) == MD_OK &&
                     hmac(k, 32, cred->region.data, cred->region.len, key) == MD_OK &&
                     hmac(key, 32, cred->service.data, cred->service.len, k) == MD_OK &&
                     hmac(k, 32, "aws4_request", 12, key) == MD_OK
                 ? MD_OK
                 : MD_ERROR;
    OPENSSL_cleanse(k, sizeof(k));
    if (rc != MD_OK || kc == NULL)
        return rc;
    if (cred->secret_key.len > sizeof(kc->secret) || cred->region.len > sizeof(kc->region) ||
        cred->service.len > sizeof(kc->service))
        return MD_OK; /* too long to keep: derived every time */
    unsigned long derived = kc->derived + 1;
    md_sigv4_key_cache_clear(kc);
    kc->derived = derived;
    memcpy(kc->date8, date8.data, 8);
    if (cred->secret_key.len)
        memcpy(kc->secret, cred->secret_key.data, cred->secret_key.len);
    memcpy(kc->region, cred->region.data, cred->region.len);
    memcpy(kc->service, cred->service.data, cred->service.len);
    kc->secret_len = cred->secret_key.len;
    kc->region_len = cred->region.len;
    kc->service_len = cred->service.len;
    memcpy(kc->key, key, 32);
    kc->valid = 1;
    return MD_OK;
}

static int
compute(md_sigv4_out_t *out, md_str_t method, md_str_t path, md_str_t query,
        const md_sigv4_header_t *h, size_t n, md_str_t amz_date, const md_sigv4_cred_t *cred,
        md_sigv4_key_cache_t *kc)
{
    md_buf_t *sh = &out->scratch;
    size_t sh_off, sh_len;
    md_str_t date8 = {8, amz_date.data};
    unsigned char k[32], k2[32];
    char keybuf[4 + SECRET_MAX];
    int rc = MD_ERROR;

    if (cred->secret_key.len > SECRET_MAX) {
        out->reason = "secret key too long";
        return MD_ERROR;
    }
    buf_append_view(&out->creq, method);
    md_buf_append(&out->creq, "\n", 1);
    canon_path(out, path);
    md_buf_append(&out->creq, "\n", 1);
    if (canon_query(out, query) != MD_OK)
        goto done;
    md_buf_append(&out->creq, "\n", 1);
    /* The signed header list goes to the end of scratch, where the path and the
     * query pieces were: they are done with. */
    sh_off = md_buf_len(sh);
    if (canon_headers(out, h, n, sh) != MD_OK)
        goto done;
    sh_len = md_buf_len(sh) - sh_off;
    md_buf_append(&out->creq, "\n", 1);
    md_buf_append(&out->creq, sh->pos + sh_off, sh_len);
    md_buf_append(&out->creq, "\n", 1);
    md_buf_append(&out->creq, out->payload_hash, MD_SIGV4_HEX_LEN);
    buf_terminate(&out->creq);

    char creq_hash[MD_SIGV4_HEX_LEN + 1];
    if (sha256_hex(out->creq.pos, md_buf_len(&out->creq), creq_hash) != MD_OK) {
        out->reason = "SHA-256 failed";
        goto done;
    }
    md_buf_append_str(&out->sts, MD_SIGV4_ALGORITHM "\n");
    buf_append_view(&out->sts, amz_date);
    md_buf_append(&out->sts, "\n", 1);
    size_t scope_at = md_buf_len(&out->sts);
    buf_append_view(&out->sts, date8);
    md_buf_append(&out->sts, "/", 1);
    buf_append_view(&out->sts, cred->region);
    md_buf_append(&out->sts, "/", 1);
    buf_append_view(&out->sts, cred->service);
    md_buf_append_str(&out->sts, "/aws4_request");
    size_t scope_len = md_buf_len(&out->sts) - scope_at;
    md_buf_append(&out->sts, "\n", 1);
    md_buf_append(&out->sts, creq_hash, MD_SIGV4_HEX_LEN);
    buf_terminate(&out->sts);

    if (signing_key(kc, cred, date8, keybuf, k2) != MD_OK ||
        hmac(k2, 32, out->sts.pos, md_buf_len(&out->sts), k) != MD_OK) {
        out->reason = "HMAC-SHA256 failed";
        goto done;
    }
    hex_encode(k, 32, out->signature);

    md_buf_append_str(&out->authz, MD_SIGV4_ALGORITHM " Credential=");
    buf_append_view(&out->authz, cred->access_key_id);
    md_buf_append(&out->authz, "/", 1);
    md_buf_append(&out->authz, out->sts.pos + scope_at, scope_len);
    md_buf_append_str(&out->authz, ", SignedHeaders=");
    md_buf_append(&out->authz, sh->pos + sh_off, sh_len);
    md_buf_append_str(&out->authz, ", Signature=");
    md_buf_append(&out->authz, out->signature, MD_SIGV4_HEX_LEN);
    buf_terminate(&out->authz);
    rc = MD_OK;

done:
    OPENSSL_cleanse(keybuf, sizeof(keybuf));
    OPENSSL_cleanse(k, sizeof(k));
    OPENSSL_cleanse(k2, sizeof(k2));
    return rc;
}

/* --- signing ------------------------------------------------------------------ */

static bool
is_signer_owned(md_str_t name)
{
    return md_str_caseeq(name, "x-amz-date") || md_str_caseeq(name, "x-amz-security-token") ||
           md_str_caseeq(name, "x-amz-content-sha256") || md_str_caseeq(name, "authorization");
}

int
md_sigv4_sign(const md_sigv4_req_t *req, const md_sigv4_cred_t *cred, time_t when, unsigned flags,
              md_sigv4_out_t *out)
{
    return md_sigv4_sign_cached(req, cred, when, flags, NULL, out);
}

int
md_sigv4_sign_cached(const md_sigv4_req_t *req, const md_sigv4_cred_t *cred, time_t when,
                     unsigned flags, md_sigv4_key_cache_t *kc, md_sigv4_out_t *out)
{
    md_sigv4_header_t h[MD_SIGV4_MAX_HEADERS];
    size_t n = 0;
    bool host = false;

    out_reset(out);
    if (cred->access_key_id.len == 0 || cred->region.len == 0 || cred->service.len == 0) {
        out->reason = "access key id, region and service are required";
        return MD_ERROR;
    }
    if (req->method.len == 0) {
        out->reason = "no method";
        return MD_ERROR;
    }
    if (req->nheaders + 3 > md_nelems(h)) {
        out->reason = "too many headers";
        return MD_ERROR;
    }
    for (size_t i = 0; i < req->nheaders; i++) {
        if (is_signer_owned(req->headers[i].name)) {
            out->reason = "x-amz-date, x-amz-security-token, x-amz-content-sha256 and "
                          "authorization are set by the signer";
            return MD_ERROR;
        }
        host = host || md_str_caseeq(req->headers[i].name, "host");
        h[n++] = req->headers[i];
    }
    if (!host) {
        out->reason = "no Host header to sign";
        return MD_ERROR;
    }

    struct tm tm;
    if (gmtime_r(&when, &tm) == NULL || strftime(out->amz_date, sizeof(out->amz_date),
                                                 "%Y%m%dT%H%M%SZ", &tm) != MD_SIGV4_DATE_LEN) {
        out->reason = "time out of range";
        return MD_ERROR;
    }

    if (req->payload_hash.len) {
        if (!is_hex64(req->payload_hash)) {
            out->reason = "payload hash is not 64 hex digits";
            return MD_ERROR;
        }
        for (size_t i = 0; i < MD_SIGV4_HEX_LEN; i++)
            out->payload_hash[i] = (char)lower((unsigned char)req->payload_hash.data[i]);
        out->payload_hash[MD_SIGV4_HEX_LEN] = '\0';
    } else if (sha256_hex(req->payload.data ? req->payload.data : "", req->payload.len,
                          out->payload_hash) != MD_OK) {
        out->reason = "SHA-256 failed";
        return MD_ERROR;
    }

    md_sigv4_header_t *date = &out->send[out->nsend++];
    *date = (md_sigv4_header_t){md_string("X-Amz-Date"), {MD_SIGV4_DATE_LEN, out->amz_date}};
    h[n++] = *date;
    if (cred->session_token.len) {
        md_sigv4_header_t *tok = &out->send[out->nsend++];
        *tok = (md_sigv4_header_t){md_string("X-Amz-Security-Token"), cred->session_token};
        if (!(flags & MD_SIGV4_TOKEN_UNSIGNED))
            h[n++] = *tok;
    }
    if (flags & MD_SIGV4_CONTENT_SHA256) {
        md_sigv4_header_t *cs = &out->send[out->nsend++];
        *cs = (md_sigv4_header_t){md_string("x-amz-content-sha256"),
                                  {MD_SIGV4_HEX_LEN, out->payload_hash}};
        h[n++] = *cs;
    }

    md_str_t amz_date = {MD_SIGV4_DATE_LEN, out->amz_date};
    if (compute(out, req->method, req->path, req->query, h, n, amz_date, cred, kc) != MD_OK)
        return MD_ERROR;
    out->send[out->nsend++] =
        (md_sigv4_header_t){md_string("Authorization"), {md_buf_len(&out->authz), out->authz.pos}};
    return MD_OK;
}

/* --- verification --------------------------------------------------------------- */

static md_sigv4_verdict_t
refuse(md_sigv4_out_t *out, md_sigv4_verdict_t v, const char *reason)
{
    out->reason = reason;
    return v;
}

/* The one header named `name` in rq: MD_OK, MD_DECLINED if absent, MD_ERROR if repeated. */
static int
single_header(const md_sigv4_received_t *rq, const char *name, md_str_t *value)
{
    int found = 0;
    for (size_t i = 0; i < rq->nheaders; i++) {
        if (md_str_caseeq(rq->headers[i].name, name)) {
            *value = trim(rq->headers[i].value);
            found++;
        }
    }
    return found == 0 ? MD_DECLINED : found == 1 ? MD_OK : MD_ERROR;
}

/* Splits s at the first `sep`: head into *head, the rest (after sep) back into s. */
static bool
split(md_str_t *s, char sep, md_str_t *head)
{
    const char *p = memchr(s->data, sep, s->len);
    if (p == NULL)
        return false;
    head->data = s->data;
    head->len = (size_t)(p - s->data);
    s->len -= head->len + 1;
    s->data = p + 1;
    return true;
}

typedef struct authz_s {
    md_str_t akid, date8, region, service, signed_hdrs, signature;
} authz_t;

/* Parses "AWS4-HMAC-SHA256 Credential=a/d/r/s/aws4_request, SignedHeaders=x;y, Signature=hex". */
static const char *
parse_authz(md_str_t v, authz_t *a)
{
    static const md_str_t alg = md_string(MD_SIGV4_ALGORITHM);
    md_str_t cred = md_null_string;
    bool have_cred = false, have_sh = false, have_sig = false;

    if (v.len <= alg.len || memcmp(v.data, alg.data, alg.len) != 0 || v.data[alg.len] != ' ')
        return "Authorization is not AWS4-HMAC-SHA256";
    v.data += alg.len;
    v.len -= alg.len;
    while (v.len) {
        md_str_t part;
        if (!split(&v, ',', &part)) {
            part = v;
            v.len = 0;
        }
        part = trim(part);
        md_str_t key;
        if (!split(&part, '=', &key))
            return "Authorization component without '='";
        bool *seen;
        md_str_t *dst;
        if (md_str_eq(key, "Credential")) {
            seen = &have_cred;
            dst = &cred;
        } else if (md_str_eq(key, "SignedHeaders")) {
            seen = &have_sh;
            dst = &a->signed_hdrs;
        } else if (md_str_eq(key, "Signature")) {
            seen = &have_sig;
            dst = &a->signature;
        } else {
            return "unknown Authorization component";
        }
        if (*seen)
            return "repeated Authorization component";
        *seen = true;
        *dst = part;
    }
    if (!have_cred || !have_sh || !have_sig)
        return "Authorization lacks Credential, SignedHeaders or Signature";

    /* The access key id cannot hold "/", so the scope is the last four parts. */
    md_str_t term;
    if (!split(&cred, '/', &a->akid) || !split(&cred, '/', &a->date8) ||
        !split(&cred, '/', &a->region) || !split(&cred, '/', &a->service))
        return "Credential is not key/date/region/service/aws4_request";
    term = cred;
    if (!md_str_eq(term, "aws4_request") || a->akid.len == 0 || a->date8.len != 8 ||
        a->region.len == 0 || a->service.len == 0)
        return "Credential is not key/date/region/service/aws4_request";
    if (a->signature.len != MD_SIGV4_HEX_LEN)
        return "Signature is not 64 hex digits";
    for (size_t i = 0; i < a->signature.len; i++) {
        char c = a->signature.data[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return "Signature is not 64 lowercase hex digits";
    }
    return NULL;
}

static bool
const_eq(md_str_t a, md_str_t b)
{
    /* The lengths are not secret (a token's or key id's length is no help to a
     * forger); the bytes are compared without an early exit. */
    return a.len == b.len && CRYPTO_memcmp(a.data, b.data, a.len) == 0;
}

md_sigv4_verdict_t
md_sigv4_verify_cached(const md_sigv4_received_t *rq, const md_sigv4_cred_t *cred, time_t now,
                       unsigned max_skew, md_sigv4_key_cache_t *kc, md_sigv4_out_t *out)
{
    md_sigv4_header_t h[MD_SIGV4_MAX_HEADERS];
    size_t n = 0;
    authz_t a;
    md_str_t v, amz_date;
    const char *err;
    time_t t;

    out_reset(out);

    switch (single_header(rq, "authorization", &v)) {
    case MD_DECLINED:
        return refuse(out, MD_SIGV4_MALFORMED, "no Authorization header");
    case MD_ERROR:
        return refuse(out, MD_SIGV4_MALFORMED, "more than one Authorization header");
    }
    memset(&a, 0, sizeof(a));
    if ((err = parse_authz(v, &a)) != NULL)
        return refuse(out, MD_SIGV4_MALFORMED, err);

    switch (single_header(rq, "x-amz-date", &amz_date)) {
    case MD_DECLINED:
        return refuse(out, MD_SIGV4_MALFORMED, "no X-Amz-Date header");
    case MD_ERROR:
        return refuse(out, MD_SIGV4_MALFORMED, "more than one X-Amz-Date header");
    }
    if (md_sigv4_parse_date(amz_date, &t) != MD_OK)
        return refuse(out, MD_SIGV4_MALFORMED, "X-Amz-Date is not YYYYMMDDTHHMMSSZ");
    if (memcmp(a.date8.data, amz_date.data, 8) != 0)
        return refuse(out, MD_SIGV4_MALFORMED, "credential scope date is not the X-Amz-Date day");

    if (!const_eq(a.akid, cred->access_key_id))
        return refuse(out, MD_SIGV4_BAD_SIGNATURE, "unknown access key id");
    if (!const_eq(a.region, cred->region))
        return refuse(out, MD_SIGV4_BAD_SIGNATURE, "credential scope names another region");
    if (!const_eq(a.service, cred->service))
        return refuse(out, MD_SIGV4_BAD_SIGNATURE, "credential scope names another service");

    /* Checked before the HMAC: a replayed old request costs no hashing. */
    if ((t > now && (uintmax_t)(t - now) > max_skew) ||
        (t < now && (uintmax_t)(now - t) > max_skew))
        return refuse(out, MD_SIGV4_STALE, "X-Amz-Date is outside the allowed clock skew");

    if (cred->session_token.len) {
        md_str_t tok;
        if (single_header(rq, "x-amz-security-token", &tok) != MD_OK ||
            !const_eq(tok, cred->session_token))
            return refuse(out, MD_SIGV4_BAD_SIGNATURE, "missing or wrong X-Amz-Security-Token");
    }

    /* SignedHeaders: sorted, lower-case, unique names, host and x-amz-date among
     * them; every one present in the request. */
    bool host = false, date = false;
    md_str_t list = a.signed_hdrs, prev = md_null_string;
    while (list.len) {
        md_str_t name;
        if (!split(&list, ';', &name)) {
            name = list;
            list.len = 0;
        }
        if (!valid_header_name(name))
            return refuse(out, MD_SIGV4_MALFORMED, "SignedHeaders holds an invalid name");
        for (size_t i = 0; i < name.len; i++)
            if (name.data[i] >= 'A' && name.data[i] <= 'Z')
                return refuse(out, MD_SIGV4_MALFORMED, "SignedHeaders is not lower case");
        if (prev.data && view_casecmp(prev, name) >= 0)
            return refuse(out, MD_SIGV4_MALFORMED, "SignedHeaders is not sorted and unique");
        prev = name;
        host = host || md_str_eq(name, "host");
        date = date || md_str_eq(name, "x-amz-date");
        size_t before = n;
        for (size_t i = 0; i < rq->nheaders; i++) {
            if (!view_caseeq(rq->headers[i].name, name))
                continue;
            if (n == md_nelems(h))
                return refuse(out, MD_SIGV4_MALFORMED, "too many signed headers");
            h[n++] = rq->headers[i];
        }
        if (n == before)
            return refuse(out, MD_SIGV4_MALFORMED, "a signed header is missing from the request");
    }
    if (!host || !date)
        return refuse(out, MD_SIGV4_MALFORMED, "host and x-amz-date must be signed");

    /* The payload hash is always that of the body received, so a changed body
     * fails the signature even when the sender's x-amz-content-sha256 is kept. */
    if (sha256_hex(rq->body.data ? rq->body.data : "", rq->body.len, out->payload_hash) != MD_OK)
        return refuse(out, MD_SIGV4_MALFORMED, "SHA-256 failed");
    md_str_t cs;
    int rc = single_header(rq, "x-amz-content-sha256", &cs);
    if (rc == MD_ERROR)
        return refuse(out, MD_SIGV4_MALFORMED, "more than one x-amz-content-sha256 header");
    if (rc == MD_OK && !view_caseeq(cs, (md_str_t){MD_SIGV4_HEX_LEN, out->payload_hash}))
        return refuse(out, MD_SIGV4_BAD_SIGNATURE, "x-amz-content-sha256 does not match the body");

    memcpy(out->amz_date, amz_date.data, MD_SIGV4_DATE_LEN);
    out->amz_date[MD_SIGV4_DATE_LEN] = '\0';
    /* Sign with the scope the request claims (equal to ours, checked above). */
    md_sigv4_cred_t c = *cred;
    c.region = a.region;
    c.service = a.service;
    if (compute(out, rq->method, rq->path, rq->query, h, n, amz_date, &c, kc) != MD_OK)
        return refuse(out, MD_SIGV4_MALFORMED, out->reason);
    if (CRYPTO_memcmp(out->signature, a.signature.data, MD_SIGV4_HEX_LEN) != 0)
        return refuse(out, MD_SIGV4_BAD_SIGNATURE, "signature does not match");
    return MD_SIGV4_VERIFIED;
}

md_sigv4_verdict_t
md_sigv4_verify(const md_sigv4_received_t *rq, const md_sigv4_cred_t *cred, time_t now,
                unsigned max_skew, md_sigv4_out_t *out)
{
    return md_sigv4_verify_cached(rq, cred, now, max_skew, NULL, out);
}
