/*
 * Logging: one JSON object per line. The error log carries time, level, pid,
 * role (master/worker), msg and typed fields; the access log one line per request.
 * Both are reopened on SIGUSR1. Writes from several processes to one file rely on
 * O_APPEND; each line (or flushed batch of access lines) is one write().
 */
#ifndef MD_LOG_H
#define MD_LOG_H

#include "md_core.h"
#include <stdarg.h>

enum {
    MD_LOG_EMERG = 0,
    MD_LOG_ALERT,
    MD_LOG_CRIT,
    MD_LOG_ERROR,
    MD_LOG_WARN,
    MD_LOG_NOTICE,
    MD_LOG_INFO,
    MD_LOG_DEBUG
};

enum { MD_LOG_F_END = 0, MD_LOG_F_STR, MD_LOG_F_INT, MD_LOG_F_DBL, MD_LOG_F_STRN };

typedef struct md_log_field_s {
    const char *key;
    int type;
    size_t len; /* MD_LOG_F_STRN only */
    union {
        const char *s;
        long long i;
        double d;
    } v;
} md_log_field_t;

#define MD_LS(k, val) ((md_log_field_t){.key = (k), .type = MD_LOG_F_STR, .v.s = (val)})
#define MD_LSN(k, p, n)                                                                            \
    ((md_log_field_t){.key = (k), .type = MD_LOG_F_STRN, .len = (n), .v.s = (p)})
#define MD_LI(k, val)      ((md_log_field_t){.key = (k), .type = MD_LOG_F_INT, .v.i = (long long)(val)})
#define MD_LD(k, val)      ((md_log_field_t){.key = (k), .type = MD_LOG_F_DBL, .v.d = (double)(val)})
#define MD_LEND            ((md_log_field_t){.key = NULL, .type = MD_LOG_F_END})
#define MD_LOG_FIELDS(...) ((const md_log_field_t[]){__VA_ARGS__, MD_LEND})

extern int md_log_level;

/* Returns -1 and sets errno when a file cannot be opened; path NULL means stderr. */
int md_log_open(const char *error_log_path, int level);
int md_log_access_open(const char *access_log_path); /* NULL: access log off */
/* Reopens both files by path (SIGUSR1); keeps the old fd when reopening fails. */
int md_log_reopen(void);
void md_log_close(void);
void md_log_set_role(const char *role);   /* "master", "worker", "single" */
int md_log_level_parse(const char *name); /* -1 if unknown */
const char *md_log_level_name(int level);

/* err: an errno value to add as "errno" and "error" fields, or 0. fields may be NULL. */
void md_log_emit(int level, int err, const md_log_field_t *fields, const char *fmt, ...)
    md_printf_like(4, 5);

#define md_log(level, err, ...)                                                                    \
    do {                                                                                           \
        if ((level) <= md_log_level)                                                               \
            md_log_emit((level), (err), NULL, __VA_ARGS__);                                        \
    } while (0)
#define md_logf(level, err, fields, ...)                                                           \
    do {                                                                                           \
        if ((level) <= md_log_level)                                                               \
            md_log_emit((level), (err), (fields), __VA_ARGS__);                                    \
    } while (0)

/* Access log: the line is buffered in the worker and written by md_log_access_flush(),
 * which the worker calls once per loop pass (before sleeping) and on exit. */
typedef struct md_access_entry_s {
    md_str_t method;
    md_str_t path;
    int status;
    size_t bytes_sent;
    double duration; /* seconds */
    md_str_t request_id;
    const char *remote; /* "ip:port" */
    md_str_t route;     /* route pattern, or empty */
    double time;        /* wall-clock time of the line (the loop's ev_now); 0: read the clock */
} md_access_entry_t;

void md_log_access(const md_access_entry_t *e);
void md_log_access_flush(void);
int md_log_access_enabled(void);

#endif
