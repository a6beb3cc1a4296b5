#include "md_api_util.h"
#include "md_app.h"
#include "md_tenants.h"

#include <stdio.h>
#include <string.h>

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
