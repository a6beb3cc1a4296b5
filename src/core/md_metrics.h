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

#define MD_METRICS_MAX_SLOTS 128
#define MD_METRICS_MAX_ROUTES 64  /* route ids 0..62; id 63 means "no route" */
#define MD_METRICS_NO_ROUTE   (MD_METRICS_MAX_ROUTES - 1)

struct md_router_s;

int md_metrics_init(void);                 /* master (or single process), before forking */
void md_metrics_attach(unsigned slot);     /* worker: which slot it writes */
void md_metrics_http_request(unsigned route_id, int status, double seconds);
void md_metrics_connections(int delta);    /* open connections of this worker */
void md_metrics_slot_released(unsigned slot); /* master: a worker exited; zero its gauges */
void md_metrics_worker_restart(void);      /* master: a worker died and was replaced */
/* Prometheus text exposition format 0.0.4 of everything, route labels from rt. */
void md_metrics_render(md_buf_t *out, const struct md_router_s *rt);

/*
 * Store metrics of this worker (the PostgreSQL pool and the Redis client). Gauges
 * are absolute values now; the counters are increments since the previous call
 * (the slot keeps the running sum, so a replacement worker, whose clients count
 * from zero again, keeps the series monotonic).
 */
typedef struct md_metrics_store_s {
    int64_t pg_configured;   /* connections configured (pool_size), 0 without postgres */
    int64_t pg_connected;    /* connections up and serving */
    int64_t pg_in_flight;    /* units sent and not answered */
    int64_t pg_waiting;      /* units queued for a connection */
    uint64_t pg_errors;      /* increments */
    uint64_t pg_timeouts;    /* increments */
    uint64_t pg_reconnects;  /* increments */
    int64_t redis_connected; /* 1 when the command connection is ready */
    int64_t redis_in_flight; /* commands sent and not answered */
    uint64_t redis_reconnects; /* increments */
    uint64_t redis_errors;   /* increments (error replies, lost or timed-out commands) */
} md_metrics_store_t;
void md_metrics_store_update(const md_metrics_store_t *s);
/* A function md_metrics_render calls first (in the rendering worker) so its own
 * slot is fresh; NULL for none. The worker's md_app registers one. */
void md_metrics_set_collector(void (*collect)(void));

#endif
