/* Paged decode attention with both products on the tensor cores (internal):
 * the key scores S = K Q^T and the value sums O^T = V^T P^T both by
 * mma.sync m16n8k16 (f16 inputs, f32 accumulation), one pass over each tile
 * with an online softmax per warp (no block barrier between the passes).
 * Instantiated in attn_int4z_tc.cu, attn_kivi2z_tc.cu and attn_f16_tc.cu; launched by
 * attn_decode.cu with the split/merge plan of the CUDA-core kernel
 * (attn_kernel.cuh), whose partial record (m, l, acc[D]) it writes.
 *
 * Fragments (PTX ISA, m16n8k16): lane = 4 gq + tq; A (16 x 16, row): a0 =
 * (row gq, k 2tq, 2tq+1), a1 = (row gq+8, same k), a2 = (row gq, k 2tq+8,
 * 2tq+9), a3 = (row gq+8, ...); B (16 x 8, col): b0 = (k 2tq, 2tq+1, col gq),
 * b1 = (k 2tq+8, 2tq+9, col gq); C: c0, c1 = (row gq, cols 2tq, 2tq+1), c2,
 * c3 = (row gq+8, ...). The 8 columns are the G <= 4 query heads twice:
 * column n < 4 the f16 "hi" part of head n's operand, n >= 4 the "lo" part,
 * f16((x - hi) * 2^11) (scaled so it stays a normal f16); hi + lo / 2^11
 * carries x to ~2^-22 relative, so products of exact f16 codes with it keep
 * fp32 accuracy. A C column pair is summed across lanes tq and tq ^ 2.
 *
 * Codes become exact f16 integers and scales multiply on the A side
 * (attn_tc_frag.cuh: the codecs' fragment builders and why they are exact).
 * The dot products are permutation-invariant, so channels and tokens are
 * assigned to fragment slots in the order the page bytes arrive (no page
 * layout change; the layouts are the CPU codecs'):
 *  - scores: row = token (gq, gq + 8 of a 16-token tile), k = channels;
 *  - value sums: row = channel (chan(m, r) per codec: m-tile m, row r), k =
 *    tokens; lane tq's k slots 2tq, 2tq+1, 2tq+8, 2tq+9 are the tile's tokens
 *    4tq .. 4tq+3 (for every codec, so P goes through one exchange).
 * After the scores, lanes tq, tq ^ 2 hold heads 2(tq & 1) + e, e < 2, of
 * tokens gq, gq + 8: the online softmax state (m, l) of those two heads per
 * lane, which is also the head of the lane's C columns of O, so O is
 * rescaled in place. The probabilities go through a warp-private shared
 * buffer into the B layout (head gq & 3, tokens 4tq .. 4tq+3).
 *
 * Work split: block (split, kv-head, sequence) as attn_kernel.cuh; warp w
 * takes a contiguous range of the split's 16-token tiles (so page-parameter
 * keys change once per page). Codecs with a ring stage (int4z, sealed
 * kivi2z) stream the range through a per-warp shared-memory ring of
 * KC::kStages stages filled by cp.async, two tiles per softmax step
 * (tc_step2: two independent score chains, one max / rescale / exchange),
 * the next pair in flight; the others (the open f16 pages of a KIVI list)
 * take one tile at a time from registers (tc_step). At the end the warps'
 * (m, l, O) are merged in shared memory. Sealing codecs: tiles of the
 * sealed prefix with the sealed codec, the rest with the open (f16) one,
 * same channel order of O. Rows past the list end are read (a tile lies in
 * one page, P a multiple of 16) but get probability 0: their score rows are
 * replaced (not multiplied) by -inf, and on the value side their scales or
 * f16 values are zeroed before the mma. */
#ifndef KVL_CUDA_ATTN_TC_CUH
#define KVL_CUDA_ATTN_TC_CUH

#include "cuda/attn_kernel.cuh"
#include "cuda/attn_tc_frag.cuh"

#define TC_PS 20    /* probability buffer: floats per head (16 tokens + pad: fewer bank conflicts) */
#define TC_PS2 36   /* probability buffer of a tile pair: floats per head */
/* Device experiments only (never in a default build; results wrong on
 * purpose): KVL_TC_EXPT 1 skips the softmax of tc_step2 (p = the masked
 * scores, no max / exp / rescale), 2 the value dequantization (raw code
 * words into the mma), 3 the value side (no V fragments, no value mma), 4
 * the score side (no K fragments, no score mma). */
#ifndef KVL_TC_EXPT
#define KVL_TC_EXPT 0
#endif

/* per-lane softmax state and O fragments (m-tile m, C registers) */
template <int D> struct tc_state {
    float m[2], l[2];
    float o[D / 16][4];
};

/* ---- the per-tile step and the tile loop ------------------------------------------------ */

struct tc_ctx {
    const uint8_t *const *pages;
    int koff, voff, P, logP, ntok, qp, lane;
    const float *sq; /* shared [4][D] */
    float *pb;       /* shared [4][TC_PS2]: this warp's probabilities (head stride TC_PS in tc_step) */
    uint4 *wb;       /* shared [D / 32][32]: this warp's key B (codecs that keep it there) */
    uint8_t *ring;   /* shared [KC::kStages][KC::kStage]: this warp's tile ring (codecs with kStage) */
    /* statistics instantiations (ST) only: the split's score rows, head g's
     * row at ss + g * ss_stride (the kernel's first query head, list row
     * tok0), for heads < ss_heads (G) */
    float *ss;
    int ss_stride, ss_heads;
};

template <class KC, class VC, int D, bool ST = false>
static __device__ __forceinline__ void tc_step(const typename KC::Tile &kt, const typename VC::Tile &vt,
                                               const typename KC::QB &qb, tc_state<D> &st, int j0, const tc_ctx &x) {
    const int lane = x.lane, gq = lane >> 2, tq = lane & 3;
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    KC::score(kt, qb, acc);
    /* hi + lo / 2^11: lanes tq < 2 hold the hi columns, tq ^ 2 the lo ones */
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const float v = tq >= 2 ? acc[i] * (1.0f / 2048.0f) : acc[i];
        acc[i] = v + __shfl_xor_sync(0xffffffffu, v, 2);
    }
    float p[4], alpha[2];
    bool grow = false;
#pragma unroll
    for (int e = 0; e < 2; e++) {
        float s[2];
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int j = j0 + gq + 8 * h;
            s[h] = j < x.ntok && kt.pos[h] <= x.qp ? acc[2 * h + e] : -INFINITY;
            if constexpr (ST) {
                const int hd = 2 * (tq & 1) + e;
                if (tq < 2 && hd < x.ss_heads && j < x.ntok) x.ss[(size_t)hd * x.ss_stride + j] = s[h];
            }
        }
        float mx = fmaxf(s[0], s[1]);
#pragma unroll
        for (int o = 4; o < 32; o <<= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
        const float mn = fmaxf(st.m[e], mx);
        if (mn == -INFINITY) {
            alpha[e] = 1.0f, p[e] = 0.0f, p[2 + e] = 0.0f;
        } else {
            alpha[e] = __expf(st.m[e] - mn);
            p[e] = __expf(s[0] - mn);
            p[2 + e] = __expf(s[1] - mn);
        }
        grow |= mn > st.m[e];
        st.m[e] = mn;
        st.l[e] = fmaf(st.l[e], alpha[e], p[e] + p[2 + e]);
    }
    if (__any_sync(0xffffffffu, grow)) {
#pragma unroll
        for (int m = 0; m < D / 16; m++) {
            st.o[m][0] *= alpha[0], st.o[m][2] *= alpha[0];
            st.o[m][1] *= alpha[1], st.o[m][3] *= alpha[1];
        }
    }
    /* P into the B layout: head gq & 3, tokens 4tq .. 4tq + 3 */
    if (tq < 2) {
#pragma unroll
        for (int e = 0; e < 2; e++)
#pragma unroll
            for (int h = 0; h < 2; h++) x.pb[(2 * tq + e) * TC_PS + gq + 8 * h] = p[2 * h + e];
    }
    __syncwarp();
    float4 pv = *reinterpret_cast<const float4 *>(x.pb + (gq & 3) * TC_PS + 4 * tq);
    __syncwarp();
    VC::pmul(vt, pv, x.ntok - j0 - 4 * tq);
    const uint32_t bp[2] = {tc_split2(pv.x, pv.y, gq >= 4), tc_split2(pv.z, pv.w, gq >= 4)};
    VC::value(vt, bp, x.ntok - j0 - 4 * tq, st.o);
}

/* Two tiles (j0, j0 + 16) with one softmax step (tc_step2 = tc_score2,
 * then tc_finish2): the two tiles' score chains are independent, and the
 * max / rescale / exchange cost halves per token. two: whether the second
 * tile is in the warp's range; sg[u]: the stages holding them (V fragments
 * read after the softmax). tc_score2: the C fragments acc[u] (hi and lo
 * columns, not yet summed) and the positions of rows gq, gq + 8 of tile u. */
template <class KC>
static __device__ __forceinline__ void tc_score2(const uint8_t *const (&sg)[2], bool two, typename KC::QB &qb, int &cur,
                                                 int j0, const tc_ctx &x, float (&acc)[2][4], int (&pos)[2][2]) {
    const int lane = x.lane;
#pragma unroll
    for (int u = 0; u < 2; u++) {
#pragma unroll
        for (int i = 0; i < 4; i++) acc[u][i] = 0.0f;
        pos[u][0] = pos[u][1] = KVL_TC_EXPT == 4 ? 0 : 0x7fffffff;
        if ((u == 0 || two) && KVL_TC_EXPT != 4) {
            typename KC::Tile kt;
            KC::template load<true>(kt, sg[u], KC::kStageK, x.P, 0, lane);
            const int pgi = (j0 + 16 * u) >> x.logP;
            if (KC::kPageB && pgi != cur) {
                KC::page(qb, kt, x.sq, lane);
                cur = pgi;
            }
            KC::score(kt, qb, acc[u]);
            pos[u][0] = kt.pos[0], pos[u][1] = kt.pos[1];
        }
    }
}

/* The rest of tc_step2 after the scores acc / pos of the two tiles: the
 * softmax step and the value sums (V fragments from the stages sg). */
template <class KC, class VC, int D, bool ST = false>
static __device__ __forceinline__ void tc_finish2(const uint8_t *const (&sg)[2], bool two, float (&acc)[2][4],
                                                  const int (&pos)[2][2], tc_state<D> &st, int j0, const tc_ctx &x) {
    const int lane = x.lane, gq = lane >> 2, tq = lane & 3;
#pragma unroll
    for (int u = 0; u < 2; u++)
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const float v = tq >= 2 ? acc[u][i] * (1.0f / 2048.0f) : acc[u][i];
            acc[u][i] = v + __shfl_xor_sync(0xffffffffu, v, 2);
        }
    const int jend = two ? x.ntok : min(x.ntok, j0 + 16);
    float p[2][4], alpha[2];
    bool grow = false;
#pragma unroll
    for (int e = 0; e < 2; e++) {
        float sc[2][2], mx = -INFINITY;
#if KVL_TC_EXPT == 1
        float ls1 = 0.0f;
#pragma unroll
        for (int u = 0; u < 2; u++)
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const int j = j0 + 16 * u + gq + 8 * h;
                p[u][2 * h + e] = j < jend && pos[u][h] <= x.qp ? acc[u][2 * h + e] : 0.0f;
                ls1 += p[u][2 * h + e];
            }
        alpha[e] = 1.0f, st.m[e] = 0.0f, st.l[e] += ls1;
        continue;
#endif
#pragma unroll
        for (int u = 0; u < 2; u++)
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const int j = j0 + 16 * u + gq + 8 * h;
                sc[u][h] = j < jend && pos[u][h] <= x.qp ? acc[u][2 * h + e] : -INFINITY;
                mx = fmaxf(mx, sc[u][h]);
                if constexpr (ST) {
                    const int hd = 2 * (tq & 1) + e;
                    if (tq < 2 && hd < x.ss_heads && j < jend) x.ss[(size_t)hd * x.ss_stride + j] = sc[u][h];
                }
            }
#pragma unroll
        for (int o = 4; o < 32; o <<= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
        const float mn = fmaxf(st.m[e], mx);
        float ls = 0.0f;
        if (mn == -INFINITY) {
            alpha[e] = 1.0f;
#pragma unroll
            for (int u = 0; u < 2; u++) p[u][e] = 0.0f, p[u][2 + e] = 0.0f;
        } else {
            alpha[e] = __expf(st.m[e] - mn);
#pragma unroll
            for (int u = 0; u < 2; u++) {
                p[u][e] = __expf(sc[u][0] - mn);
                p[u][2 + e] = __expf(sc[u][1] - mn);
                ls += p[u][e] + p[u][2 + e];
            }
        }
        grow |= mn > st.m[e];
        st.m[e] = mn;
        st.l[e] = fmaf(st.l[e], alpha[e], ls);
    }
    if (__any_sync(0xffffffffu, grow)) {
#pragma unroll
        for (int m = 0; m < D / 16; m++) {
            st.o[m][0] *= alpha[0], st.o[m][2] *= alpha[0];
            st.o[m][1] *= alpha[1], st.o[m][3] *= alpha[1];
        }
    }
    if (tq < 2) {
#pragma unroll
        for (int u = 0; u < 2; u++)
#pragma unroll
            for (int e = 0; e < 2; e++)
#pragma unroll
                for (int h = 0; h < 2; h++) x.pb[(2 * tq + e) * TC_PS2 + 16 * u + gq + 8 * h] = p[u][2 * h + e];
    }
    __syncwarp();
    float4 pv[2];
#pragma unroll
    for (int u = 0; u < 2; u++) pv[u] = *reinterpret_cast<const float4 *>(x.pb + (gq & 3) * TC_PS2 + 16 * u + 4 * tq);
    __syncwarp();
#pragma unroll
    for (int u = 0; u < 2; u++) {
        if ((u == 1 && !two) || KVL_TC_EXPT == 3) break;
        typename VC::Tile vt;
        VC::template load<true>(vt, sg[u], KC::kStageV, x.P, 0, lane);
        const int nv = x.ntok - (j0 + 16 * u) - 4 * tq;
        VC::pmul(vt, pv[u], nv); /* per-token value scales (int8, fp8) on the probabilities */
        const uint32_t bp[2] = {tc_split2(pv[u].x, pv[u].y, gq >= 4), tc_split2(pv[u].z, pv[u].w, gq >= 4)};
        VC::value(vt, bp, nv, st.o);
    }
}

/* Both tiles of the pair: scores, softmax step, value sums. */
template <class KC, class VC, int D, bool ST = false>
static __device__ __forceinline__ void tc_step2(const uint8_t *const (&sg)[2], bool two, typename KC::QB &qb, int &cur,
                                                tc_state<D> &st, int j0, const tc_ctx &x) {
    float acc[2][4];
    int pos[2][2];
    tc_score2<KC>(sg, two, qb, cur, j0, x, acc, pos);
    tc_finish2<KC, VC, D, ST>(sg, two, acc, pos, st, j0, x);
}

/* One ring step of the warp: tile it (if < ie) into ring stage fill, fill
 * advanced mod KC::kStages, one cp.async group committed (empty past the
 * range: the loops' waits count groups). Used by tc_tiles_cp1 / tc_tiles_cp. */
template <class KC>
static __device__ __forceinline__ void tc_ring_issue(const tc_ctx &x, int &fill, int it, int ie) {
    if (it < ie) {
        const int j0 = it << 4;
        KC::stage(x.ring + fill * KC::kStage, x.pages[j0 >> x.logP], x.koff, x.voff, x.P, j0 & (x.P - 1), x.lane);
    }
    fill = fill + 1 == KC::kStages ? 0 : fill + 1;
    tc_cp_commit();
}

/* Tiles [ib, ie) through the warp's ring of S = KC::kStages stages, one
 * tile per step (KC::kStep 1: f16 with TC_STEP_F16 1): the next S - 1
 * tiles in flight while one is used (read into registers, then tc_step).
 * Tile it sits in stage (it - ib) mod S; the stage refilled at step it is
 * the one tile it - 1 used. */
template <class KC, class VC, int D, bool ST = false>
static __device__ __forceinline__ void tc_tiles_cp1(int ib, int ie, tc_state<D> &st, const tc_ctx &x,
                                                    typename KC::QB &qb) {
    constexpr int S = KC::kStages;
    static_assert(S >= 2, "one tile in use, S - 1 in flight");
    int cur = -1; /* page of qb (page-parameter keys) */
    int fill = 0, use = 0;
    auto issue = [&](int it) { tc_ring_issue<KC>(x, fill, it, ie); };
#pragma unroll
    for (int k = 0; k < S - 1; k++) issue(ib + k);
    for (int it = ib; it < ie; it++) {
        issue(it + S - 1);   /* into the stage tile it - 1 used */
        tc_cp_wait<S - 1>(); /* tile it landed */
        __syncwarp();
        const uint8_t *sg = x.ring + use * KC::kStage;
        typename KC::Tile kt;
        typename VC::Tile vt;
        KC::template load<true>(kt, sg, KC::kStageK, x.P, 0, x.lane);
        VC::template load<true>(vt, sg, KC::kStageV, x.P, 0, x.lane);
        const int j0 = it << 4;
        if (KC::kPageB && (j0 >> x.logP) != cur) {
            KC::page(qb, kt, x.sq, x.lane);
            cur = j0 >> x.logP;
        }
        tc_step<KC, VC, D, ST>(kt, vt, qb, st, j0, x);
        use = use + 1 == S ? 0 : use + 1;
        __syncwarp(); /* the stage is refilled next step */
    }
    tc_cp_wait<0>();
}

/* Tiles [ib, ie) through the warp's shared-memory ring of S = KC::kStages
 * stages (cp.async, 16-byte pieces), two tiles per step (tc_step2): the
 * next S / 2 - 1 pairs in flight while one is used, without their
 * registers. Tile it sits in stage (it - ib) mod S (issued in order). */
template <class KC, class VC, int D, bool ST = false>
static __device__ __forceinline__ void tc_tiles_cp(int ib, int ie, tc_state<D> &st, const tc_ctx &x,
                                                   typename KC::QB &qb) {
    constexpr int S = KC::kStages;
    int cur = -1; /* page of qb (page-parameter keys) */
    static_assert(S >= 4 && S % 2 == 0, "pairs of tiles: two in use, S - 2 in flight");
    int fill = 0, use = 0; /* stages of the next tile issued / used */
    auto issue = [&](int it) { tc_ring_issue<KC>(x, fill, it, ie); };
#pragma unroll
    for (int k = 0; k < S - 2; k++) issue(ib + k);
    for (int it = ib; it < ie; it += 2) {
        issue(it + S - 2); /* into the stages the previous pair used */
        issue(it + S - 1);
        tc_cp_wait<S - 2>(); /* tiles it, it + 1 landed */
        __syncwarp();
        const uint8_t *const sg[2] = {x.ring + use * KC::kStage, x.ring + (use + 1) * KC::kStage};
        tc_step2<KC, VC, D, ST>(sg, it + 1 < ie, qb, cur, st, it << 4, x);
        use = use + 2 == S ? 0 : use + 2;
        __syncwarp(); /* the stages are refilled next iteration */
    }
    tc_cp_wait<0>();
}

/* Tiles [ib, ie) of the split with key codec KC and value codec VC; DB:
 * the next tile's loads in flight during the current tile's math (else one
 * tile at a time: the open pages of a sealing codec, few, saving registers). */
template <class KC, class VC, int D, bool DB, bool ST = false>
static __device__ __forceinline__ void tc_tiles(int ib, int ie, tc_state<D> &st, const tc_ctx &x) {
    if (ib >= ie) return;
    typename KC::QB qb;
    KC::init(qb, x.sq, x.lane, x.wb);
    if constexpr (KC::kStage > 0) {
        if constexpr (KC::kStep == 1)
            tc_tiles_cp1<KC, VC, D, ST>(ib, ie, st, x, qb);
        else
            tc_tiles_cp<KC, VC, D, ST>(ib, ie, st, x, qb);
        return;
    }
    typename KC::Tile ka, kb;
    typename VC::Tile va, vb;
    int cur = -1; /* page of qb (page-parameter keys) */
    auto ld = [&](typename KC::Tile &k, typename VC::Tile &v, int it) {
        const int j0 = it << 4;
        const uint8_t *pg = x.pages[j0 >> x.logP];
        const int r0 = j0 & (x.P - 1);
        KC::load(k, pg, x.koff, x.P, r0, x.lane);
        VC::load(v, pg, x.voff, x.P, r0, x.lane);
    };
    auto step = [&](const typename KC::Tile &k, const typename VC::Tile &v, int it) {
        const int j0 = it << 4;
        if (KC::kPageB && (j0 >> x.logP) != cur) {
            KC::page(qb, k, x.sq, x.lane);
            cur = j0 >> x.logP;
        }
        tc_step<KC, VC, D, ST>(k, v, qb, st, j0, x);
    };
    if (!DB) {
        for (int it = ib; it < ie; it++) {
            ld(ka, va, it);
            step(ka, va, it);
        }
        return;
    }
    ld(ka, va, ib);
    for (int it = ib; it < ie; it += 2) {
        if (it + 1 < ie) ld(kb, vb, it + 1);
        step(ka, va, it);
        if (it + 1 >= ie) break;
        if (it + 2 < ie) ld(ka, va, it + 2);
        step(kb, vb, it + 1);
    }
}

/* Block (split, h, b), NW warps (NWARPS, f16 TC_WARPS_F16: kvl_cuda_tc_warps),
 * G <= 4. Shared memory (dynamic):
 * page addresses [pid_slots / 2], sq[4][D], pb[NW][4][TC_PS2],
 * wb[NW][D / 32][32] (uint4), then red[NW][G][D] or, for codecs
 * with a ring (int4z, kivi2z), the tile rings [NW][KC::kStages][KC::kStage]
 * bytes, each warp's red slice at the start of its ring. Sealing codecs (SEALED): KC/VC the sealed pages'
 * codecs, OKC/OVC the open pages'. part / out as decode_split_kernel; ST
 * (statistics instantiations, attn_stats_tc*.cu) also the scores into a.sc
 * and the split's (m, l) into a.ml. */
template <class KC, class VC, class OKC, class OVC, bool SEALED, int D, int G, int MINB, bool ST, int NW>
__global__ void __launch_bounds__(NW * 32, MINB) tc_split_kernel(const __grid_constant__ kvl_cuda_kargs a) {
    static_assert(G <= 4, "tensor-core kernel: at most 4 heads per kv-head");
    constexpr int NT = NW * 32;
    extern __shared__ float smem[];
    __shared__ float sm_m[NW][4], sm_l[NW][4];
    __shared__ int sm_nsp, sm_bad;
    const int split = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int n_head = a.n_head_kv * G, li = b * a.n_head_kv + h;
    const int logP = a.logP, P = a.P;
    const int chunk_tok = a.chunk_pages << logP, tok0 = split * chunk_tok;
    const int len = a.list_len[li];
    const int ntok = min(len - tok0, chunk_tok);
    const size_t rec = 2 + D;
    if (ntok <= 0) { /* this list ends before the split */
        if constexpr (ST) stats_empty_split<G>(a, b, h, split, n_head, tid);
        write_empty_split<D, G, NT>(a, b, h, split, n_head, tid);
        return;
    }
    const uint8_t **pages = reinterpret_cast<const uint8_t **>(smem);
    /* with a ring, warp w's red slice is the start of its own ring (free after its tiles) */
    constexpr bool RING = KC::kStage > 0;
    float *sq = smem + a.pid_slots, *pb = sq + 4 * D; /* pb: [NW][4][TC_PS2] */
    uint4 *wbuf = reinterpret_cast<uint4 *>(pb + NW * 4 * TC_PS2); /* [NW][D / 32][32], if KC::kWB */
    uint8_t *ring = reinterpret_cast<uint8_t *>(wbuf + (KC::kWB ? NW * (D / 32) * 32 : 0));
    float *red = reinterpret_cast<float *>(ring); /* [NW][G][D], or per warp at stride RSTR */
    constexpr int RSTR = RING ? KC::kStages * KC::kStage / 4 : G * D;
    static_assert(!RING || RSTR >= G * D, "a warp's ring holds its red slice");
    const int npages = (ntok + P - 1) >> logP;
    const uint32_t *lp = a.page_ids + a.list_off[li] + (size_t)split * a.chunk_pages;
    if (SEALED && tid == 0) sm_nsp = 0, sm_bad = 0;
    if (SEALED) __syncthreads();
    for (int i = tid; i < npages; i += NT) {
        const uint32_t id = lp[i];
        pages[i] = kvl_cuda_page_addr(a.space, id);
        if (SEALED) {
            const bool si = (int)(id >> KVL_CUDA_CLASS_SHIFT) == a.sealed_cls;
            const bool sn = i + 1 < npages && (int)(lp[i + 1] >> KVL_CUDA_CLASS_SHIFT) == a.sealed_cls;
            if (si && !sn) sm_nsp = i + 1;
            if (!si && sn) sm_bad = 1;
        }
    }
    for (int i = tid; i < 4 * D; i += NT) {
        const int g = i / D;
        sq[i] = g < G ? __ldg(a.q + ((size_t)b * n_head + h * G + g) * D + i % D) * a.scale : 0.0f;
    }
    __syncthreads();
    const int nsT = SEALED ? min(sm_nsp << logP, ntok) : ntok;
    const int ntiles = (ntok + 15) >> 4, nst = SEALED ? (nsT + 15) >> 4 : ntiles;
    const int it0 = warp * ntiles / NW, it1 = (warp + 1) * ntiles / NW;
    tc_state<D> st;
    st.m[0] = st.m[1] = -INFINITY;
    st.l[0] = st.l[1] = 0.0f;
#pragma unroll
    for (int m = 0; m < D / 16; m++)
#pragma unroll
        for (int i = 0; i < 4; i++) st.o[m][i] = 0.0f;
    tc_ctx x = {pages, a.koff, a.voff, P, logP, ntok, a.qpos[b], lane, sq, pb + warp * 4 * TC_PS2,
                wbuf + warp * (D / 32) * 32, ring + (size_t)warp * KC::kStages * KC::kStage,
                ST ? a.sc + ((size_t)b * n_head + h * G) * a.sc_stride + tok0 : nullptr, a.sc_stride, G};
    tc_tiles<KC, VC, D, true, ST>(it0, min(it1, nst), st, x);
    if constexpr (SEALED) {
        x.koff = a.okoff, x.voff = a.ovoff;
        tc_tiles<OKC, OVC, D, false, ST>(max(it0, nst), it1, st, x);
    }
    /* the warp's (m, l, O): l over the lanes of a head; O hi + lo / 2^11 */
    const int gq = lane >> 2, tq = lane & 3;
#pragma unroll
    for (int e = 0; e < 2; e++)
#pragma unroll
        for (int o = 4; o < 32; o <<= 1) st.l[e] += __shfl_xor_sync(0xffffffffu, st.l[e], o);
#pragma unroll
    for (int m = 0; m < D / 16; m++)
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const float v = tq >= 2 ? st.o[m][i] * (1.0f / 2048.0f) : st.o[m][i];
            st.o[m][i] = v + __shfl_xor_sync(0xffffffffu, v, 2);
        }
    if (tq < 2) {
#pragma unroll
        for (int m = 0; m < D / 16; m++)
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const int hd = 2 * tq + (i & 1);
                if (hd < G) red[warp * RSTR + hd * D + VC::chan(m, gq + 8 * (i >> 1))] = st.o[m][i];
            }
        if (gq == 0)
#pragma unroll
            for (int e = 0; e < 2; e++) sm_m[warp][2 * tq + e] = st.m[e], sm_l[warp][2 * tq + e] = st.l[e];
    }
    __syncthreads();
    const float poison = SEALED && sm_bad ? __int_as_float(0x7fc00000) : 0.0f;
    for (int idx = tid; idx < G * D; idx += NT) {
        const int g = idx / D, d = idx % D;
        float M = -INFINITY;
#pragma unroll
        for (int w = 0; w < NW; w++) M = fmaxf(M, sm_m[w][g]);
        float L = 0.0f, v = 0.0f;
        if (M != -INFINITY) {
#pragma unroll
            for (int w = 0; w < NW; w++) {
                const float wt = __expf(sm_m[w][g] - M);
                L = fmaf(wt, sm_l[w][g], L);
                v = fmaf(wt, red[w * RSTR + g * D + d], v);
            }
        }
        const size_t qh = (size_t)b * n_head + h * G + g;
        if constexpr (ST) {
            if (d == 0) a.ml[(qh * a.n_split + split) * 2] = M, a.ml[(qh * a.n_split + split) * 2 + 1] = L;
        }
        if (a.n_split == 1) {
            a.out[qh * D + d] = (L > 0.0f ? v / L : 0.0f) + poison;
        } else {
            float *rp = a.part + (qh * a.n_split + split) * rec;
            rp[2 + d] = v + poison;
            if (d == 0) rp[0] = M, rp[1] = L;
        }
    }
}

/* Bytes of a ring stage of the tensor-core kernel of a codec (0: no ring),
 * and its stages per warp (KC::kStages). */
static inline int kvl_cuda_tc_stage_bytes(kvl_cuda_codec c, int D);
static inline int kvl_cuda_tc_stages(kvl_cuda_codec c) {
    return c == KVL_CUDA_CODEC_INT4Z ? TC_STAGES_INT4Z
           : c == KVL_CUDA_CODEC_KIVI2Z ? TC_STAGES_KIVI2Z
           : c == KVL_CUDA_CODEC_F16 ? TC_STAGES_F16
                                     : TC_STAGES_B8;
}
/* Warps per block of codec c's tensor-core kernel (its launch: 32 x that
 * many threads) and tiles per softmax step (KC::kStep: the plan's split
 * quantum); f16 by TC_WARPS_F16 / TC_STEP_F16, the others NWARPS, pairs. */
static inline int kvl_cuda_tc_warps(kvl_cuda_codec c) { return c == KVL_CUDA_CODEC_F16 ? TC_WARPS_F16 : NWARPS; }
static inline int kvl_cuda_tc_step(kvl_cuda_codec c) { return c == KVL_CUDA_CODEC_F16 ? TC_STEP_F16 : 2; }
/* Shared memory of tc_split_kernel of codec c beyond the page addresses, in
 * floats (the key B buffer wb only for int4z / kivi2z: KC::kWB). */
static inline size_t kvl_cuda_tc_smem_floats(int D, int G, kvl_cuda_codec c) {
    const int stage_bytes = kvl_cuda_tc_stage_bytes(c, D);
    const bool wb = c == KVL_CUDA_CODEC_INT4Z || c == KVL_CUDA_CODEC_KIVI2Z;
    const size_t nw = (size_t)kvl_cuda_tc_warps(c);
    return (size_t)4 * D + nw * 4 * TC_PS2 + (wb ? nw * D * 4 : 0) +
           (stage_bytes ? nw * kvl_cuda_tc_stages(c) * stage_bytes / 4 : nw * G * D);
}
static inline int kvl_cuda_tc_stage_bytes(kvl_cuda_codec c, int D) {
    return c == KVL_CUDA_CODEC_INT4Z    ? 64 + 32 * (D / 16 + D / 2)
           : c == KVL_CUDA_CODEC_KIVI2Z ? 64 + 11 * D
           : c == KVL_CUDA_CODEC_F16    ? 64 + 64 * D /* attn_tc_f16.cuh */
           : c == KVL_CUDA_CODEC_INT8 || c == KVL_CUDA_CODEC_FP8 ? 192 + 32 * D /* attn_tc_b8.cuh */
                                        : 0;
}

/* Minimum resident blocks per SM of each codec's tensor-core kernel (its
 * __launch_bounds__): shared by the default kernels (attn_<codec>_tc.cu) and
 * their statistics instantiations (attn_stats_tc*.cu), which must match
 * them (the plan and shared memory are sized from the default kernel). */
#ifndef TC_MINB_F16 /* (-D: device experiments) */
#define TC_MINB_F16 1
#endif
#ifndef TC_MINB_B8
#define TC_MINB_B8 3 /* int8, fp8 */
#endif
#ifndef TC_MINB_INT4Z
#define TC_MINB_INT4Z 4
#endif
#ifndef TC_MINB_KIVI2Z
#define TC_MINB_KIVI2Z 4
#endif

/* The per-codec instantiation table: tc_split_kernel for G = 1..4 query
 * heads per kv-head, NULL otherwise (used by attn_<codec>_tc.cu; ST: the
 * statistics instantiations, attn_stats_tc*.cu; NW: warps per block, which
 * must be kvl_cuda_tc_warps of the codec: attn_decode.cu launches that). */
template <class KC, class VC, class OKC, class OVC, bool SEALED, int D, int MINB, bool ST = false, int NW = NWARPS>
static kvl_cuda_split_fn tc_pick_g(int G) {
    switch (G) {
    case 1: return tc_split_kernel<KC, VC, OKC, OVC, SEALED, D, 1, MINB, ST, NW>;
    case 2: return tc_split_kernel<KC, VC, OKC, OVC, SEALED, D, 2, MINB, ST, NW>;
    case 3: return tc_split_kernel<KC, VC, OKC, OVC, SEALED, D, 3, MINB, ST, NW>;
    case 4: return tc_split_kernel<KC, VC, OKC, OVC, SEALED, D, 4, MINB, ST, NW>;
    }
    return NULL;
}

/* Per-codec entry points (attn_<codec>_tc.cu): the tensor-core kernel for
 * (D, G, P), NULL when there is none (G > 4, P not a multiple of 16, D not
 * 64 / 128). */
kvl_cuda_split_fn kvl_cuda_pick_int4z_tc(int D, int G, int P);
kvl_cuda_split_fn kvl_cuda_pick_kivi2z_tc(int D, int G, int P);
kvl_cuda_split_fn kvl_cuda_pick_f16_tc(int D, int G, int P);
kvl_cuda_split_fn kvl_cuda_pick_int8_tc(int D, int G, int P);
kvl_cuda_split_fn kvl_cuda_pick_fp8_tc(int D, int G, int P);

#endif
