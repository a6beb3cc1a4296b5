/*
 * Arena allocator with cleanups. A connection, a request and (later) a delivery
 * job each own one pool; everything allocated from it dies with it, and cleanups
 * release foreign objects (PGresult, SSL, watchers) in reverse order.
 */
#ifndef MD_POOL_H
#define MD_POOL_H

#include "md_core.h"

typedef struct md_pool_s md_pool_t;
typedef void (*md_pool_cleanup_pt)(void *data);

md_pool_t *md_pool_create(size_t block_size);
void *md_palloc(md_pool_t *p, size_t n); /* aligned to 16 */
void *md_pcalloc(md_pool_t *p, size_t n);
char *md_pstrndup(md_pool_t *p, const char *s, size_t n); /* NUL-terminated copy */
void md_pool_cleanup_add(md_pool_t *p, md_pool_cleanup_pt fn, void *data);
/* Runs cleanups and frees all but the first block, ready for reuse. */
void md_pool_reset(md_pool_t *p);
void md_pool_destroy(md_pool_t *p);

#endif
