/*
 * Small pieces every API resource handler shares: answering after a store call,
 * the validation error shape, refusing unknown members, and ?limit=&cursor=.
 */
#ifndef MD_API_UTIL_H
#define MD_API_UTIL_H

#include "md_http.h"
#include "md_pg.h"
#include <jansson.h>

/*
 * After a store call returned rc: MD_OK means it is queued, so the handler waits
 * (returns MD_AGAIN); MD_AGAIN means the store cannot take it now (answers 503
 * store_unavailable); anything else is a bug (answers 500). Returns what the
 * handler should return.
 */
int md_api_queued(md_http_request_t *r, int rc);

/* 422 {"error":{"code":"validation_failed","message":msg,"field":field}}; MD_OK. */
int md_api_send_validation(md_http_request_t *r, const char *field, const char *msg);

/* Refuses members of obj other than allowed (NULL-terminated): a typo must not be
 * ignored. Answers 422 naming the member as a JSON pointer and returns false. */
bool md_api_check_known(md_http_request_t *r, json_t *obj, const char *const *allowed);

/*
 * Reads ?limit= (1..max, default dflt) and ?cursor= (a UUID, as listings use ids
 * for cursors) into cursor[MD_UUID_STRLEN + 1]. Answers 422 invalid_parameter with
 * the parameter's name in "field" and returns false when either is bad.
 */
bool md_api_page_args(md_http_request_t *r, int max, int dflt, int *limit, char *cursor,
                      bool *has_cursor);

/* Percent-decodes a query value into a NUL-terminated string from pool; NULL on a
 * bad escape, a NUL byte or a control character. '+' stays '+' (an RFC 3339
 * offset in "since"). */
char *md_api_query_decode(md_pool_t *pool, const char *s, size_t n);

/* Answers 422 {"error":{"code":code,"message":msg,"field":name}} for a query
 * parameter; returns MD_OK so a handler can return it. */
int md_api_bad_param(md_http_request_t *r, const char *code, const char *name, const char *msg);

/*
 * Walks r's query string one parameter at a time against names (NULL-ended, at
 * most 31). md_api_query_next returns 1 with *bit (1 << position in names) and
 * *value (percent-decoded, from r's pool) and q->name (the parameter's name,
 * printable, for error fields); 0 at the end; -1 after it answered 422 itself:
 * unknown_parameter, or invalid_parameter for a repeated or badly encoded one.
 */
typedef struct md_api_query_s {
    md_http_request_t *r;
    const char *p, *end;
    unsigned seen;
    char name[64];
} md_api_query_t;
void md_api_query_init(md_api_query_t *q, md_http_request_t *r);
int md_api_query_next(md_api_query_t *q, const char *const *names, unsigned *bit, char **value);

/* True when the PostgreSQL pool exists; otherwise answers 503 store_unavailable. */
bool md_api_pg_ready(md_http_request_t *r);

/* The body as a JSON object, owned by r's pool (freed with the request); an empty
 * body is {} when empty_ok. Otherwise answers 400 invalid_json or 422 and
 * returns NULL. */
json_t *md_api_body_object(md_http_request_t *r, bool empty_ok);

/* A pool cleanup that drops one JSON reference (data is the json_t *). */
void md_api_json_decref_cleanup(void *data);

/* n decimal digits at s into *out; false on any other byte. Callers keep n <= 9. */
bool md_api_digits(const char *s, size_t n, unsigned *out);
/* An RFC 3339 date-time (Z or an offset, optional fraction) of n bytes into unix
 * seconds; false when it is not one or names an impossible date. */
bool md_api_parse_rfc3339(const char *s, size_t n, double *out);

/* True when r's Content-Type is type (letter case ignored; parameters such as
 * "; charset=utf-8" allowed after it). */
bool md_api_media_type(const md_http_request_t *r, const char *type);

/*
 * A "tracking" member ({"opens": bool, "clicks": bool}, both optional) of the
 * tenant and send APIs: *given gets the MD_TRACKING_* bits present, *on those
 * set true. v NULL or JSON null: nothing given. false with *member (the JSON
 * pointer suffix, e.g. "/opens" or "") and *why filled when v is malformed.
 */
bool md_api_tracking_parse(json_t *v, unsigned *given, unsigned *on, const char **member,
                           const char **why);

/* The common part of a store callback: true when the caller should go on with
 * res; false when r was answered here: nothing for a client that left (499,
 * dropping our reference), 503 store_unavailable when PostgreSQL is down, 500
 * internal_error (logged as "<what> query failed") for an SQL error. */
bool md_api_pg_ok(md_http_request_t *r, const md_pg_result_t *res, const char *what);

#endif
