/*
 * Suppression lists in PostgreSQL (see md_suppressions.h): the API's
 * statements and the scheduled cleanup of expired entries.
 *
 * Module state lives in the file-static `sp` (one md_app per worker); the
 * cleanup's callback finds it there (NULL once destroyed).
 */
#include "md_suppressions.h"
#include "md_app.h"
#include "md_buf.h"
#include "md_id.h"
#include "md_log.h"
#include "md_periodic.h"
#include "md_tenants.h"

#include <ev.h>
#include <stdio.h>
#include <stdlib.h>

#define CLEANUP_FIRST 1.0 /* seconds after start: a fresh worker tidies up soon */
#define LIMIT_STR_(n) #n
#define LIMIT_STR(n)  LIMIT_STR_(n)

/* RFC 3339 in UTC with microseconds, independent of the session's TimeZone. */
#define TS(col) "to_char((" col ") AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"

#define SUPP_JSON                                                                                  \
    "json_build_object('address', s.address, 'reason', s.reason, 'source', s.source,"              \
    " 'detail', s.detail, 'created_at', " TS("s.created_at") ", 'expires_at', " TS(                \
        "s.expires_at") ")::text"

/* An entry is in effect until its expires_at. */
#define LIVE "(s.expires_at IS NULL OR s.expires_at > now())"

/* SQL reads better laid out by hand. */
/* clang-format off */

/*
 * The upsert of one chunk: $1 tenant, $2 addresses, $3 reasons, $4 expiry (unix
 * time, NULL never), $5 lines, $6 source. Replacing an entry that had expired
 * (not yet cleaned up) starts it anew, created_at included. Returns (line,
 * inserted, JSON or NULL); xmax is 0 on a row this statement inserted.
 */
#define UPSERT_SQL(json)                                                                           \
    "WITH src AS (SELECT * FROM unnest($2::text[], $3::text[], $4::float8[], $5::int[])"           \
    "  AS u (address, reason, expires, line))"                                                     \
    " INSERT INTO suppressions AS s (tenant_id, address, reason, expires_at, source)"              \
    " SELECT $1::uuid, address, reason, to_timestamp(expires), $6::text FROM src"                  \
    " ON CONFLICT (tenant_id, address) DO UPDATE SET reason = EXCLUDED.reason,"                    \
    "  expires_at = EXCLUDED.expires_at, source = EXCLUDED.source, detail = NULL,"                 \
    "  created_at = CASE WHEN " LIVE " THEN s.created_at ELSE now() END"                           \
    " RETURNING (SELECT line FROM src WHERE src.address = s.address LIMIT 1),"                     \
    "  s.xmax = 0, " json

typedef struct md_supp_stmt_s {
    const char *name;
    int nparams;
    const char *sql;
} md_supp_stmt_t;

static const md_supp_stmt_t stmts[] = {
    {"supp_upsert_json", 6, UPSERT_SQL(SUPP_JSON)},
    {"supp_upsert", 6, UPSERT_SQL("NULL::text")},
    {"supp_get", 2,
     "SELECT " SUPP_JSON " FROM suppressions s"
     " WHERE s.tenant_id = $1::uuid AND s.address = $2::text AND " LIVE},
    /* One statement for both listings: the reason filter is optional. The planner
     * picks the (tenant_id, reason, address) index when the reason is given. */
    {"supp_list", 4,
     "SELECT " SUPP_JSON ", s.address FROM suppressions s"
     " WHERE s.tenant_id = $1::uuid AND ($2::text IS NULL OR s.reason = $2::text)"
     " AND s.address > COALESCE($3::text, '') AND " LIVE
     " ORDER BY s.address LIMIT $4::int"},
    {"supp_delete", 2,
     "DELETE FROM suppressions s WHERE s.tenant_id = $1::uuid AND s.address = $2::text"
     " RETURNING " LIVE},
    {"supp_stats", 1,
     "SELECT json_build_object('total', count(*),"
     " 'by_reason', json_build_object("
     "  'hard_bounce', count(*) FILTER (WHERE s.reason = 'hard_bounce'),"
     "  'soft_bounce', count(*) FILTER (WHERE s.reason = 'soft_bounce'),"
     "  'complaint', count(*) FILTER (WHERE s.reason = 'complaint'),"
     "  'unsubscribe', count(*) FILTER (WHERE s.reason = 'unsubscribe'),"
     "  'manual', count(*) FILTER (WHERE s.reason = 'manual')),"
     " 'expiring_soon', count(*) FILTER (WHERE s.expires_at IS NOT NULL"
     "  AND s.expires_at <= now() + interval '" LIMIT_STR(MD_SUPPRESSIONS_SOON_DAYS) " days'),"
     " 'expiring_soon_days', " LIMIT_STR(MD_SUPPRESSIONS_SOON_DAYS) ")::text"
     " FROM suppressions s WHERE s.tenant_id = $1::uuid AND " LIVE},
    /* Every worker runs it: two workers deleting the same rows only wait for each
     * other, and a row deleted twice is deleted once. */
    {"supp_cleanup", 0,
     "WITH a AS (DELETE FROM suppressions WHERE ctid IN (SELECT ctid FROM suppressions"
     "  WHERE expires_at <= now() LIMIT " LIMIT_STR(MD_SUPPRESSIONS_CLEANUP_LIMIT) ") RETURNING 1),"
     " b AS (DELETE FROM soft_bounces WHERE ctid IN (SELECT ctid FROM soft_bounces"
     "  WHERE at < now() - interval '72 hours' LIMIT " LIMIT_STR(MD_SUPPRESSIONS_CLEANUP_LIMIT)
     ") RETURNING 1)"
     " SELECT (SELECT count(*) FROM a), (SELECT count(*) FROM b)"},
};
/* clang-format on */

typedef struct md_supp_s {
    struct ev_loop *loop;
    md_pg_pool_t *pool;
    md_periodic_t cleanup; /* expired suppressions and old soft bounces */
} md_supp_t;

static md_supp_t *sp;

bool
md_suppression_reason_ok(const char *reason, size_t len)
{
    static const char *const reasons[] = {"hard_bounce", "soft_bounce", "complaint", "unsubscribe",
                                          "manual"};
    if (reason == NULL)
        return false;
    for (size_t i = 0; i < md_nelems(reasons); i++)
        if (strlen(reasons[i]) == len && memcmp(reasons[i], reason, len) == 0)
            return true;
    return false;
}

static bool
tenant_ok(const char *tenant_id, char *out)
{
    md_str_t s = {tenant_id ? strlen(tenant_id) : 0, tenant_id};
    return tenant_id && md_uuid_parse(s, out);
}

static int
exec1(const char *stmt, int n, const char *const *vals, md_pg_cb cb, void *ctx)
{
    if (cb == NULL)
        return MD_ERROR;
    if (sp == NULL || sp->pool == NULL)
        return MD_AGAIN;
    md_pg_query_t q = {.stmt = stmt, .nparams = n, .values = vals};
    return md_pg_exec(sp->pool, &q, cb, ctx);
}

/* An element of a PostgreSQL array literal: a double-quoted string with '"' and
 * '\' escaped (anything else, braces and commas included, is literal). */
static void
arr_elem(md_buf_t *b, const char *s, bool first)
{
    if (!first)
        md_buf_append(b, ",", 1);
    md_buf_append(b, "\"", 1);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            md_buf_append(b, "\\", 1);
        md_buf_append(b, s, 1);
    }
    md_buf_append(b, "\"", 1);
}

int
md_suppressions_upsert(const char *tenant_id, const md_supp_item_t *items, size_t n,
                       const char *source, bool with_json, md_pg_cb cb, void *ctx)
{
    char tid[MD_UUID_STRLEN + 1];
    if (cb == NULL || items == NULL || n == 0 || source == NULL || !tenant_ok(tenant_id, tid))
        return MD_ERROR;
    if (sp == NULL || sp->pool == NULL)
        return MD_AGAIN;
    size_t nq = (n + MD_SUPPRESSIONS_CHUNK - 1) / MD_SUPPRESSIONS_CHUNK;
    if (nq > 1024)
        return MD_ERROR; /* md_pg_exec_batch's limit: 2 million rows */
    md_pg_query_t *qs = md_xcalloc(nq, sizeof(*qs));
    const char **vals = md_xcalloc(nq * 6, sizeof(*vals));
    md_buf_t b;
    md_buf_init(&b);
    md_buf_reserve(&b, n * 64 + 64);
    /* Offsets first (the buffer may move while it grows), pointers at the end. */
    size_t *off = md_xcalloc(nq * 4, sizeof(*off));
    for (size_t c = 0; c < nq; c++) {
        size_t lo = c * MD_SUPPRESSIONS_CHUNK, hi = md_min(n, lo + MD_SUPPRESSIONS_CHUNK);
        for (int col = 0; col < 4; col++) {
            off[c * 4 + (size_t)col] = md_buf_len(&b);
            md_buf_append(&b, "{", 1);
            for (size_t i = lo; i < hi; i++) {
                const md_supp_item_t *it = &items[i];
                if (col == 0) {
                    arr_elem(&b, it->address ? it->address : "", i == lo);
                } else if (col == 1) {
                    arr_elem(&b, it->reason ? it->reason : "manual", i == lo);
                } else if (col == 2) {
                    if (i > lo)
                        md_buf_append(&b, ",", 1);
                    if (it->expires_at > 0)
                        md_buf_printf(&b, "%.6f", it->expires_at);
                    else
                        md_buf_append(&b, "NULL", 4);
                } else {
                    md_buf_printf(&b, "%s%d", i > lo ? "," : "", it->line);
                }
            }
            md_buf_append(&b, "}", 2); /* with the NUL */
        }
    }
    for (size_t c = 0; c < nq; c++) {
        const char **v = &vals[c * 6];
        v[0] = tid;
        for (int col = 0; col < 4; col++)
            v[1 + col] = b.pos + off[c * 4 + (size_t)col];
        v[5] = source;
        qs[c] = (md_pg_query_t){
            .stmt = with_json ? "supp_upsert_json" : "supp_upsert", .nparams = 6, .values = v};
    }
    int rc = md_pg_exec_batch(sp->pool, qs, nq, cb, ctx);
    free(off);
    md_buf_free(&b); /* md_pg_exec_batch copied what it keeps */
    free(vals);
    free(qs);
    return rc;
}

int
md_suppressions_get(const char *tenant_id, const char *address, md_pg_cb cb, void *ctx)
{
    char tid[MD_UUID_STRLEN + 1];
    if (address == NULL || !tenant_ok(tenant_id, tid))
        return MD_ERROR;
    const char *vals[2] = {tid, address};
    return exec1("supp_get", 2, vals, cb, ctx);
}

int
md_suppressions_list(const char *tenant_id, const char *reason, const char *after, int limit,
                     md_pg_cb cb, void *ctx)
{
    char tid[MD_UUID_STRLEN + 1], lim[16];
    if (!tenant_ok(tenant_id, tid) || limit < 1)
        return MD_ERROR;
    snprintf(lim, sizeof(lim), "%d", limit);
    const char *vals[4] = {tid, reason, after, lim};
    return exec1("supp_list", 4, vals, cb, ctx);
}

int
md_suppressions_delete(const char *tenant_id, const char *address, md_pg_cb cb, void *ctx)
{
    char tid[MD_UUID_STRLEN + 1];
    if (address == NULL || !tenant_ok(tenant_id, tid))
        return MD_ERROR;
    const char *vals[2] = {tid, address};
    return exec1("supp_delete", 2, vals, cb, ctx);
}

int
md_suppressions_stats(const char *tenant_id, md_pg_cb cb, void *ctx)
{
    char tid[MD_UUID_STRLEN + 1];
    if (!tenant_ok(tenant_id, tid))
        return MD_ERROR;
    const char *vals[1] = {tid};
    return exec1("supp_stats", 1, vals, cb, ctx);
}

/* ---- cleanup --------------------------------------------------------------------------- */

static void
cleanup_cb(void *ctx, const md_pg_result_t *res)
{
    md_unused(ctx);
    md_supp_t *s = sp;
    if (s == NULL)
        return;
    md_periodic_done(&s->cleanup, 0);
    if (res->error) {
        md_logf(MD_LOG_WARN, 0, MD_LOG_FIELDS(MD_LS("error", res->error)),
                "suppression cleanup failed: %s", res->message ? res->message : "");
    } else if (PQntuples(res->res) == 1) {
        long a = atol(PQgetvalue(res->res, 0, 0)), b = atol(PQgetvalue(res->res, 0, 1));
        if (a > 0 || b > 0)
            md_logf(MD_LOG_INFO, 0,
                    MD_LOG_FIELDS(MD_LI("suppressions", a), MD_LI("soft_bounces", b)),
                    "expired suppressions and old soft bounces deleted");
    }
}

/* The first round a second after start, then every
 * suppression_cleanup_interval; a round still in flight skips a turn. */
static bool
cleanup_round(void *data)
{
    md_supp_t *s = data;
    md_pg_query_t q = {.stmt = "supp_cleanup", .nparams = 0};
    return md_pg_exec(s->pool, &q, cleanup_cb, NULL) == MD_OK;
}

/* ---- lifecycle -------------------------------------------------------------------------- */

int
md_suppressions_app_init(md_app_t *app)
{
    if (sp != NULL || app == NULL)
        return MD_ERROR;
    if (app->pg) {
        for (size_t i = 0; i < md_nelems(stmts); i++)
            if (md_pg_prepare(app->pg, stmts[i].name, stmts[i].sql, stmts[i].nparams) != MD_OK) {
                md_log(MD_LOG_ERROR, 0, "cannot register the suppressions statements");
                return MD_ERROR;
            }
    }
    md_supp_t *s = md_xcalloc(1, sizeof(*s));
    s->loop = app->loop;
    s->pool = app->pg;
    sp = s;
    if (s->pool)
        md_periodic_start(&s->cleanup, s->loop, CLEANUP_FIRST,
                          app->conf->suppression_cleanup_interval, cleanup_round, s);
    return MD_OK;
}

void
md_suppressions_app_destroy(md_app_t *app)
{
    md_unused(app);
    md_supp_t *s = sp;
    if (s == NULL)
        return;
    md_periodic_stop(&s->cleanup);
    free(s);
    sp = NULL;
}
