/* rANS coder with static per-context models (util/rans.h): histogram,
 * normalization to a power of two, compact model serialization, a
 * two-state interleaved encoder / decoder, and a scalar reference decoder
 * (linear cumulative search) the fast one is tested against. */
#include "util/rans.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define RANS_L (1u << 23) /* lower bound of a normalized state */
#define MASK (KVL_RANS_TOTAL - 1u)

typedef struct rans_ctx {
    uint16_t freq[KVL_RANS_ALPHA];
    uint16_t cum[KVL_RANS_ALPHA];
    uint8_t used; /* frequencies present */
} rans_ctx;

struct kvl_rans_models {
    int n_ctx;
    rans_ctx *c;     /* [n_ctx] */
    uint32_t *count; /* [n_ctx][ALPHA] histograms */
    uint8_t *slot;   /* [n_ctx][TOTAL] slot -> symbol (decoder) */
};

kvl_status kvl_rans_models_create(int n_ctx, kvl_rans_models **out, kvl_err *err) {
    *out = NULL;
    if (n_ctx < 1 || n_ctx > KVL_RANS_MAX_CTX)
        return kvl_err_set(err, KVL_ERR_ARG, "rans: %d contexts (1..%d)", n_ctx, KVL_RANS_MAX_CTX);
    kvl_rans_models *m = calloc(1, sizeof *m);
    if (m) {
        m->n_ctx = n_ctx;
        m->c = calloc((size_t)n_ctx, sizeof *m->c);
        m->count = calloc((size_t)n_ctx * KVL_RANS_ALPHA, sizeof *m->count);
    }
    if (!m || !m->c || !m->count) {
        kvl_rans_models_free(m);
        return kvl_err_set(err, KVL_ERR_NOMEM, "rans: out of memory for %d contexts", n_ctx);
    }
    *out = m;
    return KVL_OK;
}

void kvl_rans_models_free(kvl_rans_models *m) {
    if (!m) return;
    free(m->c);
    free(m->count);
    free(m->slot);
    free(m);
}

int kvl_rans_models_n_ctx(const kvl_rans_models *m) { return m->n_ctx; }

void kvl_rans_models_reset(kvl_rans_models *m) {
    memset(m->c, 0, (size_t)m->n_ctx * sizeof *m->c);
    memset(m->count, 0, (size_t)m->n_ctx * KVL_RANS_ALPHA * sizeof *m->count);
}

kvl_status kvl_rans_count(kvl_rans_models *m, const uint8_t *sym, const uint16_t *ctx, size_t n, kvl_err *err) {
    for (size_t i = 0; i < n; i++) {
        if (ctx[i] >= m->n_ctx) return kvl_err_set(err, KVL_ERR_ARG, "rans: context %u of symbol %zu >= %d", ctx[i], i, m->n_ctx);
        m->count[(size_t)ctx[i] * KVL_RANS_ALPHA + sym[i]]++;
    }
    return KVL_OK;
}

static void set_cum(rans_ctx *c) {
    uint32_t s = 0;
    for (int i = 0; i < KVL_RANS_ALPHA; i++) {
        c->cum[i] = (uint16_t)s;
        s += c->freq[i];
    }
}

/* Scale counts to frequencies summing to TOTAL, each counted symbol >= 1. */
static void normalize_one(const uint32_t *cnt, rans_ctx *c) {
    uint64_t sum = 0;
    for (int i = 0; i < KVL_RANS_ALPHA; i++) sum += cnt[i];
    memset(c->freq, 0, sizeof c->freq);
    c->used = 0;
    if (!sum) return;
    int64_t tot = 0;
    int best = 0;
    for (int i = 0; i < KVL_RANS_ALPHA; i++) {
        if (!cnt[i]) continue;
        uint64_t f = (cnt[i] * (uint64_t)KVL_RANS_TOTAL + sum / 2) / sum;
        if (f < 1) f = 1;
        c->freq[i] = (uint16_t)f;
        tot += (int64_t)f;
        if (c->freq[i] > c->freq[best] || !cnt[best]) best = i;
    }
    int64_t diff = (int64_t)KVL_RANS_TOTAL - tot;
    if (diff > 0) {
        c->freq[best] = (uint16_t)(c->freq[best] + diff);
    } else {
        /* take from the largest frequencies first (the least relative cost);
         * at most ALPHA symbols of 1 exist, so TOTAL (>= ALPHA) is reachable */
        while (diff < 0) {
            int b = -1;
            for (int i = 0; i < KVL_RANS_ALPHA; i++)
                if (c->freq[i] > 1 && (b < 0 || c->freq[i] > c->freq[b])) b = i;
            int64_t take = c->freq[b] - 1;
            if (take > -diff) take = -diff;
            if (take > c->freq[b] / 4 + 1) take = c->freq[b] / 4 + 1;
            c->freq[b] = (uint16_t)(c->freq[b] - take);
            diff += take;
        }
    }
    c->used = 1;
    set_cum(c);
}

void kvl_rans_normalize(kvl_rans_models *m) {
    for (int k = 0; k < m->n_ctx; k++) normalize_one(m->count + (size_t)k * KVL_RANS_ALPHA, &m->c[k]);
}

uint32_t kvl_rans_freq(const kvl_rans_models *m, int c, int s) {
    if (c < 0 || c >= m->n_ctx || s < 0 || s >= KVL_RANS_ALPHA) return 0;
    return m->c[c].freq[s];
}

double kvl_rans_cost_bits(const kvl_rans_models *m) {
    double bits = 0;
    for (int k = 0; k < m->n_ctx; k++) {
        const uint32_t *cnt = m->count + (size_t)k * KVL_RANS_ALPHA;
        for (int i = 0; i < KVL_RANS_ALPHA; i++)
            if (cnt[i] && m->c[k].freq[i]) bits += cnt[i] * (KVL_RANS_PROB_BITS - log2((double)m->c[k].freq[i]));
    }
    return bits;
}

/* ---- model serialization ------------------------------------------------------------ */

static size_t varint_len(uint32_t v) {
    size_t n = 1;
    while (v >= 0x80) v >>= 7, n++;
    return n;
}
static uint8_t *varint_put(uint8_t *p, uint32_t v) {
    while (v >= 0x80) *p++ = (uint8_t)(v | 0x80), v >>= 7;
    *p++ = (uint8_t)v;
    return p;
}
/* Read a varint of at most 3 bytes (values < 2^21) from [*p, end); -1 on fault. */
static int64_t varint_get(const uint8_t **p, const uint8_t *end) {
    uint32_t v = 0;
    for (int sh = 0; sh < 21; sh += 7) {
        if (*p >= end) return -1;
        const uint8_t b = *(*p)++;
        v |= (uint32_t)(b & 0x7f) << sh;
        if (!(b & 0x80)) return v;
    }
    return -1;
}

static void ctx_range(const rans_ctx *c, int *lo, int *hi, int *k) {
    *lo = -1, *hi = -1, *k = 0;
    for (int i = 0; i < KVL_RANS_ALPHA; i++)
        if (c->freq[i]) {
            if (*lo < 0) *lo = i;
            *hi = i;
            (*k)++;
        }
}

size_t kvl_rans_models_bytes(const kvl_rans_models *m) {
    size_t n = 0;
    for (int k = 0; k < m->n_ctx; k++) {
        int lo, hi, used;
        ctx_range(&m->c[k], &lo, &hi, &used);
        n += varint_len((uint32_t)used);
        if (!used) continue;
        n += 2;
        for (int i = lo; i <= hi; i++) n += varint_len(m->c[k].freq[i]);
    }
    return n;
}

size_t kvl_rans_models_write(const kvl_rans_models *m, uint8_t *dst, size_t cap) {
    const size_t need = kvl_rans_models_bytes(m);
    if (need > cap) return 0;
    uint8_t *p = dst;
    for (int k = 0; k < m->n_ctx; k++) {
        int lo, hi, used;
        ctx_range(&m->c[k], &lo, &hi, &used);
        p = varint_put(p, (uint32_t)used);
        if (!used) continue;
        *p++ = (uint8_t)lo;
        *p++ = (uint8_t)hi;
        for (int i = lo; i <= hi; i++) p = varint_put(p, m->c[k].freq[i]);
    }
    return (size_t)(p - dst);
}

kvl_status kvl_rans_decoder_prepare(kvl_rans_models *m, kvl_err *err) {
    if (!m->slot) {
        m->slot = malloc((size_t)m->n_ctx * KVL_RANS_TOTAL);
        if (!m->slot) return kvl_err_set(err, KVL_ERR_NOMEM, "rans: out of memory for decode tables");
    }
    for (int k = 0; k < m->n_ctx; k++) {
        const rans_ctx *c = &m->c[k];
        if (!c->used) continue;
        uint8_t *t = m->slot + (size_t)k * KVL_RANS_TOTAL;
        for (int s = 0; s < KVL_RANS_ALPHA; s++)
            if (c->freq[s]) memset(t + c->cum[s], s, c->freq[s]);
    }
    return KVL_OK;
}

kvl_status kvl_rans_models_read(kvl_rans_models *m, const uint8_t *src, size_t n, size_t *used, kvl_err *err) {
    const uint8_t *p = src, *end = src + n;
    memset(m->c, 0, (size_t)m->n_ctx * sizeof *m->c);
    for (int k = 0; k < m->n_ctx; k++) {
        const int64_t cnt = varint_get(&p, end);
        if (cnt < 0 || cnt > KVL_RANS_ALPHA) return kvl_err_set(err, KVL_ERR_FORMAT, "rans: context %d: bad symbol count", k);
        if (!cnt) continue;
        if (end - p < 2) return kvl_err_set(err, KVL_ERR_FORMAT, "rans: context %d: models truncated", k);
        const int lo = *p++, hi = *p++;
        if (lo > hi || hi - lo + 1 < cnt) return kvl_err_set(err, KVL_ERR_FORMAT, "rans: context %d: bad symbol range", k);
        uint32_t sum = 0;
        int nz = 0;
        rans_ctx *c = &m->c[k];
        for (int i = lo; i <= hi; i++) {
            const int64_t f = varint_get(&p, end);
            if (f < 0 || f > KVL_RANS_TOTAL) return kvl_err_set(err, KVL_ERR_FORMAT, "rans: context %d: bad frequency", k);
            c->freq[i] = (uint16_t)f;
            sum += (uint32_t)f;
            nz += f > 0;
        }
        if (sum != KVL_RANS_TOTAL || nz != cnt || !c->freq[lo] || !c->freq[hi])
            return kvl_err_set(err, KVL_ERR_FORMAT, "rans: context %d: frequencies sum to %u over %d symbols (want %u over %d)",
                               k, sum, nz, KVL_RANS_TOTAL, (int)cnt);
        c->used = 1;
        set_cum(c);
    }
    if (used) *used = (size_t)(p - src);
    return kvl_rans_decoder_prepare(m, err);
}

/* ---- coding --------------------------------------------------------------------------- */

size_t kvl_rans_bound(size_t n) { return 8 + n * 2 + 16; }

kvl_status kvl_rans_encode(const kvl_rans_models *m, const uint8_t *sym, const uint16_t *ctx, size_t n, uint8_t *dst,
                           size_t cap, size_t *len, kvl_err *err) {
    if (cap < kvl_rans_bound(n)) return kvl_err_set(err, KVL_ERR_ARG, "rans: output buffer of %zu bytes < bound", cap);
    uint8_t *ptr = dst + cap;
    uint32_t x[2] = {RANS_L, RANS_L};
    for (size_t i = n; i-- > 0;) {
        const unsigned k = ctx[i];
        if (k >= (unsigned)m->n_ctx) return kvl_err_set(err, KVL_ERR_ARG, "rans: context %u of symbol %zu >= %d", k, i, m->n_ctx);
        const rans_ctx *c = &m->c[k];
        const uint32_t f = c->freq[sym[i]];
        if (!f) return kvl_err_set(err, KVL_ERR_ARG, "rans: symbol %u of context %u has no frequency", sym[i], k);
        uint32_t *s = &x[i & 1];
        const uint32_t xmax = ((RANS_L >> KVL_RANS_PROB_BITS) << 8) * f;
        while (*s >= xmax) *--ptr = (uint8_t)*s, *s >>= 8;
        *s = ((*s / f) << KVL_RANS_PROB_BITS) + (*s % f) + c->cum[sym[i]];
    }
    for (int j = 1; j >= 0; j--) {
        ptr -= 4;
        ptr[0] = (uint8_t)x[j], ptr[1] = (uint8_t)(x[j] >> 8), ptr[2] = (uint8_t)(x[j] >> 16), ptr[3] = (uint8_t)(x[j] >> 24);
    }
    const size_t out = (size_t)(dst + cap - ptr);
    memmove(dst, ptr, out);
    *len = out;
    return KVL_OK;
}

static int read_states(const uint8_t *src, size_t len, uint32_t x[2]) {
    if (len < 8) return -1;
    for (int j = 0; j < 2; j++) {
        const uint8_t *p = src + 4 * j;
        x[j] = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
        if (x[j] < RANS_L || x[j] >= (RANS_L << 8)) return -1;
    }
    return 0;
}

kvl_status kvl_rans_dec_init(kvl_rans_dec *d, const uint8_t *src, size_t len, kvl_err *err) {
    if (read_states(src, len, d->x)) return kvl_err_set(err, KVL_ERR_FORMAT, "rans: stream header bad (%zu bytes)", len);
    d->p = src + 8;
    d->end = src + len;
    d->i = 0;
    return KVL_OK;
}

kvl_status kvl_rans_dec_run(kvl_rans_dec *d, const kvl_rans_models *m, const uint16_t *ctx, size_t n, uint8_t *sym,
                            kvl_err *err) {
    if (!m->slot) return kvl_err_set(err, KVL_ERR_ARG, "rans: decode tables not prepared");
    const uint8_t *p = d->p, *end = d->end;
    const unsigned nc = (unsigned)m->n_ctx;
    const unsigned par = (unsigned)(d->i & 1);
    uint32_t x[2] = {d->x[0], d->x[1]};
    for (size_t i = 0; i < n; i++) {
        const unsigned k = ctx[i];
        if (k >= nc || !m->c[k].used) return kvl_err_set(err, KVL_ERR_FORMAT, "rans: symbol %zu in empty context %u", i, k);
        const rans_ctx *c = &m->c[k];
        const unsigned j = (unsigned)(i & 1) ^ par;
        uint32_t s = x[j];
        const uint32_t slot = s & MASK;
        const uint8_t v = m->slot[(size_t)k * KVL_RANS_TOTAL + slot];
        s = c->freq[v] * (s >> KVL_RANS_PROB_BITS) + slot - c->cum[v];
        /* one symbol consumes at most PROB_BITS bits: at most 2 bytes refill */
        if (s < RANS_L) {
            if (p >= end) return kvl_err_set(err, KVL_ERR_FORMAT, "rans: stream truncated at symbol %zu", i);
            s = (s << 8) | *p++;
            if (s < RANS_L) {
                if (p >= end) return kvl_err_set(err, KVL_ERR_FORMAT, "rans: stream truncated at symbol %zu", i);
                s = (s << 8) | *p++;
            }
        }
        x[j] = s;
        sym[i] = v;
    }
    d->x[0] = x[0], d->x[1] = x[1];
    d->p = p;
    d->i += n;
    return KVL_OK;
}

kvl_status kvl_rans_dec_end(const kvl_rans_dec *d, kvl_err *err) {
    if (d->x[0] != RANS_L || d->x[1] != RANS_L || d->p != d->end)
        return kvl_err_set(err, KVL_ERR_FORMAT, "rans: stream does not end cleanly (%zu bytes left)", (size_t)(d->end - d->p));
    return KVL_OK;
}

kvl_status kvl_rans_decode(const kvl_rans_models *m, const uint16_t *ctx, size_t n, const uint8_t *src, size_t len,
                           uint8_t *sym, kvl_err *err) {
    kvl_rans_dec d;
    kvl_status st = kvl_rans_dec_init(&d, src, len, err);
    if (!st) st = kvl_rans_dec_run(&d, m, ctx, n, sym, err);
    if (!st) st = kvl_rans_dec_end(&d, err);
    return st;
}

kvl_status kvl_rans_decode_ref(const kvl_rans_models *m, const uint16_t *ctx, size_t n, const uint8_t *src,
                               size_t len, uint8_t *sym, kvl_err *err) {
    uint32_t x[2];
    if (read_states(src, len, x)) return kvl_err_set(err, KVL_ERR_FORMAT, "rans: stream header bad (%zu bytes)", len);
    size_t off = 8;
    for (size_t i = 0; i < n; i++) {
        if (ctx[i] >= m->n_ctx || !m->c[ctx[i]].used)
            return kvl_err_set(err, KVL_ERR_FORMAT, "rans: symbol %zu in empty context %u", i, ctx[i]);
        const rans_ctx *c = &m->c[ctx[i]];
        uint32_t s = x[i & 1];
        const uint32_t slot = s % KVL_RANS_TOTAL;
        int v = 0;
        uint32_t lo = 0;
        while (v < KVL_RANS_ALPHA - 1 && lo + c->freq[v] <= slot) lo += c->freq[v], v++;
        s = c->freq[v] * (s / KVL_RANS_TOTAL) + slot - lo;
        while (s < RANS_L) {
            if (off >= len) return kvl_err_set(err, KVL_ERR_FORMAT, "rans: stream truncated at symbol %zu", i);
            s = s * 256u + src[off++];
        }
        x[i & 1] = s;
        sym[i] = (uint8_t)v;
    }
    if (x[0] != RANS_L || x[1] != RANS_L || off != len)
        return kvl_err_set(err, KVL_ERR_FORMAT, "rans: stream does not end cleanly (%zu bytes left)", len - off);
    return KVL_OK;
}
