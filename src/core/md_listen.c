/*
 * Listening sockets. The master opens them before forking so every worker of
 * every generation accepts on the same sockets: a reload never closes and
 * rebinds an address that stays in the configuration, so the kernel keeps
 * queueing new connections throughout and none is refused.
 */
#include "md_core.h"
#include "md_process.h"
#include "md_log.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#define MD_LISTEN_BACKLOG 511

/* Same family, address and port (sockaddr_storage padding may differ, so the
 * structures are not compared whole). */
static bool
same_addr(const md_listen_t *a, const md_listen_t *b)
{
    if (a->addr.ss_family != b->addr.ss_family)
        return false;
    if (a->addr.ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)&a->addr, *y = (const void *)&b->addr;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->addr.ss_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const void *)&a->addr, *y = (const void *)&b->addr;
        return x->sin6_port == y->sin6_port &&
               memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0 &&
               x->sin6_scope_id == y->sin6_scope_id;
    }
    return a->addrlen == b->addrlen && memcmp(&a->addr, &b->addr, a->addrlen) == 0;
}

/* At startup (nothing to fall back on) the operator also needs the reason on
 * the terminal, not only in a log file they may not be looking at. */
static void
listen_error(const md_listen_t *ls, const char *what, int err, bool startup)
{
    md_logf(MD_LOG_ERROR, err, MD_LOG_FIELDS(MD_LS("listen", ls->text)), "%s() to %s failed", what,
            ls->text);
    if (startup)
        fprintf(stderr, "mailerd: %s() to %s failed (%s)\n", what, ls->text, strerror(err));
}

static int
open_one(md_listen_t *ls, bool startup)
{
    int fd = socket(ls->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        listen_error(ls, "socket", errno, startup);
        return MD_ERROR;
    }
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0) {
        listen_error(ls, "setsockopt(SO_REUSEADDR)", errno, startup);
        goto fail;
    }
    /* "[::]:80" must not also take the IPv4 wildcard, or a separate "0.0.0.0:80"
     * would fail with EADDRINUSE depending on the sysctl of the host. */
    if (ls->addr.ss_family == AF_INET6 &&
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0) {
        listen_error(ls, "setsockopt(IPV6_V6ONLY)", errno, startup);
        goto fail;
    }
    if (bind(fd, (const struct sockaddr *)&ls->addr, ls->addrlen) < 0) {
        listen_error(ls, "bind", errno, startup);
        goto fail;
    }
    if (listen(fd, ls->backlog > 0 ? ls->backlog : MD_LISTEN_BACKLOG) < 0) {
        listen_error(ls, "listen", errno, startup);
        goto fail;
    }
    ls->fd = fd;
    md_logf(MD_LOG_DEBUG, 0, MD_LOG_FIELDS(MD_LS("listen", ls->text), MD_LI("fd", fd)),
            "listening on %s", ls->text);
    return MD_OK;
fail:
    close(fd);
    return MD_ERROR;
}

/*
 * Sets conf->listen[i].fd for every listener: taken from old when old has an
 * open socket for the same address (the fd number is then shared by both
 * configurations until md_listeners_close_unused(old, conf) settles ownership),
 * else a new socket. On failure the sockets this call opened are closed again,
 * reused ones are untouched, every fd of conf is -1, and MD_ERROR is returned.
 */
int
md_listeners_open(md_conf_t *conf, const md_conf_t *old)
{
    for (int i = 0; i < conf->nlisten; i++) {
        md_listen_t *ls = &conf->listen[i];
        ls->fd = -1;
        for (int j = 0; old && j < old->nlisten; j++) {
            if (old->listen[j].fd >= 0 && same_addr(ls, &old->listen[j])) {
                ls->fd = old->listen[j].fd;
                /* A changed backlog takes effect on a listening socket too. */
                (void)listen(ls->fd, ls->backlog > 0 ? ls->backlog : MD_LISTEN_BACKLOG);
                break;
            }
        }
        if (ls->fd >= 0)
            continue;
        if (open_one(ls, old == NULL) != MD_OK) {
            for (int k = 0; k < i; k++) {
                md_listen_t *o = &conf->listen[k];
                bool reused = false;
                for (int j = 0; old && j < old->nlisten; j++)
                    reused = reused || old->listen[j].fd == o->fd;
                if (!reused && o->fd >= 0)
                    close(o->fd);
                o->fd = -1;
            }
            return MD_ERROR;
        }
    }
    return MD_OK;
}

/*
 * Closes every socket of old that now does not also use, then marks all of
 * old's fds -1: afterwards old owns no socket, and the shared ones belong to
 * now. now may be NULL (close everything old has).
 */
void
md_listeners_close_unused(md_conf_t *old, const md_conf_t *now)
{
    if (old == NULL)
        return;
    for (int i = 0; i < old->nlisten; i++) {
        int fd = old->listen[i].fd;
        if (fd < 0)
            continue;
        bool used = false;
        for (int j = 0; now && j < now->nlisten; j++)
            used = used || now->listen[j].fd == fd;
        if (!used) {
            /* Two entries of old could name one fd only through a bug elsewhere;
             * guard against closing a number twice all the same. */
            for (int k = i + 1; k < old->nlisten; k++)
                if (old->listen[k].fd == fd)
                    old->listen[k].fd = -1;
            close(fd);
        }
        old->listen[i].fd = -1;
    }
}
