/* Unit tests for md_json: the fast path accepts only what jansson accepts
 * (json_loadb with JSON_REJECT_DUPLICATES), with equal values, and takes the
 * common shapes of a request body itself. */
#include "md_json.h"
#include "tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int mismatches;

/* Checks the fast path against jansson on s[0..n): 1 when the fast path took it,
 * 0 when it left it to jansson. A disagreement is counted (and reported). */
static int
differ(const char *s, size_t n)
{
    json_error_t err;
    json_t *fast = md_json_parse(s, n);
    json_t *ref = json_loadb(s, n, JSON_REJECT_DUPLICATES, &err);
    int took = fast != NULL;
    if (fast && (ref == NULL || !json_equal(fast, ref))) {
        mismatches++;
        printf("# the fast path took what jansson %s: %.*s\n", ref ? "reads otherwise" : "refuses",
               (int)(n > 200 ? 200 : n), s);
    }
    json_decref(fast);
    json_decref(ref);
    return took;
}

static void
takes(const char *s, const char *what)
{
    ok(differ(s, strlen(s)) == 1 && mismatches == 0, "takes %s", what);
}

static void
leaves(const char *s, const char *what)
{
    ok(differ(s, strlen(s)) == 0 && mismatches == 0, "leaves to jansson: %s", what);
}

int
main(void)
{
    takes("{}", "an empty object");
    takes(" [ ] ", "an empty array with whitespace around");
    takes(
        "{\"from\":\"Acme <billing@acme.example>\",\"to\":[\"a@b.example\",\"c@d.example\"],"
        "\"subject\":\"Hi\",\"text\":\"line 1\\nline 2\",\"html\":\"<p>caf\\u00e9 \\\"q\\\"</p>\","
        "\"tags\":[\"x\"],\"metadata\":{\"n\":1,\"f\":-2.5e3,\"t\":true,\"u\":false,\"z\":null}}",
        "a send body");
    takes("[\"\\u20ac \\/ \\b\\f\\r\\t\\\\\"]", "every simple escape and a 3-octet \\u");
    takes("[\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"]", "UTF-8 of 2, 3 and 4 octets");
    takes("[0, -0, 123456789012345678, -123456789012345678, 1.5, -0.0, 1e10, 2E-3]",
          "integers that fit and reals");
    takes("{\"\":1, \"a\\u00e9\":2}", "an empty key and an escaped key");

    leaves("", "empty input");
    leaves("3", "a number at the top (jansson wants an object or array)");
    leaves("\"x\"", "a string at the top");
    leaves("{\"a\":1,\"a\":2}", "a duplicate member");
    leaves("{\"a\":1,}", "a trailing comma");
    leaves("[1 2]", "a missing comma");
    leaves("[01]", "a leading zero");
    leaves("[1.]", "a fraction without digits");
    leaves("[1e]", "an exponent without digits");
    leaves("[-]", "a lone minus");
    leaves("[1x]", "a number run into a letter");
    leaves("[1234567890123456789]", "19 digits (jansson decides about overflow)");
    leaves("[1e999]", "a real out of range");
    leaves("[\"\\u0000\"]", "an escaped NUL");
    leaves("[\"\\ud83d\\ude00\"]", "a surrogate pair");
    leaves("[\"\\ud800\"]", "a lone surrogate");
    leaves("[\"\\x\"]", "an unknown escape");
    leaves("[\"a\nb\"]", "a raw control character in a string");
    leaves("[\"\xc3\"]", "a truncated UTF-8 sequence");
    leaves("[\"\xc0\xaf\"]", "an overlong form");
    leaves("[\"\xed\xa0\x80\"]", "a surrogate in UTF-8");
    leaves("[\"\xf4\x90\x80\x80\"]", "past U+10FFFF");
    leaves("[\"abc", "an unterminated string");
    leaves("{\"a\" 1}", "a missing colon");
    leaves("{} x", "garbage after the value");
    leaves("[tru]", "a cut literal");
    leaves("{1:2}", "a key that is not a string");

    /* Deep nesting: past the fast path's limit, jansson decides. */
    {
        char deep[2 * 300 + 1];
        memset(deep, '[', 300);
        memset(deep + 300, ']', 300);
        deep[600] = '\0';
        leaves(deep, "300 nested arrays");
        deep[100] = '\0';
        char shallow[101];
        memset(shallow, '[', 50);
        memset(shallow + 50, ']', 50);
        shallow[100] = '\0';
        takes(shallow, "50 nested arrays");
    }
    /* Strings longer than the stack buffer, with and without escapes. */
    {
        size_t n = 3000;
        char *s = malloc(n + 16);
        strcpy(s, "{\"k");
        for (size_t i = 3; i < n; i++)
            s[i] = (char)('a' + i % 26);
        strcpy(s + n, "\":\"x\\n\"}");
        takes(s, "a 3,000-octet key");
        strcpy(s, "[\"");
        for (size_t i = 2; i < n; i += 2)
            memcpy(s + i, "\\t", 2);
        strcpy(s + n, "\"]");
        takes(s, "a 1,500-escape string");
        free(s);
    }

    /* Differential: every prefix and many one-octet mutations of a body. */
    {
        const char *body =
            "{\"from\":\"A <a@b.example>\",\"to\":[\"c@d.example\"],\"subject\":\"S\\u00e9\","
            "\"text\":\"t\\n\",\"metadata\":{\"n\":-12,\"r\":0.25,\"b\":[true,false,null]}}";
        size_t n = strlen(body);
        int took = 0, total = 0;
        for (size_t k = 0; k <= n; k++, total++)
            took += differ(body, k);
        static const char alphabet[] = "{}[]\":,\\u0-1eE.+ tfnx\x80\xc3\xff\n";
        unsigned seed = 7;
        char *m = malloc(n);
        for (int round = 0; round < 20000; round++, total++) {
            memcpy(m, body, n);
            for (int j = 0; j < 1 + round % 3; j++) {
                seed = seed * 1103515245u + 12345u;
                size_t at = (seed >> 8) % n;
                seed = seed * 1103515245u + 12345u;
                m[at] = alphabet[(seed >> 8) % (sizeof(alphabet) - 1)];
            }
            took += differ(m, n);
        }
        free(m);
        is_int(mismatches, 0,
               "%d prefixes and mutations of a body: the fast path never disagrees "
               "with jansson (it took %d)",
               total, took);
        ok(took > 1000, "and it took a good share of the valid ones itself (%d)", took);
    }
    return done_testing();
}
