/*
 * Runs a fuzz target (LLVMFuzzerTestOneInput, libFuzzer's interface) without
 * libFuzzer, as a TAP test for `make check`: first every input of its corpus
 * (t/fuzz/corpus/TARGET.txt, one base64 input per line), then mutations of
 * them for MD_FUZZ_SECONDS (default 2) from MD_FUZZ_SEED (default: the time,
 * printed). Under the sanitizer build a memory error or undefined behaviour
 * ends the run; the targets abort() when an answer is wrong. Either way the
 * input goes to fuzz-crash-TARGET in the current directory and the seed is
 * printed, so a failure can be replayed:
 *   MD_FUZZ_SEED=S t/fuzz/TARGET_f            (same mutations)
 *   t/fuzz/TARGET_f fuzz-crash-TARGET         (that input alone)
 * scripts/fuzz runs the same targets under libFuzzer, which finds far more
 * (coverage guided) and grows the corpus; this driver keeps what it found.
 */
#include "md_core.h"

#include <openssl/evp.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define MD_FUZZ_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MD_FUZZ_ASAN 1
#endif
#endif
#ifdef MD_FUZZ_ASAN
#include <sanitizer/common_interface_defs.h>
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
extern const char md_fuzz_target[]; /* the target's name, for its corpus and crash file */

#define MD_FUZZ_MAX 65536 /* a mutated input never grows past this */

typedef struct {
    uint8_t *data;
    size_t len;
} md_fuzz_input_t;

static md_fuzz_input_t *corpus;
static size_t ncorpus;
static uint8_t *current; /* the input being run, kept for the crash file */
static size_t current_len;
static unsigned long long seed;
static char crash_path[256];

static void
md_fuzz_dump(void)
{
    /* async-signal-safe: open, write, close */
    int fd = open(crash_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
        size_t off = 0;
        while (off < current_len) {
            ssize_t w = write(fd, current + off, current_len - off);
            if (w <= 0)
                break;
            off += (size_t)w;
        }
        close(fd);
    }
    static const char msg[] = "# the failing input is in ";
    if (write(2, msg, sizeof(msg) - 1) < 0 || write(2, crash_path, strlen(crash_path)) < 0 ||
        write(2, "\n", 1) < 0)
        return;
}

static void
md_fuzz_signal(int sig)
{
    md_fuzz_dump();
    signal(sig, SIG_DFL);
    raise(sig);
}

static void
md_fuzz_run(const uint8_t *d, size_t n)
{
    memcpy(current, d, n);
    current_len = n;
    /* the target gets its own copy, exactly n bytes, so reads past it are caught */
    uint8_t *copy = malloc(n ? n : 1);
    if (copy == NULL)
        abort();
    memcpy(copy, d, n);
    LLVMFuzzerTestOneInput(copy, n);
    free(copy);
}

/* One line of the corpus: padded base64, else NULL. */
static uint8_t *
b64decode(const char *s, size_t n, size_t *out_len)
{
    if (n % 4 != 0 || n > 4 * (MD_FUZZ_MAX / 3 + 1))
        return NULL;
    uint8_t *out = malloc(n / 4 * 3 + 1);
    if (out == NULL)
        return NULL;
    int got = EVP_DecodeBlock(out, (const unsigned char *)s, (int)n);
    if (got < 0) {
        free(out);
        return NULL;
    }
    /* EVP_DecodeBlock counts the padding's zero bytes */
    size_t pad = n >= 1 && s[n - 1] == '=' ? (n >= 2 && s[n - 2] == '=' ? 2 : 1) : 0;
    *out_len = (size_t)got - pad;
    return out;
}

static int
load_corpus(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        printf("# no corpus at %s: %s\n", path, strerror(errno));
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    unsigned lineno = 0;
    while ((n = getline(&line, &cap, f)) >= 0) {
        lineno++;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            n--;
        if (n > 0 && line[0] == '#')
            continue; /* a comment: where the inputs came from */
        size_t len;
        uint8_t *d = b64decode(line, (size_t)n, &len);
        if (d == NULL || len > MD_FUZZ_MAX) {
            printf("# %s:%u: not a base64 input of at most %d bytes\n", path, lineno, MD_FUZZ_MAX);
            free(d);
            free(line);
            fclose(f);
            return -1;
        }
        md_fuzz_input_t *c = realloc(corpus, (ncorpus + 1) * sizeof(*corpus));
        if (c == NULL)
            abort();
        corpus = c;
        corpus[ncorpus].data = d;
        corpus[ncorpus].len = len;
        ncorpus++;
    }
    free(line);
    fclose(f);
    return 0;
}

static unsigned long long rng;

static unsigned long long
next(void)
{
    /* splitmix64: small, and the same sequence everywhere for a seed */
    unsigned long long z = (rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static size_t
below(size_t n)
{
    return n ? (size_t)(next() % n) : 0;
}

/* Bytes that change how the parsers branch. */
static const char *const tokens[] = {
    "\"",
    "\\",
    "\\u",
    "\\ud800",
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "<",
    ">",
    "@",
    ".",
    "=?",
    "?=",
    "\r\n",
    "\n",
    "\r",
    "\0",
    "\xc3\xa9",
    "\xf0\x9f\x92\x8c",
    "\xff",
    "<a href=\"",
    "<!--",
    "-->",
    "{{",
    "}}",
    "{{#",
    "{{/",
    "{{^",
    "{{>",
    "{{=",
    "&amp;",
    "&#x",
    "%",
    "xn--",
    "--",
    "1e999",
    "-0",
    "null",
    "true",
    "9999999999999999999",
};

/* One to four mutations of a corpus input (or of two spliced). */
static size_t
mutate(uint8_t *buf)
{
    const md_fuzz_input_t *a = &corpus[below(ncorpus)];
    size_t n = a->len;
    memcpy(buf, a->data, n);
    int k = 1 + (int)below(4);
    while (k-- > 0) {
        size_t at = below(n + 1);
        switch (below(7)) {
        case 0: /* flip a bit */
            if (n)
                buf[below(n)] ^= (uint8_t)(1u << below(8));
            break;
        case 1: /* a random byte */
            if (n)
                buf[below(n)] = (uint8_t)next();
            break;
        case 2: { /* delete a range */
            if (at >= n)
                break;
            size_t len = 1 + below(n - at < 16 ? n - at : 16);
            memmove(buf + at, buf + at + len, n - at - len);
            n -= len;
            break;
        }
        case 3:
        case 4: { /* insert a token */
            const char *t = tokens[below(sizeof(tokens) / sizeof(tokens[0]))];
            size_t len = t[0] ? strlen(t) : 1;
            if (n + len > MD_FUZZ_MAX)
                break;
            memmove(buf + at + len, buf + at, n - at);
            memcpy(buf + at, t, len);
            n += len;
            break;
        }
        case 5: { /* repeat a range */
            if (at >= n)
                break;
            size_t len = 1 + below(n - at < 64 ? n - at : 64);
            size_t times = 1 + below(8);
            if (n + len * times > MD_FUZZ_MAX)
                break;
            memmove(buf + at + len * times, buf + at, n - at);
            /* the range moved to at + len * times; copies fill the gap before it */
            for (size_t i = 0; i < times; i++)
                memcpy(buf + at + len * i, buf + at + len * times, len);
            n += len * times;
            break;
        }
        default: { /* splice the tail of another input */
            const md_fuzz_input_t *b = &corpus[below(ncorpus)];
            size_t from = below(b->len + 1);
            size_t len = b->len - from;
            if (at + len > MD_FUZZ_MAX)
                len = MD_FUZZ_MAX - at;
            memcpy(buf + at, b->data + from, len);
            n = at + len;
            break;
        }
        }
    }
    return n;
}

static uint8_t *
read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    uint8_t *d = malloc(MD_FUZZ_MAX);
    size_t n = d ? fread(d, 1, MD_FUZZ_MAX, f) : 0;
    fclose(f);
    *len = n;
    return d;
}

int
main(int argc, char **argv)
{
    snprintf(crash_path, sizeof(crash_path), "fuzz-crash-%s", md_fuzz_target);
    current = malloc(MD_FUZZ_MAX);
    uint8_t *buf = malloc(MD_FUZZ_MAX);
    if (current == NULL || buf == NULL)
        return 1;
#ifdef MD_FUZZ_ASAN
    __sanitizer_set_death_callback(md_fuzz_dump);
#endif
    signal(SIGABRT, md_fuzz_signal);
    signal(SIGSEGV, md_fuzz_signal);
    signal(SIGBUS, md_fuzz_signal);
    signal(SIGFPE, md_fuzz_signal);

    if (argc > 1) { /* replay the given files */
        printf("1..%d\n", argc - 1);
        for (int i = 1; i < argc; i++) {
            size_t n;
            uint8_t *d = read_file(argv[i], &n);
            if (d == NULL) {
                printf("not ok %d - %s: %s\n", i, argv[i], strerror(errno));
                continue;
            }
            md_fuzz_run(d, n);
            free(d);
            printf("ok %d - %s (%zu bytes)\n", i, argv[i], n);
        }
        free(buf);
        free(current);
        return 0;
    }

    const char *srcdir = getenv("MD_SRCDIR");
    char path[1024];
    snprintf(path, sizeof(path), "%s/t/fuzz/corpus/%s.txt", srcdir ? srcdir : ".", md_fuzz_target);
    printf("1..2\n");
    if (load_corpus(path) != 0 || ncorpus == 0) {
        printf("not ok 1 - the corpus of %s loads\nnot ok 2 - no mutations without a corpus\n",
               md_fuzz_target);
        return 0;
    }
    for (size_t i = 0; i < ncorpus; i++) {
        md_fuzz_run(corpus[i].data, corpus[i].len);
    }
    printf("ok 1 - %s: every one of the %zu corpus inputs\n", md_fuzz_target, ncorpus);
    fflush(stdout);

    const char *s = getenv("MD_FUZZ_SEED");
    seed = s && *s ? strtoull(s, NULL, 10)
                   : (unsigned long long)time(NULL) ^ (unsigned long long)getpid();
    const char *secs = getenv("MD_FUZZ_SECONDS");
    double budget = secs && *secs ? strtod(secs, NULL) : 2.0;
    rng = seed;
    printf("# %s: seed %llu (MD_FUZZ_SEED=%llu to replay)\n", md_fuzz_target, seed, seed);
    fflush(stdout);
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    unsigned long long runs = 0;
    for (;;) {
        if ((runs & 63) == 0) {
            clock_gettime(CLOCK_MONOTONIC, &t);
            if ((double)(t.tv_sec - t0.tv_sec) + (double)(t.tv_nsec - t0.tv_nsec) / 1e9 >= budget)
                break;
        }
        size_t n = mutate(buf);
        md_fuzz_run(buf, n);
        runs++;
    }
    printf("ok 2 - %s: %llu mutated inputs in %.1f s (seed %llu)\n", md_fuzz_target, runs, budget,
           seed);
    for (size_t i = 0; i < ncorpus; i++)
        free(corpus[i].data);
    free(corpus);
    free(buf);
    free(current);
    return 0;
}
