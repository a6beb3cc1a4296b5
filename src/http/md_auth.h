/*
 * Identity: the operator's admin token and the tenants' API keys.
 *
 * Two realms, never mixed:
 *   /v1/admin/... take only the admin token (admin_token_file or admin_token);
 *   other /v1/... take only a tenant API key.
 * A credential of the other realm is refused like any unknown one, with 401
 * unauthorized and WWW-Authenticate: Bearer (the message says which credential
 * the route wants). 401 rather than 403 because the caller is not authenticated
 * in the route's realm at all, and because answering differently for "a valid
 * key of the wrong realm" would tell a prober which strings are valid keys.
 *
 * Tenant keys are "mk_" + 43 base64url characters (32 bytes from the OS CSPRNG).
 * Only their SHA-256 is stored; a worker caches hash -> identity for a short TTL
 * and trusts that cache only while its Redis subscription to the revocation
 * channel is up, so a revoked key stops working on every worker within the
 * pub/sub delivery time (and PostgreSQL, written first, is the fallback).
 * last_used_at is collected per worker and written in batches.
 */
#ifndef MD_AUTH_H
#define MD_AUTH_H

#include "md_app.h"
#include "md_http.h"
#include "md_id.h"

#define MD_AUTH_KEY_PREFIX     "mk_"
#define MD_AUTH_KEY_RANDOM     32 /* bytes */
#define MD_AUTH_KEY_LEN        (3 + 43)
#define MD_AUTH_DISPLAY_PREFIX 11 /* "mk_" + 8 characters shown in listings */
#define MD_AUTH_CHANNEL        "mailerd:auth:revoked"
#define MD_AUTH_ADMIN_MIN      24 /* shortest admin token accepted */

/* Who is calling, after md_auth_tenant: strings live in the request's pool. */
typedef struct md_identity_s {
    char tenant_id[MD_UUID_STRLEN + 1];
    char key_id[MD_UUID_STRLEN + 1];
    const char *tenant_name;
    const char *key_name;
    const char *key_prefix;
    const char *key_created_at;
    unsigned tracking; /* the tenant's defaults: MD_TRACKING_* bits (md_tracking.h) */
} md_identity_t;

/* The rest of a tenant handler, run once the key is known. It returns as a
 * handler does: MD_OK once it has answered, MD_AGAIN when it waits. */
typedef int (*md_auth_next_pt)(md_http_request_t *r, const md_identity_t *who);

/*
 * Registers the statements and the revocation subscription and reads the admin
 * token (once per configuration). Called by md_app_init before the stores start.
 * MD_OK, or MD_ERROR when the module cannot work at all (a bad admin token is
 * only logged: admin routes then answer 503 admin_not_configured).
 */
int md_auth_app_init(md_app_t *app);
/*
 * Writes the last_used_at updates collected so far. md_app_shutdown should call
 * it first, while the pool still takes work, so a graceful stop loses none.
 */
void md_auth_app_shutdown(md_app_t *app);
void md_auth_app_destroy(md_app_t *app);

/*
 * Tenant routes: authenticates the request's key, then runs next(r, who).
 * Returns next's result, or MD_OK after answering 401/503 itself, or MD_AGAIN
 * while the key is being looked up in PostgreSQL (next then runs from the
 * callback, and an MD_OK from it must have answered).
 */
int md_auth_tenant(md_http_request_t *r, md_auth_next_pt next);

/* Admin routes: MD_OK when the request carries the admin token; otherwise it
 * has answered 401 (or 503 admin_not_configured) and returns MD_DECLINED. */
int md_auth_admin(md_http_request_t *r);

/*
 * Makes a new key: secret (NUL-terminated, MD_AUTH_KEY_LEN chars) for the
 * client, the display prefix and the SHA-256 to store. MD_OK or MD_ERROR (no
 * randomness).
 */
int md_auth_new_key(char secret[MD_AUTH_KEY_LEN + 1], char prefix[MD_AUTH_DISPLAY_PREFIX + 1],
                    unsigned char hash[32]);

/*
 * After revoking keys in PostgreSQL: drops them from this worker's cache and
 * publishes hashes (space-separated lower-case hex, as md_tenants returns them)
 * on MD_AUTH_CHANNEL. Returns MD_AGAIN when done(ctx) will run once every
 * worker the message reached has dropped them (md_broadcast: at most
 * MD_BROADCAST_WAIT seconds), so a caller answering from done answers once the
 * revocation is in force everywhere; MD_OK when nothing was published (no
 * Redis, or it is down: the other workers then do not trust their caches) and
 * done will not run.
 */
int md_auth_revoked(const char *hashes, void (*done)(void *ctx), void *ctx);

/* Helpers exposed for tests. */
/* The token of "Authorization: Bearer <token>"; MD_OK, MD_DECLINED (no header)
 * or MD_ERROR (another scheme, or an empty token). */
int md_auth_bearer(const md_http_request_t *r, md_str_t *token);
/* True when s has the shape of a tenant key (prefix, length, alphabet). */
bool md_auth_key_wellformed(md_str_t s);

#endif
