/*
 * md_tracking: the instance's tracking { } block and what accept does with it.
 *
 *   tracking {
 *       public_url https://mail.example.com;   # base of /t/c, /t/o and /u links
 *       secret_file /etc/mailerd/track.key;    # or: secret VALUE; >= 16 bytes
 *       secret_id 1;                           # 0-255, carried in every token [1]
 *       previous_secret_file /etc/mailerd/track.old;  # optional, for rotation
 *       previous_secret_id 0;                  # must differ from secret_id [0]
 *       unsubscribe_mailto_domain unsub.example.com;  # optional mailto in List-Unsubscribe
 *   }
 *
 * Rotation: tokens are made with secret and verified against secret and
 * previous_secret, so a reload that moves the old secret to previous_secret
 * keeps every link of mail already sent working (md_track.h).
 *
 * Without the block no message is tracked, no List-Unsubscribe is added, and
 * the /t/ and /u/ routes answer 404 tracking_not_configured; a send that asks
 * for tracking explicitly is refused with 422 tracking_not_configured.
 *
 * Per message (set at accept, md_tracking_apply): opens and clicks come from
 * the send's "tracking": {"opens": bool, "clicks": bool}, each member missing
 * taking the tenant's default (tenants.track_opens / track_clicks). Bulk mail
 * (priority "bulk") always carries List-Unsubscribe + List-Unsubscribe-Post
 * (RFC 8058) unless the caller gave its own List-Unsubscribe header.
 * What was done is stored in messages.tracking (migration 0005):
 *   {"opens": bool, "clicks": bool, "unsubscribe": bool, "links": [url, ...]}
 */
#ifndef MD_TRACKING_H
#define MD_TRACKING_H

#include "md_core.h"
#include "md_pool.h"
#include "md_track.h"

struct md_conf_parser_s;
struct md_conf_cmd_s;

/* tracking { } (md_conf_t.tracking; NULL when absent). Strings are malloc'd. */
typedef struct md_tracking_conf_s {
    char *public_url; /* no trailing slash (stripped at parse) */
    char *secret;
    int secret_id;
    char *previous_secret; /* or NULL */
    int previous_secret_id;
    char *mailto_domain; /* or NULL */
} md_tracking_conf_t;

int md_tracking_conf_set(struct md_conf_parser_s *cf, const struct md_conf_cmd_s *cmd, void *base);
void md_tracking_conf_free(const struct md_conf_cmd_s *cmd, void *base);

/* A worker's view of the block, valid while its configuration lives. */
typedef struct md_tracking_s {
    md_str_t base;          /* public_url */
    md_track_keys_t keys;   /* current + previous (previous.secret NULL when none) */
    md_str_t mailto_domain; /* len 0 when none */
} md_tracking_t;

/* NULL when the running configuration has no tracking { } block. */
const md_tracking_t *md_tracking(void);

struct md_app_s;
int md_tracking_app_init(struct md_app_s *app);
void md_tracking_app_destroy(struct md_app_s *app);

/* Tenant defaults / per-message switches. */
#define MD_TRACKING_OPENS  0x1u
#define MD_TRACKING_CLICKS 0x2u

/* What md_tracking_apply makes; every pointer is pool memory, or the input. */
typedef struct md_tracking_out_s {
    const char *html;          /* rewritten html, or the input (NULL stays NULL) */
    const char *headers_json;  /* with List-Unsubscribe added, or the input */
    const char *tracking_json; /* the messages.tracking value, or NULL (nothing done) */
} md_tracking_out_t;

/*
 * One message at accept: msgid is its UUID text; flags MD_TRACKING_*; bulk adds
 * the List-Unsubscribe headers (unless headers_json, a JSON object of header
 * name -> value, already names List-Unsubscribe in any letter case). With no
 * tracking { } block it only copies the inputs through. MD_OK, or MD_ERROR on
 * a malformed msgid/headers_json (a bug of the caller).
 */
int md_tracking_apply(md_pool_t *pool, const char *msgid, unsigned flags, bool bulk,
                      const char *html, const char *headers_json, md_tracking_out_t *out);

#endif
