/* Device page addressing and the device pool's structure (internal).
 *
 * A page id is (class << (32 - KVL_CUDA_CLASS_BITS)) | index. Each class is
 * one device array of equally sized pages; the byte address of a page is
 * base[class] + index * page_bytes[class]. kvl_cuda_page_addr is the only
 * place that turns an id into an address, so the CPU pool's coming page size
 * classes (open f16-like pages and smaller sealed pages) are mirrored by
 * filling more entries here. Per-token codecs use class 0; sealing codecs
 * (KIVI) class 0 for open f16 pages and class 1 for sealed pages, and a
 * list holds both (kernels tell them apart by the class bits). */
#ifndef KVL_CUDA_PAGE_SPACE_CUH
#define KVL_CUDA_PAGE_SPACE_CUH

#include <stdint.h>

#include "cuda/kvl_cuda.h"

#define KVL_CUDA_N_CLASSES (1 << KVL_CUDA_CLASS_BITS)
#define KVL_CUDA_CLASS_SHIFT (32 - KVL_CUDA_CLASS_BITS)
#define KVL_CUDA_INDEX_MASK ((1u << KVL_CUDA_CLASS_SHIFT) - 1)

/* Passed to kernels by value (256 bytes). */
typedef struct kvl_cuda_page_space {
    uint8_t *base[KVL_CUDA_N_CLASSES];         /* device; NULL for a class with no pages */
    unsigned long long page_bytes[KVL_CUDA_N_CLASSES];
} kvl_cuda_page_space;

__host__ __device__ static __forceinline__ const uint8_t *kvl_cuda_page_addr(const kvl_cuda_page_space &s,
                                                                             uint32_t id) {
    const uint32_t c = id >> KVL_CUDA_CLASS_SHIFT;
    /* select with constant indices: a run-time index into the by-value
     * struct would copy it to local memory */
    const uint8_t *base = s.base[0];
    unsigned long long pb = s.page_bytes[0];
    for (uint32_t k = 1; k < KVL_CUDA_N_CLASSES; k++)
        if (c == k) base = s.base[k], pb = s.page_bytes[k];
    return base + (unsigned long long)(id & KVL_CUDA_INDEX_MASK) * pb;
}

/* Codecs with a CUDA kernel (codec_traits.cuh, attn_<codec>.cu). */
typedef enum kvl_cuda_codec {
    KVL_CUDA_CODEC_F16 = 0,
    KVL_CUDA_CODEC_INT8 = 1,
    KVL_CUDA_CODEC_FP8 = 2,
    KVL_CUDA_CODEC_INT4Z = 3,
    KVL_CUDA_CODEC_KIVI4Z = 4, /* sealing: K kivi4z, V kivi4zv */
    KVL_CUDA_CODEC_KIVI2Z = 5, /* sealing: K kivi2z, V kivi2zv */
} kvl_cuda_codec;

/* One page size class of the device pool (the CPU pool's class of the same
 * index has the same layout). */
typedef struct kvl_cuda_class {
    size_t kseg, vseg, koff, voff, page_bytes; /* as kv/pool.c computes them */
    int64_t n_pages;
    uint8_t *mem; /* n_pages * page_bytes */
    int sealed;   /* pages of the sealing codec's sealed format */
} kvl_cuda_class;

/* Classes: per-token codecs fill class 0; a sealing codec has class 0 =
 * open pages (f16 K and V rows) and class 1 = sealed pages, as the CPU pool
 * numbers them for a single layer configuration (kv/pool.c class_of). */
struct kvl_cuda_pool {
    kvl_cuda_codec codec;
    int D, P, logP;
    int n_cls, sealed_cls; /* sealed_cls: -1 for per-token codecs */
    kvl_cuda_class cls[2];
    kvl_cuda_page_space space;
    int n_sm;
};

#endif
