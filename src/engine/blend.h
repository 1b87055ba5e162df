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

/* Chunk file bytes (docs/ARCHITECTURE.md, "CacheBlend"; version 2, with a
 * CRC32C per layer): *buf malloc'd. */
kvl_status kvl_blend_chunk_encode(const kvl_blend_chunk *ch, const kvl_blend_expect *x, uint8_t **buf, size_t *len,
                                  kvl_err *err);
/* Decode untrusted chunk file bytes (version 2, or version 1 whole): every
 * field checked against x (model identity, configuration, geometry, row
 * format, base position, token ids in range, at most x->max_tokens), the
 * checksums verified (v2: the head's and every layer's), every row value
 * finite. want_key / want [n_want] (want may be NULL): the key and tokens
 * the caller looked up (a file under the wrong name is an error). On
 * failure *out is NULL and err names the field (KVL_ERR_FORMAT for damaged
 * bytes, KVL_ERR_ARG for a chunk of another model or configuration). */
kvl_status kvl_blend_chunk_decode(const uint8_t *buf, size_t len, const kvl_blend_expect *x, uint64_t want_key,
                                  const kvl_token *want, int n_want, kvl_blend_chunk **out, kvl_err *err);

/* ---- per-layer reads of a version-2 file (the pipelined disk tier) ---- */
#define KVL_BLEND_FIXED_HDR 52   /* bytes of the fixed header fields */
#define KVL_BLEND_MAX_LAYERS 4096
/* A decoded, verified head: layer l's rows are the file's bytes
 * [head_len + l * layer_bytes, + layer_bytes). */
typedef struct kvl_blend_head {
    uint32_t version;
    uint64_t key;
    int n, f32, n_layer, kv, base_pos;
    size_t head_len, layer_bytes, file_len;
} kvl_blend_head;
/* Bytes of the head (header, config, tokens, layer CRC table, head CRC)
 * from the first KVL_BLEND_FIXED_HDR bytes buf [len]: magic, version 2
 * (version 1: a KVL_ERR_FORMAT saying so), and the counts bounded (config
 * length, tokens <= x->max_tokens, layers) before they size anything. */
kvl_status kvl_blend_head_size(const uint8_t *buf, size_t len, const kvl_blend_expect *x, size_t *head_len,
                               kvl_err *err);
/* Decode the head at the start of buf [len] (len >= its size; later bytes
 * ignored): head CRC first, then every field as kvl_blend_chunk_decode.
 * Fills h, layer_crc [x->n_layer] (may be NULL) and, when out is not NULL,
 * a new chunk with its tokens and zeroed rows. */
kvl_status kvl_blend_head_decode(const uint8_t *buf, size_t len, const kvl_blend_expect *x, uint64_t want_key,
                                 const kvl_token *want, int n_want, kvl_blend_head *h, uint32_t *layer_crc,
                                 kvl_blend_chunk **out, kvl_err *err);
/* Verify layer `layer`'s rows [len] of a file with head h: the length, the
 * layer's CRC32C, every value finite. err names the layer. */
kvl_status kvl_blend_layer_check(const kvl_blend_head *h, const uint32_t *layer_crc, int layer, const uint8_t *rows,
                                 size_t len, kvl_err *err);

/* The store (include/kvlite.h, "CacheBlend"). */
struct kvl_blend {
    kvl_ctx *c;               /* computes missed chunks */
    kvl_blend_expect x;       /* what stored chunks match; x.config points at config */
    char *config;
    uint64_t salt;            /* hash of the configuration and the base prefix: keys start from it */
    kvl_token *base;          /* [n_base] */
    int n_base;
    char *dir;                /* disk tier or NULL */
    struct kvl_redis *redis;  /* Redis tier (the store's thread) or NULL; url its URL */
    char *url;
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
typedef struct kvl_blend_reader kvl_blend_reader;
/* kvl_blend_lookup with a reader rd (may be NULL: as kvl_blend_lookup): a
 * version-2 disk file is opened and its head verified, and the chunk is
 * handed to rd (*owned = 2: rd holds it; its rows arrive layer by layer,
 * kvl_blend_reader_wait) instead of being read whole. */
kvl_status kvl_blend_lookup_rd(kvl_blend *b, kvl_blend_reader *rd, const kvl_token *toks, int n, kvl_blend_chunk **out,
                               int *owned, int *tier, kvl_err *err);
/* A chunk read whole by a reader: kept in RAM when it fits (unpinned), else freed. */
void kvl_blend_keep(kvl_blend *b, kvl_blend_chunk *ch);
/* Store a new chunk: written to the disk tier, kept in RAM (pinned) when
 * it fits the budget (older unpinned chunks evicted), else *owned = 1. */
kvl_status kvl_blend_insert(kvl_blend *b, kvl_blend_chunk *ch, int *owned, kvl_err *err);
/* End of a call's use of ch (unpin, or free when owned == 1; owned == 2:
 * the reader's, nothing). */
void kvl_blend_release(kvl_blend_chunk *ch, int owned);
/* Compute chunk toks [n] after b's base prefix on a temporary sequence of
 * b->c (blend.c). */
kvl_status kvl_blend_compute(kvl_blend *b, const kvl_token *toks, int n, kvl_blend_chunk **out, kvl_err *err);

/* ---- the disk tier's layer reader (engine/blend_read.c) ----
 * One per kvl_prefill_blend call. Chunks are added (kvl_blend_reader_add)
 * before kvl_blend_reader_start; then, pipelined, one I/O thread preads
 * layer 0 of every chunk, verifies it, publishes "layers ready = 1", then
 * layer 1, ..., while the caller computes; serial, start reads everything
 * first. A damaged layer stops the reader and fails every later wait. The
 * chunks and their files belong to the reader until kvl_blend_reader_free,
 * which keeps them in b's RAM tier only when keep is set and every layer
 * was read and verified. Used by the calling thread only (the I/O thread
 * is internal). */
typedef struct kvl_blend_reader_stats {
    double ms_busy;  /* reader working (reads, checks, throttle waits) */
    double ms_wait;  /* the caller blocked in kvl_blend_reader_wait */
    int64_t bytes;   /* row bytes read */
} kvl_blend_reader_stats;
/* New reader over b (pipeline: 1 = I/O thread; read_mbps > 0 caps its
 * rate in MB/s, emulating a slower tier). */
kvl_status kvl_blend_reader_new(kvl_blend *b, int pipeline, double read_mbps, kvl_blend_reader **out, kvl_err *err);
/* Chunks held (0: nothing to read). */
int kvl_blend_reader_count(const kvl_blend_reader *rd);
/* The held chunk of key and toks [n], or NULL. */
kvl_blend_chunk *kvl_blend_reader_find(const kvl_blend_reader *rd, uint64_t key, const kvl_token *toks, int n);
/* Hold chunk ch (head h, layer_crc [n_layer], copied) whose rows are read
 * from fd (owned from now on, closed by the reader; path for messages). */
kvl_status kvl_blend_reader_add(kvl_blend_reader *rd, kvl_blend_chunk *ch, const kvl_blend_head *h,
                                const uint32_t *layer_crc, int fd, const char *path, kvl_err *err);
/* Hold chunk ch (head h, layer_crc [n_layer], copied) whose layer l rows
 * are the Redis value of key "rkey:l" on the reader's own connection (the
 * Redis tier; kvl_blend_reader_new made one for b->url). */
kvl_status kvl_blend_reader_add_redis(kvl_blend_reader *rd, kvl_blend_chunk *ch, const kvl_blend_head *h,
                                      const uint32_t *layer_crc, const char *rkey, kvl_err *err);
/* Start reading (serial: read and verify everything now). */
kvl_status kvl_blend_reader_start(kvl_blend_reader *rd, kvl_err *err);
/* Block until layer `layer` of every held chunk is read and verified; the
 * reader's error (naming file and layer) when it failed. */
kvl_status kvl_blend_reader_wait(kvl_blend_reader *rd, int layer, kvl_err *err);
/* Stop and join the I/O thread, fill st (may be NULL), hand the chunks to
 * b's RAM tier when keep and all was read (else free them), close files. */
void kvl_blend_reader_free(kvl_blend_reader *rd, int keep, kvl_blend_reader_stats *st);

/* ---- the Redis tier (engine/blend_redis.c) ----
 * Chunk KEY (16 hex digits) is stored as the version-2 file cut in pieces:
 * "kvlite:blend:KEY" holds its head, "kvlite:blend:KEY:l" layer l's rows;
 * the head is written last, so a reader that finds it finds every layer
 * (a chunk rewritten meanwhile has the same bytes: keys are content hashes). */
#define KVL_BLEND_REDIS_PREFIX "kvlite:blend:"
/* Redis key of chunk key's head into k [cap] (layer < 0) or of its layer. */
void kvl_blend_redis_key(uint64_t key, int layer, char *k, size_t cap);
/* Write ch to b's Redis tier (layers, then the head). */
kvl_status kvl_blend_redis_put(kvl_blend *b, const kvl_blend_chunk *ch, kvl_err *err);
/* Look chunk key / toks [n] up in b's Redis tier: *found 0 when absent or
 * Redis is unreachable (*down = 1: a miss that costs a recompute). Found:
 * with rd, its head is verified and the chunk handed to rd (layers stream
 * in); without, every layer is fetched and the whole chunk decoded into
 * *out (the caller's). A damaged or mismatched value is an error. */
kvl_status kvl_blend_redis_get(kvl_blend *b, kvl_blend_reader *rd, uint64_t key, const kvl_token *toks, int n,
                               kvl_blend_chunk **out, int *found, int *down, kvl_err *err);

#endif
