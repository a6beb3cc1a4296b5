/*
 * Configuration parser: value parsers, every directive's default, every error
 * kind with its exact FILE:LINE, includes, environment expansion and quoting.
 * Most fixtures are written to a temp dir; t/data/conf holds a tree that tests
 * includes relative to the source directory. test_module() shows how a later
 * module adds blocks: a struct, a table, one row in the enclosing table.
 */
/* Included rather than linked (h2o style) so the module test below can drive
 * md_conf_parse() with a table of its own; the linker then takes no md_conf.o
 * from the library. */
#include "md_conf.c"
#include "md_log.h"
#include "tap.h"

#include <arpa/inet.h>
#include <ftw.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmp[512]; /* short enough that paths built from it never truncate */
static char err[1024];

static const char *
srcdir(void)
{
    const char *s = getenv("MD_SRCDIR");
    return s && *s ? s : MD_SRCDIR;
}

/* Writes tmp/name (creating one level of subdirectory); returns its path in a static buffer. */
static const char *
put(const char *name, const char *text)
{
    static char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", tmp, name);
    char *slash = strrchr(path, '/');
    *slash = '\0';
    mkdir(path, 0755);
    *slash = '/';
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        printf("Bail out! cannot write %s\n", path);
        exit(1);
    }
    fputs(text, f);
    fclose(f);
    return path;
}

/* Loads text as tmp/main.conf with prefix tmp. */
static md_conf_t *
load(const char *text)
{
    return md_conf_load(put("main.conf", text), tmp, err, sizeof(err));
}

/* Expects text to fail with exactly "FILE:LINE: msg" where FILE is tmp/file. */
static void
fails(const char *text, const char *file, int line, const char *msg, const char *name)
{
    char want[2048];
    md_conf_t *c = load(text);
    ok(c == NULL, "%s: rejected", name);
    md_conf_free(c);
    if (line > 0)
        snprintf(want, sizeof(want), "%s/%s:%d: %s", tmp, file, line, msg);
    else
        snprintf(want, sizeof(want), "%s/%s: %s", tmp, file, msg);
    is_str(err, want, "%s: message", name);
}

static int
rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    md_unused(sb);
    md_unused(flag);
    md_unused(ftw);
    return remove(p);
}

static void
test_sizes(void)
{
    static const struct {
        const char *s;
        size_t v;
    } good[] = {{"0", 0},          {"512", 512},      {"16k", 16384},     {"16K", 16384},
                {"10m", 10485760}, {"10M", 10485760}, {"1g", 1073741824}, {"2G", 2147483648u}};
    static const char *const bad[] = {"",
                                      "k",
                                      "12q",
                                      "-1",
                                      "1.5k",
                                      "1kb",
                                      " 1",
                                      "1 ",
                                      "+1",
                                      "0x10",
                                      "99999999999999999999",
                                      "17179869184g",
                                      "18014398509481984k"};
    for (size_t i = 0; i < md_nelems(good); i++) {
        size_t v = 1234;
        int rc = md_conf_parse_size(good[i].s, &v);
        ok(rc == MD_OK && v == good[i].v, "size \"%s\" = %zu (got %zu)", good[i].s, good[i].v, v);
    }
    for (size_t i = 0; i < md_nelems(bad); i++) {
        size_t v = 1234;
        ok(md_conf_parse_size(bad[i], &v) == MD_ERROR && v == 1234, "size \"%s\" is invalid",
           bad[i]);
    }
}

static void
test_times(void)
{
    static const struct {
        const char *s;
        double v;
    } good[] = {{"30s", 30},      {"500ms", 0.5}, {"1m30s", 90},  {"2h", 7200},
                {"1d", 86400},    {"15", 15},     {"0", 0},       {"0s", 0},
                {"1s500ms", 1.5}, {"1m", 60},     {"1h1m", 3660}, {"1d2h3m4s5ms", 93784.005},
                {"10ms", 0.01}};
    static const char *const bad[] = {"",     "s",   "ms",  "1x",   "30s1m",
                                      "1m30", "1mm", "-1s", "1.5s", "1s1s",
                                      "1 s",  " 1s", "1S",  "5sec", "10000000000s"};
    for (size_t i = 0; i < md_nelems(good); i++) {
        double v = -1;
        int rc = md_conf_parse_time(good[i].s, &v);
        ok(rc == MD_OK && v > good[i].v - 1e-9 && v < good[i].v + 1e-9, "time \"%s\" = %g (got %g)",
           good[i].s, good[i].v, v);
    }
    for (size_t i = 0; i < md_nelems(bad); i++) {
        double v = -1;
        ok(md_conf_parse_time(bad[i], &v) == MD_ERROR && v == -1, "time \"%s\" is invalid", bad[i]);
    }
}

static void
test_listen(void)
{
    static const struct {
        const char *s;
        const char *text;
        int family;
        int port;
    } good[] = {{"127.0.0.1:8025", "127.0.0.1:8025", AF_INET, 8025},
                {"8025", "127.0.0.1:8025", AF_INET, 8025},
                {"localhost:80", "127.0.0.1:80", AF_INET, 80},
                {"0.0.0.0:65535", "0.0.0.0:65535", AF_INET, 65535},
                {"*:1", "0.0.0.0:1", AF_INET, 1},
                {"[::1]:8025", "[::1]:8025", AF_INET6, 8025},
                {"[::]:443", "[::]:443", AF_INET6, 443},
                {"[0:0:0:0:0:0:0:1]:9", "[::1]:9", AF_INET6, 9}};
    static const char *const bad[] = {"",
                                      "example.com:80",
                                      "localhost",
                                      "::1:80",
                                      "::1",
                                      "[::1]",
                                      "[::1]80",
                                      "[::1:80",
                                      "[127.0.0.1]:80",
                                      "1.2.3.4",
                                      "1.2.3.4:",
                                      "1.2.3.4:0",
                                      "1.2.3.4:65536",
                                      "1.2.3.4:-1",
                                      "1.2.3.4:8o",
                                      "256.1.1.1:80",
                                      "0",
                                      ":80"};
    for (size_t i = 0; i < md_nelems(good); i++) {
        md_listen_t ls;
        memset(&ls, 0, sizeof(ls));
        int rc = md_conf_parse_listen(good[i].s, &ls);
        ok(rc == MD_OK, "listen \"%s\" parses", good[i].s);
        is_str(ls.text, good[i].text, "listen \"%s\" text", good[i].s);
        int port = ls.addr.ss_family == AF_INET
                       ? ntohs(((struct sockaddr_in *)&ls.addr)->sin_port)
                       : ntohs(((struct sockaddr_in6 *)&ls.addr)->sin6_port);
        ok(ls.addr.ss_family == good[i].family && port == good[i].port && ls.fd == -1 &&
               ls.backlog > 0 &&
               ls.addrlen == (good[i].family == AF_INET ? sizeof(struct sockaddr_in)
                                                        : sizeof(struct sockaddr_in6)),
           "listen \"%s\" address, port, fd, backlog", good[i].s);
    }
    for (size_t i = 0; i < md_nelems(bad); i++) {
        md_listen_t ls;
        ok(md_conf_parse_listen(bad[i], &ls) == MD_ERROR, "listen \"%s\" is invalid", bad[i]);
    }
}

static void
test_defaults(void)
{
    char want[PATH_MAX + 32];
    md_conf_t *c = load("# nothing but a comment\n");
    ok(c != NULL, "an empty file is a valid configuration (%s)", err);
    if (c == NULL)
        return;
    snprintf(want, sizeof(want), "%s/main.conf", tmp);
    is_str(c->file, want, "file is absolute");
    is_str(c->prefix, tmp, "prefix");
    is_int(c->master_process, 1, "master_process on");
    is_int(c->worker_processes, sysconf(_SC_NPROCESSORS_ONLN), "worker_processes auto");
    snprintf(want, sizeof(want), "%s/mailerd.pid", tmp);
    is_str(c->pid_file, want, "pid under the prefix");
    is_str(c->error_log, NULL, "error_log stderr");
    is_int(c->log_level, MD_LOG_INFO, "log level info");
    ok(c->shutdown_timeout == 30, "shutdown_timeout 30s");
    is_int(c->nlisten, 1, "one default listener");
    is_str(c->listen[0].text, "127.0.0.1:8025", "listen 127.0.0.1:8025");
    is_int(c->listen[0].fd, -1, "listener not open");
    is_str(c->access_log, NULL, "access_log off");
    is_int(c->worker_connections, 4096, "worker_connections 4096");
    is_int(c->client_max_header_size, 16384, "client_max_header_size 16k");
    is_int(c->client_max_body_size, 10 * 1024 * 1024, "client_max_body_size 10m");
    ok(c->client_header_timeout == 10, "client_header_timeout 10s");
    ok(c->client_body_timeout == 30, "client_body_timeout 30s");
    ok(c->keepalive_timeout == 75, "keepalive_timeout 75s");
    ok(c->send_timeout == 30, "send_timeout 30s");
    is_int(c->keepalive_requests, 10000, "keepalive_requests 10000");
    is_int(c->debug_endpoints, 0, "debug_endpoints off");
    md_conf_free(c);

    /* An empty http block gets the same defaults as a missing one. */
    c = load("http { }\n");
    ok(c && c->nlisten == 1 && strcmp(c->listen[0].text, "127.0.0.1:8025") == 0 &&
           c->worker_connections == 4096 && c->keepalive_timeout == 75,
       "empty http block: defaults");
    md_conf_free(c);
}

static void
test_all_set(void)
{
    char want[PATH_MAX + 32];
    md_conf_t *c = load("master_process off;\n"
                        "worker_processes 7;\n"
                        "pid /run/m.pid;\n"
                        "error_log logs/error.log debug;\n"
                        "shutdown_timeout 1m30s;\n"
                        "http {\n"
                        "  listen 8080;\n"
                        "  listen [::1]:8081 backlog=64;\n"
                        "  listen localhost:8082;\n"
                        "  access_log logs/access.log;\n"
                        "  worker_connections 8;\n"
                        "  client_max_header_size 1k;\n"
                        "  client_max_body_size 1g;\n"
                        "  client_header_timeout 500ms;\n"
                        "  client_body_timeout 2m;\n"
                        "  keepalive_timeout 0;\n"
                        "  send_timeout 1h;\n"
                        "  keepalive_requests 1;\n"
                        "  debug_endpoints on;\n"
                        "}\n");
    ok(c != NULL, "every directive set (%s)", err);
    if (c == NULL)
        return;
    is_int(c->master_process, 0, "master_process off");
    is_int(c->worker_processes, 7, "worker_processes 7");
    is_str(c->pid_file, "/run/m.pid", "absolute pid path kept");
    snprintf(want, sizeof(want), "%s/logs/error.log", tmp);
    is_str(c->error_log, want, "error_log resolved against the prefix");
    is_int(c->log_level, MD_LOG_DEBUG, "error_log level debug");
    ok(c->shutdown_timeout == 90, "shutdown_timeout 1m30s");
    is_int(c->nlisten, 3, "three listeners");
    is_str(c->listen[0].text, "127.0.0.1:8080", "bare port is loopback");
    is_int(c->listen[0].backlog, 511, "default backlog 511");
    is_str(c->listen[1].text, "[::1]:8081", "IPv6 listener");
    is_int(c->listen[1].backlog, 64, "backlog=64");
    is_str(c->listen[2].text, "127.0.0.1:8082", "localhost is 127.0.0.1");
    snprintf(want, sizeof(want), "%s/logs/access.log", tmp);
    is_str(c->access_log, want, "access_log resolved");
    is_int(c->worker_connections, 8, "worker_connections 8");
    is_int(c->client_max_header_size, 1024, "client_max_header_size 1k");
    is_int(c->client_max_body_size, 1073741824, "client_max_body_size 1g");
    ok(c->client_header_timeout == 0.5, "client_header_timeout 500ms");
    ok(c->client_body_timeout == 120, "client_body_timeout 2m");
    ok(c->keepalive_timeout == 0, "keepalive_timeout 0");
    ok(c->send_timeout == 3600, "send_timeout 1h");
    is_int(c->keepalive_requests, 1, "keepalive_requests 1");
    is_int(c->debug_endpoints, 1, "debug_endpoints on");
    md_conf_free(c);

    c = load("pid off;\nerror_log stderr warn;\nhttp { access_log off; }\n");
    ok(c && c->pid_file == NULL && c->error_log == NULL && c->log_level == MD_LOG_WARN &&
           c->access_log == NULL,
       "pid off, error_log stderr warn, access_log off (%s)", err);
    md_conf_free(c);

    c = load("error_log /var/log/x.log;\n");
    ok(c && strcmp(c->error_log, "/var/log/x.log") == 0 && c->log_level == MD_LOG_INFO,
       "error_log without a level is info");
    md_conf_free(c);

    c = load("worker_processes 1024;\n");
    ok(c && c->worker_processes == 1024, "worker_processes 1024");
    md_conf_free(c);

    c = load("http { client_max_header_size 1m; }\n");
    ok(c && c->client_max_header_size == 1024 * 1024, "client_max_header_size 1m is the maximum");
    md_conf_free(c);

    /* Prefix given as a relative path, or with a trailing slash. */
    c = md_conf_load(put("main.conf", "pid x.pid;\n"), "/tmp/", err, sizeof(err));
    ok(c && strcmp(c->prefix, "/tmp") == 0 && strcmp(c->pid_file, "/tmp/x.pid") == 0,
       "trailing slash of the prefix dropped");
    md_conf_free(c);
}

static void
test_relative_file(void)
{
    char cwd[PATH_MAX], want[PATH_MAX + 32];
    if (getcwd(cwd, sizeof(cwd)) == NULL || chdir(tmp) != 0) {
        ok(0, "chdir to the temp dir");
        return;
    }
    put("rel.conf", "pid p.pid;\n");
    md_conf_t *c = md_conf_load("rel.conf", NULL, err, sizeof(err));
    ok(c != NULL, "relative file, no prefix (%s)", err);
    snprintf(want, sizeof(want), "%s/rel.conf", tmp);
    is_str(c ? c->file : NULL, want, "file made absolute against the cwd");
    is_str(c ? c->prefix : NULL, tmp, "prefix defaults to the cwd");
    snprintf(want, sizeof(want), "%s/p.pid", tmp);
    is_str(c ? c->pid_file : NULL, want, "pid resolved against the cwd prefix");
    md_conf_free(c);

    c = md_conf_load("./rel.conf", "sub", err, sizeof(err));
    snprintf(want, sizeof(want), "%s/sub/p.pid", tmp);
    is_str(c ? c->pid_file : NULL, want, "relative prefix resolved against the cwd");
    snprintf(want, sizeof(want), "%s/rel.conf", tmp);
    is_str(c ? c->file : NULL, want, "\"./\" dropped from the file");
    md_conf_free(c);

    c = md_conf_load("missing.conf", NULL, err, sizeof(err));
    snprintf(want, sizeof(want), "%s/missing.conf: cannot open configuration file: %s", tmp,
             strerror(ENOENT));
    ok(c == NULL, "a missing main file is an error");
    is_str(err, want, "missing main file message names the absolute path");
    if (chdir(cwd) != 0)
        ok(0, "chdir back");
}

static void
test_errors(void)
{
    fails("worker_processes 2;\nfoo bar;\n", "main.conf", 2, "unknown directive \"foo\"",
          "unknown directive");
    fails("\n\nlisten 80;\n", "main.conf", 3, "\"listen\" directive is not allowed here",
          "http directive in main");
    fails("http {\n  worker_processes 2;\n}\n", "main.conf", 2,
          "\"worker_processes\" directive is not allowed here", "main directive in http");
    fails("http {\n  http { }\n}\n", "main.conf", 2, "\"http\" directive is not allowed here",
          "nested http");
    fails("pid a b;\n", "main.conf", 1, "invalid number of arguments in \"pid\" directive",
          "too many arguments");
    fails("http {\n listen;\n}\n", "main.conf", 2,
          "invalid number of arguments in \"listen\" directive", "no arguments");
    fails("error_log a info extra;\n", "main.conf", 1,
          "invalid number of arguments in \"error_log\" directive", "take12 with 3");

    /* missing ";" */
    fails("master_process on;\nworker_processes 2\npid x.pid;\n", "main.conf", 2,
          "directive \"worker_processes\" is not terminated by \";\"",
          "missing ; before next directive");
    fails("worker_processes 2\nhttp {\n}\n", "main.conf", 1,
          "directive \"worker_processes\" is not terminated by \";\"", "missing ; before a block");
    fails("http {\n  keepalive_timeout 5s\n}\n", "main.conf", 2,
          "directive \"keepalive_timeout\" is not terminated by \";\"", "missing ; before }");
    fails("http {\n  listen 80\n  access_log off;\n}\n", "main.conf", 2,
          "directive \"listen\" is not terminated by \";\"", "missing ; after listen");
    fails("pid x.pid;\nshutdown_timeout 5s", "main.conf", 2,
          "unexpected end of file, expecting \";\"", "missing ; at end of file");
    fails("pid x.pid;\nshutdown_timeout\n5s", "main.conf", 2,
          "directive \"shutdown_timeout\" is not terminated by \";\"",
          "missing ; at end of file, arguments on later lines");
    fails("master_process on {\n}\n", "main.conf", 1,
          "directive \"master_process\" is not terminated by \";\"", "{ after a plain directive");
    fails("http;\n", "main.conf", 1, "directive \"http\" has no opening \"{\"", "block without {");
    fails("pid x;\n;\n", "main.conf", 2, "unexpected \";\"", "empty statement");
    fails("{ }\n", "main.conf", 1, "unexpected \"{\"", "block without a name");

    /* bad values */
    fails("http {\n\n  client_max_body_size 12q;\n}\n", "main.conf", 3,
          "invalid value \"12q\" in \"client_max_body_size\" directive, expected a size like 512, "
          "16k, 10m or 1g",
          "bad size");
    fails("shutdown_timeout 30x;\n", "main.conf", 1,
          "invalid value \"30x\" in \"shutdown_timeout\" directive, expected a time like 30s, "
          "500ms, 1m30s, 2h or 1d",
          "bad time");
    fails("master_process yes;\n", "main.conf", 1,
          "invalid value \"yes\" in \"master_process\" directive, expected \"on\" or \"off\"",
          "bad flag");
    fails("worker_processes 0;\n", "main.conf", 1,
          "invalid value \"0\" in \"worker_processes\" directive, expected a number from 1 to "
          "1024 or \"auto\"",
          "worker_processes 0");
    fails("worker_processes 1025;\n", "main.conf", 1,
          "invalid value \"1025\" in \"worker_processes\" directive, expected a number from 1 to "
          "1024 or \"auto\"",
          "worker_processes 1025");
    fails("error_log stderr loud;\n", "main.conf", 1,
          "invalid value \"loud\" in \"error_log\" directive, expected a level: emerg, alert, "
          "crit, error, warn, notice, info or debug",
          "bad log level");
    fails("http { worker_connections 7; }\n", "main.conf", 1,
          "value \"7\" in \"worker_connections\" directive is too small, minimum is 8",
          "worker_connections below 8");
    fails("http { worker_connections 99999999999; }\n", "main.conf", 1,
          "invalid value \"99999999999\" in \"worker_connections\" directive, expected a whole "
          "number",
          "worker_connections overflow");
    fails("http { keepalive_requests 0; }\n", "main.conf", 1,
          "value \"0\" in \"keepalive_requests\" directive is too small, minimum is 1",
          "keepalive_requests 0");
    fails("http { client_max_header_size 1023; }\n", "main.conf", 1,
          "value \"1023\" in \"client_max_header_size\" directive is out of range, expected 1k "
          "to 1m",
          "client_max_header_size below 1k");
    fails("http { client_max_header_size 2m; }\n", "main.conf", 1,
          "value \"2m\" in \"client_max_header_size\" directive is out of range, expected 1k to "
          "1m",
          "client_max_header_size above 1m");
    fails("http {\n listen example.com:80;\n}\n", "main.conf", 2,
          "invalid value \"example.com:80\" in \"listen\" directive, expected ADDR:PORT, "
          "[IPv6]:PORT or PORT with an IP address (or localhost) and a port from 1 to 65535",
          "listen host name");
    fails("http { listen 80 backlog=0; }\n", "main.conf", 1,
          "invalid value \"backlog=0\" in \"listen\" directive, expected backlog=N with N from 1 "
          "to 65535",
          "listen backlog=0");
    fails("http { listen 80 reuseport; }\n", "main.conf", 1,
          "invalid value \"reuseport\" in \"listen\" directive, expected backlog=N with N from 1 "
          "to 65535",
          "listen unknown parameter");
    fails("pid \"\";\n", "main.conf", 1, "invalid value \"\" in \"pid\" directive, expected a path",
          "empty path");

    /* braces and strings */
    fails("pid x;\n}\n", "main.conf", 2, "unexpected \"}\"", "extra }");
    fails("http {\n}\n}\n", "main.conf", 3, "unexpected \"}\"", "extra } after a block");
    fails("http {\n  listen 80;\n\n", "main.conf", 4,
          "unexpected end of file, expecting \"}\" to close \"http\"", "missing }");
    fails("pid \"abc;\n\n", "main.conf", 1, "unterminated string", "unterminated double quote");
    fails("\npid 'abc\\';\n", "main.conf", 2, "unterminated string",
          "unterminated single quote ending in an escaped quote");
    fails("pid \"a\"b;\n", "main.conf", 1, "unexpected \"b\" after a quoted string",
          "junk after a quoted string");

    /* duplicates */
    fails("pid a;\npid b;\n", "main.conf", 2, "\"pid\" directive is duplicate", "duplicate pid");
    fails("http { }\nhttp { }\n", "main.conf", 2, "\"http\" directive is duplicate",
          "duplicate http");
    fails("http {\n send_timeout 1s;\n send_timeout 2s;\n}\n", "main.conf", 3,
          "\"send_timeout\" directive is duplicate", "duplicate in http");
    fails("http {\n listen 80;\n listen 127.0.0.1:80;\n}\n", "main.conf", 3,
          "duplicate listen \"127.0.0.1:80\"", "duplicate listen address");
    put("dup.conf", "\nworker_processes 3;\n");
    fails("worker_processes 2;\ninclude dup.conf;\n", "dup.conf", 2,
          "\"worker_processes\" directive is duplicate", "duplicate across an include");

    /* too many listeners */
    char text[2048];
    size_t n = (size_t)snprintf(text, sizeof(text), "http {\n");
    for (int i = 0; i <= MD_CONF_MAX_LISTEN; i++)
        n += (size_t)snprintf(text + n, sizeof(text) - n, "listen %d;\n", 9000 + i);
    snprintf(text + n, sizeof(text) - n, "}\n");
    fails(text, "main.conf", MD_CONF_MAX_LISTEN + 2, "too many \"listen\" directives, at most 16",
          "17 listeners");

    /* environment */
    unsetenv("MD_T_UNSET");
    fails("pid x;\nhttp {\n  listen ${MD_T_UNSET};\n}\n", "main.conf", 3,
          "environment variable \"MD_T_UNSET\" is not set", "unset variable");
    fails("pid \"x${MD_T_UNSET}\";\n", "main.conf", 1,
          "environment variable \"MD_T_UNSET\" is not set", "unset variable in double quotes");
    fails("pid ${MD_T_UNSET;\n", "main.conf", 1, "invalid variable reference \"${MD_T_UNSET;\"",
          "unterminated reference");
    fails("pid ${};\n", "main.conf", 1, "invalid variable reference \"${}\"", "empty name");
    fails("pid ${A", "main.conf", 1, "unterminated \"${\" in variable reference",
          "reference at end of file");
}

static void
test_includes(void)
{
    char want[PATH_MAX + 64], path[PATH_MAX];

    /* from the source tree: relative includes, globs, includes inside a block */
    snprintf(path, sizeof(path), "%s/t/data/conf/main.conf", srcdir());
    md_conf_t *c = md_conf_load(path, tmp, err, sizeof(err));
    ok(c != NULL, "t/data/conf/main.conf loads (%s)", err);
    if (c) {
        is_int(c->worker_processes, 3, "nested include relative to the including file");
        ok(c->shutdown_timeout == 7, "glob include: conf.d/10-first.conf");
        snprintf(want, sizeof(want), "%s/run/fixture.pid", tmp);
        is_str(c->pid_file, want, "glob include: conf.d/20-second.conf, path against prefix");
        ok(c->nlisten == 1 && strcmp(c->listen[0].text, "127.0.0.1:18025") == 0,
           "include inside http");
        ok(c->keepalive_timeout == 5, "include inside http sets http fields");
    }
    md_conf_free(c);

    /* glob order and a pattern that matches nothing */
    put("g/b.conf", "send_timeout 2s;\n");
    put("g/a.conf", "keepalive_timeout 1s;\n");
    c = load("http {\n include g/*.conf;\n include none/*.conf;\n include g/[x]*.conf;\n}\n");
    ok(c && c->send_timeout == 2 && c->keepalive_timeout == 1, "glob in a block (%s)", err);
    md_conf_free(c);

    put("g/c.conf", "send_timeout 3s;\n");
    put("g/b.conf", "}\n");
    fails("http {\n include g/*.conf;\n}\n", "g/b.conf", 1, "unexpected \"}\"",
          "} in an included file (glob order a, b)");
    put("g/b.conf", "send_timeout 2s;\n");
    fails("http {\n include g/*.conf;\n}\n", "g/c.conf", 1,
          "\"send_timeout\" directive is duplicate", "duplicate across glob matches");

    /* error inside an included file names that file and line */
    put("inc/bad.conf", "# comment\n\nbogus 1;\n");
    fails("pid x;\ninclude inc/bad.conf;\n", "inc/bad.conf", 3, "unknown directive \"bogus\"",
          "error in an included file");
    put("inc/open.conf", "http {\n");
    fails("include inc/open.conf;\n}\n", "inc/open.conf", 2,
          "unexpected end of file, expecting \"}\" to close \"http\"",
          "a block may not span files");

    snprintf(want, sizeof(want), "include file \"%s/nope.conf\" not found", tmp);
    fails("pid x;\n\ninclude nope.conf;\n", "main.conf", 3, want, "missing include");
    snprintf(want, sizeof(want), "include file \"%s/inc/nope.conf\" not found", tmp);
    put("inc/a.conf", "include nope.conf;\n");
    fails("include inc/a.conf;\n", "inc/a.conf", 1, want,
          "missing nested include, relative to its includer");

    /* cycles and depth */
    put("cyc/a.conf", "include b.conf;\n");
    put("cyc/b.conf", "\ninclude a.conf;\n");
    snprintf(want, sizeof(want), "include cycle: \"%s/cyc/a.conf\" is already being read", tmp);
    fails("include cyc/a.conf;\n", "cyc/b.conf", 2, want, "include cycle");
    snprintf(want, sizeof(want), "include cycle: \"%s/main.conf\" is already being read", tmp);
    fails("include *.conf;\n", "main.conf", 1, want, "a glob matching the including file");

    for (int i = 1; i <= 17; i++) {
        char name[32], body[64];
        snprintf(name, sizeof(name), "deep/%d.conf", i);
        snprintf(body, sizeof(body), i < 17 ? "include %d.conf;\n" : "pid deep;\n", i + 1);
        put(name, body);
    }
    c = load("include deep/2.conf;\n");
    ok(c != NULL, "16 levels of include are allowed (%s)", err);
    md_conf_free(c);
    snprintf(want, sizeof(want), "include depth exceeds 16 at \"%s/deep/17.conf\"", tmp);
    fails("include deep/1.conf;\n", "deep/16.conf", 1, want, "17 levels of include");

    /* include of a directory */
    mkdir(strcat(strcpy(path, tmp), "/adir"), 0755);
    snprintf(want, sizeof(want), "cannot open include file \"%s/adir\": %s", tmp, strerror(EISDIR));
    fails("include adir;\n", "main.conf", 1, want, "include of a directory");
}

static void
test_env_and_quotes(void)
{
    md_conf_t *c;
    setenv("MD_T_PORT", "9123", 1);
    setenv("MD_T_EMPTY", "", 1);
    setenv("MD_T_DIR", "/srv/x", 1);
    unsetenv("MD_T_UNSET");

    c = load("http {\n listen 127.0.0.1:${MD_T_PORT};\n listen ${MD_T_UNSET:-127.0.0.2:81};\n"
             " listen \"${MD_T_EMPTY:-127.0.0.3}:${MD_T_PORT}\";\n"
             " listen ${MD_T_UNSET:-127.0.0.4}:${MD_T_EMPTY:-82};\n}\n");
    ok(c && c->nlisten == 4, "env expansion in listen (%s)", err);
    if (c && c->nlisten == 4) {
        is_str(c->listen[0].text, "127.0.0.1:9123", "${VAR}");
        is_str(c->listen[1].text, "127.0.0.2:81", "${VAR:-default} when unset");
        is_str(c->listen[2].text, "127.0.0.3:9123", "empty VAR takes the default, in quotes");
        is_str(c->listen[3].text, "127.0.0.4:82", "two references in one word");
    }
    md_conf_free(c);

    c = load("pid ${MD_T_DIR}/m.pid;\n");
    is_str(c ? c->pid_file : NULL, "/srv/x/m.pid", "expansion inside an unquoted word");
    md_conf_free(c);

    c = load("pid '/a/${MD_T_UNSET}';\n");
    is_str(c ? c->pid_file : NULL, "/a/${MD_T_UNSET}", "no expansion in single quotes");
    md_conf_free(c);

    c = load("pid /a/\\${MD_T_UNSET};\n");
    is_str(c ? c->pid_file : NULL, "/a/${MD_T_UNSET}", "\\$ is a literal dollar (unquoted)");
    md_conf_free(c);

    c = load("pid \"/a/\\${MD_T_UNSET}\";\n");
    is_str(c ? c->pid_file : NULL, "/a/${MD_T_UNSET}", "\\$ is a literal dollar (double quoted)");
    md_conf_free(c);

    c = load("pid /a/$HOME$;\n");
    is_str(c ? c->pid_file : NULL, "/a/$HOME$", "a $ without { is literal");
    md_conf_free(c);

    c = load("pid ${MD_T_UNSET:-/d e/f};\n");
    is_str(c ? c->pid_file : NULL, "/d e/f", "a default may contain spaces");
    md_conf_free(c);

    c = load("pid \"/a b/c;{}#d\";\n");
    is_str(c ? c->pid_file : NULL, "/a b/c;{}#d", "double quotes keep spaces and ; { } #");
    md_conf_free(c);

    c = load("pid '/q\"\\'\\\\\\n\\t\\$\\x';\n");
    is_str(c ? c->pid_file : NULL, "/q\"'\\\n\t$\\x", "escapes in single quotes");
    md_conf_free(c);

    c = load("pid \"/q\\\"\\'\\\\\\n\\t\";\n");
    is_str(c ? c->pid_file : NULL, "/q\"'\\\n\t", "escapes in double quotes");
    md_conf_free(c);

    c = load("pid \"/multi\nline\";\nbogus;\n");
    char want[PATH_MAX + 64];
    snprintf(want, sizeof(want), "%s/main.conf:3: unknown directive \"bogus\"", tmp);
    is_str(err, want, "newlines inside a string count for line numbers");
    md_conf_free(c);

    c = load("pid a#b; # comment with \"quote and ; and }\n"
             "#pid c;\n"
             "shutdown_timeout\t5s ;   # spacing\n"
             "http{listen 9000;}\n");
    ok(c != NULL, "comments and spacing (%s)", err);
    if (c) {
        snprintf(want, sizeof(want), "%s/a#b", tmp);
        is_str(c->pid_file, want, "# inside a word is not a comment");
        ok(c->shutdown_timeout == 5, "tab and space before ;");
        is_str(c->listen[0].text, "127.0.0.1:9000", "no space needed around braces");
    }
    md_conf_free(c);

    c = load("\"pid\" 'off';\n");
    ok(c && c->pid_file == NULL, "quoted directive name and argument");
    md_conf_free(c);
}

static void
test_shipped(void)
{
    char path[PATH_MAX], want[PATH_MAX + 64];
    snprintf(path, sizeof(path), "%s/conf/mailerd.conf", srcdir());
    unsetenv("MAILERD_LISTEN");
    md_conf_t *c = md_conf_load(path, srcdir(), err, sizeof(err));
    ok(c != NULL, "conf/mailerd.conf parses (%s)", err);
    if (c) {
        snprintf(want, sizeof(want), "%s/var/run/mailerd.pid", srcdir());
        is_str(c->pid_file, want, "shipped pid under the prefix");
        snprintf(want, sizeof(want), "%s/var/log/error.log", srcdir());
        is_str(c->error_log, want, "shipped error log");
        snprintf(want, sizeof(want), "%s/var/log/access.log", srcdir());
        is_str(c->access_log, want, "shipped access log");
        ok(c->nlisten == 1 && strcmp(c->listen[0].text, "127.0.0.1:8025") == 0,
           "shipped listen default");
        ok(c->master_process == 1 && c->client_max_header_size == 16384 &&
               c->client_max_body_size == 10485760 && c->keepalive_timeout == 75 &&
               c->keepalive_requests == 10000 && c->debug_endpoints == 0 &&
               c->worker_connections == 4096 && c->shutdown_timeout == 30,
           "shipped values are the defaults");
    }
    md_conf_free(c);

    setenv("MAILERD_LISTEN", "127.0.0.1:18999", 1);
    c = md_conf_load(path, srcdir(), err, sizeof(err));
    ok(c && strcmp(c->listen[0].text, "127.0.0.1:18999") == 0, "MAILERD_LISTEN overrides listen");
    md_conf_free(c);
    unsetenv("MAILERD_LISTEN");
}

/* ---- a later module's blocks, as they would be written ---------------------- */

typedef struct t_pg_s {
    char *host;
    int port;
    double timeout;
} t_pg_t;

typedef struct t_esp_s {
    char *name; /* from "esp NAME" */
    int driver;
    char *region;
    char *spool; /* path */
    int enabled;
    size_t max_size;
} t_esp_t;

typedef struct t_root_s {
    t_pg_t pg;
    t_esp_t esp[3];
    int nesp;
} t_root_t;

#define T_CTX_ROOT 0x0100u
#define T_CTX_PG   0x0200u
#define T_CTX_ESP  0x0400u

static const md_conf_enum_t t_drivers[] = {{"ses", 1}, {"sendgrid", 2}, {"sink", 3}, {NULL, 0}};

static const md_conf_cmd_t t_pg_cmds[] = {
    {"host", T_CTX_PG, MD_CONF_TAKE1, md_conf_set_str, offsetof(t_pg_t, host), NULL, "127.0.0.1",
     md_conf_free_str},
    {"port", T_CTX_PG, MD_CONF_TAKE1, md_conf_set_number, offsetof(t_pg_t, port), NULL, "5432",
     NULL},
    {"connect_timeout", T_CTX_PG, MD_CONF_TAKE1, md_conf_set_time, offsetof(t_pg_t, timeout), NULL,
     "5s", NULL},
    {NULL, 0, 0, NULL, 0, NULL, NULL, NULL},
};
static const md_conf_block_t t_pg_block = {"postgres", T_CTX_PG, t_pg_cmds};

static const md_conf_cmd_t t_esp_cmds[] = {
    {"driver", T_CTX_ESP, MD_CONF_TAKE1, md_conf_set_enum, offsetof(t_esp_t, driver), t_drivers,
     NULL, NULL},
    {"region", T_CTX_ESP, MD_CONF_TAKE1, md_conf_set_str, offsetof(t_esp_t, region), NULL,
     "us-east-1", md_conf_free_str},
    {"spool", T_CTX_ESP, MD_CONF_TAKE1, md_conf_set_path, offsetof(t_esp_t, spool), NULL, NULL,
     md_conf_free_str},
    {"enabled", T_CTX_ESP, MD_CONF_TAKE1, md_conf_set_flag, offsetof(t_esp_t, enabled), NULL, "on",
     NULL},
    {"max_size", T_CTX_ESP, MD_CONF_TAKE1, md_conf_set_size, offsetof(t_esp_t, max_size), NULL,
     "10m", NULL},
    {NULL, 0, 0, NULL, 0, NULL, NULL, NULL},
};
static const md_conf_block_t t_esp_block = {"esp", T_CTX_ESP, t_esp_cmds};

/* esp NAME { }: one instance per block, kept in the root's array. */
static int
t_set_esp(md_conf_parser_t *cf, const md_conf_cmd_t *cmd, void *base)
{
    t_root_t *root = base;
    md_unused(cmd);
    if (root->nesp == (int)md_nelems(root->esp))
        return md_conf_error(cf, "too many \"esp\" blocks");
    for (int i = 0; i < root->nesp; i++) {
        if (strcmp(root->esp[i].name, md_conf_arg(cf, 1)) == 0)
            return md_conf_error(cf, "esp \"%s\" is duplicate", md_conf_arg(cf, 1));
    }
    t_esp_t *e = &root->esp[root->nesp++];
    e->name = md_xstrdup(md_conf_arg(cf, 1));
    if (md_conf_parse_block(cf, &t_esp_block, e) != MD_OK)
        return MD_ERROR;
    if (e->driver == 0)
        return md_conf_error(cf, "esp \"%s\" has no \"driver\"", e->name);
    return MD_OK;
}

static void
t_free_esp(const md_conf_cmd_t *cmd, void *base)
{
    t_root_t *root = base;
    md_unused(cmd);
    for (int i = 0; i < root->nesp; i++) {
        md_conf_cleanup(&t_esp_block, &root->esp[i]);
        free(root->esp[i].name);
    }
    root->nesp = 0;
}

static const md_conf_cmd_t t_root_cmds[] = {
    {"postgres", T_CTX_ROOT, MD_CONF_NOARGS | MD_CONF_BLOCK, md_conf_set_block,
     offsetof(t_root_t, pg), &t_pg_block, NULL, md_conf_free_block},
    {"esp", T_CTX_ROOT, MD_CONF_TAKE1 | MD_CONF_BLOCK | MD_CONF_MULTI, t_set_esp, 0, &t_esp_block,
     NULL, t_free_esp},
    {NULL, 0, 0, NULL, 0, NULL, NULL, NULL},
};
static const md_conf_block_t t_root_block = {"root", T_CTX_ROOT, t_root_cmds};

/* Parses text against t_root_block the way md_conf_load parses the main block. */
static int
t_parse(const char *text, t_root_t *root)
{
    md_conf_parser_t cf;
    md_conf_t conf;
    memset(&cf, 0, sizeof(cf));
    memset(&conf, 0, sizeof(conf));
    memset(root, 0, sizeof(*root));
    conf.prefix = "/prefix";
    cf.conf = &conf;
    cf.err = err;
    cf.errlen = sizeof(err);
    err[0] = '\0';
    const char *path = put("mod.conf", text);
    cf.main_path = (char *)path;
    if (md_conf_push_file(&cf, path) != 0)
        return MD_ERROR;
    int rc = md_conf_parse(&cf, &t_root_block, root, PARSE_MAIN, NULL);
    while (cf.nfiles)
        md_conf_pop_file(&cf);
    free(cf.tb);
    return rc;
}

static void
t_root_free(t_root_t *root)
{
    md_conf_cleanup(&t_root_block, root);
}

static void
test_module(void)
{
    t_root_t r;
    char want[1024];

    int rc = t_parse("# no blocks at all\n", &r);
    ok(rc == MD_OK && r.nesp == 0, "module: empty root (%s)", err);
    ok(r.pg.host && strcmp(r.pg.host, "127.0.0.1") == 0 && r.pg.port == 5432 && r.pg.timeout == 5,
       "module: an absent embedded block gets its defaults");
    t_root_free(&r);
    ok(r.pg.host == NULL, "module: cleanup frees and clears strings");

    put("esp-extra.conf", "region ap-south-1;\n");
    rc = t_parse("postgres {\n  host \"db.internal\";\n  port 6432;\n}\n"
                 "esp main {\n  driver ses;\n  region eu-west-1;\n  spool spool/main;\n}\n"
                 "esp backup {\n  driver sink;\n  enabled off;\n  max_size 1k;\n"
                 "  include esp-extra.conf;\n}\n",
                 &r);
    ok(rc == MD_OK, "module: postgres and two esp blocks (%s)", err);
    ok(r.pg.host && strcmp(r.pg.host, "db.internal") == 0 && r.pg.port == 6432 && r.pg.timeout == 5,
       "module: embedded block values and a default");
    is_int(r.nesp, 2, "module: two esp instances");
    if (r.nesp == 2) {
        is_str(r.esp[0].name, "main", "esp 0 name");
        is_int(r.esp[0].driver, 1, "esp 0 driver ses (enum)");
        is_str(r.esp[0].region, "eu-west-1", "esp 0 region (str)");
        is_str(r.esp[0].spool, "/prefix/spool/main", "esp 0 spool (path against the prefix)");
        ok(r.esp[0].enabled == 1 && r.esp[0].max_size == 10485760, "esp 0 defaults");
        is_str(r.esp[1].name, "backup", "esp 1 name");
        is_int(r.esp[1].driver, 3, "esp 1 driver sink");
        is_str(r.esp[1].region, "ap-south-1", "esp 1 region from an include inside the block");
        is_str(r.esp[1].spool, NULL, "esp 1 spool has no default");
        ok(r.esp[1].enabled == 0 && r.esp[1].max_size == 1024, "esp 1 flag and size");
    }
    t_root_free(&r);
    ok(r.nesp == 0 && r.pg.host == NULL, "module: custom cleanup ran");

    rc = t_parse("esp a {\n  driver mailchimp;\n}\n", &r);
    snprintf(want, sizeof(want),
             "%s/mod.conf:2: invalid value \"mailchimp\" in \"driver\" directive, expected one of "
             "\"ses\", \"sendgrid\", \"sink\"",
             tmp);
    ok(rc == MD_ERROR, "module: bad enum rejected");
    is_str(err, want, "module: enum message lists the values");
    t_root_free(&r);

    rc = t_parse("esp a {\n  driver ses;\n  driver sink;\n}\n", &r);
    snprintf(want, sizeof(want), "%s/mod.conf:3: \"driver\" directive is duplicate", tmp);
    is_str(err, want, "module: duplicate inside one instance");
    t_root_free(&r);

    rc = t_parse("esp a { driver ses; }\nesp b {\n  region x;\n}\n", &r);
    snprintf(want, sizeof(want), "%s/mod.conf:2: esp \"b\" has no \"driver\"", tmp);
    ok(rc == MD_ERROR, "module: a custom setter validates after its block");
    is_str(err, want, "module: the message points at the block's directive");
    t_root_free(&r);

    /* "spool" exists only in the mock esp table, nowhere in the real tree ("driver"
     * did too, until the real esp block arrived). */
    rc = t_parse("postgres {\n  spool x;\n}\n", &r);
    snprintf(want, sizeof(want), "%s/mod.conf:2: unknown directive \"spool\"", tmp);
    is_str(err, want, "module: unknown outside the main tree (not reachable from main)");
    t_root_free(&r);

    rc = t_parse("postgres { }\npostgres { }\n", &r);
    snprintf(want, sizeof(want), "%s/mod.conf:2: \"postgres\" directive is duplicate", tmp);
    is_str(err, want, "module: duplicate embedded block");
    t_root_free(&r);

    rc = t_parse("esp;\n", &r);
    snprintf(want, sizeof(want), "%s/mod.conf:1: invalid number of arguments in \"esp\" directive",
             tmp);
    is_str(err, want, "module: esp without a name");
    t_root_free(&r);
}

static void
test_errbuf(void)
{
    /* a short buffer truncates, a NULL one is allowed */
    char small[8];
    md_conf_t *c = md_conf_load(put("main.conf", "bogus;\n"), tmp, small, sizeof(small));
    ok(c == NULL && strlen(small) == sizeof(small) - 1, "message truncated to the buffer");
    c = md_conf_load(put("main.conf", "bogus;\n"), tmp, NULL, 0);
    ok(c == NULL, "NULL error buffer");
    md_conf_free(NULL);
    ok(1, "md_conf_free(NULL) is a no-op");
}

int
main(void)
{
    const char *t = getenv("TMPDIR");
    char tpl[PATH_MAX];
    snprintf(tpl, sizeof(tpl), "%s/md-conf-t-XXXXXX", t && *t ? t : "/tmp");
    char real[PATH_MAX];
    if (mkdtemp(tpl) == NULL || realpath(tpl, real) == NULL || strlen(real) >= sizeof(tmp)) {
        printf("Bail out! mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    memcpy(tmp, real, strlen(real) + 1);

    test_sizes();
    test_times();
    test_listen();
    test_defaults();
    test_all_set();
    test_relative_file();
    test_errors();
    test_includes();
    test_env_and_quotes();
    test_shipped();
    test_module();
    test_errbuf();

    if (!getenv("MD_KEEP_TMP"))
        nftw(tmp, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return done_testing();
}
