/*
 * Email address parsing and validation for the send API (issue 4) and helpers for
 * suppression matching (issue 7) and header output.
 *
 * What is accepted (practical and strict: what an ESP will take):
 *   - an addr-spec "local@domain", or a name-addr "Display Name <local@domain>" or
 *     "<local@domain>". Spaces may separate the display name from '<'; nowhere else
 *     outside a display name or a quoted string (no leading or trailing whitespace).
 *   - local part: RFC 5321 dot-atom (no leading, trailing or consecutive dots) or a
 *     non-empty quoted string of printable ASCII with quoted-pairs; at most 64
 *     octets as written (quotes included). ASCII only: a UTF-8 local part needs
 *     SMTPUTF8 end to end, which ESPs support unevenly, so it is refused with its own
 *     code (non_ascii_local_part) rather than failing later at the provider.
 *   - domain: a hostname with at least one dot; labels 1..63 octets, letters, digits
 *     and hyphens, no leading or trailing hyphen; the top-level label not all digits;
 *     UTF-8 labels (IDN) are converted to A-labels by UTS-46 processing
 *     (libidn2, nontransitional, STD3 rules: IDNA2008 validity, NFC, case folding);
 *     at most 253 octets in both the given and the A-label form. Or an address
 *     literal: [IPv4] or [IPv6:...] (RFC 5321 4.1.3 grammar; other tags refused).
 *   - the whole addr-spec at most 254 octets (RFC 5321 path limit 256 minus "<>"),
 *     in both the given and the A-label form.
 *   - display name: words (atoms, '.' allowed as in every real-world "Acme Inc.",
 *     UTF-8 allowed per RFC 6532) and quoted strings separated by spaces.
 *   - nowhere: comments, folding whitespace, obsolete forms, C0 or C1 control
 *     characters, DEL, U+2028/U+2029, CR or LF (header injection), invalid UTF-8.
 * Look-alike separators (U+3002, U+FF0E, U+FF61) and spaces in a domain are
 * refused with messages of their own before libidn2 sees the label (UTS-46 would
 * map the dots to '.').
 */
#ifndef MD_ADDRESS_H
#define MD_ADDRESS_H

#include "md_core.h"
#include "md_pool.h"

#define MD_ADDRESS_LOCAL_MAX  64
#define MD_ADDRESS_DOMAIN_MAX 253
#define MD_ADDRESS_LABEL_MAX  63
#define MD_ADDRESS_MAX        254 /* addr-spec; a buffer of MD_ADDRESS_MAX + 1 holds any */

/* Stable failure codes; md_address_code_name() gives the snake_case name used in
 * API errors. Append only: the numbers are not stored anywhere, the names are. */
typedef enum md_address_code_e {
    MD_ADDRESS_OK = 0,
    MD_ADDRESS_EMPTY,                   /* "empty" */
    MD_ADDRESS_CONTROL_CHARACTER,       /* "control_character" (CR/LF included) */
    MD_ADDRESS_INVALID_UTF8,            /* "invalid_utf8" */
    MD_ADDRESS_INVALID_DISPLAY_NAME,    /* "invalid_display_name" */
    MD_ADDRESS_INVALID_ANGLE_ADDR,      /* "invalid_angle_addr": "<...>" malformed */
    MD_ADDRESS_MISSING_AT,              /* "missing_at" */
    MD_ADDRESS_INVALID_LOCAL_PART,      /* "invalid_local_part" */
    MD_ADDRESS_NON_ASCII_LOCAL_PART,    /* "non_ascii_local_part" */
    MD_ADDRESS_LOCAL_PART_TOO_LONG,     /* "local_part_too_long" */
    MD_ADDRESS_INVALID_DOMAIN,          /* "invalid_domain" */
    MD_ADDRESS_DOMAIN_NEEDS_DOT,        /* "domain_needs_dot" */
    MD_ADDRESS_DOMAIN_LABEL_TOO_LONG,   /* "domain_label_too_long" */
    MD_ADDRESS_DOMAIN_TOO_LONG,         /* "domain_too_long" */
    MD_ADDRESS_INVALID_ADDRESS_LITERAL, /* "invalid_address_literal" */
    MD_ADDRESS_ADDRESS_TOO_LONG,        /* "address_too_long" */
    MD_ADDRESS_NCODES
} md_address_code_t;

typedef struct md_address_error_s {
    md_address_code_t code;
    const char *name;    /* md_address_code_name(code); static */
    const char *message; /* static English sentence fragment, more specific than name */
    size_t offset;       /* byte offset in the input where the problem was found */
} md_address_error_t;

/* A parsed address. Every string is NUL-terminated, allocated from the pool given to
 * md_address_parse(), and lives as long as that pool; nothing points into the input.
 * Absent parts (no display name) are "" with len 0, never NULL. */
typedef struct md_address_s {
    md_str_t display;      /* display name, unquoted and unescaped, UTF-8 */
    md_str_t local;        /* local part as given: quotes and backslashes kept */
    md_str_t domain;       /* domain as given: UTF-8 for IDN, "[...]" for a literal */
    md_str_t domain_ascii; /* A-label form, lower-cased; a literal canonicalised */
    md_str_t addr;         /* local "@" domain */
    md_str_t addr_ascii;   /* local "@" domain_ascii: for SMTP, ESP APIs and MIME */
    unsigned angle : 1;    /* input was in "<...>" form */
    unsigned quoted_local : 1;
    unsigned literal : 1; /* domain is an address literal */
    unsigned idn : 1;     /* domain had a non-ASCII label */
} md_address_t;

/* Parses and validates one address (s, len: not necessarily NUL-terminated; may
 * contain NUL bytes, which are refused). On MD_OK fills *out from pool. With pool
 * NULL only validates, and out may be NULL. On MD_ERROR fills *err (if err is not
 * NULL) and leaves *out unspecified; nothing needs freeing. Never reads s[len]. */
int md_address_parse(md_pool_t *pool, const char *s, size_t len, md_address_t *out,
                     md_address_error_t *err);

/* Validates a hostname (the domain part of an addr-spec, no literal) and writes its
 * lower-cased A-label form, NUL-terminated, to out (size >= MD_ADDRESS_DOMAIN_MAX + 1
 * always suffices); *outlen gets its length. MD_OK or MD_ERROR with *err filled
 * (offsets relative to d). For later users (sending domains, DKIM). */
int md_address_domain_to_ascii(const char *d, size_t len, char *out, size_t size, size_t *outlen,
                               md_address_error_t *err);

/* The key for suppression matching (issue 7): the local part as given but in
 * canonical quoting (unquoted when the quoted content is a valid dot-atom,
 * otherwise quoted with only '"' and '\' escaped: the same mailbox per RFC 5321),
 * "@", the lower-cased A-label domain. Case in the local part is kept. Writes at
 * most size bytes including a NUL (when size > 0) and returns the full length, like
 * snprintf; a buffer of MD_ADDRESS_MAX + 1 always suffices for a parsed address. */
size_t md_address_normalize(const md_address_t *a, char *buf, size_t size);

/* True when a display name cannot go into a header as plain text: it has non-ASCII
 * characters or "=?" (a reader would take it for an RFC 2047 encoded-word). The
 * MIME layer then writes it as encoded-words; md_address_format() does not. */
bool md_address_display_needs_encoding(md_str_t display);

/* Writes the RFC 5322 mailbox form of display and addr to buf: the bare addr when
 * display is empty, otherwise the display name (as atoms when they are plain
 * atext words separated by single spaces, otherwise a quoted string with '"' and
 * '\' escaped) + " <" + addr + ">". Non-ASCII stays UTF-8 (RFC 6532 form); callers
 * writing a non-SMTPUTF8 message check *needs_encoding (may be NULL) and encode the
 * name themselves. addr should be addr_ascii of a parsed address. Writes at most
 * size bytes including a NUL (when size > 0) and returns the full length, like
 * snprintf; -1 (and buf "" when size > 0) when display holds a control character,
 * CR/LF or invalid UTF-8, or addr is not a valid bare addr-spec. */
ssize_t md_address_format(char *buf, size_t size, md_str_t display, md_str_t addr,
                          bool *needs_encoding);

/* "empty", "missing_at", ...; "ok" for MD_ADDRESS_OK; "unknown" out of range. */
const char *md_address_code_name(md_address_code_t code);

#endif
