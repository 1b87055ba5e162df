/* Micro-benchmark of the attention kernels on sealed pages: qk_multi + av_multi
 * over an 8K-token list of pages (P = 32, D = 64, 3 queries per kv-head, the
 * default model's GQA group) for f16 vs kivi2 / kivi4 / kivi2z / kivi3z / kivi4z (K codec kivi*, V codec
 * its as_v twin), best kernels of this CPU. Reports ns per token (one kv-head,
 * all 3 queries, qk + av; the softmax is not included, it is the same for every
 * codec) for:
 *   hot:  one list (f16: 2 MiB of K+V) read again and again, cache-resident;
 *   cold: LISTS lists (f16: 90 x 2 MiB = 180 MiB, about the default model's
 *         30 layers x 3 kv-heads at ctx 8K) read in turn, so the data comes
 *         from DRAM as in real decode.
 * Each point: 3 repeats of >= `seconds` each, median.
 * Usage: bench_kivi [seconds-per-repeat (0.2)] [lists for cold (90)]
 * Build: make bench-kivi (runs it) or make build/bench_kivi. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kv/codec.h"
#include "kv/kv.h"

enum { D = 64, P = 32, NTOK = 8192, NPAGE = NTOK / P, G = 3 };

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float frand(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((double)(rng >> 11) / 9007199254740992.0 * 2 - 1);
}

/* Write P rows x [P][D] into seg with codec c (per-token encode, or f16 open + seal). */
static void fill(const kvl_codec *c, uint8_t *seg, const float *x, uint8_t *open) {
    if (c->encode) {
        for (int i = 0; i < P; i++) c->encode(NULL, seg, D, P, i, x + (size_t)i * D);
        return;
    }
    for (int i = 0; i < P; i++) c->open->encode(NULL, open, D, P, i, x + (size_t)i * D);
    c->seal(NULL, seg, open, D, P);
}

typedef struct {
    const kvl_codec *ck, *cv;
    kvl_codec_kernels kk, kv;
    size_t kb, vb, page; /* K / V segment bytes, page stride */
    uint8_t *mem;        /* [lists][NPAGE] pages of K seg then V seg */
} setup;

static void attend_list(const setup *s, const uint8_t *base, const float *q, const float *p, float *sc, float *acc) {
    for (int pg = 0; pg < NPAGE; pg++) {
        const uint8_t *page = base + (size_t)pg * s->page;
        kvl_codec_qk_multi(&s->kk, page, D, P, P, q, G, sc);
        kvl_codec_av_multi(&s->kv, page + s->kb, D, P, P, p, G, acc);
    }
}

static int cmp(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* ns per token per kv-head, median of 3 repeats over `lists` lists. */
static double run(const setup *s, int lists, double secs, float *sink) {
    float q[G * D], p[G * P], sc[G * P], acc[G * D] = {0};
    for (int i = 0; i < G * D; i++) q[i] = frand();
    for (int i = 0; i < G * P; i++) p[i] = (frand() + 1) / (2 * NTOK);
    double t[3];
    attend_list(s, s->mem, q, p, sc, acc); /* warm-up */
    for (int r = 0; r < 3; r++) {
        long n = 0;
        const double t0 = now();
        double t1;
        do {
            for (int l = 0; l < lists; l++) attend_list(s, s->mem + (size_t)l * NPAGE * s->page, q, p, sc, acc);
            n += lists;
        } while ((t1 = now()) - t0 < secs);
        t[r] = (t1 - t0) / ((double)n * NTOK) * 1e9;
    }
    qsort(t, 3, sizeof t[0], cmp);
    for (int i = 0; i < G * D; i++) *sink += acc[i];
    return t[1];
}

int main(int argc, char **argv) {
    const double secs = argc > 1 ? atof(argv[1]) : 0.2;
    const int lists = argc > 2 ? atoi(argv[2]) : 90;
    const char *names[] = {"f16", "kivi2", "kivi4", "kivi2z", "kivi3z", "kivi4z"};
    enum { NC = sizeof names / sizeof names[0] };
    float *x = malloc(sizeof(float) * P * D), sink = 0;
    uint8_t *open = malloc((size_t)P * D * 2);
    double hot[NC], cold[NC];
    printf("bench_kivi: D=%d P=%d ctx %d, %d queries per kv-head, qk_multi + av_multi, ns/token (median of 3)\n", D, P,
           NTOK, G);
    for (int c = 0; c < NC; c++) {
        setup s;
        s.ck = kvl_codec_find(names[c]);
        s.cv = s.ck->as_v ? s.ck->as_v : s.ck;
        s.kk = kvl_codec_kernels_get(s.ck, D, 0);
        s.kv = kvl_codec_kernels_get(s.cv, D, 0);
        s.kb = s.ck->seg_bytes(D, P), s.vb = s.cv->seg_bytes(D, P);
        s.page = (s.kb + s.vb + 63) / 64 * 64;
        s.mem = aligned_alloc(64, (size_t)lists * NPAGE * s.page);
        if (!s.mem) return 1;
        for (int pg = 0; pg < NPAGE; pg++) {
            uint8_t *page = s.mem + (size_t)pg * s.page;
            for (int i = 0; i < P * D; i++) x[i] = 2 * frand() + (i % D == 5 ? 10 : 0);
            fill(s.ck, page, x, open);
            for (int i = 0; i < P * D; i++) x[i] = frand();
            fill(s.cv, page + s.kb, x, open);
        }
        for (int l = 1; l < lists; l++) memcpy(s.mem + (size_t)l * NPAGE * s.page, s.mem, (size_t)NPAGE * s.page);
        hot[c] = run(&s, 1, secs, &sink);
        cold[c] = run(&s, lists, secs, &sink);
        printf("  %-7s %-6s K %4zu B + V %4zu B per page (%.2f bits/value)  hot %6.2f ns/token  cold %6.2f ns/token"
               "  (x%.2f / x%.2f vs f16)\n",
               names[c], s.kk.isa, s.kb, s.vb, (double)(s.kb + s.vb) * 8 / (2.0 * P * D), hot[c], cold[c],
               hot[0] / hot[c], cold[0] / cold[c]);
        free(s.mem);
    }
    printf("(sink %g)\n", (double)sink);
    free(x), free(open);
    return 0;
}
