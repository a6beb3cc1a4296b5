/*
 * Messages in PostgreSQL (see md_messages.h): group commit of accepted units,
 * reads, cancel, batch counts, idempotency keys.
 *
 * Group commit. md_messages_accept() turns a unit into the parameters of ONE
 * prepared statement (a data-modifying CTE: idempotency row, batches row,
 * messages via unnest of array parameters, one event per message), so a unit is
 * atomic however many recipients it has and its results come back together. The
 * unit waits on this worker's pending list; the list is flushed as one
 * md_pg_exec_batch (one transaction) when group_commit_window has passed since
 * its first unit or group_commit_max_rows rows wait. Flushes are not serialised:
 * the pool runs several at once on its connections, which is what lets commits
 * overlap their fsyncs.
 *
 * A shared transaction that fails on one unit's statement rolls back every unit
 * in it. The failing unit (res->failed) gets the error; the others are sent again
 * as one flush, and if that fails too, each alone. Serialization failures and
 * deadlocks (SQLSTATE class 40) retry everyone alone. Connection loss and
 * timeouts are not retried: the outcome is unknown, and the Idempotency-Key is
 * how a client retries safely.
 *
 * Callbacks run after COMMIT, after the queue push of the flush's messages.
 * Module state lives in the file-static `gc` (one md_app per worker); callbacks
 * find it there (NULL once destroyed), never through pointers they were handed.
 */
#include "md_messages.h"
#include "md_app.h"
#include "md_buf.h"
#include "md_log.h"
#include "md_metrics.h"
#include "md_periodic.h"
#include "md_pg.h"
#include "md_queue.h"

#include <ev.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* md_pg_exec_batch takes at most this many statements. */
#define GC_MAX_UNITS 1024
/* Messages in one unit: a batch is at most 1,000 recipients (the API's limit);
 * this only keeps a runaway caller from building a huge statement. */
#define GC_MAX_UNIT_ROWS 10000
/* A failed shared transaction is sent again without its bad unit this many
 * times (one round trip each, in sequence); then every unit goes alone (in
 * parallel), so a flush full of bad units does not take hundreds of rounds. */
#define GC_MAX_REGROUP    3
#define GC_ALONE          100
#define IDEM_TTL_SQL      "interval '24 hours'"
#define CLEANUP_FIRST     1.0   /* seconds after start: a fresh worker tidies up soon */
#define CLEANUP_INTERVAL  600.0 /* then every 10 minutes (each worker; the DELETE is indexed) */
#define CLEANUP_AGAIN     1.0   /* when a run hit its row limit */
#define CLEANUP_LIMIT     5000
#define CLEANUP_LIMIT_STR "5000"

/* RFC 3339 in UTC with microseconds, independent of the session's TimeZone. */
#define TS(col) "to_char((" col ") AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"

/* One message as JSON (alias m), with the status and updated_at expressions given
 * (cancel reports the row as its UPDATE left it, which its snapshot cannot see). */
#define MSG_JSON_FIELDS(status, updated)                                                           \
    "'id', m.id, 'status', " status ", 'priority', m.priority, "                                   \
    "'from', json_build_object('address', m.from_addr, 'name', m.from_name), "                     \
    "'to', json_build_object('address', m.to_addr, 'name', m.to_name), "                           \
    "'cc', m.cc, 'bcc', m.bcc, 'reply_to', m.reply_to, 'subject', m.subject, "                     \
    "'template_id', m.template_id, 'batch_id', m.batch_id, 'tags', m.tags, "                       \
    "'metadata', m.metadata, 'esp_route', m.esp_route, 'esp', m.esp, "                             \
    "'esp_message_id', m.esp_message_id, 'attempts', m.attempts, 'last_error', m.last_error, "     \
    "'send_at', " TS("m.send_at") ", 'next_attempt_at', " TS(                                      \
        "m.next_attempt_at") ", "                                                                  \
                             "'created_at', " TS("m.created_at") ", 'updated_at', " TS(            \
                                 updated) ", "                                                     \
                                          "'sent_at', " TS("m.sent_at") ", 'delivered_at', " TS(   \
                                              "m.delivered_at") ", 'tracking', m.tracking"

#define MSG_JSON "json_build_object(" MSG_JSON_FIELDS("m.status", "m.updated_at") ")::text"

/* ---- the accept statement --------------------------------------------------------- */

enum {
    P_TENANT,
    P_BATCH,
    P_BATCH_ACCEPTED,
    P_BATCH_REJECTED,
    P_IDEM_KEY,
    P_IDEM_HASH,
    P_IDEM_STATUS,
    P_IDEM_RESPONSE,
    /* arrays, one element per message */
    P_IDS,
    P_EVENT_IDS,
    P_FROM_ADDR,
    P_FROM_NAME,
    P_TO_ADDR,
    P_TO_NAME,
    P_CC,
    P_BCC,
    P_REPLY_TO,
    P_SUBJECT,
    P_TEXT,
    P_HTML,
    P_TEMPLATE,
    P_VARIABLES,
    P_HEADERS,
    P_TAGS,
    P_METADATA,
    P_PRIORITY,
    P_SEND_AT,
    P_ESP_ROUTE,
    P_SUPPRESS_KEY,
    P_TRACKING, /* messages.tracking (md_tracking.h), or NULL */
    P_REJECT,   /* the "rejected" entry of a suppressed recipient, for the stored answer */
    ACC_NPARAMS
};

/*
 * The statuses are decided here, in the same snapshot as the inserts: suppressed
 * (the tenant's suppression list holds suppress_key and it has not expired),
 * scheduled (send_at in the future), else queued. A suppressed recipient is
 * refused: no message row, no event, and the row comes back from the last
 * SELECT with status 'suppressed' so the caller can tell it. The idempotency row
 * goes first and guards the rest: with a key, nothing is written unless this
 * statement inserted (or took over an expired) key row, and a conflict shows as
 * ok = false with no message rows. A unit whose every recipient is suppressed
 * stores nothing, its key included (the caller answers 422, and a refused
 * request keeps no key), and is ok. ON CONFLICT waits for a concurrent inserter
 * of the same key to finish, so two concurrent units with one key write one set
 * of rows. The last SELECT always yields a row, so ok is read even when no
 * message was written.
 *
 * The stored answer is the caller's prediction (every recipient accepted) made
 * true here: the objects of its top-level arrays whose "id" is a suppressed
 * message leave their array, the recipients' "rejected" entries ($31, built by
 * the caller) join the top-level "rejected" array (created if absent), sorted
 * by "index", and mailerd_idem_patch writes the committed statuses. A live
 * answer built from the returned statuses says the same.
 *
 * The tenant is locked once per statement by mailerd_lock_tenants (migration
 * 0011: message_content has no foreign keys, whose triggers ran per row); it
 * fails with 23503 when the tenant is gone, as the key did. Its call is an
 * InitPlan, (SELECT f(...)), so that it runs once and not once per row.
 *
 * The arrays are unnested through (SELECT $n): a custom plan would see them as
 * constants and estimate the row count exactly, which makes every custom plan
 * look cheaper than the generic one, so PostgreSQL would plan this statement
 * again on every execution (twice the cost of running it). Hidden behind an
 * InitPlan, both estimates agree and the cached generic plan is used.
 */
static const char acc_sql[] =
    "WITH src AS MATERIALIZED ("
    " SELECT u.*, CASE"
    "  WHEN u.skey IS NOT NULL AND EXISTS (SELECT 1 FROM suppressions s"
    "   WHERE s.tenant_id = $1::uuid AND s.address = u.skey"
    "   AND (s.expires_at IS NULL OR s.expires_at > now())) THEN 'suppressed'"
    "  WHEN u.send_at IS NOT NULL AND to_timestamp(u.send_at) > now() THEN 'scheduled'"
    "  ELSE 'queued' END AS status"
    " FROM unnest((SELECT $9::uuid[]), (SELECT $10::uuid[]), (SELECT $11::text[]),"
    "  (SELECT $12::text[]), (SELECT $13::text[]), (SELECT $14::text[]), (SELECT $15::jsonb[]),"
    "  (SELECT $16::jsonb[]), (SELECT $17::text[]), (SELECT $18::text[]), (SELECT $19::text[]),"
    "  (SELECT $20::text[]), (SELECT $21::uuid[]), (SELECT $22::jsonb[]), (SELECT $23::jsonb[]),"
    "  (SELECT $24::text[]), (SELECT $25::jsonb[]), (SELECT $26::text[]), (SELECT $27::float8[]),"
    "  (SELECT $28::text[]), (SELECT $29::text[]), (SELECT $30::jsonb[]), (SELECT $31::jsonb[]))"
    "  AS u (id, eid, from_addr, from_name, to_addr, to_name, cc, bcc, reply_to, subject,"
    "   text_body, html_body, template_id, variables, headers, tags, metadata, priority,"
    "   send_at, esp_route, skey, tracking, rej)"
    "), live AS ("
    " SELECT count(*) FILTER (WHERE status <> 'suppressed') AS nok,"
    "  count(*) FILTER (WHERE status = 'suppressed') AS nsup FROM src"
    "), idem AS ("
    " INSERT INTO idempotency_keys AS k (tenant_id, key, request_hash, status_code, response)"
    " SELECT $1::uuid, $5::text, $6::bytea, $7::int, mailerd_idem_patch(CASE"
    "  WHEN (SELECT nsup FROM live) = 0 OR jsonb_typeof($8::jsonb) <> 'object' THEN $8::jsonb"
    "  ELSE (SELECT jsonb_object_agg(e.k, CASE"
    "   WHEN e.k = 'rejected' THEN (SELECT COALESCE(jsonb_agg(x.v ORDER BY CASE"
    "    WHEN jsonb_typeof(x.v -> 'index') = 'number' THEN (x.v ->> 'index')::numeric END),"
    "    '[]'::jsonb) FROM (SELECT v FROM jsonb_array_elements(CASE"
    "     WHEN jsonb_typeof(e.v) = 'array' THEN e.v ELSE '[]'::jsonb END) AS a (v)"
    "     UNION ALL SELECT rej FROM src WHERE status = 'suppressed' AND rej IS NOT NULL) AS x (v))"
    "   WHEN jsonb_typeof(e.v) = 'array' THEN (SELECT COALESCE(jsonb_agg(a.v ORDER BY a.i),"
    "    '[]'::jsonb) FROM jsonb_array_elements(e.v) WITH ORDINALITY AS a (v, i)"
    "    WHERE jsonb_typeof(a.v) <> 'object' OR NOT (a.v ? 'id') OR (a.v ->> 'id') NOT IN"
    "     (SELECT id::text FROM src WHERE status = 'suppressed'))"
    "   ELSE e.v END)"
    "   FROM jsonb_each(CASE WHEN $8::jsonb ? 'rejected' THEN $8::jsonb"
    "    ELSE $8::jsonb || '{\"rejected\": []}'::jsonb END) AS e (k, v)) END,"
    "  (SELECT jsonb_object_agg(id::text, status) FROM src WHERE status <> 'suppressed'))"
    " WHERE $5::text IS NOT NULL AND (SELECT nok FROM live) > 0"
    " ON CONFLICT (tenant_id, key) DO UPDATE SET request_hash = EXCLUDED.request_hash,"
    "  status_code = EXCLUDED.status_code, response = EXCLUDED.response, created_at = now()"
    "  WHERE k.created_at <= now() - " IDEM_TTL_SQL " RETURNING 1"
    "), go AS ("
    " SELECT ($5::text IS NULL OR (SELECT nok FROM live) = 0 OR EXISTS (SELECT 1 FROM idem))"
    "  AS ok"
    "), batch AS ("
    " INSERT INTO batches (id, tenant_id, accepted, rejected)"
    " SELECT $2::uuid, $1::uuid, $3::int - (SELECT nsup FROM live), $4::int + (SELECT nsup FROM "
    "live)"
    " WHERE $2::uuid IS NOT NULL AND (SELECT ok FROM go) AND (SELECT nok FROM live) > 0"
    " RETURNING id"
    "), content AS ("
    " INSERT INTO message_content (id, tenant_id, batch_id, from_addr, from_name,"
    "  to_addr, to_name, cc, bcc, reply_to, subject, text_body, html_body, template_id, variables,"
    "  headers, tags, metadata, esp_route, send_at, tracking, suppress_key)"
    " SELECT id, $1::uuid, $2::uuid, from_addr, from_name, to_addr, to_name,"
    "  COALESCE(cc, '[]'), COALESCE(bcc, '[]'), reply_to, COALESCE(subject, ''), text_body,"
    "  html_body, template_id, variables, COALESCE(headers, '{}'), COALESCE(tags::text[], '{}'),"
    "  COALESCE(metadata, '{}'), esp_route, to_timestamp(send_at), tracking, skey"
    " FROM src WHERE (SELECT ok FROM go) AND status <> 'suppressed'"
    "  AND (SELECT mailerd_lock_tenants(ARRAY[$1::uuid]))"
    "), msg AS ("
    " INSERT INTO deliveries (message_id, tenant_id, status, priority, next_attempt_at)"
    " SELECT id, $1::uuid, status, priority,"
    "  CASE WHEN status = 'scheduled' THEN to_timestamp(send_at) END"
    " FROM src WHERE (SELECT ok FROM go) AND status <> 'suppressed'"
    " RETURNING message_id AS id, status"
    "), ev AS ("
    " INSERT INTO events (id, tenant_id, message_id, type)"
    " SELECT eid, $1::uuid, id, status FROM src"
    " WHERE (SELECT ok FROM go) AND status <> 'suppressed'"
    ")"
    " SELECT (SELECT ok FROM go), m.id, m.status FROM (SELECT 1) AS one LEFT JOIN ("
    "  SELECT id, status FROM msg UNION ALL SELECT id, status FROM src"
    "  WHERE status = 'suppressed' AND (SELECT ok FROM go)) AS m ON true";

/*
 * The units without an Idempotency-Key or a batch (single sends, the common case)
 * of one flush go in ONE statement: the same inserts, with the tenant per row.
 * Planning and executing one statement of 500 rows costs a fraction of 500
 * one-row statements. If it fails, its units are sent again one statement each,
 * which tells the bad unit from the good ones. Suppressed recipients are refused
 * as in msg_accept and come back last. tl locks the flush's distinct tenants
 * once (see msg_accept).
 */
static const char acc_multi_sql[] =
    "WITH src AS MATERIALIZED ("
    " SELECT u.*, CASE"
    "  WHEN u.skey IS NOT NULL AND EXISTS (SELECT 1 FROM suppressions s"
    "   WHERE s.tenant_id = u.tenant_id AND s.address = u.skey"
    "   AND (s.expires_at IS NULL OR s.expires_at > now())) THEN 'suppressed'"
    "  WHEN u.send_at IS NOT NULL AND to_timestamp(u.send_at) > now() THEN 'scheduled'"
    "  ELSE 'queued' END AS status"
    " FROM unnest((SELECT $1::uuid[]), (SELECT $2::uuid[]), (SELECT $3::uuid[]),"
    "  (SELECT $4::text[]), (SELECT $5::text[]), (SELECT $6::text[]), (SELECT $7::text[]),"
    "  (SELECT $8::jsonb[]), (SELECT $9::jsonb[]), (SELECT $10::text[]), (SELECT $11::text[]),"
    "  (SELECT $12::text[]), (SELECT $13::text[]), (SELECT $14::uuid[]), (SELECT $15::jsonb[]),"
    "  (SELECT $16::jsonb[]), (SELECT $17::text[]), (SELECT $18::jsonb[]), (SELECT $19::text[]),"
    "  (SELECT $20::float8[]), (SELECT $21::text[]), (SELECT $22::text[]), (SELECT $23::jsonb[]))"
    "  AS u (tenant_id, id, eid, from_addr, from_name, to_addr, to_name, cc, bcc, reply_to,"
    "   subject, text_body, html_body, template_id, variables, headers, tags, metadata, priority,"
    "   send_at, esp_route, skey, tracking)"
    "), tl AS ("
    " SELECT mailerd_lock_tenants(array_agg(DISTINCT tenant_id)) AS ok FROM src"
    "  WHERE status <> 'suppressed'"
    "), content AS ("
    " INSERT INTO message_content (id, tenant_id, from_addr, from_name,"
    "  to_addr, to_name, cc, bcc, reply_to, subject, text_body, html_body, template_id, variables,"
    "  headers, tags, metadata, esp_route, send_at, tracking, suppress_key)"
    " SELECT id, tenant_id, from_addr, from_name, to_addr, to_name,"
    "  COALESCE(cc, '[]'), COALESCE(bcc, '[]'), reply_to, COALESCE(subject, ''), text_body,"
    "  html_body, template_id, variables, COALESCE(headers, '{}'), COALESCE(tags::text[], '{}'),"
    "  COALESCE(metadata, '{}'), esp_route, to_timestamp(send_at), tracking, skey"
    " FROM src WHERE status <> 'suppressed' AND (SELECT ok FROM tl)"
    "), msg AS ("
    " INSERT INTO deliveries (message_id, tenant_id, status, priority, next_attempt_at)"
    " SELECT id, tenant_id, status, priority,"
    "  CASE WHEN status = 'scheduled' THEN to_timestamp(send_at) END"
    " FROM src WHERE status <> 'suppressed' RETURNING message_id AS id, status"
    "), ev AS ("
    " INSERT INTO events (id, tenant_id, message_id, type)"
    " SELECT eid, tenant_id, id, status FROM src WHERE status <> 'suppressed'"
    ")"
    " SELECT id, status FROM msg"
    " UNION ALL SELECT id, status FROM src WHERE status = 'suppressed'";
/* the tenants, then the message arrays but the refusal entries (no answer is stored) */
#define ACC_MULTI_NPARAMS (1 + P_REJECT - P_IDS)

/* ---- the other statements ----------------------------------------------------------- */

typedef struct md_msg_stmt_s {
    const char *name;
    int nparams;
    const char *sql;
} md_msg_stmt_t;

/* SQL reads better laid out by hand. */
/* clang-format off */
#define EVENTS_JSON                                                                                \
    "COALESCE((SELECT json_agg(json_build_object('id', e.id, 'type', e.type, 'data', e.data,"     \
    " 'created_at', " TS("e.created_at") ") ORDER BY e.created_at, e.id)"                          \
    " FROM events e WHERE e.message_id = m.id AND e.tenant_id = m.tenant_id"                       \
    " AND e.created_at >= m.created_at), '[]'::json)"

#define BATCH_COUNTS                                                                               \
    "COALESCE((SELECT json_object_agg(status, n) FROM (SELECT status, count(*) AS n"               \
    " FROM messages WHERE batch_id = b.id AND tenant_id = b.tenant_id GROUP BY status) s),"        \
    " '{}'::json)"

/* Events of the batch's messages by type: how many, and how many messages had
 * one (unique opens and clicks). */
#define BATCH_EVENTS                                                                               \
    "COALESCE((SELECT json_object_agg(type, json_build_object('total', n, 'messages', u))"         \
    " FROM (SELECT e.type, count(*) AS n, count(DISTINCT e.message_id) AS u"                       \
    " FROM message_content mb JOIN events e ON e.message_id = mb.id"                               \
    " AND e.tenant_id = mb.tenant_id"                                                              \
    " AND e.created_at >= mb.created_at"                                                           \
    " WHERE mb.batch_id = b.id AND mb.tenant_id = b.tenant_id GROUP BY e.type) x), '{}'::json)"

static const md_msg_stmt_t stmts[] = {
    {"msg_accept", ACC_NPARAMS, acc_sql},
    {"msg_accept_multi", ACC_MULTI_NPARAMS, acc_multi_sql},
    /* The stored answer of a key whose insert found a live row (no TTL filter:
     * the accept statement just saw the row as live). */
    {"msg_idem_read", 2,
     "SELECT request_hash, status_code, response::text FROM idempotency_keys"
     " WHERE tenant_id = $1::uuid AND key = $2::text"},
    {"msg_idem_get", 2,
     "SELECT request_hash, status_code, response::text FROM idempotency_keys"
     " WHERE tenant_id = $1::uuid AND key = $2::text AND created_at > now() - " IDEM_TTL_SQL},
    {"msg_idem_cleanup", 0,
     "DELETE FROM idempotency_keys WHERE (tenant_id, key) IN (SELECT tenant_id, key"
     " FROM idempotency_keys WHERE created_at <= now() - " IDEM_TTL_SQL " LIMIT " CLEANUP_LIMIT_STR
     ")"},
    /* Events are partitioned by created_at; none is older than its message, which
     * lets the executor skip the partitions before the message was made. */
    {"msg_get", 2,
     "SELECT json_build_object(" MSG_JSON_FIELDS("m.status", "m.updated_at")
     ", 'events', " EVENTS_JSON ")::text"
     " FROM messages m WHERE m.tenant_id = $1::uuid AND m.id = $2::uuid"},
    /* One statement: the status change and its event commit together. The
     * dispatcher's claim is conditional on the status too, so a message canceled
     * here is never sent. */
    {"msg_cancel", 3,
     "WITH c AS (UPDATE deliveries SET status = 'canceled', updated_at = now()"
     " WHERE tenant_id = $1::uuid AND message_id = $2::uuid"
     " AND status IN ('accepted', 'queued', 'scheduled', 'deferred')"
     " RETURNING message_id AS id, tenant_id, updated_at"
     "), ev AS (INSERT INTO events (id, tenant_id, message_id, type)"
     " SELECT $3::uuid, tenant_id, id, 'canceled' FROM c)"
     " SELECT c.id IS NOT NULL, json_build_object("
     MSG_JSON_FIELDS("CASE WHEN c.id IS NULL THEN m.status ELSE 'canceled' END",
                     "COALESCE(c.updated_at, m.updated_at)") ")::text"
     " FROM messages m LEFT JOIN c ON c.id = m.id"
     " WHERE m.tenant_id = $1::uuid AND m.id = $2::uuid"},
    {"msg_batch_get", 2,
     "SELECT json_build_object('id', b.id, 'created_at', " TS("b.created_at")
     ", 'accepted', b.accepted, 'rejected', b.rejected, 'counts', " BATCH_COUNTS
     ", 'events', " BATCH_EVENTS ")::text"
     " FROM batches b WHERE b.tenant_id = $1::uuid AND b.id = $2::uuid"},
};
/* clang-format on */

/* md_messages_list: one statement per combination of the optional filters
 * (status, batch_id, tag), so each has a plan that uses its index; the cursor
 * and since are range bounds on (tenant_id, id) that are always present.
 * "sending" has statements of its own (LIST_F_SENDING, no parameter): those
 * rows are in deliveries_lease_idx, not in deliveries_tenant_status_idx
 * (migration 0008), and a plan can use a partial index only when the query's
 * own conditions imply its predicate. */
#define LIST_F_STATUS  1
#define LIST_F_BATCH   2
#define LIST_F_TAG     4
#define LIST_F_SENDING 8
#define LIST_NSTMTS    16

/* The statements with a tag filter are not prepared: they go as text, planned
 * for their parameters on every call. A prepared one soon runs its generic
 * plan, which cannot know how common the tag is and walks the tenant's ids
 * newest first, filtering: for a rare tag (or none at all) that reads every
 * message of the tenant (50 ms for 200,000). Planned with the tag, a rare one
 * is found through message_content_tags_idx, a common one still by walking
 * the ids. Planning costs well under a millisecond; listings are not a hot
 * path. Built once by prepare_all, with the other variants' text. */
static char *list_sql[LIST_NSTMTS];

/* ---- module state -------------------------------------------------------------------- */

typedef struct md_msg_unit_s md_msg_unit_t;
typedef struct md_msg_defer_s md_msg_defer_t;

struct md_msg_unit_s {
    md_msg_unit_t *next; /* pending list */
    md_accept_cb cb;
    void *ctx;
    size_t n;
    md_buf_t params;                 /* the parameters: texts (NUL-terminated) or binary arrays */
    const char *values[ACC_NPARAMS]; /* into params (NULL: SQL NULL) */
    int lengths[ACC_NPARAMS];        /* of the binary ones */
    int formats[ACC_NPARAMS];        /* 1: binary array (text[] and jsonb[]), 0: text */
    char tenant[MD_UUID_STRLEN + 1];
    char *key;                       /* Idempotency-Key, or NULL */
    char hash_hex[2 + 64 + 1];       /* "\x" + hex, as bytea prints */
    char (*ids)[MD_UUID_STRLEN + 1]; /* n */
    int *priority;                   /* n */
    double *send_at;                 /* n */
    const char **status;             /* n results */
    const char *error;               /* result; NULL committed */
    int attempt;                     /* 0 first flush, then regroups; GC_ALONE: alone */
    bool plain;                      /* no key, no batch: may share msg_accept_multi */
    bool bad_id;                     /* a malformed id: refused, never sent */
};

struct md_msg_defer_s {
    md_msg_defer_t *next;
    void (*run)(void *arg);
    void *arg;
};

typedef struct md_msg_gc_s {
    struct ev_loop *loop;
    md_pg_pool_t *pool;
    double window;
    size_t max_rows;
    int shutting;
    md_msg_unit_t *head, **tail; /* pending, in arrival order */
    size_t npending, pending_rows;
    ev_timer flush_timer; /* the window */
    ev_timer defer_timer; /* callbacks known at once run from here */
    md_msg_defer_t *defer_head, **defer_tail;
    md_periodic_t cleanup; /* expired idempotency keys */
    md_messages_stats_t stats;
} md_msg_gc_t;

static md_msg_gc_t *gc;

typedef struct md_msg_flush_s {
    md_msg_unit_t **units;
    size_t nunits, rows;
    size_t nmerged; /* units[0..nmerged) are statement 0 (msg_accept_multi); the
                     * others are one statement each, in order */
    int attempt;
    ev_tstamp t0;
} md_msg_flush_t;

static void gc_flush(md_msg_unit_t **units, size_t nunits, int attempt, bool merge);
static void unit_finish(md_msg_unit_t *u);

/* ---- small helpers -------------------------------------------------------------------- */

/* Canonical text form only (8-4-4-4-12 hex): anything else is "not found" without
 * asking the server, which would answer with an SQL error. */
static bool
uuid_ok(const char *s)
{
    if (s == NULL)
        return false;
    for (int i = 0; i < MD_UUID_STRLEN; i++) {
        char c = s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-')
                return false;
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) {
            return false;
        }
    }
    return s[MD_UUID_STRLEN] == '\0';
}

/* bytea's text output ("\x" + hex) of a 32-byte hash into out; false if it is not one. */
static bool
bytea32_decode(const char *s, unsigned char *out)
{
    if (s == NULL || s[0] != '\\' || s[1] != 'x' || strlen(s) != 66)
        return false;
    for (size_t i = 0; i < 32; i++) {
        int hi = md_hexval(s[2 + 2 * i]), lo = md_hexval(s[3 + 2 * i]);
        if (hi < 0 || lo < 0)
            return false;
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    return true;
}

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Cursor: the 16 bytes of a uuid, base64url without padding (22 characters). */
static void
cursor_encode(const char *uuid, char out[23])
{
    unsigned char b[16];
    size_t j = 0;
    for (size_t i = 0; i < MD_UUID_STRLEN && j < 16; i++) {
        if (uuid[i] == '-')
            continue;
        b[j++] = (unsigned char)(md_hexval(uuid[i]) << 4 | md_hexval(uuid[i + 1]));
        i++;
    }
    size_t o = 0;
    for (size_t i = 0; i < 16; i += 3) {
        uint32_t v = (uint32_t)b[i] << 16;
        if (i + 1 < 16)
            v |= (uint32_t)b[i + 1] << 8;
        if (i + 2 < 16)
            v |= b[i + 2];
        out[o++] = b64url[(v >> 18) & 63];
        out[o++] = b64url[(v >> 12) & 63];
        if (i + 1 < 16)
            out[o++] = b64url[(v >> 6) & 63];
        if (i + 2 < 16)
            out[o++] = b64url[v & 63];
    }
    out[o] = '\0';
}

/* The uuid text of a cursor into out[37]; false if it is not one of ours. */
static bool
cursor_decode(const char *c, char *out)
{
    if (c == NULL || strlen(c) != 22)
        return false;
    unsigned char b[18];
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < 22; i++) {
        const char *p = strchr(b64url, c[i]);
        if (c[i] == '\0' || p == NULL)
            return false;
        acc = acc << 6 | (uint32_t)(p - b64url);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            b[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (o != 16 || acc != 0) /* the 4 spare bits must be zero: one text per id */
        return false;
    static const char d[] = "0123456789abcdef";
    size_t k = 0;
    for (size_t i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[k++] = '-';
        out[k++] = d[b[i] >> 4];
        out[k++] = d[b[i] & 15];
    }
    out[k] = '\0';
    return true;
}

/* An element of a PostgreSQL array literal: NULL, or a double-quoted string with
 * '"' and '\' escaped (anything else, braces and newlines included, is literal). */
static void
arr_elem(md_buf_t *b, const char *s, bool first)
{
    if (!first)
        md_buf_append(b, ",", 1);
    if (s == NULL) {
        md_buf_append(b, "NULL", 4);
        return;
    }
    md_buf_append(b, "\"", 1);
    /* strcspn finds the next character to escape a vector at a time: bodies are
     * most of what a unit's arrays carry. */
    for (;;) {
        size_t run = strcspn(s, "\"\\");
        md_buf_append(b, s, run);
        s += run;
        if (*s == '\0')
            break;
        md_buf_append(b, "\\", 1);
        md_buf_append(b, s, 1);
        s++;
    }
    md_buf_append(b, "\"", 1);
}

/*
 * Arrays of text and jsonb go in PostgreSQL's binary array format: the bodies
 * are most of a unit's bytes, and as text literals PostgreSQL's array_in scans
 * and unescapes them a character at a time (13% of its time per accepted message
 * in a profile). The format (array_recv): ndim, has-nulls flag, element type OID,
 * then per dimension its length and lower bound, all big-endian int32; then per
 * element its length (-1: NULL) and its bytes (jsonb's: version 1, then the
 * text). uuid and float8 arrays stay text literals: short, nothing to unescape.
 */
#define BARR_HEADER 20
#define OID_TEXT    25
#define OID_JSONB   3802
#define OID_UUID    2950

static void
be32(md_buf_t *b, uint32_t v)
{
    unsigned char x[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 8), (unsigned char)v};
    md_buf_append(b, x, 4);
}

static void
be32_at(char *p, uint32_t v)
{
    p[0] = (char)(v >> 24);
    p[1] = (char)(v >> 16);
    p[2] = (char)(v >> 8);
    p[3] = (char)v;
}

static void
barr_begin(md_buf_t *b, uint32_t oid, size_t n)
{
    be32(b, 1);
    be32(b, 0); /* no NULL yet: barr_elem sets it */
    be32(b, oid);
    be32(b, (uint32_t)n);
    be32(b, 1);
}

/* One element of the array whose header starts at b->pos + hdr. A uuid goes as
 * its 16 bytes (uuid_recv copies them; uuid_in parsed the text, a tenth of the
 * server's time reading a flush's parameters); it must pass uuid_ok. */
static void
barr_elem(md_buf_t *b, size_t hdr, uint32_t oid, const char *s)
{
    if (s == NULL) {
        be32(b, UINT32_MAX);
        be32_at(b->pos + hdr + 4, 1);
        return;
    }
    if (oid == OID_UUID) {
        unsigned char u[16];
        for (int i = 0, j = 0; j < 16; j++, i += 2) {
            if (s[i] == '-')
                i++;
            u[j] = (unsigned char)(md_hexval(s[i]) << 4 | md_hexval(s[i + 1]));
        }
        be32(b, 16);
        md_buf_append(b, u, 16);
        return;
    }
    size_t n = strlen(s);
    if (oid == OID_JSONB) {
        be32(b, (uint32_t)n + 1);
        md_buf_append(b, "\1", 1);
    } else {
        be32(b, (uint32_t)n);
    }
    md_buf_append(b, s, n);
}

/* The elements of m's tags as an array literal's, without the braces. */
static void
tags_literal(md_buf_t *b, const md_msg_new_t *m)
{
    for (size_t t = 0; t < m->ntags; t++)
        arr_elem(b, m->tags[t] ? m->tags[t] : "", t == 0);
}

/* [{"address": ..., "name": ...}, ...] */
static void
addr_list_json(md_buf_t *b, const md_msg_addr_t *a, size_t n)
{
    md_buf_append(b, "[", 1);
    for (size_t i = 0; i < n; i++) {
        if (i)
            md_buf_append(b, ",", 1);
        md_buf_append_str(b, "{\"address\":\"");
        const char *addr = a[i].address ? a[i].address : "";
        md_buf_append_json_escaped(b, addr, strlen(addr));
        md_buf_append_str(b, "\",\"name\":");
        if (a[i].name) {
            md_buf_append(b, "\"", 1);
            md_buf_append_json_escaped(b, a[i].name, strlen(a[i].name));
            md_buf_append(b, "\"", 1);
        } else {
            md_buf_append(b, "null", 4);
        }
        md_buf_append(b, "}", 1);
    }
    md_buf_append(b, "]", 1);
}

/* ---- deferred callbacks ------------------------------------------------------------ */

static void
defer_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    md_unused(loop);
    md_unused(t);
    md_unused(revents);
    md_msg_gc_t *g = gc;
    if (g == NULL)
        return;
    /* Take the list: a run may defer more, which then waits for the next pass. */
    md_msg_defer_t *d = g->defer_head;
    g->defer_head = NULL;
    g->defer_tail = &g->defer_head;
    while (d) {
        md_msg_defer_t *next = d->next;
        d->run(d->arg);
        free(d);
        d = next;
    }
}

/* Runs run(arg) from the loop, on its next pass: for answers known before the
 * call that asked has returned. */
static void
defer(void (*run)(void *), void *arg)
{
    md_msg_defer_t *d = md_xcalloc(1, sizeof(*d));
    d->run = run;
    d->arg = arg;
    *gc->defer_tail = d;
    gc->defer_tail = &d->next;
    if (!ev_is_active(&gc->defer_timer)) {
        ev_timer_set(&gc->defer_timer, 0., 0.);
        ev_timer_start(gc->loop, &gc->defer_timer);
    }
}

/* ---- accept: building a unit ----------------------------------------------------------- */

static void
unit_free(md_msg_unit_t *u)
{
    md_buf_free(&u->params);
    free(u->key);
    free(u->ids);
    free(u->priority);
    free(u->send_at);
    free(u->status);
    free(u);
}

/* Builds the unit's parameters (copies: the caller's strings may go as soon as
 * the unit is retried or committed). Returns NULL on an argument error. */
static md_msg_unit_t *
unit_build(const md_accept_t *a)
{
    md_msg_unit_t *u = md_xcalloc(1, sizeof(*u));
    size_t off[ACC_NPARAMS];
    const size_t NONE = SIZE_MAX;
    md_buf_t *b = &u->params;
    size_t n = a->n;
    md_buf_init(b);
    md_buf_reserve(b, 1024 + n * 1024);
    u->n = n;
    u->ids = md_xcalloc(n ? n : 1, sizeof(*u->ids));
    u->priority = md_xcalloc(n ? n : 1, sizeof(*u->priority));
    u->send_at = md_xcalloc(n ? n : 1, sizeof(*u->send_at));
    u->status = md_xcalloc(n ? n : 1, sizeof(*u->status));
    md_strlcpy(u->tenant, a->tenant_id, sizeof(u->tenant));

#define PARAM_BEGIN(i) (off[i] = md_buf_len(b))
#define PARAM_END()    md_buf_append(b, "", 1)
#define PARAM_STR(i, s)                                                                            \
    do {                                                                                           \
        if ((s) == NULL) {                                                                         \
            off[i] = NONE;                                                                         \
        } else {                                                                                   \
            PARAM_BEGIN(i);                                                                        \
            md_buf_append_str(b, (s));                                                             \
            PARAM_END();                                                                           \
        }                                                                                          \
    } while (0)
#define PARAM_BARR(i, oid, expr)                                                                   \
    do {                                                                                           \
        PARAM_BEGIN(i);                                                                            \
        barr_begin(b, (oid), n);                                                                   \
        for (size_t k = 0; k < n; k++) {                                                           \
            const md_msg_new_t *m = &a->msgs[k];                                                   \
            md_unused(m);                                                                          \
            barr_elem(b, off[i], (oid), (expr));                                                   \
        }                                                                                          \
        u->formats[i] = 1;                                                                         \
        u->lengths[i] = (int)(md_buf_len(b) - off[i]);                                             \
    } while (0)
#define PARAM_TEXTS(i, expr) PARAM_BARR(i, OID_TEXT, expr)
#define PARAM_JSONS(i, expr) PARAM_BARR(i, OID_JSONB, expr)
#define PARAM_UUIDS(i, expr) PARAM_BARR(i, OID_UUID, expr)

    PARAM_STR(P_TENANT, a->tenant_id);
    PARAM_STR(P_BATCH, a->batch_id);
    PARAM_BEGIN(P_BATCH_ACCEPTED);
    md_buf_printf(b, "%zu", n);
    PARAM_END();
    PARAM_BEGIN(P_BATCH_REJECTED);
    md_buf_printf(b, "%d", a->batch_rejected > 0 ? a->batch_rejected : 0);
    PARAM_END();
    if (a->idem_key) {
        u->key = md_xstrdup(a->idem_key);
        u->hash_hex[0] = '\\';
        u->hash_hex[1] = 'x';
        static const unsigned char zero[32];
        md_hex_encode(u->hash_hex + 2, a->idem_hash ? a->idem_hash : zero, 32);
        PARAM_STR(P_IDEM_KEY, a->idem_key);
        PARAM_STR(P_IDEM_HASH, u->hash_hex);
        PARAM_BEGIN(P_IDEM_STATUS);
        md_buf_printf(b, "%d", a->idem_status);
        PARAM_END();
        PARAM_STR(P_IDEM_RESPONSE, a->idem_response_json ? a->idem_response_json : "null");
    } else {
        off[P_IDEM_KEY] = off[P_IDEM_HASH] = off[P_IDEM_STATUS] = off[P_IDEM_RESPONSE] = NONE;
    }

    char(*eids)[MD_UUID_STRLEN + 1] = md_xcalloc(n ? n : 1, sizeof(*eids));
    /* The tenant and batch ids go as text, the message and template ids as
     * binary uuids, which must be well formed: a malformed one (none of ours)
     * makes the unit refused, its ids written as NULL meanwhile. */
    u->bad_id = !uuid_ok(a->tenant_id) || (a->batch_id && !uuid_ok(a->batch_id));
    for (size_t k = 0; k < n; k++) {
        u->bad_id = u->bad_id || !uuid_ok(a->msgs[k].id) ||
                    (a->msgs[k].template_id && !uuid_ok(a->msgs[k].template_id));
        md_strlcpy(u->ids[k], a->msgs[k].id, sizeof(u->ids[k]));
        md_uuid7(eids[k]);
        u->priority[k] = a->msgs[k].priority;
        u->send_at[k] = a->msgs[k].send_at;
    }
    md_buf_t tmp;
    md_buf_init(&tmp);

    PARAM_UUIDS(P_IDS, u->bad_id ? NULL : m->id);
    PARAM_UUIDS(P_EVENT_IDS, eids[k]);
    PARAM_TEXTS(P_FROM_ADDR, m->from.address);
    PARAM_TEXTS(P_FROM_NAME, m->from.name);
    PARAM_TEXTS(P_TO_ADDR, m->to.address);
    PARAM_TEXTS(P_TO_NAME, m->to.name);
    /* Per-element JSON and literals are built in tmp, then escaped as elements. */
#define TMP_RESET() (md_buf_reset(&tmp))
#define TMP_CSTR()  (md_buf_append(&tmp, "", 1), (const char *)tmp.pos)
    /* None is NULL, which the statements store as [] without parsing it per row. */
    PARAM_JSONS(P_CC,
                m->ncc ? (TMP_RESET(), addr_list_json(&tmp, m->cc, m->ncc), TMP_CSTR()) : NULL);
    PARAM_JSONS(P_BCC,
                m->nbcc ? (TMP_RESET(), addr_list_json(&tmp, m->bcc, m->nbcc), TMP_CSTR()) : NULL);
    PARAM_TEXTS(P_REPLY_TO, m->reply_to);
    PARAM_TEXTS(P_SUBJECT, m->subject);
    PARAM_TEXTS(P_TEXT, m->text);
    PARAM_TEXTS(P_HTML, m->html);
    PARAM_UUIDS(P_TEMPLATE, u->bad_id ? NULL : m->template_id);
    PARAM_JSONS(P_VARIABLES, m->variables_json);
    PARAM_JSONS(P_HEADERS, m->headers_json);
    /* Each message's tags as the text of an array literal ("{a,b}"), which the
     * statement casts to text[]. */
    PARAM_TEXTS(P_TAGS, (TMP_RESET(), md_buf_append(&tmp, "{", 1), tags_literal(&tmp, m),
                         md_buf_append(&tmp, "}", 1), TMP_CSTR()));
    PARAM_JSONS(P_METADATA, m->metadata_json);
    PARAM_TEXTS(P_PRIORITY, m->priority == MD_PRIORITY_BULK ? "bulk" : "transactional");
    PARAM_BEGIN(P_SEND_AT);
    md_buf_append(b, "{", 1);
    for (size_t k = 0; k < n; k++) {
        if (k)
            md_buf_append(b, ",", 1);
        if (a->msgs[k].send_at > 0)
            md_buf_printf(b, "%.6f", a->msgs[k].send_at);
        else
            md_buf_append(b, "NULL", 4);
    }
    md_buf_append(b, "}", 1);
    PARAM_END();
    PARAM_TEXTS(P_ESP_ROUTE, m->esp_route);
    PARAM_TEXTS(P_SUPPRESS_KEY, m->suppress_key);
    PARAM_JSONS(P_TRACKING, m->tracking_json);
    PARAM_JSONS(P_REJECT, m->refused_json);
#undef TMP_RESET
#undef TMP_CSTR
#undef PARAM_BEGIN
#undef PARAM_END
#undef PARAM_STR
#undef PARAM_BARR
#undef PARAM_TEXTS
#undef PARAM_JSONS
#undef PARAM_UUIDS

    md_buf_free(&tmp);
    free(eids);
    for (int i = 0; i < ACC_NPARAMS; i++)
        u->values[i] = off[i] == NONE ? NULL : b->pos + off[i];
    u->plain = a->idem_key == NULL && a->batch_id == NULL && n > 0;
    return u;
}

/* ---- accept: flushing ------------------------------------------------------------------- */

static void
flush_free(md_msg_flush_t *f)
{
    free(f->units);
    free(f);
}

/* Failure known at send time (pool full or down): the units learn it from the loop. */
static void
unit_fail_deferred(void *arg)
{
    unit_finish(arg);
}

static void
unit_fail_later(md_msg_unit_t *u, const char *err)
{
    u->error = err;
    defer(unit_fail_deferred, u);
}

/* Reads the row of a key whose insert found a live one: replay (same request)
 * or conflict (another request under the same key). */
static void
idem_read_cb(void *ctx, const md_pg_result_t *res)
{
    md_msg_unit_t *u = ctx;
    md_accept_result_t r = {0};
    if (res->error) {
        r.error = res->error;
    } else if (PQntuples(res->res) < 1) {
        /* The row went between our statement and this read (a cleanup of an
         * expired row that our insert could not take over yet): try once more. */
        if (u->attempt != GC_ALONE && gc && !gc->shutting) {
            gc_flush(&u, 1, GC_ALONE, false);
            return;
        }
        r.error = "idempotency_conflict";
    } else {
        const char *h = PQgetvalue(res->res, 0, 0);
        if (strcmp(h, u->hash_hex) == 0) {
            r.error = "idempotency_replay";
            r.replay_status = atoi(PQgetvalue(res->res, 0, 1));
            r.replay_response = PQgetvalue(res->res, 0, 2);
        } else {
            r.error = "idempotency_conflict";
        }
    }
    if (gc) {
        if (r.error && strcmp(r.error, "idempotency_replay") == 0)
            gc->stats.replays++;
        else if (r.error && strcmp(r.error, "idempotency_conflict") == 0)
            gc->stats.conflicts++;
        else
            gc->stats.failed++;
    }
    u->cb(u->ctx, &r);
    unit_free(u);
}

static void
idem_read(md_msg_unit_t *u)
{
    const char *vals[2] = {u->tenant, u->key};
    md_pg_query_t q = {.stmt = "msg_idem_read", .nparams = 2, .values = vals};
    if (gc == NULL || gc->pool == NULL || md_pg_exec(gc->pool, &q, idem_read_cb, u) != MD_OK) {
        u->error = md_pg_err_unavailable;
        unit_finish(u);
    }
}

/* Runs u's callback with its outcome and frees it. */
static void
unit_finish(md_msg_unit_t *u)
{
    md_accept_result_t r = {0};
    r.error = u->error;
    r.status = u->error ? NULL : u->status;
    if (gc) {
        if (u->error) {
            gc->stats.failed++;
        } else {
            gc->stats.units++;
            for (size_t k = 0; k < u->n; k++) /* refused recipients were not stored */
                gc->stats.accepted += u->status[k] && strcmp(u->status[k], "suppressed") != 0;
        }
    }
    u->cb(u->ctx, &r);
    unit_free(u);
}

static const char *
status_const(const char *s)
{
    if (strcmp(s, "queued") == 0)
        return "queued";
    if (strcmp(s, "scheduled") == 0)
        return "scheduled";
    if (strcmp(s, "suppressed") == 0)
        return "suppressed";
    return NULL;
}

/* Reads unit u's statement result: its statuses, or a key conflict.
 * Returns 1 committed, 0 key conflict (ask the stored row), -1 broken result. */
static int
unit_read_result(md_msg_unit_t *u, const PGresult *r)
{
    int rows = r ? PQntuples(r) : 0;
    if (rows < 1 || PQnfields(r) < 3)
        return -1;
    if (PQgetvalue(r, 0, 0)[0] != 't')
        return 0;
    size_t got = 0;
    for (int j = 0; j < rows; j++) {
        if (PQgetisnull(r, j, 1))
            continue;
        const char *id = PQgetvalue(r, j, 1);
        /* Rows come back in insert order in practice: try the same index first. */
        size_t k = (size_t)j < u->n && strcmp(u->ids[j], id) == 0 ? (size_t)j : u->n;
        if (k == u->n) {
            for (k = 0; k < u->n; k++)
                if (strcasecmp(u->ids[k], id) == 0)
                    break;
        }
        if (k == u->n || u->status[k] != NULL)
            return -1;
        u->status[k] = status_const(PQgetvalue(r, j, 2));
        if (u->status[k] == NULL)
            return -1;
        got++;
    }
    return got == u->n ? 1 : -1;
}

/* The statement of f->units[i]. */
static size_t
stmt_of(const md_msg_flush_t *f, size_t i)
{
    return i < f->nmerged ? 0 : i - f->nmerged + (f->nmerged ? 1 : 0);
}

/* The unit of statement si, or SIZE_MAX for the merged statement. */
static size_t
unit_of_stmt(const md_msg_flush_t *f, size_t si)
{
    if (f->nmerged == 0)
        return si;
    return si == 0 ? SIZE_MAX : f->nmerged + si - 1;
}

/* Reads msg_accept_multi's rows (id, status) into the statuses of the merged
 * units. Returns 1, or -1 when a row does not fit (then none can be trusted). */
static int
merged_read_result(md_msg_flush_t *f, const PGresult *r)
{
    size_t want = 0;
    for (size_t i = 0; i < f->nmerged; i++)
        want += f->units[i]->n;
    if (r == NULL || PQnfields(r) < 2 || (size_t)PQntuples(r) != want)
        return -1;
    size_t ui = 0, k = 0; /* where the next row is expected: rows come in insert order */
    for (int j = 0; j < PQntuples(r); j++) {
        const char *id = PQgetvalue(r, j, 0);
        md_msg_unit_t *u = NULL;
        if (ui < f->nmerged && strcmp(f->units[ui]->ids[k], id) == 0) {
            u = f->units[ui];
        } else {
            for (ui = 0; ui < f->nmerged && u == NULL; ui++)
                for (k = 0; k < f->units[ui]->n; k++)
                    if (strcasecmp(f->units[ui]->ids[k], id) == 0) {
                        u = f->units[ui];
                        break;
                    }
            if (u == NULL)
                return -1;
            ui--;
        }
        if (u->status[k] != NULL || (u->status[k] = status_const(PQgetvalue(r, j, 1))) == NULL)
            return -1;
        if (++k == u->n) {
            ui++;
            k = 0;
        }
    }
    return 1;
}

/* After COMMIT: queue push for the committed messages, then every callback. */
static void
flush_committed(md_msg_flush_t *f, const md_pg_result_t *res)
{
    md_msg_unit_t **done = md_xcalloc(f->nunits, sizeof(*done));
    size_t ndone = 0, nmsgs = 0;
    int merged_rc = f->nmerged ? merged_read_result(f, res->n ? res->results[0] : NULL) : 1;
    for (size_t i = 0; i < f->nunits; i++) {
        md_msg_unit_t *u = f->units[i];
        size_t si = stmt_of(f, i);
        int rc =
            i < f->nmerged ? merged_rc : unit_read_result(u, si < res->n ? res->results[si] : NULL);
        if (rc == 0) {
            idem_read(u); /* its callback comes from that read */
            continue;
        }
        if (rc < 0) {
            /* Committed, but we cannot tell the caller what: say it failed, loudly. */
            md_logf(MD_LOG_ALERT, 0, MD_LOG_FIELDS(MD_LS("tenant_id", u->tenant)),
                    "group commit: unexpected result for a committed unit");
            u->error = md_pg_err_sql;
            md_queue_suspect(); /* committed, and not pushed */
        } else {
            nmsgs += u->n;
        }
        done[ndone++] = u;
    }

    if (nmsgs > 0) {
        const char **ids = md_xcalloc(nmsgs, sizeof(*ids));
        int *prio = md_xcalloc(nmsgs, sizeof(*prio));
        double *at = md_xcalloc(nmsgs, sizeof(*at));
        size_t q = 0;
        for (size_t i = 0; i < ndone; i++) {
            md_msg_unit_t *u = done[i];
            if (u->error)
                continue;
            for (size_t k = 0; k < u->n; k++) {
                if (u->status[k][0] == 's' && u->status[k][1] == 'u') /* suppressed */
                    continue;
                ids[q] = u->ids[k];
                prio[q] = u->priority[k];
                at[q] = u->status[k][1] == 'c' ? u->send_at[k] : 0; /* scheduled */
                q++;
            }
        }
        if (q > 0)
            md_queue_push(ids, prio, at, q);
        free(ids);
        free(prio);
        free(at);
    }
    for (size_t i = 0; i < ndone; i++)
        unit_finish(done[i]);
    free(done);
}

static bool
sqlstate_retry_all(const char *st)
{
    return st && st[0] == '4' && st[1] == '0'; /* serialization failure, deadlock */
}

static void
flush_cb(void *ctx, const md_pg_result_t *res)
{
    md_msg_flush_t *f = ctx;
    md_msg_gc_t *g = gc;
    if (g)
        g->stats.in_flight--;
    if (res->error == NULL) {
        double dt = ev_time() - f->t0;
        if (g) {
            g->stats.commits++;
            g->stats.commit_seconds += dt;
        }
        md_metrics_group_commit((unsigned)f->rows, dt);
        flush_committed(f, res);
        flush_free(f);
        return;
    }

    bool can_retry = g && g->pool && !g->shutting && res->error == md_pg_err_sql;
    if (!can_retry || f->nunits == 1) {
        if (res->error != md_pg_err_sql)
            md_queue_suspect(); /* a lost connection or a timeout: it may have committed */
        if (res->error == md_pg_err_sql)
            md_logf(MD_LOG_WARN, 0,
                    MD_LOG_FIELDS(MD_LS("sqlstate", res->sqlstate ? res->sqlstate : ""),
                                  MD_LS("tenant_id", f->units[0]->tenant),
                                  MD_LI("units", f->nunits)),
                    "accept failed: %s", res->message ? res->message : "");
        for (size_t i = 0; i < f->nunits; i++) {
            f->units[i]->error = res->error;
            unit_finish(f->units[i]);
        }
        flush_free(f);
        return;
    }

    /* A shared transaction failed: find the bad unit and commit the others. */
    bool retry_all = sqlstate_retry_all(res->sqlstate); /* nobody's fault: again, all */
    size_t bad = SIZE_MAX;
    if (!retry_all && res->failed >= 0 && (size_t)res->failed < res->n)
        bad = unit_of_stmt(f, (size_t)res->failed);
    if (!retry_all && f->nmerged && res->failed == 0) {
        /* The merged statement cannot say whose row it was: one statement each. */
        g->stats.retried += f->nunits;
        gc_flush(f->units, f->nunits, f->attempt, false);
        flush_free(f);
        return;
    }
    bool alone = f->attempt >= GC_MAX_REGROUP || (!retry_all && bad >= f->nunits);
    md_msg_unit_t **rest = md_xcalloc(f->nunits, sizeof(*rest));
    size_t nrest = 0;
    for (size_t i = 0; i < f->nunits; i++) {
        if (i == bad) {
            md_logf(MD_LOG_WARN, 0,
                    MD_LOG_FIELDS(MD_LS("sqlstate", res->sqlstate ? res->sqlstate : ""),
                                  MD_LS("tenant_id", f->units[i]->tenant)),
                    "accept failed: %s", res->message ? res->message : "");
            f->units[i]->error = res->error;
            unit_finish(f->units[i]);
        } else {
            rest[nrest++] = f->units[i];
        }
    }
    g->stats.retried += nrest;
    if (alone) {
        for (size_t i = 0; i < nrest; i++)
            gc_flush(&rest[i], 1, GC_ALONE, false);
    } else if (nrest > 0) {
        gc_flush(rest, nrest, f->attempt + 1, false); /* more bad units may hide there */
    }
    free(rest);
    flush_free(f);
}

/* The parameters of msg_accept_multi for units[0..n) into b, vals, lens and fmts:
 * each array is the units' arrays joined (a text literal's elements without
 * its braces; a binary array's elements after its header, the header made anew
 * with the total length and the has-nulls flag of any). */
static void
merged_params(md_msg_unit_t *const *units, size_t n, md_buf_t *b, const char **vals, int *lens,
              int *fmts)
{
    size_t off[ACC_MULTI_NPARAMS];
    size_t rows = 0;
    for (size_t i = 0; i < n; i++)
        rows += units[i]->n;
    off[0] = md_buf_len(b);
    barr_begin(b, OID_UUID, rows);
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < units[i]->n; k++)
            barr_elem(b, off[0], OID_UUID, units[i]->tenant);
    lens[0] = (int)(md_buf_len(b) - off[0]);
    fmts[0] = 1;
    for (int p = P_IDS; p < P_REJECT; p++) {
        int q = 1 + p - P_IDS;
        off[q] = md_buf_len(b);
        fmts[q] = units[0]->formats[p];
        lens[q] = 0;
        if (fmts[q]) {
            const char *h0 = units[0]->values[p];
            bool nulls = false;
            for (size_t i = 0; i < n; i++)
                nulls = nulls || units[i]->values[p][7] != 0;
            be32(b, 1);
            be32(b, nulls);
            md_buf_append(b, h0 + 8, 4); /* the element type */
            be32(b, (uint32_t)rows);
            be32(b, 1);
            for (size_t i = 0; i < n; i++)
                md_buf_append(b, units[i]->values[p] + BARR_HEADER,
                              (size_t)units[i]->lengths[p] - BARR_HEADER);
            lens[q] = (int)(md_buf_len(b) - off[q]);
            continue;
        }
        md_buf_append(b, "{", 1);
        for (size_t i = 0; i < n; i++) {
            const char *v = units[i]->values[p];
            size_t len = strlen(v);
            if (i)
                md_buf_append(b, ",", 1);
            md_buf_append(b, v + 1, len - 2);
        }
        md_buf_append(b, "}", 2);
    }
    for (int i = 0; i < ACC_MULTI_NPARAMS; i++)
        vals[i] = b->pos + off[i];
}

/* Sends units (copied list) as one transaction; with merge, the plain units go
 * in one msg_accept_multi statement. On MD_AGAIN the units fail from the loop
 * with "unavailable" (this may run inside md_messages_accept). */
static void
gc_flush(md_msg_unit_t **units, size_t nunits, int attempt, bool merge)
{
    md_msg_gc_t *g = gc;
    md_msg_flush_t *f = md_xcalloc(1, sizeof(*f));
    f->units = md_xcalloc(nunits, sizeof(*f->units));
    f->nunits = nunits;
    f->attempt = attempt;
    size_t nplain = 0;
    for (size_t i = 0; merge && i < nunits; i++)
        nplain += units[i]->plain;
    if (nplain < 2)
        nplain = 0; /* one plain unit: its own statement is as good */
    /* plain units first (statement 0), then the others in arrival order */
    size_t a = 0, b = nplain;
    for (size_t i = 0; i < nunits; i++) {
        md_msg_unit_t *u = units[i];
        u->attempt = attempt;
        u->next = NULL;
        f->units[nplain && u->plain ? a++ : b++] = u;
        f->rows += u->n;
    }
    f->nmerged = nplain;
    size_t nq = nunits - nplain + (nplain ? 1 : 0);
    md_pg_query_t *qs = md_xcalloc(nq, sizeof(*qs));
    md_buf_t mb;
    const char *mvals[ACC_MULTI_NPARAMS];
    int mlens[ACC_MULTI_NPARAMS], mfmts[ACC_MULTI_NPARAMS];
    md_buf_init(&mb);
    size_t q = 0;
    if (nplain) {
        merged_params(f->units, nplain, &mb, mvals, mlens, mfmts);
        qs[q++] = (md_pg_query_t){.stmt = "msg_accept_multi",
                                  .nparams = ACC_MULTI_NPARAMS,
                                  .values = mvals,
                                  .lengths = mlens,
                                  .formats = mfmts};
    }
    for (size_t i = nplain; i < nunits; i++)
        qs[q++] = (md_pg_query_t){.stmt = "msg_accept",
                                  .nparams = ACC_NPARAMS,
                                  .values = f->units[i]->values,
                                  .lengths = f->units[i]->lengths,
                                  .formats = f->units[i]->formats};
    f->t0 = ev_time();
    int rc = g && g->pool ? md_pg_exec_batch(g->pool, qs, nq, flush_cb, f) : MD_AGAIN;
    free(qs);
    md_buf_free(&mb); /* md_pg_exec_batch copied what it keeps */
    if (rc == MD_OK) {
        md_metrics_group_commit_sent();
        g->stats.flushes++;
        g->stats.in_flight++;
        return;
    }
    for (size_t i = 0; i < nunits; i++)
        unit_fail_later(f->units[i], md_pg_err_unavailable);
    flush_free(f);
}

/* Sends everything pending as one flush (or several, past md_pg_exec_batch's limit). */
static void
gc_flush_pending(md_msg_gc_t *g)
{
    ev_timer_stop(g->loop, &g->flush_timer);
    while (g->head) {
        size_t n = md_min(g->npending, (size_t)GC_MAX_UNITS);
        md_msg_unit_t **units = md_xcalloc(n, sizeof(*units));
        for (size_t i = 0; i < n; i++) {
            units[i] = g->head;
            g->pending_rows -= g->head->n;
            g->head = g->head->next;
        }
        g->npending -= n;
        if (g->head == NULL)
            g->tail = &g->head;
        gc_flush(units, n, 0, true);
        free(units);
    }
}

static void
flush_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    md_unused(loop);
    md_unused(t);
    md_unused(revents);
    if (gc)
        gc_flush_pending(gc);
}

int
md_messages_accept(const md_accept_t *a, md_accept_cb cb, void *ctx)
{
    md_msg_gc_t *g = gc;
    if (a == NULL || cb == NULL || a->tenant_id == NULL || (a->n > 0 && a->msgs == NULL) ||
        a->n > GC_MAX_UNIT_ROWS)
        return MD_ERROR;
    if (g == NULL || g->pool == NULL || g->shutting)
        return MD_AGAIN;
    md_msg_unit_t *u = unit_build(a);
    u->cb = cb;
    u->ctx = ctx;
    /* A malformed id would be an SQL error, or worse: refuse the unit here. */
    if (u->bad_id) {
        unit_fail_later(u, md_pg_err_sql);
        return MD_OK;
    }
    *g->tail = u;
    g->tail = &u->next;
    g->npending++;
    g->pending_rows += u->n;
    if (g->pending_rows >= g->max_rows || g->npending >= GC_MAX_UNITS)
        gc_flush_pending(g);
    else if (!ev_is_active(&g->flush_timer)) {
        ev_timer_set(&g->flush_timer, g->window, 0.);
        ev_timer_start(g->loop, &g->flush_timer);
    }
    return MD_OK;
}

/* ---- reads -------------------------------------------------------------------------- */

enum { R_GET, R_LIST, R_CANCEL, R_BATCH };

typedef struct md_msg_read_s {
    int kind;
    int limit;
    md_json_cb cb;
    void *ctx;
    md_idem_cb icb;
} md_msg_read_t;

static void
read_not_found(void *arg)
{
    md_msg_read_t *rd = arg;
    if (rd->icb)
        rd->icb(rd->ctx, NULL, 0, NULL, 0, NULL);
    else if (rd->kind == R_LIST)
        rd->cb(rd->ctx, NULL, "invalid_cursor");
    else
        rd->cb(rd->ctx, NULL, "not_found");
    free(rd);
}

static json_t *
row_json(const PGresult *r, int row, int col)
{
    json_error_t je;
    json_t *o = json_loads(PQgetvalue(r, row, col), 0, &je);
    if (o == NULL)
        md_logf(MD_LOG_ERROR, 0, MD_LOG_FIELDS(MD_LS("error", je.text)),
                "messages: cannot parse a row's JSON");
    return o;
}

static void
read_cb(void *ctx, const md_pg_result_t *res)
{
    md_msg_read_t *rd = ctx;
    if (res->error) {
        if (res->error == md_pg_err_sql)
            md_logf(MD_LOG_ERROR, 0,
                    MD_LOG_FIELDS(MD_LS("sqlstate", res->sqlstate ? res->sqlstate : "")),
                    "messages read failed: %s", res->message ? res->message : "");
        rd->cb(rd->ctx, NULL, res->error);
        free(rd);
        return;
    }
    const PGresult *r = res->res;
    int rows = PQntuples(r);
    json_t *obj = NULL;
    const char *err = NULL;
    switch (rd->kind) {
    case R_GET:
    case R_BATCH:
        if (rows < 1)
            err = "not_found";
        else if ((obj = row_json(r, 0, 0)) == NULL)
            err = md_pg_err_sql;
        break;
    case R_CANCEL:
        if (rows < 1) {
            err = "not_found";
        } else if ((obj = row_json(r, 0, 1)) == NULL) {
            err = md_pg_err_sql;
        } else if (PQgetvalue(r, 0, 0)[0] != 't') {
            err = "not_cancelable";
        }
        break;
    case R_LIST: {
        json_t *data = json_array();
        int n = md_min(rows, rd->limit);
        for (int i = 0; i < n; i++) {
            json_t *m = row_json(r, i, 1);
            if (m)
                json_array_append_new(data, m);
        }
        obj = json_object();
        json_object_set_new(obj, "data", data);
        if (rows > rd->limit && n > 0) {
            char c[23];
            cursor_encode(PQgetvalue(r, n - 1, 0), c);
            json_object_set_new(obj, "next_cursor", json_string(c));
        } else {
            json_object_set_new(obj, "next_cursor", json_null());
        }
        break;
    }
    }
    rd->cb(rd->ctx, obj, err);
    free(rd);
}

/* Queues a read (or defers not_found when bad is set). */
static int
read_exec(int kind, bool bad, const char *stmt, int nparams, const char *const *vals, md_json_cb cb,
          void *ctx, int limit)
{
    if (cb == NULL)
        return MD_ERROR;
    if (gc == NULL || gc->pool == NULL)
        return MD_AGAIN;
    md_msg_read_t *rd = md_xcalloc(1, sizeof(*rd));
    rd->kind = kind;
    rd->cb = cb;
    rd->ctx = ctx;
    rd->limit = limit;
    if (bad) {
        defer(read_not_found, rd);
        return MD_OK;
    }
    md_pg_query_t q = {.stmt = stmt, .nparams = nparams, .values = vals};
    int rc = md_pg_exec(gc->pool, &q, read_cb, rd);
    if (rc != MD_OK)
        free(rd);
    return rc;
}

int
md_messages_get(const char *tenant_id, const char *id, md_json_cb cb, void *ctx)
{
    const char *vals[2] = {tenant_id, id};
    return read_exec(R_GET, !uuid_ok(tenant_id) || !uuid_ok(id), "msg_get", 2, vals, cb, ctx, 0);
}

int
md_batches_get(const char *tenant_id, const char *id, md_json_cb cb, void *ctx)
{
    const char *vals[2] = {tenant_id, id};
    return read_exec(R_BATCH, !uuid_ok(tenant_id) || !uuid_ok(id), "msg_batch_get", 2, vals, cb,
                     ctx, 0);
}

int
md_messages_cancel(const char *tenant_id, const char *id, md_json_cb cb, void *ctx)
{
    char eid[MD_UUID_STRLEN + 1];
    md_uuid7(eid);
    const char *vals[3] = {tenant_id, id, eid};
    return read_exec(R_CANCEL, !uuid_ok(tenant_id) || !uuid_ok(id), "msg_cancel", 3, vals, cb, ctx,
                     0);
}

/* A uuid below every UUIDv7 made at or after unix time t (its 48-bit ms prefix,
 * the rest zero): "since" becomes a range bound on the (tenant_id, id) index. */
static void
uuid_floor(double t, char out[MD_UUID_STRLEN + 1])
{
    uint64_t ms = t > 0 ? (uint64_t)(t * 1000.0) : 0;
    if (ms > 0xffffffffffffULL)
        ms = 0xffffffffffffULL;
    snprintf(out, MD_UUID_STRLEN + 1, "%08llx-%04llx-0000-0000-000000000000",
             (unsigned long long)(ms >> 16), (unsigned long long)(ms & 0xffff));
}

int
md_messages_list(const char *tenant_id, const md_msg_filter_t *f, md_json_cb cb, void *ctx)
{
    if (f == NULL)
        return MD_ERROR;
    int limit = f->limit < 1 ? 1 : f->limit > 100 ? 100 : f->limit;
    char before[MD_UUID_STRLEN + 1] = "ffffffff-ffff-ffff-ffff-ffffffffffff";
    char after[MD_UUID_STRLEN + 1] = "00000000-0000-0000-0000-000000000000";
    char lim[16];
    bool bad_cursor = f->cursor && !cursor_decode(f->cursor, before);
    if (f->since > 0)
        uuid_floor(f->since, after);
    snprintf(lim, sizeof(lim), "%d", limit + 1);
    const char *vals[7];
    int np = 0;
    unsigned which = 0;
    vals[np++] = tenant_id;
    vals[np++] = before;
    vals[np++] = after;
    vals[np++] = lim;
    if (f->status && strcmp(f->status, "sending") == 0) {
        which |= LIST_F_SENDING;
    } else if (f->status) {
        which |= LIST_F_STATUS;
        vals[np++] = f->status;
    }
    if (f->batch_id) {
        which |= LIST_F_BATCH;
        vals[np++] = f->batch_id;
    }
    if (f->tag) {
        which |= LIST_F_TAG;
        vals[np++] = f->tag;
    }
    /* A malformed tenant or batch id matches nothing: an empty page, not an error. */
    if (!uuid_ok(tenant_id) || (f->batch_id && !uuid_ok(f->batch_id))) {
        if (bad_cursor)
            return read_exec(R_LIST, true, NULL, 0, NULL, cb, ctx, limit);
        tenant_id = "00000000-0000-0000-0000-000000000000";
        vals[0] = tenant_id;
        if (f->batch_id) {
            for (int i = 4; i < np; i++)
                if (vals[i] == f->batch_id)
                    vals[i] = tenant_id;
        }
    }
    char name[32];
    snprintf(name, sizeof(name), "msg_list_%u", which);
    const char *stmt = (which & LIST_F_TAG) ? list_sql[which] : name;
    if (stmt == NULL)
        return MD_AGAIN; /* not initialised */
    return read_exec(R_LIST, bad_cursor, stmt, np, vals, cb, ctx, limit);
}

/* ---- idempotency lookup ------------------------------------------------------------ */

static void
idem_get_cb(void *ctx, const md_pg_result_t *res)
{
    md_msg_read_t *rd = ctx;
    if (res->error) {
        rd->icb(rd->ctx, res->error, 0, NULL, 0, NULL);
    } else if (PQntuples(res->res) < 1) {
        rd->icb(rd->ctx, NULL, 0, NULL, 0, NULL);
    } else {
        unsigned char h[32];
        if (!bytea32_decode(PQgetvalue(res->res, 0, 0), h))
            memset(h, 0, sizeof(h));
        rd->icb(rd->ctx, NULL, 1, h, atoi(PQgetvalue(res->res, 0, 1)), PQgetvalue(res->res, 0, 2));
    }
    free(rd);
}

int
md_idempotency_get(const char *tenant_id, const char *key, md_idem_cb cb, void *ctx)
{
    if (cb == NULL)
        return MD_ERROR;
    if (gc == NULL || gc->pool == NULL)
        return MD_AGAIN;
    md_msg_read_t *rd = md_xcalloc(1, sizeof(*rd));
    rd->icb = cb;
    rd->ctx = ctx;
    size_t kl = key ? strlen(key) : 0;
    if (!uuid_ok(tenant_id) || kl < 1 || kl > 255) {
        defer(read_not_found, rd);
        return MD_OK;
    }
    const char *vals[2] = {tenant_id, key};
    md_pg_query_t q = {.stmt = "msg_idem_get", .nparams = 2, .values = vals};
    int rc = md_pg_exec(gc->pool, &q, idem_get_cb, rd);
    if (rc != MD_OK)
        free(rd);
    return rc;
}

/* ---- expired idempotency keys --------------------------------------------------------- */

static void
cleanup_cb(void *ctx, const md_pg_result_t *res)
{
    md_unused(ctx);
    md_msg_gc_t *g = gc;
    if (g == NULL)
        return;
    double next = 0; /* the interval */
    if (res->error) {
        md_logf(MD_LOG_WARN, 0, MD_LOG_FIELDS(MD_LS("error", res->error)),
                "idempotency key cleanup failed: %s", res->message ? res->message : "");
    } else {
        long n = atol(PQcmdTuples((PGresult *)res->res));
        g->stats.keys_expired += (uint64_t)n;
        if (n >= CLEANUP_LIMIT)
            next = CLEANUP_AGAIN;
    }
    md_periodic_done(&g->cleanup, next);
}

static bool
cleanup_round(void *data)
{
    md_msg_gc_t *g = data;
    if (g->pool == NULL || g->shutting)
        return false;
    md_pg_query_t q = {.stmt = "msg_idem_cleanup", .nparams = 0};
    return md_pg_exec(g->pool, &q, cleanup_cb, NULL) == MD_OK;
}

/* ---- lifecycle -------------------------------------------------------------------------- */

void
md_messages_stats(md_messages_stats_t *s)
{
    if (gc == NULL) {
        memset(s, 0, sizeof(*s));
        return;
    }
    *s = gc->stats;
    s->pending_units = gc->npending;
    s->pending_rows = gc->pending_rows;
}

static int
prepare_all(md_pg_pool_t *pool)
{
    for (size_t i = 0; i < md_nelems(stmts); i++)
        if (md_pg_prepare(pool, stmts[i].name, stmts[i].sql, stmts[i].nparams) != MD_OK)
            return MD_ERROR;
    for (unsigned w = 0; w < LIST_NSTMTS; w++) {
        if ((w & LIST_F_STATUS) && (w & LIST_F_SENDING))
            continue;
        md_buf_t b;
        md_buf_init(&b);
        int p = 5;
        /* By status, the page walks deliveries' indexes; the view's tenant and
         * id are message_content's, whose bounds the planner does not carry
         * over to deliveries. */
        bool by_state = (w & (LIST_F_STATUS | LIST_F_SENDING)) != 0;
        const char *k = by_state ? "d.message_id" : "m.id";
        /* The tenant's 'sending' rows are few (those in flight), and where
         * they are in id order says nothing about the rest: take them all
         * through the lease index first, rather than let the planner walk the
         * ids from the newest in the hope of meeting some soon. */
        if (w & LIST_F_SENDING)
            md_buf_append_str(&b, "WITH d AS MATERIALIZED (SELECT message_id FROM deliveries"
                                  " WHERE tenant_id = $1::uuid AND status = 'sending') ");
        md_buf_append_str(&b, "SELECT m.id, " MSG_JSON " FROM ");
        if (w & LIST_F_SENDING)
            md_buf_append_str(&b, "d JOIN messages m ON m.id = d.message_id WHERE true");
        else if (w & LIST_F_STATUS)
            md_buf_printf(&b,
                          "deliveries d JOIN messages m ON m.id = d.message_id"
                          " WHERE d.tenant_id = $1::uuid AND d.status = $%d::text"
                          " AND d.status <> 'sending'",
                          p++);
        else
            md_buf_append_str(&b, "messages m WHERE m.tenant_id = $1::uuid");
        md_buf_printf(&b, " AND %s < $2::uuid AND %s >= $3::uuid", k, k);
        if (w & LIST_F_BATCH)
            md_buf_printf(&b, " AND m.batch_id = $%d::uuid", p++);
        if (w & LIST_F_TAG)
            md_buf_printf(&b, " AND m.tags @> ARRAY[$%d::text]", p++);
        md_buf_printf(&b, " ORDER BY %s DESC LIMIT $4::int", k);
        md_buf_append(&b, "", 1);
        if (w & LIST_F_TAG) {
            free(list_sql[w]);
            list_sql[w] = md_xstrdup(b.pos);
            md_buf_free(&b);
            continue;
        }
        char name[32];
        snprintf(name, sizeof(name), "msg_list_%u", w);
        int rc = md_pg_prepare(pool, name, b.pos, p - 1);
        md_buf_free(&b);
        if (rc != MD_OK)
            return MD_ERROR;
    }
    return MD_OK;
}

int
md_messages_app_init(md_app_t *app)
{
    if (gc != NULL || app == NULL)
        return MD_ERROR;
    if (app->pg && prepare_all(app->pg) != MD_OK) {
        md_log(MD_LOG_ERROR, 0, "cannot register the messages statements");
        return MD_ERROR;
    }
    md_msg_gc_t *g = md_xcalloc(1, sizeof(*g));
    g->loop = app->loop;
    g->pool = app->pg;
    const md_pg_conf_t *pc = app->conf ? &app->conf->postgres : NULL;
    g->window = pc && pc->group_commit_window >= 0 ? pc->group_commit_window : 0.001;
    g->max_rows = pc && pc->group_commit_max_rows > 0 ? (size_t)pc->group_commit_max_rows : 500;
    g->tail = &g->head;
    g->defer_tail = &g->defer_head;
    ev_init(&g->flush_timer, flush_timer_cb);
    ev_init(&g->defer_timer, defer_timer_cb);
    if (g->pool)
        md_periodic_start(&g->cleanup, g->loop, CLEANUP_FIRST, CLEANUP_INTERVAL, cleanup_round, g);
    gc = g;
    return MD_OK;
}

void
md_messages_app_shutdown(md_app_t *app)
{
    md_unused(app);
    md_msg_gc_t *g = gc;
    if (g == NULL || g->shutting)
        return;
    /* The last units go now, while the pool still takes work. */
    gc_flush_pending(g);
    g->shutting = 1;
    md_periodic_stop(&g->cleanup);
}

void
md_messages_app_destroy(md_app_t *app)
{
    md_unused(app);
    md_msg_gc_t *g = gc;
    if (g == NULL)
        return;
    g->shutting = 1;
    g->pool = NULL; /* md_app destroyed it already; pending units fail below */
    md_periodic_stop(&g->cleanup);
    ev_timer_stop(g->loop, &g->flush_timer);
    /* Owed callbacks run now: pending units fail, deferred answers are given. */
    while (g->head) {
        md_msg_unit_t *u = g->head;
        g->head = u->next;
        u->error = md_pg_err_unavailable;
        unit_finish(u);
    }
    g->tail = &g->head;
    g->npending = g->pending_rows = 0;
    while (g->defer_head) {
        defer_timer_cb(g->loop, &g->defer_timer, 0);
    }
    ev_timer_stop(g->loop, &g->defer_timer);
    free(g);
    gc = NULL;
    for (size_t i = 0; i < LIST_NSTMTS; i++) {
        free(list_sql[i]);
        list_sql[i] = NULL;
    }
}
