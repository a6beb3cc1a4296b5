#include "md_router.h"

/* /v1/templates. */
void md_api_templates_register(md_router_t *rt, const md_conf_t *conf);

void
md_api_templates_register(md_router_t *rt, const md_conf_t *conf)
{
    (void)rt;
    (void)conf;
}
