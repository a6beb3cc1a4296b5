/*
 * md_track: open/click tracking and one-click unsubscribe, as pure functions (no I/O,
 * no global state): signed tokens, HTML link rewriting with an open pixel, the
 * List-Unsubscribe headers, and the parser for an RFC 8058 one-click POST body.
 * The routes (/t/c, /t/o, /u) and per-tenant settings are built on top of this.
 *
 * Token (binary, then base64url without padding in URLs):
 *
 *   version(1) = 1 | key id(1) | kind(1) | message id(16) | [link index(2, big-endian)] | mac(16)
 *
 *   The link index is present only in click tokens. mac = HMAC-SHA256(secret, every
 *   byte before it), truncated to 16 bytes: a forger must guess 128 bits online
 *   against our verifier (each guess costs a request), far beyond reach, while the
 *   token stays short enough for a URL (click 50 chars, open/unsubscribe 47) and for
 *   an e-mail local part. Truncated HMAC is allowed by NIST SP 800-107 for tags of 64
 *   bits and more. The kind and version are under the MAC, so a click token cannot
 *   be replayed as an unsubscribe token. The version byte leaves room for a later
 *   format (for example one with an expiry); only version 1 is accepted now.
 *
 *   Rotation: every secret has a one-byte id carried in the token; tokens are made
 *   with the current key and verified against the current and the previous one, so
 *   mail sent before a rotation keeps working until the previous secret is dropped.
 *
 *   Encodings are canonical: padding and non-zero trailing bits are refused, so any
 *   change to a token string makes it invalid (except letter case in the base32 form
 *   used for mailto addresses, which is case-insensitive on purpose: mail systems
 *   may change the case of a local part).
 *
 *   Parsing and verification take the same time whatever the token holds for a given
 *   length (no early exit; the MAC is always computed and compared with
 *   CRYPTO_memcmp), so timing tells an attacker nothing about how close a guess was.
 */
#ifndef MD_TRACK_H
#define MD_TRACK_H

#include "md_core.h"
#include "md_buf.h"

#define MD_TRACK_VERSION    1
#define MD_TRACK_MSGID_LEN  16
#define MD_TRACK_MAC_LEN    16
#define MD_TRACK_SECRET_MIN 16 /* bytes; 32 random bytes are recommended */
/* Binary sizes: with and without a link index. */
#define MD_TRACK_BIN_LINK  (3 + MD_TRACK_MSGID_LEN + 2 + MD_TRACK_MAC_LEN) /* 37 */
#define MD_TRACK_BIN_PLAIN (3 + MD_TRACK_MSGID_LEN + MD_TRACK_MAC_LEN)     /* 35 */
/* Room for any encoded token plus its NUL (base32 of 37 bytes is 60 chars). */
#define MD_TRACK_TOKEN_SIZE 64
/* Links past this many in one message are left as they are (the index is 16 bits;
 * the cap keeps the stored link list of a hostile message small). */
#define MD_TRACK_MAX_LINKS 1000

typedef enum md_track_kind_e {
    MD_TRACK_CLICK = 1,
    MD_TRACK_OPEN = 2,
    MD_TRACK_UNSUBSCRIBE = 3
} md_track_kind_t;

/* One secret. The bytes are borrowed, never copied or freed here. */
typedef struct md_track_key_s {
    uint8_t id;
    const uint8_t *secret;
    size_t len; /* >= MD_TRACK_SECRET_MIN */
} md_track_key_t;

/* The keys a token is verified against; previous.secret NULL when there is none. */
typedef struct md_track_keys_s {
    md_track_key_t current;
    md_track_key_t previous;
} md_track_keys_t;

typedef struct md_track_token_s {
    md_track_kind_t kind;
    uint8_t msgid[MD_TRACK_MSGID_LEN];
    uint16_t link;  /* click tokens only; 0 otherwise */
    uint8_t key_id; /* filled by parse: which key verified it */
} md_track_token_t;

/*
 * Makes the base64url token (no padding) for t under key into out, NUL-terminated.
 * Returns its length, or 0 if the key is too short or the kind unknown.
 */
size_t md_track_token_make(const md_track_key_t *key, const md_track_token_t *t,
                           char out[MD_TRACK_TOKEN_SIZE]);

/* The same token as lowercase base32 (RFC 4648 alphabet, no padding), for the local
 * part of an address ("unsub+TOKEN@domain": 6 + 56 chars fits the 64-char limit). */
size_t md_track_token_make_b32(const md_track_key_t *key, const md_track_token_t *t,
                               char out[MD_TRACK_TOKEN_SIZE]);

/*
 * Parses and verifies a base64url token of len bytes (s need not be NUL-terminated).
 * MD_OK with *out filled, or MD_DECLINED for anything invalid (bad length, alphabet,
 * trailing bits, version, kind, unknown key id, MAC); *out is zeroed then.
 */
int md_track_token_parse(const md_track_keys_t *keys, const char *s, size_t len,
                         md_track_token_t *out);

/* The same for the base32 form (either letter case). */
int md_track_token_parse_b32(const md_track_keys_t *keys, const char *s, size_t len,
                             md_track_token_t *out);

/* The original URLs of a message's rewritten links: url[i] is link index i, as a
 * NUL-terminated malloc'ed string of len[i] bytes. It never holds a control
 * character (links that would are left untracked), so it can go into a Location
 * header as is once non-ASCII bytes are percent-encoded. */
typedef struct md_track_links_s {
    size_t n;
    char **url;
    size_t *len;
} md_track_links_t;

/* What to rewrite. base is the public base URL of the instance ("https://t.example"
 * with no trailing slash needed); it must be http(s) and hold only characters that
 * need no escaping in an HTML attribute or a header (checked). */
typedef struct md_track_html_opts_s {
    const md_track_key_t *key;
    const uint8_t *msgid; /* MD_TRACK_MSGID_LEN bytes */
    md_str_t base;
    bool clicks;
    bool opens;
} md_track_html_opts_t;

/*
 * Rewrites a message's HTML: every <a> whose (first) href is an absolute http(s) URL
 * becomes href="BASE/t/c/TOKEN", the rest of the tag kept byte for byte; the URL the
 * browser would have followed (entities decoded as in an attribute, surrounding
 * spaces and controls stripped, tabs and newlines removed, as the URL parser does) is
 * appended to links. Left alone: mailto:, tel:, #anchors, relative and other links,
 * <a> tags with a data-mailerd-notrack attribute, anything inside comments, script,
 * style, textarea, title and the like. With opens, the pixel
 *   <img src="BASE/t/o/TOKEN" width="1" height="1" alt="" style="display:none">
 * goes before the first </body> tag, or at the end.
 *
 * The HTML is tokenized as a browser's tokenizer would (quotes, missing spaces
 * between attributes, unterminated tags and comments), only ever within [html,
 * html+len). Appends to out (the caller's buffer); links must be zeroed or empty on
 * entry and is owned by the caller afterwards (md_track_links_free), also on error.
 * MD_ERROR only for bad options (key, base).
 */
int md_track_rewrite_html(const md_track_html_opts_t *o, const char *html, size_t len,
                          md_buf_t *out, md_track_links_t *links);

void md_track_links_free(md_track_links_t *links);

/*
 * Appends the bulk-mail headers, folded, each ending in CRLF:
 *   List-Unsubscribe: <BASE/u/TOKEN>,\r\n <mailto:unsub+B32TOKEN@DOMAIN>
 *   List-Unsubscribe-Post: List-Unsubscribe=One-Click
 * The Post header (RFC 8058) only when base is https, as that RFC requires; domain
 * empty leaves the mailto out. MD_ERROR for a bad key, base or domain.
 */
int md_track_list_unsubscribe(const md_track_key_t *key, const uint8_t *msgid, md_str_t base,
                              md_str_t domain, md_buf_t *out);

/*
 * Reads the body of a POST to /u/TOKEN. content_type is the raw header value (may be
 * empty: then the body is read as urlencoded). application/x-www-form-urlencoded
 * ("List-Unsubscribe=One-Click", Gmail) and multipart/form-data (a part named
 * List-Unsubscribe holding One-Click, Yahoo) are understood.
 * MD_OK: the body asks for a one-click unsubscribe. MD_DECLINED: it is well formed but
 * does not. MD_ERROR: unsupported type or malformed multipart.
 */
int md_track_oneclick_body(md_str_t content_type, const char *body, size_t len);

#endif
