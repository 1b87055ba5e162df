/* The paged decode attention kernel (internal): templates instantiated per
 * codec in attn_<codec>.cu, launched by attn_decode.cu.
 *
 * Work split (flash-decoding): list (sequence b, kv-head h) is cut into
 * splits of chunk_pages pages; block (split, h, b) computes for the G query
 * heads of h, over its rows, the scores (pass 1: each K row loaded once for
 * all G heads), the split's softmax (max m, sum l) in shared memory, and the
 * unnormalized value sums (pass 2: each V row loaded once for all G heads).
 * With one split it writes the normalized output; otherwise it writes a
 * partial record (m, l, acc[D]) per query head and split for the merge.
 *
 * Thread mapping: a thread owns a chunk of 8 values of a row (codec_traits.cuh),
 * D/8 threads a row (TPR), a warp 256/D rows per load; rows come in tiles
 * of U rows per thread, two tiles alternating so one tile's loads are in
 * flight while the other is used. Dot products are reduced over the TPR
 * threads of a row with a transposing butterfly: for G heads the first
 * log2(G) exchange steps each send half of the remaining head values, so a
 * row costs G - 1 + log2(TPR / G) shuffles instead of G log2(TPR). Page ids
 * become addresses once per page per block (kvl_cuda_page_addr), not per row.
 *
 * Codec pairs (CP): per-token codecs read K and V rows through traits
 * (kvl_pair<K, V>). Sealing codecs (KIVI, kvl_pair_kivi<BITS>) have lists
 * whose leading pages are sealed (class sealed_cls) and the rest open f16
 * pages (the residual window): the block finds the sealed prefix of its
 * split from the class bits of the page ids, scores the sealed rows with the
 * KIVI key trait and the open rows with the f16 trait (same channel order,
 * so one set of query registers), and sums the sealed values with kivi_v
 * (a thread owns the 32-byte code chunk of 8 channels x F tokens: per-token
 * parameters make the values' zero points one product per token and head)
 * and the open ones with the f16 trait. A sealed page after an open one in
 * a split breaks the layout's invariant: the block writes NaN. */
#ifndef KVL_CUDA_ATTN_KERNEL_CUH
#define KVL_CUDA_ATTN_KERNEL_CUH

#include <math.h>

#include "cuda/codec_traits.cuh"
#include "cuda/page_space.cuh"

#define NWARPS 4
#define NTHREADS (NWARPS * 32)
#define MAX_G 8

/* Kernel arguments (by value). */
struct kvl_cuda_kargs {
    kvl_cuda_page_space space;
    int koff, voff;   /* segment offsets of the codec's pages (the sealed class for sealing codecs) */
    int okoff, ovoff; /* of the open (f16) class of a sealing codec */
    int sealed_cls;   /* class of sealed pages (sealing codecs) */
    int P, logP;
    const uint32_t *page_ids;
    const int32_t *list_off, *list_len, *qpos;
    const float *q;
    float scale;
    int n_head_kv, chunk_pages, n_split, pid_slots;
    float *out, *part;
    /* statistics instantiations only (ST, attn_stats.cu; unused by the
     * default kernels): the scaled score of each (query head, list row)
     * into sc [B][n_head][sc_stride], the split's (m, l) per query head
     * into ml [B][n_head][n_split][2] */
    float *sc, *ml;
    int sc_stride;
};

typedef void (*kvl_cuda_split_fn)(kvl_cuda_kargs);

/* MINB: minimum resident blocks up to 4 heads (default_minb); TC: the
 * tensor-core key scores where the key trait has them (kMMA). */
template <class K_, class V_, int MINB = 5, bool TC = true> struct kvl_pair {
    static constexpr int kMinB = MINB;
    static constexpr bool kTensorCores = TC;
    typedef K_ K;
    typedef V_ V;
    typedef K_ OK; /* unused */
    typedef V_ OV;
    static constexpr bool kSealed = false;
    static constexpr int kBits = 0;
    static constexpr int kTileRows = 16;
};
/* PMIN: the smallest page size the kernel takes (sealed key tiles hold
 * PMIN rows, so they stay within a page). */
template <int BITS, int MINB = 5, int PMIN = 16> struct kvl_pair_kivi {
    static constexpr int kMinB = MINB;
    static constexpr int kTileRows = PMIN;
    static constexpr bool kTensorCores = false;
    typedef kvl_cuda_kivi_k<BITS> K;
    typedef kvl_cuda_f16p<kvl_cuda_kivi_k<BITS>::PERM> OK; /* open keys, in the sealed keys' channel order */
    typedef kvl_cuda_f16 OV;                                /* open values; sealed values: kivi_v (natural order) */
    typedef kvl_cuda_f16 V;
    static constexpr bool kSealed = true;
    static constexpr int kBits = BITS;
};

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

/* A split past the end of its list saw no rows: the output of its G query
 * heads is zero (one split), or its partial record is (m -inf, l 0, acc 0),
 * which the merge weighs by zero. Called by every thread of the block. */
template <int D, int G, int NT = NTHREADS> /* NT: the block's threads */
static __device__ __forceinline__ void write_empty_split(const kvl_cuda_kargs &a, int b, int h, int split, int n_head,
                                                         int tid) {
    const size_t rec = 2 + D;
    for (int idx = tid; idx < G * D; idx += NT) {
        const int g = idx / D, d = idx % D;
        const size_t qh = (size_t)b * n_head + h * G + g;
        if (a.n_split == 1) {
            a.out[qh * D + d] = 0.0f;
        } else {
            float *rp = a.part + (qh * a.n_split + split) * rec;
            rp[2 + d] = 0.0f; /* read (times a zero weight) by the merge */
            if (d == 0) rp[0] = -INFINITY, rp[1] = 0.0f;
        }
    }
}

/* Statistics instantiations (ST): a split past its list's end records
 * (m, l) = (-inf, 0) for its G query heads. */
template <int G>
static __device__ __forceinline__ void stats_empty_split(const kvl_cuda_kargs &a, int b, int h, int split, int n_head,
                                                         int tid) {
    if (tid < G) {
        float *r = a.ml + (((size_t)b * n_head + h * G + tid) * a.n_split + split) * 2;
        r[0] = -INFINITY, r[1] = 0.0f;
    }
}

/* Where a thread's rows live: the split's page addresses (shared memory),
 * the segment offset, rows [0, ntok) addressable, and this thread's row
 * slot and chunk. */
struct row_ctx {
    const uint8_t *const *pages;
    int off, P, logP, ntok, rsub, c;
};

/* The rows of one tile: row j = j0 + u * RPI + rsub for u < U. Rows at or
 * past ntok load nothing (raw zero, pos past any query). */
template <class C, int U> struct tile {
    typename C::Raw raw[U];
    typename C::PageRaw pr;
    int pos[U];
    float rs[U];
};

template <class C, int D, int U, int RPI, bool POS, int H>
static __device__ __forceinline__ void load_tile(tile<C, U> &t, const row_ctx &x, int j0) {
    if (C::kPage && j0 < x.ntok) t.pr = C::template load_page<H>(x.pages[j0 >> x.logP] + x.off, x.P, D, x.c);
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
                                                  int chunk_tok, int j0, const row_ctx &x, int lane, int qp) {
    constexpr int TPR = D / 8, GP = pow2_ceil<G>::v;
    if (j0 >= x.ntok) return; /* uniform over the block */
    const typename C::Page pg = C::decode_page(t.pr);
#pragma unroll
    for (int u = 0; u < U; u++) {
        float xv[8], sc;
        C::to_float(t.raw[u], pg, x.c, xv, sc);
        float d[GP];
#pragma unroll
        for (int g = 0; g < GP; g++) {
            float a = 0.0f;
            if (g < G) {
#pragma unroll
                for (int e = 0; e < 8; e++) a = fmaf(qf[g < G ? g : 0][e], xv[e], a);
                if (C::kChunkScale) a *= sc;
            }
            d[g] = a;
        }
        int hd;
        const float dot = reduce_heads<GP, TPR>(d, lane, &hd);
        const int j = j0 + u * RPI + x.rsub;
        if (j < x.ntok && hd < G && (lane % (TPR / GP)) == 0)
            s[hd * chunk_tok + j] = t.pos[u] <= qp ? (C::kRowScale ? t.rs[u] * dot : dot) : -INFINITY;
    }
}

/* Scores of rows [j_begin, x.ntok) (j_begin: a multiple of the tile's rows
 * for page-parameter codecs). */
template <class C, int D, int G, int U, int RPI, int H>
static __device__ __forceinline__ void score_rows(const row_ctx &x, int jb, const float (&qf)[G][8], float *s,
                                                  int chunk_tok, int lane, int qp) {
    constexpr int SK = RPI * U;
    tile<C, U> ta, tb;
    load_tile<C, D, U, RPI, true, H>(ta, x, jb);
    for (int j0 = jb; j0 < x.ntok; j0 += 2 * SK) {
        load_tile<C, D, U, RPI, true, H>(tb, x, j0 + SK);
        score_tile<C, D, G, U, RPI>(ta, qf, s, chunk_tok, j0, x, lane, qp);
        load_tile<C, D, U, RPI, true, H>(ta, x, j0 + 2 * SK);
        score_tile<C, D, G, U, RPI>(tb, qf, s, chunk_tok, j0 + SK, x, lane, qp);
    }
}

/* ---- int4z key scores on the tensor cores --------------------------------------------
 *
 * mma.sync m16n8k16 (f16 inputs, f32 accumulation): A = 16 tokens x 16
 * channels of c - z (exact f16 integers, |c - z| < 2^8), B = 16 channels x 8
 * columns: the scaled query of the G <= 4 heads split into two f16 halves,
 * q_hi = f16(q) in columns 0..3 and q_lo = f16(q - q_hi) in columns 4..7
 * (q_hi + q_lo carries q to ~2^-22, so the products and f32 sums keep the
 * fp32 reference's accuracy). Per 32-channel group g two k-steps (low
 * nibbles = channels 0..15, high nibbles = 16..31) give the group's dot,
 * scaled by the group's e5m3 scale of each token and summed; then hi + lo.
 * The k order inside a step is permuted so that lane t's columns 2t, 2t+1,
 * 2t+8, 2t+9 are the code bytes 4t..4t+3 of a row: one 4-byte load per row,
 * group and lane. Warp w scores the 16-row tiles w, w + NWARPS, ...; a tile
 * lies in one page (P is a multiple of 16); rows past ntok are computed on
 * whatever the page holds and not written. Two tiles alternate: the next
 * tile's loads are issued before the current one's math. */
static __device__ __forceinline__ void mma_16816(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                                 uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
                 "{%0, %1, %2, %3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
static __device__ __forceinline__ uint32_t h2_bits(__half2 h) {
    uint32_t u;
    memcpy(&u, &h, 4);
    return u;
}
/* (1024 + c0, 1024 + c1) - (1024 + z, 1024 + z) as f16 pairs: c - z, exact */
static __device__ __forceinline__ uint32_t i4_pair(uint32_t m, uint32_t sel, __half2 zz) {
    uint32_t u = __byte_perm(m, 0x6464u, sel);
    __half2 h;
    memcpy(&h, &u, 4);
    return h2_bits(__hsub2(h, zz));
}

template <int D> struct i4_tile {
    uint32_t w[2][D / 32]; /* code words of rows r, r + 8 per group */
    uint32_t p[2][D / 32]; /* (scale, zero point) of rows r, r + 8 per group */
    int pos[2];
};

template <int D>
static __device__ __forceinline__ void i4_load(i4_tile<D> &t, const uint8_t *const *pages, int off, int P, int logP,
                                               int ntok, int j0, int lane) {
    if (j0 >= ntok) return;
    constexpr int RB = D / 16 + D / 2;
    const uint8_t *pg = pages[j0 >> logP];
    const int r = (j0 & (P - 1)) + (lane >> 2), tq = lane & 3;
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const uint8_t *row = pg + off + (size_t)(r + 8 * h) * RB;
#pragma unroll
        for (int g = 0; g < D / 32; g++) {
            t.w[h][g] = kvl_cuda_ld4(row + D / 16 + 16 * g + 4 * tq);
            t.p[h][g] = kvl_cuda_ld2(row + 2 * g);
        }
        t.pos[h] = __ldg(reinterpret_cast<const int32_t *>(pg) + r + 8 * h);
    }
}

template <int D, int G>
static __device__ __forceinline__ void i4_score(const i4_tile<D> &t, const uint32_t (&bq)[D / 32][2][2], float *s,
                                                int chunk_tok, int ntok, int j0, int lane, int qp) {
    if (j0 >= ntok) return; /* uniform over the warp */
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
    for (int g = 0; g < D / 32; g++) {
        float sc[2];
        __half2 zz[2];
#pragma unroll
        for (int h = 0; h < 2; h++) {
            sc[h] = kvl_cuda_e5m3(t.p[h][g]);
            zz[h] = __float2half2_rn(1024.0f + (float)(int8_t)(uint8_t)(t.p[h][g] >> 8));
        }
        float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
        for (int ks = 0; ks < 2; ks++) {
            const uint32_t m0 = ks ? (t.w[0][g] >> 4) & 0x0F0F0F0Fu : t.w[0][g] & 0x0F0F0F0Fu;
            const uint32_t m1 = ks ? (t.w[1][g] >> 4) & 0x0F0F0F0Fu : t.w[1][g] & 0x0F0F0F0Fu;
            mma_16816(d, i4_pair(m0, 0x5140u, zz[0]), i4_pair(m1, 0x5140u, zz[1]), i4_pair(m0, 0x5342u, zz[0]),
                      i4_pair(m1, 0x5342u, zz[1]), bq[g][ks][0], bq[g][ks][1]);
        }
        acc[0] = fmaf(sc[0], d[0], acc[0]);
        acc[1] = fmaf(sc[0], d[1], acc[1]);
        acc[2] = fmaf(sc[1], d[2], acc[2]);
        acc[3] = fmaf(sc[1], d[3], acc[3]);
    }
    /* columns 2t, 2t + 1: t < 2 the q_hi part of heads 2t, 2t + 1, t >= 2 the q_lo part */
#pragma unroll
    for (int i = 0; i < 4; i++) acc[i] += __shfl_xor_sync(0xffffffffu, acc[i], 2);
    const int tq = lane & 3;
    if (tq < 2) {
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int hd = 2 * tq + (i & 1), h = i >> 1, j = j0 + (lane >> 2) + 8 * h;
            if (hd < G && j < ntok) s[hd * chunk_tok + j] = t.pos[h] <= qp ? acc[i] : -INFINITY;
        }
    }
}

/* Scores of rows [0, ntok) of int4z keys; q: the block's query heads (global). */
template <int D, int G>
static __device__ __forceinline__ void score_rows_mma(const uint8_t *const *pages, int off, int P, int logP, int ntok,
                                                      const float *q, float scale, float *s, int chunk_tok, int warp,
                                                      int lane, int qp) {
    static_assert(G <= 4, "tensor-core scores: at most 4 heads (q_hi and q_lo fill the 8 columns)");
    /* B fragments: column n = lane / 4 (head n % 4, hi for n < 4, lo else), rows
     * k = 2t, 2t + 1 (b0) and 2t + 8, 2t + 9 (b1) = channels 32g + 16ks + 4t + {0, 1} / {2, 3} */
    uint32_t bq[D / 32][2][2];
    {
        const int n = lane >> 2, hd = n & 3, tq = lane & 3;
        const bool lo = n >= 4;
#pragma unroll
        for (int g = 0; g < D / 32; g++)
#pragma unroll
            for (int ks = 0; ks < 2; ks++)
#pragma unroll
                for (int i = 0; i < 2; i++) {
                    float v[2] = {0.0f, 0.0f};
                    if (hd < G)
#pragma unroll
                        for (int e = 0; e < 2; e++) {
                            const float x = __ldg(q + (size_t)hd * D + 32 * g + 16 * ks + 4 * tq + 2 * i + e) * scale;
                            const float xh = __half2float(__float2half_rn(x));
                            v[e] = lo ? x - xh : x;
                        }
                    bq[g][ks][i] = h2_bits(__floats2half2_rn(v[0], v[1]));
                }
    }
    i4_tile<D> ta, tb;
    int j0 = 16 * warp;
    i4_load<D>(ta, pages, off, P, logP, ntok, j0, lane);
    for (; j0 < ntok; j0 += 32 * NWARPS) {
        i4_load<D>(tb, pages, off, P, logP, ntok, j0 + 16 * NWARPS, lane);
        i4_score<D, G>(ta, bq, s, chunk_tok, ntok, j0, lane, qp);
        i4_load<D>(ta, pages, off, P, logP, ntok, j0 + 32 * NWARPS, lane);
        i4_score<D, G>(tb, bq, s, chunk_tok, ntok, j0 + 16 * NWARPS, lane, qp);
    }
}

/* acc[g][e] += p[g][j] * scale * v_j[chan(c, e)] over a V tile. */
template <class C, int G, int U, int RPI>
static __device__ __forceinline__ void accumulate_tile(const tile<C, U> &t, float (&acc)[G][8], const float *s,
                                                       int chunk_tok, int j0, const row_ctx &x) {
    const typename C::Page pg = C::decode_page(t.pr);
#pragma unroll
    for (int u = 0; u < U; u++) {
        const int j = j0 + u * RPI + x.rsub;
        if (j < x.ntok) {
            float xv[8], sc;
            C::to_float(t.raw[u], pg, x.c, xv, sc);
#pragma unroll
            for (int g = 0; g < G; g++) {
                float w = s[g * chunk_tok + j];
                if (C::kRowScale) w *= t.rs[u];
                if (C::kChunkScale) w *= sc;
#pragma unroll
                for (int e = 0; e < 8; e++) acc[g][e] = fmaf(w, xv[e], acc[g][e]);
            }
        }
    }
}

template <class C, int D, int G, int U, int RPI, int H>
static __device__ __forceinline__ void accumulate_rows(tile<C, U> &va, tile<C, U> &vb, const row_ctx &x, int jb,
                                                       float (&acc)[G][8], const float *s, int chunk_tok) {
    constexpr int SV = RPI * U;
    for (int j0 = jb; j0 < x.ntok; j0 += 2 * SV) {
        load_tile<C, D, U, RPI, false, H>(vb, x, j0 + SV);
        accumulate_tile<C, G, U, RPI>(va, acc, s, chunk_tok, j0, x);
        load_tile<C, D, U, RPI, false, H>(va, x, j0 + 2 * SV);
        accumulate_tile<C, G, U, RPI>(vb, acc, s, chunk_tok, j0 + SV, x);
    }
}

/* Sealed KIVI values (codec_kivi.h): V codes in 32-byte chunks (channel block
 * kb of 8, token chunk tc of F = 32 / BITS tokens), lane word k = channel
 * 8 kb + k, slot s field f = token F tc + 2f + s; then per (32-channel group,
 * token) e5m3 scales s8[NG][P] and int8 zero points z8[NG][P]: value =
 * s (c - z). Thread (chunk c, row slot rsub) reads the chunks (c, T) of the
 * sealed rows [0, nsT), T = rsub, rsub + RPI, ...: 8 channels (its own, as
 * the f16 trait's chunk c) x F tokens. With w = p s per token and head,
 * acc[g][k] += w c and bz[g] += w z (subtracted from all 8 channels at the
 * end): one FMA per code and head. */
template <int BITS, int G, int D, int RPI>
static __device__ __forceinline__ void kivi_v(const uint8_t *const *pages, int voff, int P, int logP, int nsT,
                                              const float *s, int chunk_tok, int c, int rsub, float (&acc)[G][8],
                                              float (&bz)[G]) {
    constexpr int LF = BITS == 4 ? 3 : 4, F = 1 << LF, STEPS = BITS == 4 ? 2 : 4, NG = D / 32;
    const int ntc = P >> LF, nch = nsT >> LF, grp = c >> 2;
    const size_t cb = (size_t)D * P * BITS / 8;
    for (int T = rsub; T < nch; T += RPI) {
        const int j = T << LF, i0 = j & (P - 1);
        const uint8_t *seg = pages[j >> logP] + voff;
        const uint4 *chp = reinterpret_cast<const uint4 *>(seg + ((size_t)c * ntc + (i0 >> LF)) * 32);
        const uint4 c0 = kvl_cuda_ld16<0>(chp), c1 = kvl_cuda_ld16<0>(chp + 1);
        const uint32_t wd[8] = {c0.x, c0.y, c0.z, c0.w, c1.x, c1.y, c1.z, c1.w};
        const uint8_t *ps = seg + cb + (size_t)grp * P + i0, *pz = ps + (size_t)NG * P;
        uint32_t sw[F / 4], zw[F / 4];
        if constexpr (F == 8) {
            const uint2 a = kvl_cuda_ld8<0>(ps), b = kvl_cuda_ld8<0>(pz);
            sw[0] = a.x, sw[1] = a.y, zw[0] = b.x, zw[1] = b.y;
        } else {
            const uint4 a = kvl_cuda_ld16<0>(ps), b = kvl_cuda_ld16<0>(pz);
            sw[0] = a.x, sw[1] = a.y, sw[2] = a.z, sw[3] = a.w;
            zw[0] = b.x, zw[1] = b.y, zw[2] = b.z, zw[3] = b.w;
        }
        const float *sj = s + j;
#pragma unroll
        for (int m = 0; m < STEPS; m++) {
            /* the 4 tokens of step m: 4-bit 2m + {0, 4, 1, 5}; 2-bit 2m + {0, 8, 1, 9} */
            float w[G][4];
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const int t = 2 * m + (BITS == 4 ? (i == 1 ? 4 : i == 2 ? 1 : i == 3 ? 5 : 0)
                                                 : (i == 1 ? 8 : i == 2 ? 1 : i == 3 ? 9 : 0));
                const float sc = kvl_cuda_e5m3(sw[t >> 2] >> (8 * (t & 3)));
                const float zf = (float)(int8_t)(uint8_t)(zw[t >> 2] >> (8 * (t & 3)));
#pragma unroll
                for (int g = 0; g < G; g++) {
                    w[g][i] = sj[g * chunk_tok + t] * sc;
                    bz[g] = fmaf(w[g][i], zf, bz[g]);
                }
            }
#pragma unroll
            for (int k = 0; k < 8; k++) {
                const uint32_t b = BITS == 4 ? (wd[k] >> (4 * m)) & 0x0F0F0F0Fu : (wd[k] >> (2 * m)) & 0x03030303u;
                const float c0f = kvl_cuda_b2f<0>(b) - 8388608.0f, c1f = kvl_cuda_b2f<1>(b) - 8388608.0f;
                const float c2f = kvl_cuda_b2f<2>(b) - 8388608.0f, c3f = kvl_cuda_b2f<3>(b) - 8388608.0f;
#pragma unroll
                for (int g = 0; g < G; g++) {
                    float a = acc[g][k];
                    a = fmaf(w[g][0], c0f, a);
                    a = fmaf(w[g][1], c1f, a);
                    a = fmaf(w[g][2], c2f, a);
                    a = fmaf(w[g][3], c3f, a);
                    acc[g][k] = a;
                }
            }
        }
    }
}

/* Block (split, h, b). Shared memory (dynamic): page addresses
 * [pid_slots / 2], then float s[G][chunk_tokens] (scores, then probabilities;
 * reused as red[NWARPS][G][D] for the final reduction).
 * part: [B][n_head][n_split][2 + D] (m, l, acc) when n_split > 1, else unused.
 * out: [B][n_head][D], written only when n_split == 1.
 * ST (statistics instantiations, attn_stats_core.cu): also the scores into
 * a.sc and the split's (m, l) into a.ml (kvl_cuda_kargs). */
template <class CP, int D, int G, int U, int MINB, int HINT, bool ST = false>
__global__ void __launch_bounds__(NTHREADS, MINB) decode_split_kernel(const __grid_constant__ kvl_cuda_kargs a) {
    typedef typename CP::K KC;
    typedef typename CP::V VC;
    constexpr int TPR = D / 8, RPW = 32 / TPR, RPI = NWARPS * RPW;
    /* page-parameter keys: a tile of kTileRows rows (<= P), so within a page */
    constexpr int UK = KC::kPage ? (CP::kTileRows / RPI > 0 ? CP::kTileRows / RPI : 1) : U;
    static_assert(!KC::kPage || RPI * UK <= CP::kTileRows, "a tile of page-parameter rows must fit in a page");
    extern __shared__ float smem[];
    __shared__ float sm_m[MAX_G], sm_l[MAX_G];
    __shared__ int sm_nsp, sm_bad;
    const int split = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int n_head = a.n_head_kv * G, li = b * a.n_head_kv + h;
    const int logP = a.logP, P = a.P;
    const int chunk_tok = a.chunk_pages << logP, tok0 = split * chunk_tok;
    const int len = a.list_len[li];
    const int ntok = min(len - tok0, chunk_tok);
    const size_t rec = 2 + D;

    if (ntok <= 0) { /* this list ends before the split: nothing seen */
        if constexpr (ST) stats_empty_split<G>(a, b, h, split, n_head, tid);
        write_empty_split<D, G>(a, b, h, split, n_head, tid);
        return;
    }
    /* page id -> address once per page (kvl_cuda_page_addr), not per row */
    const uint8_t **pages = reinterpret_cast<const uint8_t **>(smem);
    float *s = smem + a.pid_slots;
    const int npages = (ntok + P - 1) >> logP;
    const uint32_t *lp = a.page_ids + a.list_off[li] + (size_t)split * a.chunk_pages;
    if (CP::kSealed && tid == 0) sm_nsp = 0, sm_bad = 0;
    if (CP::kSealed) __syncthreads();
    for (int i = tid; i < npages; i += NTHREADS) {
        const uint32_t id = lp[i];
        pages[i] = kvl_cuda_page_addr(a.space, id);
        if (CP::kSealed) {
            /* the sealed prefix ends after page i when i is sealed and i + 1 is not */
            const bool si = (int)(id >> KVL_CUDA_CLASS_SHIFT) == a.sealed_cls;
            const bool sn = i + 1 < npages && (int)(lp[i + 1] >> KVL_CUDA_CLASS_SHIFT) == a.sealed_cls;
            if (si && !sn) sm_nsp = i + 1;
            if (!si && sn) sm_bad = 1;
        }
    }

    const int c = lane % TPR, rsub = warp * RPW + lane / TPR;
    float qf[G][8];
#pragma unroll
    for (int g = 0; g < G; g++) {
        const float *qg = a.q + ((size_t)b * n_head + h * G + g) * D;
#pragma unroll
        for (int e = 0; e < 8; e++) qf[g][e] = __ldg(qg + KC::chan(c, e)) * a.scale;
    }
    const int qp = a.qpos[b];
    __syncthreads();
    /* rows [0, nsT) sealed, [nsT, ntok) open (sealing codecs); all rows otherwise */
    const int nsT = CP::kSealed ? min(sm_nsp << logP, ntok) : ntok;
    const row_ctx xk = {pages, a.koff, P, logP, nsT, rsub, c};
    const row_ctx xv = {pages, a.voff, P, logP, nsT, rsub, c};

    /* pass 1: scores s[g][j] = scale * dot(q_g, x_j), -inf where pos > qpos */
    if constexpr (KC::kMMA && G <= 4 && CP::kTensorCores)
        score_rows_mma<D, G>(pages, a.koff, P, logP, nsT, a.q + ((size_t)b * n_head + h * G) * D, a.scale, s,
                             chunk_tok, warp, lane, qp);
    else
        score_rows<KC, D, G, UK, RPI, HINT>(xk, 0, qf, s, chunk_tok, lane, qp);
    if (CP::kSealed && nsT < ntok) {
        const row_ctx xo = {pages, a.okoff, P, logP, ntok, rsub, c};
        score_rows<typename CP::OK, D, G, U, RPI, HINT>(xo, nsT, qf, s, chunk_tok, lane, qp);
    }
    tile<VC, U> va, vb;
    if (!CP::kSealed) load_tile<VC, D, U, RPI, false, HINT>(va, xv, 0); /* in flight during the softmax */
    __syncthreads();
    if constexpr (ST) { /* the scores, before the softmax overwrites them */
        float *ss = a.sc + ((size_t)b * n_head + h * G) * a.sc_stride + tok0;
        for (int i = tid; i < G * ntok; i += NTHREADS) {
            const int g = i / ntok, j = i - g * ntok;
            ss[(size_t)g * a.sc_stride + j] = s[g * chunk_tok + j];
        }
        __syncthreads();
    }

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
    if constexpr (ST) {
        if (tid < G) {
            float *r = a.ml + (((size_t)b * n_head + h * G + tid) * a.n_split + split) * 2;
            r[0] = sm_m[tid], r[1] = sm_l[tid];
        }
    }

    /* pass 2: acc[g][e] += p_g,j * v_j[chan(c, e)] */
    float acc[G][8];
#pragma unroll
    for (int g = 0; g < G; g++)
#pragma unroll
        for (int e = 0; e < 8; e++) acc[g][e] = 0.0f;
    if (!CP::kSealed) {
        accumulate_rows<VC, D, G, U, RPI, HINT>(va, vb, xv, 0, acc, s, chunk_tok);
    } else {
        float bz[G];
#pragma unroll
        for (int g = 0; g < G; g++) bz[g] = 0.0f;
        kivi_v<CP::kBits, G, D, RPI>(pages, a.voff, P, logP, nsT, s, chunk_tok, c, rsub, acc, bz);
#pragma unroll
        for (int g = 0; g < G; g++)
#pragma unroll
            for (int e = 0; e < 8; e++) acc[g][e] -= bz[g];
        if (nsT < ntok) {
            const row_ctx xo = {pages, a.ovoff, P, logP, ntok, rsub, c};
            tile<typename CP::OV, U> oa, ob;
            load_tile<typename CP::OV, D, U, RPI, false, HINT>(oa, xo, nsT);
            accumulate_rows<typename CP::OV, D, G, U, RPI, HINT>(oa, ob, xo, nsT, acc, s, chunk_tok);
        }
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
            for (int e = 0; e < 8; e++) red[(warp * G + g) * D + VC::chan(c, e)] = acc[g][e];
    __syncthreads();
    const float poison = CP::kSealed && sm_bad ? __int_as_float(0x7fc00000) : 0.0f;
    for (int idx = tid; idx < G * D; idx += NTHREADS) {
        float v = 0.0f;
#pragma unroll
        for (int w = 0; w < NWARPS; w++) v += red[w * G * D + idx];
        const int g = idx / D, d = idx % D;
        const size_t qh = (size_t)b * n_head + h * G + g;
        const float l = sm_l[g];
        if (a.n_split == 1) {
            a.out[qh * D + d] = (l > 0.0f ? v / l : 0.0f) + poison;
        } else {
            float *rp = a.part + (qh * a.n_split + split) * rec;
            rp[2 + d] = v + poison;
            if (d == 0) rp[0] = sm_m[g], rp[1] = l;
        }
    }
}

/* Rows per tile per thread: the codec's default, at most 4 with more than 4
 * heads (registers). Minimum resident blocks: 5 up to 4 heads (caps the
 * registers at 96 per thread; without the cap ptxas took 104-108 for f16
 * and 122 for int8 at D 128, G 4, one block per SM less, and the large shapes
 * ran 0-9% slower on the H200, 2026-12-02), no cap above (it would spill). */
template <class C, int G> struct default_unroll { static constexpr int v = G > 4 && C::kUnroll > 4 ? 4 : C::kUnroll; };
template <class CP, int G> struct default_minb { static constexpr int v = G <= 4 ? CP::kMinB : 1; };

template <class CP, int D> static kvl_cuda_split_fn kvl_cuda_pick_g(int G) {
    typedef typename CP::K K;
    switch (G) {
    case 1: return decode_split_kernel<CP, D, 1, default_unroll<K, 1>::v, default_minb<CP, 1>::v, 0>;
    case 2: return decode_split_kernel<CP, D, 2, default_unroll<K, 2>::v, default_minb<CP, 2>::v, 0>;
    case 3: return decode_split_kernel<CP, D, 3, default_unroll<K, 3>::v, default_minb<CP, 3>::v, 0>;
    case 4: return decode_split_kernel<CP, D, 4, default_unroll<K, 4>::v, default_minb<CP, 4>::v, 0>;
    case 5: return decode_split_kernel<CP, D, 5, default_unroll<K, 5>::v, default_minb<CP, 5>::v, 0>;
    case 6: return decode_split_kernel<CP, D, 6, default_unroll<K, 6>::v, default_minb<CP, 6>::v, 0>;
    case 7: return decode_split_kernel<CP, D, 7, default_unroll<K, 7>::v, default_minb<CP, 7>::v, 0>;
    case 8: return decode_split_kernel<CP, D, 8, default_unroll<K, 8>::v, default_minb<CP, 8>::v, 0>;
    }
    return NULL;
}

template <class CP> static kvl_cuda_split_fn kvl_cuda_pick_pair(int D, int G) {
    return D == 64 ? kvl_cuda_pick_g<CP, 64>(G) : D == 128 ? kvl_cuda_pick_g<CP, 128>(G) : NULL;
}

/* Per-codec entry points (attn_<codec>.cu): the kernel for (D, G, page
 * size P, variant), NULL when there is none. */
kvl_cuda_split_fn kvl_cuda_pick_f16(int D, int G, int P, int variant);
kvl_cuda_split_fn kvl_cuda_pick_int8(int D, int G, int P, int variant);
kvl_cuda_split_fn kvl_cuda_pick_fp8(int D, int G, int P, int variant);
kvl_cuda_split_fn kvl_cuda_pick_int4z(int D, int G, int P, int variant);
kvl_cuda_split_fn kvl_cuda_pick_kivi4z(int D, int G, int P, int variant);
kvl_cuda_split_fn kvl_cuda_pick_kivi2z(int D, int G, int P, int variant);

#endif
