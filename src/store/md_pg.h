/*
 * Asynchronous PostgreSQL client: a pool of libpq connections driven by one libev
 * loop (one pool per worker, created after fork). Connections run in nonblocking
 * pipeline mode, so many callers share a round trip; each caller's "unit" (one
 * statement, or a batch of statements) ends with its own Sync, which makes it one
 * implicit transaction and isolates its errors from the other callers' units.
 *
 * Nothing here blocks: connects go through PQconnectStartParams/PQconnectPoll with
 * a DSN whose host is an IP address or a socket directory (names are refused at
 * pool creation, because libpq would resolve them with a blocking getaddrinfo;
 * use hostaddr= or resolve with c-ares first).
 *
 * Failure model, for callers turning errors into HTTP answers:
 *   MD_AGAIN from md_pg_exec*  -> not queued: pool full, down or closing (503 store_unavailable)
 *   md_pg_err_unavailable      -> queued but never sent: no connection came up (503)
 *   md_pg_err_connection_lost  -> sent, connection died: outcome UNKNOWN (not retried here)
 *   md_pg_err_timeout          -> statement_timeout passed (client side, or the server's 57014);
 *                                 if the unit had been sent its outcome is unknown
 *   md_pg_err_sql              -> the server refused a statement; sqlstate says why; the whole
 *                                 unit was rolled back
 */
#ifndef MD_PG_H
#define MD_PG_H

#include "md_core.h"
#include "md_conf.h"
#include <libpq-fe.h>

struct ev_loop;

typedef struct md_pg_pool_s md_pg_pool_t;

/* Error codes: md_pg_result_t.error points at one of these (compare by pointer or strcmp). */
extern const char md_pg_err_timeout[];         /* "timeout" */
extern const char md_pg_err_connection_lost[]; /* "connection_lost" */
extern const char md_pg_err_unavailable[];     /* "unavailable" */
extern const char md_pg_err_sql[];             /* "sql" */

/*
 * The answer to one unit. It and everything it points to (PGresults, strings) are
 * valid only during the callback: copy what you need, never PQclear them.
 */
typedef struct md_pg_result_s {
    const char *error;        /* NULL on success, else one of md_pg_err_* */
    const char *sqlstate;     /* 5 chars for md_pg_err_sql (and a server-side timeout, 57014) */
    const char *message;      /* for logs: the server's primary message or libpq's reason */
    int failed;               /* index of the statement that failed (md_pg_err_sql), else -1 */
    size_t n;                 /* statements in the unit (1 for md_pg_exec) */
    PGresult *const *results; /* n results in statement order; on error entries may be NULL */
    const PGresult *res;      /* results[0]: the common case */
} md_pg_result_t;

/* Runs exactly once per queued unit, never before md_pg_exec* has returned. It may
 * call md_pg_exec* again, and md_pg_pool_shutdown, but not md_pg_pool_destroy. */
typedef void (*md_pg_cb)(void *ctx, const md_pg_result_t *res);

/*
 * One statement. stmt is the name of a statement registered with md_pg_prepare()
 * (sent with PQsendQueryPrepared) or else SQL text (PQsendQueryParams, extended
 * protocol: exactly one statement, no multi-statement strings). values[i] NULL is SQL
 * NULL; lengths and formats as for PQexecParams (NULL: all text); result_format 0
 * text, 1 binary. Everything is copied when needed: the caller may free it as soon
 * as md_pg_exec* returns.
 */
typedef struct md_pg_query_s {
    const char *stmt;
    int nparams;
    const char *const *values;
    const int *lengths;
    const int *formats;
    int result_format;
} md_pg_query_t;

typedef struct md_pg_stats_s {
    unsigned size;       /* connections configured */
    unsigned connected;  /* connections up and serving */
    size_t in_flight;    /* units sent and not answered (including timed-out ones) */
    size_t waiting;      /* units queued for lack of a connection */
    uint64_t errors;     /* units that ended in any error (cumulative) */
    uint64_t reconnects; /* connection attempts after a failure or a loss (cumulative) */
    uint64_t timeouts;   /* units that ended in md_pg_err_timeout (cumulative) */
} md_pg_stats_t;

/* Called when a shutdown has finished: every callback has run and every connection
 * is closed. It runs from the loop, so it may call md_pg_pool_destroy(pool). */
typedef void (*md_pg_done_cb)(md_pg_pool_t *pool, void *data);

/*
 * Creates a pool on loop from conf (copied: conf may be freed afterwards). Checks
 * the DSN (syntax; host must be an IP address or a socket path unless hostaddr is
 * given; reconnect_min <= reconnect_max) but does not connect. Returns NULL with a
 * message in err on a bad configuration. The caller frees the pool with
 * md_pg_pool_destroy().
 */
md_pg_pool_t *md_pg_pool_create(struct ev_loop *loop, const md_pg_conf_t *conf, char *err,
                                size_t errlen);

/*
 * Registers a statement, prepared under name on every connection, before it serves
 * callers and again after each reconnect. Only before md_pg_pool_start(). name and
 * sql are copied. Returns MD_OK, or MD_ERROR (bad arguments, duplicate name, started).
 */
int md_pg_prepare(md_pg_pool_t *pool, const char *name, const char *sql, int nparams);

/* Starts connecting every connection. Returns MD_OK, or MD_ERROR if already started. */
int md_pg_pool_start(md_pg_pool_t *pool);

/*
 * Queues one statement with its own Sync. Returns MD_OK (cb will run exactly once),
 * MD_AGAIN when it was not queued because the pool holds max_waiting units already,
 * no connection is up and none is about to be, or the pool is not started or is
 * shutting down (answer 503 at once), or MD_ERROR on bad arguments. cb gets
 * md_pg_err_timeout if no answer came within statement_timeout of this call.
 */
int md_pg_exec(md_pg_pool_t *pool, const md_pg_query_t *q, md_pg_cb cb, void *ctx);

/* Queues n (1..1024) statements followed by one Sync: one implicit transaction, all
 * or nothing. res->results[i] is statement i's result. Returns as md_pg_exec(). */
int md_pg_exec_batch(md_pg_pool_t *pool, const md_pg_query_t *qs, size_t n, md_pg_cb cb, void *ctx);

/*
 * Stops taking units (md_pg_exec* returns MD_AGAIN from now on). graceful: lets
 * queued and in-flight units finish (each still bounded by statement_timeout);
 * otherwise fails the waiting ones (unavailable) and the sent ones (connection_lost)
 * at once. Then closes the connections and calls done_cb (may be NULL) from the loop.
 */
void md_pg_pool_shutdown(md_pg_pool_t *pool, int graceful, md_pg_done_cb done_cb, void *data);

/* Frees the pool. Callbacks of units still held run now, synchronously, with
 * unavailable or connection_lost. Not from inside an md_pg_cb. NULL is ignored. */
void md_pg_pool_destroy(md_pg_pool_t *pool);

void md_pg_pool_stats(const md_pg_pool_t *pool, md_pg_stats_t *s);
/* At least one connection is up and serving (for /ready). */
int md_pg_pool_ready(const md_pg_pool_t *pool);

#endif
