/* KV eviction policies: keep a sequence's cache inside a token budget by
 * evicting the tokens that matter least. A policy is a table of operations
 * found by name (policy_<name>.c): which attention statistics it needs (the
 * attention loop produces them as a by-product, kv.h), how it scores a
 * (layer, kv-head) list's tokens, and how the budget is split across layers
 * (uniform, PyramidKV's linear ramp, CAKE's preference-weighted cascade).
 * The framework here (policy.c) parses "NAME[:key=value,...]", resolves the
 * budget, protects sinks and recent tokens, selects the kept set and evicts
 * with kvl_kv_drop, which compacts pages so memory really returns.
 *
 * When it runs (the engine's forward pass, per layer):
 *   kvl_kv_policy_before(layer): before the layer's append. Window
 *     statistics of a layer evicted in an earlier call are cleared (the
 *     window is "the queries since the layer's last eviction"); and if the
 *     pool's byte budget cannot take the call's rows, tokens of this layer
 *     (then of the longest layers) are evicted by the current scores to make
 *     room ("make-room").
 *   kvl_kv_policy_after(layer): after the layer's attention (its queries have
 *     fed the statistics) and before sealing: the policy observes (CAKE's
 *     preference) and evicts each list over budget + slack down to budget.
 *     Cascading policies (CAKE) re-split the budget over layers 0..layer and
 *     re-evict the earlier ones from their stored scores; the last layer's
 *     pass uses no slack, so a one-call prefill ends exactly where splitting
 *     after the whole prefill would.
 *
 * Budget: keep tokens per (layer, kv-head) list on average (`keep`), or a
 * fraction of the tokens the sequence has processed (`keep_frac`), or a
 * per-sequence override (kvl_kv_policy_set_keep). Bound: between calls every
 * list holds at most its budget + slack tokens; during a call, the layer
 * being processed also holds the call's tokens (CAKE: the layers so far
 * share the budget that the later layers leave). Positions: evicted tokens
 * leave no gap to re-index; kept keys keep their original RoPE positions
 * (as kvpress does), queries use their true positions. */
#ifndef KVL_KV_POLICY_H
#define KVL_KV_POLICY_H

#include <stdint.h>

#include "kv/kv.h"

typedef struct kvl_policy_ops kvl_policy_ops;

/* A parsed policy spec (pool-wide). */
typedef struct kvl_policy_cfg {
    const kvl_policy_ops *ops;
    int keep;          /* tokens per list (average over layers and kv-heads); 0 = none */
    float keep_frac;   /* > 0: keep this fraction of the tokens processed */
    int sink;          /* first tokens never evicted (StreamingLLM's sinks, VEDA's reserved stage) */
    int recent;        /* newest tokens never evicted; -1 = half the budget (H2O), -2 = the window (SnapKV) */
    int window;        /* observation window W (queries) */
    int pool;          /* pooling kernel over neighbouring tokens' scores (SnapKV 7 max, CAKE 5 avg); 1 = none */
    int slack;         /* a list is evicted when it exceeds its budget by more than this */
    int headwise;      /* 1: one budget per layer shared by its kv-heads by score (AdaKV-style) */
    float beta;        /* PyramidKV: budget of the last layer = 1/beta of the mean */
    float gamma;       /* CAKE: weight of the variance in the eviction indicator */
    float tau1, tau2;  /* CAKE: preference = entropy^(1/tau1) * variance^(1/tau2) */
    float vote_a, vote_b; /* VEDA: vote threshold a*mean - b*std */
    int norm;          /* VEDA: rank by votes per voter instead of votes */
    int wvote;         /* VEDA: only the observation window's queries vote */
    char spec[160];    /* canonical spec */
} kvl_policy_cfg;

/* A sequence's policy state (one per page table, copied by fork). */
typedef struct kvl_policy_seq {
    int keep_override;  /* >= 0: budget per list set by kvl_kv_policy_set_keep; -1: none; -2: eviction off */
    double *pref;       /* [n_layer] CAKE preference (0 = not observed) */
    int *budget;        /* [n_layer] budget per list at the last split */
    uint8_t *evicted;   /* [n_layer] evicted since its window statistics were cleared */
    int64_t n_dropped;  /* tokens evicted over all lists */
    int64_t n_events;   /* kvl_kv_drop calls */
    int last_budget;    /* average budget per list at the last call (-1: none yet) */
    /* scores of each list's kept tokens at its last eviction in this call
     * (list order): a cascading re-eviction ranks by them, as CAKE ranks by
     * its stored indicator (pooling over the compacted list would differ) */
    float **kept_score;  /* [n_layer * n_head_kv] */
    int *kept_len, *kept_cap;
    uint8_t *kept_valid; /* [n_layer]: set by an eviction, cleared by the next call's append */
    /* scratch (grows, never per token) */
    float *score;
    int *idx, *drop;
    void *sel;
    int cap;
} kvl_policy_seq;

struct kvl_policy_ops {
    const char *name;
    const char *desc;    /* one line */
    const char *params;  /* keys accepted besides keep: "sink,recent" */
    unsigned stats;      /* KVL_KV_STAT_* it reads */
    int cascade;         /* budgets re-split after every layer (CAKE) */
    void (*defaults)(kvl_policy_cfg *c);
    /* Keep-scores of (layer, head)'s len tokens into score [len] (higher =
     * keep), tmp: [2 * len] scratch. NULL: by position (the newest are kept). */
    void (*score)(const kvl_policy_cfg *c, const kvl_kv_table *t, int layer, int head, int len, float *score,
                  float *tmp);
    /* Relative budget weights of the layers into w [n_layer] at mean budget
     * B per list (NULL: uniform). */
    void (*weights)(const kvl_policy_cfg *c, const kvl_policy_seq *ps, int n_layer, int B, double *w);
    /* After layer's attention in a call of n_tok tokens (CAKE: preference). */
    void (*observe)(const kvl_policy_cfg *c, kvl_policy_seq *ps, const kvl_kv_table *t, int layer, int n_tok);
};

/* Parse "NAME[:key=value,...]" (NULL or "" = "full") into c. Unknown names,
 * keys or bad values give KVL_ERR_ARG with a message naming them. keep and
 * keep_frac are left 0 (set by the caller). */
kvl_status kvl_policy_parse(const char *spec, kvl_policy_cfg *c, kvl_err *err);
/* The pool's parsed policy (stats_mirror.c). */
const kvl_policy_cfg *kvl_kv_pool_policy(const kvl_kv_pool *p);
/* Policy by name or NULL. */
const kvl_policy_ops *kvl_policy_find(const char *name);
/* Comma-separated list of policy names. */
const char *kvl_policy_list(void);
/* Policy i (0-based) or NULL past the last. */
const kvl_policy_ops *kvl_policy_get(int i);

/* Helpers for score functions: sum of accumulator acc over the group of
 * query heads reading kv-head `head` into out [len]; 1-D max/avg pooling of
 * x [len] with an odd kernel k (edges use the part of the kernel inside). */
void kvl_policy_group_sum(const kvl_kv_table *t, int layer, int head, int acc, int len, float *out);
void kvl_policy_maxpool(const float *x, int len, int k, float *out);
void kvl_policy_avgpool(const float *x, int len, int k, float *out);
/* SnapKV's score (window mass, max-pooled), shared with PyramidKV. */
void kvl_policy_snapkv_score(const kvl_policy_cfg *c, const kvl_kv_table *t, int layer, int head, int len,
                             float *score, float *tmp);

extern const kvl_policy_ops kvl_policy_streaming, kvl_policy_h2o, kvl_policy_tova, kvl_policy_snapkv,
    kvl_policy_pyramidkv, kvl_policy_veda, kvl_policy_cake;

#endif
