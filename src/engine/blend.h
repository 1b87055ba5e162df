/* CacheBlend internals (engine/blend.c, engine/blend_store.c): the chunk
 * entries of a blend store, their rows, and the chunk file codec (the disk
 * tier's hostile-input decoder, fuzzed by tests/fuzz_blend.c). */
#ifndef KVL_ENGINE_BLEND_H
#define KVL_ENGINE_BLEND_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "kvlite.h"
#include "util/err.h"
#include "util/fp16.h"

/* One stored chunk: K (after RoPE at positions base_pos + i) and V rows of
 * every layer, [n_layer][2 (K, V)][n][kv] values of 4 (f32) or 2 (f16) bytes. */
typedef struct kvl_blend_chunk {
    uint64_t key;
    int n, base_pos, f32, n_layer, kv; /* kv = n_head_kv * head_dim */
    kvl_token *toks;                   /* [n] */
    uint8_t *rows;
    size_t row_bytes;                  /* bytes of rows */
    uint64_t tick;                     /* last use (LRU) */
    int pins;                          /* held by a running call: not evicted */
} kvl_blend_chunk;

/* What a chunk must match to be used (the store's configuration). */
typedef struct kvl_blend_expect {
    uint64_t identity;        /* model identity */
    const char *config;       /* model/codec/page configuration text (blend_store.c) */
    int n_layer, kv, f32, base_pos, n_vocab, max_tokens;
} kvl_blend_expect;

/* Allocate an entry for n tokens (rows zeroed) or NULL. */
kvl_blend_chunk *kvl_blend_chunk_new(int n, int n_layer, int kv, int f32, int base_pos);
void kvl_blend_chunk_free(kvl_blend_chunk *ch);

/* Row i of (layer, side) into out [kv] / from in [kv]. */
static inline void kvl_blend_chunk_get(const kvl_blend_chunk *ch, int layer, int is_v, int i, float *out) {
    const size_t at = (((size_t)layer * 2 + (size_t)is_v) * (size_t)ch->n + (size_t)i) * (size_t)ch->kv;
    if (ch->f32) {
        memcpy(out, (const float *)ch->rows + at, sizeof(float) * (size_t)ch->kv);
    } else {
        const uint16_t *h = (const uint16_t *)ch->rows + at;
        for (int j = 0; j < ch->kv; j++) out[j] = kvl_fp16_to_fp32(h[j]);
    }
}
static inline void kvl_blend_chunk_set(kvl_blend_chunk *ch, int layer, int is_v, int i, const float *in) {
    const size_t at = (((size_t)layer * 2 + (size_t)is_v) * (size_t)ch->n + (size_t)i) * (size_t)ch->kv;
    if (ch->f32) {
        memcpy((float *)ch->rows + at, in, sizeof(float) * (size_t)ch->kv);
    } else {
        uint16_t *h = (uint16_t *)ch->rows + at;
        for (int j = 0; j < ch->kv; j++) h[j] = kvl_fp32_to_fp16(in[j]);
    }
}

/* Chunk file bytes (docs/ARCHITECTURE.md, "CacheBlend"): *buf malloc'd. */
kvl_status kvl_blend_chunk_encode(const kvl_blend_chunk *ch, const kvl_blend_expect *x, uint8_t **buf, size_t *len,
                                  kvl_err *err);
/* Decode untrusted chunk file bytes: every field checked against x (model
 * identity, configuration, geometry, row format, base position, token ids
 * in range, at most x->max_tokens), the CRC32C verified, every row value
 * finite. want_key / want [n_want] (want may be NULL): the key and tokens
 * the caller looked up (a file under the wrong name is an error). On
 * failure *out is NULL and err names the field (KVL_ERR_FORMAT for damaged
 * bytes, KVL_ERR_ARG for a chunk of another model or configuration). */
kvl_status kvl_blend_chunk_decode(const uint8_t *buf, size_t len, const kvl_blend_expect *x, uint64_t want_key,
                                  const kvl_token *want, int n_want, kvl_blend_chunk **out, kvl_err *err);

/* The store (include/kvlite.h, "CacheBlend"). */
struct kvl_blend {
    kvl_ctx *c;               /* computes missed chunks */
    kvl_blend_expect x;       /* what stored chunks match; x.config points at config */
    char *config;
    uint64_t salt;            /* hash of the configuration and the base prefix: keys start from it */
    kvl_token *base;          /* [n_base] */
    int n_base;
    char *dir;                /* disk tier or NULL */
    size_t ram_budget, ram_bytes;
    kvl_blend_chunk **e;      /* RAM tier [n] */
    int n, cap;
    uint64_t tick;
    kvl_blend_store_stats st;
};

/* Configuration text of context c (model identity, page size, every layer's
 * K/V codec spec), malloc'd, or NULL (out of memory). */
char *kvl_blend_config(const kvl_ctx *c);
/* Key of chunk toks [n] in b. */
uint64_t kvl_blend_key(const kvl_blend *b, const kvl_token *toks, int n);
/* Find toks [n]: RAM (pinned, *tier 1), else the disk tier (*tier 2; put in
 * RAM and pinned when it fits, else *owned = 1: the caller frees it), else
 * *out NULL (*tier 0). A damaged or mismatched disk file is an error. */
kvl_status kvl_blend_lookup(kvl_blend *b, const kvl_token *toks, int n, kvl_blend_chunk **out, int *owned, int *tier,
                            kvl_err *err);
/* Store a new chunk: written to the disk tier, kept in RAM (pinned) when
 * it fits the budget (older unpinned chunks evicted), else *owned = 1. */
kvl_status kvl_blend_insert(kvl_blend *b, kvl_blend_chunk *ch, int *owned, kvl_err *err);
/* End of a call's use of ch (unpin, or free when owned). */
void kvl_blend_release(kvl_blend_chunk *ch, int owned);
/* Compute chunk toks [n] after b's base prefix on a temporary sequence of
 * b->c (blend.c). */
kvl_status kvl_blend_compute(kvl_blend *b, const kvl_token *toks, int n, kvl_blend_chunk **out, kvl_err *err);

#endif
