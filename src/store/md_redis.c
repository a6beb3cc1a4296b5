#include "md_redis.h"
/* stub: being written */
#include "md_conf.h"
/* Interim table until the redis client lands: keeps the block parseable. */
static const md_conf_cmd_t md_redis_cmds[] = {
    {"address", MD_CONF_REDIS, MD_CONF_TAKE1, md_conf_set_str, offsetof(md_redis_conf_t, address),
     NULL, NULL, md_conf_free_str},
    {NULL, 0, 0, NULL, 0, NULL, NULL, NULL},
};
const md_conf_block_t md_redis_conf_block = {"redis", MD_CONF_REDIS, md_redis_cmds};
