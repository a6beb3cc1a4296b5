/*
 * A worker's services: the PostgreSQL pool, the Redis client and the module
 * state built on them (auth cache, later the queue). One worker process runs one
 * loop, so there is exactly one md_app per worker, reachable as the md_app global
 * (NULL in the master and in CLI commands), the way Redis keeps its `server`.
 * Created after fork by md_worker_run, before the HTTP server starts accepting.
 */
#ifndef MD_APP_H
#define MD_APP_H

#include "md_core.h"
#include "md_conf.h"
#include <ev.h>

typedef struct md_pg_pool_s md_pg_pool_t;
typedef struct md_redis_s md_redis_t;
typedef struct md_auth_s md_auth_t;
typedef struct md_dns_s md_dns_t;
typedef struct md_http_client_s md_http_client_t;

typedef struct md_app_s {
    struct ev_loop *loop;
    const md_conf_t *conf;
    unsigned slot;      /* metrics slot of this worker */
    md_pg_pool_t *pg;   /* NULL without a postgres { } block */
    md_redis_t *redis;  /* NULL without a redis { } block */
    int schema_version; /* highest migration on disk (md_migrate_latest_version), -1 unknown or no
                           postgres */
    md_auth_t *auth;    /* src/http/md_auth.c */
    md_dns_t *dns;      /* c-ares resolver of this worker (src/core/md_dns.c) */
    md_http_client_t *http_client; /* outbound HTTP(S) to ESP APIs (src/http/md_client.c);
                                      ESP accounts make their endpoints on it */
} md_app_t;

extern md_app_t *md_app;

/*
 * Creates the pool and the client (when configured), lets each module register
 * its prepared statements, subscriptions and timers (md_auth_app_init, ...), then
 * starts them. MD_OK, or MD_ERROR with a message in err (the worker exits 1).
 */
int md_app_init(struct ev_loop *loop, const md_conf_t *conf, unsigned slot, char *err,
                size_t errlen);
/* Graceful: lets the modules queue their last writes (md_auth_app_shutdown), lets
 * in-flight store work finish (PostgreSQL units, Redis commands: each bounded by
 * its timeout), then calls done(data) from the loop (never inside this call).
 * Not graceful: fails what is outstanding now; done (may be NULL) still runs
 * from the loop. With no md_app, done runs at once. */
void md_app_shutdown(int graceful, void (*done)(void *data), void *data);
/* Frees everything. The clients go first: callbacks still owed run then, with an
 * "unavailable"/"connection_lost" error, while the modules' state is still alive;
 * then the modules' destroy (md_auth_app_destroy), which sees app->pg and
 * app->redis as NULL. Call after the HTTP server is drained and before
 * md_http_destroy() (so a callback finds its request still allocated, aborted). */
void md_app_destroy(void);

/*
 * How a handler answers when a store cannot serve now. md_app_store_down(err) is
 * true for the errors that mean "not there now, try again": PostgreSQL's
 * "unavailable", "connection_lost", "timeout" and Redis' "unavailable",
 * "disconnected", "timeout" (not an SQL error or a Redis error reply: those are
 * the handler's to judge). md_app_send_store_unavailable answers 503
 * {"error":{"code":"store_unavailable","message":"<store> is unavailable, retry"}}
 * with Retry-After: 1; store is "postgres" or "redis". It returns MD_OK, so a
 * handler can `return md_app_send_store_unavailable(r, "postgres");` after an
 * md_pg_exec/md_redis_cmd that returned MD_AGAIN, or from a callback whose
 * error md_app_store_down() accepts.
 */
struct md_http_request_s;
bool md_app_store_down(const char *err);
int md_app_send_store_unavailable(struct md_http_request_s *r, const char *store);

/* Refreshes this worker's store gauges and counters in the metrics slot (a 1 s
 * timer does it too, and /metrics just before rendering). */
void md_app_metrics_update(void);

#endif
