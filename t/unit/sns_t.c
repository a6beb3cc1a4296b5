/*
 * md_sns against real signed SNS messages (t/data/sns, see its README.md).
 *
 * Driven by t/data/sns/verification-results.json (openssl's verdict for every
 * sample): each sample is parsed, its string to sign compared byte for byte
 * with derived-string-to-sign/, and it is verified with its certificate seeded
 * (dates relaxed: most sample certificates have expired); "pass" samples must
 * verify, "fail" ones must be refused as a bad signature. Then every passing
 * sample is tampered with one byte at a time in each signed field (and the
 * Signature) and must fail; unsigned fields may change. Then the URL rules
 * (with the attacks the issue names: any *.amazonaws.com bucket, lookalike
 * hosts, http), which must refuse without asking for a fetch, the cache (fetch
 * path, dates with a pinned clock, CN and key checks), malformed input, and a
 * round trip with a locally made key, as quickstart will do.
 */
#include "md_sns.h"
#include "tap.h"

#include <stdio.h>
#include <stdlib.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

static char datadir[4096];

/* Whole file, NUL-terminated, or NULL. The caller frees. */
static char *
slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    md_buf_t b;
    md_buf_init(&b);
    char tmp[4096];
    size_t n;
    while ((n = fread(tmp, 1, sizeof(tmp), f)) > 0)
        md_buf_append(&b, tmp, n);
    fclose(f);
    md_buf_append(&b, "", 1);
    if (len)
        *len = md_buf_len(&b) - 1;
    return b.pos;
}

static char *
data_file(const char *rel, size_t *len)
{
    char path[8192];
    snprintf(path, sizeof(path), "%s/%s", datadir, rel);
    return slurp(path, len);
}

static md_str_t
view(const char *s)
{
    md_str_t v = {s ? strlen(s) : 0, s};
    return v;
}

/* Parses then verifies body; returns the verdict, or -1 when parse fails. */
static int
check_body(const char *body, size_t len, md_sns_cache_t *cache, time_t now, md_sns_result_t *res)
{
    md_sns_msg_t m;
    const char *why = NULL;
    if (md_sns_parse(&m, body, len, &why) != MD_OK)
        return -1;
    int v = (int)md_sns_verify(&m, cache, now, res);
    /* fetch_url points into m: keep a copy that outlives it. */
    static char url[4096];
    if (res->fetch_url.data != NULL && res->fetch_url.len < sizeof(url)) {
        memcpy(url, res->fetch_url.data, res->fetch_url.len);
        res->fetch_url.data = url;
    }
    md_sns_msg_free(&m);
    return v;
}

/* Serialises a jansson object exactly (no escaping changes to the values). */
static int
check_json(json_t *o, md_sns_cache_t *cache, md_sns_result_t *res)
{
    char *s = json_dumps(o, JSON_COMPACT);
    int v = check_body(s, strlen(s), cache, 0, res);
    free(s);
    return v;
}

/* A copy of sample with field key's string value changed at byte `at` (or
 * replaced by repl when repl is not NULL; removed when remove). */
static json_t *
mutate(json_t *sample, const char *key, size_t at, const char *repl, bool remove)
{
    json_t *o = json_deep_copy(sample);
    if (remove) {
        json_object_del(o, key);
        return o;
    }
    if (repl) {
        json_object_set_new(o, key, json_string(repl));
        return o;
    }
    json_t *v = json_object_get(o, key);
    size_t n = json_string_length(v);
    char *s = md_xmalloc(n + 1);
    memcpy(s, json_string_value(v), n + 1);
    at = at < n ? at : n - 1;
    /* A letter stays a letter and a digit a digit, so base64 stays valid and
     * only the signed bytes change. */
    char c = s[at];
    s[at] = c == 'A'                 ? 'B'
            : c == 'a'               ? 'b'
            : c == '0'               ? '1'
            : (c >= 'A' && c <= 'Z') ? 'A'
            : (c >= 'a' && c <= 'z') ? 'a'
            : (c >= '0' && c <= '9') ? '0'
                                     : 'x';
    json_object_set_new(o, key, json_stringn(s, n));
    free(s);
    return o;
}

static const char *
sample_url(json_t *o)
{
    json_t *u = json_object_get(o, "SigningCertURL");
    if (u == NULL)
        u = json_object_get(o, "SigningCertUrl");
    return json_string_value(u);
}

/* Seeds a fresh relaxed cache from the directory that holds cert (a relative
 * path under datadir). */
static md_sns_cache_t *
seeded_cache(const char *cert, unsigned flags)
{
    md_sns_cache_t *c = md_sns_cache_new(flags);
    char dir[8192];
    const char *slash = strrchr(cert, '/');
    snprintf(dir, sizeof(dir), "%s/%.*s", datadir, (int)(slash ? slash - cert : 0), cert);
    const char *why = NULL;
    int n = md_sns_cache_seed_dir(c, dir, &why);
    if (n != 1)
        printf("# seeding %s: %d (%s)\n", dir, n, why ? why : "");
    return c;
}

/* The string-to-sign file for a sample "dir/name.json": "dir__name.string-to-sign". */
static char *
expected_sts(const char *file, size_t *len)
{
    char rel[4096];
    const char *slash = strchr(file, '/');
    const char *dot = strrchr(file, '.');
    snprintf(rel, sizeof(rel), "derived-string-to-sign/%.*s__%.*s.string-to-sign",
             (int)(slash - file), file, (int)(dot - slash - 1), slash + 1);
    return data_file(rel, len);
}

static void
test_tamper(const char *file, json_t *sample, md_sns_cache_t *cache)
{
    md_sns_result_t res;
    const char *type = json_string_value(json_object_get(sample, "Type"));
    bool notif = strcmp(type, "Notification") == 0;
    const char *signed_keys[] = {"Message",   "MessageId", "Timestamp",    "TopicArn",
                                 "Signature", "Subject",   "SubscribeURL", "Token"};

    for (size_t i = 0; i < md_nelems(signed_keys); i++) {
        const char *k = signed_keys[i];
        if (json_object_get(sample, k) == NULL)
            continue;
        size_t n = json_string_length(json_object_get(sample, k));
        /* First, middle and last byte (for Signature the last is padding, so
         * use a byte inside the final quantum's data). */
        size_t spots[3] = {0, n / 2, strcmp(k, "Signature") == 0 ? n - 5 : n - 1};
        for (size_t j = 0; j < 3; j++) {
            json_t *o = mutate(sample, k, spots[j], NULL, false);
            int v = check_json(o, cache, &res);
            json_decref(o);
            if (strcmp(k, "SubscribeURL") == 0)
                ok(v == MD_SNS_BAD_SIGNATURE || v == MD_SNS_MALFORMED,
                   "%s: %s byte %zu changed is refused (%s)", file, k, spots[j],
                   v >= 0 ? md_sns_verdict_name(v) : "parse");
            else
                is_int(v, MD_SNS_BAD_SIGNATURE, "%s: %s byte %zu changed is a bad signature", file,
                       k, spots[j]);
        }
    }
    /* The signed Type cannot change without changing the message's kind. */
    json_t *o =
        mutate(sample, "Type", 0, notif ? "SubscriptionConfirmation" : "Notification", false);
    int v = check_json(o, cache, &res);
    json_decref(o);
    ok(v != MD_SNS_OK, "%s: Type changed is refused", file);
    if (notif) {
        if (json_object_get(sample, "Subject")) {
            o = mutate(sample, "Subject", 0, NULL, true);
            is_int(check_json(o, cache, &res), MD_SNS_BAD_SIGNATURE,
                   "%s: Subject removed is a bad signature", file);
        } else {
            o = mutate(sample, "Subject", 0, "added", false);
            is_int(check_json(o, cache, &res), MD_SNS_BAD_SIGNATURE,
                   "%s: Subject added is a bad signature", file);
            json_object_set_new(o, "Subject", json_null());
            is_int(check_json(o, cache, &res), MD_SNS_OK,
                   "%s: \"Subject\": null (Lambda's none) still verifies", file);
            json_object_set_new(o, "Subject", json_string(""));
            is_int(check_json(o, cache, &res), MD_SNS_BAD_SIGNATURE,
                   "%s: an empty Subject is not an absent one", file);
        }
        json_decref(o);
    }
    /* UnsubscribeURL is not signed (AWS's rule): changing it must not matter. */
    const char *uk = json_object_get(sample, "UnsubscribeURL")   ? "UnsubscribeURL"
                     : json_object_get(sample, "UnsubscribeUrl") ? "UnsubscribeUrl"
                                                                 : NULL;
    if (uk) {
        o = mutate(sample, uk, 10, NULL, false);
        is_int(check_json(o, cache, &res), MD_SNS_OK, "%s: unsigned %s changed still verifies",
               file, uk);
        json_decref(o);
    }
    /* The same signature under the other SignatureVersion's hash fails. */
    const char *sv = json_string_value(json_object_get(sample, "SignatureVersion"));
    o = mutate(sample, "SignatureVersion", 0, strcmp(sv, "1") == 0 ? "2" : "1", false);
    is_int(check_json(o, cache, &res), MD_SNS_BAD_SIGNATURE,
           "%s: SignatureVersion swapped is a bad signature", file);
    json_decref(o);
}

static void
test_corpus(void)
{
    size_t len;
    char *txt = data_file("verification-results.json", &len);
    ok(txt != NULL, "verification-results.json readable");
    if (txt == NULL)
        return;
    json_error_t jerr;
    json_t *root = json_loads(txt, 0, &jerr);
    free(txt);
    json_t *results = json_object_get(root, "results");
    size_t npass = 0, nfail = 0;
    size_t i;
    json_t *r;

    json_array_foreach(results, i, r)
    {
        const char *file = json_string_value(json_object_get(r, "file"));
        const char *cert = json_string_value(json_object_get(r, "cert"));
        bool pass = strcmp(json_string_value(json_object_get(r, "expected")), "pass") == 0;
        size_t blen = 0, slen = 0;
        char *body = data_file(file, &blen);
        ok(body != NULL, "%s readable", file);
        if (body == NULL)
            continue;

        md_sns_msg_t m;
        const char *why = NULL;
        int prc = md_sns_parse(&m, body, blen, &why);
        is_int(prc, MD_OK, "%s parses%s%s", file, why ? ": " : "", why ? why : "");
        if (prc != MD_OK) {
            free(body);
            continue;
        }
        ok(md_str_eq(m.type_name, json_string_value(json_object_get(r, "Type"))), "%s: Type is %s",
           file, json_string_value(json_object_get(r, "Type")));

        md_buf_t sts;
        md_buf_init(&sts);
        md_sns_string_to_sign(&m, &sts);
        char *want = expected_sts(file, &slen);
        ok(want && slen == md_buf_len(&sts) && memcmp(want, sts.pos, slen) == 0,
           "%s: string to sign matches derived-string-to-sign", file);
        free(want);
        md_buf_free(&sts);

        md_sns_cache_t *cache = seeded_cache(cert, MD_SNS_CACHE_RELAX_DATES);
        md_sns_result_t res;
        md_sns_verdict_t v = md_sns_verify(&m, cache, time(NULL), &res);
        if (pass) {
            npass++;
            is_int(v, MD_SNS_OK, "%s verifies (%s)", file, res.reason ? res.reason : "ok");
        } else {
            nfail++;
            is_int(v, MD_SNS_BAD_SIGNATURE, "%s is refused as documented (%s)", file,
                   res.reason ? res.reason : "ok");
        }
        md_sns_msg_free(&m);

        if (pass) {
            json_t *sample = json_loadb(body, blen, 0, &jerr);
            test_tamper(file, sample, cache);
            json_decref(sample);
        }
        md_sns_cache_free(cache);
        free(body);
    }
    is_int(npass, 15, "15 positive samples run");
    is_int(nfail, 1, "1 negative sample run");
    json_decref(root);
}

static const char *bad_cert_urls[] = {
    "http://sns.us-east-1.amazonaws.com/"
    "SimpleNotificationService-7ff5318490ec183fbaddaa2a969abfda.pem",
    "https://sns.us-east-1.amazonaws.com.evil.com/"
    "SimpleNotificationService-7ff5318490ec183fbaddaa2a969abfda.pem",
    "https://sns.us-east-1.amazonaws.com.cn.evil.com/SimpleNotificationService-abc.pem",
    "https://s3.amazonaws.com/evil-bucket/"
    "SimpleNotificationService-7ff5318490ec183fbaddaa2a969abfda.pem",
    "https://evil-bucket.s3.amazonaws.com/"
    "SimpleNotificationService-7ff5318490ec183fbaddaa2a969abfda.pem",
    "https://sns-certs.s3.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
    "https://s3.us-east-1.amazonaws.com/sns.us-east-1.amazonaws.com/"
    "SimpleNotificationService-abc.pem",
    "https://sns.us-east-1.amazonaws.com.s3.amazonaws.com/SimpleNotificationService-abc.pem",
    "https://evil.execute-api.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
    "https://sns.us-east-1.amazonaws.com@evil.com/SimpleNotificationService-abc.pem",
    "https://evil.com@sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
    "https://user:pw@sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
    "https://sns.us-east-1.amazonaws.com:443/SimpleNotificationService-abc.pem",
    "https://sns.us-east-1.amazonaws.com:8443/SimpleNotificationService-abc.pem",
    "https://sns.us-east-1.amazonaws.com./SimpleNotificationService-abc.pem",
    "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem?x=1",
    "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem#x",
    "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem.evil",
    "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem/",
    "https://sns.us-east-1.amazonaws.com/evil/SimpleNotificationService-abc.pem",
    "https://sns.us-east-1.amazonaws.com/../SimpleNotificationService-abc.pem",
    "https://sns.us-east-1.amazonaws.com/%53impleNotificationService-abc.pem",
    "https://sns.us-east-1.amazonaws.com%2fevil.com/SimpleNotificationService-abc.pem",
    "https://sns.us-east-1.amazonaws.com\\@evil.com/SimpleNotificationService-abc.pem",
    "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-ABC.pem",
    "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-.pem",
    "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-a_b.pem",
    "https://sns.us-east-1.amazonaws.com/simplenotificationservice-abc.pem",
    "https://sns.us-east-1.amazonaws.com/",
    "https://sns.us-east-1.amazonaws.com",
    "https://sns..amazonaws.com/SimpleNotificationService-abc.pem",
    "https://sns.us_east_1.amazonaws.com/SimpleNotificationService-abc.pem",
    "https://sns.US-EAST-1.amazonaws.com/SimpleNotificationService-abc.pem",
    "HTTPS://SNS.US-EAST-1.AMAZONAWS.COM/SimpleNotificationService-abc.pem",
    "https://sns.us-east-1.amazonaws.co/SimpleNotificationService-abc.pem",
    "https://sns.us-east-1.notamazonaws.com/SimpleNotificationService-abc.pem",
    "https://xsns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
    "https://sns.us-east-1.amazonaws.comcn/SimpleNotificationService-abc.pem",
    "https://sns.us-east-1.amazonaws.com.cnx/SimpleNotificationService-abc.pem",
    "https://sns.evil.com/SimpleNotificationService-abc.pem",
    " https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
    "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem\n",
    "https:/sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
    "//sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
    "file:///etc/SimpleNotificationService-abc.pem",
    "",
};

static void
test_url_rules(void)
{
    const char *good[] = {
        "https://sns.us-east-1.amazonaws.com/"
        "SimpleNotificationService-7ff5318490ec183fbaddaa2a969abfda.pem",
        "https://sns.us-gov-west-1.amazonaws.com/SimpleNotificationService-abc123.pem",
        "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc123.pem",
    };
    for (size_t i = 0; i < md_nelems(good); i++)
        ok(md_sns_cert_url_ok(view(good[i])), "cert URL accepted: %s", good[i]);
    for (size_t i = 0; i < md_nelems(bad_cert_urls); i++)
        ok(!md_sns_cert_url_ok(view(bad_cert_urls[i])), "cert URL refused: '%s'", bad_cert_urls[i]);

    /* Bytes after a NUL must not be ignored. */
    static const char nul[] =
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem\0.evil.com";
    md_str_t nv = {sizeof(nul) - 1, nul};
    ok(!md_sns_cert_url_ok(nv), "cert URL with an embedded NUL refused");
    md_str_t nullv = md_null_string;
    ok(!md_sns_cert_url_ok(nullv), "absent cert URL refused");

    const char *sub_good[] = {
        "https://sns.us-west-2.amazonaws.com/"
        "?Action=ConfirmSubscription&TopicArn=arn:aws:sns:us-west-2:123456789012:MyTopic&Token="
        "2336412f37fb687f5d51e6e2425dacbba",
        "https://sns.cn-north-1.amazonaws.com.cn/?Action=ConfirmSubscription&Token=a%2Fb",
    };
    const char *sub_bad[] = {
        "http://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription&Token=x",
        "https://sns.us-west-2.amazonaws.com.evil.com/?Action=ConfirmSubscription",
        "https://evil-bucket.s3.amazonaws.com/?Action=ConfirmSubscription",
        "https://sns.us-west-2.amazonaws.com@evil.com/?Action=ConfirmSubscription",
        "https://sns.us-west-2.amazonaws.com:444/?Action=ConfirmSubscription",
        "https://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription#frag",
        "https://sns.us-west-2.amazonaws.com/?a=b c",
        "https://sns.us-west-2.amazonaws.com/\\evil.com",
        "https://sns.us-west-2.amazonaws.com/?a=%zz",
        "https://sns.us-west-2.amazonaws.com/?a=%4",
        "https://sns.us-west-2.amazonaws.com/?a=\r\nHost: evil",
        "https://sns.us-west-2.amazonaws.com",
        "https://sns.us-west-2.amazonaws.com?Action=ConfirmSubscription",
    };
    for (size_t i = 0; i < md_nelems(sub_good); i++)
        ok(md_sns_subscribe_url_ok(view(sub_good[i])), "SubscribeURL accepted: %s", sub_good[i]);
    for (size_t i = 0; i < md_nelems(sub_bad); i++)
        ok(!md_sns_subscribe_url_ok(view(sub_bad[i])), "SubscribeURL refused: '%s'", sub_bad[i]);

    const char *topics[] = {"arn:aws:sns:us-east-1:123456789012:ses-events",
                            "arn:aws:sns:eu-west-1:123456789012:other"};
    ok(md_sns_topic_allowed(view("arn:aws:sns:eu-west-1:123456789012:other"), topics, 2),
       "configured topic allowed");
    ok(!md_sns_topic_allowed(view("arn:aws:sns:eu-west-1:123456789012:othe"), topics, 2),
       "prefix of a topic refused");
    ok(!md_sns_topic_allowed(view("arn:aws:sns:eu-west-1:123456789012:other2"), topics, 2),
       "extension of a topic refused");
    ok(!md_sns_topic_allowed(view("arn:aws:sns:us-east-1:123456789012:ses-events"), topics, 0),
       "empty topic list allows nothing");
    ok(!md_sns_topic_allowed(view(""), topics, 2), "empty TopicArn refused");
}

/* Each bad URL put into a real sample: refused as BAD_CERT_URL, no fetch, even
 * when the cache holds the certificate under the same file name. */
static void
test_bad_url_no_fetch(void)
{
    const char *file = "aws-php-sns-message-validator/http-notification-sha1-no-subject.json";
    size_t blen;
    char *body = data_file(file, &blen);
    json_error_t jerr;
    json_t *sample = json_loadb(body, blen, 0, &jerr);
    free(body);
    md_sns_cache_t *seeded =
        seeded_cache("aws-php-sns-message-validator/"
                     "SimpleNotificationService-7ff5318490ec183fbaddaa2a969abfda.pem",
                     MD_SNS_CACHE_RELAX_DATES);
    md_sns_cache_t *empty = md_sns_cache_new(MD_SNS_CACHE_RELAX_DATES);

    for (size_t i = 0; i < md_nelems(bad_cert_urls); i++) {
        json_t *o = mutate(sample, "SigningCertURL", 0, bad_cert_urls[i], false);
        md_sns_result_t r1, r2;
        int v1 = check_json(o, seeded, &r1);
        int v2 = check_json(o, empty, &r2);
        json_decref(o);
        ok(v1 == MD_SNS_BAD_CERT_URL && v2 == MD_SNS_BAD_CERT_URL && r1.fetch_url.data == NULL &&
               r2.fetch_url.data == NULL,
           "bad cert URL refused, no fetch requested: '%s'", bad_cert_urls[i]);
    }
    /* A valid URL in an empty cache asks for exactly that URL. */
    md_sns_result_t r;
    is_int(check_json(sample, empty, &r), MD_SNS_UNKNOWN_CERT, "uncached certificate: unknown");
    ok(md_str_eq(r.fetch_url, sample_url(sample)), "fetch_url is the message's SigningCertURL");

    /* add_pem refuses a bad URL even with the real certificate. */
    size_t plen;
    char *pem = data_file("aws-php-sns-message-validator/"
                          "SimpleNotificationService-7ff5318490ec183fbaddaa2a969abfda.pem",
                          &plen);
    const char *why = NULL;
    is_int(md_sns_cache_add_pem(empty, view(bad_cert_urls[4]), pem, plen, &why), MD_ERROR,
           "add_pem refuses an S3 bucket URL (%s)", why ? why : "");
    is_int(md_sns_cache_size(empty), 0, "nothing cached");

    /* The fetch path: the body for the URL asked for goes in, then it verifies. */
    why = NULL;
    is_int(md_sns_cache_add_pem(empty, r.fetch_url, pem, plen, &why), MD_OK,
           "add_pem with the fetched certificate (%s)", why ? why : "ok");
    is_int(check_json(sample, empty, &r), MD_SNS_OK, "verifies after the fetch");
    /* URL-exact entries do not serve another region's URL (that one is fetched). */
    json_t *o = mutate(sample, "SigningCertURL", 0,
                       "https://sns.eu-west-1.amazonaws.com/"
                       "SimpleNotificationService-7ff5318490ec183fbaddaa2a969abfda.pem",
                       false);
    is_int(check_json(o, empty, &r), MD_SNS_UNKNOWN_CERT, "fetched entry is URL-exact");
    /* ... while a seeded certificate serves every commercial region. */
    is_int(check_json(o, seeded, &r), MD_SNS_OK, "seeded entry serves any region");
    json_decref(o);
    o = mutate(sample, "SigningCertURL", 0,
               "https://sns.cn-north-1.amazonaws.com.cn/"
               "SimpleNotificationService-7ff5318490ec183fbaddaa2a969abfda.pem",
               false);
    is_int(check_json(o, seeded, &r), MD_SNS_UNKNOWN_CERT, "seeded entry does not serve .cn");
    json_decref(o);
    /* Garbage is not a certificate. */
    is_int(md_sns_cache_add_pem(empty, r.fetch_url, "<html>", 6, &why), MD_ERROR,
           "add_pem refuses a non-certificate (%s)", why ? why : "");

    free(pem);
    json_decref(sample);
    md_sns_cache_free(seeded);
    md_sns_cache_free(empty);
}

static time_t
utc(int y, int mo, int d)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    return timegm(&tm);
}

/* Dates: the 7506a1... certificate is valid 2025-11-10 to 2026-10-14. */
static void
test_dates(void)
{
    const char *file = "aws-sdk-java-v2/test-notification-no-subject.json";
    size_t blen;
    char *body = data_file(file, &blen);
    md_sns_cache_t *strict = seeded_cache(
        "aws-sdk-java-v2/SimpleNotificationService-7506a1e35b36ef5a444dd1a8e7cc3ed8.pem", 0);
    md_sns_cache_t *relaxed = seeded_cache(
        "aws-sdk-java-v2/SimpleNotificationService-7506a1e35b36ef5a444dd1a8e7cc3ed8.pem",
        MD_SNS_CACHE_RELAX_DATES);
    md_sns_result_t r;

    is_int(check_body(body, blen, strict, utc(2026, 3, 6), &r), MD_SNS_OK,
           "strict dates: verifies inside the validity period");
    is_int(check_body(body, blen, strict, utc(2026, 10, 15), &r), MD_SNS_BAD_CERT,
           "strict dates: refused after notAfter");
    is_int(check_body(body, blen, strict, utc(2025, 11, 9), &r), MD_SNS_BAD_CERT,
           "strict dates: refused before notBefore");
    is_int(check_body(body, blen, relaxed, utc(2030, 1, 1), &r), MD_SNS_OK,
           "relaxed dates: verifies after notAfter");

    /* An expired sample certificate under strict dates. */
    free(body);
    body = data_file("aws-sdk-java-v1/message.json", &blen);
    md_sns_cache_t *old = seeded_cache(
        "aws-sdk-java-v1/SimpleNotificationService-bb750dd426d95ee9390147a5624348ee.pem", 0);
    is_int(check_body(body, blen, old, time(NULL), &r), MD_SNS_BAD_CERT,
           "expired certificate refused without the relax flag");
    free(body);
    md_sns_cache_free(strict);
    md_sns_cache_free(relaxed);
    md_sns_cache_free(old);
}

static void
test_malformed(void)
{
    const char *file = "aws-sdk-java-v2/test-subscription-confirmation.json";
    size_t blen;
    char *body = data_file(file, &blen);
    json_error_t jerr;
    json_t *sample = json_loadb(body, blen, 0, &jerr);
    md_sns_cache_t *cache = seeded_cache(
        "aws-sdk-java-v2/SimpleNotificationService-7506a1e35b36ef5a444dd1a8e7cc3ed8.pem",
        MD_SNS_CACHE_RELAX_DATES);
    md_sns_result_t r;
    md_sns_msg_t m;
    const char *why;

    ok(md_sns_parse(&m, "", 0, &why) == MD_ERROR, "empty body refused (%s)", why);
    ok(md_sns_parse(&m, "[1]", 3, &why) == MD_ERROR, "array refused (%s)", why);
    ok(md_sns_parse(&m, "{\"Type\":", 8, &why) == MD_ERROR, "truncated JSON refused (%s)", why);
    md_sns_msg_free(&m);

    const char *required[] = {
        "Type",      "MessageId",      "TopicArn",     "Message", "Timestamp", "SignatureVersion",
        "Signature", "SigningCertURL", "SubscribeURL", "Token"};
    for (size_t i = 0; i < md_nelems(required); i++) {
        json_t *o = mutate(sample, required[i], 0, NULL, true);
        is_int(check_json(o, cache, &r), -1, "%s missing: parse refuses", required[i]);
        json_decref(o);
        o = json_deep_copy(sample);
        json_object_set_new(o, required[i], json_integer(1));
        is_int(check_json(o, cache, &r), -1, "%s not a string: parse refuses", required[i]);
        json_decref(o);
    }
    json_t *o = mutate(sample, "SignatureVersion", 0, "3", false);
    is_int(check_json(o, cache, &r), -1, "SignatureVersion 3 refused");
    json_decref(o);
    o = mutate(sample, "Type", 0, "Evil", false);
    is_int(check_json(o, cache, &r), -1, "unknown Type refused");
    json_decref(o);
    o = json_deep_copy(sample);
    json_object_set(o, "SigningCertUrl", json_object_get(sample, "SigningCertURL"));
    is_int(check_json(o, cache, &r), -1, "both SigningCertURL and SigningCertUrl refused");
    json_decref(o);

    /* Duplicate keys: the first Message could be signed and the second used. */
    md_buf_t b;
    md_buf_init(&b);
    md_buf_append(&b, body, blen);
    char *brace = memchr(b.pos, '{', md_buf_len(&b));
    size_t off = (size_t)(brace - b.pos) + 1;
    md_buf_t d;
    md_buf_init(&d);
    md_buf_append(&d, b.pos, off);
    md_buf_append_str(&d, "\"Message\":\"evil\",");
    md_buf_append(&d, b.pos + off, md_buf_len(&b) - off);
    ok(md_sns_parse(&m, d.pos, md_buf_len(&d), &why) == MD_ERROR, "duplicate key refused (%s)",
       why);
    md_buf_free(&b);
    md_buf_free(&d);

    const char *bad_sigs[] = {"", "abc", "QUJD\n", "QUJ=D===", "QUI", "QR==", "Q===", "QU I"};
    for (size_t i = 0; i < md_nelems(bad_sigs); i++) {
        o = mutate(sample, "Signature", 0, bad_sigs[i], false);
        is_int(check_json(o, cache, &r), MD_SNS_MALFORMED, "Signature '%s' is malformed",
               bad_sigs[i]);
        json_decref(o);
    }
    o = mutate(sample, "SubscribeURL", 0,
               "https://evil-bucket.s3.amazonaws.com/?Action=ConfirmSubscription", false);
    is_int(check_json(o, cache, &r), MD_SNS_MALFORMED,
           "SubscriptionConfirmation with a foreign "
           "SubscribeURL is refused");
    json_decref(o);

    md_sns_msg_t zero;
    memset(&zero, 0, sizeof(zero));
    is_int(md_sns_verify(&zero, cache, 0, &r), MD_SNS_MALFORMED, "unparsed message refused");

    free(body);
    json_decref(sample);
    md_sns_cache_free(cache);
}

/* A self-signed certificate for cn with key k, as a new PEM string (caller frees). */
static char *
make_cert(EVP_PKEY *k, const char *cn, long days_from, long days_to)
{
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), days_from * 86400L);
    X509_gmtime_adj(X509_getm_notAfter(x), days_to * 86400L);
    X509_set_pubkey(x, k);
    X509_NAME *nm = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, nm);
    X509_sign(x, k, EVP_sha256());
    BIO *bio = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(bio, x);
    char *p;
    long n = BIO_get_mem_data(bio, &p);
    char *s = md_xstrndup(p, (size_t)n);
    BIO_free(bio);
    X509_free(x);
    return s;
}

/* Signs the string to sign of the message in o with k (SHA-256), sets Signature. */
static void
sign_json(json_t *o, EVP_PKEY *k)
{
    char *s = json_dumps(o, JSON_COMPACT);
    md_sns_msg_t m;
    const char *why;
    if (md_sns_parse(&m, s, strlen(s), &why) != MD_OK) {
        free(s);
        return;
    }
    md_buf_t sts;
    md_buf_init(&sts);
    md_sns_string_to_sign(&m, &sts);
    unsigned char sig[1024];
    size_t siglen = sizeof(sig);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, k);
    EVP_DigestSign(ctx, sig, &siglen, (unsigned char *)sts.pos, md_buf_len(&sts));
    EVP_MD_CTX_free(ctx);
    unsigned char b64[2048];
    EVP_EncodeBlock(b64, sig, (int)siglen);
    json_object_set_new(o, "Signature", json_string((char *)b64));
    md_buf_free(&sts);
    md_sns_msg_free(&m);
    free(s);
}

/* The quickstart path: a local key, a certificate seeded under an AWS-shaped
 * URL, a message signed with it; and certificates the cache must refuse. */
static void
test_local_key(void)
{
    EVP_PKEY *k = EVP_RSA_gen(2048);
    EVP_PKEY *other = EVP_RSA_gen(2048);
    EVP_PKEY *ec = EVP_EC_gen("P-256");
    const char *url =
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-local0test.pem";
    md_sns_cache_t *c = md_sns_cache_new(0);
    const char *why = NULL;

    char *pem = make_cert(k, "sns.amazonaws.com", -1, 30);
    is_int(md_sns_cache_add_pem(c, view(url), pem, strlen(pem), &why), MD_OK,
           "local certificate added (%s)", why ? why : "ok");
    free(pem);
    pem = make_cert(k, "sns.amazonaws.com.evil.com", -1, 30);
    is_int(md_sns_cache_add_pem(c, view(url), pem, strlen(pem), &why), MD_ERROR,
           "certificate with a foreign CN refused (%s)", why);
    free(pem);
    pem = make_cert(ec, "sns.amazonaws.com", -1, 30);
    is_int(md_sns_cache_add_pem(c, view(url), pem, strlen(pem), &why), MD_ERROR,
           "non-RSA certificate refused (%s)", why);
    free(pem);
    is_int(md_sns_cache_size(c), 1, "only the good certificate is cached");

    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "Type", "Notification",
                          "MessageId", "m-1", "TopicArn", "arn:aws:sns:us-east-1:123456789012:ses",
                          "Message", "{\"eventType\":\"Bounce\"}\n\xc3\xa9\\", "Timestamp",
                          "2026-01-01T00:00:00.000Z", "SignatureVersion", "2", "Signature", "AAAA",
                          "SigningCertURL", url, "Subject", "line1\nline2");
    sign_json(o, k);
    md_sns_result_t r;
    char *s = json_dumps(o, JSON_INDENT(2));
    is_int(check_body(s, strlen(s), c, time(NULL), &r), MD_SNS_OK,
           "message signed with the local key verifies (%s)", r.reason ? r.reason : "ok");
    free(s);

    /* The same URL now serving a different key (say, rotated): a fresh add
     * replaces the entry and the old signature fails. */
    pem = make_cert(other, "sns.amazonaws.com", -1, 30);
    md_sns_cache_add_pem(c, view(url), pem, strlen(pem), &why);
    free(pem);
    is_int(md_sns_cache_size(c), 1, "re-adding a URL replaces its entry");
    s = json_dumps(o, 0);
    is_int(check_body(s, strlen(s), c, time(NULL), &r), MD_SNS_BAD_SIGNATURE,
           "signature by another key refused");
    free(s);

    /* China partition CNs. */
    const char *cnurl = "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-x1.pem";
    pem = make_cert(k, "sns.cn-north-1.amazonaws.com.cn", -1, 30);
    is_int(md_sns_cache_add_pem(c, view(cnurl), pem, strlen(pem), &why), MD_OK,
           ".cn URL with the regional CN accepted");
    free(pem);
    pem = make_cert(k, "sns.amazonaws.com", -1, 30);
    is_int(md_sns_cache_add_pem(c, view(cnurl), pem, strlen(pem), &why), MD_ERROR,
           ".cn URL with the commercial CN refused");
    free(pem);
    pem = make_cert(k, "sns.cn-northwest-1.amazonaws.com.cn", -1, 30);
    is_int(md_sns_cache_add_pem(c, view(cnurl), pem, strlen(pem), &why), MD_ERROR,
           ".cn URL with another region's CN refused");
    free(pem);

    /* Eviction bound. */
    pem = make_cert(k, "sns.amazonaws.com", -1, 30);
    for (int i = 0; i < MD_SNS_CACHE_MAX + 10; i++) {
        char u[256];
        snprintf(u, sizeof(u),
                 "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-e%d.pem", i);
        md_sns_cache_add_pem(c, view(u), pem, strlen(pem), &why);
    }
    free(pem);
    is_int(md_sns_cache_size(c), MD_SNS_CACHE_MAX, "cache stays bounded");

    json_decref(o);
    md_sns_cache_free(c);
    EVP_PKEY_free(k);
    EVP_PKEY_free(other);
    EVP_PKEY_free(ec);
}

int
main(void)
{
    snprintf(datadir, sizeof(datadir), "%s/t/data/sns", tap_srcdir());
    is_str(md_sns_verdict_name(MD_SNS_OK), "ok", "verdict name ok");
    is_str(md_sns_verdict_name(MD_SNS_BAD_CERT_URL), "bad_cert_url", "verdict name bad_cert_url");
    test_corpus();
    test_url_rules();
    test_bad_url_no_fetch();
    test_dates();
    test_malformed();
    test_local_key();
    return done_testing();
}
