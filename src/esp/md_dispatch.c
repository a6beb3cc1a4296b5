/*
 * The dispatcher: one per worker. It reads message ids from the queue streams
 * (consumer group "mailerd", consumer "host:pid"), claims each message in
 * PostgreSQL, hands it to its ESP account's driver, records the outcome, and
 * acknowledges the stream entry.
 *
 * Reading: on its own Redis connection, because a blocking XREADGROUP holds the
 * connection for up to a second and the worker's shared connection must keep
 * serving requests meanwhile (its command_timeout is raised above the BLOCK
 * time). Priority is strict: transactional entries are read first (no BLOCK);
 * only when that stream has no more does a read take bulk entries; only when
 * both are empty does a read block on both. At most MD_DISPATCH_MAX_JOBS messages
 * are held at once; a read asks only for the free places.
 *
 * One message, at least once, never twice at the same time:
 *   claim:  UPDATE ... SET status 'sending', attempts+1, lease 5 min WHERE the
 *           status is claimable, with its 'sending' event (one statement). No row:
 *           already taken, canceled or done -> acknowledge and skip.
 *   send:   the account's driver (the sink writes its file here).
 *   record: one statement: sent (+ delivered for the sink) | deferred with
 *           next_attempt_at from exponential backoff with full jitter (and ZADD
 *           to the scheduled set) | failed; each with its event.
 *   ack:    XACK (and the deferred message's ZADD) on the worker's connection.
 * A failure between steps leaves the entry pending and the message either
 * "queued" or "sending" under its lease; the recovery scan (md_queue.c) brings
 * both back, and the conditional claim keeps a duplicate entry harmless.
 */
#include "md_app.h"
#include "md_esp.h"
#include "md_id.h"
#include "md_log.h"
#include "md_messages.h"
#include "md_metrics.h"
#include "md_pg.h"
#include "md_queue.h"
#include "md_redis.h"

#include <ev.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define MD_DISPATCH_MAX_JOBS 64
#define MD_DISPATCH_MIN_READ                                                                       \
    16 /* read when at least this many places are free (or none is held)                           \
        */
#define MD_DISPATCH_BLOCK_MS "1000"
#define MD_DISPATCH_RETRY    0.25 /* seconds before reading again after a refusal */
#define MD_ADDRESS_BUF       512  /* an addr-spec in A-label form (254) with room */

/* Claimable: queued; scheduled or deferred when due (5 s of tolerance for clock
 * differences between the workers that scheduled and PostgreSQL); an entry that
 * comes early finds nothing to claim, and the message waits for its own. */
static const char md_dispatch_claim_sql[] =
    "WITH m AS ("
    " UPDATE messages SET status = 'sending', attempts = attempts + 1,"
    "  lease_until = now() + interval '5 minutes', updated_at = now()"
    " WHERE id = $1 AND (status = 'queued'"
    "  OR (status = 'scheduled' AND (send_at IS NULL OR send_at <= now() + interval '5 seconds'))"
    "  OR (status = 'deferred' AND (next_attempt_at IS NULL"
    "                               OR next_attempt_at <= now() + interval '5 seconds')))"
    " RETURNING *),"
    " e AS (INSERT INTO events (id, tenant_id, message_id, type, data)"
    "  SELECT $2, m.tenant_id, m.id, 'sending', jsonb_build_object('attempt', m.attempts) FROM m)"
    " SELECT m.id::text, m.tenant_id::text, m.attempts, m.priority, m.from_addr, m.from_name,"
    "  m.to_addr, m.to_name, m.cc::text, m.bcc::text, m.reply_to, m.subject, m.text_body,"
    "  m.html_body, m.headers::text, m.esp_route, extract(epoch FROM m.created_at)::float8"
    " FROM m";
enum {
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
    C_CREATED
};

/* $1 id, $2 esp, $3 provider id, $4 'sent' event id, $5 delivered too, $6 its
 * event id. The delivery is stamped a microsecond after the send so the events
 * sort in the order they happened whatever the reader's tie-break. */
static const char md_dispatch_sent_sql[] =
    "WITH m AS ("
    " UPDATE messages SET status = CASE WHEN $5::boolean THEN 'delivered' ELSE 'sent' END,"
    "  esp = $2::text, esp_message_id = $3::text, sent_at = now(),"
    "  delivered_at = CASE WHEN $5::boolean THEN now() + interval '1 microsecond' END,"
    "  lease_until = NULL, next_attempt_at = NULL, last_error = NULL, updated_at = now()"
    " WHERE id = $1 AND status = 'sending'"
    " RETURNING id, tenant_id, attempts),"
    " e AS (INSERT INTO events (id, tenant_id, message_id, type, data, created_at)"
    "  SELECT v.eid, m.tenant_id, m.id, v.type,"
    "   jsonb_build_object('esp', $2::text, 'esp_message_id', $3::text, 'attempt', m.attempts),"
    "   now() + v.off"
    "  FROM m, (VALUES ($4::uuid, 'sent', interval '0'),"
    "                  ($6::uuid, 'delivered', interval '1 microsecond')) AS v(eid, type, off)"
    "  WHERE v.type = 'sent' OR $5::boolean)"
    " SELECT id::text FROM m";

/* $1 id, $2 'deferred' | 'failed', $3 delay (seconds, deferred), $4 last_error,
 * $5 esp, $6 event id, $7 code. Returns next_attempt_at as unix time. */
static const char md_dispatch_fail_sql[] =
    "WITH m AS ("
    " UPDATE messages SET status = $2::text, esp = $5::text, last_error = $4::text,"
    "  lease_until = NULL, updated_at = now(),"
    "  next_attempt_at = CASE WHEN $2::text = 'deferred'"
    "                    THEN now() + make_interval(secs => $3::float8) END"
    " WHERE id = $1 AND status = 'sending'"
    " RETURNING id, tenant_id, attempts, next_attempt_at),"
    " e AS (INSERT INTO events (id, tenant_id, message_id, type, data)"
    "  SELECT $6, m.tenant_id, m.id, $2::text, jsonb_strip_nulls(jsonb_build_object("
    "   'esp', $5::text, 'code', $7::text, 'error', $4::text, 'attempt', m.attempts,"
    "   'next_attempt_at', m.next_attempt_at)) FROM m)"
    " SELECT coalesce(extract(epoch FROM next_attempt_at)::float8, 0) FROM m";

typedef struct md_dispatch_s md_dispatch_t;

typedef struct md_job_s {
    md_dispatch_t *d;
    int priority;       /* the stream it came from */
    int final_priority; /* the message's own (for a retry's set member) */
    char entry[64];     /* stream entry id, for XACK */
    char id[MD_UUID_STRLEN + 1];
    char esp[72];      /* account that took the attempt */
    int deferred;      /* the outcome: 1 deferred, 0 otherwise */
    int outcome;       /* MD_METRICS_SENT... counted once recorded */
    double created_at; /* accept time, for the latency metric */
} md_job_t;

enum { PHASE_TRANSACTIONAL, PHASE_BULK, PHASE_BLOCK };

struct md_dispatch_s {
    md_app_t *app;
    struct ev_loop *loop;
    md_redis_t *redis;  /* ours: blocking reads */
    char consumer[320]; /* host:pid */
    int groups_ok;      /* XGROUP CREATE answered on this process's connection */
    int reading;        /* a read (or the group creation) is in flight */
    int phase;
    int held; /* jobs alive */
    int shutting, destroying;
    ev_timer retry;
};

static md_dispatch_t *md_dispatch;

static void md_dispatch_pump(md_dispatch_t *d);

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

static double
md_dispatch_wall(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Ends a job. pump: read more now (only from callbacks that run while the loop
 * serves, never from an error that may come from a client's destroy). */
static void
md_job_done(md_job_t *job, bool pump)
{
    md_dispatch_t *d = job->d;
    d->held--;
    free(job);
    if (pump)
        md_dispatch_pump(d);
    else
        md_dispatch_later(d, MD_DISPATCH_RETRY);
}

/* ---- the result ------------------------------------------------------------------ */

static void
md_job_recorded(void *ctx, const md_pg_result_t *res)
{
    md_job_t *job = ctx;
    if (res->error) {
        /* Unknown outcome: the entry stays pending and the lease runs out; the
         * recovery scan requeues it, which may send it again (at least once). */
        md_logf(MD_LOG_ERROR, 0,
                MD_LOG_FIELDS(MD_LS("message_id", job->id), MD_LS("error", res->error),
                              MD_LS("detail", res->message ? res->message : "")),
                "dispatch: the result of a send could not be recorded");
        md_job_done(job, false);
        return;
    }
    if (PQntuples(res->res) == 1) {
        md_metrics_delivery(job->outcome, 1);
        if (job->outcome == MD_METRICS_SENT && job->created_at > 0)
            md_metrics_delivery_latency(md_dispatch_wall() - job->created_at);
        if (job->deferred) {
            double at = strtod(PQgetvalue(res->res, 0, 0), NULL);
            md_queue_schedule(job->id, job->final_priority, at > 0 ? at : md_dispatch_wall());
        }
    } else {
        md_logf(MD_LOG_WARN, 0, MD_LOG_FIELDS(MD_LS("message_id", job->id)),
                "dispatch: the message left \"sending\" during the send (lease expired?)");
    }
    md_queue_ack(job->priority, job->entry, job->id);
    md_job_done(job, true);
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

static void
md_job_record(md_job_t *job, md_esp_t *esp, int attempts, const md_esp_result_t *r)
{
    md_dispatch_t *d = job->d;
    const md_conf_t *conf = d->app->conf;
    char ev1[MD_UUID_STRLEN + 1], ev2[MD_UUID_STRLEN + 1];
    md_uuid7(ev1);
    md_uuid7(ev2);
    md_pg_query_t q;
    memset(&q, 0, sizeof(q));
    int rc;

    if (r->outcome == MD_ESP_SENT) {
        job->outcome = MD_METRICS_SENT;
        const char *values[] = {job->id, job->esp, r->provider_id, ev1, r->delivered ? "t" : "f",
                                ev2};
        q.stmt = "md_dispatch_sent";
        q.nparams = 6;
        q.values = values;
        rc = md_pg_exec(d->app->pg, &q, md_job_recorded, job);
    } else {
        char last_error[400], delay[32];
        const char *status = "failed";
        double wait = 0;
        if (r->outcome == MD_ESP_RETRYABLE && attempts < conf->max_attempts) {
            status = "deferred";
            wait = md_max(md_dispatch_backoff(esp, attempts, conf), r->retry_after);
            job->deferred = 1;
            job->outcome = MD_METRICS_DEFERRED;
        } else {
            job->outcome = MD_METRICS_FAILED;
        }
        if (r->outcome == MD_ESP_RETRYABLE && !job->deferred)
            snprintf(last_error, sizeof(last_error), "%s (after %d attempts): %s", r->code,
                     attempts, r->text[0] ? r->text : r->code);
        else
            snprintf(last_error, sizeof(last_error), "%s: %s", r->code,
                     r->text[0] ? r->text : r->code);
        snprintf(delay, sizeof(delay), "%.3f", wait);
        const char *values[] = {job->id, status, delay, last_error, job->esp, ev1, r->code};
        q.stmt = "md_dispatch_fail";
        q.nparams = 7;
        q.values = values;
        rc = md_pg_exec(d->app->pg, &q, md_job_recorded, job);
    }
    if (rc != MD_OK) {
        md_logf(MD_LOG_ERROR, 0, MD_LOG_FIELDS(MD_LS("message_id", job->id)),
                "dispatch: postgres refused the result of a send; the lease will expire");
        md_job_done(job, false);
    }
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

static const char *
md_pg_text(const PGresult *res, int col)
{
    return PQgetisnull(res, 0, col) ? NULL : PQgetvalue(res, 0, col);
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

/* Builds m from the claimed row (valid during the claim callback). MD_ERROR with
 * why: the stored message cannot be sent (a permanent failure). */
static int
md_job_build(const PGresult *row, md_job_build_t *b, md_esp_msg_t *m, const char **why)
{
    m->id = md_pg_text(row, C_ID);
    m->tenant_id = md_pg_text(row, C_TENANT);
    m->attempt = atoi(PQgetvalue(row, 0, C_ATTEMPTS));
    if (md_esp_addr_ascii(md_pg_text(row, C_FROM), b->from, sizeof(b->from)) != MD_OK) {
        *why = "invalid from address";
        return MD_ERROR;
    }
    if (md_esp_addr_ascii(md_pg_text(row, C_TO), b->to, sizeof(b->to)) != MD_OK) {
        *why = "invalid to address";
        return MD_ERROR;
    }
    m->from.addr = b->from;
    m->from.name = md_pg_text(row, C_FROM_NAME);
    m->to.addr = b->to;
    m->to.name = md_pg_text(row, C_TO_NAME);
    if (md_job_addr_list(md_pg_text(row, C_CC), &b->cc_json, &b->cc, &b->cc_buf, &m->ncc, why) !=
            MD_OK ||
        md_job_addr_list(md_pg_text(row, C_BCC), &b->bcc_json, &b->bcc, &b->bcc_buf, &m->nbcc,
                         why) != MD_OK)
        return MD_ERROR;
    m->cc = b->cc;
    m->bcc = b->bcc;

    /* reply_to: an address, or "Name <address>" */
    const char *rt = md_pg_text(row, C_REPLY_TO);
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
            snprintf(addr, sizeof(addr), "%s", rt);
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

    m->subject = md_pg_text(row, C_SUBJECT);
    const char *text = md_pg_text(row, C_TEXT), *html = md_pg_text(row, C_HTML);
    m->text.data = text;
    m->text.len = text ? (size_t)PQgetlength(row, 0, C_TEXT) : 0;
    m->html.data = html;
    m->html.len = html ? (size_t)PQgetlength(row, 0, C_HTML) : 0;

    const char *hj = md_pg_text(row, C_HEADERS);
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

static void
md_job_claimed(void *ctx, const md_pg_result_t *res)
{
    md_job_t *job = ctx;
    md_dispatch_t *d = job->d;
    if (res->error) {
        /* Not claimed, or unknown (a lost connection after COMMIT leaves it
         * "sending" under its lease): the entry stays pending either way. */
        if (!d->destroying)
            md_logf(MD_LOG_WARN, 0,
                    MD_LOG_FIELDS(MD_LS("message_id", job->id), MD_LS("error", res->error),
                                  MD_LS("detail", res->message ? res->message : "")),
                    "dispatch: claim failed");
        md_job_done(job, false);
        return;
    }
    const PGresult *row = res->res;
    if (PQntuples(row) != 1) {
        /* canceled, done, or claimed by another consumer: nothing to send */
        md_queue_ack(job->priority, job->entry, job->id);
        md_job_done(job, true);
        return;
    }
    if (d->shutting) {
        /* The pool takes no more statements now, so the result of a send could
         * not be recorded: do not send; the lease runs out and the recovery
         * scan requeues the message (see md_queue_app_shutdown). */
        md_logf(MD_LOG_INFO, 0, MD_LOG_FIELDS(MD_LS("message_id", job->id)),
                "dispatch: stopping; message left to its lease");
        md_job_done(job, false);
        return;
    }

    int attempts = atoi(PQgetvalue(row, 0, C_ATTEMPTS));
    job->final_priority = strcmp(PQgetvalue(row, 0, C_PRIORITY), "bulk") == 0
                              ? MD_PRIORITY_BULK
                              : MD_PRIORITY_TRANSACTIONAL;
    job->created_at = strtod(PQgetvalue(row, 0, C_CREATED), NULL);

    md_esp_result_t r;
    memset(&r, 0, sizeof(r));
    const char *route = md_pg_text(row, C_ESP_ROUTE);
    md_esp_t *esp = route && route[0] ? md_esp_get(route) : md_esp_default();
    snprintf(job->esp, sizeof(job->esp), "%s", esp ? esp->conf->name : (route ? route : ""));

    md_job_build_t b;
    memset(&b, 0, sizeof(b));
    md_esp_msg_t m;
    memset(&m, 0, sizeof(m));
    const char *why = NULL;
    if (esp == NULL) {
        md_esp_result_permanent(&r, "unknown_esp", "no esp account of that name is configured");
    } else if (md_job_build(row, &b, &m, &why) != MD_OK) {
        md_esp_result_permanent(&r, "invalid_message", why);
    } else if (esp->driver->deliver) {
        esp->driver->deliver(esp, &m, &r);
    } else {
        /* remote drivers run through the HTTP client (issue 6) */
        md_esp_result_retryable(&r, "driver_unavailable", 0, "this driver cannot send yet");
    }
    md_job_build_free(&b);

    if (r.outcome != MD_ESP_SENT)
        md_logf(r.outcome == MD_ESP_PERMANENT ? MD_LOG_NOTICE : MD_LOG_INFO, 0,
                MD_LOG_FIELDS(MD_LS("message_id", job->id), MD_LS("esp", job->esp),
                              MD_LS("code", r.code), MD_LI("attempt", attempts)),
                r.outcome == MD_ESP_PERMANENT ? "send failed permanently"
                                              : "send failed, will retry");
    md_job_record(job, esp, attempts, &r);
}

/* A stream entry: its message id is the field "id". */
static void
md_dispatch_entry(md_dispatch_t *d, int priority, redisReply *entry)
{
    if (entry->type != REDIS_REPLY_ARRAY || entry->elements < 2 ||
        entry->element[0]->type != REDIS_REPLY_STRING)
        return;
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
        return;
    }
    md_job_t *job = md_xcalloc(1, sizeof(*job));
    job->d = d;
    job->priority = priority;
    memcpy(job->entry, eid, strlen(eid) + 1);
    memcpy(job->id, id, MD_UUID_STRLEN);
    char ev[MD_UUID_STRLEN + 1];
    md_uuid7(ev);
    const char *values[] = {job->id, ev};
    md_pg_query_t q = {.stmt = "md_dispatch_claim", .nparams = 2, .values = values};
    d->held++;
    if (md_pg_exec(d->app->pg, &q, md_job_claimed, job) != MD_OK) {
        /* The entry stays pending; its message stays queued for the scan. */
        md_logf(MD_LOG_WARN, 0, MD_LOG_FIELDS(MD_LS("message_id", job->id)),
                "dispatch: postgres cannot take the claim now");
        md_job_done(job, false);
    }
}

/* ---- reading ------------------------------------------------------------------------ */

/* Returns how many entries the reply held; transactional ones are taken first. */
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
                strcmp(st->element[0]->str, md_queue_stream[prio]) != 0 ||
                st->element[1]->type != REDIS_REPLY_ARRAY)
                continue;
            for (size_t i = 0; i < st->element[1]->elements; i++) {
                md_dispatch_entry(d, prio, st->element[1]->element[i]);
                n++;
            }
        }
    }
    return n;
}

static void
md_dispatch_read_cb(void *ctx, redisReply *reply, const char *err)
{
    md_dispatch_t *d = ctx;
    d->reading = 0;
    if (d->destroying)
        return;
    if (err) {
        /* a timeout or a lost connection: the client reconnects by itself */
        md_dispatch_later(d, MD_DISPATCH_RETRY);
        return;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        if (strncmp(reply->str, "NOGROUP", 7) == 0) {
            /* Redis lost the streams (a restart without persistence) */
            d->groups_ok = 0;
            md_dispatch_later(d, 0.01);
            return;
        }
        md_logf(MD_LOG_ERROR, 0, MD_LOG_FIELDS(MD_LS("error", reply->str)),
                "dispatch: reading the queue failed");
        md_dispatch_later(d, 1.0);
        return;
    }
    if (d->shutting) {
        /* What came is pending in the group; its messages are still queued. */
        return;
    }
    size_t n = md_dispatch_entries(d, reply);
    if (n > 0 || d->phase == PHASE_BLOCK)
        d->phase = PHASE_TRANSACTIONAL;
    else
        d->phase = d->phase == PHASE_TRANSACTIONAL ? PHASE_BULK : PHASE_BLOCK;
    /* After a transactional read that found some, look again at once: only a
     * drained transactional stream lets bulk mail in. */
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

static void
md_dispatch_ignore_cb(void *ctx, redisReply *reply, const char *err)
{
    md_unused(ctx);
    md_unused(reply);
    md_unused(err);
}

/* The group on both streams; "0" so entries added before it existed are read. */
static void
md_dispatch_create_groups(md_dispatch_t *d)
{
    int sent = 0;
    for (int s = 0; s < 2; s++) {
        const char *argv[] = {"XGROUP",       "CREATE", md_queue_stream[s],
                              MD_QUEUE_GROUP, "0",      "MKSTREAM"};
        if (md_redis_cmd(d->redis, s == 1 ? md_dispatch_group_cb : md_dispatch_ignore_cb, d, 6,
                         argv, NULL) == MD_OK)
            sent++;
    }
    /* Only the second reply is awaited: replies come in order on one connection,
     * and BUSYGROUP is the normal answer for both after the first start. */
    if (sent == 2)
        d->reading = 1;
    else
        md_dispatch_later(d, MD_DISPATCH_RETRY);
}

/* Reads when there is room, the stores are up, and no read is in flight. */
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
    int room = MD_DISPATCH_MAX_JOBS - d->held;
    if (room <= 0 || (room < MD_DISPATCH_MIN_READ && d->held > 0))
        return; /* the next finished job pumps again */
    char count[16];
    snprintf(count, sizeof(count), "%d", room);
    const char *argv[16];
    int argc = 0;
    argv[argc++] = "XREADGROUP";
    argv[argc++] = "GROUP";
    argv[argc++] = MD_QUEUE_GROUP;
    argv[argc++] = d->consumer;
    argv[argc++] = "COUNT";
    argv[argc++] = count;
    if (d->phase == PHASE_BLOCK) {
        argv[argc++] = "BLOCK";
        argv[argc++] = MD_DISPATCH_BLOCK_MS;
    }
    argv[argc++] = "STREAMS";
    if (d->phase == PHASE_BLOCK) {
        argv[argc++] = md_queue_stream[0];
        argv[argc++] = md_queue_stream[1];
        argv[argc++] = ">";
        argv[argc++] = ">";
    } else {
        argv[argc++] = md_queue_stream[d->phase == PHASE_BULK];
        argv[argc++] = ">";
    }
    if (md_redis_cmd(d->redis, md_dispatch_read_cb, d, argc, argv, NULL) == MD_OK)
        d->reading = 1;
    else
        md_dispatch_later(d, MD_DISPATCH_RETRY);
}

/* ---- lifetime ------------------------------------------------------------------------- */

int
md_dispatch_prepare(md_pg_pool_t *pool)
{
    if (md_pg_prepare(pool, "md_dispatch_claim", md_dispatch_claim_sql, 2) != MD_OK ||
        md_pg_prepare(pool, "md_dispatch_sent", md_dispatch_sent_sql, 6) != MD_OK ||
        md_pg_prepare(pool, "md_dispatch_fail", md_dispatch_fail_sql, 7) != MD_OK)
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
    char host[256];
    if (gethostname(host, sizeof(host)) != 0)
        snprintf(host, sizeof(host), "localhost");
    host[sizeof(host) - 1] = '\0';
    snprintf(d->consumer, sizeof(d->consumer), "%s:%ld", host, (long)getpid());
    ev_init(&d->retry, md_dispatch_retry_cb);
    d->retry.data = d;
    md_redis_start(r);
    md_dispatch = d;
    /* The first read once the stores are up. */
    md_dispatch_later(d, 0.05);
    return MD_OK;
}

void
md_dispatch_shutdown(void)
{
    md_dispatch_t *d = md_dispatch;
    if (d == NULL)
        return;
    d->shutting = 1;
    ev_timer_stop(d->loop, &d->retry);
    md_logf(MD_LOG_DEBUG, 0, MD_LOG_FIELDS(MD_LI("held", d->held)), "dispatch: stopping");
}

void
md_dispatch_destroy(void)
{
    md_dispatch_t *d = md_dispatch;
    if (d == NULL)
        return;
    d->destroying = 1;
    ev_timer_stop(d->loop, &d->retry);
    /* A read still in flight runs its callback now, with "unavailable". */
    md_redis_destroy(d->redis);
    d->redis = NULL;
    if (d->held > 0)
        md_logf(MD_LOG_WARN, 0, MD_LOG_FIELDS(MD_LI("held", d->held)),
                "dispatch: jobs still held at exit");
    md_dispatch = NULL;
    free(d);
}
