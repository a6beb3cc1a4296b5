/*
 * Unit tests for md_log (JSON error and access logs) and md_metrics (shared
 * counters and the Prometheus rendering). md_metrics.c is included so its static
 * helpers (label escaping) can be tested directly; the linker then takes these
 * definitions and leaves the archive's copy out.
 */
#include "md_log.h"
#include "md_buf.h"
#include "md_router.h"
#include "../../src/core/md_metrics.c"
#include "tap.h"

#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char dir[256];

/* dir/name in one of 16 rotating static buffers: enough for one test function. */
static char *
path_in(const char *name)
{
    static char p[16][512];
    static int k;
    k = (k + 1) % 16;
    snprintf(p[k], sizeof(p[k]), "%s/%s", dir, name);
    return p[k];
}

static char *
slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return md_xstrdup("");
    md_buf_t b;
    md_buf_init(&b);
    char tmp[4096];
    size_t n;
    while ((n = fread(tmp, 1, sizeof(tmp), f)) > 0)
        md_buf_append(&b, tmp, n);
    fclose(f);
    md_buf_append(&b, "", 1);
    return b.pos;
}

static off_t
file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? st.st_size : -1;
}

/* Decodes each line of a file; returns the number of lines, -1 if any is not a
 * JSON object. The decoded objects go into out[] (caller decrefs). */
static int
json_lines(const char *path, json_t **out, int max)
{
    char *s = slurp(path);
    int n = 0, bad = 0;
    char *save = NULL;
    for (char *l = strtok_r(s, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        json_error_t jerr;
        json_t *j = json_loads(l, JSON_REJECT_DUPLICATES, &jerr);
        if (!j || !json_is_object(j)) {
            printf("# not a JSON object: %.200s (%s)\n", l, jerr.text);
            bad = 1;
            json_decref(j);
            continue;
        }
        if (n < max)
            out[n] = j;
        else
            json_decref(j);
        n++;
    }
    free(s);
    return bad ? -1 : n;
}

static void
free_lines(json_t **v, int n)
{
    for (int i = 0; i < n; i++)
        json_decref(v[i]);
}

static const char *
jstr(json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

/* Keys of o in order, comma-separated (jansson keeps insertion order). */
static const char *
key_order(json_t *o)
{
    static char buf[1024];
    buf[0] = 0;
    for (void *it = json_object_iter(o); it; it = json_object_iter_next(o, it)) {
        if (buf[0])
            strcat(buf, ",");
        strncat(buf, json_object_iter_key(it), sizeof(buf) - strlen(buf) - 2);
    }
    return buf;
}

static int
time_ok(const char *t)
{
    /* 2026-11-25T21:30:00.123Z */
    if (!t || strlen(t) != 24)
        return 0;
    const char *pat = "dddd-dd-ddTdd:dd:dd.dddZ";
    for (int i = 0; i < 24; i++) {
        if (pat[i] == 'd' ? (t[i] < '0' || t[i] > '9') : t[i] != pat[i])
            return 0;
    }
    return 1;
}

static void
test_levels(void)
{
    is_int(md_log_level_parse("emerg"), MD_LOG_EMERG, "parse emerg");
    is_int(md_log_level_parse("warn"), MD_LOG_WARN, "parse warn");
    is_int(md_log_level_parse("debug"), MD_LOG_DEBUG, "parse debug");
    is_int(md_log_level_parse("warning"), -1, "unknown level name is -1");
    is_int(md_log_level_parse(NULL), -1, "NULL level name is -1");
    int roundtrip = 1;
    for (int l = MD_LOG_EMERG; l <= MD_LOG_DEBUG; l++)
        roundtrip &= md_log_level_parse(md_log_level_name(l)) == l;
    ok(roundtrip, "level names round-trip");
}

/* Before md_log_open, lines go to stderr at info. */
static void
test_early_stderr(void)
{
    const char *p = path_in("early.log");
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int saved = dup(2);
    dup2(fd, 2);
    close(fd);
    md_log(MD_LOG_INFO, 0, "early %d", 1);
    md_log(MD_LOG_DEBUG, 0, "not shown");
    dup2(saved, 2);
    close(saved);
    json_t *l[4];
    int n = json_lines(p, l, 4);
    is_int(n, 1, "before md_log_open: info goes to stderr, debug does not");
    if (n == 1) {
        is_str(jstr(l[0], "msg"), "early 1", "early message formatted");
        is_str(jstr(l[0], "level"), "info", "early level");
    }
    free_lines(l, n > 0 ? n : 0);
}

static void
test_error_log(void)
{
    const char *p = path_in("error.log");
    ok(md_log_open(p, MD_LOG_NOTICE) == 0, "md_log_open on a file");
    is_int(md_log_level, MD_LOG_NOTICE, "level set by md_log_open");
    md_log_set_role("worker");

    md_log(MD_LOG_INFO, 0, "filtered out");
    md_log_emit(MD_LOG_INFO, 0, NULL, "also filtered: emit checks the level");
    errno = EBADF;
    md_logf(MD_LOG_WARN, EAGAIN,
            MD_LOG_FIELDS(MD_LS("conn", "q\"uo\\te\n\x01"),
                          MD_LSN("bad",
                                 "ab\xff\xfe"
                                 "cd",
                                 6),
                          MD_LI("n", -42), MD_LD("ratio", 0.25), MD_LD("nan", NAN),
                          MD_LD("inf", INFINITY), MD_LS("nul", NULL), MD_LS("k\"ey", "v")),
            "hello %s %d", "world", 7);
    is_int(errno, EBADF, "logging keeps errno");
    md_log(MD_LOG_ERROR, 0, "tab\there \"q\"");
    md_log(MD_LOG_NOTICE, 0, "%s", "");

    json_t *l[8];
    int n = json_lines(p, l, 8);
    is_int(n, 3, "3 lines, each a JSON object (info filtered at notice)");
    if (n != 3) {
        free_lines(l, n > 0 ? md_min(n, 8) : 0);
        return;
    }
    json_t *a = l[0];
    is_str(key_order(a), "time,level,pid,role,msg,conn,bad,n,ratio,nan,inf,nul,k\"ey,errno,error",
           "keys in order: time level pid role msg fields errno error");
    ok(time_ok(jstr(a, "time")), "time is UTC with milliseconds: %s", jstr(a, "time"));
    is_str(jstr(a, "level"), "warn", "level name");
    is_int(json_integer_value(json_object_get(a, "pid")), getpid(), "pid");
    is_str(jstr(a, "role"), "worker", "role");
    is_str(jstr(a, "msg"), "hello world 7", "message formatted");
    is_str(jstr(a, "conn"), "q\"uo\\te\n\x01", "quotes, backslash and control chars round-trip");
    is_str(jstr(a, "bad"),
           "ab\xef\xbf\xbd\xef\xbf\xbd"
           "cd",
           "invalid UTF-8 becomes U+FFFD");
    is_int(json_integer_value(json_object_get(a, "n")), -42, "int field");
    ok(json_real_value(json_object_get(a, "ratio")) == 0.25, "double field");
    ok(json_is_null(json_object_get(a, "nan")) && json_is_null(json_object_get(a, "inf")),
       "nan and inf are written as null");
    ok(json_is_null(json_object_get(a, "nul")), "NULL string is null");
    is_str(jstr(a, "k\"ey"), "v", "keys are escaped too");
    is_int(json_integer_value(json_object_get(a, "errno")), EAGAIN, "errno field");
    is_str(jstr(a, "error"), strerror(EAGAIN), "error text from strerror");
    is_str(jstr(l[1], "msg"), "tab\there \"q\"", "message escaping");
    is_str(jstr(l[1], "level"), "error", "error level");
    ok(json_object_get(l[1], "errno") == NULL, "no errno fields when err is 0");
    is_str(jstr(l[2], "msg"), "", "empty message");
    free_lines(l, n);

    char *raw = slurp(p);
    ok(strncmp(raw, "{\"time\":\"", 9) == 0 && raw[strlen(raw) - 1] == '\n',
       "line starts with time and ends with a newline");
    free(raw);
}

static void
test_truncation(void)
{
    const char *p = path_in("long.log");
    md_log_open(p, MD_LOG_INFO);
    size_t big = 20000;
    char *s = md_xmalloc(big + 1);
    memset(s, 'x', big);
    s[big] = 0;
    md_log(MD_LOG_INFO, 0, "%s", s);
    /* Two-byte characters at an odd offset: the cut must not split one. */
    s[0] = 'y';
    for (size_t i = 1; i + 1 < big; i += 2) {
        s[i] = '\xc3';
        s[i + 1] = '\xa9';
    }
    s[big - 1] = 0;
    md_log(MD_LOG_INFO, 0, "%s", s);
    md_logf(MD_LOG_INFO, 0, MD_LOG_FIELDS(MD_LSN("body", s, big - 1)), "long field");
    free(s);

    json_t *l[4];
    int n = json_lines(p, l, 4);
    is_int(n, 3, "truncated lines are still valid JSON");
    if (n == 3) {
        const char *m = jstr(l[0], "msg");
        ok(m && strlen(m) < 4200 && strstr(m, "[truncated]") != NULL,
           "long message cut and marked (%zu bytes)", m ? strlen(m) : 0);
        m = jstr(l[1], "msg");
        ok(m && strstr(m, "\xef\xbf\xbd") == NULL && strstr(m, "[truncated]"),
           "cut at a UTF-8 boundary (no replacement character)");
        m = jstr(l[2], "body");
        ok(m && strlen(m) < 4200 && strstr(m, "\xef\xbf\xbd") == NULL, "long field value capped");
    }
    free_lines(l, n > 0 ? n : 0);
}

static void
test_reopen(void)
{
    const char *p = path_in("rot.log");
    const char *p1 = path_in("rot.log.1");
    md_log_open(p, MD_LOG_INFO);
    md_log(MD_LOG_INFO, 0, "before rotation");
    ok(rename(p, p1) == 0, "rename the log");
    md_log(MD_LOG_INFO, 0, "after rename, before reopen");
    is_int(md_log_reopen(), 0, "reopen succeeds");
    md_log(MD_LOG_INFO, 0, "after reopen");
    char *old = slurp(p1), *cur = slurp(p);
    ok(strstr(old, "before rotation") && strstr(old, "before reopen") &&
           !strstr(old, "after reopen"),
       "old file has the lines up to the reopen");
    ok(strstr(cur, "after reopen") && !strstr(cur, "before"), "reopen created a new file");
    free(old);
    free(cur);

    /* A failing reopen keeps the old fd and says why in the error log. */
    mkdir(path_in("sub"), 0755);
    const char *ap = path_in("sub/access.log");
    ok(md_log_access_open(ap) == 0 && md_log_access_enabled(), "access log opened");
    unlink(ap);
    rmdir(path_in("sub"));
    is_int(md_log_reopen(), -1, "reopen fails when the directory is gone");
    ok(md_log_access_enabled(), "access log still enabled on the old fd");
    json_t *l[8];
    int n = json_lines(p, l, 8);
    ok(n >= 2 && strstr(jstr(l[n - 1], "msg"), "access log") &&
           json_integer_value(json_object_get(l[n - 1], "errno")) == ENOENT &&
           strcmp(jstr(l[n - 1], "path"), ap) == 0,
       "the failure is logged with path and errno");
    free_lines(l, n > 0 ? md_min(n, 8) : 0);
    md_log_access_open(NULL);
    ok(!md_log_access_enabled(), "access log off with NULL");
    ok(md_log_open(path_in("nodir/x.log"), MD_LOG_INFO) == -1 && errno == ENOENT,
       "md_log_open reports a bad path with errno");
}

static md_access_entry_t
entry(const char *method, const char *path, int status, const char *rid, const char *route)
{
    md_access_entry_t e;
    memset(&e, 0, sizeof(e));
    e.method.data = method;
    e.method.len = strlen(method);
    e.path.data = path;
    e.path.len = strlen(path);
    e.status = status;
    e.bytes_sent = 123;
    e.duration = 0.00012;
    e.request_id.data = rid;
    e.request_id.len = rid ? strlen(rid) : 0;
    e.remote = "127.0.0.1:5555";
    e.route.data = route;
    e.route.len = route ? strlen(route) : 0;
    return e;
}

static void
test_access(void)
{
    const char *p = path_in("access.log");
    md_log_access(&(md_access_entry_t){.status = 200}); /* off: ignored, no crash */
    ok(md_log_access_open(p) == 0, "access log open");
    md_access_entry_t e1 =
        entry("GET", "/health", 200, "0190a0b1-0000-7000-8000-000000000001", "/health");
    md_access_entry_t e2 = entry("POST", "/x\"y\n\x01\xff", 404, NULL, NULL);
    e2.duration = 1.5;
    e2.remote = NULL;
    md_access_entry_t e3 = entry("GET", "/health", 200, "r3", "/health");
    e3.duration = NAN;
    e3.time = 1764110096.789; /* 2025-11-25T22:34:56.789Z: the caller's clock is used as given */
    md_log_access(&e1);
    md_log_access(&e2);
    md_log_access(&e3);
    is_int(file_size(p), 0, "access lines are buffered until flush");
    /* The plain-ASCII fast path scans 8 bytes at a time: odd bytes in either half. */
    md_access_entry_t e4 = entry("GET", "/abcdefghij\x7fk\"l\tm/\xc3\xa9", 200, "r4", "/x\\y");
    md_log_access(&e4);
    md_log_access_flush();
    md_log_access_flush(); /* nothing left: no duplicate */
    json_t *l[8];
    int n = json_lines(p, l, 8);
    is_int(n, 4, "flush writes 4 JSON lines");
    if (n == 4) {
        is_str(jstr(l[3], "path"), "/abcdefghij\x7fk\"l\tm/\xc3\xa9",
               "odd bytes past the first word");
        is_str(jstr(l[3], "route"), "/x\\y", "route escaped");
        is_str(key_order(l[0]),
               "time,type,pid,request_id,remote,method,path,route,status,bytes,duration_ms",
               "access keys in order");
        ok(time_ok(jstr(l[0], "time")), "access time format");
        is_str(jstr(l[0], "type"), "access", "type access");
        is_int(json_integer_value(json_object_get(l[0], "pid")), getpid(), "pid");
        is_str(jstr(l[0], "request_id"), "0190a0b1-0000-7000-8000-000000000001", "request id");
        is_str(jstr(l[0], "remote"), "127.0.0.1:5555", "remote");
        is_str(jstr(l[0], "method"), "GET", "method");
        is_str(jstr(l[0], "path"), "/health", "path");
        is_str(jstr(l[0], "route"), "/health", "route");
        is_int(json_integer_value(json_object_get(l[0], "status")), 200, "status");
        is_int(json_integer_value(json_object_get(l[0], "bytes")), 123, "bytes");
        double d = json_number_value(json_object_get(l[0], "duration_ms"));
        ok(fabs(d - 0.12) < 1e-9, "duration_ms 0.12 (got %g)", d);
        is_str(jstr(l[1], "path"), "/x\"y\n\x01\xef\xbf\xbd",
               "path escaped, invalid UTF-8 replaced");
        ok(json_is_null(json_object_get(l[1], "request_id")) &&
               json_is_null(json_object_get(l[1], "route")) &&
               json_is_null(json_object_get(l[1], "remote")),
           "missing request id, route and remote are null");
        ok(json_number_value(json_object_get(l[1], "duration_ms")) == 1500.0, "1.5 s is 1500 ms");
        ok(json_number_value(json_object_get(l[2], "duration_ms")) == 0.0, "NaN duration is 0");
        is_str(jstr(l[2], "time"), "2025-11-25T22:34:56.789Z",
               "a given time is written, not the clock");
    }
    free_lines(l, n > 0 ? md_min(n, 8) : 0);

    /* Past 32 KiB the buffer flushes by itself, whole lines only. */
    ok(truncate(p, 0) == 0, "truncate the access log");
    int i;
    for (i = 0; i < 1000 && file_size(p) == 0; i++)
        md_log_access(&e1);
    ok(i > 50 && i < 1000, "automatic flush after %d lines", i);
    off_t sz = file_size(p);
    ok(sz >= 32 * 1024 && sz < 40 * 1024, "auto flush wrote just over 32 KiB (%lld)",
       (long long)sz);
    char *raw = slurp(p);
    ok(raw[strlen(raw) - 1] == '\n', "auto flush writes whole lines");
    free(raw);
    md_log_access_flush();
    json_t *dummy[1];
    is_int(json_lines(p, dummy, 0), i, "every line arrives once");
}

static const char *
find_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; (p = strstr(p, line)) != NULL; p++) {
        if ((p == text || p[-1] == '\n') && p[n] == '\n')
            return p;
    }
    return NULL;
}

#define has_line(text, line, ...)                                                                  \
    do {                                                                                           \
        int f_ = find_line((text), (line)) != NULL;                                                \
        ok(f_, __VA_ARGS__);                                                                       \
        if (!f_)                                                                                   \
            printf("#   missing line: %s\n", (line));                                              \
    } while (0)

/* Every non-comment line is `name{labels} value` or `name value`. */
static int
prometheus_ok(const char *text)
{
    char *s = md_xstrdup(text), *save = NULL;
    int good = 1;
    for (char *l = strtok_r(s, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        if (l[0] == '#')
            continue;
        char *q = l;
        while (*q == '_' || *q == ':' || (*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') ||
               (q > l && *q >= '0' && *q <= '9'))
            q++;
        if (q == l)
            good = 0;
        if (*q == '{') {
            char *e = q + 1;
            while (*e && *e != '}') {
                if (*e == '"') {
                    for (e++; *e && *e != '"'; e++)
                        if (*e == '\\')
                            e++;
                }
                if (*e)
                    e++;
            }
            if (*e != '}')
                good = 0;
            q = e + 1;
        }
        char *end;
        if (*q != ' ')
            good = 0;
        else if (strtod(q + 1, &end), *end != 0)
            good = 0;
        if (!good) {
            printf("# bad exposition line: %s\n", l);
            break;
        }
    }
    free(s);
    return good;
}

static void
test_label_escape(void)
{
    md_buf_t b;
    md_buf_init(&b);
    append_label(&b, "a\"b\\c\nd");
    md_buf_append(&b, "", 1);
    is_str(b.pos, "a\\\"b\\\\c\\nd", "label values escape quote, backslash, newline");
    md_buf_free(&b);
}

static int
dummy_handler(md_http_request_t *r)
{
    md_unused(r);
    return MD_OK;
}

static void
test_metrics(void)
{
    md_buf_t out;
    md_buf_init(&out);
    md_metrics_http_request(0, 200, 0.1); /* not attached: ignored */
    md_metrics_render(&out, NULL);
    md_buf_append(&out, "", 1);
    has_line(out.pos, "mailerd_worker_restarts_total 0", "render works before init");
    md_buf_reset(&out);

    is_int(md_metrics_init(), MD_OK, "init");
    md_metrics_shm_t *first = shm;
    is_int(md_metrics_init(), MD_OK, "init again");
    ok(shm == first, "a second init keeps the segment (counters survive reloads)");

    md_router_t *rt = md_router_create();
    int health = md_router_add(rt, MD_M_GET, "/health", dummy_handler);
    int msg = md_router_add(rt, MD_M_GET, "/v1/messages/{id}", dummy_handler);
    ok(health >= 0 && msg >= 0 && health != msg, "router gives route ids (%d, %d)", health, msg);

    md_metrics_attach(0);
    md_metrics_connections(2);
    for (int i = 0; i < 3; i++)
        md_metrics_http_request((unsigned)health, 200, 0.0003);
    md_metrics_http_request((unsigned)health, 200, 0.0005); /* le is inclusive */
    md_metrics_http_request((unsigned)msg, 404, 0.003);

    md_metrics_attach(5);
    md_metrics_connections(1);
    md_metrics_connections(1);
    md_metrics_connections(-1);
    md_metrics_http_request((unsigned)health, 200, 0.002);
    md_metrics_http_request((unsigned)health, 200, NAN);  /* counts, duration 0 */
    md_metrics_http_request((unsigned)health, 299, 20.0); /* unusual code: 2xx, +Inf */
    md_metrics_http_request((unsigned)health, 99, 0.01);  /* invalid code: other */
    md_metrics_http_request((unsigned)health, 700, -1);   /* invalid code: other */
    md_metrics_http_request(MD_METRICS_NO_ROUTE, 404, 0.0001);
    md_metrics_http_request(200, 405, 0.0001); /* out of range id: none */
    md_metrics_http_request((unsigned)msg, 503, 1.0);

    /* Another process writes its own slot of the same segment. */
    pid_t pid = fork();
    if (pid == 0) {
        md_metrics_attach(7);
        md_metrics_http_request((unsigned)msg, 404, 0.02);
        md_metrics_connections(4);
        _exit(0);
    }
    waitpid(pid, NULL, 0);

    md_metrics_render(&out, rt);
    md_buf_append(&out, "", 1);
    const char *t = out.pos;
    ok(prometheus_ok(t), "output parses as Prometheus text");
    has_line(t, "# TYPE mailerd_http_requests_total counter", "requests TYPE line");
    has_line(t, "# TYPE mailerd_http_request_duration_seconds histogram", "histogram TYPE line");
    has_line(t, "mailerd_http_requests_total{route=\"/health\",status=\"200\"} 6",
             "requests summed across slots");
    has_line(t, "mailerd_http_requests_total{route=\"/health\",status=\"2xx\"} 1", "2xx class");
    has_line(t, "mailerd_http_requests_total{route=\"/health\",status=\"other\"} 2", "other");
    has_line(t, "mailerd_http_requests_total{route=\"/v1/messages/{id}\",status=\"404\"} 2",
             "404 from two processes");
    has_line(t, "mailerd_http_requests_total{route=\"/v1/messages/{id}\",status=\"503\"} 1", "503");
    has_line(t, "mailerd_http_requests_total{route=\"none\",status=\"404\"} 1", "no route: none");
    has_line(t, "mailerd_http_requests_total{route=\"none\",status=\"405\"} 1",
             "out of range route id counts as none");
    ok(strstr(t, "status=\"201\"") == NULL, "zero series are left out");

    /* /health: 0.0003 x3, 0.0005, 0.002, NaN(0), 20, 0.01, -1(0) = 9 */
    const char *hb[][2] = {{"0.0005", "6"}, {"0.001", "6"}, {"0.0025", "7"},
                           {"0.005", "7"},  {"0.01", "8"},  {"0.025", "8"},
                           {"5", "8"},      {"10", "8"},    {"+Inf", "9"}};
    for (size_t i = 0; i < md_nelems(hb); i++) {
        char want[256];
        snprintf(want, sizeof(want),
                 "mailerd_http_request_duration_seconds_bucket{route=\"/health\",le=\"%s\"} %s",
                 hb[i][0], hb[i][1]);
        has_line(t, want, "cumulative bucket le=%s", hb[i][0]);
    }
    has_line(t, "mailerd_http_request_duration_seconds_count{route=\"/health\"} 9",
             "count == +Inf bucket");
    has_line(t, "mailerd_http_request_duration_seconds_sum{route=\"/health\"} 20.013400000",
             "sum of durations");
    has_line(
        t,
        "mailerd_http_request_duration_seconds_bucket{route=\"/v1/messages/{id}\",le=\"+Inf\"} 3",
        "histogram across processes");
    has_line(t, "mailerd_http_request_duration_seconds_count{route=\"none\"} 2", "none histogram");
    has_line(t, "mailerd_http_connections_open 7", "connections gauge summed (2+1+4)");
    has_line(t, "mailerd_worker_restarts_total 0", "restarts present at 0");
    has_line(t, "mailerd_build_info{version=\"" MD_VERSION "\"} 1", "build info");
    ok(strstr(t, "\nmailerd_start_time_seconds ") != NULL, "start time present");
    double st = 0;
    const char *sp = strstr(t, "\nmailerd_start_time_seconds ");
    if (sp)
        st = strtod(sp + 28, NULL);
    ok(fabs(st - (double)time(NULL)) < 60, "start time is now (%f)", st);

    /* Slot 7's worker exits: its gauge goes, its counters stay. */
    md_metrics_slot_released(7);
    md_metrics_worker_restart();
    md_buf_reset(&out);
    md_metrics_render(&out, rt);
    md_buf_append(&out, "", 1);
    t = out.pos;
    has_line(t, "mailerd_http_connections_open 3", "released slot's gauge zeroed");
    has_line(t, "mailerd_http_requests_total{route=\"/v1/messages/{id}\",status=\"404\"} 2",
             "released slot's counters kept");
    has_line(t, "mailerd_worker_restarts_total 1", "restart counted");

    /* Without a router the series are still distinct. */
    md_buf_reset(&out);
    md_metrics_render(&out, NULL);
    md_buf_append(&out, "", 1);
    char want[128];
    snprintf(want, sizeof(want), "mailerd_http_requests_total{route=\"#%d\",status=\"200\"} 6",
             health);
    has_line(out.pos, want, "routes labelled by id without a router");
    ok(prometheus_ok(out.pos), "still valid Prometheus text");

    md_buf_free(&out);
    md_router_destroy(rt);
}

int
main(void)
{
    snprintf(dir, sizeof(dir), "%s/md-log-t-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(dir)) {
        printf("Bail out! mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    test_levels();
    test_early_stderr();
    test_error_log();
    test_truncation();
    test_reopen();
    test_access();
    test_label_escape();
    test_metrics();
    md_log_close();

    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        printf("# could not remove %s\n", dir);
    return done_testing();
}
