/* Device benchmark of kvlite's paged decode attention (src/cuda/attn_decode.cu):
 * GB/s = bytes of KV pages the kernels must read (positions, K and V rows
 * with their scales) / time of one call (split kernel + merge), against the
 * device-to-device copy bandwidth measured in the same run.
 *
 * Method (/work/.library/device/METHOD.md): pages filled with random valid
 * codes on the device (never zeros); each shape's page set is replicated
 * until the replicas span >= 1 GiB (>= 16x the 60 MB L2) and successive
 * calls cycle through the replicas, so no call finds its pages in L2; 5
 * warm-up calls; then a spin kernel holds the GPU while all timed calls are
 * queued, so each call's pair of events measures GPU time back to back, not
 * host launch cost; the median of the timed calls is reported (min too).
 *
 * Sealing codecs (kivi4z, kivi2z): every page of a list sealed.
 * Then the capacity table (capacity()), unless --no-capacity.
 *
 * Usage: bench_attn [--codecs f16,int8,fp8,int4z,kivi4z,kivi2z] [--ctx 4096,32768,131072]
 *                   [--batch 1,16,64] [--P 32] [--reps 50] [--sweep [--variants 0,1,..]] [--json FILE]
 *                   [--no-capacity] [--variant N]   (N: kvl_cuda_attn_tuning.variant of the main table)
 *                   [--max-chunk T]  (kvl_cuda_attn_tuning.max_chunk_tokens of the main table; 0 = default)
 *                   [--no-round]     (tile_round -1: tensor-core splits not rounded to 128-token steps)
 *                   [--stats mass,all] (added 2026-12-03: each row again with attention statistics on,
 *                                    kvl_cuda_attn_run_stats: mass = MASS only (h2o), win = WSUM/WSQ
 *                                    (snapkv), all = the six accumulators; one row per mode, "+mode")
 * Shape: Llama-3-8B attention, 32 query / 8 KV heads, head_dim 128. */
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <string>
#include <vector>

#include "cuda/kvl_cuda.h"

#define CK(x)                                                                                   \
    do {                                                                                        \
        cudaError_t e_ = (x);                                                                   \
        if (e_ != cudaSuccess) {                                                                \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
            exit(1);                                                                            \
        }                                                                                       \
    } while (0)
#define KV(x)                                                               \
    do {                                                                    \
        if ((x) != KVL_OK) {                                                \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, err.msg); \
            exit(1);                                                        \
        }                                                                   \
    } while (0)

static const int HQ = 32, HKV = 8, D = 128;
static const size_t RING_BYTES = (size_t)1 << 30;

__global__ void spin_kernel(long long ns) { /* hold the GPU while the host queues work */
    long long t0;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
    for (;;) {
        long long t;
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
        if (t - t0 > ns) break;
    }
}

static double median(std::vector<float> v) {
    std::sort(v.begin(), v.end());
    const size_t n = v.size();
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static std::vector<int> parse_list(const char *s) {
    std::vector<int> v;
    while (*s) {
        v.push_back(atoi(s));
        const char *c = strchr(s, ',');
        if (!c) break;
        s = c + 1;
    }
    return v;
}

/* Read-only ceiling: every thread streams 16-byte loads over n bytes (grid
 * stride, UNR independent loads in flight per thread) and folds them with
 * xor; the fold is stored only if it equals a key no input produces here
 * (the buffer is memset to 1), so the loads stay and nothing is written. */
template <int UNR> __global__ void __launch_bounds__(512) read_kernel(const uint4 *__restrict__ p, size_t n16, uint32_t *sink) {
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    uint32_t x = 0;
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    for (; i + (UNR - 1) * stride < n16; i += UNR * stride) {
        uint4 v[UNR];
#pragma unroll
        for (int u = 0; u < UNR; u++) v[u] = __ldcs(p + i + u * stride);
#pragma unroll
        for (int u = 0; u < UNR; u++) x ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
    }
    for (; i < n16; i += stride) {
        const uint4 v = __ldcs(p + i);
        x ^= v.x ^ v.y ^ v.z ^ v.w;
    }
    if (x == 0x9e3779b9u) sink[0] = x;
}

/* Read-only bandwidth: GB/s of bytes read by read_kernel over 1 GiB (>= 16x
 * the L2), the fastest of 20 launches of each of its grid shapes (a ceiling:
 * the fastest, since a busy host can only add time between the events). */
static double read_gbs(int n_sm, double *ms_out) {
    const size_t n = (size_t)1 << 30;
    void *a;
    uint32_t *sink;
    CK(cudaMalloc(&a, n));
    CK(cudaMalloc(&sink, 4));
    CK(cudaMemset(a, 1, n));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    double best = 1e30;
    for (int bps = 2; bps <= 4; bps += 2) {
        for (int i = 0; i < 23; i++) read_kernel<8><<<n_sm * bps, 512>>>((const uint4 *)a, n / 16, sink);
        CK(cudaGetLastError());
        std::vector<float> t;
        for (int i = 0; i < 20; i++) {
            CK(cudaEventRecord(e0));
            read_kernel<8><<<n_sm * bps, 512>>>((const uint4 *)a, n / 16, sink);
            CK(cudaEventRecord(e1));
            CK(cudaEventSynchronize(e1));
            float ms;
            CK(cudaEventElapsedTime(&ms, e0, e1));
            t.push_back(ms);
        }
        best = std::min(best, (double)*std::min_element(t.begin(), t.end()));
    }
    CK(cudaFree(a));
    CK(cudaFree(sink));
    *ms_out = best;
    return n / (best * 1e-3) / 1e9;
}

/* Device-to-device copy: GB/s counting bytes read + written, median of 20. */
static double copy_gbs(double *ms_out) {
    const size_t n = (size_t)1 << 30;
    void *a, *b;
    CK(cudaMalloc(&a, n));
    CK(cudaMalloc(&b, n));
    CK(cudaMemset(a, 1, n));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    for (int i = 0; i < 3; i++) CK(cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice));
    std::vector<float> t;
    for (int i = 0; i < 20; i++) {
        CK(cudaEventRecord(e0));
        CK(cudaMemcpyAsync(i & 1 ? a : b, i & 1 ? b : a, n, cudaMemcpyDeviceToDevice));
        CK(cudaEventRecord(e1));
        CK(cudaEventSynchronize(e1));
        float ms;
        CK(cudaEventElapsedTime(&ms, e0, e1));
        t.push_back(ms);
    }
    CK(cudaFree(a));
    CK(cudaFree(b));
    *ms_out = median(t);
    return 2.0 * n / (*ms_out * 1e-3) / 1e9;
}

struct result {
    double med_us, min_us, gbs, kv_bytes;
    int chunk_pages, n_split, replicas;
};

/* The class the benchmark's lists use: the sealed class of a sealing codec
 * (every page of a list sealed: the residual window's open pages are left
 * out), else class 0. */
static int bench_class(const kvl_cuda_pool *p) { return kvl_cuda_pool_sealed_class(p) >= 0 ? kvl_cuda_pool_sealed_class(p) : 0; }

/* Time one shape on pool p (pages [0, n_pages) of bench_class filled). */
static result run_shape(kvl_cuda_pool *p, int P, int B, int ctx, const kvl_cuda_attn_tuning *tu, int reps,
                        unsigned stats = 0) {
    kvl_err err = {KVL_OK, {0}};
    const int ppl = (ctx + P - 1) / P, lists = B * HKV;
    const long ppr = (long)ppl * lists;
    const int cls = bench_class(p);
    const uint32_t cbits = (uint32_t)cls << (32 - KVL_CUDA_CLASS_BITS);
    const long npool = (long)kvl_cuda_pool_class_pages(p, cls);
    const size_t page_bytes = kvl_cuda_pool_class_bytes(p, cls);
    if (ppr > npool) {
        fprintf(stderr, "shape B=%d ctx=%d needs %ld pages, pool has %ld\n", B, ctx, ppr, npool);
        exit(1);
    }
    long R = (long)((RING_BYTES + ppr * page_bytes - 1) / (ppr * page_bytes));
    if (R > npool / ppr) R = npool / ppr;
    if (R < 1) R = 1;
    std::vector<uint32_t> ids((size_t)(R * ppr));
    std::vector<int32_t> off((size_t)(R * lists)), len((size_t)lists, ctx), qpos((size_t)B, 1 << 30);
    for (long r = 0; r < R; r++)
        for (int l = 0; l < lists; l++) {
            off[(size_t)(r * lists + l)] = (int32_t)(r * ppr + (long)l * ppl);
            for (int i = 0; i < ppl; i++) ids[(size_t)(r * ppr + (long)l * ppl + i)] = cbits | (uint32_t)(r * ppr + (long)l * ppl + i);
        }
    uint32_t *d_ids;
    int32_t *d_off, *d_len, *d_qpos;
    float *d_q, *d_out;
    const size_t qn = (size_t)B * HQ * D;
    CK(cudaMalloc(&d_ids, ids.size() * 4));
    CK(cudaMalloc(&d_off, off.size() * 4));
    CK(cudaMalloc(&d_len, len.size() * 4));
    CK(cudaMalloc(&d_qpos, qpos.size() * 4));
    CK(cudaMalloc(&d_q, qn * 4));
    CK(cudaMalloc(&d_out, qn * 4));
    CK(cudaMemcpy(d_ids, ids.data(), ids.size() * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d_off, off.data(), off.size() * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d_len, len.data(), len.size() * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d_qpos, qpos.data(), qpos.size() * 4, cudaMemcpyHostToDevice));
    std::vector<float> hq(qn);
    for (size_t i = 0; i < qn; i++) hq[i] = (float)((i * 2654435761u) % 2001) / 1000.0f - 1.0f;
    CK(cudaMemcpy(d_q, hq.data(), qn * 4, cudaMemcpyHostToDevice));
    kvl_cuda_attn *a;
    KV(kvl_cuda_attn_create(p, HQ, HKV, B, ctx, tu, &a, &err));
    result res = {};
    kvl_cuda_attn_plan(a, B, ctx, &res.chunk_pages, &res.n_split);
    res.replicas = (int)R;
    kvl_cuda_attn_args x = {B, ctx, d_ids, d_off, d_len, d_qpos, d_q, d_out, 1.0f / sqrtf((float)D)};
    /* statistics: accumulators [B][HQ][ctx] per accumulator on (bit a) */
    kvl_cuda_attn_stats sx = {};
    sx.stride = ctx, sx.vote_a = 1.0f, sx.vote_b = 0.5f;
    if (stats) {
        KV(kvl_cuda_attn_enable_stats(a, &err));
        for (int k = 0; k < KVL_CUDA_N_ACC; k++)
            if (stats >> k & 1) {
                CK(cudaMalloc(&sx.acc[k], sizeof(float) * (size_t)B * HQ * ctx));
                CK(cudaMemset(sx.acc[k], 0, sizeof(float) * (size_t)B * HQ * ctx));
            }
    }
    const kvl_cuda_attn_stats *sp = stats ? &sx : NULL;
    for (int i = 0; i < 5; i++) {
        x.list_off = d_off + (size_t)(i % R) * lists;
        KV(kvl_cuda_attn_run_stats(a, &x, sp, NULL, &err));
    }
    CK(cudaDeviceSynchronize());
    std::vector<cudaEvent_t> ev((size_t)(2 * reps));
    for (auto &e : ev) CK(cudaEventCreate(&e));
    spin_kernel<<<1, 1>>>(20000000LL); /* 20 ms */
    for (int i = 0; i < reps; i++) {
        x.list_off = d_off + (size_t)((i + 5) % R) * lists;
        CK(cudaEventRecord(ev[(size_t)(2 * i)]));
        KV(kvl_cuda_attn_run_stats(a, &x, sp, NULL, &err));
        CK(cudaEventRecord(ev[(size_t)(2 * i + 1)]));
    }
    CK(cudaDeviceSynchronize());
    std::vector<float> t;
    for (int i = 0; i < reps; i++) {
        float ms;
        CK(cudaEventElapsedTime(&ms, ev[(size_t)(2 * i)], ev[(size_t)(2 * i + 1)]));
        t.push_back(ms * 1000.0f);
    }
    std::vector<float> out(qn);
    CK(cudaMemcpy(out.data(), d_out, qn * 4, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < qn; i++)
        if (!std::isfinite(out[i])) {
            fprintf(stderr, "non-finite output at %zu\n", i);
            exit(1);
        }
    for (auto &e : ev) CK(cudaEventDestroy(e));
    for (int k = 0; k < KVL_CUDA_N_ACC; k++) CK(cudaFree(sx.acc[k]));
    kvl_cuda_attn_free(a);
    CK(cudaFree(d_ids));
    CK(cudaFree(d_off));
    CK(cudaFree(d_len));
    CK(cudaFree(d_qpos));
    CK(cudaFree(d_q));
    CK(cudaFree(d_out));
    res.med_us = median(t);
    res.min_us = *std::min_element(t.begin(), t.end());
    return res;
}

/* bytes the kernels must read per token of one kv-head: a page's bytes / P
 * (position, K and V segments with their scales and zero points; the
 * pads are empty at D 128, P 32) */
static double bytes_per_token(const kvl_cuda_pool *p, int P) {
    return (double)kvl_cuda_pool_class_bytes(p, bench_class(p)) / P;
}

/* Capacity: how many pools of one 32K-token sequence of the Llama-3-8B shape
 * (32 layers x 8 kv-heads, P-token pages) can be allocated, one after the
 * other, until cudaMalloc fails. Sealing codecs: per list the last page
 * open (f16), the rest sealed (the default residual window of P tokens). */
static void capacity(const std::vector<const char *> &codecs, int P) {
    const int layers = 32, tokens = 32768, lists = layers * HKV, ppl = tokens / P;
    printf("\ncapacity: concurrent %d-token sequences (32 layers x %d kv-heads x head_dim %d, P = %d), pools allocated until cudaMalloc fails\n",
           tokens, HKV, D, P);
    printf("| codec | free GiB before | bytes per sequence | sequences | GiB allocated | vs f16 |\n|---|---|---|---|---|---|\n");
    int n_f16 = 0;
    for (const char *codec : codecs) {
        kvl_err err = {KVL_OK, {0}};
        size_t fr = 0, tot = 0;
        CK(cudaMemGetInfo(&fr, &tot));
        kvl_cuda_pool_config pc = {codec, NULL, D, P, (int64_t)lists * ppl, 0};
        if (strstr(codec, "kivi")) pc.n_pages = lists, pc.n_pages_sealed = (int64_t)lists * (ppl - 1);
        std::vector<kvl_cuda_pool *> pools;
        size_t seq_bytes = 0;
        for (;;) {
            kvl_cuda_pool *p = NULL;
            if (kvl_cuda_pool_create(&pc, &p, &err) != KVL_OK) break;
            if (!seq_bytes)
                for (int c = 0; c < kvl_cuda_pool_n_classes(p); c++)
                    seq_bytes += kvl_cuda_pool_class_bytes(p, c) * (size_t)kvl_cuda_pool_class_pages(p, c);
            pools.push_back(p);
        }
        (void)cudaGetLastError();
        const int n = (int)pools.size();
        if (!strcmp(codec, "f16")) n_f16 = n;
        printf("| %s | %.2f | %zu | %d | %.2f | %s |\n", codec, fr / 1073741824.0, seq_bytes, n,
               (double)n * seq_bytes / 1073741824.0, n_f16 ? (std::to_string((double)n / n_f16).substr(0, 4) + "x").c_str() : "-");
        if (n == 0) printf("  (first pool failed: %s)\n", err.msg);
        for (auto *p : pools) kvl_cuda_pool_free(p);
        fflush(stdout);
    }
}

int main(int argc, char **argv) {
    std::vector<int> ctxs = {4096, 32768, 131072}, batches = {1, 16, 64};
    std::vector<const char *> codecs = {"f16", "int8", "fp8", "int4z", "kivi4z", "kivi2z"};
    std::vector<const char *> cap_codecs = {"f16", "int4z", "kivi2z"};
    int P = 32, reps = 50, sweep = 0, cap = 1, variant = 0, max_chunk = 0, tile_round = 0;
    std::vector<int> variants = {0, 1, 2, 3, 4};
    std::vector<std::string> stats_modes;
    const char *json = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--ctx") && i + 1 < argc) ctxs = parse_list(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) batches = parse_list(argv[++i]);
        else if (!strcmp(argv[i], "--P") && i + 1 < argc) P = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--sweep")) sweep = 1;
        else if (!strcmp(argv[i], "--no-capacity")) cap = 0;
        else if (!strcmp(argv[i], "--variants") && i + 1 < argc) variants = parse_list(argv[++i]);
        else if (!strcmp(argv[i], "--variant") && i + 1 < argc) variant = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--max-chunk") && i + 1 < argc) max_chunk = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--no-round")) tile_round = -1;
        else if (!strcmp(argv[i], "--json") && i + 1 < argc) json = argv[++i];
        else if (!strcmp(argv[i], "--stats") && i + 1 < argc) {
            char *s = strdup(argv[++i]);
            for (char *t = strtok(s, ","); t; t = strtok(NULL, ",")) stats_modes.push_back(t);
        }
        else if (!strcmp(argv[i], "--codecs") && i + 1 < argc) {
            codecs.clear();
            char *s = strdup(argv[++i]);
            for (char *t = strtok(s, ","); t; t = strtok(NULL, ",")) codecs.push_back(t);
        } else {
            fprintf(stderr, "usage: %s [--codecs f16,int8] [--ctx a,b] [--batch a,b] [--P n] [--reps n] [--sweep] [--json f]\n",
                    argv[0]);
            return 2;
        }
    }
    kvl_err err = {KVL_OK, {0}};
    char name[128];
    int n_sm;
    KV(kvl_cuda_device_info(name, sizeof name, &n_sm, &err));
    double copy_ms;
    const double cbw = copy_gbs(&copy_ms);
    printf("device: %s, %d SMs\n", name, n_sm);
    printf("d2d copy: 1 GiB in %.3f ms = %.0f GB/s (read + written)\n", copy_ms, cbw);
    double read_ms;
    const double rbw = read_gbs(n_sm, &read_ms);
    printf("read-only: 1 GiB in %.3f ms = %.0f GB/s (read_kernel, 16-byte loads)\n", read_ms, rbw);
    FILE *jf = json ? fopen(json, "w") : NULL;
    if (jf)
        fprintf(jf, "{\"device\": \"%s\", \"copy_gbs\": %.1f, \"read_gbs\": %.1f, \"P\": %d, \"rows\": [\n", name, cbw,
                rbw, P);
    int first = 1;
    printf("\n| codec | P | batch | context | KV MB | median us | min us | split kernel alone us | GB/s | %% of copy | %% of read | splits x pages | replicas |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (const char *codec : codecs) {
        long need = 0;
        for (int B : batches)
            for (int ctx : ctxs) need = std::max(need, (long)B * HKV * ((ctx + P - 1) / P));
        kvl_cuda_pool_config pc = {codec, NULL, D, P, 1, strstr(codec, "kivi") ? 1 : 0};
        kvl_cuda_pool *p;
        KV(kvl_cuda_pool_create(&pc, &p, &err));
        const int cls = bench_class(p);
        const size_t pb = kvl_cuda_pool_class_bytes(p, cls);
        kvl_cuda_pool_free(p);
        const long npages = std::max(need, (long)(RING_BYTES / pb) + 1);
        if (cls) pc.n_pages_sealed = npages; else pc.n_pages = npages;
        KV(kvl_cuda_pool_create(&pc, &p, &err));
        KV(kvl_cuda_pool_fill_random(p, (uint32_t)cls << (32 - KVL_CUDA_CLASS_BITS), npages, 42, &err));
        for (int B : batches)
            for (int ctx : ctxs) {
                kvl_cuda_attn_tuning tv = {0, 0, max_chunk, 0, variant, tile_round};
                const result r = run_shape(p, P, B, ctx, &tv, reps);
                kvl_cuda_attn_tuning so = {0, 0, max_chunk, 1, variant, tile_round};
                const result r1 = run_shape(p, P, B, ctx, &so, reps);
                const double kvb = (double)B * HKV * ctx * bytes_per_token(p, P);
                const double gbs = kvb / (r.med_us * 1e-6) / 1e9;
                printf("| %s%s%s%s | %d | %d | %d | %.1f | %.1f | %.1f | %.1f | %.0f | %.0f%% | %.0f%% | %d x %d | %d |\n", codec,
                       variant ? (" v" + std::to_string(variant)).c_str() : "",
                       max_chunk ? (" mc" + std::to_string(max_chunk)).c_str() : "", tile_round ? " nr" : "", P, B,
                       ctx, kvb / 1e6, r.med_us, r.min_us, r1.med_us, gbs, 100 * gbs / cbw, 100 * gbs / rbw, r.n_split,
                       r.chunk_pages, r.replicas);
                fflush(stdout);
                if (jf)
                    fprintf(jf, "%s{\"codec\": \"%s\", \"variant\": %d, \"max_chunk\": %d, \"P\": %d, \"batch\": %d, \"ctx\": %d, \"kv_bytes\": %.0f, \"median_us\": %.2f, \"min_us\": %.2f, \"split_only_us\": %.2f, \"gbs\": %.1f, \"n_split\": %d, \"chunk_pages\": %d}",
                            first ? "" : ",\n", codec, variant, max_chunk, P, B, ctx, kvb, r.med_us, r.min_us, r1.med_us, gbs, r.n_split, r.chunk_pages);
                first = 0;
                for (const std::string &m : stats_modes) {
                    const unsigned mk = m == "mass"  ? 1u << KVL_CUDA_ACC_MASS
                                        : m == "win" ? (1u << KVL_CUDA_ACC_WSUM | 1u << KVL_CUDA_ACC_WSQ)
                                        : m == "all" ? (1u << KVL_CUDA_N_ACC) - 1
                                                     : 0;
                    if (!mk) {
                        fprintf(stderr, "unknown --stats mode %s (mass, win, all)\n", m.c_str());
                        exit(2);
                    }
                    const result rs = run_shape(p, P, B, ctx, &tv, reps, mk);
                    const double gs = kvb / (rs.med_us * 1e-6) / 1e9;
                    printf("| %s +%s | %d | %d | %d | %.1f | %.1f | %.1f | +%.1f us (+%.1f%%) | %.0f | %.0f%% | %d x %d | %d |\n",
                           codec, m.c_str(), P, B, ctx, kvb / 1e6, rs.med_us, rs.min_us, rs.med_us - r.med_us,
                           100 * (rs.med_us / r.med_us - 1), gs, 100 * gs / cbw, rs.n_split, rs.chunk_pages,
                           rs.replicas);
                    fflush(stdout);
                    if (jf)
                        fprintf(jf, ",\n{\"codec\": \"%s\", \"stats\": \"%s\", \"P\": %d, \"batch\": %d, \"ctx\": %d, \"kv_bytes\": %.0f, \"median_us\": %.2f, \"min_us\": %.2f, \"off_median_us\": %.2f, \"gbs\": %.1f, \"n_split\": %d, \"chunk_pages\": %d}",
                                codec, m.c_str(), P, B, ctx, kvb, rs.med_us, rs.min_us, r.med_us, gs, rs.n_split,
                                rs.chunk_pages);
                }
            }
        if (sweep) {
            /* kernel variants (rows per tile, min resident blocks: attn_decode.cu) and the target grid */
            printf("\nsweep (%s, P=%d): | batch | context | variant | target_blocks | median us | GB/s | splits x pages |\n",
                   codec, P);
            for (int B : batches)
                for (int ctx : ctxs) {
                    if ((long)B * HKV * ((ctx + P - 1) / P) > npages) continue;
                    for (int v : variants)
                        for (int tm = 0; tm < 4; tm++) {
                            /* batch 1: also 2 / 4 / 10 blocks per SM (more, shorter splits) */
                            if (tm && B > 1) continue;
                            kvl_cuda_attn_tuning tu = {0, 0, 0, 0, v, tile_round};
                            const int tb[4] = {0, 2 * n_sm, 4 * n_sm, 10 * n_sm}; /* 0: one wave of the variant */
                            tu.target_blocks = tb[tm];
                            const result r = run_shape(p, P, B, ctx, &tu, reps);
                            const double kvb = (double)B * HKV * ctx * bytes_per_token(p, P);
                            char tbs[16];
                            snprintf(tbs, sizeof tbs, "%d", tb[tm]);
                            printf("| %d | %d | %d | %s | %.1f | %.0f | %d x %d |\n", B, ctx, v, tm ? tbs : "default",
                                   r.med_us, kvb / (r.med_us * 1e-6) / 1e9, r.n_split, r.chunk_pages);
                            fflush(stdout);
                        }
                }
        }
        kvl_cuda_pool_free(p);
    }
    if (jf) {
        fprintf(jf, "\n]}\n");
        fclose(jf);
    }
    if (cap) capacity(cap_codecs, P);
    return 0;
}
