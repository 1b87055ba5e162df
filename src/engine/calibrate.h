/* Offline profiling for the oaken KV codec: per-layer K and V thresholds
 * measured on a text with a full-precision (f32) KV cache. */
#ifndef KVL_ENGINE_CALIBRATE_H
#define KVL_ENGINE_CALIBRATE_H

#include <stdio.h>

#include "kvlite.h"

typedef struct kvl_calib_params {
    int n_tokens;     /* tokens profiled (0 = 8192), in windows of n_window */
    int n_window;     /* tokens per prefill window (0 = 512) */
    int n_threads;    /* 0 = all cores */
    float frac[3];    /* target outer / middle / inner fractions (0s = 0.04 / 0.90 / 0.06) */
    FILE *log;        /* per-layer summary and progress (NULL = silent) */
} kvl_calib_params;

/* Run prefill over text [len] (UTF-8) with an f32 KV cache and compute, per
 * layer, the K and V thresholds of Oaken's three groups: with cumulative
 * fractions a = outer, b = outer + middle,
 *   lo_out = Q(a/2), hi_out = Q(1 - a/2), lo_in = Q(b/2), hi_in = Q(1 - b/2),
 * Q the quantile of all the layer's cached values (every kv-head and channel,
 * post-RoPE keys as stored) of one window ("lower" / "higher" order
 * statistics, as the reference profiler), averaged over windows. Writes the
 * calibration file out_path (kv/codec_oaken.h format). The log gets, per
 * layer, the thresholds and the group fractions and capacity-overflow rate
 * measured with them on one further held-out window. m: a loaded model.
 * Errors: one line in err. */
kvl_status kvl_calibrate_oaken(const kvl_model *m, const char *text, size_t len, const kvl_calib_params *p,
                               const char *out_path, char *err, size_t err_len);

#endif
