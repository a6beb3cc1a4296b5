/*
 * The tracking routes' store (md_tracking_store.h).
 */
#include "md_tracking_store.h"
#include "md_app.h"
#include "md_events.h"
#include "md_id.h"
#include "md_log.h"
#include "md_metrics.h"
#include "md_pg.h"
#include "md_suppressions.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A user agent longer than this is cut: it is a diagnostic, not a key. */
#define UA_MAX 512

/* $1 message, $2 link index, $3 event id, $4 user agent, $5 ip, $6 record
 * (false: look up only, for HEAD). Only a string
 * element of an array counts as a link (a hand-made row with something else
 * there is no redirect target). The index is 0..65535, never negative (->>
 * would count a negative one from the end). */
static const char md_tracking_click_sql[] =
    "WITH m AS ("
    "  SELECT id, tenant_id, tracking->'links'->>($2::int) AS url FROM message_content"
    "  WHERE id = $1::uuid AND jsonb_typeof(tracking->'links'->($2::int)) = 'string'),"
    " ins AS ("
    "  INSERT INTO events (id, tenant_id, message_id, type, data)"
    "  SELECT $3::uuid, tenant_id, id, 'clicked', jsonb_build_object('url', url, 'link', $2::int,"
    "    'user_agent', $4::text, 'ip', $5::text) FROM m WHERE $6::boolean"
    "  RETURNING 1)"
    " SELECT (SELECT url FROM m), (SELECT count(*) FROM ins)";

/* $1 message, $2 event id, $3 user agent, $4 ip, $5 record. */
static const char md_tracking_open_sql[] =
    "WITH m AS ("
    "  SELECT id, tenant_id, coalesce(tracking->'opens' = 'true'::jsonb, false) AS opens"
    "  FROM message_content WHERE id = $1::uuid),"
    " ins AS ("
    "  INSERT INTO events (id, tenant_id, message_id, type, data)"
    "  SELECT $2::uuid, tenant_id, id, 'opened',"
    "    jsonb_build_object('user_agent', $3::text, 'ip', $4::text) FROM m WHERE opens AND "
    "$5::boolean"
    "  RETURNING 1)"
    " SELECT (SELECT count(*) FROM m), (SELECT count(*) FROM ins)";

/* $1 message, $2 event id, $3 how, $4 user agent, $5 ip. g is the once-guard
 * (md_tracking_store.h): an UPDATE that waits for a concurrent one's row lock
 * and then re-checks its WHERE against the committed row, which a read of the
 * events table in this statement's snapshot could not do. The suppression is
 * tried every time: an address the tenant deleted from the list is suppressed
 * again by a new unsubscribe, still with one event per message. */
static const char md_tracking_unsub_sql[] =
    "WITH m AS ("
    "  SELECT id, tenant_id, " MD_SUPPRESSION_KEY_SQL(
        "message_content") " AS address FROM message_content"
                           "  WHERE id = $1::uuid),"
                           " g AS ("
                           "  UPDATE message_content SET tracking = coalesce(tracking, '{}'::jsonb)"
                           "    || jsonb_build_object('unsubscribed_at', to_char(now() AT TIME "
                           "ZONE 'UTC',"
                           "       'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'))"
                           "  WHERE id = $1::uuid AND NOT coalesce(tracking ? 'unsubscribed_at', "
                           "false)"
                           "  RETURNING id),"
                           " ins AS ("
                           "  INSERT INTO events (id, tenant_id, message_id, type, data)"
                           "  SELECT $2::uuid, m.tenant_id, m.id, 'unsubscribed',"
                           "    jsonb_build_object('how', $3::text, 'user_agent', $4::text, 'ip', "
                           "$5::text)"
                           "  FROM m JOIN g ON g.id = m.id"
                           "  RETURNING 1),"
                           " sup AS ("
                           "  INSERT INTO suppressions (tenant_id, address, reason, source, detail)"
                           "  SELECT tenant_id, address, 'unsubscribe', 'unsubscribe', $3::text "
                           "FROM m"
                           "  ON CONFLICT (tenant_id, address) DO UPDATE SET reason = "
                           "EXCLUDED.reason,"
                           "    expires_at = NULL, source = EXCLUDED.source, detail = "
                           "EXCLUDED.detail,"
                           "    created_at = now()"
                           "  WHERE suppressions.expires_at IS NOT NULL"
                           "  RETURNING 1)"
                           " SELECT (SELECT count(*) FROM m), (SELECT count(*) FROM ins), (SELECT "
                           "count(*) FROM sup)";

static const char md_tracking_recipient_sql[] =
    "SELECT to_addr FROM message_content WHERE id = $1::uuid";

int
md_tracking_store_app_init(struct md_app_s *app)
{
    if (app->pg == NULL)
        return MD_OK;
    if (md_pg_prepare(app->pg, "md_tracking_click", md_tracking_click_sql, 6) != MD_OK ||
        md_pg_prepare(app->pg, "md_tracking_open", md_tracking_open_sql, 5) != MD_OK ||
        md_pg_prepare(app->pg, "md_tracking_unsub", md_tracking_unsub_sql, 5) != MD_OK ||
        md_pg_prepare(app->pg, "md_tracking_recipient", md_tracking_recipient_sql, 1) != MD_OK)
        return MD_ERROR;
    return MD_OK;
}

void
md_tracking_store_app_destroy(struct md_app_s *app)
{
    md_unused(app);
}

typedef enum op_e { OP_CLICK, OP_OPEN, OP_UNSUB, OP_RECIPIENT } op_t;

typedef struct call_s {
    md_tracking_cb cb;
    void *ctx;
    op_t op;
} call_t;

static bool
is_one(const PGresult *p, int col)
{
    return !PQgetisnull(p, 0, col) && strcmp(PQgetvalue(p, 0, col), "0") != 0;
}

static void
call_done(void *ctx, const md_pg_result_t *res)
{
    call_t *x = ctx;
    md_tracking_result_t out;
    memset(&out, 0, sizeof(out));
    if (res->error) {
        out.error = res->error;
        md_logf(md_app_store_down(res->error) ? MD_LOG_WARN : MD_LOG_ERROR, 0,
                MD_LOG_FIELDS(MD_LS("error", res->error),
                              MD_LS("sqlstate", res->sqlstate ? res->sqlstate : ""),
                              MD_LS("detail", res->message ? res->message : "")),
                "tracking statement failed");
    } else if (PQntuples(res->res) == 1) {
        const PGresult *p = res->res;
        switch (x->op) {
        case OP_CLICK:
            out.found = !PQgetisnull(p, 0, 0);
            out.url = out.found ? PQgetvalue(p, 0, 0) : NULL;
            out.added = is_one(p, 1);
            if (out.added)
                md_metrics_webhook_event(MD_EVENT_CLICKED, 1);
            break;
        case OP_OPEN:
            out.found = is_one(p, 0);
            out.added = is_one(p, 1);
            if (out.added)
                md_metrics_webhook_event(MD_EVENT_OPENED, 1);
            break;
        case OP_UNSUB: {
            out.found = is_one(p, 0);
            bool ev = is_one(p, 1), sup = is_one(p, 2);
            out.added = ev || sup;
            if (ev)
                md_metrics_webhook_event(MD_EVENT_UNSUBSCRIBED, 1);
            if (sup)
                md_metrics_webhook_suppression(MD_EVENTS_REASON_UNSUBSCRIBE, 1);
            break;
        }
        case OP_RECIPIENT:
            out.found = true;
            out.to = PQgetvalue(p, 0, 0);
            break;
        }
    }
    md_tracking_cb cb = x->cb;
    void *cctx = x->ctx;
    free(x);
    cb(cctx, &out);
}

/* A header value fit for a text column and a log: printable ASCII only (others
 * become '?', so invalid UTF-8 cannot fail the statement), cut at max bytes.
 * NULL stays NULL. The result is malloc'd. */
static char *
printable(const char *s, size_t max)
{
    if (s == NULL)
        return NULL;
    size_t n = strnlen(s, max);
    char *o = md_xmalloc(n + 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        o[i] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    o[n] = '\0';
    return o;
}

static int
run(op_t op, const char *stmt, const char *const *values, int n, md_tracking_cb cb, void *ctx)
{
    if (md_app == NULL || md_app->pg == NULL)
        return MD_AGAIN;
    call_t *x = md_xcalloc(1, sizeof(*x));
    x->cb = cb;
    x->ctx = ctx;
    x->op = op;
    md_pg_query_t q = {.stmt = stmt, .nparams = n, .values = values};
    if (md_pg_exec(md_app->pg, &q, call_done, x) != MD_OK) {
        free(x);
        return MD_AGAIN;
    }
    return MD_OK;
}

int
md_tracking_click(const char *msgid, unsigned link, const md_tracking_client_t *cl,
                  md_tracking_cb cb, void *ctx)
{
    char id[MD_UUID_STRLEN + 1], idx[16];
    md_uuid7(id);
    snprintf(idx, sizeof(idx), "%u", link & 0xffffu);
    char *ua = printable(cl ? cl->user_agent : NULL, UA_MAX);
    char *ip = printable(cl ? cl->ip : NULL, 64);
    const char *values[6] = {msgid, idx, id, ua, ip, cl && cl->lookup_only ? "false" : "true"};
    int rc = run(OP_CLICK, "md_tracking_click", values, 6, cb, ctx);
    free(ua);
    free(ip);
    return rc;
}

int
md_tracking_open(const char *msgid, const md_tracking_client_t *cl, md_tracking_cb cb, void *ctx)
{
    char id[MD_UUID_STRLEN + 1];
    md_uuid7(id);
    char *ua = printable(cl ? cl->user_agent : NULL, UA_MAX);
    char *ip = printable(cl ? cl->ip : NULL, 64);
    const char *values[5] = {msgid, id, ua, ip, cl && cl->lookup_only ? "false" : "true"};
    int rc = run(OP_OPEN, "md_tracking_open", values, 5, cb, ctx);
    free(ua);
    free(ip);
    return rc;
}

int
md_tracking_unsubscribe(const char *msgid, const char *how, const md_tracking_client_t *cl,
                        md_tracking_cb cb, void *ctx)
{
    char id[MD_UUID_STRLEN + 1];
    md_uuid7(id);
    char *ua = printable(cl ? cl->user_agent : NULL, UA_MAX);
    char *ip = printable(cl ? cl->ip : NULL, 64);
    const char *values[5] = {msgid, id, how, ua, ip};
    int rc = run(OP_UNSUB, "md_tracking_unsub", values, 5, cb, ctx);
    free(ua);
    free(ip);
    return rc;
}

int
md_tracking_recipient(const char *msgid, md_tracking_cb cb, void *ctx)
{
    const char *values[1] = {msgid};
    return run(OP_RECIPIENT, "md_tracking_recipient", values, 1, cb, ctx);
}
