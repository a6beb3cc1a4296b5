/*
 * JSON logging. Every line is built in a per-process buffer and written with one
 * write() so lines from several processes sharing an O_APPEND file never interleave.
 * Access lines are batched per loop pass (md_log_access_flush) because the access
 * log sits on the hot path of every request.
 */
#include "md_log.h"
#include "md_buf.h"

#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int md_log_level = MD_LOG_INFO;

/* A formatted message longer than this is cut (at a UTF-8 boundary) and marked. */
#define MD_LOG_MSG_MAX 4096
/* Same cap for each string field value: one runaway value must not make a huge line. */
#define MD_LOG_FIELD_MAX  4096
#define MD_LOG_TRUNC_MARK "...[truncated]"
/* The access buffer is written out as soon as it holds this much. */
#define MD_ACCESS_FLUSH_AT (32 * 1024)

static const char *level_names[] = {"emerg", "alert",  "crit", "error",
                                    "warn",  "notice", "info", "debug"};

static int error_fd = STDERR_FILENO;
static char *error_path;
static int access_fd = -1;
static char *access_path;
static const char *role = "master";
static pid_t cached_pid;
static bool atfork_registered;

static md_buf_t line;    /* error log line under construction, reused */
static md_buf_t acc_buf; /* access lines waiting for the next flush */
static char msgbuf[MD_LOG_MSG_MAX + 1];

/* The "YYYY-MM-DDTHH:MM:SS" part changes once a second; gmtime_r is not cheap
 * enough to run on every access line. */
static time_t cached_sec = (time_t)-1;
static char cached_ts[20];

static void
log_atfork_child(void)
{
    cached_pid = getpid();
    /* Lines buffered before the fork belong to the parent, which flushes them. */
    md_buf_reset(&acc_buf);
}

static pid_t
log_pid(void)
{
    if (md_unlikely(cached_pid == 0)) {
        cached_pid = getpid();
        if (!atfork_registered) {
            /* A forked child must not report its parent's pid even if it never
             * calls md_log_set_role. */
            pthread_atfork(NULL, NULL, log_atfork_child);
            atfork_registered = true;
        }
    }
    return cached_pid;
}

/* Writes all of [p, p+n) to fd; a regular O_APPEND file takes it in one call, the
 * loop only matters for pipes/ttys. Failures are dropped: there is nowhere to log them. */
static void
write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

/* Appends "YYYY-MM-DDTHH:MM:SS.mmmZ" (24 bytes) at dst for t (seconds since the
 * epoch), or for the current time when t is 0. */
static void
format_time_at(char *dst, double t)
{
    struct timespec ts;
    if (t > 0) {
        ts.tv_sec = (time_t)t;
        ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
    } else {
        clock_gettime(CLOCK_REALTIME, &ts);
    }
    if (md_unlikely(ts.tv_sec != cached_sec)) {
        struct tm tm;
        gmtime_r(&ts.tv_sec, &tm);
        strftime(cached_ts, sizeof(cached_ts), "%Y-%m-%dT%H:%M:%S", &tm);
        cached_sec = ts.tv_sec;
    }
    memcpy(dst, cached_ts, 19);
    unsigned ms = (unsigned)(ts.tv_nsec / 1000000);
    dst[19] = '.';
    dst[20] = (char)('0' + ms / 100);
    dst[21] = (char)('0' + ms / 10 % 10);
    dst[22] = (char)('0' + ms % 10);
    dst[23] = 'Z';
}

static void
format_time(char *dst)
{
    format_time_at(dst, 0);
}

/* Decimal digits of v at dst; returns the count. dst needs 20 bytes. */
static size_t
format_u64(char *dst, unsigned long long v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        dst[i] = tmp[n - 1 - i];
    return n;
}

static size_t
format_i64(char *dst, long long v)
{
    if (v < 0) {
        dst[0] = '-';
        return 1 + format_u64(dst + 1, 0ULL - (unsigned long long)v);
    }
    return format_u64(dst, (unsigned long long)v);
}

static void
append_i64(md_buf_t *b, long long v)
{
    md_buf_reserve(b, 21);
    b->last += format_i64(b->last, v);
}

/* A double as a JSON number; JSON has no NaN or infinities, so those become null. */
static void
append_double(md_buf_t *b, double d)
{
    if (!isfinite(d)) {
        md_buf_append(b, "null", 4);
        return;
    }
    md_buf_printf(b, "%.15g", d);
}

/* Length of s[0..n) cut to at most max bytes without splitting a UTF-8 sequence. */
static size_t
utf8_cut(const char *s, size_t n, size_t max)
{
    if (n <= max)
        return n;
    size_t k = max;
    /* Step back over continuation bytes to the lead byte of the cut sequence. */
    while (k > 0 && ((unsigned char)s[k] & 0xc0) == 0x80 && max - k < 4)
        k--;
    return k;
}

/* "s" with escaping and the length cap; NULL becomes null. */
static void
append_json_str(md_buf_t *b, const char *s, size_t n, size_t max)
{
    if (s == NULL) {
        md_buf_append(b, "null", 4);
        return;
    }
    size_t k = utf8_cut(s, n, max);
    md_buf_append(b, "\"", 1);
    md_buf_append_json_escaped(b, s, k);
    if (k < n)
        md_buf_append(b, MD_LOG_TRUNC_MARK, sizeof(MD_LOG_TRUNC_MARK) - 1);
    md_buf_append(b, "\"", 1);
}

static void
append_key(md_buf_t *b, const char *key)
{
    md_buf_append(b, ",\"", 2);
    md_buf_append_json_escaped(b, key, strlen(key));
    md_buf_append(b, "\":", 2);
}

/*
 * Opens path for appending. Returns the fd or -1 with errno set. The fd is
 * close-on-exec: nothing we exec should inherit the log files.
 */
static int
open_log_file(const char *path)
{
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
}

int
md_log_open(const char *error_log_path, int level)
{
    int fd = STDERR_FILENO;
    if (error_log_path) {
        fd = open_log_file(error_log_path);
        if (fd < 0)
            return -1;
    }
    if (error_fd != STDERR_FILENO && error_fd != fd)
        close(error_fd);
    error_fd = fd;
    free(error_path);
    error_path = error_log_path ? md_xstrdup(error_log_path) : NULL;
    if (level >= MD_LOG_EMERG && level <= MD_LOG_DEBUG)
        md_log_level = level;
    return 0;
}

int
md_log_access_open(const char *access_log_path)
{
    md_log_access_flush();
    int fd = -1;
    if (access_log_path) {
        fd = open_log_file(access_log_path);
        if (fd < 0)
            return -1;
    }
    if (access_fd >= 0 && access_fd != fd)
        close(access_fd);
    access_fd = fd;
    free(access_path);
    access_path = access_log_path ? md_xstrdup(access_log_path) : NULL;
    return 0;
}

/*
 * Reopens one file by path onto its existing descriptor number (dup2), so nothing
 * holding the fd number goes stale. On failure the old fd stays and the caller logs.
 */
static int
reopen_one(int *fdp, const char *path)
{
    if (path == NULL || *fdp < 0)
        return 0;
    int fd = open_log_file(path);
    if (fd < 0)
        return -1;
    if (dup2(fd, *fdp) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    close(fd);
    return 0;
}

int
md_log_reopen(void)
{
    int rc = 0;
    md_log_access_flush();
    if (reopen_one(&error_fd, error_path) != 0) {
        rc = -1;
        md_logf(MD_LOG_ERROR, errno, MD_LOG_FIELDS(MD_LS("path", error_path)),
                "cannot reopen the error log, still writing to the old file");
    }
    if (reopen_one(&access_fd, access_path) != 0) {
        rc = -1;
        md_logf(MD_LOG_ERROR, errno, MD_LOG_FIELDS(MD_LS("path", access_path)),
                "cannot reopen the access log, still writing to the old file");
    }
    return rc;
}

void
md_log_close(void)
{
    md_log_access_flush();
    if (access_fd >= 0)
        close(access_fd);
    access_fd = -1;
    if (error_fd != STDERR_FILENO)
        close(error_fd);
    error_fd = STDERR_FILENO;
    free(error_path);
    free(access_path);
    error_path = access_path = NULL;
    md_buf_free(&line);
    md_buf_free(&acc_buf);
}

void
md_log_set_role(const char *r)
{
    role = r ? r : "master";
    /* Roles are set right after fork: refresh the pid cache there too. */
    cached_pid = 0;
    log_pid();
}

int
md_log_level_parse(const char *name)
{
    if (name == NULL)
        return -1;
    for (int i = 0; i < (int)md_nelems(level_names); i++) {
        if (strcmp(name, level_names[i]) == 0)
            return i;
    }
    return -1;
}

const char *
md_log_level_name(int level)
{
    if (level < MD_LOG_EMERG || level > MD_LOG_DEBUG)
        return "unknown";
    return level_names[level];
}

void
md_log_emit(int level, int err, const md_log_field_t *fields, const char *fmt, ...)
{
    if (level > md_log_level)
        return;
    int saved_errno = errno; /* callers log and then still look at errno */

    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msgbuf, sizeof(msgbuf), fmt, ap);
    va_end(ap);
    size_t mlen = n < 0 ? 0 : (size_t)n;
    bool cut = false;
    if (mlen > MD_LOG_MSG_MAX) {
        mlen = utf8_cut(msgbuf, MD_LOG_MSG_MAX, MD_LOG_MSG_MAX - 1);
        cut = true;
    }

    md_buf_t *b = &line;
    md_buf_reset(b);
    md_buf_reserve(b, 128 + mlen);
    memcpy(b->last, "{\"time\":\"", 9);
    b->last += 9;
    format_time(b->last);
    b->last += 24;
    md_buf_append_str(b, "\",\"level\":\"");
    md_buf_append_str(b, md_log_level_name(level));
    md_buf_append_str(b, "\",\"pid\":");
    append_i64(b, (long long)log_pid());
    md_buf_append_str(b, ",\"role\":");
    append_json_str(b, role, strlen(role), MD_LOG_FIELD_MAX);
    md_buf_append_str(b, ",\"msg\":\"");
    md_buf_append_json_escaped(b, msgbuf, mlen);
    if (cut)
        md_buf_append(b, MD_LOG_TRUNC_MARK, sizeof(MD_LOG_TRUNC_MARK) - 1);
    md_buf_append(b, "\"", 1);

    for (const md_log_field_t *f = fields; f && f->type != MD_LOG_F_END && f->key; f++) {
        append_key(b, f->key);
        switch (f->type) {
        case MD_LOG_F_STR:
            append_json_str(b, f->v.s, f->v.s ? strlen(f->v.s) : 0, MD_LOG_FIELD_MAX);
            break;
        case MD_LOG_F_STRN:
            append_json_str(b, f->v.s, f->len, MD_LOG_FIELD_MAX);
            break;
        case MD_LOG_F_INT:
            append_i64(b, f->v.i);
            break;
        case MD_LOG_F_DBL:
            append_double(b, f->v.d);
            break;
        default:
            md_buf_append(b, "null", 4);
        }
    }
    if (err) {
        md_buf_append_str(b, ",\"errno\":");
        append_i64(b, err);
        md_buf_append_str(b, ",\"error\":");
        const char *es = strerror(err);
        append_json_str(b, es, strlen(es), MD_LOG_FIELD_MAX);
    }
    md_buf_append(b, "}\n", 2);
    write_all(error_fd, b->pos, md_buf_len(b));
    errno = saved_errno;
}

/* --- access log ---------------------------------------------------------- */

int
md_log_access_enabled(void)
{
    return access_fd >= 0;
}

void
md_log_access_flush(void)
{
    if (md_buf_len(&acc_buf) == 0)
        return;
    if (access_fd >= 0)
        write_all(access_fd, acc_buf.pos, md_buf_len(&acc_buf));
    md_buf_reset(&acc_buf);
}

#define ONES  0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL
/* High bit of each byte of v that is zero (exact as to whether there is any). */
#define ZERO_BYTES(v) (((v)-ONES) & ~(v)&HIGHS)

/*
 * Whether s[0..n) can be copied into a JSON string as it is: printable ASCII, no
 * quote or backslash. Eight bytes per step: this scan is most of the cost of an
 * access line (request id, path, remote address).
 */
static inline bool
json_plain(const char *s, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t x;
        memcpy(&x, s + i, 8);
        uint64_t bad = ((x - ONES * 0x20) & ~x & HIGHS) /* a byte < 0x20 */
                       | (x & HIGHS)                    /* a byte >= 0x80 */
                       | ZERO_BYTES(x ^ (ONES * '"')) | ZERO_BYTES(x ^ (ONES * '\\')) |
                       ZERO_BYTES(x ^ (ONES * 0x7f));
        if (bad)
            return false;
    }
    for (; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\')
            return false;
    }
    return true;
}

/* Room reserved per line beyond the strings: the fixed text with the widest
 * numbers and null for every string is under 240 bytes. */
#define ACC_FIXED 320

/*
 * Writes a request-derived string at *pp as a JSON string (NULL: null). The
 * common case (short plain ASCII) is one memcpy into room the caller reserved;
 * anything else goes through the general escaper, after which the room is
 * re-established (the buffer may have moved).
 */
static inline char *
acc_str(md_buf_t *b, char *p, const char *s, size_t n)
{
    if (s == NULL) {
        memcpy(p, "null", 4);
        return p + 4;
    }
    if (md_likely(n <= MD_LOG_FIELD_MAX && json_plain(s, n))) {
        *p++ = '"';
        memcpy(p, s, n);
        p += n;
        *p++ = '"';
        return p;
    }
    b->last = p;
    append_json_str(b, s, n, MD_LOG_FIELD_MAX);
    md_buf_reserve(b, ACC_FIXED + 4 * MD_LOG_FIELD_MAX);
    return b->last;
}

#define ACC_LIT(p, lit) (memcpy((p), (lit), sizeof(lit) - 1), (p) += sizeof(lit) - 1)

void
md_log_access(const md_access_entry_t *e)
{
    if (access_fd < 0)
        return;
    md_buf_t *b = &acc_buf;
    const char *remote = e->remote;
    size_t remote_len = remote ? strlen(remote) : 0;
    /* One reserve covers the whole line when every string is plain and under the
     * field cap (each plain string takes at most its length + 2). */
    md_buf_reserve(
        b, ACC_FIXED + md_min(e->path.len, MD_LOG_FIELD_MAX) +
               md_min(e->method.len, MD_LOG_FIELD_MAX) + md_min(e->route.len, MD_LOG_FIELD_MAX) +
               md_min(e->request_id.len, MD_LOG_FIELD_MAX) + md_min(remote_len, MD_LOG_FIELD_MAX));
    char *p = b->last;

    ACC_LIT(p, "{\"time\":\"");
    format_time_at(p, e->time);
    p += 24;
    ACC_LIT(p, "\",\"type\":\"access\",\"pid\":");
    p += format_i64(p, (long long)log_pid());
    ACC_LIT(p, ",\"request_id\":");
    p = acc_str(b, p, e->request_id.len ? e->request_id.data : NULL, e->request_id.len);
    ACC_LIT(p, ",\"remote\":");
    p = acc_str(b, p, remote, remote_len);
    ACC_LIT(p, ",\"method\":");
    p = acc_str(b, p, e->method.data ? e->method.data : "", e->method.len);
    ACC_LIT(p, ",\"path\":");
    p = acc_str(b, p, e->path.data ? e->path.data : "", e->path.len);
    ACC_LIT(p, ",\"route\":");
    p = acc_str(b, p, e->route.len ? e->route.data : NULL, e->route.len);
    ACC_LIT(p, ",\"status\":");
    p += format_i64(p, e->status);
    ACC_LIT(p, ",\"bytes\":");
    p += format_u64(p, (unsigned long long)e->bytes_sent);
    ACC_LIT(p, ",\"duration_ms\":");
    /* Microsecond resolution as fixed point; no printf on the hot path. */
    double d = e->duration;
    unsigned long long us = 0;
    if (d > 0 && d < 1e9) /* false for NaN */
        us = (unsigned long long)(d * 1e6 + 0.5);
    p += format_u64(p, us / 1000);
    unsigned frac = (unsigned)(us % 1000);
    p[0] = '.';
    p[1] = (char)('0' + frac / 100);
    p[2] = (char)('0' + frac / 10 % 10);
    p[3] = (char)('0' + frac % 10);
    p[4] = '}';
    p[5] = '\n';
    b->last = p + 6;

    if (md_buf_len(b) >= MD_ACCESS_FLUSH_AT)
        md_log_access_flush();
}
