/* KV page pool: codec instances per layer (parsed from specs, with their
 * state), page size classes (open and sealed formats), and per class lazily
 * carved ~2 MiB chunks, an intrusive free list and per-page reference
 * counts; one byte budget over all classes, all under the pool mutex. */
#include "kv/kv_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv/codec_spec.h"

#define CHUNK_TOKENS 512 /* default attention chunk (see kvl_kv_attn) */

/* Class with these row formats, added if new; -1 when there are too many. */
static int class_of(kvl_kv_pool *p, const kvl_codec *fk, const kvl_codec *fv, int sealed) {
    for (int i = 0; i < p->n_cls; i++)
        if (p->cls[i].fk == fk && p->cls[i].fv == fv && p->cls[i].sealed == sealed) return i;
    if (p->n_cls == KVI_MAX_CLASSES) return -1;
    kvi_class *c = &p->cls[p->n_cls];
    memset(c, 0, sizeof *c);
    c->fk = fk;
    c->fv = fv;
    c->sealed = sealed;
    {
        const int fk_float = !strcmp(fk->name, "f16") || !strcmp(fk->name, "f32");
        const int fv_float = !strcmp(fv->name, "f16") || !strcmp(fv->name, "f32");
        c->multi_decode = !(fk_float && fv_float);
    }
    c->kk = kvl_codec_kernels_get(fk, p->D, p->cfg.scalar_only);
    c->kvk = kvl_codec_kernels_get(fv, p->D, p->cfg.scalar_only);
    c->kseg = fk->seg_bytes(p->D, p->P);
    c->vseg = fv->seg_bytes(p->D, p->P);
    c->koff = kvi_align64((size_t)p->P * 4);
    c->voff = c->koff + kvi_align64(c->kseg);
    c->page_bytes = c->voff + kvi_align64(c->vseg);
    c->chunk_shift = 0; /* chunks of ~2 MiB (a power of two pages, at least one) */
    while (((size_t)2 << c->chunk_shift) * c->page_bytes <= ((size_t)2 << 20) && c->chunk_shift < 20) c->chunk_shift++;
    c->chunk_mask = (1u << c->chunk_shift) - 1;
    c->free_head = NO_PAGE;
    if (c->page_bytes > p->max_page_bytes) p->max_page_bytes = c->page_bytes;
    return p->n_cls++;
}

static void layers_free(kvl_kv_pool *p) {
    if (!p->layers) return;
    for (int l = 0; l < p->cfg.n_layer; l++) {
        free(p->layers[l].kst);
        free(p->layers[l].vst);
    }
    free(p->layers);
    p->layers = NULL;
}

/* State of one side of layer l for every kv-head. */
static kvl_status side_state(kvl_kv_pool *p, int l, int is_v, const kvl_codec_spec *s, uint8_t **st, size_t *sb,
                             kvl_err *err) {
    const kvl_codec *c = s->c;
    *st = NULL;
    *sb = c->state_bytes ? c->state_bytes(p->D) : 0;
    if (!*sb) return KVL_OK;
    if (!c->state_init) return kvl_err_set(err, KVL_ERR_INTERNAL, "KV codec %s: state without state_init", c->name);
    *st = calloc((size_t)p->cfg.n_head_kv, *sb);
    if (!*st) return kvl_err_set(err, KVL_ERR_NOMEM, "kv pool: out of memory for codec state");
    kvl_codec_params prm = s->prm;
    prm.model_path = p->cfg.model_path;
    for (int h = 0; h < p->cfg.n_head_kv; h++) {
        kvl_status r = c->state_init(&prm, l, h, is_v, p->D, *st + (size_t)h * *sb, err);
        if (r) return r;
    }
    return KVL_OK;
}

/* Parse the specs and set up layers, classes and codec state. */
static kvl_status setup_layers(kvl_kv_pool *p, kvl_err *err) {
    const kvl_kv_config *cfg = &p->cfg;
    const int nl = cfg->n_layer, D = p->D, P = p->P;
    kvl_codec_spec *ks = calloc((size_t)nl, sizeof *ks), *vs = calloc((size_t)nl, sizeof *vs);
    p->layers = calloc((size_t)nl, sizeof *p->layers);
    kvl_status st = KVL_OK;
    if (!ks || !vs || !p->layers) {
        st = kvl_err_set(err, KVL_ERR_NOMEM, "kv pool: out of memory");
        goto out;
    }
    const char *kname = cfg->k_spec ? cfg->k_spec : cfg->codec ? cfg->codec->name : NULL;
    const char *vname = cfg->v_spec ? cfg->v_spec : cfg->k_spec ? cfg->k_spec : cfg->codec_v ? cfg->codec_v->name : kname;
    kvl_codec_spec k0, v0;
    /* a codec given by pointer (tests) is taken as it is; a spec string is parsed */
    if (!cfg->k_spec && cfg->codec) {
        memset(&k0, 0, sizeof k0);
        k0.c = cfg->codec;
    } else if ((st = kvl_codec_spec_parse(kname, 0, &k0, err)))
        goto out;
    if (!cfg->v_spec && !cfg->k_spec && (cfg->codec_v || cfg->codec)) {
        memset(&v0, 0, sizeof v0);
        v0.c = cfg->codec_v ? cfg->codec_v : (cfg->codec->as_v ? cfg->codec->as_v : cfg->codec);
    } else if ((st = kvl_codec_spec_parse(vname, 1, &v0, err)))
        goto out;
    for (int l = 0; l < nl; l++) ks[l] = k0, vs[l] = v0;
    if ((st = kvl_codec_layers_apply(cfg->layer_spec, nl, ks, vs, err))) goto out;
    kvl_codec_spec_str(&k0, p->spec_k, sizeof p->spec_k);
    kvl_codec_spec_str(&v0, p->spec_v, sizeof p->spec_v);
    int any_rot = 0;
    for (int l = 0; l < nl; l++) {
        kvi_layer *L = &p->layers[l];
        const kvl_codec_spec *sides[2] = {&ks[l], &vs[l]};
        for (int s = 0; s < 2; s++) {
            const kvl_codec *c = sides[s]->c;
            if (c->seal && (!c->open || !c->open->encode || c->open->seal)) {
                st = kvl_err_set(err, KVL_ERR_INTERNAL, "KV codec %s: open format must be a per-token codec", c->name);
                goto out;
            }
            if (!c->seal && !c->encode) {
                st = kvl_err_set(err, KVL_ERR_INTERNAL, "KV codec %s: neither encode nor seal", c->name);
                goto out;
            }
            const int r = sides[s]->residual ? sides[s]->residual : P;
            if (c->seal && r % P) {
                st = kvl_err_set(err, KVL_ERR_ARG, "KV codec %s: r=%d must be a multiple of the page size %d", c->name,
                                 r, P);
                goto out;
            }
            if (c->seal && r / P - 1 > L->res_pages) L->res_pages = r / P - 1;
            if (sides[s]->prm.rot && (D & (D - 1))) {
                st = kvl_err_set(err, KVL_ERR_ARG, "KV codec %s+rot: head_dim %d is not a power of two", c->name, D);
                goto out;
            }
        }
        L->ck = ks[l].c;
        L->cv = vs[l].c;
        kvl_codec_spec_str(&ks[l], L->spec[0], sizeof L->spec[0]);
        kvl_codec_spec_str(&vs[l], L->spec[1], sizeof L->spec[1]);
        L->rot_k = ks[l].prm.rot;
        L->rot_v = vs[l].prm.rot;
        any_rot |= L->rot_k | L->rot_v;
        L->seals = L->ck->seal || L->cv->seal;
        const kvl_codec *ok = L->ck->seal ? L->ck->open : L->ck, *ov = L->cv->seal ? L->cv->open : L->cv;
        L->open_cls = class_of(p, ok, ov, 0);
        L->seal_cls = L->seals ? class_of(p, L->ck, L->cv, 1) : L->open_cls;
        if (L->open_cls < 0 || L->seal_cls < 0) {
            st = kvl_err_set(err, KVL_ERR_ARG, "kv pool: too many distinct per-layer codec combinations (max %d page classes)",
                             KVI_MAX_CLASSES);
            goto out;
        }
        if ((st = side_state(p, l, 0, &ks[l], &L->kst, &L->kst_bytes, err))) goto out;
        if ((st = side_state(p, l, 1, &vs[l], &L->vst, &L->vst_bytes, err))) goto out;
        L->kseq_bytes = L->ck->seq_state_bytes ? L->ck->seq_state_bytes(D) : 0;
        L->vseq_bytes = L->cv->seq_state_bytes ? L->cv->seq_state_bytes(D) : 0;
        if ((L->kseq_bytes && L->kseq_bytes < L->kst_bytes) || (L->vseq_bytes && L->vseq_bytes < L->vst_bytes)) {
            st = kvl_err_set(err, KVL_ERR_INTERNAL, "KV codec state: sequence state smaller than pool state");
            goto out;
        }
        p->has_seq_state |= L->kseq_bytes || L->vseq_bytes;
    }
    if (any_rot) {
        p->rot_sign = malloc((size_t)D * sizeof(float));
        if (!p->rot_sign) {
            st = kvl_err_set(err, KVL_ERR_NOMEM, "kv pool: out of memory");
            goto out;
        }
        uint64_t x = 0x6b76726f74ull; /* fixed: pages are meaningful only with the same signs */
        for (int j = 0; j < D; j++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            p->rot_sign[j] = (x >> 40) & 1 ? -1.0f : 1.0f;
        }
    }
    p->ck = p->layers[0].ck;
    p->cv = p->layers[0].cv;
out:
    free(ks);
    free(vs);
    return st;
}

kvl_status kvl_kv_pool_create(const kvl_kv_config *cfg, kvl_kv_pool **out, kvl_err *err) {
    *out = NULL;
    if (!cfg || cfg->n_layer <= 0 || cfg->n_head_kv <= 0 || cfg->head_dim <= 0 || cfg->page_tokens <= 0 ||
        (!cfg->codec && !cfg->k_spec))
        return kvl_err_set(err, KVL_ERR_ARG, "kv pool: invalid config");
    if (cfg->n_head < 0 || (cfg->n_head > 0 && cfg->n_head % cfg->n_head_kv != 0))
        return kvl_err_set(err, KVL_ERR_ARG, "kv pool: n_head %d not a multiple of n_head_kv %d",
                           cfg->n_head, cfg->n_head_kv);
    kvl_policy_cfg pol;
    kvl_status ps = kvl_policy_parse(cfg->policy, &pol, err);
    if (ps) return ps;
    if (cfg->policy_keep < 0 || !(cfg->policy_keep_frac >= 0 && cfg->policy_keep_frac <= 1))
        return kvl_err_set(err, KVL_ERR_ARG, "kv pool: keep must be >= 0 tokens or a fraction in [0, 1]");
    if (cfg->n_layer > 256 && pol.ops->weights)
        return kvl_err_set(err, KVL_ERR_UNSUPPORTED, "kv policy %s: at most 256 layers", pol.ops->name);
    pol.keep = cfg->policy_keep;
    pol.keep_frac = cfg->policy_keep_frac;
    kvl_kv_pool *p = calloc(1, sizeof *p);
    if (!p) return kvl_err_set(err, KVL_ERR_NOMEM, "kv pool: out of memory");
    p->cfg = *cfg;
    p->pol = pol;
    p->cfg.policy = p->pol.spec; /* the caller's string need not outlive the pool */
    p->D = cfg->head_dim;
    p->P = cfg->page_tokens;
    {
        const int ct = cfg->attn_chunk_tokens > 0 ? cfg->attn_chunk_tokens : CHUNK_TOKENS;
        p->attn_cp = ct > p->P ? ct / p->P : 1;
    }
    p->expsum = cfg->scalar_only ? NULL : kvl_kv_expsum_avx2();
    if (!p->expsum) p->expsum = kvl_kv_expsum_ref;
    kvl_status st = setup_layers(p, err);
    if (st) {
        layers_free(p);
        free(p->rot_sign);
        free(p);
        return st;
    }
    /* the strings are not kept: the caller's may not outlive the pool */
    p->cfg.k_spec = p->cfg.v_spec = p->cfg.layer_spec = p->cfg.model_path = NULL;
    p->cfg.codec = p->ck;
    p->cfg.codec_v = p->cv;
    if (pthread_mutex_init(&p->mu, NULL) != 0) {
        layers_free(p);
        free(p->rot_sign);
        free(p);
        return kvl_err_set(err, KVL_ERR_INTERNAL, "kv pool: mutex init failed");
    }
    *out = p;
    return KVL_OK;
}

void kvl_kv_pool_free(kvl_kv_pool *p) {
    if (!p) return;
    for (int c = 0; c < p->n_cls; c++) {
        for (int i = 0; i < p->cls[c].n_chunks; i++) {
            free(p->cls[c].chunks[i]);
            free(p->cls[c].refs[i]);
        }
        free(p->cls[c].chunks);
        free(p->cls[c].refs);
    }
    layers_free(p);
    free(p->rot_sign);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

size_t kvl_kv_pool_used(const kvl_kv_pool *p) {
    kvl_kv_pool *m = (kvl_kv_pool *)p;
    pthread_mutex_lock(&m->mu);
    size_t r = p->used_bytes;
    pthread_mutex_unlock(&m->mu);
    return r;
}
size_t kvl_kv_pool_held(const kvl_kv_pool *p) {
    kvl_kv_pool *m = (kvl_kv_pool *)p;
    pthread_mutex_lock(&m->mu);
    size_t r = p->held_bytes;
    pthread_mutex_unlock(&m->mu);
    return r;
}
int64_t kvl_kv_pool_pages_used(const kvl_kv_pool *p) {
    kvl_kv_pool *m = (kvl_kv_pool *)p;
    pthread_mutex_lock(&m->mu);
    int64_t n = 0;
    for (int c = 0; c < p->n_cls; c++) n += p->cls[c].n_used;
    pthread_mutex_unlock(&m->mu);
    return n;
}
size_t kvl_kv_pool_budget(const kvl_kv_pool *p) { return p->cfg.budget_bytes; }
size_t kvl_kv_page_bytes(const kvl_kv_pool *p) { return p->max_page_bytes; }
const kvl_kv_config *kvl_kv_pool_config(const kvl_kv_pool *p) { return &p->cfg; }
const char *kvl_kv_pool_isa(const kvl_kv_pool *p) { return p->cls[p->layers[0].seal_cls].kk.isa; }
int kvl_kv_pool_n_classes(const kvl_kv_pool *p) { return p->n_cls; }
size_t kvl_kv_pool_class_bytes(const kvl_kv_pool *p, int c) {
    return c >= 0 && c < p->n_cls ? p->cls[c].page_bytes : 0;
}
const kvl_codec *kvl_kv_pool_codec(const kvl_kv_pool *p, int layer, int is_v) {
    if (layer < 0 || layer >= p->cfg.n_layer) return NULL;
    return is_v ? p->layers[layer].cv : p->layers[layer].ck;
}
const char *kvl_kv_pool_spec(const kvl_kv_pool *p, int is_v) { return is_v ? p->spec_v : p->spec_k; }
const char *kvl_kv_pool_layer_spec(const kvl_kv_pool *p, int layer, int is_v) {
    if (layer < 0 || layer >= p->cfg.n_layer) return NULL;
    return p->layers[layer].spec[is_v != 0];
}

double kvl_kv_bytes_per_token(const kvl_kv_pool *p) {
    double b = 0;
    for (int l = 0; l < p->cfg.n_layer; l++)
        b += (kvl_codec_bytes_per_token(p->layers[l].ck, p->D, p->P) +
              kvl_codec_bytes_per_token(p->layers[l].cv, p->D, p->P)) *
             p->cfg.n_head_kv;
    return b;
}

/* Make sure `need` pages of class cls can be taken. Locked. */
kvl_status kvi_pool_reserve(kvl_kv_pool *p, int cls, int64_t need, kvl_err *err) {
    if (p->fail_at > 0 && need > 0 && p->n_taken + need >= p->fail_at) {
        p->fail_at = 0;
        return kvl_err_set(err, KVL_ERR_NOMEM, "KV pool: injected failure at page allocation %lld",
                           (long long)(p->n_taken + 1));
    }
    kvi_class *c = &p->cls[cls];
    if (need <= 0) return KVL_OK;
    const size_t budget = p->cfg.budget_bytes;
    if (p->used_bytes > budget || (uint64_t)need > (budget - p->used_bytes) / c->page_bytes)
        return kvl_err_set(err, KVL_ERR_NOMEM,
                           "KV budget exceeded: need %lld pages of %zu bytes (budget %zu bytes, %zu used)",
                           (long long)need, c->page_bytes, budget, p->used_bytes);
    while (c->n_free < need) {
        if (c->n_chunks == c->cap_chunks) {
            int nc = c->cap_chunks ? 2 * c->cap_chunks : 16;
            uint8_t **ch = realloc(c->chunks, (size_t)nc * sizeof *ch);
            if (!ch) return kvl_err_set(err, KVL_ERR_NOMEM, "kv pool: out of memory");
            c->chunks = ch;
            uint32_t **r = realloc(c->refs, (size_t)nc * sizeof *r);
            if (!r) return kvl_err_set(err, KVL_ERR_NOMEM, "kv pool: out of memory");
            c->refs = r;
            c->cap_chunks = nc;
        }
        /* a whole chunk when the budget has room for it, else what is needed */
        int64_t cp = (int64_t)1 << c->chunk_shift;
        const size_t room = p->held_bytes < budget ? (budget - p->held_bytes) / c->page_bytes : 0;
        if ((size_t)cp > room) cp = (int64_t)room;
        if (cp < need - c->n_free) cp = need - c->n_free;
        if (cp > ((int64_t)1 << c->chunk_shift)) cp = (int64_t)1 << c->chunk_shift;
        if (c->n_carved + cp > (int64_t)KVI_IDX_MASK)
            return kvl_err_set(err, KVL_ERR_NOMEM, "kv pool: page id space of a size class exhausted");
        uint8_t *mem = aligned_alloc(64, (size_t)cp * c->page_bytes);
        uint32_t *refs = calloc((size_t)1 << c->chunk_shift, sizeof *refs);
        if (!mem || !refs) {
            free(mem);
            free(refs);
            return kvl_err_set(err, KVL_ERR_NOMEM, "kv pool: out of memory growing the pool");
        }
        /* ids of a chunk are contiguous: a short chunk still occupies a full id range */
        const uint32_t base = ((uint32_t)cls << KVI_CLS_SHIFT) | ((uint32_t)c->n_chunks << c->chunk_shift);
        c->chunks[c->n_chunks] = mem;
        c->refs[c->n_chunks] = refs;
        c->n_chunks++;
        for (int64_t i = cp - 1; i >= 0; i--) { /* push so lower ids come out first */
            uint32_t id = base + (uint32_t)i;
            memcpy(kvi_page_mem(p, id), &c->free_head, 4);
            c->free_head = id;
        }
        c->n_carved = (int64_t)c->n_chunks << c->chunk_shift;
        c->n_free += cp;
        p->held_bytes += (size_t)cp * c->page_bytes;
    }
    return KVL_OK;
}

/* Take a reserved page (refcount 1), zeroed: rows a sequence never wrote
 * hold no bytes of a sequence that used the page before (a saved session
 * writes whole pages). Locked. */
pref kvi_page_take(kvl_kv_pool *p, int cls) {
    kvi_class *c = &p->cls[cls];
    pref r = {kvi_page_mem(p, c->free_head), c->free_head};
    memcpy(&c->free_head, r.mem, 4);
    memset(r.mem, 0, c->page_bytes);
    *kvi_page_ref(p, r.id) = 1;
    c->n_free--;
    c->n_used++;
    p->used_bytes += c->page_bytes;
    p->n_taken++;
    return r;
}

/* Drop one reference. Locked. */
void kvi_page_unref(kvl_kv_pool *p, pref r) {
    uint32_t *n = kvi_page_ref(p, r.id);
    if (--*n == 0) {
        kvi_class *c = &p->cls[r.id >> KVI_CLS_SHIFT];
        memcpy(r.mem, &c->free_head, 4);
        c->free_head = r.id;
        c->n_free++;
        c->n_used--;
        p->used_bytes -= c->page_bytes;
    }
}

void kvl_kv_pool_fail_page(kvl_kv_pool *p, int64_t n) {
    pthread_mutex_lock(&p->mu);
    p->fail_at = n > 0 ? p->n_taken + n : 0;
    pthread_mutex_unlock(&p->mu);
}

int64_t kvl_kv_pool_pages_taken(const kvl_kv_pool *p) {
    kvl_kv_pool *m = (kvl_kv_pool *)p;
    pthread_mutex_lock(&m->mu);
    int64_t n = p->n_taken;
    pthread_mutex_unlock(&m->mu);
    return n;
}
