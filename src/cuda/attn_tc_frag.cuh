/* Fragment builders of the tensor-core decode attention (internal; used by
 * attn_tc.cuh): per codec, how a warp's lanes load one 16-token tile of a
 * page (or of a shared-memory stage holding it) and turn it into mma.sync
 * m16n8k16 operands.
 *
 * Keys (tc_i4k int4z, tc_k2k sealed KIVI 2-bit, tc_hk open f16): A = 16
 * tokens x 16 channels, B = the query of the G <= 4 heads as hi + lo f16
 * columns (built once per block, kept in shared memory where registers are
 * short); score(tile, qb, acc) adds the C fragment (rows gq, gq + 8 =
 * tokens; columns 2tq, 2tq + 1, hi and lo not yet summed). Values (tc_i4v,
 * tc_k2v, tc_hv): A = 16 channels x 16 tokens (lane tq's k slots = tokens
 * 4tq .. 4tq + 3), B = the probabilities as hi + lo columns;
 * value(tile, b, nv, o) accumulates O^T, chan(m, r) names the channel of
 * row r of m-tile m. load<SH>(tile, pg, off, P, r0, lane) reads from a page
 * (SH false, ld.global.nc) or from a ring stage (SH true, stage(): the
 * tile's bytes copied by cp.async in the layout the loader expects).
 *
 * Exactness: codes become f16 integers (tc_ex4b / tc_ex2b: 1152 + c; minus
 * tc_zzb's 1152 + z: c - z); per-token and per-channel scales multiply on
 * the A side (tc_sm): s (c - z) is exact in f16 because s (an e5m3 byte,
 * the f16 bits b << 7) has 4 significant bits and the CPU encoders keep
 * |c - z| <= 127 (scale >= max|x| / (127 - maxq)), so the product fits 11
 * bits, unless it leaves the f16 range (|value| > 65504; no f16 or bf16
 * cache holds such values). int4z keys keep the group scale on C (one FMA
 * per group and row). The f32 operand x is hi = f16(x), lo = f16((x - hi)
 * 2^11) (tc_split2): ~2^-22 relative, fp32 accuracy for the sums. */
#ifndef KVL_CUDA_ATTN_TC_FRAG_CUH
#define KVL_CUDA_ATTN_TC_FRAG_CUH

#include "cuda/attn_kernel.cuh"

/* Tile ring stages per warp of each codec's tensor-core kernel (KC::kStages;
 * even, >= 4: two tiles in use, kStages - 2 in flight; attn_tc.cuh). The
 * macros let a device experiment build other depths (-DTC_STAGES_F16=6). */
#ifndef TC_STAGES_F16
#define TC_STAGES_F16 4
#endif
#ifndef TC_STAGES_B8
#define TC_STAGES_B8 4 /* int8, fp8 */
#endif
#ifndef TC_STAGES_INT4Z
#define TC_STAGES_INT4Z 4
#endif
#ifndef TC_STAGES_KIVI2Z
#define TC_STAGES_KIVI2Z 4
#endif
/* f16 only (attn_tc_f16.cuh, device experiments 2026-12-06): warps per
 * block of its tensor-core kernel (TC_WARPS_F16; the other codecs' kernels
 * have NWARPS) and tiles per softmax step through the ring (TC_STEP_F16: 2
 * = pairs, tc_step2, kStages even >= 4; 1 = one tile per step, tc_step,
 * kStages >= 2: one tile in use, kStages - 1 in flight). The plan
 * (attn_decode.cu) and the statistics instantiations follow both. */
#ifndef TC_WARPS_F16
#define TC_WARPS_F16 4
#endif
#ifndef TC_STEP_F16
#define TC_STEP_F16 2
#endif

static __device__ __forceinline__ uint32_t tc_split2(float x0, float x1, bool lo) {
    const __half2 h = __floats2half2_rn(x0, x1);
    const float2 f = __half22float2(h);
    const uint32_t l = h2_bits(__floats2half2_rn((x0 - f.x) * 2048.0f, (x1 - f.y) * 2048.0f));
    return lo ? l : h2_bits(h); /* no branch: half the lanes of a warp take each */
}
/* (1024 + z_a, 1024 + z_b) for int8 zero points z; zx = the z bytes ^ 0x80
 * (z + 128), sel picks bytes a, b: 0x5140 = (0, 1), 0x5342 = (2, 3) */
static __device__ __forceinline__ __half2 tc_zz(uint32_t zx, uint32_t sel) {
    const uint32_t u = __byte_perm(zx, 0x6464u, sel);
    __half2 h;
    memcpy(&h, &u, 4);
    return __hsub2(h, __float2half2_rn(128.0f));
}
/* 4-bit (2-bit) fields at bits sh and 16 + sh as the halves 1152 + c
 * (0x6480 | c): minus tc_zzb's (1152 + z) it is c - z, exact */
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
#if defined(KVL_TC_EXPT) && KVL_TC_EXPT == 2
    return a; /* device experiment: no dequantization (attn_tc.cuh) */
#endif
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
/* ---- int4z keys: A = c - z (row token, k = code nibbles), per group s on the C ----
 * k order of a step: lane tq's k 2tq, 2tq+1, 2tq+8, 2tq+9 = the low (step 0)
 * or high (step 1) nibbles of code bytes 4tq .. 4tq+3 of the group:
 * channels 32 gr + 16 ks + 4 tq + {0, 1, 2, 3}. */
template <int D> struct tc_i4k {
    static constexpr bool kPageB = false, kWB = true; /* kWB: the query's B in shared memory (wb) */
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
    static constexpr int kStages = TC_STAGES_INT4Z, kStep = 2;
    /* per segment, chunk i by lane i mod 32: compile-time offsets from one
     * per-tile base each (no per-chunk segment selection) */
    static __device__ __forceinline__ void stage(uint8_t *st, const uint8_t *pg, int koff, int voff, int P, int r0,
                                                 int lane) {
        constexpr int KCH = RB; /* 16 rows of RB bytes: RB chunks per segment */
        if (lane < 4) tc_cp16(st + 16 * lane, pg + 4 * r0 + 16 * lane);
        const uint8_t *sk = pg + koff + (size_t)r0 * RB + 16 * lane, *sv = pg + voff + (size_t)r0 * RB + 16 * lane;
        uint8_t *dk = st + 64 + 16 * lane;
#pragma unroll
        for (int k = 0; k < (KCH + 31) / 32; k++)
            if (32 * k + lane < KCH) {
                tc_cp16(dk + 512 * k, sk + 512 * k);
                tc_cp16(dk + 16 * KCH + 512 * k, sv + 512 * k);
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
 * bf16 cache holds such values either). Lane gq reads BPL = D / 16
 * contiguous code bytes of each of its 4 tokens, bytes BPL gq .. BPL gq +
 * BPL - 1 (one 8- or 4-byte load), which lie in one group of 32 channels,
 * so the lane needs one (scale, zero point) pair per token (one 2-byte
 * load, unpacked once per tile, not once per group). m-tile m = 4 j + 2 q
 * + hl: word j of the lane's bytes, byte pair q of the word (byte 2q: row
 * gq, byte 2q + 1: row gq + 8), nibble hl (low: channel 32 g + k of byte
 * 16 g + k, high: + 16). Tokens past the list: s = 0 (their bytes may
 * decode to inf). */
template <int D> struct tc_i4v {
    static constexpr int BPL = D / 16, NWL = BPL / 4; /* code bytes / words of a token per lane */
    struct Tile {
        uint32_t c[4][NWL]; /* code words of token 4tq + i, bytes BPL gq .. */
        uint32_t prm[4];    /* (scale, zero point) bytes of the lane's group, token 4tq + i (low 16 bits) */
    };
    /* the probabilities p (tokens 4tq .. 4tq + 3 of the lane) times per-token value scales: none here */
    static __device__ __forceinline__ void pmul(const Tile &, float4 &, int) {}
    static __device__ __forceinline__ int chan(int m, int r) {
        const int b = 4 * (m >> 2) + 2 * ((m >> 1) & 1) + (r >> 3), B = BPL * (r & 7) + b; /* code byte of the row */
        return 32 * (B >> 4) + (B & 15) + 16 * (m & 1);
    }
    template <bool SH = false>
    static __device__ __forceinline__ void load(Tile &t, const uint8_t *pg, int off, int P, int r0, int lane) {
        constexpr int RB = D / 16 + D / 2;
        const int gq = lane >> 2, tq = lane & 3;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const uint8_t *row = pg + off + (size_t)(r0 + 4 * tq + i) * RB;
            if constexpr (NWL == 2) {
                const uint2 v = tc_ld8<SH>(row + D / 16 + BPL * gq);
                t.c[i][0] = v.x, t.c[i][NWL - 1] = v.y;
            } else {
                t.c[i][0] = tc_ld4<SH>(row + D / 16 + BPL * gq);
            }
            t.prm[i] = tc_ld2<SH>(row + 2 * ((BPL * gq) >> 4));
        }
    }
    /* b: B of the tile (p of tokens 4tq + i for head gq & 3, hi or lo);
     * nv: how many of the lane's 4 tokens are in the list */
    static __device__ __forceinline__ void value(const Tile &t, const uint32_t (&b)[2], int nv, float (&o)[D / 16][4]) {
        const uint32_t m01 = (nv > 0 ? 0x0000FFFFu : 0u) | (nv > 1 ? 0xFFFF0000u : 0u);
        const uint32_t m23 = (nv > 2 ? 0x0000FFFFu : 0u) | (nv > 3 ? 0xFFFF0000u : 0u);
        /* [s, z] bytes of tokens (0, 1) and (2, 3) */
        const uint32_t u01 = __byte_perm(t.prm[0], t.prm[1], 0x5410u), u23 = __byte_perm(t.prm[2], t.prm[3], 0x5410u);
        const __half2 s01 = tc_h2(((u01 & 0x00FF00FFu) << 7) & m01), s23 = tc_h2(((u23 & 0x00FF00FFu) << 7) & m23);
        const __half2 zz01 = tc_zzb(u01 ^ 0x80808080u, 0x5341u), zz23 = tc_zzb(u23 ^ 0x80808080u, 0x5341u);
#pragma unroll
        for (int j = 0; j < NWL; j++)
#pragma unroll
            for (int q = 0; q < 2; q++) {
                /* bytes 2q, 2q + 1 of word j: token 0 (1) in the low (high) half */
                const uint32_t sel = q ? 0x7632u : 0x5410u;
                const uint32_t x01 = __byte_perm(t.c[0][j], t.c[1][j], sel), x23 = __byte_perm(t.c[2][j], t.c[3][j], sel);
#pragma unroll
                for (int hl = 0; hl < 2; hl++)
                    mma_16816(o[4 * j + 2 * q + hl], tc_sm(tc_ex4b(x01, 4 * hl), zz01, s01),
                              tc_sm(tc_ex4b(x01, 8 + 4 * hl), zz01, s01), tc_sm(tc_ex4b(x23, 4 * hl), zz23, s23),
                              tc_sm(tc_ex4b(x23, 8 + 4 * hl), zz23, s23), b[0], b[1]);
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
    static constexpr bool kPageB = true, kWB = true;
    static constexpr int NJC = D / 16, NW = D / 64;
    /* Shared-memory ring stage: positions (64 bytes), K codes of the tile's
     * two token blocks (4D), the page's K parameters s8, z8 (2D), V codes
     * (D / 8 chunks of 32 bytes), V s8 and z8 of the tile (16 per group):
     * 64 + 11 D bytes, read by tc_k2k / tc_k2v load<true>. */
    static constexpr int kStage = 64 + 11 * D, kStageK = 64, kStageV = 64 + 6 * D;
    static constexpr int kStages = TC_STAGES_KIVI2Z, kStep = 2;
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
    /* per segment, chunk i by lane i (every segment has <= 32 chunks at D
     * <= 128): no per-chunk segment selection */
    static __device__ __forceinline__ void stage(uint8_t *st, const uint8_t *pg, int koff, int voff, int P, int r0,
                                                 int lane) {
        static_assert(D / 4 <= 32, "one chunk per lane and segment");
        const int i = lane;
        if (i < 4) tc_cp16(st + 16 * i, pg + 4 * r0 + 16 * i); /* positions */
        if (i < D / 4) { /* K codes of the tile's two token blocks; V codes (chunk i / 2 of block i / 2) */
            tc_cp16(st + 64 + 16 * i, pg + koff + (size_t)(r0 >> 3) * NJC * 32 + 16 * i);
            tc_cp16(st + 64 + 6 * D + 16 * i, pg + voff + ((size_t)(i >> 1) * (P >> 4) + (r0 >> 4)) * 32 + 16 * (i & 1));
        }
        if (i < D / 8) tc_cp16(st + 64 + 4 * D + 16 * i, pg + koff + (size_t)D * P / 4 + 16 * i); /* K s8, z8 */
        if (i < D / 16) /* V: s8 of group i (< NG), else z8 of group i - NG, the tile's 16 tokens */
            tc_cp16(st + 64 + 10 * D + 16 * i, pg + voff + (size_t)D * P / 4 + (size_t)i * P + r0);
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
    /* the probabilities p (tokens 4tq .. 4tq + 3 of the lane) times per-token value scales: none here */
    static __device__ __forceinline__ void pmul(const Tile &, float4 &, int) {}
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
    static constexpr bool kPageB = false, kWB = false;
    static constexpr int kStage = 0, kStageK = 0, kStageV = 0, kStages = 0, kStep = 1; /* no shared-memory ring */
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
    /* the probabilities p (tokens 4tq .. 4tq + 3 of the lane) times per-token value scales: none here */
    static __device__ __forceinline__ void pmul(const Tile &, float4 &, int) {}
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

#endif
