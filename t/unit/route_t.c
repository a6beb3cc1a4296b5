/*
 * md_route's pure parts: the circuit breaker's state machine, the token
 * bucket's arithmetic (the same as the Redis script's), weighted try orders,
 * AIMD, and the routing { } configuration block.
 */
#include "md_route.h"
#include "md_metrics.h"
#include "tap.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static md_route_conf_t rc = {
    .breaker_failures = 3,
    .breaker_error_rate = 0.5,
    .breaker_window = 10.0,
    .breaker_min_requests = 10,
    .breaker_cooldown = 5.0,
};

static void
test_breaker_consecutive(void)
{
    md_breaker_t b;
    md_breaker_init(&b, &rc);
    double t = 1000.0;
    ok(md_breaker_allow(&b, t), "closed admits");
    md_breaker_result(&b, false, t);
    md_breaker_result(&b, false, t);
    is_int(b.state, MD_BREAKER_CLOSED, "two failures: still closed");
    md_breaker_result(&b, true, t);
    md_breaker_result(&b, false, t);
    md_breaker_result(&b, false, t);
    is_int(b.state, MD_BREAKER_CLOSED, "a success resets the run");
    md_breaker_result(&b, false, t);
    is_int(b.state, MD_BREAKER_OPEN, "three in a row open it");
    ok(!md_breaker_allow(&b, t + 1), "open refuses");
    ok(fabs(md_breaker_wait(&b, t + 1) - 4.0) < 1e-9, "wait is the cool-down left");
    ok(md_breaker_allow(&b, t + 5.1), "after the cool-down one probe goes");
    is_int(b.state, MD_BREAKER_HALF_OPEN, "half-open");
    ok(!md_breaker_allow(&b, t + 5.2), "a second probe waits");
    md_breaker_result(&b, false, t + 5.3);
    is_int(b.state, MD_BREAKER_OPEN, "a failed probe opens again");
    ok(!md_breaker_allow(&b, t + 6), "open again for a full cool-down");
    ok(md_breaker_allow(&b, t + 10.4), "probe after the second cool-down");
    md_breaker_release(&b);
    ok(md_breaker_allow(&b, t + 10.5), "a probe never sent lets another go");
    md_breaker_result(&b, true, t + 10.6);
    is_int(b.state, MD_BREAKER_CLOSED, "a good probe closes it");
    is_int(b.consecutive, 0, "and clears the run");
    is_str(md_breaker_state_name(MD_BREAKER_HALF_OPEN), "half-open", "state names");
}

static void
test_breaker_rate(void)
{
    md_breaker_t b;
    md_breaker_init(&b, &rc);
    double t = 2000.0;
    /* alternate ok/bad: never 3 in a row, but 50% errors */
    for (int i = 0; i < 8; i++)
        md_breaker_result(&b, i % 2 == 0, t + i * 0.1);
    is_int(b.state, MD_BREAKER_CLOSED, "below min_requests the rate does not count");
    md_breaker_result(&b, true, t + 0.9);
    md_breaker_result(&b, false, t + 1.0);
    is_int(b.state, MD_BREAKER_OPEN, "50%% of 10 in the window opens it");

    md_breaker_init(&b, &rc);
    for (int i = 0; i < 40; i++)
        md_breaker_result(&b, i % 3 != 0, t + i * 0.1);
    is_int(b.state, MD_BREAKER_CLOSED, "a third failing stays closed");
    /* old failures leave the window */
    md_breaker_init(&b, &rc);
    for (int i = 0; i < 9; i++)
        md_breaker_result(&b, i % 2 == 0, t);
    for (int i = 0; i < 9; i++)
        md_breaker_result(&b, true, t + 20 + i * 0.1);
    md_breaker_result(&b, false, t + 21);
    is_int(b.state, MD_BREAKER_CLOSED, "failures older than the window are forgotten");
}

static void
test_bucket(void)
{
    double tokens = 10, at = 0, wait = 0;
    int got = md_bucket_take(&tokens, &at, 0, 100, 10, 4, &wait);
    is_int(got, 4, "takes what is asked when there is enough");
    ok(fabs(tokens - 6) < 1e-9 && wait == 0, "6 left, no wait");
    got = md_bucket_take(&tokens, &at, 0, 100, 10, 10, &wait);
    is_int(got, 6, "takes what is left");
    got = md_bucket_take(&tokens, &at, 0, 100, 10, 10, &wait);
    is_int(got, 0, "empty");
    ok(fabs(wait - 0.01) < 1e-9, "wait for one token at 100/s: 10 ms (%.6f)", wait);
    got = md_bucket_take(&tokens, &at, 0.055, 100, 10, 10, &wait);
    is_int(got, 5, "55 ms at 100/s give 5 whole tokens");
    ok(fabs(tokens - 0.5) < 1e-6, "the half token stays (%.6f)", tokens);
    got = md_bucket_take(&tokens, &at, 100, 100, 10, 50, &wait);
    is_int(got, 10, "capped by the burst");
    got = md_bucket_take(&tokens, &at, 50, 100, 10, 1, &wait);
    is_int(got, 0, "a clock going back adds nothing");

    /* a simulated 10 s run: two workers taking batches at rate 200 */
    double rate = 200, burst = md_bucket_burst(rate);
    int batch = md_bucket_batch(rate);
    tokens = burst;
    at = 0;
    long total = 0;
    for (double now = 0; now < 10.0; now += 0.001) {
        for (int w = 0; w < 2; w++)
            total += md_bucket_take(&tokens, &at, now, rate, burst, batch, &wait);
    }
    ok(total >= 1900 && total <= 2100, "10 s at rate 200 gives 2000 +/- 5%% (%ld)", total);
    is_int(md_bucket_batch(200), 10, "batch 10 at 200/s");
    is_int(md_bucket_batch(5), 1, "batch 1 at 5/s");
    ok(md_bucket_burst(200) == 10, "burst at 200/s is 10");
}

static double
seq_rnd(void *ctx)
{
    /* xorshift for a reproducible uniform stream */
    uint64_t *x = ctx;
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return (double)(*x >> 11) / 9007199254740992.0;
}

static void
test_order(void)
{
    md_route_def_t def;
    memset(&def, 0, sizeof(def));
    def.n = 3;
    def.weight[0] = def.weight[1] = def.weight[2] = 1;
    size_t order[3];
    uint64_t x = 88172645463325252ull;
    md_route_order(&def, seq_rnd, &x, order);
    ok(order[0] == 0 && order[1] == 1 && order[2] == 2, "ordered route: as written");

    def.weighted = 1;
    def.n = 2;
    def.weight[0] = 3;
    def.weight[1] = 1;
    int first[2] = {0, 0};
    for (int i = 0; i < 40000; i++) {
        md_route_order(&def, seq_rnd, &x, order);
        first[order[0]]++;
        if (order[0] == order[1]) {
            ok(0, "an account twice in one order");
            break;
        }
    }
    double share = first[0] / 40000.0;
    ok(fabs(share - 0.75) < 0.01, "weight 3:1 puts the first first 75%% of the time (%.3f)", share);
    def.n = 3;
    def.weight[2] = 4; /* 3:1:4 */
    int pos[3][3], distinct = 1;
    memset(pos, 0, sizeof(pos));
    for (int i = 0; i < 40000; i++) {
        md_route_order(&def, seq_rnd, &x, order);
        for (int k = 0; k < 3; k++)
            pos[order[k]][k]++;
        if (order[0] == order[1] || order[1] == order[2] || order[0] == order[2])
            distinct = 0;
    }
    ok(distinct, "every order holds each account once");
    ok(fabs(pos[2][0] / 40000.0 - 0.5) < 0.01, "weight 4 of 8 first half the time");
    ok(fabs(pos[1][0] / 40000.0 - 0.125) < 0.01, "weight 1 of 8 first an eighth of the time");
    /* P(b second) = P(a first) * 1/5 + P(c first) * 1/4 = 3/8/5 + 1/2/4 = 0.2 */
    ok(fabs(pos[1][1] / 40000.0 - 0.2) < 0.01, "without replacement: weight 1 second 20%%");
}

static void
test_aimd(void)
{
    double last = 0, eff = 100;
    eff = md_aimd_throttle(eff, 100, &last, 10.0);
    ok(fabs(eff - 50) < 1e-9, "throttle halves");
    eff = md_aimd_throttle(eff, 100, &last, 10.5);
    ok(fabs(eff - 50) < 1e-9, "at most once a second");
    eff = md_aimd_throttle(eff, 100, &last, 11.5);
    ok(fabs(eff - 25) < 1e-9, "and again a second later");
    for (int i = 0; i < 20; i++)
        eff = md_aimd_throttle(eff, 100, &last, 20.0 + 2 * i);
    ok(fabs(eff - 1) < 1e-9, "never below the floor (%.3f)", eff);
    eff = md_aimd_success(eff, 100, &last, 60.0 + 2);
    ok(fabs(eff - 21) < 1e-9, "grows max/20 per second since the last change (%.3f)", eff);
    eff = md_aimd_success(eff, 100, &last, 200);
    ok(fabs(eff - 100) < 1e-9, "never above the rate");
}

static md_conf_t *
load(const char *text, char *err, size_t errlen)
{
    char path[] = "/tmp/route_t_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        return NULL;
    FILE *f = fdopen(fd, "w");
    fputs(text, f);
    fclose(f);
    md_conf_t *c = md_conf_load(path, "/tmp", err, errlen);
    unlink(path);
    return c;
}

static void
test_conf(void)
{
    char err[512] = "";
    md_conf_t *c =
        load("esp a { driver sink; }\nesp b { driver sink; }\nesp c { driver sink; }\n"
             "routing {\n  route main { esp a; esp b; }\n  route w { esp b weight 3; esp c; }\n"
             "  default_route w;\n"
             "  tenant_route 0190ABCD-0000-7000-8000-000000000001 main;\n"
             "  breaker_failures 7; breaker_cooldown 2s; breaker_error_rate 0.25;\n}\n",
             err, sizeof(err));
    ok(c != NULL, "routing block loads (%s)", err);
    if (c) {
        md_route_conf_t *r = c->routing;
        ok(r && r->nroutes == 2, "two routes");
        ok(r && !r->routes[0].weighted && r->routes[0].n == 2, "main is ordered");
        ok(r && r->routes[1].weighted && r->routes[1].weight[0] == 3 && r->routes[1].weight[1] == 1,
           "w is weighted 3:1");
        is_str(r ? r->default_route : "", "w", "default_route");
        is_str(r ? r->tenants[0].tenant : "", "0190abcd-0000-7000-8000-000000000001",
               "tenant id lower-cased");
        ok(r && r->breaker_failures == 7 && r->breaker_cooldown == 2.0 &&
               r->breaker_error_rate == 0.25 && r->breaker_window == 30.0 &&
               r->breaker_min_requests == 20,
           "breaker parameters and defaults");
        md_conf_free(c);
    }
    static const struct {
        const char *text, *want;
    } bad[] = {
        {"esp a { driver sink; }\nrouting { route m { esp zz; } }\n", "not configured"},
        {"routing { route m { esp a; } }\nesp a { driver sink; }\n", "not configured"},
        {"esp a { driver sink; }\nrouting { route m { } }\n", "names no esp"},
        {"esp a { driver sink; }\nrouting { route m { esp a; esp a; } }\n", "twice"},
        {"esp a { driver sink; }\nrouting { route m { esp a weight 0; } }\n", "invalid weight"},
        {"esp a { driver sink; }\nrouting { route m { esp a; } default_route x; }\n",
         "names no route"},
        {"esp a { driver sink; }\nrouting { route m { esp a; } tenant_route nope m; }\n",
         "invalid tenant"},
        {"esp a { driver sink; }\nrouting { route m { esp a; } route m { esp a; } }\n",
         "duplicate route"},
        {"esp a { driver sink; }\nrouting { breaker_error_rate 2; }\n", "ratio"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        md_conf_t *b = load(bad[i].text, err, sizeof(err));
        ok(b == NULL && strstr(err, bad[i].want) != NULL, "refused: %s (%s)", bad[i].want, err);
        if (b)
            md_conf_free(b);
    }
}

static void
test_tenant_rate_conf(void)
{
    char err[512] = "";
    md_conf_t *c = load("esp a { driver sink; }\n"
                        "routing {\n  tenant_rate 0190ABCD-0000-7000-8000-000000000001 50;\n"
                        "  tenant_rate 0190abcd-0000-7000-8000-000000000002 0;\n"
                        "  default_tenant_rate 20;\n}\n",
                        err, sizeof(err));
    ok(c != NULL, "tenant_rate and default_tenant_rate load (%s)", err);
    if (c) {
        md_route_conf_t *r = c->routing;
        ok(r && r->ntenant_rates == 2, "two tenant rates");
        is_str(r ? r->tenant_rates[0].tenant : "", "0190abcd-0000-7000-8000-000000000001",
               "tenant id lower-cased");
        is_int(md_route_tenant_rate(r, "0190abcd-0000-7000-8000-000000000001"), 50,
               "a listed tenant's rate");
        is_int(md_route_tenant_rate(r, "0190ABCD-0000-7000-8000-000000000001"), 50,
               "looked up in any case");
        is_int(md_route_tenant_rate(r, "0190abcd-0000-7000-8000-000000000002"), 0,
               "0 listed: unlimited despite the default");
        is_int(md_route_tenant_rate(r, "0190abcd-0000-7000-8000-000000000003"), 20,
               "an unlisted tenant gets default_tenant_rate");
        is_int(md_route_tenant_rate(r, ""), 0, "no tenant: unlimited");
        is_int(md_route_tenant_rate(r, NULL), 0, "NULL tenant: unlimited");
        md_conf_free(c);
    }
    c = load("esp a { driver sink; }\nrouting { route m { esp a; } }\n", err, sizeof(err));
    ok(c != NULL, "routing without tenant rates (%s)", err);
    if (c) {
        ok(c->routing->default_tenant_rate == 0 && c->routing->ntenant_rates == 0,
           "default: no tenant is limited");
        is_int(md_route_tenant_rate(c->routing, "0190abcd-0000-7000-8000-000000000001"), 0,
               "unlimited");
        md_conf_free(c);
    }
    is_int(md_route_tenant_rate(NULL, "0190abcd-0000-7000-8000-000000000001"), 0,
           "no routing block: unlimited");

    static const struct {
        const char *text, *want;
    } bad[] = {
        {"esp a { driver sink; }\nrouting { tenant_rate nope 5; }\n", "invalid tenant id"},
        {"esp a { driver sink; }\nrouting { tenant_rate 0190abcd-0000-7000-8000-000000000001 -1; "
         "}\n",
         "expected messages per second"},
        {"esp a { driver sink; }\nrouting { tenant_rate 0190abcd-0000-7000-8000-000000000001 5x; "
         "}\n",
         "expected messages per second"},
        {"esp a { driver sink; }\nrouting { tenant_rate 0190abcd-0000-7000-8000-000000000001 "
         "2000000; }\n",
         "expected messages per second"},
        {"esp a { driver sink; }\nrouting { tenant_rate 0190abcd-0000-7000-8000-000000000001; }\n",
         "tenant_rate"},
        {"esp a { driver sink; }\nrouting {\n tenant_rate 0190abcd-0000-7000-8000-000000000001 5;\n"
         " tenant_rate 0190ABCD-0000-7000-8000-000000000001 6;\n}\n",
         "duplicate tenant_rate"},
        {"esp a { driver sink; }\nrouting { default_tenant_rate fast; }\n",
         "expected messages per second"},
        {"esp a { driver sink; }\nrouting { default_tenant_rate 5; default_tenant_rate 6; }\n",
         "duplicate"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        md_conf_t *b = load(bad[i].text, err, sizeof(err));
        ok(b == NULL && strstr(err, bad[i].want) != NULL, "refused: %s (%s)", bad[i].want, err);
        if (b)
            md_conf_free(b);
    }
}

/* The accounts' figures in the metrics segment: registration by name, sums
 * over the slots, the quantiles and the /metrics series. */
static void
test_metrics(void)
{
    ok(md_metrics_init() == MD_OK, "metrics segment");
    md_metrics_attach(3);
    int a = md_metrics_esp_register("acct_a"), b = md_metrics_esp_register("acct_b");
    ok(a >= 0 && b >= 0 && a != b, "two accounts, two indexes (%d, %d)", a, b);
    is_int(md_metrics_esp_register("acct_a"), a, "a name registered again keeps its index");
    is_int(md_metrics_esp_find("acct_b"), b, "find");
    is_int(md_metrics_esp_find("nope"), -1, "an unknown name");
    char longname[80];
    memset(longname, 'x', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    is_int(md_metrics_esp_register(longname), -1, "a name too long is refused");

    md_metrics_esp_count(a, MD_METRICS_ESP_SENT, 3);
    md_metrics_esp_count(a, MD_METRICS_ESP_FAILED, 1);
    for (int i = 0; i < 10; i++)
        md_metrics_esp_latency(a, 0.003); /* bucket (2.5 ms, 5 ms] */
    md_metrics_esp_gauges_t g = {.live = 1,
                                 .in_flight = 2,
                                 .waiting = 5,
                                 .state = MD_BREAKER_OPEN,
                                 .consecutive = 4,
                                 .probe_at = 123.5,
                                 .rate = 200,
                                 .effective = 100};
    md_metrics_esp_gauges(a, &g);
    /* another worker's slot */
    md_metrics_attach(4);
    md_metrics_esp_count(a, MD_METRICS_ESP_SENT, 2);
    g.state = MD_BREAKER_CLOSED;
    g.in_flight = 1;
    g.waiting = 0;
    g.effective = 200;
    md_metrics_esp_gauges(a, &g);

    static md_metrics_esp_t m;
    ok(md_metrics_esp_read(a, &m) == MD_OK, "read");
    ok(m.count[MD_METRICS_ESP_SENT] == 5 && m.count[MD_METRICS_ESP_FAILED] == 1,
       "counts summed over the slots");
    ok(m.in_flight == 3 && m.waiting == 5, "gauges summed");
    ok(m.nworkers == 2 && m.open == 1, "two workers, one open");
    ok(m.worker[0].slot == 3 && m.worker[0].state == MD_BREAKER_OPEN &&
           fabs(m.worker[0].probe_at - 123.5) < 1e-6 && m.worker[0].consecutive == 4,
       "each worker's breaker");
    ok(fabs(m.effective - 150) < 1e-6 && fabs(m.rate - 200) < 1e-6,
       "effective rate is the workers' mean");
    ok(m.latency_count == 10 && fabs(m.latency_sum - 0.03) < 1e-6, "latency sum and count");
    ok(m.p50 > 0.0025 && m.p50 <= 0.005, "p50 inside its bucket (%.4f)", m.p50);
    ok(md_metrics_esp_read(b, &m) == MD_OK && m.count[MD_METRICS_ESP_SENT] == 0 && m.p50 == 0,
       "an idle account");
    ok(md_metrics_esp_read(MD_METRICS_MAX_ESPS - 1, &m) == MD_DECLINED, "unregistered index");

    md_metrics_slot_released(3);
    md_metrics_esp_read(a, &m);
    ok(m.nworkers == 1 && m.open == 0 && m.count[MD_METRICS_ESP_SENT] == 5,
       "a released slot drops its gauges, keeps its counts");

    md_buf_t out;
    md_buf_init(&out);
    md_metrics_render(&out, NULL);
    md_buf_append(&out, "", 1);
    ok(strstr(out.pos, "mailerd_esp_sent_total{esp=\"acct_a\"} 5\n") != NULL, "sent_total");
    ok(strstr(out.pos, "mailerd_esp_circuit_open{esp=\"acct_a\"} 0\n") != NULL, "circuit_open");
    ok(strstr(out.pos, "mailerd_esp_latency_seconds_count{esp=\"acct_a\"} 10\n") != NULL,
       "latency histogram");
    ok(strstr(out.pos, "mailerd_esp_latency_seconds_bucket{esp=\"acct_a\",le=\"0.005\"} 10\n") !=
           NULL,
       "cumulative buckets");
    ok(strstr(out.pos, "mailerd_esp_in_flight{esp=\"acct_b\"} 0\n") != NULL, "idle account");
    md_buf_free(&out);
}

int
main(void)
{
    test_breaker_consecutive();
    test_breaker_rate();
    test_bucket();
    test_order();
    test_aimd();
    test_conf();
    test_tenant_rate_conf();
    test_metrics();
    return done_testing();
}
