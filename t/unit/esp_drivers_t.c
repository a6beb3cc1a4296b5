/*
 * The remote ESP drivers (SES, SendGrid, Postmark, Mailgun) without a network:
 * their esp NAME { } directives loaded from temp files (credentials, *_file,
 * ${ENV}, defaults, errors with FILE:LINE), each build_request checked field by
 * field (JSON parsed with jansson, Mailgun's multipart split into parts, the SES
 * signature checked with md_sigv4_verify), and each read_response mapping for
 * every class of answer: sent with the provider's id, throttled with
 * Retry-After in seconds and as an HTTP-date, 5xx, permanent with the
 * provider's code and message kept, and transport errors.
 */
#include "md_esp.h"
#include "md_sigv4.h"
#include "tap.h"

#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char tmp[512];
static char err[1024];

static const char *
put(const char *name, const char *text)
{
    static char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", tmp, name);
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        printf("Bail out! cannot write %s\n", path);
        exit(1);
    }
    fputs(text, f);
    fclose(f);
    return path;
}

static md_conf_t *
load(const char *text)
{
    err[0] = '\0';
    return md_conf_load(put("main.conf", text), tmp, err, sizeof(err));
}

/* ---- fixtures ------------------------------------------------------------------ */

#define MSG_ID "0190a1b2-c3d4-7e5f-8a6b-0c1d2e3f4a5b"

static const md_mime_addr_t t_cc[] = {{NULL, "cc@example.com"}, {"Dup", "ANN@example.com"}};
static const md_mime_addr_t t_bcc[] = {{NULL, "bcc@example.org"}};
static const md_mime_addr_t t_reply[] = {{"Help Desk", "reply@example.com"}};
static const md_mime_header_t t_headers[] = {{"X-Campaign", "spring"}, {"X-Note", "caf\xc3\xa9"}};
#define T_SUBJECT                                                                                  \
    "Gr\xc3\xbc\xc3\x9f"                                                                           \
    "e \xe2\x80\x93 \xe2\x9c\x93"
#define T_TEXT "Hello\nworld"
#define T_HTML "<p>Hello \"w\"</p>"

static md_esp_msg_t
t_msg(void)
{
    md_esp_msg_t m;
    memset(&m, 0, sizeof(m));
    m.id = MSG_ID;
    m.tenant_id = "t1";
    m.attempt = 1;
    m.from.name = "Zo\xc3\xab Sender";
    m.from.addr = "from@example.com";
    m.to.name = "Ann, Jr.";
    m.to.addr = "ann@example.com";
    m.cc = t_cc;
    m.ncc = 2;
    m.bcc = t_bcc;
    m.nbcc = 1;
    m.reply_to = t_reply;
    m.nreply_to = 1;
    m.subject = T_SUBJECT;
    m.text.data = T_TEXT;
    m.text.len = strlen(T_TEXT);
    m.html.data = T_HTML;
    m.html.len = strlen(T_HTML);
    m.headers = t_headers;
    m.nheaders = 2;
    return m;
}

static void
req_init(md_esp_request_t *req)
{
    memset(req, 0, sizeof(*req));
    req->pool = md_pool_create(4096);
    md_buf_init(&req->body);
}

static void
req_free(md_esp_request_t *req)
{
    md_buf_free(&req->body);
    md_pool_destroy(req->pool);
}

static const char *
req_header(const md_esp_request_t *req, const char *name)
{
    for (size_t i = 0; i < req->nheaders; i++) {
        if (strcasecmp(req->headers[i].name, name) == 0)
            return req->headers[i].value;
    }
    return NULL;
}

static json_t *
req_json(const md_esp_request_t *req)
{
    json_error_t jerr;
    json_t *j = json_loadb(req->body.pos, md_buf_len(&req->body), 0, &jerr);
    if (j == NULL)
        printf("# json: %s: %.*s\n", jerr.text, (int)md_buf_len(&req->body), req->body.pos);
    return j;
}

static const char *
jstr(json_t *j, const char *path)
{
    /* "a.b.0.c": object keys and array indexes */
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", path);
    for (char *tok = strtok(buf, "."); tok && j; tok = strtok(NULL, ".")) {
        if (tok[0] >= '0' && tok[0] <= '9')
            j = json_array_get(j, (size_t)atoi(tok));
        else
            j = json_object_get(j, tok);
    }
    return json_string_value(j);
}

static size_t
jlen(json_t *j, const char *key)
{
    return json_array_size(json_object_get(j, key));
}

/* A response as the client reports it. */
typedef struct t_resp_s {
    md_http_client_response_t h;
    md_http_client_header_t hdr[4];
} t_resp_t;

static md_esp_response_t
t_answer(t_resp_t *r, int status, const char *body, const char *h1, const char *v1, const char *h2,
         const char *v2)
{
    memset(r, 0, sizeof(*r));
    r->h.status = status;
    r->h.detail = "";
    r->h.body.data = body ? body : "";
    r->h.body.len = body ? strlen(body) : 0;
    if (h1) {
        r->hdr[r->h.nheaders].name = h1;
        r->hdr[r->h.nheaders++].value = v1;
    }
    if (h2) {
        r->hdr[r->h.nheaders].name = h2;
        r->hdr[r->h.nheaders++].value = v2;
    }
    r->h.headers = r->hdr;
    md_esp_response_t resp = {&r->h};
    return resp;
}

static void
t_read(md_esp_t *e, int status, const char *body, const char *h1, const char *v1, const char *h2,
       const char *v2, md_esp_result_t *res)
{
    t_resp_t r;
    md_esp_response_t resp = t_answer(&r, status, body, h1, v1, h2, v2);
    memset(res, 0x5a, sizeof(*res));
    e->driver->read_response(e, &resp, res);
}

static void
t_transport(md_esp_t *e, const char *name)
{
    t_resp_t r;
    md_esp_response_t resp = t_answer(&r, 0, NULL, NULL, NULL, NULL, NULL);
    r.h.error = md_http_client_err_timeout;
    r.h.detail = "no response within 30s";
    r.h.request_sent = true;
    md_esp_result_t res;
    e->driver->read_response(e, &resp, &res);
    is_int(res.outcome, MD_ESP_RETRYABLE, "%s: a transport timeout is retryable", name);
    is_str(res.code, "timeout", "%s: the code is the client's error class", name);
    ok(strstr(res.text, "no response within 30s") != NULL, "%s: the detail is kept: %s", name,
       res.text);
    r.h.error = md_http_client_err_tls;
    r.h.detail = "certificate verify failed: hostname mismatch";
    r.h.request_sent = false;
    e->driver->read_response(e, &resp, &res);
    ok(res.outcome == MD_ESP_RETRYABLE && strcmp(res.code, "tls") == 0,
       "%s: a TLS failure is retryable with code tls", name);
}

static void
http_date(time_t t, char *buf, size_t n)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, n, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

/* ---- configuration ------------------------------------------------------------- */

static const char *t_accounts = "esp ses_primary {\n"
                                "    driver ses;\n"
                                "    region us-east-1;\n"
                                "    access_key_id AKIDEXAMPLE;\n"
                                "    secret_access_key_file ses.secret;\n"
                                "    configuration_set events;\n"
                                "    rate 14;\n"
                                "}\n"
                                "esp sg {\n"
                                "    driver sendgrid;\n"
                                "    api_key ${MD_T_SG_KEY};\n"
                                "    max_connections 3;\n"
                                "    connect_timeout 2s;\n"
                                "    response_timeout 10s;\n"
                                "}\n"
                                "esp pm {\n"
                                "    driver postmark;\n"
                                "    server_token_file pm.token;\n"
                                "    endpoint http://127.0.0.1:9999/;\n"
                                "}\n"
                                "esp mg {\n"
                                "    driver mailgun;\n"
                                "    api_key key-123;\n"
                                "    domain mg.example.com;\n"
                                "    tls_verify off;\n"
                                "    ca_file ca.pem;\n"
                                "}\n";

static void
test_conf(void)
{
    put("ses.secret", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY\n");
    put("pm.token", "pm-token-1\r\n");
    setenv("MD_T_SG_KEY", "SG.key.value", 1);
    md_conf_t *c = load(t_accounts);
    ok(c != NULL, "four remote accounts load: %s", err);
    if (c == NULL)
        return;
    is_int(c->nesp, 4, "four accounts");
    const md_esp_conf_t *ses = md_esp_conf_find(c, "ses_primary");
    const md_esp_conf_t *sg = md_esp_conf_find(c, "sg");
    const md_esp_conf_t *pm = md_esp_conf_find(c, "pm");
    const md_esp_conf_t *mg = md_esp_conf_find(c, "mg");
    is_int(ses->driver, MD_ESP_DRIVER_SES, "ses driver");
    is_str(ses->endpoint, "https://email.us-east-1.amazonaws.com", "ses default endpoint");
    is_str(ses->secret_access_key, "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
           "secret_access_key_file read, newline stripped");
    is_str(ses->configuration_set, "events", "configuration_set");
    ok(ses->session_token == NULL, "no session token");
    is_int(ses->rate, 14, "rate");
    is_int(ses->max_connections, 8, "max_connections defaults to 8");
    is_int(ses->tls_verify, 1, "tls_verify defaults to on");
    ok(fabs(ses->connect_timeout - 5) < 1e-9 && fabs(ses->response_timeout - 30) < 1e-9,
       "timeouts default to 5s and 30s");
    is_int(sg->driver, MD_ESP_DRIVER_SENDGRID, "sendgrid driver");
    is_str(sg->api_key, "SG.key.value", "api_key from ${ENV}");
    is_str(sg->endpoint, "https://api.sendgrid.com", "sendgrid default endpoint");
    is_int(sg->max_connections, 3, "max_connections");
    ok(fabs(sg->connect_timeout - 2) < 1e-9 && fabs(sg->response_timeout - 10) < 1e-9,
       "timeouts set");
    is_int(sg->rate, 0, "rate defaults to 0 (unlimited)");
    is_str(pm->server_token, "pm-token-1", "server_token_file read, CRLF stripped");
    is_str(pm->endpoint, "http://127.0.0.1:9999", "endpoint kept, trailing slash dropped");
    is_str(pm->message_stream, "outbound", "message_stream defaults to outbound");
    is_str(mg->endpoint, "https://api.mailgun.net", "mailgun default endpoint");
    is_str(mg->domain, "mg.example.com", "domain");
    is_int(mg->tls_verify, 0, "tls_verify off");
    char want[PATH_MAX];
    snprintf(want, sizeof(want), "%s/ca.pem", tmp);
    is_str(mg->ca_file, want, "ca_file resolved against the prefix");
    is_str(c->default_esp, "ses_primary", "the first account is the default");

    /* the registry: every driver found, no endpoint without md_app */
    ok(md_esp_init(c, 1, err, sizeof(err)) == MD_OK, "md_esp_init: %s", err);
    const char *names[] = {"ses_primary", "sg", "pm", "mg"};
    const char *drivers[] = {"ses", "sendgrid", "postmark", "mailgun"};
    for (int i = 0; i < 4; i++) {
        md_esp_t *e = md_esp_get(names[i]);
        ok(e && e->driver && strcmp(e->driver->name, drivers[i]) == 0 && e->endpoint == NULL &&
               e->driver->build_request && e->driver->read_response && !e->driver->deliver,
           "md_esp_get(%s): the %s driver, no endpoint without md_app", names[i], drivers[i]);
    }
    ok(md_esp_default() == md_esp_get("ses_primary"), "md_esp_default");
    md_esp_destroy();
    md_conf_free(c);
}

/* Loads text, expects failure with an error containing every one of want[]. */
static void
conf_fails(const char *text, const char *why, const char *w1, const char *w2)
{
    md_conf_t *c = load(text);
    ok(c == NULL && strstr(err, w1) != NULL && (w2 == NULL || strstr(err, w2) != NULL), "%s: %s",
       why, err);
    if (c)
        md_conf_free(c);
}

static void
test_conf_errors(void)
{
    conf_fails("esp a {\n driver ses;\n region us-east-1;\n access_key_id AK;\n}\n",
               "ses without a secret", "main.conf:", "secret_access_key");
    conf_fails("esp a {\n driver ses;\n access_key_id AK;\n secret_access_key S;\n}\n",
               "ses without a region", "main.conf:", "\"region\"");
    conf_fails("esp a {\n driver sendgrid;\n}\n", "sendgrid without api_key",
               "main.conf:", "\"api_key\" or \"api_key_file\"");
    conf_fails("esp a {\n driver postmark;\n}\n", "postmark without server_token",
               "main.conf:", "server_token");
    conf_fails("esp a {\n driver mailgun;\n api_key k;\n}\n", "mailgun without domain",
               "main.conf:", "\"domain\"");
    conf_fails("esp a {\n driver mailgun;\n domain d.example;\n}\n", "mailgun without api_key",
               "main.conf:", "api_key");
    conf_fails("esp a {\n driver sendgrid;\n api_key_file nope.key;\n}\n", "a missing key file",
               "main.conf:3:", "nope.key");
    put("empty.key", "\n");
    conf_fails("esp a {\n driver sendgrid;\n api_key_file empty.key;\n}\n", "an empty key file",
               "main.conf:3:", "empty");
    put("two.key", "line1\nline2\n");
    conf_fails("esp a {\n driver sendgrid;\n api_key_file two.key;\n}\n", "a two-line key file",
               "main.conf:3:", "more than one line");
    put("ok.key", "k\n");
    conf_fails("esp a {\n driver sendgrid;\n api_key x;\n api_key_file ok.key;\n}\n",
               "api_key and api_key_file both", "main.conf:4:", "both given");
    conf_fails("esp a {\n driver sendgrid;\n api_key_file ok.key;\n api_key x;\n}\n",
               "api_key_file then api_key", "main.conf:4:", "both given");
    conf_fails("esp a {\n driver sendgrid;\n api_key k;\n endpoint https://h/v3;\n}\n",
               "an endpoint with a path", "main.conf:4:", "no path");
    conf_fails("esp a {\n driver sendgrid;\n api_key k;\n endpoint api.sendgrid.com;\n}\n",
               "an endpoint without a scheme", "main.conf:4:", "https://host");
    conf_fails("esp a {\n driver smtp;\n}\n", "an unknown driver", "main.conf:2:", "\"mailgun\"");
    conf_fails("esp a {\n driver mailgun;\n api_key k;\n domain \"a/b\";\n}\n",
               "a domain with a slash", "main.conf:4:", "domain");
    conf_fails("esp a {\n driver sendgrid;\n api_key k;\n max_connections 0;\n}\n",
               "max_connections 0", "main.conf:4:", "max_connections");
    conf_fails("esp a {\n driver sendgrid;\n api_key ${MD_T_UNSET_VAR};\n}\n", "an unset ${ENV}",
               "main.conf:3:", "MD_T_UNSET_VAR");
    /* the sink still needs nothing */
    md_conf_t *c = load("esp sink { }\n");
    ok(c != NULL, "esp sink { } still loads: %s", err);
    if (c)
        md_conf_free(c);
    /* SES with a session token from a file, and a custom endpoint */
    put("tok", "FQoGZXIvYXdzE\n");
    c = load("esp s {\n driver ses;\n region eu-west-1;\n access_key_id AK;\n"
             " secret_access_key SK;\n session_token_file tok;\n"
             " endpoint https://127.0.0.1:8443;\n}\n");
    ok(c && strcmp(c->esp[0].session_token, "FQoGZXIvYXdzE") == 0 &&
           strcmp(c->esp[0].endpoint, "https://127.0.0.1:8443") == 0,
       "ses session_token_file and endpoint: %s", err);
    if (c)
        md_conf_free(c);
}

/* ---- drivers ------------------------------------------------------------------- */

static md_conf_t *t_conf;

static md_esp_t *
t_account(const char *name)
{
    md_esp_t *e = md_esp_get(name);
    if (e == NULL) {
        printf("Bail out! no account %s\n", name);
        exit(1);
    }
    return e;
}

static void
test_ses(void)
{
    md_esp_t *e = t_account("ses");
    md_esp_msg_t m = t_msg();
    md_esp_request_t req;
    md_esp_result_t res;
    req_init(&req);
    int rc = e->driver->build_request(e, &m, &req, &res);
    is_int(rc, MD_OK, "ses: build_request");
    is_str(req.method, "POST", "ses: POST");
    is_str(req.path, "/v2/email/outbound-emails", "ses: path");
    is_str(req_header(&req, "Content-Type"), "application/json", "ses: content type");
    const char *authz = req_header(&req, "Authorization");
    ok(authz && strncmp(authz, "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/", 40) == 0 &&
           strstr(authz, "/us-west-2/ses/aws4_request") &&
           strstr(authz, "SignedHeaders=content-type;host;x-amz-date;x-amz-security-token"),
       "ses: Authorization: %s", authz ? authz : "(none)");
    is_str(req_header(&req, "X-Amz-Security-Token"), "TOKEN123", "ses: session token sent");
    ok(req_header(&req, "X-Amz-Date") != NULL, "ses: X-Amz-Date");
    ok(req_header(&req, "Host") == NULL, "ses: no Host header (the client's)");

    json_t *j = req_json(&req);
    ok(j != NULL, "ses: the body is JSON");
    is_str(jstr(j, "FromEmailAddress"), "=?UTF-8?B?Wm/DqyBTZW5kZXI=?= <from@example.com>",
           "ses: FromEmailAddress, non-ASCII name encoded");
    json_t *dst = json_object_get(j, "Destination");
    is_str(jstr(dst, "ToAddresses.0"), "\"Ann, Jr.\" <ann@example.com>", "ses: To, name quoted");
    is_int(jlen(dst, "CcAddresses"), 2, "ses: two Cc");
    is_str(jstr(dst, "CcAddresses.0"), "cc@example.com", "ses: Cc 0");
    is_str(jstr(dst, "BccAddresses.0"), "bcc@example.org", "ses: Bcc");
    is_str(jstr(j, "ReplyToAddresses.0"), "Help Desk <reply@example.com>", "ses: ReplyTo");
    is_str(jstr(j, "Content.Simple.Subject.Data"), T_SUBJECT, "ses: Subject (UTF-8)");
    is_str(jstr(j, "Content.Simple.Subject.Charset"), "UTF-8", "ses: Subject charset");
    is_str(jstr(j, "Content.Simple.Body.Text.Data"), T_TEXT, "ses: Text");
    is_str(jstr(j, "Content.Simple.Body.Html.Data"), T_HTML, "ses: Html");
    is_str(jstr(j, "Content.Simple.Headers.0.Name"), "X-Mailerd-Message-Id", "ses: our header");
    is_str(jstr(j, "Content.Simple.Headers.0.Value"), MSG_ID, "ses: our id in the header");
    is_str(jstr(j, "Content.Simple.Headers.1.Name"), "X-Campaign", "ses: extra header");
    is_str(jstr(j, "Content.Simple.Headers.1.Value"), "spring", "ses: extra header value");
    is_str(jstr(j, "Content.Simple.Headers.2.Value"),
           "=?UTF-8?B?Y2Fmw6k=?=", "ses: non-ASCII header value encoded");
    is_str(jstr(j, "EmailTags.0.Name"), "mailerd_message_id", "ses: tag name");
    is_str(jstr(j, "EmailTags.0.Value"), MSG_ID, "ses: tag value");
    is_str(jstr(j, "ConfigurationSetName"), "cs1", "ses: ConfigurationSetName");
    json_decref(j);

    /* the signature verifies as the mock (and SES) would check it */
    md_sigv4_header_t rh[MD_ESP_MAX_HEADERS + 2];
    size_t nrh = 0;
    rh[nrh].name = (md_str_t){4, "Host"};
    rh[nrh++].value =
        (md_str_t){strlen("email.us-west-2.amazonaws.com"), "email.us-west-2.amazonaws.com"};
    for (size_t i = 0; i < req.nheaders; i++) {
        rh[nrh].name = (md_str_t){strlen(req.headers[i].name), req.headers[i].name};
        rh[nrh++].value = (md_str_t){strlen(req.headers[i].value), req.headers[i].value};
    }
    md_sigv4_received_t rq;
    memset(&rq, 0, sizeof(rq));
    rq.method = (md_str_t){4, "POST"};
    rq.path = (md_str_t){strlen(req.path), req.path};
    rq.query = (md_str_t){0, ""};
    rq.headers = rh;
    rq.nheaders = nrh;
    rq.body = (md_str_t){md_buf_len(&req.body), req.body.pos};
    md_sigv4_cred_t cred;
    memset(&cred, 0, sizeof(cred));
    cred.access_key_id = (md_str_t){11, "AKIDEXAMPLE"};
    cred.secret_key = (md_str_t){10, "SECRETKEY1"};
    cred.session_token = (md_str_t){8, "TOKEN123"};
    cred.region = (md_str_t){9, "us-west-2"};
    cred.service = (md_str_t){3, "ses"};
    md_sigv4_out_t out;
    md_sigv4_out_init(&out);
    md_sigv4_verdict_t v = md_sigv4_verify(&rq, &cred, time(NULL), 300, &out);
    is_str(md_sigv4_verdict_name(v), "verified", "ses: md_sigv4_verify accepts the request (%s)",
           out.reason ? out.reason : "");
    cred.secret_key = (md_str_t){10, "SECRETKEY2"};
    v = md_sigv4_verify(&rq, &cred, time(NULL), 300, &out);
    is_str(md_sigv4_verdict_name(v), "bad_signature", "ses: a wrong key does not verify");
    cred.secret_key = (md_str_t){10, "SECRETKEY1"};
    rh[0].value =
        (md_str_t){strlen("email.eu-west-1.amazonaws.com"), "email.eu-west-1.amazonaws.com"};
    v = md_sigv4_verify(&rq, &cred, time(NULL), 300, &out);
    is_str(md_sigv4_verdict_name(v), "bad_signature", "ses: the Host is signed");
    md_sigv4_out_free(&out);
    req_free(&req);

    /* answers */
    t_read(e, 200, "{\"MessageId\":\"0100018f-abc\"}", NULL, NULL, NULL, NULL, &res);
    ok(res.outcome == MD_ESP_SENT && strcmp(res.provider_id, "0100018f-abc") == 0,
       "ses: 200 -> sent with MessageId");
    t_read(e, 429, "{\"message\":\"Maximum sending rate exceeded.\"}", "x-amzn-ErrorType",
           "TooManyRequestsException:http://internal.amazon.com/coral/com.amazonaws.sesv2/",
           "Retry-After", "7", &res);
    ok(res.outcome == MD_ESP_RETRYABLE && strcmp(res.code, "TooManyRequestsException") == 0 &&
           fabs(res.retry_after - 7) < 1e-9,
       "ses: 429 TooManyRequestsException -> retryable, Retry-After 7 (%s %g)", res.code,
       res.retry_after);
    t_read(e, 400, "{\"__type\":\"LimitExceededException\",\"message\":\"limit\"}", NULL, NULL,
           NULL, NULL, &res);
    ok(res.outcome == MD_ESP_RETRYABLE && strcmp(res.code, "LimitExceededException") == 0,
       "ses: LimitExceededException -> retryable");
    t_read(e, 400, "{\"message\":\"Email address is not verified.\"}", "x-amzn-ErrorType",
           "MessageRejected:http://internal.amazon.com/coral/com.amazonaws.sesv2/", NULL, NULL,
           &res);
    ok(res.outcome == MD_ESP_PERMANENT && strcmp(res.code, "MessageRejected") == 0 &&
           strcmp(res.text, "Email address is not verified.") == 0,
       "ses: MessageRejected -> permanent, code and message kept (%s: %s)", res.code, res.text);
    t_read(e, 400,
           "{\"__type\":\"com.amazonaws.sesv2#MailFromDomainNotVerifiedException\","
           "\"message\":\"not verified\"}",
           NULL, NULL, NULL, NULL, &res);
    ok(res.outcome == MD_ESP_PERMANENT &&
           strcmp(res.code, "MailFromDomainNotVerifiedException") == 0,
       "ses: __type with a namespace -> permanent (%s)", res.code);
    t_read(e, 400, "{\"code\":\"BadRequestException\",\"message\":\"bad\"}", NULL, NULL, NULL, NULL,
           &res);
    ok(res.outcome == MD_ESP_PERMANENT && strcmp(res.code, "BadRequestException") == 0 &&
           strcmp(res.text, "bad") == 0,
       "ses: BadRequestException from the body's code -> permanent");
    t_read(e, 400, "{\"message\":\"suspended\"}", "x-amzn-ErrorType", "AccountSuspendedException",
           NULL, NULL, &res);
    ok(res.outcome == MD_ESP_RETRYABLE && strcmp(res.code, "AccountSuspendedException") == 0,
       "ses: AccountSuspendedException -> retryable (the account, not the message)");
    /* credentials: the account's fault, never the message's */
    static const char *const ses_auth[] = {
        "SignatureDoesNotMatch",
        "InvalidSignatureException",
        "IncompleteSignatureException",
        "UnrecognizedClientException",
        "MissingAuthenticationToken",
        "MissingAuthenticationTokenException",
        "InvalidClientTokenId",
        "InvalidAccessKeyId",
        "ExpiredToken",
        "ExpiredTokenException",
        "AccessDenied",
        "AccessDeniedException",
        "NotAuthorizedException",
    };
    for (size_t i = 0; i < sizeof(ses_auth) / sizeof(ses_auth[0]); i++) {
        char hv[128];
        snprintf(hv, sizeof(hv), "%s:http://internal.amazon.com/coral/com.amazonaws.sesv2/",
                 ses_auth[i]);
        t_read(e, 403, "{\"message\":\"The request signature we calculated does not match\"}",
               "x-amzn-ErrorType", hv, NULL, NULL, &res);
        ok(res.outcome == MD_ESP_RETRYABLE && strcmp(res.code, "auth_failed") == 0 &&
               strncmp(res.text, ses_auth[i], strlen(ses_auth[i])) == 0 &&
               strstr(res.text, "signature we calculated") != NULL,
           "ses: 403 %s -> retryable auth_failed, code and message kept (%s)", ses_auth[i],
           res.text);
    }
    t_read(e, 400,
           "{\"__type\":\"com.amazonaws.sesv2#IncompleteSignatureException\","
           "\"message\":\"Authorization header requires 'Credential'\"}",
           NULL, NULL, NULL, NULL, &res);
    ok(res.outcome == MD_ESP_RETRYABLE && strcmp(res.code, "auth_failed") == 0 &&
           strstr(res.text, "IncompleteSignatureException: Authorization header") != NULL,
       "ses: an auth error by its code whatever the status (400) -> auth_failed (%s)", res.text);
    t_read(e, 403, "", NULL, NULL, NULL, NULL, &res);
    ok(res.outcome == MD_ESP_RETRYABLE && strcmp(res.code, "auth_failed") == 0 &&
           strncmp(res.text, "http_403: ", 10) == 0,
       "ses: a bare 403 -> auth_failed (%s)", res.text);
    t_read(e, 401, "{\"message\":\"nope\"}", NULL, NULL, NULL, NULL, &res);
    ok(res.outcome == MD_ESP_RETRYABLE && strcmp(res.code, "auth_failed") == 0 &&
           strcmp(res.text, "http_401: nope") == 0,
       "ses: a bare 401 -> auth_failed (%s)", res.text);
    t_read(e, 400, "{\"message\":\"Illegal address\"}", "x-amzn-ErrorType", "MessageRejected", NULL,
           NULL, &res);
    ok(res.outcome == MD_ESP_PERMANENT && strcmp(res.code, "MessageRejected") == 0,
       "ses: a rejected address stays permanent beside the auth errors");
    t_read(e, 503, "{\"message\":\"Service Unavailable\"}", NULL, NULL, NULL, NULL, &res);
    ok(res.outcome == MD_ESP_RETRYABLE && strcmp(res.code, "http_503") == 0,
       "ses: 503 -> retryable (%s)", res.code);
    t_read(e, 500, "{\"message\":\"x\"}", "x-amzn-ErrorType", "InternalFailure", NULL, NULL, &res);
    ok(res.outcome == MD_ESP_RETRYABLE && strcmp(res.code, "InternalFailure") == 0,
       "ses: 500 InternalFailure -> retryable");
    t_read(e, 429, "", NULL, NULL, NULL, NULL, &res);
    ok(res.outcome == MD_ESP_RETRYABLE && strcmp(res.code, "throttled") == 0 &&
           res.retry_after == 0,
       "ses: a bare 429 -> retryable throttled, no hint");
    t_transport(e, "ses");

    /* a message with neither part is this provider's permanent refusal */
    m.text.data = NULL;
    m.html.data = NULL;
    req_init(&req);
    rc = e->driver->build_request(e, &m, &req, &res);
    ok(rc == MD_ERROR && res.outcome == MD_ESP_PERMANENT, "ses: no content -> permanent");
    req_free(&req);
}

static void
test_ses_host_port(void)
{
    /* the signed Host matches what the client sends for a custom endpoint */
    md_esp_t *e = t_account("ses_local");
    md_esp_msg_t m = t_msg();
    m.html.data = NULL;
    md_esp_request_t req;
    md_esp_result_t res;
    req_init(&req);
    ok(e->driver->build_request(e, &m, &req, &res) == MD_OK, "ses (custom endpoint): build");
    md_sigv4_header_t rh[MD_ESP_MAX_HEADERS + 1];
    size_t nrh = 0;
    rh[nrh].name = (md_str_t){4, "host"};
    rh[nrh++].value = (md_str_t){14, "127.0.0.1:8443"};
    for (size_t i = 0; i < req.nheaders; i++) {
        rh[nrh].name = (md_str_t){strlen(req.headers[i].name), req.headers[i].name};
        rh[nrh++].value = (md_str_t){strlen(req.headers[i].value), req.headers[i].value};
    }
    md_sigv4_received_t rq = {{4, "POST"}, {strlen(req.path), req.path},         {0, ""}, rh,
                              nrh,         {md_buf_len(&req.body), req.body.pos}};
    md_sigv4_cred_t cred = {{4, "AKL1"}, {3, "SKL"}, {0, NULL}, {9, "eu-west-1"}, {3, "ses"}};
    md_sigv4_out_t out;
    md_sigv4_out_init(&out);
    md_sigv4_verdict_t v = md_sigv4_verify(&rq, &cred, time(NULL), 300, &out);
    is_str(md_sigv4_verdict_name(v), "verified", "ses (custom endpoint): host:port signed (%s)",
           out.reason ? out.reason : "");
    ok(req_header(&req, "X-Amz-Security-Token") == NULL, "ses: no token header without a token");
    json_t *j = req_json(&req);
    ok(j && json_object_get(j, "ConfigurationSetName") == NULL &&
           json_object_get(
               json_object_get(json_object_get(json_object_get(j, "Content"), "Simple"), "Body"),
               "Html") == NULL,
       "ses: no ConfigurationSetName or Html when absent");
    json_decref(j);
    md_sigv4_out_free(&out);
    req_free(&req);
}

static void
test_sendgrid(void)
{
    md_esp_t *e = t_account("sendgrid");
    md_esp_msg_t m = t_msg();
    md_esp_request_t req;
    md_esp_result_t res;
    req_init(&req);
    is_int(e->driver->build_request(e, &m, &req, &res), MD_OK, "sendgrid: build_request");
    is_str(req.method, "POST", "sendgrid: POST");
    is_str(req.path, "/v3/mail/send", "sendgrid: path");
    is_str(req_header(&req, "Authorization"), "Bearer SG.test", "sendgrid: bearer auth");
    is_str(req_header(&req, "Content-Type"), "application/json", "sendgrid: content type");
    json_t *j = req_json(&req);
    ok(j != NULL, "sendgrid: the body is JSON");
    json_t *p = json_array_get(json_object_get(j, "personalizations"), 0);
    is_int(json_array_size(json_object_get(j, "personalizations")), 1,
           "sendgrid: one personalization");
    is_str(jstr(p, "to.0.email"), "ann@example.com", "sendgrid: to email");
    is_str(jstr(p, "to.0.name"), "Ann, Jr.", "sendgrid: to name (JSON, no quoting)");
    is_int(jlen(p, "cc"), 1, "sendgrid: the cc duplicating to is dropped");
    is_str(jstr(p, "cc.0.email"), "cc@example.com", "sendgrid: cc");
    ok(json_object_get(json_array_get(json_object_get(p, "cc"), 0), "name") == NULL,
       "sendgrid: no name key without a name");
    is_str(jstr(p, "bcc.0.email"), "bcc@example.org", "sendgrid: bcc");
    is_str(jstr(p, "custom_args.mailerd_message_id"), MSG_ID, "sendgrid: custom_args id");
    is_str(jstr(j, "from.email"), "from@example.com", "sendgrid: from email");
    is_str(jstr(j, "from.name"), "Zo\xc3\xab Sender", "sendgrid: from name (UTF-8)");
    is_str(jstr(j, "reply_to.email"), "reply@example.com", "sendgrid: reply_to");
    is_str(jstr(j, "reply_to.name"), "Help Desk", "sendgrid: reply_to name");
    is_str(jstr(j, "subject"), T_SUBJECT, "sendgrid: subject");
    is_str(jstr(j, "content.0.type"), "text/plain", "sendgrid: text/plain first");
    is_str(jstr(j, "content.0.value"), T_TEXT, "sendgrid: text");
    is_str(jstr(j, "content.1.type"), "text/html", "sendgrid: then text/html");
    is_str(jstr(j, "content.1.value"), T_HTML, "sendgrid: html");
    is_str(jstr(j, "headers.X-Mailerd-Message-Id"), MSG_ID, "sendgrid: our header");
    is_str(jstr(j, "headers.X-Campaign"), "spring", "sendgrid: extra header");
    is_str(jstr(j, "headers.X-Note"), "=?UTF-8?B?Y2Fmw6k=?=", "sendgrid: non-ASCII value encoded");
    json_decref(j);
    req_free(&req);

    /* several reply-to addresses go in reply_to_list */
    static const md_mime_addr_t two[] = {{NULL, "r1@example.com"}, {"R2", "r2@example.com"}};
    m.reply_to = two;
    m.nreply_to = 2;
    m.ncc = 0;
    m.nbcc = 0;
    m.text.data = NULL;
    req_init(&req);
    e->driver->build_request(e, &m, &req, &res);
    j = req_json(&req);
    ok(j && json_object_get(j, "reply_to") == NULL && jlen(j, "reply_to_list") == 2 &&
           strcmp(jstr(j, "reply_to_list.1.name"), "R2") == 0,
       "sendgrid: two reply-to -> reply_to_list");
    p = json_array_get(json_object_get(j, "personalizations"), 0);
    ok(json_object_get(p, "cc") == NULL && json_object_get(p, "bcc") == NULL,
       "sendgrid: no empty cc/bcc arrays");
    ok(jlen(j, "content") == 1 && strcmp(jstr(j, "content.0.type"), "text/html") == 0,
       "sendgrid: html only");
    json_decref(j);
    req_free(&req);

    t_read(e, 202, "", "X-Message-Id", "W3hT1kkpQUm0aoGPnTg3zQ", NULL, NULL, &res);
    ok(res.outcome == MD_ESP_SENT && strcmp(res.provider_id, "W3hT1kkpQUm0aoGPnTg3zQ") == 0,
       "sendgrid: 202 -> sent with X-Message-Id");
    char date[64];
    http_date(time(NULL) + 30, date, sizeof(date));
    t_read(e, 429, "{\"errors\":[{\"message\":\"too many requests\"}]}", "Retry-After", date, NULL,
           NULL, &res);
    ok(res.outcome == MD_ESP_RETRYABLE && strcmp(res.code, "throttled") == 0 &&
           res.retry_after >= 28 && res.retry_after <= 31,
       "sendgrid: 429 with Retry-After as an HTTP-date -> retryable in ~30 s (%g)",
       res.retry_after);
    char reset[32];
    snprintf(reset, sizeof(reset), "%lld", (long long)time(NULL) + 12);
    t_read(e, 429, "{\"errors\":[{\"message\":\"too many requests\"}]}", "X-RateLimit-Reset", reset,
           NULL, NULL, &res);
    ok(res.outcome == MD_ESP_RETRYABLE && res.retry_after >= 10 && res.retry_after <= 13,
       "sendgrid: 429 with X-RateLimit-Reset -> wait until then (%g)", res.retry_after);
    t_read(e, 500, "", NULL, NULL, NULL, NULL, &res);
    ok(res.outcome == MD_ESP_RETRYABLE && strcmp(res.code, "http_500") == 0,
       "sendgrid: 500 -> retryable");
    t_read(e, 400,
           "{\"errors\":[{\"message\":\"The from address does not match a verified Sender "
           "Identity.\",\"field\":\"from\",\"help\":null}]}",
           NULL, NULL, NULL, NULL, &res);
    ok(res.outcome == MD_ESP_PERMANENT && strcmp(res.code, "http_400") == 0 &&
           strstr(res.text, "does not match a verified Sender Identity") &&
           strstr(res.text, "field from"),
       "sendgrid: 400 -> permanent with errors[0].message: %s", res.text);
    t_read(e, 413, "{\"errors\":[{\"message\":\"nope\"}]}", NULL, NULL, NULL, NULL, &res);
    ok(res.outcome == MD_ESP_PERMANENT && strcmp(res.code, "http_413") == 0 &&
           strcmp(res.text, "nope") == 0,
       "sendgrid: 413 -> permanent");
    t_read(e, 401,
           "{\"errors\":[{\"message\":\"The provided authorization grant is invalid, expired, "
           "or revoked\",\"field\":null,\"help\":null}]}",
           NULL, NULL, NULL, NULL, &res);
    ok(res.outcome == MD_ESP_RETRYABLE && strcmp(res.code, "auth_failed") == 0 &&
           strcmp(res.text, "http_401: The provided authorization grant is invalid, expired, or "
                            "revoked") == 0,
       "sendgrid: 401 -> retryable auth_failed, status and message kept (%s)", res.text);
    t_read(e, 403, "{\"errors\":[{\"message\":\"access forbidden\"}]}", NULL, NULL, NULL, NULL,
           &res);
    ok(res.outcome == MD_ESP_RETRYABLE && strcmp(res.code, "auth_failed") == 0 &&
           strcmp(res.text, "http_403: access forbidden") == 0,
       "sendgrid: 403 -> retryable auth_failed (%s)", res.text);
    t_transport(e, "sendgrid");
}

static void
test_postmark(void)
{
    md_esp_t *e = t_account("postmark");
    md_esp_msg_t m = t_msg();
    md_esp_request_t req;
    md_esp_result_t res;
    req_init(&req);
    is_int(e->driver->build_request(e, &m, &req, &res), MD_OK, "postmark: build_request");
    is_str(req.method, "POST", "postmark: POST");
    is_str(req.path, "/email", "postmark: path");
    is_str(req_header(&req, "X-Postmark-Server-Token"), "pm-server-token", "postmark: token");
    is_str(req_header(&req, "Accept"), "application/json", "postmark: Accept");
    is_str(req_header(&req, "Content-Type"), "application/json", "postmark: content type");
    json_t *j = req_json(&req);
    ok(j != NULL, "postmark: the body is JSON");
    is_str(jstr(j, "From"), "=?UTF-8?B?Wm/DqyBTZW5kZXI=?= <from@example.com>", "postmark: From");
    is_str(jstr(j, "To"), "\"Ann, Jr.\" <ann@example.com>", "postmark: To");
    is_str(jstr(j, "Cc"), "cc@example.com, Dup <ANN@example.com>", "postmark: Cc");
    is_str(jstr(j, "Bcc"), "bcc@example.org", "postmark: Bcc");
    is_str(jstr(j, "ReplyTo"), "Help Desk <reply@example.com>", "postmark: ReplyTo");
    is_str(jstr(j, "Subject"), T_SUBJECT, "postmark: Subject");
    is_str(jstr(j, "TextBody"), T_TEXT, "postmark: TextBody");
    is_str(jstr(j, "HtmlBody"), T_HTML, "postmark: HtmlBody");
    is_str(jstr(j, "Headers.0.Name"), "X-Mailerd-Message-Id", "postmark: our header");
    is_str(jstr(j, "Headers.0.Value"), MSG_ID, "postmark: our id");
    is_str(jstr(j, "Headers.2.Name"), "X-Note", "postmark: extra header");
    is_str(jstr(j, "Headers.2.Value"), "=?UTF-8?B?Y2Fmw6k=?=", "postmark: extra header encoded");
    is_str(jstr(j, "Metadata.mailerd_message_id"), MSG_ID, "postmark: Metadata id");
    is_str(jstr(j, "MessageStream"), "broadcast", "postmark: MessageStream");
    json_decref(j);
    req_free(&req);

    t_read(e, 200,
           "{\"To\":\"ann@example.com\",\"SubmittedAt\":\"2024-01-01T00:00:00Z\","
           "\"MessageID\":\"b7bc2f4a-e38e-4336-af7d-e6c392c2f817\",\"ErrorCode\":0,"
           "\"Message\":\"OK\"}",
           NULL, NULL, NULL, NULL, &res);
    ok(res.outcome == MD_ESP_SENT &&
           strcmp(res.provider_id, "b7bc2f4a-e38e-4336-af7d-e6c392c2f817") == 0,
       "postmark: 200 ErrorCode 0 -> sent with MessageID");
    t_read(e, 422,
           "{\"ErrorCode\":406,\"Message\":\"You tried to send to a recipient that has been "
           "marked as inactive.\"}",
           NULL, NULL, NULL, NULL, &res);
    ok(res.outcome == MD_ESP_PERMANENT && strcmp(res.code, "406") == 0 &&
           strstr(res.text, "marked as inactive"),
       "postmark: 422/406 -> permanent, ErrorCode and Message kept (%s: %s)", res.code, res.text);
    t_read(e, 422, "{\"ErrorCode\":300,\"Message\":\"Invalid email request\"}", NULL, NULL, NULL,
           NULL, &res);
    ok(res.outcome == MD_ESP_PERMANENT && strcmp(res.code, "300") == 0,
       "postmark: 422/300 -> permanent");
    t_read(e, 422, "{\"ErrorCode\":405,\"Message\":\"Not allowed to send\"}", NULL, NULL, NULL,
           NULL, &res);
    ok(res.outcome == MD_ESP_RETRYABLE && strcmp(res.code, "405") == 0,
       "postmark: 405 (account cannot send) -> retryable");
    t_read(e, 401, "{\"ErrorCode\":10,\"Message\":\"Bad or missing Server API token.\"}", NULL,
           NULL, NULL, NULL, &res);
    ok(res.outcome == MD_ESP_RETRYABLE && strcmp(res.code, "auth_failed") == 0 &&
           strcmp(res.text, "10: Bad or missing Server API token.") == 0,
       "postmark: 401 ErrorCode 10 -> retryable auth_failed, ErrorCode and Message kept (%s)",
       res.text);
    t_read(e, 422, "{\"ErrorCode\":10,\"Message\":\"Bad or missing Server API token.\"}", NULL,
           NULL, NULL, NULL, &res);
    ok(res.outcome == MD_ESP_RETRYABLE && strcmp(res.code, "auth_failed") == 0,
       "postmark: ErrorCode 10 whatever the status -> auth_failed");
    t_read(e, 401, "", NULL, NULL, NULL, NULL, &res);
    ok(res.outcome == MD_ESP_RETRYABLE && strcmp(res.code, "auth_failed") == 0 &&
           strncmp(res.text, "http_401: ", 10) == 0,
       "postmark: a bare 401 -> auth_failed (%s)", res.text);
    t_read(e, 429, "{\"ErrorCode\":429,\"Message\":\"Rate limit exceeded\"}", "Retry-After", "3",
           NULL, NULL, &res);
    ok(res.outcome == MD_ESP_RETRYABLE && fabs(res.retry_after - 3) < 1e-9 &&
           strcmp(res.code, "throttled") == 0,
       "postmark: 429 -> retryable with Retry-After 3");
    t_read(e, 503, "<html>down</html>", NULL, NULL, NULL, NULL, &res);
    ok(res.outcome == MD_ESP_RETRYABLE && strcmp(res.code, "http_503") == 0 &&
           strstr(res.text, "down"),
       "postmark: 503 with a non-JSON body -> retryable (%s)", res.text);
    t_transport(e, "postmark");
}

/* md_sigv4_sign_cached signs byte for byte as md_sigv4_sign, deriving the
 * signing key only when the day, secret, region or service changes; the SES
 * driver's requests (which use the account's cache) still verify. */
static void
test_sigv4_key_cache(void)
{
    md_sigv4_header_t h[2] = {{{4, "Host"}, {29, "email.us-west-2.amazonaws.com"}},
                              {{12, "Content-Type"}, {16, "application/json"}}};
    md_sigv4_req_t rq;
    memset(&rq, 0, sizeof(rq));
    rq.method = (md_str_t){4, "POST"};
    rq.path = (md_str_t){25, "/v2/email/outbound-emails"};
    rq.headers = h;
    rq.nheaders = 2;
    rq.payload = (md_str_t){7, "{\"a\":1}"};
    md_sigv4_cred_t cred;
    memset(&cred, 0, sizeof(cred));
    cred.access_key_id = (md_str_t){4, "AKID"};
    cred.secret_key = (md_str_t){7, "SECRET1"};
    cred.region = (md_str_t){9, "us-west-2"};
    cred.service = (md_str_t){3, "ses"};
    md_sigv4_key_cache_t kc;
    memset(&kc, 0, sizeof(kc));
    md_sigv4_out_t a, b;
    md_sigv4_out_init(&a);
    md_sigv4_out_init(&b);
    time_t t0 = 1700000000; /* 2023-11-14T22:13:20Z */
    struct {
        time_t when;
        const char *secret, *region, *service;
        unsigned long derived;
        const char *what;
    } steps[] = {
        {t0, "SECRET1", "us-west-2", "ses", 1, "first signature: derived"},
        {t0 + 60, "SECRET1", "us-west-2", "ses", 1, "same day: the cached key"},
        {t0 + 7200, "SECRET1", "us-west-2", "ses", 2, "the next day (UTC): derived again"},
        {t0 + 7201, "SECRET2", "us-west-2", "ses", 3, "another secret: derived again"},
        {t0 + 7202, "SECRET2", "eu-west-1", "ses", 4, "another region: derived again"},
        {t0 + 7203, "SECRET2", "eu-west-1", "email", 5, "another service: derived again"},
        {t0 + 7204, "SECRET2", "eu-west-1", "email", 5, "then cached again"},
    };
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        cred.secret_key = (md_str_t){strlen(steps[i].secret), steps[i].secret};
        cred.region = (md_str_t){strlen(steps[i].region), steps[i].region};
        cred.service = (md_str_t){strlen(steps[i].service), steps[i].service};
        int r1 = md_sigv4_sign(&rq, &cred, steps[i].when, 0, &a);
        int r2 = md_sigv4_sign_cached(&rq, &cred, steps[i].when, 0, &kc, &b);
        ok(r1 == MD_OK && r2 == MD_OK && strcmp(a.authz.pos, b.authz.pos) == 0 &&
               kc.derived == steps[i].derived,
           "sigv4 key cache: %s (derived %lu), same Authorization as uncached", steps[i].what,
           kc.derived);
    }
    md_sigv4_key_cache_clear(&kc);
    ok(!kc.valid && kc.secret_len == 0, "sigv4 key cache: clear wipes it");
    md_sigv4_out_free(&a);
    md_sigv4_out_free(&b);

    /* the driver: a second request (the account's cached key) still verifies */
    md_esp_t *e = t_account("ses");
    for (int round = 0; round < 2; round++) {
        md_esp_msg_t m = t_msg();
        md_esp_request_t req;
        md_esp_result_t res;
        req_init(&req);
        int rc = e->driver->build_request(e, &m, &req, &res);
        md_sigv4_header_t rh[MD_ESP_MAX_HEADERS + 2];
        size_t nrh = 0;
        rh[nrh++] = h[0];
        for (size_t i = 0; i < req.nheaders; i++) {
            rh[nrh].name = (md_str_t){strlen(req.headers[i].name), req.headers[i].name};
            rh[nrh++].value = (md_str_t){strlen(req.headers[i].value), req.headers[i].value};
        }
        md_sigv4_received_t rv;
        memset(&rv, 0, sizeof(rv));
        rv.method = (md_str_t){4, "POST"};
        rv.path = (md_str_t){strlen(req.path), req.path};
        rv.headers = rh;
        rv.nheaders = nrh;
        rv.body = (md_str_t){md_buf_len(&req.body), req.body.pos};
        md_sigv4_cred_t vc;
        memset(&vc, 0, sizeof(vc));
        vc.access_key_id = (md_str_t){11, "AKIDEXAMPLE"};
        vc.secret_key = (md_str_t){10, "SECRETKEY1"};
        vc.session_token = (md_str_t){8, "TOKEN123"};
        vc.region = (md_str_t){9, "us-west-2"};
        vc.service = (md_str_t){3, "ses"};
        md_sigv4_out_t out;
        md_sigv4_out_init(&out);
        md_sigv4_verdict_t v = md_sigv4_verify(&rv, &vc, time(NULL), 300, &out);
        ok(rc == MD_OK && v == MD_SIGV4_VERIFIED,
           "ses: request %d signed with the account's key cache verifies (%s)", round + 2,
           md_sigv4_verdict_name(v));
        md_sigv4_out_free(&out);
        req_free(&req);
    }
}

/* Reads a batch answer for n messages into res (filled with junk first). */
static void
t_read_batch(md_esp_t *e, int status, const char *body, const char *h1, const char *v1, size_t n,
             md_esp_result_t *res)
{
    t_resp_t r;
    md_esp_response_t resp = t_answer(&r, status, body, h1, v1, NULL, NULL);
    memset(res, 0x5a, n * sizeof(*res));
    e->driver->read_batch(e, &resp, n, res);
}

/* Every one of res[0..n-1] has outcome and code. */
static bool
t_all(const md_esp_result_t *res, size_t n, int outcome, const char *code)
{
    for (size_t i = 0; i < n; i++) {
        if (res[i].outcome != outcome || strcmp(res[i].code, code) != 0)
            return false;
    }
    return true;
}

#define T_PM_OK(id)                                                                                \
    "{\"ErrorCode\":0,\"Message\":\"OK\",\"MessageID\":\"" id "\","                                \
    "\"SubmittedAt\":\"2010-11-26T12:01:05.1794748-05:00\",\"To\":\"ann@example.com\"}"

static void
test_postmark_batch(void)
{
    md_esp_t *e = t_account("postmark");
    const md_esp_driver_t *d = e->driver;
    ok(d->batch_max == 500 && d->batch_bytes > 40u * 1000 * 1000 &&
           d->batch_bytes <= 50u * 1000 * 1000,
       "postmark batch: 500 messages and under 50 MB per request (%zu, %zu)", d->batch_max,
       d->batch_bytes);

    /* three messages, the second of which cannot go */
    md_esp_msg_t m1 = t_msg(), m2 = t_msg(), m3 = t_msg();
    m2.id = "0190a1b2-c3d4-7e5f-8a6b-000000000002";
    m2.text.data = NULL;
    m2.html.data = NULL;
    m3.id = "0190a1b2-c3d4-7e5f-8a6b-000000000003";
    m3.to.name = NULL;
    m3.to.addr = "bob@example.net";
    md_esp_request_t req;
    md_esp_result_t res[4];
    req_init(&req);
    is_int(d->batch_add(e, &m1, &req, &res[0]), MD_OK, "postmark batch: first message added");
    size_t len1 = md_buf_len(&req.body);
    memset(&res[1], 0x5a, sizeof(res[1]));
    is_int(d->batch_add(e, &m2, &req, &res[1]), MD_ERROR,
           "postmark batch: a message without content is refused");
    ok(res[1].outcome == MD_ESP_PERMANENT && strcmp(res[1].code, "no_content") == 0 &&
           md_buf_len(&req.body) == len1,
       "postmark batch: ... permanent no_content, nothing appended");
    is_int(d->batch_add(e, &m3, &req, &res[2]), MD_OK, "postmark batch: third message added");
    d->batch_end(e, &req);
    is_str(req.method, "POST", "postmark batch: POST");
    is_str(req.path, "/email/batch", "postmark batch: path /email/batch");
    is_str(req_header(&req, "X-Postmark-Server-Token"), "pm-server-token", "postmark batch: token");
    is_str(req_header(&req, "Content-Type"), "application/json", "postmark batch: content type");
    ok(req.nheaders == 3, "postmark batch: headers set once (%zu)", req.nheaders);
    json_t *j = req_json(&req);
    ok(json_is_array(j) && json_array_size(j) == 2, "postmark batch: a JSON array of 2 messages");
    is_str(jstr(j, "0.Metadata.mailerd_message_id"), MSG_ID, "postmark batch: [0] our id");
    is_str(jstr(j, "1.Metadata.mailerd_message_id"), m3.id, "postmark batch: [1] our id");
    is_str(jstr(j, "1.Headers.0.Value"), m3.id, "postmark batch: [1] our header");
    is_str(jstr(j, "1.To"), "bob@example.net", "postmark batch: [1] To");
    is_str(jstr(j, "1.MessageStream"), "broadcast", "postmark batch: [1] MessageStream");
    /* each element is exactly what /email takes for that message */
    md_esp_request_t one;
    req_init(&one);
    md_esp_result_t r1;
    d->build_request(e, &m1, &one, &r1);
    json_t *j1 = req_json(&one);
    ok(j1 && json_equal(j1, json_array_get(j, 0)),
       "postmark batch: an element equals the single send's body");
    json_decref(j1);
    req_free(&one);
    json_decref(j);
    req_free(&req);

    req_init(&req);
    d->batch_end(e, &req);
    ok(md_buf_len(&req.body) == 2 && memcmp(req.body.pos, "[]", 2) == 0,
       "postmark batch: an empty batch is []");
    req_free(&req);

    /* answers read per message */
    t_read_batch(
        e, 200,
        "[" T_PM_OK("id-1") ",{\"ErrorCode\":406,\"Message\":\"You tried to send to "
                            "recipient(s) that have been marked as inactive.\"},"
                            "{\"ErrorCode\":300,\"Message\":\"Invalid email request\"}," T_PM_OK(
                                "id-4") "]",
        NULL, NULL, 4, res);
    ok(res[0].outcome == MD_ESP_SENT && strcmp(res[0].provider_id, "id-1") == 0 &&
           res[3].outcome == MD_ESP_SENT && strcmp(res[3].provider_id, "id-4") == 0,
       "postmark batch: 200 -> each ErrorCode 0 sent with its own MessageID");
    ok(res[1].outcome == MD_ESP_PERMANENT && strcmp(res[1].code, "406") == 0 &&
           strstr(res[1].text, "marked as inactive") != NULL,
       "postmark batch: a 406 inside a 200 -> permanent, code and Message kept (%s: %s)",
       res[1].code, res[1].text);
    ok(res[2].outcome == MD_ESP_PERMANENT && strcmp(res[2].code, "300") == 0 &&
           strcmp(res[2].text, "Invalid email request") == 0,
       "postmark batch: a 300 inside a 200 -> permanent");
    t_read_batch(e, 200,
                 "[{\"ErrorCode\":405,\"Message\":\"Not allowed to send\"},"
                 "{\"ErrorCode\":10,\"Message\":\"Bad or missing Server API token.\"}]",
                 NULL, NULL, 2, res);
    ok(res[0].outcome == MD_ESP_RETRYABLE && strcmp(res[0].code, "405") == 0 &&
           res[1].outcome == MD_ESP_RETRYABLE && strcmp(res[1].code, "auth_failed") == 0,
       "postmark batch: 405 and 10 inside a 200 -> retryable as a single send's (%s, %s)",
       res[0].code, res[1].code);
    t_read_batch(e, 200, "[" T_PM_OK("id-1") "]", NULL, NULL, 2, res);
    ok(t_all(res, 2, MD_ESP_RETRYABLE, "protocol") && strstr(res[0].text, "1 results for 2"),
       "postmark batch: an array of the wrong length -> every message retryable (%s)", res[0].text);
    t_read_batch(e, 200, "not json", NULL, NULL, 2, res);
    ok(t_all(res, 2, MD_ESP_RETRYABLE, "protocol"),
       "postmark batch: a 200 that is not an array -> every message retryable");
    t_read_batch(e, 200, "[" T_PM_OK("id-1") ",17]", NULL, NULL, 2, res);
    ok(res[0].outcome == MD_ESP_SENT && res[1].outcome == MD_ESP_RETRYABLE &&
           strcmp(res[1].code, "protocol") == 0,
       "postmark batch: a result that is not an object -> that message retryable");
    t_read_batch(e, 429, "{\"ErrorCode\":429,\"Message\":\"Rate limit exceeded\"}", "Retry-After",
                 "7", 3, res);
    ok(t_all(res, 3, MD_ESP_RETRYABLE, "throttled") && fabs(res[2].retry_after - 7) < 1e-9,
       "postmark batch: 429 -> every message throttled with Retry-After 7");
    t_read_batch(e, 500, "{\"ErrorCode\":0,\"Message\":\"boom\"}", NULL, NULL, 3, res);
    ok(t_all(res, 3, MD_ESP_RETRYABLE, "http_500"),
       "postmark batch: 500 -> every message retryable");
    t_read_batch(e, 503, "<html>down</html>", NULL, NULL, 2, res);
    ok(t_all(res, 2, MD_ESP_RETRYABLE, "http_503") && strstr(res[1].text, "down"),
       "postmark batch: 503 with a non-JSON body -> every message retryable");
    t_read_batch(e, 401, "{\"ErrorCode\":10,\"Message\":\"Bad or missing Server API token.\"}",
                 NULL, NULL, 2, res);
    ok(t_all(res, 2, MD_ESP_RETRYABLE, "auth_failed") &&
           strcmp(res[1].text, "10: Bad or missing Server API token.") == 0,
       "postmark batch: 401 -> every message auth_failed (%s)", res[1].text);
    t_read_batch(e, 422, "{\"ErrorCode\":402,\"Message\":\"Received invalid JSON input.\"}", NULL,
                 NULL, 2, res);
    ok(t_all(res, 2, MD_ESP_PERMANENT, "402"),
       "postmark batch: a 422 whole-body error -> every message permanent as a single send's");
    t_read_batch(e, 200, "{\"ErrorCode\":406,\"Message\":\"inactive\"}", NULL, NULL, 2, res);
    ok(t_all(res, 2, MD_ESP_PERMANENT, "406"),
       "postmark batch: a 200 whose body is one error object -> that error for every message");
    t_resp_t tr;
    md_esp_response_t resp = t_answer(&tr, 0, NULL, NULL, NULL, NULL, NULL);
    tr.h.error = md_http_client_err_timeout;
    tr.h.detail = "no response within 30s";
    tr.h.request_sent = true;
    d->read_batch(e, &resp, 3, res);
    ok(t_all(res, 3, MD_ESP_RETRYABLE, "timeout") && strstr(res[2].text, "no response"),
       "postmark batch: a transport error -> every message retryable");
    /* the other drivers have no batch call */
    const char *others[] = {"ses", "sendgrid", "mailgun"};
    for (size_t i = 0; i < 3; i++) {
        const md_esp_driver_t *o = t_account(others[i])->driver;
        ok(o->batch_max == 0 && o->batch_add == NULL, "%s: no batch call", others[i]);
    }
}

static void
test_batch_conf(void)
{
    conf_fails("esp a {\n driver sendgrid;\n api_key k;\n batch 10;\n}\n",
               "batch on a driver without a batch call", "main.conf:4:", "no batch call");
    conf_fails("esp a {\n batch 10;\n driver mailgun;\n api_key k;\n domain d.example;\n}\n",
               "batch before the driver, which has no batch call", "main.conf:", "no batch call");
    conf_fails("esp a {\n driver postmark;\n server_token t;\n batch 0;\n}\n", "batch 0",
               "main.conf:4:", "batch");
    conf_fails("esp a {\n driver postmark;\n server_token t;\n batch_window 2s;\n}\n",
               "batch_window over 1s", "main.conf:4:", "batch_window");
    conf_fails("esp a {\n driver postmark;\n server_token t;\n batch_window soon;\n}\n",
               "batch_window not a time", "main.conf:4:", "batch_window");
    md_conf_t *c = load("esp a {\n driver postmark;\n server_token t;\n}\n"
                        "esp b {\n batch 100;\n batch_window 5ms;\n driver postmark;\n"
                        " server_token t;\n}\n"
                        "esp c {\n driver postmark;\n server_token t;\n batch 2000;\n}\n"
                        "esp d {\n driver sendgrid;\n api_key k;\n batch 1;\n}\n");
    ok(c != NULL, "batch configurations load: %s", err);
    if (c == NULL)
        return;
    double w = -1;
    int n = md_esp_conf_batch(&c->esp[0], &w);
    ok(n == 1 && fabs(w - 0.002) < 1e-12, "batch defaults to 1 (off), batch_window to 2ms (%d, %g)",
       n, w);
    n = md_esp_conf_batch(&c->esp[1], &w);
    ok(n == 100 && fabs(w - 0.005) < 1e-12, "batch 100, batch_window 5ms (%d, %g)", n, w);
    ok(md_esp_conf_batch(&c->esp[2], NULL) == 500, "batch 2000 is capped to Postmark's 500");
    ok(md_esp_conf_batch(&c->esp[3], NULL) == 1, "batch 1 is allowed on any driver");
    md_conf_free(c);
    c = load("esp b {\n driver postmark;\n server_token t;\n}\n");
    ok(c && md_esp_conf_batch(&c->esp[0], NULL) == 1,
       "a new configuration does not inherit an old one's batch");
    if (c)
        md_conf_free(c);
}

typedef struct t_part_s {
    char name[64];
    char value[512];
} t_part_t;

/* Splits a multipart/form-data body; returns the number of parts or -1. */
static int
t_multipart(const md_esp_request_t *req, t_part_t *parts, int max)
{
    const char *ct = req_header(req, "Content-Type");
    const char *bp = ct ? strstr(ct, "boundary=") : NULL;
    if (bp == NULL || strncmp(ct, "multipart/form-data;", 20) != 0)
        return -1;
    char delim[128];
    snprintf(delim, sizeof(delim), "--%s", bp + 9);
    size_t dl = strlen(delim);
    const char *s = req->body.pos, *end = req->body.last;
    if ((size_t)(end - s) < dl || memcmp(s, delim, dl) != 0)
        return -1;
    int n = 0;
    for (;;) {
        s += dl;
        if (end - s >= 4 && memcmp(s, "--\r\n", 4) == 0)
            return s + 4 == end ? n : -1;
        if (end - s < 2 || memcmp(s, "\r\n", 2) != 0 || n == max)
            return -1;
        s += 2;
        const char *hend = memmem(s, (size_t)(end - s), "\r\n\r\n", 4);
        if (hend == NULL)
            return -1;
        const char *nm = memmem(s, (size_t)(hend - s), "name=\"", 6);
        if (nm == NULL || strncmp(s, "Content-Disposition: form-data; ", 32) != 0)
            return -1;
        nm += 6;
        size_t nl = strcspn(nm, "\"");
        snprintf(parts[n].name, sizeof(parts[n].name), "%.*s", (int)nl, nm);
        const char *v = hend + 4;
        char needle[140];
        snprintf(needle, sizeof(needle), "\r\n%s", delim);
        const char *ve = memmem(v, (size_t)(end - v), needle, strlen(needle));
        if (ve == NULL)
            return -1;
        snprintf(parts[n].value, sizeof(parts[n].value), "%.*s", (int)(ve - v), v);
        n++;
        s = ve + 2;
    }
}

static const char *
t_part(const t_part_t *p, int n, const char *name, int which)
{
    for (int i = 0; i < n; i++) {
        if (strcmp(p[i].name, name) == 0 && which-- == 0)
            return p[i].value;
    }
    return NULL;
}

static int
t_count(const t_part_t *p, int n, const char *name)
{
    int c = 0;
    for (int i = 0; i < n; i++)
        c += strcmp(p[i].name, name) == 0;
    return c;
}

static void
test_mailgun(void)
{
    md_esp_t *e = t_account("mailgun");
    md_esp_msg_t m = t_msg();
    md_esp_request_t req;
    md_esp_result_t res;
    req_init(&req);
    is_int(e->driver->build_request(e, &m, &req, &res), MD_OK, "mailgun: build_request");
    is_str(req.method, "POST", "mailgun: POST");
    is_str(req.path, "/v3/mg.example.com/messages", "mailgun: path with the domain");
    /* base64("api:key-test") */
    is_str(req_header(&req, "Authorization"), "Basic YXBpOmtleS10ZXN0", "mailgun: basic auth");
    t_part_t parts[32];
    int n = t_multipart(&req, parts, 32);
    ok(n > 0, "mailgun: the body is multipart/form-data with %d parts", n);
    if (n < 0)
        n = 0;
    is_str(t_part(parts, n, "from", 0), "=?UTF-8?B?Wm/DqyBTZW5kZXI=?= <from@example.com>",
           "mailgun: from");
    is_str(t_part(parts, n, "to", 0), "\"Ann, Jr.\" <ann@example.com>", "mailgun: to");
    is_int(t_count(parts, n, "cc"), 2, "mailgun: one cc field per address");
    is_str(t_part(parts, n, "cc", 1), "Dup <ANN@example.com>", "mailgun: cc 2");
    is_str(t_part(parts, n, "bcc", 0), "bcc@example.org", "mailgun: bcc");
    is_str(t_part(parts, n, "subject", 0), T_SUBJECT, "mailgun: subject (UTF-8)");
    is_str(t_part(parts, n, "text", 0), T_TEXT, "mailgun: text");
    is_str(t_part(parts, n, "html", 0), T_HTML, "mailgun: html");
    is_str(t_part(parts, n, "h:Reply-To", 0), "Help Desk <reply@example.com>",
           "mailgun: h:Reply-To");
    is_str(t_part(parts, n, "h:X-Mailerd-Message-Id", 0), MSG_ID, "mailgun: our header");
    is_str(t_part(parts, n, "v:mailerd_message_id", 0), MSG_ID, "mailgun: our variable");
    is_str(t_part(parts, n, "h:X-Campaign", 0), "spring", "mailgun: h:X-Campaign");
    is_str(t_part(parts, n, "h:X-Note", 0), "=?UTF-8?B?Y2Fmw6k=?=", "mailgun: h:X-Note encoded");
    char ct1[256];
    snprintf(ct1, sizeof(ct1), "%s", req_header(&req, "Content-Type"));
    req_free(&req);
    req_init(&req);
    e->driver->build_request(e, &m, &req, &res);
    ok(strcmp(ct1, req_header(&req, "Content-Type")) != 0 && strlen(ct1) == 30 + 8 + 32,
       "mailgun: a fresh random boundary per request (%s)", ct1);
    req_free(&req);

    t_read(e, 200,
           "{\"id\":\"<20240101000000.1.ABCDEF@mg.example.com>\",\"message\":\"Queued. Thank "
           "you.\"}",
           NULL, NULL, NULL, NULL, &res);
    ok(res.outcome == MD_ESP_SENT &&
           strcmp(res.provider_id, "20240101000000.1.ABCDEF@mg.example.com") == 0,
       "mailgun: 200 -> sent with the id, brackets removed (%s)", res.provider_id);
    t_read(e, 400,
           "{\"message\":\"'to' parameter is not a valid address. please check documentation\"}",
           NULL, NULL, NULL, NULL, &res);
    ok(res.outcome == MD_ESP_PERMANENT && strcmp(res.code, "http_400") == 0 &&
           strstr(res.text, "not a valid address"),
       "mailgun: 400 -> permanent with message");
    t_read(e, 401, "Forbidden", NULL, NULL, NULL, NULL, &res);
    ok(res.outcome == MD_ESP_RETRYABLE && strcmp(res.code, "auth_failed") == 0 &&
           strncmp(res.text, "http_401: ", 10) == 0 && strstr(res.text, "Forbidden"),
       "mailgun: 401 Forbidden (plain text) -> retryable auth_failed (%s)", res.text);
    t_read(e, 403, "{\"message\":\"Sandbox subdomains are for test purposes only\"}", NULL, NULL,
           NULL, NULL, &res);
    ok(res.outcome == MD_ESP_RETRYABLE && strcmp(res.code, "auth_failed") == 0 &&
           strcmp(res.text, "http_403: Sandbox subdomains are for test purposes only") == 0,
       "mailgun: 403 -> retryable auth_failed (%s)", res.text);
    t_read(e, 402, "{\"message\":\"Domain disabled\"}", NULL, NULL, NULL, NULL, &res);
    ok(res.outcome == MD_ESP_PERMANENT, "mailgun: 402 -> permanent");
    t_read(e, 404, "{\"message\":\"Domain not found: mg.example.com\"}", NULL, NULL, NULL, NULL,
           &res);
    ok(res.outcome == MD_ESP_PERMANENT && strcmp(res.code, "http_404") == 0,
       "mailgun: 404 -> permanent");
    t_read(e, 429, "{\"message\":\"Too many requests\"}", "Retry-After", "2", NULL, NULL, &res);
    ok(res.outcome == MD_ESP_RETRYABLE && fabs(res.retry_after - 2) < 1e-9,
       "mailgun: 429 -> retryable with Retry-After");
    t_read(e, 502, "", NULL, NULL, NULL, NULL, &res);
    ok(res.outcome == MD_ESP_RETRYABLE && strcmp(res.code, "http_502") == 0,
       "mailgun: 502 -> retryable");
    t_transport(e, "mailgun");
}

static void
test_retry_after(void)
{
    t_resp_t r;
    time_t now = 1700000000;
    char date[64];
    t_answer(&r, 429, NULL, "Retry-After", "120", NULL, NULL);
    ok(fabs(md_esp_retry_after(&r.h, now) - 120) < 1e-9, "Retry-After 120");
    http_date(now + 45, date, sizeof(date));
    t_answer(&r, 429, NULL, "retry-after", date, NULL, NULL);
    ok(fabs(md_esp_retry_after(&r.h, now) - 45) < 1e-9, "Retry-After as IMF-fixdate (%s)", date);
    t_answer(&r, 429, NULL, "Retry-After", "Tuesday, 14-Nov-23 22:14:20 GMT", NULL, NULL);
    ok(fabs(md_esp_retry_after(&r.h, now) - 60) < 1e-9, "Retry-After as an RFC 850 date (%g)",
       md_esp_retry_after(&r.h, now));
    t_answer(&r, 429, NULL, "Retry-After", "Tue Nov 14 22:14:23 2023", NULL, NULL);
    ok(fabs(md_esp_retry_after(&r.h, now) - 63) < 1e-9, "Retry-After as an asctime date");
    http_date(now - 45, date, sizeof(date));
    t_answer(&r, 429, NULL, "Retry-After", date, NULL, NULL);
    ok(md_esp_retry_after(&r.h, now) == 0, "a date in the past gives 0");
    t_answer(&r, 429, NULL, "Retry-After", "soon", NULL, NULL);
    ok(md_esp_retry_after(&r.h, now) == 0, "garbage gives 0");
    t_answer(&r, 429, NULL, "Retry-After", "10abc", NULL, NULL);
    ok(md_esp_retry_after(&r.h, now) == 0, "trailing garbage gives 0");
    t_answer(&r, 429, NULL, "Retry-After", "99999999", NULL, NULL);
    ok(md_esp_retry_after(&r.h, now) == 86400, "capped at one day");
    t_answer(&r, 429, NULL, NULL, NULL, NULL, NULL);
    ok(md_esp_retry_after(&r.h, now) == 0, "absent gives 0");

    /* encoded-words never exceed 75 characters and never split a character */
    md_buf_t b;
    md_buf_init(&b);
    const char *longv = "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
                        "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
                        "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9";
    md_esp_header_value(&b, longv);
    md_buf_append(&b, "", 1);
    int words = 0, maxlen = 0;
    for (char *w = strtok(b.pos, " "); w; w = strtok(NULL, " ")) {
        words++;
        if ((int)strlen(w) > maxlen)
            maxlen = (int)strlen(w);
    }
    ok(words == 2 && maxlen <= 75, "54 bytes of UTF-8: two encoded-words of at most 75 (%d, %d)",
       words, maxlen);
    md_buf_free(&b);
}

static const char *t_driver_conf =
    "esp ses {\n driver ses;\n region us-west-2;\n access_key_id AKIDEXAMPLE;\n"
    " secret_access_key SECRETKEY1;\n session_token TOKEN123;\n configuration_set cs1;\n}\n"
    "esp ses_local {\n driver ses;\n region eu-west-1;\n access_key_id AKL1;\n"
    " secret_access_key SKL;\n endpoint https://127.0.0.1:8443/;\n}\n"
    "esp sendgrid {\n api_key SG.test;\n}\n"
    "esp postmark {\n server_token pm-server-token;\n message_stream broadcast;\n}\n"
    "esp mailgun {\n api_key key-test;\n domain mg.example.com;\n}\n";

int
main(void)
{
    const char *t = getenv("TMPDIR");
    char tpl[PATH_MAX];
    snprintf(tpl, sizeof(tpl), "%s/md-esp-t-XXXXXX", t && *t ? t : "/tmp");
    if (mkdtemp(tpl) == NULL || strlen(tpl) >= sizeof(tmp)) {
        printf("Bail out! mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    memcpy(tmp, tpl, strlen(tpl) + 1);

    test_conf();
    test_conf_errors();
    test_batch_conf();
    test_retry_after();

    t_conf = load(t_driver_conf);
    ok(t_conf != NULL, "the driver accounts load (driver named by the block): %s", err);
    if (t_conf == NULL || md_esp_init(t_conf, 0, err, sizeof(err)) != MD_OK) {
        printf("Bail out! %s\n", err);
        return 1;
    }
    test_ses();
    test_ses_host_port();
    test_sigv4_key_cache();
    test_sendgrid();
    test_postmark();
    test_postmark_batch();
    test_mailgun();
    md_esp_destroy();
    md_conf_free(t_conf);

    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
    if (system(cmd) != 0)
        printf("# could not remove %s\n", tmp);
    return done_testing();
}
