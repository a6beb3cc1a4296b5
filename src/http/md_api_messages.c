/*
 * The send API (tenant key, see md_auth.h):
 *
 *   POST /v1/messages              202 {data:[{id,to,status}]}: one message per "to"
 *   POST /v1/messages/batch        202 {batch_id,accepted,rejected}: one content or
 *                                  template, up to 1,000 recipients, each with its own
 *                                  variables, metadata and tags
 *   GET  /v1/messages/{id}         200 the message with its events
 *   GET  /v1/messages              200 {data,next_cursor}; ?status= &batch_id= &tag=
 *                                  &since= &cursor= &limit= (1..100, default 50)
 *   POST /v1/messages/{id}/cancel  200 the message, or 409 not_cancelable + status
 *   GET  /v1/batches/{id}          200 counts by status
 *
 * Batch fields: from, reply_to, subject/text/html or template_id + variables
 * (defaults under each recipient's), headers, tags and metadata (merged with each
 * recipient's), priority, send_at, esp, recipients; no cc/bcc. A bad recipient
 * is listed in "rejected" ({index, code, field, message}) and the rest go on;
 * when none is left the answer is 422 all_recipients_rejected with the list.
 *
 * Suppressed recipients (the tenant's list, checked by the accept statement
 * itself, so no extra round trip) are refused: nothing is stored for them. A
 * single send to one "to" answers 422 suppressed (field /to); otherwise the
 * recipient is listed in "rejected" with code suppressed (a single send's
 * answer then has a "rejected" array too) and the others are accepted, or 422
 * all_recipients_rejected when none is left. With an Idempotency-Key the
 * stored answer is made to match (see md_accept_t); a request refused whole
 * stores no key.
 *
 * A POST body is application/json (else 415 unsupported_media_type); bad JSON is
 * 400 invalid_json; every refused field is 422
 *   {"error":{"code":"<stable code>","message":"...","field":"<JSON pointer>"}}
 * and nothing of a refused request is stored. A bad query parameter is 422 with
 * the parameter's name as "field". The 202 is sent only from
 * md_messages_accept's callback, after COMMIT, so it means "durably accepted".
 *
 * Limits (documented in docs/openapi.yaml too): to + cc + bcc <= 50 per request
 * (every "to" gets its own message, cc and bcc ride along on each); subject <=
 * 998 bytes without CR/LF; headers <= 50 names, <= 8 KiB in all, names of RFC
 * 5322 ftext, values without CR/LF or other controls, no structural names
 * (From, To, Subject, Content-*, ...: the MIME layer writes those); tags <= 10
 * of [A-Za-z0-9_.:-]{1,64}; metadata an object <= 4 KiB as compact JSON;
 * send_at RFC 3339, at most 30 days ahead (a past time means now); esp the name
 * of a configured account (esp NAME { }), else 422 unknown_esp.
 *
 * Idempotency-Key (1..255 printable ASCII, else 400 invalid_idempotency_key): the
 * request hash is SHA-256 over the method, the path and the exact body bytes. The
 * key is looked up before the body is parsed: with the same hash the first answer
 * is replayed (Idempotent-Replayed: true), with another 409 idempotency_conflict.
 * Otherwise the answer is built before the insert (ids are made here) and stored
 * with the messages in their transaction (the store writes the committed statuses
 * into it), so two concurrent requests with one key create one set of messages:
 * md_messages_accept reports the loser as a replay or a conflict. A refused
 * request stores nothing, its key included.
 */
#include "md_router.h"
#include "md_json.h"
#include "md_api_util.h"
#include "md_tracking.h"
#include "md_auth.h"
#include "md_log.h"
#include "md_metrics.h"
#include "md_messages.h"
#include "md_templates.h"
#include "md_tenants.h"
#include "md_address.h"

#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#define MAX_RECIPIENTS     50   /* to + cc + bcc of one POST /v1/messages */
#define MAX_BATCH          1000 /* recipients of one batch */
#define SUBJECT_MAX        998  /* one header line (RFC 5322 2.1.1) */
#define NAME_MAX_BYTES     256  /* a display name */
#define HEADERS_MAX        50
#define HEADERS_MAX_BYTES  8192 /* sum of name + ": " + value + CRLF */
#define HEADER_NAME_MAX    76
#define TAGS_MAX           10
#define TAG_MAX            64
#define METADATA_MAX       4096
#define IDEM_KEY_MAX       255
#define SEND_AT_MAX_AHEAD  (30.0 * 86400)
#define BATCH_RENDER_MAX   (32u * 1024 * 1024) /* rendered bytes of one batch, all recipients */
#define LIST_LIMIT_DEFAULT 50
#define LIST_LIMIT_MAX     100
#define FIELD_MAX          200
#define SUPPRESSED_MSG     "the recipient is on this tenant's suppression list"

void md_api_messages_register(md_router_t *rt, const md_conf_t *conf);

/* --- validation errors --------------------------------------------------------------- */

/* The first problem found: a stable code, the JSON pointer of the field, a message. */
typedef struct verr_s {
    const char *code;
    char field[FIELD_MAX];
    char msg[256];
} verr_t;

/* Every code this module answers with, for the rejected-by-reason metric. */
static const char *const reject_codes[] = {"invalid_json",
                                           "unsupported_media_type",
                                           "invalid_idempotency_key",
                                           "unknown_field",
                                           "required",
                                           "invalid_type",
                                           "invalid_address",
                                           "header_injection",
                                           "too_many_recipients",
                                           "subject_too_long",
                                           "invalid_header_name",
                                           "invalid_header_value",
                                           "header_not_allowed",
                                           "duplicate_header",
                                           "headers_too_large",
                                           "invalid_tag",
                                           "too_many_tags",
                                           "metadata_too_large",
                                           "invalid_priority",
                                           "invalid_send_at",
                                           "send_at_too_far",
                                           "unknown_esp",
                                           "content_conflict",
                                           "missing_content",
                                           "template_required",
                                           "template_not_found",
                                           "template_render_failed",
                                           "batch_too_large",
                                           "all_recipients_rejected",
                                           "idempotency_conflict",
                                           "invalid_template_id",
                                           "suppressed",
                                           "tracking_not_configured",
                                           NULL};

static void
count_rejected(const char *code, uint64_t n)
{
    for (unsigned i = 0; reject_codes[i]; i++)
        if (strcmp(reject_codes[i], code) == 0) {
            md_metrics_messages_rejected(i, n);
            return;
        }
}

/* Copies src into dst (size >= 1) cutting only between whole UTF-8 characters, so
 * the result stays valid JSON string content. */
static void
copy_utf8(char *dst, size_t size, const char *src)
{
    size_t j = 0;
    for (const char *p = src; *p;) {
        unsigned char c = (unsigned char)*p;
        size_t n = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
        if (j + n >= size)
            break;
        for (size_t i = 0; i < n && *p; i++)
            dst[j++] = *p++;
    }
    dst[j] = '\0';
}

/* Records a problem and returns false, so validators can `return fail(...)`. */
static bool fail(verr_t *e, const char *code, const char *field, const char *fmt, ...)
    md_printf_like(4, 5);

static bool
fail(verr_t *e, const char *code, const char *field, const char *fmt, ...)
{
    char msg[sizeof(e->msg) * 2];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    e->code = code;
    copy_utf8(e->field, sizeof(e->field), field);
    copy_utf8(e->msg, sizeof(e->msg), msg);
    return false;
}

/* base + "/" + key as a JSON pointer ('~' -> "~0", '/' -> "~1"), cut to fit. */
static void
ptr_key(char *out, size_t size, const char *base, const char *key)
{
    char tmp[FIELD_MAX * 2];
    size_t j = (size_t)snprintf(tmp, sizeof(tmp), "%s/", base);
    for (const char *p = key; *p && j + 3 < sizeof(tmp); p++) {
        if (*p == '~' || *p == '/') {
            tmp[j++] = '~';
            tmp[j++] = *p == '~' ? '0' : '1';
        } else {
            tmp[j++] = *p;
        }
    }
    tmp[j] = '\0';
    copy_utf8(out, size, tmp);
}

static json_t *
err_json(const verr_t *e)
{
    return json_pack("{s:{s:s,s:s,s:s}}", "error", "code", e->code, "message", e->msg, "field",
                     e->field);
}

static int
send_verr(md_http_request_t *r, const verr_t *e)
{
    count_rejected(e->code, 1);
    md_http_send_json(r, 422, err_json(e));
    return MD_OK;
}

/* --- small validators ------------------------------------------------------------------ */

static bool
has_crlf(const char *s, size_t n)
{
    /* s may be NULL when n is 0 (an empty md_buf_t: a subject that rendered empty) */
    return n > 0 && (memchr(s, '\r', n) || memchr(s, '\n', n));
}

/* True when s holds a control character a header cannot carry: C0 but TAB, DEL,
 * or C1 (U+0080..U+009F, 0xC2 0x80..0x9F in UTF-8; jansson strings are valid
 * UTF-8). CR and LF are checked before, as header injection. */
static bool
has_controls(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return true;
        if (c == 0xc2 && i + 1 < n && (unsigned char)s[i + 1] >= 0x80 &&
            (unsigned char)s[i + 1] <= 0x9f)
            return true;
    }
    return false;
}

/* Refuses members other than the allowed ones (a typo must not be ignored). */
static bool
check_known(json_t *obj, const char *base, const char *const *allowed, verr_t *e)
{
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v)
    {
        bool ok = false;
        for (const char *const *a = allowed; *a && !ok; a++)
            ok = strcmp(k, *a) == 0;
        if (!ok) {
            char f[FIELD_MAX];
            ptr_key(f, sizeof(f), base, k);
            return fail(e, "unknown_field", f, "unknown field");
        }
    }
    return true;
}

/* Tag syntax: [A-Za-z0-9_.:-]{1,64}. */
static bool
tag_ok(const char *s, size_t n)
{
    if (n < 1 || n > TAG_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == ':' || c == '-'))
            return false;
    }
    return true;
}

/*
 * One address: a string ("a@b.example" or "Name <a@b.example>") or an object
 * {"address": "a@b.example", "name": "Name"}. On success fills *out (strings in
 * pool) and, when parsed is not NULL, the parsed form.
 */
static bool
parse_addr(md_pool_t *pool, json_t *v, const char *field, md_msg_addr_t *out, md_address_t *parsed,
           verr_t *e)
{
    md_address_t a;
    md_address_error_t ae;
    const char *name = NULL;
    char f[FIELD_MAX];

    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        size_t n = json_string_length(v);
        if (has_crlf(s, n))
            return fail(e, "header_injection", field, "an address must not contain CR or LF");
        if (md_address_parse(pool, s, n, &a, &ae) != MD_OK)
            return fail(e, "invalid_address", field, "%s: %s", ae.name, ae.message);
        if (a.display.len > NAME_MAX_BYTES)
            return fail(e, "invalid_address", field, "the display name is over %d bytes",
                        NAME_MAX_BYTES);
        if (a.display.len)
            name = a.display.data;
    } else if (json_is_object(v)) {
        static const char *const known[] = {"address", "name", NULL};
        if (!check_known(v, field, known, e))
            return false;
        json_t *av = json_object_get(v, "address"), *nv = json_object_get(v, "name");
        snprintf(f, sizeof(f), "%s/address", field);
        if (av == NULL)
            return fail(e, "required", f, "is required");
        if (!json_is_string(av))
            return fail(e, "invalid_type", f, "must be a string");
        const char *s = json_string_value(av);
        size_t n = json_string_length(av);
        if (has_crlf(s, n))
            return fail(e, "header_injection", f, "an address must not contain CR or LF");
        if (md_address_parse(pool, s, n, &a, &ae) != MD_OK)
            return fail(e, "invalid_address", f, "%s: %s", ae.name, ae.message);
        if (a.angle || a.display.len)
            return fail(e, "invalid_address", f,
                        "must be a bare address; put the display name in \"name\"");
        snprintf(f, sizeof(f), "%s/name", field);
        if (nv && !json_is_null(nv)) {
            if (!json_is_string(nv))
                return fail(e, "invalid_type", f, "must be a string");
            md_str_t d = {json_string_length(nv), json_string_value(nv)};
            if (has_crlf(d.data, d.len))
                return fail(e, "header_injection", f, "a name must not contain CR or LF");
            char tmp[1];
            if (d.len > NAME_MAX_BYTES ||
                md_address_format(tmp, sizeof(tmp), d, a.addr_ascii, NULL) < 0)
                return fail(e, "invalid_address", f,
                            "must be at most %d bytes of text without control characters",
                            NAME_MAX_BYTES);
            if (d.len)
                name = md_pstrndup(pool, d.data, d.len);
        }
    } else {
        return fail(e, "invalid_type", field,
                    "must be an address string or an {\"address\", \"name\"} object");
    }
    out->address = a.addr.data;
    out->name = name;
    if (parsed)
        *parsed = a;
    return true;
}

/* A list of addresses (cc, bcc): one address or an array of them. */
static bool
parse_addr_list(md_pool_t *pool, json_t *v, const char *field, md_msg_addr_t **out, size_t *n,
                verr_t *e)
{
    char f[FIELD_MAX];
    *out = NULL;
    *n = 0;
    if (v == NULL || json_is_null(v))
        return true;
    if (!json_is_array(v)) {
        *out = md_palloc(pool, sizeof(**out));
        *n = 1;
        return parse_addr(pool, v, field, *out, NULL, e);
    }
    size_t cnt = json_array_size(v);
    if (cnt > MAX_RECIPIENTS)
        return fail(e, "too_many_recipients", field, "at most %d recipients per request",
                    MAX_RECIPIENTS);
    *out = md_palloc(pool, sizeof(**out) * (cnt ? cnt : 1));
    for (size_t i = 0; i < cnt; i++) {
        snprintf(f, sizeof(f), "%s/%zu", field, i);
        if (!parse_addr(pool, json_array_get(v, i), f, &(*out)[i], NULL, e))
            return false;
    }
    *n = cnt;
    return true;
}

static bool
structural_header(const char *name)
{
    static const char *const names[] = {
        "from", "to",         "cc",           "bcc",         "subject",  "reply-to",       "sender",
        "date", "message-id", "mime-version", "return-path", "received", "dkim-signature", NULL};
    for (const char *const *p = names; *p; p++)
        if (strcasecmp(name, *p) == 0)
            return true;
    return strncasecmp(name, "content-", 8) == 0 || strncasecmp(name, "x-mailerd-", 10) == 0;
}

/* headers: {name: value}. Serialized (compact) into *json, in pool. */
static bool
check_headers(md_pool_t *pool, json_t *h, const char **json, verr_t *e)
{
    char f[FIELD_MAX];
    if (h == NULL || json_is_null(h)) {
        *json = "{}";
        return true;
    }
    if (!json_is_object(h))
        return fail(e, "invalid_type", "/headers", "must be an object of name: value strings");
    if (json_object_size(h) > HEADERS_MAX)
        return fail(e, "headers_too_large", "/headers", "at most %d headers", HEADERS_MAX);
    size_t total = 0;
    const char *k;
    json_t *v;
    json_object_foreach(h, k, v)
    {
        ptr_key(f, sizeof(f), "/headers", k);
        size_t kl = strlen(k);
        bool name_ok = kl >= 1 && kl <= HEADER_NAME_MAX;
        for (size_t i = 0; name_ok && i < kl; i++)
            name_ok = (unsigned char)k[i] >= 33 && (unsigned char)k[i] <= 126 && k[i] != ':';
        if (!name_ok) {
            if (has_crlf(k, kl))
                return fail(e, "header_injection", f, "a header name must not contain CR or LF");
            return fail(e, "invalid_header_name", f,
                        "a header name is 1 to %d printable ASCII characters without ':'",
                        HEADER_NAME_MAX);
        }
        if (structural_header(k))
            return fail(e, "header_not_allowed", f, "%s is set by mailerd from the message fields",
                        k);
        const char *k2;
        json_t *v2;
        json_object_foreach(h, k2, v2)
        {
            if (k2 == k)
                break;
            if (strcasecmp(k2, k) == 0)
                return fail(e, "duplicate_header", f, "header names are case-insensitive");
        }
        if (!json_is_string(v))
            return fail(e, "invalid_type", f, "must be a string");
        const char *s = json_string_value(v);
        size_t n = json_string_length(v);
        if (has_crlf(s, n))
            return fail(e, "header_injection", f, "a header value must not contain CR or LF");
        if (has_controls(s, n))
            return fail(e, "invalid_header_value", f,
                        "a header value must not contain control characters");
        if (kl + 2 + n > SUBJECT_MAX)
            return fail(e, "invalid_header_value", f, "a header line is at most %d bytes",
                        SUBJECT_MAX);
        total += kl + 4 + n;
    }
    if (total > HEADERS_MAX_BYTES)
        return fail(e, "headers_too_large", "/headers", "headers are at most %d bytes in all",
                    HEADERS_MAX_BYTES);
    char *s = json_dumps(h, JSON_COMPACT);
    *json = md_pstrndup(pool, s, strlen(s));
    free(s);
    return true;
}

/* tags: an array of tag strings; appended (deduplicated) to tags[*n]. */
static bool
check_tags(json_t *t, const char *field, const char **tags, size_t *n, verr_t *e)
{
    char f[FIELD_MAX];
    if (t == NULL || json_is_null(t))
        return true;
    if (!json_is_array(t))
        return fail(e, "invalid_type", field, "must be an array of strings");
    for (size_t i = 0; i < json_array_size(t); i++) {
        json_t *v = json_array_get(t, i);
        snprintf(f, sizeof(f), "%s/%zu", field, i);
        if (!json_is_string(v) || !tag_ok(json_string_value(v), json_string_length(v)))
            return fail(e, "invalid_tag", f, "a tag is 1 to %d characters of [A-Za-z0-9_.:-]",
                        TAG_MAX);
        bool dup = false;
        for (size_t j = 0; j < *n && !dup; j++)
            dup = strcmp(tags[j], json_string_value(v)) == 0;
        if (dup)
            continue;
        if (*n >= TAGS_MAX)
            return fail(e, "too_many_tags", field, "at most %d tags", TAGS_MAX);
        tags[(*n)++] = json_string_value(v);
    }
    return true;
}

/* metadata: an object of at most METADATA_MAX bytes as compact JSON, into *json. */
static bool
check_metadata(md_pool_t *pool, json_t *m, const char *field, const char **json, verr_t *e)
{
    if (m == NULL || json_is_null(m)) {
        *json = "{}";
        return true;
    }
    if (!json_is_object(m))
        return fail(e, "invalid_type", field, "must be an object");
    char *s = json_dumps(m, JSON_COMPACT);
    size_t n = s ? strlen(s) : 0;
    if (s == NULL || n > METADATA_MAX) {
        free(s);
        return fail(e, "metadata_too_large", field, "must be at most %d bytes as JSON",
                    METADATA_MAX);
    }
    *json = md_pstrndup(pool, s, n);
    free(s);
    return true;
}

/* --- one request's state --------------------------------------------------------------- */

/* One recipient of a send: a "to" address or a batch recipient. */
typedef struct rcpt_s {
    unsigned index;
    md_msg_addr_t to;
    char to_field[FIELD_MAX]; /* JSON pointer of its address, for a refusal */
    char *suppress_key;
    json_t *variables; /* owned (released by the request's cleanup), or NULL */
    const char *metadata_json;
    const char **tags;
    size_t ntags;
    const char *subject, *text, *html; /* rendered (template sends) */
    bool rejected;
    verr_t *err;
} rcpt_t;

typedef struct send_s {
    md_http_request_t *r;
    char tenant_id[MD_UUID_STRLEN + 1];
    bool batch;
    json_t *body; /* owned; the validated strings below point into it */

    md_msg_addr_t from;
    md_msg_addr_t *cc, *bcc;
    size_t ncc, nbcc;
    const char *reply_to;
    const char *subject, *text, *html;
    bool has_template;
    char template_id[MD_UUID_STRLEN + 1];
    json_t *variables; /* borrowed from body, or NULL */
    const char *headers_json;
    const char *tags[TAGS_MAX];
    size_t ntags;
    json_t *metadata; /* borrowed from body, or NULL */
    const char *metadata_json;
    int priority;
    double send_at;
    const char *esp;
    unsigned track_given, track_on; /* "tracking" members present / true (MD_TRACKING_*) */
    unsigned tenant_tracking;       /* the tenant's defaults */

    rcpt_t *rc;
    size_t nrc, nrejected;

    bool has_idem;
    const char *idem_key;
    unsigned char hash[32];

    md_tmpl_t *tmpl;
    md_accept_t accept;
    md_msg_new_t *msgs;
    rcpt_t **msg_rc; /* msgs[i] came from msg_rc[i] */
    char batch_id[MD_UUID_STRLEN + 1];
    char *response; /* the 202 body as predicted before the insert (stored with a key) */
} send_t;

static void
send_cleanup(void *data)
{
    send_t *q = data;
    for (size_t i = 0; i < q->nrc; i++)
        json_decref(q->rc[i].variables);
    if (q->tmpl)
        md_tmpl_release(q->tmpl);
    json_decref(q->body);
}

/* --- common answers -------------------------------------------------------------------- */

/* The request's client left while it waited: drop our reference, send nothing. */
static bool
gone(md_http_request_t *r)
{
    if (!r->aborted)
        return false;
    md_http_send(r, 499, NULL, NULL, 0);
    return true;
}

/* After a store error string: 503 when the store is down, else 500. */
static int
send_store_error(md_http_request_t *r, const char *err, const char *what)
{
    if (md_app_store_down(err))
        return md_app_send_store_unavailable(r, "postgres");
    md_logf(MD_LOG_ERROR, 0, MD_LOG_FIELDS(MD_LS("error", err)), "%s failed", what);
    md_http_send_error(r, 500, "internal_error", "internal error");
    return MD_OK;
}

/* --- request body ---------------------------------------------------------------------- */

/* Idempotency-Key: absent (true, *key NULL), valid (true), or refused (answers 400). */
static bool
idem_header(send_t *q)
{
    md_http_request_t *r = q->r;
    const md_str_t *k = md_http_get_header(r, "Idempotency-Key");
    if (k == NULL)
        return true;
    bool ok = k->len >= 1 && k->len <= IDEM_KEY_MAX;
    for (size_t i = 0; ok && i < k->len; i++)
        ok = (unsigned char)k->data[i] >= 0x20 && (unsigned char)k->data[i] <= 0x7e;
    if (!ok) {
        count_rejected("invalid_idempotency_key", 1);
        md_http_send_error(r, 400, "invalid_idempotency_key",
                           "Idempotency-Key must be 1 to %d printable ASCII characters",
                           IDEM_KEY_MAX);
        return false;
    }
    q->has_idem = true;
    q->idem_key = md_pstrndup(r->pool, k->data, k->len);
    /* method, path and the exact body: the same key may not be reused for another
     * route or another body. */
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    unsigned len = 0;
    if (c == NULL || EVP_DigestInit_ex(c, EVP_sha256(), NULL) != 1 ||
        EVP_DigestUpdate(c, r->method_name.data, r->method_name.len) != 1 ||
        EVP_DigestUpdate(c, "\n", 1) != 1 || EVP_DigestUpdate(c, r->path.data, r->path.len) != 1 ||
        EVP_DigestUpdate(c, "\n", 1) != 1 ||
        EVP_DigestUpdate(c, r->body.pos, md_buf_len(&r->body)) != 1 ||
        EVP_DigestFinal_ex(c, q->hash, &len) != 1 || len != 32) {
        EVP_MD_CTX_free(c);
        md_http_send_error(r, 500, "internal_error", "cannot hash the request");
        return false;
    }
    EVP_MD_CTX_free(c);
    return true;
}

/* JSON parse and object check. Answers and returns false on failure. */
static bool
load_body(send_t *q)
{
    md_http_request_t *r = q->r;
    json_error_t jerr;
    q->body = md_json_load(r->body.pos, md_buf_len(&r->body), &jerr);
    if (q->body == NULL) {
        count_rejected("invalid_json", 1);
        md_http_send_error(r, 400, "invalid_json",
                           "the body is not valid JSON: %s (line %d, column %d)", jerr.text,
                           jerr.line, jerr.column);
        return false;
    }
    if (!json_is_object(q->body)) {
        verr_t e;
        fail(&e, "invalid_type", "", "the body must be a JSON object");
        send_verr(r, &e);
        return false;
    }
    return true;
}

/* Fields shared by single and batch sends. */
static bool
validate_common(send_t *q, verr_t *e)
{
    md_pool_t *pool = q->r->pool;
    json_t *b = q->body, *v;

    v = json_object_get(b, "from");
    if (v == NULL)
        return fail(e, "required", "/from", "is required");
    if (!parse_addr(pool, v, "/from", &q->from, NULL, e))
        return false;

    v = json_object_get(b, "reply_to");
    if (v && !json_is_null(v)) {
        md_msg_addr_t ra;
        md_address_t pa;
        if (!parse_addr(pool, v, "/reply_to", &ra, &pa, e))
            return false;
        md_str_t disp = {ra.name ? strlen(ra.name) : 0, ra.name ? ra.name : ""};
        char tmp[1];
        ssize_t n = md_address_format(tmp, sizeof(tmp), disp, pa.addr_ascii, NULL);
        if (n < 0)
            return fail(e, "invalid_address", "/reply_to", "cannot be written as a header");
        char *out = md_palloc(pool, (size_t)n + 1);
        md_address_format(out, (size_t)n + 1, disp, pa.addr_ascii, NULL);
        q->reply_to = out;
    }

    json_t *subj = json_object_get(b, "subject"), *text = json_object_get(b, "text"),
           *html = json_object_get(b, "html"), *tid = json_object_get(b, "template_id");
    json_t *vars = json_object_get(b, "variables");
    bool content = (subj && !json_is_null(subj)) || (text && !json_is_null(text)) ||
                   (html && !json_is_null(html));
    if (tid && !json_is_null(tid)) {
        if (content)
            return fail(e, "content_conflict",
                        subj   ? "/subject"
                        : text ? "/text"
                               : "/html",
                        "give either template_id (with variables) or subject and text/html, "
                        "not both");
        if (!json_is_string(tid))
            return fail(e, "invalid_type", "/template_id", "must be a string");
        md_str_t s = {json_string_length(tid), json_string_value(tid)};
        if (!md_uuid_parse(s, q->template_id))
            return fail(e, "invalid_template_id", "/template_id", "must be a template id");
        q->has_template = true;
        if (vars && !json_is_null(vars) && !json_is_object(vars))
            return fail(e, "invalid_type", "/variables", "must be an object");
        q->variables = json_is_object(vars) ? vars : NULL;
    } else {
        if (vars && !json_is_null(vars))
            return fail(e, "template_required", "/variables",
                        "variables are only used with template_id");
        if (!content)
            return fail(e, "missing_content", "/subject",
                        "give subject and text and/or html, or template_id");
        if (subj == NULL || json_is_null(subj))
            return fail(e, "required", "/subject", "is required with text/html content");
        if (!json_is_string(subj))
            return fail(e, "invalid_type", "/subject", "must be a string");
        const char *s = json_string_value(subj);
        size_t n = json_string_length(subj);
        if (has_crlf(s, n))
            return fail(e, "header_injection", "/subject", "must not contain CR or LF");
        if (n > SUBJECT_MAX)
            return fail(e, "subject_too_long", "/subject", "must be at most %d bytes", SUBJECT_MAX);
        if (has_controls(s, n))
            return fail(e, "header_injection", "/subject", "must not contain control characters");
        q->subject = s;
        if (text && !json_is_null(text)) {
            if (!json_is_string(text))
                return fail(e, "invalid_type", "/text", "must be a string");
            q->text = json_string_value(text);
        }
        if (html && !json_is_null(html)) {
            if (!json_is_string(html))
                return fail(e, "invalid_type", "/html", "must be a string");
            q->html = json_string_value(html);
        }
        if ((q->text == NULL || !*q->text) && (q->html == NULL || !*q->html))
            return fail(e, "missing_content", q->text ? "/text" : "/html",
                        "text or html must be a non-empty string");
        if (q->text && !*q->text)
            q->text = NULL;
        if (q->html && !*q->html)
            q->html = NULL;
    }

    if (!check_headers(pool, json_object_get(b, "headers"), &q->headers_json, e))
        return false;
    if (!check_tags(json_object_get(b, "tags"), "/tags", q->tags, &q->ntags, e))
        return false;
    v = json_object_get(b, "metadata");
    if (!check_metadata(pool, v, "/metadata", &q->metadata_json, e))
        return false;
    q->metadata = json_is_object(v) ? v : NULL;

    v = json_object_get(b, "priority");
    q->priority = MD_PRIORITY_TRANSACTIONAL;
    if (v && !json_is_null(v)) {
        const char *p = json_string_value(v);
        if (p && strcmp(p, "bulk") == 0)
            q->priority = MD_PRIORITY_BULK;
        else if (p == NULL || strcmp(p, "transactional") != 0)
            return fail(e, "invalid_priority", "/priority",
                        "must be \"transactional\" or \"bulk\"");
    }

    v = json_object_get(b, "send_at");
    if (v && !json_is_null(v)) {
        double t, now = ev_now(q->r->loop);
        if (!json_is_string(v) ||
            !md_api_parse_rfc3339(json_string_value(v), json_string_length(v), &t))
            return fail(e, "invalid_send_at", "/send_at",
                        "must be an RFC 3339 date-time such as 2030-01-02T03:04:05Z");
        if (t > now + SEND_AT_MAX_AHEAD)
            return fail(e, "send_at_too_far", "/send_at", "must be at most 30 days ahead");
        q->send_at = t > now ? t : 0;
    }

    {
        const char *member = "", *why = "";
        if (!md_api_tracking_parse(json_object_get(b, "tracking"), &q->track_given, &q->track_on,
                                   &member, &why)) {
            char field[32];
            snprintf(field, sizeof(field), "/tracking%s", member);
            return fail(e, "invalid_type", field, "%s", why);
        }
        if (q->track_on && md_tracking() == NULL)
            return fail(e, "tracking_not_configured", "/tracking",
                        "this instance has no tracking { } block (public_url and secret)");
    }

    v = json_object_get(b, "esp");
    if (v && !json_is_null(v)) {
        /* A route override names one of the configured accounts (esp NAME { }). */
        if (!json_is_string(v))
            return fail(e, "invalid_type", "/esp", "must be a string");
        const char *s = json_string_value(v);
        const md_conf_t *conf = md_app ? md_app->conf : NULL;
        for (size_t i = 0; conf && i < conf->nesp && q->esp == NULL; i++)
            if (conf->esp[i].name && strcmp(conf->esp[i].name, s) == 0)
                q->esp = conf->esp[i].name;
        if (q->esp == NULL)
            return fail(e, "unknown_esp", "/esp", "no ESP account of that name is configured");
    }
    return true;
}

/* Sets up r's recipient from a parsed address. */
static void
rcpt_set(md_pool_t *pool, rcpt_t *rc, const md_msg_addr_t *a, const md_address_t *pa)
{
    rc->to = *a;
    char key[MD_ADDRESS_MAX + 1];
    size_t n = md_address_normalize(pa, key, sizeof(key));
    rc->suppress_key = md_pstrndup(pool, key, md_min(n, sizeof(key) - 1));
}

/* POST /v1/messages: to (one or a list) + cc/bcc. */
static bool
validate_single(send_t *q, verr_t *e)
{
    static const char *const known[] = {
        "from",     "to",       "cc",          "bcc",       "reply_to", "subject",
        "text",     "html",     "template_id", "variables", "headers",  "tags",
        "metadata", "priority", "send_at",     "esp",       "tracking", NULL};
    md_pool_t *pool = q->r->pool;
    if (!check_known(q->body, "", known, e) || !validate_common(q, e))
        return false;
    json_t *to = json_object_get(q->body, "to");
    if (to == NULL || json_is_null(to) || (json_is_array(to) && json_array_size(to) == 0))
        return fail(e, "required", "/to", "at least one recipient is required");
    size_t nto = json_is_array(to) ? json_array_size(to) : 1;
    if (nto > MAX_RECIPIENTS)
        return fail(e, "too_many_recipients", "/to", "at most %d recipients per request",
                    MAX_RECIPIENTS);
    q->rc = md_pcalloc(pool, sizeof(rcpt_t) * nto);
    for (size_t i = 0; i < nto; i++) {
        char f[FIELD_MAX];
        md_msg_addr_t a;
        md_address_t pa;
        json_t *v = json_is_array(to) ? json_array_get(to, i) : to;
        if (json_is_array(to))
            snprintf(f, sizeof(f), "/to/%zu", i);
        else
            snprintf(f, sizeof(f), "/to");
        if (!parse_addr(pool, v, f, &a, &pa, e))
            return false;
        q->rc[i].index = (unsigned)i;
        md_strlcpy(q->rc[i].to_field, f, sizeof(q->rc[i].to_field));
        q->rc[i].metadata_json = q->metadata_json;
        q->rc[i].tags = q->tags;
        q->rc[i].ntags = q->ntags;
        rcpt_set(pool, &q->rc[i], &a, &pa);
        q->nrc = i + 1;
    }
    if (!parse_addr_list(pool, json_object_get(q->body, "cc"), "/cc", &q->cc, &q->ncc, e) ||
        !parse_addr_list(pool, json_object_get(q->body, "bcc"), "/bcc", &q->bcc, &q->nbcc, e))
        return false;
    if (nto + q->ncc + q->nbcc > MAX_RECIPIENTS)
        return fail(e, "too_many_recipients", "/to",
                    "at most %d recipients (to + cc + bcc) per request", MAX_RECIPIENTS);
    return true;
}

/* Merges a recipient's object over the request's default (shallow; the recipient
 * wins). Returns a new reference, or NULL when both are absent. */
static json_t *
merge_objects(json_t *dflt, json_t *own)
{
    if (dflt == NULL && own == NULL)
        return NULL;
    json_t *m = dflt ? json_copy(dflt) : json_object();
    if (own)
        json_object_update(m, own);
    return m;
}

/* One batch recipient: {to, variables?, metadata?, tags?}. On failure the
 * recipient is marked rejected with its own error. */
static void
validate_recipient(send_t *q, rcpt_t *rc, json_t *v)
{
    static const char *const known[] = {"to", "variables", "metadata", "tags", NULL};
    md_pool_t *pool = q->r->pool;
    verr_t *e = md_pcalloc(pool, sizeof(*e));
    char base[48], f[FIELD_MAX];
    snprintf(base, sizeof(base), "/recipients/%u", rc->index);
    rc->err = e;
    rc->rejected = true;
    if (!json_is_object(v)) {
        fail(e, "invalid_type", base, "a recipient is an object {to, variables, metadata, tags}");
        return;
    }
    if (!check_known(v, base, known, e))
        return;
    json_t *to = json_object_get(v, "to");
    snprintf(f, sizeof(f), "%s/to", base);
    if (to == NULL || json_is_null(to)) {
        fail(e, "required", f, "is required");
        return;
    }
    md_msg_addr_t a;
    md_address_t pa;
    if (!parse_addr(pool, to, f, &a, &pa, e))
        return;
    json_t *vars = json_object_get(v, "variables");
    snprintf(f, sizeof(f), "%s/variables", base);
    if (vars && !json_is_null(vars)) {
        if (!q->has_template) {
            fail(e, "template_required", f, "variables are only used with template_id");
            return;
        }
        if (!json_is_object(vars)) {
            fail(e, "invalid_type", f, "must be an object");
            return;
        }
    }
    json_t *meta = json_object_get(v, "metadata");
    snprintf(f, sizeof(f), "%s/metadata", base);
    if (meta && !json_is_null(meta) && !json_is_object(meta)) {
        fail(e, "invalid_type", f, "must be an object");
        return;
    }
    json_t *mm = merge_objects(q->metadata, json_is_object(meta) ? meta : NULL);
    bool ok = check_metadata(pool, mm, f, &rc->metadata_json, e);
    json_decref(mm);
    if (!ok)
        return;
    rc->tags = md_palloc(pool, sizeof(char *) * TAGS_MAX);
    memcpy(rc->tags, q->tags, sizeof(char *) * q->ntags);
    rc->ntags = q->ntags;
    snprintf(f, sizeof(f), "%s/tags", base);
    if (!check_tags(json_object_get(v, "tags"), f, rc->tags, &rc->ntags, e))
        return;
    if (q->has_template)
        rc->variables = merge_objects(q->variables, json_is_object(vars) ? vars : NULL);
    rcpt_set(pool, rc, &a, &pa);
    snprintf(rc->to_field, sizeof(rc->to_field), "%s/to", base);
    rc->rejected = false;
    rc->err = NULL;
}

/* POST /v1/messages/batch: request-level fields refuse the whole batch; a bad
 * recipient is only marked. */
static bool
validate_batch(send_t *q, verr_t *e)
{
    static const char *const known[] = {
        "from", "reply_to", "subject",  "text",    "html", "template_id", "variables", "headers",
        "tags", "metadata", "priority", "send_at", "esp",  "recipients",  "tracking",  NULL};
    if (!check_known(q->body, "", known, e) || !validate_common(q, e))
        return false;
    json_t *list = json_object_get(q->body, "recipients");
    if (list == NULL || json_is_null(list))
        return fail(e, "required", "/recipients", "is required");
    if (!json_is_array(list))
        return fail(e, "invalid_type", "/recipients", "must be an array");
    size_t n = json_array_size(list);
    if (n == 0)
        return fail(e, "required", "/recipients", "at least one recipient is required");
    if (n > MAX_BATCH)
        return fail(e, "too_many_recipients", "/recipients", "at most %d recipients per batch",
                    MAX_BATCH);
    q->rc = md_pcalloc(q->r->pool, sizeof(rcpt_t) * n);
    for (size_t i = 0; i < n; i++) {
        q->rc[i].index = (unsigned)i;
        q->nrc = i + 1;
        validate_recipient(q, &q->rc[i], json_array_get(list, i));
        if (q->rc[i].rejected)
            q->nrejected++;
    }
    return true;
}

/* --- accept ---------------------------------------------------------------------------- */

/* A refused recipient's entry in "rejected" (the same shape as a batch's). */
static json_t *
rejected_entry(const rcpt_t *rc)
{
    return json_pack("{s:i,s:s,s:s,s:s}", "index", (int)rc->index, "code", rc->err->code, "field",
                     rc->err->field, "message", rc->err->msg);
}

static json_t *
rejected_json(const send_t *q)
{
    json_t *a = json_array();
    for (size_t i = 0; i < q->nrc; i++) {
        const rcpt_t *rc = &q->rc[i];
        if (rc->rejected)
            json_array_append_new(a, rejected_entry(rc));
    }
    return a;
}

/* The answers of the accept path are written by hand, not through jansson: they
 * are built twice per request (the prediction stored with an Idempotency-Key,
 * then the answer), and json_pack + json_dumps cost more than the rest of the
 * request's own work. */
static void
json_put_str(md_buf_t *b, const char *s)
{
    if (s == NULL) {
        md_buf_append(b, "null", 4);
        return;
    }
    md_buf_append(b, "\"", 1);
    md_buf_append_json_escaped(b, s, strlen(s));
    md_buf_append(b, "\"", 1);
}

static void
json_put_uint(md_buf_t *b, unsigned v)
{
    char num[16], *p = num + sizeof(num);
    do {
        *--p = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    md_buf_append(b, p, (size_t)(num + sizeof(num) - p));
}

/* rejected_entry()'s object. */
static void
rejected_put(md_buf_t *b, unsigned index, const char *code, const char *field, const char *msg)
{
    md_buf_append_str(b, "{\"index\":");
    json_put_uint(b, index);
    md_buf_append_str(b, ",\"code\":");
    json_put_str(b, code);
    md_buf_append_str(b, ",\"field\":");
    json_put_str(b, field);
    md_buf_append_str(b, ",\"message\":");
    json_put_str(b, msg);
    md_buf_append(b, "}", 1);
}

/* The 202 body with each message's status; a suppressed one is left out (its
 * recipient is in "rejected", which a single send has only when not empty).
 * Returns a malloc'd string. */
static char *
response_text(const send_t *q, const char *const *status)
{
    md_buf_t b;
    md_buf_init(&b);
    md_buf_reserve(&b, 64 + q->accept.n * 128);
    if (q->batch) {
        md_buf_append_str(&b, "{\"batch_id\":");
        json_put_str(&b, q->batch_id);
        md_buf_append_str(&b, ",\"accepted\":[");
    } else {
        md_buf_append_str(&b, "{\"data\":[");
    }
    bool first = true;
    for (size_t i = 0; i < q->accept.n; i++) {
        const md_msg_new_t *m = &q->msgs[i];
        if (strcmp(status[i], "suppressed") == 0)
            continue;
        md_buf_append_str(&b, first ? "{" : ",{");
        first = false;
        if (q->batch) {
            md_buf_append_str(&b, "\"index\":");
            json_put_uint(&b, q->msg_rc[i]->index);
            md_buf_append(&b, ",", 1);
        }
        md_buf_append_str(&b, "\"id\":");
        json_put_str(&b, m->id);
        md_buf_append_str(&b, ",\"to\":");
        json_put_str(&b, m->to.address);
        md_buf_append_str(&b, ",\"status\":");
        json_put_str(&b, status[i]);
        md_buf_append(&b, "}", 1);
    }
    md_buf_append(&b, "]", 1);
    /* Not q->nrejected: mark_suppressed() refuses recipients after the count. */
    bool any = q->batch;
    for (size_t i = 0; i < q->nrc && !any; i++)
        any = q->rc[i].rejected;
    if (any) {
        md_buf_append_str(&b, ",\"rejected\":[");
        first = true;
        for (size_t i = 0; i < q->nrc; i++) {
            const rcpt_t *rc = &q->rc[i];
            if (!rc->rejected)
                continue;
            if (!first)
                md_buf_append(&b, ",", 1);
            first = false;
            rejected_put(&b, rc->index, rc->err->code, rc->err->field, rc->err->msg);
        }
        md_buf_append(&b, "]", 1);
    }
    md_buf_append(&b, "}", 1);
    char *s = md_xstrndup(b.pos, md_buf_len(&b));
    md_buf_free(&b);
    return s;
}

static void
send_text(md_http_request_t *r, int status, const char *body)
{
    md_http_send(r, status, "application/json", body, strlen(body));
}

static int
send_conflict(md_http_request_t *r)
{
    count_rejected("idempotency_conflict", 1);
    md_http_send_error(r, 409, "idempotency_conflict",
                       "this Idempotency-Key was used with another request");
    return MD_OK;
}

static void
send_replay(md_http_request_t *r, int status, const char *body)
{
    md_http_add_header(r, "Idempotent-Replayed", "true");
    send_text(r, status, body);
}

/* The messages the store refused as suppressed become rejected recipients.
 * Returns how many there were. */
static size_t
mark_suppressed(send_t *q, const char *const *status)
{
    size_t nsup = 0;
    for (size_t i = 0; i < q->accept.n; i++) {
        if (strcmp(status[i], "suppressed") != 0)
            continue;
        rcpt_t *rc = q->msg_rc[i];
        rc->rejected = true;
        rc->err = md_pcalloc(q->r->pool, sizeof(verr_t));
        fail(rc->err, "suppressed", rc->to_field, SUPPRESSED_MSG);
        nsup++;
    }
    return nsup;
}

static void
accepted(void *ctx, const md_accept_result_t *res)
{
    send_t *q = ctx;
    md_http_request_t *r = q->r;
    if (res->error == NULL) {
        size_t nsup = mark_suppressed(q, res->status);
        /* Committed: count it even if the client left meanwhile. */
        md_metrics_messages_accepted(q->accept.n - nsup);
        for (size_t i = 0; i < q->nrc; i++)
            if (q->rc[i].rejected)
                count_rejected(q->rc[i].err->code, 1);
        if (gone(r))
            return;
        if (nsup == q->accept.n) {
            /* Every recipient refused: nothing was stored, the key included. */
            if (!q->batch && q->nrc == 1) {
                md_http_send_json(r, 422, err_json(q->rc[0].err));
                return;
            }
            json_t *e =
                json_pack("{s:{s:s,s:s,s:s,s:o}}", "error", "code", "all_recipients_rejected",
                          "message", "every recipient was rejected; nothing was accepted", "field",
                          q->batch ? "/recipients" : "/to", "rejected", rejected_json(q));
            md_http_send_json(r, 422, e);
            return;
        }
        char *s = response_text(q, res->status);
        /* The store wrote the same committed statuses into the stored answer. */
        send_text(r, 202, s);
        free(s);
        return;
    }
    if (gone(r))
        return;
    if (strcmp(res->error, "idempotency_replay") == 0) {
        send_replay(r, res->replay_status, res->replay_response ? res->replay_response : "{}");
        return;
    }
    if (strcmp(res->error, "idempotency_conflict") == 0) {
        send_conflict(r);
        return;
    }
    send_store_error(r, res->error, "message accept");
}

/* Builds the rows and hands them to the group commit. Returns like a handler. */
static int
accept_all(send_t *q)
{
    md_http_request_t *r = q->r;
    md_pool_t *pool = r->pool;
    size_t n = q->nrc - q->nrejected;
    if (n == 0) {
        json_t *e = json_pack("{s:{s:s,s:s,s:s,s:o}}", "error", "code", "all_recipients_rejected",
                              "message", "every recipient was rejected; nothing was accepted",
                              "field", "/recipients", "rejected", rejected_json(q));
        for (size_t i = 0; i < q->nrc; i++)
            count_rejected(q->rc[i].err->code, 1);
        md_http_send_json(r, 422, e);
        return MD_OK;
    }
    q->msgs = md_pcalloc(pool, sizeof(md_msg_new_t) * n);
    q->msg_rc = md_palloc(pool, sizeof(rcpt_t *) * n);
    const char **pred = md_palloc(pool, sizeof(char *) * n);
    const char *variables_json = NULL;
    if (!q->batch && q->variables) {
        char *s = json_dumps(q->variables, JSON_COMPACT);
        variables_json = md_pstrndup(pool, s, strlen(s));
        free(s);
    }
    size_t k = 0;
    for (size_t i = 0; i < q->nrc; i++) {
        rcpt_t *rc = &q->rc[i];
        if (rc->rejected)
            continue;
        md_msg_new_t *m = &q->msgs[k];
        md_uuid7(m->id);
        m->from = q->from;
        m->to = rc->to;
        m->cc = q->cc;
        m->ncc = q->ncc;
        m->bcc = q->bcc;
        m->nbcc = q->nbcc;
        m->reply_to = q->reply_to;
        m->subject = rc->subject ? rc->subject : q->subject;
        m->text = rc->subject ? rc->text : q->text;
        m->html = rc->subject ? rc->html : q->html;
        m->template_id = q->has_template ? q->template_id : NULL;
        if (q->batch && rc->variables) {
            char *s = json_dumps(rc->variables, JSON_COMPACT);
            m->variables_json = md_pstrndup(pool, s, strlen(s));
            free(s);
        } else {
            m->variables_json = variables_json;
        }
        m->headers_json = q->headers_json;
        m->tags = rc->tags;
        m->ntags = rc->ntags;
        m->metadata_json = rc->metadata_json;
        m->priority = q->priority;
        m->send_at = q->send_at;
        m->esp_route = q->esp;
        m->suppress_key = rc->suppress_key;
        {
            unsigned flags = (q->tenant_tracking & ~q->track_given) | q->track_on;
            md_tracking_out_t t;
            if (md_tracking_apply(pool, m->id, flags, q->priority == MD_PRIORITY_BULK, m->html,
                                  m->headers_json, &t) != MD_OK) {
                md_log(MD_LOG_ERROR, 0, "tracking: cannot prepare message %s", m->id);
                md_http_send_error(r, 500, "internal_error", "internal error");
                return MD_OK;
            }
            m->html = t.html;
            m->headers_json = t.headers_json;
            m->tracking_json = t.tracking_json;
        }
        {
            md_buf_t rb;
            md_buf_init(&rb);
            rejected_put(&rb, rc->index, "suppressed", rc->to_field, SUPPRESSED_MSG);
            m->refused_json = md_pstrndup(pool, rb.pos, md_buf_len(&rb));
            md_buf_free(&rb);
        }
        q->msg_rc[k] = rc;
        pred[k] = q->send_at > 0 ? "scheduled" : "queued";
        k++;
    }
    md_accept_t *a = &q->accept;
    a->tenant_id = q->tenant_id;
    if (q->batch) {
        md_uuid7(q->batch_id);
        a->batch_id = q->batch_id;
        a->batch_rejected = (int)q->nrejected;
    }
    a->msgs = q->msgs;
    a->n = n;
    if (q->has_idem) {
        /* The answer stored with the key, predicted before the statuses are known
         * (the store writes the committed ones into it). */
        char *s = response_text(q, pred);
        q->response = md_pstrndup(pool, s, strlen(s));
        free(s);
        a->idem_key = q->idem_key;
        a->idem_hash = q->hash;
        a->idem_status = 202;
        a->idem_response_json = q->response;
    }
    int rc = md_messages_accept(a, accepted, q);
    if (rc == MD_OK)
        return MD_AGAIN;
    if (rc == MD_AGAIN)
        return md_app_send_store_unavailable(r, "postgres");
    md_http_send_error(r, 500, "internal_error", "internal error");
    return MD_OK;
}

/* Copies a rendered part into the pool. */
static const char *
buf_pstr(md_pool_t *pool, md_buf_t *b)
{
    return md_pstrndup(pool, b->pos, md_buf_len(b));
}

/* Renders the template for rc (variables: the recipient's, else the request's).
 * *budget is what is left of BATCH_RENDER_MAX. */
static bool
render_one(send_t *q, rcpt_t *rc, json_t *vars, size_t *budget, verr_t *e)
{
    md_pool_t *pool = q->r->pool;
    md_buf_t subj, text, html;
    md_buf_init(&subj);
    md_buf_init(&text);
    md_buf_init(&html);
    int has_text = 0, has_html = 0;
    char msg[160] = "";
    const char *field = q->batch ? "/recipients" : "/variables";
    char f[FIELD_MAX];
    if (q->batch) {
        snprintf(f, sizeof(f), "/recipients/%u/variables", rc->index);
        field = f;
    }
    bool ok = false;
    json_t *empty = vars ? NULL : json_object();
    if (md_tmpl_render(q->tmpl, vars ? vars : empty, &subj, &text, &html, &has_text, &has_html, msg,
                       sizeof(msg)) != MD_OK) {
        fail(e, "template_render_failed", field, "the template cannot be rendered: %s", msg);
    } else if (has_crlf(subj.pos, md_buf_len(&subj)) || has_controls(subj.pos, md_buf_len(&subj))) {
        fail(e, "header_injection", field,
             "the rendered subject contains CR, LF or a control character");
    } else if (md_buf_len(&subj) > SUBJECT_MAX) {
        fail(e, "subject_too_long", field, "the rendered subject is over %d bytes", SUBJECT_MAX);
    } else if ((!has_text || md_buf_len(&text) == 0) && (!has_html || md_buf_len(&html) == 0)) {
        fail(e, "missing_content", field, "the template renders an empty message");
    } else {
        size_t total = md_buf_len(&subj) + md_buf_len(&text) + md_buf_len(&html);
        if (total > *budget) {
            fail(e, "batch_too_large", "/recipients", "the rendered batch is over %u bytes",
                 BATCH_RENDER_MAX);
        } else {
            *budget -= total;
            rc->subject = buf_pstr(pool, &subj);
            rc->text = has_text && md_buf_len(&text) ? buf_pstr(pool, &text) : NULL;
            rc->html = has_html && md_buf_len(&html) ? buf_pstr(pool, &html) : NULL;
            ok = true;
        }
    }
    json_decref(empty);
    md_buf_free(&subj);
    md_buf_free(&text);
    md_buf_free(&html);
    return ok;
}

static void
template_got(void *ctx, md_tmpl_t *t, const char *err)
{
    send_t *q = ctx;
    md_http_request_t *r = q->r;
    if (t)
        q->tmpl = t; /* released by send_cleanup */
    if (gone(r))
        return;
    if (err) {
        if (strcmp(err, "not_found") == 0) {
            verr_t e;
            fail(&e, "template_not_found", "/template_id", "no such template");
            send_verr(r, &e);
            return;
        }
        send_store_error(r, err, "template lookup");
        return;
    }
    size_t budget = BATCH_RENDER_MAX;
    verr_t e;
    if (!q->batch) {
        /* One render serves every "to": the variables are the same. */
        if (!render_one(q, &q->rc[0], q->variables, &budget, &e)) {
            send_verr(r, &e);
            return;
        }
        for (size_t i = 1; i < q->nrc; i++) {
            q->rc[i].subject = q->rc[0].subject;
            q->rc[i].text = q->rc[0].text;
            q->rc[i].html = q->rc[0].html;
        }
    } else {
        for (size_t i = 0; i < q->nrc; i++) {
            rcpt_t *rc = &q->rc[i];
            if (rc->rejected)
                continue;
            if (!render_one(q, rc, rc->variables, &budget, &e)) {
                if (strcmp(e.code, "batch_too_large") == 0) {
                    send_verr(r, &e);
                    return;
                }
                rc->rejected = true;
                rc->err = md_palloc(r->pool, sizeof(verr_t));
                *rc->err = e;
                q->nrejected++;
            }
        }
    }
    accept_all(q);
}

/* After validation (and the idempotency lookup): render if needed, then accept. */
static int
proceed(send_t *q)
{
    if (!q->has_template)
        return accept_all(q);
    if (q->batch && q->nrejected == q->nrc)
        return accept_all(q); /* all rejected already: no template needed for the 422 */
    return md_api_queued(q->r, md_templates_get(q->tenant_id, q->template_id, template_got, q));
}

/* Parses and validates the body, then goes on to render and accept. Returns like
 * a handler (the answer may already be sent). */
static int
validate_and_proceed(send_t *q)
{
    if (!load_body(q))
        return MD_OK;
    verr_t e;
    if (!(q->batch ? validate_batch(q, &e) : validate_single(q, &e)))
        return send_verr(q->r, &e);
    return proceed(q);
}

static void
idem_got(void *ctx, const char *err, int found, const unsigned char *hash, int status,
         const char *response)
{
    send_t *q = ctx;
    md_http_request_t *r = q->r;
    if (gone(r))
        return;
    if (err) {
        send_store_error(r, err, "idempotency lookup");
        return;
    }
    if (found) {
        if (memcmp(hash, q->hash, 32) == 0)
            send_replay(r, status, response ? response : "{}");
        else
            send_conflict(r);
        return;
    }
    validate_and_proceed(q);
}

/*
 * With an Idempotency-Key the stored key is looked up before the body is even
 * parsed: a key that was used answers the same (replay) or 409 whatever the
 * new body holds, so a client never gets a 422 for a key it already spent.
 */
static int
send_common(md_http_request_t *r, const md_identity_t *who, bool batch)
{
    send_t *q = md_pcalloc(r->pool, sizeof(*q));
    q->r = r;
    q->batch = batch;
    memcpy(q->tenant_id, who->tenant_id, sizeof(q->tenant_id));
    q->tenant_tracking = who->tracking;
    md_pool_cleanup_add(r->pool, send_cleanup, q);
    if (!md_api_media_type(r, "application/json")) {
        count_rejected("unsupported_media_type", 1);
        md_http_send_error(r, 415, "unsupported_media_type", "the body must be application/json");
        return MD_OK;
    }
    if (!idem_header(q) || !md_api_pg_ready(r))
        return MD_OK;
    if (q->has_idem)
        return md_api_queued(r, md_idempotency_get(q->tenant_id, q->idem_key, idem_got, q));
    return validate_and_proceed(q);
}

static int
send_next(md_http_request_t *r, const md_identity_t *who)
{
    return send_common(r, who, false);
}

static int
batch_next(md_http_request_t *r, const md_identity_t *who)
{
    return send_common(r, who, true);
}

static int
api_send(md_http_request_t *r)
{
    return md_auth_tenant(r, send_next);
}

static int
api_batch(md_http_request_t *r)
{
    return md_auth_tenant(r, batch_next);
}

/* --- reads ------------------------------------------------------------------------------ */

typedef struct read_s {
    md_http_request_t *r;
    const char *what;
} read_t;

static read_t *
read_ctx(md_http_request_t *r, const char *what)
{
    read_t *x = md_pcalloc(r->pool, sizeof(*x));
    x->r = r;
    x->what = what;
    return x;
}

/* Common answer of the reads: 200 obj, 404, 503 or 500. */
static void
read_done(void *ctx, json_t *obj, const char *err)
{
    read_t *x = ctx;
    md_http_request_t *r = x->r;
    if (gone(r)) {
        json_decref(obj);
        return;
    }
    if (err == NULL) {
        md_http_send_json(r, 200, obj);
        return;
    }
    if (strcmp(err, "not_found") == 0) {
        md_http_send_error(r, 404, "not_found", "no such %s", x->what);
    } else if (strcmp(err, "invalid_cursor") == 0) {
        json_t *e =
            json_pack("{s:{s:s,s:s,s:s}}", "error", "code", "invalid_parameter", "message",
                      "must be a next_cursor value from a previous page", "field", "cursor");
        md_http_send_json(r, 422, e);
    } else if (strcmp(err, "not_cancelable") == 0) {
        json_t *st = obj ? json_object_get(obj, "status") : NULL;
        const char *s = json_is_string(st) ? json_string_value(st) : "unknown";
        json_t *e = json_pack("{s:{s:s,s:s,s:s}}", "error", "code", "not_cancelable", "message",
                              "the message can no longer be canceled", "status", s);
        char m[96];
        snprintf(m, sizeof(m), "the message is %s and can no longer be canceled", s);
        json_object_set_new(json_object_get(e, "error"), "message", json_string(m));
        md_http_send_json(r, 409, e);
    } else {
        send_store_error(r, err, "message read");
    }
    json_decref(obj);
}

/* The {id} path parameter as a canonical UUID; answers 404 when malformed (a
 * tenant's route never tells "malformed" from "not yours"). */
static bool
path_id(md_http_request_t *r, char *out, const char *what)
{
    if (md_uuid_parse(md_http_param(r, "id"), out))
        return true;
    md_http_send_error(r, 404, "not_found", "no such %s", what);
    return false;
}

static int
get_next(md_http_request_t *r, const md_identity_t *who)
{
    char id[MD_UUID_STRLEN + 1];
    if (!path_id(r, id, "message") || !md_api_pg_ready(r))
        return MD_OK;
    return md_api_queued(r, md_messages_get(who->tenant_id, id, read_done, read_ctx(r, "message")));
}

static int
api_get(md_http_request_t *r)
{
    return md_auth_tenant(r, get_next);
}

static int
cancel_next(md_http_request_t *r, const md_identity_t *who)
{
    char id[MD_UUID_STRLEN + 1];
    if (!path_id(r, id, "message") || !md_api_pg_ready(r))
        return MD_OK;
    return md_api_queued(r,
                         md_messages_cancel(who->tenant_id, id, read_done, read_ctx(r, "message")));
}

static int
api_cancel(md_http_request_t *r)
{
    return md_auth_tenant(r, cancel_next);
}

static int
batch_get_next(md_http_request_t *r, const md_identity_t *who)
{
    char id[MD_UUID_STRLEN + 1];
    if (!path_id(r, id, "batch") || !md_api_pg_ready(r))
        return MD_OK;
    return md_api_queued(r, md_batches_get(who->tenant_id, id, read_done, read_ctx(r, "batch")));
}

static int
api_batch_get(md_http_request_t *r)
{
    return md_auth_tenant(r, batch_get_next);
}

static const char *const statuses[] = {
    "accepted", "queued",     "scheduled", "sending",    "sent",     "delivered", "deferred",
    "bounced",  "complained", "failed",    "suppressed", "canceled", NULL};

static int
list_next(md_http_request_t *r, const md_identity_t *who)
{
    md_msg_filter_t f = {.limit = LIST_LIMIT_DEFAULT};
    char batch[MD_UUID_STRLEN + 1];
    static const char *const names[] = {"status", "batch_id", "tag", "since",
                                        "cursor", "limit",    NULL};
    md_api_query_t qs;
    md_api_query_init(&qs, r);
    unsigned bit;
    char *val;
    const char *nm;
    int more;
    while ((more = md_api_query_next(&qs, names, &bit, &val)) > 0) {
        nm = qs.name;
        if (bit == 1) {
            bool ok = false;
            for (const char *const *s = statuses; *s && !ok; s++)
                ok = strcmp(val, *s) == 0;
            if (!ok)
                return md_api_bad_param(r, "invalid_parameter", nm, "not a message status");
            f.status = val;
        } else if (bit == 2) {
            md_str_t s = {strlen(val), val};
            if (!md_uuid_parse(s, batch))
                return md_api_bad_param(r, "invalid_parameter", nm, "must be a batch id");
            f.batch_id = batch;
        } else if (bit == 4) {
            if (!tag_ok(val, strlen(val)))
                return md_api_bad_param(r, "invalid_parameter", nm,
                                        "a tag is 1 to 64 characters of [A-Za-z0-9_.:-]");
            f.tag = val;
        } else if (bit == 8) {
            if (!md_api_parse_rfc3339(val, strlen(val), &f.since) || f.since <= 0)
                return md_api_bad_param(r, "invalid_parameter", nm,
                                        "must be an RFC 3339 date-time (encode '+' as %2B)");
        } else if (bit == 16) {
            size_t n = strlen(val);
            bool ok = n >= 1 && n <= 200;
            for (size_t i = 0; ok && i < n; i++)
                ok = (unsigned char)val[i] > 0x20 && (unsigned char)val[i] < 0x7f;
            if (!ok)
                return md_api_bad_param(r, "invalid_parameter", nm,
                                        "must be a next_cursor value from a previous page");
            f.cursor = val;
        } else {
            unsigned v;
            size_t n = strlen(val);
            if (n < 1 || n > 3 || !md_api_digits(val, n, &v) || v < 1 || v > LIST_LIMIT_MAX)
                return md_api_bad_param(r, "invalid_parameter", nm,
                                        "must be an integer from 1 to 100");
            f.limit = (int)v;
        }
    }
    if (more < 0)
        return MD_OK;
    if (!md_api_pg_ready(r))
        return MD_OK;
    return md_api_queued(r,
                         md_messages_list(who->tenant_id, &f, read_done, read_ctx(r, "message")));
}

static int
api_list(md_http_request_t *r)
{
    return md_auth_tenant(r, list_next);
}

void
md_api_messages_register(md_router_t *rt, const md_conf_t *conf)
{
    md_unused(conf);
    md_metrics_messages_reasons(reject_codes, (unsigned)(md_nelems(reject_codes) - 1));
    md_router_add(rt, MD_M_POST, "/v1/messages", api_send);
    md_router_add(rt, MD_M_GET, "/v1/messages", api_list);
    md_router_add(rt, MD_M_POST, "/v1/messages/batch", api_batch);
    md_router_add(rt, MD_M_GET, "/v1/messages/{id}", api_get);
    md_router_add(rt, MD_M_POST, "/v1/messages/{id}/cancel", api_cancel);
    md_router_add(rt, MD_M_GET, "/v1/batches/{id}", api_batch_get);
}
