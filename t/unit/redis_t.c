/*
 * Redis client against a real Redis at MD_TEST_REDIS_ADDR (t/41-redis.t starts
 * one; without it only the configuration tests run).
 *
 *   redis_t           the unit tests, TAP on stdout
 *   redis_t outage    the outage scenario driven by t/41-redis.t over stdin/stdout:
 *                     it prints "@ready" when healthy, then Perl stops (or freezes)
 *                     Redis and writes "down"; this side keeps issuing commands,
 *                     checks they all fail fast, prints "@checked"; Perl restores
 *                     Redis and writes "up"; this side checks that it recovers by
 *                     itself (commands, scripts, subscription) and prints "@ready"
 *                     again; "quit" ends it. Results are TAP lines too.
 *
 * Everything runs on one ev loop; run_until() turns the loop until a condition
 * holds or a deadline passes, so no test sleeps a fixed time.
 */
#include "md_broadcast.h"
#include "md_core.h"
#include "md_log.h"
#include "md_redis.h"
#include "tap.h"

#include <ev.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static struct ev_loop *loop;
static const char *addr;
static bool in_call; /* a callback running while this is set ran too early */
static int early_callbacks;

/* ---- helpers ------------------------------------------------------------------ */

static void
tick_cb(struct ev_loop *l, ev_timer *w, int revents)
{
    md_unused(l);
    md_unused(w);
    md_unused(revents);
}

typedef bool (*cond_fn)(void *arg);

/* Turns the loop until cond(arg) or timeout seconds pass; returns cond's last value. */
static bool
run_until(cond_fn cond, void *arg, double timeout)
{
    double deadline = ev_time() + timeout;
    while (!cond(arg)) {
        if (ev_time() > deadline)
            return cond(arg);
        ev_run(loop, EVRUN_ONCE);
    }
    return true;
}

static void
run_for(double seconds)
{
    double deadline = ev_time() + seconds;
    while (ev_time() < deadline)
        ev_run(loop, EVRUN_ONCE);
}

typedef struct res_s {
    bool done;
    int calls;
    int type;
    long long integer;
    char *str; /* a copy (binary) of a string/status/error reply */
    size_t len;
    size_t elements;
    char *elem[4];
    size_t elemlen[4];
    long long elemint[4];
    const char *err;
    double t0, t1;
} res_t;

static void
res_reset(res_t *x)
{
    free(x->str);
    for (int i = 0; i < 4; i++)
        free(x->elem[i]);
    memset(x, 0, sizeof(*x));
}

static void
res_cb(void *ctx, redisReply *rep, const char *err)
{
    res_t *x = ctx;
    if (in_call)
        early_callbacks++;
    x->calls++;
    x->done = true;
    x->t1 = ev_time();
    x->err = err;
    if (rep == NULL)
        return;
    x->type = rep->type;
    x->integer = rep->integer;
    if (rep->str) {
        x->str = md_xmalloc(rep->len + 1);
        memcpy(x->str, rep->str, rep->len);
        x->str[rep->len] = '\0';
        x->len = rep->len;
    }
    x->elements = rep->elements;
    for (size_t i = 0; i < rep->elements && i < 4; i++) {
        redisReply *e = rep->element[i];
        x->elemint[i] = e->integer;
        if (e->str) {
            x->elem[i] = md_xmalloc(e->len + 1);
            memcpy(x->elem[i], e->str, e->len);
            x->elem[i][e->len] = '\0';
            x->elemlen[i] = e->len;
        }
    }
}

static bool
res_done(void *arg)
{
    return ((res_t *)arg)->done;
}

/* Sends argv (NUL-terminated strings unless lens) with res_cb; returns md_redis_cmd's answer. */
static int
send_cmd(md_redis_t *r, res_t *x, int argc, const char **argv, const size_t *lens)
{
    res_reset(x);
    x->t0 = ev_time();
    in_call = true;
    int rc = md_redis_cmd(r, res_cb, x, argc, argv, lens);
    in_call = false;
    return rc;
}

/* Sends and waits up to 5 s; true when a reply (not an error string) arrived. */
static bool
call(md_redis_t *r, res_t *x, int argc, const char **argv, const size_t *lens)
{
    if (send_cmd(r, x, argc, argv, lens) != MD_OK)
        return false;
    return run_until(res_done, x, 5) && x->err == NULL;
}

#define CALL(r, x, ...)                                                                            \
    call((r), (x), (int)md_nelems(((const char *[]){__VA_ARGS__})),                                \
         ((const char *[]){__VA_ARGS__}), NULL)

static bool
is_ready(void *arg)
{
    return md_redis_ready(arg);
}

static bool
is_subscribed(void *arg)
{
    return md_redis_subscribed(arg);
}

/* A client on addr with the block's defaults except what the caller sets after. */
static md_redis_conf_t
conf_for(const char *a)
{
    md_redis_conf_t c;
    memset(&c, 0, sizeof(c));
    c.address = (char *)a;
    c.reconnect_min = 0.05;
    c.reconnect_max = 0.5;
    return c;
}

static md_redis_t *
client(const md_redis_conf_t *c)
{
    char err[256];
    md_redis_t *r = md_redis_create(loop, c, err, sizeof(err));
    if (r == NULL) {
        printf("Bail out! md_redis_create: %s\n", err);
        exit(1);
    }
    md_redis_start(r);
    return r;
}

static void
sha1_hex(const char *s, char out[41])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    EVP_Digest(s, strlen(s), md, &n, EVP_sha1(), NULL);
    for (unsigned i = 0; i < 20; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* ---- configuration (no server needed) ------------------------------------------ */

static char tmpdir[256];

static md_conf_t *
load_conf(const char *text, char *err, size_t errlen)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/main.conf", tmpdir);
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    return md_conf_load(path, tmpdir, err, errlen);
}

static void
test_conf(void)
{
    char err[512];
    md_conf_t *c = load_conf("pid off;\nredis {\n}\n", err, sizeof(err));
    ok(c != NULL, "empty redis block loads: %s", c ? "" : err);
    if (c) {
        ok(c->redis.address == NULL, "no default address");
        ok(c->redis.password == NULL && c->redis.db == 0, "no password, db 0 by default");
        ok(c->redis.connect_timeout == 2.0 && c->redis.command_timeout == 1.0,
           "timeouts default to 2s and 1s");
        ok(c->redis.max_pending == 10000, "max_pending defaults to 10000");
        ok(c->redis.reconnect_min == 0.1 && c->redis.reconnect_max == 5.0,
           "reconnect backoff defaults to 100ms..5s");
        md_conf_free(c);
    }
    c = load_conf("pid off;\n", err, sizeof(err));
    ok(c && c->redis.address == NULL, "no redis block: address NULL");
    md_conf_free(c);

    c = load_conf("pid off;\nredis {\n address unix:/run/redis.sock;\n password \"s3 cret\";\n"
                  " db 2;\n command_timeout 250ms;\n connect_timeout 3s;\n max_pending 5;\n"
                  " reconnect_min 10ms;\n reconnect_max 1s;\n}\n",
                  err, sizeof(err));
    ok(c != NULL, "full redis block loads: %s", c ? "" : err);
    if (c) {
        is_str(c->redis.address, "unix:/run/redis.sock", "unix address kept");
        is_str(c->redis.password, "s3 cret", "password");
        ok(c->redis.db == 2 && c->redis.command_timeout == 0.25 &&
               c->redis.connect_timeout == 3.0 && c->redis.max_pending == 5 &&
               c->redis.reconnect_min == 0.01 && c->redis.reconnect_max == 1.0,
           "numbers and times");
        md_conf_free(c);
    }
    c = load_conf("pid off;\nredis {\n address [::1]:6380;\n}\n", err, sizeof(err));
    ok(c != NULL, "IPv6 literal accepted");
    md_conf_free(c);

    c = load_conf("pid off;\nredis {\n address localhost:6379;\n}\n", err, sizeof(err));
    ok(c == NULL && strstr(err, "main.conf:3:") && strstr(err, "host names are not resolved"),
       "host name refused with its line: %s", err);
    md_conf_free(c);
    c = load_conf("pid off;\nredis {\n command_timeout 0;\n}\n", err, sizeof(err));
    ok(c == NULL && strstr(err, "command_timeout"), "zero command_timeout refused: %s", err);
    md_conf_free(c);

    static const char *const bad[] = {"127.0.0.1",        "127.0.0.1:0", "127.0.0.1:70000",
                                      "unix:relative",    "unix:",       "::1:6379",
                                      "redis.local:6379", "127.0.0.1:x", "[::1]6379"};
    int refused = 0;
    for (size_t i = 0; i < md_nelems(bad); i++) {
        md_redis_conf_t rc = conf_for(bad[i]);
        md_redis_t *r = md_redis_create(loop, &rc, err, sizeof(err));
        if (r == NULL && strstr(err, bad[i]))
            refused++;
        else
            printf("# accepted or unclear: %s -> %s\n", bad[i], err);
        md_redis_destroy(r);
    }
    is_int(refused, md_nelems(bad), "md_redis_create refuses bad addresses, naming them");
    md_redis_conf_t none = conf_for(NULL);
    ok(md_redis_create(loop, &none, err, sizeof(err)) == NULL, "no address refused");
}

/* ---- basic commands ------------------------------------------------------------- */

typedef struct chain_s {
    md_redis_t *r;
    res_t second;
    int rc;
} chain_t;

static void
chain_first_cb(void *ctx, redisReply *rep, const char *err)
{
    chain_t *ch = ctx;
    md_unused(rep);
    md_unused(err);
    const char *argv[] = {"GET", "md:t:chain"};
    ch->rc = md_redis_cmd(ch->r, res_cb, &ch->second, 2, argv, NULL);
}

static void
test_basic(md_redis_t *r)
{
    res_t x = {0};
    ok(run_until(is_ready, r, 5), "client connects");
    ok(CALL(r, &x, "FLUSHALL"), "FLUSHALL (a private test server)");

    static const char val[] = "a\0b\r\n\0\xff end";
    const char *argv[] = {"SET", "md:t:bin\0x", val};
    size_t lens[] = {3, 10, sizeof(val) - 1};
    ok(call(r, &x, 3, argv, lens) && x.type == REDIS_REPLY_STATUS, "SET with binary key and value");
    ok(early_callbacks == 0, "no callback ran before md_redis_cmd returned");
    const char *gargv[] = {"GET", "md:t:bin\0x"};
    size_t glens[] = {3, 10};
    ok(call(r, &x, 2, gargv, glens) && x.type == REDIS_REPLY_STRING, "GET answers a string");
    ok(x.len == sizeof(val) - 1 && memcmp(x.str, val, x.len) == 0,
       "value round-trips with its NUL bytes (%zu bytes)", x.len);

    ok(CALL(r, &x, "GET", "md:t:missing") && x.type == REDIS_REPLY_NIL, "missing key is nil");
    ok(CALL(r, &x, "SET", "md:t:str", "abc"), "SET");
    ok(CALL(r, &x, "INCR", "md:t:str") && x.type == REDIS_REPLY_ERROR && x.err == NULL && x.str &&
           strstr(x.str, "not an integer"),
       "a Redis error arrives as an error reply: %s", x.str ? x.str : "");
    ok(CALL(r, &x, "RPUSH", "md:t:list", "1", "2", "3") && x.integer == 3, "RPUSH");
    ok(CALL(r, &x, "LRANGE", "md:t:list", "0", "-1") && x.type == REDIS_REPLY_ARRAY &&
           x.elements == 3 && x.elemlen[2] == 1 && x.elem[2][0] == '3',
       "array replies");

    /* A callback may issue the next command. */
    chain_t ch = {.r = r};
    res_t first = {0};
    ok(CALL(r, &first, "SET", "md:t:chain", "linked"), "SET for the chain");
    const char *pargv[] = {"PING"};
    ok(md_redis_cmd(r, chain_first_cb, &ch, 1, pargv, NULL) == MD_OK, "chain started");
    ok(run_until(res_done, &ch.second, 5) && ch.rc == MD_OK && ch.second.str &&
           strcmp(ch.second.str, "linked") == 0,
       "a command sent from a callback completes");

    const char *sub[] = {"SUBSCRIBE", "x"};
    const char *mon[] = {"monitor"};
    ok(md_redis_cmd(r, res_cb, &x, 2, sub, NULL) == MD_ERROR &&
           md_redis_cmd(r, res_cb, &x, 1, mon, NULL) == MD_ERROR &&
           md_redis_cmd(r, res_cb, &x, 0, sub, NULL) == MD_ERROR,
       "SUBSCRIBE/MONITOR and argc 0 refused on the command connection");
    md_redis_stats_t st;
    md_redis_stats(r, &st);
    ok(st.connected && st.in_flight == 0 && st.errors == 1,
       "stats: connected, nothing in flight, one error reply (got %llu)",
       (unsigned long long)st.errors);
    res_reset(&x);
    res_reset(&first);
    res_reset(&ch.second);
}

/* ---- pipelining ----------------------------------------------------------------- */

static int pipe_next, pipe_bad, pipe_done;

static void
pipe_cb(void *ctx, redisReply *rep, const char *err)
{
    int i = (int)(intptr_t)ctx;
    if (err || rep == NULL || rep->type != REDIS_REPLY_INTEGER || rep->integer != i + 1 ||
        i != pipe_next)
        pipe_bad++;
    pipe_next++;
    pipe_done++;
}

static bool
pipe_finished(void *arg)
{
    return pipe_done == *(int *)arg;
}

static void
test_pipeline(md_redis_t *r)
{
    res_t x = {0};
    enum { N = 10000 };
    CALL(r, &x, "DEL", "md:t:pipe");
    int sent = 0;
    double t0 = ev_time();
    for (int i = 0; i < N; i++) {
        const char *argv[] = {"INCR", "md:t:pipe"};
        if (md_redis_cmd(r, pipe_cb, (void *)(intptr_t)i, 2, argv, NULL) == MD_OK)
            sent++;
    }
    md_redis_stats_t st;
    md_redis_stats(r, &st);
    is_int(sent, N, "%d commands queued without waiting", N);
    is_int(st.in_flight, N, "all of them in flight at once");
    int want = N;
    ok(run_until(pipe_finished, &want, 20), "all %d replies arrived in %.2fs", N, ev_time() - t0);
    is_int(pipe_bad, 0, "each reply matched its command, in order");
    res_reset(&x);
}

static void
test_max_pending(void)
{
    md_redis_conf_t c = conf_for(addr);
    c.max_pending = 3;
    md_redis_t *r = client(&c);
    res_t x[4] = {{0}};
    run_until(is_ready, r, 5);
    int rcs[4];
    for (int i = 0; i < 4; i++)
        rcs[i] = send_cmd(r, &x[i], 1, (const char *[]){"PING"}, NULL);
    ok(rcs[0] == MD_OK && rcs[1] == MD_OK && rcs[2] == MD_OK && rcs[3] == MD_AGAIN,
       "max_pending 3: the fourth command is refused with MD_AGAIN");
    ok(run_until(res_done, &x[2], 5) && !x[3].done,
       "the three admitted complete, the refused never");
    ok(send_cmd(r, &x[3], 1, (const char *[]){"PING"}, NULL) == MD_OK,
       "admitted again once drained");
    run_until(res_done, &x[3], 5);
    md_redis_destroy(r);
    for (int i = 0; i < 4; i++)
        res_reset(&x[i]);
}

/* ---- scripts ------------------------------------------------------------------- */

static bool
eval_wait(md_redis_t *r, res_t *x, int id, int nkeys, int argc, const char **argv,
          const size_t *lens)
{
    res_reset(x);
    in_call = true;
    int rc = md_redis_eval(r, id, nkeys, argc, argv, lens, res_cb, x);
    in_call = false;
    return rc == MD_OK && run_until(res_done, x, 5) && x->err == NULL;
}

static void
test_scripts(md_redis_t *r)
{
    static const char lua[] = "return {ARGV[1], redis.call('INCR', KEYS[1])}";
    res_t x = {0};
    char sha[41];
    sha1_hex(lua, sha);
    int id = md_redis_script(r, lua);
    ok(id >= 0, "script registered");
    is_int(md_redis_script(r, lua), id, "the same text gets the same id");
    int bad = md_redis_script(r, "return redis.error_reply('boom')");
    ok(bad >= 0 && bad != id, "a second script gets its own id");

    CALL(r, &x, "DEL", "md:t:evalk");
    static const char arg[] = "x\0y";
    const char *argv[] = {"md:t:evalk", arg};
    size_t lens[] = {10, 3};
    ok(eval_wait(r, &x, id, 1, 2, argv, lens) && x.type == REDIS_REPLY_ARRAY && x.elements == 2,
       "EVALSHA of a script Redis has not seen runs (NOSCRIPT fallback)");
    ok(x.elemlen[0] == 3 && memcmp(x.elem[0], arg, 3) == 0 && x.elemint[1] == 1,
       "binary argument and key passed through");
    ok(CALL(r, &x, "SCRIPT", "EXISTS", sha) && x.elements == 1 && x.elemint[0] == 1,
       "the fallback left the script cached in Redis");
    ok(eval_wait(r, &x, id, 1, 2, argv, lens) && x.elemint[1] == 2, "EVALSHA runs again");

    ok(CALL(r, &x, "SCRIPT", "FLUSH"), "SCRIPT FLUSH");
    ok(CALL(r, &x, "SCRIPT", "EXISTS", sha) && x.elemint[0] == 0, "script gone from Redis");
    ok(eval_wait(r, &x, id, 1, 2, argv, lens) && x.type == REDIS_REPLY_ARRAY && x.elemint[1] == 3,
       "after SCRIPT FLUSH the call still succeeds, transparently");
    ok(CALL(r, &x, "SCRIPT", "EXISTS", sha) && x.elemint[0] == 1, "and the script is cached again");

    ok(eval_wait(r, &x, bad, 0, 0, NULL, NULL) && x.type == REDIS_REPLY_ERROR && x.str &&
           strstr(x.str, "boom"),
       "a script's error reply reaches the caller: %s", x.str ? x.str : "");
    ok(md_redis_eval(r, 99, 0, 0, NULL, NULL, res_cb, &x) == MD_ERROR &&
           md_redis_eval(r, id, 3, 2, argv, lens, res_cb, &x) == MD_ERROR,
       "unknown script id or nkeys > argc refused");
    res_reset(&x);
}

/* ---- timeouts ------------------------------------------------------------------- */

static void
test_timeout(void)
{
    md_redis_conf_t c = conf_for(addr);
    c.command_timeout = 0.2;
    md_redis_t *r = client(&c);
    res_t blk = {0}, behind = {0}, x = {0};
    ok(run_until(is_ready, r, 5), "client with command_timeout 200ms connects");
    ok(send_cmd(r, &blk, 3, (const char *[]){"BLPOP", "md:t:never", "5"}, NULL) == MD_OK,
       "BLPOP 5 s sent");
    run_for(0.05); /* so that its deadline comes later than the BLPOP's */
    send_cmd(r, &behind, 1, (const char *[]){"PING"}, NULL);
    ok(run_until(res_done, &blk, 3), "BLPOP completed");
    double took = blk.t1 - blk.t0;
    is_str(blk.err, "timeout", "with \"timeout\"");
    ok(took >= 0.15 && took < 1.0, "after about 200ms (%.3fs)", took);
    ok(run_until(res_done, &behind, 1) && behind.err && strcmp(behind.err, "disconnected") == 0,
       "the command queued behind it fails with \"disconnected\"");
    ok(!md_redis_ready(r) && send_cmd(r, &x, 1, (const char *[]){"PING"}, NULL) == MD_AGAIN,
       "while reconnecting, commands are refused at once");
    ok(run_until(is_ready, r, 3), "the client reconnects by itself");
    ok(CALL(r, &x, "PING") && x.str && strcmp(x.str, "PONG") == 0, "and serves again");
    md_redis_stats_t st;
    md_redis_stats(r, &st);
    ok(st.timeouts == 1 && st.reconnects == 1 && st.errors == 1,
       "stats: 1 timeout, 1 reconnect, 1 error (%llu, %llu, %llu)", (unsigned long long)st.timeouts,
       (unsigned long long)st.reconnects, (unsigned long long)st.errors);
    ok(strstr(st.last_error, "command_timeout") != NULL, "last_error: %s", st.last_error);
    md_redis_destroy(r);
    res_reset(&blk);
    res_reset(&behind);
    res_reset(&x);
}

/* ---- pub/sub -------------------------------------------------------------------- */

typedef struct subst_s {
    int msgs, resubs;
    char last[64];
    size_t lastlen;
} subst_t;

static void
sub_msg(void *ctx, const char *p, size_t len)
{
    subst_t *s = ctx;
    s->msgs++;
    s->lastlen = md_min(len, sizeof(s->last));
    memcpy(s->last, p, s->lastlen);
}

static void
sub_resub(void *ctx)
{
    ((subst_t *)ctx)->resubs++;
}

typedef struct waitn_s {
    int *v;
    int want;
} waitn_t;

static bool
reached(void *arg)
{
    waitn_t *w = arg;
    return *w->v >= w->want;
}

static void
test_pubsub(void)
{
    md_redis_conf_t c = conf_for(addr);
    char err[128];
    md_redis_t *r = md_redis_create(loop, &c, err, sizeof(err));
    subst_t s1 = {0}, s2 = {0};
    res_t x = {0};
    ok(md_redis_subscribe(r, "md:t:chan", sub_msg, sub_resub, &s1) == MD_OK,
       "subscribe before start");
    ok(md_redis_subscribe(r, "md:t:chan", sub_msg, NULL, &s2) == MD_ERROR,
       "a second subscriber on one channel refused");
    ok(!md_redis_subscribed(r), "not subscribed before start");
    md_redis_start(r);
    ok(run_until(is_subscribed, r, 5) && run_until(is_ready, r, 5), "subscribed and connected");
    is_int(s1.resubs, 1, "on_resubscribe ran for the first subscription");

    static const char payload[] = "key\0revoked";
    const char *argv[] = {"PUBLISH", "md:t:chan", payload};
    size_t lens[] = {7, 9, sizeof(payload) - 1};
    ok(call(r, &x, 3, argv, lens) && x.integer == 1, "PUBLISH reaches one subscriber");
    ok(run_until(reached, &(waitn_t){&s1.msgs, 1}, 2), "message delivered");
    ok(s1.lastlen == sizeof(payload) - 1 && memcmp(s1.last, payload, s1.lastlen) == 0,
       "binary payload intact");

    ok(md_redis_subscribe(r, "md:t:chan2", sub_msg, sub_resub, &s2) == MD_OK,
       "subscribe after start");
    ok(run_until(reached, &(waitn_t){&s2.resubs, 1}, 2) && md_redis_subscribed(r),
       "second channel active");

    double t0 = ev_time();
    ok(CALL(r, &x, "CLIENT", "KILL", "TYPE", "pubsub") && x.integer >= 1,
       "CLIENT KILL TYPE pubsub killed %lld", x.integer);
    ok(run_until(reached, &(waitn_t){&s1.resubs, 2}, 3) &&
           run_until(reached, &(waitn_t){&s2.resubs, 2}, 3),
       "both channels resubscribed after %.3fs; on_resubscribe ran again", ev_time() - t0);
    ok(ev_time() - t0 < 1.0, "within a second");
    argv[2] = "after";
    lens[2] = 5;
    ok(call(r, &x, 3, argv, lens) && x.integer == 1, "PUBLISH after the reconnect");
    ok(run_until(reached, &(waitn_t){&s1.msgs, 2}, 2) && s1.lastlen == 5 &&
           memcmp(s1.last, "after", 5) == 0,
       "delivered after the reconnect");
    md_redis_stats_t st;
    md_redis_stats(r, &st);
    ok(st.subscribed && st.reconnects == 1, "stats: subscribed, 1 reconnect");
    md_redis_destroy(r);
    res_reset(&x);
}

/* ---- md_broadcast: invalidations every subscriber confirms ------------------------- */

typedef struct bc_sub_s {
    md_redis_t *r; /* the receiving worker's client */
    bool silent;   /* applies but never counts itself (an older version) */
    int msgs;
    char body[64];
    size_t bodylen, len;
} bc_sub_t;

static void
bc_msg(void *ctx, const char *p, size_t len)
{
    bc_sub_t *s = ctx;
    s->msgs++;
    s->len = len;
    s->bodylen = md_broadcast_body(p, len);
    memcpy(s->body, p, md_min(s->bodylen, sizeof(s->body)));
    if (!s->silent)
        md_broadcast_applied(s->r, p, len);
}

typedef struct bc_res_s {
    int calls;
    const char *err;
    double t1;
} bc_res_t;

static void
bc_done(void *ctx, const char *err)
{
    bc_res_t *x = ctx;
    if (in_call)
        early_callbacks++;
    x->calls++;
    x->err = err;
    x->t1 = ev_time();
}

static bool
bc_called(void *arg)
{
    return ((bc_res_t *)arg)->calls > 0;
}

static bool
bc_subscribed(void *arg)
{
    md_redis_t **rs = arg;
    return md_redis_subscribed(rs[0]) && md_redis_subscribed(rs[1]) && md_redis_ready(rs[0]) &&
           md_redis_ready(rs[1]);
}

static void
test_broadcast(void)
{
    /* The message's confirmation request, as md_broadcast_body reads it. */
    static const char tok[] = " ack:0123456789abcdef0123456789abcdef";
    char m[128];
    snprintf(m, sizeof(m), "hashes%s", tok);
    is_int((int)md_broadcast_body(m, strlen(m)), 6, "body: the confirmation request cut off");
    is_int((int)md_broadcast_body("hashes", 6), 6, "body: a message without one is whole");
    snprintf(m, sizeof(m), "hashes ack:0123456789abcdef0123456789abcdeg");
    is_int((int)md_broadcast_body(m, strlen(m)), (int)strlen(m), "body: not hex, not a request");
    snprintf(m, sizeof(m), "hashes ack:0123456789abcdef0123456789abcde");
    is_int((int)md_broadcast_body(m, strlen(m)), (int)strlen(m), "body: 31 digits, not a request");
    is_int((int)md_broadcast_body(tok, sizeof(tok) - 1), 0, "body: a request alone leaves nothing");

    /* Two workers' clients, each subscribed. */
    md_redis_conf_t c = conf_for(addr);
    md_redis_t *rs[2] = {client(&c), client(&c)};
    bc_sub_t sa = {.r = rs[0]}, sb = {.r = rs[1]};
    ok(md_redis_subscribe(rs[0], "md:t:bc", bc_msg, NULL, &sa) == MD_OK &&
           md_redis_subscribe(rs[1], "md:t:bc", bc_msg, NULL, &sb) == MD_OK,
       "two subscribers");
    ok(run_until(bc_subscribed, rs, 5), "both subscribed and connected");

    bc_res_t x = {0};
    double t0 = ev_time();
    in_call = true;
    int rc = md_broadcast(rs[0], loop, "md:t:bc", "hello", 5, true, bc_done, &x);
    in_call = false;
    ok(rc == MD_OK, "md_broadcast sent");
    ok(run_until(bc_called, &x, 3) && x.calls == 1 && x.err == NULL, "called back once, no error");
    ok(sa.msgs == 1 && sb.msgs == 1, "both subscribers had the message when it was");
    ok(sa.bodylen == 5 && memcmp(sa.body, "hello", 5) == 0 && sa.len == 5 + sizeof(tok) - 1,
       "... with a confirmation request after the body");
    ok(x.t1 - t0 < MD_BROADCAST_WAIT, "confirmed by both in %.3f s, before the wait ran out",
       x.t1 - t0);

    /* One subscriber never counts itself: the wait runs out. */
    sb.silent = true;
    memset(&x, 0, sizeof(x));
    t0 = ev_time();
    ok(md_broadcast(rs[0], loop, "md:t:bc", "again", 5, true, bc_done, &x) == MD_OK &&
           run_until(bc_called, &x, 3) && x.err == NULL,
       "with a silent subscriber still called back");
    ok(x.t1 - t0 >= MD_BROADCAST_WAIT - 0.01 && x.t1 - t0 < MD_BROADCAST_WAIT + 1.0,
       "... once the wait ran out (%.3f s)", x.t1 - t0);

    /* Not waiting: no confirmation request, called back on the PUBLISH's reply. */
    memset(&x, 0, sizeof(x));
    t0 = ev_time();
    ok(md_broadcast(rs[0], loop, "md:t:bc", "plain", 5, false, bc_done, &x) == MD_OK &&
           run_until(bc_called, &x, 3) && x.err == NULL && x.t1 - t0 < 0.4,
       "without waiting: called back at once");
    ok(run_until(reached, &(waitn_t){&sa.msgs, 3}, 2) && sa.len == 5 && sa.bodylen == 5,
       "... and the message carries no confirmation request");

    /* md_broadcast_destroy calls back what still waits. */
    memset(&x, 0, sizeof(x));
    ok(md_broadcast(rs[0], loop, "md:t:bc", "stop", 4, true, bc_done, &x) == MD_OK,
       "a wait started");
    run_for(0.05);
    is_int(x.calls, 0, "... still waiting for the silent one");
    md_broadcast_destroy();
    is_int(x.calls, 1, "md_broadcast_destroy called it back");

    md_redis_destroy(rs[0]);
    md_redis_destroy(rs[1]);
}

/* ---- AUTH and SELECT ------------------------------------------------------------ */

static bool
has_error(void *arg)
{
    md_redis_stats_t st;
    md_redis_stats(arg, &st);
    return st.last_error[0] != '\0';
}

static void
test_auth(md_redis_t *a)
{
    static const char pw[] = "s3cret-Pw-for-test";
    static const char wrong[] = "wr0ng-Pw-for-test";
    res_t x = {0};
    ok(CALL(a, &x, "CONFIG", "SET", "requirepass", pw), "requirepass set");

    md_redis_conf_t c = conf_for(addr);
    c.password = (char *)wrong;
    md_redis_t *b = client(&c);
    ok(run_until(has_error, b, 3), "a wrong password is reported");
    md_redis_stats_t st;
    md_redis_stats(b, &st);
    ok(strstr(st.last_error, "AUTH failed") && strstr(st.last_error, "WRONGPASS"), "clearly: %s",
       st.last_error);
    ok(!strstr(st.last_error, wrong), "without the password");
    ok(!md_redis_ready(b) && send_cmd(b, &x, 1, (const char *[]){"PING"}, NULL) == MD_AGAIN,
       "not ready; commands refused with MD_AGAIN");
    md_redis_destroy(b);

    c.password = (char *)pw;
    c.db = 3;
    md_redis_t *g = client(&c);
    ok(run_until(is_ready, g, 3), "the right password connects");
    ok(CALL(g, &x, "SET", "md:t:db", "three"), "SET in db 3");
    ok(CALL(a, &x, "GET", "md:t:db") && x.type == REDIS_REPLY_NIL, "not visible in db 0 (SELECT)");
    ok(CALL(g, &x, "CONFIG", "SET", "requirepass", ""), "requirepass cleared");
    md_redis_destroy(g);
    res_reset(&x);
}

/* ---- failure modes --------------------------------------------------------------- */

static void
test_down(void)
{
    md_redis_conf_t c = conf_for("127.0.0.1:1"); /* nothing listens on port 1 */
    char err[128];
    md_redis_t *r = md_redis_create(loop, &c, err, sizeof(err));
    res_t x = {0};
    ok(send_cmd(r, &x, 1, (const char *[]){"PING"}, NULL) == MD_AGAIN, "MD_AGAIN before start");
    md_redis_start(r);
    double t0 = ev_time();
    int rc = send_cmd(r, &x, 1, (const char *[]){"PING"}, NULL);
    ok(rc == MD_AGAIN && ev_time() - t0 < 0.05, "MD_AGAIN at once while connecting");
    ok(run_until(has_error, r, 2), "connect failure recorded");
    md_redis_stats_t st;
    md_redis_stats(r, &st);
    ok(strstr(st.last_error, "refused") != NULL, "last_error: %s", st.last_error);
    run_for(0.3); /* a few reconnect attempts */
    ok(send_cmd(r, &x, 1, (const char *[]){"PING"}, NULL) == MD_AGAIN && !x.done,
       "still MD_AGAIN, callback never runs");
    md_redis_stats(r, &st);
    ok(st.rejected == 3 && !st.connected, "stats: 3 rejected, not connected");
    md_redis_destroy(r);
}

static void
test_destroy_pending(void)
{
    md_redis_conf_t c = conf_for(addr);
    md_redis_t *r = client(&c);
    res_t a = {0}, b = {0}, x = {0};
    subst_t s = {0};
    md_redis_subscribe(r, "md:t:destroy", sub_msg, NULL, &s);
    run_until(is_ready, r, 5);
    run_until(is_subscribed, r, 5);
    int id = md_redis_script(r, "return 1");
    send_cmd(r, &a, 3, (const char *[]){"BLPOP", "md:t:never2", "5"}, NULL);
    res_reset(&b);
    md_redis_eval(r, id, 0, 0, NULL, NULL, res_cb, &b);
    md_redis_destroy(r);
    ok(a.calls == 1 && b.calls == 1 && a.err && strcmp(a.err, "unavailable") == 0 && b.err &&
           strcmp(b.err, "unavailable") == 0,
       "destroy runs each pending callback once with \"unavailable\"");
    res_reset(&a);
    res_reset(&b);
    res_reset(&x);
}

/* A Redis on a unix socket (t/41-redis.t starts one when it can). */
static void
test_unix(const char *uaddr)
{
    md_redis_conf_t c = conf_for(uaddr);
    md_redis_t *r = client(&c);
    subst_t s = {0};
    res_t x = {0};
    md_redis_subscribe(r, "md:t:unix", sub_msg, NULL, &s);
    ok(run_until(is_ready, r, 5) && run_until(is_subscribed, r, 5),
       "unix socket: connected and subscribed");
    ok(CALL(r, &x, "SET", "md:t:u", "v") && CALL(r, &x, "GET", "md:t:u") && x.str &&
           strcmp(x.str, "v") == 0,
       "unix socket: SET and GET");
    ok(CALL(r, &x, "PUBLISH", "md:t:unix", "hi") && run_until(reached, &(waitn_t){&s.msgs, 1}, 2),
       "unix socket: pub/sub");
    md_redis_destroy(r);
    res_reset(&x);
}

/* ---- the outage scenario ---------------------------------------------------------- */

typedef struct probe_s {
    double t0;
    bool window; /* issued after "down" */
} probe_t;

static struct {
    md_redis_t *r;
    int script;
    ev_timer ticker;
    bool window;
    int issued, refused, failed, succeeded, pending, evals;
    double max_latency;
    char line[256];
    size_t linelen;
    char cmd[256];
} og;

static void
probe_cb(void *ctx, redisReply *rep, const char *err)
{
    probe_t *p = ctx;
    if (p->window) {
        og.pending--;
        double lat = ev_time() - p->t0;
        if (rep && rep->type != REDIS_REPLY_ERROR)
            og.succeeded++;
        else
            og.failed++;
        if ((err || (rep && rep->type == REDIS_REPLY_ERROR)) && lat > og.max_latency)
            og.max_latency = lat;
    }
    free(p);
}

/* Issues one command (INCR, or the script every other time) every 20 ms. */
static void
ticker_cb(struct ev_loop *l, ev_timer *w, int revents)
{
    md_unused(l);
    md_unused(w);
    md_unused(revents);
    probe_t *p = md_xmalloc(sizeof(*p));
    p->t0 = ev_time();
    p->window = og.window;
    const char *argv[] = {"md:outage:n"};
    int rc;
    if (og.evals++ % 2)
        rc = md_redis_eval(og.r, og.script, 1, 1, argv, NULL, probe_cb, p);
    else
        rc = md_redis_cmd(og.r, probe_cb, p, 2, (const char *[]){"INCR", "md:outage:n"}, NULL);
    if (p->window)
        og.issued++;
    if (rc != MD_OK) {
        if (p->window)
            og.refused++;
        free(p);
    } else if (p->window) {
        og.pending++;
    }
}

/* Reads a command line from stdin (non-blocking) into og.cmd. */
static bool
got_cmd(void *arg)
{
    md_unused(arg);
    if (og.cmd[0])
        return true;
    char c;
    ssize_t n;
    while ((n = read(0, &c, 1)) == 1) {
        if (c == '\n') {
            og.line[og.linelen] = '\0';
            snprintf(og.cmd, sizeof(og.cmd), "%s", og.line);
            og.linelen = 0;
            return true;
        }
        if (og.linelen < sizeof(og.line) - 1)
            og.line[og.linelen++] = c;
    }
    if (n == 0) { /* the driver went away: stop rather than linger */
        snprintf(og.cmd, sizeof(og.cmd), "quit");
        return true;
    }
    return false;
}

static bool
no_pending(void *arg)
{
    md_unused(arg);
    return og.pending == 0;
}

static bool
first_success(void *arg)
{
    res_t *x = arg;
    if (x->done && x->err == NULL && x->type == REDIS_REPLY_INTEGER)
        return true;
    if (!x->done && x->t0 > 0)
        return false; /* one in flight */
    if (send_cmd(og.r, x, 2, (const char *[]){"INCR", "md:outage:probe"}, NULL) != MD_OK)
        x->t0 = 0;
    return false;
}

/* Redis is healthy: commands, the script and the subscription all work. */
static void
outage_check_healthy(subst_t *s, const char *when)
{
    res_t x = {0};
    ok(run_until(is_ready, og.r, 10), "%s: connected", when);
    ok(CALL(og.r, &x, "INCR", "md:outage:n") && x.type == REDIS_REPLY_INTEGER, "%s: INCR works",
       when);
    const char *argv[] = {"md:outage:n"};
    ok(eval_wait(og.r, &x, og.script, 1, 1, argv, NULL) && x.type == REDIS_REPLY_INTEGER,
       "%s: the script runs", when);
    ok(run_until(is_subscribed, og.r, 10), "%s: subscribed", when);
    int before = s->msgs;
    ok(CALL(og.r, &x, "PUBLISH", "md:outage", when) && x.integer == 1, "%s: PUBLISH", when);
    ok(run_until(reached, &(waitn_t){&s->msgs, before + 1}, 2) && s->lastlen == strlen(when) &&
           memcmp(s->last, when, s->lastlen) == 0,
       "%s: the subscription delivers", when);
    res_reset(&x);
}

static int
outage(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
    md_redis_conf_t c = conf_for(addr);
    c.reconnect_max = 1.0;
    char err[256];
    og.r = md_redis_create(loop, &c, err, sizeof(err));
    og.script = md_redis_script(og.r, "return redis.call('INCR', KEYS[1])");
    subst_t s = {0};
    md_redis_subscribe(og.r, "md:outage", sub_msg, sub_resub, &s);
    md_redis_start(og.r);
    outage_check_healthy(&s, "start");
    ev_timer_init(&og.ticker, ticker_cb, 0.02, 0.02);
    ev_timer_start(loop, &og.ticker);
    int phase = 0;
    for (;;) {
        printf("@ready\n");
        og.cmd[0] = '\0';
        run_until(got_cmd, NULL, 120);
        if (strcmp(og.cmd, "down") != 0)
            break;
        phase++;
        int resubs = s.resubs;
        og.window = true;
        og.issued = og.refused = og.failed = og.succeeded = og.pending = 0;
        og.max_latency = 0;
        run_for(2.5);
        og.window = false;
        ok(run_until(no_pending, NULL, 3), "phase %d: every command issued while down completed",
           phase);
        ok(og.issued >= 50, "phase %d: kept issuing while down (%d commands)", phase, og.issued);
        is_int(og.succeeded, 0, "phase %d: none succeeded", phase);
        ok(og.refused + og.failed == og.issued,
           "phase %d: all failed: %d refused at once (MD_AGAIN), %d by callback", phase, og.refused,
           og.failed);
        ok(og.max_latency < 1.5, "phase %d: slowest failure took %.3fs (command_timeout 1s)", phase,
           og.max_latency);
        printf("@checked\n");
        og.cmd[0] = '\0';
        run_until(got_cmd, NULL, 120);
        double t0 = ev_time();
        res_t x = {0};
        ok(run_until(first_success, &x, 10),
           "phase %d: a command succeeds %.3fs after Redis is back", phase, ev_time() - t0);
        res_reset(&x);
        char when[32];
        snprintf(when, sizeof(when), "after phase %d", phase);
        outage_check_healthy(&s, when);
        ok(s.resubs > resubs, "phase %d: on_resubscribe ran (%d times so far)", phase, s.resubs);
        md_redis_stats_t st;
        md_redis_stats(og.r, &st);
        ok(st.reconnects >= (uint64_t)phase, "phase %d: %llu reconnects so far", phase,
           (unsigned long long)st.reconnects);
        printf("# last error: %s\n", st.last_error);
    }
    ev_timer_stop(loop, &og.ticker);
    md_redis_destroy(og.r);
    return done_testing();
}

/* ---- main --------------------------------------------------------------------------- */

int
main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    loop = ev_default_loop(0);
    ev_timer tick;
    ev_timer_init(&tick, tick_cb, 0.01, 0.01);
    ev_timer_start(loop, &tick);
    addr = getenv("MD_TEST_REDIS_ADDR");
    if (addr && !*addr)
        addr = NULL;

    /* Logs go to a file, so the test can check that no secret was written. */
    char logpath[300];
    snprintf(tmpdir, sizeof(tmpdir), "%s/md-redis-t-XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (mkdtemp(tmpdir) == NULL) {
        printf("Bail out! mkdtemp\n");
        return 1;
    }
    snprintf(logpath, sizeof(logpath), "%s/error.log", tmpdir);
    md_log_open(logpath, MD_LOG_INFO);

    int rc;
    if (argc > 1 && strcmp(argv[1], "outage") == 0) {
        if (addr == NULL) {
            printf("Bail out! outage needs MD_TEST_REDIS_ADDR\n");
            return 1;
        }
        rc = outage();
    } else {
        test_conf();
        if (addr == NULL) {
            printf("# SKIP the rest: MD_TEST_REDIS_ADDR not set (t/41-redis.t sets it)\n");
        } else {
            md_redis_conf_t c = conf_for(addr);
            md_redis_t *r = client(&c);
            test_basic(r);
            test_pipeline(r);
            test_max_pending();
            test_scripts(r);
            test_timeout();
            test_pubsub();
            test_broadcast();
            test_auth(r);
            test_down();
            test_destroy_pending();
            const char *uaddr = getenv("MD_TEST_REDIS_UNIX");
            if (uaddr && *uaddr)
                test_unix(uaddr);
            else
                printf("# no MD_TEST_REDIS_UNIX: unix socket not tested\n");
            md_redis_destroy(r);

            char *log = NULL;
            size_t loglen = 0;
            FILE *f = fopen(logpath, "r");
            if (f) {
                log = md_xmalloc(1 << 20);
                loglen = fread(log, 1, (1 << 20) - 1, f);
                log[loglen] = '\0';
                fclose(f);
            }
            ok(log && strstr(log, "redis connected") && strstr(log, "connection lost") &&
                   strstr(log, "reconnecting in"),
               "state changes are logged");
            ok(log && strstr(log, "AUTH failed: WRONGPASS"), "the AUTH failure is logged");
            ok(log && !strstr(log, "s3cret-Pw") && !strstr(log, "wr0ng-Pw"),
               "no password in the log");
            free(log);
        }
        rc = done_testing();
    }
    md_log_close();
    if (getenv("MD_TEST_KEEP")) {
        printf("# kept %s\n", tmpdir);
        return rc;
    }
    char path[400];
    snprintf(path, sizeof(path), "%s/main.conf", tmpdir);
    unlink(path);
    unlink(logpath);
    rmdir(tmpdir);
    ev_timer_stop(loop, &tick);
    ev_loop_destroy(loop);
    return rc;
}
