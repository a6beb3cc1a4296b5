/* SHA-256 fetched once per process (see md_digest.h). */
#include "md_digest.h"

const EVP_MD *
md_sha256_md(void)
{
    static EVP_MD *md;
    if (md == NULL)
        md = EVP_MD_fetch(NULL, "SHA256", NULL);
    return md;
}

int
md_sha256(const void *data, size_t n, unsigned char out[32])
{
    static EVP_MD_CTX *ctx;
    const EVP_MD *md = md_sha256_md();
    unsigned int len = 32;
    if (ctx == NULL)
        ctx = EVP_MD_CTX_new();
    if (md == NULL || ctx == NULL || EVP_DigestInit_ex(ctx, md, NULL) != 1 ||
        EVP_DigestUpdate(ctx, data, n) != 1 || EVP_DigestFinal_ex(ctx, out, &len) != 1 || len != 32)
        return MD_ERROR;
    return MD_OK;
}
