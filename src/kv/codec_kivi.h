/* KIVI segment layouts (shared by the scalar codec in codec_kivi.c and the
 * AVX2 kernels in codec_kivi_avx2.c).
 *
 * KIVI (Liu et al., arXiv 2402.02750): keys are quantized per channel over the
 * page's P tokens, values per token in groups of KIVI_VG channels; both
 * asymmetric b-bit, x ~= s * c + z with c in [0, 2^b - 1], s and z stored as
 * IEEE halves (the reference stores them in the model dtype, fp16).
 *
 * Codes are packed into 32-byte chunks of 8 little-endian 32-bit lanes; a
 * lane is 4 byte "slots" (spl = 4), a slot holds 8 / b codes ("fields",
 * field f at bits [b*f, b*f + b)), so a chunk holds 8 x F codes, F = 32 / b.
 * Byte slots are the u8 operand of the AVX2 kernels' vpmaddubsw, which
 * multiplies the 4 slots of a lane by 4 s8 factors and adds them in pairs:
 *
 *  K segment: codes [NTB][NJC] chunks, NTB = ceil(P/8) token blocks, NJC =
 *     ceil(D/F) channel chunks; in chunk (tb, jc), lane k is token 8*tb + k,
 *     and field f of its slot e is channel F*jc + spl*f + e. Then s[D] f16,
 *     z[D] f16 (per channel).
 *  V segment: codes [NB][NTC] chunks, NB = ceil(D/8) channel blocks, NTC =
 *     ceil(P/F) token chunks; in chunk (kb, tc), lane k is channel 8*kb + k,
 *     and field f of its slot e is token F*tc + spl*f + e. Then s[NG][P] f16, z[NG][P]
 *     f16 (NG = ceil(D/KIVI_VG) groups of channels, group-major so that 8
 *     tokens' scales are one load).
 * Padding (tokens >= P, channels >= D) holds code 0. */
#ifndef KVL_KV_CODEC_KIVI_H
#define KVL_KV_CODEC_KIVI_H

#include <stddef.h>
#include <stdint.h>

#include "kv/codec.h"

#define KIVI_VG 32 /* channels per V group (KIVI's default group size) */

static inline int kivi_fields(int bits) { return 32 / bits; }
static inline int kivi_slot_bits(int bits) { (void)bits; return 8; } /* bits of a slot */
static inline int kivi_cdiv(int a, int b) { return (a + b - 1) / b; }

/* K: bytes of the code chunks; offset of s[D] is that, z[D] follows. */
static inline size_t kivi_k_code_bytes(int bits, int D, int P) {
    return (size_t)kivi_cdiv(P, 8) * (size_t)kivi_cdiv(D, kivi_fields(bits)) * 32;
}
static inline size_t kivi_k_seg_bytes(int bits, int D, int P) {
    return kivi_k_code_bytes(bits, D, P) + (size_t)D * 4;
}
/* V: bytes of the code chunks; s[NG][P] follows, then z[NG][P]. */
static inline size_t kivi_v_code_bytes(int bits, int D, int P) {
    return (size_t)kivi_cdiv(D, 8) * (size_t)kivi_cdiv(P, kivi_fields(bits)) * 32;
}
static inline size_t kivi_v_seg_bytes(int bits, int D, int P) {
    return kivi_v_code_bytes(bits, D, P) + (size_t)kivi_cdiv(D, KIVI_VG) * (size_t)P * 4;
}

/* Write channel j of a K segment (layout above): codes c [P] (< 2^bits) and
 * the f16 bits of its scale and zero (x ~= s * c + z). For seals built
 * elsewhere (SQuat, codec_squat.c). */
void kvl_kivi_k_put_channel(int bits, uint8_t *seg, int D, int P, int j, const uint8_t *c, uint16_t s16,
                            uint16_t z16);

/* AVX2 kernels (codec_kivi_avx2.c): fill *out for the K (is_v = 0) or V codec
 * of `bits` (2 or 4) at head_dim D and return 1 when the build and CPU support
 * them and D % 8 == 0, D <= KIVI_DMAX, P <= KIVI_PMAX at call time. */
#define KIVI_DMAX 512
#define KIVI_PMAX 256
int kvl_kivi_avx2_kernels(int bits, int is_v, int D, kvl_codec_kernels *out);

#endif
