/*
 * The tracking and unsubscribe routes (issue 7). Public: the token in the path
 * is the credential (md_track.h: HMAC over version, key id, kind, message id
 * and link index), and its kind must be the route's.
 *
 *   GET  /t/c/{token}  302 to the original URL of the link, the one stored
 *                      with the message at accept (never one from the
 *                      request: no open redirect); a `clicked` event.
 *   GET  /t/o/{token}  a 1x1 transparent GIF; an `opened` event.
 *   GET  /u/{token}    a small confirmation page whose button POSTs the
 *                      one-click body back; changes nothing (mail scanners
 *                      and link previews fetch every link).
 *   POST /u/{token}    RFC 8058 one-click (Gmail's urlencoded body, Yahoo's
 *                      multipart) or the page's button: suppresses the
 *                      recipient, one `unsubscribed` event per message.
 *
 * Answers: 404 tracking_not_configured without a tracking { } block; 404
 * not_found for a token that does not verify, is of another kind, or names no
 * message (or link); 503 when PostgreSQL cannot answer (the pixel excepted: an
 * image is served whatever the store says, since nobody retries a pixel and a
 * broken image helps no one; the lost open is logged by the store). Every
 * answer is Cache-Control: no-store, so a proxy or a mail client's cache never
 * replays one without us seeing it. HEAD (link checkers, prefetchers) answers
 * as GET would but records no click or open.
 */
#include "md_router.h"
#include "md_api_util.h"
#include "md_app.h"
#include "md_buf.h"
#include "md_conf.h"
#include "md_id.h"
#include "md_track.h"
#include "md_tracking.h"
#include "md_tracking_store.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

void md_api_track_register(md_router_t *rt, const md_conf_t *conf);

/* A one-click body is a few hundred bytes (Yahoo's multipart is the largest);
 * anything much larger is not one, and is not worth parsing. */
#define TRACK_BODY_MAX 8192

/* The 43-byte transparent 1x1 GIF89a (one-entry palette, transparency by the
 * graphic control extension). */
static const unsigned char pixel_gif[43] = {
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00,
    0x00, 0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00,
    0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b};

/* Per request, in its pool. */
typedef struct track_req_s {
    md_http_request_t *r;
    md_tracking_client_t client;
    char msgid[MD_UUID_STRLEN + 1];
    char token[MD_TRACK_TOKEN_SIZE];
} track_req_t;

/* ---- common ---------------------------------------------------------------------- */

static void
no_store(md_http_request_t *r)
{
    md_http_add_header(r, "Cache-Control", "no-store");
}

static int
not_found(md_http_request_t *r)
{
    md_http_send_error(r, 404, "not_found", "no such link");
    return MD_OK;
}

/* The configuration, or NULL after answering 404 tracking_not_configured. */
static const md_tracking_t *
track_conf(md_http_request_t *r)
{
    const md_tracking_t *tc = md_tracking();
    if (tc == NULL)
        md_http_send_error(r, 404, "tracking_not_configured",
                           "tracking is not configured on this instance");
    return tc;
}

static void
uuid_text(const uint8_t b[MD_TRACK_MSGID_LEN], char out[MD_UUID_STRLEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    char *p = out;
    for (int i = 0; i < MD_TRACK_MSGID_LEN; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            *p++ = '-';
        *p++ = hex[b[i] >> 4];
        *p++ = hex[b[i] & 0xf];
    }
    *p = '\0';
}

/*
 * The start of every route: marks the answer no-store (errors included),
 * verifies the {token} parameter as a token of kind under the configured keys
 * (current and previous) and makes the request's context: the message id, the
 * client (user agent, peer IP) for the event. NULL after answering 404 (no
 * tracking { } block, or a bad token: the same answer for every way a token
 * can be wrong, as which check failed would tell a forger something).
 */
static track_req_t *
track_req(md_http_request_t *r, md_track_kind_t kind, unsigned *link)
{
    no_store(r);
    const md_tracking_t *tc = track_conf(r);
    if (tc == NULL)
        return NULL;
    md_str_t s = md_http_param(r, "token");
    md_track_token_t t;
    if (s.data == NULL || s.len == 0 || s.len >= MD_TRACK_TOKEN_SIZE ||
        md_track_token_parse(&tc->keys, s.data, s.len, &t) != MD_OK || t.kind != kind) {
        not_found(r);
        return NULL;
    }
    track_req_t *x = md_pcalloc(r->pool, sizeof(*x));
    x->r = r;
    memcpy(x->token, s.data, s.len);
    uuid_text(t.msgid, x->msgid);
    if (link)
        *link = t.link;
    x->client.lookup_only = r->head;
    const md_str_t *ua = md_http_get_header(r, "User-Agent");
    if (ua)
        x->client.user_agent = md_pstrndup(r->pool, ua->data, ua->len);
    /* The peer's address without the port ("1.2.3.4:5", "[::1]:5"). */
    const char *rem = md_http_remote(r);
    const char *colon = strrchr(rem, ':');
    if (strcmp(rem, "unix:") == 0)
        ; /* no address to record */
    else if (rem[0] == '[' && colon && colon > rem + 1 && colon[-1] == ']')
        x->client.ip = md_pstrndup(r->pool, rem + 1, (size_t)(colon - 1 - (rem + 1)));
    else if (colon && colon > rem)
        x->client.ip = md_pstrndup(r->pool, rem, (size_t)(colon - rem));
    return x;
}

/* The common start of a store callback, as md_api_pg_ok: true to go on with
 * the message found; false when r was answered (client gone: dropped; store
 * down: 503; another error: 500; no such message: 404). */
static bool
store_ok(md_http_request_t *r, const md_tracking_result_t *res)
{
    if (r->aborted) {
        md_http_send(r, 499, NULL, NULL, 0); /* drops our reference, sends nothing */
        return false;
    }
    if (res->error == NULL) {
        if (res->found)
            return true;
        not_found(r);
        return false;
    }
    if (md_app_store_down(res->error))
        md_app_send_store_unavailable(r, "postgres");
    else
        md_http_send_error(r, 500, "internal_error", "internal error");
    return false;
}

/* Appends s with the five HTML-significant characters escaped. */
static void
html_escape(md_buf_t *b, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '&':
            md_buf_append(b, "&amp;", 5);
            break;
        case '<':
            md_buf_append(b, "&lt;", 4);
            break;
        case '>':
            md_buf_append(b, "&gt;", 4);
            break;
        case '"':
            md_buf_append(b, "&quot;", 6);
            break;
        case '\'':
            md_buf_append(b, "&#39;", 5);
            break;
        default:
            md_buf_append(b, s, 1);
        }
    }
}

#define PAGE_HEAD                                                                                  \
    "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"                            \
    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"                     \
    "<meta name=\"robots\" content=\"noindex\"><title>Unsubscribe</title>"                         \
    "<style>body{font-family:sans-serif;max-width:32em;margin:3em auto;padding:0 1em}"             \
    "button{font-size:1em;padding:.5em 1.5em}</style></head><body><main>"
#define PAGE_TAIL "</main></body></html>\n"

/* Sends an HTML page: the body between PAGE_HEAD and PAGE_TAIL. The page loads
 * nothing and runs nothing (CSP), cannot be framed (a click-jacked unsubscribe),
 * and keeps its token out of any Referer. */
static void
send_page(md_http_request_t *r, const void *body, size_t len)
{
    md_buf_t page;
    md_buf_init(&page);
    md_buf_append(&page, PAGE_HEAD, sizeof(PAGE_HEAD) - 1);
    md_buf_append(&page, body, len);
    md_buf_append(&page, PAGE_TAIL, sizeof(PAGE_TAIL) - 1);
    md_http_add_header(r, "Content-Security-Policy",
                       "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                       "frame-ancestors 'none'; base-uri 'none'");
    md_http_add_header(r, "Referrer-Policy", "no-referrer");
    md_http_add_header(r, "X-Content-Type-Options", "nosniff");
    md_http_send(r, 200, "text/html; charset=utf-8", page.pos, md_buf_len(&page));
    md_buf_free(&page);
}

/* ---- GET /t/c/{token} ------------------------------------------------------------- */

/* True when url is an absolute http(s) URL: the only kind accept stores, checked
 * again so a row edited by hand can never make us redirect to javascript: etc. */
static bool
http_url(const char *url)
{
    return strncasecmp(url, "http://", 7) == 0 || strncasecmp(url, "https://", 8) == 0;
}

static void
click_done(void *ctx, const md_tracking_result_t *res)
{
    track_req_t *x = ctx;
    md_http_request_t *r = x->r;
    if (!store_ok(r, res))
        return;
    if (!http_url(res->url)) {
        not_found(r);
        return;
    }
    /* Bytes a header may not carry as they are (non-ASCII, controls, space) are
     * percent-encoded; the rest of the URL is passed through byte for byte. */
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(res->url);
    char *loc = md_palloc(r->pool, 3 * n + 1), *p = loc;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)res->url[i];
        if (c <= 0x20 || c >= 0x7f) {
            *p++ = '%';
            *p++ = hex[c >> 4];
            *p++ = hex[c & 0xf];
        } else {
            *p++ = (char)c;
        }
    }
    *p = '\0';
    md_http_add_header(r, "Location", loc);
    md_http_send(r, 302, NULL, NULL, 0);
}

static int
api_click(md_http_request_t *r)
{
    unsigned link = 0;
    track_req_t *x = track_req(r, MD_TRACK_CLICK, &link);
    if (x == NULL || !md_api_pg_ready(r))
        return MD_OK;
    return md_api_queued(r, md_tracking_click(x->msgid, link, &x->client, click_done, x));
}

/* ---- GET /t/o/{token} ------------------------------------------------------------- */

static void
send_pixel(md_http_request_t *r)
{
    md_http_send(r, 200, "image/gif", pixel_gif, sizeof(pixel_gif));
}

static void
open_done(void *ctx, const md_tracking_result_t *res)
{
    track_req_t *x = ctx;
    md_http_request_t *r = x->r;
    if (r->aborted) {
        md_http_send(r, 499, NULL, NULL, 0);
        return;
    }
    if (res->error == NULL && !res->found) {
        not_found(r);
        return;
    }
    send_pixel(r);
}

static int
api_open(md_http_request_t *r)
{
    track_req_t *x = track_req(r, MD_TRACK_OPEN, NULL);
    if (x == NULL)
        return MD_OK;
    if (md_tracking_open(x->msgid, &x->client, open_done, x) != MD_OK) {
        send_pixel(r); /* no store now: the pixel anyway (see the top) */
        return MD_OK;
    }
    return MD_AGAIN;
}

/* ---- GET /u/{token} ---------------------------------------------------------------- */

/* "j***@example.com": the first character of the local part (a whole UTF-8
 * sequence) and the domain, enough for the recipient to recognise the address
 * without the page showing it whole to whoever holds the link. */
static void
masked_address(md_buf_t *b, const char *to)
{
    const char *at = strrchr(to, '@');
    if (at == NULL || at == to) {
        md_buf_append(b, "***", 3);
        return;
    }
    size_t first = 1;
    unsigned char c = (unsigned char)to[0];
    if (c >= 0xf0)
        first = 4;
    else if (c >= 0xe0)
        first = 3;
    else if (c >= 0xc0)
        first = 2;
    if (first > (size_t)(at - to))
        first = (size_t)(at - to);
    char head[8];
    memcpy(head, to, first);
    head[first] = '\0';
    html_escape(b, head);
    md_buf_append(b, "***", 3);
    /* The domain as the suppression list keeps it: lower-cased. */
    size_t dl = strlen(at);
    char *dom = md_xmalloc(dl + 1);
    for (size_t i = 0; i <= dl; i++)
        dom[i] = (char)(at[i] >= 'A' && at[i] <= 'Z' ? at[i] + ('a' - 'A') : at[i]);
    html_escape(b, dom);
    free(dom);
}

static void
page_done(void *ctx, const md_tracking_result_t *res)
{
    track_req_t *x = ctx;
    md_http_request_t *r = x->r;
    if (!store_ok(r, res))
        return;
    md_buf_t b;
    md_buf_init(&b);
    static const char h1[] = "<h1>Unsubscribe</h1><p>Stop sending email to <strong>";
    md_buf_append(&b, h1, sizeof(h1) - 1);
    masked_address(&b, res->to);
    /* The action is relative ("TOKEN?via=page" next to /u/TOKEN), so it works
     * under a public_url with a path prefix too; the token is base64url, which
     * needs no escaping in an attribute or a URL. The query only tells the
     * event how the unsubscribe came; the body is the RFC 8058 one. */
    static const char form[] = "</strong>?</p><form method=\"post\" action=\"";
    md_buf_append(&b, form, sizeof(form) - 1);
    html_escape(&b, x->token);
    static const char rest[] =
        "?via=page\"><input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">"
        "<button type=\"submit\">Unsubscribe</button></form>";
    md_buf_append(&b, rest, sizeof(rest) - 1);
    send_page(r, b.pos, md_buf_len(&b));
    md_buf_free(&b);
}

static int
api_page(md_http_request_t *r)
{
    track_req_t *x = track_req(r, MD_TRACK_UNSUBSCRIBE, NULL);
    if (x == NULL || !md_api_pg_ready(r))
        return MD_OK;
    return md_api_queued(r, md_tracking_recipient(x->msgid, page_done, x));
}

/* ---- POST /u/{token} --------------------------------------------------------------- */

static void
unsub_done(void *ctx, const md_tracking_result_t *res)
{
    track_req_t *x = ctx;
    md_http_request_t *r = x->r;
    if (!store_ok(r, res))
        return;
    static const char done[] = "<h1>Unsubscribed</h1><p>You will not receive these emails any "
                               "more.</p>";
    send_page(r, done, sizeof(done) - 1);
}

static int
api_unsubscribe(md_http_request_t *r)
{
    track_req_t *x = track_req(r, MD_TRACK_UNSUBSCRIBE, NULL);
    if (x == NULL)
        return MD_OK;
    size_t len = md_buf_len(&r->body);
    if (len > TRACK_BODY_MAX) {
        md_http_send_error(r, 400, "invalid_body", "not a one-click unsubscribe body");
        return MD_OK;
    }
    const md_str_t *ct = md_http_get_header(r, "Content-Type");
    int rc = md_track_oneclick_body(ct ? *ct : (md_str_t){0, NULL}, r->body.pos, len);
    if (rc == MD_ERROR) {
        md_http_send_error(r, 415, "unsupported_media_type",
                           "send application/x-www-form-urlencoded or multipart/form-data");
        return MD_OK;
    }
    if (rc != MD_OK) {
        md_http_send_error(r, 400, "invalid_body",
                           "the body must be List-Unsubscribe=One-Click (RFC 8058)");
        return MD_OK;
    }
    if (!md_api_pg_ready(r))
        return MD_OK;
    const char *how =
        r->query.len == 8 && memcmp(r->query.data, "via=page", 8) == 0 ? "page" : "one-click";
    return md_api_queued(r, md_tracking_unsubscribe(x->msgid, how, &x->client, unsub_done, x));
}

void
md_api_track_register(md_router_t *rt, const md_conf_t *conf)
{
    md_unused(conf);
    md_router_add(rt, MD_M_GET, "/t/c/{token}", api_click);
    md_router_add(rt, MD_M_GET, "/t/o/{token}", api_open);
    md_router_add(rt, MD_M_GET, "/u/{token}", api_page);
    md_router_add(rt, MD_M_POST, "/u/{token}", api_unsubscribe);
}
