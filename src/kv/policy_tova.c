/* TOVA (Oren et al., 2024): token omission via attention. At each eviction
 * the tokens the current (last) query attends to least go: the score is
 * the last query's probability, summed over the query heads of the kv-head
 * (the paper averages over heads; per kv-head keeps GQA lists independent).
 * The newest token always stays. */
#include "kv/policy.h"

static void tova_defaults(kvl_policy_cfg *c) { c->recent = 1; }

static void tova_score(const kvl_policy_cfg *c, const kvl_kv_table *t, int layer, int head, int len, float *score,
                       float *tmp) {
    (void)c;
    (void)tmp;
    kvl_policy_group_sum(t, layer, head, KVL_KV_ACC_LAST, len, score);
}

const kvl_policy_ops kvl_policy_tova = {"tova", "lowest attention of the current query goes (TOVA)",
                                        "sink,recent,slack,headwise", KVL_KV_STAT_LAST, 0, tova_defaults, tova_score,
                                        NULL, NULL};
