/*
 * Tenants and API keys: the SQL, and nothing else. See md_tenants.h for the
 * contract of each function; the statements are prepared on every connection
 * (md_pg_prepare), so a typo here fails the pool's connection setup loudly.
 */
#include "md_tenants.h"
#include "md_id.h"

#include <stdio.h>
#include <stdlib.h>

/* RFC 3339 in UTC with microseconds, independent of the session's TimeZone. */
#define TS(col) "to_char((" col ") AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"

#define TENANT_JSON                                                                                \
    "json_build_object('id', id, 'name', name, 'status', status, 'metadata', metadata, "           \
    "'tracking', json_build_object('opens', track_opens, 'clicks', track_clicks), "                \
    "'created_at', " TS("created_at") ", 'updated_at', " TS("updated_at") ")::text"

#define KEY_JSON(k)                                                                                \
    "json_build_object('id', " k "id, 'tenant_id', " k "tenant_id, 'name', " k "name, "            \
    "'prefix', " k "prefix, 'created_at', " TS(                                                    \
        k "created_at") ", "                                                                       \
                        "'last_used_at', " TS(k "last_used_at") ", 'revoked_at', " TS(             \
                            k "revoked_at") ")::text"

#define NIL_UUID "'00000000-0000-0000-0000-000000000000'::uuid"

typedef struct md_tenants_stmt_s {
    const char *name;
    int nparams;
    const char *sql;
} md_tenants_stmt_t;

static const md_tenants_stmt_t stmts[] = {
    {"tenant_create", 5,
     "INSERT INTO tenants (id, name, metadata, track_opens, track_clicks) "
     "VALUES ($1::uuid, $2::text, $3::jsonb, COALESCE($4::boolean, false), "
     "COALESCE($5::boolean, false)) "
     "RETURNING " TENANT_JSON},
    {"tenant_get", 1,
     "SELECT " TENANT_JSON " FROM tenants WHERE id = $1::uuid AND deleted_at IS NULL"},
    {"tenant_list", 2,
     "SELECT " TENANT_JSON ", id FROM tenants WHERE deleted_at IS NULL "
     "AND id > COALESCE($1::uuid, " NIL_UUID ") ORDER BY id LIMIT $2::int"},
    /* Suspending drops the tenant out of md_keys_authenticate, and the tracking
     * defaults ride in the cached identity, so the caller must invalidate
     * cached keys: the second column lists their hashes. */
    {"tenant_update", 6,
     "UPDATE tenants SET name = COALESCE($2::text, name), status = COALESCE($3::text, status), "
     "metadata = CASE WHEN $4::jsonb IS NULL THEN metadata ELSE (metadata || $4::jsonb) - "
     "ARRAY(SELECT key FROM jsonb_each($4::jsonb) WHERE value = 'null'::jsonb) END, "
     "track_opens = COALESCE($5::boolean, track_opens), "
     "track_clicks = COALESCE($6::boolean, track_clicks), "
     "updated_at = now() WHERE id = $1::uuid AND deleted_at IS NULL "
     "RETURNING " TENANT_JSON ", CASE WHEN $3::text = 'suspended' "
     "OR $5::boolean IS NOT NULL OR $6::boolean IS NOT NULL THEN "
     "(SELECT string_agg(encode(k.secret_hash, 'hex'), ' ') FROM api_keys k "
     "WHERE k.tenant_id = $1::uuid AND k.revoked_at IS NULL) END"},
    /* One statement, so the tenant and its keys go together (a data-modifying
     * CTE sees the other's RETURNING rows). */
    {"tenant_delete", 1,
     "WITH t AS (UPDATE tenants SET deleted_at = now(), updated_at = now() "
     "WHERE id = $1::uuid AND deleted_at IS NULL RETURNING id, "
     "json_build_object('id', id, 'name', name, 'status', status, 'metadata', metadata, "
     "'created_at', " TS("created_at") ", 'updated_at', " TS(
         "updated_at") ", "
                       "'deleted_at', " TS(
                           "deleted_at") ")::text AS j), "
                                         "k AS (UPDATE api_keys SET revoked_at = now() WHERE "
                                         "tenant_id IN (SELECT id FROM t) "
                                         "AND revoked_at IS NULL RETURNING secret_hash) "
                                         "SELECT t.j, (SELECT string_agg(encode(secret_hash, "
                                         "'hex'), ' ') FROM k) FROM t"},
    {"key_revoke_any", 1,
     "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) WHERE id = $1::uuid "
     "RETURNING " KEY_JSON("") ", encode(secret_hash, 'hex')"},
    {"key_create", 5,
     "INSERT INTO api_keys (id, tenant_id, name, prefix, secret_hash) "
     "SELECT $2::uuid, t.id, $3::text, $4::text, decode($5::text, 'hex') FROM tenants t "
     "WHERE t.id = $1::uuid AND t.deleted_at IS NULL "
     "RETURNING " KEY_JSON("")},
    {"key_list", 3,
     "SELECT k.j, k.id FROM tenants t LEFT JOIN LATERAL (SELECT " KEY_JSON(
         "") " AS j, id "
             "FROM api_keys WHERE tenant_id = t.id AND id > COALESCE($2::uuid, " NIL_UUID ") "
             "ORDER BY id LIMIT $3::int) k ON true WHERE t.id = $1::uuid AND t.deleted_at IS NULL "
             "ORDER BY k.id"},
    {"key_revoke", 2,
     "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) "
     "WHERE tenant_id = $1::uuid AND id = $2::uuid "
     "RETURNING " KEY_JSON("") ", encode(secret_hash, 'hex')"},
    {"key_me", 2,
     "SELECT json_build_object('tenant', json_build_object('id', t.id, 'name', t.name, "
     "'status', t.status), 'key', json_build_object('id', k.id, 'name', k.name, "
     "'prefix', k.prefix, 'created_at', " TS(
         "k.created_at") ", "
                         "'last_used_at', " TS(
                             "k.last_used_at") "))::text "
                                               "FROM api_keys k JOIN tenants t ON t.id = "
                                               "k.tenant_id "
                                               "WHERE k.tenant_id = $1::uuid AND k.id = $2::uuid "
                                               "AND k.revoked_at IS NULL "
                                               "AND t.deleted_at IS NULL AND t.status = 'active'"},
    /* The last column: the tenant's tracking defaults as MD_TRACKING_* bits. */
    {"key_auth", 1,
     "SELECT k.id, t.id, t.name, k.name, k.prefix, " TS(
         "k.created_at") ", t.track_opens::int | (t.track_clicks::int << 1) "
                         "FROM api_keys k JOIN tenants t ON t.id = k.tenant_id "
                         "WHERE k.secret_hash = decode($1::text, 'hex') AND k.revoked_at IS NULL "
                         "AND t.deleted_at IS NULL AND t.status = 'active'"},
    {"key_touch", 1, "UPDATE api_keys SET last_used_at = now() WHERE id = ANY($1::uuid[])"},
};

int
md_tenants_prepare(md_pg_pool_t *pool)
{
    for (size_t i = 0; i < md_nelems(stmts); i++)
        if (md_pg_prepare(pool, stmts[i].name, stmts[i].sql, stmts[i].nparams) != MD_OK)
            return MD_ERROR;
    return MD_OK;
}

json_t *
md_tenants_row_json(const PGresult *res, int row, int col)
{
    if (res == NULL || row >= PQntuples(res) || col >= PQnfields(res) || PQgetisnull(res, row, col))
        return NULL;
    return json_loadb(PQgetvalue(res, row, col), (size_t)PQgetlength(res, row, col), 0, NULL);
}

static int
exec(md_pg_pool_t *pool, const char *stmt, int n, const char *const *values, md_pg_cb cb, void *ctx)
{
    if (pool == NULL)
        return MD_AGAIN;
    md_pg_query_t q = {.stmt = stmt, .nparams = n, .values = values};
    return md_pg_exec(pool, &q, cb, ctx);
}

int
md_tenants_create(md_pg_pool_t *pool, const char *id, const char *name, const char *metadata,
                  const char *track_opens, const char *track_clicks, md_pg_cb cb, void *ctx)
{
    if (id == NULL || name == NULL)
        return MD_ERROR;
    const char *v[] = {id, name, metadata ? metadata : "{}", track_opens, track_clicks};
    return exec(pool, "tenant_create", 5, v, cb, ctx);
}

int
md_tenants_get(md_pg_pool_t *pool, const char *id, md_pg_cb cb, void *ctx)
{
    if (id == NULL)
        return MD_ERROR;
    const char *v[] = {id};
    return exec(pool, "tenant_get", 1, v, cb, ctx);
}

int
md_tenants_list(md_pg_pool_t *pool, const char *after, int limit, md_pg_cb cb, void *ctx)
{
    char lim[16];
    snprintf(lim, sizeof(lim), "%d", limit);
    const char *v[] = {after, lim};
    return exec(pool, "tenant_list", 2, v, cb, ctx);
}

int
md_tenants_update(md_pg_pool_t *pool, const char *id, const char *name, const char *status,
                  const char *metadata, const char *track_opens, const char *track_clicks,
                  md_pg_cb cb, void *ctx)
{
    if (id == NULL)
        return MD_ERROR;
    const char *v[] = {id, name, status, metadata, track_opens, track_clicks};
    return exec(pool, "tenant_update", 6, v, cb, ctx);
}

int
md_tenants_delete(md_pg_pool_t *pool, const char *id, md_pg_cb cb, void *ctx)
{
    if (id == NULL)
        return MD_ERROR;
    const char *v[] = {id};
    return exec(pool, "tenant_delete", 1, v, cb, ctx);
}

int
md_keys_revoke_any(md_pg_pool_t *pool, const char *key_id, md_pg_cb cb, void *ctx)
{
    if (key_id == NULL)
        return MD_ERROR;
    const char *v[] = {key_id};
    return exec(pool, "key_revoke_any", 1, v, cb, ctx);
}

int
md_keys_create(md_pg_pool_t *pool, const char *tenant_id, const char *key_id, const char *name,
               const char *prefix, const unsigned char hash[32], md_pg_cb cb, void *ctx)
{
    if (tenant_id == NULL || key_id == NULL || prefix == NULL || hash == NULL)
        return MD_ERROR;
    char hex[65];
    md_hex_encode(hex, hash, 32);
    const char *v[] = {tenant_id, key_id, name ? name : "", prefix, hex};
    return exec(pool, "key_create", 5, v, cb, ctx);
}

int
md_keys_list(md_pg_pool_t *pool, const char *tenant_id, const char *after, int limit, md_pg_cb cb,
             void *ctx)
{
    if (tenant_id == NULL)
        return MD_ERROR;
    char lim[16];
    snprintf(lim, sizeof(lim), "%d", limit);
    const char *v[] = {tenant_id, after, lim};
    return exec(pool, "key_list", 3, v, cb, ctx);
}

int
md_keys_revoke(md_pg_pool_t *pool, const char *tenant_id, const char *key_id, md_pg_cb cb,
               void *ctx)
{
    if (tenant_id == NULL || key_id == NULL)
        return MD_ERROR;
    const char *v[] = {tenant_id, key_id};
    return exec(pool, "key_revoke", 2, v, cb, ctx);
}

int
md_keys_me(md_pg_pool_t *pool, const char *tenant_id, const char *key_id, md_pg_cb cb, void *ctx)
{
    if (tenant_id == NULL || key_id == NULL)
        return MD_ERROR;
    const char *v[] = {tenant_id, key_id};
    return exec(pool, "key_me", 2, v, cb, ctx);
}

int
md_keys_authenticate(md_pg_pool_t *pool, const unsigned char hash[32], md_pg_cb cb, void *ctx)
{
    if (hash == NULL)
        return MD_ERROR;
    char hex[65];
    md_hex_encode(hex, hash, 32);
    const char *v[] = {hex};
    return exec(pool, "key_auth", 1, v, cb, ctx);
}

int
md_keys_touch(md_pg_pool_t *pool, const char *const *key_ids, size_t n, md_pg_cb cb, void *ctx)
{
    if (key_ids == NULL || n == 0)
        return MD_ERROR;
    /* An array literal {id,id,...}: ids are canonical UUIDs, so no quoting is needed. */
    size_t len = 3 + n * (MD_UUID_STRLEN + 1);
    char *arr = md_xmalloc(len), *p = arr;
    *p++ = '{';
    for (size_t i = 0; i < n; i++) {
        if (i)
            *p++ = ',';
        memcpy(p, key_ids[i], MD_UUID_STRLEN);
        p += MD_UUID_STRLEN;
    }
    *p++ = '}';
    *p = '\0';
    const char *v[] = {arr};
    int rc = exec(pool, "key_touch", 1, v, cb, ctx);
    free(arr); /* md_pg_exec copies its arguments */
    return rc;
}

bool
md_uuid_parse(md_str_t s, char *out)
{
    if (s.len != MD_UUID_STRLEN || s.data == NULL)
        return false;
    for (size_t i = 0; i < MD_UUID_STRLEN; i++) {
        char c = s.data[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-')
                return false;
            out[i] = c;
            continue;
        }
        if (md_hexval(c) < 0)
            return false;
        out[i] = (c >= 'A' && c <= 'F') ? (char)(c + 32) : c;
    }
    out[MD_UUID_STRLEN] = '\0';
    return true;
}
