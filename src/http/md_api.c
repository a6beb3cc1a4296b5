/*
 * Operational endpoints (/health, /metrics) and, when debug_endpoints is on, the
 * test helpers /debug/echo and /debug/sleep. Public routes are registered first
 * so their ids (metrics labels) do not depend on the debug switch.
 */
#include "md_router.h"
#include "md_metrics.h"
#include "md_log.h"

#include <stdio.h>
#include <stdlib.h>

static int
api_health(md_http_request_t *r)
{
    static const char body[] = "{\"status\":\"ok\"}";
    md_http_send(r, 200, "application/json", body, sizeof(body) - 1);
    return MD_OK;
}

static int
api_metrics(md_http_request_t *r)
{
    md_buf_t out;
    md_buf_init(&out);
    md_metrics_render(&out, md_http_router(r->http));
    md_http_send(r, 200, "text/plain; version=0.0.4", out.pos, md_buf_len(&out));
    md_buf_free(&out);
    return MD_OK;
}

static void
json_str(md_buf_t *b, const char *s, size_t n)
{
    md_buf_append(b, "\"", 1);
    md_buf_append_json_escaped(b, s ? s : "", s ? n : 0);
    md_buf_append(b, "\"", 1);
}

/* Echoes what the server parsed, so tests can check bodies, chunked decoding and
 * header handling from the outside. */
static int
api_debug_echo(md_http_request_t *r)
{
    md_buf_t b;
    md_buf_init(&b);
    md_buf_append_str(&b, "{\"method\":");
    json_str(&b, r->method_name.data, r->method_name.len);
    md_buf_append_str(&b, ",\"path\":");
    json_str(&b, r->path.data, r->path.len);
    md_buf_append_str(&b, ",\"query\":");
    json_str(&b, r->query.data, r->query.len);
    md_buf_append_str(&b, ",\"request_id\":");
    json_str(&b, r->request_id.data, r->request_id.len);
    md_buf_printf(&b, ",\"body_length\":%zu,\"body\":", md_buf_len(&r->body));
    json_str(&b, r->body.pos, md_buf_len(&r->body));
    md_buf_append_str(&b, ",\"headers\":{");
    for (unsigned i = 0; i < r->nheaders; i++) {
        const md_http_header_t *hd = &r->headers[i];
        char name[256];
        size_t n = md_min(hd->name.len, sizeof(name));
        for (size_t j = 0; j < n; j++) {
            char ch = hd->name.data[j];
            name[j] = (ch >= 'A' && ch <= 'Z') ? (char)(ch + 32) : ch;
        }
        if (i)
            md_buf_append(&b, ",", 1);
        json_str(&b, name, n);
        md_buf_append(&b, ":", 1);
        json_str(&b, hd->value.data, hd->value.len);
    }
    md_buf_append_str(&b, "}}");
    md_http_send(r, 200, "application/json", b.pos, md_buf_len(&b));
    md_buf_free(&b);
    return MD_OK;
}

typedef struct sleep_ctx_s {
    ev_timer timer;
    md_http_request_t *r;
    long ms;
} sleep_ctx_t;

static void
sleep_done(struct ev_loop *loop, ev_timer *w, int revents)
{
    md_unused(loop);
    md_unused(revents);
    sleep_ctx_t *s = w->data;
    char body[64];
    int n = snprintf(body, sizeof(body), "{\"slept_ms\":%ld}", s->ms);
    /* A no-op when the client left; either way the request's reference goes. */
    md_http_send(s->r, 200, "application/json", body, (size_t)n);
}

/* Pool cleanup: the timer must not outlive the request (shutdown, destroy). */
static void
sleep_cleanup(void *data)
{
    sleep_ctx_t *s = data;
    ev_timer_stop(s->r->loop, &s->timer);
}

static int
api_debug_sleep(md_http_request_t *r)
{
    long ms = -1;
    const char *q = r->query.data, *end = r->query.data + r->query.len;
    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *e = amp ? amp : end;
        if (e - q > 3 && memcmp(q, "ms=", 3) == 0) {
            ms = 0;
            for (const char *d = q + 3; d < e; d++) {
                if (*d < '0' || *d > '9' || ms > 60000) {
                    ms = -1;
                    break;
                }
                ms = ms * 10 + (*d - '0');
            }
        }
        q = amp ? amp + 1 : end;
    }
    if (ms < 0 || ms > 60000)
        return md_http_send_error(r, 400, "bad_request", "ms must be an integer from 0 to 60000"),
               MD_OK;
    sleep_ctx_t *s = md_pcalloc(r->pool, sizeof(*s));
    s->r = r;
    s->ms = ms;
    ev_timer_init(&s->timer, sleep_done, (double)ms / 1000.0, 0);
    s->timer.data = s;
    ev_timer_start(r->loop, &s->timer);
    md_pool_cleanup_add(r->pool, sleep_cleanup, s);
    return MD_AGAIN;
}

void md_api_ready_register(md_router_t *rt, const md_conf_t *conf);     /* md_api_ready.c */
void md_api_identity_register(md_router_t *rt, const md_conf_t *conf);  /* md_api_identity.c */
void md_api_messages_register(md_router_t *rt, const md_conf_t *conf);  /* md_api_messages.c */
void md_api_templates_register(md_router_t *rt, const md_conf_t *conf); /* md_api_templates.c */
void md_api_queue_register(md_router_t *rt, const md_conf_t *conf);     /* md_api_queue.c */
void md_api_esps_register(md_router_t *rt, const md_conf_t *conf);      /* md_api_esps.c */
void md_api_suppressions_register(md_router_t *rt,
                                  const md_conf_t *conf);              /* md_api_suppressions.c */
void md_api_webhooks_register(md_router_t *rt, const md_conf_t *conf); /* md_api_webhooks.c */
void md_api_track_register(md_router_t *rt, const md_conf_t *conf);    /* md_api_track.c */

void
md_api_register(md_router_t *rt, const md_conf_t *conf)
{
    md_router_add(rt, MD_M_GET, "/health", api_health);
    md_router_add(rt, MD_M_GET, "/metrics", api_metrics);
    md_api_ready_register(rt, conf);
    md_api_identity_register(rt, conf);
    md_api_messages_register(rt, conf);
    md_api_templates_register(rt, conf);
    md_api_queue_register(rt, conf);
    md_api_esps_register(rt, conf);
    md_api_suppressions_register(rt, conf);
    md_api_webhooks_register(rt, conf);
    md_api_track_register(rt, conf);
    if (conf && conf->debug_endpoints) {
        md_router_add(rt, MD_M_POST, "/debug/echo", api_debug_echo);
        md_router_add(rt, MD_M_GET, "/debug/sleep", api_debug_sleep);
    }
}
