/*
 * The dispatcher: one per worker. It reads message ids from the queue streams
 * (consumer group "mailerd", consumer "host:pid"), claims them in PostgreSQL,
 * hands each to its ESP account's driver, records the outcomes and
 * acknowledges the stream entries. Everything after the read works on a batch:
 * the entries of one read.
 *
 * Reading: on its own Redis connection, because a blocking XREADGROUP holds the
 * connection for up to a second and the worker's shared connection must keep
 * serving requests meanwhile (its command_timeout is raised above the BLOCK
 * time). Priority is strict: transactional entries are read first (no BLOCK);
 * only when that stream has no more does a read take bulk entries, and after
 * every bulk read the next read looks at the transactional stream again; only
 * when both are empty does a read block on both. At most dispatch_concurrency
 * messages are held at once, in reads of at most half of it (so one batch is
 * being claimed or recorded while the next one is read and sent), which keeps a
 * transactional message behind at most one batch cycle even with a bulk backlog.
 *
 * One batch, at least once, never twice at the same time:
 *   claim:  one statement for the whole read (UPDATE ... FROM unnest of the ids
 *           and event ids, joined by ordinality) where the message is claimable (queued; scheduled
 * or deferred and due; sending under an expired lease) and its tenant is not paused; status
 *           'sending', attempts + 1, a lease of queue_lease, with the 'sending'
 *           events. A message past max_message_age is failed there instead
 *           (code "expired", a dead_letters row, a 'failed' event). An entry whose
 *           message was not claimed (done, canceled, paused, not due, held by
 *           another consumer) is acknowledged.
 *   send:   each claimed message through its account's driver (the sink writes
 *           its file here, synchronously); an account with "batch N" (Postmark)
 *           collects its messages into requests of up to N (see "Batch calls"
 *           below md_job_t), each message still its own job.
 *   record: as the sends go, in chunks (MD_DISPATCH_RECORD_MAX messages or
 *           MD_DISPATCH_RECORD_SPAN of sending): one unit of at most two
 *           statements, the sent rows (+ delivered for the sink) and the failed
 *           or deferred ones, each with their events; failures for good write
 *           their dead_letters rows in the same statement. Both are guarded by
 *           status 'sending' and the attempt number, so a worker that lost its
 *           lease cannot overwrite the next attempt's outcome, and a record can
 *           be tried again: one PostgreSQL lost (a restart) is, every
 *           MD_DISPATCH_RECORD_RETRY, until PostgreSQL answers. Chunks bound
 *           what a crash leaves unrecorded to one chunk per batch in flight;
 *           the next claim marks those attempts interrupted
 *           (MD_INTERRUPTED_ERROR_SQL) and a driver that can look up what it
 *           sent (the sink) does not send them twice.
 *   ack:    XACK (md_queue_ack), the deferred messages' ZADD (md_queue_schedule)
 *           and the dead-letter stream entries (md_queue_dead), all after COMMIT.
 * A claim PostgreSQL refuses or fails hands its entries back (acknowledged and
 * pushed again). A record that cannot be made leaves them pending and the
 * messages "sending" under their lease; XAUTOCLAIM (below) or the sweeper
 * brings them back (at least once), and the conditional claim keeps a
 * duplicate entry harmless.
 *
 * Plans: every statement tests the status as "(...) IS TRUE", which no index
 * can serve, so the planner (generic plans included) looks each row up by
 * primary key from the array. With a plain "status = 'sending'" (or the
 * claim's "status = 'queued' OR ...") it may scan the partial indexes of
 * deliveries for those statuses and join: cheap on a quiet table or with fresh statistics, but
 * after a burst the claim would walk every queued message per batch, and every
 * status change is a non-HOT update that leaves a dead entry in that index
 * until VACUUM. (An extra "id = ANY($1)" does not help: the planner then joins
 * the array to the index scan's result row by row, 128 x 128 comparisons.)
 *
 * Lock order: a batch is sorted by message id before its claim, and every
 * statement takes its rows in the order of its arrays (a nested loop over
 * unnest and the primary key), so two workers holding duplicate entries of the
 * same messages mostly wait for each other rather than deadlock. Not a
 * guarantee (the planner chooses the join): a deadlock, should one happen,
 * fails one claim, whose entries are handed back. An explicit SELECT ...
 * ORDER BY id FOR UPDATE would guarantee it, but writes a lock record for every
 * row before its update (measured: it doubled the claim's time), for a case
 * that needs duplicate entries claimed at the same moment.
 *
 * Dead consumers: every MD_DISPATCH_RECLAIM_EVERY seconds, and when the streams
 * are idle, XAUTOCLAIM takes over the entries pending for longer than
 * queue_lease (plus a second, so the lease taken by the dead consumer's claim
 * has certainly expired by then) from any consumer, and they are claimed like
 * fresh ones.
 *
 * Stopping (md_dispatch_shutdown, called while the PostgreSQL pool still takes
 * statements, which it goes on taking until the dispatcher says it is settled):
 * no more reads; batches already sent finish their record (one waiting to be
 * tried again gets its last try now); claims in flight are waited for, and once
 * the last one has answered, what they claimed is released in one statement
 * (back to "queued", attempts - 1, a 'queued' event with reason handed_back)
 * and requeued, with the sends canceled before a byte went out. Waiting for the
 * answers is what makes the release see every claim: released at once, a claim
 * PostgreSQL ran after the release kept its messages "sending" for a whole
 * queue_lease. The release recognises our own claims by a lease token (the
 * sub-millisecond digits of lease_until, random per batch), so it never takes a
 * message another worker holds. Entries that a read still in flight brings
 * after the stop are acknowledged and pushed again.
 */
#include "md_app.h"
#include "md_buf.h"
#include "md_esp.h"
#include "md_id.h"
#include "md_list.h"
#include "md_log.h"
#include "md_messages.h"
#include "md_metrics.h"
#include "md_pg.h"
#include "md_queue.h"
#include "md_suppressions.h"
#include "md_redis.h"
#include "md_route.h"

#include <ev.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define MD_DISPATCH_BATCH_MAX 256 /* entries per read (and per claim statement) */
/*
 * A record unit: at most MD_DISPATCH_RECORD_MAX outcomes, or what
 * MD_DISPATCH_RECORD_SPAN of sending produced. Remote answers come in over tens
 * of milliseconds (a 1 ms span made units of 7-9 outcomes, and the record
 * transactions, not the sends, bounded a TLS drain); the sink's come at once,
 * and units of 32 made four record transactions per claim: bench/drain, same
 * runs, 12,300-12,700 msgs/s and ~100 us of PostgreSQL per message with units
 * of 32, 16,200-17,900 and ~75 us with whole batches (and dispatch_concurrency
 * 1024, whose claims are of MD_DISPATCH_BATCH_MAX). The price: a worker killed
 * mid-batch leaves up to a batch of sent but unrecorded outcomes, which the
 * next claim marks interrupted (a driver that can look up what it sent, the
 * sink, does not send those again; the others do, after the lease). A whole
 * claim fits one unit; bench/ reads the number from this line.
 */
#define MD_DISPATCH_RECORD_MAX  256
#define MD_DISPATCH_RECORD_SPAN 0.020
_Static_assert(MD_DISPATCH_RECORD_MAX == MD_DISPATCH_BATCH_MAX,
               "a record unit holds a whole claim");
#define MD_DISPATCH_RECORD_RETRY  0.5 /* seconds between tries of a record PostgreSQL lost */
#define MD_DISPATCH_BLOCK_MS      "1000"
#define MD_DISPATCH_RETRY         0.25 /* seconds before reading again after a refusal */
#define MD_DISPATCH_RECLAIM_EVERY 5.0  /* seconds between XAUTOCLAIM rounds */
#define MD_DISPATCH_RECLAIM_CALLS 64   /* XAUTOCLAIM calls per stream per round at most */
#define MD_DISPATCH_TX_POLL       0.05 /* seconds between a full dispatcher's transactional looks */
#define MD_ADDRESS_BUF            512  /* an addr-spec in A-label form (254) with room */

/*
 * The claim. $1 message ids (in id order: see "Lock order" above), $2 event ids
 * (same order; joined by ordinality), $3 lease (seconds), $4 max_message_age
 * (seconds), $5 lease token (1..999, the microseconds of lease_until below the
 * millisecond: see md_dispatch_release_sql). Scheduled or deferred messages are
 * due with 5 s of tolerance for clock differences between the worker that
 * scheduled them and PostgreSQL; an entry that comes early finds nothing to
 * claim and the message waits for its own. A message's age counts from when it
 * was first due (send_at for a scheduled send), so a send scheduled days ahead
 * does not expire on arrival. Only a claimable message becomes 'failed' here, so
 * the new status tells which rows expired.
 *
 * A recipient suppressed since the accept is not sent to: the claim makes the
 * message 'suppressed' (no attempt, a 'suppressed' event with code
 * "suppressed") before its age is looked at, by the key accept stored with the
 * message (md_suppressions.h).
 *
 * The state changes in deliveries; r reads each message's content once (what
 * the send needs, the suppression key, the times its age counts from) and the
 * answer takes it from there (migration 0008).
 *
 * r is MATERIALIZED: its supp is an EXISTS subquery, and an inlined r would be
 * pulled up into the UPDATE with a copy of that subquery in each of the five
 * SET expressions that read supp: five suppression lookups per row, about an
 * eighth of PostgreSQL's time per drained message (bench/drain's ceiling went
 * from ~108 to ~93 us of CPU per row). Its rows are in the order of the arrays
 * (ORDER BY n), so the lock order below holds.
 */
#define MD_DISPATCH_SUPPRESSED_KEY MD_SUPPRESSION_KEY_SQL("c")
#define MD_DISPATCH_INTERRUPTED    MD_INTERRUPTED_ERROR_SQL("d")
#define MD_DISPATCH_EXPIRED                                                                        \
    "(greatest(r.created_at, coalesce(r.send_at, r.created_at))"                                   \
    " < now() - make_interval(secs => $4::float8))"
static const char md_dispatch_claim_sql[] =
    "WITH r AS MATERIALIZED (SELECT r.n, r.eid, c.id, c.batch_id, c.from_addr, c.from_name,"
    "   c.to_addr, c.to_name, c.cc, c.bcc, c.reply_to, c.subject, c.text_body, c.html_body,"
    "   c.headers, c.esp_route, c.created_at, c.send_at, EXISTS (SELECT 1 FROM suppressions s"
    "   WHERE s.tenant_id = c.tenant_id AND s.address = " MD_DISPATCH_SUPPRESSED_KEY
    "   AND (s.expires_at IS NULL OR s.expires_at > now())) AS supp"
    "  FROM unnest($1::uuid[], $2::uuid[]) WITH ORDINALITY AS r(id, eid, n)"
    "  JOIN message_content c ON c.id = r.id ORDER BY r.n),"
    " u AS ("
    "  UPDATE deliveries d SET"
    "   status = CASE WHEN r.supp THEN 'suppressed' WHEN " MD_DISPATCH_EXPIRED " THEN 'failed'"
    "    ELSE 'sending' END,"
    "   attempts = d.attempts + CASE WHEN r.supp OR " MD_DISPATCH_EXPIRED " THEN 0 ELSE 1 END,"
    "   lease_until = CASE WHEN r.supp OR " MD_DISPATCH_EXPIRED " THEN NULL"
    "    ELSE date_trunc('milliseconds', now() + make_interval(secs => $3::float8))"
    "         + $5::int * interval '1 microsecond' END,"
    "   last_error = CASE WHEN r.supp"
    "    THEN 'suppressed: the recipient was suppressed after the message was accepted'"
    "    WHEN " MD_DISPATCH_EXPIRED " THEN 'expired: not sent within max_message_age'"
    "         || coalesce(' (last error: ' || d.last_error || ')', '')"
    "    WHEN d.status = 'sending' THEN " MD_DISPATCH_INTERRUPTED "    ELSE d.last_error END,"
    "   next_attempt_at = CASE WHEN r.supp OR " MD_DISPATCH_EXPIRED
    "    THEN NULL ELSE d.next_attempt_at END,"
    "   updated_at = now()"
    "  FROM r WHERE d.message_id = r.id"
    "   AND (d.status = 'queued'"
    "    OR (d.status = 'scheduled' AND (r.send_at IS NULL"
    "                                    OR r.send_at <= now() + interval '5 seconds'))"
    "    OR (d.status = 'deferred' AND (d.next_attempt_at IS NULL"
    "                                   OR d.next_attempt_at <= now() + interval '5 seconds'))"
    "    OR (d.status = 'sending' AND d.lease_until < now())) IS TRUE"
    "   AND NOT EXISTS (SELECT 1 FROM queue_pauses p"
    "                   WHERE p.scope = '*' OR p.scope = d.tenant_id::text)"
    "  RETURNING d.*, r.eid, r.n, r.batch_id, r.from_addr, r.from_name, r.to_addr, r.to_name,"
    "   r.cc, r.bcc, r.reply_to, r.subject, r.text_body, r.html_body, r.headers, r.esp_route,"
    "   r.created_at, r.send_at, d.status = 'failed' AS expired,"
    "   d.status = 'suppressed' AS suppressed),"
    " e AS (INSERT INTO events (id, tenant_id, message_id, type, data)"
    "  SELECT u.eid, u.tenant_id, u.message_id, u.status,"
    "   CASE WHEN u.expired OR u.suppressed THEN jsonb_build_object("
    "    'code', CASE WHEN u.expired THEN 'expired' ELSE 'suppressed' END,"
    "    'error', u.last_error, 'attempt', u.attempts)"
    "   ELSE jsonb_build_object('attempt', u.attempts) || CASE WHEN u.last_error LIKE "
    "'" MD_INTERRUPTED_PREFIX "%' THEN '{\"interrupted\": true}' ELSE '{}' END::jsonb END FROM u),"
    " dl AS (INSERT INTO dead_letters (message_id, tenant_id, batch_id, code, reason, attempts, "
    "esp)"
    "  SELECT u.message_id, u.tenant_id, u.batch_id, 'expired', u.last_error, u.attempts, u.esp"
    "  FROM u WHERE u.expired"
    "  ON CONFLICT (message_id) DO UPDATE SET code = EXCLUDED.code, reason = EXCLUDED.reason,"
    "   attempts = EXCLUDED.attempts, esp = EXCLUDED.esp, created_at = now())"
    " SELECT u.n, u.expired, u.message_id::text, u.tenant_id::text, u.attempts, u.priority,"
    "  u.from_addr, u.from_name, u.to_addr, u.to_name, u.cc::text, u.bcc::text, u.reply_to,"
    "  u.subject, u.text_body, u.html_body, u.headers::text, u.esp_route,"
    "  extract(epoch FROM u.created_at)::float8,"
    "  extract(epoch FROM greatest(u.created_at, coalesce(u.send_at, u.created_at)))::float8,"
    "  u.last_error, u.suppressed"
    " FROM u";
enum {
    C_N,
    C_EXPIRED,
    C_ID,
    C_TENANT,
    C_ATTEMPTS,
    C_PRIORITY,
    C_FROM,
    C_FROM_NAME,
    C_TO,
    C_TO_NAME,
    C_CC,
    C_BCC,
    C_REPLY_TO,
    C_SUBJECT,
    C_TEXT,
    C_HTML,
    C_HEADERS,
    C_ESP_ROUTE,
    C_CREATED,
    C_AGE_BASE,
    C_LAST_ERROR,
    C_SUPPRESSED /* not copied with the row (C_NCOLS): only the claim's answer reads it */
};

/*
 * The failed hops of an attempt (failover, md_route): one 'esp_failed' event
 * each, {"esp", "code", "error", "attempt"}, stamped when the hop failed. A
 * hop is {"id": event id, "at": unix time, "esp", "code", "error"}; only
 * routes of more than one account record hops.
 */
#define MD_DISPATCH_HOPS_CTE                                                                       \
    " h AS (INSERT INTO events (id, tenant_id, message_id, type, data, created_at)"                \
    "  SELECT (x->>'id')::uuid, u.tenant_id, u.id, 'esp_failed',"                                  \
    "   (x - 'id' - 'at') || jsonb_build_object('attempt', u.attempts),"                           \
    "   to_timestamp((x->>'at')::float8)"                                                          \
    "  FROM u CROSS JOIN LATERAL jsonb_array_elements(u.hops) AS x)"

/*
 * Statuses a provider's webhook may have moved a message to while our record of
 * its send was still on its way (the provider answered, then reported the
 * delivery before the record committed). The record still stamps the send
 * (esp, provider id, sent_at, the 'sent' event) but leaves the status where the
 * provider's news put it: statuses never move backwards.
 */
#define MD_DISPATCH_AHEAD "('sent', 'delivered', 'bounced', 'complained')"

/*
 * The sent rows of a batch. $1 ids (in id order), $2 entry indexes, $3 attempts
 * (the claim's), $4 esp, $5 provider ids, $6 delivered too, $7 'sent' event ids,
 * $8 'delivered' event ids. The delivery is stamped a microsecond after the send
 * so the events sort in the order they happened whatever the reader's
 * tie-break. $9 the failed hops before the send (jsonb arrays). Returns the
 * entry index of each row recorded.
 */
static const char md_dispatch_sent_sql[] =
    "WITH r AS (SELECT * FROM unnest($1::uuid[], $2::int[], $3::int[], $4::text[], $5::text[],"
    "                                $6::boolean[], $7::uuid[], $8::uuid[], $9::jsonb[])"
    "           AS r(id, n, attempt, esp, pid, delivered, eid1, eid2, hops)),"
    " u AS ("
    "  UPDATE deliveries d SET status = CASE WHEN d.status <> 'sending' THEN d.status"
    "    WHEN r.delivered THEN 'delivered' ELSE 'sent' END,"
    "   esp = r.esp, esp_message_id = r.pid, sent_at = now(),"
    "   delivered_at = CASE WHEN r.delivered THEN now() + interval '1 microsecond'"
    "    ELSE d.delivered_at END,"
    "   lease_until = NULL, next_attempt_at = NULL, last_error = NULL, updated_at = now()"
    "  FROM r WHERE d.message_id = r.id AND d.attempts = r.attempt"
    "   AND (d.status = 'sending' OR (d.status IN " MD_DISPATCH_AHEAD " AND d.sent_at IS NULL))"
    "  RETURNING d.message_id AS id, d.tenant_id, d.attempts, r.n, r.esp, r.pid, r.delivered,"
    "   r.eid1, r.eid2,"
    "   r.hops)," MD_DISPATCH_HOPS_CTE ","
    " e AS (INSERT INTO events (id, tenant_id, message_id, type, data, created_at)"
    "  SELECT v.eid, u.tenant_id, u.id, v.type,"
    "   jsonb_build_object('esp', u.esp, 'esp_message_id', u.pid, 'attempt', u.attempts),"
    "   now() + v.off"
    "  FROM u CROSS JOIN LATERAL (VALUES (u.eid1, 'sent', interval '0'),"
    "   (u.eid2, 'delivered', interval '1 microsecond')) AS v(eid, type, off)"
    "  WHERE v.type = 'sent' OR u.delivered)"
    " SELECT n FROM u";

/*
 * The failed and deferred rows of a batch. $1 ids (in id order), $2 entry
 * indexes, $3 attempts, $4 status ('deferred' | 'failed'), $5 delay (seconds,
 * deferred), $6 last_error, $7 esp, $8 event ids, $9 codes, $10 failed hops,
 * $11 uncounted (deferred before any try, by the tenant's rate: the claim's
 * attempt is given back). A failed row gets its dead_letters row here.
 * Returns (entry index, next_attempt_at as unix time or 0).
 */
static const char md_dispatch_fail_sql[] =
    "WITH r AS (SELECT * FROM unnest($1::uuid[], $2::int[], $3::int[], $4::text[], $5::float8[],"
    "                                $6::text[], $7::text[], $8::uuid[], $9::text[], $10::jsonb[],"
    "                                $11::boolean[])"
    "           AS r(id, n, attempt, st, delay, err, esp, eid, code, hops, unc)),"
    " u AS ("
    "  UPDATE deliveries d SET status = r.st, esp = r.esp, last_error = r.err,"
    "   attempts = d.attempts - CASE WHEN r.unc THEN 1 ELSE 0 END,"
    "   lease_until = NULL, updated_at = now(),"
    "   next_attempt_at = CASE WHEN r.st = 'deferred' THEN now() + make_interval(secs => r.delay) "
    "END"
    "  FROM r WHERE d.message_id = r.id AND (d.status = 'sending') IS TRUE AND d.attempts "
    "= r.attempt"
    "  RETURNING d.message_id AS id, d.tenant_id,"
    "   (SELECT c.batch_id FROM message_content c WHERE c.id = d.message_id) AS batch_id,"
    "   d.attempts, d.next_attempt_at, r.n, r.st, r.err,"
    "   r.esp, r.eid, r.code, r.hops)," MD_DISPATCH_HOPS_CTE ","
    " e AS (INSERT INTO events (id, tenant_id, message_id, type, data)"
    "  SELECT u.eid, u.tenant_id, u.id, u.st, jsonb_strip_nulls(jsonb_build_object("
    "   'esp', u.esp, 'code', u.code, 'error', u.err, 'attempt', u.attempts,"
    "   'next_attempt_at', u.next_attempt_at)) FROM u),"
    " dl AS (INSERT INTO dead_letters (message_id, tenant_id, batch_id, code, reason, attempts, "
    "esp)"
    "  SELECT u.id, u.tenant_id, u.batch_id, u.code, u.err, u.attempts, u.esp"
    "  FROM u WHERE u.st = 'failed'"
    "  ON CONFLICT (message_id) DO UPDATE SET code = EXCLUDED.code, reason = EXCLUDED.reason,"
    "   attempts = EXCLUDED.attempts, esp = EXCLUDED.esp, created_at = now())"
    " SELECT n, coalesce(extract(epoch FROM next_attempt_at)::float8, 0) FROM u";

/*
 * Hands back the messages of claims still in flight when the worker stops. $1
 * ids, $2 lease tokens of their claims, $3 event ids. Only a message still
 * "sending" under a lease that carries our token is ours: the release cannot
 * take a message another worker holds (its claim wrote another token), and a
 * claim that commits meanwhile is re-checked on the row itself once its lock
 * is released. Returns the ids released.
 */
static const char md_dispatch_release_sql[] =
    "WITH r AS (SELECT * FROM unnest($1::uuid[], $2::int[], $3::uuid[]) AS r(id, token, eid)),"
    " u AS ("
    "  UPDATE deliveries d SET status = 'queued', attempts = greatest(d.attempts - 1, 0),"
    "   lease_until = NULL, updated_at = now()"
    "  FROM r WHERE d.message_id = r.id AND (d.status = 'sending') IS TRUE"
    "   AND (extract(microseconds FROM d.lease_until)::bigint % 1000) = r.token"
    "  RETURNING d.message_id AS id, d.tenant_id, d.priority, r.eid),"
    " e AS (INSERT INTO events (id, tenant_id, message_id, type, data)"
    "  SELECT u.eid, u.tenant_id, u.id, 'queued', '{\"reason\":\"handed_back\"}'::jsonb FROM u)"
    " SELECT id::text, priority FROM u";

typedef struct md_dispatch_s md_dispatch_t;
typedef struct md_release_s md_release_t;

/* Messages to hand back when stopping, with their stream entries (for the
 * acknowledgement and the push) and the lease tokens of their claims. */
struct md_release_s {
    size_t n, cap;
    struct {
        int priority;
        int token;
        char entry[64];
        char id[MD_UUID_STRLEN + 1];
    } e[];
};

/* One stream entry of a batch and, once claimed, its attempt. */
/* E_SKIP: its send was canceled after the request went out (outcome unknown):
 * neither recorded nor acknowledged, the lease and XAUTOCLAIM bring it back.
 * E_RELEASE: canceled before any byte went out, while stopping: handed back
 * by the release statement. */
enum { E_READ = 0, E_SENT, E_FAIL, E_DONE, E_SKIP, E_RELEASE };
struct md_chunk_s;

typedef struct md_entry_s {
    char entry[64]; /* stream entry id, for XACK */
    char id[MD_UUID_STRLEN + 1];
    char eid[MD_UUID_STRLEN + 1]; /* the claim's event */
    int state;                    /* E_* */
    int final_priority;           /* the message's own (for a retry's set member) */
    int attempts;                 /* the claim's attempt number */
    double created_at;            /* accept time, for the latency metric */
    char tenant[MD_UUID_STRLEN + 1];
    char esp[72]; /* account that took the attempt */
    char provider_id[128];
    int delivered;
    const char *status; /* E_FAIL: "deferred" | "failed" */
    double wait;        /* deferred: seconds */
    int uncounted;      /* deferred before any try: its attempt is given back */
    char code[64];
    char last_error[400];
    double age_base;          /* when it was first due, for max_message_age */
    char *hops;               /* failed hops (JSON array text), or NULL */
    struct md_chunk_s *chunk; /* the record unit carrying its outcome */
} md_entry_t;

/* The entries of one read, from the claim to the last acknowledgement. */
typedef struct md_batch_s {
    md_dispatch_t *d;
    md_list_t link; /* on d->claiming while its claim is in flight */
    int priority;   /* the stream it came from */
    int token;      /* lease token of its claim (1..999) */
    int claiming;
    int records;  /* record units in flight or waiting to retry (+1 while its sends run) */
    int sending;  /* sends (jobs) not finished */
    int launched; /* every send of the batch has been started */
    size_t *pend; /* finished outcomes not yet in a record unit (entry indexes) */
    size_t npend;
    size_t released; /* entries acknowledged: their places given back (md_entry_ack) */
    double pend_t0;  /* monotonic: when the first of them finished */
    ev_timer flush;  /* records what finished, MD_DISPATCH_RECORD_SPAN after the first */
    size_t n;
    md_entry_t e[];
} md_batch_t;

enum { PHASE_TRANSACTIONAL, PHASE_BULK, PHASE_BLOCK };

struct md_dispatch_s {
    md_app_t *app;
    struct ev_loop *loop;
    md_redis_t *redis;  /* ours: blocking reads */
    char consumer[320]; /* host:pid */
    int groups_ok;      /* XGROUP CREATE answered on this process's connection */
    int reading;        /* a read (or the group creation) is in flight */
    int phase;
    int concurrency; /* messages held at most */
    int batch;       /* entries per read at most */
    int min_read;    /* read when this many places are free (or nothing is held) */
    int held;        /* entries of live batches */
    int held_tx;     /* ... of transactional ones */
    int tx_poll; /* the read in flight is a full dispatcher's look at the transactional stream */
    double last_tx_poll;
    int shutting, destroying;
    /* XAUTOCLAIM round: due, which stream, its cursor, calls made on it */
    int reclaim_due;
    int reclaim_stream;
    int reclaim_calls;
    char reclaim_cursor[64];
    double last_reclaim;
    char min_idle[32];
    md_list_t claiming;          /* batches whose claim is in flight */
    md_list_t retrying;          /* record chunks waiting to be sent again */
    md_list_t jobs;              /* sends in flight or waiting for a token */
    md_list_t collectors;        /* md_collector_t of the accounts with batch N > 1 */
    md_release_t *extra;         /* stopping: what to hand back (claimed, or canceled unsent) */
    void (*settled)(void *data); /* stopping: called once the release is with the pool */
    void *settled_data;
    int settling; /* stopping, the release not yet sent */
    uint64_t rng;
    ev_timer retry;
    ev_timer reclaim;
};

static md_dispatch_t *md_dispatch;

static void md_dispatch_pump(md_dispatch_t *d);
static void md_dispatch_settle(md_dispatch_t *d);

/* Later, from the loop: after a refusal or an error, and from every callback
 * that might run inside a client's destroy (which must not start new work). */
static void
md_dispatch_later(md_dispatch_t *d, double after)
{
    if (d->shutting || d->destroying)
        return;
    if (ev_is_active(&d->retry) && ev_timer_remaining(d->loop, &d->retry) <= after)
        return;
    ev_timer_stop(d->loop, &d->retry);
    ev_timer_set(&d->retry, after, 0.);
    ev_timer_start(d->loop, &d->retry);
}

static void
md_dispatch_retry_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    md_unused(loop);
    md_unused(revents);
    md_dispatch_pump(t->data);
}

static void
md_dispatch_reclaim_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    md_unused(loop);
    md_unused(revents);
    md_dispatch_t *d = t->data;
    if (!d->reclaim_due) {
        d->reclaim_due = 1;
        d->reclaim_stream = 0;
        d->reclaim_calls = 0;
        snprintf(d->reclaim_cursor, sizeof(d->reclaim_cursor), "0-0");
    }
    md_dispatch_pump(d);
}

static double
md_dispatch_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double
md_dispatch_wall(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* xorshift64: lease tokens (no need for more). */
static unsigned
md_dispatch_random(md_dispatch_t *d)
{
    uint64_t x = d->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    d->rng = x;
    return (unsigned)(x >> 11);
}

/* ---- PostgreSQL array literals -------------------------------------------------- */

/* Appends one element to an array literal being built in b ("{" is written by
 * the first call); quoted: a text element, escaped; NULL s: SQL NULL. */
static void
md_arr_add(md_buf_t *b, const char *s, bool quoted)
{
    md_buf_append(b, md_buf_len(b) == 0 ? "{" : ",", 1);
    if (s == NULL) {
        md_buf_append(b, "NULL", 4);
        return;
    }
    if (!quoted) {
        md_buf_append_str(b, s);
        return;
    }
    md_buf_append(b, "\"", 1);
    for (const char *p = s; *p;) {
        size_t run = strcspn(p, "\"\\");
        md_buf_append(b, p, run);
        p += run;
        if (*p) {
            char esc[2] = {'\\', *p++};
            md_buf_append(b, esc, 2);
        }
    }
    md_buf_append(b, "\"", 1);
}

static void
md_arr_addf(md_buf_t *b, const char *fmt, double v)
{
    char num[64];
    snprintf(num, sizeof(num), fmt, v);
    md_arr_add(b, num, false);
}

/* Closes the literal ("{}" when empty) and NUL-terminates it; returns its text. */
static const char *
md_arr_end(md_buf_t *b)
{
    if (md_buf_len(b) == 0)
        md_buf_append(b, "{", 1);
    md_buf_append(b, "}", 2); /* with the NUL */
    return b->pos;
}

static void
md_arrs_init(md_buf_t *a, size_t n)
{
    for (size_t i = 0; i < n; i++)
        md_buf_init(&a[i]);
}

static void
md_arrs_free(md_buf_t *a, size_t n)
{
    for (size_t i = 0; i < n; i++)
        md_buf_free(&a[i]);
}

/* ---- handing back ----------------------------------------------------------------- */

/* Acknowledges entries and puts their messages back on the queue at once (ack
 * first: both go out in order on the worker's connection, so the push's
 * coverage mark outlives the ack's removal). For entries this worker will not
 * claim (stopping, or PostgreSQL refused or failed the claim): the push goes
 * straight to the stream, without asking PostgreSQL (which may be closing or
 * down); a message that was not waiting any more only costs the next reader a
 * claim that finds nothing. stopping: count them as handed back (the metric is
 * about stopping workers). */
static void
md_dispatch_hand_back(int priority, const char *const *entries, const char *const *ids, size_t n,
                      bool stopping)
{
    if (n == 0)
        return;
    int *prio = md_xmalloc(n * sizeof(*prio));
    for (size_t i = 0; i < n; i++) {
        md_queue_ack(priority, entries[i], ids[i]);
        prio[i] = priority;
    }
    md_queue_push(ids, prio, NULL, n);
    free(prio);
    if (stopping)
        md_metrics_delivery(MD_METRICS_HANDED_BACK, n);
}

/* ---- batches ------------------------------------------------------------------------ */

/* Hands back every entry of a batch not yet claimed (see md_dispatch_hand_back). */
static void
md_batch_hand_back(md_batch_t *b, bool stopping)
{
    const char **ents = md_xmalloc(b->n * sizeof(*ents));
    const char **mids = md_xmalloc(b->n * sizeof(*mids));
    for (size_t i = 0; i < b->n; i++) {
        ents[i] = b->e[i].entry;
        mids[i] = b->e[i].id;
        b->e[i].state = E_DONE;
    }
    md_dispatch_hand_back(b->priority, ents, mids, b->n, stopping);
    free(ents);
    free(mids);
}

/* Ends a batch: its entries no longer count as held. pump: read more now (only
 * from callbacks that run while the loop serves, never from an error that may
 * come from a client's destroy). */
static void
md_batch_end(md_batch_t *b, bool pump)
{
    md_dispatch_t *d = b->d;
    d->held -= (int)(b->n - b->released);
    if (b->priority == MD_PRIORITY_TRANSACTIONAL)
        d->held_tx -= (int)(b->n - b->released);
    if (b->claiming)
        md_list_remove(&b->link);
    ev_timer_stop(d->loop, &b->flush);
    for (size_t i = 0; i < b->n; i++)
        free(b->e[i].hops);
    free(b->pend);
    free(b);
    if (pump)
        md_dispatch_pump(d);
    else
        md_dispatch_later(d, MD_DISPATCH_RETRY);
}

/* Acknowledges an entry whose outcome is settled and gives its place back at
 * once: a batch must not keep places for entries long done while others of it
 * still wait (for a tenant's token, a slow provider), or one slow tenant
 * would keep the dispatcher from reading anyone else's mail. */
static void
md_entry_ack(md_batch_t *b, md_entry_t *e)
{
    if (e->state != E_DONE) {
        md_queue_ack(b->priority, e->entry, e->id);
        b->released++;
        b->d->held--;
        if (b->priority == MD_PRIORITY_TRANSACTIONAL)
            b->d->held_tx--;
    }
    e->state = E_DONE;
}

/* Exponential backoff with full jitter: uniform in [0, min(max, base * 2^(n-1))]. */
static double
md_dispatch_backoff(md_esp_t *esp, int attempts, const md_conf_t *conf)
{
    double cap = conf->retry_backoff_base * ldexp(1.0, md_min(md_max(attempts - 1, 0), 40));
    if (cap > conf->retry_backoff_max)
        cap = conf->retry_backoff_max;
    return (esp ? md_esp_random(esp) : 0.5) * cap;
}

/* The entries [from, to) of a batch whose outcomes one record unit carries.
 * It holds the batch (one of b->records) until it is answered or given up. */
typedef struct md_chunk_s {
    md_batch_t *b;
    size_t n;       /* entries ... */
    size_t *idx;    /* ... at these indexes of b->e */
    unsigned tries; /* failed tries so far (only the first is logged) */
    md_list_t link; /* on d->retrying while its timer runs */
    ev_timer retry;
} md_chunk_t;

static void
md_chunk_free(md_chunk_t *ch)
{
    free(ch->idx);
    free(ch);
}

static int md_chunk_send(md_chunk_t *ch);

/* Tries the chunk's record again in MD_DISPATCH_RECORD_RETRY (set each time: a
 * libev timer that has fired keeps no relative timeout to start from). */
static void
md_chunk_later(md_chunk_t *ch)
{
    md_dispatch_t *d = ch->b->d;
    md_list_insert_tail(&d->retrying, &ch->link);
    ev_timer_set(&ch->retry, MD_DISPATCH_RECORD_RETRY, 0.);
    ev_timer_start(d->loop, &ch->retry);
}

/* One record unit (or the sends' hold) is done: a batch ends with its last. */
static void
md_batch_record_done(md_batch_t *b, bool pump)
{
    if (--b->records == 0)
        md_batch_end(b, pump && !b->d->shutting);
    else if (pump && !b->d->shutting)
        md_dispatch_pump(b->d); /* its recorded entries gave their places back */
}

/* A record unit's answer (ctx is the chunk, freed here unless it is tried
 * again): acknowledges its entries, schedules the retries, announces the dead
 * letters and counts the outcomes. */
static void
md_batch_recorded(void *ctx, const md_pg_result_t *res)
{
    md_chunk_t *ch = ctx;
    md_batch_t *b = ch->b;
    md_dispatch_t *d = b->d;
    if (res->error) {
        /* PostgreSQL went away (a restart, a lost connection): the outcome is
         * unknown, and the messages were sent. The record only moves rows
         * still "sending" at our attempt, so it can be tried again, for as
         * long as PostgreSQL is away: even past the lease, it either finds the
         * row as we left it (nobody took it back: no second send) or matches
         * nothing (another claim had it, and the interrupted attempt is that
         * claim's to reconcile). On an SQL error, or when stopping, the
         * entries stay pending and the leases run out; XAUTOCLAIM or the
         * sweeper takes them again (at least once). */
        bool again = md_app_store_down(res->error) && !d->shutting && !d->destroying;
        if (!again || ch->tries++ == 0)
            md_logf(again ? MD_LOG_WARN : MD_LOG_ERROR, 0,
                    MD_LOG_FIELDS(MD_LI("messages", (long)ch->n), MD_LS("error", res->error),
                                  MD_LS("detail", res->message ? res->message : "")),
                    again ? "dispatch: recording sends failed; trying again until PostgreSQL "
                            "answers"
                          : "dispatch: the results of a batch could not be recorded");
        if (again) {
            md_chunk_later(ch);
            return;
        }
        md_chunk_free(ch);
        md_batch_record_done(b, false);
        return;
    }
    double now = md_dispatch_wall();
    uint64_t sent = 0, deferred = 0, failed = 0;
    for (size_t k = 0; k < res->n; k++) {
        const PGresult *r = res->results[k];
        int rows = PQntuples(r);
        for (int i = 0; i < rows; i++) {
            long n = strtol(PQgetvalue(r, i, 0), NULL, 10);
            if (n < 1 || (size_t)n > b->n || b->e[n - 1].chunk != ch)
                continue;
            md_entry_t *e = &b->e[n - 1];
            if (e->state == E_SENT) {
                sent++;
                if (e->created_at > 0)
                    md_metrics_delivery_latency(now - e->created_at);
            } else if (e->state == E_FAIL && strcmp(e->status, "deferred") == 0) {
                deferred++;
                double at = strtod(PQgetvalue(r, i, 1), NULL);
                md_queue_schedule(e->id, e->final_priority, at > 0 ? at : now);
            } else if (e->state == E_FAIL) {
                failed++;
                md_queue_dead(e->id, e->tenant, e->code, e->last_error);
            }
            md_entry_ack(b, e);
        }
    }
    md_metrics_delivery(MD_METRICS_SENT, sent);
    md_metrics_delivery(MD_METRICS_DEFERRED, deferred);
    md_metrics_delivery(MD_METRICS_FAILED, failed);
    md_metrics_delivery(MD_METRICS_DEAD, failed);
    for (size_t k = 0; k < ch->n; k++) {
        md_entry_t *e = &b->e[ch->idx[k]];
        if (e->state != E_SENT && e->state != E_FAIL)
            continue;
        md_logf(MD_LOG_WARN, 0, MD_LOG_FIELDS(MD_LS("message_id", e->id)),
                "dispatch: the message was no longer \"sending\" at this attempt when its outcome "
                "was recorded (recorded already, or its lease expired)");
        md_entry_ack(b, e);
    }
    md_chunk_free(ch);
    md_batch_record_done(b, true);
}

/* Sends the record unit of a chunk: the sent rows, then the failed and
 * deferred ones (each statement only when it has rows). MD_OK: the callback
 * will run; MD_AGAIN: PostgreSQL did not take it; MD_DONE: nothing to record. */
static int
md_chunk_send(md_chunk_t *ch)
{
    md_batch_t *b = ch->b;
    md_dispatch_t *d = b->d;
    enum { S_ID, S_N, S_ATT, S_ESP, S_PID, S_DLV, S_EV1, S_EV2, S_HOPS, S_NARR };
    enum { F_ID, F_N, F_ATT, F_ST, F_DELAY, F_ERR, F_ESP, F_EV, F_CODE, F_HOPS, F_UNC, F_NARR };
    md_buf_t sa[S_NARR], fa[F_NARR];
    md_arrs_init(sa, S_NARR);
    md_arrs_init(fa, F_NARR);
    size_t nsent = 0, nfail = 0;
    for (size_t k = 0; k < ch->n; k++) {
        size_t i = ch->idx[k];
        md_entry_t *e = &b->e[i];
        char ev[MD_UUID_STRLEN + 1];
        if (e->state == E_SENT) {
            char ev2[MD_UUID_STRLEN + 1];
            md_uuid7(ev);
            md_uuid7(ev2);
            md_arr_add(&sa[S_ID], e->id, false);
            md_arr_addf(&sa[S_N], "%.0f", (double)(i + 1));
            md_arr_addf(&sa[S_ATT], "%.0f", e->attempts);
            md_arr_add(&sa[S_ESP], e->esp, true);
            md_arr_add(&sa[S_PID], e->provider_id, true);
            md_arr_add(&sa[S_DLV], e->delivered ? "t" : "f", false);
            md_arr_add(&sa[S_EV1], ev, false);
            md_arr_add(&sa[S_EV2], ev2, false);
            md_arr_add(&sa[S_HOPS], e->hops ? e->hops : "[]", true);
            nsent++;
        } else if (e->state == E_FAIL) {
            md_uuid7(ev);
            md_arr_add(&fa[F_ID], e->id, false);
            md_arr_addf(&fa[F_N], "%.0f", (double)(i + 1));
            md_arr_addf(&fa[F_ATT], "%.0f", e->attempts);
            md_arr_add(&fa[F_ST], e->status, false);
            md_arr_addf(&fa[F_DELAY], "%.3f", e->wait);
            md_arr_add(&fa[F_ERR], e->last_error, true);
            md_arr_add(&fa[F_ESP], e->esp, true);
            md_arr_add(&fa[F_EV], ev, false);
            md_arr_add(&fa[F_CODE], e->code, true);
            md_arr_add(&fa[F_HOPS], e->hops ? e->hops : "[]", true);
            md_arr_add(&fa[F_UNC], e->uncounted ? "t" : "f", false);
            nfail++;
        }
    }
    int rc = MD_DONE;
    if (nsent + nfail > 0) {
        const char *sv[S_NARR], *fv[F_NARR];
        for (int i = 0; i < S_NARR; i++)
            sv[i] = md_arr_end(&sa[i]);
        for (int i = 0; i < F_NARR; i++)
            fv[i] = md_arr_end(&fa[i]);
        md_pg_query_t q[2];
        memset(q, 0, sizeof(q));
        size_t nq = 0;
        if (nsent > 0) {
            q[nq].stmt = "md_dispatch_sent";
            q[nq].nparams = S_NARR;
            q[nq].values = sv;
            nq++;
        }
        if (nfail > 0) {
            q[nq].stmt = "md_dispatch_fail";
            q[nq].nparams = F_NARR;
            q[nq].values = fv;
            nq++;
        }
        /* no pool: the worker is being torn down; the leases cover them */
        rc = d->app->pg && md_pg_exec_batch(d->app->pg, q, nq, md_batch_recorded, ch) == MD_OK
                 ? MD_OK
                 : MD_AGAIN;
    }
    md_arrs_free(sa, S_NARR);
    md_arrs_free(fa, F_NARR);
    return rc;
}

static void
md_chunk_retry_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    md_unused(revents);
    md_chunk_t *ch = t->data;
    md_batch_t *b = ch->b;
    ev_timer_stop(loop, t);
    md_list_remove(&ch->link);
    int rc = md_chunk_send(ch);
    if (rc == MD_OK)
        return;
    if (rc == MD_AGAIN && !b->d->shutting && !b->d->destroying) {
        md_chunk_later(ch);
        return;
    }
    if (rc == MD_AGAIN)
        md_logf(MD_LOG_ERROR, 0, MD_LOG_FIELDS(MD_LI("messages", (long)ch->n)),
                "dispatch: the results of a batch could not be recorded");
    md_chunk_free(ch);
    md_batch_record_done(b, false);
}

/* Records the outcomes of the entries at idx[0..n-1] (a unit that holds the
 * batch until it is answered). */
static void
md_batch_record(md_batch_t *b, const size_t *idx, size_t n)
{
    md_chunk_t *ch = md_xcalloc(1, sizeof(*ch));
    ch->b = b;
    ch->n = n;
    ch->idx = md_xmalloc(n * sizeof(*ch->idx));
    memcpy(ch->idx, idx, n * sizeof(*idx));
    for (size_t k = 0; k < n; k++)
        b->e[idx[k]].chunk = ch;
    md_list_init(&ch->link);
    ev_timer_init(&ch->retry, md_chunk_retry_cb, MD_DISPATCH_RECORD_RETRY, 0.);
    ch->retry.data = ch;
    b->records++;
    int rc = md_chunk_send(ch);
    if (rc == MD_OK)
        return;
    if (rc == MD_AGAIN) {
        /* Sent but PostgreSQL cannot take the record now: try again soon. */
        md_logf(MD_LOG_WARN, 0, MD_LOG_FIELDS(MD_LI("messages", (long)n)),
                "dispatch: postgres refused the results of a batch; trying again");
        md_chunk_later(ch);
        return;
    }
    md_chunk_free(ch);
    b->records--;
}

/* ---- the message ------------------------------------------------------------------ */

/* Addresses of one message in ASCII form, owned by the job's build. */
typedef struct md_job_build_s {
    char from[MD_ADDRESS_BUF], to[MD_ADDRESS_BUF], reply_to_addr[MD_ADDRESS_BUF];
    char *reply_to_name;
    md_mime_addr_t reply_to;
    md_mime_addr_t *cc, *bcc;
    char (*cc_buf)[MD_ADDRESS_BUF];
    char (*bcc_buf)[MD_ADDRESS_BUF];
    md_mime_header_t *headers;
    json_t *cc_json, *bcc_json, *headers_json;
} md_job_build_t;

static void
md_job_build_free(md_job_build_t *b)
{
    free(b->reply_to_name);
    free(b->cc);
    free(b->bcc);
    free(b->cc_buf);
    free(b->bcc_buf);
    free(b->headers);
    json_decref(b->cc_json);
    json_decref(b->bcc_json);
    json_decref(b->headers_json);
}

/* One claimed row, copied out of the claim's result (which lives only during
 * its callback): a send may outlive it (remote sends, failover). v[c] is NULL
 * for SQL NULL; every value is NUL-terminated. */
enum { C_NCOLS = C_LAST_ERROR + 1 };
typedef struct md_row_s {
    const char *v[C_NCOLS];
    size_t len[C_NCOLS];
    char *blob;
} md_row_t;

static void
md_row_copy(md_row_t *row, const PGresult *res, int r)
{
    size_t total = 0;
    for (int c = 0; c < C_NCOLS; c++)
        total += PQgetisnull(res, r, c) ? 0 : (size_t)PQgetlength(res, r, c) + 1;
    row->blob = md_xmalloc(total ? total : 1);
    char *p = row->blob;
    for (int c = 0; c < C_NCOLS; c++) {
        if (PQgetisnull(res, r, c)) {
            row->v[c] = NULL;
            row->len[c] = 0;
            continue;
        }
        size_t n = (size_t)PQgetlength(res, r, c);
        memcpy(p, PQgetvalue(res, r, c), n);
        p[n] = '\0';
        row->v[c] = p;
        row->len[c] = n;
        p += n + 1;
    }
}

/* [{"address": "...", "name": "..."}] into ASCII mailboxes. MD_ERROR names the
 * problem in why. */
static int
md_job_addr_list(const char *text, json_t **keep, md_mime_addr_t **out,
                 char (**buf)[MD_ADDRESS_BUF], size_t *n, const char **why)
{
    *n = 0;
    if (text == NULL)
        return MD_OK;
    json_t *a = json_loads(text, 0, NULL);
    *keep = a;
    if (!json_is_array(a)) {
        *why = "recipient list is not a JSON array";
        return MD_ERROR;
    }
    size_t count = json_array_size(a);
    if (count == 0)
        return MD_OK;
    *out = md_xcalloc(count, sizeof(**out));
    *buf = md_xcalloc(count, sizeof(**buf));
    for (size_t i = 0; i < count; i++) {
        json_t *e = json_array_get(a, i);
        const char *addr = json_string_value(json_object_get(e, "address"));
        if (addr == NULL)
            addr = json_string_value(e); /* a bare string is an address too */
        if (addr == NULL || md_esp_addr_ascii(addr, (*buf)[i], MD_ADDRESS_BUF) != MD_OK) {
            *why = "invalid cc/bcc address";
            return MD_ERROR;
        }
        (*out)[i].addr = (*buf)[i];
        (*out)[i].name = json_string_value(json_object_get(e, "name"));
    }
    *n = count;
    return MD_OK;
}

/* Builds m from the copied row (m points into row and b: valid while both
 * live). MD_ERROR with why: the stored message cannot be sent (a permanent
 * failure). */
static int
md_job_build(const md_row_t *row, md_job_build_t *b, md_esp_msg_t *m, const char **why)
{
    m->id = row->v[C_ID];
    m->tenant_id = row->v[C_TENANT];
    m->attempt = atoi(row->v[C_ATTEMPTS] ? row->v[C_ATTEMPTS] : "1");
    m->interrupted =
        row->v[C_LAST_ERROR] != NULL && strncmp(row->v[C_LAST_ERROR], MD_INTERRUPTED_PREFIX,
                                                sizeof(MD_INTERRUPTED_PREFIX) - 1) == 0;
    if (md_esp_addr_ascii(row->v[C_FROM], b->from, sizeof(b->from)) != MD_OK) {
        *why = "invalid from address";
        return MD_ERROR;
    }
    if (md_esp_addr_ascii(row->v[C_TO], b->to, sizeof(b->to)) != MD_OK) {
        *why = "invalid to address";
        return MD_ERROR;
    }
    m->from.addr = b->from;
    m->from.name = row->v[C_FROM_NAME];
    m->to.addr = b->to;
    m->to.name = row->v[C_TO_NAME];
    if (md_job_addr_list(row->v[C_CC], &b->cc_json, &b->cc, &b->cc_buf, &m->ncc, why) != MD_OK ||
        md_job_addr_list(row->v[C_BCC], &b->bcc_json, &b->bcc, &b->bcc_buf, &m->nbcc, why) != MD_OK)
        return MD_ERROR;
    m->cc = b->cc;
    m->bcc = b->bcc;

    /* reply_to: an address, or "Name <address>" */
    const char *rt = row->v[C_REPLY_TO];
    if (rt && rt[0]) {
        const char *lt = strrchr(rt, '<');
        size_t len = strlen(rt);
        char addr[MD_ADDRESS_BUF];
        if (lt && rt[len - 1] == '>' && (size_t)(rt + len - 1 - lt - 1) < sizeof(addr)) {
            size_t alen = (size_t)(rt + len - 1 - (lt + 1));
            memcpy(addr, lt + 1, alen);
            addr[alen] = '\0';
            size_t nlen = (size_t)(lt - rt);
            while (nlen > 0 && rt[nlen - 1] == ' ')
                nlen--;
            if (nlen >= 2 && rt[0] == '"' && rt[nlen - 1] == '"')
                b->reply_to_name = md_xstrndup(rt + 1, nlen - 2);
            else if (nlen > 0)
                b->reply_to_name = md_xstrndup(rt, nlen);
        } else {
            md_strlcpy(addr, rt, sizeof(addr));
        }
        if (md_esp_addr_ascii(addr, b->reply_to_addr, sizeof(b->reply_to_addr)) != MD_OK) {
            *why = "invalid reply_to address";
            return MD_ERROR;
        }
        b->reply_to.addr = b->reply_to_addr;
        b->reply_to.name = b->reply_to_name;
        m->reply_to = &b->reply_to;
        m->nreply_to = 1;
    }

    m->subject = row->v[C_SUBJECT];
    m->text.data = row->v[C_TEXT];
    m->text.len = row->len[C_TEXT];
    m->html.data = row->v[C_HTML];
    m->html.len = row->len[C_HTML];

    const char *hj = row->v[C_HEADERS];
    if (hj) {
        b->headers_json = json_loads(hj, 0, NULL);
        if (!json_is_object(b->headers_json)) {
            *why = "headers are not a JSON object";
            return MD_ERROR;
        }
        size_t nh = json_object_size(b->headers_json);
        if (nh > 0) {
            b->headers = md_xcalloc(nh, sizeof(*b->headers));
            const char *k;
            json_t *v;
            size_t i = 0;
            json_object_foreach(b->headers_json, k, v)
            {
                if (!json_is_string(v)) {
                    *why = "a header value is not a string";
                    return MD_ERROR;
                }
                b->headers[i].name = k;
                b->headers[i].value = json_string_value(v);
                i++;
            }
            m->headers = b->headers;
            m->nheaders = i;
        }
    }
    return MD_OK;
}

/* ---- sends -------------------------------------------------------------------------- */

/*
 * One claimed message on its way through its route (md_route_pick): each hop
 * is one account, admitted by its circuit breaker and paced by its rate (a
 * send without a token waits in the account's queue). A retryable failure
 * moves it to the next account at once (same claim, same attempt number; the
 * failed hop becomes an 'esp_failed' event when the route has more than one
 * account); a permanent one ends it; when every account failed or was open,
 * the message is deferred with backoff (at least the largest Retry-After and
 * the shortest remaining cool-down). Owned by the dispatcher (d->jobs) from
 * md_job_start to md_job_end.
 */
typedef struct md_job_s {
    md_batch_t *b;
    size_t idx; /* entry index in b */
    md_list_t link;
    md_row_t row;
    md_job_build_t jb;
    md_esp_msg_t m;
    md_esp_t *route[MD_ROUTE_MAX_ESP];
    size_t nroute, hop;
    md_esp_t *esp; /* the account of the current hop (admitted) */
    md_route_waiter_t w;
    md_http_client_req_t *hreq;
    double t0;
    int rate_deferred;   /* deferred by its tenant's rate before any try */
    double retry_after;  /* largest hint of the failed hops */
    double circuit_wait; /* shortest cool-down left of the accounts skipped as open */
    int tried;
    size_t looked;   /* route accounts considered for the interrupted attempt's lookup */
    md_esp_t *asked; /* the account whose lookup is in flight (build_lookup) */
    int no_failover; /* the lookup failed: no other account, the next attempt asks again */
    md_esp_result_t last;
    md_buf_t hops;
    struct md_collector_s *parked; /* waiting in this account's collector */
    md_list_t clink;               /* on parked->jobs */
    struct md_espbatch_s *eb;      /* in this batch request, sent */
} md_job_t;

/*
 * Batch calls (an account with batch N > 1, whose driver has batch_add): a
 * job admitted and holding its tokens parks in its account's collector
 * instead of sending; the collector sends one request for N parked jobs, or
 * for what it holds batch_window after the first parked, whichever comes
 * first. The request's results go back to each job through md_job_result, as
 * a single send's would (failover, breaker, AIMD, records unchanged); each
 * message counts its request's latency. One per account and worker, made on
 * first use, on d->collectors; esp->batch points to it.
 */
typedef struct md_collector_s {
    md_dispatch_t *d;
    md_esp_t *esp;
    size_t max;    /* messages per request */
    double window; /* seconds */
    md_list_t jobs;
    size_t n;
    ev_timer timer;
    md_list_t link;
} md_collector_t;

/* One batch request in flight: its jobs, in the order of the request's array. */
typedef struct md_espbatch_s {
    md_esp_t *esp;
    md_http_client_req_t *hreq;
    double t0;
    size_t n;
    md_job_t *jobs[];
} md_espbatch_t;

static void md_job_next(md_job_t *j);
static void md_batch_job_done(md_batch_t *b, size_t idx, bool pump);

/* Records in the batch what finished so far (a record unit). */
static void
md_batch_flush(md_batch_t *b)
{
    ev_timer_stop(b->d->loop, &b->flush);
    if (b->npend == 0)
        return;
    size_t n = b->npend;
    b->npend = 0;
    md_batch_record(b, b->pend, n);
}

static void
md_batch_flush_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    md_unused(loop);
    md_unused(revents);
    md_batch_flush(t->data);
}

/* Ends the job: the outcome is in its entry (or the entry is E_SKIP or
 * E_RELEASE); frees everything it owns. */
static void
md_job_end(md_job_t *j, bool pump)
{
    md_batch_t *b = j->b;
    size_t idx = j->idx;
    md_entry_t *e = &b->e[idx];
    if (md_buf_len(&j->hops) > 0 && (e->state == E_SENT || e->state == E_FAIL)) {
        md_buf_append(&j->hops, "]", 2); /* with the NUL */
        e->hops = md_xstrdup(j->hops.pos);
    }
    md_buf_free(&j->hops);
    md_list_remove(&j->link);
    md_job_build_free(&j->jb);
    free(j->row.blob);
    free(j);
    md_dispatch_t *d = b->d;
    md_batch_job_done(b, idx, pump);
    md_dispatch_settle(d);
}

/* The attempt's outcome from r (the last hop's), into the entry; then the end. */
static void
md_job_finish(md_job_t *j, const md_esp_result_t *r)
{
    md_batch_t *b = j->b;
    md_entry_t *e = &b->e[j->idx];
    const md_conf_t *conf = b->d->app->conf;
    if (j->esp)
        md_strlcpy(e->esp, j->esp->conf->name, sizeof(e->esp));
    if (r->outcome == MD_ESP_SENT) {
        e->state = E_SENT;
        md_strlcpy(e->provider_id, r->provider_id, sizeof(e->provider_id));
        e->delivered = r->delivered;
        md_job_end(j, true);
        return;
    }
    e->state = E_FAIL;
    e->status = "failed";
    md_strlcpy(e->code, r->code, sizeof(e->code));
    const char *text = r->text[0] ? r->text : r->code;
    if (r->outcome == MD_ESP_RETRYABLE) {
        double wait =
            j->rate_deferred
                ? r->retry_after
                : md_max(md_dispatch_backoff(j->esp ? j->esp : j->route[0], e->attempts, conf),
                         md_max(r->retry_after, j->retry_after));
        wait = md_max(wait, j->circuit_wait);
        double now = md_dispatch_wall();
        e->uncounted = j->rate_deferred;
        if (e->attempts >= conf->max_attempts && !j->rate_deferred) {
            snprintf(e->code, sizeof(e->code), "attempts_exhausted");
            snprintf(e->last_error, sizeof(e->last_error), "%s (after %d attempts): %s", r->code,
                     e->attempts, text);
        } else if (e->age_base > 0 && now + wait - e->age_base > conf->max_message_age) {
            /* The retry would come after the message's deadline: fail it now
             * rather than keep it deferred for nothing. */
            snprintf(e->code, sizeof(e->code), "expired");
            snprintf(e->last_error, sizeof(e->last_error),
                     "expired: not sent within max_message_age (last error: %s: %s)", r->code,
                     text);
        } else {
            e->status = "deferred";
            e->wait = wait;
            snprintf(e->last_error, sizeof(e->last_error), "%s: %s", r->code, text);
        }
    } else {
        snprintf(e->last_error, sizeof(e->last_error), "%s: %s", r->code, text);
    }
    md_logf(r->outcome == MD_ESP_PERMANENT ? MD_LOG_NOTICE : MD_LOG_INFO, 0,
            MD_LOG_FIELDS(MD_LS("message_id", e->id), MD_LS("esp", e->esp), MD_LS("code", r->code),
                          MD_LI("attempt", e->attempts)),
            strcmp(e->status, "deferred") == 0 ? "send failed, will retry"
                                               : "send failed for good");
    md_job_end(j, true);
}

/* A failed hop, for its 'esp_failed' event. */
static void
md_job_hop(md_job_t *j, const md_esp_result_t *r)
{
    if (j->nroute < 2)
        return;
    char ev[MD_UUID_STRLEN + 1];
    md_uuid7(ev);
    md_buf_append_str(&j->hops, md_buf_len(&j->hops) == 0 ? "[" : ",");
    md_buf_printf(&j->hops, "{\"id\":\"%s\",\"at\":%.6f,\"esp\":", ev, md_dispatch_wall());
    md_buf_append(&j->hops, "\"", 1);
    md_buf_append_json_escaped(&j->hops, j->esp->conf->name, strlen(j->esp->conf->name));
    md_buf_append_str(&j->hops, "\",\"code\":\"");
    md_buf_append_json_escaped(&j->hops, r->code, strlen(r->code));
    md_buf_append_str(&j->hops, "\",\"error\":\"");
    md_buf_append_json_escaped(&j->hops, r->text, strlen(r->text));
    md_buf_append_str(&j->hops, "\"}");
}

/* The current hop's outcome: the account learns it; a retryable failure goes
 * on to the next account. */
static void
md_job_result(md_job_t *j, const md_esp_result_t *r)
{
    md_route_result(j->esp, r->outcome, r->code, md_dispatch_mono() - j->t0);
    j->tried = 1;
    j->last = *r;
    /* Stopping: no new send to the next account; a retryable failure is
     * deferred as when every account failed. */
    if (r->outcome != MD_ESP_RETRYABLE || j->b->d->shutting || j->no_failover) {
        if (r->outcome == MD_ESP_RETRYABLE)
            md_job_hop(j, r);
        md_job_finish(j, r);
        return;
    }
    j->retry_after = md_max(j->retry_after, r->retry_after);
    md_job_hop(j, r);
    if (j->hop + 1 < j->nroute)
        md_logf(MD_LOG_INFO, 0,
                MD_LOG_FIELDS(MD_LS("message_id", j->b->e[j->idx].id),
                              MD_LS("esp", j->esp->conf->name), MD_LS("code", r->code)),
                "send failed, trying the next account");
    j->hop++;
    md_job_next(j);
}

/* Stopping: the message of entry e (claimed by batch b) goes on the release. */
static void
md_release_add(md_dispatch_t *d, const md_batch_t *b, const md_entry_t *e)
{
    md_release_t *rel = d->extra;
    if (rel == NULL || rel->n == rel->cap) {
        size_t cap = rel ? rel->cap * 2 : 64;
        rel = md_xrealloc(rel, sizeof(*rel) + cap * sizeof(rel->e[0]));
        if (d->extra == NULL)
            rel->n = 0;
        rel->cap = cap;
        d->extra = rel;
    }
    rel->e[rel->n].priority = b->priority;
    rel->e[rel->n].token = b->token;
    memcpy(rel->e[rel->n].entry, e->entry, sizeof(rel->e[0].entry));
    memcpy(rel->e[rel->n].id, e->id, sizeof(rel->e[0].id));
    rel->n++;
}

/* A send canceled (stopping, or the client going away): sent tells whether a
 * byte of it went out. */
static void
md_job_abandon(md_job_t *j, bool sent)
{
    md_batch_t *b = j->b;
    md_dispatch_t *d = b->d;
    md_entry_t *e = &b->e[j->idx];
    e->state = E_SKIP;
    if (!sent && d->shutting) {
        /* nothing went out: hand it back with the claims */
        e->state = E_RELEASE;
        md_release_add(d, b, e);
    }
    md_job_end(j, false);
}

static void
md_job_http_cb(void *ctx, const md_http_client_response_t *resp)
{
    md_job_t *j = ctx;
    j->hreq = NULL;
    if (resp->error == md_http_client_err_canceled) {
        md_route_abandon(j->esp);
        md_job_abandon(j, resp->request_sent);
        return;
    }
    md_esp_result_t r;
    memset(&r, 0, sizeof(r));
    md_esp_response_t er = {.http = resp};
    j->esp->driver->read_response(j->esp, &er, &r);
    md_job_result(j, &r);
}

/* Hands a driver's request to the account's endpoint: MD_OK (cb will run), or
 * the result a send the client refused gets in *r (busy: retryable). */
static int
md_esp_request_send(md_esp_t *esp, md_esp_request_t *req, md_http_client_cb cb, void *ctx,
                    md_http_client_req_t **hreq, md_esp_result_t *r)
{
    md_http_client_request_t rq;
    memset(&rq, 0, sizeof(rq));
    rq.method = req->method ? req->method : "POST";
    rq.path = req->path ? req->path : "/";
    rq.headers = req->headers;
    rq.nheaders = req->nheaders;
    rq.body_buf = &req->body;
    int rc = md_http_client_send(esp->endpoint, &rq, cb, ctx, hreq);
    if (rc == MD_AGAIN)
        md_esp_result_retryable(r, "client_busy", 0,
                                "too many requests wait for a connection to this account");
    else if (rc != MD_OK)
        md_esp_result_permanent(r, "invalid_request",
                                "the driver built a request the client refuses");
    return rc;
}

/* ---- batch calls ------------------------------------------------------------------- */

/* A batch request's answer (ctx: the md_espbatch_t, freed here): each job
 * gets its own result, in the order of the request, as a single send's. */
static void
md_espbatch_cb(void *ctx, const md_http_client_response_t *resp)
{
    md_espbatch_t *eb = ctx;
    eb->hreq = NULL;
    for (size_t i = 0; i < eb->n; i++)
        eb->jobs[i]->eb = NULL;
    if (resp->error == md_http_client_err_canceled) {
        for (size_t i = 0; i < eb->n; i++) {
            md_route_abandon(eb->esp);
            md_job_abandon(eb->jobs[i], resp->request_sent);
        }
        free(eb);
        return;
    }
    md_esp_result_t *res = md_xcalloc(eb->n, sizeof(*res));
    md_esp_response_t er = {.http = resp};
    eb->esp->driver->read_batch(eb->esp, &er, eb->n, res);
    /* A job's result may end its dispatcher batch, fail it over to another
     * account (parking it in that account's collector) or defer it; none of
     * that touches the other jobs of this request. */
    for (size_t i = 0; i < eb->n; i++) {
        eb->jobs[i]->t0 = eb->t0;
        md_job_result(eb->jobs[i], &res[i]);
    }
    free(res);
    free(eb);
}

/* Sends one request for up to c->max of the parked jobs (oldest first) within
 * the driver's batch_bytes. A job whose message the driver cannot take gets
 * its permanent result, and a request the client refuses gives its jobs the
 * single send's results, after the collector's state is settled. */
static void
md_collector_send(md_collector_t *c)
{
    md_esp_t *esp = c->esp;
    const md_esp_driver_t *drv = esp->driver;
    size_t take = md_min(c->n, c->max);
    md_espbatch_t *eb = md_xcalloc(1, sizeof(*eb) + take * sizeof(eb->jobs[0]));
    eb->esp = esp;
    md_job_t **bad = md_xmalloc(take * sizeof(*bad));
    md_esp_result_t *badres = md_xmalloc(take * sizeof(*badres));
    size_t nbad = 0;
    md_esp_request_t req;
    memset(&req, 0, sizeof(req));
    req.pool = md_pool_create(4096);
    md_buf_init(&req.body);
    size_t cap = drv->batch_bytes ? drv->batch_bytes : SIZE_MAX;
    while (eb->n + nbad < take && !md_list_empty(&c->jobs)) {
        md_job_t *j = md_list_data(c->jobs.next, md_job_t, clink);
        size_t before = md_buf_len(&req.body);
        if (drv->batch_add(esp, &j->m, &req, &badres[nbad]) != MD_OK) {
            md_list_remove(&j->clink);
            j->parked = NULL;
            c->n--;
            bad[nbad++] = j;
            continue;
        }
        if (md_buf_len(&req.body) + 1 > cap && eb->n > 0) {
            /* over the provider's size: this one waits for the next request */
            req.body.last = req.body.pos + before;
            break;
        }
        md_list_remove(&j->clink);
        j->parked = NULL;
        c->n--;
        j->eb = eb;
        eb->jobs[eb->n++] = j;
    }
    int rc = MD_OK;
    md_esp_result_t r;
    if (eb->n > 0) {
        drv->batch_end(esp, &req);
        eb->t0 = md_dispatch_mono();
        rc = md_esp_request_send(esp, &req, md_espbatch_cb, eb, &eb->hreq, &r);
    }
    md_buf_free(&req.body);
    md_pool_destroy(req.pool);
    if (c->n == 0)
        ev_timer_stop(c->d->loop, &c->timer);
    for (size_t i = 0; i < nbad; i++)
        md_job_result(bad[i], &badres[i]);
    free(bad);
    free(badres);
    if (eb->n == 0) {
        free(eb);
        return;
    }
    if (rc == MD_OK)
        return; /* md_espbatch_cb ends it */
    for (size_t i = 0; i < eb->n; i++)
        eb->jobs[i]->eb = NULL;
    for (size_t i = 0; i < eb->n; i++) {
        eb->jobs[i]->t0 = eb->t0;
        md_job_result(eb->jobs[i], &r);
    }
    free(eb);
}

/* The window ran out: everything parked goes (in requests of c->max). */
static void
md_collector_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    md_unused(loop);
    md_unused(revents);
    md_collector_t *c = t->data;
    while (c->n > 0)
        md_collector_send(c);
}

/* The account's collector, made on first use; NULL when the account does not
 * batch (batch 1, no batch call, no endpoint). */
static md_collector_t *
md_collector_of(md_dispatch_t *d, md_esp_t *esp)
{
    if (esp->batch)
        return esp->batch;
    if (esp->driver->batch_add == NULL || esp->driver->batch_end == NULL ||
        esp->driver->read_batch == NULL || esp->endpoint == NULL)
        return NULL;
    double window = 0;
    int max = md_esp_conf_batch(esp->conf, &window);
    if (max <= 1)
        return NULL;
    md_collector_t *c = md_xcalloc(1, sizeof(*c));
    c->d = d;
    c->esp = esp;
    c->max = (size_t)max;
    c->window = window;
    md_list_init(&c->jobs);
    ev_init(&c->timer, md_collector_timer_cb);
    c->timer.data = c;
    md_list_insert_tail(&d->collectors, &c->link);
    esp->batch = c;
    return c;
}

/* Parks j (admitted, tokens taken, md_route_started) in c: a full collector
 * sends at once, the first parked starts the window. */
static void
md_collector_park(md_collector_t *c, md_job_t *j)
{
    j->parked = c;
    md_list_insert_tail(&c->jobs, &j->clink);
    c->n++;
    if (c->n >= c->max) {
        while (c->n >= c->max)
            md_collector_send(c);
        return;
    }
    if (c->n == 1) {
        ev_timer_set(&c->timer, c->window, 0.);
        ev_timer_start(c->d->loop, &c->timer);
    }
}

/* Takes a parked job out of its collector (canceled). */
static void
md_collector_unpark(md_job_t *j)
{
    md_collector_t *c = j->parked;
    md_list_remove(&j->clink);
    j->parked = NULL;
    if (--c->n == 0)
        ev_timer_stop(c->d->loop, &c->timer);
}

static void
md_collectors_free(md_dispatch_t *d)
{
    while (!md_list_empty(&d->collectors)) {
        md_collector_t *c = md_list_data(d->collectors.next, md_collector_t, link);
        md_list_remove(&c->link);
        ev_timer_stop(d->loop, &c->timer);
        c->esp->batch = NULL;
        free(c);
    }
}

static void md_job_send_now(md_job_t *j);
static bool md_job_lookup_next(md_job_t *j, md_esp_result_t *r, int *rc);

/* What a lookup found is the asked account's: it takes the place of the
 * current hop, which sent nothing. */
static void
md_job_lookup_owns(md_job_t *j)
{
    if (j->asked == NULL || j->asked == j->esp)
        return;
    md_route_abandon(j->esp);
    j->esp = j->asked;
    md_route_started(j->esp);
}

/* The lookup of an interrupted attempt failed (r: why): see md_job_lookup_cb. */
static void
md_job_lookup_failed(md_job_t *j, md_esp_result_t *r)
{
    char text[sizeof(r->text)];
    /* the cause cut to what fits after the prefix (a search's error is short) */
    snprintf(text, sizeof(text), "attempt %d: looking up the interrupted attempt failed: %.190s",
             j->m.attempt,
             r->text[0]   ? r->text
             : r->code[0] ? r->code
                          : "the driver built no request");
    md_esp_result_retryable(r, "interrupted", r->retry_after, text);
    j->no_failover = 1;
    md_job_result(j, r);
}

/*
 * The answer to the lookup of an interrupted attempt (md_esp_driver_t
 * .build_lookup): the provider has the message (recorded sent through the
 * asked account, not sent again), has it not (the route's next account that
 * can look up is asked; none left: sent now, through the current hop), or the
 * search failed. The current hop's failing search ends the attempt retryable
 * with code "interrupted", so that its last_error keeps MD_INTERRUPTED_PREFIX
 * and the next attempt asks again, and without trying the route's other
 * accounts, which could not know whether this one sent it. Another account's
 * (asked because the interrupted attempt may have failed over to it) counts
 * as "has it not": holding the message back for an account the route has
 * moved past would trade its delivery for a duplicate it may not have.
 */
static void
md_job_lookup_cb(void *ctx, const md_http_client_response_t *resp)
{
    md_job_t *j = ctx;
    j->hreq = NULL;
    if (resp->error == md_http_client_err_canceled) {
        md_route_abandon(j->esp);
        md_job_abandon(j, false); /* a search sends nothing */
        return;
    }
    md_esp_result_t r;
    memset(&r, 0, sizeof(r));
    md_esp_response_t er = {.http = resp};
    int rc = j->asked->driver->read_lookup(j->asked, &er, &r);
    if (rc != MD_OK && rc != MD_DECLINED && j->asked != j->esp) {
        md_logf(
            MD_LOG_WARN, 0,
            MD_LOG_FIELDS(MD_LS("message_id", j->m.id), MD_LS("esp", j->asked->conf->name),
                          MD_LS("error", r.text[0] ? r.text : r.code)),
            "looking up an interrupted attempt failed at another account of the route; going on");
        rc = MD_DECLINED;
    }
    if (rc == MD_DECLINED && j->b->d->shutting) {
        /* stopping: no new send; the provider does not have it (or, another
         * account of the route, could not say), so the claim goes back as
         * one that nothing went out for: at least once, as without a lookup */
        md_route_abandon(j->esp);
        md_job_abandon(j, false);
        return;
    }
    if (rc == MD_DECLINED) {
        memset(&r, 0, sizeof(r));
        if (!md_job_lookup_next(j, &r, &rc))
            md_job_send_now(j);
        else if (rc != MD_OK)
            md_job_lookup_failed(j, &r);
        return;
    }
    if (rc != MD_OK) {
        md_job_lookup_failed(j, &r);
        return;
    }
    md_job_lookup_owns(j);
    md_logf(MD_LOG_NOTICE, 0,
            MD_LOG_FIELDS(MD_LS("message_id", j->m.id), MD_LS("esp", j->esp->conf->name),
                          MD_LS("esp_message_id", r.provider_id)),
            "an interrupted attempt had sent the message already; not sent again");
    md_job_result(j, &r);
}

/*
 * Asks the next of the route's accounts whose driver can look a message up
 * (the current hop's, then the others in route order whose breaker is closed:
 * the interrupted attempt may have failed over to any of them) whether it has
 * the message. false: none is left to ask. true: asked (*rc MD_OK,
 * md_job_lookup_cb goes on), or the current hop's request could not be made
 * (*rc, r: why; another account's is passed over).
 */
static bool
md_job_lookup_next(md_job_t *j, md_esp_result_t *r, int *rc)
{
    while (j->looked <= j->nroute) {
        /* 0: the current hop; i: route[i - 1], the current hop left out */
        size_t i = j->looked++;
        md_esp_t *esp = i == 0 ? j->esp : j->route[i - 1];
        if (i > 0 && (esp == j->esp || !md_route_closed(esp)))
            continue;
        if (!esp->driver->build_lookup || !esp->driver->read_lookup || !esp->endpoint)
            continue;
        md_esp_request_t req;
        memset(&req, 0, sizeof(req));
        req.pool = md_pool_create(1024);
        md_buf_init(&req.body);
        *rc = esp->driver->build_lookup(esp, &j->m, &req);
        if (*rc == MD_OK)
            *rc = md_esp_request_send(esp, &req, md_job_lookup_cb, j, &j->hreq, r);
        md_buf_free(&req.body);
        md_pool_destroy(req.pool);
        if (*rc == MD_DECLINED || (*rc != MD_OK && i > 0))
            continue;
        j->asked = esp;
        return true;
    }
    return false;
}

/* Sends the message to the current hop's account (admitted, token taken);
 * after an interrupted attempt, an account whose driver can look the message
 * up is asked first. */
static void
md_job_send(md_job_t *j)
{
    md_esp_t *esp = j->esp;
    md_route_started(esp);
    j->t0 = md_dispatch_mono();
    if (j->m.interrupted && j->looked == 0) {
        md_esp_result_t r;
        memset(&r, 0, sizeof(r));
        int rc;
        if (md_job_lookup_next(j, &r, &rc)) {
            if (rc != MD_OK)
                md_job_lookup_failed(j, &r);
            return; /* else md_job_lookup_cb goes on */
        }
    }
    md_job_send_now(j);
}

/* md_job_send without the lookup (md_route_started done). */
static void
md_job_send_now(md_job_t *j)
{
    md_esp_t *esp = j->esp;
    md_esp_result_t r;
    memset(&r, 0, sizeof(r));
    md_collector_t *c = esp->driver->deliver ? NULL : md_collector_of(j->b->d, esp);
    if (c) {
        md_collector_park(c, j);
        return;
    }
    if (esp->driver->deliver) {
        esp->driver->deliver(esp, &j->m, &r);
        md_job_result(j, &r);
        return;
    }
    if (esp->driver->build_request == NULL || esp->driver->read_response == NULL ||
        esp->endpoint == NULL) {
        md_esp_result_retryable(&r, "driver_unavailable", 0,
                                "this account has no endpoint or driver to send with");
        md_job_result(j, &r);
        return;
    }
    md_esp_request_t req;
    memset(&req, 0, sizeof(req));
    req.pool = md_pool_create(4096);
    md_buf_init(&req.body);
    int rc = esp->driver->build_request(esp, &j->m, &req, &r);
    if (rc == MD_OK) {
        rc = md_esp_request_send(esp, &req, md_job_http_cb, j, &j->hreq, &r);
    }
    /* the client copied or moved everything it needs */
    md_buf_free(&req.body);
    md_pool_destroy(req.pool);
    if (rc != MD_OK)
        md_job_result(j, &r);
}

static void
md_job_token_ready(md_route_waiter_t *w)
{
    md_job_t *j = md_container_of(w, md_job_t, w);
    md_job_send(j);
}

/* The next hop: the first account left whose breaker admits a send; none
 * left: the attempt ends with the last hop's failure. */
static void
md_job_next(md_job_t *j)
{
    while (j->hop < j->nroute) {
        md_esp_t *esp = j->route[j->hop];
        double wait = 0;
        if (!md_route_admit(esp, &wait)) {
            if (j->circuit_wait <= 0 || wait < j->circuit_wait)
                j->circuit_wait = wait;
            j->hop++;
            continue;
        }
        j->esp = esp;
        int rc = md_route_token(esp, &j->w);
        if (rc == MD_OK) {
            md_job_send(j);
        } else if (rc == MD_DECLINED) {
            /* over its tenant's rate: back to the schedule, the attempt not
             * counted (nothing was tried) */
            md_route_abandon(esp);
            md_esp_result_t r;
            md_esp_result_retryable(&r, "tenant_rate_limited", j->w.defer,
                                    "the tenant is over its sending rate (tenant_rate)");
            j->rate_deferred = 1;
            md_job_finish(j, &r);
        }
        return; /* MD_AGAIN: md_job_token_ready sends it */
    }
    if (j->tried) {
        md_esp_result_t r = j->last;
        md_job_finish(j, &r);
        return;
    }
    md_esp_result_t r;
    md_esp_result_retryable(&r, "circuit_open", 0,
                            "every account of the route is failing (circuit open)");
    if (j->esp == NULL && j->nroute > 0)
        md_strlcpy(j->b->e[j->idx].esp, j->route[0]->conf->name, sizeof(j->b->e[j->idx].esp));
    md_job_finish(j, &r);
}

/* Starts the send of claimed row `row` (entry i): a job on d->jobs. */
static void
md_job_start(md_batch_t *b, size_t i, const PGresult *res, int row)
{
    md_entry_t *e = &b->e[i];
    e->attempts = atoi(PQgetvalue(res, row, C_ATTEMPTS));
    e->final_priority = strcmp(PQgetvalue(res, row, C_PRIORITY), "bulk") == 0
                            ? MD_PRIORITY_BULK
                            : MD_PRIORITY_TRANSACTIONAL;
    e->created_at = strtod(PQgetvalue(res, row, C_CREATED), NULL);
    e->age_base = strtod(PQgetvalue(res, row, C_AGE_BASE), NULL);
    md_strlcpy(e->tenant, PQgetvalue(res, row, C_TENANT), sizeof(e->tenant));

    md_job_t *j = md_xcalloc(1, sizeof(*j));
    j->b = b;
    j->idx = i;
    j->w.ready = md_job_token_ready;
    md_buf_init(&j->hops);
    md_row_copy(&j->row, res, row);
    md_list_insert_tail(&b->d->jobs, &j->link);
    b->sending++;

    const char *esp_name = j->row.v[C_ESP_ROUTE];
    bool unknown = false;
    j->nroute = md_route_pick(e->tenant, esp_name, j->route, &unknown);
    md_route_waiter_tenant(&j->w, e->tenant);
    snprintf(e->esp, sizeof(e->esp), "%s",
             j->nroute > 0 ? j->route[0]->conf->name : (esp_name ? esp_name : ""));
    md_esp_result_t r;
    const char *why = NULL;
    if (j->nroute == 0) {
        md_esp_result_permanent(&r, "unknown_esp", "no esp account of that name is configured");
        md_job_finish(j, &r);
    } else if (md_job_build(&j->row, &j->jb, &j->m, &why) != MD_OK) {
        md_esp_result_permanent(&r, "invalid_message", why);
        md_job_finish(j, &r);
    } else {
        md_job_next(j);
    }
}

/* A send of the batch ended (its outcome is in the entry): outcomes go to
 * PostgreSQL in record units of MD_DISPATCH_RECORD_MAX, or what finished
 * within MD_DISPATCH_RECORD_SPAN of the first; the batch's last send records
 * the rest and lets the batch go. A worker killed meanwhile has sent at most
 * the outcomes of one unit per batch that no record reached PostgreSQL for,
 * and those are the only messages a crash makes go twice (plus the sends in
 * flight). */
static void
md_batch_job_done(md_batch_t *b, size_t idx, bool pump)
{
    md_entry_t *e = &b->e[idx];
    if (e->state == E_SENT || e->state == E_FAIL) {
        if (b->npend == 0) {
            b->pend_t0 = md_dispatch_mono();
            ev_timer_set(&b->flush, MD_DISPATCH_RECORD_SPAN, 0.);
            ev_timer_start(b->d->loop, &b->flush);
        }
        b->pend[b->npend++] = idx;
        if (b->npend >= MD_DISPATCH_RECORD_MAX ||
            md_dispatch_mono() - b->pend_t0 >= MD_DISPATCH_RECORD_SPAN)
            md_batch_flush(b);
    }
    b->sending--;
    if (b->launched && b->sending == 0) {
        md_batch_flush(b);
        md_batch_record_done(b, pump);
    }
}

/* The claim's answer (the batch is ctx; it ends here, or with its last
 * record): acknowledges what was not claimed, fails what expired, sends the
 * rest and records their outcomes. */
static void
md_batch_claimed(void *ctx, const md_pg_result_t *res)
{
    md_batch_t *b = ctx;
    md_dispatch_t *d = b->d;
    md_list_remove(&b->link);
    b->claiming = 0;
    if (res->error) {
        /* Not claimed, or unknown (a lost connection after COMMIT). Handed back
         * rather than left pending, where only XAUTOCLAIM (a lease later) would
         * find them while the sweeper counts them covered: a message still
         * queued goes again at once; one the claim did take stays "sending"
         * under its lease, the new entry's claim finds nothing and acknowledges
         * it, and the sweeper requeues the message when the lease expires. */
        if (!d->destroying)
            md_logf(MD_LOG_WARN, 0,
                    MD_LOG_FIELDS(MD_LI("messages", (long)b->n), MD_LS("error", res->error),
                                  MD_LS("detail", res->message ? res->message : "")),
                    "dispatch: claim failed; entries handed back");
        md_batch_hand_back(b, d->shutting);
        md_batch_end(b, false);
        md_dispatch_settle(d);
        return;
    }
    const PGresult *r = res->res;
    int rows = PQntuples(r);
    /* Claimed rows first (by entry index); the others are acknowledged below. */
    int *row_of = md_xmalloc(b->n * sizeof(*row_of));
    for (size_t i = 0; i < b->n; i++)
        row_of[i] = -1;
    for (int i = 0; i < rows; i++) {
        long n = strtol(PQgetvalue(r, i, C_N), NULL, 10);
        if (n >= 1 && (size_t)n <= b->n)
            row_of[n - 1] = i;
    }
    if (d->shutting) {
        /* Stopping: claimed messages are not sent (their sends could outlive
         * the pool); they go on the release, which md_dispatch_settle sends
         * once the last claim in flight has answered. */
        for (size_t i = 0; i < b->n; i++) {
            if (row_of[i] < 0)
                md_entry_ack(b, &b->e[i]);
            else if (d->settling)
                md_release_add(d, b, &b->e[i]);
        }
        free(row_of);
        md_batch_end(b, false);
        md_dispatch_settle(d);
        return;
    }
    /* The sends start here: a local driver's (the sink) runs at once, a
     * remote one goes out on the account's connections and answers later.
     * Their outcomes go to PostgreSQL in record units as they come (see
     * md_batch_job_done). */
    uint64_t attempts = 0, expired = 0;
    b->records = 1; /* the sends' own hold: the batch outlives early answers */
    b->pend = md_xmalloc(b->n * sizeof(*b->pend));
    for (size_t i = 0; i < b->n; i++) {
        md_entry_t *e = &b->e[i];
        int row = row_of[i];
        if (row < 0) {
            /* canceled, done, paused, not due, or held by another consumer */
            md_entry_ack(b, e);
        } else if (PQgetvalue(r, row, C_SUPPRESSED)[0] == 't') {
            md_logf(MD_LOG_NOTICE, 0,
                    MD_LOG_FIELDS(MD_LS("message_id", e->id),
                                  MD_LS("tenant_id", PQgetvalue(r, row, C_TENANT))),
                    "message not sent: its recipient was suppressed after the accept");
            md_entry_ack(b, e);
        } else if (PQgetvalue(r, row, C_EXPIRED)[0] == 't') {
            expired++;
            md_queue_dead(e->id, PQgetvalue(r, row, C_TENANT), "expired",
                          PQgetvalue(r, row, C_LAST_ERROR));
            md_logf(MD_LOG_NOTICE, 0, MD_LOG_FIELDS(MD_LS("message_id", e->id)),
                    "message expired before it could be sent");
            md_entry_ack(b, e);
        } else {
            attempts++;
            md_job_start(b, i, r, row);
        }
    }
    free(row_of);
    md_metrics_delivery(MD_METRICS_ATTEMPTS, attempts);
    md_metrics_delivery(MD_METRICS_FAILED, expired);
    md_metrics_delivery(MD_METRICS_DEAD, expired);
    b->launched = 1;
    if (b->sending == 0) {
        md_batch_flush(b);
        md_batch_record_done(b, true);
    }
}

/* Claims the batch's messages in one statement. On a refusal the entries go
 * back to the queue (the pool is full or down; reading pauses a little). */
static void
md_batch_claim(md_batch_t *b)
{
    md_dispatch_t *d = b->d;
    const md_conf_t *conf = d->app->conf;
    md_buf_t ids, eids;
    md_buf_init(&ids);
    md_buf_init(&eids);
    for (size_t i = 0; i < b->n; i++) {
        md_uuid7(b->e[i].eid);
        md_arr_add(&ids, b->e[i].id, false);
        md_arr_add(&eids, b->e[i].eid, false);
    }
    char lease[32], age[32], token[16];
    snprintf(lease, sizeof(lease), "%.3f", conf->queue_lease);
    snprintf(age, sizeof(age), "%.3f", conf->max_message_age);
    b->token = 1 + (int)(md_dispatch_random(d) % 999);
    snprintf(token, sizeof(token), "%d", b->token);
    const char *values[] = {md_arr_end(&ids), md_arr_end(&eids), lease, age, token};
    md_pg_query_t q = {.stmt = "md_dispatch_claim", .nparams = 5, .values = values};
    int rc = md_pg_exec(d->app->pg, &q, md_batch_claimed, b);
    md_buf_free(&ids);
    md_buf_free(&eids);
    if (rc == MD_OK) {
        b->claiming = 1;
        md_list_insert_tail(&d->claiming, &b->link);
        return;
    }
    md_logf(MD_LOG_WARN, 0, MD_LOG_FIELDS(MD_LI("messages", (long)b->n)),
            "dispatch: postgres cannot take a claim now; entries handed back");
    md_batch_hand_back(b, false);
    md_batch_end(b, false);
}

/* ---- stream entries ------------------------------------------------------------------ */

/* The message id of a stream entry (its field "id"), or NULL when the entry is
 * not ours (then it is acknowledged and dropped). */
static const char *
md_entry_parse(int priority, redisReply *entry)
{
    if (entry->type != REDIS_REPLY_ARRAY || entry->elements < 2 ||
        entry->element[0]->type != REDIS_REPLY_STRING)
        return NULL;
    const char *eid = entry->element[0]->str;
    redisReply *fields = entry->element[1];
    const char *id = NULL;
    size_t idlen = 0;
    if (fields->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i + 1 < fields->elements; i += 2) {
            redisReply *k = fields->element[i], *v = fields->element[i + 1];
            if (k->type == REDIS_REPLY_STRING && v->type == REDIS_REPLY_STRING &&
                strcmp(k->str, "id") == 0) {
                id = v->str;
                idlen = v->len;
            }
        }
    }
    bool ok = id && idlen == MD_UUID_STRLEN && strlen(eid) < 64;
    for (size_t i = 0; ok && i < idlen; i++) {
        char c = id[i];
        ok = (i == 8 || i == 13 || i == 18 || i == 23)
                 ? c == '-'
                 : ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'));
    }
    if (!ok) {
        md_logf(MD_LOG_WARN, 0, MD_LOG_FIELDS(MD_LS("entry", eid)),
                "dispatch: stream entry without a valid message id, dropped");
        if (strlen(eid) < 64)
            md_queue_ack(priority, eid, NULL);
        return NULL;
    }
    return id;
}

static int
md_entry_cmp(const void *a, const void *b)
{
    return strcmp(((const md_entry_t *)a)->id, ((const md_entry_t *)b)->id);
}

/* Takes the entries of one stream's answer (an array of [id, fields]): as a
 * batch to claim, or, when stopping, handed straight back. Returns how many
 * entries there were. */
static size_t
md_dispatch_take(md_dispatch_t *d, int priority, redisReply *list, bool reclaimed)
{
    if (list->type != REDIS_REPLY_ARRAY || list->elements == 0)
        return 0;
    md_batch_t *b = md_xcalloc(1, sizeof(*b) + list->elements * sizeof(md_entry_t));
    b->d = d;
    b->priority = priority;
    md_list_init(&b->link);
    ev_init(&b->flush, md_batch_flush_cb);
    b->flush.data = b;
    for (size_t i = 0; i < list->elements; i++) {
        redisReply *ent = list->element[i];
        const char *id = md_entry_parse(priority, ent);
        if (id == NULL)
            continue;
        md_entry_t *e = &b->e[b->n++];
        md_strlcpy(e->entry, ent->element[0]->str, sizeof(e->entry));
        memcpy(e->id, id, MD_UUID_STRLEN);
        e->id[MD_UUID_STRLEN] = '\0';
    }
    if (reclaimed)
        md_metrics_delivery(MD_METRICS_RECLAIMED, b->n);
    if (b->n == 0) {
        free(b);
        return list->elements;
    }
    d->held += (int)b->n;
    if (priority == MD_PRIORITY_TRANSACTIONAL)
        d->held_tx += (int)b->n;
    /* In id order: the statements take their rows in array order (lock order). */
    qsort(b->e, b->n, sizeof(b->e[0]), md_entry_cmp);
    if (d->shutting) {
        md_batch_hand_back(b, true);
        md_batch_end(b, false);
    } else {
        md_batch_claim(b);
    }
    return list->elements;
}

/* ---- reading ------------------------------------------------------------------------ */

/* XREADGROUP's answer: [[stream, [entries]], ...]. Returns how many entries it
 * held; transactional ones are taken first. */
static size_t
md_dispatch_entries(md_dispatch_t *d, redisReply *reply)
{
    size_t n = 0;
    if (reply->type != REDIS_REPLY_ARRAY)
        return 0;
    for (int prio = 0; prio < 2; prio++) {
        for (size_t s = 0; s < reply->elements; s++) {
            redisReply *st = reply->element[s];
            if (st->type != REDIS_REPLY_ARRAY || st->elements < 2 ||
                st->element[0]->type != REDIS_REPLY_STRING ||
                strcmp(st->element[0]->str, md_queue_stream[prio]) != 0)
                continue;
            n += md_dispatch_take(d, prio, st->element[1], false);
        }
    }
    return n;
}

/* A Redis error reply to a read: NOGROUP means Redis lost the streams (a
 * restart without persistence): make the group again. */
static void
md_dispatch_read_error(md_dispatch_t *d, const char *err, redisReply *reply)
{
    if (err) {
        /* a timeout or a lost connection: the client reconnects by itself */
        md_dispatch_later(d, MD_DISPATCH_RETRY);
        return;
    }
    if (strncmp(reply->str, "NOGROUP", 7) == 0) {
        d->groups_ok = 0;
        md_dispatch_later(d, 0.01);
        return;
    }
    md_logf(MD_LOG_ERROR, 0, MD_LOG_FIELDS(MD_LS("error", reply->str)),
            "dispatch: reading the queue failed");
    md_dispatch_later(d, 1.0);
}

/* XREADGROUP's answer: the entries become batches; then the next read (the
 * transactional stream first again), or an XAUTOCLAIM round when idle. */
static void
md_dispatch_read_cb(void *ctx, redisReply *reply, const char *err)
{
    md_dispatch_t *d = ctx;
    int tx_poll = d->tx_poll;
    d->reading = d->tx_poll = 0;
    if (d->destroying)
        return;
    if (err || reply->type == REDIS_REPLY_ERROR) {
        md_dispatch_read_error(d, err, reply);
        return;
    }
    size_t n = md_dispatch_entries(d, reply);
    if (d->shutting)
        return;
    if (tx_poll) { /* the reading order stays where it was */
        md_dispatch_pump(d);
        return;
    }
    if (n == 0 && d->phase == PHASE_BLOCK && ev_now(d->loop) - d->last_reclaim >= 1.0 &&
        !d->reclaim_due) {
        /* Idle: a good moment to look for a dead consumer's entries. */
        md_dispatch_reclaim_cb(d->loop, &d->reclaim, 0);
        return;
    }
    if (n > 0 || d->phase == PHASE_BLOCK)
        d->phase = PHASE_TRANSACTIONAL;
    else
        d->phase = d->phase == PHASE_TRANSACTIONAL ? PHASE_BULK : PHASE_BLOCK;
    /* After any read that found some, look at the transactional stream again
     * at once: only a drained transactional stream lets bulk mail in. */
    md_dispatch_pump(d);
}

/* XAUTOCLAIM's answer: [next cursor, [entries], [deleted ids] (Redis 7)]. */
static void
md_dispatch_reclaim_reply(void *ctx, redisReply *reply, const char *err)
{
    md_dispatch_t *d = ctx;
    d->reading = 0;
    if (d->destroying)
        return;
    if (err || reply->type == REDIS_REPLY_ERROR) {
        d->reclaim_due = 0;
        md_dispatch_read_error(d, err, reply);
        return;
    }
    const char *next = "0-0";
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements >= 2) {
        if (reply->element[0]->type == REDIS_REPLY_STRING)
            next = reply->element[0]->str;
        size_t n = md_dispatch_take(d, d->reclaim_stream, reply->element[1], true);
        if (n > 0)
            md_logf(MD_LOG_NOTICE, 0,
                    MD_LOG_FIELDS(MD_LS("stream", md_queue_stream[d->reclaim_stream]),
                                  MD_LI("entries", (long)n)),
                    "dispatch: took over entries pending longer than the lease");
    }
    if (d->shutting)
        return;
    d->reclaim_calls++;
    if (strcmp(next, "0-0") == 0 || strlen(next) >= sizeof(d->reclaim_cursor) ||
        d->reclaim_calls >= MD_DISPATCH_RECLAIM_CALLS) {
        /* This stream is done: the next one, or the round is over. */
        d->reclaim_stream++;
        d->reclaim_calls = 0;
        snprintf(d->reclaim_cursor, sizeof(d->reclaim_cursor), "0-0");
        if (d->reclaim_stream >= 2) {
            d->reclaim_due = 0;
            d->last_reclaim = ev_now(d->loop);
        }
    } else {
        md_strlcpy(d->reclaim_cursor, next, sizeof(d->reclaim_cursor));
    }
    d->phase = PHASE_TRANSACTIONAL;
    md_dispatch_pump(d);
}

static void
md_dispatch_group_cb(void *ctx, redisReply *reply, const char *err)
{
    md_dispatch_t *d = ctx;
    d->reading = 0;
    if (d->destroying)
        return;
    if (err || (reply->type == REDIS_REPLY_ERROR && strncmp(reply->str, "BUSYGROUP", 9) != 0)) {
        md_logf(MD_LOG_ERROR, 0, MD_LOG_FIELDS(MD_LS("error", err ? err : reply->str)),
                "dispatch: cannot create the consumer group");
        md_dispatch_later(d, 1.0);
        return;
    }
    d->groups_ok = 1;
    md_dispatch_pump(d);
}

/* The group on both streams; "0" so entries added before it existed are read. */
static void
md_dispatch_create_groups(md_dispatch_t *d)
{
    int sent = 0;
    for (int s = 0; s < 2; s++) {
        const char *argv[] = {"XGROUP",       "CREATE", md_queue_stream[s],
                              MD_QUEUE_GROUP, "0",      "MKSTREAM"};
        if (md_redis_cmd(d->redis, s == 1 ? md_dispatch_group_cb : md_redis_ignore_cb, d, 6, argv,
                         NULL) == MD_OK)
            sent++;
    }
    /* Only the second reply is awaited: replies come in order on one connection,
     * and BUSYGROUP is the normal answer for both after the first start. */
    if (sent == 2)
        d->reading = 1;
    else
        md_dispatch_later(d, MD_DISPATCH_RETRY);
}

/* Reads (or reclaims) when there is room, the stores are up, and no read is in
 * flight. */
static void
md_dispatch_pump(md_dispatch_t *d)
{
    if (d->shutting || d->destroying || d->reading)
        return;
    if (!md_redis_ready(d->redis) || !md_pg_pool_ready(d->app->pg)) {
        md_dispatch_later(d, MD_DISPATCH_RETRY);
        return;
    }
    if (!d->groups_ok) {
        md_dispatch_create_groups(d);
        return;
    }
    int room = d->concurrency - d->held, n, tx_poll = 0;
    if (room <= 0 || (room < d->min_read && d->held > 0)) {
        /* Full: the next finished batch pumps again. Transactional mail is not
         * kept waiting for that (with four claims of bulk mail in flight on a
         * loaded machine, seconds): every MD_DISPATCH_TX_POLL a full
         * dispatcher looks at the transactional stream, and what it finds
         * takes places beyond dispatch_concurrency, up to a read's worth. */
        n = d->batch - d->held_tx;
        if (n <= 0)
            return;
        double wait = d->last_tx_poll + MD_DISPATCH_TX_POLL - ev_now(d->loop);
        if (wait > 0) {
            md_dispatch_later(d, wait);
            return;
        }
        d->last_tx_poll = ev_now(d->loop);
        tx_poll = 1;
    } else {
        n = md_min(room, d->batch);
    }
    char count[16];
    snprintf(count, sizeof(count), "%d", n);
    const char *argv[16];
    int argc = 0;
    md_redis_cb cb = md_dispatch_read_cb;
    int phase = tx_poll ? PHASE_TRANSACTIONAL : d->phase;
    if (d->reclaim_due && !tx_poll) {
        argv[argc++] = "XAUTOCLAIM";
        argv[argc++] = md_queue_stream[d->reclaim_stream];
        argv[argc++] = MD_QUEUE_GROUP;
        argv[argc++] = d->consumer;
        argv[argc++] = d->min_idle;
        argv[argc++] = d->reclaim_cursor;
        argv[argc++] = "COUNT";
        argv[argc++] = count;
        cb = md_dispatch_reclaim_reply;
    } else {
        argv[argc++] = "XREADGROUP";
        argv[argc++] = "GROUP";
        argv[argc++] = MD_QUEUE_GROUP;
        argv[argc++] = d->consumer;
        argv[argc++] = "COUNT";
        argv[argc++] = count;
        if (phase == PHASE_BLOCK) {
            argv[argc++] = "BLOCK";
            argv[argc++] = MD_DISPATCH_BLOCK_MS;
        }
        argv[argc++] = "STREAMS";
        if (phase == PHASE_BLOCK) {
            argv[argc++] = md_queue_stream[0];
            argv[argc++] = md_queue_stream[1];
            argv[argc++] = ">";
            argv[argc++] = ">";
        } else {
            argv[argc++] = md_queue_stream[phase == PHASE_BULK];
            argv[argc++] = ">";
        }
    }
    if (md_redis_cmd(d->redis, cb, d, argc, argv, NULL) == MD_OK) {
        d->reading = 1;
        d->tx_poll = tx_poll;
    } else {
        md_dispatch_later(d, MD_DISPATCH_RETRY);
    }
}

/* ---- stopping --------------------------------------------------------------------- */

/* What the release needs after the batches are gone: each message's stream
 * entry, for the acknowledgement and the push. */

/* The release's answer (ctx is the md_release_t, freed here): the messages it
 * put back to "queued" get their entries acknowledged and pushed again. */
static void
md_dispatch_released(void *ctx, const md_pg_result_t *res)
{
    md_release_t *rel = ctx;
    if (res->error) {
        md_logf(MD_LOG_WARN, 0,
                MD_LOG_FIELDS(MD_LS("error", res->error),
                              MD_LS("detail", res->message ? res->message : "")),
                "dispatch: releasing claimed messages failed; they wait for their lease");
        free(rel);
        return;
    }
    int rows = PQntuples(res->res);
    for (int i = 0; i < rows; i++) {
        const char *id = PQgetvalue(res->res, i, 0);
        for (size_t k = 0; k < rel->n; k++) {
            if (rel->e[k].id[0] == '\0' || strcmp(rel->e[k].id, id) != 0)
                continue;
            const char *ent = rel->e[k].entry, *mid = rel->e[k].id;
            md_dispatch_hand_back(rel->e[k].priority, &ent, &mid, 1, true);
            rel->e[k].id[0] = '\0'; /* a duplicate entry of the same message stays pending */
            break;
        }
    }
    if (rows > 0)
        md_logf(MD_LOG_INFO, 0, MD_LOG_FIELDS(MD_LI("messages", rows)),
                "dispatch: stopping; claimed messages handed back");
    free(rel);
}

/* One statement for every message the stopping dispatcher claimed and did not
 * send: claims answered after the stop, and sends canceled before a byte went
 * out (d->extra; see the top). */
static void
md_dispatch_release(md_dispatch_t *d)
{
    md_release_t *rel = d->extra;
    d->extra = NULL;
    if (rel == NULL || rel->n == 0) {
        free(rel);
        return;
    }
    size_t n = rel->n;
    md_buf_t ids, tokens, eids;
    md_buf_init(&ids);
    md_buf_init(&tokens);
    md_buf_init(&eids);
    for (size_t k = 0; k < n; k++) {
        char ev[MD_UUID_STRLEN + 1];
        md_uuid7(ev);
        md_arr_add(&ids, rel->e[k].id, false);
        md_arr_addf(&tokens, "%.0f", rel->e[k].token);
        md_arr_add(&eids, ev, false);
    }
    const char *values[] = {md_arr_end(&ids), md_arr_end(&tokens), md_arr_end(&eids)};
    md_pg_query_t q = {.stmt = "md_dispatch_release", .nparams = 3, .values = values};
    int rc = md_pg_exec(d->app->pg, &q, md_dispatch_released, rel);
    md_buf_free(&ids);
    md_buf_free(&tokens);
    md_buf_free(&eids);
    if (rc != MD_OK) {
        md_logf(MD_LOG_WARN, 0, MD_LOG_FIELDS(MD_LI("messages", (long)n)),
                "dispatch: cannot release claimed messages; they wait for their lease");
        free(rel);
    }
}

/* Stopping: once no claim and no send is in flight (the sends' records went
 * to the pool as they ended), the release goes to the pool and the caller of
 * md_dispatch_shutdown hears that the pool may close. */
static void
md_dispatch_settle(md_dispatch_t *d)
{
    if (!d->settling || d->destroying || !md_list_empty(&d->claiming) || !md_list_empty(&d->jobs))
        return;
    d->settling = 0;
    md_dispatch_release(d);
    void (*settled)(void *) = d->settled;
    d->settled = NULL;
    if (settled)
        settled(d->settled_data);
}

/* ---- lifetime ------------------------------------------------------------------------- */

/* Cancels every send in flight or waiting for a token (see md_dispatch_shutdown). */
static void
md_dispatch_cancel_jobs(md_dispatch_t *d, bool all)
{
    md_list_t *l = d->jobs.next;
    while (l != &d->jobs) {
        md_job_t *j = md_list_data(l, md_job_t, link);
        l = l->next;
        if (!all && md_http_client_on_wire(j->hreq ? j->hreq : j->eb ? j->eb->hreq : NULL))
            continue; /* on the wire: it answers within its timeouts, and is recorded */
        if (j->hreq) {
            /* its callback runs now, with "canceled", and ends the job */
            md_http_client_cancel(j->hreq);
        } else if (j->eb) {
            /* the batch's callback runs now and ends each of its jobs */
            md_http_client_cancel(j->eb->hreq);
        } else if (j->parked) {
            md_collector_unpark(j);
            md_route_abandon(j->esp);
            md_job_abandon(j, false);
        } else if (j->w.queued) {
            md_route_token_cancel(j->esp, &j->w);
            md_route_abandon(j->esp);
            md_job_abandon(j, false);
        } else {
            md_job_abandon(j, true); /* not expected: every step in between is synchronous */
        }
        l = d->jobs.next; /* a cancel may end other jobs too (a batch request's) */
    }
}

/* Empties d->retrying: each chunk is sent once more (last_try) or given up; a
 * chunk given up leaves its entries pending and its messages under their lease. */
static void
md_dispatch_drop_retries(md_dispatch_t *d, bool last_try)
{
    while (!md_list_empty(&d->retrying)) {
        md_chunk_t *ch = md_list_data(d->retrying.next, md_chunk_t, link);
        md_list_remove(&ch->link);
        ev_timer_stop(d->loop, &ch->retry);
        if (last_try && md_chunk_send(ch) == MD_OK)
            continue;
        md_batch_t *b = ch->b;
        md_chunk_free(ch);
        md_batch_record_done(b, false);
    }
}

int
md_dispatch_prepare(md_pg_pool_t *pool)
{
    if (md_pg_prepare(pool, "md_dispatch_claim", md_dispatch_claim_sql, 5) != MD_OK ||
        md_pg_prepare(pool, "md_dispatch_sent", md_dispatch_sent_sql, 9) != MD_OK ||
        md_pg_prepare(pool, "md_dispatch_fail", md_dispatch_fail_sql, 11) != MD_OK ||
        md_pg_prepare(pool, "md_dispatch_release", md_dispatch_release_sql, 3) != MD_OK)
        return MD_ERROR;
    return MD_OK;
}

int
md_dispatch_start(md_app_t *app)
{
    if (md_dispatch != NULL || app->pg == NULL || app->redis == NULL)
        return MD_ERROR;
    /* Our own connection: a blocked XREADGROUP must not hold up the worker's
     * shared one, and its command_timeout must exceed the BLOCK time. */
    md_redis_conf_t rc = app->conf->redis;
    double block = atof(MD_DISPATCH_BLOCK_MS) / 1000.0;
    if (rc.command_timeout < block + 2.0)
        rc.command_timeout = block + 2.0;
    char err[256];
    md_redis_t *r = md_redis_create(app->loop, &rc, err, sizeof(err));
    if (r == NULL) {
        md_logf(MD_LOG_ERROR, 0, MD_LOG_FIELDS(MD_LS("error", err)),
                "dispatch: cannot create its redis client");
        return MD_ERROR;
    }
    md_dispatch_t *d = md_xcalloc(1, sizeof(*d));
    d->app = app;
    d->loop = app->loop;
    d->redis = r;
    d->phase = PHASE_TRANSACTIONAL;
    d->concurrency = md_max(app->conf->dispatch_concurrency, 1);
    /* Two batches in flight at least (four with the default 1024): one is
     * claimed or recorded while the next is read and sent. */
    d->batch = md_max(md_min(d->concurrency / 2, MD_DISPATCH_BATCH_MAX), 1);
    /* Places come back one entry at a time (md_entry_ack): wait for a whole
     * batch's worth, so claims stay large (one statement per batch). */
    d->min_read = d->batch;
    /* A second beyond the lease: the claim that leased a dead consumer's
     * message came after its read, so by then the lease has surely expired. */
    snprintf(d->min_idle, sizeof(d->min_idle), "%.0f", (app->conf->queue_lease + 1.0) * 1000.0);
    md_list_init(&d->claiming);
    md_list_init(&d->retrying);
    md_list_init(&d->jobs);
    md_list_init(&d->collectors);
    if (md_route_init(app) != MD_OK) {
        md_redis_destroy(r);
        free(d);
        return MD_ERROR;
    }
    char host[256];
    if (gethostname(host, sizeof(host)) != 0)
        snprintf(host, sizeof(host), "localhost");
    host[sizeof(host) - 1] = '\0';
    snprintf(d->consumer, sizeof(d->consumer), "%s:%ld", host, (long)getpid());
    d->rng =
        ((uint64_t)getpid() << 32) ^ (uint64_t)(md_dispatch_wall() * 1e6) ^ 0x9e3779b97f4a7c15ull;
    if (d->rng == 0)
        d->rng = 1;
    ev_init(&d->retry, md_dispatch_retry_cb);
    d->retry.data = d;
    ev_timer_init(&d->reclaim, md_dispatch_reclaim_cb, MD_DISPATCH_RECLAIM_EVERY,
                  MD_DISPATCH_RECLAIM_EVERY);
    d->reclaim.data = d;
    ev_timer_start(d->loop, &d->reclaim);
    md_redis_start(r);
    md_dispatch = d;
    /* The first read once the stores are up; the first reclaim round soon
     * after, for what a worker that died before this one left behind. */
    d->reclaim_due = 1;
    snprintf(d->reclaim_cursor, sizeof(d->reclaim_cursor), "0-0");
    md_dispatch_later(d, 0.05);
    return MD_OK;
}

void
md_dispatch_shutdown(void (*settled)(void *data), void *data)
{
    md_dispatch_t *d = md_dispatch;
    if (d == NULL || d->shutting) {
        if (settled)
            settled(data);
        return;
    }
    d->shutting = 1;
    d->settling = 1;
    d->settled = settled;
    d->settled_data = data;
    ev_timer_stop(d->loop, &d->retry);
    ev_timer_stop(d->loop, &d->reclaim);
    md_logf(MD_LOG_DEBUG, 0, MD_LOG_FIELDS(MD_LI("held", d->held)), "dispatch: stopping");
    /* Sends on the wire are let finish, within their timeouts, and recorded:
     * the pool waits for them (md_dispatch_settle). Canceled, one would have
     * been left "sending" with its outcome unknown, and sent again after its
     * lease. Sends not on the wire yet (waiting for a connection or a token,
     * parked for a batch window) are canceled and handed back with the
     * claims. Outcomes already in are recorded now. */
    md_dispatch_cancel_jobs(d, false);
    /* Records waiting to be tried again get their last try while the pool
     * still takes statements. */
    md_dispatch_drop_retries(d, true);
    md_dispatch_settle(d);
}

void
md_dispatch_destroy(void)
{
    md_dispatch_t *d = md_dispatch;
    if (d == NULL)
        return;
    d->destroying = 1;
    ev_timer_stop(d->loop, &d->retry);
    ev_timer_stop(d->loop, &d->reclaim);
    /* A read still in flight runs its callback now, with "unavailable"; what
     * Redis gave it stays pending in the group, for XAUTOCLAIM. */
    md_redis_destroy(d->redis);
    d->redis = NULL;
    md_dispatch_cancel_jobs(d, true);
    md_collectors_free(d);
    free(d->extra);
    d->extra = NULL;
    md_dispatch_drop_retries(d, false);
    md_route_destroy();
    if (d->held > 0)
        md_logf(MD_LOG_WARN, 0, MD_LOG_FIELDS(MD_LI("held", d->held)),
                "dispatch: batches still held at exit");
    md_dispatch = NULL;
    free(d);
}
