/* A loaded model: hyper-parameters from GGUF metadata, weight descriptors
 * pointing into the mapped file (never dequantized as a whole), the
 * tokenizer, and RoPE frequencies. Immutable after load, shareable by many
 * contexts. */
#ifndef KVL_MODEL_MODEL_H
#define KVL_MODEL_MODEL_H

#include "kvlite.h"
#include "cpu/quant.h"
#include "model/gguf.h"
#include "model/tok.h"

/* A weight matrix W [rows][cols] (ggml ne = {cols, rows}) of any supported type. */
typedef struct kvl_weight {
    kvl_type type;
    const void *data;
    int64_t rows, cols;
} kvl_weight;

typedef struct kvl_layer {
    const float *attn_norm, *ffn_norm;     /* [n_embd] */
    kvl_weight wq, wk, wv, wo;             /* [n_head*hd][n_embd], [n_kv*hd][n_embd] x2, [n_embd][n_head*hd] */
    kvl_weight w_gate, w_up, w_down;       /* [n_ff][n_embd] x2, [n_embd][n_ff] */
    const float *bq, *bk, *bv;             /* qwen2 biases or NULL */
} kvl_layer;

enum { KVL_ROPE_NORM = 0, KVL_ROPE_NEOX = 1 };

struct kvl_model {
    kvl_gguf *gguf;
    char *path;                /* the GGUF file's path as opened */
    kvl_tok *tok;
    char arch[16];
    char name[128];
    int n_layer, n_embd, n_head, n_head_kv, head_dim, n_ff, n_vocab, n_ctx_train;
    float rope_theta, norm_eps;
    int rope_type;
    float *rope_freq;          /* [head_dim/2] angle per position */
    kvl_weight tok_embd;       /* [n_vocab][n_embd] */
    kvl_weight output;         /* [n_vocab][n_embd] (tok_embd when tied) */
    const float *out_norm;     /* [n_embd] */
    kvl_layer *layers;         /* [n_layer] */
    uint64_t identity;         /* hash of tensor metadata + vocabulary (kvl_model_identity) */
    float *owned;              /* float copies of non-f32 norm/bias vectors */
    size_t owned_len, owned_cap;
};

/* Load and validate everything the forward pass needs. */
kvl_status kvl_model_open(const char *path, kvl_model **out, kvl_err *err);

#endif
