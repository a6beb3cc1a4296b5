/*
 * The master process: forks workers onto the shared listeners, replaces a worker
 * that dies, and turns signals into reload, stop and log reopening. It runs the
 * libev default loop: signal handlers only wake the loop (ev_signal), children
 * are reaped by one ev_child watcher, and deadlines are ev_timers, so the master
 * never sleeps on anything but the loop.
 *
 * Workers belong to a generation (one md_conf_t). A reload starts a new
 * generation beside the serving one, waits until each new worker reports ready
 * over its channel, and only then asks the old generation to drain and quit, so
 * at every moment some worker accepts on every listener.
 *
 * Listener ownership: the fds are held by the serving generation's conf (and, for
 * new addresses, by the generation being started); a retired conf holds none (all
 * -1), so freeing it never closes a socket someone else still uses.
 */
#include "md_core.h"
#include "md_process.h"
#include "md_log.h"
#include "md_metrics.h"
#include "md_id.h"

#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MD_READY_DEADLINE      10.0 /* a reload's new workers must be ready within */
#define MD_STARTUP_DEADLINE    30.0 /* the first workers (sanitizer builds start slowly) */
#define MD_FAST_STOP_KILL      3.0  /* SIGTERM, then SIGKILL after this */
#define MD_KILL_GRACE          5.0  /* graceful: SIGKILL at shutdown_timeout + this */
#define MD_RESPAWN_MIN_LIFE    1.0  /* a worker that lived less is crash-looping */
#define MD_RESPAWN_BACKOFF_MIN 0.25
#define MD_RESPAWN_BACKOFF_MAX 5.0

typedef struct md_gen_s md_gen_t;

struct md_gen_s {
    unsigned id;
    md_conf_t *conf; /* owned */
    unsigned procs;  /* slots held: live workers and pending respawns */
    int retired;     /* told to quit (or a failed reload); freed when procs is 0 */
    ev_timer kill_timer;
    md_gen_t *next; /* in the retired list */
};

typedef struct md_proc_s {
    pid_t pid;     /* 0 when no process runs in this slot */
    md_gen_t *gen; /* NULL: slot free */
    unsigned slot;
    int fd; /* master's end of the channel, -1 when closed */
    ev_io io;
    ev_timer respawn; /* crash-loop throttle */
    double started;
    double backoff;
    unsigned ready : 1;
    unsigned expected_exit : 1; /* the master told it to stop */
} md_proc_t;

enum { SIG_HUP_I, SIG_QUIT_I, SIG_TERM_I, SIG_INT_I, SIG_USR1_I, NSIGS };
static const int master_signals[NSIGS] = {SIGHUP, SIGQUIT, SIGTERM, SIGINT, SIGUSR1};

static struct {
    struct ev_loop *loop;
    md_gen_t *cur;     /* serving */
    md_gen_t *pending; /* being started by a reload */
    md_gen_t *retired; /* draining or failed, until their workers are gone */
    unsigned gen_ids;
    md_proc_t procs[MD_METRICS_MAX_SLOTS];
    ev_signal sigs[NSIGS];
    ev_child child;
    ev_timer ready_timer; /* deadline of the startup or pending generation */
    ev_timer stop_timer;  /* SIGKILL of workers that outlive a stop */
    int stopping;         /* 0, 1 graceful, 2 fast */
    int reload_queued;
    int started;
    int exit_code;
} M;

static void master_stop(int fast);
static void master_reload(void);

/* --- pid file ---------------------------------------------------------- */

/* Writes getpid() to path through a temporary file and rename(), so a reader
 * (mailerd -s) never sees a half-written number. MD_OK, or MD_ERROR with errno. */
int
md_pidfile_write(const char *path)
{
    char tmp[PATH_MAX], buf[32];
    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.%ld.tmp", path, (long)getpid()) >= sizeof(tmp)) {
        errno = ENAMETOOLONG;
        return MD_ERROR;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return MD_ERROR;
    int n = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
    if (write(fd, buf, (size_t)n) != n) {
        int e = errno;
        close(fd);
        unlink(tmp);
        errno = e ? e : EIO;
        return MD_ERROR;
    }
    close(fd);
    if (rename(tmp, path) < 0) {
        int e = errno;
        unlink(tmp);
        errno = e;
        return MD_ERROR;
    }
    return MD_OK;
}

bool
md_pid_is_mailerd(pid_t pid)
{
    if (pid <= 0 || (kill(pid, 0) < 0 && errno != EPERM))
        return false;
    char link[64], exe[PATH_MAX];
    snprintf(link, sizeof(link), "/proc/%ld/exe", (long)pid);
    ssize_t n = readlink(link, exe, sizeof(exe) - 1);
    if (n < 0)
        return errno != ENOENT; /* EACCES: not ours to inspect; ENOENT: gone */
    exe[n] = '\0';
    /* An upgraded or removed binary reads "/path/mailerd (deleted)". */
    char *del = strstr(exe, " (deleted)");
    if (del != NULL && del[sizeof(" (deleted)") - 1] == '\0')
        *del = '\0';
    const char *base = strrchr(exe, '/');
    return strncmp(base ? base + 1 : exe, "mailerd", 7) == 0; /* mailerd, mailerd-1.2, ... */
}

/* Returns the pid in path, or -1 with errno (ENOENT: no file, EINVAL: no number). */
pid_t
md_pidfile_read(const char *path)
{
    char buf[32];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    int e = errno;
    close(fd);
    if (n < 0) {
        errno = e;
        return -1;
    }
    buf[n] = '\0';
    char *end;
    long v = strtol(buf, &end, 10);
    if (end == buf || v <= 0 || v > INT_MAX || (*end != '\0' && *end != '\n')) {
        errno = EINVAL;
        return -1;
    }
    return (pid_t)v;
}

/* --- bookkeeping ----------------------------------------------------------- */

static unsigned
live_workers(const md_gen_t *g)
{
    unsigned n = 0;
    for (unsigned i = 0; i < MD_METRICS_MAX_SLOTS; i++)
        if (M.procs[i].pid > 0 && (g == NULL || M.procs[i].gen == g))
            n++;
    return n;
}

static unsigned
ready_workers(const md_gen_t *g)
{
    unsigned n = 0;
    for (unsigned i = 0; i < MD_METRICS_MAX_SLOTS; i++)
        if (M.procs[i].pid > 0 && M.procs[i].gen == g && M.procs[i].ready)
            n++;
    return n;
}

static unsigned
free_slots(void)
{
    unsigned n = 0;
    for (unsigned i = 0; i < MD_METRICS_MAX_SLOTS; i++)
        if (M.procs[i].gen == NULL)
            n++;
    return n;
}

static md_gen_t *
gen_new(md_conf_t *conf)
{
    md_gen_t *g = md_xcalloc(1, sizeof(*g));
    g->id = ++M.gen_ids;
    g->conf = conf;
    return g;
}

/* Frees a retired generation once it holds no slot; its conf owns no fd then. */
static void
gen_maybe_free(md_gen_t *g)
{
    if (!g->retired || g->procs > 0)
        return;
    for (md_gen_t **pp = &M.retired; *pp; pp = &(*pp)->next) {
        if (*pp == g) {
            *pp = g->next;
            break;
        }
    }
    ev_timer_stop(M.loop, &g->kill_timer);
    md_logf(MD_LOG_DEBUG, 0, MD_LOG_FIELDS(MD_LI("generation", g->id)), "generation %u finished",
            g->id);
    md_listeners_close_unused(g->conf, NULL);
    md_conf_free(g->conf);
    free(g);
}

static md_proc_t *
slot_take(md_gen_t *g)
{
    for (unsigned i = 0; i < MD_METRICS_MAX_SLOTS; i++) {
        md_proc_t *p = &M.procs[i];
        if (p->gen == NULL) {
            p->gen = g;
            p->slot = i;
            p->pid = 0;
            p->fd = -1;
            p->backoff = 0;
            g->procs++;
            return p;
        }
    }
    return NULL;
}

/* Gives the slot back; the caller then calls gen_maybe_free(g). */
static void
slot_release(md_proc_t *p)
{
    ev_timer_stop(M.loop, &p->respawn);
    if (p->gen)
        p->gen->procs--;
    p->gen = NULL;
    p->pid = 0;
}

static void
channel_close(md_proc_t *p)
{
    if (p->fd < 0)
        return;
    ev_io_stop(M.loop, &p->io);
    close(p->fd);
    p->fd = -1;
}

static void
kill_worker(md_proc_t *p, int sig)
{
    if (p->pid <= 0)
        return;
    p->expected_exit = 1;
    if (kill(p->pid, sig) < 0 && errno != ESRCH)
        md_log(MD_LOG_ERROR, errno, "kill(%ld, %d) failed", (long)p->pid, sig);
}

/* --- the worker side of fork ------------------------------------------- */

static bool
conf_has_fd(const md_conf_t *c, int fd)
{
    for (int i = 0; i < c->nlisten; i++)
        if (c->listen[i].fd == fd)
            return true;
    return false;
}

/* Runs in the child right after fork: drops everything of the master's (its
 * watchers, other workers' channels, listeners of other generations: a worker
 * holding a listener it does not serve would keep a removed address accepting
 * connections nobody answers) and becomes a worker. Never returns. */
static void
worker_child(md_proc_t *self, int fd)
{
    md_gen_t *g = self->gen;
    for (int i = 0; i < NSIGS; i++)
        ev_signal_stop(M.loop, &M.sigs[i]); /* restores the default handlers */
    ev_child_stop(M.loop, &M.child);
    ev_timer_stop(M.loop, &M.ready_timer);
    ev_timer_stop(M.loop, &M.stop_timer);
    for (md_gen_t *r = M.retired; r; r = r->next)
        ev_timer_stop(M.loop, &r->kill_timer);
    for (unsigned i = 0; i < MD_METRICS_MAX_SLOTS; i++) {
        md_proc_t *p = &M.procs[i];
        ev_timer_stop(M.loop, &p->respawn);
        if (p->fd >= 0) {
            ev_io_stop(M.loop, &p->io);
            close(p->fd);
        }
    }
    md_gen_t *gens[] = {M.cur, M.pending};
    for (size_t k = 0; k < md_nelems(gens); k++) {
        if (gens[k] == NULL || gens[k] == g)
            continue;
        for (int i = 0; i < gens[k]->conf->nlisten; i++) {
            int lfd = gens[k]->conf->listen[i].fd;
            if (lfd >= 0 && !conf_has_fd(g->conf, lfd))
                close(lfd);
        }
    }
    ev_loop_fork(M.loop);

    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        (void)fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    md_log_set_role("worker");
    md_id_init();
    md_metrics_attach(self->slot);
    int code = md_worker_run(M.loop, g->conf, self->slot, fd);
#ifdef MD_SANITIZERS
    /* Let LeakSanitizer check the worker: the master's structures it inherited are
     * still reachable from M, so only the worker's own leaks are reported. */
    exit(code);
#else
    /* The master's atexit handlers and stdio buffers are not the worker's. */
    _exit(code);
#endif
}

/* Forks a worker into slot p (already held by p->gen). MD_OK or MD_ERROR. */
static int
spawn(md_proc_t *p)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        md_log(MD_LOG_ERROR, errno, "socketpair() failed");
        return MD_ERROR;
    }
    /* Blocked across fork so a signal sent to a new worker waits for the worker's
     * own watchers instead of hitting the master's handler or the default action. */
    sigset_t set, old;
    sigemptyset(&set);
    for (int i = 0; i < NSIGS; i++)
        sigaddset(&set, master_signals[i]);
    sigprocmask(SIG_BLOCK, &set, &old);
    pid_t pid = fork();
    if (pid == 0) {
        close(sv[0]);
        worker_child(p, sv[1]);
    }
    int err = errno;
    sigprocmask(SIG_SETMASK, &old, NULL);
    close(sv[1]);
    if (pid < 0) {
        close(sv[0]);
        md_log(MD_LOG_ERROR, err, "fork() failed");
        return MD_ERROR;
    }
    int fl = fcntl(sv[0], F_GETFL);
    if (fl >= 0)
        (void)fcntl(sv[0], F_SETFL, fl | O_NONBLOCK);
    p->pid = pid;
    p->fd = sv[0];
    p->ready = 0;
    p->expected_exit = 0;
    p->started = ev_time();
    ev_io_set(&p->io, sv[0], EV_READ);
    ev_io_start(M.loop, &p->io);
    md_logf(MD_LOG_INFO, 0,
            MD_LOG_FIELDS(MD_LI("worker_pid", pid), MD_LI("slot", p->slot),
                          MD_LI("generation", p->gen->id)),
            "started worker %ld", (long)pid);
    return MD_OK;
}

/* Starts a generation's workers; MD_ERROR when any could not be forked. */
static int
gen_spawn_all(md_gen_t *g)
{
    for (int i = 0; i < g->conf->worker_processes; i++) {
        md_proc_t *p = slot_take(g);
        if (p == NULL) {
            md_log(MD_LOG_ERROR, 0, "no free worker slot (at most %d processes)",
                   MD_METRICS_MAX_SLOTS);
            return MD_ERROR;
        }
        if (spawn(p) != MD_OK) {
            slot_release(p);
            return MD_ERROR;
        }
    }
    return MD_OK;
}

/* --- generations ------------------------------------------------------- */

static void
kill_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    md_unused(loop);
    md_unused(revents);
    md_gen_t *g = t->data;
    md_logf(MD_LOG_WARN, 0, MD_LOG_FIELDS(MD_LI("generation", g->id)),
            "%u old workers did not exit in time, killing them", live_workers(g));
    for (unsigned i = 0; i < MD_METRICS_MAX_SLOTS; i++)
        if (M.procs[i].gen == g)
            kill_worker(&M.procs[i], SIGKILL);
}

/* Tells every worker of g to drain and leave (SIGQUIT; one still starting gets it
 * as soon as its watchers exist, since it starts with the signals blocked), and
 * frees g once they have; kill_timer SIGKILLs stragglers after deadline. */
static void
gen_retire(md_gen_t *g, double deadline)
{
    g->retired = 1;
    g->next = M.retired;
    M.retired = g;
    for (unsigned i = 0; i < MD_METRICS_MAX_SLOTS; i++) {
        md_proc_t *p = &M.procs[i];
        if (p->gen != g)
            continue;
        if (p->pid > 0)
            kill_worker(p, SIGQUIT);
        else
            slot_release(p); /* a respawn that had not happened yet */
    }
    ev_timer_init(&g->kill_timer, kill_timer_cb, deadline, 0.);
    g->kill_timer.data = g;
    ev_timer_start(M.loop, &g->kill_timer);
    gen_maybe_free(g);
}

static void
notify_ready(void)
{
    md_notify("READY=1");
}

static void
reload_fail(const char *why)
{
    md_gen_t *g = M.pending;
    M.pending = NULL;
    ev_timer_stop(M.loop, &M.ready_timer);
    md_logf(MD_LOG_ERROR, 0, MD_LOG_FIELDS(MD_LI("generation", g->id), MD_LS("reason", why)),
            "reload failed: %s; the running workers keep serving", why);
    /* Back to the running generation's log files and level. */
    if (md_log_open(M.cur->conf->error_log, M.cur->conf->log_level) != 0 ||
        md_log_access_open(M.cur->conf->access_log) != 0)
        md_log(MD_LOG_ERROR, errno, "cannot reopen the previous logs");
    md_listeners_close_unused(g->conf, M.cur->conf);
    gen_retire(g, g->conf->shutdown_timeout + MD_KILL_GRACE);
    notify_ready();
    if (M.reload_queued)
        master_reload();
}

/* Called when a worker of the startup or pending generation reports ready. */
static void
gen_check_ready(md_gen_t *g)
{
    unsigned want = (unsigned)g->conf->worker_processes;
    if (ready_workers(g) < want)
        return;
    if (g == M.cur && !M.started) {
        M.started = 1;
        ev_timer_stop(M.loop, &M.ready_timer);
        md_logf(MD_LOG_NOTICE, 0,
                MD_LOG_FIELDS(MD_LS("version", MD_VERSION), MD_LI("workers", want),
                              MD_LI("pid", getpid())),
                "mailerd %s started with %u workers", MD_VERSION, want);
        notify_ready();
    } else if (g == M.pending) {
        md_gen_t *old = M.cur;
        M.cur = g;
        M.pending = NULL;
        ev_timer_stop(M.loop, &M.ready_timer);
        /* Old workers keep their own copies of the listeners until they exit. */
        md_listeners_close_unused(old->conf, g->conf);
        gen_retire(old, old->conf->shutdown_timeout + MD_KILL_GRACE);
        md_logf(MD_LOG_NOTICE, 0, MD_LOG_FIELDS(MD_LI("generation", g->id), MD_LI("workers", want)),
                "configuration reloaded, %u new workers serving", want);
        notify_ready();
    } else {
        return;
    }
    if (M.reload_queued)
        master_reload();
}

static void
ready_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    md_unused(loop);
    md_unused(t);
    md_unused(revents);
    if (M.pending) {
        reload_fail("new workers did not become ready in time");
    } else if (!M.started) {
        md_log(MD_LOG_ERROR, 0, "workers did not become ready in time, giving up");
        M.exit_code = 1;
        master_stop(1);
    }
}

/* --- events ------------------------------------------------------------ */

static void
channel_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    md_unused(loop);
    md_unused(revents);
    md_proc_t *p = io->data;
    char buf[64];
    ssize_t n = read(p->fd, buf, sizeof(buf));
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        /* The worker is exiting; ev_child reports the rest. */
        channel_close(p);
        return;
    }
    for (ssize_t i = 0; i < n; i++) {
        if (buf[i] == 'R' && !p->ready) {
            p->ready = 1;
            md_logf(MD_LOG_DEBUG, 0, MD_LOG_FIELDS(MD_LI("worker_pid", p->pid)),
                    "worker %ld is ready", (long)p->pid);
            gen_check_ready(p->gen);
            return; /* p->gen may have changed state; nothing else is sent */
        }
    }
}

static void
respawn_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    md_unused(loop);
    md_unused(revents);
    md_proc_t *p = t->data;
    if (p->gen != M.cur || M.stopping) {
        md_gen_t *g = p->gen;
        slot_release(p);
        if (g)
            gen_maybe_free(g);
        return;
    }
    if (spawn(p) != MD_OK) {
        p->backoff = md_min(md_max(p->backoff * 2, MD_RESPAWN_BACKOFF_MIN), MD_RESPAWN_BACKOFF_MAX);
        ev_timer_set(&p->respawn, p->backoff, 0.);
        ev_timer_start(M.loop, &p->respawn);
    }
}

static void
child_cb(struct ev_loop *loop, ev_child *c, int revents)
{
    md_unused(revents);
    pid_t pid = c->rpid;
    int st = c->rstatus;
    md_proc_t *p = NULL;
    for (unsigned i = 0; i < MD_METRICS_MAX_SLOTS && p == NULL; i++)
        if (M.procs[i].pid == pid && M.procs[i].gen)
            p = &M.procs[i];
    if (p == NULL) {
        md_log(MD_LOG_DEBUG, 0, "reaped unknown child %ld", (long)pid);
        return;
    }
    md_gen_t *g = p->gen;
    double lived = ev_time() - p->started;
    int was_ready = p->ready;
    channel_close(p);
    p->pid = 0;
    p->ready = 0;
    md_metrics_slot_released(p->slot);

    bool unexpected = !p->expected_exit && !M.stopping && !g->retired;
    int level = unexpected ? MD_LOG_ERROR : MD_LOG_INFO;
    if (WIFSIGNALED(st)) {
        md_logf(level, 0,
                MD_LOG_FIELDS(MD_LI("worker_pid", pid), MD_LI("slot", p->slot),
                              MD_LI("signal", WTERMSIG(st)), MD_LD("lived", lived)),
                "worker %ld exited on signal %d%s", (long)pid, WTERMSIG(st),
                WCOREDUMP(st) ? " (core dumped)" : "");
    } else {
        md_logf(level, 0,
                MD_LOG_FIELDS(MD_LI("worker_pid", pid), MD_LI("slot", p->slot),
                              MD_LI("status", WEXITSTATUS(st)), MD_LD("lived", lived)),
                "worker %ld exited with status %d", (long)pid, WEXITSTATUS(st));
    }

    if (g == M.pending && !M.stopping) {
        slot_release(p);
        reload_fail("a new worker exited before it was ready");
    } else if (unexpected && g == M.cur && !M.started && !was_ready) {
        /* A worker that cannot start now will not start on retry either. */
        slot_release(p);
        md_log(MD_LOG_ERROR, 0, "a worker failed to start, stopping");
        M.exit_code = 1;
        master_stop(1);
    } else if (unexpected && g == M.cur) {
        md_metrics_worker_restart();
        if (lived < MD_RESPAWN_MIN_LIFE) {
            p->backoff =
                md_min(md_max(p->backoff * 2, MD_RESPAWN_BACKOFF_MIN), MD_RESPAWN_BACKOFF_MAX);
            md_logf(
                MD_LOG_WARN, 0, MD_LOG_FIELDS(MD_LI("slot", p->slot), MD_LD("delay", p->backoff)),
                "worker in slot %u is crash-looping, respawning in %.2f s", p->slot, p->backoff);
            ev_timer_set(&p->respawn, p->backoff, 0.);
            ev_timer_start(loop, &p->respawn);
        } else {
            p->backoff = 0;
            if (spawn(p) != MD_OK) {
                p->backoff = MD_RESPAWN_BACKOFF_MIN;
                ev_timer_set(&p->respawn, p->backoff, 0.);
                ev_timer_start(loop, &p->respawn);
            }
        }
    } else {
        slot_release(p);
        gen_maybe_free(g);
    }

    if (M.stopping && live_workers(NULL) == 0)
        ev_break(loop, EVBREAK_ALL);
}

static void
stop_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    md_unused(loop);
    md_unused(t);
    md_unused(revents);
    md_log(MD_LOG_WARN, 0, "%u workers did not exit in time, killing them", live_workers(NULL));
    for (unsigned i = 0; i < MD_METRICS_MAX_SLOTS; i++)
        kill_worker(&M.procs[i], SIGKILL);
}

/* Graceful (SIGQUIT: workers drain) or fast (SIGTERM: workers close now); a fast
 * stop may follow a graceful one, never the reverse. */
static void
master_stop(int fast)
{
    int level = fast ? 2 : 1;
    if (M.stopping >= level)
        return;
    if (!M.stopping) {
        md_notify("STOPPING=1");
        /* New connections now queue nowhere: the workers close theirs as they go. */
        ev_timer_stop(M.loop, &M.ready_timer);
        if (M.pending) {
            md_gen_t *g = M.pending;
            M.pending = NULL;
            md_listeners_close_unused(g->conf, M.cur->conf);
            gen_retire(g, g->conf->shutdown_timeout + MD_KILL_GRACE);
        }
        md_listeners_close_unused(M.cur->conf, NULL);
        for (unsigned i = 0; i < MD_METRICS_MAX_SLOTS; i++) {
            md_proc_t *p = &M.procs[i];
            if (p->gen && p->pid == 0) {
                md_gen_t *g = p->gen;
                slot_release(p);
                gen_maybe_free(g);
            }
        }
    }
    M.stopping = level;
    md_logf(MD_LOG_NOTICE, 0, MD_LOG_FIELDS(MD_LI("workers", live_workers(NULL))), "%s",
            fast ? "fast shutdown" : "graceful shutdown");
    for (unsigned i = 0; i < MD_METRICS_MAX_SLOTS; i++)
        kill_worker(&M.procs[i], fast ? SIGTERM : SIGQUIT);
    ev_timer_stop(M.loop, &M.stop_timer);
    ev_timer_set(&M.stop_timer,
                 fast ? MD_FAST_STOP_KILL : M.cur->conf->shutdown_timeout + MD_KILL_GRACE, 0.);
    ev_timer_start(M.loop, &M.stop_timer);
    if (live_workers(NULL) == 0)
        ev_break(M.loop, EVBREAK_ALL);
}

/* SIGHUP: a new generation on the new configuration, or nothing changes. */
static void
master_reload(void)
{
    if (M.stopping)
        return;
    if (!M.started || M.pending) {
        /* One reload at a time; the file is read when this one's turn comes. */
        M.reload_queued = 1;
        md_log(MD_LOG_INFO, 0, "reload queued behind the one in progress");
        return;
    }
    M.reload_queued = 0;
    char state[64];
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    snprintf(state, sizeof(state), "RELOADING=1\nMONOTONIC_USEC=%llu",
             (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000);
    md_notify(state);

    const md_conf_t *cur = M.cur->conf;
    md_logf(MD_LOG_NOTICE, 0, MD_LOG_FIELDS(MD_LS("file", cur->file)), "reloading configuration");
    char err[1024];
    err[0] = '\0';
    md_conf_t *nc = md_conf_load(cur->file, cur->prefix, err, sizeof(err));
    if (nc == NULL) {
        md_logf(MD_LOG_ERROR, 0, MD_LOG_FIELDS(MD_LS("error", err)),
                "reload rejected: %s; keeping the running configuration", err);
        notify_ready();
        return;
    }
    if (!nc->master_process)
        md_log(MD_LOG_WARN, 0, "master_process off takes effect only on restart");
    if ((cur->pid_file == NULL) != (nc->pid_file == NULL) ||
        (cur->pid_file && strcmp(cur->pid_file, nc->pid_file) != 0))
        md_log(MD_LOG_WARN, 0, "a changed pid file takes effect only on restart");
    if ((unsigned)nc->worker_processes > free_slots()) {
        md_log(MD_LOG_ERROR, 0, "reload rejected: %d workers do not fit beside the running ones",
               nc->worker_processes);
        md_conf_free(nc);
        notify_ready();
        return;
    }
    if (md_listeners_open(nc, cur) != MD_OK) {
        md_log(MD_LOG_ERROR, 0, "reload rejected: cannot open the listeners");
        md_conf_free(nc);
        notify_ready();
        return;
    }
    if (md_log_open(nc->error_log, nc->log_level) != 0 || md_log_access_open(nc->access_log) != 0) {
        int e = errno;
        (void)md_log_open(cur->error_log, cur->log_level);
        (void)md_log_access_open(cur->access_log);
        md_log(MD_LOG_ERROR, e, "reload rejected: cannot open the new log files");
        md_listeners_close_unused(nc, cur);
        md_conf_free(nc);
        notify_ready();
        return;
    }

    md_gen_t *g = gen_new(nc);
    M.pending = g;
    ev_timer_set(&M.ready_timer, MD_READY_DEADLINE, 0.);
    ev_timer_start(M.loop, &M.ready_timer);
    if (gen_spawn_all(g) != MD_OK && M.pending == g)
        reload_fail("cannot start new workers");
}

static void
signal_cb(struct ev_loop *loop, ev_signal *s, int revents)
{
    md_unused(loop);
    md_unused(revents);
    switch (s->signum) {
    case SIGHUP:
        master_reload();
        break;
    case SIGQUIT:
        master_stop(0);
        break;
    case SIGTERM:
    case SIGINT:
        master_stop(1);
        break;
    case SIGUSR1:
        /* Reopen first: the line saying so belongs in the new file. */
        if (md_log_reopen() != 0)
            md_log(MD_LOG_ERROR, errno, "reopening logs failed, keeping the old files");
        else
            md_log(MD_LOG_NOTICE, 0, "logs reopened");
        for (unsigned i = 0; i < MD_METRICS_MAX_SLOTS; i++)
            if (M.procs[i].pid > 0 && kill(M.procs[i].pid, SIGUSR1) < 0 && errno != ESRCH)
                md_log(MD_LOG_ERROR, errno, "kill(%ld, SIGUSR1) failed", (long)M.procs[i].pid);
        break;
    }
}

/*
 * Runs the master until it is stopped. Takes ownership of conf (its listeners
 * open) and frees it and every later configuration before returning the exit
 * code: 0 after a stop, 1 when the first workers could not start.
 */
int
md_master_run(md_conf_t *conf)
{
    memset(&M, 0, sizeof(M));
    M.loop = EV_DEFAULT;
    signal(SIGPIPE, SIG_IGN);

    if (md_metrics_init() != MD_OK) {
        md_log(MD_LOG_ERROR, errno, "cannot create the shared metrics segment");
        md_listeners_close_unused(conf, NULL);
        md_conf_free(conf);
        return 1;
    }

    for (unsigned i = 0; i < MD_METRICS_MAX_SLOTS; i++) {
        md_proc_t *p = &M.procs[i];
        p->slot = i;
        p->fd = -1;
        ev_init(&p->io, channel_cb);
        p->io.data = p;
        ev_init(&p->respawn, respawn_cb);
        p->respawn.data = p;
    }
    for (int i = 0; i < NSIGS; i++) {
        ev_signal_init(&M.sigs[i], signal_cb, master_signals[i]);
        ev_signal_start(M.loop, &M.sigs[i]);
    }
    ev_child_init(&M.child, child_cb, 0, 0);
    ev_child_start(M.loop, &M.child);
    ev_init(&M.ready_timer, ready_timer_cb);
    ev_init(&M.stop_timer, stop_timer_cb);

    M.cur = gen_new(conf);
    ev_timer_set(&M.ready_timer, MD_STARTUP_DEADLINE, 0.);
    ev_timer_start(M.loop, &M.ready_timer);
    if (gen_spawn_all(M.cur) != MD_OK) {
        M.exit_code = 1;
        master_stop(1);
    }

    if (!M.stopping || live_workers(NULL) > 0)
        ev_run(M.loop, 0);

    for (int i = 0; i < NSIGS; i++)
        ev_signal_stop(M.loop, &M.sigs[i]);
    ev_child_stop(M.loop, &M.child);
    ev_timer_stop(M.loop, &M.ready_timer);
    ev_timer_stop(M.loop, &M.stop_timer);
    for (unsigned i = 0; i < MD_METRICS_MAX_SLOTS; i++) {
        channel_close(&M.procs[i]);
        if (M.procs[i].gen)
            slot_release(&M.procs[i]);
    }
    md_gen_t *all[] = {M.pending, M.cur};
    for (size_t k = 0; k < md_nelems(all); k++) {
        if (all[k]) {
            all[k]->procs = 0;
            all[k]->retired = 1;
            all[k]->next = M.retired;
            M.retired = all[k];
        }
    }
    if (M.pending)
        md_listeners_close_unused(M.pending->conf, M.cur->conf);
    md_listeners_close_unused(M.cur->conf, NULL);
    M.pending = M.cur = NULL;
    while (M.retired) {
        M.retired->procs = 0;
        gen_maybe_free(M.retired);
    }
    md_log(MD_LOG_NOTICE, 0, "exiting");
    return M.exit_code;
}
