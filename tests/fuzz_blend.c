/* libFuzzer target for the CacheBlend chunk file decoder
 * (src/engine/blend_store.c: the disk tier's files): any byte string must
 * decode or be rejected with a message, never crash, leak or read out of
 * bounds; a decoded version-2 chunk re-encodes to the same bytes (a
 * version-1 one decodes to rows its v1 bytes hold). Two entry points: the
 * whole-file decoder (kvl_blend_chunk_decode, versions 1 and 2) and the
 * per-layer reader's (kvl_blend_head_size on the fixed header, then
 * kvl_blend_head_decode and kvl_blend_layer_check on each layer's byte
 * range, possibly short, as the pipelined reader does). Every input runs
 * against f16 and f32 expectations, as is and with its checksums
 * recomputed (v1: the trailing CRC; v2: each layer's CRC and the head's)
 * so mutations reach the field checks behind them. No model needed
 * (tests/blend_fuzz_expect.h). Built by `make fuzz`; seeds in
 * tests/fuzz/corpus/fuzz_blend/ (written by
 * `KVL_WRITE_SEEDS=tests/fuzz/corpus/fuzz_blend build/tests/test_blend`). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "blend_fuzz_expect.h"
#include "util/crc32c.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static void wr32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void whole(const uint8_t *data, size_t size, int f32) {
    const kvl_blend_expect x = blend_fuzz_expect(f32);
    kvl_blend_chunk *ch = NULL;
    kvl_err e;
    kvl_err_clear(&e);
    const kvl_status st = kvl_blend_chunk_decode(data, size, &x, 0, NULL, 0, &ch, &e);
    if (st == KVL_OK) {
        if (!ch) abort();
        if (rd32(data + 8) == 2) {
            uint8_t *buf = NULL;
            size_t len = 0;
            if (kvl_blend_chunk_encode(ch, &x, &buf, &len, &e) != KVL_OK) abort();
            if (len != size || memcmp(buf, data, size)) abort();
            free(buf);
        } else if (size < ch->row_bytes + 4 || memcmp(ch->rows, data + size - 4 - ch->row_bytes, ch->row_bytes)) {
            abort();
        }
        kvl_blend_chunk_free(ch);
    } else if (ch || !e.msg[0]) {
        abort();
    }
}

/* The reader's path: fixed header -> head -> each layer's range on its own. */
static void layered(const uint8_t *data, size_t size, int f32) {
    const kvl_blend_expect x = blend_fuzz_expect(f32);
    kvl_err e;
    kvl_err_clear(&e);
    size_t hl = 0;
    kvl_status st = kvl_blend_head_size(data, size < KVL_BLEND_FIXED_HDR ? size : KVL_BLEND_FIXED_HDR, &x, &hl, &e);
    if (st) {
        if (hl || !e.msg[0]) abort();
        return;
    }
    kvl_blend_head h;
    uint32_t crc[2];
    kvl_blend_chunk *ch = NULL;
    st = kvl_blend_head_decode(data, size, &x, 0, NULL, 0, &h, crc, &ch, &e);
    if (st) {
        if (ch || !e.msg[0]) abort();
        return;
    }
    if (!ch || h.head_len != hl || h.n_layer != x.n_layer || h.file_len < hl) abort();
    for (int l = 0; l < h.n_layer; l++) {
        const size_t off = h.head_len + (size_t)l * h.layer_bytes;
        const size_t len = off >= size ? 0 : size - off < h.layer_bytes ? size - off : h.layer_bytes;
        const uint8_t *p = len ? data + off : data; /* a short (truncated) range is rejected, not read past */
        st = kvl_blend_layer_check(&h, crc, l, p, len, &e);
        if (st) {
            if (!e.msg[0]) abort();
            break;
        }
        memcpy(ch->rows + (size_t)l * h.layer_bytes, p, len);
    }
    kvl_blend_chunk_free(ch);
}

static void one(const uint8_t *data, size_t size, int f32) {
    whole(data, size, f32);
    layered(data, size, f32);
}

/* Recompute the checksums where the counts in the header say they are. */
static void fix_crcs(uint8_t *b, size_t size) {
    if (size < KVL_BLEND_FIXED_HDR + 4) return;
    if (rd32(b + 8) != 2) {
        wr32(b + size - 4, kvl_crc32c(b, size - 4));
        return;
    }
    const uint64_t nl = rd32(b + 32), kv = rd32(b + 36), n = rd32(b + 40), C = rd32(b + 48);
    const uint64_t esz = rd32(b + 12) & 1u ? 4 : 2;
    if (nl > 64 || kv > 4096 || n > 4096 || C > 65536) return;
    const uint64_t hl = KVL_BLEND_FIXED_HDR + C + 4 * n + 4 * nl + 4, lb = 2 * n * kv * esz;
    if (hl > size) return;
    for (uint64_t l = 0; l < nl; l++) {
        const uint64_t off = hl + l * lb;
        if (off + lb <= size) wr32(b + hl - 4 - 4 * nl + 4 * l, kvl_crc32c(b + off, (size_t)lb));
    }
    wr32(b + hl - 4, kvl_crc32c(b, (size_t)hl - 4));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    for (int f32 = 0; f32 < 2; f32++) one(data, size, f32);
    if (size >= 8 && size < (1u << 20)) {
        uint8_t *b = malloc(size);
        if (!b) return 0;
        memcpy(b, data, size);
        fix_crcs(b, size);
        for (int f32 = 0; f32 < 2; f32++) one(b, size, f32);
        free(b);
    }
    return 0;
}
