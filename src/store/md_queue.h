/*
 * The queue between accepting and sending (issue 4 form; issue 5 hardens it).
 * Redis streams per priority ("mailerd:q:transactional", "mailerd:q:bulk") with
 * one consumer group "mailerd", and a sorted set "mailerd:q:scheduled" (score:
 * send_at) moved into the streams when due. PostgreSQL stays the system of
 * record: an entry only names a message id.
 */
#ifndef MD_QUEUE_H
#define MD_QUEUE_H

#include "md_core.h"

/*
 * After COMMIT: puts messages on the queue (pipelined XADD / ZADD). Fire and
 * forget: a failure is logged and counted; the message stays queued in
 * PostgreSQL and is picked up again by the recovery scan.
 */
void md_queue_push(const char *const *ids, const int *priority, const double *send_at, size_t n);

struct md_app_s;
/* Registers the scripts and statements (before the stores start), makes this
 * worker's ESP accounts, starts the scheduler and recovery timers and the
 * dispatcher (when an esp block exists; without one mail stays queued and a
 * warning is logged). Does nothing without postgres { } or redis { }. */
int md_queue_app_init(struct md_app_s *app);
/* Graceful stop, called before the PostgreSQL pool stops taking work: stops
 * reading the streams and the timers. Work already held is not handed back: a
 * message whose claim is answered after this point is left "sending" under its
 * lease (5 minutes) and requeued by the recovery scan when the lease expires;
 * entries read but not claimed stay pending in the consumer group and their
 * messages, still "queued", are requeued by the scan. A result already being
 * recorded finishes normally (the pool finishes what it was given). */
void md_queue_app_shutdown(struct md_app_s *app);
void md_queue_app_destroy(struct md_app_s *app);

/* ---- shared by md_queue.c and src/esp/md_dispatch.c ---------------------------- */

#define MD_QUEUE_GROUP     "mailerd"
#define MD_QUEUE_SCHEDULED "mailerd:q:scheduled"
/* Stream keys by MD_PRIORITY_* (0 transactional, 1 bulk). */
extern const char *const md_queue_stream[2];
/* Approximate cap of each stream (XADD MAXLEN ~): a backstop against unbounded
 * growth, far above any backlog we expect; an entry trimmed unread is not lost,
 * its message is still "queued" in PostgreSQL and the recovery scan requeues it. */
#define MD_QUEUE_MAXLEN "1000000"

/* Fire and forget on md_app->redis (failures are logged and counted; the
 * recovery scan repairs them): acknowledge a stream entry; put a message on the
 * scheduled set for unix time at. */
void md_queue_ack(int priority, const char *entry_id);
void md_queue_schedule(const char *id, int priority, double at);

/* The dispatcher (src/esp/md_dispatch.c): one per worker. */
int md_dispatch_start(struct md_app_s *app);
void md_dispatch_shutdown(void);
void md_dispatch_destroy(void);
/* Registers the dispatcher's prepared statements on the pool. */
struct md_pg_pool_s;
int md_dispatch_prepare(struct md_pg_pool_s *pool);

#endif
