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
 *  - attention mass of a layer is copied at the layer's first change. */
#include "kv/kv_internal.h"

#include <stdlib.h>
#include <string.h>

static const pref no_page = {NULL, NO_PAGE};

kvl_status kvl_kv_txn_begin(kvl_kv_table *t, kvl_err *err) {
    kvl_kv_pool *p = t->pool;
    if (t->txn) return kvl_err_set(err, KVL_ERR_ARG, "kv txn: a transaction is already open");
    const int nl = kvi_n_lists(p);
    if (!t->undo) {
        t->undo = calloc((size_t)nl, sizeof *t->undo);
        t->stat_save = calloc((size_t)p->cfg.n_layer, sizeof *t->stat_save);
        t->stat_save_len = calloc((size_t)p->cfg.n_layer, sizeof *t->stat_save_len);
        t->stat_save_cap = calloc((size_t)p->cfg.n_layer, sizeof *t->stat_save_cap);
        if (!t->undo || !t->stat_save || !t->stat_save_len || !t->stat_save_cap) {
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
    }
    for (int l = 0; l < p->cfg.n_layer; l++) t->stat_save_len[l] = -1;
    t->txn = 1;
    return KVL_OK;
}

int kvi_txn_keep_cow(kvl_kv_table *t, int i, pref old) {
    kvundo *u = t->txn ? &t->undo[i] : NULL;
    if (!u || !u->orig_last.mem || u->cow.mem || old.id != u->orig_last.id) return 0;
    u->cow = old;
    return 1;
}

kvl_status kvi_txn_save_list(kvl_kv_table *t, int i, kvl_err *err) {
    if (!t->txn || t->undo[i].has_saved) return KVL_OK;
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
    if (!t->txn || !t->stat_flags || t->stat_save_len[layer] >= 0) return KVL_OK;
    const kvl_kv_pool *p = t->pool;
    int len = 0;
    for (int h = 0; h < p->cfg.n_head_kv; h++)
        if (kvi_list(t, layer, h)->len > len) len = kvi_list(t, layer, h)->len;
    const size_t need = (size_t)len * (size_t)t->n_head;
    if (need > (size_t)t->stat_save_cap[layer]) {
        size_t cap = t->stat_save_cap[layer] ? (size_t)t->stat_save_cap[layer] : 256;
        while (cap < need) cap *= 2;
        if (cap > INT32_MAX) return kvl_err_set(err, KVL_ERR_NOMEM, "kv txn: statistics too large to save");
        float *a = realloc(t->stat_save[layer], cap * sizeof *a);
        if (!a) return kvl_err_set(err, KVL_ERR_NOMEM, "kv txn: out of memory saving attention statistics");
        t->stat_save[layer] = a;
        t->stat_save_cap[layer] = (int)cap;
    }
    for (int qh = 0; qh < t->n_head && len > 0; qh++)
        memcpy(t->stat_save[layer] + (size_t)qh * len, t->stat[layer * t->n_head + qh], (size_t)len * sizeof(float));
    t->stat_save_len[layer] = len;
    return KVL_OK;
}

/* Release what the undo records hold (commit) or put it back (rollback). */
static void txn_end(kvl_kv_table *t, int rollback) {
    kvl_kv_pool *p = t->pool;
    const int nl = kvi_n_lists(p);
    pthread_mutex_lock(&p->mu);
    for (int i = 0; i < nl; i++) {
        kvlist *L = &t->lists[i];
        kvundo *u = &t->undo[i];
        if (rollback) {
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
        for (int l = 0; l < p->cfg.n_layer; l++) {
            const int len = t->stat_save_len[l];
            if (len <= 0 || !t->stat_flags) continue;
            for (int qh = 0; qh < t->n_head; qh++)
                memcpy(t->stat[l * t->n_head + qh], t->stat_save[l] + (size_t)qh * len, (size_t)len * sizeof(float));
        }
    }
    t->txn = 0;
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
    t->undo = NULL;
    t->stat_save = NULL;
    t->stat_save_len = t->stat_save_cap = NULL;
}
