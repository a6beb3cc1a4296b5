/*
 * The drivers' readers of what a provider answered (SES, SendGrid, Postmark,
 * Mailgun; Postmark's batch answer and its message search too): a provider
 * that misbehaves, or anything between us and it, must not make mailerd read
 * out of bounds or record nonsense. The input is: a byte picking the reader,
 * two bytes of HTTP status, a Retry-After value up to the first newline, then
 * the body. Every result must have a known outcome, NUL-terminated strings,
 * a provider id only when sent, a code otherwise, and a finite retry hint that
 * is not negative.
 */
#include "md_conf.h"
#include "md_esp.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char md_fuzz_target[] = "esp_response";

static const char conf_text[] =
    "esp ses {\n driver ses;\n region us-west-2;\n access_key_id AKIDEXAMPLE;\n"
    " secret_access_key SECRETKEY1;\n}\n"
    "esp sendgrid {\n api_key SG.test;\n}\n"
    "esp postmark {\n server_token pm-server-token;\n message_stream broadcast;\n batch 8;\n}\n"
    "esp mailgun {\n api_key key-test;\n domain mg.example.com;\n}\n";

static md_esp_t *accounts[4];
static md_conf_t *conf; /* the accounts point into it */

static void
teardown(void)
{
    md_esp_destroy();
    md_conf_free(conf);
}

static void
setup(void)
{
    static int done;
    if (done)
        return;
    done = 1;
    char dir[] = "/tmp/md-fuzz-esp-XXXXXX";
    char path[64], err[256];
    if (mkdtemp(dir) == NULL)
        abort();
    snprintf(path, sizeof(path), "%s/main.conf", dir);
    FILE *f = fopen(path, "w");
    if (f == NULL || fputs(conf_text, f) < 0 || fclose(f) != 0)
        abort();
    conf = md_conf_load(path, dir, err, sizeof(err));
    if (conf == NULL || md_esp_init(conf, 0, err, sizeof(err)) != MD_OK) {
        fprintf(stderr, "the accounts do not load: %s\n", err);
        abort();
    }
    atexit(teardown);
    unlink(path);
    rmdir(dir);
    static const char *const names[] = {"ses", "sendgrid", "postmark", "mailgun"};
    for (int i = 0; i < 4; i++)
        if ((accounts[i] = md_esp_get(names[i])) == NULL)
            abort();
}

static size_t
bounded(const char *s, size_t cap)
{
    return strnlen(s, cap);
}

static void
check(const md_esp_result_t *r, const char *what)
{
    const char *bad = NULL;
    if (bounded(r->provider_id, sizeof(r->provider_id)) == sizeof(r->provider_id) ||
        bounded(r->code, sizeof(r->code)) == sizeof(r->code) ||
        bounded(r->text, sizeof(r->text)) == sizeof(r->text))
        bad = "a string without its NUL";
    else if (r->outcome != MD_ESP_SENT && r->outcome != MD_ESP_RETRYABLE &&
             r->outcome != MD_ESP_PERMANENT)
        bad = "an unknown outcome";
    else if (r->outcome != MD_ESP_SENT && r->code[0] == '\0')
        bad = "a failure without a code";
    else if (!isfinite(r->retry_after) || r->retry_after < 0)
        bad = "a retry hint that is negative or not finite";
    if (bad) {
        fprintf(stderr, "%s: %s (outcome %d, code %.64s, retry_after %g)\n", what, bad, r->outcome,
                r->code, r->retry_after);
        abort();
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    setup();
    if (size < 3)
        return 0;
    int which = data[0] % 7; /* 0-3 read_response, 4 Postmark batch, 5 Postmark search */
    int status = 100 + (data[1] << 8 | data[2]) % 500;
    const char *p = (const char *)data + 3, *end = (const char *)data + size;
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    char retry[64] = "";
    size_t rl = 0;
    if (nl) {
        rl = (size_t)(nl - p) < sizeof(retry) - 1 ? (size_t)(nl - p) : sizeof(retry) - 1;
        memcpy(retry, p, rl);
        retry[rl] = '\0';
        p = nl + 1;
    }
    /* the client hands over a NUL-terminated body */
    size_t blen = (size_t)(end - p);
    char *body = malloc(blen + 1);
    if (body == NULL)
        abort();
    memcpy(body, p, blen);
    body[blen] = '\0';
    md_http_client_header_t hdr[3] = {{"Retry-After", retry},
                                      {"Content-Type", "application/json"},
                                      {"X-Message-Id", "sg-fuzz-1"}};
    md_http_client_response_t h;
    memset(&h, 0, sizeof(h));
    h.status = status;
    h.detail = "";
    h.request_sent = true;
    h.headers = nl ? hdr : hdr + 1;
    h.nheaders = nl ? 3 : 2;
    h.body = (md_str_t){blen, body};
    md_esp_response_t resp = {&h};
    md_esp_result_t res[8];
    memset(res, 0x5a, sizeof(res));
    if (which < 4) {
        md_esp_t *e = accounts[which];
        e->driver->read_response(e, &resp, &res[0]);
        check(&res[0], e->conf->name);
    } else if (which == 4) {
        md_esp_t *e = accounts[2];
        size_t n = 1 + data[1] % 8;
        e->driver->read_batch(e, &resp, n, res);
        for (size_t i = 0; i < n; i++)
            check(&res[i], "postmark batch");
    } else {
        md_esp_t *e = accounts[2];
        int rc = e->driver->read_lookup(e, &resp, &res[0]);
        if (rc == MD_OK && res[0].outcome != MD_ESP_SENT) {
            fprintf(stderr, "postmark search: found, but not recorded sent\n");
            abort();
        }
        if (rc == MD_OK || rc == MD_ERROR)
            check(&res[0], "postmark search");
        else if (rc != MD_DECLINED) {
            fprintf(stderr, "postmark search: rc %d\n", rc);
            abort();
        }
    }
    free(body);
    return 0;
}
