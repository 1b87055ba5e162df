/* Helpers shared by the device test programs (the tests/cuda programs): device
 * buffers that exit with the runtime's message on failure, NaN poisoning of
 * outputs, the device note every program starts with, and the default
 * model's path (KVL_MODEL, else the fetch script's cache). Included after
 * test.h and cuda/kvl_cuda.h. */
#ifndef KVL_CUDA_TEST_H
#define KVL_CUDA_TEST_H

#include <stdio.h>
#include <stdlib.h>

#include "cuda/kvl_cuda.h"

/* cudaMalloc of bytes (at least 4), or exit(1). */
static inline void *dev_alloc(size_t bytes) {
    void *d = NULL;
    kvl_err err = {0};
    if (kvl_cuda_alloc(&d, bytes ? bytes : 4, &err) != KVL_OK) {
        fprintf(stderr, "cuda alloc: %s\n", err.msg);
        exit(1);
    }
    return d;
}
/* host h [n bytes] -> device d, or exit(1). */
static inline void up(void *d, const void *h, size_t n) {
    kvl_err err = {0};
    if (kvl_cuda_upload(d, h, n, &err)) exit((fprintf(stderr, "cuda upload: %s\n", err.msg), 1));
}
/* device d [n bytes] -> host h, or exit(1). */
static inline void down(void *h, const void *d, size_t n) {
    kvl_err err = {0};
    if (kvl_cuda_download(h, d, n, &err)) exit((fprintf(stderr, "cuda download: %s\n", err.msg), 1));
}
/* n bytes at d set to 0xff: NaN as f32, so an output the kernel skips shows. */
static inline void poison(void *d, size_t n) {
    kvl_err err = {0};
    kvl_cuda_memset(d, 0xff, n, &err);
}
/* Prints "note: device NAME, N SMs"; 0, or 1 (with a message) without a device. */
static inline int cuda_test_device(void) {
    char name[128];
    int n_sm = 0;
    kvl_err err = {0};
    if (kvl_cuda_device_info(name, sizeof name, &n_sm, &err) != KVL_OK) {
        fprintf(stderr, "no CUDA device: %s\n", err.msg);
        return 1;
    }
    printf("note: device %s, %d SMs\n", name, n_sm);
    return 0;
}
/* The model the end-to-end programs load: $KVL_MODEL, else
 * ~/.cache/kvlite/SmolLM2-135M-Instruct.Q4_1.gguf (written into buf). */
static inline const char *cuda_test_model_path(char *buf, size_t cap) {
    const char *path = getenv("KVL_MODEL");
    if (path) return path;
    snprintf(buf, cap, "%s/.cache/kvlite/SmolLM2-135M-Instruct.Q4_1.gguf", getenv("HOME") ? getenv("HOME") : ".");
    return buf;
}

#endif
