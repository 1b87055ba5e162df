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

#endif
