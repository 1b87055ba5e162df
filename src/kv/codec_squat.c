/* SQuat sealing K codec (arXiv 2503.24358; kv/codec_squat.h): the sealed
 * format is exactly kivi2's K segment (2-bit codes per channel over the page,
 * f16 scale and min per channel: 3.00 bits/value at D=64, P=32), so the qk /
 * av / decode kernels are kivi2's; only the seal differs.
 *
 * Seal: channels are quantized in blocks of SQUAT_G, in the state's order
 * (decreasing weight in the subspace, like GPTQ's act-order, so that the last
 * blocks, whose error nothing can compensate, matter least). After block t, with e_d
 * the error (dequantized - original) of every token on the channels done so
 * far, the targets of the remaining channels become original + e_r with
 *   e_r = argmin |U e|^2 + lambda |e|^2 = -U_r^T C_t U_d e_d,
 *   C_t = (lambda I + U_r U_r^T)^-1   (push-through identity, r x r),
 * so the error accumulated so far is cancelled inside the query subspace
 * (U: orthonormal basis of the prefill queries' top-r subspace). Each block's
 * channels then get KIVI min/max parameters over the page computed on their
 * targets, made exactly representable in f16 (z = min rounded down, s =
 * range / 3 rounded up), so decoding reproduces the values the propagation
 * used. This follows the reference's structure (blocks of channels quantized
 * per channel over the token group, error pushed to the remaining channels
 * through the Schur complement of I + lambda' Qhat^T Qhat); the difference:
 * an orthonormal basis with lambda weighting |e|^2 (lambda -> 0: strict
 * orthogonality) where the reference weights by the singular values.
 * Values: kivi2v (KIVI per token), as the paper does. */
#include "kv/codec_squat.h"
#include "kv/codec_spec.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kv/codec_kivi.h"
#include "util/fp16.h"

extern const kvl_codec kvl_codec_f16, kvl_codec_kivi2, kvl_codec_kivi2_v;

/* ---- state ------------------------------------------------------------------------- */

void kvl_squat_jacobi(double *A, int D, double *w, double *V) {
    if (D < 1 || D > SQUAT_DMAX) return;
    for (int i = 0; i < D; i++)
        for (int j = 0; j < D; j++) V[i * D + j] = i == j; /* V columns: eigenvectors (transposed at the end) */
    double norm = 0;
    for (int i = 0; i < D * D; i++) norm += A[i] * A[i];
    for (int sweep = 0; sweep < 100; sweep++) {
        double off = 0;
        for (int p = 0; p < D; p++)
            for (int q = p + 1; q < D; q++) off += A[p * D + q] * A[p * D + q];
        if (off <= 1e-30 * norm || off == 0) break;
        for (int p = 0; p < D; p++)
            for (int q = p + 1; q < D; q++) {
                const double apq = A[p * D + q];
                if (fabs(apq) < 1e-300) continue;
                const double th = (A[q * D + q] - A[p * D + p]) / (2 * apq);
                const double t = (th >= 0 ? 1 : -1) / (fabs(th) + sqrt(th * th + 1));
                const double c = 1 / sqrt(t * t + 1), s = t * c;
                for (int k = 0; k < D; k++) { /* columns p, q */
                    const double akp = A[k * D + p], akq = A[k * D + q];
                    A[k * D + p] = c * akp - s * akq;
                    A[k * D + q] = s * akp + c * akq;
                }
                for (int k = 0; k < D; k++) { /* rows p, q */
                    const double apk = A[p * D + k], aqk = A[q * D + k];
                    A[p * D + k] = c * apk - s * aqk;
                    A[q * D + k] = s * apk + c * aqk;
                }
                for (int k = 0; k < D; k++) {
                    const double vkp = V[k * D + p], vkq = V[k * D + q];
                    V[k * D + p] = c * vkp - s * vkq;
                    V[k * D + q] = s * vkp + c * vkq;
                }
            }
    }
    /* sort descending (selection, ties by index: deterministic); then A, no
     * longer needed, holds the eigenvectors as rows before they go to V */
    double d[SQUAT_DMAX];
    int idx[SQUAT_DMAX];
    for (int i = 0; i < D; i++) idx[i] = i, d[i] = A[i * D + i];
    for (int i = 0; i < D; i++) {
        int b = i;
        for (int j = i + 1; j < D; j++)
            if (d[idx[j]] > d[idx[b]]) b = j;
        const int t = idx[i];
        idx[i] = idx[b], idx[b] = t;
    }
    for (int i = 0; i < D; i++) {
        w[i] = d[idx[i]];
        int big = 0; /* sign: largest component positive */
        for (int k = 0; k < D; k++)
            if (fabs(V[k * D + idx[i]]) > fabs(V[big * D + idx[i]])) big = k;
        const double sg = V[big * D + idx[i]] < 0 ? -1 : 1;
        for (int k = 0; k < D; k++) A[i * D + k] = sg * V[k * D + idx[i]];
    }
    memcpy(V, A, sizeof(double) * (size_t)D * D);
}

/* out [r][r] = M^-1 for the SPD matrix M [r][r] (Gauss-Jordan, partial pivot); -1 if singular. */
static int invert(double *M, int r, double *out) {
    double a[SQUAT_RMAX][2 * SQUAT_RMAX];
    for (int i = 0; i < r; i++)
        for (int j = 0; j < 2 * r; j++) a[i][j] = j < r ? M[i * r + j] : (j - r == i);
    for (int c = 0; c < r; c++) {
        int p = c;
        for (int i = c + 1; i < r; i++)
            if (fabs(a[i][c]) > fabs(a[p][c])) p = i;
        if (!(fabs(a[p][c]) > 1e-300)) return -1;
        for (int j = 0; j < 2 * r; j++) {
            const double t = a[c][j];
            a[c][j] = a[p][j], a[p][j] = t;
        }
        const double d = a[c][c];
        for (int j = 0; j < 2 * r; j++) a[c][j] /= d;
        for (int i = 0; i < r; i++)
            if (i != c) {
                const double f = a[i][c];
                for (int j = 0; j < 2 * r; j++) a[i][j] -= f * a[c][j];
            }
    }
    for (int i = 0; i < r; i++)
        for (int j = 0; j < r; j++) out[i * r + j] = a[i][r + j];
    return 0;
}

/* The state from A = Q^T Q [D][D] (destroyed); arguments checked by the callers. */
static kvl_status build_from_gram(double *A, int D, int r, float lambda, kvl_squat_state *st, kvl_err *err) {
    double *V = malloc(sizeof(double) * (size_t)D * D);
    double *w = malloc(sizeof(double) * (size_t)D);
    if (!V || !w) {
        free(V), free(w);
        return kvl_err_set(err, KVL_ERR_NOMEM, "squat: out of memory building the state");
    }
    kvl_squat_jacobi(A, D, w, V);
    memset(st, 0, sizeof *st);
    st->D = D, st->r = r, st->lambda = lambda;
    for (int k = 0; k < r; k++)
        for (int j = 0; j < D; j++) st->U[k][j] = (float)V[k * D + j];
    double wt[SQUAT_DMAX]; /* channel weight in the subspace; order: decreasing, ties by index */
    for (int j = 0; j < D; j++) {
        double s = 0;
        for (int k = 0; k < r; k++) s += (double)st->U[k][j] * st->U[k][j];
        wt[j] = s;
        st->perm[j] = (int16_t)j;
    }
    for (int a = 0; a < D; a++) {
        int b = a;
        for (int c = a + 1; c < D; c++)
            if (wt[st->perm[c]] > wt[st->perm[b]]) b = c;
        const int16_t t = st->perm[a];
        st->perm[a] = st->perm[b], st->perm[b] = t;
    }
    kvl_status rc = KVL_OK;
    const int T = D / SQUAT_G;
    for (int t = 0; t + 1 < T && r > 0; t++) {
        const int j0 = (t + 1) * SQUAT_G; /* remaining channels perm[j0 ..] */
        double M[SQUAT_RMAX * SQUAT_RMAX], Mi[SQUAT_RMAX * SQUAT_RMAX];
        for (int a = 0; a < r; a++)
            for (int b = 0; b < r; b++) {
                double s = a == b ? lambda : 0;
                for (int j = j0; j < D; j++) s += (double)st->U[a][st->perm[j]] * st->U[b][st->perm[j]];
                M[a * r + b] = s;
            }
        if (invert(M, r, Mi)) {
            rc = kvl_err_set(err, KVL_ERR_ARG, "squat: singular propagation matrix");
            break;
        }
        for (int a = 0; a < r; a++)
            for (int b = 0; b < r; b++) st->C[t][a][b] = (float)Mi[a * r + b];
    }
    free(V), free(w);
    return rc;
}

kvl_status kvl_squat_state_build(const float *Q, int n, int D, int r, float lambda, kvl_squat_state *st,
                                 kvl_err *err) {
    if (D < SQUAT_G || D > SQUAT_DMAX || D % SQUAT_G)
        return kvl_err_set(err, KVL_ERR_UNSUPPORTED, "squat: head_dim %d unsupported (multiple of %d, <= %d)", D, SQUAT_G,
                           SQUAT_DMAX);
    if (r < 0 || r > SQUAT_RMAX || r > D || n < 1 || !(lambda > 0) || !Q)
        return kvl_err_set(err, KVL_ERR_ARG, "squat: bad subspace arguments (r %d, n %d, lambda %g)", r, n,
                           (double)lambda);
    double *A = malloc(sizeof(double) * (size_t)D * D);
    if (!A) return kvl_err_set(err, KVL_ERR_NOMEM, "squat: out of memory building the state");
    for (int i = 0; i < D; i++) /* A = Q^T Q */
        for (int j = i; j < D; j++) {
            double s = 0;
            for (int k = 0; k < n; k++) s += (double)Q[(size_t)k * D + i] * Q[(size_t)k * D + j];
            A[i * D + j] = A[j * D + i] = s;
        }
    kvl_status rc = build_from_gram(A, D, r, lambda, st, err);
    free(A);
    return rc;
}

/* ---- seal ---------------------------------------------------------------------------- */

static float clamp_h(float v) { return v > 65504.0f ? 65504.0f : (v < -65504.0f ? -65504.0f : (v == v ? v : 0.0f)); }

/* Largest f16 <= x (x in [-65504, 65504]). */
static uint16_t f16_down(double x) {
    uint16_t h = kvl_fp32_to_fp16((float)x);
    while ((double)kvl_fp16_to_fp32(h) > x) h = (h & 0x8000u) ? (uint16_t)(h + 1) : (h == 0 ? 0x8001u : (uint16_t)(h - 1));
    return h;
}
/* Smallest f16 >= x, for 0 <= x <= 65504. */
static uint16_t f16_up(double x) {
    if (!(x > 0)) return 0;
    uint16_t h = kvl_fp32_to_fp16((float)x);
    if (h > 0x7bffu) h = 0x7bffu;
    while (h < 0x7bffu && (double)kvl_fp16_to_fp32(h) < x) h++;
    return h;
}

/* Quantize channel j of work [P][D] in place (2-bit KIVI parameters over the
 * page, f16-exact) and write it into the K segment. */
static void quant_channel(uint8_t *dst, float *work, int D, int P, int j) {
    float mn = work[j], mx = mn;
    for (int i = 1; i < P; i++) {
        const float v = work[(size_t)i * D + j];
        mn = v < mn ? v : mn, mx = v > mx ? v : mx;
    }
    const uint16_t zh = f16_down(mn), sh = f16_up(((double)mx - kvl_fp16_to_fp32(zh)) / 3);
    const float s = kvl_fp16_to_fp32(sh), z = kvl_fp16_to_fp32(zh);
    uint8_t c[SQUAT_PMAX];
    for (int i = 0; i < P; i++) {
        float *v = &work[(size_t)i * D + j];
        double q = s > 0 ? nearbyint(((double)*v - z) / s) : 0;
        q = q < 0 ? 0 : (q > 3 ? 3 : q == q ? q : 0); /* NaN (from a NaN open row) -> 0 */
        c[i] = (uint8_t)q;
        *v = s * (float)c[i] + z; /* what decode returns */
    }
    kvl_kivi_k_put_channel(2, dst, D, P, j, c, sh, zh);
}

static void sq_seal(const void *stv, uint8_t *dst, const uint8_t *open_seg, int D, int P) {
    const kvl_squat_state *st = stv;
    const int r = st && st->D == D ? st->r : 0;
    if (P > SQUAT_PMAX || D > SQUAT_DMAX || D % SQUAT_G) { /* out of the propagating seal's range */
        kvl_codec_kivi2.seal(NULL, dst, open_seg, D, P);
        return;
    }
    float orig[SQUAT_PMAX * SQUAT_DMAX], work[SQUAT_PMAX * SQUAT_DMAX];
    const uint16_t *x = (const uint16_t *)open_seg; /* [P][D] f16 */
    for (int k = 0; k < P * D; k++) orig[k] = work[k] = clamp_h(kvl_fp16_to_fp32(x[k]));
    memset(dst, 0, kivi_k_code_bytes(2, D, P));
    const int T = D / SQUAT_G;
    int16_t id[SQUAT_DMAX];
    for (int j = 0; j < D; j++) id[j] = (int16_t)j;
    const int16_t *pm = r > 0 ? st->perm : id; /* channel order */
    for (int t = 0; t < T; t++) {
        const int j0 = t * SQUAT_G, j1 = j0 + SQUAT_G;
        for (int j = j0; j < j1; j++) quant_channel(dst, work, D, P, pm[j]);
        if (r == 0 || t + 1 == T) continue;
        for (int i = 0; i < P; i++) { /* targets of channels pm[j1 ..] for token i */
            const float *o = orig + (size_t)i * D;
            float *wk = work + (size_t)i * D;
            double y[SQUAT_RMAX], v[SQUAT_RMAX];
            for (int a = 0; a < r; a++) {
                double s = 0;
                for (int j = 0; j < j1; j++) s += (double)st->U[a][pm[j]] * ((double)wk[pm[j]] - o[pm[j]]);
                y[a] = s;
            }
            for (int a = 0; a < r; a++) {
                double s = 0;
                for (int b = 0; b < r; b++) s += (double)st->C[t][a][b] * y[b];
                v[a] = s;
            }
            for (int j = j1; j < D; j++) {
                double s = 0;
                for (int a = 0; a < r; a++) s += (double)st->U[a][pm[j]] * v[a];
                wk[pm[j]] = clamp_h((float)((double)o[pm[j]] - s));
            }
        }
    }
}

/* ---- codec: kivi2's K format and kernels ---------------------------------------------- */

static size_t sq_seg_bytes(int D, int P) { return kivi_k_seg_bytes(2, D, P); }
static int sq_validate(const uint8_t *seg, int D, int P, int n) { return kvl_kivi_validate(2, 0, 0, seg, D, P, n); }
static void sq_decode(const uint8_t *seg, int D, int P, int i, float *x) { kvl_codec_kivi2.decode(seg, D, P, i, x); }
static void sq_qk(const uint8_t *seg, int D, int P, int n, const float *q, float *s) {
    kvl_codec_kivi2.ref.qk(seg, D, P, n, q, s);
}
static void sq_av(const uint8_t *seg, int D, int P, int n, const float *p, float *acc) {
    kvl_codec_kivi2.ref.av(seg, D, P, n, p, acc);
}
static void sq_qk_multi(const uint8_t *seg, int D, int P, int n, const float *q, int m, float *s) {
    kvl_codec_kivi2.ref.qk_multi(seg, D, P, n, q, m, s);
}
static int sq_simd(int D, kvl_codec_kernels *out) { return kvl_kivi_avx2_kernels(2, 0, 0, D, out); }
/* Pool state: the parameters (rank, lambda) and a rank-0 state (plain kivi2
 * seals). Per-sequence state: the same, then the Gram matrix of the queries
 * observed; the subspace is built at the end of the first forward call that
 * shows queries (the prompt, or its first n_batch tokens) and then frozen. */
typedef struct sq_pool {
    kvl_squat_state s;
    int rank;
} sq_pool;
typedef struct sq_seq {
    kvl_squat_state s; /* first, so seal reads it as a kvl_squat_state */
    int rank;
    int built;
    double n;
    double gram[]; /* [D][D] */
} sq_seq;
static size_t sq_state_bytes(int D) { return sizeof(sq_pool); }
static size_t sq_seq_bytes(int D) { return sizeof(sq_seq) + sizeof(double) * (size_t)D * (size_t)D; }
static kvl_status sq_state_init(const kvl_codec_params *prm, int layer, int head, int is_v, int D, void *st,
                                kvl_err *err) {
    sq_pool *s = st;
    memset(s, 0, sizeof *s);
    if (D < SQUAT_G || D > SQUAT_DMAX || D % SQUAT_G)
        return kvl_err_set(err, KVL_ERR_UNSUPPORTED, "squat: head_dim %d unsupported (multiple of %d, <= %d)", D, SQUAT_G,
                           SQUAT_DMAX);
    double lambda;
    const kvl_codec_params none = {0};
    if (!prm) prm = &none;
    kvl_status rc = kvl_codec_param_int(prm, "rank", 4, 0, SQUAT_RMAX < D ? SQUAT_RMAX : D, &s->rank, err);
    if (rc == KVL_OK) rc = kvl_codec_param_float(prm, "lambda", SQUAT_LAMBDA, 1e-9, 1e3, &lambda, err);
    if (rc) return rc;
    s->s.D = D, s->s.r = 0, s->s.lambda = (float)lambda;
    return KVL_OK;
}
/* Accumulate the group's queries into the Gram matrix; build the subspace
 * once at the end of the first call (a failure leaves rank 0: kivi2 seals). */
static void sq_observe(void *st, const float *q, int n, int G, int D, size_t stride) {
    sq_seq *s = st;
    if (s->built || D != s->s.D || n <= 0) return;
    for (int t = 0; t < n; t++)
        for (int g = 0; g < G; g++) {
            const float *x = q + (size_t)t * stride + (size_t)g * D;
            for (int i = 0; i < D; i++)
                for (int j = i; j < D; j++) s->gram[i * D + j] += (double)x[i] * x[j];
        }
    s->n += (double)n * G;
    for (int i = 0; i < D; i++)
        for (int j = 0; j < i; j++) s->gram[i * D + j] = s->gram[j * D + i];
    kvl_err err;
    const float lambda = s->s.lambda;
    if (build_from_gram(s->gram, D, s->rank, lambda, &s->s, &err) != KVL_OK) {
        memset(&s->s, 0, sizeof s->s);
        s->s.D = D, s->s.r = 0, s->s.lambda = lambda;
    }
    s->built = 1;
}

const kvl_codec kvl_codec_squat = {
    .name = "squat",
    .desc = "SQuat 2-bit K: kivi2 format (per channel over the page, f16 scale+min), codes chosen in 4-channel "
            "blocks with the error pushed out of the prefill queries' subspace; V kivi2v; 3.00 bits/value at D=64, P=32",
    .seg_bytes = sq_seg_bytes, .open = &kvl_codec_f16, .seal = sq_seal, .decode = sq_decode, .validate = sq_validate,
    .ref = {"scalar", sq_qk, sq_av, sq_qk_multi, NULL}, .simd = sq_simd, .as_v = &kvl_codec_kivi2_v,
    .state_bytes = sq_state_bytes, .state_init = sq_state_init, .seq_state_bytes = sq_seq_bytes,
    .observe = sq_observe, .params = "rank,lambda"};
