/* KV page pool: a byte budget, pages carved lazily from ~2 MiB chunks,
 * an intrusive free list and per-page reference counts, all under the pool
 * mutex. */
#include "kv/kv_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK_TOKENS 512 /* default attention chunk (see kvl_kv_attn) */

kvl_status kvl_kv_pool_create(const kvl_kv_config *cfg, kvl_kv_pool **out, kvl_err *err) {
    *out = NULL;
    if (!cfg || cfg->n_layer <= 0 || cfg->n_head_kv <= 0 || cfg->head_dim <= 0 || cfg->page_tokens <= 0 ||
        !cfg->codec)
        return kvl_err_set(err, KVL_ERR_ARG, "kv pool: invalid config");
    if (cfg->n_head < 0 || (cfg->n_head > 0 && cfg->n_head % cfg->n_head_kv != 0))
        return kvl_err_set(err, KVL_ERR_ARG, "kv pool: n_head %d not a multiple of n_head_kv %d",
                           cfg->n_head, cfg->n_head_kv);
    const kvl_policy_ops *pol = kvl_policy_find(cfg->policy);
    if (!pol)
        return kvl_err_set(err, KVL_ERR_ARG, "unknown KV policy '%s' (have: %s)", cfg->policy,
                           kvl_policy_list());
    kvl_kv_pool *p = calloc(1, sizeof *p);
    if (!p) return kvl_err_set(err, KVL_ERR_NOMEM, "kv pool: out of memory");
    p->cfg = *cfg;
    p->ck = cfg->codec;
    p->cv = cfg->codec_v ? cfg->codec_v : cfg->codec;
    p->cfg.codec_v = p->cv;
    p->policy = pol;
    p->D = cfg->head_dim;
    p->P = cfg->page_tokens;
    p->kk = kvl_codec_kernels_get(p->ck, p->D, cfg->scalar_only);
    p->kvk = kvl_codec_kernels_get(p->cv, p->D, cfg->scalar_only);
    {
        const int ct = cfg->attn_chunk_tokens > 0 ? cfg->attn_chunk_tokens : CHUNK_TOKENS;
        p->attn_cp = ct > p->P ? ct / p->P : 1;
    }
    p->expsum = cfg->scalar_only ? NULL : kvl_kv_expsum_avx2();
    if (!p->expsum) p->expsum = kvl_kv_expsum_ref;
    p->kseg = p->ck->seg_bytes(p->D, p->P);
    p->vseg = p->cv->seg_bytes(p->D, p->P);
    p->koff = kvi_align64((size_t)p->P * 4);
    p->voff = p->koff + kvi_align64(p->kseg);
    p->page_bytes = p->voff + kvi_align64(p->vseg);
    p->max_pages = (int64_t)(cfg->budget_bytes / p->page_bytes);
    if (p->max_pages > (int64_t)NO_PAGE - 1) p->max_pages = (int64_t)NO_PAGE - 1;
    /* chunks of ~2 MiB (a power of two pages, at least one) */
    p->chunk_shift = 0;
    while (((size_t)2 << p->chunk_shift) * p->page_bytes <= ((size_t)2 << 20) && p->chunk_shift < 20)
        p->chunk_shift++;
    p->chunk_mask = (1u << p->chunk_shift) - 1;
    p->free_head = NO_PAGE;
    if (pthread_mutex_init(&p->mu, NULL) != 0) {
        free(p);
        return kvl_err_set(err, KVL_ERR_INTERNAL, "kv pool: mutex init failed");
    }
    *out = p;
    return KVL_OK;
}

void kvl_kv_pool_free(kvl_kv_pool *p) {
    if (!p) return;
    for (int i = 0; i < p->n_chunks; i++) {
        free(p->chunks[i]);
        free(p->refs[i]);
    }
    free(p->chunks);
    free(p->refs);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

size_t kvl_kv_pool_used(const kvl_kv_pool *p) {
    kvl_kv_pool *m = (kvl_kv_pool *)p;
    pthread_mutex_lock(&m->mu);
    size_t r = (size_t)p->n_used * p->page_bytes;
    pthread_mutex_unlock(&m->mu);
    return r;
}
int64_t kvl_kv_pool_pages_used(const kvl_kv_pool *p) {
    return (int64_t)(kvl_kv_pool_used(p) / p->page_bytes);
}
size_t kvl_kv_pool_budget(const kvl_kv_pool *p) { return p->cfg.budget_bytes; }
size_t kvl_kv_page_bytes(const kvl_kv_pool *p) { return p->page_bytes; }
const kvl_kv_config *kvl_kv_pool_config(const kvl_kv_pool *p) { return &p->cfg; }
const char *kvl_kv_pool_isa(const kvl_kv_pool *p) { return p->kk.isa; }

double kvl_kv_bytes_per_token(const kvl_kv_pool *p) {
    return (kvl_codec_bytes_per_token(p->ck, p->D, p->P) + kvl_codec_bytes_per_token(p->cv, p->D, p->P)) *
           p->cfg.n_layer * p->cfg.n_head_kv;
}

/* Make sure `need` pages can be taken from the free list (growing the pool
 * within the budget). Locked. */
kvl_status kvi_pool_reserve(kvl_kv_pool *p, int64_t need, kvl_err *err) {
    if (p->fail_at > 0 && need > 0 && p->n_taken + need >= p->fail_at) {
        p->fail_at = 0;
        return kvl_err_set(err, KVL_ERR_NOMEM, "KV pool: injected failure at page allocation %lld",
                           (long long)(p->n_taken + 1));
    }
    if (need <= p->n_free) return KVL_OK;
    if (need > p->n_free + (p->max_pages - p->n_carved))
        return kvl_err_set(err, KVL_ERR_NOMEM,
                           "KV budget exceeded: need %lld pages of %zu bytes, %lld free (budget %zu bytes, %zu used)",
                           (long long)need, p->page_bytes, (long long)(p->n_free + p->max_pages - p->n_carved),
                           p->cfg.budget_bytes, (size_t)p->n_used * p->page_bytes);
    while (p->n_free < need) {
        if (p->n_chunks == p->cap_chunks) {
            int nc = p->cap_chunks ? 2 * p->cap_chunks : 16;
            uint8_t **c = realloc(p->chunks, (size_t)nc * sizeof *c);
            if (!c) return kvl_err_set(err, KVL_ERR_NOMEM, "kv pool: out of memory");
            p->chunks = c;
            uint32_t **r = realloc(p->refs, (size_t)nc * sizeof *r);
            if (!r) return kvl_err_set(err, KVL_ERR_NOMEM, "kv pool: out of memory");
            p->refs = r;
            p->cap_chunks = nc;
        }
        int64_t cp = (int64_t)1 << p->chunk_shift;
        if (cp > p->max_pages - p->n_carved) cp = p->max_pages - p->n_carved;
        uint8_t *mem = aligned_alloc(64, (size_t)cp * p->page_bytes);
        uint32_t *refs = calloc((size_t)cp, sizeof *refs);
        if (!mem || !refs) {
            free(mem);
            free(refs);
            return kvl_err_set(err, KVL_ERR_NOMEM, "kv pool: out of memory growing the pool");
        }
        p->chunks[p->n_chunks] = mem;
        p->refs[p->n_chunks] = refs;
        uint32_t base = (uint32_t)p->n_chunks << p->chunk_shift;
        p->n_chunks++;
        for (int64_t i = cp - 1; i >= 0; i--) { /* push so lower ids come out first */
            uint32_t id = base + (uint32_t)i;
            memcpy(kvi_page_mem(p, id), &p->free_head, 4);
            p->free_head = id;
        }
        p->n_carved += cp;
        p->n_free += cp;
    }
    return KVL_OK;
}

/* Take a reserved page (refcount 1). Locked. */
pref kvi_page_take(kvl_kv_pool *p) {
    pref r = {kvi_page_mem(p, p->free_head), p->free_head};
    memcpy(&p->free_head, r.mem, 4);
    *kvi_page_ref(p, r.id) = 1;
    p->n_free--;
    p->n_used++;
    p->n_taken++;
    return r;
}

/* Drop one reference. Locked. */
void kvi_page_unref(kvl_kv_pool *p, pref r) {
    uint32_t *c = kvi_page_ref(p, r.id);
    if (--*c == 0) {
        memcpy(r.mem, &p->free_head, 4);
        p->free_head = r.id;
        p->n_free++;
        p->n_used--;
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
