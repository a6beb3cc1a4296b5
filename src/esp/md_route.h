/*
 * md_route: which ESP account a message goes to, and the health and pace of
 * each account (issue 6).
 *
 * Configuration (one block in the main context; see md_route.c for the table):
 *
 *   routing {
 *       route main { esp ses_us; esp ses_eu; esp sendgrid; }   # ordered failover
 *       route bulk { esp sendgrid weight 3; esp mailgun weight 1; }  # weighted
 *       default_route main;          # without it: the first route; without any
 *                                    # route: default_esp alone, as before
 *       tenant_route TENANT_UUID bulk;   # per tenant (may repeat)
 *       breaker_failures 5;          # consecutive retryable failures that open
 *       breaker_error_rate 0.5;      # ... or this share of failures
 *       breaker_window 30s;          #     over this window
 *       breaker_min_requests 20;     #     once it saw this many
 *       breaker_cooldown 10s;        # open -> half-open after this
 *       tenant_rate TENANT_UUID 50;  # messages/s of one tenant (0: unlimited; may repeat)
 *       default_tenant_rate 0;       # every other tenant's (0: unlimited, the default)
 *   }
 *
 * The esp blocks a route names must come before the routing block. A message's
 * own "esp" field (messages.esp_route) still wins: that account alone.
 *
 * Order: an ordered route tries its accounts in the order written; a weighted
 * route (any "weight" given) draws the first account by weight and the others
 * by weight among the rest (sampling without replacement), so the failover
 * order of a weighted route varies per message.
 *
 * Everything below the configuration is per worker (after fork): the circuit
 * breaker, the effective rate and the recent errors each worker keeps for
 * itself; the token buckets are shared, in Redis (keys "mailerd:rate:{ACCOUNT}"
 * and "mailerd:tenant_rate:{TENANT}"), so rates hold across workers and hosts,
 * and each account's counters, gauges and breaker state go to the metrics
 * segment (md_metrics_esp_*), so GET /v1/admin/esps and /metrics answer the
 * same server-wide figures from any worker.
 *
 * A tenant's rate is taken before the account's: a send first takes a token
 * of its tenant's bucket (once per message, whatever the failover), then one
 * of the account's; without either it waits (not a failure).
 */
#ifndef MD_ROUTE_H
#define MD_ROUTE_H

#include "md_core.h"
#include "md_conf.h"
#include "md_list.h"

#include <jansson.h>

#define MD_ROUTE_MAX_ESP 16 /* accounts in one route */

/* ---- configuration ----------------------------------------------------------------- */

typedef struct md_route_def_s {
    char *name;
    size_t n;
    char *esp[MD_ROUTE_MAX_ESP];
    unsigned weight[MD_ROUTE_MAX_ESP];
    int weighted; /* any "weight" was written */
} md_route_def_t;

typedef struct md_route_tenant_s {
    char *tenant; /* UUID text, lower case */
    char *route;
} md_route_tenant_t;

typedef struct md_route_tenant_rate_s {
    char *tenant; /* UUID text, lower case */
    int rate;     /* messages/s, 0: unlimited */
} md_route_tenant_rate_t;

typedef struct md_route_conf_s {
    md_route_def_t *routes;
    size_t nroutes;
    char *default_route; /* NULL: the first route */
    md_route_tenant_t *tenants;
    size_t ntenants;
    int breaker_failures;
    double breaker_error_rate;
    double breaker_window;
    int breaker_min_requests;
    double breaker_cooldown;
    md_route_tenant_rate_t *tenant_rates; /* tenant_rate (may repeat; a tenant once) */
    size_t ntenant_rates;
    int default_tenant_rate; /* messages/s of the tenants not listed, 0: unlimited */
} md_route_conf_t;

/* routing { }: the setter and cleanup of its row in md_conf.c's main table
 * (base is the md_conf_t; the parsed block goes to md_conf_t.routing). */
extern const md_conf_block_t md_route_conf_block;
int md_route_conf_set(md_conf_parser_t *cf, const md_conf_cmd_t *cmd, void *base);
void md_route_conf_free(const md_conf_cmd_t *cmd, void *base);

/* ---- pure parts (unit-tested in t/unit/route_t.c) ---------------------------------- */

/* The sending rate of tenant (UUID text, any case; NULL or "" for none) under
 * rc: its tenant_rate, else default_tenant_rate; 0 means unlimited. */
int md_route_tenant_rate(const md_route_conf_t *rc, const char *tenant);

enum { MD_BREAKER_CLOSED = 0, MD_BREAKER_OPEN = 1, MD_BREAKER_HALF_OPEN = 2 };

#define MD_BREAKER_BUCKETS 10
typedef struct md_breaker_s {
    int state;
    int consecutive;                    /* retryable failures in a row */
    double opened_at;                   /* when it last opened */
    int probing;                        /* half-open: a probe is out */
    double bucket_span;                 /* window / MD_BREAKER_BUCKETS */
    long bucket_at[MD_BREAKER_BUCKETS]; /* which span each bucket counts */
    unsigned ok[MD_BREAKER_BUCKETS], bad[MD_BREAKER_BUCKETS];
    /* parameters */
    int failures;
    double error_rate;
    double window;
    int min_requests;
    double cooldown;
} md_breaker_t;

void md_breaker_init(md_breaker_t *b, const md_route_conf_t *rc);
/* May a send go to this account now? Open past its cool-down becomes half-open
 * and admits one probe (the caller must report its result). */
bool md_breaker_allow(md_breaker_t *b, double now);
/* The outcome of a send the breaker admitted: ok is false for a retryable
 * failure (the account's fault), true for sent and permanent (the account
 * answered). */
void md_breaker_result(md_breaker_t *b, bool ok, double now);
/* A probe admitted but never sent (canceled): lets another probe go. */
void md_breaker_release(md_breaker_t *b);
const char *md_breaker_state_name(int state);
/* Seconds until an open breaker admits a probe (0 when it admits now). */
double md_breaker_wait(const md_breaker_t *b, double now);

/*
 * Token bucket, the same arithmetic as the Redis script: a bucket of at most
 * burst tokens refilled at rate per second from (tokens, at); takes up to want
 * whole tokens at now. Returns the tokens taken; *wait is the seconds until one
 * more token would be there (0 when some were taken). Updates tokens and at.
 */
int md_bucket_take(double *tokens, double *at, double now, double rate, double burst, int want,
                   double *wait);
/* The burst of a bucket of rate r per second: small (a 10 s run at rate 200
 * must stay within 5%), but at least the batch one worker takes. */
double md_bucket_burst(double rate);
/* Tokens one worker takes from Redis at a time for rate r. */
int md_bucket_batch(double rate);

/*
 * The try order of a route: order[0..n-1] gets indexes into def->esp. An
 * ordered route gives 0..n-1; a weighted one draws without replacement by
 * weight with rnd (uniform [0,1)) called n - 1 times at most.
 */
void md_route_order(const md_route_def_t *def, double (*rnd)(void *), void *rctx, size_t *order);

/* AIMD for the adaptive rate: after a throttle, eff halves (at most once a
 * second, not below floor); after a success it grows by max/20 per second
 * since the last change, up to max. */
double md_aimd_throttle(double eff, double max, double *last, double now);
double md_aimd_success(double eff, double max, double *last, double now);

/* ---- this worker's state ------------------------------------------------------------- */

struct md_app_s;
struct md_esp_s;

/* Makes the per-account state (esp->route of every account) and registers the
 * bucket script on app->redis (before md_redis_start). MD_OK or MD_ERROR. */
int md_route_init(struct md_app_s *app);
/* Frees it: waiters still queued are dropped without a callback. */
void md_route_destroy(void);

/*
 * The accounts a message tries, in order, into out (at most MD_ROUTE_MAX_ESP):
 * its own esp (that one alone; NULL and *unknown set when not configured), else
 * its tenant's route, the default route, or the default account. Returns how
 * many. rnd/rctx: see md_route_order.
 */
size_t md_route_pick(const char *tenant, const char *esp_name, struct md_esp_s **out,
                     bool *unknown);

/* A send waiting for a token of its tenant or of its account. The owner
 * zero-fills it and sets ready; the fields after queued are md_route's. */
typedef struct md_route_waiter_s md_route_waiter_t;
struct md_route_waiter_s {
    md_list_t link;
    void (*ready)(md_route_waiter_t *w); /* the account's token is now the waiter's */
    int queued;
    int tenant_state;     /* 0: tenant not known yet; 1: known, its token not taken;
                             2: its token taken (or the tenant is unlimited) */
    char tenant[37];      /* the message's tenant, lower case ("" for none) */
    struct md_esp_s *esp; /* the account it goes on to after its tenant token */
    void *bucket;         /* the bucket whose queue holds it (queued) */
    double defer;         /* MD_DECLINED: seconds until the tenant's rate has room */
};
/*
 * The tenant whose rate the waiter's message counts against. The dispatcher
 * may call it once per message before the first md_route_token; a waiter it
 * was not called for takes the tenant of the latest md_route_pick (the
 * dispatcher picks the route and takes the first token of a message in the
 * same loop turn, so that is the message's tenant).
 */
void md_route_waiter_tenant(md_route_waiter_t *w, const char *tenant);

/* May esp take a send now? false: its circuit is open (*wait: seconds until a
 * probe). true: admitted; the result must follow (md_route_result) or, when
 * never sent, md_route_abandon. */
bool md_route_admit(struct md_esp_s *esp, double *wait);
/* Is esp's breaker closed (sends go through as usual)? Changes nothing. */
bool md_route_closed(const struct md_esp_s *esp);
/* Takes a token of w's tenant's rate (once per message) and then of esp's
 * rate: MD_OK (both taken now) or MD_AGAIN (w queued; its ready runs from the
 * loop once it holds both). Unlimited tenants and accounts take none.
 * MD_DECLINED: the tenant's queue in this worker already holds more than
 * MD_ROUTE_TENANT_MAX_WAIT of its rate (this worker's share of it), or a
 * quarter of dispatch_concurrency; nothing is taken or queued, and
 * w->defer says when to try again (each declined message is given its own
 * later slot, so deferred messages come back at the tenant's rate). A waiting
 * send holds one of the dispatcher's places: without this a tenant far over
 * its rate would fill them all and hold every other tenant back. */
#define MD_ROUTE_TENANT_MAX_WAIT 5.0
int md_route_token(struct md_esp_s *esp, md_route_waiter_t *w);
/* Takes w off its queue (if queued); no callback. */
void md_route_token_cancel(struct md_esp_s *esp, md_route_waiter_t *w);
/* A send starts / ended: outcome MD_ESP_*, code (retryable/permanent), latency
 * in seconds. Feeds the breaker, counters, recent errors and the adaptive rate. */
void md_route_started(struct md_esp_s *esp);
void md_route_result(struct md_esp_s *esp, int outcome, const char *code, double latency);
void md_route_abandon(struct md_esp_s *esp);

/* Every configured account for GET /v1/admin/esps (new reference): the
 * server-wide figures of the metrics segment (counters, in flight, waiting,
 * latency, each worker's breaker and effective rate) and this worker's recent
 * errors and connection pool. conf lists the accounts (the answering worker's
 * configuration). */
json_t *md_route_stats_json(const md_conf_t *conf);

#endif
