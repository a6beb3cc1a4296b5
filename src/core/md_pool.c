#include "md_pool.h"

#include <stdlib.h>

typedef struct md_pool_block_s {
    struct md_pool_block_s *next;
    char *last;
    char *end;
    max_align_t align[]; /* data starts here, suitably aligned */
} md_pool_block_t;

typedef struct md_pool_cleanup_s {
    md_pool_cleanup_pt fn;
    void *data;
    struct md_pool_cleanup_s *next;
} md_pool_cleanup_t;

struct md_pool_s {
    md_pool_block_t *first; /* kept across resets */
    md_pool_block_t *current;
    md_pool_cleanup_t *cleanups;
    size_t block_size;
};

#define MD_POOL_ALIGN  16
#define md_align_up(n) (((n) + (MD_POOL_ALIGN - 1)) & ~(size_t)(MD_POOL_ALIGN - 1))

static md_pool_block_t *
block_new(size_t size)
{
    md_pool_block_t *b = md_xmalloc(sizeof(*b) + size);
    b->next = NULL;
    b->last = (char *)b->align;
    b->end = b->last + size;
    return b;
}

md_pool_t *
md_pool_create(size_t block_size)
{
    md_pool_t *p = md_xmalloc(sizeof(*p));
    p->block_size = block_size < 256 ? 256 : block_size;
    p->first = p->current = block_new(p->block_size);
    p->cleanups = NULL;
    return p;
}

void *
md_palloc(md_pool_t *p, size_t n)
{
    n = md_align_up(n ? n : 1);
    md_pool_block_t *b = p->current;
    if ((size_t)(b->end - b->last) >= n) {
        void *r = b->last;
        b->last += n;
        return r;
    }
    /* Large allocations get a block of their own so they do not waste the rest. */
    size_t size = n > p->block_size / 2 ? n : p->block_size;
    md_pool_block_t *nb = block_new(size);
    if (size == n) {
        nb->next = b->next;
        b->next = nb;
        nb->last += n;
        return nb->align;
    }
    /* b->next may be a large block linked in above: keep it on the chain. */
    nb->next = b->next;
    b->next = nb;
    p->current = nb;
    void *r = nb->last;
    nb->last += n;
    return r;
}

void *
md_pcalloc(md_pool_t *p, size_t n)
{
    void *r = md_palloc(p, n);
    memset(r, 0, n);
    return r;
}

char *
md_pstrndup(md_pool_t *p, const char *s, size_t n)
{
    char *r = md_palloc(p, n + 1);
    if (n > 0) /* s may be NULL when n is 0 (an empty md_buf_t's pos) */
        memcpy(r, s, n);
    r[n] = '\0';
    return r;
}

void
md_pool_cleanup_add(md_pool_t *p, md_pool_cleanup_pt fn, void *data)
{
    md_pool_cleanup_t *c = md_palloc(p, sizeof(*c));
    c->fn = fn;
    c->data = data;
    c->next = p->cleanups;
    p->cleanups = c;
}

static void
run_cleanups(md_pool_t *p)
{
    /* A cleanup may add another; take the list each round. */
    while (p->cleanups) {
        md_pool_cleanup_t *c = p->cleanups;
        p->cleanups = c->next;
        c->fn(c->data);
    }
}

void
md_pool_reset(md_pool_t *p)
{
    run_cleanups(p);
    md_pool_block_t *b = p->first->next;
    while (b) {
        md_pool_block_t *n = b->next;
        free(b);
        b = n;
    }
    p->first->next = NULL;
    p->first->last = (char *)p->first->align;
    p->current = p->first;
}

void
md_pool_destroy(md_pool_t *p)
{
    if (p == NULL)
        return;
    md_pool_reset(p);
    free(p->first);
    free(p);
}
