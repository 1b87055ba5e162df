/* libFuzzer target for the oaken calibration-file loader (kv/codec_oaken.h):
 * any byte string must either parse or be rejected with a message, never
 * crash or read out of bounds. When it parses, every layer's K and V
 * thresholds become codec state and drive an encode / decode / qk / av round
 * of a few rows (scalar and SIMD kernels, D = 64 and 128) so hostile but
 * valid thresholds (huge, equal, denormal) are exercised too; decoded values
 * must be finite. Built by `make fuzz` (build-fuzz/fuzz_oaken); seeds in
 * tests/fuzz/corpus/fuzz_oaken/ (a real calibration file of the default
 * model and a 1-layer one). Each input also runs with its checksum
 * recomputed, so mutations reach the checks behind it. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kv/codec.h"
#include "kv/codec_oaken.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void exercise(const kvl_codec *c, const void *st, int D, const uint8_t *data, size_t size) {
    enum { P = 8 };
    uint8_t seg[16 + P * 128];
    float x[128], y[128], q[128], sc[P], acc[128] = {0}, pr[P];
    if (c->seg_bytes(D, P) > sizeof seg) __builtin_trap();
    for (int i = 0; i < P; i++) {
        for (int j = 0; j < D; j++) {
            const uint8_t b = size ? data[(size_t)(i * D + j) % size] : 0;
            x[j] = ldexpf((float)((int)b - 128), (i % 5) * 3 - 6); /* spans the thresholds' scales */
        }
        if (i == P - 1) x[0] = 70000.f, x[1] = -1e30f, x[2] = NAN;
        c->encode(st, seg, D, P, i, x);
        c->decode(seg, D, P, i, y);
        for (int j = 0; j < D; j++)
            if (!isfinite(y[j])) __builtin_trap();
        pr[i] = 1.0f / (float)(i + 1);
    }
    for (int j = 0; j < D; j++) q[j] = (float)(j % 7) - 3;
    for (int s = 0; s < 2; s++) {
        const kvl_codec_kernels k = kvl_codec_kernels_get(c, D, s);
        k.qk(seg, D, P, P, q, sc);
        k.av(seg, D, P, P, pr, acc);
    }
}

static void one(const uint8_t *data, size_t size);

/* The input as is, then with its checksum fixed up, so the fuzzer also
 * explores the checks behind the checksum (counts, values, ordering). */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    one(data, size);
    if (size >= 8 && size <= (1 << 20)) {
        uint8_t *b = malloc(size);
        if (!b) return 0;
        memcpy(b, data, size);
        uint32_t h = 2166136261u;
        for (size_t i = 0; i + 4 < size; i++) h = (h ^ b[i]) * 16777619u;
        for (int k = 0; k < 4; k++) b[size - 4 + k] = (uint8_t)(h >> (8 * k));
        one(b, size);
        free(b);
    }
    return 0;
}

static void one(const uint8_t *data, size_t size) {
    kvl_oaken_calib cal;
    kvl_err err = {0};
    if (kvl_oaken_calib_parse(data, size, &cal, &err) != KVL_OK) {
        if (!err.msg[0] || strchr(err.msg, '\n')) __builtin_trap(); /* one-line message */
        return;
    }
    const kvl_codec *c = kvl_codec_find("oaken");
    uint8_t st[256];
    if (!c || c->state_bytes(64) > sizeof st) __builtin_trap();
    for (int l = 0; l < cal.n_layer && l < 64; l++)
        for (int v = 0; v < 2; v++) {
            kvl_oaken_thresholds th;
            kvl_oaken_calib_get(&cal, l, v, &th);
            if (kvl_oaken_state_set(st, &th) != 0) __builtin_trap(); /* parse accepted it */
            exercise(c, st, 64, data, size);
            if (l == 0) exercise(c, st, 128, data, size);
        }
}
