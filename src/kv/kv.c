/* Paged KV cache: the page pool (byte budget, lazily grown chunks, intrusive
 * free list, per-page reference counts), page tables per (layer, kv-head)
 * with copy-on-write sharing, append, eviction compaction (kvl_kv_drop),
 * attention statistics, and the attention loop itself: for each (query token,
 * query head) unit one pass over the kv-head's pages with an online softmax
 * per chunk of pages, chunks folded in order (decode may spread the chunks
 * over threads and fold afterwards), scores and value accumulation computed
 * by the codec on the encoded bytes.
 *
 * Page layout (page_bytes, a multiple of 64):
 *   [int32 pos[P]] pad64 [K segment: codec_k seg_bytes(D,P)] pad64 [V segment] pad64
 * Invariant: every page of a list is full except possibly the last, so page
 * i of a list holds min(P, len - i*P) tokens.
 *
 * Threading: pool mutations (alloc/free/refcounts) take the pool mutex, so
 * different tables may be changed from different threads; one table is
 * changed by one thread at a time. kvl_kv_attend only reads pages. */
#include "kv/kv.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "kv/codec.h"
#include "kv/policy.h"
#include "util/threadpool.h"

#define NO_PAGE UINT32_MAX
#define CHUNK_TOKENS 512 /* default attention chunk (see kvl_kv_attn) */

static size_t align64(size_t x) { return (x + 63) & ~(size_t)63; }

typedef struct pref {
    uint8_t *mem;
    uint32_t id;
} pref;

typedef struct kvlist {
    pref *pages;
    int n_pages, cap_pages;
    int len;
} kvlist;

struct kvl_kv_pool {
    kvl_kv_config cfg;
    const kvl_codec *ck, *cv;
    kvl_codec_kernels kk, kvk;
    kvl_kv_expsum_fn expsum;
    int D, P;
    int attn_cp; /* pages per attention chunk */
    size_t kseg, vseg, koff, voff, page_bytes;
    int64_t max_pages;
    int chunk_shift;
    uint32_t chunk_mask;
    uint8_t **chunks;
    uint32_t **refs;
    int n_chunks, cap_chunks;
    int64_t n_carved, n_free, n_used;
    uint32_t free_head;
    const kvl_policy_ops *policy;
    pthread_mutex_t mu;
};

struct kvl_kv_table {
    kvl_kv_pool *pool;
    kvlist *lists; /* [n_layer][n_head_kv] */
    int64_t n_pages;
    size_t peak;
    void *pstate;
    unsigned stat_flags;
    int n_head, group;
    float **stat;  /* [n_layer][n_head] -> [2*cap]: mass [cap], then per-unit scores [cap] */
    int *stat_cap; /* [n_layer] */
};

/* ---- pool ------------------------------------------------------------------------- */

static uint8_t *page_mem(const kvl_kv_pool *p, uint32_t id) {
    return p->chunks[id >> p->chunk_shift] + (size_t)(id & p->chunk_mask) * p->page_bytes;
}
static uint32_t *page_ref(kvl_kv_pool *p, uint32_t id) {
    return &p->refs[id >> p->chunk_shift][id & p->chunk_mask];
}

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
    p->koff = align64((size_t)p->P * 4);
    p->voff = p->koff + align64(p->kseg);
    p->page_bytes = p->voff + align64(p->vseg);
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
static kvl_status pool_reserve(kvl_kv_pool *p, int64_t need, kvl_err *err) {
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
            memcpy(page_mem(p, id), &p->free_head, 4);
            p->free_head = id;
        }
        p->n_carved += cp;
        p->n_free += cp;
    }
    return KVL_OK;
}

/* Take a reserved page (refcount 1). Locked. */
static pref page_take(kvl_kv_pool *p) {
    pref r = {page_mem(p, p->free_head), p->free_head};
    memcpy(&p->free_head, r.mem, 4);
    *page_ref(p, r.id) = 1;
    p->n_free--;
    p->n_used++;
    return r;
}

/* Drop one reference. Locked. */
static void page_unref(kvl_kv_pool *p, pref r) {
    uint32_t *c = page_ref(p, r.id);
    if (--*c == 0) {
        memcpy(r.mem, &p->free_head, 4);
        p->free_head = r.id;
        p->n_free++;
        p->n_used--;
    }
}

/* ---- tables ---------------------------------------------------------------------- */

static kvlist *list_at(const kvl_kv_table *t, int layer, int head) {
    return &t->lists[(size_t)layer * t->pool->cfg.n_head_kv + head];
}
static int n_lists(const kvl_kv_pool *p) { return p->cfg.n_layer * p->cfg.n_head_kv; }

static void table_note_bytes(kvl_kv_table *t) {
    size_t b = (size_t)t->n_pages * t->pool->page_bytes;
    if (b > t->peak) t->peak = b;
}

static void stats_free(kvl_kv_table *t) {
    if (t->stat) {
        for (int i = 0; i < t->pool->cfg.n_layer * t->n_head; i++) free(t->stat[i]);
    }
    free(t->stat);
    free(t->stat_cap);
    t->stat = NULL;
    t->stat_cap = NULL;
    t->stat_flags = 0;
}

void kvl_kv_table_free(kvl_kv_table *t) {
    if (!t) return;
    kvl_kv_pool *p = t->pool;
    if (t->pstate && p->policy->destroy) p->policy->destroy(t->pstate);
    if (t->lists) {
        pthread_mutex_lock(&p->mu);
        for (int i = 0; i < n_lists(p); i++)
            for (int j = 0; j < t->lists[i].n_pages; j++) page_unref(p, t->lists[i].pages[j]);
        pthread_mutex_unlock(&p->mu);
        for (int i = 0; i < n_lists(p); i++) free(t->lists[i].pages);
    }
    free(t->lists);
    stats_free(t);
    free(t);
}

static kvl_kv_table *table_alloc(kvl_kv_pool *p) {
    kvl_kv_table *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->pool = p;
    t->n_head = p->cfg.n_head > 0 ? p->cfg.n_head : p->cfg.n_head_kv;
    t->group = t->n_head / p->cfg.n_head_kv;
    t->lists = calloc((size_t)n_lists(p), sizeof *t->lists);
    if (!t->lists) {
        free(t);
        return NULL;
    }
    return t;
}

kvl_status kvl_kv_table_create(kvl_kv_pool *p, kvl_kv_table **out, kvl_err *err) {
    *out = NULL;
    kvl_kv_table *t = table_alloc(p);
    if (!t) return kvl_err_set(err, KVL_ERR_NOMEM, "kv table: out of memory");
    if (p->policy->create) {
        kvl_status s = p->policy->create(t, &t->pstate, err);
        if (s != KVL_OK) {
            kvl_kv_table_free(t);
            return s;
        }
    }
    *out = t;
    return KVL_OK;
}

kvl_status kvl_kv_table_fork(const kvl_kv_table *t, kvl_kv_table **out, kvl_err *err) {
    *out = NULL;
    kvl_kv_pool *p = t->pool;
    kvl_kv_table *c = table_alloc(p);
    if (!c) return kvl_err_set(err, KVL_ERR_NOMEM, "kv fork: out of memory");
    for (int i = 0; i < n_lists(p); i++) {
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
    for (int i = 0; i < n_lists(p); i++) {
        c->lists[i].n_pages = c->lists[i].cap_pages;
        for (int j = 0; j < c->lists[i].n_pages; j++) (*page_ref(p, c->lists[i].pages[j].id))++;
    }
    pthread_mutex_unlock(&p->mu);
    c->n_pages = t->n_pages;
    table_note_bytes(c);
    if (t->stat_flags) {
        kvl_status s = kvl_kv_table_stats_enable(c, t->stat_flags, err);
        if (s != KVL_OK) {
            kvl_kv_table_free(c);
            return s;
        }
        for (int l = 0; l < p->cfg.n_layer; l++) {
            int len = 0;
            for (int h = 0; h < p->cfg.n_head_kv; h++)
                if (list_at(t, l, h)->len > len) len = list_at(t, l, h)->len;
            for (int qh = 0; qh < t->n_head; qh++) {
                float *a = realloc(c->stat[l * t->n_head + qh], 2 * (size_t)t->stat_cap[l] * sizeof(float));
                if (!a) {
                    kvl_kv_table_free(c);
                    return kvl_err_set(err, KVL_ERR_NOMEM, "kv fork: out of memory");
                }
                c->stat[l * t->n_head + qh] = a;
                memcpy(a, t->stat[l * t->n_head + qh], (size_t)len * sizeof(float));
            }
            c->stat_cap[l] = t->stat_cap[l];
        }
    }
    kvl_status s = KVL_OK;
    if (p->policy->fork) s = p->policy->fork(t->pstate, c, &c->pstate, err);
    else if (p->policy->create) s = p->policy->create(c, &c->pstate, err);
    if (s != KVL_OK) {
        kvl_kv_table_free(c);
        return s;
    }
    *out = c;
    return KVL_OK;
}

int kvl_kv_table_len(const kvl_kv_table *t, int layer, int head) { return list_at(t, layer, head)->len; }
size_t kvl_kv_table_bytes(const kvl_kv_table *t) { return (size_t)t->n_pages * t->pool->page_bytes; }
size_t kvl_kv_table_peak_bytes(const kvl_kv_table *t) { return t->peak; }
int kvl_kv_table_n_pages(const kvl_kv_table *t) { return (int)t->n_pages; }
kvl_kv_pool *kvl_kv_table_pool(const kvl_kv_table *t) { return t->pool; }

static int ceil_div(int a, int b) { return (a + b - 1) / b; }

/* Pages (list) needs to take n more tokens, copy-on-write included. Locked. */
static int list_need(kvl_kv_pool *p, const kvlist *L, int n) {
    const int r = L->len % p->P;
    int need = 0, room = 0;
    if (r) {
        room = p->P - r;
        if (*page_ref(p, L->pages[L->n_pages - 1].id) > 1) need++;
    }
    if (n > room) need += ceil_div(n - room, p->P);
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

/* Grow statistics of `layer` to hold at least n tokens per list. */
static kvl_status stats_reserve(kvl_kv_table *t, int layer, int n) {
    if (!t->stat_flags || n <= t->stat_cap[layer]) return KVL_OK;
    int cap = t->stat_cap[layer] ? t->stat_cap[layer] : 64;
    while (cap < n) cap *= 2;
    for (int qh = 0; qh < t->n_head; qh++) {
        float **a = &t->stat[layer * t->n_head + qh];
        float *b = realloc(*a, 2 * (size_t)cap * sizeof(float));
        if (!b) return KVL_ERR_NOMEM; /* arrays already grown keep their larger size: harmless */
        *a = b;
    }
    t->stat_cap[layer] = cap;
    return KVL_OK;
}

size_t kvl_kv_append_need(const kvl_kv_table *t, int n_tok) {
    kvl_kv_pool *p = t->pool;
    int64_t need = 0;
    pthread_mutex_lock(&p->mu);
    for (int i = 0; i < n_lists(p); i++) need += list_need(p, &t->lists[i], n_tok);
    pthread_mutex_unlock(&p->mu);
    return (size_t)need * p->page_bytes;
}

kvl_status kvl_kv_append(kvl_kv_table *t, int layer, int n_tok, const int32_t *pos, const float *k,
                         const float *v, kvl_err *err) {
    kvl_kv_pool *p = t->pool;
    const int Hkv = p->cfg.n_head_kv, D = p->D, P = p->P;
    if (layer < 0 || layer >= p->cfg.n_layer || n_tok < 0)
        return kvl_err_set(err, KVL_ERR_ARG, "kv append: bad layer %d or n_tok %d", layer, n_tok);
    if (n_tok == 0) return KVL_OK;
    int maxlen = 0;
    for (int h = 0; h < Hkv; h++) {
        kvlist *L = list_at(t, layer, h);
        if (L->len > INT32_MAX - n_tok) return kvl_err_set(err, KVL_ERR_ARG, "kv append: too many tokens");
        if (list_reserve(L, ceil_div(L->len + n_tok, P)) != KVL_OK)
            return kvl_err_set(err, KVL_ERR_NOMEM, "kv append: out of memory");
        if (L->len + n_tok > maxlen) maxlen = L->len + n_tok;
    }
    if (stats_reserve(t, layer, maxlen) != KVL_OK)
        return kvl_err_set(err, KVL_ERR_NOMEM, "kv append: out of memory");

    pthread_mutex_lock(&p->mu);
    int64_t need = 0;
    for (int h = 0; h < Hkv; h++) need += list_need(p, list_at(t, layer, h), n_tok);
    kvl_status s = pool_reserve(p, need, err);
    if (s != KVL_OK) {
        pthread_mutex_unlock(&p->mu);
        return s;
    }
    for (int h = 0; h < Hkv; h++) {
        kvlist *L = list_at(t, layer, h);
        if (L->len % P && *page_ref(p, L->pages[L->n_pages - 1].id) > 1) { /* copy-on-write */
            pref old = L->pages[L->n_pages - 1], nw = page_take(p);
            memcpy(nw.mem, old.mem, p->page_bytes);
            page_unref(p, old);
            L->pages[L->n_pages - 1] = nw;
        }
        for (int j = 0; j < n_tok; j++) {
            const int r = L->len % P;
            if (r == 0) {
                L->pages[L->n_pages++] = page_take(p);
                t->n_pages++;
            }
            uint8_t *mem = L->pages[L->n_pages - 1].mem;
            memcpy(mem + (size_t)r * 4, &pos[j], 4);
            p->ck->encode(mem + p->koff, D, P, r, k + ((size_t)j * Hkv + h) * D);
            p->cv->encode(mem + p->voff, D, P, r, v + ((size_t)j * Hkv + h) * D);
            L->len++;
            if (r == P - 1) {
                if (p->ck->seal) p->ck->seal(mem + p->koff, D, P);
                if (p->cv->seal) p->cv->seal(mem + p->voff, D, P);
            }
        }
    }
    pthread_mutex_unlock(&p->mu);
    if (t->stat_flags) {
        for (int h = 0; h < Hkv; h++) {
            const int len = list_at(t, layer, h)->len;
            for (int g = 0; g < t->group; g++) {
                float *m = t->stat[layer * t->n_head + h * t->group + g];
                memset(m + len - n_tok, 0, (size_t)n_tok * sizeof(float));
            }
        }
    }
    table_note_bytes(t);
    return KVL_OK;
}

int kvl_kv_table_positions(const kvl_kv_table *t, int layer, int head, int32_t *out, int cap) {
    const kvlist *L = list_at(t, layer, head);
    const int P = t->pool->P;
    for (int i = 0; i < L->len && i < cap; i++) memcpy(&out[i], L->pages[i / P].mem + (size_t)(i % P) * 4, 4);
    return L->len;
}

kvl_status kvl_kv_table_decode(const kvl_kv_table *t, int layer, int head, int i, float *k, float *v) {
    const kvl_kv_pool *p = t->pool;
    if (layer < 0 || layer >= p->cfg.n_layer || head < 0 || head >= p->cfg.n_head_kv) return KVL_ERR_ARG;
    const kvlist *L = list_at(t, layer, head);
    if (i < 0 || i >= L->len) return KVL_ERR_ARG;
    const uint8_t *mem = L->pages[i / p->P].mem;
    if (k) p->ck->decode(mem + p->koff, p->D, p->P, i % p->P, k);
    if (v) p->cv->decode(mem + p->voff, p->D, p->P, i % p->P, v);
    return KVL_OK;
}

/* ---- eviction: drop + compaction ----------------------------------------------------- */

/* Move token (src page, si) to (dst page, di): position, K row, V row. */
static void move_token(kvl_kv_pool *p, uint8_t *dst, int di, const uint8_t *src, int si, float *tmp) {
    const int D = p->D, P = p->P;
    memmove(dst + (size_t)di * 4, src + (size_t)si * 4, 4);
    if (p->ck->copy_row && !p->ck->seal) p->ck->copy_row(dst + p->koff, di, src + p->koff, si, D, P);
    else {
        p->ck->decode(src + p->koff, D, P, si, tmp);
        p->ck->encode(dst + p->koff, D, P, di, tmp);
    }
    if (p->cv->copy_row && !p->cv->seal) p->cv->copy_row(dst + p->voff, di, src + p->voff, si, D, P);
    else {
        p->cv->decode(src + p->voff, D, P, si, tmp);
        p->cv->encode(dst + p->voff, D, P, di, tmp);
    }
}

kvl_status kvl_kv_drop(kvl_kv_table *t, int layer, int head, const int *idx, int n_idx, kvl_err *err) {
    kvl_kv_pool *p = t->pool;
    const int P = p->P;
    if (layer < 0 || layer >= p->cfg.n_layer || head < 0 || head >= p->cfg.n_head_kv || n_idx < 0)
        return kvl_err_set(err, KVL_ERR_ARG, "kv drop: bad layer/head/count");
    kvlist *L = list_at(t, layer, head);
    for (int i = 0; i < n_idx; i++)
        if (idx[i] < 0 || idx[i] >= L->len || (i && idx[i] <= idx[i - 1]))
            return kvl_err_set(err, KVL_ERR_ARG, "kv drop: indices must be increasing and < %d", L->len);
    if (n_idx == 0) return KVL_OK;

    const int fa = idx[0] / P;                  /* first affected page */
    const int newlen = L->len - n_idx;
    const int nw = ceil_div(newlen - fa * P, P); /* pages written from fa on */
    const int n_old = L->n_pages - fa;
    const int inplace = !p->ck->seal && !p->cv->seal && p->ck->copy_row && p->cv->copy_row;
    pref *old = malloc((size_t)n_old * sizeof *old);
    pref *wp = malloc(((size_t)nw + 1) * sizeof *wp);
    float *tmp = malloc((size_t)p->D * sizeof(float));
    if (!old || !wp || !tmp) {
        free(old), free(wp), free(tmp);
        return kvl_err_set(err, KVL_ERR_NOMEM, "kv drop: out of memory");
    }
    memcpy(old, L->pages + fa, (size_t)n_old * sizeof *old);

    pthread_mutex_lock(&p->mu);
    int64_t fresh = 0;
    for (int k = 0; k < nw; k++) fresh += !(inplace && *page_ref(p, old[k].id) == 1);
    kvl_status s = pool_reserve(p, fresh, err);
    if (s != KVL_OK) {
        pthread_mutex_unlock(&p->mu);
        free(old), free(wp), free(tmp);
        return s;
    }
    for (int k = 0; k < nw; k++) wp[k] = (inplace && *page_ref(p, old[k].id) == 1) ? old[k] : page_take(p);

    int w = fa * P, d = 0;
    for (int g = fa * P; g < L->len; g++) {
        if (d < n_idx && idx[d] == g) {
            d++;
            continue;
        }
        const uint8_t *src = old[g / P - fa].mem;
        uint8_t *dst = wp[w / P - fa].mem;
        if (src != dst || g != w) move_token(p, dst, w % P, src, g % P, tmp);
        w++;
        if (w % P == 0 && (p->ck->seal || p->cv->seal)) { /* seal codecs never compact in place */
            if (p->ck->seal) p->ck->seal(dst + p->koff, p->D, P);
            if (p->cv->seal) p->cv->seal(dst + p->voff, p->D, P);
        }
    }
    /* release old pages not reused in place */
    for (int k = 0; k < n_old; k++) {
        int reused = 0;
        if (k < nw && wp[k].mem == old[k].mem) reused = 1;
        if (!reused) page_unref(p, old[k]);
    }
    pthread_mutex_unlock(&p->mu);
    memcpy(L->pages + fa, wp, (size_t)nw * sizeof *wp);
    t->n_pages += (int64_t)nw - n_old;
    L->n_pages = fa + nw;
    /* compact the statistics of the query heads reading this kv-head */
    if (t->stat_flags) {
        for (int gq = 0; gq < t->group; gq++) {
            float *m = t->stat[layer * t->n_head + head * t->group + gq];
            int ww = idx[0], dd = 0;
            for (int g = idx[0]; g < L->len; g++) {
                if (dd < n_idx && idx[dd] == g) {
                    dd++;
                    continue;
                }
                m[ww++] = m[g];
            }
        }
    }
    L->len = newlen;
    free(old), free(wp), free(tmp);
    return KVL_OK;
}

/* ---- statistics ------------------------------------------------------------------------ */

kvl_status kvl_kv_table_stats_enable(kvl_kv_table *t, unsigned flags, kvl_err *err) {
    kvl_kv_pool *p = t->pool;
    if (flags == t->stat_flags) return KVL_OK;
    stats_free(t);
    if (!flags) return KVL_OK;
    if (flags & ~(unsigned)KVL_KV_STAT_MASS) return kvl_err_set(err, KVL_ERR_UNSUPPORTED, "kv stats: unknown flags");
    const int nl = p->cfg.n_layer;
    t->stat = calloc((size_t)nl * t->n_head, sizeof *t->stat);
    t->stat_cap = calloc((size_t)nl, sizeof *t->stat_cap);
    if (!t->stat || !t->stat_cap) {
        stats_free(t);
        return kvl_err_set(err, KVL_ERR_NOMEM, "kv stats: out of memory");
    }
    t->stat_flags = flags;
    for (int l = 0; l < nl; l++) {
        int len = 0;
        for (int h = 0; h < p->cfg.n_head_kv; h++)
            if (list_at(t, l, h)->len > len) len = list_at(t, l, h)->len;
        if (stats_reserve(t, l, len > 0 ? len : 1) != KVL_OK) {
            stats_free(t);
            return kvl_err_set(err, KVL_ERR_NOMEM, "kv stats: out of memory");
        }
    }
    kvl_kv_table_stats_reset(t);
    return KVL_OK;
}

unsigned kvl_kv_table_stats_flags(const kvl_kv_table *t) { return t->stat_flags; }

const float *kvl_kv_table_stat_mass(const kvl_kv_table *t, int layer, int qh) {
    if (!t->stat_flags || layer < 0 || layer >= t->pool->cfg.n_layer || qh < 0 || qh >= t->n_head) return NULL;
    return t->stat[layer * t->n_head + qh];
}

void kvl_kv_table_stats_reset(kvl_kv_table *t) {
    if (!t->stat_flags) return;
    for (int l = 0; l < t->pool->cfg.n_layer; l++)
        for (int qh = 0; qh < t->n_head; qh++)
            memset(t->stat[l * t->n_head + qh], 0, (size_t)t->stat_cap[l] * sizeof(float));
}

kvl_status kvl_kv_policy_step(kvl_kv_table *t, kvl_err *err) {
    const kvl_policy_ops *ops = t->pool->policy;
    return ops->step ? ops->step(t->pstate, t, err) : KVL_OK;
}

/* ---- attention ----------------------------------------------------------------------------- */

/* Queries sharing a kv-head are processed together, up to QMAX at a time: the
 * G query heads of a group and, in prefill, several query tokens (T tokens x
 * G heads). Each page is read once per block, its K and V rows converted once
 * by the codec's multi-query kernels for all the block's queries.
 *
 * A list is cut into chunks of attn_chunk_tokens (whole pages, fixed by
 * page index). Each chunk gets its own online softmax (running max m, sum l,
 * unnormalized accumulator), and the chunks' partial results are folded in
 * chunk order (fold()). A unit either runs its chunks one after another and
 * folds as it goes (attend_seq), or — decode on few kv-heads, where (token,
 * kv-head) units cannot keep the threads busy — the chunks become separate
 * work units writing partials that kvl_kv_attn_merge folds afterwards
 * (flash-decoding). Both do the same arithmetic in the same order, and every
 * query's arithmetic is that of processing it alone (the multi-query kernels
 * are bit-identical per query; a page with no visible row for a query is
 * skipped for that query), so results do not depend on the blocking, the
 * batch split, the thread count or the split decision. */
#define QMAX 12
#define SPLIT_MAX_TOK 4 /* split only calls of at most this many query tokens */

static int n_chunks_of(const kvl_kv_pool *p, const kvlist *L) {
    const int cp = p->attn_cp;
    return (L->n_pages + cp - 1) / cp;
}

static size_t qbuf_bytes(const kvl_kv_pool *p) { return align64((size_t)QMAX * p->D * 4); }

size_t kvl_kv_attend_scratch_bytes(const kvl_kv_pool *p) {
    return 3 * qbuf_bytes(p) + align64((size_t)QMAX * p->P * 4);
}

/* One chunk: pages [pg0, pg1) of L for Q = T*G queries (token t = qi / G).
 * qs: [Q][D] scaled queries; qp: [T] positions; s: scratch [QMAX][P].
 * Out: m[Q], l[Q] (m = -inf, l = 0 when the query sees no row of the chunk)
 * and acc [Q][D] = sum_i exp(s_i - m) v_i. st: G statistics arrays (T == 1)
 * receiving the raw scores at cap + row, or NULL. */
static void attend_part(const kvl_kv_pool *p, const kvlist *L, int pg0, int pg1, int T, int G, const float *qs,
                        const int32_t *qp, float *acc, float *s, float *m, float *l, float *const *st, int cap) {
    const int D = p->D, P = p->P, Q = T * G;
    int nv[QMAX];
    memset(acc, 0, sizeof(float) * (size_t)Q * D);
    for (int qi = 0; qi < Q; qi++) {
        m[qi] = -INFINITY;
        l[qi] = 0;
    }
    for (int pg = pg0; pg < pg1; pg++) {
        const uint8_t *mem = L->pages[pg].mem;
        const int n = L->len - pg * P < P ? L->len - pg * P : P;
        const int32_t *pos = (const int32_t *)mem;
        int any = 0;
        for (int t = 0; t < T; t++) {
            int c = 0;
            for (int i = 0; i < n; i++) c += pos[i] <= qp[t];
            nv[t] = c;
            any |= c;
        }
        if (!any) { /* page entirely after every query (causal): skip */
            if (st)
                for (int g = 0; g < G; g++)
                    for (int i = 0; i < n; i++) st[g][cap + pg * P + i] = -INFINITY;
            continue;
        }
        /* chunks of queries [q0, q1) that see part of the page: the runs of
         * such tokens (decode, T == 1: one query at a time, which keeps each
         * query's softmax next to its products; the inline-converting
         * single-query kernels are as fast there) */
        for (int q0 = 0; q0 < Q;) {
            if (!nv[q0 / G]) {
                q0 += G;
                continue;
            }
            int q1 = q0 + 1;
            if (T > 1) {
                int t1 = q0 / G + 1;
                while (t1 < T && nv[t1]) t1++;
                q1 = t1 * G;
            }
            kvl_codec_qk_multi(&p->kk, mem + p->koff, D, P, n, qs + (size_t)q0 * D, q1 - q0, s + (size_t)q0 * P);
            for (int qi = q0; qi < q1; qi++) {
                const int t = qi / G, g = qi % G;
                float *a = acc + (size_t)qi * D, *sq = s + (size_t)qi * P;
                if (nv[t] < n)
                    for (int i = 0; i < n; i++)
                        if (pos[i] > qp[t]) sq[i] = -INFINITY;
                if (st) memcpy(st[g] + cap + pg * P, sq, (size_t)n * sizeof(float));
                float mp = sq[0];
                for (int i = 1; i < n; i++) mp = sq[i] > mp ? sq[i] : mp;
                if (mp > m[qi]) { /* new running max: rescale what was accumulated */
                    if (m[qi] != -INFINITY) {
                        const float c = expf(m[qi] - mp);
                        l[qi] *= c;
                        for (int j = 0; j < D; j++) a[j] *= c;
                    }
                    m[qi] = mp;
                }
                l[qi] += p->expsum(sq, n, m[qi]);
            }
            kvl_codec_av_multi(&p->kvk, mem + p->voff, D, P, n, s + (size_t)q0 * P, q1 - q0, acc + (size_t)q0 * D);
            q0 = q1;
        }
    }
}

/* Fold one chunk's partial (m, l, acc [D]) into the running (M, S, A [D]).
 * The first non-empty chunk is copied, so a one-chunk list gives exactly the
 * single-pass result. */
static void fold(float *M, float *S, float *A, float m, float l, const float *acc, int D) {
    if (m == -INFINITY) return; /* the query saw nothing in this chunk */
    if (*M == -INFINITY) {
        *M = m;
        *S = l;
        memcpy(A, acc, sizeof(float) * (size_t)D);
        return;
    }
    if (m > *M) {
        const float c = expf(*M - m);
        *S *= c;
        for (int j = 0; j < D; j++) A[j] *= c;
        *M = m;
    }
    const float c = expf(m - *M);
    *S += l * c;
    for (int j = 0; j < D; j++) A[j] += acc[j] * c;
}

/* o [D] = A / S; zeros when the query saw nothing (S == 0, A unset). */
static void finish(float *o, const float *A, float S, int D) {
    if (!(S > 0)) {
        memset(o, 0, sizeof(float) * (size_t)D);
        return;
    }
    const float inv = 1.0f / S;
    for (int j = 0; j < D; j++) o[j] = A[j] * inv;
}

static void scale_queries(const kvl_kv_pool *p, int T, int G, const float *q, size_t tstride, float scale,
                          float *qs) {
    const int D = p->D;
    for (int t = 0; t < T; t++)
        for (int g = 0; g < G; g++) {
            const float *qq = q + t * tstride + (size_t)g * D;
            float *d = qs + (size_t)(t * G + g) * D;
            for (int j = 0; j < D; j++) d[j] = qq[j] * scale;
        }
}

/* T tokens x G heads (T*G <= QMAX) of one kv-head list L, all chunks in
 * order. Query (t, g) is at q + t*tstride + g*D (unscaled), its output at
 * out + t*tstride + g*D, its position qp[t]. st: G statistics arrays [2*cap]
 * or NULL (only with T == 1). scr: kvl_kv_attend_scratch_bytes. */
static void attend_seq(const kvl_kv_pool *p, const kvlist *L, int T, int G, const float *q, size_t tstride,
                       const int32_t *qp, float scale, float *out, uint8_t *scr, float *const *st, int cap) {
    const int D = p->D, Q = T * G, cp = p->attn_cp;
    const size_t qb = qbuf_bytes(p);
    float *qs = (float *)scr, *acc = (float *)(scr + qb), *A = (float *)(scr + 2 * qb), *s = (float *)(scr + 3 * qb);
    float m[QMAX], l[QMAX], M[QMAX], S[QMAX];
    scale_queries(p, T, G, q, tstride, scale, qs);
    for (int qi = 0; qi < Q; qi++) {
        M[qi] = -INFINITY;
        S[qi] = 0;
    }
    for (int pg0 = 0; pg0 < L->n_pages; pg0 += cp) {
        const int pg1 = pg0 + cp < L->n_pages ? pg0 + cp : L->n_pages;
        attend_part(p, L, pg0, pg1, T, G, qs, qp, acc, s, m, l, st, cap);
        for (int qi = 0; qi < Q; qi++)
            fold(&M[qi], &S[qi], A + (size_t)qi * D, m[qi], l[qi], acc + (size_t)qi * D, D);
    }
    for (int t = 0; t < T; t++)
        for (int g = 0; g < G; g++) {
            const int qi = t * G + g;
            finish(out + t * tstride + (size_t)g * D, A + (size_t)qi * D, S[qi], D);
            if (st && S[qi] > 0) { /* exact probabilities with the final max and sum */
                const float inv = 1.0f / S[qi];
                for (int i = 0; i < L->len; i++) st[g][i] += expf(st[g][cap + i] - M[qi]) * inv;
            }
        }
}

/* Units of the unsplit path: (block of TB tokens, kv-head, sub-group of GS heads). */
static void unsplit_shape(int n_tok, int Hkv, int group, int nth, int *GS, int *per, int *TB) {
    *GS = group < QMAX ? group : QMAX;
    *per = (group + *GS - 1) / *GS;
    int tb = QMAX / *GS;
    while (tb > 1 && (long)((n_tok + tb - 1) / tb) * Hkv * *per < 2L * nth) tb--;
    *TB = tb;
}

void kvl_kv_attend(const kvl_kv_table *t, int layer, int n_tok, const float *q, const int32_t *qpos,
                   int n_head, float scale, float *out, void *scratch, int ith, int nth) {
    const kvl_kv_pool *p = t->pool;
    const int D = p->D, Hkv = p->cfg.n_head_kv, group = n_head / Hkv;
    const size_t tstride = (size_t)n_head * D;
    const int stats = t->stat_flags != 0 && n_head == t->n_head;
    long lo, hi;
    if (stats) { /* each thread owns whole query heads: one writer per statistics array */
        kvl_split(n_head, ith, nth, &lo, &hi);
        for (int ti = 0; ti < n_tok; ti++)
            for (long h = lo; h < hi;) {
                const int kvh = (int)h / group;
                int G = (int)((kvh + 1) * (long)group - h);
                if (G > hi - h) G = (int)(hi - h);
                if (G > QMAX) G = QMAX;
                float *st[QMAX];
                for (int g = 0; g < G; g++) st[g] = t->stat[layer * t->n_head + h + g];
                const size_t off = ((size_t)ti * n_head + h) * D;
                attend_seq(p, list_at(t, layer, kvh), 1, G, q + off, tstride, qpos + ti, scale, out + off, scratch,
                           st, t->stat_cap[layer]);
                h += G;
            }
        return;
    }
    if ((long)n_tok * Hkv >= nth) {
        /* enough (token, kv-head) units to occupy every thread */
        int GS, per, TB;
        unsplit_shape(n_tok, Hkv, group, nth, &GS, &per, &TB);
        const long nb = (n_tok + TB - 1) / TB;
        kvl_split(nb * Hkv * per, ith, nth, &lo, &hi);
        for (long u = lo; u < hi; u++) {
            const int b = (int)(u / ((long)Hkv * per)), r = (int)(u % ((long)Hkv * per));
            const int kvh = r / per, h = kvh * group + (r % per) * GS;
            const int G = group - (r % per) * GS < GS ? group - (r % per) * GS : GS;
            const int t0 = b * TB, T = n_tok - t0 < TB ? n_tok - t0 : TB;
            const size_t off = ((size_t)t0 * n_head + h) * D;
            attend_seq(p, list_at(t, layer, kvh), T, G, q + off, tstride, qpos + t0, scale, out + off, scratch,
                       NULL, 0);
        }
        return;
    }
    /* few units (decode on many threads, no partial buffer): one query head per unit */
    kvl_split((long)n_tok * n_head, ith, nth, &lo, &hi);
    for (long u = lo; u < hi; u++) {
        const int ti = (int)(u / n_head), h = (int)(u % n_head);
        const size_t off = ((size_t)ti * n_head + h) * D;
        attend_seq(p, list_at(t, layer, h / group), 1, 1, q + off, tstride, qpos + ti, scale, out + off, scratch,
                   NULL, 0);
    }
}

/* ---- split (flash-decoding) attention -------------------------------------------- */

size_t kvl_kv_attn_part_bytes(const kvl_kv_pool *p, int n_head, int max_tokens) {
    const int P = p->P, cp = p->attn_cp;
    const long pages = ((long)max_tokens + P - 1) / P, nc = (pages + cp - 1) / cp;
    return sizeof(float) * (size_t)SPLIT_MAX_TOK * (size_t)n_head * (size_t)(nc > 0 ? nc : 1) * (size_t)(p->D + 2);
}

long kvl_kv_attn_init(kvl_kv_attn *a, const kvl_kv_table *t, int layer, int n_tok, const float *q,
                      const int32_t *qpos, int n_head, float scale, float *out, float *part, size_t part_bytes,
                      int n_threads) {
    const kvl_kv_pool *p = t->pool;
    const int Hkv = p->cfg.n_head_kv, group = n_head / Hkv;
    *a = (kvl_kv_attn){.t = t, .layer = layer, .n_tok = n_tok, .q = q, .qpos = qpos, .n_head = n_head,
                       .scale = scale, .out = out, .part = part};
    int nc = 0;
    for (int h = 0; h < Hkv; h++) {
        const int c = n_chunks_of(p, list_at(t, layer, h));
        nc = c > nc ? c : nc;
    }
    int GS, per, TB;
    unsplit_shape(n_tok, Hkv, group, n_threads, &GS, &per, &TB);
    const long units = (long)((n_tok + TB - 1) / TB) * Hkv * per;
    const int stats = t->stat_flags != 0 && n_head == t->n_head;
    if (!stats && part && n_tok <= SPLIT_MAX_TOK && nc > 1 && units < 2L * n_threads &&
        sizeof(float) * (size_t)n_tok * n_head * nc * (p->D + 2) <= part_bytes) {
        a->split = 1;
        a->n_chunk = nc;
        a->gs = GS;
        a->per = per;
        /* units (token, kv-head, sub-group, chunk); one head per unit if even
         * that leaves threads idle */
        if ((long)n_tok * Hkv * per * nc < n_threads) a->gs = 1, a->per = group;
        a->n_units = (long)n_tok * Hkv * a->per * nc;
    } else {
        a->n_units = n_threads;
    }
    return a->n_units;
}

void kvl_kv_attn_run(const kvl_kv_attn *a, void *scratch, long u0, long u1) {
    const kvl_kv_table *t = a->t;
    const kvl_kv_pool *p = t->pool;
    if (!a->split) {
        for (long u = u0; u < u1; u++)
            kvl_kv_attend(t, a->layer, a->n_tok, a->q, a->qpos, a->n_head, a->scale, a->out, scratch, (int)u,
                          (int)a->n_units);
        return;
    }
    const int D = p->D, Hkv = p->cfg.n_head_kv, group = a->n_head / Hkv, cp = p->attn_cp;
    const size_t tstride = (size_t)a->n_head * D, qb = qbuf_bytes(p), rec = (size_t)D + 2;
    uint8_t *scr = scratch;
    float *qs = (float *)scr, *acc = (float *)(scr + qb), *s = (float *)(scr + 3 * qb);
    float m[QMAX], l[QMAX];
    for (long u = u0; u < u1; u++) {
        const int c = (int)(u % a->n_chunk);
        long r = u / a->n_chunk;
        const int sub = (int)(r % a->per);
        r /= a->per;
        const int kvh = (int)(r % Hkv), ti = (int)(r / Hkv);
        const int h = kvh * group + sub * a->gs;
        const int G = group - sub * a->gs < a->gs ? group - sub * a->gs : a->gs;
        const kvlist *L = list_at(t, a->layer, kvh);
        const int pg0 = c * cp, pg1 = pg0 + cp < L->n_pages ? pg0 + cp : L->n_pages;
        if (pg0 < L->n_pages) {
            scale_queries(p, 1, G, a->q + ((size_t)ti * a->n_head + h) * D, tstride, a->scale, qs);
            attend_part(p, L, pg0, pg1, 1, G, qs, a->qpos + ti, acc, s, m, l, NULL, 0);
        } else { /* this kv-head's list is shorter than the longest */
            for (int g = 0; g < G; g++) m[g] = -INFINITY, l[g] = 0;
        }
        for (int g = 0; g < G; g++) {
            float *rp = a->part + (((size_t)ti * a->n_head + h + g) * a->n_chunk + c) * rec;
            rp[0] = m[g];
            rp[1] = l[g];
            if (m[g] != -INFINITY) memcpy(rp + 2, acc + (size_t)g * D, sizeof(float) * (size_t)D);
        }
    }
}

void kvl_kv_attn_merge(const kvl_kv_attn *a, int ith, int nth) {
    if (!a->split) return;
    const int D = a->t->pool->D;
    const size_t rec = (size_t)D + 2;
    long lo, hi;
    kvl_split((long)a->n_tok * a->n_head, ith, nth, &lo, &hi);
    for (long u = lo; u < hi; u++) { /* (token, query head): fold its chunks in order */
        float *o = a->out + (size_t)u * D, M = -INFINITY, S = 0;
        const float *rp = a->part + (size_t)u * a->n_chunk * rec;
        for (int c = 0; c < a->n_chunk; c++, rp += rec) fold(&M, &S, o, rp[0], rp[1], rp + 2, D);
        finish(o, o, S, D);
    }
}
