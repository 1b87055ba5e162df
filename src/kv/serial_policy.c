/* Policy state in a session file (the state half of the policy section,
 * kv/serial.h): per table, the attention statistics the eviction policies
 * rank by (each enabled accumulator, per (layer, query head), one float per
 * cached token of that head's list, plus the window query counts) and the
 * policy's per-sequence state (budget override, CAKE preferences and layer
 * budgets, eviction counters). Without it a restored sequence would evict
 * by statistics gathered since the restore only (H2O's mass would restart
 * at zero while the kept tokens sit in the pages).
 *
 * Layout (little-endian, after the policy name and u64 state length):
 *   u32 version (1)  u32 n_tables
 *   per table: u32 accumulator mask  u32 has policy state
 *     f32 window count [n_layer]
 *     per accumulator a in mask (ascending), per layer, per query head:
 *       f32 [len of the head's kv list]
 *     if policy state: i32 keep_override  i32 last_budget  u64 n_dropped
 *       u64 n_events  then per layer f64 pref, i32 budget, u8 evicted
 * Loading checks that the mask equals what the loading context's tables
 * keep (the same policy: same accumulators), every value is finite and in
 * range, and the byte count is exact; it runs before anything is changed. */
#include <math.h>
#include <string.h>

#include "kv/kv_internal.h"
#include "kv/policy.h"
#include "kv/serial.h"

#define STATE_VERSION 1u

static unsigned acc_mask(const kvl_kv_table *t) {
    unsigned m = 0;
    for (int a = 0; a < KVL_KV_N_ACC; a++)
        if (t->acc[a]) m |= 1u << a;
    return m;
}

int kvi_ser_policy_state_used(const kvl_kv_table *const *t, int n) {
    for (int i = 0; i < n; i++)
        if (t[i]->stat_flags || t[i]->pol) return 1;
    return 0;
}

void kvi_ser_policy_state_write(kvl_ser_buf *b, const kvl_kv_table *const *t, int n) {
    const kvl_kv_pool *p = t[0]->pool;
    const int NL = p->cfg.n_layer;
    kvl_ser_put_u32(b, STATE_VERSION);
    kvl_ser_put_u32(b, (uint32_t)n);
    for (int ti = 0; ti < n; ti++) {
        const kvl_kv_table *T = t[ti];
        const unsigned m = T->stat_flags ? acc_mask(T) : 0;
        kvl_ser_put_u32(b, m);
        kvl_ser_put_u32(b, T->pol ? 1u : 0u);
        for (int l = 0; l < NL; l++) {
            const float w = m && T->win_n ? T->win_n[l] : 0.0f;
            kvl_ser_put(b, &w, 4);
        }
        for (int a = 0; a < KVL_KV_N_ACC; a++) {
            if (!(m & 1u << a)) continue;
            for (int l = 0; l < NL; l++)
                for (int qh = 0; qh < T->n_head; qh++) {
                    const int len = kvi_list(T, l, qh / T->group)->len;
                    kvl_ser_put(b, T->acc[a][l * T->n_head + qh], (size_t)len * 4);
                }
        }
        if (T->pol) {
            const kvl_policy_seq *ps = T->pol;
            kvl_ser_put_u32(b, (uint32_t)ps->keep_override);
            kvl_ser_put_u32(b, (uint32_t)ps->last_budget);
            kvl_ser_put_u64(b, (uint64_t)ps->n_dropped);
            kvl_ser_put_u64(b, (uint64_t)ps->n_events);
            for (int l = 0; l < NL; l++) {
                kvl_ser_put(b, &ps->pref[l], 8);
                kvl_ser_put_u32(b, (uint32_t)ps->budget[l]);
                kvl_ser_put(b, &ps->evicted[l], 1);
            }
        }
    }
}

static float getf(kvl_ser_rd *r) {
    const uint8_t *q = kvl_ser_get(r, 4);
    float f = 0;
    if (q) memcpy(&f, q, 4);
    return f;
}

/* Walk the state; with apply = 0 only check, with apply = 1 copy into t
 * (statistics reserved for the lists' lengths by the caller). list_len:
 * [n][n_layer * n_head_kv] lengths the tables have (or will have). */
static kvl_status walk(const uint8_t *data, size_t len, kvl_kv_table *const *t, int n, const int *list_len, int n_ctx,
                       int apply, kvl_err *err) {
    const kvl_kv_pool *p = t[0]->pool;
    const int NL = p->cfg.n_layer, H = p->cfg.n_head_kv;
    kvl_ser_rd r = {data, len, 0, 0};
    const uint32_t ver = kvl_ser_get_u32(&r), nt = kvl_ser_get_u32(&r);
    if (r.bad) return kvl_err_set(err, KVL_ERR_FORMAT, "session: policy state truncated");
    if (ver != STATE_VERSION)
        return kvl_err_set(err, KVL_ERR_UNSUPPORTED, "session: policy state version %u (this build reads %u)", ver,
                           STATE_VERSION);
    if (nt != (uint32_t)n)
        return kvl_err_set(err, KVL_ERR_FORMAT, "session: policy state of %u sequences, file holds %d", nt, n);
    for (int ti = 0; ti < n; ti++) {
        kvl_kv_table *T = t[ti];
        const unsigned m = kvl_ser_get_u32(&r), has_pol = kvl_ser_get_u32(&r);
        if (r.bad) return kvl_err_set(err, KVL_ERR_FORMAT, "session: policy state truncated");
        const unsigned want = T->stat_flags ? acc_mask(T) : 0;
        if (m != want)
            return kvl_err_set(err, KVL_ERR_ARG,
                               "session: policy statistics differ (file keeps accumulators 0x%x, context 0x%x)", m, want);
        if (has_pol != (T->pol ? 1u : 0u))
            return kvl_err_set(err, KVL_ERR_FORMAT, "session: policy state %s for a policy that %s", has_pol ? "present" : "missing",
                               T->pol ? "keeps one" : "keeps none");
        for (int l = 0; l < NL; l++) {
            const float w = getf(&r);
            if (r.bad) return kvl_err_set(err, KVL_ERR_FORMAT, "session: policy state truncated");
            if (!isfinite(w) || w < 0 || w > 1e9f || (!m && w != 0))
                return kvl_err_set(err, KVL_ERR_FORMAT, "session: policy state: layer %d window count %g", l, (double)w);
            if (apply && m) T->win_n[l] = w;
        }
        for (int a = 0; a < KVL_KV_N_ACC; a++) {
            if (!(m & 1u << a)) continue;
            for (int l = 0; l < NL; l++)
                for (int qh = 0; qh < T->n_head; qh++) {
                    const int ln = list_len[(size_t)ti * NL * H + l * H + qh / T->group];
                    const uint8_t *q = kvl_ser_get(&r, (size_t)ln * 4);
                    if (!q) return kvl_err_set(err, KVL_ERR_FORMAT, "session: policy state truncated");
                    for (int k = 0; k < ln; k++) {
                        float f;
                        memcpy(&f, q + 4 * (size_t)k, 4);
                        if (!isfinite(f) || f < 0)
                            return kvl_err_set(err, KVL_ERR_FORMAT,
                                               "session: policy state: statistic %d of layer %d head %d token %d is %g", a, l,
                                               qh, k, (double)f);
                    }
                    if (apply) memcpy(T->acc[a][l * T->n_head + qh], q, (size_t)ln * 4);
                }
        }
        if (has_pol) {
            const int32_t keep = (int32_t)kvl_ser_get_u32(&r), last = (int32_t)kvl_ser_get_u32(&r);
            const uint64_t nd = kvl_ser_get_u64(&r), ne = kvl_ser_get_u64(&r);
            if (r.bad) return kvl_err_set(err, KVL_ERR_FORMAT, "session: policy state truncated");
            if (keep < -2 || keep > n_ctx || last < -1 || last > n_ctx || nd > (uint64_t)INT64_MAX ||
                ne > (uint64_t)INT64_MAX)
                return kvl_err_set(err, KVL_ERR_FORMAT, "session: policy state: keep %d / budget %d / counters out of range",
                                   (int)keep, (int)last);
            if (apply) {
                T->pol->keep_override = keep;
                T->pol->last_budget = last;
                T->pol->n_dropped = (int64_t)nd;
                T->pol->n_events = (int64_t)ne;
            }
            for (int l = 0; l < NL; l++) {
                double pr = 0;
                const uint8_t *q = kvl_ser_get(&r, 8);
                if (q) memcpy(&pr, q, 8);
                const int32_t bud = (int32_t)kvl_ser_get_u32(&r);
                const uint8_t *ev = kvl_ser_get(&r, 1);
                if (r.bad) return kvl_err_set(err, KVL_ERR_FORMAT, "session: policy state truncated");
                if (!isfinite(pr) || pr < 0 || bud < 0 || bud > n_ctx || *ev > 1)
                    return kvl_err_set(err, KVL_ERR_FORMAT, "session: policy state: layer %d preference %g budget %d", l, pr,
                                       (int)bud);
                if (apply) {
                    T->pol->pref[l] = pr;
                    T->pol->budget[l] = bud;
                    T->pol->evicted[l] = *ev;
                }
            }
        }
    }
    if (kvl_ser_left(&r)) return kvl_err_set(err, KVL_ERR_FORMAT, "session: %zu trailing bytes of policy state", kvl_ser_left(&r));
    return KVL_OK;
}

kvl_status kvi_ser_policy_state_check(const uint8_t *data, size_t len, kvl_kv_table *const *t, int n, const int *list_len,
                                      int n_ctx, kvl_err *err) {
    return walk(data, len, t, n, list_len, n_ctx, 0, err);
}

void kvi_ser_policy_state_apply(const uint8_t *data, size_t len, kvl_kv_table *const *t, int n, const int *list_len,
                                int n_ctx) {
    kvl_err e;
    (void)walk(data, len, t, n, list_len, n_ctx, 1, &e); /* checked before: cannot fail */
}
