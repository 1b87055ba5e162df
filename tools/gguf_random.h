/* Random-weight GGUF models of a given Llama architecture (`kvlite
 * gguf-random`, tools/cmd_gguf_random.c): a file the normal loader
 * (kvl_model_load) accepts, with deterministic random weights, f32 norms of
 * ones and a synthetic SentencePiece vocabulary, for benchmarks of real
 * shapes (Llama-3-8B: ~8.5 GB of Q8_0) without downloading a model.
 * Self-contained (needs only cpu/quant.h), so tests can compile it in. */
#ifndef KVL_TOOLS_GGUF_RANDOM_H
#define KVL_TOOLS_GGUF_RANDOM_H

#include <stddef.h>
#include <stdint.h>

typedef struct grand_spec {
    char preset[32];
    int n_layer, n_embd, n_head, n_head_kv, n_ff, n_vocab, n_ctx;
    float rope_theta, norm_eps;
    int wtype;       /* kvl_type of every matrix (token_embd and output too): F16, Q8_0, Q4_0, Q4_1 */
    int tied;        /* 1: no output.weight (the loader uses token_embd) */
    uint64_t seed;   /* same spec + seed = same bytes, whatever n_threads */
    float gain;      /* multiplies every matrix's scale (1 = the defaults below) */
    int n_threads;   /* generator threads (<= 0: all cores) */
} grand_spec;

/* Fill *s with the preset's architecture ("tiny", "llama3-1b", "llama3-8b"),
 * type Q8_0, seed 1, gain 1. Returns 0 for an unknown name. */
int grand_preset(const char *name, grand_spec *s);
/* Names of the presets, comma-separated (for messages). */
const char *grand_preset_names(void);
/* kvl_type for "f16", "q8_0", "q4_0", "q4_1" (case-insensitive) or -1. */
int grand_type_parse(const char *name);

/* 0 if the spec describes a model the loader accepts, else a message in
 * msg (what is wrong and the accepted range) and -1. */
int grand_validate(const grand_spec *s, char *msg, size_t n);

/* Write the model to path (validated first). Weight scales: every matrix
 * uniform with std gain / sqrt(cols) (so each matvec output keeps about the
 * input's RMS: q, k, v, gate, up ~ 1 after RMSNorm; logits std ~ 1), the
 * embedding std 1, norms 1 (tied: embedding std gain / (8 sqrt(dim)), final norm 8). Returns 0, or -1 with a message. If bytes is
 * not NULL it receives the file size. */
int grand_write(const grand_spec *s, const char *path, uint64_t *bytes, char *msg, size_t n);

#endif
