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

#endif
