/*
 * GET /v1/admin/esps (admin token): the health of each ESP account as this
 * worker sees it (md_route_stats_json): driver, circuit state (closed, open,
 * half-open), configured and effective rate, sends in flight and waiting for a
 * token, sent/failed/rejected/throttled counts, recent errors (newest first,
 * with times), latency (mean and p50 of the last 64 sends) and the account's
 * connection pool.
 *
 * Scope: the worker that answers ("scope": "worker", with its "worker" slot
 * and "pid"). Breakers and counters are per worker by design (md_route.c);
 * only the rate's token bucket is shared (Redis). With several workers each
 * request may land on another one; a server-wide view would need the counters
 * in the metrics shared memory.
 */
#include "md_router.h"
#include "md_app.h"
#include "md_auth.h"
#include "md_conf.h"
#include "md_route.h"

#include <jansson.h>
#include <unistd.h>

void md_api_esps_register(md_router_t *rt, const md_conf_t *conf);

static int
api_admin_esps(md_http_request_t *r)
{
    if (md_auth_admin(r) != MD_OK)
        return MD_OK;
    json_t *o = json_object();
    json_object_set_new(o, "scope", json_string("worker"));
    json_object_set_new(o, "worker", json_integer(md_app ? (json_int_t)md_app->slot : 0));
    json_object_set_new(o, "pid", json_integer((json_int_t)getpid()));
    json_object_set_new(o, "data", md_route_stats_json());
    md_http_send_json(r, 200, o);
    return MD_OK;
}

void
md_api_esps_register(md_router_t *rt, const md_conf_t *conf)
{
    md_unused(conf);
    md_router_add(rt, MD_M_GET, "/v1/admin/esps", api_admin_esps);
}
