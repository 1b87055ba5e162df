/* Device KV page pool: one cudaMalloc'd array of pages in kvlite's exact
 * CPU page layout (kv/kv_internal.h), addressed by page id through
 * kvl_cuda_page_addr (page_space.cuh); upload of CPU page bytes and a random
 * fill for tests and benchmarks. Allocation and reference counting of page
 * ids stay with the caller (the CPU pool's ids are reused as they are). */
#include <stdlib.h>
#include <string.h>

#include <cuda_fp16.h>

#include "cuda/cuda_util.cuh"
#include "cuda/page_space.cuh"

extern "C" {
#include "kv/codec.h"
#include "kv/kv.h"
}

static int codec_of(const char *name, kvl_cuda_codec *out) {
    if (!strcmp(name, "f16")) *out = KVL_CUDA_CODEC_F16;
    else if (!strcmp(name, "int8")) *out = KVL_CUDA_CODEC_INT8;
    else return 0;
    return 1;
}

extern "C" kvl_status kvl_cuda_pool_create(const kvl_cuda_pool_config *cfg, kvl_cuda_pool **out, kvl_err *err) {
    *out = NULL;
    if (!cfg || !cfg->codec_k || cfg->n_pages <= 0)
        return kvl_err_set(err, KVL_ERR_ARG, "cuda pool: invalid config");
    const char *nk = cfg->codec_k, *nv = cfg->codec_v ? cfg->codec_v : cfg->codec_k;
    const kvl_codec *ck = kvl_codec_find(nk), *cv = kvl_codec_find(nv);
    if (!ck || !cv) return kvl_err_set(err, KVL_ERR_ARG, "cuda pool: unknown codec '%s' (have: %s)", ck ? nv : nk,
                                       kvl_codec_list());
    kvl_cuda_codec ek, ev;
    if (!codec_of(nk, &ek) || !codec_of(nv, &ev))
        return kvl_err_set(err, KVL_ERR_UNSUPPORTED, "cuda: codec '%s' has no CUDA kernel yet (have: f16, int8)",
                           codec_of(nk, &ek) ? nv : nk);
    if (ek != ev)
        return kvl_err_set(err, KVL_ERR_UNSUPPORTED, "cuda: K codec %s with V codec %s has no CUDA kernel yet", nk,
                           nv);
    if (cfg->head_dim != 64 && cfg->head_dim != 128)
        return kvl_err_set(err, KVL_ERR_UNSUPPORTED, "cuda: head_dim %d has no kernel (have: 64, 128)",
                           cfg->head_dim);
    const int logP = kvl_cuda_log2_exact(cfg->page_tokens);
    if (logP < 4 || logP > 8)
        return kvl_err_set(err, KVL_ERR_UNSUPPORTED, "cuda: page_tokens %d not a power of two in 16..256",
                           cfg->page_tokens);
    if (cfg->n_pages > (int64_t)KVL_CUDA_INDEX_MASK + 1)
        return kvl_err_set(err, KVL_ERR_ARG, "cuda pool: %lld pages exceed the id space of a class",
                           (long long)cfg->n_pages);
    kvl_cuda_pool *p = (kvl_cuda_pool *)calloc(1, sizeof *p);
    if (!p) return kvl_err_set(err, KVL_ERR_NOMEM, "cuda pool: out of memory");
    p->ck = ek;
    p->cv = ev;
    p->D = cfg->head_dim;
    p->P = cfg->page_tokens;
    p->logP = logP;
    /* the layout of kv/pool.c */
    p->kseg = ck->seg_bytes(p->D, p->P);
    p->vseg = cv->seg_bytes(p->D, p->P);
    p->koff = kvl_cuda_align64((size_t)p->P * 4);
    p->voff = p->koff + kvl_cuda_align64(p->kseg);
    p->page_bytes = p->voff + kvl_cuda_align64(p->vseg);
    p->n_pages = cfg->n_pages;
    kvl_status s = kvl_cuda_device_info(NULL, 0, &p->n_sm, err);
    if (s != KVL_OK) {
        free(p);
        return s;
    }
    cudaError_t e = cudaMalloc(&p->mem, (size_t)p->n_pages * p->page_bytes);
    if (e != cudaSuccess) {
        s = kvl_err_set(err, KVL_ERR_NOMEM, "cuda pool: cudaMalloc of %lld pages x %zu bytes: %s",
                        (long long)cfg->n_pages, p->page_bytes, cudaGetErrorString(e));
        free(p);
        return s;
    }
    p->space.base[0] = p->mem;
    p->space.page_bytes[0] = p->page_bytes;
    *out = p;
    return KVL_OK;
}

extern "C" void kvl_cuda_pool_free(kvl_cuda_pool *p) {
    if (!p) return;
    cudaFree(p->mem);
    free(p);
}

extern "C" size_t kvl_cuda_pool_page_bytes(const kvl_cuda_pool *p) { return p->page_bytes; }
extern "C" int64_t kvl_cuda_pool_n_pages(const kvl_cuda_pool *p) { return p->n_pages; }

static kvl_status check_range(const kvl_cuda_pool *p, uint32_t id, int64_t n, kvl_err *err) {
    if (id >> KVL_CUDA_CLASS_SHIFT)
        return kvl_err_set(err, KVL_ERR_ARG, "cuda pool: page id %#x of class %u (only class 0 exists)", id,
                           id >> KVL_CUDA_CLASS_SHIFT);
    if (n < 0 || (int64_t)id + n > p->n_pages)
        return kvl_err_set(err, KVL_ERR_ARG, "cuda pool: pages [%u, %lld) outside the pool's %lld", id,
                           (long long)id + n, (long long)p->n_pages);
    return KVL_OK;
}

extern "C" kvl_status kvl_cuda_pool_upload(kvl_cuda_pool *p, uint32_t id, const void *pages, int64_t n,
                                           kvl_err *err) {
    kvl_status s = check_range(p, id, n, err);
    if (s != KVL_OK) return s;
    uint8_t *dst = (uint8_t *)kvl_cuda_page_addr(p->space, id);
    KVL_CUDA_TRY(cudaMemcpy(dst, pages, (size_t)n * p->page_bytes, cudaMemcpyHostToDevice), "cuda pool upload");
    return KVL_OK;
}

/* ---- random fill ------------------------------------------------------------------- */

static __device__ __forceinline__ uint32_t mix32(uint64_t x) { /* splitmix64 finalizer, top bits */
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return (uint32_t)((x ^ (x >> 31)) >> 32);
}
static __device__ __forceinline__ float unit(uint32_t r) { return (float)(r >> 8) * (1.0f / 16777216.0f); }

/* One block per page; each thread writes 4-byte words of the page. */
__global__ void fill_pages(uint8_t *base, size_t page_bytes, uint32_t id0, int P, size_t koff, size_t voff,
                           size_t kseg, size_t vseg, int int8, uint64_t seed) {
    const uint32_t id = id0 + blockIdx.x;
    uint32_t *pg = reinterpret_cast<uint32_t *>(base + (size_t)id * page_bytes);
    const size_t words = page_bytes / 4;
    const uint64_t s = seed * 0x100000001b3ull + (uint64_t)id * 0x9e3779b97f4a7c15ull;
    for (size_t w = threadIdx.x; w < words; w += blockDim.x) {
        const size_t b = w * 4;
        uint32_t v = 0;
        if (b < (size_t)P * 4) {
            v = (uint32_t)((size_t)id * P + w); /* pos[r] = index * P + r */
        } else {
            const size_t seg0 = b >= voff ? voff : koff, segn = b >= voff ? vseg : kseg;
            if (b >= seg0 && b < seg0 + segn) {
                const size_t o = b - seg0;
                const uint32_t r = mix32(s + w);
                if (!int8) {
                    const __half2 h = __floats2half2_rn(2 * unit(r) - 1, 2 * unit(mix32(s + w + (1ull << 40))) - 1);
                    memcpy(&v, &h, 4);
                } else if (o < (size_t)P * 4) {
                    const float sc = (0.5f + 0.5f * unit(r)) / 127.0f;
                    memcpy(&v, &sc, 4);
                } else {
                    for (int i = 0; i < 4; i++) v |= (uint32_t)(uint8_t)(int8_t)((int)((r >> (8 * i)) % 255u) - 127) << (8 * i);
                }
            }
        }
        pg[w] = v;
    }
}

extern "C" kvl_status kvl_cuda_pool_fill_random(kvl_cuda_pool *p, uint32_t id, int64_t n, uint64_t seed,
                                                kvl_err *err) {
    kvl_status s = check_range(p, id, n, err);
    if (s != KVL_OK) return s;
    for (int64_t done = 0; done < n;) { /* grids of at most 2^30 blocks */
        const int64_t m = n - done < (1 << 30) ? n - done : (1 << 30);
        fill_pages<<<(unsigned)m, 256>>>(p->mem, p->page_bytes, id + (uint32_t)done, p->P, p->koff, p->voff, p->kseg,
                                         p->vseg, p->ck == KVL_CUDA_CODEC_INT8, seed);
        KVL_CUDA_TRY(cudaGetLastError(), "cuda pool fill");
        done += m;
    }
    KVL_CUDA_TRY(cudaDeviceSynchronize(), "cuda pool fill");
    return KVL_OK;
}
