/* Mirror tables (kv.h, "mirror tables"): the hooks and accessors that let a
 * CPU table stand in for a cache kept on another device, so the eviction
 * policies (policy.c, policy_*.c) run on it unchanged: lazily fetched
 * statistics rows, the window query count of attention that ran elsewhere,
 * and the policy's per-layer eviction flag. */
#include "kv/kv_internal.h"

void kvl_kv_table_set_mirror(kvl_kv_table *t, const kvl_kv_mirror *m) { t->mirror = m; }

float *kvl_kv_table_stat_rows(kvl_kv_table *t, int layer, int qh, int acc) {
    if (!t->stat_flags || layer < 0 || layer >= t->pool->cfg.n_layer || qh < 0 || qh >= t->n_head || acc < 0 ||
        acc >= KVL_KV_N_ACC || !t->acc[acc])
        return NULL;
    return t->acc[acc][layer * t->n_head + qh];
}

void kvl_kv_table_stats_note_queries(kvl_kv_table *t, int layer, int n_tok) {
    /* as kvl_kv_attend: the last W queries of a call are its window queries */
    if (!t->win_n || layer < 0 || layer >= t->pool->cfg.n_layer) return;
    if (!(t->stat_flags & (KVL_KV_STAT_WIN | KVL_KV_STAT_ENT))) return;
    const int w0 = n_tok > t->stat_window ? n_tok - t->stat_window : 0;
    t->win_n[layer] += (float)(n_tok - w0);
}

void kvl_kv_table_stats_get_params(const kvl_kv_table *t, int *window, float *vote_a, float *vote_b,
                                   int *vote_window) {
    *window = t->stat_window, *vote_a = t->vote_a, *vote_b = t->vote_b, *vote_window = t->vote_window;
}

int kvl_kv_policy_layer_evicted(const kvl_kv_table *t, int layer) {
    return t->pol && layer >= 0 && layer < t->pool->cfg.n_layer && t->pol->evicted[layer];
}

const kvl_policy_cfg *kvl_kv_pool_policy(const kvl_kv_pool *p) { return &p->pol; }
