/* IEEE half and bfloat16 <-> float conversions (portable scalar; F16C used by
 * SIMD kernels directly). */
#ifndef KVL_UTIL_FP16_H
#define KVL_UTIL_FP16_H

#include <stdint.h>
#include <string.h>

static inline float kvl_fp32_from_bits(uint32_t w) { float f; memcpy(&f, &w, 4); return f; }
static inline uint32_t kvl_fp32_to_bits(float f) { uint32_t w; memcpy(&w, &f, 4); return w; }

/* Half -> float, exact for all inputs including subnormals, inf, NaN. */
static inline float kvl_fp16_to_fp32(uint16_t h) {
    const uint32_t w = (uint32_t)h << 16;
    const uint32_t sign = w & 0x80000000u;
    const uint32_t two_w = w + w;
    const uint32_t exp_offset = 0xE0u << 23;
    const float exp_scale = kvl_fp32_from_bits(0x7800000u);
    const float normalized = kvl_fp32_from_bits((two_w >> 4) + exp_offset) * exp_scale;
    const uint32_t magic_mask = 126u << 23;
    const float magic_bias = 0.5f;
    const float denormalized = kvl_fp32_from_bits((two_w >> 17) | magic_mask) - magic_bias;
    const uint32_t denormalized_cutoff = 1u << 27;
    const uint32_t result = sign | (two_w < denormalized_cutoff ? kvl_fp32_to_bits(denormalized)
                                                                 : kvl_fp32_to_bits(normalized));
    return kvl_fp32_from_bits(result);
}

/* Float -> half, round to nearest even; overflow to inf, NaN preserved. */
static inline uint16_t kvl_fp32_to_fp16(float f) {
    const float scale_to_inf = kvl_fp32_from_bits(0x77800000u);
    const float scale_to_zero = kvl_fp32_from_bits(0x08800000u);
    float base = (f < 0 ? -f : f) * scale_to_inf * scale_to_zero;
    const uint32_t w = kvl_fp32_to_bits(f);
    const uint32_t shl1_w = w + w;
    const uint32_t sign = w & 0x80000000u;
    uint32_t bias = shl1_w & 0xFF000000u;
    if (bias < 0x71000000u) bias = 0x71000000u;
    base = kvl_fp32_from_bits((bias >> 1) + 0x07800000u) + base;
    const uint32_t bits = kvl_fp32_to_bits(base);
    const uint32_t exp_bits = (bits >> 13) & 0x00007C00u;
    const uint32_t mantissa_bits = bits & 0x00000FFFu;
    const uint32_t nonsign = exp_bits + mantissa_bits;
    return (uint16_t)((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
}

static inline float kvl_bf16_to_fp32(uint16_t h) { return kvl_fp32_from_bits((uint32_t)h << 16); }

/* Float -> bfloat16, round to nearest even, NaN kept quiet. */
static inline uint16_t kvl_fp32_to_bf16(float f) {
    uint32_t w = kvl_fp32_to_bits(f);
    if ((w & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((w >> 16) | 64);
    return (uint16_t)((w + (0x7fffu + ((w >> 16) & 1))) >> 16);
}

#endif
