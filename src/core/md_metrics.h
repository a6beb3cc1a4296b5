/*
 * Metrics shared by every process of one master: a MAP_SHARED anonymous segment
 * made by the master before the first fork, with one slot per process-table
 * position. A worker only writes its own slot (no contention between cores);
 * /metrics sums all slots, so counts are server-wide whichever worker answers, and
 * a slot keeps counting across the worker that replaces it, so counters stay
 * monotonic across restarts and reloads.
 */
#ifndef MD_METRICS_H
#define MD_METRICS_H

#include "md_core.h"
#include "md_buf.h"

#define MD_METRICS_MAX_SLOTS  128
#define MD_METRICS_MAX_ROUTES 64 /* route ids 0..62; id 63 means "no route" */
#define MD_METRICS_NO_ROUTE   (MD_METRICS_MAX_ROUTES - 1)

struct md_router_s;

int md_metrics_init(void);             /* master (or single process), before forking */
void md_metrics_attach(unsigned slot); /* worker: which slot it writes */
void md_metrics_http_request(unsigned route_id, int status, double seconds);
void md_metrics_connections(int delta);       /* open connections of this worker */
void md_metrics_slot_released(unsigned slot); /* master: a worker exited; zero its gauges */
void md_metrics_worker_restart(void);         /* master: a worker died and was replaced */
/* Prometheus text exposition format 0.0.4 of everything, route labels from rt. */
void md_metrics_render(md_buf_t *out, const struct md_router_s *rt);

/*
 * Store metrics of this worker (the PostgreSQL pool and the Redis client). Gauges
 * are absolute values now; the counters are increments since the previous call
 * (the slot keeps the running sum, so a replacement worker, whose clients count
 * from zero again, keeps the series monotonic).
 */
typedef struct md_metrics_store_s {
    int64_t pg_configured;     /* connections configured (pool_size), 0 without postgres */
    int64_t pg_connected;      /* connections up and serving */
    int64_t pg_in_flight;      /* units sent and not answered */
    int64_t pg_waiting;        /* units queued for a connection */
    uint64_t pg_errors;        /* increments */
    uint64_t pg_timeouts;      /* increments */
    uint64_t pg_reconnects;    /* increments */
    int64_t redis_connected;   /* 1 when the command connection is ready */
    int64_t redis_in_flight;   /* commands sent and not answered */
    uint64_t redis_reconnects; /* increments */
    uint64_t redis_errors;     /* increments (error replies, lost or timed-out commands) */
} md_metrics_store_t;
void md_metrics_store_update(const md_metrics_store_t *s);
/* A function md_metrics_render calls first (in the rendering worker) so its own
 * slot is fresh; NULL for none. The worker's md_app registers one. */
void md_metrics_set_collector(void (*collect)(void));

/*
 * The send API (src/http/md_api_messages.c): messages committed, and messages or
 * requests refused, by reason code. The reason names are registered once (a
 * static table of the caller's, before forking or per worker alike) and rendered
 * as mailerd_messages_rejected_total{reason="..."}; indexes beyond the table or
 * MD_METRICS_MAX_REASONS are dropped.
 */
#define MD_METRICS_MAX_REASONS 48
void md_metrics_messages_reasons(const char *const *names, unsigned n);
void md_metrics_messages_accepted(uint64_t n);
void md_metrics_messages_rejected(unsigned reason, uint64_t n);

/* Group commit (src/store/md_messages.c): one call per flush sent, and one per
 * flush committed with its rows (messages) and its round trip, send to COMMIT.
 * Rendered as mailerd_group_commit_flushes_total and the histograms
 * mailerd_group_commit_rows and mailerd_group_commit_duration_seconds. */
void md_metrics_group_commit_sent(void);
void md_metrics_group_commit(unsigned rows, double seconds);

/* Delivery (src/esp/md_dispatch.c, src/store/md_queue.c): outcomes of send
 * attempts once recorded, queue pushes that failed (the recovery scan repairs
 * them), messages the recovery scan put back; and the time from accept to sent
 * (mailerd_dispatch_latency_seconds, a summary: _sum and _count). */
enum {
    MD_METRICS_SENT = 0,
    MD_METRICS_FAILED,
    MD_METRICS_DEFERRED,
    MD_METRICS_QUEUE_PUSH_ERRORS,
    MD_METRICS_REQUEUED,
    /* issue 5 */
    MD_METRICS_ATTEMPTS,      /* claims that started a send attempt */
    MD_METRICS_DEAD,          /* messages added to the dead-letter queue */
    MD_METRICS_RECLAIMED,     /* stream entries taken over from a dead consumer (XAUTOCLAIM) */
    MD_METRICS_HANDED_BACK,   /* messages a stopping worker gave back unsent */
    MD_METRICS_SWEEPS_FULL,   /* sweeper turns that read every waiting message */
    MD_METRICS_SWEEPS_RECENT, /* sweeper turns that read only expired leases */
    MD_METRICS_DELIVERY_N
};
void md_metrics_delivery(int what, uint64_t n);
void md_metrics_delivery_latency(double seconds);

/* Queue gauges (issue 5): server-wide values sampled from Redis by whichever
 * worker last looked (the sweeper, every queue_recovery_interval or sooner),
 * kept in the shared segment outside the per-worker slots and rendered as
 * mailerd_queue_depth{priority="transactional|bulk"}, mailerd_queue_scheduled,
 * mailerd_queue_in_flight, mailerd_queue_dead. */
void md_metrics_queue_gauges(long long transactional, long long bulk, long long scheduled,
                             long long in_flight, long long dead);

/*
 * ESP accounts (issue 6, src/esp/md_route.c). The segment holds a table of
 * account names (MD_METRICS_MAX_ESPS, claimed by name by the first process
 * that registers one, never given back, so an index means the same account in
 * every process and across reloads) and, per slot and account, counters (kept
 * when the worker goes), a latency histogram and gauges (zeroed when it goes):
 * in flight, waiting for a token, this worker's circuit breaker and effective
 * rate. md_metrics_esp_read sums the slots, so whichever worker answers gives
 * the same server-wide figures. Rendered as mailerd_esp_*{esp="NAME"}.
 */
#define MD_METRICS_MAX_ESPS     32
#define MD_METRICS_ESP_NAME_MAX 64
enum {
    MD_METRICS_ESP_SENT = 0,
    MD_METRICS_ESP_FAILED,    /* retryable failures (the account's fault) */
    MD_METRICS_ESP_REJECTED,  /* permanent failures (the account answered no) */
    MD_METRICS_ESP_THROTTLED, /* retryable failures that were throttling */
    MD_METRICS_ESP_N
};
/* The account's index in the shared table (found, or claimed when new), or -1
 * (no segment, no slot attached, table full, or a name too long). */
int md_metrics_esp_register(const char *name);
void md_metrics_esp_count(int idx, int what, uint64_t n);
void md_metrics_esp_latency(int idx, double seconds);
/* A failed send of this worker (at: unix time, code: the reason or the
 * provider's code), kept in a small ring of the worker's slot, so the admin
 * view lists the newest errors of every worker whichever one answers. */
#define MD_METRICS_ESP_ERRORS   8  /* per slot and account, and in a read */
#define MD_METRICS_ESP_CODE_MAX 48 /* bytes of a code kept, NUL included */
void md_metrics_esp_error(int idx, double at, const char *code);

/* This worker's gauges of one account, published whole after each change. */
typedef struct md_metrics_esp_gauges_s {
    int live;          /* 1 while this worker's dispatcher runs the account, 0 after */
    int64_t in_flight; /* sends out now */
    int64_t waiting;   /* sends waiting for a token of the account's rate */
    int state;         /* MD_BREAKER_* (md_route.h) */
    int consecutive;   /* retryable failures in a row */
    double probe_at;   /* open: CLOCK_MONOTONIC seconds when it admits a probe */
    double rate;       /* configured, 0: unlimited */
    double effective;  /* this worker's effective rate (AIMD) */
} md_metrics_esp_gauges_t;
void md_metrics_esp_gauges(int idx, const md_metrics_esp_gauges_t *g);

/* One worker's view of an account, in a read. */
typedef struct md_metrics_esp_worker_s {
    unsigned slot;
    int state;
    int consecutive;
    double probe_at;
    double effective;
    int64_t in_flight, waiting;
} md_metrics_esp_worker_t;

/* Server-wide figures of one account: sums over every slot, and the workers
 * whose dispatcher runs it now (live). */
typedef struct md_metrics_esp_s {
    uint64_t count[MD_METRICS_ESP_N];
    int64_t in_flight, waiting;
    uint64_t latency_count;
    double latency_sum; /* seconds */
    double p50, p90;    /* seconds, estimated from the histogram; 0 without samples */
    double rate;        /* configured, as the live workers publish it */
    double effective;   /* mean of the live workers' effective rates */
    unsigned open;      /* live workers whose breaker is open */
    unsigned nworkers;  /* entries of worker[] */
    md_metrics_esp_worker_t worker[MD_METRICS_MAX_SLOTS];
    unsigned nerrors; /* entries of errors[]: the newest of every slot, newest first */
    struct {
        double at;     /* unix time */
        unsigned slot; /* the worker's slot */
        char code[MD_METRICS_ESP_CODE_MAX];
    } errors[MD_METRICS_ESP_ERRORS];
} md_metrics_esp_t;
/* Sends of this worker waiting for a token of their tenant's rate
 * (tenant_rate), an absolute value; rendered summed as
 * mailerd_tenant_rate_waiting. */
void md_metrics_tenant_waiting(int64_t n);
/* The index of name, or -1 when no process registered it. */
int md_metrics_esp_find(const char *name);
/* Fills out (the caller's, about 6 KB) for idx: MD_OK, or MD_DECLINED when
 * idx is not a registered account. */
int md_metrics_esp_read(int idx, md_metrics_esp_t *out);

/*
 * Provider webhooks (issue 7, src/store/md_events.c, src/http/md_api_webhooks.c):
 * events stored by type, suppressions the webhooks added by reason, events that
 * named no message of ours and refused webhook requests, by provider. The
 * names are registered once per process (a static table of the caller's,
 * indexes beyond MD_METRICS_MAX_WEBHOOK_NAMES are dropped) and rendered as
 * mailerd_events_total{type}, mailerd_suppressions_added_total{reason},
 * mailerd_webhook_unknown_messages_total{provider} and
 * mailerd_webhook_verification_failures_total{provider}.
 */
#define MD_METRICS_MAX_WEBHOOK_NAMES 16
void md_metrics_webhook_names(const char *const *types, unsigned ntypes, const char *const *reasons,
                              unsigned nreason, const char *const *providers, unsigned nproviders);
void md_metrics_webhook_event(unsigned type, uint64_t n);
void md_metrics_webhook_suppression(unsigned reason, uint64_t n);
void md_metrics_webhook_unknown(unsigned provider, uint64_t n);
void md_metrics_webhook_refused(unsigned provider, uint64_t n);

#endif
