/* CacheGen-style compressed KV format (after CacheGen, SIGCOMM 2024): the
 * K and V of a run of tokens of one page table (every layer and kv-head),
 * decoded to float from whatever codec its pages hold, coded as
 *  - token groups of G tokens: the group's first token (the anchor)
 *    quantized on its own, the others as deltas from the reconstructed anchor;
 *  - per-(layer, K/V, channel) uniform quantization steps, chosen per chunk
 *    as a multiple of the channel's RMS (never below max|x| / 127, so no
 *    symbol clips), the multiple set by the quality level and the layer's
 *    depth (shallow layers get finer steps);
 *  - symbols (q + 128, bytes) entropy-coded by util/rans with one static
 *    model per (layer, K/V, anchor/delta, channel group).
 * Decoding re-encodes the reconstructed rows through the target table's
 * own codec (kvl_kv_append + kvl_kv_seal, positions preserved), inside a
 * transaction: a load fills the table or changes nothing.
 *
 * Container (little-endian; docs/ARCHITECTURE.md "CacheGen format"):
 *   header, 32 bytes: magic "KVLCGEN\0", u32 version, u32 flags (0),
 *     u64 model identity, u32 section count, u32 CRC32C of bytes 0..27;
 *   sections (type, CRC32C, u64 length, payload; kv/serial.h framing):
 *     CONFIG (1) once: u32 n_layer, n_head_kv, head_dim, n_tok, group,
 *       chan_group, level, n_sink, then the source codec spec (u32 length + text);
 *     POS (2) once: n_tok i32 positions (strictly increasing);
 *     TOKENS (3) once: u32 count (0 or n_tok), that many u32 token ids;
 *     LAYER (4) n_layer times, in layer order: u32 layer; for K then V and
 *       each of the C = n_head_kv * head_dim channels: f16 anchor mean,
 *       u8 anchor step code, u8 delta step code (step = 2^((code - 192) / 8));
 *       the n_sink first tokens' rows as f16 (token, K/V, channel);
 *       u32 models length + models (kvl_rans_models_write, 4 * ceil(C /
 *       chan_group) contexts), u32 stream length + rANS stream of
 *       (n_tok - n_sink) * 2 * C symbols in order token, K/V, channel; token
 *       groups count from the first token after the sinks.
 * Any other section type, a repeated or missing one, or bytes after the
 * last section is a format error. */
#ifndef KVL_KV_CACHEGEN_H
#define KVL_KV_CACHEGEN_H

#include <stddef.h>
#include <stdint.h>

#include "kv/kv.h"
#include "kv/serial.h"

#define KVL_CG_MAGIC "KVLCGEN\0"
#define KVL_CG_VERSION 1u
#define KVL_CG_LEVELS 4 /* quality levels 0 (finest) .. 3 (smallest) */
#define KVL_CG_MAX_LAYERS 1024

enum { KVL_CG_SEC_CONFIG = 1, KVL_CG_SEC_POS = 2, KVL_CG_SEC_TOKENS = 3, KVL_CG_SEC_LAYER = 4 };

/* Encoder parameters (the decoder needs none: steps are in the stream). */
typedef struct kvl_cachegen_params {
    int level;        /* recorded in the file (0..KVL_CG_LEVELS-1, or -1: custom) */
    int group;        /* tokens per group (anchor + deltas), >= 1 */
    int chan_group;   /* channels per entropy-coder context, >= 1 */
    float anchor[2];  /* anchor step / channel RMS, K and V */
    float delta[2];   /* delta step / channel RMS, K and V */
    float depth[3];   /* step multiplier of the first, middle and last third of the layers */
    int per_head;     /* 1: one step per (layer, K/V, kv-head) from the head's RMS; 0: per channel */
    int n_sink;       /* the first n_sink tokens (attention sinks) stored as f16, outside the statistics */
} kvl_cachegen_params;

/* The parameters of quality level `level` (0..KVL_CG_LEVELS-1), scaled:
 * every step multiplied by scale (> 0; 1 = the level as tuned). */
kvl_status kvl_cachegen_level(int level, float scale, kvl_cachegen_params *out, kvl_err *err);

/* Sizes of an encoded file, for info, benchmarks and adaptive streamers. */
typedef struct kvl_cachegen_sizes {
    size_t total;          /* every byte of the file */
    size_t header;         /* header, CONFIG, POS, TOKENS and section framing */
    size_t layer[KVL_CG_MAX_LAYERS]; /* LAYER section payload per layer */
    size_t models, steps;  /* of which: rANS models, per-channel means and step codes */
    size_t values;         /* values coded: n_tok * n_layer * n_head_kv * head_dim * 2 */
} kvl_cachegen_sizes;

/* Encode tokens [0, n_tok) of every (layer, kv-head) list of t into b as
 * a complete file (header first: b should be empty). Every list must hold
 * exactly n_tok tokens at the same positions (no policy has evicted).
 * tokens [n_tok] or NULL (no TOKENS ids). src_spec: text recorded as the
 * source codec. sizes: optional. KVL_ERR_ARG with a message if the table
 * cannot be coded (unequal lists, non-finite values). */
kvl_status kvl_cachegen_encode(const kvl_kv_table *t, int n_tok, const int32_t *tokens, uint64_t identity,
                               const char *src_spec, const kvl_cachegen_params *prm, kvl_ser_buf *b,
                               kvl_cachegen_sizes *sizes, kvl_err *err);
/* As kvl_cachegen_encode for rows [tok0, tok0 + n_tok) of lists that hold
 * at least that many (all the same positions): one chunk of a context.
 * tokens [n_tok]: the chunk's ids (or NULL). */
kvl_status kvl_cachegen_encode_range(const kvl_kv_table *t, int tok0, int n_tok, const int32_t *tokens, uint64_t identity,
                                     const char *src_spec, const kvl_cachegen_params *prm, kvl_ser_buf *b,
                                     kvl_cachegen_sizes *sizes, kvl_err *err);

/* A parsed file (pointers into the caller's buffer). */
typedef struct kvl_cachegen_file {
    uint32_t version;
    uint64_t identity;
    int n_layer, n_head_kv, head_dim, n_tok, group, chan_group, level, n_sink;
    const char *src_spec;
    size_t src_spec_len;
    const uint8_t *pos;    /* [n_tok] i32 LE */
    const uint8_t *tokens; /* [n_tokens] u32 LE or NULL */
    int n_tokens;
    const uint8_t *layer[KVL_CG_MAX_LAYERS];
    size_t layer_len[KVL_CG_MAX_LAYERS];
    size_t total;
} kvl_cachegen_file;

/* 1 when buf starts with the CacheGen magic. */
int kvl_cachegen_is(const void *buf, size_t len);
/* Check the framing and the fixed fields of untrusted buf: magic, version,
 * header CRC, every section's bounds and CRC32C, section types and counts,
 * geometry limits, strictly increasing positions. Layer payloads are
 * checked when decoded. */
kvl_status kvl_cachegen_parse(const void *buf, size_t len, kvl_cachegen_file *f, kvl_err *err);

/* Decode layer l of f into k, v [n_tok][n_head_kv][head_dim] (untrusted
 * bytes: step fields, models and stream checked). m: scratch models of
 * 4 * ceil(C / chan_group) contexts (kvl_cachegen_models), reused per layer. */
typedef struct kvl_rans_models kvl_rans_models;
kvl_status kvl_cachegen_models(const kvl_cachegen_file *f, kvl_rans_models **m, kvl_err *err);
kvl_status kvl_cachegen_decode_layer(const kvl_cachegen_file *f, int l, kvl_rans_models *m, float *k, float *v,
                                     kvl_err *err);

/* Load f into the empty table t (no pages, no open transaction): geometry
 * must match t's pool, positions < n_ctx; each layer is decoded and
 * appended through the pool's codecs (then sealed), in a transaction
 * rolled back on any failure, so t is left empty and the pool's bytes
 * unchanged. */
kvl_status kvl_cachegen_load(kvl_kv_table *t, const kvl_cachegen_file *f, int n_ctx, kvl_err *err);
/* As kvl_cachegen_load, appending to a table whose lists all hold the same
 * rows, every one at a position before the file's first (streaming a
 * context chunk by chunk). On failure the table is as before. */
kvl_status kvl_cachegen_load_append(kvl_kv_table *t, const kvl_cachegen_file *f, int n_ctx, kvl_err *err);

/* Verify f completely (decode every layer, no table) and report sizes.
 * Used by `kvlite kv info` (no model). */
kvl_status kvl_cachegen_verify(const kvl_cachegen_file *f, kvl_cachegen_sizes *sizes, kvl_err *err);

/* Symbol streams of one layer as the encoder codes them, for comparing
 * coders (bench): sym [n_tok * 2 * C] and ctx [same] of layer l of t with
 * parameters prm. Returns the number of contexts via *n_ctx. */
kvl_status kvl_cachegen_layer_symbols(const kvl_kv_table *t, int n_tok, int l, const kvl_cachegen_params *prm,
                                      uint8_t *sym, uint16_t *ctx, int *n_ctx, size_t *n_sym, kvl_err *err);

#endif
