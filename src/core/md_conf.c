/*
 * Configuration parser. A file is read whole into memory and cut into tokens
 * (words, ";", "{", "}"); words are unquoted, escapes applied and ${VAR}
 * expanded as they are read. Tokens are gathered into statements (a directive
 * name and its arguments) and each statement is dispatched to the setter of
 * its row in the current block's table. Defaults live in the tables too: when a
 * block ends, every row that was not seen gets its default through its own
 * setter, so defaults are validated and resolved exactly like written values.
 *
 * Nothing here prints: every problem becomes one "FILE:LINE: message" string.
 */
#include "md_core.h"
#include "md_conf.h"
#include "md_log.h"

#include <arpa/inet.h>
#include <glob.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define MD_CONF_MAX_INCLUDE_DEPTH 16
#define MD_CONF_MAX_ARGS          64
#define MD_CONF_DEFAULT_BACKLOG   511

enum { TOK_WORD, TOK_SEMI, TOK_LBRACE, TOK_RBRACE, TOK_EOF, TOK_ERR };

/* How a parse ends: the main file and an included file end at EOF, a block at "}". */
enum { PARSE_MAIN, PARSE_INCLUDE, PARSE_BLOCK };

typedef struct md_conf_tok_s {
    char *s; /* NUL-terminated, malloc'd */
    int line;
} md_conf_tok_t;

typedef struct md_conf_stmt_s {
    md_conf_tok_t tok[MD_CONF_MAX_ARGS];
    size_t n;
} md_conf_stmt_t;

/* One file being read; includes push frames. */
typedef struct md_conf_file_s {
    char *path; /* absolute, as reported in errors */
    char *dir;  /* directory of path, for relative includes */
    char *buf;
    size_t len, pos;
    int line;
    dev_t dev;
    ino_t ino;
} md_conf_file_t;

/* The block being parsed: include reads its file into the same one. */
typedef struct md_conf_ctx_s {
    const md_conf_block_t *blk;
    void *base;
    unsigned char *seen; /* per row of blk->cmds: already set in this block */
} md_conf_ctx_t;

struct md_conf_parser_s {
    md_conf_t *conf;
    md_conf_file_t files[MD_CONF_MAX_INCLUDE_DEPTH + 1];
    int nfiles;
    char *main_path;
    md_conf_stmt_t *args; /* the statement being set */
    int line;             /* its line; 0 for defaults */
    md_conf_ctx_t cur;
    char *err;
    size_t errlen;
    bool failed;
    /* token text under construction */
    char *tb;
    size_t tlen, tcap;
    /* where default_esp was written: it may name an esp block that comes later,
     * so it is checked after the whole file was read */
    char *default_esp_file;
    int default_esp_line;
};

static int md_conf_parse(md_conf_parser_t *cf, const md_conf_block_t *blk, void *base, int mode,
                         unsigned char *seen);
static int md_conf_set_listen(md_conf_parser_t *cf, const md_conf_cmd_t *cmd, void *base);
static int md_conf_set_workers(md_conf_parser_t *cf, const md_conf_cmd_t *cmd, void *base);
static int md_conf_set_error_log(md_conf_parser_t *cf, const md_conf_cmd_t *cmd, void *base);
static int md_conf_set_include(md_conf_parser_t *cf, const md_conf_cmd_t *cmd, void *base);
static int md_conf_set_default_esp(md_conf_parser_t *cf, const md_conf_cmd_t *cmd, void *base);

/* ---- tables ------------------------------------------------------------- */

static const md_conf_enum_t md_conf_flag_values[] = {{"on", 1}, {"off", 0}, {NULL, 0}};

static const md_conf_bounds_t md_conf_worker_connections_bounds = {8, INT_MAX};
static const md_conf_bounds_t md_conf_keepalive_requests_bounds = {1, INT_MAX};
static const md_conf_bounds_t md_conf_header_size_bounds = {1024, 1024 * 1024};
static const md_conf_bounds_t md_conf_max_attempts_bounds = {1, 100};
static const md_conf_bounds_t md_conf_backoff_bounds = {0.001, 7 * 86400};
static const md_conf_bounds_t md_conf_recovery_bounds = {0.1, 3600};
static const md_conf_bounds_t md_conf_recovery_full_bounds = {0.1, 7 * 86400};
static const md_conf_bounds_t md_conf_lease_bounds = {1, 86400};
static const md_conf_bounds_t md_conf_max_age_bounds = {1, 30 * 86400};
static const md_conf_bounds_t md_conf_retention_bounds = {60, 3650 * 86400.0};
static const md_conf_bounds_t md_conf_dispatch_concurrency_bounds = {1, 4096};

/* Directives allowed in every block. */
static const md_conf_cmd_t md_conf_any_cmds[] = {
    {"include", MD_CONF_ANY, MD_CONF_TAKE1 | MD_CONF_MULTI, md_conf_set_include, 0, NULL, NULL,
     NULL},
    {NULL, 0, 0, NULL, 0, NULL, NULL, NULL},
};

static const md_conf_cmd_t md_conf_http_cmds[] = {
    {"listen", MD_CONF_HTTP, MD_CONF_TAKE12 | MD_CONF_MULTI, md_conf_set_listen,
     offsetof(md_conf_t, listen), NULL, "127.0.0.1:8025", NULL},
    {"access_log", MD_CONF_HTTP, MD_CONF_TAKE1, md_conf_set_path_or_off,
     offsetof(md_conf_t, access_log), NULL, "off", md_conf_free_str},
    {"worker_connections", MD_CONF_HTTP, MD_CONF_TAKE1, md_conf_set_number,
     offsetof(md_conf_t, worker_connections), &md_conf_worker_connections_bounds, "4096", NULL},
    {"client_max_header_size", MD_CONF_HTTP, MD_CONF_TAKE1, md_conf_set_size,
     offsetof(md_conf_t, client_max_header_size), &md_conf_header_size_bounds, "16k", NULL},
    {"client_max_body_size", MD_CONF_HTTP, MD_CONF_TAKE1, md_conf_set_size,
     offsetof(md_conf_t, client_max_body_size), NULL, "10m", NULL},
    {"client_header_timeout", MD_CONF_HTTP, MD_CONF_TAKE1, md_conf_set_time,
     offsetof(md_conf_t, client_header_timeout), NULL, "10s", NULL},
    {"client_body_timeout", MD_CONF_HTTP, MD_CONF_TAKE1, md_conf_set_time,
     offsetof(md_conf_t, client_body_timeout), NULL, "30s", NULL},
    {"keepalive_timeout", MD_CONF_HTTP, MD_CONF_TAKE1, md_conf_set_time,
     offsetof(md_conf_t, keepalive_timeout), NULL, "75s", NULL},
    {"send_timeout", MD_CONF_HTTP, MD_CONF_TAKE1, md_conf_set_time,
     offsetof(md_conf_t, send_timeout), NULL, "30s", NULL},
    {"keepalive_requests", MD_CONF_HTTP, MD_CONF_TAKE1, md_conf_set_number,
     offsetof(md_conf_t, keepalive_requests), &md_conf_keepalive_requests_bounds, "10000", NULL},
    {"debug_endpoints", MD_CONF_HTTP, MD_CONF_TAKE1, md_conf_set_flag,
     offsetof(md_conf_t, debug_endpoints), NULL, "off", NULL},
    {NULL, 0, 0, NULL, 0, NULL, NULL, NULL},
};

/* The http fields live directly in md_conf_t, so the block's base offset is 0. */
static const md_conf_block_t md_conf_http_block = {"http", MD_CONF_HTTP, md_conf_http_cmds};

static const md_conf_cmd_t md_conf_main_cmds[] = {
    {"master_process", MD_CONF_MAIN, MD_CONF_TAKE1, md_conf_set_flag,
     offsetof(md_conf_t, master_process), NULL, "on", NULL},
    {"worker_processes", MD_CONF_MAIN, MD_CONF_TAKE1, md_conf_set_workers,
     offsetof(md_conf_t, worker_processes), NULL, "auto", NULL},
    {"pid", MD_CONF_MAIN, MD_CONF_TAKE1, md_conf_set_path_or_off, offsetof(md_conf_t, pid_file),
     NULL, "mailerd.pid", md_conf_free_str},
    {"error_log", MD_CONF_MAIN, MD_CONF_TAKE12, md_conf_set_error_log,
     offsetof(md_conf_t, error_log), NULL, "stderr info", md_conf_free_str},
    {"shutdown_timeout", MD_CONF_MAIN, MD_CONF_TAKE1, md_conf_set_time,
     offsetof(md_conf_t, shutdown_timeout), NULL, "30s", NULL},
    {"http", MD_CONF_MAIN, MD_CONF_NOARGS | MD_CONF_BLOCK, md_conf_set_block, 0,
     &md_conf_http_block, NULL, md_conf_free_block},
    {"postgres", MD_CONF_MAIN, MD_CONF_NOARGS | MD_CONF_BLOCK, md_conf_set_block,
     offsetof(md_conf_t, postgres), &md_pg_conf_block, NULL, md_conf_free_block},
    {"redis", MD_CONF_MAIN, MD_CONF_NOARGS | MD_CONF_BLOCK, md_conf_set_block,
     offsetof(md_conf_t, redis), &md_redis_conf_block, NULL, md_conf_free_block},
    {"migrations_dir", MD_CONF_MAIN, MD_CONF_TAKE1, md_conf_set_path,
     offsetof(md_conf_t, migrations_dir), NULL, "migrations", md_conf_free_str},
    {"admin_token_file", MD_CONF_MAIN, MD_CONF_TAKE1, md_conf_set_path_or_off,
     offsetof(md_conf_t, admin_token_file), NULL, "off", md_conf_free_str},
    {"admin_token", MD_CONF_MAIN, MD_CONF_TAKE1, md_conf_set_str, offsetof(md_conf_t, admin_token),
     NULL, NULL, md_conf_free_str},
    {"esp", MD_CONF_MAIN, MD_CONF_TAKE1 | MD_CONF_BLOCK | MD_CONF_MULTI, md_esp_conf_set,
     offsetof(md_conf_t, esp), &md_esp_conf_block, NULL, md_esp_conf_free},
    {"default_esp", MD_CONF_MAIN, MD_CONF_TAKE1, md_conf_set_default_esp,
     offsetof(md_conf_t, default_esp), NULL, NULL, md_conf_free_str},
    {"routing", MD_CONF_MAIN, MD_CONF_NOARGS | MD_CONF_BLOCK, md_route_conf_set,
     offsetof(md_conf_t, routing), NULL, NULL, md_route_conf_free},
    {"webhooks", MD_CONF_MAIN, MD_CONF_NOARGS | MD_CONF_BLOCK, md_webhooks_conf_set,
     offsetof(md_conf_t, webhooks), NULL, NULL, md_webhooks_conf_free},
    {"tracking", MD_CONF_MAIN, MD_CONF_NOARGS | MD_CONF_BLOCK, md_tracking_conf_set,
     offsetof(md_conf_t, tracking), NULL, NULL, md_tracking_conf_free},
    {"max_attempts", MD_CONF_MAIN, MD_CONF_TAKE1, md_conf_set_number,
     offsetof(md_conf_t, max_attempts), &md_conf_max_attempts_bounds, "5", NULL},
    {"retry_backoff_base", MD_CONF_MAIN, MD_CONF_TAKE1, md_conf_set_time,
     offsetof(md_conf_t, retry_backoff_base), &md_conf_backoff_bounds, "30s", NULL},
    {"retry_backoff_max", MD_CONF_MAIN, MD_CONF_TAKE1, md_conf_set_time,
     offsetof(md_conf_t, retry_backoff_max), &md_conf_backoff_bounds, "1h", NULL},
    {"queue_recovery_interval", MD_CONF_MAIN, MD_CONF_TAKE1, md_conf_set_time,
     offsetof(md_conf_t, queue_recovery_interval), &md_conf_recovery_bounds, "30s", NULL},
    {"queue_recovery_full", MD_CONF_MAIN, MD_CONF_TAKE1, md_conf_set_time,
     offsetof(md_conf_t, queue_recovery_full), &md_conf_recovery_full_bounds, "10m", NULL},
    {"queue_lease", MD_CONF_MAIN, MD_CONF_TAKE1, md_conf_set_time, offsetof(md_conf_t, queue_lease),
     &md_conf_lease_bounds, "5m", NULL},
    {"max_message_age", MD_CONF_MAIN, MD_CONF_TAKE1, md_conf_set_time,
     offsetof(md_conf_t, max_message_age), &md_conf_max_age_bounds, "3d", NULL},
    {"queue_dead_retention", MD_CONF_MAIN, MD_CONF_TAKE1, md_conf_set_time,
     offsetof(md_conf_t, queue_dead_retention), &md_conf_retention_bounds, "30d", NULL},
    {"suppression_cleanup_interval", MD_CONF_MAIN, MD_CONF_TAKE1, md_conf_set_time,
     offsetof(md_conf_t, suppression_cleanup_interval), &md_conf_recovery_bounds, "1m", NULL},
    {"dispatch_concurrency", MD_CONF_MAIN, MD_CONF_TAKE1, md_conf_set_number,
     offsetof(md_conf_t, dispatch_concurrency), &md_conf_dispatch_concurrency_bounds, "1024", NULL},
    {NULL, 0, 0, NULL, 0, NULL, NULL, NULL},
};

static const md_conf_block_t md_conf_main_block = {"main", MD_CONF_MAIN, md_conf_main_cmds};

/* ---- errors and small helpers --------------------------------------------- */

static void
md_conf_verror(md_conf_parser_t *cf, int line, const char *fmt, va_list ap)
{
    if (cf->failed)
        return;
    cf->failed = true;
    if (cf->err == NULL || cf->errlen == 0)
        return;
    const char *file = cf->nfiles ? cf->files[cf->nfiles - 1].path : cf->main_path;
    int n = line > 0 ? snprintf(cf->err, cf->errlen, "%s:%d: ", file, line)
                     : snprintf(cf->err, cf->errlen, "%s: ", file);
    if (n < 0 || (size_t)n >= cf->errlen)
        return;
    vsnprintf(cf->err + n, cf->errlen - (size_t)n, fmt, ap);
}

static int md_conf_error_at(md_conf_parser_t *cf, int line, const char *fmt, ...)
    md_printf_like(3, 4);

static int
md_conf_error_at(md_conf_parser_t *cf, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    md_conf_verror(cf, line, fmt, ap);
    va_end(ap);
    return MD_ERROR;
}

int
md_conf_error(md_conf_parser_t *cf, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    md_conf_verror(cf, cf->line, fmt, ap);
    va_end(ap);
    return MD_ERROR;
}

size_t
md_conf_nargs(const md_conf_parser_t *cf)
{
    return cf->args ? cf->args->n : 0;
}

const char *
md_conf_arg(const md_conf_parser_t *cf, size_t i)
{
    return cf->args && i < cf->args->n ? cf->args->tok[i].s : NULL;
}

/* Joins dir and path unless path is absolute; the caller frees the result. */
static char *
md_conf_join(const char *dir, const char *path)
{
    if (path[0] == '/')
        return md_xstrdup(path);
    while (path[0] == '.' && path[1] == '/')
        path += 2;
    size_t dl = strlen(dir), pl = strlen(path);
    char *r = md_xmalloc(dl + pl + 2);
    memcpy(r, dir, dl);
    size_t n = dl;
    if (n == 0 || r[n - 1] != '/')
        r[n++] = '/';
    memcpy(r + n, path, pl + 1);
    return r;
}

char *
md_conf_full_path(const md_conf_parser_t *cf, const char *path)
{
    return md_conf_join(cf->conf->prefix, path);
}

/* Absolute form of p against the cwd; NULL (errno set) if the cwd is unknown. */
static char *
md_conf_absolute(const char *p)
{
    if (p[0] == '/')
        return md_xstrdup(p);
    char *cwd = getcwd(NULL, 0);
    if (cwd == NULL)
        return NULL;
    char *r = md_conf_join(cwd, p);
    free(cwd);
    return r;
}

static void *
md_conf_field(void *base, const md_conf_cmd_t *cmd)
{
    return (char *)base + cmd->offset;
}

/* Bytes as the shortest unit that is exact: 1024 -> "1k". */
static void
md_conf_fmt_size(char *out, size_t len, double v)
{
    unsigned long long n = (unsigned long long)v;
    if (n && n % (1024ULL * 1024 * 1024) == 0)
        snprintf(out, len, "%llug", n / (1024ULL * 1024 * 1024));
    else if (n && n % (1024ULL * 1024) == 0)
        snprintf(out, len, "%llum", n / (1024ULL * 1024));
    else if (n && n % 1024 == 0)
        snprintf(out, len, "%lluk", n / 1024);
    else
        snprintf(out, len, "%llu", n);
}

/* ---- value parsers --------------------------------------------------------- */

/* Decimal digits only, no sign; MD_ERROR on overflow or anything else. */
static int
md_conf_parse_uint(const char *s, size_t n, unsigned long long max, unsigned long long *out)
{
    unsigned long long v = 0;
    if (n == 0)
        return MD_ERROR;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return MD_ERROR;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (max - d) / 10)
            return MD_ERROR;
        v = v * 10 + d;
    }
    *out = v;
    return MD_OK;
}

int
md_conf_parse_size(const char *s, size_t *out)
{
    size_t n = strlen(s);
    unsigned long long mult = 1, v;
    if (n == 0)
        return MD_ERROR;
    switch (s[n - 1]) {
    case 'k':
    case 'K':
        mult = 1024ULL;
        n--;
        break;
    case 'm':
    case 'M':
        mult = 1024ULL * 1024;
        n--;
        break;
    case 'g':
    case 'G':
        mult = 1024ULL * 1024 * 1024;
        n--;
        break;
    }
    if (md_conf_parse_uint(s, n, SIZE_MAX, &v) != MD_OK || v > SIZE_MAX / mult)
        return MD_ERROR;
    *out = (size_t)(v * mult);
    return MD_OK;
}

/*
 * Components like "1d2h3m4s5ms" in that order, each unit at most once; a bare
 * number alone means seconds. Each component is capped so the sum stays exact.
 */
int
md_conf_parse_time(const char *s, double *out)
{
    static const struct {
        const char *unit;
        double secs;
    } units[] = {{"d", 86400}, {"h", 3600}, {"ms", 0.001}, {"m", 60}, {"s", 1}};
    /* rank: the order units must appear in (ms after s) */
    static const int rank[] = {0, 1, 4, 2, 3};
    const char *p = s;
    double total = 0;
    int last = -1;
    if (*p == '\0')
        return MD_ERROR;
    while (*p) {
        const char *d = p;
        while (*p >= '0' && *p <= '9')
            p++;
        unsigned long long v;
        if (md_conf_parse_uint(d, (size_t)(p - d), 1000000000ULL, &v) != MD_OK)
            return MD_ERROR;
        if (*p == '\0') {
            if (last != -1) /* "1m30" is ambiguous */
                return MD_ERROR;
            total = (double)v;
            break;
        }
        size_t u;
        for (u = 0; u < md_nelems(units); u++) {
            size_t ul = strlen(units[u].unit);
            if (strncmp(p, units[u].unit, ul) == 0)
                break;
        }
        if (u == md_nelems(units) || rank[u] <= last)
            return MD_ERROR;
        last = rank[u];
        p += strlen(units[u].unit);
        total += (double)v * units[u].secs;
    }
    *out = total;
    return MD_OK;
}

/* "ADDR:PORT", "[IPv6]:PORT" or "PORT"; "localhost" is 127.0.0.1, "*" any IPv4. */
int
md_conf_parse_listen(const char *s, md_listen_t *ls)
{
    char host[64];
    const char *port;
    struct sockaddr_storage ss;
    socklen_t sl;
    memset(&ss, 0, sizeof(ss));

    if (s[0] == '[') {
        const char *e = strchr(s, ']');
        if (e == NULL || e[1] != ':' || (size_t)(e - s - 1) >= sizeof(host))
            return MD_ERROR;
        memcpy(host, s + 1, (size_t)(e - s - 1));
        host[e - s - 1] = '\0';
        port = e + 2;
    } else {
        const char *c = strrchr(s, ':');
        if (c == NULL) {
            snprintf(host, sizeof(host), "127.0.0.1");
            port = s;
        } else {
            if (strchr(s, ':') != c || (size_t)(c - s) >= sizeof(host))
                return MD_ERROR; /* a bare IPv6 address needs brackets */
            memcpy(host, s, (size_t)(c - s));
            host[c - s] = '\0';
            port = c + 1;
        }
        if (strcmp(host, "localhost") == 0)
            snprintf(host, sizeof(host), "127.0.0.1");
        else if (strcmp(host, "*") == 0)
            snprintf(host, sizeof(host), "0.0.0.0");
    }

    unsigned long long p;
    if (md_conf_parse_uint(port, strlen(port), 65535, &p) != MD_OK || p == 0)
        return MD_ERROR;

    char addr[INET6_ADDRSTRLEN];
    if (s[0] == '[') {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
        if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1)
            return MD_ERROR;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)p);
        sl = sizeof(*sin6);
        inet_ntop(AF_INET6, &sin6->sin6_addr, addr, sizeof(addr));
        snprintf(ls->text, sizeof(ls->text), "[%s]:%llu", addr, p);
    } else {
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
        if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
            return MD_ERROR;
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)p);
        sl = sizeof(*sin);
        inet_ntop(AF_INET, &sin->sin_addr, addr, sizeof(addr));
        snprintf(ls->text, sizeof(ls->text), "%s:%llu", addr, p);
    }
    ls->addr = ss;
    ls->addrlen = sl;
    ls->backlog = MD_CONF_DEFAULT_BACKLOG;
    ls->fd = -1;
    return MD_OK;
}

/* ---- generic setters ------------------------------------------------------- */

static int
md_conf_invalid(md_conf_parser_t *cf, size_t i, const char *expected)
{
    return md_conf_error(cf, "invalid value \"%s\" in \"%s\" directive, expected %s",
                         md_conf_arg(cf, i), md_conf_arg(cf, 0), expected);
}

static int
md_conf_check_bounds(md_conf_parser_t *cf, const md_conf_cmd_t *cmd, double v, int kind)
{
    const md_conf_bounds_t *b = cmd->extra;
    char lo[32], hi[32];
    if (b == NULL || (v >= b->min && v <= b->max))
        return MD_OK;
    if (kind == 's') {
        md_conf_fmt_size(lo, sizeof(lo), b->min);
        md_conf_fmt_size(hi, sizeof(hi), b->max);
    } else if (kind == 't') {
        snprintf(lo, sizeof(lo), "%gs", b->min);
        snprintf(hi, sizeof(hi), "%gs", b->max);
    } else {
        snprintf(lo, sizeof(lo), "%.0f", b->min);
        snprintf(hi, sizeof(hi), "%.0f", b->max);
    }
    if (b->max >= (kind == 'n' ? (double)INT_MAX : 1e300))
        return md_conf_error(cf, "value \"%s\" in \"%s\" directive is too small, minimum is %s",
                             md_conf_arg(cf, 1), cmd->name, lo);
    return md_conf_error(cf, "value \"%s\" in \"%s\" directive is out of range, expected %s to %s",
                         md_conf_arg(cf, 1), cmd->name, lo, hi);
}

int
md_conf_set_flag(md_conf_parser_t *cf, const md_conf_cmd_t *cmd, void *base)
{
    const char *v = md_conf_arg(cf, 1);
    for (const md_conf_enum_t *e = md_conf_flag_values; e->name; e++) {
        if (strcmp(v, e->name) == 0) {
            *(int *)md_conf_field(base, cmd) = e->value;
            return MD_OK;
        }
    }
    return md_conf_invalid(cf, 1, "\"on\" or \"off\"");
}

int
md_conf_set_number(md_conf_parser_t *cf, const md_conf_cmd_t *cmd, void *base)
{
    const char *v = md_conf_arg(cf, 1);
    unsigned long long n;
    if (md_conf_parse_uint(v, strlen(v), INT_MAX, &n) != MD_OK)
        return md_conf_invalid(cf, 1, "a whole number");
    if (md_conf_check_bounds(cf, cmd, (double)n, 'n') != MD_OK)
        return MD_ERROR;
    *(int *)md_conf_field(base, cmd) = (int)n;
    return MD_OK;
}

int
md_conf_set_size(md_conf_parser_t *cf, const md_conf_cmd_t *cmd, void *base)
{
    size_t n;
    if (md_conf_parse_size(md_conf_arg(cf, 1), &n) != MD_OK)
        return md_conf_invalid(cf, 1, "a size like 512, 16k, 10m or 1g");
    if (md_conf_check_bounds(cf, cmd, (double)n, 's') != MD_OK)
        return MD_ERROR;
    *(size_t *)md_conf_field(base, cmd) = n;
    return MD_OK;
}

int
md_conf_set_time(md_conf_parser_t *cf, const md_conf_cmd_t *cmd, void *base)
{
    double t;
    if (md_conf_parse_time(md_conf_arg(cf, 1), &t) != MD_OK)
        return md_conf_invalid(cf, 1, "a time like 30s, 500ms, 1m30s, 2h or 1d");
    if (md_conf_check_bounds(cf, cmd, t, 't') != MD_OK)
        return MD_ERROR;
    *(double *)md_conf_field(base, cmd) = t;
    return MD_OK;
}

/* String setters replace (and free) an earlier value, which is how a default
 * set before parsing or a value from a reused struct is dropped. */
static void
md_conf_store_str(void *base, const md_conf_cmd_t *cmd, char *s)
{
    char **f = md_conf_field(base, cmd);
    free(*f);
    *f = s;
}

int
md_conf_set_str(md_conf_parser_t *cf, const md_conf_cmd_t *cmd, void *base)
{
    md_conf_store_str(base, cmd, md_xstrdup(md_conf_arg(cf, 1)));
    return MD_OK;
}

int
md_conf_set_path(md_conf_parser_t *cf, const md_conf_cmd_t *cmd, void *base)
{
    const char *v = md_conf_arg(cf, 1);
    if (v[0] == '\0')
        return md_conf_invalid(cf, 1, "a path");
    md_conf_store_str(base, cmd, md_conf_full_path(cf, v));
    return MD_OK;
}

int
md_conf_set_path_or_off(md_conf_parser_t *cf, const md_conf_cmd_t *cmd, void *base)
{
    if (strcmp(md_conf_arg(cf, 1), "off") == 0) {
        md_conf_store_str(base, cmd, NULL);
        return MD_OK;
    }
    return md_conf_set_path(cf, cmd, base);
}

int
md_conf_set_enum(md_conf_parser_t *cf, const md_conf_cmd_t *cmd, void *base)
{
    const char *v = md_conf_arg(cf, 1);
    char expected[256];
    size_t n = 0;
    for (const md_conf_enum_t *e = cmd->extra; e && e->name; e++) {
        if (strcmp(v, e->name) == 0) {
            *(int *)md_conf_field(base, cmd) = e->value;
            return MD_OK;
        }
        int w =
            snprintf(expected + n, sizeof(expected) - n, "%s\"%s\"", n ? ", " : "one of ", e->name);
        if (w > 0 && (size_t)w < sizeof(expected) - n)
            n += (size_t)w;
    }
    if (n == 0)
        snprintf(expected, sizeof(expected), "a known value");
    return md_conf_invalid(cf, 1, expected);
}

int
md_conf_set_block(md_conf_parser_t *cf, const md_conf_cmd_t *cmd, void *base)
{
    return md_conf_parse_block(cf, cmd->extra, md_conf_field(base, cmd));
}

void
md_conf_free_str(const md_conf_cmd_t *cmd, void *base)
{
    md_conf_store_str(base, cmd, NULL);
}

void
md_conf_cleanup(const md_conf_block_t *blk, void *base)
{
    for (const md_conf_cmd_t *c = blk->cmds; c->name; c++) {
        if (c->cleanup)
            c->cleanup(c, base);
    }
}

void
md_conf_free_block(const md_conf_cmd_t *cmd, void *base)
{
    md_conf_cleanup(cmd->extra, md_conf_field(base, cmd));
}

/* ---- specific setters ------------------------------------------------------ */

static int
md_conf_set_listen(md_conf_parser_t *cf, const md_conf_cmd_t *cmd, void *base)
{
    md_conf_t *conf = md_container_of(md_conf_field(base, cmd), md_conf_t, listen);
    md_listen_t ls;
    const char *v = md_conf_arg(cf, 1);

    if (md_conf_parse_listen(v, &ls) != MD_OK)
        return md_conf_invalid(cf, 1,
                               "ADDR:PORT, [IPv6]:PORT or PORT with an IP address (or "
                               "localhost) and a port from 1 to 65535");
    if (md_conf_nargs(cf) == 3) {
        const char *b = md_conf_arg(cf, 2);
        unsigned long long n;
        if (strncmp(b, "backlog=", 8) != 0 ||
            md_conf_parse_uint(b + 8, strlen(b + 8), 65535, &n) != MD_OK || n == 0)
            return md_conf_invalid(cf, 2, "backlog=N with N from 1 to 65535");
        ls.backlog = (int)n;
    }
    for (int i = 0; i < conf->nlisten; i++) {
        if (strcmp(conf->listen[i].text, ls.text) == 0)
            return md_conf_error(cf, "duplicate listen \"%s\"", ls.text);
    }
    if (conf->nlisten >= MD_CONF_MAX_LISTEN)
        return md_conf_error(cf, "too many \"listen\" directives, at most %d", MD_CONF_MAX_LISTEN);
    conf->listen[conf->nlisten++] = ls;
    return MD_OK;
}

static int
md_conf_set_workers(md_conf_parser_t *cf, const md_conf_cmd_t *cmd, void *base)
{
    const char *v = md_conf_arg(cf, 1);
    unsigned long long n;
    if (strcmp(v, "auto") == 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        n = c < 1 ? 1 : c > 1024 ? 1024 : (unsigned long long)c;
    } else if (md_conf_parse_uint(v, strlen(v), 1024, &n) != MD_OK || n == 0) {
        return md_conf_invalid(cf, 1, "a number from 1 to 1024 or \"auto\"");
    }
    *(int *)md_conf_field(base, cmd) = (int)n;
    return MD_OK;
}

static int
md_conf_set_error_log(md_conf_parser_t *cf, const md_conf_cmd_t *cmd, void *base)
{
    md_conf_t *conf = md_container_of(md_conf_field(base, cmd), md_conf_t, error_log);
    int level = MD_LOG_INFO;
    if (md_conf_nargs(cf) == 3) {
        level = md_log_level_parse(md_conf_arg(cf, 2));
        if (level < 0)
            return md_conf_invalid(
                cf, 2, "a level: emerg, alert, crit, error, warn, notice, info or debug");
    }
    if (strcmp(md_conf_arg(cf, 1), "stderr") == 0)
        md_conf_store_str(base, cmd, NULL);
    else if (md_conf_set_path(cf, cmd, base) != MD_OK)
        return MD_ERROR;
    conf->log_level = level;
    return MD_OK;
}

/* ---- files and tokens ------------------------------------------------------ */

/* Reads path whole and pushes it as the current file. On failure returns the
 * errno and pushes nothing. */
static int
md_conf_push_file(md_conf_parser_t *cf, const char *path)
{
    FILE *f = fopen(path, "r");
    struct stat st;
    if (f == NULL)
        return errno;
    int e = fstat(fileno(f), &st) != 0 ? errno : S_ISDIR(st.st_mode) ? EISDIR : 0;
    if (e != 0) {
        fclose(f);
        return e;
    }
    size_t cap = 4096, len = 0;
    char *buf = md_xmalloc(cap);
    for (;;) {
        size_t n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (len < cap) {
            if (ferror(f)) {
                e = errno ? errno : EIO;
                free(buf);
                fclose(f);
                return e;
            }
            break;
        }
        cap *= 2;
        buf = md_xrealloc(buf, cap);
    }
    fclose(f);

    md_conf_file_t *fr = &cf->files[cf->nfiles++];
    memset(fr, 0, sizeof(*fr));
    fr->path = md_xstrdup(path);
    const char *slash = strrchr(path, '/');
    fr->dir = slash == path ? md_xstrdup("/") : md_xstrndup(path, (size_t)(slash - path));
    fr->buf = buf;
    fr->len = len;
    fr->line = 1;
    fr->dev = st.st_dev;
    fr->ino = st.st_ino;
    return 0;
}

static void
md_conf_pop_file(md_conf_parser_t *cf)
{
    md_conf_file_t *fr = &cf->files[--cf->nfiles];
    free(fr->path);
    free(fr->dir);
    free(fr->buf);
    memset(fr, 0, sizeof(*fr));
}

static void
md_conf_putc(md_conf_parser_t *cf, char c)
{
    if (cf->tlen + 1 >= cf->tcap) {
        cf->tcap = cf->tcap ? cf->tcap * 2 : 64;
        cf->tb = md_xrealloc(cf->tb, cf->tcap);
    }
    cf->tb[cf->tlen++] = c;
}

static void
md_conf_puts(md_conf_parser_t *cf, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        md_conf_putc(cf, s[i]);
}

/* Appends the character an escape after "\" stands for; unknown escapes stay as written. */
static void
md_conf_escape(md_conf_parser_t *cf, md_conf_file_t *fr)
{
    char c = fr->buf[fr->pos++];
    switch (c) {
    case '"':
    case '\'':
    case '\\':
    case '$':
        md_conf_putc(cf, c);
        break;
    case 'n':
        md_conf_putc(cf, '\n');
        break;
    case 't':
        md_conf_putc(cf, '\t');
        break;
    default:
        if (c == '\n')
            fr->line++;
        md_conf_putc(cf, '\\');
        md_conf_putc(cf, c);
    }
}

static bool
md_conf_is_name_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
}

/*
 * Expands "${VAR}" or "${VAR:-default}" at fr->pos (which is at "$", with "{"
 * next). Like the shell, ":-" uses the default when VAR is unset or empty.
 */
static int
md_conf_expand(md_conf_parser_t *cf, md_conf_file_t *fr)
{
    int line = fr->line;
    size_t p = fr->pos + 2, name = p;
    while (p < fr->len && md_conf_is_name_char(fr->buf[p]))
        p++;
    size_t name_len = p - name;
    const char *dflt = NULL;
    size_t dflt_len = 0;

    if (p + 1 < fr->len && fr->buf[p] == ':' && fr->buf[p + 1] == '-') {
        p += 2;
        dflt = fr->buf + p;
        while (p < fr->len && fr->buf[p] != '}')
            p++;
        dflt_len = (size_t)(fr->buf + p - dflt);
    }
    if (p >= fr->len)
        return md_conf_error_at(cf, line, "unterminated \"${\" in variable reference");
    if (fr->buf[p] != '}' || name_len == 0) {
        size_t show = md_min(p - fr->pos + 1, (size_t)40);
        return md_conf_error_at(cf, line, "invalid variable reference \"%.*s\"", (int)show,
                                fr->buf + fr->pos);
    }
    char *var = md_xstrndup(fr->buf + name, name_len);
    const char *val = getenv(var);
    if (val != NULL && !(dflt && val[0] == '\0')) {
        md_conf_puts(cf, val, strlen(val));
    } else if (dflt) {
        md_conf_puts(cf, dflt, dflt_len);
    } else {
        md_conf_error_at(cf, line, "environment variable \"%s\" is not set", var);
        free(var);
        return MD_ERROR;
    }
    free(var);
    for (size_t i = fr->pos; i < p; i++) {
        if (fr->buf[i] == '\n')
            fr->line++;
    }
    fr->pos = p + 1;
    return MD_OK;
}

static bool
md_conf_is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v';
}

/* Reads the next token of the current file. A word's text is in cf->tb. */
static int
md_conf_next(md_conf_parser_t *cf, int *line)
{
    md_conf_file_t *fr = &cf->files[cf->nfiles - 1];

    for (;;) {
        if (fr->pos >= fr->len) {
            *line = fr->line;
            return TOK_EOF;
        }
        char c = fr->buf[fr->pos];
        if (c == '#') {
            while (fr->pos < fr->len && fr->buf[fr->pos] != '\n')
                fr->pos++;
            continue;
        }
        if (!md_conf_is_space(c))
            break;
        if (c == '\n')
            fr->line++;
        fr->pos++;
    }

    *line = fr->line;
    cf->tlen = 0;
    char c = fr->buf[fr->pos];
    switch (c) {
    case ';':
        fr->pos++;
        return TOK_SEMI;
    case '{':
        fr->pos++;
        return TOK_LBRACE;
    case '}':
        fr->pos++;
        return TOK_RBRACE;
    }

    if (c == '"' || c == '\'') {
        char q = c;
        fr->pos++;
        for (;;) {
            if (fr->pos >= fr->len) {
                md_conf_error_at(cf, *line, "unterminated string");
                return TOK_ERR;
            }
            c = fr->buf[fr->pos];
            if (c == q) {
                fr->pos++;
                break;
            }
            if (c == '\\' && fr->pos + 1 < fr->len) {
                fr->pos++;
                md_conf_escape(cf, fr);
            } else if (c == '$' && q == '"' && fr->pos + 1 < fr->len &&
                       fr->buf[fr->pos + 1] == '{') {
                if (md_conf_expand(cf, fr) != MD_OK)
                    return TOK_ERR;
            } else {
                if (c == '\n')
                    fr->line++;
                md_conf_putc(cf, c);
                fr->pos++;
            }
        }
        if (fr->pos < fr->len) {
            c = fr->buf[fr->pos];
            if (!md_conf_is_space(c) && c != ';' && c != '{' && c != '}' && c != '#') {
                md_conf_error_at(cf, fr->line, "unexpected \"%c\" after a quoted string", c);
                return TOK_ERR;
            }
        }
    } else {
        while (fr->pos < fr->len) {
            c = fr->buf[fr->pos];
            if (md_conf_is_space(c) || c == ';' || c == '{' || c == '}')
                break;
            if (c == '\\' && fr->pos + 1 < fr->len) {
                fr->pos++;
                bool dollar = fr->buf[fr->pos] == '$';
                md_conf_escape(cf, fr);
                /* "\${X}" is literal text: its braces do not end the word */
                if (dollar && fr->pos < fr->len && fr->buf[fr->pos] == '{') {
                    while (fr->pos < fr->len && !md_conf_is_space(fr->buf[fr->pos]) &&
                           fr->buf[fr->pos] != ';') {
                        c = fr->buf[fr->pos++];
                        md_conf_putc(cf, c);
                        if (c == '}')
                            break;
                    }
                }
            } else if (c == '$' && fr->pos + 1 < fr->len && fr->buf[fr->pos + 1] == '{') {
                if (md_conf_expand(cf, fr) != MD_OK)
                    return TOK_ERR;
            } else {
                md_conf_putc(cf, c);
                fr->pos++;
            }
        }
    }
    md_conf_putc(cf, '\0');
    cf->tlen--;
    return TOK_WORD;
}

/* ---- statements ------------------------------------------------------------ */

static void
md_conf_stmt_clear(md_conf_stmt_t *st)
{
    for (size_t i = 0; i < st->n; i++)
        free(st->tok[i].s);
    st->n = 0;
}

/* Is name a directive of some block reachable from blk? Tells "not allowed
 * here" from "unknown". depth guards against tables that nest themselves. */
static bool
md_conf_known(const md_conf_block_t *blk, const char *name, int depth)
{
    if (depth > 8)
        return false;
    for (const md_conf_cmd_t *c = blk->cmds; c->name; c++) {
        if (strcmp(c->name, name) == 0)
            return true;
        if ((c->type & MD_CONF_BLOCK) && c->extra && md_conf_known(c->extra, name, depth + 1))
            return true;
    }
    return false;
}

static bool
md_conf_arity_ok(unsigned type, size_t nargs)
{
    switch (nargs) {
    case 0:
        return type & MD_CONF_NOARGS;
    case 1:
        return type & (MD_CONF_TAKE1 | MD_CONF_1MORE);
    case 2:
        return type & (MD_CONF_TAKE2 | MD_CONF_1MORE);
    default:
        return type & MD_CONF_1MORE;
    }
}

/* Runs cmd's setter with cf->args = st, keeping the caller's args around it. */
static int
md_conf_call(md_conf_parser_t *cf, const md_conf_cmd_t *cmd, void *base, md_conf_stmt_t *st,
             int line)
{
    md_conf_stmt_t *saved_args = cf->args;
    int saved_line = cf->line;
    cf->args = st;
    cf->line = line;
    int rc = cmd->set(cf, cmd, base);
    if (rc != MD_OK)
        md_conf_error(cf, "invalid \"%s\" directive", cmd->name); /* if the setter said nothing */
    cf->args = saved_args;
    cf->line = saved_line;
    return rc;
}

/* Looks the statement up and sets it; term is TOK_SEMI or TOK_LBRACE. */
static int
md_conf_dispatch(md_conf_parser_t *cf, md_conf_stmt_t *st, int term)
{
    const md_conf_block_t *blk = cf->cur.blk;
    const char *name = st->tok[0].s;
    int line = st->tok[0].line;
    const md_conf_cmd_t *cmd = NULL;
    ptrdiff_t idx = -1;

    for (const md_conf_cmd_t *c = blk->cmds; c->name; c++) {
        if (strcmp(c->name, name) == 0) {
            cmd = c;
            idx = c - blk->cmds;
            break;
        }
    }
    for (const md_conf_cmd_t *c = md_conf_any_cmds; cmd == NULL && c->name; c++) {
        if (strcmp(c->name, name) == 0)
            cmd = c;
    }
    if (cmd == NULL || !(cmd->ctx & blk->ctx)) {
        if (cmd || md_conf_known(&md_conf_main_block, name, 0))
            return md_conf_error_at(cf, line, "\"%s\" directive is not allowed here", name);
        return md_conf_error_at(cf, line, "unknown directive \"%s\"", name);
    }

    /* Arguments that run onto later lines mean a forgotten ";" far more often
     * than a directive written across lines: say so at the directive's line. */
    bool spans = st->tok[st->n - 1].line > line;
    size_t nargs = st->n - 1;
    if (term == TOK_LBRACE && !(cmd->type & MD_CONF_BLOCK))
        return md_conf_error_at(cf, line, "directive \"%s\" is not terminated by \";\"", name);
    if (!md_conf_arity_ok(cmd->type, nargs)) {
        if (spans)
            return md_conf_error_at(cf, line, "directive \"%s\" is not terminated by \";\"", name);
        return md_conf_error_at(cf, line, "invalid number of arguments in \"%s\" directive", name);
    }
    if (term == TOK_SEMI && (cmd->type & MD_CONF_BLOCK))
        return md_conf_error_at(cf, line, "directive \"%s\" has no opening \"{\"", name);
    if (idx >= 0 && !(cmd->type & MD_CONF_MULTI)) {
        if (cf->cur.seen[idx])
            return md_conf_error_at(cf, line, "\"%s\" directive is duplicate", name);
        cf->cur.seen[idx] = 1;
    } else if (idx >= 0) {
        cf->cur.seen[idx] = 1;
    }
    return md_conf_call(cf, cmd, cf->cur.base, st, line);
}

/* Applies the defaults of every row of blk not seen in this block; an absent
 * embedded block gets its own defaults. */
static int
md_conf_defaults(md_conf_parser_t *cf, const md_conf_block_t *blk, void *base,
                 const unsigned char *seen)
{
    md_conf_stmt_t *st = md_xcalloc(1, sizeof(*st));
    int rc = MD_OK;
    for (const md_conf_cmd_t *c = blk->cmds; rc == MD_OK && c->name; c++) {
        if (seen && seen[c - blk->cmds])
            continue;
        if (c->dflt) {
            /* the default is written like arguments, split at spaces */
            st->tok[st->n++].s = md_xstrdup(c->name);
            const char *p = c->dflt;
            while (*p && st->n < MD_CONF_MAX_ARGS) {
                size_t n = strcspn(p, " ");
                if (n)
                    st->tok[st->n++].s = md_xstrndup(p, n);
                p += n;
                p += strspn(p, " ");
            }
            rc = md_conf_call(cf, c, base, st, 0);
            md_conf_stmt_clear(st);
        } else if ((c->type & MD_CONF_BLOCK) && c->set == md_conf_set_block) {
            rc = md_conf_defaults(cf, c->extra, (char *)base + c->offset, NULL);
        }
    }
    free(st);
    return rc;
}

/*
 * Parses statements from the current file into base per blk until "}" (block),
 * or EOF (main, include). An include shares its block's seen set, so a
 * directive repeated across included files is still a duplicate.
 */
static int
md_conf_parse(md_conf_parser_t *cf, const md_conf_block_t *blk, void *base, int mode,
              unsigned char *seen)
{
    md_conf_ctx_t saved = cf->cur;
    unsigned char *own = NULL;
    size_t rows = 0;
    while (blk->cmds[rows].name)
        rows++;
    if (seen == NULL)
        seen = own = md_xcalloc(rows + 1, 1);
    cf->cur.blk = blk;
    cf->cur.base = base;
    cf->cur.seen = seen;

    md_conf_stmt_t *st = md_xcalloc(1, sizeof(*st));
    int rc = MD_ERROR;
    for (;;) {
        int line, t = md_conf_next(cf, &line);
        if (t == TOK_ERR)
            break;
        if (t == TOK_WORD) {
            if (st->n == MD_CONF_MAX_ARGS) {
                md_conf_error_at(cf, st->tok[0].line, "too many arguments in \"%s\" directive",
                                 st->tok[0].s);
                break;
            }
            st->tok[st->n].s = md_xstrndup(cf->tb, cf->tlen);
            st->tok[st->n++].line = line;
            continue;
        }
        if (t == TOK_SEMI || t == TOK_LBRACE) {
            if (st->n == 0) {
                md_conf_error_at(cf, line, "unexpected \"%c\"", t == TOK_SEMI ? ';' : '{');
                break;
            }
            if (md_conf_dispatch(cf, st, t) != MD_OK)
                break;
            md_conf_stmt_clear(st);
            continue;
        }
        /* "}" or EOF */
        if (st->n > 0) {
            if (t == TOK_EOF && st->tok[st->n - 1].line == st->tok[0].line)
                md_conf_error_at(cf, st->tok[0].line, "unexpected end of file, expecting \";\"");
            else
                md_conf_error_at(cf, st->tok[0].line, "directive \"%s\" is not terminated by \";\"",
                                 st->tok[0].s);
            break;
        }
        if (t == TOK_RBRACE && mode != PARSE_BLOCK) {
            md_conf_error_at(cf, line, "unexpected \"}\"");
            break;
        }
        if (t == TOK_EOF && mode == PARSE_BLOCK) {
            md_conf_error_at(cf, line, "unexpected end of file, expecting \"}\" to close \"%s\"",
                             blk->name);
            break;
        }
        rc = mode == PARSE_INCLUDE ? MD_OK : md_conf_defaults(cf, blk, base, seen);
        break;
    }
    md_conf_stmt_clear(st);
    free(st);
    free(own);
    cf->cur = saved;
    return rc;
}

int
md_conf_parse_block(md_conf_parser_t *cf, const md_conf_block_t *blk, void *base)
{
    return md_conf_parse(cf, blk, base, PARSE_BLOCK, NULL);
}

/* ---- esp accounts ------------------------------------------------------------ */

/* default_esp NAME: stored now, checked against the esp blocks once the whole
 * file is read (md_conf_esp_finish), with this directive's FILE:LINE. */
static int
md_conf_set_default_esp(md_conf_parser_t *cf, const md_conf_cmd_t *cmd, void *base)
{
    if (md_conf_set_str(cf, cmd, base) != MD_OK)
        return MD_ERROR;
    free(cf->default_esp_file);
    cf->default_esp_file = md_xstrdup(cf->nfiles ? cf->files[cf->nfiles - 1].path : cf->main_path);
    cf->default_esp_line = cf->line;
    return MD_OK;
}

/* After the main file: default_esp must name an esp block; without the
 * directive the first block is the default (none: no default, mail waits). */
static int
md_conf_esp_finish(md_conf_parser_t *cf, md_conf_t *conf)
{
    if (conf->default_esp == NULL) {
        if (conf->nesp > 0)
            conf->default_esp = md_xstrdup(conf->esp[0].name);
        return MD_OK;
    }
    for (size_t i = 0; i < conf->nesp; i++) {
        if (strcmp(conf->esp[i].name, conf->default_esp) == 0)
            return MD_OK;
    }
    if (!cf->failed && cf->err && cf->errlen)
        snprintf(cf->err, cf->errlen, "%s:%d: \"default_esp\" names no esp block: \"%s\"",
                 cf->default_esp_file ? cf->default_esp_file : cf->main_path, cf->default_esp_line,
                 conf->default_esp);
    cf->failed = true;
    return MD_ERROR;
}

/* ---- include --------------------------------------------------------------- */

static int
md_conf_include_file(md_conf_parser_t *cf, const char *path, bool must_exist)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        if (errno == ENOENT && !must_exist)
            return MD_OK; /* vanished between glob and open */
        if (errno == ENOENT)
            return md_conf_error(cf, "include file \"%s\" not found", path);
        return md_conf_error(cf, "cannot open include file \"%s\": %s", path, strerror(errno));
    }
    if (cf->nfiles > MD_CONF_MAX_INCLUDE_DEPTH)
        return md_conf_error(cf, "include depth exceeds %d at \"%s\"", MD_CONF_MAX_INCLUDE_DEPTH,
                             path);
    for (int i = 0; i < cf->nfiles; i++) {
        if (cf->files[i].dev == st.st_dev && cf->files[i].ino == st.st_ino)
            return md_conf_error(cf, "include cycle: \"%s\" is already being read", path);
    }
    int e = md_conf_push_file(cf, path);
    if (e != 0)
        return md_conf_error(cf, "cannot open include file \"%s\": %s", path, strerror(e));
    int rc = md_conf_parse(cf, cf->cur.blk, cf->cur.base, PARSE_INCLUDE, cf->cur.seen);
    md_conf_pop_file(cf);
    return rc;
}

/* include FILE: relative to the including file's directory; a glob pattern may
 * match nothing, a plain path must exist. */
static int
md_conf_set_include(md_conf_parser_t *cf, const md_conf_cmd_t *cmd, void *base)
{
    md_unused(cmd);
    md_unused(base);
    char *path = md_conf_join(cf->files[cf->nfiles - 1].dir, md_conf_arg(cf, 1));
    int rc = MD_OK;

    if (strpbrk(path, "*?[") == NULL) {
        rc = md_conf_include_file(cf, path, true);
        free(path);
        return rc;
    }
    glob_t g;
    int gr = glob(path, 0, NULL, &g);
    if (gr == GLOB_NOMATCH) {
        free(path);
        return MD_OK;
    }
    if (gr != 0) {
        rc = md_conf_error(cf, "cannot read include pattern \"%s\"", path);
        free(path);
        globfree(&g);
        return rc;
    }
    for (size_t i = 0; rc == MD_OK && i < g.gl_pathc; i++)
        rc = md_conf_include_file(cf, g.gl_pathv[i], false);
    globfree(&g);
    free(path);
    return rc;
}

/* ---- load / free ----------------------------------------------------------- */

md_conf_t *
md_conf_load(const char *file, const char *prefix, char *err, size_t errlen)
{
    md_conf_parser_t cf;
    memset(&cf, 0, sizeof(cf));
    cf.err = err;
    cf.errlen = errlen;
    if (err && errlen)
        err[0] = '\0';

    md_conf_t *conf = md_xcalloc(1, sizeof(*conf));
    cf.conf = conf;
    for (int i = 0; i < MD_CONF_MAX_LISTEN; i++)
        conf->listen[i].fd = -1;

    conf->file = md_conf_absolute(file);
    cf.main_path = conf->file ? conf->file : (char *)file;
    conf->prefix = md_conf_absolute(prefix && prefix[0] ? prefix : ".");
    if (conf->file == NULL || conf->prefix == NULL) {
        md_conf_error_at(&cf, 0, "cannot get the current directory: %s", strerror(errno));
        goto fail;
    }
    /* "." and a trailing "/" add nothing to paths joined later */
    size_t pl = strlen(conf->prefix);
    if (pl > 2 && strcmp(conf->prefix + pl - 2, "/.") == 0)
        conf->prefix[pl -= 2] = '\0';
    while (pl > 1 && conf->prefix[pl - 1] == '/')
        conf->prefix[--pl] = '\0';

    int e = md_conf_push_file(&cf, conf->file);
    if (e != 0) {
        md_conf_error_at(&cf, 0, "cannot open configuration file: %s", strerror(e));
        goto fail;
    }
    int rc = md_conf_parse(&cf, &md_conf_main_block, conf, PARSE_MAIN, NULL);
    while (cf.nfiles)
        md_conf_pop_file(&cf);
    if (rc == MD_OK)
        rc = md_conf_esp_finish(&cf, conf);
    free(cf.default_esp_file);
    cf.default_esp_file = NULL;
    if (rc != MD_OK)
        goto fail;
    free(cf.tb);
    return conf;

fail:
    free(cf.tb);
    md_conf_free(conf);
    return NULL;
}

void
md_conf_free(md_conf_t *conf)
{
    if (conf == NULL)
        return;
    md_conf_cleanup(&md_conf_main_block, conf);
    free(conf->file);
    free(conf->prefix);
    free(conf);
}

void
md_conf_free_secret(const md_conf_cmd_t *cmd, void *base)
{
    char **f = (char **)(void *)((char *)base + cmd->offset);
    if (*f) {
        explicit_bzero(*f, strlen(*f));
        free(*f);
        *f = NULL;
    }
}

/*
 * NAME value | NAME_file PATH (both rows point at the same field): the secret
 * itself, or the contents of PATH read now (config load runs in the master,
 * never in a worker loop) with trailing CR/LF stripped. Giving both forms is an
 * error, whichever comes first, so an operator never wonders which one won.
 */
int
md_conf_set_secret(md_conf_parser_t *cf, const md_conf_cmd_t *cmd, void *base)
{
    char **f = (char **)(void *)((char *)base + cmd->offset);
    size_t nl = strlen(cmd->name);
    bool is_file = nl > 5 && strcmp(cmd->name + nl - 5, "_file") == 0;
    if (*f != NULL)
        return md_conf_error(cf, "\"%.*s\" and \"%.*s_file\" are both given (use one)",
                             (int)(is_file ? nl - 5 : nl), cmd->name, (int)(is_file ? nl - 5 : nl),
                             cmd->name);
    const char *v = md_conf_arg(cf, 1);
    if (!is_file) {
        if (v[0] == '\0')
            return md_conf_error(cf, "empty value in \"%s\" directive", cmd->name);
        *f = md_xstrdup(v);
        return MD_OK;
    }
    char *path = md_conf_full_path(cf, v);
    FILE *fp = fopen(path, "re");
    if (fp == NULL) {
        int e = errno;
        md_conf_error(cf, "cannot open \"%s\" in \"%s\" directive: %s", path, cmd->name,
                      strerror(e));
        free(path);
        return MD_ERROR;
    }
    char *buf = md_xmalloc(MD_CONF_SECRET_MAX + 1);
    size_t n = fread(buf, 1, MD_CONF_SECRET_MAX + 1, fp);
    int rerr = ferror(fp) ? errno : 0;
    fclose(fp);
    int rc = MD_OK;
    if (rerr)
        rc = md_conf_error(cf, "cannot read \"%s\": %s", path, strerror(rerr));
    else if (n > MD_CONF_SECRET_MAX)
        rc = md_conf_error(cf, "\"%s\" is larger than %d bytes: not a secret file", path,
                           MD_CONF_SECRET_MAX);
    if (rc == MD_OK) {
        while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
            n--;
        buf[n] = '\0';
        if (n == 0)
            rc = md_conf_error(cf, "\"%s\" (in \"%s\") is empty", path, cmd->name);
        else if (strlen(buf) != n || strpbrk(buf, "\r\n") != NULL)
            rc = md_conf_error(cf, "\"%s\" (in \"%s\") holds more than one line", path, cmd->name);
    }
    free(path);
    if (rc != MD_OK) {
        /* the buffer may hold a secret: do not leave it in freed memory */
        explicit_bzero(buf, MD_CONF_SECRET_MAX + 1);
        free(buf);
        return MD_ERROR;
    }
    *f = buf;
    return MD_OK;
}
