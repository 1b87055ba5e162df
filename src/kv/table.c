/* Per-sequence page tables: one list of page references per (layer,
 * kv-head), fork by copying the lists (pages shared, reference-counted,
 * copy-on-write of the partially filled last page), append of K/V rows
 * through the layer's codecs (rotated first for +rot codecs, open format
 * for sealing codecs), and read-back of positions and rows. */
#include "kv/kv_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void kvi_table_note_bytes(kvl_kv_table *t) {
    if (t->bytes > t->peak) t->peak = t->bytes;
}

static void cst_free(kvl_kv_table *t);

void kvl_kv_table_free(kvl_kv_table *t) {
    if (!t) return;
    kvl_kv_pool *p = t->pool;
    if (t->txn) kvl_kv_txn_rollback(t);
    kvi_policy_free(t);
    if (t->lists) {
        pthread_mutex_lock(&p->mu);
        for (int i = 0; i < kvi_n_lists(p); i++)
            for (int j = 0; j < t->lists[i].n_pages; j++) kvi_page_unref(p, t->lists[i].pages[j]);
        pthread_mutex_unlock(&p->mu);
        for (int i = 0; i < kvi_n_lists(p); i++) free(t->lists[i].pages);
    }
    free(t->lists);
    kvi_stats_free(t);
    kvi_txn_free(t);
    free(t->drop_old);
    free(t->drop_wp);
    free(t->drop_tmp);
    free(t->rot_tmp);
    free(t->seal_tmp);
    cst_free(t);
    free(t);
}

static void cst_free(kvl_kv_table *t) {
    if (!t->cst) return;
    for (int i = 0; i < 2 * t->pool->cfg.n_layer; i++) free(t->cst[i]);
    free(t->cst);
    t->cst = NULL;
}

/* Per-sequence codec state: the pool's state copied in front, the rest zero
 * (or a copy of src's when forking). */
static int cst_init(kvl_kv_table *t, const kvl_kv_table *src) {
    const kvl_kv_pool *p = t->pool;
    if (!p->has_seq_state) return 0;
    t->cst = calloc((size_t)2 * p->cfg.n_layer, sizeof *t->cst);
    if (!t->cst) return -1;
    for (int l = 0; l < p->cfg.n_layer; l++)
        for (int side = 0; side < 2; side++) {
            const kvi_layer *ly = &p->layers[l];
            const size_t sb = side ? ly->vseq_bytes : ly->kseq_bytes, pb = side ? ly->vst_bytes : ly->kst_bytes;
            const uint8_t *ps = side ? ly->vst : ly->kst;
            if (!sb) continue;
            uint8_t *a = calloc((size_t)p->cfg.n_head_kv, sb);
            if (!a) return -1;
            t->cst[l * 2 + side] = a;
            if (src) memcpy(a, src->cst[l * 2 + side], (size_t)p->cfg.n_head_kv * sb);
            else if (ps)
                for (int h = 0; h < p->cfg.n_head_kv; h++) memcpy(a + (size_t)h * sb, ps + (size_t)h * pb, pb);
        }
    return 0;
}

static kvl_kv_table *table_alloc(kvl_kv_pool *p, const kvl_kv_table *src) {
    kvl_kv_table *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->pool = p;
    t->n_head = p->cfg.n_head > 0 ? p->cfg.n_head : p->cfg.n_head_kv;
    t->group = t->n_head / p->cfg.n_head_kv;
    t->lists = calloc((size_t)kvi_n_lists(p), sizeof *t->lists);
    if (!t->lists || cst_init(t, src)) {
        cst_free(t);
        free(t->lists);
        free(t);
        return NULL;
    }
    return t;
}

kvl_status kvl_kv_table_create(kvl_kv_pool *p, kvl_kv_table **out, kvl_err *err) {
    *out = NULL;
    kvl_kv_table *t = table_alloc(p, NULL);
    if (!t) return kvl_err_set(err, KVL_ERR_NOMEM, "kv table: out of memory");
    kvl_status s = kvi_policy_init(t, NULL, err);
    if (s != KVL_OK) {
        kvl_kv_table_free(t);
        return s;
    }
    *out = t;
    return KVL_OK;
}

kvl_status kvl_kv_table_fork(const kvl_kv_table *t, kvl_kv_table **out, kvl_err *err) {
    *out = NULL;
    kvl_kv_pool *p = t->pool;
    kvl_kv_table *c = table_alloc(p, t);
    if (!c) return kvl_err_set(err, KVL_ERR_NOMEM, "kv fork: out of memory");
    for (int i = 0; i < kvi_n_lists(p); i++) {
        const kvlist *s = &t->lists[i];
        kvlist *d = &c->lists[i];
        if (s->n_pages) {
            d->pages = malloc((size_t)s->n_pages * sizeof *d->pages);
            if (!d->pages) {
                kvl_kv_table_free(c);
                return kvl_err_set(err, KVL_ERR_NOMEM, "kv fork: out of memory");
            }
            memcpy(d->pages, s->pages, (size_t)s->n_pages * sizeof *d->pages);
        }
        d->cap_pages = s->n_pages;
        d->len = s->len;
    }
    /* take references only once every array exists (free() then drops them) */
    pthread_mutex_lock(&p->mu);
    for (int i = 0; i < kvi_n_lists(p); i++) {
        c->lists[i].n_pages = c->lists[i].cap_pages;
        for (int j = 0; j < c->lists[i].n_pages; j++) (*kvi_page_ref(p, c->lists[i].pages[j].id))++;
    }
    pthread_mutex_unlock(&p->mu);
    c->n_pages = t->n_pages;
    c->bytes = t->bytes;
    for (int i = 0; i < kvi_n_lists(p); i++) c->lists[i].n_sealed = t->lists[i].n_sealed;
    kvi_table_note_bytes(c);
    if (t->stat_flags) {
        kvl_kv_table_stats_params(c, t->stat_window, t->vote_a, t->vote_b);
        kvl_status s = kvl_kv_table_stats_enable(c, t->stat_flags, err);
        if (s != KVL_OK) {
            kvl_kv_table_free(c);
            return s;
        }
        for (int l = 0; l < p->cfg.n_layer; l++) {
            int len = 0;
            for (int h = 0; h < p->cfg.n_head_kv; h++)
                if (kvi_list(t, l, h)->len > len) len = kvi_list(t, l, h)->len;
            if (kvi_stats_reserve(c, l, len > 0 ? len : 1) != KVL_OK) {
                kvl_kv_table_free(c);
                return kvl_err_set(err, KVL_ERR_NOMEM, "kv fork: out of memory");
            }
            for (int a = 0; a < KVL_KV_N_ACC; a++)
                if (t->acc[a])
                    for (int qh = 0; qh < t->n_head; qh++)
                        memcpy(c->acc[a][l * t->n_head + qh], t->acc[a][l * t->n_head + qh], (size_t)len * sizeof(float));
            c->win_n[l] = t->win_n[l];
        }
    }
    kvl_status s = kvi_policy_init(c, t, err);
    if (s != KVL_OK) {
        kvl_kv_table_free(c);
        return s;
    }
    *out = c;
    return KVL_OK;
}

int kvl_kv_table_len(const kvl_kv_table *t, int layer, int head) { return kvi_list(t, layer, head)->len; }
size_t kvl_kv_table_bytes(const kvl_kv_table *t) { return t->bytes; }

size_t kvl_kv_table_layer_bytes(const kvl_kv_table *t, int layer) {
    const kvl_kv_pool *p = t->pool;
    if (layer < 0 || layer >= p->cfg.n_layer) return 0;
    size_t b = 0;
    for (int h = 0; h < p->cfg.n_head_kv; h++) {
        const kvlist *L = kvi_list(t, layer, h);
        for (int j = 0; j < L->n_pages; j++) b += kvi_pref_bytes(p, L->pages[j]);
    }
    return b;
}

size_t kvl_kv_table_codec_bytes(const kvl_kv_table *t) {
    const kvl_kv_pool *p = t->pool;
    size_t b = 0;
    for (int i = 0; i < kvi_n_lists(p); i++) {
        const kvlist *L = &t->lists[i];
        for (int j = 0; j < L->n_pages; j++) {
            const kvi_class *c = kvi_cls(p, L->pages[j].id);
            b += c->kseg + c->vseg;
        }
    }
    return b;
}

void kvl_kv_observe(kvl_kv_table *t, int layer, int n_tok, const float *q, int n_head) {
    const kvl_kv_pool *p = t->pool;
    if (!t->cst || layer < 0 || layer >= p->cfg.n_layer) return;
    const kvi_layer *ly = &p->layers[layer];
    const int Hkv = p->cfg.n_head_kv, G = n_head / Hkv, D = p->D;
    for (int side = 0; side < 2; side++) {
        const kvl_codec *c = side ? ly->cv : ly->ck;
        if (!c->observe || !t->cst[layer * 2 + side]) continue;
        for (int h = 0; h < Hkv; h++)
            c->observe((void *)kvi_codec_st(t, layer, h, side), q + (size_t)h * G * D, n_tok, G, D,
                       (size_t)n_head * D);
    }
}

void kvl_kv_table_layer_codec_bytes(const kvl_kv_table *t, int layer, size_t *k, size_t *v) {
    const kvl_kv_pool *p = t->pool;
    *k = *v = 0;
    if (layer < 0 || layer >= p->cfg.n_layer) return;
    for (int h = 0; h < p->cfg.n_head_kv; h++) {
        const kvlist *L = kvi_list(t, layer, h);
        for (int j = 0; j < L->n_pages; j++) {
            const kvi_class *c = kvi_cls(p, L->pages[j].id);
            *k += c->kseg;
            *v += c->vseg;
        }
    }
}

int kvl_kv_table_n_sealed(const kvl_kv_table *t, int layer, int head) {
    const kvl_kv_pool *p = t->pool;
    if (layer < 0 || layer >= p->cfg.n_layer || head < 0 || head >= p->cfg.n_head_kv) return 0;
    return kvi_list(t, layer, head)->n_sealed;
}
size_t kvl_kv_table_peak_bytes(const kvl_kv_table *t) { return t->peak; }
int kvl_kv_table_n_pages(const kvl_kv_table *t) { return (int)t->n_pages; }
kvl_kv_pool *kvl_kv_table_pool(const kvl_kv_table *t) { return t->pool; }

/* Pages (list) needs to take n more tokens, copy-on-write included. Locked. */
static int list_need(kvl_kv_pool *p, const kvlist *L, int n) {
    const int r = L->len % p->P;
    int need = 0, room = 0;
    if (r) {
        room = p->P - r;
        if (*kvi_page_ref(p, L->pages[L->n_pages - 1].id) > 1) need++;
    }
    if (n > room) need += kvi_ceil_div(n - room, p->P);
    return need;
}

static kvl_status list_reserve(kvlist *L, int n_pages) {
    if (n_pages <= L->cap_pages) return KVL_OK;
    int cap = L->cap_pages ? L->cap_pages : 4;
    while (cap < n_pages) cap *= 2;
    pref *a = realloc(L->pages, (size_t)cap * sizeof *a);
    if (!a) return KVL_ERR_NOMEM;
    L->pages = a;
    L->cap_pages = cap;
    return KVL_OK;
}

size_t kvl_kv_append_need(const kvl_kv_table *t, int n_tok) {
    kvl_kv_pool *p = t->pool;
    size_t need = 0;
    pthread_mutex_lock(&p->mu);
    for (int i = 0; i < kvi_n_lists(p); i++) {
        const size_t pb = p->cls[p->layers[i / p->cfg.n_head_kv].open_cls].page_bytes;
        need += (size_t)list_need(p, &t->lists[i], n_tok) * pb;
    }
    pthread_mutex_unlock(&p->mu);
    return need;
}

kvl_status kvl_kv_append(kvl_kv_table *t, int layer, int n_tok, const int32_t *pos, const float *k,
                         const float *v, kvl_err *err) {
    kvl_kv_pool *p = t->pool;
    const int Hkv = p->cfg.n_head_kv, D = p->D, P = p->P;
    if (layer < 0 || layer >= p->cfg.n_layer || n_tok < 0)
        return kvl_err_set(err, KVL_ERR_ARG, "kv append: bad layer %d or n_tok %d", layer, n_tok);
    if (n_tok == 0) return KVL_OK;
    const kvi_layer *ly = &p->layers[layer];
    const int cls = ly->open_cls;
    const kvi_class *oc = &p->cls[cls];
    /* row formats of open pages: a sealing codec's open format, else the codec */
    const kvl_codec *fk = oc->fk, *fv = oc->fv;
    const int kenc = fk == ly->ck, venc = fv == ly->cv; /* the codec itself encodes (per-token) */
    if ((ly->rot_k || ly->rot_v) && !t->rot_tmp) {
        t->rot_tmp = malloc(2 * (size_t)D * sizeof(float));
        if (!t->rot_tmp) return kvl_err_set(err, KVL_ERR_NOMEM, "kv append: out of memory");
    }
    int maxlen = 0;
    for (int h = 0; h < Hkv; h++) {
        kvlist *L = kvi_list(t, layer, h);
        if (L->len > INT32_MAX - n_tok) return kvl_err_set(err, KVL_ERR_ARG, "kv append: too many tokens");
        if (list_reserve(L, kvi_ceil_div(L->len + n_tok, P)) != KVL_OK)
            return kvl_err_set(err, KVL_ERR_NOMEM, "kv append: out of memory for a page list");
        if (L->len + n_tok > maxlen) maxlen = L->len + n_tok;
    }
    if (kvi_stats_reserve(t, layer, maxlen) != KVL_OK)
        return kvl_err_set(err, KVL_ERR_NOMEM, "kv append: out of memory for attention statistics");
    kvl_status s = kvi_txn_save_stats(t, layer, err);
    if (s != KVL_OK) return s;

    pthread_mutex_lock(&p->mu);
    int64_t need = 0;
    for (int h = 0; h < Hkv; h++) need += list_need(p, kvi_list(t, layer, h), n_tok);
    s = kvi_pool_reserve(p, cls, need, err);
    if (s != KVL_OK) {
        pthread_mutex_unlock(&p->mu);
        return s;
    }
    for (int h = 0; h < Hkv; h++) {
        kvlist *L = kvi_list(t, layer, h);
        if (L->len % P && *kvi_page_ref(p, L->pages[L->n_pages - 1].id) > 1) { /* copy-on-write */
            pref old = L->pages[L->n_pages - 1], nw = kvi_page_take(p, cls);
            memcpy(nw.mem, old.mem, oc->page_bytes);
            if (!kvi_txn_keep_cow(t, layer * Hkv + h, old)) kvi_page_unref(p, old);
            L->pages[L->n_pages - 1] = nw;
        }
        const void *ks = kenc ? kvi_codec_st(t, layer, h, 0) : NULL, *vs = venc ? kvi_codec_st(t, layer, h, 1) : NULL;
        for (int j = 0; j < n_tok; j++) {
            const int r = L->len % P;
            if (r == 0) {
                L->pages[L->n_pages++] = kvi_page_take(p, cls);
                t->n_pages++;
                t->bytes += oc->page_bytes;
            }
            uint8_t *mem = L->pages[L->n_pages - 1].mem;
            memcpy(mem + (size_t)r * 4, &pos[j], 4);
            const float *kr = k + ((size_t)j * Hkv + h) * D, *vr = v + ((size_t)j * Hkv + h) * D;
            if (ly->rot_k) {
                memcpy(t->rot_tmp, kr, (size_t)D * sizeof(float));
                kvi_rot(p, t->rot_tmp);
                kr = t->rot_tmp;
            }
            if (ly->rot_v) {
                memcpy(t->rot_tmp + D, vr, (size_t)D * sizeof(float));
                kvi_rot(p, t->rot_tmp + D);
                vr = t->rot_tmp + D;
            }
            fk->encode(ks, mem + oc->koff, D, P, r, kr);
            fv->encode(vs, mem + oc->voff, D, P, r, vr);
            L->len++;
        }
    }
    pthread_mutex_unlock(&p->mu);
    for (int h = 0; h < Hkv; h++) {
        const int len = kvi_list(t, layer, h)->len;
        kvi_stats_zero(t, layer, h, len - n_tok, len);
    }
    kvi_table_note_bytes(t);
    return KVL_OK;
}

int kvl_kv_table_positions(const kvl_kv_table *t, int layer, int head, int32_t *out, int cap) {
    const kvlist *L = kvi_list(t, layer, head);
    const int P = t->pool->P;
    for (int i = 0; i < L->len && i < cap; i++) memcpy(&out[i], L->pages[i / P].mem + (size_t)(i % P) * 4, 4);
    return L->len;
}

kvl_status kvl_kv_table_decode(const kvl_kv_table *t, int layer, int head, int i, float *k, float *v) {
    const kvl_kv_pool *p = t->pool;
    if (layer < 0 || layer >= p->cfg.n_layer || head < 0 || head >= p->cfg.n_head_kv) return KVL_ERR_ARG;
    const kvlist *L = kvi_list(t, layer, head);
    if (i < 0 || i >= L->len) return KVL_ERR_ARG;
    const pref pg = L->pages[i / p->P];
    const kvi_class *c = kvi_cls(p, pg.id);
    const kvi_layer *ly = &p->layers[layer];
    if (k) {
        c->fk->decode(pg.mem + c->koff, p->D, p->P, i % p->P, k);
        if (ly->rot_k) kvi_unrot(p, k);
    }
    if (v) {
        c->fv->decode(pg.mem + c->voff, p->D, p->P, i % p->P, v);
        if (ly->rot_v) kvi_unrot(p, v);
    }
    return KVL_OK;
}
