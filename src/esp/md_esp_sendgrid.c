/*
 * The SendGrid driver: v3 Mail Send, POST /v3/mail/send with a JSON body and
 * "Authorization: Bearer KEY".
 *
 * One personalization carries to/cc/bcc and custom_args {mailerd_message_id}
 * (SendGrid copies custom_args into every event webhook, which is how events map
 * back to our message); the header X-Mailerd-Message-Id travels in "headers".
 * SendGrid refuses a personalization where one address appears twice across
 * to, cc and bcc ("Each email address in the personalization block should be
 * unique"), so later duplicates are dropped, case-insensitively. Content is
 * text/plain first, then text/html (SendGrid requires that order). Header values
 * that are not ASCII are sent as RFC 2047 encoded-words: SendGrid's reference
 * says header values must be encoded by the caller.
 *
 * Answers: 202 (empty body) with X-Message-Id -> sent; 429 -> retryable, the
 * wait from Retry-After or else X-RateLimit-Reset (a Unix time); 5xx ->
 * retryable; 401 (a wrong or revoked key) and 403 (a key without the mail.send
 * scope, or a sender identity the account has not verified) -> retryable
 * "auth_failed" with text "http_NNN: errors[0].message": the account's setup,
 * not the message, is at fault, so the router fails over to the next account
 * and, with none left, the message is deferred and dead-lettered after
 * max_attempts (a retry-failed resends it once the key is fixed); 400/413 and
 * any other 4xx -> permanent, code "http_NNN", text errors[0].message (and its
 * field).
 */
#include "md_esp.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <time.h>

static bool
md_sendgrid_seen(const md_mime_addr_t **seen, size_t n, const char *addr)
{
    for (size_t i = 0; i < n; i++) {
        if (strcasecmp(seen[i]->addr, addr) == 0)
            return true;
    }
    return false;
}

static void
md_sendgrid_email(md_buf_t *b, const md_mime_addr_t *a)
{
    md_buf_append_str(b, "{\"email\":");
    md_esp_json_str(b, a->addr);
    if (a->name && a->name[0]) {
        md_buf_append_str(b, ",\"name\":");
        md_esp_json_str(b, a->name);
    }
    md_buf_append_str(b, "}");
}

/* Appends ,"key":[...] with the addresses of list not seen before (nothing when
 * all are duplicates: SendGrid refuses an empty cc/bcc array). */
static void
md_sendgrid_list(md_buf_t *b, const char *key, const md_mime_addr_t *list, size_t n,
                 const md_mime_addr_t **seen, size_t *nseen)
{
    bool open = false;
    for (size_t i = 0; i < n; i++) {
        if (md_sendgrid_seen(seen, *nseen, list[i].addr))
            continue;
        seen[(*nseen)++] = &list[i];
        if (open)
            md_buf_append_str(b, ",");
        else
            md_buf_printf(b, ",\"%s\":[", key);
        open = true;
        md_sendgrid_email(b, &list[i]);
    }
    if (open)
        md_buf_append_str(b, "]");
}

/* Builds the request (see the top of the file). The strings it makes live in
 * req->pool; the body is req->body. */
static int
md_sendgrid_build(md_esp_t *esp, const md_esp_msg_t *m, md_esp_request_t *req, md_esp_result_t *res)
{
    const md_esp_conf_t *c = esp->conf;
    md_buf_t *b = &req->body;
    if (!md_esp_has_content(m, res))
        return MD_ERROR;
    size_t ntotal = 1 + m->ncc + m->nbcc;
    const md_mime_addr_t **seen = md_palloc(req->pool, sizeof(*seen) * ntotal);
    size_t nseen = 0;

    md_buf_append_str(b, "{\"personalizations\":[{\"to\":[");
    md_sendgrid_email(b, &m->to);
    md_buf_append_str(b, "]");
    seen[nseen++] = &m->to;
    md_sendgrid_list(b, "cc", m->cc, m->ncc, seen, &nseen);
    md_sendgrid_list(b, "bcc", m->bcc, m->nbcc, seen, &nseen);
    md_buf_append_str(b, ",\"custom_args\":{\"mailerd_message_id\":");
    md_esp_json_str(b, m->id);
    md_buf_append_str(b, "}}],\"from\":");
    md_sendgrid_email(b, &m->from);
    if (m->nreply_to == 1) {
        md_buf_append_str(b, ",\"reply_to\":");
        md_sendgrid_email(b, &m->reply_to[0]);
    } else if (m->nreply_to > 1) {
        /* reply_to takes one address; several go in reply_to_list (not both) */
        md_buf_append_str(b, ",\"reply_to_list\":[");
        for (size_t i = 0; i < m->nreply_to; i++) {
            if (i)
                md_buf_append_str(b, ",");
            md_sendgrid_email(b, &m->reply_to[i]);
        }
        md_buf_append_str(b, "]");
    }
    md_buf_append_str(b, ",\"subject\":");
    md_esp_json_str(b, m->subject ? m->subject : "");
    md_buf_append_str(b, ",\"content\":[");
    if (m->text.data) {
        md_buf_append_str(b, "{\"type\":\"text/plain\",\"value\":\"");
        md_buf_append_json_escaped(b, m->text.data, m->text.len);
        md_buf_append_str(b, "\"}");
    }
    if (m->html.data) {
        md_buf_append_str(b, m->text.data ? ",{" : "{");
        md_buf_append_str(b, "\"type\":\"text/html\",\"value\":\"");
        md_buf_append_json_escaped(b, m->html.data, m->html.len);
        md_buf_append_str(b, "\"}");
    }
    md_buf_append_str(b, "],\"headers\":{\"X-Mailerd-Message-Id\":");
    md_esp_json_str(b, m->id);
    md_buf_t v;
    md_buf_init(&v);
    for (size_t i = 0; i < m->nheaders; i++) {
        md_buf_append_str(b, ",");
        md_esp_json_str(b, m->headers[i].name);
        md_buf_append_str(b, ":");
        md_buf_reset(&v);
        md_esp_header_value(&v, m->headers[i].value);
        md_buf_append_str(b, "\"");
        md_buf_append_json_escaped(b, v.pos, md_buf_len(&v));
        md_buf_append_str(b, "\"");
    }
    md_buf_free(&v);
    md_buf_append_str(b, "}}");

    req->method = "POST";
    req->path = "/v3/mail/send";
    md_buf_t auth;
    md_buf_init(&auth);
    md_buf_printf(&auth, "Bearer %s", c->api_key ? c->api_key : "");
    char *authz = md_esp_pool_str(req->pool, &auth);
    explicit_bzero(auth.start, (size_t)(auth.end - auth.start));
    md_buf_free(&auth);
    md_esp_request_header(req, "Authorization", authz);
    md_esp_request_header(req, "Content-Type", "application/json");
    md_esp_request_header(req, "Accept", "application/json");
    return MD_OK;
}

/* errors[0].message (with its field) of a SendGrid error body into text, or a
 * short excerpt of a body that is not that JSON. */
static void
md_sendgrid_error_text(const md_http_client_response_t *h, char *text, size_t size)
{
    json_error_t jerr;
    json_t *root = h->body.len ? json_loadb(h->body.data, h->body.len, 0, &jerr) : NULL;
    json_t *e0 = root ? json_array_get(json_object_get(root, "errors"), 0) : NULL;
    const char *msg = json_string_value(json_object_get(e0, "message"));
    const char *field = json_string_value(json_object_get(e0, "field"));
    if (msg && field)
        snprintf(text, size, "%s (field %s)", msg, field);
    else if (msg)
        md_strlcpy(text, msg, size);
    else
        snprintf(text, size, "HTTP %d: %.*s", h->status,
                 (int)(h->body.len > 200 ? 200 : h->body.len), h->body.data ? h->body.data : "");
    json_decref(root);
}

/* X-RateLimit-Reset is the Unix time at which the limit resets. */
static double
md_sendgrid_reset_wait(const md_http_client_response_t *h, time_t now)
{
    const char *v = md_http_client_header(h, "X-RateLimit-Reset");
    if (v == NULL)
        return 0;
    char *end = NULL;
    long long t = strtoll(v, &end, 10);
    if (end == v || t <= (long long)now)
        return 0;
    double d = (double)(t - (long long)now);
    return d > 86400 ? 86400 : d;
}

static void
md_sendgrid_read(md_esp_t *esp, const md_esp_response_t *resp, md_esp_result_t *res)
{
    md_unused(esp);
    if (md_esp_transport_error(resp, res))
        return;
    const md_http_client_response_t *h = resp->http;
    char text[256];
    char code[32];
    snprintf(code, sizeof(code), "http_%d", h->status);
    if (h->status >= 200 && h->status < 300) {
        const char *id = md_http_client_header(h, "X-Message-Id");
        md_esp_result_sent(res, id ? id : "", 0);
        return;
    }
    md_sendgrid_error_text(h, text, sizeof(text));
    if (h->status == 429) {
        time_t now = time(NULL);
        double wait = md_esp_retry_after(h, now);
        if (wait <= 0)
            wait = md_sendgrid_reset_wait(h, now);
        md_esp_result_retryable(res, "throttled", wait, text);
    } else if (h->status >= 500 || h->status < 400) {
        md_esp_result_retryable(res, code, md_esp_retry_after(h, time(NULL)), text);
    } else if (h->status == 401 || h->status == 403) {
        char why[256];
        /* the provider's code first: it survives a long message */
        snprintf(why, sizeof(why), "%.63s: %.190s", code, text);
        md_esp_result_retryable(res, "auth_failed", md_esp_retry_after(h, time(NULL)), why);
    } else {
        md_esp_result_permanent(res, code, text);
    }
}

const md_esp_driver_t md_esp_sendgrid_driver = {
    .name = "sendgrid",
    .kind = MD_ESP_DRIVER_SENDGRID,
    .build_request = md_sendgrid_build,
    .read_response = md_sendgrid_read,
};
