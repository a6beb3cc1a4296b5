/*
 * Planner statistics that keep up with fast-growing tables (see md_analyze.h and
 * migrations/0010_refresh_stats.sql for why).
 *
 * One md_periodic per worker: a call in flight is never doubled. The function's
 * advisory lock makes concurrent callers return at once, so N workers cost N
 * cheap reads of pg_stat_user_tables per interval and at most one ANALYZE of
 * a table.
 */
#include "md_analyze.h"
#include "md_app.h"
#include "md_log.h"
#include "md_periodic.h"
#include "md_pg.h"

#include <stdlib.h>

#define ANALYZE_STMT "analyze_refresh"

typedef struct md_analyze_s {
    md_pg_pool_t *pool;
    md_periodic_t every;
    int failing; /* the last call failed (logged once per streak) */
} md_analyze_t;

static md_analyze_t *an;

static void
analyze_cb(void *ctx, const md_pg_result_t *res)
{
    md_unused(ctx);
    md_analyze_t *a = an;
    if (a == NULL)
        return;
    if (res->error) {
        if (!a->failing)
            md_logf(MD_LOG_WARN, 0,
                    MD_LOG_FIELDS(MD_LS("error", res->error),
                                  MD_LS("sqlstate", res->sqlstate ? res->sqlstate : "")),
                    "planner statistics: refresh failed, next try in %.0fs: %s", MD_ANALYZE_BACKOFF,
                    res->message ? res->message : "");
        a->failing = 1;
        md_periodic_done(&a->every, MD_ANALYZE_BACKOFF);
        return;
    }
    a->failing = 0;
    md_periodic_done(&a->every, 0);
    for (int i = 0; i < PQntuples(res->res); i++)
        md_logf(MD_LOG_INFO, 0, MD_LOG_FIELDS(MD_LS("table", PQgetvalue(res->res, i, 0))),
                "planner statistics: analyzed a table that grew");
}

static bool
analyze_round(void *data)
{
    md_analyze_t *a = data;
    const char *params[] = {MD_ANALYZE_MIN_CHANGES, MD_ANALYZE_MAX_ROWS};
    md_pg_query_t q = {.stmt = ANALYZE_STMT, .nparams = 2, .values = params};
    return md_pg_exec(a->pool, &q, analyze_cb, NULL) == MD_OK; /* else: the pool is full or down */
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
    a->pool = app->pg;
    md_periodic_start(&a->every, app->loop, interval, interval, analyze_round, a);
    an = a;
    return MD_OK;
}

void
md_analyze_app_shutdown(md_app_t *app)
{
    md_unused(app);
    if (an)
        md_periodic_stop(&an->every);
}

void
md_analyze_app_destroy(md_app_t *app)
{
    md_unused(app);
    md_analyze_t *a = an;
    if (a == NULL)
        return;
    md_periodic_stop(&a->every);
    an = NULL;
    free(a);
}
