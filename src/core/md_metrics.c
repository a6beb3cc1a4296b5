/*
 * Shared-memory metrics (see md_metrics.h). Each slot has exactly one writer (the
 * worker attached to it, or the master once that worker is gone), so an increment
 * is a relaxed load and store: a plain add on x86, no lock prefix, no contention.
 * Readers sum the slots with relaxed loads; a render racing a request may be off
 * by that one request, never torn.
 */
#include "md_metrics.h"
#include "md_router.h"

#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <sys/mman.h>
#include <time.h>

/* Status codes we answer with get their own series; anything else counts as
 * "1xx".."5xx" or, outside 100..599, "other". */
static const int known_status[] = {100, 101, 200, 201, 202, 204, 206, 301, 302, 304, 400,
                                   401, 403, 404, 405, 408, 409, 410, 411, 413, 414, 415,
                                   417, 422, 429, 431, 500, 501, 502, 503, 504, 505};
#define NKNOWN      ((unsigned)md_nelems(known_status))
#define ST_CLASS(c) (NKNOWN + (c)-1) /* c in 1..5 */
#define ST_OTHER    (NKNOWN + 5)
#define NSTATUS     (NKNOWN + 6)

/* Upper bounds in nanoseconds so the hot path compares integers. */
static const uint64_t bucket_ns[] = {500000,     1000000,    2500000,    5000000,    10000000,
                                     25000000,   50000000,   100000000,  250000000,  500000000,
                                     1000000000, 2500000000, 5000000000, 10000000000};
static const char *bucket_le[] = {"0.0005", "0.001", "0.0025", "0.005", "0.01",
                                  "0.025",  "0.05",  "0.1",    "0.25",  "0.5",
                                  "1",      "2.5",   "5",      "10",    "+Inf"};
#define NBOUNDS  ((unsigned)md_nelems(bucket_ns))
#define NBUCKETS (NBOUNDS + 1)

/* Rows per group-commit flush. */
static const uint64_t rows_bound[] = {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000};
static const char *rows_le[] = {"1",   "2",   "5",    "10",   "20",   "50",  "100",
                                "200", "500", "1000", "2000", "5000", "+Inf"};
#define NROWBOUNDS  ((unsigned)md_nelems(rows_bound))
#define NROWBUCKETS (NROWBOUNDS + 1)

typedef struct {
    uint64_t bucket[NBUCKETS]; /* per bucket, not cumulative; count = their sum */
    uint64_t sum_ns;
} md_metrics_hist_t;

/* One account in one slot: counters (kept across the worker that replaces
 * this one) and gauges (zeroed when the worker goes). Rates are stored in
 * thousandths and the probe time in microseconds, so every field is one
 * integer store. */
typedef struct {
    uint64_t count[MD_METRICS_ESP_N];
    md_metrics_hist_t latency;
    int64_t live, in_flight, waiting, state, consecutive;
    int64_t probe_at_us;
    int64_t rate_milli, eff_milli;
    /* Recent errors, a ring written by the slot's worker only; each entry is
     * guarded by a sequence number (odd while it is being written) so a
     * reader in another process skips one it caught half-written. */
    uint64_t nerr;
    struct {
        uint64_t seq;
        int64_t at_us;
        char code[MD_METRICS_ESP_CODE_MAX];
    } err[MD_METRICS_ESP_ERRORS];
} md_metrics_esp_slot_t;

typedef struct {
    uint64_t used; /* set once a process attached: render skips never-used slots */
    int64_t connections;
    uint64_t requests[MD_METRICS_MAX_ROUTES][NSTATUS];
    md_metrics_hist_t hist[MD_METRICS_MAX_ROUTES];
    /* store: gauges (zeroed when the worker goes) and counters (kept) */
    int64_t pg_configured, pg_connected, pg_in_flight, pg_waiting;
    uint64_t pg_errors, pg_timeouts, pg_reconnects;
    int64_t redis_connected, redis_in_flight;
    uint64_t redis_reconnects, redis_errors;
    /* send API (counters) */
    uint64_t msg_accepted;
    uint64_t msg_rejected[MD_METRICS_MAX_REASONS];
    /* group commit (counters) */
    uint64_t gc_sent;
    uint64_t gc_rows_bucket[NROWBUCKETS]; /* per bucket; count = their sum */
    uint64_t gc_rows_sum;
    md_metrics_hist_t gc_latency;
    /* delivery (counters) */
    uint64_t delivery[MD_METRICS_DELIVERY_N];
    uint64_t delivery_latency_ns, delivery_latency_count;
    /* ESP accounts by shared index (md_metrics_esp_register) */
    md_metrics_esp_slot_t esp[MD_METRICS_MAX_ESPS];
    int64_t tenant_waiting; /* gauge */
    /* provider webhooks (counters) */
    uint64_t wh_events[MD_METRICS_MAX_WEBHOOK_NAMES];
    uint64_t wh_suppressions[MD_METRICS_MAX_WEBHOOK_NAMES];
    uint64_t wh_unknown[MD_METRICS_MAX_WEBHOOK_NAMES];
    uint64_t wh_refused[MD_METRICS_MAX_WEBHOOK_NAMES];
} md_metrics_slot_t;

/* Queue gauges: one server-wide value, whoever sampled it last (md_metrics.h).
 * Several workers may store at once; each field is one relaxed store, so a
 * render may mix two samples a few seconds apart, never a torn number. */
typedef struct {
    uint64_t sampled; /* 0 until a first sample: the series are left out until then */
    int64_t depth[2], scheduled, in_flight, dead;
} md_metrics_queue_t;

typedef struct {
    uint64_t worker_restarts;
    uint64_t start_time_ms;
    md_metrics_queue_t queue;
    /* ESP account names: entries below nesp are complete (written before nesp
     * grows, release/acquire); writers take esp_lock. */
    uint32_t esp_lock;
    uint32_t nesp;
    char esp_name[MD_METRICS_MAX_ESPS][MD_METRICS_ESP_NAME_MAX + 1];
    md_metrics_slot_t slot[MD_METRICS_MAX_SLOTS];
} md_metrics_shm_t;

static md_metrics_shm_t *shm;
static md_metrics_slot_t *self; /* the slot this process writes, or NULL */
static uint8_t status_index[600];
static void (*collector)(void);
static const char *const *reason_names; /* md_metrics_messages_reasons */
static unsigned nreasons;

#define LOAD(p)     __atomic_load_n((p), __ATOMIC_RELAXED)
#define STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define INC(p, n)   STORE((p), LOAD(p) + (n))

/*
 * Maps the segment once per master lifetime; later calls (a reload) keep it so
 * counters stay monotonic. Returns MD_OK or MD_ERROR with errno from mmap.
 */
int
md_metrics_init(void)
{
    if (shm)
        return MD_OK;
    void *p = mmap(NULL, sizeof(*shm), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return MD_ERROR;
    shm = p;
    for (unsigned s = 0; s < 600; s++)
        status_index[s] = (uint8_t)(s < 100 ? ST_OTHER : ST_CLASS(s / 100));
    for (unsigned i = 0; i < NKNOWN; i++)
        status_index[known_status[i]] = (uint8_t)i;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    STORE(&shm->start_time_ms, (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000);
    return MD_OK;
}

void
md_metrics_attach(unsigned slot)
{
    if (shm == NULL && md_metrics_init() != MD_OK) {
        self = NULL;
        return;
    }
    if (slot >= MD_METRICS_MAX_SLOTS) {
        self = NULL;
        return;
    }
    self = &shm->slot[slot];
    STORE(&self->used, 1);
}

/* Hot path: one table lookup, a short linear bucket search, four increments. */
void
md_metrics_http_request(unsigned route_id, int status, double seconds)
{
    md_metrics_slot_t *s = self;
    if (md_unlikely(s == NULL))
        return;
    if (md_unlikely(route_id >= MD_METRICS_NO_ROUTE))
        route_id = MD_METRICS_NO_ROUTE;
    unsigned si = (unsigned)status < 600 ? status_index[status] : ST_OTHER;
    INC(&s->requests[route_id][si], 1);

    uint64_t ns = 0;
    if (md_likely(seconds > 0)) /* false for NaN too */
        ns = seconds < 1e9 ? (uint64_t)(seconds * 1e9 + 0.5) : (uint64_t)1e18;
    unsigned b = 0;
    while (b < NBOUNDS && ns > bucket_ns[b])
        b++;
    md_metrics_hist_t *h = &s->hist[route_id];
    INC(&h->bucket[b], 1);
    INC(&h->sum_ns, ns);
}

void
md_metrics_connections(int delta)
{
    if (self)
        STORE(&self->connections, LOAD(&self->connections) + delta);
}

void
md_metrics_slot_released(unsigned slot)
{
    if (shm == NULL || slot >= MD_METRICS_MAX_SLOTS)
        return;
    md_metrics_slot_t *s = &shm->slot[slot];
    STORE(&s->connections, 0);
    STORE(&s->pg_configured, 0);
    STORE(&s->pg_connected, 0);
    STORE(&s->pg_in_flight, 0);
    STORE(&s->pg_waiting, 0);
    STORE(&s->redis_connected, 0);
    STORE(&s->redis_in_flight, 0);
    STORE(&s->tenant_waiting, 0);
    for (unsigned i = 0; i < MD_METRICS_MAX_ESPS; i++) {
        md_metrics_esp_slot_t *e = &s->esp[i];
        STORE(&e->live, 0);
        STORE(&e->in_flight, 0);
        STORE(&e->waiting, 0);
        STORE(&e->state, 0);
        STORE(&e->consecutive, 0);
        STORE(&e->eff_milli, 0);
    }
}

void
md_metrics_store_update(const md_metrics_store_t *m)
{
    md_metrics_slot_t *s = self;
    if (s == NULL)
        return;
    STORE(&s->pg_configured, m->pg_configured);
    STORE(&s->pg_connected, m->pg_connected);
    STORE(&s->pg_in_flight, m->pg_in_flight);
    STORE(&s->pg_waiting, m->pg_waiting);
    INC(&s->pg_errors, m->pg_errors);
    INC(&s->pg_timeouts, m->pg_timeouts);
    INC(&s->pg_reconnects, m->pg_reconnects);
    STORE(&s->redis_connected, m->redis_connected);
    STORE(&s->redis_in_flight, m->redis_in_flight);
    INC(&s->redis_reconnects, m->redis_reconnects);
    INC(&s->redis_errors, m->redis_errors);
}

void
md_metrics_set_collector(void (*collect)(void))
{
    collector = collect;
}

void
md_metrics_messages_reasons(const char *const *names, unsigned n)
{
    reason_names = names;
    nreasons = md_min(n, MD_METRICS_MAX_REASONS);
}

void
md_metrics_messages_accepted(uint64_t n)
{
    if (self)
        INC(&self->msg_accepted, n);
}

void
md_metrics_messages_rejected(unsigned reason, uint64_t n)
{
    if (self && reason < MD_METRICS_MAX_REASONS)
        INC(&self->msg_rejected[reason], n);
}

void
md_metrics_group_commit_sent(void)
{
    if (self)
        INC(&self->gc_sent, 1);
}

void
md_metrics_group_commit(unsigned rows, double seconds)
{
    md_metrics_slot_t *s = self;
    if (s == NULL)
        return;
    unsigned b = 0;
    while (b < NROWBOUNDS && rows > rows_bound[b])
        b++;
    INC(&s->gc_rows_bucket[b], 1);
    INC(&s->gc_rows_sum, rows);
    uint64_t ns = 0;
    if (seconds > 0)
        ns = seconds < 1e9 ? (uint64_t)(seconds * 1e9 + 0.5) : (uint64_t)1e18;
    b = 0;
    while (b < NBOUNDS && ns > bucket_ns[b])
        b++;
    INC(&s->gc_latency.bucket[b], 1);
    INC(&s->gc_latency.sum_ns, ns);
}

/* Group commit: flushes sent, and rows and round trips of the committed ones. */
static void
render_group_commit(md_buf_t *out)
{
    uint64_t sent = 0, rows[NROWBUCKETS], rows_sum = 0, lat[NBUCKETS], lat_ns = 0;
    memset(rows, 0, sizeof(rows));
    memset(lat, 0, sizeof(lat));
    for (unsigned s = 0; shm && s < MD_METRICS_MAX_SLOTS; s++) {
        const md_metrics_slot_t *sl = &shm->slot[s];
        if (!LOAD(&sl->used))
            continue;
        sent += LOAD(&sl->gc_sent);
        rows_sum += LOAD(&sl->gc_rows_sum);
        for (unsigned i = 0; i < NROWBUCKETS; i++)
            rows[i] += LOAD(&sl->gc_rows_bucket[i]);
        lat_ns += LOAD(&sl->gc_latency.sum_ns);
        for (unsigned i = 0; i < NBUCKETS; i++)
            lat[i] += LOAD(&sl->gc_latency.bucket[i]);
    }
    md_buf_printf(out,
                  "# HELP mailerd_group_commit_flushes_total Group-commit transactions sent "
                  "(retries included).\n"
                  "# TYPE mailerd_group_commit_flushes_total counter\n"
                  "mailerd_group_commit_flushes_total %llu\n"
                  "# HELP mailerd_group_commit_rows Messages per committed group-commit "
                  "transaction.\n"
                  "# TYPE mailerd_group_commit_rows histogram\n",
                  (unsigned long long)sent);
    uint64_t cum = 0;
    for (unsigned i = 0; i < NROWBUCKETS; i++) {
        cum += rows[i];
        md_buf_printf(out, "mailerd_group_commit_rows_bucket{le=\"%s\"} %llu\n", rows_le[i],
                      (unsigned long long)cum);
    }
    md_buf_printf(out,
                  "mailerd_group_commit_rows_sum %llu\nmailerd_group_commit_rows_count %llu\n"
                  "# HELP mailerd_group_commit_duration_seconds Time from sending a group commit "
                  "to its COMMIT answer.\n"
                  "# TYPE mailerd_group_commit_duration_seconds histogram\n",
                  (unsigned long long)rows_sum, (unsigned long long)cum);
    cum = 0;
    for (unsigned i = 0; i < NBUCKETS; i++) {
        cum += lat[i];
        md_buf_printf(out, "mailerd_group_commit_duration_seconds_bucket{le=\"%s\"} %llu\n",
                      bucket_le[i], (unsigned long long)cum);
    }
    md_buf_printf(out,
                  "mailerd_group_commit_duration_seconds_sum %llu.%09llu\n"
                  "mailerd_group_commit_duration_seconds_count %llu\n",
                  (unsigned long long)(lat_ns / 1000000000),
                  (unsigned long long)(lat_ns % 1000000000), (unsigned long long)cum);
}

static void append_label(md_buf_t *out, const char *s);

/* Webhook label tables (md_metrics_webhook_names), per process. */
static const char *const *wh_names[4];
static unsigned wh_n[4];

void
md_metrics_webhook_names(const char *const *types, unsigned ntypes, const char *const *reasons,
                         unsigned nreason, const char *const *providers, unsigned nproviders)
{
    wh_names[0] = types;
    wh_n[0] = md_min(ntypes, MD_METRICS_MAX_WEBHOOK_NAMES);
    wh_names[1] = reasons;
    wh_n[1] = md_min(nreason, MD_METRICS_MAX_WEBHOOK_NAMES);
    wh_names[2] = wh_names[3] = providers;
    wh_n[2] = wh_n[3] = md_min(nproviders, MD_METRICS_MAX_WEBHOOK_NAMES);
}

void
md_metrics_webhook_event(unsigned type, uint64_t n)
{
    if (self && type < MD_METRICS_MAX_WEBHOOK_NAMES)
        INC(&self->wh_events[type], n);
}

void
md_metrics_webhook_suppression(unsigned reason, uint64_t n)
{
    if (self && reason < MD_METRICS_MAX_WEBHOOK_NAMES)
        INC(&self->wh_suppressions[reason], n);
}

void
md_metrics_webhook_unknown(unsigned provider, uint64_t n)
{
    if (self && provider < MD_METRICS_MAX_WEBHOOK_NAMES)
        INC(&self->wh_unknown[provider], n);
}

void
md_metrics_webhook_refused(unsigned provider, uint64_t n)
{
    if (self && provider < MD_METRICS_MAX_WEBHOOK_NAMES)
        INC(&self->wh_refused[provider], n);
}

/* The four webhook families, summed over the slots; every registered label is
 * rendered (0 included) so a rate() sees the series from the start. */
static void
render_webhooks(md_buf_t *out)
{
    static const char *const fam[4][3] = {
        {"mailerd_events_total", "Provider events stored, by type.", "type"},
        {"mailerd_suppressions_added_total",
         "Suppression entries added or extended by provider events, by reason.", "reason"},
        {"mailerd_webhook_unknown_messages_total",
         "Provider events that named no message of this server, by provider.", "provider"},
        {"mailerd_webhook_verification_failures_total",
         "Webhook requests refused (signature, credentials, replay, topic), by provider.",
         "provider"},
    };
    if (shm == NULL)
        return;
    for (unsigned f = 0; f < 4; f++) {
        if (wh_names[f] == NULL)
            continue;
        md_buf_printf(out, "# HELP %s %s\n# TYPE %s counter\n", fam[f][0], fam[f][1], fam[f][0]);
        for (unsigned i = 0; i < wh_n[f]; i++) {
            uint64_t sum = 0;
            for (unsigned sl = 0; sl < MD_METRICS_MAX_SLOTS; sl++) {
                const md_metrics_slot_t *p = &shm->slot[sl];
                if (!LOAD(&p->used))
                    continue;
                const uint64_t *a = f == 0   ? p->wh_events
                                    : f == 1 ? p->wh_suppressions
                                    : f == 2 ? p->wh_unknown
                                             : p->wh_refused;
                sum += LOAD(&a[i]);
            }
            md_buf_printf(out, "%s{%s=\"", fam[f][0], fam[f][2]);
            append_label(out, wh_names[f][i]);
            md_buf_printf(out, "\"} %llu\n", (unsigned long long)sum);
        }
    }
}

void
md_metrics_delivery(int what, uint64_t n)
{
    if (self && what >= 0 && what < MD_METRICS_DELIVERY_N)
        INC(&self->delivery[what], n);
}

void
md_metrics_delivery_latency(double seconds)
{
    md_metrics_slot_t *s = self;
    if (s == NULL)
        return;
    uint64_t ns = 0;
    if (seconds > 0) /* false for NaN too; a clock step back counts as 0 */
        ns = seconds < 1e9 ? (uint64_t)(seconds * 1e9 + 0.5) : (uint64_t)1e18;
    INC(&s->delivery_latency_ns, ns);
    INC(&s->delivery_latency_count, 1);
}

void
md_metrics_queue_gauges(long long transactional, long long bulk, long long scheduled,
                        long long in_flight, long long dead)
{
    if (shm == NULL)
        return;
    md_metrics_queue_t *q = &shm->queue;
    STORE(&q->depth[0], (int64_t)transactional);
    STORE(&q->depth[1], (int64_t)bulk);
    STORE(&q->scheduled, (int64_t)scheduled);
    STORE(&q->in_flight, (int64_t)in_flight);
    STORE(&q->dead, (int64_t)dead);
    STORE(&q->sampled, 1);
}

/* The queue gauges, once something sampled them. */
static void
render_queue(md_buf_t *out)
{
    if (shm == NULL || !LOAD(&shm->queue.sampled))
        return;
    const md_metrics_queue_t *q = &shm->queue;
    md_buf_printf(out,
                  "# HELP mailerd_queue_depth Stream entries not yet read by any dispatcher, by "
                  "priority.\n"
                  "# TYPE mailerd_queue_depth gauge\n"
                  "mailerd_queue_depth{priority=\"transactional\"} %lld\n"
                  "mailerd_queue_depth{priority=\"bulk\"} %lld\n"
                  "# HELP mailerd_queue_scheduled Scheduled sends and retries waiting for their "
                  "time.\n"
                  "# TYPE mailerd_queue_scheduled gauge\n"
                  "mailerd_queue_scheduled %lld\n"
                  "# HELP mailerd_queue_in_flight Stream entries read and not yet acknowledged.\n"
                  "# TYPE mailerd_queue_in_flight gauge\n"
                  "mailerd_queue_in_flight %lld\n"
                  "# HELP mailerd_queue_dead Entries of the dead-letter stream.\n"
                  "# TYPE mailerd_queue_dead gauge\n"
                  "mailerd_queue_dead %lld\n",
                  (long long)LOAD(&q->depth[0]), (long long)LOAD(&q->depth[1]),
                  (long long)LOAD(&q->scheduled), (long long)LOAD(&q->in_flight),
                  (long long)LOAD(&q->dead));
}

/* Delivery counters and the accept-to-sent latency, summed over the used slots. */
static void
render_delivery(md_buf_t *out)
{
    uint64_t v[MD_METRICS_DELIVERY_N], ns = 0, count = 0;
    memset(v, 0, sizeof(v));
    for (unsigned s = 0; shm && s < MD_METRICS_MAX_SLOTS; s++) {
        const md_metrics_slot_t *sl = &shm->slot[s];
        if (!LOAD(&sl->used))
            continue;
        for (unsigned i = 0; i < MD_METRICS_DELIVERY_N; i++)
            v[i] += LOAD(&sl->delivery[i]);
        ns += LOAD(&sl->delivery_latency_ns);
        count += LOAD(&sl->delivery_latency_count);
    }
    md_buf_printf(
        out,
        "# HELP mailerd_messages_sent_total Send attempts the ESP took (recorded).\n"
        "# TYPE mailerd_messages_sent_total counter\n"
        "mailerd_messages_sent_total %llu\n"
        "# HELP mailerd_messages_failed_total Messages failed for good (permanent "
        "error or attempts spent).\n"
        "# TYPE mailerd_messages_failed_total counter\n"
        "mailerd_messages_failed_total %llu\n"
        "# HELP mailerd_messages_deferred_total Send attempts failed transiently and "
        "scheduled again.\n"
        "# TYPE mailerd_messages_deferred_total counter\n"
        "mailerd_messages_deferred_total %llu\n"
        "# HELP mailerd_queue_push_errors_total Queue writes that failed after commit "
        "(the sweeper requeues those messages).\n"
        "# TYPE mailerd_queue_push_errors_total counter\n"
        "mailerd_queue_push_errors_total %llu\n"
        "# HELP mailerd_queue_requeued_total Messages the sweeper or a resume put back on "
        "the queue.\n"
        "# TYPE mailerd_queue_requeued_total counter\n"
        "mailerd_queue_requeued_total %llu\n"
        "# HELP mailerd_delivery_attempts_total Send attempts started (claims).\n"
        "# TYPE mailerd_delivery_attempts_total counter\n"
        "mailerd_delivery_attempts_total %llu\n"
        "# HELP mailerd_dead_letters_total Messages added to the dead-letter queue.\n"
        "# TYPE mailerd_dead_letters_total counter\n"
        "mailerd_dead_letters_total %llu\n"
        "# HELP mailerd_queue_reclaimed_total Stream entries taken over from a dead "
        "consumer.\n"
        "# TYPE mailerd_queue_reclaimed_total counter\n"
        "mailerd_queue_reclaimed_total %llu\n"
        "# HELP mailerd_queue_handed_back_total Messages a stopping worker gave back "
        "unsent.\n"
        "# TYPE mailerd_queue_handed_back_total counter\n"
        "mailerd_queue_handed_back_total %llu\n"
        "# HELP mailerd_queue_sweeper_turns_total Sweeper turns by what they read: every "
        "waiting message (full), or only expired leases (recent).\n"
        "# TYPE mailerd_queue_sweeper_turns_total counter\n"
        "mailerd_queue_sweeper_turns_total{scope=\"full\"} %llu\n"
        "mailerd_queue_sweeper_turns_total{scope=\"recent\"} %llu\n"
        "# HELP mailerd_dispatch_latency_seconds Time from accept to sent.\n"
        "# TYPE mailerd_dispatch_latency_seconds summary\n"
        "mailerd_dispatch_latency_seconds_sum %llu.%09llu\n"
        "mailerd_dispatch_latency_seconds_count %llu\n",
        (unsigned long long)v[MD_METRICS_SENT], (unsigned long long)v[MD_METRICS_FAILED],
        (unsigned long long)v[MD_METRICS_DEFERRED],
        (unsigned long long)v[MD_METRICS_QUEUE_PUSH_ERRORS],
        (unsigned long long)v[MD_METRICS_REQUEUED], (unsigned long long)v[MD_METRICS_ATTEMPTS],
        (unsigned long long)v[MD_METRICS_DEAD], (unsigned long long)v[MD_METRICS_RECLAIMED],
        (unsigned long long)v[MD_METRICS_HANDED_BACK],
        (unsigned long long)v[MD_METRICS_SWEEPS_FULL],
        (unsigned long long)v[MD_METRICS_SWEEPS_RECENT], (unsigned long long)(ns / 1000000000),
        (unsigned long long)(ns % 1000000000), (unsigned long long)count);
}

/* The send API's counters, summed over the used slots. */
static void
render_messages(md_buf_t *out)
{
    uint64_t acc = 0, rej[MD_METRICS_MAX_REASONS];
    memset(rej, 0, sizeof(rej));
    for (unsigned s = 0; shm && s < MD_METRICS_MAX_SLOTS; s++) {
        const md_metrics_slot_t *sl = &shm->slot[s];
        if (!LOAD(&sl->used))
            continue;
        acc += LOAD(&sl->msg_accepted);
        for (unsigned i = 0; i < MD_METRICS_MAX_REASONS; i++)
            rej[i] += LOAD(&sl->msg_rejected[i]);
    }
    md_buf_printf(out,
                  "# HELP mailerd_messages_accepted_total Messages committed by the send API.\n"
                  "# TYPE mailerd_messages_accepted_total counter\n"
                  "mailerd_messages_accepted_total %llu\n",
                  (unsigned long long)acc);
    if (nreasons == 0)
        return;
    md_buf_append_str(out, "# HELP mailerd_messages_rejected_total Send API refusals (requests "
                           "or batch recipients), by reason code.\n"
                           "# TYPE mailerd_messages_rejected_total counter\n");
    for (unsigned i = 0; i < nreasons; i++) {
        md_buf_append_str(out, "mailerd_messages_rejected_total{reason=\"");
        append_label(out, reason_names[i]);
        md_buf_printf(out, "\"} %llu\n", (unsigned long long)rej[i]);
    }
}

void
md_metrics_worker_restart(void)
{
    if (shm)
        INC(&shm->worker_restarts, 1);
}

/* A label value escaped per the text format: backslash, double quote, newline. */
static void
append_label(md_buf_t *out, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '\\':
            md_buf_append(out, "\\\\", 2);
            break;
        case '"':
            md_buf_append(out, "\\\"", 2);
            break;
        case '\n':
            md_buf_append(out, "\\n", 2);
            break;
        default:
            md_buf_append(out, s, 1);
        }
    }
}

static void
append_route(md_buf_t *out, const md_router_t *rt, unsigned id)
{
    md_buf_append_str(out, "route=\"");
    const md_route_t *r = NULL;
    if (id == MD_METRICS_NO_ROUTE)
        md_buf_append_str(out, "none");
    else if (rt && (r = md_router_get(rt, id)) != NULL && r->pattern)
        append_label(out, r->pattern);
    else
        md_buf_printf(out, "#%u", id); /* unique per id, so series never collide */
    md_buf_append_str(out, "\"");
}

static void
status_label(char *buf, size_t len, unsigned si)
{
    if (si < NKNOWN)
        snprintf(buf, len, "%d", known_status[si]);
    else if (si < ST_OTHER)
        snprintf(buf, len, "%uxx", si - NKNOWN + 1);
    else
        snprintf(buf, len, "other");
}

/* ---- ESP accounts (issue 6) ------------------------------------------------------------ */

#define ESP_BREAKER_OPEN 1 /* MD_BREAKER_OPEN of md_route.h */

/* Takes the name table's lock. Only registration writes under it, for a few
 * microseconds at a worker's start; a holder that died inside would leave it
 * taken, so after a bounded wait the caller goes on without it (the worst
 * outcome is one account with two entries, each counting its own). */
static bool
esp_lock(void)
{
    for (unsigned i = 0; i < 100000; i++) {
        uint32_t expect = 0;
        if (__atomic_compare_exchange_n(&shm->esp_lock, &expect, 1, false, __ATOMIC_ACQUIRE,
                                        __ATOMIC_RELAXED))
            return true;
        sched_yield();
    }
    return false;
}

static int
esp_find(const char *name)
{
    uint32_t n = __atomic_load_n(&shm->nesp, __ATOMIC_ACQUIRE);
    for (uint32_t i = 0; i < n && i < MD_METRICS_MAX_ESPS; i++) {
        if (strcmp(shm->esp_name[i], name) == 0)
            return (int)i;
    }
    return -1;
}

int
md_metrics_esp_find(const char *name)
{
    if (shm == NULL || name == NULL)
        return -1;
    return esp_find(name);
}

int
md_metrics_esp_register(const char *name)
{
    if (shm == NULL || name == NULL || strlen(name) > MD_METRICS_ESP_NAME_MAX)
        return -1;
    int idx = esp_find(name);
    if (idx >= 0)
        return idx;
    bool locked = esp_lock();
    idx = esp_find(name);
    if (idx < 0) {
        uint32_t n = __atomic_load_n(&shm->nesp, __ATOMIC_ACQUIRE);
        if (n < MD_METRICS_MAX_ESPS) {
            md_strlcpy(shm->esp_name[n], name, sizeof(shm->esp_name[n]));
            __atomic_store_n(&shm->nesp, n + 1, __ATOMIC_RELEASE);
            idx = (int)n;
        }
    }
    if (locked)
        __atomic_store_n(&shm->esp_lock, 0, __ATOMIC_RELEASE);
    return idx;
}

void
md_metrics_esp_count(int idx, int what, uint64_t n)
{
    if (self && idx >= 0 && idx < MD_METRICS_MAX_ESPS && what >= 0 && what < MD_METRICS_ESP_N)
        INC(&self->esp[idx].count[what], n);
}

void
md_metrics_esp_error(int idx, double at, const char *code)
{
    if (self == NULL || idx < 0 || idx >= MD_METRICS_MAX_ESPS)
        return;
    md_metrics_esp_slot_t *e = &self->esp[idx];
    uint64_t n = LOAD(&e->nerr);
    __typeof__(e->err[0]) *x = &e->err[n % MD_METRICS_ESP_ERRORS];
    uint64_t seq = LOAD(&x->seq);
    __atomic_store_n(&x->seq, seq + 1, __ATOMIC_RELAXED); /* odd: being written */
    __atomic_thread_fence(__ATOMIC_RELEASE);
    STORE(&x->at_us, (int64_t)(at * 1e6));
    char buf[MD_METRICS_ESP_CODE_MAX];
    md_strlcpy(buf, code ? code : "", sizeof(buf));
    for (size_t i = 0; i < sizeof(buf); i++)
        __atomic_store_n(&x->code[i], buf[i], __ATOMIC_RELAXED);
    __atomic_store_n(&x->seq, seq + 2, __ATOMIC_RELEASE);
    STORE(&e->nerr, n + 1);
}

/* Adds slot s's recent errors of one account to out->errors, keeping the
 * newest MD_METRICS_ESP_ERRORS of all slots, newest first. */
static void
esp_errors_merge(const md_metrics_esp_slot_t *e, unsigned s, md_metrics_esp_t *out)
{
    for (unsigned k = 0; k < MD_METRICS_ESP_ERRORS; k++) {
        const __typeof__(e->err[0]) *x = &e->err[k];
        uint64_t seq = __atomic_load_n(&x->seq, __ATOMIC_ACQUIRE);
        if (seq == 0 || (seq & 1))
            continue;
        char code[MD_METRICS_ESP_CODE_MAX];
        int64_t at_us = LOAD(&x->at_us);
        for (size_t i = 0; i < sizeof(code); i++)
            code[i] = __atomic_load_n(&x->code[i], __ATOMIC_RELAXED);
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (LOAD(&x->seq) != seq)
            continue; /* rewritten meanwhile */
        code[sizeof(code) - 1] = '\0';
        double at = (double)at_us / 1e6;
        unsigned pos = out->nerrors;
        while (pos > 0 && out->errors[pos - 1].at < at)
            pos--;
        if (pos >= MD_METRICS_ESP_ERRORS)
            continue;
        unsigned last =
            out->nerrors < MD_METRICS_ESP_ERRORS ? out->nerrors : MD_METRICS_ESP_ERRORS - 1;
        memmove(&out->errors[pos + 1], &out->errors[pos], (last - pos) * sizeof(out->errors[0]));
        out->errors[pos].at = at;
        out->errors[pos].slot = s;
        memcpy(out->errors[pos].code, code, sizeof(code));
        if (out->nerrors < MD_METRICS_ESP_ERRORS)
            out->nerrors++;
    }
}

void
md_metrics_esp_latency(int idx, double seconds)
{
    if (self == NULL || idx < 0 || idx >= MD_METRICS_MAX_ESPS)
        return;
    uint64_t ns = 0;
    if (seconds > 0)
        ns = seconds < 1e9 ? (uint64_t)(seconds * 1e9 + 0.5) : (uint64_t)1e18;
    unsigned b = 0;
    while (b < NBOUNDS && ns > bucket_ns[b])
        b++;
    md_metrics_hist_t *h = &self->esp[idx].latency;
    INC(&h->bucket[b], 1);
    INC(&h->sum_ns, ns);
}

void
md_metrics_esp_gauges(int idx, const md_metrics_esp_gauges_t *g)
{
    if (self == NULL || idx < 0 || idx >= MD_METRICS_MAX_ESPS)
        return;
    md_metrics_esp_slot_t *e = &self->esp[idx];
    STORE(&e->in_flight, g->in_flight);
    STORE(&e->waiting, g->waiting);
    STORE(&e->state, g->state);
    STORE(&e->consecutive, g->consecutive);
    STORE(&e->probe_at_us, (int64_t)(g->probe_at * 1e6));
    STORE(&e->rate_milli, (int64_t)(g->rate * 1000.0 + 0.5));
    STORE(&e->eff_milli, (int64_t)(g->effective * 1000.0 + 0.5));
    STORE(&e->live, g->live ? 1 : 0);
}

void
md_metrics_tenant_waiting(int64_t n)
{
    if (self)
        STORE(&self->tenant_waiting, n);
}

/* A quantile of a per-bucket (not cumulative) histogram of count samples, by
 * linear interpolation inside its bucket; the +Inf bucket answers its lower
 * bound. */
static double
esp_quantile(const uint64_t *bucket, uint64_t count, double q)
{
    if (count == 0)
        return 0;
    double want = q * (double)count, cum = 0;
    for (unsigned i = 0; i < NBUCKETS; i++) {
        if (bucket[i] == 0)
            continue;
        double lo = i == 0 ? 0 : (double)bucket_ns[i - 1] / 1e9;
        if (i == NBOUNDS)
            return lo;
        if (cum + (double)bucket[i] >= want) {
            double hi = (double)bucket_ns[i] / 1e9;
            return lo + (hi - lo) * ((want - cum) / (double)bucket[i]);
        }
        cum += (double)bucket[i];
    }
    return (double)bucket_ns[NBOUNDS - 1] / 1e9;
}

/* Sums idx over the used slots into out, and the histogram into bucket. */
static void
esp_sum(int idx, md_metrics_esp_t *out, uint64_t *bucket)
{
    memset(out, 0, sizeof(*out));
    memset(bucket, 0, sizeof(uint64_t) * NBUCKETS);
    uint64_t sum_ns = 0;
    double eff = 0;
    unsigned live = 0;
    for (unsigned s = 0; s < MD_METRICS_MAX_SLOTS; s++) {
        const md_metrics_slot_t *sl = &shm->slot[s];
        if (!LOAD(&sl->used))
            continue;
        const md_metrics_esp_slot_t *e = &sl->esp[idx];
        for (unsigned i = 0; i < MD_METRICS_ESP_N; i++)
            out->count[i] += LOAD(&e->count[i]);
        for (unsigned i = 0; i < NBUCKETS; i++)
            bucket[i] += LOAD(&e->latency.bucket[i]);
        sum_ns += LOAD(&e->latency.sum_ns);
        esp_errors_merge(e, s, out);
        if (!LOAD(&e->live))
            continue;
        md_metrics_esp_worker_t *w = &out->worker[out->nworkers++];
        w->slot = s;
        w->state = (int)LOAD(&e->state);
        w->consecutive = (int)LOAD(&e->consecutive);
        w->probe_at = (double)LOAD(&e->probe_at_us) / 1e6;
        w->effective = (double)LOAD(&e->eff_milli) / 1000.0;
        w->in_flight = LOAD(&e->in_flight);
        w->waiting = LOAD(&e->waiting);
        out->in_flight += w->in_flight;
        out->waiting += w->waiting;
        if (w->state == ESP_BREAKER_OPEN)
            out->open++;
        double rate = (double)LOAD(&e->rate_milli) / 1000.0;
        if (rate > out->rate)
            out->rate = rate;
        eff += w->effective;
        live++;
    }
    for (unsigned i = 0; i < NBUCKETS; i++)
        out->latency_count += bucket[i];
    out->latency_sum = (double)sum_ns / 1e9;
    out->p50 = esp_quantile(bucket, out->latency_count, 0.5);
    out->p90 = esp_quantile(bucket, out->latency_count, 0.9);
    out->effective = live ? eff / live : 0;
}

int
md_metrics_esp_read(int idx, md_metrics_esp_t *out)
{
    if (shm == NULL || idx < 0 || (uint32_t)idx >= __atomic_load_n(&shm->nesp, __ATOMIC_ACQUIRE))
        return MD_DECLINED;
    uint64_t bucket[NBUCKETS];
    esp_sum(idx, out, bucket);
    return MD_OK;
}

/* Every account's figures for one render; static for the same reason as the
 * route sums below (about 200 KB). */
static md_metrics_esp_t esp_all[MD_METRICS_MAX_ESPS];
static uint64_t esp_bucket[MD_METRICS_MAX_ESPS][NBUCKETS];

static void
esp_series(md_buf_t *out, unsigned n, const char *name, const char *type, const char *help,
           int what)
{
    md_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
    for (unsigned i = 0; i < n; i++) {
        const md_metrics_esp_t *e = &esp_all[i];
        md_buf_printf(out, "%s{esp=\"", name);
        append_label(out, shm->esp_name[i]);
        md_buf_append_str(out, "\"} ");
        switch (what) {
        case -1:
            md_buf_printf(out, "%lld\n", (long long)e->in_flight);
            break;
        case -2:
            md_buf_printf(out, "%lld\n", (long long)e->waiting);
            break;
        case -3:
            md_buf_printf(out, "%u\n", e->open);
            break;
        case -4:
            md_buf_printf(out, "%.3f\n", e->rate);
            break;
        case -5:
            md_buf_printf(out, "%.3f\n", e->effective);
            break;
        default:
            md_buf_printf(out, "%llu\n", (unsigned long long)e->count[what]);
        }
    }
}

/* The accounts any process registered, summed over the slots. */
static void
render_esps(md_buf_t *out)
{
    if (shm == NULL)
        return;
    int64_t tw = 0;
    for (unsigned s = 0; s < MD_METRICS_MAX_SLOTS; s++) {
        if (LOAD(&shm->slot[s].used))
            tw += LOAD(&shm->slot[s].tenant_waiting);
    }
    md_buf_printf(out,
                  "# HELP mailerd_tenant_rate_waiting Sends waiting for a token of their "
                  "tenant's rate (tenant_rate).\n"
                  "# TYPE mailerd_tenant_rate_waiting gauge\n"
                  "mailerd_tenant_rate_waiting %lld\n",
                  (long long)tw);
    unsigned n = __atomic_load_n(&shm->nesp, __ATOMIC_ACQUIRE);
    if (n > MD_METRICS_MAX_ESPS)
        n = MD_METRICS_MAX_ESPS;
    if (n == 0)
        return;
    for (unsigned i = 0; i < n; i++)
        esp_sum((int)i, &esp_all[i], esp_bucket[i]);
    esp_series(out, n, "mailerd_esp_sent_total", "counter", "Sends the ESP account took.",
               MD_METRICS_ESP_SENT);
    esp_series(out, n, "mailerd_esp_failed_total", "counter",
               "Sends to the ESP account that failed retryably (timeouts, 5xx, throttling).",
               MD_METRICS_ESP_FAILED);
    esp_series(out, n, "mailerd_esp_rejected_total", "counter",
               "Sends the ESP account refused for good (address or content).",
               MD_METRICS_ESP_REJECTED);
    esp_series(out, n, "mailerd_esp_throttled_total", "counter",
               "Sends the ESP account throttled (429, TooManyRequests).", MD_METRICS_ESP_THROTTLED);
    esp_series(out, n, "mailerd_esp_in_flight", "gauge", "Sends to the ESP account out now.", -1);
    esp_series(out, n, "mailerd_esp_waiting_for_token", "gauge",
               "Sends waiting for a token of the ESP account's rate.", -2);
    esp_series(out, n, "mailerd_esp_circuit_open", "gauge",
               "Workers whose circuit breaker of the ESP account is open.", -3);
    esp_series(out, n, "mailerd_esp_rate_limit", "gauge",
               "Configured sending rate of the ESP account (messages/s, 0: unlimited).", -4);
    esp_series(out, n, "mailerd_esp_rate_effective", "gauge",
               "Effective sending rate of the ESP account (mean over workers; lowered "
               "adaptively after throttling).",
               -5);
    md_buf_append_str(out, "# HELP mailerd_esp_latency_seconds Time from send to the ESP "
                           "account's answer.\n# TYPE mailerd_esp_latency_seconds histogram\n");
    for (unsigned i = 0; i < n; i++) {
        uint64_t cum = 0;
        for (unsigned b = 0; b < NBUCKETS; b++) {
            cum += esp_bucket[i][b];
            md_buf_append_str(out, "mailerd_esp_latency_seconds_bucket{esp=\"");
            append_label(out, shm->esp_name[i]);
            md_buf_printf(out, "\",le=\"%s\"} %llu\n", bucket_le[b], (unsigned long long)cum);
        }
        uint64_t ns = (uint64_t)(esp_all[i].latency_sum * 1e9 + 0.5);
        md_buf_append_str(out, "mailerd_esp_latency_seconds_sum{esp=\"");
        append_label(out, shm->esp_name[i]);
        md_buf_printf(out, "\"} %llu.%09llu\n", (unsigned long long)(ns / 1000000000),
                      (unsigned long long)(ns % 1000000000));
        md_buf_append_str(out, "mailerd_esp_latency_seconds_count{esp=\"");
        append_label(out, shm->esp_name[i]);
        md_buf_printf(out, "\"} %llu\n", (unsigned long long)cum);
    }
}

/* Sums of every used slot; static because a render is never reentered and these
 * are too big for a worker's stack to carry comfortably. */
static uint64_t sum_req[MD_METRICS_MAX_ROUTES][NSTATUS];
static uint64_t sum_bucket[MD_METRICS_MAX_ROUTES][NBUCKETS];
static uint64_t sum_ns[MD_METRICS_MAX_ROUTES];

/*
 * Appends the Prometheus text (0.0.4) of every slot summed to out. rt names the
 * routes; it may be NULL (routes are then labelled by id). Only series that have
 * counted something are written, except the process-wide ones.
 */
void
md_metrics_render(md_buf_t *out, const md_router_t *rt)
{
    if (collector)
        collector();
    memset(sum_req, 0, sizeof(sum_req));
    memset(sum_bucket, 0, sizeof(sum_bucket));
    memset(sum_ns, 0, sizeof(sum_ns));
    int64_t conns = 0;
    uint64_t restarts = 0, start_ms = 0;
    md_metrics_store_t ss;
    memset(&ss, 0, sizeof(ss));

    if (shm) {
        restarts = LOAD(&shm->worker_restarts);
        start_ms = LOAD(&shm->start_time_ms);
        for (unsigned s = 0; s < MD_METRICS_MAX_SLOTS; s++) {
            const md_metrics_slot_t *sl = &shm->slot[s];
            if (!LOAD(&sl->used))
                continue;
            conns += LOAD(&sl->connections);
            ss.pg_configured += LOAD(&sl->pg_configured);
            ss.pg_connected += LOAD(&sl->pg_connected);
            ss.pg_in_flight += LOAD(&sl->pg_in_flight);
            ss.pg_waiting += LOAD(&sl->pg_waiting);
            ss.pg_errors += LOAD(&sl->pg_errors);
            ss.pg_timeouts += LOAD(&sl->pg_timeouts);
            ss.pg_reconnects += LOAD(&sl->pg_reconnects);
            ss.redis_connected += LOAD(&sl->redis_connected);
            ss.redis_in_flight += LOAD(&sl->redis_in_flight);
            ss.redis_reconnects += LOAD(&sl->redis_reconnects);
            ss.redis_errors += LOAD(&sl->redis_errors);
            for (unsigned r = 0; r < MD_METRICS_MAX_ROUTES; r++) {
                for (unsigned i = 0; i < NSTATUS; i++)
                    sum_req[r][i] += LOAD(&sl->requests[r][i]);
                for (unsigned i = 0; i < NBUCKETS; i++)
                    sum_bucket[r][i] += LOAD(&sl->hist[r].bucket[i]);
                sum_ns[r] += LOAD(&sl->hist[r].sum_ns);
            }
        }
    }

    md_buf_append_str(out, "# HELP mailerd_http_requests_total HTTP requests answered, by route "
                           "and status.\n# TYPE mailerd_http_requests_total counter\n");
    char st[16];
    for (unsigned r = 0; r < MD_METRICS_MAX_ROUTES; r++) {
        for (unsigned i = 0; i < NSTATUS; i++) {
            if (sum_req[r][i] == 0)
                continue;
            status_label(st, sizeof(st), i);
            md_buf_append_str(out, "mailerd_http_requests_total{");
            append_route(out, rt, r);
            md_buf_printf(out, ",status=\"%s\"} %llu\n", st, (unsigned long long)sum_req[r][i]);
        }
    }

    md_buf_append_str(out, "# HELP mailerd_http_request_duration_seconds Time to answer an HTTP "
                           "request.\n# TYPE mailerd_http_request_duration_seconds histogram\n");
    for (unsigned r = 0; r < MD_METRICS_MAX_ROUTES; r++) {
        uint64_t cum = 0;
        for (unsigned i = 0; i < NBUCKETS; i++)
            cum += sum_bucket[r][i];
        if (cum == 0)
            continue;
        cum = 0;
        for (unsigned i = 0; i < NBUCKETS; i++) {
            cum += sum_bucket[r][i];
            md_buf_append_str(out, "mailerd_http_request_duration_seconds_bucket{");
            append_route(out, rt, r);
            md_buf_printf(out, ",le=\"%s\"} %llu\n", bucket_le[i], (unsigned long long)cum);
        }
        md_buf_append_str(out, "mailerd_http_request_duration_seconds_sum{");
        append_route(out, rt, r);
        md_buf_printf(out, "} %llu.%09llu\n", (unsigned long long)(sum_ns[r] / 1000000000),
                      (unsigned long long)(sum_ns[r] % 1000000000));
        md_buf_append_str(out, "mailerd_http_request_duration_seconds_count{");
        append_route(out, rt, r);
        md_buf_printf(out, "} %llu\n", (unsigned long long)cum);
    }

    md_buf_printf(out,
                  "# HELP mailerd_http_connections_open Client connections open now.\n"
                  "# TYPE mailerd_http_connections_open gauge\n"
                  "mailerd_http_connections_open %lld\n"
                  "# HELP mailerd_worker_restarts_total Workers that died and were replaced.\n"
                  "# TYPE mailerd_worker_restarts_total counter\n"
                  "mailerd_worker_restarts_total %llu\n"
                  "# HELP mailerd_start_time_seconds Start time of the master since the epoch.\n"
                  "# TYPE mailerd_start_time_seconds gauge\n"
                  "mailerd_start_time_seconds %llu.%03llu\n"
                  "# HELP mailerd_build_info Build information.\n"
                  "# TYPE mailerd_build_info gauge\n"
                  "mailerd_build_info{version=\"",
                  (long long)conns, (unsigned long long)restarts,
                  (unsigned long long)(start_ms / 1000), (unsigned long long)(start_ms % 1000));
    append_label(out, MD_VERSION);
    md_buf_append_str(out, "\"} 1\n");

    md_buf_printf(
        out,
        "# HELP mailerd_pg_pool_connections PostgreSQL connections of all workers.\n"
        "# TYPE mailerd_pg_pool_connections gauge\n"
        "mailerd_pg_pool_connections{state=\"configured\"} %lld\n"
        "mailerd_pg_pool_connections{state=\"connected\"} %lld\n"
        "# HELP mailerd_pg_queries_in_flight PostgreSQL units sent and not yet answered.\n"
        "# TYPE mailerd_pg_queries_in_flight gauge\n"
        "mailerd_pg_queries_in_flight %lld\n"
        "# HELP mailerd_pg_queries_waiting PostgreSQL units queued for a connection.\n"
        "# TYPE mailerd_pg_queries_waiting gauge\n"
        "mailerd_pg_queries_waiting %lld\n"
        "# HELP mailerd_pg_query_errors_total PostgreSQL units that ended in an error.\n"
        "# TYPE mailerd_pg_query_errors_total counter\n"
        "mailerd_pg_query_errors_total %llu\n"
        "# HELP mailerd_pg_timeouts_total PostgreSQL units that timed out.\n"
        "# TYPE mailerd_pg_timeouts_total counter\n"
        "mailerd_pg_timeouts_total %llu\n"
        "# HELP mailerd_pg_reconnects_total PostgreSQL connection attempts after a failure.\n"
        "# TYPE mailerd_pg_reconnects_total counter\n"
        "mailerd_pg_reconnects_total %llu\n"
        "# HELP mailerd_redis_connected Workers whose Redis command connection is ready.\n"
        "# TYPE mailerd_redis_connected gauge\n"
        "mailerd_redis_connected %lld\n"
        "# HELP mailerd_redis_commands_in_flight Redis commands sent and not yet answered.\n"
        "# TYPE mailerd_redis_commands_in_flight gauge\n"
        "mailerd_redis_commands_in_flight %lld\n"
        "# HELP mailerd_redis_reconnects_total Redis connections re-established after a loss.\n"
        "# TYPE mailerd_redis_reconnects_total counter\n"
        "mailerd_redis_reconnects_total %llu\n"
        "# HELP mailerd_redis_errors_total Redis error replies and failed commands.\n"
        "# TYPE mailerd_redis_errors_total counter\n"
        "mailerd_redis_errors_total %llu\n",
        (long long)ss.pg_configured, (long long)ss.pg_connected, (long long)ss.pg_in_flight,
        (long long)ss.pg_waiting, (unsigned long long)ss.pg_errors,
        (unsigned long long)ss.pg_timeouts, (unsigned long long)ss.pg_reconnects,
        (long long)ss.redis_connected, (long long)ss.redis_in_flight,
        (unsigned long long)ss.redis_reconnects, (unsigned long long)ss.redis_errors);
    render_messages(out);
    render_group_commit(out);
    render_delivery(out);
    render_queue(out);
    render_esps(out);
    render_webhooks(out);
}
