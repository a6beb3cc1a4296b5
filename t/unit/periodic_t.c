/* Unit tests for md_periodic: one round at a time, the delay chosen at a
 * round's end, stop, and a loop it never keeps alive nor lets end early. */
#include "md_periodic.h"
#include "tap.h"

#include <ev.h>

typedef struct state_s {
    struct ev_loop *loop;
    md_periodic_t p;
    int rounds, overlaps;
    bool in_flight, start_ok;
    double hold;     /* how long a round stays in flight */
    double next;     /* what its end asks for */
    ev_tstamp at[8]; /* when rounds started */
    ev_tstamp ended; /* when the last round ended */
    ev_timer finish; /* ends the round in flight */
} state_t;

static void
finish_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    state_t *s = t->data;
    s->in_flight = false;
    s->ended = ev_now(s->loop);
    md_periodic_done(&s->p, s->next);
}

static bool
round_fn(void *data)
{
    state_t *s = data;
    if (s->in_flight)
        s->overlaps++;
    if (s->rounds < 8)
        s->at[s->rounds] = ev_now(s->loop);
    s->rounds++;
    if (!s->start_ok)
        return false;
    s->in_flight = true;
    ev_timer_set(&s->finish, s->hold, 0.);
    ev_timer_start(s->loop, &s->finish);
    return true;
}

static int fired;

static void
fired_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)t;
    (void)revents;
    fired++;
}

/* Runs the loop with a referenced timer of d seconds keeping it alive. */
static void
run_for(struct ev_loop *loop, double d)
{
    ev_timer keep;
    ev_timer_init(&keep, fired_cb, d, 0.);
    ev_timer_start(loop, &keep);
    ev_run(loop, 0);
    ev_timer_stop(loop, &keep);
}

int
main(void)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    state_t s = {.loop = loop, .start_ok = true, .hold = 0.12, .next = 0};
    ev_init(&s.finish, finish_cb);
    s.finish.data = &s;

    /* Alone, it does not keep the loop running. */
    md_periodic_start(&s.p, loop, 10, 10, round_fn, &s);
    ev_tstamp t0 = ev_time();
    ev_run(loop, 0);
    ok(ev_time() - t0 < 1, "an idle periodic does not keep ev_run going");
    md_periodic_stop(&s.p);
    md_periodic_stop(&s.p);
    ok(1, "stop twice is harmless");

    /* Rounds every 0.05 s, each in flight 0.12 s: never two at once, and the
     * next one an interval after the end (the timer's turns in between skip). */
    md_periodic_start(&s.p, loop, 0.01, 0.05, round_fn, &s);
    run_for(loop, 0.5);
    ok(s.rounds >= 2 && s.rounds <= 4, "rounds run while the loop does (%d in 0.5 s)", s.rounds);
    is_int(s.overlaps, 0, "never a round while one is in flight");
    ok(s.at[1] - s.at[0] >= 0.12 + 0.05 - 0.01,
       "the next round an interval after the previous ended (%.3f s apart)", s.at[1] - s.at[0]);

    /* A round asking for more at once: the next follows its end closely. */
    int before = s.rounds;
    s.hold = 0.01;
    s.next = 0.005;
    run_for(loop, 0.3);
    ok(s.rounds - before >= 5, "next = 5 ms: rounds follow each other (%d in 0.3 s)",
       s.rounds - before);

    /* A round that cannot start is tried again after the interval. */
    s.start_ok = false;
    s.next = 0;
    run_for(loop, 0.1); /* let the round in flight end */
    before = s.rounds;
    run_for(loop, 0.3);
    ok(s.rounds - before >= 3 && s.rounds - before <= 7,
       "a round that could not start is tried each interval (%d in 0.3 s)", s.rounds - before);

    /* Stopped: no more rounds, and a round ending afterwards restarts nothing. */
    s.start_ok = true;
    s.hold = 0.05;
    run_for(loop, 0.1);
    bool was_in_flight = s.in_flight;
    md_periodic_stop(&s.p);
    before = s.rounds;
    run_for(loop, 0.3);
    is_int(s.rounds, before, "after stop, no round starts");
    ok(!s.in_flight, "the round in flight at stop still ended (%s)",
       was_in_flight ? "one was" : "none was");

    /* The loop's count of active watchers is balanced after all of it: a
     * referenced timer alone still runs to its end. */
    fired = 0;
    t0 = ev_time();
    run_for(loop, 0.05);
    ok(fired == 1 && ev_time() - t0 >= 0.04, "the loop still waits for a referenced timer");

    ev_loop_destroy(loop);
    return done_testing();
}
