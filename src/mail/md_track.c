/*
 * md_track: tracking tokens, HTML link rewriting, List-Unsubscribe headers and the
 * one-click body parser. Pure functions over caller memory; see md_track.h for the
 * token format and why each choice was made.
 */
#include "md_track.h"

#include <stdlib.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

/* ---- constant-time encodings ---------------------------------------------------- */

/* 1 if lo <= x <= hi, else 0, for x, lo, hi in 0..255, without a branch: both
 * differences are negative only inside the range, and >> 8 keeps just the sign. */
static inline int
md_ct_in(int x, int lo, int hi)
{
    return (((lo - 1 - x) & (x - (hi + 1))) >> 8) & 1;
}

/* The 6-bit value of a base64url character, or -1; no branch on the character. */
static int
md_ct_b64url_val(unsigned char c)
{
    int x = c;
    return -1 + md_ct_in(x, 'A', 'Z') * (x - 'A' + 1) + md_ct_in(x, 'a', 'z') * (x - 'a' + 27) +
           md_ct_in(x, '0', '9') * (x - '0' + 53) + md_ct_in(x, '-', '-') * 63 +
           md_ct_in(x, '_', '_') * 64;
}

/* The 5-bit value of a base32 character (RFC 4648, either case), or -1. */
static int
md_ct_b32_val(unsigned char c)
{
    int x = c;
    return -1 + md_ct_in(x, 'A', 'Z') * (x - 'A' + 1) + md_ct_in(x, 'a', 'z') * (x - 'a' + 1) +
           md_ct_in(x, '2', '7') * (x - '2' + 27);
}

static const char md_b64url_chars[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
static const char md_b32_chars[] = "abcdefghijklmnopqrstuvwxyz234567";

/* Encodes n bytes, `bits` bits per output character, without padding; returns the
 * length written (out must hold ceil(n*8/bits) + 1). */
static size_t
md_track_encode(const uint8_t *in, size_t n, unsigned bits, const char *alphabet, char *out)
{
    size_t o = 0;
    uint32_t acc = 0;
    unsigned have = 0;
    unsigned mask = (1u << bits) - 1;
    for (size_t i = 0; i < n; i++) {
        acc = (acc << 8) | in[i];
        have += 8;
        while (have >= bits) {
            have -= bits;
            out[o++] = alphabet[(acc >> have) & mask];
        }
    }
    if (have > 0)
        out[o++] = alphabet[(acc << (bits - have)) & mask];
    out[o] = '\0';
    return o;
}

/* Decodes exactly n bytes from len characters (len must be ceil(n*8/bits)); returns
 * nonzero if any character is outside the alphabet or the unused trailing bits are
 * not zero (so that every token has exactly one spelling). Runs in time that depends
 * only on len. */
static int
md_track_decode(const char *s, size_t len, unsigned bits, int (*val)(unsigned char), uint8_t *out,
                size_t n)
{
    int bad = 0;
    uint32_t acc = 0;
    unsigned have = 0;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        int v = val((unsigned char)s[i]);
        bad |= (v >> 8) & 1; /* v is -1 only when invalid */
        acc = (acc << bits) | ((unsigned)v & ((1u << bits) - 1));
        have += bits;
        if (have >= 8) {
            have -= 8;
            if (o < n)
                out[o++] = (uint8_t)(acc >> have);
        }
    }
    bad |= (int)(acc & ((1u << have) - 1)) != 0;
    bad |= o != n;
    return bad;
}

/* ---- tokens ------------------------------------------------------------------------ */

static bool
md_track_key_ok(const md_track_key_t *key)
{
    return key != NULL && key->secret != NULL && key->len >= MD_TRACK_SECRET_MIN;
}

/* HMAC-SHA256 of data under key, truncated. False only if libcrypto fails (for
 * example a FIPS provider refusing the key): callers then make no token and accept
 * none, never a fixed MAC that anyone could forge. */
static bool
md_track_mac(const md_track_key_t *key, const uint8_t *data, size_t n,
             uint8_t mac[MD_TRACK_MAC_LEN])
{
    uint8_t full[EVP_MAX_MD_SIZE];
    unsigned flen = 0;
    if (HMAC(EVP_sha256(), key->secret, (int)key->len, data, n, full, &flen) == NULL ||
        flen < MD_TRACK_MAC_LEN)
        return false;
    memcpy(mac, full, MD_TRACK_MAC_LEN);
    OPENSSL_cleanse(full, sizeof(full));
    return true;
}

/* Fills bin with the signed binary token; returns its length or 0. */
static size_t
md_track_token_bin(const md_track_key_t *key, const md_track_token_t *t,
                   uint8_t bin[MD_TRACK_BIN_LINK])
{
    if (!md_track_key_ok(key) || t == NULL)
        return 0;
    if (t->kind != MD_TRACK_CLICK && t->kind != MD_TRACK_OPEN && t->kind != MD_TRACK_UNSUBSCRIBE)
        return 0;
    size_t n = 0;
    bin[n++] = MD_TRACK_VERSION;
    bin[n++] = key->id;
    bin[n++] = (uint8_t)t->kind;
    memcpy(bin + n, t->msgid, MD_TRACK_MSGID_LEN);
    n += MD_TRACK_MSGID_LEN;
    if (t->kind == MD_TRACK_CLICK) {
        bin[n++] = (uint8_t)(t->link >> 8);
        bin[n++] = (uint8_t)(t->link & 0xff);
    }
    if (!md_track_mac(key, bin, n, bin + n))
        return 0;
    return n + MD_TRACK_MAC_LEN;
}

size_t
md_track_token_make(const md_track_key_t *key, const md_track_token_t *t,
                    char out[MD_TRACK_TOKEN_SIZE])
{
    uint8_t bin[MD_TRACK_BIN_LINK];
    size_t n = md_track_token_bin(key, t, bin);
    if (n == 0) {
        out[0] = '\0';
        return 0;
    }
    return md_track_encode(bin, n, 6, md_b64url_chars, out);
}

size_t
md_track_token_make_b32(const md_track_key_t *key, const md_track_token_t *t,
                        char out[MD_TRACK_TOKEN_SIZE])
{
    uint8_t bin[MD_TRACK_BIN_LINK];
    size_t n = md_track_token_bin(key, t, bin);
    if (n == 0) {
        out[0] = '\0';
        return 0;
    }
    return md_track_encode(bin, n, 5, md_b32_chars, out);
}

/* The characters needed for n bytes at `bits` bits each. */
#define MD_TRACK_CHARS(n, bits) (((n)*8 + (bits)-1) / (bits))

/*
 * The shared verifier. The encoded length is public (it only says click or not), so
 * branching on it is fine; after that every check is folded into `bad` and the MAC
 * is always computed (with the current key when the id is unknown) and compared in
 * constant time.
 */
static int
md_track_parse_enc(const md_track_keys_t *keys, const char *s, size_t len, unsigned bits,
                   int (*val)(unsigned char), md_track_token_t *out)
{
    memset(out, 0, sizeof(*out));
    if (keys == NULL || !md_track_key_ok(&keys->current) || s == NULL)
        return MD_DECLINED;
    size_t n;
    if (len == MD_TRACK_CHARS(MD_TRACK_BIN_LINK, bits))
        n = MD_TRACK_BIN_LINK;
    else if (len == MD_TRACK_CHARS(MD_TRACK_BIN_PLAIN, bits))
        n = MD_TRACK_BIN_PLAIN;
    else
        return MD_DECLINED;

    uint8_t bin[MD_TRACK_BIN_LINK];
    int bad = md_track_decode(s, len, bits, val, bin, n);
    bad |= bin[0] != MD_TRACK_VERSION;
    if (n == MD_TRACK_BIN_LINK)
        bad |= bin[2] != MD_TRACK_CLICK;
    else
        bad |= (bin[2] != MD_TRACK_OPEN) & (bin[2] != MD_TRACK_UNSUBSCRIBE);

    const md_track_key_t *key = &keys->current;
    if (bin[1] != keys->current.id) {
        if (md_track_key_ok(&keys->previous) && bin[1] == keys->previous.id)
            key = &keys->previous;
        else
            bad |= 1;
    }
    uint8_t mac[MD_TRACK_MAC_LEN] = {0};
    bad |= !md_track_mac(key, bin, n - MD_TRACK_MAC_LEN, mac);
    bad |= CRYPTO_memcmp(mac, bin + n - MD_TRACK_MAC_LEN, MD_TRACK_MAC_LEN) != 0;
    if (bad)
        return MD_DECLINED;

    out->kind = (md_track_kind_t)bin[2];
    out->key_id = bin[1];
    memcpy(out->msgid, bin + 3, MD_TRACK_MSGID_LEN);
    if (n == MD_TRACK_BIN_LINK)
        out->link = (uint16_t)((bin[3 + MD_TRACK_MSGID_LEN] << 8) | bin[4 + MD_TRACK_MSGID_LEN]);
    return MD_OK;
}

int
md_track_token_parse(const md_track_keys_t *keys, const char *s, size_t len, md_track_token_t *out)
{
    return md_track_parse_enc(keys, s, len, 6, md_ct_b64url_val, out);
}

int
md_track_token_parse_b32(const md_track_keys_t *keys, const char *s, size_t len,
                         md_track_token_t *out)
{
    return md_track_parse_enc(keys, s, len, 5, md_ct_b32_val, out);
}

/* ---- HTML: character references as in an attribute value ------------------------- */

typedef struct md_track_entity_s {
    const char *name; /* without '&'; with ';' when the reference needs it */
    const char *value;
} md_track_entity_t;

/* clang-format off */
/* Generated from the WHATWG named character references (Python's html.entities.html5,
 * 2231 names, sorted byte-wise): name without '&', then its UTF-8 value. */
static const md_track_entity_t md_track_entities[] = {
    {"AElig","\xc3\x86"}, {"AElig;","\xc3\x86"}, {"AMP","\x26"}, {"AMP;","\x26"},
    {"Aacute","\xc3\x81"}, {"Aacute;","\xc3\x81"}, {"Abreve;","\xc4\x82"}, {"Acirc","\xc3\x82"},
    {"Acirc;","\xc3\x82"}, {"Acy;","\xd0\x90"}, {"Afr;","\xf0\x9d\x94\x84"}, {"Agrave","\xc3\x80"},
    {"Agrave;","\xc3\x80"}, {"Alpha;","\xce\x91"}, {"Amacr;","\xc4\x80"}, {"And;","\xe2\xa9\x93"},
    {"Aogon;","\xc4\x84"}, {"Aopf;","\xf0\x9d\x94\xb8"}, {"ApplyFunction;","\xe2\x81\xa1"},
    {"Aring","\xc3\x85"}, {"Aring;","\xc3\x85"}, {"Ascr;","\xf0\x9d\x92\x9c"},
    {"Assign;","\xe2\x89\x94"}, {"Atilde","\xc3\x83"}, {"Atilde;","\xc3\x83"}, {"Auml","\xc3\x84"},
    {"Auml;","\xc3\x84"}, {"Backslash;","\xe2\x88\x96"}, {"Barv;","\xe2\xab\xa7"},
    {"Barwed;","\xe2\x8c\x86"}, {"Bcy;","\xd0\x91"}, {"Because;","\xe2\x88\xb5"},
    {"Bernoullis;","\xe2\x84\xac"}, {"Beta;","\xce\x92"}, {"Bfr;","\xf0\x9d\x94\x85"},
    {"Bopf;","\xf0\x9d\x94\xb9"}, {"Breve;","\xcb\x98"}, {"Bscr;","\xe2\x84\xac"},
    {"Bumpeq;","\xe2\x89\x8e"}, {"CHcy;","\xd0\xa7"}, {"COPY","\xc2\xa9"}, {"COPY;","\xc2\xa9"},
    {"Cacute;","\xc4\x86"}, {"Cap;","\xe2\x8b\x92"}, {"CapitalDifferentialD;","\xe2\x85\x85"},
    {"Cayleys;","\xe2\x84\xad"}, {"Ccaron;","\xc4\x8c"}, {"Ccedil","\xc3\x87"},
    {"Ccedil;","\xc3\x87"}, {"Ccirc;","\xc4\x88"}, {"Cconint;","\xe2\x88\xb0"},
    {"Cdot;","\xc4\x8a"}, {"Cedilla;","\xc2\xb8"}, {"CenterDot;","\xc2\xb7"},
    {"Cfr;","\xe2\x84\xad"}, {"Chi;","\xce\xa7"}, {"CircleDot;","\xe2\x8a\x99"},
    {"CircleMinus;","\xe2\x8a\x96"}, {"CirclePlus;","\xe2\x8a\x95"},
    {"CircleTimes;","\xe2\x8a\x97"}, {"ClockwiseContourIntegral;","\xe2\x88\xb2"},
    {"CloseCurlyDoubleQuote;","\xe2\x80\x9d"}, {"CloseCurlyQuote;","\xe2\x80\x99"},
    {"Colon;","\xe2\x88\xb7"}, {"Colone;","\xe2\xa9\xb4"}, {"Congruent;","\xe2\x89\xa1"},
    {"Conint;","\xe2\x88\xaf"}, {"ContourIntegral;","\xe2\x88\xae"}, {"Copf;","\xe2\x84\x82"},
    {"Coproduct;","\xe2\x88\x90"}, {"CounterClockwiseContourIntegral;","\xe2\x88\xb3"},
    {"Cross;","\xe2\xa8\xaf"}, {"Cscr;","\xf0\x9d\x92\x9e"}, {"Cup;","\xe2\x8b\x93"},
    {"CupCap;","\xe2\x89\x8d"}, {"DD;","\xe2\x85\x85"}, {"DDotrahd;","\xe2\xa4\x91"},
    {"DJcy;","\xd0\x82"}, {"DScy;","\xd0\x85"}, {"DZcy;","\xd0\x8f"}, {"Dagger;","\xe2\x80\xa1"},
    {"Darr;","\xe2\x86\xa1"}, {"Dashv;","\xe2\xab\xa4"}, {"Dcaron;","\xc4\x8e"},
    {"Dcy;","\xd0\x94"}, {"Del;","\xe2\x88\x87"}, {"Delta;","\xce\x94"},
    {"Dfr;","\xf0\x9d\x94\x87"}, {"DiacriticalAcute;","\xc2\xb4"}, {"DiacriticalDot;","\xcb\x99"},
    {"DiacriticalDoubleAcute;","\xcb\x9d"}, {"DiacriticalGrave;","\x60"},
    {"DiacriticalTilde;","\xcb\x9c"}, {"Diamond;","\xe2\x8b\x84"},
    {"DifferentialD;","\xe2\x85\x86"}, {"Dopf;","\xf0\x9d\x94\xbb"}, {"Dot;","\xc2\xa8"},
    {"DotDot;","\xe2\x83\x9c"}, {"DotEqual;","\xe2\x89\x90"},
    {"DoubleContourIntegral;","\xe2\x88\xaf"}, {"DoubleDot;","\xc2\xa8"},
    {"DoubleDownArrow;","\xe2\x87\x93"}, {"DoubleLeftArrow;","\xe2\x87\x90"},
    {"DoubleLeftRightArrow;","\xe2\x87\x94"}, {"DoubleLeftTee;","\xe2\xab\xa4"},
    {"DoubleLongLeftArrow;","\xe2\x9f\xb8"}, {"DoubleLongLeftRightArrow;","\xe2\x9f\xba"},
    {"DoubleLongRightArrow;","\xe2\x9f\xb9"}, {"DoubleRightArrow;","\xe2\x87\x92"},
    {"DoubleRightTee;","\xe2\x8a\xa8"}, {"DoubleUpArrow;","\xe2\x87\x91"},
    {"DoubleUpDownArrow;","\xe2\x87\x95"}, {"DoubleVerticalBar;","\xe2\x88\xa5"},
    {"DownArrow;","\xe2\x86\x93"}, {"DownArrowBar;","\xe2\xa4\x93"},
    {"DownArrowUpArrow;","\xe2\x87\xb5"}, {"DownBreve;","\xcc\x91"},
    {"DownLeftRightVector;","\xe2\xa5\x90"}, {"DownLeftTeeVector;","\xe2\xa5\x9e"},
    {"DownLeftVector;","\xe2\x86\xbd"}, {"DownLeftVectorBar;","\xe2\xa5\x96"},
    {"DownRightTeeVector;","\xe2\xa5\x9f"}, {"DownRightVector;","\xe2\x87\x81"},
    {"DownRightVectorBar;","\xe2\xa5\x97"}, {"DownTee;","\xe2\x8a\xa4"},
    {"DownTeeArrow;","\xe2\x86\xa7"}, {"Downarrow;","\xe2\x87\x93"}, {"Dscr;","\xf0\x9d\x92\x9f"},
    {"Dstrok;","\xc4\x90"}, {"ENG;","\xc5\x8a"}, {"ETH","\xc3\x90"}, {"ETH;","\xc3\x90"},
    {"Eacute","\xc3\x89"}, {"Eacute;","\xc3\x89"}, {"Ecaron;","\xc4\x9a"}, {"Ecirc","\xc3\x8a"},
    {"Ecirc;","\xc3\x8a"}, {"Ecy;","\xd0\xad"}, {"Edot;","\xc4\x96"}, {"Efr;","\xf0\x9d\x94\x88"},
    {"Egrave","\xc3\x88"}, {"Egrave;","\xc3\x88"}, {"Element;","\xe2\x88\x88"},
    {"Emacr;","\xc4\x92"}, {"EmptySmallSquare;","\xe2\x97\xbb"},
    {"EmptyVerySmallSquare;","\xe2\x96\xab"}, {"Eogon;","\xc4\x98"}, {"Eopf;","\xf0\x9d\x94\xbc"},
    {"Epsilon;","\xce\x95"}, {"Equal;","\xe2\xa9\xb5"}, {"EqualTilde;","\xe2\x89\x82"},
    {"Equilibrium;","\xe2\x87\x8c"}, {"Escr;","\xe2\x84\xb0"}, {"Esim;","\xe2\xa9\xb3"},
    {"Eta;","\xce\x97"}, {"Euml","\xc3\x8b"}, {"Euml;","\xc3\x8b"}, {"Exists;","\xe2\x88\x83"},
    {"ExponentialE;","\xe2\x85\x87"}, {"Fcy;","\xd0\xa4"}, {"Ffr;","\xf0\x9d\x94\x89"},
    {"FilledSmallSquare;","\xe2\x97\xbc"}, {"FilledVerySmallSquare;","\xe2\x96\xaa"},
    {"Fopf;","\xf0\x9d\x94\xbd"}, {"ForAll;","\xe2\x88\x80"}, {"Fouriertrf;","\xe2\x84\xb1"},
    {"Fscr;","\xe2\x84\xb1"}, {"GJcy;","\xd0\x83"}, {"GT","\x3e"}, {"GT;","\x3e"},
    {"Gamma;","\xce\x93"}, {"Gammad;","\xcf\x9c"}, {"Gbreve;","\xc4\x9e"}, {"Gcedil;","\xc4\xa2"},
    {"Gcirc;","\xc4\x9c"}, {"Gcy;","\xd0\x93"}, {"Gdot;","\xc4\xa0"}, {"Gfr;","\xf0\x9d\x94\x8a"},
    {"Gg;","\xe2\x8b\x99"}, {"Gopf;","\xf0\x9d\x94\xbe"}, {"GreaterEqual;","\xe2\x89\xa5"},
    {"GreaterEqualLess;","\xe2\x8b\x9b"}, {"GreaterFullEqual;","\xe2\x89\xa7"},
    {"GreaterGreater;","\xe2\xaa\xa2"}, {"GreaterLess;","\xe2\x89\xb7"},
    {"GreaterSlantEqual;","\xe2\xa9\xbe"}, {"GreaterTilde;","\xe2\x89\xb3"},
    {"Gscr;","\xf0\x9d\x92\xa2"}, {"Gt;","\xe2\x89\xab"}, {"HARDcy;","\xd0\xaa"},
    {"Hacek;","\xcb\x87"}, {"Hat;","\x5e"}, {"Hcirc;","\xc4\xa4"}, {"Hfr;","\xe2\x84\x8c"},
    {"HilbertSpace;","\xe2\x84\x8b"}, {"Hopf;","\xe2\x84\x8d"}, {"HorizontalLine;","\xe2\x94\x80"},
    {"Hscr;","\xe2\x84\x8b"}, {"Hstrok;","\xc4\xa6"}, {"HumpDownHump;","\xe2\x89\x8e"},
    {"HumpEqual;","\xe2\x89\x8f"}, {"IEcy;","\xd0\x95"}, {"IJlig;","\xc4\xb2"},
    {"IOcy;","\xd0\x81"}, {"Iacute","\xc3\x8d"}, {"Iacute;","\xc3\x8d"}, {"Icirc","\xc3\x8e"},
    {"Icirc;","\xc3\x8e"}, {"Icy;","\xd0\x98"}, {"Idot;","\xc4\xb0"}, {"Ifr;","\xe2\x84\x91"},
    {"Igrave","\xc3\x8c"}, {"Igrave;","\xc3\x8c"}, {"Im;","\xe2\x84\x91"}, {"Imacr;","\xc4\xaa"},
    {"ImaginaryI;","\xe2\x85\x88"}, {"Implies;","\xe2\x87\x92"}, {"Int;","\xe2\x88\xac"},
    {"Integral;","\xe2\x88\xab"}, {"Intersection;","\xe2\x8b\x82"},
    {"InvisibleComma;","\xe2\x81\xa3"}, {"InvisibleTimes;","\xe2\x81\xa2"}, {"Iogon;","\xc4\xae"},
    {"Iopf;","\xf0\x9d\x95\x80"}, {"Iota;","\xce\x99"}, {"Iscr;","\xe2\x84\x90"},
    {"Itilde;","\xc4\xa8"}, {"Iukcy;","\xd0\x86"}, {"Iuml","\xc3\x8f"}, {"Iuml;","\xc3\x8f"},
    {"Jcirc;","\xc4\xb4"}, {"Jcy;","\xd0\x99"}, {"Jfr;","\xf0\x9d\x94\x8d"},
    {"Jopf;","\xf0\x9d\x95\x81"}, {"Jscr;","\xf0\x9d\x92\xa5"}, {"Jsercy;","\xd0\x88"},
    {"Jukcy;","\xd0\x84"}, {"KHcy;","\xd0\xa5"}, {"KJcy;","\xd0\x8c"}, {"Kappa;","\xce\x9a"},
    {"Kcedil;","\xc4\xb6"}, {"Kcy;","\xd0\x9a"}, {"Kfr;","\xf0\x9d\x94\x8e"},
    {"Kopf;","\xf0\x9d\x95\x82"}, {"Kscr;","\xf0\x9d\x92\xa6"}, {"LJcy;","\xd0\x89"}, {"LT","\x3c"},
    {"LT;","\x3c"}, {"Lacute;","\xc4\xb9"}, {"Lambda;","\xce\x9b"}, {"Lang;","\xe2\x9f\xaa"},
    {"Laplacetrf;","\xe2\x84\x92"}, {"Larr;","\xe2\x86\x9e"}, {"Lcaron;","\xc4\xbd"},
    {"Lcedil;","\xc4\xbb"}, {"Lcy;","\xd0\x9b"}, {"LeftAngleBracket;","\xe2\x9f\xa8"},
    {"LeftArrow;","\xe2\x86\x90"}, {"LeftArrowBar;","\xe2\x87\xa4"},
    {"LeftArrowRightArrow;","\xe2\x87\x86"}, {"LeftCeiling;","\xe2\x8c\x88"},
    {"LeftDoubleBracket;","\xe2\x9f\xa6"}, {"LeftDownTeeVector;","\xe2\xa5\xa1"},
    {"LeftDownVector;","\xe2\x87\x83"}, {"LeftDownVectorBar;","\xe2\xa5\x99"},
    {"LeftFloor;","\xe2\x8c\x8a"}, {"LeftRightArrow;","\xe2\x86\x94"},
    {"LeftRightVector;","\xe2\xa5\x8e"}, {"LeftTee;","\xe2\x8a\xa3"},
    {"LeftTeeArrow;","\xe2\x86\xa4"}, {"LeftTeeVector;","\xe2\xa5\x9a"},
    {"LeftTriangle;","\xe2\x8a\xb2"}, {"LeftTriangleBar;","\xe2\xa7\x8f"},
    {"LeftTriangleEqual;","\xe2\x8a\xb4"}, {"LeftUpDownVector;","\xe2\xa5\x91"},
    {"LeftUpTeeVector;","\xe2\xa5\xa0"}, {"LeftUpVector;","\xe2\x86\xbf"},
    {"LeftUpVectorBar;","\xe2\xa5\x98"}, {"LeftVector;","\xe2\x86\xbc"},
    {"LeftVectorBar;","\xe2\xa5\x92"}, {"Leftarrow;","\xe2\x87\x90"},
    {"Leftrightarrow;","\xe2\x87\x94"}, {"LessEqualGreater;","\xe2\x8b\x9a"},
    {"LessFullEqual;","\xe2\x89\xa6"}, {"LessGreater;","\xe2\x89\xb6"},
    {"LessLess;","\xe2\xaa\xa1"}, {"LessSlantEqual;","\xe2\xa9\xbd"}, {"LessTilde;","\xe2\x89\xb2"},
    {"Lfr;","\xf0\x9d\x94\x8f"}, {"Ll;","\xe2\x8b\x98"}, {"Lleftarrow;","\xe2\x87\x9a"},
    {"Lmidot;","\xc4\xbf"}, {"LongLeftArrow;","\xe2\x9f\xb5"},
    {"LongLeftRightArrow;","\xe2\x9f\xb7"}, {"LongRightArrow;","\xe2\x9f\xb6"},
    {"Longleftarrow;","\xe2\x9f\xb8"}, {"Longleftrightarrow;","\xe2\x9f\xba"},
    {"Longrightarrow;","\xe2\x9f\xb9"}, {"Lopf;","\xf0\x9d\x95\x83"},
    {"LowerLeftArrow;","\xe2\x86\x99"}, {"LowerRightArrow;","\xe2\x86\x98"},
    {"Lscr;","\xe2\x84\x92"}, {"Lsh;","\xe2\x86\xb0"}, {"Lstrok;","\xc5\x81"},
    {"Lt;","\xe2\x89\xaa"}, {"Map;","\xe2\xa4\x85"}, {"Mcy;","\xd0\x9c"},
    {"MediumSpace;","\xe2\x81\x9f"}, {"Mellintrf;","\xe2\x84\xb3"}, {"Mfr;","\xf0\x9d\x94\x90"},
    {"MinusPlus;","\xe2\x88\x93"}, {"Mopf;","\xf0\x9d\x95\x84"}, {"Mscr;","\xe2\x84\xb3"},
    {"Mu;","\xce\x9c"}, {"NJcy;","\xd0\x8a"}, {"Nacute;","\xc5\x83"}, {"Ncaron;","\xc5\x87"},
    {"Ncedil;","\xc5\x85"}, {"Ncy;","\xd0\x9d"}, {"NegativeMediumSpace;","\xe2\x80\x8b"},
    {"NegativeThickSpace;","\xe2\x80\x8b"}, {"NegativeThinSpace;","\xe2\x80\x8b"},
    {"NegativeVeryThinSpace;","\xe2\x80\x8b"}, {"NestedGreaterGreater;","\xe2\x89\xab"},
    {"NestedLessLess;","\xe2\x89\xaa"}, {"NewLine;","\x0a"}, {"Nfr;","\xf0\x9d\x94\x91"},
    {"NoBreak;","\xe2\x81\xa0"}, {"NonBreakingSpace;","\xc2\xa0"}, {"Nopf;","\xe2\x84\x95"},
    {"Not;","\xe2\xab\xac"}, {"NotCongruent;","\xe2\x89\xa2"}, {"NotCupCap;","\xe2\x89\xad"},
    {"NotDoubleVerticalBar;","\xe2\x88\xa6"}, {"NotElement;","\xe2\x88\x89"},
    {"NotEqual;","\xe2\x89\xa0"}, {"NotEqualTilde;","\xe2\x89\x82\xcc\xb8"},
    {"NotExists;","\xe2\x88\x84"}, {"NotGreater;","\xe2\x89\xaf"},
    {"NotGreaterEqual;","\xe2\x89\xb1"}, {"NotGreaterFullEqual;","\xe2\x89\xa7\xcc\xb8"},
    {"NotGreaterGreater;","\xe2\x89\xab\xcc\xb8"}, {"NotGreaterLess;","\xe2\x89\xb9"},
    {"NotGreaterSlantEqual;","\xe2\xa9\xbe\xcc\xb8"}, {"NotGreaterTilde;","\xe2\x89\xb5"},
    {"NotHumpDownHump;","\xe2\x89\x8e\xcc\xb8"}, {"NotHumpEqual;","\xe2\x89\x8f\xcc\xb8"},
    {"NotLeftTriangle;","\xe2\x8b\xaa"}, {"NotLeftTriangleBar;","\xe2\xa7\x8f\xcc\xb8"},
    {"NotLeftTriangleEqual;","\xe2\x8b\xac"}, {"NotLess;","\xe2\x89\xae"},
    {"NotLessEqual;","\xe2\x89\xb0"}, {"NotLessGreater;","\xe2\x89\xb8"},
    {"NotLessLess;","\xe2\x89\xaa\xcc\xb8"}, {"NotLessSlantEqual;","\xe2\xa9\xbd\xcc\xb8"},
    {"NotLessTilde;","\xe2\x89\xb4"}, {"NotNestedGreaterGreater;","\xe2\xaa\xa2\xcc\xb8"},
    {"NotNestedLessLess;","\xe2\xaa\xa1\xcc\xb8"}, {"NotPrecedes;","\xe2\x8a\x80"},
    {"NotPrecedesEqual;","\xe2\xaa\xaf\xcc\xb8"}, {"NotPrecedesSlantEqual;","\xe2\x8b\xa0"},
    {"NotReverseElement;","\xe2\x88\x8c"}, {"NotRightTriangle;","\xe2\x8b\xab"},
    {"NotRightTriangleBar;","\xe2\xa7\x90\xcc\xb8"}, {"NotRightTriangleEqual;","\xe2\x8b\xad"},
    {"NotSquareSubset;","\xe2\x8a\x8f\xcc\xb8"}, {"NotSquareSubsetEqual;","\xe2\x8b\xa2"},
    {"NotSquareSuperset;","\xe2\x8a\x90\xcc\xb8"}, {"NotSquareSupersetEqual;","\xe2\x8b\xa3"},
    {"NotSubset;","\xe2\x8a\x82\xe2\x83\x92"}, {"NotSubsetEqual;","\xe2\x8a\x88"},
    {"NotSucceeds;","\xe2\x8a\x81"}, {"NotSucceedsEqual;","\xe2\xaa\xb0\xcc\xb8"},
    {"NotSucceedsSlantEqual;","\xe2\x8b\xa1"}, {"NotSucceedsTilde;","\xe2\x89\xbf\xcc\xb8"},
    {"NotSuperset;","\xe2\x8a\x83\xe2\x83\x92"}, {"NotSupersetEqual;","\xe2\x8a\x89"},
    {"NotTilde;","\xe2\x89\x81"}, {"NotTildeEqual;","\xe2\x89\x84"},
    {"NotTildeFullEqual;","\xe2\x89\x87"}, {"NotTildeTilde;","\xe2\x89\x89"},
    {"NotVerticalBar;","\xe2\x88\xa4"}, {"Nscr;","\xf0\x9d\x92\xa9"}, {"Ntilde","\xc3\x91"},
    {"Ntilde;","\xc3\x91"}, {"Nu;","\xce\x9d"}, {"OElig;","\xc5\x92"}, {"Oacute","\xc3\x93"},
    {"Oacute;","\xc3\x93"}, {"Ocirc","\xc3\x94"}, {"Ocirc;","\xc3\x94"}, {"Ocy;","\xd0\x9e"},
    {"Odblac;","\xc5\x90"}, {"Ofr;","\xf0\x9d\x94\x92"}, {"Ograve","\xc3\x92"},
    {"Ograve;","\xc3\x92"}, {"Omacr;","\xc5\x8c"}, {"Omega;","\xce\xa9"}, {"Omicron;","\xce\x9f"},
    {"Oopf;","\xf0\x9d\x95\x86"}, {"OpenCurlyDoubleQuote;","\xe2\x80\x9c"},
    {"OpenCurlyQuote;","\xe2\x80\x98"}, {"Or;","\xe2\xa9\x94"}, {"Oscr;","\xf0\x9d\x92\xaa"},
    {"Oslash","\xc3\x98"}, {"Oslash;","\xc3\x98"}, {"Otilde","\xc3\x95"}, {"Otilde;","\xc3\x95"},
    {"Otimes;","\xe2\xa8\xb7"}, {"Ouml","\xc3\x96"}, {"Ouml;","\xc3\x96"},
    {"OverBar;","\xe2\x80\xbe"}, {"OverBrace;","\xe2\x8f\x9e"}, {"OverBracket;","\xe2\x8e\xb4"},
    {"OverParenthesis;","\xe2\x8f\x9c"}, {"PartialD;","\xe2\x88\x82"}, {"Pcy;","\xd0\x9f"},
    {"Pfr;","\xf0\x9d\x94\x93"}, {"Phi;","\xce\xa6"}, {"Pi;","\xce\xa0"}, {"PlusMinus;","\xc2\xb1"},
    {"Poincareplane;","\xe2\x84\x8c"}, {"Popf;","\xe2\x84\x99"}, {"Pr;","\xe2\xaa\xbb"},
    {"Precedes;","\xe2\x89\xba"}, {"PrecedesEqual;","\xe2\xaa\xaf"},
    {"PrecedesSlantEqual;","\xe2\x89\xbc"}, {"PrecedesTilde;","\xe2\x89\xbe"},
    {"Prime;","\xe2\x80\xb3"}, {"Product;","\xe2\x88\x8f"}, {"Proportion;","\xe2\x88\xb7"},
    {"Proportional;","\xe2\x88\x9d"}, {"Pscr;","\xf0\x9d\x92\xab"}, {"Psi;","\xce\xa8"},
    {"QUOT","\x22"}, {"QUOT;","\x22"}, {"Qfr;","\xf0\x9d\x94\x94"}, {"Qopf;","\xe2\x84\x9a"},
    {"Qscr;","\xf0\x9d\x92\xac"}, {"RBarr;","\xe2\xa4\x90"}, {"REG","\xc2\xae"},
    {"REG;","\xc2\xae"}, {"Racute;","\xc5\x94"}, {"Rang;","\xe2\x9f\xab"}, {"Rarr;","\xe2\x86\xa0"},
    {"Rarrtl;","\xe2\xa4\x96"}, {"Rcaron;","\xc5\x98"}, {"Rcedil;","\xc5\x96"}, {"Rcy;","\xd0\xa0"},
    {"Re;","\xe2\x84\x9c"}, {"ReverseElement;","\xe2\x88\x8b"},
    {"ReverseEquilibrium;","\xe2\x87\x8b"}, {"ReverseUpEquilibrium;","\xe2\xa5\xaf"},
    {"Rfr;","\xe2\x84\x9c"}, {"Rho;","\xce\xa1"}, {"RightAngleBracket;","\xe2\x9f\xa9"},
    {"RightArrow;","\xe2\x86\x92"}, {"RightArrowBar;","\xe2\x87\xa5"},
    {"RightArrowLeftArrow;","\xe2\x87\x84"}, {"RightCeiling;","\xe2\x8c\x89"},
    {"RightDoubleBracket;","\xe2\x9f\xa7"}, {"RightDownTeeVector;","\xe2\xa5\x9d"},
    {"RightDownVector;","\xe2\x87\x82"}, {"RightDownVectorBar;","\xe2\xa5\x95"},
    {"RightFloor;","\xe2\x8c\x8b"}, {"RightTee;","\xe2\x8a\xa2"}, {"RightTeeArrow;","\xe2\x86\xa6"},
    {"RightTeeVector;","\xe2\xa5\x9b"}, {"RightTriangle;","\xe2\x8a\xb3"},
    {"RightTriangleBar;","\xe2\xa7\x90"}, {"RightTriangleEqual;","\xe2\x8a\xb5"},
    {"RightUpDownVector;","\xe2\xa5\x8f"}, {"RightUpTeeVector;","\xe2\xa5\x9c"},
    {"RightUpVector;","\xe2\x86\xbe"}, {"RightUpVectorBar;","\xe2\xa5\x94"},
    {"RightVector;","\xe2\x87\x80"}, {"RightVectorBar;","\xe2\xa5\x93"},
    {"Rightarrow;","\xe2\x87\x92"}, {"Ropf;","\xe2\x84\x9d"}, {"RoundImplies;","\xe2\xa5\xb0"},
    {"Rrightarrow;","\xe2\x87\x9b"}, {"Rscr;","\xe2\x84\x9b"}, {"Rsh;","\xe2\x86\xb1"},
    {"RuleDelayed;","\xe2\xa7\xb4"}, {"SHCHcy;","\xd0\xa9"}, {"SHcy;","\xd0\xa8"},
    {"SOFTcy;","\xd0\xac"}, {"Sacute;","\xc5\x9a"}, {"Sc;","\xe2\xaa\xbc"}, {"Scaron;","\xc5\xa0"},
    {"Scedil;","\xc5\x9e"}, {"Scirc;","\xc5\x9c"}, {"Scy;","\xd0\xa1"}, {"Sfr;","\xf0\x9d\x94\x96"},
    {"ShortDownArrow;","\xe2\x86\x93"}, {"ShortLeftArrow;","\xe2\x86\x90"},
    {"ShortRightArrow;","\xe2\x86\x92"}, {"ShortUpArrow;","\xe2\x86\x91"}, {"Sigma;","\xce\xa3"},
    {"SmallCircle;","\xe2\x88\x98"}, {"Sopf;","\xf0\x9d\x95\x8a"}, {"Sqrt;","\xe2\x88\x9a"},
    {"Square;","\xe2\x96\xa1"}, {"SquareIntersection;","\xe2\x8a\x93"},
    {"SquareSubset;","\xe2\x8a\x8f"}, {"SquareSubsetEqual;","\xe2\x8a\x91"},
    {"SquareSuperset;","\xe2\x8a\x90"}, {"SquareSupersetEqual;","\xe2\x8a\x92"},
    {"SquareUnion;","\xe2\x8a\x94"}, {"Sscr;","\xf0\x9d\x92\xae"}, {"Star;","\xe2\x8b\x86"},
    {"Sub;","\xe2\x8b\x90"}, {"Subset;","\xe2\x8b\x90"}, {"SubsetEqual;","\xe2\x8a\x86"},
    {"Succeeds;","\xe2\x89\xbb"}, {"SucceedsEqual;","\xe2\xaa\xb0"},
    {"SucceedsSlantEqual;","\xe2\x89\xbd"}, {"SucceedsTilde;","\xe2\x89\xbf"},
    {"SuchThat;","\xe2\x88\x8b"}, {"Sum;","\xe2\x88\x91"}, {"Sup;","\xe2\x8b\x91"},
    {"Superset;","\xe2\x8a\x83"}, {"SupersetEqual;","\xe2\x8a\x87"}, {"Supset;","\xe2\x8b\x91"},
    {"THORN","\xc3\x9e"}, {"THORN;","\xc3\x9e"}, {"TRADE;","\xe2\x84\xa2"}, {"TSHcy;","\xd0\x8b"},
    {"TScy;","\xd0\xa6"}, {"Tab;","\x09"}, {"Tau;","\xce\xa4"}, {"Tcaron;","\xc5\xa4"},
    {"Tcedil;","\xc5\xa2"}, {"Tcy;","\xd0\xa2"}, {"Tfr;","\xf0\x9d\x94\x97"},
    {"Therefore;","\xe2\x88\xb4"}, {"Theta;","\xce\x98"},
    {"ThickSpace;","\xe2\x81\x9f\xe2\x80\x8a"}, {"ThinSpace;","\xe2\x80\x89"},
    {"Tilde;","\xe2\x88\xbc"}, {"TildeEqual;","\xe2\x89\x83"}, {"TildeFullEqual;","\xe2\x89\x85"},
    {"TildeTilde;","\xe2\x89\x88"}, {"Topf;","\xf0\x9d\x95\x8b"}, {"TripleDot;","\xe2\x83\x9b"},
    {"Tscr;","\xf0\x9d\x92\xaf"}, {"Tstrok;","\xc5\xa6"}, {"Uacute","\xc3\x9a"},
    {"Uacute;","\xc3\x9a"}, {"Uarr;","\xe2\x86\x9f"}, {"Uarrocir;","\xe2\xa5\x89"},
    {"Ubrcy;","\xd0\x8e"}, {"Ubreve;","\xc5\xac"}, {"Ucirc","\xc3\x9b"}, {"Ucirc;","\xc3\x9b"},
    {"Ucy;","\xd0\xa3"}, {"Udblac;","\xc5\xb0"}, {"Ufr;","\xf0\x9d\x94\x98"}, {"Ugrave","\xc3\x99"},
    {"Ugrave;","\xc3\x99"}, {"Umacr;","\xc5\xaa"}, {"UnderBar;","\x5f"},
    {"UnderBrace;","\xe2\x8f\x9f"}, {"UnderBracket;","\xe2\x8e\xb5"},
    {"UnderParenthesis;","\xe2\x8f\x9d"}, {"Union;","\xe2\x8b\x83"}, {"UnionPlus;","\xe2\x8a\x8e"},
    {"Uogon;","\xc5\xb2"}, {"Uopf;","\xf0\x9d\x95\x8c"}, {"UpArrow;","\xe2\x86\x91"},
    {"UpArrowBar;","\xe2\xa4\x92"}, {"UpArrowDownArrow;","\xe2\x87\x85"},
    {"UpDownArrow;","\xe2\x86\x95"}, {"UpEquilibrium;","\xe2\xa5\xae"}, {"UpTee;","\xe2\x8a\xa5"},
    {"UpTeeArrow;","\xe2\x86\xa5"}, {"Uparrow;","\xe2\x87\x91"}, {"Updownarrow;","\xe2\x87\x95"},
    {"UpperLeftArrow;","\xe2\x86\x96"}, {"UpperRightArrow;","\xe2\x86\x97"}, {"Upsi;","\xcf\x92"},
    {"Upsilon;","\xce\xa5"}, {"Uring;","\xc5\xae"}, {"Uscr;","\xf0\x9d\x92\xb0"},
    {"Utilde;","\xc5\xa8"}, {"Uuml","\xc3\x9c"}, {"Uuml;","\xc3\x9c"}, {"VDash;","\xe2\x8a\xab"},
    {"Vbar;","\xe2\xab\xab"}, {"Vcy;","\xd0\x92"}, {"Vdash;","\xe2\x8a\xa9"},
    {"Vdashl;","\xe2\xab\xa6"}, {"Vee;","\xe2\x8b\x81"}, {"Verbar;","\xe2\x80\x96"},
    {"Vert;","\xe2\x80\x96"}, {"VerticalBar;","\xe2\x88\xa3"}, {"VerticalLine;","\x7c"},
    {"VerticalSeparator;","\xe2\x9d\x98"}, {"VerticalTilde;","\xe2\x89\x80"},
    {"VeryThinSpace;","\xe2\x80\x8a"}, {"Vfr;","\xf0\x9d\x94\x99"}, {"Vopf;","\xf0\x9d\x95\x8d"},
    {"Vscr;","\xf0\x9d\x92\xb1"}, {"Vvdash;","\xe2\x8a\xaa"}, {"Wcirc;","\xc5\xb4"},
    {"Wedge;","\xe2\x8b\x80"}, {"Wfr;","\xf0\x9d\x94\x9a"}, {"Wopf;","\xf0\x9d\x95\x8e"},
    {"Wscr;","\xf0\x9d\x92\xb2"}, {"Xfr;","\xf0\x9d\x94\x9b"}, {"Xi;","\xce\x9e"},
    {"Xopf;","\xf0\x9d\x95\x8f"}, {"Xscr;","\xf0\x9d\x92\xb3"}, {"YAcy;","\xd0\xaf"},
    {"YIcy;","\xd0\x87"}, {"YUcy;","\xd0\xae"}, {"Yacute","\xc3\x9d"}, {"Yacute;","\xc3\x9d"},
    {"Ycirc;","\xc5\xb6"}, {"Ycy;","\xd0\xab"}, {"Yfr;","\xf0\x9d\x94\x9c"},
    {"Yopf;","\xf0\x9d\x95\x90"}, {"Yscr;","\xf0\x9d\x92\xb4"}, {"Yuml;","\xc5\xb8"},
    {"ZHcy;","\xd0\x96"}, {"Zacute;","\xc5\xb9"}, {"Zcaron;","\xc5\xbd"}, {"Zcy;","\xd0\x97"},
    {"Zdot;","\xc5\xbb"}, {"ZeroWidthSpace;","\xe2\x80\x8b"}, {"Zeta;","\xce\x96"},
    {"Zfr;","\xe2\x84\xa8"}, {"Zopf;","\xe2\x84\xa4"}, {"Zscr;","\xf0\x9d\x92\xb5"},
    {"aacute","\xc3\xa1"}, {"aacute;","\xc3\xa1"}, {"abreve;","\xc4\x83"}, {"ac;","\xe2\x88\xbe"},
    {"acE;","\xe2\x88\xbe\xcc\xb3"}, {"acd;","\xe2\x88\xbf"}, {"acirc","\xc3\xa2"},
    {"acirc;","\xc3\xa2"}, {"acute","\xc2\xb4"}, {"acute;","\xc2\xb4"}, {"acy;","\xd0\xb0"},
    {"aelig","\xc3\xa6"}, {"aelig;","\xc3\xa6"}, {"af;","\xe2\x81\xa1"},
    {"afr;","\xf0\x9d\x94\x9e"}, {"agrave","\xc3\xa0"}, {"agrave;","\xc3\xa0"},
    {"alefsym;","\xe2\x84\xb5"}, {"aleph;","\xe2\x84\xb5"}, {"alpha;","\xce\xb1"},
    {"amacr;","\xc4\x81"}, {"amalg;","\xe2\xa8\xbf"}, {"amp","\x26"}, {"amp;","\x26"},
    {"and;","\xe2\x88\xa7"}, {"andand;","\xe2\xa9\x95"}, {"andd;","\xe2\xa9\x9c"},
    {"andslope;","\xe2\xa9\x98"}, {"andv;","\xe2\xa9\x9a"}, {"ang;","\xe2\x88\xa0"},
    {"ange;","\xe2\xa6\xa4"}, {"angle;","\xe2\x88\xa0"}, {"angmsd;","\xe2\x88\xa1"},
    {"angmsdaa;","\xe2\xa6\xa8"}, {"angmsdab;","\xe2\xa6\xa9"}, {"angmsdac;","\xe2\xa6\xaa"},
    {"angmsdad;","\xe2\xa6\xab"}, {"angmsdae;","\xe2\xa6\xac"}, {"angmsdaf;","\xe2\xa6\xad"},
    {"angmsdag;","\xe2\xa6\xae"}, {"angmsdah;","\xe2\xa6\xaf"}, {"angrt;","\xe2\x88\x9f"},
    {"angrtvb;","\xe2\x8a\xbe"}, {"angrtvbd;","\xe2\xa6\x9d"}, {"angsph;","\xe2\x88\xa2"},
    {"angst;","\xc3\x85"}, {"angzarr;","\xe2\x8d\xbc"}, {"aogon;","\xc4\x85"},
    {"aopf;","\xf0\x9d\x95\x92"}, {"ap;","\xe2\x89\x88"}, {"apE;","\xe2\xa9\xb0"},
    {"apacir;","\xe2\xa9\xaf"}, {"ape;","\xe2\x89\x8a"}, {"apid;","\xe2\x89\x8b"}, {"apos;","\x27"},
    {"approx;","\xe2\x89\x88"}, {"approxeq;","\xe2\x89\x8a"}, {"aring","\xc3\xa5"},
    {"aring;","\xc3\xa5"}, {"ascr;","\xf0\x9d\x92\xb6"}, {"ast;","\x2a"}, {"asymp;","\xe2\x89\x88"},
    {"asympeq;","\xe2\x89\x8d"}, {"atilde","\xc3\xa3"}, {"atilde;","\xc3\xa3"}, {"auml","\xc3\xa4"},
    {"auml;","\xc3\xa4"}, {"awconint;","\xe2\x88\xb3"}, {"awint;","\xe2\xa8\x91"},
    {"bNot;","\xe2\xab\xad"}, {"backcong;","\xe2\x89\x8c"}, {"backepsilon;","\xcf\xb6"},
    {"backprime;","\xe2\x80\xb5"}, {"backsim;","\xe2\x88\xbd"}, {"backsimeq;","\xe2\x8b\x8d"},
    {"barvee;","\xe2\x8a\xbd"}, {"barwed;","\xe2\x8c\x85"}, {"barwedge;","\xe2\x8c\x85"},
    {"bbrk;","\xe2\x8e\xb5"}, {"bbrktbrk;","\xe2\x8e\xb6"}, {"bcong;","\xe2\x89\x8c"},
    {"bcy;","\xd0\xb1"}, {"bdquo;","\xe2\x80\x9e"}, {"becaus;","\xe2\x88\xb5"},
    {"because;","\xe2\x88\xb5"}, {"bemptyv;","\xe2\xa6\xb0"}, {"bepsi;","\xcf\xb6"},
    {"bernou;","\xe2\x84\xac"}, {"beta;","\xce\xb2"}, {"beth;","\xe2\x84\xb6"},
    {"between;","\xe2\x89\xac"}, {"bfr;","\xf0\x9d\x94\x9f"}, {"bigcap;","\xe2\x8b\x82"},
    {"bigcirc;","\xe2\x97\xaf"}, {"bigcup;","\xe2\x8b\x83"}, {"bigodot;","\xe2\xa8\x80"},
    {"bigoplus;","\xe2\xa8\x81"}, {"bigotimes;","\xe2\xa8\x82"}, {"bigsqcup;","\xe2\xa8\x86"},
    {"bigstar;","\xe2\x98\x85"}, {"bigtriangledown;","\xe2\x96\xbd"},
    {"bigtriangleup;","\xe2\x96\xb3"}, {"biguplus;","\xe2\xa8\x84"}, {"bigvee;","\xe2\x8b\x81"},
    {"bigwedge;","\xe2\x8b\x80"}, {"bkarow;","\xe2\xa4\x8d"}, {"blacklozenge;","\xe2\xa7\xab"},
    {"blacksquare;","\xe2\x96\xaa"}, {"blacktriangle;","\xe2\x96\xb4"},
    {"blacktriangledown;","\xe2\x96\xbe"}, {"blacktriangleleft;","\xe2\x97\x82"},
    {"blacktriangleright;","\xe2\x96\xb8"}, {"blank;","\xe2\x90\xa3"}, {"blk12;","\xe2\x96\x92"},
    {"blk14;","\xe2\x96\x91"}, {"blk34;","\xe2\x96\x93"}, {"block;","\xe2\x96\x88"},
    {"bne;","\x3d\xe2\x83\xa5"}, {"bnequiv;","\xe2\x89\xa1\xe2\x83\xa5"}, {"bnot;","\xe2\x8c\x90"},
    {"bopf;","\xf0\x9d\x95\x93"}, {"bot;","\xe2\x8a\xa5"}, {"bottom;","\xe2\x8a\xa5"},
    {"bowtie;","\xe2\x8b\x88"}, {"boxDL;","\xe2\x95\x97"}, {"boxDR;","\xe2\x95\x94"},
    {"boxDl;","\xe2\x95\x96"}, {"boxDr;","\xe2\x95\x93"}, {"boxH;","\xe2\x95\x90"},
    {"boxHD;","\xe2\x95\xa6"}, {"boxHU;","\xe2\x95\xa9"}, {"boxHd;","\xe2\x95\xa4"},
    {"boxHu;","\xe2\x95\xa7"}, {"boxUL;","\xe2\x95\x9d"}, {"boxUR;","\xe2\x95\x9a"},
    {"boxUl;","\xe2\x95\x9c"}, {"boxUr;","\xe2\x95\x99"}, {"boxV;","\xe2\x95\x91"},
    {"boxVH;","\xe2\x95\xac"}, {"boxVL;","\xe2\x95\xa3"}, {"boxVR;","\xe2\x95\xa0"},
    {"boxVh;","\xe2\x95\xab"}, {"boxVl;","\xe2\x95\xa2"}, {"boxVr;","\xe2\x95\x9f"},
    {"boxbox;","\xe2\xa7\x89"}, {"boxdL;","\xe2\x95\x95"}, {"boxdR;","\xe2\x95\x92"},
    {"boxdl;","\xe2\x94\x90"}, {"boxdr;","\xe2\x94\x8c"}, {"boxh;","\xe2\x94\x80"},
    {"boxhD;","\xe2\x95\xa5"}, {"boxhU;","\xe2\x95\xa8"}, {"boxhd;","\xe2\x94\xac"},
    {"boxhu;","\xe2\x94\xb4"}, {"boxminus;","\xe2\x8a\x9f"}, {"boxplus;","\xe2\x8a\x9e"},
    {"boxtimes;","\xe2\x8a\xa0"}, {"boxuL;","\xe2\x95\x9b"}, {"boxuR;","\xe2\x95\x98"},
    {"boxul;","\xe2\x94\x98"}, {"boxur;","\xe2\x94\x94"}, {"boxv;","\xe2\x94\x82"},
    {"boxvH;","\xe2\x95\xaa"}, {"boxvL;","\xe2\x95\xa1"}, {"boxvR;","\xe2\x95\x9e"},
    {"boxvh;","\xe2\x94\xbc"}, {"boxvl;","\xe2\x94\xa4"}, {"boxvr;","\xe2\x94\x9c"},
    {"bprime;","\xe2\x80\xb5"}, {"breve;","\xcb\x98"}, {"brvbar","\xc2\xa6"},
    {"brvbar;","\xc2\xa6"}, {"bscr;","\xf0\x9d\x92\xb7"}, {"bsemi;","\xe2\x81\x8f"},
    {"bsim;","\xe2\x88\xbd"}, {"bsime;","\xe2\x8b\x8d"}, {"bsol;","\x5c"},
    {"bsolb;","\xe2\xa7\x85"}, {"bsolhsub;","\xe2\x9f\x88"}, {"bull;","\xe2\x80\xa2"},
    {"bullet;","\xe2\x80\xa2"}, {"bump;","\xe2\x89\x8e"}, {"bumpE;","\xe2\xaa\xae"},
    {"bumpe;","\xe2\x89\x8f"}, {"bumpeq;","\xe2\x89\x8f"}, {"cacute;","\xc4\x87"},
    {"cap;","\xe2\x88\xa9"}, {"capand;","\xe2\xa9\x84"}, {"capbrcup;","\xe2\xa9\x89"},
    {"capcap;","\xe2\xa9\x8b"}, {"capcup;","\xe2\xa9\x87"}, {"capdot;","\xe2\xa9\x80"},
    {"caps;","\xe2\x88\xa9\xef\xb8\x80"}, {"caret;","\xe2\x81\x81"}, {"caron;","\xcb\x87"},
    {"ccaps;","\xe2\xa9\x8d"}, {"ccaron;","\xc4\x8d"}, {"ccedil","\xc3\xa7"},
    {"ccedil;","\xc3\xa7"}, {"ccirc;","\xc4\x89"}, {"ccups;","\xe2\xa9\x8c"},
    {"ccupssm;","\xe2\xa9\x90"}, {"cdot;","\xc4\x8b"}, {"cedil","\xc2\xb8"}, {"cedil;","\xc2\xb8"},
    {"cemptyv;","\xe2\xa6\xb2"}, {"cent","\xc2\xa2"}, {"cent;","\xc2\xa2"},
    {"centerdot;","\xc2\xb7"}, {"cfr;","\xf0\x9d\x94\xa0"}, {"chcy;","\xd1\x87"},
    {"check;","\xe2\x9c\x93"}, {"checkmark;","\xe2\x9c\x93"}, {"chi;","\xcf\x87"},
    {"cir;","\xe2\x97\x8b"}, {"cirE;","\xe2\xa7\x83"}, {"circ;","\xcb\x86"},
    {"circeq;","\xe2\x89\x97"}, {"circlearrowleft;","\xe2\x86\xba"},
    {"circlearrowright;","\xe2\x86\xbb"}, {"circledR;","\xc2\xae"}, {"circledS;","\xe2\x93\x88"},
    {"circledast;","\xe2\x8a\x9b"}, {"circledcirc;","\xe2\x8a\x9a"},
    {"circleddash;","\xe2\x8a\x9d"}, {"cire;","\xe2\x89\x97"}, {"cirfnint;","\xe2\xa8\x90"},
    {"cirmid;","\xe2\xab\xaf"}, {"cirscir;","\xe2\xa7\x82"}, {"clubs;","\xe2\x99\xa3"},
    {"clubsuit;","\xe2\x99\xa3"}, {"colon;","\x3a"}, {"colone;","\xe2\x89\x94"},
    {"coloneq;","\xe2\x89\x94"}, {"comma;","\x2c"}, {"commat;","\x40"}, {"comp;","\xe2\x88\x81"},
    {"compfn;","\xe2\x88\x98"}, {"complement;","\xe2\x88\x81"}, {"complexes;","\xe2\x84\x82"},
    {"cong;","\xe2\x89\x85"}, {"congdot;","\xe2\xa9\xad"}, {"conint;","\xe2\x88\xae"},
    {"copf;","\xf0\x9d\x95\x94"}, {"coprod;","\xe2\x88\x90"}, {"copy","\xc2\xa9"},
    {"copy;","\xc2\xa9"}, {"copysr;","\xe2\x84\x97"}, {"crarr;","\xe2\x86\xb5"},
    {"cross;","\xe2\x9c\x97"}, {"cscr;","\xf0\x9d\x92\xb8"}, {"csub;","\xe2\xab\x8f"},
    {"csube;","\xe2\xab\x91"}, {"csup;","\xe2\xab\x90"}, {"csupe;","\xe2\xab\x92"},
    {"ctdot;","\xe2\x8b\xaf"}, {"cudarrl;","\xe2\xa4\xb8"}, {"cudarrr;","\xe2\xa4\xb5"},
    {"cuepr;","\xe2\x8b\x9e"}, {"cuesc;","\xe2\x8b\x9f"}, {"cularr;","\xe2\x86\xb6"},
    {"cularrp;","\xe2\xa4\xbd"}, {"cup;","\xe2\x88\xaa"}, {"cupbrcap;","\xe2\xa9\x88"},
    {"cupcap;","\xe2\xa9\x86"}, {"cupcup;","\xe2\xa9\x8a"}, {"cupdot;","\xe2\x8a\x8d"},
    {"cupor;","\xe2\xa9\x85"}, {"cups;","\xe2\x88\xaa\xef\xb8\x80"}, {"curarr;","\xe2\x86\xb7"},
    {"curarrm;","\xe2\xa4\xbc"}, {"curlyeqprec;","\xe2\x8b\x9e"}, {"curlyeqsucc;","\xe2\x8b\x9f"},
    {"curlyvee;","\xe2\x8b\x8e"}, {"curlywedge;","\xe2\x8b\x8f"}, {"curren","\xc2\xa4"},
    {"curren;","\xc2\xa4"}, {"curvearrowleft;","\xe2\x86\xb6"}, {"curvearrowright;","\xe2\x86\xb7"},
    {"cuvee;","\xe2\x8b\x8e"}, {"cuwed;","\xe2\x8b\x8f"}, {"cwconint;","\xe2\x88\xb2"},
    {"cwint;","\xe2\x88\xb1"}, {"cylcty;","\xe2\x8c\xad"}, {"dArr;","\xe2\x87\x93"},
    {"dHar;","\xe2\xa5\xa5"}, {"dagger;","\xe2\x80\xa0"}, {"daleth;","\xe2\x84\xb8"},
    {"darr;","\xe2\x86\x93"}, {"dash;","\xe2\x80\x90"}, {"dashv;","\xe2\x8a\xa3"},
    {"dbkarow;","\xe2\xa4\x8f"}, {"dblac;","\xcb\x9d"}, {"dcaron;","\xc4\x8f"}, {"dcy;","\xd0\xb4"},
    {"dd;","\xe2\x85\x86"}, {"ddagger;","\xe2\x80\xa1"}, {"ddarr;","\xe2\x87\x8a"},
    {"ddotseq;","\xe2\xa9\xb7"}, {"deg","\xc2\xb0"}, {"deg;","\xc2\xb0"}, {"delta;","\xce\xb4"},
    {"demptyv;","\xe2\xa6\xb1"}, {"dfisht;","\xe2\xa5\xbf"}, {"dfr;","\xf0\x9d\x94\xa1"},
    {"dharl;","\xe2\x87\x83"}, {"dharr;","\xe2\x87\x82"}, {"diam;","\xe2\x8b\x84"},
    {"diamond;","\xe2\x8b\x84"}, {"diamondsuit;","\xe2\x99\xa6"}, {"diams;","\xe2\x99\xa6"},
    {"die;","\xc2\xa8"}, {"digamma;","\xcf\x9d"}, {"disin;","\xe2\x8b\xb2"}, {"div;","\xc3\xb7"},
    {"divide","\xc3\xb7"}, {"divide;","\xc3\xb7"}, {"divideontimes;","\xe2\x8b\x87"},
    {"divonx;","\xe2\x8b\x87"}, {"djcy;","\xd1\x92"}, {"dlcorn;","\xe2\x8c\x9e"},
    {"dlcrop;","\xe2\x8c\x8d"}, {"dollar;","\x24"}, {"dopf;","\xf0\x9d\x95\x95"},
    {"dot;","\xcb\x99"}, {"doteq;","\xe2\x89\x90"}, {"doteqdot;","\xe2\x89\x91"},
    {"dotminus;","\xe2\x88\xb8"}, {"dotplus;","\xe2\x88\x94"}, {"dotsquare;","\xe2\x8a\xa1"},
    {"doublebarwedge;","\xe2\x8c\x86"}, {"downarrow;","\xe2\x86\x93"},
    {"downdownarrows;","\xe2\x87\x8a"}, {"downharpoonleft;","\xe2\x87\x83"},
    {"downharpoonright;","\xe2\x87\x82"}, {"drbkarow;","\xe2\xa4\x90"}, {"drcorn;","\xe2\x8c\x9f"},
    {"drcrop;","\xe2\x8c\x8c"}, {"dscr;","\xf0\x9d\x92\xb9"}, {"dscy;","\xd1\x95"},
    {"dsol;","\xe2\xa7\xb6"}, {"dstrok;","\xc4\x91"}, {"dtdot;","\xe2\x8b\xb1"},
    {"dtri;","\xe2\x96\xbf"}, {"dtrif;","\xe2\x96\xbe"}, {"duarr;","\xe2\x87\xb5"},
    {"duhar;","\xe2\xa5\xaf"}, {"dwangle;","\xe2\xa6\xa6"}, {"dzcy;","\xd1\x9f"},
    {"dzigrarr;","\xe2\x9f\xbf"}, {"eDDot;","\xe2\xa9\xb7"}, {"eDot;","\xe2\x89\x91"},
    {"eacute","\xc3\xa9"}, {"eacute;","\xc3\xa9"}, {"easter;","\xe2\xa9\xae"},
    {"ecaron;","\xc4\x9b"}, {"ecir;","\xe2\x89\x96"}, {"ecirc","\xc3\xaa"}, {"ecirc;","\xc3\xaa"},
    {"ecolon;","\xe2\x89\x95"}, {"ecy;","\xd1\x8d"}, {"edot;","\xc4\x97"}, {"ee;","\xe2\x85\x87"},
    {"efDot;","\xe2\x89\x92"}, {"efr;","\xf0\x9d\x94\xa2"}, {"eg;","\xe2\xaa\x9a"},
    {"egrave","\xc3\xa8"}, {"egrave;","\xc3\xa8"}, {"egs;","\xe2\xaa\x96"},
    {"egsdot;","\xe2\xaa\x98"}, {"el;","\xe2\xaa\x99"}, {"elinters;","\xe2\x8f\xa7"},
    {"ell;","\xe2\x84\x93"}, {"els;","\xe2\xaa\x95"}, {"elsdot;","\xe2\xaa\x97"},
    {"emacr;","\xc4\x93"}, {"empty;","\xe2\x88\x85"}, {"emptyset;","\xe2\x88\x85"},
    {"emptyv;","\xe2\x88\x85"}, {"emsp13;","\xe2\x80\x84"}, {"emsp14;","\xe2\x80\x85"},
    {"emsp;","\xe2\x80\x83"}, {"eng;","\xc5\x8b"}, {"ensp;","\xe2\x80\x82"}, {"eogon;","\xc4\x99"},
    {"eopf;","\xf0\x9d\x95\x96"}, {"epar;","\xe2\x8b\x95"}, {"eparsl;","\xe2\xa7\xa3"},
    {"eplus;","\xe2\xa9\xb1"}, {"epsi;","\xce\xb5"}, {"epsilon;","\xce\xb5"}, {"epsiv;","\xcf\xb5"},
    {"eqcirc;","\xe2\x89\x96"}, {"eqcolon;","\xe2\x89\x95"}, {"eqsim;","\xe2\x89\x82"},
    {"eqslantgtr;","\xe2\xaa\x96"}, {"eqslantless;","\xe2\xaa\x95"}, {"equals;","\x3d"},
    {"equest;","\xe2\x89\x9f"}, {"equiv;","\xe2\x89\xa1"}, {"equivDD;","\xe2\xa9\xb8"},
    {"eqvparsl;","\xe2\xa7\xa5"}, {"erDot;","\xe2\x89\x93"}, {"erarr;","\xe2\xa5\xb1"},
    {"escr;","\xe2\x84\xaf"}, {"esdot;","\xe2\x89\x90"}, {"esim;","\xe2\x89\x82"},
    {"eta;","\xce\xb7"}, {"eth","\xc3\xb0"}, {"eth;","\xc3\xb0"}, {"euml","\xc3\xab"},
    {"euml;","\xc3\xab"}, {"euro;","\xe2\x82\xac"}, {"excl;","\x21"}, {"exist;","\xe2\x88\x83"},
    {"expectation;","\xe2\x84\xb0"}, {"exponentiale;","\xe2\x85\x87"},
    {"fallingdotseq;","\xe2\x89\x92"}, {"fcy;","\xd1\x84"}, {"female;","\xe2\x99\x80"},
    {"ffilig;","\xef\xac\x83"}, {"fflig;","\xef\xac\x80"}, {"ffllig;","\xef\xac\x84"},
    {"ffr;","\xf0\x9d\x94\xa3"}, {"filig;","\xef\xac\x81"}, {"fjlig;","\x66\x6a"},
    {"flat;","\xe2\x99\xad"}, {"fllig;","\xef\xac\x82"}, {"fltns;","\xe2\x96\xb1"},
    {"fnof;","\xc6\x92"}, {"fopf;","\xf0\x9d\x95\x97"}, {"forall;","\xe2\x88\x80"},
    {"fork;","\xe2\x8b\x94"}, {"forkv;","\xe2\xab\x99"}, {"fpartint;","\xe2\xa8\x8d"},
    {"frac12","\xc2\xbd"}, {"frac12;","\xc2\xbd"}, {"frac13;","\xe2\x85\x93"},
    {"frac14","\xc2\xbc"}, {"frac14;","\xc2\xbc"}, {"frac15;","\xe2\x85\x95"},
    {"frac16;","\xe2\x85\x99"}, {"frac18;","\xe2\x85\x9b"}, {"frac23;","\xe2\x85\x94"},
    {"frac25;","\xe2\x85\x96"}, {"frac34","\xc2\xbe"}, {"frac34;","\xc2\xbe"},
    {"frac35;","\xe2\x85\x97"}, {"frac38;","\xe2\x85\x9c"}, {"frac45;","\xe2\x85\x98"},
    {"frac56;","\xe2\x85\x9a"}, {"frac58;","\xe2\x85\x9d"}, {"frac78;","\xe2\x85\x9e"},
    {"frasl;","\xe2\x81\x84"}, {"frown;","\xe2\x8c\xa2"}, {"fscr;","\xf0\x9d\x92\xbb"},
    {"gE;","\xe2\x89\xa7"}, {"gEl;","\xe2\xaa\x8c"}, {"gacute;","\xc7\xb5"}, {"gamma;","\xce\xb3"},
    {"gammad;","\xcf\x9d"}, {"gap;","\xe2\xaa\x86"}, {"gbreve;","\xc4\x9f"}, {"gcirc;","\xc4\x9d"},
    {"gcy;","\xd0\xb3"}, {"gdot;","\xc4\xa1"}, {"ge;","\xe2\x89\xa5"}, {"gel;","\xe2\x8b\x9b"},
    {"geq;","\xe2\x89\xa5"}, {"geqq;","\xe2\x89\xa7"}, {"geqslant;","\xe2\xa9\xbe"},
    {"ges;","\xe2\xa9\xbe"}, {"gescc;","\xe2\xaa\xa9"}, {"gesdot;","\xe2\xaa\x80"},
    {"gesdoto;","\xe2\xaa\x82"}, {"gesdotol;","\xe2\xaa\x84"}, {"gesl;","\xe2\x8b\x9b\xef\xb8\x80"},
    {"gesles;","\xe2\xaa\x94"}, {"gfr;","\xf0\x9d\x94\xa4"}, {"gg;","\xe2\x89\xab"},
    {"ggg;","\xe2\x8b\x99"}, {"gimel;","\xe2\x84\xb7"}, {"gjcy;","\xd1\x93"},
    {"gl;","\xe2\x89\xb7"}, {"glE;","\xe2\xaa\x92"}, {"gla;","\xe2\xaa\xa5"},
    {"glj;","\xe2\xaa\xa4"}, {"gnE;","\xe2\x89\xa9"}, {"gnap;","\xe2\xaa\x8a"},
    {"gnapprox;","\xe2\xaa\x8a"}, {"gne;","\xe2\xaa\x88"}, {"gneq;","\xe2\xaa\x88"},
    {"gneqq;","\xe2\x89\xa9"}, {"gnsim;","\xe2\x8b\xa7"}, {"gopf;","\xf0\x9d\x95\x98"},
    {"grave;","\x60"}, {"gscr;","\xe2\x84\x8a"}, {"gsim;","\xe2\x89\xb3"},
    {"gsime;","\xe2\xaa\x8e"}, {"gsiml;","\xe2\xaa\x90"}, {"gt","\x3e"}, {"gt;","\x3e"},
    {"gtcc;","\xe2\xaa\xa7"}, {"gtcir;","\xe2\xa9\xba"}, {"gtdot;","\xe2\x8b\x97"},
    {"gtlPar;","\xe2\xa6\x95"}, {"gtquest;","\xe2\xa9\xbc"}, {"gtrapprox;","\xe2\xaa\x86"},
    {"gtrarr;","\xe2\xa5\xb8"}, {"gtrdot;","\xe2\x8b\x97"}, {"gtreqless;","\xe2\x8b\x9b"},
    {"gtreqqless;","\xe2\xaa\x8c"}, {"gtrless;","\xe2\x89\xb7"}, {"gtrsim;","\xe2\x89\xb3"},
    {"gvertneqq;","\xe2\x89\xa9\xef\xb8\x80"}, {"gvnE;","\xe2\x89\xa9\xef\xb8\x80"},
    {"hArr;","\xe2\x87\x94"}, {"hairsp;","\xe2\x80\x8a"}, {"half;","\xc2\xbd"},
    {"hamilt;","\xe2\x84\x8b"}, {"hardcy;","\xd1\x8a"}, {"harr;","\xe2\x86\x94"},
    {"harrcir;","\xe2\xa5\x88"}, {"harrw;","\xe2\x86\xad"}, {"hbar;","\xe2\x84\x8f"},
    {"hcirc;","\xc4\xa5"}, {"hearts;","\xe2\x99\xa5"}, {"heartsuit;","\xe2\x99\xa5"},
    {"hellip;","\xe2\x80\xa6"}, {"hercon;","\xe2\x8a\xb9"}, {"hfr;","\xf0\x9d\x94\xa5"},
    {"hksearow;","\xe2\xa4\xa5"}, {"hkswarow;","\xe2\xa4\xa6"}, {"hoarr;","\xe2\x87\xbf"},
    {"homtht;","\xe2\x88\xbb"}, {"hookleftarrow;","\xe2\x86\xa9"},
    {"hookrightarrow;","\xe2\x86\xaa"}, {"hopf;","\xf0\x9d\x95\x99"}, {"horbar;","\xe2\x80\x95"},
    {"hscr;","\xf0\x9d\x92\xbd"}, {"hslash;","\xe2\x84\x8f"}, {"hstrok;","\xc4\xa7"},
    {"hybull;","\xe2\x81\x83"}, {"hyphen;","\xe2\x80\x90"}, {"iacute","\xc3\xad"},
    {"iacute;","\xc3\xad"}, {"ic;","\xe2\x81\xa3"}, {"icirc","\xc3\xae"}, {"icirc;","\xc3\xae"},
    {"icy;","\xd0\xb8"}, {"iecy;","\xd0\xb5"}, {"iexcl","\xc2\xa1"}, {"iexcl;","\xc2\xa1"},
    {"iff;","\xe2\x87\x94"}, {"ifr;","\xf0\x9d\x94\xa6"}, {"igrave","\xc3\xac"},
    {"igrave;","\xc3\xac"}, {"ii;","\xe2\x85\x88"}, {"iiiint;","\xe2\xa8\x8c"},
    {"iiint;","\xe2\x88\xad"}, {"iinfin;","\xe2\xa7\x9c"}, {"iiota;","\xe2\x84\xa9"},
    {"ijlig;","\xc4\xb3"}, {"imacr;","\xc4\xab"}, {"image;","\xe2\x84\x91"},
    {"imagline;","\xe2\x84\x90"}, {"imagpart;","\xe2\x84\x91"}, {"imath;","\xc4\xb1"},
    {"imof;","\xe2\x8a\xb7"}, {"imped;","\xc6\xb5"}, {"in;","\xe2\x88\x88"},
    {"incare;","\xe2\x84\x85"}, {"infin;","\xe2\x88\x9e"}, {"infintie;","\xe2\xa7\x9d"},
    {"inodot;","\xc4\xb1"}, {"int;","\xe2\x88\xab"}, {"intcal;","\xe2\x8a\xba"},
    {"integers;","\xe2\x84\xa4"}, {"intercal;","\xe2\x8a\xba"}, {"intlarhk;","\xe2\xa8\x97"},
    {"intprod;","\xe2\xa8\xbc"}, {"iocy;","\xd1\x91"}, {"iogon;","\xc4\xaf"},
    {"iopf;","\xf0\x9d\x95\x9a"}, {"iota;","\xce\xb9"}, {"iprod;","\xe2\xa8\xbc"},
    {"iquest","\xc2\xbf"}, {"iquest;","\xc2\xbf"}, {"iscr;","\xf0\x9d\x92\xbe"},
    {"isin;","\xe2\x88\x88"}, {"isinE;","\xe2\x8b\xb9"}, {"isindot;","\xe2\x8b\xb5"},
    {"isins;","\xe2\x8b\xb4"}, {"isinsv;","\xe2\x8b\xb3"}, {"isinv;","\xe2\x88\x88"},
    {"it;","\xe2\x81\xa2"}, {"itilde;","\xc4\xa9"}, {"iukcy;","\xd1\x96"}, {"iuml","\xc3\xaf"},
    {"iuml;","\xc3\xaf"}, {"jcirc;","\xc4\xb5"}, {"jcy;","\xd0\xb9"}, {"jfr;","\xf0\x9d\x94\xa7"},
    {"jmath;","\xc8\xb7"}, {"jopf;","\xf0\x9d\x95\x9b"}, {"jscr;","\xf0\x9d\x92\xbf"},
    {"jsercy;","\xd1\x98"}, {"jukcy;","\xd1\x94"}, {"kappa;","\xce\xba"}, {"kappav;","\xcf\xb0"},
    {"kcedil;","\xc4\xb7"}, {"kcy;","\xd0\xba"}, {"kfr;","\xf0\x9d\x94\xa8"},
    {"kgreen;","\xc4\xb8"}, {"khcy;","\xd1\x85"}, {"kjcy;","\xd1\x9c"},
    {"kopf;","\xf0\x9d\x95\x9c"}, {"kscr;","\xf0\x9d\x93\x80"}, {"lAarr;","\xe2\x87\x9a"},
    {"lArr;","\xe2\x87\x90"}, {"lAtail;","\xe2\xa4\x9b"}, {"lBarr;","\xe2\xa4\x8e"},
    {"lE;","\xe2\x89\xa6"}, {"lEg;","\xe2\xaa\x8b"}, {"lHar;","\xe2\xa5\xa2"},
    {"lacute;","\xc4\xba"}, {"laemptyv;","\xe2\xa6\xb4"}, {"lagran;","\xe2\x84\x92"},
    {"lambda;","\xce\xbb"}, {"lang;","\xe2\x9f\xa8"}, {"langd;","\xe2\xa6\x91"},
    {"langle;","\xe2\x9f\xa8"}, {"lap;","\xe2\xaa\x85"}, {"laquo","\xc2\xab"},
    {"laquo;","\xc2\xab"}, {"larr;","\xe2\x86\x90"}, {"larrb;","\xe2\x87\xa4"},
    {"larrbfs;","\xe2\xa4\x9f"}, {"larrfs;","\xe2\xa4\x9d"}, {"larrhk;","\xe2\x86\xa9"},
    {"larrlp;","\xe2\x86\xab"}, {"larrpl;","\xe2\xa4\xb9"}, {"larrsim;","\xe2\xa5\xb3"},
    {"larrtl;","\xe2\x86\xa2"}, {"lat;","\xe2\xaa\xab"}, {"latail;","\xe2\xa4\x99"},
    {"late;","\xe2\xaa\xad"}, {"lates;","\xe2\xaa\xad\xef\xb8\x80"}, {"lbarr;","\xe2\xa4\x8c"},
    {"lbbrk;","\xe2\x9d\xb2"}, {"lbrace;","\x7b"}, {"lbrack;","\x5b"}, {"lbrke;","\xe2\xa6\x8b"},
    {"lbrksld;","\xe2\xa6\x8f"}, {"lbrkslu;","\xe2\xa6\x8d"}, {"lcaron;","\xc4\xbe"},
    {"lcedil;","\xc4\xbc"}, {"lceil;","\xe2\x8c\x88"}, {"lcub;","\x7b"}, {"lcy;","\xd0\xbb"},
    {"ldca;","\xe2\xa4\xb6"}, {"ldquo;","\xe2\x80\x9c"}, {"ldquor;","\xe2\x80\x9e"},
    {"ldrdhar;","\xe2\xa5\xa7"}, {"ldrushar;","\xe2\xa5\x8b"}, {"ldsh;","\xe2\x86\xb2"},
    {"le;","\xe2\x89\xa4"}, {"leftarrow;","\xe2\x86\x90"}, {"leftarrowtail;","\xe2\x86\xa2"},
    {"leftharpoondown;","\xe2\x86\xbd"}, {"leftharpoonup;","\xe2\x86\xbc"},
    {"leftleftarrows;","\xe2\x87\x87"}, {"leftrightarrow;","\xe2\x86\x94"},
    {"leftrightarrows;","\xe2\x87\x86"}, {"leftrightharpoons;","\xe2\x87\x8b"},
    {"leftrightsquigarrow;","\xe2\x86\xad"}, {"leftthreetimes;","\xe2\x8b\x8b"},
    {"leg;","\xe2\x8b\x9a"}, {"leq;","\xe2\x89\xa4"}, {"leqq;","\xe2\x89\xa6"},
    {"leqslant;","\xe2\xa9\xbd"}, {"les;","\xe2\xa9\xbd"}, {"lescc;","\xe2\xaa\xa8"},
    {"lesdot;","\xe2\xa9\xbf"}, {"lesdoto;","\xe2\xaa\x81"}, {"lesdotor;","\xe2\xaa\x83"},
    {"lesg;","\xe2\x8b\x9a\xef\xb8\x80"}, {"lesges;","\xe2\xaa\x93"},
    {"lessapprox;","\xe2\xaa\x85"}, {"lessdot;","\xe2\x8b\x96"}, {"lesseqgtr;","\xe2\x8b\x9a"},
    {"lesseqqgtr;","\xe2\xaa\x8b"}, {"lessgtr;","\xe2\x89\xb6"}, {"lesssim;","\xe2\x89\xb2"},
    {"lfisht;","\xe2\xa5\xbc"}, {"lfloor;","\xe2\x8c\x8a"}, {"lfr;","\xf0\x9d\x94\xa9"},
    {"lg;","\xe2\x89\xb6"}, {"lgE;","\xe2\xaa\x91"}, {"lhard;","\xe2\x86\xbd"},
    {"lharu;","\xe2\x86\xbc"}, {"lharul;","\xe2\xa5\xaa"}, {"lhblk;","\xe2\x96\x84"},
    {"ljcy;","\xd1\x99"}, {"ll;","\xe2\x89\xaa"}, {"llarr;","\xe2\x87\x87"},
    {"llcorner;","\xe2\x8c\x9e"}, {"llhard;","\xe2\xa5\xab"}, {"lltri;","\xe2\x97\xba"},
    {"lmidot;","\xc5\x80"}, {"lmoust;","\xe2\x8e\xb0"}, {"lmoustache;","\xe2\x8e\xb0"},
    {"lnE;","\xe2\x89\xa8"}, {"lnap;","\xe2\xaa\x89"}, {"lnapprox;","\xe2\xaa\x89"},
    {"lne;","\xe2\xaa\x87"}, {"lneq;","\xe2\xaa\x87"}, {"lneqq;","\xe2\x89\xa8"},
    {"lnsim;","\xe2\x8b\xa6"}, {"loang;","\xe2\x9f\xac"}, {"loarr;","\xe2\x87\xbd"},
    {"lobrk;","\xe2\x9f\xa6"}, {"longleftarrow;","\xe2\x9f\xb5"},
    {"longleftrightarrow;","\xe2\x9f\xb7"}, {"longmapsto;","\xe2\x9f\xbc"},
    {"longrightarrow;","\xe2\x9f\xb6"}, {"looparrowleft;","\xe2\x86\xab"},
    {"looparrowright;","\xe2\x86\xac"}, {"lopar;","\xe2\xa6\x85"}, {"lopf;","\xf0\x9d\x95\x9d"},
    {"loplus;","\xe2\xa8\xad"}, {"lotimes;","\xe2\xa8\xb4"}, {"lowast;","\xe2\x88\x97"},
    {"lowbar;","\x5f"}, {"loz;","\xe2\x97\x8a"}, {"lozenge;","\xe2\x97\x8a"},
    {"lozf;","\xe2\xa7\xab"}, {"lpar;","\x28"}, {"lparlt;","\xe2\xa6\x93"},
    {"lrarr;","\xe2\x87\x86"}, {"lrcorner;","\xe2\x8c\x9f"}, {"lrhar;","\xe2\x87\x8b"},
    {"lrhard;","\xe2\xa5\xad"}, {"lrm;","\xe2\x80\x8e"}, {"lrtri;","\xe2\x8a\xbf"},
    {"lsaquo;","\xe2\x80\xb9"}, {"lscr;","\xf0\x9d\x93\x81"}, {"lsh;","\xe2\x86\xb0"},
    {"lsim;","\xe2\x89\xb2"}, {"lsime;","\xe2\xaa\x8d"}, {"lsimg;","\xe2\xaa\x8f"},
    {"lsqb;","\x5b"}, {"lsquo;","\xe2\x80\x98"}, {"lsquor;","\xe2\x80\x9a"}, {"lstrok;","\xc5\x82"},
    {"lt","\x3c"}, {"lt;","\x3c"}, {"ltcc;","\xe2\xaa\xa6"}, {"ltcir;","\xe2\xa9\xb9"},
    {"ltdot;","\xe2\x8b\x96"}, {"lthree;","\xe2\x8b\x8b"}, {"ltimes;","\xe2\x8b\x89"},
    {"ltlarr;","\xe2\xa5\xb6"}, {"ltquest;","\xe2\xa9\xbb"}, {"ltrPar;","\xe2\xa6\x96"},
    {"ltri;","\xe2\x97\x83"}, {"ltrie;","\xe2\x8a\xb4"}, {"ltrif;","\xe2\x97\x82"},
    {"lurdshar;","\xe2\xa5\x8a"}, {"luruhar;","\xe2\xa5\xa6"},
    {"lvertneqq;","\xe2\x89\xa8\xef\xb8\x80"}, {"lvnE;","\xe2\x89\xa8\xef\xb8\x80"},
    {"mDDot;","\xe2\x88\xba"}, {"macr","\xc2\xaf"}, {"macr;","\xc2\xaf"}, {"male;","\xe2\x99\x82"},
    {"malt;","\xe2\x9c\xa0"}, {"maltese;","\xe2\x9c\xa0"}, {"map;","\xe2\x86\xa6"},
    {"mapsto;","\xe2\x86\xa6"}, {"mapstodown;","\xe2\x86\xa7"}, {"mapstoleft;","\xe2\x86\xa4"},
    {"mapstoup;","\xe2\x86\xa5"}, {"marker;","\xe2\x96\xae"}, {"mcomma;","\xe2\xa8\xa9"},
    {"mcy;","\xd0\xbc"}, {"mdash;","\xe2\x80\x94"}, {"measuredangle;","\xe2\x88\xa1"},
    {"mfr;","\xf0\x9d\x94\xaa"}, {"mho;","\xe2\x84\xa7"}, {"micro","\xc2\xb5"},
    {"micro;","\xc2\xb5"}, {"mid;","\xe2\x88\xa3"}, {"midast;","\x2a"}, {"midcir;","\xe2\xab\xb0"},
    {"middot","\xc2\xb7"}, {"middot;","\xc2\xb7"}, {"minus;","\xe2\x88\x92"},
    {"minusb;","\xe2\x8a\x9f"}, {"minusd;","\xe2\x88\xb8"}, {"minusdu;","\xe2\xa8\xaa"},
    {"mlcp;","\xe2\xab\x9b"}, {"mldr;","\xe2\x80\xa6"}, {"mnplus;","\xe2\x88\x93"},
    {"models;","\xe2\x8a\xa7"}, {"mopf;","\xf0\x9d\x95\x9e"}, {"mp;","\xe2\x88\x93"},
    {"mscr;","\xf0\x9d\x93\x82"}, {"mstpos;","\xe2\x88\xbe"}, {"mu;","\xce\xbc"},
    {"multimap;","\xe2\x8a\xb8"}, {"mumap;","\xe2\x8a\xb8"}, {"nGg;","\xe2\x8b\x99\xcc\xb8"},
    {"nGt;","\xe2\x89\xab\xe2\x83\x92"}, {"nGtv;","\xe2\x89\xab\xcc\xb8"},
    {"nLeftarrow;","\xe2\x87\x8d"}, {"nLeftrightarrow;","\xe2\x87\x8e"},
    {"nLl;","\xe2\x8b\x98\xcc\xb8"}, {"nLt;","\xe2\x89\xaa\xe2\x83\x92"},
    {"nLtv;","\xe2\x89\xaa\xcc\xb8"}, {"nRightarrow;","\xe2\x87\x8f"}, {"nVDash;","\xe2\x8a\xaf"},
    {"nVdash;","\xe2\x8a\xae"}, {"nabla;","\xe2\x88\x87"}, {"nacute;","\xc5\x84"},
    {"nang;","\xe2\x88\xa0\xe2\x83\x92"}, {"nap;","\xe2\x89\x89"}, {"napE;","\xe2\xa9\xb0\xcc\xb8"},
    {"napid;","\xe2\x89\x8b\xcc\xb8"}, {"napos;","\xc5\x89"}, {"napprox;","\xe2\x89\x89"},
    {"natur;","\xe2\x99\xae"}, {"natural;","\xe2\x99\xae"}, {"naturals;","\xe2\x84\x95"},
    {"nbsp","\xc2\xa0"}, {"nbsp;","\xc2\xa0"}, {"nbump;","\xe2\x89\x8e\xcc\xb8"},
    {"nbumpe;","\xe2\x89\x8f\xcc\xb8"}, {"ncap;","\xe2\xa9\x83"}, {"ncaron;","\xc5\x88"},
    {"ncedil;","\xc5\x86"}, {"ncong;","\xe2\x89\x87"}, {"ncongdot;","\xe2\xa9\xad\xcc\xb8"},
    {"ncup;","\xe2\xa9\x82"}, {"ncy;","\xd0\xbd"}, {"ndash;","\xe2\x80\x93"},
    {"ne;","\xe2\x89\xa0"}, {"neArr;","\xe2\x87\x97"}, {"nearhk;","\xe2\xa4\xa4"},
    {"nearr;","\xe2\x86\x97"}, {"nearrow;","\xe2\x86\x97"}, {"nedot;","\xe2\x89\x90\xcc\xb8"},
    {"nequiv;","\xe2\x89\xa2"}, {"nesear;","\xe2\xa4\xa8"}, {"nesim;","\xe2\x89\x82\xcc\xb8"},
    {"nexist;","\xe2\x88\x84"}, {"nexists;","\xe2\x88\x84"}, {"nfr;","\xf0\x9d\x94\xab"},
    {"ngE;","\xe2\x89\xa7\xcc\xb8"}, {"nge;","\xe2\x89\xb1"}, {"ngeq;","\xe2\x89\xb1"},
    {"ngeqq;","\xe2\x89\xa7\xcc\xb8"}, {"ngeqslant;","\xe2\xa9\xbe\xcc\xb8"},
    {"nges;","\xe2\xa9\xbe\xcc\xb8"}, {"ngsim;","\xe2\x89\xb5"}, {"ngt;","\xe2\x89\xaf"},
    {"ngtr;","\xe2\x89\xaf"}, {"nhArr;","\xe2\x87\x8e"}, {"nharr;","\xe2\x86\xae"},
    {"nhpar;","\xe2\xab\xb2"}, {"ni;","\xe2\x88\x8b"}, {"nis;","\xe2\x8b\xbc"},
    {"nisd;","\xe2\x8b\xba"}, {"niv;","\xe2\x88\x8b"}, {"njcy;","\xd1\x9a"},
    {"nlArr;","\xe2\x87\x8d"}, {"nlE;","\xe2\x89\xa6\xcc\xb8"}, {"nlarr;","\xe2\x86\x9a"},
    {"nldr;","\xe2\x80\xa5"}, {"nle;","\xe2\x89\xb0"}, {"nleftarrow;","\xe2\x86\x9a"},
    {"nleftrightarrow;","\xe2\x86\xae"}, {"nleq;","\xe2\x89\xb0"},
    {"nleqq;","\xe2\x89\xa6\xcc\xb8"}, {"nleqslant;","\xe2\xa9\xbd\xcc\xb8"},
    {"nles;","\xe2\xa9\xbd\xcc\xb8"}, {"nless;","\xe2\x89\xae"}, {"nlsim;","\xe2\x89\xb4"},
    {"nlt;","\xe2\x89\xae"}, {"nltri;","\xe2\x8b\xaa"}, {"nltrie;","\xe2\x8b\xac"},
    {"nmid;","\xe2\x88\xa4"}, {"nopf;","\xf0\x9d\x95\x9f"}, {"not","\xc2\xac"}, {"not;","\xc2\xac"},
    {"notin;","\xe2\x88\x89"}, {"notinE;","\xe2\x8b\xb9\xcc\xb8"},
    {"notindot;","\xe2\x8b\xb5\xcc\xb8"}, {"notinva;","\xe2\x88\x89"}, {"notinvb;","\xe2\x8b\xb7"},
    {"notinvc;","\xe2\x8b\xb6"}, {"notni;","\xe2\x88\x8c"}, {"notniva;","\xe2\x88\x8c"},
    {"notnivb;","\xe2\x8b\xbe"}, {"notnivc;","\xe2\x8b\xbd"}, {"npar;","\xe2\x88\xa6"},
    {"nparallel;","\xe2\x88\xa6"}, {"nparsl;","\xe2\xab\xbd\xe2\x83\xa5"},
    {"npart;","\xe2\x88\x82\xcc\xb8"}, {"npolint;","\xe2\xa8\x94"}, {"npr;","\xe2\x8a\x80"},
    {"nprcue;","\xe2\x8b\xa0"}, {"npre;","\xe2\xaa\xaf\xcc\xb8"}, {"nprec;","\xe2\x8a\x80"},
    {"npreceq;","\xe2\xaa\xaf\xcc\xb8"}, {"nrArr;","\xe2\x87\x8f"}, {"nrarr;","\xe2\x86\x9b"},
    {"nrarrc;","\xe2\xa4\xb3\xcc\xb8"}, {"nrarrw;","\xe2\x86\x9d\xcc\xb8"},
    {"nrightarrow;","\xe2\x86\x9b"}, {"nrtri;","\xe2\x8b\xab"}, {"nrtrie;","\xe2\x8b\xad"},
    {"nsc;","\xe2\x8a\x81"}, {"nsccue;","\xe2\x8b\xa1"}, {"nsce;","\xe2\xaa\xb0\xcc\xb8"},
    {"nscr;","\xf0\x9d\x93\x83"}, {"nshortmid;","\xe2\x88\xa4"}, {"nshortparallel;","\xe2\x88\xa6"},
    {"nsim;","\xe2\x89\x81"}, {"nsime;","\xe2\x89\x84"}, {"nsimeq;","\xe2\x89\x84"},
    {"nsmid;","\xe2\x88\xa4"}, {"nspar;","\xe2\x88\xa6"}, {"nsqsube;","\xe2\x8b\xa2"},
    {"nsqsupe;","\xe2\x8b\xa3"}, {"nsub;","\xe2\x8a\x84"}, {"nsubE;","\xe2\xab\x85\xcc\xb8"},
    {"nsube;","\xe2\x8a\x88"}, {"nsubset;","\xe2\x8a\x82\xe2\x83\x92"},
    {"nsubseteq;","\xe2\x8a\x88"}, {"nsubseteqq;","\xe2\xab\x85\xcc\xb8"},
    {"nsucc;","\xe2\x8a\x81"}, {"nsucceq;","\xe2\xaa\xb0\xcc\xb8"}, {"nsup;","\xe2\x8a\x85"},
    {"nsupE;","\xe2\xab\x86\xcc\xb8"}, {"nsupe;","\xe2\x8a\x89"},
    {"nsupset;","\xe2\x8a\x83\xe2\x83\x92"}, {"nsupseteq;","\xe2\x8a\x89"},
    {"nsupseteqq;","\xe2\xab\x86\xcc\xb8"}, {"ntgl;","\xe2\x89\xb9"}, {"ntilde","\xc3\xb1"},
    {"ntilde;","\xc3\xb1"}, {"ntlg;","\xe2\x89\xb8"}, {"ntriangleleft;","\xe2\x8b\xaa"},
    {"ntrianglelefteq;","\xe2\x8b\xac"}, {"ntriangleright;","\xe2\x8b\xab"},
    {"ntrianglerighteq;","\xe2\x8b\xad"}, {"nu;","\xce\xbd"}, {"num;","\x23"},
    {"numero;","\xe2\x84\x96"}, {"numsp;","\xe2\x80\x87"}, {"nvDash;","\xe2\x8a\xad"},
    {"nvHarr;","\xe2\xa4\x84"}, {"nvap;","\xe2\x89\x8d\xe2\x83\x92"}, {"nvdash;","\xe2\x8a\xac"},
    {"nvge;","\xe2\x89\xa5\xe2\x83\x92"}, {"nvgt;","\x3e\xe2\x83\x92"}, {"nvinfin;","\xe2\xa7\x9e"},
    {"nvlArr;","\xe2\xa4\x82"}, {"nvle;","\xe2\x89\xa4\xe2\x83\x92"}, {"nvlt;","\x3c\xe2\x83\x92"},
    {"nvltrie;","\xe2\x8a\xb4\xe2\x83\x92"}, {"nvrArr;","\xe2\xa4\x83"},
    {"nvrtrie;","\xe2\x8a\xb5\xe2\x83\x92"}, {"nvsim;","\xe2\x88\xbc\xe2\x83\x92"},
    {"nwArr;","\xe2\x87\x96"}, {"nwarhk;","\xe2\xa4\xa3"}, {"nwarr;","\xe2\x86\x96"},
    {"nwarrow;","\xe2\x86\x96"}, {"nwnear;","\xe2\xa4\xa7"}, {"oS;","\xe2\x93\x88"},
    {"oacute","\xc3\xb3"}, {"oacute;","\xc3\xb3"}, {"oast;","\xe2\x8a\x9b"},
    {"ocir;","\xe2\x8a\x9a"}, {"ocirc","\xc3\xb4"}, {"ocirc;","\xc3\xb4"}, {"ocy;","\xd0\xbe"},
    {"odash;","\xe2\x8a\x9d"}, {"odblac;","\xc5\x91"}, {"odiv;","\xe2\xa8\xb8"},
    {"odot;","\xe2\x8a\x99"}, {"odsold;","\xe2\xa6\xbc"}, {"oelig;","\xc5\x93"},
    {"ofcir;","\xe2\xa6\xbf"}, {"ofr;","\xf0\x9d\x94\xac"}, {"ogon;","\xcb\x9b"},
    {"ograve","\xc3\xb2"}, {"ograve;","\xc3\xb2"}, {"ogt;","\xe2\xa7\x81"},
    {"ohbar;","\xe2\xa6\xb5"}, {"ohm;","\xce\xa9"}, {"oint;","\xe2\x88\xae"},
    {"olarr;","\xe2\x86\xba"}, {"olcir;","\xe2\xa6\xbe"}, {"olcross;","\xe2\xa6\xbb"},
    {"oline;","\xe2\x80\xbe"}, {"olt;","\xe2\xa7\x80"}, {"omacr;","\xc5\x8d"},
    {"omega;","\xcf\x89"}, {"omicron;","\xce\xbf"}, {"omid;","\xe2\xa6\xb6"},
    {"ominus;","\xe2\x8a\x96"}, {"oopf;","\xf0\x9d\x95\xa0"}, {"opar;","\xe2\xa6\xb7"},
    {"operp;","\xe2\xa6\xb9"}, {"oplus;","\xe2\x8a\x95"}, {"or;","\xe2\x88\xa8"},
    {"orarr;","\xe2\x86\xbb"}, {"ord;","\xe2\xa9\x9d"}, {"order;","\xe2\x84\xb4"},
    {"orderof;","\xe2\x84\xb4"}, {"ordf","\xc2\xaa"}, {"ordf;","\xc2\xaa"}, {"ordm","\xc2\xba"},
    {"ordm;","\xc2\xba"}, {"origof;","\xe2\x8a\xb6"}, {"oror;","\xe2\xa9\x96"},
    {"orslope;","\xe2\xa9\x97"}, {"orv;","\xe2\xa9\x9b"}, {"oscr;","\xe2\x84\xb4"},
    {"oslash","\xc3\xb8"}, {"oslash;","\xc3\xb8"}, {"osol;","\xe2\x8a\x98"}, {"otilde","\xc3\xb5"},
    {"otilde;","\xc3\xb5"}, {"otimes;","\xe2\x8a\x97"}, {"otimesas;","\xe2\xa8\xb6"},
    {"ouml","\xc3\xb6"}, {"ouml;","\xc3\xb6"}, {"ovbar;","\xe2\x8c\xbd"}, {"par;","\xe2\x88\xa5"},
    {"para","\xc2\xb6"}, {"para;","\xc2\xb6"}, {"parallel;","\xe2\x88\xa5"},
    {"parsim;","\xe2\xab\xb3"}, {"parsl;","\xe2\xab\xbd"}, {"part;","\xe2\x88\x82"},
    {"pcy;","\xd0\xbf"}, {"percnt;","\x25"}, {"period;","\x2e"}, {"permil;","\xe2\x80\xb0"},
    {"perp;","\xe2\x8a\xa5"}, {"pertenk;","\xe2\x80\xb1"}, {"pfr;","\xf0\x9d\x94\xad"},
    {"phi;","\xcf\x86"}, {"phiv;","\xcf\x95"}, {"phmmat;","\xe2\x84\xb3"},
    {"phone;","\xe2\x98\x8e"}, {"pi;","\xcf\x80"}, {"pitchfork;","\xe2\x8b\x94"},
    {"piv;","\xcf\x96"}, {"planck;","\xe2\x84\x8f"}, {"planckh;","\xe2\x84\x8e"},
    {"plankv;","\xe2\x84\x8f"}, {"plus;","\x2b"}, {"plusacir;","\xe2\xa8\xa3"},
    {"plusb;","\xe2\x8a\x9e"}, {"pluscir;","\xe2\xa8\xa2"}, {"plusdo;","\xe2\x88\x94"},
    {"plusdu;","\xe2\xa8\xa5"}, {"pluse;","\xe2\xa9\xb2"}, {"plusmn","\xc2\xb1"},
    {"plusmn;","\xc2\xb1"}, {"plussim;","\xe2\xa8\xa6"}, {"plustwo;","\xe2\xa8\xa7"},
    {"pm;","\xc2\xb1"}, {"pointint;","\xe2\xa8\x95"}, {"popf;","\xf0\x9d\x95\xa1"},
    {"pound","\xc2\xa3"}, {"pound;","\xc2\xa3"}, {"pr;","\xe2\x89\xba"}, {"prE;","\xe2\xaa\xb3"},
    {"prap;","\xe2\xaa\xb7"}, {"prcue;","\xe2\x89\xbc"}, {"pre;","\xe2\xaa\xaf"},
    {"prec;","\xe2\x89\xba"}, {"precapprox;","\xe2\xaa\xb7"}, {"preccurlyeq;","\xe2\x89\xbc"},
    {"preceq;","\xe2\xaa\xaf"}, {"precnapprox;","\xe2\xaa\xb9"}, {"precneqq;","\xe2\xaa\xb5"},
    {"precnsim;","\xe2\x8b\xa8"}, {"precsim;","\xe2\x89\xbe"}, {"prime;","\xe2\x80\xb2"},
    {"primes;","\xe2\x84\x99"}, {"prnE;","\xe2\xaa\xb5"}, {"prnap;","\xe2\xaa\xb9"},
    {"prnsim;","\xe2\x8b\xa8"}, {"prod;","\xe2\x88\x8f"}, {"profalar;","\xe2\x8c\xae"},
    {"profline;","\xe2\x8c\x92"}, {"profsurf;","\xe2\x8c\x93"}, {"prop;","\xe2\x88\x9d"},
    {"propto;","\xe2\x88\x9d"}, {"prsim;","\xe2\x89\xbe"}, {"prurel;","\xe2\x8a\xb0"},
    {"pscr;","\xf0\x9d\x93\x85"}, {"psi;","\xcf\x88"}, {"puncsp;","\xe2\x80\x88"},
    {"qfr;","\xf0\x9d\x94\xae"}, {"qint;","\xe2\xa8\x8c"}, {"qopf;","\xf0\x9d\x95\xa2"},
    {"qprime;","\xe2\x81\x97"}, {"qscr;","\xf0\x9d\x93\x86"}, {"quaternions;","\xe2\x84\x8d"},
    {"quatint;","\xe2\xa8\x96"}, {"quest;","\x3f"}, {"questeq;","\xe2\x89\x9f"}, {"quot","\x22"},
    {"quot;","\x22"}, {"rAarr;","\xe2\x87\x9b"}, {"rArr;","\xe2\x87\x92"},
    {"rAtail;","\xe2\xa4\x9c"}, {"rBarr;","\xe2\xa4\x8f"}, {"rHar;","\xe2\xa5\xa4"},
    {"race;","\xe2\x88\xbd\xcc\xb1"}, {"racute;","\xc5\x95"}, {"radic;","\xe2\x88\x9a"},
    {"raemptyv;","\xe2\xa6\xb3"}, {"rang;","\xe2\x9f\xa9"}, {"rangd;","\xe2\xa6\x92"},
    {"range;","\xe2\xa6\xa5"}, {"rangle;","\xe2\x9f\xa9"}, {"raquo","\xc2\xbb"},
    {"raquo;","\xc2\xbb"}, {"rarr;","\xe2\x86\x92"}, {"rarrap;","\xe2\xa5\xb5"},
    {"rarrb;","\xe2\x87\xa5"}, {"rarrbfs;","\xe2\xa4\xa0"}, {"rarrc;","\xe2\xa4\xb3"},
    {"rarrfs;","\xe2\xa4\x9e"}, {"rarrhk;","\xe2\x86\xaa"}, {"rarrlp;","\xe2\x86\xac"},
    {"rarrpl;","\xe2\xa5\x85"}, {"rarrsim;","\xe2\xa5\xb4"}, {"rarrtl;","\xe2\x86\xa3"},
    {"rarrw;","\xe2\x86\x9d"}, {"ratail;","\xe2\xa4\x9a"}, {"ratio;","\xe2\x88\xb6"},
    {"rationals;","\xe2\x84\x9a"}, {"rbarr;","\xe2\xa4\x8d"}, {"rbbrk;","\xe2\x9d\xb3"},
    {"rbrace;","\x7d"}, {"rbrack;","\x5d"}, {"rbrke;","\xe2\xa6\x8c"}, {"rbrksld;","\xe2\xa6\x8e"},
    {"rbrkslu;","\xe2\xa6\x90"}, {"rcaron;","\xc5\x99"}, {"rcedil;","\xc5\x97"},
    {"rceil;","\xe2\x8c\x89"}, {"rcub;","\x7d"}, {"rcy;","\xd1\x80"}, {"rdca;","\xe2\xa4\xb7"},
    {"rdldhar;","\xe2\xa5\xa9"}, {"rdquo;","\xe2\x80\x9d"}, {"rdquor;","\xe2\x80\x9d"},
    {"rdsh;","\xe2\x86\xb3"}, {"real;","\xe2\x84\x9c"}, {"realine;","\xe2\x84\x9b"},
    {"realpart;","\xe2\x84\x9c"}, {"reals;","\xe2\x84\x9d"}, {"rect;","\xe2\x96\xad"},
    {"reg","\xc2\xae"}, {"reg;","\xc2\xae"}, {"rfisht;","\xe2\xa5\xbd"}, {"rfloor;","\xe2\x8c\x8b"},
    {"rfr;","\xf0\x9d\x94\xaf"}, {"rhard;","\xe2\x87\x81"}, {"rharu;","\xe2\x87\x80"},
    {"rharul;","\xe2\xa5\xac"}, {"rho;","\xcf\x81"}, {"rhov;","\xcf\xb1"},
    {"rightarrow;","\xe2\x86\x92"}, {"rightarrowtail;","\xe2\x86\xa3"},
    {"rightharpoondown;","\xe2\x87\x81"}, {"rightharpoonup;","\xe2\x87\x80"},
    {"rightleftarrows;","\xe2\x87\x84"}, {"rightleftharpoons;","\xe2\x87\x8c"},
    {"rightrightarrows;","\xe2\x87\x89"}, {"rightsquigarrow;","\xe2\x86\x9d"},
    {"rightthreetimes;","\xe2\x8b\x8c"}, {"ring;","\xcb\x9a"}, {"risingdotseq;","\xe2\x89\x93"},
    {"rlarr;","\xe2\x87\x84"}, {"rlhar;","\xe2\x87\x8c"}, {"rlm;","\xe2\x80\x8f"},
    {"rmoust;","\xe2\x8e\xb1"}, {"rmoustache;","\xe2\x8e\xb1"}, {"rnmid;","\xe2\xab\xae"},
    {"roang;","\xe2\x9f\xad"}, {"roarr;","\xe2\x87\xbe"}, {"robrk;","\xe2\x9f\xa7"},
    {"ropar;","\xe2\xa6\x86"}, {"ropf;","\xf0\x9d\x95\xa3"}, {"roplus;","\xe2\xa8\xae"},
    {"rotimes;","\xe2\xa8\xb5"}, {"rpar;","\x29"}, {"rpargt;","\xe2\xa6\x94"},
    {"rppolint;","\xe2\xa8\x92"}, {"rrarr;","\xe2\x87\x89"}, {"rsaquo;","\xe2\x80\xba"},
    {"rscr;","\xf0\x9d\x93\x87"}, {"rsh;","\xe2\x86\xb1"}, {"rsqb;","\x5d"},
    {"rsquo;","\xe2\x80\x99"}, {"rsquor;","\xe2\x80\x99"}, {"rthree;","\xe2\x8b\x8c"},
    {"rtimes;","\xe2\x8b\x8a"}, {"rtri;","\xe2\x96\xb9"}, {"rtrie;","\xe2\x8a\xb5"},
    {"rtrif;","\xe2\x96\xb8"}, {"rtriltri;","\xe2\xa7\x8e"}, {"ruluhar;","\xe2\xa5\xa8"},
    {"rx;","\xe2\x84\x9e"}, {"sacute;","\xc5\x9b"}, {"sbquo;","\xe2\x80\x9a"},
    {"sc;","\xe2\x89\xbb"}, {"scE;","\xe2\xaa\xb4"}, {"scap;","\xe2\xaa\xb8"},
    {"scaron;","\xc5\xa1"}, {"sccue;","\xe2\x89\xbd"}, {"sce;","\xe2\xaa\xb0"},
    {"scedil;","\xc5\x9f"}, {"scirc;","\xc5\x9d"}, {"scnE;","\xe2\xaa\xb6"},
    {"scnap;","\xe2\xaa\xba"}, {"scnsim;","\xe2\x8b\xa9"}, {"scpolint;","\xe2\xa8\x93"},
    {"scsim;","\xe2\x89\xbf"}, {"scy;","\xd1\x81"}, {"sdot;","\xe2\x8b\x85"},
    {"sdotb;","\xe2\x8a\xa1"}, {"sdote;","\xe2\xa9\xa6"}, {"seArr;","\xe2\x87\x98"},
    {"searhk;","\xe2\xa4\xa5"}, {"searr;","\xe2\x86\x98"}, {"searrow;","\xe2\x86\x98"},
    {"sect","\xc2\xa7"}, {"sect;","\xc2\xa7"}, {"semi;","\x3b"}, {"seswar;","\xe2\xa4\xa9"},
    {"setminus;","\xe2\x88\x96"}, {"setmn;","\xe2\x88\x96"}, {"sext;","\xe2\x9c\xb6"},
    {"sfr;","\xf0\x9d\x94\xb0"}, {"sfrown;","\xe2\x8c\xa2"}, {"sharp;","\xe2\x99\xaf"},
    {"shchcy;","\xd1\x89"}, {"shcy;","\xd1\x88"}, {"shortmid;","\xe2\x88\xa3"},
    {"shortparallel;","\xe2\x88\xa5"}, {"shy","\xc2\xad"}, {"shy;","\xc2\xad"},
    {"sigma;","\xcf\x83"}, {"sigmaf;","\xcf\x82"}, {"sigmav;","\xcf\x82"}, {"sim;","\xe2\x88\xbc"},
    {"simdot;","\xe2\xa9\xaa"}, {"sime;","\xe2\x89\x83"}, {"simeq;","\xe2\x89\x83"},
    {"simg;","\xe2\xaa\x9e"}, {"simgE;","\xe2\xaa\xa0"}, {"siml;","\xe2\xaa\x9d"},
    {"simlE;","\xe2\xaa\x9f"}, {"simne;","\xe2\x89\x86"}, {"simplus;","\xe2\xa8\xa4"},
    {"simrarr;","\xe2\xa5\xb2"}, {"slarr;","\xe2\x86\x90"}, {"smallsetminus;","\xe2\x88\x96"},
    {"smashp;","\xe2\xa8\xb3"}, {"smeparsl;","\xe2\xa7\xa4"}, {"smid;","\xe2\x88\xa3"},
    {"smile;","\xe2\x8c\xa3"}, {"smt;","\xe2\xaa\xaa"}, {"smte;","\xe2\xaa\xac"},
    {"smtes;","\xe2\xaa\xac\xef\xb8\x80"}, {"softcy;","\xd1\x8c"}, {"sol;","\x2f"},
    {"solb;","\xe2\xa7\x84"}, {"solbar;","\xe2\x8c\xbf"}, {"sopf;","\xf0\x9d\x95\xa4"},
    {"spades;","\xe2\x99\xa0"}, {"spadesuit;","\xe2\x99\xa0"}, {"spar;","\xe2\x88\xa5"},
    {"sqcap;","\xe2\x8a\x93"}, {"sqcaps;","\xe2\x8a\x93\xef\xb8\x80"}, {"sqcup;","\xe2\x8a\x94"},
    {"sqcups;","\xe2\x8a\x94\xef\xb8\x80"}, {"sqsub;","\xe2\x8a\x8f"}, {"sqsube;","\xe2\x8a\x91"},
    {"sqsubset;","\xe2\x8a\x8f"}, {"sqsubseteq;","\xe2\x8a\x91"}, {"sqsup;","\xe2\x8a\x90"},
    {"sqsupe;","\xe2\x8a\x92"}, {"sqsupset;","\xe2\x8a\x90"}, {"sqsupseteq;","\xe2\x8a\x92"},
    {"squ;","\xe2\x96\xa1"}, {"square;","\xe2\x96\xa1"}, {"squarf;","\xe2\x96\xaa"},
    {"squf;","\xe2\x96\xaa"}, {"srarr;","\xe2\x86\x92"}, {"sscr;","\xf0\x9d\x93\x88"},
    {"ssetmn;","\xe2\x88\x96"}, {"ssmile;","\xe2\x8c\xa3"}, {"sstarf;","\xe2\x8b\x86"},
    {"star;","\xe2\x98\x86"}, {"starf;","\xe2\x98\x85"}, {"straightepsilon;","\xcf\xb5"},
    {"straightphi;","\xcf\x95"}, {"strns;","\xc2\xaf"}, {"sub;","\xe2\x8a\x82"},
    {"subE;","\xe2\xab\x85"}, {"subdot;","\xe2\xaa\xbd"}, {"sube;","\xe2\x8a\x86"},
    {"subedot;","\xe2\xab\x83"}, {"submult;","\xe2\xab\x81"}, {"subnE;","\xe2\xab\x8b"},
    {"subne;","\xe2\x8a\x8a"}, {"subplus;","\xe2\xaa\xbf"}, {"subrarr;","\xe2\xa5\xb9"},
    {"subset;","\xe2\x8a\x82"}, {"subseteq;","\xe2\x8a\x86"}, {"subseteqq;","\xe2\xab\x85"},
    {"subsetneq;","\xe2\x8a\x8a"}, {"subsetneqq;","\xe2\xab\x8b"}, {"subsim;","\xe2\xab\x87"},
    {"subsub;","\xe2\xab\x95"}, {"subsup;","\xe2\xab\x93"}, {"succ;","\xe2\x89\xbb"},
    {"succapprox;","\xe2\xaa\xb8"}, {"succcurlyeq;","\xe2\x89\xbd"}, {"succeq;","\xe2\xaa\xb0"},
    {"succnapprox;","\xe2\xaa\xba"}, {"succneqq;","\xe2\xaa\xb6"}, {"succnsim;","\xe2\x8b\xa9"},
    {"succsim;","\xe2\x89\xbf"}, {"sum;","\xe2\x88\x91"}, {"sung;","\xe2\x99\xaa"},
    {"sup1","\xc2\xb9"}, {"sup1;","\xc2\xb9"}, {"sup2","\xc2\xb2"}, {"sup2;","\xc2\xb2"},
    {"sup3","\xc2\xb3"}, {"sup3;","\xc2\xb3"}, {"sup;","\xe2\x8a\x83"}, {"supE;","\xe2\xab\x86"},
    {"supdot;","\xe2\xaa\xbe"}, {"supdsub;","\xe2\xab\x98"}, {"supe;","\xe2\x8a\x87"},
    {"supedot;","\xe2\xab\x84"}, {"suphsol;","\xe2\x9f\x89"}, {"suphsub;","\xe2\xab\x97"},
    {"suplarr;","\xe2\xa5\xbb"}, {"supmult;","\xe2\xab\x82"}, {"supnE;","\xe2\xab\x8c"},
    {"supne;","\xe2\x8a\x8b"}, {"supplus;","\xe2\xab\x80"}, {"supset;","\xe2\x8a\x83"},
    {"supseteq;","\xe2\x8a\x87"}, {"supseteqq;","\xe2\xab\x86"}, {"supsetneq;","\xe2\x8a\x8b"},
    {"supsetneqq;","\xe2\xab\x8c"}, {"supsim;","\xe2\xab\x88"}, {"supsub;","\xe2\xab\x94"},
    {"supsup;","\xe2\xab\x96"}, {"swArr;","\xe2\x87\x99"}, {"swarhk;","\xe2\xa4\xa6"},
    {"swarr;","\xe2\x86\x99"}, {"swarrow;","\xe2\x86\x99"}, {"swnwar;","\xe2\xa4\xaa"},
    {"szlig","\xc3\x9f"}, {"szlig;","\xc3\x9f"}, {"target;","\xe2\x8c\x96"}, {"tau;","\xcf\x84"},
    {"tbrk;","\xe2\x8e\xb4"}, {"tcaron;","\xc5\xa5"}, {"tcedil;","\xc5\xa3"}, {"tcy;","\xd1\x82"},
    {"tdot;","\xe2\x83\x9b"}, {"telrec;","\xe2\x8c\x95"}, {"tfr;","\xf0\x9d\x94\xb1"},
    {"there4;","\xe2\x88\xb4"}, {"therefore;","\xe2\x88\xb4"}, {"theta;","\xce\xb8"},
    {"thetasym;","\xcf\x91"}, {"thetav;","\xcf\x91"}, {"thickapprox;","\xe2\x89\x88"},
    {"thicksim;","\xe2\x88\xbc"}, {"thinsp;","\xe2\x80\x89"}, {"thkap;","\xe2\x89\x88"},
    {"thksim;","\xe2\x88\xbc"}, {"thorn","\xc3\xbe"}, {"thorn;","\xc3\xbe"}, {"tilde;","\xcb\x9c"},
    {"times","\xc3\x97"}, {"times;","\xc3\x97"}, {"timesb;","\xe2\x8a\xa0"},
    {"timesbar;","\xe2\xa8\xb1"}, {"timesd;","\xe2\xa8\xb0"}, {"tint;","\xe2\x88\xad"},
    {"toea;","\xe2\xa4\xa8"}, {"top;","\xe2\x8a\xa4"}, {"topbot;","\xe2\x8c\xb6"},
    {"topcir;","\xe2\xab\xb1"}, {"topf;","\xf0\x9d\x95\xa5"}, {"topfork;","\xe2\xab\x9a"},
    {"tosa;","\xe2\xa4\xa9"}, {"tprime;","\xe2\x80\xb4"}, {"trade;","\xe2\x84\xa2"},
    {"triangle;","\xe2\x96\xb5"}, {"triangledown;","\xe2\x96\xbf"},
    {"triangleleft;","\xe2\x97\x83"}, {"trianglelefteq;","\xe2\x8a\xb4"},
    {"triangleq;","\xe2\x89\x9c"}, {"triangleright;","\xe2\x96\xb9"},
    {"trianglerighteq;","\xe2\x8a\xb5"}, {"tridot;","\xe2\x97\xac"}, {"trie;","\xe2\x89\x9c"},
    {"triminus;","\xe2\xa8\xba"}, {"triplus;","\xe2\xa8\xb9"}, {"trisb;","\xe2\xa7\x8d"},
    {"tritime;","\xe2\xa8\xbb"}, {"trpezium;","\xe2\x8f\xa2"}, {"tscr;","\xf0\x9d\x93\x89"},
    {"tscy;","\xd1\x86"}, {"tshcy;","\xd1\x9b"}, {"tstrok;","\xc5\xa7"}, {"twixt;","\xe2\x89\xac"},
    {"twoheadleftarrow;","\xe2\x86\x9e"}, {"twoheadrightarrow;","\xe2\x86\xa0"},
    {"uArr;","\xe2\x87\x91"}, {"uHar;","\xe2\xa5\xa3"}, {"uacute","\xc3\xba"},
    {"uacute;","\xc3\xba"}, {"uarr;","\xe2\x86\x91"}, {"ubrcy;","\xd1\x9e"}, {"ubreve;","\xc5\xad"},
    {"ucirc","\xc3\xbb"}, {"ucirc;","\xc3\xbb"}, {"ucy;","\xd1\x83"}, {"udarr;","\xe2\x87\x85"},
    {"udblac;","\xc5\xb1"}, {"udhar;","\xe2\xa5\xae"}, {"ufisht;","\xe2\xa5\xbe"},
    {"ufr;","\xf0\x9d\x94\xb2"}, {"ugrave","\xc3\xb9"}, {"ugrave;","\xc3\xb9"},
    {"uharl;","\xe2\x86\xbf"}, {"uharr;","\xe2\x86\xbe"}, {"uhblk;","\xe2\x96\x80"},
    {"ulcorn;","\xe2\x8c\x9c"}, {"ulcorner;","\xe2\x8c\x9c"}, {"ulcrop;","\xe2\x8c\x8f"},
    {"ultri;","\xe2\x97\xb8"}, {"umacr;","\xc5\xab"}, {"uml","\xc2\xa8"}, {"uml;","\xc2\xa8"},
    {"uogon;","\xc5\xb3"}, {"uopf;","\xf0\x9d\x95\xa6"}, {"uparrow;","\xe2\x86\x91"},
    {"updownarrow;","\xe2\x86\x95"}, {"upharpoonleft;","\xe2\x86\xbf"},
    {"upharpoonright;","\xe2\x86\xbe"}, {"uplus;","\xe2\x8a\x8e"}, {"upsi;","\xcf\x85"},
    {"upsih;","\xcf\x92"}, {"upsilon;","\xcf\x85"}, {"upuparrows;","\xe2\x87\x88"},
    {"urcorn;","\xe2\x8c\x9d"}, {"urcorner;","\xe2\x8c\x9d"}, {"urcrop;","\xe2\x8c\x8e"},
    {"uring;","\xc5\xaf"}, {"urtri;","\xe2\x97\xb9"}, {"uscr;","\xf0\x9d\x93\x8a"},
    {"utdot;","\xe2\x8b\xb0"}, {"utilde;","\xc5\xa9"}, {"utri;","\xe2\x96\xb5"},
    {"utrif;","\xe2\x96\xb4"}, {"uuarr;","\xe2\x87\x88"}, {"uuml","\xc3\xbc"}, {"uuml;","\xc3\xbc"},
    {"uwangle;","\xe2\xa6\xa7"}, {"vArr;","\xe2\x87\x95"}, {"vBar;","\xe2\xab\xa8"},
    {"vBarv;","\xe2\xab\xa9"}, {"vDash;","\xe2\x8a\xa8"}, {"vangrt;","\xe2\xa6\x9c"},
    {"varepsilon;","\xcf\xb5"}, {"varkappa;","\xcf\xb0"}, {"varnothing;","\xe2\x88\x85"},
    {"varphi;","\xcf\x95"}, {"varpi;","\xcf\x96"}, {"varpropto;","\xe2\x88\x9d"},
    {"varr;","\xe2\x86\x95"}, {"varrho;","\xcf\xb1"}, {"varsigma;","\xcf\x82"},
    {"varsubsetneq;","\xe2\x8a\x8a\xef\xb8\x80"}, {"varsubsetneqq;","\xe2\xab\x8b\xef\xb8\x80"},
    {"varsupsetneq;","\xe2\x8a\x8b\xef\xb8\x80"}, {"varsupsetneqq;","\xe2\xab\x8c\xef\xb8\x80"},
    {"vartheta;","\xcf\x91"}, {"vartriangleleft;","\xe2\x8a\xb2"},
    {"vartriangleright;","\xe2\x8a\xb3"}, {"vcy;","\xd0\xb2"}, {"vdash;","\xe2\x8a\xa2"},
    {"vee;","\xe2\x88\xa8"}, {"veebar;","\xe2\x8a\xbb"}, {"veeeq;","\xe2\x89\x9a"},
    {"vellip;","\xe2\x8b\xae"}, {"verbar;","\x7c"}, {"vert;","\x7c"}, {"vfr;","\xf0\x9d\x94\xb3"},
    {"vltri;","\xe2\x8a\xb2"}, {"vnsub;","\xe2\x8a\x82\xe2\x83\x92"},
    {"vnsup;","\xe2\x8a\x83\xe2\x83\x92"}, {"vopf;","\xf0\x9d\x95\xa7"}, {"vprop;","\xe2\x88\x9d"},
    {"vrtri;","\xe2\x8a\xb3"}, {"vscr;","\xf0\x9d\x93\x8b"}, {"vsubnE;","\xe2\xab\x8b\xef\xb8\x80"},
    {"vsubne;","\xe2\x8a\x8a\xef\xb8\x80"}, {"vsupnE;","\xe2\xab\x8c\xef\xb8\x80"},
    {"vsupne;","\xe2\x8a\x8b\xef\xb8\x80"}, {"vzigzag;","\xe2\xa6\x9a"}, {"wcirc;","\xc5\xb5"},
    {"wedbar;","\xe2\xa9\x9f"}, {"wedge;","\xe2\x88\xa7"}, {"wedgeq;","\xe2\x89\x99"},
    {"weierp;","\xe2\x84\x98"}, {"wfr;","\xf0\x9d\x94\xb4"}, {"wopf;","\xf0\x9d\x95\xa8"},
    {"wp;","\xe2\x84\x98"}, {"wr;","\xe2\x89\x80"}, {"wreath;","\xe2\x89\x80"},
    {"wscr;","\xf0\x9d\x93\x8c"}, {"xcap;","\xe2\x8b\x82"}, {"xcirc;","\xe2\x97\xaf"},
    {"xcup;","\xe2\x8b\x83"}, {"xdtri;","\xe2\x96\xbd"}, {"xfr;","\xf0\x9d\x94\xb5"},
    {"xhArr;","\xe2\x9f\xba"}, {"xharr;","\xe2\x9f\xb7"}, {"xi;","\xce\xbe"},
    {"xlArr;","\xe2\x9f\xb8"}, {"xlarr;","\xe2\x9f\xb5"}, {"xmap;","\xe2\x9f\xbc"},
    {"xnis;","\xe2\x8b\xbb"}, {"xodot;","\xe2\xa8\x80"}, {"xopf;","\xf0\x9d\x95\xa9"},
    {"xoplus;","\xe2\xa8\x81"}, {"xotime;","\xe2\xa8\x82"}, {"xrArr;","\xe2\x9f\xb9"},
    {"xrarr;","\xe2\x9f\xb6"}, {"xscr;","\xf0\x9d\x93\x8d"}, {"xsqcup;","\xe2\xa8\x86"},
    {"xuplus;","\xe2\xa8\x84"}, {"xutri;","\xe2\x96\xb3"}, {"xvee;","\xe2\x8b\x81"},
    {"xwedge;","\xe2\x8b\x80"}, {"yacute","\xc3\xbd"}, {"yacute;","\xc3\xbd"}, {"yacy;","\xd1\x8f"},
    {"ycirc;","\xc5\xb7"}, {"ycy;","\xd1\x8b"}, {"yen","\xc2\xa5"}, {"yen;","\xc2\xa5"},
    {"yfr;","\xf0\x9d\x94\xb6"}, {"yicy;","\xd1\x97"}, {"yopf;","\xf0\x9d\x95\xaa"},
    {"yscr;","\xf0\x9d\x93\x8e"}, {"yucy;","\xd1\x8e"}, {"yuml","\xc3\xbf"}, {"yuml;","\xc3\xbf"},
    {"zacute;","\xc5\xba"}, {"zcaron;","\xc5\xbe"}, {"zcy;","\xd0\xb7"}, {"zdot;","\xc5\xbc"},
    {"zeetrf;","\xe2\x84\xa8"}, {"zeta;","\xce\xb6"}, {"zfr;","\xf0\x9d\x94\xb7"},
    {"zhcy;","\xd0\xb6"}, {"zigrarr;","\xe2\x87\x9d"}, {"zopf;","\xf0\x9d\x95\xab"},
    {"zscr;","\xf0\x9d\x93\x8f"}, {"zwj;","\xe2\x80\x8d"}, {"zwnj;","\xe2\x80\x8c"},
};
/* clang-format on */

/* Windows-1252 for numeric references 0x80..0x9F, as the HTML standard maps them
 * (0 where the code point stays as it is). */
static const uint16_t md_track_c1[32] = {
    0x20AC, 0,      0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160,
    0x2039, 0x0152, 0,      0x017D, 0,      0,      0x2018, 0x2019, 0x201C, 0x201D, 0x2022,
    0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0,      0x017E, 0x0178};

static bool
md_is_alnum(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool
md_is_html_ws(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\f' || c == '\r';
}

static void
md_track_utf8(md_buf_t *b, uint32_t cp)
{
    char u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xC0 | (cp >> 6));
        u[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (char)(0xE0 | (cp >> 12));
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        u[0] = (char)(0xF0 | (cp >> 18));
        u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    md_buf_append(b, u, n);
}

/* The entity whose name is exactly s[0..n), or NULL (binary search: the table is
 * sorted byte-wise, a prefix before its extensions). */
static const md_track_entity_t *
md_track_entity_find(const char *s, size_t n)
{
    size_t lo = 0, hi = md_nelems(md_track_entities);
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const char *name = md_track_entities[mid].name;
        size_t nl = strlen(name);
        int c = memcmp(name, s, md_min(nl, n));
        if (c == 0)
            c = nl < n ? -1 : nl > n ? 1 : 0;
        if (c == 0)
            return &md_track_entities[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/*
 * Appends the attribute value v[0..n) to b with character references resolved the
 * way the HTML tokenizer does inside an attribute value: longest named match, a
 * legacy name without ';' left alone when '=' or an alphanumeric follows it, numeric
 * references with or without ';' (0, surrogates and > U+10FFFF become U+FFFD, 0x80-0x9F
 * go through Windows-1252), anything else literal. NUL becomes U+FFFD.
 */
static void
md_track_decode_attr(const char *v, size_t n, md_buf_t *b)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = (unsigned char)v[i];
        if (c == '\0') {
            md_track_utf8(b, 0xFFFD);
            i++;
            continue;
        }
        if (c != '&' || i + 1 >= n) {
            md_buf_append(b, &v[i], 1);
            i++;
            continue;
        }
        unsigned char d = (unsigned char)v[i + 1];
        if (md_is_alnum(d)) {
            size_t run = 0;
            while (i + 1 + run < n && run < 32 && md_is_alnum((unsigned char)v[i + 1 + run]))
                run++;
            size_t maxk = run + (i + 1 + run < n && v[i + 1 + run] == ';' ? 1 : 0);
            const md_track_entity_t *e = NULL;
            size_t k;
            for (k = maxk; k > 0; k--)
                if ((e = md_track_entity_find(&v[i + 1], k)) != NULL)
                    break;
            if (e != NULL) {
                size_t after = i + 1 + k;
                bool semi = v[i + k] == ';';
                if (!semi && after < n &&
                    (v[after] == '=' || md_is_alnum((unsigned char)v[after]))) {
                    /* Historical: "&copy=1" in a URL stays as written. */
                    md_buf_append(b, &v[i], 1 + k);
                } else {
                    md_buf_append_str(b, e->value);
                }
                i = after;
                continue;
            }
            md_buf_append(b, "&", 1);
            i++;
            continue;
        }
        if (d != '#') {
            md_buf_append(b, "&", 1);
            i++;
            continue;
        }
        size_t j = i + 2;
        bool hex = false;
        if (j < n && (v[j] == 'x' || v[j] == 'X')) {
            hex = true;
            j++;
        }
        size_t digits = j;
        uint32_t cp = 0;
        bool over = false;
        while (j < n) {
            int dv = hex ? md_hexval(v[j]) : (v[j] >= '0' && v[j] <= '9' ? v[j] - '0' : -1);
            if (dv < 0)
                break;
            cp = cp * (hex ? 16 : 10) + (uint32_t)dv;
            if (cp > 0x10FFFF) {
                over = true;
                cp = 0x110000; /* stays above the limit without overflowing */
            }
            j++;
        }
        if (j == digits) {
            /* "&#" or "&#x" without digits: all literal. */
            md_buf_append(b, &v[i], j - i);
            i = j;
            continue;
        }
        if (j < n && v[j] == ';')
            j++;
        if (over || cp == 0 || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            cp = 0xFFFD;
        else if (cp >= 0x80 && cp <= 0x9F && md_track_c1[cp - 0x80] != 0)
            cp = md_track_c1[cp - 0x80];
        md_track_utf8(b, cp);
        i = j;
    }
}

/* ---- HTML: the tokenizer subset we need ------------------------------------------ */

static bool
md_track_ieq(const char *s, size_t n, const char *lit)
{
    size_t l = strlen(lit);
    if (n != l)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 'A' && c <= 'Z')
            c = (unsigned char)(c + 32);
        if (c != (unsigned char)lit[i])
            return false;
    }
    return true;
}

/* What scanning one tag's attributes found. Offsets are into the input. */
typedef struct md_track_tag_s {
    bool eof;      /* the input ended inside the tag: a browser drops it */
    size_t end;    /* just past '>' */
    bool href;     /* the first href attribute, with a value */
    size_t vs, ve; /* its value, without quotes */
    size_t fs, fe; /* its value with any quotes: what a rewrite replaces */
    bool notrack;  /* a data-mailerd-notrack attribute anywhere */
} md_track_tag_t;

/*
 * Scans attributes from h[i] (just after the tag name) to the closing '>' following
 * the HTML tokenizer's attribute states: names end at whitespace, '/', '>' or '=' (a
 * leading '=' is part of the name), values are double-quoted, single-quoted or
 * unquoted, a quoted value may run straight into the next attribute, a later
 * duplicate of a name is ignored. Never reads at or past n.
 */
static void
md_track_scan_attrs(const char *h, size_t n, size_t i, md_track_tag_t *t)
{
    bool seen_href = false;
    memset(t, 0, sizeof(*t));
    for (;;) {
        while (i < n && (md_is_html_ws((unsigned char)h[i]) || h[i] == '/'))
            i++;
        if (i >= n)
            goto eof;
        if (h[i] == '>') {
            t->end = i + 1;
            return;
        }
        size_t ns = i++;
        while (i < n && !md_is_html_ws((unsigned char)h[i]) && h[i] != '/' && h[i] != '>' &&
               h[i] != '=')
            i++;
        size_t ne = i;
        while (i < n && md_is_html_ws((unsigned char)h[i]))
            i++;
        bool has_value = false;
        size_t vs = 0, ve = 0, fs = 0, fe = 0;
        if (i < n && h[i] == '=') {
            i++;
            while (i < n && md_is_html_ws((unsigned char)h[i]))
                i++;
            if (i >= n)
                goto eof;
            if (h[i] == '"' || h[i] == '\'') {
                char q = h[i];
                fs = i++;
                vs = i;
                while (i < n && h[i] != q)
                    i++;
                if (i >= n)
                    goto eof;
                ve = i++;
                fe = i;
                has_value = true;
            } else if (h[i] != '>') {
                fs = vs = i;
                while (i < n && !md_is_html_ws((unsigned char)h[i]) && h[i] != '>')
                    i++;
                ve = fe = i;
                has_value = true;
            }
        }
        if (md_track_ieq(h + ns, ne - ns, "href")) {
            if (!seen_href && has_value) {
                t->href = true;
                t->vs = vs;
                t->ve = ve;
                t->fs = fs;
                t->fe = fe;
            }
            seen_href = true;
        } else if (md_track_ieq(h + ns, ne - ns, "data-mailerd-notrack")) {
            t->notrack = true;
        }
    }
eof:
    t->eof = true;
    t->end = n;
}

/* Finds the end tag "</name" (any case) followed by whitespace, '/' or '>' from i;
 * returns its offset or n. For raw-text elements, whose content holds no tags. */
static size_t
md_track_find_end_tag(const char *h, size_t n, size_t i, const char *name)
{
    size_t l = strlen(name);
    for (; i + 2 + l <= n; i++) {
        if (h[i] != '<' || h[i + 1] != '/' || !md_track_ieq(h + i + 2, l, name))
            continue;
        if (i + 2 + l == n)
            return i; /* "</script" at the very end: an (unterminated) end tag */
        unsigned char c = (unsigned char)h[i + 2 + l];
        if (md_is_html_ws(c) || c == '/' || c == '>')
            return i;
    }
    return n;
}

static bool
md_track_is_alpha(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* Elements whose content the tokenizer reads as text up to their end tag. */
static const char *const md_track_rawtext[] = {"script", "style",  "textarea", "title",
                                               "xmp",    "iframe", "noembed",  "noframes"};

/* base must be http(s) and hold only characters that are safe unescaped in a
 * double-quoted attribute, an HTTP header and between <> in a mail header. */
static bool
md_track_base_ok(md_str_t base)
{
    if (base.data == NULL || base.len > 1024)
        return false;
    size_t p;
    if (base.len > 8 && memcmp(base.data, "https://", 8) == 0)
        p = 8;
    else if (base.len > 7 && memcmp(base.data, "http://", 7) == 0)
        p = 7;
    else
        return false;
    for (size_t i = p; i < base.len; i++) {
        unsigned char c = (unsigned char)base.data[i];
        if (!md_is_alnum(c) && strchr("-._~:/?#[]@!$()*+,;=%", c) == NULL)
            return false;
    }
    return true;
}

/* base without trailing slashes. */
static md_str_t
md_track_base_trim(md_str_t base)
{
    while (base.len > 0 && base.data[base.len - 1] == '/')
        base.len--;
    return base;
}

/*
 * Turns a decoded href into the URL a browser would follow: leading and trailing C0
 * controls and spaces stripped, tabs and newlines removed. Returns true (with the
 * result in u) when that is an absolute http(s) URL with something after "//" and
 * no other control character (those would need escaping before they could go into a
 * Location header; such rare links are simply left untracked).
 */
static bool
md_track_url_trackable(md_buf_t *u)
{
    size_t n = md_buf_len(u);
    if (n == 0)
        return false;
    char *s = u->pos;
    size_t a = 0, z = n;
    while (a < z && (unsigned char)s[a] <= 0x20)
        a++;
    while (z > a && (unsigned char)s[z - 1] <= 0x20)
        z--;
    size_t o = 0;
    for (size_t i = a; i < z; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\t' || c == '\n' || c == '\r')
            continue;
        if (c < 0x20 || c == 0x7F)
            return false;
        s[o++] = (char)c;
    }
    u->last = u->pos + o;
    size_t p;
    if (o >= 8 && md_track_ieq(s, 8, "https://"))
        p = 8;
    else if (o >= 7 && md_track_ieq(s, 7, "http://"))
        p = 7;
    else
        return false;
    return o > p;
}

static void
md_track_links_push(md_track_links_t *l, const char *s, size_t n)
{
    l->url = md_xrealloc(l->url, (l->n + 1) * sizeof(*l->url));
    l->len = md_xrealloc(l->len, (l->n + 1) * sizeof(*l->len));
    l->url[l->n] = md_xstrndup(s, n);
    l->len[l->n] = n;
    l->n++;
}

void
md_track_links_free(md_track_links_t *links)
{
    if (links == NULL)
        return;
    for (size_t i = 0; i < links->n; i++)
        free(links->url[i]);
    free(links->url);
    free(links->len);
    links->url = NULL;
    links->len = NULL;
    links->n = 0;
}

/* Appends BASE/t/c/TOKEN style URLs. */
static void
md_track_append_url(md_buf_t *out, md_str_t base, const char *path, const char *token)
{
    md_buf_append(out, base.data, base.len);
    md_buf_append_str(out, path);
    md_buf_append_str(out, token);
}

static void
md_track_append_pixel(const md_track_html_opts_t *o, md_str_t base, md_buf_t *out)
{
    md_track_token_t t = {.kind = MD_TRACK_OPEN};
    char tok[MD_TRACK_TOKEN_SIZE];
    memcpy(t.msgid, o->msgid, MD_TRACK_MSGID_LEN);
    if (md_track_token_make(o->key, &t, tok) == 0)
        return; /* libcrypto failed: no pixel rather than a broken one */
    md_buf_append_str(out, "<img src=\"");
    md_track_append_url(out, base, "/t/o/", tok);
    md_buf_append_str(out, "\" width=\"1\" height=\"1\" alt=\"\" style=\"display:none\">");
}

int
md_track_rewrite_html(const md_track_html_opts_t *o, const char *h, size_t n, md_buf_t *out,
                      md_track_links_t *links)
{
    if (o == NULL || !md_track_key_ok(o->key) || o->msgid == NULL || !md_track_base_ok(o->base) ||
        (h == NULL && n > 0))
        return MD_ERROR;
    md_str_t base = md_track_base_trim(o->base);
    bool pixel = o->opens;
    size_t copied = 0; /* input before this is in out already */
    size_t i = 0;
    md_buf_t url;
    md_buf_init(&url);

    while (i < n) {
        if (h[i] != '<' || i + 1 >= n) {
            i++;
            continue;
        }
        unsigned char c = (unsigned char)h[i + 1];
        if (c == '!' && i + 3 < n && h[i + 2] == '-' && h[i + 3] == '-') {
            /* A comment: "<!-->" and "<!--->" end at once, else at "-->" or "--!>". */
            size_t j = i + 4;
            if (j < n && h[j] == '>') {
                i = j + 1;
                continue;
            }
            if (j + 1 < n && h[j] == '-' && h[j + 1] == '>') {
                i = j + 2;
                continue;
            }
            for (; j < n; j++) {
                if (j + 2 < n && h[j] == '-' && h[j + 1] == '-' && h[j + 2] == '>') {
                    j += 3;
                    break;
                }
                if (j + 3 < n && h[j] == '-' && h[j + 1] == '-' && h[j + 2] == '!' &&
                    h[j + 3] == '>') {
                    j += 4;
                    break;
                }
            }
            i = j;
            continue;
        }
        if (c == '!' || c == '?' || (c == '/' && i + 2 < n && !md_track_is_alpha(h[i + 2]))) {
            /* Doctype, CDATA, processing instruction, "</>" or "</ x>": all end at the
             * first '>' (a doctype is not quite that simple, but holds no tags). */
            const char *gt = memchr(h + i + 2, '>', n - i - 2);
            i = gt ? (size_t)(gt - h) + 1 : n;
            continue;
        }
        bool end_tag = c == '/';
        size_t ns = i + (end_tag ? 2 : 1);
        if (ns >= n || !md_track_is_alpha((unsigned char)h[ns])) {
            i++; /* a '<' that starts no tag is text */
            continue;
        }
        size_t ne = ns;
        while (ne < n && !md_is_html_ws((unsigned char)h[ne]) && h[ne] != '/' && h[ne] != '>')
            ne++;
        md_track_tag_t t;
        md_track_scan_attrs(h, n, ne, &t);
        if (t.eof)
            break; /* a browser drops a tag cut off by the end of input */

        if (end_tag) {
            if (pixel && md_track_ieq(h + ns, ne - ns, "body")) {
                md_buf_append(out, h + copied, i - copied);
                copied = i;
                md_track_append_pixel(o, base, out);
                pixel = false;
            }
            i = t.end;
            continue;
        }

        if (o->clicks && md_track_ieq(h + ns, ne - ns, "a") && t.href && !t.notrack &&
            links->n < MD_TRACK_MAX_LINKS) {
            md_buf_reset(&url);
            md_track_decode_attr(h + t.vs, t.ve - t.vs, &url);
            if (md_track_url_trackable(&url)) {
                md_track_token_t tk = {.kind = MD_TRACK_CLICK, .link = (uint16_t)links->n};
                char tok[MD_TRACK_TOKEN_SIZE];
                memcpy(tk.msgid, o->msgid, MD_TRACK_MSGID_LEN);
                if (md_track_token_make(o->key, &tk, tok) == 0)
                    goto next; /* libcrypto failed: the link stays as it was */
                md_track_links_push(links, url.pos, md_buf_len(&url));
                md_buf_append(out, h + copied, t.fs - copied);
                md_buf_append(out, "\"", 1);
                md_track_append_url(out, base, "/t/c/", tok);
                md_buf_append(out, "\"", 1);
                copied = t.fe;
            }
        }
    next:
        i = t.end;
        if (md_track_ieq(h + ns, ne - ns, "plaintext"))
            break; /* everything after is text */
        for (size_t r = 0; r < md_nelems(md_track_rawtext); r++)
            if (md_track_ieq(h + ns, ne - ns, md_track_rawtext[r])) {
                i = md_track_find_end_tag(h, n, i, md_track_rawtext[r]);
                break;
            }
    }
    md_buf_free(&url);
    if (n > copied)
        md_buf_append(out, h + copied, n - copied);
    if (pixel)
        md_track_append_pixel(o, base, out);
    return MD_OK;
}

/* ---- List-Unsubscribe ------------------------------------------------------------- */

static bool
md_track_domain_ok(md_str_t d)
{
    if (d.len == 0 || d.len > 253)
        return false;
    for (size_t i = 0; i < d.len; i++) {
        unsigned char c = (unsigned char)d.data[i];
        if (!md_is_alnum(c) && c != '.' && c != '-')
            return false;
    }
    return true;
}

int
md_track_list_unsubscribe(const md_track_key_t *key, const uint8_t *msgid, md_str_t base,
                          md_str_t domain, md_buf_t *out)
{
    if (!md_track_key_ok(key) || msgid == NULL || !md_track_base_ok(base) ||
        (domain.len > 0 && !md_track_domain_ok(domain)))
        return MD_ERROR;
    md_track_token_t t = {.kind = MD_TRACK_UNSUBSCRIBE};
    memcpy(t.msgid, msgid, MD_TRACK_MSGID_LEN);
    char tok[MD_TRACK_TOKEN_SIZE], b32[MD_TRACK_TOKEN_SIZE];
    if (md_track_token_make(key, &t, tok) == 0 || md_track_token_make_b32(key, &t, b32) == 0)
        return MD_ERROR;
    base = md_track_base_trim(base);

    md_buf_append_str(out, "List-Unsubscribe: <");
    md_track_append_url(out, base, "/u/", tok);
    md_buf_append_str(out, ">");
    if (domain.len > 0) {
        /* Folded after the comma: the line stays short whatever the base. */
        md_buf_append_str(out, ",\r\n <mailto:unsub+");
        md_buf_append_str(out, b32);
        md_buf_append(out, "@", 1);
        md_buf_append(out, domain.data, domain.len);
        md_buf_append(out, ">", 1);
    }
    md_buf_append_str(out, "\r\n");
    if (base.len >= 8 && memcmp(base.data, "https://", 8) == 0)
        md_buf_append_str(out, "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n");
    return MD_OK;
}

/* ---- the one-click POST body ------------------------------------------------------ */

/* s[0..n) with surrounding spaces, tabs, CR and LF removed. */
static md_str_t
md_track_trim(const char *s, size_t n)
{
    while (n > 0 && (s[0] == ' ' || s[0] == '\t' || s[0] == '\r' || s[0] == '\n')) {
        s++;
        n--;
    }
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
        n--;
    md_str_t r = {n, s};
    return r;
}

/* Percent-decodes a form field ('+' is a space) into out; false if it does not fit
 * (nothing we look for is that long). */
static bool
md_track_form_decode(const char *s, size_t n, char *out, size_t cap, size_t *olen)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (o >= cap)
            return false;
        char c = s[i];
        if (c == '+') {
            c = ' ';
        } else if (c == '%' && i + 2 < n && md_hexval(s[i + 1]) >= 0 && md_hexval(s[i + 2]) >= 0) {
            c = (char)(md_hexval(s[i + 1]) * 16 + md_hexval(s[i + 2]));
            i += 2;
        }
        out[o++] = c;
    }
    *olen = o;
    return true;
}

static bool
md_track_is_oneclick(const char *name, size_t nl, const char *value, size_t vl)
{
    md_str_t n = md_track_trim(name, nl), v = md_track_trim(value, vl);
    return md_str_caseeq(n, "List-Unsubscribe") && md_str_caseeq(v, "One-Click");
}

static int
md_track_oneclick_urlencoded(const char *body, size_t len)
{
    md_str_t b = md_track_trim(body, len);
    size_t i = 0;
    while (i <= b.len) {
        const char *amp = b.len > i ? memchr(b.data + i, '&', b.len - i) : NULL;
        size_t e = amp ? (size_t)(amp - b.data) : b.len;
        const char *eq = e > i ? memchr(b.data + i, '=', e - i) : NULL;
        if (eq != NULL) {
            size_t k = (size_t)(eq - b.data);
            char name[64], value[64];
            size_t nl, vl;
            if (md_track_form_decode(b.data + i, k - i, name, sizeof(name), &nl) &&
                md_track_form_decode(b.data + k + 1, e - k - 1, value, sizeof(value), &vl) &&
                md_track_is_oneclick(name, nl, value, vl))
                return MD_OK;
        }
        i = e + 1;
    }
    return MD_DECLINED;
}

/* Finds a parameter (boundary, name) in a header value's "; k=v" list; quoted
 * values lose their quotes (and backslash escapes). Copies into out (cap bytes). */
static bool
md_track_header_param(md_str_t h, const char *key, char *out, size_t cap, size_t *olen)
{
    size_t kl = strlen(key);
    size_t i = 0;
    const char *semi;
    while ((semi = i < h.len ? memchr(h.data + i, ';', h.len - i) : NULL) != NULL) {
        i = (size_t)(semi - h.data) + 1;
        while (i < h.len && (h.data[i] == ' ' || h.data[i] == '\t'))
            i++;
        if (i + kl >= h.len || h.data[i + kl] != '=')
            continue;
        md_str_t k = {kl, h.data + i};
        if (!md_str_caseeq(k, key))
            continue;
        i += kl + 1;
        size_t o = 0;
        if (i < h.len && h.data[i] == '"') {
            for (i++; i < h.len && h.data[i] != '"'; i++) {
                if (h.data[i] == '\\' && i + 1 < h.len)
                    i++;
                if (o >= cap)
                    return false;
                out[o++] = h.data[i];
            }
        } else {
            for (; i < h.len && h.data[i] != ';' && h.data[i] != ' ' && h.data[i] != '\t'; i++) {
                if (o >= cap)
                    return false;
                out[o++] = h.data[i];
            }
        }
        *olen = o;
        return o > 0;
    }
    return false;
}

/* The media type of a Content-Type value, trimmed. */
static md_str_t
md_track_media_type(md_str_t ct)
{
    const char *semi = ct.len ? memchr(ct.data, ';', ct.len) : NULL;
    return md_track_trim(ct.data, semi ? (size_t)(semi - ct.data) : ct.len);
}

/*
 * multipart/form-data (RFC 7578): parts between "--boundary" lines, CRLF or bare LF
 * line ends, each with headers, a blank line and the value. Looks for the part whose
 * Content-Disposition is form-data with name List-Unsubscribe.
 */
static int
md_track_oneclick_multipart(md_str_t ct, const char *body, size_t len)
{
    char bnd[72]; /* RFC 2046: at most 70 characters, plus "--" */
    size_t bl;
    bnd[0] = bnd[1] = '-';
    if (!md_track_header_param(ct, "boundary", bnd + 2, 70, &bl))
        return MD_ERROR;
    bl += 2;

    /* The first delimiter: at the start or after a line end (a preamble may precede). */
    size_t i = 0;
    for (;;) {
        const char *d = i < len ? memmem(body + i, len - i, bnd, bl) : NULL;
        if (d == NULL)
            return MD_ERROR;
        i = (size_t)(d - body);
        if (i == 0 || body[i - 1] == '\n')
            break;
        i++;
    }
    bool found = false;
    for (;;) {
        i += bl; /* past a delimiter */
        if (i + 2 <= len && body[i] == '-' && body[i + 1] == '-')
            return found ? MD_OK : MD_DECLINED; /* the close delimiter */
        while (i < len && (body[i] == ' ' || body[i] == '\t'))
            i++;
        if (i < len && body[i] == '\r')
            i++;
        if (i >= len || body[i] != '\n')
            return MD_ERROR;
        i++;
        /* Headers up to an empty line. */
        bool is_field = false;
        for (;;) {
            const char *nl = i < len ? memchr(body + i, '\n', len - i) : NULL;
            if (nl == NULL)
                return MD_ERROR;
            size_t e = (size_t)(nl - body);
            md_str_t line = md_track_trim(body + i, e - i);
            i = e + 1;
            if (line.len == 0)
                break;
            const char *colon = memchr(line.data, ':', line.len);
            if (colon == NULL)
                continue;
            md_str_t hn = md_track_trim(line.data, (size_t)(colon - line.data));
            md_str_t hv = md_track_trim(colon + 1, line.len - (size_t)(colon + 1 - line.data));
            if (!md_str_caseeq(hn, "Content-Disposition"))
                continue;
            md_str_t disp = md_track_media_type(hv);
            char name[64];
            size_t nlen;
            if (md_str_caseeq(disp, "form-data") &&
                md_track_header_param(hv, "name", name, sizeof(name), &nlen)) {
                md_str_t nm = {nlen, name};
                is_field = md_str_caseeq(nm, "List-Unsubscribe");
            }
        }
        /* The value runs to the line end before the next delimiter. */
        size_t vs = i;
        for (;;) {
            const char *d = i < len ? memmem(body + i, len - i, bnd, bl) : NULL;
            if (d == NULL)
                return MD_ERROR;
            i = (size_t)(d - body);
            if (i > vs && body[i - 1] == '\n')
                break;
            if (i == vs)
                break; /* an empty value right before the delimiter */
            i++;
        }
        size_t ve = i;
        if (ve > vs && body[ve - 1] == '\n')
            ve--;
        if (ve > vs && body[ve - 1] == '\r')
            ve--;
        if (is_field && md_track_is_oneclick("List-Unsubscribe", 16, body + vs, ve - vs))
            found = true;
    }
}

int
md_track_oneclick_body(md_str_t content_type, const char *body, size_t len)
{
    if (body == NULL)
        len = 0, body = "";
    if (content_type.data == NULL)
        content_type.len = 0;
    md_str_t mt = md_track_media_type(content_type);
    if (mt.len == 0 || md_str_caseeq(mt, "application/x-www-form-urlencoded"))
        return md_track_oneclick_urlencoded(body, len);
    if (md_str_caseeq(mt, "multipart/form-data"))
        return md_track_oneclick_multipart(content_type, body, len);
    return MD_ERROR;
}
