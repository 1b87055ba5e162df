/* Attention over the paged cache: for each (query token, query head) unit
 * one pass over the kv-head's pages with an online softmax per chunk of
 * pages, chunks folded in order (decode may spread the chunks over threads
 * and fold afterwards: flash-decoding), scores and value accumulation
 * computed by the codec on the encoded bytes. */
#include "kv/kv_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "util/threadpool.h"

/* ---- attention ----------------------------------------------------------------------------- */

/* Queries sharing a kv-head are processed together, up to QMAX at a time: the
 * G query heads of a group and, in prefill, several query tokens (T tokens x
 * G heads). Each page is read once per block, its K and V rows converted once
 * by the codec's multi-query kernels for all the block's queries.
 *
 * A list is cut into chunks of attn_chunk_tokens (whole pages, fixed by
 * page index). Each chunk gets its own online softmax (running max m, sum l,
 * unnormalized accumulator), and the chunks' partial results are folded in
 * chunk order (fold()). A unit either runs its chunks one after another and
 * folds as it goes (attend_seq), or — decode on few kv-heads, where (token,
 * kv-head) units cannot keep the threads busy — the chunks become separate
 * work units writing partials that kvl_kv_attn_merge folds afterwards
 * (flash-decoding). Both do the same arithmetic in the same order, and every
 * query's arithmetic is that of processing it alone (the multi-query kernels
 * are bit-identical per query; a page with no visible row for a query is
 * skipped for that query), so results do not depend on the blocking, the
 * batch split, the thread count or the split decision. */
#define QMAX 12
#define SPLIT_MAX_TOK 4 /* split only calls of at most this many query tokens */

static int n_chunks_of(const kvl_kv_pool *p, const kvlist *L) {
    const int cp = p->attn_cp;
    return (L->n_pages + cp - 1) / cp;
}

static size_t qbuf_bytes(const kvl_kv_pool *p) { return kvi_align64((size_t)QMAX * p->D * 4); }

size_t kvl_kv_attend_scratch_bytes(const kvl_kv_pool *p) {
    return 3 * qbuf_bytes(p) + kvi_align64((size_t)QMAX * p->P * 4);
}

/* One chunk: pages [pg0, pg1) of L for Q = T*G queries (token t = qi / G).
 * qs: [Q][D] scaled queries; qp: [T] positions; s: scratch [QMAX][P].
 * Out: m[Q], l[Q] (m = -inf, l = 0 when the query sees no row of the chunk)
 * and acc [Q][D] = sum_i exp(s_i - m) v_i. st: G score arrays (T == 1)
 * receiving the raw scores at the row's list index, or NULL. */
static void attend_part(const kvl_kv_pool *p, const kvlist *L, int pg0, int pg1, int T, int G, const float *qs,
                        const int32_t *qp, float *acc, float *s, float *m, float *l, float *const *st) {
    const int D = p->D, P = p->P, Q = T * G;
    int nv[QMAX];
    memset(acc, 0, sizeof(float) * (size_t)Q * D);
    for (int qi = 0; qi < Q; qi++) {
        m[qi] = -INFINITY;
        l[qi] = 0;
    }
    for (int pg = pg0; pg < pg1; pg++) {
        const uint8_t *mem = L->pages[pg].mem;
        const kvi_class *pc = kvi_cls(p, L->pages[pg].id); /* open or sealed: its own kernels */
        const int n = L->len - pg * P < P ? L->len - pg * P : P;
        const int32_t *pos = (const int32_t *)mem;
        int any = 0;
        for (int t = 0; t < T; t++) {
            int c = 0;
            for (int i = 0; i < n; i++) c += pos[i] <= qp[t];
            nv[t] = c;
            any |= c;
        }
        if (!any) { /* page entirely after every query (causal): skip */
            if (st)
                for (int g = 0; g < G; g++)
                    for (int i = 0; i < n; i++) st[g][pg * P + i] = -INFINITY;
            continue;
        }
        /* chunks of queries [q0, q1) that see part of the page: the runs of
         * such tokens (decode, T == 1: one query at a time, which keeps each
         * query's softmax next to its products; the inline-converting
         * single-query kernels are as fast there) */
        for (int q0 = 0; q0 < Q;) {
            if (!nv[q0 / G]) {
                q0 += G;
                continue;
            }
            int q1 = q0 + 1;
            if (T == 1 && pc->multi_decode) q1 = G; /* unpack each quantized row once for the group */
            else if (T > 1) {
                int t1 = q0 / G + 1;
                while (t1 < T && nv[t1]) t1++;
                q1 = t1 * G;
            }
            kvl_codec_qk_multi(&pc->kk, mem + pc->koff, D, P, n, qs + (size_t)q0 * D, q1 - q0, s + (size_t)q0 * P);
            for (int qi = q0; qi < q1; qi++) {
                const int t = qi / G, g = qi % G;
                float *a = acc + (size_t)qi * D, *sq = s + (size_t)qi * P;
                if (nv[t] < n)
                    for (int i = 0; i < n; i++)
                        if (pos[i] > qp[t]) sq[i] = -INFINITY;
                if (st) memcpy(st[g] + pg * P, sq, (size_t)n * sizeof(float));
                float mp = sq[0];
                for (int i = 1; i < n; i++) mp = sq[i] > mp ? sq[i] : mp;
                if (mp > m[qi]) { /* new running max: rescale what was accumulated */
                    if (m[qi] != -INFINITY) {
                        const float c = expf(m[qi] - mp);
                        l[qi] *= c;
                        for (int j = 0; j < D; j++) a[j] *= c;
                    }
                    m[qi] = mp;
                }
                l[qi] += p->expsum(sq, n, m[qi]);
            }
            kvl_codec_av_multi(&pc->kvk, mem + pc->voff, D, P, n, s + (size_t)q0 * P, q1 - q0, acc + (size_t)q0 * D);
            q0 = q1;
        }
    }
}

/* Fold one chunk's partial (m, l, acc [D]) into the running (M, S, A [D]).
 * The first non-empty chunk is copied, so a one-chunk list gives exactly the
 * single-pass result. */
static void fold(float *M, float *S, float *A, float m, float l, const float *acc, int D) {
    if (m == -INFINITY) return; /* the query saw nothing in this chunk */
    if (*M == -INFINITY) {
        *M = m;
        *S = l;
        memcpy(A, acc, sizeof(float) * (size_t)D);
        return;
    }
    if (m > *M) {
        const float c = expf(*M - m);
        *S *= c;
        for (int j = 0; j < D; j++) A[j] *= c;
        *M = m;
    }
    const float c = expf(m - *M);
    *S += l * c;
    for (int j = 0; j < D; j++) A[j] += acc[j] * c;
}

/* o [D] = A / S; zeros when the query saw nothing (S == 0, A unset). */
static void finish(float *o, const float *A, float S, int D) {
    if (!(S > 0)) {
        memset(o, 0, sizeof(float) * (size_t)D);
        return;
    }
    const float inv = 1.0f / S;
    for (int j = 0; j < D; j++) o[j] = A[j] * inv;
}

/* qs [T*G][D] = scale * q (rotated like the keys for +rot K codecs). */
static void scale_queries(const kvl_kv_pool *p, const kvi_layer *ly, int T, int G, const float *q, size_t tstride,
                          float scale, float *qs) {
    const int D = p->D;
    for (int t = 0; t < T; t++)
        for (int g = 0; g < G; g++) {
            const float *qq = q + t * tstride + (size_t)g * D;
            float *d = qs + (size_t)(t * G + g) * D;
            for (int j = 0; j < D; j++) d[j] = qq[j] * scale;
            if (ly->rot_k) kvi_rot(p, d);
        }
}

/* Statistics of one query token for G query heads (T == 1): raw[g] receives
 * the scores, acc[a][g] is the accumulator a to update (NULL: not for this
 * query). */
typedef struct statq {
    float *raw[QMAX];
    float *acc[KVL_KV_N_ACC][QMAX];
    float vote_a, vote_b;
} statq;

/* Fold query g's exact probabilities (final max M, sum S) into its accumulators. */
static void stats_fold(const statq *sq, int g, int len, float M, float S) {
    const float *r = sq->raw[g];
    const float inv = 1.0f / S;
    float *ms = sq->acc[KVL_KV_ACC_MASS][g], *ws = sq->acc[KVL_KV_ACC_WSUM][g], *w2 = sq->acc[KVL_KV_ACC_WSQ][g];
    float *la = sq->acc[KVL_KV_ACC_LAST][g], *vo = sq->acc[KVL_KV_ACC_VOTE][g], *en = sq->acc[KVL_KV_ACC_WENT][g];
    double sum = 0, sum2 = 0;
    int nv = 0;
    for (int i = 0; i < len; i++) {
        const float pr = r[i] == -INFINITY ? 0.0f : expf(r[i] - M) * inv;
        if (ms) ms[i] += pr;
        if (ws) {
            ws[i] += pr;
            w2[i] += pr * pr;
        }
        if (la) la[i] = pr;
        if (en && pr > 0) en[i] -= pr * logf(pr);
        if (vo && r[i] != -INFINITY) {
            sum += r[i];
            sum2 += (double)r[i] * r[i];
            nv++;
        }
    }
    if (vo && nv > 0) { /* VEDA: vote against scores below a*mean - b*std of the row */
        const double mean = sum / nv, var = sum2 / nv - mean * mean;
        const float th = (float)(sq->vote_a * mean - sq->vote_b * sqrt(var > 0 ? var : 0));
        for (int i = 0; i < len; i++)
            if (r[i] != -INFINITY && r[i] < th) vo[i] += 1.0f;
    }
}

/* T tokens x G heads (T*G <= QMAX) of one kv-head list L, all chunks in
 * order. Query (t, g) is at q + t*tstride + g*D (unscaled), its output at
 * out + t*tstride + g*D, its position qp[t]. sq: statistics of the query
 * (only with T == 1) or NULL. scr: kvl_kv_attend_scratch_bytes. */
static void attend_seq(const kvl_kv_pool *p, const kvi_layer *ly, const kvlist *L, int T, int G, const float *q, size_t tstride,
                       const int32_t *qp, float scale, float *out, uint8_t *scr, const statq *sq) {
    const int D = p->D, Q = T * G, cp = p->attn_cp;
    const size_t qb = qbuf_bytes(p);
    float *qs = (float *)scr, *acc = (float *)(scr + qb), *A = (float *)(scr + 2 * qb), *s = (float *)(scr + 3 * qb);
    float m[QMAX], l[QMAX], M[QMAX], S[QMAX];
    scale_queries(p, ly, T, G, q, tstride, scale, qs);
    for (int qi = 0; qi < Q; qi++) {
        M[qi] = -INFINITY;
        S[qi] = 0;
    }
    for (int pg0 = 0; pg0 < L->n_pages; pg0 += cp) {
        const int pg1 = pg0 + cp < L->n_pages ? pg0 + cp : L->n_pages;
        attend_part(p, L, pg0, pg1, T, G, qs, qp, acc, s, m, l, sq ? sq->raw : NULL);
        for (int qi = 0; qi < Q; qi++)
            fold(&M[qi], &S[qi], A + (size_t)qi * D, m[qi], l[qi], acc + (size_t)qi * D, D);
    }
    for (int t = 0; t < T; t++)
        for (int g = 0; g < G; g++) {
            const int qi = t * G + g;
            finish(out + t * tstride + (size_t)g * D, A + (size_t)qi * D, S[qi], D);
            if (ly->rot_v && S[qi] > 0) kvi_unrot(p, out + t * tstride + (size_t)g * D);
            if (sq && S[qi] > 0) stats_fold(sq, g, L->len, M[qi], S[qi]); /* exact probabilities */
        }
}

/* Units of the unsplit path: (block of TB tokens, kv-head, sub-group of GS heads). */
static void unsplit_shape(int n_tok, int Hkv, int group, int nth, int *GS, int *per, int *TB) {
    *GS = group < QMAX ? group : QMAX;
    *per = (group + *GS - 1) / *GS;
    int tb = QMAX / *GS;
    while (tb > 1 && (long)((n_tok + tb - 1) / tb) * Hkv * *per < 2L * nth) tb--;
    *TB = tb;
}

/* The blocked path for tokens [0, n_tok) (no statistics): thread ith's share. */
static void attend_plain(const kvl_kv_table *t, int layer, int n_tok, const float *q, const int32_t *qpos, int n_head,
                         float scale, float *out, void *scratch, int ith, int nth) {
    const kvl_kv_pool *p = t->pool;
    const int D = p->D, Hkv = p->cfg.n_head_kv, group = n_head / Hkv;
    const size_t tstride = (size_t)n_head * D;
    long lo, hi;
    if ((long)n_tok * Hkv >= nth) {
        /* enough (token, kv-head) units to occupy every thread */
        int GS, per, TB;
        unsplit_shape(n_tok, Hkv, group, nth, &GS, &per, &TB);
        const long nb = (n_tok + TB - 1) / TB;
        kvl_split(nb * Hkv * per, ith, nth, &lo, &hi);
        for (long u = lo; u < hi; u++) {
            const int b = (int)(u / ((long)Hkv * per)), r = (int)(u % ((long)Hkv * per));
            const int kvh = r / per, h = kvh * group + (r % per) * GS;
            const int G = group - (r % per) * GS < GS ? group - (r % per) * GS : GS;
            const int t0 = b * TB, T = n_tok - t0 < TB ? n_tok - t0 : TB;
            const size_t off = ((size_t)t0 * n_head + h) * D;
            attend_seq(p, &p->layers[layer], kvi_list(t, layer, kvh), T, G, q + off, tstride, qpos + t0, scale, out + off, scratch,
                       NULL);
        }
        return;
    }
    /* few units (decode on many threads, no partial buffer): one query head per unit */
    kvl_split((long)n_tok * n_head, ith, nth, &lo, &hi);
    for (long u = lo; u < hi; u++) {
        const int ti = (int)(u / n_head), h = (int)(u % n_head);
        const size_t off = ((size_t)ti * n_head + h) * D;
        attend_seq(p, &p->layers[layer], kvi_list(t, layer, h / group), 1, 1, q + off, tstride, qpos + ti, scale, out + off, scratch,
                   NULL);
    }
}

/* First token of an n_tok call whose query feeds a statistic (the rest run
 * the blocked path): every token for MASS and VOTE, the last W for WIN, the
 * last one for LAST. */
static int stats_from(const kvl_kv_table *t, int n_tok) {
    const unsigned f = t->stat_flags;
    if (f & KVL_KV_STAT_MASS || (f & KVL_KV_STAT_VOTE && !t->vote_window)) return 0;
    if (f & KVL_KV_STAT_VOTE) return n_tok > t->stat_window ? n_tok - t->stat_window : 0;
    if (f & (KVL_KV_STAT_WIN | KVL_KV_STAT_ENT)) return n_tok > t->stat_window ? n_tok - t->stat_window : 0;
    return n_tok - 1;
}

void kvl_kv_attend(const kvl_kv_table *t, int layer, int n_tok, const float *q, const int32_t *qpos,
                   int n_head, float scale, float *out, void *scratch, int ith, int nth) {
    const kvl_kv_pool *p = t->pool;
    const int D = p->D, Hkv = p->cfg.n_head_kv, group = n_head / Hkv;
    const size_t tstride = (size_t)n_head * D;
    const int stats = t->stat_flags != 0 && n_head == t->n_head;
    if (!stats) {
        attend_plain(t, layer, n_tok, q, qpos, n_head, scale, out, scratch, ith, nth);
        return;
    }
    const int sf = stats_from(t, n_tok);
    const int w0 = n_tok > t->stat_window ? n_tok - t->stat_window : 0; /* first window query */
    if (ith == 0 && t->win_n && (t->stat_flags & (KVL_KV_STAT_WIN | KVL_KV_STAT_ENT))) t->win_n[layer] += (float)(n_tok - w0);
    /* statistics queries: each thread owns whole query heads (one writer per array) */
    long lo, hi;
    kvl_split(n_head, ith, nth, &lo, &hi);
    for (int ti = sf; ti < n_tok; ti++)
        for (long h = lo; h < hi;) {
            const int kvh = (int)h / group;
            int G = (int)((kvh + 1) * (long)group - h);
            if (G > hi - h) G = (int)(hi - h);
            if (G > QMAX) G = QMAX;
            statq sq;
            memset(&sq, 0, sizeof sq);
            sq.vote_a = t->vote_a;
            sq.vote_b = t->vote_b;
            for (int g = 0; g < G; g++) {
                const int i = layer * t->n_head + (int)h + g;
                sq.raw[g] = t->raw[i];
                if (t->acc[KVL_KV_ACC_MASS]) sq.acc[KVL_KV_ACC_MASS][g] = t->acc[KVL_KV_ACC_MASS][i];
                if (t->acc[KVL_KV_ACC_VOTE] && (!t->vote_window || ti >= w0))
                    sq.acc[KVL_KV_ACC_VOTE][g] = t->acc[KVL_KV_ACC_VOTE][i];
                if (t->acc[KVL_KV_ACC_WSUM] && ti >= w0) {
                    sq.acc[KVL_KV_ACC_WSUM][g] = t->acc[KVL_KV_ACC_WSUM][i];
                    sq.acc[KVL_KV_ACC_WSQ][g] = t->acc[KVL_KV_ACC_WSQ][i];
                }
                if (t->acc[KVL_KV_ACC_WENT] && ti >= w0) sq.acc[KVL_KV_ACC_WENT][g] = t->acc[KVL_KV_ACC_WENT][i];
                if (t->acc[KVL_KV_ACC_LAST] && ti == n_tok - 1) sq.acc[KVL_KV_ACC_LAST][g] = t->acc[KVL_KV_ACC_LAST][i];
            }
            const size_t off = ((size_t)ti * n_head + h) * D;
            attend_seq(p, &p->layers[layer], kvi_list(t, layer, kvh), 1, G, q + off, tstride, qpos + ti, scale, out + off,
                       scratch, &sq);
            h += G;
        }
    if (sf > 0) attend_plain(t, layer, sf, q, qpos, n_head, scale, out, scratch, ith, nth);
}

/* ---- split (flash-decoding) attention -------------------------------------------- */

size_t kvl_kv_attn_part_bytes(const kvl_kv_pool *p, int n_head, int max_tokens) {
    const int P = p->P, cp = p->attn_cp;
    const long pages = ((long)max_tokens + P - 1) / P, nc = (pages + cp - 1) / cp;
    return sizeof(float) * (size_t)SPLIT_MAX_TOK * (size_t)n_head * (size_t)(nc > 0 ? nc : 1) * (size_t)(p->D + 2);
}

long kvl_kv_attn_init(kvl_kv_attn *a, const kvl_kv_table *t, int layer, int n_tok, const float *q,
                      const int32_t *qpos, int n_head, float scale, float *out, float *part, size_t part_bytes,
                      int n_threads) {
    const kvl_kv_pool *p = t->pool;
    const int Hkv = p->cfg.n_head_kv, group = n_head / Hkv;
    *a = (kvl_kv_attn){.t = t, .layer = layer, .n_tok = n_tok, .q = q, .qpos = qpos, .n_head = n_head,
                       .scale = scale, .out = out, .part = part};
    int nc = 0;
    for (int h = 0; h < Hkv; h++) {
        const int c = n_chunks_of(p, kvi_list(t, layer, h));
        nc = c > nc ? c : nc;
    }
    int GS, per, TB;
    unsplit_shape(n_tok, Hkv, group, n_threads, &GS, &per, &TB);
    const long units = (long)((n_tok + TB - 1) / TB) * Hkv * per;
    const int stats = t->stat_flags != 0 && n_head == t->n_head;
    if (!stats && part && n_tok <= SPLIT_MAX_TOK && nc > 1 && units < 2L * n_threads &&
        sizeof(float) * (size_t)n_tok * n_head * nc * (p->D + 2) <= part_bytes) {
        a->split = 1;
        a->n_chunk = nc;
        a->gs = GS;
        a->per = per;
        /* units (token, kv-head, sub-group, chunk); one head per unit if even
         * that leaves threads idle */
        if ((long)n_tok * Hkv * per * nc < n_threads) a->gs = 1, a->per = group;
        a->n_units = (long)n_tok * Hkv * a->per * nc;
    } else {
        a->n_units = n_threads;
    }
    return a->n_units;
}

void kvl_kv_attn_run(const kvl_kv_attn *a, void *scratch, long u0, long u1) {
    const kvl_kv_table *t = a->t;
    const kvl_kv_pool *p = t->pool;
    if (!a->split) {
        for (long u = u0; u < u1; u++)
            kvl_kv_attend(t, a->layer, a->n_tok, a->q, a->qpos, a->n_head, a->scale, a->out, scratch, (int)u,
                          (int)a->n_units);
        return;
    }
    const int D = p->D, Hkv = p->cfg.n_head_kv, group = a->n_head / Hkv, cp = p->attn_cp;
    const size_t tstride = (size_t)a->n_head * D, qb = qbuf_bytes(p), rec = (size_t)D + 2;
    uint8_t *scr = scratch;
    float *qs = (float *)scr, *acc = (float *)(scr + qb), *s = (float *)(scr + 3 * qb);
    float m[QMAX], l[QMAX];
    for (long u = u0; u < u1; u++) {
        const int c = (int)(u % a->n_chunk);
        long r = u / a->n_chunk;
        const int sub = (int)(r % a->per);
        r /= a->per;
        const int kvh = (int)(r % Hkv), ti = (int)(r / Hkv);
        const int h = kvh * group + sub * a->gs;
        const int G = group - sub * a->gs < a->gs ? group - sub * a->gs : a->gs;
        const kvlist *L = kvi_list(t, a->layer, kvh);
        const int pg0 = c * cp, pg1 = pg0 + cp < L->n_pages ? pg0 + cp : L->n_pages;
        if (pg0 < L->n_pages) {
            scale_queries(p, &p->layers[a->layer], 1, G, a->q + ((size_t)ti * a->n_head + h) * D, tstride, a->scale,
                          qs);
            attend_part(p, L, pg0, pg1, 1, G, qs, a->qpos + ti, acc, s, m, l, NULL);
        } else { /* this kv-head's list is shorter than the longest */
            for (int g = 0; g < G; g++) m[g] = -INFINITY, l[g] = 0;
        }
        for (int g = 0; g < G; g++) {
            float *rp = a->part + (((size_t)ti * a->n_head + h + g) * a->n_chunk + c) * rec;
            rp[0] = m[g];
            rp[1] = l[g];
            if (m[g] != -INFINITY) memcpy(rp + 2, acc + (size_t)g * D, sizeof(float) * (size_t)D);
        }
    }
}

void kvl_kv_attn_merge(const kvl_kv_attn *a, int ith, int nth) {
    if (!a->split) return;
    const int D = a->t->pool->D;
    const size_t rec = (size_t)D + 2;
    long lo, hi;
    kvl_split((long)a->n_tok * a->n_head, ith, nth, &lo, &hi);
    for (long u = lo; u < hi; u++) { /* (token, query head): fold its chunks in order */
        float *o = a->out + (size_t)u * D, M = -INFINITY, S = 0;
        const float *rp = a->part + (size_t)u * a->n_chunk * rec;
        for (int c = 0; c < a->n_chunk; c++, rp += rec) fold(&M, &S, o, rp[0], rp[1], rp + 2, D);
        finish(o, o, S, D);
        if (a->t->pool->layers[a->layer].rot_v && S > 0) kvi_unrot(a->t->pool, o);
    }
}
