/*
 * md_dns and md_http_client against real servers started by this test:
 *
 *  - a UDP DNS responder on 127.0.0.1 (forked): api/multi.mailerd.test answer A
 *    127.0.0.1 (TTL 60), short.mailerd.test with TTL 1, slow.mailerd.test never
 *    answers, anything else is NXDOMAIN; it counts the queries per name;
 *  - HTTP/1.1 servers (forked, blocking OpenSSL, one process per connection):
 *    plain, TLS with a certificate for api.mailerd.test/localhost/127.0.0.1 from a
 *    test CA, TLS with a certificate for another name from the same CA, and TLS
 *    with a certificate from a CA the client does not trust. The certificates
 *    are made here with the openssl CLI in a temporary directory. Each server
 *    counts connections, TLS resumptions and requests in shared memory, and
 *    behaves by path (/echo, /chunked, /eof, /hang, /idle-close, /drop-second,
 *    /big, /head).
 *
 * Everything on the client side runs on one ev loop; run_until() turns it until
 * a condition holds or a deadline passes. Every forked process dies with us
 * (PR_SET_PDEATHSIG) and is killed at the end.
 */
#include "md_core.h"
#include "md_buf.h"
#include "md_client.h"
#include "md_dns.h"
#include "md_log.h"
#include "tap.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdarg.h>
#include <ev.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static struct ev_loop *loop;
static char tmpdir[64];
static bool in_call;
static int early_callbacks;

/* ---- shared counters --------------------------------------------------------- */

typedef struct srv_stats_s {
    int conns;    /* accepted (and, for TLS, handshake done) */
    int resumed;  /* TLS sessions resumed */
    int requests; /* requests read in full */
    int posts;
} srv_stats_t;

typedef struct dns_stats_s {
    int api, shortq, slow, nx, total;
} dns_stats_t;

typedef struct shared_s {
    srv_stats_t srv[4];
    dns_stats_t dns;
} shared_t;

static shared_t *sh;
enum { S_PLAIN = 0, S_GOOD, S_WRONG, S_UNKNOWN };
static int srv_port[4];
static pid_t srv_pid[4];
static int dns_port;
static pid_t dns_pid;

static int
get(const int *p)
{
    return __atomic_load_n(p, __ATOMIC_SEQ_CST);
}

static void
inc(int *p)
{
    __atomic_fetch_add(p, 1, __ATOMIC_SEQ_CST);
}

/* ---- certificates -------------------------------------------------------------- */

static int sh_run(const char *fmt, ...) md_printf_like(1, 2);

static int
sh_run(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    return system(cmd);
}

/* A CA (ca, ca2) and three leaf certificates: good (the names we connect to),
 * wrong (another name, same CA), unknown (the good names, from ca2). */
static bool
make_certs(void)
{
    const char *key = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
    int rc = 0;
    rc |= sh_run("cd %s && openssl req -x509 %s -keyout ca.key -out ca.crt -subj '/CN=mailerd "
                 "test CA' -days 2 >/dev/null 2>&1",
                 tmpdir, key);
    rc |= sh_run("cd %s && openssl req -x509 %s -keyout ca2.key -out ca2.crt -subj '/CN=mailerd "
                 "unknown CA' -days 2 >/dev/null 2>&1",
                 tmpdir, key);
    const char *leaf[3][3] = {
        {"good", "ca", "DNS:api.mailerd.test,DNS:multi.mailerd.test,DNS:localhost,IP:127.0.0.1"},
        {"wrong", "ca", "DNS:wrong.example.org"},
        {"unknown", "ca2", "DNS:api.mailerd.test,DNS:localhost,IP:127.0.0.1"},
    };
    for (int i = 0; i < 3; i++) {
        rc |= sh_run("cd %s && printf 'subjectAltName=%s\\n' > %s.ext && openssl req %s -keyout "
                     "%s.key -out %s.csr -subj '/CN=%s' >/dev/null 2>&1 && openssl x509 -req -in "
                     "%s.csr -CA %s.crt -CAkey %s.key -CAcreateserial -out %s.crt -days 2 "
                     "-extfile %s.ext >/dev/null 2>&1",
                     tmpdir, leaf[i][2], leaf[i][0], key, leaf[i][0], leaf[i][0], leaf[i][0],
                     leaf[i][0], leaf[i][1], leaf[i][1], leaf[i][0], leaf[i][0]);
    }
    return rc == 0;
}

/* ---- the test HTTP server (children, blocking) --------------------------------- */

typedef struct sconn_s {
    int fd;
    SSL *ssl;
} sconn_t;

static ssize_t
s_read(sconn_t *c, char *buf, size_t len, int timeout_ms)
{
    if (!(c->ssl && SSL_pending(c->ssl) > 0)) {
        struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
        int r = poll(&pfd, 1, timeout_ms);
        if (r <= 0)
            return -2; /* idle timeout */
    }
    if (c->ssl) {
        int n = SSL_read(c->ssl, buf, (int)len);
        return n > 0 ? n : 0;
    }
    ssize_t n = read(c->fd, buf, len);
    return n > 0 ? n : 0;
}

static void
s_write(sconn_t *c, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = c->ssl ? SSL_write(c->ssl, p, (int)len) : write(c->fd, p, len);
        if (n <= 0)
            _exit(0);
        p += n;
        len -= (size_t)n;
    }
}

static void
s_close(sconn_t *c, bool clean)
{
    if (c->ssl && clean)
        SSL_shutdown(c->ssl);
    close(c->fd);
    _exit(0);
}

static void
s_respond(sconn_t *c, int status, const char *extra, const char *body, size_t blen, int connno,
          int served)
{
    char head[512];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d X\r\nContent-Length: %zu\r\nX-Conn: %d\r\nX-Served: %d\r\n%s\r\n",
                     status, blen, connno, served, extra ? extra : "");
    s_write(c, head, (size_t)n);
    if (blen)
        s_write(c, body, blen);
}

static void
serve_conn(int fd, SSL_CTX *ctx, srv_stats_t *st, int connno)
{
    sconn_t c = {.fd = fd, .ssl = NULL};
    if (ctx) {
        c.ssl = SSL_new(ctx);
        SSL_set_fd(c.ssl, fd);
        if (SSL_accept(c.ssl) != 1)
            s_close(&c, false);
        if (SSL_session_reused(c.ssl))
            inc(&st->resumed);
    }
    inc(&st->conns);
    static char buf[1 << 20];
    size_t have = 0;
    int idle_ms = 10000, served = 0;
    for (;;) {
        char *end;
        while ((end = memmem(buf, have, "\r\n\r\n", 4)) == NULL) {
            ssize_t n = s_read(&c, buf + have, sizeof(buf) - have - 1, idle_ms);
            if (n == -2)
                s_close(&c, true); /* our keep-alive timeout */
            if (n <= 0)
                s_close(&c, false);
            have += (size_t)n;
        }
        size_t hlen = (size_t)(end - buf) + 4;
        buf[hlen - 1] = '\0';
        char method[16], path[256];
        if (sscanf(buf, "%15s %255s", method, path) != 2)
            s_close(&c, false);
        size_t clen = 0;
        const char *cl = strcasestr(buf, "\r\ncontent-length:");
        if (cl)
            clen = strtoul(cl + 17, NULL, 10);
        while (have < hlen + clen) {
            ssize_t n = s_read(&c, buf + have, sizeof(buf) - have - 1, 10000);
            if (n <= 0)
                s_close(&c, false);
            have += (size_t)n;
        }
        char *body = buf + hlen;
        inc(&st->requests);
        if (strcmp(method, "POST") == 0)
            inc(&st->posts);

        if (strcmp(path, "/drop-second") == 0 && served > 0)
            s_close(&c, false); /* as a server whose keep-alive timer just fired */
        if (strcmp(path, "/hang") == 0) {
            while (s_read(&c, buf, sizeof(buf) - 1, 60000) > 0)
                ;
            s_close(&c, false);
        }
        served++;
        if (strcmp(path, "/chunked") == 0) {
            const char *r =
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Kind: chunked\r\n\r\n"
                "6\r\nhello \r\n8\r\nchunked \r\n5\r\nworld\r\n0\r\n\r\n";
            s_write(&c, r, strlen(r));
        } else if (strcmp(path, "/eof") == 0) {
            const char *r = "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nbody until eof";
            s_write(&c, r, strlen(r));
            s_close(&c, true);
        } else if (strcmp(path, "/head") == 0) {
            const char *r = "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n";
            s_write(&c, r, strlen(r));
        } else if (strcmp(path, "/big") == 0) {
            static char big[300000];
            for (size_t i = 0; i < sizeof(big); i++)
                big[i] = (char)('a' + i % 26);
            s_respond(&c, 200, NULL, big, sizeof(big), connno, served);
        } else if (strncmp(path, "/status/", 8) == 0) {
            s_respond(&c, atoi(path + 8), "Retry-After: 7\r\n", "x", 1, connno, served);
        } else {
            if (strcmp(path, "/idle-close") == 0)
                idle_ms = 100;
            if (clen > 0) {
                s_respond(&c, 200, NULL, body, clen, connno, served);
            } else {
                char txt[300];
                int n = snprintf(txt, sizeof(txt), "%s %s", method, path);
                s_respond(&c, 200, NULL, txt, (size_t)n, connno, served);
            }
        }
        memmove(buf, buf + hlen + clen, have - hlen - clen);
        have -= hlen + clen;
    }
}

static int
listen_any(int type)
{
    int fd = socket(AF_INET, type, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        return -1;
    if (type == SOCK_STREAM)
        listen(fd, 64);
    return fd;
}

static int
local_port(int fd)
{
    struct sockaddr_in sa;
    socklen_t l = sizeof(sa);
    getsockname(fd, (struct sockaddr *)&sa, &l);
    return ntohs(sa.sin_port);
}

static pid_t
start_http(int which, const char *cert)
{
    int lfd = listen_any(SOCK_STREAM);
    srv_port[which] = local_port(lfd);
    pid_t pid = fork();
    if (pid != 0) {
        close(lfd);
        return pid;
    }
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    signal(SIGCHLD, SIG_IGN);
    SSL_CTX *ctx = NULL;
    if (cert) {
        char crt[128], key[128];
        snprintf(crt, sizeof(crt), "%s/%s.crt", tmpdir, cert);
        snprintf(key, sizeof(key), "%s/%s.key", tmpdir, cert);
        ctx = SSL_CTX_new(TLS_server_method());
        if (SSL_CTX_use_certificate_file(ctx, crt, SSL_FILETYPE_PEM) != 1 ||
            SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)
            _exit(1);
    }
    for (int connno = 1;; connno++) {
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0)
            continue;
        if (fork() == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            close(lfd);
            serve_conn(fd, ctx, &sh->srv[which], connno);
            _exit(0);
        }
        close(fd);
    }
}

/* ---- the test DNS responder ------------------------------------------------------ */

static void
dns_serve(int fd)
{
    unsigned char q[512], r[600];
    for (;;) {
        struct sockaddr_storage from;
        socklen_t fl = sizeof(from);
        ssize_t n = recvfrom(fd, q, sizeof(q), 0, (struct sockaddr *)&from, &fl);
        if (n < 17)
            continue;
        char name[256];
        size_t o = 12, nl = 0;
        while (o < (size_t)n && q[o] != 0 && nl < 200) {
            size_t l = q[o++];
            if (nl)
                name[nl++] = '.';
            for (size_t i = 0; i < l && o < (size_t)n; i++)
                name[nl++] = (char)tolower(q[o++]);
        }
        name[nl] = '\0';
        o++; /* the root label */
        if (o + 4 > (size_t)n)
            continue;
        int qtype = (q[o] << 8) | q[o + 1];
        size_t qend = o + 4;
        inc(&sh->dns.total);
        unsigned ttl = 60;
        int rcode = 0;
        bool answer = false;
        if (strcmp(name, "api.mailerd.test") == 0 || strcmp(name, "multi.mailerd.test") == 0) {
            inc(&sh->dns.api);
            answer = true;
        } else if (strcmp(name, "short.mailerd.test") == 0) {
            inc(&sh->dns.shortq);
            answer = true;
            ttl = 1;
        } else if (strcmp(name, "slow.mailerd.test") == 0) {
            inc(&sh->dns.slow);
            continue; /* never answers */
        } else {
            inc(&sh->dns.nx);
            rcode = 3;
        }
        memcpy(r, q, qend);
        r[2] = 0x80 | (q[2] & 0x01); /* QR, RD copied */
        r[3] = (unsigned char)(0x80 | rcode);
        r[4] = 0, r[5] = 1; /* one question */
        r[8] = r[9] = 0;    /* NS */
        r[10] = r[11] = 0;  /* AR */
        size_t len = qend;
        int an = 0;
        bool v6 = strcmp(name, "multi.mailerd.test") == 0;
        if (answer && (qtype == 1 || (qtype == 28 && v6))) {
            unsigned char rr[] = {0xc0,
                                  0x0c,
                                  0,
                                  (unsigned char)qtype,
                                  0,
                                  1,
                                  (unsigned char)(ttl >> 24),
                                  (unsigned char)(ttl >> 16),
                                  (unsigned char)(ttl >> 8),
                                  (unsigned char)ttl,
                                  0,
                                  qtype == 1 ? 4 : 16};
            memcpy(r + len, rr, sizeof(rr));
            len += sizeof(rr);
            if (qtype == 1) {
                unsigned char a[4] = {127, 0, 0, 1};
                memcpy(r + len, a, 4);
                len += 4;
            } else {
                unsigned char a[16] = {0};
                a[15] = 1; /* ::1, where nothing listens: the client must go on to 127.0.0.1 */
                memcpy(r + len, a, 16);
                len += 16;
            }
            an = 1;
        }
        r[6] = 0, r[7] = (unsigned char)an;
        sendto(fd, r, len, 0, (struct sockaddr *)&from, fl);
    }
}

static pid_t
start_dns(void)
{
    int fd = listen_any(SOCK_DGRAM);
    dns_port = local_port(fd);
    pid_t pid = fork();
    if (pid != 0) {
        close(fd);
        return pid;
    }
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    dns_serve(fd);
    _exit(0);
}

/* ---- loop helpers ------------------------------------------------------------------ */

static void
tick_cb(struct ev_loop *l, ev_timer *w, int revents)
{
    md_unused(l);
    md_unused(w);
    md_unused(revents);
}

typedef bool (*cond_fn)(void *arg);

static bool
run_until(cond_fn cond, void *arg, double timeout)
{
    double deadline = ev_time() + timeout;
    while (!cond(arg)) {
        if (ev_time() > deadline)
            return cond(arg);
        ev_run(loop, EVRUN_ONCE);
    }
    return true;
}

static void
run_for(double seconds)
{
    double deadline = ev_time() + seconds;
    while (ev_time() < deadline)
        ev_run(loop, EVRUN_ONCE);
}

/* ---- DNS results --------------------------------------------------------------------- */

typedef struct dres_s {
    int calls;
    const char *error;
    size_t naddrs;
    md_dns_addr_t addrs[MD_DNS_MAX_ADDRS];
    bool cached;
    double t0, t1;
} dres_t;

static void
dns_cb(void *ctx, const md_dns_result_t *res)
{
    dres_t *d = ctx;
    if (in_call)
        early_callbacks++;
    d->calls++;
    d->error = res->error;
    d->naddrs = res->naddrs;
    memcpy(d->addrs, res->addrs, sizeof(d->addrs));
    d->cached = res->cached;
    d->t1 = ev_time();
}

static bool
dres_done(void *arg)
{
    return ((dres_t *)arg)->calls > 0;
}

static int
resolve(md_dns_t *dns, const char *host, int family, dres_t *d, md_dns_req_t **req)
{
    memset(d, 0, sizeof(*d));
    d->t0 = ev_time();
    in_call = true;
    int rc = md_dns_resolve(dns, host, family, dns_cb, d, req);
    in_call = false;
    return rc;
}

static bool
is_loopback4(const dres_t *d)
{
    for (size_t i = 0; i < d->naddrs; i++)
        if (d->addrs[i].family == AF_INET && ntohl(d->addrs[i].a.v4.s_addr) == 0x7f000001)
            return true;
    return false;
}

/* ---- HTTP results --------------------------------------------------------------------- */

typedef struct hres_s {
    int calls;
    const char *error;
    char detail[256];
    int status;
    char *body;
    size_t body_len;
    int conn; /* X-Conn */
    char kind[32];
    char retry_after[16];
    bool sent, reused, resumed;
    unsigned retries;
    double elapsed;
} hres_t;

static void
http_cb(void *ctx, const md_http_client_response_t *r)
{
    hres_t *h = ctx;
    if (in_call)
        early_callbacks++;
    h->calls++;
    h->error = r->error;
    snprintf(h->detail, sizeof(h->detail), "%s", r->detail);
    h->status = r->status;
    free(h->body);
    h->body = malloc(r->body.len + 1);
    memcpy(h->body, r->body.data, r->body.len);
    h->body[r->body.len] = '\0';
    h->body_len = r->body.len;
    const char *v = md_http_client_header(r, "x-conn");
    h->conn = v ? atoi(v) : 0;
    v = md_http_client_header(r, "X-Kind");
    snprintf(h->kind, sizeof(h->kind), "%s", v ? v : "");
    v = md_http_client_header(r, "retry-after");
    snprintf(h->retry_after, sizeof(h->retry_after), "%s", v ? v : "");
    h->sent = r->request_sent;
    h->reused = r->reused;
    h->resumed = r->tls_resumed;
    h->retries = r->retries;
    h->elapsed = r->elapsed;
}

/* A callback that cancels another request (victim) from inside: re-entrancy. */
static md_http_client_req_t *victim;

static void
http_cb_cancel(void *ctx, const md_http_client_response_t *r)
{
    http_cb(ctx, r);
    if (victim) {
        md_http_client_req_t *v = victim;
        victim = NULL;
        md_http_client_cancel(v);
    }
}

static bool
hres_done(void *arg)
{
    return ((hres_t *)arg)->calls > 0;
}

typedef struct many_s {
    hres_t *r;
    int n;
} many_t;

static bool
all_done(void *arg)
{
    many_t *m = arg;
    for (int i = 0; i < m->n; i++)
        if (m->r[i].calls == 0)
            return false;
    return true;
}

static void
hreset(hres_t *h)
{
    free(h->body);
    memset(h, 0, sizeof(*h));
}

static int
send_req(md_http_endpoint_t *ep, const char *method, const char *path, const char *body, hres_t *h,
         md_http_client_req_t **handle)
{
    md_http_client_request_t rq = {.method = method, .path = path};
    if (body) {
        rq.body = body;
        rq.body_len = strlen(body);
    }
    hreset(h);
    in_call = true;
    int rc = md_http_client_send(ep, &rq, http_cb, h, handle);
    in_call = false;
    return rc;
}

/* Sends and waits; returns the status (0 on error). */
static int
fetch(md_http_endpoint_t *ep, const char *method, const char *path, const char *body, hres_t *h)
{
    if (send_req(ep, method, path, body, h, NULL) != MD_OK)
        return -1;
    run_until(hres_done, h, 10);
    return h->status;
}

static md_http_endpoint_t *
endpoint(md_http_client_t *c, const char *url, unsigned maxc, bool ca, const char *name)
{
    char ca_file[128], err[256];
    snprintf(ca_file, sizeof(ca_file), "%s/ca.crt", tmpdir);
    md_http_endpoint_conf_t conf = {.url = url,
                                    .name = name,
                                    .max_connections = maxc,
                                    .ca_file = ca ? ca_file : NULL,
                                    .connect_timeout = 1,
                                    .handshake_timeout = 2,
                                    .response_timeout = 5,
                                    .wait_timeout = 5};
    md_http_endpoint_t *ep = md_http_client_endpoint(c, &conf, err, sizeof(err));
    if (ep == NULL)
        printf("# endpoint %s: %s\n", url, err);
    return ep;
}

static bool
stats_idle(void *arg)
{
    md_http_endpoint_stats_t st;
    md_http_endpoint_stats((md_http_endpoint_t *)arg, &st);
    return st.connections == 0;
}

/* ---- tests ----------------------------------------------------------------------------- */

static void
test_dns(md_dns_t *dns)
{
    dres_t d, d2;
    md_dns_stats_t st;
    md_dns_req_t *rq;

    /* IP literals: no query, and still not answered inside the call. */
    int q0 = get(&sh->dns.total);
    is_int(resolve(dns, "127.0.0.1", AF_UNSPEC, &d, NULL), MD_OK, "dns: IP literal accepted");
    ok(d.calls == 0, "dns: IP literal not answered inside md_dns_resolve");
    run_until(dres_done, &d, 2);
    ok(d.error == NULL && d.naddrs == 1 && d.cached && is_loopback4(&d), "dns: IP literal answer");
    resolve(dns, "::1", AF_UNSPEC, &d, NULL);
    run_until(dres_done, &d, 2);
    ok(d.error == NULL && d.naddrs == 1 && d.addrs[0].family == AF_INET6, "dns: IPv6 literal");
    resolve(dns, "::1", AF_INET, &d, NULL);
    run_until(dres_done, &d, 2);
    ok(d.error == md_dns_err_not_found, "dns: IPv6 literal asked as AF_INET is not_found");
    is_int(get(&sh->dns.total), q0, "dns: no query sent for literals");

    is_int(md_dns_resolve(dns, "", AF_UNSPEC, dns_cb, &d, NULL), MD_ERROR,
           "dns: empty name refused");
    is_int(md_dns_resolve(dns, "a b", AF_UNSPEC, dns_cb, &d, NULL), MD_ERROR,
           "dns: name with a space refused");

    /* A name through the responder; a second lookup at the same time shares it. */
    is_int(resolve(dns, "api.mailerd.test", AF_INET, &d, NULL), MD_OK, "dns: lookup accepted");
    resolve(dns, "API.mailerd.test", AF_INET, &d2, NULL);
    ok(d.calls == 0 && d2.calls == 0, "dns: not answered inside the call");
    run_until(dres_done, &d, 5);
    run_until(dres_done, &d2, 5);
    ok(d.error == NULL && is_loopback4(&d) && !d.cached, "dns: api.mailerd.test -> 127.0.0.1");
    ok(d2.error == NULL && is_loopback4(&d2), "dns: concurrent lookup answered too");
    is_int(get(&sh->dns.api), 1, "dns: concurrent lookups of one name share one query");

    resolve(dns, "api.mailerd.test", AF_INET, &d, NULL);
    ok(d.calls == 0, "dns: cache hit not answered inside the call");
    run_until(dres_done, &d, 2);
    ok(d.error == NULL && d.cached && is_loopback4(&d), "dns: second lookup from the cache");
    is_int(get(&sh->dns.api), 1, "dns: no query for a cached name");
    md_dns_stats(dns, &st);
    ok(st.cache_hits >= 1 && st.cached >= 1, "dns: stats count the cache hit");

    resolve(dns, "nx.mailerd.test", AF_INET, &d, NULL);
    run_until(dres_done, &d, 5);
    ok(d.error == md_dns_err_not_found, "dns: NXDOMAIN -> not_found (%s)",
       d.error ? d.error : "ok");

    /* The hard deadline (0.5 s here) holds against a server that never answers. */
    resolve(dns, "slow.mailerd.test", AF_INET, &d, NULL);
    run_until(dres_done, &d, 5);
    ok(d.error == md_dns_err_timeout, "dns: silent server -> timeout (%s)",
       d.error ? d.error : "ok");
    ok(d.t1 - d.t0 >= 0.45 && d.t1 - d.t0 < 1.5, "dns: timeout after ~0.5 s (%.2f s)", d.t1 - d.t0);
    ok(get(&sh->dns.slow) >= 1, "dns: the slow name was asked");

    /* Cancel: the callback never runs. */
    resolve(dns, "short.mailerd.test", AF_INET, &d, &rq);
    md_dns_cancel(rq);
    run_for(0.2);
    is_int(d.calls, 0, "dns: a canceled lookup's callback does not run");

    /* TTL: a 1 s answer is asked again after it expires. */
    int before = get(&sh->dns.shortq);
    resolve(dns, "short.mailerd.test", AF_INET, &d, NULL);
    run_until(dres_done, &d, 5);
    resolve(dns, "short.mailerd.test", AF_INET, &d, NULL);
    run_until(dres_done, &d, 5);
    ok(d.cached, "dns: TTL 1 answer cached at first");
    int mid = get(&sh->dns.shortq);
    run_for(1.1);
    resolve(dns, "short.mailerd.test", AF_INET, &d, NULL);
    run_until(dres_done, &d, 5);
    ok(d.error == NULL && !d.cached && get(&sh->dns.shortq) > mid,
       "dns: asked again after the TTL passed (%d -> %d -> %d queries)", before, mid,
       get(&sh->dns.shortq));

    /* Destroy with a lookup outstanding: its callback runs with canceled. */
    char err[200];
    md_dns_conf_t conf = {.timeout = 5};
    char servers[64];
    snprintf(servers, sizeof(servers), "127.0.0.1:%d", dns_port);
    conf.servers = servers;
    md_dns_t *d3 = md_dns_create(loop, &conf, err, sizeof(err));
    resolve(d3, "slow.mailerd.test", AF_INET, &d, NULL);
    resolve(d3, "127.0.0.1", AF_INET, &d2, NULL);
    run_for(0.05);
    md_dns_destroy(d3);
    ok(d.calls == 1 && d.error == md_dns_err_canceled, "dns: destroy cancels a pending lookup");
    ok(d2.calls == 1, "dns: destroy ran every callback once");
    conf.servers = "not-an-address";
    ok(md_dns_create(loop, &conf, err, sizeof(err)) == NULL, "dns: bad servers refused (%s)", err);
}

static void
test_plain(md_http_client_t *c)
{
    char url[64];
    hres_t h = {0};
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", srv_port[S_PLAIN]);
    md_http_endpoint_t *ep = endpoint(c, url, 2, false, "plain");

    is_int(fetch(ep, "GET", "/echo", NULL, &h), 200, "http: GET");
    is_str(h.body, "GET /echo", "http: GET body");
    ok(!h.reused && h.sent, "http: first request on a new connection");
    is_int(fetch(ep, "POST", "/echo", "{\"to\":\"a@b.c\"}", &h), 200, "http: POST");
    is_str(h.body, "{\"to\":\"a@b.c\"}", "http: POST body echoed");
    ok(h.reused, "http: second request reused the connection");

    /* A large body moved in from an md_buf_t (sent after the head). */
    md_buf_t b;
    md_buf_init(&b);
    for (int i = 0; i < 20000; i++)
        md_buf_printf(&b, "%04d|", i % 10000);
    size_t blen = md_buf_len(&b);
    char *copy = md_xstrndup(b.pos, blen);
    md_http_client_request_t rq = {.method = "POST", .path = "/echo", .body_buf = &b};
    hreset(&h);
    is_int(md_http_client_send(ep, &rq, http_cb, &h, NULL), MD_OK, "http: POST md_buf body");
    is_int(md_buf_len(&b), 0, "http: the body buffer was moved out");
    run_until(hres_done, &h, 10);
    ok(h.status == 200 && h.body_len == blen && memcmp(h.body, copy, blen) == 0,
       "http: %zu-byte body sent and echoed intact", blen);
    free(copy);
    md_buf_free(&b);

    is_int(fetch(ep, "GET", "/chunked", NULL, &h), 200, "http: chunked response");
    is_str(h.body, "hello chunked world", "http: chunked body joined");
    is_str(h.kind, "chunked", "http: response header read");
    is_int(fetch(ep, "GET", "/big", NULL, &h), 200, "http: 300 kB response");
    ok(h.body_len == 300000 && h.body[0] == 'a' && h.body[299999] == 'a' + 299999 % 26,
       "http: large body intact across reads");
    is_int(fetch(ep, "HEAD", "/head", NULL, &h), 200, "http: HEAD");
    ok(h.body_len == 0, "http: HEAD has no body despite Content-Length");
    is_int(fetch(ep, "GET", "/echo", NULL, &h), 200, "http: request after HEAD on the connection");
    is_int(fetch(ep, "GET", "/status/429", NULL, &h), 429,
           "http: a 429 is a response, not an error");
    is_str(h.retry_after, "7", "http: Retry-After readable");
    is_int(fetch(ep, "GET", "/eof", NULL, &h), 200, "http: body delimited by EOF");
    is_str(h.body, "body until eof", "http: EOF-delimited body");

    /* Bad input is refused without a callback. */
    md_http_client_header_t bad[] = {{"X-A", "v\r\nInjected: 1"}};
    md_http_client_request_t brq = {.method = "GET", .path = "/x", .headers = bad, .nheaders = 1};
    is_int(md_http_client_send(ep, &brq, http_cb, &h, NULL), MD_ERROR,
           "http: CRLF in a header refused");
    md_http_client_header_t host[] = {{"Host", "evil"}};
    brq.headers = host;
    is_int(md_http_client_send(ep, &brq, http_cb, &h, NULL), MD_ERROR, "http: caller Host refused");
    brq.nheaders = 0;
    brq.path = "/a b";
    is_int(md_http_client_send(ep, &brq, http_cb, &h, NULL), MD_ERROR,
           "http: space in path refused");

    /* Pool: 20 requests at once over at most 2 connections. */
    int conns0 = get(&sh->srv[S_PLAIN].conns);
    hres_t many[20];
    memset(many, 0, sizeof(many));
    for (int i = 0; i < 20; i++) {
        md_http_client_request_t r = {.method = "GET", .path = "/echo"};
        md_http_client_send(ep, &r, http_cb, &many[i], NULL);
    }
    md_http_endpoint_stats_t st;
    md_http_endpoint_stats(ep, &st);
    ok(st.connections <= 2, "http: no more than max_connections open (%u)", st.connections);
    many_t m = {many, 20};
    ok(run_until(all_done, &m, 10), "http: 20 concurrent requests done");
    int ok200 = 0;
    for (int i = 0; i < 20; i++) {
        ok200 += many[i].status == 200;
        free(many[i].body);
    }
    is_int(ok200, 20, "http: all 200");
    ok(get(&sh->srv[S_PLAIN].conns) - conns0 <= 2, "http: server saw <= 2 new connections (%d)",
       get(&sh->srv[S_PLAIN].conns) - conns0);
    free(h.body);
}

static void
test_tls(md_http_client_t *c)
{
    char url[96];
    hres_t h = {0};

    /* Name verified through DNS (c-ares -> the test responder) and SNI. */
    snprintf(url, sizeof(url), "https://api.mailerd.test:%d", srv_port[S_GOOD]);
    md_http_endpoint_t *ep = endpoint(c, url, 2, true, "good");
    ok(ep != NULL, "tls: endpoint with the test CA");
    is_int(fetch(ep, "GET", "/echo", NULL, &h), 200, "tls: GET over verified TLS (%s %s)",
           h.error ? h.error : "", h.detail);
    is_int(fetch(ep, "POST", "/echo", "payload", &h), 200, "tls: POST");
    is_str(h.body, "payload", "tls: POST body echoed");
    is_int(fetch(ep, "GET", "/chunked", NULL, &h), 200, "tls: chunked");
    is_str(h.body, "hello chunked world", "tls: chunked body");

    /* Keep-alive: 50 requests (10 at a time) over <= 2 TLS connections. */
    int conns0 = get(&sh->srv[S_GOOD].conns);
    int reqs0 = get(&sh->srv[S_GOOD].requests);
    hres_t many[10];
    memset(many, 0, sizeof(many));
    int okn = 0;
    for (int round = 0; round < 5; round++) {
        for (int i = 0; i < 10; i++) {
            md_http_client_request_t r = {
                .method = "POST", .path = "/echo", .body = "x", .body_len = 1};
            free(many[i].body);
            memset(&many[i], 0, sizeof(many[i]));
            md_http_client_send(ep, &r, http_cb, &many[i], NULL);
        }
        many_t m = {many, 10};
        run_until(all_done, &m, 10);
        for (int i = 0; i < 10; i++)
            okn += many[i].status == 200;
    }
    for (int i = 0; i < 10; i++)
        free(many[i].body);
    is_int(okn, 50, "tls: 50 keep-alive requests answered");
    is_int(get(&sh->srv[S_GOOD].requests) - reqs0, 50, "tls: server counted 50 requests");
    ok(get(&sh->srv[S_GOOD].conns) - conns0 <= 2,
       "tls: over <= max_connections (2) server-side connections (%d new)",
       get(&sh->srv[S_GOOD].conns) - conns0);
    md_http_endpoint_stats_t st;
    md_http_endpoint_stats(ep, &st);
    ok(st.connects <= 2, "tls: the endpoint opened <= 2 connections in all (%llu)",
       (unsigned long long)st.connects);

    /* Session resumption: drop the pool, the next connection resumes. */
    int res0 = get(&sh->srv[S_GOOD].resumed);
    md_http_client_close_idle(c);
    is_int(fetch(ep, "GET", "/echo", NULL, &h), 200, "tls: GET on a new connection");
    ok(h.resumed && !h.reused, "tls: the new connection resumed the cached session");
    ok(get(&sh->srv[S_GOOD].resumed) > res0, "tls: server saw a resumed session");

    /* IP literal: verified against the certificate's IP SAN, no SNI. */
    snprintf(url, sizeof(url), "https://127.0.0.1:%d", srv_port[S_GOOD]);
    md_http_endpoint_t *ip = endpoint(c, url, 1, true, "ip");
    is_int(fetch(ip, "GET", "/echo", NULL, &h), 200, "tls: IP literal verified by IP SAN (%s)",
           h.detail);

    /* Several addresses: ::1 refuses (or is absent), 127.0.0.1 answers. */
    snprintf(url, sizeof(url), "https://multi.mailerd.test:%d", srv_port[S_GOOD]);
    md_http_endpoint_t *multi = endpoint(c, url, 1, true, "multi");
    is_int(fetch(multi, "GET", "/echo", NULL, &h), 200,
           "tls: next address tried after a failed one (%s)", h.detail);

    /* Wrong name: fails the handshake, nothing sent. */
    int wreq0 = get(&sh->srv[S_WRONG].requests);
    snprintf(url, sizeof(url), "https://api.mailerd.test:%d", srv_port[S_WRONG]);
    md_http_endpoint_t *wrong = endpoint(c, url, 2, true, "wrong");
    fetch(wrong, "POST", "/echo", "secret", &h);
    ok(h.error == md_http_client_err_tls, "tls: wrong host -> tls error (%s)",
       h.error ? h.error : "ok");
    ok(strstr(h.detail, "hostname mismatch") != NULL, "tls: reason names the mismatch: %s",
       h.detail);
    ok(!h.sent, "tls: wrong host: request_sent false");
    is_int(get(&sh->srv[S_WRONG].requests) - wreq0, 0, "tls: wrong host: server got no request");

    /* Unknown CA. */
    int ureq0 = get(&sh->srv[S_UNKNOWN].requests);
    snprintf(url, sizeof(url), "https://api.mailerd.test:%d", srv_port[S_UNKNOWN]);
    md_http_endpoint_t *unk = endpoint(c, url, 2, true, "unknown");
    fetch(unk, "POST", "/echo", "secret", &h);
    ok(h.error == md_http_client_err_tls, "tls: unknown CA -> tls error (%s)",
       h.error ? h.error : "ok");
    ok(strstr(h.detail, "certificate verify failed") != NULL && strstr(h.detail, "issuer") != NULL,
       "tls: reason names the issuer problem: %s", h.detail);
    ok(!h.sent, "tls: unknown CA: request_sent false");
    is_int(get(&sh->srv[S_UNKNOWN].requests) - ureq0, 0, "tls: unknown CA: server got no request");

    /* Several requests waiting while the only connection fails: all fail fast. */
    hres_t w[4];
    memset(w, 0, sizeof(w));
    md_http_client_req_t *handles[4];
    for (int i = 0; i < 4; i++) {
        md_http_client_request_t r = {.method = "GET", .path = "/echo"};
        md_http_client_send(unk, &r, i == 0 ? http_cb_cancel : http_cb, &w[i], &handles[i]);
    }
    victim = handles[3]; /* the first callback cancels the last request */
    many_t m = {w, 4};
    ok(run_until(all_done, &m, 5), "tls: every waiting request answered");
    ok(w[0].error == md_http_client_err_tls && w[1].error == md_http_client_err_tls &&
           w[2].error == md_http_client_err_tls,
       "tls: each with the tls error");
    ok(w[3].error == md_http_client_err_canceled,
       "tls: a request canceled from another's callback gets canceled");
    run_for(0.05);
    int once = 0;
    for (int i = 0; i < 4; i++) {
        once += w[i].calls == 1;
        free(w[i].body);
    }
    is_int(once, 4, "tls: each callback ran once");
    md_http_endpoint_stats(unk, &st);
    ok(st.waiting == 0 && st.connections == 0, "tls: the endpoint's counts are back to zero");

    /* Verification off: explicit, works against the wrong name, and is logged. */
    char err[256];
    md_http_endpoint_conf_t off = {.url = url, .name = "insecure-test", .tls_verify_off = true};
    snprintf(url, sizeof(url), "https://api.mailerd.test:%d", srv_port[S_WRONG]);
    md_http_endpoint_t *insecure = md_http_client_endpoint(c, &off, err, sizeof(err));
    is_int(fetch(insecure, "GET", "/echo", NULL, &h), 200, "tls: tls_verify_off connects");
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "grep -q 'TLS verification is OFF for insecure-test' %s/client.log",
             tmpdir);
    ok(system(cmd) == 0, "tls: tls_verify_off logged a warning");

    md_http_endpoint_conf_t badca = {.url = url, .ca_file = "/nonexistent/ca.pem"};
    ok(md_http_client_endpoint(c, &badca, err, sizeof(err)) == NULL,
       "tls: unreadable ca_file refused at setup (%s)", err);
    md_http_endpoint_conf_t badurl = {.url = "ftp://x"};
    ok(md_http_client_endpoint(c, &badurl, err, sizeof(err)) == NULL, "tls: bad scheme refused");
    badurl.url = "https://host/path";
    ok(md_http_client_endpoint(c, &badurl, err, sizeof(err)) == NULL,
       "tls: url with a path refused");
    free(h.body);
}

static void
test_failures(md_http_client_t *c)
{
    char url[96];
    hres_t h = {0};

    /* Connect refused: a port that was just closed. */
    int fd = listen_any(SOCK_STREAM);
    int port = local_port(fd);
    close(fd);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", port);
    md_http_endpoint_t *refused = endpoint(c, url, 1, false, "refused");
    fetch(refused, "GET", "/", NULL, &h);
    ok(h.error == md_http_client_err_connect && !h.sent, "fail: connect refused -> connect (%s)",
       h.detail);

    /* DNS failure and DNS timeout through the client. */
    snprintf(url, sizeof(url), "https://nx.mailerd.test:%d", srv_port[S_GOOD]);
    fetch(endpoint(c, url, 1, true, "nx"), "GET", "/", NULL, &h);
    ok(h.error == md_http_client_err_dns && !h.sent, "fail: unknown name -> dns (%s)", h.detail);
    snprintf(url, sizeof(url), "https://slow.mailerd.test:%d", srv_port[S_GOOD]);
    fetch(endpoint(c, url, 1, true, "slow"), "GET", "/", NULL, &h);
    ok(h.error == md_http_client_err_dns && strstr(h.detail, "timeout"),
       "fail: lookup timeout -> dns (%s)", h.detail);

    /* Response timeout on a server that hangs. */
    snprintf(url, sizeof(url), "https://api.mailerd.test:%d", srv_port[S_GOOD]);
    md_http_endpoint_t *ep = endpoint(c, url, 1, true, "hang");
    md_http_client_request_t rq = {
        .method = "POST", .path = "/hang", .body = "x", .body_len = 1, .timeout = 0.4};
    hreset(&h);
    md_http_client_send(ep, &rq, http_cb, &h, NULL);
    run_until(hres_done, &h, 5);
    ok(h.error == md_http_client_err_timeout && h.sent,
       "fail: hanging server -> timeout, sent (%s)", h.detail);
    ok(h.elapsed >= 0.39 && h.elapsed < 1.5, "fail: after ~0.4 s (%.2f)", h.elapsed);
    is_int(fetch(ep, "GET", "/echo", NULL, &h), 200, "fail: the endpoint works after a timeout");

    /* The peer closes an idle pooled connection: seen while idle, next request fine. */
    int conns0 = get(&sh->srv[S_GOOD].conns);
    is_int(fetch(ep, "GET", "/idle-close", NULL, &h), 200, "idle: request on a pooled connection");
    ok(run_until(stats_idle, ep, 3), "idle: the peer's close was noticed while idle");
    md_http_endpoint_stats_t st;
    md_http_endpoint_stats(ep, &st);
    ok(st.stale >= 1, "idle: counted as stale (%llu)", (unsigned long long)st.stale);
    is_int(fetch(ep, "GET", "/echo", NULL, &h), 200, "idle: next request succeeds");
    ok(!h.reused && get(&sh->srv[S_GOOD].conns) > conns0, "idle: on a new connection");

    /* A reused connection dies under a GET before any response byte: resent once
     * on a fresh connection. */
    is_int(fetch(ep, "GET", "/drop-second", NULL, &h), 200,
           "retry: first request on the connection");
    int reqs0 = get(&sh->srv[S_GOOD].requests);
    is_int(fetch(ep, "GET", "/drop-second", NULL, &h), 200, "retry: GET resent after the drop (%s)",
           h.detail);
    ok(h.retries == 1 && !h.reused, "retry: once, on a fresh connection");
    is_int(get(&sh->srv[S_GOOD].requests) - reqs0, 2, "retry: the server saw it twice");

    /* The same for a POST that was written: not resent, reported as reset. */
    is_int(fetch(ep, "POST", "/echo", "first", &h), 200, "retry: POST on the connection");
    reqs0 = get(&sh->srv[S_GOOD].requests);
    fetch(ep, "POST", "/drop-second", "second", &h);
    ok(h.error == md_http_client_err_reset && h.sent && h.retries == 0,
       "retry: a written POST is not resent: reset, request_sent (%s)", h.detail);
    is_int(get(&sh->srv[S_GOOD].requests) - reqs0, 1, "retry: the server saw the POST once");

    /* ...unless the caller marks it idempotent. */
    is_int(fetch(ep, "POST", "/echo", "first", &h), 200, "retry: POST on the connection again");
    md_http_client_request_t idem = {
        .method = "POST", .path = "/drop-second", .body = "k", .body_len = 1, .idempotent = true};
    hreset(&h);
    md_http_client_send(ep, &idem, http_cb, &h, NULL);
    run_until(hres_done, &h, 5);
    ok(h.status == 200 && h.retries == 1, "retry: an idempotent POST is resent once");

    /* Cancel: a waiting request and an active one; each callback runs once. */
    md_http_client_req_t *hq, *wq;
    hres_t hang = {0}, waiting = {0};
    rq.timeout = 5;
    md_http_client_send(ep, &rq, http_cb, &hang, &hq);
    md_http_client_request_t g = {.method = "GET", .path = "/echo"};
    md_http_client_send(ep, &g, http_cb, &waiting, &wq);
    run_for(0.2); /* /hang is on the one connection; the GET waits */
    md_http_endpoint_stats(ep, &st);
    ok(st.active == 1 && st.waiting == 1, "cancel: one active, one waiting");
    md_http_client_cancel(wq);
    ok(waiting.calls == 1 && waiting.error == md_http_client_err_canceled,
       "cancel: waiting request canceled, callback ran");
    md_http_client_cancel(hq);
    ok(hang.calls == 1 && hang.error == md_http_client_err_canceled && hang.sent,
       "cancel: active request canceled, callback ran");
    run_for(0.1);
    ok(hang.calls == 1 && waiting.calls == 1, "cancel: no second callback");
    md_http_endpoint_stats(ep, &st);
    ok(st.active == 0 && st.waiting == 0, "cancel: nothing left on the endpoint");
    free(hang.body);
    free(waiting.body);

    /* The wait queue is bounded. */
    char err[200];
    md_http_endpoint_conf_t small = {.url = url, .max_connections = 1, .max_waiting = 2};
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", srv_port[S_PLAIN]);
    md_http_endpoint_t *sep = md_http_client_endpoint(c, &small, err, sizeof(err));
    hres_t q3[3];
    memset(q3, 0, sizeof(q3));
    md_http_client_request_t gg = {.method = "GET", .path = "/echo"};
    is_int(md_http_client_send(sep, &gg, http_cb, &q3[0], NULL), MD_OK, "queue: 1st accepted");
    is_int(md_http_client_send(sep, &gg, http_cb, &q3[1], NULL), MD_OK, "queue: 2nd accepted");
    is_int(md_http_client_send(sep, &gg, http_cb, &q3[2], NULL), MD_AGAIN, "queue: 3rd refused");
    many_t m = {q3, 2};
    run_until(all_done, &m, 5);
    ok(q3[0].status == 200 && q3[1].status == 200 && q3[2].calls == 0, "queue: the two served");
    for (int i = 0; i < 3; i++)
        free(q3[i].body);
    free(h.body);
}

static void
test_destroy(md_dns_t *dns)
{
    char url[96];
    md_http_client_t *c = md_http_client_create(loop, dns);
    snprintf(url, sizeof(url), "https://api.mailerd.test:%d", srv_port[S_GOOD]);
    md_http_endpoint_t *ep = endpoint(c, url, 1, true, "destroy");
    hres_t h[3];
    memset(h, 0, sizeof(h));
    md_http_client_request_t hang = {.method = "GET", .path = "/hang"};
    md_http_client_request_t g = {.method = "GET", .path = "/echo"};
    md_http_client_send(ep, &hang, http_cb, &h[0], NULL);
    md_http_client_send(ep, &g, http_cb, &h[1], NULL);
    run_for(0.2);
    md_http_client_send(ep, &g, http_cb, &h[2], NULL);
    md_http_client_destroy(c);
    int n = 0;
    for (int i = 0; i < 3; i++) {
        n += h[i].calls == 1 && h[i].error == md_http_client_err_canceled;
        free(h[i].body);
    }
    is_int(n, 3, "destroy: every outstanding request failed with canceled, once");
}

/*
 * "client_t nginx": the same client against a real nginx that t/57-client.t
 * started (TLS on three ports: good, wrong name, unknown CA; keepalive_timeout
 * 1s; the echo module). Names go through c-ares and /etc/hosts (localhost).
 * Prints TAP; t/57 relays it and checks nginx's access log for the connection
 * counts and the resumed session.
 */
static int
run_nginx(void)
{
    const char *ca = getenv("MD_TEST_NGINX_CA");
    const char *good = getenv("MD_TEST_NGINX_GOOD");
    const char *wrongp = getenv("MD_TEST_NGINX_WRONG");
    const char *unknownp = getenv("MD_TEST_NGINX_UNKNOWN");
    if (!ca || !good || !wrongp || !unknownp) {
        printf("1..0 # SKIP MD_TEST_NGINX_* not set\n");
        return 0;
    }
    signal(SIGPIPE, SIG_IGN);
    md_log_open(getenv("MD_TEST_NGINX_LOG"), MD_LOG_INFO);
    loop = ev_loop_new(EVFLAG_AUTO);
    ev_timer tick;
    ev_timer_init(&tick, tick_cb, 0.02, 0.02);
    ev_timer_start(loop, &tick);
    char err[256], url[128];
    md_dns_t *dns = md_dns_create(loop, NULL, err, sizeof(err));
    ok(dns != NULL, "nginx: resolver (%s)", dns ? "" : err);
    if (dns == NULL)
        return done_testing();
    md_http_client_t *c = md_http_client_create(loop, dns);
    hres_t h = {0};

    snprintf(url, sizeof(url), "https://localhost:%s", good);
    md_http_endpoint_conf_t conf = {
        .url = url, .name = "nginx", .max_connections = 2, .ca_file = ca, .response_timeout = 5};
    md_http_endpoint_t *ep = md_http_client_endpoint(c, &conf, err, sizeof(err));
    ok(ep != NULL, "nginx: endpoint %s (%s)", url, ep ? "" : err);
    if (ep == NULL)
        return done_testing();

    is_int(fetch(ep, "GET", "/static", NULL, &h), 200, "nginx: GET (%s %s)", h.error ? h.error : "",
           h.detail);
    is_str(h.body, "static body", "nginx: Content-Length body");
    is_int(fetch(ep, "POST", "/echo", "hello nginx", &h), 200, "nginx: POST to the echo module");
    is_str(h.body, "hello nginx", "nginx: chunked echo of the body");

    /* 30 requests, 10 at a time, over max_connections 2. */
    hres_t many[10];
    memset(many, 0, sizeof(many));
    int okn = 0;
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 10; i++) {
            md_http_client_request_t r = {
                .method = "POST", .path = "/static?ka", .body = "k", .body_len = 1};
            hreset(&many[i]);
            md_http_client_send(ep, &r, http_cb, &many[i], NULL);
        }
        many_t m = {many, 10};
        run_until(all_done, &m, 10);
        for (int i = 0; i < 10; i++)
            okn += many[i].status == 200;
    }
    for (int i = 0; i < 10; i++)
        free(many[i].body);
    is_int(okn, 30, "nginx: 30 keep-alive requests answered");
    md_http_endpoint_stats_t st;
    md_http_endpoint_stats(ep, &st);
    ok(st.connects <= 2, "nginx: client opened <= 2 connections (%llu)",
       (unsigned long long)st.connects);

    md_http_client_close_idle(c);
    is_int(fetch(ep, "GET", "/static?resume", NULL, &h), 200, "nginx: GET on a new connection");
    ok(h.resumed, "nginx: TLS session resumed");

    /* nginx closes idle keep-alive connections after 1 s. */
    ok(run_until(stats_idle, ep, 4), "nginx: its idle close was noticed");
    is_int(fetch(ep, "GET", "/static?after-idle", NULL, &h), 200, "nginx: next request fine");

    is_int(fetch(ep, "GET", "/status", NULL, &h), 503, "nginx: 503 is a response");
    is_str(h.retry_after, "3", "nginx: Retry-After");

    md_http_client_request_t hang = {.method = "GET", .path = "/hang", .timeout = 0.5};
    hreset(&h);
    md_http_client_send(ep, &hang, http_cb, &h, NULL);
    run_until(hres_done, &h, 5);
    ok(h.error == md_http_client_err_timeout, "nginx: response timeout (%s)", h.detail);

    snprintf(url, sizeof(url), "https://localhost:%s", wrongp);
    md_http_endpoint_t *w = md_http_client_endpoint(c, &conf, err, sizeof(err));
    fetch(w, "POST", "/static?wrong", "secret", &h);
    ok(h.error == md_http_client_err_tls && strstr(h.detail, "hostname mismatch") && !h.sent,
       "nginx: wrong name -> tls, not sent (%s)", h.detail);
    snprintf(url, sizeof(url), "https://localhost:%s", unknownp);
    md_http_endpoint_t *u = md_http_client_endpoint(c, &conf, err, sizeof(err));
    fetch(u, "POST", "/static?unknown", "secret", &h);
    ok(h.error == md_http_client_err_tls && strstr(h.detail, "issuer") && !h.sent,
       "nginx: unknown CA -> tls, not sent (%s)", h.detail);

    free(h.body);
    md_http_client_destroy(c);
    md_dns_destroy(dns);
    ev_timer_stop(loop, &tick);
    ev_loop_destroy(loop);
    md_log_close();
    return done_testing();
}

int
main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "nginx") == 0)
        return run_nginx();
    signal(SIGPIPE, SIG_IGN);
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/md-client-XXXXXX");
    if (mkdtemp(tmpdir) == NULL) {
        ok(0, "mkdtemp");
        return done_testing();
    }
    bool certs = make_certs();
    ok(certs, "test certificates made with the openssl CLI");
    if (!certs) {
        sh_run("rm -rf %s", tmpdir);
        return done_testing();
    }
    sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    memset(sh, 0, sizeof(*sh));
    fflush(stdout);
    dns_pid = start_dns();
    srv_pid[S_PLAIN] = start_http(S_PLAIN, NULL);
    srv_pid[S_GOOD] = start_http(S_GOOD, "good");
    srv_pid[S_WRONG] = start_http(S_WRONG, "wrong");
    srv_pid[S_UNKNOWN] = start_http(S_UNKNOWN, "unknown");

    char logpath[128];
    snprintf(logpath, sizeof(logpath), "%s/client.log", tmpdir);
    md_log_open(logpath, MD_LOG_INFO);

    loop = ev_loop_new(EVFLAG_AUTO);
    ev_timer tick;
    ev_timer_init(&tick, tick_cb, 0.02, 0.02);
    ev_timer_start(loop, &tick);

    char servers[64], err[200];
    snprintf(servers, sizeof(servers), "127.0.0.1:%d", dns_port);
    md_dns_conf_t dconf = {.servers = servers, .timeout = 0.5};
    md_dns_t *dns = md_dns_create(loop, &dconf, err, sizeof(err));
    ok(dns != NULL, "dns: resolver created (%s)", dns ? "" : err);
    if (dns) {
        test_dns(dns);
        md_dns_cache_clear(dns);
        md_http_client_t *c = md_http_client_create(loop, dns);
        test_plain(c);
        test_tls(c);
        test_failures(c);
        md_http_client_destroy(c);
        test_destroy(dns);
        md_dns_destroy(dns);
    }
    is_int(early_callbacks, 0, "no callback ran inside the call that registered it");

    ev_timer_stop(loop, &tick);
    ev_loop_destroy(loop);
    md_log_close();
    kill(dns_pid, SIGKILL);
    for (int i = 0; i < 4; i++)
        kill(srv_pid[i], SIGKILL);
    waitpid(dns_pid, NULL, 0);
    for (int i = 0; i < 4; i++)
        waitpid(srv_pid[i], NULL, 0);
    munmap(sh, sizeof(*sh));
    sh_run("rm -rf %s", tmpdir);
    return done_testing();
}
