#include "md_api_util.h"
#include "md_json.h"
#include "md_tracking.h"
#include "md_app.h"
#include "md_log.h"
#include "md_tenants.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

int
md_api_queued(md_http_request_t *r, int rc)
{
    if (rc == MD_OK)
        return MD_AGAIN;
    if (rc == MD_AGAIN)
        return md_app_send_store_unavailable(r, "postgres");
    md_http_send_error(r, 500, "internal_error", "internal error");
    return MD_OK;
}

/* A bad query parameter: 422 invalid_parameter naming it in "field", the same
 * shape every listing (and GET /v1/messages) uses. */
static void
send_param_error(md_http_request_t *r, const char *name, const char *msg)
{
    json_t *e = json_pack("{s:{s:s,s:s,s:s}}", "error", "code", "invalid_parameter", "message", msg,
                          "field", name);
    md_http_send_json(r, 422, e);
}

int
md_api_send_validation(md_http_request_t *r, const char *field, const char *msg)
{
    json_t *e = json_pack("{s:{s:s,s:s,s:s}}", "error", "code", "validation_failed", "message", msg,
                          "field", field);
    return md_http_send_json(r, 422, e), MD_OK;
}

/* Refuses members other than the allowed ones (a typo must not be ignored). */
bool
md_api_check_known(md_http_request_t *r, json_t *obj, const char *const *allowed)
{
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v)
    {
        bool ok = false;
        for (const char *const *a = allowed; *a; a++)
            if (strcmp(k, *a) == 0)
                ok = true;
        if (!ok) {
            /* A JSON pointer escapes '~' and '/'; keep the field bounded, cutting
             * only between whole UTF-8 characters so the answer stays valid JSON. */
            char field[80];
            size_t j = 0;
            field[j++] = '/';
            for (const char *p = k; *p;) {
                size_t n = 1;
                unsigned char c = (unsigned char)*p;
                if (c == '~' || c == '/')
                    n = 2;
                else if (c >= 0xF0)
                    n = 4;
                else if (c >= 0xE0)
                    n = 3;
                else if (c >= 0xC0)
                    n = 2;
                if (j + n >= sizeof(field))
                    break;
                if (c == '~' || c == '/') {
                    field[j++] = '~';
                    field[j++] = c == '~' ? '0' : '1';
                    p++;
                } else {
                    for (size_t i = 0; i < n && *p; i++)
                        field[j++] = *p++;
                }
            }
            field[j] = '\0';
            md_api_send_validation(r, field, "unknown field");
            return false;
        }
    }
    return true;
}

bool
md_api_page_args(md_http_request_t *r, int max, int dflt, int *limit, char *cursor,
                 bool *has_cursor)
{
    *limit = dflt;
    *has_cursor = false;
    const char *p = r->query.data, *end = r->query.data + r->query.len;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *e = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(e - p));
        md_str_t name = {(size_t)((eq ? eq : e) - p), p};
        md_str_t val = {eq ? (size_t)(e - eq - 1) : 0, eq ? eq + 1 : e};
        if (md_str_eq(name, "limit")) {
            long n = 0;
            bool ok = val.len > 0 && val.len <= 4;
            for (size_t i = 0; ok && i < val.len; i++) {
                ok = val.data[i] >= '0' && val.data[i] <= '9';
                n = n * 10 + (val.data[i] - '0');
            }
            if (!ok || n < 1 || n > max) {
                char msg[64];
                snprintf(msg, sizeof(msg), "limit must be an integer from 1 to %d", max);
                send_param_error(r, "limit", msg);
                return false;
            }
            *limit = (int)n;
        } else if (md_str_eq(name, "cursor")) {
            if (!md_uuid_parse(val, cursor)) {
                send_param_error(r, "cursor",
                                 "cursor must be a next_cursor value from a previous page");
                return false;
            }
            *has_cursor = true;
        }
        p = amp ? amp + 1 : end;
    }
    return true;
}

/* Percent-decodes s into a NUL-terminated pool string; NULL on a bad escape, a
 * NUL byte or a control character. '+' stays '+' (an RFC 3339 offset). */
char *
md_api_query_decode(md_pool_t *pool, const char *s, size_t n)
{
    char *out = md_palloc(pool, n + 1), *o = out;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '%') {
            int h, l;
            if (i + 2 >= n || (h = md_hexval(s[i + 1])) < 0 || (l = md_hexval(s[i + 2])) < 0)
                return NULL;
            c = (unsigned char)(h * 16 + l);
            i += 2;
        }
        if (c < 0x20 || c == 0x7f)
            return NULL;
        *o++ = (char)c;
    }
    *o = '\0';
    return out;
}

int
md_api_bad_param(md_http_request_t *r, const char *code, const char *name, const char *msg)
{
    json_t *e =
        json_pack("{s:{s:s,s:s,s:s}}", "error", "code", code, "message", msg, "field", name);
    md_http_send_json(r, 422, e);
    return MD_OK;
}

void
md_api_query_init(md_api_query_t *q, md_http_request_t *r)
{
    q->r = r;
    q->p = r->query.data;
    q->end = r->query.data + r->query.len;
    q->seen = 0;
    q->name[0] = '\0';
}

int
md_api_query_next(md_api_query_t *q, const char *const *names, unsigned *bit, char **value)
{
    while (q->p < q->end) {
        const char *amp = memchr(q->p, '&', (size_t)(q->end - q->p));
        const char *e = amp ? amp : q->end;
        const char *eq = memchr(q->p, '=', (size_t)(e - q->p));
        md_str_t name = {(size_t)((eq ? eq : e) - q->p), q->p};
        const char *raw = eq ? eq + 1 : e;
        q->p = amp ? amp + 1 : q->end;
        if (name.len == 0 && e == raw)
            continue; /* "&&" or a trailing '&' */
        *value = md_api_query_decode(q->r->pool, raw, (size_t)(e - raw));
        *bit = 0;
        for (unsigned i = 0; names[i] && i < 31; i++)
            if (md_str_eq(name, names[i]))
                *bit = 1u << i;
        snprintf(q->name, sizeof(q->name), "%.*s", (int)md_min(name.len, 40), name.data);
        for (char *c = q->name; *c; c++)
            if ((unsigned char)*c < 0x20 || (unsigned char)*c >= 0x7f)
                *c = '?';
        if (*bit == 0)
            return md_api_bad_param(q->r, "unknown_parameter", q->name, "unknown query parameter"),
                   -1;
        if (q->seen & *bit)
            return md_api_bad_param(q->r, "invalid_parameter", q->name, "given more than once"), -1;
        q->seen |= *bit;
        if (*value == NULL)
            return md_api_bad_param(q->r, "invalid_parameter", q->name, "bad percent-encoding"), -1;
        return 1;
    }
    return 0;
}

bool
md_api_pg_ready(md_http_request_t *r)
{
    if (md_app && md_app->pg)
        return true;
    md_app_send_store_unavailable(r, "postgres");
    return false;
}

void
md_api_json_decref_cleanup(void *data)
{
    json_decref(data);
}

json_t *
md_api_body_object(md_http_request_t *r, bool empty_ok)
{
    size_t len = md_buf_len(&r->body);
    json_t *j;
    if (len == 0 && empty_ok) {
        j = json_object();
    } else {
        json_error_t err;
        j = md_json_load(r->body.pos, len, &err);
        if (j == NULL) {
            md_http_send_error(r, 400, "invalid_json",
                               "the body is not valid JSON: %s (line %d, column %d)", err.text,
                               err.line, err.column);
            return NULL;
        }
    }
    md_pool_cleanup_add(r->pool, md_api_json_decref_cleanup, j);
    if (!json_is_object(j)) {
        md_api_send_validation(r, "", "the body must be a JSON object");
        return NULL;
    }
    return j;
}

/* Days from 1970-01-01 to y-m-d (proleptic Gregorian; H. Hinnant's algorithm). */
static long
days_from_civil(long y, unsigned m, unsigned d)
{
    y -= m <= 2;
    long era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? (unsigned)-3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (long)doe - 719468;
}

bool
md_api_digits(const char *s, size_t n, unsigned *out)
{
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    *out = v;
    return true;
}

/*
 * RFC 3339 date-time (section 5.6): YYYY-MM-DDTHH:MM:SS[.frac](Z|+hh:mm|-hh:mm),
 * 'T' and 'Z' in either case. *out gets unix seconds. A leap second (:60) is
 * taken as the next second.
 */
bool
md_api_parse_rfc3339(const char *s, size_t n, double *out)
{
    unsigned y, mo, d, h, mi, se, oh = 0, om = 0;
    if (n < 20 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't') || s[13] != ':' ||
        s[16] != ':')
        return false;
    if (!md_api_digits(s, 4, &y) || !md_api_digits(s + 5, 2, &mo) || !md_api_digits(s + 8, 2, &d) ||
        !md_api_digits(s + 11, 2, &h) || !md_api_digits(s + 14, 2, &mi) ||
        !md_api_digits(s + 17, 2, &se))
        return false;
    static const unsigned mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || (mo == 2 && d == 29 && !leap) ||
        h > 23 || mi > 59 || se > 60)
        return false;
    size_t i = 19;
    double frac = 0, scale = 0.1;
    if (s[i] == '.') {
        i++;
        size_t start = i;
        while (i < n && s[i] >= '0' && s[i] <= '9') {
            frac += (s[i] - '0') * scale;
            scale /= 10;
            i++;
        }
        if (i == start || i - start > 9)
            return false;
    }
    int sign = 0;
    if (i < n && (s[i] == 'Z' || s[i] == 'z')) {
        i++;
    } else if (i < n && (s[i] == '+' || s[i] == '-')) {
        sign = s[i] == '+' ? 1 : -1;
        if (n - i != 6 || s[i + 3] != ':' || !md_api_digits(s + i + 1, 2, &oh) ||
            !md_api_digits(s + i + 4, 2, &om) || oh > 23 || om > 59)
            return false;
        i += 6;
    } else {
        return false;
    }
    if (i != n)
        return false;
    double t = (double)days_from_civil((long)y, mo, d) * 86400.0 + h * 3600.0 + mi * 60.0 + se;
    t -= sign * (oh * 3600.0 + om * 60.0);
    *out = t + frac;
    return true;
}

bool
md_api_pg_ok(md_http_request_t *r, const md_pg_result_t *res, const char *what)
{
    if (r->aborted) {
        md_http_send(r, 499, NULL, NULL, 0); /* drops our reference, sends nothing */
        return false;
    }
    if (res->error == NULL)
        return true;
    if (md_app_store_down(res->error)) {
        md_app_send_store_unavailable(r, "postgres");
        return false;
    }
    md_logf(MD_LOG_ERROR, 0,
            MD_LOG_FIELDS(MD_LS("error", res->error),
                          MD_LS("sqlstate", res->sqlstate ? res->sqlstate : ""),
                          MD_LS("detail", res->message ? res->message : "")),
            "%s query failed", what);
    md_http_send_error(r, 500, "internal_error", "internal error");
    return false;
}

bool
md_api_tracking_parse(json_t *v, unsigned *given, unsigned *on, const char **member,
                      const char **why)
{
    *given = *on = 0;
    if (v == NULL || json_is_null(v))
        return true;
    *member = "";
    if (!json_is_object(v)) {
        *why = "must be an object such as {\"opens\": true, \"clicks\": true}";
        return false;
    }
    static const struct {
        const char *name, *ptr;
        unsigned bit;
    } f[] = {{"opens", "/opens", MD_TRACKING_OPENS}, {"clicks", "/clicks", MD_TRACKING_CLICKS}};
    const char *k;
    json_t *x;
    json_object_foreach(v, k, x)
    {
        size_t i = 0;
        while (i < md_nelems(f) && strcmp(k, f[i].name) != 0)
            i++;
        if (i == md_nelems(f)) {
            *why = "unknown member (known: opens, clicks)";
            return false;
        }
        if (json_is_null(x))
            continue;
        if (!json_is_boolean(x)) {
            *member = f[i].ptr;
            *why = "must be true or false";
            return false;
        }
        *given |= f[i].bit;
        if (json_is_true(x))
            *on |= f[i].bit;
    }
    return true;
}

bool
md_api_media_type(const md_http_request_t *r, const char *type)
{
    const md_str_t *ct = md_http_get_header(r, "Content-Type");
    size_t wl = strlen(type);
    if (ct == NULL || ct->len < wl || strncasecmp(ct->data, type, wl) != 0)
        return false;
    for (size_t i = wl; i < ct->len; i++) {
        if (ct->data[i] == ';')
            return true;
        if (ct->data[i] != ' ' && ct->data[i] != '\t')
            return false;
    }
    return true;
}
