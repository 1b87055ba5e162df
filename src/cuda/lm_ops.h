/* Kernels of the CUDA decode forward pass, C-callable on device pointers
 * (internal to src/cuda and its tests): the matvec on quantized or f16
 * weights (gemv.cu), quantize-on-append of K/V rows into device pages with
 * RoPE (kv_append.cu), and the small per-token kernels (lm_ops.cu). All
 * enqueue on `stream` (cudaStream_t as void *, NULL = default) and report
 * launch errors only; execution errors surface at the next sync. */
#ifndef KVL_CUDA_LM_OPS_H
#define KVL_CUDA_LM_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "cuda/kvl_cuda.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Weight formats of the device matvec. A matrix [rows][cols] (cols % 32 == 0)
 * in blocks of 32 values along a row, codes and scales in separate arrays so
 * every load is aligned: */
typedef enum kvl_cuda_wfmt {
    KVL_CUDA_WF_F16 = 0,  /* q: half [rows][cols] */
    KVL_CUDA_WF_Q8_0 = 1, /* q: int8 [rows][cols]; s: half d [rows][cols/32]; w = d q */
    KVL_CUDA_WF_Q4_0 = 2, /* q: 16 bytes per block [rows][cols/2] (ggml nibble order: value j < 16 is the
                             low nibble of byte j, value j >= 16 the high nibble of byte j - 16);
                             s: half d [rows][cols/32]; w = d (c - 8) */
    KVL_CUDA_WF_Q4_1 = 3, /* q as Q4_0; s: half (d, m) pairs [rows][cols/32][2]; w = d c + m */
} kvl_cuda_wfmt;

typedef struct kvl_cuda_wmat {
    kvl_cuda_wfmt fmt;
    int64_t rows, cols;
    void *q; /* device */
    void *s; /* device (NULL for F16) */
} kvl_cuda_wmat;

/* Bytes of the q and s arrays of a matrix of this format. */
size_t kvl_cuda_wmat_qbytes(kvl_cuda_wfmt f, int64_t rows, int64_t cols);
size_t kvl_cuda_wmat_sbytes(kvl_cuda_wfmt f, int64_t rows, int64_t cols);
/* Host: repack `rows` GGUF rows of ggml type t (Q8_0, Q4_0, Q4_1 to their own
 * format; F16 as is) into q / s (host buffers of this format), starting at
 * row r0 of the destination matrix of `total_rows` rows. 0 if t has no
 * device format of its own. */
int kvl_cuda_wmat_repack(int t, const void *src, int64_t rows, int64_t cols, int64_t r0, int64_t total_rows,
                         void *q, void *s);
/* Device: fill a matrix with random values (codes uniform, scales / values
 * of about amp), deterministic in seed. */
kvl_status kvl_cuda_wmat_fill_random(const kvl_cuda_wmat *w, uint64_t seed, float amp, void *stream, kvl_err *err);

/* y [n][rows] (=, or += when accumulate) W x for x [n][cols], f32 in and out,
 * products summed in f32 (one row per warp). n >= 1 (any; run in column
 * groups of at most 8). */
kvl_status kvl_cuda_gemv(const kvl_cuda_wmat *w, const float *x, int n, float *y, int accumulate, void *stream,
                         kvl_err *err);

/* 8-bit activation blocks (the CPU default path's Q8_0 / Q8_1 activations):
 * a row x [cols] (cols % 32 == 0) becomes q int8 [cols] and, per block of
 * 32, ds = (d, s) f32 pairs [cols/32]: x ~ d q, d = amax / 127 rounded to
 * f16 as the CPU stores it, s = the exact sum of the block's codes. The
 * codes and scales equal kvl_quant_row_ref(Q8_1) of the same floats. */
/* q [n][cols], ds [n][cols/32][2] from x [n][cols]. */
kvl_status kvl_cuda_quantize_q8(const float *x, int n, int cols, int8_t *q, float *ds, void *stream, kvl_err *err);
/* y [n][rows] (=, or += when accumulate) W x for x given as 8-bit blocks
 * (xq [n][cols], xds [n][cols/32][2], from kvl_cuda_quantize_q8 or the fused
 * producers below), W Q8_0 / Q4_0 / Q4_1 (f16: KVL_ERR_ARG, use
 * kvl_cuda_gemv): integer dot per block (__dp4a), scaled and summed in f32.
 * Matches the CPU default vec_dot (quant.h) up to the f32 order of the
 * block sums. */
kvl_status kvl_cuda_gemv_q8(const kvl_cuda_wmat *w, const int8_t *xq, const float *xds, int n, float *y,
                            int accumulate, void *stream, kvl_err *err);
/* gate|up fused with SwiGLU: w = [gate rows; up rows] ([2F][cols], Q8_0
 * only, else KVL_ERR_ARG; F % 32 == 0), h [n][F] = silu(gate x) * (up x)
 * and its 8-bit blocks (hq [n][F], hds [n][F/32][2]) in one launch instead
 * of kvl_cuda_gemv_q8 into gu and kvl_cuda_swiglu_q8 (the same per-row sums
 * and formula: the same floats and codes, bit for bit on the H200). cnt:
 * device [F/32] unsigned, zero before the first call (each launch leaves
 * it zero). Measured 1.8% slower per 8B step than the two kernels (the
 * separate SwiGLU kernel lets the down matvec start early): not the
 * default (kvl_cuda_lm_set_fused_swiglu). */
kvl_status kvl_cuda_gemv_q8_swiglu(const kvl_cuda_wmat *w, const int8_t *xq, const float *xds, int n, float *h,
                                   int8_t *hq, float *hds, unsigned *cnt, void *stream, kvl_err *err);
/* Launch options of the integer matvec, per call (no process-wide state):
 * variant: the kernel of single-column calls (rows per warp R, chunks in
 * flight U, weight loads around L1 H: kvl_cuda_gemv_q8_variant), < 0 = the
 * default chosen per format and row count; pdl: 1 = launched as a
 * programmatic dependent launch (its first weight loads overlap the end of
 * the kernel before it, which produced its input), 0 = plain stream order;
 * trigger: 1 = the kernel lets the stream's next programmatic dependent
 * launch begin at its start (that kernel waits for this one's completion
 * before it reads its output), 0 = at its end. */
/* pf: L2 prefetch of (up to) two device byte ranges [p0, p0 + n0), [p1,
 * p1 + n1) (16-byte aligned; lengths rounded down to 16) by the blocks of
 * the kernel's last wave once their own loads are done (the next matrix's
 * first rows, so that it starts from L2); first_block: how many of the
 * last blocks share it (<= 0 or >= the grid: all); p0 = p1 = NULL: none.
 * Variants of the one-row-per-warp family only (not the persistent ones). */
typedef struct kvl_cuda_l2_prefetch {
    const void *p0, *p1;
    size_t n0, n1;
    int first_block;
} kvl_cuda_l2_prefetch;
typedef struct kvl_cuda_gemv_opts {
    int variant, pdl, trigger;
    kvl_cuda_l2_prefetch pf;
} kvl_cuda_gemv_opts;
/* The defaults: variant -1, pdl 1, trigger 1, no prefetch. */
kvl_cuda_gemv_opts kvl_cuda_gemv_opts_default(void);
/* kvl_cuda_gemv_q8 with launch options (opts NULL: the defaults); every
 * variant gives the same sums bit for bit. */
kvl_status kvl_cuda_gemv_q8_ex(const kvl_cuda_wmat *w, const int8_t *xq, const float *xds, int n, float *y,
                               int accumulate, const kvl_cuda_gemv_opts *opts, void *stream, kvl_err *err);
int kvl_cuda_gemv_q8_n_variants(void);
void kvl_cuda_gemv_q8_variant(int v, int *R, int *U, int *H);

/* Tensor-core GEMM for prefill (gemm_q8.cu): y [n][rows] (=, or += when
 * accumulate) W x for x given as 8-bit blocks (xq int8 [n][cols], xds (d, s)
 * [n][cols/32][2], as kvl_cuda_gemv_q8_ex takes them), W Q8_0 / Q4_0 / Q4_1
 * with cols % 64 == 0 (else KVL_ERR_ARG: kvl_cuda_gemm_q8_supported). Integer
 * block dots by mma.sync m16n8k32 (exact), block terms in f32 with the
 * matvec's formulas, so it equals kvl_cuda_gemv_q8_ex's sums up to the f32
 * order of the block sums. Any n >= 1 (tiles of 64 tokens; meant for n of
 * tens and more). bm: weight rows per block, 64 or 128, 0 = the default
 * (64). pdl: 1 = a programmatic dependent launch of the stream's
 * previous kernel (weights loaded first, then it waits for that kernel
 * before reading xq / xds or writing y). */
int kvl_cuda_gemm_q8_supported(const kvl_cuda_wmat *w);
kvl_status kvl_cuda_gemm_q8(const kvl_cuda_wmat *w, const int8_t *xq, const float *xds, int n, float *y,
                            int accumulate, int bm, int pdl, void *stream, kvl_err *err);

/* x [n][cols] = row tok[i] of the embedding matrix (dequantized). */
kvl_status kvl_cuda_embed(const kvl_cuda_wmat *emb, const int32_t *tok, int n, float *x, void *stream, kvl_err *err);
/* y [n][cols] = x * w / sqrt(mean(x^2) + eps), the sum of squares in double (as kvl_cpu_rmsnorm). */
kvl_status kvl_cuda_rmsnorm(const float *x, const float *w, float *y, int n, int cols, float eps, void *stream,
                            kvl_err *err);
/* As kvl_cuda_rmsnorm, and y also quantized to 8-bit blocks (q [n][cols],
 * ds [n][cols/32][2], as kvl_cuda_quantize_q8 of y); cols % 32 == 0. */
kvl_status kvl_cuda_rmsnorm_q8(const float *x, const float *w, float *y, int8_t *q, float *ds, int n, int cols,
                               float eps, void *stream, kvl_err *err);
/* As kvl_cuda_rmsnorm_q8; regs = 1: the kernel that keeps the row in
 * registers and quantizes with 8 threads per block (cols <= 16384; the same
 * codes of its y; its double sum of squares in another order than
 * rmsnorm_k, so y may differ from regs = 0's in the last bit of the scale,
 * rarely), 0: rmsnorm_k; pdl = 1 (regs only): launched as a programmatic
 * dependent launch of the stream's previous kernel (it waits for that
 * kernel before reading x). */
kvl_status kvl_cuda_rmsnorm_q8_ex(const float *x, const float *w, float *y, int8_t *q, float *ds, int n, int cols,
                                  float eps, int regs, int pdl, void *stream, kvl_err *err);
/* h [n][F] = silu(gu[:, 0:F]) * gu[:, F:2F] for gu [n][2F]. */
kvl_status kvl_cuda_swiglu(const float *gu, float *h, int n, int F, void *stream, kvl_err *err);
/* As kvl_cuda_swiglu, and h also quantized (q [n][F], ds [n][F/32][2]); F % 32 == 0. */
kvl_status kvl_cuda_swiglu_q8(const float *gu, float *h, int8_t *q, float *ds, int n, int F, void *stream,
                              kvl_err *err);
/* As kvl_cuda_swiglu_q8, launched as a programmatic dependent launch of the
 * stream's previous kernel when pdl (it waits for it before reading gu). */
kvl_status kvl_cuda_swiglu_q8_ex(const float *gu, float *h, int8_t *q, float *ds, int n, int F, int pdl, void *stream,
                                 kvl_err *err);
/* out [n] = index of the largest non-NaN value of each row of x [n][cols]
 * (lowest index on ties; 0 if all NaN), as the CPU sampler's greedy argmax. */
kvl_status kvl_cuda_argmax(const float *x, int n, int cols, int32_t *out, void *stream, kvl_err *err);
/* Sampling parameters of kvl_cuda_sample (the CPU sampler's; its
 * repetition penalty is kvl_cuda_repeat_penalty, run before). */
typedef struct kvl_cuda_sample_params {
    float temperature; /* <= 0: greedy (kvl_cuda_argmax) */
    int top_k;         /* 1..1024 when temperature > 0 (the device has no full sort: 0 is unsupported) */
    float top_p;       /* >= 1: off */
    float min_p;       /* <= 0: off */
} kvl_cuda_sample_params;
/* out [n] = a token drawn from each row of x [n][cols] (device logits)
 * with the semantics of kvl_sampler_sample (src/engine/sampler.c):
 * candidates (NaN and -inf dropped, +inf as FLT_MAX) scaled by 1 /
 * temperature, the top_k best (value desc, id asc), softmax, min-p and
 * top-p prefixes, renormalised draw. The uniform of row b is a function of
 * (seed, counter[b], b); counter (device [n], uint64) is incremented per
 * draw. Same candidate set and probabilities as the CPU sampler; its RNG
 * stream is not the CPU's. KVL_ERR_UNSUPPORTED for top_k outside 1..1024
 * with temperature > 0. (lm_sample.cu) */
kvl_status kvl_cuda_sample(const float *x, int n, int cols, const kvl_cuda_sample_params *p, uint64_t seed,
                           uint64_t *counter, int32_t *out, void *stream, kvl_err *err);
/* The CPU sampler's repetition penalty on one row x [cols] (device, in
 * place): every distinct id of the window hist (device int32: [0] = count n,
 * then n ids) once, x[t] = x[t] > 0 ? x[t] / penalty : x[t] * penalty (the
 * same floats as sampler.c); ids outside [0, cols) are skipped.
 * (lm_sample.cu) */
kvl_status kvl_cuda_repeat_penalty(float *x, int cols, const int32_t *hist, float penalty, void *stream,
                                   kvl_err *err);
/* cs [n][hd/2][2] = cos, sin of pos[i] * freq[j] (in double, as kvl_cpu_rope_cs). */
kvl_status kvl_cuda_rope_cs(const int32_t *pos, const float *freq, int n, int hd, float *cs, void *stream,
                            kvl_err *err);

/* Quantize-on-append with RoPE: for entry i, qkv row [n_head + 2 n_head_kv][hd]
 * (q heads, then k heads, then v heads: the fused projection's output)
 * gets RoPE (cs of the entry) on its q and k heads; q goes to q_out
 * [n][n_head][hd]; k and v of kv-head h are encoded with the pool's codec
 * into row pos[i] % P of page page_of(slot[i], layer, h, pos[i] / P), where
 * the page id is ((slot * n_layer + layer) * n_head_kv + h) * pages_per_list
 * + pos / P, and the page's position entry is set to pos[i]. Codecs: f16,
 * int8, fp8, int4z (the same bytes as the CPU codecs' encode, up to float
 * rounding of the input), and the sealing kivi2z / kivi4z, whose rows go
 * to the open page of that id (class 0, f16 rows as the CPU's open
 * format); others KVL_ERR_UNSUPPORTED. */
typedef struct kvl_cuda_append_args {
    int n, n_head, n_head_kv, hd, neox;
    int layer, n_layer, pages_per_list;
    const float *qkv;     /* device [n][(n_head + 2 n_head_kv) hd] */
    const float *cs;      /* device [n][hd/2][2] */
    const int32_t *pos;   /* device [n] */
    const int32_t *slot;  /* device [n] */
    float *q_out;         /* device [n][n_head][hd] */
    int pdl;              /* 1: a programmatic dependent launch of the stream's previous kernel (waits for it
                             before reading qkv); 0 (zero-initialized): plain stream order */
    const int32_t *row;   /* device [n][n_head_kv]: list row of each entry's K/V (eviction: rows are not
                             positions); NULL: row = pos */
} kvl_cuda_append_args;
kvl_status kvl_cuda_kv_append(kvl_cuda_pool *p, const kvl_cuda_append_args *a, void *stream, kvl_err *err);
/* 1 if the pool's codec has an append kernel. */
int kvl_cuda_kv_append_supported(const char *codec);

/* Sealing (kv_seal_kivi.cu; pools of kivi2z / kivi4z): for entry e, pages
 * [seal_from[e], seal_to[e]) of every (layer, kv-head) list of slot[e]
 * (list page index k: open page id = ((slot * n_layer + layer) * n_head_kv
 * + h) * pages_per_list + k of class 0, as the append writes it) are
 * sealed into the class-1 page of the same index, byte-identical to the
 * CPU seal of that open page (kvl_kv_seal: positions copied, K and V
 * segments by the codec's seal with fit = mse or cover, padding zero), and
 * page_ids[that index] becomes the sealed page's id. Pages must be full.
 * Empty ranges cost a block that exits; one launch of n * n_layer *
 * n_head_kv blocks, the shape independent of the ranges (graph-safe). */
typedef struct kvl_cuda_seal_args {
    int n, n_layer, n_head_kv, pages_per_list;
    const int32_t *slot;      /* device [n] */
    const int32_t *seal_from; /* device [n]: first list page index to seal */
    const int32_t *seal_to;   /* device [n]: one past the last (<= seal_from: none) */
    uint32_t *page_ids;       /* device: page table, indexed as the open page ids */
    int mse;                  /* 1: the mse parameter search (fit=mse; kivi2z's default), 0: cover */
} kvl_cuda_seal_args;
kvl_status kvl_cuda_kv_seal(kvl_cuda_pool *p, const kvl_cuda_seal_args *a, void *stream, kvl_err *err);

/* Device: set the position entries of `n_pages` consecutive pages from page
 * id0 on: page id0 + k holds positions (k % pages_per_list) * P + r
 * (benchmark contexts filled with random rows). */
kvl_status kvl_cuda_pool_set_positions(kvl_cuda_pool *p, uint32_t id0, int64_t n_pages, int pages_per_list,
                                       void *stream, kvl_err *err);

#ifdef __cplusplus
}
#endif

#endif
