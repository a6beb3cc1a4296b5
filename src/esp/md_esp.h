/*
 * ESP accounts and drivers (issue 4: the sink; issue 6 adds the real providers).
 *
 * A driver is a table of functions (DESIGN.md, "Conventions inside a worker"): it
 * builds the provider's request from a message and reads the provider's answer
 * into one md_esp_result_t: sent(provider id) | retryable(reason, retry-after) |
 * permanent(code, text). Drivers do no I/O of their own: the dispatcher
 * (md_dispatch.c) and the outbound HTTP client do it, so a slow provider never
 * blocks a loop.
 *
 * Each configured account (esp NAME { } in md_conf_t.esp) becomes one md_esp_t per
 * worker, made after fork (it holds the account's PRNG and, later, its rate
 * limits, health and circuit breaker).
 */
#ifndef MD_ESP_H
#define MD_ESP_H

#include "md_core.h"
#include "md_conf.h"
#include "md_mime.h"
#include "md_buf.h"
#include "md_pool.h"
#include "md_client.h"

#include <time.h>

enum { MD_ESP_SENT = 0, MD_ESP_RETRYABLE = 1, MD_ESP_PERMANENT = 2 };

/* What one attempt came to. Strings are copied in (truncated to fit). */
typedef struct md_esp_result_s {
    int outcome;           /* MD_ESP_* */
    int delivered;         /* SENT and known delivered now (the sink synthesises it) */
    double retry_after;    /* RETRYABLE: the provider's hint in seconds, 0 for none */
    char provider_id[128]; /* SENT: the provider's message id */
    char code[64];         /* RETRYABLE: the reason; PERMANENT: the code */
    char text[256];        /* PERMANENT (and RETRYABLE, optional): for last_error and logs */
} md_esp_result_t;

void md_esp_result_sent(md_esp_result_t *res, const char *provider_id, int delivered);
void md_esp_result_retryable(md_esp_result_t *res, const char *reason, double retry_after,
                             const char *text);
void md_esp_result_permanent(md_esp_result_t *res, const char *code, const char *text);

/*
 * One message as the dispatcher hands it to a driver: the stored row, parsed.
 * Addresses are ASCII (IDN domains in A-label form), ready for md_mime_build.
 * Everything is owned by the dispatcher's job and lives during the driver call.
 */
typedef struct md_esp_msg_s {
    const char *id; /* our message id (UUIDv7) */
    const char *tenant_id;
    int attempt; /* 1 for the first attempt */
    /* An earlier attempt ended without a recorded outcome (its worker died
     * after sending, perhaps): a driver that can look up what the provider
     * already has (the sink: its directory) reports that instead of sending
     * again. Providers with no such lookup send again: at least once. */
    bool interrupted;
    md_mime_addr_t from;
    md_mime_addr_t to;
    const md_mime_addr_t *cc;
    size_t ncc;
    const md_mime_addr_t *bcc; /* envelope only */
    size_t nbcc;
    const md_mime_addr_t *reply_to;
    size_t nreply_to;
    const char *subject;
    md_str_t text; /* data NULL: no text part */
    md_str_t html; /* data NULL: no html part */
    const md_mime_header_t *headers;
    size_t nheaders;
} md_esp_msg_t;

/* A remote driver's first check: true when m has a text or an html part; else
 * res is the permanent "no_content" failure. */
bool md_esp_has_content(const md_esp_msg_t *m, md_esp_result_t *res);

typedef struct md_esp_s md_esp_t;

/*
 * A remote provider's request, as a driver's build_request fills it. The
 * dispatcher owns it: it makes pool (strings the driver makes live there, freed
 * after the attempt) and an empty body, sends it on the account's endpoint
 * (md_esp_t.endpoint) and frees both. Host, Content-Length and Connection are
 * the client's; everything else (auth, Content-Type, a SigV4 signature over the
 * body) is the driver's.
 */
#define MD_ESP_MAX_HEADERS 16
typedef struct md_esp_request_s {
    md_pool_t *pool;
    const char *method; /* "POST" (a lookup: "GET") */
    const char *path;   /* origin form, e.g. "/v3/mail/send" */
    md_http_client_header_t headers[MD_ESP_MAX_HEADERS];
    size_t nheaders;
    md_buf_t body;
} md_esp_request_t;

/* What came back: the client's response (a transport error, or a status with
 * headers and body). read_response maps it to sent | retryable | permanent:
 * transport errors, 5xx and throttling (429, SES TooManyRequestsException, ...)
 * are retryable with Retry-After honoured; a rejected address or content is
 * permanent with the provider's code and message. */
typedef struct md_esp_response_s {
    const md_http_client_response_t *http;
} md_esp_response_t;

typedef struct md_esp_driver_s {
    const char *name;
    int kind; /* MD_ESP_DRIVER_* */
    /* Per worker, after fork; MD_OK or MD_ERROR with err filled. May be NULL. */
    int (*init)(md_esp_t *esp, char *err, size_t errlen);
    void (*destroy)(md_esp_t *esp); /* may be NULL */
    /* Remote providers: the request for m (MD_OK), or MD_ERROR with res filled
     * (a message this provider cannot take: permanent). */
    int (*build_request)(md_esp_t *esp, const md_esp_msg_t *m, struct md_esp_request_s *req,
                         md_esp_result_t *res);
    /* Remote providers: the provider's answer (or the transport's failure) read
     * into res. */
    void (*read_response)(md_esp_t *esp, const struct md_esp_response_s *resp,
                          md_esp_result_t *res);
    /*
     * Remote providers that can find a message they took by our id (Postmark:
     * its message search, by the Metadata every send carries). For an attempt
     * after an interrupted one (md_esp_msg_t.interrupted) the dispatcher asks
     * the account first: build_lookup fills req (MD_OK), or answers
     * MD_DECLINED to send without asking; read_lookup answers MD_OK with res
     * "sent" (the provider's id) when the provider has the message, which is
     * then not sent again, MD_DECLINED when it has not (it is sent), or
     * MD_ERROR with res filled when the search failed (the attempt ends
     * retryable and the next one asks again). NULL: the message is sent again
     * (at least once).
     */
    int (*build_lookup)(md_esp_t *esp, const md_esp_msg_t *m, struct md_esp_request_s *req);
    int (*read_lookup)(md_esp_t *esp, const struct md_esp_response_s *resp, md_esp_result_t *res);
    /*
     * Local drivers only: sends m now and fills res. This is the one exception
     * to "drivers do no I/O": the sink's I/O is a write of a few KB to a local
     * file plus a rename, which takes microseconds and cannot stall on a remote
     * peer; for a development and test driver that is acceptable inside the
     * loop, while a thread or an io_uring for it would buy nothing. Remote
     * drivers leave this NULL.
     */
    void (*deliver)(md_esp_t *esp, const md_esp_msg_t *m, md_esp_result_t *res);
    /*
     * Batch calls: providers that take a list of different messages in one
     * request (Postmark's /email/batch; the others' batch calls share one
     * content between recipients, which stored rendered messages cannot use).
     * batch_max 0: none. The dispatcher builds a request with batch_add per
     * message (the first call, on an empty body, also sets the method, path
     * and headers) and batch_end, keeps the body within batch_bytes, and hands
     * the answer to read_batch, which fills one result per message in the
     * order they were added. batch_add returns MD_OK, or MD_ERROR with res
     * filled (permanent: the message cannot go) and nothing appended.
     */
    size_t batch_max;   /* messages per request the provider takes */
    size_t batch_bytes; /* request body bytes the provider takes */
    int (*batch_add)(md_esp_t *esp, const md_esp_msg_t *m, struct md_esp_request_s *req,
                     md_esp_result_t *res);
    void (*batch_end)(md_esp_t *esp, struct md_esp_request_s *req);
    void (*read_batch)(md_esp_t *esp, const struct md_esp_response_s *resp, size_t n,
                       md_esp_result_t *res);
} md_esp_driver_t;

struct md_esp_s {
    const md_esp_conf_t *conf; /* points into md_app's md_conf_t */
    const md_esp_driver_t *driver;
    uint64_t rng; /* xorshift state: failure injection, jitter */
    void *data;   /* the driver's */
    /* Remote providers: the account's keep-alive pool on md_app->http_client,
     * made by md_esp_init from conf (endpoint, max_connections, ca_file,
     * tls_verify, timeouts); NULL for local drivers or without md_app. */
    md_http_endpoint_t *endpoint;
    void *route; /* src/esp/md_route.c: health, circuit breaker, rate state */
    void *batch; /* src/esp/md_dispatch.c: the batch collector (batch N > 1), or NULL */
};

extern const md_esp_driver_t md_esp_sink_driver;     /* md_esp_sink.c */
extern const md_esp_driver_t md_esp_ses_driver;      /* md_esp_ses.c */
extern const md_esp_driver_t md_esp_sendgrid_driver; /* md_esp_sendgrid.c */
extern const md_esp_driver_t md_esp_postmark_driver; /* md_esp_postmark.c */
extern const md_esp_driver_t md_esp_mailgun_driver;  /* md_esp_mailgun.c */

/* The driver kind's name ("ses", ...; "none" for an unknown kind), and whether
 * it is a remote provider (build_request/read_response over HTTP). */
const char *md_esp_driver_name(int kind);
bool md_esp_driver_remote(int kind);

/* ---- helpers shared by the remote drivers (md_esp.c) ---- */

/* Adds a header to req; name and value must live as long as req (literals, the
 * account's conf, or strings in req->pool). MD_ERROR past MD_ESP_MAX_HEADERS. */
int md_esp_request_header(md_esp_request_t *req, const char *name, const char *value);

/* The provider's wait hint from Retry-After (delta-seconds, or an HTTP-date
 * taken against now, the wall clock): seconds, 0 when absent or unparsable, a
 * date in the past gives 0. Capped at one day (a bogus hint must not park mail). */
double md_esp_retry_after(const md_http_client_response_t *resp, time_t now);

/* Parses an HTTP-date (IMF-fixdate, RFC 850 or asctime form) into *t (UTC).
 * MD_OK or MD_ERROR. */
int md_esp_parse_http_date(const char *s, time_t *t);

/* When resp is a transport failure (resp->http->error set), fills res as
 * retryable with code = the client's error class and text = its detail, and
 * returns true. */
bool md_esp_transport_error(const md_esp_response_t *resp, md_esp_result_t *res);

/* Appends a header value for a provider that takes header values as given:
 * ASCII as is, anything else as RFC 2047 "=?UTF-8?B?...?=" encoded-words of at
 * most 75 characters, separated by a space. */
void md_esp_header_value(md_buf_t *b, const char *value);

/* Appends the mailbox "addr" or "name <addr>": the display name quoted when it
 * holds RFC 5322 specials; with encode, a non-ASCII name is written as RFC 2047
 * encoded-words (for providers that want an ASCII From, such as SES). */
void md_esp_mailbox(md_buf_t *b, const md_mime_addr_t *a, bool encode);

/* Appends s as a JSON string, quotes included (NULL: null). */
void md_esp_json_str(md_buf_t *b, const char *s);
/* Appends m's headers as a JSON array of {"Name","Value"} (the shape SES v2 and
 * Postmark take), X-Mailerd-Message-Id first, values RFC 2047-encoded where
 * needed; tmp is scratch space. */
void md_esp_json_headers(md_buf_t *b, const md_esp_msg_t *m, md_buf_t *tmp);
/* Names of accounts and routes: 1-64 of [A-Za-z0-9_.-] (they appear in the API,
 * metrics labels and logs). */
bool md_esp_name_ok(const char *s);

/* A NUL-terminated copy of b's live bytes in pool. */
char *md_esp_pool_str(md_pool_t *pool, const md_buf_t *b);

/* Messages per request of the account (its "batch", within its driver's
 * batch_max; 1: no batching) and, into *window when not NULL, its
 * "batch_window" in seconds: how long a collector waits for more. */
int md_esp_conf_batch(const md_esp_conf_t *c, double *window);

/* The account named name in conf, or NULL (for the send API's "esp" field). */
const md_esp_conf_t *md_esp_conf_find(const md_conf_t *conf, const char *name);

/*
 * Makes this worker's accounts from conf (kept by pointer: it must outlive them),
 * calling each driver's init. seed_salt varies the PRNG between workers when a
 * seed is configured. MD_OK, or MD_ERROR with err filled (nothing is kept then).
 */
int md_esp_init(const md_conf_t *conf, unsigned seed_salt, char *err, size_t errlen);
void md_esp_destroy(void);
/* This worker's account by name (NULL: not configured), and the default (NULL:
 * no account is configured). Valid between md_esp_init and md_esp_destroy. */
md_esp_t *md_esp_get(const char *name);
md_esp_t *md_esp_default(void);

/* A uniform double in [0, 1) from the account's PRNG. */
double md_esp_random(md_esp_t *esp);

/* Writes addr (an addr-spec as stored, IDN domain as given) with its domain in
 * A-label form into out (size bytes). MD_OK, or MD_ERROR when it does not parse
 * or fit. */
int md_esp_addr_ascii(const char *addr, char *out, size_t size);

#endif
