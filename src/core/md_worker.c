/*
 * A worker: one libev loop serving HTTP on the listeners inherited from the
 * master. Signals arrive as ev_signal watchers (so the handlers only wake the
 * loop); the channel to the master carries one 'R' up when serving and its EOF
 * tells the worker that the master is gone.
 */
#include "md_core.h"
#include "md_process.h"
#include "md_http.h"
#include "md_log.h"
#include "md_app.h"

#include <signal.h>
#include <unistd.h>

typedef struct md_worker_s {
    struct ev_loop *loop;
    md_conf_t *conf;
    md_http_t *http;
    unsigned slot;
    int channel_fd;
    int stopping; /* 0 serving, 1 draining, 2 closing now */
    ev_signal sig_quit, sig_term, sig_int, sig_usr1, sig_hup;
    ev_io channel;
    ev_prepare flush;
    ev_timer shutdown_timer;
} md_worker_t;

static void
worker_end_loop(md_worker_t *w)
{
    ev_timer_stop(w->loop, &w->shutdown_timer);
    ev_io_stop(w->loop, &w->channel);
    ev_break(w->loop, EVBREAK_ALL);
}

/* md_app_shutdown's done callback (from the loop): the store work is finished. */
static void
worker_store_closed(void *data)
{
    md_worker_t *w = data;
    md_log(MD_LOG_DEBUG, 0, "worker store closed");
    worker_end_loop(w);
}

/* md_http_shutdown's drained callback; may run inside md_http_shutdown itself.
 * No request is left, so what the store still owes is module work (flushes):
 * let it finish, still under shutdown_timer. */
static void
worker_drained(void *data)
{
    md_worker_t *w = data;
    md_log(MD_LOG_DEBUG, 0, "worker drained");
    md_app_shutdown(1, worker_store_closed, w);
}

static void
worker_stop_fast(md_worker_t *w, const char *why)
{
    if (w->stopping == 2)
        return;
    if (w->stopping == 0 && w->channel_fd < 0)
        md_notify("STOPPING=1");
    w->stopping = 2;
    md_logf(MD_LOG_INFO, 0, MD_LOG_FIELDS(MD_LS("reason", why)), "worker stopping now");
    md_http_shutdown(w->http, 0, NULL, NULL);
    md_app_shutdown(0, NULL, NULL);
    worker_end_loop(w);
}

static void
shutdown_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    md_unused(loop);
    md_unused(revents);
    md_worker_t *w = t->data;
    md_logf(MD_LOG_WARN, 0,
            MD_LOG_FIELDS(MD_LI("connections", md_http_connections(w->http)),
                          MD_LD("shutdown_timeout", w->conf->shutdown_timeout)),
            "shutdown_timeout expired, closing remaining connections");
    worker_stop_fast(w, "shutdown_timeout");
}

static void
worker_stop_graceful(md_worker_t *w, const char *why)
{
    if (w->stopping)
        return;
    w->stopping = 1;
    md_logf(MD_LOG_INFO, 0,
            MD_LOG_FIELDS(MD_LS("reason", why), MD_LI("connections", md_http_connections(w->http))),
            "worker shutting down gracefully");
    if (w->channel_fd < 0)
        md_notify("STOPPING=1");
    ev_timer_set(&w->shutdown_timer, w->conf->shutdown_timeout > 0 ? w->conf->shutdown_timeout : 0,
                 0.);
    ev_timer_start(w->loop, &w->shutdown_timer);
    /* drained may run right here; it only breaks the loop, so w stays valid. */
    md_http_shutdown(w->http, 1, worker_drained, w);
}

static void
signal_cb(struct ev_loop *loop, ev_signal *s, int revents)
{
    md_unused(loop);
    md_unused(revents);
    md_worker_t *w = s->data;
    switch (s->signum) {
    case SIGQUIT:
        worker_stop_graceful(w, "SIGQUIT");
        break;
    case SIGTERM:
    case SIGINT:
        worker_stop_fast(w, s->signum == SIGTERM ? "SIGTERM" : "SIGINT");
        break;
    case SIGUSR1:
        if (md_log_reopen() != 0)
            md_log(MD_LOG_ERROR, errno, "reopening logs failed, keeping the old files");
        else
            md_log(MD_LOG_INFO, 0, "logs reopened");
        break;
    case SIGHUP:
        /* Only a master can reload (it needs a new generation of workers). */
        if (w->channel_fd < 0)
            md_log(MD_LOG_WARN, 0, "SIGHUP ignored: reloading needs master_process on");
        break;
    }
}

static void
channel_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    md_unused(revents);
    md_worker_t *w = io->data;
    char buf[64];
    ssize_t n = read(io->fd, buf, sizeof(buf));
    if (n > 0)
        return; /* nothing is sent down yet; future commands go here */
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    ev_io_stop(loop, io);
    md_log(MD_LOG_ERROR, n < 0 ? errno : 0, "master process is gone, shutting down");
    worker_stop_graceful(w, "master exited");
}

/* Batches access-log lines of one loop pass into one write (Redis' beforeSleep). */
static void
flush_cb(struct ev_loop *loop, ev_prepare *p, int revents)
{
    md_unused(loop);
    md_unused(p);
    md_unused(revents);
    md_log_access_flush();
}

/* Writes the ready byte; a master that is already gone is noticed by the channel
 * watcher, so a failure here needs no handling of its own. */
static void
announce_ready(md_worker_t *w)
{
    if (w->channel_fd < 0) {
        md_notify("READY=1");
        return;
    }
    ssize_t n;
    do {
        n = write(w->channel_fd, "R", 1);
    } while (n < 0 && errno == EINTR);
    if (n != 1)
        md_log(MD_LOG_ERROR, errno, "cannot tell the master this worker is ready");
}

/*
 * Serves conf's listeners on loop until a stop signal (or the master's death)
 * and the drain finish. conf and the listener fds stay owned by the caller;
 * channel_fd (or -1) is owned by the worker and closed on return.
 */
int
md_worker_run(struct ev_loop *loop, md_conf_t *conf, unsigned slot, int channel_fd)
{
    md_worker_t w;
    memset(&w, 0, sizeof(w));
    w.loop = loop;
    w.conf = conf;
    w.slot = slot;
    w.channel_fd = channel_fd;

    signal(SIGPIPE, SIG_IGN);
    md_logf(MD_LOG_DEBUG, 0, MD_LOG_FIELDS(MD_LI("slot", slot)), "worker started");

    w.http = md_http_create(loop, conf, (int)slot);
    if (w.http == NULL) {
        md_log(MD_LOG_ERROR, 0, "worker cannot create its HTTP server");
        if (channel_fd >= 0)
            close(channel_fd);
        return 1;
    }
    /* Store clients and modules: after fork, before the first request. */
    char err[512];
    if (md_app_init(loop, conf, slot, err, sizeof(err)) != MD_OK) {
        md_logf(MD_LOG_ERROR, 0, MD_LOG_FIELDS(MD_LS("error", err)),
                "worker cannot start its store clients");
        md_http_destroy(w.http);
        if (channel_fd >= 0)
            close(channel_fd);
        return 1;
    }
    if (md_http_start(w.http) != MD_OK) {
        md_log(MD_LOG_ERROR, 0, "worker cannot start its HTTP server");
        md_app_destroy();
        md_http_destroy(w.http);
        if (channel_fd >= 0)
            close(channel_fd);
        return 1;
    }

    struct {
        ev_signal *s;
        int signum;
    } sigs[] = {{&w.sig_quit, SIGQUIT},
                {&w.sig_term, SIGTERM},
                {&w.sig_int, SIGINT},
                {&w.sig_usr1, SIGUSR1},
                {&w.sig_hup, SIGHUP}};
    for (size_t i = 0; i < md_nelems(sigs); i++) {
        ev_signal_init(sigs[i].s, signal_cb, sigs[i].signum);
        sigs[i].s->data = &w;
        ev_signal_start(loop, sigs[i].s);
        /* Signals are not what keeps a worker alive: the listeners are. */
        ev_unref(loop);
    }
    /* The master forks with these blocked so none is lost before the watchers exist. */
    sigset_t set;
    sigemptyset(&set);
    for (size_t i = 0; i < md_nelems(sigs); i++)
        sigaddset(&set, sigs[i].signum);
    sigprocmask(SIG_UNBLOCK, &set, NULL);

    ev_prepare_init(&w.flush, flush_cb);
    ev_prepare_start(loop, &w.flush);
    ev_unref(loop);

    ev_init(&w.shutdown_timer, shutdown_timer_cb);
    w.shutdown_timer.data = &w;

    if (channel_fd >= 0) {
        ev_io_init(&w.channel, channel_cb, channel_fd, EV_READ);
        w.channel.data = &w;
        ev_io_start(loop, &w.channel);
    }

    md_logf(MD_LOG_INFO, 0, MD_LOG_FIELDS(MD_LI("slot", slot), MD_LI("listeners", conf->nlisten)),
            "worker serving");
    announce_ready(&w);

    ev_run(loop, 0);

    /* Leave the loop as we found it: a caller may run it again (tests). */
    for (size_t i = 0; i < md_nelems(sigs); i++) {
        ev_ref(loop);
        ev_signal_stop(loop, sigs[i].s);
    }
    ev_ref(loop);
    ev_prepare_stop(loop, &w.flush);
    ev_timer_stop(loop, &w.shutdown_timer);
    ev_io_stop(loop, &w.channel);

    md_log(MD_LOG_INFO, 0, "worker exiting");
    /* Before md_http_destroy: store callbacks still owed run now and find their
     * requests alive (aborted). */
    md_app_destroy();
    md_log_access_flush();
    md_http_destroy(w.http);
    if (channel_fd >= 0)
        close(channel_fd);
    return 0;
}
