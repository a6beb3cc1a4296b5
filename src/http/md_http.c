/*
 * HTTP/1.1 server on llhttp. See md_http.h for the shape; this comment is about
 * the cost model, because GET /health on a keep-alive connection is the benchmark.
 *
 * Per request on the fast path: one read(), one llhttp_execute() over whatever
 * arrived, one pool reset (no malloc: the pool keeps its first block), one memcpy
 * of the header block into the pool, the handler, the response assembled straight
 * into the connection's output buffer, and one send() for every response produced
 * by that read (pipelining batches). No clock reads (ev_now), no epoll_ctl (the
 * io watcher only changes when a write would block), and no timer heap operation
 * unless a deadline must move earlier: deadlines are kept in the connection and
 * the one timer re-checks them when it fires (libev's lazy inactivity timeout).
 *
 * Connection states, in order (the order matters: <= C_BODY means "parsing"):
 *   C_IDLE      between requests (keep-alive) or before the first byte
 *   C_HEADERS   request started, headers incomplete; header bytes stay in `in`
 *   C_BODY      headers copied into the request pool, body going into r->body
 *   C_HANDLING  handler running (synchronously, inside conn_parse)
 *   C_WAITING   handler returned MD_AGAIN; input is held, not parsed
 *   C_CLOSING   the last response is queued; close once it is written
 *   C_LINGER    written and shut down for writing; discard input until EOF so
 *               the client reads our last response instead of a reset
 */
#include "md_http.h"
#include "md_router.h"
#include "md_id.h"
#include "md_log.h"
#include "md_metrics.h"

#include <llhttp.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define HTTP_READ_MIN   4096         /* free room ensured before each read() */
#define HTTP_OUT_HIGH   (256 * 1024) /* stop parsing pipelined requests past this much output */
#define HTTP_HELD_MAX   (64 * 1024)  /* input held while a handler waits */
#define HTTP_POOL_BLOCK 4096
#define HTTP_LINGER     2.0 /* seconds to wait for the client's EOF after our last response */
#define HTTP_GRACE_MAX  1.0 /* idle keep-alive connections kept this long during shutdown */
/* Connections accepted per wakeup. Every worker polls the shared listener, so a
 * worker that drained the whole backlog at once would take a burst of new
 * connections (a client opening 100 keep-alive connections) for itself and leave
 * the other cores idle for the life of those connections. Taking one per wakeup,
 * like nginx without multi_accept, lets the workers woken together share them. */
#define HTTP_ACCEPT_MAX 1
#define HTTP_REJECT_MAX 64 /* connections over the cap being answered 503 at once */
#define SPAN_UNSET      UINT32_MAX

enum { C_IDLE, C_HEADERS, C_BODY, C_HANDLING, C_WAITING, C_CLOSING, C_LINGER };
enum { T_NONE, T_IDLE, T_HEADER, T_BODY, T_SEND, T_LINGER };

typedef struct span_s {
    uint32_t off; /* from conn->in.pos; SPAN_UNSET when not started */
    uint32_t len;
} span_t;

/* The request and what only this file sees; r is first so the two addresses agree. */
typedef struct req_priv_s {
    md_http_request_t r;
    struct req_priv_s *prev, *next; /* in http->detached while detached */
    unsigned dispatched : 1;        /* handed to a handler, so it holds a reference */
    unsigned detached : 1;          /* owns its pool; freed by the last unref */
} req_priv_t;

struct md_http_conn_s {
    md_http_t *http;
    md_http_conn_t *prev, *next;
    int fd;
    int state;
    ev_io io;
    ev_timer timer;
    llhttp_t parser;
    md_buf_t in;
    md_buf_t out;
    md_pool_t *pool;     /* lent to the current request; NULL once a detached request took it */
    req_priv_t *req;     /* current (or last answered) request, in pool */
    md_buf_t spare_body; /* buffers of finished requests, reused by the next */
    md_buf_t spare_hdrs;
    size_t fed; /* bytes after in.pos already given to llhttp (C_HEADERS only) */
    int io_events;
    int timer_mode;
    double deadline; /* when timer_mode's limit is reached */
    double timer_at; /* when the armed timer fires; <= deadline */
    double accepted, idle_since, last_read, last_write, linger_until;
    unsigned requests;
    int err_status; /* set by a parser callback that refuses the request */

    /* Header spans of the request being parsed, relative to in.pos. */
    span_t url;
    struct {
        span_t name, value;
    } hdr[MD_HTTP_MAX_HEADERS];
    unsigned nhdr;
    uint32_t hdr_end;         /* furthest header byte seen */
    unsigned method_done : 1; /* parser.method is the request's (HTTP_DELETE is 0) */
    unsigned url_done : 1;
    unsigned processing : 1; /* inside conn_run: a response only queues output */
    unsigned write_blocked : 1;
    unsigned overflow : 1; /* accepted over worker_connections; only gets a 503 */
    unsigned eof : 1;
    char remote[64];
};

struct md_http_s {
    struct ev_loop *loop;
    const md_conf_t *conf;
    int slot;
    md_router_t *router;
    llhttp_settings_t settings;
    ev_io lev[MD_CONF_MAX_LISTEN];
    int nlisten;
    int accepting;
    ev_timer accept_pause; /* resumes accepting after EMFILE and friends */
    md_http_conn_t *conns;
    unsigned nconns; /* counted against worker_connections */
    unsigned noverflow;
    req_priv_t *detached; /* requests whose connection is gone but a handler holds */

    size_t max_header, max_body;
    double header_timeout, body_timeout, keepalive_timeout, send_timeout;
    unsigned max_conns, keepalive_requests;

    time_t date_sec;
    size_t date_len;
    char date_line[80]; /* "Date: ...\r\nServer: mailerd\r\n" */

    int shutting_down;
    double grace_until;
    void (*drained)(void *data);
    void *drained_data;
    ev_timer drained_timer;
};

static void conn_run(md_http_conn_t *c);
static void conn_close(md_http_conn_t *c);
static void conn_error(md_http_conn_t *c, int status);

/* --- small helpers ----------------------------------------------------------- */

static inline char *
put(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}

#define PUT_LIT(p, lit) put((p), (lit), sizeof(lit) - 1)

static char *
put_uint(char *p, size_t v)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *p++ = tmp[--n];
    return p;
}

static void
date_update(md_http_t *h)
{
    static const char *const wd[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const mo[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t sec = (time_t)ev_now(h->loop);
    if (md_likely(sec == h->date_sec))
        return;
    struct tm tm;
    gmtime_r(&sec, &tm);
    int n =
        snprintf(h->date_line, sizeof(h->date_line),
                 "Date: %s, %02d %s %04d %02d:%02d:%02d GMT\r\nServer: mailerd\r\n", wd[tm.tm_wday],
                 tm.tm_mday, mo[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
    h->date_len = n > 0 && (size_t)n < sizeof(h->date_line) ? (size_t)n : 0;
    h->date_sec = sec;
}

const char *
md_http_status_text(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 410:
        return "Gone";
    case 411:
        return "Length Required";
    case 412:
        return "Precondition Failed";
    case 413:
        return "Payload Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 417:
        return "Expectation Failed";
    case 422:
        return "Unprocessable Entity";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 499:
        return "Client Closed Request";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return "Unknown";
    }
}

static int
request_id_ok(const md_str_t *v)
{
    if (v->len < 1 || v->len > 128)
        return 0;
    for (size_t i = 0; i < v->len; i++) {
        char ch = v->data[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == ':' || ch == '-'))
            return 0;
    }
    return 1;
}

/* --- request lifetime -------------------------------------------------------- */

static void
detached_unlink(md_http_t *h, req_priv_t *rp)
{
    if (rp->prev)
        rp->prev->next = rp->next;
    else
        h->detached = rp->next;
    if (rp->next)
        rp->next->prev = rp->prev;
    rp->prev = rp->next = NULL;
}

/* Frees a detached request: its buffers, then its pool (which holds rp itself). */
static void
req_free_detached(req_priv_t *rp)
{
    md_http_request_t *r = &rp->r;
    md_pool_t *pool = r->pool;
    detached_unlink(r->http, rp);
    md_buf_free(&r->body);
    md_buf_free(&r->out_headers);
    md_pool_destroy(pool);
}

/* The request leaves its connection holding the pool; the last unref frees it. */
static void
req_detach(md_http_conn_t *c, req_priv_t *rp)
{
    md_http_t *h = c->http;
    rp->r.conn = NULL;
    rp->detached = 1;
    rp->prev = NULL;
    rp->next = h->detached;
    if (h->detached)
        h->detached->prev = rp;
    h->detached = rp;
    c->pool = NULL;
}

/* Metrics and the access line for one finished (or abandoned) request. */
static void
req_account(md_http_request_t *r, const char *remote)
{
    md_http_t *h = r->http;
    double dur = ev_now(h->loop) - r->start;
    md_metrics_http_request(r->route ? r->route->id : MD_METRICS_NO_ROUTE, r->status, dur);
    if (md_log_access_enabled()) {
        md_access_entry_t e;
        e.method = r->method_name;
        e.path = r->path;
        e.status = r->status;
        e.bytes_sent = r->bytes_sent;
        e.duration = dur;
        e.request_id = r->request_id;
        e.remote = remote;
        e.route.data = r->route ? r->route->pattern : NULL;
        e.route.len = r->route ? strlen(r->route->pattern) : 0;
        e.time = ev_now(h->loop);
        md_log_access(&e);
    }
}

/* Gives up the connection's current request: recycled when nobody holds it, else
 * detached (it keeps the pool and the connection gets a fresh one). */
static void
conn_req_retire(md_http_conn_t *c)
{
    req_priv_t *rp = c->req;
    c->req = NULL;
    if (rp->dispatched && rp->r.refcount > 0) {
        req_detach(c, rp);
        c->pool = md_pool_create(HTTP_POOL_BLOCK);
        return;
    }
    /* Keep small buffers for the next request; a big body's memory goes back. */
    if ((size_t)(rp->r.body.end - rp->r.body.start) > HTTP_HELD_MAX)
        md_buf_free(&rp->r.body);
    md_buf_reset(&rp->r.body);
    md_buf_reset(&rp->r.out_headers);
    c->spare_body = rp->r.body;
    c->spare_hdrs = rp->r.out_headers;
}

/* Starts a request on c: the pool is reset and the request allocated in it. */
static md_http_request_t *
conn_req_begin(md_http_conn_t *c)
{
    md_http_t *h = c->http;
    if (c->req)
        conn_req_retire(c);
    md_pool_reset(c->pool);
    req_priv_t *rp = md_pcalloc(c->pool, sizeof(*rp));
    md_http_request_t *r = &rp->r;
    r->http = h;
    r->conn = c;
    r->pool = c->pool;
    r->loop = h->loop;
    r->refcount = 1;
    r->start = ev_now(h->loop);
    r->body = c->spare_body;
    r->out_headers = c->spare_hdrs;
    md_buf_init(&c->spare_body);
    md_buf_init(&c->spare_hdrs);
    c->req = rp;
    c->url.off = SPAN_UNSET;
    c->url.len = 0;
    c->nhdr = 0;
    c->hdr[0].name.off = c->hdr[0].value.off = SPAN_UNSET;
    c->hdr_end = 0;
    c->method_done = c->url_done = 0;
    c->err_status = 0;
    c->state = C_HEADERS;
    return r;
}

void
md_http_request_ref(md_http_request_t *r)
{
    r->refcount++;
}

/* Drops a reference. A request still on its connection is recycled by it; a
 * detached one (client gone, or answered and held past its connection's next
 * request) is freed here when the count reaches zero. */
void
md_http_request_unref(md_http_request_t *r)
{
    if (r->refcount == 0)
        return;
    if (--r->refcount > 0)
        return;
    req_priv_t *rp = (req_priv_t *)r;
    if (rp->detached)
        req_free_detached(rp);
}

/* --- llhttp callbacks ---------------------------------------------------------- */

static int
conn_refuse(md_http_conn_t *c, int status)
{
    c->err_status = status;
    return HPE_USER;
}

/* Extends a span to cover [at, at+len); spans may arrive in pieces across reads,
 * always contiguous because header bytes are never dropped from `in`. */
static int
span_add(md_http_conn_t *c, span_t *s, const char *at, size_t len)
{
    size_t off = (size_t)(at - c->in.pos), end = off + len;
    if (s->off == SPAN_UNSET)
        s->off = (uint32_t)off;
    s->len = (uint32_t)(end - s->off);
    if (end > c->hdr_end)
        c->hdr_end = (uint32_t)end;
    if (end > c->http->max_header)
        return conn_refuse(c, c->url_done ? 431 : 414);
    return 0;
}

static int
on_message_begin(llhttp_t *p)
{
    conn_req_begin(p->data);
    return 0;
}

static int
on_method_complete(llhttp_t *p)
{
    md_http_conn_t *c = p->data;
    c->method_done = 1;
    return 0;
}

static int
on_url(llhttp_t *p, const char *at, size_t len)
{
    md_http_conn_t *c = p->data;
    return span_add(c, &c->url, at, len);
}

static int
on_url_complete(llhttp_t *p)
{
    md_http_conn_t *c = p->data;
    c->url_done = 1;
    return 0;
}

static int
on_header_field(llhttp_t *p, const char *at, size_t len)
{
    md_http_conn_t *c = p->data;
    if (c->nhdr >= MD_HTTP_MAX_HEADERS)
        return conn_refuse(c, 431);
    return span_add(c, &c->hdr[c->nhdr].name, at, len);
}

static int
on_header_value(llhttp_t *p, const char *at, size_t len)
{
    md_http_conn_t *c = p->data;
    return span_add(c, &c->hdr[c->nhdr].value, at, len);
}

static int
on_header_value_complete(llhttp_t *p)
{
    md_http_conn_t *c = p->data;
    if (++c->nhdr < MD_HTTP_MAX_HEADERS)
        c->hdr[c->nhdr].name.off = c->hdr[c->nhdr].value.off = SPAN_UNSET;
    return 0;
}

static md_str_t
span_str(const char *base, span_t s)
{
    md_str_t v;
    if (s.off == SPAN_UNSET) {
        v.data = base;
        v.len = 0;
    } else {
        v.data = base + s.off;
        v.len = s.len;
    }
    return v;
}

/* Whether a Transfer-Encoding value lists no coding but chunked. */
static int
only_chunked(md_str_t v)
{
    const char *p = v.data, *end = v.data + v.len;
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *e = comma ? comma : end;
        while (p < e && (*p == ' ' || *p == '\t'))
            p++;
        const char *t = e;
        while (t > p && (t[-1] == ' ' || t[-1] == '\t'))
            t--;
        md_str_t tok = {(size_t)(t - p), p};
        if (tok.len > 0 && !md_str_caseeq(tok, "chunked"))
            return 0;
        p = comma ? comma + 1 : end;
    }
    return 1;
}

/* Copies the request line and headers into the pool (one memcpy of the block),
 * then decides about the body: 413 from Content-Length without reading it,
 * 417 for an Expect other than 100-continue, 415 for a content-coded body, 501
 * for a transfer coding beside chunked, and "100 Continue" when a body is
 * acceptable and the client waits for our word. */
static int
on_headers_complete(llhttp_t *p)
{
    md_http_conn_t *c = p->data;
    md_http_t *h = c->http;
    md_http_request_t *r = &c->req->r;

    if (c->hdr_end > h->max_header) {
        c->err_status = 431;
        return -1;
    }
    char *blk = md_palloc(r->pool, c->hdr_end ? c->hdr_end : 1);
    memcpy(blk, c->in.pos, c->hdr_end);

    r->method = p->method;
    r->method_name.data = llhttp_method_name((llhttp_method_t)p->method);
    r->method_name.len = strlen(r->method_name.data);
    r->target = span_str(blk, c->url);
    const char *q = memchr(r->target.data, '?', r->target.len);
    r->path.data = r->target.data;
    r->path.len = q ? (size_t)(q - r->target.data) : r->target.len;
    r->query.data = q ? q + 1 : r->target.data + r->target.len;
    r->query.len = q ? r->target.len - r->path.len - 1 : 0;
    r->http_minor = p->http_minor;
    r->head = p->method == HTTP_HEAD;
    r->keepalive = llhttp_should_keep_alive(p) && !p->upgrade;

    r->nheaders = c->nhdr;
    r->headers = md_palloc(r->pool, (c->nhdr ? c->nhdr : 1) * sizeof(md_http_header_t));
    const md_str_t *rid = NULL, *expect = NULL, *coding = NULL;
    int other_transfer_coding = 0;
    for (unsigned i = 0; i < c->nhdr; i++) {
        md_http_header_t *hd = &r->headers[i];
        hd->name = span_str(blk, c->hdr[i].name);
        hd->value = span_str(blk, c->hdr[i].value);
        if (hd->name.len == 12 && md_str_caseeq(hd->name, "x-request-id"))
            rid = &hd->value;
        else if (hd->name.len == 6 && md_str_caseeq(hd->name, "expect"))
            expect = &hd->value;
        else if (hd->name.len == 16 && md_str_caseeq(hd->name, "content-encoding"))
            coding = &hd->value;
        else if (hd->name.len == 17 && md_str_caseeq(hd->name, "transfer-encoding"))
            other_transfer_coding |= !only_chunked(hd->value);
    }
    if (rid && request_id_ok(rid)) {
        r->request_id = *rid;
    } else {
        char *id = md_palloc(r->pool, MD_UUID_STRLEN + 1);
        md_uuid7(id);
        r->request_id.data = id;
        r->request_id.len = MD_UUID_STRLEN;
    }

    if (p->http_major != 1) {
        c->err_status = 400;
        return -1;
    }
    int chunked = (p->flags & F_CHUNKED) != 0;
    int has_len = (p->flags & F_CONTENT_LENGTH) != 0;
    int has_body = chunked || (has_len && p->content_length > 0);
    if (expect && !md_str_caseeq(*expect, "100-continue")) {
        c->err_status = 417;
        return -1;
    }
    if (has_len && p->content_length > h->max_body) {
        c->err_status = 413;
        return -1;
    }
    /* A gzip body would reach a handler as bytes that are not JSON; say what is
     * wrong instead (RFC 9110 15.5.16: 415 with Accept-Encoding). */
    if (has_body && coding && coding->len > 0 && !md_str_caseeq(*coding, "identity")) {
        c->err_status = 415;
        return -1;
    }
    /* llhttp frames "gzip, chunked" by its chunks and would hand on the gzip
     * bytes; a transfer coding the server does not decode is a 501 (RFC 9112
     * 6.1). One that does not end in chunked is llhttp's 400 already. */
    if (other_transfer_coding) {
        c->err_status = 501;
        return -1;
    }
    if (has_body) {
        if (expect && p->http_minor >= 1)
            md_buf_append(&c->out, "HTTP/1.1 100 Continue\r\n\r\n", 25);
        if (has_len)
            md_buf_reserve(&r->body, (size_t)p->content_length);
        c->state = C_BODY;
        c->last_read = ev_now(h->loop);
    }
    return 0;
}

static int
on_body(llhttp_t *p, const char *at, size_t len)
{
    md_http_conn_t *c = p->data;
    md_http_request_t *r = &c->req->r;
    if (md_buf_len(&r->body) + len > c->http->max_body)
        return conn_refuse(c, 413);
    md_buf_append(&r->body, at, len);
    return 0;
}

static int
on_message_complete(llhttp_t *p)
{
    md_http_conn_t *c = p->data;
    c->state = C_HANDLING;
    /* Pause so the next pipelined request is parsed only after this one is answered. */
    return HPE_PAUSED;
}

/* --- responses ----------------------------------------------------------------- */

void
md_http_add_header(md_http_request_t *r, const char *name, const char *value)
{
    if (strpbrk(name, "\r\n:") || strpbrk(value, "\r\n"))
        return;
    size_t nl = strlen(name), vl = strlen(value);
    md_buf_reserve(&r->out_headers, nl + vl + 4);
    char *p = r->out_headers.last;
    p = put(p, name, nl);
    p = PUT_LIT(p, ": ");
    p = put(p, value, vl);
    p = PUT_LIT(p, "\r\n");
    r->out_headers.last = p;
}

static void
conn_response_done(md_http_conn_t *c, md_http_request_t *r)
{
    c->requests++;
    c->state = r->keepalive ? C_IDLE : C_CLOSING;
    c->idle_since = ev_now(c->http->loop);
}

/*
 * Queues the response on the connection (copying body), accounts it, and drops
 * the request's initial reference: r may be gone when this returns. Sent from a
 * callback (not inside the connection's own processing) it is written at once and
 * any pipelined input behind it is parsed. Returns MD_OK, or MD_ERROR when the
 * request was already answered or its client is gone.
 */
int
md_http_send(md_http_request_t *r, int status, const char *content_type, const void *body,
             size_t len)
{
    if (r->responded)
        return MD_ERROR;
    r->responded = 1;
    r->status = status;
    md_http_conn_t *c = r->conn;
    if (c == NULL) {
        md_http_request_unref(r);
        return MD_ERROR;
    }
    md_http_t *h = r->http;
    if (h->shutting_down || (h->keepalive_requests && c->requests + 1 >= h->keepalive_requests))
        r->keepalive = 0;
    int with_len = status >= 200 && status != 204 && status != 304;
    int with_body = with_len && !r->head;
    size_t ctl = content_type ? strlen(content_type) : 0;
    size_t hl = md_buf_len(&r->out_headers);

    date_update(h);
    md_buf_t *out = &c->out;
    md_buf_reserve(out, 200 + h->date_len + ctl + r->request_id.len + hl + (with_body ? len : 0));
    char *p = out->last, *start = p;
    switch (status) {
    case 200:
        p = PUT_LIT(p, "HTTP/1.1 200 OK\r\n");
        break;
    default: {
        const char *t = md_http_status_text(status);
        p = PUT_LIT(p, "HTTP/1.1 ");
        p = put_uint(p, (size_t)(status > 0 && status < 1000 ? status : 500));
        *p++ = ' ';
        size_t tl = strlen(t);
        p = put(p, t, tl);
        p = PUT_LIT(p, "\r\n");
    }
    }
    p = put(p, h->date_line, h->date_len);
    if (ctl) {
        p = PUT_LIT(p, "Content-Type: ");
        p = put(p, content_type, ctl);
        p = PUT_LIT(p, "\r\n");
    }
    if (with_len) {
        p = PUT_LIT(p, "Content-Length: ");
        p = put_uint(p, len);
        p = PUT_LIT(p, "\r\n");
    }
    if (r->keepalive)
        p = PUT_LIT(p, "Connection: keep-alive\r\n");
    else
        p = PUT_LIT(p, "Connection: close\r\n");
    p = PUT_LIT(p, "X-Request-Id: ");
    p = put(p, r->request_id.data, r->request_id.len);
    p = PUT_LIT(p, "\r\n");
    if (hl)
        p = put(p, r->out_headers.pos, hl);
    p = PUT_LIT(p, "\r\n");
    if (with_body && len)
        p = put(p, body, len);
    out->last = p;
    r->bytes_sent = (size_t)(p - start);

    req_account(r, c->remote);
    conn_response_done(c, r);
    md_http_request_unref(r);
    if (!c->processing)
        conn_run(c);
    return MD_OK;
}

int
md_http_send_json(md_http_request_t *r, int status, json_t *json)
{
    if (json == NULL)
        return md_http_send_error(r, 500, "internal_error", "could not build the response");
    size_t n = json_dumpb(json, NULL, 0, JSON_COMPACT);
    char *buf = md_palloc(r->pool, n ? n : 1);
    json_dumpb(json, buf, n, JSON_COMPACT);
    json_decref(json);
    return md_http_send(r, status, "application/json", buf, n);
}

int
md_http_send_error(md_http_request_t *r, int status, const char *code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof(msg))
        n = sizeof(msg) - 1;
    md_buf_t b;
    md_buf_init(&b);
    md_buf_append_str(&b, "{\"error\":{\"code\":\"");
    md_buf_append_json_escaped(&b, code, strlen(code));
    md_buf_append_str(&b, "\",\"message\":\"");
    md_buf_append_json_escaped(&b, msg, (size_t)n);
    md_buf_append_str(&b, "\"}}");
    /* Copy into the pool so b is freed before send may free the request. */
    size_t len = md_buf_len(&b);
    char *body = md_palloc(r->pool, len);
    memcpy(body, b.pos, len);
    md_buf_free(&b);
    return md_http_send(r, status, "application/json", body, len);
}

const md_str_t *
md_http_get_header(const md_http_request_t *r, const char *name)
{
    size_t n = strlen(name);
    for (unsigned i = 0; i < r->nheaders; i++)
        if (r->headers[i].name.len == n && md_str_caseeq(r->headers[i].name, name))
            return &r->headers[i].value;
    return NULL;
}

md_str_t
md_http_param(const md_http_request_t *r, const char *name)
{
    for (unsigned i = 0; i < r->nparams; i++)
        if (strcmp(r->param_names[i], name) == 0)
            return r->params[i];
    md_str_t none = md_null_string;
    return none;
}

const char *
md_http_remote(const md_http_request_t *r)
{
    return r->conn ? r->conn->remote : "";
}

/* --- connection engine ------------------------------------------------------------ */

/* Answers the request being parsed (or a fresh one) with an error and closes. */
static void
conn_error(md_http_conn_t *c, int status)
{
    md_http_t *h = c->http;
    if (c->req == NULL || c->req->r.responded || c->state == C_IDLE)
        conn_req_begin(c);
    md_http_request_t *r = &c->req->r;
    /* llhttp calls on_method_complete before it looks for the space after the
     * method, and fails a token running on ("HEAD\x86/", "HEADX ") as an invalid
     * method: that client sent no HEAD and reads the error's body. */
    if (r->method_name.len == 0 && c->method_done &&
        llhttp_get_errno(&c->parser) != HPE_INVALID_METHOD) {
        r->method = c->parser.method;
        r->method_name.data = llhttp_method_name((llhttp_method_t)c->parser.method);
        r->method_name.len = strlen(r->method_name.data);
        /* a HEAD request's error has no body either: a client reads none */
        r->head = r->method == HTTP_HEAD;
    }
    if (r->request_id.len == 0) {
        char *id = md_palloc(r->pool, MD_UUID_STRLEN + 1);
        md_uuid7(id);
        r->request_id.data = id;
        r->request_id.len = MD_UUID_STRLEN;
    }
    r->keepalive = 0;
    switch (status) {
    case 408:
        md_http_send_error(r, 408, "request_timeout",
                           "the client did not send the request in time");
        break;
    case 413:
        md_http_send_error(r, 413, "payload_too_large", "request body exceeds %zu bytes",
                           h->max_body);
        break;
    case 414:
        md_http_send_error(r, 414, "uri_too_long", "request line exceeds %zu bytes", h->max_header);
        break;
    case 415:
        md_http_add_header(r, "Accept-Encoding", "identity");
        md_http_send_error(r, 415, "unsupported_content_encoding",
                           "request bodies are taken as they are: no Content-Encoding");
        break;
    case 417:
        md_http_send_error(r, 417, "expectation_failed", "only Expect: 100-continue is supported");
        break;
    case 431:
        md_http_send_error(r, 431, "headers_too_large",
                           "request headers exceed %zu bytes or %d fields", h->max_header,
                           MD_HTTP_MAX_HEADERS);
        break;
    case 501:
        md_http_send_error(r, 501, "unsupported_transfer_encoding",
                           "the only transfer coding taken is chunked");
        break;
    default: {
        const char *why = llhttp_get_error_reason(&c->parser);
        md_http_send_error(r, 400, "bad_request", "malformed request: %s", why ? why : "invalid");
    }
    }
}

/* Routes the complete request and runs its handler. */
static void
conn_dispatch(md_http_conn_t *c)
{
    md_http_t *h = c->http;
    req_priv_t *rp = c->req;
    md_http_request_t *r = &rp->r;
    const md_route_t *route;
    unsigned allow;

    int rc = md_router_match(h->router, r->method, r->path, r, &route, &allow);
    if (rc == MD_DECLINED) {
        md_http_send_error(r, 404, "not_found", "no such resource");
        return;
    }
    if (rc == MD_ERROR) {
        char a[96];
        md_router_allow_string(allow, a, sizeof(a));
        md_http_add_header(r, "Allow", a);
        md_http_send_error(r, 405, "method_not_allowed", "%s is not allowed here (allowed: %s)",
                           r->method_name.data, a);
        return;
    }
    r->route = route;
    rp->dispatched = 1;
    rc = route->handler(r);
    if (r->responded)
        return;
    if (rc == MD_AGAIN) {
        c->state = C_WAITING;
        return;
    }
    md_log(MD_LOG_ERROR, 0, "handler for %s returned %d without answering", route->pattern, rc);
    md_http_send_error(r, 500, "internal_error", "internal error");
}

/*
 * Parses buffered input and answers complete requests until the input runs out, a
 * handler waits, output passes the high-water mark, or the connection must close.
 */
static void
conn_parse(md_http_conn_t *c)
{
    md_http_t *h = c->http;
    while (c->state <= C_BODY && md_buf_len(&c->out) < HTTP_OUT_HIGH) {
        size_t avail = md_buf_len(&c->in) - c->fed;
        if (avail == 0)
            break;
        const char *p = c->in.pos + c->fed;
        llhttp_errno_t err = llhttp_execute(&c->parser, p, avail);
        if (err == HPE_OK) {
            if (c->state == C_HEADERS) {
                c->fed += avail;
                if (c->fed > h->max_header)
                    conn_error(c, c->url_done ? 431 : 414);
            } else {
                c->in.pos += c->fed + avail;
                c->fed = 0;
            }
            break;
        }
        if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE) {
            c->in.pos = (char *)llhttp_get_error_pos(&c->parser);
            c->fed = 0;
            if (err == HPE_PAUSED)
                llhttp_resume(&c->parser);
            else
                c->req->r.keepalive = 0;
            conn_dispatch(c);
            continue;
        }
        conn_error(c, c->err_status ? c->err_status : 400);
        break;
    }
    if (md_buf_len(&c->in) == 0)
        md_buf_reset(&c->in);
}

/* Writes queued output: MD_OK when all is written, MD_AGAIN when the socket is
 * full (a short write is taken as full, saving the send() that would say EAGAIN),
 * MD_ERROR when the client is gone. */
static int
conn_flush(md_http_conn_t *c)
{
    for (;;) {
        size_t len = md_buf_len(&c->out);
        ssize_t n = send(c->fd, c->out.pos, len, MSG_NOSIGNAL);
        if (n >= 0) {
            c->out.pos += n;
            if ((size_t)n == len) {
                md_buf_reset(&c->out);
                c->write_blocked = 0;
                return MD_OK;
            }
            if (n > 0 || !c->write_blocked)
                c->last_write = ev_now(c->http->loop);
            c->write_blocked = 1;
            return MD_AGAIN;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            if (!c->write_blocked)
                c->last_write = ev_now(c->http->loop);
            c->write_blocked = 1;
            return MD_AGAIN;
        }
        return MD_ERROR;
    }
}

static void
conn_update_io(md_http_conn_t *c)
{
    int ev;
    if (c->state == C_LINGER)
        ev = EV_READ;
    else if (c->write_blocked)
        ev = EV_WRITE;
    else if (c->state == C_WAITING)
        ev = md_buf_len(&c->in) < HTTP_HELD_MAX && !c->eof ? EV_READ : 0;
    else if (c->state == C_CLOSING)
        ev = 0;
    else
        ev = EV_READ;
    if (ev == c->io_events)
        return;
    struct ev_loop *loop = c->http->loop;
    ev_io_stop(loop, &c->io);
    if (ev) {
        ev_io_set(&c->io, c->fd, ev);
        ev_io_start(loop, &c->io);
    }
    c->io_events = ev;
}

/* Works out which limit applies now and makes sure the timer fires no later than
 * it. A later deadline does not touch the timer: the callback re-checks. */
static void
conn_update_timer(md_http_conn_t *c)
{
    md_http_t *h = c->http;
    int mode = T_NONE;
    double at = 0;
    if (c->write_blocked) {
        mode = T_SEND;
        at = c->last_write + h->send_timeout;
    } else {
        switch (c->state) {
        case C_IDLE:
            mode = T_IDLE;
            at = c->requests ? c->idle_since + h->keepalive_timeout
                             : c->accepted + h->header_timeout;
            if (h->shutting_down && at > h->grace_until)
                at = h->grace_until;
            break;
        case C_HEADERS:
            mode = T_HEADER;
            at = c->req->r.start + h->header_timeout;
            break;
        case C_BODY:
            mode = T_BODY;
            at = c->last_read + h->body_timeout;
            break;
        case C_LINGER:
            mode = T_LINGER;
            at = c->linger_until;
            break;
        default:
            break;
        }
    }
    c->timer_mode = mode;
    c->deadline = at;
    struct ev_loop *loop = h->loop;
    if (mode == T_NONE) {
        ev_timer_stop(loop, &c->timer);
        return;
    }
    if (ev_is_active(&c->timer) && c->timer_at <= at)
        return;
    double now = ev_now(loop);
    c->timer.repeat = at > now ? at - now : 1e-3;
    ev_timer_again(loop, &c->timer);
    c->timer_at = now + c->timer.repeat;
}

/* After the last response is written: half-close and wait for the client's EOF.
 * Returns MD_DONE when the connection was closed instead. */
static int
conn_linger(md_http_conn_t *c)
{
    if (c->eof || shutdown(c->fd, SHUT_WR) != 0) {
        conn_close(c);
        return MD_DONE;
    }
    c->state = C_LINGER;
    c->linger_until = ev_now(c->http->loop) + (c->http->shutting_down ? 1.0 : HTTP_LINGER);
    return MD_OK;
}

/* Drives a connection: parse what is buffered, answer, write. May close c. */
static void
conn_run(md_http_conn_t *c)
{
    c->processing = 1;
    for (;;) {
        if (!c->write_blocked)
            conn_parse(c);
        if (md_buf_len(&c->out) == 0)
            break;
        int rc = conn_flush(c);
        if (rc == MD_ERROR) {
            conn_close(c);
            return;
        }
        if (rc == MD_AGAIN)
            break;
        if (!(c->state <= C_BODY && md_buf_len(&c->in) > c->fed))
            break;
    }
    c->processing = 0;
    if (c->state == C_CLOSING && md_buf_len(&c->out) == 0 && conn_linger(c) == MD_DONE)
        return;
    conn_update_io(c);
    conn_update_timer(c);
}

static void
conn_read(md_http_conn_t *c)
{
    if (c->state == C_LINGER) {
        /* Bounded per wakeup so a client that keeps sending cannot hold the loop. */
        char tmp[4096];
        for (int i = 0; i < 16; i++) {
            ssize_t n = read(c->fd, tmp, sizeof(tmp));
            if (n > 0)
                continue;
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                return;
            conn_close(c);
            return;
        }
        return;
    }
    md_buf_reserve(&c->in, HTTP_READ_MIN);
    ssize_t n = read(c->fd, c->in.last, md_buf_avail(&c->in));
    if (n > 0) {
        c->in.last += n;
        if (c->state == C_WAITING) {
            conn_update_io(c);
            return;
        }
        if (c->state == C_BODY)
            c->last_read = ev_now(c->http->loop);
        conn_run(c);
        return;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    c->eof = 1;
    conn_close(c);
}

static void
conn_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    md_unused(loop);
    md_http_conn_t *c = w->data;
    if (revents & EV_WRITE)
        conn_run(c);
    else if (revents & EV_READ)
        conn_read(c);
}

static void
conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    md_unused(revents);
    md_http_conn_t *c = w->data;
    double now = ev_now(loop);
    c->timer_at = now + w->repeat; /* libev re-armed it with the same repeat */
    if (c->deadline > now + 1e-3) {
        w->repeat = c->deadline - now;
        ev_timer_again(loop, w);
        c->timer_at = c->deadline;
        return;
    }
    switch (c->timer_mode) {
    case T_HEADER:
    case T_BODY:
        ev_timer_stop(loop, w);
        md_log(MD_LOG_INFO, 0, "client %s timed out reading the request %s", c->remote,
               c->timer_mode == T_HEADER ? "headers" : "body");
        conn_error(c, 408); /* sends, which runs the connection: c may be gone */
        return;
    case T_SEND:
        md_log(MD_LOG_INFO, 0, "client %s timed out reading the response", c->remote);
        conn_close(c);
        return;
    case T_IDLE:
    case T_LINGER:
        conn_close(c);
        return;
    default:
        ev_timer_stop(loop, w);
        return;
    }
}

static void http_check_drained(md_http_t *h);

/* Closes c now. A request a handler still holds is detached (aborted if not
 * answered) and lives on until its last unref. c is freed. */
static void
conn_close(md_http_conn_t *c)
{
    md_http_t *h = c->http;
    req_priv_t *rp = c->req;
    if (rp) {
        c->req = NULL;
        md_http_request_t *r = &rp->r;
        if (rp->dispatched && r->refcount > 0) {
            if (!r->responded) {
                r->aborted = 1;
                r->status = 499;
                req_account(r, c->remote);
            }
            req_detach(c, rp);
        } else {
            md_buf_free(&r->body);
            md_buf_free(&r->out_headers);
        }
    }
    ev_io_stop(h->loop, &c->io);
    ev_timer_stop(h->loop, &c->timer);
    close(c->fd);
    md_buf_free(&c->in);
    md_buf_free(&c->out);
    md_buf_free(&c->spare_body);
    md_buf_free(&c->spare_hdrs);
    if (c->pool)
        md_pool_destroy(c->pool);
    if (c->prev)
        c->prev->next = c->next;
    else
        h->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (c->overflow) {
        h->noverflow--;
    } else {
        h->nconns--;
        md_metrics_connections(-1);
    }
    free(c);
    if (h->shutting_down)
        http_check_drained(h);
}

static void
format_remote(char *out, size_t len, const struct sockaddr_storage *sa)
{
    char ip[INET6_ADDRSTRLEN];
    if (sa->ss_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip));
        snprintf(out, len, "%s:%u", ip, ntohs(s4->sin_port));
    } else if (sa->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip));
        snprintf(out, len, "[%s]:%u", ip, ntohs(s6->sin6_port));
    } else {
        snprintf(out, len, "unix:");
    }
}

static md_http_conn_t *
conn_new(md_http_t *h, int fd, const struct sockaddr_storage *sa, int overflow)
{
    md_http_conn_t *c = md_xcalloc(1, sizeof(*c));
    c->http = h;
    c->fd = fd;
    c->pool = md_pool_create(HTTP_POOL_BLOCK);
    c->overflow = overflow ? 1 : 0;
    c->accepted = c->idle_since = c->last_write = ev_now(h->loop);
    c->state = C_IDLE;
    format_remote(c->remote, sizeof(c->remote), sa);
    llhttp_init(&c->parser, HTTP_REQUEST, &h->settings);
    c->parser.data = c;
    ev_io_init(&c->io, conn_io_cb, fd, EV_READ);
    c->io.data = c;
    ev_init(&c->timer, conn_timer_cb);
    c->timer.data = c;
    c->next = h->conns;
    if (h->conns)
        h->conns->prev = c;
    h->conns = c;
    if (overflow) {
        h->noverflow++;
    } else {
        h->nconns++;
        md_metrics_connections(1);
        ev_io_start(h->loop, &c->io);
        c->io_events = EV_READ;
        conn_update_timer(c);
    }
    return c;
}

/* Over worker_connections: a 503 and a close, without touching held connections. */
static void
conn_reject(md_http_t *h, int fd, const struct sockaddr_storage *sa)
{
    if (h->noverflow >= HTTP_REJECT_MAX) {
        close(fd);
        return;
    }
    md_http_conn_t *c = conn_new(h, fd, sa, 1);
    md_http_request_t *r = conn_req_begin(c);
    char *id = md_palloc(r->pool, MD_UUID_STRLEN + 1);
    md_uuid7(id);
    r->request_id.data = id;
    r->request_id.len = MD_UUID_STRLEN;
    r->keepalive = 0;
    md_http_add_header(r, "Retry-After", "1");
    c->processing = 1;
    md_http_send_error(r, 503, "too_many_connections",
                       "this worker is serving its maximum of %u connections", h->max_conns);
    c->processing = 0;
    conn_run(c);
}

/* --- listeners and lifecycle ------------------------------------------------------ */

static void
accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    md_unused(revents);
    md_http_t *h = w->data;
    for (int i = 0; i < HTTP_ACCEPT_MAX && h->accepting; i++) {
        struct sockaddr_storage sa;
        socklen_t len = sizeof(sa);
        int fd = accept4(w->fd, (struct sockaddr *)&sa, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            int err = errno;
            md_log(MD_LOG_ERROR, err, "accept4 failed; pausing accepts for 100ms");
            /* Level-triggered: without a pause the loop would spin on EMFILE. */
            for (int j = 0; j < h->nlisten; j++)
                ev_io_stop(loop, &h->lev[j]);
            ev_timer_set(&h->accept_pause, 0.1, 0);
            ev_timer_start(loop, &h->accept_pause);
            return;
        }
        if (h->nconns >= h->max_conns) {
            conn_reject(h, fd, &sa);
            continue;
        }
        if (sa.ss_family == AF_INET || sa.ss_family == AF_INET6) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        }
        conn_new(h, fd, &sa, 0);
    }
}

static void
accept_pause_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    md_unused(revents);
    md_http_t *h = w->data;
    if (!h->accepting)
        return;
    for (int j = 0; j < h->nlisten; j++)
        ev_io_start(loop, &h->lev[j]);
}

static void
drained_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    md_unused(loop);
    md_unused(revents);
    md_http_t *h = w->data;
    void (*cb)(void *) = h->drained;
    h->drained = NULL;
    if (cb)
        cb(h->drained_data);
}

/* Calls drained on a later loop pass once no connection is left, so the callback
 * never runs inside our own connection code (or inside md_http_shutdown). */
static void
http_check_drained(md_http_t *h)
{
    if (h->drained == NULL || h->conns != NULL || ev_is_active(&h->drained_timer))
        return;
    ev_timer_set(&h->drained_timer, 0, 0);
    ev_timer_start(h->loop, &h->drained_timer);
}

md_http_t *
md_http_create(struct ev_loop *loop, const md_conf_t *conf, int slot)
{
    md_http_t *h = md_xcalloc(1, sizeof(*h));
    h->loop = loop;
    h->conf = conf;
    h->slot = slot;
    h->router = md_router_create();
    md_api_register(h->router, conf);

    llhttp_settings_init(&h->settings);
    h->settings.on_message_begin = on_message_begin;
    h->settings.on_method_complete = on_method_complete;
    h->settings.on_url = on_url;
    h->settings.on_url_complete = on_url_complete;
    h->settings.on_header_field = on_header_field;
    h->settings.on_header_value = on_header_value;
    h->settings.on_header_value_complete = on_header_value_complete;
    h->settings.on_headers_complete = on_headers_complete;
    h->settings.on_body = on_body;
    h->settings.on_message_complete = on_message_complete;

    /* Zero means "not set" to be robust against a partial config. */
    h->max_header = conf->client_max_header_size ? conf->client_max_header_size : 8192;
    if (h->max_header > (1u << 30))
        h->max_header = 1u << 30; /* spans are 32-bit */
    h->max_body = conf->client_max_body_size ? conf->client_max_body_size : 1024 * 1024;
    h->header_timeout = conf->client_header_timeout > 0 ? conf->client_header_timeout : 60;
    h->body_timeout = conf->client_body_timeout > 0 ? conf->client_body_timeout : 60;
    h->keepalive_timeout = conf->keepalive_timeout > 0 ? conf->keepalive_timeout : 75;
    h->send_timeout = conf->send_timeout > 0 ? conf->send_timeout : 60;
    h->max_conns = conf->worker_connections > 0 ? (unsigned)conf->worker_connections : 1024;
    h->keepalive_requests = conf->keepalive_requests > 0 ? (unsigned)conf->keepalive_requests : 0;
    h->date_sec = (time_t)-1;

    ev_init(&h->accept_pause, accept_pause_cb);
    h->accept_pause.data = h;
    ev_init(&h->drained_timer, drained_cb);
    h->drained_timer.data = h;
    return h;
}

int
md_http_start(md_http_t *h)
{
    const md_conf_t *conf = h->conf;
    if (conf->nlisten <= 0) {
        md_log(MD_LOG_ERROR, 0, "http: no listen address configured");
        return MD_ERROR;
    }
    for (int i = 0; i < conf->nlisten; i++) {
        if (conf->listen[i].fd < 0) {
            md_log(MD_LOG_ERROR, 0, "http: listener %s is not open", conf->listen[i].text);
            return MD_ERROR;
        }
    }
    h->nlisten = conf->nlisten;
    for (int i = 0; i < h->nlisten; i++) {
        ev_io_init(&h->lev[i], accept_cb, conf->listen[i].fd, EV_READ);
        h->lev[i].data = h;
        ev_io_start(h->loop, &h->lev[i]);
    }
    h->accepting = 1;
    return MD_OK;
}

void
md_http_stop_accepting(md_http_t *h)
{
    h->accepting = 0;
    for (int i = 0; i < h->nlisten; i++)
        ev_io_stop(h->loop, &h->lev[i]);
    ev_timer_stop(h->loop, &h->accept_pause);
}

void
md_http_shutdown(md_http_t *h, int graceful, void (*drained)(void *data), void *data)
{
    md_http_stop_accepting(h);
    h->drained = drained;
    h->drained_data = data;
    if (!h->shutting_down) {
        double grace =
            h->keepalive_timeout < HTTP_GRACE_MAX ? h->keepalive_timeout : HTTP_GRACE_MAX;
        h->shutting_down = 1;
        h->grace_until = ev_now(h->loop) + grace;
    }
    if (!graceful) {
        while (h->conns)
            conn_close(h->conns);
    } else {
        /* Idle keep-alive connections get the grace; busy ones finish on their own. */
        for (md_http_conn_t *c = h->conns; c; c = c->next)
            if (c->state == C_IDLE && !c->write_blocked)
                conn_update_timer(c);
    }
    http_check_drained(h);
}

void
md_http_destroy(md_http_t *h)
{
    if (h == NULL)
        return;
    md_http_stop_accepting(h);
    h->drained = NULL;
    while (h->conns)
        conn_close(h->conns);
    /* Handlers must register pool cleanups for their watchers: these requests die
     * here, with the loop, whatever references are left. */
    while (h->detached)
        req_free_detached(h->detached);
    ev_timer_stop(h->loop, &h->drained_timer);
    md_router_destroy(h->router);
    free(h);
}

unsigned
md_http_connections(const md_http_t *h)
{
    return h->nconns + h->noverflow;
}

md_router_t *
md_http_router(md_http_t *h)
{
    return h->router;
}
