/* Eviction in the device forward pass (kvl_cuda.h "eviction on the
 * device"): per-list row counts separate from positions, the policies'
 * accumulators folded by the decode attention, and the host-driven
 * compaction of an eviction event. Included at the end of lm.cu (one
 * translation unit: these functions read kvl_cuda_lm's fields), so lm.cu
 * itself only gains the calls to the ev_* hooks.
 *
 * Metadata of an evicting call, after lm.cu's block (int32 units):
 *   len [L][B][Hkv]   rows of each list after the call's appends (the
 *                     attention's list_len: causality comes from the
 *                     stored positions)
 *   row [L][B][Hkv]   the row entry e appends to (row count + its index
 *                     among its slot's entries)
 *   srow [L][B]       accumulator row block of entry e at layer l (slot * L + l)
 *   qmask [B] bytes   accumulators entry e feeds (kvl_cuda_lm_evict_set_qmask) */

struct lm_evict {
    unsigned on;                 /* accumulators on (bits 1 << KVL_CUDA_ACC_*; WSQ with WSUM) */
    float *acc[KVL_CUDA_N_ACC];  /* device [n_slots * L][H][stride] */
    int stride;                  /* rows per list (ppl * P) */
    float vote_a, vote_b;
    int32_t *rows;               /* host [n_slots][L][Hkv] */
    int32_t *cnt;                /* host [n_slots]: entries of the current call per slot (scratch) */
    uint8_t *qm;                 /* host [max_batch]: set_qmask */
    int qm_n;
    int n_cur, shared;           /* the call being enqueued: entries, a slot has several (atomic folds) */
    int32_t *cmp_h, *cmp_d;      /* compaction staging: [4 lists + keep rows] */
    int64_t *srow_h, *srow_d;    /* [lists] first accumulator row of each list */
    size_t cmp_cap;
    uint8_t *pg_h;               /* one page (positions download, tests) */
};

static size_t ev_meta_ints(const kvl_cuda_lm *lm, int n) {
    if (!lm->evict) return 0;
    const size_t B = (size_t)n, lists = B * lm->Hkv;
    return 2 * (size_t)lm->L * lists + (size_t)lm->L * B + (B + 3) / 4;
}
static int32_t *ev_ext(const kvl_cuda_lm *lm, int32_t *meta, int n) {
    const size_t B = (size_t)n, lists = B * lm->Hkv;
    return meta + 5 * B + lists * (1 + (size_t)lm->L);
}
static const int32_t *ev_layer_len(const kvl_cuda_lm *lm, const int32_t *meta_d, int n, int l) {
    return ev_ext(lm, (int32_t *)meta_d, n) + (size_t)l * n * lm->Hkv;
}
static const int32_t *ev_layer_row(const kvl_cuda_lm *lm, const int32_t *meta_d, int n, int l) {
    if (!lm->evict) return NULL;
    return ev_ext(lm, (int32_t *)meta_d, n) + (size_t)(lm->L + l) * n * lm->Hkv;
}
static int ev_stats_on(const kvl_cuda_lm *lm) { return lm->evict && lm->evict->on; }

static void ev_free(kvl_cuda_lm *lm) {
    lm_evict *e = lm->evict;
    if (!e) return;
    for (int a = 0; a < KVL_CUDA_N_ACC; a++)
        if (e->acc[a]) cudaFree(e->acc[a]);
    if (e->cmp_d) cudaFree(e->cmp_d);
    if (e->srow_d) cudaFree(e->srow_d);
    free(e->rows), free(e->cnt), free(e->qm), free(e->cmp_h), free(e->srow_h), free(e->pg_h);
    free(e);
    lm->evict = NULL;
}

/* Rows and lengths of this call's entries into the metadata (host), the
 * longest list into *max_len; refuses a list past its rows. */
static kvl_status ev_meta(kvl_cuda_lm *lm, int n, const int32_t *pos, const int32_t *slot, int *max_len,
                          kvl_err *err) {
    lm_evict *e = lm->evict;
    const int L = lm->L, Hkv = lm->Hkv;
    const size_t B = (size_t)n, lists = B * Hkv;
    int32_t *len = ev_ext(lm, lm->meta_h, n), *row = len + (size_t)L * lists, *srow = row + (size_t)L * lists;
    uint8_t *qm = (uint8_t *)(srow + (size_t)L * B);
    for (int i = 0; i < n; i++) e->cnt[slot[i]] = 0;
    e->shared = 0;
    for (int i = 0; i < n; i++) e->shared |= e->cnt[slot[i]]++ > 0;
    int ml = 0;
    for (int i = 0; i < n; i++) {
        const int sl = slot[i];
        const int32_t *r = e->rows + (size_t)sl * L * Hkv;
        for (int l = 0; l < L; l++)
            for (int h = 0; h < Hkv; h++) {
                const int after = r[l * Hkv + h] + e->cnt[sl];
                if (after > e->stride)
                    return kvl_err_set(err, KVL_ERR_NOMEM,
                                       "cuda evict: list (layer %d, kv-head %d) of slot %d would hold %d rows, over "
                                       "its %d device rows (a budget above the context's keep?)",
                                       l, h, sl, after, e->stride);
                len[(size_t)l * lists + (size_t)i * Hkv + h] = after;
                ml = after > ml ? after : ml;
            }
        for (int l = 0; l < L; l++) srow[(size_t)l * B + i] = sl * L + l;
        qm[i] = e->qm_n == n ? e->qm[i] : (uint8_t)e->on;
    }
    /* entry i's row: its slot's row count + its index among the slot's entries */
    for (int i = 0; i < n; i++) e->cnt[slot[i]] = 0;
    for (int i = 0; i < n; i++) {
        const int sl = slot[i], k = e->cnt[sl]++;
        const int32_t *r = e->rows + (size_t)sl * L * Hkv;
        for (int l = 0; l < L; l++)
            for (int h = 0; h < Hkv; h++) row[(size_t)l * lists + (size_t)i * Hkv + h] = r[l * Hkv + h] + k;
    }
    (void)pos;
    e->n_cur = n;
    e->qm_n = 0; /* one call */
    *max_len = ml;
    return KVL_OK;
}

/* After a successful call: the slots' row counts grow by their entries. */
static void ev_commit(kvl_cuda_lm *lm, int n, const int32_t *slot) {
    lm_evict *e = lm->evict;
    const int nl = lm->L * lm->Hkv;
    for (int i = 0; i < n; i++) e->cnt[slot[i]] = 0;
    for (int i = 0; i < n; i++) e->cnt[slot[i]]++;
    for (int i = 0; i < n; i++) {
        const int sl = slot[i];
        if (!e->cnt[sl]) continue;
        for (int j = 0; j < nl; j++) e->rows[(size_t)sl * nl + j] += e->cnt[sl];
        e->cnt[sl] = 0;
    }
}

/* The decode attention of entries [i0, i0 + at->n_seq) of layer l with the statistics fold. */
static kvl_status ev_attn(kvl_cuda_lm *lm, int l, int i0, const kvl_cuda_attn_args *at, kvl_err *err) {
    lm_evict *e = lm->evict;
    const int n = e->n_cur;
    const size_t B = (size_t)n;
    const int32_t *srow = ev_ext(lm, lm->meta_d, n) + 2 * (size_t)lm->L * B * lm->Hkv;
    const uint8_t *qm = (const uint8_t *)(srow + (size_t)lm->L * B);
    kvl_cuda_attn_stats st = {};
    for (int a = 0; a < KVL_CUDA_N_ACC; a++) st.acc[a] = e->acc[a];
    st.row = srow + (size_t)l * B + i0;
    st.stride = e->stride;
    st.qmask = qm + i0;
    st.vote_a = e->vote_a, st.vote_b = e->vote_b;
    st.shared_rows = e->shared;
    return kvl_cuda_attn_run_stats(lm->attn, at, &st, lm->st, err);
}

extern "C" kvl_status kvl_cuda_lm_enable_evict(kvl_cuda_lm *lm, unsigned acc_mask, float vote_a, float vote_b,
                                               kvl_err *err) {
    if (lm->evict) return kvl_err_set(err, KVL_ERR_ARG, "cuda evict: enabled already");
    if (lm->seal)
        return kvl_err_set(err, KVL_ERR_UNSUPPORTED,
                           "cuda evict: sealing codecs (kivi2z, kivi4z) cannot evict on the device (their sealed rows "
                           "would need decoding and re-encoding); use f16, int8, fp8 or int4z");
    if (acc_mask >> KVL_CUDA_N_ACC) return kvl_err_set(err, KVL_ERR_ARG, "cuda evict: accumulator mask %#x", acc_mask);
    if (acc_mask & (1u << KVL_CUDA_ACC_WSUM)) acc_mask |= 1u << KVL_CUDA_ACC_WSQ;
    lm_evict *e = (lm_evict *)calloc(1, sizeof *e);
    if (!e) return kvl_err_set(err, KVL_ERR_NOMEM, "cuda evict: out of memory");
    lm->evict = e;
    e->on = acc_mask, e->vote_a = vote_a, e->vote_b = vote_b;
    e->stride = lm->ppl * lm->P;
    const int nl = lm->L * lm->Hkv;
    e->rows = (int32_t *)calloc((size_t)lm->n_slots * nl, sizeof(int32_t));
    e->cnt = (int32_t *)calloc((size_t)lm->n_slots, sizeof(int32_t));
    e->qm = (uint8_t *)calloc((size_t)lm->max_batch, 1);
    e->cmp_cap = 4 * (size_t)nl + (size_t)nl * e->stride;
    e->cmp_h = (int32_t *)malloc(sizeof(int32_t) * e->cmp_cap);
    e->srow_h = (int64_t *)malloc(sizeof(int64_t) * nl);
    e->pg_h = (uint8_t *)malloc(kvl_cuda_pool_page_bytes(lm->pool));
    if (!e->rows || !e->cnt || !e->qm || !e->cmp_h || !e->srow_h || !e->pg_h) {
        ev_free(lm);
        return kvl_err_set(err, KVL_ERR_NOMEM, "cuda evict: out of memory");
    }
    kvl_status s = dalloc((void **)&e->cmp_d, sizeof(int32_t) * e->cmp_cap, err);
    if (!s) s = dalloc((void **)&e->srow_d, sizeof(int64_t) * nl, err);
    const size_t accf = (size_t)lm->n_slots * lm->L * lm->H * e->stride;
    for (int a = 0; a < KVL_CUDA_N_ACC && !s; a++)
        if (acc_mask >> a & 1u) {
            s = dalloc((void **)&e->acc[a], sizeof(float) * accf, err);
            if (!s) s = kvl_cuda_status(cudaMemsetAsync(e->acc[a], 0, sizeof(float) * accf, lm->st),
                                        "cuda evict: accumulators", err);
        }
    if (!s && acc_mask) s = kvl_cuda_attn_enable_stats(lm->attn, err);
    if (!s) { /* the metadata block grows by the eviction's part */
        const size_t need = lm->meta_n + ev_meta_ints(lm, lm->max_batch);
        int32_t *md = NULL, *mh = NULL;
        s = dalloc((void **)&md, sizeof(int32_t) * need, err);
        if (!s && cudaMallocHost((void **)&mh, sizeof(int32_t) * need) != cudaSuccess) {
            cudaFree(md);
            s = kvl_err_set(err, KVL_ERR_NOMEM, "cuda evict: pinned metadata");
        }
        if (!s) {
            cudaStreamSynchronize(lm->st);
            cudaFree(lm->meta_d), cudaFreeHost(lm->meta_h);
            lm->meta_d = md, lm->meta_h = mh, lm->meta_n = need;
        }
    }
    if (!s) s = kvl_cuda_status(cudaStreamSynchronize(lm->st), "cuda evict: enable", err);
    if (s) {
        ev_free(lm);
        return s;
    }
    lm->g_n = 0; /* capture anew */
    return KVL_OK;
}

extern "C" void kvl_cuda_lm_evict_set_qmask(kvl_cuda_lm *lm, const uint8_t *qmask, int n) {
    if (!lm->evict) return;
    if (n < 1 || n > lm->max_batch || !qmask) {
        lm->evict->qm_n = 0;
        return;
    }
    memcpy(lm->evict->qm, qmask, (size_t)n);
    lm->evict->qm_n = n;
}

extern "C" kvl_status kvl_cuda_lm_evict_reset_slot(kvl_cuda_lm *lm, int slot, kvl_err *err) {
    lm_evict *e = lm->evict;
    if (!e) return KVL_OK;
    if (slot < 0 || slot >= lm->n_slots) return kvl_err_set(err, KVL_ERR_ARG, "cuda evict: slot %d", slot);
    const int nl = lm->L * lm->Hkv;
    memset(e->rows + (size_t)slot * nl, 0, sizeof(int32_t) * nl);
    const size_t per = (size_t)lm->L * lm->H * e->stride;
    for (int a = 0; a < KVL_CUDA_N_ACC; a++)
        if (e->acc[a])
            KVL_CUDA_TRY(cudaMemsetAsync(e->acc[a] + (size_t)slot * per, 0, sizeof(float) * per, lm->st),
                         "cuda evict: reset");
    KVL_CUDA_TRY(cudaStreamSynchronize(lm->st), "cuda evict: reset");
    return KVL_OK;
}

extern "C" const int32_t *kvl_cuda_lm_evict_rows(const kvl_cuda_lm *lm, int slot) {
    return lm->evict && slot >= 0 && slot < lm->n_slots ? lm->evict->rows + (size_t)slot * lm->L * lm->Hkv : NULL;
}

extern "C" int kvl_cuda_lm_list_rows(const kvl_cuda_lm *lm) { return lm->ppl * lm->P; }

extern "C" kvl_status kvl_cuda_lm_evict_download(kvl_cuda_lm *lm, int slot, int layer, int acc, int n, float *host,
                                                 kvl_err *err) {
    lm_evict *e = lm->evict;
    if (!e || acc < 0 || acc >= KVL_CUDA_N_ACC || !e->acc[acc] || slot < 0 || slot >= lm->n_slots || layer < 0 ||
        layer >= lm->L || n < 0 || n > e->stride)
        return kvl_err_set(err, KVL_ERR_ARG, "cuda evict: download of accumulator %d (slot %d, layer %d, %d rows)", acc,
                           slot, layer, n);
    if (n == 0) return KVL_OK;
    const float *src = e->acc[acc] + ((size_t)slot * lm->L + layer) * lm->H * e->stride;
    KVL_CUDA_TRY(cudaMemcpy2DAsync(host, sizeof(float) * n, src, sizeof(float) * e->stride, sizeof(float) * n,
                                   (size_t)lm->H, cudaMemcpyDeviceToHost, lm->st),
                 "cuda evict: statistics download");
    KVL_CUDA_TRY(cudaStreamSynchronize(lm->st), "cuda evict: statistics download");
    return KVL_OK;
}

extern "C" kvl_status kvl_cuda_lm_evict_compact(kvl_cuda_lm *lm, int slot, int n_list, const int32_t *lh,
                                                const int32_t *n_keep, const int32_t *keep, kvl_err *err) {
    lm_evict *e = lm->evict;
    const int L = lm->L, Hkv = lm->Hkv, G = lm->H / lm->Hkv;
    if (!e || slot < 0 || slot >= lm->n_slots || n_list < 0 || n_list > L * Hkv)
        return kvl_err_set(err, KVL_ERR_ARG, "cuda evict: compaction of %d lists in slot %d", n_list, slot);
    if (n_list == 0) return KVL_OK;
    int32_t *off = e->cmp_h, *old = off + n_list, *koff = old + n_list, *nk = koff + n_list, *kp = nk + n_list;
    int32_t *r = e->rows + (size_t)slot * L * Hkv;
    size_t tot = 0;
    for (int i = 0; i < n_list; i++) {
        const int l = lh[2 * i], h = lh[2 * i + 1];
        if (l < 0 || l >= L || h < 0 || h >= Hkv || n_keep[i] < 0 || n_keep[i] > r[l * Hkv + h])
            return kvl_err_set(err, KVL_ERR_ARG, "cuda evict: list (%d, %d) keeps %d of %d rows", l, h, n_keep[i],
                               l >= 0 && l < L && h >= 0 && h < Hkv ? r[l * Hkv + h] : -1);
        off[i] = (int32_t)((((int64_t)slot * L + l) * Hkv + h) * lm->ppl);
        old[i] = r[l * Hkv + h];
        koff[i] = (int32_t)tot;
        nk[i] = n_keep[i];
        for (int k = 0; k < n_keep[i]; k++) {
            const int v = keep[tot + k];
            if (v < 0 || v >= old[i] || (k && v <= keep[tot + k - 1]))
                return kvl_err_set(err, KVL_ERR_ARG, "cuda evict: kept rows of list (%d, %d) not increasing", l, h);
        }
        tot += (size_t)n_keep[i];
        e->srow_h[i] = (((int64_t)slot * L + l) * lm->H + (int64_t)h * G) * e->stride;
    }
    memcpy(kp, keep, sizeof(int32_t) * tot);
    const size_t ints = 4 * (size_t)n_list + tot;
    KVL_CUDA_TRY(cudaMemcpyAsync(e->cmp_d, e->cmp_h, sizeof(int32_t) * ints, cudaMemcpyHostToDevice, lm->st),
                 "cuda evict: compaction upload");
    KVL_CUDA_TRY(cudaMemcpyAsync(e->srow_d, e->srow_h, sizeof(int64_t) * n_list, cudaMemcpyHostToDevice, lm->st),
                 "cuda evict: compaction upload");
    kvl_cuda_compact_args ca = {};
    ca.n_list = n_list;
    ca.page_ids = lm->page_ids;
    ca.list_off = e->cmp_d, ca.old_len = e->cmp_d + n_list, ca.keep_off = e->cmp_d + 2 * n_list;
    ca.n_keep = e->cmp_d + 3 * n_list, ca.keep = e->cmp_d + 4 * n_list;
    for (int a = 0; a < KVL_CUDA_N_ACC; a++) ca.acc[a] = e->acc[a];
    ca.stat_row = e->on ? e->srow_d : NULL;
    ca.n_stat_rows = G, ca.stat_stride = e->stride;
    kvl_status s = kvl_cuda_kv_compact(lm->pool, &ca, lm->st, err);
    if (s) return s;
    KVL_CUDA_TRY(cudaStreamSynchronize(lm->st), "cuda evict: compaction");
    for (int i = 0; i < n_list; i++) r[lh[2 * i] * Hkv + lh[2 * i + 1]] = n_keep[i];
    return KVL_OK;
}

extern "C" kvl_status kvl_cuda_lm_evict_reset_window(kvl_cuda_lm *lm, int slot, int layer, kvl_err *err) {
    lm_evict *e = lm->evict;
    if (!e || slot < 0 || slot >= lm->n_slots || layer < 0 || layer >= lm->L)
        return kvl_err_set(err, KVL_ERR_ARG, "cuda evict: window reset (slot %d, layer %d)", slot, layer);
    const int win[3] = {KVL_CUDA_ACC_WSUM, KVL_CUDA_ACC_WSQ, KVL_CUDA_ACC_WENT};
    const size_t per = (size_t)lm->H * e->stride;
    for (int k = 0; k < 3; k++)
        if (e->acc[win[k]])
            KVL_CUDA_TRY(cudaMemsetAsync(e->acc[win[k]] + ((size_t)slot * lm->L + layer) * per, 0, sizeof(float) * per,
                                         lm->st),
                         "cuda evict: window reset");
    return KVL_OK;
}

extern "C" kvl_status kvl_cuda_lm_evict_positions(kvl_cuda_lm *lm, int slot, int layer, int head, int32_t *pos, int n,
                                                  kvl_err *err) {
    if (!lm->evict || slot < 0 || slot >= lm->n_slots || layer < 0 || layer >= lm->L || head < 0 || head >= lm->Hkv ||
        n < 0 || n > lm->ppl * lm->P)
        return kvl_err_set(err, KVL_ERR_ARG, "cuda evict: positions of (%d, %d, %d)", slot, layer, head);
    KVL_CUDA_TRY(cudaStreamSynchronize(lm->st), "cuda evict: positions");
    const uint32_t id0 = (uint32_t)((((int64_t)slot * lm->L + layer) * lm->Hkv + head) * lm->ppl);
    for (int k = 0; k * lm->P < n; k++) {
        kvl_status s = kvl_cuda_pool_download(lm->pool, id0 + (uint32_t)k, lm->evict->pg_h, 1, err);
        if (s) return s;
        const int m = n - k * lm->P < lm->P ? n - k * lm->P : lm->P;
        memcpy(pos + (size_t)k * lm->P, lm->evict->pg_h, sizeof(int32_t) * m);
    }
    return KVL_OK;
}

extern "C" kvl_status kvl_cuda_lm_evict_page(kvl_cuda_lm *lm, int slot, int layer, int head, int k, void *page,
                                             size_t *bytes, size_t *koff, size_t *voff, kvl_err *err) {
    if (!lm->evict || slot < 0 || slot >= lm->n_slots || layer < 0 || layer >= lm->L || head < 0 || head >= lm->Hkv ||
        k < 0 || k >= lm->ppl)
        return kvl_err_set(err, KVL_ERR_ARG, "cuda evict: page %d of (%d, %d, %d)", k, slot, layer, head);
    *bytes = kvl_cuda_pool_page_bytes(lm->pool);
    kvl_cuda_pool_seg_offsets(lm->pool, 0, koff, voff);
    if (!page) return KVL_OK;
    KVL_CUDA_TRY(cudaStreamSynchronize(lm->st), "cuda evict: page");
    const uint32_t id0 = (uint32_t)((((int64_t)slot * lm->L + layer) * lm->Hkv + head) * lm->ppl);
    return kvl_cuda_pool_download(lm->pool, id0 + (uint32_t)k, page, 1, err);
}

extern "C" int64_t kvl_cuda_lm_evict_pages(const kvl_cuda_lm *lm, int slot) {
    const int32_t *r = kvl_cuda_lm_evict_rows(lm, slot);
    if (!r) return 0;
    int64_t p = 0;
    for (int i = 0; i < lm->L * lm->Hkv; i++) p += (r[i] + lm->P - 1) / lm->P;
    return p;
}
