/*
 * Outbound HTTP/1.1 client for a libev worker: what the ESP drivers send through.
 *
 * One md_http_client_t per worker (create it after fork, with the worker's
 * md_dns_t). Each remote service is an endpoint (scheme, host, port) with its
 * own keep-alive connection pool: at most max_connections connections, and a
 * bounded FIFO of requests waiting for one. Nothing blocks: names go through
 * c-ares (md_dns), connects are nonblocking, TLS runs OpenSSL in nonblocking
 * mode, responses are parsed with llhttp. One request at a time per connection
 * (no pipelining).
 *
 * TLS: TLS 1.2 minimum; the server certificate is verified against ca_file (or
 * the system store) and against the endpoint's host name with SSL_set1_host (or
 * its IP address for an IP literal); SNI is sent for names. Each endpoint keeps
 * the last session ticket it got and offers it on its next connection. Turning
 * verification off takes an explicit tls_verify_off, and logs a warning.
 *
 * Timeouts (per endpoint, a request may override response_timeout):
 *   connect_timeout    one TCP connect attempt (each address of the name in turn);
 *   handshake_timeout  the TLS handshake;
 *   wait_timeout       a request waiting for a connection (pool full or connecting);
 *   response_timeout   from the request's dispatch on a ready connection to the
 *                      last byte of its response;
 *   idle_timeout       an idle pooled connection is closed after this.
 *
 * Errors (md_http_client_response_t.error; compare by pointer). The class says
 * where it failed; request_sent says whether the server may have seen the request:
 *   dns       the name did not resolve (including the lookup timing out);
 *   connect   TCP connect refused, unreachable or timed out;
 *   tls       handshake failure or timeout; a verification failure carries
 *             OpenSSL's reason in detail ("certificate verify failed: hostname
 *             mismatch"). Nothing of the request was sent;
 *   timeout   no connection within wait_timeout, or no full response within
 *             response_timeout (the connection is closed);
 *   reset     the connection was lost while sending or before the response ended;
 *   protocol  a response llhttp refuses, too large, or data no request asked for;
 *   canceled  md_http_client_cancel, or the client is being destroyed.
 * A connection that fails before it is ready fails every waiting request of the
 * endpoint when none of its connections is established (a dead endpoint fails
 * fast, with the real cause), else only the oldest waiting one.
 * Connection-level failures are logged (warn) with the endpoint name and detail.
 *
 * A pooled connection the peer closed: an idle connection is watched for
 * reading, so an EOF (or TLS close_notify) while idle closes it at once; just
 * before reuse it is probed (recv MSG_PEEK) for an EOF the loop has not seen
 * yet; such a connection is dropped and the request goes to another (nothing
 * was sent, so this is always safe). Resend rule when a reused connection then
 * fails anyway (write error, or EOF/reset before the first byte of the
 * response): the request is sent again once, on a fresh connection, if either
 * no byte of it reached the socket, or it is idempotent (GET, HEAD, OPTIONS,
 * PUT, DELETE, or marked idempotent by the caller, e.g. a driver whose provider
 * deduplicates by an idempotency key). A POST that was written is not resent: a
 * server that read it may have acted on it, so the caller gets "reset" with
 * request_sent and decides (the dispatcher is at-least-once and knows better).
 * A failure on a fresh connection, or after any response byte, is never resent.
 *
 * The process must ignore SIGPIPE (the worker does): OpenSSL writes with write(2).
 * Everything here runs on the client's loop and is not thread-safe.
 */
#ifndef MD_CLIENT_H
#define MD_CLIENT_H

#include "md_core.h"
#include "md_buf.h"

struct ev_loop;
typedef struct md_dns_s md_dns_t;

typedef struct md_http_client_s md_http_client_t;
typedef struct md_http_endpoint_s md_http_endpoint_t;
typedef struct md_http_client_req_s md_http_client_req_t;

extern const char md_http_client_err_dns[];      /* "dns" */
extern const char md_http_client_err_connect[];  /* "connect" */
extern const char md_http_client_err_tls[];      /* "tls" */
extern const char md_http_client_err_timeout[];  /* "timeout" */
extern const char md_http_client_err_reset[];    /* "reset" */
extern const char md_http_client_err_protocol[]; /* "protocol" */
extern const char md_http_client_err_canceled[]; /* "canceled" */

/* One endpoint. Zero values take the defaults in brackets. Strings are copied. */
typedef struct md_http_endpoint_conf_s {
    const char *url;          /* "https://host[:port]" or "http://host[:port]"; host may be
                                 a name, an IPv4 literal or [IPv6]; no path */
    const char *name;         /* for logs (an ESP account name); NULL: the url */
    unsigned max_connections; /* [8] */
    unsigned max_waiting;     /* requests waiting for a connection [1024]; beyond: MD_AGAIN */
    double connect_timeout;   /* [5 s] */
    double handshake_timeout; /* [5 s] */
    double response_timeout;  /* [30 s] */
    double wait_timeout;      /* [15 s] */
    double idle_timeout;      /* [30 s]: below the usual 60 s of servers, to close first */
    size_t max_response_size; /* headers + body [4 MiB] */
    const char *ca_file;      /* PEM bundle of trusted CAs; NULL: the system's default paths */
    bool tls_verify_off;      /* explicit opt-out of certificate and name checks: logs a warning */
} md_http_endpoint_conf_t;

typedef struct md_http_client_header_s {
    const char *name;
    const char *value;
} md_http_client_header_t;

/*
 * One request. The client adds Host, Content-Length (when there is a body, or
 * for POST/PUT/PATCH) and User-Agent (unless given); a caller's Host,
 * Content-Length, Transfer-Encoding or Connection header is refused, as is a
 * name that is not a token or a value with CR, LF or NUL.
 * The body is either body/body_len (copied) or body_buf, whose live bytes are
 * moved into the request without a copy (the caller's buffer is left empty and
 * may be reused or freed). Everything is copied or moved before send returns.
 */
typedef struct md_http_client_request_s {
    const char *method; /* "GET", "POST", ... */
    const char *path;   /* origin form: "/v3/mail/send?x=1" */
    const md_http_client_header_t *headers;
    size_t nheaders;
    const void *body;
    size_t body_len;
    md_buf_t *body_buf;
    bool idempotent; /* may be resent after a stale-connection failure (see above) */
    double timeout;  /* response timeout for this request; 0: the endpoint's */
} md_http_client_request_t;

/* The outcome of one request; it and everything it points to are valid only
 * during the callback. */
typedef struct md_http_client_response_s {
    const char *error;  /* NULL: a response came (any status); else md_http_client_err_* */
    const char *detail; /* "" or why, for logs */
    bool request_sent;  /* a byte of the request reached the socket (on any attempt) */
    int status;         /* 0 on error */
    const md_http_client_header_t *headers; /* NUL-terminated names and values, in order */
    size_t nheaders;
    md_str_t body;    /* de-chunked; also NUL-terminated (not counted in len) */
    bool reused;      /* the connection had served a response before */
    bool tls_resumed; /* the connection's TLS session was resumed */
    unsigned retries; /* 1 if it was resent once (see the resend rule) */
    double elapsed;   /* seconds from send to callback (loop time) */
} md_http_client_response_t;

/* Runs exactly once per request accepted by md_http_client_send, never before
 * that call returns. It may send new requests and cancel other ones, but must not
 * destroy the client. */
typedef void (*md_http_client_cb)(void *ctx, const md_http_client_response_t *resp);

typedef struct md_http_endpoint_stats_s {
    unsigned connections; /* open now, in any state (resolving, connecting, ...) */
    unsigned idle;        /* idle in the pool now */
    unsigned active;      /* serving a request now */
    size_t waiting;       /* requests waiting for a connection now */
    uint64_t connects;    /* connections established (TCP, and TLS when https) */
    uint64_t tls_resumed; /* of those, with a resumed TLS session */
    uint64_t requests;    /* responses received */
    uint64_t errors;      /* requests ended with an error other than canceled */
    uint64_t retries;     /* requests resent on a fresh connection */
    uint64_t stale;       /* pooled connections found closed by the peer */
} md_http_endpoint_stats_t;

/* Creates a client on loop; dns resolves endpoint names and must outlive the
 * client (destroy the client first). Free with md_http_client_destroy. */
md_http_client_t *md_http_client_create(struct ev_loop *loop, md_dns_t *dns);

/*
 * Fails everything outstanding (callbacks run now, with "canceled"), closes every
 * connection and frees every endpoint and the client. Not from inside a callback.
 */
void md_http_client_destroy(md_http_client_t *c);

/*
 * Adds an endpoint (owned by the client, freed with it). Parses the url, builds
 * the TLS context (loads ca_file now: a bad file is an error here, not at send).
 * Returns NULL with a message in err on a bad configuration.
 */
md_http_endpoint_t *md_http_client_endpoint(md_http_client_t *c,
                                            const md_http_endpoint_conf_t *conf, char *err,
                                            size_t errlen);

/*
 * Queues a request on ep. Returns
 *   MD_OK:    cb will run exactly once; *req (if req is not NULL) is a handle for
 *             md_http_client_cancel, valid until cb starts;
 *   MD_AGAIN: max_waiting requests wait already, or the client is being destroyed:
 *             cb will not run (the caller should back off);
 *   MD_ERROR: a bad request (see md_http_client_request_t): cb will not run.
 * No I/O happens inside this call.
 */
int md_http_client_send(md_http_endpoint_t *ep, const md_http_client_request_t *rq,
                        md_http_client_cb cb, void *ctx, md_http_client_req_t **req);

/*
 * Cancels a request whose callback has not started: the callback runs now, inside
 * this call, with "canceled". A connection that had begun sending it is closed
 * (its state is unknown); one that had not goes back to the pool.
 */
void md_http_client_cancel(md_http_client_req_t *req);

/* Whether a byte of the request may have reached the server (on any attempt):
 * false while it waits for a connection, or its connection has not begun
 * writing it. A stopping owner cancels the ones still off the wire and lets
 * the others finish. */
bool md_http_client_on_wire(const md_http_client_req_t *req);

/* Closes every idle pooled connection (graceful worker shutdown). */
void md_http_client_close_idle(md_http_client_t *c);

/* Case-insensitive lookup of a response header: the first value, or NULL. */
const char *md_http_client_header(const md_http_client_response_t *resp, const char *name);

void md_http_endpoint_stats(const md_http_endpoint_t *ep, md_http_endpoint_stats_t *s);

#endif
