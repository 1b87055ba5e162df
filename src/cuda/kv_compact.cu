/* KV compaction on the device after an eviction (the device twin of
 * src/kv/drop.c for exclusively owned pages of per-token codecs): the kept
 * rows of a list move, in order, to the front of the same list's pages
 * (position, K row, V row: the bytes kvl_kv_drop's copy_row moves), with
 * the statistics rows of the list's query heads alongside (and their tail
 * zeroed, as kv/stats.c kvi_stats_drop).
 *
 * In place, one block per list, kept rows in chunks of CROWS: a chunk
 * reads its source rows into shared memory, syncs, writes rows
 * [k0, k0 + n). Kept row k comes from keep[k] >= k (strictly increasing),
 * so a chunk writes only rows below every later chunk's sources, and reads
 * its own sources before any write: no row is overwritten before it is
 * read. Chunks whose rows stay put (keep[k] == k: a prefix) are skipped.
 *
 * A row's bytes per codec (kv/codec.c, codec_fp8.c, codec_int4.c): pos at
 * page offset 4r; f16 2D bytes at seg + 2D r; int8 / fp8 a 4-byte scale at
 * seg + 4r and D codes at seg + 4P + D r; int4z D/16 + D/2 bytes at
 * seg + (D/16 + D/2) r. All sizes and offsets are multiples of 4: the
 * kernel moves 32-bit words. */
#include <stdlib.h>

#include "cuda/cuda_util.cuh"
#include "cuda/page_space.cuh"

#define CT 256    /* threads per block */
#define CROWS 32  /* kept rows per chunk */
#define MAX_PIECES 5

/* A row's bytes: piece i is words[i] 32-bit words at page offset
 * off[i] + r * 4 * words[i]. */
struct row_pieces {
    int n, W; /* pieces, words per row */
    int off[MAX_PIECES], words[MAX_PIECES];
};

static __device__ __forceinline__ uint32_t *word_addr(uint8_t *page, const row_pieces &rp, int r, int w) {
    /* the piece of word w (pieces are few: a linear scan) */
    int i = 0, base = 0;
    for (; i < rp.n - 1 && w >= base + rp.words[i]; i++) base += rp.words[i];
    return reinterpret_cast<uint32_t *>(page + rp.off[i] + (size_t)r * 4 * rp.words[i]) + (w - base);
}

/* Block i: list i (kvl_cuda_compact_args). Shared memory: [CROWS][W] row
 * words, then [CROWS][n_stat] statistics values. */
__global__ void __launch_bounds__(CT)
    compact_kernel(const kvl_cuda_page_space space, const row_pieces rp, int logP, const kvl_cuda_compact_args a,
                   int n_stat) {
    extern __shared__ uint32_t cbuf[];
    float *sbuf = reinterpret_cast<float *>(cbuf + CROWS * rp.W);
    const int li = blockIdx.x, tid = threadIdx.x, P = 1 << logP;
    const int nk = a.n_keep[li], old = a.old_len[li];
    const int32_t *keep = a.keep + a.keep_off[li];
    const uint32_t *ids = a.page_ids + a.list_off[li];
    const int64_t srow = n_stat ? a.stat_row[li] : 0;
    /* n_stat = (accumulators on) x n_stat_rows: value s is accumulator
     * s / n_stat_rows (the s-th one on), row s % n_stat_rows */
    auto stat_ptr = [&](int s) -> float * {
        int k = s / a.n_stat_rows, ai = 0;
        for (; ai < KVL_CUDA_N_ACC; ai++)
            if (a.acc[ai] && k-- == 0) break;
        return a.acc[ai] + srow + (size_t)(s % a.n_stat_rows) * a.stat_stride;
    };
    for (int k0 = 0; k0 < nk; k0 += CROWS) {
        const int n = min(CROWS, nk - k0);
        if (keep[k0 + n - 1] == k0 + n - 1) continue; /* rows that stay put (uniform) */
        for (int idx = tid; idx < n * rp.W; idx += CT) {
            const int kk = idx / rp.W, w = idx - kk * rp.W, src = keep[k0 + kk];
            uint8_t *pg = const_cast<uint8_t *>(kvl_cuda_page_addr(space, ids[src >> logP]));
            cbuf[idx] = *word_addr(pg, rp, src & (P - 1), w);
        }
        for (int idx = tid; idx < n * n_stat; idx += CT) {
            const int kk = idx / n_stat, s = idx - kk * n_stat;
            sbuf[idx] = stat_ptr(s)[keep[k0 + kk]];
        }
        __syncthreads();
        for (int idx = tid; idx < n * rp.W; idx += CT) {
            const int kk = idx / rp.W, w = idx - kk * rp.W, dst = k0 + kk;
            uint8_t *pg = const_cast<uint8_t *>(kvl_cuda_page_addr(space, ids[dst >> logP]));
            *word_addr(pg, rp, dst & (P - 1), w) = cbuf[idx];
        }
        for (int idx = tid; idx < n * n_stat; idx += CT) {
            const int kk = idx / n_stat, s = idx - kk * n_stat;
            stat_ptr(s)[k0 + kk] = sbuf[idx];
        }
        __syncthreads();
    }
    /* statistics past the new length are zero (a later append starts from 0) */
    const int tail = old - nk;
    for (int idx = tid; idx < tail * n_stat; idx += CT) {
        const int s = idx / tail, j = nk + idx % tail;
        stat_ptr(s)[j] = 0.0f;
    }
}

extern "C" kvl_status kvl_cuda_kv_compact(kvl_cuda_pool *p, const kvl_cuda_compact_args *x, void *stream,
                                          kvl_err *err) {
    if (p->sealed_cls >= 0)
        return kvl_err_set(err, KVL_ERR_UNSUPPORTED,
                           "cuda kv compact: sealing codecs (kivi4z, kivi2z) need their sealed rows re-encoded "
                           "(kv/drop.c); per-token codecs only");
    if (x->n_list <= 0) return KVL_OK;
    const int D = p->D, P = p->P;
    const kvl_cuda_class *c = &p->cls[0];
    row_pieces rp = {};
    auto add = [&](size_t off, int bytes) {
        rp.off[rp.n] = (int)off, rp.words[rp.n] = bytes / 4, rp.W += bytes / 4;
        rp.n++;
    };
    add(0, 4); /* positions */
    for (int v = 0; v < 2; v++) {
        const size_t seg = v ? c->voff : c->koff;
        switch (p->codec) {
        case KVL_CUDA_CODEC_F16: add(seg, 2 * D); break;
        case KVL_CUDA_CODEC_INT8:
        case KVL_CUDA_CODEC_FP8:
            add(seg, 4);
            add(seg + 4 * (size_t)P, D);
            break;
        case KVL_CUDA_CODEC_INT4Z: add(seg, D / 16 + D / 2); break;
        default: return kvl_err_set(err, KVL_ERR_UNSUPPORTED, "cuda kv compact: codec %d", (int)p->codec);
        }
    }
    int n_acc = 0;
    for (int a = 0; a < KVL_CUDA_N_ACC; a++) n_acc += x->acc[a] != NULL;
    const int n_stat = n_acc && x->stat_row && x->n_stat_rows > 0 ? n_acc * x->n_stat_rows : 0;
    const size_t smem = sizeof(uint32_t) * CROWS * ((size_t)rp.W + n_stat);
    if (smem > 48 * 1024)
        return kvl_err_set(err, KVL_ERR_UNSUPPORTED, "cuda kv compact: %zu bytes of shared memory per chunk", smem);
    compact_kernel<<<x->n_list, CT, smem, (cudaStream_t)stream>>>(p->space, rp, p->logP, *x, n_stat);
    KVL_CUDA_TRY(cudaGetLastError(), "cuda kv compact: kernel launch");
    return KVL_OK;
}
