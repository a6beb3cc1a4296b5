/*
 * Process model. The master opens listeners, forks workers, restarts one that
 * dies, and turns signals into reload/stop. A worker runs one libev loop.
 */
#ifndef MD_PROCESS_H
#define MD_PROCESS_H

#include "md_core.h"
#include "md_conf.h"
#include <ev.h>

/*
 * Opens (or, on reload, reuses from old by address) every listener of conf:
 * nonblocking, close-on-exec, SO_REUSEADDR, IPV6_V6ONLY for IPv6, backlog from
 * the config (511 by default). A reused fd number is then in both confs until
 * md_listeners_close_unused(old, conf). MD_OK, or MD_ERROR (logged; every fd of
 * conf -1 again, nothing of old touched).
 */
int md_listeners_open(md_conf_t *conf, const md_conf_t *old);
/* Closes the fds of old that now does not use (now NULL: all of them) and sets
 * every fd of old to -1: afterwards old owns no socket. */
void md_listeners_close_unused(md_conf_t *old, const md_conf_t *now);

/*
 * The master's life: forks conf->worker_processes workers and runs the default
 * loop until stopped. Takes ownership of conf (listeners open) and frees it and
 * every later configuration. Returns the exit code: 0 after a stop, 1 when the
 * first workers could not start.
 */
int md_master_run(md_conf_t *conf);

/*
 * A worker's life on loop: serve until told to stop. channel_fd is its end of a
 * socketpair with the master (-1 in single-process mode): the worker writes one
 * byte 'R' when it is serving, and treats EOF as the master's death.
 * Returns the exit code.
 */
int md_worker_run(struct ev_loop *loop, md_conf_t *conf, unsigned slot, int channel_fd);

/* sd_notify(3) with or without libsystemd; a no-op without NOTIFY_SOCKET. */
void md_notify(const char *state);

/* pid file helpers for -s and the master. write: getpid() via a temporary file
 * and rename(); MD_OK or MD_ERROR with errno. read: the pid, or -1 with errno
 * (ENOENT: no file, EINVAL: not a pid). */
int md_pidfile_write(const char *path);
pid_t md_pidfile_read(const char *path);
/* Whether pid is a live mailerd process: alive, and its executable's name
 * starts with "mailerd" (/proc/PID/exe). A pid file outlives its process (SIGKILL, a crash,
 * a reboot with the file on disk) and the kernel hands its number to another
 * program in time: that one is neither "already running" nor to be signalled.
 * When /proc cannot tell (another user's process), a live pid counts as
 * mailerd. */
bool md_pid_is_mailerd(pid_t pid);

#endif
