/* SnapKV (Li et al., NeurIPS 2024): the last `window` (32) queries of a
 * call vote with their attention; each token's summed window probability
 * (over the group's query heads) is max-pooled with kernel 7 so neighbours
 * of important tokens stay too, and the window's own tokens are kept. The
 * score is shared with PyramidKV (policy_pyramidkv.c). */
#include "kv/policy.h"

static void snapkv_defaults(kvl_policy_cfg *c) {
    c->recent = -2; /* the window */
    c->pool = 7;
}

void kvl_policy_snapkv_score(const kvl_policy_cfg *c, const kvl_kv_table *t, int layer, int head, int len,
                             float *score, float *tmp) {
    kvl_policy_group_sum(t, layer, head, KVL_KV_ACC_WSUM, len, tmp);
    if (c->pool > 1) kvl_policy_maxpool(tmp, len, c->pool, score);
    else
        for (int i = 0; i < len; i++) score[i] = tmp[i];
}

const kvl_policy_ops kvl_policy_snapkv = {"snapkv", "observation-window attention, max-pooled (SnapKV)",
                                          "sink,recent,window,pool,slack,headwise", KVL_KV_STAT_WIN, 0,
                                          snapkv_defaults, kvl_policy_snapkv_score, NULL, NULL};
