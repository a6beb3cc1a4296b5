/*
 * The queue control API (issue 5): GET /v1/queue/stats, POST /v1/queue/pause and
 * /resume, POST /v1/queue/retry-failed, GET /v1/queue/dead, and the global forms
 * under /v1/admin/queue/. Stub: routes registered by the owner of this file.
 */
#include "md_router.h"
#include "md_conf.h"

void md_api_queue_register(md_router_t *rt, const md_conf_t *conf);

void
md_api_queue_register(md_router_t *rt, const md_conf_t *conf)
{
    md_unused(rt);
    md_unused(conf);
}
