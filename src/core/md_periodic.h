/*
 * Periodic housekeeping in a worker (expired idempotency keys, expired
 * suppressions, planner statistics): a timer that never keeps a stopping
 * worker's loop alive, at most one round in flight, and the delay before the
 * next round chosen when a round ends (the interval, at once when there is
 * more to do, longer after a failure).
 *
 * The timer always repeats. An unreferenced one-shot timer unbalances the
 * loop's count of active watchers each time it fires (libev stops it itself,
 * taking back a reference that ev_unref already took), which could end
 * ev_run while real work is still active.
 */
#ifndef MD_PERIODIC_H
#define MD_PERIODIC_H

#include "md_core.h"

#include <ev.h>
#include <stdbool.h>

/* Starts a round: true when one is now in flight (md_periodic_done must
 * follow when it ends), false when it could not start (the next try comes
 * after the interval). */
typedef bool (*md_periodic_round_fn)(void *data);

typedef struct md_periodic_s {
    struct ev_loop *loop;
    ev_timer timer;
    double interval;
    md_periodic_round_fn round;
    void *data;
    bool started, running, stopped;
} md_periodic_t;

/* The first round after first seconds, then every interval (> 0). */
void md_periodic_start(md_periodic_t *p, struct ev_loop *loop, double first, double interval,
                       md_periodic_round_fn round, void *data);
/* The round in flight has ended; the next starts after next seconds (<= 0: the
 * interval). */
void md_periodic_done(md_periodic_t *p, double next);
/* No more rounds (one in flight still ends and may call md_periodic_done).
 * Safe on a periodic never started, and more than once. */
void md_periodic_stop(md_periodic_t *p);

#endif
