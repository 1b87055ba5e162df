/* End-to-end decode benchmark of the CUDA forward pass (device only):
 *  1. copy bandwidth (cudaMemcpy device to device, 2 GiB, bytes read +
 *     written), measured in the same run: the roofline's denominator;
 *  2. a GGUF model (--model; SmolLM2-135M by default) through the engine
 *     (kvl_ctx_params.device = CUDA): decode tok/s at batch 1 after a real
 *     prompt (kvl_decode: logits downloaded each token) and through the
 *     device model directly (greedy on the device) at batch 1, 8, 32 and
 *     contexts 64 / 4K / 32K (contexts past the prompt filled with random
 *     valid KV rows: the speed does not depend on their values), weights in
 *     their GGUF blocks or converted to f16, kernels launched directly or
 *     replayed from a CUDA graph;
 *  3. an 8B-shaped Llama (Llama-3-8B dimensions: 32 layers, 4096 / 14336,
 *     32 / 8 heads of 128, vocabulary 128256) with random Q8_0 (Q4_0, f16)
 *     weights generated on the device, batch 1 at 0 / 4K / 32K / 128K, on
 *     8-bit activations (the default) and on f32 activations (the exact
 *     path), against its roofline (step weight bytes + ctx x KV bytes per
 *     token) / copy bandwidth; per-stage device time of a step (events
 *     between the stages, direct launches) at 32K and 128K;
 *  4. (--gemv) the matvec alone on Llama-3-8B shapes (4096x4096,
 *     14336x4096, 4096x14336, 128256x4096) per weight format, f32 or 8-bit
 *     activations, every kernel variant of the integer matvec: GB/s of
 *     weight + activation + output bytes over the kernel time (events around
 *     each launch, median of 40, copies rotated so that the matrices read
 *     are >= 400 MB, many times the 50 MB L2), against the copy bandwidth.
 * Timing of 2 and 3: host wall clock around each synchronous step (what a
 * caller sees), median of the steps after warm-ups.
 *  6. (--8b-ablate) the 8B step by launch option (RMSNorm kernel, PDL,
 *     L2 prefetch) and with each stage left out or launched
 *     twice (graph time by differences), at ctx 0 and 32K.
 *  5. (--gguf PATH) a GGUF through the model loader (kvl_model_load, a
 *     kvl_ctx on the device), e.g. the random 8B of `kvlite gguf-random`:
 *     the same batch-1 rows as 3, to set beside the descriptor path's.
 *  7. (--gemm) the tensor-core prefill GEMM alone against the integer
 *     matvec on the 8B's matrices per n (bench_gemm); --prefill-gemm: that,
 *     then the 8B-shaped prefill and the model's kvl_prefill (tiled prefill
 *     attention) with the GEMM off and on, and stops.
 *   bench_lm [--model PATH | --no-model] [--gguf PATH] [--no-8b] [--8b-lean] [--8b-ablate] [--8b-kv LIST] [--prefill | --prefill-only] [--8b-f16] [--8b-q4] [--gemv] [--gemm | --prefill-gemm]
 *            [--ctx-max N] [--steps N] [--json FILE] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <algorithm>
#include <string>
#include <vector>

#include <cuda_runtime.h>

extern "C" {
#include "cuda/kvl_cuda.h"
#include "cuda/kvl_cuda_prefill.h"
#include "cuda/lm_ops.h"
#include "engine/engine.h"
#include "kvlite.h"
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}
static double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0 : v[v.size() / 2];
}
#define DIE(...) (fprintf(stderr, __VA_ARGS__), fputc('\n', stderr), exit(1))

static FILE *json;
static int first_row = 1;
static const char *jsep(void) { /* separator before a JSON row */
    const char *s = first_row ? "" : ",\n";
    first_row = 0;
    return s;
}
static void row(const char *what, const char *codec, const char *weights, int graphs, int B, int ctx, double tok_s,
                double ms, double roof_ms) {
    printf("| %-8s | %-6s | %-7s | %-6s | %3d | %6d | %9.1f | %8.3f |", what, codec, weights, graphs ? "graph" : "direct",
           B, ctx, tok_s, ms);
    if (roof_ms > 0) printf(" %8.3f | %5.1f%% |", roof_ms, 100 * roof_ms / ms);
    printf("\n");
    fflush(stdout);
    if (json)
        fprintf(json,
                "%s{\"what\":\"%s\",\"codec\":\"%s\",\"weights\":\"%s\",\"graphs\":%d,\"batch\":%d,\"ctx\":%d,"
                "\"tok_s\":%.2f,\"ms_per_step\":%.5f,\"roofline_ms\":%.5f}",
                first_row ? "" : ",\n", what, codec, weights, graphs, B, ctx, tok_s, ms, roof_ms);
    first_row = 0;
}

static double copy_bw(void) {
    const size_t n = (size_t)2 << 30;
    void *a, *b;
    if (cudaMalloc(&a, n) || cudaMalloc(&b, n)) DIE("copy: cudaMalloc");
    cudaMemset(a, 1, n);
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0), cudaEventCreate(&e1);
    std::vector<double> t;
    for (int i = 0; i < 13; i++) {
        cudaEventRecord(e0);
        cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice);
        cudaEventRecord(e1);
        cudaEventSynchronize(e1);
        float ms;
        cudaEventElapsedTime(&ms, e0, e1);
        if (i >= 3) t.push_back(ms * 1e-3);
    }
    cudaFree(a), cudaFree(b);
    return 2.0 * n / median(t);
}

/* steps of B entries (slots 0..B-1) at positions ctx.. ; returns the median seconds per step */
static double g_last_mean; /* time_steps: the mean step of the last call (sealing codecs: seal steps included) */
static const char *g_kv8b;  /* --8b-kv: comma-separated KV codecs of the 8B rows (default f16,int4z; lean: f16) */

static double time_steps(kvl_cuda_lm *lm, int B, int ctx, int steps, int warm) {
    std::vector<int32_t> tok(B), pos(B), slot(B), am(B);
    std::vector<double> t;
    kvl_err err = {};
    for (int b = 0; b < B; b++) tok[b] = 100 + 7 * b, slot[b] = b;
    for (int s = 0; s < warm + steps; s++) {
        for (int b = 0; b < B; b++) pos[b] = ctx + s;
        const double t0 = now();
        if (kvl_cuda_lm_forward(lm, B, tok.data(), pos.data(), slot.data(), 0, NULL, am.data(), &err)) {
            printf("forward (B %d, ctx %d): %s\n", B, ctx, err.msg);
            return -1;
        }
        if (s >= warm) t.push_back(now() - t0);
        for (int b = 0; b < B; b++) tok[b] = am[b];
    }
    g_last_mean = 0;
    for (double x : t) g_last_mean += x / t.size();
    return median(t);
}

static void bench_model(const char *path, int steps, double bw) {
    kvl_model *m = NULL;
    char err[256] = "";
    if (kvl_model_load(path, &m, err, sizeof err)) DIE("model %s: %s", path, err);
    kvl_model_info mi;
    kvl_model_get_info(m, &mi);
    printf("\nmodel %s: %d layers, %d/%d heads of %d, n_embd %d, n_ff %d, vocab %d\n", path, mi.n_layer, mi.n_head,
           mi.n_head_kv, mi.head_dim, mi.n_embd, mi.n_ff, mi.n_vocab);
    printf("| what     | codec  | weights | launch | B   | ctx    | tok/s     | ms/step  | roof ms  | of roof |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|\n");
    const char *codecs[3] = {"f16", "int8", "int4z"};
    const char *wmodes[2] = {"native", "f16"};
    for (int wi = 0; wi < 2; wi++)
        for (int ci = 0; ci < 3; ci++) {
            if (wi == 1 && ci > 0) continue;
            if (wi) setenv("KVL_CUDA_WEIGHTS", "f16", 1);
            else unsetenv("KVL_CUDA_WEIGHTS");
            /* (a) the engine API, batch 1: prompt 64 tokens, kvl_decode */
            {
                kvl_ctx_params p;
                kvl_ctx_params_default(&p);
                p.n_ctx = 64 + 16 + steps;
                p.kv_codec = codecs[ci];
                p.device = KVL_DEVICE_CUDA;
                kvl_ctx *c = NULL;
                if (kvl_ctx_create(m, &p, &c, err, sizeof err)) DIE("ctx: %s", err);
                kvl_seq *s = NULL;
                kvl_seq_create(c, &s);
                std::vector<kvl_token> pr(64);
                for (int i = 0; i < 64; i++) pr[i] = (kvl_token)(1000 + 37 * i) % mi.n_vocab;
                std::vector<float> lg(mi.n_vocab);
                const double t0 = now();
                if (kvl_prefill(s, pr.data(), 64, lg.data(), NULL)) DIE("prefill: %s", kvl_ctx_error(c));
                const double tp = now() - t0;
                std::vector<double> t;
                kvl_token tk = 5;
                for (int i = 0; i < 8 + steps; i++) {
                    const double t1 = now();
                    if (kvl_decode(s, tk, lg.data())) DIE("decode: %s", kvl_ctx_error(c));
                    if (i >= 8) t.push_back(now() - t1);
                    tk = (kvl_token)(std::max_element(lg.begin(), lg.end()) - lg.begin());
                }
                const double md = median(t);
                row("api", codecs[ci], wmodes[wi], 0, 1, 64, 1 / md, 1e3 * md, 0);
                if (ci == 0 && wi == 0) printf("(api prefill of 64 tokens: %.2f ms = %.0f tok/s)\n", 1e3 * tp, 64 / tp);
                kvl_seq_free(s);
                kvl_ctx_free(c);
            }
            /* (b) the device model directly: batch x context x launch mode */
            const int Bs[3] = {1, 8, 32}, ctxs[3] = {64, 4096, 32768};
            for (int ki = 0; ki < 3; ki++) {
                const int maxB = ctxs[ki] >= 32768 ? 8 : 32;
                kvl_ctx_params p;
                kvl_ctx_params_default(&p);
                p.n_ctx = ctxs[ki] + 16 + steps;
                p.kv_codec = codecs[ci];
                p.device = KVL_DEVICE_CUDA;
                p.n_seq_max = maxB;
                kvl_ctx *c = NULL;
                if (kvl_ctx_create(m, &p, &c, err, sizeof err)) DIE("ctx: %s", err);
                kvl_cuda_lm *lm = kvl_engine_cuda_lm(c);
                kvl_err e = {};
                for (int b = 0; b < maxB; b++)
                    if (kvl_cuda_lm_fill_context(lm, b, ctxs[ki], 11 + b, &e)) DIE("fill: %s", e.msg);
                const double bpt = kvl_cuda_lm_kv_bytes_per_token(lm);
                for (int bi = 0; bi < 3; bi++) {
                    if (Bs[bi] > maxB) continue;
                    for (int g = 0; g < 2; g++) {
                        kvl_cuda_lm_set_graphs(lm, g);
                        const double md = time_steps(lm, Bs[bi], ctxs[ki], steps, 5);
                        if (md < 0) continue;
                        const double roof = (kvl_cuda_lm_step_weight_bytes(lm) + Bs[bi] * (double)ctxs[ki] * bpt) / bw;
                        row("device", codecs[ci], wmodes[wi], g, Bs[bi], ctxs[ki], Bs[bi] / md, 1e3 * md, 1e3 * roof);
                    }
                }
                kvl_ctx_free(c);
            }
        }
    unsetenv("KVL_CUDA_WEIGHTS");
    kvl_model_free(m);
}

static void print_profile(kvl_cuda_lm *lm, const char *what, double step_ms);

/* --prefill: prompt processing (TTFT), in the same run as the copy
 * bandwidth, before and after the tiled prefill attention (2026-12-03).
 * (a) a model through the engine: kvl_prefill of a 512 / 4K / 32K-token
 * prompt on a fresh sequence (n_batch 512; before: KVL_CUDA_PREFILL=0,
 * device batches of 32 entries on the decode kernel; after: one device
 * call per 512-token chunk on the prefill kernel), logits of the last
 * token only; tok/s = prompt / time. (b) the prefill attention kernel
 * alone (bench_prefill_attn). (c) the 8B shape on the device model: before,
 * the 32-entry calls (decode kernel, graphs) over the 256 prompt tokens
 * that end at depth 512 / 4K / 32K; after, one 512-entry call (prefill
 * kernel) over the 512 tokens ending there (the context before them filled
 * with random rows); tok/s of that stretch. A whole 32K prompt would take
 * tens of seconds, so its TTFT is estimated from the stretches (time per
 * token linear in the depth between 512 and 32K, integrated). */
/* gemm (--prefill-gemm): -1 = the defaults, both attention modes; 0 / 1 / 2 = the tiled prefill
 * attention only, with the tensor-core GEMM off (KVL_CUDA_GEMM_MIN_N=0) and every entry's logits
 * (KVL_CUDA_LOGITS_TAIL=0: the before) / the GEMM on, every entry's logits / the GEMM and the logits
 * tail (the defaults) */
static void bench_prefill_model(const char *path, int gemm = -1) {
    kvl_model *m = NULL;
    char err[256] = "";
    if (kvl_model_load(path, &m, err, sizeof err)) DIE("model %s: %s", path, err);
    kvl_model_info mi;
    kvl_model_get_info(m, &mi);
    if (gemm == 0) setenv("KVL_CUDA_GEMM_MIN_N", "0", 1);
    else unsetenv("KVL_CUDA_GEMM_MIN_N");
    if (gemm == 0 || gemm == 1) setenv("KVL_CUDA_LOGITS_TAIL", "0", 1);
    else unsetenv("KVL_CUDA_LOGITS_TAIL");
    /* mode 0 (before): KVL_CUDA_PREFILL=0, the decode kernel per entry in device batches of 32;
     * mode 1 (after, the default): the tiled prefill kernel, device batches of 512 */
    for (int mode = gemm < 0 ? 0 : 1; mode < 2; mode++) {
    setenv("KVL_CUDA_PREFILL", mode ? "1" : "0", 1);
    printf("\nprefill through kvl_prefill (device cuda, f16 KV, n_batch 512), %s%s: %s\n",
           mode ? "after: tiled prefill attention, device batches of 512" : "before: decode kernel, device batches of 32",
           gemm < 0 ? "" : gemm == 2 ? ", tensor-core GEMM, logits tail" : gemm ? ", tensor-core GEMM, every entry's logits"
                                                          : ", integer matvec, every entry's logits (before)", path);
    printf("| prompt | ms | tok/s |\n|---|---|---|\n");
    const int Ns[3] = {512, 4096, 32768};
    for (int ni = 0; ni < 3; ni++) {
        kvl_ctx_params p;
        kvl_ctx_params_default(&p);
        p.n_ctx = Ns[ni] + 16;
        p.kv_codec = "f16";
        p.device = KVL_DEVICE_CUDA;
        p.n_batch = 512;
        kvl_ctx *c = NULL;
        if (kvl_ctx_create(m, &p, &c, err, sizeof err)) {
            printf("| %d | (ctx: %s) | |\n", Ns[ni], err);
            continue;
        }
        std::vector<kvl_token> pr(Ns[ni]);
        for (int i = 0; i < Ns[ni]; i++) pr[i] = (kvl_token)((1000 + 37 * (int64_t)i) % mi.n_vocab);
        std::vector<float> lg(mi.n_vocab);
        double best = 1e30;
        for (int r = 0; r < (Ns[ni] <= 4096 ? 3 : 1); r++) { /* the first also warms up: the best of 3 */
            kvl_seq *s = NULL;
            if (kvl_seq_create(c, &s)) DIE("seq: %s", kvl_ctx_error(c));
            const double t0 = now();
            if (kvl_prefill(s, pr.data(), Ns[ni], lg.data(), NULL)) DIE("prefill: %s", kvl_ctx_error(c));
            const double t = now() - t0;
            best = t < best ? t : best;
            kvl_seq_free(s);
        }
        printf("| %d | %.2f | %.0f |\n", Ns[ni], 1e3 * best, Ns[ni] / best);
        if (json)
            fprintf(json, "%s{\"what\":\"prefill-api\",\"mode\":%d,\"gemm\":%d,\"prompt\":%d,\"ms\":%.3f}",
                    first_row ? "" : ",\n", mode, gemm, Ns[ni], 1e3 * best), first_row = 0;
        kvl_ctx_free(c);
    }
    }
    unsetenv("KVL_CUDA_PREFILL");
    unsetenv("KVL_CUDA_GEMM_MIN_N");
    unsetenv("KVL_CUDA_LOGITS_TAIL");
    kvl_model_free(m);
}

/* The Llama-3-8B shape (32 layers, 4096 wide, 32 / 8 heads of 128, FFN
 * 14336, vocabulary 128256, RoPE base 500000) with random weights of ggml
 * type wt made by kvl_cuda_lm; the descriptors point into s. */
struct desc_8b {
    std::vector<kvl_cuda_layer_desc> ld;
    std::vector<float> freq;
    kvl_cuda_model_desc md;
};
static void make_desc_8b(desc_8b &s, int wt) {
    const int L = 32, E = 4096, H = 32, Hkv = 8, hd = 128, F = 14336, V = 128256;
    s.ld.assign(L, kvl_cuda_layer_desc());
    for (int l = 0; l < L; l++) {
        kvl_cuda_layer_desc &d = s.ld[l];
        memset(&d, 0, sizeof d);
        d.wq = {wt, NULL, H * hd, E}, d.wk = {wt, NULL, Hkv * hd, E}, d.wv = {wt, NULL, Hkv * hd, E};
        d.wo = {wt, NULL, E, H * hd}, d.w_gate = {wt, NULL, F, E}, d.w_up = {wt, NULL, F, E};
        d.w_down = {wt, NULL, E, F};
    }
    s.freq.resize(hd / 2);
    for (int i = 0; i < hd / 2; i++) s.freq[i] = powf(500000.0f, -2.0f * i / hd);
    s.md = {L, E, H, Hkv, hd, F, V, 1e-5f, 1, s.freq.data(), {wt, NULL, V, E}, {wt, NULL, V, E}, NULL, s.ld.data()};
}

/* --prefill: the prefill attention kernel alone on the 8B head shape (D
 * 128, 32 query heads over 8 kv-heads, f16 pages of 32 tokens), one layer:
 * (a) a whole causal prompt of N tokens in one launch (N / 32 tiles x 8
 * kv-heads), (b) one 512-token chunk ending at depth 4K / 32K (the forward
 * pass's shape: 16 tiles x 8 kv-heads), the decode kernel on the same chunk
 * (launches of 32 entries, as the lm) beside it. Useful causal FLOPs =
 * 4 D H sum_i (visible keys of entry i) (QK^T and PV, 2 per multiply-add),
 * over the median of 5 event-timed launches, against the H200 SXM
 * datasheet's dense f16 tensor rate (989.5 TFLOP/s, mma with f32
 * accumulation; mma.sync reaches only part of what wgmma does). */
static void bench_prefill_attn(double bw) {
    const int D = 128, P = 32, H = 32, Hkv = 8, maxN = 32768;
    const int ppl = (maxN + P - 1) / P;
    kvl_err e = {};
    kvl_cuda_pool_config pc = {"f16", NULL, D, P, (int64_t)Hkv * ppl, 0};
    kvl_cuda_pool *pool = NULL;
    if (kvl_cuda_pool_create(&pc, &pool, &e)) DIE("prefill attn pool: %s", e.msg);
    if (kvl_cuda_pool_fill_random(pool, 0, (int64_t)Hkv * ppl, 11, &e) ||
        kvl_cuda_pool_set_positions(pool, 0, (int64_t)Hkv * ppl, ppl, NULL, &e) || kvl_cuda_sync(&e))
        DIE("prefill attn fill: %s", e.msg);
    kvl_cuda_prefill *pf = NULL;
    kvl_cuda_attn *at = NULL;
    if (kvl_cuda_prefill_create(pool, H, Hkv, &pf, &e)) DIE("prefill create: %s", e.msg);
    if (kvl_cuda_attn_create(pool, H, Hkv, 32, maxN, NULL, &at, &e)) DIE("attn create: %s", e.msg);
    std::vector<uint32_t> ids((size_t)Hkv * ppl);
    for (size_t i = 0; i < ids.size(); i++) ids[i] = (uint32_t)i;
    std::vector<int32_t> off((size_t)maxN * Hkv), len((size_t)maxN * Hkv), qpos(maxN), key(maxN, 0), tiles(2 * maxN);
    std::vector<float> q((size_t)maxN * H * D);
    for (size_t i = 0; i < q.size(); i++) q[i] = (float)((int)(i * 2654435761u % 2001) - 1000) * 1e-3f;
    uint32_t *d_ids;
    int32_t *d_off, *d_len, *d_qpos, *d_tiles;
    float *d_q, *d_out;
    if (kvl_cuda_alloc((void **)&d_ids, sizeof(uint32_t) * ids.size(), &e) ||
        kvl_cuda_alloc((void **)&d_off, sizeof(int32_t) * off.size(), &e) ||
        kvl_cuda_alloc((void **)&d_len, sizeof(int32_t) * len.size(), &e) ||
        kvl_cuda_alloc((void **)&d_qpos, sizeof(int32_t) * maxN, &e) ||
        kvl_cuda_alloc((void **)&d_tiles, sizeof(int32_t) * 2 * maxN, &e) ||
        kvl_cuda_alloc((void **)&d_q, sizeof(float) * q.size(), &e) ||
        kvl_cuda_alloc((void **)&d_out, sizeof(float) * q.size(), &e))
        DIE("prefill attn alloc: %s", e.msg);
    kvl_cuda_upload(d_ids, ids.data(), sizeof(uint32_t) * ids.size(), &e);
    kvl_cuda_upload(d_q, q.data(), sizeof(float) * q.size(), &e);
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0), cudaEventCreate(&e1);
    printf("\nprefill attention alone, one layer of the 8B shape (D 128, 32/8 heads, f16 pages of 32; copy %.0f GB/s); "
           "TFLOP/s = useful causal FLOPs / median time, %% of 989.5 dense f16 (H200 SXM datasheet)\n", bw / 1e9);
    printf("| shape | kernel | ms | TFLOP/s | %% of 989.5 |\n|---|---|---|---|---|\n");
    struct shp { const char *name; int n, d0; } shapes[4] = {
        {"whole prompt 4096", 4096, 0}, {"whole prompt 32768", 32768, 0},
        {"chunk 512 ending at 4096", 512, 4096 - 512}, {"chunk 512 ending at 32768", 512, 32768 - 512}};
    for (int si = 0; si < 4; si++) {
        const int n = shapes[si].n, d0 = shapes[si].d0;
        double vis = 0;
        for (int i = 0; i < n; i++) {
            qpos[i] = d0 + i;
            vis += d0 + i + 1;
            for (int h = 0; h < Hkv; h++) off[(size_t)i * Hkv + h] = h * ppl, len[(size_t)i * Hkv + h] = d0 + i + 1;
        }
        const double flops = 4.0 * D * H * vis;
        const int nt = kvl_cuda_prefill_tiles(key.data(), n, kvl_cuda_prefill_tile_tokens(pf), tiles.data());
        kvl_cuda_upload(d_off, off.data(), sizeof(int32_t) * n * Hkv, &e);
        kvl_cuda_upload(d_len, len.data(), sizeof(int32_t) * n * Hkv, &e);
        kvl_cuda_upload(d_qpos, qpos.data(), sizeof(int32_t) * n, &e);
        kvl_cuda_upload(d_tiles, tiles.data(), sizeof(int32_t) * 2 * nt, &e);
        for (int k = 0; k < (d0 ? 3 : 2); k++) { /* prefill variant 0, variant 1 (f16 query), decode kernel */
            std::vector<double> ts;
            for (int r = 0; r < 6; r++) {
                cudaEventRecord(e0);
                if (k < 2) {
                    kvl_cuda_prefill_set_variant(pf, k);
                    kvl_cuda_prefill_args a = {nt, d_tiles, d_ids, d_off, d_len, d_qpos, d_q, d_out, 0.088f};
                    if (kvl_cuda_prefill_run(pf, &a, NULL, &e)) DIE("prefill run: %s", e.msg);
                } else {
                    for (int i0 = 0; i0 < n; i0 += 32) {
                        kvl_cuda_attn_args a = {32, d0 + n, d_ids, d_off + (size_t)i0 * Hkv, d_len + (size_t)i0 * Hkv,
                                                d_qpos + i0, d_q + (size_t)i0 * H * D, d_out + (size_t)i0 * H * D, 0.088f};
                        if (kvl_cuda_attn_run(at, &a, NULL, &e)) DIE("attn run: %s", e.msg);
                    }
                }
                cudaEventRecord(e1);
                cudaEventSynchronize(e1);
                float ms = 0;
                cudaEventElapsedTime(&ms, e0, e1);
                if (r > 0) ts.push_back(ms); /* the first warms up */
            }
            if (kvl_cuda_sync(&e)) DIE("prefill attn: %s", e.msg);
            const double ms = median(ts), tf = flops / (ms * 1e-3) / 1e12;
            const char *kn = k == 0 ? "prefill (hi+lo query)" : k == 1 ? "prefill variant 1 (f16 query)" : "decode kernel x 16 launches";
            printf("| %s | %s | %.3f | %.1f | %.1f%% |\n", shapes[si].name, kn, ms, tf, 100 * tf / 989.5);
            if (json)
                fprintf(json, "%s{\"what\":\"prefill-attn\",\"shape\":\"%s\",\"kernel\":%d,\"ms\":%.4f,\"tflops\":%.2f}",
                        first_row ? "" : ",\n", shapes[si].name, k, ms, tf), first_row = 0;
        }
    }
    kvl_cuda_prefill_set_variant(pf, 0);
    cudaEventDestroy(e0), cudaEventDestroy(e1);
    kvl_cuda_free(d_ids), kvl_cuda_free(d_off), kvl_cuda_free(d_len), kvl_cuda_free(d_qpos), kvl_cuda_free(d_tiles);
    kvl_cuda_free(d_q), kvl_cuda_free(d_out);
    kvl_cuda_prefill_free(pf);
    kvl_cuda_attn_free(at);
    kvl_cuda_pool_free(pool);
}

/* mode 0 (before): device calls of 32 entries, the decode kernel per entry,
 * graphs; mode 1 (after): one call of 512 entries, the tiled prefill kernel
 * (launched directly) */
/* gemm: -1 the lm's defaults; 0 the integer matvec; 1 the GEMM; 2 the GEMM and the logits tail (the engine's setting) */
static void bench_prefill_8b(const char *codec, int mode, int gemm = -1) {
    const int wt = 8, NB = mode ? 512 : 32, STRETCH = mode ? 512 : 256;
    desc_8b s8;
    make_desc_8b(s8, wt);
    const kvl_cuda_model_desc &md = s8.md;
    kvl_cuda_lm_config cfg = {codec, 32, 32768 + 64, 1, NB, 0, 1234, 0, 0, 0, 0};
    kvl_cuda_lm *lm = NULL;
    kvl_err e = {};
    if (kvl_cuda_lm_create(&md, &cfg, &lm, &e)) DIE("8b prefill: %s", e.msg);
    kvl_cuda_lm_set_graphs(lm, 1);
    kvl_cuda_lm_set_prefill(lm, mode);
    if (gemm == 0) kvl_cuda_lm_set_gemm(lm, 0);
    if (gemm == 2) kvl_cuda_lm_set_logits_tail(lm, 1);
    printf("\n8B-shaped prefill (Q8_0, 8-bit activations, %s KV, device calls of %d entries of one slot, %s%s): "
           "the %d prompt tokens ending at each depth\n", codec, NB,
           mode ? "tiled prefill attention, direct launches" : "decode kernel per entry, graphs",
           gemm < 0 ? "" : gemm == 2 ? ", tensor-core GEMM, logits tail" : gemm ? ", tensor-core GEMM" : ", integer matvec",
           STRETCH);
    printf("| depth | ms per %d tokens | tok/s |\n|---|---|---|\n", STRETCH);
    const int Ds[3] = {512, 4096, 32768};
    double tpt[3] = {0, 0, 0};
    std::vector<int32_t> tok(NB), pos(NB), slot(NB, 0), am(NB);
    for (int di = 0; di < 3; di++) {
        const int d0 = Ds[di] - STRETCH;
        double best = 1e30;
        int used = 0;
        for (int r = 0; r < 2; r++) { /* the first captures the graph */
            if (kvl_cuda_lm_fill_context(lm, 0, d0, 5, &e)) DIE("fill: %s", e.msg);
            const double t0 = now();
            for (int p0 = d0; p0 < Ds[di]; p0 += NB) {
                for (int i = 0; i < NB; i++) tok[i] = 100 + (p0 + i) % 1000, pos[i] = p0 + i;
                if (kvl_cuda_lm_forward(lm, NB, tok.data(), pos.data(), slot.data(), 0, NULL, am.data(), &e))
                    DIE("8b prefill forward: %s", e.msg);
                used += kvl_cuda_lm_used_prefill(lm);
            }
            const double t = now() - t0;
            best = t < best ? t : best;
        }
        tpt[di] = best / STRETCH;
        printf("| %d | %.2f | %.0f |%s\n", Ds[di], 1e3 * best, STRETCH / best,
               (used > 0) != (mode == 1) ? " (kernel choice not as asked!)" : "");
        if (json)
            fprintf(json, "%s{\"what\":\"prefill-8b\",\"mode\":%d,\"gemm\":%d,\"codec\":\"%s\",\"depth\":%d,"
                    "\"tokens\":%d,\"ms\":%.3f}", first_row ? "" : ",\n", mode, gemm, codec, Ds[di], STRETCH, 1e3 * best),
                first_row = 0;
    }
    /* time per token a + b depth through (512, tpt0) and (32768, tpt2); TTFT = sum over the prompt */
    const double b = (tpt[2] - tpt[0]) / (32768 - 512), a = tpt[0] - b * 512;
    for (int di = 0; di < 3; di++) {
        const double n = Ds[di], ttft = a * n + b * n * (n - 1) / 2;
        printf("(8B %s, %s%s: estimated TTFT of a %d-token prompt %.1f ms = %.0f tok/s)\n", codec,
               mode ? "after" : "before", gemm < 0 ? "" : gemm == 2 ? ", GEMM + tail" : gemm ? ", GEMM" : ", matvec", Ds[di],
               1e3 * ttft, n / ttft);
    }
    kvl_cuda_lm_free(lm);
}

/* A GGUF through the model loader (e.g. `kvlite gguf-random --preset
 * llama3-8b`): one context on the device (f16 KV, one sequence), the API
 * decode at ctx 64 (logits downloaded each token), then the device model of
 * that context at batch 1 and ctx 0 / 4K / 32K / 128K (<= ctx_max), direct
 * and from a CUDA graph, against the roofline; the per-stage profile at
 * 32K; then at 0 / 4K / 32K with device sampling (kvl_cuda_lm_set_sampling,
 * the CPU sampler's defaults) in place of argmax. The numbers to set beside
 * the descriptor path's (bench_8b). */
static void bench_gguf(const char *path, int steps, double bw, int ctx_max) {
    kvl_model *m = NULL;
    char err[256] = "";
    double t0 = now();
    if (kvl_model_load(path, &m, err, sizeof err)) DIE("gguf %s: %s", path, err);
    kvl_model_info mi;
    kvl_model_get_info(m, &mi);
    const double t_load = now() - t0;
    kvl_ctx_params p;
    kvl_ctx_params_default(&p);
    p.n_ctx = ctx_max + 64 + 16 + steps;
    p.kv_codec = "f16";
    p.device = KVL_DEVICE_CUDA;
    kvl_ctx *c = NULL;
    t0 = now();
    if (kvl_ctx_create(m, &p, &c, err, sizeof err)) DIE("gguf ctx: %s", err);
    kvl_cuda_lm *lm = kvl_engine_cuda_lm(c);
    printf("\nGGUF %s through kvl_model_load + kvl_ctx (device cuda): %d layers, %d/%d heads of %d, n_embd %d, n_ff %d, "
           "vocab %d; mapped in %.2f s, context (weights uploaded) in %.1f s, %.2f GB read per step\n",
           path, mi.n_layer, mi.n_head, mi.n_head_kv, mi.head_dim, mi.n_embd, mi.n_ff, mi.n_vocab, t_load, now() - t0,
           kvl_cuda_lm_step_weight_bytes(lm) / 1e9);
    printf("| what     | codec  | weights | launch | B   | ctx    | tok/s     | ms/step  | roof ms  | of roof |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|\n");
    {
        kvl_seq *s = NULL;
        if (kvl_seq_create(c, &s)) DIE("gguf seq: %s", kvl_ctx_error(c));
        std::vector<kvl_token> pr(64);
        for (int i = 0; i < 64; i++) pr[i] = (kvl_token)(1000 + 37 * i) % mi.n_vocab;
        std::vector<float> lg(mi.n_vocab);
        t0 = now();
        if (kvl_prefill(s, pr.data(), 64, lg.data(), NULL)) DIE("gguf prefill: %s", kvl_ctx_error(c));
        const double tp = now() - t0;
        double sum = 0, sq = 0;
        for (float v : lg) sum += v, sq += (double)v * v;
        const double mean = sum / mi.n_vocab;
        printf("(api prefill of 64 tokens: %.2f ms = %.0f tok/s; logits mean %.3f std %.3f)\n", 1e3 * tp, 64 / tp, mean,
               sqrt(std::max(0.0, sq / mi.n_vocab - mean * mean)));
        std::vector<double> t;
        std::vector<kvl_token> gen;
        kvl_token tk = (kvl_token)(std::max_element(lg.begin(), lg.end()) - lg.begin());
        for (int i = 0; i < 8 + steps; i++) {
            gen.push_back(tk);
            const double t1 = now();
            if (kvl_decode(s, tk, lg.data())) DIE("gguf decode: %s", kvl_ctx_error(c));
            if (i >= 8) t.push_back(now() - t1);
            tk = (kvl_token)(std::max_element(lg.begin(), lg.end()) - lg.begin());
        }
        std::vector<kvl_token> u(gen);
        std::sort(u.begin(), u.end());
        printf("(api greedy: %zu distinct of %zu tokens; first 12:", (size_t)(std::unique(u.begin(), u.end()) - u.begin()),
               gen.size());
        for (size_t i = 0; i < gen.size() && i < 12; i++) printf(" %d", gen[i]);
        printf(")\n");
        const double md = median(t);
        row("gguf-api", "f16", "native", 0, 1, 64, 1 / md, 1e3 * md, 0);
        kvl_seq_free(s);
    }
    kvl_err e = {};
    if (kvl_cuda_lm_fill_context(lm, 0, ctx_max, 5, &e)) DIE("gguf fill: %s", e.msg);
    const double bpt = kvl_cuda_lm_kv_bytes_per_token(lm);
    const int ctxs[4] = {0, 4096, 32768, 131072};
    for (int ki = 0; ki < 4; ki++) {
        if (ctxs[ki] > ctx_max) continue;
        double tg = 0;
        for (int g = 0; g < 2; g++) {
            kvl_cuda_lm_set_graphs(lm, g);
            const double md = time_steps(lm, 1, ctxs[ki], steps, 3);
            if (md < 0) continue;
            if (g) tg = md;
            const double roof = (kvl_cuda_lm_step_weight_bytes(lm) + (double)ctxs[ki] * bpt) / bw;
            row("gguf", "f16", "native", g, 1, ctxs[ki], 1 / md, 1e3 * md, 1e3 * roof);
        }
        if (ctxs[ki] == 32768) {
            if (kvl_cuda_lm_set_profile(lm, 1, &e)) DIE("profile: %s", e.msg);
            time_steps(lm, 1, ctxs[ki], steps / 2 > 4 ? steps / 2 : 4, 2);
            print_profile(lm, "gguf f16 KV ctx 32768", 1e3 * tg);
            kvl_cuda_lm_set_profile(lm, 0, &e);
            /* the gate|up + SwiGLU epilogue (not the default) against the default, same run */
            kvl_cuda_lm_set_fused_swiglu(lm, 1);
            kvl_cuda_lm_set_graphs(lm, 1);
            const double tu = time_steps(lm, 1, ctxs[ki], steps, 3);
            const double roof = (kvl_cuda_lm_step_weight_bytes(lm) + (double)ctxs[ki] * bpt) / bw;
            if (tu > 0) row("gguf-fus", "f16", "native", 1, 1, ctxs[ki], 1 / tu, 1e3 * tu, 1e3 * roof);
            if (kvl_cuda_lm_set_profile(lm, 1, &e)) DIE("profile: %s", e.msg);
            time_steps(lm, 1, ctxs[ki], steps / 2 > 4 ? steps / 2 : 4, 2);
            print_profile(lm, "gguf f16 KV ctx 32768, gate|up + SwiGLU epilogue", 1e3 * tu);
            kvl_cuda_lm_set_profile(lm, 0, &e);
            kvl_cuda_lm_set_fused_swiglu(lm, 0);
            kvl_cuda_lm_set_graphs(lm, 1);
        }
    }
    /* device sampling (the CPU sampler's defaults: T 0.8, top-k 40, top-p 0.95, min-p 0.05) in place of argmax */
    for (int ki = 0; ki < 3; ki++) {
        if (ctxs[ki] > ctx_max) continue;
        if (kvl_cuda_lm_set_sampling(lm, 0.8f, 40, 0.95f, 0.05f, 42, &e)) DIE("sampling: %s", e.msg);
        kvl_cuda_lm_set_graphs(lm, 1);
        const double md = time_steps(lm, 1, ctxs[ki], steps, 3);
        const double roof = (kvl_cuda_lm_step_weight_bytes(lm) + (double)ctxs[ki] * bpt) / bw;
        if (md > 0) row("gguf-smp", "f16", "native", 1, 1, ctxs[ki], 1 / md, 1e3 * md, 1e3 * roof);
    }
    kvl_cuda_lm_set_sampling(lm, 0.0f, 0, 1.0f, 0.0f, 0, &e);
    kvl_ctx_free(c);
    kvl_model_free(m);
}

static void print_profile(kvl_cuda_lm *lm, const char *what, double step_ms) {
    double ms[KVL_CUDA_PROF_N], tot = 0;
    const int calls = kvl_cuda_lm_profile(lm, ms);
    for (int i = 0; i < KVL_CUDA_PROF_N; i++) tot += ms[i];
    printf("per-stage device time, %s (%d steps, direct launches with an event after each stage; sum %.3f ms, "
           "graph step %.3f ms):\n| stage | ms/step | share |\n|---|---|---|\n",
           what, calls, tot, step_ms);
    for (int i = 0; i < KVL_CUDA_PROF_N; i++)
        if (ms[i] > 0) printf("| %s | %.3f | %.1f%% |\n", kvl_cuda_lm_prof_name(i), ms[i], 100 * ms[i] / tot);
    if (json) {
        fprintf(json, "%s{\"what\":\"profile\",\"case\":\"%s\",\"graph_ms\":%.5f", jsep(), what, step_ms);
        for (int i = 0; i < KVL_CUDA_PROF_N; i++) fprintf(json, ",\"%s\":%.5f", kvl_cuda_lm_prof_name(i), ms[i]);
        fprintf(json, "}");
    }
}

/* wt: ggml type of the random weights; exact: f32 activations */
static int lean_8b; /* --8b-lean: f16 KV only, no PDL / variant rows, profile at 32K only */

static void bench_8b(int steps, double bw, int wt, int exact, int ctx_max, int all_codecs) {
    const char *wname = wt == 1 ? "f16" : wt == 2 ? "q4_0" : wt == 3 ? "q4_1" : "q8_0";
    desc_8b s8;
    make_desc_8b(s8, wt);
    const kvl_cuda_model_desc &md = s8.md;
    std::vector<std::string> cl;
    { /* --8b-kv list, or the default pair */
        const std::string spec = g_kv8b ? g_kv8b : all_codecs ? "f16,int4z" : "f16";
        size_t a = 0;
        while (a <= spec.size()) {
            const size_t b = spec.find(',', a);
            const std::string one = spec.substr(a, b == std::string::npos ? std::string::npos : b - a);
            if (!one.empty()) cl.push_back(one);
            if (b == std::string::npos) break;
            a = b + 1;
        }
    }
    const int n_codecs = g_kv8b ? (int)cl.size() : (all_codecs ? 2 : 1);
    std::vector<const char *> codecs;
    for (const std::string &c : cl) codecs.push_back(c.c_str());
    const char *act = wt == 1 ? "f32" : exact ? "f32 (exact)" : "8-bit";
    printf("\n8B-shaped llama (random %s weights on the device, %s activations): 32 layers, 4096/14336, 32/8 heads "
           "of 128, vocab 128256\n", wname, act);
    printf("| what     | codec  | weights | launch | B   | ctx    | tok/s     | ms/step  | roof ms  | of roof |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|\n");
    char wlabel[32];
    snprintf(wlabel, sizeof wlabel, "%s%s", wname, wt != 1 && exact ? "/x" : "");
    for (int ci = 0; ci < n_codecs && ci < (int)codecs.size(); ci++) {
        const int sealing = !strncmp(codecs[ci], "kivi", 4);
        kvl_cuda_lm_config cfg = {codecs[ci], 32, ctx_max + 64 + steps, 1, 8, wt == 1, 1234, exact, 0, 0, 0};
        kvl_cuda_lm *lm = NULL;
        kvl_err e = {};
        const double t0 = now();
        if (kvl_cuda_lm_create(&md, &cfg, &lm, &e)) DIE("8b: %s", e.msg);
        if (ci == 0)
            printf("(weights %.2f GB on the device, %.2f GB read per step, set up in %.1f s; KV %.0f bytes/token)\n",
                   kvl_cuda_lm_weight_bytes(lm) / 1e9, kvl_cuda_lm_step_weight_bytes(lm) / 1e9, now() - t0,
                   kvl_cuda_lm_kv_bytes_per_token(lm));
        if (kvl_cuda_lm_fill_context(lm, 0, ctx_max, 5, &e)) DIE("fill: %s", e.msg);
        const int ctxs[4] = {0, 4096, 32768, 131072};
        for (int ki = 0; ki < 4; ki++) {
            if (ctxs[ki] > ctx_max) continue;
            /* sealing codecs: the context's full pages sealed (a shorter run before reopened them) */
            if (sealing && kvl_cuda_lm_fill_context(lm, 0, ctxs[ki], 5, &e)) DIE("fill: %s", e.msg);
            double tg = 0;
            for (int g = 0; g < 2; g++) {
                kvl_cuda_lm_set_graphs(lm, g);
                const double t = time_steps(lm, 1, ctxs[ki], steps, 3);
                if (t < 0) continue;
                if (g) tg = t;
                const double roof =
                    (kvl_cuda_lm_step_weight_bytes(lm) + (double)ctxs[ki] * kvl_cuda_lm_kv_bytes_per_token(lm)) / bw;
                row("8b", codecs[ci], wlabel, g, 1, ctxs[ki], 1 / t, 1e3 * t, 1e3 * roof);
                /* the mean over the steps: one of each 32 seals a page in every list (median: none) */
                if (sealing && g)
                    row("8b-mean", codecs[ci], wlabel, g, 1, ctxs[ki], 1 / g_last_mean, 1e3 * g_last_mean, 1e3 * roof);
            }
            if (ci == 0 && wt != 1 && !exact && !lean_8b) { /* the integer matvec without programmatic dependent launch */
                kvl_cuda_lm_set_gemv(lm, -1, 0, 1);
                kvl_cuda_lm_set_graphs(lm, 1);
                const double t = time_steps(lm, 1, ctxs[ki], steps, 3);
                kvl_cuda_lm_set_gemv(lm, -1, 1, 1);
                kvl_cuda_lm_set_graphs(lm, 1);
                const double roof =
                    (kvl_cuda_lm_step_weight_bytes(lm) + (double)ctxs[ki] * kvl_cuda_lm_kv_bytes_per_token(lm)) / bw;
                if (t > 0) row("8b-nopdl", codecs[ci], wlabel, 1, 1, ctxs[ki], 1 / t, 1e3 * t, 1e3 * roof);
                for (int v = 7; v <= 8 && (ctxs[ki] == 0 || ctxs[ki] == 32768); v++) { /* the persistent variants */
                    kvl_cuda_lm_set_gemv(lm, v, 1, 1);
                    kvl_cuda_lm_set_graphs(lm, 1);
                    const double tv = time_steps(lm, 1, ctxs[ki], steps, 3);
                    char what[16];
                    snprintf(what, sizeof what, "8b-var%d", v);
                    if (tv > 0) row(what, codecs[ci], wlabel, 1, 1, ctxs[ki], 1 / tv, 1e3 * tv, 1e3 * roof);
                }
                kvl_cuda_lm_set_gemv(lm, -1, 1, 1);
                kvl_cuda_lm_set_graphs(lm, 1);
            }
            if ((ci == 0 || !lean_8b) && (ctxs[ki] == 32768 || (ctxs[ki] == 131072 && !lean_8b))) {
                char what[96];
                snprintf(what, sizeof what, "8b %s %s KV %s ctx %d", wlabel, act, codecs[ci], ctxs[ki]);
                if (kvl_cuda_lm_set_profile(lm, 1, &e)) DIE("profile: %s", e.msg);
                time_steps(lm, 1, ctxs[ki], steps / 2 > 4 ? steps / 2 : 4, 2);
                print_profile(lm, what, 1e3 * tg);
                kvl_cuda_lm_set_profile(lm, 0, &e);
            }
        }
        kvl_cuda_lm_free(lm);
    }
}

/* --8b-ablate: where the graph's step time goes (8B, Q8_0, 8-bit, f16 KV,
 * batch 1, CUDA graphs), all in one run: the step with each launch option
 * (RMSNorm kernel, early trigger, PDL for the small kernels, L2 prefetch of
 * the next matrix and its size), then, on the default configuration
 * and on the old one (at ctx 0), every stage left
 * out and launched twice: the differences to the full step place each
 * stage's share of the graph time (its own time plus the gaps it adds).
 * Results of the ablated steps are garbage; only their time counts. */
static void bench_8b_ablate(int steps, double bw, int ctx_max) {
    const int wt = 8;
    desc_8b s8;
    make_desc_8b(s8, wt);
    const kvl_cuda_model_desc &md = s8.md;
    kvl_cuda_lm_config cfg = {"f16", 32, ctx_max + 64 + steps, 1, 8, 0, 1234, 0, 0, 0, 0};
    kvl_cuda_lm *lm = NULL;
    kvl_err e = {};
    if (kvl_cuda_lm_create(&md, &cfg, &lm, &e)) DIE("8b ablate: %s", e.msg);
    if (kvl_cuda_lm_fill_context(lm, 0, ctx_max, 5, &e)) DIE("fill: %s", e.msg);
    kvl_cuda_lm_set_graphs(lm, 1);
    const int ctxs[2] = {0, 32768};
    printf("\n8B step by launch option and ablation (Q8_0, 8-bit, f16 KV, batch 1, graphs; median of %d steps)\n", steps);
    printf("| ctx | configuration | ms/step | vs default | of roof |\n|---|---|---|---|---|\n");
    for (int ki = 0; ki < 2; ki++) {
        const int ctx = ctxs[ki];
        if (ctx > ctx_max) continue;
        const double roof = (kvl_cuda_lm_step_weight_bytes(lm) + (double)ctx * kvl_cuda_lm_kv_bytes_per_token(lm)) / bw;
        double base = 0;
        auto run = [&](const char *what) {
            const double t = time_steps(lm, 1, ctx, steps, 3);
            if (t <= 0) return t;
            if (!base) base = t;
            printf("| %d | %s | %.3f | %+.3f | %.1f%% |\n", ctx, what, 1e3 * t, 1e3 * (t - base), 100 * roof / t);
            fflush(stdout);
            if (json)
                fprintf(json, "%s{\"what\":\"ablate\",\"ctx\":%d,\"case\":\"%s\",\"ms_per_step\":%.5f,\"roofline_ms\":%.5f}",
                        jsep(), ctx, what, 1e3 * t, 1e3 * roof);
            return t;
        };
        /* old: the fourth increment's launches (one-block RMSNorm, no trigger, small kernels in plain order) */
        auto old_cfg = [&]() {
            kvl_cuda_lm_set_launch(lm, 0, 0), kvl_cuda_lm_set_gemv(lm, -1, 1, 0), kvl_cuda_lm_set_prefetch(lm, 0, 0);
        };
        auto new_cfg = [&]() {
            kvl_cuda_lm_set_launch(lm, 1, 1), kvl_cuda_lm_set_gemv(lm, -1, 1, 1), kvl_cuda_lm_set_prefetch(lm, 4 << 20, 0);
        };
        new_cfg();
        run("default: register RMSNorm, PDL chain, trigger, L2 prefetch 4 MB");
        old_cfg();
        run("fourth increment (one-block RMSNorm, plain order, no trigger, no prefetch)");
        kvl_cuda_lm_set_launch(lm, 1, 0);
        run("+ register RMSNorm");
        kvl_cuda_lm_set_gemv(lm, -1, 1, 1);
        run("+ register RMSNorm, trigger");
        kvl_cuda_lm_set_launch(lm, 1, 1);
        run("+ register RMSNorm, trigger, PDL chain");
        kvl_cuda_lm_set_launch(lm, 0, 1);
        run("one-block RMSNorm, trigger, PDL chain (append, SwiGLU)");
        kvl_cuda_lm_set_launch(lm, 1, 1);
        const int pfm[5] = {8, 16, 24, 32, 48};
        for (int i = 0; i < 5; i++) {
            char w[64];
            snprintf(w, sizeof w, "new launches, L2 prefetch %d MB", pfm[i]);
            kvl_cuda_lm_set_prefetch(lm, (size_t)pfm[i] << 20, 0);
            run(w);
        }
        kvl_cuda_lm_set_prefetch(lm, (size_t)16 << 20, 1);
        run("new launches, L2 prefetch 16 MB, and wo from qkv");
        old_cfg();
        kvl_cuda_lm_set_prefetch(lm, (size_t)16 << 20, 0);
        run("fourth increment + L2 prefetch 16 MB");
        for (int cfgi = 0; cfgi < 2; cfgi++) {
            if (cfgi == 0) new_cfg();
            else old_cfg();
            const char *cn = cfgi == 0 ? "default" : "fourth increment";
            for (int st = 0; st < KVL_CUDA_PROF_N; st++) {
                if (st == KVL_CUDA_PROF_EMBED || (cfgi == 1 && ctx != 0)) continue; /* the old one at ctx 0 only (done) */
                for (int dup = 0; dup < 2; dup++) {
                    char w[96];
                    snprintf(w, sizeof w, "%s, %s %s", cn, kvl_cuda_lm_prof_name(st), dup ? "twice" : "left out");
                    kvl_cuda_lm_set_ablate(lm, dup ? 0 : 1u << st, dup ? 1u << st : 0);
                    run(w);
                }
            }
            kvl_cuda_lm_set_ablate(lm, 0, 0);
        }
        new_cfg();
        run("default again");
    }
    kvl_cuda_lm_free(lm);
}

/* ---- the matvec alone ---- */

static void gemv_row(const char *shape, const char *fmt, const char *path, const char *variant, double us,
                     double bytes, double bw) {
    printf("| %-11s | %-5s | %-6s | %-12s | %8.2f | %7.0f | %5.1f%% |\n", shape, fmt, path, variant, us,
           bytes / us / 1e3, 100 * bytes / (us * 1e-6) / bw);
    fflush(stdout);
    if (json)
        fprintf(json, "%s{\"what\":\"gemv\",\"shape\":\"%s\",\"fmt\":\"%s\",\"path\":\"%s\",\"variant\":\"%s\","
                      "\"us\":%.3f,\"gbs\":%.1f}",
                jsep(), shape, fmt, path, variant, us, bytes / us / 1e3);
}

static void bench_gemv(double bw) {
    const int64_t shapes[4][2] = {{4096, 4096}, {14336, 4096}, {4096, 14336}, {128256, 4096}};
    const kvl_cuda_wfmt fmts[4] = {KVL_CUDA_WF_Q8_0, KVL_CUDA_WF_Q4_0, KVL_CUDA_WF_Q4_1, KVL_CUDA_WF_F16};
    const char *fnames[4] = {"q8_0", "q4_0", "q4_1", "f16"};
    kvl_err e = {};
    printf("\nmatvec alone, 1 column (events around each launch, median of 40; bytes = weights + activations + output)\n");
    printf("| shape       | fmt   | act    | variant      | us       | GB/s    | of copy |\n|---|---|---|---|---|---|---|\n");
    cudaEvent_t e0[48], e1[48];
    for (int i = 0; i < 48; i++) cudaEventCreate(&e0[i]), cudaEventCreate(&e1[i]);
    kvl_cuda_gemv_opts o = kvl_cuda_gemv_opts_default();
    o.pdl = 0; /* each launch alone between its events */
    for (int si = 0; si < 4; si++) {
        const int64_t rows = shapes[si][0], cols = shapes[si][1];
        char shape[32];
        snprintf(shape, sizeof shape, "%lldx%lld", (long long)rows, (long long)cols);
        float *x, *y;
        int8_t *xq;
        float *xds;
        if (kvl_cuda_alloc((void **)&x, sizeof(float) * cols, &e) || kvl_cuda_alloc((void **)&y, sizeof(float) * rows, &e) ||
            kvl_cuda_alloc((void **)&xq, cols, &e) || kvl_cuda_alloc((void **)&xds, sizeof(float) * cols / 16, &e))
            DIE("gemv: %s", e.msg);
        std::vector<float> hx(cols);
        for (int64_t j = 0; j < cols; j++) hx[j] = (float)((j * 2654435761u) % 2001) / 1000.0f - 1.0f;
        kvl_cuda_upload(x, hx.data(), sizeof(float) * cols, &e);
        /* the quantization of the input alone */
        {
            std::vector<double> t;
            for (int r = 0; r < 43; r++) {
                cudaEventRecord(e0[r % 48]);
                kvl_cuda_quantize_q8(x, 1, (int)cols, xq, xds, NULL, &e);
                cudaEventRecord(e1[r % 48]);
                cudaEventSynchronize(e1[r % 48]);
                float ms;
                cudaEventElapsedTime(&ms, e0[r % 48], e1[r % 48]);
                if (r >= 3) t.push_back(ms * 1e3);
            }
            gemv_row(shape, "-", "quant", "x -> 8-bit", median(t), cols * 4.0 + cols * 1.25, bw);
        }
        for (int fi = 0; fi < 4; fi++) {
            const kvl_cuda_wfmt f = fmts[fi];
            const size_t qb = kvl_cuda_wmat_qbytes(f, rows, cols), sb = kvl_cuda_wmat_sbytes(f, rows, cols);
            int nc = (int)((400e6 + qb + sb - 1) / (qb + sb));
            if (nc < 1) nc = 1;
            if (nc > 16) nc = 16;
            /* the largest shape once more over 16 rotated copies (8.9 GB of Q8_0): does a matrix
             * not read by the previous launch cost more (TLB, DRAM pages) than the same one again? */
            const int rot = si == 3 && f == KVL_CUDA_WF_Q8_0;
            if (rot) nc = 16;
            std::vector<kvl_cuda_wmat> w(nc);
            for (int c = 0; c < nc; c++) {
                w[c] = {f, rows, cols, NULL, NULL};
                if (kvl_cuda_alloc(&w[c].q, qb, &e) || (sb && kvl_cuda_alloc(&w[c].s, sb, &e)) ||
                    kvl_cuda_wmat_fill_random(&w[c], 77 + c, 0.02f, NULL, &e))
                    DIE("gemv weights: %s", e.msg);
            }
            const int nv = f == KVL_CUDA_WF_F16 ? 0 : kvl_cuda_gemv_q8_n_variants();
            for (int v = -2; v < nv; v++) { /* -2: the f32 matvec; -1: the integer one's default */
                char vn[32] = "-";
                if (v == -1 && !nv) continue;
                if (v == -1) snprintf(vn, sizeof vn, "default");
                if (v >= 0) {
                    int R, U, H;
                    kvl_cuda_gemv_q8_variant(v, &R, &U, &H);
                    if (R) snprintf(vn, sizeof vn, "%dR %dU %s", R, U, H ? "noL1" : "ldg");
                    else snprintf(vn, sizeof vn, "pipe %dU noL1", U);
                }
                o.variant = v < 0 ? -1 : v;
                std::vector<double> t;
                for (int r = 0; r < 43; r++) {
                    const kvl_cuda_wmat &m = w[r % nc];
                    cudaEventRecord(e0[r % 48]);
                    if (v == -2) kvl_cuda_gemv(&m, x, 1, y, 0, NULL, &e);
                    else kvl_cuda_gemv_q8_ex(&m, xq, xds, 1, y, 0, &o, NULL, &e);
                    cudaEventRecord(e1[r % 48]);
                    cudaEventSynchronize(e1[r % 48]);
                    float ms;
                    cudaEventElapsedTime(&ms, e0[r % 48], e1[r % 48]);
                    if (r >= 3) t.push_back(ms * 1e3);
                }
                if (kvl_cuda_sync(&e)) DIE("gemv: %s", e.msg);
                const double bytes = (double)(qb + sb) + (v == -2 ? 4.0 : 1.25) * cols + 4.0 * rows;
                gemv_row(rot ? "128256x4096 rot16" : shape, fnames[fi], v == -2 ? "f32" : "8-bit", vn, median(t), bytes, bw);
                if (rot && v == -1) { /* and the same copy every time, as the rows above for this shape */
                    std::vector<double> t1;
                    for (int r = 0; r < 43; r++) {
                        cudaEventRecord(e0[r % 48]);
                        kvl_cuda_gemv_q8_ex(&w[0], xq, xds, 1, y, 0, &o, NULL, &e);
                        cudaEventRecord(e1[r % 48]);
                        cudaEventSynchronize(e1[r % 48]);
                        float ms;
                        cudaEventElapsedTime(&ms, e0[r % 48], e1[r % 48]);
                        if (r >= 3) t1.push_back(ms * 1e3);
                    }
                    gemv_row("128256x4096 same", fnames[fi], "8-bit", vn, median(t1), bytes, bw);
                }
            }
            o.variant = -1;
            for (int c = 0; c < nc; c++) kvl_cuda_free(w[c].q), kvl_cuda_free(w[c].s);
        }
        kvl_cuda_free(x), kvl_cuda_free(y), kvl_cuda_free(xq), kvl_cuda_free(xds);
    }
    for (int i = 0; i < 48; i++) cudaEventDestroy(e0[i]), cudaEventDestroy(e1[i]);
}

/* --gemm / --prefill-gemm: the tensor-core GEMM (kvl_cuda_gemm_q8) alone on
 * the 8B's matrices (qkv 6144x4096, wo 4096x4096, gate|up 28672x4096, down
 * 4096x14336, output 128256x4096), n activation columns (tokens) of 8-bit
 * blocks, against the integer matvec on the same inputs (kvl_cuda_gemv_q8_ex:
 * launches of 8 columns). Each launch between two events, plain stream order
 * (no PDL); median of 7 after 2 warm-ups (the matvec: of 3 after 1); weight
 * copies rotated (>= 300 MB read per rotation where the matrix is smaller).
 * TOPS = 2 rows cols n / time (int8 multiply-adds as 2 operations). Per n
 * for the threshold of the lm's choice (KVL_CUDA_GEMM_MIN_N); at n = 512
 * both tile sizes and the Q4 formats too. */
static void bench_gemm(double bw) {
    struct shp { const char *name; int64_t rows, cols; } shapes[5] = {
        {"qkv", 6144, 4096}, {"wo", 4096, 4096}, {"gate|up", 28672, 4096}, {"down", 4096, 14336}, {"out", 128256, 4096}};
    const int NMAX = 512, ns[7] = {8, 16, 32, 64, 128, 256, 512};
    kvl_err e = {};
    printf("\ntensor-core GEMM alone (kvl_cuda_gemm_q8) vs the integer matvec, 8B shapes, n tokens (copy %.0f GB/s); "
           "TOPS = 2 rows cols n / median time\n", bw / 1e9);
    printf("| matrix | fmt | n | tile | GEMM us | GEMM TOPS | matvec us | matvec TOPS | speedup |\n|---|---|---|---|---|---|---|---|---|\n");
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0), cudaEventCreate(&e1);
    auto timed = [&](int reps, int warm, auto &&fn) {
        std::vector<double> t;
        for (int r = 0; r < warm + reps; r++) {
            cudaEventRecord(e0);
            fn(r);
            cudaEventRecord(e1);
            cudaEventSynchronize(e1);
            float ms = 0;
            cudaEventElapsedTime(&ms, e0, e1);
            if (r >= warm) t.push_back(ms * 1e3);
        }
        if (kvl_cuda_sync(&e)) DIE("gemm bench: %s", e.msg);
        return median(t);
    };
    kvl_cuda_gemv_opts o = kvl_cuda_gemv_opts_default();
    o.pdl = 0;
    const kvl_cuda_wfmt fmts[3] = {KVL_CUDA_WF_Q8_0, KVL_CUDA_WF_Q4_0, KVL_CUDA_WF_Q4_1};
    const char *fnames[3] = {"q8_0", "q4_0", "q4_1"};
    for (int si = 0; si < 5; si++) {
        const int64_t rows = shapes[si].rows, cols = shapes[si].cols;
        float *x, *y;
        int8_t *xq;
        float *xds;
        if (kvl_cuda_alloc((void **)&x, sizeof(float) * NMAX * cols, &e) ||
            kvl_cuda_alloc((void **)&y, sizeof(float) * NMAX * rows, &e) || kvl_cuda_alloc((void **)&xq, NMAX * cols, &e) ||
            kvl_cuda_alloc((void **)&xds, sizeof(float) * NMAX * cols / 16, &e))
            DIE("gemm bench: %s", e.msg);
        std::vector<float> hx((size_t)NMAX * cols);
        for (size_t j = 0; j < hx.size(); j++) hx[j] = (float)((j * 2654435761u) % 2001) / 1000.0f - 1.0f;
        kvl_cuda_upload(x, hx.data(), sizeof(float) * hx.size(), &e);
        if (kvl_cuda_quantize_q8(x, NMAX, (int)cols, xq, xds, NULL, &e)) DIE("gemm bench: %s", e.msg);
        for (int fi = 0; fi < 3; fi++) {
            if (fi && si != 1 && si != 2) continue; /* Q4 formats: wo and gate|up */
            const kvl_cuda_wfmt f = fmts[fi];
            const size_t qb = kvl_cuda_wmat_qbytes(f, rows, cols), sb = kvl_cuda_wmat_sbytes(f, rows, cols);
            int nc = (int)((300e6 + qb + sb - 1) / (qb + sb));
            nc = nc < 1 ? 1 : nc > 8 ? 8 : nc;
            std::vector<kvl_cuda_wmat> w(nc);
            for (int c = 0; c < nc; c++) {
                w[c] = {f, rows, cols, NULL, NULL};
                if (kvl_cuda_alloc(&w[c].q, qb, &e) || kvl_cuda_alloc(&w[c].s, sb, &e) ||
                    kvl_cuda_wmat_fill_random(&w[c], 91 + c, 0.02f, NULL, &e))
                    DIE("gemm weights: %s", e.msg);
            }
            for (int ni = 0; ni < 7; ni++) {
                const int n = ns[ni];
                if (fi && n != 512) continue;
                const double ops = 2.0 * rows * cols * n;
                for (int bm = 0; bm <= 128; bm += 64) {
                    if (bm && n != 512) continue; /* both tiles forced at 512 only */
                    const double tg = timed(7, 2, [&](int r) {
                        if (kvl_cuda_gemm_q8(&w[r % nc], xq, xds, n, y, 0, bm, 0, NULL, &e)) DIE("gemm: %s", e.msg);
                    });
                    double tm = 0;
                    if (!bm) tm = timed(3, 1, [&](int r) { kvl_cuda_gemv_q8_ex(&w[r % nc], xq, xds, n, y, 0, &o, NULL, &e); });
                    char tile[16];
                    snprintf(tile, sizeof tile, bm ? "%d" : "auto", bm);
                    if (bm) printf("| %s %lldx%lld | %s | %d | %s | %.1f | %.1f | | | |\n", shapes[si].name,
                                   (long long)rows, (long long)cols, fnames[fi], n, tile, tg, ops / tg / 1e6);
                    else printf("| %s %lldx%lld | %s | %d | %s | %.1f | %.1f | %.1f | %.1f | %.2fx |\n", shapes[si].name,
                                (long long)rows, (long long)cols, fnames[fi], n, tile, tg, ops / tg / 1e6, tm,
                                ops / tm / 1e6, tm / tg);
                    fflush(stdout);
                    if (json)
                        fprintf(json, "%s{\"what\":\"gemm\",\"matrix\":\"%s\",\"rows\":%lld,\"cols\":%lld,"
                                      "\"fmt\":\"%s\",\"n\":%d,\"bm\":%d,\"gemm_us\":%.3f,\"gemv_us\":%.3f}",
                                jsep(), shapes[si].name, (long long)rows, (long long)cols, fnames[fi], n, bm, tg, tm);
                }
            }
            for (int c = 0; c < nc; c++) kvl_cuda_free(w[c].q), kvl_cuda_free(w[c].s);
        }
        kvl_cuda_free(x), kvl_cuda_free(y), kvl_cuda_free(xq), kvl_cuda_free(xds);
    }
    cudaEventDestroy(e0), cudaEventDestroy(e1);
}

int main(int argc, char **argv) {
    const char *model = NULL, *jpath = NULL, *gguf = NULL;
    int steps = 32, do8b = 1, ablate = 0, prefill = 0, f16_8b = 0, q4_8b = 0, gemv = 0, gemm = 0, ctx_max = 32768;
    char buf[512];
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc) model = argv[++i];
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--json") && i + 1 < argc) jpath = argv[++i];
        else if (!strcmp(argv[i], "--no-8b")) do8b = 0;
        else if (!strcmp(argv[i], "--8b-f16")) f16_8b = 1;
        else if (!strcmp(argv[i], "--8b-q4")) q4_8b = 1;
        else if (!strcmp(argv[i], "--gemv")) gemv = 1;
        else if (!strcmp(argv[i], "--gemm")) gemm = 1;
        else if (!strcmp(argv[i], "--prefill-gemm")) gemm = 2;
        else if (!strcmp(argv[i], "--ctx-max") && i + 1 < argc) ctx_max = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--no-model")) model = "";
        else if (!strcmp(argv[i], "--gguf") && i + 1 < argc) gguf = argv[++i];
        else if (!strcmp(argv[i], "--8b-lean")) lean_8b = 1;
        else if (!strcmp(argv[i], "--8b-ablate")) ablate = 1;
        else if (!strcmp(argv[i], "--8b-kv") && i + 1 < argc) g_kv8b = argv[++i];
        else if (!strcmp(argv[i], "--prefill")) prefill = 1;
        else if (!strcmp(argv[i], "--prefill-only")) prefill = 2;
        else DIE("usage: bench_lm [--model PATH | --no-model] [--gguf PATH] [--no-8b] [--8b-lean] [--8b-ablate] [--8b-kv LIST] [--prefill | --prefill-only] [--8b-f16] [--8b-q4] "
                 "[--gemv] [--gemm | --prefill-gemm] [--ctx-max N] [--steps N] [--json FILE]");
    }
    if (!model) {
        model = getenv("KVL_MODEL");
        if (!model) {
            snprintf(buf, sizeof buf, "%s/.cache/kvlite/SmolLM2-135M-Instruct.Q4_1.gguf", getenv("HOME"));
            model = buf;
        }
    }
    if (steps < 3) steps = 3;
    char name[128];
    int n_sm = 0;
    kvl_err e = {};
    if (kvl_cuda_device_info(name, sizeof name, &n_sm, &e)) DIE("no device: %s", e.msg);
    if (jpath && !(json = fopen(jpath, "w"))) DIE("cannot write %s", jpath);
    if (json) fprintf(json, "{\"device\":\"%s\",\"rows\":[\n", name);
    const double bw = copy_bw();
    printf("device %s, %d SMs; copy bandwidth %.0f GB/s (read + written)\n", name, n_sm, bw / 1e9);
    if (gemv) bench_gemv(bw);
    if (gemm) bench_gemm(bw);
    if (gemm == 2) { /* prefill with the GEMM off / on (tiled prefill attention both), then stop */
        if (do8b) bench_prefill_8b("f16", 1, 0), bench_prefill_8b("f16", 1, 1), bench_prefill_8b("f16", 1, 2);
        if (model[0]) bench_prefill_model(model, 0), bench_prefill_model(model, 1), bench_prefill_model(model, 2);
        if (json) fprintf(json, "\n],\"copy_gbs\":%.1f}\n", bw / 1e9), fclose(json);
        return 0;
    }
    if (prefill) { /* TTFT first (the same run's copy bandwidth above) */
        if (model[0]) bench_prefill_model(model);
        if (do8b) bench_prefill_attn(bw);
        if (do8b) bench_prefill_8b("f16", 0), bench_prefill_8b("f16", 1);
        if (prefill == 2) {
            if (json) fprintf(json, "\n],\"copy_gbs\":%.1f}\n", bw / 1e9), fclose(json);
            return 0;
        }
    }
    if (model[0]) bench_model(model, steps, bw);
    if (gguf) bench_gguf(gguf, steps, bw, ctx_max);
    if (ablate) bench_8b_ablate(steps, bw, ctx_max);
    if (do8b) {
        bench_8b(steps, bw, 8, 0, ctx_max, !lean_8b); /* Q8_0, 8-bit activations */
        if (!lean_8b) bench_8b(steps, bw, 8, 1, ctx_max < 32768 ? ctx_max : 32768, 0); /* Q8_0, the exact path */
    }
    if (do8b && q4_8b) bench_8b(steps, bw, 2, 0, ctx_max < 32768 ? ctx_max : 32768, 0);
    if (do8b && f16_8b) bench_8b(steps, bw, 1, 0, ctx_max, 0);
    if (json) fprintf(json, "\n],\"copy_gbs\":%.1f}\n", bw / 1e9), fclose(json);
    return 0;
}
