#include "md_router.h"

/* /v1/messages, /v1/messages/batch, /v1/batches. */
void md_api_messages_register(md_router_t *rt, const md_conf_t *conf);

void
md_api_messages_register(md_router_t *rt, const md_conf_t *conf)
{
    (void)rt;
    (void)conf;
}
