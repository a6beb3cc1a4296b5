/*
 * GET /v1/admin/esps (admin token): the health of each configured ESP account,
 * server-wide (md_route_stats_json): driver, circuit state (the worst of the
 * workers: open, half-open, closed) and each worker's breaker, configured and
 * effective rate, sends in flight and waiting for a token, sent / failed /
 * rejected / throttled counts, latency (mean, p50 and p90 from a histogram),
 * the recent errors of every worker (newest first, with times and the worker)
 * and, from the worker that answers, the account's connection pool.
 *
 * Scope: "server". Counters, gauges, breaker states and the recent errors live
 * in the metrics shared memory (md_metrics_esp_*), so every worker answers the
 * same figures. Connection pools are per worker by nature (each worker has its
 * own): "worker" and "pid" name the one that answered.
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
    json_object_set_new(o, "scope", json_string("server"));
    json_object_set_new(o, "recent_errors_scope", json_string("server"));
    json_object_set_new(o, "worker", json_integer(md_app ? (json_int_t)md_app->slot : 0));
    json_object_set_new(o, "pid", json_integer((json_int_t)getpid()));
    json_object_set_new(o, "data", md_route_stats_json(md_app ? md_app->conf : NULL));
    md_http_send_json(r, 200, o);
    return MD_OK;
}

void
md_api_esps_register(md_router_t *rt, const md_conf_t *conf)
{
    md_unused(conf);
    md_router_add(rt, MD_M_GET, "/v1/admin/esps", api_admin_esps);
}
