/* SQuat key quantizer core (Wang et al., "SQuat: Subspace-orthogonal KV Cache
 * Quantization", arXiv 2503.24358): per-(layer, kv-head) state holding an
 * orthonormal basis of the subspace spanned by the prefill's queries, and the
 * sealing K codec `squat` (codec_squat.c) whose seal chooses 2-bit codes
 * block by block along channels, shifting the not-yet-quantized channels so
 * that the key error stays (nearly) orthogonal to that subspace.
 * The engine shows the codec each forward call's queries (kvl_kv_observe):
 * the per-sequence state accumulates their Gram matrix and builds the
 * subspace (rank `rank`, default 4; `lambda`, default 1e-3) at the end of
 * the first call, then freezes it; seals before that are plain kivi2 seals.
 * kvl_squat_state_build does the same from a matrix of queries (tests). */
#ifndef KVL_KV_CODEC_SQUAT_H
#define KVL_KV_CODEC_SQUAT_H

#include <stdint.h>

#include "kv/codec.h"
#include "util/err.h"

#define SQUAT_DMAX 128 /* head_dim */
#define SQUAT_RMAX 16  /* subspace rank */
#define SQUAT_G 4      /* channels per quantization block */
#define SQUAT_PMAX 64  /* page tokens the propagating seal handles (larger: plain kivi2 seal) */
#define SQUAT_LAMBDA 1e-3f

/* State of one (layer, kv-head). Seals with r = 0 (or a state for another D)
 * are plain kivi2 seals (per-channel min/max, no propagation). */
typedef struct kvl_squat_state {
    int D, r;     /* head_dim, rank of the subspace (0..SQUAT_RMAX) */
    float lambda; /* regulariser: the seal minimises |U e|^2 + lambda |e|^2 */
    /* Quantization order of the channels: by decreasing |U[.][j]| (channels
     * that matter most to the subspace first, so that the error of the last
     * blocks, which nothing can compensate, is the least visible). */
    int16_t perm[SQUAT_DMAX];
    /* U [r][D]: orthonormal rows spanning the top-r right singular
     * subspace of the queries (rows r.. unused). */
    float U[SQUAT_RMAX][SQUAT_DMAX];
    /* C[t] [r][r] = (lambda I + U_t U_t^T)^-1, U_t = U restricted to the
     * channels after block t in perm order (t < D/SQUAT_G - 1). */
    float C[SQUAT_DMAX / SQUAT_G][SQUAT_RMAX][SQUAT_RMAX];
} kvl_squat_state;

/* Build st from queries Q [n][D] (e.g. the post-RoPE queries of the GQA group
 * in the prefill): U = top-r eigenvectors of Q^T Q (cyclic Jacobi, double),
 * then the C[t]. D % SQUAT_G == 0, D <= SQUAT_DMAX, 0 <= r <= min(D,
 * SQUAT_RMAX), lambda > 0, n >= 1. Allocates scratch (not a kernel).
 * Deterministic. */
kvl_status kvl_squat_state_build(const float *Q, int n, int D, int r, float lambda, kvl_squat_state *st, kvl_err *err);

/* Symmetric eigen-decomposition by cyclic Jacobi (double): A [D][D]
 * (destroyed), eigenvalues w [D] descending, unit eigenvectors as rows of
 * V [D][D] (largest component positive). 1 <= D <= SQUAT_DMAX. */
void kvl_squat_jacobi(double *A, int D, double *w, double *V);

extern const kvl_codec kvl_codec_squat;

#endif
