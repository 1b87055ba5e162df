/* Device tests of the attention statistics (kvl_cuda_attn_run_stats,
 * attn_stats.cu) and the KV compaction (kvl_cuda_kv_compact,
 * kv_compact.cu) against the CPU: kvl_kv_attend with statistics enabled
 * (src/kv/attn.c stats path) and kvl_kv_drop (src/kv/drop.c, kv/stats.c)
 * on the very same page bytes (built by kvlite's CPU pool and codecs, as
 * tests/cuda/test_cuda.c does, uploaded under their CPU page ids).
 *
 * Per case (codec f16 / int8 / fp8 / int4z, P 16 / 32, D 64 / 128, G 3, 4
 * on the tensor-core kernels and G 6, 8 on the CUDA-core ones, sequences
 * of unequal lengths, one list empty, causal masks) and per plan (default,
 * one page per split, one split per list, so the (m, l) records come from
 * the merge path and the direct path): NQ1 decode queries in a row
 * (accumulation; masks move with each query), every accumulator compared;
 * then a drop of ~25% of each list's rows (one list keeps all, one loses a
 * leading run), the device compaction compared byte for byte with the CPU
 * pages (the list's first ceil(n_keep / P) pages, whole pages: both
 * compact in place from the same bytes, so even the stale rows past the
 * new length agree) and the compacted accumulators compared (tails zero);
 * then NQ2 more queries over the compacted lists. A prefill-like case runs
 * T queries of one sequence in one call (CPU: kvl_kv_attend with n_tok = T,
 * window W = 2; device: T sequences on the same lists and accumulator rows,
 * shared_rows = 1, qmask = the CPU's choice per query). Attention outputs
 * are compared as in test_cuda.c (1e-4 relative L2).
 *
 * Tolerances: the device scores differ from the CPU's by the order of the
 * fp32 sums (and the tensor cores' hi + lo split: ~2^-22 relative per
 * operand), |ds| <~ 1e-5 for scores of magnitude <~ 10 here; M is the same
 * max, L (the attention's own sum: __expf, split merge) agrees to ~1e-6
 * relative. So p = exp(s - M) / L agrees to ~1e-5 relative. Per element,
 * with n queries accumulated: MASS, WSUM, LAST 1e-4 |cpu| + 1e-6 n; WSQ
 * (p^2: twice the relative error) 2e-4 |cpu| + 1e-6 n; WENT (-p log p:
 * d = |1 + log p| dp <= 1.4e-5 per query, p |log p| <= 1/e; __logf ~2^-21)
 * 1e-4 |cpu| + 2e-5 n. VOTE is a count: a score within rounding (~1e-5) of
 * the threshold a*mean - b*std may vote differently; the flips are counted
 * and bounded by 2 + 1e-4 x the votes cast per comparison (expected ~0:
 * the scores spread over a few units, so P(|s - th| < 1e-5) ~ 1e-6). Rows
 * past a list's length must stay exactly 0. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/kvl_cuda.h"
#include "kv/codec.h"
#include "kv/kv.h"
#include "kv/kv_internal.h"
#include "test.h"
#include "cuda_test.h"

#define MAXB 6
#define MAXL (MAXB * 4)
#define NQ1 3
#define NQ2 2
#define NA KVL_KV_N_ACC
#define TOL_OUT 1e-4

static uint64_t rng = 0x2545f4914f6cdd1dull;
static double urand(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}
static float frand(float a) { return (float)((2 * urand() - 1) * a); }

typedef struct scase {
    const char *codec;
    int P, D, Hq, Hkv, B;
    int len[MAXB];   /* tokens appended per sequence (before the drops of unequal lengths) */
    int qback[MAXB]; /* first query's position: that many positions before the last cached one */
} scase;

/* One snapshot of the statistics: [NA][B][Hq][stride] floats. */
typedef struct snap {
    float *a;
} snap;

typedef struct cpu {
    kvl_kv_pool *pool;
    kvl_kv_table *t[MAXB];
    int32_t last[MAXB];
    int len0[MAXL], len1[MAXL]; /* list lengths before / after the eviction drop */
    int max_len0, stride;
    /* pages before the statistics (uploaded per plan) and after the drop */
    uint32_t *ids0[MAXL];
    uint8_t *pg0[MAXL], *pg1[MAXL];
    int np0[MAXL];
    int *keep[MAXL], nkeep[MAXL];
    float *q1, *q2;           /* [NQ][B][Hq][D] */
    int32_t qp1[NQ1][MAXB], qp2[NQ2][MAXB];
    float *ref1, *ref2;       /* outputs, as q */
    snap s1, s2, s3;          /* after phase 1, after the drop, after phase 2 */
    size_t page_bytes;
} cpu;

static size_t snap_floats(const scase *c, const cpu *h) { return (size_t)NA * c->B * c->Hq * h->stride; }

static void take_snap(const scase *c, cpu *h, snap *s) {
    s->a = calloc(snap_floats(c, h), sizeof(float));
    const int G = c->Hq / c->Hkv;
    for (int a = 0; a < NA; a++)
        for (int b = 0; b < c->B; b++)
            for (int qh = 0; qh < c->Hq; qh++) {
                const float *v = kvl_kv_table_stat(h->t[b], 0, qh, a);
                const int n = kvl_kv_table_len(h->t[b], 0, qh / G);
                if (v) memcpy(s->a + (((size_t)a * c->B + b) * c->Hq + qh) * h->stride, v, sizeof(float) * (size_t)n);
            }
}

static void copy_list_pages(const kvlist *L, size_t pb, int n, uint8_t **out) {
    *out = malloc(pb * (size_t)(n > 0 ? n : 1));
    for (int i = 0; i < n; i++) memcpy(*out + (size_t)i * pb, L->pages[i].mem, pb);
}

/* The CPU side of a case: pages, statistics of both phases, the drop. */
static int build(const scase *c, cpu *h) {
    kvl_err err = {0};
    memset(h, 0, sizeof *h);
    kvl_kv_config cfg = {.n_layer = 1, .n_head_kv = c->Hkv, .head_dim = c->D, .page_tokens = c->P,
                         .budget_bytes = (size_t)1 << 32, .n_head = c->Hq, .scalar_only = 1, .k_spec = c->codec};
    if (kvl_kv_pool_create(&cfg, &h->pool, &err) != KVL_OK) {
        fprintf(stderr, "pool: %s\n", err.msg);
        return 0;
    }
    h->page_bytes = kvl_kv_page_bytes(h->pool);
    const int D = c->D, Hkv = c->Hkv, Hq = c->Hq, B = c->B;
    for (int b = 0; b < B; b++) {
        if (kvl_kv_table_create(h->pool, &h->t[b], &err) != KVL_OK) return 0;
        const int n = c->len[b];
        int32_t *pos = malloc(sizeof(int32_t) * (size_t)(n + 1));
        float *k = malloc(sizeof(float) * (size_t)(n + 1) * Hkv * D), *v = malloc(sizeof(float) * (size_t)(n + 1) * Hkv * D);
        int32_t p = (int32_t)(urand() * 5);
        for (int i = 0; i < n; i++) {
            pos[i] = p;
            p += 1 + (urand() < 0.2 ? (int32_t)(urand() * 3) : 0);
            for (int hh = 0; hh < Hkv; hh++) {
                const float amp = (float)(0.2 + 2.8 * urand());
                for (int j = 0; j < D; j++) {
                    k[((size_t)i * Hkv + hh) * D + j] = frand(amp);
                    v[((size_t)i * Hkv + hh) * D + j] = frand(1.0f);
                }
            }
        }
        if (n > 0 && kvl_kv_append(h->t[b], 0, n, pos, k, v, &err) != KVL_OK) return 0;
        /* unequal lengths (as test_cuda.c): ~15% of head 1, all of head 0
         * of the second sequence, the first P + 1 rows of the last head */
        for (int hh = 0; hh < Hkv && n > 0; hh++) {
            int *idx = malloc(sizeof(int) * (size_t)n), m = 0;
            for (int i = 0; i < n; i++) {
                int drop = 0;
                if (hh == 1) drop = urand() < 0.15;
                if (hh == 0 && b == 1) drop = 1;
                if (hh == Hkv - 1 && hh != 1 && !(hh == 0 && b == 1)) drop = i <= c->P;
                if (drop) idx[m++] = i;
            }
            if (m && kvl_kv_drop(h->t[b], 0, hh, idx, m, &err) != KVL_OK) return 0;
            free(idx);
        }
        h->last[b] = n > 0 ? pos[n - 1] : 0;
        free(pos);
        free(k);
        free(v);
    }
    for (int b = 0; b < B; b++)
        for (int hh = 0; hh < Hkv; hh++) {
            const kvlist *L = kvi_list(h->t[b], 0, hh);
            const int li = b * Hkv + hh;
            h->len0[li] = L->len;
            h->np0[li] = L->n_pages;
            h->max_len0 = L->len > h->max_len0 ? L->len : h->max_len0;
            h->ids0[li] = malloc(sizeof(uint32_t) * (size_t)(L->n_pages + 1));
            for (int i = 0; i < L->n_pages; i++) h->ids0[li][i] = L->pages[i].id;
            copy_list_pages(L, h->page_bytes, L->n_pages, &h->pg0[li]);
        }
    h->stride = h->max_len0 > 0 ? h->max_len0 : 1;
    const unsigned flags = KVL_KV_STAT_MASS | KVL_KV_STAT_WIN | KVL_KV_STAT_LAST | KVL_KV_STAT_VOTE | KVL_KV_STAT_ENT;
    for (int b = 0; b < B; b++) {
        if (kvl_kv_table_stats_enable(h->t[b], flags, &err) != KVL_OK) {
            fprintf(stderr, "stats: %s\n", err.msg);
            return 0;
        }
        kvl_kv_table_stats_params(h->t[b], 32, 1.0f, 0.5f);
    }
    const size_t qn = (size_t)B * Hq * D;
    const float scale = 1.0f / sqrtf((float)D);
    void *scr = malloc(kvl_kv_attend_scratch_bytes(h->pool));
    h->q1 = malloc(sizeof(float) * qn * NQ1), h->ref1 = malloc(sizeof(float) * qn * NQ1);
    h->q2 = malloc(sizeof(float) * qn * NQ2), h->ref2 = malloc(sizeof(float) * qn * NQ2);
    for (int qi = 0; qi < NQ1; qi++)
        for (int b = 0; b < B; b++) {
            h->qp1[qi][b] = h->last[b] - c->qback[b] - 3 * qi; /* the mask moves with each query */
            float *q = h->q1 + qn * qi + (size_t)b * Hq * D;
            for (size_t i = 0; i < (size_t)Hq * D; i++) q[i] = frand(2.0f);
            kvl_kv_attend(h->t[b], 0, 1, q, &h->qp1[qi][b], Hq, scale, h->ref1 + qn * qi + (size_t)b * Hq * D, scr, 0, 1);
        }
    take_snap(c, h, &h->s1);
    /* the eviction: ~25% of each list's rows; list 0 keeps everything, the
     * last list loses its first 2P + 3 rows as well */
    for (int b = 0; b < B; b++)
        for (int hh = 0; hh < Hkv; hh++) {
            const int li = b * Hkv + hh, n = h->len0[li];
            int *idx = malloc(sizeof(int) * (size_t)(n + 1)), m = 0;
            h->keep[li] = malloc(sizeof(int) * (size_t)(n + 1));
            h->nkeep[li] = 0;
            for (int i = 0; i < n; i++) {
                int drop = li > 0 && urand() < 0.25;
                if (li == B * Hkv - 1 && i < 2 * c->P + 3) drop = 1;
                if (drop) idx[m++] = i;
                else h->keep[li][h->nkeep[li]++] = i;
            }
            if (m && kvl_kv_drop(h->t[b], 0, hh, idx, m, &err) != KVL_OK) {
                fprintf(stderr, "drop: %s\n", err.msg);
                return 0;
            }
            free(idx);
            const kvlist *L = kvi_list(h->t[b], 0, hh);
            h->len1[li] = L->len;
            if (L->len != h->nkeep[li]) return 0;
            for (int i = 0; i < L->n_pages; i++)
                if (L->pages[i].id != h->ids0[li][i]) {
                    fprintf(stderr, "drop did not compact in place (list %d page %d)\n", li, i);
                    return 0;
                }
            copy_list_pages(L, h->page_bytes, L->n_pages, &h->pg1[li]);
        }
    take_snap(c, h, &h->s2);
    for (int qi = 0; qi < NQ2; qi++)
        for (int b = 0; b < B; b++) {
            h->qp2[qi][b] = h->last[b] - 5 * qi;
            float *q = h->q2 + qn * qi + (size_t)b * Hq * D;
            for (size_t i = 0; i < (size_t)Hq * D; i++) q[i] = frand(2.0f);
            kvl_kv_attend(h->t[b], 0, 1, q, &h->qp2[qi][b], Hq, scale, h->ref2 + qn * qi + (size_t)b * Hq * D, scr, 0, 1);
        }
    take_snap(c, h, &h->s3);
    free(scr);
    return 1;
}

static void unbuild(const scase *c, cpu *h) {
    for (int li = 0; li < c->B * c->Hkv; li++) free(h->ids0[li]), free(h->pg0[li]), free(h->pg1[li]), free(h->keep[li]);
    for (int b = 0; b < c->B; b++) kvl_kv_table_free(h->t[b]);
    kvl_kv_pool_free(h->pool);
    free(h->q1), free(h->q2), free(h->ref1), free(h->ref2);
    free(h->s1.a), free(h->s2.a), free(h->s3.a);
}

/* Worst relative L2 error of the outputs [B*Hq][D]. */
static double out_err(const scase *c, const float *got, const float *ref) {
    double worst = 0;
    for (int u = 0; u < c->B * c->Hq; u++) {
        double e2 = 0, r2 = 0;
        for (int j = 0; j < c->D; j++) {
            const double g = got[(size_t)u * c->D + j], r = ref[(size_t)u * c->D + j];
            e2 += isfinite(g) ? (g - r) * (g - r) : INFINITY;
            r2 += r * r;
        }
        const double re = r2 > 0 ? sqrt(e2 / r2) : (e2 > 0 ? INFINITY : 0);
        worst = re > worst ? re : worst;
    }
    return worst;
}

static int n_cmp, total_flips;

/* Device accumulators dev ([NA][B][Hq][stride], the snapshot layout)
 * against the CPU snapshot ref after nq queries; lens: list lengths. */
static void cmp_stats(const char *what, const scase *c, int stride, const float *dev, const float *ref,
                      const int *lens, int nq, const char *plan) {
    const int G = c->Hq / c->Hkv;
    static const double rel[NA] = {1e-4, 1e-4, 2e-4, 1e-4, 0, 1e-4};
    static const double abs1[NA] = {1e-6, 1e-6, 1e-6, 1e-6, 0, 2e-5};
    static const char *nm[NA] = {"MASS", "WSUM", "WSQ", "LAST", "VOTE", "WENT"};
    double worst[NA] = {0};
    long flips = 0, votes = 0, tail_bad = 0;
    for (int a = 0; a < NA; a++)
        for (int b = 0; b < c->B; b++)
            for (int qh = 0; qh < c->Hq; qh++) {
                const int len = lens[b * c->Hkv + qh / G];
                const size_t o = (((size_t)a * c->B + b) * c->Hq + qh) * stride;
                for (int j = 0; j < stride; j++) {
                    const double d = dev[o + j], r = ref[o + j];
                    if (j >= len) {
                        tail_bad += d != 0.0;
                        continue;
                    }
                    if (a == KVL_KV_ACC_VOTE) {
                        flips += (long)fabs(d - r);
                        votes += (long)r;
                        if (!isfinite(d)) flips += 1000000;
                        continue;
                    }
                    const double lim = rel[a] * fabs(r) + abs1[a] * (a == KVL_KV_ACC_LAST ? 1 : nq);
                    const double e = isfinite(d) ? fabs(d - r) / lim : INFINITY;
                    worst[a] = e > worst[a] ? e : worst[a];
                }
            }
    int ok = tail_bad == 0 && flips <= 2 + votes / 10000;
    for (int a = 0; a < NA; a++) ok &= worst[a] <= 1.0;
    CHECK_MSG(ok,
              "%s %s P=%d D=%d G=%d plan %s %s: worst/tol MASS %.3g WSUM %.3g WSQ %.3g LAST %.3g WENT %.3g, vote flips "
              "%ld of %ld, %ld nonzero tail values",
              what, c->codec, c->P, c->D, G, plan, nm[0], worst[0], worst[1], worst[2], worst[3], worst[5], flips,
              votes, tail_bad);
    printf("note: %-6s P=%-2d D=%-3d G=%d %-13s %-14s worst/tol MASS %.2f WSUM %.2f WSQ %.2f LAST %.2f WENT %.2f; "
           "vote flips %ld of %ld\n",
           c->codec, c->P, c->D, G, plan, what, worst[0], worst[1], worst[2], worst[3], worst[5], flips, votes);
    total_flips += (int)flips;
    n_cmp++;
}

typedef struct dev {
    kvl_cuda_pool *pool;
    kvl_cuda_attn *attn;
    uint32_t *ids;
    int32_t *off, *len, *qpos, *koff, *nk, *keep, *old;
    int64_t *srow;
    float *q, *out, *acc[NA];
    int32_t off_h[MAXL];
    int n_ids, n_keep_all;
} dev;

#define TRY(x)                                                                                                        \
    do {                                                                                                              \
        if ((s = (x)) != KVL_OK) goto done;                                                                           \
    } while (0)

static void dev_free(dev *d) {
    kvl_cuda_attn_free(d->attn);
    kvl_cuda_pool_free(d->pool);
    kvl_cuda_free(d->ids), kvl_cuda_free(d->off), kvl_cuda_free(d->len), kvl_cuda_free(d->qpos);
    kvl_cuda_free(d->koff), kvl_cuda_free(d->nk), kvl_cuda_free(d->keep), kvl_cuda_free(d->old);
    kvl_cuda_free(d->srow), kvl_cuda_free(d->q), kvl_cuda_free(d->out);
    for (int a = 0; a < NA; a++) kvl_cuda_free(d->acc[a]);
    memset(d, 0, sizeof *d);
}

/* Download the device accumulators into the snapshot layout. */
static kvl_status get_acc(const scase *c, const cpu *h, const dev *d, float *out, kvl_err *err) {
    const size_t n = (size_t)c->B * c->Hq * h->stride;
    for (int a = 0; a < NA; a++) {
        kvl_status s = kvl_cuda_download(out + n * a, d->acc[a], sizeof(float) * n, err);
        if (s != KVL_OK) return s;
    }
    return KVL_OK;
}

static kvl_status run_q(const scase *c, const cpu *h, dev *d, const kvl_cuda_attn_stats *st, const float *q,
                        const int32_t *qp, int max_len, float *got, kvl_err *err) {
    const size_t qb = sizeof(float) * (size_t)c->B * c->Hq * c->D;
    kvl_cuda_attn_args x = {.n_seq = c->B, .max_len = max_len, .page_ids = d->ids, .list_off = d->off,
                            .list_len = d->len, .qpos = d->qpos, .q = d->q, .out = d->out,
                            .scale = 1.0f / sqrtf((float)c->D)};
    kvl_status s;
    if ((s = kvl_cuda_upload(d->q, q, qb, err)) || (s = kvl_cuda_upload(d->qpos, qp, sizeof(int32_t) * c->B, err)) ||
        (s = kvl_cuda_memset(d->out, 0xff, qb, err)) || (s = kvl_cuda_attn_run_stats(d->attn, &x, st, NULL, err)) ||
        (s = kvl_cuda_sync(err)))
        return s;
    return kvl_cuda_download(got, d->out, qb, err);
}

static void run_plan(const scase *c, cpu *h, const kvl_cuda_attn_tuning *tu, const char *plan) {
    kvl_err err = {0};
    dev d;
    memset(&d, 0, sizeof d);
    kvl_status s = KVL_OK;
    const int Hkv = c->Hkv, B = c->B, NL = B * Hkv, G = c->Hq / Hkv;
    const size_t qn = (size_t)B * c->Hq * c->D, an = (size_t)B * c->Hq * h->stride;
    float *got = malloc(sizeof(float) * qn), *acc = malloc(sizeof(float) * an * NA);
    uint8_t *pg = malloc(h->page_bytes);
    char name[32];
    snprintf(name, sizeof name, "%.*s", (int)strcspn(c->codec, ":+"), c->codec);
    int64_t n_pages = 1;
    uint32_t ids[4096];
    int32_t lens[MAXL], koff[MAXL], nk[MAXL], *keep_all = NULL;
    int64_t srow[MAXL];
    for (int li = 0; li < NL; li++)
        for (int i = 0; i < h->np0[li]; i++)
            if ((int64_t)(h->ids0[li][i] & KVI_IDX_MASK) + 1 > n_pages) n_pages = (int64_t)(h->ids0[li][i] & KVI_IDX_MASK) + 1;
    kvl_cuda_pool_config pc = {.codec_k = name, .head_dim = c->D, .page_tokens = c->P, .n_pages = n_pages};
    TRY(kvl_cuda_pool_create(&pc, &d.pool, &err));
    int n = 0, nkeep = 0;
    for (int li = 0; li < NL; li++) {
        d.off_h[li] = n;
        lens[li] = h->len0[li];
        for (int i = 0; i < h->np0[li]; i++) {
            ids[n++] = h->ids0[li][i];
            TRY(kvl_cuda_pool_upload(d.pool, h->ids0[li][i], h->pg0[li] + (size_t)i * h->page_bytes, 1, &err));
        }
        koff[li] = nkeep;
        nk[li] = h->nkeep[li];
        nkeep += h->nkeep[li];
        srow[li] = (int64_t)((li / Hkv) * c->Hq + (li % Hkv) * G) * h->stride;
    }
    keep_all = malloc(sizeof(int32_t) * (size_t)(nkeep + 1));
    for (int li = 0; li < NL; li++)
        for (int i = 0; i < h->nkeep[li]; i++) keep_all[koff[li] + i] = h->keep[li][i];
    TRY(kvl_cuda_alloc((void **)&d.ids, sizeof(uint32_t) * (size_t)(n + 1), &err));
    TRY(kvl_cuda_alloc((void **)&d.off, sizeof(int32_t) * NL, &err));
    TRY(kvl_cuda_alloc((void **)&d.len, sizeof(int32_t) * NL, &err));
    TRY(kvl_cuda_alloc((void **)&d.old, sizeof(int32_t) * NL, &err));
    TRY(kvl_cuda_alloc((void **)&d.koff, sizeof(int32_t) * NL, &err));
    TRY(kvl_cuda_alloc((void **)&d.nk, sizeof(int32_t) * NL, &err));
    TRY(kvl_cuda_alloc((void **)&d.srow, sizeof(int64_t) * NL, &err));
    TRY(kvl_cuda_alloc((void **)&d.keep, sizeof(int32_t) * (size_t)(nkeep + 1), &err));
    TRY(kvl_cuda_alloc((void **)&d.qpos, sizeof(int32_t) * B, &err));
    TRY(kvl_cuda_alloc((void **)&d.q, sizeof(float) * qn, &err));
    TRY(kvl_cuda_alloc((void **)&d.out, sizeof(float) * qn, &err));
    for (int a = 0; a < NA; a++) {
        TRY(kvl_cuda_alloc((void **)&d.acc[a], sizeof(float) * an, &err));
        TRY(kvl_cuda_memset(d.acc[a], 0, sizeof(float) * an, &err));
    }
    TRY(kvl_cuda_upload(d.ids, ids, sizeof(uint32_t) * (size_t)n, &err));
    TRY(kvl_cuda_upload(d.off, d.off_h, sizeof(int32_t) * NL, &err));
    TRY(kvl_cuda_upload(d.len, lens, sizeof(int32_t) * NL, &err));
    TRY(kvl_cuda_upload(d.old, lens, sizeof(int32_t) * NL, &err));
    TRY(kvl_cuda_upload(d.koff, koff, sizeof(int32_t) * NL, &err));
    TRY(kvl_cuda_upload(d.nk, nk, sizeof(int32_t) * NL, &err));
    TRY(kvl_cuda_upload(d.srow, srow, sizeof(int64_t) * NL, &err));
    TRY(kvl_cuda_upload(d.keep, keep_all, sizeof(int32_t) * (size_t)(nkeep + 1), &err));
    TRY(kvl_cuda_attn_create(d.pool, c->Hq, Hkv, B, h->max_len0, tu, &d.attn, &err));
    TRY(kvl_cuda_attn_enable_stats(d.attn, &err));
    int cp = 0, ns = 0;
    kvl_cuda_attn_plan(d.attn, B, h->max_len0, &cp, &ns);
    kvl_cuda_attn_stats st = {.stride = h->stride, .vote_a = 1.0f, .vote_b = 0.5f};
    for (int a = 0; a < NA; a++) st.acc[a] = d.acc[a];
    char pl[48];
    snprintf(pl, sizeof pl, "%s/%d", plan, ns);
    /* phase 1: NQ1 decode queries, accumulating */
    double worst = 0;
    for (int qi = 0; qi < NQ1; qi++) {
        TRY(run_q(c, h, &d, &st, h->q1 + qn * qi, h->qp1[qi], h->max_len0, got, &err));
        const double e = out_err(c, got, h->ref1 + qn * qi);
        worst = e > worst ? e : worst;
    }
    TRY(get_acc(c, h, &d, acc, &err));
    cmp_stats("3 queries", c, h->stride, acc, h->s1.a, h->len0, NQ1, pl);
    /* the compaction: pages byte for byte, accumulators moved */
    kvl_cuda_compact_args ca = {.n_list = NL, .page_ids = d.ids, .list_off = d.off, .old_len = d.old,
                                .keep_off = d.koff, .n_keep = d.nk, .keep = d.keep, .stat_row = d.srow,
                                .n_stat_rows = G, .stat_stride = h->stride};
    for (int a = 0; a < NA; a++) ca.acc[a] = d.acc[a];
    TRY(kvl_cuda_kv_compact(d.pool, &ca, NULL, &err));
    TRY(kvl_cuda_sync(&err));
    int bad_pages = 0, pages = 0;
    for (int li = 0; li < NL; li++) {
        const int np = (h->len1[li] + c->P - 1) / c->P;
        for (int i = 0; i < np; i++) {
            TRY(kvl_cuda_pool_download(d.pool, h->ids0[li][i], pg, 1, &err));
            bad_pages += memcmp(pg, h->pg1[li] + (size_t)i * h->page_bytes, h->page_bytes) != 0;
            pages++;
        }
    }
    CHECK_MSG(bad_pages == 0, "%s P=%d D=%d G=%d plan %s: %d of %d compacted pages differ from kvl_kv_drop's",
              c->codec, c->P, c->D, G, pl, bad_pages, pages);
    TRY(get_acc(c, h, &d, acc, &err));
    cmp_stats("compacted", c, h->stride, acc, h->s2.a, h->len1, NQ1, pl);
    /* phase 2 over the compacted lists */
    for (int li = 0; li < NL; li++) lens[li] = h->len1[li];
    TRY(kvl_cuda_upload(d.len, lens, sizeof(int32_t) * NL, &err));
    for (int qi = 0; qi < NQ2; qi++) {
        TRY(run_q(c, h, &d, &st, h->q2 + qn * qi, h->qp2[qi], h->max_len0, got, &err));
        const double e = out_err(c, got, h->ref2 + qn * qi);
        worst = e > worst ? e : worst;
    }
    TRY(get_acc(c, h, &d, acc, &err));
    cmp_stats("+2 queries", c, h->stride, acc, h->s3.a, h->len1, NQ1 + NQ2, pl);
    CHECK_MSG(worst <= TOL_OUT, "%s P=%d D=%d G=%d plan %s: attention output rel L2 %.3g", c->codec, c->P, c->D, G, pl,
              worst);
    printf("note: %-6s P=%-2d D=%-3d G=%d %-13s outputs rel L2 %.2e, %d compacted pages identical of %d\n", c->codec,
           c->P, c->D, G, pl, worst, pages - bad_pages, pages);
done:
    CHECK_MSG(s == KVL_OK, "%s P=%d D=%d G=%d plan %s: %s", c->codec, c->P, c->D, G, plan, err.msg);
    dev_free(&d);
    free(keep_all);
    free(got), free(acc), free(pg);
}

static void run_case(const scase *c) {
    cpu h;
    if (!build(c, &h)) {
        CHECK_MSG(0, "CPU build of %s P=%d D=%d failed", c->codec, c->P, c->D);
        return;
    }
    const kvl_cuda_attn_tuning plans[3] = {{0, 0, 0, 0, 0, 0}, {0, c->P, c->P, 0, 0, -1}, {0, 4096, 4096, 0, 0, 0}};
    const char *names[3] = {"default", "1 page/split", "1 split/list"};
    for (int i = 0; i < 3; i++) run_plan(c, &h, &plans[i], names[i]);
    unbuild(c, &h);
}

/* A prefill-like call: T queries of one sequence in one CPU call (window
 * W = 2: the last 2 queries feed WSUM / WSQ / WENT, the last LAST, all
 * MASS and VOTE) against T device sequences on the same lists and rows. */
static void run_prefill(const char *codec, int P, int D, int Hq, int Hkv, int n_tok) {
    enum { T = 5, W = 2 };
    kvl_err err = {0};
    kvl_kv_pool *pool = NULL;
    kvl_kv_table *t = NULL;
    kvl_kv_config cfg = {.n_layer = 1, .n_head_kv = Hkv, .head_dim = D, .page_tokens = P,
                         .budget_bytes = (size_t)1 << 30, .n_head = Hq, .scalar_only = 1, .k_spec = codec};
    dev d;
    memset(&d, 0, sizeof d);
    kvl_status s = KVL_OK;
    const int G = Hq / Hkv;
    float *k = malloc(sizeof(float) * (size_t)n_tok * Hkv * D), *v = malloc(sizeof(float) * (size_t)n_tok * Hkv * D);
    float *q = malloc(sizeof(float) * T * Hq * D), *ref = malloc(sizeof(float) * T * Hq * D);
    float *got = malloc(sizeof(float) * T * Hq * D);
    int32_t *pos = malloc(sizeof(int32_t) * (size_t)n_tok), qp[T], off[T * 8], lens[T * 8], row[T];
    uint8_t qm[T];
    uint32_t *ids = NULL;
    float *acc = NULL, *cpu_acc = NULL;
    uint8_t *qmask_d = NULL;
    int32_t *row_d = NULL;
    const size_t an = (size_t)Hq * n_tok;
    if (kvl_kv_pool_create(&cfg, &pool, &err) != KVL_OK || kvl_kv_table_create(pool, &t, &err) != KVL_OK) {
        s = KVL_ERR_INTERNAL;
        goto done;
    }
    for (int i = 0; i < n_tok; i++) {
        pos[i] = i;
        for (int j = 0; j < Hkv * D; j++) k[(size_t)i * Hkv * D + j] = frand(1.5f), v[(size_t)i * Hkv * D + j] = frand(1.0f);
    }
    TRY(kvl_kv_append(t, 0, n_tok, pos, k, v, &err));
    TRY(kvl_kv_table_stats_enable(t, KVL_KV_STAT_MASS | KVL_KV_STAT_WIN | KVL_KV_STAT_LAST | KVL_KV_STAT_VOTE |
                                         KVL_KV_STAT_ENT, &err));
    kvl_kv_table_stats_params(t, W, 1.0f, 0.5f);
    {
        int64_t n_pages = 1;
        const int np = kvi_list(t, 0, 0)->n_pages;
        ids = malloc(sizeof(uint32_t) * (size_t)np * Hkv);
        for (int h = 0; h < Hkv; h++)
            for (int i = 0; i < np; i++) {
                ids[h * np + i] = kvi_list(t, 0, h)->pages[i].id;
                if ((int64_t)(ids[h * np + i] & KVI_IDX_MASK) + 1 > n_pages) n_pages = (ids[h * np + i] & KVI_IDX_MASK) + 1;
            }
        char name[32];
        snprintf(name, sizeof name, "%.*s", (int)strcspn(codec, ":+"), codec);
        kvl_cuda_pool_config pc = {.codec_k = name, .head_dim = D, .page_tokens = P, .n_pages = n_pages};
        TRY(kvl_cuda_pool_create(&pc, &d.pool, &err));
        for (int h = 0; h < Hkv; h++)
            for (int i = 0; i < np; i++)
                TRY(kvl_cuda_pool_upload(d.pool, ids[h * np + i], kvi_list(t, 0, h)->pages[i].mem, 1, &err));
        for (int b = 0; b < T; b++) {
            for (int h = 0; h < Hkv; h++) off[b * Hkv + h] = h * np, lens[b * Hkv + h] = n_tok;
            row[b] = 0;
            qp[b] = n_tok - 1 - 7 * (T - 1 - b); /* causal: earlier queries see fewer rows */
            qm[b] = 1u << KVL_CUDA_ACC_MASS | 1u << KVL_CUDA_ACC_VOTE;
            if (b >= T - W) qm[b] |= 1u << KVL_CUDA_ACC_WSUM | 1u << KVL_CUDA_ACC_WENT;
            if (b == T - 1) qm[b] |= 1u << KVL_CUDA_ACC_LAST;
        }
        TRY(kvl_cuda_alloc((void **)&d.ids, sizeof(uint32_t) * (size_t)np * Hkv, &err));
        TRY(kvl_cuda_alloc((void **)&d.off, sizeof(int32_t) * T * Hkv, &err));
        TRY(kvl_cuda_alloc((void **)&d.len, sizeof(int32_t) * T * Hkv, &err));
        TRY(kvl_cuda_alloc((void **)&d.qpos, sizeof(int32_t) * T, &err));
        TRY(kvl_cuda_alloc((void **)&row_d, sizeof(int32_t) * T, &err));
        TRY(kvl_cuda_alloc((void **)&qmask_d, T, &err));
        TRY(kvl_cuda_alloc((void **)&d.q, sizeof(float) * T * Hq * D, &err));
        TRY(kvl_cuda_alloc((void **)&d.out, sizeof(float) * T * Hq * D, &err));
        TRY(kvl_cuda_upload(d.ids, ids, sizeof(uint32_t) * (size_t)np * Hkv, &err));
        TRY(kvl_cuda_upload(d.off, off, sizeof(int32_t) * T * Hkv, &err));
        TRY(kvl_cuda_upload(d.len, lens, sizeof(int32_t) * T * Hkv, &err));
        TRY(kvl_cuda_upload(d.qpos, qp, sizeof(int32_t) * T, &err));
        TRY(kvl_cuda_upload(row_d, row, sizeof(int32_t) * T, &err));
        TRY(kvl_cuda_upload(qmask_d, qm, T, &err));
        for (int a = 0; a < NA; a++) {
            TRY(kvl_cuda_alloc((void **)&d.acc[a], sizeof(float) * an, &err));
            TRY(kvl_cuda_memset(d.acc[a], 0, sizeof(float) * an, &err));
        }
        TRY(kvl_cuda_attn_create(d.pool, Hq, Hkv, T, n_tok, NULL, &d.attn, &err));
        TRY(kvl_cuda_attn_enable_stats(d.attn, &err));
    }
    kvl_cuda_attn_stats st = {.row = row_d, .stride = n_tok, .qmask = qmask_d, .vote_a = 1.0f, .vote_b = 0.5f,
                              .shared_rows = 1};
    for (int a = 0; a < NA; a++) st.acc[a] = d.acc[a];
    double worst = 0;
    void *scr = malloc(kvl_kv_attend_scratch_bytes(pool));
    for (int call = 0; call < 2; call++) { /* two calls: accumulation across calls */
        for (int i = 0; i < T * Hq * D; i++) q[i] = frand(2.0f);
        kvl_kv_attend(t, 0, T, q, qp, Hq, 1.0f / sqrtf((float)D), ref, scr, 0, 1);
        kvl_cuda_attn_args x = {.n_seq = T, .max_len = n_tok, .page_ids = d.ids, .list_off = d.off, .list_len = d.len,
                                .qpos = d.qpos, .q = d.q, .out = d.out, .scale = 1.0f / sqrtf((float)D)};
        TRY(kvl_cuda_upload(d.q, q, sizeof(float) * T * Hq * D, &err));
        TRY(kvl_cuda_attn_run_stats(d.attn, &x, &st, NULL, &err));
        TRY(kvl_cuda_sync(&err));
        TRY(kvl_cuda_download(got, d.out, sizeof(float) * T * Hq * D, &err));
        scase c1 = {.codec = codec, .P = P, .D = D, .Hq = Hq, .Hkv = Hkv, .B = T};
        const double e = out_err(&c1, got, ref);
        worst = e > worst ? e : worst;
    }
    free(scr);
    /* snapshot layout with B = 1 */
    acc = malloc(sizeof(float) * an * NA), cpu_acc = calloc(an * NA, sizeof(float));
    for (int a = 0; a < NA; a++) {
        TRY(kvl_cuda_download(acc + an * a, d.acc[a], sizeof(float) * an, &err));
        for (int qh = 0; qh < Hq; qh++) {
            const float *cv = kvl_kv_table_stat(t, 0, qh, a);
            if (cv) memcpy(cpu_acc + an * a + (size_t)qh * n_tok, cv, sizeof(float) * (size_t)n_tok);
        }
    }
    {
        scase c1 = {.codec = codec, .P = P, .D = D, .Hq = Hq, .Hkv = Hkv, .B = 1};
        int l1[8];
        for (int h = 0; h < Hkv; h++) l1[h] = n_tok;
        cmp_stats("prefill 2x5", &c1, n_tok, acc, cpu_acc, l1, 2 * T, "shared rows");
    }
    CHECK_MSG(worst <= TOL_OUT, "prefill %s: attention output rel L2 %.3g", codec, worst);
done:
    CHECK_MSG(s == KVL_OK, "prefill %s P=%d D=%d G=%d: %s", codec, P, D, G, err.msg);
    dev_free(&d);
    kvl_cuda_free(row_d), kvl_cuda_free(qmask_d);
    kvl_kv_table_free(t);
    kvl_kv_pool_free(pool);
    free(k), free(v), free(q), free(ref), free(got), free(pos), free(ids), free(acc), free(cpu_acc);
}

int main(void) {
    if (cuda_test_device()) return 1;
    kvl_err err = {0};
    /* the tensor-core kernels: codec x P x D x G 3 / 4 */
    const char *codecs[] = {"f16", "int8", "fp8", "int4z"};
    const int Ps[2] = {16, 32}, Ds[2] = {64, 128}, Gs[2][2] = {{6, 2}, {8, 2}};
    for (int ci = 0; ci < 4; ci++)
        for (int pi = 0; pi < 2; pi++)
            for (int di = 0; di < 2; di++)
                for (int gi = 0; gi < 2; gi++) {
                    scase c = {.codec = codecs[ci], .P = Ps[pi], .D = Ds[di], .Hq = Gs[gi][0], .Hkv = Gs[gi][1],
                               .B = 3, .len = {1100, 300, 37}, .qback = {0, 150, 1}};
                    run_case(&c);
                }
    /* the CUDA-core fallback (G > 4), more splits, a single sequence */
    const scase extra[] = {
        {"f16", 32, 128, 16, 2, 2, {700, 1500}, {0, 3}},
        {"int8", 16, 64, 8, 1, 2, {1000, 77}, {0, 2}},
        {"fp8", 32, 64, 12, 2, 2, {513, 900}, {0, 7}},
        {"int4z", 32, 128, 16, 2, 2, {129, 1500}, {0, 3}},
        {"f16", 16, 128, 4, 1, 1, {5000}, {0}},
        {"int8", 32, 128, 32, 8, 1, {2100}, {40}},
    };
    for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++) run_case(&extra[i]);
    run_prefill("f16", 32, 128, 8, 2, 700);
    run_prefill("int8", 16, 64, 9, 3, 300);
    run_prefill("int4z", 32, 64, 6, 2, 450);
    /* refused: sealing codecs (statistics and compaction) */
    {
        kvl_cuda_pool *p = NULL;
        kvl_cuda_attn *a = NULL;
        kvl_cuda_pool_config pc = {.codec_k = "kivi2z", .head_dim = 64, .page_tokens = 32, .n_pages = 4,
                                   .n_pages_sealed = 4};
        if (kvl_cuda_pool_create(&pc, &p, &err) == KVL_OK &&
            kvl_cuda_attn_create(p, 4, 1, 1, 128, NULL, &a, &err) == KVL_OK) {
            CHECK(kvl_cuda_attn_enable_stats(a, &err) == KVL_ERR_UNSUPPORTED);
            printf("note: kivi2z statistics refused: %s\n", err.msg);
            kvl_cuda_compact_args ca = {.n_list = 1};
            CHECK(kvl_cuda_kv_compact(p, &ca, NULL, &err) == KVL_ERR_UNSUPPORTED);
            printf("note: kivi2z compaction refused: %s\n", err.msg);
        } else {
            CHECK_MSG(0, "kivi2z pool: %s", err.msg);
        }
        kvl_cuda_attn_free(a);
        kvl_cuda_pool_free(p);
    }
    printf("note: %d statistics comparisons, %d vote flips in all\n", n_cmp, total_flips);
    KVL_TEST_END();
}
