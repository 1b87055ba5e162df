/* KIVI segment layouts (shared by the scalar codec in codec_kivi.c and the
 * AVX2 kernels in codec_kivi_avx2.c).
 *
 * KIVI (Liu et al., arXiv 2402.02750): keys are quantized per channel over the
 * page's P tokens, values per token in groups of KIVI_VG channels; both
 * asymmetric b-bit, x ~= s * c + z with c in [0, 2^b - 1], s and z stored as
 * IEEE halves (the reference stores them in the model dtype, fp16).
 *
 * Compact-parameter variants (kivi2z / kivi3z / kivi4z and V twins
 * kivi2zv / kivi3zv / kivi4zv): the same groups, the parameters in 16 bits
 * per group as int4z: an unsigned e5m3 scale byte s8 (the upper byte of an
 * IEEE half less its sign: s = half(s8 << 7)) and an int8 zero point z8 in
 * units of the scale, x ~= s * (c - z8), i.e. min = -z8 * s (exact in f32).
 *
 * Codes are packed into chunks of 16 little 16-bit "slots"; a slot holds F/2
 * codes ("fields"), so a chunk holds 8 x F codes: b = 2, 4: F = 32 / b, field
 * f at bits [b*f, b*f + b), chunk = 32 bytes; b = 3: F = 16, two bit planes,
 * chunk = 48 bytes: the 32-byte low plane holds bits 0-1 of each code as in
 * b = 2 (field f at bits [2f, 2f + 2) of its slot), then 16 bytes, byte t
 * bit f = bit 2 of field f of slot t (exactly 3 bits/code, and one 16-byte
 * load widened to 16 slots gives every slot its high bits). Slots 2k and
 * 2k+1 form 32-bit lane k, the lane the AVX2 kernels accumulate in
 * (vpmaddwd multiplies the two slots of a lane by a pair of int16 factors
 * and adds them):
 *
 *  K segment: codes [NTB][NJC] chunks, NTB = ceil(P/8) token blocks, NJC =
 *     ceil(D/F) channel chunks; in chunk (tb, jc), lane k is token 8*tb + k,
 *     slot 2k + e field f is channel F*jc + 2f + e. Then the per-channel
 *     parameters: s[D] then z[D] (f16 each, or s8[D] then z8[D] bytes).
 *  V segment: codes [NB][NTC] chunks, NB = ceil(D/8) channel blocks, NTC =
 *     ceil(P/F) token chunks; in chunk (kb, tc), lane k is channel 8*kb + k,
 *     slot 2k + e field f is token F*tc + 2f + e. Then s[NG][P] then
 *     z[NG][P] (f16 each, or bytes s8 / z8; NG = ceil(D/KIVI_VG) groups of
 *     channels, group-major so that 8 tokens' parameters are one load).
 * Padding (tokens >= P, channels >= D) holds code 0. */
#ifndef KVL_KV_CODEC_KIVI_H
#define KVL_KV_CODEC_KIVI_H

#include <stddef.h>

#include "kv/codec.h"
#include "util/fp16.h"

#define KIVI_VG 32 /* channels per V group (KIVI's default group size) */

/* Codes per lane of a chunk (b = 2, 3, 4) and bytes of a chunk. */
static inline int kivi_fields(int bits) { return bits == 3 ? 16 : 32 / bits; }
static inline int kivi_chunk_bytes(int bits) { return bits == 3 ? 48 : 32; }
static inline int kivi_cdiv(int a, int b) { return (a + b - 1) / b; }
/* Bytes of one parameter (s or z) of a group: f16 (z = 0) or one byte (z = 1). */
static inline int kivi_pbytes(int z) { return z ? 1 : 2; }

/* K: bytes of the code chunks; offset of s[D] is that, z[D] follows. */
static inline size_t kivi_k_code_bytes(int bits, int D, int P) {
    return (size_t)kivi_cdiv(P, 8) * (size_t)kivi_cdiv(D, kivi_fields(bits)) * (size_t)kivi_chunk_bytes(bits);
}
static inline size_t kivi_k_seg_bytes_z(int bits, int z, int D, int P) {
    return kivi_k_code_bytes(bits, D, P) + (size_t)D * 2 * (size_t)kivi_pbytes(z);
}
static inline size_t kivi_k_seg_bytes(int bits, int D, int P) { return kivi_k_seg_bytes_z(bits, 0, D, P); }
/* V: bytes of the code chunks; s[NG][P] follows, then z[NG][P]. */
static inline size_t kivi_v_code_bytes(int bits, int D, int P) {
    return (size_t)kivi_cdiv(D, 8) * (size_t)kivi_cdiv(P, kivi_fields(bits)) * (size_t)kivi_chunk_bytes(bits);
}
static inline size_t kivi_v_seg_bytes_z(int bits, int z, int D, int P) {
    return kivi_v_code_bytes(bits, D, P) + (size_t)kivi_cdiv(D, KIVI_VG) * (size_t)P * 2 * (size_t)kivi_pbytes(z);
}
static inline size_t kivi_v_seg_bytes(int bits, int D, int P) { return kivi_v_seg_bytes_z(bits, 0, D, P); }

/* Compact parameters: the scale of an e5m3 byte, and the decoder's (s, min). */
static inline float kivi_e5m3(uint8_t b) { return kvl_fp16_to_fp32((uint16_t)(b << 7)); }
static inline void kivi_zparams(uint8_t s8, uint8_t z8, float *s, float *mn) {
    *s = kivi_e5m3(s8);
    *mn = -(float)(int8_t)z8 * *s;
}

/* AVX2 kernels (codec_kivi_avx2.c): fill *out for the K (is_v = 0) or V codec
 * of `bits` (2, 3 or 4; z: compact parameters; (3, 0) does not exist) at head_dim D and return 1 when the build and CPU support
 * them and D % 8 == 0, D <= KIVI_DMAX, P <= KIVI_PMAX at call time. */
#define KIVI_DMAX 512
#define KIVI_PMAX 256
int kvl_kivi_avx2_kernels(int bits, int z, int is_v, int D, kvl_codec_kernels *out);

/* Write channel j of a K segment with f16 parameters (layout above): codes
 * c [P] (< 2^bits) and the f16 bits of its scale and min (x ~= s * c + z).
 * For seals built elsewhere (SQuat, codec_squat.c). */
void kvl_kivi_k_put_channel(int bits, uint8_t *seg, int D, int P, int j, const uint8_t *c, uint16_t s16,
                            uint16_t z16);
/* The validate hook of the KIVI formats (kv/codec.h): parameters of a
 * sealed K (is_v = 0) or V segment finite; 0 = valid, -1 = not. */
int kvl_kivi_validate(int bits, int z, int is_v, const uint8_t *seg, int D, int P, int n_rows);
/* The registered codec of (bits, z, is_v) (NULL: none). */
const kvl_codec *kvl_kivi_codec(int bits, int z, int is_v);

#endif
