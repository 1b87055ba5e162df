/* Sealing: full open pages of a sealing codec (KIVI, SQuat) that have left
 * the residual window are repacked into smaller pages of the layer's sealed
 * size class, and the open pages go back to the pool (kv/codec.h). */
#include "kv/kv_internal.h"

#include <stdlib.h>
#include <string.h>

kvl_status kvl_kv_seal(kvl_kv_table *t, int layer, kvl_err *err) {
    kvl_kv_pool *p = t->pool;
    if (layer < 0 || layer >= p->cfg.n_layer) return kvl_err_set(err, KVL_ERR_ARG, "kv seal: bad layer %d", layer);
    const kvi_layer *ly = &p->layers[layer];
    if (!ly->seals) return KVL_OK;
    const int Hkv = p->cfg.n_head_kv, D = p->D, P = p->P;
    const kvi_class *oc = &p->cls[ly->open_cls], *sc = &p->cls[ly->seal_cls];
    for (int h = 0; h < Hkv; h++) {
        const int li = layer * Hkv + h;
        kvlist *L = &t->lists[li];
        const int upto = L->len / P - ly->res_pages;
        if (upto <= L->n_sealed) continue;
        if (t->txn && !t->txn_trunc && L->n_sealed < t->undo[li].n_pages) { /* a page the transaction began with */
            kvl_status s = kvi_txn_save_list(t, li, err);
            if (s) return s;
        }
        if (!t->seal_tmp) {
            t->seal_tmp = aligned_alloc(64, oc->page_bytes > sc->page_bytes ? oc->page_bytes : sc->page_bytes);
            if (!t->seal_tmp) return kvl_err_set(err, KVL_ERR_NOMEM, "kv seal: out of memory");
        }
        const void *kst = kvi_codec_st(t, layer, h, 0), *vst = kvi_codec_st(t, layer, h, 1);
        for (int pg = L->n_sealed; pg < upto; pg++) {
            const pref o = L->pages[pg];
            int freed = 0;
            pthread_mutex_lock(&p->mu);
            /* over budget with the sealed page on top of the open one: seal
             * from a copy, so the open page's bytes are free first */
            if (p->used_bytes + sc->page_bytes > p->cfg.budget_bytes) {
                if (*kvi_page_ref(p, o.id) > 1) {
                    /* shared (a fork, or saved by an open transaction): no
                     * room for a second copy; the page stays open (valid,
                     * full precision) until a later seal finds room */
                    pthread_mutex_unlock(&p->mu);
                    break;
                }
                memcpy(t->seal_tmp, o.mem, oc->page_bytes);
                kvi_page_unref(p, o);
                freed = 1;
            }
            kvl_status s = kvi_pool_reserve(p, ly->seal_cls, 1, err);
            if (s) {
                if (freed) { /* take the open page back: it is the head of its free list */
                    pref back = kvi_page_take(p, ly->open_cls);
                    memcpy(back.mem, t->seal_tmp, oc->page_bytes);
                    L->pages[pg] = back;
                }
                pthread_mutex_unlock(&p->mu);
                return s;
            }
            const pref n = kvi_page_take(p, ly->seal_cls);
            pthread_mutex_unlock(&p->mu);
            const uint8_t *src = freed ? t->seal_tmp : o.mem;
            memcpy(n.mem, src, (size_t)P * 4);
            if (ly->ck->seal) ly->ck->seal(kst, n.mem + sc->koff, src + oc->koff, D, P);
            else memcpy(n.mem + sc->koff, src + oc->koff, sc->kseg);
            if (ly->cv->seal) ly->cv->seal(vst, n.mem + sc->voff, src + oc->voff, D, P);
            else memcpy(n.mem + sc->voff, src + oc->voff, sc->vseg);
            if (!freed) {
                pthread_mutex_lock(&p->mu);
                kvi_page_unref(p, o);
                pthread_mutex_unlock(&p->mu);
            }
            L->pages[pg] = n;
            L->n_sealed = pg + 1;
            t->bytes = t->bytes - oc->page_bytes + sc->page_bytes;
        }
    }
    kvi_table_note_bytes(t);
    return KVL_OK;
}
