/*
 * The sink driver: writes each message as an RFC 5322 file DIR/<message id>.eml
 * and reports it sent and delivered at once (the embedded default for a local
 * run, and the driver the tests use). It can be told to fail a share of the
 * attempts, transiently or permanently (fail_transient, fail_permanent), decided
 * per attempt with the account's seeded PRNG.
 *
 * A file appears whole or not at all: it is written as an unnamed file of the
 * directory and linked in when whole (or, where O_TMPFILE is not available,
 * under a temporary name and renamed), so a reader (a test, a developer's
 * tail) never sees half a message. That makes the file a record of its own: when
 * the dispatcher says an earlier attempt was interrupted (its worker died
 * between this write and the record of it, md_esp_msg_t.interrupted), a file
 * already there means the message went out, and it is reported sent without
 * a second write, the way a provider with a lookup by our id would answer.
 *
 * With `journal PATH`, every delivery also appends "<message id> <attempt>\n" to
 * PATH once the file is in place: one write() on an O_APPEND descriptor per line, so the
 * lines of every worker (and of every mailerd sharing the file) never mix, and
 * a message delivered twice shows up twice (the tests and bench/drain count
 * duplicates from it, which the file names cannot show).
 */
#include "md_esp.h"
#include "md_buf.h"
#include "md_log.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Per account and worker. */
typedef struct md_sink_s {
    int journal; /* O_APPEND descriptor, or -1 */
    time_t last_error_log;
} md_sink_t;

/* mkdir -p; errno is set on failure. */
static int
md_sink_mkdirs(const char *path)
{
    char *p = md_xstrdup(path);
    int rc = 0;
    for (char *s = p + 1; rc == 0; s++) {
        if (*s != '/' && *s != '\0')
            continue;
        char c = *s;
        *s = '\0';
        if (mkdir(p, 0755) != 0 && errno != EEXIST)
            rc = -1;
        *s = c;
        if (c == '\0')
            break;
    }
    int e = errno;
    free(p);
    errno = e;
    return rc;
}

/* At worker start: a missing directory is made (a few syscalls, once). A failure
 * is only logged: each send then fails retryably until the directory is fixed,
 * which is what an operator can see and repair, rather than a worker that will
 * not start. */
static int
md_sink_init(md_esp_t *esp, char *err, size_t errlen)
{
    md_sink_t *s = md_xcalloc(1, sizeof(*s));
    s->journal = -1;
    esp->data = s;
    if (esp->conf->journal) {
        /* A journal that cannot be opened is a test or benchmark set up wrong:
         * refuse to start rather than count deliveries that are not written. */
        s->journal = open(esp->conf->journal, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (s->journal < 0) {
            snprintf(err, errlen, "esp \"%s\": cannot open the journal %s: %s", esp->conf->name,
                     esp->conf->journal, strerror(errno));
            free(s);
            esp->data = NULL;
            return MD_ERROR;
        }
    }
    if (esp->conf->dir == NULL)
        return MD_OK;
    if (md_sink_mkdirs(esp->conf->dir) != 0)
        md_logf(MD_LOG_WARN, errno,
                MD_LOG_FIELDS(MD_LS("esp", esp->conf->name), MD_LS("dir", esp->conf->dir)),
                "sink directory cannot be created");
    return MD_OK;
}

static void
md_sink_destroy(md_esp_t *esp)
{
    md_sink_t *s = esp->data;
    if (s == NULL)
        return;
    if (s->journal >= 0)
        close(s->journal);
    free(s);
    esp->data = NULL;
}

/* One journal line, in one write(): O_APPEND makes each write land whole at
 * the end of the file whoever else appends. A failure is logged (at most once
 * a second) and does not fail the delivery: the message is written. */
static void
md_sink_journal(md_esp_t *esp, const md_esp_msg_t *m)
{
    md_sink_t *s = esp->data;
    if (s == NULL || s->journal < 0)
        return;
    char line[128];
    int n = snprintf(line, sizeof(line), "%s %d\n", m->id, m->attempt);
    if (n < 0 || (size_t)n >= sizeof(line))
        return;
    ssize_t w;
    do {
        w = write(s->journal, line, (size_t)n);
    } while (w < 0 && errno == EINTR);
    if (w == n)
        return;
    time_t now = time(NULL);
    if (now != s->last_error_log) {
        s->last_error_log = now;
        md_logf(MD_LOG_ERROR, w < 0 ? errno : 0,
                MD_LOG_FIELDS(MD_LS("esp", esp->conf->name), MD_LS("journal", esp->conf->journal)),
                "sink: cannot append to the journal");
    }
}

/* True when the journal has a line for message id. Read only when an
 * interrupted attempt finds the file written: a worker killed between the
 * file's rename and its journal line left the message delivered but not
 * journaled, and the journal is what tests and benchmarks count deliveries
 * by. A whole read of the journal, but only after a crash, and the sink is a
 * test and benchmark driver. */
static bool
md_sink_journal_has(const char *path, const char *id)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return false;
    char line[128];
    size_t idlen = strlen(id);
    bool found = false;
    while (!found && fgets(line, sizeof(line), f) != NULL)
        found = strncmp(line, id, idlen) == 0 && line[idlen] == ' ';
    fclose(f);
    return found;
}

/* The right-hand side of our Message-ID: the sender's domain when it is a plain
 * dot-atom (ASCII: the address is in A-label form already), else mailerd.local. */
static const char *
md_sink_msgid_domain(const char *from, char *buf, size_t size)
{
    const char *at = from ? strrchr(from, '@') : NULL;
    if (at == NULL || at[1] == '\0' || at[1] == '.' || strlen(at + 1) >= size)
        return "mailerd.local";
    for (const char *p = at + 1; *p; p++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || (c == '.' && p[1] != '.' && p[1] != '\0')))
            return "mailerd.local";
    }
    md_strlcpy(buf, at + 1, size);
    return buf;
}

/* write() all of data to fd; -1 with errno set on failure. */
static int
md_sink_write_all(int fd, const md_buf_t *data)
{
    const char *p = data->pos;
    size_t left = md_buf_len(data);
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            if (w == 0)
                errno = EIO;
            return -1;
        }
        p += w;
        left -= (size_t)w;
    }
    return 0;
}

/*
 * The file as an unnamed inode of dir (O_TMPFILE), given its name by one
 * linkat() once whole: one change to the directory instead of a create and a
 * rename, which (both taking the directory's lock, with every worker writing
 * into the same directory) were 42% of a worker's time in bench/drain. The
 * link goes through /proc/self/fd, which needs no privilege (AT_EMPTY_PATH
 * would need CAP_DAC_READ_SEARCH). Returns 0, or -1 when this way is not
 * available or failed (nothing is left behind; the caller writes the classic
 * way, which also replaces a file an earlier attempt left).
 */
static int
md_sink_write_unnamed(const char *dir, const char *path, const md_buf_t *data, int do_fsync)
{
    /* A kernel or file system without O_TMPFILE says so on the first try; the
     * next messages go the classic way without asking again (in this process,
     * for every sink directory: at worst all of them are written the old way). */
    static int unsupported;
    if (unsupported)
        return -1;
    int fd = open(dir, O_TMPFILE | O_WRONLY | O_CLOEXEC, 0644);
    if (fd < 0) {
        unsupported = errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL;
        return -1;
    }
    char proc[64];
    snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
    int rc = -1;
    if (md_sink_write_all(fd, data) == 0 && (!do_fsync || fsync(fd) == 0) &&
        linkat(AT_FDCWD, proc, AT_FDCWD, path, AT_SYMLINK_FOLLOW) == 0)
        rc = 0;
    close(fd);
    return rc;
}

/* Writes data to DIR/<id>.eml atomically (an unnamed file linked in when whole,
 * or a temporary name renamed; optional fsync). Returns 0, or -1 with errno
 * set; no temporary file survives a failure. */
static int
md_sink_write(const char *dir, const char *id, const md_buf_t *data, int do_fsync)
{
    char path[4096], tmp[4096];
    int n1 = snprintf(path, sizeof(path), "%s/%s.eml", dir, id);
    if (n1 < 0 || (size_t)n1 >= sizeof(path)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    if (md_sink_write_unnamed(dir, path, data, do_fsync) == 0)
        return 0;
    int n2 = snprintf(tmp, sizeof(tmp), "%s/.%s.eml.%ld.tmp", dir, id, (long)getpid());
    if (n2 < 0 || (size_t)n2 >= sizeof(tmp)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    if (md_sink_write_all(fd, data) != 0)
        goto fail;
    if (do_fsync && fsync(fd) != 0)
        goto fail;
    if (close(fd) != 0) {
        fd = -1;
        goto fail;
    }
    fd = -1;
    if (rename(tmp, path) != 0)
        goto fail;
    return 0;

fail:;
    int e = errno;
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    errno = e;
    return -1;
}

/* True when an earlier attempt left DIR/<id>.eml (the rename is the last step
 * of a write, so the file is whole). */
static bool
md_sink_written(const char *dir, const char *id)
{
    char path[4096];
    int n = snprintf(path, sizeof(path), "%s/%s.eml", dir, id);
    return n > 0 && (size_t)n < sizeof(path) && access(path, F_OK) == 0;
}

/* The whole attempt: what an interrupted one left, failure injection, MIME,
 * file. Fills res. */
static void
md_sink_deliver(md_esp_t *esp, const md_esp_msg_t *m, md_esp_result_t *res)
{
    const md_esp_conf_t *c = esp->conf;
    if (m->interrupted && c->dir != NULL && md_sink_written(c->dir, m->id)) {
        md_logf(MD_LOG_NOTICE, 0,
                MD_LOG_FIELDS(MD_LS("esp", c->name), MD_LS("message_id", m->id),
                              MD_LI("attempt", m->attempt)),
                "sink: an interrupted attempt had written the message already; not sent again");
        if (c->journal != NULL && !md_sink_journal_has(c->journal, m->id))
            md_sink_journal(esp, m);
        md_esp_result_sent(res, m->id, 1);
        return;
    }
    if (c->fail_permanent > 0 || c->fail_transient > 0) {
        double r = md_esp_random(esp);
        if (r < c->fail_permanent) {
            md_esp_result_permanent(res, "sink_rejected", "sink: injected permanent failure");
            return;
        }
        if (r < c->fail_permanent + c->fail_transient) {
            md_esp_result_retryable(res, "sink_transient", 0, "sink: injected transient failure");
            return;
        }
    }

    char dom[256], msgid[400];
    snprintf(msgid, sizeof(msgid), "<%s@%s>", m->id,
             md_sink_msgid_domain(m->from.addr, dom, sizeof(dom)));
    md_mime_message_t mm;
    memset(&mm, 0, sizeof(mm));
    mm.from = m->from;
    mm.to = &m->to;
    mm.nto = 1;
    mm.cc = m->cc;
    mm.ncc = m->ncc;
    mm.reply_to = m->reply_to;
    mm.nreply_to = m->nreply_to;
    mm.subject = m->subject;
    mm.text = m->text;
    mm.html = m->html;
    mm.headers = m->headers;
    mm.nheaders = m->nheaders;
    mm.message_id = msgid;
    mm.date = time(NULL);
    mm.mailerd_id = m->id;

    md_buf_t out;
    md_buf_init(&out);
    char err[256];
    if (md_mime_build(&mm, &out, err, sizeof(err)) != MD_OK) {
        /* The same content will not build next time either. */
        char text[300];
        snprintf(text, sizeof(text), "cannot build the message: %s", err);
        md_esp_result_permanent(res, "invalid_message", text);
        md_buf_free(&out);
        return;
    }
    if (c->dir == NULL || md_sink_write(c->dir, m->id, &out, c->fsync) != 0) {
        int e = c->dir ? errno : ENOENT;
        char text[300];
        snprintf(text, sizeof(text), "sink: cannot write into %s: %s", c->dir ? c->dir : "(none)",
                 strerror(e));
        md_esp_result_retryable(res, "sink_io", 0, text);
        md_buf_free(&out);
        return;
    }
    md_buf_free(&out);
    md_sink_journal(esp, m);
    /* The sink is the recipient's mailbox too: delivered the moment it is written. */
    md_esp_result_sent(res, m->id, 1);
}

const md_esp_driver_t md_esp_sink_driver = {
    .name = "sink",
    .kind = MD_ESP_DRIVER_SINK,
    .init = md_sink_init,
    .destroy = md_sink_destroy,
    .build_request = NULL,
    .read_response = NULL,
    .deliver = md_sink_deliver,
};
