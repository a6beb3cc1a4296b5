/*
 * The queue between accepting and sending (see md_queue.h).
 *
 * Redis holds an index of the work, PostgreSQL holds the work:
 *   - md_queue_push (after COMMIT) runs one Lua script per batch that XADDs
 *     each message id to the stream of its priority and SADDs it to the live
 *     set, or ZADDs it to the scheduled set when send_at is ahead;
 *   - a Lua script, run every 250 ms by a timer in every worker (it is atomic,
 *     so running it everywhere is safe), moves the due members of the scheduled
 *     set into the streams (and the live set); retries come back the same way;
 *   - the sweeper (every queue_recovery_interval, one worker at a time across
 *     hosts) turns expired leases back to queued; when something may have
 *     lost queue entries, and every queue_recovery_full, it also pages through
 *     what PostgreSQL says is waiting and pushes, in one Lua script per page,
 *     only the ids no queue entry covers (see "which turns read everything");
 *     then it does the housekeeping (old dead letters, idle
 *     consumers of dead workers, the acknowledged stream entries, the queue
 *     gauges);
 *   - md_queue_requeue does the sweeper's paging for one scope, without the age
 *     threshold, for resume and retry-failed.
 * Scheduled-set members are "t:<id>" or "b:<id>" so the script knows the
 * stream; ZADD of the same member is idempotent, which makes re-adding safe.
 */
#include "md_queue.h"
#include "md_app.h"
#include "md_esp.h"
#include "md_id.h"
#include "md_log.h"
#include "md_messages.h"
#include "md_metrics.h"
#include "md_pg.h"
#include "md_redis.h"

#include <ev.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define MD_QUEUE_TICK         0.25 /* scheduler period */
#define MD_QUEUE_MOVE_LIMIT   "1000"
#define MD_QUEUE_MOVE_LIMIT_N 1000
#define MD_QUEUE_PUSH_CHUNK   500  /* messages per push script call */
#define MD_QUEUE_PAGE         2000 /* candidates per sweeper or requeue step */
#define MD_QUEUE_LEASE_PAGE   200  /* expired leases turned back per statement */
#define MD_QUEUE_DEAD_PAGE    10000
#define MD_QUEUE_LOCK         "mailerd:q:sweeper"
/* Which sweeper turns read everything (see "which turns read everything"). */
#define MD_QUEUE_SWEEP_RESET "mailerd:q:sweep-reset"
#define MD_QUEUE_SWEEP_MARK  "mailerd:q:sweep-mark"
#define MD_QUEUE_SWEEP_PROCS "mailerd:q:procs"
#define MD_QUEUE_ZERO_UUID   "00000000-0000-0000-0000-000000000000"
/* Heartbeat period: its own timer, so a long turn in this worker does not let
 * the deadline pass (another worker would take it for dead and read
 * everything again); it also sends an owed reset within a second. */
#define MD_QUEUE_BEAT 1.0

const char *const md_queue_stream[2] = {"mailerd:q:transactional", "mailerd:q:bulk"};

/* KEYS: transactional stream, bulk stream, scheduled set, live set.
 * ARGV: (priority 't' | 'b', id, at) per message; at "0" means now.
 * One call per batch keeps the accept path at one round trip; entry and live
 * membership are written together, so coverage never lags the stream. The
 * live ids go in one SADD: a call per id cost more than the XADD (INFO
 * commandstats in bench/ingest -S: 1.75 us per SADD, 0.86 per XADD, and
 * about 2.4 of Lua per message around them). unpack() of a chunk's ids is
 * within Lua's stack (MD_QUEUE_PUSH_CHUNK). */
static const char md_queue_push_lua[] =
    "local live, n = {}, 0\n"
    "for i = 1, #ARGV, 3 do\n"
    "  local p, id, at = ARGV[i], ARGV[i + 1], ARGV[i + 2]\n"
    "  if at == '0' then\n"
    "    redis.call('XADD', p == 'b' and KEYS[2] or KEYS[1], "
    "'*', 'id', id)\n"
    "    n = n + 1\n"
    "    live[n] = id\n"
    "  else\n"
    "    redis.call('ZADD', KEYS[3], at, p .. ':' .. id)\n"
    "  end\n"
    "end\n"
    "if n > 0 then redis.call('SADD', KEYS[4], unpack(live)) end\n"
    "return #ARGV / 3\n";

/* KEYS: scheduled set, transactional stream, bulk stream, live set. ARGV: now,
 * limit. Returns how many members moved (== limit: call again). The live ids
 * and the moved members go in one SADD and one ZREM, as in the push script
 * (the limit, MD_QUEUE_MOVE_LIMIT, is within what unpack() takes). */
static const char md_queue_move_lua[] =
    "local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])\n"
    "if #due == 0 then return 0 end\n"
    "local ids = {}\n"
    "for i, m in ipairs(due) do\n"
    "  local id = string.sub(m, 3)\n"
    "  redis.call('XADD', string.sub(m, 1, 2) == 'b:' and KEYS[3] or KEYS[2], '*', 'id', id)\n"
    "  ids[i] = id\n"
    "end\n"
    "redis.call('SADD', KEYS[4], unpack(ids))\n"
    "redis.call('ZREM', KEYS[1], unpack(due))\n"
    "return #due\n";

/*
 * Coverage check and push in one atomic step, so nothing can cover or uncover
 * an id between the check and the push. KEYS: transactional stream, bulk
 * stream, scheduled set, live set, sweeper lock. ARGV: lock token ("" for no
 * lock), lock ttl (ms), then (priority 't' | 'b', id, at) per message, at "0"
 * for a message that is due, else its due time: such a message is covered by
 * its scheduled-set member alone (a stream entry would not send it early) and
 * gets the member back when it has none. Returns how many were pushed or put
 * back, or -1 when another process holds the sweeper lock (the lock is
 * refreshed, or taken again after a Redis restart lost it).
 * A live member whose stream does not exist at all (the keys were deleted, not
 * the set) is not trusted: without an entry it would hide its message forever.
 * Membership is asked once per page (SMISMEMBER; a page is MD_QUEUE_PAGE ids,
 * within what unpack() takes): a call per id was most of a full turn's time in
 * Redis.
 */
static const char md_queue_cover_lua[] =
    "if ARGV[1] ~= '' then\n"
    "  local holder = redis.call('GET', KEYS[5])\n"
    "  if holder == ARGV[1] then redis.call('PEXPIRE', KEYS[5], ARGV[2])\n"
    "  elseif not holder then redis.call('SET', KEYS[5], ARGV[1], 'PX', ARGV[2])\n"
    "  else return -1 end\n"
    "end\n"
    "local live_ok = {t = redis.call('XLEN', KEYS[1]) > 0, b = redis.call('XLEN', KEYS[2]) > 0}\n"
    "local ids = {}\n"
    "for i = 4, #ARGV, 3 do ids[#ids + 1] = ARGV[i] end\n"
    "if #ids == 0 then return 0 end\n"
    "local member = redis.call('SMISMEMBER', KEYS[4], unpack(ids))\n"
    "local n = 0\n"
    "for j = 1, #ids do\n"
    "  local p, id, at = ARGV[3 * j], ids[j], ARGV[3 * j + 2]\n"
    "  local covered = at == '0' and live_ok[p] and member[j] == 1\n"
    "  if not covered then\n"
    "    covered = redis.call('ZSCORE', KEYS[3], 't:' .. id)\n"
    "      or redis.call('ZSCORE', KEYS[3], 'b:' .. id)\n"
    "  end\n"
    "  if at ~= '0' then\n"
    "    if not covered then\n"
    "      redis.call('ZADD', KEYS[3], at, p .. ':' .. id)\n"
    "      n = n + 1\n"
    "    end\n"
    "  elseif not covered then\n"
    "    redis.call('XADD', p == 'b' and KEYS[2] or KEYS[1], '*', 'id', id)\n"
    "    redis.call('SADD', KEYS[4], id)\n"
    "    n = n + 1\n"
    "  end\n"
    "end\n"
    "return n\n";

/*
 * KEYS: transactional stream, bulk stream. ARGV: group. Trims from each stream
 * the entries our group has read and acknowledged: everything older than its
 * oldest pending entry, or than the last one it read when none is pending.
 * Unread and pending entries are never trimmed, so the streams carry no length
 * cap: with one (XADD MAXLEN), a backlog past it lost unread entries whose ids
 * stayed in the live set, and the sweeper, taking them for covered, never put
 * their messages back. A stream no group has read yet is left alone. Exact
 * trimming (not MINID ~): once a turn, it costs little, and what remains is
 * exactly what is owed. Returns how many entries went.
 */
static const char md_queue_trim_lua[] =
    "local n = 0\n"
    "for i = 1, 2 do\n"
    "  local groups = redis.pcall('XINFO', 'GROUPS', KEYS[i])\n"
    "  local last\n"
    "  if type(groups) == 'table' and not groups.err then\n"
    "    for _, g in ipairs(groups) do\n"
    "      local f = {}\n"
    "      for k = 1, #g, 2 do f[g[k]] = g[k + 1] end\n"
    "      if f['name'] == ARGV[1] then last = f['last-delivered-id'] end\n"
    "    end\n"
    "  end\n"
    "  if last and last ~= '0-0' then\n"
    "    local p = redis.call('XPENDING', KEYS[i], ARGV[1])\n"
    "    local minid = last\n"
    "    if tonumber(p[1]) > 0 and p[2] then minid = p[2] end\n"
    "    n = n + redis.call('XTRIM', KEYS[i], 'MINID', minid)\n"
    "  end\n"
    "end\n"
    "return n\n";

/* KEYS: lock. ARGV: token, ttl (ms). 1 when this process holds it now (taken or
 * renewed: a turn cut short by an error takes it back), 0 when another does. */
static const char md_queue_lock_lua[] =
    "local holder = redis.call('GET', KEYS[1])\n"
    "if holder == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end\n"
    "if holder then return 0 end\n"
    "redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])\n"
    "return 1\n";

/* KEYS: lock. ARGV: token. Deletes the lock only if it is still ours. */
static const char md_queue_unlock_lua[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end\n"
    "return 0\n";

/* KEYS: transactional stream, bulk stream, scheduled set, dead stream. ARGV: group.
 * Returns {len, lag, pending} per stream, then ZCARD scheduled and XLEN dead. lag
 * is -1 when Redis cannot tell (entries deleted inside the unread range); a
 * stream without our group has lag = its length (nothing was read). */
static const char md_queue_stats_lua[] =
    "local out = {}\n"
    "for i = 1, 2 do\n"
    "  local len, lag, pend = redis.call('XLEN', KEYS[i]), 0, 0\n"
    "  if len > 0 then\n"
    "    lag = len\n"
    "    local g = redis.pcall('XINFO', 'GROUPS', KEYS[i])\n"
    "    if type(g) == 'table' and not g.err then\n"
    "      for _, grp in ipairs(g) do\n"
    "        local f = {}\n"
    "        for k = 1, #grp, 2 do f[grp[k]] = grp[k + 1] end\n"
    "        if f['name'] == ARGV[1] then\n"
    "          pend = f['pending'] or 0\n"
    "          if type(f['lag']) == 'number' then lag = f['lag'] else lag = -1 end\n"
    "        end\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  out[#out + 1] = len\n"
    "  out[#out + 1] = lag\n"
    "  out[#out + 1] = pend\n"
    "end\n"
    "out[#out + 1] = redis.call('ZCARD', KEYS[3])\n"
    "out[#out + 1] = redis.call('XLEN', KEYS[4])\n"
    "return out\n";

/* KEYS: transactional stream, bulk stream. ARGV: group, idle (ms). Deletes the
 * consumers idle that long that hold no pending entry: each dead worker leaves a
 * "host:pid" consumer behind, and XAUTOCLAIM moved its entries away already.
 * A live dispatcher reads every second, so it is never that idle; if one were,
 * its next XREADGROUP simply creates it again. Returns how many went. */
static const char md_queue_reap_lua[] =
    "local n = 0\n"
    "for i = 1, 2 do\n"
    "  local cs = redis.pcall('XINFO', 'CONSUMERS', KEYS[i], ARGV[1])\n"
    "  if type(cs) == 'table' and not cs.err then\n"
    "    for _, c in ipairs(cs) do\n"
    "      local f = {}\n"
    "      for k = 1, #c, 2 do f[c[k]] = c[k + 1] end\n"
    "      if f['pending'] == 0 and (f['idle'] or 0) > tonumber(ARGV[2]) then\n"
    "        redis.call('XGROUP', 'DELCONSUMER', KEYS[i], ARGV[1], f['name'])\n"
    "        n = n + 1\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "end\n"
    "return n\n";

/* The pause filter every selection here shares (queue_pauses is small). */
#define MD_QUEUE_NOT_PAUSED(m)                                                                     \
    " NOT EXISTS (SELECT 1 FROM queue_pauses p WHERE p.scope = '*' OR p.scope = " m                \
    ".tenant_id::text)"

/*
 * Leases that ran out (a worker died or stopped holding the message): back to
 * queued with a 'queued' event saying why, whatever the coverage, so a claim
 * can take them again, marked interrupted (MD_INTERRUPTED_ERROR_SQL). $1 limit, $2 uuid[] event ids
 * (one per row at most). Returns (id, priority, paused): a paused tenant's message is turned back
 * but not pushed (resume does that).
 */
#define MD_QUEUE_INTERRUPTED MD_INTERRUPTED_ERROR_SQL("d")
static const char md_queue_leases_sql[] =
    "WITH lost AS ("
    "  SELECT d.message_id FROM deliveries d WHERE d.status = 'sending' AND d.lease_until < now()"
    "  ORDER BY d.lease_until LIMIT $1 FOR UPDATE SKIP LOCKED),"
    " upd AS ("
    "  UPDATE deliveries d SET status = 'queued', lease_until = NULL, updated_at = now(),"
    "   last_error = " MD_QUEUE_INTERRUPTED
    "  FROM lost l WHERE d.message_id = l.message_id AND d.status = 'sending'"
    "  RETURNING d.message_id AS id, d.tenant_id, d.priority),"
    " ev AS ("
    "  INSERT INTO events (id, tenant_id, message_id, type, data)"
    "  SELECT e.eid, u.tenant_id, u.id, 'queued', '{\"reason\":\"lease_expired\"}'::jsonb"
    "  FROM (SELECT upd.*, row_number() OVER () AS rn FROM upd) u"
    "  JOIN unnest($2::uuid[]) WITH ORDINALITY AS e(eid, rn) ON e.rn = u.rn)"
    " SELECT u.id::text, u.priority, NOT" MD_QUEUE_NOT_PAUSED("u") " FROM upd u";

/*
 * One page of waiting messages in id order after the cursor $1, of tenant $3
 * (NULL: every tenant), not paused, at most $4: queued for at least $2 seconds
 * (the sweeper's grace: a message younger than that may have its push still
 * on the way; 0 for a requeue), scheduled or deferred and due for at least $2
 * seconds, or scheduled or deferred, not due yet, and unchanged for $2
 * seconds. Column 3 is the due time (epoch seconds) of those not due yet, whose
 * entry belongs in the scheduled set (a stream entry would be dropped by the
 * claim as early), NULL for the others. A Redis that lost its data lost the
 * scheduled set too: the full turn after it puts the members back, so a
 * message scheduled for later is sent on time, not found only once due by a
 * periodic full turn. deliveries_waiting_idx (migrations 0007, 0008) holds the
 * waiting rows in id order, so a page is one range scan from the cursor that
 * stops at its limit: a turn reads each waiting row once, whatever the backlog.
 * The pause filter is one-time ('*') and hashed (tenants), not a lookup per
 * row.
 */
static const char md_queue_waiting_sql[] =
    "SELECT d.message_id::text, d.priority,"
    "  CASE WHEN w.due > now() THEN extract(epoch FROM w.due)::text END"
    " FROM deliveries d CROSS JOIN LATERAL (SELECT CASE d.status WHEN 'queued' THEN NULL"
    "  ELSE coalesce(d.next_attempt_at,"
    "                (SELECT c.send_at FROM message_content c WHERE c.id = d.message_id),"
    "                d.updated_at) END AS due) w"
    " WHERE d.status IN ('queued', 'scheduled', 'deferred') AND d.message_id > $1::uuid"
    "  AND ($3::uuid IS NULL OR d.tenant_id = $3::uuid)"
    "  AND CASE WHEN w.due IS NULL OR w.due > now()"
    "       THEN d.updated_at <= now() - make_interval(secs => $2::float8)"
    "       ELSE w.due <= now() - make_interval(secs => $2::float8) END"
    "  AND NOT EXISTS (SELECT 1 FROM queue_pauses WHERE scope = '*')"
    "  AND d.tenant_id::text NOT IN (SELECT scope FROM queue_pauses)"
    " ORDER BY d.message_id LIMIT $4";

/* Exactly these ids ($1 uuid[]), those queued and not paused (retry-failed). */
static const char md_queue_ids_sql[] =
    "SELECT d.message_id::text, d.priority FROM deliveries d"
    " WHERE d.message_id = ANY($1::uuid[]) AND d.status = 'queued' AND" MD_QUEUE_NOT_PAUSED("d");

/* Dead letters older than $1 seconds, at most $2 per statement. */
static const char md_queue_dead_gc_sql[] =
    "WITH d AS (DELETE FROM dead_letters WHERE message_id IN ("
    "  SELECT message_id FROM dead_letters"
    "  WHERE created_at < now() - make_interval(secs => $1::float8) LIMIT $2)"
    " RETURNING 1) SELECT count(*) FROM d";

/* ---- state ---------------------------------------------------------------------- */

/* What a job is doing: the sweeper's steps in order, or a requeue's. */
enum {
    MD_QJ_LOCK,    /* sweeper: taking the lock */
    MD_QJ_LEASES,  /* sweeper: expired leases back to queued */
    MD_QJ_WAITING, /* sweeper and scope requeue: pages by id */
    MD_QJ_IDS,     /* requeue of given ids: pages of the array */
    MD_QJ_DEAD,    /* sweeper: dead-letter cleanup */
    MD_QJ_DONE
};

typedef struct md_queue_s md_queue_t;

#define MD_QUEUE_ACK_MAX   512  /* acknowledgements in one XACK/SREM at most */
#define MD_QUEUE_ACK_RETRY 0.25 /* seconds between tries of XACKs Redis did not take */
/* XACKs kept per stream while Redis is away, at most: a dispatcher reads
 * nothing meanwhile, so only what it held can be acknowledged; past this the
 * entries stay pending for XAUTOCLAIM. */
#define MD_QUEUE_ACK_KEEP  65536
#define MD_QUEUE_ENTRY_LEN 48 /* a stream entry id: two 64-bit numbers and a dash */
typedef char md_queue_entry_t[MD_QUEUE_ENTRY_LEN];
typedef struct md_queue_acks_s {
    md_queue_entry_t *entry[2]; /* by stream (transactional, bulk); grows while Redis is away */
    size_t nentry[2], cap[2];
    char (*live)[MD_UUID_STRLEN + 1];
    size_t nlive;
} md_queue_acks_t;

/*
 * One pass over PostgreSQL's waiting messages: the sweeper's turn, or one
 * md_queue_requeue call. Owned by the queue (listed in q->jobs) from start to
 * md_queue_job_end, which frees it; every store callback names it as ctx, and
 * at most one store call of a job is in flight at any time.
 */
typedef struct md_queue_job_s {
    md_queue_t *q;
    struct md_queue_job_s *next, *prev;
    int sweeper;
    int phase;
    double grace; /* seconds (the sweeper's age threshold), 0 for a requeue */
    char cursor[MD_UUID_STRLEN + 1];
    char tenant[MD_UUID_STRLEN + 1]; /* "" for every tenant */
    char **ids;                      /* requeue by ids: owned copies */
    size_t nids, next_id;
    long pushed;
    int housekeeping_sent; /* the turn's Redis housekeeping went out */
    int locked;            /* the sweeper holds MD_QUEUE_LOCK */
    /* The sweeper: whether this turn reads every waiting message, when it
     * started, and whether its waiting pages all went through. */
    int full;
    double started;
    int waiting_done;
    md_queue_requeue_cb cb;
    void *ctx;
    ev_timer later; /* runs cb from the loop when the job failed at once */
} md_queue_job_t;

struct md_queue_s {
    md_app_t *app;
    int push_script, move_script, cover_script, lock_script, unlock_script, stats_script,
        reap_script, trim_script, reset_script, scope_script;
    int moving; /* a move script call is in flight */
    int shutting;
    int dispatcher;       /* md_dispatch_start succeeded */
    int esp_up;           /* md_esp_init succeeded */
    ev_timer tick;        /* scheduler */
    ev_timer sweep;       /* sweeper period */
    ev_timer beat;        /* md_queue_heartbeat, every MD_QUEUE_BEAT */
    md_queue_job_t *turn; /* the sweeper's job while a turn runs */
    md_queue_job_t *jobs; /* every job alive (the turn too) */
    char token[320];      /* sweeper lock value: host:pid */
    double last_push_log;
    uint64_t push_errors_unlogged;
    /* Requests for full sweeper turns this process owes Redis (want) and has
     * made (done), see "which turns read everything"; md_redis reconnects seen. */
    unsigned reset_want, reset_done, reset_in_flight;
    uint64_t reconnects_seen;
    /* Acknowledgements waiting for the end of the loop iteration (see
     * md_queue_ack): entry ids per stream, message ids for the live set. */
    md_queue_acks_t acks;
    ev_prepare ack_flush;
    ev_timer ack_retry; /* XACKs kept while Redis is away (see md_queue_xack_cb) */
};

static md_queue_t *md_queue;

static void md_queue_ack_sync(void);

static double
md_queue_wall(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Push failures are normal during a Redis outage: count every one, log at most
 * once a second so a burst of accepts does not flood the log. */
/* Something may have left waiting mail without its queue entry: the next
 * sweeper turns read every waiting message (see "which turns read
 * everything"); md_queue_heartbeat tells Redis within a second. */
static void
md_queue_want_full(md_queue_t *q)
{
    q->reset_want++;
}

static void
md_queue_push_failed(const char *why)
{
    md_metrics_delivery(MD_METRICS_QUEUE_PUSH_ERRORS, 1);
    md_queue_t *q = md_queue;
    if (q == NULL) {
        md_logf(MD_LOG_WARN, 0, MD_LOG_FIELDS(MD_LS("error", why)),
                "queue push failed; the sweeper will requeue");
        return;
    }
    md_queue_want_full(q);
    q->push_errors_unlogged++;
    double now = ev_now(q->app->loop);
    if (now - q->last_push_log < 1.0)
        return;
    q->last_push_log = now;
    md_logf(MD_LOG_WARN, 0,
            MD_LOG_FIELDS(MD_LS("error", why), MD_LI("failures", q->push_errors_unlogged)),
            "queue push failed; the sweeper will requeue");
    q->push_errors_unlogged = 0;
}

static void
md_queue_cmd_cb(void *ctx, redisReply *reply, const char *err)
{
    md_unused(ctx);
    if (err)
        md_queue_push_failed(err);
    else if (reply->type == REDIS_REPLY_ERROR)
        md_queue_push_failed(reply->str);
}

static void
md_queue_send(int argc, const char **argv)
{
    md_queue_ack_sync();
    md_redis_t *r = md_app ? md_app->redis : NULL;
    if (r == NULL) {
        md_queue_push_failed("no redis");
        return;
    }
    if (md_redis_cmd(r, md_queue_cmd_cb, NULL, argc, argv, NULL) != MD_OK)
        md_queue_push_failed("redis unavailable");
}

void
md_queue_schedule(const char *id, int priority, double at)
{
    char member[64], score[64];
    snprintf(member, sizeof(member), "%c:%s", priority == MD_PRIORITY_BULK ? 'b' : 't', id);
    snprintf(score, sizeof(score), "%.6f", at);
    const char *argv[] = {"ZADD", MD_QUEUE_SCHEDULED, score, member};
    md_queue_send((int)md_nelems(argv), argv);
}

/*
 * Called after COMMIT by md_messages: one push script call per
 * MD_QUEUE_PUSH_CHUNK messages, all pipelined on the worker's connection. ids
 * are only read during the call (md_redis copies the arguments).
 */
void
md_queue_push(const char *const *ids, const int *priority, const double *send_at, size_t n)
{
    md_queue_t *q = md_queue;
    if (n == 0)
        return;
    if (q == NULL || q->app->redis == NULL) {
        md_queue_push_failed("queue off");
        return;
    }
    md_queue_ack_sync();
    double now = md_queue_wall();
    size_t chunk = md_min(n, (size_t)MD_QUEUE_PUSH_CHUNK);
    const char **argv = md_xmalloc((4 + 3 * chunk) * sizeof(*argv));
    char(*score)[32] = md_xmalloc(chunk * sizeof(*score));
    for (size_t base = 0; base < n; base += chunk) {
        size_t m = md_min(chunk, n - base);
        int argc = 0;
        argv[argc++] = md_queue_stream[0];
        argv[argc++] = md_queue_stream[1];
        argv[argc++] = MD_QUEUE_SCHEDULED;
        argv[argc++] = MD_QUEUE_LIVE;
        for (size_t i = 0; i < m; i++) {
            size_t k = base + i;
            int prio = priority ? priority[k] : MD_PRIORITY_TRANSACTIONAL;
            argv[argc++] = prio == MD_PRIORITY_BULK ? "b" : "t";
            argv[argc++] = ids[k];
            if (send_at && send_at[k] > now) {
                snprintf(score[i], sizeof(score[i]), "%.6f", send_at[k]);
                argv[argc++] = score[i];
            } else {
                argv[argc++] = "0";
            }
        }
        if (md_redis_eval(q->app->redis, q->push_script, 4, argc, argv, NULL, md_queue_cmd_cb,
                          NULL) != MD_OK)
            md_queue_push_failed("redis unavailable");
    }
    free(score);
    free(argv);
}

static void
md_queue_ack_cb(void *ctx, redisReply *reply, const char *err)
{
    md_unused(ctx);
    if (err || reply->type == REDIS_REPLY_ERROR)
        md_logf(MD_LOG_DEBUG, 0, MD_LOG_FIELDS(MD_LS("error", err ? err : reply->str)),
                "queue: SREM failed, the ids stay in the live set");
}

/* One XACK on the wire: its stream and entry ids, kept to send again. */
typedef struct {
    int s;
    size_t n;
    md_queue_entry_t entry[];
} md_queue_xack_t;

/* Appends entry ids to those stream s has to acknowledge. */
static void
md_queue_ack_add(md_queue_t *q, int s, const md_queue_entry_t *entry, size_t n)
{
    md_queue_acks_t *a = &q->acks;
    if (a->nentry[s] + n > MD_QUEUE_ACK_KEEP) {
        size_t room = MD_QUEUE_ACK_KEEP - md_min(a->nentry[s], MD_QUEUE_ACK_KEEP);
        md_logf(MD_LOG_DEBUG, 0, MD_LOG_FIELDS(MD_LI("entries", (long)(n - room))),
                "queue: XACK dropped, the entries stay pending");
        n = room;
    }
    if (n == 0)
        return;
    if (a->nentry[s] + n > a->cap[s]) {
        a->cap[s] = md_max(md_max(a->cap[s] * 2, a->nentry[s] + n), (size_t)MD_QUEUE_ACK_MAX);
        a->entry[s] = md_xrealloc(a->entry[s], a->cap[s] * sizeof(*a->entry[s]));
    }
    memmove(a->entry[s] + a->nentry[s], entry, n * sizeof(*entry)); /* entry may be a->entry[s] */
    a->nentry[s] += n;
}

/* Keeps entry ids Redis did not take and tries them again after
 * MD_QUEUE_ACK_RETRY. */
static void
md_queue_ack_keep(md_queue_t *q, int s, const md_queue_entry_t *entry, size_t n)
{
    md_queue_ack_add(q, s, entry, n);
    if (!ev_is_active(&q->ack_retry)) {
        ev_timer_set(&q->ack_retry, MD_QUEUE_ACK_RETRY, 0.);
        ev_timer_start(q->app->loop, &q->ack_retry);
    }
}

/*
 * An XACK that Redis did not answer (a lost connection, a command timeout) or
 * could not take (reconnecting) is sent again once the connection is back:
 * left pending, its entries would only be delivered again by XAUTOCLAIM after
 * queue_lease, and until then they hold back the sweeper's trimming of
 * everything newer in the stream (a Redis stall of a second under load did
 * that to a thousand entries). XACK is idempotent, so one sent twice is
 * harmless. An error reply (NOGROUP after Redis lost the streams) is final: the
 * entries went with them.
 */
static void
md_queue_xack_cb(void *ctx, redisReply *reply, const char *err)
{
    md_queue_xack_t *x = ctx;
    if (err && md_queue != NULL && !md_queue->shutting)
        md_queue_ack_keep(md_queue, x->s, x->entry, x->n);
    else if (err || reply->type == REDIS_REPLY_ERROR)
        md_logf(MD_LOG_DEBUG, 0, MD_LOG_FIELDS(MD_LS("error", err ? err : reply->str)),
                "queue: XACK failed, the entries stay pending");
    free(x);
}

/* Sends the XACKs of stream s in commands of MD_QUEUE_ACK_MAX entries at most;
 * what Redis does not take now is kept for the next try. */
static void
md_queue_ack_flush_stream(md_queue_t *q, int s)
{
    md_queue_acks_t *a = &q->acks;
    md_redis_t *r = q->app->redis;
    const char *argv[3 + MD_QUEUE_ACK_MAX];
    size_t off = 0;
    while (off < a->nentry[s]) {
        size_t n = md_min(a->nentry[s] - off, (size_t)MD_QUEUE_ACK_MAX);
        md_queue_xack_t *x = md_xmalloc(sizeof(*x) + n * sizeof(x->entry[0]));
        x->s = s;
        x->n = n;
        memcpy(x->entry, a->entry[s] + off, n * sizeof(x->entry[0]));
        argv[0] = "XACK";
        argv[1] = md_queue_stream[s];
        argv[2] = MD_QUEUE_GROUP;
        for (size_t i = 0; i < n; i++)
            argv[3 + i] = x->entry[i];
        if (r == NULL || md_redis_cmd(r, md_queue_xack_cb, x, 3 + (int)n, argv, NULL) != MD_OK) {
            free(x);
            break;
        }
        off += n;
    }
    size_t left = a->nentry[s] - off;
    a->nentry[s] = 0;
    if (left > 0 && !q->shutting) {
        memmove(a->entry[s], a->entry[s] + off, left * sizeof(*a->entry[s]));
        md_queue_ack_keep(q, s, a->entry[s], left); /* in place: nentry is 0 */
    }
}

/* Sends the XACKs of both streams and one SREM with every acknowledgement
 * gathered, pipelined on the worker's connection. */
static void
md_queue_ack_flush(md_queue_t *q)
{
    md_queue_acks_t *a = &q->acks;
    ev_prepare_stop(q->app->loop, &q->ack_flush);
    if (a->nentry[0] + a->nentry[1] + a->nlive == 0)
        return;
    md_queue_ack_flush_stream(q, 0);
    md_queue_ack_flush_stream(q, 1);
    if (a->nlive > 0) {
        md_redis_t *r = q->app->redis;
        const char *argv[2 + MD_QUEUE_ACK_MAX];
        argv[0] = "SREM";
        argv[1] = MD_QUEUE_LIVE;
        for (size_t i = 0; i < a->nlive; i++)
            argv[2 + i] = a->live[i];
        if (r != NULL)
            (void)md_redis_cmd(r, md_queue_ack_cb, NULL, 2 + (int)a->nlive, argv, NULL);
        a->nlive = 0;
    }
}

static void
md_queue_ack_flush_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    md_unused(loop);
    md_unused(revents);
    md_queue_ack_flush(w->data);
}

static void
md_queue_ack_retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    md_unused(loop);
    md_unused(revents);
    md_queue_ack_flush(w->data);
}

/* Flushes the acknowledgements gathered so far: before any other queue command,
 * so the commands reach Redis in the order they were made (an SREM must not
 * overtake the SADD of a deferred message's schedule). */
static void
md_queue_ack_sync(void)
{
    if (md_queue != NULL)
        md_queue_ack_flush(md_queue);
}

/*
 * XACK, and SREM from the live set when the message id is known. The
 * acknowledgements of one loop iteration (a record unit's entries, a read's
 * unclaimable ones) go as one XACK per stream and one SREM, sent before the
 * loop blocks again (an ev_prepare): two commands per record unit instead of two
 * per message, which was a tenth of Redis's and of the dispatcher's CPU in a
 * drain.
 */
void
md_queue_ack(int priority, const char *entry_id, const char *message_id)
{
    md_queue_t *q = md_queue;
    int s = priority == MD_PRIORITY_BULK;
    if (q == NULL || entry_id == NULL || strlen(entry_id) >= MD_QUEUE_ENTRY_LEN ||
        (message_id != NULL && strlen(message_id) > MD_UUID_STRLEN)) {
        md_log(MD_LOG_DEBUG, 0, "queue: XACK not sent, the entry stays pending");
        return;
    }
    md_queue_acks_t *a = &q->acks;
    if (a->live == NULL)
        a->live = md_xmalloc(MD_QUEUE_ACK_MAX * sizeof(*a->live));
    /* A full command's worth goes at once (unless Redis is away: then the
     * entries wait for the retry). */
    if ((a->nentry[s] >= MD_QUEUE_ACK_MAX && !ev_is_active(&q->ack_retry)) ||
        a->nlive == MD_QUEUE_ACK_MAX)
        md_queue_ack_flush(q);
    md_queue_entry_t e;
    md_strlcpy(e, entry_id, sizeof(e));
    md_queue_ack_add(q, s, &e, 1);
    if (message_id != NULL)
        md_strlcpy(a->live[a->nlive++], message_id, MD_UUID_STRLEN + 1);
    ev_prepare_start(q->app->loop, &q->ack_flush);
}

static void md_queue_log_cb(void *ctx, redisReply *reply, const char *err);

void
md_queue_dead(const char *id, const char *tenant_id, const char *code, const char *reason)
{
    char at[32];
    snprintf(at, sizeof(at), "%.3f", md_queue_wall());
    const char *argv[] = {"XADD",
                          MD_QUEUE_DEAD,
                          "MAXLEN",
                          "~",
                          MD_QUEUE_DEAD_MAXLEN,
                          "*",
                          "id",
                          id ? id : "",
                          "tenant",
                          tenant_id ? tenant_id : "",
                          "code",
                          code ? code : "",
                          "reason",
                          reason ? reason : "",
                          "at",
                          at};
    md_queue_ack_sync();
    md_redis_t *r = md_app ? md_app->redis : NULL;
    /* Not a push error: the dead_letters row is the record, this entry is for
     * operators' tools; losing one is logged and nothing else. */
    if (r == NULL || md_redis_cmd(r, md_queue_log_cb, (void *)"dead stream add",
                                  (int)md_nelems(argv), argv, NULL) != MD_OK)
        md_log(MD_LOG_WARN, 0, "queue: dead-letter stream entry not sent (Redis unavailable)");
}

/* The acknowledged entries trimmed: a failure is logged, a success only
 * counted at debug level (every turn trims some while mail flows). */
static void
md_queue_trim_cb(void *ctx, redisReply *reply, const char *err)
{
    md_unused(ctx);
    if (err || reply->type == REDIS_REPLY_ERROR)
        md_logf(MD_LOG_WARN, 0,
                MD_LOG_FIELDS(MD_LS("error", err ? err : reply->str), MD_LS("step", "stream trim")),
                "queue: Redis step failed");
    else if (reply->type == REDIS_REPLY_INTEGER && reply->integer > 0)
        md_logf(MD_LOG_DEBUG, 0, MD_LOG_FIELDS(MD_LI("removed", reply->integer)),
                "queue: acknowledged stream entries trimmed");
}

/* Logs a failed fire-and-forget command (ctx names it: a static string);
 * nothing else depends on it. */
static void
md_queue_log_cb(void *ctx, redisReply *reply, const char *err)
{
    const char *what = ctx;
    if (err || reply->type == REDIS_REPLY_ERROR)
        md_logf(MD_LOG_WARN, 0,
                MD_LOG_FIELDS(MD_LS("error", err ? err : reply->str), MD_LS("step", what)),
                "queue: Redis step failed");
    else if (reply->type == REDIS_REPLY_INTEGER && reply->integer > 0)
        md_logf(MD_LOG_INFO, 0,
                MD_LOG_FIELDS(MD_LS("step", what), MD_LI("removed", reply->integer)),
                "queue: housekeeping");
}

/* ---- scheduler ------------------------------------------------------------------ */

static void md_queue_move(md_queue_t *q);

static void
md_queue_move_cb(void *ctx, redisReply *reply, const char *err)
{
    md_queue_t *q = ctx;
    q->moving = 0;
    if (err || reply->type == REDIS_REPLY_ERROR) {
        md_logf(MD_LOG_WARN, 0, MD_LOG_FIELDS(MD_LS("error", err ? err : reply->str)),
                "queue: moving due scheduled messages failed");
        return;
    }
    /* A full batch means more are due now: go again rather than wait a tick. */
    if (!q->shutting && reply->type == REDIS_REPLY_INTEGER &&
        reply->integer >= MD_QUEUE_MOVE_LIMIT_N)
        md_queue_move(q);
}

static void
md_queue_move(md_queue_t *q)
{
    if (q->moving || q->app->redis == NULL || !md_redis_ready(q->app->redis))
        return;
    char now[64];
    snprintf(now, sizeof(now), "%.6f", md_queue_wall());
    const char *argv[] = {
        MD_QUEUE_SCHEDULED, md_queue_stream[0], md_queue_stream[1], MD_QUEUE_LIVE, now,
        MD_QUEUE_MOVE_LIMIT};
    if (md_redis_eval(q->app->redis, q->move_script, 4, (int)md_nelems(argv), argv, NULL,
                      md_queue_move_cb, q) == MD_OK)
        q->moving = 1;
}

static void
md_queue_tick_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    md_unused(loop);
    md_unused(revents);
    md_queue_move(t->data);
}

/* ---- the sweeper and md_queue_requeue ------------------------------------------------
 *
 * One worker at a time across hosts through a Redis lock (MD_QUEUE_LOCK, value
 * "host:pid", a TTL refreshed by every page). Not the PostgreSQL advisory lock
 * of the first recovery scan: a turn is many statements (a page each) and
 * pg_try_advisory_xact_lock lasts one, while a session lock would pin one of
 * the pool's shared pipelined connections. The sweeper is useless without
 * Redis anyway, and a lock lost with Redis' data (a restart) only lets two
 * workers sweep at once for a while: the coverage check and push are one
 * atomic script, so that costs nothing but a few queries.
 */

static void md_queue_job_step(md_queue_job_t *job);

static void
md_queue_sweep_again(md_queue_t *q, double after)
{
    if (q->shutting)
        return;
    ev_timer_stop(q->app->loop, &q->sweep);
    ev_timer_set(&q->sweep, after, 0.);
    ev_timer_start(q->app->loop, &q->sweep);
}

static long long
md_queue_lock_ttl_ms(const md_queue_t *q)
{
    return (long long)(md_max(10.0, 3 * q->app->conf->queue_recovery_interval) * 1000);
}

/* ---- which turns read everything ------------------------------------------------------
 *
 * A waiting message loses its queue entry only through something a process
 * sees: a failed Redis write after its commit (retries' ZADDs included), a
 * requeue or a sweeper turn that failed, a write whose outcome is unknown, a Redis that restarted
 * or failed over (our connections drop), or a process that dies between a commit and its push (when
 * it comes back it knows; when it does not, its heartbeat stops). So a turn reads every waiting
 * message (a full turn) only when one of those may have happened, and at least every
 * queue_recovery_full for what no process saw (keys deleted by hand); the other turns turn expired
 * leases back and do the housekeeping. Reading the whole backlog every turn cost, during an ESP
 * outage, a core of PostgreSQL for seconds per interval and stalled Redis with
 * the coverage scripts: in bench/ingest -S, 400,000 waiting rows took about
 * 6 s a turn, and the machine time per accepted message rose round by round.
 *
 * Redis holds (MD_QUEUE_SWEEP_*): "reset", a time in ms before which no full
 * turn has yet seen everything an event may have left uncovered (the event's
 * time + grace: younger rows are not judged); "mark", when the last complete
 * full turn started; "procs", each process's heartbeat deadline. A turn is
 * full when there is no mark (first start, or Redis lost it), when the mark is
 * older than reset, when queue_recovery_full has passed since it, or when
 * queue_recovery_full is at most queue_recovery_interval (every turn). The
 * turn's own script moves reset when it finds a process past its deadline.
 */

/* KEYS: reset. ARGV: a time (ms). Moves reset forward to it, never back. */
static const char md_queue_reset_lua[] =
    "local v = tonumber(redis.call('GET', KEYS[1]) or '0')\n"
    "if tonumber(ARGV[1]) > v then redis.call('SET', KEYS[1], ARGV[1]) end\n"
    "return 1\n";

/* KEYS: procs, reset, mark. ARGV: now (ms), grace (ms). Drops the processes
 * past their deadline (moving reset to now + grace if any), and returns
 * {reset, mark or nil}. A reset beyond now + grace (written by a host whose
 * clock runs ahead) comes back to it: an event already reported happened by
 * now, so a turn a grace from now judges what it left, and turns do not stay
 * full until that clock's future. */
static const char md_queue_scope_lua[] =
    "local now, dead = tonumber(ARGV[1]), 0\n"
    "local procs = redis.call('HGETALL', KEYS[1])\n"
    "for i = 1, #procs, 2 do\n"
    "  if tonumber(procs[i + 1]) < now then redis.call('HDEL', KEYS[1], procs[i]) dead = dead + 1 "
    "end\n"
    "end\n"
    "local reset, limit = tonumber(redis.call('GET', KEYS[2]) or '0'), now + tonumber(ARGV[2])\n"
    "if (dead > 0 and limit > reset) or reset > limit then\n"
    "  reset = limit\n"
    "  redis.call('SET', KEYS[2], reset)\n"
    "end\n"
    "return {tostring(reset), redis.call('GET', KEYS[3])}\n";

static void md_queue_reset_cb(void *ctx, redisReply *reply, const char *err);

/* Asks for full turns up to now + queue_recovery_interval, settling the
 * requests made so far (reset_want) when Redis says it took it. */
static int
md_queue_send_reset(md_queue_t *q, double now)
{
    char until[32];
    snprintf(until, sizeof(until), "%.0f",
             floor((now + q->app->conf->queue_recovery_interval) * 1000));
    const char *argv[] = {MD_QUEUE_SWEEP_RESET, until};
    int rc = md_redis_eval(q->app->redis, q->reset_script, 1, 2, argv, NULL, md_queue_reset_cb,
                           (void *)(uintptr_t)q->reset_want);
    if (rc == MD_OK)
        q->reset_in_flight = 1;
    return rc;
}

/*
 * Every worker, every MD_QUEUE_BEAT: renews its heartbeat, and moves reset when
 * this process owes it (a failed push, an unknown outcome, its start) or its
 * Redis connections came back since the last look.
 */
static void
md_queue_heartbeat(md_queue_t *q)
{
    if (!md_redis_ready(q->app->redis))
        return;
    md_redis_stats_t st;
    md_redis_stats(q->app->redis, &st);
    if (st.reconnects != q->reconnects_seen) {
        q->reconnects_seen = st.reconnects;
        md_queue_want_full(q);
    }
    double now = md_queue_wall();
    char deadline[32];
    snprintf(deadline, sizeof(deadline), "%.0f",
             floor(now * 1000) + (double)md_queue_lock_ttl_ms(q));
    const char *hb[] = {"HSET", MD_QUEUE_SWEEP_PROCS, q->token, deadline};
    (void)md_redis_cmd(q->app->redis, md_queue_log_cb, (void *)"heartbeat", 4, hb, NULL);
    if (q->reset_want == q->reset_done || q->reset_in_flight)
        return;
    md_queue_send_reset(q, now);
}

static void
md_queue_beat_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    md_unused(loop);
    md_unused(revents);
    md_queue_heartbeat(t->data);
}

static void
md_queue_reset_cb(void *ctx, redisReply *reply, const char *err)
{
    md_queue_t *q = md_queue;
    if (q == NULL)
        return;
    q->reset_in_flight = 0;
    if (!err && reply->type == REDIS_REPLY_INTEGER)
        q->reset_done = (unsigned)(uintptr_t)ctx;
}

void
md_queue_suspect(void)
{
    if (md_queue)
        md_queue_want_full(md_queue);
}

/* Records a complete full turn; sent before the unlock. */
static void
md_queue_mark(md_queue_job_t *job)
{
    if (!job->full || !job->waiting_done)
        return;
    char mark[32];
    snprintf(mark, sizeof(mark), "%.0f", floor(job->started * 1000));
    const char *argv[] = {"SET", MD_QUEUE_SWEEP_MARK, mark};
    (void)md_redis_cmd(job->q->app->redis, md_queue_log_cb, (void *)"sweeper mark", 3, argv, NULL);
}

/*
 * Ends a job and frees it. err NULL: finished (for the sweeper: its lock is
 * released); otherwise a static string. A requeue's cb runs here. Store
 * commands are only sent when the job finished normally, never on an error,
 * which may come from a client being destroyed.
 */
static void
md_queue_job_end(md_queue_job_t *job, const char *err)
{
    md_queue_t *q = job->q;
    if (job->prev)
        job->prev->next = job->next;
    else
        q->jobs = job->next;
    if (job->next)
        job->next->prev = job->prev;
    ev_timer_stop(q->app->loop, &job->later);
    /* A turn cut short may have turned leases back to queued without their
     * entries, a requeue left its messages uncovered: the sweeper reads
     * everything (see "which turns read everything"). */
    if (err)
        md_queue_want_full(q);
    if (job->sweeper) {
        q->turn = NULL;
        if (job->pushed > 0)
            md_logf(MD_LOG_NOTICE, 0, MD_LOG_FIELDS(MD_LI("requeued", job->pushed)),
                    "queue: the sweeper put uncovered messages back on the queue");
        double interval = q->app->conf->queue_recovery_interval;
        if (err) {
            md_logf(MD_LOG_WARN, 0, MD_LOG_FIELDS(MD_LS("error", err)),
                    "queue: sweeper turn cut short; the next one goes on");
            md_queue_sweep_again(q, md_min(interval, 5.0));
        } else {
            if (job->locked && q->app->redis && md_redis_ready(q->app->redis)) {
                md_queue_mark(job);
                const char *argv[] = {MD_QUEUE_LOCK, q->token};
                (void)md_redis_eval(q->app->redis, q->unlock_script, 1, 2, argv, NULL,
                                    md_redis_ignore_cb, NULL);
            }
            md_queue_sweep_again(q, interval);
        }
    } else if (job->cb) {
        job->cb(job->ctx, err ? -1 : job->pushed, err);
    }
    for (size_t i = 0; i < job->nids; i++)
        free(job->ids[i]);
    free(job->ids);
    free(job);
}

/* The page is done: the same step again when it was full, else the next one. */
static void
md_queue_job_advance(md_queue_job_t *job, bool full)
{
    if (job->sweeper && job->q->shutting) {
        md_queue_job_end(job, NULL);
        return;
    }
    if (!full) {
        switch (job->phase) {
        case MD_QJ_LEASES:
            job->phase = job->sweeper && !job->full ? MD_QJ_DEAD : MD_QJ_WAITING;
            memcpy(job->cursor, MD_QUEUE_ZERO_UUID, sizeof(job->cursor));
            break;
        case MD_QJ_WAITING:
            job->phase = job->sweeper ? MD_QJ_DEAD : MD_QJ_DONE;
            job->waiting_done = 1;
            break;
        default:
            job->phase = MD_QJ_DONE;
        }
    }
    if (job->phase == MD_QJ_DONE)
        md_queue_job_end(job, NULL);
    else
        md_queue_job_step(job);
}

typedef struct md_queue_cover_s {
    md_queue_job_t *job;
    bool full;
} md_queue_cover_t;

static void
md_queue_cover_cb(void *ctx, redisReply *reply, const char *err)
{
    md_queue_cover_t *c = ctx;
    md_queue_job_t *job = c->job;
    bool full = c->full;
    free(c);
    if (err) {
        md_queue_job_end(job, err);
        return;
    }
    if (reply->type != REDIS_REPLY_INTEGER) {
        md_logf(MD_LOG_WARN, 0,
                MD_LOG_FIELDS(MD_LS("error", reply->type == REDIS_REPLY_ERROR ? reply->str : "?")),
                "queue: coverage script failed");
        md_queue_job_end(job, "redis_error");
        return;
    }
    if (reply->integer < 0) { /* another process sweeps now: leave it to it */
        job->locked = 0;
        md_queue_job_end(job, NULL);
        return;
    }
    if (reply->integer > 0) {
        job->pushed += reply->integer;
        md_metrics_delivery(MD_METRICS_REQUEUED, (uint64_t)reply->integer);
    }
    md_queue_job_advance(job, full);
}

/*
 * Checks the rows of a page (column 0 id, column 1 priority; rows where column
 * skip_col is "t" are left out, skip_col < 0 for none; column due_col, when
 * >= 0, the due time of a message not due yet, else NULL) against Redis and
 * pushes the uncovered ones; then the job advances (full: the page was full).
 */
static void
md_queue_cover(md_queue_job_t *job, const PGresult *res, int skip_col, int due_col, bool full)
{
    md_queue_t *q = job->q;
    int n = PQntuples(res);
    char ttl[32];
    snprintf(ttl, sizeof(ttl), "%lld", md_queue_lock_ttl_ms(q));
    const char **argv = md_xmalloc((7 + 3 * (size_t)n) * sizeof(*argv));
    int argc = 0;
    argv[argc++] = md_queue_stream[0];
    argv[argc++] = md_queue_stream[1];
    argv[argc++] = MD_QUEUE_SCHEDULED;
    argv[argc++] = MD_QUEUE_LIVE;
    argv[argc++] = MD_QUEUE_LOCK;
    argv[argc++] = job->sweeper ? q->token : "";
    argv[argc++] = ttl;
    for (int i = 0; i < n; i++) {
        if (skip_col >= 0 && PQgetvalue(res, i, skip_col)[0] == 't')
            continue;
        argv[argc++] = strcmp(PQgetvalue(res, i, 1), "bulk") == 0 ? "b" : "t";
        argv[argc++] = PQgetvalue(res, i, 0);
        argv[argc++] =
            due_col >= 0 && !PQgetisnull(res, i, due_col) ? PQgetvalue(res, i, due_col) : "0";
    }
    /* Nothing to check, and no lock to refresh on a requeue: straight on. */
    if (argc == 7 && !job->sweeper) {
        free(argv);
        md_queue_job_advance(job, full);
        return;
    }
    md_queue_cover_t *c = md_xmalloc(sizeof(*c));
    c->job = job;
    c->full = full;
    int rc = q->app->redis ? md_redis_eval(q->app->redis, q->cover_script, 5, argc, argv, NULL,
                                           md_queue_cover_cb, c)
                           : MD_AGAIN;
    free(argv);
    if (rc != MD_OK) {
        free(c);
        md_queue_job_end(job, "redis unavailable");
    }
}

static void
md_queue_page_cb(void *ctx, const md_pg_result_t *res)
{
    md_queue_job_t *job = ctx;
    if (res->error) {
        md_logf(MD_LOG_WARN, 0,
                MD_LOG_FIELDS(MD_LS("error", res->error),
                              MD_LS("detail", res->message ? res->message : "")),
                "queue: selecting waiting messages failed");
        md_queue_job_end(job, res->error);
        return;
    }
    int n = PQntuples(res->res);
    switch (job->phase) {
    case MD_QJ_LEASES:
        if (n > 0)
            md_logf(MD_LOG_NOTICE, 0, MD_LOG_FIELDS(MD_LI("messages", n)),
                    "queue: leases expired, messages turned back to queued");
        md_queue_cover(job, res->res, 2, -1, n >= MD_QUEUE_LEASE_PAGE);
        break;
    case MD_QJ_WAITING:
        if (n > 0)
            md_strlcpy(job->cursor, PQgetvalue(res->res, n - 1, 0), sizeof(job->cursor));
        md_queue_cover(job, res->res, -1, 2, n >= MD_QUEUE_PAGE);
        break;
    case MD_QJ_IDS:
        md_queue_cover(job, res->res, -1, -1, job->next_id < job->nids);
        break;
    case MD_QJ_DEAD:
        md_queue_job_advance(job, n == 1 && atol(PQgetvalue(res->res, 0, 0)) >= MD_QUEUE_DEAD_PAGE);
        break;
    default:
        md_queue_job_end(job, "internal");
    }
}

static void
md_queue_gauge_cb(void *ctx, const md_queue_redis_stats_t *s, const char *err)
{
    md_unused(ctx);
    if (err)
        return;
    long long depth[2];
    for (int i = 0; i < 2; i++)
        depth[i] = s->lag[i] >= 0 ? s->lag[i] : s->stream_len[i];
    md_metrics_queue_gauges(depth[0], depth[1], s->scheduled, s->pending[0] + s->pending[1],
                            s->dead);
}

/* Redis housekeeping of a turn, sent together and answered in any order: the
 * dead stream trimmed to the retention, idle consumers of dead workers, the
 * acknowledged entries of the streams, gauges. */
static void
md_queue_housekeeping_redis(md_queue_t *q)
{
    const md_conf_t *conf = q->app->conf;
    char minid[48], idle[32];
    double cut = md_queue_wall() - conf->queue_dead_retention;
    snprintf(minid, sizeof(minid), "%.0f", cut > 0 ? floor(cut * 1000) : 0.);
    const char *trim[] = {"XTRIM", MD_QUEUE_DEAD, "MINID", minid};
    (void)md_redis_cmd(q->app->redis, md_queue_log_cb, (void *)"dead stream trim", 4, trim, NULL);
    snprintf(idle, sizeof(idle), "%.0f", md_max(2 * conf->queue_lease, 3600.0) * 1000);
    const char *reap[] = {md_queue_stream[0], md_queue_stream[1], MD_QUEUE_GROUP, idle};
    (void)md_redis_eval(q->app->redis, q->reap_script, 2, 4, reap, NULL, md_queue_log_cb,
                        (void *)"idle consumers");
    const char *trim_streams[] = {md_queue_stream[0], md_queue_stream[1], MD_QUEUE_GROUP};
    (void)md_redis_eval(q->app->redis, q->trim_script, 2, 3, trim_streams, NULL, md_queue_trim_cb,
                        NULL);
    (void)md_queue_redis_stats(md_queue_gauge_cb, NULL);
}

/* reset and mark (see "which turns read everything"): is this turn full? */
static void
md_queue_scope_cb(void *ctx, redisReply *reply, const char *err)
{
    md_queue_job_t *job = ctx;
    if (err || reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
        reply->element[0]->type != REDIS_REPLY_STRING) {
        md_queue_job_end(job, err ? err : "redis_error");
        return;
    }
    const md_conf_t *conf = job->q->app->conf;
    const redisReply *mark = reply->element[1];
    double reset = atof(reply->element[0]->str) / 1000;
    double last_full = mark->type == REDIS_REPLY_STRING ? atof(mark->str) / 1000 : 0;
    job->started = md_queue_wall();
    job->full = last_full <= 0 || last_full < reset ||
                conf->queue_recovery_full <= conf->queue_recovery_interval ||
                job->started - last_full >= conf->queue_recovery_full;
    md_metrics_delivery(job->full ? MD_METRICS_SWEEPS_FULL : MD_METRICS_SWEEPS_RECENT, 1);
    job->phase = MD_QJ_LEASES;
    md_queue_job_step(job);
}

static void
md_queue_lock_cb(void *ctx, redisReply *reply, const char *err)
{
    md_queue_job_t *job = ctx;
    if (err || reply->type != REDIS_REPLY_INTEGER) {
        md_queue_job_end(job, err ? err : "redis_error");
        return;
    }
    if (reply->integer != 1) { /* another process's turn */
        md_queue_job_end(job, NULL);
        return;
    }
    md_queue_t *q = job->q;
    job->locked = 1;
    for (int s = 0; s < 2; s++) {
        /* The group first (BUSYGROUP but after a Redis restart), from "0" so the
         * entries pushed before any dispatcher read are delivered. */
        const char *create[] = {"XGROUP",       "CREATE", md_queue_stream[s],
                                MD_QUEUE_GROUP, "0",      "MKSTREAM"};
        (void)md_redis_cmd(q->app->redis, md_redis_ignore_cb, NULL, 6, create, NULL);
    }
    char now[32], grace[32];
    snprintf(now, sizeof(now), "%.0f", floor(md_queue_wall() * 1000));
    snprintf(grace, sizeof(grace), "%.0f", floor(job->grace * 1000));
    const char *argv[] = {MD_QUEUE_SWEEP_PROCS, MD_QUEUE_SWEEP_RESET, MD_QUEUE_SWEEP_MARK, now,
                          grace};
    if (md_redis_eval(q->app->redis, q->scope_script, 3, 5, argv, NULL, md_queue_scope_cb, job) !=
        MD_OK)
        md_queue_job_end(job, "redis unavailable");
}

/* Sends the store call of the job's current step; on refusal the job ends. */
static void
md_queue_job_step(md_queue_job_t *job)
{
    md_queue_t *q = job->q;
    md_pg_pool_t *pg = q->app->pg;
    int rc = MD_AGAIN;
    switch (job->phase) {
    case MD_QJ_LOCK: {
        char ttl[32];
        snprintf(ttl, sizeof(ttl), "%lld", md_queue_lock_ttl_ms(q));
        const char *argv[] = {MD_QUEUE_LOCK, q->token, ttl};
        if (q->app->redis)
            rc = md_redis_eval(q->app->redis, q->lock_script, 1, 3, argv, NULL, md_queue_lock_cb,
                               job);
        if (rc != MD_OK)
            md_queue_job_end(job, "redis unavailable");
        return;
    }
    case MD_QJ_LEASES: {
        char lim[16];
        snprintf(lim, sizeof(lim), "%d", MD_QUEUE_LEASE_PAGE);
        char *eids = md_xmalloc(2 + (size_t)MD_QUEUE_LEASE_PAGE * (MD_UUID_STRLEN + 1));
        char *p = eids;
        *p++ = '{';
        for (int i = 0; i < MD_QUEUE_LEASE_PAGE; i++) {
            if (i)
                *p++ = ',';
            md_uuid7(p);
            p += MD_UUID_STRLEN;
        }
        *p++ = '}';
        *p = '\0';
        const char *values[] = {lim, eids};
        md_pg_query_t qq = {.stmt = "md_queue_leases", .nparams = 2, .values = values};
        rc = pg ? md_pg_exec(pg, &qq, md_queue_page_cb, job) : MD_AGAIN;
        free(eids);
        break;
    }
    case MD_QJ_WAITING: {
        char grace[32], lim[16];
        snprintf(grace, sizeof(grace), "%.3f", job->grace);
        snprintf(lim, sizeof(lim), "%d", MD_QUEUE_PAGE);
        const char *values[] = {job->cursor, grace, job->tenant[0] ? job->tenant : NULL, lim};
        md_pg_query_t qq = {.stmt = "md_queue_waiting", .nparams = 4, .values = values};
        rc = pg ? md_pg_exec(pg, &qq, md_queue_page_cb, job) : MD_AGAIN;
        break;
    }
    case MD_QJ_IDS: {
        size_t m = md_min(job->nids - job->next_id, (size_t)MD_QUEUE_PAGE);
        char *arr = md_xmalloc(3 + m * (MD_UUID_STRLEN + 1));
        char *p = arr;
        *p++ = '{';
        for (size_t i = 0; i < m; i++) {
            if (i)
                *p++ = ',';
            memcpy(p, job->ids[job->next_id + i], MD_UUID_STRLEN);
            p += MD_UUID_STRLEN;
        }
        *p++ = '}';
        *p = '\0';
        job->next_id += m;
        const char *values[] = {arr};
        md_pg_query_t qq = {.stmt = "md_queue_ids", .nparams = 1, .values = values};
        rc = pg ? md_pg_exec(pg, &qq, md_queue_page_cb, job) : MD_AGAIN;
        free(arr);
        break;
    }
    case MD_QJ_DEAD: {
        if (q->app->redis && md_redis_ready(q->app->redis) && !job->housekeeping_sent) {
            md_queue_housekeeping_redis(q);
            job->housekeeping_sent = 1;
        }
        char secs[32], lim[16];
        snprintf(secs, sizeof(secs), "%.3f", q->app->conf->queue_dead_retention);
        snprintf(lim, sizeof(lim), "%d", MD_QUEUE_DEAD_PAGE);
        const char *values[] = {secs, lim};
        md_pg_query_t qq = {.stmt = "md_queue_dead_gc", .nparams = 2, .values = values};
        rc = pg ? md_pg_exec(pg, &qq, md_queue_page_cb, job) : MD_AGAIN;
        break;
    }
    default:
        md_queue_job_end(job, NULL);
        return;
    }
    if (rc != MD_OK)
        md_queue_job_end(job, "postgres unavailable");
}

static void
md_queue_job_later_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    md_unused(loop);
    md_unused(revents);
    md_queue_job_step(t->data);
}

static md_queue_job_t *
md_queue_job_new(md_queue_t *q, int sweeper, int phase)
{
    md_queue_job_t *job = md_xcalloc(1, sizeof(*job));
    job->q = q;
    job->sweeper = sweeper;
    job->phase = phase;
    memcpy(job->cursor, MD_QUEUE_ZERO_UUID, sizeof(job->cursor));
    ev_timer_init(&job->later, md_queue_job_later_cb, 0., 0.);
    job->later.data = job;
    job->next = q->jobs;
    if (q->jobs)
        q->jobs->prev = job;
    q->jobs = job;
    return job;
}

static void
md_queue_sweep_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    md_unused(loop);
    md_unused(revents);
    md_queue_t *q = t->data;
    if (q->shutting || q->turn)
        return;
    /* Needs both stores: requeueing into an unreachable Redis would only mark
     * rows as handled. */
    if (!md_pg_pool_ready(q->app->pg) || !md_redis_ready(q->app->redis)) {
        md_queue_sweep_again(q, 1.0);
        return;
    }
    md_queue_job_t *job = md_queue_job_new(q, 1, MD_QJ_LOCK);
    job->grace = q->app->conf->queue_recovery_interval;
    q->turn = job;
    md_queue_job_step(job);
}

static bool
md_queue_is_uuid(const char *s)
{
    if (s == NULL || strlen(s) != MD_UUID_STRLEN)
        return false;
    for (size_t i = 0; i < MD_UUID_STRLEN; i++) {
        char c = s[i];
        bool ok =
            (i == 8 || i == 13 || i == 18 || i == 23)
                ? c == '-'
                : ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'));
        if (!ok)
            return false;
    }
    return true;
}

int
md_queue_requeue(const char *tenant_id, const char *const *ids, size_t n, md_queue_requeue_cb cb,
                 void *ctx)
{
    md_queue_t *q = md_queue;
    if (q == NULL || (tenant_id != NULL && !md_queue_is_uuid(tenant_id)) || (n > 0 && ids == NULL))
        return MD_ERROR;
    for (size_t i = 0; i < n; i++)
        if (!md_queue_is_uuid(ids[i]))
            return MD_ERROR;
    if (!md_pg_pool_ready(q->app->pg) || !md_redis_ready(q->app->redis)) {
        md_queue_want_full(q); /* its messages wait uncovered */
        return MD_AGAIN;
    }
    md_queue_job_t *job = md_queue_job_new(q, 0, n > 0 ? MD_QJ_IDS : MD_QJ_WAITING);
    job->cb = cb;
    job->ctx = ctx;
    if (tenant_id)
        memcpy(job->tenant, tenant_id, MD_UUID_STRLEN + 1);
    if (n > 0) {
        job->ids = md_xcalloc(n, sizeof(*job->ids));
        for (size_t i = 0; i < n; i++)
            job->ids[i] = md_xstrdup(ids[i]);
        job->nids = n;
    }
    /* From the loop, so cb never runs inside this call. */
    ev_timer_start(q->app->loop, &job->later);
    return MD_OK;
}

/* ---- Redis figures ----------------------------------------------------------------- */

typedef struct md_queue_stats_req_s {
    md_queue_stats_cb cb;
    void *ctx;
} md_queue_stats_req_t;

static void
md_queue_stats_reply(void *ctx, redisReply *reply, const char *err)
{
    md_queue_stats_req_t *rq = ctx;
    md_queue_redis_stats_t s;
    memset(&s, 0, sizeof(s));
    if (err == NULL && (reply->type != REDIS_REPLY_ARRAY || reply->elements != 8))
        err = reply->type == REDIS_REPLY_ERROR ? "redis_error" : "unexpected reply";
    for (size_t i = 0; err == NULL && i < 8; i++)
        if (reply->element[i]->type != REDIS_REPLY_INTEGER)
            err = "unexpected reply";
    if (err == NULL) {
        for (int p = 0; p < 2; p++) {
            s.stream_len[p] = reply->element[3 * p]->integer;
            s.lag[p] = reply->element[3 * p + 1]->integer;
            s.pending[p] = reply->element[3 * p + 2]->integer;
        }
        s.scheduled = reply->element[6]->integer;
        s.dead = reply->element[7]->integer;
    }
    rq->cb(rq->ctx, err ? NULL : &s, err);
    free(rq);
}

int
md_queue_redis_stats(md_queue_stats_cb cb, void *ctx)
{
    md_queue_t *q = md_queue;
    if (q == NULL || cb == NULL)
        return MD_ERROR;
    md_queue_stats_req_t *rq = md_xmalloc(sizeof(*rq));
    rq->cb = cb;
    rq->ctx = ctx;
    const char *argv[] = {md_queue_stream[0], md_queue_stream[1], MD_QUEUE_SCHEDULED, MD_QUEUE_DEAD,
                          MD_QUEUE_GROUP};
    int rc =
        md_redis_eval(q->app->redis, q->stats_script, 4, 5, argv, NULL, md_queue_stats_reply, rq);
    if (rc != MD_OK) {
        free(rq);
        return rc == MD_ERROR ? MD_ERROR : MD_AGAIN;
    }
    return MD_OK;
}

/* ---- lifetime ----------------------------------------------------------------- */

int
md_queue_app_init(md_app_t *app)
{
    if (md_queue != NULL)
        return MD_ERROR;
    if (app->pg == NULL || app->redis == NULL) {
        md_log(MD_LOG_INFO, 0, "queue: off (it needs both postgres { } and redis { })");
        return MD_OK;
    }
    md_queue_t *q = md_xcalloc(1, sizeof(*q));
    q->app = app;
    /* A new worker may follow one that died between a commit and its push. */
    md_queue_want_full(q);
    ev_prepare_init(&q->ack_flush, md_queue_ack_flush_cb);
    q->ack_flush.data = q;
    ev_timer_init(&q->ack_retry, md_queue_ack_retry_cb, MD_QUEUE_ACK_RETRY, 0.);
    q->ack_retry.data = q;
    q->push_script = md_redis_script(app->redis, md_queue_push_lua);
    q->move_script = md_redis_script(app->redis, md_queue_move_lua);
    q->cover_script = md_redis_script(app->redis, md_queue_cover_lua);
    q->lock_script = md_redis_script(app->redis, md_queue_lock_lua);
    q->unlock_script = md_redis_script(app->redis, md_queue_unlock_lua);
    q->reset_script = md_redis_script(app->redis, md_queue_reset_lua);
    q->scope_script = md_redis_script(app->redis, md_queue_scope_lua);
    q->stats_script = md_redis_script(app->redis, md_queue_stats_lua);
    q->reap_script = md_redis_script(app->redis, md_queue_reap_lua);
    q->trim_script = md_redis_script(app->redis, md_queue_trim_lua);
    if (q->push_script < 0 || q->move_script < 0 || q->cover_script < 0 || q->lock_script < 0 ||
        q->unlock_script < 0 || q->stats_script < 0 || q->reap_script < 0 || q->trim_script < 0 ||
        md_pg_prepare(app->pg, "md_queue_leases", md_queue_leases_sql, 2) != MD_OK ||
        md_pg_prepare(app->pg, "md_queue_waiting", md_queue_waiting_sql, 4) != MD_OK ||
        md_pg_prepare(app->pg, "md_queue_ids", md_queue_ids_sql, 1) != MD_OK ||
        md_pg_prepare(app->pg, "md_queue_dead_gc", md_queue_dead_gc_sql, 2) != MD_OK ||
        md_dispatch_prepare(app->pg) != MD_OK) {
        free(q);
        return MD_ERROR;
    }
    char host[256];
    if (gethostname(host, sizeof(host)) != 0)
        snprintf(host, sizeof(host), "localhost");
    host[sizeof(host) - 1] = '\0';
    snprintf(q->token, sizeof(q->token), "%s:%ld", host, (long)getpid());

    char err[256];
    if (md_esp_init(app->conf, app->slot, err, sizeof(err)) != MD_OK) {
        md_logf(MD_LOG_ERROR, 0, MD_LOG_FIELDS(MD_LS("error", err)),
                "ESP accounts failed to start");
        free(q);
        return MD_ERROR;
    }
    q->esp_up = 1;
    md_queue = q;

    ev_timer_init(&q->tick, md_queue_tick_cb, MD_QUEUE_TICK, MD_QUEUE_TICK);
    q->tick.data = q;
    ev_timer_start(app->loop, &q->tick);
    /* The first turn soon after start (the stores need a moment to connect).
     * The sweeper runs without an ESP too: it pushes only what no entry covers,
     * so waiting mail is ready for the dispatcher of a later reload, and the
     * housekeeping and the gauges go on. */
    ev_timer_init(&q->sweep, md_queue_sweep_cb, 1.0, 0.);
    q->sweep.data = q;
    ev_timer_start(app->loop, &q->sweep);
    ev_timer_init(&q->beat, md_queue_beat_cb, MD_QUEUE_BEAT, MD_QUEUE_BEAT);
    q->beat.data = q;
    ev_timer_start(app->loop, &q->beat);

    if (app->conf->nesp == 0) {
        if (app->slot == 0)
            md_log(MD_LOG_WARN, 0,
                   "no esp { } block is configured: accepted mail stays queued until one is");
        return MD_OK;
    }
    if (md_dispatch_start(app) != MD_OK) {
        md_queue_app_destroy(app);
        return MD_ERROR;
    }
    q->dispatcher = 1;
    return MD_OK;
}

void
md_queue_app_shutdown(md_app_t *app, void (*settled)(void *data), void *data)
{
    md_unused(app);
    md_queue_t *q = md_queue;
    if (q != NULL && !q->shutting) {
        q->shutting = 1;
        ev_timer_stop(q->app->loop, &q->tick);
        ev_timer_stop(q->app->loop, &q->sweep);
        ev_timer_stop(q->app->loop, &q->beat);
        if (q->dispatcher) {
            md_dispatch_shutdown(settled, data);
            return;
        }
    }
    if (settled)
        settled(data);
}

bool
md_queue_app_goodbye(md_app_t *app)
{
    md_unused(app);
    md_queue_t *q = md_queue;
    if (q == NULL || !md_redis_ready(q->app->redis))
        return false;
    /* Full turns still owed (a graceful stop in this worker's own sweeper turn
     * asks for them) go first on the same connection, so the heartbeat can go:
     * left to expire instead, it would ask for them only a lock TTL later and
     * stay in the hash until then. Sent even with one in flight, which may
     * settle an older request. If the reset cannot be sent, the heartbeat
     * stays: its expiry asks for full turns. */
    if (q->reset_want != q->reset_done && md_queue_send_reset(q, md_queue_wall()) != MD_OK)
        return false;
    const char *bye[] = {"HDEL", MD_QUEUE_SWEEP_PROCS, q->token};
    return md_redis_cmd(q->app->redis, md_redis_ignore_cb, NULL, 3, bye, NULL) == MD_OK;
}

void
md_queue_app_destroy(md_app_t *app)
{
    md_unused(app);
    md_queue_t *q = md_queue;
    if (q == NULL)
        return;
    q->shutting = 1;
    ev_timer_stop(q->app->loop, &q->tick);
    ev_timer_stop(q->app->loop, &q->sweep);
    ev_timer_stop(q->app->loop, &q->beat);
    /* Jobs with a store call in flight ended when the clients went (their
     * callbacks ran with an error); what is left waits for its first step. */
    while (q->jobs)
        md_queue_job_end(q->jobs, "unavailable");
    if (q->dispatcher)
        md_dispatch_destroy();
    if (q->esp_up)
        md_esp_destroy();
    md_queue_ack_flush(q);
    ev_timer_stop(q->app->loop, &q->ack_retry);
    free(q->acks.entry[0]);
    free(q->acks.entry[1]);
    free(q->acks.live);
    md_queue = NULL;
    free(q);
}
