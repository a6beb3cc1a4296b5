/*
 * Router: a linear scan over patterns split once at registration. With the handful
 * of routes an API has, comparing segments in place beats any tree: no allocation,
 * no hashing, and the common route is found in a few memcmp calls.
 */
#include "md_router.h"
#include "md_metrics.h"

#include <llhttp.h>
#include <stdio.h>
#include <stdlib.h>

#define MD_ROUTER_MAX_SEGS 16

/* Route ids double as metrics labels; the metrics table reserves its last id. */
#define MD_ROUTER_LIMIT                                                                            \
    (MD_ROUTER_MAX_ROUTES < MD_METRICS_NO_ROUTE ? MD_ROUTER_MAX_ROUTES : MD_METRICS_NO_ROUTE)

typedef struct md_route_seg_s {
    const char *s; /* literal text, or the parameter name (NUL-terminated in the copy) */
    unsigned len;
    unsigned param;
} md_route_seg_t;

typedef struct md_route_priv_s {
    md_route_t pub;
    char *copy; /* owned copy of the pattern; segments point into it */
    unsigned nseg;
    unsigned nparams;
    uint32_t literal_mask; /* bit (31 - i) set when segment i is literal: more specific wins */
    md_route_seg_t seg[MD_ROUTER_MAX_SEGS];
    const char *param_names[MD_HTTP_MAX_PARAMS];
} md_route_priv_t;

struct md_router_s {
    md_route_priv_t *routes[MD_ROUTER_MAX_ROUTES];
    unsigned n;
};

/* The caller owns the router and frees it with md_router_destroy(). */
md_router_t *
md_router_create(void)
{
    return md_xcalloc(1, sizeof(md_router_t));
}

void
md_router_destroy(md_router_t *rt)
{
    if (rt == NULL)
        return;
    for (unsigned i = 0; i < rt->n; i++) {
        free(rt->routes[i]->copy);
        free((char *)rt->routes[i]->pub.pattern);
        free(rt->routes[i]);
    }
    free(rt);
}

static int
seg_char_ok(char ch)
{
    /* RFC 3986 pchar minus '%' (patterns are matched against undecoded paths, so a
     * literal escape in a pattern would be ambiguous) and minus braces. */
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           strchr("-._~!$&'()*+,;=:@", ch) != NULL;
}

static int
name_char_ok(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '_';
}

/*
 * Splits pattern into rp (which owns the copy). Accepts "/" and "/a/{b}/c": every
 * segment non-empty, a parameter is a whole segment "{name}" with a name of
 * [A-Za-z0-9_], names unique. Returns MD_OK or MD_ERROR (rp->copy then freed).
 */
static int
route_split(md_route_priv_t *rp, const char *pattern)
{
    if (pattern == NULL || pattern[0] != '/')
        return MD_ERROR;
    rp->copy = md_xstrdup(pattern);
    rp->nseg = 0;
    rp->nparams = 0;
    rp->literal_mask = 0;
    if (pattern[1] == '\0')
        return MD_OK;
    char *p = rp->copy + 1;
    for (;;) {
        char *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - p) : strlen(p);
        if (len == 0 || rp->nseg == MD_ROUTER_MAX_SEGS)
            goto bad;
        md_route_seg_t *sg = &rp->seg[rp->nseg];
        if (p[0] == '{') {
            if (len < 3 || p[len - 1] != '}' || rp->nparams == MD_HTTP_MAX_PARAMS)
                goto bad;
            for (size_t i = 1; i < len - 1; i++)
                if (!name_char_ok(p[i]))
                    goto bad;
            sg->s = p + 1;
            sg->len = (unsigned)(len - 2);
            sg->param = 1;
            for (unsigned i = 0; i < rp->nseg; i++)
                if (rp->seg[i].param && rp->seg[i].len == sg->len &&
                    memcmp(rp->seg[i].s, sg->s, sg->len) == 0)
                    goto bad;
            rp->param_names[rp->nparams++] = sg->s;
        } else {
            for (size_t i = 0; i < len; i++)
                if (!seg_char_ok(p[i]))
                    goto bad;
            sg->s = p;
            sg->len = (unsigned)len;
            sg->param = 0;
            rp->literal_mask |= 1u << (31 - rp->nseg);
        }
        rp->nseg++;
        if (slash == NULL)
            break;
        p = slash + 1;
    }
    /* Terminate parameter names in the copy now that every check has read it whole. */
    for (unsigned i = 0; i < rp->nseg; i++)
        if (rp->seg[i].param)
            ((char *)rp->seg[i].s)[rp->seg[i].len] = '\0';
    return MD_OK;
bad:
    free(rp->copy);
    rp->copy = NULL;
    return MD_ERROR;
}

int
md_router_add(md_router_t *rt, unsigned methods, const char *pattern, md_http_handler_pt h)
{
    if (rt->n >= MD_ROUTER_LIMIT || h == NULL || (methods & 0x7f) == 0 || (methods & ~0x7fu))
        return -1;
    md_route_priv_t *rp = md_xcalloc(1, sizeof(*rp));
    if (route_split(rp, pattern) != MD_OK) {
        free(rp);
        return -1;
    }
    if (methods & MD_M_GET)
        methods |= MD_M_HEAD;
    rp->pub.id = rt->n;
    rp->pub.pattern = md_xstrdup(pattern); /* printable; rp->copy has NULs inserted */
    rp->pub.methods = methods;
    rp->pub.handler = h;
    rt->routes[rt->n++] = rp;
    return (int)rp->pub.id;
}

static unsigned
method_bit(int m)
{
    switch (m) {
    case HTTP_GET:
        return MD_M_GET;
    case HTTP_HEAD:
        return MD_M_HEAD;
    case HTTP_POST:
        return MD_M_POST;
    case HTTP_PUT:
        return MD_M_PUT;
    case HTTP_PATCH:
        return MD_M_PATCH;
    case HTTP_DELETE:
        return MD_M_DELETE;
    case HTTP_OPTIONS:
        return MD_M_OPTIONS;
    default:
        return 0;
    }
}

/* Compares path (which starts with '/') with rp; on a match fills vals with params. */
static int
route_match(const md_route_priv_t *rp, const char *p, const char *end, md_str_t *vals)
{
    if (rp->nseg == 0)
        return end - p == 1;
    unsigned np = 0;
    for (unsigned i = 0; i < rp->nseg; i++) {
        if (p >= end || *p != '/')
            return 0;
        p++;
        const char *s = p;
        while (p < end && *p != '/')
            p++;
        size_t len = (size_t)(p - s);
        const md_route_seg_t *sg = &rp->seg[i];
        if (sg->param) {
            if (len == 0)
                return 0;
            vals[np].data = s;
            vals[np].len = len;
            np++;
        } else if (len != sg->len || memcmp(s, sg->s, len) != 0) {
            return 0;
        }
    }
    return p == end;
}

int
md_router_match(const md_router_t *rt, int llhttp_method, md_str_t path, md_http_request_t *r,
                const md_route_t **route, unsigned *allow)
{
    unsigned bit = method_bit(llhttp_method);
    unsigned allowed = 0;
    const md_route_priv_t *best = NULL;
    md_str_t vals[MD_HTTP_MAX_PARAMS], best_vals[MD_HTTP_MAX_PARAMS];
    const char *p = path.data, *end = path.data + path.len;

    *route = NULL;
    if (allow)
        *allow = 0;
    if (path.len == 0 || path.data[0] != '/')
        return MD_DECLINED;
    for (unsigned i = 0; i < rt->n; i++) {
        const md_route_priv_t *rp = rt->routes[i];
        if (!route_match(rp, p, end, vals))
            continue;
        allowed |= rp->pub.methods;
        if (!(rp->pub.methods & bit))
            continue;
        if (best == NULL || rp->literal_mask > best->literal_mask) {
            best = rp;
            memcpy(best_vals, vals, rp->nparams * sizeof(md_str_t));
        }
    }
    if (best) {
        *route = &best->pub;
        if (r) {
            for (unsigned i = 0; i < best->nparams; i++) {
                r->params[i] = best_vals[i];
                r->param_names[i] = best->param_names[i];
            }
            r->nparams = best->nparams;
        }
        return MD_OK;
    }
    if (allowed == 0)
        return MD_DECLINED;
    if (allow)
        *allow = allowed;
    return MD_ERROR;
}

unsigned
md_router_count(const md_router_t *rt)
{
    return rt ? rt->n : 0;
}

const md_route_t *
md_router_get(const md_router_t *rt, unsigned id)
{
    if (rt == NULL || id >= rt->n)
        return NULL;
    return &rt->routes[id]->pub;
}

void
md_router_allow_string(unsigned methods, char *buf, size_t len)
{
    static const struct {
        unsigned bit;
        const char *name;
    } names[] = {{MD_M_GET, "GET"},        {MD_M_HEAD, "HEAD"},   {MD_M_POST, "POST"},
                 {MD_M_PUT, "PUT"},        {MD_M_PATCH, "PATCH"}, {MD_M_DELETE, "DELETE"},
                 {MD_M_OPTIONS, "OPTIONS"}};
    size_t o = 0;
    if (len == 0)
        return;
    buf[0] = '\0';
    for (size_t i = 0; i < md_nelems(names); i++) {
        if (!(methods & names[i].bit))
            continue;
        int n = snprintf(buf + o, len - o, "%s%s", o ? ", " : "", names[i].name);
        if (n < 0 || (size_t)n >= len - o)
            break;
        o += (size_t)n;
    }
}
