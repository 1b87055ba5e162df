/* Weight/activation tensor types (ggml numbering, as stored in GGUF) and the
 * CPU kernels that work directly on quantized blocks: row dequantization,
 * activation quantization, and dot products of a quantized weight row with a
 * quantized (or float) activation row. Every kernel has a scalar reference;
 * SIMD (AVX2/FMA) versions are chosen at run time through kvl_cpu_kernels. */
#ifndef KVL_CPU_QUANT_H
#define KVL_CPU_QUANT_H

#include <stddef.h>
#include <stdint.h>

typedef enum kvl_type {
    KVL_TYPE_F32 = 0, KVL_TYPE_F16 = 1, KVL_TYPE_Q4_0 = 2, KVL_TYPE_Q4_1 = 3,
    KVL_TYPE_Q5_0 = 6, KVL_TYPE_Q5_1 = 7, KVL_TYPE_Q8_0 = 8, KVL_TYPE_Q8_1 = 9,
    KVL_TYPE_Q2_K = 10, KVL_TYPE_Q3_K = 11, KVL_TYPE_Q4_K = 12, KVL_TYPE_Q5_K = 13,
    KVL_TYPE_Q6_K = 14, KVL_TYPE_Q8_K = 15, KVL_TYPE_BF16 = 30,
    KVL_TYPE_COUNT = 40
} kvl_type;

/* Name ("q4_1") or NULL for unknown type values. */
const char *kvl_type_name(int t);
/* 1 if kvlite can use tensors of this type as weights (F32, F16, BF16, Q8_0,
 * Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q6_K). */
int kvl_type_supported(int t);
/* Elements per block (1 for float types) and bytes per block; 0 if unknown. */
int64_t kvl_type_block_elems(int t);
size_t kvl_type_block_bytes(int t);
/* Bytes of a row of n elements (n must be a multiple of the block size). */
size_t kvl_type_row_bytes(int t, int64_t n);

/* Scalar references. */
/* Dequantize n elements (n % block == 0) of type t. */
void kvl_dequant_row_ref(kvl_type t, const void *src, float *dst, int64_t n);
/* Quantize n floats to type t (needed: F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1,
 * Q8_1, Q4_K, Q6_K, Q8_K — used to build test data and activations). */
void kvl_quant_row_ref(kvl_type t, const float *src, void *dst, int64_t n);

/* Kernel table: the scalar reference or the SIMD version of each kernel. */
typedef struct kvl_cpu_kernels {
    const char *name; /* "scalar", "avx2" */
    /* Activation type that weight type wt is dotted against (e.g. Q8_1 for Q4_1,
     * Q8_K for K-quants, F32 for float weights). */
    kvl_type (*vec_type)(kvl_type wt);
    /* Quantize an activation row x [n] into vec_type(wt) format. */
    void (*quant_vec)(kvl_type vt, const float *x, void *dst, int64_t n);
    /* dot(w_row [n] of type wt, x [n] in vec_type(wt) format). */
    float (*vec_dot)(kvl_type wt, int64_t n, const void *w, const void *x);
    /* Dequantize a row (used for embeddings lookup). */
    void (*dequant_row)(kvl_type t, const void *src, float *dst, int64_t n);
} kvl_cpu_kernels;

/* simd = 0 forces the scalar table; otherwise the best the CPU supports. */
const kvl_cpu_kernels *kvl_cpu_kernels_get(int simd);
/* The verification table: activations stay f32 and every weight block is
 * dequantized on the fly and dotted in double precision (no activation
 * quantization). Slow; used to check the forward pass against a float
 * reference to ~1e-4. */
const kvl_cpu_kernels *kvl_cpu_kernels_exact(void);

/* Matrix multiply on quantized weights, one thread's share.
 * W: [rows][cols] of type wt (row-major, ggml layout: each output row is one
 *    weight row of cols elements).
 * xq: [n_tok] activation rows already quantized with quant_vec(vec_type(wt)),
 *    each row kvl_type_row_bytes(vec_type(wt), cols) bytes.
 * y: [n_tok][rows] float output (y[t][r] = dot(W[r], x[t])).
 * Thread ith of nth computes a slice of rows for all tokens (tiled so each
 * weight row block is loaded once for a tile of tokens). */
void kvl_cpu_matmul(const kvl_cpu_kernels *k, kvl_type wt, const void *W, int64_t rows, int64_t cols,
                    const void *xq, int n_tok, float *y, int ith, int nth);

/* ---- Block layouts (ggml/GGUF; fp16 fields are IEEE half bit patterns). ---- */
#define KVL_QK 32   /* elements per block of the 32-element formats */
#define KVL_QK_K 256 /* elements per super-block of the K formats */
typedef struct { uint16_t d; int8_t qs[32]; } kvl_block_q8_0;                   /* x = d*q */
typedef struct { uint16_t d; uint8_t qs[16]; } kvl_block_q4_0;                  /* x = d*(q-8) */
typedef struct { uint16_t d, m; uint8_t qs[16]; } kvl_block_q4_1;               /* x = d*q + m */
typedef struct { uint16_t d; uint8_t qh[4]; uint8_t qs[16]; } kvl_block_q5_0;   /* x = d*(q-16) */
typedef struct { uint16_t d, m; uint8_t qh[4]; uint8_t qs[16]; } kvl_block_q5_1; /* x = d*q + m */
/* Activation block for the 32-element weight formats: s is the exact integer
 * sum of qs (kvlite's own layout; same size as ggml's Q8_1, which stores d*s
 * as fp16 instead). x = d*q. */
typedef struct { uint16_t d; int16_t s; int8_t qs[32]; } kvl_block_q8_1;
/* 8 sub-blocks of 32: x = d*sc[j]*q - dmin*m[j], 6-bit sc/m packed in scales. */
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qs[128]; } kvl_block_q4_k;
/* 16 sub-blocks of 16: x = d*scales[j]*(q-32), q = 4 low bits (ql) | 2 high (qh). */
typedef struct { uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16]; uint16_t d; } kvl_block_q6_k;
/* Activation super-block for K formats: x = d*q; bsums[g] = sum of qs[16g..16g+15]. */
typedef struct { float d; int8_t qs[256]; int16_t bsums[16]; } kvl_block_q8_k;

/* Q4_K packed 6-bit scale/min of sub-block j (0..7). */
static inline void kvl_q4k_scale_min(int j, const uint8_t *q, int *sc, int *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

/* ---- Internal: SIMD table and tiled matmul (quant_avx2.c, x86 only). ---- */
extern const kvl_cpu_kernels kvl_cpu_kernels_avx2;
/* Computes y[t*ldy + r] for rows r0 <= r < r1 and all n_tok tokens with the
 * AVX2 micro-kernels; returns 0 (doing nothing) if wt has no tiled kernel. */
int kvl_cpu_matmul_rows_avx2(kvl_type wt, const void *W, int64_t cols, int64_t r0, int64_t r1,
                             const void *xq, int n_tok, float *y, int64_t ldy);

#endif
