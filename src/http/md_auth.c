/*
 * Identity (see md_auth.h): admin token check, tenant key authentication with a
 * per-worker cache invalidated over Redis pub/sub, and batched last_used_at.
 *
 * The module's state is one md_auth_t per worker, reachable through app->auth
 * and the file-static `auth` below. Store callbacks and pub/sub messages find it
 * through `auth` (NULL once destroyed), never through a pointer they were handed,
 * because md_app destroys the clients (running their owed callbacks) before this
 * module.
 */
#include "md_auth.h"
#include "md_broadcast.h"
#include "md_digest.h"
#include "md_list.h"
#include "md_log.h"
#include "md_pg.h"
#include "md_redis.h"
#include "md_tenants.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define AUTH_CACHE_TTL     60.0 /* seconds an authenticated key is trusted without a lookup */
#define AUTH_CACHE_MAX     8192 /* entries; the least recently used goes first */
#define AUTH_CACHE_BUCKETS 4096 /* power of two */
#define TOUCH_INTERVAL     2.0  /* seconds between last_used_at flushes */
#define TOUCH_SLOTS        2048 /* open-addressing set of key ids, power of two */
#define TOUCH_MAX          1024 /* flush early when this many distinct keys wait */
#define ADMIN_TOKEN_MAX    4096

typedef struct auth_entry_s auth_entry_t;

struct auth_entry_s {
    unsigned char hash[32];
    auth_entry_t *hnext; /* bucket chain */
    md_list_t lru;       /* on md_auth_t.lru, most recently used first */
    double expires;
    char key_id[MD_UUID_STRLEN + 1];
    char tenant_id[MD_UUID_STRLEN + 1];
    /* One allocation holding the four strings below, each NUL-terminated. */
    char *strs;
    const char *tenant_name, *key_name, *key_prefix, *key_created_at;
    unsigned tracking;
};

struct md_auth_s {
    md_app_t *app;
    struct ev_loop *loop;

    bool admin_set;
    unsigned char admin_hash[32]; /* SHA-256 of the admin token; the token is not kept */

    auth_entry_t *buckets[AUTH_CACHE_BUCKETS];
    md_list_t lru; /* cache entries, most recently used first */
    size_t nentries;
    /* Bumped on every invalidation: a lookup that started before one may have
     * read a row revoked since, so its answer is used but not cached. */
    uint64_t gen;

    char (*touch)[MD_UUID_STRLEN + 1]; /* TOUCH_SLOTS slots, "" when free */
    size_t ntouch;
    bool touch_inflight;
    ev_timer touch_timer;
};

static md_auth_t *auth;

/* --- small helpers ------------------------------------------------------------ */

static void
sha256(const void *data, size_t n, unsigned char out[32])
{
    if (md_sha256(data, n, out) != MD_OK) {
        /* Cannot happen with the default provider. Fail closed: random bytes
         * match neither the admin token's digest nor any stored key. */
        if (md_random_bytes(out, 32) != MD_OK)
            memset(out, 0xa5, 32);
    }
}

static bool
unhex32(const char *s, size_t n, unsigned char out[32])
{
    if (n != 64)
        return false;
    for (size_t i = 0; i < 32; i++) {
        int hi = md_hexval(s[2 * i]), lo = md_hexval(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    return true;
}

/* Calls fn for each 64-hex-digit hash in a space-separated list. */
static void
each_hash(const char *s, size_t n, void (*fn)(md_auth_t *a, const unsigned char h[32]),
          md_auth_t *a)
{
    const char *p = s, *end = s + n;
    while (p < end) {
        while (p < end && *p == ' ')
            p++;
        const char *w = p;
        while (p < end && *p != ' ')
            p++;
        unsigned char h[32];
        if (p > w && unhex32(w, (size_t)(p - w), h))
            fn(a, h);
    }
}

/* --- the cache ------------------------------------------------------------------ */

static size_t
bucket_of(const unsigned char h[32])
{
    /* h is a SHA-256 digest: any of its bits is as good as a hash function. */
    size_t v;
    memcpy(&v, h, sizeof(v));
    return v & (AUTH_CACHE_BUCKETS - 1);
}

static void
entry_remove(md_auth_t *a, auth_entry_t *e)
{
    auth_entry_t **pp = &a->buckets[bucket_of(e->hash)];
    while (*pp && *pp != e)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = e->hnext;
    md_list_remove(&e->lru);
    a->nentries--;
    free(e->strs);
    free(e);
}

/* The live entry for h, or NULL (an expired one is dropped on the way). */
static auth_entry_t *
cache_find(md_auth_t *a, const unsigned char h[32])
{
    for (auth_entry_t *e = a->buckets[bucket_of(h)]; e; e = e->hnext) {
        if (CRYPTO_memcmp(e->hash, h, 32) != 0)
            continue;
        if (e->expires <= ev_now(a->loop)) {
            entry_remove(a, e);
            return NULL;
        }
        md_list_remove(&e->lru);
        md_list_insert_head(&a->lru, &e->lru);
        return e;
    }
    return NULL;
}

static void
cache_drop(md_auth_t *a, const unsigned char h[32])
{
    for (auth_entry_t *e = a->buckets[bucket_of(h)]; e; e = e->hnext)
        if (CRYPTO_memcmp(e->hash, h, 32) == 0) {
            entry_remove(a, e);
            return;
        }
}

static void
cache_flush(md_auth_t *a)
{
    for (md_list_t *n; (n = md_list_first(&a->lru)) != NULL;)
        entry_remove(a, md_list_data(n, auth_entry_t, lru));
}

static void
cache_put(md_auth_t *a, const unsigned char h[32], const md_identity_t *who)
{
    cache_drop(a, h);
    for (md_list_t *n; a->nentries >= AUTH_CACHE_MAX && (n = md_list_last(&a->lru)) != NULL;)
        entry_remove(a, md_list_data(n, auth_entry_t, lru));
    const char *src[4] = {who->tenant_name, who->key_name, who->key_prefix, who->key_created_at};
    size_t len[4], total = 0;
    for (int i = 0; i < 4; i++) {
        len[i] = strlen(src[i] ? src[i] : "");
        total += len[i] + 1;
    }
    auth_entry_t *e = md_xcalloc(1, sizeof(*e));
    md_list_init(&e->lru);
    e->strs = md_xmalloc(total);
    const char **dst[4] = {&e->tenant_name, &e->key_name, &e->key_prefix, &e->key_created_at};
    char *p = e->strs;
    for (int i = 0; i < 4; i++) {
        memcpy(p, src[i] ? src[i] : "", len[i] + 1);
        *dst[i] = p;
        p += len[i] + 1;
    }
    memcpy(e->hash, h, 32);
    memcpy(e->key_id, who->key_id, sizeof(e->key_id));
    memcpy(e->tenant_id, who->tenant_id, sizeof(e->tenant_id));
    e->tracking = who->tracking;
    e->expires = ev_now(a->loop) + AUTH_CACHE_TTL;
    size_t b = bucket_of(h);
    e->hnext = a->buckets[b];
    a->buckets[b] = e;
    md_list_insert_head(&a->lru, &e->lru);
    a->nentries++;
}

/* The cache answers only while no revocation can have been missed. */
static bool
cache_trusted(const md_auth_t *a)
{
    return a->app && a->app->redis && md_redis_subscribed(a->app->redis);
}

static void
drop_one(md_auth_t *a, const unsigned char h[32])
{
    cache_drop(a, h);
}

/* --- revocations over pub/sub --------------------------------------------------- */

static void
on_revoked_msg(void *ctx, const char *payload, size_t len)
{
    md_unused(ctx);
    md_auth_t *a = auth;
    if (a == NULL)
        return;
    a->gen++;
    each_hash(payload, md_broadcast_body(payload, len), drop_one, a);
    md_broadcast_applied(a->app ? a->app->redis : NULL, payload, len);
}

static void
on_resubscribe(void *ctx)
{
    md_unused(ctx);
    md_auth_t *a = auth;
    if (a == NULL)
        return;
    /* Revocations published while we were not subscribed are lost: start over. */
    a->gen++;
    if (a->nentries)
        md_logf(MD_LOG_INFO, 0, MD_LOG_FIELDS(MD_LI("entries", a->nentries)),
                "revocation channel subscribed, auth cache flushed");
    cache_flush(a);
}

int
md_auth_revoked(const char *hashes, void (*done)(void *ctx), void *ctx)
{
    md_auth_t *a = auth;
    if (a == NULL || hashes == NULL || hashes[0] == '\0')
        return MD_OK;
    size_t len = strlen(hashes);
    a->gen++;
    each_hash(hashes, len, drop_one, a);
    /* Kept until Redis takes it when it cannot now (md_broadcast_or_keep). The
     * other workers fall back to PostgreSQL while their subscription is down, and
     * their cache entries expire within AUTH_CACHE_TTL in any case. */
    if (a->app && md_broadcast_or_keep(a->app->redis, a->loop, MD_AUTH_CHANNEL, hashes, len, done,
                                       ctx) == MD_OK)
        return MD_AGAIN;
    return MD_OK;
}

/* --- last_used_at ------------------------------------------------------------------ */

static void touch_add(md_auth_t *a, const char *key_id);

static void
touch_cb(void *ctx, const md_pg_result_t *res)
{
    md_unused(ctx);
    if (res->error)
        md_logf(MD_LOG_INFO, 0,
                MD_LOG_FIELDS(MD_LS("error", res->error),
                              MD_LS("detail", res->message ? res->message : "")),
                "last_used_at update failed, those uses are not recorded");
    if (auth)
        auth->touch_inflight = false;
}

/* Writes the collected key ids in one UPDATE; keeps them when the pool is down.
 * One flush at a time unless force (the last one, at shutdown). */
static void
touch_flush(md_auth_t *a, bool force)
{
    if (a->ntouch == 0 || (a->touch_inflight && !force) || a->app == NULL || a->app->pg == NULL)
        return;
    const char **ids = md_xmalloc(a->ntouch * sizeof(*ids));
    size_t n = 0;
    for (size_t i = 0; i < TOUCH_SLOTS; i++)
        if (a->touch[i][0])
            ids[n++] = a->touch[i];
    int rc = md_keys_touch(a->app->pg, ids, n, touch_cb, NULL);
    free(ids);
    if (rc != MD_OK)
        return; /* retried on the next tick; the set is bounded */
    a->touch_inflight = true;
    memset(a->touch, 0, TOUCH_SLOTS * sizeof(*a->touch));
    a->ntouch = 0;
}

static void
touch_add(md_auth_t *a, const char *key_id)
{
    /* FNV-1a over the id; linear probing. */
    uint32_t h = 2166136261u;
    for (const char *p = key_id; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    for (size_t i = 0; i < TOUCH_SLOTS; i++) {
        char *slot = a->touch[(h + i) & (TOUCH_SLOTS - 1)];
        if (slot[0] == '\0') {
            if (a->ntouch >= TOUCH_MAX) {
                touch_flush(a, false);
                if (a->ntouch >= TOUCH_MAX)
                    return; /* the store is down and the set full: this use is not recorded */
                touch_add(a, key_id);
                return;
            }
            memcpy(slot, key_id, MD_UUID_STRLEN + 1);
            a->ntouch++;
            return;
        }
        if (memcmp(slot, key_id, MD_UUID_STRLEN) == 0)
            return;
    }
}

static void
touch_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    md_unused(loop);
    md_unused(revents);
    md_auth_t *a = t->data;
    touch_flush(a, false);
}

/* --- admin token ------------------------------------------------------------------- */

static bool
is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v';
}

/* Checks and hashes a candidate admin token (trimmed here); logs why it is
 * refused without ever logging the token. */
static void
admin_set(md_auth_t *a, const char *tok, size_t n, const char *source)
{
    while (n && is_space(tok[0])) {
        tok++;
        n--;
    }
    while (n && is_space(tok[n - 1]))
        n--;
    if (n < MD_AUTH_ADMIN_MIN) {
        md_logf(MD_LOG_ERROR, 0,
                MD_LOG_FIELDS(MD_LS("source", source), MD_LI("length", n),
                              MD_LI("minimum", MD_AUTH_ADMIN_MIN)),
                "admin token is %s, admin routes are disabled", n ? "too short" : "empty");
        return;
    }
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)tok[i] < 0x21 || tok[i] == 0x7f) {
            md_logf(MD_LOG_ERROR, 0, MD_LOG_FIELDS(MD_LS("source", source)),
                    "admin token holds whitespace or control characters, admin routes are "
                    "disabled");
            return;
        }
    sha256(tok, n, a->admin_hash);
    a->admin_set = true;
}

/* Reads conf->admin_token_file once per configuration (startup only: a blocking
 * read of a small local file before the worker serves anything). */
static void
admin_load(md_auth_t *a, const md_conf_t *conf)
{
    if (conf->admin_token_file) {
        const char *path = conf->admin_token_file;
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            md_logf(MD_LOG_ERROR, errno, MD_LOG_FIELDS(MD_LS("file", path)),
                    "cannot open admin_token_file, admin routes are disabled");
            return;
        }
        struct stat st;
        if (fstat(fd, &st) == 0 && (st.st_mode & S_IROTH))
            md_logf(MD_LOG_WARN, 0, MD_LOG_FIELDS(MD_LS("file", path)),
                    "admin_token_file is readable by everyone");
        char buf[ADMIN_TOKEN_MAX + 1];
        size_t n = 0;
        ssize_t got;
        while (n < sizeof(buf) && (got = read(fd, buf + n, sizeof(buf) - n)) != 0) {
            if (got < 0) {
                if (errno == EINTR)
                    continue;
                md_logf(MD_LOG_ERROR, errno, MD_LOG_FIELDS(MD_LS("file", path)),
                        "cannot read admin_token_file, admin routes are disabled");
                close(fd);
                OPENSSL_cleanse(buf, sizeof(buf));
                return;
            }
            n += (size_t)got;
        }
        close(fd);
        if (n > ADMIN_TOKEN_MAX)
            md_logf(MD_LOG_ERROR, 0, MD_LOG_FIELDS(MD_LS("file", path)),
                    "admin_token_file is larger than %d bytes, admin routes are disabled",
                    ADMIN_TOKEN_MAX);
        else
            admin_set(a, buf, n, "admin_token_file");
        OPENSSL_cleanse(buf, sizeof(buf));
        return;
    }
    if (conf->admin_token) {
        admin_set(a, conf->admin_token, strlen(conf->admin_token), "admin_token");
        return;
    }
    md_log(MD_LOG_NOTICE, 0, "no admin token configured, admin routes answer 503");
}

static bool
admin_match(const md_auth_t *a, md_str_t tok)
{
    if (!a->admin_set)
        return false;
    unsigned char h[32];
    sha256(tok.data, tok.len, h);
    /* Digests of equal length: the comparison time says nothing about the token. */
    return CRYPTO_memcmp(h, a->admin_hash, 32) == 0;
}

/* --- request side ------------------------------------------------------------------ */

int
md_auth_bearer(const md_http_request_t *r, md_str_t *token)
{
    const md_str_t *v = md_http_get_header(r, "Authorization");
    if (v == NULL)
        return MD_DECLINED;
    const char *p = v->data, *end = v->data + v->len;
    while (p < end && is_space(*p))
        p++;
    while (end > p && is_space(end[-1]))
        end--;
    if (end - p < 7 || strncasecmp(p, "bearer", 6) != 0 || (p[6] != ' ' && p[6] != '\t'))
        return MD_ERROR;
    p += 7;
    while (p < end && is_space(*p))
        p++;
    if (p == end)
        return MD_ERROR;
    for (const char *q = p; q < end; q++)
        if (is_space(*q))
            return MD_ERROR;
    token->data = p;
    token->len = (size_t)(end - p);
    return MD_OK;
}

bool
md_auth_key_wellformed(md_str_t s)
{
    if (s.len != MD_AUTH_KEY_LEN || memcmp(s.data, MD_AUTH_KEY_PREFIX, 3) != 0)
        return false;
    for (size_t i = 3; i < s.len; i++) {
        char c = s.data[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_'))
            return false;
    }
    return true;
}

int
md_auth_new_key(char secret[MD_AUTH_KEY_LEN + 1], char prefix[MD_AUTH_DISPLAY_PREFIX + 1],
                unsigned char hash[32])
{
    unsigned char raw[MD_AUTH_KEY_RANDOM];
    unsigned char b64[48];
    if (md_random_bytes(raw, sizeof(raw)) != MD_OK)
        return MD_ERROR;
    int n = EVP_EncodeBlock(b64, raw, sizeof(raw)); /* 44 chars, the last one '=' */
    OPENSSL_cleanse(raw, sizeof(raw));
    if (n != 44)
        return MD_ERROR;
    memcpy(secret, MD_AUTH_KEY_PREFIX, 3);
    for (int i = 0; i < 43; i++) {
        char c = (char)b64[i];
        secret[3 + i] = c == '+' ? '-' : c == '/' ? '_' : c;
    }
    secret[MD_AUTH_KEY_LEN] = '\0';
    OPENSSL_cleanse(b64, sizeof(b64));
    memcpy(prefix, secret, MD_AUTH_DISPLAY_PREFIX);
    prefix[MD_AUTH_DISPLAY_PREFIX] = '\0';
    sha256(secret, MD_AUTH_KEY_LEN, hash);
    return MD_OK;
}

static int
unauthorized(md_http_request_t *r, const char *realm, bool invalid, const char *msg)
{
    char h[96];
    snprintf(h, sizeof(h), "Bearer realm=\"%s\"%s", realm,
             invalid ? ", error=\"invalid_token\"" : "");
    md_http_add_header(r, "WWW-Authenticate", h);
    md_http_send_error(r, 401, "unauthorized", "%s", msg);
    return MD_OK;
}

int
md_auth_admin(md_http_request_t *r)
{
    md_auth_t *a = auth;
    if (a == NULL || !a->admin_set) {
        md_http_send_error(r, 503, "admin_not_configured",
                           "no valid admin token is configured (admin_token_file or admin_token)");
        return MD_DECLINED;
    }
    md_str_t tok;
    int rc = md_auth_bearer(r, &tok);
    if (rc == MD_DECLINED) {
        unauthorized(r, "mailerd-admin", false,
                     "admin routes need Authorization: Bearer <admin token>");
        return MD_DECLINED;
    }
    if (rc != MD_OK || !admin_match(a, tok)) {
        unauthorized(r, "mailerd-admin", true,
                     rc == MD_OK && md_auth_key_wellformed(tok)
                         ? "tenant API keys are not accepted on admin routes"
                         : "invalid admin token");
        return MD_DECLINED;
    }
    return MD_OK;
}

/* Copies an identity into r's pool (cache entries may go while r lives on). */
static md_identity_t *
who_dup(md_http_request_t *r, const char *key_id, const char *tenant_id, const char *tenant_name,
        const char *key_name, const char *key_prefix, const char *created, unsigned tracking)
{
    md_identity_t *w = md_pcalloc(r->pool, sizeof(*w));
    memcpy(w->key_id, key_id, MD_UUID_STRLEN);
    memcpy(w->tenant_id, tenant_id, MD_UUID_STRLEN);
    w->tenant_name = md_pstrndup(r->pool, tenant_name, strlen(tenant_name));
    w->key_name = md_pstrndup(r->pool, key_name, strlen(key_name));
    w->key_prefix = md_pstrndup(r->pool, key_prefix, strlen(key_prefix));
    w->key_created_at = md_pstrndup(r->pool, created, strlen(created));
    w->tracking = tracking;
    return w;
}

typedef struct auth_lookup_s {
    md_http_request_t *r;
    md_auth_next_pt next;
    unsigned char hash[32];
    uint64_t gen;
} auth_lookup_t;

static void
lookup_cb(void *ctx, const md_pg_result_t *res)
{
    auth_lookup_t *l = ctx;
    md_http_request_t *r = l->r;
    if (r->aborted) {
        md_http_send(r, 499, NULL, NULL, 0); /* a no-op that drops our reference */
        return;
    }
    if (res->error) {
        if (md_app_store_down(res->error)) {
            md_app_send_store_unavailable(r, "postgres");
            return;
        }
        md_logf(MD_LOG_ERROR, 0,
                MD_LOG_FIELDS(MD_LS("error", res->error),
                              MD_LS("detail", res->message ? res->message : "")),
                "API key lookup failed");
        md_http_send_error(r, 500, "internal_error", "internal error");
        return;
    }
    const PGresult *pr = res->res;
    if (PQntuples(pr) != 1 || PQnfields(pr) < 7) {
        unauthorized(r, "mailerd", true, "unknown or revoked API key");
        return;
    }
    md_identity_t *who =
        who_dup(r, PQgetvalue(pr, 0, 0), PQgetvalue(pr, 0, 1), PQgetvalue(pr, 0, 2),
                PQgetvalue(pr, 0, 3), PQgetvalue(pr, 0, 4), PQgetvalue(pr, 0, 5),
                (unsigned)strtoul(PQgetvalue(pr, 0, 6), NULL, 10));
    md_auth_t *a = auth;
    if (a) {
        if (a->gen == l->gen)
            cache_put(a, l->hash, who);
        touch_add(a, who->key_id);
    }
    /* Our own reference keeps r readable after next() answered it. */
    md_http_request_ref(r);
    int rc = l->next(r, who);
    if (rc != MD_AGAIN && !r->responded) {
        md_log(MD_LOG_ERROR, 0, "tenant handler returned %d without answering", rc);
        md_http_send_error(r, 500, "internal_error", "internal error");
    }
    md_http_request_unref(r);
}

int
md_auth_tenant(md_http_request_t *r, md_auth_next_pt next)
{
    md_auth_t *a = auth;
    md_str_t tok;
    int rc = md_auth_bearer(r, &tok);
    if (rc == MD_DECLINED)
        return unauthorized(r, "mailerd", false,
                            "this route needs Authorization: Bearer <API key>");
    if (rc != MD_OK)
        return unauthorized(r, "mailerd", true, "Authorization must be Bearer <API key>");
    if (!md_auth_key_wellformed(tok)) {
        if (a && admin_match(a, tok))
            return unauthorized(r, "mailerd", true,
                                "the admin token is not accepted here, use a tenant API key");
        return unauthorized(r, "mailerd", true, "malformed API key");
    }
    if (a == NULL || a->app == NULL || a->app->pg == NULL)
        return md_app_send_store_unavailable(r, "postgres");

    unsigned char h[32];
    sha256(tok.data, tok.len, h);
    if (cache_trusted(a)) {
        auth_entry_t *e = cache_find(a, h);
        if (e) {
            md_identity_t *who = who_dup(r, e->key_id, e->tenant_id, e->tenant_name, e->key_name,
                                         e->key_prefix, e->key_created_at, e->tracking);
            touch_add(a, who->key_id);
            return next(r, who);
        }
    }
    auth_lookup_t *l = md_pcalloc(r->pool, sizeof(*l));
    l->r = r;
    l->next = next;
    memcpy(l->hash, h, 32);
    l->gen = a->gen;
    if (md_keys_authenticate(a->app->pg, h, lookup_cb, l) != MD_OK)
        return md_app_send_store_unavailable(r, "postgres");
    return MD_AGAIN;
}

/* --- lifecycle ---------------------------------------------------------------------- */

int
md_auth_app_init(md_app_t *app)
{
    if (auth != NULL)
        return MD_ERROR;
    md_auth_t *a = md_xcalloc(1, sizeof(*a));
    md_list_init(&a->lru);
    a->app = app;
    a->loop = app->loop;
    a->touch = md_xcalloc(TOUCH_SLOTS, sizeof(*a->touch));
    admin_load(a, app->conf);
    if (app->pg && md_tenants_prepare(app->pg) != MD_OK) {
        md_log(MD_LOG_ERROR, 0, "cannot register the identity statements");
        free(a->touch);
        free(a);
        return MD_ERROR;
    }
    if (app->redis && md_redis_subscribe(app->redis, MD_AUTH_CHANNEL, on_revoked_msg,
                                         on_resubscribe, NULL) != MD_OK) {
        md_log(MD_LOG_ERROR, 0, "cannot subscribe to the key revocation channel");
        free(a->touch);
        free(a);
        return MD_ERROR;
    }
    ev_timer_init(&a->touch_timer, touch_timer_cb, TOUCH_INTERVAL, TOUCH_INTERVAL);
    a->touch_timer.data = a;
    ev_timer_start(a->loop, &a->touch_timer);
    ev_unref(a->loop); /* housekeeping must not keep a stopping worker alive */
    app->auth = a;
    auth = a;
    return MD_OK;
}

void
md_auth_app_shutdown(md_app_t *app)
{
    md_auth_t *a = app ? app->auth : NULL;
    if (a == NULL)
        return;
    touch_flush(a, true);
}

void
md_auth_app_destroy(md_app_t *app)
{
    md_auth_t *a = app ? app->auth : NULL;
    if (a == NULL)
        return;
    ev_ref(a->loop);
    ev_timer_stop(a->loop, &a->touch_timer);
    cache_flush(a);
    OPENSSL_cleanse(a->admin_hash, sizeof(a->admin_hash));
    free(a->touch);
    free(a);
    app->auth = NULL;
    auth = NULL;
}
