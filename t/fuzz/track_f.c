/*
 * The tracking code's readers of tenant and public input: the HTML link
 * rewriter (a message's html part), the one-click unsubscribe body (a POST
 * from anyone, with its Content-Type taken from the input's first byte's
 * count of bytes) and token parsing (any URL path). Beyond the sanitizers'
 * checks: no rewritten link holds a control character (it goes into a
 * Location header), each is in the output as a tracking URL, nothing
 * changes when neither clicks nor opens are tracked, and no token but one
 * this key made verifies.
 */
#include "md_buf.h"
#include "md_track.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

const char md_fuzz_target[] = "track";

static const uint8_t secret[32] = "0123456789abcdef0123456789abcdef";

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    md_track_key_t key = {1, secret, sizeof(secret)};
    uint8_t msgid[MD_TRACK_MSGID_LEN] = {1, 2, 3};
    md_track_html_opts_t o = {.key = &key,
                              .msgid = msgid,
                              .base = {17, "https://t.example"},
                              .clicks = true,
                              .opens = true};
    md_buf_t out;
    md_buf_init(&out);
    md_track_links_t links;
    memset(&links, 0, sizeof(links));
    if (md_track_rewrite_html(&o, s, size, &out, &links) != MD_OK) {
        fprintf(stderr, "md_track_rewrite_html refused good options\n");
        abort();
    }
    /* every link kept is in the output as its tracking URL */
    size_t seen = 0;
    for (const char *p = out.pos, *end = out.last; p < end; p++) {
        p = memmem(p, (size_t)(end - p), "https://t.example/t/c/", 22);
        if (p == NULL)
            break;
        seen++;
    }
    if (seen < links.n) {
        fprintf(stderr, "%zu links but %zu tracking URLs\n", links.n, seen);
        abort();
    }
    for (size_t i = 0; i < links.n; i++) {
        if (strlen(links.url[i]) != links.len[i]) {
            fprintf(stderr, "link %zu holds a NUL\n", i);
            abort();
        }
        for (size_t j = 0; j < links.len[i]; j++) {
            unsigned char c = (unsigned char)links.url[i][j];
            if (c < 0x20 || c == 0x7f) {
                fprintf(stderr, "link %zu holds control character %02x\n", i, c);
                abort();
            }
        }
    }
    md_track_links_free(&links);
    md_buf_free(&out);

    /* with nothing to track the html goes out byte for byte */
    o.clicks = o.opens = false;
    md_buf_init(&out);
    if (md_track_rewrite_html(&o, s, size, &out, &links) != MD_OK || links.n != 0 ||
        md_buf_len(&out) != size || (size && memcmp(out.pos, s, size) != 0)) {
        fprintf(stderr, "without clicks or opens the html changed\n");
        abort();
    }
    md_track_links_free(&links);
    md_buf_free(&out);

    (void)md_track_oneclick_body((md_str_t){33, "multipart/form-data; boundary=XyZ"}, s, size);
    if (size > 0) {
        size_t ct = (size_t)(data[0] & 63) + 1 < size ? (size_t)(data[0] & 63) + 1 : size;
        (void)md_track_oneclick_body((md_str_t){ct - 1, s + 1}, s + ct, size - ct);
    }

    md_track_keys_t keys = {key, {0, NULL, 0}};
    md_track_token_t t;
    char good[MD_TRACK_TOKEN_SIZE];
    /* only tokens this key made verify: remaking one gives the input back */
    if (md_track_token_parse(&keys, s, size, &t) == MD_OK) {
        size_t n = md_track_token_make(&key, &t, good);
        if (n != size || memcmp(good, s, n) != 0) {
            fprintf(stderr, "a verified token that is not the one its fields make\n");
            abort();
        }
    }
    if (md_track_token_parse_b32(&keys, s, size, &t) == MD_OK) {
        size_t n = md_track_token_make_b32(&key, &t, good);
        if (n != size || strncasecmp(good, s, n) != 0) {
            fprintf(stderr, "a verified base32 token that is not the one its fields make\n");
            abort();
        }
    }
    return 0;
}
