/*
 * Templates (see md_templates.h): the SQL, the per-worker cache of compiled
 * templates, loading a template with every partial it names, and rendering.
 *
 * Objects:
 *   tpl_entry_t  one stored template, compiled (or a negative entry: "no live
 *                template has this name"). Immutable once built; refcounted: the
 *                cache holds one reference while the entry is indexed, every
 *                bundle and loader that uses it one more.
 *   md_tmpl_t    a bundle: the template asked for plus every template its parts
 *                name as partials, transitively, sorted by name for the render's
 *                lookups. Handed to callers; refcounted.
 *   tpl_load_t   one md_templates_get in progress: resolves names round by round
 *                (cache first, then one query for all the names still unknown)
 *                until the closure is complete, then completes on the loop.
 *
 * The module's state is one tpl_state_t per worker, reachable through the
 * file-static `st` (NULL before init and after destroy). Store callbacks and
 * pub/sub messages find it through `st`, never through a pointer they were
 * handed, because md_app destroys the clients (running their owed callbacks)
 * before this module.
 */
#include "md_templates.h"
#include "md_broadcast.h"
#include "md_list.h"
#include "md_app.h"
#include "md_id.h"
#include "md_log.h"
#include "md_redis.h"
#include "md_template.h"

#include <ev.h>
#include <stdio.h>
#include <stdlib.h>

#define TPL_BUCKETS    2048 /* per index, power of two */
#define ENTRY_OVERHEAD 512  /* bytes counted per entry besides its sources */

enum { PART_SUBJECT = 0, PART_TEXT = 1, PART_HTML = 2, NPARTS = 3 };

typedef struct tpl_entry_s tpl_entry_t;

struct tpl_entry_s {
    unsigned refs;
    bool indexed; /* in the cache (both indexes for a positive entry, by name for a negative one) */
    bool negative; /* no live template has this name */
    char tenant_id[MD_UUID_STRLEN + 1];
    char id[MD_UUID_STRLEN + 1]; /* "" for a negative entry */
    char *name;
    size_t name_len;
    md_template_t *part[NPARTS]; /* NULL: the template has no such part */
    char **partials;             /* distinct valid names its parts include */
    size_t npartials;
    size_t bytes;                     /* counted against MD_TEMPLATES_CACHE_BYTES */
    double expires;                   /* ev_now after which the cache does not answer with it */
    tpl_entry_t *id_next, *name_next; /* bucket chains */
    md_list_t lru;                    /* on tpl_state_t.lru, most recently used first */
};

struct md_tmpl_s {
    unsigned refs;
    tpl_entry_t *root;
    tpl_entry_t **sorted; /* root and every partial found, by name */
    size_t n;
};

typedef struct tpl_load_s tpl_load_t;

struct tpl_load_s {
    md_tmpl_cb cb;
    void *ctx;
    char tenant_id[MD_UUID_STRLEN + 1];
    char id[MD_UUID_STRLEN + 1];
    uint64_t gen; /* st->gen when the load began: entries read later than a change are not cached */
    bool trusted; /* the cache may answer */
    tpl_entry_t *root;
    tpl_entry_t *have[MD_TEMPLATE_CLOSURE_MAX]; /* positive partial entries, refs held */
    size_t nhave;
    char *seen[MD_TEMPLATE_CLOSURE_MAX]; /* every name resolved or queued (dedupe, bound) */
    size_t nseen;
    char *want[MD_TEMPLATE_CLOSURE_MAX]; /* names to resolve next round (point into seen) */
    size_t nwant;
    char *fetch[MD_TEMPLATE_CLOSURE_MAX]; /* names this round must read from PostgreSQL */
    size_t nfetch;
    bool truncated;  /* more names than MD_TEMPLATE_CLOSURE_MAX: the rest render empty */
    const char *err; /* set when done with an error */
    md_tmpl_t *result;
    tpl_load_t *next; /* on the completion list */
};

typedef struct tpl_state_s {
    md_app_t *app;
    struct ev_loop *loop;
    tpl_entry_t *by_id[TPL_BUCKETS];
    tpl_entry_t *by_name[TPL_BUCKETS];
    md_list_t lru; /* cache entries, most recently used first */
    size_t nentries, bytes;
    /* Bumped on every invalidation and on (re)subscription. */
    uint64_t gen;
    /* Loads finished without I/O wait here until the loop runs them: a callback
     * never runs inside the call that registered it. */
    tpl_load_t *done_head, *done_tail;
    ev_idle done_w; /* never started: fed with ev_feed_event */
} tpl_state_t;

static tpl_state_t *st;

/* --- names ---------------------------------------------------------------------------- */

bool
md_template_name_ok(const char *name, size_t len)
{
    if (name == NULL || len == 0 || len > MD_TEMPLATE_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
            continue;
        if (c == '_' || c == '-' || c == '.' || c == ':' || c == '/' || c == '@' || c == '+')
            continue;
        return false;
    }
    return true;
}

/* --- SQL ---------------------------------------------------------------------------------- */

/* RFC 3339 in UTC with microseconds, independent of the session's TimeZone. */
#define TS(col) "to_char((" col ") AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"

#define TEMPLATE_JSON                                                                              \
    "json_build_object('id', id, 'name', name, 'subject', subject, 'html', html, 'text', text, "   \
    "'created_at', " TS("created_at") ", 'updated_at', " TS("updated_at") ")::text"

#define SUMMARY_JSON                                                                               \
    "json_build_object('id', id, 'name', name, 'subject', subject, "                               \
    "'has_html', html IS NOT NULL, 'has_text', text IS NOT NULL, "                                 \
    "'created_at', " TS("created_at") ", 'updated_at', " TS("updated_at") ")::text"

#define NIL_UUID "'00000000-0000-0000-0000-000000000000'::uuid"

/* Columns of the loader's statements. */
#define LOAD_COLS "id, name, subject, html, text"

typedef struct tpl_stmt_s {
    const char *name;
    int nparams;
    const char *sql;
} tpl_stmt_t;

static const tpl_stmt_t stmts[] = {
    {"tmpl_create", 6,
     "INSERT INTO templates (id, tenant_id, name, subject, html, text) "
     "VALUES ($1::uuid, $2::uuid, $3::text, $4::text, $5::text, $6::text) "
     "RETURNING " TEMPLATE_JSON},
    {"tmpl_list", 3,
     "SELECT " SUMMARY_JSON ", id FROM templates WHERE tenant_id = $1::uuid AND deleted_at IS NULL "
     "AND id > COALESCE($2::uuid, " NIL_UUID ") ORDER BY id LIMIT $3::int"},
    {"tmpl_read", 2,
     "SELECT " TEMPLATE_JSON " FROM templates "
     "WHERE tenant_id = $1::uuid AND id = $2::uuid AND deleted_at IS NULL"},
    /* clock_timestamp: two updates in one transaction still differ. */
    {"tmpl_update", 6,
     "UPDATE templates SET name = $3::text, subject = $4::text, html = $5::text, text = $6::text, "
     "updated_at = clock_timestamp() "
     "WHERE tenant_id = $1::uuid AND id = $2::uuid AND deleted_at IS NULL "
     "RETURNING " TEMPLATE_JSON},
    {"tmpl_delete", 2,
     "UPDATE templates SET deleted_at = clock_timestamp(), updated_at = clock_timestamp() "
     "WHERE tenant_id = $1::uuid AND id = $2::uuid AND deleted_at IS NULL RETURNING id"},
    {"tmpl_load_id", 2,
     "SELECT " LOAD_COLS " FROM templates "
     "WHERE tenant_id = $1::uuid AND id = $2::uuid AND deleted_at IS NULL"},
    {"tmpl_load_names", 2,
     "SELECT " LOAD_COLS " FROM templates "
     "WHERE tenant_id = $1::uuid AND name = ANY($2::text[]) AND deleted_at IS NULL"},
};

static int
exec(const char *stmt, int n, const char *const *values, md_pg_cb cb, void *ctx)
{
    if (md_app == NULL || md_app->pg == NULL)
        return MD_AGAIN;
    md_pg_query_t q = {.stmt = stmt, .nparams = n, .values = values};
    return md_pg_exec(md_app->pg, &q, cb, ctx);
}

int
md_templates_create(const char *tenant_id, const char *id, const char *name, const char *subject,
                    const char *html, const char *text, md_pg_cb cb, void *ctx)
{
    if (tenant_id == NULL || id == NULL || name == NULL || subject == NULL ||
        (html == NULL && text == NULL))
        return MD_ERROR;
    const char *v[] = {id, tenant_id, name, subject, html, text};
    return exec("tmpl_create", 6, v, cb, ctx);
}

int
md_templates_list(const char *tenant_id, const char *after, int limit, md_pg_cb cb, void *ctx)
{
    if (tenant_id == NULL || limit < 1)
        return MD_ERROR;
    char lim[16];
    snprintf(lim, sizeof(lim), "%d", limit);
    const char *v[] = {tenant_id, after, lim};
    return exec("tmpl_list", 3, v, cb, ctx);
}

int
md_templates_read(const char *tenant_id, const char *id, md_pg_cb cb, void *ctx)
{
    if (tenant_id == NULL || id == NULL)
        return MD_ERROR;
    const char *v[] = {tenant_id, id};
    return exec("tmpl_read", 2, v, cb, ctx);
}

int
md_templates_update(const char *tenant_id, const char *id, const char *name, const char *subject,
                    const char *html, const char *text, md_pg_cb cb, void *ctx)
{
    if (tenant_id == NULL || id == NULL || name == NULL || subject == NULL ||
        (html == NULL && text == NULL))
        return MD_ERROR;
    const char *v[] = {tenant_id, id, name, subject, html, text};
    return exec("tmpl_update", 6, v, cb, ctx);
}

int
md_templates_delete(const char *tenant_id, const char *id, md_pg_cb cb, void *ctx)
{
    if (tenant_id == NULL || id == NULL)
        return MD_ERROR;
    const char *v[] = {tenant_id, id};
    return exec("tmpl_delete", 2, v, cb, ctx);
}

/* --- entries -------------------------------------------------------------------------- */

static uint32_t
hash_key(const char *tenant_id, const char *key, size_t len)
{
    /* FNV-1a over the tenant id and the key: ids and names are short. */
    uint32_t h = 2166136261u;
    for (const char *p = tenant_id; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    h = (h ^ 0xff) * 16777619u;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)key[i]) * 16777619u;
    return h & (TPL_BUCKETS - 1);
}

static void
entry_free(tpl_entry_t *e)
{
    for (int i = 0; i < NPARTS; i++)
        md_template_free(e->part[i]);
    for (size_t i = 0; i < e->npartials; i++)
        free(e->partials[i]);
    free(e->partials);
    free(e->name);
    free(e);
}

static void
entry_unref(tpl_entry_t *e)
{
    if (e && --e->refs == 0)
        entry_free(e);
}

typedef struct collect_s {
    tpl_entry_t *e;
    size_t cap;
} collect_t;

/* md_template_partials visitor: adds each distinct valid name (an invalid one can
 * name no template, so it renders empty without a lookup). */
static void
collect_partial(void *ctx, const char *name, size_t len)
{
    collect_t *c = ctx;
    tpl_entry_t *e = c->e;
    if (!md_template_name_ok(name, len))
        return;
    for (size_t i = 0; i < e->npartials; i++)
        if (strlen(e->partials[i]) == len && memcmp(e->partials[i], name, len) == 0)
            return;
    if (e->npartials == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 4;
        e->partials = md_xrealloc(e->partials, c->cap * sizeof(*e->partials));
    }
    e->partials[e->npartials++] = md_xstrndup(name, len);
}

/*
 * Builds a positive entry from a loader row (columns of LOAD_COLS). Returns it
 * with one reference, or NULL when a stored part no longer compiles (saved by an
 * older version, or edited by hand), with the reason logged.
 */
static tpl_entry_t *
entry_from_row(const char *tenant_id, const PGresult *res, int row)
{
    tpl_entry_t *e = md_xcalloc(1, sizeof(*e));
    md_list_init(&e->lru);
    e->refs = 1;
    memcpy(e->tenant_id, tenant_id, MD_UUID_STRLEN + 1);
    md_strlcpy(e->id, PQgetvalue(res, row, 0), sizeof(e->id));
    e->name_len = (size_t)PQgetlength(res, row, 1);
    e->name = md_xstrndup(PQgetvalue(res, row, 1), e->name_len);
    e->bytes = ENTRY_OVERHEAD + e->name_len;
    static const int col[NPARTS] = {2, 4, 3}; /* subject, text, html */
    static const char *const label[NPARTS] = {"subject", "text", "html"};
    collect_t c = {e, 0};
    for (int i = 0; i < NPARTS; i++) {
        if (PQgetisnull(res, row, col[i]))
            continue;
        size_t len = (size_t)PQgetlength(res, row, col[i]);
        md_template_error_t err;
        if (md_template_compile(PQgetvalue(res, row, col[i]), len, &e->part[i], &err) != MD_OK) {
            md_logf(MD_LOG_ERROR, 0,
                    MD_LOG_FIELDS(MD_LS("template_id", e->id), MD_LS("part", label[i]),
                                  MD_LI("line", err.line), MD_LI("column", err.column),
                                  MD_LS("error", err.msg)),
                    "a stored template does not compile");
            entry_free(e);
            return NULL;
        }
        e->bytes += 2 * len;
        md_template_partials(e->part[i], collect_partial, &c);
    }
    return e;
}

static tpl_entry_t *
entry_negative(const char *tenant_id, const char *name)
{
    tpl_entry_t *e = md_xcalloc(1, sizeof(*e));
    md_list_init(&e->lru);
    e->refs = 1;
    e->negative = true;
    memcpy(e->tenant_id, tenant_id, MD_UUID_STRLEN + 1);
    e->name_len = strlen(name);
    e->name = md_xstrndup(name, e->name_len);
    e->bytes = ENTRY_OVERHEAD + e->name_len;
    return e;
}

/* --- the cache ------------------------------------------------------------------------ */

static void
chain_remove(tpl_entry_t **head, tpl_entry_t *e, bool by_id)
{
    for (tpl_entry_t **pp = head; *pp; pp = by_id ? &(*pp)->id_next : &(*pp)->name_next)
        if (*pp == e) {
            *pp = by_id ? e->id_next : e->name_next;
            return;
        }
}

/* Takes e out of the cache and drops the cache's reference (renders holding it finish). */
static void
cache_remove(tpl_state_t *s, tpl_entry_t *e)
{
    if (!e->indexed)
        return;
    if (!e->negative)
        chain_remove(&s->by_id[hash_key(e->tenant_id, e->id, MD_UUID_STRLEN)], e, true);
    chain_remove(&s->by_name[hash_key(e->tenant_id, e->name, e->name_len)], e, false);
    md_list_remove(&e->lru);
    e->indexed = false;
    s->nentries--;
    s->bytes -= e->bytes;
    entry_unref(e);
}

static void
cache_flush(tpl_state_t *s)
{
    for (md_list_t *n; (n = md_list_first(&s->lru)) != NULL;)
        cache_remove(s, md_list_data(n, tpl_entry_t, lru));
}

static bool
cache_trusted(const tpl_state_t *s)
{
    return s->app && s->app->redis && md_redis_subscribed(s->app->redis);
}

/* A live entry: fresh entries move to the front; an expired one is dropped. */
static tpl_entry_t *
cache_hit(tpl_state_t *s, tpl_entry_t *e)
{
    if (e->expires <= ev_now(s->loop)) {
        cache_remove(s, e);
        return NULL;
    }
    md_list_remove(&e->lru);
    md_list_insert_head(&s->lru, &e->lru);
    return e;
}

static tpl_entry_t *
cache_find_id(tpl_state_t *s, const char *tenant_id, const char *id)
{
    for (tpl_entry_t *e = s->by_id[hash_key(tenant_id, id, MD_UUID_STRLEN)]; e; e = e->id_next)
        if (strcmp(e->id, id) == 0 && strcmp(e->tenant_id, tenant_id) == 0)
            return cache_hit(s, e);
    return NULL;
}

static tpl_entry_t *
cache_find_name(tpl_state_t *s, const char *tenant_id, const char *name)
{
    size_t len = strlen(name);
    for (tpl_entry_t *e = s->by_name[hash_key(tenant_id, name, len)]; e; e = e->name_next)
        if (e->name_len == len && memcmp(e->name, name, len) == 0 &&
            strcmp(e->tenant_id, tenant_id) == 0)
            return cache_hit(s, e);
    return NULL;
}

/* Drops what the cache holds for id (when given) and for name (when given). */
static void
cache_drop(tpl_state_t *s, const char *tenant_id, const char *id, const char *name, size_t len)
{
    if (id) {
        tpl_entry_t *e = s->by_id[hash_key(tenant_id, id, strlen(id))];
        for (; e; e = e->id_next)
            if (strcmp(e->id, id) == 0 && strcmp(e->tenant_id, tenant_id) == 0) {
                cache_remove(s, e);
                break;
            }
    }
    if (name) {
        tpl_entry_t *e = s->by_name[hash_key(tenant_id, name, len)];
        for (; e; e = e->name_next)
            if (e->name_len == len && memcmp(e->name, name, len) == 0 &&
                strcmp(e->tenant_id, tenant_id) == 0) {
                cache_remove(s, e);
                break;
            }
    }
}

/* Indexes e (the cache takes a reference of its own), replacing whatever holds
 * its id or name, then evicts from the cold end down to the bounds. */
static void
cache_put(tpl_state_t *s, tpl_entry_t *e)
{
    cache_drop(s, e->tenant_id, e->negative ? NULL : e->id, e->name, e->name_len);
    if (e->bytes > MD_TEMPLATES_CACHE_BYTES / 4)
        return; /* one huge template must not empty the cache */
    e->refs++;
    e->indexed = true;
    e->expires = ev_now(s->loop) + MD_TEMPLATES_CACHE_TTL;
    if (!e->negative) {
        size_t b = hash_key(e->tenant_id, e->id, MD_UUID_STRLEN);
        e->id_next = s->by_id[b];
        s->by_id[b] = e;
    }
    size_t b = hash_key(e->tenant_id, e->name, e->name_len);
    e->name_next = s->by_name[b];
    s->by_name[b] = e;
    md_list_insert_head(&s->lru, &e->lru);
    s->nentries++;
    s->bytes += e->bytes;
    for (md_list_t *n;
         (s->nentries > MD_TEMPLATES_CACHE_MAX || s->bytes > MD_TEMPLATES_CACHE_BYTES) &&
         (n = md_list_last(&s->lru)) != NULL && n != &e->lru;)
        cache_remove(s, md_list_data(n, tpl_entry_t, lru));
}

/* --- invalidation over pub/sub ------------------------------------------------------------ */

/* Applies a change message "tenant_id id [name]" (the form md_templates_changed
 * publishes); anything malformed flushes everything, the safe reading. */
static void
apply_change(tpl_state_t *s, const char *p, size_t len)
{
    s->gen++;
    char tenant[MD_UUID_STRLEN + 1], id[MD_UUID_STRLEN + 1];
    if (len < 2 * MD_UUID_STRLEN + 1 || p[MD_UUID_STRLEN] != ' ') {
        cache_flush(s);
        return;
    }
    memcpy(tenant, p, MD_UUID_STRLEN);
    tenant[MD_UUID_STRLEN] = '\0';
    memcpy(id, p + MD_UUID_STRLEN + 1, MD_UUID_STRLEN);
    id[MD_UUID_STRLEN] = '\0';
    const char *name = NULL;
    size_t nlen = 0;
    size_t used = 2 * MD_UUID_STRLEN + 1;
    if (len > used + 1 && p[used] == ' ') {
        name = p + used + 1;
        nlen = len - used - 1;
    } else if (len != used) {
        cache_flush(s);
        return;
    }
    cache_drop(s, tenant, id, name, nlen);
}

static void
on_change_msg(void *ctx, const char *payload, size_t len)
{
    md_unused(ctx);
    if (st == NULL)
        return;
    apply_change(st, payload, md_broadcast_body(payload, len));
    md_broadcast_applied(st->app ? st->app->redis : NULL, payload, len);
}

static void
on_resubscribe(void *ctx)
{
    md_unused(ctx);
    tpl_state_t *s = st;
    if (s == NULL)
        return;
    /* Changes published while we were not subscribed are lost: start over. */
    s->gen++;
    if (s->nentries)
        md_logf(MD_LOG_INFO, 0, MD_LOG_FIELDS(MD_LI("entries", s->nentries)),
                "template channel subscribed, template cache flushed");
    cache_flush(s);
}

int
md_templates_changed(const char *tenant_id, const char *id, const char *name,
                     void (*done)(void *ctx), void *ctx)
{
    tpl_state_t *s = st;
    if (s == NULL || tenant_id == NULL || id == NULL || strlen(tenant_id) != MD_UUID_STRLEN ||
        strlen(id) != MD_UUID_STRLEN)
        return MD_OK;
    size_t nlen = name ? strlen(name) : 0;
    char *payload = md_xmalloc(2 * MD_UUID_STRLEN + 3 + nlen);
    if (name)
        snprintf(payload, 2 * MD_UUID_STRLEN + 3 + nlen, "%s %s %s", tenant_id, id, name);
    else
        snprintf(payload, 2 * MD_UUID_STRLEN + 3 + nlen, "%s %s", tenant_id, id);
    apply_change(s, payload, strlen(payload));
    /* Kept until Redis takes it when it cannot now (md_broadcast_or_keep); the
     * other workers re-read their entries within MD_TEMPLATES_CACHE_TTL anyway. */
    int rc = s->app ? md_broadcast_or_keep(s->app->redis, s->loop, MD_TEMPLATES_CHANNEL, payload,
                                           strlen(payload), done, ctx)
                    : MD_AGAIN;
    free(payload);
    return rc == MD_OK ? MD_AGAIN : MD_OK;
}

/* --- bundles ------------------------------------------------------------------------------ */

static int
entry_name_cmp(const void *a, const void *b)
{
    const tpl_entry_t *x = *(tpl_entry_t *const *)a, *y = *(tpl_entry_t *const *)b;
    return strcmp(x->name, y->name);
}

typedef struct lookup_ctx_s {
    const md_tmpl_t *t;
    int part;
} lookup_ctx_t;

/* md_template_partial_pt: the same part of the bundle's template called name. */
static const md_template_t *
partial_lookup(void *vctx, const char *name, size_t len)
{
    const lookup_ctx_t *c = vctx;
    size_t lo = 0, hi = c->t->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const tpl_entry_t *e = c->t->sorted[mid];
        int cmp = strncmp(e->name, name, len);
        if (cmp == 0)
            cmp = e->name_len == len ? 0 : 1; /* e->name is longer: it sorts after */
        if (cmp == 0)
            return e->part[c->part];
        if (cmp < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

void
md_tmpl_release(md_tmpl_t *t)
{
    if (t == NULL || --t->refs > 0)
        return;
    for (size_t i = 0; i < t->n; i++)
        entry_unref(t->sorted[i]);
    free(t->sorted);
    free(t);
}

const char *
md_tmpl_id(const md_tmpl_t *t)
{
    return t ? t->root->id : NULL;
}

int
md_tmpl_render(md_tmpl_t *t, json_t *vars, md_buf_t *subject, md_buf_t *text, md_buf_t *html,
               int *has_text, int *has_html, char *err, size_t errlen)
{
    static const char *const label[NPARTS] = {"subject", "text", "html"};
    md_buf_t *out[NPARTS] = {subject, text, html};
    static const size_t cap[NPARTS] = {MD_TEMPLATE_SUBJECT_OUT, MD_TEMPLATE_OUT_MAX,
                                       MD_TEMPLATE_OUT_MAX};
    if (has_text)
        *has_text = t->root->part[PART_TEXT] != NULL;
    if (has_html)
        *has_html = t->root->part[PART_HTML] != NULL;
    for (int i = 0; i < NPARTS; i++) {
        if (t->root->part[i] == NULL || out[i] == NULL)
            continue;
        lookup_ctx_t lc = {t, i};
        md_template_error_t e;
        if (md_template_render(t->root->part[i], vars,
                               i == PART_HTML ? MD_TEMPLATE_ESCAPE_HTML : MD_TEMPLATE_ESCAPE_NONE,
                               partial_lookup, &lc, cap[i], out[i], &e) != MD_OK) {
            if (err && errlen)
                snprintf(err, errlen, "%s: %s", label[i], e.msg);
            return MD_ERROR;
        }
    }
    return MD_OK;
}

/* --- loading -------------------------------------------------------------------------------- */

static void load_names_cb(void *ctx, const md_pg_result_t *res);

static void
load_free(tpl_load_t *l)
{
    entry_unref(l->root);
    for (size_t i = 0; i < l->nhave; i++)
        entry_unref(l->have[i]);
    for (size_t i = 0; i < l->nseen; i++)
        free(l->seen[i]);
    md_tmpl_release(l->result);
    free(l);
}

/* Runs the load's callback (from the loop or a store callback) and frees it. */
static void
load_finish(tpl_load_t *l)
{
    md_tmpl_t *t = l->result;
    l->result = NULL; /* the reference goes to the callback */
    l->cb(l->ctx, t, t ? NULL : (l->err ? l->err : "unavailable"));
    load_free(l);
}

static void
done_cb(struct ev_loop *loop, ev_idle *w, int revents)
{
    md_unused(loop);
    md_unused(w);
    md_unused(revents);
    tpl_state_t *s = st;
    if (s == NULL)
        return;
    /* Callbacks may start loads that complete at once: they wait for the next feed. */
    tpl_load_t *l = s->done_head;
    s->done_head = s->done_tail = NULL;
    while (l) {
        tpl_load_t *next = l->next;
        load_finish(l);
        l = next;
    }
}

/* Completes l from the loop, never inside the call that started it. */
static void
load_defer(tpl_state_t *s, tpl_load_t *l)
{
    l->next = NULL;
    if (s->done_tail)
        s->done_tail->next = l;
    else
        s->done_head = l;
    s->done_tail = l;
    ev_feed_event(s->loop, &s->done_w, EV_CUSTOM);
}

/* Queues name (when new and within the bound) for the next round. */
static void
want_name(tpl_load_t *l, const char *name)
{
    for (size_t i = 0; i < l->nseen; i++)
        if (strcmp(l->seen[i], name) == 0)
            return;
    if (l->root && strcmp(l->root->name, name) == 0)
        return;
    if (l->nseen == MD_TEMPLATE_CLOSURE_MAX) {
        if (!l->truncated)
            md_logf(MD_LOG_WARN, 0,
                    MD_LOG_FIELDS(MD_LS("template_id", l->id), MD_LS("partial", name),
                                  MD_LI("max", MD_TEMPLATE_CLOSURE_MAX)),
                    "template names too many partials, the rest render empty");
        l->truncated = true;
        return;
    }
    char *copy = md_xstrdup(name);
    l->seen[l->nseen++] = copy;
    l->want[l->nwant++] = copy;
}

static void
want_partials_of(tpl_load_t *l, const tpl_entry_t *e)
{
    for (size_t i = 0; i < e->npartials; i++)
        want_name(l, e->partials[i]);
}

/* Builds the bundle from the root and what was found. */
static md_tmpl_t *
bundle_make(tpl_load_t *l)
{
    md_tmpl_t *t = md_xcalloc(1, sizeof(*t));
    t->refs = 1;
    t->root = l->root;
    t->sorted = md_xmalloc((l->nhave + 1) * sizeof(*t->sorted));
    t->sorted[t->n++] = l->root;
    l->root = NULL;
    for (size_t i = 0; i < l->nhave; i++)
        t->sorted[t->n++] = l->have[i];
    l->nhave = 0;
    qsort(t->sorted, t->n, sizeof(*t->sorted), entry_name_cmp);
    return t;
}

/*
 * One round: resolves the wanted names from the cache when it may answer,
 * collecting the others for one query. Returns MD_AGAIN while that query runs,
 * MD_DONE when l is complete (l->result or l->err set), MD_ERROR when the query
 * could not be queued (l->err set).
 */
static int
load_step(tpl_state_t *s, tpl_load_t *l)
{
    while (l->nwant) {
        l->nfetch = 0;
        size_t n = l->nwant;
        l->nwant = 0;
        char *batch[MD_TEMPLATE_CLOSURE_MAX];
        memcpy(batch, l->want, n * sizeof(*batch));
        for (size_t i = 0; i < n; i++) {
            tpl_entry_t *e = l->trusted ? cache_find_name(s, l->tenant_id, batch[i]) : NULL;
            if (e == NULL) {
                l->fetch[l->nfetch++] = batch[i];
                continue;
            }
            if (e->negative)
                continue;
            e->refs++;
            l->have[l->nhave++] = e;
            want_partials_of(l, e);
        }
        if (l->nfetch == 0)
            continue;
        /* An array literal {"a","b"}: valid names hold no quote, backslash,
         * comma, brace or space, so quoting them is enough. */
        size_t len = 3;
        for (size_t i = 0; i < l->nfetch; i++)
            len += strlen(l->fetch[i]) + 3;
        char *arr = md_xmalloc(len), *p = arr;
        *p++ = '{';
        for (size_t i = 0; i < l->nfetch; i++) {
            size_t k = strlen(l->fetch[i]);
            if (i)
                *p++ = ',';
            *p++ = '"';
            memcpy(p, l->fetch[i], k);
            p += k;
            *p++ = '"';
        }
        *p++ = '}';
        *p = '\0';
        const char *v[] = {l->tenant_id, arr};
        int rc = exec("tmpl_load_names", 2, v, load_names_cb, l);
        free(arr);
        if (rc != MD_OK) {
            l->err = "unavailable";
            return MD_ERROR;
        }
        return MD_AGAIN;
    }
    l->result = bundle_make(l);
    return MD_DONE;
}

/* Common handling of a loader's query answer: false when l was finished here. */
static bool
load_result_ok(tpl_load_t *l, const md_pg_result_t *res)
{
    if (res->error == NULL && st != NULL)
        return true;
    if (res->error && !md_app_store_down(res->error))
        md_logf(MD_LOG_ERROR, 0,
                MD_LOG_FIELDS(MD_LS("error", res->error),
                              MD_LS("sqlstate", res->sqlstate ? res->sqlstate : ""),
                              MD_LS("detail", res->message ? res->message : "")),
                "template load failed");
    l->err = res->error ? res->error : "unavailable";
    load_finish(l);
    return false;
}

static void
load_continue(tpl_load_t *l)
{
    if (load_step(st, l) != MD_AGAIN)
        load_finish(l);
}

static void
load_names_cb(void *ctx, const md_pg_result_t *res)
{
    tpl_load_t *l = ctx;
    if (!load_result_ok(l, res))
        return;
    tpl_state_t *s = st;
    bool cache = l->trusted && l->gen == s->gen;
    int rows = PQntuples(res->res);
    bool found[MD_TEMPLATE_CLOSURE_MAX] = {false};
    for (int r = 0; r < rows; r++) {
        const char *name = PQgetvalue(res->res, r, 1);
        size_t k = 0;
        while (k < l->nfetch && strcmp(l->fetch[k], name) != 0)
            k++;
        if (k == l->nfetch || found[k])
            continue;
        found[k] = true;
        tpl_entry_t *e = entry_from_row(l->tenant_id, res->res, r);
        if (e == NULL)
            continue; /* logged; renders empty like a missing partial */
        if (cache)
            cache_put(s, e);
        l->have[l->nhave++] = e; /* the load's reference */
        want_partials_of(l, e);
    }
    for (size_t k = 0; k < l->nfetch; k++) {
        if (found[k] || !cache)
            continue;
        tpl_entry_t *e = entry_negative(l->tenant_id, l->fetch[k]);
        cache_put(s, e);
        entry_unref(e);
    }
    l->nfetch = 0;
    load_continue(l);
}

static void
load_id_cb(void *ctx, const md_pg_result_t *res)
{
    tpl_load_t *l = ctx;
    if (!load_result_ok(l, res))
        return;
    tpl_state_t *s = st;
    if (PQntuples(res->res) < 1) {
        l->err = "not_found";
        load_finish(l);
        return;
    }
    tpl_entry_t *e = entry_from_row(l->tenant_id, res->res, 0);
    if (e == NULL) {
        l->err = "template_invalid";
        load_finish(l);
        return;
    }
    if (l->trusted && l->gen == s->gen)
        cache_put(s, e);
    l->root = e;
    want_partials_of(l, e);
    load_continue(l);
}

int
md_templates_get(const char *tenant_id, const char *id, md_tmpl_cb cb, void *ctx)
{
    tpl_state_t *s = st;
    if (s == NULL || s->app->pg == NULL || tenant_id == NULL || id == NULL || cb == NULL)
        return MD_AGAIN;
    tpl_load_t *l = md_xcalloc(1, sizeof(*l));
    l->cb = cb;
    l->ctx = ctx;
    l->gen = s->gen;
    l->trusted = cache_trusted(s);
    if (strlen(tenant_id) != MD_UUID_STRLEN || strlen(id) != MD_UUID_STRLEN) {
        l->err = "not_found"; /* no template has a malformed id */
        load_defer(s, l);
        return MD_OK;
    }
    memcpy(l->tenant_id, tenant_id, MD_UUID_STRLEN + 1);
    memcpy(l->id, id, MD_UUID_STRLEN + 1);

    tpl_entry_t *e = l->trusted ? cache_find_id(s, tenant_id, id) : NULL;
    if (e) {
        e->refs++;
        l->root = e;
        want_partials_of(l, e);
        int rc = load_step(s, l);
        if (rc == MD_AGAIN)
            return MD_OK;
        if (rc == MD_DONE) {
            load_defer(s, l);
            return MD_OK;
        }
        load_free(l);
        return MD_AGAIN;
    }
    const char *v[] = {l->tenant_id, l->id};
    if (exec("tmpl_load_id", 2, v, load_id_cb, l) != MD_OK) {
        load_free(l);
        return MD_AGAIN;
    }
    return MD_OK;
}

/* --- lifecycle ------------------------------------------------------------------------------ */

int
md_templates_app_init(md_app_t *app)
{
    if (st != NULL)
        return MD_ERROR;
    tpl_state_t *s = md_xcalloc(1, sizeof(*s));
    md_list_init(&s->lru);
    s->app = app;
    s->loop = app->loop;
    if (app->pg) {
        for (size_t i = 0; i < md_nelems(stmts); i++)
            if (md_pg_prepare(app->pg, stmts[i].name, stmts[i].sql, stmts[i].nparams) != MD_OK) {
                md_log(MD_LOG_ERROR, 0, "cannot register the template statements");
                free(s);
                return MD_ERROR;
            }
    }
    if (app->redis && md_redis_subscribe(app->redis, MD_TEMPLATES_CHANNEL, on_change_msg,
                                         on_resubscribe, NULL) != MD_OK) {
        md_log(MD_LOG_ERROR, 0, "cannot subscribe to the template channel");
        free(s);
        return MD_ERROR;
    }
    ev_idle_init(&s->done_w, done_cb);
    st = s;
    return MD_OK;
}

void
md_templates_app_destroy(md_app_t *app)
{
    md_unused(app);
    tpl_state_t *s = st;
    if (s == NULL)
        return;
    /* Loads that completed but were not delivered yet: deliver them now, while
     * their callers' requests are still allocated. */
    ev_clear_pending(s->loop, &s->done_w);
    while (s->done_head) {
        tpl_load_t *l = s->done_head;
        s->done_head = l->next;
        if (s->done_head == NULL)
            s->done_tail = NULL;
        load_finish(l);
    }
    cache_flush(s);
    free(s);
    st = NULL;
}
