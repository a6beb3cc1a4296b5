/*
 * Amazon SNS message verification (issue 7): parse an SNS HTTP(S) or Lambda
 * delivery, rebuild the string AWS signed, and check the RSA signature against
 * the signing certificate, which must come from an AWS SNS host.
 *
 * This module does no network I/O and never blocks inside a worker loop: when
 * the certificate is not cached, md_sns_verify says so and hands back the URL;
 * the caller fetches it (async HTTP client), gives the body to
 * md_sns_cache_add_pem, and verifies again. Only md_sns_cache_seed_dir reads
 * files, and it is meant for start-up (before the loop runs) and tests.
 *
 * The rules, from AWS's "Verifying the signatures of Amazon SNS messages",
 * checked against real signed samples (t/data/sns, t/unit/sns_t.c):
 *
 * - String to sign: for each key of the list for the message's Type, in this
 *   order, that is present, "Key\nValue\n" with the JSON-decoded value:
 *     Notification:            Message MessageId Subject Timestamp TopicArn Type
 *     SubscriptionConfirmation,
 *     UnsubscribeConfirmation: Message MessageId SubscribeURL Timestamp Token
 *                              TopicArn Type
 *   Only Subject may be absent (Notification only). SignatureVersion,
 *   Signature, SigningCertURL, UnsubscribeURL and MessageAttributes are not
 *   signed.
 * - SignatureVersion "1": RSA PKCS#1 v1.5 with SHA-1; "2": with SHA-256.
 *   Anything else is malformed.
 * - Field names: HTTP deliveries say SigningCertURL / UnsubscribeURL, Lambda
 *   events SigningCertUrl / UnsubscribeUrl; both are accepted, but not both
 *   spellings in one message. Duplicate JSON keys are refused (two Messages
 *   could make the signed and the used value differ).
 * - Certificate URL: exactly
 *     ^https://sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/SimpleNotificationService-[a-z0-9]+\.pem$
 *   matched on the raw bytes (no decoding, no case folding), so http, other
 *   hosts (any *.amazonaws.com bucket, sns.x.amazonaws.com.evil.com), userinfo,
 *   ports, queries, fragments and percent escapes all fail. A URL that fails is
 *   never handed out for fetching.
 * - Certificate: its subject CN must be "sns.amazonaws.com" (every real AWS
 *   commercial-partition SNS certificate says exactly this); for a .cn URL
 *   "sns.amazonaws.com.cn" or "sns.<region>.amazonaws.com.cn" (not checked
 *   against a real China certificate: none was available). Its key must be
 *   RSA. notBefore/notAfter are checked at each verify against the caller's
 *   clock, unless the cache was made with MD_SNS_CACHE_RELAX_DATES (tests
 *   only: several real sample certificates have expired). The chain is not
 *   checked here: trust comes from fetching over verified TLS from the AWS host
 *   the URL rule allows.
 */
#ifndef MD_SNS_H
#define MD_SNS_H

#include "md_core.h"
#include "md_buf.h"

#include <time.h>

typedef enum {
    MD_SNS_NOTIFICATION = 1,
    MD_SNS_SUBSCRIPTION_CONFIRMATION,
    MD_SNS_UNSUBSCRIBE_CONFIRMATION,
} md_sns_type_t;

/*
 * One parsed SNS message. Every md_str_t is a view into the parsed JSON that the
 * message owns (values JSON-decoded; they may hold NUL bytes, so use the
 * lengths); they live until md_sns_msg_free. Absent fields have data NULL and
 * len 0. Not NUL-terminated as far as the API promises.
 */
typedef struct md_sns_msg_s {
    md_sns_type_t type;
    md_str_t type_name; /* the Type value as sent */
    md_str_t message_id;
    md_str_t topic_arn;
    md_str_t subject; /* Notification only; absent when missing or null */
    md_str_t message;
    md_str_t timestamp;
    md_str_t signature_version; /* "1" or "2" (others are refused by parse) */
    md_str_t signature;         /* base64, as sent */
    md_str_t signing_cert_url;
    md_str_t subscribe_url;   /* confirmations only */
    md_str_t token;           /* confirmations only */
    md_str_t unsubscribe_url; /* Notification; not signed */
    void *json;               /* private: the jansson root */
} md_sns_msg_t;

/*
 * Parses an SNS JSON body (len bytes, need not be NUL-terminated) into *msg.
 * On MD_OK the caller owns msg and must md_sns_msg_free it. On MD_ERROR msg
 * holds nothing to free (md_sns_msg_free is still safe) and *reason (when
 * reason is not NULL) is a static string saying what was wrong: not JSON, not
 * an object, a duplicate key, an unknown Type, a required field missing or not
 * a string, an unsupported SignatureVersion.
 */
int md_sns_parse(md_sns_msg_t *msg, const char *body, size_t len, const char **reason);

/* Releases what md_sns_parse made; msg is zeroed. Safe on a zeroed msg. */
void md_sns_msg_free(md_sns_msg_t *msg);

/* Appends the canonical string to sign of msg to out (see the rules above). */
void md_sns_string_to_sign(const md_sns_msg_t *msg, md_buf_t *out);

/* True when url is an SNS signing-certificate URL by the exact rule above. */
bool md_sns_cert_url_ok(md_str_t url);

/*
 * True when url may be fetched to confirm (or cancel) a subscription:
 * "https://sns.<region>.amazonaws.com[.cn]/" followed by a path and query made
 * only of RFC 3986 unreserved, sub-delim, ":", "@", "/", "?" and "%"+2 hex
 * characters, no fragment. The host rule is the certificate URL's, so no
 * other host, port or userinfo passes.
 */
bool md_sns_subscribe_url_ok(md_str_t url);

/*
 * True when arn is exactly one of topics[0..ntopics). An empty list accepts
 * nothing: configuring no topic must not mean "any topic".
 */
bool md_sns_topic_allowed(md_str_t arn, const char *const *topics, size_t ntopics);

/* The certificate cache, one per worker (not thread-safe, no locking needed). */
typedef struct md_sns_cache_s md_sns_cache_t;

enum {
    /* Skip the notBefore/notAfter check. Tests only (expired real samples). */
    MD_SNS_CACHE_RELAX_DATES = 1 << 0,
};

#define MD_SNS_CACHE_MAX 64 /* entries; the oldest is dropped past this */

/* A new empty cache with MD_SNS_CACHE_* flags. The caller frees it with
 * md_sns_cache_free (NULL is fine). */
md_sns_cache_t *md_sns_cache_new(unsigned flags);
void md_sns_cache_free(md_sns_cache_t *cache);

/* Number of certificates held. */
size_t md_sns_cache_size(const md_sns_cache_t *cache);

/*
 * Stores the certificate (PEM, len bytes, as fetched) for url. url must pass
 * md_sns_cert_url_ok and the certificate the CN and key checks above (dates are
 * checked at verify time, not here). The cache copies what it keeps; pem and
 * url stay the caller's. A URL already present is replaced. MD_OK, or MD_ERROR
 * with *reason (static) and nothing stored.
 */
int md_sns_cache_add_pem(md_sns_cache_t *cache, md_str_t url, const void *pem, size_t len,
                         const char **reason);

/*
 * Pre-seeds the cache from dir: every regular file named like
 * "SimpleNotificationService-<[a-z0-9]+>.pem" is loaded as the certificate for
 * that basename in the commercial partition, that is for every URL
 * "https://sns.<any region>.amazonaws.com/<that file name>" (AWS serves the same
 * certificate under the same name from every region; the samples show one
 * certificate used from us-east-1 and us-east-2). Other files are ignored. A
 * URL-exact entry added by md_sns_cache_add_pem wins over a seeded one.
 * Blocking file reads: call before the worker loop runs, or in tests.
 * Returns the number of certificates loaded, or MD_ERROR (dir unreadable, or
 * a matching file that is not an acceptable certificate) with *reason set.
 */
int md_sns_cache_seed_dir(md_sns_cache_t *cache, const char *dir, const char **reason);

typedef enum {
    MD_SNS_OK = 0,
    MD_SNS_BAD_SIGNATURE, /* the signature does not match the message */
    MD_SNS_UNKNOWN_CERT,  /* certificate not cached: fetch res->fetch_url, then retry */
    MD_SNS_BAD_CERT_URL,  /* SigningCertURL fails the rule: refuse, fetch nothing */
    MD_SNS_BAD_CERT,      /* the cached certificate is not valid at `now` */
    MD_SNS_MALFORMED,     /* the message cannot be checked (bad base64, URL rules) */
} md_sns_verdict_t;

typedef struct md_sns_result_s {
    md_sns_verdict_t verdict;
    const char *reason; /* static; NULL only for MD_SNS_OK */
    md_str_t fetch_url; /* MD_SNS_UNKNOWN_CERT only: a view into msg, passes the rule */
} md_sns_result_t;

/*
 * Verifies msg (from md_sns_parse) with a certificate from cache, dates checked
 * against now (UTC seconds) unless the cache relaxes them. Checks, in order:
 * the certificate URL rule (BAD_CERT_URL), the Signature's base64 and, for a
 * SubscriptionConfirmation, the SubscribeURL rule (MALFORMED), the cache
 * (UNKNOWN_CERT, with fetch_url), dates (BAD_CERT), the signature
 * (BAD_SIGNATURE). So a fetch is only ever requested for a URL that passes
 * md_sns_cert_url_ok. The TopicArn is not checked here: see
 * md_sns_topic_allowed. Fills *res and returns res->verdict. No I/O.
 */
md_sns_verdict_t md_sns_verify(const md_sns_msg_t *msg, md_sns_cache_t *cache, time_t now,
                               md_sns_result_t *res);

/* Stable name of a verdict: "ok", "bad_signature", "unknown_cert", "bad_cert_url",
 * "bad_cert", "malformed". */
const char *md_sns_verdict_name(md_sns_verdict_t v);

#endif
