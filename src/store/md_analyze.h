/*
 * Planner statistics that keep up with fast-growing tables (migration 0010).
 *
 * Every analyze_interval (postgres block, default 2s; 0 turns it off) each
 * worker calls mailerd_refresh_stats(MD_ANALYZE_MIN_CHANGES, MD_ANALYZE_MAX_ROWS):
 * it ANALYZEs the tables changed since their last analyze by more than their
 * analyzed size while that is below MD_ANALYZE_MAX_ROWS, one caller at a time
 * across workers and hosts. The analyze invalidates the prepared statements'
 * cached plans, which were made while the table was small (sequential scans)
 * and would otherwise be kept until autovacuum's next visit. A failed call (a
 * statement_timeout, or the store down) is tried again after
 * MD_ANALYZE_BACKOFF.
 */
#ifndef MD_ANALYZE_H
#define MD_ANALYZE_H

#include "md_core.h"

#define MD_ANALYZE_MIN_CHANGES "1000"   /* smaller tables are cheap to read whatever the plan */
#define MD_ANALYZE_MAX_ROWS    "100000" /* analyzed this big, a table's plans are index lookups */
#define MD_ANALYZE_BACKOFF     60.0     /* seconds after a failed call */

typedef struct md_app_s md_app_t;

/* Registers the statement and starts the timer (nothing without a pool or with
 * analyze_interval 0). MD_OK or MD_ERROR. */
int md_analyze_app_init(md_app_t *app);
/* No new call once the store is shutting down. */
void md_analyze_app_shutdown(md_app_t *app);
/* Stops the timer and frees the state; a call still in flight finds none. */
void md_analyze_app_destroy(md_app_t *app);

#endif
