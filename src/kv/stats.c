/* Attention statistics (per (layer, query head) probability mass per cached
 * token, produced by the attention loop as a by-product) and the policy step
 * that consumes them. */
#include "kv/kv_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void kvi_stats_free(kvl_kv_table *t) {
    if (t->stat) {
        for (int i = 0; i < t->pool->cfg.n_layer * t->n_head; i++) free(t->stat[i]);
    }
    free(t->stat);
    free(t->stat_cap);
    t->stat = NULL;
    t->stat_cap = NULL;
    t->stat_flags = 0;
}

/* Grow statistics of `layer` to hold at least n tokens per list. */
kvl_status kvi_stats_reserve(kvl_kv_table *t, int layer, int n) {
    if (!t->stat_flags || n <= t->stat_cap[layer]) return KVL_OK;
    int cap = t->stat_cap[layer] ? t->stat_cap[layer] : 64;
    while (cap < n) cap *= 2;
    for (int qh = 0; qh < t->n_head; qh++) {
        float **a = &t->stat[layer * t->n_head + qh];
        float *b = realloc(*a, 2 * (size_t)cap * sizeof(float));
        if (!b) return KVL_ERR_NOMEM; /* arrays already grown keep their larger size: harmless */
        *a = b;
    }
    t->stat_cap[layer] = cap;
    return KVL_OK;
}

kvl_status kvl_kv_table_stats_enable(kvl_kv_table *t, unsigned flags, kvl_err *err) {
    kvl_kv_pool *p = t->pool;
    if (flags == t->stat_flags) return KVL_OK;
    kvi_stats_free(t);
    if (!flags) return KVL_OK;
    if (flags & ~(unsigned)KVL_KV_STAT_MASS) return kvl_err_set(err, KVL_ERR_UNSUPPORTED, "kv stats: unknown flags");
    const int nl = p->cfg.n_layer;
    t->stat = calloc((size_t)nl * t->n_head, sizeof *t->stat);
    t->stat_cap = calloc((size_t)nl, sizeof *t->stat_cap);
    if (!t->stat || !t->stat_cap) {
        kvi_stats_free(t);
        return kvl_err_set(err, KVL_ERR_NOMEM, "kv stats: out of memory");
    }
    t->stat_flags = flags;
    for (int l = 0; l < nl; l++) {
        int len = 0;
        for (int h = 0; h < p->cfg.n_head_kv; h++)
            if (kvi_list(t, l, h)->len > len) len = kvi_list(t, l, h)->len;
        if (kvi_stats_reserve(t, l, len > 0 ? len : 1) != KVL_OK) {
            kvi_stats_free(t);
            return kvl_err_set(err, KVL_ERR_NOMEM, "kv stats: out of memory");
        }
    }
    kvl_kv_table_stats_reset(t);
    return KVL_OK;
}

unsigned kvl_kv_table_stats_flags(const kvl_kv_table *t) { return t->stat_flags; }

const float *kvl_kv_table_stat_mass(const kvl_kv_table *t, int layer, int qh) {
    if (!t->stat_flags || layer < 0 || layer >= t->pool->cfg.n_layer || qh < 0 || qh >= t->n_head) return NULL;
    return t->stat[layer * t->n_head + qh];
}

void kvl_kv_table_stats_reset(kvl_kv_table *t) {
    if (!t->stat_flags) return;
    for (int l = 0; l < t->pool->cfg.n_layer; l++)
        for (int qh = 0; qh < t->n_head; qh++)
            memset(t->stat[l * t->n_head + qh], 0, (size_t)t->stat_cap[l] * sizeof(float));
}

kvl_status kvl_kv_policy_step(kvl_kv_table *t, kvl_err *err) {
    const kvl_policy_ops *ops = t->pool->policy;
    kvl_status s = ops->step ? ops->step(t->pstate, t, err) : KVL_OK;
    /* pages rewritten by evictions are open: seal what left the residual */
    for (int l = 0; l < t->pool->cfg.n_layer && s == KVL_OK; l++) s = kvl_kv_seal(t, l, err);
    return s;
}
