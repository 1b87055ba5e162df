/* Internals shared by the KV cache's files (pool.c, table.c, drop.c,
 * stats.c, attn.c, txn.c, seal.c): the pool and table structures, page
 * addressing and the locked page-allocation primitives. Not part of the
 * kv.h interface.
 *
 * Page size classes: a pool has one class per distinct (K row format, V row
 * format) pair its layers use: per-token codecs give one class per layer
 * configuration; a sealing codec (KIVI, SQuat) adds an "open" class (rows in
 * its open format, f16) and a smaller "sealed" class. A page id carries its
 * class in the top 4 bits (KVI_CLS_SHIFT), so the attention loop picks the
 * kernels of each page from its id. Each class has its own chunks and free
 * list; the byte budget caps the bytes of pages in use over all classes.
 *
 * Page layout (page_bytes of its class, a multiple of 64):
 *   [int32 pos[P]] pad64 [K segment: seg_bytes(D,P) of the K format] pad64 [V segment] pad64
 * Invariant: every page of a list is full except possibly the last, so page
 * i of a list holds min(P, len - i*P) tokens. Sealed pages form a prefix of
 * each list (n_sealed pages); all others are open.
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
    int n_sealed; /* leading pages that are sealed */
} kvlist;

#define KVI_CLS_SHIFT 28
#define KVI_MAX_CLASSES 15 /* class 15 would make NO_PAGE a valid id */
#define KVI_IDX_MASK ((1u << KVI_CLS_SHIFT) - 1)

/* One page size class: its row formats, kernels, layout and allocator. */
typedef struct kvi_class {
    const kvl_codec *fk, *fv;   /* row formats of the K and V segments */
    int sealed;                 /* pages of this class hold sealed segments */
    int multi_decode;           /* decode (one query token) runs the G heads of a group through one
                                   multi-query call (quantized rows cost more to unpack than to read) */
    kvl_codec_kernels kk, kvk;  /* attention kernels for fk / fv */
    size_t kseg, vseg, koff, voff, page_bytes;
    int chunk_shift;
    uint32_t chunk_mask;
    uint8_t **chunks;
    uint32_t **refs;
    int n_chunks, cap_chunks;
    int64_t n_carved, n_free, n_used;
    uint32_t free_head;         /* full page id (class bits included) or NO_PAGE */
} kvi_class;

/* Per-layer codec configuration (codec instances with their state). */
typedef struct kvi_layer {
    const kvl_codec *ck, *cv;   /* codecs of K and V */
    int open_cls, seal_cls;     /* page classes (equal when neither side seals) */
    int seals;                  /* ck or cv is a sealing codec */
    int res_pages;              /* full pages kept open besides the last (residual r/P - 1) */
    int rot_k, rot_v;           /* Hadamard rotation of K (and Q) / of V (output un-rotated) */
    uint8_t *kst, *vst;         /* codec state: [n_head_kv][kst_bytes] / [n_head_kv][vst_bytes], or NULL */
    size_t kst_bytes, vst_bytes;
    size_t kseq_bytes, vseq_bytes; /* per-sequence state bytes per kv-head (0: none) */
    char spec[2][160];          /* canonical codec spec of K and V (kvl_codec_spec_str) */
} kvi_layer;

struct kvl_kv_pool {
    kvl_kv_config cfg;
    const kvl_codec *ck, *cv;   /* layer 0's codecs (kvl_kv_pool_codec) */
    kvl_kv_expsum_fn expsum;
    int D, P;
    int attn_cp; /* pages per attention chunk */
    kvi_class cls[KVI_MAX_CLASSES];
    int n_cls;
    kvi_layer *layers;          /* [n_layer] */
    float *rot_sign;            /* [D] random signs of the rotation (NULL: no layer rotates) */
    size_t used_bytes, held_bytes;
    size_t max_page_bytes;
    int has_seq_state;          /* some layer's codec keeps per-sequence state */
    char spec_k[160], spec_v[160]; /* canonical codec specs (layer 0) */
    kvl_policy_cfg pol;         /* eviction policy (policy.c) */
    int64_t n_taken;   /* pages handed out since creation (fault injection counts these) */
    int64_t fail_at;   /* testing: fail the reserve that would hand out page n_taken == fail_at (0 = off) */
    pthread_mutex_t mu;
};

/* Undo record of one list for an open transaction (txn.c). */
typedef struct kvundo {
    int len, n_pages, n_sealed; /* list state at begin */
    pref orig_last;   /* the partial last page at begin (mem NULL: none) */
    pref cow;         /* orig_last after an append copied it on write; the undo holds its reference */
    pref *saved;      /* page array before the first drop in the transaction (references held) */
    int n_saved, cap_saved, saved_len, has_saved;
    int32_t last_pos; /* truncate mode: position of the list's last row at begin (INT32_MIN: empty) */
} kvundo;

struct kvl_kv_table {
    kvl_kv_pool *pool;
    kvlist *lists; /* [n_layer][n_head_kv] */
    int64_t n_pages;
    size_t bytes;  /* bytes of the pages referenced (shared pages counted in full) */
    size_t peak;
    kvl_policy_seq *pol;   /* policy state, NULL for "full" */
    unsigned stat_flags;
    int n_head, group;
    /* attention statistics (stats.c): acc[a] is NULL when accumulator a is
     * off, else [n_layer][n_head] -> [cap] floats per cached token (list
     * order); raw: [n_layer][n_head] -> [cap] scores of the query being
     * processed (scratch of the attention loop) */
    float **acc[KVL_KV_N_ACC];
    float **raw;
    int *stat_cap;   /* [n_layer] */
    float *win_n;    /* [n_layer]: window queries accumulated into WSUM/WSQ since the layer's reset */
    int stat_window; /* W: the last W queries of each forward call feed WSUM/WSQ */
    float vote_a, vote_b; /* VEDA vote threshold a*mean - b*std of a query's scores */
    int vote_window;      /* only the window queries vote */
    int txn_trunc;        /* the open transaction is in truncate mode (txn.c): drops and seals are final */
    /* transactions (txn.c) */
    int txn;                 /* a transaction is open */
    kvundo *undo;            /* [n_layer][n_head_kv] */
    float **stat_save;       /* [n_layer] -> [n_acc on][n_head][stat_save_len]: statistics at the layer's first change */
    int *stat_save_len;      /* [n_layer]: tokens saved per query head, -1 = not saved */
    int *stat_save_cap;      /* [n_layer]: floats allocated */
    float *stat_save_win;    /* [n_layer]: window query count at the save */
    /* drop scratch (drop.c), grown as needed */
    pref *drop_old, *drop_wp;
    int drop_cap;
    float *drop_tmp;         /* [head_dim] */
    float *rot_tmp;          /* [2][head_dim]: rotated K and V rows of append */
    uint8_t **cst;           /* [n_layer][2] -> [n_head_kv][seq state bytes] per-sequence codec state, or NULL */
    uint8_t *seal_tmp;       /* one open page: the copy a seal reads from */
    const kvl_kv_mirror *mirror; /* stats_mirror.c: a table mirroring device pages (NULL: none) */
};

static inline const kvi_class *kvi_cls(const kvl_kv_pool *p, uint32_t id) { return &p->cls[id >> KVI_CLS_SHIFT]; }
static inline uint8_t *kvi_page_mem(const kvl_kv_pool *p, uint32_t id) {
    const kvi_class *c = kvi_cls(p, id);
    const uint32_t i = id & KVI_IDX_MASK;
    return c->chunks[i >> c->chunk_shift] + (size_t)(i & c->chunk_mask) * c->page_bytes;
}
static inline uint32_t *kvi_page_ref(kvl_kv_pool *p, uint32_t id) {
    const kvi_class *c = kvi_cls(p, id);
    const uint32_t i = id & KVI_IDX_MASK;
    return &c->refs[i >> c->chunk_shift][i & c->chunk_mask];
}
static inline size_t kvi_pref_bytes(const kvl_kv_pool *p, pref r) { return kvi_cls(p, r.id)->page_bytes; }
static inline kvlist *kvi_list(const kvl_kv_table *t, int layer, int head) {
    return &t->lists[(size_t)layer * t->pool->cfg.n_head_kv + head];
}
static inline int kvi_n_lists(const kvl_kv_pool *p) { return p->cfg.n_layer * p->cfg.n_head_kv; }

/* Make sure `need` pages of class cls can be taken from its free list
 * (growing the pool within the budget: bytes in use + need pages <= budget).
 * Pool mutex held. */
kvl_status kvi_pool_reserve(kvl_kv_pool *p, int cls, int64_t need, kvl_err *err);
/* Take a reserved page of class cls (refcount 1, bytes zeroed). Pool mutex held. */
pref kvi_page_take(kvl_kv_pool *p, int cls);
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
/* Hadamard rotation with random signs (rot.c), D a power of two:
 * rot: x <- H diag(sign) x / sqrt(D); unrot: its inverse. x: [D]. */
void kvi_rot(const kvl_kv_pool *p, float *x);
void kvi_unrot(const kvl_kv_pool *p, float *x);

/* Policy state of a new table (src: the table it forks, or NULL), and its free. */
kvl_status kvi_policy_init(kvl_kv_table *t, const kvl_kv_table *src, kvl_err *err);
void kvi_policy_free(kvl_kv_table *t);

/* Free the transaction buffers (table free). */
void kvi_txn_free(kvl_kv_table *t);

/* Codec state of (layer, kv-head, side) for encode/seal: the table's
 * per-sequence state when the codec has one, else the pool's (or NULL). */
static inline const void *kvi_codec_st(const kvl_kv_table *t, int layer, int head, int is_v) {
    const kvi_layer *ly = &t->pool->layers[layer];
    if (t->cst && t->cst[layer * 2 + is_v]) return t->cst[layer * 2 + is_v] + (size_t)head * (is_v ? ly->vseq_bytes : ly->kseq_bytes);
    const uint8_t *s = is_v ? ly->vst : ly->kst;
    return s ? s + (size_t)head * (is_v ? ly->vst_bytes : ly->kst_bytes) : NULL;
}

/* Record the table's current bytes in its peak. */
void kvi_table_note_bytes(kvl_kv_table *t);
/* Grow statistics of `layer` to hold at least n tokens per list (no-op when off). */
kvl_status kvi_stats_reserve(kvl_kv_table *t, int layer, int n);
/* Free all statistics arrays and turn statistics off. */
void kvi_stats_free(kvl_kv_table *t);
/* Accumulators that are on, in order: fills ids [KVL_KV_N_ACC], returns how many. */
int kvi_stats_on(const kvl_kv_table *t, int *ids);
/* Zero the statistics of tokens [from, to) of (layer, kv-head)'s query heads. */
void kvi_stats_zero(kvl_kv_table *t, int layer, int head, int from, int to);
/* Compact the statistics of (layer, kv-head)'s query heads as kvl_kv_drop
 * removes list indices idx [n_idx] (increasing) from a list of len tokens. */
void kvi_stats_drop(kvl_kv_table *t, int layer, int head, const int *idx, int n_idx, int len);

#endif
