/* libFuzzer target for the CacheBlend chunk file decoder
 * (kvl_blend_chunk_decode, src/engine/blend_store.c: the disk tier's files):
 * any byte string must decode or be rejected with a message, never crash,
 * leak or read out of bounds; a decoded chunk re-encodes to the same bytes.
 * Every input runs against f16 and f32 expectations, as is and with its
 * CRC32C recomputed so mutations reach the field checks behind it. No model
 * needed (tests/blend_fuzz_expect.h). Built by `make fuzz`; seeds in
 * tests/fuzz/corpus/fuzz_blend/ (written by
 * `KVL_WRITE_SEEDS=tests/fuzz/corpus/fuzz_blend build/tests/test_blend`). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "blend_fuzz_expect.h"
#include "util/crc32c.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void one(const uint8_t *data, size_t size, int f32) {
    const kvl_blend_expect x = blend_fuzz_expect(f32);
    kvl_blend_chunk *ch = NULL;
    kvl_err e;
    kvl_err_clear(&e);
    const kvl_status st = kvl_blend_chunk_decode(data, size, &x, 0, NULL, 0, &ch, &e);
    if (st == KVL_OK) {
        if (!ch) abort();
        uint8_t *buf = NULL;
        size_t len = 0;
        if (kvl_blend_chunk_encode(ch, &x, &buf, &len, &e) != KVL_OK) abort();
        if (len != size || memcmp(buf, data, size)) abort();
        free(buf);
        kvl_blend_chunk_free(ch);
    } else if (ch || !e.msg[0]) {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    for (int f32 = 0; f32 < 2; f32++) one(data, size, f32);
    if (size >= 8 && size < (1u << 20)) {
        uint8_t *b = malloc(size);
        if (!b) return 0;
        memcpy(b, data, size);
        const uint32_t c = kvl_crc32c(b, size - 4);
        for (int i = 0; i < 4; i++) b[size - 4 + i] = (uint8_t)(c >> (8 * i));
        for (int f32 = 0; f32 < 2; f32++) one(b, size, f32);
        free(b);
    }
    return 0;
}
