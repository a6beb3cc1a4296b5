/*
 * AWS Signature Version 4, header-signed requests (the Authorization header, not
 * presigned URLs), for the SES v2 driver and for the mock ESP that checks it.
 *
 * The rules followed are those of AWS's "Create a signed AWS API request" for
 * services other than S3, checked against the AWS SigV4 test suite
 * (t/data/sigv4, t/unit/sigv4_t.c):
 *
 *   CanonicalRequest = Method \n CanonicalURI \n CanonicalQuery \n
 *                      CanonicalHeaders \n SignedHeaders \n HexPayloadHash
 *   StringToSign     = "AWS4-HMAC-SHA256" \n X-Amz-Date \n
 *                      yyyymmdd/region/service/aws4_request \n hex(SHA256(CanonicalRequest))
 *   kSigning         = HMAC(HMAC(HMAC(HMAC("AWS4" secret, yyyymmdd), region), service),
 *                      "aws4_request")
 *   Signature        = hex(HMAC(kSigning, StringToSign))
 *
 * - Path: the caller gives the path as it goes on the wire, that is already
 *   percent-encoded once (md_sigv4_uri_encode makes that form from raw bytes).
 *   The canonical URI removes empty, "." and ".." segments (RFC 3986 dot-segment
 *   removal plus collapsing "//"), keeps a trailing "/", then URI-encodes every
 *   segment again. Relative to the resource name that is the double encoding AWS
 *   asks of non-S3 services ("/a b" is sent as "/a%20b", canonical "/a%2520b").
 *   S3's single encoding without normalisation is not supported.
 * - Query: the raw query string as sent (without "?"). Each "&"-separated
 *   parameter is split at its first "=", percent-decoded (a "+" stays a literal
 *   plus), encoded again with only A-Z a-z 0-9 - _ . ~ left bare (uppercase hex),
 *   and the pairs sorted by key, then value, byte-wise. A parameter without "="
 *   has an empty value ("k" -> "k=").
 * - Headers: names lower-cased; values trimmed, every run of spaces, tabs, CR or
 *   LF inside collapsed to one space (this also unfolds obsolete line folding);
 *   sorted by name, stable, so repeated names are joined with "," in the order
 *   given.
 *
 * Memory: no global state and no allocation outside the caller's md_sigv4_out_t,
 * whose md_buf_t members grow as needed and are reused across calls. Nothing
 * here blocks; the cost is a few SHA-256/HMAC computations over the request.
 * Limits: at most MD_SIGV4_MAX_HEADERS headers to sign (or received, for verify)
 * and MD_SIGV4_MAX_PARAMS query parameters; past them a call fails.
 */
#ifndef MD_SIGV4_H
#define MD_SIGV4_H

#include "md_core.h"
#include "md_buf.h"

#include <time.h>

#define MD_SIGV4_MAX_HEADERS 64
#define MD_SIGV4_MAX_PARAMS  128
#define MD_SIGV4_ALGORITHM   "AWS4-HMAC-SHA256"
#define MD_SIGV4_DATE_LEN    16 /* "20150830T123600Z" */
#define MD_SIGV4_HEX_LEN     64 /* a hex SHA-256 or signature */

/* One header: a name (any case) and its value (untrimmed is fine). Views only. */
typedef struct md_sigv4_header_s {
    md_str_t name;
    md_str_t value;
} md_sigv4_header_t;

/*
 * The account: all views, borrowed for the call. region and service make the
 * credential scope (for SES v2: the region, "ses"). session_token is optional
 * (data NULL or len 0 for none); when set it is sent as X-Amz-Security-Token.
 */
typedef struct md_sigv4_cred_s {
    md_str_t access_key_id;
    md_str_t secret_key;
    md_str_t session_token;
    md_str_t region;
    md_str_t service;
} md_sigv4_cred_t;

/*
 * The request to sign. All views, borrowed for the call.
 * - headers: the headers to sign. Host must be among them (AWS requires it).
 *   X-Amz-Date, X-Amz-Security-Token and X-Amz-Content-Sha256 must not be: the
 *   signer adds those itself (see md_sigv4_out_t.send).
 * - payload_hash: the hex SHA-256 of the body (64 hex digits, any case) when the
 *   caller has it; when empty the signer hashes payload.
 */
typedef struct md_sigv4_req_s {
    md_str_t method;
    md_str_t path;  /* as on the wire; empty means "/" */
    md_str_t query; /* as on the wire, without "?"; may be empty */
    const md_sigv4_header_t *headers;
    size_t nheaders;
    md_str_t payload;
    md_str_t payload_hash;
} md_sigv4_req_t;

/* Flags for md_sigv4_sign. */
enum {
    /* Also send and sign "x-amz-content-sha256: <payload hash>" (S3 wants it;
     * SES does not need it, but accepts it). */
    MD_SIGV4_CONTENT_SHA256 = 1 << 0,
    /* Send the session token without signing it: the old "token added after
     * signing" form a few services used (test case post-sts-header-after). */
    MD_SIGV4_TOKEN_UNSIGNED = 1 << 1,
};

/*
 * Results of one md_sigv4_sign or md_sigv4_verify call. The caller owns it:
 * md_sigv4_out_init once, reuse for any number of calls, md_sigv4_out_free at
 * the end. Every call resets the buffers; creq, sts and authz are NUL-terminated
 * after their last byte (not counted in their length) so they can be used as C
 * strings. Views in send[] point into this struct or into the caller's cred, so
 * they live until the next call or until the cred goes away.
 */
typedef struct md_sigv4_out_s {
    md_buf_t creq;  /* the canonical request */
    md_buf_t sts;   /* the string to sign */
    md_buf_t authz; /* the Authorization header value */
    char signature[MD_SIGV4_HEX_LEN + 1];
    char amz_date[MD_SIGV4_DATE_LEN + 1];
    char payload_hash[MD_SIGV4_HEX_LEN + 1];
    /* Headers the caller must add to the request besides its own signed ones,
     * in this order: X-Amz-Date, then X-Amz-Security-Token when there is a
     * token, then x-amz-content-sha256 with MD_SIGV4_CONTENT_SHA256, then
     * Authorization last. */
    md_sigv4_header_t send[4];
    size_t nsend;
    /* Why the last call failed (or, for verify, was refused): a static string. */
    const char *reason;
    md_buf_t scratch; /* private: encoded path and query pieces */
} md_sigv4_out_t;

void md_sigv4_out_init(md_sigv4_out_t *out);
void md_sigv4_out_free(md_sigv4_out_t *out);

/*
 * Signs req for cred at time `when` (UTC seconds; the X-Amz-Date and the scope
 * date come from it). flags: MD_SIGV4_* above. Fills out (see md_sigv4_out_t).
 * Returns MD_OK, or MD_ERROR with out->reason when the input cannot be signed
 * (no Host header, a header the signer owns given by the caller, a bad header
 * name, a malformed percent escape or payload hash, too many headers or
 * parameters, a time that does not format). Never blocks.
 */
int md_sigv4_sign(const md_sigv4_req_t *req, const md_sigv4_cred_t *cred, time_t when,
                  unsigned flags, md_sigv4_out_t *out);

/*
 * The signing key (kSigning above) of the last scope a signer used: it depends
 * only on the secret, the date (yyyymmdd), the region and the service, so a
 * signer of many requests derives it (four HMACs) once a day per account
 * instead of once per request. The caller owns it: zero-fill it (or
 * md_sigv4_key_cache_clear) before the first use; md_sigv4_key_cache_clear
 * wipes the key and the copy of the secret it is checked against.
 */
#define MD_SIGV4_CACHE_SECRET_MAX 256
#define MD_SIGV4_CACHE_SCOPE_MAX  128
typedef struct md_sigv4_key_cache_s {
    int valid;
    size_t secret_len, region_len, service_len;
    char date8[8];
    char secret[MD_SIGV4_CACHE_SECRET_MAX];
    char region[MD_SIGV4_CACHE_SCOPE_MAX];
    char service[MD_SIGV4_CACHE_SCOPE_MAX];
    unsigned char key[32];
    unsigned long derived; /* keys derived (misses), for tests */
} md_sigv4_key_cache_t;

void md_sigv4_key_cache_clear(md_sigv4_key_cache_t *kc);

/* md_sigv4_sign with kc's signing key when the scope matches (derived and kept
 * in kc when it does not). kc NULL: md_sigv4_sign. Same result as md_sigv4_sign
 * byte for byte. */
int md_sigv4_sign_cached(const md_sigv4_req_t *req, const md_sigv4_cred_t *cred, time_t when,
                         unsigned flags, md_sigv4_key_cache_t *kc, md_sigv4_out_t *out);

/* A request as received, for md_sigv4_verify. All views. headers: every header
 * received, in the order received, repeated names as separate entries. */
typedef struct md_sigv4_received_s {
    md_str_t method;
    md_str_t path;  /* the request target's path, as received */
    md_str_t query; /* what followed "?", as received; may be empty */
    const md_sigv4_header_t *headers;
    size_t nheaders;
    md_str_t body;
} md_sigv4_received_t;

typedef enum {
    MD_SIGV4_VERIFIED = 0,
    MD_SIGV4_BAD_SIGNATURE, /* wrong key, scope, token or signature, or a tampered request */
    MD_SIGV4_STALE,         /* X-Amz-Date further than the allowed skew from now */
    MD_SIGV4_MALFORMED,     /* no or unparsable Authorization, date or signed headers */
} md_sigv4_verdict_t;

/*
 * Checks a received header-signed request against the one key pair the server
 * knows (cred: access key id, secret, region, service; when its session_token is
 * set the request must carry that exact X-Amz-Security-Token). now is the
 * server's clock (UTC seconds); a request whose X-Amz-Date is more than
 * max_skew seconds before or after it is refused as stale. The signature is
 * recomputed over the headers named in SignedHeaders (host and x-amz-date must
 * be among them) and the SHA-256 of the body actually received (an
 * x-amz-content-sha256 header, when present, must match it), and compared in
 * constant time. out is the caller's scratch (see md_sigv4_out_t): afterwards it
 * holds the recomputed canonical request and string to sign, for debugging.
 * Returns the verdict; out->reason says why for every verdict but VERIFIED.
 */
md_sigv4_verdict_t md_sigv4_verify(const md_sigv4_received_t *rq, const md_sigv4_cred_t *cred,
                                   time_t now, unsigned max_skew, md_sigv4_out_t *out);
/* The same with the signing key kept in kc (md_sigv4_sign_cached): a verifier
 * that sees many requests of one key derives it once a day. */
md_sigv4_verdict_t md_sigv4_verify_cached(const md_sigv4_received_t *rq,
                                          const md_sigv4_cred_t *cred, time_t now,
                                          unsigned max_skew, md_sigv4_key_cache_t *kc,
                                          md_sigv4_out_t *out);

/* Name of a verdict ("verified", "bad_signature", "stale", "malformed"). */
const char *md_sigv4_verdict_name(md_sigv4_verdict_t v);

/*
 * Appends s to b URI-encoded the SigV4 way: A-Z a-z 0-9 - _ . ~ bare, every other
 * byte as %XX (uppercase); with keep_slash, "/" also stays bare (for paths). Use
 * it to put a raw path on the wire.
 */
void md_sigv4_uri_encode(md_buf_t *b, md_str_t s, bool keep_slash);

/* Parses an X-Amz-Date ("YYYYMMDDTHHMMSSZ", UTC) into *t. MD_OK or MD_ERROR. */
int md_sigv4_parse_date(md_str_t s, time_t *t);

#endif
