/*
 * A tenant's suppression list in PostgreSQL (issue 7): the addresses mail is
 * not sent to, and why. Automatic entries (bounces, complaints, unsubscribes)
 * come from the event side; this module serves the API (one or many, CSV
 * import, reads, delete, stats) and removes expired entries on a schedule.
 *
 * Addresses are stored in md_address_normalize()'s form (local part as given in
 * canonical quoting, '@', the lower-cased A-label domain), which is also what
 * the accept statement (md_messages.c) and the dispatcher's claim compare with:
 * callers normalise before calling. An entry whose expires_at has passed is
 * no longer in effect: reads do not show it and the cleanup deletes it.
 *
 * Cleanup: every worker runs, a second after it starts and then every
 * suppression_cleanup_interval (default 1 minute), one idempotent statement that deletes
 * expired suppressions and soft_bounces rows older than 72 hours (at most
 * MD_SUPPRESSIONS_CLEANUP_LIMIT of each per run).
 */
#ifndef MD_SUPPRESSIONS_H
#define MD_SUPPRESSIONS_H

#include "md_core.h"
#include "md_pg.h"

/*
 * SQL for the suppression key of the recipient of a messages row whose alias is
 * tbl ("m", "messages"): the key accept stored (migration 0006), or for older
 * rows the to_addr with its domain lower-cased (right for ASCII domains).
 */
#define MD_SUPPRESSION_KEY_SQL(tbl)                                                                \
    "coalesce(" tbl ".suppress_key, left(" tbl ".to_addr, length(" tbl ".to_addr)"                 \
    " - strpos(reverse(" tbl ".to_addr), '@')) || lower(right(" tbl ".to_addr,"                    \
    " strpos(reverse(" tbl ".to_addr), '@'))))"

#define MD_SUPPRESSIONS_PAGE_MAX      1000  /* GET /v1/suppressions ?limit= */
#define MD_SUPPRESSIONS_CHUNK         2000  /* rows per upsert statement (one transaction) */
#define MD_SUPPRESSIONS_CLEANUP_LIMIT 10000 /* rows per table per run */
#define MD_SUPPRESSIONS_SOON_DAYS     7     /* stats: "expiring soon" means within this */

/* "hard_bounce", "soft_bounce", "complaint", "unsubscribe", "manual" (the
 * table's CHECK); true when reason[0..len) is one of them. */
bool md_suppression_reason_ok(const char *reason, size_t len);

typedef struct md_supp_item_s {
    const char *address; /* normalised; distinct within one call */
    const char *reason;  /* md_suppression_reason_ok */
    double expires_at;   /* unix time; 0: never */
    int line;            /* the caller's reference (array index, CSV line), echoed back */
} md_supp_item_t;

/*
 * Inserts or replaces (reason, expires_at, source; detail cleared) n items of
 * tenant_id in one transaction of ceil(n / MD_SUPPRESSIONS_CHUNK) statements.
 * source is "api" or "import". In cb, res->results[i] (i < res->n) holds the
 * rows of chunk i: 0 line, 1 "t" when the row was inserted ("f": an existing
 * one was replaced), 2 the suppression JSON when with_json (else NULL).
 * Returns as md_pg_exec (MD_ERROR also for n == 0 or a malformed tenant id);
 * the items are copied.
 */
int md_suppressions_upsert(const char *tenant_id, const md_supp_item_t *items, size_t n,
                           const char *source, bool with_json, md_pg_cb cb, void *ctx);

/* Rows 0 or 1: 0 the suppression JSON {address, reason, source, detail,
 * created_at, expires_at} (timestamps RFC 3339 UTC, expires_at null: never). */
int md_suppressions_get(const char *tenant_id, const char *address, md_pg_cb cb, void *ctx);

/* Rows (at most limit, address > after in address order; reason and after may
 * be NULL): 0 the suppression JSON, 1 the address. */
int md_suppressions_list(const char *tenant_id, const char *reason, const char *after, int limit,
                         md_pg_cb cb, void *ctx);

/* Deletes the entry. Rows 0 or 1: 0 "t" when it was in effect (not expired). */
int md_suppressions_delete(const char *tenant_id, const char *address, md_pg_cb cb, void *ctx);

/* One row: 0 JSON {"total", "by_reason": {reason: n, every reason present},
 * "expiring_soon", "expiring_soon_days"} over the entries in effect. */
int md_suppressions_stats(const char *tenant_id, md_pg_cb cb, void *ctx);

struct md_app_s;
/* Registers the statements and starts the cleanup timer (md_app_init, before
 * the pool starts). MD_OK or MD_ERROR. */
int md_suppressions_app_init(struct md_app_s *app);
/* Stops the timer (a no-op unless init ran). */
void md_suppressions_app_destroy(struct md_app_s *app);

#endif
