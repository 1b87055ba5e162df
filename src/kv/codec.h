/* KV codecs: how one (layer, kv-head)'s K or V rows are stored in a page, and
 * attention computed directly on the stored bytes.
 *
 * A page holds `page_tokens` (P) tokens. Each of its K and V parts is a codec
 * "segment": a codec-defined layout of P encoded rows of head_dim (D) values
 * plus any per-page metadata (scales, zero points, outlier lists, a "sealed"
 * flag). seg_bytes(D, P) is its exact size, so bytes per token = seg_bytes / P.
 *
 * Two kinds of codec:
 *  - per-token (f32, f16, int8, int4, fp8, oaken): encode writes row i of a
 *    segment from that row alone, as soon as the token is appended; the
 *    queries of the same forward call already see the encoded row.
 *  - sealing (kivi*, squat): rows are first written in the codec's `open`
 *    format (f16), in "open" pages. A full page leaves the residual window
 *    (the last r tokens of its list, r a multiple of P, default P) and is
 *    sealed at the END of the forward call that filled it (kvl_kv_seal):
 *    its open segment is repacked by seal() into a smaller "sealed" page of
 *    the pool's sealed size class, and the open page returns to the pool.
 *    So the queries of the call that appended a row see it at full
 *    precision (as KIVI's prefill does); later calls see the quantized row.
 *    Results depend on where forward calls begin and end (n_batch), and
 *    are deterministic and independent of the thread count.
 * Page-level metadata (scales, zero points, outlier lists) lives inside the
 * segment; a segment contains no pointers (pages are copied byte for byte).
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
#include <string.h>

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

/* Per-(layer, kv-head) state of a codec instance, passed to encode / seal
 * (NULL for codecs without state). Its layout belongs to the codec; the
 * instance (codec_spec.c) allocates state_bytes(D) per (layer, kv-head) and
 * fills it through state_init. Kernels (qk, av, decode) never see state:
 * everything they need is in the segment bytes. */
typedef struct kvl_codec_params kvl_codec_params; /* parsed spec parameters (kv/codec_spec.h) */

struct kvl_codec {
    const char *name;
    const char *desc; /* one line for `kvlite codecs` (format, scales) */
    /* Exact bytes of a (sealed) segment of P rows of D values (data + metadata). */
    size_t (*seg_bytes)(int D, int P);
    /* Per-token codecs: encode x [D] as row i (< P) of a segment. Row i is
     * independent of the other rows (batch invariance). NULL for sealing
     * codecs, whose rows are written in `open` format until the page seals. */
    void (*encode)(const void *st, uint8_t *seg, int D, int P, int i, const float *x);
    /* Sealing codecs (seal != NULL): the format of rows in an open page
     * (e.g. f16), a per-token codec; seal repacks the P rows of a full open
     * segment `open` (open->seg_bytes(D, P) bytes) into dst (seg_bytes(D, P)
     * bytes). Deterministic: the same open bytes always give the same dst. */
    const kvl_codec *open;
    void (*seal)(const void *st, uint8_t *dst, const uint8_t *open_seg, int D, int P);
    /* Decode row i into x [D] (tests, debugging, re-encoding). */
    void (*decode)(const uint8_t *seg, int D, int P, int i, float *x);
    /* Copy row si of src to row di of dst (per-token codecs); NULL: the pool
     * re-encodes through decode/encode. src and dst may be the same segment
     * with si != di. */
    void (*copy_row)(uint8_t *dst, int di, const uint8_t *src, int si, int D, int P);
    kvl_codec_kernels ref; /* scalar reference kernels */
    /* SIMD kernels for head_dim D: fill *out and return 1 when this build
     * and CPU support them (NULL: none). */
    int (*simd)(int D, kvl_codec_kernels *out);
    /* The codec used for V when this one is named for V (KIVI: keys per
     * channel, values per token); NULL = this codec. */
    const kvl_codec *as_v;
    /* Stateful codecs: bytes of one (layer, kv-head)'s state (NULL or 0: none)
     * and its initialisation from the spec parameters (is_v: V side). */
    size_t (*state_bytes)(int D);
    kvl_status (*state_init)(const kvl_codec_params *prm, int layer, int head, int is_v, int D, void *st,
                             kvl_err *err);
    /* Per-sequence state (SQuat: a query subspace from the prompt's own
     * queries): bytes per (layer, kv-head) of each table, >= state_bytes;
     * at table creation its first state_bytes bytes are a copy of the
     * pool-level state (the parameters), the rest zero; copied on fork.
     * When present it is the st that seal and observe receive. observe gets
     * the queries of each forward call before that call's seal: query
     * (token t, head g of this kv-head's group of G) at q + t*stride + g*D,
     * RoPE applied, unscaled; t < n. Not undone by a rolled-back call. */
    size_t (*seq_state_bytes)(int D);
    void (*observe)(void *st, const float *q, int n, int G, int D, size_t stride);
    /* Spec parameters this codec accepts, comma-separated (e.g. "r"), or NULL. */
    const char *params;
    int hidden; /* 1: not listed by kvlite codecs (the V half of a K/V pair) */
    /* Check a segment that came from untrusted bytes (a session file,
     * kv/serial.c) before any kernel reads it: rows [0, n_rows) of a
     * per-token segment (page-level metadata such as a header always), the
     * whole segment of a sealed one (n_rows = P). Returns 0 when every
     * parameter is usable (scales finite, counts and indices in range; raw
     * f16/f32 values are not checked), -1 otherwise. Scalar, stateless, reads
     * only seg_bytes(D, P) bytes. NULL: pages of this codec cannot be loaded
     * (validation fails). */
    int (*validate)(const uint8_t *seg, int D, int P, int n_rows);
};

/* Helpers for validate: an IEEE half / a float read from unaligned bytes is finite. */
static inline int kvl_codec_f16_ok(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return (h & 0x7c00u) != 0x7c00u;
}
static inline int kvl_codec_f32_ok(const uint8_t *p) {
    uint32_t u;
    memcpy(&u, p, 4);
    return (u & 0x7f800000u) != 0x7f800000u;
}
/* e5m3 scale byte (int4z, kivi*z, oaken): finite when <= 0xF7. */
static inline int kvl_codec_e5m3_ok(uint8_t b) { return b <= 0xF7; }

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

/* AVX2 kernels of the built-in f32/f16/int8 codecs (codec_avx2.c). Fill *out
 * for codec `name` and return 1 when the build and the CPU support them. */
int kvl_codec_avx2_kernels(const char *name, kvl_codec_kernels *out);
/* 1 when the CPU has AVX2, FMA and F16C (and the build compiled them). */
int kvl_cpu_has_avx2(void);

/* Registry: every codec type, NULL-terminated (kvlite codecs lists them). */
const kvl_codec *const *kvl_codec_all(void);

/* Softmax helper used by attention, scalar and AVX2:
 * s[i] = exp(s[i] - m) for i < n (s[i] = -inf gives 0); returns the sum. */
typedef float (*kvl_kv_expsum_fn)(float *s, int n, float m);
float kvl_kv_expsum_ref(float *s, int n, float m);
/* NULL when AVX2 is unavailable. */
kvl_kv_expsum_fn kvl_kv_expsum_avx2(void);

#endif
