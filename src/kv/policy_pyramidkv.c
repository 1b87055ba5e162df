/* PyramidKV (Cai et al., 2024): SnapKV's scores with budgets that shrink
 * linearly from the first layer to the last (attention funnels: broad in
 * low layers, focused in high ones). With mean budget B and window W, the
 * non-window part runs from 2(B-W) - (B-W)/beta at layer 0 down to
 * (B-W)/beta at the last layer (beta = 20); the mean stays B. */
#include "kv/policy.h"

static void pyramidkv_defaults(kvl_policy_cfg *c) {
    c->recent = -2; /* the window */
    c->pool = 7;
}

/* budget of layer l = W + the linear ramp over the non-window part (they sum to L*B) */
static void pyramidkv_weights(const kvl_policy_cfg *c, const kvl_policy_seq *ps, int n_layer, int B, double *w) {
    (void)ps;
    const double W = B > c->window ? c->window : B, nw = B - W;
    const double lo = nw / c->beta, hi = 2.0 * nw - lo;
    for (int l = 0; l < n_layer; l++) w[l] = W + (n_layer > 1 ? hi - (hi - lo) * l / (n_layer - 1) : nw);
}

const kvl_policy_ops kvl_policy_pyramidkv = {"pyramidkv", "SnapKV scores, budgets shrinking linearly with depth (PyramidKV)",
                                             "sink,recent,window,pool,slack,beta,headwise", KVL_KV_STAT_WIN, 0,
                                             pyramidkv_defaults, kvl_policy_snapkv_score, pyramidkv_weights, NULL};
