/* Transactions on a page table: a forward call either caches every token it
 * was given or none. kvl_kv_txn_begin records each (layer, kv-head) list's
 * length; appends, drops and attention statistics after it can be undone by
 * kvl_kv_txn_rollback, which returns every page taken since begin to the
 * pool, or kept by kvl_kv_txn_commit.
 *
 * Undo without copying rows:
 *  - appends are undone by truncation: rows past the old length of a
 *    per-token codec's page are never read. A partial last page that was
 *    shared (fork) is copied on write; the undo keeps the original's
 *    reference and puts it back. Sealing (kvl_kv_seal) never rewrites a
 *    page: it replaces open pages by new sealed ones; before it replaces a
 *    page the transaction began with, the list's page array is saved as
 *    for a drop.
 *  - drops are undone by restoring the list's page array saved (with
 *    references) before the first drop; the extra references make the drop
 *    compact into fresh pages instead of in place, so eviction inside a
 *    transaction needs that headroom until commit.
 *  - attention statistics of a layer are copied at the layer's first change.
 *
 * Truncate mode (kvl_kv_txn_begin_truncate, for evicting policies): drops
 * and seals are final and free their pages at once (nothing is saved, so
 * eviction needs no headroom); rollback removes from every list the rows
 * appended since begin (rows are in position order: those after the
 * position of the list's last row at begin). A cut that falls inside a page
 * sealed during the transaction is repaired by decoding the kept rows into
 * a fresh open page (allowed past the budget: the call failed and returns
 * more than that at once); if even that allocation fails, the older rows of
 * that page go too. Statistics are not restored. */
#include "kv/kv_internal.h"

#include <stdlib.h>
#include <string.h>

static const pref no_page = {NULL, NO_PAGE};

static kvl_status txn_begin(kvl_kv_table *t, int trunc, kvl_err *err) {
    kvl_kv_pool *p = t->pool;
    if (t->txn) return kvl_err_set(err, KVL_ERR_ARG, "kv txn: a transaction is already open");
    const int nl = kvi_n_lists(p);
    if (!t->undo) {
        t->undo = calloc((size_t)nl, sizeof *t->undo);
        t->stat_save = calloc((size_t)p->cfg.n_layer, sizeof *t->stat_save);
        t->stat_save_len = calloc((size_t)p->cfg.n_layer, sizeof *t->stat_save_len);
        t->stat_save_cap = calloc((size_t)p->cfg.n_layer, sizeof *t->stat_save_cap);
        t->stat_save_win = calloc((size_t)p->cfg.n_layer, sizeof *t->stat_save_win);
        if (!t->undo || !t->stat_save || !t->stat_save_len || !t->stat_save_cap || !t->stat_save_win) {
            kvi_txn_free(t);
            return kvl_err_set(err, KVL_ERR_NOMEM, "kv txn: out of memory for undo records");
        }
    }
    for (int i = 0; i < nl; i++) {
        const kvlist *L = &t->lists[i];
        kvundo *u = &t->undo[i];
        u->len = L->len;
        u->n_pages = L->n_pages;
        u->orig_last = L->len % p->P ? L->pages[L->n_pages - 1] : no_page;
        u->n_sealed = L->n_sealed;
        u->cow = no_page;
        u->has_saved = 0;
        u->last_pos = INT32_MIN;
        if (L->len) memcpy(&u->last_pos, L->pages[(L->len - 1) / p->P].mem + (size_t)((L->len - 1) % p->P) * 4, 4);
    }
    for (int l = 0; l < p->cfg.n_layer; l++) t->stat_save_len[l] = -1;
    t->txn = 1;
    t->txn_trunc = trunc;
    return KVL_OK;
}

kvl_status kvl_kv_txn_begin(kvl_kv_table *t, kvl_err *err) { return txn_begin(t, 0, err); }
kvl_status kvl_kv_txn_begin_truncate(kvl_kv_table *t, kvl_err *err) { return txn_begin(t, 1, err); }

int kvi_txn_keep_cow(kvl_kv_table *t, int i, pref old) {
    kvundo *u = t->txn ? &t->undo[i] : NULL;
    if (!u || !u->orig_last.mem || u->cow.mem || old.id != u->orig_last.id) return 0;
    u->cow = old;
    return 1;
}

kvl_status kvi_txn_save_list(kvl_kv_table *t, int i, kvl_err *err) {
    if (!t->txn || t->txn_trunc || t->undo[i].has_saved) return KVL_OK;
    kvl_kv_pool *p = t->pool;
    kvundo *u = &t->undo[i];
    const kvlist *L = &t->lists[i];
    if (L->n_pages > u->cap_saved) {
        int cap = u->cap_saved ? u->cap_saved : 8;
        while (cap < L->n_pages) cap *= 2;
        pref *a = realloc(u->saved, (size_t)cap * sizeof *a);
        if (!a) return kvl_err_set(err, KVL_ERR_NOMEM, "kv txn: out of memory saving a page list");
        u->saved = a;
        u->cap_saved = cap;
    }
    if (L->n_pages) memcpy(u->saved, L->pages, (size_t)L->n_pages * sizeof *u->saved);
    u->n_saved = L->n_pages;
    u->saved_len = L->len;
    pthread_mutex_lock(&p->mu);
    for (int j = 0; j < u->n_saved; j++) (*kvi_page_ref(p, u->saved[j].id))++;
    pthread_mutex_unlock(&p->mu);
    u->has_saved = 1;
    return KVL_OK;
}

kvl_status kvi_txn_save_stats(kvl_kv_table *t, int layer, kvl_err *err) {
    if (!t->txn || t->txn_trunc || !t->stat_flags || t->stat_save_len[layer] >= 0) return KVL_OK;
    const kvl_kv_pool *p = t->pool;
    int ids[KVL_KV_N_ACC];
    const int na = kvi_stats_on(t, ids);
    int len = 0;
    for (int h = 0; h < p->cfg.n_head_kv; h++)
        if (kvi_list(t, layer, h)->len > len) len = kvi_list(t, layer, h)->len;
    const size_t need = (size_t)len * (size_t)t->n_head * (size_t)na;
    if (need > (size_t)t->stat_save_cap[layer]) {
        size_t cap = t->stat_save_cap[layer] ? (size_t)t->stat_save_cap[layer] : 256;
        while (cap < need) cap *= 2;
        if (cap > INT32_MAX) return kvl_err_set(err, KVL_ERR_NOMEM, "kv txn: statistics too large to save");
        float *a = realloc(t->stat_save[layer], cap * sizeof *a);
        if (!a) return kvl_err_set(err, KVL_ERR_NOMEM, "kv txn: out of memory saving attention statistics");
        t->stat_save[layer] = a;
        t->stat_save_cap[layer] = (int)cap;
    }
    for (int k = 0; k < na && len > 0; k++)
        for (int qh = 0; qh < t->n_head; qh++)
            memcpy(t->stat_save[layer] + ((size_t)k * t->n_head + qh) * len, t->acc[ids[k]][layer * t->n_head + qh],
                   (size_t)len * sizeof(float));
    t->stat_save_len[layer] = len;
    t->stat_save_win[layer] = t->win_n[layer];
    return KVL_OK;
}

static int32_t row_pos(const kvl_kv_pool *p, const kvlist *L, int i) {
    int32_t v;
    memcpy(&v, L->pages[i / p->P].mem + (size_t)(i % p->P) * 4, 4);
    return v;
}

/* Truncate-mode rollback of list li (pool mutex held): drop the rows after
 * the list's last position at begin. */
static void trunc_list(kvl_kv_table *t, int li) {
    kvl_kv_pool *p = t->pool;
    kvlist *L = &t->lists[li];
    kvundo *u = &t->undo[li];
    const int P = p->P;
    int cut = L->len;
    while (cut > 0 && row_pos(p, L, cut - 1) > u->last_pos) cut--;
    if (u->cow.mem) kvi_page_unref(p, u->cow); /* the copy holds the same kept rows */
    const int keep_pages = kvi_ceil_div(cut, P);
    for (int j = keep_pages; j < L->n_pages; j++) kvi_page_unref(p, L->pages[j]);
    L->n_pages = keep_pages;
    L->len = cut;
    if (cut % P && kvi_cls(p, L->pages[keep_pages - 1].id)->sealed) {
        /* the partial last page must be open: decode its kept rows into a fresh one */
        const kvi_layer *ly = &p->layers[li / p->cfg.n_head_kv];
        const kvi_class *oc = &p->cls[ly->open_cls];
        const size_t budget = p->cfg.budget_bytes;
        p->cfg.budget_bytes = SIZE_MAX;
        const int ok = kvi_pool_reserve(p, ly->open_cls, 1, NULL) == KVL_OK;
        p->cfg.budget_bytes = budget;
        float *row = t->drop_tmp ? t->drop_tmp : malloc((size_t)p->D * sizeof(float));
        if (ok && row) {
            const pref src = L->pages[keep_pages - 1], dst = kvi_page_take(p, ly->open_cls);
            const kvi_class *sc = kvi_cls(p, src.id);
            const int layer = li / p->cfg.n_head_kv, h = li % p->cfg.n_head_kv;
            memcpy(dst.mem, src.mem, (size_t)P * 4);
            for (int r = 0; r < cut % P; r++) {
                sc->fk->decode(src.mem + sc->koff, p->D, P, r, row);
                oc->fk->encode(oc->fk == ly->ck ? kvi_codec_st(t, layer, h, 0) : NULL, dst.mem + oc->koff, p->D, P, r, row);
                sc->fv->decode(src.mem + sc->voff, p->D, P, r, row);
                oc->fv->encode(oc->fv == ly->cv ? kvi_codec_st(t, layer, h, 1) : NULL, dst.mem + oc->voff, p->D, P, r, row);
            }
            kvi_page_unref(p, src);
            L->pages[keep_pages - 1] = dst;
        } else { /* no memory even for that: the page's older rows go too */
            kvi_page_unref(p, L->pages[keep_pages - 1]);
            L->n_pages--;
            L->len = L->n_pages * P;
        }
        if (row != t->drop_tmp) free(row);
    }
    int ns = 0;
    while (ns < L->n_pages && kvi_cls(p, L->pages[ns].id)->sealed) ns++;
    L->n_sealed = ns;
    u->cow = no_page;
}

/* Release what the undo records hold (commit) or put it back (rollback). */
static void txn_end(kvl_kv_table *t, int rollback) {
    kvl_kv_pool *p = t->pool;
    const int nl = kvi_n_lists(p);
    pthread_mutex_lock(&p->mu);
    for (int i = 0; i < nl; i++) {
        kvlist *L = &t->lists[i];
        kvundo *u = &t->undo[i];
        if (rollback && t->txn_trunc) {
            trunc_list(t, i);
        } else if (rollback) {
            if (u->has_saved) { /* back to the array before the first drop */
                for (int j = 0; j < L->n_pages; j++) kvi_page_unref(p, L->pages[j]);
                memcpy(L->pages, u->saved, (size_t)u->n_saved * sizeof *L->pages);
                L->n_pages = u->n_saved;
                L->len = u->saved_len;
                u->has_saved = 0; /* references moved to the list */
            }
            for (int j = u->n_pages; j < L->n_pages; j++) kvi_page_unref(p, L->pages[j]);
            L->n_pages = u->n_pages;
            L->len = u->len;
            L->n_sealed = u->n_sealed;
            if (u->cow.mem) { /* the copy goes, the original comes back */
                kvi_page_unref(p, L->pages[u->n_pages - 1]);
                L->pages[u->n_pages - 1] = u->cow;
            }
        } else {
            if (u->has_saved)
                for (int j = 0; j < u->n_saved; j++) kvi_page_unref(p, u->saved[j]);
            if (u->cow.mem) kvi_page_unref(p, u->cow);
        }
        u->cow = no_page;
        u->has_saved = 0;
    }
    pthread_mutex_unlock(&p->mu);
    if (rollback) {
        int64_t n = 0;
        size_t b = 0;
        for (int i = 0; i < nl; i++) {
            n += t->lists[i].n_pages;
            for (int j = 0; j < t->lists[i].n_pages; j++) b += kvi_pref_bytes(p, t->lists[i].pages[j]);
        }
        t->n_pages = n;
        t->bytes = b;
        int ids[KVL_KV_N_ACC];
        const int na = t->stat_flags ? kvi_stats_on(t, ids) : 0;
        for (int l = 0; l < p->cfg.n_layer && !t->txn_trunc; l++) {
            const int len = t->stat_save_len[l];
            if (len < 0 || !t->stat_flags) continue;
            for (int k = 0; k < na && len > 0; k++)
                for (int qh = 0; qh < t->n_head; qh++)
                    memcpy(t->acc[ids[k]][l * t->n_head + qh], t->stat_save[l] + ((size_t)k * t->n_head + qh) * len,
                           (size_t)len * sizeof(float));
            t->win_n[l] = t->stat_save_win[l];
        }
    }
    t->txn = 0;
    t->txn_trunc = 0;
}

void kvl_kv_txn_commit(kvl_kv_table *t) {
    if (t->txn) txn_end(t, 0);
}

void kvl_kv_txn_rollback(kvl_kv_table *t) {
    if (t->txn) txn_end(t, 1);
}

int kvl_kv_txn_open(const kvl_kv_table *t) { return t->txn; }

void kvi_txn_free(kvl_kv_table *t) {
    if (t->undo)
        for (int i = 0; i < kvi_n_lists(t->pool); i++) free(t->undo[i].saved);
    if (t->stat_save)
        for (int l = 0; l < t->pool->cfg.n_layer; l++) free(t->stat_save[l]);
    free(t->undo);
    free(t->stat_save);
    free(t->stat_save_len);
    free(t->stat_save_cap);
    free(t->stat_save_win);
    t->stat_save_win = NULL;
    t->undo = NULL;
    t->stat_save = NULL;
    t->stat_save_len = t->stat_save_cap = NULL;
}
