/*
 * The queue between accepting and sending (see md_queue.h).
 *
 * Redis holds an index of the work, PostgreSQL holds the work:
 *   - md_queue_push (after COMMIT) XADDs each message id to the stream of its
 *     priority, or ZADDs it to the scheduled set when send_at is ahead;
 *   - a Lua script, run every 250 ms by a timer in every worker (it is atomic,
 *     so running it everywhere is safe), moves the due members of the scheduled
 *     set into the streams; retries come back the same way;
 *   - the recovery scan (every queue_recovery_interval, one worker at a time
 *     through a PostgreSQL advisory lock) requeues what Redis lost: messages
 *     "queued" for longer than the interval while no stream has a backlog, leases
 *     that expired ("sending" whose worker died or stopped), and scheduled or
 *     deferred messages overdue by more than the interval. Issue 5 replaces it
 *     with the full sweeper (and XAUTOCLAIM).
 * Scheduled-set members are "t:<id>" or "b:<id>" so the script knows the
 * stream; ZADD of the same member is idempotent, which makes re-adding safe.
 */
#include "md_queue.h"
#include "md_app.h"
#include "md_esp.h"
#include "md_id.h"
#include "md_log.h"
#include "md_messages.h"
#include "md_metrics.h"
#include "md_pg.h"
#include "md_redis.h"

#include <ev.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define MD_QUEUE_TICK         0.25 /* scheduler period */
#define MD_QUEUE_MOVE_LIMIT   "1000"
#define MD_QUEUE_MOVE_LIMIT_N 1000
#define MD_QUEUE_SCAN_LIMIT   500
/* pg_try_advisory_xact_lock key of the recovery scan: any constant no other
 * module uses ("mailerdQ" in ASCII). */
#define MD_QUEUE_SCAN_LOCK "7885629153624052049"

const char *const md_queue_stream[2] = {"mailerd:q:transactional", "mailerd:q:bulk"};

/* KEYS: scheduled set, transactional stream, bulk stream. ARGV: now, limit, maxlen.
 * Returns how many members moved (== limit: call again, more are due). */
static const char md_queue_move_lua[] =
    "local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])\n"
    "for _, m in ipairs(due) do\n"
    "  local key = KEYS[2]\n"
    "  if string.sub(m, 1, 2) == 'b:' then key = KEYS[3] end\n"
    "  redis.call('XADD', key, 'MAXLEN', '~', ARGV[3], '*', 'id', string.sub(m, 3))\n"
    "  redis.call('ZREM', KEYS[1], m)\n"
    "end\n"
    "return #due\n";

/*
 * The recovery scan. $1 interval (seconds), $2/$3 skip transactional/bulk
 * messages (their stream has undelivered entries, so they are probably still in
 * it, or a moved scheduled entry is), $4 limit, $5 uuid[] of event ids for leases turned back to
 * queued. Returns (id, priority, kind 'q' push to the stream | 's' add to the set, at).
 */
static const char md_queue_scan_sql[] =
    "WITH lk AS MATERIALIZED (SELECT pg_try_advisory_xact_lock(" MD_QUEUE_SCAN_LOCK ") AS ok),"
    " stale AS ("
    "  SELECT m.id, m.status AS was FROM messages m, lk"
    "  WHERE lk.ok AND ((m.status = 'queued' AND m.updated_at < now() - make_interval(secs => $1)"
    "                    AND NOT (CASE m.priority WHEN 'bulk' THEN $3::boolean ELSE $2::boolean "
    "END))"
    "               OR (m.status = 'sending' AND m.lease_until < now()))"
    "  ORDER BY m.updated_at LIMIT $4 FOR UPDATE OF m SKIP LOCKED),"
    " upd AS ("
    "  UPDATE messages m SET status = 'queued', lease_until = NULL, updated_at = now()"
    "  FROM stale s WHERE m.id = s.id RETURNING m.id, m.tenant_id, m.priority, s.was),"
    " ev AS ("
    "  INSERT INTO events (id, tenant_id, message_id, type, data)"
    "  SELECT e.eid, u.tenant_id, u.id, 'queued', '{\"reason\":\"lease_expired\"}'::jsonb"
    "  FROM (SELECT upd.*, row_number() OVER () AS rn FROM upd WHERE was = 'sending') u"
    "  JOIN unnest($5::uuid[]) WITH ORDINALITY AS e(eid, rn) ON e.rn = u.rn),"
    " due AS ("
    "  SELECT m.id, m.priority,"
    "         extract(epoch FROM coalesce(m.next_attempt_at, m.send_at, now()))::float8 AS at"
    "  FROM messages m, lk WHERE lk.ok AND m.status IN ('scheduled', 'deferred')"
    "   AND coalesce(m.next_attempt_at, m.send_at, now()) < now() - make_interval(secs => $1)"
    "   AND NOT (CASE m.priority WHEN 'bulk' THEN $3::boolean ELSE $2::boolean END)"
    "  ORDER BY 3 LIMIT $4)"
    " SELECT id::text, priority, 'q', 0::float8 FROM upd"
    " UNION ALL SELECT id::text, priority, 's', at FROM due";

typedef struct md_queue_s {
    md_app_t *app;
    int move_script;
    int moving;   /* a move script call is in flight */
    int scanning; /* a recovery scan step is in flight */
    int shutting;
    int dispatcher;  /* md_dispatch_start succeeded */
    int esp_up;      /* md_esp_init succeeded */
    ev_timer tick;   /* scheduler */
    ev_timer scan;   /* recovery scan */
    int lag_replies; /* XINFO GROUPS answers still owed to this scan */
    int lag_failed;  /* one of them failed */
    int skip[2];     /* the stream has undelivered entries */
    double last_push_log;
    uint64_t push_errors_unlogged;
} md_queue_t;

static md_queue_t *md_queue;

static double
md_queue_wall(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Push failures are normal during a Redis outage: count every one, log at most
 * once a second so a burst of accepts does not flood the log. */
static void
md_queue_push_failed(const char *why)
{
    md_metrics_delivery(MD_METRICS_QUEUE_PUSH_ERRORS, 1);
    md_queue_t *q = md_queue;
    if (q == NULL) {
        md_logf(MD_LOG_WARN, 0, MD_LOG_FIELDS(MD_LS("error", why)),
                "queue push failed; the recovery scan will requeue");
        return;
    }
    q->push_errors_unlogged++;
    double now = ev_now(q->app->loop);
    if (now - q->last_push_log < 1.0)
        return;
    q->last_push_log = now;
    md_logf(MD_LOG_WARN, 0,
            MD_LOG_FIELDS(MD_LS("error", why), MD_LI("failures", q->push_errors_unlogged)),
            "queue push failed; the recovery scan will requeue");
    q->push_errors_unlogged = 0;
}

static void
md_queue_cmd_cb(void *ctx, redisReply *reply, const char *err)
{
    md_unused(ctx);
    if (err)
        md_queue_push_failed(err);
    else if (reply->type == REDIS_REPLY_ERROR)
        md_queue_push_failed(reply->str);
}

static void
md_queue_send(int argc, const char **argv)
{
    md_redis_t *r = md_app ? md_app->redis : NULL;
    if (r == NULL) {
        md_queue_push_failed("no redis");
        return;
    }
    if (md_redis_cmd(r, md_queue_cmd_cb, NULL, argc, argv, NULL) != MD_OK)
        md_queue_push_failed("redis unavailable");
}

static void
md_queue_xadd(const char *id, int priority)
{
    const char *argv[] = {"XADD",
                          md_queue_stream[priority == MD_PRIORITY_BULK],
                          "MAXLEN",
                          "~",
                          MD_QUEUE_MAXLEN,
                          "*",
                          "id",
                          id};
    md_queue_send((int)md_nelems(argv), argv);
}

void
md_queue_schedule(const char *id, int priority, double at)
{
    char member[64], score[64];
    snprintf(member, sizeof(member), "%c:%s", priority == MD_PRIORITY_BULK ? 'b' : 't', id);
    snprintf(score, sizeof(score), "%.6f", at);
    const char *argv[] = {"ZADD", MD_QUEUE_SCHEDULED, score, member};
    md_queue_send((int)md_nelems(argv), argv);
}

/* Called after COMMIT by md_messages: one command per message, all pipelined on
 * the worker's connection (hiredis writes them in one go when the loop turns). */
void
md_queue_push(const char *const *ids, const int *priority, const double *send_at, size_t n)
{
    double now = n ? md_queue_wall() : 0;
    for (size_t i = 0; i < n; i++) {
        int prio = priority ? priority[i] : MD_PRIORITY_TRANSACTIONAL;
        if (send_at && send_at[i] > now)
            md_queue_schedule(ids[i], prio, send_at[i]);
        else
            md_queue_xadd(ids[i], prio);
    }
}

static void
md_queue_ack_cb(void *ctx, redisReply *reply, const char *err)
{
    md_unused(ctx);
    if (err || reply->type == REDIS_REPLY_ERROR)
        md_logf(MD_LOG_DEBUG, 0, MD_LOG_FIELDS(MD_LS("error", err ? err : reply->str)),
                "queue: XACK failed, the entry stays pending");
}

void
md_queue_ack(int priority, const char *entry_id, const char *message_id)
{
    md_unused(message_id); /* issue 5: SREM from MD_QUEUE_LIVE (md_queue.h) */
    const char *argv[] = {"XACK", md_queue_stream[priority == MD_PRIORITY_BULK], MD_QUEUE_GROUP,
                          entry_id};
    md_redis_t *r = md_app ? md_app->redis : NULL;
    /* An entry left unacknowledged only stays pending: a later delivery of it
     * finds its message no longer claimable and acknowledges it then. */
    if (r == NULL ||
        md_redis_cmd(r, md_queue_ack_cb, NULL, (int)md_nelems(argv), argv, NULL) != MD_OK)
        md_log(MD_LOG_DEBUG, 0, "queue: XACK not sent, the entry stays pending");
}

static void
md_queue_ignore_cb(void *ctx, redisReply *reply, const char *err)
{
    md_unused(ctx);
    md_unused(reply);
    md_unused(err);
}

/* ---- scheduler ------------------------------------------------------------------ */

static void md_queue_move(md_queue_t *q);

static void
md_queue_move_cb(void *ctx, redisReply *reply, const char *err)
{
    md_queue_t *q = ctx;
    q->moving = 0;
    if (err || reply->type == REDIS_REPLY_ERROR) {
        md_logf(MD_LOG_WARN, 0, MD_LOG_FIELDS(MD_LS("error", err ? err : reply->str)),
                "queue: moving due scheduled messages failed");
        return;
    }
    /* A full batch means more are due now: go again rather than wait a tick. */
    if (!q->shutting && reply->type == REDIS_REPLY_INTEGER &&
        reply->integer >= MD_QUEUE_MOVE_LIMIT_N)
        md_queue_move(q);
}

static void
md_queue_move(md_queue_t *q)
{
    if (q->moving || q->app->redis == NULL || !md_redis_ready(q->app->redis))
        return;
    char now[64];
    snprintf(now, sizeof(now), "%.6f", md_queue_wall());
    const char *argv[] = {MD_QUEUE_SCHEDULED,  md_queue_stream[0], md_queue_stream[1], now,
                          MD_QUEUE_MOVE_LIMIT, MD_QUEUE_MAXLEN};
    if (md_redis_eval(q->app->redis, q->move_script, 3, (int)md_nelems(argv), argv, NULL,
                      md_queue_move_cb, q) == MD_OK)
        q->moving = 1;
}

static void
md_queue_tick_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    md_unused(loop);
    md_unused(revents);
    md_queue_move(t->data);
}

/* ---- recovery scan ------------------------------------------------------------- */

static void md_queue_scan_pg(md_queue_t *q);

static void
md_queue_scan_again(md_queue_t *q, double after)
{
    if (q->shutting)
        return;
    ev_timer_stop(q->app->loop, &q->scan);
    ev_timer_set(&q->scan, after, 0.);
    ev_timer_start(q->app->loop, &q->scan);
}

static void
md_queue_scan_pg_cb(void *ctx, const md_pg_result_t *res)
{
    md_queue_t *q = ctx;
    q->scanning = 0;
    double interval = q->app->conf->queue_recovery_interval;
    if (res->error) {
        md_logf(MD_LOG_WARN, 0,
                MD_LOG_FIELDS(MD_LS("error", res->error),
                              MD_LS("detail", res->message ? res->message : "")),
                "queue: recovery scan failed");
        md_queue_scan_again(q, md_min(interval, 5.0));
        return;
    }
    int n = PQntuples(res->res);
    int pushed = 0, scheduled = 0;
    for (int i = 0; i < n; i++) {
        const char *id = PQgetvalue(res->res, i, 0);
        int prio = strcmp(PQgetvalue(res->res, i, 1), "bulk") == 0 ? MD_PRIORITY_BULK
                                                                   : MD_PRIORITY_TRANSACTIONAL;
        if (PQgetvalue(res->res, i, 2)[0] == 'q') {
            md_queue_xadd(id, prio);
            pushed++;
        } else {
            md_queue_schedule(id, prio, strtod(PQgetvalue(res->res, i, 3), NULL));
            scheduled++;
        }
    }
    if (n > 0) {
        md_metrics_delivery(MD_METRICS_REQUEUED, (uint64_t)n);
        md_logf(MD_LOG_NOTICE, 0,
                MD_LOG_FIELDS(MD_LI("requeued", pushed), MD_LI("rescheduled", scheduled)),
                "queue: recovery scan put lost work back on the queue");
    }
    /* A full page: there is more; go on soon instead of a whole interval later. */
    md_queue_scan_again(q, n >= MD_QUEUE_SCAN_LIMIT ? 0.1 : interval);
}

static void
md_queue_scan_pg(md_queue_t *q)
{
    char secs[32], lim[16];
    snprintf(secs, sizeof(secs), "%.3f", q->app->conf->queue_recovery_interval);
    snprintf(lim, sizeof(lim), "%d", MD_QUEUE_SCAN_LIMIT);
    /* Event ids for leases turned back: at most one per row. */
    size_t cap = 2 + (size_t)MD_QUEUE_SCAN_LIMIT * (MD_UUID_STRLEN + 1);
    char *ids = md_xmalloc(cap);
    char *p = ids;
    *p++ = '{';
    for (int i = 0; i < MD_QUEUE_SCAN_LIMIT; i++) {
        if (i)
            *p++ = ',';
        md_uuid7(p);
        p += MD_UUID_STRLEN;
    }
    *p++ = '}';
    *p = '\0';
    const char *values[] = {secs, q->skip[0] ? "t" : "f", q->skip[1] ? "t" : "f", lim, ids};
    md_pg_query_t qq = {.stmt = "md_queue_scan", .nparams = 5, .values = values};
    int rc = md_pg_exec(q->app->pg, &qq, md_queue_scan_pg_cb, q);
    free(ids);
    if (rc == MD_OK)
        q->scanning = 1;
    else
        md_queue_scan_again(q, 1.0);
}

typedef struct md_queue_lag_s {
    md_queue_t *q;
    int stream;
} md_queue_lag_t;

static md_queue_lag_t md_queue_lag_ctx[2];

/* XINFO GROUPS KEY: does the stream hold entries the group was not given yet?
 * Then the queued messages of that priority are most likely still in it. */
static void
md_queue_lag_reply(void *ctx, redisReply *reply, const char *err)
{
    md_queue_lag_t *lc = ctx;
    md_queue_t *q = lc->q;
    /* Unknown (error, no group yet, a lag Redis cannot compute): assume none, so
     * a lost entry is requeued; a duplicate only costs a claim that finds nothing. */
    q->skip[lc->stream] = 0;
    if (err == NULL && reply->type == REDIS_REPLY_ARRAY) {
        for (size_t g = 0; g < reply->elements; g++) {
            redisReply *grp = reply->element[g];
            if (grp->type != REDIS_REPLY_ARRAY)
                continue;
            bool ours = false;
            long long lag = 0;
            for (size_t k = 0; k + 1 < grp->elements; k += 2) {
                redisReply *key = grp->element[k], *val = grp->element[k + 1];
                if (key->type != REDIS_REPLY_STRING && key->type != REDIS_REPLY_STATUS)
                    continue;
                if (strcmp(key->str, "name") == 0 && val->type == REDIS_REPLY_STRING)
                    ours = strcmp(val->str, MD_QUEUE_GROUP) == 0;
                else if (strcmp(key->str, "lag") == 0 && val->type == REDIS_REPLY_INTEGER)
                    lag = val->integer;
            }
            if (ours && lag > 0)
                q->skip[lc->stream] = 1;
        }
    }
    if (err)
        q->lag_failed = 1;
    if (--q->lag_replies == 0) {
        q->scanning = 0;
        /* Not from a failed reply: that may be the client being destroyed,
         * when the pool is gone already. The timer tries again later. */
        if (q->lag_failed)
            md_queue_scan_again(q, 1.0);
        else if (!q->shutting)
            md_queue_scan_pg(q);
    }
}

static void
md_queue_scan_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    md_unused(loop);
    md_unused(revents);
    md_queue_t *q = t->data;
    if (q->shutting || q->scanning)
        return;
    /* Needs both stores: requeueing into an unreachable Redis would only mark
     * rows as handled. */
    if (!md_pg_pool_ready(q->app->pg) || !md_redis_ready(q->app->redis)) {
        md_queue_scan_again(q, 1.0);
        return;
    }
    q->lag_replies = 0;
    q->lag_failed = 0;
    for (int s = 0; s < 2; s++) {
        /* The group first (a no-op answered BUSYGROUP but after a Redis restart),
         * so its lag counts what was pushed before any dispatcher read. */
        const char *create[] = {"XGROUP",       "CREATE", md_queue_stream[s],
                                MD_QUEUE_GROUP, "0",      "MKSTREAM"};
        (void)md_redis_cmd(q->app->redis, md_queue_ignore_cb, NULL, 6, create, NULL);
    }
    for (int s = 0; s < 2; s++) {
        md_queue_lag_ctx[s].q = q;
        md_queue_lag_ctx[s].stream = s;
        const char *argv[] = {"XINFO", "GROUPS", md_queue_stream[s]};
        if (md_redis_cmd(q->app->redis, md_queue_lag_reply, &md_queue_lag_ctx[s], 3, argv, NULL) ==
            MD_OK)
            q->lag_replies++;
        else
            q->skip[s] = 0;
    }
    if (q->lag_replies > 0)
        q->scanning = 1;
    else
        md_queue_scan_pg(q);
}

/* ---- lifetime ----------------------------------------------------------------- */

int
md_queue_app_init(md_app_t *app)
{
    if (md_queue != NULL)
        return MD_ERROR;
    if (app->pg == NULL || app->redis == NULL) {
        md_log(MD_LOG_INFO, 0, "queue: off (it needs both postgres { } and redis { })");
        return MD_OK;
    }
    md_queue_t *q = md_xcalloc(1, sizeof(*q));
    q->app = app;
    q->move_script = md_redis_script(app->redis, md_queue_move_lua);
    if (q->move_script < 0 ||
        md_pg_prepare(app->pg, "md_queue_scan", md_queue_scan_sql, 5) != MD_OK ||
        md_dispatch_prepare(app->pg) != MD_OK) {
        free(q);
        return MD_ERROR;
    }
    char err[256];
    if (md_esp_init(app->conf, app->slot, err, sizeof(err)) != MD_OK) {
        md_logf(MD_LOG_ERROR, 0, MD_LOG_FIELDS(MD_LS("error", err)),
                "ESP accounts failed to start");
        free(q);
        return MD_ERROR;
    }
    q->esp_up = 1;
    md_queue = q;

    ev_timer_init(&q->tick, md_queue_tick_cb, MD_QUEUE_TICK, MD_QUEUE_TICK);
    q->tick.data = q;
    ev_timer_start(app->loop, &q->tick);
    /* The first scan soon after start (the stores need a moment to connect).
     * Without an ESP nothing consumes the streams, so requeueing would only
     * add entries nobody reads. */
    ev_timer_init(&q->scan, md_queue_scan_cb, 1.0, 0.);
    q->scan.data = q;
    if (app->conf->nesp > 0)
        ev_timer_start(app->loop, &q->scan);

    if (app->conf->nesp == 0) {
        if (app->slot == 0)
            md_log(MD_LOG_WARN, 0,
                   "no esp { } block is configured: accepted mail stays queued until one is");
        return MD_OK;
    }
    if (md_dispatch_start(app) != MD_OK) {
        md_queue_app_destroy(app);
        return MD_ERROR;
    }
    q->dispatcher = 1;
    return MD_OK;
}

void
md_queue_app_shutdown(md_app_t *app)
{
    md_unused(app);
    md_queue_t *q = md_queue;
    if (q == NULL || q->shutting)
        return;
    q->shutting = 1;
    ev_timer_stop(q->app->loop, &q->tick);
    ev_timer_stop(q->app->loop, &q->scan);
    if (q->dispatcher)
        md_dispatch_shutdown();
}

void
md_queue_app_destroy(md_app_t *app)
{
    md_unused(app);
    md_queue_t *q = md_queue;
    if (q == NULL)
        return;
    ev_timer_stop(q->app->loop, &q->tick);
    ev_timer_stop(q->app->loop, &q->scan);
    if (q->dispatcher)
        md_dispatch_destroy();
    if (q->esp_up)
        md_esp_destroy();
    md_queue = NULL;
    free(q);
}

/* ---- issue 5 entry points: placeholders until the queue work lands ---------------- */

void
md_queue_dead(const char *id, const char *tenant_id, const char *code, const char *reason)
{
    md_unused(id);
    md_unused(tenant_id);
    md_unused(code);
    md_unused(reason);
}

int
md_queue_requeue(const char *tenant_id, const char *const *ids, size_t n, md_queue_requeue_cb cb,
                 void *ctx)
{
    md_unused(tenant_id);
    md_unused(ids);
    md_unused(n);
    md_unused(cb);
    md_unused(ctx);
    return MD_ERROR;
}

int
md_queue_redis_stats(md_queue_stats_cb cb, void *ctx)
{
    md_unused(cb);
    md_unused(ctx);
    return MD_ERROR;
}
