/* Engine internals: the context (thread pool, KV pool, per-batch scratch)
 * and sequences, plus the batched forward pass over the paged KV cache. */
#ifndef KVL_ENGINE_ENGINE_H
#define KVL_ENGINE_ENGINE_H

#include "kvlite.h"
#include "cpu/quant.h"
#include "kv/kv.h"
#include "model/model.h"
#include "util/err.h"
#include "util/threadpool.h"

#define KVL_XQ_SLOTS 3 /* distinct activation formats one input may need */

struct kvl_ctx {
    const kvl_model *m;
    kvl_ctx_params p;
    char codec_name[340];    /* "K spec" or "K spec / V spec", plus " (+layers)" */
    char codec_k[160], codec_v[160];
    kvl_threadpool *tp;
    int nth;
    const kvl_cpu_kernels *k;
    kvl_kv_pool *pool;
    /* scratch, sized for p.n_batch tokens */
    float *x;     /* [nb][n_embd] residual stream */
    float *xb;    /* [nb][max(n_embd, n_head*hd)] normed input / attention output */
    float *delta; /* [nb][n_embd] block output before the residual add */
    float *q;     /* [nb][n_head*hd] */
    float *kb;    /* [nb][n_kv*hd] */
    float *vb;    /* [nb][n_kv*hd] */
    float *hb;    /* [nb][n_ff] */
    float *hb2;   /* [nb][n_ff] */
    float *cs;    /* [nb][hd/2][2] rope cos/sin */
    float *logits;/* [n_vocab] last-token logits */
    int32_t *pos; /* [nb] */
    void *xq[KVL_XQ_SLOTS];   /* quantized activations, [nb][row bytes] each */
    kvl_type xq_type[KVL_XQ_SLOTS];
    size_t xq_stride[KVL_XQ_SLOTS];
    size_t xq_cap;            /* bytes of each xq slot */
    void **attn_scratch;      /* [nth] */
    float *attn_part;         /* split-attention partials, attn_part_bytes */
    size_t attn_part_bytes;
    int n_seq;    /* live sequences (created or forked, not yet freed) */
    int freed;    /* kvl_ctx_free was called while sequences were alive: the
                     last kvl_seq_free releases the context */
    kvl_err err;
    /* Diagnostics (kverr.c): called after RoPE with the layer's queries
     * q [n_tok][n_head][head_dim] at positions pos [n_tok]; NULL normally. */
    void (*q_hook)(void *user, int layer, int n_tok, const int32_t *pos, const float *q);
    void *q_hook_user;
    /* KVL_DEVICE_CUDA: the device forward pass (forward_cuda.c), NULL on the CPU */
    struct kvl_engine_cuda *cuda;
};

struct kvl_seq {
    kvl_ctx *c;
    kvl_kv_table *t;
    int pos;
    kvl_token *toks; /* [pos] token ids processed so far (sessions, prefix keys) */
    int toks_cap;
    int cuda_slot; /* device KV slot of the sequence (KVL_DEVICE_CUDA), -1 otherwise */
    kvl_token cuda_next; /* device sampling: the token drawn after the last call, -1 if none */
};

/* Make room for n token ids in s->toks (KVL_ERR_NOMEM, nothing changed, on failure). */
kvl_status kvl_seq_reserve_tokens(kvl_seq *s, int n);

/* Run n (<= n_batch) tokens at positions pos0.. through the model, caching
 * K/V (the caller owns the KV transaction and s->pos). logits_out:
 * [n_out][n_vocab] for the last n_out tokens of the chunk (n_out 0, 1 or n). */
kvl_status kvl_engine_forward(kvl_seq *s, int pos0, const kvl_token *tokens, int n, float *logits_out, int n_out);

/* Seam for the blended forward pass (engine/blend.c): kvl_engine_forward's
 * per-layer steps as separate calls on the batch scratch rows 0..n-1
 * (n <= n_batch). embed: token rows into c->x and positions (c->pos, RoPE
 * tables); positions: only the latter. qkv: [x += delta], q, kb, vb of
 * layer l with biases and RoPE. attn: causal attention of q [n][n_head*hd]
 * at pos [n] over t's layer l into out [n][n_head*hd]. post: delta = Wo xb;
 * x += delta; delta = MLP(norm(x)). logits: x += delta for all n rows, then
 * the last row's logits [n_vocab]. */
void kvl_fwd_embed(kvl_ctx *c, const kvl_token *tokens, const int32_t *pos, int n);
void kvl_fwd_positions(kvl_ctx *c, const int32_t *pos, int n);
void kvl_fwd_qkv(kvl_ctx *c, int l, int n, int add_delta);
void kvl_fwd_attn(kvl_ctx *c, const kvl_kv_table *t, int l, int n, const float *q, const int32_t *pos, float *out);
void kvl_fwd_post(kvl_ctx *c, int l, int n);
void kvl_fwd_logits(kvl_ctx *c, int n, float *logits_out);

/* The CUDA backend seam (forward_cuda.c; every function fails with
 * KVL_ERR_UNSUPPORTED in a build without CUDA=1). create: weights uploaded,
 * device KV pool of n_seq_max slots of n_ctx tokens (c->p final); slot_get
 * gives a sequence its slot (KVL_ERR_NOMEM when all are taken), slot_put
 * returns it; forward is kvl_engine_forward on the device (same contract). */
kvl_status kvl_engine_cuda_create(kvl_ctx *c, kvl_err *err);
void kvl_engine_cuda_free(kvl_ctx *c);
kvl_status kvl_engine_cuda_slot_get(kvl_ctx *c, int *slot, kvl_err *err);
void kvl_engine_cuda_slot_put(kvl_ctx *c, int slot);
/* The device model of a cuda context (benchmarks), NULL otherwise. */
struct kvl_cuda_lm *kvl_engine_cuda_lm(kvl_ctx *c);
kvl_status kvl_engine_forward_cuda(kvl_seq *s, int pos0, const kvl_token *tokens, int n, float *logits_out,
                                   int n_out);

#endif
