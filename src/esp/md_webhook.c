/*
 * Provider webhook verification and parsing (see md_webhook.h for the rules).
 *
 * Parsing goes through jansson: a body is at most a few hundred KB (a SendGrid
 * batch), parsed once, and every string we keep is copied out before the tree is
 * released, so an event never points into the caller's body.
 */
#include "md_webhook.h"

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

struct md_webhook_sg_key_s {
    EVP_PKEY *pkey;
};

/* ---- names -------------------------------------------------------------- */

const char *
md_event_type_name(md_event_type_t t)
{
    static const char *const names[] = {
        [MD_EVENT_OTHER] = "other",
        [MD_EVENT_SENT] = "sent",
        [MD_EVENT_DELIVERED] = "delivered",
        [MD_EVENT_DEFERRED] = "deferred",
        [MD_EVENT_BOUNCED] = "bounced",
        [MD_EVENT_COMPLAINED] = "complained",
        [MD_EVENT_REJECTED] = "rejected",
        [MD_EVENT_RENDERING_FAILURE] = "rendering_failure",
        [MD_EVENT_OPENED] = "opened",
        [MD_EVENT_CLICKED] = "clicked",
        [MD_EVENT_UNSUBSCRIBED] = "unsubscribed",
        [MD_EVENT_SUBSCRIBED] = "subscribed",
        [MD_EVENT_SUBSCRIPTION] = "subscription",
    };
    if ((size_t)t < md_nelems(names) && names[t])
        return names[t];
    return "other";
}

const char *
md_bounce_class_name(md_bounce_class_t b)
{
    switch (b) {
    case MD_BOUNCE_HARD:
        return "hard";
    case MD_BOUNCE_SOFT:
        return "soft";
    case MD_BOUNCE_UNDETERMINED:
        return "undetermined";
    default:
        return NULL;
    }
}

const char *
md_webhook_provider_name(md_webhook_provider_t p)
{
    switch (p) {
    case MD_WEBHOOK_SES:
        return "ses";
    case MD_WEBHOOK_SENDGRID:
        return "sendgrid";
    case MD_WEBHOOK_POSTMARK:
        return "postmark";
    case MD_WEBHOOK_MAILGUN:
        return "mailgun";
    }
    return "unknown";
}

/* ---- small helpers ------------------------------------------------------ */

/* A string member of obj, or NULL (also when obj is not an object). */
static const char *
jstr(const json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key));
}

static char *
dup0(const char *s)
{
    return s ? md_xstrdup(s) : NULL;
}

/* A JSON number or digit string as a decimal string, for numeric ids (Postmark
 * ID). NULL for anything else. The caller frees. */
static char *
jid(const json_t *v)
{
    char b[32];
    if (json_is_integer(v)) {
        snprintf(b, sizeof(b), "%lld", (long long)json_integer_value(v));
        return md_xstrdup(b);
    }
    if (json_is_string(v) && json_string_length(v) > 0)
        return md_xstrdup(json_string_value(v));
    return NULL;
}

/* "sha256:" + hex SHA-256 of v encoded compact with sorted keys: the same event
 * delivered twice (or re-serialised by a proxy) gets the same id. */
static char *
hash_id(const json_t *v)
{
    char *s = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    unsigned char d[SHA256_DIGEST_LENGTH];
    char out[7 + 2 * SHA256_DIGEST_LENGTH + 1];
    SHA256((const unsigned char *)(s ? s : ""), s ? strlen(s) : 0, d);
    free(s);
    memcpy(out, "sha256:", 7);
    md_hex_encode(out + 7, d, sizeof(d));
    return md_xstrdup(out);
}

static char *
details_of(const json_t *v)
{
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    char *r = md_xstrdup(s ? s : "null");
    free(s);
    return r;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
 * days_from_civil), so no timegm() and no TZ dependence. */
static int64_t
days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static int
digits(const char **p, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++, (*p)++) {
        if (**p < '0' || **p > '9')
            return -1;
        v = v * 10 + (**p - '0');
    }
    return v;
}

/* ISO 8601 / RFC 3339 "YYYY-MM-DDTHH:MM:SS[.frac][Z|+HH:MM|-HH:MM]" (a missing
 * zone is taken as UTC; Postmark sends 7 fraction digits) -> Unix ms, or 0. */
static int64_t
iso8601_ms(const char *s)
{
    if (s == NULL)
        return 0;
    const char *p = s;
    int y = digits(&p, 4);
    if (y < 0 || *p++ != '-')
        return 0;
    int mo = digits(&p, 2);
    if (mo < 1 || mo > 12 || *p++ != '-')
        return 0;
    int d = digits(&p, 2);
    if (d < 1 || d > 31 || (*p != 'T' && *p != 't' && *p != ' '))
        return 0;
    p++;
    int h = digits(&p, 2);
    if (h < 0 || h > 23 || *p++ != ':')
        return 0;
    int mi = digits(&p, 2);
    if (mi < 0 || mi > 59 || *p++ != ':')
        return 0;
    int se = digits(&p, 2);
    if (se < 0 || se > 60)
        return 0;
    int ms = 0, scale = 100;
    if (*p == '.') {
        p++;
        if (*p < '0' || *p > '9')
            return 0;
        for (; *p >= '0' && *p <= '9'; p++, scale /= 10)
            ms += (*p - '0') * scale;
    }
    int64_t off = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p++ == '-' ? -1 : 1;
        int oh = digits(&p, 2);
        if (oh < 0 || *p++ != ':')
            return 0;
        int om = digits(&p, 2);
        if (om < 0)
            return 0;
        off = sign * (oh * 3600 + om * 60);
    }
    if (*p != '\0')
        return 0;
    int64_t t = days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400 + h * 3600 + mi * 60 + se;
    return (t - off) * 1000 + ms;
}

/* Unix seconds before the year 10000: any other time is no time (and its ms
 * would overflow int64_t). */
#define EPOCH_MAX 253402300800.0

/* Unix seconds as a JSON integer, real or digit string -> ms, or 0. */
static int64_t
epoch_ms(const json_t *v)
{
    double x;
    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        return i > 0 && i < (json_int_t)EPOCH_MAX ? (int64_t)i * 1000 : 0;
    }
    if (json_is_real(v)) {
        x = json_real_value(v);
    } else if (json_is_string(v)) {
        const char *s = json_string_value(v);
        char *end;
        x = strtod(s, &end);
        if (end == s || *end != '\0')
            return 0;
    } else {
        return 0;
    }
    return x > 0 && x < EPOCH_MAX ? (int64_t)(x * 1000.0 + 0.5) : 0;
}

static md_webhook_event_t *
ev_push(md_webhook_events_t *out, md_webhook_provider_t p)
{
    out->ev = md_xrealloc(out->ev, (out->n + 1) * sizeof(*out->ev));
    md_webhook_event_t *e = &out->ev[out->n++];
    memset(e, 0, sizeof(*e));
    e->provider = p;
    return e;
}

void
md_webhook_events_free(md_webhook_events_t *out)
{
    if (out == NULL)
        return;
    for (size_t i = 0; i < out->n; i++) {
        md_webhook_event_t *e = &out->ev[i];
        free(e->provider_event);
        free(e->provider_type);
        free(e->provider_subtype);
        free(e->event_id);
        free(e->message_id);
        free(e->provider_message_id);
        free(e->recipient);
        free(e->url);
        free(e->diagnostic);
        free(e->details);
    }
    free(out->ev);
    out->ev = NULL;
    out->n = 0;
}

static int
malformed(md_webhook_events_t *out, const char **why)
{
    md_webhook_events_free(out);
    if (why)
        *why = MD_WEBHOOK_WHY_MALFORMED;
    return MD_DECLINED;
}

static json_t *
load(const char *body, size_t len)
{
    if (body == NULL)
        return NULL;
    return json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL);
}

/* ---- SES ---------------------------------------------------------------- */

/* Our id from mail.tags (event publishing) or, for identity notifications,
 * which carry no tags, from the original headers when SES includes them. */
static const char *
ses_our_id(const json_t *mail)
{
    const json_t *tag = json_object_get(json_object_get(mail, "tags"), "mailerd_message_id");
    if (json_is_array(tag) && json_is_string(json_array_get(tag, 0)))
        return json_string_value(json_array_get(tag, 0));
    if (json_is_string(tag))
        return json_string_value(tag);
    size_t i;
    json_t *h;
    json_array_foreach(json_object_get(mail, "headers"), i, h)
    {
        const char *name = jstr(h, "name");
        if (name && strcasecmp(name, "X-Mailerd-Message-Id") == 0)
            return jstr(h, "value");
    }
    return NULL;
}

/* What one SES body says about all its events: views into the parsed tree,
 * copied into each event by ses_fan_out(). */
typedef struct ses_tmpl_s {
    md_event_type_t type;
    md_bounce_class_t bounce;
    const char *provider_event, *provider_type, *provider_subtype, *event_id;
    const char *message_id, *provider_message_id, *url, *diagnostic;
    int64_t timestamp_ms;
} ses_tmpl_t;

/* One event per element of list (strings, or objects with emailAddress), or one
 * event with recipient NULL if the list is empty; each filled from tmpl. */
static void
ses_fan_out(md_webhook_events_t *out, const ses_tmpl_t *tmpl, const json_t *list,
            const json_t *root)
{
    size_t n = json_array_size(list), i;
    size_t first = out->n;
    for (i = 0; i < (n ? n : 1); i++) {
        const json_t *r = json_array_get(list, i);
        md_webhook_event_t *e = ev_push(out, MD_WEBHOOK_SES);
        e->type = tmpl->type;
        e->bounce = tmpl->bounce;
        e->provider_event = dup0(tmpl->provider_event);
        e->provider_type = dup0(tmpl->provider_type);
        e->provider_subtype = dup0(tmpl->provider_subtype);
        e->message_id = dup0(tmpl->message_id);
        e->provider_message_id = dup0(tmpl->provider_message_id);
        e->url = dup0(tmpl->url);
        e->timestamp_ms = tmpl->timestamp_ms;
        e->recipient = dup0(json_is_string(r) ? json_string_value(r) : jstr(r, "emailAddress"));
        /* A per-recipient diagnostic (bounce, delay) beats the message-wide one. */
        const char *diag = jstr(r, "diagnosticCode");
        e->diagnostic = dup0(diag ? diag : tmpl->diagnostic);
        e->details = details_of(root);
    }
    for (i = first; i < out->n; i++) {
        md_webhook_event_t *e = &out->ev[i];
        if (n > 1 && e->recipient) {
            size_t l = strlen(tmpl->event_id) + 1 + strlen(e->recipient) + 1;
            e->event_id = md_xmalloc(l);
            snprintf(e->event_id, l, "%s:%s", tmpl->event_id, e->recipient);
        } else {
            e->event_id = md_xstrdup(tmpl->event_id);
        }
    }
}

int
md_webhook_parse_ses(const char *body, size_t len, md_webhook_events_t *out, const char **why)
{
    memset(out, 0, sizeof(*out));
    json_t *root = load(body, len);
    const char *kind = jstr(root, "eventType");
    if (kind == NULL)
        kind = jstr(root, "notificationType");
    json_t *mail = json_object_get(root, "mail");
    if (!json_is_object(root) || kind == NULL || !json_is_object(mail)) {
        json_decref(root);
        return malformed(out, why);
    }

    ses_tmpl_t t;
    memset(&t, 0, sizeof(t));
    t.provider_event = kind;
    t.message_id = ses_our_id(mail);
    t.provider_message_id = jstr(mail, "messageId");
    t.timestamp_ms = iso8601_ms(jstr(mail, "timestamp"));
    const json_t *list = json_object_get(mail, "destination");
    const json_t *sub = NULL;
    const char *id = NULL;
    bool fan = false; /* one event per affected recipient */

    if (strcmp(kind, "Bounce") == 0) {
        sub = json_object_get(root, "bounce");
        t.type = MD_EVENT_BOUNCED;
        t.provider_type = jstr(sub, "bounceType");
        t.provider_subtype = jstr(sub, "bounceSubType");
        if (t.provider_type && strcmp(t.provider_type, "Permanent") == 0)
            t.bounce = MD_BOUNCE_HARD;
        else if (t.provider_type && strcmp(t.provider_type, "Transient") == 0)
            t.bounce = MD_BOUNCE_SOFT;
        else
            t.bounce = MD_BOUNCE_UNDETERMINED;
        list = json_object_get(sub, "bouncedRecipients");
        id = jstr(sub, "feedbackId");
        fan = true;
    } else if (strcmp(kind, "Complaint") == 0) {
        sub = json_object_get(root, "complaint");
        t.type = MD_EVENT_COMPLAINED;
        t.provider_type = jstr(sub, "complaintFeedbackType");
        t.provider_subtype = jstr(sub, "complaintSubType");
        list = json_object_get(sub, "complainedRecipients");
        id = jstr(sub, "feedbackId");
        fan = true;
    } else if (strcmp(kind, "Delivery") == 0) {
        sub = json_object_get(root, "delivery");
        t.type = MD_EVENT_DELIVERED;
        t.diagnostic = jstr(sub, "smtpResponse");
        list = json_object_get(sub, "recipients");
        fan = true;
    } else if (strcmp(kind, "DeliveryDelay") == 0) {
        sub = json_object_get(root, "deliveryDelay");
        t.type = MD_EVENT_DEFERRED;
        t.provider_type = jstr(sub, "delayType");
        list = json_object_get(sub, "delayedRecipients");
        fan = true;
    } else if (strcmp(kind, "Send") == 0) {
        sub = json_object_get(root, "send");
        t.type = MD_EVENT_SENT;
    } else if (strcmp(kind, "Reject") == 0) {
        sub = json_object_get(root, "reject");
        t.type = MD_EVENT_REJECTED;
        t.provider_type = jstr(sub, "reason");
    } else if (strcmp(kind, "Open") == 0) {
        sub = json_object_get(root, "open");
        t.type = MD_EVENT_OPENED;
    } else if (strcmp(kind, "Click") == 0) {
        sub = json_object_get(root, "click");
        t.type = MD_EVENT_CLICKED;
        t.url = jstr(sub, "link");
    } else if (strcmp(kind, "Rendering Failure") == 0) {
        sub = json_object_get(root, "failure");
        t.type = MD_EVENT_RENDERING_FAILURE;
        t.provider_type = jstr(sub, "templateName");
        t.diagnostic = jstr(sub, "errorMessage");
    } else if (strcmp(kind, "Subscription") == 0) {
        sub = json_object_get(root, "subscription");
        const json_t *np = json_object_get(sub, "newTopicPreferences");
        t.type = json_is_true(json_object_get(np, "unsubscribeAll")) ? MD_EVENT_UNSUBSCRIBED
                                                                     : MD_EVENT_SUBSCRIPTION;
        t.provider_type = jstr(sub, "source");
        t.provider_subtype = jstr(sub, "contactList");
    } else {
        t.type = MD_EVENT_OTHER;
    }
    if (sub != NULL && !json_is_object(sub) && !json_is_null(sub)) {
        json_decref(root);
        return malformed(out, why);
    }
    int64_t ts = iso8601_ms(jstr(sub, "timestamp"));
    if (ts)
        t.timestamp_ms = ts;

    /* feedbackId is unique per notification, but AWS's own examples reuse one
     * for a bounce and a complaint: the kind in front keeps them apart. */
    char *hid = NULL;
    if (id != NULL) {
        size_t l = strlen(kind) + 1 + strlen(id) + 1;
        hid = md_xmalloc(l);
        snprintf(hid, l, "%s:%s", kind, id);
    } else {
        hid = hash_id(root);
    }
    t.event_id = hid;
    if (fan) {
        ses_fan_out(out, &t, list, root);
    } else {
        /* Message-level events: naming one recipient only makes sense when the
         * message had exactly one. */
        json_t *one = json_array_size(list) == 1 ? json_array_get(list, 0) : NULL;
        ses_fan_out(out, &t, NULL, root);
        if (json_is_string(one))
            out->ev[out->n - 1].recipient = md_xstrdup(json_string_value(one));
    }
    free(hid);
    json_decref(root);
    return MD_OK;
}

/* ---- SendGrid ----------------------------------------------------------- */

/* The X-Message-Id SendGrid answered the send with is the part of
 * sg_message_id before ".filter..."; ids that start with "filter" carry none. */
static char *
sg_provider_id(const json_t *o)
{
    const char *s = jstr(o, "sg_message_id");
    if (s == NULL || *s == '\0' || strncmp(s, "filter", 6) == 0)
        return NULL;
    const char *dot = strchr(s, '.');
    return dot ? md_xstrndup(s, (size_t)(dot - s)) : md_xstrdup(s);
}

static void
sg_one(md_webhook_events_t *out, const json_t *o)
{
    md_webhook_event_t *e = ev_push(out, MD_WEBHOOK_SENDGRID);
    const char *ev = jstr(o, "event");
    e->provider_event = dup0(ev);
    ev = ev ? ev : "";
    const char *diag = jstr(o, "reason");
    if (diag == NULL)
        diag = jstr(o, "response");

    if (strcmp(ev, "processed") == 0) {
        e->type = MD_EVENT_SENT;
    } else if (strcmp(ev, "delivered") == 0) {
        e->type = MD_EVENT_DELIVERED;
    } else if (strcmp(ev, "deferred") == 0) {
        e->type = MD_EVENT_DEFERRED;
    } else if (strcmp(ev, "bounce") == 0) {
        const char *bt = jstr(o, "type");
        e->type = MD_EVENT_BOUNCED;
        e->provider_type = md_xstrdup(bt ? bt : "bounce");
        e->provider_subtype = dup0(jstr(o, "status"));
        e->bounce = bt && strcmp(bt, "blocked") == 0 ? MD_BOUNCE_SOFT : MD_BOUNCE_HARD;
    } else if (strcmp(ev, "dropped") == 0) {
        e->type = MD_EVENT_REJECTED;
        e->provider_type = dup0(jstr(o, "reason"));
        e->provider_subtype = dup0(jstr(o, "status"));
    } else if (strcmp(ev, "spamreport") == 0) {
        e->type = MD_EVENT_COMPLAINED;
        e->provider_type = md_xstrdup("abuse");
    } else if (strcmp(ev, "unsubscribe") == 0) {
        e->type = MD_EVENT_UNSUBSCRIBED;
    } else if (strcmp(ev, "group_unsubscribe") == 0) {
        e->type = MD_EVENT_UNSUBSCRIBED;
        e->provider_type = md_xstrdup("group");
        e->provider_subtype = jid(json_object_get(o, "asm_group_id"));
    } else if (strcmp(ev, "group_resubscribe") == 0) {
        e->type = MD_EVENT_SUBSCRIBED;
        e->provider_type = md_xstrdup("group");
        e->provider_subtype = jid(json_object_get(o, "asm_group_id"));
    } else if (strcmp(ev, "open") == 0) {
        e->type = MD_EVENT_OPENED;
    } else if (strcmp(ev, "click") == 0) {
        e->type = MD_EVENT_CLICKED;
        e->url = dup0(jstr(o, "url"));
    } else {
        e->type = MD_EVENT_OTHER;
    }
    const char *sid = jstr(o, "sg_event_id");
    e->event_id = sid && *sid ? md_xstrdup(sid) : hash_id(o);
    e->message_id = dup0(jstr(o, "mailerd_message_id"));
    e->provider_message_id = sg_provider_id(o);
    e->recipient = dup0(jstr(o, "email"));
    e->diagnostic = dup0(diag);
    e->timestamp_ms = epoch_ms(json_object_get(o, "timestamp"));
    e->details = details_of(o);
}

int
md_webhook_parse_sendgrid(const char *body, size_t len, md_webhook_events_t *out, const char **why)
{
    memset(out, 0, sizeof(*out));
    json_t *root = load(body, len);
    size_t i;
    json_t *o;
    if (!json_is_array(root) || json_array_size(root) == 0) {
        json_decref(root);
        return malformed(out, why);
    }
    json_array_foreach(root, i, o)
    {
        if (!json_is_object(o) || jstr(o, "event") == NULL) {
            json_decref(root);
            return malformed(out, why);
        }
        sg_one(out, o);
    }
    json_decref(root);
    return MD_OK;
}

/* ---- Postmark ----------------------------------------------------------- */

static const struct {
    const char *name;
    md_event_type_t type;
    md_bounce_class_t bounce;
} pm_bounce_types[] = {
    {"HardBounce", MD_EVENT_BOUNCED, MD_BOUNCE_HARD},
    {"BadEmailAddress", MD_EVENT_BOUNCED, MD_BOUNCE_HARD},
    {"ManuallyDeactivated", MD_EVENT_BOUNCED, MD_BOUNCE_HARD},
    {"Transient", MD_EVENT_BOUNCED, MD_BOUNCE_SOFT},
    {"SoftBounce", MD_EVENT_BOUNCED, MD_BOUNCE_SOFT},
    {"DnsError", MD_EVENT_BOUNCED, MD_BOUNCE_SOFT},
    {"Blocked", MD_EVENT_BOUNCED, MD_BOUNCE_SOFT},
    {"SpamNotification", MD_EVENT_COMPLAINED, MD_BOUNCE_NONE},
    {"SpamComplaint", MD_EVENT_COMPLAINED, MD_BOUNCE_NONE},
    {"Unsubscribe", MD_EVENT_UNSUBSCRIBED, MD_BOUNCE_NONE},
    {"Subscribe", MD_EVENT_SUBSCRIBED, MD_BOUNCE_NONE},
    {"TemplateRenderingFailed", MD_EVENT_RENDERING_FAILURE, MD_BOUNCE_NONE},
};

int
md_webhook_parse_postmark(const char *body, size_t len, md_webhook_events_t *out, const char **why)
{
    memset(out, 0, sizeof(*out));
    json_t *root = load(body, len);
    const char *rt = jstr(root, "RecordType");
    if (!json_is_object(root) || rt == NULL) {
        json_decref(root);
        return malformed(out, why);
    }
    md_webhook_event_t *e = ev_push(out, MD_WEBHOOK_POSTMARK);
    const char *rcpt = jstr(root, "Recipient");
    const char *when = NULL;
    bool has_id = false; /* ID names a bounce record: unique at Postmark */
    e->provider_event = md_xstrdup(rt);

    if (strcmp(rt, "Delivery") == 0) {
        e->type = MD_EVENT_DELIVERED;
        e->diagnostic = dup0(jstr(root, "Details"));
        when = jstr(root, "DeliveredAt");
    } else if (strcmp(rt, "Bounce") == 0 || strcmp(rt, "SpamComplaint") == 0) {
        const char *ty = jstr(root, "Type");
        e->type = strcmp(rt, "SpamComplaint") == 0 ? MD_EVENT_COMPLAINED : MD_EVENT_BOUNCED;
        e->bounce = e->type == MD_EVENT_BOUNCED ? MD_BOUNCE_UNDETERMINED : MD_BOUNCE_NONE;
        for (size_t i = 0; ty && e->type == MD_EVENT_BOUNCED && i < md_nelems(pm_bounce_types);
             i++) {
            if (strcmp(ty, pm_bounce_types[i].name) == 0) {
                e->type = pm_bounce_types[i].type;
                e->bounce = pm_bounce_types[i].bounce;
            }
        }
        e->provider_type = dup0(ty);
        e->provider_subtype = jid(json_object_get(root, "TypeCode"));
        e->diagnostic = dup0(jstr(root, "Details"));
        rcpt = jstr(root, "Email");
        when = jstr(root, "BouncedAt");
        has_id = true;
    } else if (strcmp(rt, "Open") == 0) {
        e->type = MD_EVENT_OPENED;
        when = jstr(root, "ReceivedAt");
    } else if (strcmp(rt, "Click") == 0) {
        e->type = MD_EVENT_CLICKED;
        e->url = dup0(jstr(root, "OriginalLink"));
        when = jstr(root, "ReceivedAt");
    } else if (strcmp(rt, "SubscriptionChange") == 0) {
        const char *reason = jstr(root, "SuppressionReason");
        e->provider_type = dup0(reason);
        e->provider_subtype = dup0(jstr(root, "Origin"));
        if (!json_is_true(json_object_get(root, "SuppressSending"))) {
            e->type = MD_EVENT_SUBSCRIBED;
        } else if (reason && strcmp(reason, "HardBounce") == 0) {
            e->type = MD_EVENT_BOUNCED;
            e->bounce = MD_BOUNCE_HARD;
        } else if (reason && strcmp(reason, "SpamComplaint") == 0) {
            e->type = MD_EVENT_COMPLAINED;
        } else {
            e->type = MD_EVENT_UNSUBSCRIBED;
        }
        when = jstr(root, "ChangedAt");
    } else {
        e->type = MD_EVENT_OTHER;
    }
    char *id = has_id ? jid(json_object_get(root, "ID")) : NULL;
    if (id != NULL) {
        /* Bounce and SpamComplaint records share one ID space at Postmark; the
         * record type in front keeps a sample reusing an ID from colliding. */
        size_t l = strlen(rt) + 1 + strlen(id) + 1;
        e->event_id = md_xmalloc(l);
        snprintf(e->event_id, l, "%s:%s", rt, id);
        free(id);
    } else {
        e->event_id = hash_id(root);
    }
    e->message_id = dup0(jstr(json_object_get(root, "Metadata"), "mailerd_message_id"));
    e->provider_message_id = dup0(jstr(root, "MessageID"));
    e->recipient = dup0(rcpt);
    e->timestamp_ms = iso8601_ms(when);
    e->details = details_of(root);
    json_decref(root);
    return MD_OK;
}

/* ---- Mailgun ------------------------------------------------------------ */

int
md_webhook_parse_mailgun(const char *body, size_t len, md_webhook_events_t *out, const char **why)
{
    memset(out, 0, sizeof(*out));
    json_t *root = load(body, len);
    json_t *d = json_object_get(root, "event-data");
    const char *ev = jstr(d, "event");
    if (!json_is_object(d) || ev == NULL) {
        json_decref(root);
        return malformed(out, why);
    }
    md_webhook_event_t *e = ev_push(out, MD_WEBHOOK_MAILGUN);
    const json_t *ds = json_object_get(d, "delivery-status");
    const char *diag = jstr(ds, "message");
    if (diag == NULL || *diag == '\0')
        diag = jstr(ds, "description");
    e->provider_event = md_xstrdup(ev);

    if (strcmp(ev, "accepted") == 0) {
        e->type = MD_EVENT_SENT;
    } else if (strcmp(ev, "delivered") == 0) {
        e->type = MD_EVENT_DELIVERED;
    } else if (strcmp(ev, "failed") == 0) {
        const char *sev = jstr(d, "severity"), *reason = jstr(d, "reason");
        e->provider_type = dup0(sev);
        e->provider_subtype = dup0(reason);
        e->type = MD_EVENT_BOUNCED;
        if (sev && strcmp(sev, "permanent") == 0) {
            if (reason && strncmp(reason, "suppress-", 9) == 0)
                e->type = MD_EVENT_REJECTED;
            else
                e->bounce = reason && strcmp(reason, "old") == 0 ? MD_BOUNCE_SOFT : MD_BOUNCE_HARD;
        } else if (sev && strcmp(sev, "temporary") == 0) {
            if (reason && strcmp(reason, "greylisted") == 0)
                e->type = MD_EVENT_DEFERRED;
            else
                e->bounce = MD_BOUNCE_SOFT;
        } else {
            e->bounce = MD_BOUNCE_UNDETERMINED;
        }
    } else if (strcmp(ev, "rejected") == 0) {
        e->type = MD_EVENT_REJECTED;
        const json_t *rj = json_object_get(d, "reject");
        e->provider_type = dup0(jstr(rj, "reason"));
        if (diag == NULL)
            diag = jstr(rj, "reason");
    } else if (strcmp(ev, "complained") == 0) {
        e->type = MD_EVENT_COMPLAINED;
        e->provider_type = md_xstrdup("abuse");
    } else if (strcmp(ev, "unsubscribed") == 0) {
        e->type = MD_EVENT_UNSUBSCRIBED;
    } else if (strcmp(ev, "opened") == 0) {
        e->type = MD_EVENT_OPENED;
    } else if (strcmp(ev, "clicked") == 0) {
        e->type = MD_EVENT_CLICKED;
        e->url = dup0(jstr(d, "url"));
    } else {
        e->type = MD_EVENT_OTHER;
    }
    const char *id = jstr(d, "id");
    e->event_id = id && *id ? md_xstrdup(id) : hash_id(d);
    e->message_id = dup0(jstr(json_object_get(d, "user-variables"), "mailerd_message_id"));
    const char *mid = jstr(json_object_get(json_object_get(d, "message"), "headers"), "message-id");
    if (mid) {
        size_t n = strlen(mid);
        e->provider_message_id = n >= 2 && mid[0] == '<' && mid[n - 1] == '>'
                                     ? md_xstrndup(mid + 1, n - 2)
                                     : md_xstrdup(mid);
    }
    e->recipient = dup0(jstr(d, "recipient"));
    e->diagnostic = dup0(diag);
    e->timestamp_ms = epoch_ms(json_object_get(d, "timestamp"));
    e->details = details_of(d);
    json_decref(root);
    return MD_OK;
}

int
md_webhook_parse(md_webhook_provider_t p, const char *body, size_t len, md_webhook_events_t *out,
                 const char **why)
{
    switch (p) {
    case MD_WEBHOOK_SES:
        return md_webhook_parse_ses(body, len, out, why);
    case MD_WEBHOOK_SENDGRID:
        return md_webhook_parse_sendgrid(body, len, out, why);
    case MD_WEBHOOK_POSTMARK:
        return md_webhook_parse_postmark(body, len, out, why);
    case MD_WEBHOOK_MAILGUN:
        return md_webhook_parse_mailgun(body, len, out, why);
    }
    memset(out, 0, sizeof(*out));
    return malformed(out, why);
}

/* ---- verification ------------------------------------------------------- */

static int
refuse(const char **why, const char *code)
{
    if (why)
        *why = code;
    return MD_DECLINED;
}

/* Decimal seconds (1 to 12 digits, no sign) -> value, or -1. */
static int64_t
parse_ts(md_str_t s)
{
    if (s.len == 0 || s.len > 12 || s.data == NULL)
        return -1;
    int64_t v = 0;
    for (size_t i = 0; i < s.len; i++) {
        if (s.data[i] < '0' || s.data[i] > '9')
            return -1;
        v = v * 10 + (s.data[i] - '0');
    }
    return v;
}

/* RFC 4648 base64 (standard alphabet, padding optional) -> bytes in out (at
 * most cap). Returns the length, or -1 on any stray character or overflow. */
static ssize_t
b64_decode(md_str_t in, unsigned char *out, size_t cap)
{
    uint32_t acc = 0;
    int bits = 0;
    size_t n = 0, i = 0, pad = 0;
    for (; i < in.len; i++) {
        unsigned char c = (unsigned char)in.data[i];
        int v;
        if (c >= 'A' && c <= 'Z')
            v = c - 'A';
        else if (c >= 'a' && c <= 'z')
            v = c - 'a' + 26;
        else if (c >= '0' && c <= '9')
            v = c - '0' + 52;
        else if (c == '+')
            v = 62;
        else if (c == '/')
            v = 63;
        else if (c == '=')
            break;
        else
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (n >= cap)
                return -1;
            out[n++] = (unsigned char)(acc >> bits);
        }
    }
    for (; i < in.len; i++, pad++)
        if (in.data[i] != '=')
            return -1;
    if (pad > 2 || bits >= 6)
        return -1;
    return (ssize_t)n;
}

int
md_webhook_mailgun_verify(md_str_t key, md_str_t timestamp, md_str_t token, md_str_t signature,
                          time_t now, const char **why)
{
    unsigned char mac[EVP_MAX_MD_SIZE], want[SHA256_DIGEST_LENGTH];
    unsigned int maclen = 0;
    if (key.len == 0 || key.data == NULL) {
        if (why)
            *why = MD_WEBHOOK_WHY_BAD_KEY;
        return MD_ERROR;
    }
    int64_t ts = parse_ts(timestamp);
    if (ts < 0 || token.len == 0 || signature.len != 2 * SHA256_DIGEST_LENGTH)
        return refuse(why, MD_WEBHOOK_WHY_MALFORMED);
    for (size_t i = 0; i < SHA256_DIGEST_LENGTH; i++) {
        int hi = md_hexval(signature.data[2 * i]), lo = md_hexval(signature.data[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return refuse(why, MD_WEBHOOK_WHY_MALFORMED);
        want[i] = (unsigned char)(hi << 4 | lo);
    }
    /* The signature before the clock: a forged request learns nothing about
     * our window, and a stale but authentic one is told it is stale. */
    char msg[12 + MD_WEBHOOK_MAILGUN_TOKEN_MAX];
    if (token.len > MD_WEBHOOK_MAILGUN_TOKEN_MAX)
        return refuse(why, MD_WEBHOOK_WHY_MALFORMED);
    memcpy(msg, timestamp.data, timestamp.len);
    memcpy(msg + timestamp.len, token.data, token.len);
    int good = HMAC(EVP_sha256(), key.data, (int)key.len, (const unsigned char *)msg,
                    timestamp.len + token.len, mac, &maclen) != NULL &&
               maclen == SHA256_DIGEST_LENGTH;
    if (!good || CRYPTO_memcmp(mac, want, SHA256_DIGEST_LENGTH) != 0)
        return refuse(why, MD_WEBHOOK_WHY_BAD_SIGNATURE);
    int64_t skew = (int64_t)now - ts;
    if (skew > MD_WEBHOOK_MAILGUN_SKEW || skew < -MD_WEBHOOK_MAILGUN_SKEW)
        return refuse(why, MD_WEBHOOK_WHY_STALE);
    return MD_OK;
}

static md_str_t
jview(const json_t *o, const char *key)
{
    md_str_t s = md_null_string;
    const json_t *v = json_object_get(o, key);
    if (json_is_string(v)) {
        s.data = json_string_value(v);
        s.len = json_string_length(v);
    }
    return s;
}

int
md_webhook_mailgun_verify_body(md_str_t key, const char *body, size_t len, time_t now, char *token,
                               size_t token_size, const char **why)
{
    json_t *root = load(body, len);
    json_t *sig = json_object_get(root, "signature");
    int rc;
    if (!json_is_object(sig)) {
        json_decref(root);
        return refuse(why, MD_WEBHOOK_WHY_MALFORMED);
    }
    md_str_t tok = jview(sig, "token");
    if (tok.len + 1 > token_size || memchr(tok.data ? tok.data : "", '\0', tok.len)) {
        json_decref(root);
        return refuse(why, MD_WEBHOOK_WHY_MALFORMED);
    }
    rc = md_webhook_mailgun_verify(key, jview(sig, "timestamp"), tok, jview(sig, "signature"), now,
                                   why);
    if (rc == MD_OK) {
        memcpy(token, tok.data, tok.len);
        token[tok.len] = '\0';
    }
    json_decref(root);
    return rc;
}

md_webhook_sg_key_t *
md_webhook_sg_key_load(md_str_t spki_base64, const char **why)
{
    unsigned char der[512];
    ssize_t n = b64_decode(spki_base64, der, sizeof(der));
    const unsigned char *p = der;
    EVP_PKEY *pk = n > 0 ? d2i_PUBKEY(NULL, &p, (long)n) : NULL;
    char group[64] = "";
    size_t glen = 0;
    /* Only P-256: SendGrid signs with it, and accepting any curve or RSA key
     * would let a misconfiguration pass silently. */
    if (pk == NULL || p != der + n || EVP_PKEY_get_base_id(pk) != EVP_PKEY_EC ||
        !EVP_PKEY_get_group_name(pk, group, sizeof(group), &glen) ||
        strcmp(group, "prime256v1") != 0) {
        EVP_PKEY_free(pk);
        ERR_clear_error(); /* see md_webhook_sendgrid_verify */
        if (why)
            *why = MD_WEBHOOK_WHY_BAD_KEY;
        return NULL;
    }
    md_webhook_sg_key_t *k = md_xmalloc(sizeof(*k));
    k->pkey = pk;
    return k;
}

void
md_webhook_sg_key_free(md_webhook_sg_key_t *k)
{
    if (k == NULL)
        return;
    EVP_PKEY_free(k->pkey);
    free(k);
}

int
md_webhook_sendgrid_verify(const md_webhook_sg_key_t *key, md_str_t signature_b64,
                           md_str_t timestamp, md_str_t body, time_t now, time_t max_age,
                           const char **why)
{
    unsigned char sig[160]; /* a DER P-256 signature is at most 72 bytes */
    if (key == NULL || key->pkey == NULL) {
        if (why)
            *why = MD_WEBHOOK_WHY_BAD_KEY;
        return MD_ERROR;
    }
    int64_t ts = parse_ts(timestamp);
    ssize_t n = b64_decode(signature_b64, sig, sizeof(sig));
    if (ts < 0 || n <= 0 || (body.len > 0 && body.data == NULL))
        return refuse(why, MD_WEBHOOK_WHY_MALFORMED);

    EVP_MD_CTX *c = EVP_MD_CTX_new();
    int r = c ? EVP_DigestVerifyInit(c, NULL, EVP_sha256(), NULL, key->pkey) : 0;
    if (r == 1)
        r = EVP_DigestVerifyUpdate(c, timestamp.data, timestamp.len);
    if (r == 1 && body.len > 0)
        r = EVP_DigestVerifyUpdate(c, body.data, body.len);
    if (r == 1)
        r = EVP_DigestVerifyFinal(c, sig, (size_t)n);
    EVP_MD_CTX_free(c);
    /* A failed verify leaves an error on OpenSSL's thread queue; the outbound
     * TLS code reads that queue, so it must not see ours. */
    ERR_clear_error();
    if (r != 1)
        return refuse(why, MD_WEBHOOK_WHY_BAD_SIGNATURE);
    if (now != 0) {
        int64_t skew = (int64_t)now - ts;
        if (skew > (int64_t)max_age || skew < -(int64_t)max_age)
            return refuse(why, MD_WEBHOOK_WHY_STALE);
    }
    return MD_OK;
}

int
md_webhook_postmark_verify(md_str_t authorization, const char *user, const char *pass,
                           const char **why)
{
    unsigned char got[SHA256_DIGEST_LENGTH], want[SHA256_DIGEST_LENGTH];
    unsigned char dec[512];
    if (user == NULL || pass == NULL || *user == '\0' || *pass == '\0') {
        if (why)
            *why = MD_WEBHOOK_WHY_BAD_KEY;
        return MD_ERROR;
    }
    md_str_t a = authorization;
    while (a.len && (*a.data == ' ' || *a.data == '\t'))
        a.data++, a.len--;
    md_str_t scheme = {md_min(a.len, (size_t)6), a.data};
    if (a.len < 7 || !md_str_caseeq(scheme, "basic ") || a.data == NULL)
        return refuse(why, MD_WEBHOOK_WHY_BAD_AUTH);
    md_str_t b = {a.len - 6, a.data + 6};
    while (b.len && *b.data == ' ')
        b.data++, b.len--;
    while (b.len && (b.data[b.len - 1] == ' ' || b.data[b.len - 1] == '\t'))
        b.len--;
    ssize_t n = b64_decode(b, dec, sizeof(dec));
    if (n <= 0)
        return refuse(why, MD_WEBHOOK_WHY_BAD_AUTH);
    /* Compare digests, not the strings: equal-length buffers whatever the input,
     * so neither the length nor a prefix of the secret leaks through timing. */
    SHA256(dec, (size_t)n, got);
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    unsigned int wl = 0;
    int okd = c && EVP_DigestInit_ex(c, EVP_sha256(), NULL) &&
              EVP_DigestUpdate(c, user, strlen(user)) && EVP_DigestUpdate(c, ":", 1) &&
              EVP_DigestUpdate(c, pass, strlen(pass)) && EVP_DigestFinal_ex(c, want, &wl);
    EVP_MD_CTX_free(c);
    if (!okd || CRYPTO_memcmp(got, want, sizeof(want)) != 0)
        return refuse(why, MD_WEBHOOK_WHY_BAD_AUTH);
    return MD_OK;
}
