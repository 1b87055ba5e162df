/* Tiled causal prefill attention on the device (attn_prefill.cu), C-callable;
 * added 2026-12-03 beside the decode attention of kvl_cuda.h (same pool,
 * page table and argument conventions).
 *
 * A prefill chunk is many query tokens of ONE sequence: the decode kernel
 * (kvl_cuda_attn_run) reads the whole list once per query token, this one
 * once per tile of up to kvl_cuda_prefill_tile_tokens() tokens. Block
 * (tile, kv-head) holds the tile's (token, head) pairs of the G query heads
 * of that kv-head as the rows of one matrix (128 rows: 128 / G tokens),
 * streams the list's K and V rows from the pages once through shared
 * memory, and computes S = Q K^T and O = softmax(S) V on the tensor cores
 * (mma.sync m16n8k16, f32 accumulation, online softmax), masking each row
 * by its own query position against the positions stored in the pages.
 *
 * Codecs: f16 pages only. For every other codec kvl_cuda_prefill_create
 * refuses (KVL_ERR_UNSUPPORTED) and the caller keeps the decode kernel
 * (lm.cu does: never a silent wrong result). */
#ifndef KVL_CUDA_KVL_CUDA_PREFILL_H
#define KVL_CUDA_KVL_CUDA_PREFILL_H

#include "cuda/kvl_cuda.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kvl_cuda_prefill kvl_cuda_prefill;

/* 1 when codec (a codec name as kvl_cuda_pool_config.codec_k) has a prefill
 * kernel (today: "f16"), 0 otherwise. */
int kvl_cuda_prefill_codec(const char *codec);

/* Prefill attention for pool p with n_head query heads over n_head_kv
 * kv-heads (G = n_head / n_head_kv in 1..8). KVL_ERR_UNSUPPORTED for a
 * codec without the kernel or D other than 64 / 128. Allocates nothing on
 * the device (no scratch: one block covers a whole list). */
kvl_status kvl_cuda_prefill_create(const kvl_cuda_pool *p, int n_head, int n_head_kv, kvl_cuda_prefill **out,
                                   kvl_err *err);
void kvl_cuda_prefill_free(kvl_cuda_prefill *pf);
/* Most entries (query tokens) of one tile: 128 / G. */
int kvl_cuda_prefill_tile_tokens(const kvl_cuda_prefill *pf);
/* Benchmarks and tests: 0 (default) = the scaled query enters the mma as
 * hi + lo f16 parts (fp32-accurate scores, two products per k-step, as the
 * decode kernels' tensor-core path); 1 = the query rounded to f16 once
 * (FlashAttention-2's numerics: one product per k-step, scores ~2^-11
 * relative). */
void kvl_cuda_prefill_set_variant(kvl_cuda_prefill *pf, int variant);

/* Tiles of n entries: runs of consecutive entries with equal key[i] (the
 * lm's slot: entries of one slot share their lists) cut into pieces of at
 * most tile_tokens. Writes tiles[2 t] = first entry, tiles[2 t + 1] =
 * number of entries (host arrays, tiles has room for 2 n) and returns the
 * number of tiles. */
int kvl_cuda_prefill_tiles(const int32_t *key, int n, int tile_tokens, int32_t *tiles);

/* One layer's attention for the entries of n_tiles tiles. The entries of a
 * tile must have equal list_off for every kv-head (one list per kv-head);
 * entry i attends as in kvl_cuda_attn_run: query head qh of entry i to the
 * rows j < list_len[i * Hkv + qh / G] of list (i, qh / G) whose position
 * <= qpos[i], zeros when it sees none. */
typedef struct kvl_cuda_prefill_args {
    int n_tiles;
    const int32_t *tiles;     /* device [n_tiles][2]: first entry, entries (1..tile_tokens) */
    const uint32_t *page_ids; /* device: page ids of all lists */
    const int32_t *list_off;  /* device [entries][Hkv]: first entry of each list in page_ids */
    const int32_t *list_len;  /* device [entries][Hkv]: tokens in each list */
    const int32_t *qpos;      /* device [entries]: position of each entry's query token */
    const float *q;           /* device [entries][n_head][D]: queries (RoPE applied, unscaled) */
    float *out;               /* device [entries][n_head][D]: written for every entry of a tile */
    float scale;              /* multiplies q.k */
} kvl_cuda_prefill_args;

/* Enqueue on stream (asynchronous; launch errors reported). */
kvl_status kvl_cuda_prefill_run(kvl_cuda_prefill *pf, const kvl_cuda_prefill_args *a, void *stream, kvl_err *err);

/* The forward pass (lm.cu): mode 1 (default) = a call whose entries form
 * tiles of >= 4 entries on average takes the prefill kernel (f16 KV), 0 =
 * always the decode kernel (tests, benchmarks: the before). */
void kvl_cuda_lm_set_prefill(kvl_cuda_lm *lm, int mode);
/* Whether the last kvl_cuda_lm_forward call used the prefill kernel. */
int kvl_cuda_lm_used_prefill(const kvl_cuda_lm *lm);

#ifdef __cplusplus
}
#endif

#endif
