/*
 * Process model. The master opens listeners, forks workers, restarts one that
 * dies, and turns signals into reload/stop. A worker runs one libev loop.
 */
#ifndef MD_PROCESS_H
#define MD_PROCESS_H

#include "md_core.h"
#include "md_conf.h"
#include <ev.h>

/* Opens (or, on reload, reuses from old by address) every listener of conf. */
int md_listeners_open(md_conf_t *conf, const md_conf_t *old);
void md_listeners_close_unused(md_conf_t *old, const md_conf_t *now);

/* The master's life: returns the process exit code. */
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

/* pid file helpers for -s and the master. */
int md_pidfile_write(const char *path);
pid_t md_pidfile_read(const char *path);

#endif
