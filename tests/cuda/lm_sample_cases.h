/* Device sampling cases of tests/cuda/test_cuda_lm.c (included there, after
 * its helpers dev_alloc / up / down / poison / frand and the CPU sampler
 * compiled in): kvl_cuda_sample against the CPU sampler's pipeline. Kept
 * apart to hold test_cuda_lm.c under ~800 lines. */
#ifndef KVL_TEST_CUDA_LM_SAMPLE_H
#define KVL_TEST_CUDA_LM_SAMPLE_H

#include <float.h>

typedef struct scand { float v; int id; } scand;
static int scand_cmp(const void *pa, const void *pb) {
    const scand *a = pa, *b = pb;
    if (a->v != b->v) return a->v > b->v ? -1 : 1;
    return a->id - b->id;
}

/* pr [V] = the probability kvl_sampler_sample gives each token (its
 * pipeline in double, sorted); returns the number of tokens with pr > 0. */
static int ref_dist(const float *l, int V, const kvl_cuda_sample_params *p, double *pr) {
    scand *c = malloc(sizeof *c * (size_t)V);
    int n = 0;
    const float inv_t = 1.0f / p->temperature;
    for (int i = 0; i < V; i++) {
        float x = l[i];
        if (isnan(x) || x == -INFINITY) continue;
        if (x == INFINITY) x = FLT_MAX;
        x *= inv_t;
        if (isinf(x)) x = x > 0 ? FLT_MAX : -FLT_MAX;
        c[n].v = x, c[n].id = i, n++;
    }
    qsort(c, (size_t)n, sizeof *c, scand_cmp);
    if (p->top_k > 0 && p->top_k < n) n = p->top_k;
    const double maxl = c[0].v;
    double z = 0;
    for (int i = 0; i < n; i++) z += exp((double)c[i].v - maxl);
    int keep = n;
    if (p->min_p > 0) {
        const double thr = p->min_p >= 1 ? 0 : log((double)p->min_p);
        keep = 0;
        while (keep < n && (double)c[keep].v - maxl >= thr) keep++;
    }
    if (p->top_p < 1) {
        double cum = 0;
        for (int i = 0; i < keep; i++) {
            cum += exp((double)c[i].v - maxl) / z;
            if (cum >= (double)p->top_p) {
                keep = i + 1;
                break;
            }
        }
    }
    double sum = 0;
    for (int i = 0; i < keep; i++) sum += exp((double)c[i].v - maxl);
    memset(pr, 0, sizeof *pr * (size_t)V);
    int support = 0;
    for (int i = 0; i < keep; i++) {
        pr[c[i].id] = exp((double)c[i].v - maxl) / sum;
        support += pr[c[i].id] > 0;
    }
    free(c);
    return support;
}

/* chi-square of counts [V] (N draws) against pr, over the tokens expected
 * >= 5 times and one bin for the rest; *df gets its degrees of freedom */
static double chi2(const int *cnt, const double *pr, int V, int N, int *df) {
    double x = 0, rest_e = 0, rest_o = 0;
    int bins = 0;
    for (int i = 0; i < V; i++) {
        if (pr[i] * N >= 5) {
            const double e = pr[i] * N;
            x += (cnt[i] - e) * (cnt[i] - e) / e;
            bins++;
        } else rest_e += pr[i] * N, rest_o += cnt[i];
    }
    if (rest_e >= 5) x += (rest_o - rest_e) * (rest_o - rest_e) / rest_e, bins++;
    *df = bins > 1 ? bins - 1 : 1;
    return x;
}

/* logits [V] drawn N = ROWS x LAUNCHES times on the device and N times by the
 * CPU sampler: every draw in the reference support, each empirical
 * distribution within chi-square df + 6 sqrt(2 df) of the reference (a
 * 6-sigma bound: a wrong cut-off, temperature or tie rule moves whole
 * candidates' mass and exceeds it by far) */
static void sample_case(const char *what, const float *l, int V, kvl_cuda_sample_params p, uint64_t seed) {
    enum { ROWS = 256, LAUNCHES = 80, N = ROWS * LAUNCHES };
    kvl_err err = {0};
    double *pr = malloc(sizeof *pr * (size_t)V);
    int *cd = calloc((size_t)V, sizeof *cd), *cc = calloc((size_t)V, sizeof *cc);
    const int support = ref_dist(l, V, &p, pr);
    float *dx = dev_alloc(sizeof(float) * (size_t)V * ROWS);
    uint64_t *dctr = dev_alloc(sizeof(uint64_t) * ROWS);
    int32_t *dout = dev_alloc(sizeof(int32_t) * ROWS), got[ROWS];
    for (int r = 0; r < ROWS; r++) up(dx + (size_t)r * V, l, sizeof(float) * (size_t)V);
    uint64_t zero[ROWS] = {0};
    up(dctr, zero, sizeof zero);
    int outside_d = 0, outside_c = 0, ok = 1;
    for (int it = 0; it < LAUNCHES && ok; it++) {
        poison(dout, sizeof(int32_t) * ROWS);
        ok = kvl_cuda_sample(dx, ROWS, V, &p, seed, dctr, dout, NULL, &err) == KVL_OK && kvl_cuda_sync(&err) == KVL_OK;
        CHECK_MSG(ok, "%s: %s", what, err.msg);
        down(got, dout, sizeof got);
        for (int r = 0; r < ROWS && ok; r++) {
            if (got[r] < 0 || got[r] >= V || pr[got[r]] == 0) outside_d++;
            else cd[got[r]]++;
        }
    }
    uint64_t ctr[ROWS];
    down(ctr, dctr, sizeof ctr);
    CHECK_MSG(ctr[0] == LAUNCHES && ctr[ROWS - 1] == LAUNCHES, "%s: counters %llu", what, (unsigned long long)ctr[0]);
    kvl_sampler_params sp = {p.temperature, p.top_k, p.top_p, p.min_p, 1.0f, 0, seed};
    kvl_sampler *cs = NULL;
    CHECK(kvl_sampler_create(&sp, V, &cs) == KVL_OK);
    float *lc = malloc(sizeof(float) * (size_t)V);
    for (int i = 0; i < N && cs; i++) {
        memcpy(lc, l, sizeof(float) * (size_t)V);
        const int t = kvl_sampler_sample(cs, lc);
        if (t < 0 || t >= V || pr[t] == 0) outside_c++;
        else cc[t]++;
    }
    int dfd, dfc;
    const double xd = chi2(cd, pr, V, N, &dfd), xc = chi2(cc, pr, V, N, &dfc);
    CHECK_MSG(outside_d == 0, "%s: %d device draws outside the CPU's candidate set", what, outside_d);
    CHECK_MSG(outside_c == 0, "%s: %d CPU draws outside the reference set", what, outside_c);
    CHECK_MSG(xd <= dfd + 6 * sqrt(2.0 * dfd), "%s: device chi2 %.1f, df %d", what, xd, dfd);
    CHECK_MSG(xc <= dfc + 6 * sqrt(2.0 * dfc), "%s: CPU chi2 %.1f, df %d", what, xc, dfc);
    printf("note: sample %s (V %d, T %.2f, top-k %d, top-p %.2f, min-p %.2f): %d candidates; %d draws: chi2 device "
           "%.1f, CPU %.1f (df %d, bound %.1f)\n", what, V, p.temperature, p.top_k, p.top_p, p.min_p, support, N, xd,
           xc, dfd, dfd + 6 * sqrt(2.0 * dfd));
    kvl_sampler_free(cs);
    free(lc), free(pr), free(cd), free(cc);
    kvl_cuda_free(dx), kvl_cuda_free(dctr), kvl_cuda_free(dout);
}

/* the repetition penalty kernel against the CPU sampler's (greedy sampling
 * with the penalty rewrites the logits in place): bit for bit, a window
 * with repeats, ids out of range and logits of both signs and zero */
static void repeat_penalty_case(void) {
    kvl_err err = {0};
    const int V = 32000, W = 300;
    float *l = malloc(sizeof(float) * V), *c = malloc(sizeof(float) * V), *d = malloc(sizeof(float) * V);
    int32_t h[1 + W];
    for (int i = 0; i < V; i++) l[i] = i % 11 == 0 ? 0.0f : frand(6.0f);
    h[0] = W;
    for (int i = 0; i < W; i++) h[1 + i] = i % 7 == 3 ? h[1 + i / 2] : i % 53 == 5 ? -3 - i : i % 61 == 9 ? V + i : (int32_t)(urand() * V);
    kvl_sampler_params sp;
    kvl_sampler_params_default(&sp);
    sp.temperature = 0, sp.repeat_penalty = 1.37f, sp.repeat_last_n = W;
    kvl_sampler *cs = NULL;
    CHECK(kvl_sampler_create(&sp, V, &cs) == KVL_OK);
    for (int i = 0; i < W; i++) kvl_sampler_accept(cs, h[1 + i]);
    memcpy(c, l, sizeof(float) * V);
    kvl_sampler_sample(cs, c);
    float *dx = dev_alloc(sizeof(float) * V);
    int32_t *dh = dev_alloc(sizeof h);
    up(dx, l, sizeof(float) * V), up(dh, h, sizeof h);
    CHECK(kvl_cuda_repeat_penalty(dx, V, dh, 1.37f, NULL, &err) == KVL_OK && kvl_cuda_sync(&err) == KVL_OK);
    down(d, dx, sizeof(float) * V);
    int bad = 0, changed = 0;
    for (int i = 0; i < V; i++) bad += memcmp(&c[i], &d[i], sizeof(float)) != 0, changed += c[i] != l[i];
    printf("note: repeat penalty: %d logits changed by the CPU sampler, %d differ on the device\n", changed, bad);
    CHECK_MSG(bad == 0 && changed > 100, "repeat penalty: %d of %d logits differ from the CPU's", bad, V);
    CHECK(kvl_cuda_repeat_penalty(dx, V, dh, 0.0f, NULL, &err) == KVL_ERR_ARG);
    kvl_sampler_free(cs);
    kvl_cuda_free(dx), kvl_cuda_free(dh);
    free(l), free(c), free(d);
}

static void sampling(void) {
    kvl_err err = {0};
    const int V = 32000;
    repeat_penalty_case();
    float *l = malloc(sizeof(float) * V);
    for (int i = 0; i < V; i++) l[i] = frand(6.0f);
    sample_case("default", l, V, (kvl_cuda_sample_params){0.8f, 40, 0.95f, 0.05f}, 7);
    sample_case("top-k 1000, top-p 0.9", l, V, (kvl_cuda_sample_params){1.5f, 1000, 0.9f, 0.0f}, 8);
    sample_case("top-k 1024 only", l, V, (kvl_cuda_sample_params){0.7f, 1024, 1.0f, 0.0f}, 9);
    sample_case("min-p 0.3", l, V, (kvl_cuda_sample_params){1.0f, 200, 1.0f, 0.3f}, 10);
    /* ties: all equal, top-k 5 takes ids 0..4 (the lowest); NaN / -inf never drawn */
    for (int i = 0; i < V; i++) l[i] = 1.0f;
    l[1] = NAN, l[3] = -INFINITY;
    sample_case("ties", l, V, (kvl_cuda_sample_params){1.0f, 5, 1.0f, 0.0f}, 11);
    /* two +inf (FLT_MAX after scaling) share the mass; fewer candidates than top-k */
    for (int i = 0; i < 300; i++) l[i] = i < 250 ? frand(2.0f) : NAN;
    l[17] = INFINITY, l[200] = INFINITY;
    sample_case("+inf", l, 300, (kvl_cuda_sample_params){0.5f, 1024, 1.0f, 0.0f}, 12);
    for (int i = 0; i < 300; i++) l[i] = i < 100 ? frand(1.0f) : -INFINITY;
    sample_case("fewer than top-k", l, 300, (kvl_cuda_sample_params){1.0f, 512, 0.8f, 0.02f}, 13);
    /* temperature 0: greedy, as the CPU; no candidates (all NaN / -inf): the CPU's argmax */
    float *dx = dev_alloc(sizeof(float) * 2 * V);
    int32_t *dout = dev_alloc(sizeof(int32_t) * 2), got[2];
    uint64_t *dctr = dev_alloc(sizeof(uint64_t) * 2);
    for (int i = 0; i < V; i++) l[i] = frand(3.0f);
    l[5] = NAN;
    up(dx, l, sizeof(float) * V);
    for (int i = 0; i < V; i++) l[i] = i % 2 ? NAN : -INFINITY;
    up(dx + V, l, sizeof(float) * V);
    const kvl_cuda_sample_params greedy = {0.0f, 40, 0.95f, 0.05f}, hot = {1.0f, 40, 1.0f, 0.0f};
    poison(dout, sizeof(int32_t) * 2);
    CHECK(kvl_cuda_sample(dx, 2, V, &greedy, 1, dctr, dout, NULL, &err) == KVL_OK && kvl_cuda_sync(&err) == KVL_OK);
    down(got, dout, sizeof got);
    float *row = malloc(sizeof(float) * V);
    kvl_sampler_params sp = {0.0f, 40, 0.95f, 0.05f, 1.0f, 0, 1};
    kvl_sampler *cs = NULL;
    CHECK(kvl_sampler_create(&sp, V, &cs) == KVL_OK);
    for (int r = 0; r < 2; r++) {
        down(row, dx + (size_t)r * V, sizeof(float) * V);
        const int want = kvl_sampler_sample(cs, row);
        CHECK_MSG(got[r] == want, "greedy row %d: %d, want %d", r, got[r], want);
    }
    uint64_t zero[2] = {0};
    up(dctr, zero, sizeof zero);
    poison(dout, sizeof(int32_t) * 2);
    CHECK(kvl_cuda_sample(dx + V, 1, V, &hot, 1, dctr, dout, NULL, &err) == KVL_OK && kvl_cuda_sync(&err) == KVL_OK);
    down(got, dout, sizeof(int32_t));
    CHECK_MSG(got[0] == 0, "no candidates: %d, want 0 (the first -inf)", got[0]);
    /* refused: top-k off (would need a full sort) and above 1024 */
    const kvl_cuda_sample_params k0 = {1.0f, 0, 0.9f, 0.0f}, kbig = {1.0f, 2000, 0.9f, 0.0f};
    CHECK(kvl_cuda_sample(dx, 1, V, &k0, 1, dctr, dout, NULL, &err) == KVL_ERR_UNSUPPORTED && strstr(err.msg, "top_k"));
    CHECK(kvl_cuda_sample(dx, 1, V, &kbig, 1, dctr, dout, NULL, &err) == KVL_ERR_UNSUPPORTED);
    printf("note: sampling refused: %s\n", err.msg);
    kvl_sampler_free(cs);
    free(l), free(row);
    kvl_cuda_free(dx), kvl_cuda_free(dout), kvl_cuda_free(dctr);
}

#endif
