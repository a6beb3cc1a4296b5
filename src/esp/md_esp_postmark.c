/*
 * The Postmark driver: POST /email with a JSON body, authenticated by the
 * X-Postmark-Server-Token header, on the account's MessageStream (default
 * "outbound").
 *
 * From, To, Cc, Bcc and ReplyTo are strings of comma-separated mailboxes
 * ("Name <addr>", the name quoted when it holds specials and written as RFC 2047
 * encoded-words when it is not ASCII). Headers [{Name, Value}] carries
 * X-Mailerd-Message-Id and the message's own headers; Metadata
 * {mailerd_message_id} comes back in every Postmark webhook.
 *
 * Answers: 200 with ErrorCode 0 -> sent (MessageID). 422 carries an ErrorCode:
 * 406 (inactive recipient: hard bounce or spam complaint before) and the other
 * codes (300 invalid request, ...) are permanent, code = the ErrorCode in
 * decimal, text = Message; 405 ("not allowed to send": the account is out of
 * credits or paused) is retryable, because it is the account's state and not the
 * message's, so the router can fail over. 401 and 403, and ErrorCode 10 (a bad
 * or missing server token) whatever the status -> retryable "auth_failed" with
 * text "ErrorCode: Message": the account's credentials, not the message, are at
 * fault, so the router fails over and, with no account left, the message is
 * deferred and dead-lettered after max_attempts (a retry-failed resends it once
 * the token is fixed). Other 4xx are permanent; 429 and 5xx retryable. The
 * batch endpoint (/email/batch) is not used yet.
 */
#include "md_esp.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define MD_POSTMARK_NOT_ALLOWED 405
#define MD_POSTMARK_BAD_TOKEN   10

static void
md_postmark_field(md_buf_t *b, const char *key, const md_mime_addr_t *list, size_t n, md_buf_t *tmp)
{
    if (n == 0)
        return;
    md_buf_reset(tmp);
    for (size_t i = 0; i < n; i++) {
        if (i)
            md_buf_append_str(tmp, ", ");
        md_esp_mailbox(tmp, &list[i], true);
    }
    md_buf_printf(b, ",\"%s\":\"", key);
    md_buf_append_json_escaped(b, tmp->pos, md_buf_len(tmp));
    md_buf_append_str(b, "\"");
}

/* Builds the request (see the top of the file); strings live in req->pool. */
static int
md_postmark_build(md_esp_t *esp, const md_esp_msg_t *m, md_esp_request_t *req, md_esp_result_t *res)
{
    const md_esp_conf_t *c = esp->conf;
    if (m->text.data == NULL && m->html.data == NULL) {
        md_esp_result_permanent(res, "no_content",
                                "the message has neither a text nor an html part");
        return MD_ERROR;
    }
    md_buf_t *b = &req->body;
    md_buf_t tmp;
    md_buf_init(&tmp);
    md_esp_mailbox(&tmp, &m->from, true);
    md_buf_append_str(b, "{\"From\":\"");
    md_buf_append_json_escaped(b, tmp.pos, md_buf_len(&tmp));
    md_buf_append_str(b, "\"");
    md_postmark_field(b, "To", &m->to, 1, &tmp);
    md_postmark_field(b, "Cc", m->cc, m->ncc, &tmp);
    md_postmark_field(b, "Bcc", m->bcc, m->nbcc, &tmp);
    md_postmark_field(b, "ReplyTo", m->reply_to, m->nreply_to, &tmp);
    md_buf_append_str(b, ",\"Subject\":");
    md_esp_json_str(b, m->subject ? m->subject : "");
    if (m->text.data) {
        md_buf_append_str(b, ",\"TextBody\":\"");
        md_buf_append_json_escaped(b, m->text.data, m->text.len);
        md_buf_append_str(b, "\"");
    }
    if (m->html.data) {
        md_buf_append_str(b, ",\"HtmlBody\":\"");
        md_buf_append_json_escaped(b, m->html.data, m->html.len);
        md_buf_append_str(b, "\"");
    }
    md_buf_append_str(b, ",\"Headers\":");
    md_esp_json_headers(b, m, &tmp);
    md_buf_append_str(b, ",\"Metadata\":{\"mailerd_message_id\":");
    md_esp_json_str(b, m->id);
    md_buf_append_str(b, "},\"MessageStream\":");
    md_esp_json_str(b, c->message_stream ? c->message_stream : "outbound");
    md_buf_append_str(b, "}");
    md_buf_free(&tmp);

    req->method = "POST";
    req->path = "/email";
    md_esp_request_header(req, "Accept", "application/json");
    md_esp_request_header(req, "Content-Type", "application/json");
    md_esp_request_header(req, "X-Postmark-Server-Token", c->server_token ? c->server_token : "");
    return MD_OK;
}

static void
md_postmark_read(md_esp_t *esp, const md_esp_response_t *resp, md_esp_result_t *res)
{
    md_unused(esp);
    if (md_esp_transport_error(resp, res))
        return;
    const md_http_client_response_t *h = resp->http;
    json_error_t jerr;
    json_t *root = h->body.len ? json_loadb(h->body.data, h->body.len, 0, &jerr) : NULL;
    json_t *ec = json_object_get(root, "ErrorCode");
    long long errcode = json_is_integer(ec) ? json_integer_value(ec) : -1;
    const char *msg = json_string_value(json_object_get(root, "Message"));
    char text[256], code[32];
    if (msg)
        snprintf(text, sizeof(text), "%s", msg);
    else
        snprintf(text, sizeof(text), "HTTP %d: %.*s", h->status,
                 (int)(h->body.len > 200 ? 200 : h->body.len), h->body.data ? h->body.data : "");
    if (errcode > 0)
        snprintf(code, sizeof(code), "%lld", errcode);
    else
        snprintf(code, sizeof(code), "http_%d", h->status);

    if (h->status >= 200 && h->status < 300 && errcode <= 0) {
        const char *id = json_string_value(json_object_get(root, "MessageID"));
        md_esp_result_sent(res, id ? id : "", 0);
    } else if (h->status == 429) {
        md_esp_result_retryable(res, "throttled", md_esp_retry_after(h, time(NULL)), text);
    } else if (h->status >= 500 || (h->status < 400 && h->status >= 300) || h->status < 200) {
        md_esp_result_retryable(res, code, md_esp_retry_after(h, time(NULL)), text);
    } else if (errcode == MD_POSTMARK_NOT_ALLOWED) {
        md_esp_result_retryable(res, code, 0, text);
    } else if (errcode == MD_POSTMARK_BAD_TOKEN || h->status == 401 || h->status == 403) {
        char why[256];
        /* the provider's code first: it survives a long message */
        snprintf(why, sizeof(why), "%.63s: %.190s", code, text);
        md_esp_result_retryable(res, "auth_failed", md_esp_retry_after(h, time(NULL)), why);
    } else {
        /* 422 with an ErrorCode, other 4xx, or a 200 that carries an error */
        md_esp_result_permanent(res, code, text);
    }
    json_decref(root);
}

const md_esp_driver_t md_esp_postmark_driver = {
    .name = "postmark",
    .kind = MD_ESP_DRIVER_POSTMARK,
    .build_request = md_postmark_build,
    .read_response = md_postmark_read,
};
