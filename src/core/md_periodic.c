/* Periodic housekeeping rounds (see md_periodic.h). */
#include "md_periodic.h"

/* The smallest delay a repeating timer is given: ev_timer_again with a repeat
 * of 0 would stop it. */
#define MD_PERIODIC_MIN 0.001

static void
periodic_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    md_unused(loop);
    md_unused(revents);
    md_periodic_t *p = t->data;
    if (p->stopped || p->running)
        return;
    if (t->repeat != p->interval) {
        t->repeat = p->interval;
        ev_timer_again(p->loop, t);
    }
    p->running = p->round(p->data);
}

void
md_periodic_start(md_periodic_t *p, struct ev_loop *loop, double first, double interval,
                  md_periodic_round_fn round, void *data)
{
    p->loop = loop;
    p->interval = interval > MD_PERIODIC_MIN ? interval : MD_PERIODIC_MIN;
    p->round = round;
    p->data = data;
    p->running = p->stopped = false;
    ev_init(&p->timer, periodic_timer_cb);
    p->timer.data = p;
    ev_timer_set(&p->timer, first > 0 ? first : MD_PERIODIC_MIN, p->interval);
    ev_timer_start(loop, &p->timer);
    ev_unref(loop); /* housekeeping must not keep a stopping worker alive */
    p->started = true;
}

void
md_periodic_done(md_periodic_t *p, double next)
{
    p->running = false;
    if (!p->started || p->stopped)
        return;
    p->timer.repeat = next > 0 ? (next > MD_PERIODIC_MIN ? next : MD_PERIODIC_MIN) : p->interval;
    ev_timer_again(p->loop, &p->timer);
}

void
md_periodic_stop(md_periodic_t *p)
{
    if (!p->started || p->stopped)
        return;
    p->stopped = true;
    ev_ref(p->loop); /* before the stop, which takes its reference back */
    ev_timer_stop(p->loop, &p->timer);
}
