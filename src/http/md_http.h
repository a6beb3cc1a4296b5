/*
 * HTTP/1.1 server on llhttp, one instance per worker loop.
 *
 * Connections are read into a per-connection buffer and parsed by llhttp. At
 * headers-complete the request line and headers are copied into the request's
 * pool, so the connection buffer may move; the body (Content-Length or chunked)
 * is collected into r->body up to client_max_body_size. When the message is
 * complete the router picks a handler. Responses are appended to the connection's
 * output buffer and flushed after all buffered input has been parsed (pipelining
 * costs one write per batch), or at once for a response sent from a callback.
 */
#ifndef MD_HTTP_H
#define MD_HTTP_H

#include "md_core.h"
#include "md_buf.h"
#include "md_pool.h"
#include "md_conf.h"
#include <ev.h>
#include <jansson.h>

#define MD_HTTP_MAX_PARAMS  8
#define MD_HTTP_MAX_HEADERS 100

typedef struct md_http_s md_http_t;
typedef struct md_http_conn_s md_http_conn_t;
typedef struct md_http_request_s md_http_request_t;
typedef struct md_router_s md_router_t;
typedef struct md_route_s md_route_t;

typedef struct md_http_header_s {
    md_str_t name;
    md_str_t value;
} md_http_header_t;

/*
 * A handler answers with md_http_send*() and returns MD_OK, or returns MD_AGAIN
 * after starting async work; it then answers later from a callback. While a
 * request waits, the client may go away: r->aborted becomes 1 and sending is a
 * no-op, but r stays valid until the handler's own reference is dropped (every
 * request starts with one reference, dropped when a response is sent).
 * A handler that starts a watcher must stop it from a cleanup on r->pool:
 * md_http_destroy() frees requests still held when the worker exits.
 */
typedef int (*md_http_handler_pt)(md_http_request_t *r);

struct md_http_request_s {
    md_http_t *http;
    md_http_conn_t *conn; /* NULL once the connection is gone */
    md_pool_t *pool;      /* lives as long as the request */
    struct ev_loop *loop;

    int method; /* llhttp_method_t */
    md_str_t method_name;
    md_str_t target; /* raw request-target */
    md_str_t path;   /* target without the query, not decoded */
    md_str_t query;  /* after '?', or empty */
    int http_minor;  /* 0 or 1 */

    md_http_header_t *headers; /* in the pool */
    unsigned nheaders;
    md_buf_t body; /* freed with the request */

    md_str_t request_id;                 /* from X-Request-Id when acceptable, else generated */
    const md_route_t *route;             /* NULL when no route matched */
    md_str_t params[MD_HTTP_MAX_PARAMS]; /* path parameters in route order */
    const char *param_names[MD_HTTP_MAX_PARAMS];
    unsigned nparams;

    double start; /* ev_now at the first byte of the request */
    int status;   /* set when the response is sent */
    size_t bytes_sent;
    unsigned keepalive : 1;
    unsigned head : 1; /* HEAD: headers only */
    unsigned responded : 1;
    unsigned aborted : 1;
    unsigned refcount;
    void *ctx; /* for the handler */

    md_buf_t out_headers; /* extra response header lines added by the handler */
};

/* Lifecycle, driven by the worker. */
md_http_t *md_http_create(struct ev_loop *loop, const md_conf_t *conf, int slot);
int md_http_start(md_http_t *h); /* starts watching every listener in conf (fds set) */
void md_http_stop_accepting(md_http_t *h);
/*
 * graceful: stop accepting, let in-flight requests finish (answered with
 * "Connection: close"), give idle keep-alive connections until their next request
 * or a short grace to close (so clients under load do not see a reset), and call
 * drained(data) once no connection is left. Not graceful: close everything now
 * (requests a handler still holds become r->aborted). drained always runs from a
 * later loop pass, never inside this call.
 */
void md_http_shutdown(md_http_t *h, int graceful, void (*drained)(void *data), void *data);
void md_http_destroy(md_http_t *h);
unsigned md_http_connections(const md_http_t *h);
md_router_t *md_http_router(md_http_t *h);

/* Request helpers for handlers. */
const md_str_t *md_http_get_header(const md_http_request_t *r, const char *name);
md_str_t md_http_param(const md_http_request_t *r, const char *name);
/* The peer of r's connection: "IP:port", "[IPv6]:port" or "unix:"; "" once the
 * connection is gone. Valid while r is. */
const char *md_http_remote(const md_http_request_t *r);
/* Adds a response header line; name and value must not contain CR or LF. */
void md_http_add_header(md_http_request_t *r, const char *name, const char *value);
/* Copies body; drops r's initial reference (r may be freed on return). MD_OK, or
 * MD_ERROR when r was already answered or its client is gone (nothing is sent). */
int md_http_send(md_http_request_t *r, int status, const char *content_type, const void *body,
                 size_t len);
/* Sends json (steals the reference) with Content-Type application/json. */
int md_http_send_json(md_http_request_t *r, int status, json_t *json);
/* The one error shape: {"error":{"code":"...","message":"..."}}. */
int md_http_send_error(md_http_request_t *r, int status, const char *code, const char *fmt, ...)
    md_printf_like(4, 5);
void md_http_request_ref(md_http_request_t *r);
void md_http_request_unref(md_http_request_t *r);
const char *md_http_status_text(int status);

#endif
