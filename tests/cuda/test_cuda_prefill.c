/* Device tests of the tiled prefill attention (attn_prefill.cu; make
 * test-cuda; needs a GPU), on fresh random inputs, outputs poisoned with NaN
 * before every run:
 *  1. the kernel against a double-precision reference on the very same f16
 *     page bytes (built here: positions, K and V rows; page ids shuffled so
 *     the page table matters): head_dim 64 and 128, page sizes 16, 32, 64
 *     and 256 (key tiles of 64 rows spanning pages or inside one), GQA
 *     9/3 (SmolLM2), 8/2 and 32/8 (G 4), 4/4 and 16/2 (G 1, 8); chunks of
 *     1..300 query tokens (not multiples of the 128 / G tokens of a tile)
 *     starting at list position 0 or mid-list (a second chunk after a first),
 *     several sequences (unequal lengths) in one call; two masks: the lm's
 *     (entry i's list length = its row + 1) and a position-only one (every
 *     entry sees the whole list, qpos random, positions with gaps, some
 *     queries before the first position: zeros); the decode kernel on the
 *     same inputs as a second reference;
 *  2. the forward pass (kvl_cuda_lm, random weights, exact path): prompt
 *     chunks through the prefill kernel against the same calls through the
 *     decode kernel (kvl_cuda_lm_set_prefill 0), logits of every entry,
 *     with CUDA graphs on (prefill calls launch directly, the decode steps
 *     after them replay), and the choice itself (decode calls keep the
 *     decode kernel; int8 KV has no prefill kernel and is refused by
 *     kvl_cuda_prefill_create, the lm keeping the decode kernel).
 *
 * Tolerance of 1 (variant 0, the default): the scaled query enters the mma
 * as hi + lo f16 parts (~2^-22 relative, fp32 scores as in the decode
 * kernels), the K and V bytes are exact f16, products exact, sums fp32; the
 * one coarse step is the probabilities, rounded to f16 for the P V mma
 * (relative 2^-11, round to nearest) while the row sum l keeps the fp32 p.
 * So |o - o_ref| = |sum (p~ - p) v| / l <= 2^-11 sum p |v| / l <=
 * 2^-11 max|v| over the row's visible keys; the bound is 1.1 x 2^-11 x
 * max|v| + 1e-5 (ex2.approx, fp32 sums: ~1e-6). Variant 1 (query rounded to
 * f16 once, FlashAttention-2's numerics) also moves every score by <=
 * Delta = 2^-11 scale sum_d |q_d k_d|, so the weights by <= e^(2 Delta):
 * bound (2^-11 + 2.2 Delta_max) max|v| + 1e-5. A wrong row, page, mask or
 * tile moves values by >= 1e-2 max|v| here. The forward-pass comparison
 * (2) differs only by these attention roundings through two layers: logits
 * within 1e-2 relative (L2 over an entry's row), and the greedy tokens
 * counted. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/kvl_cuda.h"
#include "cuda/kvl_cuda_prefill.h"
#include "test.h"
#include "cuda_test.h"
#include "util/fp16.h"

static uint64_t rng = 0x2545f4914f6cdd1dull;
static double urand(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}
static float frand(float a) { return (float)((2 * urand() - 1) * a); }


#define MAXS 3

typedef struct pcase {
    int D, P, H, Hkv;
    int S;             /* sequences in the call */
    int prefix[MAXS];  /* rows of the list before the chunk */
    int chunk[MAXS];   /* query tokens of the chunk (its rows are the list's next rows) */
    int pos_mask;      /* 1: every entry's list is the whole list; causality by qpos alone (random, gaps) */
} pcase;

static double worst_ratio_v0, worst_ratio_v1, worst_dec;
static int n_kernel_cases;

/* One case: build the pages, run the prefill kernel (variants 0 and 1) and
 * the decode kernel, compare with the double reference. */
static void kernel_case(const pcase *c) {
    const int D = c->D, P = c->P, H = c->H, Hkv = c->Hkv, G = H / Hkv, S = c->S;
    kvl_err err = {0};
    int len[MAXS], npg[MAXS], n = 0, total_pages = 0;
    for (int s = 0; s < S; s++) {
        len[s] = c->prefix[s] + c->chunk[s];
        npg[s] = (len[s] + P - 1) / P;
        total_pages += npg[s] * Hkv;
        n += c->chunk[s];
    }
    kvl_cuda_pool_config pc = {"f16", NULL, D, P, total_pages + 3, 0};
    kvl_cuda_pool *pool = NULL;
    if (kvl_cuda_pool_create(&pc, &pool, &err) != KVL_OK) {
        CHECK_MSG(0, "pool: %s", err.msg);
        return;
    }
    const size_t pb = kvl_cuda_pool_page_bytes(pool);
    size_t koff, voff;
    kvl_cuda_pool_seg_offsets(pool, 0, &koff, &voff);
    const int n_pages = total_pages + 3;
    uint8_t *pages = calloc((size_t)n_pages, pb);
    /* shuffled page ids: list pages are not adjacent */
    uint32_t *perm = malloc(sizeof(uint32_t) * n_pages);
    for (int i = 0; i < n_pages; i++) perm[i] = (uint32_t)i;
    for (int i = n_pages - 1; i > 0; i--) {
        const int j = (int)(urand() * (i + 1));
        const uint32_t t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    uint32_t *ids = malloc(sizeof(uint32_t) * total_pages);
    int lbase[MAXS][16];
    /* host copies of the f16-rounded rows and positions: [s][h][row] */
    float *K[MAXS], *V[MAXS];
    int32_t *pos[MAXS];
    int k = 0;
    for (int s = 0; s < S; s++) {
        K[s] = malloc(sizeof(float) * (size_t)Hkv * len[s] * D + 4);
        V[s] = malloc(sizeof(float) * (size_t)Hkv * len[s] * D + 4);
        pos[s] = malloc(sizeof(int32_t) * (size_t)len[s] + 4);
        int32_t p = c->pos_mask ? (int32_t)(urand() * 4) : 0;
        for (int r = 0; r < len[s]; r++) {
            pos[s][r] = p;
            p += c->pos_mask ? 1 + (urand() < 0.25 ? (int32_t)(urand() * 4) : 0) : 1;
        }
        for (int h = 0; h < Hkv; h++) {
            lbase[s][h] = k;
            for (int pg = 0; pg < npg[s]; pg++) ids[k + pg] = perm[k + pg];
            for (int r = 0; r < len[s]; r++) {
                uint8_t *page = pages + (size_t)ids[k + r / P] * pb;
                ((int32_t *)page)[r % P] = pos[s][r];
                const float amp = (float)(0.2 + 2.8 * urand()); /* rows of unequal norm: peaky softmax */
                for (int d = 0; d < D; d++) {
                    const uint16_t kh = kvl_fp32_to_fp16(frand(amp)), vh = kvl_fp32_to_fp16(frand(1.0f));
                    memcpy(page + koff + ((size_t)(r % P) * D + d) * 2, &kh, 2);
                    memcpy(page + voff + ((size_t)(r % P) * D + d) * 2, &vh, 2);
                    K[s][((size_t)h * len[s] + r) * D + d] = kvl_fp16_to_fp32(kh);
                    V[s][((size_t)h * len[s] + r) * D + d] = kvl_fp16_to_fp32(vh);
                }
            }
            /* rows past the list end in its last page: NaN bytes (must not leak) */
            for (int r = len[s]; r < npg[s] * P; r++) {
                uint8_t *page = pages + (size_t)ids[k + r / P] * pb;
                ((int32_t *)page)[r % P] = -5; /* a position every query would see */
                memset(page + koff + (size_t)(r % P) * D * 2, 0xff, (size_t)D * 2);
                memset(page + voff + (size_t)(r % P) * D * 2, 0xff, (size_t)D * 2);
            }
            k += npg[s];
        }
    }
    if (kvl_cuda_pool_upload(pool, 0, pages, n_pages, &err) != KVL_OK) CHECK_MSG(0, "pool upload: %s", err.msg);
    /* entries: sequence by sequence, the chunk's rows */
    int32_t *eoff = malloc(sizeof(int32_t) * n * Hkv), *elen = malloc(sizeof(int32_t) * n * Hkv);
    int32_t *eq = malloc(sizeof(int32_t) * n), *key = malloc(sizeof(int32_t) * n), *eseq = malloc(sizeof(int32_t) * n);
    float *q = malloc(sizeof(float) * (size_t)n * H * D), *ref = malloc(sizeof(float) * (size_t)n * H * D);
    double *vmax = malloc(sizeof(double) * (size_t)n * H), *smax = malloc(sizeof(double) * (size_t)n * H);
    int e = 0;
    const float scale = 1.0f / sqrtf((float)D);
    for (int s = 0; s < S; s++)
        for (int i = 0; i < c->chunk[s]; i++, e++) {
            const int row = c->prefix[s] + i;
            key[e] = s, eseq[e] = s;
            if (c->pos_mask) { /* anywhere from before the first position to past the last */
                eq[e] = pos[s][0] - 2 + (int32_t)(urand() * (pos[s][len[s] - 1] - pos[s][0] + 5));
            } else {
                eq[e] = pos[s][row];
            }
            for (int h = 0; h < Hkv; h++) {
                eoff[e * Hkv + h] = lbase[s][h];
                elen[e * Hkv + h] = c->pos_mask ? len[s] : row + 1;
            }
            for (int qh = 0; qh < H; qh++) {
                const float amp = (float)(0.5 + 3.5 * urand());
                for (int d = 0; d < D; d++) q[((size_t)e * H + qh) * D + d] = frand(amp);
            }
        }
    /* the reference, in double */
    for (e = 0; e < n; e++) {
        const int s = eseq[e];
        for (int qh = 0; qh < H; qh++) {
            const int h = qh / G, L = elen[e * Hkv + h];
            const float *qq = q + ((size_t)e * H + qh) * D;
            double m = -INFINITY, l = 0, acc[128] = {0}, vm = 0, sm = 0;
            double *sc = malloc(sizeof(double) * (size_t)(L + 1));
            for (int r = 0; r < L; r++) {
                sc[r] = -INFINITY;
                if (pos[s][r] > eq[e]) continue;
                const float *kr = K[s] + ((size_t)h * len[s] + r) * D;
                double dot = 0, ab = 0;
                for (int d = 0; d < D; d++) dot += (double)qq[d] * kr[d], ab += fabs((double)qq[d] * kr[d]);
                sc[r] = dot * scale;
                if (ab * scale > sm) sm = ab * scale;
                if (sc[r] > m) m = sc[r];
            }
            for (int r = 0; r < L; r++) {
                if (sc[r] == -INFINITY) continue;
                const double p = exp(sc[r] - m);
                l += p;
                const float *vr = V[s] + ((size_t)h * len[s] + r) * D;
                for (int d = 0; d < D; d++) {
                    acc[d] += p * vr[d];
                    if (fabs(vr[d]) > vm) vm = fabs(vr[d]);
                }
            }
            for (int d = 0; d < D; d++) ref[((size_t)e * H + qh) * D + d] = l > 0 ? (float)(acc[d] / l) : 0.0f;
            vmax[(size_t)e * H + qh] = vm, smax[(size_t)e * H + qh] = sm;
            free(sc);
        }
    }
    /* device */
    uint32_t *d_ids = dev_alloc(sizeof(uint32_t) * total_pages);
    int32_t *d_off = dev_alloc(sizeof(int32_t) * n * Hkv), *d_len = dev_alloc(sizeof(int32_t) * n * Hkv);
    int32_t *d_qpos = dev_alloc(sizeof(int32_t) * n), *d_tiles = dev_alloc(sizeof(int32_t) * 2 * n);
    float *d_q = dev_alloc(sizeof(float) * (size_t)n * H * D), *d_out = dev_alloc(sizeof(float) * (size_t)n * H * D);
    up(d_ids, ids, sizeof(uint32_t) * total_pages);
    up(d_off, eoff, sizeof(int32_t) * n * Hkv), up(d_len, elen, sizeof(int32_t) * n * Hkv);
    up(d_qpos, eq, sizeof(int32_t) * n), up(d_q, q, sizeof(float) * (size_t)n * H * D);
    float *got = malloc(sizeof(float) * (size_t)n * H * D);
    kvl_cuda_prefill *pf = NULL;
    if (kvl_cuda_prefill_create(pool, H, Hkv, &pf, &err) != KVL_OK) {
        CHECK_MSG(0, "prefill create: %s", err.msg);
    } else {
        const int tt = kvl_cuda_prefill_tile_tokens(pf);
        CHECK(tt == 128 / G);
        int32_t *tiles = malloc(sizeof(int32_t) * 2 * n);
        const int nt = kvl_cuda_prefill_tiles(key, n, tt, tiles);
        up(d_tiles, tiles, sizeof(int32_t) * 2 * nt);
        for (int var = 0; var < 2; var++) {
            kvl_cuda_prefill_set_variant(pf, var);
            poison(d_out, sizeof(float) * n * H * D);
            kvl_cuda_prefill_args a = {nt, d_tiles, d_ids, d_off, d_len, d_qpos, d_q, d_out, scale};
            kvl_status st = kvl_cuda_prefill_run(pf, &a, NULL, &err);
            if (st == KVL_OK) st = kvl_cuda_sync(&err);
            CHECK_MSG(st == KVL_OK, "prefill run: %s", err.msg);
            down(got, d_out, sizeof(float) * (size_t)n * H * D);
            double worst = 0;
            int bad = 0, nonfinite = 0;
            for (int u = 0; u < n * H; u++) {
                const double tol =
                    var == 0 ? 1.1 * vmax[u] / 2048 + 1e-5 : (1.0 / 2048 + 2.2 * smax[u] / 2048) * vmax[u] + 1e-5;
                for (int d = 0; d < D; d++) {
                    const double g = got[(size_t)u * D + d], r = ref[(size_t)u * D + d];
                    if (!isfinite(g)) {
                        nonfinite++;
                        continue;
                    }
                    const double ratio = fabs(g - r) / tol;
                    if (ratio > worst) worst = ratio;
                    if (ratio > 1) bad++;
                }
            }
            CHECK_MSG(nonfinite == 0 && bad == 0,
                      "prefill D %d P %d H %d/%d S %d chunk %d prefix %d mask %d variant %d: %d non-finite, %d over "
                      "the bound (worst %.3g x)", D, P, H, Hkv, S, c->chunk[0], c->prefix[0], c->pos_mask, var,
                      nonfinite, bad, worst);
            if (var == 0 && worst > worst_ratio_v0) worst_ratio_v0 = worst;
            if (var == 1 && worst > worst_ratio_v1) worst_ratio_v1 = worst;
        }
        kvl_cuda_prefill_set_variant(pf, 0);
        free(tiles);
        kvl_cuda_prefill_free(pf);
    }
    /* the decode kernel on the same inputs (its own bound: 1e-4 relative) */
    int maxl = 0;
    for (int i = 0; i < n * Hkv; i++) maxl = elen[i] > maxl ? elen[i] : maxl;
    kvl_cuda_attn *at = NULL;
    if (kvl_cuda_attn_create(pool, H, Hkv, n, maxl, NULL, &at, &err) == KVL_OK) {
        poison(d_out, sizeof(float) * n * H * D);
        kvl_cuda_attn_args a = {n, maxl, d_ids, d_off, d_len, d_qpos, d_q, d_out, scale};
        kvl_status st = kvl_cuda_attn_run(at, &a, NULL, &err);
        if (st == KVL_OK) st = kvl_cuda_sync(&err);
        CHECK_MSG(st == KVL_OK, "decode run: %s", err.msg);
        down(got, d_out, sizeof(float) * (size_t)n * H * D);
        double w = 0;
        for (int u = 0; u < n * H; u++)
            for (int d = 0; d < D; d++) {
                const double r = ref[(size_t)u * D + d], ratio = fabs(got[(size_t)u * D + d] - r) / (1e-4 * vmax[u] + 1e-6);
                if (!(ratio <= w)) w = ratio; /* NaN too */
            }
        CHECK_MSG(w <= 1.0, "decode kernel vs reference: %.3g x its bound", w);
        if (w > worst_dec) worst_dec = w;
        kvl_cuda_attn_free(at);
    } else {
        CHECK_MSG(0, "decode attn create: %s", err.msg);
    }
    n_kernel_cases++;
    kvl_cuda_free(d_ids), kvl_cuda_free(d_off), kvl_cuda_free(d_len), kvl_cuda_free(d_qpos), kvl_cuda_free(d_tiles);
    kvl_cuda_free(d_q), kvl_cuda_free(d_out);
    for (int s = 0; s < S; s++) free(K[s]), free(V[s]), free(pos[s]);
    free(pages), free(perm), free(ids), free(eoff), free(elen), free(eq), free(key), free(eseq), free(q), free(ref);
    free(vmax), free(smax), free(got);
    kvl_cuda_pool_free(pool);
}

/* ---- 2. the forward pass: prefill kernel vs decode kernel ------------------------------------ */

typedef struct tiny_model {
    kvl_cuda_layer_desc ld[2];
    float freq[64];
    kvl_cuda_model_desc md;
} tiny_model;

static void tiny_desc(tiny_model *t, int H, int Hkv, int hd) {
    const int L = 2, E = 256, F = 512, V = 1000, wt = 8; /* Q8_0 random weights */
    memset(t, 0, sizeof *t);
    for (int l = 0; l < L; l++) {
        kvl_cuda_layer_desc *d = &t->ld[l];
        d->wq = (kvl_cuda_tensor){wt, NULL, H * hd, E}, d->wk = (kvl_cuda_tensor){wt, NULL, Hkv * hd, E};
        d->wv = (kvl_cuda_tensor){wt, NULL, Hkv * hd, E}, d->wo = (kvl_cuda_tensor){wt, NULL, E, H * hd};
        d->w_gate = (kvl_cuda_tensor){wt, NULL, F, E}, d->w_up = (kvl_cuda_tensor){wt, NULL, F, E};
        d->w_down = (kvl_cuda_tensor){wt, NULL, E, F};
    }
    for (int i = 0; i < hd / 2; i++) t->freq[i] = powf(10000.0f, -2.0f * i / hd);
    t->md = (kvl_cuda_model_desc){L, E, H, Hkv, hd, F, V, 1e-5f, 1, t->freq, {wt, NULL, V, E}, {wt, NULL, V, E}, NULL,
                                  t->ld};
}

/* Two lms with the same random weights, one on the prefill kernel, one not:
 * chunks of `chunks` entries of slot 0 (then decode steps), logits of every
 * entry compared. */
static void forward_case(const char *codec, int H, int Hkv, int hd, int P, const int *chunks, int n_chunks) {
    tiny_model tm;
    tiny_desc(&tm, H, Hkv, hd);
    kvl_cuda_lm_config cfg = {codec, P, 2048, 2, 512, 0, 77, 1 /* exact path */, 0, 0, 0};
    kvl_cuda_lm *lm[2] = {NULL, NULL};
    kvl_err err = {0};
    for (int k = 0; k < 2; k++)
        if (kvl_cuda_lm_create(&tm.md, &cfg, &lm[k], &err) != KVL_OK) {
            CHECK_MSG(0, "lm create (%s): %s", codec, err.msg);
            kvl_cuda_lm_free(lm[0]);
            return;
        }
    kvl_cuda_lm_set_prefill(lm[1], 0);
    kvl_cuda_lm_set_graphs(lm[0], 1), kvl_cuda_lm_set_graphs(lm[1], 1);
    const int V = 1000, maxn = 512;
    int32_t *tok = malloc(sizeof(int32_t) * maxn), *pos = malloc(sizeof(int32_t) * maxn);
    int32_t *slot = calloc(maxn, sizeof(int32_t)), *am[2] = {malloc(sizeof(int32_t) * maxn), malloc(sizeof(int32_t) * maxn)};
    float *lg[2] = {malloc(sizeof(float) * (size_t)maxn * V), malloc(sizeof(float) * (size_t)maxn * V)};
    double worst = 0;
    int same = 0, total = 0, p0 = 0, used = 0;
    for (int ci = 0; ci < n_chunks + 4; ci++) { /* the chunks, then 4 decode steps */
        const int nc = ci < n_chunks ? chunks[ci] : 1;
        for (int i = 0; i < nc; i++) tok[i] = (int32_t)((7 + 131 * (p0 + i)) % V), pos[i] = p0 + i;
        if (ci >= n_chunks) tok[0] = am[0][0]; /* decode: the previous greedy token */
        for (int k = 0; k < 2; k++) {
            kvl_status st = kvl_cuda_lm_forward(lm[k], nc, tok, pos, slot, 0, lg[k], am[k], &err);
            CHECK_MSG(st == KVL_OK, "forward (%s): %s", codec, err.msg);
        }
        const int up = kvl_cuda_lm_used_prefill(lm[0]);
        if (ci < n_chunks && nc >= 4 && !strcmp(codec, "f16")) CHECK(up);
        if (ci >= n_chunks || strcmp(codec, "f16")) CHECK(!up);
        CHECK(!kvl_cuda_lm_used_prefill(lm[1]));
        used += up;
        for (int i = 0; i < nc; i++) {
            double e2 = 0, r2 = 0;
            for (int v = 0; v < V; v++) {
                const double a = lg[0][(size_t)i * V + v], b = lg[1][(size_t)i * V + v];
                e2 += (a - b) * (a - b), r2 += b * b;
            }
            const double rel = r2 > 0 ? sqrt(e2 / r2) : 0;
            if (!(rel <= worst)) worst = rel;
            same += am[0][i] == am[1][i], total++;
        }
        p0 += nc;
    }
    CHECK_MSG(worst <= 1e-2, "forward %s G %d hd %d P %d: logits rel err %.3g", codec, H / Hkv, hd, P, worst);
    printf("note: forward %s, %d/%d heads, hd %d, P %d, %d calls on the prefill kernel: logits vs the decode "
           "kernel's rel err %.3g, greedy tokens %d of %d equal\n", codec, H, Hkv, hd, P, used, worst, same, total);
    for (int k = 0; k < 2; k++) kvl_cuda_lm_free(lm[k]), free(am[k]), free(lg[k]);
    free(tok), free(pos), free(slot);
}

int main(void) {
    if (cuda_test_device()) return 1;
    kvl_err err = {0};
    CHECK(kvl_cuda_prefill_codec("f16") && !kvl_cuda_prefill_codec("int8") && !kvl_cuda_prefill_codec("kivi2z"));
    { /* tiles: runs of one key cut at the tile size */
        const int32_t key[9] = {0, 0, 0, 0, 0, 1, 1, 0, 0};
        int32_t t[18];
        const int nt = kvl_cuda_prefill_tiles(key, 9, 3, t);
        const int32_t want[10] = {0, 3, 3, 2, 5, 2, 7, 2};
        CHECK(nt == 4 && !memcmp(t, want, sizeof(int32_t) * 8));
    }
    const int heads[5][2] = {{9, 3}, {8, 2}, {32, 8}, {4, 4}, {16, 2}};
    const int Ps[4] = {16, 32, 64, 256};
    for (int D = 64; D <= 128; D *= 2)
        for (int hi = 0; hi < 5; hi++)
            for (int pi = 0; pi < 4; pi++) {
                if (heads[hi][0] == 32 && D == 64) continue; /* the 8B shape at its head_dim */
                pcase c = {D, Ps[pi], heads[hi][0], heads[hi][1], 1, {0}, {0}, 0};
                /* one sequence, a first chunk from 0 (not a multiple of the tile) */
                c.chunk[0] = 45 + 61 * pi + hi;
                kernel_case(&c);
                /* a second chunk mid-list, with a second and third sequence in the call */
                c.S = 3;
                c.prefix[0] = 77 + 300 * pi, c.chunk[0] = 1 + 37 * hi;
                c.prefix[1] = 600, c.chunk[1] = 129;
                c.prefix[2] = 5, c.chunk[2] = 300;
                kernel_case(&c);
                /* position-only mask (gaps, queries anywhere, some before the first row) */
                c.S = 2, c.pos_mask = 1;
                c.prefix[0] = 150, c.chunk[0] = 50;
                c.prefix[1] = 3, c.chunk[1] = 5;
                kernel_case(&c);
            }
    printf("note: %d kernel cases; worst error / bound: variant 0 %.3f, variant 1 (f16 query) %.3f; decode kernel %.3f "
           "of its 1e-4 bound\n", n_kernel_cases, worst_ratio_v0, worst_ratio_v1, worst_dec);
    { /* no prefill kernel for int8 pages: refused, not run */
        kvl_cuda_pool_config pc = {"int8", NULL, 128, 32, 4, 0};
        kvl_cuda_pool *pool = NULL;
        kvl_cuda_prefill *pf = NULL;
        if (kvl_cuda_pool_create(&pc, &pool, &err) == KVL_OK) {
            CHECK(kvl_cuda_prefill_create(pool, 32, 8, &pf, &err) == KVL_ERR_UNSUPPORTED && pf == NULL);
            kvl_cuda_pool_free(pool);
        }
    }
    const int ch1[4] = {300, 77, 5, 129}, ch2[3] = {45, 1, 200};
    forward_case("f16", 9, 3, 64, 16, ch1, 4);
    forward_case("f16", 8, 2, 128, 32, ch2, 3);
    forward_case("int8", 8, 2, 128, 32, ch2, 3); /* the decode kernel both ways */
    KVL_TEST_END();
}
