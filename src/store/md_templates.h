/*
 * A tenant's templates: storage, a per-worker cache of compiled templates, and
 * rendering with partials (other templates of the same tenant, by name).
 *
 * A template has a subject, and an html and/or a text part, each a Mustache
 * template (src/mail/md_template.h). A partial {{> name}} in a part renders the
 * same part (subject, text or html) of the tenant's live template called name;
 * a name that is no live template, or a template without that part, renders
 * empty (the Mustache rule for a failed lookup).
 *
 * Cache: per worker, of compiled templates keyed by (tenant, id) and (tenant,
 * name), with negative entries for names that are no template, bounded in
 * entries and bytes (least recently used goes first). Entries are immutable and
 * refcounted: a change drops them from the cache while renders holding them
 * finish. Every change (create, update, delete) is published on
 * MD_TEMPLATES_CHANNEL; every worker drops what it names. The cache is trusted
 * only while this worker's subscription is up (otherwise everything is read
 * from PostgreSQL), and entries are re-read after MD_TEMPLATES_CACHE_TTL anyway.
 */
#ifndef MD_TEMPLATES_H
#define MD_TEMPLATES_H

#include "md_core.h"
#include "md_buf.h"
#include "md_pg.h"
#include <jansson.h>

#define MD_TEMPLATE_NAME_MAX    200           /* characters (ASCII only, see md_template_name_ok) */
#define MD_TEMPLATE_SUBJECT_MAX 4096          /* bytes of subject source */
#define MD_TEMPLATE_PART_MAX    (512 * 1024)  /* bytes of html or text source */
#define MD_TEMPLATE_OUT_MAX     (1024 * 1024) /* bytes of rendered html or text */
#define MD_TEMPLATE_SUBJECT_OUT (16 * 1024)   /* bytes of rendered subject */
#define MD_TEMPLATE_CLOSURE_MAX 64            /* distinct partial names one template may pull in */
#define MD_TEMPLATES_PAGE_MAX   100
#define MD_TEMPLATES_CACHE_MAX  1000 /* entries per worker */
#define MD_TEMPLATES_CACHE_BYTES                                                                   \
    (64u << 20)                     /* source bytes (x2 for the compiled form) per worker */
#define MD_TEMPLATES_CACHE_TTL 60.0 /* seconds; insurance against a lost invalidation */
#define MD_TEMPLATES_CHANNEL   "mailerd:templates:changed"

typedef struct md_tmpl_s md_tmpl_t; /* compiled subject/html/text + resolved partials; refcounted */

typedef void (*md_tmpl_cb)(void *ctx, md_tmpl_t *t, const char *err);

/*
 * Gets template id of tenant_id ready to render: from this worker's cache or
 * from PostgreSQL, with every partial it names (recursively, up to
 * MD_TEMPLATE_CLOSURE_MAX names) loaded too, so a render needs no I/O. cb gets a
 * reference (release it with md_tmpl_release) or err: "not_found" (also for a
 * malformed id or another tenant's), "template_invalid" (a stored part no longer
 * compiles; logged), or a store error (md_app_store_down() tells 503).
 * MD_OK: cb runs exactly once, never before this call returns (a cache hit runs
 * it later in the same loop pass). MD_AGAIN: the store is down, cb will not run.
 * A template changed or deleted on any worker is seen by every worker within 1 s.
 */
int md_templates_get(const char *tenant_id, const char *id, md_tmpl_cb cb, void *ctx);
void md_tmpl_release(md_tmpl_t *t);

/*
 * Renders the three parts with vars (a JSON object): subject and text unescaped,
 * html HTML-escaped. Parts the template lacks are left empty and flagged in
 * *has_text / *has_html. MD_OK, or MD_ERROR with a message in err ("html:
 * output exceeds ...", "text: partials nested deeper than 32 (recursive partial
 * 'x'?)", ...); caps: MD_TEMPLATE_SUBJECT_OUT, MD_TEMPLATE_OUT_MAX per part, the
 * engine's partial depth and work caps. Appends to the buffers (NULL skips a
 * part). No I/O: t holds every partial. vars is only read.
 */
int md_tmpl_render(md_tmpl_t *t, json_t *vars, md_buf_t *subject, md_buf_t *text, md_buf_t *html,
                   int *has_text, int *has_html, char *err, size_t errlen);
const char *md_tmpl_id(const md_tmpl_t *t);

/*
 * True when name[0..len) is a valid template name: 1..MD_TEMPLATE_NAME_MAX of
 * A-Z a-z 0-9 and "_-.:/@+" (a name is what a {{> name}} tag says, so it holds
 * no whitespace, braces or delimiter characters, and needs no quoting anywhere).
 */
bool md_template_name_ok(const char *name, size_t len);

/*
 * The API's statements. Each queues one statement on this worker's pool and
 * returns as md_pg_exec: MD_OK (cb runs once, later), MD_AGAIN (not queued:
 * store unavailable) or MD_ERROR (bad arguments). Every one filters by
 * tenant_id, and only live (not deleted) templates are seen. Template JSON is
 * built by PostgreSQL: {id, name, subject, html, text, created_at, updated_at}
 * (html/text null when absent; timestamps RFC 3339 UTC with microseconds).
 * A name taken by another live template fails with sqlstate 23505.
 */
/* Rows: 1: 0 template JSON. html or text may be NULL (not both). */
int md_templates_create(const char *tenant_id, const char *id, const char *name,
                        const char *subject, const char *html, const char *text, md_pg_cb cb,
                        void *ctx);
/* Rows (at most limit, id > after in id order; after NULL: from the start):
 * 0 summary JSON {id, name, subject, has_html, has_text, created_at, updated_at}, 1 id. */
int md_templates_list(const char *tenant_id, const char *after, int limit, md_pg_cb cb, void *ctx);
/* Rows: 0 or 1: 0 template JSON. */
int md_templates_read(const char *tenant_id, const char *id, md_pg_cb cb, void *ctx);
/* Full replace. Rows: 0 or 1: 0 template JSON. */
int md_templates_update(const char *tenant_id, const char *id, const char *name,
                        const char *subject, const char *html, const char *text, md_pg_cb cb,
                        void *ctx);
/* Soft delete. Rows: 0 or 1: 0 id. */
int md_templates_delete(const char *tenant_id, const char *id, md_pg_cb cb, void *ctx);

/*
 * After a create, update or delete committed: drops template id and the name
 * (may be NULL: a delete) from this worker's cache and publishes the change so
 * every worker drops them. Returns MD_AGAIN when done(ctx) will run once every
 * worker the change reached has dropped them (md_broadcast: at most
 * MD_BROADCAST_WAIT seconds), MD_OK when done will not run (no Redis, or it is
 * down: the other workers then do not trust their caches, and the change is
 * published again later).
 */
int md_templates_changed(const char *tenant_id, const char *id, const char *name,
                         void (*done)(void *ctx), void *ctx);

struct md_app_s;
/* Registers the statements and the subscription (md_app_init, before the stores
 * start). MD_OK or MD_ERROR. */
int md_templates_app_init(struct md_app_s *app);
void md_templates_app_destroy(struct md_app_s *app);

#endif
