/* Tensor-core integer GEMM for prefill (kvl_cuda_gemm_q8, lm_ops.h): Y [n][rows]
 * (=, +=) W X for many activation columns at once, on the same operands as
 * the integer matvec (gemv.cu): W in the lm's Q8_0 / Q4_0 / Q4_1 device
 * format (codes and scales in separate arrays), X as 8-bit activation
 * blocks (xq int8 [n][cols], xds (d, s) per block of 32).
 *
 * Numerics: one mma.sync m16n8k32 s8 x s8 -> s32 per 32-value block gives
 * the block's integer dot exactly (zero accumulator in, one block per mma),
 * then the block term in f32 as the matvec forms it: Q8_0 (float)dot *
 * (dw dx); Q4_0 / Q4_1 dx (dw (float)dot + mw sx) with the raw nibbles 0..15
 * as codes (mw = -8 dw for Q4_0). The integer part is exact on both sides;
 * only the order of the f32 block sums differs from the matvec's (here:
 * block after block per output; there: per lane, then across the warp, Q8_0
 * in half blocks), so the two agree to the f32 summation bound,
 * ~(nb + 16) 2^-24 sum |terms|.
 *
 * Tiling: a block computes BM weight rows x 64 tokens, warps of 32 rows x 32
 * tokens (2 m16 x 4 n8 mma tiles, 32 f32 accumulators per lane); K in
 * stages of 64 values (2 blocks): weight codes (Q8_0 64 bytes, Q4 32 bytes
 * per row), activation codes (64 bytes per token) and both scale arrays
 * copied by cp.async (zero-filled past the last row / token) into a
 * 3-stage shared-memory ring, 16-byte chunks XOR-swizzled so that the
 * ldmatrix phases hit distinct bank quads; ldmatrix.x4 for the A (weight)
 * and B (activation) fragments. Q4 codes are split into low / high
 * nibbles in registers (value j < 16 = low nibble of byte j, j >= 16 = high
 * nibble of byte j - 16: the A fragment's k slots 4t..4t+3 and 16+4t..+3 are
 * the two nibbles of the same 4 bytes). The int -> f32 conversion uses the
 * exact 2^23 + 2^22 bias trick (|dot| <= 2^19 < 2^22) instead of I2F.
 * blockIdx.x runs over token tiles, so the blocks sharing a weight tile run
 * together and the weights stream from DRAM about once. BM = 64 (4 warps; the
 * default, measured as fast or faster) or 128 (8 warps). cols % 64 == 0. */
#include <cuda_fp16.h>
#include <stdint.h>

#include "cuda/act_q8.cuh"
#include "cuda/cuda_util.cuh"
#include "cuda/lm_ops.h"

#define GQ_BN 64     /* tokens per block */
#define GQ_BK 64     /* K values per stage (2 blocks of 32) */
#define GQ_STAGES 3  /* cp.async ring depth */

static __device__ __forceinline__ uint32_t gq_smem(const void *p) {
    return (uint32_t)__cvta_generic_to_shared(p);
}
/* 16 / 8 / 4 bytes global -> shared; src_bytes 0 zero-fills the destination */
static __device__ __forceinline__ void gq_cp16(uint32_t d, const void *s, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(d), "l"(s), "r"(src_bytes) : "memory");
}
static __device__ __forceinline__ void gq_cp8(uint32_t d, const void *s, int src_bytes) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;" ::"r"(d), "l"(s), "r"(src_bytes) : "memory");
}
static __device__ __forceinline__ void gq_cp4(uint32_t d, const void *s, int src_bytes) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;" ::"r"(d), "l"(s), "r"(src_bytes) : "memory");
}
static __device__ __forceinline__ void gq_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N> static __device__ __forceinline__ void gq_wait() {
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}
static __device__ __forceinline__ void gq_ldsm4(uint32_t a, uint32_t (&r)[4]) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}
/* C (16 x 8, s32) = A (16 x 32, s8, row) B (32 x 8, s8, col), zero accumulator in */
static __device__ __forceinline__ void gq_mma(const uint32_t (&a)[4], uint32_t b0, uint32_t b1, int (&c)[4]) {
    asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
                 "{%10, %10, %10, %10};"
                 : "=r"(c[0]), "=r"(c[1]), "=r"(c[2]), "=r"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1), "r"(0));
}
/* exact (float)c for |c| < 2^22: 0x4B400000 is 1.5 * 2^23 */
static __device__ __forceinline__ float gq_i2f(int c) { return __int_as_float(c + 0x4B400000) - 12582912.0f; }

/* Shared-memory layout of one stage: rows of R bytes in 16-byte chunks,
 * chunk c of row r stored at chunk c ^ ((r >> SH) & (C - 1)) (C = R / 16;
 * SH = 1 for 64-byte rows, 2 for 32-byte rows): the 8 rows of an ldmatrix
 * phase land in 8 distinct 16-byte bank groups. */
template <int R> static __device__ __forceinline__ int gq_swz(int r, int c) {
    constexpr int C = R / 16, SH = R == 64 ? 1 : 2;
    return r * R + ((c ^ ((r >> SH) & (C - 1))) << 4);
}

template <int F, int BM> struct gq_cfg {
    static constexpr int AR = F == KVL_CUDA_WF_Q8_0 ? 64 : 32; /* weight code bytes per row and stage */
    static constexpr int SR = F == KVL_CUDA_WF_Q4_1 ? 8 : 4;   /* weight scale bytes per row and stage */
    static constexpr int NT = (BM / 32) * 2 * 32;              /* threads: warps (BM / 32) x 2 */
    static constexpr int A_B = BM * AR, B_B = GQ_BN * GQ_BK, AS_B = BM * SR, BS_B = GQ_BN * 16;
    static constexpr int STAGE = A_B + B_B + AS_B + BS_B;
};

/* w: [rows][cols] (cols % 64 == 0); xq: int8 [n][cols]; xds: (d, s) [n][cols/32]; y: [n][rows] */
template <int F, int BM>
__global__ void __launch_bounds__(gq_cfg<F, BM>::NT, 2)
    gemm_q8_k(kvl_cuda_wmat w, const int8_t *__restrict__ xq, const float2 *__restrict__ xds, int n,
              float *__restrict__ y, int accumulate) {
    using C = gq_cfg<F, BM>;
    __shared__ __align__(128) unsigned char sm[GQ_STAGES * C::STAGE];
    kvl_griddep_trigger(); /* the stream's next PDL kernel may launch (it waits for this grid's end) */
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wm = warp >> 1, wn = warp & 1; /* warp tile: rows 32 wm.., tokens 32 wn.. */
    const int g = lane >> 2, tq = lane & 3;
    const int64_t rows = w.rows, cols = w.cols, nb = cols / 32;
    const int64_t m0 = (int64_t)blockIdx.y * BM;
    const int n0 = blockIdx.x * GQ_BN;
    const int KT = (int)(cols / GQ_BK);
    const int64_t wrow_b = F == KVL_CUDA_WF_Q8_0 ? cols : cols / 2; /* code bytes per weight row */
    const unsigned char *wq = (const unsigned char *)w.q, *ws = (const unsigned char *)w.s;

    auto stage_ptr = [&](int s) { return sm + s * C::STAGE; };
    /* This thread's copies, fixed over k: sources at k tile 0 (rows / tokens past the end clamped to the
     * last one, a valid address, and zero-filled: src size 0) and shared-memory offsets in a stage. */
    constexpr int CH = C::AR / 16, NA = BM * CH / C::NT, NB = GQ_BN * 4 / C::NT;
    static_assert(NA >= 1 && NB >= 1 && BM * CH % C::NT == 0 && GQ_BN * 4 % C::NT == 0, "copy split");
    const unsigned char *pa[NA];
    uint32_t oa[NA];
    int za[NA];
#pragma unroll
    for (int u = 0; u < NA; u++) {
        const int i = tid + u * C::NT, r = i / CH, c = i % CH;
        const int64_t gr = m0 + r < rows ? m0 + r : rows - 1;
        pa[u] = wq + gr * wrow_b + 16 * c, oa[u] = gq_swz<C::AR>(r, c), za[u] = m0 + r < rows ? 16 : 0;
    }
    const int8_t *pb[NB];
    uint32_t ob[NB];
    int zb[NB];
#pragma unroll
    for (int u = 0; u < NB; u++) {
        const int i = tid + u * C::NT, t = i >> 2, c = i & 3;
        const int gt = n0 + t < n ? n0 + t : n - 1;
        pb[u] = xq + (int64_t)gt * cols + 16 * c, ob[u] = gq_swz<64>(t, c), zb[u] = n0 + t < n ? 16 : 0;
    }
    /* scales: thread tid < BM copies weight row tid's, tid < 64 token tid's */
    const unsigned char *pas = ws + ((m0 + tid < rows ? m0 + tid : rows - 1) * nb) * (C::SR / 2);
    const int zas = m0 + tid < rows ? C::SR : 0;
    const float2 *pbs = xds + (int64_t)(n0 + tid < n ? n0 + tid : n - 1) * nb;
    const int zbs = n0 + tid < n ? 16 : 0;

    /* weight codes and scales of k tile kt into stage s */
    auto load_a = [&](int s, int kt) {
        const uint32_t st = gq_smem(stage_ptr(s));
#pragma unroll
        for (int u = 0; u < NA; u++) gq_cp16(st + oa[u], pa[u] + (int64_t)kt * C::AR, za[u]);
        if (tid < BM) {
            if constexpr (C::SR == 8) gq_cp8(st + C::A_B + C::B_B + 8 * tid, pas + (int64_t)kt * 8, zas); /* 2 x (d, m) */
            else gq_cp4(st + C::A_B + C::B_B + 4 * tid, pas + (int64_t)kt * 4, zas); /* 2 x d */
        }
    };
    /* activation codes and (d, s) of k tile kt into stage s */
    auto load_b = [&](int s, int kt) {
        const uint32_t st = gq_smem(stage_ptr(s));
#pragma unroll
        for (int u = 0; u < NB; u++) gq_cp16(st + C::A_B + ob[u], pb[u] + (int64_t)kt * GQ_BK, zb[u]);
        if (tid < GQ_BN) gq_cp16(st + C::A_B + C::B_B + C::AS_B + 16 * tid, pbs + 2 * kt, zbs);
    };

    /* prologue: weights first (independent of the producer kernel), then wait for it, then activations */
#pragma unroll
    for (int s = 0; s < GQ_STAGES - 1; s++)
        if (s < KT) load_a(s, s);
    kvl_griddep_wait();
#pragma unroll
    for (int s = 0; s < GQ_STAGES - 1; s++) {
        if (s < KT) load_b(s, s);
        gq_commit(); /* group s: stage s's activations (and, in group 0, the prologue's weights) */
    }

    float acc[2][4][4];
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[i][j][e] = 0.0f;

#pragma unroll 1
    for (int kt = 0; kt < KT; kt++) {
        gq_wait<GQ_STAGES - 2>(); /* stage kt's group complete (this thread's copies) */
        __syncthreads();          /* ... and everyone's; stage kt - 1 free for reuse */
        {
            const int nk = kt + GQ_STAGES - 1, ns = nk % GQ_STAGES;
            if (nk < KT) load_a(ns, nk), load_b(ns, nk);
            gq_commit();
        }
        const unsigned char *st = stage_ptr(kt % GQ_STAGES);
        const uint32_t a_s = gq_smem(st), b_s = gq_smem(st + C::A_B);
        const unsigned char *as_p = st + C::A_B + C::B_B, *bs_p = st + C::A_B + C::B_B + C::AS_B;

        /* Q4: both blocks' codes of m-tile i in one ldmatrix.x4: (rows 0-7, blk 0), (rows 8-15, blk 0), (rows 0-7,
         * blk 1), (rows 8-15, blk 1) */
        uint32_t q4[2][4];
        if constexpr (F != KVL_CUDA_WF_Q8_0) {
#pragma unroll
            for (int i = 0; i < 2; i++) {
                const int r = 32 * wm + 16 * i + (lane & 7) + ((lane >> 3) & 1) * 8;
                gq_ldsm4(a_s + gq_swz<32>(r, lane >> 4), q4[i]);
            }
        }
#pragma unroll 1 /* one block at a time: fragments of one block live (128 registers at BM 128, no spills) */
        for (int kk = 0; kk < 2; kk++) {
            uint32_t a[2][4];
#pragma unroll
            for (int i = 0; i < 2; i++) {
                if constexpr (F == KVL_CUDA_WF_Q8_0) {
                    /* (rows 0-7, k 0-15), (rows 8-15, k 0-15), (rows 0-7, k 16-31), (rows 8-15, k 16-31) of block kk */
                    const int r = 32 * wm + 16 * i + (lane & 7) + ((lane >> 3) & 1) * 8;
                    gq_ldsm4(a_s + gq_swz<64>(r, 2 * kk + (lane >> 4)), a[i]);
                } else {
                    const uint32_t lo = kk ? q4[i][2] : q4[i][0], hi = kk ? q4[i][3] : q4[i][1]; /* rows g, g + 8: bytes 4tq..4tq+3 */
                    a[i][0] = lo & 0x0F0F0F0Fu, a[i][1] = hi & 0x0F0F0F0Fu;
                    a[i][2] = (lo >> 4) & 0x0F0F0F0Fu, a[i][3] = (hi >> 4) & 0x0F0F0F0Fu;
                }
            }
            uint32_t b[4][2];
#pragma unroll
            for (int jp = 0; jp < 2; jp++) {
                /* (tokens 0-7, k 0-15), (tokens 0-7, k 16-31), (tokens 8-15, k 0-15), (tokens 8-15, k 16-31) */
                const int t = 32 * wn + 16 * jp + (lane & 7) + (lane >> 4) * 8;
                uint32_t r4[4];
                gq_ldsm4(b_s + gq_swz<64>(t, 2 * kk + ((lane >> 3) & 1)), r4);
                b[2 * jp][0] = r4[0], b[2 * jp][1] = r4[1], b[2 * jp + 1][0] = r4[2], b[2 * jp + 1][1] = r4[3];
            }
            float dw[2][2], mw[2][2]; /* [i][h] */
#pragma unroll
            for (int i = 0; i < 2; i++)
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    const int r = 32 * wm + 16 * i + g + 8 * h;
                    if constexpr (F == KVL_CUDA_WF_Q4_1) { /* (d, m) of block kk */
                        const __half2 p = *reinterpret_cast<const __half2 *>(as_p + 8 * r + 4 * kk);
                        dw[i][h] = __low2float(p), mw[i][h] = __high2float(p);
                    } else {
                        dw[i][h] = __half2float(*reinterpret_cast<const __half *>(as_p + 4 * r + 2 * kk));
                        mw[i][h] = -8.0f * dw[i][h];
                    }
                }
#pragma unroll
            for (int j = 0; j < 4; j++) {
                float2 x[2]; /* (d, s) of block kk of tokens 2 tq, 2 tq + 1 of n-tile j */
#pragma unroll
                for (int h = 0; h < 2; h++)
                    x[h] = *reinterpret_cast<const float2 *>(bs_p + 16 * (32 * wn + 8 * j + 2 * tq + h) + 8 * kk);
#pragma unroll
                for (int i = 0; i < 2; i++) {
                    int c[4];
                    gq_mma(a[i], b[j][0], b[j][1], c);
#pragma unroll
                    for (int e = 0; e < 4; e++) { /* c0, c1: row g; c2, c3: row g + 8; tokens 2 tq + (e & 1) */
                        const int h = e >> 1;
                        const float2 xe = x[e & 1];
                        if constexpr (F == KVL_CUDA_WF_Q8_0)
                            acc[i][j][e] += gq_i2f(c[e]) * (dw[i][h] * xe.x);
                        else
                            acc[i][j][e] += xe.x * (dw[i][h] * gq_i2f(c[e]) + mw[i][h] * xe.y);
                    }
                }
            }
        }
    }
    gq_wait<0>();

#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int64_t r = m0 + 32 * wm + 16 * i + g + 8 * (e >> 1);
                const int t = n0 + 32 * wn + 8 * j + 2 * tq + (e & 1);
                if (r < rows && t < n) {
                    float *yp = y + (int64_t)t * rows + r;
                    *yp = accumulate ? *yp + acc[i][j][e] : acc[i][j][e];
                }
            }
}

template <int F, int BM>
static cudaError_t gq_launch(const kvl_cuda_wmat &w, const int8_t *xq, const float2 *xds, int n, float *y, int acc,
                             int pdl, cudaStream_t st) {
    using C = gq_cfg<F, BM>;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3((unsigned)((n + GQ_BN - 1) / GQ_BN), (unsigned)((w.rows + BM - 1) / BM));
    cfg.blockDim = dim3(C::NT);
    cfg.stream = st;
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = at;
    cfg.numAttrs = pdl ? 1 : 0;
    return cudaLaunchKernelEx(&cfg, gemm_q8_k<F, BM>, w, xq, xds, n, y, acc);
}

template <int F>
static cudaError_t gq_launch_fmt(const kvl_cuda_wmat &w, const int8_t *xq, const float2 *xds, int n, float *y,
                                 int acc, int bm, int pdl, cudaStream_t st) {
    return bm == 128 ? gq_launch<F, 128>(w, xq, xds, n, y, acc, pdl, st) : gq_launch<F, 64>(w, xq, xds, n, y, acc, pdl, st);
}

extern "C" int kvl_cuda_gemm_q8_supported(const kvl_cuda_wmat *w) {
    return w && (w->fmt == KVL_CUDA_WF_Q8_0 || w->fmt == KVL_CUDA_WF_Q4_0 || w->fmt == KVL_CUDA_WF_Q4_1) &&
           w->rows >= 1 && w->cols >= 64 && w->cols % 64 == 0 && (w->rows + 63) / 64 <= 65535;
}

extern "C" kvl_status kvl_cuda_gemm_q8(const kvl_cuda_wmat *w, const int8_t *xq, const float *xds, int n, float *y,
                                       int accumulate, int bm, int pdl, void *stream, kvl_err *err) {
    if (!kvl_cuda_gemm_q8_supported(w) || n < 1 || !xq || !xds || !y)
        return kvl_err_set(err, KVL_ERR_ARG, "cuda gemm q8: format %d, shape %lld x %lld (cols %% 64 == 0), n %d",
                           w ? (int)w->fmt : -1, w ? (long long)w->rows : 0LL, w ? (long long)w->cols : 0LL, n);
    if (bm != 0 && bm != 64 && bm != 128) return kvl_err_set(err, KVL_ERR_ARG, "cuda gemm q8: tile rows %d", bm);
    /* automatic: 64-row tiles. On the H200 (bench_lm --gemm, 2026-12-03) they were as fast or faster than
     * 128-row tiles at every 8B shape at n = 512 (gate|up 620 vs 634 us, output 2627 vs 2687, Q4 gate|up
     * 694-703 vs 720-729; the rest within 1-2%) */
    if (!bm) bm = 64;
    const float2 *ds = reinterpret_cast<const float2 *>(xds);
    cudaStream_t st = (cudaStream_t)stream;
    cudaError_t e;
    switch (w->fmt) {
    case KVL_CUDA_WF_Q8_0: e = gq_launch_fmt<KVL_CUDA_WF_Q8_0>(*w, xq, ds, n, y, accumulate, bm, pdl, st); break;
    case KVL_CUDA_WF_Q4_0: e = gq_launch_fmt<KVL_CUDA_WF_Q4_0>(*w, xq, ds, n, y, accumulate, bm, pdl, st); break;
    default: e = gq_launch_fmt<KVL_CUDA_WF_Q4_1>(*w, xq, ds, n, y, accumulate, bm, pdl, st); break;
    }
    KVL_CUDA_TRY(e, "cuda gemm q8 launch");
    return KVL_OK;
}
