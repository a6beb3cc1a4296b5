/*
 * A worker's services (see md_app.h): the PostgreSQL pool, the Redis client, the
 * modules built on them, and the store metrics of this worker's slot.
 *
 * Lifetime, in the worker's order:
 *   md_http_create -> md_app_init -> md_http_start -> ... serve ...
 *   graceful quit: md_http_shutdown(drained) -> md_app_shutdown(1, done) -> done
 *                  ends the loop -> md_app_destroy -> md_http_destroy
 *   fast stop:     md_http_shutdown(0) + md_app_shutdown(0) -> end the loop ->
 *                  md_app_destroy -> md_http_destroy
 * md_app_destroy runs while every request is still allocated, so a store callback
 * still owed (it runs from the destroy with "unavailable"/"connection_lost") finds
 * its request alive (aborted, so answering it is a no-op) and drops its reference.
 */
#include "md_app.h"
#include "md_analyze.h"
#include "md_auth.h"
#include "md_broadcast.h"
#include "md_http.h"
#include "md_log.h"
#include "md_messages.h"
#include "md_metrics.h"
#include "md_migrate.h"
#include "md_pg.h"
#include "md_dns.h"
#include "md_events.h"
#include "md_tracking.h"
#include "md_tracking_store.h"
#include "md_client.h"
#include "md_queue.h"
#include "md_redis.h"
#include "md_suppressions.h"
#include "md_templates.h"

#include <stdio.h>
#include <stdlib.h>

md_app_t *md_app;

typedef struct md_app_priv_s {
    md_app_t app; /* first: md_app points here */
    ev_timer metrics_timer;
    ev_timer shutdown_poll;
    int shutting;      /* 0 serving, 1 graceful shutdown, 2 fast */
    int pg_closed;     /* the pool's shutdown finished (or there is no pool) */
    int queue_settled; /* the dispatcher's last statements are with the pool */
    int goodbye_sent;  /* md_queue_app_goodbye was called */
    int pool_closable; /* graceful: close the pool when the dispatcher settles */
    int auth_up;       /* md_auth_app_init succeeded: md_auth_app_destroy is owed */
    void (*done)(void *data);
    void *done_data;
    /* Counters as last pushed into the metrics slot: the slot gets the deltas. */
    uint64_t pg_errors, pg_timeouts, pg_reconnects;
    uint64_t redis_reconnects, redis_errors;
} md_app_priv_t;

static md_app_priv_t *
priv(void)
{
    return (md_app_priv_t *)md_app;
}

/* An increment since the last push; a counter that went backwards (cannot
 * happen with one client per process) counts nothing and resets the base. */
static uint64_t
delta(uint64_t now, uint64_t *last)
{
    uint64_t d = now >= *last ? now - *last : 0;
    *last = now;
    return d;
}

void
md_app_metrics_update(void)
{
    md_app_priv_t *p = priv();
    if (p == NULL)
        return;
    md_metrics_store_t m;
    memset(&m, 0, sizeof(m));
    if (p->app.pg) {
        md_pg_stats_t s;
        md_pg_pool_stats(p->app.pg, &s);
        m.pg_configured = s.size;
        m.pg_connected = s.connected;
        m.pg_in_flight = (int64_t)s.in_flight;
        m.pg_waiting = (int64_t)s.waiting;
        m.pg_errors = delta(s.errors, &p->pg_errors);
        m.pg_timeouts = delta(s.timeouts, &p->pg_timeouts);
        m.pg_reconnects = delta(s.reconnects, &p->pg_reconnects);
    }
    if (p->app.redis) {
        md_redis_stats_t s;
        md_redis_stats(p->app.redis, &s);
        m.redis_connected = s.connected ? 1 : 0;
        m.redis_in_flight = s.in_flight;
        m.redis_reconnects = delta(s.reconnects, &p->redis_reconnects);
        m.redis_errors = delta(s.errors + s.timeouts, &p->redis_errors);
    }
    md_metrics_store_update(&m);
}

static void
metrics_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    md_unused(loop);
    md_unused(t);
    md_unused(revents);
    md_app_metrics_update();
}

/* Frees what md_app_init built so far; md_app becomes NULL. Store callbacks still
 * owed run inside the client destroys, while the modules' state is still alive;
 * the modules go last, and see app->pg and app->redis as NULL by then. */
static void
app_free(md_app_priv_t *p)
{
    struct ev_loop *loop = p->app.loop;
    ev_timer_stop(loop, &p->metrics_timer);
    ev_timer_stop(loop, &p->shutdown_poll);
    md_metrics_set_collector(NULL);

    md_pg_pool_t *pg = p->app.pg;
    md_redis_t *redis = p->app.redis;
    md_pg_pool_destroy(pg);
    md_redis_destroy(redis);
    md_broadcast_destroy(); /* after the client: its owed replies ended the waits they could */
    p->app.pg = NULL;
    p->app.redis = NULL;
    /* Outbound requests still owed get "canceled" now, while the dispatcher lives;
     * the resolver goes after the client that uses it. */
    md_http_client_destroy(p->app.http_client);
    p->app.http_client = NULL;
    md_dns_destroy(p->app.dns);
    p->app.dns = NULL;
    if (p->auth_up)
        md_auth_app_destroy(&p->app);
    md_messages_app_destroy(&p->app);     /* a no-op unless its init ran */
    md_templates_app_destroy(&p->app);    /* a no-op unless its init ran */
    md_queue_app_destroy(&p->app);        /* a no-op unless its init ran */
    md_suppressions_app_destroy(&p->app); /* a no-op unless its init ran */
    md_events_app_destroy(&p->app);       /* a no-op unless its init ran */
    md_tracking_store_app_destroy(&p->app);
    md_tracking_app_destroy(&p->app);
    md_analyze_app_destroy(&p->app);
    md_app = NULL;
    free(p);
}

int
md_app_init(struct ev_loop *loop, const md_conf_t *conf, unsigned slot, char *err, size_t errlen)
{
    if (md_app != NULL) {
        snprintf(err, errlen, "md_app_init: already initialised");
        return MD_ERROR;
    }
    md_app_priv_t *p = md_xcalloc(1, sizeof(*p));
    p->app.loop = loop;
    p->app.conf = conf;
    p->app.slot = slot;
    p->app.schema_version = -1;
    p->pg_closed = 1;
    ev_init(&p->metrics_timer, metrics_timer_cb);
    ev_init(&p->shutdown_poll, NULL);
    md_app = &p->app;

    char e[512];
    if (conf->postgres.dsn) {
        p->app.pg = md_pg_pool_create(loop, &conf->postgres, e, sizeof(e));
        if (p->app.pg == NULL) {
            snprintf(err, errlen, "postgres: %s", e);
            goto fail;
        }
        p->pg_closed = 0;
    }
    if (conf->redis.address) {
        p->app.redis = md_redis_create(loop, &conf->redis, e, sizeof(e));
        if (p->app.redis == NULL) {
            snprintf(err, errlen, "redis: %s", e);
            goto fail;
        }
    }

    /* The outbound client exists in every worker (cheap until an account makes
     * an endpoint on it): the ESP drivers reach their APIs through it. */
    md_dns_conf_t dc;
    memset(&dc, 0, sizeof(dc));
    p->app.dns = md_dns_create(loop, &dc, e, sizeof(e));
    if (p->app.dns == NULL) {
        snprintf(err, errlen, "dns: %s", e);
        goto fail;
    }
    p->app.http_client = md_http_client_create(loop, p->app.dns);

    /* Read once per configuration: a directory listing is blocking I/O. Only
     * /ready uses it, and only against PostgreSQL. */
    if (p->app.pg) {
        p->app.schema_version = md_migrate_latest_version(conf->migrations_dir);
        if (p->app.schema_version < 0)
            md_logf(MD_LOG_WARN, 0,
                    MD_LOG_FIELDS(
                        MD_LS("migrations_dir", conf->migrations_dir ? conf->migrations_dir : "")),
                    "cannot read the migrations, /ready will report the schema as unknown");
    }

    /* Modules register statements, scripts and subscriptions before the start. */
    if (md_auth_app_init(&p->app) != MD_OK) {
        snprintf(err, errlen, "identity module failed to start");
        goto fail;
    }
    p->auth_up = 1;
    if (md_messages_app_init(&p->app) != MD_OK) {
        snprintf(err, errlen, "messages module failed to start");
        goto fail;
    }
    if (md_templates_app_init(&p->app) != MD_OK) {
        snprintf(err, errlen, "templates module failed to start");
        goto fail;
    }
    if (md_queue_app_init(&p->app) != MD_OK) {
        snprintf(err, errlen, "queue module failed to start");
        goto fail;
    }
    if (md_suppressions_app_init(&p->app) != MD_OK) {
        snprintf(err, errlen, "suppressions module failed to start");
        goto fail;
    }
    if (md_events_app_init(&p->app) != MD_OK) {
        snprintf(err, errlen, "events module failed to start");
        goto fail;
    }
    if (md_tracking_app_init(&p->app) != MD_OK) {
        snprintf(err, errlen, "tracking module failed to start");
        goto fail;
    }
    if (md_tracking_store_app_init(&p->app) != MD_OK) {
        snprintf(err, errlen, "tracking store failed to start");
        goto fail;
    }
    if (md_analyze_app_init(&p->app) != MD_OK) {
        snprintf(err, errlen, "planner statistics module failed to start");
        goto fail;
    }

    if (p->app.pg && md_pg_pool_start(p->app.pg) != MD_OK) {
        snprintf(err, errlen, "postgres: cannot start the pool");
        goto fail;
    }
    if (p->app.redis && md_redis_start(p->app.redis) != MD_OK) {
        snprintf(err, errlen, "redis: cannot start the client");
        goto fail;
    }

    md_metrics_set_collector(md_app_metrics_update);
    md_app_metrics_update();
    ev_timer_set(&p->metrics_timer, 1., 1.);
    p->metrics_timer.data = p;
    ev_timer_start(loop, &p->metrics_timer);
    return MD_OK;

fail:
    app_free(p);
    return MD_ERROR;
}

/* Polls until the shutdown may be reported: the pool has closed and (graceful)
 * no Redis command is in flight; each of those is bounded by its own timeout. */
static void
shutdown_poll_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    md_unused(revents);
    md_app_priv_t *p = t->data;
    if (p->shutting == 1) {
        if (!p->pg_closed)
            return;
        if (p->app.redis) {
            md_redis_stats_t s;
            md_redis_stats(p->app.redis, &s);
            if (s.in_flight > 0)
                return;
            /* Every push was answered: the queue's goodbye, then its answer. */
            if (!p->goodbye_sent) {
                p->goodbye_sent = 1;
                if (md_queue_app_goodbye(&p->app))
                    return;
            }
        }
    }
    ev_timer_stop(loop, t);
    void (*done)(void *) = p->done;
    p->done = NULL;
    if (done)
        done(p->done_data);
}

static void
pg_closed_cb(md_pg_pool_t *pool, void *data)
{
    md_unused(pool);
    md_app_priv_t *p = data;
    p->pg_closed = 1;
}

/* A no-op when a graceful shutdown of the pool is already under way: its
 * units are each bounded by statement_timeout, and md_app_destroy fails the rest. */
static void
app_close_pool(md_app_priv_t *p)
{
    if (p->app.pg)
        md_pg_pool_shutdown(p->app.pg, p->shutting == 1, pg_closed_cb, p);
}

/* The dispatcher's last statements are with the pool. Inside
 * md_queue_app_shutdown it only notes it: md_app_shutdown closes the pool
 * after the group-commit units went. */
static void
app_queue_settled(void *data)
{
    md_app_priv_t *p = data;
    p->queue_settled = 1;
    if (p->pool_closable) {
        p->pool_closable = 0;
        app_close_pool(p);
    }
}

void
md_app_shutdown(int graceful, void (*done)(void *data), void *data)
{
    md_app_priv_t *p = priv();
    if (p == NULL) {
        if (done)
            done(data);
        return;
    }
    if (p->shutting == 2 || (p->shutting == 1 && graceful))
        return;
    p->shutting = graceful ? 1 : 2;
    p->done = done;
    p->done_data = data;
    md_logf(MD_LOG_DEBUG, 0, MD_LOG_FIELDS(MD_LI("graceful", graceful)), "store shutdown");
    /* Modules hand in their last writes (last_used_at) while the pool takes work. */
    if (graceful && p->auth_up)
        md_auth_app_shutdown(&p->app);
    /* The dispatcher stops taking work before the pool stops taking statements,
     * and gracefully, the pool goes on taking them until the dispatcher has
     * released what its claims in flight took (app_queue_settled). */
    p->pool_closable = 0;
    md_queue_app_shutdown(&p->app, app_queue_settled, p);
    /* Units waiting for the group-commit window go now, while the pool takes them. */
    md_messages_app_shutdown(&p->app);
    md_analyze_app_shutdown(&p->app);
    if (!graceful || p->queue_settled)
        app_close_pool(p);
    else
        p->pool_closable = 1;
    ev_timer_stop(p->app.loop, &p->shutdown_poll);
    ev_timer_init(&p->shutdown_poll, shutdown_poll_cb, 0., 0.02);
    p->shutdown_poll.data = p;
    ev_timer_start(p->app.loop, &p->shutdown_poll);
}

void
md_app_destroy(void)
{
    md_app_priv_t *p = priv();
    if (p == NULL)
        return;
    md_app_metrics_update(); /* the counters' last increments */
    app_free(p);
}

bool
md_app_store_down(const char *err)
{
    if (err == NULL)
        return false;
    return strcmp(err, "unavailable") == 0 || strcmp(err, "connection_lost") == 0 ||
           strcmp(err, "timeout") == 0 || strcmp(err, "disconnected") == 0;
}

int
md_app_send_store_unavailable(md_http_request_t *r, const char *store)
{
    md_http_add_header(r, "Retry-After", "1");
    md_http_send_error(r, 503, "store_unavailable", "%s is unavailable, retry later",
                       store ? store : "the store");
    return MD_OK;
}
