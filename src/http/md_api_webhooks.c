/*
 * Provider webhooks and the event reads (issue 7).
 *
 *   POST /webhooks/ses        Amazon SNS (HTTP delivery, or a Lambda-style
 *                             {"Records":[{"Sns":{...}}]} wrapper): TopicArn
 *                             among sns_topic, signature checked with a cached
 *                             certificate; an unknown certificate is fetched
 *                             (only from a URL md_sns_verify hands out, i.e.
 *                             one passing md_sns_cert_url_ok) through the
 *                             worker's HTTP client while the request waits.
 *                             Notification -> the SES event inside;
 *                             SubscriptionConfirmation -> GET its SubscribeURL.
 *   POST /webhooks/sendgrid   ECDSA over timestamp || body.
 *   POST /webhooks/mailgun    HMAC, timestamp within 5 min, token never seen
 *                             before (Redis SET NX EX, given back if the store
 *                             then fails so the provider's retry is not refused).
 *   POST /webhooks/postmark   basic auth.
 *   GET  /v1/messages/{id}/events, GET /v1/events (Bearer key).
 *
 * Answers: 200 {"received","stored","duplicates","unknown"} once stored (an
 * event naming no message of ours is acknowledged and counted, not an error:
 * a provider retrying it would never succeed); 401 for any failed
 * authentication, with nothing changed; 403 for a topic not configured; 400
 * for a body that authenticates but is not the provider's shape; 404
 * webhook_not_configured when the webhooks { } block does not configure the
 * provider; 503 when a store or the certificate fetch cannot answer now (the
 * provider retries).
 */
#include "md_router.h"
#include "md_api_util.h"
#include "md_app.h"
#include "md_auth.h"
#include "md_client.h"
#include "md_list.h"
#include "md_conf.h"
#include "md_events.h"
#include "md_log.h"
#include "md_metrics.h"
#include "md_redis.h"
#include "md_sns.h"
#include "md_tenants.h"
#include "md_webhook.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAILGUN_TOKEN_KEY "mailerd:webhook:mailgun:"
/* Twice the timestamp window: a token outlives every request that could carry it. */
#define MAILGUN_TOKEN_TTL "900"
#define SNS_ENDPOINTS_MAX 16

void md_api_webhooks_register(md_router_t *rt, const md_conf_t *conf);

static const md_webhooks_conf_t *
wh_conf(void)
{
    return md_app ? md_app->conf->webhooks : NULL;
}

/* 401/403 for a refused request, counted per provider. */
static int
refuse(md_http_request_t *r, md_webhook_provider_t p, int status, const char *code, const char *msg)
{
    md_metrics_webhook_refused((unsigned)p, 1);
    md_logf(MD_LOG_INFO, 0,
            MD_LOG_FIELDS(MD_LS("provider", md_webhook_provider_name(p)), MD_LS("code", code)),
            "webhook refused");
    md_http_send_error(r, status, code, "%s", msg);
    return MD_OK;
}

static int
not_configured(md_http_request_t *r, md_webhook_provider_t p)
{
    md_http_send_error(r, 404, "webhook_not_configured", "the %s webhook is not configured",
                       md_webhook_provider_name(p));
    return MD_OK;
}

static md_str_t
header(md_http_request_t *r, const char *name)
{
    const md_str_t *h = md_http_get_header(r, name);
    return h ? *h : (md_str_t){0, NULL};
}

/* ---- storing ----------------------------------------------------------------------- */

typedef struct wh_req_s {
    md_http_request_t *r;
    md_webhook_provider_t provider;
    char token[MD_WEBHOOK_MAILGUN_TOKEN_MAX + 1]; /* mailgun: to give back on failure */
} wh_req_t;

static void
ingest_done(void *ctx, const md_events_ingest_result_t *res)
{
    wh_req_t *x = ctx;
    md_http_request_t *r = x->r;
    if (res->error) {
        /* Nothing (or, after a lost connection, perhaps everything) was stored:
         * the provider retries and the event ids make a retry harmless. */
        if (x->token[0] && md_app && md_app->redis) {
            char key[sizeof(MAILGUN_TOKEN_KEY) + MD_WEBHOOK_MAILGUN_TOKEN_MAX];
            snprintf(key, sizeof(key), "%s%s", MAILGUN_TOKEN_KEY, x->token);
            const char *argv[2] = {"DEL", key};
            md_redis_cmd(md_app->redis, md_redis_ignore_cb, NULL, 2, argv, NULL);
        }
        md_app_send_store_unavailable(r, "postgres");
        return;
    }
    json_t *o = json_pack("{s:I,s:I,s:I,s:I}", "received", (json_int_t)res->events, "stored",
                          (json_int_t)res->stored, "duplicates", (json_int_t)res->duplicates,
                          "unknown", (json_int_t)res->unknown);
    md_http_send_json(r, 200, o);
}

/* Parses body for provider p and stores its events; answers in every case. */
static int
parse_and_store(wh_req_t *x, const char *body, size_t len)
{
    md_http_request_t *r = x->r;
    md_webhook_events_t evs;
    const char *why = NULL;
    if (md_webhook_parse(x->provider, body, len, &evs, &why) != MD_OK) {
        md_http_send_error(r, 400, "malformed", "not a %s event payload",
                           md_webhook_provider_name(x->provider));
        return MD_OK;
    }
    int rc = md_events_ingest(x->provider, &evs, ingest_done, x);
    md_webhook_events_free(&evs);
    if (rc != MD_OK)
        return md_app_send_store_unavailable(r, "postgres");
    return MD_AGAIN;
}

static wh_req_t *
wh_req(md_http_request_t *r, md_webhook_provider_t p)
{
    wh_req_t *x = md_pcalloc(r->pool, sizeof(*x));
    x->r = r;
    x->provider = p;
    return x;
}

/* ---- SendGrid, Postmark, Mailgun --------------------------------------------------- */

static int
api_sendgrid(md_http_request_t *r)
{
    const md_webhooks_conf_t *wc = wh_conf();
    const md_webhook_sg_key_t *key = md_events_sg_key();
    if (wc == NULL || key == NULL)
        return not_configured(r, MD_WEBHOOK_SENDGRID);
    md_str_t sig = header(r, "X-Twilio-Email-Event-Webhook-Signature");
    md_str_t ts = header(r, "X-Twilio-Email-Event-Webhook-Timestamp");
    md_str_t body = {md_buf_len(&r->body), r->body.pos};
    const char *why = NULL;
    if (sig.data == NULL || ts.data == NULL ||
        md_webhook_sendgrid_verify(key, sig, ts, body, time(NULL), (time_t)wc->sendgrid_max_age,
                                   &why) != MD_OK)
        return refuse(r, MD_WEBHOOK_SENDGRID, 401, "invalid_signature",
                      "the SendGrid signature does not verify");
    if (!md_api_pg_ready(r))
        return MD_OK;
    return parse_and_store(wh_req(r, MD_WEBHOOK_SENDGRID), body.data, body.len);
}

static int
api_postmark(md_http_request_t *r)
{
    const md_webhooks_conf_t *wc = wh_conf();
    if (wc == NULL || wc->postmark_user == NULL)
        return not_configured(r, MD_WEBHOOK_POSTMARK);
    md_str_t auth = header(r, "Authorization");
    const char *why = NULL;
    if (auth.data == NULL ||
        md_webhook_postmark_verify(auth, wc->postmark_user, wc->postmark_password, &why) != MD_OK) {
        md_http_add_header(r, "WWW-Authenticate", "Basic realm=\"mailerd webhooks\"");
        return refuse(r, MD_WEBHOOK_POSTMARK, 401, "unauthorized",
                      "the Postmark webhook credentials are wrong");
    }
    if (!md_api_pg_ready(r))
        return MD_OK;
    return parse_and_store(wh_req(r, MD_WEBHOOK_POSTMARK), r->body.pos, md_buf_len(&r->body));
}

static void
mailgun_token_done(void *ctx, redisReply *reply, const char *err)
{
    wh_req_t *x = ctx;
    md_http_request_t *r = x->r;
    if (err || reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        x->token[0] = '\0';
        md_app_send_store_unavailable(r, "redis");
        return;
    }
    if (reply->type == REDIS_REPLY_NIL) {
        x->token[0] = '\0';
        refuse(r, MD_WEBHOOK_MAILGUN, 401, "replayed", "this Mailgun token was seen before");
        return;
    }
    if (r->aborted) {
        /* Nobody to answer: store anyway, the provider may not retry. */
    }
    parse_and_store(x, r->body.pos, md_buf_len(&r->body));
}

static int
api_mailgun(md_http_request_t *r)
{
    const md_webhooks_conf_t *wc = wh_conf();
    if (wc == NULL || wc->mailgun_signing_key == NULL)
        return not_configured(r, MD_WEBHOOK_MAILGUN);
    wh_req_t *x = wh_req(r, MD_WEBHOOK_MAILGUN);
    const char *k = wc->mailgun_signing_key;
    const char *why = NULL;
    int rc =
        md_webhook_mailgun_verify_body((md_str_t){strlen(k), k}, r->body.pos, md_buf_len(&r->body),
                                       time(NULL), x->token, sizeof(x->token), &why);
    if (rc != MD_OK) {
        if (why && strcmp(why, MD_WEBHOOK_WHY_STALE) == 0)
            return refuse(r, MD_WEBHOOK_MAILGUN, 401, "stale_timestamp",
                          "the Mailgun timestamp is not within 5 minutes");
        return refuse(r, MD_WEBHOOK_MAILGUN, 401, "invalid_signature",
                      "the Mailgun signature does not verify");
    }
    if (!md_api_pg_ready(r))
        return MD_OK;
    if (md_app->redis == NULL) /* a replay could not be told: refuse to guess */
        return md_app_send_store_unavailable(r, "redis");
    char key[sizeof(MAILGUN_TOKEN_KEY) + MD_WEBHOOK_MAILGUN_TOKEN_MAX];
    snprintf(key, sizeof(key), "%s%s", MAILGUN_TOKEN_KEY, x->token);
    const char *argv[6] = {"SET", key, "1", "NX", "EX", MAILGUN_TOKEN_TTL};
    if (md_redis_cmd(md_app->redis, mailgun_token_done, x, 6, argv, NULL) != MD_OK)
        return md_app_send_store_unavailable(r, "redis");
    return MD_AGAIN;
}

/* ---- Amazon SNS -------------------------------------------------------------------- */

/* Endpoints of the worker's HTTP client by origin ("https://sns.REGION.amazonaws.com"),
 * made on first use; the client owns them. */
static struct {
    md_http_client_t *client; /* the table belongs to this client */
    char *origin[SNS_ENDPOINTS_MAX];
    md_http_endpoint_t *ep[SNS_ENDPOINTS_MAX];
    unsigned n;
} sns_eps;

/* The endpoint for url's origin (or sns_fetch_override's) and url's path into
 * path/pathlen. NULL when url has no origin form or the table is full. */
static md_http_endpoint_t *
sns_endpoint(md_str_t url, char *path, size_t pathlen)
{
    md_http_client_t *c = md_app ? md_app->http_client : NULL;
    if (c == NULL)
        return NULL;
    if (sns_eps.client != c) {
        for (unsigned i = 0; i < sns_eps.n; i++)
            free(sns_eps.origin[i]);
        memset(&sns_eps, 0, sizeof(sns_eps));
        sns_eps.client = c;
    }
    const char *s = memchr(url.data, ':', url.len);
    if (s == NULL || (size_t)(url.data + url.len - s) < 3 || memcmp(s, "://", 3) != 0)
        return NULL;
    const char *p = memchr(s + 3, '/', (size_t)(url.data + url.len - (s + 3)));
    if (p == NULL || (size_t)(url.data + url.len - p) >= pathlen)
        return NULL;
    memcpy(path, p, (size_t)(url.data + url.len - p));
    path[url.data + url.len - p] = '\0';
    char origin[300];
    const md_webhooks_conf_t *wc = wh_conf();
    if (wc && wc->sns_fetch_override)
        md_strlcpy(origin, wc->sns_fetch_override, sizeof(origin));
    else if ((size_t)(p - url.data) < sizeof(origin))
        snprintf(origin, sizeof(origin), "%.*s", (int)(p - url.data), url.data);
    else
        return NULL;
    for (unsigned i = 0; i < sns_eps.n; i++) {
        if (strcmp(sns_eps.origin[i], origin) == 0)
            return sns_eps.ep[i];
    }
    if (sns_eps.n == SNS_ENDPOINTS_MAX)
        return NULL;
    md_http_endpoint_conf_t ec;
    memset(&ec, 0, sizeof(ec));
    ec.url = origin;
    ec.name = "sns";
    ec.max_connections = 2;
    ec.max_waiting = 64;
    ec.response_timeout = 10;
    ec.max_response_size = 64 * 1024;
    char err[256];
    md_http_endpoint_t *ep = md_http_client_endpoint(c, &ec, err, sizeof(err));
    if (ep == NULL) {
        md_logf(MD_LOG_WARN, 0, MD_LOG_FIELDS(MD_LS("origin", origin), MD_LS("error", err)),
                "cannot make an SNS endpoint");
        return NULL;
    }
    sns_eps.origin[sns_eps.n] = md_xstrdup(origin);
    sns_eps.ep[sns_eps.n++] = ep;
    return ep;
}

/*
 * Certificate fetches in flight in this worker, one per URL: a burst of
 * notifications signed with a certificate not cached yet (SNS sends them by
 * the hundred after a key rotation or a restart) waits on one fetch instead of
 * making one each. The fetch belongs to no request, so a waiter that goes away
 * takes only itself off the list; the certificate still lands in the cache.
 */
typedef struct sns_fetch_s {
    struct sns_fetch_s *next;
    char *url;
    md_list_t waiters; /* sns_req_t.wait */
} sns_fetch_t;

static sns_fetch_t *sns_fetches;

typedef struct sns_req_s {
    wh_req_t wh; /* first: the storing context */
    md_sns_msg_t msg;
    json_t *wrapper;  /* the Lambda-style root when the message came inside one */
    bool cert_waited; /* waited for a certificate fetch already (once per request) */
    md_http_client_req_t *creq;
    md_list_t wait; /* on a sns_fetch_t's waiters while its certificate comes */
    int dead;       /* the request is being freed: the client callback must not touch it */
} sns_req_t;

/* Pool cleanup: cancels an outbound request still out, leaves a certificate
 * fetch it waits on, frees the parsed message. */
static void
sns_cleanup(void *data)
{
    sns_req_t *x = data;
    x->dead = 1;
    md_list_remove(&x->wait);
    if (x->creq) {
        md_http_client_req_t *q = x->creq;
        x->creq = NULL;
        md_http_client_cancel(q);
    }
    md_sns_msg_free(&x->msg);
    json_decref(x->wrapper);
}

static int sns_continue(sns_req_t *x);

static void
sns_confirm_done(void *ctx, const md_http_client_response_t *resp)
{
    sns_req_t *x = ctx;
    x->creq = NULL;
    if (x->dead)
        return;
    md_http_request_t *r = x->wh.r;
    if (resp->error || resp->status != 200) {
        md_logf(MD_LOG_WARN, 0,
                MD_LOG_FIELDS(MD_LS("error", resp->error ? resp->error : ""),
                              MD_LI("status", resp->status)),
                "SNS subscription confirmation failed");
        md_http_add_header(r, "Retry-After", "10");
        md_http_send_error(r, 503, "confirmation_failed",
                           "the SubscribeURL could not be fetched, retry later");
        return;
    }
    md_logf(MD_LOG_INFO, 0,
            MD_LOG_FIELDS(MD_LSN("topic", x->msg.topic_arn.data, x->msg.topic_arn.len)),
            "SNS subscription confirmed");
    md_http_send_json(r, 200, json_pack("{s:s}", "status", "confirmed"));
}

/* GET url (one that passed md_sns_cert_url_ok or md_sns_subscribe_url_ok)
 * through the client; cb(ctx) answers. MD_OK when sent, MD_ERROR when it could
 * not be. */
static int
sns_get(md_str_t url, md_http_client_cb cb, void *ctx, md_http_client_req_t **creq)
{
    char path[2048];
    md_http_endpoint_t *ep = sns_endpoint(url, path, sizeof(path));
    md_http_client_request_t rq;
    memset(&rq, 0, sizeof(rq));
    rq.method = "GET";
    rq.path = path;
    rq.idempotent = true;
    if (ep == NULL || md_http_client_send(ep, &rq, cb, ctx, creq) != MD_OK)
        return MD_ERROR;
    return MD_OK;
}

static int
sns_fetch_unavailable(md_http_request_t *r)
{
    md_http_add_header(r, "Retry-After", "10");
    md_http_send_error(r, 503, "fetch_unavailable", "cannot reach Amazon SNS now, retry later");
    return MD_OK;
}

/* One waiter's answer once its certificate fetch is over: why is NULL when the
 * certificate is in the cache now, else the failure (fetch_failed: 503). */
static void
sns_cert_ready(sns_req_t *x, const char *why, bool fetch_failed)
{
    md_http_request_t *r = x->wh.r;
    if (fetch_failed) {
        md_http_add_header(r, "Retry-After", "10");
        md_http_send_error(r, 503, "certificate_unavailable",
                           "the signing certificate could not be fetched, retry later");
        return;
    }
    if (why != NULL) {
        refuse(r, MD_WEBHOOK_SES, 401, "invalid_signature", "the signing certificate is refused");
        return;
    }
    (void)sns_continue(x);
}

static void
sns_cert_done(void *ctx, const md_http_client_response_t *resp)
{
    sns_fetch_t *f = ctx;
    for (sns_fetch_t **pp = &sns_fetches; *pp; pp = &(*pp)->next) {
        if (*pp == f) {
            *pp = f->next;
            break;
        }
    }
    bool failed = resp->error || resp->status != 200;
    const char *why = NULL;
    if (failed) {
        md_logf(MD_LOG_WARN, 0,
                MD_LOG_FIELDS(MD_LS("url", f->url), MD_LS("error", resp->error ? resp->error : ""),
                              MD_LI("status", resp->status)),
                "SNS certificate fetch failed");
    } else {
        md_str_t url = {strlen(f->url), f->url};
        if (md_sns_cache_add_pem(md_events_sns_cache(), url, resp->body.data, resp->body.len,
                                 &why) != MD_OK) {
            md_logf(MD_LOG_WARN, 0, MD_LOG_FIELDS(MD_LS("url", f->url), MD_LS("reason", why)),
                    "SNS certificate refused");
            if (why == NULL)
                why = "refused";
        } else {
            why = NULL;
        }
    }
    while (!md_list_empty(&f->waiters)) {
        sns_req_t *x = md_list_data(f->waiters.next, sns_req_t, wait);
        md_list_remove(&x->wait);
        sns_cert_ready(x, why, failed);
    }
    free(f->url);
    free(f);
}

/* Waits for the certificate at url (passed md_sns_cert_url_ok): on the fetch
 * already in flight for it, or on a new one. MD_AGAIN while waiting, MD_OK
 * after answering a failure. */
static int
sns_cert_wait(sns_req_t *x, md_str_t url)
{
    for (sns_fetch_t *f = sns_fetches; f; f = f->next) {
        if (strlen(f->url) == url.len && memcmp(f->url, url.data, url.len) == 0) {
            md_list_insert_tail(&f->waiters, &x->wait);
            return MD_AGAIN;
        }
    }
    sns_fetch_t *f = md_xcalloc(1, sizeof(*f));
    f->url = md_xmalloc(url.len + 1);
    memcpy(f->url, url.data, url.len);
    f->url[url.len] = '\0';
    md_list_init(&f->waiters);
    if (sns_get(url, sns_cert_done, f, NULL) != MD_OK) {
        free(f->url);
        free(f);
        return sns_fetch_unavailable(x->wh.r);
    }
    f->next = sns_fetches;
    sns_fetches = f;
    md_list_insert_tail(&f->waiters, &x->wait);
    return MD_AGAIN;
}

/* The SubscribeURL through the client; cb answers. MD_AGAIN when sent, MD_OK
 * after answering a failure. */
static int
sns_fetch(sns_req_t *x, md_str_t url, md_http_client_cb cb)
{
    if (sns_get(url, cb, x, &x->creq) != MD_OK)
        return sns_fetch_unavailable(x->wh.r);
    return MD_AGAIN;
}

/* Verifies (fetching the certificate once if needed) and acts on the message.
 * Returns MD_OK once answered, MD_AGAIN while waiting. */
static int
sns_continue(sns_req_t *x)
{
    md_http_request_t *r = x->wh.r;
    md_sns_result_t res;
    md_sns_verdict_t v = md_sns_verify(&x->msg, md_events_sns_cache(), time(NULL), &res);
    if (v == MD_SNS_UNKNOWN_CERT && !x->cert_waited) {
        /* md_sns_verify hands out only URLs passing md_sns_cert_url_ok; checked
         * again here so no change there can make this fetch another host. */
        if (!md_sns_cert_url_ok(res.fetch_url))
            return refuse(r, MD_WEBHOOK_SES, 401, "invalid_signature",
                          "the signing certificate URL is refused");
        x->cert_waited = true;
        return sns_cert_wait(x, res.fetch_url);
    }
    if (v != MD_SNS_OK) {
        md_logf(MD_LOG_INFO, 0,
                MD_LOG_FIELDS(MD_LS("verdict", md_sns_verdict_name(v)),
                              MD_LS("reason", res.reason ? res.reason : "")),
                "SNS message refused");
        return refuse(r, MD_WEBHOOK_SES, 401, "invalid_signature",
                      "the SNS signature does not verify");
    }
    switch (x->msg.type) {
    case MD_SNS_SUBSCRIPTION_CONFIRMATION:
        if (!md_sns_subscribe_url_ok(x->msg.subscribe_url))
            return refuse(r, MD_WEBHOOK_SES, 401, "invalid_signature",
                          "the SubscribeURL is refused");
        return sns_fetch(x, x->msg.subscribe_url, sns_confirm_done);
    case MD_SNS_UNSUBSCRIBE_CONFIRMATION:
        md_logf(MD_LOG_WARN, 0,
                MD_LOG_FIELDS(MD_LSN("topic", x->msg.topic_arn.data, x->msg.topic_arn.len)),
                "SNS says this endpoint was unsubscribed");
        md_http_send_json(r, 200, json_pack("{s:s}", "status", "ignored"));
        return MD_OK;
    case MD_SNS_NOTIFICATION:
    default:
        break;
    }
    md_webhook_events_t evs;
    const char *why = NULL;
    if (md_webhook_parse_ses(x->msg.message.data, x->msg.message.len, &evs, &why) != MD_OK) {
        /* Authentic, but not an SES event (a test message from the console). */
        md_http_send_json(r, 200, json_pack("{s:s}", "status", "ignored"));
        return MD_OK;
    }
    if (!md_api_pg_ready(r)) {
        md_webhook_events_free(&evs);
        return MD_OK;
    }
    int rc = md_events_ingest(MD_WEBHOOK_SES, &evs, ingest_done, &x->wh);
    md_webhook_events_free(&evs);
    if (rc != MD_OK)
        return md_app_send_store_unavailable(r, "postgres");
    return MD_AGAIN;
}

static int
api_ses(md_http_request_t *r)
{
    const md_webhooks_conf_t *wc = wh_conf();
    md_sns_cache_t *cache = md_events_sns_cache();
    if (wc == NULL || cache == NULL || wc->nsns_topics == 0)
        return not_configured(r, MD_WEBHOOK_SES);
    sns_req_t *x = md_pcalloc(r->pool, sizeof(*x));
    x->wh.r = r;
    x->wh.provider = MD_WEBHOOK_SES;
    md_list_init(&x->wait);
    md_pool_cleanup_add(r->pool, sns_cleanup, x);

    const char *body = r->body.pos;
    size_t len = md_buf_len(&r->body);
    char *inner = NULL;
    /* A Lambda-style wrapper ({"Records":[{"Sns":{...}}]}, what forwarders
     * relay): the signed message is the one record's Sns object, re-encoded
     * (the signature covers decoded values, so encoding does not matter). */
    json_error_t jerr;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    json_t *recs = json_is_object(root) ? json_object_get(root, "Records") : NULL;
    if (recs) {
        json_t *sns =
            json_array_size(recs) == 1 ? json_object_get(json_array_get(recs, 0), "Sns") : NULL;
        if (!json_is_object(sns)) {
            json_decref(root);
            md_http_send_error(r, 400, "malformed", "expected exactly one SNS record");
            return MD_OK;
        }
        inner = json_dumps(sns, JSON_COMPACT);
        x->wrapper = root;
        root = NULL;
        body = inner;
        len = inner ? strlen(inner) : 0;
    }
    json_decref(root);
    const char *why = NULL;
    int rc = md_sns_parse(&x->msg, body ? body : "", len, &why);
    free(inner);
    if (rc != MD_OK) {
        md_http_send_error(r, 400, "malformed", "not an SNS message: %s", why ? why : "");
        return MD_OK;
    }
    /* The topic first: a message of a topic we do not take never causes a fetch. */
    if (!md_sns_topic_allowed(x->msg.topic_arn, (const char *const *)wc->sns_topics,
                              wc->nsns_topics))
        return refuse(r, MD_WEBHOOK_SES, 403, "topic_not_allowed",
                      "the TopicArn is not a configured sns_topic");
    return sns_continue(x);
}

/* ---- event reads ------------------------------------------------------------------- */

static void
read_done(void *ctx, json_t *obj, const char *err)
{
    md_http_request_t *r = ctx;
    if (err == NULL) {
        md_http_send_json(r, 200, obj);
        return;
    }
    json_decref(obj);
    if (strcmp(err, "not_found") == 0)
        md_http_send_error(r, 404, "not_found", "no such message");
    else if (strcmp(err, "invalid_cursor") == 0)
        md_api_bad_param(r, "invalid_parameter", "cursor",
                         "must be a next_cursor value from a previous page");
    else if (strcmp(err, "invalid_since") == 0)
        md_api_bad_param(r, "invalid_parameter", "since", "must be an RFC 3339 date-time");
    else if (md_app_store_down(err))
        md_app_send_store_unavailable(r, "postgres");
    else
        md_http_send_error(r, 500, "internal_error", "internal error");
}

static int
message_events_next(md_http_request_t *r, const md_identity_t *who)
{
    char id[MD_UUID_STRLEN + 1];
    if (!md_uuid_parse(md_http_param(r, "id"), id)) {
        md_http_send_error(r, 404, "not_found", "no such message");
        return MD_OK;
    }
    if (!md_api_pg_ready(r))
        return MD_OK;
    return md_api_queued(r, md_events_for_message(who->tenant_id, id, read_done, r));
}

static int
api_message_events(md_http_request_t *r)
{
    return md_auth_tenant(r, message_events_next);
}

static const char *const event_types[] = {
    "other",        "sent",       "delivered",         "deferred", "bounced",
    "complained",   "rejected",   "rendering_failure", "opened",   "clicked",
    "unsubscribed", "subscribed", "subscription",      NULL};

static int
events_next(md_http_request_t *r, const md_identity_t *who)
{
    md_events_filter_t f = {.limit = 50};
    char cursor[MD_UUID_STRLEN + 1];
    static const char *const names[] = {"type", "since", "cursor", "limit", NULL};
    md_api_query_t qs;
    md_api_query_init(&qs, r);
    unsigned bit;
    char *val;
    int more;
    while ((more = md_api_query_next(&qs, names, &bit, &val)) > 0) {
        if (bit == 1) {
            bool ok = false;
            for (const char *const *t = event_types; *t && !ok; t++)
                ok = strcmp(val, *t) == 0;
            if (!ok)
                return md_api_bad_param(r, "invalid_parameter", qs.name, "not an event type");
            f.type = val;
        } else if (bit == 2) {
            size_t n = strlen(val);
            bool ok = n >= 10 && n <= 40;
            for (size_t i = 0; ok && i < n; i++)
                ok = strchr("0123456789-:T.Z+tz ", val[i]) != NULL;
            if (!ok)
                return md_api_bad_param(r, "invalid_parameter", qs.name,
                                        "must be an RFC 3339 date-time (encode '+' as %2B)");
            f.since = val;
        } else if (bit == 4) {
            if (!md_uuid_parse((md_str_t){strlen(val), val}, cursor))
                return md_api_bad_param(r, "invalid_parameter", qs.name,
                                        "must be a next_cursor value from a previous page");
            f.cursor = cursor;
        } else {
            char *end;
            long v = strtol(val, &end, 10);
            if (*val == '\0' || *end != '\0' || v < 1 || v > 100)
                return md_api_bad_param(r, "invalid_parameter", qs.name,
                                        "must be an integer from 1 to 100");
            f.limit = (int)v;
        }
    }
    if (more < 0 || !md_api_pg_ready(r))
        return MD_OK;
    return md_api_queued(r, md_events_list(who->tenant_id, &f, read_done, r));
}

static int
api_events(md_http_request_t *r)
{
    return md_auth_tenant(r, events_next);
}

void
md_api_webhooks_register(md_router_t *rt, const md_conf_t *conf)
{
    md_unused(conf);
    md_router_add(rt, MD_M_POST, "/webhooks/ses", api_ses);
    md_router_add(rt, MD_M_POST, "/webhooks/sendgrid", api_sendgrid);
    md_router_add(rt, MD_M_POST, "/webhooks/mailgun", api_mailgun);
    md_router_add(rt, MD_M_POST, "/webhooks/postmark", api_postmark);
    md_router_add(rt, MD_M_GET, "/v1/messages/{id}/events", api_message_events);
    md_router_add(rt, MD_M_GET, "/v1/events", api_events);
}
