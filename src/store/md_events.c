/*
 * The event store and the webhooks { } block (md_events.h).
 *
 * One webhook request is one PostgreSQL statement (md_events_ingest_sql): the
 * events go in as one jsonb array, and data-modifying CTEs do the rest in one
 * implicit transaction, so a request is stored whole or not at all, and a
 * provider's retry after a lost answer finds its event ids in webhook_events
 * and changes nothing.
 */
#include "md_events.h"
#include "md_address.h"
#include "md_conf.h"
#include "md_id.h"
#include "md_log.h"
#include "md_metrics.h"
#include "md_pg.h"
#include "md_pool.h"
#include "md_suppressions.h"
#include "md_sns.h"
#include "md_tenants.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Context of the block: a high bit clear of the core's and routing's. */
#define MD_CONF_WEBHOOKS 0x4000u

/* ---- configuration ------------------------------------------------------------- */

/* sns_topic ARN; appended, duplicates refused. */
static int
md_webhooks_conf_topic(md_conf_parser_t *cf, const md_conf_cmd_t *cmd, void *base)
{
    md_unused(cmd);
    md_webhooks_conf_t *wc = base;
    const char *arn = md_conf_arg(cf, 1);
    if (strncmp(arn, "arn:aws", 7) != 0 || strlen(arn) > 256)
        return md_conf_error(cf, "invalid topic ARN \"%s\" in \"sns_topic\"", arn);
    for (size_t i = 0; i < wc->nsns_topics; i++) {
        if (strcmp(wc->sns_topics[i], arn) == 0)
            return md_conf_error(cf, "duplicate \"sns_topic\" \"%s\"", arn);
    }
    char **t = md_xmalloc((wc->nsns_topics + 1) * sizeof(char *));
    if (wc->nsns_topics)
        memcpy(t, wc->sns_topics, wc->nsns_topics * sizeof(char *));
    free(wc->sns_topics);
    wc->sns_topics = t;
    wc->sns_topics[wc->nsns_topics++] = md_xstrdup(arn);
    return MD_OK;
}

static int
md_webhooks_conf_sg_key(md_conf_parser_t *cf, const md_conf_cmd_t *cmd, void *base)
{
    if (md_conf_set_str(cf, cmd, base) != MD_OK)
        return MD_ERROR;
    const char *v = md_conf_arg(cf, 1);
    const char *why = NULL;
    md_webhook_sg_key_t *k = md_webhook_sg_key_load((md_str_t){strlen(v), v}, &why);
    if (k == NULL)
        return md_conf_error(cf, "invalid \"sendgrid_public_key\": not a base64 DER P-256 "
                                 "public key");
    md_webhook_sg_key_free(k);
    return MD_OK;
}

static int
md_webhooks_conf_override(md_conf_parser_t *cf, const md_conf_cmd_t *cmd, void *base)
{
    const char *v = md_conf_arg(cf, 1);
    if ((strncmp(v, "http://", 7) != 0 && strncmp(v, "https://", 8) != 0) ||
        strchr(v + 8, '/') != NULL)
        return md_conf_error(cf, "\"sns_fetch_override\" must be \"http(s)://host:port\"");
    return md_conf_set_str(cf, cmd, base);
}

static const md_conf_bounds_t md_webhooks_limit_bounds = {1, 1000};
static const md_conf_bounds_t md_webhooks_window_bounds = {1, 365 * 86400.};
static const md_conf_bounds_t md_webhooks_age_bounds = {10, 30 * 86400.};

#define SECRET_ROWS(name, field)                                                                   \
    {name,                                                                                         \
     MD_CONF_WEBHOOKS,                                                                             \
     MD_CONF_TAKE1,                                                                                \
     md_conf_set_secret,                                                                           \
     offsetof(md_webhooks_conf_t, field),                                                          \
     NULL,                                                                                         \
     NULL,                                                                                         \
     md_conf_free_secret},                                                                         \
    {                                                                                              \
        name "_file", MD_CONF_WEBHOOKS, MD_CONF_TAKE1, md_conf_set_secret,                         \
            offsetof(md_webhooks_conf_t, field), NULL, NULL, NULL                                  \
    }

static const md_conf_cmd_t md_webhooks_conf_cmds[] = {
    {"sns_topic", MD_CONF_WEBHOOKS, MD_CONF_TAKE1 | MD_CONF_MULTI, md_webhooks_conf_topic, 0, NULL,
     NULL, NULL},
    {"sns_cert_dir", MD_CONF_WEBHOOKS, MD_CONF_TAKE1, md_conf_set_path,
     offsetof(md_webhooks_conf_t, sns_cert_dir), NULL, NULL, md_conf_free_str},
    {"sns_relax_dates", MD_CONF_WEBHOOKS, MD_CONF_TAKE1, md_conf_set_flag,
     offsetof(md_webhooks_conf_t, sns_relax_dates), NULL, "off", NULL},
    {"sns_fetch_override", MD_CONF_WEBHOOKS, MD_CONF_TAKE1, md_webhooks_conf_override,
     offsetof(md_webhooks_conf_t, sns_fetch_override), NULL, NULL, md_conf_free_str},
    {"sendgrid_public_key", MD_CONF_WEBHOOKS, MD_CONF_TAKE1, md_webhooks_conf_sg_key,
     offsetof(md_webhooks_conf_t, sendgrid_public_key), NULL, NULL, md_conf_free_str},
    {"sendgrid_max_age", MD_CONF_WEBHOOKS, MD_CONF_TAKE1, md_conf_set_time,
     offsetof(md_webhooks_conf_t, sendgrid_max_age), &md_webhooks_age_bounds, "1h", NULL},
    SECRET_ROWS("mailgun_signing_key", mailgun_signing_key),
    {"postmark_user", MD_CONF_WEBHOOKS, MD_CONF_TAKE1, md_conf_set_str,
     offsetof(md_webhooks_conf_t, postmark_user), NULL, NULL, md_conf_free_str},
    SECRET_ROWS("postmark_password", postmark_password),
    {"soft_bounce_limit", MD_CONF_WEBHOOKS, MD_CONF_TAKE1, md_conf_set_number,
     offsetof(md_webhooks_conf_t, soft_bounce_limit), &md_webhooks_limit_bounds, "3", NULL},
    {"soft_bounce_window", MD_CONF_WEBHOOKS, MD_CONF_TAKE1, md_conf_set_time,
     offsetof(md_webhooks_conf_t, soft_bounce_window), &md_webhooks_window_bounds, "72h", NULL},
    {"soft_bounce_suppress", MD_CONF_WEBHOOKS, MD_CONF_TAKE1, md_conf_set_time,
     offsetof(md_webhooks_conf_t, soft_bounce_suppress), &md_webhooks_window_bounds, "7d", NULL},
    {NULL, 0, 0, NULL, 0, NULL, NULL, NULL},
};

static const md_conf_block_t md_webhooks_conf_block = {"webhooks", MD_CONF_WEBHOOKS,
                                                       md_webhooks_conf_cmds};

static void
md_webhooks_conf_release(md_webhooks_conf_t *wc)
{
    if (wc == NULL)
        return;
    md_conf_cleanup(&md_webhooks_conf_block, wc);
    for (size_t i = 0; i < wc->nsns_topics; i++)
        free(wc->sns_topics[i]);
    free(wc->sns_topics);
    free(wc);
}

/* webhooks { }: parses into a new md_webhooks_conf_t at md_conf_t.webhooks. */
int
md_webhooks_conf_set(md_conf_parser_t *cf, const md_conf_cmd_t *cmd, void *base)
{
    md_unused(cmd);
    md_conf_t *conf = base;
    if (conf->webhooks)
        return md_conf_error(cf, "\"webhooks\" directive is duplicate");
    md_webhooks_conf_t *wc = md_xcalloc(1, sizeof(*wc));
    conf->webhooks = wc;
    if (md_conf_parse_block(cf, &md_webhooks_conf_block, wc) != MD_OK)
        return MD_ERROR;
    if ((wc->postmark_user == NULL) != (wc->postmark_password == NULL))
        return md_conf_error(cf, "\"postmark_user\" and \"postmark_password\" go together");
    return MD_OK;
}

void
md_webhooks_conf_free(const md_conf_cmd_t *cmd, void *base)
{
    md_unused(cmd);
    md_conf_t *conf = base;
    md_webhooks_conf_release(conf->webhooks);
    conf->webhooks = NULL;
}

/* ---- worker state ---------------------------------------------------------------- */

static struct {
    int up;
    md_sns_cache_t *sns;
    md_webhook_sg_key_t *sg;
} ev_state;

md_sns_cache_t *
md_events_sns_cache(void)
{
    return ev_state.sns;
}

const md_webhook_sg_key_t *
md_events_sg_key(void)
{
    return ev_state.sg;
}

/*
 * The ingest statement. $1 provider, $2 the events (a jsonb array, see
 * event_json), $3 soft_bounce_limit, $4 soft_bounce_window and $5
 * soft_bounce_suppress in seconds. The CTEs of one statement share one
 * snapshot, so the soft-bounce count adds this request's new rows (sb) to
 * those already stored; suppression candidates are made distinct per
 * (tenant, address) because one INSERT ... ON CONFLICT may not touch a row
 * twice. The message is found by our id first, then by the provider's. The
 * address suppressed is the message's to_addr with its domain lower-cased (the
 * suppression key; providers may change the local part's case) when the
 * event is about it, else the provider's recipient, normalised in C.
 */
static const char md_events_ingest_sql[] =
    "WITH ev AS ("
    "  SELECT * FROM jsonb_to_recordset($2::jsonb) AS x(ord int, id uuid, event_id text,"
    "    mid uuid, pmid text, type text, status_to text, rank int, suppress text, soft boolean,"
    "    addr text, data jsonb)),"
    " m AS ("
    "  SELECT DISTINCT ON (e.event_id) e.*, msg.id AS message_id, msg.tenant_id,"
    "    (e.addr IS NULL OR lower(e.addr) IN (lower(msg.to_addr), lower(msg.suppress_key)))"
    "      AS is_main,"
    "    CASE WHEN e.addr IS NULL OR lower(e.addr) IN (lower(msg.to_addr), lower(msg.suppress_key))"
    "      THEN " MD_SUPPRESSION_KEY_SQL(
        "msg") "      ELSE e.addr END AS address"
               "  FROM ev e LEFT JOIN LATERAL ("
               "    (SELECT id, tenant_id, to_addr, suppress_key FROM message_content WHERE id = "
               "e.mid)"
               "    UNION ALL"
               "    (SELECT c.id, c.tenant_id, c.to_addr, c.suppress_key FROM deliveries d"
               "       JOIN message_content c ON c.id = d.message_id WHERE e.pmid IS NOT NULL"
               "       AND d.esp_message_id = e.pmid ORDER BY d.message_id DESC LIMIT 1)"
               "    LIMIT 1) msg ON true"
               "  ORDER BY e.event_id, e.ord),"
               " we AS ("
               "  INSERT INTO webhook_events (provider, event_id, message_id)"
               "  SELECT $1, event_id, message_id FROM m WHERE message_id IS NOT NULL"
               "  ON CONFLICT DO NOTHING RETURNING event_id),"
               " fresh AS (SELECT m.* FROM m JOIN we USING (event_id)),"
               " ins AS ("
               "  INSERT INTO events (id, tenant_id, message_id, type, data, provider_event_id)"
               "  SELECT id, tenant_id, message_id, type, data, event_id FROM fresh RETURNING "
               "type),"
               " s AS ("
               "  SELECT DISTINCT ON (message_id) message_id, status_to, rank FROM fresh"
               "  WHERE status_to IS NOT NULL AND is_main ORDER BY message_id, rank DESC, ord "
               "DESC),"
               " upd AS ("
               "  UPDATE deliveries d SET status = s.status_to, updated_at = now(),"
               "    delivered_at = CASE WHEN s.status_to = 'delivered' THEN "
               "coalesce(d.delivered_at, now())"
               "      ELSE d.delivered_at END"
               "  FROM s WHERE d.message_id = s.message_id AND s.rank > CASE d.status"
               "    WHEN 'sent' THEN 1 WHEN 'delivered' THEN 2 WHEN 'bounced' THEN 3 WHEN "
               "'complained' THEN 3"
               "    WHEN 'failed' THEN 99 WHEN 'suppressed' THEN 99 WHEN 'canceled' THEN 99 ELSE 0 "
               "END"
               "  RETURNING d.message_id),"
               " sb AS ("
               "  INSERT INTO soft_bounces (tenant_id, address, message_id)"
               "  SELECT tenant_id, address, message_id FROM fresh WHERE soft RETURNING tenant_id, "
               "address),"
               " softc AS ("
               "  SELECT n.tenant_id, n.address, n.cnt + (SELECT count(*) FROM soft_bounces b"
               "    WHERE b.tenant_id = n.tenant_id AND b.address = n.address"
               "      AND b.at > now() - make_interval(secs => $4::float8)) AS total"
               "  FROM (SELECT tenant_id, address, count(*) AS cnt FROM sb GROUP BY 1, 2) n),"
               " cand AS ("
               "  SELECT DISTINCT ON (tenant_id, address) * FROM ("
               "    SELECT tenant_id, address, suppress AS reason, suppress AS source,"
               "      event_id AS detail, 0 AS pri FROM fresh WHERE suppress IS NOT NULL"
               "    UNION ALL"
               "    SELECT tenant_id, address, 'soft_bounce', 'soft_bounce_rule',"
               "      format('%s soft bounces within %s s', total, $4::float8), 1 FROM softc"
               "    WHERE total >= $3::int) c"
               "  ORDER BY tenant_id, address, pri),"
               " sup AS ("
               "  INSERT INTO suppressions (tenant_id, address, reason, expires_at, source, detail)"
               "  SELECT tenant_id, address, reason,"
               "    CASE WHEN pri = 1 THEN now() + make_interval(secs => $5::float8) END, source, "
               "detail"
               "  FROM cand"
               "  ON CONFLICT (tenant_id, address) DO UPDATE SET reason = EXCLUDED.reason,"
               "    expires_at = EXCLUDED.expires_at, source = EXCLUDED.source, detail = "
               "EXCLUDED.detail,"
               "    created_at = now()"
               "  WHERE suppressions.expires_at IS NOT NULL"
               "    AND (EXCLUDED.expires_at IS NULL OR suppressions.expires_at < "
               "EXCLUDED.expires_at)"
               "  RETURNING reason)"
               " SELECT (SELECT count(*) FROM ev), (SELECT count(*) FROM m WHERE message_id IS "
               "NULL),"
               "  (SELECT count(*) FROM m WHERE message_id IS NOT NULL) - (SELECT count(*) FROM "
               "we),"
               "  (SELECT coalesce(json_agg(type), '[]') FROM ins), (SELECT count(*) FROM upd),"
               "  (SELECT coalesce(json_agg(reason), '[]') FROM sup)";

/* Shape of one event as the API shows it. */
#define MD_EVENTS_ROW                                                                              \
    "json_build_object('id', e.id, 'message_id', e.message_id, 'type', e.type, 'data', e.data,"    \
    " 'created_at', to_char(e.created_at AT TIME ZONE 'UTC',"                                      \
    " 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'))"

static const char md_events_for_message_sql[] =
    "SELECT EXISTS (SELECT 1 FROM message_content WHERE id = $2 AND tenant_id = $1),"
    " (SELECT coalesce(json_agg(" MD_EVENTS_ROW " ORDER BY e.created_at, e.id), '[]')"
    "  FROM events e WHERE e.message_id = $2 AND e.tenant_id = $1)";

/* limit + 1 rows tell whether there is a next page. The cursor is the last
 * event id of a page; a cursor of another tenant finds no row (invalid).
 *
 * The cursor's row is looked up first within an hour of the time in its id
 * (UUIDv7: milliseconds in the first 48 bits), a short range of
 * events_tenant_idx (tenant_id, created_at, id); only if it is not there
 * (created_at set from a provider's late timestamp, or a clock far off) the
 * tenant's whole range, which for a big tenant is millions of entries per
 * page. The Append stops at the first row: the second branch runs only when
 * the first found nothing. */
#define MD_EVENTS_CURSOR_TIME                                                                      \
    "to_timestamp(('x' || left(replace($4::text, '-', ''), 12))::bit(48)::bigint / 1000.0)"
static const char md_events_list_sql[] =
    "WITH c AS ((SELECT created_at, id FROM events WHERE tenant_id = $1 AND id = $4::uuid"
    "  AND created_at >= " MD_EVENTS_CURSOR_TIME " - interval '1 hour'"
    "  AND created_at < " MD_EVENTS_CURSOR_TIME " + interval '1 hour')"
    " UNION ALL (SELECT created_at, id FROM events WHERE tenant_id = $1 AND id = $4::uuid)"
    " LIMIT 1),"
    " page AS (SELECT e.* FROM events e WHERE e.tenant_id = $1"
    "  AND ($2::text IS NULL OR e.type = $2) AND ($3::timestamptz IS NULL OR e.created_at >= $3)"
    "  AND ($4::uuid IS NULL OR (e.created_at, e.id) > (SELECT created_at, id FROM c))"
    "  ORDER BY e.created_at, e.id LIMIT $5::int + 1)"
    " SELECT ($4::uuid IS NULL OR EXISTS (SELECT 1 FROM c)),"
    "  (SELECT coalesce(json_agg(" MD_EVENTS_ROW " ORDER BY e.created_at, e.id), '[]')"
    "   FROM page e)";

/* The metrics labels of events: md_event_type_name() of each md_event_type_t,
 * filled by md_events_app_init (so the index is the type); of suppressions:
 * indexed by MD_EVENTS_REASON_* (md_events.h). */
static const char *md_events_type_names[MD_EVENT_SUBSCRIPTION + 1];
static const char *const md_events_reasons[] = {[MD_EVENTS_REASON_HARD_BOUNCE] = "hard_bounce",
                                                [MD_EVENTS_REASON_SOFT_BOUNCE] = "soft_bounce",
                                                [MD_EVENTS_REASON_COMPLAINT] = "complaint",
                                                [MD_EVENTS_REASON_UNSUBSCRIBE] = "unsubscribe",
                                                [MD_EVENTS_REASON_MANUAL] = "manual"};
static const char *const md_events_providers[] = {"ses", "sendgrid", "postmark", "mailgun"};

int
md_events_app_init(md_app_t *app)
{
    const md_webhooks_conf_t *wc = app->conf->webhooks;
    for (size_t i = 0; i < md_nelems(md_events_type_names); i++)
        md_events_type_names[i] = md_event_type_name((md_event_type_t)i);
    md_metrics_webhook_names(md_events_type_names, md_nelems(md_events_type_names),
                             md_events_reasons, md_nelems(md_events_reasons), md_events_providers,
                             md_nelems(md_events_providers));
    if (app->pg) {
        if (md_pg_prepare(app->pg, "md_events_ingest", md_events_ingest_sql, 5) != MD_OK ||
            md_pg_prepare(app->pg, "md_events_for_message", md_events_for_message_sql, 2) !=
                MD_OK ||
            md_pg_prepare(app->pg, "md_events_list", md_events_list_sql, 5) != MD_OK)
            return MD_ERROR;
    }
    ev_state.up = 1;
    if (wc == NULL)
        return MD_OK;
    ev_state.sns = md_sns_cache_new(wc->sns_relax_dates ? MD_SNS_CACHE_RELAX_DATES : 0);
    if (wc->sns_relax_dates)
        md_logf(MD_LOG_WARN, 0, MD_LOG_FIELDS(MD_LS("directive", "sns_relax_dates")),
                "expired SNS certificates are accepted: for tests only");
    if (wc->sns_fetch_override)
        md_logf(MD_LOG_WARN, 0, MD_LOG_FIELDS(MD_LS("sns_fetch_override", wc->sns_fetch_override)),
                "SNS certificates and confirmations are fetched from a test server");
    if (wc->sns_cert_dir) {
        const char *why = NULL;
        int n = md_sns_cache_seed_dir(ev_state.sns, wc->sns_cert_dir, &why);
        if (n < 0) {
            md_logf(MD_LOG_ERROR, 0,
                    MD_LOG_FIELDS(MD_LS("sns_cert_dir", wc->sns_cert_dir),
                                  MD_LS("reason", why ? why : "")),
                    "cannot seed the SNS certificate cache");
            return MD_ERROR;
        }
    }
    if (wc->sendgrid_public_key) {
        const char *why = NULL;
        const char *k = wc->sendgrid_public_key;
        ev_state.sg = md_webhook_sg_key_load((md_str_t){strlen(k), k}, &why);
        if (ev_state.sg == NULL)
            return MD_ERROR;
    }
    return MD_OK;
}

void
md_events_app_destroy(md_app_t *app)
{
    md_unused(app);
    if (!ev_state.up)
        return;
    md_sns_cache_free(ev_state.sns);
    md_webhook_sg_key_free(ev_state.sg);
    memset(&ev_state, 0, sizeof(ev_state));
}

/* ---- ingest ---------------------------------------------------------------------- */

typedef struct ingest_s {
    md_events_ingest_cb cb;
    void *ctx;
    md_webhook_provider_t provider;
    unsigned events;
} ingest_t;

/* Where the event moves the status to, and that status' rank (md_events.h). */
static const char *
status_to(const md_webhook_event_t *e, int *rank)
{
    switch (e->type) {
    case MD_EVENT_SENT:
        *rank = 1;
        return "sent";
    case MD_EVENT_DELIVERED:
        *rank = 2;
        return "delivered";
    case MD_EVENT_BOUNCED:
        if (e->bounce != MD_BOUNCE_HARD)
            return NULL;
        *rank = 3;
        return "bounced";
    case MD_EVENT_COMPLAINED:
        *rank = 3;
        return "complained";
    default:
        return NULL;
    }
}

static const char *
suppress_reason(const md_webhook_event_t *e)
{
    if (e->type == MD_EVENT_BOUNCED && e->bounce == MD_BOUNCE_HARD)
        return "hard_bounce";
    if (e->type == MD_EVENT_COMPLAINED)
        return "complaint";
    if (e->type == MD_EVENT_UNSUBSCRIBED)
        return "unsubscribe";
    return NULL;
}

static void
set_str(json_t *o, const char *k, const char *v)
{
    json_object_set_new(o, k, v ? json_string(v) : json_null());
}

/* One event as the statement's jsonb element; the normalised recipient (domain
 * lower-cased A-label, local part as given) when it parses, else NULL. */
static json_t *
event_json(const md_webhook_event_t *e, unsigned ord, md_pool_t *pool)
{
    json_t *o = json_object();
    char id[MD_UUID_STRLEN + 1];
    md_uuid7(id);
    json_object_set_new(o, "ord", json_integer(ord));
    set_str(o, "id", id);
    set_str(o, "event_id", e->event_id);
    char mid[MD_UUID_STRLEN + 1];
    if (e->message_id && md_uuid_parse((md_str_t){strlen(e->message_id), e->message_id}, mid))
        set_str(o, "mid", mid);
    set_str(o, "pmid", e->provider_message_id);
    set_str(o, "type", md_event_type_name(e->type));
    int rank = 0;
    const char *st = status_to(e, &rank);
    set_str(o, "status_to", st);
    json_object_set_new(o, "rank", json_integer(rank));
    set_str(o, "suppress", suppress_reason(e));
    json_object_set_new(o, "soft",
                        json_boolean(e->type == MD_EVENT_BOUNCED && e->bounce == MD_BOUNCE_SOFT));
    const char *addr = NULL;
    if (e->recipient) {
        md_address_t a;
        char buf[MD_ADDRESS_MAX + 1];
        if (md_address_parse(pool, e->recipient, strlen(e->recipient), &a, NULL) == MD_OK &&
            md_address_normalize(&a, buf, sizeof(buf)) < sizeof(buf))
            addr = md_pstrndup(pool, buf, strlen(buf));
    }
    set_str(o, "addr", addr);

    json_t *d = json_object();
    set_str(d, "provider", md_webhook_provider_name(e->provider));
    set_str(d, "event", e->provider_event);
    set_str(d, "provider_type", e->provider_type);
    set_str(d, "provider_subtype", e->provider_subtype);
    set_str(d, "bounce", md_bounce_class_name(e->bounce));
    set_str(d, "recipient", e->recipient);
    set_str(d, "url", e->url);
    set_str(d, "diagnostic", e->diagnostic);
    set_str(d, "provider_event_id", e->event_id);
    set_str(d, "provider_message_id", e->provider_message_id);
    if (e->timestamp_ms > 0)
        json_object_set_new(d, "timestamp_ms", json_integer(e->timestamp_ms));
    json_t *det = e->details ? json_loads(e->details, 0, NULL) : NULL;
    json_object_set_new(d, "details", det ? det : json_null());
    json_object_set_new(o, "data", d);
    return o;
}

/* Counts one json array of names (the statement's types or reasons) into a
 * metrics family by their index in names. */
static unsigned
count_names(const char *text, const char *const *names, size_t nnames,
            void (*inc)(unsigned, uint64_t))
{
    json_t *a = text ? json_loads(text, 0, NULL) : NULL;
    unsigned n = 0;
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v)
    {
        n++;
        const char *s = json_string_value(v);
        for (size_t k = 0; s && k < nnames; k++) {
            if (strcmp(s, names[k]) == 0) {
                inc((unsigned)k, 1);
                break;
            }
        }
    }
    json_decref(a);
    return n;
}

static void
ingest_done(void *ctx, const md_pg_result_t *res)
{
    ingest_t *x = ctx;
    md_events_ingest_result_t out;
    memset(&out, 0, sizeof(out));
    out.events = x->events;
    if (res->error) {
        out.error = res->error;
        md_logf(MD_LOG_WARN, 0,
                MD_LOG_FIELDS(MD_LS("provider", md_webhook_provider_name(x->provider)),
                              MD_LS("error", res->error),
                              MD_LS("message", res->message ? res->message : "")),
                "webhook events not stored");
    } else if (PQntuples(res->res) == 1) {
        const PGresult *p = res->res;
        out.unknown = (unsigned)strtoul(PQgetvalue(p, 0, 1), NULL, 10);
        out.duplicates = (unsigned)strtoul(PQgetvalue(p, 0, 2), NULL, 10);
        out.stored = count_names(PQgetvalue(p, 0, 3), md_events_type_names,
                                 md_nelems(md_events_type_names), md_metrics_webhook_event);
        out.moved = (unsigned)strtoul(PQgetvalue(p, 0, 4), NULL, 10);
        out.suppressed = count_names(PQgetvalue(p, 0, 5), md_events_reasons,
                                     md_nelems(md_events_reasons), md_metrics_webhook_suppression);
        if (out.unknown)
            md_metrics_webhook_unknown((unsigned)x->provider, out.unknown);
    }
    x->cb(x->ctx, &out);
    free(x);
}

int
md_events_ingest(md_webhook_provider_t provider, const md_webhook_events_t *evs,
                 md_events_ingest_cb cb, void *ctx)
{
    if (md_app == NULL || md_app->pg == NULL)
        return MD_AGAIN;
    const md_webhooks_conf_t *wc = md_app->conf->webhooks;
    md_pool_t *pool = md_pool_create(4096);
    json_t *arr = json_array();
    for (size_t i = 0; i < evs->n; i++)
        json_array_append_new(arr, event_json(&evs->ev[i], (unsigned)i, pool));
    char *text = json_dumps(arr, JSON_COMPACT);
    json_decref(arr);
    md_pool_destroy(pool);
    if (text == NULL)
        return MD_AGAIN;

    char limit[16], window[32], suppress[32];
    snprintf(limit, sizeof(limit), "%d", wc ? wc->soft_bounce_limit : 3);
    snprintf(window, sizeof(window), "%.0f", wc ? wc->soft_bounce_window : 72 * 3600.);
    snprintf(suppress, sizeof(suppress), "%.0f", wc ? wc->soft_bounce_suppress : 7 * 86400.);
    const char *values[5] = {md_webhook_provider_name(provider), text, limit, window, suppress};
    md_pg_query_t q = {.stmt = "md_events_ingest", .nparams = 5, .values = values};
    ingest_t *x = md_xcalloc(1, sizeof(*x));
    x->cb = cb;
    x->ctx = ctx;
    x->provider = provider;
    x->events = (unsigned)evs->n;
    int rc = md_pg_exec(md_app->pg, &q, ingest_done, x);
    free(text);
    if (rc != MD_OK) {
        free(x);
        return MD_AGAIN;
    }
    return MD_OK;
}

/* ---- reads ----------------------------------------------------------------------- */

typedef struct read_s {
    md_events_read_cb cb;
    void *ctx;
    int limit; /* list only; 0 for the message's events */
} read_t;

static void
read_done(void *ctx, const md_pg_result_t *res)
{
    read_t *x = ctx;
    md_events_read_cb cb = x->cb;
    void *cctx = x->ctx;
    int limit = x->limit;
    free(x);
    if (res->error) {
        /* A bad "since" is the caller's: 22007/22008 (datetime format/field). */
        if (res->error == md_pg_err_sql && res->sqlstate && strncmp(res->sqlstate, "2200", 4) == 0)
            cb(cctx, NULL, "invalid_since");
        else
            cb(cctx, NULL, res->error);
        return;
    }
    const PGresult *p = res->res;
    if (PQntuples(p) != 1 || strcmp(PQgetvalue(p, 0, 0), "t") != 0) {
        cb(cctx, NULL, limit ? "invalid_cursor" : "not_found");
        return;
    }
    json_t *data = json_loads(PQgetvalue(p, 0, 1), 0, NULL);
    if (!json_is_array(data)) {
        json_decref(data);
        cb(cctx, NULL, "sql");
        return;
    }
    json_t *obj = json_object();
    if (limit) {
        json_t *next = json_null();
        if (json_array_size(data) > (size_t)limit) {
            json_array_remove(data, (size_t)limit);
            json_t *last = json_array_get(data, (size_t)limit - 1);
            next = json_incref(json_object_get(last, "id"));
        }
        json_object_set_new(obj, "data", data);
        json_object_set_new(obj, "next_cursor", next);
    } else {
        json_object_set_new(obj, "data", data);
    }
    cb(cctx, obj, NULL);
}

int
md_events_for_message(const char *tenant_id, const char *message_id, md_events_read_cb cb,
                      void *ctx)
{
    if (md_app == NULL || md_app->pg == NULL)
        return MD_AGAIN;
    const char *values[2] = {tenant_id, message_id};
    md_pg_query_t q = {.stmt = "md_events_for_message", .nparams = 2, .values = values};
    read_t *x = md_xcalloc(1, sizeof(*x));
    x->cb = cb;
    x->ctx = ctx;
    int rc = md_pg_exec(md_app->pg, &q, read_done, x);
    if (rc != MD_OK)
        free(x);
    return rc;
}

int
md_events_list(const char *tenant_id, const md_events_filter_t *f, md_events_read_cb cb, void *ctx)
{
    if (md_app == NULL || md_app->pg == NULL)
        return MD_AGAIN;
    char limit[16];
    snprintf(limit, sizeof(limit), "%d", f->limit);
    const char *values[5] = {tenant_id, f->type, f->since, f->cursor, limit};
    md_pg_query_t q = {.stmt = "md_events_list", .nparams = 5, .values = values};
    read_t *x = md_xcalloc(1, sizeof(*x));
    x->cb = cb;
    x->ctx = ctx;
    x->limit = f->limit > 0 ? f->limit : 1;
    int rc = md_pg_exec(md_app->pg, &q, read_done, x);
    if (rc != MD_OK)
        free(x);
    return rc;
}
