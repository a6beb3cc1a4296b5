/*
 * md_json_parse against jansson: whatever the fast path accepts, jansson
 * accepts with JSON_REJECT_DUPLICATES too, and the two values are equal (the
 * fast path may decline anything; it may never decide differently).
 */
#include "md_json.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

const char md_fuzz_target[] = "json";

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    json_t *fast = md_json_parse(s, size);
    json_error_t e;
    json_t *ref = json_loadb(s, size, JSON_REJECT_DUPLICATES, &e);
    if (fast != NULL && ref == NULL) {
        fprintf(stderr, "md_json_parse took what jansson refuses: %s\n", e.text);
        abort();
    }
    if (fast != NULL && !json_equal(fast, ref)) {
        char *a = json_dumps(fast, JSON_ENCODE_ANY), *b = json_dumps(ref, JSON_ENCODE_ANY);
        fprintf(stderr, "md_json_parse: %s\njansson:       %s\n", a ? a : "?", b ? b : "?");
        abort();
    }
    json_decref(fast);
    json_decref(ref);
    return 0;
}
