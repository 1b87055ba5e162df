/* Attention statistics on the device (internal; attn_stats.cu): the
 * workspace attn_decode.cu holds once kvl_cuda_attn_enable_stats ran, the
 * statistics instantiations of the split kernels, and the launch of the
 * kernels that turn the scores into the policies' accumulators. */
#ifndef KVL_CUDA_ATTN_STATS_CUH
#define KVL_CUDA_ATTN_STATS_CUH

#include <cuda_runtime.h>

#include "cuda/attn_kernel.cuh"
#include "cuda/kvl_cuda.h"
#include "cuda/page_space.cuh"

#define KVL_STATS_CHUNK 1024 /* list rows per block of the statistics kernels */

typedef struct kvl_cuda_stats_ws {
    kvl_cuda_split_fn fn; /* the split kernel with ST = true */
    float *sc;            /* device [max_seq][n_head][max_len]: scaled scores of the call */
    float *ml;            /* device [ml_cap][2]: (m, l) per (sequence, query head, split) */
    double *mom;          /* device [max_seq][n_head][n_chunk][3]: sum, sum of squares, count of finite scores */
    size_t ml_cap, bytes;
    int max_len, n_chunk;
} kvl_cuda_stats_ws;

/* Statistics instantiation of the default split kernel of codec c for
 * (D, G, P): tensor cores where the default has them (tc), else the
 * CUDA-core kernel (G 5..8); NULL when there is none. */
kvl_cuda_split_fn kvl_cuda_pick_stats_tc_f16(int codec, int D, int G, int P); /* f16, int4z: attn_stats_tc.cu */
kvl_cuda_split_fn kvl_cuda_pick_stats_tc_b8(int codec, int D, int G, int P);  /* int8, fp8: attn_stats_tc_b8.cu */
kvl_cuda_split_fn kvl_cuda_pick_stats_core(int codec, int D, int G);          /* G 5..8: attn_stats_core.cu */

/* Allocate the workspace for max_seq sequences of max_len rows, n_head
 * query heads, ml_cap (m, l) records; fn: the statistics kernel (set up
 * with smem_max dynamic shared memory here). */
kvl_status kvl_cuda_stats_ws_create(kvl_cuda_split_fn fn, size_t smem_max, int n_head, int max_seq, int max_len,
                                    size_t ml_cap, kvl_cuda_stats_ws **out, kvl_err *err);
void kvl_cuda_stats_ws_free(kvl_cuda_stats_ws *w);
/* After the split (and merge) kernels of a call of n_seq sequences, n_split
 * splits: fold the scores into st's accumulators (kvl_cuda_attn_stats). */
kvl_status kvl_cuda_stats_launch(const kvl_cuda_stats_ws *w, const kvl_cuda_attn_stats *st, int n_seq, int n_head,
                                 int n_head_kv, int n_split, int max_len, const int32_t *list_len, cudaStream_t s,
                                 kvl_err *err);

#endif
