/* Token sampler: turns a logit vector into one token id.
 *
 * Pipeline (llama.cpp semantics): repetition penalty over the last
 * repeat_last_n accepted tokens, then either greedy argmax (temperature <= 0)
 * or temperature -> top-k -> softmax -> top-p -> min-p -> renormalise -> draw
 * with a seeded xoshiro256** generator kept in the sampler. Every buffer is
 * sized to n_vocab at create time, so sampling never allocates.
 *
 * Equivalence used for speed: min-p keeps a prefix of the probability-sorted
 * candidates and top-p keeps a prefix too, so the result of "top-p then min-p"
 * is the shorter of the two prefixes. We filter by min-p first (O(n), no sort)
 * and then run the top-p scan over the sorted survivors using probabilities
 * normalised over all top-k candidates, which yields the same set.
 *
 * Non-finite logits: NaN is ignored (never sampled), -inf has probability 0,
 * +inf is treated as the largest float (all +inf tokens share the mass). */
#include "kvlite.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct kvl_cand {
    float logit;
    int32_t id;
} kvl_cand;

struct kvl_sampler {
    kvl_sampler_params p;
    int n_vocab;
    kvl_cand *cand;      /* [n_vocab] candidate scratch */
    uint8_t *seen;       /* [n_vocab] marks for de-duplicating the penalty history */
    kvl_token *hist;     /* [repeat_last_n] ring buffer of accepted tokens */
    int hist_len, hist_head;
    uint64_t rng[4];     /* xoshiro256** state */
};

void kvl_sampler_params_default(kvl_sampler_params *p) {
    if (!p) return;
    p->temperature = 0.8f;
    p->top_k = 40;
    p->top_p = 0.95f;
    p->min_p = 0.05f;
    p->repeat_penalty = 1.0f;
    p->repeat_last_n = 64;
    p->seed = 42;
}

/* ---- PRNG: splitmix64 seeding, xoshiro256** stream ---------------------------- */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl64(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t xoshiro_next(uint64_t s[4]) {
    uint64_t result = rotl64(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl64(s[3], 45);
    return result;
}

/* Uniform double in [0, 1). */
static double rng_uniform(uint64_t s[4]) { return (double)(xoshiro_next(s) >> 11) * 0x1.0p-53; }

/* ---- create / free ----------------------------------------------------------- */

kvl_status kvl_sampler_create(const kvl_sampler_params *p, int n_vocab, kvl_sampler **out) {
    if (!out) return KVL_ERR_ARG;
    *out = NULL;
    kvl_sampler_params def;
    if (!p) {
        kvl_sampler_params_default(&def);
        p = &def;
    }
    if (n_vocab <= 0 || isnan(p->temperature) || isnan(p->top_p) || isnan(p->min_p) ||
        !(p->repeat_penalty > 0.0f) || !isfinite(p->repeat_penalty) || p->top_k < 0 ||
        p->repeat_last_n < 0)
        return KVL_ERR_ARG;

    kvl_sampler *s = calloc(1, sizeof *s);
    if (!s) return KVL_ERR_NOMEM;
    s->p = *p;
    s->n_vocab = n_vocab;
    s->cand = malloc((size_t)n_vocab * sizeof *s->cand);
    s->seen = calloc((size_t)n_vocab, 1);
    s->hist = malloc((size_t)(p->repeat_last_n > 0 ? p->repeat_last_n : 1) * sizeof *s->hist);
    if (!s->cand || !s->seen || !s->hist) {
        kvl_sampler_free(s);
        return KVL_ERR_NOMEM;
    }
    uint64_t x = p->seed;
    for (int i = 0; i < 4; i++) s->rng[i] = splitmix64(&x);
    *out = s;
    return KVL_OK;
}

void kvl_sampler_free(kvl_sampler *s) {
    if (!s) return;
    free(s->cand);
    free(s->seen);
    free(s->hist);
    free(s);
}

void kvl_sampler_accept(kvl_sampler *s, kvl_token t) {
    if (!s || s->p.repeat_last_n <= 0) return;
    int cap = s->p.repeat_last_n;
    s->hist[s->hist_head] = t;
    s->hist_head = (s->hist_head + 1) % cap;
    if (s->hist_len < cap) s->hist_len++;
}

/* ---- sampling ------------------------------------------------------------------ */

/* Total order on candidates: higher logit first, lower id first on ties. */
static int cand_before(const kvl_cand *a, const kvl_cand *b) {
    if (a->logit != b->logit) return a->logit > b->logit;
    return a->id < b->id;
}

static int cand_cmp(const void *pa, const void *pb) {
    const kvl_cand *a = pa, *b = pb;
    if (cand_before(a, b)) return -1;
    if (cand_before(b, a)) return 1;
    return 0;
}

/* Penalise each distinct token of the history once (llama.cpp semantics). */
static void apply_repeat_penalty(kvl_sampler *s, float *logits) {
    float pen = s->p.repeat_penalty;
    if (pen == 1.0f || s->hist_len == 0) return;
    for (int i = 0; i < s->hist_len; i++) {
        kvl_token t = s->hist[i];
        if (t < 0 || t >= s->n_vocab || s->seen[t]) continue;
        s->seen[t] = 1;
        float l = logits[t];
        logits[t] = l > 0.0f ? l / pen : l * pen;
    }
    for (int i = 0; i < s->hist_len; i++) {
        kvl_token t = s->hist[i];
        if (t >= 0 && t < s->n_vocab) s->seen[t] = 0;
    }
}

/* Index of the largest non-NaN logit, lowest index on ties; 0 if all are NaN. */
static kvl_token argmax(const float *logits, int n) {
    int best = -1;
    for (int i = 0; i < n; i++) {
        if (isnan(logits[i])) continue;
        if (best < 0 || logits[i] > logits[best]) best = i;
    }
    return best < 0 ? 0 : best;
}

/* Min-heap sift-down on the first n candidates (root = worst kept candidate). */
static void heap_down(kvl_cand *h, int n, int i) {
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && cand_before(&h[m], &h[l])) m = l;
        if (r < n && cand_before(&h[m], &h[r])) m = r;
        if (m == i) return;
        kvl_cand t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

/* Keep the k best of c[0..n) in c[0..k) (unordered). Returns k. */
static int select_top_k(kvl_cand *c, int n, int k) {
    for (int i = k / 2 - 1; i >= 0; i--) heap_down(c, k, i);
    for (int i = k; i < n; i++) {
        if (cand_before(&c[i], &c[0])) {
            c[0] = c[i];
            heap_down(c, k, 0);
        }
    }
    return k;
}

kvl_token kvl_sampler_sample(kvl_sampler *s, float *logits) {
    if (!s || !logits) return 0;
    const int nv = s->n_vocab;
    apply_repeat_penalty(s, logits);

    if (!(s->p.temperature > 0.0f)) return argmax(logits, nv);

    /* Candidates: finite-or-+inf logits scaled by 1/temperature. */
    const float inv_t = 1.0f / s->p.temperature;
    kvl_cand *c = s->cand;
    int n = 0;
    for (int i = 0; i < nv; i++) {
        float l = logits[i];
        if (isnan(l) || l == -INFINITY) continue;
        if (l == INFINITY) l = FLT_MAX;
        l *= inv_t;
        if (isinf(l)) l = l > 0 ? FLT_MAX : -FLT_MAX; /* tiny temperatures overflow */
        c[n].logit = l;
        c[n].id = i;
        n++;
    }
    if (n == 0) return argmax(logits, nv);

    if (s->p.top_k > 0 && s->p.top_k < n) n = select_top_k(c, n, s->p.top_k);

    float maxl = c[0].logit;
    for (int i = 1; i < n; i++)
        if (c[i].logit > maxl) maxl = c[i].logit;
    double z = 0.0;
    for (int i = 0; i < n; i++) z += exp((double)c[i].logit - (double)maxl);

    /* min-p: p_i >= min_p * p_max  <=>  exp(l_i - l_max) >= min_p. */
    if (s->p.min_p > 0.0f) {
        double thr = s->p.min_p >= 1.0f ? 0.0 : log((double)s->p.min_p);
        int m = 0;
        for (int i = 0; i < n; i++)
            if ((double)c[i].logit - (double)maxl >= thr) c[m++] = c[i];
        n = m; /* the max always survives */
    }

    if (s->p.top_p < 1.0f) {
        qsort(c, (size_t)n, sizeof *c, cand_cmp);
        double cum = 0.0;
        for (int i = 0; i < n; i++) {
            cum += exp((double)c[i].logit - (double)maxl) / z;
            if (cum >= (double)s->p.top_p) {
                n = i + 1;
                break;
            }
        }
    }

    /* Renormalise over the survivors and draw. Order of c does not matter here,
     * but it is deterministic for a given input, so draws are reproducible. */
    double sum = 0.0;
    for (int i = 0; i < n; i++) sum += exp((double)c[i].logit - (double)maxl);
    double u = rng_uniform(s->rng) * sum;
    double acc = 0.0;
    for (int i = 0; i < n; i++) {
        acc += exp((double)c[i].logit - (double)maxl);
        if (u < acc) return c[i].id;
    }
    return c[n - 1].id; /* rounding: u landed at the very end */
}
