/*
 * Planner statistics that keep up with fast-growing tables (see md_analyze.h and
 * migrations/0010_refresh_stats.sql for why).
 *
 * One timer per worker; a call in flight is never doubled. The function's
 * advisory lock makes concurrent callers return at once, so N workers cost N
 * cheap reads of pg_stat_user_tables per interval and at most one ANALYZE of
 * a table.
 */
#include "md_analyze.h"
#include "md_app.h"
#include "md_log.h"
#include "md_pg.h"

#include <ev.h>
#include <stdlib.h>

#define ANALYZE_STMT "analyze_refresh"

typedef struct md_analyze_s {
    struct ev_loop *loop;
    md_pg_pool_t *pool;
    double interval;
    ev_timer timer;       /* repeating, unreferenced: it never keeps a stopping worker alive */
    ev_tstamp not_before; /* after a failure */
    int running;          /* a call is in flight */
    int failing;          /* the last call failed (logged once per streak) */
    int shutting;         /* no new call */
} md_analyze_t;

static md_analyze_t *an;

static void
analyze_cb(void *ctx, const md_pg_result_t *res)
{
    md_unused(ctx);
    md_analyze_t *a = an;
    if (a == NULL)
        return;
    a->running = 0;
    if (res->error) {
        if (!a->failing)
            md_logf(MD_LOG_WARN, 0,
                    MD_LOG_FIELDS(MD_LS("error", res->error),
                                  MD_LS("sqlstate", res->sqlstate ? res->sqlstate : "")),
                    "planner statistics: refresh failed, next try in %.0fs: %s", MD_ANALYZE_BACKOFF,
                    res->message ? res->message : "");
        a->failing = 1;
        a->not_before = ev_now(a->loop) + MD_ANALYZE_BACKOFF;
        return;
    }
    a->failing = 0;
    for (int i = 0; i < PQntuples(res->res); i++)
        md_logf(MD_LOG_INFO, 0, MD_LOG_FIELDS(MD_LS("table", PQgetvalue(res->res, i, 0))),
                "planner statistics: analyzed a table that grew");
}

static void
analyze_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    md_unused(t);
    md_unused(revents);
    md_analyze_t *a = an;
    if (a == NULL || a->shutting || a->running || ev_now(loop) < a->not_before)
        return;
    const char *params[] = {MD_ANALYZE_MIN_CHANGES, MD_ANALYZE_MAX_ROWS};
    md_pg_query_t q = {.stmt = ANALYZE_STMT, .nparams = 2, .values = params};
    if (md_pg_exec(a->pool, &q, analyze_cb, NULL) == MD_OK) /* else: the pool is full or down */
        a->running = 1;
}

int
md_analyze_app_init(md_app_t *app)
{
    if (an != NULL || app == NULL)
        return MD_ERROR;
    double interval = app->conf ? app->conf->postgres.analyze_interval : 0;
    if (app->pg == NULL || interval <= 0)
        return MD_OK;
    if (md_pg_prepare(app->pg, ANALYZE_STMT,
                      "SELECT * FROM mailerd_refresh_stats($1::bigint, $2::bigint)", 2) != MD_OK)
        return MD_ERROR;
    md_analyze_t *a = md_xcalloc(1, sizeof(*a));
    a->loop = app->loop;
    a->pool = app->pg;
    a->interval = interval;
    ev_init(&a->timer, analyze_timer_cb);
    ev_timer_set(&a->timer, interval, interval);
    ev_timer_start(a->loop, &a->timer);
    ev_unref(a->loop);
    an = a;
    return MD_OK;
}

void
md_analyze_app_shutdown(md_app_t *app)
{
    md_unused(app);
    if (an)
        an->shutting = 1;
}

void
md_analyze_app_destroy(md_app_t *app)
{
    md_unused(app);
    md_analyze_t *a = an;
    if (a == NULL)
        return;
    ev_ref(a->loop); /* before the stop, which takes its reference back */
    ev_timer_stop(a->loop, &a->timer);
    an = NULL;
    free(a);
}
