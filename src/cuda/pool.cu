/* Device KV page pool: per page size class one cudaMalloc'd array of pages in
 * kvlite's exact CPU page layout (kv/kv_internal.h), addressed by page id
 * through kvl_cuda_page_addr (page_space.cuh); upload of CPU page bytes and a
 * random fill for tests and benchmarks. Allocation and reference counting of
 * page ids stay with the caller (the CPU pool's ids are reused as they are). */
#include <stdlib.h>
#include <string.h>

#include <cuda_fp16.h>

#include "cuda/cuda_util.cuh"
#include "cuda/page_space.cuh"

extern "C" {
#include "kv/codec.h"
#include "kv/kv.h"
}

#define HAVE "f16, int8, fp8, int4z, kivi4z, kivi2z"

/* Codec of a K name, and the V name it pairs with (NULL: the same name). */
static int codec_of(const char *name, kvl_cuda_codec *out, const char **vname) {
    static const struct { const char *k, *v; kvl_cuda_codec c; } tab[] = {
        {"f16", NULL, KVL_CUDA_CODEC_F16},        {"int8", NULL, KVL_CUDA_CODEC_INT8},
        {"fp8", NULL, KVL_CUDA_CODEC_FP8},        {"int4z", NULL, KVL_CUDA_CODEC_INT4Z},
        {"kivi4z", "kivi4zv", KVL_CUDA_CODEC_KIVI4Z}, {"kivi2z", "kivi2zv", KVL_CUDA_CODEC_KIVI2Z},
    };
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
        if (!strcmp(name, tab[i].k)) {
            *out = tab[i].c;
            *vname = tab[i].v;
            return 1;
        }
    return 0;
}

static void class_layout(kvl_cuda_class *c, const kvl_codec *ck, const kvl_codec *cv, int D, int P) {
    c->kseg = ck->seg_bytes(D, P);
    c->vseg = cv->seg_bytes(D, P);
    c->koff = kvl_cuda_align64((size_t)P * 4);
    c->voff = c->koff + kvl_cuda_align64(c->kseg);
    c->page_bytes = c->voff + kvl_cuda_align64(c->vseg);
}

extern "C" kvl_status kvl_cuda_pool_create(const kvl_cuda_pool_config *cfg, kvl_cuda_pool **out, kvl_err *err) {
    *out = NULL;
    if (!cfg || !cfg->codec_k || cfg->n_pages < 0 || cfg->n_pages_sealed < 0)
        return kvl_err_set(err, KVL_ERR_ARG, "cuda pool: invalid config");
    const char *nk = cfg->codec_k;
    const kvl_codec *ck = kvl_codec_find(nk);
    if (!ck) return kvl_err_set(err, KVL_ERR_ARG, "cuda pool: unknown codec '%s' (have: %s)", nk, kvl_codec_list());
    kvl_cuda_codec ek;
    const char *twin = NULL;
    if (!codec_of(nk, &ek, &twin))
        return kvl_err_set(err, KVL_ERR_UNSUPPORTED, "cuda: codec '%s' has no CUDA kernel yet (have: " HAVE ")", nk);
    const char *nv = cfg->codec_v ? cfg->codec_v : (twin ? twin : nk);
    if (strcmp(nv, twin ? twin : nk) && strcmp(nv, nk))
        return kvl_err_set(err, KVL_ERR_UNSUPPORTED,
                           "cuda: K codec %s with V codec %s has no CUDA kernel yet (K and V must use one codec)", nk,
                           nv);
    if (twin) nv = twin;
    const kvl_codec *cv = kvl_codec_find(nv);
    if (!cv) return kvl_err_set(err, KVL_ERR_INTERNAL, "cuda pool: V codec '%s' not registered", nv);
    const int sealing = ck->seal != NULL;
    if (!sealing && cfg->n_pages_sealed)
        return kvl_err_set(err, KVL_ERR_ARG, "cuda pool: codec %s has no sealed pages", nk);
    if (cfg->n_pages + cfg->n_pages_sealed <= 0) return kvl_err_set(err, KVL_ERR_ARG, "cuda pool: no pages");
    if (cfg->head_dim != 64 && cfg->head_dim != 128)
        return kvl_err_set(err, KVL_ERR_UNSUPPORTED, "cuda: head_dim %d has no kernel (have: 64, 128)",
                           cfg->head_dim);
    const int logP = kvl_cuda_log2_exact(cfg->page_tokens);
    if (logP < 4 || logP > 8)
        return kvl_err_set(err, KVL_ERR_UNSUPPORTED, "cuda: page_tokens %d not a power of two in 16..256",
                           cfg->page_tokens);
    if (cfg->n_pages > (int64_t)KVL_CUDA_INDEX_MASK + 1 || cfg->n_pages_sealed > (int64_t)KVL_CUDA_INDEX_MASK + 1)
        return kvl_err_set(err, KVL_ERR_ARG, "cuda pool: %lld pages exceed the id space of a class",
                           (long long)(cfg->n_pages > cfg->n_pages_sealed ? cfg->n_pages : cfg->n_pages_sealed));
    kvl_cuda_pool *p = (kvl_cuda_pool *)calloc(1, sizeof *p);
    if (!p) return kvl_err_set(err, KVL_ERR_NOMEM, "cuda pool: out of memory");
    p->codec = ek;
    p->D = cfg->head_dim;
    p->P = cfg->page_tokens;
    p->logP = logP;
    /* the layouts of kv/pool.c: class 0 open (f16 rows) for sealing codecs */
    if (sealing) {
        const kvl_codec *f16 = kvl_codec_find("f16");
        class_layout(&p->cls[0], f16, f16, p->D, p->P);
        class_layout(&p->cls[1], ck, cv, p->D, p->P);
        p->cls[1].sealed = 1;
        p->n_cls = 2;
        p->sealed_cls = 1;
    } else {
        class_layout(&p->cls[0], ck, cv, p->D, p->P);
        p->n_cls = 1;
        p->sealed_cls = -1;
    }
    p->cls[0].n_pages = cfg->n_pages;
    if (sealing) p->cls[1].n_pages = cfg->n_pages_sealed;
    kvl_status s = kvl_cuda_device_info(NULL, 0, &p->n_sm, err);
    for (int c = 0; c < p->n_cls && s == KVL_OK; c++) {
        if (!p->cls[c].n_pages) continue;
        cudaError_t e = cudaMalloc(&p->cls[c].mem, (size_t)p->cls[c].n_pages * p->cls[c].page_bytes);
        if (e != cudaSuccess) {
            (void)cudaGetLastError(); /* not sticky: clear it */
            s = kvl_err_set(err, KVL_ERR_NOMEM, "cuda pool: cudaMalloc of %lld pages x %zu bytes (class %d): %s",
                            (long long)p->cls[c].n_pages, p->cls[c].page_bytes, c, cudaGetErrorString(e));
        }
        p->space.base[c] = p->cls[c].mem;
        p->space.page_bytes[c] = p->cls[c].page_bytes;
    }
    if (s != KVL_OK) {
        kvl_cuda_pool_free(p);
        return s;
    }
    *out = p;
    return KVL_OK;
}

extern "C" void kvl_cuda_pool_free(kvl_cuda_pool *p) {
    if (!p) return;
    for (int c = 0; c < 2; c++) cudaFree(p->cls[c].mem);
    free(p);
}

extern "C" size_t kvl_cuda_pool_page_bytes(const kvl_cuda_pool *p) {
    size_t m = 0;
    for (int c = 0; c < p->n_cls; c++) m = p->cls[c].page_bytes > m ? p->cls[c].page_bytes : m;
    return m;
}
extern "C" int64_t kvl_cuda_pool_n_pages(const kvl_cuda_pool *p) { return p->cls[0].n_pages; }
extern "C" int kvl_cuda_pool_n_classes(const kvl_cuda_pool *p) { return p->n_cls; }
extern "C" size_t kvl_cuda_pool_class_bytes(const kvl_cuda_pool *p, int c) {
    return c >= 0 && c < p->n_cls ? p->cls[c].page_bytes : 0;
}
extern "C" int64_t kvl_cuda_pool_class_pages(const kvl_cuda_pool *p, int c) {
    return c >= 0 && c < p->n_cls ? p->cls[c].n_pages : 0;
}
extern "C" int kvl_cuda_pool_sealed_class(const kvl_cuda_pool *p) { return p->sealed_cls; }

static kvl_status check_range(const kvl_cuda_pool *p, uint32_t id, int64_t n, kvl_err *err) {
    const uint32_t c = id >> KVL_CUDA_CLASS_SHIFT, i = id & KVL_CUDA_INDEX_MASK;
    if ((int)c >= p->n_cls)
        return kvl_err_set(err, KVL_ERR_ARG, "cuda pool: page id %#x of class %u (the pool has %d)", id, c, p->n_cls);
    if (n < 0 || (int64_t)i + n > p->cls[c].n_pages)
        return kvl_err_set(err, KVL_ERR_ARG, "cuda pool: pages [%u, %lld) of class %u outside the pool's %lld", i,
                           (long long)i + n, c, (long long)p->cls[c].n_pages);
    return KVL_OK;
}

extern "C" kvl_status kvl_cuda_pool_upload(kvl_cuda_pool *p, uint32_t id, const void *pages, int64_t n,
                                           kvl_err *err) {
    kvl_status s = check_range(p, id, n, err);
    if (s != KVL_OK) return s;
    uint8_t *dst = (uint8_t *)kvl_cuda_page_addr(p->space, id);
    KVL_CUDA_TRY(cudaMemcpy(dst, pages, (size_t)n * p->cls[id >> KVL_CUDA_CLASS_SHIFT].page_bytes,
                            cudaMemcpyHostToDevice),
                 "cuda pool upload");
    return KVL_OK;
}

/* ---- random fill ------------------------------------------------------------------- */

/* Segment formats of the fill. */
enum { F_F16, F_INT8, F_FP8, F_INT4Z, F_KIVI_K, F_KIVI_V };

static __device__ __forceinline__ uint32_t mix32(uint64_t x) { /* splitmix64 finalizer, top bits */
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return (uint32_t)((x ^ (x >> 31)) >> 32);
}
static __device__ __forceinline__ float unit(uint32_t r) { return (float)(r >> 8) * (1.0f / 16777216.0f); }

/* Byte o of a segment of format fmt: a parameter byte (kind 1: e5m3 scale,
 * 2: zero point in the code range) or a code byte (0). */
static __device__ int param_kind(int fmt, size_t o, int D, int P, int bits) {
    if (fmt == F_INT4Z) {
        const size_t rb = (size_t)D / 16 + (size_t)D / 2, k = o % rb;
        return k < (size_t)D / 16 ? 1 + (int)(k & 1) : 0;
    }
    if (fmt == F_KIVI_K) {
        const size_t cb = (size_t)D * P * bits / 8;
        return o < cb ? 0 : (o - cb < (size_t)D ? 1 : 2);
    }
    if (fmt == F_KIVI_V) {
        const size_t cb = (size_t)D * P * bits / 8, np = (size_t)(D / 32) * P;
        return o < cb ? 0 : (o - cb < np ? 1 : 2);
    }
    return 0;
}

/* One block per page; each thread writes 4-byte words of the page. */
__global__ void fill_pages(uint8_t *base, size_t page_bytes, uint32_t idx0, int P, int D, size_t koff, size_t voff,
                           size_t kseg, size_t vseg, int kfmt, int vfmt, int bits, uint64_t seed) {
    const uint32_t idx = idx0 + blockIdx.x;
    uint32_t *pg = reinterpret_cast<uint32_t *>(base + (size_t)idx * page_bytes);
    const size_t words = page_bytes / 4;
    const uint64_t s = seed * 0x100000001b3ull + (uint64_t)idx * 0x9e3779b97f4a7c15ull;
    for (size_t w = threadIdx.x; w < words; w += blockDim.x) {
        const size_t b = w * 4;
        uint32_t v = 0;
        if (b < (size_t)P * 4) {
            v = (uint32_t)((size_t)idx * P + w); /* pos[r] = index * P + r */
        } else {
            const int isv = b >= voff;
            const size_t seg0 = isv ? voff : koff, segn = isv ? vseg : kseg;
            const int fmt = isv ? vfmt : kfmt;
            if (b >= seg0 && b < seg0 + segn) {
                const size_t o = b - seg0;
                const uint32_t r = mix32(s + w);
                if (fmt == F_F16) {
                    const __half2 h = __floats2half2_rn(2 * unit(r) - 1, 2 * unit(mix32(s + w + (1ull << 40))) - 1);
                    memcpy(&v, &h, 4);
                } else if ((fmt == F_INT8 || fmt == F_FP8) && o < (size_t)P * 4) {
                    const float sc = (0.5f + 0.5f * unit(r)) / (fmt == F_INT8 ? 127.0f : 448.0f);
                    memcpy(&v, &sc, 4);
                } else if (fmt == F_INT8) {
                    for (int i = 0; i < 4; i++) v |= (uint32_t)(uint8_t)(int8_t)((int)((r >> (8 * i)) % 255u) - 127) << (8 * i);
                } else if (fmt == F_FP8) {
                    for (int i = 0; i < 4; i++) {
                        uint32_t c = (r >> (8 * i)) & 0xffu;
                        if ((c & 0x7fu) == 0x7fu) c &= 0xfeu; /* never the NaN code */
                        v |= c << (8 * i);
                    }
                } else {
                    for (int i = 0; i < 4; i++) {
                        const int k = param_kind(fmt, o + i, D, P, bits);
                        const uint32_t rb = (r >> (8 * i)) & 0xffu;
                        const uint32_t c = k == 0 ? rb : k == 1 ? 0x60u + (rb & 7u) : rb % (1u << bits);
                        v |= c << (8 * i);
                    }
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
    const int c = (int)(id >> KVL_CUDA_CLASS_SHIFT);
    const kvl_cuda_class *k = &p->cls[c];
    int kf = F_F16, vf = F_F16, bits = 4;
    if (!(p->sealed_cls >= 0 && c == 0)) switch (p->codec) {
        case KVL_CUDA_CODEC_F16: break;
        case KVL_CUDA_CODEC_INT8: kf = vf = F_INT8; break;
        case KVL_CUDA_CODEC_FP8: kf = vf = F_FP8; break;
        case KVL_CUDA_CODEC_INT4Z: kf = vf = F_INT4Z; break;
        case KVL_CUDA_CODEC_KIVI4Z: kf = F_KIVI_K, vf = F_KIVI_V, bits = 4; break;
        case KVL_CUDA_CODEC_KIVI2Z: kf = F_KIVI_K, vf = F_KIVI_V, bits = 2; break;
        }
    const uint32_t i0 = id & KVL_CUDA_INDEX_MASK;
    for (int64_t done = 0; done < n;) { /* grids of at most 2^30 blocks */
        const int64_t m = n - done < (1 << 30) ? n - done : (1 << 30);
        fill_pages<<<(unsigned)m, 256>>>(k->mem, k->page_bytes, i0 + (uint32_t)done, p->P, p->D, k->koff, k->voff,
                                         k->kseg, k->vseg, kf, vf, bits, seed);
        KVL_CUDA_TRY(cudaGetLastError(), "cuda pool fill");
        done += m;
    }
    KVL_CUDA_TRY(cudaDeviceSynchronize(), "cuda pool fill");
    return KVL_OK;
}

extern "C" kvl_status kvl_cuda_pool_download(const kvl_cuda_pool *p, uint32_t id, void *pages, int64_t n,
                                             kvl_err *err) {
    const uint32_t c = id >> KVL_CUDA_CLASS_SHIFT, idx = id & KVL_CUDA_INDEX_MASK;
    if ((int)c >= p->n_cls || n < 0 || (int64_t)idx + n > p->cls[c].n_pages)
        return kvl_err_set(err, KVL_ERR_ARG, "cuda pool: download of pages [%u, +%lld) outside the pool", id,
                           (long long)n);
    KVL_CUDA_TRY(cudaMemcpy(pages, kvl_cuda_page_addr(p->space, id), (size_t)n * p->cls[c].page_bytes,
                            cudaMemcpyDeviceToHost),
                 "cuda pool: download");
    return KVL_OK;
}

extern "C" void kvl_cuda_pool_seg_offsets(const kvl_cuda_pool *p, int c, size_t *koff, size_t *voff) {
    *koff = p->cls[c].koff;
    *voff = p->cls[c].voff;
}
