/* Sampler tests: greedy argmax and tie-breaking, seed reproducibility, top-k /
 * top-p / min-p exclusion over many draws, empirical frequencies against the
 * softmax (chi-square with a fixed seed), repetition penalty, NaN/inf logits. */
#include "kvlite.h"
#include "test.h"

#include <string.h>

#define NV 8

static kvl_sampler *mk(float temp, int top_k, float top_p, float min_p, float pen, uint64_t seed) {
    kvl_sampler_params p;
    kvl_sampler_params_default(&p);
    p.temperature = temp;
    p.top_k = top_k;
    p.top_p = top_p;
    p.min_p = min_p;
    p.repeat_penalty = pen;
    p.seed = seed;
    kvl_sampler *s = NULL;
    kvl_status st = kvl_sampler_create(&p, NV, &s);
    CHECK(st == KVL_OK && s);
    return s;
}

static const float base[NV] = {1.0f, 2.5f, 0.3f, 2.0f, -1.0f, 0.0f, 1.5f, -3.0f};

static kvl_token draw(kvl_sampler *s, const float *src) {
    float l[NV];
    memcpy(l, src, sizeof l);
    return kvl_sampler_sample(s, l);
}

static void test_defaults(void) {
    kvl_sampler_params p;
    kvl_sampler_params_default(&p);
    CHECK_NEAR(p.temperature, 0.8, 1e-6);
    CHECK(p.top_k == 40);
    CHECK_NEAR(p.top_p, 0.95, 1e-6);
    CHECK_NEAR(p.min_p, 0.05, 1e-6);
    CHECK_NEAR(p.repeat_penalty, 1.0, 1e-6);
    CHECK(p.repeat_last_n == 64);
    CHECK(p.seed == 42);
    kvl_sampler *s = NULL;
    CHECK(kvl_sampler_create(&p, 0, &s) == KVL_ERR_ARG && s == NULL);
    p.repeat_penalty = 0.0f;
    CHECK(kvl_sampler_create(&p, NV, &s) == KVL_ERR_ARG && s == NULL);
    kvl_sampler_free(NULL);
}

static void test_greedy(void) {
    kvl_sampler *s = mk(0.0f, 40, 0.95f, 0.05f, 1.0f, 1);
    CHECK(draw(s, base) == 1);
    const float ties[NV] = {0, 5, 1, 5, 5, 0, 0, 0};
    CHECK(draw(s, ties) == 1);
    const float nan_first[NV] = {NAN, 1, 3, NAN, 3, 0, 0, 0};
    CHECK(draw(s, nan_first) == 2);
    const float pinf[NV] = {0, 1, 2, INFINITY, 3, 0, 0, 0};
    CHECK(draw(s, pinf) == 3);
    kvl_sampler_free(s);
    /* negative temperature is greedy too */
    s = mk(-1.0f, 0, 1.0f, 0.0f, 1.0f, 1);
    CHECK(draw(s, base) == 1);
    kvl_sampler_free(s);
}

static void test_seeds(void) {
    kvl_sampler *a = mk(1.0f, 0, 1.0f, 0.0f, 1.0f, 123);
    kvl_sampler *b = mk(1.0f, 0, 1.0f, 0.0f, 1.0f, 123);
    kvl_sampler *c = mk(1.0f, 0, 1.0f, 0.0f, 1.0f, 124);
    int same = 1, differ = 0;
    for (int i = 0; i < 200; i++) {
        kvl_token ta = draw(a, base), tb = draw(b, base), tc = draw(c, base);
        if (ta != tb) same = 0;
        if (ta != tc) differ++;
    }
    CHECK(same);
    CHECK_MSG(differ > 20, "only %d of 200 draws differ between seeds", differ);
    kvl_sampler_free(a);
    kvl_sampler_free(b);
    kvl_sampler_free(c);
}

static void test_top_k1(void) {
    kvl_sampler *s = mk(1.5f, 1, 1.0f, 0.0f, 1.0f, 7);
    int ok = 1;
    for (int i = 0; i < 500; i++)
        if (draw(s, base) != 1) ok = 0;
    CHECK(ok);
    kvl_sampler_free(s);
}

/* Which tokens may appear under each filter (base logits, temperature 1). */
static void test_filters(void) {
    /* softmax(base): p1=.38 p3=.23 p6=.14 p0=.08 p2=.05 p5=.04 p4=.01 p7=.002 */
    int hits[NV];

    /* top-k 3 -> {1,3,6} */
    kvl_sampler *s = mk(1.0f, 3, 1.0f, 0.0f, 1.0f, 11);
    memset(hits, 0, sizeof hits);
    for (int i = 0; i < 20000; i++) hits[draw(s, base)]++;
    CHECK(hits[0] + hits[2] + hits[4] + hits[5] + hits[7] == 0);
    CHECK(hits[1] > 0 && hits[3] > 0 && hits[6] > 0);
    kvl_sampler_free(s);

    /* top-p 0.6: cumulative .38, .61 -> {1,3} */
    s = mk(1.0f, 0, 0.6f, 0.0f, 1.0f, 12);
    memset(hits, 0, sizeof hits);
    for (int i = 0; i < 20000; i++) hits[draw(s, base)]++;
    CHECK_MSG(hits[1] > 0 && hits[3] > 0, "hits1=%d hits3=%d", hits[1], hits[3]);
    CHECK(hits[0] + hits[2] + hits[4] + hits[5] + hits[6] + hits[7] == 0);
    kvl_sampler_free(s);

    /* min-p 0.2: keep p >= 0.2*p_max <=> l >= 2.5 + ln 0.2 = 0.89 -> {1,3,6,0} */
    s = mk(1.0f, 0, 1.0f, 0.2f, 1.0f, 13);
    memset(hits, 0, sizeof hits);
    for (int i = 0; i < 20000; i++) hits[draw(s, base)]++;
    CHECK(hits[2] + hits[4] + hits[5] + hits[7] == 0);
    CHECK(hits[0] > 0 && hits[1] > 0 && hits[3] > 0 && hits[6] > 0);
    kvl_sampler_free(s);

    /* top-p 0.99 + min-p 0.2 together: min-p is the tighter one */
    s = mk(1.0f, 0, 0.99f, 0.2f, 1.0f, 14);
    memset(hits, 0, sizeof hits);
    for (int i = 0; i < 20000; i++) hits[draw(s, base)]++;
    CHECK(hits[2] + hits[4] + hits[5] + hits[7] == 0);
    kvl_sampler_free(s);

    /* NaN and -inf are never sampled, +inf wins all the mass */
    const float odd[NV] = {NAN, 1, -INFINITY, 1, NAN, 1, 1, 1};
    s = mk(1.0f, 0, 1.0f, 0.0f, 1.0f, 15);
    memset(hits, 0, sizeof hits);
    for (int i = 0; i < 5000; i++) hits[draw(s, odd)]++;
    CHECK(hits[0] + hits[2] + hits[4] == 0);
    const float inf2[NV] = {0, INFINITY, 5, 0, INFINITY, 0, 0, 0};
    int only_inf = 1, both = 0;
    memset(hits, 0, sizeof hits);
    for (int i = 0; i < 2000; i++) {
        kvl_token t = draw(s, inf2);
        hits[t]++;
        if (t != 1 && t != 4) only_inf = 0;
    }
    both = hits[1] > 0 && hits[4] > 0;
    CHECK(only_inf && both);
    const float allnan[NV] = {NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN};
    kvl_token t = draw(s, allnan);
    CHECK(t >= 0 && t < NV);
    kvl_sampler_free(s);
}

/* Empirical frequencies vs softmax(base / T): Pearson chi-square, 7 dof.
 * With a fixed seed the statistic is deterministic; 24.3 is the p=0.001 cut. */
static void test_frequencies(void) {
    const float temp = 1.3f;
    const int N = 200000;
    double p[NV], z = 0;
    for (int i = 0; i < NV; i++) z += p[i] = exp(base[i] / temp);
    for (int i = 0; i < NV; i++) p[i] /= z;
    kvl_sampler *s = mk(temp, 0, 1.0f, 0.0f, 1.0f, 2024);
    int hits[NV] = {0};
    for (int i = 0; i < N; i++) hits[draw(s, base)]++;
    double chi2 = 0;
    for (int i = 0; i < NV; i++) {
        double e = p[i] * N, d = hits[i] - e;
        chi2 += d * d / e;
    }
    CHECK_MSG(chi2 < 24.3, "chi2=%.2f", chi2);
    kvl_sampler_free(s);

    /* With top-k 3 the distribution is the renormalised softmax of the top 3. */
    s = mk(1.0f, 3, 1.0f, 0.0f, 1.0f, 99);
    const int keep[3] = {1, 3, 6};
    double q[3], zq = 0;
    for (int i = 0; i < 3; i++) zq += q[i] = exp(base[keep[i]]);
    memset(hits, 0, sizeof hits);
    for (int i = 0; i < N; i++) hits[draw(s, base)]++;
    chi2 = 0;
    for (int i = 0; i < 3; i++) {
        double e = q[i] / zq * N, d = hits[keep[i]] - e;
        chi2 += d * d / e;
    }
    CHECK_MSG(chi2 < 13.8, "top-k chi2=%.2f", chi2);
    kvl_sampler_free(s);
}

static void test_penalty(void) {
    /* greedy: token 1 (2.5) penalised by 2 -> 1.25 < token 3 (2.0) */
    kvl_sampler *s = mk(0.0f, 0, 1.0f, 0.0f, 2.0f, 1);
    CHECK(draw(s, base) == 1);
    kvl_sampler_accept(s, 1);
    kvl_sampler_accept(s, 1); /* duplicates penalise once */
    float l[NV];
    memcpy(l, base, sizeof l);
    CHECK(kvl_sampler_sample(s, l) == 3);
    CHECK_NEAR(l[1], 1.25, 1e-6);
    /* negative logits are multiplied: token 4 (-1) -> -2 */
    kvl_sampler_accept(s, 4);
    memcpy(l, base, sizeof l);
    kvl_sampler_sample(s, l);
    CHECK_NEAR(l[4], -2.0, 1e-6);
    CHECK_NEAR(l[1], 1.25, 1e-6);
    kvl_sampler_free(s);

    /* window: with repeat_last_n = 2, token 1 leaves the history */
    kvl_sampler_params p;
    kvl_sampler_params_default(&p);
    p.temperature = 0;
    p.repeat_penalty = 2.0f;
    p.repeat_last_n = 2;
    CHECK(kvl_sampler_create(&p, NV, &s) == KVL_OK);
    kvl_sampler_accept(s, 1);
    CHECK(draw(s, base) == 3);
    kvl_sampler_accept(s, 5);
    kvl_sampler_accept(s, 5);
    CHECK(draw(s, base) == 1);
    kvl_sampler_accept(s, 3);
    kvl_sampler_accept(s, 1); /* 1 and 3 both penalised: 1.25 vs 1.0 */
    CHECK(draw(s, base) == 6); /* 6 = 1.5 now the best */
    kvl_sampler_free(s);

    /* repeat_last_n = 0 disables the history */
    p.repeat_last_n = 0;
    CHECK(kvl_sampler_create(&p, NV, &s) == KVL_OK);
    kvl_sampler_accept(s, 1);
    CHECK(draw(s, base) == 1);
    kvl_sampler_free(s);
}

/* A realistic vocabulary size with default parameters: the draw is always one
 * of the top-k (40) tokens. */
static void test_large_vocab(void) {
    enum { V = 49152 };
    static float logits[V], work[V];
    uint64_t x = 1;
    for (int i = 0; i < V; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        logits[i] = (float)((x >> 40) % 1000) / 100.0f; /* 0..9.99, many ties */
    }
    kvl_sampler_params p;
    kvl_sampler_params_default(&p);
    p.min_p = 0.0f;
    p.top_p = 1.0f;
    p.temperature = 5.0f;
    kvl_sampler *s = NULL;
    CHECK(kvl_sampler_create(&p, V, &s) == KVL_OK);
    /* threshold: the 40th largest logit (ties broken by lower id) */
    int ok = 1;
    for (int r = 0; r < 200; r++) {
        memcpy(work, logits, sizeof work);
        kvl_token t = kvl_sampler_sample(s, work);
        int better = 0;
        for (int i = 0; i < V; i++)
            if (logits[i] > logits[t] || (logits[i] == logits[t] && i < t)) better++;
        if (better >= 40) ok = 0;
    }
    CHECK(ok);
    kvl_sampler_free(s);
}

int main(void) {
    test_defaults();
    test_greedy();
    test_seeds();
    test_top_k1();
    test_filters();
    test_frequencies();
    test_penalty();
    test_large_vocab();
    KVL_TEST_END();
}
