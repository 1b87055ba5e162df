/* Internal helpers of the CUDA backend: CUDA error -> kvl_err, small integer
 * utilities shared by the .cu files. */
#ifndef KVL_CUDA_CUDA_UTIL_CUH
#define KVL_CUDA_CUDA_UTIL_CUH

#include <cuda_runtime.h>

#include "cuda/kvl_cuda.h"

/* KVL_OK when e == cudaSuccess, else KVL_ERR_NOMEM for allocation failures
 * and KVL_ERR_INTERNAL for the rest, with "what: cuda message" in err. */
static inline kvl_status kvl_cuda_status(cudaError_t e, const char *what, kvl_err *err) {
    if (e == cudaSuccess) return KVL_OK;
    return kvl_err_set(err, e == cudaErrorMemoryAllocation ? KVL_ERR_NOMEM : KVL_ERR_INTERNAL, "%s: %s (%s)", what,
                       cudaGetErrorString(e), cudaGetErrorName(e));
}

#define KVL_CUDA_TRY(call, what)                                              \
    do {                                                                      \
        kvl_status kvl_s_ = kvl_cuda_status((call), (what), err);             \
        if (kvl_s_ != KVL_OK) return kvl_s_;                                  \
    } while (0)

static inline int kvl_cuda_log2_exact(int x) { /* log2 of a power of two, -1 otherwise */
    if (x <= 0 || (x & (x - 1))) return -1;
    int l = 0;
    while ((1 << l) < x) l++;
    return l;
}

static inline size_t kvl_cuda_align64(size_t x) { return (x + 63) & ~(size_t)63; }

#endif
