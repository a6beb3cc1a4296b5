/*
 * Suppressions API (tenant key, see md_auth.h; issue 7):
 *
 *   POST   /v1/suppressions            {"address","reason"?,"expires_at"?}: 201 created or
 *                                      200 replaced, the suppression;
 *                                      {"suppressions":[...]} (1..1000): 200 {data, rejected,
 *                                      created, updated}
 *   GET    /v1/suppressions            200 {data, next_cursor}; ?reason= &cursor= &limit=
 *                                      (1..1000, default 100), in address order
 *   GET    /v1/suppressions/stats      200 {total, by_reason, expiring_soon, expiring_soon_days}
 *   POST   /v1/suppressions/import     text/csv: 200 {imported, updated, rejected,
 *                                      rejected_count, lines}
 *   GET    /v1/suppressions/{address}  200 the suppression, 404 not_found
 *   DELETE /v1/suppressions/{address}  204, 404 not_found
 *
 * A suppression is {address, reason, source, detail, created_at, expires_at}.
 * reason is hard_bounce, soft_bounce, complaint, unsubscribe or manual (the
 * default); only manual entries may be given an expires_at (RFC 3339, in the
 * future) here. Posting an address that is already suppressed replaces its
 * entry. An entry past its expires_at is not in effect: it is not shown, and a
 * scheduled cleanup deletes it.
 *
 * Addresses (body, CSV, path) are bare addr-specs, normalised as
 * md_address_normalize() does: the domain compared case-insensitively (and
 * IDN in A-label form), the local part as given (Foo@Example.COM is
 * Foo@example.com, not foo@example.com). The path's {address} is
 * percent-decoded first. A bad address is 422 invalid_address (field
 * "address" for the path).
 *
 * Per-item errors (the many form) are {index, code, field, message} in
 * "rejected", like the batch send's; the others are stored. When none is
 * left: 422 all_items_rejected with the list. A CSV line's error is {line,
 * code, field, message}; only the first 1000 are listed, rejected_count has
 * them all.
 *
 * CSV: UTF-8, one entry per line, columns address[,reason][,expires_at]; an
 * optional header line naming the columns (address, reason, expires_at, in any
 * order); RFC 4180 quoting ("..." with "" for a quote); blank lines skipped.
 * At most MAX_IMPORT_LINES lines of data and the body limit. A later line
 * with an address seen before is rejected (duplicate_address) and the first
 * one is kept. The whole import is one transaction.
 */
#include "md_router.h"
#include "md_address.h"
#include "md_api_util.h"
#include "md_app.h"
#include "md_auth.h"
#include "md_conf.h"
#include "md_log.h"
#include "md_pg.h"
#include "md_suppressions.h"
#include "md_tenants.h"

#include <ev.h>
#include <llhttp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

#define MAX_ITEMS        1000
#define MAX_IMPORT_LINES 100000
#define MAX_LISTED       1000 /* rejected lines listed in an import's answer */
#define PAGE_DEFAULT     100
#define CURSOR_MAX       400

void md_api_suppressions_register(md_router_t *rt, const md_conf_t *conf);

/* One refused item or line. */
typedef struct item_err_s {
    const char *code;
    const char *field;
    char msg[200];
} item_err_t;

static bool item_fail(item_err_t *e, const char *code, const char *field, const char *fmt, ...)
    md_printf_like(4, 5);

static bool
item_fail(item_err_t *e, const char *code, const char *field, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
    va_end(ap);
    e->code = code;
    e->field = field;
    return false;
}

/* --- input ---------------------------------------------------------------------------------- */

/* A bare address into its suppression key (from pool). */
static bool
norm_address(md_pool_t *pool, const char *s, size_t n, const char *field, const char **key,
             item_err_t *e)
{
    md_address_t a;
    md_address_error_t ae;
    if (n == 0)
        return item_fail(e, "required", field, "an address is required");
    if (md_address_parse(pool, s, n, &a, &ae) != MD_OK)
        return item_fail(e, "invalid_address", field, "%s: %s", ae.name, ae.message);
    if (a.angle || a.display.len)
        return item_fail(e, "invalid_address", field, "must be a bare address (local@domain)");
    char buf[MD_ADDRESS_MAX + 1];
    size_t len = md_address_normalize(&a, buf, sizeof(buf));
    if (len >= sizeof(buf))
        return item_fail(e, "invalid_address", field, "the address is too long");
    *key = md_pstrndup(pool, buf, len);
    return true;
}

/* reason (NULL or empty: manual) and expires_at (NULL or empty: never) of one item. */
static bool
check_reason_expiry(const char *reason, size_t rlen, const char *exp, size_t elen, double now,
                    const char *rfield, const char *efield, md_supp_item_t *it, item_err_t *e)
{
    if (reason == NULL || rlen == 0) {
        it->reason = "manual";
    } else if (!md_suppression_reason_ok(reason, rlen)) {
        return item_fail(e, "invalid_reason", rfield,
                         "must be hard_bounce, soft_bounce, complaint, unsubscribe or manual");
    } else {
        static const char *const rs[] = {"hard_bounce", "soft_bounce", "complaint", "unsubscribe",
                                         "manual"};
        for (size_t i = 0; i < md_nelems(rs); i++)
            if (strlen(rs[i]) == rlen && memcmp(rs[i], reason, rlen) == 0)
                it->reason = rs[i];
    }
    it->expires_at = 0;
    if (exp && elen) {
        double t;
        if (!md_api_parse_rfc3339(exp, elen, &t))
            return item_fail(e, "invalid_expires_at", efield,
                             "must be an RFC 3339 date-time such as 2030-01-02T03:04:05Z");
        if (strcmp(it->reason, "manual") != 0)
            return item_fail(e, "expires_at_not_allowed", efield,
                             "only manual suppressions may expire");
        if (t <= now)
            return item_fail(e, "invalid_expires_at", efield, "must be in the future");
        it->expires_at = t;
    }
    return true;
}

/* --- a set of keys, for duplicates ------------------------------------------------------------ */

typedef struct keyset_s {
    size_t cap;
    const char **key;
    int *val;
} keyset_t;

static uint64_t
key_hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static void
keyset_init(md_pool_t *pool, keyset_t *ks, size_t n)
{
    ks->cap = 16;
    while (ks->cap < n * 2)
        ks->cap <<= 1;
    ks->key = md_pcalloc(pool, ks->cap * sizeof(*ks->key));
    ks->val = md_pcalloc(pool, ks->cap * sizeof(*ks->val));
}

/* Adds key with val; when it is there already returns its val and adds nothing, else -1. */
static int
keyset_add(keyset_t *ks, const char *key, int val)
{
    size_t i = (size_t)key_hash(key) & (ks->cap - 1);
    while (ks->key[i]) {
        if (strcmp(ks->key[i], key) == 0)
            return ks->val[i];
        i = (i + 1) & (ks->cap - 1);
    }
    ks->key[i] = key;
    ks->val[i] = val;
    return -1;
}

/* --- request state and common answers -----------------------------------------------------------
 */

typedef struct supp_req_s {
    md_http_request_t *r;
    char tenant_id[MD_UUID_STRLEN + 1];
    int limit;
    bool many;          /* POST with "suppressions" */
    json_t *rejected;   /* items or lines refused (owned) */
    size_t nrejected;   /* all of them (an import lists the first MAX_LISTED) */
    size_t nlines;      /* import: lines of data */
    md_supp_item_t *it; /* to store */
    size_t n;
} supp_req_t;

static void
req_cleanup(void *data)
{
    supp_req_t *q = data;
    json_decref(q->rejected);
}

static supp_req_t *
req_ctx(md_http_request_t *r, const md_identity_t *who)
{
    supp_req_t *q = md_pcalloc(r->pool, sizeof(*q));
    q->r = r;
    memcpy(q->tenant_id, who->tenant_id, sizeof(q->tenant_id));
    md_pool_cleanup_add(r->pool, req_cleanup, q);
    return q;
}

static int
send_item_error(md_http_request_t *r, const item_err_t *e)
{
    json_t *j = json_pack("{s:{s:s,s:s,s:s}}", "error", "code", e->code, "message", e->msg, "field",
                          e->field);
    md_http_send_json(r, 422, j);
    return MD_OK;
}

static void
send_not_found(md_http_request_t *r)
{
    md_http_send_error(r, 404, "not_found", "no such suppression");
}

/* --- POST /v1/suppressions ------------------------------------------------------------------ */

/* One item object; on success fills it (address normalised, from pool). */
static bool
parse_item(md_pool_t *pool, json_t *o, const char *base, double now, md_supp_item_t *it,
           item_err_t *e)
{
    static const char *const known[] = {"address", "reason", "expires_at", NULL};
    char *fa = md_palloc(pool, 64), *fr = md_palloc(pool, 64), *fe = md_palloc(pool, 64);
    snprintf(fa, 64, "%s/address", base);
    snprintf(fr, 64, "%s/reason", base);
    snprintf(fe, 64, "%s/expires_at", base);
    if (!json_is_object(o))
        return item_fail(e, "invalid_type", *base ? base : "",
                         "a suppression is an object {address, reason, expires_at}");
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v)
    {
        bool ok = false;
        for (const char *const *a = known; *a && !ok; a++)
            ok = strcmp(*a, k) == 0;
        if (!ok) {
            char *f = md_palloc(pool, 64);
            snprintf(f, 64, "%s/%.40s", base, k);
            return item_fail(e, "unknown_field", f, "unknown field");
        }
    }
    json_t *addr = json_object_get(o, "address"), *reason = json_object_get(o, "reason"),
           *exp = json_object_get(o, "expires_at");
    if (addr == NULL || json_is_null(addr))
        return item_fail(e, "required", fa, "is required");
    if (!json_is_string(addr))
        return item_fail(e, "invalid_type", fa, "must be a string");
    if (!norm_address(pool, json_string_value(addr), json_string_length(addr), fa, &it->address, e))
        return false;
    if (reason && !json_is_null(reason) && !json_is_string(reason))
        return item_fail(e, "invalid_type", fr, "must be a string");
    if (exp && !json_is_null(exp) && !json_is_string(exp))
        return item_fail(e, "invalid_type", fe, "must be an RFC 3339 date-time string or null");
    const char *rs = json_is_string(reason) ? json_string_value(reason) : NULL;
    const char *es = json_is_string(exp) ? json_string_value(exp) : NULL;
    if (rs && json_string_length(reason) == 0)
        return item_fail(e, "invalid_reason", fr,
                         "must be hard_bounce, soft_bounce, complaint, unsubscribe or manual");
    if (es && json_string_length(exp) == 0)
        return item_fail(e, "invalid_expires_at", fe, "must be an RFC 3339 date-time");
    return check_reason_expiry(rs, rs ? json_string_length(reason) : 0, es,
                               es ? json_string_length(exp) : 0, now, fr, fe, it, e);
}

static void
posted_cb(void *ctx, const md_pg_result_t *res)
{
    supp_req_t *q = ctx;
    md_http_request_t *r = q->r;
    if (!md_api_pg_ok(r, res, "suppression"))
        return;
    /* Rows come back per chunk, in no particular order: place them by index. */
    json_t **objs = md_pcalloc(r->pool, sizeof(*objs) * (size_t)(MAX_ITEMS + 1));
    int created = 0, updated = 0;
    for (size_t c = 0; c < res->n; c++) {
        const PGresult *pr = res->results[c];
        for (int i = 0; pr && i < PQntuples(pr); i++) {
            int line = atoi(PQgetvalue(pr, i, 0));
            bool ins = PQgetvalue(pr, i, 1)[0] == 't';
            created += ins;
            updated += !ins;
            if (line >= 0 && line <= MAX_ITEMS && objs[line] == NULL)
                objs[line] = md_tenants_row_json(pr, i, 2);
        }
    }
    if (!q->many) {
        json_t *o = objs[0];
        if (o == NULL) {
            md_http_send_error(r, 500, "internal_error", "internal error");
            return;
        }
        md_http_send_json(r, created ? 201 : 200, o);
        return;
    }
    json_t *data = json_array();
    for (int i = 0; i <= MAX_ITEMS; i++)
        if (objs[i])
            json_array_append_new(data, objs[i]);
    json_t *out = json_pack("{s:o,s:O,s:i,s:i}", "data", data, "rejected", q->rejected, "created",
                            created, "updated", updated);
    md_http_send_json(r, 200, out);
}

static int
post_next(md_http_request_t *r, const md_identity_t *who)
{
    if (!md_api_pg_ready(r))
        return MD_OK;
    json_t *b = md_api_body_object(r, false);
    if (b == NULL)
        return MD_OK;
    supp_req_t *q = req_ctx(r, who);
    double now = ev_now(r->loop);
    item_err_t e;
    json_t *list = json_object_get(b, "suppressions");
    if (list == NULL) {
        /* one */
        q->it = md_pcalloc(r->pool, sizeof(*q->it));
        if (!parse_item(r->pool, b, "", now, q->it, &e))
            return send_item_error(r, &e);
        q->n = 1;
        return md_api_queued(
            r, md_suppressions_upsert(q->tenant_id, q->it, 1, "api", true, posted_cb, q));
    }
    /* many */
    static const char *const known[] = {"suppressions", NULL};
    if (!md_api_check_known(r, b, known))
        return MD_OK;
    if (!json_is_array(list)) {
        item_fail(&e, "invalid_type", "/suppressions", "must be an array");
        return send_item_error(r, &e);
    }
    size_t n = json_array_size(list);
    if (n == 0 || n > MAX_ITEMS) {
        item_fail(&e, n ? "too_many_items" : "required", "/suppressions",
                  "1 to %d suppressions per request", MAX_ITEMS);
        return send_item_error(r, &e);
    }
    q->many = true;
    q->it = md_pcalloc(r->pool, sizeof(*q->it) * n);
    q->rejected = json_array();
    keyset_t ks;
    keyset_init(r->pool, &ks, n);
    for (size_t i = 0; i < n; i++) {
        char base[32];
        snprintf(base, sizeof(base), "/suppressions/%zu", i);
        md_supp_item_t it = {.line = (int)i};
        bool ok = parse_item(r->pool, json_array_get(list, i), base, now, &it, &e);
        int first = ok ? keyset_add(&ks, it.address, (int)i) : -1;
        if (ok && first >= 0) {
            char *f = md_palloc(r->pool, 48);
            snprintf(f, 48, "%s/address", base);
            ok = item_fail(&e, "duplicate_address", f, "the same address as item %d", first);
        }
        if (!ok) {
            json_array_append_new(q->rejected,
                                  json_pack("{s:i,s:s,s:s,s:s}", "index", (int)i, "code", e.code,
                                            "field", e.field, "message", e.msg));
            q->nrejected++;
            continue;
        }
        q->it[q->n++] = it;
    }
    if (q->n == 0) {
        json_t *j = json_pack("{s:{s:s,s:s,s:s,s:O}}", "error", "code", "all_items_rejected",
                              "message", "every suppression was rejected; nothing was stored",
                              "field", "/suppressions", "rejected", q->rejected);
        md_http_send_json(r, 422, j);
        return MD_OK;
    }
    return md_api_queued(
        r, md_suppressions_upsert(q->tenant_id, q->it, q->n, "api", true, posted_cb, q));
}

/* --- POST /v1/suppressions/import --------------------------------------------------------------
 */

#define CSV_MAX_FIELDS 8

typedef struct csv_field_s {
    const char *s;
    size_t n;
} csv_field_t;

/*
 * Reads one line at *p as a record (RFC 4180 quoting: quoted fields may hold
 * commas and quotes as ""; not line breaks, which no address has, so an
 * unclosed quote costs one line, not the rest of the file). Unquoted fields
 * are trimmed of spaces and tabs; a quoted field's text is unescaped into
 * pool. *nf gets the fields (more than CSV_MAX_FIELDS: CSV_MAX_FIELDS + 1).
 * Returns false on a malformed quote (the line is skipped).
 */
static bool
csv_record(md_pool_t *pool, const char **p, const char *end, csv_field_t *f, size_t *nf)
{
    const char *s = *p;
    bool ok = true;
    *nf = 0;
    for (;;) {
        while (s < end && (*s == ' ' || *s == '\t'))
            s++;
        csv_field_t fld = {s, 0};
        if (s < end && *s == '"') {
            s++;
            md_buf_t b;
            md_buf_init(&b);
            for (;;) {
                if (s >= end || *s == '\n' || *s == '\r') {
                    ok = false;
                    break;
                }
                if (*s == '"') {
                    if (s + 1 < end && s[1] == '"') {
                        md_buf_append(&b, "\"", 1);
                        s += 2;
                        continue;
                    }
                    s++;
                    break;
                }
                md_buf_append(&b, s, 1);
                s++;
            }
            fld.s = md_pstrndup(pool, b.pos ? b.pos : "", md_buf_len(&b));
            fld.n = md_buf_len(&b);
            md_buf_free(&b);
            while (s < end && (*s == ' ' || *s == '\t'))
                s++;
            if (s < end && *s != ',' && *s != '\n' && *s != '\r')
                ok = false; /* text after the closing quote */
        } else {
            while (s < end && *s != ',' && *s != '\n' && *s != '\r' && *s != '"')
                s++;
            if (s < end && *s == '"')
                ok = false; /* a quote inside an unquoted field */
            fld.n = (size_t)(s - fld.s);
            while (fld.n && (fld.s[fld.n - 1] == ' ' || fld.s[fld.n - 1] == '\t'))
                fld.n--;
        }
        if (*nf < CSV_MAX_FIELDS)
            f[*nf] = fld;
        if (*nf <= CSV_MAX_FIELDS)
            (*nf)++;
        if (!ok) {
            while (s < end && *s != '\n')
                s++;
        }
        if (s < end && *s == ',' && ok) {
            s++;
            continue;
        }
        break;
    }
    if (s < end && *s == '\r')
        s++;
    if (s < end && *s == '\n')
        s++;
    *p = s;
    return ok;
}

enum { COL_ADDRESS, COL_REASON, COL_EXPIRES, NCOLS };

static void
import_reject(supp_req_t *q, int line, const item_err_t *e)
{
    q->nrejected++;
    if (json_array_size(q->rejected) < MAX_LISTED)
        json_array_append_new(q->rejected,
                              json_pack("{s:i,s:s,s:s,s:s}", "line", line, "code", e->code, "field",
                                        e->field, "message", e->msg));
}

static void
imported_cb(void *ctx, const md_pg_result_t *res)
{
    supp_req_t *q = ctx;
    md_http_request_t *r = q->r;
    if (!md_api_pg_ok(r, res, "suppression"))
        return;
    long created = 0, updated = 0;
    for (size_t c = 0; c < res->n; c++) {
        const PGresult *pr = res->results[c];
        for (int i = 0; pr && i < PQntuples(pr); i++) {
            if (PQgetvalue(pr, i, 1)[0] == 't')
                created++;
            else
                updated++;
        }
    }
    md_http_send_json(r, 200,
                      json_pack("{s:I,s:I,s:O,s:I,s:I}", "imported", (json_int_t)created, "updated",
                                (json_int_t)updated, "rejected", q->rejected, "rejected_count",
                                (json_int_t)q->nrejected, "lines", (json_int_t)q->nlines));
}

static int
import_next(md_http_request_t *r, const md_identity_t *who)
{
    if (!md_api_media_type(r, "text/csv")) {
        md_http_send_error(r, 415, "unsupported_media_type", "the body must be text/csv");
        return MD_OK;
    }
    if (!md_api_pg_ready(r))
        return MD_OK;
    supp_req_t *q = req_ctx(r, who);
    q->rejected = json_array();
    const char *p = r->body.pos, *end = p + md_buf_len(&r->body);
    if (p && end - p >= 3 && memcmp(p, "\xEF\xBB\xBF", 3) == 0)
        p += 3; /* a spreadsheet's byte order mark */
    double now = ev_now(r->loop);
    int col[NCOLS] = {0, 1, 2}; /* field index of each column (-1: absent) */
    size_t ncols = NCOLS;
    size_t cap = 1024, approx = 0;
    for (const char *s = p; s && s < end; s++)
        approx += *s == '\n';
    cap = md_min(approx + 1, (size_t)MAX_IMPORT_LINES);
    q->it = md_pcalloc(r->pool, sizeof(*q->it) * (cap ? cap : 1));
    keyset_t ks;
    keyset_init(r->pool, &ks, cap);
    int line = 1;
    bool first = true;
    static const char *const fields[NCOLS] = {"address", "reason", "expires_at"};
    while (p && p < end) {
        csv_field_t f[CSV_MAX_FIELDS];
        size_t nf;
        int at = line++;
        bool ok = csv_record(r->pool, &p, end, f, &nf);
        if (ok && nf == 1 && f[0].n == 0)
            continue; /* a blank line */
        if (first && ok && nf >= 1 && f[0].n == 7 && strncasecmp(f[0].s, "address", 7) == 0) {
            /* the header: names the columns */
            first = false;
            for (int c = 0; c < NCOLS; c++)
                col[c] = -1;
            bool bad = nf > NCOLS;
            for (size_t i = 0; i < nf && !bad; i++) {
                int c = -1;
                for (int k = 0; k < NCOLS; k++)
                    if (f[i].n == strlen(fields[k]) && strncasecmp(f[i].s, fields[k], f[i].n) == 0)
                        c = k;
                if (c < 0 || col[c] >= 0)
                    bad = true;
                else
                    col[c] = (int)i;
            }
            if (bad) {
                md_http_send_error(r, 422, "invalid_csv_header",
                                   "the header line names the columns address, reason and "
                                   "expires_at, each at most once");
                return MD_OK;
            }
            ncols = nf;
            continue;
        }
        first = false;
        q->nlines++;
        if (q->nlines > MAX_IMPORT_LINES) {
            md_http_send_error(r, 413, "too_many_lines", "an import is at most %d lines",
                               MAX_IMPORT_LINES);
            return MD_OK;
        }
        item_err_t e;
        if (!ok) {
            item_fail(&e, "invalid_csv", "", "a quoted field is not closed or has text after it");
            import_reject(q, at, &e);
            continue;
        }
        if (nf > ncols) {
            item_fail(&e, "too_many_columns", "",
                      "at most %zu columns: address, reason, expires_at", ncols);
            import_reject(q, at, &e);
            continue;
        }
        md_supp_item_t it = {.line = at};
        const csv_field_t *fa =
            col[COL_ADDRESS] >= 0 && (size_t)col[COL_ADDRESS] < nf ? &f[col[COL_ADDRESS]] : NULL;
        const csv_field_t *fr =
            col[COL_REASON] >= 0 && (size_t)col[COL_REASON] < nf ? &f[col[COL_REASON]] : NULL;
        const csv_field_t *fe =
            col[COL_EXPIRES] >= 0 && (size_t)col[COL_EXPIRES] < nf ? &f[col[COL_EXPIRES]] : NULL;
        if (!norm_address(r->pool, fa ? fa->s : "", fa ? fa->n : 0, "address", &it.address, &e) ||
            !check_reason_expiry(fr ? fr->s : NULL, fr ? fr->n : 0, fe ? fe->s : NULL,
                                 fe ? fe->n : 0, now, "reason", "expires_at", &it, &e)) {
            import_reject(q, at, &e);
            continue;
        }
        int prev = keyset_add(&ks, it.address, at);
        if (prev >= 0) {
            item_fail(&e, "duplicate_address", "address", "the same address as line %d", prev);
            import_reject(q, at, &e);
            continue;
        }
        if (q->n >= cap) { /* cannot happen: cap counts every line */
            md_http_send_error(r, 500, "internal_error", "internal error");
            return MD_OK;
        }
        q->it[q->n++] = it;
    }
    if (q->nlines == 0) {
        md_http_send_error(r, 422, "empty_import", "the CSV has no lines of data");
        return MD_OK;
    }
    if (q->n == 0) {
        md_pg_result_t none = {.n = 0, .failed = -1};
        imported_cb(q, &none);
        return MD_OK;
    }
    return md_api_queued(
        r, md_suppressions_upsert(q->tenant_id, q->it, q->n, "import", false, imported_cb, q));
}

/* --- reads and delete ------------------------------------------------------------------------ */

/* The {address} path parameter, percent-decoded and normalised; answers 422
 * and returns NULL when it is not an address. */
static const char *
path_address(md_http_request_t *r)
{
    md_str_t raw = md_http_param(r, "address");
    item_err_t e;
    const char *key = NULL;
    char *dec = md_api_query_decode(r->pool, raw.data, raw.len);
    if (dec == NULL) {
        item_fail(&e, "invalid_address", "address", "bad percent-encoding or a control character");
        send_item_error(r, &e);
        return NULL;
    }
    if (!norm_address(r->pool, dec, strlen(dec), "address", &key, &e)) {
        send_item_error(r, &e);
        return NULL;
    }
    return key;
}

static void
got_cb(void *ctx, const md_pg_result_t *res)
{
    supp_req_t *q = ctx;
    if (!md_api_pg_ok(q->r, res, "suppression"))
        return;
    json_t *o = PQntuples(res->res) == 1 ? md_tenants_row_json(res->res, 0, 0) : NULL;
    if (o == NULL) {
        send_not_found(q->r);
        return;
    }
    md_http_send_json(q->r, 200, o);
}

static int
get_next(md_http_request_t *r, const md_identity_t *who)
{
    const char *key = path_address(r);
    if (key == NULL || !md_api_pg_ready(r))
        return MD_OK;
    supp_req_t *q = req_ctx(r, who);
    return md_api_queued(r, md_suppressions_get(q->tenant_id, key, got_cb, q));
}

static void
deleted_cb(void *ctx, const md_pg_result_t *res)
{
    supp_req_t *q = ctx;
    if (!md_api_pg_ok(q->r, res, "suppression"))
        return;
    if (PQntuples(res->res) == 1 && PQgetvalue(res->res, 0, 0)[0] == 't')
        md_http_send(q->r, 204, NULL, NULL, 0);
    else
        send_not_found(q->r); /* absent, or expired already */
}

static int
delete_next(md_http_request_t *r, const md_identity_t *who)
{
    const char *key = path_address(r);
    if (key == NULL || !md_api_pg_ready(r))
        return MD_OK;
    supp_req_t *q = req_ctx(r, who);
    return md_api_queued(r, md_suppressions_delete(q->tenant_id, key, deleted_cb, q));
}

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* The cursor of a page: the last address, base64url without padding. */
static json_t *
cursor_encode(const char *s)
{
    size_t n = strlen(s), o = 0;
    char out[CURSOR_MAX + 4];
    for (size_t i = 0; i < n && o + 4 < sizeof(out); i += 3) {
        uint32_t v = (uint32_t)(unsigned char)s[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)(unsigned char)s[i + 1] << 8;
        if (i + 2 < n)
            v |= (unsigned char)s[i + 2];
        out[o++] = b64url[(v >> 18) & 63];
        out[o++] = b64url[(v >> 12) & 63];
        if (i + 1 < n)
            out[o++] = b64url[(v >> 6) & 63];
        if (i + 2 < n)
            out[o++] = b64url[v & 63];
    }
    out[o] = '\0';
    return json_string(out);
}

/* The address of a cursor into pool; NULL when it is not one of ours. */
static const char *
cursor_decode(md_pool_t *pool, const char *c)
{
    size_t n = strlen(c);
    if (n == 0 || n > CURSOR_MAX || n % 4 == 1)
        return NULL;
    char *out = md_palloc(pool, n);
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        const char *p = strchr(b64url, c[i]);
        if (p == NULL || c[i] == '\0')
            return NULL;
        acc = acc << 6 | (uint32_t)(p - b64url);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0)
        return NULL;
    out[o] = '\0';
    /* an address is UTF-8 (PostgreSQL refuses anything else as text: a made-up
     * cursor was a 500 until t/75 sent one) */
    if (memchr(out, '\0', o) || o == 0 || o > MD_ADDRESS_MAX || !md_utf8_valid(out, o))
        return NULL;
    return out;
}

static void
listed_cb(void *ctx, const md_pg_result_t *res)
{
    supp_req_t *q = ctx;
    if (!md_api_pg_ok(q->r, res, "suppression"))
        return;
    json_t *data = json_array();
    int n = PQntuples(res->res), shown = 0;
    const char *last = NULL;
    for (int i = 0; i < n && shown < q->limit; i++) {
        json_t *row = md_tenants_row_json(res->res, i, 0);
        if (row == NULL)
            continue;
        json_array_append_new(data, row);
        last = PQgetvalue(res->res, i, 1);
        shown++;
    }
    json_t *next = n > q->limit && last ? cursor_encode(last) : json_null();
    md_http_send_json(q->r, 200, json_pack("{s:o,s:o}", "data", data, "next_cursor", next));
}

static int
list_next(md_http_request_t *r, const md_identity_t *who)
{
    static const char *const names[] = {"reason", "cursor", "limit", NULL};
    const char *reason = NULL, *after = NULL;
    int limit = PAGE_DEFAULT;
    md_api_query_t qs;
    md_api_query_init(&qs, r);
    unsigned bit;
    char *val;
    int more;
    while ((more = md_api_query_next(&qs, names, &bit, &val)) > 0) {
        if (bit == 1) {
            if (!md_suppression_reason_ok(val, strlen(val)))
                return md_api_bad_param(
                    r, "invalid_parameter", qs.name,
                    "must be hard_bounce, soft_bounce, complaint, unsubscribe or manual");
            reason = val;
        } else if (bit == 2) {
            if ((after = cursor_decode(r->pool, val)) == NULL)
                return md_api_bad_param(r, "invalid_parameter", qs.name,
                                        "must be a next_cursor value from a previous page");
        } else {
            unsigned v;
            size_t n = strlen(val);
            if (n < 1 || n > 4 || !md_api_digits(val, n, &v) || v < 1 ||
                v > MD_SUPPRESSIONS_PAGE_MAX)
                return md_api_bad_param(r, "invalid_parameter", qs.name,
                                        "must be an integer from 1 to 1000");
            limit = (int)v;
        }
    }
    if (more < 0 || !md_api_pg_ready(r))
        return MD_OK;
    supp_req_t *q = req_ctx(r, who);
    q->limit = limit;
    return md_api_queued(
        r, md_suppressions_list(q->tenant_id, reason, after, limit + 1, listed_cb, q));
}

static void
stats_cb(void *ctx, const md_pg_result_t *res)
{
    supp_req_t *q = ctx;
    if (!md_api_pg_ok(q->r, res, "suppression"))
        return;
    json_t *o = PQntuples(res->res) == 1 ? md_tenants_row_json(res->res, 0, 0) : NULL;
    if (o == NULL) {
        md_http_send_error(q->r, 500, "internal_error", "internal error");
        return;
    }
    md_http_send_json(q->r, 200, o);
}

static int
stats_next(md_http_request_t *r, const md_identity_t *who)
{
    if (!md_api_pg_ready(r))
        return MD_OK;
    supp_req_t *q = req_ctx(r, who);
    return md_api_queued(r, md_suppressions_stats(q->tenant_id, stats_cb, q));
}

/* --- routes ---------------------------------------------------------------------------------- */

static int
api_post(md_http_request_t *r)
{
    return md_auth_tenant(r, post_next);
}

static int
api_list(md_http_request_t *r)
{
    return md_auth_tenant(r, list_next);
}

static int
api_import(md_http_request_t *r)
{
    return md_auth_tenant(r, import_next);
}

static int
api_stats(md_http_request_t *r)
{
    return md_auth_tenant(r, stats_next);
}

static int
api_one(md_http_request_t *r)
{
    if (r->method == HTTP_DELETE)
        return md_auth_tenant(r, delete_next);
    return md_auth_tenant(r, get_next);
}

void
md_api_suppressions_register(md_router_t *rt, const md_conf_t *conf)
{
    md_unused(conf);
    md_router_add(rt, MD_M_POST, "/v1/suppressions", api_post);
    md_router_add(rt, MD_M_GET, "/v1/suppressions", api_list);
    md_router_add(rt, MD_M_GET, "/v1/suppressions/stats", api_stats);
    md_router_add(rt, MD_M_POST, "/v1/suppressions/import", api_import);
    md_router_add(rt, MD_M_GET | MD_M_DELETE, "/v1/suppressions/{address}", api_one);
}
