/*
 * ESP accounts: the esp NAME { } directive table, this worker's account
 * instances, and helpers shared by the drivers (results, PRNG, addresses).
 */
#include "md_esp.h"
#include "md_address.h"
#include "md_app.h"
#include "md_id.h"
#include "md_log.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* ---- configuration ------------------------------------------------------------ */

bool
md_esp_driver_remote(int kind)
{
    return kind == MD_ESP_DRIVER_SES || kind == MD_ESP_DRIVER_SENDGRID ||
           kind == MD_ESP_DRIVER_POSTMARK || kind == MD_ESP_DRIVER_MAILGUN;
}

const char *
md_esp_driver_name(int kind)
{
    switch (kind) {
    case MD_ESP_DRIVER_SINK:
        return "sink";
    case MD_ESP_DRIVER_SES:
        return "ses";
    case MD_ESP_DRIVER_SENDGRID:
        return "sendgrid";
    case MD_ESP_DRIVER_POSTMARK:
        return "postmark";
    case MD_ESP_DRIVER_MAILGUN:
        return "mailgun";
    default:
        return "none";
    }
}

static const md_conf_enum_t md_esp_driver_names[] = {
    {"sink", MD_ESP_DRIVER_SINK},         {"ses", MD_ESP_DRIVER_SES},
    {"sendgrid", MD_ESP_DRIVER_SENDGRID}, {"postmark", MD_ESP_DRIVER_POSTMARK},
    {"mailgun", MD_ESP_DRIVER_MAILGUN},   {NULL, 0},
};

/* Secrets kept in files are short (keys, tokens): anything larger is a wrong path. */

/* endpoint URL: http(s)://host[:port], stored without a trailing "/". The
 * client parses it fully when a worker makes the endpoint; this catches the
 * common mistakes (a path, no scheme) at load with the file and line. */
static int
md_esp_conf_set_endpoint(md_conf_parser_t *cf, const md_conf_cmd_t *cmd, void *base)
{
    const char *v = md_conf_arg(cf, 1);
    const char *p = NULL;
    if (strncmp(v, "https://", 8) == 0)
        p = v + 8;
    else if (strncmp(v, "http://", 7) == 0)
        p = v + 7;
    if (p == NULL || *p == '\0' || *p == '/')
        return md_conf_error(cf,
                             "invalid URL \"%s\" in \"%s\" directive, expected "
                             "https://host[:port]",
                             v, cmd->name);
    size_t n = strlen(v);
    if (v[n - 1] == '/')
        n--;
    const char *slash = memchr(p, '/', (size_t)(v + n - p));
    if (slash != NULL || strpbrk(p, "?#@ ") != NULL)
        return md_conf_error(cf,
                             "invalid URL \"%s\" in \"%s\" directive: no path, query or "
                             "user allowed",
                             v, cmd->name);
    char **f = (char **)(void *)((char *)base + cmd->offset);
    free(*f);
    *f = md_xstrndup(v, n);
    return MD_OK;
}

/* A word of [a-z0-9.-] (AWS region, Mailgun domain): it goes into a URL path or
 * host name unescaped. */
static int
md_esp_conf_set_name(md_conf_parser_t *cf, const md_conf_cmd_t *cmd, void *base)
{
    const char *v = md_conf_arg(cf, 1);
    size_t n = strlen(v);
    bool good = n > 0 && n <= 253 && v[0] != '.' && v[0] != '-';
    for (size_t i = 0; good && i < n; i++) {
        char c = v[i];
        good = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '-' || c == '.';
    }
    if (!good)
        return md_conf_error(cf, "invalid value \"%s\" in \"%s\" directive", v, cmd->name);
    char **f = (char **)(void *)((char *)base + cmd->offset);
    free(*f);
    *f = md_xstrdup(v);
    return MD_OK;
}

/* A probability: a decimal in 0..1. */
static int
md_esp_conf_set_ratio(md_conf_parser_t *cf, const md_conf_cmd_t *cmd, void *base)
{
    const char *v = md_conf_arg(cf, 1);
    char *end = NULL;
    errno = 0;
    double d = strtod(v, &end);
    if (v[0] == '\0' || *end != '\0' || errno != 0 || !isfinite(d) || d < 0 || d > 1)
        return md_conf_error(cf,
                             "invalid value \"%s\" in \"%s\" directive, expected a ratio "
                             "from 0 to 1",
                             v, cmd->name);
    *(double *)(void *)((char *)base + cmd->offset) = d;
    return MD_OK;
}

static const md_esp_driver_t *md_esp_driver(int kind);

static const md_conf_bounds_t md_esp_batch_bounds = {1, 1000000};
static const md_conf_bounds_t md_esp_window_bounds = {0, 1};

/* batch N: messages per request, 1 (off) or more; only for a driver with a
 * batch call (checked here when the driver came first, else after the block). */
static int
md_esp_conf_set_batch(md_conf_parser_t *cf, const md_conf_cmd_t *cmd, void *base)
{
    md_esp_conf_t *e = base;
    if (md_conf_set_number(cf, cmd, base) != MD_OK)
        return MD_ERROR;
    const md_esp_driver_t *drv = md_esp_driver(e->driver);
    if (e->batch > 1 && e->driver != MD_ESP_DRIVER_NONE && (drv == NULL || drv->batch_max == 0))
        return md_conf_error(cf,
                             "\"batch\" directive: esp \"%s\" (driver %s) has no batch call "
                             "(only postmark has one)",
                             e->name, md_esp_driver_name(e->driver));
    return MD_OK;
}

/* After the block: a batch on a driver without a batch call is an error, and
 * a batch larger than the provider takes is capped to it (said at load). */
static int
md_esp_conf_check_batch(md_conf_parser_t *cf, md_esp_conf_t *e)
{
    if (e->batch <= 1)
        return MD_OK;
    const md_esp_driver_t *drv = md_esp_driver(e->driver);
    if (drv == NULL || drv->batch_max == 0)
        return md_conf_error(cf,
                             "\"batch\" directive: esp \"%s\" (driver %s) has no batch call "
                             "(only postmark has one)",
                             e->name, md_esp_driver_name(e->driver));
    if ((size_t)e->batch > drv->batch_max) {
        md_log(MD_LOG_WARN, 0, "esp \"%s\": batch %d capped to %zu, what %s takes per request",
               e->name, e->batch, drv->batch_max, md_esp_driver_name(e->driver));
        e->batch = (int)drv->batch_max;
    }
    return MD_OK;
}

int
md_esp_conf_batch(const md_esp_conf_t *c, double *window)
{
    if (window)
        *window = c ? c->batch_window : 0;
    if (c == NULL || c->batch <= 1)
        return 1;
    const md_esp_driver_t *drv = md_esp_driver(c->driver);
    return drv == NULL || drv->batch_max == 0 ? 1 : c->batch;
}

static const md_conf_bounds_t md_esp_seed_bounds = {0, 2147483647};
static const md_conf_bounds_t md_esp_rate_bounds = {0, 1000000};
static const md_conf_bounds_t md_esp_conns_bounds = {1, 4096};
static const md_conf_bounds_t md_esp_timeout_bounds = {0.001, 3600};

#define MD_ESP_SECRET_ROWS(name, field)                                                            \
    {name, MD_CONF_ESP, MD_CONF_TAKE1,   md_conf_set_secret, offsetof(md_esp_conf_t, field),       \
     NULL, NULL,        md_conf_free_str},                                                         \
    {                                                                                              \
        name "_file", MD_CONF_ESP, MD_CONF_TAKE1, md_conf_set_secret,                              \
            offsetof(md_esp_conf_t, field), NULL, NULL, NULL                                       \
    }

static const md_conf_cmd_t md_esp_conf_cmds[] = {
    {"driver", MD_CONF_ESP, MD_CONF_TAKE1, md_conf_set_enum, offsetof(md_esp_conf_t, driver),
     md_esp_driver_names, NULL, NULL},
    {"dir", MD_CONF_ESP, MD_CONF_TAKE1, md_conf_set_path, offsetof(md_esp_conf_t, dir), NULL,
     "var/sink", md_conf_free_str},
    {"fsync", MD_CONF_ESP, MD_CONF_TAKE1, md_conf_set_flag, offsetof(md_esp_conf_t, fsync), NULL,
     "off", NULL},
    {"journal", MD_CONF_ESP, MD_CONF_TAKE1, md_conf_set_path, offsetof(md_esp_conf_t, journal),
     NULL, NULL, md_conf_free_str},
    {"fail_transient", MD_CONF_ESP, MD_CONF_TAKE1, md_esp_conf_set_ratio,
     offsetof(md_esp_conf_t, fail_transient), NULL, "0", NULL},
    {"fail_permanent", MD_CONF_ESP, MD_CONF_TAKE1, md_esp_conf_set_ratio,
     offsetof(md_esp_conf_t, fail_permanent), NULL, "0", NULL},
    {"seed", MD_CONF_ESP, MD_CONF_TAKE1, md_conf_set_number, offsetof(md_esp_conf_t, seed),
     &md_esp_seed_bounds, "0", NULL},
    /* remote providers */
    {"endpoint", MD_CONF_ESP, MD_CONF_TAKE1, md_esp_conf_set_endpoint,
     offsetof(md_esp_conf_t, endpoint), NULL, NULL, md_conf_free_str},
    {"rate", MD_CONF_ESP, MD_CONF_TAKE1, md_conf_set_number, offsetof(md_esp_conf_t, rate),
     &md_esp_rate_bounds, "0", NULL},
    {"max_connections", MD_CONF_ESP, MD_CONF_TAKE1, md_conf_set_number,
     offsetof(md_esp_conf_t, max_connections), &md_esp_conns_bounds, "8", NULL},
    {"tls_verify", MD_CONF_ESP, MD_CONF_TAKE1, md_conf_set_flag,
     offsetof(md_esp_conf_t, tls_verify), NULL, "on", NULL},
    {"ca_file", MD_CONF_ESP, MD_CONF_TAKE1, md_conf_set_path, offsetof(md_esp_conf_t, ca_file),
     NULL, NULL, md_conf_free_str},
    {"connect_timeout", MD_CONF_ESP, MD_CONF_TAKE1, md_conf_set_time,
     offsetof(md_esp_conf_t, connect_timeout), &md_esp_timeout_bounds, "5s", NULL},
    {"response_timeout", MD_CONF_ESP, MD_CONF_TAKE1, md_conf_set_time,
     offsetof(md_esp_conf_t, response_timeout), &md_esp_timeout_bounds, "30s", NULL},
    /* ses */
    {"region", MD_CONF_ESP, MD_CONF_TAKE1, md_esp_conf_set_name, offsetof(md_esp_conf_t, region),
     NULL, NULL, md_conf_free_str},
    MD_ESP_SECRET_ROWS("access_key_id", access_key_id),
    MD_ESP_SECRET_ROWS("secret_access_key", secret_access_key),
    MD_ESP_SECRET_ROWS("session_token", session_token),
    {"configuration_set", MD_CONF_ESP, MD_CONF_TAKE1, md_conf_set_str,
     offsetof(md_esp_conf_t, configuration_set), NULL, NULL, md_conf_free_str},
    /* sendgrid, mailgun */
    MD_ESP_SECRET_ROWS("api_key", api_key),
    /* postmark */
    MD_ESP_SECRET_ROWS("server_token", server_token),
    {"message_stream", MD_CONF_ESP, MD_CONF_TAKE1, md_conf_set_str,
     offsetof(md_esp_conf_t, message_stream), NULL, "outbound", md_conf_free_str},
    {"batch", MD_CONF_ESP, MD_CONF_TAKE1, md_esp_conf_set_batch, offsetof(md_esp_conf_t, batch),
     &md_esp_batch_bounds, "1", NULL},
    {"batch_window", MD_CONF_ESP, MD_CONF_TAKE1, md_conf_set_time,
     offsetof(md_esp_conf_t, batch_window), &md_esp_window_bounds, "2ms", NULL},
    /* mailgun */
    {"domain", MD_CONF_ESP, MD_CONF_TAKE1, md_esp_conf_set_name, offsetof(md_esp_conf_t, domain),
     NULL, NULL, md_conf_free_str},
    {NULL, 0, 0, NULL, 0, NULL, NULL, NULL},
};

const md_conf_block_t md_esp_conf_block = {"esp", MD_CONF_ESP, md_esp_conf_cmds};

bool
md_esp_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.'))
            return false;
    }
    return true;
}

/* The first of the account's required fields that is missing, or NULL. */
static const char *
md_esp_conf_missing(const md_esp_conf_t *e)
{
    switch (e->driver) {
    case MD_ESP_DRIVER_SES:
        if (e->region == NULL)
            return "region";
        if (e->access_key_id == NULL)
            return "access_key_id";
        if (e->secret_access_key == NULL)
            return "secret_access_key";
        return NULL;
    case MD_ESP_DRIVER_SENDGRID:
        return e->api_key ? NULL : "api_key";
    case MD_ESP_DRIVER_POSTMARK:
        return e->server_token ? NULL : "server_token";
    case MD_ESP_DRIVER_MAILGUN:
        if (e->api_key == NULL)
            return "api_key";
        return e->domain ? NULL : "domain";
    default:
        return NULL;
    }
}

/*
 * After a remote account's block: every required credential is there (else a
 * config error at the block's line), the endpoint defaults to the provider's
 * public API host, and tls_verify off is said out loud.
 */
static int
md_esp_conf_check_remote(md_conf_parser_t *cf, md_esp_conf_t *e)
{
    if (!md_esp_driver_remote(e->driver))
        return MD_OK;
    const char *missing = md_esp_conf_missing(e);
    if (missing) {
        bool secret = strcmp(missing, "region") != 0 && strcmp(missing, "domain") != 0;
        return md_conf_error(cf, "esp \"%s\" (driver %s) needs \"%s\"%s%s%s", e->name,
                             md_esp_driver_name(e->driver), missing, secret ? " or \"" : "",
                             secret ? missing : "", secret ? "_file\"" : "");
    }
    if (e->endpoint == NULL) {
        char url[300];
        switch (e->driver) {
        case MD_ESP_DRIVER_SES:
            snprintf(url, sizeof(url), "https://email.%s.amazonaws.com", e->region);
            break;
        case MD_ESP_DRIVER_SENDGRID:
            snprintf(url, sizeof(url), "https://api.sendgrid.com");
            break;
        case MD_ESP_DRIVER_POSTMARK:
            snprintf(url, sizeof(url), "https://api.postmarkapp.com");
            break;
        default: /* mailgun; EU accounts set endpoint https://api.eu.mailgun.net */
            snprintf(url, sizeof(url), "https://api.mailgun.net");
            break;
        }
        e->endpoint = md_xstrdup(url);
    }
    if (!e->tls_verify)
        md_log(MD_LOG_WARN, 0,
               "esp \"%s\": tls_verify off: the certificate and host name of %s will not be "
               "checked",
               e->name, e->endpoint);
    return MD_OK;
}

/*
 * esp NAME { ... }: appends an account to md_conf_t.esp (base is the md_conf_t)
 * and parses the block into it. The entry is counted before its block is parsed,
 * so md_esp_conf_free releases it whatever happens.
 */
int
md_esp_conf_set(md_conf_parser_t *cf, const md_conf_cmd_t *cmd, void *base)
{
    md_unused(cmd);
    md_conf_t *conf = base;
    const char *name = md_conf_arg(cf, 1);
    if (!md_esp_name_ok(name))
        return md_conf_error(cf, "invalid esp name \"%s\" (1 to 64 of A-Z a-z 0-9 _ - .)", name);
    for (size_t i = 0; i < conf->nesp; i++) {
        if (strcmp(conf->esp[i].name, name) == 0)
            return md_conf_error(cf, "duplicate esp \"%s\"", name);
    }
    conf->esp = md_xrealloc(conf->esp, sizeof(*conf->esp) * (conf->nesp + 1));
    md_esp_conf_t *e = &conf->esp[conf->nesp++];
    memset(e, 0, sizeof(*e));
    e->name = md_xstrdup(name);
    e->driver = MD_ESP_DRIVER_NONE;
    if (md_conf_parse_block(cf, &md_esp_conf_block, e) != MD_OK)
        return MD_ERROR;
    if (e->driver == MD_ESP_DRIVER_NONE) {
        /* esp sink { } needs no "driver sink;" */
        for (const md_conf_enum_t *d = md_esp_driver_names; d->name; d++) {
            if (strcmp(d->name, e->name) == 0)
                e->driver = d->value;
        }
        if (e->driver == MD_ESP_DRIVER_NONE)
            return md_conf_error(cf, "esp \"%s\" has no \"driver\" directive", e->name);
    }
    if (e->fail_transient + e->fail_permanent > 1.0 + 1e-9)
        return md_conf_error(cf, "esp \"%s\": fail_transient + fail_permanent exceeds 1", e->name);
    if (md_esp_conf_check_batch(cf, e) != MD_OK)
        return MD_ERROR;
    return md_esp_conf_check_remote(cf, e);
}

void
md_esp_conf_free(const md_conf_cmd_t *cmd, void *base)
{
    md_unused(cmd);
    md_conf_t *conf = base;
    for (size_t i = 0; i < conf->nesp; i++) {
        md_conf_cleanup(&md_esp_conf_block, &conf->esp[i]);
        free(conf->esp[i].name);
    }
    free(conf->esp);
    conf->esp = NULL;
    conf->nesp = 0;
}

const md_esp_conf_t *
md_esp_conf_find(const md_conf_t *conf, const char *name)
{
    for (size_t i = 0; conf && name && i < conf->nesp; i++) {
        if (strcmp(conf->esp[i].name, name) == 0)
            return &conf->esp[i];
    }
    return NULL;
}

/* ---- results ------------------------------------------------------------------ */

static void
md_esp_copy(char *dst, size_t size, const char *src)
{
    md_strlcpy(dst, src ? src : "", size);
}

void
md_esp_result_sent(md_esp_result_t *res, const char *provider_id, int delivered)
{
    memset(res, 0, sizeof(*res));
    res->outcome = MD_ESP_SENT;
    res->delivered = delivered;
    md_esp_copy(res->provider_id, sizeof(res->provider_id), provider_id);
}

void
md_esp_result_retryable(md_esp_result_t *res, const char *reason, double retry_after,
                        const char *text)
{
    memset(res, 0, sizeof(*res));
    res->outcome = MD_ESP_RETRYABLE;
    res->retry_after = retry_after > 0 ? retry_after : 0;
    md_esp_copy(res->code, sizeof(res->code), reason);
    md_esp_copy(res->text, sizeof(res->text), text);
}

void
md_esp_result_permanent(md_esp_result_t *res, const char *code, const char *text)
{
    memset(res, 0, sizeof(*res));
    res->outcome = MD_ESP_PERMANENT;
    md_esp_copy(res->code, sizeof(res->code), code);
    md_esp_copy(res->text, sizeof(res->text), text);
}

/* ---- this worker's accounts --------------------------------------------------- */

static md_esp_t *md_esp_accounts;
static size_t md_esp_naccounts;
static md_esp_t *md_esp_dflt;

static const md_esp_driver_t *
md_esp_driver(int kind)
{
    switch (kind) {
    case MD_ESP_DRIVER_SINK:
        return &md_esp_sink_driver;
    case MD_ESP_DRIVER_SES:
        return &md_esp_ses_driver;
    case MD_ESP_DRIVER_SENDGRID:
        return &md_esp_sendgrid_driver;
    case MD_ESP_DRIVER_POSTMARK:
        return &md_esp_postmark_driver;
    case MD_ESP_DRIVER_MAILGUN:
        return &md_esp_mailgun_driver;
    default:
        return NULL;
    }
}

/* splitmix64: turns any seed (0 too) into a well-mixed xorshift state. */
static uint64_t
md_esp_mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x ? x : 0x2545f4914f6cdd1dULL;
}

double
md_esp_random(md_esp_t *esp)
{
    /* xorshift64*: fast and good enough to decide test failures and jitter */
    uint64_t x = esp->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    esp->rng = x;
    return (double)((x * 0x2545f4914f6cdd1dULL) >> 11) * (1.0 / 9007199254740992.0);
}

/*
 * A remote account's keep-alive pool on this worker's HTTP client. The client
 * owns it (freed with the client); without md_app (unit tests, CLI) there is
 * none and the driver can still build and read requests.
 */
static int
md_esp_make_endpoint(md_esp_t *e, char *err, size_t errlen)
{
    e->endpoint = NULL;
    if (!md_esp_driver_remote(e->conf->driver) || md_app == NULL || md_app->http_client == NULL)
        return MD_OK;
    const md_esp_conf_t *c = e->conf;
    md_http_endpoint_conf_t ec;
    memset(&ec, 0, sizeof(ec));
    ec.url = c->endpoint;
    ec.name = c->name;
    ec.max_connections = c->max_connections > 0 ? (unsigned)c->max_connections : 8;
    ec.connect_timeout = c->connect_timeout;
    ec.handshake_timeout = c->connect_timeout;
    ec.response_timeout = c->response_timeout;
    ec.ca_file = c->ca_file;
    ec.tls_verify_off = !c->tls_verify;
    char eerr[256];
    e->endpoint = md_http_client_endpoint(md_app->http_client, &ec, eerr, sizeof(eerr));
    if (e->endpoint == NULL) {
        snprintf(err, errlen, "esp \"%s\": %s", c->name, eerr);
        return MD_ERROR;
    }
    return MD_OK;
}

int
md_esp_init(const md_conf_t *conf, unsigned seed_salt, char *err, size_t errlen)
{
    md_esp_destroy();
    if (conf->nesp == 0)
        return MD_OK;
    md_esp_t *a = md_xcalloc(conf->nesp, sizeof(*a));
    size_t n = 0;
    for (; n < conf->nesp; n++) {
        md_esp_t *e = &a[n];
        e->conf = &conf->esp[n];
        e->driver = md_esp_driver(e->conf->driver);
        if (e->driver == NULL) {
            snprintf(err, errlen, "esp \"%s\": unknown driver", e->conf->name);
            goto fail;
        }
        uint64_t seed = 0;
        if (e->conf->seed > 0)
            seed = ((uint64_t)e->conf->seed << 20) ^ ((uint64_t)seed_salt << 8) ^ n;
        else if (md_random_bytes(&seed, sizeof(seed)) != MD_OK)
            seed = (uint64_t)getpid() ^ ((uint64_t)seed_salt << 32);
        e->rng = md_esp_mix(seed);
        if (e->driver->init && e->driver->init(e, err, errlen) != MD_OK)
            goto fail;
        if (md_esp_make_endpoint(e, err, errlen) != MD_OK) {
            if (e->driver->destroy)
                e->driver->destroy(e);
            goto fail;
        }
    }
    md_esp_accounts = a;
    md_esp_naccounts = n;
    md_esp_dflt = conf->default_esp ? md_esp_get(conf->default_esp) : NULL;
    return MD_OK;

fail:
    while (n-- > 0) {
        if (a[n].driver && a[n].driver->destroy)
            a[n].driver->destroy(&a[n]);
    }
    free(a);
    return MD_ERROR;
}

void
md_esp_destroy(void)
{
    for (size_t i = 0; i < md_esp_naccounts; i++) {
        md_esp_t *e = &md_esp_accounts[i];
        if (e->driver && e->driver->destroy)
            e->driver->destroy(e);
    }
    free(md_esp_accounts);
    md_esp_accounts = NULL;
    md_esp_naccounts = 0;
    md_esp_dflt = NULL;
}

md_esp_t *
md_esp_get(const char *name)
{
    for (size_t i = 0; name && i < md_esp_naccounts; i++) {
        if (strcmp(md_esp_accounts[i].conf->name, name) == 0)
            return &md_esp_accounts[i];
    }
    return NULL;
}

md_esp_t *
md_esp_default(void)
{
    return md_esp_dflt;
}

/* ---- addresses ---------------------------------------------------------------- */

int
md_esp_addr_ascii(const char *addr, char *out, size_t size)
{
    const char *at = addr ? strrchr(addr, '@') : NULL;
    if (at == NULL || at == addr || at[1] == '\0')
        return MD_ERROR;
    size_t llen = (size_t)(at - addr);
    const char *dom = at + 1;
    bool ascii = true;
    for (const char *p = dom; *p; p++) {
        if ((unsigned char)*p >= 0x80)
            ascii = false;
    }
    if (ascii || dom[0] == '[') {
        return md_strlcpy(out, addr, size) < size ? MD_OK : MD_ERROR;
    }
    char adom[MD_ADDRESS_DOMAIN_MAX + 1];
    size_t alen = 0;
    md_address_error_t aerr;
    if (md_address_domain_to_ascii(dom, strlen(dom), adom, sizeof(adom), &alen, &aerr) != MD_OK)
        return MD_ERROR;
    if (llen + 1 + alen + 1 > size)
        return MD_ERROR;
    memcpy(out, addr, llen);
    out[llen] = '@';
    memcpy(out + llen + 1, adom, alen + 1);
    return MD_OK;
}

/* ---- helpers for the remote drivers ------------------------------------------ */

int
md_esp_request_header(md_esp_request_t *req, const char *name, const char *value)
{
    if (req->nheaders >= MD_ESP_MAX_HEADERS)
        return MD_ERROR;
    req->headers[req->nheaders].name = name;
    req->headers[req->nheaders].value = value;
    req->nheaders++;
    return MD_OK;
}

char *
md_esp_pool_str(md_pool_t *pool, const md_buf_t *b)
{
    return md_pstrndup(pool, b->pos ? b->pos : "", md_buf_len(b));
}

int
md_esp_parse_http_date(const char *s, time_t *t)
{
    /* RFC 9110 5.6.7: IMF-fixdate is what senders use; the two obsolete forms
     * must still be accepted by recipients. */
    static const char *const fmts[] = {"%a, %d %b %Y %H:%M:%S GMT", "%A, %d-%b-%y %H:%M:%S GMT",
                                       "%a %b %e %H:%M:%S %Y"};
    for (size_t i = 0; i < sizeof(fmts) / sizeof(fmts[0]); i++) {
        struct tm tm;
        memset(&tm, 0, sizeof(tm));
        const char *end = strptime(s, fmts[i], &tm);
        if (end == NULL)
            continue;
        while (*end == ' ' || *end == '\t')
            end++;
        if (*end != '\0')
            continue;
        time_t v = timegm(&tm);
        if (v == (time_t)-1)
            return MD_ERROR;
        *t = v;
        return MD_OK;
    }
    return MD_ERROR;
}

#define MD_ESP_RETRY_AFTER_MAX 86400.0

double
md_esp_retry_after(const md_http_client_response_t *resp, time_t now)
{
    const char *v = resp ? md_http_client_header(resp, "Retry-After") : NULL;
    if (v == NULL)
        return 0;
    while (*v == ' ' || *v == '\t')
        v++;
    double secs = 0;
    if (*v >= '0' && *v <= '9') {
        char *end = NULL;
        errno = 0;
        double d = strtod(v, &end);
        while (end && (*end == ' ' || *end == '\t'))
            end++;
        if (errno != 0 || end == NULL || *end != '\0' || !isfinite(d))
            return 0;
        secs = d;
    } else {
        time_t t;
        if (md_esp_parse_http_date(v, &t) != MD_OK)
            return 0;
        secs = difftime(t, now);
    }
    if (secs <= 0)
        return 0;
    return secs > MD_ESP_RETRY_AFTER_MAX ? MD_ESP_RETRY_AFTER_MAX : secs;
}

bool
md_esp_transport_error(const md_esp_response_t *resp, md_esp_result_t *res)
{
    const md_http_client_response_t *h = resp ? resp->http : NULL;
    if (h == NULL) {
        md_esp_result_retryable(res, "protocol", 0, "no response");
        return true;
    }
    if (h->error == NULL)
        return false;
    char text[256];
    snprintf(text, sizeof(text), "%s%s%s%s", h->error, h->detail && h->detail[0] ? ": " : "",
             h->detail ? h->detail : "", h->request_sent ? " (request sent)" : "");
    md_esp_result_retryable(res, h->error, 0, text);
    return true;
}

/* Length of the UTF-8 sequence starting with lead byte c (1 for a stray byte). */
static size_t
md_esp_utf8_len(unsigned char c)
{
    if (c >= 0xf0 && c < 0xf8)
        return 4;
    if (c >= 0xe0)
        return c < 0xf0 ? 3 : 1;
    if (c >= 0xc0)
        return 2;
    return 1;
}

/* RFC 2047 B encoded-words for s[0..n): 45 bytes of text per word (60 base64
 * characters, 72 with the wrapper, under the 75 limit), never splitting a UTF-8
 * sequence across words (RFC 2047 5: each word must decode on its own). */
static void
md_esp_encoded_words(md_buf_t *b, const char *s, size_t n)
{
    size_t i = 0;
    bool first = true;
    while (i < n) {
        size_t j = i;
        while (j < n) {
            size_t l = md_esp_utf8_len((unsigned char)s[j]);
            if (j + l > n)
                l = n - j;
            if (j + l - i > 45)
                break;
            j += l;
        }
        if (j == i)
            j = i + 1;
        if (!first)
            md_buf_append_str(b, " ");
        md_buf_append_str(b, "=?UTF-8?B?");
        md_mime_base64_encode(b, s + i, j - i, 0);
        md_buf_append_str(b, "?=");
        first = false;
        i = j;
    }
}

static bool
md_esp_is_ascii(const char *s)
{
    for (; *s; s++) {
        if ((unsigned char)*s >= 0x80)
            return false;
    }
    return true;
}

void
md_esp_header_value(md_buf_t *b, const char *value)
{
    if (value == NULL)
        return;
    if (md_esp_is_ascii(value))
        md_buf_append_str(b, value);
    else
        md_esp_encoded_words(b, value, strlen(value));
}

void
md_esp_mailbox(md_buf_t *b, const md_mime_addr_t *a, bool encode)
{
    const char *name = a->name;
    if (name == NULL || name[0] == '\0') {
        md_buf_append_str(b, a->addr);
        return;
    }
    if (encode && !md_esp_is_ascii(name)) {
        md_esp_encoded_words(b, name, strlen(name));
    } else if (strpbrk(name, "()<>[]:;@\\,.\"") != NULL) {
        /* RFC 5322 quoted-string: only " and \ need a backslash */
        md_buf_append_str(b, "\"");
        for (const char *p = name; *p; p++) {
            if (*p == '"' || *p == '\\')
                md_buf_append_str(b, "\\");
            md_buf_append(b, p, 1);
        }
        md_buf_append_str(b, "\"");
    } else {
        md_buf_append_str(b, name);
    }
    md_buf_printf(b, " <%s>", a->addr);
}

void
md_esp_json_str(md_buf_t *b, const char *s)
{
    if (s == NULL) {
        md_buf_append_str(b, "null");
        return;
    }
    md_buf_append_str(b, "\"");
    md_buf_append_json_escaped(b, s, strlen(s));
    md_buf_append_str(b, "\"");
}

void
md_esp_json_headers(md_buf_t *b, const md_esp_msg_t *m, md_buf_t *tmp)
{
    md_buf_append_str(b, "[{\"Name\":\"X-Mailerd-Message-Id\",\"Value\":");
    md_esp_json_str(b, m->id);
    md_buf_append_str(b, "}");
    for (size_t i = 0; i < m->nheaders; i++) {
        md_buf_append_str(b, ",{\"Name\":");
        md_esp_json_str(b, m->headers[i].name);
        md_buf_append_str(b, ",\"Value\":\"");
        md_buf_reset(tmp);
        md_esp_header_value(tmp, m->headers[i].value);
        md_buf_append_json_escaped(b, tmp->pos, md_buf_len(tmp));
        md_buf_append_str(b, "\"}");
    }
    md_buf_append_str(b, "]");
}

bool
md_esp_has_content(const md_esp_msg_t *m, md_esp_result_t *res)
{
    if (m->text.data != NULL || m->html.data != NULL)
        return true;
    md_esp_result_permanent(res, "no_content", "the message has neither a text nor an html part");
    return false;
}
