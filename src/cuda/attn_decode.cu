/* Paged decode attention on the device (one query token per sequence, a
 * batch of sequences), reading kvlite's page layout with dequantization fused.
 * Reference: kvl_kv_attend / kvl_kv_attn_* in src/kv/attn.c (same function;
 * the order of floating-point sums differs, see tests/cuda/test_cuda.c).
 *
 * Work split (flash-decoding): list (sequence b, kv-head h) is cut into
 * splits of chunk_pages pages; block (split, h, b) computes for the G query
 * heads of h, over its rows, the scores (pass 1: each K row loaded once for
 * all G heads), the split's softmax (max m, sum l) in shared memory, and the
 * unnormalized value sums (pass 2: each V row loaded once for all G heads).
 * With one split it writes the normalized output; otherwise it writes a
 * partial record (m, l, acc[D]) per query head and split, and merge_kernel
 * (blocks of one query head x 32 dims, a programmatic dependent launch)
 * folds the records. kvl_cuda_attn_plan sizes the splits: one wave of
 * resident blocks when that is enough, else whole waves.
 *
 * Thread mapping: a thread owns 8 consecutive values (a chunk) of a row, D/8
 * threads a row (TPR), a warp 256/D rows per load; rows come in tiles of U
 * rows per thread, two tiles alternating so one tile's loads are in flight
 * while the other is used. Dot products are reduced over the TPR threads of
 * a row with a transposing butterfly: for G heads the first log2(G) exchange
 * steps each send half of the remaining head values, so a row costs
 * G - 1 + log2(TPR / G) shuffles instead of G log2(TPR) (5 instead of 16 for
 * G 4, D 128). Page ids become addresses once per page per block
 * (kvl_cuda_page_addr), not per row. */
#include <math.h>
#include <stdlib.h>

#include "cuda/codec_traits.cuh"
#include "cuda/cuda_util.cuh"
#include "cuda/page_space.cuh"

#define NWARPS 4
#define NTHREADS (NWARPS * 32)
#define MAX_G 8

template <int G> struct pow2_ceil { static constexpr int v = G <= 1 ? 1 : G <= 2 ? 2 : G <= 4 ? 4 : 8; };

/* v[GP]: this thread's partial dot products for heads 0..GP-1 (zero for
 * pad heads). Returns the full sum over the TPR threads of the row for head
 * *head (every thread gets one head; threads with lane % (TPR/GP) == 0 hold
 * distinct heads). */
template <int GP, int TPR>
static __device__ __forceinline__ float reduce_heads(float (&v)[GP], int lane, int *head) {
    static_assert(GP <= TPR, "more heads than threads per row");
    int h = 0;
    int w = GP;
#pragma unroll
    for (int mask = TPR / 2; mask >= 1; mask >>= 1) {
        if (w > 1) {
            const int half = w / 2;
            const bool up = (lane & mask) != 0;
#pragma unroll
            for (int i = 0; i < half; i++) {
                const float send = up ? v[i] : v[i + half];
                const float keep = up ? v[i + half] : v[i];
                v[i] = keep + __shfl_xor_sync(0xffffffffu, send, mask);
            }
            if (up) h += half;
            w = half;
        } else {
            v[0] += __shfl_xor_sync(0xffffffffu, v[0], mask);
        }
    }
    *head = h;
    return v[0];
}

/* Where a thread's rows live: the split's page ids (shared memory), the
 * segment offsets, and this thread's row slot and chunk. */
struct row_ctx {
    const uint8_t *const *pages; /* shared: byte addresses of the split's pages */
    int off, P, logP, ntok, rsub, c;
};

/* The rows of one tile: row j = j0 + u * RPI + rsub for u < U. Rows at or
 * past ntok load nothing (raw zero, pos past any query). */
template <class C, int U> struct tile {
    typename C::Raw raw[U];
    int pos[U];
    float rs[U];
};

template <class C, int D, int U, int RPI, bool POS, int H>
static __device__ __forceinline__ void load_tile(tile<C, U> &t, const row_ctx &x, int j0) {
#pragma unroll
    for (int u = 0; u < U; u++) {
        const int j = j0 + u * RPI + x.rsub;
        t.raw[u] = C::zero();
        t.pos[u] = 0x7fffffff;
        t.rs[u] = 1.0f;
        if (j < x.ntok) {
            const uint8_t *pg = x.pages[j >> x.logP];
            const int r = j & (x.P - 1);
            t.raw[u] = C::template load<H>(pg + x.off, x.P, D, r, x.c);
            if (POS) t.pos[u] = __ldg(reinterpret_cast<const int32_t *>(pg) + r);
            if (C::kRowScale) t.rs[u] = C::row_scale(pg + x.off, x.P, r);
        }
    }
}

/* Scores of a K tile for the G heads into s[g][j] (-inf where pos > qp). */
template <class C, int D, int G, int U, int RPI>
static __device__ __forceinline__ void score_tile(const tile<C, U> &t, const float (&qf)[G][8], float *s,
                                                  int chunk_tok, int j0, int rsub, int lane, int ntok, int qp) {
    constexpr int TPR = D / 8, GP = pow2_ceil<G>::v;
#pragma unroll
    for (int u = 0; u < U; u++) {
        float x[8];
        C::to_float(t.raw[u], x);
        float d[GP];
#pragma unroll
        for (int g = 0; g < GP; g++) {
            float a = 0.0f;
            if (g < G) {
#pragma unroll
                for (int e = 0; e < 8; e++) a = fmaf(qf[g < G ? g : 0][e], x[e], a);
            }
            d[g] = a;
        }
        int hd;
        const float dot = reduce_heads<GP, TPR>(d, lane, &hd);
        const int j = j0 + u * RPI + rsub;
        if (j < ntok && hd < G && (lane % (TPR / GP)) == 0)
            s[hd * chunk_tok + j] = t.pos[u] <= qp ? (C::kRowScale ? t.rs[u] * dot : dot) : -INFINITY;
    }
}

/* acc[g][e] += p[g][j] * row_scale_j * v_j[8c + e] over a V tile. */
template <class C, int G, int U, int RPI>
static __device__ __forceinline__ void accumulate_tile(const tile<C, U> &t, float (&acc)[G][8], const float *s,
                                                       int chunk_tok, int j0, int rsub, int ntok) {
#pragma unroll
    for (int u = 0; u < U; u++) {
        const int j = j0 + u * RPI + rsub;
        if (j < ntok) {
            float x[8];
            C::to_float(t.raw[u], x);
#pragma unroll
            for (int g = 0; g < G; g++) {
                const float w = C::kRowScale ? s[g * chunk_tok + j] * t.rs[u] : s[g * chunk_tok + j];
#pragma unroll
                for (int e = 0; e < 8; e++) acc[g][e] = fmaf(w, x[e], acc[g][e]);
            }
        }
    }
}

/* Block (split, h, b). Shared memory (dynamic): page addresses
 * [pid_slots / 2], then float s[G][chunk_tokens] (scores, then probabilities;
 * reused as red[NWARPS][G][D] for the final reduction).
 * part: [B][n_head][n_split][2 + D] (m, l, acc) when n_split > 1, else unused.
 * out: [B][n_head][D], written only when n_split == 1.
 * Both passes are software-pipelined: two tiles of U rows per thread
 * alternate, the next tile's loads issued before the current one is used
 * (2U loads of 16 or 8 bytes in flight per thread), and the first V tile is
 * loaded before the softmax. */
template <class KC, class VC, int D, int G, int U, int MINB, int HINT>
__global__ void __launch_bounds__(NTHREADS, MINB)
    decode_split_kernel(kvl_cuda_page_space space, int koff, int voff, int P, int logP,
                        const uint32_t *__restrict__ page_ids, const int32_t *__restrict__ list_off,
                        const int32_t *__restrict__ list_len, const int32_t *__restrict__ qpos,
                        const float *__restrict__ q, float scale, int n_head_kv, int chunk_pages, int n_split,
                        int pid_slots, float *__restrict__ out, float *__restrict__ part) {
    constexpr int TPR = D / 8, RPW = 32 / TPR, RPI = NWARPS * RPW;
    constexpr int UK = U, UV = U, SK = RPI * UK, SV = RPI * UV;
    extern __shared__ float smem[];
    __shared__ float sm_m[MAX_G], sm_l[MAX_G];
    const int split = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int n_head = n_head_kv * G, li = b * n_head_kv + h;
    const int chunk_tok = chunk_pages << logP, tok0 = split * chunk_tok;
    const int len = list_len[li];
    const int ntok = min(len - tok0, chunk_tok);
    const size_t rec = 2 + D;

    if (ntok <= 0) { /* this list ends before the split: nothing seen */
        for (int idx = tid; idx < G * D; idx += NTHREADS) {
            const int g = idx / D, d = idx % D;
            const size_t qh = (size_t)b * n_head + h * G + g;
            if (n_split == 1) {
                out[qh * D + d] = 0.0f;
            } else {
                float *rp = part + (qh * n_split + split) * rec;
                rp[2 + d] = 0.0f; /* read (times a zero weight) by the merge */
                if (d == 0) rp[0] = -INFINITY, rp[1] = 0.0f;
            }
        }
        return;
    }
    /* page id -> address once per page (kvl_cuda_page_addr), not per row */
    const uint8_t **pages = reinterpret_cast<const uint8_t **>(smem);
    float *s = smem + pid_slots;
    const int npages = (ntok + P - 1) >> logP;
    const uint32_t *lp = page_ids + list_off[li] + (size_t)split * chunk_pages;
    for (int i = tid; i < npages; i += NTHREADS) pages[i] = kvl_cuda_page_addr(space, lp[i]);

    const int c = lane % TPR, rsub = warp * RPW + lane / TPR;
    float qf[G][8];
#pragma unroll
    for (int g = 0; g < G; g++) {
        const float4 *qv = reinterpret_cast<const float4 *>(q + ((size_t)b * n_head + h * G + g) * D + c * 8);
        const float4 a = __ldg(qv), bb = __ldg(qv + 1);
        qf[g][0] = a.x * scale, qf[g][1] = a.y * scale, qf[g][2] = a.z * scale, qf[g][3] = a.w * scale;
        qf[g][4] = bb.x * scale, qf[g][5] = bb.y * scale, qf[g][6] = bb.z * scale, qf[g][7] = bb.w * scale;
    }
    const int qp = qpos[b];
    __syncthreads();
    const row_ctx xk = {pages, koff, P, logP, ntok, rsub, c};
    const row_ctx xv = {pages, voff, P, logP, ntok, rsub, c};

    /* pass 1: scores s[g][j] = row_scale * dot(q_g, x_j), -inf where pos > qpos */
    {
        tile<KC, UK> ta, tb;
        load_tile<KC, D, UK, RPI, true, HINT>(ta, xk, 0);
        for (int j0 = 0; j0 < ntok; j0 += 2 * SK) {
            load_tile<KC, D, UK, RPI, true, HINT>(tb, xk, j0 + SK);
            score_tile<KC, D, G, UK, RPI>(ta, qf, s, chunk_tok, j0, rsub, lane, ntok, qp);
            load_tile<KC, D, UK, RPI, true, HINT>(ta, xk, j0 + 2 * SK);
            score_tile<KC, D, G, UK, RPI>(tb, qf, s, chunk_tok, j0 + SK, rsub, lane, ntok, qp);
        }
    }
    tile<VC, UV> va, vb;
    load_tile<VC, D, UV, RPI, false, HINT>(va, xv, 0); /* in flight during the softmax */
    __syncthreads();

    /* softmax of the split, per head: one warp per head */
    for (int g = warp; g < G; g += NWARPS) {
        float *sg = s + g * chunk_tok;
        float m = -INFINITY;
        for (int j = lane; j < ntok; j += 32) m = fmaxf(m, sg[j]);
#pragma unroll
        for (int o = 16; o >= 1; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
        float l = 0.0f;
        for (int j = lane; j < ntok; j += 32) {
            const float p = m == -INFINITY ? 0.0f : __expf(sg[j] - m);
            sg[j] = p;
            l += p;
        }
#pragma unroll
        for (int o = 16; o >= 1; o >>= 1) l += __shfl_xor_sync(0xffffffffu, l, o);
        if (lane == 0) sm_m[g] = m, sm_l[g] = l;
    }
    __syncthreads();

    /* pass 2: acc[g][e] += p_g,j * row_scale_j * v_j[8c + e] */
    float acc[G][8];
#pragma unroll
    for (int g = 0; g < G; g++)
#pragma unroll
        for (int e = 0; e < 8; e++) acc[g][e] = 0.0f;
    for (int j0 = 0; j0 < ntok; j0 += 2 * SV) {
        load_tile<VC, D, UV, RPI, false, HINT>(vb, xv, j0 + SV);
        accumulate_tile<VC, G, UV, RPI>(va, acc, s, chunk_tok, j0, rsub, ntok);
        load_tile<VC, D, UV, RPI, false, HINT>(va, xv, j0 + 2 * SV);
        accumulate_tile<VC, G, UV, RPI>(vb, acc, s, chunk_tok, j0 + SV, rsub, ntok);
    }
    /* reduce over the rows of a warp (lanes with the same chunk), then over warps */
#pragma unroll
    for (int o = TPR; o < 32; o <<= 1)
#pragma unroll
        for (int g = 0; g < G; g++)
#pragma unroll
            for (int e = 0; e < 8; e++) acc[g][e] += __shfl_xor_sync(0xffffffffu, acc[g][e], o);
    __syncthreads(); /* s no longer read: reuse as red */
    float *red = s;
    if (lane < TPR)
#pragma unroll
        for (int g = 0; g < G; g++)
#pragma unroll
            for (int e = 0; e < 8; e++) red[(warp * G + g) * D + c * 8 + e] = acc[g][e];
    __syncthreads();
    for (int idx = tid; idx < G * D; idx += NTHREADS) {
        float v = 0.0f;
#pragma unroll
        for (int w = 0; w < NWARPS; w++) v += red[w * G * D + idx];
        const int g = idx / D, d = idx % D;
        const size_t qh = (size_t)b * n_head + h * G + g;
        const float l = sm_l[g];
        if (n_split == 1) {
            out[qh * D + d] = l > 0.0f ? v / l : 0.0f;
        } else {
            float *rp = part + (qh * n_split + split) * rec;
            rp[2 + d] = v;
            if (d == 0) rp[0] = sm_m[g], rp[1] = l;
        }
    }
}

#define MERGE_THREADS 256
#define MERGE_WARPS (MERGE_THREADS / 32)

/* Block (b * n_head + query head, 32 dims), MERGE_THREADS threads: fold the
 * n_split partial records (m_i, l_i, acc_i) of the query head for 32 of its
 * dims: M = max m_i, w_i = exp(m_i - M), out = sum w_i acc_i / sum w_i l_i.
 * Weights by all threads; then warp w sums the splits i = w mod MERGE_WARPS,
 * lane = dim (128-byte loads per split), and warp 0 adds the warps' sums.
 * Launched as a programmatic dependent of the split kernel: it may start
 * while the split kernel's last blocks run and waits for their results at
 * griddepcontrol.wait. Shared memory: w [n_split]. */
__global__ void __launch_bounds__(MERGE_THREADS)
    merge_kernel(const float *__restrict__ part, int n_split, int D, float *__restrict__ out) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
    extern __shared__ float w[];
    __shared__ float sh[MERGE_WARPS], red[MERGE_WARPS][32];
    const size_t rec = 2 + (size_t)D;
    const float *rp = part + (size_t)blockIdx.x * n_split * rec;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, d = blockIdx.y * 32 + lane;
    float m = -INFINITY;
    for (int i = tid; i < n_split; i += MERGE_THREADS) m = fmaxf(m, rp[i * rec]);
#pragma unroll
    for (int o = 16; o >= 1; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    if (lane == 0) sh[warp] = m;
    __syncthreads();
    float M = sh[0];
    for (int i = 1; i < MERGE_WARPS; i++) M = fmaxf(M, sh[i]);
    float l = 0.0f;
    for (int i = tid; i < n_split; i += MERGE_THREADS) {
        const float mi = rp[i * rec];
        const float wi = mi == -INFINITY ? 0.0f : __expf(mi - M);
        w[i] = wi;
        l = fmaf(wi, rp[i * rec + 1], l);
    }
#pragma unroll
    for (int o = 16; o >= 1; o >>= 1) l += __shfl_xor_sync(0xffffffffu, l, o);
    __syncthreads(); /* all of sh read above; w complete */
    if (lane == 0) sh[warp] = l;
    float a = 0.0f;
    if (d < D) {
#pragma unroll 4
        for (int i = warp; i < n_split; i += MERGE_WARPS) a = fmaf(w[i], rp[i * rec + 2 + d], a);
    }
    red[warp][lane] = a;
    __syncthreads();
    if (warp == 0 && d < D) {
        float S = 0.0f, A = 0.0f;
        for (int i = 0; i < MERGE_WARPS; i++) S += sh[i], A += red[i][lane];
        out[(size_t)blockIdx.x * D + d] = S > 0.0f ? A / S : 0.0f;
    }
}

/* ---- host side -------------------------------------------------------------------------- */

typedef void (*split_fn)(kvl_cuda_page_space, int, int, int, int, const uint32_t *, const int32_t *,
                         const int32_t *, const int32_t *, const float *, float, int, int, int, int, float *,
                         float *);

/* Rows per tile per thread: the codec's default, at most 4 with more than 4
 * heads (registers). Minimum resident blocks: 5 up to 4 heads (caps the
 * registers at 96 per thread; without the cap ptxas took 104-108 for f16
 * and 122 for int8 at D 128, G 4, one block per SM less, and the large shapes
 * ran 0-9% slower on the H200, 2026-12-02), no cap above (it would spill). */
template <class C, int G> struct default_unroll { static constexpr int v = G > 4 && C::kUnroll > 4 ? 4 : C::kUnroll; };
template <int G> struct default_minb { static constexpr int v = G <= 4 ? 5 : 1; };

template <class KC, class VC, int D> static split_fn pick_g(int G) {
    switch (G) {
    case 1: return decode_split_kernel<KC, VC, D, 1, default_unroll<KC, 1>::v, default_minb<1>::v, 0>;
    case 2: return decode_split_kernel<KC, VC, D, 2, default_unroll<KC, 2>::v, default_minb<2>::v, 0>;
    case 3: return decode_split_kernel<KC, VC, D, 3, default_unroll<KC, 3>::v, default_minb<3>::v, 0>;
    case 4: return decode_split_kernel<KC, VC, D, 4, default_unroll<KC, 4>::v, default_minb<4>::v, 0>;
    case 5: return decode_split_kernel<KC, VC, D, 5, default_unroll<KC, 5>::v, default_minb<5>::v, 0>;
    case 6: return decode_split_kernel<KC, VC, D, 6, default_unroll<KC, 6>::v, default_minb<6>::v, 0>;
    case 7: return decode_split_kernel<KC, VC, D, 7, default_unroll<KC, 7>::v, default_minb<7>::v, 0>;
    case 8: return decode_split_kernel<KC, VC, D, 8, default_unroll<KC, 8>::v, default_minb<8>::v, 0>;
    }
    return NULL;
}

/* Variants for tuning (tuning.variant 1..6), compiled for the Llama-3-8B
 * shape (D 128, G 4) only: (rows per tile, minimum resident blocks, load hints). */
template <class C> static split_fn pick_variant(int v) {
    switch (v) {
    case 1: return decode_split_kernel<C, C, 128, 4, 2, 1, 0>;
    case 2: return decode_split_kernel<C, C, 128, 4, 8, 1, 0>;
    case 3: return decode_split_kernel<C, C, 128, 4, 4, 1, 0>;
    case 4: return decode_split_kernel<C, C, 128, 4, 2, 6, 0>;
    case 5: return decode_split_kernel<C, C, 128, 4, 4, 5, 1>; /* default + L2::256B prefetch */
    case 6: return decode_split_kernel<C, C, 128, 4, 4, 5, 2>; /* default + L1::no_allocate */
    }
    return NULL;
}

template <class C> static split_fn pick(int D, int G, int variant) {
    if (variant) return D == 128 && G == 4 ? pick_variant<C>(variant) : NULL;
    return D == 64 ? pick_g<C, C, 64>(G) : D == 128 ? pick_g<C, C, 128>(G) : NULL;
}

struct kvl_cuda_attn {
    const kvl_cuda_pool *pool;
    int n_head, n_head_kv, G, max_seq, max_len;
    kvl_cuda_attn_tuning tun;
    split_fn fn;
    size_t smem_max;
    float *part;        /* device */
    size_t part_floats; /* capacity */
};

static size_t smem_bytes(const kvl_cuda_attn *a, int chunk_pages, int *pid_slots) {
    const int D = a->pool->D, slots = 2 * ((chunk_pages + 1) & ~1); /* 8-byte addresses, in floats */
    const size_t sc = (size_t)a->G * ((size_t)chunk_pages << a->pool->logP), red = (size_t)NWARPS * a->G * D;
    if (pid_slots) *pid_slots = slots;
    return sizeof(float) * ((size_t)slots + (sc > red ? sc : red));
}

extern "C" void kvl_cuda_attn_plan(const kvl_cuda_attn *a, int n_seq, int max_len, int *chunk_pages,
                                   int *n_split) {
    const int P = a->pool->P;
    const int max_pages = (max_len + P - 1) / P;
    const long lists = (long)n_seq * a->n_head_kv;
    /* floor: the grid stays within one wave of resident blocks */
    const long want = lists > 0 && a->tun.target_blocks >= lists ? a->tun.target_blocks / lists : 1;
    int cp = max_pages > 0 ? (int)((max_pages + want - 1) / want) : 1;
    const int cp_min = (a->tun.min_chunk_tokens + P - 1) / P, cp_max = a->tun.max_chunk_tokens / P;
    if (cp < cp_min) cp = cp_min;
    if (cp > cp_max) cp = cp_max;
    if (max_pages > 0 && cp > max_pages) cp = max_pages;
    if (cp < 1) cp = 1;
    int ns = max_pages > 0 ? (max_pages + cp - 1) / cp : 1;
    const long slots = a->tun.target_blocks > 0 ? a->tun.target_blocks : 1;
    if (lists * ns > slots) {
        /* more than one wave: the grid's last wave runs part-empty (3.1 waves
         * take as long as 4). Up to 4x more splits, take the fewest whose
         * waves are >= 90% full, else the fullest. */
        double best = 0;
        int best_ns = ns;
        for (int t = ns; t <= 4 * ns && t <= max_pages; t++) {
            const int tcp = (max_pages + t - 1) / t, tns = (max_pages + tcp - 1) / tcp;
            if (tcp < cp_min || tns != t) continue;
            const long blocks = lists * tns, waves = (blocks + slots - 1) / slots;
            const double eff = (double)blocks / (double)(waves * slots);
            if (eff > best + 1e-9) best = eff, best_ns = tns;
            if (eff >= 0.9) break;
        }
        ns = best_ns;
        cp = (max_pages + ns - 1) / ns;
    }
    *chunk_pages = cp;
    *n_split = ns;
}

extern "C" kvl_status kvl_cuda_attn_create(const kvl_cuda_pool *p, int n_head, int n_head_kv, int max_seq,
                                           int max_len, const kvl_cuda_attn_tuning *tuning, kvl_cuda_attn **out,
                                           kvl_err *err) {
    *out = NULL;
    if (!p || n_head_kv <= 0 || n_head <= 0 || n_head % n_head_kv || max_seq <= 0 || max_len < 0)
        return kvl_err_set(err, KVL_ERR_ARG, "cuda attn: invalid shape (n_head %d, n_head_kv %d, max_seq %d)", n_head,
                           n_head_kv, max_seq);
    const int G = n_head / n_head_kv;
    if (G > MAX_G)
        return kvl_err_set(err, KVL_ERR_UNSUPPORTED, "cuda attn: %d query heads per kv-head (kernels: 1..%d)", G,
                           MAX_G);
    kvl_cuda_attn *a = (kvl_cuda_attn *)calloc(1, sizeof *a);
    if (!a) return kvl_err_set(err, KVL_ERR_NOMEM, "cuda attn: out of memory");
    a->pool = p;
    a->n_head = n_head, a->n_head_kv = n_head_kv, a->G = G, a->max_seq = max_seq, a->max_len = max_len;
    if (tuning) a->tun = *tuning;
    if (a->tun.min_chunk_tokens <= 0) a->tun.min_chunk_tokens = 64;
    if (a->tun.max_chunk_tokens <= 0) a->tun.max_chunk_tokens = 2048;
    if (a->tun.max_chunk_tokens < p->P) a->tun.max_chunk_tokens = p->P;
    if (a->tun.min_chunk_tokens > a->tun.max_chunk_tokens) a->tun.min_chunk_tokens = a->tun.max_chunk_tokens;
    a->fn = p->ck == KVL_CUDA_CODEC_F16 ? pick<kvl_cuda_f16>(p->D, G, a->tun.variant)
                                        : pick<kvl_cuda_int8>(p->D, G, a->tun.variant);
    if (!a->fn) {
        free(a);
        return kvl_err_set(err, KVL_ERR_UNSUPPORTED, "cuda attn: no kernel variant %d for D %d, G %d",
                           tuning ? tuning->variant : 0, p->D, G);
    }
    a->smem_max = smem_bytes(a, a->tun.max_chunk_tokens / p->P, NULL);
    kvl_status s = KVL_OK;
    cudaError_t e = cudaFuncSetAttribute(a->fn, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)a->smem_max);
    if (e == cudaSuccess && a->tun.target_blocks <= 0) {
        int per_sm = 0;
        e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, a->fn, NTHREADS, a->smem_max);
        a->tun.target_blocks = (per_sm > 0 ? per_sm : 1) * p->n_sm;
    }
    if (e != cudaSuccess) {
        s = kvl_cuda_status(e, "cuda attn: kernel attributes", err);
        free(a);
        return s;
    }
    /* partial capacity: the largest n_seq * n_split over every call the
     * workspace allows (n_split <= max(want, 4 pages / cp_max), <= pages / cp_min) */
    const int P = p->P, pages = (max_len + P - 1) / P;
    const int cp_min = (a->tun.min_chunk_tokens + P - 1) / P, cp_max = a->tun.max_chunk_tokens / P;
    size_t cap = 0;
    for (int ns = 1; ns <= max_seq; ns++) {
        const long lists = (long)ns * n_head_kv, want = a->tun.target_blocks >= lists ? a->tun.target_blocks / lists : 1;
        long ns_split = 4L * ((pages + cp_max - 1) / cp_max); /* x4: the wave fit of the plan */
        if (want > ns_split) ns_split = want;
        const long by_min = (pages + cp_min - 1) / cp_min;
        if (ns_split > by_min) ns_split = by_min;
        if (ns_split > 1 && (size_t)ns * ns_split > cap) cap = (size_t)ns * ns_split;
    }
    a->part_floats = cap * n_head * (2 + (size_t)p->D);
    if (a->part_floats) {
        e = cudaMalloc(&a->part, a->part_floats * sizeof(float));
        if (e != cudaSuccess) {
            s = kvl_cuda_status(e, "cuda attn: partial buffer", err);
            free(a);
            return s;
        }
    }
    *out = a;
    return KVL_OK;
}

extern "C" void kvl_cuda_attn_free(kvl_cuda_attn *a) {
    if (!a) return;
    cudaFree(a->part);
    free(a);
}

extern "C" kvl_status kvl_cuda_attn_run(kvl_cuda_attn *a, const kvl_cuda_attn_args *x, void *stream,
                                        kvl_err *err) {
    if (x->n_seq <= 0 || x->n_seq > a->max_seq || x->max_len < 0 || x->max_len > a->max_len)
        return kvl_err_set(err, KVL_ERR_ARG, "cuda attn: n_seq %d / max_len %d outside the workspace (%d, %d)",
                           x->n_seq, x->max_len, a->max_seq, a->max_len);
    const kvl_cuda_pool *p = a->pool;
    int cp, ns, slots;
    kvl_cuda_attn_plan(a, x->n_seq, x->max_len, &cp, &ns);
    const size_t need = ns > 1 ? (size_t)x->n_seq * ns * a->n_head * (2 + (size_t)p->D) : 0;
    if (need > a->part_floats)
        return kvl_err_set(err, KVL_ERR_INTERNAL, "cuda attn: plan needs %zu partial floats, have %zu", need,
                           a->part_floats);
    if (ns > 1 && (size_t)ns * sizeof(float) > 40960)
        return kvl_err_set(err, KVL_ERR_UNSUPPORTED, "cuda attn: %d splits exceed the merge kernel's shared memory", ns);
    const size_t smem = smem_bytes(a, cp, &slots);
    cudaStream_t st = (cudaStream_t)stream;
    const dim3 grid((unsigned)ns, (unsigned)a->n_head_kv, (unsigned)x->n_seq);
    a->fn<<<grid, NTHREADS, smem, st>>>(p->space, (int)p->koff, (int)p->voff, p->P, p->logP, x->page_ids, x->list_off,
                                        x->list_len, x->qpos, x->q, x->scale, a->n_head_kv, cp, ns, slots, x->out,
                                        a->part);
    KVL_CUDA_TRY(cudaGetLastError(), "cuda attn: split kernel launch");
    if (ns > 1 && !a->tun.skip_merge) {
        /* programmatic dependent launch: the merge grid is scheduled as the
         * split kernel's blocks exit and waits for its results in-kernel */
        cudaLaunchConfig_t lc = {};
        cudaLaunchAttribute at[1];
        at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
        at[0].val.programmaticStreamSerializationAllowed = 1;
        lc.gridDim = dim3((unsigned)(x->n_seq * a->n_head), (unsigned)((p->D + 31) / 32));
        lc.blockDim = dim3(MERGE_THREADS);
        lc.dynamicSmemBytes = sizeof(float) * (size_t)ns;
        lc.stream = st;
        lc.attrs = at;
        lc.numAttrs = 1;
        KVL_CUDA_TRY(cudaLaunchKernelEx(&lc, merge_kernel, (const float *)a->part, ns, p->D, x->out),
                     "cuda attn: merge kernel launch");
    }
    return KVL_OK;
}
