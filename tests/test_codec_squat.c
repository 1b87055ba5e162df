/* SQuat key quantizer core tests: the Jacobi eigen-solver, the state built
 * from queries (orthonormal basis spanning a planted subspace), the seal
 * (deterministic; rank 0 == kivi2's seal byte for byte) and the point of the
 * method: for queries in the subspace, the error of q.k is much smaller than
 * with plain 2-bit KIVI keys at equal bits (kivi2: per channel; kivi2v: per
 * token), both 3.00 bits/value at D=64, P=32 like squat. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kv/codec.h"
#include "kv/codec_kivi.h"
#include "kv/codec_squat.h"
#include "kv/kv.h"
#include "codec_util.h"
#include "test.h"
#include "util/fp16.h"

static uint64_t rng_state = 0x13198a2e03707344ull;
static double urand(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}
static double nrand(void) { /* ~N(0,1), Box-Muller */
    const double u = urand() + 1e-300, v = urand();
    return sqrt(-2 * log(u)) * cos(6.283185307179586 * v);
}

/* B [k][D]: orthonormal rows (Gram-Schmidt of Gaussian vectors). */
static void rand_basis(double *B, int k, int D) {
    for (int a = 0; a < k; a++) {
        double *b = B + (size_t)a * D;
        for (int j = 0; j < D; j++) b[j] = nrand();
        for (int pass = 0; pass < 2; pass++)
            for (int c = 0; c < a; c++) {
                double d = 0;
                for (int j = 0; j < D; j++) d += b[j] * B[(size_t)c * D + j];
                for (int j = 0; j < D; j++) b[j] -= d * B[(size_t)c * D + j];
            }
        double nn = 0;
        for (int j = 0; j < D; j++) nn += b[j] * b[j];
        for (int j = 0; j < D; j++) b[j] /= sqrt(nn);
    }
}

static void test_jacobi(int D) {
    double *X = malloc(sizeof(double) * D * D), *A = malloc(sizeof(double) * D * D), *A0 = malloc(sizeof(double) * D * D);
    double *V = malloc(sizeof(double) * D * D), *w = malloc(sizeof(double) * D);
    for (int i = 0; i < D * D; i++) X[i] = nrand();
    for (int i = 0; i < D; i++)
        for (int j = 0; j < D; j++) {
            double s = 0;
            for (int k = 0; k < D; k++) s += X[k * D + i] * X[k * D + j];
            A[i * D + j] = A0[i * D + j] = s;
        }
    kvl_squat_jacobi(A, D, w, V);
    double res = 0, orth = 0, scale = w[0];
    int desc = 1;
    for (int a = 0; a < D; a++) {
        if (a && w[a] > w[a - 1]) desc = 0;
        for (int i = 0; i < D; i++) {
            double s = 0;
            for (int j = 0; j < D; j++) s += A0[i * D + j] * V[a * D + j];
            res = fmax(res, fabs(s - w[a] * V[a * D + i]));
        }
        for (int b = 0; b < D; b++) {
            double d = 0;
            for (int j = 0; j < D; j++) d += V[a * D + j] * V[b * D + j];
            orth = fmax(orth, fabs(d - (a == b)));
        }
    }
    CHECK_MSG(desc && res <= 1e-9 * scale && orth <= 1e-10, "jacobi D=%d: residual %g (scale %g), orthogonality %g",
              D, res, scale, orth);
    free(X), free(A), free(A0), free(V), free(w);
}

/* Queries [n][D] = sum_a c_a sigma_a B_a + noise, B a planted rank-k basis. */
static void planted_queries(float *Q, int n, int D, const double *B, int k, double noise) {
    for (int i = 0; i < n; i++)
        for (int j = 0; j < D; j++) Q[(size_t)i * D + j] = (float)(noise * nrand());
    for (int i = 0; i < n; i++)
        for (int a = 0; a < k; a++) {
            const double c = nrand() * (4.0 / (1 + a));
            for (int j = 0; j < D; j++) Q[(size_t)i * D + j] += (float)(c * B[(size_t)a * D + j]);
        }
}

static void test_state(void) {
    enum { D = 64, K = 4, N = 96 };
    double B[K * D];
    float Q[N * D];
    rand_basis(B, K, D);
    planted_queries(Q, N, D, B, K, 1e-3);
    kvl_squat_state *st = malloc(sizeof *st);
    kvl_err err;
    CHECK(kvl_squat_state_build(Q, N, D, K, SQUAT_LAMBDA, st, &err) == KVL_OK);
    double orth = 0, minproj = 1;
    for (int a = 0; a < K; a++)
        for (int b = 0; b < K; b++) {
            double d = 0;
            for (int j = 0; j < D; j++) d += (double)st->U[a][j] * st->U[b][j];
            orth = fmax(orth, fabs(d - (a == b)));
        }
    for (int c = 0; c < K; c++) { /* |U b|^2 = 1 when b lies in span(U) */
        double p = 0;
        for (int a = 0; a < K; a++) {
            double d = 0;
            for (int j = 0; j < D; j++) d += (double)st->U[a][j] * B[(size_t)c * D + j];
            p += d * d;
        }
        minproj = fmin(minproj, p);
    }
    CHECK_MSG(orth < 1e-5 && minproj > 0.9999, "squat state: orthogonality %g, min |U b|^2 %g", orth, minproj);
    /* C[t] inverts lambda I + U_t U_t^T */
    double inv = 0;
    for (int t = 0; t + 1 < D / SQUAT_G; t++) {
        const int j0 = (t + 1) * SQUAT_G;
        for (int a = 0; a < K; a++)
            for (int b = 0; b < K; b++) {
                double s = 0;
                for (int c = 0; c < K; c++) {
                    double m = c == b ? SQUAT_LAMBDA : 0;
                    for (int j = j0; j < D; j++) m += (double)st->U[c][st->perm[j]] * st->U[b][st->perm[j]];
                    s += (double)st->C[t][a][c] * m;
                }
                inv = fmax(inv, fabs(s - (a == b)));
            }
    }
    CHECK_MSG(inv < 1e-3, "squat state: C[t] * (lambda I + U U^T) off identity by %g", inv);
    CHECK(kvl_squat_state_build(Q, N, SQUAT_DMAX + SQUAT_G, K, SQUAT_LAMBDA, st, &err) == KVL_ERR_UNSUPPORTED);
    CHECK(kvl_squat_state_build(Q, N, D, SQUAT_RMAX + 1, SQUAT_LAMBDA, st, &err) == KVL_ERR_ARG);
    CHECK(kvl_squat_state_build(Q, N, D, K, 0, st, &err) == KVL_ERR_ARG);
    free(st);
}

/* Key pages: per-channel offsets and magnitudes (outlier channels), rows [P][D]. */
static void key_page(float *x, int D, int P) {
    for (int j = 0; j < D; j++) {
        const double off = urand() < 0.15 ? 8 * nrand() : nrand(), mag = 0.2 + 2 * urand();
        for (int i = 0; i < P; i++) x[(size_t)i * D + j] = (float)(off + mag * nrand());
    }
}

static void test_seal_basics(void) {
    enum { D = 64, P = 32 };
    const kvl_codec *sq = &kvl_codec_squat, *k2 = kvl_codec_find("kivi2");
    CHECK(k2 && sq->seg_bytes(D, P) == k2->seg_bytes(D, P) && sq->seg_bytes(D, P) == 768);
    CHECK(sq->as_v == k2->as_v && !sq->encode && sq->open == kvl_codec_find("f16"));
    float x[P * D];
    key_page(x, D, P);
    uint8_t a[768], b[768], c[768];
    /* the pool state starts with a kvl_squat_state (then the parameters) */
    CHECK(sq->state_bytes(D) >= sizeof(kvl_squat_state) && sq->seq_state_bytes(D) >= sq->state_bytes(D));
    kvl_squat_state *st = calloc(1, sq->state_bytes(D));
    kvl_err err;
    CHECK(sq->state_init(NULL, 0, 0, 0, D, st, &err) == KVL_OK && st->r == 0);
    CHECK(codec_fill(sq, NULL, a, D, P, P, x) == 0 && codec_fill(sq, st, b, D, P, P, x) == 0);
    CHECK(codec_fill(k2, NULL, c, D, P, P, x) == 0);
    CHECK_MSG(!memcmp(a, c, sizeof a) && !memcmp(b, c, sizeof a), "squat rank 0 differs from kivi2");
    /* rank > 0: deterministic, kernels of the kivi2 format agree with decode */
    double B[4 * D];
    float Q[64 * D];
    rand_basis(B, 4, D);
    planted_queries(Q, 64, D, B, 4, 1e-3);
    CHECK(kvl_squat_state_build(Q, 64, D, 4, SQUAT_LAMBDA, st, &err) == KVL_OK);
    CHECK(codec_fill(sq, st, a, D, P, P, x) == 0 && codec_fill(sq, st, b, D, P, P, x) == 0);
    CHECK(!memcmp(a, b, sizeof a));
    float y[D], s1[P];
    double am = 0; /* AVX2 int8 factor bound (codec_kivi_avx2.c): max |q_j s_j| / 127 / 2 * 3 * D */
    for (int j = 0; j < D; j++) {
        uint16_t h;
        memcpy(&h, a + kivi_k_code_bytes(2, D, P) + 2 * j, 2);
        am = fmax(am, fabs((double)Q[j] * kvl_fp16_to_fp32(h)));
    }
    for (int simd = 0; simd < 2; simd++) {
        kvl_codec_kernels kn = kvl_codec_kernels_get(sq, D, !simd);
        kn.qk(a, D, P, P, Q, s1);
        const double tol_i = simd && strcmp(kn.isa, "scalar") ? am / 127 / 2 * 3 * D * 1.001 : 0;
        int bad = 0;
        for (int i = 0; i < P; i++) {
            sq->decode(a, D, P, i, y);
            double r = 0, mag = 0;
            for (int j = 0; j < D; j++) r += (double)Q[j] * y[j], mag += fabs((double)Q[j] * y[j]);
            if (fabs(r - s1[i]) > 1e-5 * mag + 1e-4 + tol_i) bad++;
        }
        CHECK_MSG(bad == 0, "squat/%s qk vs decode: %d scores off", kn.isa, bad);
    }
    free(st);
}

/* RMS error of q.k over pages x tokens x queries for keys sealed by codec c
 * (st for squat), queries Qt [nq][D]; the reference is q.k16 (f16 open rows). */
static double score_rms(const kvl_codec *c, const void *st, const float *keys, int npages, int D, int P,
                        const float *Qt, int nq) {
    uint8_t *seg = malloc(c->seg_bytes(D, P));
    float *y = malloc(sizeof(float) * D);
    double se = 0;
    long cnt = 0;
    for (int pg = 0; pg < npages; pg++) {
        const float *x = keys + (size_t)pg * P * D;
        codec_fill(c, st, seg, D, P, P, x);
        for (int i = 0; i < P; i++) {
            c->decode(seg, D, P, i, y);
            for (int g = 0; g < nq; g++) {
                double e = 0;
                for (int j = 0; j < D; j++) {
                    const float k16 = kvl_fp16_to_fp32(kvl_fp32_to_fp16(x[(size_t)i * D + j]));
                    e += (double)Qt[(size_t)g * D + j] * ((double)y[j] - k16);
                }
                se += e * e, cnt++;
            }
        }
    }
    free(seg), free(y);
    return sqrt(se / cnt);
}

static void test_subspace_error(int K, int Pp) {
    enum { D = 64, NP = 24, NQ = 48, NT = 32 };
    const int P = Pp;
    double B[SQUAT_RMAX * D];
    float *Q = malloc(sizeof(float) * 128 * D), *Qt = malloc(sizeof(float) * NT * D), *Qr = malloc(sizeof(float) * NT * D);
    float *keys = malloc(sizeof(float) * NP * P * D);
    rand_basis(B, K, D);
    planted_queries(Q, 128, D, B, K, 1e-2);  /* "prefill" queries: build the state */
    planted_queries(Qt, NT, D, B, K, 1e-2);  /* later queries from the same subspace */
    for (int i = 0; i < NT * D; i++) Qr[i] = (float)nrand(); /* unrelated queries */
    for (int pg = 0; pg < NP; pg++) key_page(keys + (size_t)pg * P * D, D, P);
    kvl_squat_state *st = malloc(sizeof *st);
    kvl_err err;
    CHECK(kvl_squat_state_build(Q, 128, D, K, SQUAT_LAMBDA, st, &err) == KVL_OK);
    const kvl_codec *k2 = kvl_codec_find("kivi2"), *v2 = k2->as_v;
    const double e_sq = score_rms(&kvl_codec_squat, st, keys, NP, D, P, Qt, NT);
    const double e_k2 = score_rms(k2, NULL, keys, NP, D, P, Qt, NT);
    const double e_v2 = score_rms(v2, NULL, keys, NP, D, P, Qt, NT);
    const double r_sq = score_rms(&kvl_codec_squat, st, keys, NP, D, P, Qr, NT);
    const double r_k2 = score_rms(k2, NULL, keys, NP, D, P, Qr, NT);
    printf("measured: squat r=%d P=%d q.k RMS error, subspace queries: squat %.4f, kivi2 (per channel) %.4f, "
           "per-token 2-bit (kivi2v) %.4f (x%.1f / x%.1f smaller); random queries: squat %.3f vs kivi2 %.3f\n",
           K, P, e_sq, e_k2, e_v2, e_k2 / e_sq, e_v2 / e_sq, r_sq, r_k2);
    /* the brief's bar: much smaller than per-token 2-bit at equal bits; and
     * clearly below KIVI's per-channel keys (the same format) */
    CHECK_MSG(e_sq < 0.2 * e_v2 && e_sq < 0.33 * e_k2, "squat not much better in the subspace: %g vs %g / %g", e_sq,
              e_k2, e_v2);
    CHECK_MSG(r_sq < 3 * r_k2, "squat error for unrelated queries %g vs kivi2 %g", r_sq, r_k2);
    free(Q), free(Qt), free(Qr), free(keys), free(st);
}

int main(void) {
    test_jacobi(8);
    test_jacobi(64);
    test_jacobi(128);
    test_state();
    test_seal_basics();
    test_subspace_error(4, 32);
    test_subspace_error(8, 32);
    test_subspace_error(4, 64);
    KVL_TEST_END();
}
