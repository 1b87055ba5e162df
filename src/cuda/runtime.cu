/* Device memory helpers of the CUDA backend's C API (kvl_cuda.h): thin,
 * error-checked wrappers over the CUDA runtime so C callers (tests, the
 * engine later) need no CUDA headers. */
#include <stdio.h>
#include <string.h>

#include "cuda/cuda_util.cuh"

extern "C" kvl_status kvl_cuda_device_info(char *name, size_t name_len, int *n_sm, kvl_err *err) {
    int dev = 0;
    KVL_CUDA_TRY(cudaGetDevice(&dev), "cudaGetDevice");
    cudaDeviceProp prop;
    KVL_CUDA_TRY(cudaGetDeviceProperties(&prop, dev), "cudaGetDeviceProperties");
    if (name && name_len) snprintf(name, name_len, "%s (sm_%d%d)", prop.name, prop.major, prop.minor);
    if (n_sm) *n_sm = prop.multiProcessorCount;
    return KVL_OK;
}

extern "C" kvl_status kvl_cuda_alloc(void **dptr, size_t bytes, kvl_err *err) {
    *dptr = NULL;
    KVL_CUDA_TRY(cudaMalloc(dptr, bytes ? bytes : 1), "cudaMalloc");
    return KVL_OK;
}

extern "C" void kvl_cuda_free(void *dptr) {
    if (dptr) cudaFree(dptr);
}

extern "C" kvl_status kvl_cuda_upload(void *dst_dev, const void *src_host, size_t bytes, kvl_err *err) {
    KVL_CUDA_TRY(cudaMemcpy(dst_dev, src_host, bytes, cudaMemcpyHostToDevice), "upload (cudaMemcpy)");
    return KVL_OK;
}

extern "C" kvl_status kvl_cuda_download(void *dst_host, const void *src_dev, size_t bytes, kvl_err *err) {
    KVL_CUDA_TRY(cudaMemcpy(dst_host, src_dev, bytes, cudaMemcpyDeviceToHost), "download (cudaMemcpy)");
    return KVL_OK;
}

extern "C" kvl_status kvl_cuda_memset(void *dptr, int value, size_t bytes, kvl_err *err) {
    KVL_CUDA_TRY(cudaMemset(dptr, value, bytes), "cudaMemset");
    return KVL_OK;
}

extern "C" kvl_status kvl_cuda_sync(kvl_err *err) {
    KVL_CUDA_TRY(cudaDeviceSynchronize(), "device work");
    return KVL_OK;
}
