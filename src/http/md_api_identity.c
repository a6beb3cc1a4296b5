/*
 * Identity API.
 *
 * Operator (admin token, see md_auth.h):
 *   POST   /v1/admin/tenants                {name, metadata?}         201 tenant
 *   GET    /v1/admin/tenants?limit=&cursor=                           200 {data, next_cursor}
 *   GET    /v1/admin/tenants/{id}                                     200 tenant
 *   PATCH  /v1/admin/tenants/{id}           {name?, status?, metadata?} 200 tenant
 *   DELETE /v1/admin/tenants/{id}           soft delete, revokes keys 200 tenant (deleted_at)
 *   POST   /v1/admin/tenants/{id}/keys      {name?}                   201 key + secret (once)
 *   GET    /v1/admin/tenants/{id}/keys?limit=&cursor=                 200 {data, next_cursor}
 *   DELETE /v1/admin/keys/{id}              revoke (idempotent)       200 key
 * Tenant (API key):
 *   GET    /v1/me                                                     200 {tenant, key}
 *   GET    /v1/keys?limit=&cursor=          the caller's keys         200 {data, next_cursor}
 *   DELETE /v1/keys/{id}                    revoke one of the caller's keys
 *
 * Errors: 400 invalid_json, 422 validation_failed with "field" (a JSON pointer
 * into the body), 404 not_found for an unknown or malformed id (a tenant's
 * route never tells "exists but is not yours" from "does not exist"), 503
 * store_unavailable. Listings page by id (UUIDv7: creation order); next_cursor
 * is the last id of the page, or null on the last page.
 *
 * Every handler is async: it queues one statement and answers from the
 * callback; revocations answer only after the PUBLISH went out, so a client
 * that got its 200 knows every subscribed worker has been told.
 */
#include "md_router.h"
#include "md_api_util.h"
#include "md_tracking.h"
#include "md_auth.h"
#include "md_log.h"
#include "md_tenants.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>

#define PAGE_DEFAULT      50
#define METADATA_MAX_SIZE 16384 /* bytes of serialized JSON */

void md_api_identity_register(md_router_t *rt, const md_conf_t *conf);

/* One request's state across its store calls; in r->pool. */
typedef struct id_req_s {
    md_http_request_t *r;
    int limit;
    int status;  /* answer status once the revocation is published */
    json_t *out; /* answer held while the revocation is published */
    char secret[MD_AUTH_KEY_LEN + 1];
} id_req_t;

static id_req_t *
req_ctx(md_http_request_t *r)
{
    id_req_t *q = md_pcalloc(r->pool, sizeof(*q));
    q->r = r;
    return q;
}

/* --- answers ------------------------------------------------------------------------ */

static int
send_not_found(md_http_request_t *r, const char *what)
{
    md_http_send_error(r, 404, "not_found", "no such %s", what);
    return MD_OK;
}

/* Answers with the row's JSON (column 0 of row 0), or 404 when there is no row. */
static void
send_row(md_http_request_t *r, const md_pg_result_t *res, int status, const char *what)
{
    if (PQntuples(res->res) < 1) {
        send_not_found(r, what);
        return;
    }
    md_http_send_json(r, status, md_tenants_row_json(res->res, 0, 0));
}

static void
revocation_published(void *ctx)
{
    id_req_t *q = ctx;
    md_http_send_json(q->r, q->status, q->out); /* a no-op (freeing out) if the client left */
}

/*
 * Answers out with status once the keys in hashes (may be NULL) are dropped
 * everywhere: directly when nothing is to publish, else after the PUBLISH.
 */
static void
send_after_revocation(id_req_t *q, const char *hashes, int status, json_t *out)
{
    q->status = status;
    q->out = out;
    if (hashes && md_auth_revoked(hashes, revocation_published, q) == MD_AGAIN)
        return;
    revocation_published(q);
}

/* --- input ---------------------------------------------------------------------------- */

/* Characters (code points) of valid UTF-8, which jansson guarantees. */
static size_t
utf8_chars(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xC0) != 0x80)
            n++;
    return n;
}

/* Checks a name field: a string of min..max characters. Answers 422 and returns
 * false when it is not. */
static bool
check_name(md_http_request_t *r, json_t *v, const char *field, size_t min, size_t max)
{
    char msg[96];
    if (!json_is_string(v)) {
        snprintf(msg, sizeof(msg), "must be a string");
        md_api_send_validation(r, field, msg);
        return false;
    }
    size_t n = utf8_chars(json_string_value(v));
    if (n < min || n > max) {
        snprintf(msg, sizeof(msg), "must be %zu to %zu characters long", min, max);
        md_api_send_validation(r, field, msg);
        return false;
    }
    return true;
}

/* metadata: an object, serialized to *out (malloc'd, caller frees). */
static bool
check_metadata(md_http_request_t *r, json_t *v, char **out)
{
    if (!json_is_object(v)) {
        md_api_send_validation(r, "/metadata", "must be an object");
        return false;
    }
    char *s = json_dumps(v, JSON_COMPACT);
    if (s == NULL || strlen(s) > METADATA_MAX_SIZE) {
        free(s);
        md_api_send_validation(r, "/metadata", "must be at most 16384 bytes of JSON");
        return false;
    }
    *out = s;
    return true;
}

/* tracking: the tenant's defaults into "true"/"false"/NULL (unchanged) strings. */
static bool
check_tracking(md_http_request_t *r, json_t *v, const char **opens, const char **clicks)
{
    unsigned given, on;
    const char *member = "", *why = "";
    if (!md_api_tracking_parse(v, &given, &on, &member, &why)) {
        char field[32];
        snprintf(field, sizeof(field), "/tracking%s", member);
        md_api_send_validation(r, field, why);
        return false;
    }
    *opens = given & MD_TRACKING_OPENS ? (on & MD_TRACKING_OPENS ? "true" : "false") : NULL;
    *clicks = given & MD_TRACKING_CLICKS ? (on & MD_TRACKING_CLICKS ? "true" : "false") : NULL;
    return true;
}

/* {data:[rows' column 0], next_cursor}: rows were asked for limit + 1, so one
 * more than limit means another page follows. Rows whose column 0 is NULL (the
 * LEFT JOIN of an empty listing) are skipped. */
static json_t *
page_json(const PGresult *res, int limit)
{
    json_t *data = json_array();
    int n = PQntuples(res), shown = 0;
    const char *last = NULL;
    for (int i = 0; i < n && shown < limit; i++) {
        json_t *row = md_tenants_row_json(res, i, 0);
        if (row == NULL)
            continue;
        json_array_append_new(data, row);
        last = PQgetvalue(res, i, 1);
        shown++;
    }
    json_t *next = (n > limit && last) ? json_string(last) : json_null();
    return json_pack("{s:o,s:o}", "data", data, "next_cursor", next);
}

/* The {id} path parameter as a canonical UUID; answers 404 when malformed. */
static bool
path_id(md_http_request_t *r, char *out, const char *what)
{
    if (md_uuid_parse(md_http_param(r, "id"), out))
        return true;
    send_not_found(r, what);
    return false;
}

/* --- tenants (admin) -------------------------------------------------------------- */

static void
tenant_created(void *ctx, const md_pg_result_t *res)
{
    id_req_t *q = ctx;
    if (md_api_pg_ok(q->r, res, "identity"))
        send_row(q->r, res, 201, "tenant");
}

static int
api_tenant_create(md_http_request_t *r)
{
    if (md_auth_admin(r) != MD_OK || !md_api_pg_ready(r))
        return MD_OK;
    json_t *b = md_api_body_object(r, false);
    if (b == NULL)
        return MD_OK;
    static const char *const known[] = {"name", "metadata", "tracking", NULL};
    char *meta = NULL;
    const char *opens = NULL, *clicks = NULL;
    json_t *name = json_object_get(b, "name"), *m = json_object_get(b, "metadata");
    if (!md_api_check_known(r, b, known) ||
        !check_tracking(r, json_object_get(b, "tracking"), &opens, &clicks))
        goto done;
    if (name == NULL) {
        md_api_send_validation(r, "/name", "is required");
        goto done;
    }
    if (!check_name(r, name, "/name", 1, MD_TENANT_NAME_MAX))
        goto done;
    if (m && !check_metadata(r, m, &meta))
        goto done;
    char id[MD_UUID_STRLEN + 1];
    md_uuid7(id);
    id_req_t *q = req_ctx(r);
    int rc = md_tenants_create(md_app->pg, id, json_string_value(name), meta, opens, clicks,
                               tenant_created, q);
    free(meta);
    return md_api_queued(r, rc);
done:
    free(meta);
    return MD_OK;
}

static void
tenants_listed(void *ctx, const md_pg_result_t *res)
{
    id_req_t *q = ctx;
    if (md_api_pg_ok(q->r, res, "identity"))
        md_http_send_json(q->r, 200, page_json(res->res, q->limit));
}

static int
api_tenant_list(md_http_request_t *r)
{
    if (md_auth_admin(r) != MD_OK || !md_api_pg_ready(r))
        return MD_OK;
    id_req_t *q = req_ctx(r);
    char cursor[MD_UUID_STRLEN + 1];
    bool has_cursor;
    if (!md_api_page_args(r, MD_TENANTS_PAGE_MAX, PAGE_DEFAULT, &q->limit, cursor, &has_cursor))
        return MD_OK;
    return md_api_queued(r, md_tenants_list(md_app->pg, has_cursor ? cursor : NULL, q->limit + 1,
                                            tenants_listed, q));
}

static void
tenant_got(void *ctx, const md_pg_result_t *res)
{
    id_req_t *q = ctx;
    if (md_api_pg_ok(q->r, res, "identity"))
        send_row(q->r, res, 200, "tenant");
}

static int
api_tenant_get(md_http_request_t *r)
{
    char id[MD_UUID_STRLEN + 1];
    if (md_auth_admin(r) != MD_OK || !path_id(r, id, "tenant") || !md_api_pg_ready(r))
        return MD_OK;
    return md_api_queued(r, md_tenants_get(md_app->pg, id, tenant_got, req_ctx(r)));
}

/* PATCH and DELETE: the row, and the hashes of keys to drop from caches in column 1. */
static void
tenant_changed(void *ctx, const md_pg_result_t *res)
{
    id_req_t *q = ctx;
    if (!md_api_pg_ok(q->r, res, "identity"))
        return;
    if (PQntuples(res->res) < 1) {
        send_not_found(q->r, "tenant");
        return;
    }
    const char *hashes = PQgetisnull(res->res, 0, 1) ? NULL : PQgetvalue(res->res, 0, 1);
    send_after_revocation(q, hashes, 200, md_tenants_row_json(res->res, 0, 0));
}

static int
api_tenant_patch(md_http_request_t *r)
{
    char id[MD_UUID_STRLEN + 1];
    if (md_auth_admin(r) != MD_OK || !path_id(r, id, "tenant") || !md_api_pg_ready(r))
        return MD_OK;
    json_t *b = md_api_body_object(r, false);
    if (b == NULL)
        return MD_OK;
    static const char *const known[] = {"name", "status", "metadata", "tracking", NULL};
    char *meta = NULL;
    const char *status = NULL, *opens = NULL, *clicks = NULL;
    json_t *name = json_object_get(b, "name"), *st = json_object_get(b, "status"),
           *m = json_object_get(b, "metadata");
    if (!md_api_check_known(r, b, known) ||
        !check_tracking(r, json_object_get(b, "tracking"), &opens, &clicks))
        goto done;
    if (name && !check_name(r, name, "/name", 1, MD_TENANT_NAME_MAX))
        goto done;
    if (st) {
        status = json_string_value(st);
        if (status == NULL || (strcmp(status, "active") != 0 && strcmp(status, "suspended") != 0)) {
            md_api_send_validation(r, "/status", "must be \"active\" or \"suspended\"");
            goto done;
        }
    }
    if (m && !check_metadata(r, m, &meta))
        goto done;
    int rc = md_tenants_update(md_app->pg, id, name ? json_string_value(name) : NULL, status, meta,
                               opens, clicks, tenant_changed, req_ctx(r));
    free(meta);
    return md_api_queued(r, rc);
done:
    free(meta);
    return MD_OK;
}

static int
api_tenant_delete(md_http_request_t *r)
{
    char id[MD_UUID_STRLEN + 1];
    if (md_auth_admin(r) != MD_OK || !path_id(r, id, "tenant") || !md_api_pg_ready(r))
        return MD_OK;
    return md_api_queued(r, md_tenants_delete(md_app->pg, id, tenant_changed, req_ctx(r)));
}

/* --- keys (admin) ------------------------------------------------------------------- */

static void
key_created(void *ctx, const md_pg_result_t *res)
{
    id_req_t *q = ctx;
    md_http_request_t *r = q->r;
    if (md_api_pg_ok(r, res, "identity")) {
        json_t *k = PQntuples(res->res) == 1 ? md_tenants_row_json(res->res, 0, 0) : NULL;
        if (k == NULL) {
            send_not_found(r, "tenant");
        } else {
            /* The only place the secret ever leaves the process. */
            json_object_set_new(k, "secret", json_string(q->secret));
            md_http_send_json(r, 201, k);
        }
    }
    OPENSSL_cleanse(q->secret, sizeof(q->secret));
}

static int
api_key_create(md_http_request_t *r)
{
    char tid[MD_UUID_STRLEN + 1];
    if (md_auth_admin(r) != MD_OK || !path_id(r, tid, "tenant") || !md_api_pg_ready(r))
        return MD_OK;
    json_t *b = md_api_body_object(r, true);
    if (b == NULL)
        return MD_OK;
    static const char *const known[] = {"name", NULL};
    json_t *name = json_object_get(b, "name");
    if (!md_api_check_known(r, b, known) ||
        (name && !check_name(r, name, "/name", 0, MD_KEY_NAME_MAX))) {
        return MD_OK;
    }
    id_req_t *q = req_ctx(r);
    char kid[MD_UUID_STRLEN + 1], prefix[MD_AUTH_DISPLAY_PREFIX + 1];
    unsigned char hash[32];
    if (md_auth_new_key(q->secret, prefix, hash) != MD_OK) {
        md_log(MD_LOG_ERROR, 0, "no randomness for a new API key");
        md_http_send_error(r, 500, "internal_error", "cannot generate a key");
        return MD_OK;
    }
    md_uuid7(kid);
    int rc = md_keys_create(md_app->pg, tid, kid, name ? json_string_value(name) : "", prefix, hash,
                            key_created, q);
    if (rc != MD_OK)
        OPENSSL_cleanse(q->secret, sizeof(q->secret));
    return md_api_queued(r, rc);
}

static void
keys_listed(void *ctx, const md_pg_result_t *res)
{
    id_req_t *q = ctx;
    if (!md_api_pg_ok(q->r, res, "identity"))
        return;
    if (PQntuples(res->res) == 0) {
        send_not_found(q->r, "tenant");
        return;
    }
    md_http_send_json(q->r, 200, page_json(res->res, q->limit));
}

static int
keys_list(md_http_request_t *r, const char *tenant_id)
{
    id_req_t *q = req_ctx(r);
    char cursor[MD_UUID_STRLEN + 1];
    bool has_cursor;
    if (!md_api_page_args(r, MD_TENANTS_PAGE_MAX, PAGE_DEFAULT, &q->limit, cursor, &has_cursor))
        return MD_OK;
    return md_api_queued(r, md_keys_list(md_app->pg, tenant_id, has_cursor ? cursor : NULL,
                                         q->limit + 1, keys_listed, q));
}

static int
api_key_list(md_http_request_t *r)
{
    char tid[MD_UUID_STRLEN + 1];
    if (md_auth_admin(r) != MD_OK || !path_id(r, tid, "tenant") || !md_api_pg_ready(r))
        return MD_OK;
    return keys_list(r, tid);
}

static void
key_revoked(void *ctx, const md_pg_result_t *res)
{
    id_req_t *q = ctx;
    if (!md_api_pg_ok(q->r, res, "identity"))
        return;
    if (PQntuples(res->res) < 1) {
        send_not_found(q->r, "key");
        return;
    }
    send_after_revocation(q, PQgetvalue(res->res, 0, 1), 200, md_tenants_row_json(res->res, 0, 0));
}

static int
api_key_revoke_admin(md_http_request_t *r)
{
    char kid[MD_UUID_STRLEN + 1];
    if (md_auth_admin(r) != MD_OK || !path_id(r, kid, "key") || !md_api_pg_ready(r))
        return MD_OK;
    return md_api_queued(r, md_keys_revoke_any(md_app->pg, kid, key_revoked, req_ctx(r)));
}

/* --- tenant routes -------------------------------------------------------------------- */

static void
me_got(void *ctx, const md_pg_result_t *res)
{
    id_req_t *q = ctx;
    if (!md_api_pg_ok(q->r, res, "identity"))
        return;
    if (PQntuples(res->res) < 1) {
        /* Revoked (or the tenant suspended) after the cache vouched for it. */
        md_http_add_header(q->r, "WWW-Authenticate",
                           "Bearer realm=\"mailerd\", error=\"invalid_token\"");
        md_http_send_error(q->r, 401, "unauthorized", "unknown or revoked API key");
        return;
    }
    md_http_send_json(q->r, 200, md_tenants_row_json(res->res, 0, 0));
}

static int
me_next(md_http_request_t *r, const md_identity_t *who)
{
    if (!md_api_pg_ready(r))
        return MD_OK;
    return md_api_queued(r,
                         md_keys_me(md_app->pg, who->tenant_id, who->key_id, me_got, req_ctx(r)));
}

static int
api_me(md_http_request_t *r)
{
    return md_auth_tenant(r, me_next);
}

static int
my_keys_next(md_http_request_t *r, const md_identity_t *who)
{
    if (!md_api_pg_ready(r))
        return MD_OK;
    return keys_list(r, who->tenant_id);
}

static int
api_my_keys(md_http_request_t *r)
{
    return md_auth_tenant(r, my_keys_next);
}

static int
my_key_revoke_next(md_http_request_t *r, const md_identity_t *who)
{
    char kid[MD_UUID_STRLEN + 1];
    if (!path_id(r, kid, "key") || !md_api_pg_ready(r))
        return MD_OK;
    return md_api_queued(r,
                         md_keys_revoke(md_app->pg, who->tenant_id, kid, key_revoked, req_ctx(r)));
}

static int
api_my_key_revoke(md_http_request_t *r)
{
    return md_auth_tenant(r, my_key_revoke_next);
}

void
md_api_identity_register(md_router_t *rt, const md_conf_t *conf)
{
    md_unused(conf);
    md_router_add(rt, MD_M_POST, "/v1/admin/tenants", api_tenant_create);
    md_router_add(rt, MD_M_GET, "/v1/admin/tenants", api_tenant_list);
    md_router_add(rt, MD_M_GET, "/v1/admin/tenants/{id}", api_tenant_get);
    md_router_add(rt, MD_M_PATCH, "/v1/admin/tenants/{id}", api_tenant_patch);
    md_router_add(rt, MD_M_DELETE, "/v1/admin/tenants/{id}", api_tenant_delete);
    md_router_add(rt, MD_M_POST, "/v1/admin/tenants/{id}/keys", api_key_create);
    md_router_add(rt, MD_M_GET, "/v1/admin/tenants/{id}/keys", api_key_list);
    md_router_add(rt, MD_M_DELETE, "/v1/admin/keys/{id}", api_key_revoke_admin);
    md_router_add(rt, MD_M_GET, "/v1/me", api_me);
    md_router_add(rt, MD_M_GET, "/v1/keys", api_my_keys);
    md_router_add(rt, MD_M_DELETE, "/v1/keys/{id}", api_my_key_revoke);
}
