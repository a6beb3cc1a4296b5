#include "md_id.h"

#include <sys/random.h>
#include <time.h>

/* xoshiro256** seeded from getrandom(): request ids need uniqueness, not secrecy,
 * and a syscall per id would cost more than the rest of a /health answer. Secrets
 * (API keys, tokens) must use md_random_bytes() instead. */
static uint64_t s[4];
static int seeded;

static inline uint64_t
rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t
next64(void)
{
    uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

int
md_random_bytes(void *buf, size_t n)
{
    char *p = buf;
    while (n) {
        ssize_t r = getrandom(p, n, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return MD_ERROR;
        }
        p += r;
        n -= (size_t)r;
    }
    return MD_OK;
}

int
md_id_init(void)
{
    if (md_random_bytes(s, sizeof(s)) != MD_OK)
        return MD_ERROR;
    if ((s[0] | s[1] | s[2] | s[3]) == 0)
        s[0] = 1;
    seeded = 1;
    return MD_OK;
}

void
md_uuid7(char *out)
{
    static const char hex[] = "0123456789abcdef";
    static uint64_t last_ms;
    static uint16_t seq;
    unsigned char b[16];
    struct timespec ts;

    if (!seeded)
        md_id_init();
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    /* Monotonic within a process: ids made in the same millisecond keep their order
     * through a 12-bit counter in rand_a (RFC 9562 section 6.2, method 1). */
    if (ms <= last_ms) {
        ms = last_ms;
        if (++seq > 0xfff) {
            seq = 0;
            ms = ++last_ms;
        }
    } else {
        last_ms = ms;
        seq = (uint16_t)(next64() & 0x7ff);
    }
    uint64_t r = next64();
    b[0] = (unsigned char)(ms >> 40);
    b[1] = (unsigned char)(ms >> 32);
    b[2] = (unsigned char)(ms >> 24);
    b[3] = (unsigned char)(ms >> 16);
    b[4] = (unsigned char)(ms >> 8);
    b[5] = (unsigned char)ms;
    b[6] = (unsigned char)(0x70 | ((seq >> 8) & 0x0f));
    b[7] = (unsigned char)seq;
    b[8] = (unsigned char)(0x80 | ((r >> 56) & 0x3f));
    for (int i = 9; i < 16; i++)
        b[i] = (unsigned char)(r >> (8 * (15 - i)));
    int o = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = hex[b[i] >> 4];
        out[o++] = hex[b[i] & 15];
    }
    out[o] = '\0';
}
