/* Unit tests for md_buf, md_pool and md_id. */
#include "md_buf.h"
#include "md_pool.h"
#include "md_id.h"
#include "md_list.h"
#include "tap.h"

#include <stdlib.h>

static int cleanup_order[4], ncleanup;

static void
record(void *data)
{
    cleanup_order[ncleanup++] = *(int *)data;
}

int
main(void)
{
    md_buf_t b;
    md_buf_init(&b);
    md_buf_append_str(&b, "hello");
    md_buf_printf(&b, " %d %s", 42, "world");
    is_int(md_buf_len(&b), 14, "append and printf grow the buffer");
    ok(memcmp(b.pos, "hello 42 world", 14) == 0, "content is kept in order");
    b.pos += 6;
    md_buf_compact(&b);
    ok(b.pos == b.start && memcmp(b.pos, "42 world", 8) == 0,
       "compact moves live data to the front");

    /* A long printf takes the second vsnprintf path. */
    md_buf_reset(&b);
    char big[5000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = 0;
    md_buf_printf(&b, "[%s]", big);
    is_int(md_buf_len(&b), sizeof(big) + 1, "printf larger than the free room");

    md_buf_reset(&b);
    md_buf_append_json_escaped(&b, "a\"b\\c\n\x01\xc3\xa9\xff", 10);
    md_buf_append(&b, "", 1);
    is_str(b.pos, "a\\\"b\\\\c\\n\\u0001\xc3\xa9\xef\xbf\xbd",
           "JSON escaping keeps UTF-8 and replaces invalid bytes");
    md_buf_reset(&b);
    md_buf_append_json_escaped(&b, "\xed\xa0\x80", 3); /* a UTF-16 surrogate is not UTF-8 */
    is_int(md_buf_len(&b), 9, "surrogates are replaced byte by byte");
    md_buf_free(&b);

    md_pool_t *p = md_pool_create(256);
    char *s1 = md_palloc(p, 10);
    char *s2 = md_palloc(p, 1000); /* its own block */
    char *s3 = md_palloc(p, 10);
    ok(((uintptr_t)s1 % 16) == 0 && ((uintptr_t)s2 % 16) == 0 && ((uintptr_t)s3 % 16) == 0,
       "pool allocations are 16-byte aligned");
    memset(s2, 1, 1000);
    ok(s3 == s1 + 16, "a large allocation does not waste the current block");
    int one = 1, two = 2;
    md_pool_cleanup_add(p, record, &one);
    md_pool_cleanup_add(p, record, &two);
    md_pool_reset(p);
    ok(ncleanup == 2 && cleanup_order[0] == 2 && cleanup_order[1] == 1,
       "cleanups run in reverse order on reset");
    is_str(md_pstrndup(p, "abcdef", 3), "abc", "pstrndup terminates");
    md_pool_destroy(p);

    /* A large block linked after the current one, then a block change: the large
     * block must stay on the chain (LeakSanitizer reports it otherwise). */
    p = md_pool_create(256);
    char *large = md_palloc(p, 4000);
    memset(large, 2, 4000);
    for (int i = 0; i < 40; i++)
        memset(md_palloc(p, 100), 3, 100);
    ok(large[3999] == 2, "a large block survives later block changes");
    md_pool_reset(p);
    md_pool_destroy(p);

    char u1[MD_UUID_STRLEN + 1], u2[MD_UUID_STRLEN + 1];
    md_id_init();
    md_uuid7(u1);
    md_uuid7(u2);
    is_int(strlen(u1), 36, "uuid has 36 characters");
    ok(u1[14] == '7' && strchr("89ab", u1[19]) != NULL, "version 7, RFC 9562 variant");
    ok(strcmp(u1, u2) < 0, "uuids made in order sort in order");
    int sorted = 1;
    for (int i = 0; i < 10000; i++) {
        md_uuid7(u2);
        if (strcmp(u1, u2) >= 0)
            sorted = 0;
        memcpy(u1, u2, sizeof(u1));
    }
    ok(sorted, "10000 uuids in a row are strictly increasing");
    typedef struct {
        int v;
        md_list_t node;
    } item_t;
    md_list_t head;
    item_t it[3] = {{1, {0}}, {2, {0}}, {3, {0}}};
    md_list_init(&head);
    ok(md_list_empty(&head) && md_list_first(&head) == NULL && md_list_last(&head) == NULL,
       "a new list is empty");
    for (int i = 0; i < 3; i++)
        md_list_insert_head(&head, &it[i].node);
    ok(md_list_data(md_list_first(&head), item_t, node)->v == 3 &&
           md_list_data(md_list_last(&head), item_t, node)->v == 1,
       "insert_head puts the newest first and keeps the oldest last");
    md_list_remove(&it[0].node);
    md_list_remove(&it[0].node); /* a removed node points at itself: harmless */
    ok(md_list_data(md_list_last(&head), item_t, node)->v == 2,
       "remove takes a node out, twice is safe");
    md_list_remove(&it[1].node);
    md_list_remove(&it[2].node);
    ok(md_list_empty(&head), "removing every node empties the list");
    return done_testing();
}
