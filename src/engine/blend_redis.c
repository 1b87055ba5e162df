/* The CacheBlend store's Redis tier (engine/blend.h, "the Redis tier"): a
 * chunk's version-2 file bytes cut into a head value and one value per
 * layer, so the layer reader (blend_read.c) can stream a chunk's layers
 * from Redis while the blended pass computes, as it does from disk. Values
 * are untrusted: the head is verified (its CRC32C and every field) before
 * it sizes anything, each layer by its own CRC32C. An unreachable Redis is
 * a miss (the chunk is recomputed); a damaged value is an error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/blend.h"
#include "engine/redis.h"

void kvl_blend_redis_key(uint64_t key, int layer, char *k, size_t cap) {
    if (layer < 0) snprintf(k, cap, KVL_BLEND_REDIS_PREFIX "%016llx", (unsigned long long)key);
    else snprintf(k, cap, KVL_BLEND_REDIS_PREFIX "%016llx:%d", (unsigned long long)key, layer);
}

kvl_status kvl_blend_redis_put(kvl_blend *b, const kvl_blend_chunk *ch, kvl_err *err) {
    uint8_t *buf = NULL;
    size_t len = 0, hl = 0;
    kvl_status st = kvl_blend_chunk_encode(ch, &b->x, &buf, &len, err);
    if (st) return st;
    if ((st = kvl_blend_head_size(buf, len, &b->x, &hl, err))) goto done;
    const size_t lb = ch->row_bytes / (size_t)ch->n_layer;
    if (hl + lb * (size_t)ch->n_layer != len) {
        st = kvl_err_set(err, KVL_ERR_FORMAT, "blend: encoded chunk of %zu bytes is not head %zu + %d layers of %zu", len,
                         hl, ch->n_layer, lb);
        goto done;
    }
    char k[64];
    for (int l = 0; l < ch->n_layer && !st; l++) {
        kvl_blend_redis_key(ch->key, l, k, sizeof k);
        st = kvl_redis_set(b->redis, k, buf + hl + (size_t)l * lb, lb, err);
    }
    if (!st) {
        kvl_blend_redis_key(ch->key, -1, k, sizeof k);
        st = kvl_redis_set(b->redis, k, buf, hl, err);
    }
done:
    free(buf);
    return st;
}

kvl_status kvl_blend_redis_get(kvl_blend *b, kvl_blend_reader *rd, uint64_t key, const kvl_token *toks, int n,
                               kvl_blend_chunk **out, int *found, int *down, kvl_err *err) {
    *out = NULL;
    *found = 0;
    *down = 0;
    char k[64];
    kvl_blend_redis_key(key, -1, k, sizeof k);
    const uint8_t *val = NULL;
    size_t len = 0, hl = 0;
    void *hold = NULL;
    kvl_err re;
    kvl_err_clear(&re);
    if (kvl_redis_get(b->redis, k, &val, &len, &hold, &re)) {
        *down = 1; /* unreachable or failing: a miss */
        return KVL_OK;
    }
    kvl_status st = KVL_OK;
    uint32_t *crc = NULL;
    uint8_t *whole = NULL;
    kvl_blend_chunk *ch = NULL;
    kvl_blend_head h;
    if (!val) goto done; /* absent */
    if ((st = kvl_blend_head_size(val, len, &b->x, &hl, err))) goto done;
    if (hl != len) {
        st = kvl_err_set(err, KVL_ERR_FORMAT, "blend chunk: head value of %zu bytes, %zu expected", len, hl);
        goto done;
    }
    if (!(crc = malloc(sizeof(uint32_t) * (size_t)b->x.n_layer))) {
        st = kvl_err_set(err, KVL_ERR_NOMEM, "blend: out of memory");
        goto done;
    }
    /* with a reader, the decoder makes the chunk (tokens set, rows to stream in) */
    if ((st = kvl_blend_head_decode(val, len, &b->x, key, toks, n, &h, crc, rd ? &ch : NULL, err))) goto done;
    if (rd) {
        kvl_blend_redis_key(key, -1, k, sizeof k);
        if ((st = kvl_blend_reader_add_redis(rd, ch, &h, crc, k, err))) goto done;
        *out = ch;
        ch = NULL;
        *found = 1;
        goto done;
    }
    /* no reader: every layer now, then the whole file's decoder */
    if (!(whole = malloc(h.file_len))) {
        st = kvl_err_set(err, KVL_ERR_NOMEM, "blend: out of memory for a chunk of %zu bytes", h.file_len);
        goto done;
    }
    memcpy(whole, val, hl);
    for (int l = 0; l < h.n_layer; l++) {
        const uint8_t *lv = NULL;
        size_t ll = 0;
        void *lh = NULL;
        kvl_blend_redis_key(key, l, k, sizeof k);
        if (kvl_redis_get(b->redis, k, &lv, &ll, &lh, &re)) {
            *down = 1;
            goto done;
        }
        if (!lv || ll != h.layer_bytes) {
            st = kvl_err_set(err, KVL_ERR_FORMAT, "blend chunk: layer %d of %d: %s in Redis (%zu bytes, %zu expected)", l,
                             h.n_layer, lv ? "wrong size" : "missing", ll, h.layer_bytes);
            kvl_redis_release(lh);
            goto done;
        }
        memcpy(whole + hl + (size_t)l * h.layer_bytes, lv, ll);
        kvl_redis_release(lh);
    }
    if ((st = kvl_blend_chunk_decode(whole, h.file_len, &b->x, key, toks, n, out, err))) goto done;
    *found = 1;
done:
    kvl_redis_release(hold);
    kvl_blend_chunk_free(ch);
    free(crc);
    free(whole);
    return st;
}
