/* H2O (Zhang et al., NeurIPS 2023): heavy hitters + recent tokens. A
 * token's score is its accumulated attention probability over every query
 * since it was cached, summed over the query heads of its kv-head; the
 * newest `recent` tokens (default half the budget) always stay. */
#include "kv/policy.h"

static void h2o_defaults(kvl_policy_cfg *c) { c->recent = -1; }

static void h2o_score(const kvl_policy_cfg *c, const kvl_kv_table *t, int layer, int head, int len, float *score,
                      float *tmp) {
    (void)c;
    (void)tmp;
    kvl_policy_group_sum(t, layer, head, KVL_KV_ACC_MASS, len, score);
}

const kvl_policy_ops kvl_policy_h2o = {"h2o",           "heavy hitters by accumulated attention + recent (H2O)",
                                       "sink,recent,slack,headwise", KVL_KV_STAT_MASS, 0, h2o_defaults, h2o_score,
                                       NULL, NULL};
