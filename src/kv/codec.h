/* KV codecs: how one (layer, kv-head)'s K or V rows are stored in a page, and
 * attention computed directly on the stored bytes.
 *
 * A page holds `page_tokens` (P) tokens. Each of its K and V parts is a codec
 * "segment": a codec-defined layout of P encoded rows of head_dim (D) values
 * plus any per-page metadata (scales, zero points, outlier lists, a "sealed"
 * flag). seg_bytes(D, P) is its exact size, so bytes per token = seg_bytes / P.
 *
 * Life of a segment: rows are encoded in order (encode(seg, i, x) with rows
 * 0..i-1 already written); when the page fills the pool calls seal(seg)
 * (page-level quantization such as KIVI's per-channel key groups closes here,
 * while the open page can keep rows in a higher-precision residual area).
 * qk / av / decode work on n <= P rows of an open or sealed segment. A page
 * is copied byte-for-byte on copy-on-write, so a segment must not contain
 * pointers. Per-token codecs (f32, f16, int8) have seal == NULL and move rows
 * with copy_row; codecs with seal != NULL are re-encoded (decode + encode +
 * seal) when eviction compacts pages.
 *
 * Kernels (qk, av) come in a scalar reference and SIMD versions chosen at run
 * time by kvl_codec_kernels_get(); K and V may use different codecs.
 *
 * Batch invariance (the engine relies on it: prefill in one batch, in chunks,
 * or token by token must give bit-identical results): qk's score for row i
 * must not depend on n or on where i falls in a SIMD block, and av with
 * p[i] == 0 must leave acc unchanged. */
#ifndef KVL_KV_CODEC_H
#define KVL_KV_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "kv/kv.h"

/* scores[i] = dot(q, k_i) for rows i < n.  seg: one K segment; q: [D]; scores: [n]. */
typedef void (*kvl_codec_qk_fn)(const uint8_t *seg, int D, int P, int n, const float *q,
                                float *scores);
/* acc[j] += sum_{i<n} p[i] * v_i[j].  seg: one V segment; p: [n]; acc: [D]. */
typedef void (*kvl_codec_av_fn)(const uint8_t *seg, int D, int P, int n, const float *p,
                                float *acc);

/* Multi-query forms (several queries reading the same segment, so each row is
 * loaded / converted once for all of them). For every query g < m the result
 * must be bit-identical to qk / av called for that query alone (same
 * per-query accumulation order and instructions), whatever m is.
 * qk_multi: q [m][D] (query g at q + g*D), scores [m][P] (scores + g*P, n used).
 * av_multi: p [m][P] (p + g*P, n used), acc [m][D] (acc + g*D). */
typedef void (*kvl_codec_qk_multi_fn)(const uint8_t *seg, int D, int P, int n, const float *q, int m,
                                      float *scores);
typedef void (*kvl_codec_av_multi_fn)(const uint8_t *seg, int D, int P, int n, const float *p, int m,
                                      float *acc);

typedef struct kvl_codec_kernels {
    const char *isa; /* "scalar", "avx2" */
    kvl_codec_qk_fn qk;
    kvl_codec_av_fn av;
    /* Optional (NULL: callers loop over qk / av, see kvl_codec_qk_multi). */
    kvl_codec_qk_multi_fn qk_multi;
    kvl_codec_av_multi_fn av_multi;
} kvl_codec_kernels;

struct kvl_codec {
    const char *name;
    /* Exact bytes of a segment of P rows of D values (data + metadata). */
    size_t (*seg_bytes)(int D, int P);
    /* Encode x [D] as row i (< P) of an open segment. */
    void (*encode)(uint8_t *seg, int D, int P, int i, const float *x);
    /* Called once when all P rows are written (NULL: nothing to do). */
    void (*seal)(uint8_t *seg, int D, int P);
    /* Decode row i into x [D] (tests, debugging, re-encoding). */
    void (*decode)(const uint8_t *seg, int D, int P, int i, float *x);
    /* Copy row si of src to row di of dst (both open or both per-token
     * codecs); NULL: the pool re-encodes through decode/encode. src and dst may
     * be the same segment with si != di. */
    void (*copy_row)(uint8_t *dst, int di, const uint8_t *src, int si, int D, int P);
    kvl_codec_kernels ref; /* scalar reference kernels */
};

/* Kernels for c at head_dim D: the best SIMD version this CPU supports (the
 * scalar reference if none, if D % 8 != 0, or if scalar_only != 0). */
kvl_codec_kernels kvl_codec_kernels_get(const kvl_codec *c, int D, int scalar_only);
/* qk_multi / av_multi of k, or the loop over k.qk / k.av when k has none. */
void kvl_codec_qk_multi(const kvl_codec_kernels *k, const uint8_t *seg, int D, int P, int n, const float *q,
                        int m, float *scores);
void kvl_codec_av_multi(const kvl_codec_kernels *k, const uint8_t *seg, int D, int P, int n, const float *p,
                        int m, float *acc);
/* Exact encoded bytes per token for one head of D values (seg_bytes / P). */
double kvl_codec_bytes_per_token(const kvl_codec *c, int D, int P);

/* AVX2 kernels (codec_avx2.c). Fill *out for codec `name` and return 1 when
 * the build and the CPU support them, else 0. */
int kvl_codec_avx2_kernels(const char *name, kvl_codec_kernels *out);

/* Softmax helper used by attention, scalar and AVX2:
 * s[i] = exp(s[i] - m) for i < n (s[i] = -inf gives 0); returns the sum. */
typedef float (*kvl_kv_expsum_fn)(float *s, int n, float m);
float kvl_kv_expsum_ref(float *s, int n, float m);
/* NULL when AVX2 is unavailable. */
kvl_kv_expsum_fn kvl_kv_expsum_avx2(void);

#endif
