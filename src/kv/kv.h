/* The paged KV cache (pool.c, table.c, txn.c, drop.c, stats.c, attn.c): a
 * byte-budgeted pool of fixed-size pages, per-sequence page tables per (layer, kv-head) with reference-counted shared pages, codecs
 * that encode K/V rows into page bytes, and attention computed over the pages
 * with an online softmax calling the codec's fused score / value-accumulate
 * functions on the encoded bytes. Policies (eviction) hook in through the
 * attention statistics and keep/drop decisions (see kv/policy.h). */
#ifndef KVL_KV_KV_H
#define KVL_KV_KV_H

#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

typedef struct kvl_codec kvl_codec;       /* kv/codec.h */
typedef struct kvl_kv_pool kvl_kv_pool;
typedef struct kvl_kv_table kvl_kv_table; /* one sequence's page tables */

/* Codec by name ("f32", "f16", "int8") or NULL. */
const kvl_codec *kvl_codec_find(const char *name);
const char *kvl_codec_name(const kvl_codec *c);
/* Comma-separated list of codec names (for error messages / --help). */
const char *kvl_codec_list(void);

typedef struct kvl_kv_config {
    int n_layer, n_head_kv, head_dim;
    int page_tokens;         /* tokens per page (e.g. 32) */
    size_t budget_bytes;     /* hard cap on bytes of all pages in the pool */
    const kvl_codec *codec;  /* used for K and V */
    const char *policy;      /* "full" (NULL = "full") */
    /* Optional fields (zero = default); appended so positional initialisers keep working. */
    const kvl_codec *codec_v;/* codec for V (NULL = codec) */
    int n_head;              /* query heads, for per-query-head attention statistics (0 = n_head_kv) */
    int scalar_only;         /* 1: scalar reference kernels (tests, benchmarks) */
    int attn_chunk_tokens;   /* attention chunk (whole pages; 0 = 512 tokens): see kvl_kv_attn */
    /* Codec specs (kv/codec_spec.h: "int4", "kivi2:r=64", "int8+rot", ...);
     * when set they replace codec / codec_v. v_spec NULL: the K spec's V
     * side (or codec_v). layer_spec: per-layer overrides ("0,1,-2,-1=int8").
     * model_path: where codec files kept next to the model are looked for. */
    const char *k_spec, *v_spec, *layer_spec, *model_path;
    /* Eviction budget of the policy (kv/policy.h): tokens per (layer,
     * kv-head) list on average, or a fraction of the tokens processed
     * (0 and 0: the policy only evicts to honour budget_bytes). */
    int policy_keep;
    float policy_keep_frac;
} kvl_kv_config;

kvl_status kvl_kv_pool_create(const kvl_kv_config *cfg, kvl_kv_pool **out, kvl_err *err);
/* All tables must be freed first. */
void kvl_kv_pool_free(kvl_kv_pool *p);
size_t kvl_kv_pool_used(const kvl_kv_pool *p);   /* bytes of pages currently allocated */
size_t kvl_kv_pool_budget(const kvl_kv_pool *p);
/* Bytes of the largest page (K and V of page_tokens) over the pool's size classes. */
size_t kvl_kv_page_bytes(const kvl_kv_pool *p);
/* Bytes the pool holds from the allocator (pages in use and free, all classes). */
size_t kvl_kv_pool_held(const kvl_kv_pool *p);
/* Encoded bytes per cached token across all layers and heads (K+V) of full
 * pages (sealed pages for sealing codecs): the codec's format size, without
 * the positions and padding of a page or the open residual. */
double kvl_kv_bytes_per_token(const kvl_kv_pool *p);
/* Codecs of layer l (K: is_v = 0), and the canonical spec text of that side. */
const kvl_codec *kvl_kv_pool_codec(const kvl_kv_pool *p, int layer, int is_v);
const char *kvl_kv_pool_spec(const kvl_kv_pool *p, int is_v);
/* Canonical spec text of layer l's K (is_v = 0) or V side (NULL: bad layer). */
const char *kvl_kv_pool_layer_spec(const kvl_kv_pool *p, int layer, int is_v);
/* Number of page size classes, and bytes of one page of class c. */
int kvl_kv_pool_n_classes(const kvl_kv_pool *p);
size_t kvl_kv_pool_class_bytes(const kvl_kv_pool *p, int c);

kvl_status kvl_kv_table_create(kvl_kv_pool *p, kvl_kv_table **out, kvl_err *err);
void kvl_kv_table_free(kvl_kv_table *t);
/* New table sharing all of t's pages (refcounts incremented; copy-on-write on
 * the partially filled last page when either side appends). */
kvl_status kvl_kv_table_fork(const kvl_kv_table *t, kvl_kv_table **out, kvl_err *err);
/* Tokens cached for (layer, head). */
int kvl_kv_table_len(const kvl_kv_table *t, int layer, int head);
/* Bytes of pages referenced by this table (shared pages counted in full), and peak. */
size_t kvl_kv_table_bytes(const kvl_kv_table *t);
size_t kvl_kv_table_peak_bytes(const kvl_kv_table *t);
int kvl_kv_table_n_pages(const kvl_kv_table *t);
/* Bytes of t's pages in one layer (all its kv-heads). */
size_t kvl_kv_table_layer_bytes(const kvl_kv_table *t, int layer);
/* Encoded K/V bytes of t's cached tokens as stored now: each page counts
 * its codec segments (sealed or open residual format), not positions or
 * padding. Divide by cached tokens for the bytes/token at this context. */
size_t kvl_kv_table_codec_bytes(const kvl_kv_table *t);
/* The same for one layer, K and V segments separately. */
void kvl_kv_table_layer_codec_bytes(const kvl_kv_table *t, int layer, size_t *k, size_t *v);
/* Pages of (layer, head) that are sealed (a prefix of the list). */
int kvl_kv_table_n_sealed(const kvl_kv_table *t, int layer, int head);

/* Append n_tok tokens' K and V to every head of `layer`.
 * k, v: [n_tok][n_head_kv][head_dim]; pos: [n_tok] original positions.
 * Fails with KVL_ERR_NOMEM (and appends nothing) if the budget would be
 * exceeded. Not thread-safe with other calls on the same table. */
kvl_status kvl_kv_append(kvl_kv_table *t, int layer, int n_tok, const int32_t *pos,
                         const float *k, const float *v, kvl_err *err);
/* Bytes the pool would need to allocate to append n_tok more tokens to every
 * (layer, head) of t (for checking the budget before a forward pass; open
 * pages for sealing codecs, so an upper bound). */
size_t kvl_kv_append_need(const kvl_kv_table *t, int n_tok);

/* Show the layer's queries of a forward call to codecs that learn from them
 * (SQuat's query subspace), before the call's kvl_kv_seal. q: [n_tok][n_head][head_dim]
 * with RoPE applied. A no-op when no codec of the layer observes. */
void kvl_kv_observe(kvl_kv_table *t, int layer, int n_tok, const float *q, int n_head);

/* Seal layer's full open pages that have left the residual window (sealing
 * codecs; a no-op otherwise): each is repacked into a page of the sealed
 * class and its open page returns to the pool. The engine calls it after
 * each forward call's attention of the layer, so the queries of that call saw
 * the rows at full precision (see kv/codec.h). Inside a transaction it is
 * undone by rollback. Memory never exceeds the budget: an exclusively owned
 * open page is sealed from a copy after its bytes are freed; a shared one
 * (fork, or held by an open transaction) that has no room for its sealed
 * copy stays open (valid, full precision, larger) until a later call's seal
 * finds room. Fails only when the allocator does (KVL_ERR_NOMEM). */
kvl_status kvl_kv_seal(kvl_kv_table *t, int layer, kvl_err *err);

/* Transactions make a forward call all-or-nothing. After begin, appends,
 * drops and the attention statistics of layers appended to or dropped from
 * can be undone: rollback returns every (layer, head) list to its length
 * and pages at begin, every page taken since goes back to the pool (pool
 * bytes equal those at begin when no other table changed) and statistics
 * are restored; commit keeps the changes. Begin fails with KVL_ERR_ARG if
 * a transaction is open; commit and rollback never fail (no-ops when none
 * is open). Drops inside a transaction compact into fresh pages (the old
 * ones are kept for rollback until commit), so they need that headroom.
 * Freeing a table rolls an open transaction back. Policy state is not
 * covered (policies with state must not change it in a failed call). */
kvl_status kvl_kv_txn_begin(kvl_kv_table *t, kvl_err *err);
/* A transaction for calls that evict (policies): drops and seals inside it
 * are final and free memory at once; rollback removes only the rows
 * appended since begin (see txn.c for the one case where older rows of a
 * page go with them) and does not restore statistics. */
kvl_status kvl_kv_txn_begin_truncate(kvl_kv_table *t, kvl_err *err);
void kvl_kv_txn_commit(kvl_kv_table *t);
void kvl_kv_txn_rollback(kvl_kv_table *t);
int kvl_kv_txn_open(const kvl_kv_table *t);

/* Testing (fault injection): the reserve that would hand out the n-th page
 * from now (1-based) fails with KVL_ERR_NOMEM, once; n <= 0 disarms. */
void kvl_kv_pool_fail_page(kvl_kv_pool *p, int64_t n);
/* Pages handed out by the pool since its creation (fresh, copied on write, compaction). */
int64_t kvl_kv_pool_pages_taken(const kvl_kv_pool *p);

/* Per-thread scratch bytes kvl_kv_attend needs. */
size_t kvl_kv_attend_scratch_bytes(const kvl_kv_pool *p);

/* Causal attention for n_tok queries of one layer over the cached pages.
 * q: [n_tok][n_head][head_dim] (RoPE applied); qpos: [n_tok];
 * out: [n_tok][n_head][head_dim]. Query head h uses kv-head h / (n_head/n_head_kv).
 * Query t attends to cached tokens whose position <= qpos[t]. scale multiplies
 * q.k. Work units (token, head) are split across threads ith/nth; scratch is
 * this thread's buffer of kvl_kv_attend_scratch_bytes bytes. Attention
 * statistics for the policy are accumulated per thread in scratch and merged by
 * kvl_kv_policy_step. Safe to call concurrently from the nth threads. */
void kvl_kv_attend(const kvl_kv_table *t, int layer, int n_tok, const float *q, const int32_t *qpos,
                   int n_head, float scale, float *out, void *scratch, int ith, int nth);

/* Split ("flash-decoding") attention for calls of few query tokens, where
 * (token, kv-head) units cannot keep the threads busy: the cached list is
 * cut into fixed chunks of pages that are separate work units writing
 * partial softmax results into part, then folded in chunk order. Results are
 * bit-identical to kvl_kv_attend's. Usage:
 *   long n = kvl_kv_attn_init(&a, t, layer, n_tok, q, qpos, n_head, scale, out, part, part_bytes, n_threads);
 *   kvl_kv_attn_run(&a, scratch, u0, u1) for disjoint [u0, u1) covering [0, n), concurrently;
 *   then kvl_kv_attn_merge(&a, ith, nth) for ith in [0, nth), concurrently.
 * Without a split (a.split == 0: statistics on, many tokens or units, a
 * short list, part too small or NULL) the units are kvl_kv_attend's ith/n
 * shares and the merge does nothing. Tensor arguments as for kvl_kv_attend. */
typedef struct kvl_kv_attn {
    const kvl_kv_table *t;
    int layer, n_tok, n_head;
    const float *q;       /* [n_tok][n_head][head_dim] */
    const int32_t *qpos;  /* [n_tok] */
    float scale;
    float *out;           /* [n_tok][n_head][head_dim] */
    float *part;          /* [n_tok][n_head][n_chunk][2 + head_dim]: m, l, acc */
    int split, n_chunk, gs, per;
    long n_units;
} kvl_kv_attn;
/* Bytes of a partial buffer for lists of up to max_tokens cached tokens. */
size_t kvl_kv_attn_part_bytes(const kvl_kv_pool *p, int n_head, int max_tokens);
long kvl_kv_attn_init(kvl_kv_attn *a, const kvl_kv_table *t, int layer, int n_tok, const float *q,
                      const int32_t *qpos, int n_head, float scale, float *out, float *part, size_t part_bytes,
                      int n_threads);
void kvl_kv_attn_run(const kvl_kv_attn *a, void *scratch, long u0, long u1);
void kvl_kv_attn_merge(const kvl_kv_attn *a, int ith, int nth);

/* Called by the engine after each forward call (single-threaded): seals
 * what evictions left open. */
kvl_status kvl_kv_policy_step(kvl_kv_table *t, kvl_err *err);

/* Eviction hooks of the forward pass (kv/policy.h says what each does):
 * before(layer) ahead of the layer's append of n_tok rows (clears stale
 * window statistics, makes room in the pool's byte budget), after(layer)
 * once its attention ran (pos_end: the sequence's length after the call),
 * before it seals. No-ops for "full". Fail with KVL_ERR_NOMEM when the
 * budget cannot take the rows even after evicting. */
kvl_status kvl_kv_policy_before(kvl_kv_table *t, int layer, int n_tok, kvl_err *err);
kvl_status kvl_kv_policy_after(kvl_kv_table *t, int layer, int n_tok, int pos_end, kvl_err *err);
/* The pool's policy evicts (anything but "full"). */
int kvl_kv_policy_evicting(const kvl_kv_pool *p);
/* Per-sequence budget: tokens per list (>= 0) replacing the pool's keep, or
 * < 0 to stop evicting (the pool's byte budget still holds). */
void kvl_kv_policy_set_keep(kvl_kv_table *t, int keep);
typedef struct kvl_kv_policy_stats {
    const char *name, *spec;
    int budget;             /* budget per list now (-1: none) */
    int64_t tokens_dropped; /* tokens evicted over all lists */
    int64_t drop_calls;     /* kvl_kv_drop calls */
    size_t stats_bytes;     /* attention statistics arrays */
    size_t state_bytes;     /* policy state and scratch */
} kvl_kv_policy_stats;
void kvl_kv_policy_info(const kvl_kv_table *t, kvl_kv_policy_stats *st);
/* Budget per list of each layer at its last split ([n_layer]) or NULL ("full"). */
const int *kvl_kv_policy_budgets(const kvl_kv_table *t);

/* ---- inspection, statistics and eviction (used by policies and tests) ----------- */

const kvl_kv_config *kvl_kv_pool_config(const kvl_kv_pool *p);
kvl_kv_pool *kvl_kv_table_pool(const kvl_kv_table *t);
/* Pages currently allocated from the pool (pool_used / page_bytes). */
int64_t kvl_kv_pool_pages_used(const kvl_kv_pool *p);
/* Name of the kernel set attention uses ("scalar" or "avx2"). */
const char *kvl_kv_pool_isa(const kvl_kv_pool *p);

/* Copy the original positions of (layer, head)'s cached tokens into out [cap];
 * returns the number of tokens (may exceed cap). */
int kvl_kv_table_positions(const kvl_kv_table *t, int layer, int head, int32_t *out, int cap);
/* Decode cached token i of (layer, head): k, v: [head_dim] (tests, debugging). */
kvl_status kvl_kv_table_decode(const kvl_kv_table *t, int layer, int head, int i, float *k, float *v);

/* Remove the cached tokens idx [n_idx] (indices into the (layer, head) list,
 * strictly increasing) and compact the list so all its pages but the last are
 * full; pages no longer referenced return to the pool. Shared pages are never
 * written (the compacted tail goes to fresh pages); exclusively owned pages of
 * per-token codecs are compacted in place. Statistics of the affected query
 * heads are compacted alongside. Fails atomically with KVL_ERR_NOMEM if the
 * fresh pages do not fit the budget. */
kvl_status kvl_kv_drop(kvl_kv_table *t, int layer, int head, const int *idx, int n_idx, kvl_err *err);

/* Attention statistics, produced by the attention loop as a by-product (no
 * second pass over the cache), per (layer, query head) and cached token (list
 * order), for the queries of each forward call:
 *   KVL_KV_STAT_MASS: accumulator MASS, the softmax probability summed over
 *     every query since the token was cached (H2O);
 *   KVL_KV_STAT_WIN: WSUM and WSQ, the probability and its square summed over
 *     the last W queries of each call (the observation window: SnapKV,
 *     PyramidKV, CAKE's mean and variance); kvl_kv_table_stat_window_n
 *     counts those queries since the layer's last reset;
 *   KVL_KV_STAT_LAST: LAST, the probabilities of the last query (TOVA);
 *   KVL_KV_STAT_VOTE: VOTE, votes against the token: a query votes against
 *     every token whose scaled score q.k is below a*mean - b*std of its own
 *     score row (VEDA);
 *   KVL_KV_STAT_ENT: WENT, -p log p summed over the window queries (CAKE's
 *     spatial dispersion is its sum over tokens and heads).
 * Only the queries that feed an enabled accumulator take the statistics path
 * (one query at a time, split by query head); the others run the blocked
 * path, so the full cache pays nothing and WIN/LAST cost W (1) queries a call. */
enum { KVL_KV_STAT_MASS = 1u, KVL_KV_STAT_WIN = 2u, KVL_KV_STAT_LAST = 4u, KVL_KV_STAT_VOTE = 8u, KVL_KV_STAT_ENT = 16u };
enum { KVL_KV_ACC_MASS, KVL_KV_ACC_WSUM, KVL_KV_ACC_WSQ, KVL_KV_ACC_LAST, KVL_KV_ACC_VOTE, KVL_KV_ACC_WENT, KVL_KV_N_ACC };
/* Turn statistics on for t (policies do this when a table is created; the
 * "full" policy leaves them off so attention pays nothing). Needs
 * cfg.n_head. While on, kvl_kv_attend splits the statistics queries between
 * threads by query head so each statistics array has one writer, and calls
 * of kvl_kv_attend on the same table must not overlap in time. Changing the
 * flags clears all statistics. */
kvl_status kvl_kv_table_stats_enable(kvl_kv_table *t, unsigned flags, kvl_err *err);
unsigned kvl_kv_table_stats_flags(const kvl_kv_table *t);
/* Observation window W (>= 1, default 32) and VEDA's vote threshold
 * parameters (default a = 1, b = 0.5). */
void kvl_kv_table_stats_params(kvl_kv_table *t, int window, float vote_a, float vote_b);
/* 1: only the window queries vote (VOTE becomes a windowed statistic). */
void kvl_kv_table_stats_vote_window(kvl_kv_table *t, int on);
/* Accumulator acc (KVL_KV_ACC_*) of (layer, query head qh): [len of its
 * kv-head] floats, or NULL when off. */
const float *kvl_kv_table_stat(const kvl_kv_table *t, int layer, int qh, int acc);
/* Bit mask (1 << KVL_KV_ACC_*) of the accumulators that KVL_KV_STAT_* flags turn on. */
unsigned kvl_kv_stat_acc_mask(unsigned flags);
/* kvl_kv_table_stat(t, layer, qh, KVL_KV_ACC_MASS). */
const float *kvl_kv_table_stat_mass(const kvl_kv_table *t, int layer, int qh);
/* Window queries accumulated into WSUM/WSQ of layer since its last reset. */
float kvl_kv_table_stat_window_n(const kvl_kv_table *t, int layer);
/* Zero every accumulator of every layer / of one layer's accumulators in mask
 * (1 << KVL_KV_ACC_*; WSUM also zeroes the window count). */
void kvl_kv_table_stats_reset(kvl_kv_table *t);
void kvl_kv_table_stats_reset_layer(kvl_kv_table *t, int layer, unsigned acc_mask);
/* Bytes of statistics arrays allocated by t (counted in kvl_kv_stats). */
size_t kvl_kv_table_stats_bytes(const kvl_kv_table *t);

/* ---- mirror tables (stats_mirror.c; the CUDA engine's eviction) -----------------
 * A table can mirror a cache kept elsewhere (device pages): its lists hold
 * the same positions (K/V rows are placeholders) so that the policy code
 * runs on it unchanged, while the real attention statistics live with the
 * real pages. stale[layer] set: the host statistics of the layer are out of
 * date; the first kvl_kv_table_stat of the layer calls fetch (which copies
 * them in, kvl_kv_table_stat_rows, and clears the flag). drop is called by
 * kvl_kv_drop before it changes anything (idx [n_idx] increasing, of a list
 * of len rows), so the owner can repeat the compaction on the real pages.
 * The struct is owned by the caller and must outlive its use by t. */
typedef struct kvl_kv_mirror {
    void (*fetch)(void *user, kvl_kv_table *t, int layer);
    void (*drop)(void *user, kvl_kv_table *t, int layer, int head, const int *idx, int n_idx, int len);
    void *user;
    uint8_t *stale; /* [n_layer] */
} kvl_kv_mirror;
/* Attach m (NULL detaches). */
void kvl_kv_table_set_mirror(kvl_kv_table *t, const kvl_kv_mirror *m);
/* Writable statistics row of (layer, query head qh) for accumulator acc
 * (NULL when off); holds at least the layer's longest list. No fetch. */
float *kvl_kv_table_stat_rows(kvl_kv_table *t, int layer, int qh, int acc);
/* Count a call of n_tok queries of layer that ran elsewhere into the
 * window query count, as the table's attention would (kvl_kv_table_stat_window_n). */
void kvl_kv_table_stats_note_queries(kvl_kv_table *t, int layer, int n_tok);
/* Statistics parameters of t: window W, VEDA vote_a / vote_b, vote window flag. */
void kvl_kv_table_stats_get_params(const kvl_kv_table *t, int *window, float *vote_a, float *vote_b,
                                   int *vote_window);
/* 1 if layer was evicted since its window statistics were last cleared
 * (the next kvl_kv_policy_before clears them). */
int kvl_kv_policy_layer_evicted(const kvl_kv_table *t, int layer);

#endif
