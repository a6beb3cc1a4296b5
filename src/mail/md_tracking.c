/*
 * tracking { } and the accept-time work of open/click tracking and
 * List-Unsubscribe (md_tracking.h). The token and HTML work is md_track.c's;
 * this file only decides what a message gets and records it.
 */
#include "md_tracking.h"
#include "md_app.h"
#include "md_buf.h"
#include "md_conf.h"
#include "md_log.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MD_CONF_TRACKING 0x8000u

/* ---- configuration ----------------------------------------------------------------- */

/* public_url: http(s), no query or fragment; the trailing slash goes. The
 * characters md_track accepts in a base are checked again when the worker starts
 * (md_track refuses a base it cannot put into an attribute or a header). */
static int
md_tracking_conf_url(md_conf_parser_t *cf, const md_conf_cmd_t *cmd, void *base)
{
    const char *v = md_conf_arg(cf, 1);
    size_t n = strlen(v);
    bool https = strncmp(v, "https://", 8) == 0;
    if ((!https && strncmp(v, "http://", 7) != 0) || n <= (https ? 8u : 7u) ||
        strpbrk(v, "?#\"'<> \\") != NULL)
        return md_conf_error(cf, "\"public_url\" must be an http(s) URL with no query, fragment, "
                                 "quotes or spaces");
    if (md_conf_set_str(cf, cmd, base) != MD_OK)
        return MD_ERROR;
    char **f = (char **)(void *)((char *)base + cmd->offset);
    size_t len = strlen(*f);
    while (len > 0 && (*f)[len - 1] == '/')
        (*f)[--len] = '\0';
    return MD_OK;
}

static const md_conf_bounds_t md_tracking_id_bounds = {0, 255};

#define MD_TRACKING_SECRET_ROWS(name, field)                                                       \
    {name,                                                                                         \
     MD_CONF_TRACKING,                                                                             \
     MD_CONF_TAKE1,                                                                                \
     md_conf_set_secret,                                                                           \
     offsetof(md_tracking_conf_t, field),                                                          \
     NULL,                                                                                         \
     NULL,                                                                                         \
     md_conf_free_secret},                                                                         \
    {                                                                                              \
        name "_file", MD_CONF_TRACKING, MD_CONF_TAKE1, md_conf_set_secret,                         \
            offsetof(md_tracking_conf_t, field), NULL, NULL, NULL                                  \
    }

static const md_conf_cmd_t md_tracking_conf_cmds[] = {
    {"public_url", MD_CONF_TRACKING, MD_CONF_TAKE1, md_tracking_conf_url,
     offsetof(md_tracking_conf_t, public_url), NULL, NULL, md_conf_free_str},
    MD_TRACKING_SECRET_ROWS("secret", secret),
    {"secret_id", MD_CONF_TRACKING, MD_CONF_TAKE1, md_conf_set_number,
     offsetof(md_tracking_conf_t, secret_id), &md_tracking_id_bounds, "1", NULL},
    MD_TRACKING_SECRET_ROWS("previous_secret", previous_secret),
    {"previous_secret_id", MD_CONF_TRACKING, MD_CONF_TAKE1, md_conf_set_number,
     offsetof(md_tracking_conf_t, previous_secret_id), &md_tracking_id_bounds, "0", NULL},
    {"unsubscribe_mailto_domain", MD_CONF_TRACKING, MD_CONF_TAKE1, md_conf_set_str,
     offsetof(md_tracking_conf_t, mailto_domain), NULL, NULL, md_conf_free_str},
    {NULL, 0, 0, NULL, 0, NULL, NULL, NULL},
};

static const md_conf_block_t md_tracking_conf_block = {"tracking", MD_CONF_TRACKING,
                                                       md_tracking_conf_cmds};

static void
md_tracking_conf_release(md_tracking_conf_t *tc)
{
    if (tc == NULL)
        return;
    md_conf_cleanup(&md_tracking_conf_block, tc);
    free(tc);
}

/* tracking { }: parses into a new md_tracking_conf_t at md_conf_t.tracking. */
int
md_tracking_conf_set(md_conf_parser_t *cf, const md_conf_cmd_t *cmd, void *base)
{
    md_unused(cmd);
    md_conf_t *conf = base;
    if (conf->tracking)
        return md_conf_error(cf, "\"tracking\" directive is duplicate");
    md_tracking_conf_t *tc = md_xcalloc(1, sizeof(*tc));
    conf->tracking = tc;
    if (md_conf_parse_block(cf, &md_tracking_conf_block, tc) != MD_OK)
        return MD_ERROR;
    if (tc->public_url == NULL)
        return md_conf_error(cf, "\"tracking\" needs \"public_url\"");
    if (tc->secret == NULL)
        return md_conf_error(cf, "\"tracking\" needs \"secret\" or \"secret_file\"");
    if (strlen(tc->secret) < MD_TRACK_SECRET_MIN ||
        (tc->previous_secret && strlen(tc->previous_secret) < MD_TRACK_SECRET_MIN))
        return md_conf_error(cf,
                             "tracking secrets must be at least %d bytes (32 random bytes "
                             "recommended)",
                             MD_TRACK_SECRET_MIN);
    if (tc->previous_secret && tc->previous_secret_id == tc->secret_id)
        return md_conf_error(cf, "\"previous_secret_id\" must differ from \"secret_id\"");
    if (tc->mailto_domain) {
        const char *d = tc->mailto_domain;
        size_t n = strlen(d);
        if (n == 0 || n > 253 ||
            strspn(d, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                      "0123456789.-") != n ||
            strchr(d, '.') == NULL)
            return md_conf_error(cf, "\"unsubscribe_mailto_domain\" must be a domain name "
                                     "(A-labels)");
    }
    return MD_OK;
}

void
md_tracking_conf_free(const md_conf_cmd_t *cmd, void *base)
{
    md_unused(cmd);
    md_conf_t *conf = base;
    md_tracking_conf_release(conf->tracking);
    conf->tracking = NULL;
}

/* ---- worker state ------------------------------------------------------------------- */

static struct {
    bool up;
    md_tracking_t t;
} tr_state;

const md_tracking_t *
md_tracking(void)
{
    return tr_state.up ? &tr_state.t : NULL;
}

int
md_tracking_app_init(md_app_t *app)
{
    memset(&tr_state, 0, sizeof(tr_state));
    const md_tracking_conf_t *tc = app->conf->tracking;
    if (tc == NULL)
        return MD_OK;
    md_tracking_t *t = &tr_state.t;
    t->base = (md_str_t){strlen(tc->public_url), tc->public_url};
    t->keys.current =
        (md_track_key_t){(uint8_t)tc->secret_id, (const uint8_t *)tc->secret, strlen(tc->secret)};
    if (tc->previous_secret)
        t->keys.previous =
            (md_track_key_t){(uint8_t)tc->previous_secret_id, (const uint8_t *)tc->previous_secret,
                             strlen(tc->previous_secret)};
    if (tc->mailto_domain)
        t->mailto_domain = (md_str_t){strlen(tc->mailto_domain), tc->mailto_domain};

    /* md_track checks the base it is given; a base it refuses would make every
     * tracked send fail, so find out now. */
    md_buf_t probe;
    md_buf_init(&probe);
    static const uint8_t zero[MD_TRACK_MSGID_LEN];
    int rc = md_track_list_unsubscribe(&t->keys.current, zero, t->base, t->mailto_domain, &probe);
    md_buf_free(&probe);
    if (rc != MD_OK) {
        md_logf(MD_LOG_ERROR, 0, MD_LOG_FIELDS(MD_LS("public_url", tc->public_url)),
                "tracking: public_url or unsubscribe_mailto_domain cannot be used in links");
        return MD_ERROR;
    }
    if (strncmp(tc->public_url, "https://", 8) != 0)
        md_logf(MD_LOG_WARN, 0, MD_LOG_FIELDS(MD_LS("public_url", tc->public_url)),
                "tracking public_url is not https: List-Unsubscribe-Post (one-click) is left out "
                "as RFC 8058 requires");
    tr_state.up = true;
    return MD_OK;
}

void
md_tracking_app_destroy(md_app_t *app)
{
    md_unused(app);
    memset(&tr_state, 0, sizeof(tr_state));
}

/* ---- accept ------------------------------------------------------------------------- */

static bool
msgid_bytes(const char *s, uint8_t out[MD_TRACK_MSGID_LEN])
{
    size_t k = 0;
    for (const char *p = s; *p && k < 2 * MD_TRACK_MSGID_LEN; p++) {
        if (*p == '-')
            continue;
        int v = md_hexval(*p);
        if (v < 0)
            return false;
        if (k % 2 == 0)
            out[k / 2] = (uint8_t)(v << 4);
        else
            out[k / 2] |= (uint8_t)v;
        k++;
    }
    return k == 2 * MD_TRACK_MSGID_LEN;
}

/* Adds md_track_list_unsubscribe's header lines (folded, CRLF-ended) to hdrs as
 * name -> unfolded value, so every driver passes them on like the caller's. */
static int
add_unsubscribe(const md_tracking_t *t, const uint8_t *msgid, json_t *hdrs)
{
    md_buf_t b;
    md_buf_init(&b);
    int rc = md_track_list_unsubscribe(&t->keys.current, msgid, t->base, t->mailto_domain, &b);
    if (rc != MD_OK) {
        md_buf_free(&b);
        return MD_ERROR;
    }
    md_buf_t v;
    md_buf_init(&v);
    const char *p = (const char *)b.pos, *end = p + md_buf_len(&b);
    char name[64] = "";
    while (p < end) {
        const char *eol = memchr(p, '\r', (size_t)(end - p));
        if (eol == NULL)
            eol = end;
        if (*p == ' ' || *p == '\t') { /* a continuation: unfold */
            md_buf_append(&v, p, (size_t)(eol - p));
        } else {
            if (name[0]) {
                json_object_set_new(hdrs, name, json_stringn((const char *)v.pos, md_buf_len(&v)));
                md_buf_reset(&v);
            }
            const char *colon = memchr(p, ':', (size_t)(eol - p));
            if (colon == NULL || (size_t)(colon - p) >= sizeof(name)) {
                rc = MD_ERROR;
                break;
            }
            memcpy(name, p, (size_t)(colon - p));
            name[colon - p] = '\0';
            const char *val = colon + 1;
            while (val < eol && *val == ' ')
                val++;
            md_buf_append(&v, val, (size_t)(eol - val));
        }
        p = eol + (eol + 1 < end && eol[1] == '\n' ? 2 : 1);
    }
    if (rc == MD_OK && name[0])
        json_object_set_new(hdrs, name, json_stringn((const char *)v.pos, md_buf_len(&v)));
    md_buf_free(&v);
    md_buf_free(&b);
    return rc;
}

static const char *
pool_json(md_pool_t *pool, json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    const char *r = s ? md_pstrndup(pool, s, strlen(s)) : NULL;
    free(s);
    return r;
}

int
md_tracking_apply(md_pool_t *pool, const char *msgid, unsigned flags, bool bulk, const char *html,
                  const char *headers_json, md_tracking_out_t *out)
{
    out->html = html;
    out->headers_json = headers_json;
    out->tracking_json = NULL;
    const md_tracking_t *t = md_tracking();
    if (t == NULL || (flags == 0 && !bulk))
        return MD_OK;
    uint8_t id[MD_TRACK_MSGID_LEN];
    if (!msgid_bytes(msgid, id))
        return MD_ERROR;

    bool unsub = false;
    if (bulk) {
        json_t *hdrs = json_loads(headers_json ? headers_json : "{}", 0, NULL);
        if (!json_is_object(hdrs)) {
            json_decref(hdrs);
            return MD_ERROR;
        }
        const char *k;
        json_t *val;
        bool theirs = false;
        json_object_foreach(hdrs, k, val)
        {
            if (strcasecmp(k, "List-Unsubscribe") == 0)
                theirs = true;
        }
        if (!theirs) {
            if (add_unsubscribe(t, id, hdrs) != MD_OK) {
                json_decref(hdrs);
                return MD_ERROR;
            }
            out->headers_json = pool_json(pool, hdrs);
            unsub = true;
        }
        json_decref(hdrs);
    }

    json_t *links = json_array();
    if (html && (flags & (MD_TRACKING_OPENS | MD_TRACKING_CLICKS))) {
        md_track_html_opts_t o = {.key = &t->keys.current,
                                  .msgid = id,
                                  .base = t->base,
                                  .clicks = (flags & MD_TRACKING_CLICKS) != 0,
                                  .opens = (flags & MD_TRACKING_OPENS) != 0};
        md_buf_t b;
        md_buf_init(&b);
        md_track_links_t l;
        memset(&l, 0, sizeof(l));
        int rc = md_track_rewrite_html(&o, html, strlen(html), &b, &l);
        if (rc == MD_OK) {
            out->html = md_pstrndup(pool, (const char *)b.pos, md_buf_len(&b));
            for (size_t i = 0; i < l.n; i++) {
                /* A URL that is not UTF-8 keeps its index with an empty entry:
                 * its clicks then find nothing to redirect to. */
                json_t *u = json_stringn(l.url[i], l.len[i]);
                json_array_append_new(links, u ? u : json_string(""));
            }
        }
        md_track_links_free(&l);
        md_buf_free(&b);
        if (rc != MD_OK) {
            json_decref(links);
            return MD_ERROR;
        }
    }
    json_t *tj = json_pack("{s:b,s:b,s:b,s:o}", "opens", (flags & MD_TRACKING_OPENS) != 0, "clicks",
                           (flags & MD_TRACKING_CLICKS) != 0, "unsubscribe", unsub, "links", links);
    out->tracking_json = pool_json(pool, tj);
    json_decref(tj);
    return MD_OK;
}
