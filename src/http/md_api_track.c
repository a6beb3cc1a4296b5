#include "md_core.h"
#include "md_conf.h"
#include "md_router.h"

void md_api_track_register(md_router_t *rt, const md_conf_t *conf);

void
md_api_track_register(md_router_t *rt, const md_conf_t *conf)
{
    md_unused(rt);
    md_unused(conf);
}
