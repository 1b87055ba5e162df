/* Adaptive streaming planner (engine/stream.c): trace parsing and its
 * errors, transfer times integrated over a trace against hand-computed
 * values, fixed modes against the time model computed by hand, and the
 * adaptive mode's contract on random instances: with the bandwidth known
 * and constant it meets the target whenever some uniform option does, with
 * no more loss than the best uniform option that does; with nothing
 * feasible it takes the fastest option. */
#include <string.h>

#include "kvlite.h"
#include "test.h"

static uint64_t rng = 88172645463325252ull;
static double urand(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}

static void parse_cases(void) {
    double *v = NULL;
    int n = 0;
    char err[256];
    const char *ok = "# steady\n10\n  20.5 \n\n# c\n0\n1e1\r\n";
    CHECK(kvl_stream_trace_parse(ok, strlen(ok), 0.1, &v, &n, err, sizeof err) == KVL_OK);
    CHECK(n == 4 && v && v[0] == 10 && v[1] == 20.5 && v[2] == 0 && v[3] == 10);
    free(v);
    const char *bad[] = {"10\nabc\n", "10\n-1\n", "5 6\n", "nan\n", "inf\n", "", "# only\n\n", "0\n0\n"};
    const char *want[] = {"line 2", "line 2", "line 1", "line 1", "line 1", "no samples", "no samples", "zero"};
    for (int i = 0; i < 8; i++) {
        v = (double *)1;
        err[0] = 0;
        const kvl_status st = kvl_stream_trace_parse(bad[i], strlen(bad[i]), 0.1, &v, &n, err, sizeof err);
        CHECK_MSG(st != KVL_OK && v == NULL && strstr(err, want[i]), "case %d: '%s'", i, err);
    }
    CHECK(kvl_stream_trace_parse("1\n", 2, 0, &v, &n, err, sizeof err) == KVL_ERR_ARG);
}

static void transfer_cases(void) {
    const double steady[] = {8};  /* 1 MB/s */
    const kvl_stream_trace t1 = {steady, 1, 0.1};
    CHECK_NEAR(kvl_stream_transfer_end(&t1, 0, 1e6), 1.0, 1e-9);
    CHECK_NEAR(kvl_stream_transfer_end(&t1, 0.05, 5e5), 0.55, 1e-9);
    CHECK(kvl_stream_transfer_end(&t1, 3.0, 0) == 3.0);
    const double step[] = {8, 0, 80}; /* 1 MB/s, nothing, 10 MB/s; repeats */
    const kvl_stream_trace t2 = {step, 3, 0.1};
    /* 0.15 MB from t=0: 0.1 MB in [0,0.1), nothing in [0.1,0.2), 0.05 MB at 10 MB/s: 0.205 */
    CHECK_NEAR(kvl_stream_transfer_end(&t2, 0, 1.5e5), 0.205, 1e-9);
    /* wraps: from t=0.25 1.2 MB: 0.5 MB to 0.3, 0.1 MB to 0.4, nothing to 0.5, 0.6 MB at 10 MB/s */
    CHECK_NEAR(kvl_stream_transfer_end(&t2, 0.25, 1.2e6), 0.56, 1e-9);
}

static void profile(kvl_stream_profile *p) {
    kvl_stream_profile_default(p);
    p->n_levels = 3;
    const double loss[] = {0.001, 0.01, 0.05}, dec[] = {20000, 25000, 30000};
    for (int l = 0; l < 3; l++) {
        p->level_loss[l] = loss[l];
        p->decode_tok_per_s[l] = dec[l];
    }
    p->prefill_tok_per_s = 1000;
    p->rtt_s = 0.002;
    p->question_tokens = 20;
}

static void fixed_cases(void) {
    kvl_stream_profile p;
    profile(&p);
    kvl_stream_chunk c[2] = {{256, {400000, 200000, 100000}}, {256, {400000, 200000, 100000}}};
    const double steady[] = {8};
    const kvl_stream_trace tr = {steady, 1, 0.1};
    kvl_stream_result r;
    char err[256];
    /* level 1: link 0.002 + 0.2, then 0.002 + 0.2 -> arrivals 0.202, 0.404; decode 256/25000 each */
    CHECK(kvl_stream_run(&p, c, 2, &tr, 0, 1, 10, NULL, &r, err, sizeof err) == KVL_OK);
    const double d = 256.0 / 25000;
    CHECK_NEAR(r.ttft_s, 0.404 + d + 0.02, 1e-9);
    CHECK(r.choice[0] == 1 && r.choice[1] == 1 && r.n_text == 0 && r.met);
    CHECK_NEAR(r.bytes, 4e5, 1e-6);
    CHECK_NEAR(r.loss, 0.01, 1e-12);
    /* text: 1024 bytes each; prefill 0.256 s each, the second waits for the first */
    CHECK(kvl_stream_run(&p, c, 2, &tr, 0, KVL_STREAM_TEXT, 0.5, NULL, &r, err, sizeof err) == KVL_OK);
    const double a0 = 0.002 + 1024 / 1e6;
    CHECK_NEAR(r.ttft_s, a0 + 0.256 + 0.256 + 0.02, 1e-9);
    CHECK(r.n_text == 2 && r.choice[0] == KVL_STREAM_TEXT && r.loss == 0 && !r.met);
    /* serial receiver: fetch, decode, fetch, decode */
    kvl_stream_profile ps = p;
    ps.serial = 1;
    CHECK(kvl_stream_run(&ps, c, 2, &tr, 0, 1, 10, NULL, &r, err, sizeof err) == KVL_OK);
    CHECK_NEAR(r.ttft_s, 0.404 + 2 * d + 0.02, 1e-9);
    /* start time inside the trace matters only through the trace */
    CHECK(kvl_stream_run(&p, c, 2, &tr, 7.3, 1, 10, NULL, &r, err, sizeof err) == KVL_OK);
    CHECK_NEAR(r.ttft_s, 0.404 + d + 0.02, 1e-9);
    /* bad arguments */
    CHECK(kvl_stream_run(&p, c, 2, &tr, 0, 3, 1, NULL, &r, err, sizeof err) == KVL_ERR_ARG);
    CHECK(kvl_stream_run(&p, c, 2, &tr, 0, -3, 1, NULL, &r, err, sizeof err) == KVL_ERR_ARG);
    kvl_stream_profile q = p;
    q.prefill_tok_per_s = 0;
    CHECK(kvl_stream_run(&q, c, 2, &tr, 0, 0, 1, NULL, &r, err, sizeof err) == KVL_ERR_ARG);
    q = p;
    q.decode_tok_per_s[2] = -1;
    CHECK(kvl_stream_run(&q, c, 2, &tr, 0, 0, 1, NULL, &r, err, sizeof err) == KVL_ERR_ARG);
    CHECK(kvl_stream_run(&p, c, KVL_STREAM_MAX_CHUNKS + 1, &tr, 0, 0, 1, NULL, &r, err, sizeof err) == KVL_ERR_ARG);
}

/* Adaptive on random instances with a constant, known bandwidth. */
static void adaptive_cases(void) {
    int checked = 0, infeasible = 0;
    for (int it = 0; it < 2000; it++) {
        kvl_stream_profile p;
        profile(&p);
        p.prefill_tok_per_s = 200 + 3000 * urand();
        p.serial = it & 1;
        const int n = 1 + (int)(urand() * 12);
        kvl_stream_chunk c[12];
        for (int i = 0; i < n; i++) {
            c[i].n_tokens = 64 + (int)(urand() * 256);
            const double b = c[i].n_tokens * (500 + 4000 * urand());
            c[i].bytes[0] = (int64_t)b;
            c[i].bytes[1] = (int64_t)(b * 0.5);
            c[i].bytes[2] = (int64_t)(b * 0.3);
        }
        const double mbps = 0.5 + 60 * urand();
        const double bw[] = {mbps};
        const kvl_stream_trace tr = {bw, 1, 0.1};
        p.bw_init_bps = mbps * 1e6 / 8;
        const double slo = 0.05 + 3 * urand();
        kvl_stream_result r, u;
        char err[256];
        CHECK(kvl_stream_run(&p, c, n, &tr, 0, KVL_STREAM_ADAPTIVE, slo, NULL, &r, err, sizeof err) == KVL_OK);
        /* best uniform option that meets the target, and the fastest uniform option */
        double best_loss = INFINITY, fastest = INFINITY;
        for (int m = KVL_STREAM_TEXT; m < p.n_levels; m++) {
            CHECK(kvl_stream_run(&p, c, n, &tr, 0, m, slo, NULL, &u, err, sizeof err) == KVL_OK);
            if (u.met && u.loss < best_loss) best_loss = u.loss;
            if (u.ttft_s < fastest) fastest = u.ttft_s;
        }
        if (best_loss < INFINITY) {
            CHECK_MSG(r.met && r.loss <= best_loss + 1e-12, "it %d: met %d loss %g best %g", it, r.met, r.loss,
                      best_loss);
            checked++;
        } else {
            CHECK_MSG(r.ttft_s <= fastest + 1e-9, "it %d: infeasible, adaptive %g fastest %g", it, r.ttft_s, fastest);
            infeasible++;
        }
    }
    CHECK(checked > 200 && infeasible > 50); /* both regimes were exercised */
    printf("note: adaptive vs uniform: %d feasible, %d infeasible instances\n", checked, infeasible);
}

/* A bandwidth drop mid-request: the estimate follows the measured throughput. */
static void drop_case(void) {
    kvl_stream_profile p;
    profile(&p);
    p.prefill_tok_per_s = 500;
    kvl_stream_chunk c[8];
    for (int i = 0; i < 8; i++) c[i] = (kvl_stream_chunk){256, {400000, 200000, 100000}};
    double bw[200];
    for (int k = 0; k < 200; k++) bw[k] = k < 1 ? 80 : 4; /* 10 MB/s for 0.1 s, then 0.5 MB/s */
    const kvl_stream_trace tr = {bw, 200, 0.1};
    p.bw_init_bps = 1e7;
    kvl_stream_result r;
    char err[256];
    CHECK(kvl_stream_run(&p, c, 8, &tr, 0, KVL_STREAM_ADAPTIVE, 1.5, NULL, &r, err, sizeof err) == KVL_OK);
    CHECK(r.choice[0] == 0);            /* fast link, generous budget: best level */
    CHECK(r.choice[7] != 0);            /* after the drop a smaller level or text */
    double st = -1;
    CHECK(kvl_stream_run(&p, c, 8, &tr, 0, 0, 1.5, &st, &r, err, sizeof err) == KVL_OK);
    CHECK_NEAR(st, 5e5, 1.0);           /* the carried estimate is the last measured throughput */
}


/* A context rebuilt chunk by chunk from CacheGen chunks (the streaming
 * receiver's path) on the tiny model: positions and ids continue, the next
 * token's logits stay close to the original at level 0, out-of-order and
 * foreign chunks are refused with the sequence unchanged. */
static void chunk_cases(const char *path, const char *codec) {
    kvl_model *m = NULL;
    char err[256];
    if (kvl_model_load(path, &m, err, sizeof err) != KVL_OK) {
        CHECK_MSG(0, "%s: %s", path, err);
        return;
    }
    kvl_model_info mi;
    kvl_model_get_info(m, &mi);
    kvl_ctx_params p;
    kvl_ctx_params_default(&p);
    p.n_ctx = 512;
    p.n_threads = 1;
    p.kv_codec = codec;
    p.kv_budget_bytes = (size_t)64 << 20; /* two sequences */
    kvl_ctx *c = NULL;
    CHECK(kvl_ctx_create(m, &p, &c, err, sizeof err) == KVL_OK);
    enum { N = 300 };
    kvl_token tok[N + 1];
    for (int i = 0; i <= N; i++) tok[i] = (kvl_token)((i * 7 + 3) % mi.n_vocab);
    float *a = malloc(sizeof(float) * (size_t)mi.n_vocab), *b = malloc(sizeof(float) * (size_t)mi.n_vocab);
    kvl_seq *s = NULL, *r = NULL;
    CHECK(kvl_seq_create(c, &s) == KVL_OK && kvl_prefill(s, tok, N, a, NULL) == KVL_OK);
    CHECK(kvl_seq_create(c, &r) == KVL_OK);
    void *ck[3] = {0};
    size_t cl[3] = {0};
    const int bounds[4] = {0, 128, 256, N};
    kvl_cachegen_opts o = {0};
    for (int i = 0; i < 3; i++)
        CHECK(kvl_seq_save_cachegen_range(s, &o, bounds[i], bounds[i + 1] - bounds[i], &ck[i], &cl[i]) == KVL_OK);
    /* out of order: refused, r unchanged */
    CHECK(kvl_seq_append_cachegen(r, ck[1], cl[1]) == KVL_ERR_FORMAT && kvl_seq_pos(r) == 0);
    CHECK(strstr(kvl_ctx_error(c), "continues at 0") != NULL);
    int ok = 1;
    for (int i = 0; i < 3 && ok; i++) {
        ok &= kvl_seq_append_cachegen(r, ck[i], cl[i]) == KVL_OK;
        CHECK_MSG(ok, "%s: append chunk %d: %s", codec, i, kvl_ctx_error(c));
    }
    CHECK(kvl_seq_pos(r) == N);
    /* a chunk again: positions no longer continue */
    CHECK(kvl_seq_append_cachegen(r, ck[2], cl[2]) != KVL_OK && kvl_seq_pos(r) == N);
    /* truncated chunk: refused */
    CHECK(kvl_seq_append_cachegen(r, ck[0], cl[0] / 2) != KVL_OK && kvl_seq_pos(r) == N);
    CHECK(kvl_decode(s, tok[N], a) == KVL_OK && kvl_decode(r, tok[N], b) == KVL_OK);
    double mx = 0, la = -INFINITY, lb = -INFINITY;
    int aa = 0, ab = 0;
    for (int i = 0; i < mi.n_vocab; i++) {
        if (fabs(a[i] - b[i]) > mx) mx = fabs(a[i] - b[i]);
        if (a[i] > la) la = a[i], aa = i;
        if (b[i] > lb) lb = b[i], ab = i;
    }
    /* KL(original || restored) of the next-token distribution */
    double kl = 0;
    for (int i = 0; i < mi.n_vocab; i++) {
        const double pa = a[i] - la, pb = b[i] - lb;
        kl += exp(pa) * (pa - pb);
    }
    double za = 0, zb = 0;
    for (int i = 0; i < mi.n_vocab; i++) za += exp(a[i] - la), zb += exp(b[i] - lb);
    kl = kl / za - log(za) + log(zb); /* normalize: a, b were shifted by their maxima, not log-normalized */
    CHECK_MSG(mx < 1.0 && kl < 0.05, "%s: chunked restore: max logit diff %g, KLD %g", codec, mx, kl);
    printf("note: %s: 3 chunks (%zu + %zu + %zu bytes), after the chunked restore max logit diff %.3g, KLD %.2g, argmax %s\n",
           codec, cl[0], cl[1], cl[2], mx, kl, aa == ab ? "same" : "differs");
    for (int i = 0; i < 3; i++) free(ck[i]);
    kvl_seq_free(s);
    kvl_seq_free(r);
    kvl_ctx_free(c);
    free(a);
    free(b);
    kvl_model_free(m);
}

int main(void) {
    parse_cases();
    transfer_cases();
    fixed_cases();
    adaptive_cases();
    drop_case();
    chunk_cases("tests/data/tiny/llama_f16.gguf", "f16");
    chunk_cases("tests/data/tiny/llama_f16.gguf", "kivi2");
    KVL_TEST_END();
}
