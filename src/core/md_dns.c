/*
 * c-ares resolver driven by libev.
 *
 * c-ares runs without a thread: ARES_OPT_SOCK_STATE_CB tells us when it opens,
 * closes or wants to write a socket, and we keep one ev_io per socket (a short
 * list: a channel holds a socket or two per server). Whenever c-ares has run we
 * re-arm one ev_timer from ares_timeout(), and when it fires we call
 * ares_process_fd with no socket so c-ares handles its retries.
 *
 * Completions never run inside md_dns_resolve: even an answer known at once
 * (an IP literal, a cache hit, or /etc/hosts, which c-ares may answer inside
 * ares_getaddrinfo) is put on a "done" list and delivered by a zero-delay timer
 * on the next loop pass. This also keeps c-ares' own callbacks (which can run
 * deep inside ares_process_fd) from ever reaching the caller's code.
 *
 * c-ares 1.18 cannot cancel one query (ares_cancel cancels all), so a query
 * whose deadline passes is "abandoned": its waiters are answered with a
 * timeout, it leaves the table of shared queries (a new lookup of the name
 * starts afresh), and it is freed when c-ares finally calls back.
 */
#include "md_dns.h"
#include "md_list.h"
#include "md_log.h"

#include <arpa/inet.h>
#include <ares.h>
#include <ctype.h>
#include <ev.h>
#include <stdio.h>
#include <stdlib.h>

const char md_dns_err_not_found[] = "not_found";
const char md_dns_err_timeout[] = "timeout";
const char md_dns_err_failed[] = "failed";
const char md_dns_err_canceled[] = "canceled";

#define MD_DNS_HOST_MAX 253

typedef struct md_dns_query_s md_dns_query_t;

/* One caller's lookup. Owned by the resolver until its callback has run (or it
 * was canceled). It is on exactly one list: its query's waiters or d->done. */
struct md_dns_req_s {
    md_list_t node;
    md_dns_t *d;
    md_dns_query_t *q; /* NULL once answered (on d->done) */
    md_dns_cb cb;
    void *ctx;
    md_dns_result_t res;
};

/* One c-ares lookup shared by every caller asking for the same name and family. */
struct md_dns_query_s {
    md_list_t node; /* d->queries while active; detached when abandoned */
    md_list_t waiters;
    md_dns_t *d;
    ev_timer deadline;
    bool abandoned;
    int family;
    char host[MD_DNS_HOST_MAX + 1]; /* lower-cased */
};

typedef struct md_dns_cache_s {
    md_list_t node; /* d->cache, most recently used first */
    int family;
    double expires;
    size_t naddrs;
    md_dns_addr_t addrs[MD_DNS_MAX_ADDRS];
    char host[MD_DNS_HOST_MAX + 1];
} md_dns_cache_t;

typedef struct md_dns_sock_s {
    md_list_t node;
    md_dns_t *d;
    ev_io io;
} md_dns_sock_t;

struct md_dns_s {
    struct ev_loop *loop;
    ares_channel channel;
    double timeout, cache_max_ttl;
    unsigned cache_size;
    size_t ncached;
    ev_timer timer; /* c-ares' own timeouts (ares_timeout) */
    ev_timer defer; /* delivers d->done on the next pass */
    md_list_t queries, done, cache, socks;
    bool destroying;
    uint64_t lookups, cache_hits, queries_started, failures, timeouts;
    size_t pending;
};

/* ---- addresses -------------------------------------------------------------- */

bool
md_dns_parse_ip(const char *s, md_dns_addr_t *a)
{
    md_dns_addr_t tmp;
    if (a == NULL)
        a = &tmp;
    memset(a, 0, sizeof(*a));
    if (inet_pton(AF_INET, s, &a->a.v4) == 1) {
        a->family = AF_INET;
        return true;
    }
    if (inet_pton(AF_INET6, s, &a->a.v6) == 1) {
        a->family = AF_INET6;
        return true;
    }
    return false;
}

socklen_t
md_dns_sockaddr(const md_dns_addr_t *a, int port, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof(*ss));
    if (a->family == AF_INET6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        s6->sin6_addr = a->a.v6;
        return sizeof(*s6);
    }
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    s4->sin_family = AF_INET;
    s4->sin_port = htons((uint16_t)port);
    s4->sin_addr = a->a.v4;
    return sizeof(*s4);
}

const char *
md_dns_ntop(const md_dns_addr_t *a, char *buf, size_t len)
{
    if (inet_ntop(a->family,
                  a->family == AF_INET6 ? (const void *)&a->a.v6 : (const void *)&a->a.v4, buf,
                  (socklen_t)len) == NULL)
        snprintf(buf, len, "?");
    return buf;
}

/* ---- c-ares <-> libev ------------------------------------------------------- */

/* Re-arms the one timer from c-ares' next deadline. Called after every entry
 * into c-ares that can start or finish work. */
static void
md_dns_rearm(md_dns_t *d)
{
    struct timeval tv, *tvp;
    ev_timer_stop(d->loop, &d->timer);
    if (d->channel == NULL)
        return;
    tvp = ares_timeout(d->channel, NULL, &tv);
    if (tvp == NULL)
        return;
    double after = (double)tvp->tv_sec + (double)tvp->tv_usec / 1e6;
    ev_timer_set(&d->timer, after > 0.001 ? after : 0.001, 0.);
    ev_timer_start(d->loop, &d->timer);
}

static void
md_dns_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    md_dns_t *d = w->data;
    md_unused(loop);
    md_unused(revents);
    ares_process_fd(d->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    md_dns_rearm(d);
}

static void
md_dns_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    md_dns_sock_t *s = w->data;
    md_dns_t *d = s->d;
    int fd = w->fd;
    md_unused(loop);
    /* s may be freed inside (c-ares closes the socket): use only d and fd after. */
    ares_process_fd(d->channel, (revents & EV_READ) ? fd : ARES_SOCKET_BAD,
                    (revents & EV_WRITE) ? fd : ARES_SOCKET_BAD);
    md_dns_rearm(d);
}

/* c-ares' socket-state callback: open, change or close the watcher of fd. */
static void
md_dns_sock_state_cb(void *data, ares_socket_t fd, int readable, int writable)
{
    md_dns_t *d = data;
    md_dns_sock_t *s = NULL;
    for (md_list_t *n = d->socks.next; n != &d->socks; n = n->next) {
        md_dns_sock_t *x = md_list_data(n, md_dns_sock_t, node);
        if (x->io.fd == fd) {
            s = x;
            break;
        }
    }
    if (!readable && !writable) {
        if (s) {
            ev_io_stop(d->loop, &s->io);
            md_list_remove(&s->node);
            free(s);
        }
        return;
    }
    int events = (readable ? EV_READ : 0) | (writable ? EV_WRITE : 0);
    if (s == NULL) {
        s = md_xcalloc(1, sizeof(*s));
        s->d = d;
        ev_io_init(&s->io, md_dns_io_cb, fd, events);
        s->io.data = s;
        md_list_insert_tail(&d->socks, &s->node);
    } else {
        ev_io_stop(d->loop, &s->io);
        ev_io_set(&s->io, fd, events);
    }
    ev_io_start(d->loop, &s->io);
}

/* ---- completions ------------------------------------------------------------ */

static void
md_dns_defer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    md_dns_t *d = w->data;
    md_unused(loop);
    md_unused(revents);
    /* Deliver what is done now; callbacks may add more (next pass). */
    md_list_t batch;
    md_list_init(&batch);
    if (!md_list_empty(&d->done)) {
        batch.next = d->done.next;
        batch.prev = d->done.prev;
        batch.next->prev = &batch;
        batch.prev->next = &batch;
        md_list_init(&d->done);
    }
    md_list_t *n;
    while ((n = md_list_first(&batch)) != NULL) {
        md_dns_req_t *r = md_list_data(n, md_dns_req_t, node);
        md_list_remove(n);
        d->pending--;
        if (r->res.error) {
            d->failures++;
            if (r->res.error == md_dns_err_timeout)
                d->timeouts++;
        }
        r->cb(r->ctx, &r->res);
        free(r);
    }
}

/* Moves r to the done list with its result already filled in. */
static void
md_dns_finish(md_dns_req_t *r)
{
    md_dns_t *d = r->d;
    md_list_remove(&r->node);
    r->q = NULL;
    md_list_insert_tail(&d->done, &r->node);
    if (!ev_is_active(&d->defer)) {
        ev_timer_set(&d->defer, 0., 0.);
        ev_timer_start(d->loop, &d->defer);
    }
}

static void
md_dns_fail(md_dns_req_t *r, const char *error, const char *detail)
{
    r->res.error = error;
    r->res.detail = detail;
    r->res.naddrs = 0;
    md_dns_finish(r);
}

/* ---- cache -------------------------------------------------------------------- */

static md_dns_cache_t *
md_dns_cache_find(md_dns_t *d, const char *host, int family)
{
    double now = ev_now(d->loop);
    for (md_list_t *n = d->cache.next; n != &d->cache;) {
        md_dns_cache_t *e = md_list_data(n, md_dns_cache_t, node);
        n = n->next;
        if (e->family != family || strcmp(e->host, host) != 0)
            continue;
        if (e->expires <= now) {
            md_list_remove(&e->node);
            d->ncached--;
            free(e);
            return NULL;
        }
        md_list_remove(&e->node);
        md_list_insert_head(&d->cache, &e->node);
        return e;
    }
    return NULL;
}

static void
md_dns_cache_put(md_dns_t *d, const char *host, int family, const md_dns_result_t *res, double ttl)
{
    if (ttl > d->cache_max_ttl)
        ttl = d->cache_max_ttl;
    if (ttl <= 0 || res->naddrs == 0)
        return;
    md_dns_cache_t *e = NULL;
    for (md_list_t *n = d->cache.next; n != &d->cache; n = n->next) {
        md_dns_cache_t *x = md_list_data(n, md_dns_cache_t, node);
        if (x->family == family && strcmp(x->host, host) == 0) {
            e = x;
            md_list_remove(&e->node);
            break;
        }
    }
    if (e == NULL) {
        if (d->ncached >= d->cache_size) {
            md_dns_cache_t *old = md_list_data(md_list_last(&d->cache), md_dns_cache_t, node);
            md_list_remove(&old->node);
            d->ncached--;
            free(old);
        }
        e = md_xcalloc(1, sizeof(*e));
        md_strlcpy(e->host, host, sizeof(e->host));
        e->family = family;
        d->ncached++;
    }
    e->expires = ev_now(d->loop) + ttl;
    e->naddrs = res->naddrs;
    memcpy(e->addrs, res->addrs, sizeof(e->addrs));
    md_list_insert_head(&d->cache, &e->node);
}

void
md_dns_cache_clear(md_dns_t *d)
{
    md_list_t *n;
    while ((n = md_list_first(&d->cache)) != NULL) {
        md_list_remove(n);
        free(md_list_data(n, md_dns_cache_t, node));
    }
    d->ncached = 0;
}

/* ---- queries ------------------------------------------------------------------ */

static const char *
md_dns_map_status(int status)
{
    switch (status) {
    case ARES_ENOTFOUND:
    case ARES_ENODATA:
    case ARES_ENONAME:
        return md_dns_err_not_found;
    case ARES_ETIMEOUT:
        return md_dns_err_timeout;
    case ARES_ECANCELLED:
    case ARES_EDESTRUCTION:
        return md_dns_err_canceled;
    default:
        return md_dns_err_failed;
    }
}

static void
md_dns_query_free(md_dns_query_t *q)
{
    ev_timer_stop(q->d->loop, &q->deadline);
    md_list_remove(&q->node);
    free(q);
}

/* c-ares is done with q (answer, error, or its own destruction). */
static void
md_dns_ai_cb(void *arg, int status, int timeouts, struct ares_addrinfo *ai)
{
    md_dns_query_t *q = arg;
    md_dns_t *d = q->d;
    md_dns_result_t res;
    md_unused(timeouts);
    memset(&res, 0, sizeof(res));
    res.detail = "";

    if (status == ARES_SUCCESS && ai != NULL) {
        int ttl = -1;
        for (struct ares_addrinfo_node *n = ai->nodes; n; n = n->ai_next) {
            if (res.naddrs == MD_DNS_MAX_ADDRS)
                break;
            md_dns_addr_t *a = &res.addrs[res.naddrs];
            if (n->ai_family == AF_INET && n->ai_addr) {
                a->family = AF_INET;
                a->a.v4 = ((const struct sockaddr_in *)(const void *)n->ai_addr)->sin_addr;
            } else if (n->ai_family == AF_INET6 && n->ai_addr) {
                a->family = AF_INET6;
                a->a.v6 = ((const struct sockaddr_in6 *)(const void *)n->ai_addr)->sin6_addr;
            } else {
                continue;
            }
            bool dup = false;
            for (size_t i = 0; i < res.naddrs && !dup; i++)
                dup = memcmp(&res.addrs[i], a, sizeof(*a)) == 0;
            if (dup)
                continue;
            res.naddrs++;
            if (ttl < 0 || n->ai_ttl < ttl)
                ttl = n->ai_ttl;
        }
        /* A CNAME's TTL bounds the answer too. */
        for (struct ares_addrinfo_cname *c = ai->cnames; c; c = c->next)
            if (c->ttl < ttl)
                ttl = c->ttl;
        if (res.naddrs == 0) {
            res.error = md_dns_err_not_found;
            res.detail = "no address of the requested family";
        } else if (!q->abandoned && !d->destroying) {
            md_dns_cache_put(d, q->host, q->family, &res, ttl > 0 ? (double)ttl : 0.);
        }
    } else {
        res.error = md_dns_map_status(status);
        res.detail = ares_strerror(status);
    }
    if (ai)
        ares_freeaddrinfo(ai);

    md_list_t *n;
    while ((n = md_list_first(&q->waiters)) != NULL) {
        md_dns_req_t *r = md_list_data(n, md_dns_req_t, node);
        r->res = res;
        md_dns_finish(r);
    }
    md_dns_query_free(q);
}

/* The lookup's hard deadline passed: answer its waiters, leave the query to c-ares. */
static void
md_dns_deadline_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    md_dns_query_t *q = w->data;
    md_unused(loop);
    md_unused(revents);
    q->abandoned = true;
    md_list_remove(&q->node);
    md_list_t *n;
    while ((n = md_list_first(&q->waiters)) != NULL)
        md_dns_fail(md_list_data(n, md_dns_req_t, node), md_dns_err_timeout,
                    "no answer within the lookup timeout");
}

int
md_dns_resolve(md_dns_t *d, const char *host, int family, md_dns_cb cb, void *ctx,
               md_dns_req_t **req)
{
    if (req)
        *req = NULL;
    if (d == NULL || host == NULL || cb == NULL || d->destroying)
        return MD_ERROR;
    if (family != AF_INET && family != AF_INET6 && family != AF_UNSPEC)
        return MD_ERROR;
    size_t len = strlen(host);
    if (len == 0 || len > MD_DNS_HOST_MAX)
        return MD_ERROR;
    char name[MD_DNS_HOST_MAX + 1];
    for (size_t i = 0; i <= len; i++) {
        unsigned char ch = (unsigned char)host[i];
        if (ch != '\0' && (ch <= ' ' || ch >= 0x7f))
            return MD_ERROR;
        name[i] = (char)tolower(ch);
    }

    md_dns_req_t *r = md_xcalloc(1, sizeof(*r));
    r->d = d;
    r->cb = cb;
    r->ctx = ctx;
    r->res.detail = "";
    md_list_init(&r->node);
    d->lookups++;
    d->pending++;
    if (req)
        *req = r;

    md_dns_addr_t ip;
    if (md_dns_parse_ip(name, &ip)) {
        if (family != AF_UNSPEC && family != ip.family) {
            md_dns_fail(r, md_dns_err_not_found, "IP literal of another family");
            return MD_OK;
        }
        r->res.naddrs = 1;
        r->res.addrs[0] = ip;
        r->res.cached = true;
        md_dns_finish(r);
        return MD_OK;
    }

    md_dns_cache_t *e = md_dns_cache_find(d, name, family);
    if (e) {
        d->cache_hits++;
        r->res.naddrs = e->naddrs;
        memcpy(r->res.addrs, e->addrs, sizeof(r->res.addrs));
        r->res.cached = true;
        md_dns_finish(r);
        return MD_OK;
    }

    md_dns_query_t *q = NULL;
    for (md_list_t *n = d->queries.next; n != &d->queries; n = n->next) {
        md_dns_query_t *x = md_list_data(n, md_dns_query_t, node);
        if (x->family == family && strcmp(x->host, name) == 0) {
            q = x;
            break;
        }
    }
    if (q) {
        r->q = q;
        md_list_insert_tail(&q->waiters, &r->node);
        return MD_OK;
    }

    q = md_xcalloc(1, sizeof(*q));
    q->d = d;
    q->family = family;
    memcpy(q->host, name, len + 1);
    md_list_init(&q->waiters);
    md_list_insert_tail(&d->queries, &q->node);
    r->q = q;
    md_list_insert_tail(&q->waiters, &r->node);
    ev_timer_init(&q->deadline, md_dns_deadline_cb, d->timeout, 0.);
    q->deadline.data = q;
    ev_timer_start(d->loop, &q->deadline);
    d->queries_started++;

    struct ares_addrinfo_hints hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = family;
    hints.ai_socktype = SOCK_STREAM;
    /* May call md_dns_ai_cb before returning (/etc/hosts): that only moves r to
     * the done list, so the caller still hears of it on the next pass. */
    ares_getaddrinfo(d->channel, q->host, NULL, &hints, md_dns_ai_cb, q);
    md_dns_rearm(d);
    return MD_OK;
}

void
md_dns_cancel(md_dns_req_t *r)
{
    if (r == NULL)
        return;
    md_dns_t *d = r->d;
    md_list_remove(&r->node);
    d->pending--;
    free(r);
}

/* ---- lifecycle ------------------------------------------------------------------ */

md_dns_t *
md_dns_create(struct ev_loop *loop, const md_dns_conf_t *conf, char *err, size_t errlen)
{
    md_dns_conf_t def;
    if (conf == NULL) {
        memset(&def, 0, sizeof(def));
        conf = &def;
    }
    int rc = ares_library_init(ARES_LIB_INIT_ALL);
    if (rc != ARES_SUCCESS) {
        snprintf(err, errlen, "c-ares init: %s", ares_strerror(rc));
        return NULL;
    }
    md_dns_t *d = md_xcalloc(1, sizeof(*d));
    d->loop = loop;
    d->timeout = conf->timeout > 0 ? conf->timeout : 5.;
    d->cache_size = conf->cache_size ? conf->cache_size : 128;
    d->cache_max_ttl = conf->cache_max_ttl > 0 ? conf->cache_max_ttl : 300.;
    md_list_init(&d->queries);
    md_list_init(&d->done);
    md_list_init(&d->cache);
    md_list_init(&d->socks);
    ev_timer_init(&d->timer, md_dns_timer_cb, 1., 0.);
    d->timer.data = d;
    ev_timer_init(&d->defer, md_dns_defer_cb, 0., 0.);
    d->defer.data = d;

    /* c-ares' per-try timeout: the tries share the lookup deadline, so that a
     * dead first server leaves time for the next try rather than eating it all. */
    int tries = conf->tries > 0 ? conf->tries : 2;
    struct ares_options o;
    memset(&o, 0, sizeof(o));
    o.sock_state_cb = md_dns_sock_state_cb;
    o.sock_state_cb_data = d;
    o.timeout = (int)(d->timeout * 1000 / (tries + 1));
    if (o.timeout < 50)
        o.timeout = 50;
    o.tries = tries;
    rc = ares_init_options(&d->channel, &o,
                           ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES);
    if (rc != ARES_SUCCESS) {
        snprintf(err, errlen, "c-ares init: %s", ares_strerror(rc));
        d->channel = NULL;
        md_dns_destroy(d);
        return NULL;
    }
    if (conf->servers && conf->servers[0]) {
        rc = ares_set_servers_ports_csv(d->channel, conf->servers);
        if (rc != ARES_SUCCESS) {
            snprintf(err, errlen, "dns servers \"%s\": %s", conf->servers, ares_strerror(rc));
            md_dns_destroy(d);
            return NULL;
        }
    }
    return d;
}

void
md_dns_destroy(md_dns_t *d)
{
    if (d == NULL)
        return;
    d->destroying = true;
    /* Callers first, while their state is alive: unanswered lookups, then the
     * answered ones still waiting for the next pass. */
    md_list_t *n;
    while ((n = md_list_first(&d->queries)) != NULL) {
        md_dns_query_t *q = md_list_data(n, md_dns_query_t, node);
        md_list_remove(&q->node);
        q->abandoned = true;
        md_list_t *m;
        while ((m = md_list_first(&q->waiters)) != NULL) {
            md_dns_req_t *r = md_list_data(m, md_dns_req_t, node);
            r->res.error = md_dns_err_canceled;
            r->res.detail = "resolver destroyed";
            r->res.naddrs = 0;
            md_list_remove(m);
            md_list_insert_tail(&d->done, m);
        }
    }
    while ((n = md_list_first(&d->done)) != NULL) {
        md_dns_req_t *r = md_list_data(n, md_dns_req_t, node);
        md_list_remove(n);
        d->pending--;
        r->res.error = md_dns_err_canceled;
        r->res.detail = "resolver destroyed";
        r->res.naddrs = 0;
        r->cb(r->ctx, &r->res);
        free(r);
    }
    /* c-ares calls back every query (ARES_EDESTRUCTION: they have no waiters
     * now and free themselves) and closes its sockets through sock_state_cb. */
    if (d->channel)
        ares_destroy(d->channel);
    d->channel = NULL;
    while ((n = md_list_first(&d->socks)) != NULL) {
        md_dns_sock_t *s = md_list_data(n, md_dns_sock_t, node);
        ev_io_stop(d->loop, &s->io);
        md_list_remove(n);
        free(s);
    }
    ev_timer_stop(d->loop, &d->timer);
    ev_timer_stop(d->loop, &d->defer);
    md_dns_cache_clear(d);
    free(d);
    ares_library_cleanup();
}

void
md_dns_stats(const md_dns_t *d, md_dns_stats_t *s)
{
    memset(s, 0, sizeof(*s));
    s->lookups = d->lookups;
    s->cache_hits = d->cache_hits;
    s->queries = d->queries_started;
    s->failures = d->failures;
    s->timeouts = d->timeouts;
    s->cached = d->ncached;
    s->pending = d->pending;
}
