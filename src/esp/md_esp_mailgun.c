/*
 * The Mailgun driver: POST /v3/DOMAIN/messages as multipart/form-data, with HTTP
 * basic auth "api:KEY".
 *
 * Fields: from, one "to" per recipient, one "cc" and one "bcc" per address,
 * subject, text, html, h:Reply-To, h:X-Mailerd-Message-Id, v:mailerd_message_id
 * (a user variable: Mailgun returns it in every webhook's user-variables), and
 * each extra header as h:NAME. Mailboxes are "Name <addr>" with a non-ASCII name
 * as RFC 2047 encoded-words, header values likewise; subject and bodies are
 * UTF-8 as given (Mailgun encodes them). The boundary is 32 random hex digits
 * after "mailerd-", and is drawn again in the (astronomically unlikely) case
 * that a value contains it.
 *
 * Answers: 200 {"id": "<...>", "message": "Queued. Thank you."} -> sent, the id
 * without its angle brackets (the form Mailgun's events use); 429 and 5xx ->
 * retryable; 401 (a wrong key: a plain "Forbidden") and 403 (the key may not
 * do this, e.g. a sandbox domain's unauthorized recipient) -> retryable
 * "auth_failed" with text "http_NNN: message": the account, not the message, is
 * at fault, so the router fails over and, with no account left, the message is
 * deferred and dead-lettered after max_attempts (a retry-failed resends it once
 * the key is fixed); 400, 402, 404 and any other 4xx -> permanent, code
 * "http_NNN", text = "message".
 */
#include "md_esp.h"
#include "md_id.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef struct md_mailgun_part_s {
    const char *name;
    const char *value;
    size_t len;
} md_mailgun_part_t;

typedef struct md_mailgun_form_s {
    md_mailgun_part_t *parts;
    size_t n, cap;
    md_pool_t *pool;
} md_mailgun_form_t;

static void
md_mailgun_add(md_mailgun_form_t *f, const char *name, const char *value, size_t len)
{
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 16;
        md_mailgun_part_t *p = md_palloc(f->pool, cap * sizeof(*p));
        if (f->n)
            memcpy(p, f->parts, f->n * sizeof(*p));
        f->parts = p;
        f->cap = cap;
    }
    f->parts[f->n].name = name;
    f->parts[f->n].value = value;
    f->parts[f->n].len = len;
    f->n++;
}

static void
md_mailgun_add_str(md_mailgun_form_t *f, const char *name, const char *value)
{
    md_mailgun_add(f, name, value, strlen(value));
}

/* Adds one field holding the mailboxes of list, comma-separated. */
static void
md_mailgun_add_mailboxes(md_mailgun_form_t *f, const char *name, const md_mime_addr_t *list,
                         size_t n, md_buf_t *tmp)
{
    md_buf_reset(tmp);
    for (size_t i = 0; i < n; i++) {
        if (i)
            md_buf_append_str(tmp, ", ");
        md_esp_mailbox(tmp, &list[i], true);
    }
    md_mailgun_add_str(f, name, md_esp_pool_str(f->pool, tmp));
}

static bool
md_mailgun_boundary_ok(const md_mailgun_form_t *f, const char *bnd)
{
    size_t bl = strlen(bnd);
    for (size_t i = 0; i < f->n; i++) {
        if (memmem(f->parts[i].value, f->parts[i].len, bnd, bl) != NULL)
            return false;
    }
    return true;
}

/* Builds the request (see the top of the file); strings live in req->pool. */
static int
md_mailgun_build(md_esp_t *esp, const md_esp_msg_t *m, md_esp_request_t *req, md_esp_result_t *res)
{
    const md_esp_conf_t *c = esp->conf;
    if (!md_esp_has_content(m, res))
        return MD_ERROR;
    md_mailgun_form_t f;
    memset(&f, 0, sizeof(f));
    f.pool = req->pool;
    md_buf_t tmp;
    md_buf_init(&tmp);
    md_mailgun_add_mailboxes(&f, "from", &m->from, 1, &tmp);
    md_mailgun_add_mailboxes(&f, "to", &m->to, 1, &tmp);
    for (size_t i = 0; i < m->ncc; i++)
        md_mailgun_add_mailboxes(&f, "cc", &m->cc[i], 1, &tmp);
    for (size_t i = 0; i < m->nbcc; i++)
        md_mailgun_add_mailboxes(&f, "bcc", &m->bcc[i], 1, &tmp);
    md_mailgun_add_str(&f, "subject", m->subject ? m->subject : "");
    if (m->text.data)
        md_mailgun_add(&f, "text", m->text.data, m->text.len);
    if (m->html.data)
        md_mailgun_add(&f, "html", m->html.data, m->html.len);
    if (m->nreply_to)
        md_mailgun_add_mailboxes(&f, "h:Reply-To", m->reply_to, m->nreply_to, &tmp);
    md_mailgun_add_str(&f, "h:X-Mailerd-Message-Id", m->id);
    md_mailgun_add_str(&f, "v:mailerd_message_id", m->id);
    for (size_t i = 0; i < m->nheaders; i++) {
        md_buf_reset(&tmp);
        md_buf_printf(&tmp, "h:%s", m->headers[i].name);
        const char *name = md_esp_pool_str(req->pool, &tmp);
        md_buf_reset(&tmp);
        md_esp_header_value(&tmp, m->headers[i].value);
        md_mailgun_add_str(&f, name, md_esp_pool_str(req->pool, &tmp));
    }

    char bnd[64];
    for (int tries = 0;; tries++) {
        unsigned char rnd[16];
        if (md_random_bytes(rnd, sizeof(rnd)) != MD_OK || tries == 8) {
            md_buf_free(&tmp);
            md_esp_result_retryable(res, "internal", 0, "cannot draw a multipart boundary");
            return MD_ERROR;
        }
        int o = snprintf(bnd, sizeof(bnd), "mailerd-");
        for (size_t i = 0; i < sizeof(rnd); i++)
            o += snprintf(bnd + o, sizeof(bnd) - (size_t)o, "%02x", rnd[i]);
        if (md_mailgun_boundary_ok(&f, bnd))
            break;
    }
    md_buf_t *b = &req->body;
    for (size_t i = 0; i < f.n; i++) {
        /* field names are ours or RFC 5322 field names: no quote or CR/LF */
        md_buf_printf(b, "--%s\r\nContent-Disposition: form-data; name=\"%s\"\r\n\r\n", bnd,
                      f.parts[i].name);
        md_buf_append(b, f.parts[i].value, f.parts[i].len);
        md_buf_append_str(b, "\r\n");
    }
    md_buf_printf(b, "--%s--\r\n", bnd);

    md_buf_reset(&tmp);
    md_buf_printf(&tmp, "/v3/%s/messages", c->domain ? c->domain : "");
    req->method = "POST";
    req->path = md_esp_pool_str(req->pool, &tmp);
    md_buf_reset(&tmp);
    md_buf_printf(&tmp, "multipart/form-data; boundary=%s", bnd);
    md_esp_request_header(req, "Content-Type", md_esp_pool_str(req->pool, &tmp));
    md_buf_reset(&tmp);
    md_buf_t cred;
    md_buf_init(&cred);
    md_buf_printf(&cred, "api:%s", c->api_key ? c->api_key : "");
    md_buf_append_str(&tmp, "Basic ");
    md_mime_base64_encode(&tmp, cred.pos, md_buf_len(&cred), 0);
    md_esp_request_header(req, "Authorization", md_esp_pool_str(req->pool, &tmp));
    md_esp_request_header(req, "Accept", "application/json");
    explicit_bzero(cred.start, (size_t)(cred.end - cred.start));
    explicit_bzero(tmp.start, (size_t)(tmp.end - tmp.start));
    md_buf_free(&cred);
    md_buf_free(&tmp);
    return MD_OK;
}

static void
md_mailgun_read(md_esp_t *esp, const md_esp_response_t *resp, md_esp_result_t *res)
{
    md_unused(esp);
    if (md_esp_transport_error(resp, res))
        return;
    const md_http_client_response_t *h = resp->http;
    json_error_t jerr;
    json_t *root = h->body.len ? json_loadb(h->body.data, h->body.len, 0, &jerr) : NULL;
    const char *msg = json_string_value(json_object_get(root, "message"));
    char text[256], code[32];
    snprintf(code, sizeof(code), "http_%d", h->status);
    if (msg)
        md_strlcpy(text, msg, sizeof(text));
    else
        snprintf(text, sizeof(text), "HTTP %d: %.*s", h->status,
                 (int)(h->body.len > 200 ? 200 : h->body.len), h->body.data ? h->body.data : "");
    if (h->status >= 200 && h->status < 300) {
        const char *id = json_string_value(json_object_get(root, "id"));
        char pid[128] = "";
        if (id) {
            size_t n = strlen(id);
            if (n >= 2 && id[0] == '<' && id[n - 1] == '>')
                snprintf(pid, sizeof(pid), "%.*s", (int)(n - 2), id + 1);
            else
                md_strlcpy(pid, id, sizeof(pid));
        }
        md_esp_result_sent(res, pid, 0);
    } else if (h->status == 429) {
        md_esp_result_retryable(res, "throttled", md_esp_retry_after(h, time(NULL)), text);
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
    json_decref(root);
}

const md_esp_driver_t md_esp_mailgun_driver = {
    .name = "mailgun",
    .kind = MD_ESP_DRIVER_MAILGUN,
    .build_request = md_mailgun_build,
    .read_response = md_mailgun_read,
};
