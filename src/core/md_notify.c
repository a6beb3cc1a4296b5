/*
 * Service-manager notifications (sd_notify protocol): READY=1, RELOADING=1,
 * STOPPING=1. Without libsystemd the protocol is small enough to speak here: one
 * datagram to the AF_UNIX socket named by $NOTIFY_SOCKET ("@" = abstract).
 */
#include "md_core.h"
#include "md_process.h"
#include "md_log.h"

#ifdef HAVE_LIBSYSTEMD
#include <systemd/sd-daemon.h>
#else
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#endif

#ifndef HAVE_LIBSYSTEMD
/* Sends state to $NOTIFY_SOCKET; returns 1 sent, 0 nothing to do, -errno on error. */
static int
notify_raw(const char *state)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (path == NULL || path[0] == '\0')
        return 0;
    size_t plen = strlen(path);
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    if ((path[0] != '/' && path[0] != '@') || plen >= sizeof(sa.sun_path))
        return -EINVAL;
    memcpy(sa.sun_path, path, plen);
    if (path[0] == '@')
        sa.sun_path[0] = '\0';
    socklen_t salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen);
    if (path[0] == '/')
        salen++; /* the terminating NUL of a filesystem path */

    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    ssize_t n = sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sa, salen);
    int err = n < 0 ? errno : 0;
    close(fd);
    return err ? -err : 1;
}
#endif

/* Best effort: a lost notification is logged, never fatal (the service manager
 * times out on its own and says so). */
void
md_notify(const char *state)
{
#ifdef HAVE_LIBSYSTEMD
    int r = sd_notify(0, state);
#else
    int r = notify_raw(state);
#endif
    if (r < 0)
        md_log(MD_LOG_WARN, -r, "sd_notify(\"%s\") failed", state);
    else if (r > 0)
        md_log(MD_LOG_DEBUG, 0, "notified service manager: %s", state);
}
