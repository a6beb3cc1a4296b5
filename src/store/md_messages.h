/*
 * Messages in PostgreSQL: accepting them with group commit, reading them back,
 * canceling, batch counts, idempotency keys.
 *
 * Group commit: md_messages_accept() does not talk to PostgreSQL at once. It
 * queues the unit; units from all concurrent requests of this worker are flushed
 * together, as one transaction (one md_pg_exec_batch), when the window
 * (group_commit_window, ~1 ms) passes or group_commit_max_rows rows are waiting,
 * whichever comes first. Every unit's callback then runs after COMMIT, so a 202
 * built in it means "committed". If the shared transaction fails, each unit is
 * retried alone so one bad unit cannot sink the others.
 */
#ifndef MD_MESSAGES_H
#define MD_MESSAGES_H

#include "md_core.h"
#include "md_id.h"
#include <jansson.h>

enum { MD_PRIORITY_TRANSACTIONAL = 0, MD_PRIORITY_BULK = 1 };

/*
 * An attempt that ended without a recorded outcome (its worker died, or
 * PostgreSQL was away for longer than the lease): whoever takes the message
 * back (the sweeper turning the lease back, or a claim of the expired lease)
 * sets last_error to this text over the row m, so the next attempt knows the
 * message may have gone out already and a driver that can tell (the sink,
 * md_esp_msg_t.interrupted) does not send it twice. The prefix is what the
 * dispatcher tests.
 */
#define MD_INTERRUPTED_PREFIX "interrupted:"
#define MD_INTERRUPTED_ERROR_SQL(m)                                                                \
    "('" MD_INTERRUPTED_PREFIX " attempt ' || " m ".attempts"                                      \
    " || ' ended without a recorded outcome (its lease ran out)')"

typedef struct md_msg_addr_s {
    const char *address; /* as validated (md_address addr form: IDN domain as given) */
    const char *name;    /* display name, or NULL */
} md_msg_addr_t;

/* One recipient's message, ready to store: content already rendered. Strings
 * are the caller's (the request pool) and must live until the callback. */
typedef struct md_msg_new_s {
    char id[MD_UUID_STRLEN + 1]; /* made by the caller with md_uuid7 */
    md_msg_addr_t from;
    md_msg_addr_t to;
    const md_msg_addr_t *cc;
    size_t ncc;
    const md_msg_addr_t *bcc;
    size_t nbcc;
    const char *reply_to;       /* or NULL */
    const char *subject;        /* rendered */
    const char *text;           /* rendered, or NULL */
    const char *html;           /* rendered, or NULL */
    const char *template_id;    /* or NULL */
    const char *variables_json; /* JSON object text, or NULL */
    const char *headers_json;   /* JSON object text ("{}" when none) */
    const char *const *tags;
    size_t ntags;
    const char *metadata_json; /* JSON object text ("{}" when none) */
    int priority;              /* MD_PRIORITY_* */
    double send_at;            /* unix time; 0 = now */
    const char *esp_route;     /* or NULL */
    const char *suppress_key;  /* md_address_normalize() of to: checked against suppressions */
    const char *tracking_json; /* messages.tracking (md_tracking_apply), or NULL */
    /* When to turns out suppressed the message is refused (not stored); this JSON
     * object (or NULL) then joins the "rejected" array of the stored
     * idempotency answer, e.g. {"index","code":"suppressed","field","message"}. */
    const char *refused_json;
} md_msg_new_t;

/* One request's worth of messages, stored all or nothing, but for suppressed
 * recipients: those are refused (no row, no event) and reported as such.
 * idem_response_json: the caller's answer as if every recipient were accepted.
 * Before it is stored, the objects of its top-level arrays whose "id" is a
 * refused message are taken out and their msgs[i].refused_json go into its
 * top-level "rejected" array (sorted by "index"; the array is created when
 * absent), and the committed statuses are written into the "status" member of
 * the top-level object when its "id" is one of the unit's messages and of every
 * such object in a top-level array ({"messages":[{"id","status",...}]}), so a
 * replay answers what the first request answered. When every recipient is
 * refused nothing is stored, the key included. Stored as jsonb: key order and
 * spacing of a replay may differ from the first answer's text. */
typedef struct md_accept_s {
    const char *tenant_id;
    const char *batch_id; /* NULL for POST /v1/messages; set: a batches row is written */
    int batch_rejected;   /* recipients refused by validation (for the batches row) */
    const md_msg_new_t *msgs;
    size_t n;
    /* Idempotency-Key (NULL: none). The response the caller will send is stored
     * with the messages so a replay returns it verbatim. */
    const char *idem_key;
    const unsigned char *idem_hash; /* 32 bytes: SHA-256 of the request */
    int idem_status;
    const char *idem_response_json;
} md_accept_t;

typedef struct md_accept_result_s {
    /* NULL: committed; status[i] is msgs[i]'s status ("queued", "scheduled" or
     * "suppressed": refused, not stored). Else "idempotency_replay" (replay_* hold the stored
     * answer), "idempotency_conflict" (same key, other request), or a store error
     * (md_app_store_down() tells whether to answer 503). */
    const char *error;
    const char *const *status;
    int replay_status;
    const char *replay_response;
} md_accept_result_t;

typedef void (*md_accept_cb)(void *ctx, const md_accept_result_t *res);

/* MD_OK: cb runs exactly once, after COMMIT (or failure), never before this
 * returns. MD_AGAIN: the store cannot take it now (answer 503 store_unavailable).
 * On commit, queued messages are handed to md_queue_push(). */
int md_messages_accept(const md_accept_t *a, md_accept_cb cb, void *ctx);

/* Looks up an Idempotency-Key before doing any work. cb gets found = 0, or 1 with
 * the stored hash, status and response (valid during the callback). */
typedef void (*md_idem_cb)(void *ctx, const char *err, int found, const unsigned char *hash,
                           int status, const char *response);
int md_idempotency_get(const char *tenant_id, const char *key, md_idem_cb cb, void *ctx);

/* Reads answer JSON built from rows (the callback owns obj and must json_decref it);
 * err is NULL, "not_found", or a store error. */
typedef void (*md_json_cb)(void *ctx, json_t *obj, const char *err);

/* GET /v1/messages/{id}: the message with its events. */
int md_messages_get(const char *tenant_id, const char *id, md_json_cb cb, void *ctx);

typedef struct md_msg_filter_s {
    const char *status;   /* or NULL */
    const char *batch_id; /* or NULL */
    const char *tag;      /* or NULL */
    double since;         /* unix time, 0 = none */
    const char *cursor;   /* opaque, from next_cursor, or NULL */
    int limit;            /* 1..100 */
} md_msg_filter_t;

/* GET /v1/messages: {"data":[...], "next_cursor": "..."|null}, newest first.
 * err "invalid_cursor" when f->cursor is not one we made (answer 422); a
 * malformed batch_id matches nothing (an empty page). since compares the time
 * in the message id (UUIDv7: the accept time). */
int md_messages_list(const char *tenant_id, const md_msg_filter_t *f, md_json_cb cb, void *ctx);

/* POST /v1/messages/{id}/cancel: obj is the message after the attempt; err
 * "not_found", or "not_cancelable" (obj then holds the current status). */
int md_messages_cancel(const char *tenant_id, const char *id, md_json_cb cb, void *ctx);

/* GET /v1/batches/{id}: {"id","created_at","accepted","rejected","counts":{status:n}}. */
int md_batches_get(const char *tenant_id, const char *id, md_json_cb cb, void *ctx);

/* Counters of this worker's group commit, for tests and logs. */
typedef struct md_messages_stats_s {
    uint64_t accepted;     /* messages committed */
    uint64_t units;        /* units committed */
    uint64_t failed;       /* units that ended in an error */
    uint64_t replays;      /* units answered idempotency_replay */
    uint64_t conflicts;    /* units answered idempotency_conflict */
    uint64_t flushes;      /* transactions sent (md_pg_exec_batch calls, retries included) */
    uint64_t commits;      /* of those, committed */
    uint64_t retried;      /* units sent again after a shared transaction failed */
    uint64_t keys_expired; /* idempotency keys deleted by the cleanup */
    double commit_seconds; /* sum over commits of send -> COMMIT answered */
    size_t in_flight;      /* flushes sent, not answered */
    size_t pending_units, pending_rows; /* waiting for the window now */
} md_messages_stats_t;
void md_messages_stats(md_messages_stats_t *s);

/* Called by md_app_init / shutdown (statements, timers, final flush). */
struct md_app_s;
int md_messages_app_init(struct md_app_s *app);
void md_messages_app_shutdown(struct md_app_s *app);
void md_messages_app_destroy(struct md_app_s *app);

#endif
