/* Paged decode attention with both products on the tensor cores (internal):
 * the key scores S = K Q^T and the value sums O^T = V^T P^T both by
 * mma.sync m16n8k16 (f16 inputs, f32 accumulation), one pass over each tile
 * with an online softmax per warp (no block barrier between the passes).
 * Instantiated in attn_int4z_tc.cu and attn_kivi2z_tc.cu; launched by
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
 * Codes become exact f16 integers: a 4-bit (2-bit) field placed under the
 * exponent bits 0x6400 is the half 1024 + c; minus the half pair (1024 + z)
 * it is c - z, exact (|c - z| < 2^8). Scales stay out of A: per-(token,
 * group) scales (int4z, KIVI values) multiply the probability in B (one B per
 * 32-channel group), per-(channel, page) scales (KIVI keys) the query in B
 * (one B per page). The dot products are permutation-invariant, so channels
 * and tokens are assigned to fragment slots in the order the page bytes
 * arrive (no page layout change; the layouts are the CPU codecs'):
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
 * B changes once per page), the next tile's loads issued before the current
 * tile's math; at the end the warps' (m, l, O) are merged in shared memory.
 * Sealing codecs: tiles of the sealed prefix with the sealed codec, the rest
 * with the open (f16) one, same channel order of O. Rows past the list end
 * are read (a tile lies in one page, P a multiple of 16) but get
 * probability 0, and their codes or f16 values are never used unmasked. */
#ifndef KVL_CUDA_ATTN_TC_CUH
#define KVL_CUDA_ATTN_TC_CUH

#include "cuda/attn_kernel.cuh"

#define TC_PS 20    /* probability buffer: floats per head (16 tokens + pad: fewer bank conflicts) */
#define TC_STAGES 4 /* tile ring stages per warp (codecs with kStage) */
#define TC_PS2 36   /* probability buffer of a tile pair: floats per head */

static __device__ __forceinline__ uint32_t tc_split2(float x0, float x1, bool lo) {
    const __half2 h = __floats2half2_rn(x0, x1);
    const float2 f = __half22float2(h);
    const uint32_t l = h2_bits(__floats2half2_rn((x0 - f.x) * 2048.0f, (x1 - f.y) * 2048.0f));
    return lo ? l : h2_bits(h); /* no branch: half the lanes of a warp take each */
}
/* fields at bits sh and 16 + sh as the halves (1024 + c) */
static __device__ __forceinline__ uint32_t tc_ex4(uint32_t x, int sh) { return ((x >> sh) & 0x000F000Fu) | 0x64006400u; }
static __device__ __forceinline__ uint32_t tc_ex2(uint32_t x, int sh) { return ((x >> sh) & 0x00030003u) | 0x64006400u; }
static __device__ __forceinline__ uint32_t tc_sub(uint32_t a, __half2 zz) {
    __half2 h;
    memcpy(&h, &a, 4);
    return h2_bits(__hsub2(h, zz));
}
/* (1024 + z_a, 1024 + z_b) for int8 zero points z; zx = the z bytes ^ 0x80
 * (z + 128), sel picks bytes a, b: 0x5140 = (0, 1), 0x5342 = (2, 3) */
static __device__ __forceinline__ __half2 tc_zz(uint32_t zx, uint32_t sel) {
    const uint32_t u = __byte_perm(zx, 0x6464u, sel);
    __half2 h;
    memcpy(&h, &u, 4);
    return __hsub2(h, __float2half2_rn(128.0f));
}
/* the same with the bias 1152 = 1024 + 128 (0x6480 | c): minus tc_zzb's
 * (1152 + z) it is c - z without tc_zz's subtraction */
static __device__ __forceinline__ uint32_t tc_ex4b(uint32_t x, int sh) { return ((x >> sh) & 0x000F000Fu) | 0x64806480u; }
static __device__ __forceinline__ uint32_t tc_ex2b(uint32_t x, int sh) { return ((x >> sh) & 0x00030003u) | 0x64806480u; }
/* (1152 + z_a, 1152 + z_b): zx = z bytes ^ 0x80, sel picks bytes a, b */
static __device__ __forceinline__ __half2 tc_zzb(uint32_t zx, uint32_t sel) {
    const uint32_t u = __byte_perm(zx, 0x6464u, sel);
    __half2 h;
    memcpy(&h, &u, 4);
    return h;
}
static __device__ __forceinline__ __half2 tc_h2(uint32_t u) {
    __half2 h;
    memcpy(&h, &u, 4);
    return h;
}
/* (a - zz) * s2 as bits: s (c - z), exact when it fits 11 bits (see the codecs) */
static __device__ __forceinline__ uint32_t tc_sm(uint32_t a, __half2 zz, __half2 s2) {
    return h2_bits(__hmul2(__hsub2(tc_h2(a), zz), s2));
}
/* loads from global memory (SH false: ld.global.nc) or from a shared stage */
template <bool SH> static __device__ __forceinline__ uint32_t tc_ld4(const uint8_t *p) {
    return SH ? *reinterpret_cast<const uint32_t *>(p) : kvl_cuda_ld4(p);
}
template <bool SH> static __device__ __forceinline__ uint32_t tc_ld2(const uint8_t *p) {
    return SH ? *reinterpret_cast<const unsigned short *>(p) : kvl_cuda_ld2(p);
}
template <bool SH> static __device__ __forceinline__ uint2 tc_ld8(const uint8_t *p) {
    return SH ? *reinterpret_cast<const uint2 *>(p) : kvl_cuda_ld8<0>(p);
}
static __device__ __forceinline__ void tc_cp16(void *dst, const void *src) {
    const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(d), "l"(src) : "memory");
}
static __device__ __forceinline__ void tc_cp_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N> static __device__ __forceinline__ void tc_cp_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory"); }
/* per-lane softmax state and O fragments (m-tile m, C registers) */
template <int D> struct tc_state {
    float m[2], l[2];
    float o[D / 16][4];
};

/* ---- int4z keys: A = c - z (row token, k = code nibbles), per group s on the C ----
 * k order of a step: lane tq's k 2tq, 2tq+1, 2tq+8, 2tq+9 = the low (step 0)
 * or high (step 1) nibbles of code bytes 4tq .. 4tq+3 of the group:
 * channels 32 gr + 16 ks + 4 tq + {0, 1, 2, 3}. */
template <int D> struct tc_i4k {
    static constexpr bool kPageB = false;
    struct Tile {
        uint32_t w[2][D / 32];
        uint32_t p[2][D / 64 > 0 ? D / 64 : 1]; /* the row's (scale, zero point) byte pairs */
        int pos[2];
    };
    struct QB {
        const uint4 *wb; /* the lane's B: wb[32 gr + lane] = steps 0, 1 of group gr (shared: registers) */
    };
    /* sq: shared [4][D] scaled queries (zero for pad heads) */
    static __device__ __forceinline__ void init(QB &qb, const float *sq, int lane, uint4 *wb) {
        const int n = lane >> 2, tq = lane & 3;
        const float *qh = sq + (n & 3) * D;
#pragma unroll
        for (int gr = 0; gr < D / 32; gr++) {
            const float4 v = *reinterpret_cast<const float4 *>(qh + 32 * gr + 4 * tq);
            const float4 u = *reinterpret_cast<const float4 *>(qh + 32 * gr + 16 + 4 * tq);
            wb[32 * gr + lane] = make_uint4(tc_split2(v.x, v.y, n >= 4), tc_split2(v.z, v.w, n >= 4),
                                            tc_split2(u.x, u.y, n >= 4), tc_split2(u.z, u.w, n >= 4));
        }
        qb.wb = wb;
    }
    static __device__ __forceinline__ void page(QB &, const Tile &, const float *, int) {}
    /* pg: the page (or a stage laid out as one: positions at 0, rows at off) */
    template <bool SH = false>
    static __device__ __forceinline__ void load(Tile &t, const uint8_t *pg, int off, int P, int r0, int lane) {
        constexpr int RB = D / 16 + D / 2;
        const int r = r0 + (lane >> 2), tq = lane & 3;
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const uint8_t *row = pg + off + (size_t)(r + 8 * h) * RB;
#pragma unroll
            for (int gr = 0; gr < D / 32; gr++) t.w[h][gr] = tc_ld4<SH>(row + D / 16 + 16 * gr + 4 * tq);
            if constexpr (D == 128) {
                const uint2 v = tc_ld8<SH>(row);
                t.p[h][0] = v.x, t.p[h][1] = v.y;
            } else {
                t.p[h][0] = tc_ld4<SH>(row);
            }
            t.pos[h] = (int)tc_ld4<SH>(pg + 4 * (r + 8 * h));
        }
    }
    /* Shared-memory ring (cp.async): a stage holds a tile's positions (64
     * bytes), K rows (16 RB) and V rows (16 RB), each contiguous in the page. */
    static constexpr int RB = D / 16 + D / 2, kStage = 64 + 32 * RB, kStageK = 64, kStageV = 64 + 16 * RB;
    static __device__ __forceinline__ void stage(uint8_t *st, const uint8_t *pg, int koff, int voff, int P, int r0,
                                                 int lane) {
        constexpr int NCH = kStage / 16, KCH = 16 * RB / 16;
        for (int c = lane; c < NCH; c += 32) {
            const uint8_t *src = c < 4 ? pg + 4 * r0 + 16 * c
                                 : c < 4 + KCH ? pg + koff + (size_t)r0 * RB + 16 * (c - 4)
                                               : pg + voff + (size_t)r0 * RB + 16 * (c - 4 - KCH);
            tc_cp16(st + 16 * c, src);
        }
    }
    /* d: C of the tile (hi and lo columns, not yet summed) */
    static __device__ __forceinline__ void score(const Tile &t, const QB &qb, float (&acc)[4]) {
#pragma unroll
        for (int gr = 0; gr < D / 32; gr++) {
            float sc[2];
            __half2 zz[2];
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const uint32_t pw = t.p[h][gr >> 1] >> (16 * (gr & 1));
                sc[h] = kvl_cuda_e5m3(pw);
                zz[h] = tc_zz((pw >> 8) ^ 0x80u, 0x4040u);
            }
            float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            const uint4 bb = qb.wb[32 * gr + (threadIdx.x & 31)];
#pragma unroll
            for (int ks = 0; ks < 2; ks++) {
                const uint32_t m0 = ks ? (t.w[0][gr] >> 4) & 0x0F0F0F0Fu : t.w[0][gr] & 0x0F0F0F0Fu;
                const uint32_t m1 = ks ? (t.w[1][gr] >> 4) & 0x0F0F0F0Fu : t.w[1][gr] & 0x0F0F0F0Fu;
                mma_16816(d, i4_pair(m0, 0x5140u, zz[0]), i4_pair(m1, 0x5140u, zz[1]), i4_pair(m0, 0x5342u, zz[0]),
                          i4_pair(m1, 0x5342u, zz[1]), ks ? bb.z : bb.x, ks ? bb.w : bb.y);
            }
            acc[0] = fmaf(sc[0], d[0], acc[0]);
            acc[1] = fmaf(sc[0], d[1], acc[1]);
            acc[2] = fmaf(sc[1], d[2], acc[2]);
            acc[3] = fmaf(sc[1], d[3], acc[3]);
        }
    }
};

/* ---- int4z values: A = s (c - z) (row channel, k token), B = p ----
 * s (c - z) is exact in f16: s has 4 significant bits and the encoder keeps
 * |c - z| <= 127 (scale >= max|x| / 112, kv/codec_int4.c), so the product
 * fits 11 bits, unless it leaves the f16 range (|value| > 65504: no f16 or
 * bf16 cache holds such values either). Lane gq reads code bytes 16 gr +
 * 2gq, 2gq + 1 of its 4 tokens: m-tile 2gr + mt (mt: low / high nibbles),
 * row gq = byte 2gq, row gq + 8 = byte 2gq + 1, i.e. channel 32 gr + 16 mt +
 * (r < 8 ? 2r : 2(r - 8) + 1). Tokens past the list: s = 0 (their bytes may
 * decode to inf). */
template <int D> struct tc_i4v {
    struct Tile {
        uint32_t c[4][D / 32];                    /* code byte pair of token 4tq + i, group gr */
        uint32_t prm[4][D / 64 > 0 ? D / 64 : 1]; /* (scale, zero point) bytes of the groups */
    };
    static __device__ __forceinline__ int chan(int m, int r) {
        return 32 * (m >> 1) + 16 * (m & 1) + (r < 8 ? 2 * r : 2 * (r - 8) + 1);
    }
    template <bool SH = false>
    static __device__ __forceinline__ void load(Tile &t, const uint8_t *pg, int off, int P, int r0, int lane) {
        constexpr int RB = D / 16 + D / 2;
        const int gq = lane >> 2, tq = lane & 3;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const uint8_t *row = pg + off + (size_t)(r0 + 4 * tq + i) * RB;
#pragma unroll
            for (int gr = 0; gr < D / 32; gr++) t.c[i][gr] = tc_ld2<SH>(row + D / 16 + 16 * gr + 2 * gq);
            if constexpr (D == 128) {
                const uint2 v = tc_ld8<SH>(row);
                t.prm[i][0] = v.x, t.prm[i][1] = v.y;
            } else {
                t.prm[i][0] = tc_ld4<SH>(row);
            }
        }
    }
    /* b: B of the tile (p of tokens 4tq + i for head gq & 3, hi or lo);
     * nv: how many of the lane's 4 tokens are in the list */
    static __device__ __forceinline__ void value(const Tile &t, const uint32_t (&b)[2], int nv, float (&o)[D / 16][4]) {
        const uint32_t m01 = (nv > 0 ? 0x0000FFFFu : 0u) | (nv > 1 ? 0xFFFF0000u : 0u);
        const uint32_t m23 = (nv > 2 ? 0x0000FFFFu : 0u) | (nv > 3 ? 0xFFFF0000u : 0u);
#pragma unroll
        for (int gr = 0; gr < D / 32; gr++) {
            /* [s, z] bytes of tokens (0, 1) and (2, 3): bytes 2(gr & 1), + 1 of each word */
            const uint32_t sel = (gr & 1) ? 0x7632u : 0x5410u;
            const uint32_t u01 = __byte_perm(t.prm[0][gr >> 1], t.prm[1][gr >> 1], sel);
            const uint32_t u23 = __byte_perm(t.prm[2][gr >> 1], t.prm[3][gr >> 1], sel);
            const __half2 s01 = tc_h2(((u01 & 0x00FF00FFu) << 7) & m01), s23 = tc_h2(((u23 & 0x00FF00FFu) << 7) & m23);
            const __half2 zz01 = tc_zzb(u01 ^ 0x80808080u, 0x5341u), zz23 = tc_zzb(u23 ^ 0x80808080u, 0x5341u);
            const uint32_t x01 = __byte_perm(t.c[0][gr], t.c[1][gr], 0x5410u);
            const uint32_t x23 = __byte_perm(t.c[2][gr], t.c[3][gr], 0x5410u);
#pragma unroll
            for (int mt = 0; mt < 2; mt++)
                mma_16816(o[2 * gr + mt], tc_sm(tc_ex4b(x01, 4 * mt), zz01, s01), tc_sm(tc_ex4b(x01, 8 + 4 * mt), zz01, s01),
                          tc_sm(tc_ex4b(x23, 4 * mt), zz23, s23), tc_sm(tc_ex4b(x23, 8 + 4 * mt), zz23, s23), b[0], b[1]);
        }
    }
};

/* ---- KIVI 2-bit keys, sealed pages: A = s (c - z) (row token), B = q ----
 * Token r's word for channel chunk jc (16 channels: slot s, field f =
 * channel 16 jc + 2f + s) at ((r / 8) NJC + jc) * 32 + 4 (r % 8). Lane tq
 * reads the words jc = NW tq .. NW tq + NW - 1 (NW = D / 64) of tokens gq,
 * gq + 8; k step ks: word ks / 4, fields 2 (ks % 4) (k 2tq, 2tq+1) and + 1
 * (k 2tq+8, 2tq+9): channels tq D/4 + 4 ks + {0, 1 | 2, 3}. Page parameters:
 * s8[D] (e5m3), z8[D] (int8) per channel after the codes: s (c - z) exact
 * in f16 as for int4z (the encoder keeps |c - z| <= 127, kv/codec_kivi.c);
 * the (s, 1152 + z) half pairs of the lane's channels are made once per
 * page from one word per lane (shuffled; it rides with each tile's loads);
 * the query's B lives in shared memory (registers). */
template <int D> struct tc_k2k {
    static constexpr bool kPageB = true;
    static constexpr int NJC = D / 16, NW = D / 64;
    /* Shared-memory ring stage: positions (64 bytes), K codes of the tile's
     * two token blocks (4D), the page's K parameters s8, z8 (2D), V codes
     * (D / 8 chunks of 32 bytes), V s8 and z8 of the tile (16 per group):
     * 64 + 11 D bytes, read by tc_k2k / tc_k2v load<true>. */
    static constexpr int kStage = 64 + 11 * D, kStageK = 64, kStageV = 64 + 6 * D;
    struct Tile {
        uint32_t w[2][NW];
        uint32_t s, z; /* scale / zero point bytes of channels tq D/4 + 4 (gq % (D/16)) + {0..3} */
        int pos[2];
    };
    struct QB {
        const uint4 *wb;                 /* the lane's B: wb[32 i + lane] = steps 2i, 2i + 1 (shared: registers) */
        __half2 s2[NJC][2], zz[NJC][2]; /* the page's (s, 1152 + z) pairs of step ks's channels */
    };
    static __device__ __forceinline__ void init(QB &qb, const float *sq, int lane, uint4 *wb) {
        const int n = lane >> 2, tq = lane & 3;
        const float *qh = sq + (n & 3) * D + tq * (D / 4);
#pragma unroll
        for (int i = 0; i < NJC / 2; i++) {
            const float4 v = *reinterpret_cast<const float4 *>(qh + 8 * i);
            const float4 u = *reinterpret_cast<const float4 *>(qh + 8 * i + 4);
            wb[32 * i + lane] = make_uint4(tc_split2(v.x, v.y, n >= 4), tc_split2(v.z, v.w, n >= 4),
                                           tc_split2(u.x, u.y, n >= 4), tc_split2(u.z, u.w, n >= 4));
        }
        qb.wb = wb;
    }
    static __device__ __forceinline__ void page(QB &qb, const Tile &t, const float *sq, int lane) {
        const int tq = lane & 3;
#pragma unroll
        for (int ks = 0; ks < NJC; ks++) {
            /* word ks of the lane's channels: held by lane (gq = ks, tq) */
            const uint32_t sw = __shfl_sync(0xffffffffu, t.s, 4 * ks + tq);
            const uint32_t zx = __shfl_sync(0xffffffffu, t.z, 4 * ks + tq) ^ 0x80808080u;
            qb.s2[ks][0] = tc_h2(__byte_perm(sw, 0u, 0x4140u) << 7);
            qb.s2[ks][1] = tc_h2(__byte_perm(sw, 0u, 0x4342u) << 7);
            qb.zz[ks][0] = tc_zzb(zx, 0x5140u);
            qb.zz[ks][1] = tc_zzb(zx, 0x5342u);
        }
    }
    static __device__ __forceinline__ void stage(uint8_t *st, const uint8_t *pg, int koff, int voff, int P, int r0,
                                                 int lane) {
        constexpr int NCH = kStage / 16;
        for (int c = lane; c < NCH; c += 32) {
            const uint8_t *src;
            if (c < 4) {
                src = pg + 4 * r0 + 16 * c;
            } else if (c < 4 + D / 4) {
                src = pg + koff + (size_t)(r0 >> 3) * NJC * 32 + 16 * (c - 4);
            } else if (c < 4 + D / 4 + D / 8) {
                src = pg + koff + (size_t)D * P / 4 + 16 * (c - 4 - D / 4);
            } else if (c < 4 + D / 2 + D / 8) {
                const int i = c - (4 + D / 4 + D / 8), ntc = P >> 4;
                src = pg + voff + ((size_t)(i >> 1) * ntc + (r0 >> 4)) * 32 + 16 * (i & 1);
            } else {
                const int i = c - (4 + D / 2 + D / 8); /* < NG: s8 of group i, else z8 of group i - NG */
                src = pg + voff + (size_t)D * P / 4 + (size_t)i * P + r0;
            }
            tc_cp16(st + 16 * c, src);
        }
    }
    template <bool SH = false>
    static __device__ __forceinline__ void load(Tile &t, const uint8_t *pg, int off, int P, int r0, int lane) {
        const int gq = lane >> 2, tq = lane & 3;
        const uint8_t *seg = pg + off;
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int tb = (r0 >> 3) + h;
#pragma unroll
            for (int w = 0; w < NW; w++) t.w[h][w] = tc_ld4<SH>(seg + ((size_t)tb * NJC + NW * tq + w) * 32 + 4 * gq);
            t.pos[h] = (int)tc_ld4<SH>(pg + 4 * (r0 + gq + 8 * h));
        }
        const uint8_t *prm = seg + (SH ? 4 * D : (size_t)D * P / 4) + tq * (D / 4) + 4 * (gq % (D / 16));
        t.s = tc_ld4<SH>(prm);
        t.z = tc_ld4<SH>(prm + D);
    }
    static __device__ __forceinline__ void score(const Tile &t, const QB &qb, float (&acc)[4]) {
        float d[4] = {0.0f, 0.0f, 0.0f, 0.0f}; /* odd steps: a second chain */
#pragma unroll
        for (int ks = 0; ks < NJC; ks++) {
            const int w = ks >> 2, sh = 4 * (ks & 3);
            const __half2 z0 = qb.zz[ks][0], z1 = qb.zz[ks][1], s0 = qb.s2[ks][0], s1 = qb.s2[ks][1];
            const uint4 bb = qb.wb[32 * (ks >> 1) + (threadIdx.x & 31)];
            mma_16816(ks & 1 ? d : acc, tc_sm(tc_ex2b(t.w[0][w], sh), z0, s0), tc_sm(tc_ex2b(t.w[1][w], sh), z0, s0),
                      tc_sm(tc_ex2b(t.w[0][w], sh + 2), z1, s1), tc_sm(tc_ex2b(t.w[1][w], sh + 2), z1, s1),
                      ks & 1 ? bb.z : bb.x, ks & 1 ? bb.w : bb.y);
        }
#pragma unroll
        for (int i = 0; i < 4; i++) acc[i] += d[i];
    }
};

/* ---- KIVI 2-bit values, sealed pages: A = s (c - z) (row channel, k token), B = p ----
 * Codes in 32-byte chunks (channel block kb of 8, token chunk tc of 16):
 * word k = channel 8 kb + k, slot s field f = token 16 tc + 2f + s; then
 * s8[NG][P], z8[NG][P] per (32-channel group, token). Lane gq reads words
 * 4(gq & 1) .. + 3 of block 4 gr + gq / 2 = channels 32 gr + 4 gq + {0..3};
 * fields 2tq, 2tq + 1 are the tokens 4tq .. 4tq + 3. m-tile 2gr + mt: row
 * gq = channel + 2mt, row gq + 8 = + 2mt + 1. Sealed pages are full, so
 * every token's parameters are finite. */
template <int D> struct tc_k2v {
    static constexpr int NG = D / 32;
    struct Tile {
        uint4 c[NG];
        uint32_t s[NG], z[NG];
    };
    static __device__ __forceinline__ int chan(int m, int r) { return 32 * (m >> 1) + 4 * (r & 7) + 2 * (m & 1) + (r >> 3); }
    /* SH: from a tc_k2k stage (codes at off, D / 8 chunks; then s8, z8 of 16 tokens per group) */
    template <bool SH = false>
    static __device__ __forceinline__ void load(Tile &t, const uint8_t *pg, int off, int P, int r0, int lane) {
        const int gq = lane >> 2, tq = lane & 3, ntc = SH ? 1 : P >> 4, tc = SH ? 0 : r0 >> 4, gs = SH ? 16 : P;
        const uint8_t *seg = pg + off, *ps = seg + (SH ? 4 * D : (size_t)D * P / 4 + r0) + 4 * tq;
#pragma unroll
        for (int gr = 0; gr < NG; gr++) {
            const uint8_t *cp = seg + ((size_t)(4 * gr + (gq >> 1)) * ntc + tc) * 32 + 16 * (gq & 1);
            t.c[gr] = SH ? *reinterpret_cast<const uint4 *>(cp) : kvl_cuda_ld16<0>(cp);
            t.s[gr] = tc_ld4<SH>(ps + (size_t)gr * gs);
            t.z[gr] = tc_ld4<SH>(ps + (size_t)(NG + gr) * gs);
        }
    }
    static __device__ __forceinline__ void value(const Tile &t, const uint32_t (&b)[2], int nv, float (&o)[D / 16][4]) {
        const int sh = 4 * (threadIdx.x & 3);
#pragma unroll
        for (int gr = 0; gr < NG; gr++) {
            const uint32_t sw = t.s[gr], zx = t.z[gr] ^ 0x80808080u;
            const __half2 s01 = tc_h2(__byte_perm(sw, 0u, 0x4140u) << 7), s23 = tc_h2(__byte_perm(sw, 0u, 0x4342u) << 7);
            const __half2 zz01 = tc_zzb(zx, 0x5140u), zz23 = tc_zzb(zx, 0x5342u);
            const uint32_t c[4] = {t.c[gr].x, t.c[gr].y, t.c[gr].z, t.c[gr].w};
#pragma unroll
            for (int mt = 0; mt < 2; mt++)
                mma_16816(o[2 * gr + mt], tc_sm(tc_ex2b(c[2 * mt], sh), zz01, s01), tc_sm(tc_ex2b(c[2 * mt + 1], sh), zz01, s01),
                          tc_sm(tc_ex2b(c[2 * mt], sh + 2), zz23, s23), tc_sm(tc_ex2b(c[2 * mt + 1], sh + 2), zz23, s23),
                          b[0], b[1]);
        }
    }
};

/* ---- f16 keys (open pages of a sealing codec): A = the halves (row token) ----
 * k step ks: channels tq D/4 + 4 ks + {0, 1 | 2, 3} (the KIVI key order);
 * lane tq reads its D/4 contiguous halves of tokens gq, gq + 8. */
template <int D> struct tc_hk {
    static constexpr bool kPageB = false;
    static constexpr int kStage = 0, kStageK = 0, kStageV = 0; /* no shared-memory ring */
    static constexpr int NJC = D / 16;
    struct Tile {
        uint4 v[2][D / 32];
        int pos[2];
    };
    struct QB {
        uint32_t b[NJC][2];
    };
    static __device__ __forceinline__ void init(QB &qb, const float *sq, int lane, uint4 *) {
        const int n = lane >> 2, tq = lane & 3;
        const float *qh = sq + (n & 3) * D + tq * (D / 4);
#pragma unroll
        for (int ks = 0; ks < NJC; ks++) {
            const float4 v = *reinterpret_cast<const float4 *>(qh + 4 * ks);
            qb.b[ks][0] = tc_split2(v.x, v.y, n >= 4);
            qb.b[ks][1] = tc_split2(v.z, v.w, n >= 4);
        }
    }
    template <class T> static __device__ __forceinline__ void page(QB &, const T &, const float *, int) {}
    static __device__ __forceinline__ void stage(uint8_t *, const uint8_t *, int, int, int, int, int) {}
    template <bool SH = false>
    static __device__ __forceinline__ void load(Tile &t, const uint8_t *pg, int off, int P, int r0, int lane) {
        const int gq = lane >> 2, tq = lane & 3;
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const uint8_t *row = pg + off + ((size_t)(r0 + gq + 8 * h) * D + tq * (D / 4)) * 2;
#pragma unroll
            for (int i = 0; i < D / 32; i++) t.v[h][i] = kvl_cuda_ld16<0>(row + 16 * i);
            t.pos[h] = __ldg(reinterpret_cast<const int32_t *>(pg) + r0 + gq + 8 * h);
        }
    }
    static __device__ __forceinline__ uint32_t word(const uint4 &u, int i) {
        return i == 0 ? u.x : i == 1 ? u.y : i == 2 ? u.z : u.w;
    }
    static __device__ __forceinline__ void score(const Tile &t, const QB &qb, float (&acc)[4]) {
        float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
        for (int ks = 0; ks < NJC; ks++) {
            const int i = ks >> 1, e = 2 * (ks & 1);
            mma_16816(ks & 1 ? d : acc, word(t.v[0][i], e), word(t.v[1][i], e), word(t.v[0][i], e + 1),
                      word(t.v[1][i], e + 1), qb.b[ks][0], qb.b[ks][1]);
        }
#pragma unroll
        for (int i = 0; i < 4; i++) acc[i] += d[i];
    }
};

/* ---- f16 values (open pages): A = the halves (row channel), in tc_k2v's channel order ----
 * Lane gq reads channels 32 gr + 4 gq + {0..3} (8 bytes) of its 4 tokens;
 * tokens past the list are zeroed (their bytes may be any f16, NaN too). */
template <int D> struct tc_hv {
    static constexpr int NG = D / 32;
    struct Tile {
        uint2 h[4][NG];
    };
    static __device__ __forceinline__ int chan(int m, int r) { return tc_k2v<D>::chan(m, r); }
    template <bool SH = false>
    static __device__ __forceinline__ void load(Tile &t, const uint8_t *pg, int off, int P, int r0, int lane) {
        const int gq = lane >> 2, tq = lane & 3;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const uint8_t *row = pg + off + (size_t)(r0 + 4 * tq + i) * D * 2 + 8 * gq;
#pragma unroll
            for (int gr = 0; gr < NG; gr++) t.h[i][gr] = kvl_cuda_ld8<0>(row + 64 * gr);
        }
    }
    static __device__ __forceinline__ void value(const Tile &t, const uint32_t (&b)[2], int nv, float (&o)[D / 16][4]) {
        const uint32_t b0 = b[0], b1 = b[1];
#pragma unroll
        for (int gr = 0; gr < NG; gr++) {
            uint32_t w[4][2];
#pragma unroll
            for (int i = 0; i < 4; i++) w[i][0] = i < nv ? t.h[i][gr].x : 0u, w[i][1] = i < nv ? t.h[i][gr].y : 0u;
#pragma unroll
            for (int mt = 0; mt < 2; mt++)
                mma_16816(o[2 * gr + mt], __byte_perm(w[0][mt], w[1][mt], 0x5410u), __byte_perm(w[0][mt], w[1][mt], 0x7632u),
                          __byte_perm(w[2][mt], w[3][mt], 0x5410u), __byte_perm(w[2][mt], w[3][mt], 0x7632u), b0, b1);
        }
    }
};

/* ---- the per-tile step and the tile loop ------------------------------------------------ */

struct tc_ctx {
    const uint8_t *const *pages;
    int koff, voff, P, logP, ntok, qp, lane;
    const float *sq; /* shared [4][D] */
    float *pb;       /* shared [4][TC_PS2]: this warp's probabilities (head stride TC_PS in tc_step) */
    uint4 *wb;       /* shared [D / 32][32]: this warp's key B (codecs that keep it there) */
    uint8_t *ring;   /* shared [TC_STAGES][KC::kStage]: this warp's tile ring (codecs with kStage) */
};

template <class KC, class VC, int D>
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
    const float4 pv = *reinterpret_cast<const float4 *>(x.pb + (gq & 3) * TC_PS + 4 * tq);
    __syncwarp();
    const uint32_t bp[2] = {tc_split2(pv.x, pv.y, gq >= 4), tc_split2(pv.z, pv.w, gq >= 4)};
    VC::value(vt, bp, x.ntok - j0 - 4 * tq, st.o);
}

/* Two tiles (j0, j0 + 16) with one softmax step: the two tiles' score
 * chains are independent, and the max / rescale / exchange cost halves per
 * token. two: whether the second tile is in the warp's range; sg[u]: the
 * stages holding them (V fragments read after the softmax). */
template <class KC, class VC, int D>
static __device__ __forceinline__ void tc_step2(const uint8_t *const (&sg)[2], bool two, typename KC::QB &qb, int &cur,
                                                tc_state<D> &st, int j0, const tc_ctx &x) {
    const int lane = x.lane, gq = lane >> 2, tq = lane & 3;
    float acc[2][4];
    int pos[2][2];
#pragma unroll
    for (int u = 0; u < 2; u++) {
#pragma unroll
        for (int i = 0; i < 4; i++) acc[u][i] = 0.0f;
        pos[u][0] = pos[u][1] = 0x7fffffff;
        if (u == 0 || two) {
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
#pragma unroll
        for (int u = 0; u < 2; u++)
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const int j = j0 + 16 * u + gq + 8 * h;
                sc[u][h] = j < jend && pos[u][h] <= x.qp ? acc[u][2 * h + e] : -INFINITY;
                mx = fmaxf(mx, sc[u][h]);
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
        if (u == 1 && !two) break;
        typename VC::Tile vt;
        VC::template load<true>(vt, sg[u], KC::kStageV, x.P, 0, lane);
        const uint32_t bp[2] = {tc_split2(pv[u].x, pv[u].y, gq >= 4), tc_split2(pv[u].z, pv[u].w, gq >= 4)};
        VC::value(vt, bp, x.ntok - (j0 + 16 * u) - 4 * tq, st.o);
    }
}

/* Tiles [ib, ie) through the warp's shared-memory ring of TC_STAGES stages
 * (cp.async, 16-byte pieces), two tiles per step (tc_step2): the next pair
 * in flight while one is used, without their registers. */
template <class KC, class VC, int D>
static __device__ __forceinline__ void tc_tiles_cp(int ib, int ie, tc_state<D> &st, const tc_ctx &x,
                                                   typename KC::QB &qb) {
    constexpr int S = TC_STAGES;
    int cur = -1; /* page of qb (page-parameter keys) */
    static_assert(S == 4, "pairs of tiles: two in use, two in flight");
    auto issue = [&](int it) {
        if (it < ie) {
            const int j0 = it << 4;
            KC::stage(x.ring + ((it - ib) % S) * KC::kStage, x.pages[j0 >> x.logP], x.koff, x.voff, x.P,
                      j0 & (x.P - 1), x.lane);
        }
        tc_cp_commit(); /* empty past the range: the wait below counts groups */
    };
    issue(ib);
    issue(ib + 1);
    for (int it = ib; it < ie; it += 2) {
        issue(it + 2); /* into the stages the previous pair used */
        issue(it + 3);
        tc_cp_wait<2>(); /* tiles it, it + 1 landed */
        __syncwarp();
        const uint8_t *const sg[2] = {x.ring + ((it - ib) % S) * KC::kStage, x.ring + ((it + 1 - ib) % S) * KC::kStage};
        tc_step2<KC, VC, D>(sg, it + 1 < ie, qb, cur, st, it << 4, x);
        __syncwarp(); /* the stages are refilled next iteration */
    }
    tc_cp_wait<0>();
}

/* Tiles [ib, ie) of the split with key codec KC and value codec VC; DB:
 * the next tile's loads in flight during the current tile's math (else one
 * tile at a time: the open pages of a sealing codec, few, saving registers). */
template <class KC, class VC, int D, bool DB>
static __device__ __forceinline__ void tc_tiles(int ib, int ie, tc_state<D> &st, const tc_ctx &x) {
    if (ib >= ie) return;
    typename KC::QB qb;
    KC::init(qb, x.sq, x.lane, x.wb);
    if constexpr (KC::kStage > 0) {
        tc_tiles_cp<KC, VC, D>(ib, ie, st, x, qb);
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
        tc_step<KC, VC, D>(k, v, qb, st, j0, x);
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

/* Block (split, h, b), NTHREADS threads, G <= 4. Shared memory (dynamic):
 * page addresses [pid_slots / 2], sq[4][D], pb[NWARPS][4][TC_PS],
 * wb[NWARPS][D / 32][32] (uint4), then red[NWARPS][G][D] or, for codecs
 * with a ring (int4z, kivi2z), the tile rings [NWARPS][TC_STAGES][KC::kStage]
 * bytes, each warp's red slice at the start of its ring. Sealing codecs (SEALED): KC/VC the sealed pages'
 * codecs, OKC/OVC the open pages'. part / out as decode_split_kernel. */
template <class KC, class VC, class OKC, class OVC, bool SEALED, int D, int G, int MINB>
__global__ void __launch_bounds__(NTHREADS, MINB) tc_split_kernel(const __grid_constant__ kvl_cuda_kargs a) {
    static_assert(G <= 4, "tensor-core kernel: at most 4 heads per kv-head");
    extern __shared__ float smem[];
    __shared__ float sm_m[NWARPS][4], sm_l[NWARPS][4];
    __shared__ int sm_nsp, sm_bad;
    const int split = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int n_head = a.n_head_kv * G, li = b * a.n_head_kv + h;
    const int logP = a.logP, P = a.P;
    const int chunk_tok = a.chunk_pages << logP, tok0 = split * chunk_tok;
    const int len = a.list_len[li];
    const int ntok = min(len - tok0, chunk_tok);
    const size_t rec = 2 + D;
    if (ntok <= 0) {
        for (int idx = tid; idx < G * D; idx += NTHREADS) {
            const int g = idx / D, d = idx % D;
            const size_t qh = (size_t)b * n_head + h * G + g;
            if (a.n_split == 1) {
                a.out[qh * D + d] = 0.0f;
            } else {
                float *rp = a.part + (qh * a.n_split + split) * rec;
                rp[2 + d] = 0.0f;
                if (d == 0) rp[0] = -INFINITY, rp[1] = 0.0f;
            }
        }
        return;
    }
    const uint8_t **pages = reinterpret_cast<const uint8_t **>(smem);
    /* with a ring, warp w's red slice is the start of its own ring (free after its tiles) */
    constexpr bool RING = KC::kStage > 0;
    float *sq = smem + a.pid_slots, *pb = sq + 4 * D; /* pb: [NWARPS][4][TC_PS2] */
    uint4 *wbuf = reinterpret_cast<uint4 *>(pb + NWARPS * 4 * TC_PS2); /* [NWARPS][D / 32][32] */
    uint8_t *ring = reinterpret_cast<uint8_t *>(wbuf + NWARPS * (D / 32) * 32);
    float *red = reinterpret_cast<float *>(ring); /* [NWARPS][G][D], or per warp at stride RSTR */
    constexpr int RSTR = RING ? TC_STAGES * KC::kStage / 4 : G * D;
    static_assert(!RING || RSTR >= G * D, "a warp's ring holds its red slice");
    const int npages = (ntok + P - 1) >> logP;
    const uint32_t *lp = a.page_ids + a.list_off[li] + (size_t)split * a.chunk_pages;
    if (SEALED && tid == 0) sm_nsp = 0, sm_bad = 0;
    if (SEALED) __syncthreads();
    for (int i = tid; i < npages; i += NTHREADS) {
        const uint32_t id = lp[i];
        pages[i] = kvl_cuda_page_addr(a.space, id);
        if (SEALED) {
            const bool si = (int)(id >> KVL_CUDA_CLASS_SHIFT) == a.sealed_cls;
            const bool sn = i + 1 < npages && (int)(lp[i + 1] >> KVL_CUDA_CLASS_SHIFT) == a.sealed_cls;
            if (si && !sn) sm_nsp = i + 1;
            if (!si && sn) sm_bad = 1;
        }
    }
    for (int i = tid; i < 4 * D; i += NTHREADS) {
        const int g = i / D;
        sq[i] = g < G ? __ldg(a.q + ((size_t)b * n_head + h * G + g) * D + i % D) * a.scale : 0.0f;
    }
    __syncthreads();
    const int nsT = SEALED ? min(sm_nsp << logP, ntok) : ntok;
    const int ntiles = (ntok + 15) >> 4, nst = SEALED ? (nsT + 15) >> 4 : ntiles;
    const int it0 = warp * ntiles / NWARPS, it1 = (warp + 1) * ntiles / NWARPS;
    tc_state<D> st;
    st.m[0] = st.m[1] = -INFINITY;
    st.l[0] = st.l[1] = 0.0f;
#pragma unroll
    for (int m = 0; m < D / 16; m++)
#pragma unroll
        for (int i = 0; i < 4; i++) st.o[m][i] = 0.0f;
    tc_ctx x = {pages, a.koff, a.voff, P, logP, ntok, a.qpos[b], lane, sq, pb + warp * 4 * TC_PS2,
                wbuf + warp * (D / 32) * 32, ring + (size_t)warp * TC_STAGES * KC::kStage};
    tc_tiles<KC, VC, D, true>(it0, min(it1, nst), st, x);
    if constexpr (SEALED) {
        x.koff = a.okoff, x.voff = a.ovoff;
        tc_tiles<OKC, OVC, D, false>(max(it0, nst), it1, st, x);
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
    for (int idx = tid; idx < G * D; idx += NTHREADS) {
        const int g = idx / D, d = idx % D;
        float M = -INFINITY;
#pragma unroll
        for (int w = 0; w < NWARPS; w++) M = fmaxf(M, sm_m[w][g]);
        float L = 0.0f, v = 0.0f;
        if (M != -INFINITY) {
#pragma unroll
            for (int w = 0; w < NWARPS; w++) {
                const float wt = __expf(sm_m[w][g] - M);
                L = fmaf(wt, sm_l[w][g], L);
                v = fmaf(wt, red[w * RSTR + g * D + d], v);
            }
        }
        const size_t qh = (size_t)b * n_head + h * G + g;
        if (a.n_split == 1) {
            a.out[qh * D + d] = (L > 0.0f ? v / L : 0.0f) + poison;
        } else {
            float *rp = a.part + (qh * a.n_split + split) * rec;
            rp[2 + d] = v + poison;
            if (d == 0) rp[0] = M, rp[1] = L;
        }
    }
}

/* Shared memory of tc_split_kernel beyond the page addresses, in floats;
 * stage_bytes: KC::kStage of its codec (kvl_cuda_tc_stage_bytes). */
static inline size_t kvl_cuda_tc_smem_floats(int D, int G, int stage_bytes) {
    return (size_t)4 * D + NWARPS * 4 * TC_PS2 + (size_t)NWARPS * D * 4 +
           (stage_bytes ? (size_t)NWARPS * TC_STAGES * stage_bytes / 4 : (size_t)NWARPS * G * D);
}
/* Bytes of a ring stage of the tensor-core kernel of a codec (0: no ring). */
static inline int kvl_cuda_tc_stage_bytes(kvl_cuda_codec c, int D) {
    return c == KVL_CUDA_CODEC_INT4Z ? 64 + 32 * (D / 16 + D / 2) : c == KVL_CUDA_CODEC_KIVI2Z ? 64 + 11 * D : 0;
}

/* Per-codec entry points (attn_<codec>_tc.cu): the tensor-core kernel for
 * (D, G, P), NULL when there is none (G > 4, P not a multiple of 16, D not
 * 64 / 128). */
kvl_cuda_split_fn kvl_cuda_pick_int4z_tc(int D, int G, int P);
kvl_cuda_split_fn kvl_cuda_pick_kivi2z_tc(int D, int G, int P);

#endif
