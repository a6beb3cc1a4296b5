/*
 * Routing, circuit breakers and rate limits of the ESP accounts (md_route.h).
 *
 * Per worker: each account's breaker, effective rate and counters live in this
 * worker only (GET /v1/admin/esps says so: "scope": "worker"); a breaker that
 * opens in one worker does not open the others', which is fine: each learns
 * from its own sends within a few failures.
 *
 * Rate: a token bucket per account in Redis (md_route_bucket_lua), refilled at
 * the account's rate and holding at most md_bucket_burst(rate) tokens. A
 * worker takes md_bucket_batch(rate) tokens at a time (one script call), keeps
 * them locally and spends them one per send; sends without a token wait in the
 * account's queue (not a failure) while one refill is in flight, or until the
 * time the script says the next token comes. When Redis cannot answer, the
 * worker paces itself with a local bucket at rate / worker_processes, so an
 * outage neither stops sending nor lets it run unbounded.
 *
 * SES sends no Retry-After when it throttles: a throttled SES answer halves
 * that account's effective rate in this worker (at most once a second), and
 * each success raises it again by rate/20 per second (AIMD), never above rate.
 * The effective rate is what this worker asks the shared bucket to refill at.
 */
#include "md_route.h"
#include "md_app.h"
#include "md_esp.h"
#include "md_log.h"
#include "md_redis.h"

#include <ev.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <time.h>

/* Contexts of the blocks below: high bits, clear of the core's next free ones. */
#define MD_CONF_ROUTING   0x1000u
#define MD_CONF_ROUTE_DEF 0x2000u

#define MD_ROUTE_ERRORS  8  /* recent errors kept per account */
#define MD_ROUTE_LATENCY 64 /* recent latencies kept per account */

/* ---- configuration ----------------------------------------------------------------- */

static const md_route_def_t *
md_route_def_find(const md_route_conf_t *rc, const char *name)
{
    for (size_t i = 0; rc && name && i < rc->nroutes; i++) {
        if (strcmp(rc->routes[i].name, name) == 0)
            return &rc->routes[i];
    }
    return NULL;
}

/* esp NAME [weight N]; inside route NAME { }. base is the md_route_def_t. */
static int
md_route_conf_esp(md_conf_parser_t *cf, const md_conf_cmd_t *cmd, void *base)
{
    md_unused(cmd);
    md_route_def_t *def = base;
    size_t nargs = md_conf_nargs(cf) - 1; /* without the name */
    const char *name = md_conf_arg(cf, 1);
    if (nargs != 1 && nargs != 3)
        return md_conf_error(cf, "expected \"esp NAME\" or \"esp NAME weight N\"");
    if (def->n >= MD_ROUTE_MAX_ESP)
        return md_conf_error(cf, "route \"%s\" has more than %d accounts", def->name,
                             MD_ROUTE_MAX_ESP);
    for (size_t i = 0; i < def->n; i++) {
        if (strcmp(def->esp[i], name) == 0)
            return md_conf_error(cf, "esp \"%s\" appears twice in route \"%s\"", name, def->name);
    }
    unsigned weight = 1;
    if (nargs == 3) {
        char *end = NULL;
        long w = strtol(md_conf_arg(cf, 3), &end, 10);
        if (strcmp(md_conf_arg(cf, 2), "weight") != 0 || *end != '\0' || w < 1 || w > 1000000)
            return md_conf_error(cf, "invalid weight in \"esp %s\": \"weight N\" with N from 1",
                                 name);
        weight = (unsigned)w;
        def->weighted = 1;
    }
    def->esp[def->n] = md_xstrdup(name);
    def->weight[def->n] = weight;
    def->n++;
    return MD_OK;
}

static const md_conf_cmd_t md_route_def_cmds[] = {
    {"esp", MD_CONF_ROUTE_DEF, MD_CONF_1MORE | MD_CONF_MULTI, md_route_conf_esp, 0, NULL, NULL,
     NULL},
    {NULL, 0, 0, NULL, 0, NULL, NULL, NULL},
};
static const md_conf_block_t md_route_def_block = {"route", MD_CONF_ROUTE_DEF, md_route_def_cmds};

/* route NAME { }: base is the md_route_conf_t. The entry is counted before its
 * block is parsed, so the cleanup frees it whatever happens. */
static int
md_route_conf_route(md_conf_parser_t *cf, const md_conf_cmd_t *cmd, void *base)
{
    md_unused(cmd);
    md_route_conf_t *rc = base;
    const char *name = md_conf_arg(cf, 1);
    if (!md_esp_name_ok(name))
        return md_conf_error(cf, "invalid route name \"%s\" (1 to 64 of A-Z a-z 0-9 _ - .)", name);
    if (md_route_def_find(rc, name))
        return md_conf_error(cf, "duplicate route \"%s\"", name);
    rc->routes = md_xrealloc(rc->routes, sizeof(*rc->routes) * (rc->nroutes + 1));
    md_route_def_t *def = &rc->routes[rc->nroutes++];
    memset(def, 0, sizeof(*def));
    def->name = md_xstrdup(name);
    if (md_conf_parse_block(cf, &md_route_def_block, def) != MD_OK)
        return MD_ERROR;
    if (def->n == 0)
        return md_conf_error(cf, "route \"%s\" names no esp", name);
    return MD_OK;
}

/* tenant_route TENANT_ID ROUTE (may repeat; a tenant once). */
static int
md_route_conf_tenant(md_conf_parser_t *cf, const md_conf_cmd_t *cmd, void *base)
{
    md_unused(cmd);
    md_route_conf_t *rc = base;
    const char *t = md_conf_arg(cf, 1);
    size_t n = strlen(t);
    bool ok = n == 36;
    for (size_t i = 0; ok && i < n; i++) {
        char c = t[i];
        ok = (i == 8 || i == 13 || i == 18 || i == 23)
                 ? c == '-'
                 : ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'));
    }
    if (!ok)
        return md_conf_error(cf, "invalid tenant id \"%s\" in \"tenant_route\" (a UUID)", t);
    char low[37];
    for (size_t i = 0; i <= n; i++)
        low[i] = (char)((t[i] >= 'A' && t[i] <= 'F') ? t[i] - 'A' + 'a' : t[i]);
    for (size_t i = 0; i < rc->ntenants; i++) {
        if (strcmp(rc->tenants[i].tenant, low) == 0)
            return md_conf_error(cf, "duplicate tenant_route for \"%s\"", low);
    }
    rc->tenants = md_xrealloc(rc->tenants, sizeof(*rc->tenants) * (rc->ntenants + 1));
    rc->tenants[rc->ntenants].tenant = md_xstrdup(low);
    rc->tenants[rc->ntenants].route = md_xstrdup(md_conf_arg(cf, 2));
    rc->ntenants++;
    return MD_OK;
}

static int
md_route_conf_ratio(md_conf_parser_t *cf, const md_conf_cmd_t *cmd, void *base)
{
    const char *v = md_conf_arg(cf, 1);
    char *end = NULL;
    double d = strtod(v, &end);
    if (v[0] == '\0' || *end != '\0' || !isfinite(d) || d <= 0 || d > 1)
        return md_conf_error(cf, "invalid value \"%s\" in \"%s\", expected a ratio in (0, 1]", v,
                             cmd->name);
    *(double *)(void *)((char *)base + cmd->offset) = d;
    return MD_OK;
}

static const md_conf_bounds_t md_route_failures_bounds = {1, 1000};
static const md_conf_bounds_t md_route_min_requests_bounds = {1, 1000000};
static const md_conf_bounds_t md_route_time_bounds = {0.01, 86400};

static const md_conf_cmd_t md_route_conf_cmds[] = {
    {"route", MD_CONF_ROUTING, MD_CONF_TAKE1 | MD_CONF_BLOCK | MD_CONF_MULTI, md_route_conf_route,
     0, NULL, NULL, NULL},
    {"default_route", MD_CONF_ROUTING, MD_CONF_TAKE1, md_conf_set_str,
     offsetof(md_route_conf_t, default_route), NULL, NULL, NULL},
    {"tenant_route", MD_CONF_ROUTING, MD_CONF_TAKE2 | MD_CONF_MULTI, md_route_conf_tenant, 0, NULL,
     NULL, NULL},
    {"breaker_failures", MD_CONF_ROUTING, MD_CONF_TAKE1, md_conf_set_number,
     offsetof(md_route_conf_t, breaker_failures), &md_route_failures_bounds, "5", NULL},
    {"breaker_error_rate", MD_CONF_ROUTING, MD_CONF_TAKE1, md_route_conf_ratio,
     offsetof(md_route_conf_t, breaker_error_rate), NULL, "0.5", NULL},
    {"breaker_window", MD_CONF_ROUTING, MD_CONF_TAKE1, md_conf_set_time,
     offsetof(md_route_conf_t, breaker_window), &md_route_time_bounds, "30s", NULL},
    {"breaker_min_requests", MD_CONF_ROUTING, MD_CONF_TAKE1, md_conf_set_number,
     offsetof(md_route_conf_t, breaker_min_requests), &md_route_min_requests_bounds, "20", NULL},
    {"breaker_cooldown", MD_CONF_ROUTING, MD_CONF_TAKE1, md_conf_set_time,
     offsetof(md_route_conf_t, breaker_cooldown), &md_route_time_bounds, "10s", NULL},
    {NULL, 0, 0, NULL, 0, NULL, NULL, NULL},
};

const md_conf_block_t md_route_conf_block = {"routing", MD_CONF_ROUTING, md_route_conf_cmds};

static void
md_route_conf_release(md_route_conf_t *rc)
{
    if (rc == NULL)
        return;
    for (size_t i = 0; i < rc->nroutes; i++) {
        for (size_t k = 0; k < rc->routes[i].n; k++)
            free(rc->routes[i].esp[k]);
        free(rc->routes[i].name);
    }
    free(rc->routes);
    for (size_t i = 0; i < rc->ntenants; i++) {
        free(rc->tenants[i].tenant);
        free(rc->tenants[i].route);
    }
    free(rc->tenants);
    free(rc->default_route);
    free(rc);
}

/*
 * routing { }: parses into a new md_route_conf_t at md_conf_t.routing, then
 * checks the names: every esp a route lists is an esp block written before
 * (the esp list is complete only at the end of the file, and the parser has no
 * hook there for this module), default_route and tenant routes name a route.
 */
int
md_route_conf_set(md_conf_parser_t *cf, const md_conf_cmd_t *cmd, void *base)
{
    md_unused(cmd);
    md_conf_t *conf = base;
    if (conf->routing)
        return md_conf_error(cf, "\"routing\" directive is duplicate");
    md_route_conf_t *rc = md_xcalloc(1, sizeof(*rc));
    conf->routing = rc;
    if (md_conf_parse_block(cf, &md_route_conf_block, rc) != MD_OK)
        return MD_ERROR;
    for (size_t i = 0; i < rc->nroutes; i++) {
        for (size_t k = 0; k < rc->routes[i].n; k++) {
            if (md_esp_conf_find(conf, rc->routes[i].esp[k]) == NULL)
                return md_conf_error(cf,
                                     "route \"%s\" names esp \"%s\", which is not configured "
                                     "(esp blocks must come before the routing block)",
                                     rc->routes[i].name, rc->routes[i].esp[k]);
        }
    }
    if (rc->default_route && md_route_def_find(rc, rc->default_route) == NULL)
        return md_conf_error(cf, "\"default_route\" names no route: \"%s\"", rc->default_route);
    for (size_t i = 0; i < rc->ntenants; i++) {
        if (md_route_def_find(rc, rc->tenants[i].route) == NULL)
            return md_conf_error(cf, "\"tenant_route\" names no route: \"%s\"",
                                 rc->tenants[i].route);
    }
    return MD_OK;
}

void
md_route_conf_free(const md_conf_cmd_t *cmd, void *base)
{
    md_unused(cmd);
    md_conf_t *conf = base;
    md_route_conf_release(conf->routing);
    conf->routing = NULL;
}

/* ---- circuit breaker ---------------------------------------------------------------- */

void
md_breaker_init(md_breaker_t *b, const md_route_conf_t *rc)
{
    memset(b, 0, sizeof(*b));
    b->failures = rc ? rc->breaker_failures : 5;
    b->error_rate = rc ? rc->breaker_error_rate : 0.5;
    b->window = rc ? rc->breaker_window : 30.0;
    b->min_requests = rc ? rc->breaker_min_requests : 20;
    b->cooldown = rc ? rc->breaker_cooldown : 10.0;
    if (b->window <= 0)
        b->window = 30.0;
    b->bucket_span = b->window / MD_BREAKER_BUCKETS;
    for (int i = 0; i < MD_BREAKER_BUCKETS; i++)
        b->bucket_at[i] = -1;
}

const char *
md_breaker_state_name(int state)
{
    switch (state) {
    case MD_BREAKER_OPEN:
        return "open";
    case MD_BREAKER_HALF_OPEN:
        return "half-open";
    default:
        return "closed";
    }
}

static void
md_breaker_open(md_breaker_t *b, double now)
{
    b->state = MD_BREAKER_OPEN;
    b->opened_at = now;
    b->probing = 0;
    for (int i = 0; i < MD_BREAKER_BUCKETS; i++) {
        b->bucket_at[i] = -1;
        b->ok[i] = b->bad[i] = 0;
    }
}

bool
md_breaker_allow(md_breaker_t *b, double now)
{
    if (b->state == MD_BREAKER_CLOSED)
        return true;
    if (b->state == MD_BREAKER_OPEN) {
        if (now - b->opened_at < b->cooldown)
            return false;
        b->state = MD_BREAKER_HALF_OPEN;
        b->probing = 0;
    }
    if (b->probing)
        return false;
    b->probing = 1;
    return true;
}

double
md_breaker_wait(const md_breaker_t *b, double now)
{
    if (b->state != MD_BREAKER_OPEN)
        return 0;
    double w = b->opened_at + b->cooldown - now;
    return w > 0 ? w : 0;
}

void
md_breaker_release(md_breaker_t *b)
{
    if (b->state == MD_BREAKER_HALF_OPEN)
        b->probing = 0;
}

void
md_breaker_result(md_breaker_t *b, bool ok, double now)
{
    if (b->state == MD_BREAKER_HALF_OPEN) {
        /* The probe's answer decides (a send admitted before the breaker
         * opened and answering now counts the same way). */
        if (ok) {
            b->state = MD_BREAKER_CLOSED;
            b->consecutive = 0;
            b->probing = 0;
        } else {
            md_breaker_open(b, now);
        }
        return;
    }
    if (b->state == MD_BREAKER_OPEN)
        return; /* a late answer of a send made while closed */
    long span = (long)floor(now / b->bucket_span);
    int k = (int)(((span % MD_BREAKER_BUCKETS) + MD_BREAKER_BUCKETS) % MD_BREAKER_BUCKETS);
    if (b->bucket_at[k] != span) {
        b->bucket_at[k] = span;
        b->ok[k] = b->bad[k] = 0;
    }
    if (ok) {
        b->ok[k]++;
        b->consecutive = 0;
        return;
    }
    b->bad[k]++;
    b->consecutive++;
    if (b->consecutive >= b->failures) {
        md_breaker_open(b, now);
        return;
    }
    unsigned tot = 0, bad = 0;
    for (int i = 0; i < MD_BREAKER_BUCKETS; i++) {
        if (b->bucket_at[i] > span - MD_BREAKER_BUCKETS) {
            tot += b->ok[i] + b->bad[i];
            bad += b->bad[i];
        }
    }
    if ((int)tot >= b->min_requests && (double)bad >= b->error_rate * (double)tot)
        md_breaker_open(b, now);
}

/* ---- token bucket ------------------------------------------------------------------- */

int
md_bucket_take(double *tokens, double *at, double now, double rate, double burst, int want,
               double *wait)
{
    double t = *tokens;
    if (now > *at)
        t += (now - *at) * rate;
    if (t > burst)
        t = burst;
    int got = 0;
    if (want > 0 && t >= 1.0)
        got = (int)md_min((double)want, floor(t));
    t -= got;
    *tokens = t;
    if (now > *at)
        *at = now;
    *wait = got > 0 || rate <= 0 ? 0 : (1.0 - t) / rate;
    return got;
}

double
md_bucket_burst(double rate)
{
    double b = rate / 20.0;
    double batch = md_bucket_batch(rate);
    return b > batch ? b : batch;
}

int
md_bucket_batch(double rate)
{
    int n = (int)(rate / 20.0);
    return n < 1 ? 1 : n > 10 ? 10 : n;
}

/* Keys the bucket by account name; the same arithmetic as md_bucket_take,
 * with Redis' clock (one clock for every worker and host). ARGV: rate, burst,
 * want. Returns {taken, wait in microseconds}. */
static const char md_route_bucket_lua[] =
    "local rate = tonumber(ARGV[1]); local burst = tonumber(ARGV[2]);"
    " local want = tonumber(ARGV[3])\n"
    "local t = redis.call('TIME'); local now = tonumber(t[1]) + tonumber(t[2]) / 1e6\n"
    "local v = redis.call('HMGET', KEYS[1], 'tokens', 'at')\n"
    "local tokens = tonumber(v[1]); local at = tonumber(v[2])\n"
    "if tokens == nil or at == nil then tokens = burst; at = now end\n"
    "if now > at then tokens = tokens + (now - at) * rate; at = now end\n"
    "if tokens > burst then tokens = burst end\n"
    "local got = 0\n"
    "if want > 0 and tokens >= 1 then got = math.min(want, math.floor(tokens)) end\n"
    "tokens = tokens - got\n"
    "redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(at))\n"
    "redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 60000)\n"
    "local wait = 0\n"
    "if got == 0 then wait = math.ceil((1 - tokens) / rate * 1e6) end\n"
    "return {got, wait}\n";

/* ---- weighted order and AIMD -------------------------------------------------------- */

void
md_route_order(const md_route_def_t *def, double (*rnd)(void *), void *rctx, size_t *order)
{
    size_t n = def->n;
    for (size_t i = 0; i < n; i++)
        order[i] = i;
    if (!def->weighted)
        return;
    /* order[k..n-1] are the ones not drawn yet */
    for (size_t k = 0; k + 1 < n; k++) {
        double total = 0;
        for (size_t i = k; i < n; i++)
            total += def->weight[order[i]];
        double x = rnd(rctx) * total;
        size_t pick = n - 1;
        for (size_t i = k; i < n; i++) {
            x -= def->weight[order[i]];
            if (x < 0) {
                pick = i;
                break;
            }
        }
        size_t tmp = order[k];
        order[k] = order[pick];
        order[pick] = tmp;
    }
}

double
md_aimd_throttle(double eff, double max, double *last, double now)
{
    if (now - *last < 1.0 && eff < max)
        return eff; /* one decrease per second: answers in flight throttle together */
    *last = now;
    double floor_ = max / 100.0 < 1.0 ? 1.0 : max / 100.0;
    eff /= 2.0;
    return eff < floor_ ? floor_ : eff;
}

double
md_aimd_success(double eff, double max, double *last, double now)
{
    if (eff >= max)
        return max;
    double dt = now - *last;
    if (dt <= 0)
        return eff;
    *last = now;
    eff += max / 20.0 * dt;
    return eff > max ? max : eff;
}

/* ---- this worker's accounts ---------------------------------------------------------- */

typedef struct md_route_acct_s {
    md_esp_t *esp;
    md_breaker_t br;
    double rate; /* configured (0: unlimited) */
    double eff;  /* effective: AIMD for SES, else rate */
    double aimd_last;
    int adaptive;
    char key[96]; /* Redis key of the bucket */
    int tokens;   /* taken from Redis, not spent yet */
    int refilling;
    int redis_down; /* the last refill failed: the next round is local */
    md_list_t waiters;
    ev_timer refill;
    double local_tokens, local_at; /* fallback bucket while Redis is away */
    /* counters of this worker */
    int in_flight;
    uint64_t sent, failed, rejected, throttled;
    struct {
        double at;
        char code[64];
    } errors[MD_ROUTE_ERRORS];
    unsigned nerrors;
    double latency[MD_ROUTE_LATENCY];
    unsigned nlatency;
} md_route_acct_t;

typedef struct md_route_state_s {
    md_app_t *app;
    const md_route_conf_t *rc;
    md_route_acct_t *accts;
    size_t n;
    int script;
} md_route_state_t;

static md_route_state_t *md_route;

static double
md_route_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double
md_route_wall(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static md_route_acct_t *
md_route_acct(md_esp_t *esp)
{
    return esp ? esp->route : NULL;
}

static void md_route_refill_cb(struct ev_loop *loop, ev_timer *t, int revents);

int
md_route_init(md_app_t *app)
{
    md_route_destroy();
    const md_conf_t *conf = app->conf;
    md_route_state_t *s = md_xcalloc(1, sizeof(*s));
    s->app = app;
    s->rc = conf->routing;
    s->script = -1;
    if (app->redis)
        s->script = md_redis_script(app->redis, md_route_bucket_lua);
    s->accts = md_xcalloc(conf->nesp ? conf->nesp : 1, sizeof(*s->accts));
    for (size_t i = 0; i < conf->nesp; i++) {
        md_esp_t *esp = md_esp_get(conf->esp[i].name);
        if (esp == NULL)
            continue;
        md_route_acct_t *a = &s->accts[s->n++];
        a->esp = esp;
        md_breaker_init(&a->br, conf->routing);
        a->rate = esp->conf->rate > 0 ? esp->conf->rate : 0;
        a->eff = a->rate;
        a->adaptive = esp->conf->driver == MD_ESP_DRIVER_SES;
        snprintf(a->key, sizeof(a->key), "mailerd:rate:{%s}", esp->conf->name);
        md_list_init(&a->waiters);
        ev_init(&a->refill, md_route_refill_cb);
        a->refill.data = a;
        a->local_at = md_route_now();
        esp->route = a;
    }
    md_route = s;
    return MD_OK;
}

void
md_route_destroy(void)
{
    md_route_state_t *s = md_route;
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->n; i++) {
        md_route_acct_t *a = &s->accts[i];
        ev_timer_stop(s->app->loop, &a->refill);
        while (!md_list_empty(&a->waiters)) {
            md_route_waiter_t *w = md_list_data(a->waiters.next, md_route_waiter_t, link);
            md_list_remove(&w->link);
            w->queued = 0;
        }
        a->esp->route = NULL;
    }
    free(s->accts);
    free(s);
    md_route = NULL;
}

static double
md_route_rnd(void *ctx)
{
    return md_esp_random(ctx);
}

size_t
md_route_pick(const char *tenant, const char *esp_name, md_esp_t **out, bool *unknown)
{
    *unknown = false;
    if (esp_name && esp_name[0]) {
        out[0] = md_esp_get(esp_name);
        *unknown = out[0] == NULL;
        return out[0] ? 1 : 0;
    }
    const md_route_conf_t *rc = md_route ? md_route->rc : NULL;
    const md_route_def_t *def = NULL;
    for (size_t i = 0; rc && tenant && i < rc->ntenants; i++) {
        if (strcasecmp(rc->tenants[i].tenant, tenant) == 0) {
            def = md_route_def_find(rc, rc->tenants[i].route);
            break;
        }
    }
    if (def == NULL && rc && rc->nroutes > 0)
        def = rc->default_route ? md_route_def_find(rc, rc->default_route) : &rc->routes[0];
    if (def == NULL) {
        out[0] = md_esp_default();
        return out[0] ? 1 : 0;
    }
    size_t order[MD_ROUTE_MAX_ESP];
    md_esp_t *first = md_esp_get(def->esp[0]);
    md_route_order(def, md_route_rnd, first ? (void *)first : (void *)md_esp_default(), order);
    size_t n = 0;
    for (size_t i = 0; i < def->n; i++) {
        md_esp_t *e = md_esp_get(def->esp[order[i]]);
        if (e)
            out[n++] = e;
    }
    return n;
}

bool
md_route_admit(md_esp_t *esp, double *wait)
{
    md_route_acct_t *a = md_route_acct(esp);
    *wait = 0;
    if (a == NULL)
        return true;
    double now = md_route_now();
    if (md_breaker_allow(&a->br, now))
        return true;
    *wait = md_breaker_wait(&a->br, now);
    return false;
}

/* Hands tokens to waiters, in order. Runs from the loop only (a refill reply or
 * the timer), never inside a client's destroy. */
static void
md_route_serve(md_route_acct_t *a)
{
    while (a->tokens > 0 && !md_list_empty(&a->waiters)) {
        md_route_waiter_t *w = md_list_data(a->waiters.next, md_route_waiter_t, link);
        md_list_remove(&w->link);
        w->queued = 0;
        a->tokens--;
        w->ready(w);
    }
}

static void md_route_refill(md_route_acct_t *a);

static void
md_route_refill_later(md_route_acct_t *a, double after)
{
    if (md_route == NULL)
        return;
    if (after < 0.001)
        after = 0.001;
    ev_timer_stop(md_route->app->loop, &a->refill);
    ev_timer_set(&a->refill, after, 0.);
    ev_timer_start(md_route->app->loop, &a->refill);
}

/* Redis is away: this worker's share of the rate from a local bucket. */
static void
md_route_local_tokens(md_route_acct_t *a)
{
    int workers =
        md_route->app->conf->worker_processes > 0 ? md_route->app->conf->worker_processes : 1;
    double rate = a->eff / workers, wait = 0;
    int got = md_bucket_take(&a->local_tokens, &a->local_at, md_route_now(), rate,
                             md_bucket_burst(rate), md_bucket_batch(rate), &wait);
    a->tokens += got;
    md_route_serve(a);
    if (!md_list_empty(&a->waiters))
        md_route_refill_later(a, got > 0 ? 0.001 : wait);
}

static void
md_route_refill_reply(void *ctx, redisReply *reply, const char *err)
{
    md_route_acct_t *a = ctx;
    a->refilling = 0;
    if (md_route == NULL)
        return;
    if (err || reply->type != REDIS_REPLY_ARRAY || reply->elements < 2 ||
        reply->element[0]->type != REDIS_REPLY_INTEGER ||
        reply->element[1]->type != REDIS_REPLY_INTEGER) {
        /* From the loop later: this may run inside the client's destroy. */
        a->redis_down = 1;
        md_route_refill_later(a, 0.001);
        return;
    }
    long long got = reply->element[0]->integer, wait_us = reply->element[1]->integer;
    a->tokens += (int)got;
    md_route_serve(a);
    if (!md_list_empty(&a->waiters)) {
        if (got > 0)
            md_route_refill(a);
        else
            md_route_refill_later(a, (double)wait_us / 1e6);
    }
}

static void
md_route_refill(md_route_acct_t *a)
{
    if (a->refilling || md_route == NULL)
        return;
    md_app_t *app = md_route->app;
    if (md_route->script < 0 || app->redis == NULL || !md_redis_ready(app->redis)) {
        md_route_local_tokens(a);
        return;
    }
    char rate[32], burst[32], want[16];
    snprintf(rate, sizeof(rate), "%.3f", a->eff);
    snprintf(burst, sizeof(burst), "%.3f", md_bucket_burst(a->rate));
    snprintf(want, sizeof(want), "%d", md_bucket_batch(a->eff));
    const char *argv[] = {a->key, rate, burst, want};
    if (md_redis_eval(app->redis, md_route->script, 1, 4, argv, NULL, md_route_refill_reply, a) ==
        MD_OK)
        a->refilling = 1;
    else
        md_route_local_tokens(a);
}

static void
md_route_refill_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    md_unused(loop);
    md_unused(revents);
    md_route_acct_t *a = t->data;
    if (a->redis_down) {
        /* one round from the local bucket, then Redis again */
        a->redis_down = 0;
        md_route_local_tokens(a);
        return;
    }
    if (!md_list_empty(&a->waiters))
        md_route_refill(a);
}

int
md_route_token(md_esp_t *esp, md_route_waiter_t *w)
{
    md_route_acct_t *a = md_route_acct(esp);
    if (a == NULL || a->rate <= 0)
        return MD_OK;
    if (a->tokens > 0 && md_list_empty(&a->waiters)) {
        a->tokens--;
        return MD_OK;
    }
    md_list_insert_tail(&a->waiters, &w->link);
    w->queued = 1;
    if (!a->refilling && !ev_is_active(&a->refill))
        md_route_refill(a);
    return MD_AGAIN;
}

void
md_route_token_cancel(md_esp_t *esp, md_route_waiter_t *w)
{
    md_unused(esp);
    if (w->queued) {
        md_list_remove(&w->link);
        w->queued = 0;
    }
}

void
md_route_started(md_esp_t *esp)
{
    md_route_acct_t *a = md_route_acct(esp);
    if (a)
        a->in_flight++;
}

static bool
md_route_is_throttle(const char *code)
{
    static const char *const marks[] = {"throttl",    "toomanyrequests", "429", "limitexceeded",
                                        "rate_limit", "ratelimit",       NULL};
    for (int i = 0; code && marks[i]; i++) {
        if (strcasestr(code, marks[i]))
            return true;
    }
    return false;
}

void
md_route_result(md_esp_t *esp, int outcome, const char *code, double latency)
{
    md_route_acct_t *a = md_route_acct(esp);
    if (a == NULL)
        return;
    double now = md_route_now();
    if (a->in_flight > 0)
        a->in_flight--;
    md_breaker_result(&a->br, outcome != MD_ESP_RETRYABLE, now);
    a->latency[a->nlatency++ % MD_ROUTE_LATENCY] = latency;
    if (outcome == MD_ESP_SENT) {
        a->sent++;
        if (a->adaptive && a->rate > 0)
            a->eff = md_aimd_success(a->eff, a->rate, &a->aimd_last, now);
        return;
    }
    if (outcome == MD_ESP_RETRYABLE)
        a->failed++;
    else
        a->rejected++;
    unsigned k = a->nerrors++ % MD_ROUTE_ERRORS;
    a->errors[k].at = md_route_wall();
    snprintf(a->errors[k].code, sizeof(a->errors[k].code), "%s", code ? code : "");
    if (outcome == MD_ESP_RETRYABLE && md_route_is_throttle(code)) {
        a->throttled++;
        if (a->adaptive && a->rate > 0) {
            double before = a->eff;
            a->eff = md_aimd_throttle(a->eff, a->rate, &a->aimd_last, now);
            if (a->eff < before)
                md_logf(MD_LOG_INFO, 0,
                        MD_LOG_FIELDS(MD_LS("esp", esp->conf->name), MD_LD("rate", a->eff)),
                        "esp throttled: effective rate lowered");
        }
    }
}

void
md_route_abandon(md_esp_t *esp)
{
    md_route_acct_t *a = md_route_acct(esp);
    if (a == NULL)
        return;
    if (a->in_flight > 0)
        a->in_flight--;
    md_breaker_release(&a->br);
}

static int
md_route_dcmp(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

json_t *
md_route_stats_json(void)
{
    json_t *arr = json_array();
    md_route_state_t *s = md_route;
    if (s == NULL)
        return arr;
    double now = md_route_now();
    for (size_t i = 0; i < s->n; i++) {
        md_route_acct_t *a = &s->accts[i];
        /* an open breaker past its cool-down is half-open for the next send */
        int state = a->br.state;
        if (state == MD_BREAKER_OPEN && md_breaker_wait(&a->br, now) <= 0)
            state = MD_BREAKER_HALF_OPEN;
        json_t *o = json_object();
        json_object_set_new(o, "name", json_string(a->esp->conf->name));
        json_object_set_new(o, "driver",
                            json_string(a->esp->driver ? a->esp->driver->name : "unknown"));
        json_object_set_new(o, "state", json_string(md_breaker_state_name(state)));
        json_object_set_new(o, "consecutive_failures", json_integer(a->br.consecutive));
        json_t *rate = json_object();
        json_object_set_new(rate, "configured", a->rate > 0 ? json_real(a->rate) : json_null());
        json_object_set_new(rate, "effective", a->rate > 0 ? json_real(a->eff) : json_null());
        json_object_set_new(o, "rate", rate);
        json_object_set_new(o, "in_flight", json_integer(a->in_flight));
        json_int_t waiting = 0;
        for (md_list_t *l = a->waiters.next; l != &a->waiters; l = l->next)
            waiting++;
        json_object_set_new(o, "waiting_for_token", json_integer(waiting));
        json_object_set_new(o, "sent", json_integer((json_int_t)a->sent));
        json_object_set_new(o, "failed", json_integer((json_int_t)a->failed));
        json_object_set_new(o, "rejected", json_integer((json_int_t)a->rejected));
        json_object_set_new(o, "throttled", json_integer((json_int_t)a->throttled));
        json_t *errs = json_array();
        unsigned ne = md_min(a->nerrors, (unsigned)MD_ROUTE_ERRORS);
        for (unsigned k = 0; k < ne; k++) {
            unsigned idx = (a->nerrors - 1 - k) % MD_ROUTE_ERRORS; /* newest first */
            char at[40];
            time_t sec = (time_t)a->errors[idx].at;
            struct tm tm;
            gmtime_r(&sec, &tm);
            size_t len = strftime(at, sizeof(at), "%Y-%m-%dT%H:%M:%S", &tm);
            snprintf(at + len, sizeof(at) - len, ".%03dZ",
                     (int)((a->errors[idx].at - (double)sec) * 1000.0));
            json_t *e = json_object();
            json_object_set_new(e, "code", json_string(a->errors[idx].code));
            json_object_set_new(e, "at", json_string(at));
            json_array_append_new(errs, e);
        }
        json_object_set_new(o, "recent_errors", errs);
        unsigned nl = md_min(a->nlatency, (unsigned)MD_ROUTE_LATENCY);
        json_t *lat = json_object();
        if (nl > 0) {
            double v[MD_ROUTE_LATENCY], sum = 0;
            for (unsigned k = 0; k < nl; k++) {
                v[k] = a->latency[k];
                sum += v[k];
            }
            qsort(v, nl, sizeof(v[0]), md_route_dcmp);
            json_object_set_new(lat, "mean_ms", json_real(sum / nl * 1000.0));
            json_object_set_new(lat, "p50_ms", json_real(v[nl / 2] * 1000.0));
            json_object_set_new(lat, "samples", json_integer(nl));
        } else {
            json_object_set_new(lat, "mean_ms", json_null());
            json_object_set_new(lat, "p50_ms", json_null());
            json_object_set_new(lat, "samples", json_integer(0));
        }
        json_object_set_new(o, "latency", lat);
        if (a->esp->endpoint) {
            md_http_endpoint_stats_t es;
            md_http_endpoint_stats(a->esp->endpoint, &es);
            json_t *c = json_object();
            json_object_set_new(c, "open", json_integer(es.connections));
            json_object_set_new(c, "idle", json_integer(es.idle));
            json_object_set_new(c, "established", json_integer((json_int_t)es.connects));
            json_object_set_new(c, "tls_resumed", json_integer((json_int_t)es.tls_resumed));
            json_object_set_new(o, "connections", c);
        }
        json_array_append_new(arr, o);
    }
    return arr;
}
