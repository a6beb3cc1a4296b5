/*
 * Small pieces every API resource handler shares: answering after a store call,
 * the validation error shape, refusing unknown members, and ?limit=&cursor=.
 */
#ifndef MD_API_UTIL_H
#define MD_API_UTIL_H

#include "md_http.h"
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

#endif
