/*
 * MIME message builder: turns a validated message (addresses, subject, text and/or
 * html bodies, extra headers) into RFC 5322 / RFC 2045-2047 octets with CRLF line
 * endings, no line over 998 octets and header lines folded at 78 where possible.
 * Used by the sink ESP (.eml files) and by the drivers that send raw MIME (SES raw,
 * Mailgun MIME). Pure computation: no I/O, no allocation kept past the call.
 */
#ifndef MD_MIME_H
#define MD_MIME_H

#include "md_core.h"
#include "md_buf.h"

#include <time.h>

/* One mailbox. addr is an addr-spec; a UTF-8 (IDN) domain is written in its A-label
 * form (md_address_domain_to_ascii()), a non-ASCII local part is refused (it would
 * need SMTPUTF8). Callers holding an md_address_t pass addr_ascii. name is an
 * optional UTF-8 display name (NULL or "" for none). */
typedef struct md_mime_addr_s {
    const char *name;
    const char *addr;
} md_mime_addr_t;

/* An extra header. name: RFC 5322 field-name characters only; structural names
 * (From, To, Cc, Bcc, Reply-To, Sender, Subject, Date, Message-ID, MIME-Version,
 * Content-*, Return-Path, X-Mailerd-Message-Id) are refused. value: UTF-8 without
 * CR, LF or other control characters except TAB; ASCII values are written as given
 * (folded at spaces), non-ASCII ones as RFC 2047 encoded-words. */
typedef struct md_mime_header_s {
    const char *name;
    const char *value;
} md_mime_header_t;

/* Fills buf with n random bytes; MD_OK or MD_ERROR. Only the multipart boundary
 * uses it, so tests pass a fixed generator to get byte-exact output. */
typedef int (*md_mime_random_pt)(void *ctx, void *buf, size_t n);

typedef struct md_mime_message_s {
    md_mime_addr_t from; /* required */
    const md_mime_addr_t *to;
    size_t nto;
    const md_mime_addr_t *cc;
    size_t ncc;
    const md_mime_addr_t *reply_to;
    size_t nreply_to;
    /* Bcc recipients are envelope-only: the builder has no field for them. */
    const char *subject; /* UTF-8; NULL omits the header */
    /* Bodies, UTF-8 (validated). data == NULL means the part is absent; at least one
     * part is required. Bare LF and bare CR become CRLF. */
    md_str_t text;
    md_str_t html;
    const md_mime_header_t *headers;
    size_t nheaders;
    const char *message_id;   /* required, "<left@right>" (dot-atom text on both sides) */
    time_t date;              /* written in UTC, "+0000" */
    const char *mailerd_id;   /* X-Mailerd-Message-Id value, visible ASCII; NULL omits it */
    md_mime_random_pt random; /* NULL: md_random_bytes() */
    void *random_ctx;
} md_mime_message_t;

/* Appends the whole message to out. On MD_ERROR, out is left as it was on entry and
 * err holds a NUL-terminated reason (naming the field) truncated to errlen. The
 * caller owns out and frees it with md_buf_free(). */
int md_mime_build(const md_mime_message_t *m, md_buf_t *out, char *err, size_t errlen);

/* Appends the RFC 4648 base64 encoding of data to out, with a CRLF after every
 * line_len output characters and after the last line when line_len > 0 (MIME uses
 * 76); line_len 0 writes one unbroken line with no CRLF (SES raw, HTTP auth). */
void md_mime_base64_encode(md_buf_t *out, const void *data, size_t n, size_t line_len);

/* Appends the RFC 2045 quoted-printable encoding of data to out. CRLF pairs in data
 * are hard line breaks; bare CR or LF bytes are encoded (=0D, =0A). Encoded lines
 * are at most 76 characters; trailing space and tab before a line end are encoded. */
void md_mime_qp_encode(md_buf_t *out, const void *data, size_t n);

/* Length of the base64 encoding of n bytes with CRLF every line_len characters, as
 * md_mime_base64_encode() writes it. */
size_t md_mime_base64_len(size_t n, size_t line_len);

#endif
