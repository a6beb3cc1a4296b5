/*
 * Amazon SNS message verification: parsing, the string to sign, the URL rules
 * and the per-worker certificate cache. See md_sns.h for the rules and why.
 */
#include "md_sns.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#define SNS_CERT_PREFIX "SimpleNotificationService-"
#define SNS_CERT_MAX    (64 * 1024) /* a PEM certificate is ~2 KiB; more is not one */

/* ---------------------------------------------------------------- parsing */

static md_str_t
sv(const char *s, size_t n)
{
    md_str_t v = {n, s};
    return v;
}

/*
 * Reads key from obj into *out. A missing key leaves *out empty and returns
 * MD_DECLINED; a non-string value is MD_ERROR (a signed field must be a
 * string, and "null" is not the same as absent for the signer).
 */
static int
get_str(json_t *obj, const char *key, md_str_t *out)
{
    json_t *v = json_object_get(obj, key);
    out->data = NULL;
    out->len = 0;
    if (v == NULL)
        return MD_DECLINED;
    if (!json_is_string(v))
        return MD_ERROR;
    *out = sv(json_string_value(v), json_string_length(v));
    return MD_OK;
}

/*
 * The HTTP spelling (SigningCertURL) or the Lambda one (SigningCertUrl); both
 * at once is ambiguous, so refused. Returns as get_str.
 */
static int
get_str2(json_t *obj, const char *http_key, const char *lambda_key, md_str_t *out)
{
    md_str_t a, b;
    int ra = get_str(obj, http_key, &a);
    int rb = get_str(obj, lambda_key, &b);
    if (ra == MD_ERROR || rb == MD_ERROR || (ra == MD_OK && rb == MD_OK))
        return MD_ERROR;
    *out = ra == MD_OK ? a : b;
    return ra == MD_OK || rb == MD_OK ? MD_OK : MD_DECLINED;
}

int
md_sns_parse(md_sns_msg_t *msg, const char *body, size_t len, const char **reason)
{
    const char *why = NULL;
    json_error_t jerr;

    memset(msg, 0, sizeof(*msg));
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (root == NULL) {
        why = "body is not JSON (or repeats a key)";
        goto fail;
    }
    if (!json_is_object(root)) {
        why = "body is not a JSON object";
        goto fail;
    }

    if (get_str(root, "Type", &msg->type_name) != MD_OK) {
        why = "Type missing or not a string";
        goto fail;
    }
    if (md_str_eq(msg->type_name, "Notification"))
        msg->type = MD_SNS_NOTIFICATION;
    else if (md_str_eq(msg->type_name, "SubscriptionConfirmation"))
        msg->type = MD_SNS_SUBSCRIPTION_CONFIRMATION;
    else if (md_str_eq(msg->type_name, "UnsubscribeConfirmation"))
        msg->type = MD_SNS_UNSUBSCRIBE_CONFIRMATION;
    else {
        why = "unknown Type";
        goto fail;
    }

    struct {
        const char *key;
        md_str_t *dst;
    } req[] = {
        {"MessageId", &msg->message_id},
        {"TopicArn", &msg->topic_arn},
        {"Message", &msg->message},
        {"Timestamp", &msg->timestamp},
        {"SignatureVersion", &msg->signature_version},
        {"Signature", &msg->signature},
    };
    for (size_t i = 0; i < md_nelems(req); i++) {
        if (get_str(root, req[i].key, req[i].dst) != MD_OK) {
            why = "a required field (MessageId, TopicArn, Message, Timestamp, "
                  "SignatureVersion, Signature) is missing or not a string";
            goto fail;
        }
    }
    if (get_str2(root, "SigningCertURL", "SigningCertUrl", &msg->signing_cert_url) != MD_OK) {
        why = "SigningCertURL missing, not a string, or given twice";
        goto fail;
    }
    if (get_str2(root, "UnsubscribeURL", "UnsubscribeUrl", &msg->unsubscribe_url) == MD_ERROR) {
        why = "UnsubscribeURL not a string, or given twice";
        goto fail;
    }

    if (msg->type == MD_SNS_NOTIFICATION) {
        /* Subject is signed when present; a non-string one cannot be. Lambda
         * events carry "Subject": null for none (AWS's PHP validator reads that
         * as absent too), so null means absent. */
        if (!json_is_null(json_object_get(root, "Subject")) &&
            get_str(root, "Subject", &msg->subject) == MD_ERROR) {
            why = "Subject is not a string";
            goto fail;
        }
    } else {
        if (get_str(root, "SubscribeURL", &msg->subscribe_url) != MD_OK ||
            get_str(root, "Token", &msg->token) != MD_OK) {
            why = "SubscribeURL or Token missing or not a string";
            goto fail;
        }
    }

    if (!md_str_eq(msg->signature_version, "1") && !md_str_eq(msg->signature_version, "2")) {
        why = "SignatureVersion is neither \"1\" nor \"2\"";
        goto fail;
    }

    msg->json = root;
    return MD_OK;

fail:
    if (root)
        json_decref(root);
    memset(msg, 0, sizeof(*msg));
    if (reason)
        *reason = why;
    return MD_ERROR;
}

void
md_sns_msg_free(md_sns_msg_t *msg)
{
    if (msg->json)
        json_decref((json_t *)msg->json);
    memset(msg, 0, sizeof(*msg));
}

static void
sts_line(md_buf_t *out, const char *key, md_str_t v)
{
    md_buf_append_str(out, key);
    md_buf_append(out, "\n", 1);
    md_buf_append(out, v.data, v.len);
    md_buf_append(out, "\n", 1);
}

void
md_sns_string_to_sign(const md_sns_msg_t *msg, md_buf_t *out)
{
    sts_line(out, "Message", msg->message);
    sts_line(out, "MessageId", msg->message_id);
    if (msg->type == MD_SNS_NOTIFICATION) {
        if (msg->subject.data != NULL)
            sts_line(out, "Subject", msg->subject);
    } else {
        sts_line(out, "SubscribeURL", msg->subscribe_url);
    }
    sts_line(out, "Timestamp", msg->timestamp);
    if (msg->type != MD_SNS_NOTIFICATION)
        sts_line(out, "Token", msg->token);
    sts_line(out, "TopicArn", msg->topic_arn);
    sts_line(out, "Type", msg->type_name);
}

/* ------------------------------------------------------------ URL rules */

static bool
is_lower_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool
has_prefix(md_str_t s, size_t at, const char *lit)
{
    size_t n = strlen(lit);
    return s.len >= at && s.len - at >= n && memcmp(s.data + at, lit, n) == 0;
}

/*
 * Matches "https://sns.<[a-z0-9-]+>.amazonaws.com[.cn]" at the start of url,
 * followed by "/". Returns the offset of that "/" or 0 for no match; *region
 * is set to the region label and *china to whether ".cn" was there. The
 * region cannot hold a dot, so the match is unambiguous without backtracking.
 */
static size_t
match_sns_host(md_str_t url, md_str_t *region, bool *china)
{
    size_t i = 0;

    if (!has_prefix(url, i, "https://sns."))
        return 0;
    i += sizeof("https://sns.") - 1;
    size_t r0 = i;
    while (i < url.len && (is_lower_alnum(url.data[i]) || url.data[i] == '-'))
        i++;
    if (i == r0)
        return 0;
    if (region)
        *region = sv(url.data + r0, i - r0);
    if (!has_prefix(url, i, ".amazonaws.com"))
        return 0;
    i += sizeof(".amazonaws.com") - 1;
    bool cn = false;
    if (has_prefix(url, i, ".cn")) {
        cn = true;
        i += 3;
    }
    if (i >= url.len || url.data[i] != '/')
        return 0;
    if (china)
        *china = cn;
    return i;
}

/* True when name is exactly "SimpleNotificationService-<[a-z0-9]+>.pem". */
static bool
cert_name_ok(md_str_t name)
{
    size_t plen = sizeof(SNS_CERT_PREFIX) - 1;
    if (name.len <= plen + 4 || !has_prefix(name, 0, SNS_CERT_PREFIX) ||
        memcmp(name.data + name.len - 4, ".pem", 4) != 0)
        return false;
    for (size_t i = plen; i < name.len - 4; i++)
        if (!is_lower_alnum(name.data[i]))
            return false;
    return true;
}

bool
md_sns_cert_url_ok(md_str_t url)
{
    if (url.data == NULL)
        return false;
    size_t slash = match_sns_host(url, NULL, NULL);
    if (slash == 0)
        return false;
    return cert_name_ok(sv(url.data + slash + 1, url.len - slash - 1));
}

bool
md_sns_subscribe_url_ok(md_str_t url)
{
    if (url.data == NULL)
        return false;
    size_t i = match_sns_host(url, NULL, NULL);
    if (i == 0)
        return false;
    for (; i < url.len; i++) {
        unsigned char c = (unsigned char)url.data[i];
        if (c == '%') {
            if (i + 2 >= url.len || md_hexval(url.data[i + 1]) < 0 ||
                md_hexval(url.data[i + 2]) < 0)
                return false;
            i += 2;
            continue;
        }
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
            continue;
        /* No "#" (fragment), "\" (some parsers read it as "/"), spaces or controls. */
        if (strchr("-._~!$&'()*+,;=:@/?", c) == NULL || c == '\0')
            return false;
    }
    return true;
}

bool
md_sns_topic_allowed(md_str_t arn, const char *const *topics, size_t ntopics)
{
    if (arn.data == NULL || arn.len == 0)
        return false;
    for (size_t i = 0; i < ntopics; i++)
        if (topics[i] != NULL && md_str_eq(arn, topics[i]))
            return true;
    return false;
}

/* ---------------------------------------------------------------- cache */

typedef struct md_sns_cert_s {
    char *url;  /* URL-exact entry (fetched or added), or NULL */
    char *name; /* seeded entry: the basename, commercial partition, any region */
    EVP_PKEY *pkey;
    time_t not_before;
    time_t not_after;
    uint64_t added; /* insertion order, for eviction */
} md_sns_cert_t;

struct md_sns_cache_s {
    unsigned flags;
    uint64_t seq;
    md_sns_cert_t *certs;
    size_t n, cap;
};

md_sns_cache_t *
md_sns_cache_new(unsigned flags)
{
    md_sns_cache_t *c = md_xcalloc(1, sizeof(*c));
    c->flags = flags;
    return c;
}

static void
cert_clear(md_sns_cert_t *e)
{
    free(e->url);
    free(e->name);
    EVP_PKEY_free(e->pkey);
    memset(e, 0, sizeof(*e));
}

void
md_sns_cache_free(md_sns_cache_t *cache)
{
    if (cache == NULL)
        return;
    for (size_t i = 0; i < cache->n; i++)
        cert_clear(&cache->certs[i]);
    free(cache->certs);
    free(cache);
}

size_t
md_sns_cache_size(const md_sns_cache_t *cache)
{
    return cache->n;
}

static int
asn1_to_time(const ASN1_TIME *a, time_t *t)
{
    struct tm tm;
    if (a == NULL || ASN1_TIME_to_tm(a, &tm) != 1)
        return MD_ERROR;
    *t = timegm(&tm);
    return MD_OK;
}

/* The one subject CN of x, or an empty view if there is none or several. */
static md_str_t
subject_cn(X509 *x)
{
    md_str_t none = md_null_string;
    X509_NAME *nm = X509_get_subject_name(x);
    int idx = X509_NAME_get_index_by_NID(nm, NID_commonName, -1);
    if (idx < 0 || X509_NAME_get_index_by_NID(nm, NID_commonName, idx) >= 0)
        return none;
    ASN1_STRING *s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(nm, idx));
    if (s == NULL)
        return none;
    return sv((const char *)ASN1_STRING_get0_data(s), (size_t)ASN1_STRING_length(s));
}

/* Whether cn is what AWS puts in the SNS certificate for this partition/region. */
static bool
cn_ok(md_str_t cn, md_str_t region, bool china)
{
    if (!china)
        return md_str_eq(cn, "sns.amazonaws.com");
    if (md_str_eq(cn, "sns.amazonaws.com.cn"))
        return true;
    const char *suffix = ".amazonaws.com.cn";
    size_t sl = strlen(suffix);
    return cn.len == 4 + region.len + sl && memcmp(cn.data, "sns.", 4) == 0 &&
           memcmp(cn.data + 4, region.data, region.len) == 0 &&
           memcmp(cn.data + 4 + region.len, suffix, sl) == 0;
}

/*
 * Parses one PEM certificate and applies the CN and key checks for a URL of
 * this region/partition. On MD_OK *e holds the key and dates (names unset).
 */
static int
load_cert(const void *pem, size_t len, md_str_t region, bool china, md_sns_cert_t *e,
          const char **reason)
{
    if (len == 0 || len > SNS_CERT_MAX) {
        *reason = "certificate empty or too large";
        return MD_ERROR;
    }
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    X509 *x = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    ERR_clear_error();
    if (x == NULL) {
        *reason = "not a PEM certificate";
        return MD_ERROR;
    }
    int rc = MD_ERROR;
    if (!cn_ok(subject_cn(x), region, china)) {
        *reason = "certificate subject CN is not the SNS one";
        goto done;
    }
    if (asn1_to_time(X509_get0_notBefore(x), &e->not_before) != MD_OK ||
        asn1_to_time(X509_get0_notAfter(x), &e->not_after) != MD_OK) {
        *reason = "certificate validity dates unreadable";
        goto done;
    }
    EVP_PKEY *k = X509_get_pubkey(x);
    if (k == NULL || EVP_PKEY_get_base_id(k) != EVP_PKEY_RSA) {
        EVP_PKEY_free(k);
        *reason = "certificate key is not RSA";
        goto done;
    }
    e->pkey = k;
    rc = MD_OK;
done:
    X509_free(x);
    ERR_clear_error();
    return rc;
}

/*
 * Appends e (taking ownership of its members). Past MD_SNS_CACHE_MAX URL-exact
 * entries the oldest of those is dropped; seeded ones are never evicted (there
 * are few and they come from the operator).
 */
static void
cache_insert(md_sns_cache_t *c, md_sns_cert_t *e)
{
    e->added = ++c->seq;
    if (e->url) {
        size_t nurl = 0, oldest = SIZE_MAX;
        for (size_t i = 0; i < c->n; i++) {
            if (c->certs[i].url == NULL)
                continue;
            if (strcmp(c->certs[i].url, e->url) == 0) {
                cert_clear(&c->certs[i]);
                c->certs[i] = *e;
                return;
            }
            nurl++;
            if (oldest == SIZE_MAX || c->certs[i].added < c->certs[oldest].added)
                oldest = i;
        }
        if (nurl >= MD_SNS_CACHE_MAX) {
            cert_clear(&c->certs[oldest]);
            c->certs[oldest] = *e;
            return;
        }
    } else {
        for (size_t i = 0; i < c->n; i++) {
            if (c->certs[i].name && strcmp(c->certs[i].name, e->name) == 0) {
                cert_clear(&c->certs[i]);
                c->certs[i] = *e;
                return;
            }
        }
    }
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 8;
        c->certs = md_xrealloc(c->certs, c->cap * sizeof(*c->certs));
    }
    c->certs[c->n++] = *e;
}

int
md_sns_cache_add_pem(md_sns_cache_t *cache, md_str_t url, const void *pem, size_t len,
                     const char **reason)
{
    const char *why = NULL;
    md_str_t region = md_null_string;
    bool china = false;
    md_sns_cert_t e;

    memset(&e, 0, sizeof(e));
    if (!md_sns_cert_url_ok(url)) {
        why = "certificate URL fails the SNS rule";
        goto fail;
    }
    match_sns_host(url, &region, &china);
    if (load_cert(pem, len, region, china, &e, &why) != MD_OK)
        goto fail;
    e.url = md_xstrndup(url.data, url.len);
    cache_insert(cache, &e);
    return MD_OK;
fail:
    if (reason)
        *reason = why;
    return MD_ERROR;
}

/* Whole file into a new buffer (the caller frees), at most SNS_CERT_MAX bytes. */
static char *
read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    char *p = md_xmalloc(SNS_CERT_MAX + 1);
    size_t n = fread(p, 1, SNS_CERT_MAX + 1, f);
    bool err = ferror(f) != 0;
    fclose(f);
    if (err || n > SNS_CERT_MAX) {
        free(p);
        return NULL;
    }
    *len = n;
    return p;
}

int
md_sns_cache_seed_dir(md_sns_cache_t *cache, const char *dir, const char **reason)
{
    const char *why = NULL;
    int loaded = 0;
    DIR *d = opendir(dir);
    if (d == NULL) {
        if (reason)
            *reason = "cannot open the certificate directory";
        return MD_ERROR;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        md_str_t name = sv(de->d_name, strlen(de->d_name));
        if (!cert_name_ok(name))
            continue;
        char path[4096];
        struct stat st;
        if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, de->d_name) >= sizeof(path) ||
            stat(path, &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        size_t len = 0;
        char *pem = read_file(path, &len);
        if (pem == NULL) {
            why = "cannot read a certificate file";
            goto fail;
        }
        md_sns_cert_t e;
        memset(&e, 0, sizeof(e));
        md_str_t any = md_null_string;
        int rc = load_cert(pem, len, any, false, &e, &why);
        free(pem);
        if (rc != MD_OK)
            goto fail;
        e.name = md_xstrdup(de->d_name);
        cache_insert(cache, &e);
        loaded++;
    }
    closedir(d);
    return loaded;
fail:
    closedir(d);
    if (reason)
        *reason = why;
    return MD_ERROR;
}

/* The entry for url (which passed the rule), URL-exact first, then seeded. */
static md_sns_cert_t *
cache_find(md_sns_cache_t *c, md_str_t url)
{
    for (size_t i = 0; i < c->n; i++)
        if (c->certs[i].url && md_str_eq(url, c->certs[i].url))
            return &c->certs[i];
    bool china = false;
    size_t slash = match_sns_host(url, NULL, &china);
    if (slash == 0 || china)
        return NULL;
    md_str_t base = sv(url.data + slash + 1, url.len - slash - 1);
    for (size_t i = 0; i < c->n; i++)
        if (c->certs[i].name && md_str_eq(base, c->certs[i].name))
            return &c->certs[i];
    return NULL;
}

/* ---------------------------------------------------------------- verify */

static int
b64val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/*
 * Strict standard base64 (padded, no whitespace, no stray bits) into out, which
 * has room for cap bytes. Returns the decoded length or -1.
 */
static long
b64_decode(md_str_t in, unsigned char *out, size_t cap)
{
    if (in.len == 0 || in.len % 4 != 0 || in.len / 4 * 3 > cap)
        return -1;
    size_t o = 0;
    for (size_t i = 0; i < in.len; i += 4) {
        const unsigned char *q = (const unsigned char *)in.data + i;
        int v[4], pad = 0;
        for (int j = 0; j < 4; j++) {
            if (q[j] == '=' && i + 4 == in.len && j >= 2) {
                v[j] = 0;
                pad++;
                continue;
            }
            if (pad)
                return -1; /* data after "=" */
            if ((v[j] = b64val(q[j])) < 0)
                return -1;
        }
        uint32_t w =
            (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        if ((pad == 2 && (w & 0xffff)) || (pad == 1 && (w & 0xff)))
            return -1; /* non-zero bits under the padding */
        out[o++] = (unsigned char)(w >> 16);
        if (pad < 2)
            out[o++] = (unsigned char)(w >> 8);
        if (pad < 1)
            out[o++] = (unsigned char)w;
    }
    return (long)o;
}

static md_sns_verdict_t
result(md_sns_result_t *res, md_sns_verdict_t v, const char *reason)
{
    res->verdict = v;
    res->reason = reason;
    return v;
}

md_sns_verdict_t
md_sns_verify(const md_sns_msg_t *msg, md_sns_cache_t *cache, time_t now, md_sns_result_t *res)
{
    /* RSA signatures are the key's size; 16384-bit keys are far past anything
     * AWS uses, so this bounds the buffer without limiting real messages. */
    unsigned char sig[2048];

    memset(res, 0, sizeof(*res));
    if (msg->json == NULL)
        return result(res, MD_SNS_MALFORMED, "message was not parsed");
    if (!md_sns_cert_url_ok(msg->signing_cert_url))
        return result(res, MD_SNS_BAD_CERT_URL, "SigningCertURL is not an SNS certificate URL");
    long siglen = b64_decode(msg->signature, sig, sizeof(sig));
    if (siglen <= 0)
        return result(res, MD_SNS_MALFORMED, "Signature is not valid base64");
    if (msg->type == MD_SNS_SUBSCRIPTION_CONFIRMATION &&
        !md_sns_subscribe_url_ok(msg->subscribe_url))
        return result(res, MD_SNS_MALFORMED, "SubscribeURL is not an SNS URL");

    md_sns_cert_t *e = cache_find(cache, msg->signing_cert_url);
    if (e == NULL) {
        res->fetch_url = msg->signing_cert_url;
        return result(res, MD_SNS_UNKNOWN_CERT, "signing certificate not cached");
    }
    if (!(cache->flags & MD_SNS_CACHE_RELAX_DATES) && (now < e->not_before || now > e->not_after))
        return result(res, MD_SNS_BAD_CERT, "signing certificate not valid now");

    const EVP_MD *md = md_str_eq(msg->signature_version, "2") ? EVP_sha256() : EVP_sha1();
    md_buf_t sts;
    md_buf_init(&sts);
    md_sns_string_to_sign(msg, &sts);

    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int rc = ctx != NULL && EVP_DigestVerifyInit(ctx, NULL, md, NULL, e->pkey) == 1
                 ? EVP_DigestVerify(ctx, sig, (size_t)siglen, (const unsigned char *)sts.pos,
                                    md_buf_len(&sts))
                 : -1;
    EVP_MD_CTX_free(ctx);
    md_buf_free(&sts);
    ERR_clear_error();
    if (rc != 1)
        return result(res, MD_SNS_BAD_SIGNATURE, "signature does not match the message");
    return result(res, MD_SNS_OK, NULL);
}

const char *
md_sns_verdict_name(md_sns_verdict_t v)
{
    switch (v) {
    case MD_SNS_OK:
        return "ok";
    case MD_SNS_BAD_SIGNATURE:
        return "bad_signature";
    case MD_SNS_UNKNOWN_CERT:
        return "unknown_cert";
    case MD_SNS_BAD_CERT_URL:
        return "bad_cert_url";
    case MD_SNS_BAD_CERT:
        return "bad_cert";
    case MD_SNS_MALFORMED:
        return "malformed";
    }
    return "unknown";
}
