/*
 * Tenants and their API keys in PostgreSQL (migrations/0001_identity.sql).
 *
 * Every function queues one prepared statement on the worker's pool and returns
 * as md_pg_exec: MD_OK (cb runs exactly once, later), MD_AGAIN (not queued: the
 * store is unavailable, answer 503) or MD_ERROR (bad arguments).
 *
 * Tenant isolation is structural: every function that touches what a tenant
 * owns takes that tenant's id as a required argument and filters on it in SQL,
 * so a handler cannot forget the filter. The only functions without one are the
 * operator's (md_tenants_*, md_keys_revoke_any) and the two the auth layer needs
 * before it knows the tenant (md_keys_authenticate, md_keys_touch).
 *
 * Rows come back as JSON built by PostgreSQL (timestamps in UTC, RFC 3339 with
 * microseconds), so handlers pass them through with md_tenants_row_json().
 * Ids are canonical lower-case UUID strings; secret hashes are 32 raw bytes,
 * never the secret.
 */
#ifndef MD_TENANTS_H
#define MD_TENANTS_H

#include "md_core.h"
#include "md_pg.h"

#include <jansson.h>

#define MD_TENANT_NAME_MAX  200 /* characters, as the CHECK in 0001 */
#define MD_KEY_NAME_MAX     200
#define MD_TENANTS_PAGE_MAX 200

/* Registers every statement below on pool; call before md_pg_pool_start. */
int md_tenants_prepare(md_pg_pool_t *pool);

/* Decodes column col of row (JSON text) into a new reference, or NULL. */
json_t *md_tenants_row_json(const PGresult *res, int row, int col);

/* --- operator (admin) functions ------------------------------------------ */

/* INSERT; metadata is a JSON object text; track_opens/track_clicks "true",
 * "false" or NULL (false): the tenant's tracking defaults. Row: 0 tenant JSON. */
int md_tenants_create(md_pg_pool_t *pool, const char *id, const char *name, const char *metadata,
                      const char *track_opens, const char *track_clicks, md_pg_cb cb, void *ctx);
/* A live (not deleted) tenant. Rows: 0 or 1: 0 tenant JSON. */
int md_tenants_get(md_pg_pool_t *pool, const char *id, md_pg_cb cb, void *ctx);
/* Live tenants with id > after (NULL: from the start) in id order, at most limit
 * rows: 0 tenant JSON, 1 id. */
int md_tenants_list(md_pg_pool_t *pool, const char *after, int limit, md_pg_cb cb, void *ctx);
/*
 * Updates the fields given (NULL: unchanged); metadata is merged at the top
 * level (a key set to null is removed). Rows: 0 or 1: 0 tenant JSON, 1 the
 * space-separated hex hashes of the tenant's live keys when status became
 * 'suspended' or a tracking default was given (their cached authentications
 * must be dropped), else NULL.
 */
int md_tenants_update(md_pg_pool_t *pool, const char *id, const char *name, const char *status,
                      const char *metadata, const char *track_opens, const char *track_clicks,
                      md_pg_cb cb, void *ctx);
/* Soft delete: sets deleted_at and revokes the tenant's keys in one statement.
 * Rows: none when unknown or already deleted; else 1: 0 tenant JSON (with
 * deleted_at), 1 the space-separated hex hashes of the keys it revoked, or NULL. */
int md_tenants_delete(md_pg_pool_t *pool, const char *id, md_pg_cb cb, void *ctx);
/* Revokes a key of any tenant (idempotent: revoked_at is kept). Rows: 0 or 1:
 * 0 key JSON, 1 hex hash. */
int md_keys_revoke_any(md_pg_pool_t *pool, const char *key_id, md_pg_cb cb, void *ctx);

/* --- tenant-scoped functions (tenant_id required) ---------------------------- */

/* Inserts a key for a live tenant. Rows: none when the tenant is not live; else
 * 1: 0 key JSON (never the hash). prefix is the public start of the secret. */
int md_keys_create(md_pg_pool_t *pool, const char *tenant_id, const char *key_id, const char *name,
                   const char *prefix, const unsigned char hash[32], md_pg_cb cb, void *ctx);
/* The tenant's keys with id > after (NULL: from the start), revoked ones too, at
 * most limit. Rows: none when the tenant is not live; else one row per key (0 key
 * JSON, 1 id) or a single row of NULLs when it has none. */
int md_keys_list(md_pg_pool_t *pool, const char *tenant_id, const char *after, int limit,
                 md_pg_cb cb, void *ctx);
/* Revokes the tenant's key key_id (idempotent). Rows: 0 or 1: 0 key JSON, 1 hex hash. */
int md_keys_revoke(md_pg_pool_t *pool, const char *tenant_id, const char *key_id, md_pg_cb cb,
                   void *ctx);
/* /v1/me: the tenant and the (unrevoked) key. Rows: 0 or 1: 0 {"tenant":..,"key":..}. */
int md_keys_me(md_pg_pool_t *pool, const char *tenant_id, const char *key_id, md_pg_cb cb,
               void *ctx);

/* --- authentication ------------------------------------------------------- */

/* The unrevoked key with this hash, of an active live tenant. Rows: 0 or 1:
 * 0 key id, 1 tenant id, 2 tenant name, 3 key name, 4 key prefix, 5 key created_at,
 * 6 the tenant's tracking defaults (MD_TRACKING_OPENS | MD_TRACKING_CLICKS bits). */
int md_keys_authenticate(md_pg_pool_t *pool, const unsigned char hash[32], md_pg_cb cb, void *ctx);
/* Sets last_used_at = now() on n keys (one statement). */
int md_keys_touch(md_pg_pool_t *pool, const char *const *key_ids, size_t n, md_pg_cb cb, void *ctx);

/* True when s is a UUID in canonical 8-4-4-4-12 hex form (any case); writes the
 * lower-case form and a NUL into out[37]. */
bool md_uuid_parse(md_str_t s, char *out);

#endif
