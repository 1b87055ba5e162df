/* Matrix-vector products of the decode step on the weights' own blocks,
 * two numerics as on the CPU: (1) the exact path, y = W x for 1..8
 * activation columns at a time on f32 activations, one weight row per warp,
 * lanes dequantizing pieces of 32-value blocks (Q8_0, Q4_0, Q4_1: codes and
 * scales repacked at upload into separate, aligned arrays; or f16) in
 * registers, f32 sums (each lane takes 8 consecutive values per 256-value
 * chunk, so a warp's weight and activation loads are contiguous; a first
 * version with one 32-value block per lane reached ~0.8 TB/s on the H200:
 * L1-bound); (2) the default path on 8-bit activation blocks (the CPU
 * default's numerics): integer dot products with __dp4a (below,
 * kvl_cuda_gemv_q8), and the quantization of its input. Also the host
 * repacking of GGUF blocks and a random fill for benchmark shapes. */
#include <string.h>

#include <cuda_fp16.h>

#include "cuda/act_q8.cuh"
#include "cuda/cuda_util.cuh"
#include "cuda/gemv_q8.cuh"
#include "cuda/lm_ops.h"

extern "C" {
#include "cpu/quant.h"
}


extern "C" size_t kvl_cuda_wmat_qbytes(kvl_cuda_wfmt f, int64_t rows, int64_t cols) {
    switch (f) {
    case KVL_CUDA_WF_F16: return (size_t)rows * (size_t)cols * 2;
    case KVL_CUDA_WF_Q8_0: return (size_t)rows * (size_t)cols;
    default: return (size_t)rows * (size_t)cols / 2;
    }
}

extern "C" size_t kvl_cuda_wmat_sbytes(kvl_cuda_wfmt f, int64_t rows, int64_t cols) {
    const size_t nb = (size_t)rows * (size_t)(cols / 32);
    switch (f) {
    case KVL_CUDA_WF_F16: return 0;
    case KVL_CUDA_WF_Q4_1: return nb * 4;
    default: return nb * 2;
    }
}

extern "C" int kvl_cuda_wmat_repack(int t, const void *src, int64_t rows, int64_t cols, int64_t r0,
                                    int64_t total_rows, void *q, void *s) {
    (void)total_rows;
    const int64_t nb = cols / 32;
    const uint8_t *in = (const uint8_t *)src;
    uint8_t *qo = (uint8_t *)q;
    uint16_t *so = (uint16_t *)s;
    switch (t) {
    case KVL_TYPE_F16:
        memcpy(qo + (size_t)r0 * cols * 2, in, (size_t)rows * cols * 2);
        return 1;
    case KVL_TYPE_Q8_0:
        for (int64_t r = 0; r < rows; r++)
            for (int64_t b = 0; b < nb; b++) {
                const kvl_block_q8_0 *blk = (const kvl_block_q8_0 *)in + r * nb + b;
                memcpy(qo + (size_t)(r0 + r) * cols + b * 32, blk->qs, 32);
                so[(r0 + r) * nb + b] = blk->d;
            }
        return 1;
    case KVL_TYPE_Q4_0:
        for (int64_t r = 0; r < rows; r++)
            for (int64_t b = 0; b < nb; b++) {
                const kvl_block_q4_0 *blk = (const kvl_block_q4_0 *)in + r * nb + b;
                memcpy(qo + (size_t)(r0 + r) * (cols / 2) + b * 16, blk->qs, 16);
                so[(r0 + r) * nb + b] = blk->d;
            }
        return 1;
    case KVL_TYPE_Q4_1:
        for (int64_t r = 0; r < rows; r++)
            for (int64_t b = 0; b < nb; b++) {
                const kvl_block_q4_1 *blk = (const kvl_block_q4_1 *)in + r * nb + b;
                memcpy(qo + (size_t)(r0 + r) * (cols / 2) + b * 16, blk->qs, 16);
                so[2 * ((r0 + r) * nb + b)] = blk->d;
                so[2 * ((r0 + r) * nb + b) + 1] = blk->m;
            }
        return 1;
    default: return 0;
    }
}

/* ---- dequantization of 8 consecutive values ---- */

/* Lane l of a warp handles values [256 c + 8 l, +8) of the row in chunk c:
 * a warp's loads of one chunk are contiguous (256 codes, 1 KiB of each
 * activation column), and the 8 values never straddle a 32-value block. */
static __device__ __forceinline__ void h8(uint4 v, float *o) {
    const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        __half2 h;
        memcpy(&h, &w[i], 4);
        const float2 f = __half22float2(h);
        o[2 * i] = f.x, o[2 * i + 1] = f.y;
    }
}

/* Raw codes of 8 values at column j of row r (loaded first, several in flight). */
template <int F> struct raw8 { uint2 c; float d, m; };
template <> struct raw8<KVL_CUDA_WF_F16> { uint4 c; };

template <int F> static __device__ __forceinline__ raw8<F> load8(const kvl_cuda_wmat &w, int64_t r, int64_t j) {
    raw8<F> o;
    const int64_t nb = w.cols / 32, b = j / 32;
    if constexpr (F == KVL_CUDA_WF_F16) {
        o.c = __ldg(reinterpret_cast<const uint4 *>((const __half *)w.q + r * w.cols + j));
    } else if constexpr (F == KVL_CUDA_WF_Q8_0) {
        o.c = __ldg(reinterpret_cast<const uint2 *>((const int8_t *)w.q + r * w.cols + j));
        o.d = __half2float(__ldg((const __half *)w.s + r * nb + b));
        o.m = 0;
    } else {
        /* values k0..k0+7 of the block (k0 = j % 32): the low nibbles of code
         * bytes k0.. for k0 < 16, the high nibbles of bytes k0 - 16.. */
        o.c = __ldg(reinterpret_cast<const uint2 *>((const uint8_t *)w.q + r * (w.cols / 2) + b * 16 + (j & 15)));
        if constexpr (F == KVL_CUDA_WF_Q4_0) {
            o.d = __half2float(__ldg((const __half *)w.s + r * nb + b));
            o.m = -8.0f * o.d;
        } else {
            const __half2 dm = __ldg((const __half2 *)w.s + r * nb + b);
            o.d = __low2float(dm), o.m = __high2float(dm);
        }
        if (j & 16) o.c.x = (o.c.x >> 4) & 0x0F0F0F0Fu, o.c.y = (o.c.y >> 4) & 0x0F0F0F0Fu;
        else o.c.x &= 0x0F0F0F0Fu, o.c.y &= 0x0F0F0F0Fu;
    }
    return o;
}

template <int F> static __device__ __forceinline__ void dequant8(const raw8<F> &o, float *v) {
    if constexpr (F == KVL_CUDA_WF_F16) {
        h8(o.c, v);
    } else {
        const uint32_t u[2] = {o.c.x, o.c.y};
#pragma unroll
        for (int i = 0; i < 8; i++) {
            const uint32_t byte = (u[i >> 2] >> (8 * (i & 3))) & 0xffu;
            if constexpr (F == KVL_CUDA_WF_Q8_0) v[i] = o.d * (float)(int8_t)byte;
            else if constexpr (F == KVL_CUDA_WF_Q4_0) v[i] = o.d * (float)((int)byte - 8);
            else v[i] = o.d * (float)byte + o.m;
        }
    }
}

#define GEMV_UNROLL 4 /* chunks per lane in flight */

/* x: [NB][cols], y: [NB][rows] */
template <int F, int NB>
__global__ void __launch_bounds__(GEMV_WARPS * 32) gemv_k(kvl_cuda_wmat w, const float *__restrict__ x,
                                                           float *__restrict__ y, int accumulate) {
    const int lane = threadIdx.x & 31;
    const int64_t r = (int64_t)blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5);
    if (r >= w.rows) return;
    float acc[NB];
#pragma unroll
    for (int n = 0; n < NB; n++) acc[n] = 0.0f;
    for (int64_t j0 = 8 * lane; j0 < w.cols; j0 += 256 * GEMV_UNROLL) {
        raw8<F> raw[GEMV_UNROLL];
#pragma unroll
        for (int u = 0; u < GEMV_UNROLL; u++)
            if (j0 + 256 * u < w.cols) raw[u] = load8<F>(w, r, j0 + 256 * u);
#pragma unroll
        for (int u = 0; u < GEMV_UNROLL; u++) {
            const int64_t j = j0 + 256 * u;
            if (j >= w.cols) break;
            float v[8];
            dequant8<F>(raw[u], v);
#pragma unroll
            for (int n = 0; n < NB; n++) {
                const float4 *xp = reinterpret_cast<const float4 *>(x + n * w.cols + j);
                const float4 a = __ldg(xp), c = __ldg(xp + 1);
                acc[n] += v[0] * a.x + v[1] * a.y + v[2] * a.z + v[3] * a.w + v[4] * c.x + v[5] * c.y +
                          v[6] * c.z + v[7] * c.w;
            }
        }
    }
#pragma unroll
    for (int n = 0; n < NB; n++) {
        float s = acc[n];
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
        if (lane == 0) {
            float *yp = y + n * w.rows + r;
            *yp = accumulate ? *yp + s : s;
        }
    }
}

template <int F> static void launch_fmt(const kvl_cuda_wmat &w, const float *x, int nb, float *y, int acc,
                                        cudaStream_t st) {
    const unsigned grid = (unsigned)((w.rows + GEMV_WARPS - 1) / GEMV_WARPS);
    switch (nb) {
    case 8: gemv_k<F, 8><<<grid, GEMV_WARPS * 32, 0, st>>>(w, x, y, acc); break;
    case 4: gemv_k<F, 4><<<grid, GEMV_WARPS * 32, 0, st>>>(w, x, y, acc); break;
    case 2: gemv_k<F, 2><<<grid, GEMV_WARPS * 32, 0, st>>>(w, x, y, acc); break;
    default: gemv_k<F, 1><<<grid, GEMV_WARPS * 32, 0, st>>>(w, x, y, acc); break;
    }
}

extern "C" kvl_status kvl_cuda_gemv(const kvl_cuda_wmat *w, const float *x, int n, float *y, int accumulate,
                                    void *stream, kvl_err *err) {
    if (!w || n < 1 || w->cols % 32 || w->rows < 1)
        return kvl_err_set(err, KVL_ERR_ARG, "cuda gemv: bad shape (%lld x %lld, n %d)",
                           w ? (long long)w->rows : 0LL, w ? (long long)w->cols : 0LL, n);
    cudaStream_t st = (cudaStream_t)stream;
    for (int c0 = 0; c0 < n;) {
        const int left = n - c0, nb = left >= 8 ? 8 : left >= 4 ? 4 : left >= 2 ? 2 : 1;
        const float *xc = x + (size_t)c0 * w->cols;
        float *yc = y + (size_t)c0 * w->rows;
        switch (w->fmt) {
        case KVL_CUDA_WF_F16: launch_fmt<KVL_CUDA_WF_F16>(*w, xc, nb, yc, accumulate, st); break;
        case KVL_CUDA_WF_Q8_0: launch_fmt<KVL_CUDA_WF_Q8_0>(*w, xc, nb, yc, accumulate, st); break;
        case KVL_CUDA_WF_Q4_0: launch_fmt<KVL_CUDA_WF_Q4_0>(*w, xc, nb, yc, accumulate, st); break;
        case KVL_CUDA_WF_Q4_1: launch_fmt<KVL_CUDA_WF_Q4_1>(*w, xc, nb, yc, accumulate, st); break;
        default: return kvl_err_set(err, KVL_ERR_ARG, "cuda gemv: unknown weight format %d", (int)w->fmt);
        }
        c0 += nb;
    }
    KVL_CUDA_TRY(cudaGetLastError(), "cuda gemv launch");
    return KVL_OK;
}

/* ---- integer matvec on 8-bit activations (the CPU default path's numerics) ----
 *
 * The f32 matvec above is instruction- and L1-bound on quantized weights
 * (per weight byte: an I2F, an FFMA and 4 activation bytes through L1; ~1.7
 * TB/s on the H200 against ~2.7 for f16 weights). Here the activation vector
 * is quantized once per matvec input (kvl_cuda_quantize_q8, or fused into
 * the RMSNorm / SwiGLU that produce it) to int8 blocks of 32 with an f32
 * scale and the sum of its codes, and each lane dots 4 weight codes with 4
 * activation codes per __dp4a: per 16 bytes of Q8_0 codes 4 DP4A, one I2F
 * and one FFMA, and 16 activation bytes from L1 shared by the R rows a warp
 * takes. Weight codes are read 16 bytes per lane, coalesced (Q8_0: values
 * 512 c + 16 l .. +16 of chunk c for lane l, half a block; Q4_0 / Q4_1:
 * block 32 c + l, its 16 code bytes = 32 values), U chunks in flight.
 * Per block: Q8_0 y += dw dx sum(qw qx) (in two half-block products);
 * Q4_0 / Q4_1 y += dx (dw sum(c qx) + mw sum(qx)) with mw = -8 dw for Q4_0,
 * as the CPU's vec_dot on Q8_0 / Q8_1 activation blocks. */

/* Kernel variants (rows per warp R, chunks in flight U, weight loads through
 * L1 or around it H), chosen by benchmark (bench_lm --gemv): */
typedef struct gemv_variant { int R, U, H; } gemv_variant;
static const gemv_variant variant_table[] = {
    {1, 4, 0}, {1, 8, 0}, {2, 4, 0}, {1, 4, 1}, {2, 4, 1}, {1, 8, 1}, {4, 2, 1},
    {0, 4, 1}, {0, 8, 1}, /* R = 0: persistent warps, U chunks prefetched across rows (gemv_q8_pipe_k) */
};
#define N_VARIANTS ((int)(sizeof variant_table / sizeof variant_table[0]))
/* Default (opts variant < 0), from bench_lm --gemv on the H200 (2026-12-02):
 * 1R 4U noL1, except Q8_0 matrices of <= 8192 rows: 2R 4U noL1 (4096 x 4096
 * 12.7 vs 13.3 us, 4096 x 14336 23.2 vs 25.3; 14336 rows equal; 128256 rows
 * 135 vs 142 us). Q4_0 / Q4_1: 1R 4U noL1 within 5% of the best everywhere. */
static int auto_variant(kvl_cuda_wfmt f, int64_t rows) { return f == KVL_CUDA_WF_Q8_0 && rows <= 8192 ? 4 : 3; }

extern "C" kvl_cuda_gemv_opts kvl_cuda_gemv_opts_default(void) {
    kvl_cuda_gemv_opts o = {};
    o.variant = -1, o.pdl = 1, o.trigger = 1;
    return o;
}
static kvl_cuda_gemv_opts opts_or_default(const kvl_cuda_gemv_opts *o) {
    return o ? *o : kvl_cuda_gemv_opts_default();
}

extern "C" int kvl_cuda_gemv_q8_n_variants(void) { return N_VARIANTS; }
extern "C" void kvl_cuda_gemv_q8_variant(int v, int *R, int *U, int *H) {
    *R = variant_table[v].R, *U = variant_table[v].U, *H = variant_table[v].H;
}

/* The next matrix's first bytes into L2 from the blocks of the last wave
 * (blockIdx.x >= pf.first_block), each warp one slice of each range, once
 * its own rows' loads are done: the weight stream keeps the memory busy
 * through this kernel's tail and the small kernels after it, and the next
 * matvec finds its first rows in L2. */
static __device__ __forceinline__ void l2_prefetch_tail(const kvl_cuda_l2_prefetch &pf) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    if ((int)blockIdx.x < pf.first_block || (threadIdx.x & 31)) return;
    const size_t nw = (size_t)(gridDim.x - pf.first_block) * GEMV_WARPS;
    const size_t w = (size_t)(blockIdx.x - pf.first_block) * GEMV_WARPS + (threadIdx.x >> 5);
    const char *p[2] = {(const char *)pf.p0, (const char *)pf.p1};
    const size_t n[2] = {pf.n0, pf.n1};
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const size_t slice = ((n[r] + nw - 1) / nw + 15) & ~(size_t)15, a = w * slice;
        if (!p[r] || a >= n[r]) continue;
        size_t len = n[r] - a < slice ? (n[r] - a) & ~(size_t)15 : slice;
        for (size_t o = 0; o < len; o += 65536) {
            const uint32_t m = (uint32_t)(len - o < 65536 ? len - o : 65536);
            asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p[r] + a + o), "r"(m) : "memory");
        }
    }
#else
    (void)pf;
#endif
}

/* The SwiGLU epilogue's outputs (SW = 1): 8-bit blocks of h and one
 * arrival counter per block of 32 h values (zero between launches). */
typedef struct sw_out {
    int8_t *q;     /* [NB][Fh] */
    float2 *ds;    /* [NB][Fh/32] */
    unsigned *cnt; /* [Fh/32] */
} sw_out;

/* w: [rows][cols] Q8_0 / Q4_0 / Q4_1; xq: int8 [NB][cols]; xds: (d, sum) [NB][cols/32]; y: [NB][rows].
 * SW = 1 (R = 2): w is [gate rows; up rows] (2 Fh rows), warp g of the grid
 * computes gate row g and up row g + Fh (the same per-row sums as SW = 0,
 * bit for bit) and writes y [NB][Fh] = silu(gate) * up; the last of the
 * 32 / GEMV_WARPS blocks covering 32 consecutive h values to arrive
 * (atomic counter) quantizes them into sw.q / sw.ds and re-zeroes the
 * counter. */
template <int F, int NB, int R, int U, int H, int SW = 0>
__global__ void __launch_bounds__(GEMV_WARPS * 32)
    gemv_q8_k(kvl_cuda_wmat w, const int8_t *__restrict__ xq, const float2 *__restrict__ xds, float *__restrict__ y,
              int accumulate, int trig, kvl_cuda_l2_prefetch pf = kvl_cuda_l2_prefetch{}, sw_out sw = sw_out{}) {
    static_assert(!SW || R == 2, "SwiGLU epilogue: one gate and one up row per warp");
    if (trig) kvl_griddep_trigger(); /* the stream's next PDL kernel may launch and prefetch its weights */
    const int lane = threadIdx.x & 31;
    const int64_t half = SW ? w.rows / 2 : w.rows; /* output rows */
    const int64_t r0 = SW ? (int64_t)blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5)
                          : ((int64_t)blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5)) * R;
    if (r0 >= half) return; /* SW: never (the grid is exact, Fh % 32 == 0) */
    const int64_t cols = w.cols, nb = cols / 32;
    int64_t rr_[R];
#pragma unroll
    for (int i = 0; i < R; i++)
        rr_[i] = SW ? r0 + i * half : r0 + i < w.rows ? r0 + i : w.rows - 1; /* clamped: read, not written */
    float acc[R][NB];
#pragma unroll
    for (int i = 0; i < R; i++)
#pragma unroll
        for (int n = 0; n < NB; n++) acc[i][n] = 0.0f;
    bool waited = false;
    if constexpr (F == KVL_CUDA_WF_Q8_0) {
        const int8_t *wq = (const int8_t *)w.q;
        const __half *ws = (const __half *)w.s;
        for (int64_t j0 = 16 * lane; j0 < cols; j0 += 512 * U) {
            uint4 wv[U][R];
#pragma unroll
            for (int u = 0; u < U; u++)
#pragma unroll
                for (int i = 0; i < R; i++)
                    if (j0 + 512 * u < cols) wv[u][i] = ldw16<H>(wq + rr_[i] * cols + j0 + 512 * u);
            if (!waited) kvl_griddep_wait(), waited = true; /* weights in flight; now the producer's output */
#pragma unroll
            for (int u = 0; u < U; u++) {
                const int64_t j = j0 + 512 * u, b = j >> 5;
                if (j >= cols) break;
                float wd[R];
#pragma unroll
                for (int i = 0; i < R; i++) wd[i] = __half2float(__ldg(ws + rr_[i] * nb + b));
#pragma unroll
                for (int n = 0; n < NB; n++) {
                    const uint4 a = __ldg(reinterpret_cast<const uint4 *>(xq + n * cols + j));
                    const float xd = __ldg(&xds[n * nb + b].x);
#pragma unroll
                    for (int i = 0; i < R; i++) acc[i][n] += (float)dp4a16(wv[u][i], a, 0) * (wd[i] * xd);
                }
            }
        }
    } else {
        const uint8_t *wq = (const uint8_t *)w.q;
        for (int64_t b0 = lane; b0 < nb; b0 += 32 * U) {
            uint4 wv[U][R];
#pragma unroll
            for (int u = 0; u < U; u++)
#pragma unroll
                for (int i = 0; i < R; i++)
                    if (b0 + 32 * u < nb) wv[u][i] = ldw16<H>(wq + rr_[i] * (cols / 2) + (b0 + 32 * u) * 16);
            if (!waited) kvl_griddep_wait(), waited = true;
#pragma unroll
            for (int u = 0; u < U; u++) {
                const int64_t b = b0 + 32 * u;
                if (b >= nb) break;
                float wd[R], wm[R];
#pragma unroll
                for (int i = 0; i < R; i++) {
                    if constexpr (F == KVL_CUDA_WF_Q4_0) {
                        wd[i] = __half2float(__ldg((const __half *)w.s + rr_[i] * nb + b));
                        wm[i] = -8.0f * wd[i];
                    } else {
                        const __half2 dm = __ldg((const __half2 *)w.s + rr_[i] * nb + b);
                        wd[i] = __low2float(dm), wm[i] = __high2float(dm);
                    }
                }
#pragma unroll
                for (int n = 0; n < NB; n++) {
                    const uint4 *xp = reinterpret_cast<const uint4 *>(xq + n * cols + b * 32);
                    const uint4 a0 = __ldg(xp), a1 = __ldg(xp + 1);
                    const float2 xs = __ldg(&xds[n * nb + b]);
#pragma unroll
                    for (int i = 0; i < R; i++) {
                        const uint4 c = wv[u][i];
                        const uint4 lo = {c.x & 0x0F0F0F0Fu, c.y & 0x0F0F0F0Fu, c.z & 0x0F0F0F0Fu, c.w & 0x0F0F0F0Fu};
                        const uint4 hi = {(c.x >> 4) & 0x0F0F0F0Fu, (c.y >> 4) & 0x0F0F0F0Fu,
                                          (c.z >> 4) & 0x0F0F0F0Fu, (c.w >> 4) & 0x0F0F0F0Fu};
                        const int s = dp4a16(hi, a1, dp4a16(lo, a0, 0));
                        acc[i][n] += xs.x * (wd[i] * (float)s + wm[i] * xs.y);
                    }
                }
            }
        }
    }
    if (!waited) kvl_griddep_wait(); /* lanes past the row's end: before any write */
    l2_prefetch_tail(pf);
    if constexpr (SW) {
#pragma unroll
        for (int n = 0; n < NB; n++) {
            float g = acc[0][n], u = acc[1][n];
#pragma unroll
            for (int o = 16; o > 0; o >>= 1)
                g += __shfl_xor_sync(0xffffffffu, g, o), u += __shfl_xor_sync(0xffffffffu, u, o);
            if (lane == 0) y[n * half + r0] = g / (1.0f + expf(-g)) * u; /* kvl_cuda_swiglu_q8's formula */
        }
        __shared__ unsigned s_arrived;
        const int64_t b = ((int64_t)blockIdx.x * GEMV_WARPS) / 32; /* this block's 32-value group */
        __threadfence();
        __syncthreads();
        if (threadIdx.x == 0) s_arrived = atomicAdd(&sw.cnt[b], 1u);
        __syncthreads();
        if (s_arrived == 32 / GEMV_WARPS - 1) { /* the group's last block */
            __threadfence(); /* the other blocks' h values, written before their arrival */
            const int n = threadIdx.x >> 5;
            if (n < NB) {
                const float v = __ldcg(y + n * half + 32 * b + lane);
                kvl_q8_block_warp(v, lane, sw.q + n * half + 32 * b, sw.ds + n * (half / 32) + b);
            }
            if (threadIdx.x == 0) sw.cnt[b] = 0;
        }
    } else {
#pragma unroll
        for (int i = 0; i < R; i++)
#pragma unroll
            for (int n = 0; n < NB; n++) {
                float s = acc[i][n];
#pragma unroll
                for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
                if (lane == 0 && r0 + i < w.rows) {
                    float *yp = y + n * w.rows + r0 + i;
                    *yp = accumulate ? *yp + s : s;
                }
            }
    }
}

/* Persistent, software-pipelined variant (one column): the grid is one
 * wave of resident blocks; warp g of NW takes rows g, g + NW, ... as one
 * stream of (row, chunk) items and keeps D items' weight codes and scales
 * in flight, refilling the slot it just consumed, across row ends (the
 * one-row-per-warp kernels drain their loads at every row end and retire
 * the warp after 1-2 round trips on 4096-wide rows). Same per-lane order of
 * the sums as gemv_q8_k, so the same result bit for bit. */
template <int F, int D>
__global__ void __launch_bounds__(GEMV_WARPS * 32)
    gemv_q8_pipe_k(kvl_cuda_wmat w, const int8_t *__restrict__ xq, const float2 *__restrict__ xds,
                   float *__restrict__ y, int accumulate, int trig) {
    if (trig) kvl_griddep_trigger();
    const int lane = threadIdx.x & 31;
    const int64_t NW = (int64_t)gridDim.x * GEMV_WARPS, g = (int64_t)blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5);
    const int64_t cols = w.cols, nb = cols / 32;
    const int64_t C = F == KVL_CUDA_WF_Q8_0 ? (cols + 511) / 512 : (nb + 31) / 32; /* chunks per row */
    const int64_t nr = g < w.rows ? (w.rows - g + NW - 1) / NW : 0;
    const int64_t n_items = nr * C;
    uint4 buf[D];
    float bd[D], bm[D];
    /* item -> (row, chunk) by counters: the next item to load and the next to consume */
    int64_t lr = g, lc = 0, cr = g, cc = 0;
    auto load = [&](uint4 &q, float &d, float &m) {
        if constexpr (F == KVL_CUDA_WF_Q8_0) {
            const int64_t j = 512 * lc + 16 * lane;
            if (j < cols) {
                q = ldw16<1>((const int8_t *)w.q + lr * cols + j);
                d = __half2float(__ldg((const __half *)w.s + lr * nb + (j >> 5)));
            }
            m = 0.0f;
        } else {
            const int64_t b = 32 * lc + lane;
            if (b < nb) {
                q = ldw16<1>((const uint8_t *)w.q + lr * (cols / 2) + b * 16);
                if constexpr (F == KVL_CUDA_WF_Q4_0) {
                    d = __half2float(__ldg((const __half *)w.s + lr * nb + b));
                    m = -8.0f * d;
                } else {
                    const __half2 dm = __ldg((const __half2 *)w.s + lr * nb + b);
                    d = __low2float(dm), m = __high2float(dm);
                }
            }
        }
        if (++lc == C) lc = 0, lr += NW;
    };
#pragma unroll
    for (int u = 0; u < D; u++)
        if (u < n_items) load(buf[u], bd[u], bm[u]);
    kvl_griddep_wait(); /* weights in flight; now the producer's output */
    float acc = 0.0f;
    for (int64_t k0 = 0; k0 < n_items; k0 += D) {
#pragma unroll
        for (int u = 0; u < D; u++) {
            if (k0 + u >= n_items) break;
            if constexpr (F == KVL_CUDA_WF_Q8_0) {
                const int64_t j = 512 * cc + 16 * lane;
                if (j < cols) {
                    const uint4 a = __ldg(reinterpret_cast<const uint4 *>(xq + j));
                    acc += (float)dp4a16(buf[u], a, 0) * (bd[u] * __ldg(&xds[j >> 5].x));
                }
            } else {
                const int64_t b = 32 * cc + lane;
                if (b < nb) {
                    const uint4 *xp = reinterpret_cast<const uint4 *>(xq + b * 32);
                    const uint4 a0 = __ldg(xp), a1 = __ldg(xp + 1);
                    const float2 xs = __ldg(&xds[b]);
                    const uint4 c = buf[u];
                    const uint4 lo = {c.x & 0x0F0F0F0Fu, c.y & 0x0F0F0F0Fu, c.z & 0x0F0F0F0Fu, c.w & 0x0F0F0F0Fu};
                    const uint4 hi = {(c.x >> 4) & 0x0F0F0F0Fu, (c.y >> 4) & 0x0F0F0F0Fu, (c.z >> 4) & 0x0F0F0F0Fu,
                                      (c.w >> 4) & 0x0F0F0F0Fu};
                    const int s = dp4a16(hi, a1, dp4a16(lo, a0, 0));
                    acc += xs.x * (bd[u] * (float)s + bm[u] * xs.y);
                }
            }
            if (k0 + u + D < n_items) load(buf[u], bd[u], bm[u]);
            if (++cc == C) { /* the row's last chunk: reduce and write */
                float s = acc;
#pragma unroll
                for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
                if (lane == 0) y[cr] = accumulate ? y[cr] + s : s;
                acc = 0.0f, cc = 0, cr += NW;
            }
        }
    }
}

/* one wave of resident blocks (occupancy read at each launch: benchmark variants only) */
template <int F, int D> static void launch_pipe(const kvl_cuda_wmat &w, const int8_t *xq, const float2 *xds, float *y,
                                                int acc, const kvl_cuda_gemv_opts &o, cudaStream_t st) {
    int n_sm = 0, per_sm = 0, dev = 0;
    cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&n_sm, cudaDevAttrMultiProcessorCount, dev);
    cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, gemv_q8_pipe_k<F, D>, GEMV_WARPS * 32, 0);
    if (per_sm < 1) per_sm = 1;
    if (n_sm < 1) n_sm = 1;
    const int64_t need = (w.rows + GEMV_WARPS - 1) / GEMV_WARPS, wave = (int64_t)n_sm * per_sm;
    cudaLaunchAttribute at[1];
    cudaLaunchConfig_t cfg = kvl_gemv_launch_config((unsigned)(need < wave ? need : wave), 0, o.pdl, st, at);
    cudaLaunchKernelEx(&cfg, gemv_q8_pipe_k<F, D>, w, xq, xds, y, acc, o.trigger);
}

/* With o.pdl the launch may begin while the stream's previous kernel (the
 * producer of xq / xds) still runs: the kernel waits for it after its first
 * weight loads (kvl_griddep_wait). */
template <int F, int NB, int R, int U, int H>
static void launch_q8(const kvl_cuda_wmat &w, const int8_t *xq, const float2 *xds, float *y, int acc,
                      const kvl_cuda_gemv_opts &o, cudaStream_t st) {
    const int64_t per_block = (int64_t)GEMV_WARPS * R;
    const unsigned grid = (unsigned)((w.rows + per_block - 1) / per_block);
    kvl_cuda_l2_prefetch pf = o.pf;
    pf.first_block = pf.first_block >= (int)grid ? 0 : (int)grid - (pf.first_block > 0 ? pf.first_block : (int)grid);
    cudaLaunchAttribute at[1];
    cudaLaunchConfig_t cfg = kvl_gemv_launch_config(grid, 0, o.pdl, st, at);
    cudaLaunchKernelEx(&cfg, gemv_q8_k<F, NB, R, U, H>, w, xq, xds, y, acc, o.trigger, pf, sw_out{}); /* errors: cudaGetLastError after */
}

template <int F> static void launch_q8_fmt(const kvl_cuda_wmat &w, const int8_t *xq, const float2 *xds, int nb,
                                           float *y, int acc, const kvl_cuda_gemv_opts &o, cudaStream_t st) {
    if (nb == 1) { /* every variant at one column (decode) */
        switch (o.variant < 0 || o.variant >= N_VARIANTS ? auto_variant((kvl_cuda_wfmt)F, w.rows) : o.variant) {
        case 0: launch_q8<F, 1, 1, 4, 0>(w, xq, xds, y, acc, o, st); return;
        case 1: launch_q8<F, 1, 1, 8, 0>(w, xq, xds, y, acc, o, st); return;
        case 2: launch_q8<F, 1, 2, 4, 0>(w, xq, xds, y, acc, o, st); return;
        case 4: launch_q8<F, 1, 2, 4, 1>(w, xq, xds, y, acc, o, st); return;
        case 5: launch_q8<F, 1, 1, 8, 1>(w, xq, xds, y, acc, o, st); return;
        case 6: launch_q8<F, 1, 4, 2, 1>(w, xq, xds, y, acc, o, st); return;
        case 7: launch_pipe<F, 4>(w, xq, xds, y, acc, o, st); return;
        case 8: launch_pipe<F, 8>(w, xq, xds, y, acc, o, st); return;
        default: launch_q8<F, 1, 1, 4, 1>(w, xq, xds, y, acc, o, st); return;
        }
    }
    switch (nb) { /* the default variant's shape */
    case 8: launch_q8<F, 8, 1, 4, 1>(w, xq, xds, y, acc, o, st); break;
    case 4: launch_q8<F, 4, 1, 4, 1>(w, xq, xds, y, acc, o, st); break;
    default: launch_q8<F, 2, 1, 4, 1>(w, xq, xds, y, acc, o, st); break;
    }
}

/* gate|up with the SwiGLU epilogue: one launch per <= 8 columns, 2 rows (gate g, up g + Fh) per warp,
 * the default variant's chunks in flight and L1 policy (4, around L1) */
template <int F, int NB>
static void launch_q8_swiglu(const kvl_cuda_wmat &w, const int8_t *xq, const float2 *xds, float *h, sw_out o,
                             cudaStream_t st) {
    cudaLaunchAttribute at[1];
    cudaLaunchConfig_t cfg = kvl_gemv_launch_config((unsigned)(w.rows / 2 / GEMV_WARPS), 0, 1, st, at);
    cudaLaunchKernelEx(&cfg, gemv_q8_k<F, NB, 2, 4, 1, 1>, w, xq, xds, h, 0, 0, kvl_cuda_l2_prefetch{}, o);
}

template <int F> static void launch_q8_swiglu_fmt(const kvl_cuda_wmat &w, const int8_t *xq, const float2 *xds, int nb,
                                                  float *h, sw_out o, cudaStream_t st) {
    switch (nb) {
    case 8: launch_q8_swiglu<F, 8>(w, xq, xds, h, o, st); break;
    case 4: launch_q8_swiglu<F, 4>(w, xq, xds, h, o, st); break;
    case 2: launch_q8_swiglu<F, 2>(w, xq, xds, h, o, st); break;
    default: launch_q8_swiglu<F, 1>(w, xq, xds, h, o, st); break;
    }
}

extern "C" kvl_status kvl_cuda_gemv_q8_swiglu(const kvl_cuda_wmat *w, const int8_t *xq, const float *xds, int n,
                                              float *h, int8_t *hq, float *hds, unsigned *cnt, void *stream,
                                              kvl_err *err) {
    if (!w || n < 1 || w->cols % 32 || w->rows < 64 || w->rows % 64 || !h || !hq || !hds || !cnt)
        return kvl_err_set(err, KVL_ERR_ARG, "cuda gemv q8 swiglu: bad shape (%lld x %lld, n %d) or buffers",
                           w ? (long long)w->rows : 0LL, w ? (long long)w->cols : 0LL, n);
    /* Q8_0 only: its sums were measured bit-identical to the two-kernel path; the Q4 formats' 2-row
     * instantiation contracts its block terms differently (values off by more than 1e-6 relative) */
    if (w->fmt != KVL_CUDA_WF_Q8_0)
        return kvl_err_set(err, KVL_ERR_ARG, "cuda gemv q8 swiglu: weight format %d: Q8_0 only", (int)w->fmt);
    cudaStream_t st = (cudaStream_t)stream;
    const int64_t Fh = w->rows / 2;
    const float2 *ds = reinterpret_cast<const float2 *>(xds);
    for (int c0 = 0; c0 < n;) {
        const int left = n - c0, nb = left >= 8 ? 8 : left >= 4 ? 4 : left >= 2 ? 2 : 1;
        const int8_t *xc = xq + (size_t)c0 * w->cols;
        const float2 *dc = ds + (size_t)c0 * (w->cols / 32);
        const sw_out o = {hq + (size_t)c0 * Fh, reinterpret_cast<float2 *>(hds) + (size_t)c0 * (Fh / 32), cnt};
        float *hc = h + (size_t)c0 * Fh;
        launch_q8_swiglu_fmt<KVL_CUDA_WF_Q8_0>(*w, xc, dc, nb, hc, o, st);
        c0 += nb;
    }
    KVL_CUDA_TRY(cudaGetLastError(), "cuda gemv q8 swiglu launch");
    return KVL_OK;
}

extern "C" kvl_status kvl_cuda_gemv_q8(const kvl_cuda_wmat *w, const int8_t *xq, const float *xds, int n, float *y,
                                       int accumulate, void *stream, kvl_err *err) {
    return kvl_cuda_gemv_q8_ex(w, xq, xds, n, y, accumulate, NULL, stream, err);
}

extern "C" kvl_status kvl_cuda_gemv_q8_ex(const kvl_cuda_wmat *w, const int8_t *xq, const float *xds, int n, float *y,
                                          int accumulate, const kvl_cuda_gemv_opts *opts, void *stream, kvl_err *err) {
    const kvl_cuda_gemv_opts o = opts_or_default(opts);
    if (!w || n < 1 || w->cols % 32 || w->rows < 1)
        return kvl_err_set(err, KVL_ERR_ARG, "cuda gemv q8: bad shape (%lld x %lld, n %d)",
                           w ? (long long)w->rows : 0LL, w ? (long long)w->cols : 0LL, n);
    cudaStream_t st = (cudaStream_t)stream;
    const float2 *ds = reinterpret_cast<const float2 *>(xds);
    for (int c0 = 0; c0 < n;) {
        const int left = n - c0, nb = left >= 8 ? 8 : left >= 4 ? 4 : left >= 2 ? 2 : 1;
        const int8_t *xc = xq + (size_t)c0 * w->cols;
        const float2 *dc = ds + (size_t)c0 * (w->cols / 32);
        float *yc = y + (size_t)c0 * w->rows;
        switch (w->fmt) {
        case KVL_CUDA_WF_Q8_0: launch_q8_fmt<KVL_CUDA_WF_Q8_0>(*w, xc, dc, nb, yc, accumulate, o, st); break;
        case KVL_CUDA_WF_Q4_0: launch_q8_fmt<KVL_CUDA_WF_Q4_0>(*w, xc, dc, nb, yc, accumulate, o, st); break;
        case KVL_CUDA_WF_Q4_1: launch_q8_fmt<KVL_CUDA_WF_Q4_1>(*w, xc, dc, nb, yc, accumulate, o, st); break;
        default:
            return kvl_err_set(err, KVL_ERR_ARG, "cuda gemv q8: weight format %d has no integer matvec (f16: "
                               "kvl_cuda_gemv)", (int)w->fmt);
        }
        c0 += nb;
    }
    KVL_CUDA_TRY(cudaGetLastError(), "cuda gemv q8 launch");
    return KVL_OK;
}

/* x [n][cols] -> blocks of 32: one warp per block, grid-stride */
__global__ void quantize_q8_k(const float *__restrict__ x, int64_t n_blocks, int8_t *__restrict__ q,
                              float2 *__restrict__ ds) {
    kvl_griddep_trigger();
    const int lane = threadIdx.x & 31;
    const int64_t wpb = blockDim.x >> 5;
    for (int64_t b = blockIdx.x * wpb + (threadIdx.x >> 5); b < n_blocks; b += (int64_t)gridDim.x * wpb)
        kvl_q8_block_warp(x[32 * b + lane], lane, q + 32 * b, ds + b);
}

extern "C" kvl_status kvl_cuda_quantize_q8(const float *x, int n, int cols, int8_t *q, float *ds, void *stream,
                                           kvl_err *err) {
    if (n < 1 || cols < 32 || cols % 32)
        return kvl_err_set(err, KVL_ERR_ARG, "cuda quantize q8: n %d cols %d (multiple of 32)", n, cols);
    const int64_t nbk = (int64_t)n * cols / 32;
    unsigned grid = (unsigned)((nbk + 7) / 8);
    if (grid > 4096) grid = 4096;
    quantize_q8_k<<<grid, 256, 0, (cudaStream_t)stream>>>(x, nbk, q, reinterpret_cast<float2 *>(ds));
    KVL_CUDA_TRY(cudaGetLastError(), "cuda quantize q8 launch");
    return KVL_OK;
}

/* ---- random weights ---- */

static __device__ __forceinline__ uint64_t mix64(uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* 4 random bytes per word of the code array; scales: amp / code range */
__global__ void fill_q(uint32_t *q, size_t nwords, uint64_t seed, int f16, float amp) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < nwords; i += (size_t)gridDim.x * blockDim.x) {
        const uint64_t h = mix64(seed ^ (i * 0x2545f4914f6cdd1dull));
        if (f16) { /* two halves in [-amp, amp] */
            const float a = ((float)(h & 0xffffu) / 32768.0f - 1.0f) * amp;
            const float b = ((float)((h >> 16) & 0xffffu) / 32768.0f - 1.0f) * amp;
            const __half2 v = __floats2half2_rn(a, b);
            memcpy(&q[i], &v, 4);
        } else {
            q[i] = (uint32_t)h;
        }
    }
}

__global__ void fill_s(__half *s, size_t n, uint64_t seed, float d, float m) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const uint64_t h = mix64(seed ^ ~(i * 0x9e3779b97f4a7c15ull));
        const float u = 0.5f + (float)(h & 0xffffu) / 65536.0f; /* [0.5, 1.5) */
        s[i] = __float2half_rn(m != 0.0f && (i & 1) ? m * u : d * u);
    }
}

extern "C" kvl_status kvl_cuda_wmat_fill_random(const kvl_cuda_wmat *w, uint64_t seed, float amp, void *stream,
                                                kvl_err *err) {
    cudaStream_t st = (cudaStream_t)stream;
    const size_t qb = kvl_cuda_wmat_qbytes(w->fmt, w->rows, w->cols), sb = kvl_cuda_wmat_sbytes(w->fmt, w->rows, w->cols);
    fill_q<<<1024, 256, 0, st>>>((uint32_t *)w->q, qb / 4, seed, w->fmt == KVL_CUDA_WF_F16, amp);
    if (sb) {
        /* Q8_0: codes in [-128, 127] -> d = amp / 64; Q4_0: c - 8 in [-8, 7] -> amp / 4;
         * Q4_1: c in [0, 15], m = -amp -> d = amp / 8 (values around [-amp, amp]) */
        const float d = w->fmt == KVL_CUDA_WF_Q8_0 ? amp / 64 : w->fmt == KVL_CUDA_WF_Q4_0 ? amp / 4 : amp / 8;
        fill_s<<<1024, 256, 0, st>>>((__half *)w->s, sb / 2, seed + 1, d, w->fmt == KVL_CUDA_WF_Q4_1 ? -amp : 0.0f);
    }
    KVL_CUDA_TRY(cudaGetLastError(), "cuda random weights launch");
    return KVL_OK;
}
