/*
 * mailerd's command line: start the daemon (master and workers, or one process
 * with master_process off), test the configuration (-t), print versions (-v), or
 * signal a running master through its pid file (-s).
 */
#include "md_core.h"
#include "md_conf.h"
#include "md_log.h"
#include "md_metrics.h"
#include "md_id.h"
#include "md_process.h"
#include "md_migrate.h"

#include <ares.h>
#include <ev.h>
#include <getopt.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <limits.h>
#include <llhttp.h>
#include <openssl/crypto.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define MD_DEFAULT_CONF "conf/mailerd.conf"

static void
usage(FILE *out)
{
    fprintf(out, "usage: mailerd [-c FILE] [-p PREFIX] [-t] [-v] [-s SIGNAL] [-h]\n"
                 "       mailerd [-c FILE] [-p PREFIX] migrate [status]\n"
                 "  -c FILE    configuration file (default: PREFIX/" MD_DEFAULT_CONF ")\n"
                 "  -p PREFIX  directory that relative paths resolve against (default: cwd)\n"
                 "  -t         test the configuration and exit\n"
                 "  -v         print the version and library versions and exit\n"
                 "  -s SIGNAL  send SIGNAL to the running master: reload, reopen, quit, stop\n"
                 "  -h         this help\n");
}

static void
print_versions(void)
{
    int pq = PQlibVersion();
    printf("mailerd version %s\n", MD_VERSION);
    printf("  libev %d.%d\n", ev_version_major(), ev_version_minor());
    printf("  llhttp %d.%d.%d\n", LLHTTP_VERSION_MAJOR, LLHTTP_VERSION_MINOR, LLHTTP_VERSION_PATCH);
    printf("  hiredis %d.%d.%d\n", HIREDIS_MAJOR, HIREDIS_MINOR, HIREDIS_PATCH);
    printf("  c-ares %s\n", ares_version(NULL));
    printf("  %s\n", OpenSSL_version(OPENSSL_VERSION)); /* "OpenSSL 3.0.x DATE" */
    /* libpq encodes 15.4 as 150004 (10 and later). */
    printf("  libpq %d.%d\n", pq / 10000, pq % 10000);
    printf("  jansson %s\n", JANSSON_VERSION);
#ifdef HAVE_LIBSYSTEMD
    printf("  libsystemd yes\n");
#else
    printf("  libsystemd no (sd_notify spoken directly)\n");
#endif
}

/* Returns path made absolute against base (the cwd when base is NULL); malloc'd. */
static char *
absolute(const char *path, const char *base)
{
    if (path[0] == '/')
        return md_xstrdup(path);
    char cwd[PATH_MAX];
    if (base == NULL) {
        if (getcwd(cwd, sizeof(cwd)) == NULL) {
            fprintf(stderr, "mailerd: getcwd() failed: %s\n", strerror(errno));
            exit(1);
        }
        base = cwd;
    }
    size_t n = strlen(base) + strlen(path) + 2;
    char *s = md_xmalloc(n);
    snprintf(s, n, "%s%s%s", base, base[strlen(base) - 1] == '/' ? "" : "/", path);
    return s;
}

static int
signal_master(const md_conf_t *conf, const char *name)
{
    static const struct {
        const char *name;
        int sig;
    } sigs[] = {{"reload", SIGHUP}, {"reopen", SIGUSR1}, {"quit", SIGQUIT}, {"stop", SIGTERM}};
    int sig = 0;
    for (size_t i = 0; i < md_nelems(sigs); i++)
        if (strcmp(name, sigs[i].name) == 0)
            sig = sigs[i].sig;
    if (conf->pid_file == NULL) {
        fprintf(stderr, "mailerd: no pid file is configured in %s, cannot signal the master\n",
                conf->file);
        return 1;
    }
    pid_t pid = md_pidfile_read(conf->pid_file);
    if (pid < 0) {
        if (errno == ENOENT)
            fprintf(stderr, "mailerd: pid file %s does not exist: mailerd is not running\n",
                    conf->pid_file);
        else
            fprintf(stderr, "mailerd: cannot read pid file %s: %s\n", conf->pid_file,
                    strerror(errno));
        return 1;
    }
    if (!md_pid_is_mailerd(pid) && (kill(pid, 0) == 0 || errno == EPERM)) {
        fprintf(stderr,
                "mailerd: pid %ld is not a mailerd process (stale pid file %s): mailerd is not "
                "running\n",
                (long)pid, conf->pid_file);
        return 1;
    }
    if (kill(pid, sig) < 0) {
        if (errno == ESRCH)
            fprintf(
                stderr,
                "mailerd: no process with pid %ld (stale pid file %s): mailerd is not running\n",
                (long)pid, conf->pid_file);
        else
            fprintf(stderr, "mailerd: kill(%ld, %s) failed: %s\n", (long)pid, name,
                    strerror(errno));
        return 1;
    }
    return 0;
}

/* Refuses a second instance on the same pid file; a file naming a dead process
 * or another program (a crash or SIGKILL, the number since reused) is stale and
 * is overwritten. */
static int
pidfile_claim(const char *path)
{
    pid_t pid = md_pidfile_read(path);
    if (pid > 0 && pid != getpid() && md_pid_is_mailerd(pid)) {
        fprintf(stderr, "mailerd: already running as pid %ld (pid file %s)\n", (long)pid, path);
        return MD_ERROR;
    }
    if (md_pidfile_write(path) != MD_OK) {
        fprintf(stderr, "mailerd: cannot write pid file %s: %s\n", path, strerror(errno));
        return MD_ERROR;
    }
    return MD_OK;
}

static void
pidfile_remove(const char *path)
{
    if (path && md_pidfile_read(path) == getpid())
        unlink(path);
}

static int
run_single(md_conf_t *conf)
{
    if (md_metrics_init() != MD_OK) {
        md_log(MD_LOG_ERROR, errno, "cannot create the metrics segment");
        return 1;
    }
    md_metrics_attach(0);
    md_logf(MD_LOG_NOTICE, 0, MD_LOG_FIELDS(MD_LS("version", MD_VERSION), MD_LI("pid", getpid())),
            "mailerd %s started in single-process mode", MD_VERSION);
    int code = md_worker_run(EV_DEFAULT, conf, 0, -1);
    md_listeners_close_unused(conf, NULL);
    return code;
}

int
main(int argc, char **argv)
{
    const char *conf_arg = NULL, *prefix_arg = NULL, *sig_arg = NULL;
    int test = 0, opt;

    opterr = 0;
    while ((opt = getopt(argc, argv, ":c:p:ts:vh")) != -1) {
        switch (opt) {
        case 'c':
            conf_arg = optarg;
            break;
        case 'p':
            prefix_arg = optarg;
            break;
        case 't':
            test = 1;
            break;
        case 's':
            sig_arg = optarg;
            break;
        case 'v':
            print_versions();
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        case ':':
            fprintf(stderr, "mailerd: option -%c needs an argument\n", optopt);
            usage(stderr);
            return 2;
        default:
            fprintf(stderr, "mailerd: unknown option -%c\n", optopt);
            usage(stderr);
            return 2;
        }
    }
    int migrate = optind < argc && strcmp(argv[optind], "migrate") == 0;
    if (optind < argc && !migrate) {
        fprintf(stderr, "mailerd: unexpected argument \"%s\"\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    if (sig_arg && strcmp(sig_arg, "reload") != 0 && strcmp(sig_arg, "reopen") != 0 &&
        strcmp(sig_arg, "quit") != 0 && strcmp(sig_arg, "stop") != 0) {
        fprintf(stderr, "mailerd: invalid signal \"%s\" (reload, reopen, quit or stop)\n", sig_arg);
        usage(stderr);
        return 2;
    }

    char *prefix;
    if (prefix_arg) {
        prefix = absolute(prefix_arg, NULL);
    } else {
        char cwd[PATH_MAX];
        if (getcwd(cwd, sizeof(cwd)) == NULL) {
            fprintf(stderr, "mailerd: getcwd() failed: %s\n", strerror(errno));
            return 1;
        }
        prefix = md_xstrdup(cwd);
    }
    char *file = conf_arg ? absolute(conf_arg, NULL) : absolute(MD_DEFAULT_CONF, prefix);

    char err[1024];
    err[0] = '\0';
    md_conf_t *conf = md_conf_load(file, prefix, err, sizeof(err));
    if (conf == NULL) {
        fprintf(stderr, "mailerd: %s\n", err[0] ? err : "cannot load the configuration");
        if (test)
            fprintf(stderr, "mailerd: configuration file %s test failed\n", file);
        free(file);
        free(prefix);
        return 1;
    }
    /* Each worker has its own metrics slot and a reload runs two generations side by
     * side, so at most half the slots can be one generation. */
    if (conf->master_process && conf->worker_processes > MD_METRICS_MAX_SLOTS / 2) {
        fprintf(stderr, "mailerd: %s: worker_processes %d is more than the maximum %d\n", file,
                conf->worker_processes, MD_METRICS_MAX_SLOTS / 2);
        if (test)
            fprintf(stderr, "mailerd: configuration file %s test failed\n", file);
        md_conf_free(conf);
        free(file);
        free(prefix);
        return 1;
    }
    if (test) {
        printf("mailerd: configuration file %s test is successful\n", file);
        md_conf_free(conf);
        free(file);
        free(prefix);
        return 0;
    }
    if (migrate) {
        int code = md_migrate_main(conf, argc - optind, argv + optind);
        md_conf_free(conf);
        free(file);
        free(prefix);
        return code;
    }
    if (sig_arg) {
        int code = signal_master(conf, sig_arg);
        md_conf_free(conf);
        free(file);
        free(prefix);
        return code;
    }
    free(file);
    free(prefix);

    if (md_log_open(conf->error_log, conf->log_level) != 0) {
        fprintf(stderr, "mailerd: cannot open error log %s: %s\n",
                conf->error_log ? conf->error_log : "(stderr)", strerror(errno));
        md_conf_free(conf);
        return 1;
    }
    if (md_log_access_open(conf->access_log) != 0) {
        fprintf(stderr, "mailerd: cannot open access log %s: %s\n", conf->access_log,
                strerror(errno));
        md_log_close();
        md_conf_free(conf);
        return 1;
    }
    md_log_set_role(conf->master_process ? "master" : "single");
    md_id_init();

    /* The master owns conf from md_master_run on; keep what main needs after. */
    char *pid_file = conf->pid_file ? md_xstrdup(conf->pid_file) : NULL;
    if (pid_file && pidfile_claim(pid_file) != MD_OK) {
        free(pid_file);
        md_log_close();
        md_conf_free(conf);
        return 1;
    }
    if (md_listeners_open(conf, NULL) != MD_OK) {
        fprintf(stderr, "mailerd: cannot open the listening sockets\n");
        pidfile_remove(pid_file);
        free(pid_file);
        md_log_close();
        md_conf_free(conf);
        return 1;
    }

    int code;
    if (conf->master_process) {
        code = md_master_run(conf);
    } else {
        code = run_single(conf);
        md_conf_free(conf);
    }
    pidfile_remove(pid_file);
    free(pid_file);
    md_log_close();
    return code;
}
