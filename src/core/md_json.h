/*
 * A fast path for parsing request bodies into jansson values.
 *
 * jansson's decoder reads one character at a time through a stream with
 * look-ahead and builds every string a byte at a time; on the send API it was
 * the largest single cost of accepting a message. md_json_parse() reads the
 * common shape of a body (an object or array at the top, as jansson wants it
 * without JSON_DECODE_ANY; strings without surrogate or NUL escapes, integers
 * that fit, reals strtod takes without a range error) straight from the buffer
 * and builds
 * the same jansson values. It never decides that a body is invalid: on anything
 * it does not take (an error, a duplicate member, an escape it leaves alone, a
 * number at the edge of its type, nesting past jansson's limit) it returns NULL
 * and the caller asks jansson, whose answer (value or error message) is final.
 * So what it accepts is a subset of what json_loadb(..., JSON_REJECT_DUPLICATES)
 * accepts, with equal values (t/unit/json_t checks both against jansson).
 */
#ifndef MD_JSON_H
#define MD_JSON_H

#include <jansson.h>
#include <stddef.h>

/* The value of the JSON text s[0..n) (an object or an array, with optional
 * whitespace around it), or NULL when jansson must decide. The caller owns the
 * result. */
json_t *md_json_parse(const char *s, size_t n);

/* md_json_parse(), else json_loadb(s, n, JSON_REJECT_DUPLICATES, err). */
json_t *md_json_load(const char *s, size_t n, json_error_t *err);

#endif
