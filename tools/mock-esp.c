/*
 * tools/mock-esp: a stand-in for Amazon SES v2, SendGrid v3, Postmark and Mailgun
 * for tests, benchmarks and `scripts/quickstart --esp mock` (issue 6, point 6).
 *
 * One process, one libev loop, nothing blocking but the journal write (a local
 * append, done before the answer so a counted message is never lost). One TLS
 * port serves all four APIs, told apart by path:
 *
 *   POST /v2/email/outbound-emails   SES v2 SendEmail, SigV4 (service "ses", the
 *                                    region taken from the credential scope)
 *   POST /v3/mail/send               SendGrid, "Authorization: Bearer KEY"
 *   POST /email, /email/batch        Postmark, X-Postmark-Server-Token
 *   GET /messages/outbound           Postmark's outbound message search (count,
 *                                    offset, metadata_KEY, messagestream)
 *   POST /v3/{domain}/messages       Mailgun, basic auth api:KEY, multipart/form-data
 *                                    (or x-www-form-urlencoded)
 *
 * A plain-HTTP control port answers /_mock/stats, /_mock/faults,
 * /_mock/requests, /_mock/reset and /_mock/health (see usage()).
 *
 * Each API checks what the real one checks as far as its public documentation
 * says (auth, required fields, shapes, address syntax, limits) and answers with
 * the real status codes and error bodies. Points where the real service's exact
 * behaviour is uncertain are marked "UNCERTAIN" below.
 *
 * Counting: per provider, "accepted" (2xx, per API call; a Postmark batch counts
 * each message), "rejected" (refused by auth, validation or an injected
 * permanent rejection), "failed" (an injected fault: status, reset, hang),
 * "messages" (journal lines: distinct mailerd ids accepted), "connections"
 * (TLS connections that carried at least one request for that provider) and
 * "requests" (API calls); Postmark adds "batch_requests" (calls to
 * /email/batch), "batch_messages" (the messages they carried), "batch_max"
 * (the largest array seen), so a test can tell how its mail was split, and
 * "searches" (calls to /messages/outbound).
 */
#include "md_core.h"
#include "md_buf.h"
#include "md_json.h"
#include "md_sigv4.h"

#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <llhttp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_KEYS     8
#define MAX_HEADERS  100
#define MAX_BODY     (51u * 1000 * 1000) /* Postmark's batch takes 50 MB */
#define RECORD_BODY  8192
#define DEFAULT_KEEP 200
#define SES_MAX_RCPT 50
#define SG_MAX_PERS  1000
#define PM_MAX_RCPT  50
#define PM_MAX_BATCH 500
#define MG_MAX_RCPT  1000

enum { P_SES, P_SENDGRID, P_POSTMARK, P_MAILGUN, P_COUNT };
static const char *const provider_names[P_COUNT] = {"ses", "sendgrid", "postmark", "mailgun"};

/* What happens to a request once its answer is decided. */
enum { ACT_SEND, ACT_SEND_CLOSE, ACT_RESET, ACT_HANG };

typedef struct fault_s {
    bool active;
    int status;         /* 0: no status fault */
    double rate;        /* share of requests the status/reset/hang fault hits */
    double reject_rate; /* share of valid requests refused permanently */
    unsigned latency_ms;
    unsigned retry_after;
    bool reset, hang, close, random;
    long count; /* faults left to inject; -1 unlimited */
    double acc, reject_acc;
} fault_t;

typedef struct pstats_s {
    unsigned long accepted, rejected, failed, messages, connections, requests;
    /* Postmark's /email/batch: requests, the messages they carried, the largest */
    unsigned long batch_requests, batch_messages, batch_max;
    unsigned long searches; /* Postmark's GET /messages/outbound */
} pstats_t;

typedef struct seskey_s {
    char *id, *secret;
    md_sigv4_key_cache_t kc; /* its signing key, derived once a day (and region) */
} seskey_t;

typedef struct mock_s {
    struct ev_loop *loop;
    SSL_CTX *ctx;
    int tls_fd, ctl_fd;
    ev_io tls_w, ctl_w;
    ev_signal sigterm, sigint;

    seskey_t ses_keys[MAX_KEYS];
    unsigned nses_keys;
    char *sendgrid_keys[MAX_KEYS];
    unsigned nsendgrid_keys;
    char *postmark_tokens[MAX_KEYS];
    unsigned npostmark_tokens;
    char *postmark_streams[MAX_KEYS];
    unsigned npostmark_streams;
    char *mailgun_keys[MAX_KEYS];
    unsigned nmailgun_keys;
    char *mailgun_domains[MAX_KEYS];
    unsigned nmailgun_domains;
    char *ses_config_sets[MAX_KEYS];
    unsigned nses_config_sets;
    unsigned ses_skew;
    double idle_timeout;
    bool verbose;

    int journal_fd;
    fault_t faults[P_COUNT];
    pstats_t stats[P_COUNT];
    unsigned long tls_accepted, tls_handshake_failed, tls_resumed, tls_open, ctl_requests;

    /* Postmark: a summary of each message taken, for /messages/outbound (a
     * ring of the last PM_SEARCH_KEEP, newest at pm_next - 1) */
    json_t **pm_sent;
    size_t pm_n, pm_next;

    json_t **records; /* ring of the last `keep` request records */
    size_t keep, nrec, rec_next;
    uint64_t rng;
    unsigned long seq;
} mock_t;

typedef struct hspan_s {
    size_t noff, nlen, voff, vlen;
} hspan_t;

typedef struct conn_s {
    mock_t *m;
    struct conn_s *prev, *next; /* all open connections, closed at exit */
    int fd;
    SSL *ssl;
    bool control, handshaken, busy, hung, close_after, in_field, in_value, eof, counted_resume;
    unsigned providers_seen; /* bit per provider, for the connection count */
    ev_io rio, wio;
    ev_timer timer; /* latency fault, or idle timeout */
    bool timer_is_delay;
    int pending_act;
    llhttp_t parser;
    md_buf_t in, out;
    md_buf_t hb; /* url and header bytes of the request being parsed */
    size_t url_len;
    hspan_t hs[MAX_HEADERS];
    unsigned nh;
    bool too_many_headers, too_big;
    md_buf_t body;
    char sni[256];
} conn_t;

/* A parsed request: views into the connection's buffers. */
typedef struct req_s {
    conn_t *c;
    md_str_t method, path, query;
    md_sigv4_header_t h[MAX_HEADERS];
    unsigned nh;
    md_str_t body;
    bool keepalive;
} req_t;

/* An answer being built. */
typedef struct resp_s {
    int status;
    const char *ctype;
    md_buf_t hdrs; /* extra "Name: value\r\n" lines */
    md_buf_t body;
    int act;
    bool silent_close; /* the "close" fault: close after the answer without saying so */
} resp_t;

static mock_t M;
static struct conn_s *conns;
static llhttp_settings_t settings;

/* --- logging and small helpers ----------------------------------------------------- */

static void md_printf_like(1, 2) mlog(const char *fmt, ...)
{
    char ts[32];
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
    fprintf(stderr, "%s mock-esp[%d]: ", ts, (int)getpid());
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static uint64_t
rnd(void)
{
    /* xorshift64*: ids and "random" faults need spread, not secrecy. */
    M.rng ^= M.rng >> 12;
    M.rng ^= M.rng << 25;
    M.rng ^= M.rng >> 27;
    return M.rng * 2685821657736338717ULL;
}

static void
rand_hex(char *out, size_t n)
{
    static const char hx[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++)
        out[i] = hx[rnd() & 15];
    out[n] = '\0';
}

static void
uuid4(char out[37])
{
    char h[33];
    rand_hex(h, 32);
    h[12] = '4';
    h[16] = "89ab"[rnd() & 3];
    snprintf(out, 37, "%.8s-%.4s-%.4s-%.4s-%.12s", h, h + 8, h + 12, h + 16, h + 20);
}

static bool
view_is(md_str_t v, const char *s)
{
    return md_str_eq(v, s);
}

static char *
view_dup(md_str_t v)
{
    return md_xstrndup(v.data ? v.data : "", v.len);
}

static const md_str_t *
req_header(const req_t *r, const char *name)
{
    for (unsigned i = 0; i < r->nh; i++)
        if (md_str_caseeq(r->h[i].name, name))
            return &r->h[i].value;
    return NULL;
}

static bool
str_in(const char *s, char *const *list, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        if (strcmp(s, list[i]) == 0)
            return true;
    return false;
}

/* Constant-time comparison of a received secret against a configured one. */
static bool
secret_eq(const char *got, size_t glen, const char *want)
{
    size_t wlen = strlen(want);
    unsigned char d = (unsigned char)(glen != wlen);
    for (size_t i = 0; i < wlen; i++)
        d |= (unsigned char)(got[i < glen ? i : 0] ^ want[i]);
    return glen > 0 && d == 0;
}

static bool
secret_in(const char *got, size_t glen, char *const *list, unsigned n)
{
    bool ok = false;
    for (unsigned i = 0; i < n; i++)
        ok |= secret_eq(got, glen, list[i]);
    return ok;
}

/* A request body as JSON. The mock shares the machine with what it measures
 * (bench/drain -E), and jansson's parser was an eighth of its time in an SES
 * drain: mailerd's fast path reads the usual body, and anything it does not
 * take (duplicate members among others) goes to json_loadb as before, so what
 * is accepted and how is unchanged. */
static json_t *
body_json(const req_t *r, json_error_t *je)
{
    const char *s = r->body.data ? r->body.data : "";
    json_t *j = md_json_parse(s, r->body.len);
    return j ? j : json_loadb(s, r->body.len, 0, je);
}

static const char *
jstr(const json_t *o, const char *k)
{
    json_t *v = json_is_object(o) ? json_object_get(o, k) : NULL;
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static bool
nonempty(const char *s)
{
    return s && *s;
}

/*
 * Address syntax as the providers check it, roughly: "local@domain" or
 * "Display Name <local@domain>", a non-empty local part, a domain with a dot
 * and no spaces. UNCERTAIN: each provider's exact rules differ in corners.
 */
static bool
addr_ok_n(const char *s, size_t n)
{
    while (n && (*s == ' ' || *s == '\t')) {
        s++;
        n--;
    }
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    if (n && s[n - 1] == '>') {
        const char *lt = memrchr(s, '<', n);
        if (!lt)
            return false;
        size_t off = (size_t)(lt - s) + 1;
        s += off;
        n = n - off - 1;
    }
    const char *at = memrchr(s, '@', n);
    if (!at || at == s)
        return false;
    const char *dom = at + 1;
    size_t dn = n - (size_t)(dom - s);
    if (dn < 3 || !memchr(dom, '.', dn) || dom[0] == '.' || dom[dn - 1] == '.')
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch <= ' ' || ch == '<' || ch == '>' || ch == ',' || ch == 127)
            return false;
    }
    return true;
}

static bool
addr_ok(const char *s)
{
    return s && addr_ok_n(s, strlen(s));
}

/* Splits a comma-separated address list (commas inside quotes do not split).
 * Returns false when an entry is malformed; *count gets the number of entries. */
static bool
addr_list_ok(const char *s, unsigned *count)
{
    bool q = false, ok = true;
    const char *start = s;
    for (const char *p = s;; p++) {
        if (*p == '"')
            q = !q;
        if (*p == '\0' || (*p == ',' && !q)) {
            size_t n = (size_t)(p - start);
            bool blank = true;
            for (size_t i = 0; i < n; i++)
                blank &= start[i] == ' ' || start[i] == '\t';
            if (!blank) {
                (*count)++;
                ok &= addr_ok_n(start, n);
            }
            if (*p == '\0')
                break;
            start = p + 1;
        }
    }
    return ok;
}

static int
b64_decode(const char *in, size_t n, md_buf_t *out)
{
    /* EVP_DecodeBlock wants no whitespace and a multiple of 4. */
    md_buf_t clean;
    md_buf_init(&clean);
    for (size_t i = 0; i < n; i++)
        if (in[i] != '\r' && in[i] != '\n' && in[i] != ' ')
            md_buf_append(&clean, &in[i], 1);
    size_t cl = md_buf_len(&clean);
    if (cl % 4) {
        md_buf_free(&clean);
        return MD_ERROR;
    }
    md_buf_reserve(out, cl / 4 * 3 + 1);
    int r =
        cl ? EVP_DecodeBlock((unsigned char *)out->last, (unsigned char *)clean.pos, (int)cl) : 0;
    if (r < 0) {
        md_buf_free(&clean);
        return MD_ERROR;
    }
    size_t pad = 0;
    if (cl && clean.pos[cl - 1] == '=')
        pad++;
    if (cl > 1 && clean.pos[cl - 2] == '=')
        pad++;
    out->last += (size_t)r - pad;
    md_buf_free(&clean);
    return MD_OK;
}

/* Finds a header's value in the header block of a raw RFC 5322 message (no
 * unfolding: our header is one line). Returns a malloc'd copy or NULL. */
static char *
raw_header(const char *msg, size_t n, const char *name)
{
    size_t nl = strlen(name);
    const char *p = msg, *end = msg + n;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        size_t ll = eol ? (size_t)(eol - p) : (size_t)(end - p);
        if (ll && p[ll - 1] == '\r')
            ll--;
        if (ll == 0)
            break;
        if (ll > nl && p[nl] == ':' && strncasecmp(p, name, nl) == 0) {
            const char *v = p + nl + 1;
            size_t vl = ll - nl - 1;
            while (vl && (*v == ' ' || *v == '\t')) {
                v++;
                vl--;
            }
            return md_xstrndup(v, vl);
        }
        if (!eol)
            break;
        p = eol + 1;
    }
    return NULL;
}

/* --- the answer -------------------------------------------------------------------- */

static void
resp_init(resp_t *rs)
{
    memset(rs, 0, sizeof(*rs));
    rs->status = 200;
    rs->ctype = "application/json";
    md_buf_init(&rs->hdrs);
    md_buf_init(&rs->body);
}

static void
resp_free(resp_t *rs)
{
    md_buf_free(&rs->hdrs);
    md_buf_free(&rs->body);
}

/* Sets the body to json (stolen). */
static void
resp_json(resp_t *rs, int status, json_t *j)
{
    rs->status = status;
    rs->ctype = "application/json";
    md_buf_reset(&rs->body);
    char *s = json_dumps(j, JSON_COMPACT);
    md_buf_append_str(&rs->body, s);
    free(s);
    json_decref(j);
}

static const char *
status_text(int s)
{
    switch (s) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 202:
        return "Accepted";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 413:
        return "Payload Too Large";
    case 415:
        return "Unsupported Media Type";
    case 422:
        return "Unprocessable Entity";
    case 429:
        return "Too Many Requests";
    case 500:
        return "Internal Server Error";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return "Status";
    }
}

/* --- records, stats, journal ------------------------------------------------------- */

static void
record_add(json_t *rec)
{
    if (!M.keep) {
        json_decref(rec);
        return;
    }
    if (M.records[M.rec_next])
        json_decref(M.records[M.rec_next]);
    M.records[M.rec_next] = rec;
    M.rec_next = (M.rec_next + 1) % M.keep;
    if (M.nrec < M.keep)
        M.nrec++;
}

static void
records_clear(void)
{
    for (size_t i = 0; i < M.keep; i++) {
        if (M.records[i])
            json_decref(M.records[i]);
        M.records[i] = NULL;
    }
    M.nrec = M.rec_next = 0;
}

/* One journal line per accepted message, written before the answer goes out. */
static void
journal(int p, const char *id)
{
    M.stats[p].messages++;
    if (M.journal_fd < 0)
        return;
    char line[512];
    int n = snprintf(line, sizeof(line), "%s %s\n", provider_names[p], nonempty(id) ? id : "-");
    if (n > 0 && (size_t)n < sizeof(line) && write(M.journal_fd, line, (size_t)n) != n)
        mlog("journal write failed: %s", strerror(errno));
}

/* The record of one request (or one message of a Postmark batch). */
static json_t *
record_new(const req_t *r, int p)
{
    json_t *rec = json_object();
    json_object_set_new(rec, "seq", json_integer((json_int_t)++M.seq));
    json_object_set_new(rec, "provider", json_string(provider_names[p]));
    json_object_set_new(rec, "time", json_real(ev_now(M.loop)));
    json_object_set_new(rec, "method", json_stringn(r->method.data, r->method.len));
    json_object_set_new(rec, "path", json_stringn(r->path.data, r->path.len));
    json_object_set_new(rec, "sni", json_string(r->c->sni));
    json_t *hd = json_object();
    for (unsigned i = 0; i < r->nh; i++) {
        char *n = view_dup(r->h[i].name);
        for (char *q = n; *q; q++)
            *q = (char)((*q >= 'A' && *q <= 'Z') ? *q + 32 : *q);
        json_object_set_new(hd, n, json_stringn(r->h[i].value.data, r->h[i].value.len));
        free(n);
    }
    json_object_set_new(rec, "headers", hd);
    size_t bl = md_min(r->body.len, (size_t)RECORD_BODY);
    json_object_set_new(rec, "body", json_stringn_nocheck(r->body.data ? r->body.data : "", bl));
    json_object_set_new(rec, "body_len", json_integer((json_int_t)r->body.len));
    return rec;
}

static void
record_finish(json_t *rec, const resp_t *rs, const char *outcome, const char *error,
              const char *mid, const char *hid, const char *pid)
{
    json_object_set_new(rec, "status", json_integer(rs ? rs->status : 0));
    json_object_set_new(rec, "outcome", json_string(outcome));
    if (error)
        json_object_set_new(rec, "error", json_string(error));
    json_object_set_new(rec, "mailerd_message_id", mid ? json_string(mid) : json_null());
    json_object_set_new(rec, "header_message_id", hid ? json_string(hid) : json_null());
    json_object_set_new(rec, "provider_message_id", pid ? json_string(pid) : json_null());
    if (!json_object_get(rec, "mailerd_message_ids")) {
        json_t *a = json_array();
        if (mid)
            json_array_append_new(a, json_string(mid));
        json_object_set_new(rec, "mailerd_message_ids", a);
    }
}

/* --- faults ------------------------------------------------------------------------ */

/* Error diffusion: exactly `rate` of the requests are hit, spread evenly, unless
 * the fault asked for "random". */
static bool
fault_hits(fault_t *f, double rate, double *acc)
{
    if (rate <= 0)
        return false;
    if (f->random)
        return (double)(rnd() >> 11) / 9007199254740992.0 < rate;
    *acc += rate;
    if (*acc >= 1.0 - 1e-9) {
        *acc -= 1.0;
        return true;
    }
    return false;
}

static void
ses_error(resp_t *rs, int status, const char *type, const char *msg)
{
    json_t *j = json_pack("{s:s,s:s}", "__type", type, "message", msg);
    resp_json(rs, status, j);
    md_buf_printf(&rs->hdrs, "x-amzn-ErrorType: %s\r\n", type);
}

static void
sendgrid_error(resp_t *rs, int status, const char *msg, const char *field)
{
    json_t *e = json_pack("{s:s,s:o,s:o}", "message", msg, "field",
                          field ? json_string(field) : json_null(), "help", json_null());
    resp_json(rs, status, json_pack("{s:[o]}", "errors", e));
}

static void
postmark_error(resp_t *rs, int status, int code, const char *msg)
{
    resp_json(rs, status, json_pack("{s:i,s:s}", "ErrorCode", code, "Message", msg));
}

static void
mailgun_error(resp_t *rs, int status, const char *msg)
{
    resp_json(rs, status, json_pack("{s:s}", "message", msg));
}

/* The answer of an injected status fault, in the provider's own error shape. */
static void
fault_answer(int p, const fault_t *f, resp_t *rs)
{
    int st = f->status;
    char msg[128];
    snprintf(msg, sizeof(msg), "mock-esp injected fault %d", st);
    switch (p) {
    case P_SES:
        ses_error(rs, st,
                  st == 429   ? "TooManyRequestsException"
                  : st == 503 ? "ServiceUnavailable"
                  : st >= 500 ? "InternalFailure"
                              : "BadRequestException",
                  st == 429 ? "Too Many Requests" : msg);
        break;
    case P_SENDGRID:
        sendgrid_error(rs, st, st == 429 ? "too many requests" : msg, NULL);
        break;
    case P_POSTMARK:
        postmark_error(rs, st, st == 429 ? 429 : 0, msg);
        break;
    default:
        mailgun_error(rs, st, st == 429 ? "Too many requests" : msg);
        break;
    }
    /* UNCERTAIN: SES sends no Retry-After; the mock sends one whenever asked to. */
    if (f->retry_after)
        md_buf_printf(&rs->hdrs, "Retry-After: %u\r\n", f->retry_after);
}

/* --- SES v2 ------------------------------------------------------------------------ */

static bool
ses_tag_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 256)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '-'))
            return false;
    }
    return true;
}

static const char *
name_value_find(const json_t *arr, const char *name)
{
    size_t i;
    json_t *e;
    if (!json_is_array(arr))
        return NULL;
    json_array_foreach(arr, i, e)
    {
        const char *n = jstr(e, "Name");
        if (n && strcasecmp(n, name) == 0)
            return jstr(e, "Value");
    }
    return NULL;
}

/* Checks the signature; false with the answer set when refused. */
static bool
ses_auth(const req_t *r, resp_t *rs, json_t *rec)
{
    const md_str_t *az = req_header(r, "authorization");
    if (!az) {
        ses_error(rs, 403, "MissingAuthenticationTokenException", "Missing Authentication Token");
        return false;
    }
    char *a = view_dup(*az);
    char akid[128] = "", date[16] = "", region[64] = "", service[64] = "";
    const char *cr = strstr(a, "Credential=");
    if (strncmp(a, MD_SIGV4_ALGORITHM " ", sizeof(MD_SIGV4_ALGORITHM)) != 0 || !cr ||
        sscanf(cr + 11, "%127[^/,]/%15[^/,]/%63[^/,]/%63[^/,]/", akid, date, region, service) !=
            4) {
        free(a);
        ses_error(rs, 403, "IncompleteSignatureException",
                  "Authorization header requires 'Credential', 'Signature' and 'SignedHeaders' "
                  "parameters.");
        return false;
    }
    free(a);
    json_object_set_new(rec, "region", json_string(region));
    json_object_set_new(rec, "access_key_id", json_string(akid));
    seskey_t *k = NULL;
    for (unsigned i = 0; i < M.nses_keys; i++)
        if (strcmp(M.ses_keys[i].id, akid) == 0)
            k = &M.ses_keys[i];
    if (!k) {
        ses_error(rs, 403, "UnrecognizedClientException",
                  "The security token included in the request is invalid.");
        return false;
    }
    if (strcmp(service, "ses") != 0) {
        char msg[160];
        snprintf(msg, sizeof(msg), "Credential should be scoped to correct service: 'ses'. ");
        ses_error(rs, 403, "InvalidSignatureException", msg);
        return false;
    }
    md_sigv4_cred_t cred = {.access_key_id = {strlen(k->id), k->id},
                            .secret_key = {strlen(k->secret), k->secret},
                            .region = {strlen(region), region},
                            .service = md_string("ses")};
    md_sigv4_received_t rq = {.method = r->method,
                              .path = r->path,
                              .query = r->query,
                              .headers = r->h,
                              .nheaders = r->nh,
                              .body = r->body};
    md_sigv4_out_t out;
    md_sigv4_out_init(&out);
    md_sigv4_verdict_t v = md_sigv4_verify_cached(&rq, &cred, time(NULL), M.ses_skew, &k->kc, &out);
    bool ok = v == MD_SIGV4_VERIFIED;
    if (!ok)
        json_object_set_new(rec, "sigv4",
                            json_pack("{s:s,s:s}", "verdict", md_sigv4_verdict_name(v), "reason",
                                      out.reason ? out.reason : ""));
    if (v == MD_SIGV4_BAD_SIGNATURE) {
        ses_error(rs, 403, "SignatureDoesNotMatch",
                  "The request signature we calculated does not match the signature you provided. "
                  "Check your AWS Secret Access Key and signing method. Consult the service "
                  "documentation for details.");
    } else if (v == MD_SIGV4_STALE) {
        const md_str_t *xd = req_header(r, "x-amz-date");
        char msg[256], nowb[20];
        time_t now = time(NULL);
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(nowb, sizeof(nowb), "%Y%m%dT%H%M%SZ", &tm);
        snprintf(msg, sizeof(msg), "Signature expired: %.*s is now earlier than %s (%s - %u min.)",
                 xd ? (int)md_min(xd->len, 20) : 0, xd ? xd->data : "", nowb, nowb,
                 M.ses_skew / 60);
        ses_error(rs, 403, "InvalidSignatureException", msg);
    } else if (v == MD_SIGV4_MALFORMED) {
        ses_error(rs, 403, "IncompleteSignatureException", out.reason ? out.reason : "malformed");
    }
    md_sigv4_out_free(&out);
    return ok;
}

static bool
ses_addr_array(const json_t *dest, const char *key, unsigned *n, const char **bad)
{
    json_t *a = json_object_get(dest, key);
    if (!a)
        return true;
    if (!json_is_array(a))
        return false;
    size_t i;
    json_t *e;
    json_array_foreach(a, i, e)
    {
        if (!json_is_string(e) || !addr_ok(json_string_value(e))) {
            *bad = json_is_string(e) ? json_string_value(e) : "?";
            return false;
        }
        (*n)++;
    }
    return true;
}

/* Validates a SendEmail body; NULL when fine, else the BadRequestException text. */
static const char *
ses_validate(json_t *j, char **hid)
{
    static char msg[256];
    if (!json_is_object(j))
        return "Request body is not a valid JSON object.";
    json_t *content = json_object_get(j, "Content");
    if (!json_is_object(content))
        return "Missing required parameter: Content.";
    json_t *simple = json_object_get(content, "Simple"), *raw = json_object_get(content, "Raw"),
           *tmpl = json_object_get(content, "Template");
    if ((simple != NULL) + (raw != NULL) + (tmpl != NULL) != 1)
        return "Content must contain exactly one of Simple, Raw or Template.";
    const char *from = jstr(j, "FromEmailAddress");
    /* UNCERTAIN: SES v2 marks FromEmailAddress optional; without it the From of
     * a Raw message is used, and Simple/Template sends are refused. */
    if (!raw && !from)
        return "Missing required parameter: FromEmailAddress.";
    if (from && !addr_ok(from)) {
        snprintf(msg, sizeof(msg), "Illegal address: %s", from);
        return msg;
    }
    json_t *dest = json_object_get(j, "Destination");
    unsigned n = 0;
    const char *bad = NULL;
    if (dest && !json_is_object(dest))
        return "Destination must be an object.";
    if (dest && (!ses_addr_array(dest, "ToAddresses", &n, &bad) ||
                 !ses_addr_array(dest, "CcAddresses", &n, &bad) ||
                 !ses_addr_array(dest, "BccAddresses", &n, &bad))) {
        snprintf(msg, sizeof(msg), "Illegal address: %s", bad ? bad : "(not a list)");
        return msg;
    }
    if (!raw && n == 0)
        return "Missing required parameter: Destination (at least one recipient).";
    if (n > SES_MAX_RCPT)
        return "Recipient count exceeds 50.";
    if (simple) {
        json_t *subj = json_object_get(simple, "Subject"), *body = json_object_get(simple, "Body");
        if (!nonempty(jstr(subj, "Data")))
            return "Missing required parameter: Content.Simple.Subject.Data.";
        if (!json_is_object(body) || (!jstr(json_object_get(body, "Text"), "Data") &&
                                      !jstr(json_object_get(body, "Html"), "Data")))
            return "Missing required parameter: Content.Simple.Body (Text or Html).";
        json_t *hs = json_object_get(simple, "Headers");
        if (hs) {
            size_t i;
            json_t *e;
            if (!json_is_array(hs))
                return "Content.Simple.Headers must be a list.";
            json_array_foreach(
                hs, i, e) if (!nonempty(jstr(e, "Name")) ||
                              !jstr(e, "Value")) return "Each header in Content.Simple.Headers "
                                                        "needs Name and Value.";
            const char *h = name_value_find(hs, "X-Mailerd-Message-Id");
            if (h)
                *hid = md_xstrdup(h);
        }
    } else if (raw) {
        const char *d = jstr(raw, "Data");
        md_buf_t dec;
        md_buf_init(&dec);
        if (!nonempty(d) || b64_decode(d, strlen(d), &dec) != MD_OK || md_buf_len(&dec) == 0) {
            md_buf_free(&dec);
            return "Content.Raw.Data must be a non-empty base64 message.";
        }
        char *rf = raw_header(dec.pos, md_buf_len(&dec), "From");
        if (!from && !rf) {
            md_buf_free(&dec);
            return "Missing required header 'From'.";
        }
        free(rf);
        *hid = raw_header(dec.pos, md_buf_len(&dec), "X-Mailerd-Message-Id");
        md_buf_free(&dec);
    } else if (!nonempty(jstr(tmpl, "TemplateName")) && !nonempty(jstr(tmpl, "TemplateArn")) &&
               !json_is_object(json_object_get(tmpl, "TemplateContent"))) {
        return "Content.Template needs TemplateName, TemplateArn or TemplateContent.";
    }
    json_t *tags = json_object_get(j, "EmailTags");
    if (tags) {
        size_t i;
        json_t *e;
        if (!json_is_array(tags))
            return "EmailTags must be a list.";
        json_array_foreach(tags, i, e)
        {
            if (!ses_tag_ok(jstr(e, "Name")) || !ses_tag_ok(jstr(e, "Value")))
                return "Invalid message tag: Name and Value may contain only ASCII letters, "
                       "numbers, underscores and dashes (1-256 characters).";
        }
    }
    const char *cs = jstr(j, "ConfigurationSetName");
    if (cs && M.nses_config_sets && !str_in(cs, M.ses_config_sets, M.nses_config_sets)) {
        snprintf(msg, sizeof(msg), "\x01Configuration set <%s> does not exist.", cs);
        return msg;
    }
    return NULL;
}

/* Returns the outcome: "accepted" or "rejected". */
static const char *
handle_ses(const req_t *r, resp_t *rs, json_t *rec, fault_t *f, const char **err, char **mid,
           char **hid, char **pid)
{
    if (!view_is(r->method, "POST")) {
        ses_error(rs, 405, "MethodNotAllowedException", "Method not allowed");
        return "rejected";
    }
    if (!ses_auth(r, rs, rec))
        return "rejected";
    json_error_t je;
    json_t *j = body_json(r, &je);
    if (!j) {
        ses_error(rs, 400, "SerializationException", "Request body is not valid JSON.");
        return "rejected";
    }
    const char *bad = ses_validate(j, hid);
    const char *tag = name_value_find(json_object_get(j, "EmailTags"), "mailerd_message_id");
    if (tag)
        *mid = md_xstrdup(tag);
    if (bad) {
        if (bad[0] == '\x01')
            ses_error(rs, 404, "NotFoundException", bad + 1);
        else
            ses_error(rs, 400, "BadRequestException", bad);
        *err = bad[0] == '\x01' ? bad + 1 : bad;
        json_decref(j);
        return "rejected";
    }
    const char *region = jstr(rec, "region");
    if (fault_hits(f, f->reject_rate, &f->reject_acc)) {
        char msg[256], up[64];
        size_t i = 0;
        for (; region && region[i] && i < sizeof(up) - 1; i++)
            up[i] = (char)((region[i] >= 'a' && region[i] <= 'z') ? region[i] - 32 : region[i]);
        up[i] = '\0';
        const char *from = jstr(j, "FromEmailAddress");
        snprintf(msg, sizeof(msg),
                 "Email address is not verified. The following identities failed the check in "
                 "region %s: %s",
                 up, from ? from : "");
        ses_error(rs, 400, "MessageRejected", msg);
        *err = "MessageRejected";
        json_decref(j);
        return "rejected";
    }
    json_decref(j);
    char u[37], id[80], h[17];
    uuid4(u);
    rand_hex(h, 16);
    snprintf(id, sizeof(id), "0100%s-%s-000000", h + 4, u);
    *pid = md_xstrdup(id);
    resp_json(rs, 200, json_pack("{s:s}", "MessageId", id));
    md_buf_printf(&rs->hdrs, "x-amzn-RequestId: %s\r\n", u);
    journal(P_SES, *mid ? *mid : *hid);
    return "accepted";
}

/* --- SendGrid v3 ------------------------------------------------------------------- */

static bool
sg_email_list(json_t *a, bool required, unsigned *n)
{
    if (!a)
        return !required;
    if (!json_is_array(a) || (required && json_array_size(a) == 0))
        return false;
    size_t i;
    json_t *e;
    json_array_foreach(a, i, e)
    {
        if (!addr_ok(jstr(e, "email")))
            return false;
        (*n)++;
    }
    return true;
}

static bool
sg_string_values(json_t *o)
{
    const char *k;
    json_t *v;
    if (!o)
        return true;
    if (!json_is_object(o))
        return false;
    json_object_foreach(o, k, v) if (!json_is_string(v)) return false;
    return true;
}

static const char *
sendgrid_validate(json_t *j, const char **field, json_t *ids, char **hid)
{
    if (!json_is_object(j))
        return "Bad Request";
    json_t *pers = json_object_get(j, "personalizations");
    if (!json_is_array(pers) || json_array_size(pers) == 0) {
        *field = "personalizations";
        return "The personalizations field is required and must have at least one "
               "personalization.";
    }
    if (json_array_size(pers) > SG_MAX_PERS) {
        *field = "personalizations";
        return "The personalizations field has too many items; the maximum is 1000.";
    }
    json_t *from = json_object_get(j, "from");
    if (!json_is_object(from) || !jstr(from, "email")) {
        *field = "from";
        return "The from object must be provided for every email send. It is an object that "
               "requires the email parameter, but may also contain a name parameter.";
    }
    if (!addr_ok(jstr(from, "email"))) {
        *field = "from.email";
        return "The from email does not contain a valid address.";
    }
    const char *tmpl = jstr(j, "template_id");
    bool all_subj = true;
    size_t i;
    json_t *p;
    json_array_foreach(pers, i, p)
    {
        unsigned n = 0;
        if (!json_is_object(p) || !sg_email_list(json_object_get(p, "to"), true, &n)) {
            *field = "personalizations.to";
            return "The to array is required for all personalization objects, and must have at "
                   "least one email object with a valid email address.";
        }
        if (!sg_email_list(json_object_get(p, "cc"), false, &n) ||
            !sg_email_list(json_object_get(p, "bcc"), false, &n)) {
            *field = "personalizations.cc";
            return "Does not contain a valid address.";
        }
        if (n > 1000) {
            *field = "personalizations";
            return "The total number of recipients in a personalization must be 1000 or fewer.";
        }
        if (!nonempty(jstr(p, "subject")))
            all_subj = false;
        json_t *ca = json_object_get(p, "custom_args");
        if (!sg_string_values(ca)) {
            *field = "personalizations.custom_args";
            return "Invalid type. Expected: string, given: non-string (custom_args values must "
                   "be strings).";
        }
        const char *id = jstr(ca, "mailerd_message_id");
        if (id)
            json_array_append_new(ids, json_string(id));
        json_t *ph = json_object_get(p, "headers");
        if (!*hid && jstr(ph, "X-Mailerd-Message-Id"))
            *hid = md_xstrdup(jstr(ph, "X-Mailerd-Message-Id"));
    }
    json_t *ca = json_object_get(j, "custom_args");
    if (!sg_string_values(ca)) {
        *field = "custom_args";
        return "Invalid type. Expected: string, given: non-string (custom_args values must be "
               "strings).";
    }
    if (json_array_size(ids) == 0 && jstr(ca, "mailerd_message_id"))
        json_array_append_new(ids, json_string(jstr(ca, "mailerd_message_id")));
    json_t *hd = json_object_get(j, "headers");
    if (!sg_string_values(hd)) {
        *field = "headers";
        return "Invalid type. Expected: string (header values must be strings).";
    }
    if (!*hid && jstr(hd, "X-Mailerd-Message-Id"))
        *hid = md_xstrdup(jstr(hd, "X-Mailerd-Message-Id"));
    if (!tmpl && !all_subj && !nonempty(jstr(j, "subject"))) {
        *field = "subject";
        return "The subject is required. You can get around this requirement if you use a "
               "template with a subject defined or if every personalization has a subject "
               "defined.";
    }
    json_t *content = json_object_get(j, "content");
    if (!tmpl && (!json_is_array(content) || json_array_size(content) == 0)) {
        *field = "content";
        return "Unless a valid template_id is provided, the content parameter is required. There "
               "must be at least one defined content block.";
    }
    if (content) {
        json_t *c;
        json_array_foreach(content, i, c)
        {
            const char *t = jstr(c, "type"), *v = jstr(c, "value");
            if (!nonempty(t)) {
                *field = "content.type";
                return "The content type cannot contain ';', or CRLF characters, and must be at "
                       "least one character long.";
            }
            if (!nonempty(v)) {
                *field = "content.value";
                return "The content value must be a string at least one character in length.";
            }
            if (i > 0 && strcasecmp(t, "text/plain") == 0) {
                *field = "content";
                return "If present, text/plain content must be first, followed by any other "
                       "content.";
            }
        }
    }
    return NULL;
}

static const char *
handle_sendgrid(const req_t *r, resp_t *rs, json_t *rec, fault_t *f, const char **err, char **mid,
                char **hid, char **pid)
{
    if (!view_is(r->method, "POST")) {
        sendgrid_error(rs, 405, "method not allowed", NULL);
        return "rejected";
    }
    const md_str_t *az = req_header(r, "authorization");
    if (!az) {
        sendgrid_error(rs, 401, "authorization required", NULL);
        return "rejected";
    }
    if (az->len < 7 || strncasecmp(az->data, "Bearer ", 7) != 0 ||
        !secret_in(az->data + 7, az->len - 7, M.sendgrid_keys, M.nsendgrid_keys)) {
        sendgrid_error(rs, 401, "The provided authorization grant is invalid, expired, or revoked",
                       NULL);
        return "rejected";
    }
    const md_str_t *ct = req_header(r, "content-type");
    if (!ct || ct->len < 16 || strncasecmp(ct->data, "application/json", 16) != 0) {
        sendgrid_error(rs, 400, "Content-Type should be application/json.", NULL);
        return "rejected";
    }
    json_error_t je;
    json_t *j = body_json(r, &je);
    if (!j) {
        sendgrid_error(rs, 400, "Bad Request", NULL);
        *err = "invalid JSON";
        return "rejected";
    }
    json_t *ids = json_array();
    const char *field = NULL;
    const char *bad = sendgrid_validate(j, &field, ids, hid);
    json_object_set(rec, "mailerd_message_ids", ids);
    if (json_array_size(ids))
        *mid = md_xstrdup(json_string_value(json_array_get(ids, 0)));
    json_decref(j);
    if (!bad && fault_hits(f, f->reject_rate, &f->reject_acc)) {
        bad = "Does not contain a valid address.";
        field = "personalizations.0.to.0.email";
    }
    if (bad) {
        sendgrid_error(rs, 400, bad, field);
        *err = bad;
        json_decref(ids);
        return "rejected";
    }
    static const char an[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    char id[23];
    for (int i = 0; i < 22; i++)
        id[i] = an[rnd() & 63];
    id[22] = '\0';
    *pid = md_xstrdup(id);
    rs->status = 202;
    rs->ctype = NULL;
    md_buf_printf(&rs->hdrs, "X-Message-Id: %s\r\n", id);
    if (json_array_size(ids) == 0) {
        journal(P_SENDGRID, *hid);
    } else {
        size_t i;
        json_t *e;
        json_array_foreach(ids, i, e) journal(P_SENDGRID, json_string_value(e));
    }
    json_decref(ids);
    return "accepted";
}

/* --- Postmark ---------------------------------------------------------------------- */

static bool
postmark_stream_ok(const char *s)
{
    if (!s)
        return true; /* "outbound" by default */
    if (M.npostmark_streams)
        return str_in(s, M.postmark_streams, M.npostmark_streams);
    return strcmp(s, "outbound") == 0 || strcmp(s, "broadcast") == 0;
}

/* Validates one message; returns the ErrorCode (0 ok) and sets *msg. */
static int
postmark_validate(json_t *j, const char **msg, char **mid, char **hid)
{
    static char buf[256];
    if (!json_is_object(j)) {
        *msg = "Invalid JSON: a message must be an object.";
        return 402;
    }
    const char *meta_id = jstr(json_object_get(j, "Metadata"), "mailerd_message_id");
    if (meta_id)
        *mid = md_xstrdup(meta_id);
    const char *h = name_value_find(json_object_get(j, "Headers"), "X-Mailerd-Message-Id");
    if (h)
        *hid = md_xstrdup(h);
    const char *from = jstr(j, "From");
    if (!addr_ok(from)) {
        snprintf(buf, sizeof(buf), "Invalid 'From' address: '%s'.", from ? from : "");
        *msg = buf;
        return 300;
    }
    unsigned n = 0;
    const char *to = jstr(j, "To"), *cc = jstr(j, "Cc"), *bcc = jstr(j, "Bcc");
    bool ok = (!to || addr_list_ok(to, &n)) && (!cc || addr_list_ok(cc, &n)) &&
              (!bcc || addr_list_ok(bcc, &n));
    if (!ok) {
        snprintf(buf, sizeof(buf), "Error parsing 'To': Illegal email address '%s'.", to ? to : "");
        *msg = buf;
        return 300;
    }
    if (n == 0) {
        *msg = "Zero recipients specified";
        return 300;
    }
    if (n > PM_MAX_RCPT) {
        *msg = "Maximum of 50 recipients allowed (To, Cc and Bcc combined).";
        return 300;
    }
    if (!nonempty(jstr(j, "TextBody")) && !nonempty(jstr(j, "HtmlBody")) &&
        !json_object_get(j, "TemplateId") && !json_object_get(j, "TemplateAlias")) {
        *msg = "Provide either email TextBody or HtmlBody or both.";
        return 300;
    }
    json_t *hs = json_object_get(j, "Headers");
    if (hs && !json_is_array(hs)) {
        *msg = "Headers must be a list of {Name, Value}.";
        return 300;
    }
    json_t *meta = json_object_get(j, "Metadata");
    if (meta) {
        const char *k;
        json_t *v;
        /* UNCERTAIN: Postmark's documented limits: 10 fields, names up to 20
         * characters, values up to 80; the exact error code is a guess. */
        if (!json_is_object(meta) || json_object_size(meta) > 10) {
            *msg = "Metadata must be an object of at most 10 fields.";
            return 300;
        }
        json_object_foreach(meta, k, v)
        {
            if (strlen(k) > 20 || !json_is_string(v) || strlen(json_string_value(v)) > 80) {
                *msg = "Metadata field names are limited to 20 characters and values to 80 "
                       "characters (strings).";
                return 300;
            }
        }
    }
    if (!postmark_stream_ok(jstr(j, "MessageStream"))) {
        *msg = "The 'MessageStream' provided does not exist on this server.";
        return 1235;
    }
    return 0;
}

/* Postmark's message search reaches back 45 days; the mock keeps the last this many
 * (a summary is about half a kilobyte: 25 MB at most). */
#define PM_SEARCH_KEEP 50000

/* Keeps what the search answers about a message Postmark took (j, MessageID
 * id, received at ts). */
static void
postmark_remember(json_t *j, const char *id, const char *ts)
{
    if (M.pm_sent == NULL)
        M.pm_sent = md_xcalloc(PM_SEARCH_KEEP, sizeof(*M.pm_sent));
    json_t *meta = json_object_get(j, "Metadata");
    const char *stream = jstr(j, "MessageStream");
    json_t *sum = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:O}", "MessageID", id, "ReceivedAt", ts,
                            "From", jstr(j, "From") ? jstr(j, "From") : "", "Subject",
                            jstr(j, "Subject") ? jstr(j, "Subject") : "", "Status", "Sent",
                            "MessageStream", stream ? stream : "outbound", "Metadata",
                            json_is_object(meta) ? meta : json_object());
    if (M.pm_sent[M.pm_next])
        json_decref(M.pm_sent[M.pm_next]);
    M.pm_sent[M.pm_next] = sum;
    M.pm_next = (M.pm_next + 1) % PM_SEARCH_KEEP;
    if (M.pm_n < PM_SEARCH_KEEP)
        M.pm_n++;
}

static void
postmark_forget_all(void)
{
    for (size_t i = 0; M.pm_sent && i < PM_SEARCH_KEEP; i++) {
        json_decref(M.pm_sent[i]);
        M.pm_sent[i] = NULL;
    }
    M.pm_n = M.pm_next = 0;
}

/* The success object of one Postmark message (which the search then finds). */
static json_t *
postmark_ok(json_t *j, char **pid)
{
    char u[37], ts[64];
    uuid4(u);
    *pid = md_xstrdup(u);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct tm tm;
    gmtime_r(&now.tv_sec, &tm);
    size_t n = strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + n, sizeof(ts) - n, ".%07ldZ", now.tv_nsec / 100);
    const char *to = jstr(j, "To");
    postmark_remember(j, u, ts);
    return json_pack("{s:s,s:s,s:s,s:i,s:s}", "To", to ? to : "", "SubmittedAt", ts, "MessageID", u,
                     "ErrorCode", 0, "Message", "OK");
}

/* The server token check of every Postmark call; false: rs holds the 401. */
static bool
postmark_auth(const req_t *r, resp_t *rs)
{
    const md_str_t *tok = req_header(r, "x-postmark-server-token");
    if (!tok) {
        postmark_error(rs, 401, 10,
                       "No Account or Server API tokens were supplied in the HTTP headers. Please "
                       "add a header for either X-Postmark-Server-Token or "
                       "X-Postmark-Account-Token.");
        return false;
    }
    if (!secret_in(tok->data, tok->len, M.postmark_tokens, M.npostmark_tokens)) {
        postmark_error(rs, 401, 10, "Request does not contain a valid Server token.");
        return false;
    }
    return true;
}

static const char *
handle_postmark(const req_t *r, resp_t *rs, json_t *rec, fault_t *f, const char **err, char **mid,
                char **hid, char **pid, bool batch)
{
    if (!view_is(r->method, "POST")) {
        postmark_error(rs, 405, 0, "Method not allowed");
        return "rejected";
    }
    if (!postmark_auth(r, rs))
        return "rejected";
    json_error_t je;
    json_t *j = body_json(r, &je);
    if (!j || (batch && !json_is_array(j))) {
        /* UNCERTAIN: Postmark documents ErrorCode 402 "Invalid JSON"; the HTTP status
         * (422 here) is not stated. */
        postmark_error(rs, 422, 402, "Received invalid JSON input.");
        json_decref(j);
        *err = "invalid JSON";
        return "rejected";
    }
    if (!batch) {
        const char *msg = NULL;
        int code = postmark_validate(j, &msg, mid, hid);
        if (!code && fault_hits(f, f->reject_rate, &f->reject_acc)) {
            code = 406;
            msg = "You tried to send to recipient(s) that have been marked as inactive.";
        }
        if (code) {
            postmark_error(rs, 422, code, msg);
            *err = msg;
            json_decref(j);
            return "rejected";
        }
        resp_json(rs, 200, postmark_ok(j, pid));
        journal(P_POSTMARK, *mid ? *mid : *hid);
        json_decref(j);
        return "accepted";
    }
    size_t nmsg = json_array_size(j);
    M.stats[P_POSTMARK].batch_messages += nmsg;
    if (nmsg > M.stats[P_POSTMARK].batch_max)
        M.stats[P_POSTMARK].batch_max = nmsg;
    if (nmsg > PM_MAX_BATCH) {
        /* UNCERTAIN: Postmark documents the limit of 500 messages per call but
         * not the answer past it; a whole-request 422 with ErrorCode 300
         * ("Invalid email request") is the closest documented shape. Every
         * message of it counts as rejected (the caller counts one). */
        postmark_error(rs, 422, 300, "Too many messages in batch; the maximum is 500.");
        M.stats[P_POSTMARK].rejected += nmsg - 1;
        json_decref(j);
        *err = "too many messages in batch";
        return "rejected";
    }
    /* A batch answers 200 with one result per message; each is recorded and
     * counted on its own, the request itself is not. */
    json_t *out = json_array(), *ids = json_array();
    size_t i;
    json_t *e;
    unsigned acc = 0, rej = 0;
    json_array_foreach(j, i, e)
    {
        char *m1 = NULL, *h1 = NULL, *p1 = NULL;
        const char *msg = NULL;
        int code = postmark_validate(e, &msg, &m1, &h1);
        if (!code && fault_hits(f, f->reject_rate, &f->reject_acc)) {
            code = 406;
            msg = "You tried to send to recipient(s) that have been marked as inactive.";
        }
        json_t *one = record_new(r, P_POSTMARK);
        json_object_set_new(one, "batch_index", json_integer((json_int_t)i));
        if (code) {
            json_array_append_new(out, json_pack("{s:i,s:s}", "ErrorCode", code, "Message", msg));
            rej++;
        } else {
            json_array_append_new(out, postmark_ok(e, &p1));
            journal(P_POSTMARK, m1 ? m1 : h1);
            acc++;
        }
        if (m1)
            json_array_append_new(ids, json_string(m1));
        resp_t tmp = {.status = 200};
        record_finish(one, &tmp, code ? "rejected" : "accepted", code ? msg : NULL, m1, h1, p1);
        record_add(one);
        free(m1);
        free(h1);
        free(p1);
    }
    json_decref(j);
    M.stats[P_POSTMARK].accepted += acc;
    M.stats[P_POSTMARK].rejected += rej;
    json_object_set_new(rec, "mailerd_message_ids", ids);
    json_object_set_new(rec, "batch", json_pack("{s:i,s:i}", "accepted", acc, "rejected", rej));
    resp_json(rs, 200, out);
    return "batch";
}

/* --- Mailgun ----------------------------------------------------------------------- */

typedef struct field_s {
    char *name;
    md_str_t value; /* view into the body, or into `own` */
    char *own;
    bool file;
} field_t;

typedef struct form_s {
    field_t *f;
    size_t n, cap;
} form_t;

static void
form_add(form_t *fm, char *name, md_str_t v, char *own, bool file)
{
    if (fm->n == fm->cap) {
        fm->cap = fm->cap ? fm->cap * 2 : 16;
        fm->f = md_xrealloc(fm->f, fm->cap * sizeof(field_t));
    }
    fm->f[fm->n++] = (field_t){name, v, own, file};
}

static void
form_free(form_t *fm)
{
    for (size_t i = 0; i < fm->n; i++) {
        free(fm->f[i].name);
        free(fm->f[i].own);
    }
    free(fm->f);
}

static char *
url_decode(const char *s, size_t n)
{
    char *o = md_xmalloc(n + 1), *q = o;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '+') {
            *q++ = ' ';
        } else if (s[i] == '%' && i + 2 < n + 0 && md_hexval(s[i + 1]) >= 0 &&
                   md_hexval(s[i + 2]) >= 0) {
            *q++ = (char)(md_hexval(s[i + 1]) * 16 + md_hexval(s[i + 2]));
            i += 2;
        } else {
            *q++ = s[i];
        }
    }
    *q = '\0';
    return o;
}

static int
parse_urlencoded(md_str_t body, form_t *fm)
{
    const char *p = body.data, *end = body.data + body.len;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *e = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(e - p));
        if (e > p) {
            char *name = url_decode(p, eq ? (size_t)(eq - p) : (size_t)(e - p));
            char *val = eq ? url_decode(eq + 1, (size_t)(e - eq - 1)) : md_xstrdup("");
            form_add(fm, name, (md_str_t){strlen(val), val}, val, false);
        }
        p = e + 1;
    }
    return MD_OK;
}

/* Extracts param="value" (or param=value) from a header value. */
static char *
header_param(const char *h, size_t hl, const char *param)
{
    size_t pl = strlen(param);
    for (size_t i = 0; i + pl < hl; i++) {
        if ((i == 0 || h[i - 1] == ';' || h[i - 1] == ' ' || h[i - 1] == '\t') &&
            strncasecmp(h + i, param, pl) == 0 && h[i + pl] == '=') {
            const char *v = h + i + pl + 1, *end = h + hl;
            if (v < end && *v == '"') {
                const char *q = memchr(v + 1, '"', (size_t)(end - v - 1));
                return q ? md_xstrndup(v + 1, (size_t)(q - v - 1)) : NULL;
            }
            const char *e = v;
            while (e < end && *e != ';' && *e != ' ' && *e != '\t')
                e++;
            return md_xstrndup(v, (size_t)(e - v));
        }
    }
    return NULL;
}

/* RFC 7578 multipart/form-data. MD_ERROR on a malformed body. */
static int
parse_multipart(md_str_t body, const char *boundary, form_t *fm)
{
    size_t bl = strlen(boundary);
    char *delim = md_xmalloc(bl + 5);
    snprintf(delim, bl + 5, "\r\n--%s", boundary);
    size_t dl = bl + 4;
    const char *p = body.data, *end = body.data + body.len;
    int rc = MD_ERROR;
    /* The first delimiter may lack the leading CRLF. */
    if ((size_t)(end - p) < dl - 2 || memcmp(p, delim + 2, dl - 2) != 0)
        goto out;
    p += dl - 2;
    for (;;) {
        if (end - p >= 2 && p[0] == '-' && p[1] == '-') {
            rc = MD_OK;
            break;
        }
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        if (end - p < 2 || p[0] != '\r' || p[1] != '\n')
            break;
        p += 2;
        const char *hend = memmem(p, (size_t)(end - p), "\r\n\r\n", 4);
        if (!hend) {
            /* A part without headers is malformed for form-data. */
            break;
        }
        char *name = NULL;
        bool file = false;
        for (const char *l = p; l < hend;) {
            const char *le = memmem(l, (size_t)(hend - l) + 2, "\r\n", 2);
            if (!le)
                le = hend;
            size_t ll = (size_t)(le - l);
            if (ll > 20 && strncasecmp(l, "content-disposition:", 20) == 0) {
                name = header_param(l + 20, ll - 20, "name");
                char *fnm = header_param(l + 20, ll - 20, "filename");
                file = fnm != NULL;
                free(fnm);
            }
            l = le + 2;
        }
        const char *data = hend + 4;
        const char *next = memmem(data, (size_t)(end - data), delim, dl);
        if (!next || !name) {
            free(name);
            break;
        }
        form_add(fm, name, (md_str_t){(size_t)(next - data), data}, NULL, file);
        p = next + dl;
    }
out:
    free(delim);
    return rc;
}

static const field_t *
form_get(const form_t *fm, const char *name)
{
    for (size_t i = 0; i < fm->n; i++)
        if (strcmp(fm->f[i].name, name) == 0)
            return &fm->f[i];
    return NULL;
}

static const char *
handle_mailgun(const req_t *r, md_str_t domain, resp_t *rs, json_t *rec, fault_t *f,
               const char **err, char **mid, char **hid, char **pid)
{
    rs->ctype = "application/json";
    if (!view_is(r->method, "POST")) {
        mailgun_error(rs, 405, "Method not allowed");
        return "rejected";
    }
    const md_str_t *az = req_header(r, "authorization");
    bool ok = false;
    if (az && az->len > 6 && strncasecmp(az->data, "Basic ", 6) == 0) {
        md_buf_t dec;
        md_buf_init(&dec);
        if (b64_decode(az->data + 6, az->len - 6, &dec) == MD_OK && md_buf_len(&dec) > 4 &&
            memcmp(dec.pos, "api:", 4) == 0)
            ok = secret_in(dec.pos + 4, md_buf_len(&dec) - 4, M.mailgun_keys, M.nmailgun_keys);
        md_buf_free(&dec);
    }
    if (!ok) {
        rs->status = 401;
        rs->ctype = "text/plain";
        md_buf_append_str(&rs->body, "Forbidden");
        return "rejected";
    }
    char *dom = view_dup(domain);
    json_object_set_new(rec, "domain", json_string(dom));
    if (!str_in(dom, M.mailgun_domains, M.nmailgun_domains)) {
        /* UNCERTAIN: with a valid key and an unknown domain Mailgun answers 404
         * {"message": "Domain not found: X"} (some accounts see 401 Forbidden). */
        char msg[300];
        snprintf(msg, sizeof(msg), "Domain not found: %s", dom);
        mailgun_error(rs, 404, msg);
        free(dom);
        return "rejected";
    }
    const md_str_t *ct = req_header(r, "content-type");
    form_t fm = {0};
    int prc = MD_ERROR;
    if (ct && ct->len >= 19 && strncasecmp(ct->data, "multipart/form-data", 19) == 0) {
        char *b = header_param(ct->data, ct->len, "boundary");
        if (b && *b)
            prc = parse_multipart(r->body, b, &fm);
        free(b);
    } else if (ct && ct->len >= 33 &&
               strncasecmp(ct->data, "application/x-www-form-urlencoded", 33) == 0) {
        prc = parse_urlencoded(r->body, &fm);
    }
    const char *bad = NULL;
    if (prc != MD_OK) {
        bad = "Invalid form: expected multipart/form-data or application/x-www-form-urlencoded";
        goto done;
    }
    json_t *fields = json_object();
    for (size_t i = 0; i < fm.n; i++)
        if (!fm.f[i].file && !json_object_get(fields, fm.f[i].name))
            json_object_set_new(
                fields, fm.f[i].name,
                json_stringn_nocheck(fm.f[i].value.data, md_min(fm.f[i].value.len, 1024)));
    json_object_set_new(rec, "form", fields);
    const field_t *v = form_get(&fm, "v:mailerd_message_id");
    if (v)
        *mid = view_dup(v->value);
    const field_t *h = form_get(&fm, "h:X-Mailerd-Message-Id");
    if (h)
        *hid = view_dup(h->value);
    const field_t *from = form_get(&fm, "from");
    if (!from) {
        bad = "from parameter is missing";
        goto done;
    }
    char *fs = view_dup(from->value);
    bool fok = addr_ok(fs);
    free(fs);
    if (!fok) {
        bad = "from parameter is not a valid address. please check documentation";
        goto done;
    }
    unsigned n = 0;
    bool any_to = false;
    for (size_t i = 0; i < fm.n; i++) {
        bool is_to = strcmp(fm.f[i].name, "to") == 0;
        if (is_to || strcmp(fm.f[i].name, "cc") == 0 || strcmp(fm.f[i].name, "bcc") == 0) {
            char *s = view_dup(fm.f[i].value);
            bool lok = addr_list_ok(s, &n);
            free(s);
            any_to |= is_to;
            if (!lok) {
                bad = is_to ? "to parameter is not a valid address. please check documentation"
                            : "cc or bcc parameter is not a valid address. please check "
                              "documentation";
                goto done;
            }
        }
    }
    if (!any_to) {
        bad = "to parameter is missing";
        goto done;
    }
    if (n > MG_MAX_RCPT) {
        bad = "Too many recipients: the maximum is 1000";
        goto done;
    }
    if (!form_get(&fm, "subject") && !form_get(&fm, "template")) {
        bad = "subject parameter is missing";
        goto done;
    }
    if (!form_get(&fm, "text") && !form_get(&fm, "html") && !form_get(&fm, "template") &&
        !form_get(&fm, "amp-html")) {
        bad = "Need at least one of 'text', 'html' or 'template' parameters specified";
        goto done;
    }
    if (fault_hits(f, f->reject_rate, &f->reject_acc))
        bad = "to parameter is not a valid address. please check documentation";
done:
    form_free(&fm);
    if (bad) {
        mailgun_error(rs, 400, bad);
        *err = bad;
        free(dom);
        return "rejected";
    }
    char id[400], ts[20], hx[13];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(ts, sizeof(ts), "%Y%m%d%H%M%S", &tm);
    rand_hex(hx, 12);
    snprintf(id, sizeof(id), "<%s.%lu.%s@%s>", ts, M.seq, hx, dom);
    free(dom);
    *pid = md_xstrdup(id);
    resp_json(rs, 200, json_pack("{s:s,s:s}", "id", id, "message", "Queued. Thank you."));
    journal(P_MAILGUN, *mid ? *mid : *hid);
    return "accepted";
}

/*
 * Postmark's outbound message search: count (1..500) and offset are required,
 * count + offset at most 10,000; metadata_KEY=VALUE keeps the messages whose
 * Metadata has it (Postmark takes one such filter per call), messagestream
 * the stream (default "outbound", as Postmark's). Newest first. UNCERTAIN: the
 * other filters (recipient, tag, status, dates) are ignored, and the answer
 * to a bad count or offset (422 with ErrorCode 300 here) is not documented.
 */
static const char *
handle_postmark_search(const req_t *r, resp_t *rs, const char **err)
{
    M.stats[P_POSTMARK].searches++;
    if (!view_is(r->method, "GET")) {
        postmark_error(rs, 405, 0, "Method not allowed");
        return "rejected";
    }
    if (!postmark_auth(r, rs))
        return "rejected";
    long count = -1, offset = -1;
    char *mkey = NULL, *mval = NULL, *stream = NULL;
    const char *q = r->query.data, *end = r->query.data + r->query.len;
    while (q < end) {
        const char *e = memchr(q, '&', (size_t)(end - q));
        e = e ? e : end;
        const char *eq = memchr(q, '=', (size_t)(e - q));
        char *name = url_decode(q, eq ? (size_t)(eq - q) : (size_t)(e - q));
        char *val = eq ? url_decode(eq + 1, (size_t)(e - eq - 1)) : md_xstrdup("");
        if (strcmp(name, "count") == 0)
            count = strtol(val, NULL, 10);
        else if (strcmp(name, "offset") == 0)
            offset = strtol(val, NULL, 10);
        else if (strcmp(name, "messagestream") == 0 && !stream)
            stream = md_xstrdup(val);
        else if (strncmp(name, "metadata_", 9) == 0 && !mkey) {
            mkey = md_xstrdup(name + 9);
            mval = md_xstrdup(val);
        }
        free(name);
        free(val);
        q = e + 1;
    }
    const char *result = "search";
    if (count < 1 || count > 500 || offset < 0 || count + offset > 10000) {
        postmark_error(rs, 422, 300,
                       "The 'count' and 'offset' parameters are required: count 1 to 500, count + "
                       "offset at most 10000.");
        *err = "bad count or offset";
        result = "rejected";
    } else {
        json_t *list = json_array();
        long total = 0;
        for (size_t i = 0; i < M.pm_n; i++) {
            json_t *m = M.pm_sent[(M.pm_next + PM_SEARCH_KEEP - 1 - i) % PM_SEARCH_KEEP];
            if (strcmp(jstr(m, "MessageStream"), stream ? stream : "outbound") != 0)
                continue;
            if (mkey) {
                const char *v = jstr(json_object_get(m, "Metadata"), mkey);
                if (!v || strcmp(v, mval) != 0)
                    continue;
            }
            if (total >= offset && total < offset + count)
                json_array_append(list, m);
            total++;
        }
        resp_json(rs, 200,
                  json_pack("{s:I,s:o}", "TotalCount", (json_int_t)total, "Messages", list));
    }
    free(mkey);
    free(mval);
    free(stream);
    return result;
}

/* --- dispatch of one ESP request --------------------------------------------------- */

static int
provider_of(md_str_t path, md_str_t *domain, bool *batch, bool *search)
{
    *batch = *search = false;
    if (view_is(path, "/messages/outbound")) {
        *search = true;
        return P_POSTMARK;
    }
    if (view_is(path, "/v2/email/outbound-emails"))
        return P_SES;
    if (view_is(path, "/v3/mail/send"))
        return P_SENDGRID;
    if (view_is(path, "/email"))
        return P_POSTMARK;
    if (view_is(path, "/email/batch")) {
        *batch = true;
        return P_POSTMARK;
    }
    if (path.len > 13 && memcmp(path.data, "/v3/", 4) == 0 &&
        memcmp(path.data + path.len - 9, "/messages", 9) == 0) {
        domain->data = path.data + 4;
        domain->len = path.len - 13;
        if (domain->len && !memchr(domain->data, '/', domain->len))
            return P_MAILGUN;
    }
    return -1;
}

static void
esp_request(req_t *r, resp_t *rs, unsigned *delay_ms)
{
    md_str_t domain = {0, NULL};
    bool batch, search;
    int p = provider_of(r->path, &domain, &batch, &search);
    if (p < 0) {
        resp_json(rs, 404, json_pack("{s:s}", "message", "Not Found"));
        return;
    }
    conn_t *c = r->c;
    if (!(c->providers_seen & (1u << p))) {
        c->providers_seen |= 1u << p;
        M.stats[p].connections++;
    }
    M.stats[p].requests++;
    if (batch)
        M.stats[p].batch_requests++;
    fault_t *f = &M.faults[p];
    json_t *rec = record_new(r, p);
    if (f->active) {
        *delay_ms = f->latency_ms;
        bool hit =
            (f->status || f->reset || f->hang) && f->count != 0 && fault_hits(f, f->rate, &f->acc);
        if (hit) {
            if (f->count > 0 && --f->count == 0)
                f->active = f->latency_ms || f->reject_rate > 0 || f->close;
            M.stats[p].failed++;
            const char *what = f->hang ? "hang" : f->reset ? "reset" : "status";
            rs->act = f->hang ? ACT_HANG : f->reset ? ACT_RESET : ACT_SEND;
            if (rs->act == ACT_SEND)
                fault_answer(p, f, rs);
            record_finish(rec, rs->act == ACT_SEND ? rs : NULL, "failed", what, NULL, NULL, NULL);
            record_add(rec);
            if (M.verbose)
                mlog("%s: injected %s", provider_names[p], what);
            return;
        }
        if (f->close) {
            rs->act = ACT_SEND_CLOSE;
            rs->silent_close = true;
        }
    }
    const char *err = NULL, *outcome;
    char *mid = NULL, *hid = NULL, *pid = NULL;
    switch (p) {
    case P_SES:
        outcome = handle_ses(r, rs, rec, f, &err, &mid, &hid, &pid);
        break;
    case P_SENDGRID:
        outcome = handle_sendgrid(r, rs, rec, f, &err, &mid, &hid, &pid);
        break;
    case P_POSTMARK:
        outcome = search ? handle_postmark_search(r, rs, &err)
                         : handle_postmark(r, rs, rec, f, &err, &mid, &hid, &pid, batch);
        break;
    default:
        outcome = handle_mailgun(r, domain, rs, rec, f, &err, &mid, &hid, &pid);
        break;
    }
    if (strcmp(outcome, "accepted") == 0)
        M.stats[p].accepted++;
    else if (strcmp(outcome, "rejected") == 0)
        M.stats[p].rejected++;
    if (!err && rs->status >= 400 && rs->body.pos)
        err = "refused";
    record_finish(rec, rs, outcome, err, mid, hid, pid);
    record_add(rec);
    if (M.verbose)
        mlog("%s %.*s -> %d %s id=%s", provider_names[p], (int)r->path.len, r->path.data,
             rs->status, outcome, mid ? mid : "-");
    free(mid);
    free(hid);
    free(pid);
}

/* --- control API ------------------------------------------------------------------- */

static json_t *
stats_json(void)
{
    json_t *j = json_object();
    for (int p = 0; p < P_COUNT; p++) {
        pstats_t *s = &M.stats[p];
        json_object_set_new(
            j, provider_names[p],
            json_pack("{s:I,s:I,s:I,s:I,s:I,s:I}", "accepted", (json_int_t)s->accepted, "rejected",
                      (json_int_t)s->rejected, "failed", (json_int_t)s->failed, "messages",
                      (json_int_t)s->messages, "connections", (json_int_t)s->connections,
                      "requests", (json_int_t)s->requests));
        if (p == P_POSTMARK)
            json_object_update_new(
                json_object_get(j, provider_names[p]),
                json_pack("{s:I,s:I,s:I,s:I}", "batch_requests", (json_int_t)s->batch_requests,
                          "batch_messages", (json_int_t)s->batch_messages, "batch_max",
                          (json_int_t)s->batch_max, "searches", (json_int_t)s->searches));
    }
    json_object_set_new(j, "tls",
                        json_pack("{s:I,s:I,s:I,s:I}", "accepted", (json_int_t)M.tls_accepted,
                                  "handshake_failed", (json_int_t)M.tls_handshake_failed, "resumed",
                                  (json_int_t)M.tls_resumed, "open", (json_int_t)M.tls_open));
    return j;
}

static json_t *
faults_json(void)
{
    json_t *j = json_object();
    for (int p = 0; p < P_COUNT; p++) {
        fault_t *f = &M.faults[p];
        if (!f->active) {
            json_object_set_new(j, provider_names[p], json_null());
            continue;
        }
        json_object_set_new(
            j, provider_names[p],
            json_pack("{s:i,s:f,s:f,s:i,s:i,s:b,s:b,s:b,s:b,s:I}", "status", f->status, "rate",
                      f->rate, "reject_rate", f->reject_rate, "latency_ms", (int)f->latency_ms,
                      "retry_after", (int)f->retry_after, "reset", f->reset, "hang", f->hang,
                      "close", f->close, "random", f->random, "count", (json_int_t)f->count));
    }
    return j;
}

static double
jnum(json_t *o, const char *k, double dflt, bool *bad)
{
    json_t *v = json_object_get(o, k);
    if (!v || json_is_null(v))
        return dflt;
    if (!json_is_number(v)) {
        *bad = true;
        return dflt;
    }
    return json_number_value(v);
}

static bool
jbool(json_t *o, const char *k, bool *bad)
{
    json_t *v = json_object_get(o, k);
    if (!v || json_is_null(v))
        return false;
    if (!json_is_boolean(v)) {
        *bad = true;
        return false;
    }
    return json_is_true(v);
}

static void
ctl_error(resp_t *rs, int status, const char *code, const char *msg)
{
    resp_json(rs, status, json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", msg));
}

static void
ctl_set_faults(const req_t *r, resp_t *rs)
{
    json_error_t je;
    json_t *j = body_json(r, &je);
    if (!json_is_object(j)) {
        json_decref(j);
        ctl_error(rs, 400, "invalid_json", "body must be a JSON object");
        return;
    }
    char prov[32];
    snprintf(prov, sizeof(prov), "%s", jstr(j, "provider") ? jstr(j, "provider") : "*");
    int which = -2;
    if (strcmp(prov, "*") == 0)
        which = -1;
    for (int p = 0; p < P_COUNT; p++)
        if (strcmp(prov, provider_names[p]) == 0)
            which = p;
    bool bad = which == -2;
    fault_t f = {.active = true};
    f.status = (int)jnum(j, "status", 0, &bad);
    f.rate = jnum(j, "rate", 1.0, &bad);
    f.reject_rate = jnum(j, "reject_rate", 0, &bad);
    f.latency_ms = (unsigned)jnum(j, "latency_ms", 0, &bad);
    f.retry_after = (unsigned)jnum(j, "retry_after", 0, &bad);
    f.count = (long)jnum(j, "count", -1, &bad);
    f.reset = jbool(j, "reset", &bad);
    f.hang = jbool(j, "hang", &bad);
    f.close = jbool(j, "close", &bad);
    f.random = jbool(j, "random", &bad);
    json_decref(j);
    if (bad || (f.status && (f.status < 100 || f.status > 599)) || f.rate < 0 || f.rate > 1 ||
        f.reject_rate < 0 || f.reject_rate > 1) {
        ctl_error(rs, 400, "invalid_fault",
                  "provider must be ses, sendgrid, postmark, mailgun or *; status 100-599; rates "
                  "in [0,1]; booleans for reset, hang, close, random");
        return;
    }
    if (f.count == 0)
        f.count = -1;
    for (int p = 0; p < P_COUNT; p++)
        if (which == -1 || which == p)
            M.faults[p] = f;
    mlog("faults set for %s: status=%d rate=%.2f latency_ms=%u retry_after=%u reset=%d hang=%d "
         "reject_rate=%.2f",
         prov, f.status, f.rate, f.latency_ms, f.retry_after, f.reset, f.hang, f.reject_rate);
    resp_json(rs, 200, faults_json());
}

static void
ctl_requests(const req_t *r, resp_t *rs)
{
    char prov[32] = "";
    long limit = (long)M.keep;
    char *q = view_dup(r->query);
    for (char *tok = strtok(q, "&"); tok; tok = strtok(NULL, "&")) {
        if (strncmp(tok, "provider=", 9) == 0)
            snprintf(prov, sizeof(prov), "%s", tok + 9);
        else if (strncmp(tok, "limit=", 6) == 0)
            limit = strtol(tok + 6, NULL, 10);
    }
    free(q);
    json_t *a = json_array();
    /* Newest first while collecting, then reversed: the answer is oldest first. */
    for (size_t i = 0; i < M.nrec && (long)json_array_size(a) < limit; i++) {
        size_t idx = (M.rec_next + M.keep - 1 - i) % M.keep;
        json_t *rec = M.records[idx];
        if (!rec)
            continue;
        if (*prov && strcmp(jstr(rec, "provider"), prov) != 0)
            continue;
        json_array_insert(a, 0, rec);
    }
    resp_json(rs, 200, json_pack("{s:o}", "requests", a));
}

static void
ctl_request(req_t *r, resp_t *rs)
{
    M.ctl_requests++;
    bool get = view_is(r->method, "GET"), post = view_is(r->method, "POST"),
         del = view_is(r->method, "DELETE");
    if (view_is(r->path, "/_mock/stats") && get) {
        resp_json(rs, 200, stats_json());
    } else if (view_is(r->path, "/_mock/health") && get) {
        resp_json(rs, 200, json_pack("{s:b}", "ok", 1));
    } else if (view_is(r->path, "/_mock/faults") && get) {
        resp_json(rs, 200, faults_json());
    } else if (view_is(r->path, "/_mock/faults") && post) {
        ctl_set_faults(r, rs);
    } else if (view_is(r->path, "/_mock/faults") && del) {
        memset(M.faults, 0, sizeof(M.faults));
        mlog("faults cleared");
        resp_json(rs, 200, faults_json());
    } else if (view_is(r->path, "/_mock/requests") && get) {
        ctl_requests(r, rs);
    } else if (view_is(r->path, "/_mock/requests") && del) {
        records_clear();
        resp_json(rs, 200, json_pack("{s:b}", "ok", 1));
    } else if (view_is(r->path, "/_mock/reset") && post) {
        records_clear();
        postmark_forget_all();
        memset(M.faults, 0, sizeof(M.faults));
        memset(M.stats, 0, sizeof(M.stats));
        M.tls_accepted = M.tls_handshake_failed = M.tls_resumed = 0;
        resp_json(rs, 200, json_pack("{s:b}", "ok", 1));
    } else {
        ctl_error(rs, 404, "not_found", "no such control endpoint");
    }
}

/* --- connections ------------------------------------------------------------------- */

static void conn_close(conn_t *c, bool reset);
static int conn_process(conn_t *c);

/* Writes as much of c->out as the socket takes. Returns -1 when c was closed. */
static int
conn_flush(conn_t *c)
{
    if (c->timer_is_delay) /* the answer waits for its latency fault */
        return 0;
    while (md_buf_len(&c->out)) {
        ssize_t n;
        if (c->ssl) {
            ERR_clear_error();
            int w =
                SSL_write(c->ssl, c->out.pos, (int)md_min(md_buf_len(&c->out), (size_t)1 << 20));
            if (w <= 0) {
                int e = SSL_get_error(c->ssl, w);
                if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
                    ev_io_start(M.loop, &c->wio);
                    return 0;
                }
                conn_close(c, false);
                return -1;
            }
            n = w;
        } else {
            n = write(c->fd, c->out.pos, md_buf_len(&c->out));
            if (n < 0) {
                if (errno == EAGAIN || errno == EINTR) {
                    ev_io_start(M.loop, &c->wio);
                    return 0;
                }
                conn_close(c, false);
                return -1;
            }
        }
        c->out.pos += n;
    }
    md_buf_compact(&c->out);
    ev_io_stop(M.loop, &c->wio);
    if (c->close_after && !c->busy) {
        conn_close(c, false);
        return -1;
    }
    return 0;
}

static void
idle_arm(conn_t *c)
{
    ev_timer_stop(M.loop, &c->timer);
    c->timer_is_delay = false;
    if (M.idle_timeout > 0) {
        ev_timer_set(&c->timer, M.idle_timeout, 0);
        ev_timer_start(M.loop, &c->timer);
    }
}

/* Carries out the decided action. Returns -1 when c was closed. */
static int
conn_act(conn_t *c)
{
    c->busy = false;
    switch (c->pending_act) {
    case ACT_RESET:
        conn_close(c, true);
        return -1;
    case ACT_HANG:
        /* Never answer; keep reading (and dropping) so the peer's close frees us. */
        c->busy = c->hung = true;
        ev_timer_stop(M.loop, &c->timer);
        return 0;
    case ACT_SEND_CLOSE:
        c->close_after = true; /* fallthrough */
    default:
        break;
    }
    if (conn_flush(c) < 0)
        return -1;
    idle_arm(c);
    return 0;
}

static void
timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    md_unused(loop);
    md_unused(revents);
    conn_t *c = w->data;
    if (!c->timer_is_delay) {
        if (!c->busy) /* idle keep-alive connection: close it like a server would */
            conn_close(c, false);
        return;
    }
    c->timer_is_delay = false;
    if (conn_act(c) < 0)
        return;
    conn_process(c);
}

/* Builds the answer to the complete request in the connection's parser state. */
static int
conn_handle(conn_t *c)
{
    req_t *r = md_xcalloc(1, sizeof(req_t));
    r->c = c;
    const char *hb = c->hb.start;
    r->method.data = llhttp_method_name((llhttp_method_t)c->parser.method);
    r->method.len = strlen(r->method.data);
    md_str_t target = {c->url_len, hb};
    const char *q = memchr(target.data, '?', target.len);
    r->path.data = target.data;
    r->path.len = q ? (size_t)(q - target.data) : target.len;
    r->query.data = q ? q + 1 : target.data + target.len;
    r->query.len = q ? target.len - r->path.len - 1 : 0;
    r->nh = c->nh;
    for (unsigned i = 0; i < c->nh; i++) {
        r->h[i].name = (md_str_t){c->hs[i].nlen, hb + c->hs[i].noff};
        r->h[i].value = (md_str_t){c->hs[i].vlen, hb + c->hs[i].voff};
    }
    r->body = (md_str_t){md_buf_len(&c->body), c->body.pos ? c->body.pos : ""};
    r->keepalive = llhttp_should_keep_alive(&c->parser);

    resp_t rs;
    resp_init(&rs);
    unsigned delay = 0;
    if (c->too_many_headers) {
        rs.status = 431;
        md_buf_append_str(&rs.body, "{\"message\":\"too many headers\"}");
        rs.act = ACT_SEND_CLOSE;
    } else if (c->too_big) {
        rs.status = 413;
        md_buf_append_str(&rs.body, "{\"message\":\"request entity too large\"}");
        rs.act = ACT_SEND_CLOSE;
    } else if (c->control) {
        ctl_request(r, &rs);
    } else {
        esp_request(r, &rs, &delay);
    }
    if (!r->keepalive && rs.act == ACT_SEND)
        rs.act = ACT_SEND_CLOSE;
    if (rs.act == ACT_SEND || rs.act == ACT_SEND_CLOSE) {
        bool close = rs.act == ACT_SEND_CLOSE;
        md_buf_printf(&c->out, "HTTP/1.1 %d %s\r\n", rs.status, status_text(rs.status));
        if (rs.ctype)
            md_buf_printf(&c->out, "Content-Type: %s\r\n", rs.ctype);
        md_buf_printf(&c->out, "Content-Length: %zu\r\n", md_buf_len(&rs.body));
        /* The "close" fault drops the connection without saying so, as a server
         * whose idle timer fires right after an answer does. */
        if (close && !rs.silent_close)
            md_buf_append_str(&c->out, "Connection: close\r\n");
        md_buf_append(&c->out, rs.hdrs.pos, md_buf_len(&rs.hdrs));
        md_buf_append(&c->out, "\r\n", 2);
        md_buf_append(&c->out, rs.body.pos, md_buf_len(&rs.body));
    }
    c->pending_act = rs.act;
    resp_free(&rs);
    free(r);
    md_buf_reset(&c->body);
    if (delay) {
        c->busy = true;
        c->timer_is_delay = true;
        ev_timer_stop(M.loop, &c->timer);
        ev_timer_set(&c->timer, delay / 1000.0, 0);
        ev_timer_start(M.loop, &c->timer);
        return 0;
    }
    return conn_act(c);
}

/* Parses buffered input, one request at a time. Returns -1 when c was closed. */
static int
conn_process(conn_t *c)
{
    while (!c->busy && md_buf_len(&c->in)) {
        llhttp_errno_t err = llhttp_execute(&c->parser, c->in.pos, md_buf_len(&c->in));
        if (err == HPE_OK) {
            c->in.pos = c->in.last;
            break;
        }
        if (err == HPE_PAUSED) {
            c->in.pos = (char *)llhttp_get_error_pos(&c->parser);
            llhttp_resume(&c->parser);
            if (conn_handle(c) < 0)
                return -1;
            continue;
        }
        mlog("bad request from peer: %s", llhttp_errno_name(err));
        md_buf_append_str(&c->out, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: "
                                   "close\r\n\r\n");
        c->close_after = true;
        c->in.pos = c->in.last;
        return conn_flush(c);
    }
    md_buf_compact(&c->in);
    if (c->eof && !c->busy) {
        conn_close(c, false);
        return -1;
    }
    return conn_flush(c);
}

/* Advances the TLS handshake. Returns -1 when c was closed (failed handshake). */
static int
conn_handshake(conn_t *c)
{
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        c->handshaken = true;
        M.tls_accepted++;
        if (SSL_session_reused(c->ssl))
            M.tls_resumed++;
        const char *sn = SSL_get_servername(c->ssl, TLSEXT_NAMETYPE_host_name);
        snprintf(c->sni, sizeof(c->sni), "%s", sn ? sn : "");
        ev_io_stop(M.loop, &c->wio);
        return 0;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ) {
        ev_io_stop(M.loop, &c->wio);
        return 0;
    }
    if (e == SSL_ERROR_WANT_WRITE) {
        ev_io_start(M.loop, &c->wio);
        return 0;
    }
    unsigned long le = ERR_peek_error();
    char eb[256] = "peer closed";
    if (le)
        ERR_error_string_n(le, eb, sizeof(eb));
    M.tls_handshake_failed++;
    mlog("TLS handshake failed: %s", eb);
    conn_close(c, false);
    return -1;
}

static void
conn_read(conn_t *c)
{
    for (;;) {
        md_buf_reserve(&c->in, 16384);
        ssize_t n;
        if (c->ssl) {
            ERR_clear_error();
            int rd = SSL_read(c->ssl, c->in.last, (int)md_buf_avail(&c->in));
            if (rd <= 0) {
                int e = SSL_get_error(c->ssl, rd);
                if (e == SSL_ERROR_WANT_READ)
                    break;
                if (e == SSL_ERROR_WANT_WRITE) {
                    ev_io_start(M.loop, &c->wio);
                    break;
                }
                c->eof = true;
                break;
            }
            n = rd;
        } else {
            n = read(c->fd, c->in.last, md_buf_avail(&c->in));
            if (n < 0) {
                if (errno == EAGAIN || errno == EINTR)
                    break;
                c->eof = true;
                break;
            }
            if (n == 0) {
                c->eof = true;
                break;
            }
        }
        if (c->hung) /* a hung request drops everything the peer sends */
            continue;
        c->in.last += n;
        if (md_buf_len(&c->in) > MAX_BODY + 65536) {
            conn_close(c, false);
            return;
        }
    }
    if (c->hung) {
        if (c->eof)
            conn_close(c, false);
        return;
    }
    if (c->eof && c->busy) {
        /* The peer gave up while we delayed the answer. */
        conn_close(c, false);
        return;
    }
    if (!c->busy && !c->timer_is_delay)
        idle_arm(c);
    conn_process(c);
}

static void
conn_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    md_unused(loop);
    md_unused(revents);
    conn_t *c = w->data;
    if (c->ssl && !c->handshaken) {
        if (conn_handshake(c) < 0 || !c->handshaken)
            return;
    }
    if (w == &c->wio) {
        if (conn_flush(c) < 0)
            return;
        if (c->ssl && SSL_pending(c->ssl) == 0)
            return;
    }
    conn_read(c);
}

static void
conn_close(conn_t *c, bool reset)
{
    ev_io_stop(M.loop, &c->rio);
    ev_io_stop(M.loop, &c->wio);
    ev_timer_stop(M.loop, &c->timer);
    if (reset) {
        struct linger lg = {1, 0};
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    } else if (c->ssl && c->handshaken) {
        SSL_shutdown(c->ssl); /* one close_notify, no wait for the peer's */
    }
    if (c->ssl) {
        SSL_free(c->ssl);
        M.tls_open--;
    }
    if (c->prev)
        c->prev->next = c->next;
    else
        conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    close(c->fd);
    md_buf_free(&c->in);
    md_buf_free(&c->out);
    md_buf_free(&c->hb);
    md_buf_free(&c->body);
    free(c);
}

/* --- llhttp callbacks -------------------------------------------------------------- */

static int
on_message_begin(llhttp_t *p)
{
    conn_t *c = p->data;
    md_buf_reset(&c->hb);
    md_buf_reset(&c->body);
    c->url_len = 0;
    c->nh = 0;
    c->in_field = c->in_value = false;
    c->too_many_headers = c->too_big = false;
    return 0;
}

static int
on_url(llhttp_t *p, const char *at, size_t len)
{
    conn_t *c = p->data;
    md_buf_append(&c->hb, at, len);
    c->url_len += len;
    return 0;
}

static int
on_header_field(llhttp_t *p, const char *at, size_t len)
{
    conn_t *c = p->data;
    if (c->nh >= MAX_HEADERS) {
        c->too_many_headers = true;
        return 0;
    }
    if (!c->in_field) {
        c->in_field = true;
        c->hs[c->nh] = (hspan_t){md_buf_len(&c->hb), 0, md_buf_len(&c->hb), 0};
    }
    md_buf_append(&c->hb, at, len);
    c->hs[c->nh].nlen += len;
    return 0;
}

static int
on_header_field_complete(llhttp_t *p)
{
    conn_t *c = p->data;
    c->in_field = false;
    if (c->nh < MAX_HEADERS)
        c->hs[c->nh].voff = md_buf_len(&c->hb);
    return 0;
}

static int
on_header_value(llhttp_t *p, const char *at, size_t len)
{
    conn_t *c = p->data;
    if (c->nh >= MAX_HEADERS)
        return 0;
    if (!c->in_value) {
        c->in_value = true;
        c->hs[c->nh].voff = md_buf_len(&c->hb);
    }
    md_buf_append(&c->hb, at, len);
    c->hs[c->nh].vlen += len;
    return 0;
}

static int
on_header_value_complete(llhttp_t *p)
{
    conn_t *c = p->data;
    c->in_value = false;
    if (c->nh < MAX_HEADERS)
        c->nh++;
    return 0;
}

static int
on_headers_complete(llhttp_t *p)
{
    conn_t *c = p->data;
    for (unsigned i = 0; i < c->nh; i++) {
        md_str_t n = {c->hs[i].nlen, c->hb.start + c->hs[i].noff};
        md_str_t v = {c->hs[i].vlen, c->hb.start + c->hs[i].voff};
        if (md_str_caseeq(n, "expect") && md_str_caseeq(v, "100-continue") && p->http_minor >= 1) {
            /* Flushed after this parse pass; the client waits for it before the body. */
            md_buf_append_str(&c->out, "HTTP/1.1 100 Continue\r\n\r\n");
        }
    }
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > MAX_BODY)
        c->too_big = true;
    return 0;
}

static int
on_body(llhttp_t *p, const char *at, size_t len)
{
    conn_t *c = p->data;
    if (md_buf_len(&c->body) + len > MAX_BODY) {
        c->too_big = true;
        return 0;
    }
    md_buf_append(&c->body, at, len);
    return 0;
}

static int
on_message_complete(llhttp_t *p)
{
    md_unused(p);
    return HPE_PAUSED; /* answer this one before parsing the next */
}

/* --- listeners --------------------------------------------------------------------- */

static void
accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    md_unused(revents);
    bool control = w == &M.ctl_w;
    for (int k = 0; k < 64; k++) {
        int fd = accept4(w->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                mlog("accept: %s", strerror(errno));
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        conn_t *c = md_xcalloc(1, sizeof(conn_t));
        c->m = &M;
        c->fd = fd;
        c->control = control;
        c->next = conns;
        if (conns)
            conns->prev = c;
        conns = c;
        md_buf_init(&c->in);
        md_buf_init(&c->out);
        md_buf_init(&c->hb);
        md_buf_init(&c->body);
        llhttp_init(&c->parser, HTTP_REQUEST, &settings);
        c->parser.data = c;
        ev_io_init(&c->rio, conn_io_cb, fd, EV_READ);
        ev_io_init(&c->wio, conn_io_cb, fd, EV_WRITE);
        ev_init(&c->timer, timer_cb);
        c->rio.data = c->wio.data = c->timer.data = c;
        if (!control) {
            c->ssl = SSL_new(M.ctx);
            SSL_set_fd(c->ssl, fd);
            SSL_set_accept_state(c->ssl);
            M.tls_open++;
        }
        ev_io_start(loop, &c->rio);
        idle_arm(c);
    }
}

static int
listen_on(const char *spec, ev_io *w)
{
    char host[64];
    int port;
    const char *colon = strrchr(spec, ':');
    if (!colon || (size_t)(colon - spec) >= sizeof(host) || (port = atoi(colon + 1)) <= 0 ||
        port > 65535) {
        mlog("bad listen address '%s' (want HOST:PORT)", spec);
        return -1;
    }
    memcpy(host, spec, (size_t)(colon - spec));
    host[colon - spec] = '\0';
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        mlog("bad listen host '%s' (IPv4 only)", host);
        return -1;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 512) < 0) {
        mlog("listen on %s: %s", spec, strerror(errno));
        close(fd);
        return -1;
    }
    ev_io_init(w, accept_cb, fd, EV_READ);
    ev_io_start(M.loop, w);
    return fd;
}

static void
sig_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    md_unused(revents);
    mlog("signal %d: stopping", w->signum);
    ev_break(loop, EVBREAK_ALL);
}

static void
usage(FILE *f)
{
    fprintf(
        f,
        "usage: mock-esp --listen 127.0.0.1:PORT --control 127.0.0.1:PORT --cert F --key F\n"
        "  [--ses-key ID:SECRET]... [--ses-skew SECONDS(300)] [--ses-config-set NAME]...\n"
        "  [--sendgrid-key K]... [--postmark-token T]... [--postmark-stream S]...\n"
        "  [--mailgun-key K]... [--mailgun-domain D]... [--journal F] [--pid-file F]\n"
        "  [--keep N (recent requests kept, 200)] [--idle-timeout SECONDS (75, 0 never)]\n"
        "  [--verbose]\n"
        "ESP paths (TLS): POST /v2/email/outbound-emails (SES v2), POST /v3/mail/send\n"
        "  (SendGrid), POST /email and /email/batch, GET /messages/outbound (Postmark),\n"
        "  POST /v3/DOMAIN/messages\n"
        "  (Mailgun).\n"
        "Control (plain HTTP): GET /_mock/stats, GET|POST|DELETE /_mock/faults,\n"
        "  GET|DELETE /_mock/requests?provider=X&limit=N, POST /_mock/reset, GET /_mock/health.\n"
        "  Fault body: {\"provider\":\"ses|sendgrid|postmark|mailgun|*\",\"status\":500,\n"
        "  \"rate\":1.0,\"latency_ms\":0,\"retry_after\":0,\"reset\":false,\"hang\":false,\n"
        "  \"reject_rate\":0,\"close\":false,\"random\":false,\"count\":0}\n");
}

int
main(int argc, char **argv)
{
    static const struct option opts[] = {{"listen", required_argument, NULL, 'l'},
                                         {"control", required_argument, NULL, 'c'},
                                         {"cert", required_argument, NULL, 'C'},
                                         {"key", required_argument, NULL, 'K'},
                                         {"ses-key", required_argument, NULL, 's'},
                                         {"ses-skew", required_argument, NULL, 'w'},
                                         {"ses-config-set", required_argument, NULL, 'x'},
                                         {"sendgrid-key", required_argument, NULL, 'g'},
                                         {"postmark-token", required_argument, NULL, 'p'},
                                         {"postmark-stream", required_argument, NULL, 'S'},
                                         {"mailgun-key", required_argument, NULL, 'm'},
                                         {"mailgun-domain", required_argument, NULL, 'd'},
                                         {"journal", required_argument, NULL, 'j'},
                                         {"pid-file", required_argument, NULL, 'P'},
                                         {"keep", required_argument, NULL, 'k'},
                                         {"idle-timeout", required_argument, NULL, 'i'},
                                         {"verbose", no_argument, NULL, 'v'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *listen_s = NULL, *control_s = NULL, *cert = NULL, *keyf = NULL, *journal_f = NULL,
               *pid_f = NULL;
    M.ses_skew = 300;
    M.keep = DEFAULT_KEEP;
    M.idle_timeout = 75;
    M.journal_fd = -1;
    int o;
    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (o) {
        case 'l':
            listen_s = optarg;
            break;
        case 'c':
            control_s = optarg;
            break;
        case 'C':
            cert = optarg;
            break;
        case 'K':
            keyf = optarg;
            break;
        case 's': {
            const char *colon = strchr(optarg, ':');
            if (!colon || M.nses_keys == MAX_KEYS) {
                mlog("--ses-key wants ID:SECRET (at most %d)", MAX_KEYS);
                return 2;
            }
            M.ses_keys[M.nses_keys].id = md_xstrndup(optarg, (size_t)(colon - optarg));
            M.ses_keys[M.nses_keys++].secret = md_xstrdup(colon + 1);
            break;
        }
        case 'w':
            M.ses_skew = (unsigned)atoi(optarg);
            break;
#define ADD(list, n)                                                                               \
    do {                                                                                           \
        if ((n) == MAX_KEYS) {                                                                     \
            mlog("too many of one option (at most %d)", MAX_KEYS);                                 \
            return 2;                                                                              \
        }                                                                                          \
        (list)[(n)++] = md_xstrdup(optarg);                                                        \
    } while (0)
        case 'x':
            ADD(M.ses_config_sets, M.nses_config_sets);
            break;
        case 'g':
            ADD(M.sendgrid_keys, M.nsendgrid_keys);
            break;
        case 'p':
            ADD(M.postmark_tokens, M.npostmark_tokens);
            break;
        case 'S':
            ADD(M.postmark_streams, M.npostmark_streams);
            break;
        case 'm':
            ADD(M.mailgun_keys, M.nmailgun_keys);
            break;
        case 'd':
            ADD(M.mailgun_domains, M.nmailgun_domains);
            break;
#undef ADD
        case 'j':
            journal_f = optarg;
            break;
        case 'P':
            pid_f = optarg;
            break;
        case 'k':
            M.keep = (size_t)atol(optarg);
            break;
        case 'i':
            M.idle_timeout = atof(optarg);
            break;
        case 'v':
            M.verbose = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!listen_s || !control_s || !cert || !keyf) {
        usage(stderr);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    M.rng = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32) ^ 0x9e3779b97f4a7c15ULL;
    M.records = md_xcalloc(M.keep ? M.keep : 1, sizeof(json_t *));

    M.ctx = SSL_CTX_new(TLS_server_method());
    SSL_CTX_set_min_proto_version(M.ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(M.ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_session_id_context(M.ctx, (const unsigned char *)"mock-esp", 8);
    if (SSL_CTX_use_certificate_chain_file(M.ctx, cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(M.ctx, keyf, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(M.ctx) != 1) {
        char eb[256];
        ERR_error_string_n(ERR_get_error(), eb, sizeof(eb));
        mlog("cannot load certificate %s / key %s: %s", cert, keyf, eb);
        return 1;
    }
    if (journal_f) {
        M.journal_fd = open(journal_f, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (M.journal_fd < 0) {
            mlog("cannot open journal %s: %s", journal_f, strerror(errno));
            return 1;
        }
    }

    llhttp_settings_init(&settings);
    settings.on_message_begin = on_message_begin;
    settings.on_url = on_url;
    settings.on_header_field = on_header_field;
    settings.on_header_field_complete = on_header_field_complete;
    settings.on_header_value = on_header_value;
    settings.on_header_value_complete = on_header_value_complete;
    settings.on_headers_complete = on_headers_complete;
    settings.on_body = on_body;
    settings.on_message_complete = on_message_complete;

    M.loop = ev_default_loop(EVFLAG_AUTO);
    M.tls_fd = listen_on(listen_s, &M.tls_w);
    M.ctl_fd = listen_on(control_s, &M.ctl_w);
    if (M.tls_fd < 0 || M.ctl_fd < 0)
        return 1;
    ev_signal_init(&M.sigterm, sig_cb, SIGTERM);
    ev_signal_init(&M.sigint, sig_cb, SIGINT);
    ev_signal_start(M.loop, &M.sigterm);
    ev_signal_start(M.loop, &M.sigint);
    if (pid_f) {
        FILE *pf = fopen(pid_f, "w");
        if (!pf) {
            mlog("cannot write pid file %s: %s", pid_f, strerror(errno));
            return 1;
        }
        fprintf(pf, "%d\n", (int)getpid());
        fclose(pf);
    }
    mlog("listening: TLS %s, control %s (ses keys %u, sendgrid %u, postmark %u, mailgun %u, "
         "domains %u)",
         listen_s, control_s, M.nses_keys, M.nsendgrid_keys, M.npostmark_tokens, M.nmailgun_keys,
         M.nmailgun_domains);
    ev_run(M.loop, 0);

    /* Connections still open are dropped with the process; the journal is
     * already on disk line by line. */
    while (conns)
        conn_close(conns, false);
    if (pid_f)
        unlink(pid_f);
    if (M.journal_fd >= 0)
        close(M.journal_fd);
    close(M.tls_fd);
    close(M.ctl_fd);
    records_clear();
    free(M.records);
    postmark_forget_all();
    free(M.pm_sent);
    SSL_CTX_free(M.ctx);
    mlog("stopped");
    return 0;
}
