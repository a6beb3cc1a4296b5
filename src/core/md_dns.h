/*
 * Asynchronous DNS resolver for a libev worker, on c-ares 1.18 (no event
 * thread: c-ares tells us which sockets to watch through its socket-state
 * callback, and one ev_timer follows ares_timeout()).
 *
 * One md_dns_t per worker (create it after fork). A lookup asks for the A
 * and/or AAAA records of a name (ares_getaddrinfo, which also reads /etc/hosts
 * first, as the system resolver does). On top of c-ares:
 *   - IP literals are answered without a lookup;
 *   - a small positive cache keeps answers for their TTL (the smallest TTL of
 *     the records, capped by cache_max_ttl; TTL 0 is not cached), evicting the
 *     least recently used entry when full; failures are not cached;
 *   - concurrent lookups of the same name and family share one query;
 *   - every lookup has a hard deadline (timeout), whatever c-ares' own retries do.
 *
 * Everything here runs on the loop given to md_dns_create and is not thread-safe.
 */
#ifndef MD_DNS_H
#define MD_DNS_H

#include "md_core.h"

#include <netinet/in.h>
#include <sys/socket.h>

struct ev_loop;

typedef struct md_dns_s md_dns_t;
typedef struct md_dns_req_s md_dns_req_t;

#define MD_DNS_MAX_ADDRS 8

/* Error codes: md_dns_result_t.error points at one of these (compare by pointer). */
extern const char md_dns_err_not_found[]; /* "not_found": NXDOMAIN or no record of the family */
extern const char md_dns_err_timeout[];   /* "timeout": no answer within the lookup timeout */
extern const char md_dns_err_failed[];    /* "failed": SERVFAIL, refused, bad name, no server */
extern const char md_dns_err_canceled[];  /* "canceled": the resolver is being destroyed */

typedef struct md_dns_conf_s {
    /* "ip:port,ip:port" (ares_set_servers_ports_csv syntax) to use instead of
     * /etc/resolv.conf's servers; NULL or "" for the system ones. Tests point
     * this at a responder on 127.0.0.1. */
    const char *servers;
    double timeout;       /* hard deadline of one lookup, seconds; <= 0: 5 */
    int tries;            /* c-ares attempts per server; <= 0: 2 */
    unsigned cache_size;  /* cached names (per family asked); 0: 128 */
    double cache_max_ttl; /* cap on a cached TTL, seconds; <= 0: 300 */
} md_dns_conf_t;

typedef struct md_dns_addr_s {
    int family; /* AF_INET or AF_INET6 */
    union {
        struct in_addr v4;
        struct in6_addr v6;
    } a;
} md_dns_addr_t;

/* The answer to one lookup; valid only during the callback (copy what you need). */
typedef struct md_dns_result_s {
    const char *error;  /* NULL on success, else one of md_dns_err_* */
    const char *detail; /* for logs: c-ares' reason; "" on success */
    size_t naddrs;      /* >= 1 on success, in c-ares' preference order */
    md_dns_addr_t addrs[MD_DNS_MAX_ADDRS];
    bool cached; /* answered from the cache or as an IP literal, no query sent */
} md_dns_result_t;

/* Runs exactly once per accepted lookup, never before md_dns_resolve returns,
 * unless the lookup is canceled with md_dns_cancel (then never). It may start
 * new lookups and cancel others, but must not call md_dns_destroy. */
typedef void (*md_dns_cb)(void *ctx, const md_dns_result_t *res);

typedef struct md_dns_stats_s {
    uint64_t lookups;    /* md_dns_resolve calls accepted */
    uint64_t cache_hits; /* answered from the cache (IP literals not counted) */
    uint64_t queries;    /* c-ares lookups started (shared lookups count once) */
    uint64_t failures;   /* lookups answered with an error (timeouts included) */
    uint64_t timeouts;   /* lookups answered with md_dns_err_timeout */
    size_t cached;       /* names in the cache now (expired ones may still count) */
    size_t pending;      /* lookups not yet answered */
} md_dns_stats_t;

/*
 * Creates a resolver on loop: initialises a c-ares channel (reads
 * /etc/resolv.conf once, here) and applies conf (copied; NULL for defaults).
 * Returns NULL with a message in err on failure (bad servers string, c-ares
 * error). Free it with md_dns_destroy.
 */
md_dns_t *md_dns_create(struct ev_loop *loop, const md_dns_conf_t *conf, char *err, size_t errlen);

/*
 * Frees the resolver. Every lookup not yet answered has its callback run first,
 * with md_dns_err_canceled. Must not be called from inside an md_dns callback.
 */
void md_dns_destroy(md_dns_t *d);

/*
 * Looks up host (a name or an IP literal, copied) for family AF_INET, AF_INET6
 * or AF_UNSPEC (both; whichever the name has). Returns MD_OK: cb will run once
 * (see md_dns_cb); if req is not NULL, *req is a handle valid until cb starts.
 * Returns MD_ERROR for a bad argument (empty or overlong host, bad family): cb
 * will not run.
 */
int md_dns_resolve(md_dns_t *d, const char *host, int family, md_dns_cb cb, void *ctx,
                   md_dns_req_t **req);

/* Forgets one lookup: its callback will not run (the caller is going away). The
 * shared query itself goes on and may still fill the cache. */
void md_dns_cancel(md_dns_req_t *req);

/* Drops every cached answer (tests; a reload could too). */
void md_dns_cache_clear(md_dns_t *d);

void md_dns_stats(const md_dns_t *d, md_dns_stats_t *s);

/* Fills *ss with a, port (host order) and returns its length. */
socklen_t md_dns_sockaddr(const md_dns_addr_t *a, int port, struct sockaddr_storage *ss);

/* Writes a's text form into buf (at least INET6_ADDRSTRLEN bytes); returns buf. */
const char *md_dns_ntop(const md_dns_addr_t *a, char *buf, size_t len);

/* True when s is an IPv4 or IPv6 literal (no brackets); fills *a when not NULL. */
bool md_dns_parse_ip(const char *s, md_dns_addr_t *a);

#endif
