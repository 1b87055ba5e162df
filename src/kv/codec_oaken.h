/* Oaken KV codec (Kim et al., ISCA 2025, "Oaken: Fast and Efficient LLM
 * Serving with Online-Offline Hybrid KV Cache Quantization"): per-layer
 * thresholds from an offline profiling run split each token's values online
 * into outer / middle / inner groups; the middle group is dense 4-bit with
 * group shift, outer and inner values are 5-bit sparse entries whose low 4
 * bits reuse their vacated dense slots. Layout and bounds in codec_oaken.c.
 *
 * This header: the thresholds, the per-(layer, kv-head) state, and the
 * calibration file (written by kvl_calibrate_oaken, src/engine/calibrate.h). */
#ifndef KVL_KV_CODEC_OAKEN_H
#define KVL_KV_CODEC_OAKEN_H

#include <stddef.h>
#include <stdint.h>

#include "kv/codec.h"

/* One layer's K or V thresholds: outer  x <= lo_out or x >= hi_out;
 * inner  lo_in < x < hi_in;  middle  otherwise.
 * Valid: finite, lo_out <= lo_in <= hi_in <= hi_out. */
typedef struct kvl_oaken_thresholds {
    float lo_out, lo_in, hi_in, hi_out;
} kvl_oaken_thresholds;

/* Sparse entries per token (outer + inner) at head_dim D: ceil(3D/32),
 * 9.4% of the values (profiled fractions 4% + 6% = 10% on average). */
int kvl_oaken_capacity(int D);

/* Fill a state buffer (kvl_codec_oaken.state_bytes(D) bytes) from th (tests,
 * tools); returns 0, or -1 if th is invalid. */
int kvl_oaken_state_set(void *st, const kvl_oaken_thresholds *th);

/* Test helper: the error bound the format guarantees for value j of row i,
 * x the row [D] that was encoded (see codec_oaken.c for the derivation). */
double kvl_oaken_row_bound(const uint8_t *seg, int D, int P, int i, const float *x, int j);

/* ---- calibration file ("<model>.gguf.oaken") ------------------------------------
 * Little-endian:
 *   char magic[8] = "KVLOAKEN"; u32 version = 1; u32 n_layer (1..4096);
 *   u32 head_dim; u32 n_tokens (profiled tokens, informational);
 *   f32 frac[3] (target outer / middle / inner fractions, informational);
 *   f32 th[n_layer][2 (K, V)][4] (lo_out, lo_in, hi_in, hi_out);
 *   u32 fnv1a32 of every preceding byte.
 * The file is untrusted input: exact size, magic, version, counts, finite
 * ordered thresholds and the checksum are all checked. */
#define KVL_OAKEN_MAGIC "KVLOAKEN"
#define KVL_OAKEN_VERSION 1u
#define KVL_OAKEN_HDR 36

typedef struct kvl_oaken_calib {
    int n_layer, head_dim, n_tokens;
    float frac[3];
    const uint8_t *th; /* into the parsed buffer: [n_layer][2][4] f32 LE */
} kvl_oaken_calib;

/* Check buf [n] and describe it in *out (pointing into buf). KVL_ERR_FORMAT
 * with a one-line reason on any defect. */
kvl_status kvl_oaken_calib_parse(const uint8_t *buf, size_t n, kvl_oaken_calib *out, kvl_err *err);
/* Thresholds of (layer, K or V) of a parsed file (layer < n_layer). */
void kvl_oaken_calib_get(const kvl_oaken_calib *c, int layer, int is_v, kvl_oaken_thresholds *th);
/* Write a file: th [n_layer][2] (K, V). KVL_ERR_IO / KVL_ERR_ARG on failure. */
kvl_status kvl_oaken_calib_write(const char *path, int n_layer, int head_dim, int n_tokens, const float frac[3],
                                 const kvl_oaken_thresholds *th, kvl_err *err);

#endif
