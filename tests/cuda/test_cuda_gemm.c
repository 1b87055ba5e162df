/* Device tests of the tensor-core integer GEMM (kvl_cuda_gemm_q8, gemm_q8.cu;
 * make test-cuda, needs a GPU). Fresh random weights from the CPU quantizer
 * (Q8_0, Q4_0, Q4_1, repacked as at upload) and activations quantized on
 * the device (kvl_cuda_quantize_q8, checked against the CPU's Q8_1 blocks),
 * outputs poisoned with NaN before every run and a poisoned guard after the
 * output that must stay untouched. Shapes: SmolLM2-like widths (576, 1536)
 * and the 8B's (4096, 14336), rows not multiples of either tile (64, 128),
 * n = 1, 7, 33, 64, 65, 130, 512 (partial token tiles), = and +=, the
 * automatic tile choice and both tiles forced, plain and programmatic
 * dependent launch right after the quantization kernel (input poisoned
 * before it, as the matvec test does).
 *
 * References and tolerances (terms t_b = dx_b (dw_b isum_b + mw_b sx_b) per
 * block b of 32, isum the exact integer dot; S = sum_b |dx_b| (|dw_b| |isum_b|
 * + |mw_b sx_b|)):
 *  - against the host: the integer dots exactly, the terms summed in
 *    double. The device's dots are exact too (mma s8 x s8 -> s32, one block
 *    per mma); each f32 term has a few roundings and the nb terms are summed
 *    in sequence in f32, so |gpu - ref| <= (nb + 8) 2^-24 S; checked with
 *    twice that, (nb + 8) 2^-23 S, plus 2^-24 |y0| for +=. A wrong code,
 *    nibble, scale or block moves an output by ~1e-2 S or more;
 *  - against the integer matvec (kvl_cuda_gemv_q8_ex, the default variant)
 *    on the same device inputs: both exact in the integers, f32 block sums in
 *    different orders (the matvec per lane, then across the warp, Q8_0 in
 *    half blocks), so |gemm - gemv| <= 2 (nb + 8) 2^-24 S (each within its
 *    summation bound of the exact value), checked as (nb + 8) 2^-22 S; the
 *    number of bit-identical outputs is printed as a note;
 *  - refusals: f16 weights, cols % 64 != 0, n < 1, a bad tile size;
 *  - the forward pass (lm.cu) with the GEMM and with the logits tail
 *    against the matvec (lm_case below). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/quant.h"
#include "cuda/kvl_cuda.h"
#include "cuda/lm_ops.h"
#include "test.h"
#include "cuda_test.h"
#include "util/fp16.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static double urand(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}
static float frand(float a) { return (float)((2 * urand() - 1) * a); }


/* weight codes of block b of a GGUF row of type t and its (d, m): w = d c + m (c as the device takes it) */
static void wcodes(int t, const uint8_t *row, int64_t b, int *c, double *d, double *m) {
    if (t == KVL_TYPE_Q8_0) {
        const kvl_block_q8_0 *k = (const kvl_block_q8_0 *)row + b;
        for (int j = 0; j < 32; j++) c[j] = k->qs[j];
        *d = kvl_fp16_to_fp32(k->d), *m = 0;
    } else if (t == KVL_TYPE_Q4_0) {
        const kvl_block_q4_0 *k = (const kvl_block_q4_0 *)row + b;
        for (int j = 0; j < 16; j++) c[j] = k->qs[j] & 15, c[j + 16] = k->qs[j] >> 4;
        *d = kvl_fp16_to_fp32(k->d), *m = -8.0 * (float)kvl_fp16_to_fp32(k->d);
    } else {
        const kvl_block_q4_1 *k = (const kvl_block_q4_1 *)row + b;
        for (int j = 0; j < 16; j++) c[j] = k->qs[j] & 15, c[j + 16] = k->qs[j] >> 4;
        *d = kvl_fp16_to_fp32(k->d), *m = kvl_fp16_to_fp32(k->m);
    }
}

static int n_same, n_cmp; /* outputs bit-identical to the matvec's / compared */

/* one shape: every output against the host reference and the matvec */
static void gemm_case(int t, int64_t rows, int64_t cols, int n, int acc) {
    kvl_err err = {0};
    const size_t rb = kvl_type_row_bytes(t, cols), nb = (size_t)cols / 32, ny = (size_t)n * rows, guard = 4096;
    uint8_t *wq = malloc(rb * rows);
    float *x = malloc(sizeof(float) * n * cols), *y0 = malloc(sizeof(float) * ny);
    float *y = malloc(sizeof(float) * (ny + guard)), *yv = malloc(sizeof(float) * ny);
    float *tmp = malloc(sizeof(float) * cols);
    for (int64_t r = 0; r < rows; r++) {
        const float amp = 0.05f + (float)urand();
        for (int64_t j = 0; j < cols; j++) tmp[j] = frand(amp) + (j % 7 == 0 ? 0.3f * amp : 0);
        kvl_quant_row_ref((kvl_type)t, tmp, wq + r * rb, cols);
    }
    for (int64_t i = 0; i < (int64_t)n * cols; i++) x[i] = frand(2.0f) * (i % 97 == 0 ? 5.0f : 1.0f);
    for (size_t i = 0; i < ny; i++) y0[i] = frand(1.0f);
    const kvl_cuda_wfmt f = t == KVL_TYPE_Q8_0 ? KVL_CUDA_WF_Q8_0 : t == KVL_TYPE_Q4_0 ? KVL_CUDA_WF_Q4_0 : KVL_CUDA_WF_Q4_1;
    const size_t qb = kvl_cuda_wmat_qbytes(f, rows, cols), sb = kvl_cuda_wmat_sbytes(f, rows, cols);
    void *hq = malloc(qb), *hs = malloc(sb);
    CHECK(kvl_cuda_wmat_repack(t, wq, rows, cols, 0, rows, hq, hs));
    kvl_cuda_wmat w = {f, rows, cols, dev_alloc(qb), dev_alloc(sb)};
    up(w.q, hq, qb), up(w.s, hs, sb);
    CHECK(kvl_cuda_gemm_q8_supported(&w));
    float *dx = dev_alloc(sizeof(float) * n * cols), *dy = dev_alloc(sizeof(float) * (ny + guard));
    float *dyv = dev_alloc(sizeof(float) * ny);
    int8_t *dq = dev_alloc((size_t)n * cols);
    float *dds = dev_alloc(sizeof(float) * 2 * n * nb);
    up(dx, x, sizeof(float) * n * cols);
    CHECK(kvl_cuda_quantize_q8(dx, n, (int)cols, dq, dds, NULL, &err) == KVL_OK);
    int8_t *q = malloc((size_t)n * cols);
    float *ds = malloc(sizeof(float) * 2 * n * nb);
    CHECK(kvl_cuda_sync(&err) == KVL_OK);
    down(q, dq, (size_t)n * cols), down(ds, dds, sizeof(float) * 2 * n * nb);
    int qbad = 0;
    for (size_t b = 0; b < (size_t)n * nb; b++) {
        kvl_block_q8_1 r;
        kvl_quant_row_ref(KVL_TYPE_Q8_1, x + 32 * b, &r, 32);
        if (ds[2 * b] != kvl_fp16_to_fp32(r.d) || ds[2 * b + 1] != (float)r.s || memcmp(q + 32 * b, r.qs, 32)) qbad++;
    }
    CHECK_MSG(qbad == 0, "quantize q8: %d blocks differ from the CPU's", qbad);

    /* the matvec on the same inputs */
    if (acc) up(dyv, y0, sizeof(float) * ny);
    else poison(dyv, sizeof(float) * ny);
    CHECK(kvl_cuda_gemv_q8_ex(&w, dq, dds, n, dyv, acc, NULL, NULL, &err) == KVL_OK);
    CHECK(kvl_cuda_sync(&err) == KVL_OK);
    down(yv, dyv, sizeof(float) * ny);

    /* host reference and magnitudes (codes and scales decoded once) */
    int8_t *wc = malloc((size_t)rows * cols);
    double *wd = malloc(sizeof(double) * rows * nb), *wm = malloc(sizeof(double) * rows * nb);
    for (int64_t r = 0; r < rows; r++)
        for (size_t b = 0; b < nb; b++) {
            int cb[32];
            wcodes(t, wq + r * rb, (int64_t)b, cb, &wd[r * nb + b], &wm[r * nb + b]);
            for (int j = 0; j < 32; j++) wc[r * cols + 32 * b + j] = (int8_t)cb[j];
        }
    double *ref = malloc(sizeof(double) * ny), *mag = malloc(sizeof(double) * ny);
    for (int c = 0; c < n; c++)
        for (int64_t r = 0; r < rows; r++) {
            double dot = 0, sa = 0;
            for (size_t b = 0; b < nb; b++) {
                const double d = wd[r * nb + b], m = wm[r * nb + b];
                const double dx_ = ds[2 * (c * nb + b)], sx = ds[2 * (c * nb + b) + 1];
                const int8_t *xc = q + (size_t)c * cols + 32 * b, *cw = wc + r * cols + 32 * b;
                long isum = 0;
                for (int j = 0; j < 32; j++) isum += (long)cw[j] * xc[j];
                dot += dx_ * (d * (double)isum + m * sx);
                sa += fabs(dx_) * (fabs(d) * fabs((double)isum) + fabs(m * sx));
            }
            ref[(size_t)c * rows + r] = dot, mag[(size_t)c * rows + r] = sa;
        }

    const int bms[3] = {0, 64, 128};
    for (int bi = 0; bi < 3; bi++)
        for (int pdl = 0; pdl < 2; pdl++) {
            if (bi == 0 && pdl == 0) continue; /* automatic tile: with PDL (the lm's launch) */
            if (acc) up(dy, y0, sizeof(float) * ny);
            else poison(dy, sizeof(float) * ny);
            poison(dy + ny, sizeof(float) * guard);
            /* quantized again right before, over poison: a GEMM that read its input before the
             * quantization finished (programmatic dependent launch) would see poison */
            poison(dq, (size_t)n * cols), poison(dds, sizeof(float) * 2 * n * nb);
            CHECK(kvl_cuda_quantize_q8(dx, n, (int)cols, dq, dds, NULL, &err) == KVL_OK);
            CHECK(kvl_cuda_gemm_q8(&w, dq, dds, n, dy, acc, bms[bi], pdl, NULL, &err) == KVL_OK);
            CHECK(kvl_cuda_sync(&err) == KVL_OK);
            down(y, dy, sizeof(float) * (ny + guard));
            int bad_ref = 0, bad_mv = 0, bad_guard = 0;
            double worst_ref = 0, worst_mv = 0;
            for (int c = 0; c < n; c++)
                for (int64_t r = 0; r < rows; r++) {
                    const size_t i = (size_t)c * rows + r;
                    const double S = mag[i] + 1e-30, u = (double)(nb + 8) * ldexp(1.0, -23) * S;
                    const double a0 = acc ? fabs((double)y0[i]) * ldexp(1.0, -24) : 0;
                    {
                        const double want = acc ? (double)y0[i] + ref[i] : ref[i];
                        const double e = fabs((double)y[i] - want);
                        if (!(e <= u + a0 + 1e-30)) bad_ref++;
                        if (e / S > worst_ref) worst_ref = e / S;
                    }
                    const double e = fabs((double)y[i] - (double)yv[i]);
                    if (!(e <= 2 * u + 2 * a0 + 1e-30)) bad_mv++;
                    if (e / S > worst_mv) worst_mv = e / S;
                    n_cmp++, n_same += memcmp(&y[i], &yv[i], 4) == 0;
                }
            for (size_t i = 0; i < guard; i++) {
                uint32_t b;
                memcpy(&b, &y[ny + i], 4);
                bad_guard += b != 0xffffffffu;
            }
            CHECK_MSG(bad_ref == 0 && bad_mv == 0 && bad_guard == 0,
                      "gemm %s %lldx%lld n=%d acc=%d bm=%d pdl=%d: %d off the host reference (worst %.3g S), %d off "
                      "the matvec (worst %.3g S), %d guard values written",
                      kvl_type_name(t), (long long)rows, (long long)cols, n, acc, bms[bi], pdl, bad_ref, worst_ref,
                      bad_mv, worst_mv, bad_guard);
        }
    kvl_cuda_free(w.q), kvl_cuda_free(w.s), kvl_cuda_free(dx), kvl_cuda_free(dy), kvl_cuda_free(dyv);
    kvl_cuda_free(dq), kvl_cuda_free(dds);
    free(wq), free(x), free(y0), free(y), free(yv), free(tmp), free(hq), free(hs), free(q), free(ds), free(ref),
        free(mag), free(wc), free(wd), free(wm);
}

/* ---- the forward pass with the GEMM and the logits tail (lm.cu) ---- */

/* A 2-layer model (E 256, 4 / 2 heads of 64, F 512, V 1000) with random Q8_0
 * weights on the 8-bit path; one call of n = 40 entries (positions 0..39 of
 * slot 0, rewritten by every run) with (A) the matvec everywhere, (B) the
 * GEMM (n >= 16), (C) the GEMM and the logits tail with logits from entry
 * 30, (D) the tail without logits (the last entry's token only). B against
 * A: the same function up to the f32 order of the block sums, which the
 * 8-bit requantization of every layer's activations can turn into whole code
 * steps (1/254 of a block's amax), so rel L2 <= 2e-2 over all logits (a
 * wrong tile, stride or missing wait gives ~1). C against B on entries
 * 30..39: the same hidden states bit for bit; the output matrix on 10 rows
 * runs the matvec (n < 16) and on 40 the GEMM: per-row sums within
 * 1e-4 x max |row|; C's tokens the host argmax of its own logits, -1 before
 * entry 30; D's last token C's unless C's best two are within 1e-4. */
static void lm_case(void) {
    const int L = 2, E = 256, H = 4, Hkv = 2, hd = 64, F = 512, V = 1000, wt = KVL_TYPE_Q8_0, n = 40, f0 = 30;
    kvl_cuda_layer_desc ld[2];
    float freq[32];
    memset(ld, 0, sizeof ld);
    for (int l = 0; l < L; l++) {
        kvl_cuda_layer_desc *d = &ld[l];
        d->wq = (kvl_cuda_tensor){wt, NULL, H * hd, E}, d->wk = (kvl_cuda_tensor){wt, NULL, Hkv * hd, E};
        d->wv = (kvl_cuda_tensor){wt, NULL, Hkv * hd, E}, d->wo = (kvl_cuda_tensor){wt, NULL, E, H * hd};
        d->w_gate = (kvl_cuda_tensor){wt, NULL, F, E}, d->w_up = (kvl_cuda_tensor){wt, NULL, F, E};
        d->w_down = (kvl_cuda_tensor){wt, NULL, E, F};
    }
    for (int i = 0; i < hd / 2; i++) freq[i] = powf(10000.0f, -2.0f * i / hd);
    const kvl_cuda_model_desc md = {L, E, H, Hkv, hd, F, V, 1e-5f, 1, freq, {wt, NULL, V, E}, {wt, NULL, V, E}, NULL, ld};
    const kvl_cuda_lm_config cfg = {"f16", 16, 256, 1, 64, 0, 4321, 0 /* 8-bit path */, 0, 0, 0};
    kvl_cuda_lm *lm = NULL;
    kvl_err err = {0};
    if (kvl_cuda_lm_create(&md, &cfg, &lm, &err) != KVL_OK) {
        CHECK_MSG(0, "lm create: %s", err.msg);
        return;
    }
    int32_t tok[40], pos[40], slot[40], amA[40], amB[40], amC[40], amD[40];
    for (int i = 0; i < n; i++) tok[i] = (7 + 131 * i) % V, pos[i] = i, slot[i] = 0;
    float *LA = malloc(sizeof(float) * n * V), *LB = malloc(sizeof(float) * n * V), *LC = malloc(sizeof(float) * n * V);
    kvl_cuda_lm_set_gemm(lm, 0);
    CHECK(kvl_cuda_lm_forward(lm, n, tok, pos, slot, 0, LA, amA, &err) == KVL_OK);
    kvl_cuda_lm_set_gemm(lm, 16);
    CHECK(kvl_cuda_lm_forward(lm, n, tok, pos, slot, 0, LB, amB, &err) == KVL_OK);
    kvl_cuda_lm_set_logits_tail(lm, 1);
    CHECK(kvl_cuda_lm_forward(lm, n, tok, pos, slot, f0, LC, amC, &err) == KVL_OK);
    CHECK(kvl_cuda_lm_forward(lm, n, tok, pos, slot, 0, NULL, amD, &err) == KVL_OK);
    double num = 0, den = 0;
    int fin = 1, same_tok = 0;
    for (int i = 0; i < n * V; i++) {
        fin &= isfinite(LB[i]) && isfinite(LA[i]);
        num += ((double)LB[i] - LA[i]) * ((double)LB[i] - LA[i]), den += (double)LA[i] * LA[i];
    }
    for (int i = 0; i < n; i++) same_tok += amA[i] == amB[i];
    const double rel = sqrt(num / (den + 1e-30));
    printf("note: forward with the GEMM vs the matvec (2 layers, 40 entries): logits rel L2 %.3g, greedy tokens equal "
           "for %d of %d\n", rel, same_tok, n);
    CHECK_MSG(fin && rel <= 2e-2, "forward GEMM vs matvec: rel L2 %.3g (finite %d)", rel, fin);
    int bad_row = 0, bad_tok = 0;
    double worst = 0;
    for (int i = 0; i < n; i++) {
        if (i < f0) {
            bad_tok += amC[i] != -1 || amD[i] != -1;
            continue;
        }
        const float *c = LC + (size_t)(i - f0) * V, *b = LB + (size_t)i * V;
        double mx = 0, e = 0;
        int best = 0;
        for (int v = 0; v < V; v++) {
            mx = fabs(b[v]) > mx ? fabs(b[v]) : mx;
            e = fabs((double)c[v] - b[v]) > e ? fabs((double)c[v] - b[v]) : e;
            if (c[v] > c[best]) best = v;
        }
        bad_row += !(e <= 1e-4 * mx);
        worst = e / (mx + 1e-30) > worst ? e / (mx + 1e-30) : worst;
        bad_tok += amC[i] != best;
        if (i == n - 1 && amD[i] != amC[i]) { /* a near-tie may go either way between two kernels */
            float second = -INFINITY;
            for (int v = 0; v < V; v++)
                if (v != best && c[v] > second) second = c[v];
            bad_tok += !(c[best] - second <= 1e-4 * mx);
        }
    }
    CHECK_MSG(bad_row == 0 && bad_tok == 0, "logits tail: %d rows off (worst %.3g of max), %d tokens wrong", bad_row,
              worst, bad_tok);
    free(LA), free(LB), free(LC);
    kvl_cuda_lm_free(lm);
}

int main(void) {
    if (cuda_test_device()) return 1;
    kvl_err err = {0};
    const int types[3] = {KVL_TYPE_Q8_0, KVL_TYPE_Q4_0, KVL_TYPE_Q4_1};
    const int ns[6] = {1, 7, 33, 64, 65, 130};
    for (int ti = 0; ti < 3; ti++) {
        for (int ni = 0; ni < 6; ni++) gemm_case(types[ti], 203, 576, ns[ni], ni & 1);
        gemm_case(types[ti], 77, 1536, 40, 1);
        gemm_case(types[ti], 960, 576, 512, 0); /* SmolLM2's qkv at a 512-token chunk */
        gemm_case(types[ti], 1031, 4096, 200, ti & 1);
        gemm_case(types[ti], 131, 14336, 96, !(ti & 1));
    }
    printf("note: %d of %d outputs bit-identical to the integer matvec's\n", n_same, n_cmp);
    lm_case();
    { /* refusals */
        kvl_cuda_wmat wf = {KVL_CUDA_WF_F16, 128, 576, (void *)1, NULL}, w32 = {KVL_CUDA_WF_Q8_0, 128, 544, (void *)1, (void *)1};
        kvl_cuda_wmat ok = {KVL_CUDA_WF_Q8_0, 128, 576, (void *)1, (void *)1};
        CHECK(!kvl_cuda_gemm_q8_supported(&wf) && !kvl_cuda_gemm_q8_supported(&w32) && kvl_cuda_gemm_q8_supported(&ok));
        CHECK(kvl_cuda_gemm_q8(&wf, (int8_t *)1, (float *)1, 64, (float *)1, 0, 0, 0, NULL, &err) == KVL_ERR_ARG);
        CHECK(kvl_cuda_gemm_q8(&w32, (int8_t *)1, (float *)1, 64, (float *)1, 0, 0, 0, NULL, &err) == KVL_ERR_ARG);
        CHECK(kvl_cuda_gemm_q8(&ok, (int8_t *)1, (float *)1, 0, (float *)1, 0, 0, 0, NULL, &err) == KVL_ERR_ARG);
        CHECK(kvl_cuda_gemm_q8(&ok, (int8_t *)1, (float *)1, 64, (float *)1, 0, 96, 0, NULL, &err) == KVL_ERR_ARG);
    }
    KVL_TEST_END();
}
