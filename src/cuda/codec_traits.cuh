/* Codec traits: how a kernel thread reads and dequantizes its piece of one
 * encoded row of a K or V segment (the byte layouts of src/kv/codec*.c).
 *
 * A thread owns a chunk of 8 values of a row (chunk c of D/8), so D/8
 * threads read one row and a warp reads 256/D rows per load instruction. The
 * 8 values of chunk c are the channels chan(c, e), e < 8: 8c + e for f16,
 * int8 and fp8; a permutation of 8c..8c+7 for the KIVI keys (the order in
 * which their packed codes unpack); for int4z channels 32(c/4) + 4(c%4) +
 * {0..3, 16..19} (the low and high nibbles of 4 code bytes). A trait provides
 *   kUnroll                  rows per tile per thread (loads in flight)
 *   kRowScale                a per-row factor row_scale applied to the dot
 *                            product / the probability (int8, fp8)
 *   kChunkScale              a per-(row, chunk) factor returned by to_float,
 *                            applied to the thread's partial dot product
 *                            before the row reduction / to the probability
 *                            (int4z's group scale)
 *   kPage                    per-page parameters of the thread's channels
 *                            (KIVI keys: per-channel scale and zero point over
 *                            the page): PageRaw loaded with the tile
 *                            (load_page), decoded once per tile (decode_page);
 *                            a tile then must lie within one page
 *   Raw                      the register image of one chunk (loaded first,
 *                            several rows in flight, converted later)
 *   chan(c, e)               channel of value e of chunk c
 *   load<H>(seg, P, D, r, c) Raw of row r, chunk c (seg: the segment's first
 *                            byte; H: load cache hints, kvl_cuda_ld16)
 *   to_float(raw, pg, c, x, sc)  exact conversion to floats: value e of the
 *                            row is row_scale * sc * x[e]
 *   kMMA                     the keys' scores run on the tensor cores
 *                            (score_rows_mma in attn_kernel.cuh, G <= 4)
 * Conversions are exact (every code and parameter is a small integer or a
 * short mantissa), so the device and the CPU reference differ only by the
 * order of their float sums. Kernels are templates on the trait; there is
 * no run-time codec switch inside a kernel. The KIVI values (per token over
 * 32-channel groups, codes of 8 or 16 tokens of one channel per 32-bit word)
 * are read by a loop of their own (kivi_v in attn_kernel.cuh), not a trait. */
#ifndef KVL_CUDA_CODEC_TRAITS_CUH
#define KVL_CUDA_CODEC_TRAITS_CUH

#include <cuda_fp16.h>
#include <stdint.h>

/* Loads of codes. H (a kernel variant): 0 = ld.global.nc (__ldg); 1 = also
 * L1::no_allocate and an L2 prefetch of the 256-byte block; 2 =
 * L1::no_allocate only. */
template <int H> static __device__ __forceinline__ uint4 kvl_cuda_ld16(const void *p) {
    if (H == 0) return __ldg(reinterpret_cast<const uint4 *>(p));
    uint4 v;
    if (H == 1)
        asm("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];"
            : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
    else
        asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
            : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
    return v;
}
template <int H> static __device__ __forceinline__ uint2 kvl_cuda_ld8(const void *p) {
    if (H == 0) return __ldg(reinterpret_cast<const uint2 *>(p));
    uint2 v;
    if (H == 1)
        asm("ld.global.nc.L1::no_allocate.L2::256B.v2.u32 {%0, %1}, [%2];" : "=r"(v.x), "=r"(v.y) : "l"(p));
    else
        asm("ld.global.nc.L1::no_allocate.v2.u32 {%0, %1}, [%2];" : "=r"(v.x), "=r"(v.y) : "l"(p));
    return v;
}
static __device__ __forceinline__ uint32_t kvl_cuda_ld4(const void *p) {
    return __ldg(reinterpret_cast<const unsigned int *>(p));
}
static __device__ __forceinline__ uint32_t kvl_cuda_ld2(const void *p) {
    return __ldg(reinterpret_cast<const unsigned short *>(p));
}

/* Byte i (< 4, compile-time) of w as the float 2^23 + byte, exact (no I2F:
 * the byte is placed under the exponent bits 0x4B). */
template <int I> static __device__ __forceinline__ float kvl_cuda_b2f(uint32_t w) {
    return __uint_as_float(__byte_perm(w, 0x4B000000u, 0x7540u | I));
}
/* e5m3 scale byte (int4z, KIVI z formats): the IEEE half b << 7. */
static __device__ __forceinline__ float kvl_cuda_e5m3(uint32_t b) {
    return __half2float(__ushort_as_half((unsigned short)((b & 0xffu) << 7)));
}

/* No per-page parameters. */
struct kvl_cuda_nopage {};

/* f16: P rows x D IEEE halves. PERM: the channel order (the open pages of a
 * KIVI list are read in the order of its sealed keys, so one set of query
 * registers serves both). */
template <int PERM> struct kvl_cuda_f16p {
    typedef uint4 Raw; /* 8 halves, one 16-byte load */
    typedef kvl_cuda_nopage PageRaw;
    typedef kvl_cuda_nopage Page;
    static constexpr bool kRowScale = false, kChunkScale = false, kPage = false, kMMA = false;
    static constexpr int kUnroll = 4; /* rows per tile per thread: 2 tiles x 4 x 16 B in flight */
    static __device__ __forceinline__ int chan(int c, int e) { return 8 * c + perm(e); }
    static __host__ __device__ __forceinline__ constexpr int perm(int e) {
        /* PERM 1 (KIVI 4-bit keys): 0 4 1 5 2 6 3 7; PERM 2 (2-bit): 0 2 1 3 4 6 5 7 */
        return PERM == 1 ? ((e & 1) ? 4 : 0) + (e >> 1) : PERM == 2 ? (e & 4) + ((e & 1) << 1) + ((e >> 1) & 1) : e;
    }
    template <int H> static __device__ __forceinline__ Raw load(const uint8_t *seg, int P, int D, int r, int c) {
        return kvl_cuda_ld16<H>(seg + ((size_t)r * D + (size_t)c * 8) * 2);
    }
    static __device__ __forceinline__ Raw zero() { return make_uint4(0, 0, 0, 0); }
    static __device__ __forceinline__ float row_scale(const uint8_t *seg, int P, int r) { return 1.0f; }
    template <int H> static __device__ __forceinline__ PageRaw load_page(const uint8_t *seg, int P, int D, int c) {
        return PageRaw();
    }
    static __device__ __forceinline__ Page decode_page(const PageRaw &) { return Page(); }
    static __device__ __forceinline__ void to_float(const Raw &raw, const Page &, int c, float x[8], float &sc) {
        const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
        float h[8];
#pragma unroll
        for (int i = 0; i < 4; i++) {
            __half2 v;
            memcpy(&v, &w[i], 4);
            const float2 f = __half22float2(v);
            h[2 * i] = f.x;
            h[2 * i + 1] = f.y;
        }
#pragma unroll
        for (int e = 0; e < 8; e++) x[e] = h[perm(e)];
        sc = 1.0f;
    }
};
typedef kvl_cuda_f16p<0> kvl_cuda_f16;

/* int8: float scale[P], then int8 rows [P][D]; x = scale * code. */
struct kvl_cuda_int8 {
    typedef uint2 Raw; /* 8 codes, one 8-byte load */
    typedef kvl_cuda_nopage PageRaw;
    typedef kvl_cuda_nopage Page;
    static constexpr bool kRowScale = true, kChunkScale = false, kPage = false, kMMA = false;
    static constexpr int kUnroll = 4; /* 8 rows ran 4-21% slower on the H200 (registers: 160 vs 123) */
    static __device__ __forceinline__ int chan(int c, int e) { return 8 * c + e; }
    template <int H> static __device__ __forceinline__ Raw load(const uint8_t *seg, int P, int D, int r, int c) {
        return kvl_cuda_ld8<H>(seg + (size_t)P * 4 + (size_t)r * D + (size_t)c * 8);
    }
    static __device__ __forceinline__ Raw zero() { return make_uint2(0, 0); }
    static __device__ __forceinline__ float row_scale(const uint8_t *seg, int P, int r) {
        return __ldg(reinterpret_cast<const float *>(seg) + r);
    }
    template <int H> static __device__ __forceinline__ PageRaw load_page(const uint8_t *seg, int P, int D, int c) {
        return PageRaw();
    }
    static __device__ __forceinline__ Page decode_page(const PageRaw &) { return Page(); }
    static __device__ __forceinline__ void to_float(const Raw &raw, const Page &, int c, float x[8], float &sc) {
        /* exact, without I2F (quarter rate): code q + 128 = u in [1, 255] becomes
         * the float 2^23 + u, then 2^23 + 128 is subtracted (both steps exact) */
        const uint32_t a = raw.x ^ 0x80808080u, b = raw.y ^ 0x80808080u;
        x[0] = kvl_cuda_b2f<0>(a) - 8388736.0f, x[1] = kvl_cuda_b2f<1>(a) - 8388736.0f;
        x[2] = kvl_cuda_b2f<2>(a) - 8388736.0f, x[3] = kvl_cuda_b2f<3>(a) - 8388736.0f;
        x[4] = kvl_cuda_b2f<0>(b) - 8388736.0f, x[5] = kvl_cuda_b2f<1>(b) - 8388736.0f;
        x[6] = kvl_cuda_b2f<2>(b) - 8388736.0f, x[7] = kvl_cuda_b2f<3>(b) - 8388736.0f;
        sc = 1.0f;
    }
};

/* fp8 (codec_fp8.c): float scale[P], then P rows of D e4m3 bytes; value =
 * scale * e4m3(b). sm_89 and later convert two bytes per instruction
 * (cvt.rn.f16x2.e4m3x2, exact: every e4m3 value is a half). Elsewhere the
 * byte's bits moved into an IEEE half, h = (b & 0x80) << 8 | (b & 0x7f) << 7,
 * are the e4m3 value times 2^-8 exactly (subnormals included), and the row
 * scale is scale * 256 (exact), as in the CPU decode. */
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
#define KVL_CUDA_FP8_CVT 1
#else
#define KVL_CUDA_FP8_CVT 0
#endif
struct kvl_cuda_fp8 {
    typedef uint2 Raw; /* 8 codes, one 8-byte load */
    typedef kvl_cuda_nopage PageRaw;
    typedef kvl_cuda_nopage Page;
    static constexpr bool kRowScale = true, kChunkScale = false, kPage = false, kMMA = false;
    static constexpr int kUnroll = 4;
    static __device__ __forceinline__ int chan(int c, int e) { return 8 * c + e; }
    template <int H> static __device__ __forceinline__ Raw load(const uint8_t *seg, int P, int D, int r, int c) {
        return kvl_cuda_ld8<H>(seg + (size_t)P * 4 + (size_t)r * D + (size_t)c * 8);
    }
    static __device__ __forceinline__ Raw zero() { return make_uint2(0, 0); }
    static __device__ __forceinline__ float row_scale(const uint8_t *seg, int P, int r) {
        return __ldg(reinterpret_cast<const float *>(seg) + r) * (KVL_CUDA_FP8_CVT ? 1.0f : 256.0f);
    }
    template <int H> static __device__ __forceinline__ PageRaw load_page(const uint8_t *seg, int P, int D, int c) {
        return PageRaw();
    }
    static __device__ __forceinline__ Page decode_page(const PageRaw &) { return Page(); }
    /* codes (b0, b1) = bytes 2i, 2i + 1 of w -> their values (times 2^-8 without cvt) */
    template <int I> static __device__ __forceinline__ float2 pair(uint32_t w) {
        uint32_t h;
#if KVL_CUDA_FP8_CVT
        const unsigned short b = (unsigned short)(w >> (16 * I));
        asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(h) : "h"(b));
#else
        const uint32_t t = __byte_perm(w, 0, I ? 0x3424 : 0x1404); /* [0, b0, 0, b1]: b << 8 in each half */
        h = (t & 0x80008000u) | ((t >> 1) & 0x3f803f80u);
#endif
        __half2 v;
        memcpy(&v, &h, 4);
        return __half22float2(v);
    }
    static __device__ __forceinline__ void to_float(const Raw &raw, const Page &, int c, float x[8], float &sc) {
        const float2 f0 = pair<0>(raw.x), f1 = pair<1>(raw.x), f2 = pair<0>(raw.y), f3 = pair<1>(raw.y);
        x[0] = f0.x, x[1] = f0.y, x[2] = f1.x, x[3] = f1.y, x[4] = f2.x, x[5] = f2.y, x[6] = f3.x, x[7] = f3.y;
        sc = 1.0f;
    }
};

/* int4z (codec_int4.c, G = 32 with zero points): row r at r * RB, RB =
 * 2 * D/32 + D/2: [(e5m3 scale, int8 z) per group of 32][codes D/2 bytes];
 * channel 32g + k is the low nibble of code byte 16g + k (k < 16), the high
 * nibble of byte 16g + k - 16 otherwise; value = s * (c - z). Chunk c reads
 * the 4 code bytes 4c..4c+3 (group c/4): low nibbles = channels 32(c/4) +
 * 4(c%4) + 0..3, high nibbles the same + 16. The group scale is the chunk
 * scale; c - z is exact (both biased by 2^23 + 128). */
struct kvl_cuda_int4z {
    typedef uint2 Raw; /* x: 4 code bytes, y: the group's (scale, zero point) bytes */
    typedef kvl_cuda_nopage PageRaw;
    typedef kvl_cuda_nopage Page;
    static constexpr bool kRowScale = false, kChunkScale = true, kPage = false, kMMA = true;
    static constexpr int kUnroll = 4;
    static __device__ __forceinline__ int chan(int c, int e) {
        return 32 * (c >> 2) + 4 * (c & 3) + (e < 4 ? e : 12 + e);
    }
    template <int H> static __device__ __forceinline__ Raw load(const uint8_t *seg, int P, int D, int r, int c) {
        const uint8_t *row = seg + (size_t)r * (size_t)(D / 16 + D / 2);
        return make_uint2(kvl_cuda_ld4(row + D / 16 + 4 * c), kvl_cuda_ld2(row + 2 * (c >> 2)));
    }
    static __device__ __forceinline__ Raw zero() { return make_uint2(0, 0); }
    static __device__ __forceinline__ float row_scale(const uint8_t *seg, int P, int r) { return 1.0f; }
    template <int H> static __device__ __forceinline__ PageRaw load_page(const uint8_t *seg, int P, int D, int c) {
        return PageRaw();
    }
    static __device__ __forceinline__ Page decode_page(const PageRaw &) { return Page(); }
    static __device__ __forceinline__ void to_float(const Raw &raw, const Page &, int c, float x[8], float &sc) {
        sc = kvl_cuda_e5m3(raw.y);
        const float zb = __uint_as_float(0x4B000000u | (((raw.y >> 8) & 0xffu) ^ 0x80u)); /* 2^23 + 128 + z */
        const uint32_t lo = (raw.x & 0x0F0F0F0Fu) | 0x80808080u, hi = ((raw.x >> 4) & 0x0F0F0F0Fu) | 0x80808080u;
        x[0] = kvl_cuda_b2f<0>(lo) - zb, x[1] = kvl_cuda_b2f<1>(lo) - zb;
        x[2] = kvl_cuda_b2f<2>(lo) - zb, x[3] = kvl_cuda_b2f<3>(lo) - zb;
        x[4] = kvl_cuda_b2f<0>(hi) - zb, x[5] = kvl_cuda_b2f<1>(hi) - zb;
        x[6] = kvl_cuda_b2f<2>(hi) - zb, x[7] = kvl_cuda_b2f<3>(hi) - zb;
    }
};

/* KIVI keys, sealed pages (codec_kivi.h, compact parameters): codes in
 * 32-byte chunks (token block tb = r/8, channel chunk jc), lane word r%8 of
 * a chunk = token r; in it 16-bit slot s, field f holds channel F jc + 2f + s
 * (F = 32 / BITS channels per word); then s8[D] (e5m3) and z8[D] (int8)
 * per channel over the page: value = s (c - z). 4-bit: chunk c's 8
 * channels are one word; 2-bit: a word holds 16 channels, chunk c takes
 * fields 4(c%2)..4(c%2)+3 of both slots (byte c%2 of each slot). Unpacked
 * channel orders: kvl_cuda_f16p<BITS == 4 ? 1 : 2>::perm. The page's 8
 * scales and zero points of the chunk are decoded once per tile;
 * value = fmaf(c, s, -z s), exact (|c - z| < 2^8, s a 4-bit mantissa). */
template <int BITS> struct kvl_cuda_kivi_k {
    typedef uint32_t Raw;
    struct PageRaw { uint2 s, z; };
    struct Page { float s[8], m[8]; };
    static constexpr bool kRowScale = false, kChunkScale = false, kPage = true, kMMA = false;
    static constexpr int kUnroll = 4; /* upper bound; the kernel keeps a tile within 16 rows (a page) */
    static constexpr int PERM = BITS == 4 ? 1 : 2;
    static __device__ __forceinline__ int chan(int c, int e) { return 8 * c + kvl_cuda_f16p<PERM>::perm(e); }
    template <int H> static __device__ __forceinline__ Raw load(const uint8_t *seg, int P, int D, int r, int c) {
        const int njc = D * BITS / 32, jc = BITS == 4 ? c : c >> 1;
        return kvl_cuda_ld4(seg + ((size_t)(r >> 3) * njc + jc) * 32 + 4 * (r & 7));
    }
    static __device__ __forceinline__ Raw zero() { return 0u; }
    static __device__ __forceinline__ float row_scale(const uint8_t *seg, int P, int r) { return 1.0f; }
    template <int H> static __device__ __forceinline__ PageRaw load_page(const uint8_t *seg, int P, int D, int c) {
        const uint8_t *prm = seg + (size_t)D * P * BITS / 8;
        PageRaw pr;
        pr.s = kvl_cuda_ld8<0>(prm + 8 * c);
        pr.z = kvl_cuda_ld8<0>(prm + D + 8 * c);
        return pr;
    }
    static __device__ __forceinline__ Page decode_page(const PageRaw &pr) {
        Page pg;
#pragma unroll
        for (int e = 0; e < 8; e++) {
            const int k = kvl_cuda_f16p<PERM>::perm(e); /* byte k of the 8 */
            const uint32_t sw = k < 4 ? pr.s.x : pr.s.y, zw = k < 4 ? pr.z.x : pr.z.y;
            const float s = kvl_cuda_e5m3(sw >> (8 * (k & 3)));
            const float z = (float)(int8_t)(uint8_t)(zw >> (8 * (k & 3)));
            pg.s[e] = s;
            pg.m[e] = -z * s;
        }
        return pg;
    }
    static __device__ __forceinline__ void to_float(const Raw &raw, const Page &pg, int c, float x[8], float &sc) {
        uint32_t a, b;
        if (BITS == 4) {
            a = raw & 0x0F0F0F0Fu, b = (raw >> 4) & 0x0F0F0F0Fu;
        } else {
            const uint32_t v = (raw >> (8 * (c & 1))) & 0x00FF00FFu, u = v | (v << 6);
            a = u & 0x03030303u, b = (u >> 4) & 0x03030303u;
        }
        x[0] = fmaf(kvl_cuda_b2f<0>(a) - 8388608.0f, pg.s[0], pg.m[0]);
        x[1] = fmaf(kvl_cuda_b2f<1>(a) - 8388608.0f, pg.s[1], pg.m[1]);
        x[2] = fmaf(kvl_cuda_b2f<2>(a) - 8388608.0f, pg.s[2], pg.m[2]);
        x[3] = fmaf(kvl_cuda_b2f<3>(a) - 8388608.0f, pg.s[3], pg.m[3]);
        x[4] = fmaf(kvl_cuda_b2f<0>(b) - 8388608.0f, pg.s[4], pg.m[4]);
        x[5] = fmaf(kvl_cuda_b2f<1>(b) - 8388608.0f, pg.s[5], pg.m[5]);
        x[6] = fmaf(kvl_cuda_b2f<2>(b) - 8388608.0f, pg.s[6], pg.m[6]);
        x[7] = fmaf(kvl_cuda_b2f<3>(b) - 8388608.0f, pg.s[7], pg.m[7]);
        sc = 1.0f;
    }
};

#endif
