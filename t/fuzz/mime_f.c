/*
 * md_mime_build on any field contents. The input is split at NUL bytes into
 * the From display name, the Subject (also the first To's name), the text
 * part, the html part, an extra header's name and its value. Whatever is
 * accepted comes out as a message a mail system takes as is: ASCII only
 * (printable in the header section, no NUL in the body), CRLF line ends with no bare CR or LF, no
 * line over 998 octets, and a header section where every line is a field "Name:" or a continuation:
 * no field a value could have injected.
 */
#include "md_buf.h"
#include "md_mime.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char md_fuzz_target[] = "mime";

static int
fixed_random(void *ctx, void *buf, size_t n)
{
    (void)ctx;
    memset(buf, 'q', n);
    return MD_OK;
}

/* Prints the message (its first 4 KB) with the reason, then aborts. */
static void
refuse(const unsigned char *o, size_t len, const char *why, size_t at)
{
    fprintf(stderr, "%s at octet %zu of the message:\n", why, at);
    for (size_t i = 0; i < len && i < 4096; i++)
        fprintf(stderr, o[i] == '\n' || (o[i] >= 0x20 && o[i] < 0x7f) ? "%c" : "<%02x>", o[i]);
    fputc('\n', stderr);
    abort();
}

static void
check(const unsigned char *o, size_t len)
{
    size_t line = 0;
    bool head = true;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = o[i];
        /* RFC 5322 text: a body may hold any ASCII but NUL (RFC 2045 7bit data),
         * a header field only printable characters and folding white space */
        if (c >= 0x80 || c == 0 || (head && c < 0x20 && c != '\r' && c != '\n' && c != '\t'))
            refuse(o, len,
                   head ? "a header byte that is not printable ASCII"
                        : "a body byte that is NUL or not ASCII",
                   i);
        if (c == '\r') {
            if (i + 1 >= len || o[i + 1] != '\n')
                refuse(o, len, "a bare CR", i);
            continue;
        }
        if (c != '\n') {
            line++;
            continue;
        }
        if (i == 0 || o[i - 1] != '\r')
            refuse(o, len, "a bare LF", i);
        if (line > 998)
            refuse(o, len, "a line over 998 octets", i);
        if (line == 0)
            head = false;
        line = 0;
        if (head && i + 1 < len && o[i + 1] != ' ' && o[i + 1] != '\t' && o[i + 1] != '\r') {
            size_t j = i + 1;
            while (j < len && o[j] > ' ' && o[j] < 0x7f && o[j] != ':')
                j++;
            if (j == i + 1 || j >= len || o[j] != ':')
                refuse(o, len, "a header line that is no field", i + 1);
        }
    }
    if (head)
        refuse(o, len, "no end of the header section", len);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (s == NULL)
        abort();
    memcpy(s, data, size);
    s[size] = '\0';
    const char *f[6] = {NULL};
    int k = 0;
    f[k++] = s;
    for (size_t i = 0; i < size && k < 6; i++)
        if (s[i] == '\0')
            f[k++] = s + i + 1;
    md_mime_addr_t to[2] = {{f[1], "c@d.example"}, {NULL, "e@xn--bcher-kva.example"}};
    md_mime_header_t h = {f[4] ? f[4] : "X-Campaign", f[5] ? f[5] : "v"};
    md_mime_message_t m = {.from = {f[0], "a@b.example"},
                           .to = to,
                           .nto = 2,
                           .subject = f[1],
                           .text = {f[2] ? strlen(f[2]) : 0, f[2]},
                           .html = {f[3] ? strlen(f[3]) : 0, f[3]},
                           .headers = &h,
                           .nheaders = 1,
                           .message_id = "<x@y.example>",
                           .date = 1700000000,
                           .mailerd_id = "0190b8e4-8b1c-7cc0-9a0e-2b7c1d2e3f40",
                           .random = fixed_random};
    if (m.text.data == NULL)
        m.text = (md_str_t){0, ""};
    md_buf_t out;
    md_buf_init(&out);
    char err[128];
    if (md_mime_build(&m, &out, err, sizeof(err)) == MD_OK)
        check((const unsigned char *)out.pos, md_buf_len(&out));
    else if (md_buf_len(&out) != 0) {
        fprintf(stderr, "a refused message left output\n");
        abort();
    }
    md_buf_free(&out);
    free(s);
    return 0;
}
