/* kvlite public API: load a Llama-family GGUF model, run it on the CPU over a
 * paged, codec-encoded KV cache, tokenize, sample. The only header tools,
 * bindings and the server include.
 *
 * Conventions: opaque handles with kvl_X_create/kvl_X_free pairs (free accepts
 * NULL); functions return kvl_status; the handle that failed (or the model for
 * load errors) keeps a human-readable message readable with kvl_*_error(). */
#ifndef KVLITE_H
#define KVLITE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum kvl_status {
    KVL_OK = 0,
    KVL_ERR_IO,          /* file missing / unreadable */
    KVL_ERR_FORMAT,      /* malformed, truncated or hostile input bytes */
    KVL_ERR_UNSUPPORTED, /* valid input that kvlite cannot handle (arch, tensor type) */
    KVL_ERR_ARG,         /* invalid argument from the caller */
    KVL_ERR_NOMEM,       /* allocation failed or KV budget exhausted */
    KVL_ERR_CTX_FULL,    /* sequence would exceed its context length */
    KVL_ERR_INTERNAL
} kvl_status;

/* Short static name of a status code ("ok", "io", "format", ...). */
const char *kvl_status_str(kvl_status s);

typedef int32_t kvl_token;

typedef struct kvl_model kvl_model;     /* weights + tokenizer, immutable after load */
typedef struct kvl_ctx kvl_ctx;         /* engine: thread pool, KV pool, scratch */
typedef struct kvl_seq kvl_seq;         /* one sequence: its KV page tables + position */
typedef struct kvl_sampler kvl_sampler; /* sampling state (rng, penalties history) */

/* ---- model ---------------------------------------------------------------- */

/* Load a GGUF model (mmap). On failure *out is NULL, returns a status and, if
 * err/err_len are given, writes a one-line message into err. */
kvl_status kvl_model_load(const char *path, kvl_model **out, char *err, size_t err_len);
void kvl_model_free(kvl_model *m);

typedef struct kvl_model_info {
    const char *arch;  /* "llama" or "qwen2" */
    const char *name;  /* general.name or "" */
    int n_layer, n_embd, n_head, n_head_kv, head_dim, n_ff, n_vocab, n_ctx_train;
    float rope_theta, norm_eps;
    kvl_token bos, eos, eot; /* -1 when absent; eot = end-of-turn (e.g. <|im_end|>) */
    size_t weight_bytes;     /* bytes of tensor data */
} kvl_model_info;
void kvl_model_get_info(const kvl_model *m, kvl_model_info *info);

/* True if t ends generation (eos or end-of-turn). */
int kvl_model_is_eog(const kvl_model *m, kvl_token t);

/* 64-bit identity of the model (computed at load): a hash of the
 * architecture, every tensor's name, type and shape, and the tokenizer's
 * vocabulary. Session files record it; a load into another model fails. */
uint64_t kvl_model_identity(const kvl_model *m);

/* ---- tokenizer ------------------------------------------------------------ */

/* Longest text (bytes) one tokenizer call accepts: 256 MiB. Internal offsets
 * are 32-bit; split longer texts (e.g. at paragraph breaks). */
#define KVL_TOKENIZE_MAX_BYTES ((size_t)1 << 28)

/* Tokenize UTF-8 text. Special-token strings (e.g. "<|im_start|>") are parsed
 * as special tokens when parse_special != 0. add_bos follows the model's
 * tokenizer.ggml.add_bos_token when add_bos < 0. Writes up to cap ids to out and
 * returns the total count (which may exceed cap: call again with more room), or
 * a negative kvl_status on error. Invalid UTF-8 bytes are tokenized as their
 * byte tokens (byte-level BPE) or byte-fallback tokens (SentencePiece); bytes
 * the vocabulary has no token for (e.g. 0xC0, 0xF5-0xFF in SmolLM2) are
 * dropped, as the Hugging Face tokenizer does. Texts longer than
 * KVL_TOKENIZE_MAX_BYTES return -KVL_ERR_ARG (checked before text is read). */
int64_t kvl_tokenize(const kvl_model *m, const char *text, size_t len, int add_bos,
                     int parse_special, kvl_token *out, int64_t cap);

/* Bytes of token t (raw bytes, may be a partial UTF-8 sequence); special tokens
 * render as their text only if render_special. Returns length written (<= cap)
 * or the needed length if it exceeds cap; negative on invalid token. */
int kvl_token_to_piece(const kvl_model *m, kvl_token t, int render_special, char *buf, int cap);

/* Offset of the first byte of text[0..len) that does not start a valid UTF-8
 * sequence (bad lead byte, truncated, overlong, surrogate, above U+10FFFF), or
 * -1 if all of it is valid (NUL bytes are valid; text may be NULL if len is 0).
 * The tokenizer's notion of valid: valid runs are pre-tokenized as text,
 * other bytes become byte tokens. */
int64_t kvl_utf8_invalid_at(const char *text, size_t len);

typedef struct kvl_chat_msg {
    const char *role;    /* "system", "user", "assistant" */
    const char *content;
} kvl_chat_msg;

/* Render messages with the model's chat template (ChatML or Llama-3, chosen from
 * tokenizer.chat_template). add_assistant appends the assistant turn header.
 * Returns the length (may exceed cap; text is NUL-terminated when it fits) or
 * negative status. */
int64_t kvl_chat_apply(const kvl_model *m, const kvl_chat_msg *msgs, int n_msgs, int add_assistant,
                       char *out, size_t cap);

/* Tokens of the conversation rendered with the model's chat template (as
 * kvl_chat_apply), the one safe way to tokenize a chat: only the template's
 * own markup can produce control tokens; roles and message contents are
 * always tokenized as text, so a message containing "<|im_end|>" cannot end
 * its turn or open another. BOS follows tokenizer.ggml.add_bos_token and is
 * present once (not repeated when the template starts with it, as Llama-3
 * does). For roles and contents without control-token text the ids equal
 * kvl_tokenize(kvl_chat_apply(...), add_bos = -1, parse_special = 1) with a
 * doubled leading BOS dropped. Same count/cap convention as kvl_tokenize:
 * returns the total count (may exceed cap) or a negative kvl_status
 * (KVL_ERR_ARG also when the rendering exceeds KVL_TOKENIZE_MAX_BYTES). */
int64_t kvl_chat_tokenize(const kvl_model *m, const kvl_chat_msg *msgs, int n_msgs, int add_assistant,
                          kvl_token *out, int64_t cap);

/* ---- context and KV options -------------------------------------------------- */

/* Where a context's forward pass runs (kvl_ctx_params.device). */
enum { KVL_DEVICE_CPU = 0, KVL_DEVICE_CUDA = 1 };

typedef struct kvl_ctx_params {
    int n_ctx;             /* max tokens per sequence; 0 = model's training context */
    int n_threads;         /* 0 = all online cores */
    const char *kv_codec;  /* KV codec spec for K and V ("f16", "int8", "int4", "kivi2:r=64",
                              "int4+rot", ...: `kvlite codecs`); NULL = "f16" */
    size_t kv_budget_bytes;/* KV pool byte budget; 0 = enough for n_ctx * n_seq_max tokens */
    int n_seq_max;         /* sequences sized into the default budget; 0 = 1 */
    int page_tokens;       /* tokens per KV page; 0 = 32 */
    const char *kv_policy; /* eviction policy spec "NAME[:key=value,...]": full (default), streaming, h2o,
                              tova, snapkv, pyramidkv, veda, cake (`kvlite policies`) */
    int n_batch;           /* max tokens per forward call; 0 = 512 */
    int exact_matmul;      /* 1 = keep activations f32 and dequantize weight blocks on the
                              fly (double accumulation): matches a float reference to ~1e-4,
                              many times slower; for verification */
    int no_simd;           /* 1 = scalar reference kernels for matmuls and KV attention
                              (testing; the CLI sets it from the KVL_NO_SIMD environment variable) */
    const char *kv_codec_v;/* V codec spec when it differs from kv_codec's V side; NULL = same */
    const char *kv_layers; /* per-layer codec overrides, e.g. "0,1,-2,-1=int8" or "k0-3=int8;v29=f16"
                              (layers from 0, negative from the end); NULL = none */
    int kv_keep;           /* policy budget: cached tokens per sequence, averaged over layers and kv-heads
                              (0 = none; with kv_budget_bytes and no keep, the keep that fits the budget) */
    float kv_keep_frac;    /* policy budget as a fraction (0, 1] of the tokens the sequence has processed */
    int device;            /* KVL_DEVICE_CPU (default) or KVL_DEVICE_CUDA: weights and KV pages in GPU memory,
                              every token through device kernels (builds with `make CUDA=1`; otherwise
                              kvl_ctx_create fails with KVL_ERR_UNSUPPORTED). CUDA takes KV codecs f16, int8,
                              int4z, policy full, no per-layer codecs; prefill runs as batches of decode
                              steps; sequences cannot be forked, saved or prefix-cached */
} kvl_ctx_params;

/* Fill defaults. */
void kvl_ctx_params_default(kvl_ctx_params *p);

kvl_status kvl_ctx_create(const kvl_model *m, const kvl_ctx_params *p, kvl_ctx **out, char *err,
                          size_t err_len);
/* Free the context. Sequences still alive keep its KV pool: they may only be
 * freed (every other call on them fails with KVL_ERR_ARG), and the last
 * kvl_seq_free releases the context. The model must outlive the context. */
void kvl_ctx_free(kvl_ctx *c);
/* Message of the last failure on this context ("" if none). */
const char *kvl_ctx_error(const kvl_ctx *c);

/* ---- KV codecs ------------------------------------------------------------------ */

typedef struct kvl_codec_info {
    const char *name;      /* spec name ("int4", "kivi2"); specs add "+rot" and ":key=value,..." */
    const char *desc;      /* format in one line */
    const char *params;    /* keys it takes besides +rot, comma-separated ("r" for sealing codecs), or "" */
    int sealing;           /* 1: rows stay f16 in an open residual page and quantize when the page seals */
    double bits_k, bits_v; /* exact bits per value of a full (sealed) page at the given head_dim/page size */
} kvl_codec_info;
/* Codec i (0-based) at head_dim and page_tokens; returns 1, or 0 past the last. */
int kvl_codec_info_get(int i, int head_dim, int page_tokens, kvl_codec_info *out);

/* ---- KV eviction policies --------------------------------------------------------- */

typedef struct kvl_policy_info {
    const char *name;   /* spec name ("snapkv"); specs add ":key=value,..." */
    const char *desc;   /* one line */
    const char *params; /* keys it takes, comma-separated */
    unsigned stats;     /* attention statistics it reads (bit set; 0: none, attention at full speed) */
} kvl_policy_info;
/* Policy i (0-based); returns 1, or 0 past the last. */
int kvl_policy_info_get(int i, kvl_policy_info *out);

/* ---- sequences ---------------------------------------------------------------- */

kvl_status kvl_seq_create(kvl_ctx *c, kvl_seq **out);
void kvl_seq_free(kvl_seq *s);
/* New sequence sharing s's cached prefix (page tables copied, pages shared). */
kvl_status kvl_seq_fork(const kvl_seq *s, kvl_seq **out);
/* Number of tokens processed so far (next position). */
int kvl_seq_pos(const kvl_seq *s);
/* This sequence's eviction budget (cached tokens per layer and kv-head):
 * keep >= 0 replaces the context's kv_keep/kv_keep_frac, keep < 0 stops
 * evicting (the pool's byte budget is still kept by evicting). No-op with
 * the "full" policy. E.g. compress a long context, then answer without
 * evicting further: kvl_prefill(ctx), kvl_seq_set_keep(s, -1), kvl_prefill(question). */
void kvl_seq_set_keep(kvl_seq *s, int keep);

/* Run the model over tokens (appended at the sequence's current position),
 * caching their K/V. If logits != NULL it receives the logits of the last token
 * [n_vocab]; if all_logits != NULL it receives [n][n_vocab] (every position).
 * Tokens beyond n_batch are processed in chunks. All or nothing: on any
 * failure (KVL_ERR_CTX_FULL if pos + n > n_ctx, KVL_ERR_NOMEM when the KV
 * budget or memory runs out in any layer or chunk, ...) the sequence is
 * left exactly as before the call: nothing cached, position unchanged,
 * pages taken by the call returned to the pool. With an evicting policy
 * the budget is kept by evicting between chunks and layers, and evictions
 * are final: a failed call caches none of its tokens and keeps the
 * position, but tokens the policy evicted during it stay evicted. */
kvl_status kvl_prefill(kvl_seq *s, const kvl_token *tokens, int n, float *logits, float *all_logits);
/* One token: same as kvl_prefill with n = 1. */
kvl_status kvl_decode(kvl_seq *s, kvl_token t, float *logits);

typedef struct kvl_kv_stats {
    size_t bytes_used;      /* pool bytes held by this sequence's pages (shared pages counted) */
    size_t bytes_peak;      /* peak of bytes_used */
    size_t pool_used;       /* bytes in use in the whole pool */
    size_t pool_budget;     /* pool byte budget */
    int64_t tokens_cached;  /* sum over (layer, kv-head) of cached tokens / (n_layer*n_head_kv) */
    double bytes_per_token; /* codec bytes per cached token of full pages (K+V, all layers and heads) */
    int n_pages;            /* pages referenced by this sequence */
    const char *codec;      /* codec spec(s) in use */
    size_t codec_bytes;     /* encoded K/V bytes of this sequence's pages as stored now (sealed and open
                               residual pages; no positions or padding) */
    double bits_per_value;  /* 8 * codec_bytes / (cached tokens * n_layer * n_head_kv * 2 * head_dim) */
    size_t pool_held;       /* bytes the pool holds from the allocator (pages in use + free) */
    int sealing;            /* 1: some layer uses a sealing codec (results depend on forward-call boundaries) */
    const char *policy;     /* eviction policy spec in use */
    int keep;               /* policy budget per list now (-1: none) */
    int64_t tokens_evicted; /* tokens evicted from this sequence, summed over (layer, kv-head) lists */
    size_t policy_bytes;    /* attention statistics + policy state of this sequence (not in bytes_used) */
} kvl_kv_stats;
void kvl_seq_kv_stats(const kvl_seq *s, kvl_kv_stats *st);

/* Token ids processed so far (kvl_seq_pos of them, in order): copies up to
 * cap into out (out may be NULL) and returns the count. */
int kvl_seq_tokens(const kvl_seq *s, kvl_token *out, int cap);

/* ---- sessions: sequences to bytes and files ---------------------------------------
 *
 * A session file holds sequences' KV pages (raw page bytes of any codec, each
 * page shared between forked sequences written once), per (layer, kv-head)
 * lengths and sealed prefixes, codec and per-sequence codec state, position
 * and token ids, the policy name (and its state), and optionally chat
 * messages; see docs/ARCHITECTURE.md ("Sessions and serialization") for the
 * byte layout. Every section carries a CRC32C.
 *
 * Loading treats the bytes as hostile: every length and offset is checked,
 * codec metadata is validated (finite scales, indices in range), and the
 * file must match the context: model identity, n_layer, n_head_kv,
 * head_dim, page size, each layer's K/V codec spec, page layouts, policy; the
 * context must hold the sequence (n_ctx) and the pool's free budget its
 * pages. On any mismatch or damage nothing is loaded, the pool is unchanged,
 * and the context's error (kvl_ctx_error) names the field, e.g.
 * "session: model identity differs (file 0x..., model 0x...)". */

/* Serialize s into a malloc'd buffer (*buf, *len; free with free()). The
 * sequence is not changed. Errors: KVL_ERR_ARG, KVL_ERR_NOMEM. */
kvl_status kvl_seq_save(const kvl_seq *s, void **buf, size_t *len);
/* Serialize n sequences of one context (pages they share are written once)
 * and msgs [n_msgs] (may be NULL / 0) into one buffer. */
kvl_status kvl_seqs_save(const kvl_seq *const *seqs, int n, const kvl_chat_msg *msgs, int n_msgs, void **buf,
                         size_t *len);
/* Load a buffer holding exactly one sequence into a new sequence of c
 * (*out; NULL on failure). */
kvl_status kvl_seq_load(kvl_ctx *c, const void *buf, size_t len, kvl_seq **out);
/* Load into s, which must be fresh (created, nothing prefilled: KVL_ERR_ARG
 * otherwise) and of a context matching the file; the file must hold one
 * sequence. On failure s is unchanged (still fresh). */
kvl_status kvl_seq_load_into(kvl_seq *s, const void *buf, size_t len);
/* Load every sequence of a buffer (at most cap: KVL_ERR_ARG if it holds
 * more) into new sequences out [*n_out], sharing the pages they shared when
 * saved (reference counts, not copies). msgs (may be NULL): receives the
 * chat messages as one malloc'd block (array and strings; free(*msgs)),
 * NULL when the file has none, and their count in *n_msgs. */
kvl_status kvl_seqs_load(kvl_ctx *c, const void *buf, size_t len, kvl_seq **out, int cap, int *n_out,
                         kvl_chat_msg **msgs, int *n_msgs);

/* Describe a session buffer without a model (kvlite kv info): verifies the
 * header and every section's checksum and structure, and writes a
 * multi-line text into a malloc'd NUL-terminated *text (free with free()).
 * On failure *text is NULL and err receives a one-line message. */
kvl_status kvl_session_describe(const void *buf, size_t len, char **text, char *err, size_t err_len);

/* The KV configuration a session buffer was saved with (checksums verified,
 * no model needed), for creating a matching context: layer 0's K and V
 * specs (kv_codec, kv_codec_v), the other layers' differences as a
 * kv_layers string ("" when none), tokens per page, and the largest
 * sequence position (n_ctx must be at least that). k_spec, v_spec,
 * layers: cap bytes each (>= 256). */
kvl_status kvl_session_kv_params(const void *buf, size_t len, char *k_spec, char *v_spec, char *layers, size_t cap,
                                 int *page_tokens, int *max_pos, char *err, size_t err_len);

/* Session stores. Every kvl_session_* call below takes a store that is a
 * directory or a Redis URL "redis://HOST[:PORT][/DB]" (port 6379 and
 * database 0 by default; needs a build with hiredis, else the call fails
 * with "built without hiredis"). In Redis, session NAME is the value of key
 * "kvlite:session:NAME" holding the same bytes as a session file; a save is
 * one SET of the whole buffer, so a reader sees the previous or the new
 * session, never a part, and a writer killed mid-save leaves the previous
 * committed one (durability across a restart of the Redis server is its own
 * persistence setting). Each call opens its own connection (500 ms connect,
 * 2 s command timeouts); an unreachable server is KVL_ERR_IO with a message
 * naming the URL. list uses SCAN, never KEYS. */

/* Session names: 1-64 characters of [A-Za-z0-9._-], not starting with '.'. */
int kvl_session_name_ok(const char *name);
/* Save s (and msgs, may be NULL) as session `name` in directory dir
 * (created if missing, one level) as dir/name.kvls. Atomic: written to a
 * temporary file in dir (a dot-file, never listed), fsynced, renamed over
 * the target, then dir is fsynced; a crash at any point leaves either the
 * previous file or the new one. Errors on c (kvl_ctx_error). */
kvl_status kvl_session_save(kvl_ctx *c, const kvl_seq *s, const char *dir, const char *name, const kvl_chat_msg *msgs,
                            int n_msgs);
/* Load session `name` from dir into a new sequence of c (kvl_seqs_load's
 * checks; the file must hold one sequence). msgs / n_msgs as kvl_seqs_load
 * (msgs may be NULL). KVL_ERR_IO when the session does not exist. */
kvl_status kvl_session_load(kvl_ctx *c, const char *dir, const char *name, kvl_seq **out, kvl_chat_msg **msgs,
                            int *n_msgs);
/* Call cb(name, user) for each session in dir (files NAME.kvls with a valid
 * name; temporary files are not sessions), in no particular order; a
 * non-zero return from cb stops the listing. KVL_ERR_IO if dir cannot be read. */
kvl_status kvl_session_list(const char *dir, int (*cb)(const char *name, void *user), void *user, char *err,
                            size_t err_len);
/* Delete session `name` from dir (KVL_ERR_IO if it does not exist). */
kvl_status kvl_session_delete(const char *dir, const char *name, char *err, size_t err_len);
/* The stored bytes of session `name` (malloc'd *buf of *len bytes, free
 * with free()), not checked (kvl_session_kv_params / kvl_seqs_load do
 * that); *buf NULL and KVL_OK when the store has no such session;
 * KVL_ERR_IO when the store cannot be read or reached. */
kvl_status kvl_session_read(const char *store, const char *name, void **buf, size_t *len, char *err, size_t err_len);

/* ---- prefix store: KV reuse across requests --------------------------------------
 *
 * A content-addressed store of the KV of 256-token chunks (KVL_PREFIX_CHUNK)
 * keyed by a chained 64-bit hash of the model identity, every layer's K/V
 * codec spec and the page size, then each chunk's token ids: a RAM tier
 * (LRU under a byte budget) and optionally a disk directory tier (one file
 * per chunk, DIR/KEY.kvc, written through a temporary file and rename). A
 * chunk is stored only when every (layer, kv-head) list holds it whole
 * (nothing evicted; sealing layers: its pages sealed) and no codec keeps
 * per-sequence state (SQuat: nothing is stored); the page size must divide
 * 256. Loaded chunks pass the session loader's checks; a damaged or
 * mismatched chunk is a miss (counted in `bad`), never an error. Calls on
 * one store are serialized by its mutex.
 *
 * Redis tier (kvl_prefix_create_ex with redis_url; needs a build with
 * hiredis): chunk blobs under keys "kvlite:chunk:KEY", looked up after RAM
 * and disk (RAM -> disk -> Redis), written through by kvl_prefix_put to
 * every configured tier that lacks them. A Redis value that fails the
 * checks is a miss (counted in `bad`, the key deleted so the next put
 * repairs it). A server that is down, slow (command timeout) or never up
 * makes lookups miss and puts skip that tier: requests recompute and
 * succeed; the outage is logged once (and its end once), and no new
 * connection is tried before redis_retry_ms has passed. */
#define KVL_PREFIX_CHUNK 256
typedef struct kvl_prefix kvl_prefix;
typedef struct kvl_prefix_stats {
    int64_t ram_hits, disk_hits, misses; /* chunk lookups by kvl_prefix_get */
    int64_t stored, evicted, bad;        /* chunks stored, evicted from RAM, rejected (damaged / unusable) */
    int64_t redis_hits, redis_misses;    /* Redis tier lookups that found / did not find the chunk */
    int64_t redis_errors, redis_stored;  /* Redis commands that failed (down, timeout); chunks written to Redis */
    size_t ram_bytes;                    /* bytes held in RAM */
    int ram_chunks;
} kvl_prefix_stats;
/* Create a store: dir = disk tier directory (created if missing, one level)
 * or NULL for RAM only; ram_bytes = RAM tier budget (0: no RAM tier). */
kvl_status kvl_prefix_create(const char *dir, size_t ram_bytes, kvl_prefix **out, char *err, size_t err_len);
typedef struct kvl_prefix_params {
    const char *dir;       /* disk tier directory (created if missing, one level) or NULL */
    size_t ram_bytes;      /* RAM tier budget (0: no RAM tier); default 256 MiB */
    const char *redis_url; /* Redis tier "redis://HOST[:PORT][/DB]" or NULL */
    int redis_connect_ms;  /* connection timeout (0: 500) */
    int redis_command_ms;  /* command (socket read/write) timeout (0: 2000) */
    int redis_retry_ms;    /* after a failure, no reconnect before this (0: 1000; < 0: at the next request) */
    /* format of the disk and Redis tiers' chunks: -1 (default) the exact
     * pages; 0..3 a CacheGen level (lossy, entropy-coded, several times
     * smaller; decoded into the loading context's codec). RAM keeps exact
     * pages. Chunks of either format are read back by any store. */
    int remote_level;
    /* where the Redis tier's once-per-outage messages go (NULL: stderr, "kvlite: prefix cache: ...") */
    void (*log)(void *user, const char *msg);
    void *log_user;
} kvl_prefix_params;
void kvl_prefix_params_default(kvl_prefix_params *pp);
/* Create a store with the tiers of pp. A bad redis_url, or any redis_url in
 * a build without hiredis ("built without hiredis"), fails with a message;
 * an unreachable server does not (it is logged once, lookups miss). */
kvl_status kvl_prefix_create_ex(const kvl_prefix_params *pp, kvl_prefix **out, char *err, size_t err_len);
void kvl_prefix_free(kvl_prefix *p);
/* Store the complete chunks of s's tokens not stored yet (every tier).
 * *n_stored (may be NULL): chunks added. Sequences that cannot be chunked
 * store nothing (KVL_OK). */
kvl_status kvl_prefix_put(kvl_prefix *p, const kvl_seq *s, int *n_stored);
/* Load into the fresh sequence s (KVL_ERR_ARG otherwise) the longest run of
 * cached chunks that prefixes toks [n] (RAM first, then disk, then Redis; at most n - 1
 * tokens, so the caller always has a token left to prefill for logits).
 * *n_reused: tokens loaded (s's position); 0 on a miss. Prefill
 * toks + *n_reused next. */
kvl_status kvl_prefix_get(kvl_prefix *p, kvl_seq *s, const kvl_token *toks, int n, int *n_reused);
void kvl_prefix_get_stats(const kvl_prefix *p, kvl_prefix_stats *st);
/* Why the last chunk was rejected ("" if none). */
const char *kvl_prefix_error(const kvl_prefix *p);

/* ---- CacheBlend: chunk KV reuse at any position ---------------------------------
 *
 * Retrieval prompts repeat the same documents in different orders, so a
 * prefix cache misses. A blend store keeps each chunk's KV computed on its
 * own (after the store's base prefix, at positions n_base..), keyed by a
 * 64-bit hash of the model identity, every layer's K/V codec spec, the page
 * size, the base prefix, the row format and the chunk's token ids; rows are
 * f32 or f16, K after RoPE at the chunk's own positions. kvl_prefill_blend
 * splices cached chunks into a sequence at their new positions (K rotated
 * by the position delta: RoPE is a rotation) and repairs the cross-chunk
 * attention they never saw (CacheBlend, EuroSys 2025): the first
 * full_layers layers recompute every token; at layer full_layers the
 * ratio fraction of cached tokens whose recomputed V (or K) deviates most
 * from the cached rows, plus every fresh token, are selected, and the later
 * layers recompute only those, attending to the spliced cache. RAM tier
 * (LRU under a byte budget) and an optional disk tier (DIR/KEY.kvb, written
 * through a temporary file and rename). A store serves contexts of one
 * model and KV configuration; it is used by one thread at a time. */
typedef struct kvl_blend kvl_blend;
typedef struct kvl_blend_params {
    float ratio;     /* fraction of cached chunk tokens recomputed past the selection layer, [0, 1]; 0.15 */
    int full_layers; /* layers (from 0) recomputing every token; the selection runs at this layer; 1.
                        ratio 0 with full_layers 0 reuses the chunks' KV untouched (only fresh tokens run) */
    int select_k;    /* 1: select by the deviation of K (after RoPE), 0: of V (default) */
    int select_query; /* 0: by deviation alone (CacheBlend, default); 1: deviation x the attention mass the
                         question's tokens put on the token at the selection layer; 2: that mass alone */
    int pipeline;    /* 1 (default): disk-tier chunks stream in layer by layer on an I/O thread while the
                        pass computes (layer l is waited for before its first use); 0: read whole first */
    double read_mbps; /* > 0: cap the disk reads at this many MB/s (emulates a slower tier); 0: none */
} kvl_blend_params;
void kvl_blend_params_default(kvl_blend_params *p);
/* One piece of a blended prompt: reuse != 0 marks a chunk whose KV comes
 * from the store (computed and stored first on a miss); reuse == 0 tokens
 * (instructions, the question) are always computed in every layer. */
typedef struct kvl_blend_seg {
    const kvl_token *tokens;
    int n;
    int reuse;
} kvl_blend_seg;
typedef struct kvl_blend_stats {
    int n_tokens;    /* tokens added to the sequence */
    int n_reused;    /* of them in reused chunks */
    int n_selected;  /* reused tokens recomputed past the selection layer */
    int ram_hits, disk_hits, misses; /* chunk lookups of the call */
    int remote_hits; /* of them from the Redis tier */
    double ms_load;  /* chunk lookups (RAM/disk), misses' computation excluded */
    double ms_miss;  /* computing and storing missed chunks */
    double ms_blend; /* the blended forward pass (splice + recompute + logits) */
    double ms_read;  /* disk-tier layer reads (pread + checks + rate cap): the reader's busy time */
    double ms_wait;  /* the pass blocked waiting for a layer's rows (pipelined) */
    int64_t bytes_read; /* row bytes read from the disk tier */
} kvl_blend_stats;
typedef struct kvl_blend_store_stats {
    int64_t ram_hits, disk_hits, misses, stored, evicted;
    int64_t remote_hits, remote_errors; /* Redis tier: chunks found; commands failed (each a miss or a lost copy) */
    size_t ram_bytes;
    int ram_chunks;
} kvl_blend_store_stats;
/* Create a store for contexts like c (c computes missed chunks). base [n_base]:
 * the tokens every chunk is computed after (e.g. BOS or the prompt's fixed
 * instructions; n_base may be 0); dir: disk tier directory (created if
 * missing), or a redis://HOST[:PORT][/DB] URL for a Redis tier (chunks as
 * a head value and one value per layer, streamed like the disk tier's
 * layers; an unreachable Redis is a miss, counted in remote_errors), or
 * NULL; ram_bytes: RAM tier budget (0: none, disk only);
 * f32: rows in f32 (exact) instead of f16. Errors into err. */
kvl_status kvl_blend_create(kvl_ctx *c, const kvl_token *base, int n_base, const char *dir, size_t ram_bytes, int f32,
                            kvl_blend **out, char *err, size_t err_len);
void kvl_blend_free(kvl_blend *b);
/* Compute and store chunk toks [n] unless stored (*stored: 1 when it was
 * computed now; may be NULL). Errors on the store's context (kvl_ctx_error). */
kvl_status kvl_blend_put(kvl_blend *b, const kvl_token *toks, int n, int *stored);
/* Prefill segs [n_segs] into s at its position (as kvl_prefill would the
 * concatenated tokens), reusing stored chunks as described above; logits:
 * the last token's [n_vocab] (may be NULL); st (may be NULL): what it did.
 * The last token is always recomputed. All or nothing like kvl_prefill:
 * prompts longer than the context (KVL_ERR_CTX_FULL), a store made for
 * another model or KV configuration (KVL_ERR_ARG), a mismatched, truncated
 * or damaged disk chunk head (KVL_ERR_FORMAT) fail before anything is
 * computed or stored, and leave s as it was. A damaged layer of a disk
 * chunk (KVL_ERR_FORMAT naming file and layer) is found while the layers
 * stream in (p->pipeline; with pipeline 0 before anything is computed):
 * the call fails, s is as it was and nothing of that call's disk chunks
 * enters the RAM tier (chunks computed for misses stay stored). A blended sequence is an ordinary one afterwards
 * (decode, fork, eviction, save). Errors on s's context. */
kvl_status kvl_prefill_blend(kvl_seq *s, kvl_blend *b, const kvl_blend_seg *segs, int n_segs,
                             const kvl_blend_params *p, float *logits, kvl_blend_stats *st);
void kvl_blend_get_stats(const kvl_blend *b, kvl_blend_store_stats *st);
/* Drop the disk tier's chunk files from the OS page cache (written back,
 * then posix_fadvise DONTNEED), so the next reads come from the device;
 * *n_files (may be NULL): files dropped. Errors on the store's context. */
kvl_status kvl_blend_drop_cache(kvl_blend *b, int *n_files);

/* ---- diagnostics ------------------------------------------------------------------ */

/* Where a KV codec loses quality, per layer (kvlite eval kv-error). */
typedef struct kvl_kv_error_layer {
    double k_rel, v_rel; /* sum ||x_hat - x||^2 / sum ||x||^2 over the cached K (V) rows, all kv-heads */
    double attn_rel;     /* mean over queries and heads of ||o_hat - o|| / ||o|| (attention output) */
    double k_bits, v_bits; /* bits per value of this layer's K (V) as stored at n tokens */
} kvl_kv_error_layer;
/* Prefill tokens [n] with an f32 KV cache, re-encode every layer's K/V rows
 * with the codecs of p (kv_codec, kv_codec_v, kv_layers; sealed as a
 * sequence of n tokens would be after decode) and compare rows and the
 * attention output of the last n_query tokens' queries over both caches.
 * out: [n_layer]. p's other fields (threads, exact_matmul) apply to the
 * f32 pass. */
kvl_status kvl_kv_error(const kvl_model *m, const kvl_ctx_params *p, const kvl_token *tokens, int n, int n_query,
                        kvl_kv_error_layer *out, char *err, size_t err_len);

/* ---- sampling ------------------------------------------------------------------- */

typedef struct kvl_sampler_params {
    float temperature;   /* <= 0: greedy */
    int top_k;           /* 0 = off */
    float top_p;         /* 1 = off */
    float min_p;         /* 0 = off */
    float repeat_penalty;/* 1 = off */
    int repeat_last_n;   /* tokens of history the penalty looks at */
    uint64_t seed;
} kvl_sampler_params;

void kvl_sampler_params_default(kvl_sampler_params *p);
kvl_status kvl_sampler_create(const kvl_sampler_params *p, int n_vocab, kvl_sampler **out);
void kvl_sampler_free(kvl_sampler *s);
/* Sample a token from logits [n_vocab] (logits are modified in place). */
kvl_token kvl_sampler_sample(kvl_sampler *s, float *logits);
/* Record a token in the history used by the repetition penalty. */
void kvl_sampler_accept(kvl_sampler *s, kvl_token t);

/* Sampling on the device (a context created with device = KVL_DEVICE_CUDA):
 * from this call on, every kvl_prefill / kvl_decode of the context's
 * sequences also draws, on the device, the token that follows the call's
 * last token, read back with kvl_seq_sampled; only that token id comes back
 * (pass logits NULL to skip the logits download). p has the semantics of
 * kvl_sampler_sample: the repetition penalty over the sequence's last
 * repeat_last_n tokens (this call's included: what the CLI's sampler
 * accepts), then greedy argmax at temperature <= 0, else temperature ->
 * top-k -> softmax -> min-p / top-p -> renormalised draw, the same
 * candidate sets and probabilities as the CPU sampler. top_k 0 (off) and
 * top_k > 1024 are capped at 1024 candidates on the device (the device has
 * no full sort; beyond the 1024 most likely tokens the CPU's candidate set
 * can be larger). Seed: p->seed seeds the device's stream (splitmix64 of
 * the seed and a draw counter reset here), so a seed gives the same tokens
 * run to run, not the CPU sampler's tokens (another generator).
 * repeat_last_n <= 4096. p NULL turns it off. KVL_ERR_UNSUPPORTED on a CPU
 * context or a build without CUDA; KVL_ERR_ARG for invalid parameters. */
kvl_status kvl_ctx_set_device_sampling(kvl_ctx *c, const kvl_sampler_params *p);
/* The token the device drew after s's last kvl_prefill / kvl_decode while
 * device sampling was on; -1 if none. */
kvl_token kvl_seq_sampled(const kvl_seq *s);

/* ---- adaptive streaming (CacheGen-style level choice; engine/stream.c) ----------
 *
 * A context fetched chunk by chunk over a link of varying bandwidth; each
 * chunk is available at n_levels encodings (level 0 = best quality, larger
 * levels smaller and lossier) or as text the receiver recomputes. For each
 * chunk the adaptive mode picks the option of lowest quality loss (text:
 * none) whose predicted completion of the request (remaining chunks sent
 * the same way, bandwidth = throughput measured on the previous chunk)
 * meets the time-to-first-token target; when nothing meets it, the fastest.
 * The replay is deterministic: transfers integrate a bandwidth trace. */
#define KVL_STREAM_MAX_LEVELS 8
#define KVL_STREAM_MAX_CHUNKS 1024
enum { KVL_STREAM_ADAPTIVE = -2, KVL_STREAM_TEXT = -1 }; /* modes; a mode >= 0 = always that level */
typedef struct kvl_stream_chunk {
    int n_tokens;
    int64_t bytes[KVL_STREAM_MAX_LEVELS]; /* encoded bytes of the chunk per level */
} kvl_stream_chunk;
typedef struct kvl_stream_profile {
    int n_levels;
    double level_loss[KVL_STREAM_MAX_LEVELS];       /* quality loss per level (e.g. KLD), >= 0; text = 0 */
    double decode_tok_per_s[KVL_STREAM_MAX_LEVELS]; /* measured: tokens decoded into pages per second */
    double prefill_tok_per_s;                       /* measured: recompute speed (text chunks) */
    double text_bytes_per_token;                    /* bytes sent per token of a text chunk (4) */
    double rtt_s;                                   /* per-chunk request latency */
    double bw_init_bps;                             /* bandwidth estimate before any transfer, bytes/s */
    int question_tokens;                            /* prefilled after the context */
    int serial;                                     /* 1: fetch and compute in turn (no overlap) */
} kvl_stream_profile;
typedef struct kvl_stream_trace {
    const double *mbps; /* [n] Mbit/s, sample k covers [k*step_s, (k+1)*step_s); repeats after n */
    int n;
    double step_s;
} kvl_stream_trace;
typedef struct kvl_stream_result {
    int n_chunks, n_text;
    int choice[KVL_STREAM_MAX_CHUNKS]; /* per chunk: level or KVL_STREAM_TEXT */
    double ttft_s;                     /* request start to the question prefilled */
    double bytes;                      /* bytes sent */
    double loss;                       /* token-weighted mean level loss */
    int met;                           /* ttft_s <= slo */
} kvl_stream_result;
/* Defaults: rtt 1 ms, 4 bytes per text token, initial estimate 8 Mbit/s. */
void kvl_stream_profile_default(kvl_stream_profile *p);
/* Parse a trace: one bandwidth in Mbit/s per line (blank lines and '#'
 * comments skipped), each covering step_s seconds. *mbps: malloc'd [*n]
 * (free()). A malformed line is KVL_ERR_FORMAT naming the line. */
kvl_status kvl_stream_trace_parse(const char *text, size_t len, double step_s, double **mbps, int *n, char *err,
                                  size_t err_len);
/* When a transfer of `bytes` started at time t (s) over the trace ends. */
double kvl_stream_transfer_end(const kvl_stream_trace *tr, double t, double bytes);
/* KVL_ERR_ARG (message in err) unless p is usable with mode. */
kvl_status kvl_stream_profile_check(const kvl_stream_profile *p, int mode, char *err, size_t err_len);
/* The adaptive decision for chunk i of c [n]: the option (a level or
 * KVL_STREAM_TEXT) of least loss whose predicted completion of chunks
 * [i, n) and the question, all sent that way at bandwidth bw (bytes/s),
 * from a link free at t_link and a receiver free at t_compute, is at most
 * deadline; else the fastest option. Times in seconds on one clock. */
int kvl_stream_choose(const kvl_stream_profile *p, const kvl_stream_chunk *c, int i, int n, double bw, double t_link,
                      double t_compute, double deadline);
/* Replay one request of chunks c [n] starting at t0 under mode (ADAPTIVE,
 * TEXT or a level) against target slo_s. bw_state (may be NULL): the
 * bandwidth estimate carried across requests (read, then updated with the
 * last measured throughput; <= 0 = use bw_init_bps). */
kvl_status kvl_stream_run(const kvl_stream_profile *p, const kvl_stream_chunk *c, int n, const kvl_stream_trace *tr,
                          double t0, int mode, double slo_s, double *bw_state, kvl_stream_result *res, char *err,
                          size_t err_len);
/* Real transfers through a Redis store (needs a build with hiredis, else
 * "built without hiredis"; engine/stream_fetch.c). kvl_stream_put stores
 * chunk `chunk`'s encoding at `level` (KVL_STREAM_TEXT: its token ids)
 * under "PREFIX:CHUNK:LEVEL" / "PREFIX:CHUNK:text". kvl_stream_fetch
 * fetches chunks [0, n) in order, each with the option kvl_stream_choose
 * picks (serial model) from the throughput of the GETs so far and the time
 * spent, or always `mode`, and calls cb(user, chunk, level, bytes, len) on
 * each as it arrives (the receiver decodes or recomputes it there; its
 * time counts); a non-zero return from cb stops with that status. res:
 * choices, bytes, loss; ttft_s = time to the last chunk's cb returning
 * (the caller times the question) and met against slo_s. A missing key
 * is KVL_ERR_IO naming it. */
/* Connect to the store and PING it (KVL_ERR_IO naming the URL if down). */
kvl_status kvl_stream_ping(const char *redis_url, char *err, size_t err_len);
typedef kvl_status (*kvl_stream_fetch_cb)(void *user, int chunk, int level, const uint8_t *data, size_t len);
kvl_status kvl_stream_put(const char *redis_url, const char *prefix, int chunk, int level, const void *data, size_t len,
                          char *err, size_t err_len);
kvl_status kvl_stream_fetch(const char *redis_url, const char *prefix, const kvl_stream_profile *p,
                            const kvl_stream_chunk *c, int n, int mode, double slo_s, double *bw_state,
                            kvl_stream_fetch_cb cb, void *user, kvl_stream_result *res, char *err, size_t err_len);

/* ---- CacheGen compressed KV format (src/kv/cachegen.c, docs/ARCHITECTURE.md "CacheGen format") ----
 * A lossy, entropy-coded file of a sequence's KV (every layer and kv-head,
 * from pages of any codec): token groups of an anchor and deltas,
 * per-channel steps set by a quality level (0 finest .. 3 smallest) and the
 * layer's depth, rANS-coded symbols. Loading decodes into pages of the
 * loading context's own codec (any: f16, int8, kivi2, ...). The file holds
 * the model identity, geometry, positions and token ids, one CRC32C per
 * section; loading treats it as hostile and either fills a new sequence or
 * changes nothing. */
typedef struct kvl_cachegen_opts {
    int level;      /* 0..3 */
    float scale;    /* multiplies every quantization step (0 = 1: the level as tuned) */
    int group;      /* tokens per anchor group (0 = the level's default, 10) */
    int chan_group; /* channels per entropy-coder context (0 = default, 8) */
} kvl_cachegen_opts;
/* Encode s (every cached token; fails with KVL_ERR_ARG if an evicting
 * policy left lists of different lengths) into a malloc'd *buf / *len. */
kvl_status kvl_seq_save_cachegen(const kvl_seq *s, const kvl_cachegen_opts *o, void **buf, size_t *len);
/* Load a CacheGen buffer into a new sequence of c (*out; NULL on failure,
 * the pool unchanged). The file must be of c's model (identity) and fit
 * n_ctx; rows are re-encoded through c's codecs at their positions. */
kvl_status kvl_seq_load_cachegen(kvl_ctx *c, const void *buf, size_t len, kvl_seq **out);
/* 1 when buf starts with the CacheGen magic (else try kvl_session_*). */
int kvl_cachegen_is_file(const void *buf, size_t len);
/* Verify a CacheGen buffer without a model (every checksum, and every layer
 * decoded) and describe it in a malloc'd NUL-terminated *text: level,
 * geometry, tokens, bits/value, per-layer sizes. max_pos (may be NULL):
 * the largest position + 1 (the context a load needs). */
kvl_status kvl_cachegen_describe(const void *buf, size_t len, char **text, int *max_pos, char *err, size_t err_len);
/* Chunks, for streaming (an adaptive streamer picks a level per chunk from
 * these sizes and speeds): tokens [tok0, tok0 + n) of s as one CacheGen
 * file (the first 4 tokens of the sequence are stored as f16 sinks, so a
 * chunk after them has none). */
kvl_status kvl_seq_save_cachegen_chunk(const kvl_seq *s, int tok0, int n, const kvl_cachegen_opts *o, void **buf,
                                       size_t *len);
/* Append a chunk file to s: its positions must be s's next ones (pos(s),
 * pos(s) + 1, ...); rows re-encoded through s's codecs. All or nothing: on
 * failure s and the pool are unchanged. */
kvl_status kvl_seq_append_cachegen(kvl_seq *s, const void *buf, size_t len);
typedef struct kvl_cachegen_chunk {
    int tok0, n_tok;
    size_t bytes[4];           /* file bytes at each level 0..3 (every byte counted) */
    double enc_s[4], dec_s[4]; /* measured seconds: encode; decode to float and verify (no page re-encode) */
} kvl_cachegen_chunk;
/* s's tokens cut into chunks of chunk_tokens (the last may be shorter),
 * each encoded at every level and decoded again: out [cap], *n_out chunks
 * (KVL_ERR_ARG if cap is too small). Speeds are wall-clock on this thread. */
kvl_status kvl_cachegen_chunk_sizes(const kvl_seq *s, int chunk_tokens, kvl_cachegen_chunk *out, int cap, int *n_out);

/* A new sequence of dst holding src's cached tokens decoded to float and
 * re-encoded through dst's codecs (transfer through float, no file; used by
 * benchmarks as the quality of src's page codec as a transport format). */
kvl_status kvl_seq_transcode(kvl_ctx *dst, const kvl_seq *src, kvl_seq **out);

#ifdef __cplusplus
}
#endif
#endif
