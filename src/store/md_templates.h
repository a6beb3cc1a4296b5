/*
 * A tenant's templates: storage, a per-worker cache of compiled templates, and
 * rendering with partials (other templates of the same tenant, by name).
 */
#ifndef MD_TEMPLATES_H
#define MD_TEMPLATES_H

#include "md_core.h"
#include "md_buf.h"
#include <jansson.h>

typedef struct md_tmpl_s md_tmpl_t; /* compiled subject/html/text + resolved partials; refcounted */

typedef void (*md_tmpl_cb)(void *ctx, md_tmpl_t *t, const char *err);

/*
 * Gets template id of tenant_id ready to render: from this worker's cache or
 * from PostgreSQL, with every partial it names (recursively) loaded too, so a
 * render needs no I/O. cb gets a reference (release it with md_tmpl_release) or
 * err "not_found" / a store error. MD_OK or MD_AGAIN (store down).
 * A template changed or deleted on any worker is seen by every worker within 1 s.
 */
int md_templates_get(const char *tenant_id, const char *id, md_tmpl_cb cb, void *ctx);
void md_tmpl_release(md_tmpl_t *t);

/*
 * Renders the three parts with vars (a JSON object): subject and text unescaped,
 * html HTML-escaped. Parts the template lacks are left empty and flagged in
 * *has_text / *has_html. MD_OK, or MD_ERROR with a message in err (e.g. output
 * over the size cap, partial recursion too deep).
 */
int md_tmpl_render(md_tmpl_t *t, json_t *vars, md_buf_t *subject, md_buf_t *text, md_buf_t *html,
                   int *has_text, int *has_html, char *err, size_t errlen);
const char *md_tmpl_id(const md_tmpl_t *t);

struct md_app_s;
int md_templates_app_init(struct md_app_s *app);
void md_templates_app_destroy(struct md_app_s *app);

#endif
