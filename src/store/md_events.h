/*
 * The event store (issue 7): what the providers' webhooks tell about sent mail,
 * stored once per provider event, moving each message's status forwards only,
 * and suppressing addresses on its own; the reads of GET /v1/events.
 *
 * Also the webhooks { } configuration block and the per-worker state the
 * receivers need (the SNS certificate cache, the SendGrid public key), made by
 * md_events_app_init after fork. The HTTP side is src/http/md_api_webhooks.c.
 *
 * Status order (never backwards): anything before sent (queued, sending,
 * deferred, ...) < sent < delivered < {bounced, complained}. Only these events
 * move it: SES Send -> sent, delivery -> delivered, a hard bounce -> bounced,
 * a complaint -> complained. A soft or undetermined bounce, opens, clicks,
 * unsubscribes and the rest are stored as events only. failed, suppressed and
 * canceled are final here: no provider event changes them. An event about a
 * recipient other than the message's to_addr (a cc) is stored but does not
 * move the status; its address is still suppressed.
 *
 * Suppression, per tenant (reason, source, detail):
 *   hard bounce  -> hard_bounce, no expiry;
 *   complaint    -> complaint, no expiry;
 *   unsubscribe  -> unsubscribe, no expiry;
 *   soft bounce  -> a soft_bounces row; the soft_bounce_limit-th within
 *                   soft_bounce_window -> soft_bounce until now + soft_bounce_suppress.
 * An existing entry with no expiry is never changed; one that expires is
 * replaced by a permanent one or extended by a later expiry.
 */
#ifndef MD_EVENTS_H
#define MD_EVENTS_H

#include "md_core.h"
#include "md_app.h"
#include "md_sns.h"
#include "md_webhook.h"

#include <jansson.h>

/* The metrics labels (md_metrics_webhook_event / _suppression): events are
 * counted by md_event_type_t (md_webhook.h), suppressions by these reasons. */
enum {
    MD_EVENTS_REASON_HARD_BOUNCE,
    MD_EVENTS_REASON_SOFT_BOUNCE,
    MD_EVENTS_REASON_COMPLAINT,
    MD_EVENTS_REASON_UNSUBSCRIBE,
    MD_EVENTS_REASON_MANUAL
};

/* webhooks { } (md_conf_t.webhooks; NULL when the block is absent: every
 * receiver then answers 404 webhook_not_configured). Strings are malloc'd. */
typedef struct md_webhooks_conf_s {
    char **sns_topics; /* sns_topic ARN; (repeatable) */
    size_t nsns_topics;
    char *sns_cert_dir;          /* certificates pre-seeded into each worker's cache */
    int sns_relax_dates;         /* flag: accept expired certificates (tests only) */
    char *sns_fetch_override;    /* "http(s)://host:port": fetch certificates and
                                    SubscribeURLs there, same path (tests only) */
    char *sendgrid_public_key;   /* base64 DER SPKI (P-256) */
    double sendgrid_max_age;     /* timestamp window either way [1h] */
    char *mailgun_signing_key;   /* or mailgun_signing_key_file */
    char *postmark_user;         /* basic auth */
    char *postmark_password;     /* or postmark_password_file */
    int soft_bounce_limit;       /* [3] */
    double soft_bounce_window;   /* [72h] */
    double soft_bounce_suppress; /* [7d] */
} md_webhooks_conf_t;

/* Registers the statements and builds the worker's receiver state (SNS cache,
 * seeded from sns_cert_dir: blocking reads, before the loop runs; the SendGrid
 * key). MD_OK, or MD_ERROR (the worker exits) when the configuration cannot
 * work. A no-op without a webhooks { } block or without PostgreSQL. */
int md_events_app_init(md_app_t *app);
void md_events_app_destroy(md_app_t *app);

/* The worker's receiver state; NULL when not configured. */
md_sns_cache_t *md_events_sns_cache(void);
const md_webhook_sg_key_t *md_events_sg_key(void);

/* What one md_events_ingest stored. */
typedef struct md_events_ingest_result_s {
    const char *error;   /* NULL, or an md_pg_err_* (outcome unknown unless "unavailable") */
    unsigned events;     /* events in the request */
    unsigned stored;     /* new events rows */
    unsigned duplicates; /* events already stored earlier (same provider event id) */
    unsigned unknown;    /* events naming no message of ours */
    unsigned moved;      /* messages whose status moved */
    unsigned suppressed; /* suppression entries added or changed */
} md_events_ingest_result_t;

typedef void (*md_events_ingest_cb)(void *ctx, const md_events_ingest_result_t *res);

/*
 * Stores evs (one webhook request, already authenticated) in one statement:
 * each event once (webhook_events), its events row, the message status and the
 * suppressions. Counts the metrics (events by type, suppressions by reason,
 * unknown messages). evs stays the caller's (everything is copied before
 * return). Returns MD_OK (cb runs exactly once, later) or MD_AGAIN (not queued:
 * answer 503; cb will not run).
 */
int md_events_ingest(md_webhook_provider_t provider, const md_webhook_events_t *evs,
                     md_events_ingest_cb cb, void *ctx);

/* A read's answer: obj (a new reference for the callback to take, or NULL) or
 * err: "not_found", "invalid_cursor", "invalid_since", or a store error. */
typedef void (*md_events_read_cb)(void *ctx, json_t *obj, const char *err);

/* GET /v1/messages/{id}/events: {"data":[event...]} oldest first; not_found
 * when the message is not the tenant's. Returns as md_pg_exec. */
int md_events_for_message(const char *tenant_id, const char *message_id, md_events_read_cb cb,
                          void *ctx);

typedef struct md_events_filter_s {
    const char *type;   /* or NULL */
    const char *since;  /* RFC 3339, or NULL */
    const char *cursor; /* an event id from next_cursor, or NULL */
    int limit;
} md_events_filter_t;

/* GET /v1/events: {"data":[...],"next_cursor":id|null} in (created_at, id) order. */
int md_events_list(const char *tenant_id, const md_events_filter_t *f, md_events_read_cb cb,
                   void *ctx);

#endif
