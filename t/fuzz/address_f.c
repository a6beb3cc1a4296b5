/*
 * md_address_parse on any bytes: no read outside the input, and for what it
 * accepts, the normalized form (the suppression key) parses again and is a
 * fixed point, and md_address_format's mailbox parses back to the same
 * address and display name.
 */
#include "md_address.h"
#include "md_pool.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char md_fuzz_target[] = "address";

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    md_pool_t *pool = md_pool_create(1024);
    if (pool == NULL)
        abort();
    md_address_t a, b;
    md_address_error_t e;
    if (md_address_parse(pool, (const char *)data, size, &a, &e) != MD_OK) {
        if (e.name == NULL || e.message == NULL || e.offset > size) {
            fprintf(stderr, "a refusal without a name, message or offset in the input\n");
            abort();
        }
        md_pool_destroy(pool);
        return 0;
    }
    char key[MD_ADDRESS_MAX + 1], key2[MD_ADDRESS_MAX + 1];
    size_t n = md_address_normalize(&a, key, sizeof(key));
    if (n >= sizeof(key)) {
        fprintf(stderr, "a normalized address of %zu bytes\n", n);
        abort();
    }
    if (md_address_parse(pool, key, n, &b, &e) != MD_OK) {
        fprintf(stderr, "the normalized form [%s] does not parse: %s\n", key, e.name);
        abort();
    }
    size_t n2 = md_address_normalize(&b, key2, sizeof(key2));
    if (n2 != n || memcmp(key, key2, n) != 0) {
        fprintf(stderr, "normalizing is not idempotent: [%s] -> [%s]\n", key, key2);
        abort();
    }
    char mbox[1024];
    bool encode;
    ssize_t m = md_address_format(mbox, sizeof(mbox), a.display, a.addr_ascii, &encode);
    if (m >= 0 && (size_t)m < sizeof(mbox) && !encode) {
        if (md_address_parse(pool, mbox, (size_t)m, &b, &e) != MD_OK) {
            fprintf(stderr, "the formatted mailbox [%s] does not parse: %s\n", mbox, e.name);
            abort();
        }
        if (strcmp(b.addr_ascii.data, a.addr_ascii.data) != 0 || b.display.len != a.display.len ||
            memcmp(b.display.data, a.display.data, a.display.len) != 0) {
            fprintf(stderr, "the formatted mailbox [%s] reads back differently\n", mbox);
            abort();
        }
    }
    md_pool_destroy(pool);
    return 0;
}
