/* Fragment builders of the tensor-core decode attention for f16 pages
 * (internal; used by attn_tc.cuh through attn_f16_tc.cu): f16 needs no
 * fragment building, so a 16-token tile goes page -> shared-memory ring
 * stage (cp.async, 16-byte pieces, swizzled) -> registers by ldmatrix
 * (keys, token-major rows = the A layout) and ldmatrix.trans (values: V^T
 * from the same token-major rows) -> mma. The f32 query and probabilities
 * enter as hi + lo f16 columns as for the other codecs (attn_tc.cuh), so
 * f16 x (hi + lo / 2^11) keeps fp32 accuracy.
 *
 * Stage (kStage = 64 + 64 D bytes): the tile's 16 positions (int32), K rows
 * 0..15 (2D bytes each) at kStageK, V rows at kStageV. 16-byte chunk c of
 * row r sits at chunk slot c ^ f(r), f(r) = (r & 7) ^ ((r >> 2) & 2): the
 * eight rows of every 8x8 matrix that ldmatrix reads (K: tokens 0..7 or
 * 8..15; V: tokens {0,1,4,5,8,9,12,13} or those + 2) have distinct f, so the
 * eight 16-byte reads of a phase fall in distinct bank quads (row strides
 * are multiples of 128 bytes, D 64 / 128).
 *
 * Keys: k step ks = channels 16 ks .. 16 ks + 15 in order (ldmatrix x4:
 * tokens 0-7 / 8-15 x chunks 2ks / 2ks + 1 = a0..a3); B = q[16 ks + 2tq,
 * +1 | +8, +9] of head gq & 3 (hi / lo). Values: m-tile m = channels 16 m ..
 * 16 m + 15 (chan(m, r) = 16 m + r); k slots 2tq, 2tq+1, 2tq+8, 2tq+9 =
 * tokens 4tq .. 4tq+3 (the framework's P layout): ldmatrix.trans rows are
 * tokens tau(i) = (i & 1) + 4 (i >> 1) (+ 2 for a2, a3). Tokens past the
 * list are zeroed on the value side (their bytes may be any f16, NaN too). */
#ifndef KVL_CUDA_ATTN_TC_F16_CUH
#define KVL_CUDA_ATTN_TC_F16_CUH

#include "cuda/attn_tc_frag.cuh"

static __device__ __forceinline__ int tc_swz(int r) { return (r & 7) ^ ((r >> 2) & 2); }
/* four 8x8 b16 matrices from shared memory (lane L gives row L & 7 of matrix L >> 3) */
static __device__ __forceinline__ void tc_ldm4(uint32_t (&r)[4], const uint8_t *p) {
    const unsigned a = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}
static __device__ __forceinline__ void tc_ldm4t(uint32_t (&r)[4], const uint8_t *p) {
    const unsigned a = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

/* ---- f16 keys from a ring stage: A = K rows (row token, k channel), B = q ---- */
template <int D> struct tc_fk {
    static constexpr bool kPageB = false, kWB = false;
    static constexpr int NK = D / 16;
    static constexpr int kStage = 64 + 64 * D, kStageK = 64, kStageV = 64 + 32 * D, kStages = TC_STAGES_F16,
                         kStep = TC_STEP_F16; /* tiles per softmax step (attn_tc_frag.cuh) */
    struct Tile {
        uint32_t a[NK][4];
        int pos[2];
    };
    struct QB {
        uint32_t b[NK][2];
    };
    /* sq: shared [4][D] scaled queries (zero for pad heads) */
    static __device__ __forceinline__ void init(QB &qb, const float *sq, int lane, uint4 *) {
        const int n = lane >> 2, tq = lane & 3;
        const float *qh = sq + (n & 3) * D + 2 * tq;
#pragma unroll
        for (int ks = 0; ks < NK; ks++) {
            const float2 v = *reinterpret_cast<const float2 *>(qh + 16 * ks);
            const float2 u = *reinterpret_cast<const float2 *>(qh + 16 * ks + 8);
            qb.b[ks][0] = tc_split2(v.x, v.y, n >= 4);
            qb.b[ks][1] = tc_split2(u.x, u.y, n >= 4);
        }
    }
    template <class T> static __device__ __forceinline__ void page(QB &, const T &, const float *, int) {}
    /* the tile's positions, K and V rows of page pg (rows r0 .. r0 + 15) into stage st */
    /* Lane = (l, ch): chunk ch of rows l + RPK j (j < KPK) of K and V. The
     * swizzle of those rows is l ^ tc_swz(RPK j) (l < RPK leaves the row's
     * bit 2 and the (row >> 2) & 2 term alone), so every destination is a
     * per-lane base plus a compile-time offset xor-ed with a compile-time
     * constant, and every source a per-tile base plus a constant: no index
     * arithmetic per 16-byte copy (it was ~1/4 of the f16 kernel's
     * instructions; RESULTS 2026-12-03b). */
    static __device__ __forceinline__ void stage(uint8_t *st, const uint8_t *pg, int koff, int voff, int P, int r0,
                                                 int lane) {
        constexpr int CPR = D / 8, RPK = 32 / CPR, KPK = 16 / RPK; /* chunks per row, rows per step, steps */
        if (lane < 4) tc_cp16(st + 16 * lane, pg + 4 * r0 + 16 * lane);
        const int l = lane / CPR, ch = lane % CPR, x = 16 * (ch ^ l);
        uint8_t *dst = st + 64 + l * 2 * D;
        const uint8_t *sk = pg + koff + (size_t)(r0 + l) * 2 * D + 16 * ch, *sv = sk + (voff - koff);
#pragma unroll
        for (int kv = 0; kv < 2; kv++)
#pragma unroll
            for (int j = 0; j < KPK; j++)
                tc_cp16(dst + kv * 32 * D + RPK * j * 2 * D + (x ^ (16 * tc_swz(RPK * j))), (kv ? sv : sk) + RPK * j * 2 * D);
    }
    /* SH true only (the ring): pg = the stage, off = kStageK */
    template <bool SH = false>
    static __device__ __forceinline__ void load(Tile &t, const uint8_t *pg, int off, int, int, int lane) {
        const int mi = lane >> 3, r = (lane & 7) + 8 * (mi & 1), g = (mi >> 1) ^ tc_swz(r);
        const uint8_t *row = pg + off + r * 2 * D;
#pragma unroll
        for (int ks = 0; ks < NK; ks++) tc_ldm4(t.a[ks], row + 16 * ((2 * ks) ^ g));
        const int gq = lane >> 2;
        t.pos[0] = *reinterpret_cast<const int *>(pg + 4 * gq);
        t.pos[1] = *reinterpret_cast<const int *>(pg + 4 * (gq + 8));
    }
    static __device__ __forceinline__ void score(const Tile &t, const QB &qb, float (&acc)[4]) {
        float d[4] = {0.0f, 0.0f, 0.0f, 0.0f}; /* odd steps: a second chain */
#pragma unroll
        for (int ks = 0; ks < NK; ks++)
            mma_16816(ks & 1 ? d : acc, t.a[ks][0], t.a[ks][1], t.a[ks][2], t.a[ks][3], qb.b[ks][0], qb.b[ks][1]);
#pragma unroll
        for (int i = 0; i < 4; i++) acc[i] += d[i];
    }
};

/* ---- f16 values from a ring stage: A = V^T (row channel, k token), B = p ---- */
template <int D> struct tc_fv {
    static constexpr int NM = D / 16;
    struct Tile {
        uint32_t a[NM][4];
    };
    static __device__ __forceinline__ int chan(int m, int r) { return 16 * m + r; }
    static __device__ __forceinline__ void pmul(const Tile &, float4 &, int) {}
    template <bool SH = false>
    static __device__ __forceinline__ void load(Tile &t, const uint8_t *pg, int off, int, int, int lane) {
        const int mi = lane >> 3, i = lane & 7, r = (i & 1) + 4 * (i >> 1) + 2 * (mi >> 1), g = (mi & 1) ^ tc_swz(r);
        const uint8_t *row = pg + off + r * 2 * D;
#pragma unroll
        for (int m = 0; m < NM; m++) tc_ldm4t(t.a[m], row + 16 * ((2 * m) ^ g));
    }
    /* b: B of the tile (p of tokens 4tq + i for head gq & 3, hi or lo);
     * nv: how many of the lane's 4 tokens are in the list */
    static __device__ __forceinline__ void value(const Tile &t, const uint32_t (&b)[2], int nv, float (&o)[D / 16][4]) {
        if (__all_sync(0xffffffffu, nv >= 4)) { /* a full tile (all but a list's last): no masks */
#pragma unroll
            for (int m = 0; m < NM; m++) mma_16816(o[m], t.a[m][0], t.a[m][1], t.a[m][2], t.a[m][3], b[0], b[1]);
            return;
        }
        uint32_t k01 = 0xFFFFFFFFu, k23 = 0xFFFFFFFFu;
        if (nv < 4) {
            k01 = (nv > 0 ? 0x0000FFFFu : 0u) | (nv > 1 ? 0xFFFF0000u : 0u);
            k23 = (nv > 2 ? 0x0000FFFFu : 0u);
        }
#pragma unroll
        for (int m = 0; m < NM; m++)
            mma_16816(o[m], t.a[m][0] & k01, t.a[m][1] & k01, t.a[m][2] & k23, t.a[m][3] & k23, b[0], b[1]);
    }
};

#endif
