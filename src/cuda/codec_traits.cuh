/* Codec traits: how a kernel thread reads and dequantizes its piece of one
 * encoded row of a K or V segment (the byte layouts of src/kv/codec.c).
 *
 * A thread owns a chunk of 8 consecutive values (chunk c: elements 8c..8c+7)
 * of a row, so D/8 threads read one row and a warp reads 256/D rows per load
 * instruction, coalesced. A trait provides
 *   kUnroll                 rows per tile per thread (loads in flight)
 *   Raw                     the register image of one chunk (loaded first,
 *                           several rows in flight, converted later)
 *   load<H>(seg, P, D, r, c) Raw of row r, chunk c (seg: the segment's first
 *                           byte; H: load cache hints, kvl_cuda_ld16)
 *   row_scale(seg, P, r)    per-row factor applied to the dot product / the
 *                           probability (1 for codecs without one)
 *   to_float(raw, x[8])     exact conversion of the codes to floats
 * with x_true = row_scale * x. Codecs to come plug in the same way: int4 /
 * fp8 (per-row or per-group scales: Raw of 4 / 8 bytes, row_scale or a
 * group scale folded into to_float), KIVI 2/4-bit (per-channel key scales
 * of a sealed page: a per-page metadata load added to the trait, applied in
 * to_float by chunk). Kernels are templates on the trait; there is no
 * run-time codec switch inside a kernel. */
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

/* f16: P rows x D IEEE halves. */
struct kvl_cuda_f16 {
    typedef uint4 Raw; /* 8 halves, one 16-byte load */
    static constexpr bool kRowScale = false;
    static constexpr int kUnroll = 4; /* rows per tile per thread: 2 tiles x 4 x 16 B in flight */
    template <int H> static __device__ __forceinline__ Raw load(const uint8_t *seg, int P, int D, int r, int c) {
        return kvl_cuda_ld16<H>(seg + ((size_t)r * D + (size_t)c * 8) * 2);
    }
    static __device__ __forceinline__ Raw zero() { return make_uint4(0, 0, 0, 0); }
    static __device__ __forceinline__ float row_scale(const uint8_t *seg, int P, int r) { return 1.0f; }
    static __device__ __forceinline__ void to_float(const Raw &raw, float x[8]) {
        const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
        for (int i = 0; i < 4; i++) {
            __half2 h;
            memcpy(&h, &w[i], 4);
            const float2 f = __half22float2(h);
            x[2 * i] = f.x;
            x[2 * i + 1] = f.y;
        }
    }
};

/* int8: float scale[P], then int8 rows [P][D]; x = scale * code. */
struct kvl_cuda_int8 {
    typedef uint2 Raw; /* 8 codes, one 8-byte load */
    static constexpr bool kRowScale = true;
    static constexpr int kUnroll = 4; /* 8 rows ran 4-21% slower on the H200 (registers: 160 vs 123) */
    template <int H> static __device__ __forceinline__ Raw load(const uint8_t *seg, int P, int D, int r, int c) {
        return kvl_cuda_ld8<H>(seg + (size_t)P * 4 + (size_t)r * D + (size_t)c * 8);
    }
    static __device__ __forceinline__ Raw zero() { return make_uint2(0, 0); }
    static __device__ __forceinline__ float row_scale(const uint8_t *seg, int P, int r) {
        return __ldg(reinterpret_cast<const float *>(seg) + r);
    }
    static __device__ __forceinline__ void to_float(const Raw &raw, float x[8]) {
        /* exact, without I2F (quarter rate): code q + 128 = u in [1, 255] becomes
         * the float 2^23 + u by placing u under the exponent bits 0x4B, then
         * 2^23 + 128 is subtracted (both steps exact) */
        const uint32_t a = raw.x ^ 0x80808080u, b = raw.y ^ 0x80808080u;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            x[i] = __uint_as_float(__byte_perm(a, 0x4B000000u, 0x7540u | i)) - 8388736.0f;
            x[4 + i] = __uint_as_float(__byte_perm(b, 0x4B000000u, 0x7540u | i)) - 8388736.0f;
        }
    }
};

#endif
