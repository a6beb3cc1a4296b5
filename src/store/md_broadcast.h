/*
 * Invalidations over Redis pub/sub that the publisher can wait for.
 *
 * Workers cache what a channel invalidates (keys, templates). Redis answers a
 * PUBLISH once it queued the message for each subscriber, not once they read
 * it; on a loaded machine a client's next request can reach a worker before
 * that worker read the message, and be served from what was just invalidated.
 * So a message may carry " ack:TOKEN" at its end: each receiver, after
 * applying it, counts itself in MD_BROADCAST_PREFIX TOKEN
 * (md_broadcast_applied), and the publisher, told by PUBLISH how many
 * subscribers it reached, calls back when that many counted, or after
 * MD_BROADCAST_WAIT seconds (a receiver of an older version, or one whose
 * command connection is down, never counts), with a warning.
 */
#ifndef MD_BROADCAST_H
#define MD_BROADCAST_H

#include "md_redis.h"

#define MD_BROADCAST_PREFIX "mailerd:ack:"
#define MD_BROADCAST_WAIT   0.5 /* seconds */

struct ev_loop;

/* err NULL: published (and, when asked to wait, applied everywhere or waited
 * out); else why the PUBLISH failed (valid during the call only). */
typedef void (*md_broadcast_cb)(void *ctx, const char *err);

/*
 * Publishes payload (len bytes) on channel, with a confirmation request when
 * wait. Returns MD_OK: cb will run exactly once (never before this returns);
 * MD_AGAIN: Redis cannot take it now, cb will not run.
 */
int md_broadcast(md_redis_t *r, struct ev_loop *loop, const char *channel, const char *payload,
                 size_t len, bool wait, md_broadcast_cb cb, void *ctx);

/*
 * md_broadcast for an invalidation the other workers must get in the end (the
 * caches it invalidates are trusted while the subscription is up): one Redis
 * cannot take now, or whose PUBLISH fails, is kept and published again (not
 * waited for) every MD_BROADCAST_RETRY seconds while Redis is connected, until
 * it takes it. Up to MD_BROADCAST_KEPT_MAX bytes are kept per worker; past
 * that a message gets one try, with a warning (the receivers' cache TTLs
 * bound how long they serve what it invalidates). With done, the PUBLISH asks
 * for confirmations, and MD_OK means done(ctx) will run once, when every
 * subscriber applied it (as md_broadcast) or when it failed and was kept;
 * MD_AGAIN: kept for later (or dropped past the limit), done will not run.
 * The kept messages go with md_broadcast_destroy.
 */
#define MD_BROADCAST_RETRY    0.25 /* seconds */
#define MD_BROADCAST_KEPT_MAX 262144

int md_broadcast_or_keep(md_redis_t *r, struct ev_loop *loop, const char *channel,
                         const char *payload, size_t len, void (*done)(void *ctx), void *ctx);

/* A received message's length without its confirmation request. */
size_t md_broadcast_body(const char *payload, size_t len);

/* A receiver applied the message: counts this worker in when it asks for it. */
void md_broadcast_applied(md_redis_t *r, const char *payload, size_t len);

/* Calls back what still waits (a worker's md_app calls it after
 * md_redis_destroy, whose owed replies ended the waits they could); a wait
 * whose reply is still owed is freed when it comes. Drops the kept messages. */
void md_broadcast_destroy(void);

#endif
