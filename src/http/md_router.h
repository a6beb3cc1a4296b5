/*
 * Router by method and path. Patterns are literal segments and {name}
 * parameters ("/v1/messages/{id}"). A path that matches no pattern is a 404; one
 * that matches a pattern but not the method is a 405 with an Allow header. Routes
 * get dense ids in registration order; metrics label by id and pattern.
 */
#ifndef MD_ROUTER_H
#define MD_ROUTER_H

#include "md_http.h"

#define MD_ROUTER_MAX_ROUTES 64

/* Method bits for md_router_add. */
#define MD_M_GET     0x01
#define MD_M_HEAD    0x02
#define MD_M_POST    0x04
#define MD_M_PUT     0x08
#define MD_M_PATCH   0x10
#define MD_M_DELETE  0x20
#define MD_M_OPTIONS 0x40

struct md_route_s {
    unsigned id;
    const char *pattern;
    unsigned methods;
    md_http_handler_pt handler;
};

md_router_t *md_router_create(void);
void md_router_destroy(md_router_t *rt);
/* GET implies HEAD. Returns the route id, or -1 on a bad pattern or a full table. */
int md_router_add(md_router_t *rt, unsigned methods, const char *pattern, md_http_handler_pt h);
/*
 * MD_OK: *route and r->params/param_names/nparams set. MD_DECLINED: no pattern
 * matches (404). MD_AGAIN is not used. MD_ERROR: a pattern matches but not the method
 * (405); *allow gets the methods the path does take as MD_M_* bits.
 */
int md_router_match(const md_router_t *rt, int llhttp_method, md_str_t path, md_http_request_t *r,
                    const md_route_t **route, unsigned *allow);
unsigned md_router_count(const md_router_t *rt);
const md_route_t *md_router_get(const md_router_t *rt, unsigned id);
/* "GET, HEAD, POST" into buf. */
void md_router_allow_string(unsigned methods, char *buf, size_t len);

/* Registers every API route (src/http/md_api_*.c). */
void md_api_register(md_router_t *rt, const md_conf_t *conf);

#endif
