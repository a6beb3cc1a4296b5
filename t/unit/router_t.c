/* Router: matching, parameters, 404 vs 405 with Allow, HEAD via GET, bad patterns, ids. */
#include "md_router.h"
#include "tap.h"

#include <llhttp.h>

static int
h_a(md_http_request_t *r)
{
    md_unused(r);
    return MD_OK;
}

static int
h_b(md_http_request_t *r)
{
    md_unused(r);
    return MD_OK;
}

static md_str_t
S(const char *s)
{
    md_str_t v = {strlen(s), s};
    return v;
}

static int
streq(md_str_t a, const char *b)
{
    return a.len == strlen(b) && memcmp(a.data, b, a.len) == 0;
}

static void
test_ids_and_matching(void)
{
    md_router_t *rt = md_router_create();
    is_int(md_router_add(rt, MD_M_GET, "/health", h_a), 0, "first route gets id 0");
    is_int(md_router_add(rt, MD_M_POST, "/v1/messages", h_b), 1, "second route gets id 1");
    is_int(md_router_add(rt, MD_M_GET | MD_M_DELETE, "/v1/messages/{id}", h_a), 2, "id 2");
    is_int(md_router_add(rt, MD_M_GET, "/v1/messages/search", h_b), 3, "id 3");
    is_int(md_router_add(rt, MD_M_PUT, "/v1/tenants/{tenant}/keys/{key}", h_a), 4, "id 4");
    is_int(md_router_add(rt, MD_M_GET, "/", h_b), 5, "root pattern accepted");
    is_int(md_router_count(rt), 6, "count");
    ok(md_router_get(rt, 6) == NULL, "get past the end is NULL");
    is_str(md_router_get(rt, 2)->pattern, "/v1/messages/{id}", "pattern kept as written");
    ok((md_router_get(rt, 0)->methods & MD_M_HEAD) != 0, "GET implies HEAD");
    ok((md_router_get(rt, 1)->methods & MD_M_HEAD) == 0, "POST does not imply HEAD");

    md_http_request_t r;
    const md_route_t *route;
    unsigned allow;
    memset(&r, 0, sizeof(r));
    is_int(md_router_match(rt, HTTP_GET, S("/health"), &r, &route, &allow), MD_OK, "GET /health");
    ok(route && route->id == 0 && route->handler == h_a, "right route and handler");
    is_int(md_router_match(rt, HTTP_HEAD, S("/health"), &r, &route, &allow), MD_OK, "HEAD /health");
    is_int(md_router_match(rt, HTTP_GET, S("/health/"), &r, &route, &allow), MD_DECLINED,
           "trailing slash is another path");
    is_int(md_router_match(rt, HTTP_GET, S("/healthz"), &r, &route, &allow), MD_DECLINED,
           "prefix is not a match");
    is_int(md_router_match(rt, HTTP_GET, S("/nope"), &r, &route, &allow), MD_DECLINED, "404");
    ok(route == NULL, "no route on 404");
    is_int(md_router_match(rt, HTTP_GET, S(""), &r, &route, &allow), MD_DECLINED, "empty path");
    is_int(md_router_match(rt, HTTP_GET, S("/"), &r, &route, &allow), MD_OK, "root");
    is_int(route->id, 5, "root route");

    is_int(md_router_match(rt, HTTP_GET, S("/v1/messages"), &r, &route, &allow), MD_ERROR,
           "GET on a POST-only path is 405");
    is_int(allow, MD_M_POST, "allow has POST only");
    char buf[96];
    md_router_allow_string(allow, buf, sizeof(buf));
    is_str(buf, "POST", "allow string");

    memset(&r, 0, sizeof(r));
    is_int(md_router_match(rt, HTTP_DELETE, S("/v1/messages/0192abc"), &r, &route, &allow), MD_OK,
           "DELETE with a parameter");
    is_int(route->id, 2, "param route");
    is_int(r.nparams, 1, "one param");
    ok(streq(md_http_param(&r, "id"), "0192abc"), "param value by name");
    ok(md_http_param(&r, "nope").data == NULL, "unknown param is null");

    memset(&r, 0, sizeof(r));
    is_int(md_router_match(rt, HTTP_GET, S("/v1/messages/search"), &r, &route, &allow), MD_OK,
           "literal vs param");
    is_int(route->id, 3, "the literal route wins though registered later");
    is_int(r.nparams, 0, "no params for the literal route");

    is_int(md_router_match(rt, HTTP_POST, S("/v1/messages/search"), &r, &route, &allow), MD_ERROR,
           "405 on a path two patterns match");
    md_router_allow_string(allow, buf, sizeof(buf));
    is_str(buf, "GET, HEAD, DELETE", "Allow is the union of matching patterns");

    memset(&r, 0, sizeof(r));
    is_int(md_router_match(rt, HTTP_PUT, S("/v1/tenants/acme/keys/k1"), &r, &route, &allow), MD_OK,
           "two params");
    is_int(r.nparams, 2, "two params set");
    ok(streq(r.params[0], "acme") && streq(r.params[1], "k1"), "params in route order");
    is_str(r.param_names[0], "tenant", "first param name");
    is_str(r.param_names[1], "key", "second param name");
    is_int(md_router_match(rt, HTTP_PUT, S("/v1/tenants//keys/k1"), &r, &route, &allow),
           MD_DECLINED, "an empty segment does not fill a parameter");
    is_int(md_router_match(rt, HTTP_PUT, S("/v1/tenants/a/keys/k1/x"), &r, &route, &allow),
           MD_DECLINED, "extra segment");
    is_int(md_router_match(rt, HTTP_PATCH, S("/v1/tenants/a/keys/k1"), &r, &route, &allow),
           MD_ERROR, "PATCH not allowed");
    is_int(allow, MD_M_PUT, "allow PUT");
    is_int(md_router_match(rt, HTTP_TRACE, S("/health"), NULL, &route, &allow), MD_ERROR,
           "unknown method on a known path is 405 (r may be NULL)");
    md_router_destroy(rt);
}

static void
test_bad_patterns(void)
{
    md_router_t *rt = md_router_create();
    const char *bad[] = {
        "",       "health", "//x",      "/a//b",
        "/a/",    "/{}",    "/{id",     "/a{id}",
        "/{id}x", "/{i d}", "/{a}/{a}", "/a b",
        "/a%20b", "/a?x=1", "/{a-b}",   "/1/2/3/4/5/6/7/8/9/10/11/12/13/14/15/16/17"};
    for (size_t i = 0; i < md_nelems(bad); i++)
        is_int(md_router_add(rt, MD_M_GET, bad[i], h_a), -1, "bad pattern '%s' refused", bad[i]);
    is_int(md_router_add(rt, MD_M_GET, NULL, h_a), -1, "NULL pattern refused");
    is_int(md_router_add(rt, 0, "/x", h_a), -1, "no methods refused");
    is_int(md_router_add(rt, MD_M_GET, "/x", NULL), -1, "no handler refused");
    is_int(md_router_add(rt, MD_M_GET, "/{a}/{b}/{c}/{d}/{e}/{f}/{g}/{h}/{i}", h_a), -1,
           "too many params refused");
    is_int(md_router_count(rt), 0, "nothing was added");
    is_int(md_router_add(rt, MD_M_GET, "/ok", h_a), 0, "ids stay dense after refusals");

    int last = 0;
    for (int i = 1; i < 200; i++) {
        char p[32];
        snprintf(p, sizeof(p), "/r%d", i);
        int id = md_router_add(rt, MD_M_GET, p, h_a);
        if (id < 0)
            break;
        last = id;
    }
    ok(last >= 1 && last < 63, "the table fills below the metrics' no-route id (last %d)", last);
    md_router_destroy(rt);
}

static void
test_allow_string(void)
{
    char buf[96];
    md_router_allow_string(MD_M_GET | MD_M_HEAD | MD_M_POST | MD_M_PUT | MD_M_PATCH | MD_M_DELETE |
                               MD_M_OPTIONS,
                           buf, sizeof(buf));
    is_str(buf, "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS", "all methods in order");
    md_router_allow_string(0, buf, sizeof(buf));
    is_str(buf, "", "none");
    char small[8];
    md_router_allow_string(MD_M_GET | MD_M_POST | MD_M_DELETE, small, sizeof(small));
    ok(strlen(small) < sizeof(small), "truncates safely: '%s'", small);
}

static void
test_api_routes(void)
{
    md_conf_t conf;
    memset(&conf, 0, sizeof(conf));
    md_router_t *rt = md_router_create();
    md_api_register(rt, &conf);
    unsigned n = md_router_count(rt);
    ok(n >= 2, "api registers /health and /metrics");
    is_str(md_router_get(rt, 0)->pattern, "/health", "/health is route 0");
    is_str(md_router_get(rt, 1)->pattern, "/metrics", "/metrics is route 1");
    md_router_destroy(rt);

    conf.debug_endpoints = 1;
    rt = md_router_create();
    md_api_register(rt, &conf);
    is_int(md_router_count(rt), n + 2, "debug routes added");
    is_str(md_router_get(rt, 0)->pattern, "/health", "public ids unchanged with debug on");
    is_str(md_router_get(rt, n)->pattern, "/debug/echo", "debug routes come last");
    const md_route_t *route;
    unsigned allow;
    is_int(md_router_match(rt, HTTP_GET, S("/debug/echo"), NULL, &route, &allow), MD_ERROR,
           "echo is POST only");
    md_router_destroy(rt);
}

int
main(void)
{
    test_ids_and_matching();
    test_bad_patterns();
    test_allow_string();
    test_api_routes();
    return done_testing();
}
