/* kvlite's CUDA backend, C-callable API (built only with `make CUDA=1`).
 *
 * What is here (first increment of issue 12): device memory helpers, a
 * device KV page pool holding pages byte-for-byte in kvlite's CPU layout
 * (kv/kv_internal.h), and paged decode attention over it (split-K over pages,
 * "flash-decoding", the G query heads of a kv-head sharing each page load,
 * dequantization fused). Codecs with a kernel: f16, int8, fp8, int4z and the
 * sealing KIVI codecs kivi4z, kivi2z (lists of sealed pages followed by open
 * f16 pages). Any other codec is refused with KVL_ERR_UNSUPPORTED at pool
 * creation, never run on the CPU.
 *
 * Conventions: opaque handles with create/free pairs, kvl_status returns with
 * the message in a caller-owned kvl_err, no global state (each handle keeps
 * its own device properties), `stream` is a cudaStream_t passed as void *
 * (NULL = the default stream) so this header needs no CUDA headers. Pointers
 * documented as "device" live in GPU memory. */
#ifndef KVL_CUDA_KVL_CUDA_H
#define KVL_CUDA_KVL_CUDA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "util/err.h" /* C linkage, also from the .cu files */

/* ---- device memory helpers --------------------------------------------------------- */

/* Name and multiprocessor count of the current device (name: at least 64 bytes). */
kvl_status kvl_cuda_device_info(char *name, size_t name_len, int *n_sm, kvl_err *err);
kvl_status kvl_cuda_alloc(void **dptr, size_t bytes, kvl_err *err);
void kvl_cuda_free(void *dptr);
/* Synchronous copies (host <-> device, device -> device). */
kvl_status kvl_cuda_upload(void *dst_dev, const void *src_host, size_t bytes, kvl_err *err);
kvl_status kvl_cuda_download(void *dst_host, const void *src_dev, size_t bytes, kvl_err *err);
/* Fill bytes of device memory with value (cudaMemset). */
kvl_status kvl_cuda_memset(void *dptr, int value, size_t bytes, kvl_err *err);
/* Wait for the device; reports any error of earlier asynchronous work. */
kvl_status kvl_cuda_sync(kvl_err *err);

/* ---- device KV page pool ------------------------------------------------------------ */

/* Page ids: the top KVL_CUDA_CLASS_BITS bits name a page size class, the
 * rest index pages of that class (see page_space.cuh), as in the CPU pool.
 * Per-token codecs (f16, int8, fp8, int4z) have class 0 only; a sealing
 * codec (kivi4z, kivi2z) has class 0 = open pages (f16 K and V rows) and
 * class 1 = sealed pages, the numbering of a CPU pool whose layers share
 * one codec configuration, so CPU page ids are device page ids. */
#define KVL_CUDA_CLASS_BITS 4 /* as the CPU pool: kv_internal.h KVI_CLS_SHIFT 28 */

typedef struct kvl_cuda_pool kvl_cuda_pool;

typedef struct kvl_cuda_pool_config {
    const char *codec_k;  /* "f16", "int8", "fp8", "int4z", "kivi4z", "kivi2z" */
    const char *codec_v;  /* NULL = codec_k (its V twin for KIVI: kivi4zv, kivi2zv); must be that */
    int head_dim;         /* D: 64 or 128 */
    int page_tokens;      /* P: power of two, 16..256 */
    int64_t n_pages;      /* pages of class 0, allocated at creation (one cudaMalloc per class) */
    int64_t n_pages_sealed; /* sealing codecs: pages of class 1 (sealed); must be 0 otherwise */
} kvl_cuda_pool_config;

/* Fails with KVL_ERR_UNSUPPORTED for a codec, head_dim or page size with no
 * kernel, KVL_ERR_NOMEM when the device has no room. */
kvl_status kvl_cuda_pool_create(const kvl_cuda_pool_config *cfg, kvl_cuda_pool **out, kvl_err *err);
void kvl_cuda_pool_free(kvl_cuda_pool *p);
/* Bytes of the largest page: [int32 pos[P]] pad64 [K segment] pad64 [V segment]
 * pad64, equal to kvl_kv_page_bytes() of a CPU pool with the same codecs, D, P. */
size_t kvl_cuda_pool_page_bytes(const kvl_cuda_pool *p);
int64_t kvl_cuda_pool_n_pages(const kvl_cuda_pool *p); /* of class 0 */
/* Number of classes (1 or 2), bytes and pages of class c (0 for a class the
 * pool does not have), and the class of sealed pages (-1: per-token codec). */
int kvl_cuda_pool_n_classes(const kvl_cuda_pool *p);
size_t kvl_cuda_pool_class_bytes(const kvl_cuda_pool *p, int c);
int64_t kvl_cuda_pool_class_pages(const kvl_cuda_pool *p, int c);
int kvl_cuda_pool_sealed_class(const kvl_cuda_pool *p);
/* Copy n pages of id's class (n * that class's page bytes, host) to the
 * device pages id, id+1, ... */
kvl_status kvl_cuda_pool_upload(kvl_cuda_pool *p, uint32_t id, const void *pages, int64_t n, kvl_err *err);
/* Copy n pages of id's class from the device to host memory (tests). */
kvl_status kvl_cuda_pool_download(const kvl_cuda_pool *p, uint32_t id, void *pages, int64_t n, kvl_err *err);
/* Byte offsets of the K and V segments inside a page of class c. */
void kvl_cuda_pool_seg_offsets(const kvl_cuda_pool *p, int c, size_t *koff, size_t *voff);
/* Testing and benchmarks: fill pages [id, id + n) (of id's class) on the
 * device with valid random encoded rows (f16 values in [-1, 1]; int8 codes in
 * [-127, 127] with row scales in [0.5, 1]/127; fp8 codes other than NaN with
 * scales in [0.5, 1]/448; 4-bit and 2-bit codes with e5m3 scales in
 * [0.125, 0.234] and zero points in the code range) and positions
 * pos[r] = r0 + r, where r0 is the page's index (from id) times P.
 * Deterministic in seed. */
kvl_status kvl_cuda_pool_fill_random(kvl_cuda_pool *p, uint32_t id, int64_t n, uint64_t seed, kvl_err *err);

/* ---- paged decode attention ---------------------------------------------------------- */

/* Planning knobs (zero = default). The list of each (sequence, kv-head) is cut
 * into splits of chunk_pages pages: one thread block per (split, kv-head,
 * sequence); with more than one split a merge kernel folds the partial
 * softmax results. chunk_pages is the smallest number of pages that keeps
 * the grid within target_blocks (one wave), within [min_chunk_tokens,
 * max_chunk_tokens]; when even that grid is larger, the number of splits
 * is raised (at most 4x) until its waves are >= 90% full. The tensor-core
 * kernels round chunk_pages up to a multiple of 128 tokens (tile_round). */
typedef struct kvl_cuda_attn_tuning {
    int target_blocks;    /* default: resident blocks per SM x SMs (one full wave) */
    int min_chunk_tokens; /* default 64 */
    int max_chunk_tokens; /* default 2048, 4096 for the tensor-core kernels (upper bound also on scratch shared memory) */
    int skip_merge;       /* benchmarks only: no merge (output wrong when split) */
    int variant;          /* benchmarks / tests: 0 = default kernel (tensor cores where one exists for D, G <= 4, P); f16 / int8 / fp8: 7 = the CUDA-core kernel, 8 = the tensor-core kernel (as 0), 1..6 = CUDA-core tuning alternates (D 128, G 4 only); int4z 1, 2 and kivi2z 1: the CUDA-core kernels */
    int tile_round;       /* tensor-core kernels: 0 = splits rounded up to whole 128-token steps (4 warps x 2 tiles; may exceed max_chunk_tokens by < 128), < 0 = not */
} kvl_cuda_attn_tuning;

typedef struct kvl_cuda_attn kvl_cuda_attn;

/* Attention workspace for up to max_seq sequences of lists of up to max_len
 * tokens, n_head query heads over n_head_kv kv-heads (G = n_head / n_head_kv
 * in 1..8) of pool p. Allocates the partial-result buffer once, so
 * kvl_cuda_attn_run allocates nothing. tuning may be NULL. */
kvl_status kvl_cuda_attn_create(const kvl_cuda_pool *p, int n_head, int n_head_kv, int max_seq, int max_len,
                                const kvl_cuda_attn_tuning *tuning, kvl_cuda_attn **out, kvl_err *err);
void kvl_cuda_attn_free(kvl_cuda_attn *a);

/* One decode step of one layer for a batch of B sequences, one query token
 * each. List (b, h) (h < n_head_kv) holds list_len[b*Hkv + h] tokens in the
 * pages page_ids[list_off[b*Hkv + h] ...], all full except the last; for a
 * sealing codec its sealed pages (class 1) come first, then open pages
 * (class 0), as in the CPU table (a sealed page after an open one gives NaN). Query
 * head qh of sequence b attends with scale * q.k to the cached rows of list
 * (b, qh / G) whose position <= qpos[b]; a query that sees no row gets zeros
 * (as kvl_kv_attend). Arguments marked device are device pointers. */
typedef struct kvl_cuda_attn_args {
    int n_seq;                /* B <= max_seq */
    int max_len;              /* host: the longest list_len of this call (<= the workspace's max_len) */
    const uint32_t *page_ids; /* device: page ids of all lists */
    const int32_t *list_off;  /* device [B][Hkv]: first entry of each list in page_ids */
    const int32_t *list_len;  /* device [B][Hkv]: tokens in each list */
    const int32_t *qpos;      /* device [B]: position of each sequence's query token */
    const float *q;           /* device [B][n_head][D]: queries (RoPE applied, unscaled) */
    float *out;               /* device [B][n_head][D] */
    float scale;              /* multiplies q.k (1/sqrt(D) for Llama) */
} kvl_cuda_attn_args;

/* Enqueue the kernels on stream (asynchronous; errors of the launch are
 * reported, errors of the execution by a later sync). */
kvl_status kvl_cuda_attn_run(kvl_cuda_attn *a, const kvl_cuda_attn_args *args, void *stream, kvl_err *err);

/* The plan kvl_cuda_attn_run uses for n_seq sequences of at most max_len
 * tokens: pages per split and splits per list (tests, benchmarks). */
void kvl_cuda_attn_plan(const kvl_cuda_attn *a, int n_seq, int max_len, int *chunk_pages, int *n_split);
/* Tokens of one step of all warps of a's split kernel (the tensor-core
 * kernels: warps x tiles per softmax step x 16; the plan rounds splits to
 * it, tuning.tile_round >= 0) and its threads per block (tests). */
int kvl_cuda_attn_step_tokens(const kvl_cuda_attn *a);
int kvl_cuda_attn_threads(const kvl_cuda_attn *a);

/* ---- attention statistics (attn_stats.cu; added 2026-12-03) ------------------------------ */

/* The eviction policies' accumulators of src/kv/kv.h ("Attention
 * statistics"), produced on the device by the decode attention of
 * kvl_cuda_attn_run when args->stats is set, with the CPU's semantics
 * (src/kv/attn.c stats_fold): for query (b, qh) with final softmax max M
 * and sum L over its list (the attention's own), p_j = exp(s_j - M) / L of
 * each list row j (0 where the position is after the query), and
 *   MASS += p; WSUM += p; WSQ += p^2; LAST = p; WENT += -p log p (p > 0);
 *   VOTE += 1 where s_j < a*mean - b*std of the query's finite scores s.
 * A query that sees no row changes nothing. Same numbering as KVL_KV_ACC_*. */
enum {
    KVL_CUDA_ACC_MASS, KVL_CUDA_ACC_WSUM, KVL_CUDA_ACC_WSQ, KVL_CUDA_ACC_LAST, KVL_CUDA_ACC_VOTE, KVL_CUDA_ACC_WENT,
    KVL_CUDA_N_ACC
};

typedef struct kvl_cuda_attn_stats {
    /* device: accumulator a (NULL = off; WSQ is on with WSUM). The row of
     * query head qh of sequence b, in list order, starts at
     * acc[a] + ((size_t)row[b] * n_head + qh) * stride */
    float *acc[KVL_CUDA_N_ACC];
    const int32_t *row;   /* device [B]: accumulator row block of each sequence (NULL: b) */
    int stride;           /* floats per (row block, query head) row: >= every list_len */
    const uint8_t *qmask; /* device [B]: accumulators query b feeds (bit 1 << KVL_CUDA_ACC_*; WSUM
                             feeds WSQ too), as the CPU picks them per query of a call (window
                             queries, the last query); NULL = every enabled one */
    float vote_a, vote_b; /* VOTE threshold a*mean - b*std (the CPU default: 1, 0.5) */
    int shared_rows;      /* 1: sequences of this call may share rows (a prefill call's queries of
                             one slot): sums by atomic adds; at most one query per row may feed LAST */
} kvl_cuda_attn_stats;

/* kvl_cuda_attn_run that also folds this call's statistics into st's
 * accumulators (st NULL: kvl_cuda_attn_run itself). A separate entry
 * point, so kvl_cuda_attn_args and its callers stay as they were.
 * Needs kvl_cuda_attn_enable_stats first. */
kvl_status kvl_cuda_attn_run_stats(kvl_cuda_attn *a, const kvl_cuda_attn_args *args, const kvl_cuda_attn_stats *st,
                                   void *stream, kvl_err *err);

/* Make workspace a able to produce statistics: allocates, once, the score
 * scratch [max_seq][n_head][max_len] floats (4 bytes per token and query
 * head), the per-split (m, l) records and the vote moments, and picks the
 * statistics instantiations of the split kernel (a template flag: the
 * default kernels are untouched). KVL_ERR_UNSUPPORTED for sealing codecs
 * (kivi4z, kivi2z) and kernel variants other than the default. Idempotent. */
kvl_status kvl_cuda_attn_enable_stats(kvl_cuda_attn *a, kvl_err *err);
/* Device bytes held for statistics by the workspace (0 before enable). */
size_t kvl_cuda_attn_stats_bytes(const kvl_cuda_attn *a);

/* ---- KV compaction on the device (kv_compact.cu; added 2026-12-03) ------------------------ */

/* Eviction's compaction (the device twin of kvl_kv_drop for exclusively
 * owned pages): list i keeps rows keep[keep_off[i] .. + n_keep[i]) (strictly
 * increasing row indices < old_len[i]); kept row k moves to row k of the
 * same list (page k / P of the list's page ids, slot k % P): position, K row
 * and V row bytes, in place, so the list's pages [0, ceil(n_keep / P)) hold
 * exactly the bytes kvl_kv_drop leaves for the same drop (rows past n_keep
 * keep stale bytes, as there). Statistics rows move alongside and their
 * tail [n_keep, old_len) is zeroed (kv/stats.c kvi_stats_drop). One block
 * per list, no allocation. Per-token codecs only (f16, int8, fp8, int4z):
 * KVL_ERR_UNSUPPORTED for sealing codecs (their sealed rows must be
 * decoded and re-encoded, as drop.c does). */
typedef struct kvl_cuda_compact_args {
    int n_list;
    const uint32_t *page_ids; /* device: page ids of all lists */
    const int32_t *list_off;  /* device [n_list]: first entry of each list in page_ids */
    const int32_t *old_len;   /* device [n_list]: rows before the compaction */
    const int32_t *keep_off;  /* device [n_list]: first entry of each list's kept rows in keep */
    const int32_t *n_keep;    /* device [n_list] */
    const int32_t *keep;      /* device: kept row indices */
    /* statistics (optional): acc[a] (NULL = none) + stat_row[i] is the first
     * of n_stat_rows rows (the list's query heads) stat_stride floats apart */
    float *acc[KVL_CUDA_N_ACC];
    const int64_t *stat_row; /* device [n_list] */
    int n_stat_rows, stat_stride;
} kvl_cuda_compact_args;

kvl_status kvl_cuda_kv_compact(kvl_cuda_pool *p, const kvl_cuda_compact_args *args, void *stream, kvl_err *err);

/* ---- decode forward pass (lm.cu; kernels in gemv.cu, kv_append.cu, lm_ops.cu) ------- */

/* A weight matrix on the host: W [rows][cols] of ggml type `type` (cpu/quant.h
 * numbering), row-major blocks as in GGUF. data NULL: random weights generated
 * on the device (benchmarks of model shapes with no file; deterministic in the
 * lm's seed, values of a few 0.01). */
typedef struct kvl_cuda_tensor {
    int type;
    const void *data;
    int64_t rows, cols;
} kvl_cuda_tensor;

typedef struct kvl_cuda_layer_desc {
    const float *attn_norm, *ffn_norm; /* host [n_embd]; NULL only with random weights (then all ones) */
    kvl_cuda_tensor wq, wk, wv, wo, w_gate, w_up, w_down;
} kvl_cuda_layer_desc;

/* A Llama-family model as the forward pass needs it (no biases). */
typedef struct kvl_cuda_model_desc {
    int n_layer, n_embd, n_head, n_head_kv, head_dim, n_ff, n_vocab;
    float norm_eps;
    int rope_neox;               /* 1: NEOX pairs (i, i + hd/2); 0: adjacent pairs */
    const float *rope_freq;      /* host [head_dim/2]: angle per position */
    kvl_cuda_tensor tok_embd;    /* [n_vocab][n_embd] */
    kvl_cuda_tensor output;      /* [n_vocab][n_embd]; same data as tok_embd when tied (uploaded once) */
    const float *out_norm;       /* host [n_embd] (NULL with random weights) */
    const kvl_cuda_layer_desc *layers; /* [n_layer] */
} kvl_cuda_model_desc;

enum { KVL_CUDA_W_NATIVE = 0, KVL_CUDA_W_F16 = 1 };

typedef struct kvl_cuda_lm_config {
    const char *codec;  /* KV codec of K and V with an append kernel: "f16", "int8", "int4z" */
    int page_tokens;    /* P (16..256, power of two) */
    int n_ctx;          /* tokens per sequence slot */
    int n_slots;        /* sequence slots (each owns n_layer x n_head_kv lists of n_ctx tokens) */
    int max_batch;      /* most entries (tokens) of one kvl_cuda_lm_forward call */
    int weights;        /* KVL_CUDA_W_NATIVE: the GGUF blocks (Q8_0, Q4_0, Q4_1, F16; repacked into
                           separate code and scale arrays), dequantized inside the matvec; other types
                           are converted to f16 at upload. KVL_CUDA_W_F16: every weight converted to f16 */
    uint64_t seed;      /* random weights (tensors with data NULL) */
    int exact_matmul;   /* 1: every matvec on f32 activations (the CPU's exact_matmul numerics);
                           0 (default): matrices in Q8_0 / Q4_0 / Q4_1 blocks take the activations
                           as 8-bit blocks of 32 (integer dot products, the CPU default path's
                           numerics); f16 matrices always take f32 activations */
    /* sealing codecs (kivi2z, kivi4z; added 2026-12-03, zero = the CPU defaults): */
    int seal_residual;  /* r: tokens kept open besides the page being filled, as the codec spec's r
                           (a multiple of page_tokens; 0 = one page, the CPU default) */
    int seal_fit;       /* the spec's fit: 0 auto (mse at 2 bits, cover at 4), 1 cover, 2 mse */
    /* eviction (added 2026-12-03b): */
    int list_tokens;    /* rows each (slot, layer, kv-head) list holds (0 = n_ctx); fewer than n_ctx only
                           with kvl_cuda_lm_enable_evict (rows are then not positions) */
} kvl_cuda_lm_config;

typedef struct kvl_cuda_lm kvl_cuda_lm;

/* Upload the weights (once) and allocate the device KV pool, its page table
 * and every buffer of a step: kvl_cuda_lm_forward allocates nothing.
 * KVL_ERR_UNSUPPORTED (clear message) for a codec without an append kernel,
 * a shape without kernels (head_dim not 64/128, n_embd or n_ff not a
 * multiple of 32, G = n_head / n_head_kv > 8), KVL_ERR_NOMEM without room. */
kvl_status kvl_cuda_lm_create(const kvl_cuda_model_desc *m, const kvl_cuda_lm_config *cfg, kvl_cuda_lm **out,
                              kvl_err *err);
void kvl_cuda_lm_free(kvl_cuda_lm *lm);
/* Device bytes of the weights and of the KV pool. */
size_t kvl_cuda_lm_weight_bytes(const kvl_cuda_lm *lm);
size_t kvl_cuda_lm_kv_bytes(const kvl_cuda_lm *lm);
/* Weight bytes one decode step reads (all but an untied embedding matrix, of which it reads a row). */
size_t kvl_cuda_lm_step_weight_bytes(const kvl_cuda_lm *lm);
/* Encoded KV bytes per token (all layers and kv-heads, K and V, positions included). */
double kvl_cuda_lm_kv_bytes_per_token(const kvl_cuda_lm *lm);

/* One forward call of n (<= max_batch) entries, each one token: entry i is
 * token tok[i] at position pos[i] of slot slot[i]. Entries of one slot may
 * share a call (prefill: consecutive positions); every entry's K/V row is
 * appended before attention, and entry i attends to its slot's rows at
 * positions 0..pos[i] (which must all have been written by this or earlier
 * calls). Writes the greedy token of each entry to argmax_out [n] (lowest
 * index on ties, NaN skipped) and, if logits_out is not NULL, the logits
 * of entries first_logit..n-1 to logits_out [n - first_logit][n_vocab]
 * (host). Synchronous. */
kvl_status kvl_cuda_lm_forward(kvl_cuda_lm *lm, int n, const int32_t *tok, const int32_t *pos, const int32_t *slot,
                               int first_logit, float *logits_out, int32_t *argmax_out, kvl_err *err);
/* Sealing codecs (kivi2z, kivi4z): pages seal at the END of a forward call
 * as on the CPU (kv/codec.h: a full page that left the residual window is
 * sealed after the call's attention, so the call's own queries see its rows
 * at f16). An engine call that runs as several kvl_cuda_lm_forward calls
 * (device batches) sets defer = 1 before all but its last, so the pages
 * seal once, after the last (the CPU's result for that engine call).
 * The seal kernel is part of every forward call of a sealing lm (in its
 * graph); which pages it seals is planned here on the host from each
 * slot's length and travels in the call's metadata block. A call at a
 * position before the slot's length rewinds the slot: pages from there on
 * are open again (their f16 rows are still in place). No-op otherwise. */
void kvl_cuda_lm_defer_seal(kvl_cuda_lm *lm, int defer);
/* The 8-bit path's Q8_0 gate|up matvec with SwiGLU and h's 8-bit blocks in
 * its epilogue (kvl_cuda_gemv_q8_swiglu: one launch instead of two per
 * layer, the same floats): 1, or 0 (the default: the separate SwiGLU
 * kernel, measured 1.8% faster per 8B step). Benchmarks compare. The next
 * graph call captures anew. */
void kvl_cuda_lm_set_fused_swiglu(kvl_cuda_lm *lm, int on);
/* Launch choices of the 8-bit path (same results up to the RMSNorm's sum
 * order): norm_regs 1 (default) = the RMSNorm kernel that keeps the row in
 * registers (kvl_cuda_rmsnorm_q8_ex), 0 = the one-block re-reading one;
 * chain 1 (default) = RMSNorm, SwiGLU and the KV append are programmatic
 * dependent launches too (each launched while the kernel before it runs,
 * waiting for it before its first read), 0 = plain stream order.
 * Benchmarks compare. The next graph call captures anew. */
void kvl_cuda_lm_set_launch(kvl_cuda_lm *lm, int norm_regs, int chain);
/* L2 prefetch at one entry: each matvec's last wave asks for the first
 * `bytes` of the next matrix (wo -> gate|up -> down -> next layer's qkv,
 * the last down -> output, output -> layer 0's qkv for the next step; and
 * qkv -> wo across the attention when wo is set) so that the memory stays
 * busy across the small kernels in between; 0 = off. Same results. */
void kvl_cuda_lm_set_prefetch(kvl_cuda_lm *lm, size_t bytes, int wo);
/* Benchmarks: launch options of the integer matvecs (kvl_cuda_gemv_opts in
 * lm_ops.h: kernel variant, < 0 the default; programmatic dependent launch;
 * trigger of the next launch at the kernel's start). Same results. */
void kvl_cuda_lm_set_gemv(kvl_cuda_lm *lm, int variant, int pdl, int trigger);
/* Logits tail (on = 1; default 0): a forward call computes the output rows
 * (final RMSNorm, output matrix, token choice) only of the entries whose
 * logits it returns (first_logit..n-1), or of its last entry when
 * logits_out is NULL; argmax_out of the other entries is -1. A prefill
 * chunk then multiplies one row by the output matrix instead of all of
 * them. Not with drawn tokens (kvl_cuda_lm_set_sampling with temperature >
 * 0: every entry's row, as without the tail). The engine turns it on. */
void kvl_cuda_lm_set_logits_tail(kvl_cuda_lm *lm, int on);
/* The 8-bit path's quantized matrices (cols % 64 == 0) in calls of >= min_n
 * entries take the tensor-core GEMM (kvl_cuda_gemm_q8: the matvec's sums up
 * to the f32 order of the block terms) instead of the matvec; min_n <= 0:
 * the matvec always. Default KVL_CUDA_GEMM_MIN_N (lm.cu), or the value of
 * the environment variable KVL_CUDA_GEMM_MIN_N at create (0: off, for
 * before / after benchmarks). The next graph call captures anew. */
void kvl_cuda_lm_set_gemm(kvl_cuda_lm *lm, int min_n);
/* Benchmarks only (the results are garbage): bit s of skip leaves stage s
 * (KVL_CUDA_PROF_*) out of every call, bit s of dup launches it twice; to
 * place the graph's time by differences. 0, 0 restores. */
void kvl_cuda_lm_set_ablate(kvl_cuda_lm *lm, unsigned skip, unsigned dup);
/* Token choice of kvl_cuda_lm_forward's argmax_out: temperature > 0 makes
 * it a draw on the device (kvl_cuda_sample: the CPU sampler's temperature
 * -> top-k -> softmax -> min-p / top-p semantics; the repetition penalty
 * is kvl_cuda_lm_set_penalty; top_k 1..1024, else KVL_ERR_UNSUPPORTED), seeded by seed with one draw
 * counter per entry index, reset here; temperature <= 0 restores greedy.
 * Allocates on the first call (never in the step); the next graph call
 * captures anew. */
kvl_status kvl_cuda_lm_set_sampling(kvl_cuda_lm *lm, float temperature, int top_k, float top_p, float min_p,
                                    uint64_t seed, kvl_err *err);
/* The CPU sampler's repetition penalty before the token choice (greedy or
 * sampled): penalty 1 (or max_window 0) = off; else every forward call
 * applies it to the logits of its last entry (kvl_cuda_repeat_penalty:
 * each distinct id of the window set by kvl_cuda_lm_set_history once, l > 0
 * ? l / penalty : l * penalty) and logits_out of that entry come back
 * penalized. max_window: the largest window (allocated here, never in the
 * step). The next graph call captures anew. */
kvl_status kvl_cuda_lm_set_penalty(kvl_cuda_lm *lm, float penalty, int max_window, kvl_err *err);
/* The penalty window of the next forward call (its last entry's recent
 * token ids, n <= max_window; copied to pinned memory, no allocation).
 * No-op while the penalty is off. */
kvl_status kvl_cuda_lm_set_history(kvl_cuda_lm *lm, const int32_t *tok, int n, kvl_err *err);
/* Benchmarks: fill positions [0, n_tok) of slot with random valid encoded
 * rows (kvl_cuda_pool_fill_random) at their true positions, as if n_tok
 * tokens had been processed. */
kvl_status kvl_cuda_lm_fill_context(kvl_cuda_lm *lm, int slot, int n_tok, uint64_t seed, kvl_err *err);
/* Launch mode: 1 = the forward call's device work is captured in a CUDA
 * graph once per shape (entries, attention plan) and replayed while that
 * shape holds; 0 (default) = kernels launched directly. Every call of this
 * function makes the next graph call capture anew. */
void kvl_cuda_lm_set_graphs(kvl_cuda_lm *lm, int on);
/* Benchmarks: per-stage device time. on = 1 creates timing events (outside
 * the step: allocation here), clears the sums, and makes every forward call
 * launch directly (no graph) with an event after each stage; 0 stops.
 * kvl_cuda_lm_profile writes the mean ms per forward call of each stage
 * since the last set_profile(1) into ms [KVL_CUDA_PROF_N] and returns the
 * number of calls summed (stage names: kvl_cuda_lm_prof_name). */
enum {
    KVL_CUDA_PROF_EMBED, KVL_CUDA_PROF_NORM, KVL_CUDA_PROF_QKV, KVL_CUDA_PROF_APPEND, KVL_CUDA_PROF_ATTN,
    KVL_CUDA_PROF_QUANT, KVL_CUDA_PROF_WO, KVL_CUDA_PROF_GU, KVL_CUDA_PROF_SWIGLU, KVL_CUDA_PROF_DOWN,
    KVL_CUDA_PROF_OUT, KVL_CUDA_PROF_N
};
kvl_status kvl_cuda_lm_set_profile(kvl_cuda_lm *lm, int on, kvl_err *err);

/* ---- eviction on the device (lm_evict.cuh; added 2026-12-03b) -----------------------
 * After kvl_cuda_lm_enable_evict a list's rows are no longer its positions:
 * each (slot, layer, kv-head) list has a row count (kept on the host here),
 * a forward call appends entry e's K/V at row count + (its index among its
 * slot's entries) and attends to the rows by stored position; the rows
 * move only by kvl_cuda_lm_evict_compact (kvl_cuda_kv_compact). With
 * acc_mask != 0 the decode attention folds the policy's accumulators
 * (kvl_cuda_attn_run_stats) into per (slot, layer) rows of list_tokens
 * floats per query head, and calls that take statistics run the decode
 * kernel (the tiled prefill kernel computes none). */
/* acc_mask: bits 1 << KVL_CUDA_ACC_* (WSUM brings WSQ), 0 = none (StreamingLLM).
 * Allocates the accumulators (n_slots x n_layer x n_head x list rows floats
 * each). Once, before the first forward call. KVL_ERR_UNSUPPORTED for
 * sealing codecs. */
kvl_status kvl_cuda_lm_enable_evict(kvl_cuda_lm *lm, unsigned acc_mask, float vote_a, float vote_b, kvl_err *err);
/* Accumulators each entry of the next forward call feeds (bits as acc_mask;
 * the CPU's choice per query of an engine call: src/kv/attn.c), n entries;
 * copied. n != the call's entries: every entry feeds every accumulator. */
void kvl_cuda_lm_evict_set_qmask(kvl_cuda_lm *lm, const uint8_t *qmask, int n);
/* A new sequence in slot: row counts 0, its accumulators zeroed. */
kvl_status kvl_cuda_lm_evict_reset_slot(kvl_cuda_lm *lm, int slot, kvl_err *err);
/* Host [n_layer][n_head_kv] row counts of slot (NULL before enable). */
const int32_t *kvl_cuda_lm_evict_rows(const kvl_cuda_lm *lm, int slot);
/* Rows per list (list_tokens). */
int kvl_cuda_lm_list_rows(const kvl_cuda_lm *lm);
/* Accumulator acc of (slot, layer): rows [0, n) of each query head into
 * host [n_head][n] (synchronous). */
kvl_status kvl_cuda_lm_evict_download(kvl_cuda_lm *lm, int slot, int layer, int acc, int n, float *host, kvl_err *err);
/* Compact n_list lists of slot: list i = (layer lh[2i], kv-head lh[2i+1])
 * keeps its rows keep[sum of n_keep before i ..] (increasing, < its row
 * count), K/V, positions and accumulator rows alike; its row count
 * becomes n_keep[i]. Synchronous (a host round trip per eviction event). */
kvl_status kvl_cuda_lm_evict_compact(kvl_cuda_lm *lm, int slot, int n_list, const int32_t *lh, const int32_t *n_keep,
                                     const int32_t *keep, kvl_err *err);
/* Zero the window accumulators (WSUM, WSQ, WENT) of (slot, layer). */
kvl_status kvl_cuda_lm_evict_reset_window(kvl_cuda_lm *lm, int slot, int layer, kvl_err *err);
/* Tests: page k of list (slot, layer, head) (rows [k P, k P + P)) into host
 * page [*bytes] (the CPU pool's layout; NULL: only the sizes); *bytes the
 * page's size, *koff, *voff its K and V segments' offsets (synchronous). */
kvl_status kvl_cuda_lm_evict_page(kvl_cuda_lm *lm, int slot, int layer, int head, int k, void *page, size_t *bytes,
                                  size_t *koff, size_t *voff, kvl_err *err);
/* Tests: stored positions of rows [0, n) of list (slot, layer, head) into pos [n]. */
kvl_status kvl_cuda_lm_evict_positions(kvl_cuda_lm *lm, int slot, int layer, int head, int32_t *pos, int n,
                                       kvl_err *err);
/* Pages of slot holding rows (sum over its lists of ceil(rows / P)). */
int64_t kvl_cuda_lm_evict_pages(const kvl_cuda_lm *lm, int slot);
int kvl_cuda_lm_profile(const kvl_cuda_lm *lm, double *ms);
const char *kvl_cuda_lm_prof_name(int stage);

#ifdef __cplusplus
}
#endif

#endif
