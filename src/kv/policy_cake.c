/* CAKE (Qin et al., ICLR 2025): cascading and adaptive KV eviction with
 * layer preferences. Over the observation window (the last `window` queries
 * of a call, probabilities p):
 *   - preference of layer l: P_l = H_l^(1/tau1) * V_l^(1/tau2), H_l the
 *     entropy -sum p log p and V_l the variance over the window queries,
 *     both summed over the layer's query heads and the tokens before the
 *     window (spatial dispersion and temporal shift);
 *   - eviction indicator per token: mean + gamma * variance over the window
 *     (gamma = 200), average-pooled with kernel 5 and summed over the GQA
 *     group; the window's own tokens stay;
 *   - budgets B_l proportional to P_l, capped at each layer's length (the
 *     excess goes to the others), cascading: after layer l the layers 0..l
 *     share what the later layers leave of L*B and earlier layers are
 *     re-evicted from their stored indicators, so memory stays in budget
 *     during prefill and the final kept sets equal those of splitting after
 *     the whole prefill (top-k of a top-k is the top-k).
 * Preferences are observed on calls of at least two tokens (prefill); decode
 * keeps the budgets they gave. */
#include "kv/policy.h"

#include <math.h>

static void cake_defaults(kvl_policy_cfg *c) {
    c->recent = -2; /* the window */
    c->pool = 5;
}

static int group_of(const kvl_kv_table *t) {
    const kvl_kv_config *cfg = kvl_kv_pool_config(kvl_kv_table_pool(t));
    return (cfg->n_head > 0 ? cfg->n_head : cfg->n_head_kv) / cfg->n_head_kv;
}

/* mean + gamma * var over the window, summed over the group, then average-
 * pooled (pooling is linear, so pooling the sum equals summing the pools) */
static void cake_score(const kvl_policy_cfg *c, const kvl_kv_table *t, int layer, int head, int len, float *score,
                       float *tmp) {
    const float n = kvl_kv_table_stat_window_n(t, layer);
    const int group = group_of(t);
    for (int i = 0; i < len; i++) tmp[i] = 0;
    for (int g = 0; g < group && n > 0; g++) {
        const float *ws = kvl_kv_table_stat(t, layer, head * group + g, KVL_KV_ACC_WSUM);
        const float *w2 = kvl_kv_table_stat(t, layer, head * group + g, KVL_KV_ACC_WSQ);
        if (!ws || !w2) continue;
        for (int i = 0; i < len; i++) {
            const float mean = ws[i] / n;
            const float var = n > 1 ? (w2[i] - ws[i] * ws[i] / n) / (n - 1) : 0.0f;
            tmp[i] += mean + c->gamma * (var > 0 ? var : 0);
        }
    }
    if (c->pool > 1) kvl_policy_avgpool(tmp, len, c->pool, score);
    else
        for (int i = 0; i < len; i++) score[i] = tmp[i];
}

static void cake_observe(const kvl_policy_cfg *c, kvl_policy_seq *ps, const kvl_kv_table *t, int layer, int n_tok) {
    if (n_tok < 2) return;
    const float n = kvl_kv_table_stat_window_n(t, layer);
    if (n < 2) return;
    const kvl_kv_config *cfg = kvl_kv_pool_config(kvl_kv_table_pool(t));
    const int group = group_of(t);
    const int w = n_tok < c->window ? n_tok : c->window;
    double H = 0, V = 0;
    for (int h = 0; h < cfg->n_head_kv; h++) {
        const int len = kvl_kv_table_len(t, layer, h), upto = len - w;
        for (int g = 0; g < group; g++) {
            const float *ws = kvl_kv_table_stat(t, layer, h * group + g, KVL_KV_ACC_WSUM);
            const float *w2 = kvl_kv_table_stat(t, layer, h * group + g, KVL_KV_ACC_WSQ);
            const float *en = kvl_kv_table_stat(t, layer, h * group + g, KVL_KV_ACC_WENT);
            if (!ws || !w2 || !en) continue;
            for (int i = 0; i < upto; i++) {
                H += en[i];
                const double var = ((double)w2[i] - (double)ws[i] * ws[i] / n) / (n - 1);
                V += var > 0 ? var : 0;
            }
        }
    }
    ps->pref[layer] = pow(H > 0 ? H : 0, 1.0 / c->tau1) * pow(V > 0 ? V : 0, 1.0 / c->tau2);
}

static void cake_weights(const kvl_policy_cfg *c, const kvl_policy_seq *ps, int n_layer, int B, double *w) {
    (void)c;
    (void)B;
    double sum = 0;
    int known = 0;
    for (int l = 0; l < n_layer; l++)
        if (ps->pref[l] > 0) sum += ps->pref[l], known++;
    const double fill = known ? sum / known : 1.0; /* not observed yet: the mean preference */
    for (int l = 0; l < n_layer; l++) w[l] = ps->pref[l] > 0 ? ps->pref[l] : fill;
}

const kvl_policy_ops kvl_policy_cake = {"cake", "layer budgets from attention preference, cascading (CAKE)",
                                        "sink,recent,window,pool,slack,gamma,tau1,tau2,headwise",
                                        KVL_KV_STAT_WIN | KVL_KV_STAT_ENT, 1, cake_defaults, cake_score,
                                        cake_weights, cake_observe};
