/* Eviction compaction: kvl_kv_drop removes cached tokens from a (layer,
 * kv-head) list and compacts it so all pages but the last stay full; pages
 * no longer referenced return to the pool. With a sealing codec the
 * rewritten pages are open (rows decoded from sealed pages are re-encoded
 * in the open format) and are sealed again by the next kvl_kv_seal, so a
 * row moved out of a sealed page is quantized again; the engine evicts
 * before it seals, so rows still in open pages move exactly. */
#include "kv/kv_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Move token (src page, si) to (dst page, di) of layer ly, kv-head h:
 * position, K row, V row (copy_row within one per-token class, else
 * decode from src's format and encode in dst's; rotated rows stay rotated). */
static void move_token(const kvl_kv_table *t, const kvi_layer *ly, int layer, int h, pref dst, int di, pref src,
                       int si, float *tmp) {
    const kvl_kv_pool *p = t->pool;
    const int D = p->D, P = p->P;
    const kvi_class *sc = kvi_cls(p, src.id), *dc = kvi_cls(p, dst.id);
    memmove(dst.mem + (size_t)di * 4, src.mem + (size_t)si * 4, 4);
    const void *kst = dc->fk == ly->ck ? kvi_codec_st(t, layer, h, 0) : NULL;
    const void *vst = dc->fv == ly->cv ? kvi_codec_st(t, layer, h, 1) : NULL;
    if (sc == dc && sc->fk->copy_row) sc->fk->copy_row(dst.mem + dc->koff, di, src.mem + sc->koff, si, D, P);
    else {
        sc->fk->decode(src.mem + sc->koff, D, P, si, tmp);
        dc->fk->encode(kst, dst.mem + dc->koff, D, P, di, tmp);
    }
    if (sc == dc && sc->fv->copy_row) sc->fv->copy_row(dst.mem + dc->voff, di, src.mem + sc->voff, si, D, P);
    else {
        sc->fv->decode(src.mem + sc->voff, D, P, si, tmp);
        dc->fv->encode(vst, dst.mem + dc->voff, D, P, di, tmp);
    }
}

/* Grow the table's drop scratch to n page references (amortized: the
 * buffers only grow, so steady-state eviction allocates nothing). */
static kvl_status drop_scratch(kvl_kv_table *t, int n, kvl_err *err) {
    if (!t->drop_tmp) {
        t->drop_tmp = malloc((size_t)t->pool->D * sizeof(float));
        if (!t->drop_tmp) return kvl_err_set(err, KVL_ERR_NOMEM, "kv drop: out of memory for scratch");
    }
    if (n <= t->drop_cap) return KVL_OK;
    int cap = t->drop_cap ? t->drop_cap : 16;
    while (cap < n) cap *= 2;
    pref *a = realloc(t->drop_old, (size_t)cap * sizeof *a);
    if (!a) return kvl_err_set(err, KVL_ERR_NOMEM, "kv drop: out of memory for scratch");
    t->drop_old = a;
    pref *b = realloc(t->drop_wp, (size_t)cap * sizeof *b);
    if (!b) return kvl_err_set(err, KVL_ERR_NOMEM, "kv drop: out of memory for scratch");
    t->drop_wp = b;
    t->drop_cap = cap;
    return KVL_OK;
}

kvl_status kvl_kv_drop(kvl_kv_table *t, int layer, int head, const int *idx, int n_idx, kvl_err *err) {
    kvl_kv_pool *p = t->pool;
    const int P = p->P;
    if (layer < 0 || layer >= p->cfg.n_layer || head < 0 || head >= p->cfg.n_head_kv || n_idx < 0)
        return kvl_err_set(err, KVL_ERR_ARG, "kv drop: bad layer/head/count");
    kvlist *L = kvi_list(t, layer, head);
    for (int i = 0; i < n_idx; i++)
        if (idx[i] < 0 || idx[i] >= L->len || (i && idx[i] <= idx[i - 1]))
            return kvl_err_set(err, KVL_ERR_ARG, "kv drop: indices must be increasing and < %d", L->len);
    if (n_idx == 0) return KVL_OK;
    if (t->mirror) t->mirror->drop(t->mirror->user, t, layer, head, idx, n_idx, L->len);

    const int fa = idx[0] / P;                  /* first affected page */
    const int newlen = L->len - n_idx;
    const int nw = kvi_ceil_div(newlen - fa * P, P); /* pages written from fa on */
    const int n_old = L->n_pages - fa;
    const kvi_layer *ly = &p->layers[layer];
    const int cls = ly->open_cls;
    /* an exclusively owned open page is compacted in place (its class has exact row copies) */
    const int can_inplace = p->cls[cls].fk->copy_row && p->cls[cls].fv->copy_row;
#define INPLACE(k) (can_inplace && (old[k].id >> KVI_CLS_SHIFT) == (uint32_t)cls && *kvi_page_ref(p, old[k].id) == 1)
    kvl_status s = drop_scratch(t, n_old > nw + 1 ? n_old : nw + 1, err);
    if (s == KVL_OK) s = kvi_txn_save_list(t, layer * p->cfg.n_head_kv + head, err);
    if (s == KVL_OK) s = kvi_txn_save_stats(t, layer, err);
    if (s != KVL_OK) return s;
    pref *old = t->drop_old, *wp = t->drop_wp;
    float *tmp = t->drop_tmp;
    memcpy(old, L->pages + fa, (size_t)n_old * sizeof *old);

    pthread_mutex_lock(&p->mu);
    int64_t fresh = 0;
    for (int k = 0; k < nw; k++) fresh += !INPLACE(k);
    s = kvi_pool_reserve(p, cls, fresh, err);
    if (s != KVL_OK) {
        pthread_mutex_unlock(&p->mu);
        return s;
    }
    for (int k = 0; k < nw; k++) wp[k] = INPLACE(k) ? old[k] : kvi_page_take(p, cls);
#undef INPLACE

    int w = fa * P, d = 0;
    for (int g = fa * P; g < L->len; g++) {
        if (d < n_idx && idx[d] == g) {
            d++;
            continue;
        }
        const pref src = old[g / P - fa], dst = wp[w / P - fa];
        if (src.mem != dst.mem || g != w) move_token(t, ly, layer, head, dst, w % P, src, g % P, tmp);
        w++;
    }
    /* release old pages not reused in place */
    for (int k = 0; k < n_old; k++) {
        t->bytes -= kvi_pref_bytes(p, old[k]);
        if (!(k < nw && wp[k].mem == old[k].mem)) kvi_page_unref(p, old[k]);
    }
    for (int k = 0; k < nw; k++) t->bytes += kvi_pref_bytes(p, wp[k]);
    pthread_mutex_unlock(&p->mu);
    memcpy(L->pages + fa, wp, (size_t)nw * sizeof *wp);
    t->n_pages += (int64_t)nw - n_old;
    L->n_pages = fa + nw;
    if (L->n_sealed > fa) L->n_sealed = fa;
    /* compact the statistics of the query heads reading this kv-head */
    kvi_stats_drop(t, layer, head, idx, n_idx, L->len);
    L->len = newlen;
    return KVL_OK;
}
