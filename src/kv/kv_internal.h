/* Internals shared by the KV cache's files (pool.c, table.c, drop.c,
 * stats.c, attn.c): the pool and table structures, page addressing and the
 * locked page-allocation primitives. Not part of the kv.h interface.
 *
 * Page layout (page_bytes, a multiple of 64):
 *   [int32 pos[P]] pad64 [K segment: codec_k seg_bytes(D,P)] pad64 [V segment] pad64
 * Invariant: every page of a list is full except possibly the last, so page
 * i of a list holds min(P, len - i*P) tokens.
 *
 * Threading: pool mutations (alloc/free/refcounts) take the pool mutex, so
 * different tables may be changed from different threads; one table is
 * changed by one thread at a time. Attention only reads pages. */
#ifndef KVL_KV_KV_INTERNAL_H
#define KVL_KV_KV_INTERNAL_H

#include <pthread.h>
#include <stdint.h>

#include "kv/codec.h"
#include "kv/kv.h"
#include "kv/policy.h"

#define NO_PAGE UINT32_MAX

static inline size_t kvi_align64(size_t x) { return (x + 63) & ~(size_t)63; }
static inline int kvi_ceil_div(int a, int b) { return (a + b - 1) / b; }

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
    int64_t n_taken;   /* pages handed out since creation (fault injection counts these) */
    int64_t fail_at;   /* testing: fail the reserve that would hand out page n_taken == fail_at (0 = off) */
    pthread_mutex_t mu;
};

/* Undo record of one list for an open transaction (txn.c). */
typedef struct kvundo {
    int len, n_pages; /* list state at begin */
    pref orig_last;   /* the partial last page at begin (mem NULL: none) */
    pref cow;         /* orig_last after an append copied it on write; the undo holds its reference */
    pref pin;         /* seal codecs: extra reference on orig_last, so appends copy it instead of sealing it */
    pref *saved;      /* page array before the first drop in the transaction (references held) */
    int n_saved, cap_saved, saved_len, has_saved;
} kvundo;

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
    /* transactions (txn.c) */
    int txn;                 /* a transaction is open */
    kvundo *undo;            /* [n_layer][n_head_kv] */
    float **stat_save;       /* [n_layer] -> [n_head][stat_save_len]: mass at the layer's first change */
    int *stat_save_len;      /* [n_layer]: tokens saved per query head, -1 = not saved */
    int *stat_save_cap;      /* [n_layer]: floats allocated */
    /* drop scratch (drop.c), grown as needed */
    pref *drop_old, *drop_wp;
    int drop_cap;
    float *drop_tmp;         /* [head_dim] */
};

static inline uint8_t *kvi_page_mem(const kvl_kv_pool *p, uint32_t id) {
    return p->chunks[id >> p->chunk_shift] + (size_t)(id & p->chunk_mask) * p->page_bytes;
}
static inline uint32_t *kvi_page_ref(kvl_kv_pool *p, uint32_t id) {
    return &p->refs[id >> p->chunk_shift][id & p->chunk_mask];
}
static inline kvlist *kvi_list(const kvl_kv_table *t, int layer, int head) {
    return &t->lists[(size_t)layer * t->pool->cfg.n_head_kv + head];
}
static inline int kvi_n_lists(const kvl_kv_pool *p) { return p->cfg.n_layer * p->cfg.n_head_kv; }

/* Make sure `need` pages can be taken from the free list (growing the pool
 * within the budget). Pool mutex held. */
kvl_status kvi_pool_reserve(kvl_kv_pool *p, int64_t need, kvl_err *err);
/* Take a reserved page (refcount 1). Pool mutex held. */
pref kvi_page_take(kvl_kv_pool *p);
/* Drop one reference; the page returns to the free list at zero. Pool mutex held. */
void kvi_page_unref(kvl_kv_pool *p, pref r);

/* Inside a transaction: save list i's page array (taking references) before
 * its first drop, so rollback can restore it. No-op outside one or when
 * saved already. Fails with KVL_ERR_NOMEM (nothing changed). */
kvl_status kvi_txn_save_list(kvl_kv_table *t, int i, kvl_err *err);
/* Inside a transaction: save the attention mass of `layer` before its first
 * change (append, drop). No-op outside one, when statistics are off or saved. */
kvl_status kvi_txn_save_stats(kvl_kv_table *t, int layer, kvl_err *err);
/* An append copied list i's partial last page `old` on write: keep its
 * reference in the undo record when it is the page the transaction began
 * with (returns 1), else the caller drops the reference (returns 0). Locked. */
int kvi_txn_keep_cow(kvl_kv_table *t, int i, pref old);
/* Free the transaction buffers (table free). */
void kvi_txn_free(kvl_kv_table *t);

/* Record the table's current bytes in its peak. */
void kvi_table_note_bytes(kvl_kv_table *t);
/* Grow statistics of `layer` to hold at least n tokens per list (no-op when off). */
kvl_status kvi_stats_reserve(kvl_kv_table *t, int layer, int n);
/* Free all statistics arrays and turn statistics off. */
void kvi_stats_free(kvl_kv_table *t);

#endif
