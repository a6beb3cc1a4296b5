/*
 * PostgreSQL pool on libpq (15) in nonblocking pipeline mode, driven by libev.
 *
 * Shape: a pool owns pool_size connections and one wait queue. A caller's unit
 * (md_pg_exec: one statement; md_pg_exec_batch: several) is sent at once to the
 * least-loaded connection that is up, or waits in the queue while the first
 * connections are still coming up. Each unit is followed by its own Sync, so it is
 * one implicit transaction and an error aborts only that unit. Each connection keeps
 * a FIFO of sent units; answers come back in the same order, and the Sync result
 * (PGRES_PIPELINE_SYNC) closes a unit.
 *
 * Connection states: DOWN (not started / shut down) -> CONNECTING (PQconnectPoll
 * driven by ev_io, own connect timer) -> SETUP (SET statement_timeout and every
 * registered PREPARE, pipelined as one internal unit) -> READY. Any failure closes
 * the connection, fails its sent units with connection_lost, and goes to BACKOFF
 * (exponential with jitter) before the next attempt.
 *
 * Timeouts: every unit has a client-side timer of statement_timeout from the exec
 * call. A waiting unit is simply failed. For a unit already sent, we answer the
 * caller "timeout" at once and let the unit run out: the server enforces the same
 * statement_timeout (SET on connect), so it ends the statement itself moments
 * later and the pipeline keeps flowing for everyone else. We do not cancel: libpq
 * 15 only has PQcancel, which connects and waits (blocking). Dropping the
 * connection instead would fail every other unit pipelined behind on it. If the
 * connection then makes no progress at all for statement_timeout + connect_timeout
 * (a server that no longer answers, or SET LOCAL statement_timeout = 0), the
 * timed-out unit's watchdog drops the connection and it reconnects.
 *
 * Deferred work: callbacks must never run inside md_pg_exec*, so failures found
 * there (and results that libpq may have read while flushing) are handled from a
 * zero-delay timer on the next loop pass; a timer is never starved by busy I/O.
 */
#include "md_pg.h"
#include "md_list.h"
#include "md_log.h"

#include <arpa/inet.h>
#include <ev.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

const char md_pg_err_timeout[] = "timeout";
const char md_pg_err_connection_lost[] = "connection_lost";
const char md_pg_err_unavailable[] = "unavailable";
const char md_pg_err_sql[] = "sql";

#define MD_PG_MAX_BATCH 1024
#define MD_PG_MSG_MAX   256

/* ---- configuration ------------------------------------------------------------ */

static const md_conf_bounds_t md_pg_pool_size_bounds = {1, 1024};
static const md_conf_bounds_t md_pg_time_bounds = {0.001, 3600};
static const md_conf_bounds_t md_pg_waiting_bounds = {1, 10000000};
/* 0 flushes on the next loop pass; more than a second would only add latency. */
static const md_conf_bounds_t md_pg_gc_window_bounds = {0, 1};
static const md_conf_bounds_t md_pg_analyze_bounds = {0, 3600};
static const md_conf_bounds_t md_pg_gc_rows_bounds = {1, 100000};

static int md_pg_check_dsn(const char *dsn, char *target, size_t targetlen, char *err,
                           size_t errlen);

/* dsn: stored like a string, and checked now so that `mailerd -t` reports a host
 * name (or a malformed DSN) with its file and line. */
static int
md_pg_conf_set_dsn(md_conf_parser_t *cf, const md_conf_cmd_t *cmd, void *base)
{
    char err[512];
    if (md_conf_set_str(cf, cmd, base) != MD_OK)
        return MD_ERROR;
    if (md_pg_check_dsn(md_conf_arg(cf, 1), NULL, 0, err, sizeof(err)) != MD_OK)
        return md_conf_error(cf, "%s", err);
    return MD_OK;
}

static const md_conf_cmd_t md_pg_cmds[] = {
    {"dsn", MD_CONF_PG, MD_CONF_TAKE1, md_pg_conf_set_dsn, offsetof(md_pg_conf_t, dsn), NULL, NULL,
     md_conf_free_str},
    {"pool_size", MD_CONF_PG, MD_CONF_TAKE1, md_conf_set_number, offsetof(md_pg_conf_t, pool_size),
     &md_pg_pool_size_bounds, "4", NULL},
    {"connect_timeout", MD_CONF_PG, MD_CONF_TAKE1, md_conf_set_time,
     offsetof(md_pg_conf_t, connect_timeout), &md_pg_time_bounds, "5s", NULL},
    {"statement_timeout", MD_CONF_PG, MD_CONF_TAKE1, md_conf_set_time,
     offsetof(md_pg_conf_t, statement_timeout), &md_pg_time_bounds, "5s", NULL},
    {"max_waiting", MD_CONF_PG, MD_CONF_TAKE1, md_conf_set_number,
     offsetof(md_pg_conf_t, max_waiting), &md_pg_waiting_bounds, "1024", NULL},
    {"reconnect_min", MD_CONF_PG, MD_CONF_TAKE1, md_conf_set_time,
     offsetof(md_pg_conf_t, reconnect_min), &md_pg_time_bounds, "100ms", NULL},
    {"reconnect_max", MD_CONF_PG, MD_CONF_TAKE1, md_conf_set_time,
     offsetof(md_pg_conf_t, reconnect_max), &md_pg_time_bounds, "5s", NULL},
    {"group_commit_window", MD_CONF_PG, MD_CONF_TAKE1, md_conf_set_time,
     offsetof(md_pg_conf_t, group_commit_window), &md_pg_gc_window_bounds, "1ms", NULL},
    {"group_commit_max_rows", MD_CONF_PG, MD_CONF_TAKE1, md_conf_set_number,
     offsetof(md_pg_conf_t, group_commit_max_rows), &md_pg_gc_rows_bounds, "500", NULL},
    {"analyze_interval", MD_CONF_PG, MD_CONF_TAKE1, md_conf_set_time,
     offsetof(md_pg_conf_t, analyze_interval), &md_pg_analyze_bounds, "2s", NULL},
    {NULL, 0, 0, NULL, 0, NULL, NULL, NULL},
};

const md_conf_block_t md_pg_conf_block = {"postgres", MD_CONF_PG, md_pg_cmds};

/* ---- types -------------------------------------------------------------------- */

/* Intrusive circular doubly-linked list; an unlinked node points at itself. */

enum { MD_PG_DOWN = 0, MD_PG_BACKOFF, MD_PG_CONNECTING, MD_PG_SETUP, MD_PG_READY };
enum { MD_PG_U_NEW = 0, MD_PG_U_WAIT, MD_PG_U_SENT, MD_PG_U_DONE };

typedef struct md_pg_conn_s md_pg_conn_t;

typedef struct md_pg_unit_s {
    md_list_t link; /* in the wait queue, a connection's FIFO, or the done list */
    md_pg_pool_t *pool;
    md_pg_conn_t *conn; /* once sent */
    int where;          /* MD_PG_U_* */
    bool internal;      /* the connection setup unit: no caller, no timer */
    bool abandoned;     /* its caller already got "timeout": discard the answer */
    bool got;           /* a result arrived for statement qi (a NULL then ends it) */
    ev_timer timer;     /* statement_timeout, then the watchdog */
    md_pg_cb cb;
    void *ctx;
    md_pg_query_t *qs; /* owned copy while waiting, else NULL */
    const char *error;
    char *message;
    char sqlstate[6];
    int failed;
    size_t n, qi;
    PGresult *results[]; /* n */
} md_pg_unit_t;

struct md_pg_conn_s {
    md_pg_pool_t *pool;
    unsigned idx;
    int state;
    PGconn *pq;
    ev_io io;
    ev_timer timer;     /* connect deadline, or the backoff before the next attempt */
    md_list_t fifo;     /* sent units, oldest first */
    size_t load;        /* caller units in fifo */
    unsigned fails;     /* consecutive failed attempts; 0 once READY */
    ev_tstamp progress; /* last answer, or when the pipeline went from idle to busy */
    bool check;         /* libpq may hold unread results: look on the next pass */
};

typedef struct md_pg_stmt_s {
    char *name;
    char *sql;
    int nparams;
} md_pg_stmt_t;

struct md_pg_pool_s {
    struct ev_loop *loop;
    md_pg_conf_t conf; /* dsn is our copy */
    char target[128];  /* "127.0.0.1:5432/mailerd" for logs: no user, no password */
    int stmt_timeout_ms;
    md_pg_stmt_t *stmts;
    size_t nstmts;
    md_pg_conn_t *conns;
    unsigned nconns;
    md_list_t waitq;
    size_t nwaiting;
    size_t ninflight; /* caller units in FIFOs, timed-out ones included */
    size_t nheld;     /* caller units whose callback has not run yet */
    md_list_t done;   /* failed units whose callbacks are due on the next pass */
    ev_timer defer;
    bool started, closing, finished, done_due;
    md_pg_done_cb done_cb;
    void *done_data;
    uint64_t errors, reconnects, timeouts;
    uint64_t rnd;
    char last_error[MD_PG_MSG_MAX];
};

static void md_pg_conn_close(md_pg_conn_t *c, const char *why);
static void md_pg_conn_connect(md_pg_conn_t *c);
static void md_pg_pool_check_shutdown(md_pg_pool_t *pool);
static void md_pg_dispatch_waiting(md_pg_pool_t *pool);

/* ---- small helpers -------------------------------------------------------------- */

#define md_pg_unit_of(l) md_container_of(l, md_pg_unit_t, link)

/* Copies a libpq message into buf on one line (libpq's span several, with tabs). */
static void
md_pg_clean_msg(char *buf, size_t len, const char *msg)
{
    size_t j = 0;
    bool space = false;
    if (msg == NULL || *msg == '\0')
        msg = "unknown error";
    for (const char *p = msg; *p && j + 1 < len; p++) {
        if (*p == '\n' || *p == '\r' || *p == '\t' || *p == ' ') {
            space = j > 0;
            continue;
        }
        if (space && j + 2 < len)
            buf[j++] = ' ';
        space = false;
        buf[j++] = *p;
    }
    buf[j] = '\0';
}

/* xorshift64*: jitter only, no need for a CSPRNG. */
static double
md_pg_rand01(md_pg_pool_t *pool)
{
    uint64_t x = pool->rnd;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    pool->rnd = x;
    return (double)((x * 2685821657736338717ULL) >> 11) / 9007199254740992.0;
}

static const md_pg_stmt_t *
md_pg_find_stmt(const md_pg_pool_t *pool, const char *name)
{
    for (size_t i = 0; i < pool->nstmts; i++) {
        if (pool->stmts[i].name[0] == name[0] && strcmp(pool->stmts[i].name, name) == 0)
            return &pool->stmts[i];
    }
    return NULL;
}

static void
md_pg_defer(md_pg_pool_t *pool)
{
    if (!ev_is_active(&pool->defer))
        ev_timer_start(pool->loop, &pool->defer);
}

/* ---- units ---------------------------------------------------------------------- */

static md_pg_unit_t *
md_pg_unit_new(md_pg_pool_t *pool, size_t n)
{
    md_pg_unit_t *u = md_xcalloc(1, sizeof(*u) + n * sizeof(PGresult *));
    md_list_init(&u->link);
    u->pool = pool;
    u->n = n;
    u->failed = -1;
    return u;
}

/* Frees u and what it owns (results, query copy, message). u is unlinked. */
static void
md_pg_unit_free(md_pg_unit_t *u)
{
    ev_timer_stop(u->pool->loop, &u->timer);
    for (size_t i = 0; i < u->n; i++)
        PQclear(u->results[i]);
    free(u->qs);
    free(u->message);
    free(u);
}

static size_t
md_pg_param_len(const md_pg_query_t *q, int i)
{
    if (q->formats && q->formats[i])
        return (size_t)q->lengths[i];
    return strlen(q->values[i]) + 1;
}

/*
 * One allocation holding a deep copy of qs[0..n): the queries, then the pointer
 * arrays, then the int arrays, then the bytes, so every section stays aligned.
 * The caller owns the result (free()).
 */
static md_pg_query_t *
md_pg_queries_copy(const md_pg_query_t *qs, size_t n)
{
    size_t nptr = 0, nint = 0, nbytes = 0;
    for (size_t k = 0; k < n; k++) {
        const md_pg_query_t *q = &qs[k];
        nbytes += strlen(q->stmt) + 1;
        nptr += (size_t)q->nparams;
        nint += (q->lengths ? (size_t)q->nparams : 0) + (q->formats ? (size_t)q->nparams : 0);
        for (int i = 0; i < q->nparams; i++)
            nbytes += q->values[i] ? md_pg_param_len(q, i) : 0;
    }
    size_t size = n * sizeof(md_pg_query_t) + nptr * sizeof(char *) + nint * sizeof(int) + nbytes;
    char *mem = md_xmalloc(size ? size : 1);
    md_pg_query_t *out = (md_pg_query_t *)(void *)mem;
    const char **ptrs = (const char **)(void *)(mem + n * sizeof(md_pg_query_t));
    int *ints = (int *)(void *)(ptrs + nptr);
    char *bytes = (char *)(ints + nint);
    for (size_t k = 0; k < n; k++) {
        const md_pg_query_t *q = &qs[k];
        md_pg_query_t *o = &out[k];
        *o = *q;
        size_t l = strlen(q->stmt) + 1;
        memcpy(bytes, q->stmt, l);
        o->stmt = bytes;
        bytes += l;
        o->values = ptrs;
        for (int i = 0; i < q->nparams; i++) {
            if (q->values[i] == NULL) {
                ptrs[i] = NULL;
                continue;
            }
            l = md_pg_param_len(q, i);
            memcpy(bytes, q->values[i], l);
            ptrs[i] = bytes;
            bytes += l;
        }
        ptrs += q->nparams;
        if (q->lengths) {
            memcpy(ints, q->lengths, (size_t)q->nparams * sizeof(int));
            o->lengths = ints;
            ints += q->nparams;
        }
        if (q->formats) {
            memcpy(ints, q->formats, (size_t)q->nparams * sizeof(int));
            o->formats = ints;
            ints += q->nparams;
        }
    }
    return out;
}

/* Queues u's callback with an error for the next loop pass. u is unlinked. */
static void
md_pg_unit_fail(md_pg_unit_t *u, const char *code, const char *message)
{
    md_pg_pool_t *pool = u->pool;
    ev_timer_stop(pool->loop, &u->timer);
    u->error = code;
    free(u->message);
    u->message = md_xstrdup(message);
    u->where = MD_PG_U_DONE;
    md_list_insert_tail(&pool->done, &u->link);
    md_pg_defer(pool);
}

/* Runs u's callback with what u holds (results, or error). Does not free u. */
static void
md_pg_unit_deliver(md_pg_unit_t *u)
{
    md_pg_pool_t *pool = u->pool;
    md_pg_result_t res = {.error = u->error,
                          .sqlstate = u->sqlstate[0] ? u->sqlstate : NULL,
                          .message = u->message,
                          .failed = u->failed,
                          .n = u->n,
                          .results = u->results,
                          .res = u->results[0]};
    if (res.error) {
        pool->errors++;
        if (res.error == md_pg_err_timeout)
            pool->timeouts++;
    }
    pool->nheld--;
    md_pg_cb cb = u->cb;
    u->cb = NULL;
    cb(u->ctx, &res);
}

/* ---- connections ---------------------------------------------------------------- */

static void
md_pg_conn_watch(md_pg_conn_t *c, int events, bool newfd)
{
    struct ev_loop *loop = c->pool->loop;
    int fd = PQsocket(c->pq);
    if (!newfd && ev_is_active(&c->io) && c->io.fd == fd &&
        (c->io.events & (EV_READ | EV_WRITE)) == events)
        return;
    ev_io_stop(loop, &c->io);
    /* ev_io_set tells libev the fd may be a new one: libpq may close and reopen
     * sockets while connecting (next address, SSL fallback), same number or not. */
    if (newfd || c->io.fd != fd)
        ev_io_set(&c->io, fd, events);
    else
        ev_io_modify(&c->io, events);
    ev_io_start(loop, &c->io);
}

/* Pushes libpq's output buffer; watches write while some is left. MD_ERROR: the
 * connection was closed. */
static int
md_pg_conn_flush(md_pg_conn_t *c)
{
    int r = PQflush(c->pq);
    if (r < 0) {
        md_pg_conn_close(c, PQerrorMessage(c->pq));
        return MD_ERROR;
    }
    md_pg_conn_watch(c, r == 1 ? EV_READ | EV_WRITE : EV_READ, false);
    return MD_OK;
}

static md_pg_conn_t *
md_pg_least_loaded(md_pg_pool_t *pool)
{
    md_pg_conn_t *best = NULL;
    for (unsigned i = 0; i < pool->nconns; i++) {
        md_pg_conn_t *c = &pool->conns[i];
        if (c->state == MD_PG_READY && (best == NULL || c->load < best->load))
            best = c;
    }
    return best;
}

/* Whether a caller may wait for a connection: one is up, or one is on its first
 * attempt (pool start). After a failure we answer MD_AGAIN at once instead: the
 * next attempt is a probe, and callers must not hang on it. */
static bool
md_pg_can_wait(const md_pg_pool_t *pool)
{
    for (unsigned i = 0; i < pool->nconns; i++) {
        const md_pg_conn_t *c = &pool->conns[i];
        if (c->state == MD_PG_READY)
            return true;
        if ((c->state == MD_PG_CONNECTING || c->state == MD_PG_SETUP) && c->fails == 0)
            return true;
    }
    return false;
}

/* Fails the waiting units when no connection can take them soon. */
static void
md_pg_check_available(md_pg_pool_t *pool)
{
    char msg[MD_PG_MSG_MAX + 64];
    if (md_list_empty(&pool->waitq) || md_pg_can_wait(pool))
        return;
    snprintf(msg, sizeof(msg), "no PostgreSQL connection: %s",
             pool->last_error[0] ? pool->last_error : "shutting down");
    while (!md_list_empty(&pool->waitq)) {
        md_pg_unit_t *u = md_pg_unit_of(pool->waitq.next);
        md_list_remove(&u->link);
        pool->nwaiting--;
        md_pg_unit_fail(u, md_pg_err_unavailable, msg);
    }
}

/*
 * Sends u's statements and a Sync on c (READY or, for the setup unit, SETUP) and
 * appends u to c's FIFO. A send failure means the connection is broken: it is
 * closed, which fails u on the next pass. Never runs callbacks.
 */
static void
md_pg_unit_send(md_pg_conn_t *c, md_pg_unit_t *u, const md_pg_query_t *qs)
{
    md_pg_pool_t *pool = c->pool;
    PGconn *pq = c->pq;
    int ok = 1;
    for (size_t i = 0; ok && i < u->n; i++) {
        const md_pg_query_t *q = &qs[i];
        if (md_pg_find_stmt(pool, q->stmt))
            ok = PQsendQueryPrepared(pq, q->stmt, q->nparams, q->values, q->lengths, q->formats,
                                     q->result_format);
        else
            ok = PQsendQueryParams(pq, q->stmt, q->nparams, NULL, q->values, q->lengths, q->formats,
                                   q->result_format);
    }
    if (ok)
        ok = PQpipelineSync(pq);
    if (md_list_empty(&c->fifo))
        c->progress = ev_now(pool->loop);
    u->where = MD_PG_U_SENT;
    u->conn = c;
    md_list_insert_tail(&c->fifo, &u->link);
    if (!u->internal) {
        c->load++;
        pool->ninflight++;
    }
    if (!ok) {
        md_pg_conn_close(c, PQerrorMessage(pq));
        return;
    }
    if (md_pg_conn_flush(c) != MD_OK)
        return;
    /* A flush that could not write everything reads input to avoid a deadlock; those
     * answers sit in libpq's buffer where no read event will report them. */
    c->check = true;
    md_pg_defer(pool);
}

static void
md_pg_schedule_reconnect(md_pg_conn_t *c)
{
    md_pg_pool_t *pool = c->pool;
    double lo = pool->conf.reconnect_min, hi = pool->conf.reconnect_max;
    c->fails++;
    double d = lo * ldexp(1.0, (int)md_min(c->fails - 1, 30u));
    if (d > hi)
        d = hi;
    d *= 0.5 + 0.5 * md_pg_rand01(pool); /* jitter: workers must not reconnect in lockstep */
    if (d < lo)
        d = lo;
    c->state = MD_PG_BACKOFF;
    ev_timer_set(&c->timer, d, 0);
    ev_timer_start(pool->loop, &c->timer);
    md_logf(MD_LOG_INFO, 0,
            MD_LOG_FIELDS(MD_LI("conn", c->idx), MD_LS("server", pool->target),
                          MD_LI("attempt", c->fails)),
            "postgres reconnecting in %d ms", (int)(d * 1000));
}

/* Closes c without logging or reconnecting (shutdown). Sent units are freed
 * quietly: this is only called when none has a caller waiting any more. */
static void
md_pg_conn_finish(md_pg_conn_t *c)
{
    md_pg_pool_t *pool = c->pool;
    ev_io_stop(pool->loop, &c->io);
    ev_timer_stop(pool->loop, &c->timer);
    while (!md_list_empty(&c->fifo)) {
        md_pg_unit_t *u = md_pg_unit_of(c->fifo.next);
        md_list_remove(&u->link);
        if (!u->internal) {
            c->load--;
            pool->ninflight--;
        }
        md_pg_unit_free(u);
    }
    if (c->pq) {
        PQfinish(c->pq);
        c->pq = NULL;
    }
    c->state = MD_PG_DOWN;
}

/*
 * A connection failed (connect, setup, I/O, watchdog): closes it, fails its sent
 * units with connection_lost (next pass), logs, and schedules the next attempt
 * unless the pool is closing. why may point into c->pq's memory.
 */
static void
md_pg_conn_close(md_pg_conn_t *c, const char *why)
{
    md_pg_pool_t *pool = c->pool;
    char reason[MD_PG_MSG_MAX];
    int was = c->state;
    md_pg_clean_msg(reason, sizeof(reason), why);
    md_strlcpy(pool->last_error, reason, sizeof(pool->last_error));

    ev_io_stop(pool->loop, &c->io);
    ev_timer_stop(pool->loop, &c->timer);
    if (c->pq) {
        PQfinish(c->pq);
        c->pq = NULL;
    }
    while (!md_list_empty(&c->fifo)) {
        md_pg_unit_t *u = md_pg_unit_of(c->fifo.next);
        md_list_remove(&u->link);
        if (u->internal) {
            md_pg_unit_free(u);
            continue;
        }
        c->load--;
        pool->ninflight--;
        if (u->abandoned)
            md_pg_unit_free(u);
        else
            md_pg_unit_fail(u, md_pg_err_connection_lost, reason);
    }
    c->state = MD_PG_DOWN;

    if (was == MD_PG_READY)
        md_logf(MD_LOG_ERROR, 0,
                MD_LOG_FIELDS(MD_LI("conn", c->idx), MD_LS("server", pool->target),
                              MD_LS("reason", reason)),
                "postgres connection lost");
    else
        md_logf(c->fails == 0 ? MD_LOG_WARN : MD_LOG_INFO, 0,
                MD_LOG_FIELDS(MD_LI("conn", c->idx), MD_LS("server", pool->target),
                              MD_LS("reason", reason)),
                "postgres connect failed");

    if (!pool->closing || pool->nheld > 0)
        md_pg_schedule_reconnect(c);
    md_pg_check_available(pool);
    md_pg_pool_check_shutdown(pool);
}

/* The setup unit (SET + PREPAREs) came back: the connection serves, or fails. */
static void
md_pg_conn_setup_done(md_pg_conn_t *c, md_pg_unit_t *u)
{
    md_pg_pool_t *pool = c->pool;
    char msg[MD_PG_MSG_MAX + 64];
    for (size_t i = 0; i < u->n; i++) {
        ExecStatusType st = u->results[i] ? PQresultStatus(u->results[i]) : PGRES_FATAL_ERROR;
        if (st == PGRES_COMMAND_OK)
            continue;
        snprintf(msg, sizeof(msg), "%s%s: %s", i == 0 ? "SET statement_timeout" : "preparing ",
                 i == 0 ? "" : pool->stmts[i - 1].name,
                 u->results[i] ? PQresultErrorMessage(u->results[i]) : "no result");
        md_pg_unit_free(u);
        md_pg_conn_close(c, msg);
        return;
    }
    md_pg_unit_free(u);
    c->state = MD_PG_READY;
    c->fails = 0;
    ev_timer_stop(pool->loop, &c->timer);
    pool->last_error[0] = '\0';
    md_logf(MD_LOG_INFO, 0,
            MD_LOG_FIELDS(MD_LI("conn", c->idx), MD_LS("server", pool->target),
                          MD_LI("server_version", PQserverVersion(c->pq)),
                          MD_LI("backend_pid", PQbackendPID(c->pq))),
            "postgres connected");
    md_pg_dispatch_waiting(pool);
}

/* A unit's Sync arrived: deliver results to its caller, or run the setup step. */
static void
md_pg_unit_complete(md_pg_conn_t *c, md_pg_unit_t *u)
{
    md_pg_pool_t *pool = c->pool;
    if (u->internal) {
        md_pg_conn_setup_done(c, u);
        return;
    }
    if (u->abandoned) {
        md_pg_unit_free(u);
        md_pg_pool_check_shutdown(pool);
        return;
    }
    ev_timer_stop(pool->loop, &u->timer);
    for (size_t i = 0; i < u->n; i++) {
        PGresult *r = u->results[i];
        ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
        if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY)
            continue;
        const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
        const char *primary = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
        u->failed = (int)i;
        md_strlcpy(u->sqlstate, state ? state : "", sizeof(u->sqlstate));
        /* 57014 is query_canceled: we never cancel, so it is the server's own
         * statement_timeout, which callers handle like ours. */
        u->error = state && strcmp(state, "57014") == 0 ? md_pg_err_timeout : md_pg_err_sql;
        u->message = md_xstrdup(primary ? primary
                                : r     ? PQresultErrorMessage(r)
                                        : "no result for statement");
        break;
    }
    md_pg_unit_deliver(u);
    md_pg_unit_free(u);
    md_pg_pool_check_shutdown(pool);
}

/*
 * Reads every result libpq can give without blocking and hands them to the units
 * at the head of c's FIFO. Callbacks run from here and may send on c, close it
 * (then c->pq changes and we stop) or shut the pool down.
 */
static void
md_pg_conn_read_results(md_pg_conn_t *c)
{
    md_pg_pool_t *pool = c->pool;
    PGconn *pq = c->pq;
    while (c->pq == pq && pq != NULL && !md_list_empty(&c->fifo)) {
        md_pg_unit_t *u = md_pg_unit_of(c->fifo.next);
        if (PQisBusy(pq))
            break;
        PGresult *r = PQgetResult(pq);
        if (r == NULL) {
            if (u->got) { /* end of statement qi's results */
                u->got = false;
                u->qi++;
                continue;
            }
            break;
        }
        c->progress = ev_now(pool->loop);
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_PIPELINE_SYNC) {
            PQclear(r);
            if (u->qi != u->n || u->got) {
                md_pg_conn_close(c, "pipeline out of step (sync before the unit's results)");
                return;
            }
            md_list_remove(&u->link);
            if (!u->internal) {
                c->load--;
                pool->ninflight--;
            }
            md_pg_unit_complete(c, u);
            continue;
        }
        if (u->qi >= u->n) {
            PQclear(r);
            md_pg_conn_close(c, "pipeline out of step (more results than statements)");
            return;
        }
        /* One result per statement is the rule; if more come, keep the first error. */
        PGresult *prev = u->results[u->qi];
        if (prev == NULL ||
            (PQresultStatus(prev) != PGRES_FATAL_ERROR && st == PGRES_FATAL_ERROR)) {
            PQclear(prev);
            u->results[u->qi] = r;
        } else {
            PQclear(r);
        }
        u->got = true;
    }
    if (c->pq == pq && pq != NULL && PQstatus(pq) == CONNECTION_BAD)
        md_pg_conn_close(c, PQerrorMessage(pq));
}

/* Connected: nonblocking, pipeline mode, then SET + PREPAREs as one unit. */
static void
md_pg_conn_established(md_pg_conn_t *c)
{
    md_pg_pool_t *pool = c->pool;
    PGconn *pq = c->pq;
    char set[64];
    if (PQsetnonblocking(pq, 1) != 0 || PQenterPipelineMode(pq) != 1) {
        md_pg_conn_close(c, PQerrorMessage(pq));
        return;
    }
    c->state = MD_PG_SETUP;
    md_pg_unit_t *u = md_pg_unit_new(pool, 1 + pool->nstmts);
    u->internal = true;
    snprintf(set, sizeof(set), "SET statement_timeout = %d", pool->stmt_timeout_ms);
    int ok = PQsendQueryParams(pq, set, 0, NULL, NULL, NULL, NULL, 0);
    for (size_t i = 0; ok && i < pool->nstmts; i++)
        ok = PQsendPrepare(pq, pool->stmts[i].name, pool->stmts[i].sql, pool->stmts[i].nparams,
                           NULL);
    if (ok)
        ok = PQpipelineSync(pq);
    c->progress = ev_now(pool->loop);
    u->where = MD_PG_U_SENT;
    u->conn = c;
    md_list_insert_tail(&c->fifo, &u->link);
    if (!ok) {
        md_pg_conn_close(c, PQerrorMessage(pq));
        return;
    }
    if (md_pg_conn_flush(c) == MD_OK)
        md_pg_conn_read_results(c);
}

static void
md_pg_conn_poll(md_pg_conn_t *c)
{
    switch (PQconnectPoll(c->pq)) {
    case PGRES_POLLING_READING:
        md_pg_conn_watch(c, EV_READ, true);
        break;
    case PGRES_POLLING_WRITING:
        md_pg_conn_watch(c, EV_WRITE, true);
        break;
    case PGRES_POLLING_OK:
        md_pg_conn_established(c);
        break;
    default:
        md_pg_conn_close(c, PQerrorMessage(c->pq));
        break;
    }
}

static void
md_pg_conn_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    md_pg_conn_t *c = md_container_of(w, md_pg_conn_t, io);
    md_unused(loop);
    if (c->state == MD_PG_CONNECTING) {
        md_pg_conn_poll(c);
        return;
    }
    if ((revents & EV_WRITE) && md_pg_conn_flush(c) != MD_OK)
        return;
    if ((revents & EV_READ) && !PQconsumeInput(c->pq)) {
        md_pg_conn_close(c, PQerrorMessage(c->pq));
        return;
    }
    md_pg_conn_read_results(c);
}

static void
md_pg_conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    md_pg_conn_t *c = md_container_of(w, md_pg_conn_t, timer);
    char msg[64];
    md_unused(loop);
    md_unused(revents);
    if (c->state == MD_PG_BACKOFF) {
        c->pool->reconnects++;
        md_pg_conn_connect(c);
    } else if (c->state == MD_PG_CONNECTING || c->state == MD_PG_SETUP) {
        snprintf(msg, sizeof(msg), "connect timed out after %g s", c->pool->conf.connect_timeout);
        md_pg_conn_close(c, msg);
    }
}

/* Server notices go to our log, not to libpq's default of stderr. */
static void
md_pg_notice_cb(void *arg, const PGresult *res)
{
    md_pg_conn_t *c = arg;
    const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    int level = sev && strcmp(sev, "WARNING") == 0 ? MD_LOG_WARN : MD_LOG_DEBUG;
    md_logf(level, 0,
            MD_LOG_FIELDS(MD_LI("conn", c->idx), MD_LS("server", c->pool->target),
                          MD_LS("severity", sev ? sev : "?")),
            "postgres: %s", msg ? msg : "");
}

/* Starts one asynchronous connect. Failures go through md_pg_conn_close. */
static void
md_pg_conn_connect(md_pg_conn_t *c)
{
    md_pg_pool_t *pool = c->pool;
    /* Entries are processed in order and the expanded dsn comes last, so it
     * overrides the fallback name. */
    const char *const keys[] = {"fallback_application_name", "dbname", NULL};
    const char *const vals[] = {"mailerd", pool->conf.dsn, NULL};
    c->pq = PQconnectStartParams(keys, vals, 1);
    if (c->pq == NULL) {
        md_pg_conn_close(c, "out of memory");
        return;
    }
    if (PQstatus(c->pq) == CONNECTION_BAD || PQsocket(c->pq) < 0) {
        md_pg_conn_close(c, PQerrorMessage(c->pq));
        return;
    }
    PQsetNoticeReceiver(c->pq, md_pg_notice_cb, c);
    c->state = MD_PG_CONNECTING;
    /* libpq's own connect_timeout is not enforced in nonblocking mode. */
    ev_timer_stop(pool->loop, &c->timer);
    ev_timer_set(&c->timer, pool->conf.connect_timeout, 0);
    ev_timer_start(pool->loop, &c->timer);
    /* After PQconnectStart, act as if the last poll said "writing". */
    md_pg_conn_watch(c, EV_WRITE, true);
}

/* ---- pool-level scheduling ------------------------------------------------------- */

static void
md_pg_dispatch_waiting(md_pg_pool_t *pool)
{
    md_pg_conn_t *c;
    while (!md_list_empty(&pool->waitq) && (c = md_pg_least_loaded(pool)) != NULL) {
        md_pg_unit_t *u = md_pg_unit_of(pool->waitq.next);
        md_list_remove(&u->link);
        pool->nwaiting--;
        md_pg_unit_send(c, u, u->qs);
        free(u->qs); /* libpq copied it into its buffer */
        u->qs = NULL;
    }
}

static void
md_pg_unit_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    md_pg_unit_t *u = md_container_of(w, md_pg_unit_t, timer);
    md_pg_pool_t *pool = u->pool;
    md_unused(revents);
    if (u->where == MD_PG_U_WAIT) {
        md_list_remove(&u->link);
        pool->nwaiting--;
        md_pg_unit_fail(u, md_pg_err_timeout, "no PostgreSQL connection within statement_timeout");
        md_pg_pool_check_shutdown(pool);
        return;
    }
    if (u->where != MD_PG_U_SENT)
        return;
    md_pg_conn_t *c = u->conn;
    double limit = pool->conf.statement_timeout + pool->conf.connect_timeout;
    if (!u->abandoned) {
        /* Answer now; the unit stays in the pipeline and its answer is dropped. Arm
         * the watchdog before the callback, which may free u (shutdown). */
        u->abandoned = true;
        u->error = md_pg_err_timeout;
        u->message = md_xstrdup("statement_timeout passed (client side)");
        ev_timer_set(&u->timer, pool->conf.connect_timeout, 0);
        ev_timer_start(loop, &u->timer);
        md_pg_unit_deliver(u);
        md_pg_pool_check_shutdown(pool);
        return;
    }
    double idle = ev_now(loop) - c->progress;
    if (idle >= limit - 0.001) {
        md_pg_conn_close(c, "no answer from the server within statement_timeout + connect_timeout");
        return;
    }
    ev_timer_set(&u->timer, limit - idle, 0);
    ev_timer_start(loop, &u->timer);
}

/* Next-pass work: failed units' callbacks, results buffered inside libpq, and the
 * shutdown callback (last: it may destroy the pool). */
static void
md_pg_defer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    md_pg_pool_t *pool = md_container_of(w, md_pg_pool_t, defer);
    md_unused(loop);
    md_unused(revents);
    while (!md_list_empty(&pool->done)) {
        md_pg_unit_t *u = md_pg_unit_of(pool->done.next);
        md_list_remove(&u->link);
        md_pg_unit_deliver(u);
        md_pg_unit_free(u);
    }
    for (unsigned i = 0; i < pool->nconns; i++) {
        md_pg_conn_t *c = &pool->conns[i];
        if (!c->check)
            continue;
        c->check = false;
        if (c->state == MD_PG_READY || c->state == MD_PG_SETUP)
            md_pg_conn_read_results(c);
    }
    md_pg_pool_check_shutdown(pool);
    if (pool->done_due && md_list_empty(&pool->done)) {
        md_pg_done_cb cb = pool->done_cb;
        pool->done_due = false;
        pool->done_cb = NULL;
        if (cb)
            cb(pool, pool->done_data);
    }
}

/* Once closing and no caller is left: closes every connection, then done_cb. */
static void
md_pg_pool_check_shutdown(md_pg_pool_t *pool)
{
    if (!pool->closing || pool->finished || pool->nheld > 0)
        return;
    pool->finished = true;
    for (unsigned i = 0; i < pool->nconns; i++)
        md_pg_conn_finish(&pool->conns[i]);
    pool->done_due = true;
    md_pg_defer(pool);
}

/* ---- DSN check ------------------------------------------------------------------ */

static bool
md_pg_is_ip(const char *s, size_t n)
{
    char buf[INET6_ADDRSTRLEN + 1];
    unsigned char addr[sizeof(struct in6_addr)];
    if (n == 0 || n >= sizeof(buf))
        return false;
    memcpy(buf, s, n);
    buf[n] = '\0';
    return inet_pton(AF_INET, buf, addr) == 1 || inet_pton(AF_INET6, buf, addr) == 1;
}

/* Refuses a DSN that would make libpq resolve a name (blocking getaddrinfo) and
 * fills target (may be NULL) with "address:port/db" for logs: never the user or the
 * password. Returns MD_OK or MD_ERROR with err set. */
static int
md_pg_check_dsn(const char *dsn, char *target, size_t targetlen, char *err, size_t errlen)
{
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(dsn, &perr);
    if (opts == NULL) {
        char msg[MD_PG_MSG_MAX];
        md_pg_clean_msg(msg, sizeof(msg), perr ? perr : "out of memory");
        snprintf(err, errlen, "postgres dsn: %s", msg);
        PQfreemem(perr);
        return MD_ERROR;
    }
    const char *host = NULL, *hostaddr = NULL, *port = NULL, *db = NULL, *service = NULL;
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (o->val == NULL || o->val[0] == '\0')
            continue;
        if (strcmp(o->keyword, "host") == 0)
            host = o->val;
        else if (strcmp(o->keyword, "hostaddr") == 0)
            hostaddr = o->val;
        else if (strcmp(o->keyword, "port") == 0)
            port = o->val;
        else if (strcmp(o->keyword, "dbname") == 0)
            db = o->val;
        else if (strcmp(o->keyword, "service") == 0)
            service = o->val;
    }
    /* Unset keywords fall back to the environment inside libpq. */
    if (host == NULL)
        host = getenv("PGHOST");
    if (hostaddr == NULL)
        hostaddr = getenv("PGHOSTADDR");
    int rc = MD_OK;
    if (hostaddr && *hostaddr) {
        /* host then only names the server for TLS and .pgpass: never resolved */
    } else if (service) {
        snprintf(err, errlen,
                 "postgres dsn: service= may name a host that libpq would resolve with a "
                 "blocking call; give the server's address with hostaddr=");
        rc = MD_ERROR;
    } else if (host) {
        for (const char *p = host; rc == MD_OK;) {
            size_t n = strcspn(p, ",");
            /* empty: default socket; '/' or '@': Unix socket directory or abstract name */
            if (n > 0 && p[0] != '/' && p[0] != '@' && !md_pg_is_ip(p, n)) {
                snprintf(err, errlen,
                         "postgres dsn: host \"%.*s\" is a name, which libpq would resolve with "
                         "a blocking call; give its IP address with hostaddr= (host= may stay, "
                         "for TLS and .pgpass) or use a socket directory",
                         (int)md_min(n, 64), p);
                rc = MD_ERROR;
            }
            if (p[n] == '\0')
                break;
            p += n + 1;
        }
    }
    const char *where = hostaddr && *hostaddr ? hostaddr : host && *host ? host : "local";
    if (target)
        snprintf(target, targetlen, "%.64s:%.8s/%.40s", where, port ? port : "5432", db ? db : "");
    PQconninfoFree(opts);
    return rc;
}

/* ---- public API ----------------------------------------------------------------- */

md_pg_pool_t *
md_pg_pool_create(struct ev_loop *loop, const md_pg_conf_t *conf, char *err, size_t errlen)
{
    if (loop == NULL || conf == NULL || conf->dsn == NULL || conf->dsn[0] == '\0') {
        snprintf(err, errlen, "postgres: no dsn configured");
        return NULL;
    }
    if (conf->pool_size < 1 || conf->max_waiting < 1 || conf->connect_timeout <= 0 ||
        conf->statement_timeout <= 0 || conf->reconnect_min <= 0) {
        snprintf(err, errlen,
                 "postgres: pool_size, max_waiting and every timeout must be positive");
        return NULL;
    }
    if (conf->reconnect_min > conf->reconnect_max) {
        snprintf(err, errlen, "postgres: reconnect_min (%gs) is above reconnect_max (%gs)",
                 conf->reconnect_min, conf->reconnect_max);
        return NULL;
    }
    md_pg_pool_t *pool = md_xcalloc(1, sizeof(*pool));
    if (md_pg_check_dsn(conf->dsn, pool->target, sizeof(pool->target), err, errlen) != MD_OK) {
        free(pool);
        return NULL;
    }
    pool->loop = loop;
    pool->conf = *conf;
    pool->conf.dsn = md_xstrdup(conf->dsn);
    pool->stmt_timeout_ms = (int)md_max(1.0, conf->statement_timeout * 1000.0 + 0.5);
    pool->nconns = (unsigned)conf->pool_size;
    pool->conns = md_xcalloc(pool->nconns, sizeof(md_pg_conn_t));
    for (unsigned i = 0; i < pool->nconns; i++) {
        md_pg_conn_t *c = &pool->conns[i];
        c->pool = pool;
        c->idx = i;
        md_list_init(&c->fifo);
        ev_io_init(&c->io, md_pg_conn_io_cb, -1, EV_READ);
        ev_timer_init(&c->timer, md_pg_conn_timer_cb, 0, 0);
    }
    md_list_init(&pool->waitq);
    md_list_init(&pool->done);
    ev_timer_init(&pool->defer, md_pg_defer_cb, 0, 0);
    pool->rnd = ((uint64_t)getpid() << 32) ^ (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)pool;
    if (pool->rnd == 0)
        pool->rnd = 0x9e3779b97f4a7c15ULL;
    return pool;
}

int
md_pg_prepare(md_pg_pool_t *pool, const char *name, const char *sql, int nparams)
{
    if (pool == NULL || pool->started || name == NULL || name[0] == '\0' || sql == NULL ||
        nparams < 0 || nparams > 65535 || md_pg_find_stmt(pool, name))
        return MD_ERROR;
    pool->stmts = md_xrealloc(pool->stmts, (pool->nstmts + 1) * sizeof(md_pg_stmt_t));
    pool->stmts[pool->nstmts++] =
        (md_pg_stmt_t){.name = md_xstrdup(name), .sql = md_xstrdup(sql), .nparams = nparams};
    return MD_OK;
}

int
md_pg_pool_start(md_pg_pool_t *pool)
{
    if (pool == NULL || pool->started || pool->closing)
        return MD_ERROR;
    pool->started = true;
    for (unsigned i = 0; i < pool->nconns; i++)
        md_pg_conn_connect(&pool->conns[i]);
    return MD_OK;
}

static bool
md_pg_query_valid(const md_pg_query_t *q)
{
    if (q->stmt == NULL || q->stmt[0] == '\0' || q->nparams < 0 || q->nparams > 65535 ||
        (q->nparams > 0 && q->values == NULL))
        return false;
    for (int i = 0; q->formats && i < q->nparams; i++) {
        if (q->formats[i] && q->values[i] && (q->lengths == NULL || q->lengths[i] < 0))
            return false;
    }
    return true;
}

int
md_pg_exec_batch(md_pg_pool_t *pool, const md_pg_query_t *qs, size_t n, md_pg_cb cb, void *ctx)
{
    if (pool == NULL || qs == NULL || n == 0 || n > MD_PG_MAX_BATCH || cb == NULL)
        return MD_ERROR;
    for (size_t i = 0; i < n; i++) {
        if (!md_pg_query_valid(&qs[i]))
            return MD_ERROR;
    }
    if (!pool->started || pool->closing)
        return MD_AGAIN;
    if (pool->nwaiting + pool->ninflight >= (size_t)pool->conf.max_waiting)
        return MD_AGAIN;
    md_pg_conn_t *c = md_pg_least_loaded(pool);
    if (c == NULL && !md_pg_can_wait(pool))
        return MD_AGAIN;

    md_pg_unit_t *u = md_pg_unit_new(pool, n);
    u->cb = cb;
    u->ctx = ctx;
    pool->nheld++;
    ev_timer_init(&u->timer, md_pg_unit_timer_cb, pool->conf.statement_timeout, 0);
    ev_timer_start(pool->loop, &u->timer);
    if (c) {
        md_pg_unit_send(c, u, qs);
    } else {
        u->qs = md_pg_queries_copy(qs, n);
        u->where = MD_PG_U_WAIT;
        md_list_insert_tail(&pool->waitq, &u->link);
        pool->nwaiting++;
    }
    return MD_OK;
}

int
md_pg_exec(md_pg_pool_t *pool, const md_pg_query_t *q, md_pg_cb cb, void *ctx)
{
    return md_pg_exec_batch(pool, q, 1, cb, ctx);
}

/* Fails every unit now: waiting ones as "unavailable" (never sent), sent ones as
 * "connection_lost" (outcome unknown), and closes every connection. The failures
 * are delivered from the done list, never from inside this call. */
static void
md_pg_pool_fail_all(md_pg_pool_t *pool, const char *why)
{
    while (!md_list_empty(&pool->waitq)) {
        md_pg_unit_t *u = md_pg_unit_of(pool->waitq.next);
        md_list_remove(&u->link);
        pool->nwaiting--;
        md_pg_unit_fail(u, md_pg_err_unavailable, why);
    }
    for (unsigned i = 0; i < pool->nconns; i++) {
        md_pg_conn_t *c = &pool->conns[i];
        while (!md_list_empty(&c->fifo)) {
            md_pg_unit_t *u = md_pg_unit_of(c->fifo.next);
            md_list_remove(&u->link);
            if (!u->internal) {
                c->load--;
                pool->ninflight--;
            }
            if (u->internal || u->abandoned)
                md_pg_unit_free(u);
            else
                md_pg_unit_fail(u, md_pg_err_connection_lost, why);
        }
        md_pg_conn_finish(c);
    }
}

void
md_pg_pool_shutdown(md_pg_pool_t *pool, int graceful, md_pg_done_cb done_cb, void *data)
{
    if (pool == NULL || pool->closing)
        return;
    pool->closing = true;
    pool->done_cb = done_cb;
    pool->done_data = data;
    if (!graceful) {
        md_pg_pool_fail_all(pool, "postgres pool shutting down");
    } else {
        /* No new connection attempts unless a waiting caller needs one. */
        for (unsigned i = 0; i < pool->nconns; i++) {
            md_pg_conn_t *c = &pool->conns[i];
            if (c->state == MD_PG_BACKOFF && pool->nwaiting == 0)
                md_pg_conn_finish(c);
        }
        md_pg_check_available(pool);
    }
    md_pg_pool_check_shutdown(pool);
    md_pg_defer(pool);
}

void
md_pg_pool_destroy(md_pg_pool_t *pool)
{
    if (pool == NULL)
        return;
    pool->closing = true;
    pool->done_cb = NULL;
    /* Run every callback still owed, then free. */
    md_pg_pool_fail_all(pool, "postgres pool destroyed");
    while (!md_list_empty(&pool->done)) {
        md_pg_unit_t *u = md_pg_unit_of(pool->done.next);
        md_list_remove(&u->link);
        md_pg_unit_deliver(u);
        md_pg_unit_free(u);
    }
    ev_timer_stop(pool->loop, &pool->defer);
    for (size_t i = 0; i < pool->nstmts; i++) {
        free(pool->stmts[i].name);
        free(pool->stmts[i].sql);
    }
    free(pool->stmts);
    free(pool->conns);
    free(pool->conf.dsn);
    free(pool);
}

void
md_pg_pool_stats(const md_pg_pool_t *pool, md_pg_stats_t *s)
{
    memset(s, 0, sizeof(*s));
    if (pool == NULL)
        return;
    s->size = pool->nconns;
    for (unsigned i = 0; i < pool->nconns; i++)
        s->connected += pool->conns[i].state == MD_PG_READY;
    s->in_flight = pool->ninflight;
    s->waiting = pool->nwaiting;
    s->errors = pool->errors;
    s->reconnects = pool->reconnects;
    s->timeouts = pool->timeouts;
}

int
md_pg_pool_ready(const md_pg_pool_t *pool)
{
    if (pool == NULL)
        return 0;
    for (unsigned i = 0; i < pool->nconns; i++) {
        if (pool->conns[i].state == MD_PG_READY)
            return 1;
    }
    return 0;
}
