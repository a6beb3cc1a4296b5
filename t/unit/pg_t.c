/*
 * md_pg against a real PostgreSQL (MD_TEST_PG_DSN; t/40-pg.t starts one and runs
 * this). Without the variable it skips. Modes:
 *   pg_t                 the functional tests
 *   pg_t outage DIR      the outage scenario, coordinated with t/40-pg.t through
 *                        files in DIR: we create "up", wait for "stopped" (the server
 *                        is down), create "checked", wait for "started".
 */
#include "md_pg.h"
#include "md_log.h"
#include "tap.h"

#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static struct ev_loop *loop;
static const char *dsn;

/* ---- helpers ---------------------------------------------------------------- */

typedef struct tctx_s {
    int returned; /* set once md_pg_exec* returned */
    int called;   /* callback runs */
    int early;    /* callback ran before md_pg_exec* returned */
    const char *error;
    char sqlstate[6];
    char message[256];
    char value[64];  /* results[vi] row 0 col 0 */
    char value2[64]; /* results[vi] row 0 col 1 */
    size_t vi;
    int failed;
    size_t n;
    double t0, t1;
} tctx_t;

static void
tcb(void *arg, const md_pg_result_t *res)
{
    tctx_t *t = arg;
    t->called++;
    if (!t->returned)
        t->early++;
    t->t1 = ev_time();
    t->error = res->error;
    snprintf(t->sqlstate, sizeof(t->sqlstate), "%s", res->sqlstate ? res->sqlstate : "");
    snprintf(t->message, sizeof(t->message), "%s", res->message ? res->message : "");
    t->failed = res->failed;
    t->n = res->n;
    t->value[0] = t->value2[0] = '\0';
    if (!res->error && t->vi < res->n) {
        const PGresult *r = res->results[t->vi];
        if (r && PQntuples(r) > 0) {
            snprintf(t->value, sizeof(t->value), "%s", PQgetvalue(r, 0, 0));
            if (PQnfields(r) > 1)
                snprintf(t->value2, sizeof(t->value2), "%s", PQgetvalue(r, 0, 1));
        }
    }
}

static int
texec(md_pg_pool_t *pool, tctx_t *t, const char *stmt, int nparams, const char *const *values)
{
    md_pg_query_t q = {.stmt = stmt, .nparams = nparams, .values = values};
    memset(t, 0, sizeof(*t));
    t->t0 = ev_time();
    int rc = md_pg_exec(pool, &q, tcb, t);
    t->returned = 1;
    return rc;
}

static void
tick_cb(struct ev_loop *l, ev_timer *w, int revents)
{
    md_unused(l);
    md_unused(w);
    md_unused(revents);
}

/* Runs the loop until pred(arg) or timeout seconds; returns pred(arg). */
static int
run_until(int (*pred)(void *), void *arg, double timeout)
{
    ev_timer tick;
    double deadline = ev_time() + timeout;
    ev_timer_init(&tick, tick_cb, 0.01, 0.01);
    ev_timer_start(loop, &tick);
    while (!pred(arg) && ev_time() < deadline)
        ev_run(loop, EVRUN_ONCE);
    ev_timer_stop(loop, &tick);
    return pred(arg);
}

static int
called(void *arg)
{
    return ((tctx_t *)arg)->called > 0;
}

static int
pool_ready(void *arg)
{
    return md_pg_pool_ready(arg);
}

static int
all_connected(void *arg)
{
    md_pg_stats_t s;
    md_pg_pool_stats(arg, &s);
    return s.connected == s.size;
}

static md_pg_conf_t
mkconf(const char *d, int size)
{
    return (md_pg_conf_t){.dsn = (char *)d,
                          .pool_size = size,
                          .connect_timeout = 5,
                          .statement_timeout = 5,
                          .max_waiting = 1024,
                          .reconnect_min = 0.05,
                          .reconnect_max = 0.5};
}

static md_pg_pool_t *
started_pool(md_pg_conf_t conf)
{
    char err[512];
    md_pg_pool_t *pool = md_pg_pool_create(loop, &conf, err, sizeof(err));
    if (pool == NULL) {
        printf("# pool_create: %s\n", err);
        return NULL;
    }
    md_pg_pool_start(pool);
    if (!run_until(all_connected, pool, 10))
        printf("# pool did not connect\n");
    return pool;
}

/* Runs one statement to completion; returns the context for checks. */
static tctx_t
sync_exec(md_pg_pool_t *pool, const char *stmt, int nparams, const char *const *values)
{
    tctx_t t;
    if (texec(pool, &t, stmt, nparams, values) == MD_OK)
        run_until(called, &t, 15);
    else
        t.error = "not queued";
    return t;
}

/* ---- create / arguments ------------------------------------------------------------ */

static void
test_create(void)
{
    char err[512];
    md_pg_conf_t c;
    md_pg_pool_t *p;
    static const struct {
        const char *dsn;
        int ok;
        const char *why;
    } cases[] = {
        {"host=db.example.com dbname=x", 0, "a host name"},
        {"host=localhost dbname=x", 0, "localhost is a name too"},
        {"postgresql://u:s3cr3t@db.example.com/x", 0, "a host name in a URI"},
        {"host=127.0.0.1,db2.example.com dbname=x", 0, "one name in a host list"},
        {"service=foo dbname=x", 0, "a service (may hold a name)"},
        {"host=127.0.0.1 dbname=x", 1, "an IPv4 host"},
        {"host=::1 port=5432", 1, "an IPv6 host"},
        {"host=/var/run/postgresql dbname=x", 1, "a socket directory"},
        {"host=db.example.com hostaddr=127.0.0.1 dbname=x", 1, "a name with hostaddr"},
        {"postgresql://u:pw@127.0.0.1:5432/x", 1, "a URI with an IP"},
    };
    for (size_t i = 0; i < md_nelems(cases); i++) {
        c = mkconf(cases[i].dsn, 2);
        err[0] = '\0';
        p = md_pg_pool_create(loop, &c, err, sizeof(err));
        ok((p != NULL) == cases[i].ok, "pool_create %s: %s", cases[i].ok ? "takes" : "refuses",
           cases[i].why);
        if (!cases[i].ok && i == 0)
            ok(strstr(err, "hostaddr=") && strstr(err, "db.example.com"),
               "the error names the host and points to hostaddr=: %s", err);
        if (!cases[i].ok)
            ok(strstr(err, "s3cr3t") == NULL, "no password in the error");
        md_pg_pool_destroy(p);
    }
    c = mkconf("this is = not ' a dsn", 1);
    p = md_pg_pool_create(loop, &c, err, sizeof(err));
    ok(p == NULL && strncmp(err, "postgres dsn:", 13) == 0, "a malformed dsn is refused: %s", err);
    c = mkconf("hostaddr=127.0.0.1", 1);
    c.reconnect_min = 2;
    c.reconnect_max = 1;
    p = md_pg_pool_create(loop, &c, err, sizeof(err));
    ok(p == NULL, "reconnect_min above reconnect_max is refused: %s", err);

    /* arguments and state */
    c = mkconf("hostaddr=127.0.0.1 port=1", 1);
    p = md_pg_pool_create(loop, &c, err, sizeof(err));
    tctx_t t;
    md_pg_query_t q = {.stmt = "SELECT 1"};
    is_int(md_pg_exec(p, &q, tcb, &t), MD_AGAIN, "exec before start: MD_AGAIN");
    is_int(md_pg_exec(p, &q, NULL, &t), MD_ERROR, "exec without a callback: MD_ERROR");
    is_int(md_pg_exec_batch(p, &q, 0, tcb, &t), MD_ERROR, "empty batch: MD_ERROR");
    md_pg_query_t bad = {.stmt = "SELECT $1", .nparams = 1, .values = NULL};
    is_int(md_pg_exec(p, &bad, tcb, &t), MD_ERROR, "params without values: MD_ERROR");
    is_int(md_pg_prepare(p, "s1", "SELECT 1", 0), MD_OK, "prepare before start");
    is_int(md_pg_prepare(p, "s1", "SELECT 2", 0), MD_ERROR, "prepare refuses a duplicate name");
    md_pg_pool_start(p);
    is_int(md_pg_prepare(p, "s2", "SELECT 2", 0), MD_ERROR, "prepare after start: MD_ERROR");
    md_pg_pool_destroy(p);
}

/* ---- connect and a first query -------------------------------------------------- */

static void
test_connect(void)
{
    md_pg_pool_t *pool = started_pool(mkconf(dsn, 2));
    md_pg_stats_t s;
    md_pg_pool_stats(pool, &s);
    ok(md_pg_pool_ready(pool) && s.connected == 2 && s.size == 2, "both connections up");
    tctx_t t = sync_exec(pool, "SELECT 'hello'", 0, NULL);
    ok(t.called == 1 && t.error == NULL, "a query succeeds (%s)", t.message);
    is_str(t.value, "hello", "and returns its value");
    is_int(t.early, 0, "the callback ran after md_pg_exec returned");

    /* a caller queued while the pool is still connecting waits, then runs */
    char err[256];
    md_pg_conf_t c = mkconf(dsn, 1);
    md_pg_pool_t *p2 = md_pg_pool_create(loop, &c, err, sizeof(err));
    md_pg_pool_start(p2);
    tctx_t t2;
    int rc = texec(p2, &t2, "SELECT 7", 0, NULL);
    md_pg_pool_stats(p2, &s);
    ok(rc == MD_OK && s.waiting == 1, "a query issued while connecting waits in the queue");
    run_until(called, &t2, 10);
    ok(t2.error == NULL && strcmp(t2.value, "7") == 0 && !t2.early,
       "and is sent once the connection is up");
    md_pg_pool_destroy(p2);
    md_pg_pool_destroy(pool);
}

/* ---- callbacks that queue more work from inside the result loop ------------------ */

typedef struct chain_s {
    md_pg_pool_t *pool;
    int done, bad, returned;
    char arg[16];
} chain_t;

static void
chain_cb(void *arg, const md_pg_result_t *res)
{
    chain_t *ch = arg;
    if (!ch->returned || res->error || atoi(PQgetvalue(res->res, 0, 0)) != ch->done)
        ch->bad++;
    if (++ch->done == 200)
        return;
    snprintf(ch->arg, sizeof(ch->arg), "%d", ch->done);
    const char *vals[] = {ch->arg};
    md_pg_query_t q = {.stmt = "SELECT $1::int", .nparams = 1, .values = vals};
    ch->returned = 0;
    if (md_pg_exec(ch->pool, &q, chain_cb, ch) != MD_OK)
        ch->bad++;
    ch->returned = 1;
}

static int
chain_done(void *arg)
{
    chain_t *ch = arg;
    return ch->done == 200 || ch->bad;
}

static void
test_chain(void)
{
    static chain_t ch;
    memset(&ch, 0, sizeof(ch));
    ch.pool = started_pool(mkconf(dsn, 2));
    md_pg_query_t q = {.stmt = "SELECT 0"};
    md_pg_exec(ch.pool, &q, chain_cb, &ch);
    ch.returned = 1;
    run_until(chain_done, &ch, 15);
    ok(ch.done == 200 && ch.bad == 0, "200 queries chained from callbacks (%d done, %d bad)",
       ch.done, ch.bad);
    md_pg_pool_destroy(ch.pool);
}

/* ---- the pipelined burst -------------------------------------------------------- */

#define BURST 1000

typedef struct burst_s {
    int done, next, out_of_order, wrong, errors, early;
    char pid[16];
    int other_pid;
    int returned[BURST];
    char arg[BURST][12];
} burst_t;

typedef struct burst_call_s {
    burst_t *b;
    int i;
} burst_call_t;

static burst_call_t burst_calls[BURST];

static void
burst_cb(void *arg, const md_pg_result_t *res)
{
    burst_call_t *c = arg;
    burst_t *b = c->b;
    if (!b->returned[c->i])
        b->early++;
    if (c->i != b->next)
        b->out_of_order++;
    b->next = c->i + 1;
    b->done++;
    if (res->error) {
        b->errors++;
        return;
    }
    if (PQntuples(res->res) != 1 || atoi(PQgetvalue(res->res, 0, 0)) != c->i)
        b->wrong++;
    const char *pid = PQgetvalue(res->res, 0, 1);
    if (b->pid[0] == '\0')
        snprintf(b->pid, sizeof(b->pid), "%s", pid);
    else if (strcmp(b->pid, pid) != 0)
        b->other_pid++;
}

static int
burst_done(void *arg)
{
    return ((burst_t *)arg)->done == BURST;
}

static void
test_burst(void)
{
    md_pg_pool_t *pool = started_pool(mkconf(dsn, 1));
    static burst_t b;
    md_pg_stats_t s;
    int queued = 0;
    memset(&b, 0, sizeof(b));
    for (int i = 0; i < BURST; i++) {
        snprintf(b.arg[i], sizeof(b.arg[i]), "%d", i);
        const char *vals[1] = {b.arg[i]};
        md_pg_query_t q = {
            .stmt = "SELECT $1::int, pg_backend_pid()", .nparams = 1, .values = vals};
        burst_calls[i] = (burst_call_t){&b, i};
        queued += md_pg_exec(pool, &q, burst_cb, &burst_calls[i]) == MD_OK;
        b.returned[i] = 1;
    }
    md_pg_pool_stats(pool, &s);
    is_int(queued, BURST, "1000 queries queued on one connection");
    ok(s.in_flight == BURST && s.waiting == 0, "all 1000 are in flight at once (%zu)", s.in_flight);
    double t0 = ev_time();
    run_until(burst_done, &b, 30);
    double dt = ev_time() - t0;
    is_int(b.done, BURST, "all 1000 completed (%.3f s)", dt);
    is_int(b.errors, 0, "without errors");
    is_int(b.out_of_order, 0, "callbacks ran in the order of the calls");
    is_int(b.wrong, 0, "each caller got its own result ($1 echoed back)");
    ok(b.pid[0] && b.other_pid == 0, "all on one backend (pid %s)", b.pid);
    is_int(b.early, 0, "no callback ran before its md_pg_exec returned");
    md_pg_pool_stats(pool, &s);
    ok(s.in_flight == 0 && s.errors == 0, "pool idle again, no errors counted");
    md_pg_pool_destroy(pool);
}

/* ---- prepared statements, and re-preparing after a reconnect ---------------------- */

static void
test_prepared(void)
{
    char err[256];
    md_pg_conf_t c = mkconf(dsn, 1);
    md_pg_pool_t *pool = md_pg_pool_create(loop, &c, err, sizeof(err));
    ok(md_pg_prepare(pool, "echo", "SELECT $1::text || '!'", 1) == MD_OK &&
           md_pg_prepare(pool, "add", "SELECT $1::int + $2::int", 2) == MD_OK,
       "two statements registered");
    md_pg_pool_start(pool);
    run_until(pool_ready, pool, 10);

    const char *v1[] = {"hi"};
    tctx_t t = sync_exec(pool, "echo", 1, v1);
    ok(t.error == NULL, "prepared statement runs (%s)", t.message);
    is_str(t.value, "hi!", "prepared statement result");
    const char *v2[] = {"40", "2"};
    t = sync_exec(pool, "add", 2, v2);
    is_str(t.value, "42", "second prepared statement");
    t = sync_exec(pool, "SELECT count(*) FROM pg_prepared_statements WHERE name IN ('echo','add')",
                  0, NULL);
    is_str(t.value, "2", "both are prepared server-side");

    /* kill our own backend: the caller gets an error, the pool reconnects and
     * prepares again before serving */
    md_pg_stats_t s0, s;
    md_pg_pool_stats(pool, &s0);
    t = sync_exec(pool, "SELECT pg_terminate_backend(pg_backend_pid())", 0, NULL);
    ok(t.error == md_pg_err_connection_lost || t.error == md_pg_err_sql,
       "a query whose connection dies fails (%s: %s)", t.error ? t.error : "ok", t.message);
    ok(run_until(pool_ready, pool, 10), "the pool reconnects by itself");
    md_pg_pool_stats(pool, &s);
    ok(s.reconnects > s0.reconnects, "reconnects counted (%llu)", (unsigned long long)s.reconnects);
    const char *v3[] = {"again"};
    t = sync_exec(pool, "echo", 1, v3);
    is_str(t.value, "again!", "prepared statement works on the new connection");
    md_pg_pool_destroy(pool);
}

/* ---- batches: one implicit transaction ------------------------------------------ */

static void
batch_exec(md_pg_pool_t *pool, tctx_t *t, const md_pg_query_t *qs, size_t n, size_t vi)
{
    memset(t, 0, sizeof(*t));
    t->vi = vi;
    if (md_pg_exec_batch(pool, qs, n, tcb, t) != MD_OK) {
        t->error = "not queued";
        return;
    }
    t->returned = 1;
    run_until(called, t, 15);
}

static void
test_batch(void)
{
    md_pg_pool_t *pool = started_pool(mkconf(dsn, 2));
    tctx_t t = sync_exec(pool, "DROP TABLE IF EXISTS md_pg_t_batch", 0, NULL);
    t = sync_exec(pool, "CREATE TABLE md_pg_t_batch (id int PRIMARY KEY)", 0, NULL);
    ok(t.error == NULL, "table created (%s)", t.message);

    const char *ins = "INSERT INTO md_pg_t_batch VALUES ($1::int)";
    const char *a1[] = {"1"}, *a2[] = {"2"}, *a3[] = {"3"};
    md_pg_query_t bad[] = {
        {.stmt = ins, .nparams = 1, .values = a1},
        {.stmt = ins, .nparams = 1, .values = a2},
        {.stmt = ins, .nparams = 1, .values = a1}, /* duplicate key */
        {.stmt = ins, .nparams = 1, .values = a3},
    };
    batch_exec(pool, &t, bad, 4, 0);
    ok(t.error == md_pg_err_sql, "a batch failing midway reports an sql error");
    is_str(t.sqlstate, "23505", "with the SQLSTATE (unique_violation)");
    is_int(t.failed, 2, "and the index of the failing statement");
    is_int(t.n, 4, "res->n is the batch size");
    t = sync_exec(pool, "SELECT count(*) FROM md_pg_t_batch", 0, NULL);
    is_str(t.value, "0", "nothing of the failed batch was committed");

    md_pg_query_t good[] = {
        {.stmt = ins, .nparams = 1, .values = a1},
        {.stmt = ins, .nparams = 1, .values = a2},
        {.stmt = "SELECT count(*) FROM md_pg_t_batch"},
    };
    batch_exec(pool, &t, good, 3, 2);
    ok(t.error == NULL, "a good batch succeeds (%s)", t.message);
    is_str(t.value, "2", "each statement's result is there (results[2] sees both inserts)");
    t = sync_exec(pool, "SELECT count(*) FROM md_pg_t_batch", 0, NULL);
    is_str(t.value, "2", "and it was committed");
    sync_exec(pool, "DROP TABLE md_pg_t_batch", 0, NULL);
    md_pg_pool_destroy(pool);
}

/* ---- SQL errors ----------------------------------------------------------------- */

static void
test_sql_errors(void)
{
    md_pg_pool_t *pool = started_pool(mkconf(dsn, 1));
    tctx_t t = sync_exec(pool, "SELECT 1/0", 0, NULL);
    ok(t.error == md_pg_err_sql, "division by zero is an sql error");
    is_str(t.sqlstate, "22012", "SQLSTATE 22012");
    is_str(t.message, "division by zero", "server's message");
    t = sync_exec(pool, "SELEC 1", 0, NULL);
    is_str(t.sqlstate, "42601", "syntax error: SQLSTATE 42601");

    /* an error in one unit does not touch its neighbours in the pipeline */
    tctx_t a, b, c;
    texec(pool, &a, "SELECT 1", 0, NULL);
    texec(pool, &b, "SELECT 1/0", 0, NULL);
    texec(pool, &c, "SELECT 3", 0, NULL);
    run_until(called, &c, 10);
    ok(a.error == NULL && strcmp(a.value, "1") == 0, "unit before the failing one succeeds");
    ok(b.error == md_pg_err_sql, "the failing unit fails");
    ok(c.error == NULL && strcmp(c.value, "3") == 0, "unit after the failing one succeeds");
    md_pg_pool_destroy(pool);
}

/* ---- timeouts ------------------------------------------------------------------- */

static md_pg_pool_t *watch_pool;
static uint64_t watch_reconnects;

static int
reconnected(void *arg)
{
    md_pg_stats_t s;
    md_unused(arg);
    md_pg_pool_stats(watch_pool, &s);
    return s.reconnects > watch_reconnects;
}

static void
test_timeouts(void)
{
    md_pg_conf_t c = mkconf(dsn, 1);
    c.statement_timeout = 0.3;
    c.connect_timeout = 1.0;
    md_pg_pool_t *pool = started_pool(c);
    md_pg_stats_t s0, s;
    tctx_t pid0 = sync_exec(pool, "SELECT pg_backend_pid()", 0, NULL);
    md_pg_pool_stats(pool, &s0);

    tctx_t t = sync_exec(pool, "SELECT pg_sleep(3)", 0, NULL);
    double dt = t.t1 - t.t0;
    ok(t.error == md_pg_err_timeout, "a statement over statement_timeout gets \"timeout\"");
    ok(dt > 0.25 && dt < 1.0, "after about statement_timeout (%.3f s)", dt);
    t = sync_exec(pool, "SELECT 42", 0, NULL);
    is_str(t.value, "42", "the next query on the pool succeeds");
    tctx_t pid1 = sync_exec(pool, "SELECT pg_backend_pid()", 0, NULL);
    md_pg_pool_stats(pool, &s);
    ok(pid0.value[0] && strcmp(pid0.value, pid1.value) == 0 && s.reconnects == s0.reconnects,
       "on the same connection: the server ended the statement itself (pid %s)", pid1.value);
    ok(s.timeouts == s0.timeouts + 1, "timeouts counted");

    /* a server that does not end the statement: the watchdog drops the connection */
    md_pg_query_t hang[] = {{.stmt = "SET LOCAL statement_timeout = 0"},
                            {.stmt = "SELECT pg_sleep(3)"}};
    tctx_t h, behind;
    memset(&h, 0, sizeof(h));
    h.t0 = ev_time();
    md_pg_exec_batch(pool, hang, 2, tcb, &h);
    h.returned = 1;
    run_until(called, &h, 5);
    ok(h.error == md_pg_err_timeout, "a statement the server does not end: timeout too");
    texec(pool, &behind, "SELECT 5", 0, NULL);
    run_until(called, &behind, 5);
    ok(behind.error == md_pg_err_timeout || behind.error == md_pg_err_connection_lost,
       "a query queued behind it fails (%s)", behind.error ? behind.error : "ok");
    double t0 = ev_time();
    md_pg_pool_stats(pool, &s0);
    watch_pool = pool;
    watch_reconnects = s0.reconnects;
    ok(run_until(reconnected, NULL, 5),
       "the watchdog drops the connection after statement_timeout + connect_timeout without "
       "progress (%.3f s)",
       ev_time() - h.t0);
    ok(run_until(all_connected, pool, 5), "and it comes back");
    tctx_t pid2 = sync_exec(pool, "SELECT pg_backend_pid()", 0, NULL);
    ok(pid2.value[0] && strcmp(pid2.value, pid1.value) != 0, "on a new backend (pid %s, %.3f s)",
       pid2.value, ev_time() - t0);
    md_pg_pool_destroy(pool);
}

/* ---- bounded queue -------------------------------------------------------------- */

static void
test_bound(void)
{
    md_pg_conf_t c = mkconf(dsn, 1);
    c.max_waiting = 8;
    char err[256];
    tctx_t t[10];
    md_pg_stats_t s;

    /* while connecting: the wait queue proper */
    md_pg_pool_t *pool = md_pg_pool_create(loop, &c, err, sizeof(err));
    md_pg_pool_start(pool);
    int okn = 0;
    for (int i = 0; i < 8; i++)
        okn += texec(pool, &t[i], "SELECT 1", 0, NULL) == MD_OK;
    int rc = texec(pool, &t[8], "SELECT 1", 0, NULL);
    md_pg_pool_stats(pool, &s);
    ok(okn == 8 && s.waiting == 8, "8 callers wait for the connection");
    is_int(rc, MD_AGAIN, "the 9th gets MD_AGAIN (max_waiting 8)");
    run_until(called, &t[7], 10);
    int good = 0;
    for (int i = 0; i < 8; i++)
        good += t[i].called == 1 && t[i].error == NULL;
    is_int(good, 8, "the 8 waiting ones complete");

    /* connected: the bound covers units in flight too */
    okn = 0;
    for (int i = 0; i < 8; i++)
        okn += texec(pool, &t[i], "SELECT pg_sleep(0.05)", 0, NULL) == MD_OK;
    rc = texec(pool, &t[8], "SELECT 1", 0, NULL);
    md_pg_pool_stats(pool, &s);
    ok(okn == 8 && s.in_flight == 8, "8 in flight");
    is_int(rc, MD_AGAIN, "the 9th gets MD_AGAIN");
    run_until(called, &t[7], 10);
    rc = texec(pool, &t[9], "SELECT 1", 0, NULL);
    is_int(rc, MD_OK, "room again once they completed");
    run_until(called, &t[9], 10);
    md_pg_pool_destroy(pool);
}

/* ---- a server that is not there: fail fast ----------------------------------------- */

static void
test_unavailable(void)
{
    md_pg_conf_t c = mkconf("hostaddr=127.0.0.1 port=1 dbname=x user=x", 2);
    char err[256];
    md_pg_pool_t *pool = md_pg_pool_create(loop, &c, err, sizeof(err));
    md_pg_pool_start(pool);
    tctx_t t;
    int rc = texec(pool, &t, "SELECT 1", 0, NULL);
    if (rc == MD_OK)
        run_until(called, &t, 3);
    double dt = (rc == MD_OK ? t.t1 : ev_time()) - t.t0;
    ok(rc == MD_AGAIN || (t.called && t.error == md_pg_err_unavailable),
       "first query on an unreachable server fails (%s)",
       rc == MD_AGAIN ? "MD_AGAIN"
       : t.error      ? t.error
                      : "?");
    ok(dt < 1.0, "fast (%.3f s)", dt);
    t.t0 = ev_time();
    rc = texec(pool, &t, "SELECT 1", 0, NULL);
    ok(rc == MD_AGAIN && ev_time() - t.t0 < 0.1, "later queries get MD_AGAIN at once");
    ok(!md_pg_pool_ready(pool), "pool not ready");
    md_pg_stats_t s;
    run_until(called, &t, 0.6); /* let it retry a few times */
    md_pg_pool_stats(pool, &s);
    ok(s.reconnects >= 1 && s.connected == 0, "it keeps retrying (%llu attempts)",
       (unsigned long long)s.reconnects);
    md_pg_pool_destroy(pool);
}

/* ---- shutdown ------------------------------------------------------------------- */

static int shut_done;

static void
shut_cb(md_pg_pool_t *pool, void *data)
{
    shut_done++;
    if (data)
        md_pg_pool_destroy(pool); /* allowed from done_cb */
}

static int
shut_finished(void *arg)
{
    md_unused(arg);
    return shut_done > 0;
}

static void
test_shutdown(void)
{
    tctx_t t[5], x;
    md_pg_pool_t *pool = started_pool(mkconf(dsn, 2));
    for (int i = 0; i < 5; i++)
        texec(pool, &t[i], "SELECT pg_sleep(0.05)", 0, NULL);
    shut_done = 0;
    md_pg_pool_shutdown(pool, 1, shut_cb, (void *)1);
    is_int(texec(pool, &x, "SELECT 1", 0, NULL), MD_AGAIN, "no new work once shutting down");
    run_until(shut_finished, NULL, 10);
    int good = 0;
    for (int i = 0; i < 5; i++)
        good += t[i].called == 1 && t[i].error == NULL;
    is_int(good, 5, "graceful shutdown lets in-flight queries finish");
    is_int(shut_done, 1, "then calls done_cb (which destroyed the pool)");

    pool = started_pool(mkconf(dsn, 2));
    for (int i = 0; i < 5; i++)
        texec(pool, &t[i], "SELECT pg_sleep(1)", 0, NULL);
    shut_done = 0;
    md_pg_pool_shutdown(pool, 0, shut_cb, NULL);
    run_until(shut_finished, NULL, 5);
    int lost = 0;
    for (int i = 0; i < 5; i++)
        lost += t[i].called == 1 && t[i].error == md_pg_err_connection_lost && !t[i].early;
    is_int(lost, 5, "a hard shutdown fails in-flight queries with connection_lost");
    md_pg_stats_t s;
    md_pg_pool_stats(pool, &s);
    ok(shut_done == 1 && s.connected == 0, "done_cb ran, no connection left");
    md_pg_pool_destroy(pool);

    /* destroy with work outstanding runs every callback */
    pool = started_pool(mkconf(dsn, 1));
    for (int i = 0; i < 3; i++)
        texec(pool, &t[i], "SELECT pg_sleep(1)", 0, NULL);
    md_pg_pool_destroy(pool);
    ok(t[0].called == 1 && t[1].called == 1 && t[2].called == 1,
       "destroy runs the callbacks still owed");
}

/* ---- outage mode ---------------------------------------------------------------- */

typedef struct outage_s {
    md_pg_pool_t *pool;
    const char *dir;
    int phase; /* 0 up, 1 waiting for stop, 2 measuring down, 3 waiting for start, 4 back */
    double phase_t;
    int ok_total, ok_phase, fail_phase, again_phase, late, issued;
    double max_latency, max_latency_down;
    int outstanding;
    int lost; /* connection_lost: in flight when the server went */
    int finished;
    uint64_t reconnects_before;
    double back_after;
} outage_t;

typedef struct outage_call_s {
    outage_t *o;
    double t0;
    int phase;
} outage_call_t;

static int
file_exists(const outage_t *o, const char *name)
{
    char p[512];
    snprintf(p, sizeof(p), "%s/%s", o->dir, name);
    return access(p, F_OK) == 0;
}

static void
touch(const outage_t *o, const char *name)
{
    char p[512];
    snprintf(p, sizeof(p), "%s/%s", o->dir, name);
    FILE *f = fopen(p, "w");
    if (f)
        fclose(f);
}

static void
outage_cb(void *arg, const md_pg_result_t *res)
{
    outage_call_t *c = arg;
    outage_t *o = c->o;
    double lat = ev_time() - c->t0;
    o->outstanding--;
    if (lat > o->max_latency)
        o->max_latency = lat;
    if (c->phase == o->phase && o->phase == 2 && lat > o->max_latency_down)
        o->max_latency_down = lat;
    if (res->error == NULL) {
        o->ok_total++;
        if (c->phase == o->phase)
            o->ok_phase++;
    } else {
        if (c->phase == o->phase)
            o->fail_phase++;
        if (res->error == md_pg_err_connection_lost)
            o->lost++;
    }
    free(c);
}

static void
outage_next(outage_t *o, int phase)
{
    o->phase = phase;
    o->phase_t = ev_time();
    o->ok_phase = o->fail_phase = o->again_phase = 0;
}

static void
outage_tick(struct ev_loop *l, ev_timer *w, int revents)
{
    outage_t *o = w->data;
    md_pg_stats_t s;
    md_unused(l);
    md_unused(revents);
    /* a few queries per tick (some are in flight when the server goes), every phase */
    for (int i = 0; i < 5; i++) {
        outage_call_t *c = md_xmalloc(sizeof(*c));
        *c = (outage_call_t){o, ev_time(), o->phase};
        md_pg_query_t q = {.stmt = "SELECT 1"};
        o->issued++;
        if (md_pg_exec(o->pool, &q, outage_cb, c) == MD_OK) {
            o->outstanding++;
        } else {
            free(c);
            o->again_phase++;
        }
    }
    double in_phase = ev_time() - o->phase_t;
    switch (o->phase) {
    case 0:
        if (o->ok_phase >= 100) {
            ok(1, "queries succeed while the server is up (%d)", o->ok_phase);
            touch(o, "up");
            outage_next(o, 1);
        } else if (in_phase > 10) {
            ok(0, "queries succeed while the server is up");
            o->finished = 1;
        }
        break;
    case 1:
        if (file_exists(o, "stopped")) {
            md_pg_pool_stats(o->pool, &s);
            o->reconnects_before = s.reconnects;
            outage_next(o, 2);
        } else if (in_phase > 30) {
            ok(0, "the driver stopped the server");
            o->finished = 1;
        }
        break;
    case 2:
        /* measure 1.5 s of calls made while the server is down */
        if (in_phase > 1.5 && o->outstanding == 0) {
            printf("# %d queries in flight when the server went failed with connection_lost\n",
                   o->lost);
            ok(o->fail_phase + o->again_phase > 50,
               "calls fail while the server is down (%d MD_AGAIN, %d error callbacks)",
               o->again_phase, o->fail_phase);
            is_int(o->ok_phase, 0, "none succeeds");
            ok(o->max_latency_down < 1.0, "each fails fast: slowest %.3f s (limit 2 s)",
               o->max_latency_down);
            ok(!md_pg_pool_ready(o->pool), "pool reports not ready");
            touch(o, "checked");
            outage_next(o, 3);
        }
        break;
    case 3:
        if (file_exists(o, "started"))
            outage_next(o, 4);
        else if (in_phase > 30) {
            ok(0, "the driver restarted the server");
            o->finished = 1;
        }
        break;
    case 4:
        if (o->back_after == 0 && o->ok_phase > 0)
            o->back_after = in_phase;
        md_pg_pool_stats(o->pool, &s);
        if (o->ok_phase >= 20 && s.connected == s.size) {
            ok(1, "queries succeed again without recreating the pool (first after %.3f s)",
               o->back_after);
            ok(md_pg_pool_ready(o->pool) && s.connected == s.size,
               "every connection is back (%u/%u)", s.connected, s.size);
            ok(s.reconnects > o->reconnects_before, "through reconnects (%llu)",
               (unsigned long long)s.reconnects);
            o->finished = 1;
        } else if (in_phase > 15) {
            ok(0, "queries succeed again after the server is back (%d ok, %u/%u connected)",
               o->ok_phase, s.connected, s.size);
            o->finished = 1;
        }
        break;
    }
}

static int
outage_finished(void *arg)
{
    outage_t *o = arg;
    return o->finished && o->outstanding == 0;
}

static int
run_outage(const char *dir)
{
    md_pg_conf_t c = mkconf(dsn, 2);
    c.statement_timeout = 1;
    c.connect_timeout = 1;
    c.reconnect_max = 0.5;
    static outage_t o;
    memset(&o, 0, sizeof(o));
    o.dir = dir;
    o.pool = started_pool(c);
    ok(o.pool && md_pg_pool_ready(o.pool), "pool up");
    if (!o.pool)
        return done_testing();
    outage_next(&o, 0);
    ev_timer tick;
    ev_timer_init(&tick, outage_tick, 0.01, 0.01);
    tick.data = &o;
    ev_timer_start(loop, &tick);
    run_until(outage_finished, &o, 120);
    ev_timer_stop(loop, &tick);
    ok(o.max_latency < 2.0, "no call took 2 s or more, across the whole run (%.3f s, %d calls)",
       o.max_latency, o.issued);
    md_pg_pool_destroy(o.pool);
    return done_testing();
}

int
main(int argc, char **argv)
{
    dsn = getenv("MD_TEST_PG_DSN");
    if (dsn == NULL || *dsn == '\0') {
        printf("1..0 # SKIP MD_TEST_PG_DSN not set (t/40-pg.t runs this with a server)\n");
        return 0;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    md_log_open(NULL, getenv("MD_TEST_VERBOSE") ? MD_LOG_DEBUG : MD_LOG_ALERT);
    loop = ev_loop_new(EVFLAG_AUTO);
    int rc;
    if (argc >= 3 && strcmp(argv[1], "outage") == 0) {
        rc = run_outage(argv[2]);
    } else {
        test_create();
        test_connect();
        test_chain();
        test_burst();
        test_prepared();
        test_batch();
        test_sql_errors();
        test_timeouts();
        test_bound();
        test_unavailable();
        test_shutdown();
        rc = done_testing();
    }
    ev_loop_destroy(loop);
    md_log_close();
    return rc;
}
