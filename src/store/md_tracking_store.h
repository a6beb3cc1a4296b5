/*
 * The tracking routes' store (src/http/md_api_track.c): what a click, an open
 * pixel or an unsubscribe writes, each ONE statement (data-modifying CTEs, one
 * implicit transaction), keyed by the message id a verified token carries.
 *
 *   click        the original URL of link i (messages.tracking->'links'->>i) and
 *                a `clicked` event {"url","link","user_agent","ip"}; nothing
 *                when the message or the link is unknown.
 *   open         an `opened` event {"user_agent","ip"} when the message exists
 *                and tracks opens (tracking.opens true).
 *   unsubscribe  the message's to_addr (domain lower-cased, the suppression
 *                key) suppressed for its tenant (reason and source
 *                `unsubscribe`, detail how) as the webhooks do: a permanent
 *                entry is never changed, an expiring one becomes permanent;
 *                and one `unsubscribed` event {"how","user_agent","ip"} per
 *                message. The "once" is guarded by a row lock, not a read:
 *                the statement marks messages.tracking.unsubscribed_at (an
 *                RFC 3339 time) only where it is not set yet, so of two
 *                concurrent unsubscribes of one message exactly one stores
 *                the event.
 *   recipient    the message's to_addr (for the confirmation page).
 *
 * None of these moves the message status. The events counters of /metrics
 * (mailerd_events_total{type}, mailerd_suppressions_added_total{reason}) count
 * what was stored.
 */
#ifndef MD_TRACKING_STORE_H
#define MD_TRACKING_STORE_H

#include "md_core.h"

struct md_app_s;
/* Registers the statements on app->pg (a no-op without PostgreSQL). */
int md_tracking_store_app_init(struct md_app_s *app);
void md_tracking_store_app_destroy(struct md_app_s *app);

/* What one call found and did; valid only during the callback. */
typedef struct md_tracking_result_s {
    const char *error; /* NULL, or an md_pg_err_* */
    bool found;        /* the message exists (click: and the link) */
    bool added;        /* an event or a suppression was stored */
    const char *url;   /* click: the original URL (NUL-terminated), else NULL */
    const char *to;    /* recipient: the message's to_addr, else NULL */
} md_tracking_result_t;

typedef void (*md_tracking_cb)(void *ctx, const md_tracking_result_t *res);

/* The client as the events record it; either string may be NULL. Copied.
 * lookup_only (click, open): find the message and link but store nothing
 * (a HEAD request: link checkers and prefetchers, not a person). */
typedef struct md_tracking_client_s {
    const char *user_agent;
    const char *ip;
    bool lookup_only;
} md_tracking_client_t;

/*
 * Each takes the message id as canonical UUID text and returns MD_OK (cb runs
 * exactly once, later, never inside the call) or MD_AGAIN (nothing queued: no
 * PostgreSQL, or the pool cannot take it now; cb will not run).
 */
int md_tracking_click(const char *msgid, unsigned link, const md_tracking_client_t *cl,
                      md_tracking_cb cb, void *ctx);
int md_tracking_open(const char *msgid, const md_tracking_client_t *cl, md_tracking_cb cb,
                     void *ctx);
/* how: "one-click" or "page". */
int md_tracking_unsubscribe(const char *msgid, const char *how, const md_tracking_client_t *cl,
                            md_tracking_cb cb, void *ctx);
int md_tracking_recipient(const char *msgid, md_tracking_cb cb, void *ctx);

#endif
