/* VEDA (Wang et al., arXiv 2507.00797): voting-based eviction. Every query
 * votes: per query head it takes the threshold T = a*mean - b*std of its
 * own scaled score row q.k over the tokens it sees and votes against each
 * token scoring below T; votes accumulate per token (summed over the
 * group's query heads). The reserved stage (the first `sink` tokens) and
 * the newest `recent` tokens are never evicted; when a list is over budget
 * the tokens with the most votes go (ties: the older). Votes count how
 * often a token was unimportant, not how much attention it got, so recent
 * tokens are not biased out and one outlier score does not keep a token.
 * norm=1 ranks by the vote rate instead (votes / queries that saw the
 * token: with the prompt's every query voting, raw counts favour the
 * newest tokens, which had the fewest voters). wvote=1 lets only the last
 * `window` queries of a call vote (the question, when it ends the prompt),
 * and pool=k max-pools the negated votes (ties by their average). */
#include "kv/policy.h"

#include <math.h>
#include <stdint.h>

static void veda_defaults(kvl_policy_cfg *c) {
    c->sink = 4;
    c->recent = 32;
}

static void veda_score(const kvl_policy_cfg *c, const kvl_kv_table *t, int layer, int head, int len, float *score,
                       float *tmp) {
    kvl_policy_group_sum(t, layer, head, KVL_KV_ACC_VOTE, len, score);
    if (c->norm && len > 0) {
        int32_t *pos = (int32_t *)tmp; /* tmp holds len floats: as many int32 */
        kvl_kv_table_positions(t, layer, head, pos, len);
        const int32_t last = pos[len - 1];
        for (int i = 0; i < len; i++) score[i] /= (float)(last - pos[i] + 1);
    }
    for (int i = 0; i < len; i++) score[i] = -score[i];
    if (c->pool > 1 && len > 0) { /* tmp may hold positions: pool through it after they are used */
        /* max-pool the negated votes (neighbours of an unvoted token stay, as
         * SnapKV's pooling), ties broken by the average over the kernel: the
         * counts are integers, so a term below 1 only orders equal maxima */
        float *avg = tmp + len; /* the scratch holds 2 x len floats past score */
        kvl_policy_avgpool(score, len, c->pool, avg);
        float amax = 0;
        for (int i = 0; i < len; i++) amax = fabsf(avg[i]) > amax ? fabsf(avg[i]) : amax;
        for (int i = 0; i < len; i++) tmp[i] = score[i];
        kvl_policy_maxpool(tmp, len, c->pool, score);
        for (int i = 0; i < len; i++) score[i] += 0.5f * avg[i] / (1.0f + amax);
    }
}

const kvl_policy_ops kvl_policy_veda = {"veda", "votes against below-threshold scores; most-voted goes (VEDA)",
                                        "sink,recent,window,slack,a,b,norm,wvote,pool,headwise", KVL_KV_STAT_VOTE, 0, veda_defaults,
                                        veda_score, NULL, NULL};
