/*
 * SHA-256 for the whole process (API key digests, SigV4, migration checksums).
 * EVP_sha256() makes OpenSSL 3 look the algorithm up in its provider store on
 * every use, two thirds of a 300 ns digest of an API key: the algorithm is
 * fetched once per process and one context reused (a process is one thread).
 */
#ifndef MD_DIGEST_H
#define MD_DIGEST_H

#include "md_core.h"

#include <openssl/evp.h>

/* The fetched SHA-256, for HMAC and the like; NULL if OpenSSL has none. */
const EVP_MD *md_sha256_md(void);
/* out = SHA-256(data[0..n)). MD_OK, or MD_ERROR (no SHA-256: cannot happen with
 * the default provider). */
int md_sha256(const void *data, size_t n, unsigned char out[32]);

#endif
