/*
 * Invalidations the publisher can wait for (see md_broadcast.h). The waits of
 * this worker are on a file-static list, so md_broadcast_destroy can call back
 * those whose next look at the count is a timer, not a reply.
 */
#include "md_broadcast.h"
#include "md_buf.h"
#include "md_id.h"
#include "md_list.h"
#include "md_log.h"

#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define POLL_EVERY 0.002 /* seconds between looks at the count */
#define COUNT_TTL  "60"  /* seconds a count is kept */
#define TOKEN_LEN  32    /* hex digits */
#define ACK_WORD   " ack:"

typedef struct wait_s {
    md_list_t link; /* on waits while counting */
    md_redis_t *r;
    struct ev_loop *loop;
    md_broadcast_cb cb;
    void *ctx;
    char channel[64];
    char key[sizeof(MD_BROADCAST_PREFIX) + TOKEN_LEN];
    long long want;  /* subscribers the PUBLISH reached */
    double deadline; /* call back then, counted or not */
    ev_timer poll;
    bool in_flight; /* the PUBLISH or a GET of the count awaits its reply */
    bool orphan;    /* called back by md_broadcast_destroy: the reply frees it */
} wait_t;

static md_list_t waits = {&waits, &waits};

static void
wait_end(wait_t *w, const char *err)
{
    ev_timer_stop(w->loop, &w->poll);
    md_list_remove(&w->link);
    if (w->cb)
        w->cb(w->ctx, err);
    free(w);
}

static void poll_cb(struct ev_loop *loop, ev_timer *t, int revents);

/* The start of every reply: false when the wait is gone (freed here). */
static bool
reply_for(wait_t *w)
{
    w->in_flight = false;
    if (!w->orphan)
        return true;
    free(w);
    return false;
}

static void
count_cb(void *ctx, redisReply *reply, const char *err)
{
    wait_t *w = ctx;
    if (!reply_for(w))
        return;
    long long got = 0;
    if (!err && reply && reply->type == REDIS_REPLY_STRING)
        got = strtoll(reply->str, NULL, 10);
    if (err || got >= w->want || ev_now(w->loop) >= w->deadline) {
        if (!err && got < w->want)
            md_logf(MD_LOG_WARN, 0,
                    MD_LOG_FIELDS(MD_LS("channel", w->channel), MD_LI("applied", got),
                                  MD_LI("reached", w->want)),
                    "an invalidation was not confirmed by every subscriber in time; going on");
        wait_end(w, NULL); /* published: a count that cannot be read ends the wait */
        return;
    }
    ev_timer_set(&w->poll, POLL_EVERY, 0.);
    ev_timer_start(w->loop, &w->poll);
}

static void
poll_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    md_unused(loop);
    md_unused(revents);
    wait_t *w = t->data;
    const char *argv[] = {"GET", w->key};
    if (md_redis_cmd(w->r, count_cb, w, 2, argv, NULL) == MD_OK)
        w->in_flight = true;
    else
        wait_end(w, NULL); /* Redis went away: the others stop trusting their caches */
}

static void
published_cb(void *ctx, redisReply *reply, const char *err)
{
    wait_t *w = ctx;
    if (!reply_for(w))
        return;
    if (err || reply->type == REDIS_REPLY_ERROR) {
        /* Redis' own message is valid during this call, which is when cb reads it */
        wait_end(w, err ? err : reply->str ? reply->str : "error");
        return;
    }
    if (w->key[0] == '\0' || reply->type != REDIS_REPLY_INTEGER || reply->integer <= 0) {
        wait_end(w, NULL);
        return;
    }
    w->want = reply->integer;
    w->deadline = ev_now(w->loop) + MD_BROADCAST_WAIT;
    poll_cb(w->loop, &w->poll, 0);
}

int
md_broadcast(md_redis_t *r, struct ev_loop *loop, const char *channel, const char *payload,
             size_t len, bool wait, md_broadcast_cb cb, void *ctx)
{
    if (r == NULL)
        return MD_AGAIN;
    wait_t *w = md_xcalloc(1, sizeof(*w));
    md_list_init(&w->link);
    w->r = r;
    w->loop = loop;
    w->cb = cb;
    w->ctx = ctx;
    md_strlcpy(w->channel, channel, sizeof(w->channel));
    ev_init(&w->poll, poll_cb);
    w->poll.data = w;
    md_buf_t msg;
    md_buf_init(&msg);
    md_buf_append(&msg, payload, len);
    unsigned char rnd[TOKEN_LEN / 2];
    if (wait && md_random_bytes(rnd, sizeof(rnd)) == MD_OK) {
        char token[TOKEN_LEN + 1];
        md_hex_encode(token, rnd, sizeof(rnd));
        snprintf(w->key, sizeof(w->key), MD_BROADCAST_PREFIX "%s", token);
        md_buf_printf(&msg, ACK_WORD "%s", token);
    }
    const char *argv[] = {"PUBLISH", channel, msg.pos};
    size_t argvlen[] = {7, strlen(channel), md_buf_len(&msg)};
    int rc = md_redis_cmd(r, published_cb, w, 3, argv, argvlen);
    md_buf_free(&msg);
    if (rc != MD_OK) {
        free(w);
        return MD_AGAIN;
    }
    w->in_flight = true;
    md_list_insert_tail(&waits, &w->link);
    return MD_OK;
}

/* --- kept messages (md_broadcast_or_keep) ---------------------------------------------- */

typedef struct kept_s {
    md_list_t link;          /* on kept.list while waiting for Redis */
    void (*done)(void *ctx); /* the first attempt's caller */
    void *ctx;
    bool failed; /* a PUBLISH of it failed: warned once */
    bool keep;   /* counted in kept.bytes: kept when it fails */
    size_t len;
    char channel[64];
    char payload[]; /* len bytes */
} kept_t;

/* One client and loop per worker: the retries use those of the latest call. */
static struct {
    md_list_t list;
    size_t bytes; /* payloads kept or in flight through md_broadcast_or_keep */
    md_redis_t *r;
    struct ev_loop *loop;
    ev_timer retry; /* unref'd while active: it must not keep a stopping worker alive */
} kept = {.list = {&kept.list, &kept.list}};

static void
kept_free(kept_t *k)
{
    if (k->keep)
        kept.bytes -= k->len;
    free(k);
}

static void
kept_timer(bool on)
{
    if (on == (bool)ev_is_active(&kept.retry))
        return;
    if (on) {
        ev_timer_again(kept.loop, &kept.retry);
        ev_unref(kept.loop);
    } else {
        ev_ref(kept.loop);
        ev_timer_stop(kept.loop, &kept.retry);
    }
}

static void
kept_hold(kept_t *k)
{
    k->done = NULL;
    md_list_insert_tail(&kept.list, &k->link);
    kept_timer(true);
}

static void
kept_published_cb(void *ctx, const char *err)
{
    kept_t *k = ctx;
    void (*done)(void *) = k->done;
    void *done_ctx = k->ctx;
    if (err == NULL || !k->keep) {
        if (err)
            md_logf(MD_LOG_WARN, 0,
                    MD_LOG_FIELDS(MD_LS("channel", k->channel), MD_LS("error", err)),
                    "publishing an invalidation failed, past the buffer: dropped");
        kept_free(k);
    } else {
        if (!k->failed)
            md_logf(MD_LOG_WARN, 0,
                    MD_LOG_FIELDS(MD_LS("channel", k->channel), MD_LS("error", err)),
                    "publishing an invalidation failed, will retry");
        k->failed = true;
        kept_hold(k);
    }
    if (done)
        done(done_ctx);
}

static void
kept_retry_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    md_unused(loop);
    md_unused(t);
    md_unused(revents);
    if (kept.r == NULL || !md_redis_ready(kept.r))
        return;
    /* This turn takes what is kept now, up to the last one; what fails goes
     * back to the tail, for the next turn. */
    md_list_t *last = md_list_last(&kept.list);
    for (md_list_t *n = md_list_first(&kept.list); last != NULL; n = md_list_first(&kept.list)) {
        bool end = n == last;
        kept_t *k = md_list_data(n, kept_t, link);
        md_list_remove(n);
        if (md_broadcast(kept.r, kept.loop, k->channel, k->payload, k->len, false,
                         kept_published_cb, k) != MD_OK)
            md_list_insert_tail(&kept.list, n);
        if (end)
            break;
    }
    if (md_list_empty(&kept.list))
        kept_timer(false);
}

int
md_broadcast_or_keep(md_redis_t *r, struct ev_loop *loop, const char *channel, const char *payload,
                     size_t len, void (*done)(void *ctx), void *ctx)
{
    if (r == NULL)
        return MD_AGAIN;
    if (kept.loop == NULL)
        ev_init(&kept.retry, kept_retry_cb);
    kept.retry.repeat = MD_BROADCAST_RETRY;
    kept.r = r;
    kept.loop = loop;
    kept_t *k = md_xmalloc(sizeof(*k) + len);
    md_list_init(&k->link);
    k->done = done;
    k->ctx = ctx;
    k->failed = false;
    /* counted in flight too, so a failing Redis cannot grow what is kept */
    k->keep = kept.bytes + len <= MD_BROADCAST_KEPT_MAX;
    k->len = len;
    md_strlcpy(k->channel, channel, sizeof(k->channel));
    memcpy(k->payload, payload, len);
    if (k->keep)
        kept.bytes += len;
    if (md_broadcast(r, loop, channel, payload, len, done != NULL, kept_published_cb, k) == MD_OK)
        return MD_OK;
    if (!k->keep) {
        md_logf(MD_LOG_WARN, 0, MD_LOG_FIELDS(MD_LS("channel", channel)),
                "Redis is unavailable and the invalidations waiting for it exceed the buffer: "
                "one dropped");
        kept_free(k);
        return MD_AGAIN;
    }
    md_logf(MD_LOG_WARN, 0, MD_LOG_FIELDS(MD_LS("channel", channel)),
            "Redis is unavailable, an invalidation will be published later");
    k->failed = true;
    kept_hold(k);
    return MD_AGAIN;
}

/* Where " ack:TOKEN" starts in a message, or len when it has none. */
size_t
md_broadcast_body(const char *payload, size_t len)
{
    size_t word = sizeof(ACK_WORD) - 1 + TOKEN_LEN;
    if (len < word || memcmp(payload + len - word, ACK_WORD, sizeof(ACK_WORD) - 1) != 0)
        return len;
    for (size_t i = len - TOKEN_LEN; i < len; i++)
        if (md_hexval(payload[i]) < 0)
            return len;
    return len - word;
}

void
md_broadcast_applied(md_redis_t *r, const char *payload, size_t len)
{
    if (r == NULL || md_broadcast_body(payload, len) == len)
        return;
    char key[sizeof(MD_BROADCAST_PREFIX) + TOKEN_LEN];
    snprintf(key, sizeof(key), MD_BROADCAST_PREFIX "%.*s", TOKEN_LEN, payload + len - TOKEN_LEN);
    const char *incr[] = {"INCR", key};
    const char *expire[] = {"EXPIRE", key, COUNT_TTL};
    if (md_redis_cmd(r, md_redis_ignore_cb, NULL, 2, incr, NULL) == MD_OK)
        (void)md_redis_cmd(r, md_redis_ignore_cb, NULL, 3, expire, NULL);
}

void
md_broadcast_destroy(void)
{
    for (md_list_t *n; (n = md_list_first(&waits)) != NULL;) {
        wait_t *w = md_list_data(n, wait_t, link);
        if (!w->in_flight) {
            wait_end(w, NULL);
            continue;
        }
        /* its reply is still owed (the client outlives this call): called
         * back now, freed by the reply */
        ev_timer_stop(w->loop, &w->poll);
        md_list_remove(&w->link);
        w->orphan = true;
        if (w->cb)
            w->cb(w->ctx, NULL);
        w->cb = NULL;
    }
    /* md_redis_destroy failed the retries in flight: all are on the list now */
    for (md_list_t *n; (n = md_list_first(&kept.list)) != NULL;) {
        md_list_remove(n);
        kept_free(md_list_data(n, kept_t, link));
    }
    if (kept.loop)
        kept_timer(false);
    kept.r = NULL;
}
