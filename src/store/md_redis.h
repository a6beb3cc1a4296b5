/*
 * Redis client for a libev worker, on hiredis 0.14.1 async.
 *
 * One md_redis_t per worker (create it after fork) owns two connections to one
 * Redis: a command connection shared by every caller (commands are pipelined,
 * replies come back in order) and, once something subscribes, a pub/sub
 * connection. Both reconnect by themselves with exponential backoff and jitter
 * (reconnect_min doubling up to reconnect_max) and authenticate (AUTH, SELECT
 * db, PING) before they serve anything.
 *
 * Failure is fast and explicit: while the command connection is not ready a
 * command is refused at once with MD_AGAIN (the HTTP layer answers 503), and a
 * command in flight that gets no reply within command_timeout fails with
 * "timeout"; the connection is then dropped (a late reply would desynchronise
 * the pipeline) and re-established. Connecting and the handshake together are
 * bounded by connect_timeout.
 *
 * Everything here runs on the loop given to md_redis_create and is not thread-safe.
 */
#ifndef MD_REDIS_H
#define MD_REDIS_H

#include "md_core.h"
#include "md_conf.h"

#include <hiredis/hiredis.h>

struct ev_loop;

typedef struct md_redis_s md_redis_t;

/*
 * The completion of one command. Exactly one of reply and err is non-NULL:
 *   reply: Redis answered; valid only during the call (hiredis frees it after).
 *          A Redis error reply (WRONGTYPE, a failing script, ...) arrives here
 *          as reply->type == REDIS_REPLY_ERROR.
 *   err:   a static string, no reply will come:
 *          "timeout"      no reply within command_timeout;
 *          "disconnected" the connection was lost (or dropped because an
 *                         earlier command timed out) before the reply;
 *          "unavailable"  the client is being destroyed, or a NOSCRIPT
 *                         fallback could not be sent.
 * The callback may issue new commands (they are refused with MD_AGAIN while the
 * connection is down) but must not call md_redis_destroy.
 */
typedef void (*md_redis_cb)(void *ctx, redisReply *reply, const char *err);

/* An md_redis_cb for commands whose answer nobody reads (best-effort writes
 * whose failure something else covers). */
void md_redis_ignore_cb(void *ctx, redisReply *reply, const char *err);

/* A pub/sub message: payload (binary, len bytes, not NUL-terminated) is valid
 * only during the call. */
typedef void (*md_redis_msg_cb)(void *ctx, const char *payload, size_t len);

/* Called each time a subscription becomes active on a connection (the first
 * time too): messages published while it was not active were lost, so a caller
 * that caches what the channel invalidates should drop that cache here. */
typedef void (*md_redis_resub_cb)(void *ctx);

typedef struct md_redis_stats_s {
    int connected;        /* the command connection is ready (same as md_redis_ready) */
    int subscribed;       /* every subscription is confirmed on a live pub/sub connection */
    int in_flight;        /* commands sent and not yet answered */
    uint64_t reconnects;  /* connections re-established after a loss (both connections) */
    uint64_t errors;      /* Redis error replies and commands failed by a lost connection */
    uint64_t timeouts;    /* commands failed with "timeout" */
    uint64_t rejected;    /* md_redis_cmd/md_redis_eval calls answered MD_AGAIN */
    char last_error[160]; /* the last connection-level failure, "" if none; never a secret */
} md_redis_stats_t;

/*
 * Validates conf and returns a client that does nothing until md_redis_start.
 * conf->address must be "IP:PORT", "[IPv6]:PORT" or "unix:/path" (no names:
 * hiredis would resolve them with a blocking call). Zero or negative numeric
 * fields take the defaults of the redis { } block. conf is copied (the password
 * too); the caller keeps ownership of it. On error returns NULL and writes a
 * message into err. The caller frees the client with md_redis_destroy.
 */
md_redis_t *md_redis_create(struct ev_loop *loop, const md_redis_conf_t *conf, char *err,
                            size_t errlen);

/* Starts connecting (both connections if something subscribed already).
 * Returns MD_OK; connection failures are retried, never returned. */
int md_redis_start(md_redis_t *r);

/*
 * Closes both connections and frees r. Every pending callback runs first, with
 * err "unavailable". Must not be called from inside an md_redis callback.
 */
void md_redis_destroy(md_redis_t *r);

/*
 * Sends one command (argv[0] is its name; argvlen NULL means NUL-terminated
 * arguments, otherwise arguments are binary with the given lengths). The
 * arguments are copied before the call returns.
 * Returns MD_OK: cb will run exactly once, never before this call returns;
 *         MD_AGAIN: not connected, or max_pending commands in flight: cb will
 *                   not run and the caller should fail now (503);
 *         MD_ERROR: a misuse (argc < 1, or SUBSCRIBE/MONITOR and friends,
 *                   which would turn the shared connection into another mode).
 */
int md_redis_cmd(md_redis_t *r, md_redis_cb cb, void *ctx, int argc, const char **argv,
                 const size_t *argvlen);

/*
 * Registers a Lua script once (at startup) and returns its id (>= 0), or
 * MD_ERROR. Registering the same text twice returns the same id. The text is
 * copied. Scripts live as long as r.
 */
int md_redis_script(md_redis_t *r, const char *lua);

/*
 * Runs script id with nkeys keys followed by the other arguments (argc in all,
 * argv/argvlen as for md_redis_cmd: argv holds the keys then the arguments, no
 * command name). Sends EVALSHA; if Redis lost the script (restart, SCRIPT
 * FLUSH) it re-sends the same call as EVAL, which also caches it again, so the
 * caller never sees NOSCRIPT. Returns as md_redis_cmd (MD_ERROR also for an
 * unknown id or nkeys outside 0..argc).
 */
int md_redis_eval(md_redis_t *r, int id, int nkeys, int argc, const char **argv,
                  const size_t *argvlen, md_redis_cb cb, void *ctx);

/*
 * Subscribes to channel on the pub/sub connection (opened on first use; may be
 * called before or after md_redis_start). on_msg runs for every message;
 * on_resubscribe (may be NULL) runs each time the subscription becomes active,
 * including after every reconnect, and when Redis takes the pub/sub heartbeat
 * again after refusing it. A command timeout renews the pub/sub
 * connection too: an idle subscriber cannot tell a hung Redis from a quiet one
 * (TCP keepalive would take ~30 s). One subscriber per channel: returns MD_OK,
 * or MD_ERROR when the channel is already subscribed. ctx must live as long as r.
 */
int md_redis_subscribe(md_redis_t *r, const char *channel, md_redis_msg_cb on_msg,
                       md_redis_resub_cb on_resubscribe, void *ctx);

/* True when the command connection is connected and authenticated. */
bool md_redis_ready(const md_redis_t *r);

/* True when every subscription is active and Redis takes the heartbeat's
 * PUBLISH (false with no subscriptions). While false, pub/sub invalidations may
 * be missed: a cache fed by them should not be trusted. */
bool md_redis_subscribed(const md_redis_t *r);

void md_redis_stats(const md_redis_t *r, md_redis_stats_t *s);

#endif
