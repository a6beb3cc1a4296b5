/*
 * ESP accounts: the esp NAME { } directive table, this worker's account
 * instances, and helpers shared by the drivers (results, PRNG, addresses).
 */
#include "md_esp.h"
#include "md_address.h"
#include "md_id.h"
#include "md_log.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* ---- configuration ------------------------------------------------------------ */

static const md_conf_enum_t md_esp_driver_names[] = {
    {"sink", MD_ESP_DRIVER_SINK},
    {NULL, 0},
};

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

static const md_conf_bounds_t md_esp_seed_bounds = {0, 2147483647};

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
    {NULL, 0, 0, NULL, 0, NULL, NULL, NULL},
};

const md_conf_block_t md_esp_conf_block = {"esp", MD_CONF_ESP, md_esp_conf_cmds};

/* Account names appear in the API ("esp" route override), metrics labels and
 * logs: keep them to a safe alphabet. */
static bool
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
    return MD_OK;
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
    snprintf(dst, size, "%s", src ? src : "");
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
        int n = snprintf(out, size, "%s", addr);
        return n >= 0 && (size_t)n < size ? MD_OK : MD_ERROR;
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
