/* Oaken offline profiling (calibrate.h): prefill windows of a text with an
 * f32 KV cache, read every cached K/V row back through kvl_kv_table_decode,
 * and turn per-window quantiles into per-layer thresholds; one more window,
 * not used for the thresholds, measures the resulting group fractions and
 * how often a token has more outer + inner values than the codec's per-token
 * capacity. */
#include "engine/calibrate.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "kv/codec_oaken.h"

static int cmp_float(const void *a, const void *b) {
    const float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Relative reconstruction error sum (x - x')^2 / sum x^2 of codec c on the
 * rows vals [n / D][D] (one scratch page at a time; st: codec state or NULL). */
static double codec_rel_err(const kvl_codec *c, const void *st, const float *vals, size_t n, int D, uint8_t *seg,
                            float *y) {
    enum { PP = 32 };
    double e = 0, t = 0;
    for (size_t r = 0; r < n; r += (size_t)D) {
        const int i = (int)((r / (size_t)D) % PP);
        c->encode(st, seg, D, PP, i, vals + r);
        c->decode(seg, D, PP, i, y);
        for (int j = 0; j < D; j++) {
            const double d = (double)vals[r + j] - y[j];
            e += d * d, t += (double)vals[r + j] * vals[r + j];
        }
    }
    return t > 0 ? e / t : 0;
}

static kvl_status fail(char *err, size_t n, kvl_status s, const char *fmt, ...) {
    if (err && n) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, n, fmt, ap);
        va_end(ap);
    }
    return s;
}

/* Gather layer l's K (is_v 0) or V values of the sequence: vals [len*Hkv*D]. */
static size_t gather(const kvl_seq *s, int l, int Hkv, int D, int is_v, float *vals, float *row) {
    size_t o = 0;
    for (int h = 0; h < Hkv; h++) {
        const int len = kvl_kv_table_len(s->t, l, h);
        for (int i = 0; i < len; i++) {
            if (kvl_kv_table_decode(s->t, l, h, i, is_v ? NULL : row, is_v ? row : NULL) != KVL_OK) continue;
            memcpy(vals + o, row, sizeof(float) * D);
            o += (size_t)D;
        }
    }
    return o;
}

kvl_status kvl_calibrate_oaken(const kvl_model *m, const char *text, size_t len, const kvl_calib_params *pp,
                               const char *out_path, char *err, size_t err_len) {
    kvl_calib_params p = pp ? *pp : (kvl_calib_params){0};
    if (p.n_tokens <= 0) p.n_tokens = 8192;
    if (p.n_window <= 0) p.n_window = 512;
    if (p.frac[0] <= 0 && p.frac[1] <= 0 && p.frac[2] <= 0) p.frac[0] = 0.04f, p.frac[1] = 0.90f, p.frac[2] = 0.06f;
    const double fsum = (double)p.frac[0] + p.frac[1] + p.frac[2];
    if (!(p.frac[0] > 0 && p.frac[1] > 0 && p.frac[2] >= 0 && fabs(fsum - 1) < 1e-4))
        return fail(err, err_len, KVL_ERR_ARG, "calibrate: fractions must be positive and sum to 1");
    kvl_model_info mi;
    kvl_model_get_info(m, &mi);
    const int L = mi.n_layer, Hkv = mi.n_head_kv, D = mi.head_dim, W = p.n_window;
    int64_t nt = kvl_tokenize(m, text, len, -1, 0, NULL, 0);
    if (nt < 0) return fail(err, err_len, (kvl_status)-nt, "calibrate: cannot tokenize the text");
    kvl_token *tok = malloc(sizeof(kvl_token) * (size_t)(nt > 0 ? nt : 1));
    if (!tok) return fail(err, err_len, KVL_ERR_NOMEM, "calibrate: out of memory");
    nt = kvl_tokenize(m, text, len, -1, 0, tok, nt);
    int n_win = p.n_tokens / W;
    if (n_win < 1) n_win = 1;
    if ((int64_t)(n_win + 1) * W > nt) n_win = (int)(nt / W) - 1;
    if (n_win < 1) {
        free(tok);
        return fail(err, err_len, KVL_ERR_ARG, "calibrate: text too short (%lld tokens, need %d: two windows of %d)",
                    (long long)nt, 2 * W, W);
    }
    kvl_ctx_params cp;
    kvl_ctx_params_default(&cp);
    cp.n_ctx = W, cp.n_threads = p.n_threads, cp.kv_codec = "f32";
    kvl_ctx *ctx = NULL;
    char cerr[256];
    kvl_status st = kvl_ctx_create(m, &cp, &ctx, cerr, sizeof cerr);
    if (st) {
        free(tok);
        return fail(err, err_len, st, "calibrate: %s", cerr);
    }
    const size_t nv = (size_t)W * Hkv * D;
    float *vals = malloc(sizeof(float) * nv), *row = malloc(sizeof(float) * D);
    double *acc = calloc((size_t)L * 2 * 4, sizeof(double));
    kvl_oaken_thresholds *th = calloc((size_t)L * 2, sizeof *th);
    if (!vals || !row || !acc || !th) {
        st = fail(err, err_len, KVL_ERR_NOMEM, "calibrate: out of memory");
        goto out;
    }
    const double a = p.frac[0], b = (double)p.frac[0] + p.frac[1];
    const double qs[4] = {a / 2, b / 2, 1 - b / 2, 1 - a / 2}; /* lo_out, lo_in, hi_in, hi_out */
    for (int w = 0; w <= n_win; w++) {
        kvl_seq *s = NULL;
        st = kvl_seq_create(ctx, &s);
        if (st == KVL_OK) st = kvl_prefill(s, tok + (size_t)w * W, W, NULL, NULL);
        if (st) {
            fail(err, err_len, st, "calibrate: prefill failed: %s", kvl_ctx_error(ctx));
            if (s) kvl_seq_free(s);
            goto out;
        }
        if (w < n_win) { /* profiling window */
            for (int l = 0; l < L; l++)
                for (int v = 0; v < 2; v++) {
                    const size_t n = gather(s, l, Hkv, D, v, vals, row);
                    qsort(vals, n, sizeof(float), cmp_float);
                    for (int k = 0; k < 4; k++) {
                        const double pos = qs[k] * (double)(n - 1);
                        const size_t idx = k < 2 ? (size_t)floor(pos) : (size_t)ceil(pos); /* lower / higher */
                        acc[((size_t)l * 2 + v) * 4 + k] += vals[idx];
                    }
                }
            if (p.log) fprintf(p.log, "\rcalibrate: window %d/%d", w + 1, n_win), fflush(p.log);
        } else { /* held-out window: thresholds and what they give */
            if (p.log) fprintf(p.log, "\n");
            for (int l = 0; l < 2 * L; l++) {
                const double *t = acc + (size_t)l * 4;
                th[l] = (kvl_oaken_thresholds){(float)(t[0] / n_win), (float)(t[1] / n_win), (float)(t[2] / n_win),
                                               (float)(t[3] / n_win)};
            }
            if (p.log)
                fprintf(p.log, "layer  side     lo_out      lo_in      hi_in     hi_out   outer%%  middle%%  inner%%  "
                               "tokens over C=%d: any%%  outer%%\n", kvl_oaken_capacity(D));
            const int C = kvl_oaken_capacity(D);
            static const char *const cnames[] = {"int8", "fp8", "int4", "int4g64", "int4z", "oaken"};
            enum { NC = 6 };
            double cerr_sum[NC][2] = {{0}}, cerr_max[NC][2] = {{0}};
            uint8_t *cseg = malloc(kvl_codec_find("f32")->seg_bytes(D, 32) * 2);
            uint8_t cst[64];
            double tot[2][3] = {{0}}, tover[2] = {0}, toverout[2] = {0}, trows[2] = {0};
            for (int l = 0; l < L; l++)
                for (int v = 0; v < 2; v++) {
                    const size_t n = gather(s, l, Hkv, D, v, vals, row);
                    const kvl_oaken_thresholds *t = &th[l * 2 + v];
                    size_t cnt[3] = {0}, over = 0, over_out = 0;
                    for (size_t r = 0; r < n; r += (size_t)D) {
                        int sp = 0, so = 0;
                        for (int j = 0; j < D; j++) {
                            const float x = vals[r + j];
                            const int g = (x <= t->lo_out || x >= t->hi_out) ? 0 : (x > t->lo_in && x < t->hi_in) ? 2 : 1;
                            cnt[g]++;
                            sp += g != 1, so += g == 0;
                        }
                        over += sp > C, over_out += so > C;
                    }
                    for (int g = 0; g < 3; g++) tot[v][g] += (double)cnt[g];
                    for (int ci = 0; ci < NC && cseg; ci++) {
                        const kvl_codec *cc = kvl_codec_find(cnames[ci]);
                        if (!cc || !cc->encode) continue;
                        const void *stp = NULL;
                        if (cc->state_bytes && cc->state_bytes(D) <= sizeof cst && kvl_oaken_state_set(cst, t) == 0) stp = cst;
                        const double re = codec_rel_err(cc, stp, vals, n, D, cseg, row);
                        cerr_sum[ci][v] += re / L;
                        if (re > cerr_max[ci][v]) cerr_max[ci][v] = re;
                    }
                    tover[v] += (double)over, toverout[v] += (double)over_out, trows[v] += (double)(n / (size_t)D);
                    if (p.log)
                        fprintf(p.log, "%5d  %s   %9.4f  %9.4f  %9.4f  %9.4f   %5.2f   %6.2f   %5.2f  %5.1f   %5.1f\n", l,
                                v ? "V" : "K", t->lo_out, t->lo_in, t->hi_in, t->hi_out, 100.0 * cnt[0] / n,
                                100.0 * cnt[1] / n, 100.0 * cnt[2] / n, 100.0 * over / (double)(n / (size_t)D),
                                100.0 * over_out / (double)(n / (size_t)D));
                }
            if (p.log)
                for (int v = 0; v < 2; v++) {
                    const double n = tot[v][0] + tot[v][1] + tot[v][2];
                    fprintf(p.log, "all    %s   outer %.2f%%  middle %.2f%%  inner %.2f%%  tokens with outer+inner > C: %.1f%%, "
                            "outer alone > C: %.2f%%\n", v ? "V" : "K", 100 * tot[v][0] / n, 100 * tot[v][1] / n,
                            100 * tot[v][2] / n, 100 * tover[v] / trows[v], 100 * toverout[v] / trows[v]);
                }
            if (p.log && cseg) {
                fprintf(p.log, "relative reconstruction error sum(x-x')^2/sum(x^2), held-out window (mean / worst layer):\n");
                for (int ci = 0; ci < NC; ci++)
                    fprintf(p.log, "  %-8s K %.3e / %.3e   V %.3e / %.3e\n", cnames[ci], cerr_sum[ci][0], cerr_max[ci][0],
                            cerr_sum[ci][1], cerr_max[ci][1]);
            }
            free(cseg);
        }
        kvl_seq_free(s);
    }
    {
        kvl_err e = {0};
        st = kvl_oaken_calib_write(out_path, L, D, n_win * W, p.frac, th, &e);
        if (st) fail(err, err_len, st, "calibrate: %s", e.msg);
        else if (p.log)
            fprintf(p.log, "calibrate: %d tokens (%d windows of %d) -> %s\n", n_win * W, n_win, W, out_path);
    }
out:
    free(vals), free(row), free(acc), free(th), free(tok);
    kvl_ctx_free(ctx);
    return st;
}
