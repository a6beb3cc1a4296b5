/* md_api_webhooks: placeholder, being written (issue 7). */
#include "md_router.h"
#include "md_conf.h"

void md_api_webhooks_register(md_router_t *rt, const md_conf_t *conf);

void
md_api_webhooks_register(md_router_t *rt, const md_conf_t *conf)
{
    md_unused(rt);
    md_unused(conf);
}
