#include "md_pg.h"
/* stub: being written */
#include "md_conf.h"
/* Interim table until the postgres client lands: keeps the block parseable. */
static const md_conf_cmd_t md_pg_cmds[] = {
    {"dsn", MD_CONF_PG, MD_CONF_TAKE1, md_conf_set_str, offsetof(md_pg_conf_t, dsn), NULL, NULL,
     md_conf_free_str},
    {NULL, 0, 0, NULL, 0, NULL, NULL, NULL},
};
const md_conf_block_t md_pg_conf_block = {"postgres", MD_CONF_PG, md_pg_cmds};
