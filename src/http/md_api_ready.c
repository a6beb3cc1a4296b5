/*
 * GET /ready: readiness for a load balancer (liveness is /health, which stays 200
 * whatever the stores do).
 *
 * 200 {"status":"ready","checks":{"postgres":"ok","redis":"ok","schema":"ok"}}
 * when a real round trip to each store succeeds within READY_DEADLINE:
 *   postgres: SELECT max(version) FROM schema_migrations on the pool
 *   redis:    PING on the command connection
 *   schema:   that max(version) equals the highest migration on disk
 *             (md_app->schema_version, read once at worker start)
 * Otherwise 503 with the same shape, "status":"not_ready", each failing check
 * saying why ("down", "timeout", "error: SQLSTATE", "not_configured",
 * "behind: 0/1", "ahead: 2/1", "unknown") and the usual error object with
 * code "not_ready".
 *
 * A store that is not configured fails readiness ("not_configured"): the send
 * path needs both, so a mailerd without them cannot take traffic.
 *
 * Both checks run concurrently; a store already known to be down (no connection
 * up) fails at once without waiting. One result serves every /ready for
 * READY_CACHE seconds and requests arriving while a check runs wait for it, so a
 * load balancer hammering /ready costs at most one query and one PING per worker
 * per READY_CACHE. A store found down with no connection up is looked at again
 * as soon as one is (cached_down_is_over).
 */
#include "md_router.h"
#include "md_app.h"
#include "md_pg.h"
#include "md_redis.h"

#include <stdio.h>
#include <stdlib.h>

#define READY_DEADLINE 1.0  /* seconds a check may take in all */
#define READY_CACHE    0.25 /* seconds a result is reused */

/* GET /ready. */
void md_api_ready_register(md_router_t *rt, const md_conf_t *conf);

typedef struct ready_waiter_s ready_waiter_t;

/* One check in progress. It lives until it has answered and every store callback
 * it is owed has run (a callback may come after the deadline answered). */
typedef struct ready_check_s {
    struct ev_loop *loop;
    unsigned pending; /* store callbacks still owed */
    int finished;     /* results published and waiters answered */
    int expected;     /* md_app->schema_version when the check started */
    ev_timer deadline;
    ready_waiter_t *waiters;
    char pg[48], redis[48], schema[48]; /* "" until known */
    int pg_unasked, redis_unasked;      /* "down": no connection was up */
} ready_check_t;

/* A request waiting for the running check; allocated from the request's pool. */
struct ready_waiter_s {
    md_http_request_t *r;
    ready_check_t *check; /* NULL once unlinked */
    ready_waiter_t *prev, *next;
};

/* The last result of this worker and the check under way. */
static struct {
    ready_check_t *running;
    int have;
    double at;
    char pg[48], redis[48], schema[48];
    int pg_unasked, redis_unasked;
} R;

static int
check_ok(const char *v)
{
    return strcmp(v, "ok") == 0;
}

/* Answers r from the cached result. */
static int
ready_answer(md_http_request_t *r)
{
    int ok = check_ok(R.pg) && check_ok(R.redis) && check_ok(R.schema);
    json_t *checks =
        json_pack("{s:s,s:s,s:s}", "postgres", R.pg, "redis", R.redis, "schema", R.schema);
    json_t *body = json_pack("{s:s,s:o}", "status", ok ? "ready" : "not_ready", "checks", checks);
    if (!ok) {
        char msg[200];
        size_t n = 0;
        msg[0] = '\0';
        const char *names[] = {"postgres", "redis", "schema"};
        const char *vals[] = {R.pg, R.redis, R.schema};
        for (size_t i = 0; i < md_nelems(names); i++) {
            if (check_ok(vals[i]) || n >= sizeof(msg))
                continue;
            n += (size_t)snprintf(msg + n, sizeof(msg) - n, "%s%s: %s", n ? "; " : "", names[i],
                                  vals[i]);
        }
        json_object_set_new(body, "error",
                            json_pack("{s:s,s:s}", "code", "not_ready", "message", msg));
    }
    md_http_add_header(r, "Cache-Control", "no-store");
    md_http_send_json(r, ok ? 200 : 503, body);
    return MD_OK;
}

static void
waiter_unlink(ready_waiter_t *w)
{
    ready_check_t *c = w->check;
    if (c == NULL)
        return;
    if (w->prev)
        w->prev->next = w->next;
    else
        c->waiters = w->next;
    if (w->next)
        w->next->prev = w->prev;
    w->check = NULL;
    w->prev = w->next = NULL;
}

/* Pool cleanup: a request freed while waiting (worker exit) leaves the list. */
static void
waiter_cleanup(void *data)
{
    waiter_unlink(data);
}

static void
check_free_if_done(ready_check_t *c)
{
    if (c->finished && c->pending == 0)
        free(c);
}

/* Publishes c's results (unknown ones as "timeout") and answers every waiter. */
static void
check_finish(ready_check_t *c)
{
    if (c->finished)
        return;
    c->finished = 1;
    ev_timer_stop(c->loop, &c->deadline);
    if (!c->pg[0])
        snprintf(c->pg, sizeof(c->pg), "timeout");
    if (!c->redis[0])
        snprintf(c->redis, sizeof(c->redis), "timeout");
    if (!c->schema[0])
        snprintf(c->schema, sizeof(c->schema), "unknown");
    memcpy(R.pg, c->pg, sizeof(R.pg));
    memcpy(R.redis, c->redis, sizeof(R.redis));
    memcpy(R.schema, c->schema, sizeof(R.schema));
    R.pg_unasked = c->pg_unasked;
    R.redis_unasked = c->redis_unasked;
    R.have = 1;
    R.at = ev_now(c->loop);
    if (R.running == c)
        R.running = NULL;
    while (c->waiters) {
        ready_waiter_t *w = c->waiters;
        md_http_request_t *r = w->r;
        waiter_unlink(w);
        ready_answer(r); /* a no-op for a client that left; drops r's reference */
    }
}

static void
check_maybe_finish(ready_check_t *c)
{
    if (!c->finished && c->pg[0] && c->redis[0] && c->schema[0])
        check_finish(c);
}

static void
deadline_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    md_unused(loop);
    md_unused(revents);
    ready_check_t *c = t->data;
    check_finish(c);
    check_free_if_done(c);
}

/* What a store error is called in the checks. */
static void
describe_error(char *out, size_t len, const char *err, const char *sqlstate)
{
    if (err && strcmp(err, "timeout") == 0)
        snprintf(out, len, "timeout");
    else if (err && strcmp(err, "sql") == 0)
        snprintf(out, len, "error: %s", sqlstate ? sqlstate : "?");
    else
        snprintf(out, len, "down");
}

static void
pg_cb(void *ctx, const md_pg_result_t *res)
{
    ready_check_t *c = ctx;
    c->pending--;
    if (!c->finished) {
        int have_version = 0;
        long version = 0;
        if (res->error == NULL) {
            snprintf(c->pg, sizeof(c->pg), "ok");
            have_version = 1;
            if (res->res && PQntuples(res->res) == 1 && !PQgetisnull(res->res, 0, 0))
                version = strtol(PQgetvalue(res->res, 0, 0), NULL, 10);
        } else if (res->error == md_pg_err_sql && res->sqlstate &&
                   strcmp(res->sqlstate, "42P01") == 0) {
            /* No schema_migrations: the server answers, nothing is migrated. */
            snprintf(c->pg, sizeof(c->pg), "ok");
            have_version = 1;
        } else {
            describe_error(c->pg, sizeof(c->pg), res->error, res->sqlstate);
        }
        if (!have_version || c->expected < 0)
            snprintf(c->schema, sizeof(c->schema), "unknown");
        else if (version == c->expected)
            snprintf(c->schema, sizeof(c->schema), "ok");
        else
            snprintf(c->schema, sizeof(c->schema), "%s: %ld/%d",
                     version < c->expected ? "behind" : "ahead", version, c->expected);
        check_maybe_finish(c);
    }
    check_free_if_done(c);
}

static void
redis_cb(void *ctx, redisReply *reply, const char *err)
{
    ready_check_t *c = ctx;
    c->pending--;
    if (!c->finished) {
        if (reply && reply->type == REDIS_REPLY_STATUS && reply->str &&
            strcmp(reply->str, "PONG") == 0)
            snprintf(c->redis, sizeof(c->redis), "ok");
        else if (reply)
            snprintf(c->redis, sizeof(c->redis), "error");
        else
            describe_error(c->redis, sizeof(c->redis), err, NULL);
        check_maybe_finish(c);
    }
    check_free_if_done(c);
}

/* Starts a check; it may finish before returning (nothing to wait for). */
static void
check_start(struct ev_loop *loop)
{
    ready_check_t *c = md_xcalloc(1, sizeof(*c));
    c->loop = loop;
    ev_timer_init(&c->deadline, deadline_cb, READY_DEADLINE, 0.);
    c->deadline.data = c;
    R.running = c;

    const md_app_t *app = md_app;
    c->expected = app ? app->schema_version : -1;

    if (app == NULL || app->pg == NULL) {
        snprintf(c->pg, sizeof(c->pg), "not_configured");
        snprintf(c->schema, sizeof(c->schema), "unknown");
    } else if (!md_pg_pool_ready(app->pg)) {
        c->pg_unasked = 1;
        snprintf(c->pg, sizeof(c->pg), "down");
        snprintf(c->schema, sizeof(c->schema), "unknown");
    } else {
        md_pg_query_t q = {.stmt = "SELECT max(version) FROM schema_migrations"};
        if (md_pg_exec(app->pg, &q, pg_cb, c) == MD_OK) {
            c->pending++;
        } else { /* refused (overloaded): kept for READY_CACHE like an answer */
            snprintf(c->pg, sizeof(c->pg), "down");
            snprintf(c->schema, sizeof(c->schema), "unknown");
        }
    }

    if (app == NULL || app->redis == NULL) {
        snprintf(c->redis, sizeof(c->redis), "not_configured");
    } else if (!md_redis_ready(app->redis)) {
        c->redis_unasked = 1;
        snprintf(c->redis, sizeof(c->redis), "down");
    } else {
        const char *argv[] = {"PING"};
        if (md_redis_cmd(app->redis, redis_cb, c, 1, argv, NULL) == MD_OK)
            c->pending++;
        else
            snprintf(c->redis, sizeof(c->redis), "down");
    }

    if (c->pending == 0) {
        check_finish(c);
        check_free_if_done(c);
        return;
    }
    ev_timer_start(loop, &c->deadline);
}

/* A "down" found with no connection up must not outlive the outage: the cache
 * bounds queries and PINGs, and this one is recomputed once, when a connection
 * is up. (A query the pool refused, overloaded, is not: asking again at once
 * would cost a PING per request just when load is highest.)
 * Without this a worker kept saying not ready for up to READY_CACHE after its
 * store came back (t/45 met it as a worker answering 503 just after start). */
static int
cached_down_is_over(void)
{
    const md_app_t *app = md_app;
    if (app == NULL)
        return 0;
    return (R.pg_unasked && md_pg_pool_ready(app->pg)) ||
           (R.redis_unasked && md_redis_ready(app->redis));
}

static int
api_ready(md_http_request_t *r)
{
    if (R.have && R.running == NULL && ev_now(r->loop) - R.at < READY_CACHE &&
        !cached_down_is_over())
        return ready_answer(r);
    if (R.running == NULL)
        check_start(r->loop);
    if (R.running == NULL) /* finished at once */
        return ready_answer(r);
    ready_waiter_t *w = md_pcalloc(r->pool, sizeof(*w));
    w->r = r;
    w->check = R.running;
    w->next = R.running->waiters;
    if (w->next)
        w->next->prev = w;
    R.running->waiters = w;
    md_pool_cleanup_add(r->pool, waiter_cleanup, w);
    return MD_AGAIN;
}

void
md_api_ready_register(md_router_t *rt, const md_conf_t *conf)
{
    md_unused(conf);
    md_router_add(rt, MD_M_GET, "/ready", api_ready);
}
