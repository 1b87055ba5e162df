/* Fragment builders of the tensor-core decode attention for the one-byte
 * codecs with a per-token scale, int8 and fp8 (internal; used by
 * attn_tc.cuh through attn_b8_tc.cu). Page segment: float scale[P], then P
 * rows of D codes (codec_traits.cuh kvl_cuda_int8 / kvl_cuda_fp8). A tile
 * goes page -> ring stage (cp.async) -> registers (ld.shared) -> exact f16
 * codes -> mma:
 *  - int8: byte c ^ 0x80 under the exponent bits 0x64 is the half 1152 + c;
 *    minus 1152 it is c exactly (|c| <= 127);
 *  - fp8: cvt.rn.f16x2.e4m3x2 (every e4m3 value is a half; sm_89+), else the
 *    bits moved into a half (the value times 2^-8, exact; scale * 256).
 * The key scale multiplies the score rows (C rows = tokens), the value scale
 * the probabilities before their hi + lo split (k = tokens): pmul.
 *
 * Stage (kStage = 192 + 32 D bytes): positions (64), K scales (64), K codes
 * (16 rows of D bytes), V scales (64), V codes. 16-byte chunk c of row r of
 * the K codes at slot c ^ (r & (CPR - 1)) (CPR = D / 16 chunks per row), of
 * the V codes at c ^ (2 ((r >> 2) & 3) & (CPR - 1)): the reads of a phase
 * (keys: 8 lanes = 2 rows x 4 chunks; values: 4 rows x 8 words) fall in
 * distinct banks (D 128; D 64 keys too, values 2-way).
 *
 * Keys: lane tq holds the D / 4 contiguous codes tq D/4 .. of tokens gq,
 * gq + 8; k step ks = its codes 4 ks .. 4 ks + 3 (k 2tq, 2tq+1 | 2tq+8,
 * 2tq+9); B = q at those channels (head gq & 3, hi / lo). Values: lane gq
 * holds codes 32 gr + 4 gq .. + 3 of tokens 4tq .. 4tq+3; m-tile 2 gr + mt,
 * row gq = byte 2 mt, row gq + 8 = byte 2 mt + 1 (chan as tc_k2v). Tokens
 * past the list: value codes and scales zeroed (their bytes may be NaN). */
#ifndef KVL_CUDA_ATTN_TC_B8_CUH
#define KVL_CUDA_ATTN_TC_B8_CUH

#include "cuda/attn_tc_frag.cuh"

/* two codes (bytes 0, 1 of u) as an f16 pair: FP8 e4m3 (times 2^-8 without
 * the sm_89 convert), else int8 given as c ^ 0x80 */
template <bool FP8> static __device__ __forceinline__ uint32_t tc_b8pair(uint32_t u) {
    if constexpr (FP8) {
#if KVL_CUDA_FP8_CVT
        uint32_t h;
        const unsigned short b = (unsigned short)u;
        asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(h) : "h"(b));
        return h;
#else
        const uint32_t t = __byte_perm(u, 0, 0x1404); /* [0, b0, 0, b1] */
        return (t & 0x80008000u) | ((t >> 1) & 0x3f803f80u);
#endif
    } else {
        return h2_bits(__hsub2(tc_h2(__byte_perm(u, 0x6464u, 0x5140u)), __float2half2_rn(1152.0f)));
    }
}
/* the f16 value of a scale unit: 1, or 256 for fp8 without the convert */
template <bool FP8> static __device__ __forceinline__ float tc_b8unit() {
    return FP8 && !KVL_CUDA_FP8_CVT ? 256.0f : 1.0f;
}

template <int D, bool FP8> struct tc_bk {
    static constexpr bool kPageB = false, kWB = false;
    static constexpr int NK = D / 16, CPR = D / 16, NV = D / 64;
    static constexpr int kStage = 192 + 32 * D, kStageK = 64, kStageV = 128 + 16 * D, kStages = TC_STAGES_B8, kStep = 2;
    struct Tile {
        uint4 c[2][NV];
        float s[2];
        int pos[2];
    };
    struct QB {
        uint32_t b[NK][2];
    };
    static __device__ __forceinline__ void init(QB &qb, const float *sq, int lane, uint4 *) {
        const int n = lane >> 2, tq = lane & 3;
        const float *qh = sq + (n & 3) * D + tq * (D / 4);
#pragma unroll
        for (int ks = 0; ks < NK; ks++) {
            const float4 v = *reinterpret_cast<const float4 *>(qh + 4 * ks);
            qb.b[ks][0] = tc_split2(v.x, v.y, n >= 4);
            qb.b[ks][1] = tc_split2(v.z, v.w, n >= 4);
        }
    }
    template <class T> static __device__ __forceinline__ void page(QB &, const T &, const float *, int) {}
    static __device__ __forceinline__ void stage(uint8_t *st, const uint8_t *pg, int koff, int voff, int P, int r0,
                                                 int lane) {
        if (lane < 12) { /* positions, K scales, V scales of rows r0 .. r0 + 15 */
            const int part = lane >> 2, c = lane & 3;
            const uint8_t *src = part == 0 ? pg + 4 * r0 : pg + (part == 1 ? koff : voff) + 4 * r0;
            tc_cp16(st + (part == 0 ? 0 : part == 1 ? 64 : 128 + 16 * D) + 16 * c, src + 16 * c);
        }
#pragma unroll
        for (int q = lane; q < 2 * D; q += 32) {
            const int kv = q / D, row = (q / CPR) & 15, ch = q % CPR;
            const int sw = kv ? (2 * ((row >> 2) & 3)) & (CPR - 1) : row & (CPR - 1);
            tc_cp16(st + (kv ? 192 + 16 * D : 128) + row * D + 16 * (ch ^ sw),
                    pg + (kv ? voff : koff) + 4 * P + (size_t)(r0 + row) * D + 16 * ch);
        }
    }
    /* SH true only (the ring): pg = the stage, off = kStageK */
    template <bool SH = false>
    static __device__ __forceinline__ void load(Tile &t, const uint8_t *pg, int off, int, int, int lane) {
        const int gq = lane >> 2, tq = lane & 3;
        const float *sc = reinterpret_cast<const float *>(pg + off);
        const uint8_t *codes = pg + off + 64;
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int r = gq + 8 * h;
#pragma unroll
            for (int i = 0; i < NV; i++)
                t.c[h][i] = *reinterpret_cast<const uint4 *>(codes + r * D + 16 * ((NV * tq + i) ^ (r & (CPR - 1))));
            t.s[h] = sc[r] * tc_b8unit<FP8>();
            t.pos[h] = *reinterpret_cast<const int *>(pg + 4 * r);
        }
    }
    static __device__ __forceinline__ uint32_t word(const uint4 &u, int i) {
        return i == 0 ? u.x : i == 1 ? u.y : i == 2 ? u.z : u.w;
    }
    static __device__ __forceinline__ void score(const Tile &t, const QB &qb, float (&acc)[4]) {
        float d[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
#pragma unroll
        for (int ks = 0; ks < NK; ks++) {
            uint32_t w0 = word(t.c[0][ks >> 2], ks & 3), w1 = word(t.c[1][ks >> 2], ks & 3);
            if (!FP8) w0 ^= 0x80808080u, w1 ^= 0x80808080u;
            mma_16816(d[ks & 1], tc_b8pair<FP8>(w0), tc_b8pair<FP8>(w1), tc_b8pair<FP8>(w0 >> 16),
                      tc_b8pair<FP8>(w1 >> 16), qb.b[ks][0], qb.b[ks][1]);
        }
        acc[0] = fmaf(t.s[0], d[0][0] + d[1][0], acc[0]);
        acc[1] = fmaf(t.s[0], d[0][1] + d[1][1], acc[1]);
        acc[2] = fmaf(t.s[1], d[0][2] + d[1][2], acc[2]);
        acc[3] = fmaf(t.s[1], d[0][3] + d[1][3], acc[3]);
    }
};

template <int D, bool FP8> struct tc_bv {
    static constexpr int NG = D / 32, CPR = D / 16;
    struct Tile {
        uint32_t w[4][NG]; /* codes 32 gr + 4 gq .. + 3 of token 4tq + i */
        float s[4];
    };
    static __device__ __forceinline__ int chan(int m, int r) { return 32 * (m >> 1) + 4 * (r & 7) + 2 * (m & 1) + (r >> 3); }
    template <bool SH = false>
    static __device__ __forceinline__ void load(Tile &t, const uint8_t *pg, int off, int, int, int lane) {
        const int gq = lane >> 2, tq = lane & 3;
        const float *sc = reinterpret_cast<const float *>(pg + off);
        const uint8_t *codes = pg + off + 64;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int r = 4 * tq + i, sw = (2 * ((r >> 2) & 3)) & (CPR - 1);
#pragma unroll
            for (int gr = 0; gr < NG; gr++)
                t.w[i][gr] = *reinterpret_cast<const uint32_t *>(codes + r * D + 16 * ((2 * gr + (gq >> 2)) ^ sw) + 4 * (gq & 3));
            t.s[i] = sc[r] * tc_b8unit<FP8>();
        }
    }
    /* p of the lane's tokens times their value scales (0 past the list) */
    static __device__ __forceinline__ void pmul(const Tile &t, float4 &p, int nv) {
        p.x *= nv > 0 ? t.s[0] : 0.0f;
        p.y *= nv > 1 ? t.s[1] : 0.0f;
        p.z *= nv > 2 ? t.s[2] : 0.0f;
        p.w *= nv > 3 ? t.s[3] : 0.0f;
    }
    static __device__ __forceinline__ void value(const Tile &t, const uint32_t (&b)[2], int nv, float (&o)[D / 16][4]) {
        /* fp8 codes past the list may be NaN: zero them (int8 codes are always finite) */
        uint32_t k01 = 0xFFFFFFFFu, k23 = 0xFFFFFFFFu;
        if (FP8 && nv < 4) {
            k01 = (nv > 0 ? 0x0000FFFFu : 0u) | (nv > 1 ? 0xFFFF0000u : 0u);
            k23 = (nv > 2 ? 0x0000FFFFu : 0u);
        }
#pragma unroll
        for (int gr = 0; gr < NG; gr++) {
            uint32_t w[4];
#pragma unroll
            for (int i = 0; i < 4; i++) w[i] = FP8 ? t.w[i][gr] : t.w[i][gr] ^ 0x80808080u;
#pragma unroll
            for (int mt = 0; mt < 2; mt++) {
                /* [tok 0, tok 1] of bytes 2mt, 2mt + 1: (row gq | row gq + 8) */
                const uint32_t sel = mt ? 0x7362u : 0x5140u;
                const uint32_t u01 = __byte_perm(w[0], w[1], sel), u23 = __byte_perm(w[2], w[3], sel);
                mma_16816(o[2 * gr + mt], tc_b8pair<FP8>(u01) & k01, tc_b8pair<FP8>(u01 >> 16) & k01,
                          tc_b8pair<FP8>(u23) & k23, tc_b8pair<FP8>(u23 >> 16) & k23, b[0], b[1]);
            }
        }
    }
};

#endif
