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
 * the token is fixed). Other 4xx are permanent; 429 and 5xx retryable.
 *
 * Batches (batch N; in the account): POST /email/batch with a JSON array of
 * the same objects, at most MD_POSTMARK_BATCH_MAX (500) and
 * MD_POSTMARK_BATCH_BYTES per request (Postmark's documented limits: 500
 * messages, 50 MB). Postmark answers 200 with an array of one result per
 * message, in order, even when some fail: each is read on its own with the
 * single send's rules (ErrorCode 0 -> sent with its MessageID; 406, 300, ...
 * -> permanent with the code and Message kept; 405 and 10 -> retryable as
 * above). A whole request that fails (401, a 422 whole-body error, 429, 5xx,
 * a transport error) gives every message the single send's result; a 2xx
 * whose array does not hold one result per message gives every message a
 * retryable "protocol" (which of them went is unknown: at least once).
 *
 * Lookup (md_esp_driver_t.build_lookup): an attempt after an interrupted one
 * asks GET /messages/outbound?count=1&offset=0&metadata_mailerd_message_id=ID
 * &messagestream=STREAM (Postmark's outbound message search, which filters on
 * one Metadata field; without messagestream it searches the default
 * transactional stream only). TotalCount > 0: Postmark took the message, which
 * is recorded sent with the MessageID found and not sent again; 0: it is sent.
 * Anything else (a transport error, a status other than 200, an answer without
 * TotalCount) is a failed search. Postmark indexes a message within seconds of
 * taking it, and an attempt is only seen interrupted once its lease ran out.
 */
#include "md_esp.h"
#include "md_sigv4.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MD_POSTMARK_NOT_ALLOWED 405
#define MD_POSTMARK_BAD_TOKEN   10
#define MD_POSTMARK_BATCH_MAX   500
/* 50 MB less room for the array's brackets and commas and a rounding of "MB" */
#define MD_POSTMARK_BATCH_BYTES (50u * 1000u * 1000u - 4096u)

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

/* Appends m as one message object to b (the body of /email, or an element of
 * /email/batch's array). MD_ERROR with res filled: m cannot go (nothing
 * appended). */
static int
md_postmark_item(md_esp_t *esp, const md_esp_msg_t *m, md_buf_t *b, md_esp_result_t *res)
{
    const md_esp_conf_t *c = esp->conf;
    if (!md_esp_has_content(m, res))
        return MD_ERROR;
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
    return MD_OK;
}

static void
md_postmark_headers(md_esp_t *esp, md_esp_request_t *req, const char *path)
{
    const md_esp_conf_t *c = esp->conf;
    req->method = "POST";
    req->path = path;
    md_esp_request_header(req, "Accept", "application/json");
    md_esp_request_header(req, "Content-Type", "application/json");
    md_esp_request_header(req, "X-Postmark-Server-Token", c->server_token ? c->server_token : "");
}

/* Builds the request (see the top of the file); strings live in req->pool. */
static int
md_postmark_build(md_esp_t *esp, const md_esp_msg_t *m, md_esp_request_t *req, md_esp_result_t *res)
{
    if (md_postmark_item(esp, m, &req->body, res) != MD_OK)
        return MD_ERROR;
    md_postmark_headers(esp, req, "/email");
    return MD_OK;
}

/*
 * Maps one Postmark answer object (root: the whole body of /email, or one
 * element of /email/batch's array; NULL when not JSON) under HTTP status
 * `status` into res, with the rules at the top of the file. h gives the
 * Retry-After and, without a Message, the raw body for the text.
 */
static void
md_postmark_map(const md_http_client_response_t *h, int status, json_t *root, md_esp_result_t *res)
{
    json_t *ec = json_object_get(root, "ErrorCode");
    long long errcode = json_is_integer(ec) ? json_integer_value(ec) : -1;
    const char *msg = json_string_value(json_object_get(root, "Message"));
    char text[256], code[32];
    if (msg)
        md_strlcpy(text, msg, sizeof(text));
    else
        snprintf(text, sizeof(text), "HTTP %d: %.*s", status,
                 (int)(h->body.len > 200 ? 200 : h->body.len), h->body.data ? h->body.data : "");
    if (errcode > 0)
        snprintf(code, sizeof(code), "%lld", errcode);
    else
        snprintf(code, sizeof(code), "http_%d", status);

    if (status >= 200 && status < 300 && errcode <= 0) {
        const char *id = json_string_value(json_object_get(root, "MessageID"));
        md_esp_result_sent(res, id ? id : "", 0);
    } else if (status == 429) {
        md_esp_result_retryable(res, "throttled", md_esp_retry_after(h, time(NULL)), text);
    } else if (status >= 500 || (status < 400 && status >= 300) || status < 200) {
        md_esp_result_retryable(res, code, md_esp_retry_after(h, time(NULL)), text);
    } else if (errcode == MD_POSTMARK_NOT_ALLOWED) {
        md_esp_result_retryable(res, code, 0, text);
    } else if (errcode == MD_POSTMARK_BAD_TOKEN || status == 401 || status == 403) {
        char why[256];
        /* the provider's code first: it survives a long message */
        snprintf(why, sizeof(why), "%.63s: %.190s", code, text);
        md_esp_result_retryable(res, "auth_failed", md_esp_retry_after(h, time(NULL)), why);
    } else {
        /* 422 with an ErrorCode, other 4xx, or a 200 that carries an error */
        md_esp_result_permanent(res, code, text);
    }
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
    md_postmark_map(h, h->status, root, res);
    json_decref(root);
}

/* One message more in a batch request (see md_esp_driver_t.batch_add): the
 * first opens the array and sets the request line and headers. */
static int
md_postmark_batch_add(md_esp_t *esp, const md_esp_msg_t *m, md_esp_request_t *req,
                      md_esp_result_t *res)
{
    md_buf_t *b = &req->body;
    size_t before = md_buf_len(b);
    bool first = before == 0;
    md_buf_append_str(b, first ? "[" : ",");
    if (md_postmark_item(esp, m, b, res) != MD_OK) {
        b->last = b->pos + before;
        return MD_ERROR;
    }
    if (first)
        md_postmark_headers(esp, req, "/email/batch");
    return MD_OK;
}

static void
md_postmark_batch_end(md_esp_t *esp, md_esp_request_t *req)
{
    md_unused(esp);
    md_buf_append_str(&req->body, md_buf_len(&req->body) == 0 ? "[]" : "]");
}

/* The answer to a batch of n messages into res[0..n-1] (see the top of the
 * file). */
static void
md_postmark_read_batch(md_esp_t *esp, const md_esp_response_t *resp, size_t n, md_esp_result_t *res)
{
    md_unused(esp);
    if (n == 0)
        return;
    if (md_esp_transport_error(resp, &res[0])) {
        for (size_t i = 1; i < n; i++)
            res[i] = res[0];
        return;
    }
    const md_http_client_response_t *h = resp->http;
    json_error_t jerr;
    json_t *root = h->body.len ? json_loadb(h->body.data, h->body.len, 0, &jerr) : NULL;
    bool ok = h->status >= 200 && h->status < 300;
    if (ok && json_is_array(root) && json_array_size(root) == n) {
        for (size_t i = 0; i < n; i++) {
            json_t *item = json_array_get(root, i);
            if (json_is_object(item))
                md_postmark_map(h, h->status, item, &res[i]);
            else
                md_esp_result_retryable(&res[i], "protocol", 0,
                                        "a result of the batch answer is not an object");
        }
    } else if (ok && (json_is_array(root) || !json_is_integer(json_object_get(root, "ErrorCode")) ||
                      json_integer_value(json_object_get(root, "ErrorCode")) <= 0)) {
        char text[160];
        if (json_is_array(root))
            snprintf(text, sizeof(text), "the batch answer holds %zu results for %zu messages",
                     json_array_size(root), n);
        else
            snprintf(text, sizeof(text), "HTTP %d: the batch answer is not an array of results",
                     h->status);
        md_esp_result_retryable(&res[0], "protocol", 0, text);
    } else {
        /* the whole request failed: every message as a single send would */
        md_postmark_map(h, h->status, root, &res[0]);
    }
    if (!(ok && json_is_array(root) && json_array_size(root) == n)) {
        for (size_t i = 1; i < n; i++)
            res[i] = res[0];
    }
    json_decref(root);
}

/* A query value, percent-encoded (RFC 3986; md_sigv4 has the encoder). */
static void
md_postmark_query_value(md_buf_t *b, const char *v)
{
    md_sigv4_uri_encode(b, (md_str_t){.data = v, .len = strlen(v)}, false);
}

/* The search for m by our id (see the top of the file). */
static int
md_postmark_build_lookup(md_esp_t *esp, const md_esp_msg_t *m, md_esp_request_t *req)
{
    const md_esp_conf_t *c = esp->conf;
    md_buf_t path;
    md_buf_init(&path);
    md_buf_append_str(&path, "/messages/outbound?count=1&offset=0&metadata_mailerd_message_id=");
    md_postmark_query_value(&path, m->id);
    md_buf_append_str(&path, "&messagestream=");
    md_postmark_query_value(&path, c->message_stream ? c->message_stream : "outbound");
    req->method = "GET";
    req->path = md_esp_pool_str(req->pool, &path);
    md_buf_free(&path);
    md_esp_request_header(req, "Accept", "application/json");
    md_esp_request_header(req, "X-Postmark-Server-Token", c->server_token ? c->server_token : "");
    return MD_OK;
}

/* The search's answer (see the top of the file and md_esp_driver_t.read_lookup). */
static int
md_postmark_read_lookup(md_esp_t *esp, const md_esp_response_t *resp, md_esp_result_t *res)
{
    md_unused(esp);
    if (md_esp_transport_error(resp, res))
        return MD_ERROR;
    const md_http_client_response_t *h = resp->http;
    json_error_t jerr;
    json_t *root = h->body.len ? json_loadb(h->body.data, h->body.len, 0, &jerr) : NULL;
    json_t *total = json_object_get(root, "TotalCount");
    int rc = MD_ERROR;
    if (h->status != 200) {
        md_postmark_map(h, h->status, root, res);
        if (res->outcome != MD_ESP_RETRYABLE) {
            char text[256];
            snprintf(text, sizeof(text), "%.63s: %.180s", res->code, res->text);
            md_esp_result_retryable(res, "lookup_failed", 0, text);
        }
    } else if (!json_is_integer(total)) {
        md_esp_result_retryable(res, "protocol", 0, "the search answer has no TotalCount");
    } else if (json_integer_value(total) == 0) {
        rc = MD_DECLINED;
    } else {
        const char *id = json_string_value(
            json_object_get(json_array_get(json_object_get(root, "Messages"), 0), "MessageID"));
        md_esp_result_sent(res, id ? id : "", 0);
        rc = MD_OK;
    }
    json_decref(root);
    return rc;
}

const md_esp_driver_t md_esp_postmark_driver = {
    .name = "postmark",
    .kind = MD_ESP_DRIVER_POSTMARK,
    .build_request = md_postmark_build,
    .read_response = md_postmark_read,
    .build_lookup = md_postmark_build_lookup,
    .read_lookup = md_postmark_read_lookup,
    .batch_max = MD_POSTMARK_BATCH_MAX,
    .batch_bytes = MD_POSTMARK_BATCH_BYTES,
    .batch_add = md_postmark_batch_add,
    .batch_end = md_postmark_batch_end,
    .read_batch = md_postmark_read_batch,
};
