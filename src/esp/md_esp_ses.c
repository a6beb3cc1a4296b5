/*
 * The Amazon SES driver: API v2 SendEmail, POST /v2/email/outbound-emails with
 * a JSON body, signed with AWS Signature Version 4 (service "ses", the account's
 * region) over the exact body.
 *
 * Simple content: Subject and Body {Text, Html} in UTF-8, Headers [{Name,
 * Value}] (SES v2 Simple content takes custom headers) with X-Mailerd-Message-Id
 * first, EmailTags [{Name: mailerd_message_id, Value: id}] (SES copies tags into
 * its event publishing records; tag values allow A-Z a-z 0-9 _ - only, which a
 * UUID satisfies), ConfigurationSetName when configured. Display names that are
 * not ASCII are RFC 2047 encoded-words: SES asks for MIME encoded-word syntax
 * for non-ASCII sender names, and the same is done for recipients and header
 * values (their encoding is otherwise unspecified).
 *
 * Signing: Host (as the client sends it: host, and :port when not the scheme's
 * default) and Content-Type are signed; X-Amz-Date comes from the wall clock at
 * build time (SES allows 5 minutes of skew, far more than a request waits in a
 * pool); X-Amz-Security-Token is added and signed with a session token. The
 * signing key (four HMACs of the secret, date, region and service) is kept per
 * account and worker and derived again only when the UTC date changes.
 *
 * Answers (the error code is the x-amzn-ErrorType header up to ":", or the
 * body's "__type" after "#", or its "code"; the text is "message"):
 *   200 {"MessageId"}                                 -> sent
 *   429, TooManyRequestsException, LimitExceededException, Throttling*
 *                                                     -> retryable (Retry-After if any;
 *                                                        SES sends none)
 *   5xx                                               -> retryable
 *   AccountSuspendedException, SendingPausedException -> retryable: the account cannot
 *       send at all, which says nothing about this message; another account (the
 *       router's failover) can send it, and a permanent failure would wrongly fail
 *       every message queued while the account is paused
 *   401 or 403, and the credential errors whatever their status:
 *   SignatureDoesNotMatch, InvalidSignatureException, IncompleteSignatureException,
 *   UnrecognizedClientException, MissingAuthenticationToken(Exception),
 *   InvalidClientTokenId, InvalidAccessKeyId, ExpiredToken(Exception),
 *   AccessDenied(Exception), NotAuthorizedException
 *                                                     -> retryable "auth_failed", text
 *       "CODE: message": a wrong, expired or revoked key (or a skewed clock) is the
 *       account's fault, not the message's; the router fails over to the next
 *       account, and with none left the message is deferred and, after
 *       max_attempts, dead-lettered, so a retry-failed resends it once the key
 *       is fixed instead of every message of the outage being lost
 *   MessageRejected, MailFromDomainNotVerifiedException, BadRequestException,
 *   NotFoundException and any other 4xx              -> permanent with the code
 */
#include "md_esp.h"
#include "md_sigv4.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define MD_SES_PATH "/v2/email/outbound-emails"

/* The Host header value the client will send for url "scheme://host[:port]":
 * host as written, with the port only when it is not the scheme's default. */
static char *
md_ses_host(md_pool_t *pool, const char *url)
{
    bool tls = strncmp(url, "https://", 8) == 0;
    const char *h = url + (tls ? 8 : (strncmp(url, "http://", 7) == 0 ? 7 : 0));
    size_t n = strcspn(h, "/");
    const char *end = h + n;
    const char *close = memchr(h, ']', n);
    const char *from = close ? close : h;
    const char *colon = memchr(from, ':', (size_t)(end - from));
    if (colon) {
        const char *dflt = tls ? "443" : "80";
        size_t plen = (size_t)(end - colon - 1);
        if (plen == strlen(dflt) && strncmp(colon + 1, dflt, plen) == 0)
            n = (size_t)(colon - h);
    }
    return md_pstrndup(pool, h, n);
}

static void
md_ses_addr_list(md_buf_t *b, const md_mime_addr_t *list, size_t n, md_buf_t *tmp)
{
    md_buf_append_str(b, "[");
    for (size_t i = 0; i < n; i++) {
        md_buf_reset(tmp);
        md_esp_mailbox(tmp, &list[i], true);
        md_buf_append_str(b, i ? ",\"" : "\"");
        md_buf_append_json_escaped(b, tmp->pos, md_buf_len(tmp));
        md_buf_append_str(b, "\"");
    }
    md_buf_append_str(b, "]");
}

static void
md_ses_content(md_buf_t *b, const char *key, md_str_t s)
{
    md_buf_printf(b, "\"%s\":{\"Data\":\"", key);
    md_buf_append_json_escaped(b, s.data ? s.data : "", s.data ? s.len : 0);
    md_buf_append_str(b, "\",\"Charset\":\"UTF-8\"}");
}

static void
md_ses_body(const md_esp_msg_t *m, md_buf_t *b)
{
    md_buf_t tmp;
    md_buf_init(&tmp);
    md_buf_append_str(b, "{\"FromEmailAddress\":\"");
    md_esp_mailbox(&tmp, &m->from, true);
    md_buf_append_json_escaped(b, tmp.pos, md_buf_len(&tmp));
    md_buf_append_str(b, "\",\"Destination\":{\"ToAddresses\":");
    md_ses_addr_list(b, &m->to, 1, &tmp);
    if (m->ncc) {
        md_buf_append_str(b, ",\"CcAddresses\":");
        md_ses_addr_list(b, m->cc, m->ncc, &tmp);
    }
    if (m->nbcc) {
        md_buf_append_str(b, ",\"BccAddresses\":");
        md_ses_addr_list(b, m->bcc, m->nbcc, &tmp);
    }
    md_buf_append_str(b, "}");
    if (m->nreply_to) {
        md_buf_append_str(b, ",\"ReplyToAddresses\":");
        md_ses_addr_list(b, m->reply_to, m->nreply_to, &tmp);
    }
    md_buf_append_str(b, ",\"Content\":{\"Simple\":{");
    md_str_t subj = {m->subject ? strlen(m->subject) : 0, m->subject ? m->subject : ""};
    md_ses_content(b, "Subject", subj);
    md_buf_append_str(b, ",\"Body\":{");
    if (m->text.data)
        md_ses_content(b, "Text", m->text);
    if (m->html.data) {
        if (m->text.data)
            md_buf_append_str(b, ",");
        md_ses_content(b, "Html", m->html);
    }
    md_buf_append_str(b, "},\"Headers\":");
    md_esp_json_headers(b, m, &tmp);
    md_buf_append_str(b, "}},\"EmailTags\":[{\"Name\":\"mailerd_message_id\",\"Value\":");
    md_esp_json_str(b, m->id);
    md_buf_append_str(b, "}]");
    md_buf_free(&tmp);
}

static md_str_t
md_ses_str(const char *s)
{
    md_str_t r = {s ? strlen(s) : 0, s ? s : ""};
    return r;
}

/* The account's signer state, per worker (esp->data): the signing key of the
 * day (four HMACs saved per request) and the signer's buffers, reused. */
typedef struct md_ses_data_s {
    md_sigv4_key_cache_t kc;
    md_sigv4_out_t out;
} md_ses_data_t;

static int
md_ses_init(md_esp_t *esp, char *err, size_t errlen)
{
    md_unused(err);
    md_unused(errlen);
    md_ses_data_t *d = md_xcalloc(1, sizeof(*d));
    md_sigv4_out_init(&d->out);
    esp->data = d;
    return MD_OK;
}

static void
md_ses_destroy(md_esp_t *esp)
{
    md_ses_data_t *d = esp->data;
    if (d == NULL)
        return;
    md_sigv4_key_cache_clear(&d->kc);
    md_sigv4_out_free(&d->out);
    free(d);
    esp->data = NULL;
}

/* Builds and signs the request (see the top of the file). Strings made here
 * live in req->pool; the signer's scratch is the account's (reused), or made
 * and freed here for an account made without init. */
static int
md_ses_build(md_esp_t *esp, const md_esp_msg_t *m, md_esp_request_t *req, md_esp_result_t *res)
{
    const md_esp_conf_t *c = esp->conf;
    if (!md_esp_has_content(m, res))
        return MD_ERROR;
    md_buf_t *b = &req->body;
    md_ses_body(m, b);
    if (c->configuration_set) {
        md_buf_append_str(b, ",\"ConfigurationSetName\":");
        md_esp_json_str(b, c->configuration_set);
    }
    md_buf_append_str(b, "}");

    req->method = "POST";
    req->path = MD_SES_PATH;
    char *host = md_ses_host(req->pool, c->endpoint ? c->endpoint : "");
    md_sigv4_header_t sh[2] = {
        {md_ses_str("Host"), md_ses_str(host)},
        {md_ses_str("Content-Type"), md_ses_str("application/json")},
    };
    md_sigv4_req_t sr;
    memset(&sr, 0, sizeof(sr));
    sr.method = md_ses_str("POST");
    sr.path = md_ses_str(MD_SES_PATH);
    sr.query = md_ses_str("");
    sr.headers = sh;
    sr.nheaders = 2;
    sr.payload.data = b->pos ? b->pos : "";
    sr.payload.len = md_buf_len(b);
    md_sigv4_cred_t cred;
    memset(&cred, 0, sizeof(cred));
    cred.access_key_id = md_ses_str(c->access_key_id);
    cred.secret_key = md_ses_str(c->secret_access_key);
    if (c->session_token)
        cred.session_token = md_ses_str(c->session_token);
    cred.region = md_ses_str(c->region);
    cred.service = md_ses_str("ses");
    md_ses_data_t *d = esp->data;
    md_sigv4_out_t own, *out = d ? &d->out : &own;
    if (d == NULL)
        md_sigv4_out_init(&own);
    int rc = md_sigv4_sign_cached(&sr, &cred, time(NULL), 0, d ? &d->kc : NULL, out);
    if (rc == MD_OK) {
        md_esp_request_header(req, "Content-Type", "application/json");
        for (size_t i = 0; i < out->nsend; i++) {
            const md_sigv4_header_t *h = &out->send[i];
            md_esp_request_header(req, md_pstrndup(req->pool, h->name.data, h->name.len),
                                  md_pstrndup(req->pool, h->value.data, h->value.len));
        }
    } else {
        /* our configuration or clock, not the message: another account may do */
        md_esp_result_retryable(res, "sign_failed", 0, out->reason ? out->reason : "sigv4");
    }
    if (d == NULL)
        md_sigv4_out_free(&own);
    return rc == MD_OK ? MD_OK : MD_ERROR;
}

static bool
md_ses_is(const char *code, const char *name)
{
    return strcmp(code, name) == 0;
}

/* The error codes that mean the account's credentials (or their permissions)
 * were refused: never the message's fault (see the top of the file). */
static bool
md_ses_auth_error(const char *code)
{
    static const char *const auth[] = {
        "SignatureDoesNotMatch",        "InvalidSignatureException",
        "IncompleteSignatureException", "UnrecognizedClientException",
        "MissingAuthenticationToken",   "MissingAuthenticationTokenException",
        "InvalidClientTokenId",         "ExpiredToken",
        "ExpiredTokenException",        "AccessDenied",
        "AccessDeniedException",        "NotAuthorizedException",
        "InvalidAccessKeyId",
    };
    for (size_t i = 0; i < sizeof(auth) / sizeof(auth[0]); i++) {
        if (md_ses_is(code, auth[i]))
            return true;
    }
    return false;
}

static void
md_ses_read(md_esp_t *esp, const md_esp_response_t *resp, md_esp_result_t *res)
{
    md_unused(esp);
    if (md_esp_transport_error(resp, res))
        return;
    const md_http_client_response_t *h = resp->http;
    json_error_t jerr;
    json_t *root = h->body.len ? json_loadb(h->body.data, h->body.len, 0, &jerr) : NULL;
    if (h->status >= 200 && h->status < 300) {
        const char *id = json_string_value(json_object_get(root, "MessageId"));
        md_esp_result_sent(res, id ? id : "", 0);
        json_decref(root);
        return;
    }
    char code[64] = "";
    const char *t = md_http_client_header(h, "x-amzn-ErrorType");
    if (t == NULL)
        t = json_string_value(json_object_get(root, "__type"));
    if (t == NULL)
        t = json_string_value(json_object_get(root, "code"));
    if (t == NULL)
        t = json_string_value(json_object_get(root, "Code"));
    if (t) {
        const char *hash = strrchr(t, '#');
        if (hash)
            t = hash + 1;
        snprintf(code, sizeof(code), "%.*s", (int)strcspn(t, ":"), t);
    }
    if (code[0] == '\0')
        snprintf(code, sizeof(code), "http_%d", h->status);
    const char *msg = json_string_value(json_object_get(root, "message"));
    if (msg == NULL)
        msg = json_string_value(json_object_get(root, "Message"));
    char text[256];
    if (msg)
        md_strlcpy(text, msg, sizeof(text));
    else
        snprintf(text, sizeof(text), "HTTP %d: %.*s", h->status,
                 (int)(h->body.len > 200 ? 200 : h->body.len), h->body.data ? h->body.data : "");
    json_decref(root);

    double wait = md_esp_retry_after(h, time(NULL));
    if (h->status == 429 || md_ses_is(code, "TooManyRequestsException") ||
        md_ses_is(code, "LimitExceededException") || strncmp(code, "Throttl", 7) == 0 ||
        md_ses_is(code, "RequestThrottled"))
        md_esp_result_retryable(res, strncmp(code, "http_", 5) == 0 ? "throttled" : code, wait,
                                text);
    else if (h->status >= 500 || h->status < 400)
        md_esp_result_retryable(res, code, wait, text);
    else if (md_ses_is(code, "AccountSuspendedException") ||
             md_ses_is(code, "SendingPausedException"))
        md_esp_result_retryable(res, code, wait, text);
    else if (h->status == 401 || h->status == 403 || md_ses_auth_error(code)) {
        char why[256];
        /* the provider's code first: it survives a long message */
        snprintf(why, sizeof(why), "%.63s: %.190s", code, text);
        md_esp_result_retryable(res, "auth_failed", wait, why);
    } else
        md_esp_result_permanent(res, code, text);
}

const md_esp_driver_t md_esp_ses_driver = {
    .name = "ses",
    .kind = MD_ESP_DRIVER_SES,
    .init = md_ses_init,
    .destroy = md_ses_destroy,
    .build_request = md_ses_build,
    .read_response = md_ses_read,
};
