/*
 * Provider webhooks as pure functions: verifying that a request comes from the
 * provider, and turning its body into normalised events. No I/O, no clock (the
 * caller passes "now"), no global state; the HTTP routes, the token replay check
 * in Redis and the event store are the callers' business.
 *
 * Verification
 *   Mailgun   HMAC-SHA256(signing key, timestamp || token), lowercase hex,
 *             compared in constant time; the timestamp must be within
 *             MD_WEBHOOK_MAILGUN_SKEW seconds of now either way. The token is
 *             handed back so the caller can refuse a replay (SET NX in Redis).
 *   SendGrid  ECDSA P-256 / SHA-256 over timestamp || raw body, signature in
 *             base64 DER (X-Twilio-Email-Event-Webhook-Signature), timestamp
 *             from X-Twilio-Email-Event-Webhook-Timestamp, public key as the
 *             base64 DER SubjectPublicKeyInfo SendGrid shows in its settings.
 *   Postmark  HTTP basic auth against a configured user and password; both
 *             sides are hashed first, so the comparison takes the same time
 *             whatever the lengths and contents.
 * Every verifier returns MD_OK (authentic), MD_DECLINED (refused: *why is a
 * static stable code, see MD_WEBHOOK_WHY_*) or MD_ERROR (our configuration is
 * unusable, e.g. a key that does not decode; *why says so).
 *
 * Events
 * One request body becomes one or more md_webhook_event_t:
 *   SES       one event JSON (event publishing "eventType" or identity
 *             notification "notificationType", i.e. SNS Message, already
 *             unwrapped) -> one event per affected recipient where SES names
 *             them (Bounce bouncedRecipients, Complaint complainedRecipients,
 *             Delivery recipients, DeliveryDelay delayedRecipients), else one
 *             event for the message (Send, Reject, Open, Click, Rendering
 *             Failure, Subscription; recipient = mail.destination[0]).
 *   SendGrid  a JSON array -> one event per element.
 *   Postmark  one object (RecordType) -> one event.
 *   Mailgun   {"signature": ..., "event-data": {...}} -> one event.
 *
 * Bounce classes (MD_BOUNCE_HARD suppresses for good, MD_BOUNCE_SOFT counts
 * toward the soft-bounce rule, MD_BOUNCE_UNDETERMINED is stored only):
 *   SES       bounceType Permanent -> hard, Transient -> soft, Undetermined ->
 *             undetermined. provider_type/subtype = bounceType/bounceSubType.
 *   SendGrid  "bounce" with type "bounce" (or no type: older payloads) -> hard;
 *             type "blocked" -> soft (the receiver refused for now: reputation,
 *             content). "dropped" is not a bounce: SendGrid never tried (its own
 *             suppression lists, invalid address) -> rejected, provider_type =
 *             reason. "deferred" -> deferred.
 *   Postmark  RecordType Bounce by Type: HardBounce, BadEmailAddress,
 *             ManuallyDeactivated -> hard; Transient, SoftBounce, DnsError,
 *             Blocked -> soft; SpamNotification, SpamComplaint -> complained;
 *             Unsubscribe -> unsubscribed; Subscribe -> subscribed;
 *             TemplateRenderingFailed -> rendering_failure; anything else
 *             (AutoResponder, AddressChange, ChallengeVerification, DMARCPolicy,
 *             Unknown, ...) -> undetermined. SubscriptionChange: SuppressSending
 *             false -> subscribed; true with SuppressionReason HardBounce ->
 *             bounced hard, SpamComplaint -> complained, else -> unsubscribed.
 *   Mailgun   "failed" severity permanent -> hard, except reason "old" (gave up
 *             after retrying temporary failures: the address was never refused)
 *             -> soft and reasons "suppress-*" (Mailgun did not try) ->
 *             rejected; severity temporary -> soft, except reason "greylisted"
 *             -> deferred (greylisting says nothing about the address).
 *             provider_type/subtype = severity/reason.
 *
 * Identifiers
 *   event_id             the provider's event id where it has one (SES
 *                        "Bounce:" / "Complaint:" + feedbackId, SendGrid
 *                        sg_event_id, Postmark "Bounce:" / "SpamComplaint:" +
 *                        ID, Mailgun event-data.id), else "sha256:" + hex SHA-256
 *                        of the event's JSON re-encoded compact with sorted
 *                        keys (whitespace and key order do not change it). When
 *                        one SES body yields several events, ":" + recipient is
 *                        appended to keep them apart.
 *   message_id           our mailerd_message_id: SES mail.tags (then a
 *                        X-Mailerd-Message-Id header in mail.headers), SendGrid
 *                        custom arg (a top-level field), Postmark Metadata,
 *                        Mailgun user-variables. NULL when absent.
 *   provider_message_id  what the driver recorded as esp_message_id: SES
 *                        mail.messageId, SendGrid the X-Message-Id part of
 *                        sg_message_id (before the first "."), Postmark
 *                        MessageID, Mailgun message.headers.message-id without
 *                        angle brackets.
 */
#ifndef MD_WEBHOOK_H
#define MD_WEBHOOK_H

#include "md_core.h"

#include <time.h>

#define MD_WEBHOOK_MAILGUN_SKEW      300 /* seconds either way */
#define MD_WEBHOOK_MAILGUN_TOKEN_MAX 256 /* Mailgun sends 50 characters */

/* Stable refusal codes (static strings, compare with strcmp or by pointer). */
#define MD_WEBHOOK_WHY_MALFORMED     "malformed"
#define MD_WEBHOOK_WHY_BAD_SIGNATURE "bad_signature"
#define MD_WEBHOOK_WHY_STALE         "stale_timestamp"
#define MD_WEBHOOK_WHY_BAD_AUTH      "bad_credentials"
#define MD_WEBHOOK_WHY_BAD_KEY       "bad_key" /* MD_ERROR: our key */

typedef enum md_webhook_provider_e {
    MD_WEBHOOK_SES = 0,
    MD_WEBHOOK_SENDGRID,
    MD_WEBHOOK_POSTMARK,
    MD_WEBHOOK_MAILGUN,
} md_webhook_provider_t;

typedef enum md_event_type_e {
    MD_EVENT_OTHER = 0, /* an event we keep but do not act on */
    MD_EVENT_SENT,      /* accepted by the provider (SES Send, SendGrid processed) */
    MD_EVENT_DELIVERED,
    MD_EVENT_DEFERRED, /* delivery delayed, will retry (SES DeliveryDelay) */
    MD_EVENT_BOUNCED,
    MD_EVENT_COMPLAINED,
    MD_EVENT_REJECTED, /* the provider refused to try (SES Reject, SendGrid dropped) */
    MD_EVENT_RENDERING_FAILURE,
    MD_EVENT_OPENED,
    MD_EVENT_CLICKED,
    MD_EVENT_UNSUBSCRIBED,
    MD_EVENT_SUBSCRIBED,   /* resubscribed */
    MD_EVENT_SUBSCRIPTION, /* preferences changed, not a full unsubscribe */
} md_event_type_t;

typedef enum md_bounce_class_e {
    MD_BOUNCE_NONE = 0, /* not a bounce */
    MD_BOUNCE_HARD,
    MD_BOUNCE_SOFT,
    MD_BOUNCE_UNDETERMINED,
} md_bounce_class_t;

/* One normalised event. Every string is NUL-terminated, owned by the event and
 * freed by md_webhook_events_free(); any may be NULL when the provider gave no
 * such thing (event_id and details never are). */
typedef struct md_webhook_event_s {
    md_event_type_t type;
    md_bounce_class_t bounce; /* MD_BOUNCE_NONE unless type is BOUNCED */
    md_webhook_provider_t provider;
    char *provider_event;      /* the provider's own name: "Bounce", "failed", "dropped" */
    char *provider_type;       /* bounce type, complaint feedback type, reject reason */
    char *provider_subtype;    /* bounce subtype / reason / status code */
    char *event_id;            /* see the top of this file */
    char *message_id;          /* our mailerd_message_id */
    char *provider_message_id; /* the ESP's id for the message */
    char *recipient;           /* the address as the provider wrote it */
    char *url;                 /* clicked */
    char *diagnostic;          /* SMTP response or error text, where given */
    int64_t timestamp_ms;      /* Unix time in milliseconds, 0 when unknown */
    char *details;             /* the provider's event object, compact JSON */
} md_webhook_event_t;

typedef struct md_webhook_events_s {
    md_webhook_event_t *ev;
    size_t n;
} md_webhook_events_t;

/* Parsers. body/len is the request body (SES: the event JSON itself, i.e. the
 * SNS Message). On MD_OK, out holds at least one event; the caller frees it with
 * md_webhook_events_free(). On MD_DECLINED (not JSON, or not the shape the
 * provider sends) out is empty and *why is MD_WEBHOOK_WHY_MALFORMED. out need not
 * be initialised. */
int md_webhook_parse_ses(const char *body, size_t len, md_webhook_events_t *out, const char **why);
int md_webhook_parse_sendgrid(const char *body, size_t len, md_webhook_events_t *out,
                              const char **why);
int md_webhook_parse_postmark(const char *body, size_t len, md_webhook_events_t *out,
                              const char **why);
int md_webhook_parse_mailgun(const char *body, size_t len, md_webhook_events_t *out,
                             const char **why);
int md_webhook_parse(md_webhook_provider_t p, const char *body, size_t len,
                     md_webhook_events_t *out, const char **why);

/* Frees every event's strings and the array; leaves out empty. NULL-safe. */
void md_webhook_events_free(md_webhook_events_t *out);

/* Stable lower-case names, for the events table and the API. */
const char *md_event_type_name(md_event_type_t t);
const char *md_bounce_class_name(md_bounce_class_t b); /* NULL for NONE */
const char *md_webhook_provider_name(md_webhook_provider_t p);

/* Mailgun: verifies one signature triple. key is the webhook signing key;
 * timestamp must be decimal seconds within MD_WEBHOOK_MAILGUN_SKEW of now;
 * signature is hex (either case). */
int md_webhook_mailgun_verify(md_str_t key, md_str_t timestamp, md_str_t token, md_str_t signature,
                              time_t now, const char **why);

/* Mailgun: the same on a JSON webhook body, whose "signature" object holds the
 * triple. On MD_OK the token is copied, NUL-terminated, into token/token_size
 * for the caller's replay check (a token that does not fit is MALFORMED; Mailgun
 * sends 50 characters, 128 is plenty). */
int md_webhook_mailgun_verify_body(md_str_t key, const char *body, size_t len, time_t now,
                                   char *token, size_t token_size, const char **why);

/* SendGrid: a public key decoded once (at configuration time) and reused. */
typedef struct md_webhook_sg_key_s md_webhook_sg_key_t;

/* Decodes a base64 DER SubjectPublicKeyInfo; only P-256 EC keys are accepted.
 * Returns NULL (and *why = MD_WEBHOOK_WHY_BAD_KEY) otherwise. The caller frees
 * with md_webhook_sg_key_free(). */
md_webhook_sg_key_t *md_webhook_sg_key_load(md_str_t spki_base64, const char **why);
void md_webhook_sg_key_free(md_webhook_sg_key_t *k);

/* Verifies the signature header over timestamp || body. timestamp must be
 * decimal digits. With now != 0 it must also be within max_age seconds of now
 * either way (SendGrid's signature does not stop a replay otherwise; its docs
 * leave the window to the receiver); now == 0 skips that check (fixtures). */
int md_webhook_sendgrid_verify(const md_webhook_sg_key_t *key, md_str_t signature_b64,
                               md_str_t timestamp, md_str_t body, time_t now, time_t max_age,
                               const char **why);

/* Postmark: checks an Authorization header value ("Basic base64(user:pass)",
 * scheme case-insensitive) against the configured user and password. */
int md_webhook_postmark_verify(md_str_t authorization, const char *user, const char *pass,
                               const char **why);

#endif
