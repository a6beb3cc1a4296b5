/*
 * The queue between accepting and sending (issue 4 form; issue 5 hardens it).
 * Redis streams per priority ("mailerd:q:transactional", "mailerd:q:bulk") with
 * one consumer group "mailerd", and a sorted set "mailerd:q:scheduled" (score:
 * send_at) moved into the streams when due. PostgreSQL stays the system of
 * record: an entry only names a message id.
 */
#ifndef MD_QUEUE_H
#define MD_QUEUE_H

#include <stdbool.h>

#include "md_core.h"

/*
 * After COMMIT: puts messages on the queue, one Lua script call per 500
 * messages (XADD + SADD to MD_QUEUE_LIVE, or ZADD to the scheduled set when
 * send_at is ahead), pipelined. Fire and forget: a failure is logged and
 * counted; the message stays queued in PostgreSQL and the sweeper requeues it.
 */
void md_queue_push(const char *const *ids, const int *priority, const double *send_at, size_t n);

struct md_app_s;
/* Registers the scripts and statements (before the stores start), makes this
 * worker's ESP accounts, starts the scheduler and recovery timers and the
 * dispatcher (when an esp block exists; without one mail stays queued and a
 * warning is logged). Does nothing without postgres { } or redis { }. */
int md_queue_app_init(struct md_app_s *app);
/* Graceful stop, called while the PostgreSQL pool takes work: stops reading
 * the streams and the timers, and lets the dispatcher hand back what it holds
 * (md_dispatch_shutdown): results already sent are recorded; claims in flight
 * are waited for, and what they claimed is released to "queued" and pushed
 * again; entries read and not claimed are acknowledged and pushed again.
 * settled(data) runs once the last of those statements is with the pool (at
 * once when nothing is in flight, possibly inside this call): only then may
 * the pool stop taking work. */
void md_queue_app_shutdown(struct md_app_s *app, void (*settled)(void *data), void *data);
/* At the end of a graceful stop, once every push was answered: removes this
 * process's heartbeat, so its going is not taken for a death (which makes the
 * sweeper read everything), unless it owes a reset (a push failed and the
 * reset did not reach Redis). Returns true when the command went out. */
bool md_queue_app_goodbye(struct md_app_s *app);
void md_queue_app_destroy(struct md_app_s *app);

/* ---- shared by md_queue.c and src/esp/md_dispatch.c ---------------------------- */

#define MD_QUEUE_GROUP     "mailerd"
#define MD_QUEUE_SCHEDULED "mailerd:q:scheduled"
/* Stream keys by MD_PRIORITY_* (0 transactional, 1 bulk). */
extern const char *const md_queue_stream[2];
/* The streams have no length cap: the sweeper trims the entries the group has
 * acknowledged (md_queue.c, md_queue_trim_lua), never an unread one. */

/* Fire and forget on md_app->redis (failures are logged and counted; the
 * recovery scan repairs them): acknowledge a stream entry; put a message on the
 * scheduled set for unix time at. */
void md_queue_ack(int priority, const char *entry_id, const char *message_id);
void md_queue_schedule(const char *id, int priority, double at);

/* A write that may have left waiting mail without its queue entry and that no
 * failed push reports (a commit whose outcome is unknown): the next sweeper
 * turns read every waiting message. */
void md_queue_suspect(void);

/* ---- issue 5: the hardened queue (contract between md_queue.c, md_dispatch.c and
 * src/http/md_api_queue.c) ------------------------------------------------------------
 *
 * Coverage. A message that PostgreSQL says is waiting to be sent (queued,
 * scheduled, deferred, or sending with an expired lease) is "covered" when Redis
 * holds work for it: its id is a member of MD_QUEUE_LIVE (it has a stream entry
 * not yet acknowledged) or of MD_QUEUE_SCHEDULED (as "t:<id>" / "b:<id>"). Every
 * path that adds a stream entry adds the id to MD_QUEUE_LIVE in the same Lua
 * script (push, the scheduled-set mover, the sweeper); acknowledging an entry
 * removes it (md_queue_ack). The sweeper re-enqueues what is waiting and not
 * covered, so a Redis restart without persistence, a lost XADD or a dead worker
 * delays mail and never drops it; the conditional claim in PostgreSQL keeps a
 * duplicate entry harmless.
 *
 * Pause. queue_pauses (migration 0003) is the truth. The claim statement skips
 * a message whose tenant (or '*') is paused: the dispatcher acknowledges the
 * entry and the message stays "queued" in PostgreSQL, uncovered; the sweeper
 * leaves paused tenants alone; resume calls md_queue_requeue for the scope.
 *
 * Dead letters. A message that fails for good gets status 'failed', a
 * dead_letters row (0003, written in the same statement as the status) and an
 * entry on the MD_QUEUE_DEAD stream (fields id, tenant, code, reason) through
 * md_queue_dead. The API reads dead_letters; the sweeper deletes rows and trims
 * stream entries older than queue_dead_retention.
 */
#define MD_QUEUE_LIVE        "mailerd:q:live" /* SET of message ids with an unacked stream entry */
#define MD_QUEUE_DEAD        "mailerd:q:dead" /* stream: id, tenant, code, reason */
#define MD_QUEUE_DEAD_MAXLEN "100000"

/* Fire and forget: XADD to MD_QUEUE_DEAD (MAXLEN ~). */
void md_queue_dead(const char *id, const char *tenant_id, const char *code, const char *reason);

/*
 * Puts back on the queue every waiting, uncovered message of a scope now, without
 * the sweeper's age threshold: tenant_id, or NULL for every tenant not paused
 * (after a global resume). Also used by retry-failed after it moved messages
 * back to 'queued' (ids given: only those; n == 0 means "by scope"). cb (may be
 * NULL) runs once from the loop with how many were pushed, or -1 and an error
 * when PostgreSQL or Redis could not be reached (the sweeper repairs that later).
 */
/* Returns MD_OK: cb runs exactly once, from the loop (never inside this call);
 * MD_AGAIN: PostgreSQL or Redis is not connected now (answer 503), cb will not run;
 * MD_ERROR: the queue is off (no postgres or redis block) or an id or the tenant
 * is not a UUID, cb will not run. The ids are copied. Pages of 2000, so any
 * scope size works; "pushed" counts only the messages no entry covered. */
typedef void (*md_queue_requeue_cb)(void *ctx, long pushed, const char *err);
int md_queue_requeue(const char *tenant_id, const char *const *ids, size_t n,
                     md_queue_requeue_cb cb, void *ctx);

/* Global queue figures from Redis, for GET /v1/admin/queue/stats and /metrics. */
typedef struct md_queue_redis_stats_s {
    long long stream_len[2]; /* XLEN per priority (entries not yet trimmed) */
    long long lag[2];        /* entries not yet delivered to any consumer; -1 when Redis
                                cannot tell (entries deleted in the unread range) */
    long long pending[2];    /* delivered to a consumer, not acknowledged (in flight) */
    long long scheduled;     /* ZCARD of the scheduled set (scheduled sends and retries) */
    long long dead;          /* XLEN of the dead stream */
} md_queue_redis_stats_t;
/* One Lua script call. Returns MD_OK: cb runs once from the loop with s (err
 * NULL) or an error (s NULL); s lives only during the call. MD_AGAIN: Redis is
 * not connected now; MD_ERROR: the queue is off. cb does not run for either. */
typedef void (*md_queue_stats_cb)(void *ctx, const md_queue_redis_stats_t *s, const char *err);
int md_queue_redis_stats(md_queue_stats_cb cb, void *ctx);

/* The dispatcher (src/esp/md_dispatch.c): one per worker. */
int md_dispatch_start(struct md_app_s *app);
void md_dispatch_shutdown(void (*settled)(void *data), void *data);
void md_dispatch_destroy(void);
/* Registers the dispatcher's prepared statements on the pool. */
struct md_pg_pool_s;
int md_dispatch_prepare(struct md_pg_pool_s *pool);

#endif
