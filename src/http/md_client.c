/*
 * Outbound HTTP/1.1 client: per-endpoint keep-alive pools over TCP or TLS.
 *
 * Shape. Requests and connections are not bound to each other until a
 * connection is ready: a request waits in its endpoint's FIFO, the scheduler
 * (md_ep_schedule) hands waiting requests to idle connections and opens new
 * connections while fewer are on their way than requests wait (up to
 * max_connections). A connection that becomes ready (handshake done, or a
 * response finished with keep-alive) takes the head of the FIFO. So a slow or
 * failing connect never holds a particular request hostage.
 *
 * A connection that fails before it is ready (dns, connect, tls) fails every
 * waiting request with its error when no connection of the endpoint is
 * established (a dead or misconfigured endpoint fails fast, with the real cause,
 * instead of draining through wait_timeout), and otherwise only the oldest one
 * (the established connections will serve the rest).
 *
 * Connection states: RESOLVING (md_dns lookup) -> CONNECTING (nonblocking
 * connect, one address after another) -> HANDSHAKE (https) -> IDLE <-> ACTIVE.
 * One ev_io per connection whose events follow what the state (and OpenSSL's
 * WANT_READ/WANT_WRITE) asks for; one ev_timer per connection for the connect,
 * handshake and idle deadlines; one ev_timer per request for its wait and
 * response deadlines.
 *
 * Reentrancy. User callbacks may send and cancel. Each path that ends a request
 * first detaches it from its connection and endpoint and brings both into a
 * consistent state (and schedules waiting work), then calls the callback last,
 * and the caller of that path touches neither the request nor (if it was
 * closed) the connection afterwards. No callback runs inside md_http_client_send:
 * it does no I/O, it only arms watchers.
 */
#include "md_client.h"
#include "md_dns.h"
#include "md_list.h"
#include "md_log.h"

#include <arpa/inet.h>
#include <ev.h>
#include <llhttp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

const char md_http_client_err_dns[] = "dns";
const char md_http_client_err_connect[] = "connect";
const char md_http_client_err_tls[] = "tls";
const char md_http_client_err_timeout[] = "timeout";
const char md_http_client_err_reset[] = "reset";
const char md_http_client_err_protocol[] = "protocol";
const char md_http_client_err_canceled[] = "canceled";

#define MD_HC_READ_CHUNK  16384
#define MD_HC_INLINE_BODY 16384 /* bodies up to this go in the same write as the head */
#define MD_HC_MAX_HEADERS 128
#define MD_HC_DETAIL      256

enum {
    MD_HC_RESOLVING = 1,
    MD_HC_CONNECTING,
    MD_HC_HANDSHAKE,
    MD_HC_IDLE,
    MD_HC_ACTIVE,
};

typedef struct md_hc_conn_s md_hc_conn_t;

struct md_http_client_s {
    struct ev_loop *loop;
    md_dns_t *dns;
    md_list_t endpoints;
    bool destroying;
};

struct md_http_endpoint_s {
    md_list_t node; /* client->endpoints */
    md_http_client_t *client;
    char *name, *url, *host, *hostport; /* hostport: the Host header value */
    int port;
    bool tls, host_is_ip, verify;
    unsigned max_connections, max_waiting;
    double connect_timeout, handshake_timeout, response_timeout, wait_timeout, idle_timeout;
    size_t max_response_size;
    SSL_CTX *ssl_ctx;
    SSL_SESSION *session; /* the last ticket the server gave us, offered on new connections */

    md_list_t conns;   /* every open connection */
    md_list_t idle;    /* idle ones, most recently used first */
    md_list_t waiting; /* requests without a connection, oldest first */
    unsigned nconns, nopening, nidle, nactive;
    size_t nwaiting;
    md_http_endpoint_stats_t stats;
};

/* A request, owned by the client from an accepted send until its callback ran. */
struct md_http_client_req_s {
    md_list_t node; /* ep->waiting while waiting (else detached) */
    md_http_endpoint_t *ep;
    md_hc_conn_t *conn;
    md_http_client_cb cb;
    void *ctx;
    ev_timer timer; /* wait deadline, then response deadline */
    double start, response_timeout;
    bool idempotent, head;
    bool waiting;    /* on ep->waiting (and counted in nwaiting) */
    bool need_fresh; /* being resent: only a newly opened connection may take it */
    bool sent_any;   /* over all attempts */
    unsigned retries;

    /* What goes on the wire: out (head, and a small body), then body. The
     * buffers stay intact; woff counts bytes written in this attempt. */
    md_buf_t out, body;
    size_t woff;

    /* The response being read. Header bytes live in hbuf as name\0value\0;
     * hoff holds each header's (name, value) offsets. */
    int status;
    md_buf_t hbuf, rbody;
    size_t *hoff;
    size_t nh, hcap;
    size_t cur_name, cur_value;
    int hstate; /* 0 between headers, 1 in a name, 2 in a value */
    bool got_bytes, complete, close_after;
    char detail[MD_HC_DETAIL];
};

struct md_hc_conn_s {
    md_list_t node;      /* ep->conns */
    md_list_t idle_node; /* ep->idle while idle */
    md_http_endpoint_t *ep;
    int state;
    int fd;
    ev_io io;
    ev_timer timer;
    SSL *ssl;
    md_dns_req_t *dns;
    md_dns_addr_t addrs[MD_DNS_MAX_ADDRS];
    size_t naddrs, next_addr;
    md_http_client_req_t *req;
    bool writing;
    bool probed;        /* the reuse probe ran for the current request */
    bool write_started; /* a write of the current request was attempted (OpenSSL may hold
                           part of a record: the connection cannot take another request) */
    bool resumed;
    unsigned served; /* responses completed on this connection */
    llhttp_t parser;
    char detail[MD_HC_DETAIL];
};

static llhttp_settings_t md_hc_settings;
static bool md_hc_settings_ready;

static void md_ep_schedule(md_http_endpoint_t *ep);
static void md_hc_conn_close(md_hc_conn_t *cn);
static void md_hc_conn_connect(md_hc_conn_t *cn);
static void md_hc_write(md_hc_conn_t *cn);
static void md_hc_read(md_hc_conn_t *cn);

/* ---- small helpers ---------------------------------------------------------- */

static void
md_hc_want(md_hc_conn_t *cn, int events)
{
    struct ev_loop *loop = cn->ep->client->loop;
    if (ev_is_active(&cn->io) && (cn->io.events & (EV_READ | EV_WRITE)) == events)
        return;
    ev_io_stop(loop, &cn->io);
    if (events == 0)
        return;
    ev_io_set(&cn->io, cn->fd, events);
    ev_io_start(loop, &cn->io);
}

static void
md_hc_conn_timer(md_hc_conn_t *cn, double after)
{
    struct ev_loop *loop = cn->ep->client->loop;
    ev_timer_stop(loop, &cn->timer);
    if (after > 0) {
        ev_timer_set(&cn->timer, after, 0.);
        ev_timer_start(loop, &cn->timer);
    }
}

static void
md_hc_req_timer(md_http_client_req_t *q, double after)
{
    struct ev_loop *loop = q->ep->client->loop;
    ev_timer_stop(loop, &q->timer);
    if (after > 0) {
        ev_timer_set(&q->timer, after, 0.);
        ev_timer_start(loop, &q->timer);
    }
}

/* Describes the OpenSSL error queue (and errno) in buf, then clears the queue. */
static void
md_hc_ssl_reason(md_hc_conn_t *cn, int sslerr, char *buf, size_t len)
{
    unsigned long e = ERR_peek_last_error();
    long vr = cn->ssl ? SSL_get_verify_result(cn->ssl) : X509_V_OK;
    if (e && ERR_GET_REASON(e) == SSL_R_CERTIFICATE_VERIFY_FAILED && vr != X509_V_OK) {
        snprintf(buf, len, "certificate verify failed: %s", X509_verify_cert_error_string(vr));
    } else if (e) {
        char eb[200];
        ERR_error_string_n(e, eb, sizeof(eb));
        md_strlcpy(buf, eb, len);
    } else if (sslerr == SSL_ERROR_SYSCALL && errno) {
        md_strlcpy(buf, strerror(errno), len);
    } else if (sslerr == SSL_ERROR_ZERO_RETURN || sslerr == SSL_ERROR_SYSCALL) {
        snprintf(buf, len, "connection closed by the peer");
    } else {
        snprintf(buf, len, "TLS error %d", sslerr);
    }
    ERR_clear_error();
}

static bool
md_hc_is_token(const char *s)
{
    static const char *tchar = "!#$%&'*+-.^_`|~";
    if (s == NULL || *s == '\0')
        return false;
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
              strchr(tchar, ch)))
            return false;
    }
    return true;
}

/* ---- requests: completion --------------------------------------------------- */

static void
md_hc_req_free(md_http_client_req_t *q)
{
    ev_timer_stop(q->ep->client->loop, &q->timer);
    md_buf_free(&q->out);
    md_buf_free(&q->body);
    md_buf_free(&q->hbuf);
    md_buf_free(&q->rbody);
    free(q->hoff);
    free(q);
}

/* Resets what was read of a response (before a resend, or after a 1xx). */
static void
md_hc_req_reset_response(md_http_client_req_t *q)
{
    q->status = 0;
    md_buf_reset(&q->hbuf);
    md_buf_reset(&q->rbody);
    q->nh = 0;
    q->hstate = 0;
    q->complete = false;
    q->close_after = false;
}

/* Runs q's callback with an error and frees q. q must be detached (no conn,
 * not waiting). The caller must have brought everything else into a consistent
 * state first: the callback may re-enter the client. */
static void
md_hc_req_fail(md_http_client_req_t *q, const char *error, const char *detail)
{
    md_http_endpoint_t *ep = q->ep;
    md_http_client_response_t resp;
    memset(&resp, 0, sizeof(resp));
    if (detail != q->detail)
        md_strlcpy(q->detail, detail ? detail : "", sizeof(q->detail));
    resp.error = error;
    resp.detail = q->detail;
    resp.request_sent = q->sent_any;
    resp.retries = q->retries;
    resp.body.data = "";
    resp.elapsed = ev_now(ep->client->loop) - q->start;
    if (error != md_http_client_err_canceled)
        ep->stats.errors++;
    ev_timer_stop(ep->client->loop, &q->timer);
    q->cb(q->ctx, &resp);
    md_hc_req_free(q);
}

/* Takes q off the wait list (a no-op when it is not on it: a callback may cancel
 * a request that a failing path has already taken off). */
static void
md_hc_unwait(md_http_client_req_t *q)
{
    md_list_remove(&q->node);
    if (q->waiting) {
        q->waiting = false;
        q->ep->nwaiting--;
    }
}

/* Puts q on the wait list (at the head for one that already had its turn) and
 * (re)starts its wait deadline. */
static void
md_hc_wait(md_http_client_req_t *q, bool head)
{
    md_http_endpoint_t *ep = q->ep;
    if (head)
        md_list_insert_head(&ep->waiting, &q->node);
    else
        md_list_insert_tail(&ep->waiting, &q->node);
    q->waiting = true;
    ep->nwaiting++;
    md_hc_req_timer(q, ep->wait_timeout);
}

/* ---- connections: lifecycle ----------------------------------------------------- */

static void
md_hc_conn_to_idle(md_hc_conn_t *cn)
{
    md_http_endpoint_t *ep = cn->ep;
    if (cn->state == MD_HC_ACTIVE)
        ep->nactive--;
    cn->state = MD_HC_IDLE;
    cn->req = NULL;
    cn->writing = false;
    md_list_insert_head(&ep->idle, &cn->idle_node);
    ep->nidle++;
    /* Watch for the peer closing it (and TLS 1.3 tickets arriving late). */
    md_hc_want(cn, EV_READ);
    md_hc_conn_timer(cn, ep->idle_timeout);
}

/* Frees cn: socket, TLS, watchers, pending lookup. A request on it must have
 * been detached already. */
static void
md_hc_conn_close(md_hc_conn_t *cn)
{
    md_http_endpoint_t *ep = cn->ep;
    struct ev_loop *loop = ep->client->loop;
    ev_io_stop(loop, &cn->io);
    ev_timer_stop(loop, &cn->timer);
    if (cn->dns) {
        md_dns_cancel(cn->dns);
        cn->dns = NULL;
    }
    if (cn->state == MD_HC_IDLE) {
        md_list_remove(&cn->idle_node);
        ep->nidle--;
    } else if (cn->state == MD_HC_ACTIVE) {
        ep->nactive--;
    } else {
        ep->nopening--;
    }
    if (cn->ssl) {
        /* A quiet shutdown: no close_notify on a socket we give up on (it may be
         * broken, and a blocking-free send of the alert is best effort anyway). */
        if (cn->state == MD_HC_IDLE)
            SSL_shutdown(cn->ssl);
        SSL_free(cn->ssl);
        cn->ssl = NULL;
        ERR_clear_error();
    }
    if (cn->fd >= 0)
        close(cn->fd);
    md_list_remove(&cn->node);
    ep->nconns--;
    free(cn);
}

/*
 * cn failed before it was ready. Closes it, fails every waiting request with
 * (error, detail) when no connection of the endpoint is established (only ones
 * still opening, or none), else the oldest one; then lets the scheduler open
 * what the rest needs.
 */
static void
md_hc_conn_open_failed(md_hc_conn_t *cn, const char *error, const char *detail)
{
    md_http_endpoint_t *ep = cn->ep;
    char why[MD_HC_DETAIL];
    md_strlcpy(why, detail, sizeof(why));
    md_logf(MD_LOG_WARN, 0,
            MD_LOG_FIELDS(MD_LS("endpoint", ep->name), MD_LS("error", error), MD_LS("reason", why)),
            "http client: connection to %s failed: %s", ep->name, why);
    md_hc_conn_close(cn);

    md_list_t failing;
    md_list_init(&failing);
    if (ep->nconns == ep->nopening) {
        md_list_t *n;
        while ((n = md_list_first(&ep->waiting)) != NULL) {
            md_hc_unwait(md_list_data(n, md_http_client_req_t, node));
            md_list_insert_tail(&failing, n);
        }
    } else if (!md_list_empty(&ep->waiting)) {
        md_list_t *n = md_list_first(&ep->waiting);
        md_hc_unwait(md_list_data(n, md_http_client_req_t, node));
        md_list_insert_tail(&failing, n);
    }
    md_ep_schedule(ep);
    /* Callbacks last; one may cancel another request of this list, which takes
     * it off the list (md_list_remove works on any list). */
    md_list_t *n;
    while ((n = md_list_first(&failing)) != NULL) {
        md_list_remove(n);
        md_hc_req_fail(md_list_data(n, md_http_client_req_t, node), error, why);
    }
}

/*
 * The connection serving q failed (I/O error, EOF, protocol error, timeout).
 * Closes it; resends q once on a fresh connection when the resend rule allows
 * (see md_client.h), else fails q with (error, detail).
 */
static void
md_hc_conn_req_failed(md_hc_conn_t *cn, const char *error, const char *detail)
{
    md_http_endpoint_t *ep = cn->ep;
    md_http_client_req_t *q = cn->req;
    bool reused = cn->served > 0;
    char why[MD_HC_DETAIL];
    md_strlcpy(why, detail, sizeof(why));
    cn->req = NULL;
    md_hc_conn_close(cn);
    if (q == NULL) {
        md_ep_schedule(ep);
        return;
    }
    q->conn = NULL;
    bool wrote = q->woff > 0;
    if (reused && error == md_http_client_err_reset && !q->got_bytes && q->retries == 0 &&
        (!wrote || q->idempotent)) {
        md_logf(MD_LOG_INFO, 0, MD_LOG_FIELDS(MD_LS("endpoint", ep->name), MD_LS("reason", why)),
                "http client: pooled connection to %s failed (%s); resending on a fresh one",
                ep->name, why);
        q->retries++;
        ep->stats.retries++;
        ep->stats.stale++;
        q->need_fresh = true;
        q->woff = 0;
        md_hc_req_reset_response(q);
        md_hc_wait(q, true);
        md_ep_schedule(ep);
        return;
    }
    md_logf(MD_LOG_WARN, 0,
            MD_LOG_FIELDS(MD_LS("endpoint", ep->name), MD_LS("error", error), MD_LS("reason", why)),
            "http client: request to %s failed: %s", ep->name, why);
    md_ep_schedule(ep);
    md_hc_req_fail(q, error, why);
}

/* Gives waiting request q to ready connection cn: the write starts on the next
 * loop pass (from the io watcher), never inside the caller. */
static void
md_hc_assign(md_hc_conn_t *cn, md_http_client_req_t *q)
{
    md_http_endpoint_t *ep = cn->ep;
    if (cn->state == MD_HC_IDLE) {
        md_list_remove(&cn->idle_node);
        ep->nidle--;
    } else {
        ep->nopening--; /* a connection that just became ready */
    }
    cn->state = MD_HC_ACTIVE;
    ep->nactive++;
    cn->req = q;
    cn->writing = true;
    cn->probed = false;
    cn->write_started = false;
    q->conn = cn;
    q->woff = 0;
    q->need_fresh = false;
    llhttp_init(&cn->parser, HTTP_RESPONSE, &md_hc_settings);
    cn->parser.data = cn;
    md_hc_conn_timer(cn, 0);
    md_hc_req_timer(q, q->response_timeout);
    md_hc_want(cn, EV_WRITE);
}

/* cn has just become ready (connected, handshake done): serve the oldest
 * waiting request, or rest in the pool. */
static void
md_hc_conn_ready(md_hc_conn_t *cn)
{
    md_http_endpoint_t *ep = cn->ep;
    ep->stats.connects++;
    if (cn->resumed)
        ep->stats.tls_resumed++;
    md_list_t *n = md_list_first(&ep->waiting);
    if (n) {
        md_http_client_req_t *q = md_list_data(n, md_http_client_req_t, node);
        md_hc_unwait(q);
        md_hc_assign(cn, q);
        return;
    }
    ep->nopening--;
    ep->nactive++; /* md_hc_conn_to_idle counts it out of active */
    cn->state = MD_HC_ACTIVE;
    md_hc_conn_to_idle(cn);
}

/*
 * Hands waiting requests to idle connections, then opens connections while
 * fewer are being opened than requests wait, up to max_connections. A request
 * being resent (need_fresh) takes no idle connection; if the pool is full of
 * idle ones it closes one to make room.
 */
static void
md_ep_schedule(md_http_endpoint_t *ep)
{
    md_http_client_t *c = ep->client;
    if (c->destroying)
        return;
    size_t fresh = 0;
    for (md_list_t *n = ep->waiting.next; n != &ep->waiting;) {
        md_http_client_req_t *q = md_list_data(n, md_http_client_req_t, node);
        n = n->next;
        if (q->need_fresh) {
            fresh++;
            continue;
        }
        md_list_t *in = md_list_first(&ep->idle);
        if (in == NULL)
            break;
        md_hc_unwait(q);
        md_hc_assign(md_list_data(in, md_hc_conn_t, idle_node), q);
    }
    if (fresh > ep->nopening && ep->nconns >= ep->max_connections && ep->nidle > 0)
        md_hc_conn_close(md_list_data(md_list_last(&ep->idle), md_hc_conn_t, idle_node));
    while (ep->nopening < ep->nwaiting && ep->nconns < ep->max_connections) {
        md_hc_conn_t *cn = md_xcalloc(1, sizeof(*cn));
        cn->ep = ep;
        cn->fd = -1;
        cn->state = MD_HC_RESOLVING;
        md_list_init(&cn->idle_node);
        md_list_insert_tail(&ep->conns, &cn->node);
        ev_init(&cn->io, NULL);
        ev_init(&cn->timer, NULL);
        ep->nconns++;
        ep->nopening++;
        md_hc_conn_connect(cn);
    }
}

/* ---- connecting ------------------------------------------------------------------- */

static void md_hc_io_cb(struct ev_loop *loop, ev_io *w, int revents);
static void md_hc_timer_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void md_hc_handshake(md_hc_conn_t *cn);

/* Tries the next address of the name; fails the connection after the last. */
static void
md_hc_connect_next(md_hc_conn_t *cn)
{
    md_http_endpoint_t *ep = cn->ep;
    while (cn->next_addr < cn->naddrs) {
        const md_dns_addr_t *a = &cn->addrs[cn->next_addr++];
        struct sockaddr_storage ss;
        socklen_t sl = md_dns_sockaddr(a, ep->port, &ss);
        char ip[INET6_ADDRSTRLEN];
        if (cn->fd >= 0) {
            ev_io_stop(ep->client->loop, &cn->io);
            close(cn->fd);
            cn->fd = -1;
        }
        int fd = socket(a->family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            snprintf(cn->detail, sizeof(cn->detail), "socket: %s", strerror(errno));
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        cn->fd = fd;
        if (connect(fd, (struct sockaddr *)&ss, sl) == 0 || errno == EINPROGRESS) {
            cn->state = MD_HC_CONNECTING;
            md_hc_want(cn, EV_WRITE);
            md_hc_conn_timer(cn, ep->connect_timeout);
            return;
        }
        snprintf(cn->detail, sizeof(cn->detail), "connect to %s:%d: %s",
                 md_dns_ntop(a, ip, sizeof(ip)), ep->port, strerror(errno));
    }
    md_hc_conn_open_failed(cn, md_http_client_err_connect, cn->detail);
}

static void
md_hc_dns_cb(void *ctx, const md_dns_result_t *res)
{
    md_hc_conn_t *cn = ctx;
    cn->dns = NULL;
    if (res->error) {
        char why[MD_HC_DETAIL];
        snprintf(why, sizeof(why), "resolving %s: %s (%s)", cn->ep->host, res->error, res->detail);
        md_hc_conn_open_failed(cn, md_http_client_err_dns, why);
        return;
    }
    cn->naddrs = res->naddrs;
    memcpy(cn->addrs, res->addrs, sizeof(cn->addrs));
    cn->next_addr = 0;
    snprintf(cn->detail, sizeof(cn->detail), "no address for %s", cn->ep->host);
    md_hc_connect_next(cn);
}

/* Starts a connection: resolve (an IP literal or a cached name answers on the
 * next pass, still through the callback). */
static void
md_hc_conn_connect(md_hc_conn_t *cn)
{
    md_http_endpoint_t *ep = cn->ep;
    ev_io_init(&cn->io, md_hc_io_cb, 0, EV_READ);
    cn->io.data = cn;
    ev_timer_init(&cn->timer, md_hc_timer_cb, 1., 0.);
    cn->timer.data = cn;
    if (md_dns_resolve(ep->client->dns, ep->host, AF_UNSPEC, md_hc_dns_cb, cn, &cn->dns) != MD_OK) {
        /* Only a bad host gets here and the url was checked: answer from the
         * loop anyway, through the connect timer. */
        snprintf(cn->detail, sizeof(cn->detail), "cannot resolve %s", ep->host);
        cn->state = MD_HC_CONNECTING;
        cn->naddrs = cn->next_addr = 0;
        md_hc_conn_timer(cn, 0.001);
    }
}

static void
md_hc_connected(md_hc_conn_t *cn)
{
    md_http_endpoint_t *ep = cn->ep;
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(cn->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err == EINPROGRESS || err == EALREADY)
        return;
    if (err) {
        char ip[INET6_ADDRSTRLEN];
        snprintf(cn->detail, sizeof(cn->detail), "connect to %s:%d: %s",
                 md_dns_ntop(&cn->addrs[cn->next_addr - 1], ip, sizeof(ip)), ep->port,
                 strerror(err));
        md_hc_connect_next(cn);
        return;
    }
    if (!ep->tls) {
        md_hc_conn_timer(cn, 0);
        md_hc_conn_ready(cn);
        return;
    }
    cn->ssl = SSL_new(ep->ssl_ctx);
    if (cn->ssl == NULL || SSL_set_fd(cn->ssl, cn->fd) != 1) {
        md_hc_ssl_reason(cn, SSL_ERROR_SSL, cn->detail, sizeof(cn->detail));
        md_hc_conn_open_failed(cn, md_http_client_err_tls, cn->detail);
        return;
    }
    SSL_set_app_data(cn->ssl, cn);
    SSL_set_connect_state(cn->ssl);
    if (ep->verify) {
        int ok = ep->host_is_ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(cn->ssl), ep->host)
                                : SSL_set1_host(cn->ssl, ep->host);
        if (ok != 1) {
            md_hc_ssl_reason(cn, SSL_ERROR_SSL, cn->detail, sizeof(cn->detail));
            md_hc_conn_open_failed(cn, md_http_client_err_tls, cn->detail);
            return;
        }
        SSL_set_hostflags(cn->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    }
    if (!ep->host_is_ip)
        SSL_set_tlsext_host_name(cn->ssl, ep->host);
    if (ep->session)
        SSL_set_session(cn->ssl, ep->session);
    cn->state = MD_HC_HANDSHAKE;
    md_hc_conn_timer(cn, ep->handshake_timeout);
    md_hc_handshake(cn);
}

static void
md_hc_handshake(md_hc_conn_t *cn)
{
    ERR_clear_error();
    int rc = SSL_do_handshake(cn->ssl);
    if (rc == 1) {
        cn->resumed = SSL_session_reused(cn->ssl) == 1;
        md_hc_conn_timer(cn, 0);
        md_hc_conn_ready(cn);
        return;
    }
    int e = SSL_get_error(cn->ssl, rc);
    if (e == SSL_ERROR_WANT_READ) {
        md_hc_want(cn, EV_READ);
        return;
    }
    if (e == SSL_ERROR_WANT_WRITE) {
        md_hc_want(cn, EV_WRITE);
        return;
    }
    char why[MD_HC_DETAIL];
    md_hc_ssl_reason(cn, e, why, sizeof(why));
    snprintf(cn->detail, sizeof(cn->detail), "TLS handshake with %.60s: %.170s", cn->ep->host, why);
    md_hc_conn_open_failed(cn, md_http_client_err_tls, cn->detail);
}

/* OpenSSL's new-session callback: keep the newest ticket for the next connection.
 * Returning 1 keeps the reference OpenSSL handed us. */
static int
md_hc_new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
    md_hc_conn_t *cn = SSL_get_app_data(ssl);
    if (cn == NULL)
        return 0;
    md_http_endpoint_t *ep = cn->ep;
    if (ep->session)
        SSL_SESSION_free(ep->session);
    ep->session = sess;
    return 1;
}

/* ---- I/O ---------------------------------------------------------------------------- */

/* Before a reused connection carries a request: has the peer closed it since
 * the loop last looked? Returns true when it is fit to use. */
static bool
md_hc_probe_idle(md_hc_conn_t *cn)
{
    char b;
    ssize_t n = recv(cn->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
    if (n == 0)
        return false;
    if (cn->ssl == NULL)
        return false; /* bytes nobody asked for */
    /* TLS: a ticket (fine) or an alert such as close_notify (not fine). */
    char buf[256];
    ERR_clear_error();
    int rc = SSL_read(cn->ssl, buf, sizeof(buf));
    if (rc > 0)
        return false;
    int e = SSL_get_error(cn->ssl, rc);
    ERR_clear_error();
    return e == SSL_ERROR_WANT_READ;
}

/* Sends q's bytes from woff on; moves to reading when all are written. */
static void
md_hc_write(md_hc_conn_t *cn)
{
    md_http_endpoint_t *ep = cn->ep;
    md_http_client_req_t *q = cn->req;

    if (!cn->probed && cn->served > 0 && !md_hc_probe_idle(cn)) {
        /* Nothing was sent: give the request to another connection. */
        ep->stats.stale++;
        cn->req = NULL;
        q->conn = NULL;
        md_hc_conn_close(cn);
        md_hc_wait(q, true);
        md_ep_schedule(ep);
        return;
    }

    cn->probed = true;
    cn->write_started = true;
    size_t olen = md_buf_len(&q->out), total = olen + md_buf_len(&q->body);
    while (q->woff < total) {
        const char *p;
        size_t len;
        if (q->woff < olen) {
            p = q->out.pos + q->woff;
            len = olen - q->woff;
        } else {
            p = q->body.pos + (q->woff - olen);
            len = total - q->woff;
        }
        ssize_t n;
        if (cn->ssl) {
            ERR_clear_error();
            int rc = SSL_write(cn->ssl, p, (int)md_min(len, (size_t)INT32_MAX));
            if (rc <= 0) {
                int e = SSL_get_error(cn->ssl, rc);
                if (e == SSL_ERROR_WANT_WRITE) {
                    md_hc_want(cn, EV_WRITE);
                    return;
                }
                if (e == SSL_ERROR_WANT_READ) {
                    md_hc_want(cn, EV_READ);
                    return;
                }
                char why[MD_HC_DETAIL];
                md_hc_ssl_reason(cn, e, why, sizeof(why));
                snprintf(cn->detail, sizeof(cn->detail), "sending: %.200s", why);
                md_hc_conn_req_failed(cn, md_http_client_err_reset, cn->detail);
                return;
            }
            n = rc;
        } else {
            n = send(cn->fd, p, len, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
                    md_hc_want(cn, EV_WRITE);
                    return;
                }
                snprintf(cn->detail, sizeof(cn->detail), "sending: %s", strerror(errno));
                md_hc_conn_req_failed(cn, md_http_client_err_reset, cn->detail);
                return;
            }
        }
        q->woff += (size_t)n;
        q->sent_any = true;
    }
    cn->writing = false;
    md_hc_want(cn, EV_READ);
    /* TLS may hold decrypted bytes already (unlikely this early; cheap to check). */
    if (cn->ssl && SSL_pending(cn->ssl) > 0)
        md_hc_read(cn);
}

/* The response is complete: deliver it, and keep or close the connection. */
static void
md_hc_deliver(md_hc_conn_t *cn, bool keep)
{
    md_http_endpoint_t *ep = cn->ep;
    md_http_client_req_t *q = cn->req;
    md_http_client_response_t resp;
    memset(&resp, 0, sizeof(resp));
    resp.reused = cn->served > 0;
    resp.tls_resumed = cn->resumed;

    cn->served++;
    q->conn = NULL;
    cn->req = NULL;
    if (keep && !ep->client->destroying) {
        md_hc_conn_to_idle(cn);
    } else {
        md_hc_conn_close(cn);
    }
    ep->stats.requests++;
    md_ep_schedule(ep);

    /* The headers' strings are final now: point into hbuf. */
    md_http_client_header_t *hs = md_xcalloc(q->nh ? q->nh : 1, sizeof(*hs));
    for (size_t i = 0; i < q->nh; i++) {
        hs[i].name = q->hbuf.pos + q->hoff[2 * i];
        hs[i].value = q->hbuf.pos + q->hoff[2 * i + 1];
    }
    md_buf_reserve(&q->rbody, 1);
    *q->rbody.last = '\0';
    resp.status = q->status;
    resp.headers = hs;
    resp.nheaders = q->nh;
    resp.body.data = q->rbody.pos ? q->rbody.pos : "";
    resp.body.len = md_buf_len(&q->rbody);
    resp.detail = "";
    resp.request_sent = true;
    resp.retries = q->retries;
    resp.elapsed = ev_now(ep->client->loop) - q->start;
    ev_timer_stop(ep->client->loop, &q->timer);
    q->cb(q->ctx, &resp);
    free(hs);
    md_hc_req_free(q);
}

/* Reads and parses what has arrived for the active request. */
static void
md_hc_read(md_hc_conn_t *cn)
{
    md_http_endpoint_t *ep = cn->ep;
    md_http_client_req_t *q = cn->req;
    char buf[MD_HC_READ_CHUNK];

    for (;;) {
        ssize_t n;
        bool eof = false;
        if (cn->ssl) {
            ERR_clear_error();
            int rc = SSL_read(cn->ssl, buf, sizeof(buf));
            if (rc > 0) {
                n = rc;
            } else {
                int e = SSL_get_error(cn->ssl, rc);
                if (e == SSL_ERROR_WANT_READ) {
                    ERR_clear_error();
                    return;
                }
                if (e == SSL_ERROR_WANT_WRITE) {
                    md_hc_want(cn, EV_WRITE | EV_READ);
                    ERR_clear_error();
                    return;
                }
                if (e == SSL_ERROR_ZERO_RETURN) {
                    eof = true;
                    n = 0;
                    ERR_clear_error();
                } else {
                    char why[MD_HC_DETAIL];
                    md_hc_ssl_reason(cn, e, why, sizeof(why));
                    snprintf(cn->detail, sizeof(cn->detail), "receiving: %.200s", why);
                    md_hc_conn_req_failed(cn, md_http_client_err_reset, cn->detail);
                    return;
                }
            }
        } else {
            n = recv(cn->fd, buf, sizeof(buf), 0);
            if (n < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                    return;
                snprintf(cn->detail, sizeof(cn->detail), "receiving: %s", strerror(errno));
                md_hc_conn_req_failed(cn, md_http_client_err_reset, cn->detail);
                return;
            }
            eof = n == 0;
        }

        if (eof) {
            if (q->got_bytes && llhttp_message_needs_eof(&cn->parser)) {
                llhttp_errno_t err = llhttp_finish(&cn->parser);
                if (err == HPE_OK || err == HPE_PAUSED) {
                    if (q->complete) {
                        md_hc_deliver(cn, false);
                        return;
                    }
                }
            }
            md_hc_conn_req_failed(cn, md_http_client_err_reset,
                                  q->got_bytes ? "connection closed in the middle of the response"
                                               : "connection closed before the response");
            return;
        }

        q->got_bytes = true;
        llhttp_errno_t err = llhttp_execute(&cn->parser, buf, (size_t)n);
        if (err == HPE_PAUSED && q->complete) {
            const char *pos = llhttp_get_error_pos(&cn->parser);
            bool extra = pos < buf + n || (cn->ssl && SSL_pending(cn->ssl) > 0);
            /* Keep-alive only for a clean end: nothing after the response. */
            md_hc_deliver(cn, !extra && !q->close_after);
            return;
        }
        if (err != HPE_OK) {
            const char *why = q->detail[0] ? q->detail : llhttp_get_error_reason(&cn->parser);
            snprintf(cn->detail, sizeof(cn->detail), "bad response: %.200s",
                     why ? why : llhttp_errno_name(err));
            q->detail[0] = '\0';
            /* A response started: never resent (got_bytes), reported as protocol. */
            md_hc_conn_req_failed(cn, md_http_client_err_protocol, cn->detail);
            return;
        }
        if (md_buf_len(&q->hbuf) + md_buf_len(&q->rbody) > ep->max_response_size) {
            md_hc_conn_req_failed(cn, md_http_client_err_protocol, "response too large");
            return;
        }
    }
}

/* An idle connection is readable: the peer closed it, sent a late TLS ticket,
 * or sent bytes nobody asked for. */
static void
md_hc_idle_read(md_hc_conn_t *cn)
{
    md_http_endpoint_t *ep = cn->ep;
    char buf[512];
    if (cn->ssl) {
        ERR_clear_error();
        int rc = SSL_read(cn->ssl, buf, sizeof(buf));
        if (rc <= 0 && SSL_get_error(cn->ssl, rc) == SSL_ERROR_WANT_READ) {
            ERR_clear_error();
            return;
        }
        ERR_clear_error();
    } else {
        ssize_t n = recv(cn->fd, buf, sizeof(buf), 0);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
    }
    ep->stats.stale++;
    md_logf(MD_LOG_DEBUG, 0, MD_LOG_FIELDS(MD_LS("endpoint", ep->name)),
            "http client: idle connection to %s closed by the peer", ep->name);
    md_hc_conn_close(cn);
    md_ep_schedule(ep);
}

static void
md_hc_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    md_hc_conn_t *cn = w->data;
    md_unused(loop);
    md_unused(revents);
    switch (cn->state) {
    case MD_HC_CONNECTING:
        md_hc_connected(cn);
        break;
    case MD_HC_HANDSHAKE:
        md_hc_handshake(cn);
        break;
    case MD_HC_IDLE:
        md_hc_idle_read(cn);
        break;
    case MD_HC_ACTIVE:
        if (cn->writing)
            md_hc_write(cn);
        else
            md_hc_read(cn);
        break;
    default:
        md_hc_want(cn, 0);
        break;
    }
}

static void
md_hc_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    md_hc_conn_t *cn = w->data;
    md_http_endpoint_t *ep = cn->ep;
    char why[MD_HC_DETAIL];
    md_unused(loop);
    md_unused(revents);
    switch (cn->state) {
    case MD_HC_CONNECTING:
        if (cn->next_addr == 0 && cn->naddrs == 0) { /* md_dns_resolve refused the host */
            md_hc_conn_open_failed(cn, md_http_client_err_dns, cn->detail);
            return;
        }
        snprintf(cn->detail, sizeof(cn->detail), "connect to %s:%d timed out after %gs", ep->host,
                 ep->port, ep->connect_timeout);
        md_hc_connect_next(cn);
        break;
    case MD_HC_HANDSHAKE:
        snprintf(why, sizeof(why), "TLS handshake with %s timed out after %gs", ep->host,
                 ep->handshake_timeout);
        md_hc_conn_open_failed(cn, md_http_client_err_tls, why);
        break;
    case MD_HC_IDLE:
        md_hc_conn_close(cn);
        md_ep_schedule(ep);
        break;
    default:
        break;
    }
}

/* A request's deadline: waiting too long for a connection, or for its response. */
static void
md_hc_req_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    md_http_client_req_t *q = w->data;
    md_http_endpoint_t *ep = q->ep;
    char why[MD_HC_DETAIL];
    md_unused(loop);
    md_unused(revents);
    if (q->conn) {
        snprintf(why, sizeof(why), "no complete response within %gs", q->response_timeout);
        q->conn->req = q;
        /* A late response could not be told apart from the next one: close. */
        q->got_bytes = true; /* never resend a request that timed out */
        md_hc_conn_req_failed(q->conn, md_http_client_err_timeout, why);
        return;
    }
    snprintf(why, sizeof(why), "no connection to %s within %gs", ep->name, ep->wait_timeout);
    md_hc_unwait(q);
    md_ep_schedule(ep);
    md_hc_req_fail(q, md_http_client_err_timeout, why);
}

/* ---- llhttp callbacks ------------------------------------------------------------------ */

static md_http_client_req_t *
md_hc_parser_req(llhttp_t *p)
{
    return ((md_hc_conn_t *)p->data)->req;
}

static int
md_hc_on_message_begin(llhttp_t *p)
{
    md_http_client_req_t *q = md_hc_parser_req(p);
    md_hc_req_reset_response(q);
    return 0;
}

static int
md_hc_on_header_field(llhttp_t *p, const char *at, size_t len)
{
    md_http_client_req_t *q = md_hc_parser_req(p);
    if (q->hstate != 1) {
        if (q->nh >= MD_HC_MAX_HEADERS) {
            snprintf(q->detail, sizeof(q->detail), "more than %d headers", MD_HC_MAX_HEADERS);
            return -1;
        }
        q->cur_name = md_buf_len(&q->hbuf);
        q->hstate = 1;
    }
    md_buf_append(&q->hbuf, at, len);
    return 0;
}

static int
md_hc_on_header_value(llhttp_t *p, const char *at, size_t len)
{
    md_http_client_req_t *q = md_hc_parser_req(p);
    if (q->hstate == 1) {
        md_buf_append(&q->hbuf, "", 1);
        q->cur_value = md_buf_len(&q->hbuf);
        q->hstate = 2;
    }
    md_buf_append(&q->hbuf, at, len);
    return 0;
}

static int
md_hc_on_header_value_complete(llhttp_t *p)
{
    md_http_client_req_t *q = md_hc_parser_req(p);
    if (q->hstate == 1) { /* an empty value: no value callback came */
        md_buf_append(&q->hbuf, "", 1);
        q->cur_value = md_buf_len(&q->hbuf);
    }
    md_buf_append(&q->hbuf, "", 1);
    if (q->nh == q->hcap) {
        q->hcap = q->hcap ? q->hcap * 2 : 16;
        q->hoff = md_xrealloc(q->hoff, q->hcap * 2 * sizeof(size_t));
    }
    q->hoff[2 * q->nh] = q->cur_name;
    q->hoff[2 * q->nh + 1] = q->cur_value;
    q->nh++;
    q->hstate = 0;
    return 0;
}

static int
md_hc_on_headers_complete(llhttp_t *p)
{
    md_hc_conn_t *cn = p->data;
    md_http_client_req_t *q = cn->req;
    q->status = p->status_code;
    if (q->status == 101) {
        snprintf(q->detail, sizeof(q->detail), "unexpected 101 Switching Protocols");
        return -1;
    }
    if (!llhttp_should_keep_alive(p))
        q->close_after = true;
    /* A HEAD response has no body whatever its Content-Length says. */
    return q->head ? 1 : 0;
}

static int
md_hc_on_body(llhttp_t *p, const char *at, size_t len)
{
    md_hc_conn_t *cn = p->data;
    md_http_client_req_t *q = cn->req;
    if (md_buf_len(&q->rbody) + len > cn->ep->max_response_size) {
        snprintf(q->detail, sizeof(q->detail), "response larger than %zu bytes",
                 cn->ep->max_response_size);
        return -1;
    }
    md_buf_append(&q->rbody, at, len);
    return 0;
}

static int
md_hc_on_message_complete(llhttp_t *p)
{
    md_hc_conn_t *cn = p->data;
    md_http_client_req_t *q = cn->req;
    if (p->status_code >= 100 && p->status_code < 200) {
        /* 1xx interim answer: the real one follows. */
        md_hc_req_reset_response(q);
        return 0;
    }
    if (!llhttp_should_keep_alive(p))
        q->close_after = true;
    q->complete = true;
    return HPE_PAUSED;
}

static void
md_hc_settings_init(void)
{
    if (md_hc_settings_ready)
        return;
    llhttp_settings_init(&md_hc_settings);
    md_hc_settings.on_message_begin = md_hc_on_message_begin;
    md_hc_settings.on_header_field = md_hc_on_header_field;
    md_hc_settings.on_header_value = md_hc_on_header_value;
    md_hc_settings.on_header_value_complete = md_hc_on_header_value_complete;
    md_hc_settings.on_headers_complete = md_hc_on_headers_complete;
    md_hc_settings.on_body = md_hc_on_body;
    md_hc_settings.on_message_complete = md_hc_on_message_complete;
    md_hc_settings_ready = true;
}

/* ---- public API -------------------------------------------------------------------------- */

md_http_client_t *
md_http_client_create(struct ev_loop *loop, md_dns_t *dns)
{
    md_hc_settings_init();
    md_http_client_t *c = md_xcalloc(1, sizeof(*c));
    c->loop = loop;
    c->dns = dns;
    md_list_init(&c->endpoints);
    return c;
}

static void
md_ep_free(md_http_endpoint_t *ep)
{
    if (ep->session)
        SSL_SESSION_free(ep->session);
    if (ep->ssl_ctx)
        SSL_CTX_free(ep->ssl_ctx);
    free(ep->name);
    free(ep->url);
    free(ep->host);
    free(ep->hostport);
    free(ep);
}

void
md_http_client_destroy(md_http_client_t *c)
{
    if (c == NULL)
        return;
    c->destroying = true;
    md_list_t *n;
    while ((n = md_list_first(&c->endpoints)) != NULL) {
        md_http_endpoint_t *ep = md_list_data(n, md_http_endpoint_t, node);
        md_list_remove(n);
        md_list_t failing;
        md_list_init(&failing);
        md_list_t *m;
        while ((m = md_list_first(&ep->waiting)) != NULL) {
            md_hc_unwait(md_list_data(m, md_http_client_req_t, node));
            md_list_insert_tail(&failing, m);
        }
        while ((m = md_list_first(&ep->conns)) != NULL) {
            md_hc_conn_t *cn = md_list_data(m, md_hc_conn_t, node);
            if (cn->req) {
                cn->req->conn = NULL;
                md_list_insert_tail(&failing, &cn->req->node);
                cn->req = NULL;
            }
            md_hc_conn_close(cn);
        }
        while ((m = md_list_first(&failing)) != NULL) {
            md_list_remove(m);
            md_hc_req_fail(md_list_data(m, md_http_client_req_t, node), md_http_client_err_canceled,
                           "client destroyed");
        }
        md_ep_free(ep);
    }
    free(c);
}

void
md_http_client_close_idle(md_http_client_t *c)
{
    for (md_list_t *n = c->endpoints.next; n != &c->endpoints; n = n->next) {
        md_http_endpoint_t *ep = md_list_data(n, md_http_endpoint_t, node);
        md_list_t *m;
        while ((m = md_list_first(&ep->idle)) != NULL)
            md_hc_conn_close(md_list_data(m, md_hc_conn_t, idle_node));
    }
}

/* Splits "https://host[:port]" into ep's fields. */
static int
md_ep_parse_url(md_http_endpoint_t *ep, const char *url, char *err, size_t errlen)
{
    const char *p;
    if (strncmp(url, "https://", 8) == 0) {
        ep->tls = true;
        ep->port = 443;
        p = url + 8;
    } else if (strncmp(url, "http://", 7) == 0) {
        ep->port = 80;
        p = url + 7;
    } else {
        snprintf(err, errlen, "url \"%s\": scheme must be https:// or http://", url);
        return MD_ERROR;
    }
    const char *hs = p, *he, *rest;
    if (*p == '[') {
        hs = p + 1;
        he = strchr(hs, ']');
        if (he == NULL) {
            snprintf(err, errlen, "url \"%s\": unterminated [IPv6]", url);
            return MD_ERROR;
        }
        rest = he + 1;
    } else {
        he = p + strcspn(p, ":/?#");
        rest = he;
    }
    if (he == hs || (size_t)(he - hs) > 253) {
        snprintf(err, errlen, "url \"%s\": bad host", url);
        return MD_ERROR;
    }
    ep->host = md_xstrndup(hs, (size_t)(he - hs));
    for (char *s = ep->host; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (!(ch == '.' || ch == '-' || ch == ':' || ch == '_' || (ch >= '0' && ch <= '9') ||
              (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z'))) {
            snprintf(err, errlen, "url \"%s\": bad host", url);
            return MD_ERROR;
        }
    }
    md_dns_addr_t a;
    ep->host_is_ip = md_dns_parse_ip(ep->host, &a);
    if (*p == '[' && (!ep->host_is_ip || a.family != AF_INET6)) {
        snprintf(err, errlen, "url \"%s\": bad IPv6 literal", url);
        return MD_ERROR;
    }
    if (*p != '[' && strchr(ep->host, ':')) {
        snprintf(err, errlen, "url \"%s\": an IPv6 literal needs brackets", url);
        return MD_ERROR;
    }
    bool explicit_port = false;
    if (*rest == ':') {
        char *end;
        errno = 0;
        long port = strtol(rest + 1, &end, 10);
        if (rest[1] < '0' || rest[1] > '9' || errno || port < 1 || port > 65535) {
            snprintf(err, errlen, "url \"%s\": bad port", url);
            return MD_ERROR;
        }
        ep->port = (int)port;
        explicit_port = true;
        rest = end;
    }
    if (*rest != '\0' && strcmp(rest, "/") != 0) {
        snprintf(err, errlen, "url \"%s\": no path, query or fragment allowed", url);
        return MD_ERROR;
    }
    bool default_port = ep->port == (ep->tls ? 443 : 80);
    char hp[300];
    if (ep->host_is_ip && a.family == AF_INET6)
        snprintf(hp, sizeof(hp), "[%s]", ep->host);
    else
        md_strlcpy(hp, ep->host, sizeof(hp));
    if (explicit_port && !default_port) {
        size_t l = strlen(hp);
        snprintf(hp + l, sizeof(hp) - l, ":%d", ep->port);
    }
    ep->hostport = md_xstrdup(hp);
    return MD_OK;
}

static int
md_ep_tls_init(md_http_endpoint_t *ep, const md_http_endpoint_conf_t *conf, char *err,
               size_t errlen)
{
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) {
        snprintf(err, errlen, "SSL_CTX_new failed");
        return MD_ERROR;
    }
    ep->ssl_ctx = ctx;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, md_hc_new_session_cb);
    if (conf->ca_file && conf->ca_file[0]) {
        if (SSL_CTX_load_verify_locations(ctx, conf->ca_file, NULL) != 1) {
            char eb[200];
            ERR_error_string_n(ERR_peek_last_error(), eb, sizeof(eb));
            ERR_clear_error();
            snprintf(err, errlen, "ca_file \"%s\": %s", conf->ca_file, eb);
            return MD_ERROR;
        }
    } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
        ERR_clear_error();
        snprintf(err, errlen, "cannot load the system's CA certificates");
        return MD_ERROR;
    }
    SSL_CTX_set_verify(ctx, ep->verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
    return MD_OK;
}

md_http_endpoint_t *
md_http_client_endpoint(md_http_client_t *c, const md_http_endpoint_conf_t *conf, char *err,
                        size_t errlen)
{
    if (conf == NULL || conf->url == NULL) {
        snprintf(err, errlen, "endpoint needs a url");
        return NULL;
    }
    md_http_endpoint_t *ep = md_xcalloc(1, sizeof(*ep));
    ep->client = c;
    ep->url = md_xstrdup(conf->url);
    ep->name = md_xstrdup(conf->name ? conf->name : conf->url);
    ep->verify = !conf->tls_verify_off;
    ep->max_connections = conf->max_connections ? conf->max_connections : 8;
    ep->max_waiting = conf->max_waiting ? conf->max_waiting : 1024;
    ep->connect_timeout = conf->connect_timeout > 0 ? conf->connect_timeout : 5.;
    ep->handshake_timeout = conf->handshake_timeout > 0 ? conf->handshake_timeout : 5.;
    ep->response_timeout = conf->response_timeout > 0 ? conf->response_timeout : 30.;
    ep->wait_timeout = conf->wait_timeout > 0 ? conf->wait_timeout : 15.;
    ep->idle_timeout = conf->idle_timeout > 0 ? conf->idle_timeout : 30.;
    ep->max_response_size = conf->max_response_size ? conf->max_response_size : 4 << 20;
    md_list_init(&ep->conns);
    md_list_init(&ep->idle);
    md_list_init(&ep->waiting);
    md_list_init(&ep->node);
    if (md_ep_parse_url(ep, conf->url, err, errlen) != MD_OK ||
        (ep->tls && md_ep_tls_init(ep, conf, err, errlen) != MD_OK)) {
        md_ep_free(ep);
        return NULL;
    }
    if (ep->tls && !ep->verify)
        md_logf(MD_LOG_WARN, 0, MD_LOG_FIELDS(MD_LS("endpoint", ep->name), MD_LS("url", ep->url)),
                "TLS verification is OFF for %s (tls_verify off): its certificate and name are "
                "not checked",
                ep->name);
    md_list_insert_tail(&c->endpoints, &ep->node);
    return ep;
}

static bool
md_hc_method_idempotent(const char *m)
{
    return strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0 || strcmp(m, "OPTIONS") == 0 ||
           strcmp(m, "PUT") == 0 || strcmp(m, "DELETE") == 0;
}

int
md_http_client_send(md_http_endpoint_t *ep, const md_http_client_request_t *rq,
                    md_http_client_cb cb, void *ctx, md_http_client_req_t **req)
{
    if (req)
        *req = NULL;
    if (ep == NULL || rq == NULL || cb == NULL || !md_hc_is_token(rq->method) || rq->path == NULL ||
        rq->path[0] != '/' || (rq->nheaders && rq->headers == NULL) ||
        (rq->body_len && rq->body == NULL) || (rq->body_buf && rq->body_len))
        return MD_ERROR;
    for (const char *s = rq->path; *s; s++)
        if ((unsigned char)*s <= ' ' || *s == 0x7f)
            return MD_ERROR;
    bool has_ua = false;
    for (size_t i = 0; i < rq->nheaders; i++) {
        const char *n = rq->headers[i].name, *v = rq->headers[i].value;
        if (!md_hc_is_token(n) || v == NULL || strpbrk(v, "\r\n") != NULL)
            return MD_ERROR;
        if (strcasecmp(n, "host") == 0 || strcasecmp(n, "content-length") == 0 ||
            strcasecmp(n, "transfer-encoding") == 0 || strcasecmp(n, "connection") == 0)
            return MD_ERROR;
        if (strcasecmp(n, "user-agent") == 0)
            has_ua = true;
    }
    if (ep->client->destroying || ep->nwaiting >= ep->max_waiting)
        return MD_AGAIN;

    md_http_client_req_t *q = md_xcalloc(1, sizeof(*q));
    q->ep = ep;
    q->cb = cb;
    q->ctx = ctx;
    q->start = ev_now(ep->client->loop);
    q->response_timeout = rq->timeout > 0 ? rq->timeout : ep->response_timeout;
    q->idempotent = rq->idempotent || md_hc_method_idempotent(rq->method);
    q->head = strcmp(rq->method, "HEAD") == 0;
    md_list_init(&q->node);
    ev_timer_init(&q->timer, md_hc_req_timer_cb, 1., 0.);
    q->timer.data = q;

    size_t blen = rq->body_buf ? md_buf_len(rq->body_buf) : rq->body_len;
    md_buf_printf(&q->out, "%s %s HTTP/1.1\r\nHost: %s\r\n", rq->method, rq->path, ep->hostport);
    if (!has_ua)
        md_buf_append_str(&q->out, "User-Agent: mailerd/" MD_VERSION "\r\n");
    for (size_t i = 0; i < rq->nheaders; i++)
        md_buf_printf(&q->out, "%s: %s\r\n", rq->headers[i].name, rq->headers[i].value);
    if (blen > 0 || strcmp(rq->method, "POST") == 0 || strcmp(rq->method, "PUT") == 0 ||
        strcmp(rq->method, "PATCH") == 0)
        md_buf_printf(&q->out, "Content-Length: %zu\r\n", blen);
    md_buf_append_str(&q->out, "\r\n");
    if (rq->body_buf) {
        if (blen <= MD_HC_INLINE_BODY) {
            md_buf_append(&q->out, rq->body_buf->pos, blen);
            md_buf_reset(rq->body_buf);
        } else {
            q->body = *rq->body_buf; /* moved: no copy of a large body */
            md_buf_init(rq->body_buf);
        }
    } else if (blen <= MD_HC_INLINE_BODY) {
        md_buf_append(&q->out, rq->body, blen);
    } else {
        md_buf_append(&q->body, rq->body, blen);
    }

    md_hc_wait(q, false);
    if (req)
        *req = q;
    md_ep_schedule(ep);
    return MD_OK;
}

void
md_http_client_cancel(md_http_client_req_t *q)
{
    if (q == NULL)
        return;
    md_http_endpoint_t *ep = q->ep;
    md_hc_conn_t *cn = q->conn;
    if (cn == NULL) {
        md_hc_unwait(q);
    } else {
        cn->req = NULL;
        q->conn = NULL;
        if (!cn->write_started && !q->got_bytes) {
            /* Nothing went out: the connection is as good as before. */
            md_hc_conn_to_idle(cn);
        } else {
            md_hc_conn_close(cn);
        }
    }
    md_ep_schedule(ep);
    md_hc_req_fail(q, md_http_client_err_canceled, "canceled by its owner");
}

bool
md_http_client_on_wire(const md_http_client_req_t *q)
{
    return q != NULL && (q->sent_any || (q->conn != NULL && q->conn->write_started));
}

const char *
md_http_client_header(const md_http_client_response_t *resp, const char *name)
{
    for (size_t i = 0; i < resp->nheaders; i++)
        if (strcasecmp(resp->headers[i].name, name) == 0)
            return resp->headers[i].value;
    return NULL;
}

void
md_http_endpoint_stats(const md_http_endpoint_t *ep, md_http_endpoint_stats_t *s)
{
    *s = ep->stats;
    s->connections = ep->nconns;
    s->idle = ep->nidle;
    s->active = ep->nactive;
    s->waiting = ep->nwaiting;
}
