/*
 * Templates API (tenant API key, see md_auth.h):
 *   POST   /v1/templates                  {name, subject, html?, text?}  201 template
 *   GET    /v1/templates?limit=&cursor=                                  200 {data, next_cursor}
 *   GET    /v1/templates/{id}                                            200 template
 *   PUT    /v1/templates/{id}             {name, subject, html?, text?}  200 template (full
 * replace) DELETE /v1/templates/{id}             soft delete                    204 POST
 * /v1/templates/{id}/render      {variables?}                   200 {subject, text, html}
 *
 * A template is {id, name, subject, html, text, created_at, updated_at}; listings
 * give summaries (no bodies: a page of 512 KB parts would be huge) with has_html
 * and has_text. Listings page by id (UUIDv7: creation order); next_cursor is the
 * last id of the page, or null on the last page.
 *
 * Errors: 400 invalid_json; 422 validation_failed with "field" (a JSON pointer);
 * 422 template_syntax_error with field, line and column (1-based, the column in
 * characters) of the part that does not compile; 409 template_name_taken; 404
 * not_found for an unknown, deleted, other tenant's or malformed id; 422
 * template_render_failed when a preview exceeds a cap (output size, partial
 * depth: a template that includes itself, work); 503 store_unavailable.
 *
 * Changes answer only after every worker dropped the old version (see
 * md_templates_changed and md_broadcast), so a client that got its answer
 * knows every worker renders the new version.
 */
#include "md_router.h"
#include "md_api_util.h"
#include "md_auth.h"
#include "md_log.h"
#include "md_pg.h"
#include "md_template.h"
#include "md_templates.h"
#include "md_tenants.h"

#include <stdio.h>
#include <stdlib.h>

#define PAGE_DEFAULT 50

void md_api_templates_register(md_router_t *rt, const md_conf_t *conf);

/* One request's state across its store calls; in r->pool. */
typedef struct tpl_req_s {
    md_http_request_t *r;
    int limit;
    int status;  /* answer status once the change is published */
    json_t *out; /* answer held while the change is published (NULL: 204) */
    json_t *vars;
    char tenant_id[MD_UUID_STRLEN + 1];
    char id[MD_UUID_STRLEN + 1];
} tpl_req_t;

static tpl_req_t *
req_ctx(md_http_request_t *r, const md_identity_t *who)
{
    tpl_req_t *q = md_pcalloc(r->pool, sizeof(*q));
    q->r = r;
    memcpy(q->tenant_id, who->tenant_id, sizeof(q->tenant_id));
    return q;
}

/* --- answers ------------------------------------------------------------------------ */

static int
send_not_found(md_http_request_t *r)
{
    md_http_send_error(r, 404, "not_found", "no such template");
    return MD_OK;
}

/* md_api_pg_ok, with a name taken answered 409. */
static bool
pg_ok(md_http_request_t *r, const md_pg_result_t *res)
{
    if (!r->aborted && res->error && !md_app_store_down(res->error) && res->sqlstate &&
        strcmp(res->sqlstate, "23505") == 0) {
        json_t *e =
            json_pack("{s:{s:s,s:s,s:s}}", "error", "code", "template_name_taken", "message",
                      "another template of this tenant has that name", "field", "/name");
        md_http_send_json(r, 409, e);
        return false;
    }
    return md_api_pg_ok(r, res, "template");
}

static json_t *
row_json(const PGresult *res, int row, int col)
{
    return md_tenants_row_json(res, row, col);
}

static void
change_published(void *ctx)
{
    tpl_req_t *q = ctx;
    if (q->out)
        md_http_send_json(q->r, q->status, q->out); /* a no-op (freeing out) if the client left */
    else
        md_http_send(q->r, q->status, NULL, NULL, 0);
}

/* Answers out (NULL: no body) with status once every worker has been told. */
static void
send_after_change(tpl_req_t *q, const char *name, int status, json_t *out)
{
    q->status = status;
    q->out = out;
    if (md_templates_changed(q->tenant_id, q->id, name, change_published, q) == MD_AGAIN)
        return;
    change_published(q);
}

/* --- input ---------------------------------------------------------------------------- */

/* A template's fields as validated, pointing into the body. */
typedef struct tpl_fields_s {
    const char *name, *subject, *html, *text;
} tpl_fields_t;

/* Compiles one part to check it; answers 422 template_syntax_error when it does not. */
static bool
check_syntax(md_http_request_t *r, const char *field, const char *src, size_t len)
{
    md_template_t *t;
    md_template_error_t err;
    if (md_template_compile(src, len, &t, &err) == MD_OK) {
        md_template_free(t);
        return true;
    }
    /* The message quotes the template and may have cut a UTF-8 character in two:
     * jansson only takes valid UTF-8, so such a message loses its non-ASCII bytes. */
    json_t *m = json_string(err.msg);
    if (m == NULL) {
        for (char *p = err.msg; *p; p++)
            if ((unsigned char)*p >= 0x80)
                *p = '?';
        m = json_string(err.msg);
    }
    json_t *e = json_pack("{s:{s:s,s:o,s:s,s:I,s:I}}", "error", "code", "template_syntax_error",
                          "message", m, "field", field, "line", (json_int_t)err.line, "column",
                          (json_int_t)err.column);
    md_http_send_json(r, 422, e);
    return false;
}

/* A part: absent or null (NULL), or a string of at most max bytes that compiles. */
static bool
check_part(md_http_request_t *r, json_t *b, const char *key, const char *field, size_t max,
           const char **out)
{
    json_t *v = json_object_get(b, key);
    *out = NULL;
    if (v == NULL || json_is_null(v))
        return true;
    char msg[96];
    if (!json_is_string(v)) {
        md_api_send_validation(r, field, "must be a string or null");
        return false;
    }
    size_t len = json_string_length(v);
    if (len > max) {
        snprintf(msg, sizeof(msg), "must be at most %zu bytes", max);
        md_api_send_validation(r, field, msg);
        return false;
    }
    if (!check_syntax(r, field, json_string_value(v), len))
        return false;
    *out = json_string_value(v);
    return true;
}

/* Validates a POST or PUT body (both are a full template); answers 4xx and
 * returns false when it is not acceptable. */
static bool
check_fields(md_http_request_t *r, json_t *b, tpl_fields_t *f)
{
    static const char *const known[] = {"name", "subject", "html", "text", NULL};
    if (!md_api_check_known(r, b, known))
        return false;
    json_t *name = json_object_get(b, "name");
    if (name == NULL)
        return md_api_send_validation(r, "/name", "is required"), false;
    if (!json_is_string(name))
        return md_api_send_validation(r, "/name", "must be a string"), false;
    if (!md_template_name_ok(json_string_value(name), json_string_length(name))) {
        char msg[160];
        snprintf(msg, sizeof(msg),
                 "must be 1 to %d characters of A-Z a-z 0-9 _ - . : / @ + (it is what "
                 "{{> name}} refers to)",
                 MD_TEMPLATE_NAME_MAX);
        return md_api_send_validation(r, "/name", msg), false;
    }
    f->name = json_string_value(name);

    json_t *subject = json_object_get(b, "subject");
    if (subject == NULL)
        return md_api_send_validation(r, "/subject", "is required"), false;
    if (!json_is_string(subject))
        return md_api_send_validation(r, "/subject", "must be a string"), false;
    size_t slen = json_string_length(subject);
    const char *s = json_string_value(subject);
    if (slen > MD_TEMPLATE_SUBJECT_MAX) {
        char msg[96];
        snprintf(msg, sizeof(msg), "must be at most %d bytes", MD_TEMPLATE_SUBJECT_MAX);
        return md_api_send_validation(r, "/subject", msg), false;
    }
    /* A header value: a line break in it would inject headers. */
    if (memchr(s, '\r', slen) || memchr(s, '\n', slen))
        return md_api_send_validation(r, "/subject", "must not contain line breaks"), false;
    if (!check_syntax(r, "/subject", s, slen))
        return false;
    f->subject = s;

    if (!check_part(r, b, "html", "/html", MD_TEMPLATE_PART_MAX, &f->html) ||
        !check_part(r, b, "text", "/text", MD_TEMPLATE_PART_MAX, &f->text))
        return false;
    if (f->html == NULL && f->text == NULL)
        return md_api_send_validation(r, "/html", "html or text (or both) is required"), false;
    return true;
}

/* The {id} path parameter as a canonical UUID; answers 404 when malformed. */
static bool
path_id(md_http_request_t *r, char *out)
{
    if (md_uuid_parse(md_http_param(r, "id"), out))
        return true;
    send_not_found(r);
    return false;
}

/* --- handlers -------------------------------------------------------------------------- */

/* POST and PUT: the row, published (the name may have been a missing partial). */
static void
saved_cb(void *ctx, const md_pg_result_t *res)
{
    tpl_req_t *q = ctx;
    if (!pg_ok(q->r, res))
        return;
    json_t *j = PQntuples(res->res) == 1 ? row_json(res->res, 0, 0) : NULL;
    if (j == NULL) {
        send_not_found(q->r);
        return;
    }
    const char *name = json_string_value(json_object_get(j, "name"));
    send_after_change(q, name, q->status, j);
}

static int
create_next(md_http_request_t *r, const md_identity_t *who)
{
    if (!md_api_pg_ready(r))
        return MD_OK;
    json_t *b = md_api_body_object(r, false);
    tpl_fields_t f;
    if (b == NULL || !check_fields(r, b, &f))
        return MD_OK;
    tpl_req_t *q = req_ctx(r, who);
    md_uuid7(q->id);
    q->status = 201;
    return md_api_queued(r, md_templates_create(q->tenant_id, q->id, f.name, f.subject, f.html,
                                                f.text, saved_cb, q));
}

static int
api_create(md_http_request_t *r)
{
    return md_auth_tenant(r, create_next);
}

static void
listed_cb(void *ctx, const md_pg_result_t *res)
{
    tpl_req_t *q = ctx;
    if (!pg_ok(q->r, res))
        return;
    json_t *data = json_array();
    int n = PQntuples(res->res), shown = 0;
    const char *last = NULL;
    for (int i = 0; i < n && shown < q->limit; i++) {
        json_t *row = row_json(res->res, i, 0);
        if (row == NULL)
            continue;
        json_array_append_new(data, row);
        last = PQgetvalue(res->res, i, 1);
        shown++;
    }
    json_t *next = (n > q->limit && last) ? json_string(last) : json_null();
    md_http_send_json(q->r, 200, json_pack("{s:o,s:o}", "data", data, "next_cursor", next));
}

static int
list_next(md_http_request_t *r, const md_identity_t *who)
{
    if (!md_api_pg_ready(r))
        return MD_OK;
    tpl_req_t *q = req_ctx(r, who);
    char cursor[MD_UUID_STRLEN + 1];
    bool has_cursor;
    if (!md_api_page_args(r, MD_TEMPLATES_PAGE_MAX, PAGE_DEFAULT, &q->limit, cursor, &has_cursor))
        return MD_OK;
    return md_api_queued(
        r, md_templates_list(q->tenant_id, has_cursor ? cursor : NULL, q->limit + 1, listed_cb, q));
}

static int
api_list(md_http_request_t *r)
{
    return md_auth_tenant(r, list_next);
}

static void
read_cb(void *ctx, const md_pg_result_t *res)
{
    tpl_req_t *q = ctx;
    if (!pg_ok(q->r, res))
        return;
    json_t *j = PQntuples(res->res) == 1 ? row_json(res->res, 0, 0) : NULL;
    if (j == NULL) {
        send_not_found(q->r);
        return;
    }
    md_http_send_json(q->r, 200, j);
}

static int
read_next(md_http_request_t *r, const md_identity_t *who)
{
    char id[MD_UUID_STRLEN + 1];
    if (!path_id(r, id) || !md_api_pg_ready(r))
        return MD_OK;
    return md_api_queued(r, md_templates_read(who->tenant_id, id, read_cb, req_ctx(r, who)));
}

static int
api_read(md_http_request_t *r)
{
    return md_auth_tenant(r, read_next);
}

static int
update_next(md_http_request_t *r, const md_identity_t *who)
{
    char id[MD_UUID_STRLEN + 1];
    if (!path_id(r, id) || !md_api_pg_ready(r))
        return MD_OK;
    json_t *b = md_api_body_object(r, false);
    tpl_fields_t f;
    if (b == NULL || !check_fields(r, b, &f))
        return MD_OK;
    tpl_req_t *q = req_ctx(r, who);
    memcpy(q->id, id, sizeof(q->id));
    q->status = 200;
    return md_api_queued(r, md_templates_update(q->tenant_id, q->id, f.name, f.subject, f.html,
                                                f.text, saved_cb, q));
}

static int
api_update(md_http_request_t *r)
{
    return md_auth_tenant(r, update_next);
}

static void
deleted_cb(void *ctx, const md_pg_result_t *res)
{
    tpl_req_t *q = ctx;
    if (!pg_ok(q->r, res))
        return;
    if (PQntuples(res->res) < 1) {
        send_not_found(q->r);
        return;
    }
    send_after_change(q, NULL, 204, NULL);
}

static int
delete_next(md_http_request_t *r, const md_identity_t *who)
{
    char id[MD_UUID_STRLEN + 1];
    if (!path_id(r, id) || !md_api_pg_ready(r))
        return MD_OK;
    tpl_req_t *q = req_ctx(r, who);
    memcpy(q->id, id, sizeof(q->id));
    return md_api_queued(r, md_templates_delete(q->tenant_id, q->id, deleted_cb, q));
}

static int
api_delete(md_http_request_t *r)
{
    return md_auth_tenant(r, delete_next);
}

static void
json_member(md_buf_t *b, const char *name, const md_buf_t *v, bool present)
{
    md_buf_printf(b, "\"%s\":", name);
    if (!present) {
        md_buf_append_str(b, "null");
        return;
    }
    md_buf_append(b, "\"", 1);
    md_buf_append_json_escaped(b, v->pos, md_buf_len(v));
    md_buf_append(b, "\"", 1);
}

static void
rendered_cb(void *ctx, md_tmpl_t *t, const char *err)
{
    tpl_req_t *q = ctx;
    md_http_request_t *r = q->r;
    if (r->aborted) {
        md_tmpl_release(t);
        md_http_send(r, 499, NULL, NULL, 0);
        return;
    }
    if (t == NULL) {
        if (err && strcmp(err, "not_found") == 0) {
            send_not_found(r);
        } else if (md_app_store_down(err)) {
            md_app_send_store_unavailable(r, "postgres");
        } else {
            md_logf(MD_LOG_ERROR, 0, MD_LOG_FIELDS(MD_LS("error", err ? err : "")),
                    "template load failed");
            md_http_send_error(r, 500, "internal_error", "internal error");
        }
        return;
    }
    md_buf_t subject, text, html, out;
    md_buf_init(&subject);
    md_buf_init(&text);
    md_buf_init(&html);
    md_buf_init(&out);
    int has_text = 0, has_html = 0;
    char msg[256];
    if (md_tmpl_render(t, q->vars, &subject, &text, &html, &has_text, &has_html, msg,
                       sizeof(msg)) != MD_OK) {
        md_http_send_error(r, 422, "template_render_failed", "%s", msg);
    } else {
        md_buf_append(&out, "{", 1);
        json_member(&out, "subject", &subject, true);
        md_buf_append(&out, ",", 1);
        json_member(&out, "text", &text, has_text);
        md_buf_append(&out, ",", 1);
        json_member(&out, "html", &html, has_html);
        md_buf_append(&out, "}", 1);
        md_http_send(r, 200, "application/json", out.pos, md_buf_len(&out));
    }
    md_tmpl_release(t);
    md_buf_free(&subject);
    md_buf_free(&text);
    md_buf_free(&html);
    md_buf_free(&out);
}

static int
render_next(md_http_request_t *r, const md_identity_t *who)
{
    char id[MD_UUID_STRLEN + 1];
    if (!path_id(r, id) || !md_api_pg_ready(r))
        return MD_OK;
    json_t *b = md_api_body_object(r, true);
    if (b == NULL)
        return MD_OK;
    static const char *const known[] = {"variables", NULL};
    if (!md_api_check_known(r, b, known))
        return MD_OK;
    json_t *vars = json_object_get(b, "variables");
    if (vars && json_is_null(vars))
        vars = NULL;
    if (vars && !json_is_object(vars))
        return md_api_send_validation(r, "/variables", "must be an object");
    tpl_req_t *q = req_ctx(r, who);
    memcpy(q->id, id, sizeof(q->id));
    q->vars = vars; /* owned by b, freed with r's pool */
    if (md_templates_get(q->tenant_id, q->id, rendered_cb, q) != MD_OK)
        return md_app_send_store_unavailable(r, "postgres");
    return MD_AGAIN;
}

static int
api_render(md_http_request_t *r)
{
    return md_auth_tenant(r, render_next);
}

void
md_api_templates_register(md_router_t *rt, const md_conf_t *conf)
{
    md_unused(conf);
    md_router_add(rt, MD_M_POST, "/v1/templates", api_create);
    md_router_add(rt, MD_M_GET, "/v1/templates", api_list);
    md_router_add(rt, MD_M_GET, "/v1/templates/{id}", api_read);
    md_router_add(rt, MD_M_PUT, "/v1/templates/{id}", api_update);
    md_router_add(rt, MD_M_DELETE, "/v1/templates/{id}", api_delete);
    md_router_add(rt, MD_M_POST, "/v1/templates/{id}/render", api_render);
}
