/* Attention statistics (per (layer, query head) and cached token: mass,
 * windowed mass and its square, last query's probabilities, votes),
 * produced by the attention loop as a by-product (attn.c), kept aligned with
 * the lists by append (zeroed rows), drop (compacted) and fork (copied). */
#include "kv/kv_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

unsigned kvl_kv_stat_acc_mask(unsigned flags) {
    unsigned m = 0;
    if (flags & KVL_KV_STAT_MASS) m |= 1u << KVL_KV_ACC_MASS;
    if (flags & KVL_KV_STAT_WIN) m |= 1u << KVL_KV_ACC_WSUM | 1u << KVL_KV_ACC_WSQ;
    if (flags & KVL_KV_STAT_LAST) m |= 1u << KVL_KV_ACC_LAST;
    if (flags & KVL_KV_STAT_VOTE) m |= 1u << KVL_KV_ACC_VOTE;
    if (flags & KVL_KV_STAT_ENT) m |= 1u << KVL_KV_ACC_WENT;
    return m;
}

int kvi_stats_on(const kvl_kv_table *t, int *ids) {
    int n = 0;
    for (int a = 0; a < KVL_KV_N_ACC; a++)
        if (t->acc[a]) ids[n++] = a;
    return n;
}

static void free_arrays(float **a, int n) {
    if (!a) return;
    for (int i = 0; i < n; i++) free(a[i]);
    free(a);
}

void kvi_stats_free(kvl_kv_table *t) {
    const int n = t->pool->cfg.n_layer * t->n_head;
    for (int a = 0; a < KVL_KV_N_ACC; a++) {
        free_arrays(t->acc[a], n);
        t->acc[a] = NULL;
    }
    free_arrays(t->raw, n);
    free(t->stat_cap);
    free(t->win_n);
    t->raw = NULL;
    t->stat_cap = NULL;
    t->win_n = NULL;
    t->stat_flags = 0;
}

/* Grow statistics of `layer` to hold at least n tokens per list. */
kvl_status kvi_stats_reserve(kvl_kv_table *t, int layer, int n) {
    if (!t->stat_flags || n <= t->stat_cap[layer]) return KVL_OK;
    int cap = t->stat_cap[layer] ? t->stat_cap[layer] : 64;
    while (cap < n) cap *= 2;
    for (int qh = 0; qh < t->n_head; qh++) {
        const int i = layer * t->n_head + qh;
        for (int a = -1; a < KVL_KV_N_ACC; a++) {
            float **arr = a < 0 ? t->raw : t->acc[a];
            if (!arr) continue;
            float *b = realloc(arr[i], (size_t)cap * sizeof(float));
            if (!b) return KVL_ERR_NOMEM; /* arrays already grown keep their larger size: harmless */
            if (a >= 0) memset(b + t->stat_cap[layer], 0, (size_t)(cap - t->stat_cap[layer]) * sizeof(float));
            arr[i] = b;
        }
    }
    t->stat_cap[layer] = cap;
    return KVL_OK;
}

kvl_status kvl_kv_table_stats_enable(kvl_kv_table *t, unsigned flags, kvl_err *err) {
    kvl_kv_pool *p = t->pool;
    if (flags == t->stat_flags) return KVL_OK;
    if (flags & ~(unsigned)(KVL_KV_STAT_MASS | KVL_KV_STAT_WIN | KVL_KV_STAT_LAST | KVL_KV_STAT_VOTE | KVL_KV_STAT_ENT))
        return kvl_err_set(err, KVL_ERR_UNSUPPORTED, "kv stats: unknown flags 0x%x", flags);
    kvi_stats_free(t);
    if (!t->stat_window) kvl_kv_table_stats_params(t, 32, 1.0f, 0.5f);
    if (!flags) return KVL_OK;
    const int nl = p->cfg.n_layer, n = nl * t->n_head;
    const unsigned m = kvl_kv_stat_acc_mask(flags);
    int fail = 0;
    for (int a = 0; a < KVL_KV_N_ACC; a++)
        if (m & 1u << a) fail |= !(t->acc[a] = calloc((size_t)n, sizeof(float *)));
    t->raw = calloc((size_t)n, sizeof(float *));
    t->stat_cap = calloc((size_t)nl, sizeof *t->stat_cap);
    t->win_n = calloc((size_t)nl, sizeof *t->win_n);
    if (fail || !t->raw || !t->stat_cap || !t->win_n) {
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
    return KVL_OK;
}

unsigned kvl_kv_table_stats_flags(const kvl_kv_table *t) { return t->stat_flags; }

void kvl_kv_table_stats_params(kvl_kv_table *t, int window, float vote_a, float vote_b) {
    t->stat_window = window >= 1 ? window : 1;
    t->vote_a = vote_a;
    t->vote_b = vote_b;
}

void kvl_kv_table_stats_vote_window(kvl_kv_table *t, int on) { t->vote_window = on != 0; }

const float *kvl_kv_table_stat(const kvl_kv_table *t, int layer, int qh, int acc) {
    if (!t->stat_flags || layer < 0 || layer >= t->pool->cfg.n_layer || qh < 0 || qh >= t->n_head || acc < 0 ||
        acc >= KVL_KV_N_ACC || !t->acc[acc])
        return NULL;
    if (t->mirror && t->mirror->stale[layer]) t->mirror->fetch(t->mirror->user, (kvl_kv_table *)t, layer);
    return t->acc[acc][layer * t->n_head + qh];
}

const float *kvl_kv_table_stat_mass(const kvl_kv_table *t, int layer, int qh) {
    return kvl_kv_table_stat(t, layer, qh, KVL_KV_ACC_MASS);
}

float kvl_kv_table_stat_window_n(const kvl_kv_table *t, int layer) {
    return t->win_n && layer >= 0 && layer < t->pool->cfg.n_layer ? t->win_n[layer] : 0;
}

void kvl_kv_table_stats_reset_layer(kvl_kv_table *t, int layer, unsigned acc_mask) {
    if (!t->stat_flags || layer < 0 || layer >= t->pool->cfg.n_layer) return;
    for (int a = 0; a < KVL_KV_N_ACC; a++) {
        if (!t->acc[a] || !(acc_mask & 1u << a)) continue;
        for (int qh = 0; qh < t->n_head; qh++)
            memset(t->acc[a][layer * t->n_head + qh], 0, (size_t)t->stat_cap[layer] * sizeof(float));
    }
    if (acc_mask & (1u << KVL_KV_ACC_WSUM | 1u << KVL_KV_ACC_WENT)) t->win_n[layer] = 0;
}

void kvl_kv_table_stats_reset(kvl_kv_table *t) {
    for (int l = 0; l < t->pool->cfg.n_layer; l++) kvl_kv_table_stats_reset_layer(t, l, ~0u);
}

size_t kvl_kv_table_stats_bytes(const kvl_kv_table *t) {
    if (!t->stat_flags) return 0;
    int ids[KVL_KV_N_ACC];
    const int na = kvi_stats_on(t, ids);
    size_t b = 0;
    for (int l = 0; l < t->pool->cfg.n_layer; l++) b += (size_t)t->stat_cap[l] * (size_t)(na + 1);
    return b * (size_t)t->n_head * sizeof(float);
}

void kvi_stats_zero(kvl_kv_table *t, int layer, int head, int from, int to) {
    if (!t->stat_flags || to <= from) return;
    for (int a = 0; a < KVL_KV_N_ACC; a++) {
        if (!t->acc[a]) continue;
        for (int g = 0; g < t->group; g++)
            memset(t->acc[a][layer * t->n_head + head * t->group + g] + from, 0, (size_t)(to - from) * sizeof(float));
    }
}

void kvi_stats_drop(kvl_kv_table *t, int layer, int head, const int *idx, int n_idx, int len) {
    if (!t->stat_flags || n_idx <= 0) return;
    for (int a = 0; a < KVL_KV_N_ACC; a++) {
        if (!t->acc[a]) continue;
        for (int g = 0; g < t->group; g++) {
            float *m = t->acc[a][layer * t->n_head + head * t->group + g];
            int w = idx[0], d = 0;
            for (int i = idx[0]; i < len; i++) {
                if (d < n_idx && idx[d] == i) {
                    d++;
                    continue;
                }
                m[w++] = m[i];
            }
            memset(m + w, 0, (size_t)(len - w) * sizeof(float));
        }
    }
}

kvl_status kvl_kv_policy_step(kvl_kv_table *t, kvl_err *err) {
    /* pages rewritten by evictions are open: seal what left the residual */
    kvl_status s = KVL_OK;
    for (int l = 0; l < t->pool->cfg.n_layer && s == KVL_OK; l++) s = kvl_kv_seal(t, l, err);
    return s;
}
