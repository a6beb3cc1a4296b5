/*
 * The provider webhook parsers and the SNS envelope parser on any body: the
 * first byte picks the reader (SES, SendGrid, Postmark, Mailgun, SNS), the
 * rest is the body. What the parsers promise is checked too: a refusal
 * leaves no events and says why; an accepted body gives at least one event,
 * each with a type name, an event id, its details as JSON, and the provider
 * it was parsed for.
 */
#include "md_buf.h"
#include "md_sns.h"
#include "md_webhook.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char md_fuzz_target[] = "webhook";

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    int which = data[0] % 5;
    const char *body = (const char *)data + 1;
    size_t len = size - 1;
    const char *why = NULL;
    if (which < 4) {
        md_webhook_events_t ev;
        memset(&ev, 0, sizeof(ev));
        int rc = md_webhook_parse((md_webhook_provider_t)which, body, len, &ev, &why);
        if (rc != MD_OK && why == NULL) {
            fprintf(stderr, "a refused body without a reason\n");
            abort();
        }
        if (rc != MD_OK && ev.n != 0) {
            fprintf(stderr, "a refused body left %zu events\n", ev.n);
            abort();
        }
        if (rc == MD_OK && ev.n == 0) {
            fprintf(stderr, "an accepted body without events\n");
            abort();
        }
        for (size_t i = 0; rc == MD_OK && i < ev.n; i++) {
            const md_webhook_event_t *e = &ev.ev[i];
            json_error_t je;
            json_t *details = e->details ? json_loads(e->details, 0, &je) : NULL;
            if (md_event_type_name(e->type) == NULL || e->event_id == NULL || details == NULL ||
                e->provider != (md_webhook_provider_t)which) {
                fprintf(stderr,
                        "event %zu: a type without a name, no event id, details that "
                        "are not JSON, or another provider\n",
                        i);
                abort();
            }
            json_decref(details);
        }
        md_webhook_events_free(&ev);
    } else {
        md_sns_msg_t m;
        memset(&m, 0, sizeof(m));
        if (md_sns_parse(&m, body, len, &why) == MD_OK) {
            md_buf_t b;
            md_buf_init(&b);
            md_sns_string_to_sign(&m, &b);
            md_buf_free(&b);
        } else if (why == NULL) {
            fprintf(stderr, "a refused SNS message without a reason\n");
            abort();
        }
        md_sns_msg_free(&m);
    }
    return 0;
}
