/*
 * Redis client on hiredis 0.14.1 async with the libev adapter.
 *
 * hiredis 0.14.1 has no connect or command timeouts and no timer in its libev
 * adapter, so each connection keeps its own ev_timers: one bounds connecting
 * plus the handshake and then paces reconnects; another watches the oldest
 * command in flight. Replies come back in send order, so the oldest command is
 * the head of a FIFO and one timer covers all of them. When it expires the
 * context is freed, which makes hiredis run every pending callback with a NULL
 * reply, and a reconnect is scheduled.
 *
 * hiredis rules this file relies on:
 *  - redisAsyncFree inside a reply callback is deferred by hiredis until the
 *    callback returns; outside one it runs the pending callbacks (NULL reply)
 *    and the disconnect callback synchronously.
 *  - The disconnect callback runs only for a context that got connected; after
 *    it (or after a failed connect callback) hiredis frees the context.
 *  - A context we freed ourselves is forgotten first (conn->ac = NULL), so its
 *    late callbacks recognise it as stale (conn->ac != ac) and do nothing.
 */
#include "md_redis.h"
#include "md_log.h"

#include <arpa/inet.h>
#include <ev.h>
#include <hiredis/async.h>
#include <hiredis/adapters/libev.h>
#include <limits.h>
#include <math.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/un.h>
#include <unistd.h>

enum {
    MD_REDIS_IDLE = 0,   /* no context: waiting for the (re)connect timer, or not started */
    MD_REDIS_CONNECTING, /* TCP/unix connect in progress */
    MD_REDIS_HANDSHAKE,  /* connected; AUTH/SELECT/PING replies outstanding */
    MD_REDIS_READY,
    MD_REDIS_CLOSING, /* hiredis is freeing the context and running its callbacks */
};

typedef struct md_redis_req_s md_redis_req_t;
typedef struct md_redis_conn_s md_redis_conn_t;

/* One command in flight. Owned by the client from a successful send until its
 * callback has run. For md_redis_eval the arguments are kept (in data) so that
 * a NOSCRIPT error can be answered by sending the same call as EVAL. */
struct md_redis_req_s {
    md_redis_req_t *next, *prev; /* the connection's FIFO, oldest first */
    md_redis_conn_t *conn;
    md_redis_cb cb;
    void *ctx;
    double deadline;
    bool timed_out;
    int script; /* script id for EVALSHA, -1 otherwise */
    bool retried;
    int argc;
    const char **argv;
    size_t *argvlen;
};

struct md_redis_conn_s {
    md_redis_t *r;
    const char *role; /* "command" or "pubsub", for logs */
    bool pubsub;
    redisAsyncContext *ac;
    int state;
    ev_timer timer;     /* connect + handshake deadline, then the reconnect delay */
    ev_timer cmd_timer; /* deadline of the oldest command in flight */
    md_redis_req_t *head, *tail;
    int in_flight;
    int hs_pending;         /* handshake replies still expected */
    const char *hs_step[3]; /* what each handshake reply answers, in order */
    int hs_next;
    unsigned attempts; /* failed attempts since the last ready, for the backoff */
    bool up;           /* was ready since the last connect: "lost" rather than "connect failed" */
    bool refused;      /* the handshake was refused (AUTH, SELECT) */
    bool ever_ready;
    bool started;
};

typedef struct md_redis_sub_s {
    struct md_redis_sub_s *next;
    md_redis_t *r;
    char *channel;
    md_redis_msg_cb on_msg;
    md_redis_resub_cb on_resubscribe;
    void *ctx;
    bool active; /* confirmed on the current pub/sub connection */
} md_redis_sub_t;

typedef struct md_redis_script_s {
    char *lua;
    char sha[41];
} md_redis_script_t;

struct md_redis_s {
    struct ev_loop *loop;
    char *address; /* as configured, for logs */
    char *ip;      /* TCP: IP literal and port */
    int port;
    char *path; /* unix socket, or NULL */
    char *password;
    int db;
    double connect_timeout, command_timeout, reconnect_min, reconnect_max;
    int max_pending;

    md_redis_conn_t cmd, sub;
    md_redis_sub_t *subs;
    /* The pub/sub heartbeat (see md_redis_hb_cb): our own channel, published
     * on the command connection and read back on the pub/sub one. */
    md_redis_sub_t *hb_sub;
    char hb_channel[48];
    ev_timer hb_timer;
    uint64_t hb_sent, hb_seen; /* sequence numbers */
    uint64_t hb_wait_seq;      /* a heartbeat Redis delivered that has not come back */
    double hb_wait_since;      /* ev_now when Redis confirmed it, 0: none outstanding */
    bool hb_refused;           /* Redis answers our heartbeat's PUBLISH with an error */
    md_redis_script_t *scripts;
    int nscripts;

    bool started, destroying;
    uint64_t rng;
    uint64_t reconnects, errors, timeouts, rejected;
    char last_error[160];
};

static void md_redis_connect(md_redis_conn_t *c);
static void md_redis_reply_cb(redisAsyncContext *ac, void *reply, void *privdata);

/* ---- addresses --------------------------------------------------------------- */

/* Splits "IP:PORT", "[IPv6]:PORT" or "unix:/path". On success the caller frees
 * *ip or *path (the other is NULL). Host names are refused on purpose: hiredis
 * resolves them with a blocking getaddrinfo. */
static int
md_redis_parse_address(const char *s, char **ip, int *port, char **path)
{
    *ip = *path = NULL;
    *port = 0;
    if (strncmp(s, "unix:", 5) == 0) {
        const char *p = s + 5;
        if (p[0] != '/' || strlen(p) >= sizeof(((struct sockaddr_un *)0)->sun_path))
            return MD_ERROR;
        *path = md_xstrdup(p);
        return MD_OK;
    }
    const char *host = s, *colon;
    size_t hlen;
    unsigned char buf[sizeof(struct in6_addr)];
    int af = AF_INET;
    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        if (end == NULL || end[1] != ':')
            return MD_ERROR;
        host = s + 1;
        hlen = (size_t)(end - host);
        colon = end + 1;
        af = AF_INET6;
    } else {
        colon = strchr(s, ':');
        if (colon == NULL || strchr(colon + 1, ':') != NULL)
            return MD_ERROR;
        hlen = (size_t)(colon - s);
    }
    char h[INET6_ADDRSTRLEN + 1];
    if (hlen == 0 || hlen >= sizeof(h))
        return MD_ERROR;
    memcpy(h, host, hlen);
    h[hlen] = '\0';
    if (inet_pton(af, h, buf) != 1)
        return MD_ERROR;
    const char *ps = colon + 1;
    char *end;
    errno = 0;
    long p = strtol(ps, &end, 10);
    if (ps[0] < '0' || ps[0] > '9' || *end != '\0' || errno || p < 1 || p > 65535)
        return MD_ERROR;
    *ip = md_xstrdup(h);
    *port = (int)p;
    return MD_OK;
}

/* ---- small helpers ------------------------------------------------------------ */

static void md_redis_set_error(md_redis_t *r, const char *fmt, ...) md_printf_like(2, 3);

static void
md_redis_set_error(md_redis_t *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->last_error, sizeof(r->last_error), fmt, ap);
    va_end(ap);
}

/* Uniform in [0, 1): jitter only, not security. */
static double
md_redis_random(md_redis_t *r)
{
    uint64_t x = r->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    r->rng = x;
    return (double)(x >> 11) / 9007199254740992.0;
}

static void
md_redis_fifo_push(md_redis_conn_t *c, md_redis_req_t *q)
{
    q->next = NULL;
    q->prev = c->tail;
    if (c->tail)
        c->tail->next = q;
    else
        c->head = q;
    c->tail = q;
    c->in_flight++;
}

static void
md_redis_fifo_unlink(md_redis_conn_t *c, md_redis_req_t *q)
{
    if (q->prev)
        q->prev->next = q->next;
    else
        c->head = q->next;
    if (q->next)
        q->next->prev = q->prev;
    else
        c->tail = q->prev;
    q->next = q->prev = NULL;
    c->in_flight--;
}

/* ---- connection lifecycle ----------------------------------------------------- */

/* Arms the reconnect timer with exponential backoff and jitter: the delay is
 * drawn from [base/2, base] with base = reconnect_min * 2^attempts capped at
 * reconnect_max, so workers that lost Redis together do not return in step. */
static void
md_redis_schedule(md_redis_conn_t *c, int level, const char *what, const char *why)
{
    md_redis_t *r = c->r;
    double base = r->reconnect_min * ldexp(1.0, (int)md_min(c->attempts, 30u));
    if (base > r->reconnect_max)
        base = r->reconnect_max;
    double delay = base * (0.5 + 0.5 * md_redis_random(r));
    if (delay < r->reconnect_min)
        delay = r->reconnect_min;
    c->attempts++;
    c->state = MD_REDIS_IDLE;
    ev_timer_stop(r->loop, &c->timer);
    ev_timer_set(&c->timer, delay, 0.);
    ev_timer_start(r->loop, &c->timer);
    md_logf(level, 0,
            MD_LOG_FIELDS(MD_LS("redis", r->address), MD_LS("conn", c->role),
                          MD_LS("reason", why ? why : ""),
                          MD_LI("retry_ms", (long long)(delay * 1000))),
            "redis %s; reconnecting in %d ms", what, (int)(delay * 1000));
}

/* The context is gone (hiredis freed it, or we did): stop its timers and retry. */
static void
md_redis_lost(md_redis_conn_t *c, const char *why)
{
    md_redis_t *r = c->r;
    bool was_up = c->up;
    c->up = false;
    c->ac = NULL;
    c->state = MD_REDIS_IDLE;
    ev_timer_stop(r->loop, &c->timer);
    ev_timer_stop(r->loop, &c->cmd_timer);
    for (md_redis_sub_t *s = r->subs; c->pubsub && s; s = s->next)
        s->active = false;
    md_redis_set_error(r, "%s connection: %s", c->role, why);
    if (r->destroying)
        return;
    if (was_up)
        md_redis_schedule(c, MD_LOG_WARN, "connection lost", why);
    else if (c->attempts == 0)
        md_redis_schedule(c, c->refused ? MD_LOG_ERROR : MD_LOG_WARN, "connect failed", why);
    else
        md_redis_schedule(c, MD_LOG_INFO, "connect failed", why);
    c->refused = false;
}

/*
 * Drops the live context on our own initiative (timeout, failed handshake,
 * destroy). Safe inside a hiredis callback of that context: hiredis defers the
 * free until the callback returns. The pending callbacks then get NULL replies.
 */
static void
md_redis_drop(md_redis_conn_t *c, const char *why)
{
    redisAsyncContext *ac = c->ac;
    /* Callbacks run by the free below must see the connection as unusable. */
    c->ac = NULL;
    c->state = MD_REDIS_CLOSING;
    ev_timer_stop(c->r->loop, &c->timer);
    ev_timer_stop(c->r->loop, &c->cmd_timer);
    if (ac)
        redisAsyncFree(ac);
    md_redis_lost(c, why);
}

static void
md_redis_on_disconnect(const redisAsyncContext *ac, int status)
{
    md_redis_conn_t *c = ac->data;
    md_unused(status);
    if (c == NULL || c->ac != ac)
        return; /* a context we dropped ourselves */
    md_redis_lost(c, ac->errstr[0] ? ac->errstr : "connection closed by the server");
}

static void md_redis_subscribe_one(md_redis_conn_t *c, md_redis_sub_t *s);

/* The handshake finished: serve commands, or subscribe on the pub/sub connection. */
static void
md_redis_ready_conn(md_redis_conn_t *c)
{
    md_redis_t *r = c->r;
    ev_timer_stop(r->loop, &c->timer);
    c->state = MD_REDIS_READY;
    c->up = true;
    c->attempts = 0;
    if (c->ever_ready)
        r->reconnects++;
    c->ever_ready = true;
    md_logf(MD_LOG_INFO, 0, MD_LOG_FIELDS(MD_LS("redis", r->address), MD_LS("conn", c->role)),
            "redis connected");
    if (c->pubsub) {
        for (md_redis_sub_t *s = r->subs; s && c->state == MD_REDIS_READY; s = s->next)
            md_redis_subscribe_one(c, s);
    }
}

static void
md_redis_handshake_cb(redisAsyncContext *ac, void *reply, void *privdata)
{
    md_redis_conn_t *c = privdata;
    redisReply *rep = reply;
    if (rep == NULL || c->ac != ac || c->state != MD_REDIS_HANDSHAKE)
        return; /* the context is going away; its owner already knows */
    const char *step = c->hs_step[c->hs_next++];
    if (rep->type == REDIS_REPLY_ERROR) {
        char why[200];
        snprintf(why, sizeof(why), "%s failed: %.*s", step, (int)md_min(rep->len, 150), rep->str);
        c->refused = true; /* a configuration error rather than an outage: log it louder */
        md_redis_drop(c, why);
        return;
    }
    if (--c->hs_pending == 0)
        md_redis_ready_conn(c);
}

/* Pipelines AUTH (if a password is set), SELECT (command connection, db != 0)
 * and PING. PING makes "ready" mean that Redis answered, not only that the
 * kernel accepted the connection (it does so for a stopped process too). */
static void
md_redis_on_connect(const redisAsyncContext *cac, int status)
{
    md_redis_conn_t *c = cac->data;
    if (c == NULL || c->ac != cac)
        return;
    if (status != REDIS_OK) {
        /* hiredis frees the context after this returns, with no disconnect callback */
        md_redis_lost(c, cac->errstr[0] ? cac->errstr : "connect failed");
        return;
    }
    md_redis_t *r = c->r;
    redisAsyncContext *ac = c->ac;
    char dbs[16];
    c->state = MD_REDIS_HANDSHAKE;
    c->hs_pending = c->hs_next = 0;
    if (r->password) {
        const char *argv[] = {"AUTH", r->password};
        c->hs_step[c->hs_pending++] = "AUTH";
        redisAsyncCommandArgv(ac, md_redis_handshake_cb, c, 2, argv, NULL);
    }
    if (!c->pubsub && r->db != 0) {
        snprintf(dbs, sizeof(dbs), "%d", r->db);
        const char *argv[] = {"SELECT", dbs};
        c->hs_step[c->hs_pending++] = "SELECT";
        redisAsyncCommandArgv(ac, md_redis_handshake_cb, c, 2, argv, NULL);
    }
    const char *argv[] = {"PING"};
    c->hs_step[c->hs_pending++] = "PING";
    redisAsyncCommandArgv(ac, md_redis_handshake_cb, c, 1, argv, NULL);
}

/* Connect deadline (connect + handshake) or the end of a reconnect delay. */
static void
md_redis_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    md_redis_conn_t *c = w->data;
    md_unused(loop);
    md_unused(revents);
    if (c->state == MD_REDIS_IDLE) {
        md_redis_connect(c);
        return;
    }
    char why[64];
    snprintf(why, sizeof(why), "no answer within connect_timeout (%gs)", c->r->connect_timeout);
    md_redis_drop(c, why);
}

static void
md_redis_connect(md_redis_conn_t *c)
{
    md_redis_t *r = c->r;
    redisAsyncContext *ac =
        r->path ? redisAsyncConnectUnix(r->path) : redisAsyncConnect(r->ip, r->port);
    if (ac == NULL) {
        md_redis_lost(c, "out of memory");
        return;
    }
    if (ac->err) {
        char why[160];
        md_strlcpy(why, ac->errstr, sizeof(why));
        redisAsyncFree(ac); /* never connected: no callbacks run */
        md_redis_lost(c, why);
        return;
    }
    ac->data = c;
    c->ac = ac;
    c->state = MD_REDIS_CONNECTING;
    if (r->path == NULL)
        redisEnableKeepAlive(&ac->c); /* finds a dead peer on the idle pub/sub connection */
    redisLibevAttach(r->loop, ac);
    if (c->pubsub) {
        /* Messages first: an invalidation (a template changed, a key revoked)
         * that arrived in the same loop iteration as a request is applied
         * before the request is served. Set while the watchers are inactive. */
        redisLibevEvents *ev = ac->ev.data;
        ev_set_priority(&ev->rev, EV_MAXPRI);
    }
    redisAsyncSetDisconnectCallback(ac, md_redis_on_disconnect);
    redisAsyncSetConnectCallback(ac, md_redis_on_connect);
    ev_timer_stop(r->loop, &c->timer);
    ev_timer_set(&c->timer, r->connect_timeout, 0.);
    ev_timer_start(r->loop, &c->timer);
}

static void
md_redis_conn_start(md_redis_conn_t *c)
{
    if (c->started)
        return;
    c->started = true;
    md_redis_connect(c);
}

/* ---- commands ------------------------------------------------------------------ */

/* The oldest command in flight is late: every command behind it is stuck too,
 * and a reply arriving later could not be told apart, so drop the connection. */
static void
md_redis_cmd_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    md_redis_conn_t *c = w->data;
    md_redis_t *r = c->r;
    md_unused(revents);
    if (c->head == NULL)
        return;
    double now = ev_now(loop);
    if (c->head->deadline > now + 0.001) {
        ev_timer_set(w, c->head->deadline - now, 0.);
        ev_timer_start(loop, w);
        return;
    }
    for (md_redis_req_t *q = c->head; q && q->deadline <= now + 0.001; q = q->next)
        q->timed_out = true;
    char why[80];
    snprintf(why, sizeof(why), "no reply within command_timeout (%gs)", r->command_timeout);
    md_redis_drop(c, why);
    /* Redis hangs or the path to it is gone. The idle pub/sub connection would
     * notice only through TCP keepalive, long after; until then it would look
     * subscribed while missing messages. Renew it too (its owner is told
     * through on_resubscribe). */
    if (r->sub.state == MD_REDIS_READY)
        md_redis_drop(&r->sub, "the command connection timed out");
}

static void
md_redis_arm_cmd_timer(md_redis_conn_t *c)
{
    if (ev_is_active(&c->cmd_timer) || c->head == NULL)
        return;
    double d = c->head->deadline - ev_now(c->r->loop);
    ev_timer_set(&c->cmd_timer, d > 0 ? d : 0.001, 0.);
    ev_timer_start(c->r->loop, &c->cmd_timer);
}

/* Hands the command to hiredis (which formats, i.e. copies, the arguments) and
 * tracks q in the FIFO. On MD_ERROR q is still the caller's. */
static int
md_redis_send(md_redis_conn_t *c, md_redis_req_t *q, int argc, const char **argv,
              const size_t *argvlen)
{
    if (c->ac == NULL ||
        redisAsyncCommandArgv(c->ac, md_redis_reply_cb, q, argc, argv, argvlen) != REDIS_OK)
        return MD_ERROR;
    q->deadline = ev_now(c->r->loop) + c->r->command_timeout;
    md_redis_fifo_push(c, q);
    md_redis_arm_cmd_timer(c);
    return MD_OK;
}

static bool
md_redis_is_noscript(const redisReply *rep)
{
    return rep->type == REDIS_REPLY_ERROR && rep->len >= 8 && memcmp(rep->str, "NOSCRIPT", 8) == 0;
}

static void
md_redis_reply_cb(redisAsyncContext *ac, void *reply, void *privdata)
{
    md_redis_req_t *q = privdata;
    md_redis_conn_t *c = q->conn;
    md_redis_t *r = c->r;
    redisReply *rep = reply;
    const char *err = NULL;

    md_redis_fifo_unlink(c, q);
    if (rep == NULL) {
        if (c->state == MD_REDIS_READY)
            c->state = MD_REDIS_CLOSING; /* hiredis lost it; on_disconnect follows */
        if (q->timed_out) {
            err = "timeout";
            r->timeouts++;
        } else {
            err = r->destroying ? "unavailable" : "disconnected";
            r->errors++;
        }
    } else if (q->script >= 0 && !q->retried && md_redis_is_noscript(rep)) {
        /* Redis lost the script (restart, SCRIPT FLUSH): send the same call as EVAL. */
        q->retried = true;
        q->argv[0] = "EVAL";
        q->argv[1] = r->scripts[q->script].lua;
        q->argvlen[0] = 4;
        q->argvlen[1] = strlen(q->argv[1]);
        if (c->ac == ac && c->state == MD_REDIS_READY &&
            md_redis_send(c, q, q->argc, q->argv, q->argvlen) == MD_OK)
            return;
        err = "unavailable";
        r->errors++;
    } else if (rep->type == REDIS_REPLY_ERROR) {
        r->errors++;
    }
    q->cb(q->ctx, err ? NULL : rep, err);
    free(q);
}

/* Allocates a request. With argc > 0 it keeps its own copy of the arguments
 * (md_redis_eval: for a NOSCRIPT re-send); plain commands need none. */
static md_redis_req_t *
md_redis_req_new(md_redis_conn_t *c, md_redis_cb cb, void *ctx, int argc, const char **argv,
                 const size_t *argvlen)
{
    size_t bytes = 0;
    for (int i = 0; i < argc; i++)
        bytes += (argvlen ? argvlen[i] : strlen(argv[i])) + 1;
    size_t na = (size_t)argc;
    md_redis_req_t *q = md_xmalloc(sizeof(*q) + na * (sizeof(char *) + sizeof(size_t)) + bytes);
    memset(q, 0, sizeof(*q));
    q->conn = c;
    q->cb = cb;
    q->ctx = ctx;
    q->script = -1;
    q->argc = argc;
    q->argv = (const char **)(void *)(q + 1);
    q->argvlen = (size_t *)(void *)(q->argv + na);
    char *p = (char *)(q->argvlen + na);
    for (int i = 0; i < argc; i++) {
        q->argvlen[i] = argvlen ? argvlen[i] : strlen(argv[i]);
        memcpy(p, argv[i], q->argvlen[i]);
        p[q->argvlen[i]] = '\0';
        q->argv[i] = p;
        p += q->argvlen[i] + 1;
    }
    return q;
}

static bool
md_redis_forbidden(const char *name, size_t len)
{
    static const char *const modes[] = {"subscribe",    "psubscribe", "unsubscribe",
                                        "punsubscribe", "monitor",    "ssubscribe"};
    for (size_t i = 0; i < md_nelems(modes); i++) {
        if (len == strlen(modes[i]) && strncasecmp(name, modes[i], len) == 0)
            return true;
    }
    return false;
}

static int
md_redis_admit(md_redis_t *r)
{
    if (r->cmd.state != MD_REDIS_READY || r->cmd.ac == NULL || r->cmd.in_flight >= r->max_pending ||
        r->destroying) {
        r->rejected++;
        return MD_AGAIN;
    }
    return MD_OK;
}

void
md_redis_ignore_cb(void *ctx, redisReply *reply, const char *err)
{
    md_unused(ctx);
    md_unused(reply);
    md_unused(err);
}

int
md_redis_cmd(md_redis_t *r, md_redis_cb cb, void *ctx, int argc, const char **argv,
             const size_t *argvlen)
{
    if (argc < 1 || cb == NULL ||
        md_redis_forbidden(argv[0], argvlen ? argvlen[0] : strlen(argv[0])))
        return MD_ERROR;
    if (md_redis_admit(r) != MD_OK)
        return MD_AGAIN;
    md_redis_req_t *q = md_redis_req_new(&r->cmd, cb, ctx, 0, NULL, NULL);
    if (md_redis_send(&r->cmd, q, argc, argv, argvlen) != MD_OK) {
        free(q);
        r->rejected++;
        return MD_AGAIN;
    }
    return MD_OK;
}

/* ---- scripts ------------------------------------------------------------------- */

int
md_redis_script(md_redis_t *r, const char *lua)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (lua == NULL || EVP_Digest(lua, strlen(lua), md, &mdlen, EVP_sha1(), NULL) != 1 ||
        mdlen != 20)
        return MD_ERROR;
    char sha[41];
    for (unsigned i = 0; i < 20; i++)
        snprintf(sha + 2 * i, 3, "%02x", md[i]);
    for (int i = 0; i < r->nscripts; i++) {
        if (strcmp(r->scripts[i].sha, sha) == 0)
            return i;
    }
    r->scripts = md_xrealloc(r->scripts, sizeof(*r->scripts) * (size_t)(r->nscripts + 1));
    r->scripts[r->nscripts].lua = md_xstrdup(lua);
    memcpy(r->scripts[r->nscripts].sha, sha, sizeof(sha));
    return r->nscripts++;
}

int
md_redis_eval(md_redis_t *r, int id, int nkeys, int argc, const char **argv, const size_t *argvlen,
              md_redis_cb cb, void *ctx)
{
    if (id < 0 || id >= r->nscripts || nkeys < 0 || nkeys > argc || argc < 0 || cb == NULL ||
        argc > INT_MAX - 3)
        return MD_ERROR;
    if (md_redis_admit(r) != MD_OK)
        return MD_AGAIN;
    char nk[16];
    snprintf(nk, sizeof(nk), "%d", nkeys);
    int n = argc + 3;
    const char **av = md_xmalloc(sizeof(*av) * (size_t)n);
    size_t *al = md_xmalloc(sizeof(*al) * (size_t)n);
    av[0] = "EVALSHA";
    av[1] = r->scripts[id].sha;
    av[2] = nk;
    al[0] = 7;
    al[1] = 40;
    al[2] = strlen(nk);
    for (int i = 0; i < argc; i++) {
        av[i + 3] = argv[i];
        al[i + 3] = argvlen ? argvlen[i] : strlen(argv[i]);
    }
    md_redis_req_t *q = md_redis_req_new(&r->cmd, cb, ctx, n, av, al);
    free(av);
    free(al);
    q->script = id;
    if (md_redis_send(&r->cmd, q, q->argc, q->argv, q->argvlen) != MD_OK) {
        free(q);
        r->rejected++;
        return MD_AGAIN;
    }
    return MD_OK;
}

/* ---- pub/sub ------------------------------------------------------------------- */

static bool
md_redis_elem_is(const redisReply *e, const char *s)
{
    size_t n = strlen(s);
    return e->type == REDIS_REPLY_STRING && e->len == n && strncasecmp(e->str, s, n) == 0;
}

/* Every reply for a channel's subscription: the confirmation, then messages.
 * hiredis may also hand us a reply meant for nobody (see its subscribe callback
 * lookup), so anything that is not one of ours is ignored. */
static void
md_redis_sub_cb(redisAsyncContext *ac, void *reply, void *privdata)
{
    md_redis_sub_t *s = privdata;
    md_redis_conn_t *c = &s->r->sub;
    redisReply *rep = reply;
    if (rep == NULL || c->ac != ac || rep->type != REDIS_REPLY_ARRAY || rep->elements < 3)
        return;
    redisReply *kind = rep->element[0], *chan = rep->element[1], *data = rep->element[2];
    if (chan->type != REDIS_REPLY_STRING || chan->len != strlen(s->channel) ||
        memcmp(chan->str, s->channel, chan->len) != 0)
        return;
    if (md_redis_elem_is(kind, "message") && data->type == REDIS_REPLY_STRING) {
        s->on_msg(s->ctx, data->str, data->len);
    } else if (md_redis_elem_is(kind, "subscribe") && !s->active) {
        s->active = true;
        md_logf(s == s->r->hb_sub ? MD_LOG_DEBUG : MD_LOG_INFO, 0,
                MD_LOG_FIELDS(MD_LS("redis", s->r->address), MD_LS("channel", s->channel)),
                "redis subscribed");
        if (s->on_resubscribe)
            s->on_resubscribe(s->ctx);
    }
}

static void
md_redis_subscribe_one(md_redis_conn_t *c, md_redis_sub_t *s)
{
    const char *argv[] = {"SUBSCRIBE", s->channel};
    s->active = false;
    if (c->ac == NULL)
        return;
    if (redisAsyncCommandArgv(c->ac, md_redis_sub_cb, s, 2, argv, NULL) != REDIS_OK)
        md_redis_drop(c, "SUBSCRIBE could not be sent");
}

/*
 * Heartbeat of the pub/sub connection. An idle subscriber cannot tell a quiet
 * channel from a connection that silently stopped carrying messages (a NAT or
 * firewall that dropped it, a half-open TCP path): TCP keepalive notices after
 * minutes, and until then md_redis_subscribed() would vouch for a subscription
 * that misses every message, such as a key revocation. So every
 * MD_REDIS_HB_INTERVAL the command connection publishes a sequence number on a
 * channel only this client subscribes to. PUBLISH answers how many subscribers
 * got it: 0 means Redis no longer has ours, and at least 1 that it was sent,
 * so it must come back within MD_REDIS_HB_TIMEOUT. Either way the pub/sub
 * connection is dropped and made again (its owners hear it through
 * on_resubscribe), and it counts as not subscribed meanwhile.
 * An error answer (an ACL that denies PUBLISH, say) proves nothing either way,
 * and the invalidations other clients publish are most likely refused too: it
 * counts as not subscribed until a heartbeat is taken again, and then the
 * owners hear on_resubscribe, as after a reconnect (what they missed meanwhile
 * may be published later, md_broadcast_or_keep: their caches start afresh).
 */
#define MD_REDIS_HB_INTERVAL 1.0
#define MD_REDIS_HB_TIMEOUT  3.0

static void
md_redis_hb_msg(void *ctx, const char *payload, size_t len)
{
    md_redis_t *r = ctx;
    char buf[32];
    if (len == 0 || len >= sizeof(buf))
        return;
    memcpy(buf, payload, len);
    buf[len] = '\0';
    uint64_t seq = strtoull(buf, NULL, 10);
    if (seq > r->hb_seen)
        r->hb_seen = seq;
    if (r->hb_wait_since > 0 && r->hb_seen >= r->hb_wait_seq)
        r->hb_wait_since = 0;
}

static void
md_redis_hb_published(void *ctx, redisReply *reply, const char *err)
{
    md_redis_t *r = ctx;
    if (err != NULL || r->destroying)
        return; /* the command connection's own troubles are handled there */
    if (reply->type == REDIS_REPLY_ERROR) {
        if (!r->hb_refused)
            md_logf(MD_LOG_WARN, 0,
                    MD_LOG_FIELDS(MD_LS("redis", r->address), MD_LS("error", reply->str)),
                    "redis refuses the pub/sub heartbeat: subscriptions are not trusted until it "
                    "takes one");
        r->hb_refused = true;
        r->hb_wait_since = 0;
        return;
    }
    if (reply->type != REDIS_REPLY_INTEGER)
        return;
    if (r->hb_refused) {
        r->hb_refused = false;
        md_logf(MD_LOG_NOTICE, 0, MD_LOG_FIELDS(MD_LS("redis", r->address)),
                "redis takes the pub/sub heartbeat again");
        for (md_redis_sub_t *s = r->subs; s; s = s->next)
            if (s->active && s->on_resubscribe)
                s->on_resubscribe(s->ctx);
    }
    if (r->sub.state != MD_REDIS_READY || r->hb_sub == NULL || !r->hb_sub->active)
        return; /* sent across a resubscription: says nothing about this connection */
    if (reply->integer == 0) {
        r->hb_wait_since = 0;
        md_redis_drop(&r->sub, "Redis has no subscription for our heartbeat");
        return;
    }
    if (r->hb_wait_since == 0 && r->hb_seen < r->hb_sent) {
        r->hb_wait_seq = r->hb_sent;
        r->hb_wait_since = ev_now(r->loop);
    }
}

static void
md_redis_hb_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    md_unused(loop);
    md_unused(revents);
    md_redis_t *r = t->data;
    if (r->sub.state != MD_REDIS_READY || r->hb_sub == NULL || !r->hb_sub->active) {
        r->hb_wait_since = 0;
        return;
    }
    if (r->hb_wait_since > 0 && ev_now(r->loop) - r->hb_wait_since > MD_REDIS_HB_TIMEOUT) {
        r->hb_wait_since = 0;
        md_redis_drop(&r->sub, "no heartbeat came back on the pub/sub connection");
        return;
    }
    if (!md_redis_ready(r))
        return; /* the command connection is down: that is its own alarm */
    char seq[32];
    snprintf(seq, sizeof(seq), "%llu", (unsigned long long)++r->hb_sent);
    const char *argv[] = {"PUBLISH", r->hb_channel, seq};
    (void)md_redis_cmd(r, md_redis_hb_published, r, 3, argv, NULL);
}

/* The heartbeat's channel and timer, with the first subscription. */
static void
md_redis_hb_start(md_redis_t *r)
{
    md_redis_sub_t *s = md_xcalloc(1, sizeof(*s));
    (void)md_redis_random(r); /* steps r->rng, whose 64 bits name the channel */
    snprintf(r->hb_channel, sizeof(r->hb_channel), "mailerd:hb:%ld:%016llx", (long)getpid(),
             (unsigned long long)r->rng);
    s->r = r;
    s->channel = md_xstrdup(r->hb_channel);
    s->on_msg = md_redis_hb_msg;
    s->ctx = r;
    md_redis_sub_t **tail = &r->subs;
    while (*tail)
        tail = &(*tail)->next;
    *tail = s;
    r->hb_sub = s;
    ev_timer_init(&r->hb_timer, md_redis_hb_cb, MD_REDIS_HB_INTERVAL, MD_REDIS_HB_INTERVAL);
    r->hb_timer.data = r;
    ev_timer_start(r->loop, &r->hb_timer);
    if (r->sub.state == MD_REDIS_READY)
        md_redis_subscribe_one(&r->sub, s);
}

int
md_redis_subscribe(md_redis_t *r, const char *channel, md_redis_msg_cb on_msg,
                   md_redis_resub_cb on_resubscribe, void *ctx)
{
    if (channel == NULL || channel[0] == '\0' || on_msg == NULL || r->destroying)
        return MD_ERROR;
    md_redis_sub_t **tail = &r->subs;
    for (; *tail; tail = &(*tail)->next) {
        if (strcmp((*tail)->channel, channel) == 0)
            return MD_ERROR;
    }
    md_redis_sub_t *s = md_xcalloc(1, sizeof(*s));
    s->r = r;
    s->channel = md_xstrdup(channel);
    s->on_msg = on_msg;
    s->on_resubscribe = on_resubscribe;
    s->ctx = ctx;
    *tail = s;
    if (r->sub.state == MD_REDIS_READY)
        md_redis_subscribe_one(&r->sub, s);
    else if (r->started)
        md_redis_conn_start(&r->sub);
    if (r->hb_sub == NULL)
        md_redis_hb_start(r);
    return MD_OK;
}

/* ---- create, start, destroy, stats ------------------------------------------- */

static void
md_redis_conn_init(md_redis_t *r, md_redis_conn_t *c, const char *role, bool pubsub)
{
    c->r = r;
    c->role = role;
    c->pubsub = pubsub;
    c->state = MD_REDIS_IDLE;
    ev_timer_init(&c->timer, md_redis_timer_cb, 0., 0.);
    c->timer.data = c;
    ev_timer_init(&c->cmd_timer, md_redis_cmd_timer_cb, 0., 0.);
    c->cmd_timer.data = c;
}

md_redis_t *
md_redis_create(struct ev_loop *loop, const md_redis_conf_t *conf, char *err, size_t errlen)
{
    const char *addr = conf && conf->address ? conf->address : NULL;
    char *ip, *path;
    int port;
    if (addr == NULL) {
        snprintf(err, errlen, "redis: no address configured");
        return NULL;
    }
    if (md_redis_parse_address(addr, &ip, &port, &path) != MD_OK) {
        snprintf(err, errlen,
                 "redis: invalid address \"%s\": expected IP:PORT, [IPv6]:PORT or unix:/path "
                 "(host names are not resolved)",
                 addr);
        return NULL;
    }
    md_redis_t *r = md_xcalloc(1, sizeof(*r));
    r->loop = loop;
    r->address = md_xstrdup(addr);
    r->ip = ip;
    r->port = port;
    r->path = path;
    r->password = conf->password && conf->password[0] ? md_xstrdup(conf->password) : NULL;
    r->db = conf->db > 0 ? conf->db : 0;
    r->connect_timeout = conf->connect_timeout > 0 ? conf->connect_timeout : 2.0;
    r->command_timeout = conf->command_timeout > 0 ? conf->command_timeout : 1.0;
    r->max_pending = conf->max_pending > 0 ? conf->max_pending : 10000;
    r->reconnect_min = conf->reconnect_min > 0 ? conf->reconnect_min : 0.1;
    r->reconnect_max = conf->reconnect_max > 0 ? conf->reconnect_max : 5.0;
    if (r->reconnect_max < r->reconnect_min)
        r->reconnect_max = r->reconnect_min;
    r->rng = ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)r ^ (uint64_t)(ev_time() * 1e6) ^
             0x9e3779b97f4a7c15ULL;
    md_redis_conn_init(r, &r->cmd, "command", false);
    md_redis_conn_init(r, &r->sub, "pubsub", true);
    return r;
}

int
md_redis_start(md_redis_t *r)
{
    if (r->started)
        return MD_OK;
    r->started = true;
    md_redis_conn_start(&r->cmd);
    if (r->subs)
        md_redis_conn_start(&r->sub);
    return MD_OK;
}

void
md_redis_destroy(md_redis_t *r)
{
    if (r == NULL)
        return;
    r->destroying = true;
    if (r->hb_sub != NULL)
        ev_timer_stop(r->loop, &r->hb_timer);
    md_redis_conn_t *conns[] = {&r->cmd, &r->sub};
    for (size_t i = 0; i < md_nelems(conns); i++) {
        md_redis_conn_t *c = conns[i];
        ev_timer_stop(r->loop, &c->timer);
        ev_timer_stop(r->loop, &c->cmd_timer);
        redisAsyncContext *ac = c->ac;
        c->ac = NULL;
        c->state = MD_REDIS_IDLE;
        if (ac)
            redisAsyncFree(ac); /* pending callbacks run now, with "unavailable" */
    }
    while (r->subs) {
        md_redis_sub_t *s = r->subs;
        r->subs = s->next;
        free(s->channel);
        free(s);
    }
    for (int i = 0; i < r->nscripts; i++)
        free(r->scripts[i].lua);
    free(r->scripts);
    if (r->password) {
        explicit_bzero(r->password, strlen(r->password));
        free(r->password);
    }
    free(r->address);
    free(r->ip);
    free(r->path);
    free(r);
}

bool
md_redis_ready(const md_redis_t *r)
{
    return r->cmd.state == MD_REDIS_READY;
}

bool
md_redis_subscribed(const md_redis_t *r)
{
    if (r->subs == NULL || r->sub.state != MD_REDIS_READY || r->hb_refused)
        return false;
    for (const md_redis_sub_t *s = r->subs; s; s = s->next) {
        if (!s->active)
            return false;
    }
    return true;
}

void
md_redis_stats(const md_redis_t *r, md_redis_stats_t *s)
{
    memset(s, 0, sizeof(*s));
    s->connected = md_redis_ready(r);
    s->subscribed = md_redis_subscribed(r);
    s->in_flight = r->cmd.in_flight;
    s->reconnects = r->reconnects;
    s->errors = r->errors;
    s->timeouts = r->timeouts;
    s->rejected = r->rejected;
    memcpy(s->last_error, r->last_error, sizeof(s->last_error));
}

/* ---- configuration ------------------------------------------------------------- */

static int
md_redis_set_address(md_conf_parser_t *cf, const md_conf_cmd_t *cmd, void *base)
{
    char *ip, *path;
    int port;
    if (md_redis_parse_address(md_conf_arg(cf, 1), &ip, &port, &path) != MD_OK)
        return md_conf_error(cf,
                             "invalid value \"%s\" in \"%s\" directive, expected IP:PORT, "
                             "[IPv6]:PORT or unix:/path (host names are not resolved)",
                             md_conf_arg(cf, 1), cmd->name);
    free(ip);
    free(path);
    return md_conf_set_str(cf, cmd, base);
}

/* address has no default on purpose: md_conf applies the defaults of an absent
 * block too, and a NULL address is how the rest of mailerd knows there is no
 * redis { } block. */
static const md_conf_bounds_t md_redis_time_bounds = {0.001, 3600};
static const md_conf_bounds_t md_redis_pending_bounds = {1, INT_MAX};

static const md_conf_cmd_t md_redis_cmds[] = {
    {"address", MD_CONF_REDIS, MD_CONF_TAKE1, md_redis_set_address,
     offsetof(md_redis_conf_t, address), NULL, NULL, md_conf_free_str},
    {"password", MD_CONF_REDIS, MD_CONF_TAKE1, md_conf_set_str, offsetof(md_redis_conf_t, password),
     NULL, NULL, md_conf_free_str},
    {"db", MD_CONF_REDIS, MD_CONF_TAKE1, md_conf_set_number, offsetof(md_redis_conf_t, db), NULL,
     "0", NULL},
    {"connect_timeout", MD_CONF_REDIS, MD_CONF_TAKE1, md_conf_set_time,
     offsetof(md_redis_conf_t, connect_timeout), &md_redis_time_bounds, "2s", NULL},
    {"command_timeout", MD_CONF_REDIS, MD_CONF_TAKE1, md_conf_set_time,
     offsetof(md_redis_conf_t, command_timeout), &md_redis_time_bounds, "1s", NULL},
    {"max_pending", MD_CONF_REDIS, MD_CONF_TAKE1, md_conf_set_number,
     offsetof(md_redis_conf_t, max_pending), &md_redis_pending_bounds, "10000", NULL},
    {"reconnect_min", MD_CONF_REDIS, MD_CONF_TAKE1, md_conf_set_time,
     offsetof(md_redis_conf_t, reconnect_min), &md_redis_time_bounds, "100ms", NULL},
    {"reconnect_max", MD_CONF_REDIS, MD_CONF_TAKE1, md_conf_set_time,
     offsetof(md_redis_conf_t, reconnect_max), &md_redis_time_bounds, "5s", NULL},
    {NULL, 0, 0, NULL, 0, NULL, NULL, NULL},
};

const md_conf_block_t md_redis_conf_block = {"redis", MD_CONF_REDIS, md_redis_cmds};
