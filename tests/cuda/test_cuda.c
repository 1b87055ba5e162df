/* Device tests of the CUDA backend (make test-cuda; needs a GPU): paged
 * decode attention against the CPU reference kvl_kv_attend on the very same
 * page bytes. Pages are built by kvlite's CPU pool and codecs (kvl_kv_append,
 * kvl_kv_drop for unequal head lengths, kvl_kv_seal for the sealing KIVI
 * codecs, whose lists then hold sealed pages followed by open f16 pages),
 * uploaded under their CPU page ids (class bits included), and the device
 * result is compared with kvl_kv_attend's for every query head: codecs f16,
 * int8, fp8, int4z, kivi4z, kivi2z, page sizes 16/32/64, head_dim 64 and 128,
 * GQA groups 1/3/4/8, batches of sequences of unequal lengths (1 to 4097
 * tokens, not multiples of P, one list empty), causal masks by position
 * (queries before the end of the cache, gaps in positions), four plans
 * (default, one page per split, one split per list, a grid of several waves
 * so the plan's wave fit runs) so both the direct and the merge path run,
 * splits that begin inside the sealed prefix, inside the open pages and on
 * their boundary, and the kernel variants (f16, int8).
 *
 * Tolerance: both sides dequantize the same bytes exactly and accumulate in
 * fp32, so they differ only by the order and grouping of the sums:
 *  - f16 -> f32, int8 code -> f32 are exact; the int8 / fp8 row scale is
 *    applied once to the dot product and to the probability (the reference
 *    multiplies each value: one rounding of 2^-24 per element);
 *  - fp8: the e4m3 byte is an exact half (times 2^-8), the scale * 256 exact;
 *  - int4z: c - z is an exact integer, s (c - z) exact in f32 (4-bit mantissa
 *    times < 2^8); the device applies s to the thread's 8-value partial sum;
 *  - kivi keys: s c - z s is exact (as the reference's s c + min);
 *    kivi values: the device sums p s c and p s z separately and subtracts
 *    (the reference adds p s c + p min per element): with codes and zero
 *    points below 2^8 the two sums are at most ~2^8 times the output's
 *    scale, so rounding stays below ~2^8 * 2^-24 = 1.5e-5 relative;
 *  - tensor-core kernels (attn_tc.cuh: int4z, kivi2z, f16, int8, fp8, G <= 4): codes enter
 *    the mma as exact f16 integers c - z; the f32 operand (scaled query,
 *    query x page scale, probability x token scale) as hi = f16(x) plus
 *    lo = f16((x - hi) 2^11), which carries x to ~2^-22 relative (for
 *    |x| < 2^-14, f16 subnormals, to ~2^-35 absolute: far under the
 *    bound); f16 x f16 products are exact in the f32 accumulation;
 * plus the D-term dots, softmax sums over up to ~2K rows, the split merge
 * and __expf (ex2.approx: about 2^-22 relative, plus the argument's
 * rounding, |x| 2^-24 for |x| < 30). That is ~1e-6 relative (1e-5 for the
 * KIVI values); the bound is 1e-4 on ||gpu - cpu||_2 / ||cpu||_2 per query
 * head, and 1e-4 * max|cpu| + 1e-6 on every element. A wrong row, page,
 * scale, zero point, channel order or mask moves the result by >= 1e-2
 * here: the test checks that too, by swapping two device pages and
 * expecting the bound to fail, and by putting an open page before a sealed
 * one (the kernel must flag it with NaN). Outputs are poisoned with NaN
 * before each run, so an unwritten element fails. */
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

#define TOL_REL 1e-4
#define MAXB 8

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static double urand(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}
static float frand(float a) { return (float)((2 * urand() - 1) * a); }

typedef struct tcase {
    const char *codec; /* a codec spec: "f16", "kivi4z:r=64", ... */
    int P, D, Hq, Hkv, B;
    int len[MAXB];    /* tokens appended per sequence (before drops) */
    int qback[MAXB];  /* the query's position is that many positions before the last cached one */
} tcase;

typedef struct built {
    kvl_kv_pool *pool;
    kvl_kv_table *t[MAXB];
    int32_t qpos[MAXB];
    float *q, *ref; /* [B][Hq][D] */
} built;

/* CPU side: pages through kvlite's own pool and codecs, then the reference. */
static int build(const tcase *c, built *bt) {
    kvl_err err = {0};
    memset(bt, 0, sizeof *bt);
    kvl_kv_config cfg = {.n_layer = 1, .n_head_kv = c->Hkv, .head_dim = c->D, .page_tokens = c->P,
                         .budget_bytes = (size_t)1 << 32, .n_head = c->Hq, .scalar_only = 1, .k_spec = c->codec};
    if (kvl_kv_pool_create(&cfg, &bt->pool, &err) != KVL_OK) {
        fprintf(stderr, "pool: %s\n", err.msg);
        return 0;
    }
    const int D = c->D, Hkv = c->Hkv, Hq = c->Hq;
    bt->q = malloc(sizeof(float) * (size_t)c->B * Hq * D);
    bt->ref = malloc(sizeof(float) * (size_t)c->B * Hq * D);
    for (int b = 0; b < c->B; b++) {
        if (kvl_kv_table_create(bt->pool, &bt->t[b], &err) != KVL_OK) return 0;
        const int n = c->len[b];
        int32_t *pos = malloc(sizeof(int32_t) * (size_t)(n + 1));
        float *k = malloc(sizeof(float) * (size_t)(n + 1) * Hkv * D), *v = malloc(sizeof(float) * (size_t)(n + 1) * Hkv * D);
        int32_t p = (int32_t)(urand() * 5);
        for (int i = 0; i < n; i++) {
            pos[i] = p;
            p += 1 + (urand() < 0.2 ? (int32_t)(urand() * 3) : 0); /* gaps, as after eviction */
            for (int h = 0; h < Hkv; h++) {
                const float amp = (float)(0.2 + 2.8 * urand()); /* rows of unequal norm: a peaky softmax */
                for (int j = 0; j < D; j++) {
                    k[((size_t)i * Hkv + h) * D + j] = frand(amp);
                    v[((size_t)i * Hkv + h) * D + j] = frand(1.0f);
                }
            }
        }
        if (n > 0 && kvl_kv_append(bt->t[b], 0, n, pos, k, v, &err) != KVL_OK) {
            fprintf(stderr, "append: %s\n", err.msg);
            return 0;
        }
        /* unequal head lengths: drop a random ~15% from head 1, everything from
         * head 0 of the second sequence, the first P+1 rows of the last head */
        for (int h = 0; h < Hkv && n > 0; h++) {
            int *idx = malloc(sizeof(int) * (size_t)n), m = 0;
            for (int i = 0; i < n; i++) {
                int drop = 0;
                if (h == 1) drop = urand() < 0.15;
                if (h == 0 && b == 1) drop = 1;
                if (h == Hkv - 1 && h != 1 && !(h == 0 && b == 1)) drop = i <= c->P;
                if (drop) idx[m++] = i;
            }
            if (m && kvl_kv_drop(bt->t[b], 0, h, idx, m, &err) != KVL_OK) {
                fprintf(stderr, "drop: %s\n", err.msg);
                return 0;
            }
            free(idx);
        }
        /* sealing codecs: full pages outside the residual window become sealed */
        if (kvl_kv_seal(bt->t[b], 0, &err) != KVL_OK) {
            fprintf(stderr, "seal: %s\n", err.msg);
            return 0;
        }
        bt->qpos[b] = (n > 0 ? pos[n - 1] : 0) - c->qback[b];
        free(pos);
        free(k);
        free(v);
        for (size_t i = 0; i < (size_t)Hq * D; i++) bt->q[(size_t)b * Hq * D + i] = frand(2.0f);
        void *scr = malloc(kvl_kv_attend_scratch_bytes(bt->pool));
        kvl_kv_attend(bt->t[b], 0, 1, bt->q + (size_t)b * Hq * D, &bt->qpos[b], Hq, 1.0f / sqrtf((float)D),
                      bt->ref + (size_t)b * Hq * D, scr, 0, 1);
        free(scr);
    }
    return 1;
}

static void unbuild(built *bt, int B) {
    for (int b = 0; b < B; b++) kvl_kv_table_free(bt->t[b]);
    kvl_kv_pool_free(bt->pool);
    free(bt->q);
    free(bt->ref);
}

/* Worst per-head relative L2 error and worst element error over the tolerance. */
static void compare(const tcase *c, const float *got, const float *ref, double *rel, double *elem, int *nonfinite) {
    const int D = c->D;
    *rel = 0, *elem = 0, *nonfinite = 0;
    for (int u = 0; u < c->B * c->Hq; u++) {
        double e2 = 0, r2 = 0, rmax = 0, emax = 0;
        for (int j = 0; j < D; j++) {
            const double g = got[(size_t)u * D + j], r = ref[(size_t)u * D + j];
            if (!isfinite(g)) (*nonfinite)++;
            e2 += (g - r) * (g - r);
            r2 += r * r;
            rmax = fabs(r) > rmax ? fabs(r) : rmax;
            emax = fabs(g - r) > emax ? fabs(g - r) : emax;
        }
        const double re = r2 > 0 ? sqrt(e2 / r2) : (e2 > 0 ? INFINITY : 0);
        const double ee = emax / (TOL_REL * rmax + 1e-6);
        if (re > *rel) *rel = re;
        if (ee > *elem) *elem = ee;
    }
}

typedef struct dev {
    kvl_cuda_pool *pool;
    uint32_t *ids;
    int32_t *off, *len, *qpos;
    float *q, *out;
    int max_len, total_pages;
    int mixed, sealed_lists; /* lists with sealed and open pages / with sealed pages */
    uint32_t *ids_host;      /* [total_pages] */
    int32_t off_host[MAXB * 16], len_host[MAXB * 16];
} dev;

static kvl_status upload(const tcase *c, const built *bt, dev *d, kvl_err *err) {
    memset(d, 0, sizeof *d);
    const kvl_kv_pool *cp = bt->pool;
    d->ids_host = NULL;
    const int Hkv = c->Hkv, B = c->B;
    int64_t n_cls_pages[2] = {0, 0};
    int total = 0;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < Hkv; h++) {
            const kvlist *L = kvi_list(bt->t[b], 0, h);
            total += L->n_pages;
            if (L->n_sealed && L->n_sealed < L->n_pages) d->mixed++;
            if (L->n_sealed) d->sealed_lists++;
            for (int i = 0; i < L->n_pages; i++) {
                const uint32_t cl = L->pages[i].id >> KVI_CLS_SHIFT, ix = L->pages[i].id & KVI_IDX_MASK;
                if (cl > 1) return kvl_err_set(err, KVL_ERR_INTERNAL, "page of class %u", cl);
                if ((int64_t)ix + 1 > n_cls_pages[cl]) n_cls_pages[cl] = (int64_t)ix + 1;
            }
        }
    /* the codec name of the spec (up to ':' or '+') */
    char name[32];
    snprintf(name, sizeof name, "%.*s", (int)strcspn(c->codec, ":+"), c->codec);
    kvl_cuda_pool_config pc = {.codec_k = name, .head_dim = c->D, .page_tokens = c->P, .n_pages = n_cls_pages[0],
                               .n_pages_sealed = n_cls_pages[1]};
    kvl_status s = kvl_cuda_pool_create(&pc, &d->pool, err);
    if (s != KVL_OK) return s;
    if (kvl_cuda_pool_page_bytes(d->pool) != kvl_kv_page_bytes(cp) ||
        kvl_cuda_pool_n_classes(d->pool) != kvl_kv_pool_n_classes(cp))
        return kvl_err_set(err, KVL_ERR_INTERNAL, "page bytes differ: device %zu, CPU %zu",
                           kvl_cuda_pool_page_bytes(d->pool), kvl_kv_page_bytes(cp));
    for (int k = 0; k < kvl_cuda_pool_n_classes(d->pool); k++)
        if (kvl_cuda_pool_class_bytes(d->pool, k) != kvl_kv_pool_class_bytes(cp, k))
            return kvl_err_set(err, KVL_ERR_INTERNAL, "class %d page bytes differ: device %zu, CPU %zu", k,
                               kvl_cuda_pool_class_bytes(d->pool, k), kvl_kv_pool_class_bytes(cp, k));
    uint32_t *ids = malloc(sizeof(uint32_t) * (size_t)(total + 1));
    int32_t off[MAXB * 16], len[MAXB * 16];
    int n = 0;
    d->max_len = 0;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < Hkv; h++) {
            const kvlist *L = kvi_list(bt->t[b], 0, h);
            off[b * Hkv + h] = n;
            len[b * Hkv + h] = L->len;
            d->max_len = L->len > d->max_len ? L->len : d->max_len;
            for (int i = 0; i < L->n_pages; i++) {
                ids[n++] = L->pages[i].id; /* the CPU pool's page ids, unchanged */
                if ((s = kvl_cuda_pool_upload(d->pool, L->pages[i].id, L->pages[i].mem, 1, err)) != KVL_OK) return s;
            }
        }
    d->total_pages = n;
    const size_t qb = sizeof(float) * (size_t)B * c->Hq * c->D;
    if ((s = kvl_cuda_alloc((void **)&d->ids, sizeof(uint32_t) * (size_t)(n + 1), err)) ||
        (s = kvl_cuda_alloc((void **)&d->off, sizeof(int32_t) * (size_t)B * Hkv, err)) ||
        (s = kvl_cuda_alloc((void **)&d->len, sizeof(int32_t) * (size_t)B * Hkv, err)) ||
        (s = kvl_cuda_alloc((void **)&d->qpos, sizeof(int32_t) * (size_t)B, err)) ||
        (s = kvl_cuda_alloc((void **)&d->q, qb, err)) || (s = kvl_cuda_alloc((void **)&d->out, qb, err)) ||
        (s = kvl_cuda_upload(d->ids, ids, sizeof(uint32_t) * (size_t)n, err)) ||
        (s = kvl_cuda_upload(d->off, off, sizeof(int32_t) * (size_t)B * Hkv, err)) ||
        (s = kvl_cuda_upload(d->len, len, sizeof(int32_t) * (size_t)B * Hkv, err)) ||
        (s = kvl_cuda_upload(d->qpos, bt->qpos, sizeof(int32_t) * (size_t)B, err)) ||
        (s = kvl_cuda_upload(d->q, bt->q, qb, err)))
        return s;
    d->ids_host = ids;
    memcpy(d->off_host, off, sizeof off);
    memcpy(d->len_host, len, sizeof len);
    return KVL_OK;
}

static void undev(dev *d) {
    free(d->ids_host);
    kvl_cuda_pool_free(d->pool);
    kvl_cuda_free(d->ids);
    kvl_cuda_free(d->off);
    kvl_cuda_free(d->len);
    kvl_cuda_free(d->qpos);
    kvl_cuda_free(d->q);
    kvl_cuda_free(d->out);
}

/* Run the device attention with tuning tu; out downloaded into got. */
static kvl_status run_dev(const tcase *c, dev *d, const kvl_cuda_attn_tuning *tu, float *got, int *n_split,
                          kvl_err *err) {
    kvl_cuda_attn *a = NULL;
    kvl_status s = kvl_cuda_attn_create(d->pool, c->Hq, c->Hkv, c->B, d->max_len, tu, &a, err);
    if (s != KVL_OK) return s;
    int cp;
    kvl_cuda_attn_plan(a, c->B, d->max_len, &cp, n_split);
    const size_t qb = sizeof(float) * (size_t)c->B * c->Hq * c->D;
    kvl_cuda_attn_args x = {.n_seq = c->B, .max_len = d->max_len, .page_ids = d->ids, .list_off = d->off,
                            .list_len = d->len, .qpos = d->qpos, .q = d->q, .out = d->out,
                            .scale = 1.0f / sqrtf((float)c->D)};
    if (!(s = kvl_cuda_memset(d->out, 0xff, qb, err)) && !(s = kvl_cuda_attn_run(a, &x, NULL, err)) &&
        !(s = kvl_cuda_sync(err)))
        s = kvl_cuda_download(got, d->out, qb, err);
    kvl_cuda_attn_free(a);
    return s;
}

static int n_cases;

static void run_case(const tcase *c, int sensitivity) {
    built bt;
    kvl_err err = {0};
    if (!build(c, &bt)) {
        CHECK_MSG(0, "CPU build of %s P=%d D=%d failed", c->codec, c->P, c->D);
        return;
    }
    dev d;
    kvl_status s = upload(c, &bt, &d, &err);
    CHECK_MSG(s == KVL_OK, "upload: %s", err.msg);
    if (s != KVL_OK) {
        unbuild(&bt, c->B);
        return;
    }
    float *got = malloc(sizeof(float) * (size_t)c->B * c->Hq * c->D);
    /* plans: default; one page per split (many splits, the merge); one split
     * per list (the direct path); then the kernel variants of the Llama-3-8B
     * shape (D 128, G 4) with the default plan and with one page per split */
    /* (1 and 3 pages per split keep their size: tile_round -1, so the
     * tensor-core kernels still meet warps with an odd number of tiles) */
    const kvl_cuda_attn_tuning plans[] = {{0, 0, 0, 0, 0, 0},  {0, c->P, c->P, 0, 0, -1}, {0, 4096, 4096, 0, 0, 0},
                                          {7, 0, 0, 0, 0, 0},  {0, 3 * c->P, 3 * c->P, 0, 0, -1},
                                          {0, 0, 0, 0, 1, 0},    {0, 0, 0, 0, 2, 0},       {0, 0, 0, 0, 3, 0},
                                          {0, 0, 0, 0, 4, 0},    {0, 0, 0, 0, 5, 0},       {0, 0, 0, 0, 6, 0},
                                          {0, c->P, c->P, 0, 1, 0}, {0, c->P, c->P, 0, 2, 0}, {0, c->P, c->P, 0, 3, 0},
                                          {0, c->P, c->P, 0, 4, 0}, {0, c->P, c->P, 0, 5, 0}, {0, c->P, c->P, 0, 6, 0},
                                          {0, 0, 0, 0, 7, 0},    {0, c->P, c->P, 0, 7, 0}};
    const char *pname[] = {"default", "1 page/split", "1 split/list", "7-block waves", "3 pages/split", "variant 1", "variant 2", "variant 3",
                           "variant 4", "variant 5", "variant 6", "v1 1 page/split", "v2 1 page/split",
                           "v3 1 page/split", "v4 1 page/split", "v5 1 page/split", "v6 1 page/split",
                           "variant 7 (core)", "v7 1 page/split"};
    /* variants: f16 and int8 (D 128, G 4: all six); int4z variant 1 (the
     * CUDA-core kernel with CUDA-core key scores, G <= 4) and 2 (with
     * tensor-core key scores), kivi2z variant 1 (the CUDA-core kernel): the
     * kernels the tensor-core default (attn_tc.cuh, G <= 4) replaced; f16,
     * int8, fp8 variant 7 (every shape): the CUDA-core kernels the
     * tensor-core defaults (attn_f16_tc.cu, attn_b8_tc.cu, G <= 4) replaced */
    const int has_var = !strcmp(c->codec, "f16") || !strcmp(c->codec, "int8");
    const int is_i4 = !strcmp(c->codec, "int4z"), is_k2 = !strncmp(c->codec, "kivi2z", 6);
    const int is_b = !strcmp(c->codec, "f16") || !strcmp(c->codec, "int8") || !strcmp(c->codec, "fp8");
    int run[19], n_plans = 0;
    for (int i = 0; i < 19; i++)
        if (i < 5 || (has_var && i < 17 && c->D == 128 && c->Hq == 4 * c->Hkv) || (is_b && i >= 17) ||
            (is_i4 && c->Hq <= 4 * c->Hkv && (i == 5 || i == 11)) || (is_i4 && (i == 6 || i == 12)) ||
            (is_k2 && (i == 5 || i == 11)))
            run[n_plans++] = i;
    if (!strncmp(c->codec, "kivi", 4)) { /* the lists must mix sealed and open pages */
        CHECK_MSG(d.mixed > 0, "%s P=%d: no list mixes sealed and open pages", c->codec, c->P);
        printf("note: %s P=%d D=%d: %d lists with sealed pages, %d of them followed by open pages\n", c->codec, c->P,
               c->D, d.sealed_lists, d.mixed);
    }
    for (int ri = 0; ri < n_plans; ri++) {
        const int pi = run[ri];
        int ns = 0;
        s = run_dev(c, &d, &plans[pi], got, &ns, &err);
        CHECK_MSG(s == KVL_OK, "%s P=%d D=%d G=%d plan %s: %s", c->codec, c->P, c->D, c->Hq / c->Hkv, pname[pi],
                  err.msg);
        if (s != KVL_OK) continue;
        double rel, elem;
        int nf;
        compare(c, got, bt.ref, &rel, &elem, &nf);
        CHECK_MSG(nf == 0, "%s P=%d D=%d plan %s: %d outputs not finite (unwritten?)", c->codec, c->P, c->D,
                  pname[pi], nf);
        CHECK_MSG(rel <= TOL_REL && elem <= 1.0, "%s P=%d D=%d G=%d B=%d plan %s (%d splits): rel L2 %.3g, elem %.3g x tol",
                  c->codec, c->P, c->D, c->Hq / c->Hkv, c->B, pname[pi], ns, rel, elem);
        printf("note: %-12s P=%-2d D=%-3d G=%d B=%d max_len=%-4d plan %-15s splits %-3d rel L2 %.2e\n", c->codec, c->P,
               c->D, c->Hq / c->Hkv, c->B, d.max_len, pname[pi], ns, rel);
        n_cases++;
    }
    if (sensitivity && d.total_pages >= 2) {
        /* negative control: put another page's bytes under the first page id
         * of the longest list; the comparison must now fail */
        const kvlist *L0 = NULL, *L1 = NULL;
        for (int b = 0; b < c->B; b++)
            for (int h = 0; h < c->Hkv; h++) {
                const kvlist *L = kvi_list(bt.t[b], 0, h);
                if (L->n_pages && (!L0 || L->len > L0->len)) L0 = L;
            }
        for (int b = 0; b < c->B && !L1; b++)
            for (int h = 0; h < c->Hkv; h++) {
                const kvlist *L = kvi_list(bt.t[b], 0, h);
                if (L->n_pages && L != L0 && (L->pages[0].id >> KVI_CLS_SHIFT) == (L0->pages[0].id >> KVI_CLS_SHIFT))
                    L1 = L;
            }
        if (L0 && L1 && kvl_cuda_pool_upload(d.pool, L0->pages[0].id, L1->pages[0].mem, 1, &err) == KVL_OK) {
            int ns;
            double rel, elem;
            int nf;
            s = run_dev(c, &d, &plans[0], got, &ns, &err);
            compare(c, got, bt.ref, &rel, &elem, &nf);
            CHECK_MSG(s == KVL_OK && rel > 100 * TOL_REL, "swapped page not detected: rel L2 %.3g", rel);
            printf("note: negative control (%s, page swapped): rel L2 %.2e (must exceed %.0e)\n", c->codec, rel,
                   100 * TOL_REL);
        }
    }
    if (sensitivity && d.mixed) {
        /* an open page before a sealed one breaks the list invariant: the
         * kernel must answer NaN for that list's heads, not a wrong number */
        int li = -1;
        for (int b = 0; b < c->B && li < 0; b++)
            for (int h = 0; h < c->Hkv; h++) {
                const kvlist *L = kvi_list(bt.t[b], 0, h);
                if (L->n_sealed && L->n_sealed < L->n_pages) {
                    li = b * c->Hkv + h;
                    break;
                }
            }
        uint32_t *ids = d.ids_host + d.off_host[li];
        const int np = (d.len_host[li] + c->P - 1) / c->P;
        uint32_t t = ids[0];
        ids[0] = ids[np - 1], ids[np - 1] = t; /* last (open) page first */
        int ns;
        double rel, elem;
        int nf = 0;
        s = kvl_cuda_upload(d.ids, d.ids_host, sizeof(uint32_t) * (size_t)d.total_pages, &err);
        const kvl_cuda_attn_tuning one_split = {0, 4096, 4096, 0, 0, 0};
        if (s == KVL_OK) s = run_dev(c, &d, &one_split, got, &ns, &err);
        compare(c, got, bt.ref, &rel, &elem, &nf);
        CHECK_MSG(s == KVL_OK && nf >= c->D * (c->Hq / c->Hkv), "open page before a sealed one: %d non-finite outputs", nf);
        printf("note: %s open page before a sealed one: %d outputs NaN (>= %d)\n", c->codec, nf, c->D * (c->Hq / c->Hkv));
    }
    free(got);
    undev(&d);
    unbuild(&bt, c->B);
}

/* The plan of the tensor-core kernels (f16, Llama-3-8B attention shape,
 * P 16 / 32 / 64): every split a whole number of block steps
 * (kvl_cuda_attn_step_tokens: 128 tokens by default) unless it
 * is the whole list, the splits cover the list, within one wave where one
 * wave takes it; tile_round -1 keeps the unrounded split. */
static void test_plan_rounding(void) {
    kvl_err err = {0};
    const int Ps[] = {16, 32, 64}, lens[] = {1, 100, 4096, 32768, 32800, 32832, 33792, 36864, 131072, 131100};
    for (int pi = 0; pi < 3; pi++) {
        const int P = Ps[pi];
        kvl_cuda_pool *p = NULL;
        kvl_cuda_pool_config pc = {.codec_k = "f16", .head_dim = 128, .page_tokens = P, .n_pages = 1};
        if (kvl_cuda_pool_create(&pc, &p, &err) != KVL_OK) {
            CHECK_MSG(0, "pool P=%d: %s", P, err.msg);
            continue;
        }
        for (int r = 0; r < 2; r++) {
            const kvl_cuda_attn_tuning tu = {0, 0, 0, 0, 0, r ? -1 : 0};
            kvl_cuda_attn *a = NULL;
            if (kvl_cuda_attn_create(p, 32, 8, 16, 131100, &tu, &a, &err) != KVL_OK) {
                CHECK_MSG(0, "attn P=%d: %s", P, err.msg);
                continue;
            }
            int n_odd = 0;
            /* one step of every warp: 128 tokens for the default 4 warps x pairs */
            const int step = kvl_cuda_attn_step_tokens(a), qp = (step + P - 1) / P; /* pages */
            if (pi == 0 && r == 0) printf("f16 tensor-core kernel: %d threads, step %d tokens\n", kvl_cuda_attn_threads(a), step);
            for (int b = 1; b <= 16; b *= 16)
                for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
                    const int pages = (lens[li] + P - 1) / P;
                    int cp = 0, ns = 0;
                    kvl_cuda_attn_plan(a, b, lens[li], &cp, &ns);
                    CHECK_MSG(cp >= 1 && ns >= 1 && (long)cp * ns >= pages && (long)cp * (ns - 1) < pages,
                              "P=%d len %d batch %d: %d x %d pages do not cover %d", P, lens[li], b, ns, cp, pages);
                    const int odd = cp % qp != 0 && cp < pages;
                    if (!r) CHECK_MSG(!odd, "P=%d len %d batch %d: split of %d pages not rounded", P, lens[li], b, cp);
                    n_odd += odd;
                }
            if (r && qp > 1) CHECK_MSG(n_odd > 0, "P=%d: tile_round -1 rounded every plan", P);
            kvl_cuda_attn_free(a);
        }
        kvl_cuda_pool_free(p);
    }
}

int main(void) {
    if (cuda_test_device()) return 1;
    kvl_err err = {0};
    test_plan_rounding();

    /* codec x page size x head_dim, Llama-like GQA 4, a batch of 5 */
    /* KIVI: residual window of 64 tokens (1 to 3 full open pages besides the
     * partial last one); kivi2z with the default window as well (1 page) */
    const char *codecs[] = {"f16", "int8", "fp8", "int4z", "kivi4z:r=64", "kivi2z:r=64", "kivi2z"};
    const int n_codecs = (int)(sizeof codecs / sizeof codecs[0]);
    const int Ps[3] = {16, 32, 64}, Ds[2] = {64, 128};
    for (int ci = 0; ci < n_codecs; ci++)
        for (int pi = 0; pi < 3; pi++)
            for (int di = 0; di < 2; di++) {
                tcase c = {.codec = codecs[ci], .P = Ps[pi], .D = Ds[di], .Hq = 8, .Hkv = 2, .B = 5,
                           .len = {1, 37, 300, 1000, 2100}, .qback = {0, 0, 0, 0, 0}};
                /* causal masks: the 4th query sits 150 positions before the end
                 * (whole pages after it), the 3rd 1 position before */
                c.qback[2] = 1;
                c.qback[3] = 150;
                run_case(&c, (ci == 0 || ci >= 2) && pi == 1 && di == 1);
            }
    /* other group sizes (SmolLM2-135M: 9 heads over 3 kv-heads, D 64) and a single sequence */
    const tcase extra[] = {
        {"f16", 32, 64, 9, 3, 3, {513, 64, 2000}, {0, 0, 7}},
        {"int8", 32, 64, 9, 3, 3, {513, 64, 2000}, {0, 0, 7}},
        {"f16", 16, 128, 4, 4, 2, {700, 33}, {0, 0}},
        {"int8", 64, 128, 16, 2, 2, {129, 1500}, {0, 3}},
        {"f16", 32, 128, 32, 8, 1, {4097}, {0}},
        {"fp8", 32, 64, 9, 3, 3, {513, 64, 2000}, {0, 0, 7}},
        {"int4z", 32, 64, 9, 3, 3, {513, 64, 2000}, {0, 0, 7}},
        {"kivi4z:r=64", 32, 64, 9, 3, 3, {513, 64, 2000}, {0, 0, 7}},
        {"kivi2z", 16, 64, 9, 3, 3, {513, 64, 2000}, {0, 0, 7}},
        {"int4z", 16, 128, 16, 2, 2, {129, 1500}, {0, 3}},
        {"kivi4z", 16, 128, 4, 4, 2, {700, 33}, {0, 0}},
        {"kivi2z:r=64", 64, 128, 16, 2, 2, {129, 1500}, {0, 3}},
        {"fp8", 32, 128, 32, 8, 1, {4097}, {0}},
        {"int4z", 32, 128, 32, 8, 1, {4097}, {0}},
        {"kivi4z:r=64", 32, 128, 32, 8, 1, {4097}, {0}},
        {"kivi2z", 32, 128, 32, 8, 1, {4097}, {0}},
        /* the tensor-core kernels at G 1 and 2 */
        {"int4z", 16, 128, 4, 4, 2, {700, 33}, {0, 0}},
        {"kivi2z:r=64", 32, 128, 8, 4, 2, {700, 35}, {0, 5}},
        {"int4z", 64, 64, 6, 3, 2, {1000, 77}, {0, 2}},
        {"kivi2z", 16, 64, 4, 4, 3, {300, 17, 999}, {0, 0, 1}},
        /* the f16 / int8 / fp8 tensor-core kernels at G 2 (P 64, D 64) and G 8 (the CUDA-core fallback) */
        {"f16", 64, 64, 4, 2, 3, {1000, 77, 130}, {0, 2, 0}},
        {"f16", 16, 128, 16, 2, 2, {700, 33}, {0, 1}},
        {"int8", 64, 64, 4, 2, 3, {1000, 77, 130}, {0, 2, 0}},
        {"fp8", 16, 128, 8, 4, 2, {700, 35}, {0, 5}},
        {"int8", 16, 128, 16, 2, 2, {700, 33}, {0, 1}},
        {"fp8", 64, 64, 16, 2, 2, {129, 1500}, {0, 3}},
    };
    for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++) run_case(&extra[i], 0);

    /* codecs without a kernel are refused, not run elsewhere */
    const char *nokernel[] = {"f32", "int4", "int4g64", "oaken", "squat", "kivi2", "kivi4", "kivi3z"};
    for (size_t i = 0; i < sizeof nokernel / sizeof nokernel[0]; i++) {
        kvl_cuda_pool *p = NULL;
        kvl_cuda_pool_config bad = {.codec_k = nokernel[i], .head_dim = 64, .page_tokens = 32, .n_pages = 1};
        CHECK_MSG(kvl_cuda_pool_create(&bad, &p, &err) == KVL_ERR_UNSUPPORTED && p == NULL, "%s not refused",
                  nokernel[i]);
        printf("note: %s refused: %s\n", nokernel[i], err.msg);
    }
    {
        kvl_cuda_pool *p = NULL;
        kvl_cuda_pool_config mix = {.codec_k = "int4z", .codec_v = "fp8", .head_dim = 64, .page_tokens = 32, .n_pages = 1};
        CHECK(kvl_cuda_pool_create(&mix, &p, &err) == KVL_ERR_UNSUPPORTED && p == NULL);
        printf("note: int4z/fp8 refused: %s\n", err.msg);
    }
    printf("note: %d device runs compared with kvl_kv_attend\n", n_cases);
    KVL_TEST_END();
}
