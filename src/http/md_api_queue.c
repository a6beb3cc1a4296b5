/*
 * The queue control API (issue 5; contract in md_queue.h).
 *
 * Tenant (API key, see md_auth.h), always scoped to the calling tenant:
 *   GET  /v1/queue/stats          200 figures from PostgreSQL (see STATS_FIELDS)
 *   POST /v1/queue/pause          200 {scope, paused: true, paused_at, changed, global_paused}
 *   POST /v1/queue/resume         200 {scope, paused: false, changed, global_paused,
 *                                      requeue, requeued}
 *   POST /v1/queue/retry-failed   202 {retried, ids, ids_truncated, more, requeue}
 *                                 body {} | {"batch_id": id} | {"message_ids": [ids]}
 *   GET  /v1/queue/dead           200 {data, next_cursor}; ?batch_id= &code= &cursor=
 *                                 &limit= (1..200, default 50), newest first
 * Operator (admin token), over every tenant:
 *   GET  /v1/admin/queue/stats    200 the same figures for all tenants, paused_tenants,
 *                                 and "redis" (md_queue_redis_stats) or null + redis_error
 *   POST /v1/admin/queue/pause    200 the global pause (scope '*')
 *   POST /v1/admin/queue/resume   200 as the tenant's, for '*'
 *
 * Pause and resume are idempotent and answer after PostgreSQL committed the
 * change (queue_pauses is the truth the dispatcher's claim reads). Resume then
 * calls md_queue_requeue for the scope and waits for it up to REQUEUE_WAIT:
 * "requeue" says "done" (with "requeued": how many were pushed), "pending" (not
 * finished in time; it goes on), "failed" (PostgreSQL or Redis could not be
 * reached; the sweeper repairs it, "requeued" null) or "skipped" (a tenant's
 * resume while the global pause holds: the global resume requeues everything).
 *
 * Retry-failed moves the tenant's dead letters back in one statement per page
 * of RETRY_PAGE messages (status queued, attempts 0, errors and times cleared,
 * a 'queued' event {"reason":"retry"}, the dead_letters rows deleted), oldest
 * dead first, at most RETRY_MAX per request: "more" is true when the cap was
 * reached and some may remain (call again). Every page is its own transaction,
 * so when PostgreSQL fails after a page was committed the answer is still 202
 * with what was done and "more": true. "ids" lists the retried ids, capped at
 * RETRY_PAGE ("ids_truncated"). An unknown batch or id is not an error: it
 * simply retries nothing (only messages in this tenant's dead list are
 * touched, whatever ids are given). The requeue of each page is fire and
 * forget ("requeue": "started", or "failed" when it could not start: the
 * sweeper requeues them later).
 *
 * The dead list is ordered by when the message died (newest first, then id);
 * next_cursor is opaque ("<microseconds>_<id>" of the page's last row) so a
 * row retried or cleaned up meanwhile does not break the walk.
 *
 * Errors: 400 invalid_json; 422 validation_failed with "field" (a JSON pointer);
 * 422 unknown_parameter / invalid_parameter with the parameter's name; 401; 503
 * store_unavailable (with Retry-After). A refused request changes nothing.
 */
#include "md_router.h"
#include "md_api_util.h"
#include "md_auth.h"
#include "md_conf.h"
#include "md_log.h"
#include "md_pg.h"
#include "md_queue.h"
#include "md_tenants.h"

#include <ev.h>
#include <stdio.h>
#include <stdlib.h>

#define REQUEUE_WAIT  2.0  /* seconds resume waits for md_queue_requeue before answering */
#define RETRY_PAGE    1000 /* messages per retry statement; also the cap of message_ids */
#define RETRY_MAX     10000
#define DEAD_DEFAULT  50
#define DEAD_MAX      200
#define CODE_MAX      100
#define GLOBAL_SCOPE  "*"
#define CURSOR_MAXLEN 64

void md_api_queue_register(md_router_t *rt, const md_conf_t *conf);

#define TS(col) "to_char((" col ") AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"

/* ---- statements ---------------------------------------------------------------------
 * SQL text rather than prepared statements: this module has no hook before the
 * pool starts, and unnamed statements are planned with the actual parameters,
 * which the optional filters below ("$2 IS NULL OR ...") want anyway. */

/* The figures both stats routes share. W is the tenant condition ("" for all). */
#define STATS_SQL(W, PAUSED)                                                                       \
    "WITH m AS (SELECT status, priority, count(*) AS n FROM deliveries"                            \
    "  WHERE status IN ('queued', 'scheduled', 'deferred')" W " GROUP BY 1, 2"                     \
    "  UNION ALL SELECT status, priority, count(*) FROM deliveries"                                \
    "  WHERE status = 'sending'" W " GROUP BY 1, 2),"                                              \
    " ev AS (SELECT type, count(*) AS n FROM events"                                               \
    "  WHERE created_at > now() - interval '1 minute' AND type IN ('sent', 'failed')" W            \
    "  GROUP BY 1)"                                                                                \
    " SELECT json_build_object("                                                                   \
    "  'queued', json_build_object("                                                               \
    "    'transactional', coalesce((SELECT sum(n) FROM m WHERE status = 'queued'"                  \
    "                               AND priority = 'transactional'), 0),"                          \
    "    'bulk', coalesce((SELECT sum(n) FROM m WHERE status = 'queued' AND priority = 'bulk'), "  \
    "0),"                                                                                          \
    "    'total', coalesce((SELECT sum(n) FROM m WHERE status = 'queued'), 0)),"                   \
    "  'scheduled', coalesce((SELECT sum(n) FROM m WHERE status = 'scheduled'), 0),"               \
    "  'deferred', coalesce((SELECT sum(n) FROM m WHERE status = 'deferred'), 0),"                 \
    "  'in_flight', coalesce((SELECT sum(n) FROM m WHERE status = 'sending'), 0),"                 \
    "  'dead', (SELECT count(*) FROM dead_letters WHERE true" W "),"                               \
    "  'last_minute', json_build_object("                                                          \
    "    'sent', coalesce((SELECT n FROM ev WHERE type = 'sent'), 0),"                             \
    "    'failed', coalesce((SELECT n FROM ev WHERE type = 'failed'), 0)),"                        \
    "  'global_paused', EXISTS (SELECT 1 FROM queue_pauses WHERE scope = '*'),"                    \
    "  'global_paused_at', (SELECT " TS(                                                           \
        "paused_at") " FROM queue_pauses WHERE scope = '*')," PAUSED                               \
                     "  'as_of', " TS("now()") ")::text"

static const char stats_tenant_sql[] = STATS_SQL(
    " AND tenant_id = $1::uuid",
    "  'paused', EXISTS (SELECT 1 FROM queue_pauses WHERE scope = $1::text),"
    "  'paused_at', (SELECT " TS("paused_at") " FROM queue_pauses WHERE scope = $1::text),");

static const char stats_all_sql[] =
    STATS_SQL("", "  'paused_tenants', (SELECT count(*) FROM queue_pauses WHERE scope <> '*'),");

/* $1 scope. Returns paused_at and whether this call paused it (a second pause is
 * fine: it answers the state). The coalesce covers a concurrent pause committed
 * after this statement's snapshot: the row exists but this snapshot cannot see it. */
static const char pause_sql[] =
    "WITH ins AS (INSERT INTO queue_pauses (scope) VALUES ($1::text)"
    "  ON CONFLICT (scope) DO NOTHING RETURNING paused_at)"
    " SELECT " TS("coalesce((SELECT paused_at FROM ins),"
                  " (SELECT paused_at FROM queue_pauses WHERE scope = $1::text), "
                  "now())") ","
                            " (SELECT count(*) FROM ins) > 0,"
                            " EXISTS (SELECT 1 FROM queue_pauses WHERE scope = "
                            "'*') OR $1::text = '*'";

/* $1 scope. Whether this call removed a pause, and whether the global one holds. */
static const char resume_sql[] =
    "WITH del AS (DELETE FROM queue_pauses WHERE scope = $1::text RETURNING 1)"
    " SELECT (SELECT count(*) FROM del) > 0,"
    " EXISTS (SELECT 1 FROM queue_pauses WHERE scope = '*' AND $1::text <> '*')";

/*
 * One page of retry-failed. $1 tenant, $2 batch id or NULL, $3 uuid[] of message
 * ids or NULL, $4 page size, $5 uuid[] of event ids (at least $4). The dead rows
 * are taken oldest first and locked (SKIP LOCKED: two concurrent retries share
 * the work instead of waiting); a row whose message is no longer 'failed' is
 * dropped without a retry. Returns how many dead rows were taken and the retried
 * ids, comma-separated.
 */
static const char retry_sql[] =
    "WITH pick AS (SELECT message_id FROM dead_letters"
    "  WHERE tenant_id = $1::uuid AND ($2::uuid IS NULL OR batch_id = $2::uuid)"
    "   AND ($3::uuid[] IS NULL OR message_id = ANY ($3::uuid[]))"
    "  ORDER BY created_at, message_id LIMIT $4::int FOR UPDATE SKIP LOCKED),"
    " d AS (DELETE FROM dead_letters dl USING pick WHERE dl.message_id = pick.message_id"
    "  RETURNING dl.message_id),"
    " m AS (UPDATE deliveries SET status = 'queued', attempts = 0, last_error = NULL,"
    "  next_attempt_at = NULL, lease_until = NULL, updated_at = now()"
    "  FROM d WHERE deliveries.message_id = d.message_id AND deliveries.tenant_id = $1::uuid"
    "   AND deliveries.status = 'failed'"
    "  RETURNING deliveries.message_id AS id, deliveries.tenant_id),"
    " n AS (SELECT id, tenant_id, row_number() OVER () AS rn FROM m),"
    " e AS (INSERT INTO events (id, tenant_id, message_id, type, data)"
    "  SELECT x.eid, n.tenant_id, n.id, 'queued', '{\"reason\":\"retry\"}'::jsonb"
    "  FROM n JOIN unnest($5::uuid[]) WITH ORDINALITY AS x(eid, rn) ON x.rn = n.rn)"
    " SELECT (SELECT count(*) FROM d), (SELECT string_agg(id::text, ',') FROM m)";

/* $1 tenant, $2 batch or NULL, $3 code or NULL, $4/$5 cursor (microseconds, id)
 * or NULL, $6 limit (one more than the page, to know whether another follows). */
static const char dead_sql[] =
    "SELECT json_build_object('message_id', d.message_id, 'code', d.code, 'reason', d.reason,"
    "  'attempts', d.attempts, 'esp', d.esp, 'batch_id', d.batch_id,"
    "  'created_at', " TS(
        "d.created_at") ")::text,"
                        " (extract(epoch FROM d.created_at) * 1000000)::bigint::text || '_' || "
                        "d.message_id::text"
                        " FROM dead_letters d"
                        " WHERE d.tenant_id = $1::uuid AND ($2::uuid IS NULL OR d.batch_id = "
                        "$2::uuid)"
                        "  AND ($3::text IS NULL OR d.code = $3::text)"
                        "  AND ($4::bigint IS NULL OR (d.created_at, d.message_id) <"
                        "       ('epoch'::timestamptz + $4::bigint * interval '1 microsecond', "
                        "$5::uuid))"
                        " ORDER BY d.created_at DESC, d.message_id DESC LIMIT $6::int";

/* ---- common ---------------------------------------------------------------------------- */

/* One request's state across its store calls; in r->pool. */
typedef struct q_req_s {
    md_http_request_t *r;
    char tenant_id[MD_UUID_STRLEN + 1];
    const char *scope; /* tenant_id or GLOBAL_SCOPE */
    bool admin;

    /* admin stats: both halves, answered when pending reaches 0 */
    int pending;
    json_t *pg_stats;
    json_t *redis_stats;
    const char *redis_error;
    const char *pg_error; /* set when the PostgreSQL half failed (answered 503/500) */
    const char *pg_sqlstate;

    /* retry-failed */
    char batch_id[MD_UUID_STRLEN + 1];
    bool has_batch;
    char *ids_array; /* "{id,id,...}" of message_ids, or NULL */
    long retried;
    json_t *ids;
    bool ids_truncated;
    bool requeue_failed;
    int pages;

    /* dead list */
    int limit;
} q_req_t;

static q_req_t *
req_ctx(md_http_request_t *r, const char *tenant_id)
{
    q_req_t *q = md_pcalloc(r->pool, sizeof(*q));
    q->r = r;
    if (tenant_id) {
        memcpy(q->tenant_id, tenant_id, MD_UUID_STRLEN);
        q->scope = q->tenant_id;
    } else {
        q->scope = GLOBAL_SCOPE;
        q->admin = true;
    }
    return q;
}

static void
log_pg_error(const md_pg_result_t *res, const char *what)
{
    md_logf(MD_LOG_ERROR, 0,
            MD_LOG_FIELDS(MD_LS("error", res->error),
                          MD_LS("sqlstate", res->sqlstate ? res->sqlstate : ""),
                          MD_LS("detail", res->message ? res->message : "")),
            "%s failed", what);
}

/* md_api_pg_ok, and a statement that must return a row returned one. */
static bool
pg_ok(md_http_request_t *r, const md_pg_result_t *res, const char *what)
{
    if (!md_api_pg_ok(r, res, what))
        return false;
    if (PQntuples(res->res) >= 1)
        return true;
    md_http_send_error(r, 500, "internal_error", "internal error");
    return false;
}

static int
exec_sql(q_req_t *q, const char *sql, int n, const char *const *values, md_pg_cb cb)
{
    md_pg_query_t pq = {.stmt = sql, .nparams = n, .values = values};
    return md_pg_exec(md_app->pg, &pq, cb, q);
}

/* Pause and resume take no parameters: only an empty body or {}. */
static bool
empty_body(md_http_request_t *r)
{
    static const char *const none[] = {NULL};
    json_t *b = md_api_body_object(r, true);
    return b && md_api_check_known(r, b, none);
}

static json_t *
text_or_null(const PGresult *res, int row, int col)
{
    if (PQgetisnull(res, row, col))
        return json_null();
    return json_string(PQgetvalue(res, row, col));
}

static bool
bool_col(const PGresult *res, int row, int col)
{
    return !PQgetisnull(res, row, col) && PQgetvalue(res, row, col)[0] == 't';
}

/* ---- stats ------------------------------------------------------------------------------ */

static void
tenant_stats_cb(void *ctx, const md_pg_result_t *res)
{
    q_req_t *q = ctx;
    if (!pg_ok(q->r, res, "queue stats"))
        return;
    md_http_send(q->r, 200, "application/json", PQgetvalue(res->res, 0, 0),
                 (size_t)PQgetlength(res->res, 0, 0));
}

static int
stats_next(md_http_request_t *r, const md_identity_t *who)
{
    if (!md_api_pg_ready(r))
        return MD_OK;
    q_req_t *q = req_ctx(r, who->tenant_id);
    const char *v[] = {q->tenant_id};
    return md_api_queued(r, exec_sql(q, stats_tenant_sql, 1, v, tenant_stats_cb));
}

static int
api_stats(md_http_request_t *r)
{
    return md_auth_tenant(r, stats_next);
}

/* Both halves of the admin stats are in (or failed): answers once. PostgreSQL is
 * required; Redis is reported as null with redis_error when it failed. */
static void
admin_stats_done(q_req_t *q)
{
    if (--q->pending > 0)
        return;
    /* q lives in r's pool, which sending may free: take what is needed first. */
    md_http_request_t *r = q->r;
    json_t *out = q->pg_stats, *redis = q->redis_stats;
    const char *pg_error = q->pg_error, *redis_error = q->redis_error;
    q->pg_stats = q->redis_stats = NULL;
    if (r->aborted || out == NULL) {
        json_decref(out);
        json_decref(redis);
        if (r->aborted)
            md_http_send(r, 499, NULL, NULL, 0);
        else if (pg_error && md_app_store_down(pg_error))
            md_app_send_store_unavailable(r, "postgres");
        else
            md_http_send_error(r, 500, "internal_error", "internal error");
        return;
    }
    json_object_set_new(out, "redis", redis ? redis : json_null());
    json_object_set_new(out, "redis_error",
                        redis ? json_null()
                              : json_string(redis_error ? redis_error : "unavailable"));
    md_http_send_json(r, 200, out);
}

static void
admin_stats_pg_cb(void *ctx, const md_pg_result_t *res)
{
    q_req_t *q = ctx;
    if (res->error) {
        q->pg_error = res->error;
        if (!md_app_store_down(res->error))
            log_pg_error(res, "admin queue stats");
    } else if (PQntuples(res->res) == 1) {
        q->pg_stats = md_tenants_row_json(res->res, 0, 0);
    }
    admin_stats_done(q);
}

static json_t *
pair(long long a, long long b)
{
    return json_pack("{s:I,s:I}", "transactional", (json_int_t)a, "bulk", (json_int_t)b);
}

static void
admin_stats_redis_cb(void *ctx, const md_queue_redis_stats_t *s, const char *err)
{
    q_req_t *q = ctx;
    if (s && err == NULL) {
        q->redis_stats = json_pack(
            "{s:o,s:o,s:o,s:I,s:I}", "stream_length", pair(s->stream_len[0], s->stream_len[1]),
            "lag", pair(s->lag[0], s->lag[1]), "pending", pair(s->pending[0], s->pending[1]),
            "scheduled", (json_int_t)s->scheduled, "dead_stream", (json_int_t)s->dead);
    } else {
        q->redis_error = err ? md_pstrndup(q->r->pool, err, strlen(err)) : "unavailable";
    }
    admin_stats_done(q);
}

static int
api_admin_stats(md_http_request_t *r)
{
    if (md_auth_admin(r) != MD_OK || !md_api_pg_ready(r))
        return MD_OK;
    q_req_t *q = req_ctx(r, NULL);
    int rc = exec_sql(q, stats_all_sql, 0, NULL, admin_stats_pg_cb);
    if (rc != MD_OK)
        return md_api_queued(r, rc);
    q->pending = 1;
    /* The Redis half runs beside the PostgreSQL one; without its callback (Redis
     * not configured or not reachable now) the answer says so. */
    q->pending++;
    rc = md_queue_redis_stats(admin_stats_redis_cb, q);
    if (rc != MD_OK) {
        q->pending--;
        q->redis_error = rc == MD_AGAIN ? "unavailable" : "not_configured";
    }
    return MD_AGAIN;
}

/* ---- pause / resume ----------------------------------------------------------------------- */

static json_t *
scope_json(const q_req_t *q)
{
    json_t *o = json_object();
    json_object_set_new(o, "scope", json_string(q->admin ? "global" : "tenant"));
    if (!q->admin)
        json_object_set_new(o, "tenant_id", json_string(q->tenant_id));
    return o;
}

static void
paused_cb(void *ctx, const md_pg_result_t *res)
{
    q_req_t *q = ctx;
    if (!pg_ok(q->r, res, "queue pause"))
        return;
    json_t *o = scope_json(q);
    json_object_set_new(o, "paused", json_true());
    json_object_set_new(o, "paused_at", text_or_null(res->res, 0, 0));
    json_object_set_new(o, "changed", json_boolean(bool_col(res->res, 0, 1)));
    json_object_set_new(o, "global_paused", json_boolean(bool_col(res->res, 0, 2)));
    if (bool_col(res->res, 0, 1))
        md_logf(MD_LOG_NOTICE, 0, MD_LOG_FIELDS(MD_LS("scope", q->scope)), "queue paused");
    md_http_send_json(q->r, 200, o);
}

static int
pause_common(md_http_request_t *r, const char *tenant_id)
{
    if (!empty_body(r) || !md_api_pg_ready(r))
        return MD_OK;
    q_req_t *q = req_ctx(r, tenant_id);
    const char *v[] = {q->scope};
    return md_api_queued(r, exec_sql(q, pause_sql, 1, v, paused_cb));
}

static int
pause_next(md_http_request_t *r, const md_identity_t *who)
{
    return pause_common(r, who->tenant_id);
}

static int
api_pause(md_http_request_t *r)
{
    return md_auth_tenant(r, pause_next);
}

static int
api_admin_pause(md_http_request_t *r)
{
    if (md_auth_admin(r) != MD_OK)
        return MD_OK;
    return pause_common(r, NULL);
}

/*
 * A resume waiting for its requeue. Heap-allocated because either side may go
 * first: the request (answered after REQUEUE_WAIT, or freed at worker exit) and
 * the requeue callback (which md_queue promises exactly once). Whichever finishes
 * second frees it.
 */
typedef struct rq_wait_s {
    md_http_request_t *r; /* NULL once the request is gone */
    json_t *out;          /* the answer, completed with the requeue's outcome */
    ev_timer timer;
    bool answered;
    bool cb_done;
} rq_wait_t;

static void
rq_answer(rq_wait_t *w, const char *requeue, long pushed)
{
    md_http_request_t *r = w->r;
    json_t *out = w->out;
    w->out = NULL;
    w->answered = true;
    ev_timer_stop(r->loop, &w->timer);
    json_object_set_new(out, "requeue", json_string(requeue));
    json_object_set_new(out, "requeued", pushed >= 0 ? json_integer(pushed) : json_null());
    if (r->aborted) {
        json_decref(out);
        md_http_send(r, 499, NULL, NULL, 0);
    } else {
        md_http_send_json(r, 200, out);
    }
    /* r (and through its cleanup, w) may be gone now. */
}

/* Pool cleanup of the request: detaches it from the wait. */
static void
rq_request_gone(void *data)
{
    rq_wait_t *w = data;
    if (w->r)
        ev_timer_stop(w->r->loop, &w->timer);
    w->r = NULL;
    json_decref(w->out);
    w->out = NULL;
    if (w->cb_done)
        free(w);
}

static void
rq_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    md_unused(loop);
    md_unused(revents);
    rq_wait_t *w = t->data;
    if (w->r && !w->answered)
        rq_answer(w, "pending", -1);
}

static void
rq_done(void *ctx, long pushed, const char *err)
{
    rq_wait_t *w = ctx;
    w->cb_done = true;
    if (err)
        md_logf(MD_LOG_WARN, 0, MD_LOG_FIELDS(MD_LS("error", err)),
                "requeue after resume failed; the sweeper will requeue");
    if (w->r == NULL) {
        free(w);
        return;
    }
    if (!w->answered)
        rq_answer(w, err ? "failed" : "done", err ? -1 : pushed);
    /* else the request's cleanup frees w */
}

static void
resumed_cb(void *ctx, const md_pg_result_t *res)
{
    q_req_t *q = ctx;
    md_http_request_t *r = q->r;
    if (!pg_ok(r, res, "queue resume"))
        return;
    bool changed = bool_col(res->res, 0, 0), held = bool_col(res->res, 0, 1);
    json_t *o = scope_json(q);
    json_object_set_new(o, "paused", json_false());
    json_object_set_new(o, "changed", json_boolean(changed));
    json_object_set_new(o, "global_paused", json_boolean(held));
    if (changed)
        md_logf(MD_LOG_NOTICE, 0, MD_LOG_FIELDS(MD_LS("scope", q->scope)), "queue resumed");
    if (held) {
        /* The claim still skips this tenant; the global resume requeues it. */
        json_object_set_new(o, "requeue", json_string("skipped"));
        json_object_set_new(o, "requeued", json_null());
        md_http_send_json(r, 200, o);
        return;
    }
    /* Always requeue, even when nothing was paused: it is cheap, and it repairs
     * a requeue that failed after an earlier resume. */
    rq_wait_t *w = md_xcalloc(1, sizeof(*w));
    w->r = r;
    w->out = o;
    ev_timer_init(&w->timer, rq_timeout, REQUEUE_WAIT, 0);
    w->timer.data = w;
    /* Armed before the call, so nothing below touches r or w after it: even a
     * callback run inside the call (the contract says it is not) would be safe. */
    ev_timer_start(r->loop, &w->timer);
    md_pool_cleanup_add(r->pool, rq_request_gone, w);
    const char *scope = q->admin ? NULL : q->tenant_id;
    if (md_queue_requeue(scope, NULL, 0, rq_done, w) != MD_OK) {
        md_logf(MD_LOG_WARN, 0, MD_LOG_FIELDS(MD_LS("scope", q->scope)),
                "requeue after resume could not start; the sweeper will requeue");
        w->cb_done = true; /* no callback will come: the request's cleanup frees w */
        rq_answer(w, "failed", -1);
    }
}

static int
resume_common(md_http_request_t *r, const char *tenant_id)
{
    if (!empty_body(r) || !md_api_pg_ready(r))
        return MD_OK;
    q_req_t *q = req_ctx(r, tenant_id);
    const char *v[] = {q->scope};
    return md_api_queued(r, exec_sql(q, resume_sql, 1, v, resumed_cb));
}

static int
resume_next(md_http_request_t *r, const md_identity_t *who)
{
    return resume_common(r, who->tenant_id);
}

static int
api_resume(md_http_request_t *r)
{
    return md_auth_tenant(r, resume_next);
}

static int
api_admin_resume(md_http_request_t *r)
{
    if (md_auth_admin(r) != MD_OK)
        return MD_OK;
    return resume_common(r, NULL);
}

/* ---- retry-failed --------------------------------------------------------------------------- */

static void
retry_requeued(void *ctx, long pushed, const char *err)
{
    md_unused(ctx);
    md_unused(pushed);
    if (err)
        md_logf(MD_LOG_WARN, 0, MD_LOG_FIELDS(MD_LS("error", err)),
                "requeue after retry-failed failed; the sweeper will requeue");
}

/* Requeues one page's ids ("id,id,..."), fire and forget (md_queue_requeue
 * copies them). false when it could not start: the messages are queued in
 * PostgreSQL and uncovered, so the sweeper takes them. */
static bool
retry_requeue(const char *list, size_t n)
{
    char *buf = md_xmalloc(strlen(list) + 1);
    const char **ids = md_xcalloc(n, sizeof(char *));
    size_t k = 0;
    strcpy(buf, list);
    for (char *p = buf, *tok; k < n && (tok = strsep(&p, ",")) != NULL;)
        ids[k++] = tok;
    int rc = md_queue_requeue(NULL, ids, k, retry_requeued, NULL);
    free(ids);
    free(buf);
    return rc == MD_OK;
}

static int retry_page(q_req_t *q);

static void
retry_answer(q_req_t *q, bool more)
{
    json_t *o = json_object();
    json_object_set_new(o, "retried", json_integer(q->retried));
    json_object_set(o, "ids", q->ids); /* q->ids stays owned by r's pool */
    json_object_set_new(o, "ids_truncated", json_boolean(q->ids_truncated));
    json_object_set_new(o, "more", json_boolean(more));
    json_object_set_new(o, "requeue",
                        json_string(q->retried == 0     ? "none"
                                    : q->requeue_failed ? "failed"
                                                        : "started"));
    md_http_send_json(q->r, 202, o);
}

static void
retried_cb(void *ctx, const md_pg_result_t *res)
{
    q_req_t *q = ctx;
    md_http_request_t *r = q->r;
    if (res->error || PQntuples(res->res) != 1) {
        if (res->error && !md_app_store_down(res->error))
            log_pg_error(res, "retry-failed");
        if (r->aborted) {
            md_http_send(r, 499, NULL, NULL, 0);
        } else if (q->pages > 0) {
            /* Earlier pages are committed: say what was done. */
            retry_answer(q, true);
        } else if (res->error && md_app_store_down(res->error)) {
            md_app_send_store_unavailable(r, "postgres");
        } else {
            md_http_send_error(r, 500, "internal_error", "internal error");
        }
        return;
    }
    q->pages++;
    long taken = atol(PQgetvalue(res->res, 0, 0));
    if (!PQgetisnull(res->res, 0, 1)) {
        const char *list = PQgetvalue(res->res, 0, 1);
        size_t n = 1;
        for (const char *c = list; *c; c++)
            n += *c == ',';
        q->retried += (long)n;
        if (!retry_requeue(list, n))
            q->requeue_failed = true;
        for (const char *p = list; *p;) {
            const char *c = strchr(p, ',');
            size_t len = c ? (size_t)(c - p) : strlen(p);
            if (json_array_size(q->ids) < RETRY_PAGE)
                json_array_append_new(q->ids, json_stringn(p, len));
            else
                q->ids_truncated = true;
            p += len + (c ? 1 : 0);
        }
    }
    /* A full page may have more behind it; the ids form takes one page at most. */
    bool full = taken >= RETRY_PAGE && q->ids_array == NULL;
    if (r->aborted) {
        /* The client left: what is committed stays committed (the ids are
         * requeued); do not go on with work nobody waits for. */
        md_http_send(r, 499, NULL, NULL, 0);
        return;
    }
    if (full && q->pages * RETRY_PAGE < RETRY_MAX) {
        retry_page(q); /* answers itself when the next page cannot be queued */
        return;
    }
    retry_answer(q, full);
}

/* Queues the next page. Returns MD_AGAIN when queued (retried_cb answers), MD_OK
 * when it answered here (the pool refused it: 503, or 202 with the pages done). */
static int
retry_page(q_req_t *q)
{
    md_http_request_t *r = q->r;
    /* RETRY_PAGE event ids as a uuid[] literal: "{id,id,...}". */
    size_t len = 2 + (size_t)RETRY_PAGE * (MD_UUID_STRLEN + 1) + 1;
    char *eids = md_xmalloc(len), *p = eids;
    *p++ = '{';
    for (int i = 0; i < RETRY_PAGE; i++) {
        if (i)
            *p++ = ',';
        md_uuid7(p);
        p += MD_UUID_STRLEN;
    }
    *p++ = '}';
    *p = '\0';
    char limit[16];
    snprintf(limit, sizeof(limit), "%d", RETRY_PAGE);
    const char *v[] = {q->tenant_id, q->has_batch ? q->batch_id : NULL, q->ids_array, limit, eids};
    int rc = exec_sql(q, retry_sql, 5, v, retried_cb);
    free(eids); /* md_pg_exec copies what it keeps */
    if (rc == MD_OK)
        return MD_AGAIN;
    if (q->pages > 0) {
        retry_answer(q, true);
        return MD_OK;
    }
    return md_api_queued(r, rc);
}

/* Validates the body: {} | {"batch_id"} | {"message_ids": [1..RETRY_PAGE ids]}.
 * Answers 400/422 and returns false when refused. */
static bool
retry_body(q_req_t *q)
{
    md_http_request_t *r = q->r;
    static const char *const known[] = {"batch_id", "message_ids", NULL};
    json_t *b = md_api_body_object(r, true);
    if (b == NULL || !md_api_check_known(r, b, known))
        return false;
    json_t *batch = json_object_get(b, "batch_id"), *ids = json_object_get(b, "message_ids");
    if (batch && ids)
        return md_api_send_validation(r, "/message_ids", "give batch_id or message_ids, not both"),
               false;
    if (batch) {
        md_str_t s = {json_is_string(batch) ? json_string_length(batch) : 0,
                      json_is_string(batch) ? json_string_value(batch) : NULL};
        if (!md_uuid_parse(s, q->batch_id))
            return md_api_send_validation(r, "/batch_id", "must be a batch id (a UUID)"), false;
        q->has_batch = true;
    }
    if (ids) {
        char msg[96];
        size_t n = json_is_array(ids) ? json_array_size(ids) : 0;
        if (!json_is_array(ids) || n < 1 || n > RETRY_PAGE) {
            snprintf(msg, sizeof(msg), "must be an array of 1 to %d message ids", RETRY_PAGE);
            return md_api_send_validation(r, "/message_ids", msg), false;
        }
        char *arr = md_palloc(r->pool, 2 + n * (MD_UUID_STRLEN + 1) + 1), *p = arr;
        *p++ = '{';
        for (size_t i = 0; i < n; i++) {
            json_t *v = json_array_get(ids, i);
            md_str_t s = {json_is_string(v) ? json_string_length(v) : 0,
                          json_is_string(v) ? json_string_value(v) : NULL};
            char id[MD_UUID_STRLEN + 1];
            if (!md_uuid_parse(s, id)) {
                char field[48];
                snprintf(field, sizeof(field), "/message_ids/%zu", i);
                return md_api_send_validation(r, field, "must be a message id (a UUID)"), false;
            }
            if (i)
                *p++ = ',';
            memcpy(p, id, MD_UUID_STRLEN);
            p += MD_UUID_STRLEN;
        }
        *p++ = '}';
        *p = '\0';
        q->ids_array = arr;
    }
    return true;
}

static int
retry_next(md_http_request_t *r, const md_identity_t *who)
{
    q_req_t *q = req_ctx(r, who->tenant_id);
    if (!retry_body(q) || !md_api_pg_ready(r))
        return MD_OK;
    q->ids = json_array();
    md_pool_cleanup_add(r->pool, md_api_json_decref_cleanup, q->ids);
    return retry_page(q);
}

static int
api_retry(md_http_request_t *r)
{
    return md_auth_tenant(r, retry_next);
}

/* ---- dead letters ------------------------------------------------------------------------ */

/* A cursor we made: "<microseconds>_<uuid>". */
static bool
cursor_parse(const char *c, char *usec, char *id)
{
    const char *u = strchr(c, '_');
    size_t n = u ? (size_t)(u - c) : 0;
    if (n < 1 || n > 18)
        return false;
    for (size_t i = 0; i < n; i++)
        if (c[i] < '0' || c[i] > '9')
            return false;
    memcpy(usec, c, n);
    usec[n] = '\0';
    md_str_t s = {strlen(u + 1), u + 1};
    return md_uuid_parse(s, id);
}

static void
dead_cb(void *ctx, const md_pg_result_t *res)
{
    q_req_t *q = ctx;
    md_http_request_t *r = q->r;
    if (r->aborted) {
        md_http_send(r, 499, NULL, NULL, 0);
        return;
    }
    if (res->error) {
        if (md_app_store_down(res->error)) {
            md_app_send_store_unavailable(r, "postgres");
            return;
        }
        log_pg_error(res, "dead letter list");
        md_http_send_error(r, 500, "internal_error", "internal error");
        return;
    }
    int n = PQntuples(res->res), shown = md_min(n, q->limit);
    md_buf_t b;
    md_buf_init(&b);
    md_buf_append_str(&b, "{\"data\":[");
    for (int i = 0; i < shown; i++) {
        if (i)
            md_buf_append(&b, ",", 1);
        md_buf_append(&b, PQgetvalue(res->res, i, 0), (size_t)PQgetlength(res->res, i, 0));
    }
    md_buf_append_str(&b, "],\"next_cursor\":");
    if (n > q->limit && shown > 0)
        md_buf_printf(&b, "\"%s\"}", PQgetvalue(res->res, shown - 1, 1));
    else
        md_buf_append_str(&b, "null}");
    md_http_send(r, 200, "application/json", b.pos, md_buf_len(&b));
    md_buf_free(&b);
}

static int
dead_next(md_http_request_t *r, const md_identity_t *who)
{
    q_req_t *q = req_ctx(r, who->tenant_id);
    q->limit = DEAD_DEFAULT;
    char batch[MD_UUID_STRLEN + 1], usec[24], cid[MD_UUID_STRLEN + 1], limit[16];
    const char *code = NULL;
    bool has_batch = false, has_cursor = false;
    static const char *const names[] = {"batch_id", "code", "cursor", "limit", NULL};
    md_api_query_t qs;
    md_api_query_init(&qs, r);
    unsigned bit;
    char *val;
    const char *nm;
    int more;
    while ((more = md_api_query_next(&qs, names, &bit, &val)) > 0) {
        nm = qs.name;
        size_t vlen = strlen(val);
        if (bit == 1) {
            md_str_t s = {vlen, val};
            if (!md_uuid_parse(s, batch))
                return md_api_bad_param(r, "invalid_parameter", nm, "must be a batch id");
            has_batch = true;
        } else if (bit == 2) {
            bool ok = vlen >= 1 && vlen <= CODE_MAX;
            for (size_t i = 0; ok && i < vlen; i++)
                ok = (unsigned char)val[i] > 0x20 && (unsigned char)val[i] < 0x7f;
            if (!ok)
                return md_api_bad_param(r, "invalid_parameter", nm,
                                        "must be 1 to 100 printable ASCII characters");
            code = val;
        } else if (bit == 4) {
            if (vlen > CURSOR_MAXLEN || !cursor_parse(val, usec, cid))
                return md_api_bad_param(r, "invalid_parameter", nm,
                                        "must be a next_cursor value from a previous page");
            has_cursor = true;
        } else {
            long v = 0;
            bool ok = vlen >= 1 && vlen <= 3;
            for (size_t i = 0; ok && i < vlen; i++) {
                ok = val[i] >= '0' && val[i] <= '9';
                v = v * 10 + (val[i] - '0');
            }
            if (!ok || v < 1 || v > DEAD_MAX)
                return md_api_bad_param(r, "invalid_parameter", nm,
                                        "must be an integer from 1 to 200");
            q->limit = (int)v;
        }
    }
    if (more < 0)
        return MD_OK;
    if (!md_api_pg_ready(r))
        return MD_OK;
    snprintf(limit, sizeof(limit), "%d", q->limit + 1);
    const char *v[] = {q->tenant_id,
                       has_batch ? batch : NULL,
                       code,
                       has_cursor ? usec : NULL,
                       has_cursor ? cid : NULL,
                       limit};
    return md_api_queued(r, exec_sql(q, dead_sql, 6, v, dead_cb));
}

static int
api_dead(md_http_request_t *r)
{
    return md_auth_tenant(r, dead_next);
}

void
md_api_queue_register(md_router_t *rt, const md_conf_t *conf)
{
    md_unused(conf);
    md_router_add(rt, MD_M_GET, "/v1/queue/stats", api_stats);
    md_router_add(rt, MD_M_POST, "/v1/queue/pause", api_pause);
    md_router_add(rt, MD_M_POST, "/v1/queue/resume", api_resume);
    md_router_add(rt, MD_M_POST, "/v1/queue/retry-failed", api_retry);
    md_router_add(rt, MD_M_GET, "/v1/queue/dead", api_dead);
    md_router_add(rt, MD_M_GET, "/v1/admin/queue/stats", api_admin_stats);
    md_router_add(rt, MD_M_POST, "/v1/admin/queue/pause", api_admin_pause);
    md_router_add(rt, MD_M_POST, "/v1/admin/queue/resume", api_admin_resume);
}
