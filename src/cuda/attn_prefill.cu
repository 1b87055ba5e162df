/* Tiled causal prefill attention over f16 pages on the tensor cores
 * (FlashAttention-2 style; kvl_cuda_prefill.h).
 *
 * Block (tile, kv-head h), PF_WARPS warps: the tile's entries e0 .. e0+ne-1
 * (consecutive query tokens of one list) times the G query heads of h are
 * the block's rows r = token * G + g (PF_ROWS = 128 rows: 128 / G tokens;
 * the rest are pad rows that see nothing). Warp w owns rows 16 w .. 16 w +
 * 15, i.e. one m16 tile of A = Q (scaled by scale * log2 e, kept in
 * registers as hi + lo f16 parts: hi = f16(x), lo = f16(x - hi), so the
 * scores keep fp32 accuracy as in the decode kernels; variant 1 drops lo).
 *
 * Keys stream in tiles of PF_BC = 64 rows of the list (pages of any P:
 * each key's page address from the page table), staged page -> shared
 * memory by cp.async into one of two stages (the next tile in flight while
 * the current one is used), K and V rows token-major as in the page, each
 * 16-byte chunk c of row j at slot c ^ (j & 7) so that the eight rows of an
 * ldmatrix phase hit distinct bank quads. Per tile and warp:
 *   S[16 x 64]  = Q K^T:  B = K rows by ldmatrix (key-major = B's column
 *                 layout), D / 16 k-steps x 8 key n-tiles;
 *   mask        row's key j visible iff j < list_len(row) and the page's
 *                 stored position of j <= the row's query position;
 *   online softmax in the log2 domain (ex2.approx), row max over the
 *                 quad of lanes holding a row, O rescaled in registers;
 *   O[16 x D]  += P V:    A = P straight from S's C fragments (f16), B = V
 *                 rows by ldmatrix.trans, 4 k-steps of 16 keys x D / 8
 *                 channel n-tiles.
 * A warp whose rows all end before a key tile skips its math (causal
 * tail). Rows past the block's longest list are zero-filled in the stage
 * (their page bytes may be anything, NaN too: P = 0 times NaN is NaN).
 * The output row is O / l (zeros when the row saw no key), written by the
 * warp directly: one block covers the whole list, so there is no split and
 * no merge (parallelism comes from the tiles: a 512-token chunk of an 8B
 * layer is 16 tiles x 8 kv-heads). */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_fp16.h>

#include "cuda/attn_tc_f16.cuh"
#include "cuda/cuda_util.cuh"
#include "cuda/kvl_cuda_prefill.h"
#include "cuda/page_space.cuh"

#define PF_WARPS 8
#define PF_THREADS (PF_WARPS * 32)
#define PF_ROWS (16 * PF_WARPS)
#define PF_BC 64 /* keys per stage */
#define PF_LOG2E 1.4426950408889634f

struct pf_kargs {
    kvl_cuda_page_space space;
    int koff, voff, P, logP, G, n_head_kv;
    const uint32_t *page_ids;
    const int32_t *list_off, *list_len, *qpos, *tiles;
    const float *q;
    float *out;
    float qscale; /* scale * log2(e): scores in the log2 domain */
};

static __device__ __forceinline__ float pf_ex2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}
static __device__ __forceinline__ void pf_cp4(void *dst, const void *src) {
    const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(d), "l"(src) : "memory");
}
static __device__ __forceinline__ uint32_t pf_h2(float a, float b) { return h2_bits(__floats2half2_rn(a, b)); }

template <int D> struct pf_layout {
    static constexpr int kRowBytes = 2 * D, kSeg = PF_BC * 2 * D;
    static constexpr int kStage = 2 * kSeg + 4 * PF_BC; /* K rows, V rows, positions */
};

/* Stage the key tile [kb, kb + PF_BC) of the list (page table entries from
 * pid0) into st; every thread of the block. Keys >= ntok: zeros. */
template <int D>
static __device__ __forceinline__ void pf_stage(uint8_t *st, const pf_kargs &a, const uint32_t *pid0, int kb, int ntok,
                                                int tid) {
    typedef pf_layout<D> Ly;
    constexpr int CPR = D / 8, TPK = PF_THREADS / PF_BC; /* 16-byte chunks per row, threads per key */
    static_assert(CPR % TPK == 0, "chunks per thread");
    const int j = tid / TPK, c0 = tid % TPK, kj = kb + j;
    uint8_t *sk = st + j * Ly::kRowBytes, *sv = sk + Ly::kSeg;
    if (kj < ntok) {
        const uint8_t *pg = kvl_cuda_page_addr(a.space, __ldg(pid0 + (kj >> a.logP)));
        const int r = kj & (a.P - 1);
        const uint8_t *gk = pg + a.koff + (size_t)r * Ly::kRowBytes, *gv = pg + a.voff + (size_t)r * Ly::kRowBytes;
#pragma unroll
        for (int c = c0; c < CPR; c += TPK) {
            const int sw = (c ^ (j & 7)) << 4;
            tc_cp16(sk + sw, gk + 16 * c);
            tc_cp16(sv + sw, gv + 16 * c);
        }
        if (c0 == 0) pf_cp4(st + 2 * Ly::kSeg + 4 * j, pg + 4 * r);
    } else {
        const uint4 z = make_uint4(0, 0, 0, 0);
#pragma unroll
        for (int c = c0; c < CPR; c += TPK) {
            const int sw = (c ^ (j & 7)) << 4;
            *reinterpret_cast<uint4 *>(sk + sw) = z;
            *reinterpret_cast<uint4 *>(sv + sw) = z;
        }
        if (c0 == 0) *reinterpret_cast<int *>(st + 2 * Ly::kSeg + 4 * j) = INT_MAX;
    }
}

template <int D> struct pf_warp {
    float o[D / 8][4]; /* O: n-tile dn = channels 8 dn .. 8 dn + 7 (C layout) */
    float m[2], l[2];  /* rows gq, gq + 8: running max (log2 domain) and this lane's partial sum */
    int qp[2], ln[2];  /* the rows' query positions and list lengths (pad rows: -1, 0) */
};

/* One key tile of stage st for this warp's 16 rows. */
template <int D, bool QLO>
static __device__ __forceinline__ void pf_tile(const uint8_t *st, int kb, const uint32_t (&qh)[D / 16][4],
                                               const uint32_t (&ql)[D / 16][4], pf_warp<D> &w, int lane) {
    typedef pf_layout<D> Ly;
    constexpr int NK = D / 16;
    const int tq = lane & 3, l7 = lane & 7;
    const uint8_t *sk = st, *sv = st + Ly::kSeg;
    const int *sp = reinterpret_cast<const int *>(st + 2 * Ly::kSeg);
    float s[PF_BC / 8][4];
#pragma unroll
    for (int nt = 0; nt < PF_BC / 8; nt++)
#pragma unroll
        for (int i = 0; i < 4; i++) s[nt][i] = 0.0f;
    /* S = Q K^T: ldmatrix x4 = (key n-tiles 2np, 2np + 1) x (chunks 2ks, 2ks + 1) */
    {
        const int kr = l7 + ((lane >> 4) << 3), kc = (lane >> 3) & 1;
#pragma unroll
        for (int ks = 0; ks < NK; ks++)
#pragma unroll
            for (int np = 0; np < PF_BC / 16; np++) {
                uint32_t b[4];
                tc_ldm4(b, sk + (16 * np + kr) * Ly::kRowBytes + (((2 * ks + kc) ^ l7) << 4));
                mma_16816(s[2 * np], qh[ks][0], qh[ks][1], qh[ks][2], qh[ks][3], b[0], b[1]);
                mma_16816(s[2 * np + 1], qh[ks][0], qh[ks][1], qh[ks][2], qh[ks][3], b[2], b[3]);
                if (QLO) {
                    mma_16816(s[2 * np], ql[ks][0], ql[ks][1], ql[ks][2], ql[ks][3], b[0], b[1]);
                    mma_16816(s[2 * np + 1], ql[ks][0], ql[ks][1], ql[ks][2], ql[ks][3], b[2], b[3]);
                }
            }
    }
    /* mask, online softmax (rows u = 0: gq, 1: gq + 8) */
#pragma unroll
    for (int u = 0; u < 2; u++) {
        float mx = -INFINITY;
#pragma unroll
        for (int nt = 0; nt < PF_BC / 8; nt++) {
            const int j = 8 * nt + 2 * tq;
            const int2 pp = *reinterpret_cast<const int2 *>(sp + j);
            const bool v0 = kb + j < w.ln[u] && pp.x <= w.qp[u], v1 = kb + j + 1 < w.ln[u] && pp.y <= w.qp[u];
            s[nt][2 * u] = v0 ? s[nt][2 * u] : -INFINITY;
            s[nt][2 * u + 1] = v1 ? s[nt][2 * u + 1] : -INFINITY;
            mx = fmaxf(mx, fmaxf(s[nt][2 * u], s[nt][2 * u + 1]));
        }
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float mn = fmaxf(w.m[u], mx);
        float alpha = 1.0f, ls = 0.0f;
        if (mn == -INFINITY) { /* nothing visible yet: p = 0 (ex2(-inf - -inf) would be NaN) */
#pragma unroll
            for (int nt = 0; nt < PF_BC / 8; nt++) s[nt][2 * u] = 0.0f, s[nt][2 * u + 1] = 0.0f;
        } else {
            alpha = pf_ex2(w.m[u] - mn); /* 0 when m was -inf */
#pragma unroll
            for (int nt = 0; nt < PF_BC / 8; nt++) {
                s[nt][2 * u] = pf_ex2(s[nt][2 * u] - mn);
                s[nt][2 * u + 1] = pf_ex2(s[nt][2 * u + 1] - mn);
                ls += s[nt][2 * u] + s[nt][2 * u + 1];
            }
        }
        w.m[u] = mn;
        w.l[u] = fmaf(w.l[u], alpha, ls);
#pragma unroll
        for (int dn = 0; dn < D / 8; dn++) w.o[dn][2 * u] *= alpha, w.o[dn][2 * u + 1] *= alpha;
    }
    /* O += P V: A = P (C fragments of n-tiles 2kk, 2kk + 1), B = V by ldmatrix.trans x4 =
     * (keys 16 kk .. +7, +8 .. +15) x (chunks 2dp, 2dp + 1) */
    {
        const int vr = l7 + (((lane >> 3) & 1) << 3), vc = lane >> 4;
#pragma unroll
        for (int kk = 0; kk < PF_BC / 16; kk++) {
            const uint32_t a0 = pf_h2(s[2 * kk][0], s[2 * kk][1]), a1 = pf_h2(s[2 * kk][2], s[2 * kk][3]);
            const uint32_t a2 = pf_h2(s[2 * kk + 1][0], s[2 * kk + 1][1]), a3 = pf_h2(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
            for (int dp = 0; dp < D / 16; dp++) {
                uint32_t b[4];
                tc_ldm4t(b, sv + (16 * kk + vr) * Ly::kRowBytes + (((2 * dp + vc) ^ l7) << 4));
                mma_16816(w.o[2 * dp], a0, a1, a2, a3, b[0], b[1]);
                mma_16816(w.o[2 * dp + 1], a0, a1, a2, a3, b[2], b[3]);
            }
        }
    }
}

template <int D, bool QLO>
__global__ void __launch_bounds__(PF_THREADS, 1) pf_kernel(const __grid_constant__ pf_kargs a) {
    typedef pf_layout<D> Ly;
    constexpr int NK = D / 16;
    extern __shared__ __align__(128) uint8_t pf_smem[];
    __shared__ int s_ntok;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, gq = lane >> 2, tq = lane & 3;
    const int h = blockIdx.y, e0 = a.tiles[2 * blockIdx.x], ne = a.tiles[2 * blockIdx.x + 1];
    const int G = a.G, Hkv = a.n_head_kv, n_head = Hkv * G;
    if (tid == 0) s_ntok = 0;
    __syncthreads();
    {
        int mylen = 0; /* the block's longest list */
        for (int i = tid; i < ne; i += PF_THREADS) mylen = max(mylen, a.list_len[(size_t)(e0 + i) * Hkv + h]);
        if (mylen > 0) atomicMax(&s_ntok, mylen);
    }
    pf_warp<D> w;
    size_t orow[2];
#pragma unroll
    for (int u = 0; u < 2; u++) {
        const int r = 16 * warp + gq + 8 * u, t = r / G, g = r - t * G;
        const bool valid = t < ne;
        const int e = e0 + (valid ? t : 0);
        w.qp[u] = valid ? a.qpos[e] : -1;
        w.ln[u] = valid ? a.list_len[(size_t)e * Hkv + h] : 0;
        orow[u] = valid ? ((size_t)e * n_head + h * G + g) * D : (size_t)-1;
        w.m[u] = -INFINITY, w.l[u] = 0.0f;
    }
#pragma unroll
    for (int dn = 0; dn < D / 8; dn++)
#pragma unroll
        for (int i = 0; i < 4; i++) w.o[dn][i] = 0.0f;
    /* Q fragments: a[u + 2 half] = row (gq + 8 u), channels 16 ks + 8 half + 2 tq, +1 */
    uint32_t qh[NK][4], ql[NK][4];
#pragma unroll
    for (int ks = 0; ks < NK; ks++)
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int u = i & 1, half = i >> 1;
            float2 v = make_float2(0.0f, 0.0f);
            if (orow[u] != (size_t)-1) v = __ldg(reinterpret_cast<const float2 *>(a.q + orow[u] + 16 * ks + 8 * half + 2 * tq));
            v.x *= a.qscale, v.y *= a.qscale;
            const __half2 hi = __floats2half2_rn(v.x, v.y);
            const float2 f = __half22float2(hi);
            qh[ks][i] = h2_bits(hi);
            ql[ks][i] = pf_h2(v.x - f.x, v.y - f.y);
        }
    int wlen = max(w.ln[0], w.ln[1]); /* the warp's longest row: tiles past it are skipped */
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) wlen = max(wlen, __shfl_xor_sync(0xffffffffu, wlen, o));
    __syncthreads();
    const int ntok = s_ntok, nt = (ntok + PF_BC - 1) / PF_BC;
    const uint32_t *pid0 = a.page_ids + a.list_off[(size_t)e0 * Hkv + h];
    if (nt > 0) pf_stage<D>(pf_smem, a, pid0, 0, ntok, tid);
    tc_cp_commit();
    for (int it = 0; it < nt; it++) {
        if (it + 1 < nt) pf_stage<D>(pf_smem + ((it + 1) & 1) * Ly::kStage, a, pid0, (it + 1) * PF_BC, ntok, tid);
        tc_cp_commit();
        tc_cp_wait<1>(); /* tile it landed (this thread's pieces) */
        __syncthreads(); /* everyone's pieces */
        const int kb = it * PF_BC;
        if (kb < wlen) pf_tile<D, QLO>(pf_smem + (it & 1) * Ly::kStage, kb, qh, ql, w, lane);
        __syncthreads(); /* the stage is refilled next iteration */
    }
    tc_cp_wait<0>();
#pragma unroll
    for (int u = 0; u < 2; u++) {
        float l = w.l[u];
        l += __shfl_xor_sync(0xffffffffu, l, 1);
        l += __shfl_xor_sync(0xffffffffu, l, 2);
        const float inv = l > 0.0f ? 1.0f / l : 0.0f;
        if (orow[u] == (size_t)-1) continue;
        float *op = a.out + orow[u] + 2 * tq;
#pragma unroll
        for (int dn = 0; dn < D / 8; dn++)
            *reinterpret_cast<float2 *>(op + 8 * dn) = make_float2(w.o[dn][2 * u] * inv, w.o[dn][2 * u + 1] * inv);
    }
}

/* ---- host side ------------------------------------------------------------------------- */

typedef void (*pf_fn)(pf_kargs);

struct kvl_cuda_prefill {
    const kvl_cuda_pool *pool;
    int n_head, n_head_kv, G, variant;
};

static pf_fn pf_pick(int D, int variant) {
    if (D == 64) return variant == 1 ? pf_kernel<64, false> : pf_kernel<64, true>;
    if (D == 128) return variant == 1 ? pf_kernel<128, false> : pf_kernel<128, true>;
    return NULL;
}
static size_t pf_smem_bytes(int D) { return D == 64 ? 2 * pf_layout<64>::kStage : 2 * pf_layout<128>::kStage; }

extern "C" int kvl_cuda_prefill_codec(const char *codec) { return codec && !strcmp(codec, "f16"); }

extern "C" kvl_status kvl_cuda_prefill_create(const kvl_cuda_pool *p, int n_head, int n_head_kv,
                                              kvl_cuda_prefill **out, kvl_err *err) {
    *out = NULL;
    if (!p || n_head < 1 || n_head_kv < 1 || n_head % n_head_kv || n_head / n_head_kv > 8)
        return kvl_err_set(err, KVL_ERR_ARG, "cuda prefill: invalid heads (%d over %d kv-heads; G 1..8)", n_head,
                           n_head_kv);
    if (p->codec != KVL_CUDA_CODEC_F16)
        return kvl_err_set(err, KVL_ERR_UNSUPPORTED, "cuda prefill: no prefill kernel for this KV codec (have: f16)");
    if (p->D != 64 && p->D != 128)
        return kvl_err_set(err, KVL_ERR_UNSUPPORTED, "cuda prefill: head_dim %d (have 64, 128)", p->D);
    for (int v = 0; v < 2; v++) {
        const cudaError_t e = cudaFuncSetAttribute(pf_pick(p->D, v), cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                   (int)pf_smem_bytes(p->D));
        if (e != cudaSuccess) return kvl_cuda_status(e, "cuda prefill: kernel attributes", err);
    }
    kvl_cuda_prefill *pf = (kvl_cuda_prefill *)calloc(1, sizeof *pf);
    if (!pf) return kvl_err_set(err, KVL_ERR_NOMEM, "cuda prefill: out of memory");
    pf->pool = p, pf->n_head = n_head, pf->n_head_kv = n_head_kv, pf->G = n_head / n_head_kv;
    *out = pf;
    return KVL_OK;
}

extern "C" void kvl_cuda_prefill_free(kvl_cuda_prefill *pf) { free(pf); }
extern "C" int kvl_cuda_prefill_tile_tokens(const kvl_cuda_prefill *pf) { return PF_ROWS / pf->G; }
extern "C" void kvl_cuda_prefill_set_variant(kvl_cuda_prefill *pf, int variant) { pf->variant = variant == 1; }

extern "C" int kvl_cuda_prefill_tiles(const int32_t *key, int n, int tile_tokens, int32_t *tiles) {
    int nt = 0;
    for (int i = 0; i < n;) {
        int j = i + 1;
        while (j < n && j - i < tile_tokens && key[j] == key[i]) j++;
        tiles[2 * nt] = i, tiles[2 * nt + 1] = j - i;
        nt++;
        i = j;
    }
    return nt;
}

extern "C" kvl_status kvl_cuda_prefill_run(kvl_cuda_prefill *pf, const kvl_cuda_prefill_args *x, void *stream,
                                           kvl_err *err) {
    if (x->n_tiles < 0 || x->n_tiles > 0x7fffffff / 2)
        return kvl_err_set(err, KVL_ERR_ARG, "cuda prefill: %d tiles", x->n_tiles);
    if (x->n_tiles == 0) return KVL_OK;
    const kvl_cuda_pool *p = pf->pool;
    pf_kargs ka;
    ka.space = p->space;
    ka.koff = (int)p->cls[0].koff, ka.voff = (int)p->cls[0].voff;
    ka.P = p->P, ka.logP = p->logP, ka.G = pf->G, ka.n_head_kv = pf->n_head_kv;
    ka.page_ids = x->page_ids, ka.list_off = x->list_off, ka.list_len = x->list_len, ka.qpos = x->qpos;
    ka.tiles = x->tiles, ka.q = x->q, ka.out = x->out;
    ka.qscale = x->scale * PF_LOG2E;
    const dim3 grid((unsigned)x->n_tiles, (unsigned)pf->n_head_kv);
    pf_pick(p->D, pf->variant)<<<grid, PF_THREADS, pf_smem_bytes(p->D), (cudaStream_t)stream>>>(ka);
    KVL_CUDA_TRY(cudaGetLastError(), "cuda prefill: kernel launch");
    return KVL_OK;
}
