/*
 * Routing, circuit breakers and rate limits of the ESP accounts (md_route.h).
 *
 * Per worker: each account's breaker and effective rate live in this worker
 * only; a breaker that opens in one worker does not open the others', which is
 * fine: each learns from its own sends within a few failures. What they are,
 * with the account's counters, in-flight and waiting sends and latency, goes
 * to the metrics segment after every change (md_route_publish,
 * md_metrics_esp_*), so GET /v1/admin/esps and /metrics show server-wide
 * figures ("scope": "server") and each worker's breaker. Recent errors stay
 * in the worker that saw them.
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
 * Tenants: `tenant_rate` / `default_tenant_rate` give a tenant a bucket of
 * its own (key "mailerd:tenant_rate:{TENANT}", the same script), made in a
 * worker on the tenant's first send and swept when idle once there are many. A
 * message takes its tenant's token once (md_route_waiter_t.tenant_state), on
 * its first md_route_token, and keeps it across failover hops; the account's
 * token comes after. The dispatcher does not pass the tenant to md_route_token:
 * the waiter takes it from the latest md_route_pick (the same loop turn), unless
 * md_route_waiter_tenant set it.
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
#include "md_metrics.h"
#include "md_redis.h"

#include <errno.h>
#include <ev.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <time.h>

/* Contexts of the blocks below: high bits, clear of the core's next free ones. */
#define MD_CONF_ROUTING   0x1000u
#define MD_CONF_ROUTE_DEF 0x2000u

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

/* A tenant id in UUID text into low (lower case): true, or false when t is
 * no UUID. */
static bool
md_route_uuid_lower(const char *t, char low[37])
{
    size_t n = strlen(t);
    bool ok = n == 36;
    for (size_t i = 0; ok && i < n; i++) {
        char c = t[i];
        ok = (i == 8 || i == 13 || i == 18 || i == 23)
                 ? c == '-'
                 : ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'));
    }
    if (!ok)
        return false;
    for (size_t i = 0; i <= n; i++)
        low[i] = (char)((t[i] >= 'A' && t[i] <= 'F') ? t[i] - 'A' + 'a' : t[i]);
    return true;
}

/* tenant_route TENANT_ID ROUTE (may repeat; a tenant once). */
static int
md_route_conf_tenant(md_conf_parser_t *cf, const md_conf_cmd_t *cmd, void *base)
{
    md_unused(cmd);
    md_route_conf_t *rc = base;
    const char *t = md_conf_arg(cf, 1);
    char low[37];
    if (!md_route_uuid_lower(t, low))
        return md_conf_error(cf, "invalid tenant id \"%s\" in \"tenant_route\" (a UUID)", t);
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

#define MD_ROUTE_RATE_MAX 1000000

/* A rate: a whole number of messages/s, 0 (unlimited) to MD_ROUTE_RATE_MAX. */
static int
md_route_conf_rate_value(md_conf_parser_t *cf, const char *directive, const char *v, int *out)
{
    char *end = NULL;
    errno = 0;
    long r = strtol(v, &end, 10);
    if (v[0] == '\0' || *end != '\0' || errno != 0 || r < 0 || r > MD_ROUTE_RATE_MAX)
        return md_conf_error(cf,
                             "invalid value \"%s\" in \"%s\", expected messages per second "
                             "from 0 (unlimited) to %d",
                             v, directive, MD_ROUTE_RATE_MAX);
    *out = (int)r;
    return MD_OK;
}

/* tenant_rate TENANT_ID N (may repeat; a tenant once). */
static int
md_route_conf_tenant_rate(md_conf_parser_t *cf, const md_conf_cmd_t *cmd, void *base)
{
    md_route_conf_t *rc = base;
    const char *t = md_conf_arg(cf, 1);
    char low[37];
    if (!md_route_uuid_lower(t, low))
        return md_conf_error(cf, "invalid tenant id \"%s\" in \"tenant_rate\" (a UUID)", t);
    int rate = 0;
    if (md_route_conf_rate_value(cf, cmd->name, md_conf_arg(cf, 2), &rate) != MD_OK)
        return MD_ERROR;
    for (size_t i = 0; i < rc->ntenant_rates; i++) {
        if (strcmp(rc->tenant_rates[i].tenant, low) == 0)
            return md_conf_error(cf, "duplicate tenant_rate for \"%s\"", low);
    }
    rc->tenant_rates =
        md_xrealloc(rc->tenant_rates, sizeof(*rc->tenant_rates) * (rc->ntenant_rates + 1));
    rc->tenant_rates[rc->ntenant_rates].tenant = md_xstrdup(low);
    rc->tenant_rates[rc->ntenant_rates].rate = rate;
    rc->ntenant_rates++;
    return MD_OK;
}

/* default_tenant_rate N */
static int
md_route_conf_default_rate(md_conf_parser_t *cf, const md_conf_cmd_t *cmd, void *base)
{
    return md_route_conf_rate_value(cf, cmd->name, md_conf_arg(cf, 1),
                                    (int *)(void *)((char *)base + cmd->offset));
}

int
md_route_tenant_rate(const md_route_conf_t *rc, const char *tenant)
{
    if (rc == NULL || tenant == NULL || tenant[0] == '\0')
        return 0;
    for (size_t i = 0; i < rc->ntenant_rates; i++) {
        if (strcasecmp(rc->tenant_rates[i].tenant, tenant) == 0)
            return rc->tenant_rates[i].rate;
    }
    return rc->default_tenant_rate;
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
    {"tenant_rate", MD_CONF_ROUTING, MD_CONF_TAKE2 | MD_CONF_MULTI, md_route_conf_tenant_rate, 0,
     NULL, NULL, NULL},
    {"default_tenant_rate", MD_CONF_ROUTING, MD_CONF_TAKE1, md_route_conf_default_rate,
     offsetof(md_route_conf_t, default_tenant_rate), NULL, NULL, NULL},
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
    for (size_t i = 0; i < rc->ntenant_rates; i++)
        free(rc->tenant_rates[i].tenant);
    free(rc->tenant_rates);
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

/* ---- this worker's buckets and accounts ----------------------------------------------- */

/*
 * A rate's token bucket as this worker sees it: tokens taken from Redis and
 * not spent yet, the sends waiting for one, and the refill in flight or timed.
 * An account embeds one; a tenant with a rate has one made on its first send
 * (md_route_tenant_bucket). A tenant bucket's waiters go on to their account's
 * bucket once they hold the tenant's token.
 */
typedef struct md_route_bucket_s md_route_bucket_t;
struct md_route_bucket_s {
    struct md_route_acct_s *acct; /* an account's bucket; NULL for a tenant's */
    double rate;                  /* configured (0: unlimited) */
    double eff;                   /* what refills ask for: AIMD for SES, else rate */
    char key[96];                 /* Redis key */
    int tokens;                   /* taken from Redis, not spent yet */
    int refilling;
    int redis_down; /* the last refill failed: the next round is local */
    unsigned nwaiting;
    md_list_t waiters;
    ev_timer refill;
    double local_tokens, local_at; /* fallback bucket while Redis is away */
    /* tenant buckets */
    double defer_until;      /* the latest slot given to a declined message */
    md_route_bucket_t *next; /* hash chain */
    int serving;             /* inside md_route_serve: the sweep must not free it */
    char tenant[37];
};

typedef struct md_route_acct_s {
    md_esp_t *esp;
    md_breaker_t br;
    md_route_bucket_t bk;
    double aimd_last;
    int adaptive;
    int midx; /* index in the metrics segment, or -1 */
    int in_flight;
} md_route_acct_t;

#define MD_ROUTE_TENANT_HASH 256
#define MD_ROUTE_TENANT_KEEP 4096 /* idle tenant buckets kept before a sweep */

typedef struct md_route_state_s {
    md_app_t *app;
    const md_route_conf_t *rc;
    md_route_acct_t *accts;
    size_t n;
    int script;
    char pick_tenant[37]; /* the tenant of the latest md_route_pick */
    md_route_bucket_t *tenants[MD_ROUTE_TENANT_HASH];
    size_t ntenants, tenant_keep;
    int64_t tenant_waiting; /* waiters queued at tenant buckets */
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

/* This worker's gauges of a into the metrics segment; after every change (a
 * handful of relaxed stores). */
static void
md_route_publish(md_route_acct_t *a, int live)
{
    if (a->midx < 0)
        return;
    md_metrics_esp_gauges_t g = {
        .live = live,
        .in_flight = a->in_flight,
        .waiting = a->bk.nwaiting,
        .state = a->br.state,
        .consecutive = a->br.consecutive,
        .probe_at = a->br.state == MD_BREAKER_OPEN ? a->br.opened_at + a->br.cooldown : 0,
        .rate = a->bk.rate,
        .effective = a->bk.eff,
    };
    md_metrics_esp_gauges(a->midx, &g);
}

static void md_route_refill_cb(struct ev_loop *loop, ev_timer *t, int revents);

static void
md_route_bucket_init(md_route_bucket_t *bk, double rate, const char *prefix, const char *name)
{
    bk->rate = rate;
    bk->eff = rate;
    snprintf(bk->key, sizeof(bk->key), "%s{%s}", prefix, name);
    md_list_init(&bk->waiters);
    ev_init(&bk->refill, md_route_refill_cb);
    bk->refill.data = bk;
    bk->local_tokens = md_bucket_burst(rate);
    bk->local_at = md_route_now();
}

/* Stops bk's timer and drops its waiters without a callback. */
static void
md_route_bucket_stop(md_route_state_t *s, md_route_bucket_t *bk)
{
    ev_timer_stop(s->app->loop, &bk->refill);
    while (!md_list_empty(&bk->waiters)) {
        md_route_waiter_t *w = md_list_data(bk->waiters.next, md_route_waiter_t, link);
        md_list_remove(&w->link);
        w->queued = 0;
        w->bucket = NULL;
    }
    bk->nwaiting = 0;
}

int
md_route_init(md_app_t *app)
{
    md_route_destroy();
    const md_conf_t *conf = app->conf;
    md_route_state_t *s = md_xcalloc(1, sizeof(*s));
    s->app = app;
    s->rc = conf->routing;
    s->script = -1;
    s->tenant_keep = MD_ROUTE_TENANT_KEEP;
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
        md_route_bucket_init(&a->bk, esp->conf->rate > 0 ? esp->conf->rate : 0,
                             "mailerd:rate:", esp->conf->name);
        a->bk.acct = a;
        a->adaptive = esp->conf->driver == MD_ESP_DRIVER_SES;
        a->midx = md_metrics_esp_register(esp->conf->name);
        if (a->midx < 0)
            md_logf(MD_LOG_WARN, 0, MD_LOG_FIELDS(MD_LS("esp", esp->conf->name)),
                    "esp account left out of the shared figures (more than %d accounts)",
                    MD_METRICS_MAX_ESPS);
        esp->route = a;
        md_route_publish(a, 1);
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
        md_route_bucket_stop(s, &a->bk);
        a->in_flight = 0;
        md_route_publish(a, 0);
        a->esp->route = NULL;
    }
    for (size_t h = 0; h < MD_ROUTE_TENANT_HASH; h++) {
        while (s->tenants[h]) {
            md_route_bucket_t *bk = s->tenants[h];
            s->tenants[h] = bk->next;
            md_route_bucket_stop(s, bk);
            free(bk);
        }
    }
    md_metrics_tenant_waiting(0);
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
    if (md_route) {
        char low[37];
        if (tenant == NULL || !md_route_uuid_lower(tenant, low))
            low[0] = '\0';
        memcpy(md_route->pick_tenant, low, sizeof(low));
    }
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
    int before = a->br.state;
    bool ok = md_breaker_allow(&a->br, now);
    if (a->br.state != before)
        md_route_publish(a, 1);
    if (ok)
        return true;
    *wait = md_breaker_wait(&a->br, now);
    return false;
}

bool
md_route_closed(const md_esp_t *esp)
{
    md_route_acct_t *a = md_route_acct((md_esp_t *)esp);
    return a == NULL || a->br.state == MD_BREAKER_CLOSED;
}

static int md_route_acct_token(md_route_acct_t *a, md_route_waiter_t *w);

/* The waiters of bk changed by delta: the account's gauges, or the count of
 * sends waiting for a tenant's token. */
static void
md_route_waiting_changed(md_route_bucket_t *bk, int delta)
{
    if (bk->acct) {
        md_route_publish(bk->acct, 1);
    } else if (md_route) {
        md_route->tenant_waiting += delta;
        md_metrics_tenant_waiting(md_route->tenant_waiting);
    }
}

static void
md_route_enqueue(md_route_bucket_t *bk, md_route_waiter_t *w)
{
    md_list_insert_tail(&bk->waiters, &w->link);
    w->queued = 1;
    w->bucket = bk;
    bk->nwaiting++;
    md_route_waiting_changed(bk, 1);
}

static md_route_waiter_t *
md_route_dequeue(md_route_bucket_t *bk)
{
    md_route_waiter_t *w = md_list_data(bk->waiters.next, md_route_waiter_t, link);
    md_list_remove(&w->link);
    w->queued = 0;
    w->bucket = NULL;
    bk->nwaiting--;
    md_route_waiting_changed(bk, -1);
    return w;
}

/* Hands tokens to waiters, in order: an account's waiter is ready; a tenant's
 * goes on to its account's bucket (ready at once when that has a token too).
 * Runs from the loop only (a refill reply or the timer), never inside a
 * client's destroy. */
static void
md_route_serve(md_route_bucket_t *bk)
{
    bk->serving++;
    while (bk->tokens > 0 && !md_list_empty(&bk->waiters)) {
        md_route_waiter_t *w = md_route_dequeue(bk);
        bk->tokens--;
        if (bk->acct == NULL) {
            w->tenant_state = 2;
            if (md_route_acct_token(md_route_acct(w->esp), w) != MD_OK)
                continue; /* queued at its account */
        }
        w->ready(w);
    }
    bk->serving--;
}

static void md_route_refill(md_route_bucket_t *bk);

static void
md_route_refill_later(md_route_bucket_t *bk, double after)
{
    if (md_route == NULL)
        return;
    if (after < 0.001)
        after = 0.001;
    ev_timer_stop(md_route->app->loop, &bk->refill);
    ev_timer_set(&bk->refill, after, 0.);
    ev_timer_start(md_route->app->loop, &bk->refill);
}

/* Redis is away: this worker's share of the rate from a local bucket. */
static void
md_route_local_tokens(md_route_bucket_t *bk)
{
    int workers =
        md_route->app->conf->worker_processes > 0 ? md_route->app->conf->worker_processes : 1;
    double rate = bk->eff / workers, wait = 0;
    int got = md_bucket_take(&bk->local_tokens, &bk->local_at, md_route_now(), rate,
                             md_bucket_burst(rate), md_bucket_batch(rate), &wait);
    bk->tokens += got;
    md_route_serve(bk);
    if (!md_list_empty(&bk->waiters))
        md_route_refill_later(bk, got > 0 ? 0.001 : wait);
}

static void
md_route_refill_reply(void *ctx, redisReply *reply, const char *err)
{
    md_route_bucket_t *bk = ctx;
    bk->refilling = 0;
    if (md_route == NULL)
        return;
    if (err || reply->type != REDIS_REPLY_ARRAY || reply->elements < 2 ||
        reply->element[0]->type != REDIS_REPLY_INTEGER ||
        reply->element[1]->type != REDIS_REPLY_INTEGER) {
        /* From the loop later: this may run inside the client's destroy. */
        bk->redis_down = 1;
        md_route_refill_later(bk, 0.001);
        return;
    }
    long long got = reply->element[0]->integer, wait_us = reply->element[1]->integer;
    bk->tokens += (int)got;
    md_route_serve(bk);
    if (!md_list_empty(&bk->waiters)) {
        if (got > 0)
            md_route_refill(bk);
        else
            md_route_refill_later(bk, (double)wait_us / 1e6);
    }
}

static void
md_route_refill(md_route_bucket_t *bk)
{
    if (bk->refilling || md_route == NULL)
        return;
    md_app_t *app = md_route->app;
    if (md_route->script < 0 || app->redis == NULL || !md_redis_ready(app->redis)) {
        md_route_local_tokens(bk);
        return;
    }
    char rate[32], burst[32], want[16];
    snprintf(rate, sizeof(rate), "%.3f", bk->eff);
    snprintf(burst, sizeof(burst), "%.3f", md_bucket_burst(bk->rate));
    snprintf(want, sizeof(want), "%d", md_bucket_batch(bk->eff));
    const char *argv[] = {bk->key, rate, burst, want};
    if (md_redis_eval(app->redis, md_route->script, 1, 4, argv, NULL, md_route_refill_reply, bk) ==
        MD_OK)
        bk->refilling = 1;
    else
        md_route_local_tokens(bk);
}

static void
md_route_refill_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    md_unused(loop);
    md_unused(revents);
    md_route_bucket_t *bk = t->data;
    if (bk->redis_down) {
        /* one round from the local bucket, then Redis again */
        bk->redis_down = 0;
        md_route_local_tokens(bk);
        return;
    }
    if (!md_list_empty(&bk->waiters))
        md_route_refill(bk);
}

/* Takes a token of bk for w now (MD_OK), or queues w (MD_AGAIN). */
static int
md_route_bucket_token(md_route_bucket_t *bk, md_route_waiter_t *w)
{
    if (bk->tokens > 0 && md_list_empty(&bk->waiters)) {
        bk->tokens--;
        return MD_OK;
    }
    md_route_enqueue(bk, w);
    if (!bk->refilling && !ev_is_active(&bk->refill))
        md_route_refill(bk);
    return MD_AGAIN;
}

static int
md_route_acct_token(md_route_acct_t *a, md_route_waiter_t *w)
{
    if (a == NULL || a->bk.rate <= 0)
        return MD_OK;
    return md_route_bucket_token(&a->bk, w);
}

static unsigned
md_route_tenant_hash(const char *t)
{
    unsigned h = 2166136261u;
    for (; *t; t++)
        h = (h ^ (unsigned char)*t) * 16777619u;
    return h % MD_ROUTE_TENANT_HASH;
}

/* Frees the tenant buckets nobody waits on or refills (their unspent tokens,
 * a batch at most, are given up: the tenant sends a little under its rate). */
static void
md_route_tenant_sweep(md_route_state_t *s)
{
    for (size_t h = 0; h < MD_ROUTE_TENANT_HASH; h++) {
        md_route_bucket_t **pp = &s->tenants[h];
        while (*pp) {
            md_route_bucket_t *bk = *pp;
            if (md_list_empty(&bk->waiters) && !bk->refilling && !bk->serving &&
                !ev_is_active(&bk->refill)) {
                *pp = bk->next;
                free(bk);
                s->ntenants--;
                continue;
            }
            pp = &bk->next;
        }
    }
    s->tenant_keep = md_max((size_t)MD_ROUTE_TENANT_KEEP, s->ntenants * 2);
}

/* The bucket of tenant at rate (made on first use; a reload makes new ones). */
static md_route_bucket_t *
md_route_tenant_bucket(md_route_state_t *s, const char *tenant, int rate)
{
    unsigned h = md_route_tenant_hash(tenant);
    for (md_route_bucket_t *bk = s->tenants[h]; bk; bk = bk->next) {
        if (strcmp(bk->tenant, tenant) == 0)
            return bk;
    }
    if (s->ntenants >= s->tenant_keep)
        md_route_tenant_sweep(s);
    md_route_bucket_t *bk = md_xcalloc(1, sizeof(*bk));
    md_strlcpy(bk->tenant, tenant, sizeof(bk->tenant));
    md_route_bucket_init(bk, rate, "mailerd:tenant_rate:", tenant);
    bk->next = s->tenants[h];
    s->tenants[h] = bk;
    s->ntenants++;
    return bk;
}

void
md_route_waiter_tenant(md_route_waiter_t *w, const char *tenant)
{
    if (tenant == NULL || !md_route_uuid_lower(tenant, w->tenant))
        w->tenant[0] = '\0';
    w->tenant_state = 1;
}

int
md_route_token(md_esp_t *esp, md_route_waiter_t *w)
{
    md_route_state_t *s = md_route;
    if (s == NULL)
        return MD_OK;
    if (w->tenant_state == 0) {
        memcpy(w->tenant, s->pick_tenant, sizeof(w->tenant));
        w->tenant_state = 1;
    }
    if (w->tenant_state == 1) {
        int rate = md_route_tenant_rate(s->rc, w->tenant);
        if (rate <= 0) {
            w->tenant_state = 2;
        } else {
            w->esp = esp;
            md_route_bucket_t *bk = md_route_tenant_bucket(s, w->tenant, rate);
            /* this worker's share of the rate: the others take tokens too */
            int nw = s->app->conf->worker_processes > 0 ? s->app->conf->worker_processes : 1;
            double share = md_max((double)rate / nw, 0.001);
            /* Slots are reckoned at the whole rate: this worker may hold all of
             * the tenant's backlog and then drains its queue at the whole rate
             * (reckoning at its share left gaps with nothing to send). When the
             * workers split the backlog, messages come back early: they find
             * the queue below the bound and wait in it, or are declined again
             * to a later slot. */
            /* and never more than a quarter of the dispatcher's places */
            double cap =
                md_min(share * MD_ROUTE_TENANT_MAX_WAIT, s->app->conf->dispatch_concurrency / 4.0);
            if (bk->nwaiting >= (unsigned)md_max(1.0, cap)) {
                double now = md_route_now();
                double from = md_max(bk->defer_until, now + bk->nwaiting / (double)rate);
                bk->defer_until = from + 1.0 / rate;
                w->defer = bk->defer_until - now;
                return MD_DECLINED;
            }
            if (md_route_bucket_token(bk, w) != MD_OK)
                return MD_AGAIN; /* md_route_serve goes on to the account */
            w->tenant_state = 2;
        }
    }
    return md_route_acct_token(md_route_acct(esp), w);
}

void
md_route_token_cancel(md_esp_t *esp, md_route_waiter_t *w)
{
    md_unused(esp);
    if (!w->queued)
        return;
    md_route_bucket_t *bk = w->bucket;
    md_list_remove(&w->link);
    w->queued = 0;
    w->bucket = NULL;
    if (bk) {
        bk->nwaiting--;
        md_route_waiting_changed(bk, -1);
    }
}

void
md_route_started(md_esp_t *esp)
{
    md_route_acct_t *a = md_route_acct(esp);
    if (a == NULL)
        return;
    a->in_flight++;
    md_route_publish(a, 1);
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
    md_metrics_esp_latency(a->midx, latency);
    if (outcome == MD_ESP_SENT) {
        md_metrics_esp_count(a->midx, MD_METRICS_ESP_SENT, 1);
        if (a->adaptive && a->bk.rate > 0)
            a->bk.eff = md_aimd_success(a->bk.eff, a->bk.rate, &a->aimd_last, now);
        md_route_publish(a, 1);
        return;
    }
    md_metrics_esp_count(
        a->midx, outcome == MD_ESP_RETRYABLE ? MD_METRICS_ESP_FAILED : MD_METRICS_ESP_REJECTED, 1);
    md_metrics_esp_error(a->midx, md_route_wall(), code);
    if (outcome == MD_ESP_RETRYABLE && md_route_is_throttle(code)) {
        md_metrics_esp_count(a->midx, MD_METRICS_ESP_THROTTLED, 1);
        if (a->adaptive && a->bk.rate > 0) {
            double before = a->bk.eff;
            a->bk.eff = md_aimd_throttle(a->bk.eff, a->bk.rate, &a->aimd_last, now);
            if (a->bk.eff < before)
                md_logf(MD_LOG_INFO, 0,
                        MD_LOG_FIELDS(MD_LS("esp", esp->conf->name), MD_LD("rate", a->bk.eff)),
                        "esp throttled: effective rate lowered");
        }
    }
    md_route_publish(a, 1);
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
    md_route_publish(a, 1);
}

/* ---- GET /v1/admin/esps ---------------------------------------------------------------- */

/* A breaker state as a reader sees it: open past its cool-down admits the
 * next send, so it shows as half-open. */
static int
md_route_seen_state(int state, double probe_at, double now)
{
    return state == MD_BREAKER_OPEN && probe_at <= now ? MD_BREAKER_HALF_OPEN : state;
}

static json_t *
md_route_ms(double seconds, bool have)
{
    return have ? json_real(seconds * 1000.0) : json_null();
}

/* The account's recent errors of every worker (the shared segment's), newest
 * first, each with the worker (slot) that had it. */
static json_t *
md_route_errors_json(const md_metrics_esp_t *m)
{
    json_t *errs = json_array();
    for (unsigned k = 0; k < m->nerrors; k++) {
        char at[40];
        time_t sec = (time_t)m->errors[k].at;
        struct tm tm;
        gmtime_r(&sec, &tm);
        size_t len = strftime(at, sizeof(at), "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(at + len, sizeof(at) - len, ".%03dZ",
                 (int)((m->errors[k].at - (double)sec) * 1000.0));
        json_t *e = json_object();
        json_object_set_new(e, "code", json_string(m->errors[k].code));
        json_object_set_new(e, "at", json_string(at));
        json_object_set_new(e, "worker", json_integer((json_int_t)m->errors[k].slot));
        json_array_append_new(errs, e);
    }
    return errs;
}

static md_route_acct_t *
md_route_acct_named(const char *name)
{
    for (size_t i = 0; md_route && i < md_route->n; i++) {
        if (strcmp(md_route->accts[i].esp->conf->name, name) == 0)
            return &md_route->accts[i];
    }
    return NULL;
}

json_t *
md_route_stats_json(const md_conf_t *conf)
{
    json_t *arr = json_array();
    if (conf == NULL)
        return arr;
    static md_metrics_esp_t m; /* about 6 KB: not on a worker's stack */
    double now = md_route_now();
    for (size_t i = 0; i < conf->nesp; i++) {
        const md_esp_conf_t *ec = &conf->esp[i];
        md_route_acct_t *a = md_route_acct_named(ec->name);
        if (md_metrics_esp_read(md_metrics_esp_find(ec->name), &m) != MD_OK)
            memset(&m, 0, sizeof(m));
        /* the worst state of the workers: one with its circuit open is not
         * sending there, which is what an operator looks for */
        int state = MD_BREAKER_CLOSED, consecutive = 0;
        json_t *workers = json_array();
        for (unsigned k = 0; k < m.nworkers; k++) {
            const md_metrics_esp_worker_t *w = &m.worker[k];
            int st = md_route_seen_state(w->state, w->probe_at, now);
            if (st == MD_BREAKER_OPEN || (st == MD_BREAKER_HALF_OPEN && state == MD_BREAKER_CLOSED))
                state = st;
            consecutive = md_max(consecutive, w->consecutive);
            json_t *o = json_object();
            json_object_set_new(o, "worker", json_integer(w->slot));
            json_object_set_new(o, "state", json_string(md_breaker_state_name(st)));
            json_object_set_new(o, "consecutive_failures", json_integer(w->consecutive));
            json_object_set_new(o, "in_flight", json_integer((json_int_t)w->in_flight));
            json_object_set_new(o, "waiting_for_token", json_integer((json_int_t)w->waiting));
            json_object_set_new(o, "effective_rate",
                                ec->rate > 0 ? json_real(w->effective) : json_null());
            json_array_append_new(workers, o);
        }
        json_t *o = json_object();
        json_object_set_new(o, "name", json_string(ec->name));
        json_object_set_new(o, "driver", json_string(md_esp_driver_name(ec->driver)));
        json_object_set_new(o, "state", json_string(md_breaker_state_name(state)));
        json_object_set_new(o, "circuit_open_workers", json_integer(m.open));
        json_object_set_new(o, "consecutive_failures", json_integer(consecutive));
        json_t *rate = json_object();
        json_object_set_new(rate, "configured", ec->rate > 0 ? json_real(ec->rate) : json_null());
        json_object_set_new(rate, "effective",
                            ec->rate > 0 ? json_real(m.nworkers ? m.effective : ec->rate)
                                         : json_null());
        json_object_set_new(o, "rate", rate);
        json_object_set_new(o, "in_flight", json_integer((json_int_t)m.in_flight));
        json_object_set_new(o, "waiting_for_token", json_integer((json_int_t)m.waiting));
        json_object_set_new(o, "sent", json_integer((json_int_t)m.count[MD_METRICS_ESP_SENT]));
        json_object_set_new(o, "failed", json_integer((json_int_t)m.count[MD_METRICS_ESP_FAILED]));
        json_object_set_new(o, "rejected",
                            json_integer((json_int_t)m.count[MD_METRICS_ESP_REJECTED]));
        json_object_set_new(o, "throttled",
                            json_integer((json_int_t)m.count[MD_METRICS_ESP_THROTTLED]));
        bool have = m.latency_count > 0;
        json_t *lat = json_object();
        json_object_set_new(lat, "mean_ms",
                            md_route_ms(have ? m.latency_sum / (double)m.latency_count : 0, have));
        json_object_set_new(lat, "p50_ms", md_route_ms(m.p50, have));
        json_object_set_new(lat, "p90_ms", md_route_ms(m.p90, have));
        json_object_set_new(lat, "samples", json_integer((json_int_t)m.latency_count));
        json_object_set_new(o, "latency", lat);
        json_object_set_new(o, "workers", workers);
        json_object_set_new(o, "recent_errors", md_route_errors_json(&m));
        if (a && a->esp->endpoint) {
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
