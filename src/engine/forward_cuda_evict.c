/* Eviction policies on the CUDA device: the CPU policy code (src/kv/policy*.c)
 * decides, the device keeps the pages and the statistics.
 *
 * Design. A sequence's CPU table (s->t, empty for the full policy) becomes
 * a mirror of its device lists (kv.h "mirror tables"): the same rows and
 * positions, placeholder K/V bytes (zeros in the context's codec), no
 * statistics of its own. A forward call runs on the device as without
 * eviction (appends, attention and, when the policy reads statistics, the
 * statistics fold of the decode attention with the CPU's per-query choice
 * of accumulators), and then the CPU forward pass's hooks are replayed on
 * the mirror, layer by layer: kvl_kv_policy_before, the call's rows
 * appended, the window query count, kvl_kv_policy_after. Deferring the
 * hooks to the end of the call gives the CPU's result: an eviction after
 * layer l's attention only changes lists of layers <= l, which this call
 * never reads again. When the policy reads a layer's statistics the mirror
 * fetches that layer's rows from the device (one download per layer and
 * event); each kvl_kv_drop on the mirror is recorded as a map from kept
 * rows to the device rows, and at the end one kvl_cuda_lm_evict_compact
 * moves the device rows (K/V, positions and accumulators alike). Window
 * statistics of an evicted layer are zeroed on the device at once (the
 * CPU clears them in the next call's kvl_kv_policy_before, before any
 * query of that layer folds).
 * Not on the device: the byte budget's make-room (an eviction before the
 * append, inside the call): refused when it would happen. */
#include "engine/forward_cuda_evict.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kv/policy.h"

int kvl_engine_cuda_evict_list_rows(const kvl_ctx *c, int max_batch) {
    (void)max_batch;
    const kvl_policy_cfg *pc = kvl_kv_pool_policy(c->pool);
    /* a uniform fixed budget bounds every list: budget + slack between
     * calls, plus one engine call's tokens (n_batch) during it; other
     * budgets (PyramidKV's and CAKE's per-layer splits, head-wise pools,
     * keep_frac) can give a list up to the whole context */
    if (!pc->ops || pc->ops->weights || pc->headwise || pc->keep <= 0 || pc->keep_frac > 0) return 0;
    const long r = (long)pc->keep + pc->slack + c->p.n_batch + c->p.page_tokens;
    return r < c->p.n_ctx ? (int)r : 0;
}

#ifdef KVL_HAVE_CUDA
#include "cuda/kvl_cuda.h"

typedef struct ev_user {
    kvl_cuda_evict *e;
    int slot;
    kvl_cuda_evict_stats st;
} ev_user;

struct kvl_cuda_evict {
    kvl_cuda_lm *lm;
    int n_slots, L, Hkv, H, hd, rows, n_batch;
    unsigned kv_flags; /* KVL_KV_STAT_* the policy reads */
    kvl_kv_mirror *mir; /* [n_slots] */
    ev_user *usr;       /* [n_slots] */
    uint8_t *stale;     /* [n_slots][L] */
    float *zeros;       /* [n_batch][Hkv][hd] placeholder K/V rows */
    int32_t *pos;       /* [n_batch] */
    uint8_t *qm;        /* [n_batch] accumulators per query of the call */
    int32_t *map;       /* [L * Hkv][rows]: device row of each mirror row, for lists dropped from in this call */
    int *map_len;       /* [L * Hkv] */
    uint8_t *touched;   /* [L * Hkv] */
    int32_t *lh, *nk, *keep; /* compaction arguments */
    float *stage;       /* [H][rows] statistics download */
    kvl_err *err;       /* the replay's error (hooks return nothing) */
    kvl_status hook_st;
};

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* the device accumulators are numbered as the CPU's (kvl_cuda.h), so the
 * CPU's accumulator indices and masks pass through unchanged */
_Static_assert((int)KVL_CUDA_ACC_MASS == (int)KVL_KV_ACC_MASS && (int)KVL_CUDA_ACC_WSUM == (int)KVL_KV_ACC_WSUM &&
                   (int)KVL_CUDA_ACC_WSQ == (int)KVL_KV_ACC_WSQ && (int)KVL_CUDA_ACC_LAST == (int)KVL_KV_ACC_LAST &&
                   (int)KVL_CUDA_ACC_VOTE == (int)KVL_KV_ACC_VOTE && (int)KVL_CUDA_ACC_WENT == (int)KVL_KV_ACC_WENT &&
                   (int)KVL_CUDA_N_ACC == (int)KVL_KV_N_ACC,
               "device and CPU accumulator numbering");

/* mirror hook: the device statistics of (slot, layer) into the mirror's rows */
static void ev_fetch(void *user, kvl_kv_table *t, int layer) {
    ev_user *u = user;
    kvl_cuda_evict *e = u->e;
    e->stale[(size_t)u->slot * e->L + layer] = 0;
    if (e->hook_st) return;
    const int32_t *rows = kvl_cuda_lm_evict_rows(e->lm, u->slot) + (size_t)layer * e->Hkv;
    int n = 0;
    for (int h = 0; h < e->Hkv; h++) n = rows[h] > n ? rows[h] : n;
    for (int a = 0; a < KVL_KV_N_ACC; a++) {
        if (!kvl_kv_table_stat_rows(t, layer, 0, a)) continue;
        kvl_status s = kvl_cuda_lm_evict_download(e->lm, u->slot, layer, a, n, e->stage, e->err);
        if (s) {
            e->hook_st = s;
            return;
        }
        u->st.bytes_down += (int64_t)sizeof(float) * e->H * n;
        for (int qh = 0; qh < e->H; qh++)
            memcpy(kvl_kv_table_stat_rows(t, layer, qh, a), e->stage + (size_t)qh * n, sizeof(float) * n);
    }
}

/* mirror hook: kvl_kv_drop of list (layer, head) is about to remove idx */
static void ev_drop(void *user, kvl_kv_table *t, int layer, int head, const int *idx, int n_idx, int len) {
    ev_user *u = user;
    kvl_cuda_evict *e = u->e;
    if (e->stale[(size_t)u->slot * e->L + layer]) ev_fetch(user, t, layer); /* before the host rows move */
    const int li = layer * e->Hkv + head;
    int32_t *m = e->map + (size_t)li * e->rows;
    if (!e->touched[li]) {
        e->touched[li] = 1;
        for (int i = 0; i < len; i++) m[i] = i;
        e->map_len[li] = len;
    }
    if (e->map_len[li] != len && !e->hook_st)
        e->hook_st = kvl_err_set(e->err, KVL_ERR_INTERNAL, "cuda evict: mirror list (%d, %d) has %d rows, map %d",
                                 layer, head, len, e->map_len[li]);
    int w = 0;
    for (int i = 0, d = 0; i < len; i++) {
        if (d < n_idx && idx[d] == i) {
            d++;
            continue;
        }
        m[w++] = m[i];
    }
    e->map_len[li] = w;
}

kvl_status kvl_engine_cuda_evict_create(kvl_ctx *c, kvl_cuda_lm *lm, int n_slots, kvl_cuda_evict **out,
                                        kvl_err *err) {
    *out = NULL;
    const kvl_model *m = c->m;
    const kvl_policy_cfg *pc = kvl_kv_pool_policy(c->pool);
    kvl_cuda_evict *e = calloc(1, sizeof *e);
    if (!e) return kvl_err_set(err, KVL_ERR_NOMEM, "cuda evict: out of memory");
    e->lm = lm, e->n_slots = n_slots, e->L = m->n_layer, e->Hkv = m->n_head_kv, e->H = m->n_head;
    e->hd = m->head_dim, e->rows = kvl_cuda_lm_list_rows(lm), e->n_batch = c->p.n_batch;
    e->kv_flags = pc->ops->stats;
    const size_t nl = (size_t)e->L * e->Hkv;
    e->mir = calloc((size_t)n_slots, sizeof *e->mir);
    e->usr = calloc((size_t)n_slots, sizeof *e->usr);
    e->stale = calloc((size_t)n_slots * e->L, 1);
    e->zeros = calloc((size_t)e->n_batch * e->Hkv * e->hd, sizeof(float));
    e->pos = calloc((size_t)e->n_batch, sizeof(int32_t));
    e->qm = calloc((size_t)e->n_batch, 1);
    e->map = malloc(sizeof(int32_t) * nl * e->rows);
    e->map_len = calloc(nl, sizeof(int));
    e->touched = calloc(nl, 1);
    e->lh = malloc(sizeof(int32_t) * 2 * nl);
    e->nk = malloc(sizeof(int32_t) * nl);
    e->keep = malloc(sizeof(int32_t) * nl * e->rows);
    e->stage = malloc(sizeof(float) * (size_t)e->H * e->rows);
    if (!e->mir || !e->usr || !e->stale || !e->zeros || !e->pos || !e->qm || !e->map || !e->map_len || !e->touched ||
        !e->lh || !e->nk || !e->keep || !e->stage) {
        kvl_engine_cuda_evict_free(e);
        return kvl_err_set(err, KVL_ERR_NOMEM, "cuda evict: out of memory");
    }
    for (int i = 0; i < n_slots; i++) {
        e->usr[i] = (ev_user){e, i, {0}};
        e->mir[i] = (kvl_kv_mirror){ev_fetch, ev_drop, &e->usr[i], e->stale + (size_t)i * e->L};
    }
    /* VEDA's vote threshold and the window come from the tables (kvi_policy_init): the pool's cfg */
    kvl_status st = kvl_cuda_lm_enable_evict(lm, kvl_kv_stat_acc_mask(e->kv_flags), pc->vote_a, pc->vote_b, err);
    if (st) {
        kvl_engine_cuda_evict_free(e);
        return st;
    }
    *out = e;
    return KVL_OK;
}

void kvl_engine_cuda_evict_free(kvl_cuda_evict *e) {
    if (!e) return;
    free(e->mir), free(e->usr), free(e->stale), free(e->zeros), free(e->pos), free(e->qm), free(e->map);
    free(e->map_len), free(e->touched), free(e->lh), free(e->nk), free(e->keep), free(e->stage);
    free(e);
}

kvl_status kvl_engine_cuda_evict_slot(kvl_cuda_evict *e, int slot, kvl_err *err) {
    memset(&e->usr[slot].st, 0, sizeof e->usr[slot].st);
    return kvl_cuda_lm_evict_reset_slot(e->lm, slot, err);
}

void kvl_engine_cuda_evict_batch(kvl_cuda_evict *e, kvl_seq *s, int n, int off, int nc) {
    /* the CPU's choice of the statistics each query of an n-token call
     * feeds (src/kv/attn.c kvl_kv_attend): MASS every query, VOTE every
     * query (or the window's), WSUM/WSQ and WENT the last W, LAST the last */
    int W, vw;
    float va, vb;
    kvl_kv_table_stats_get_params(s->t, &W, &va, &vb, &vw);
    const unsigned f = e->kv_flags;
    const int w0 = n > W ? n - W : 0;
    for (int i = 0; i < nc; i++) {
        const int ti = off + i;
        unsigned m = 0;
        if (f & KVL_KV_STAT_MASS) m |= 1u << KVL_CUDA_ACC_MASS;
        if ((f & KVL_KV_STAT_VOTE) && (!vw || ti >= w0)) m |= 1u << KVL_CUDA_ACC_VOTE;
        if ((f & KVL_KV_STAT_WIN) && ti >= w0) m |= 1u << KVL_CUDA_ACC_WSUM | 1u << KVL_CUDA_ACC_WSQ;
        if ((f & KVL_KV_STAT_ENT) && ti >= w0) m |= 1u << KVL_CUDA_ACC_WENT;
        if ((f & KVL_KV_STAT_LAST) && ti == n - 1) m |= 1u << KVL_CUDA_ACC_LAST;
        e->qm[i] = (uint8_t)m;
    }
    kvl_cuda_lm_evict_set_qmask(e->lm, e->qm, nc);
}

kvl_status kvl_engine_cuda_evict_after(kvl_cuda_evict *e, kvl_seq *s, int pos0, int n, kvl_err *err) {
    kvl_kv_table *t = s->t;
    const int slot = s->cuda_slot, L = e->L, Hkv = e->Hkv;
    ev_user *u = &e->usr[slot];
    const double t0 = now_ms();
    kvl_kv_table_set_mirror(t, &e->mir[slot]);
    memset(e->stale + (size_t)slot * L, 1, (size_t)L); /* the device folded this call's queries */
    memset(e->touched, 0, (size_t)L * Hkv);
    e->err = err, e->hook_st = KVL_OK;
    for (int i = 0; i < n; i++) e->pos[i] = pos0 + i;
    kvl_status st = KVL_OK;
    kvl_kv_policy_stats pi;
    for (int l = 0; l < L && !st; l++) {
        kvl_kv_policy_info(t, &pi);
        const int64_t d0 = pi.tokens_dropped;
        if ((st = kvl_kv_policy_before(t, l, n, err))) break;
        kvl_kv_policy_info(t, &pi);
        if (pi.tokens_dropped != d0) {
            st = kvl_err_set(err, KVL_ERR_UNSUPPORTED,
                             "cuda evict: the KV byte budget would evict before layer %d's append (make-room), which "
                             "the device does not do; raise --kv-budget or set --kv-keep",
                             l);
            break;
        }
        if ((st = kvl_kv_append(t, l, n, e->pos, e->zeros, e->zeros, err))) break;
        kvl_kv_table_stats_note_queries(t, l, n);
        if ((st = kvl_kv_policy_after(t, l, n, pos0 + n, err))) break;
        st = e->hook_st;
    }
    if (!st) st = kvl_kv_policy_step(t, err);
    if (!st) st = e->hook_st;
    const int64_t pages_call = kvl_cuda_lm_evict_pages(e->lm, slot);
    if (pages_call > u->st.pages_peak) u->st.pages_peak = pages_call;
    /* the recorded drops on the device */
    int nlist = 0;
    size_t nkeep = 0;
    for (int li = 0; li < L * Hkv && !st; li++) {
        if (!e->touched[li]) continue;
        e->lh[2 * nlist] = li / Hkv, e->lh[2 * nlist + 1] = li % Hkv;
        e->nk[nlist] = e->map_len[li];
        memcpy(e->keep + nkeep, e->map + (size_t)li * e->rows, sizeof(int32_t) * e->map_len[li]);
        nkeep += (size_t)e->map_len[li];
        nlist++;
    }
    if (!st && nlist) {
        u->st.pages_before = pages_call;
        st = kvl_cuda_lm_evict_compact(e->lm, slot, nlist, e->lh, e->nk, e->keep, err);
    }
    for (int l = 0; l < L && !st; l++)
        if (kvl_kv_policy_layer_evicted(t, l)) st = kvl_cuda_lm_evict_reset_window(e->lm, slot, l, err);
    /* the mirror and the device agree on every list's rows */
    const int32_t *rows = kvl_cuda_lm_evict_rows(e->lm, slot);
    for (int li = 0; li < L * Hkv && !st; li++)
        if (rows[li] != kvl_kv_table_len(t, li / Hkv, li % Hkv))
            st = kvl_err_set(err, KVL_ERR_INTERNAL, "cuda evict: list (%d, %d) has %d device rows, %d mirror rows",
                             li / Hkv, li % Hkv, rows[li], kvl_kv_table_len(t, li / Hkv, li % Hkv));
    kvl_kv_table_set_mirror(t, NULL);
    const double dt = now_ms() - t0;
    u->st.calls++;
    if (nlist) u->st.events++, u->st.event_ms += dt;
    else u->st.quiet_ms += dt;
    u->st.pages_now = kvl_cuda_lm_evict_pages(e->lm, slot);
    u->st.list_rows = e->rows;
    return st;
}

kvl_status kvl_engine_cuda_evict_fetch(kvl_cuda_evict *e, kvl_seq *s, kvl_err *err) {
    const int slot = s->cuda_slot;
    e->err = err, e->hook_st = KVL_OK;
    for (int l = 0; l < e->L && !e->hook_st; l++) ev_fetch(&e->usr[slot], s->t, l);
    return e->hook_st;
}

void kvl_engine_cuda_evict_get(const kvl_cuda_evict *e, int slot, kvl_cuda_evict_stats *out) {
    *out = e->usr[slot].st;
}

#endif /* KVL_HAVE_CUDA */
