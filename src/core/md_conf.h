/*
 * Configuration: an nginx-like file parsed into an md_conf_t. Directives are
 * table rows (name, contexts, arity, setter, field offset). A reload parses a
 * fresh md_conf_t beside the running one and swaps only when it is valid.
 */
#ifndef MD_CONF_H
#define MD_CONF_H

#include "md_core.h"
#include <sys/socket.h>

#define MD_CONF_MAX_LISTEN 16

typedef struct md_listen_s {
    char text[80];                /* as written after normalisation, e.g. "127.0.0.1:8025" */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    int backlog;
    int fd;                       /* -1 until the process module opens it */
} md_listen_t;

typedef struct md_conf_s {
    char *file;                   /* absolute path of the main file */
    char *prefix;                 /* absolute; relative paths in the file resolve against it */

    /* main context */
    int master_process;           /* flag; off runs one worker in the foreground (debugging) */
    int worker_processes;         /* resolved: "auto" becomes the number of online CPUs */
    char *pid_file;               /* absolute path, or NULL for none */
    char *error_log;              /* absolute path, or NULL for stderr */
    int log_level;                /* MD_LOG_* */
    double shutdown_timeout;      /* seconds */

    /* http { } */
    md_listen_t listen[MD_CONF_MAX_LISTEN];
    int nlisten;
    char *access_log;             /* absolute path, or NULL when off */
    int worker_connections;
    size_t client_max_header_size;
    size_t client_max_body_size;
    double client_header_timeout;
    double client_body_timeout;
    double keepalive_timeout;
    double send_timeout;
    int keepalive_requests;
    int debug_endpoints;          /* flag: /debug/echo and /debug/sleep, for tests only */
} md_conf_t;

/*
 * Parses file (relative to the cwd if not absolute) with relative paths inside
 * resolved against prefix (NULL: the cwd). On error returns NULL and writes
 * "FILE:LINE: message" (or "FILE: message" when no line applies) into err.
 * The caller owns the result and frees it with md_conf_free().
 */
md_conf_t *md_conf_load(const char *file, const char *prefix, char *err, size_t errlen);
void md_conf_free(md_conf_t *conf);

/* Parsing helpers shared by setters and tests. Each returns MD_OK or MD_ERROR. */
int md_conf_parse_size(const char *s, size_t *out);  /* "512", "16k", "10m", "1g" */
int md_conf_parse_time(const char *s, double *out);  /* "30s", "500ms", "1m30s", "2h", "1d", "15" */
int md_conf_parse_listen(const char *s, md_listen_t *ls);

#endif
