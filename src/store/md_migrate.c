/*
 * `mailerd migrate`: applies migrations_dir/NNNN_name.sql in version order, once
 * each, and records them in schema_migrations.
 *
 * This is a foreground command, run before (or without) the daemon's loop, so
 * blocking libpq (PQconnectdbParams, PQexec) is the right tool here: there is no
 * loop to stall and the steps are strictly sequential. The worker's nonblocking
 * client (md_pg.c) is for request traffic.
 *
 * Safety rules, each enforced below:
 * - Two runs at once serialise on a session advisory lock; everything that reads
 *   or writes schema_migrations happens while holding it.
 * - A migration runs in its own transaction together with its schema_migrations
 *   row: it is applied and recorded entirely or not at all.
 * - An applied migration is never edited: its SHA-256 is stored and compared on
 *   every run, and a mismatch stops the run before anything is applied.
 */
#include "md_migrate.h"
#include "md_digest.h"

#include <dirent.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* pg_advisory_lock key: "mailerd\0" as a big-endian int8, so it is recognisable in
 * pg_locks (classid 1835100524, objid 1701995520) and unlikely to collide. */
#define MD_MIGRATE_LOCK_KEY "7881697703045030912"

#define MD_MIGRATE_MIN_DIGITS 4

typedef struct md_mig_s {
    int version;
    char *name; /* the part after "NNNN_", without ".sql" */
    char *file; /* the directory entry, e.g. "0001_identity.sql" */
    char *path; /* dir/file */
    char *sql;  /* the file's contents, NUL-terminated; NULL until read */
    size_t len;
    char checksum[2 * 32 + 1]; /* SHA-256 of the contents, lower-case hex */
} md_mig_t;

typedef struct md_mig_set_s {
    md_mig_t *v;
    size_t n, cap;
} md_mig_set_t;

/* A row of schema_migrations. */
typedef struct md_mig_applied_s {
    int version;
    char *name;
    char *checksum;
    char *applied_at;
} md_mig_applied_t;

typedef struct md_mig_applied_set_s {
    md_mig_applied_t *v;
    size_t n;
} md_mig_applied_set_t;

static void
mig_set_free(md_mig_set_t *set)
{
    for (size_t i = 0; i < set->n; i++) {
        free(set->v[i].name);
        free(set->v[i].file);
        free(set->v[i].path);
        free(set->v[i].sql);
    }
    free(set->v);
    set->v = NULL;
    set->n = set->cap = 0;
}

static void
applied_set_free(md_mig_applied_set_t *set)
{
    for (size_t i = 0; i < set->n; i++) {
        free(set->v[i].name);
        free(set->v[i].checksum);
        free(set->v[i].applied_at);
    }
    free(set->v);
    set->v = NULL;
    set->n = 0;
}

/*
 * Classifies a directory entry. Returns 1 for a migration (version and a
 * malloc'd *name the caller frees), 0 for a file that is not a migration (no
 * ".sql" suffix) and -1 for a ".sql" file whose name is malformed, with the
 * reason in why.
 */
static int
parse_name(const char *fname, int *version, char **name, const char **why)
{
    size_t len = strlen(fname);
    if (len < 4 || strcmp(fname + len - 4, ".sql") != 0)
        return 0;
    size_t digits = 0;
    long long v = 0;
    while (fname[digits] >= '0' && fname[digits] <= '9') {
        v = v * 10 + (fname[digits] - '0');
        if (v > INT_MAX) {
            *why = "the version does not fit in an int";
            return -1;
        }
        digits++;
    }
    if (digits < MD_MIGRATE_MIN_DIGITS) {
        *why = "it must start with a version of at least 4 digits (NNNN_name.sql)";
        return -1;
    }
    if (fname[digits] != '_') {
        *why = "the version must be followed by \"_\" (NNNN_name.sql)";
        return -1;
    }
    const char *n = fname + digits + 1, *end = fname + len - 4;
    if (n == end) {
        *why = "the name after the version is empty (NNNN_name.sql)";
        return -1;
    }
    for (const char *p = n; p < end; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_')) {
            *why = "the name may hold only a-z, 0-9 and _ (NNNN_name.sql)";
            return -1;
        }
    }
    if (v == 0) {
        *why = "versions start at 0001";
        return -1;
    }
    *version = (int)v;
    *name = md_xstrndup(n, (size_t)(end - n));
    return 1;
}

static int
mig_cmp(const void *a, const void *b)
{
    const md_mig_t *x = a, *y = b;
    return (x->version > y->version) - (x->version < y->version);
}

/*
 * Reads dir into set, sorted by version. Files that are not migrations are
 * skipped, with a warning on warn unless warn is NULL (dot files are skipped
 * silently: .gitkeep, editor droppings). A malformed ".sql" name, a ".sql" entry
 * that is not a regular file and a duplicate version are errors. On error returns
 * MD_ERROR with the reason in err and set empty; on success the caller frees set
 * with mig_set_free(). File contents are not read here.
 */
static int
scan_dir(const char *dir, md_mig_set_t *set, FILE *warn, char *err, size_t errlen)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        snprintf(err, errlen, "cannot open the migrations directory %s: %s", dir, strerror(errno));
        return MD_ERROR;
    }
    struct dirent *de;
    int rc = MD_OK;
    while ((de = readdir(d)) != NULL) {
        const char *f = de->d_name;
        if (f[0] == '.')
            continue;
        int version;
        char *name = NULL;
        const char *why = NULL;
        int kind = parse_name(f, &version, &name, &why);
        if (kind == 0) {
            if (warn)
                fprintf(warn, "mailerd: warning: ignoring %s/%s: not a migration (NNNN_name.sql)\n",
                        dir, f);
            continue;
        }
        if (kind < 0) {
            snprintf(err, errlen, "bad migration file name %s/%s: %s", dir, f, why);
            rc = MD_ERROR;
            break;
        }
        size_t plen = strlen(dir) + strlen(f) + 2;
        char *path = md_xmalloc(plen);
        snprintf(path, plen, "%s/%s", dir, f);
        struct stat st;
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) {
            snprintf(err, errlen, "migration %s is not a readable regular file", path);
            free(name);
            free(path);
            rc = MD_ERROR;
            break;
        }
        if (set->n == set->cap) {
            set->cap = set->cap ? set->cap * 2 : 16;
            set->v = md_xrealloc(set->v, set->cap * sizeof(md_mig_t));
        }
        md_mig_t *m = &set->v[set->n++];
        memset(m, 0, sizeof(*m));
        m->version = version;
        m->name = name;
        m->file = md_xstrdup(f);
        m->path = path;
    }
    closedir(d);
    if (rc == MD_OK && set->n > 1) {
        qsort(set->v, set->n, sizeof(md_mig_t), mig_cmp);
        for (size_t i = 1; i < set->n; i++) {
            if (set->v[i].version == set->v[i - 1].version) {
                snprintf(err, errlen, "duplicate migration version %04d: %s and %s in %s",
                         set->v[i].version, set->v[i - 1].file, set->v[i].file, dir);
                rc = MD_ERROR;
                break;
            }
        }
    }
    if (rc != MD_OK)
        mig_set_free(set);
    return rc;
}

/* Reads m's file into m->sql and computes m->checksum. MD_ERROR with err set. */
static int
mig_read(md_mig_t *m, char *err, size_t errlen)
{
    int fd = open(m->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open %s: %s", m->path, strerror(errno));
        return MD_ERROR;
    }
    size_t cap = 8192, len = 0;
    char *buf = md_xmalloc(cap);
    for (;;) {
        if (cap - len < 4096) {
            cap *= 2;
            buf = md_xrealloc(buf, cap);
        }
        ssize_t n = read(fd, buf + len, cap - len - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            snprintf(err, errlen, "cannot read %s: %s", m->path, strerror(errno));
            close(fd);
            free(buf);
            return MD_ERROR;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    buf[len] = '\0';
    /* PQexec takes a C string: a NUL would silently cut the migration short. */
    if (memchr(buf, '\0', len) != NULL) {
        snprintf(err, errlen, "%s contains a NUL byte", m->path);
        free(buf);
        return MD_ERROR;
    }
    unsigned char md[32];
    unsigned int mdlen = 32;
    if (md_sha256(buf, len, md) != MD_OK) {
        snprintf(err, errlen, "cannot compute the SHA-256 of %s", m->path);
        free(buf);
        return MD_ERROR;
    }
    md_hex_encode(m->checksum, md, mdlen);
    m->sql = buf;
    m->len = len;
    return MD_OK;
}

int
md_migrate_latest_version(const char *dir)
{
    md_mig_set_t set = {0};
    char err[512];
    if (dir == NULL || scan_dir(dir, &set, NULL, err, sizeof(err)) != MD_OK)
        return -1;
    int v = set.n ? set.v[set.n - 1].version : 0;
    mig_set_free(&set);
    return v;
}

/* --- PostgreSQL ------------------------------------------------------------- */

/* Server warnings (and worse) raised by a migration are worth showing; notices
 * are filtered out by client_min_messages. */
static void
notice_receiver(void *arg, const PGresult *res)
{
    md_unused(arg);
    fprintf(stderr, "mailerd: postgres: %s", PQresultErrorMessage(res));
}

/*
 * Connects with dsn (blocking; see the top of the file). The dsn comes last in
 * the parameter list so that everything it says wins, except client_encoding:
 * migration files are UTF-8, and error positions are counted in characters of
 * the client encoding. Returns the connection or NULL after printing why.
 */
static PGconn *
connect_db(const md_conf_t *conf)
{
    char timeout[32];
    const char *keys[4], *vals[4];
    int n = 0;
    if (conf->postgres.connect_timeout > 0) {
        /* libpq takes whole seconds and treats 1 as 2. */
        long t = (long)conf->postgres.connect_timeout;
        if ((double)t < conf->postgres.connect_timeout)
            t++;
        snprintf(timeout, sizeof(timeout), "%ld", t < 2 ? 2 : t);
        keys[n] = "connect_timeout";
        vals[n++] = timeout;
    }
    keys[n] = "application_name";
    vals[n++] = "mailerd migrate";
    keys[n] = "dbname";
    vals[n++] = conf->postgres.dsn;
    keys[n] = NULL;
    vals[n] = NULL;
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (c == NULL || PQstatus(c) != CONNECTION_OK) {
        /* PQerrorMessage never includes the password. */
        fprintf(stderr, "mailerd: cannot connect to PostgreSQL: %s",
                c ? PQerrorMessage(c) : "out of memory\n");
        PQfinish(c);
        return NULL;
    }
    PQsetNoticeReceiver(c, notice_receiver, NULL);
    PGresult *r = PQexec(c, "SET client_encoding = 'UTF8'; SET client_min_messages = warning");
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    if (!ok) {
        fprintf(stderr, "mailerd: cannot set up the PostgreSQL session: %s", PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    return c;
}

/* Runs a statement expected to succeed; prints what failed and returns MD_ERROR
 * otherwise. */
static int
exec_ok(PGconn *c, const char *sql, const char *what)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    int ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (!ok)
        fprintf(stderr, "mailerd: cannot %s: %s", what, PQresultErrorMessage(r));
    PQclear(r);
    return ok ? MD_OK : MD_ERROR;
}

/* Loads schema_migrations into out (sorted by version); table names it
 * (schema-qualified). The caller frees out with applied_set_free(). */
static int
load_applied(PGconn *c, const char *table, md_mig_applied_set_t *out)
{
    char sql[1024];
    snprintf(sql, sizeof(sql),
             "SELECT version, name, checksum,"
             " to_char(applied_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
             " FROM %s ORDER BY version",
             table);
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        fprintf(stderr, "mailerd: cannot read %s: %s", table, PQresultErrorMessage(r));
        PQclear(r);
        return MD_ERROR;
    }
    int n = PQntuples(r);
    out->v = md_xcalloc(n ? (size_t)n : 1, sizeof(md_mig_applied_t));
    out->n = (size_t)n;
    for (int i = 0; i < n; i++) {
        out->v[i].version = atoi(PQgetvalue(r, i, 0));
        out->v[i].name = md_xstrdup(PQgetvalue(r, i, 1));
        out->v[i].checksum = md_xstrdup(PQgetvalue(r, i, 2));
        out->v[i].applied_at = md_xstrdup(PQgetvalue(r, i, 3));
    }
    PQclear(r);
    return MD_OK;
}

/*
 * The schema-qualified, quoted name of schema_migrations, or NULL when it does
 * not exist (resolved through the connection's search_path). Used for every
 * later statement so that a migration that changes search_path cannot redirect
 * its own bookkeeping row. The caller frees the result.
 */
static char *
table_name(PGconn *c)
{
    PGresult *r = PQexec(c, "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c"
                            " JOIN pg_namespace n ON n.oid = c.relnamespace"
                            " WHERE c.oid = to_regclass('schema_migrations')");
    char *t = NULL;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
        t = md_xstrdup(PQgetvalue(r, 0, 0));
    else if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fprintf(stderr, "mailerd: cannot look up schema_migrations: %s", PQresultErrorMessage(r));
    PQclear(r);
    return t;
}

static const md_mig_applied_t *
find_applied(const md_mig_applied_set_t *a, int version)
{
    for (size_t i = 0; i < a->n; i++)
        if (a->v[i].version == version)
            return &a->v[i];
    return NULL;
}

static const md_mig_t *
find_disk(const md_mig_set_t *s, int version)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->v[i].version == version)
            return &s->v[i];
    return NULL;
}

/* Prints "  label: text" to stderr with the text's later lines indented too, so
 * a multi-line server context stays visibly part of the error. */
static void
print_indented(const char *label, const char *text)
{
    if (text == NULL)
        return;
    fprintf(stderr, "  %s: ", label);
    for (const char *p = text; *p; p++) {
        fputc(*p, stderr);
        if (*p == '\n' && p[1])
            fputs("    ", stderr);
    }
    fputc('\n', stderr);
}

/*
 * Prints why m failed: the file, the line (from the error position, which
 * PostgreSQL counts in characters from 1 within the string PQexec sent, i.e.
 * the file itself), the server's message, SQLSTATE, detail, hint and the line's
 * text.
 */
static void
report_failure(const md_mig_t *m, const PGresult *r, PGconn *c)
{
    const char *pos = r ? PQresultErrorField(r, PG_DIAG_STATEMENT_POSITION) : NULL;
    long line = 0;
    const char *line_start = NULL;
    if (pos && m->sql) {
        long want = atol(pos), chars = 0;
        line = 1;
        line_start = m->sql;
        for (const char *p = m->sql; *p; p++) {
            if (((unsigned char)*p & 0xc0) != 0x80 && ++chars == want)
                break;
            if (*p == '\n') {
                line++;
                line_start = p + 1;
            }
        }
    }
    const char *sev = r ? PQresultErrorField(r, PG_DIAG_SEVERITY) : NULL;
    const char *msg = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    const char *code = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    const char *detail = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL) : NULL;
    const char *hint = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_HINT) : NULL;
    const char *where = r ? PQresultErrorField(r, PG_DIAG_CONTEXT) : NULL;

    if (line > 0)
        fprintf(stderr, "mailerd: migration %s failed at line %ld: ", m->path, line);
    else
        fprintf(stderr, "mailerd: migration %s failed: ", m->path);
    if (msg)
        fprintf(stderr, "%s: %s (SQLSTATE %s)\n", sev ? sev : "ERROR", msg, code ? code : "?");
    else
        fprintf(stderr, "%s", PQerrorMessage(c));
    print_indented("detail", detail);
    print_indented("hint", hint);
    print_indented("context", where);
    if (line_start) {
        const char *e = strchr(line_start, '\n');
        int n = e ? (int)(e - line_start) : (int)strlen(line_start);
        fprintf(stderr, "  %ld | %.*s\n", line, n, line_start);
    }
}

/* Transaction id of the open transaction (assigning one), or NULL; caller frees. */
static char *
current_xid(PGconn *c)
{
    PGresult *r = PQexec(c, "SELECT txid_current()::text");
    char *x = NULL;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
        x = md_xstrdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    return x;
}

static double
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/*
 * Applies m in one transaction with its schema_migrations row. On failure
 * everything is rolled back (nothing of m stays, the recorded version is
 * unchanged) and the reason is printed. The file's SQL goes through PQexec so a
 * file may hold many statements; it must not end the transaction itself, which
 * is checked through the transaction id (a COMMIT inside the file would have
 * made its first part permanent without a schema_migrations row).
 */
static int
apply_one(PGconn *c, const char *table, const md_mig_t *m)
{
    double t0 = now_ms();
    if (exec_ok(c, "BEGIN", "begin a transaction") != MD_OK)
        return MD_ERROR;
    char *xid = current_xid(c);
    PGresult *r = PQexec(c, m->sql);
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH) {
        /* The connection is now in COPY state; the caller ends the run and the
         * disconnect rolls the transaction back. */
        fprintf(stderr,
                "mailerd: migration %s failed: COPY FROM STDIN / TO STDOUT cannot run "
                "in a migration\n",
                m->path);
        PQclear(r);
        free(xid);
        return MD_ERROR;
    }
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && st != PGRES_EMPTY_QUERY) {
        report_failure(m, r, c);
        PQclear(r);
        free(xid);
        PGresult *rb = PQexec(c, "ROLLBACK");
        PQclear(rb);
        return MD_ERROR;
    }
    PQclear(r);

    char *xid2 = PQtransactionStatus(c) == PQTRANS_INTRANS ? current_xid(c) : NULL;
    int same = xid && xid2 && strcmp(xid, xid2) == 0;
    free(xid);
    free(xid2);
    if (!same) {
        fprintf(stderr,
                "mailerd: migration %s ends the transaction itself (COMMIT, ROLLBACK or END in "
                "the file): its statements before that may have been committed without being "
                "recorded; remove those statements and check the schema by hand\n",
                m->path);
        PGresult *rb = PQexec(c, "ROLLBACK");
        PQclear(rb);
        return MD_ERROR;
    }

    char version[16];
    snprintf(version, sizeof(version), "%d", m->version);
    const char *params[3] = {version, m->name, m->checksum};
    char sql[1024];
    snprintf(sql, sizeof(sql), "INSERT INTO %s (version, name, checksum) VALUES ($1, $2, $3)",
             table);
    r = PQexecParams(c, sql, 3, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        fprintf(stderr, "mailerd: cannot record migration %s in %s: %s", m->file, table,
                PQresultErrorMessage(r));
        PQclear(r);
        r = PQexec(c, "ROLLBACK");
        PQclear(r);
        return MD_ERROR;
    }
    PQclear(r);
    /* COMMIT can still fail (deferred constraints, serialization). */
    r = PQexec(c, "COMMIT");
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        report_failure(m, r, c);
        PQclear(r);
        return MD_ERROR;
    }
    PQclear(r);
    printf("applied %s (%.0f ms)\n", m->file, now_ms() - t0);
    fflush(stdout);
    /* A plain SET inside a migration outlives its transaction; the next migration
     * must see the same session whether or not it runs in the same invocation. */
    return exec_ok(c, "RESET ALL; SET client_encoding = 'UTF8'; SET client_min_messages = warning",
                   "reset the session");
}

/* Reads every file of set (contents and checksum). */
static int
read_all(md_mig_set_t *set)
{
    char err[1024];
    for (size_t i = 0; i < set->n; i++) {
        if (mig_read(&set->v[i], err, sizeof(err)) != MD_OK) {
            fprintf(stderr, "mailerd: %s\n", err);
            return MD_ERROR;
        }
    }
    return MD_OK;
}

/*
 * Compares what is applied with what is on disk. Prints one error per applied
 * migration whose file changed (contents or name) and a warning per applied
 * migration whose file is gone. Returns MD_ERROR when any changed.
 */
static int
verify_applied(const md_mig_set_t *disk, const md_mig_applied_set_t *applied, const char *dir)
{
    int rc = MD_OK;
    for (size_t i = 0; i < applied->n; i++) {
        const md_mig_applied_t *a = &applied->v[i];
        const md_mig_t *m = find_disk(disk, a->version);
        if (m == NULL) {
            fprintf(stderr,
                    "mailerd: warning: migration %04d_%s is applied but has no file in %s "
                    "(is this mailerd older than the database?)\n",
                    a->version, a->name, dir);
            continue;
        }
        if (strcmp(m->checksum, a->checksum) != 0) {
            fprintf(stderr,
                    "mailerd: migration %04d changed after it was applied: %s no longer matches "
                    "its recorded checksum; never edit a shipped migration, add a new one\n",
                    a->version, m->path);
            rc = MD_ERROR;
        } else if (strcmp(m->name, a->name) != 0) {
            fprintf(stderr,
                    "mailerd: migration %04d changed after it was applied: it was applied as "
                    "\"%s\" and its file is now %s\n",
                    a->version, a->name, m->path);
            rc = MD_ERROR;
        }
    }
    return rc;
}

static int
max_applied(const md_mig_applied_set_t *a)
{
    return a->n ? a->v[a->n - 1].version : 0;
}

/* Locks, creates schema_migrations if needed, checks and applies. */
static int
migrate_up(PGconn *c, md_mig_set_t *disk, const char *dir)
{
    PGresult *r = PQexec(c, "SELECT pg_try_advisory_lock(" MD_MIGRATE_LOCK_KEY ")");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        fprintf(stderr, "mailerd: cannot take the migration lock: %s", PQresultErrorMessage(r));
        PQclear(r);
        return 1;
    }
    int got = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    if (!got) {
        printf("another mailerd migrate is running; waiting for it to finish\n");
        fflush(stdout);
        if (exec_ok(c, "SELECT pg_advisory_lock(" MD_MIGRATE_LOCK_KEY ")",
                    "take the migration lock") != MD_OK)
            return 1;
    }
    /* The lock is held from here on. It is a session lock: the caller's PQfinish
     * releases it, also after a failure that left the connection unusable. */

    if (exec_ok(c,
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version int PRIMARY KEY,"
                " name text NOT NULL,"
                " checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())",
                "create schema_migrations") != MD_OK)
        return 1;
    char *table = table_name(c);
    if (table == NULL) {
        fprintf(stderr, "mailerd: schema_migrations is not visible after creating it (check the "
                        "search_path of the connection)\n");
        return 1;
    }
    md_mig_applied_set_t applied = {0};
    int code = 1;
    if (load_applied(c, table, &applied) != MD_OK)
        goto done;
    if (verify_applied(disk, &applied, dir) != MD_OK) {
        fprintf(stderr, "mailerd: nothing applied\n");
        goto done;
    }

    int at = max_applied(&applied), done_n = 0, pending = 0;
    for (size_t i = 0; i < disk->n; i++)
        if (find_applied(&applied, disk->v[i].version) == NULL)
            pending++;
    if (pending == 0) {
        printf("schema is current at version %04d (%zu migration%s applied, nothing to do)\n", at,
               applied.n, applied.n == 1 ? "" : "s");
        code = 0;
        goto done;
    }
    for (size_t i = 0; i < disk->n; i++) {
        const md_mig_t *m = &disk->v[i];
        if (find_applied(&applied, m->version) != NULL)
            continue;
        if (m->version < at)
            fprintf(stderr,
                    "mailerd: warning: applying %s out of order: version %04d is already "
                    "applied\n",
                    m->file, at);
        if (apply_one(c, table, m) != MD_OK) {
            fprintf(stderr,
                    "mailerd: migration %s rolled back; schema stays at version %04d (%d "
                    "migration%s applied before it in this run)\n",
                    m->file, at, done_n, done_n == 1 ? "" : "s");
            goto done;
        }
        done_n++;
        at = md_max(at, m->version);
    }
    printf("applied %d migration%s; schema is now at version %04d\n", done_n,
           done_n == 1 ? "" : "s", at);
    code = 0;
done:
    applied_set_free(&applied);
    free(table);
    return code;
}

/* Lists every version known on either side. Takes no lock and changes nothing:
 * while a migrate runs it shows what has been committed so far. */
static int
migrate_status(PGconn *c, md_mig_set_t *disk, const char *dir)
{
    md_mig_applied_set_t applied = {0};
    char *table = table_name(c);
    if (table && load_applied(c, table, &applied) != MD_OK) {
        free(table);
        return 1;
    }
    int changed = 0, pending = 0;
    size_t i = 0, j = 0;
    printf("%-8s %-8s %-21s %s\n", "version", "state", "applied_at", "file");
    while (i < disk->n || j < applied.n) {
        const md_mig_t *m = i < disk->n ? &disk->v[i] : NULL;
        const md_mig_applied_t *a = j < applied.n ? &applied.v[j] : NULL;
        if (m && (a == NULL || m->version < a->version)) {
            printf("%04d     %-8s %-21s %s\n", m->version, "pending", "-", m->file);
            pending++;
            i++;
        } else if (a && (m == NULL || a->version < m->version)) {
            printf("%04d     %-8s %-21s (no file: %04d_%s.sql)\n", a->version, "applied",
                   a->applied_at, a->version, a->name);
            j++;
        } else {
            int same = strcmp(m->checksum, a->checksum) == 0 && strcmp(m->name, a->name) == 0;
            printf("%04d     %-8s %-21s %s%s\n", m->version, same ? "applied" : "CHANGED",
                   a->applied_at, m->file, same ? "" : " (differs from what was applied)");
            changed += !same;
            i++;
            j++;
        }
    }
    int at = max_applied(&applied), latest = md_migrate_latest_version(dir);
    if (pending == 0)
        printf("schema is current at version %04d\n", at);
    else
        printf("schema at version %04d, %s has %04d: %d pending\n", at, dir, latest, pending);
    if (changed)
        fprintf(stderr,
                "mailerd: %d applied migration%s changed after being applied; never edit a "
                "shipped migration\n",
                changed, changed == 1 ? "" : "s");
    applied_set_free(&applied);
    free(table);
    return changed ? 1 : 0;
}

int
md_migrate_main(const md_conf_t *conf, int argc, char **argv)
{
    int status = 0;
    if (argc == 2 && strcmp(argv[1], "status") == 0) {
        status = 1;
    } else if (argc != 1) {
        fprintf(stderr,
                "mailerd: unexpected argument \"%s\" to migrate\n"
                "usage: mailerd [-c FILE] [-p PREFIX] migrate [status]\n",
                argv[1]);
        return 2;
    }
    if (conf->postgres.dsn == NULL) {
        fprintf(stderr,
                "mailerd: migrate needs PostgreSQL: %s has no postgres { dsn \"...\"; } block\n",
                conf->file ? conf->file : "the configuration");
        return 1;
    }
    const char *dir = conf->migrations_dir;
    if (dir == NULL) {
        fprintf(stderr, "mailerd: no migrations_dir is configured\n");
        return 1;
    }

    md_mig_set_t disk = {0};
    char err[1024];
    if (scan_dir(dir, &disk, stderr, err, sizeof(err)) != MD_OK) {
        fprintf(stderr, "mailerd: %s\n", err);
        return 1;
    }
    if (read_all(&disk) != MD_OK) {
        mig_set_free(&disk);
        return 1;
    }
    PGconn *c = connect_db(conf);
    if (c == NULL) {
        mig_set_free(&disk);
        return 1;
    }
    int code = status ? migrate_status(c, &disk, dir) : migrate_up(c, &disk, dir);
    PQfinish(c);
    mig_set_free(&disk);
    fflush(stdout);
    return code;
}
