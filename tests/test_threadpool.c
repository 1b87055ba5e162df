/* Thread pool stress test (also run under ThreadSanitizer by `make tsan`):
 * many jobs on pools of 1..8 threads (oversubscribed on small machines), chunk
 * counts from one to thousands changing from job to job, chunks of uneven
 * cost, pauses long enough for the workers to fall asleep between jobs, pools
 * created and freed repeatedly, and nested use (each chunk of an outer job
 * driving its own inner pool). Checks, with plain (non-atomic) memory so that
 * TSan sees any missing happens-before: the caller's job data is visible to
 * the workers, every chunk runs exactly once per job, results written by the
 * workers are visible to the caller when run() returns, and no two chunks run
 * concurrently with the same tid (per-tid scratch). */
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "test.h"
#include "util/threadpool.h"

enum { MAXT = 8, MAXC = 4096 };

typedef struct {
    int n_threads;
    int n_chunks;          /* as passed to run (0 = one per thread) */
    unsigned job;          /* job number, written by the caller before run */
    const uint32_t *input; /* caller data read by the chunks */
    uint32_t out[MAXC];    /* chunk i writes out[i] (plain) */
    int runs[MAXC];        /* chunk i increments runs[i] (plain: once per job) */
    uint64_t scratch[MAXT][8];
    atomic_int busy[MAXT]; /* tid in use */
    atomic_int bad;        /* wrong tid, wrong n_chunks, tid shared */
    int spin;              /* extra work per chunk */
} job_arg;

static uint32_t mix(uint32_t x) {
    x ^= x >> 16;
    x *= 0x7feb352dU;
    x ^= x >> 15;
    x *= 0x846ca68bU;
    x ^= x >> 16;
    return x;
}

static void chunk_fn(void *a_, int chunk, int n_chunks, int tid) {
    job_arg *a = a_;
    const int want = a->n_chunks > 0 ? a->n_chunks : a->n_threads;
    if (tid < 0 || tid >= a->n_threads || n_chunks != want || chunk < 0 || chunk >= n_chunks) {
        atomic_fetch_add(&a->bad, 1);
        return;
    }
    if (atomic_exchange(&a->busy[tid], 1) != 0) atomic_fetch_add(&a->bad, 1);
    uint64_t *s = a->scratch[tid]; /* plain per-tid scratch: a shared tid is a TSan race */
    s[0] = a->job;
    uint32_t v = a->input[chunk] ^ a->job;
    /* uneven cost: some chunks much longer than others */
    int iters = (mix((uint32_t)chunk * 2654435761u ^ a->job) % 8 == 0) ? a->spin * 16 : a->spin;
    for (int i = 0; i < iters; i++) v = mix(v + (uint32_t)i);
    s[1] = v;
    a->out[chunk] = (uint32_t)(s[1] ^ s[0]);
    a->runs[chunk]++;
    atomic_store(&a->busy[tid], 0);
}

static uint32_t expect_out(const job_arg *a, int chunk) {
    uint32_t v = a->input[chunk] ^ a->job;
    int iters = (mix((uint32_t)chunk * 2654435761u ^ a->job) % 8 == 0) ? a->spin * 16 : a->spin;
    for (int i = 0; i < iters; i++) v = mix(v + (uint32_t)i);
    return v ^ a->job;
}

static void sleep_us(long us) {
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

/* Run n_jobs jobs with chunk counts drawn from `counts`, checking each. */
static int run_jobs(kvl_threadpool *tp, job_arg *a, uint32_t *input, int n_jobs, const int *counts, int n_counts,
                    unsigned seed, int pause_every) {
    int errors = 0;
    for (int j = 0; j < n_jobs; j++) {
        const int nc_arg = counts[(unsigned)(j + (int)seed) % (unsigned)n_counts];
        const int nc = nc_arg > 0 ? nc_arg : a->n_threads;
        a->job = mix(seed * 7919u + (unsigned)j);
        for (int i = 0; i < nc; i++) input[i] = mix(a->job + (unsigned)i); /* plain writes before run */
        memset(a->runs, 0, sizeof(int) * (size_t)nc);
        a->n_chunks = nc_arg;
        a->input = input;
        kvl_threadpool_run(tp, chunk_fn, a, nc_arg);
        for (int i = 0; i < nc; i++) {
            if (a->runs[i] != 1 || a->out[i] != expect_out(a, i)) {
                if (errors < 5)
                    fprintf(stderr, "job %d chunk %d/%d: ran %d times, out %08x want %08x\n", j, i, nc, a->runs[i],
                            a->out[i], expect_out(a, i));
                errors++;
            }
        }
        if (pause_every && j % pause_every == pause_every - 1) sleep_us(3000); /* workers go to sleep */
    }
    return errors;
}

/* ---- nested: chunk i of an outer job drives inner pool i ------------------------ */

typedef struct {
    kvl_threadpool *inner[4];
    job_arg *inner_arg[4];
    uint32_t *inner_input[4];
    int errors[4];
    int rounds;
} nest_arg;

static void nest_fn(void *a_, int chunk, int n_chunks, int tid) {
    nest_arg *a = a_;
    static const int counts[] = {0, 1, 3, 17, 64};
    (void)n_chunks;
    (void)tid;
    a->errors[chunk] += run_jobs(a->inner[chunk], a->inner_arg[chunk], a->inner_input[chunk], a->rounds, counts, 5,
                                 (unsigned)(chunk * 1000 + a->rounds), 0);
}

static job_arg *new_arg(int n_threads, int spin) {
    job_arg *a = calloc(1, sizeof *a);
    if (!a) exit(2);
    a->n_threads = n_threads;
    a->spin = spin;
    for (int t = 0; t < MAXT; t++) atomic_init(&a->busy[t], 0);
    atomic_init(&a->bad, 0);
    return a;
}

int main(void) {
    /* TSan makes everything ~10x slower: KVL_STRESS scales the job counts */
    const char *sc = getenv("KVL_STRESS");
    const double scale = sc && *sc ? atof(sc) : 1.0;
    uint32_t *input = malloc(sizeof(uint32_t) * MAXC);
    if (!input) return 2;

    /* 1. every pool size, chunk counts changing every job */
    static const int counts[] = {0, 1, 2, 3, 7, 8, 9, 13, 64, 100, 1000, MAXC};
    for (int n = 1; n <= MAXT; n++) {
        kvl_threadpool *tp = kvl_threadpool_create(n);
        CHECK(tp && kvl_threadpool_n(tp) == n);
        if (!tp) continue;
        job_arg *a = new_arg(n, 4);
        int jobs = (int)(1500 * scale);
        if (jobs < 24) jobs = 24;
        int errors = run_jobs(tp, a, input, jobs, counts, (int)(sizeof counts / sizeof counts[0]), (unsigned)n, 0);
        CHECK_MSG(errors == 0, "%d threads: %d chunk errors", n, errors);
        CHECK_MSG(atomic_load(&a->bad) == 0, "%d threads: %d bad tid/n_chunks/shared tid", n, atomic_load(&a->bad));
        /* 2. pauses between jobs: workers sleep on the condition variable and must wake */
        errors = run_jobs(tp, a, input, 24, counts, (int)(sizeof counts / sizeof counts[0]), 99u + (unsigned)n, 3);
        CHECK_MSG(errors == 0, "%d threads after sleeping: %d chunk errors", n, errors);
        free(a);
        kvl_threadpool_free(tp);
    }

    /* 3. create/free churn: freed right after a job, while workers still spin,
     * and right after create, before the workers started */
    for (int r = 0; r < (int)(200 * scale) + 10; r++) {
        const int n = 1 + r % 4;
        kvl_threadpool *tp = kvl_threadpool_create(n);
        CHECK(tp != NULL);
        if (!tp) continue;
        if (r % 3) {
            job_arg *a = new_arg(n, 1);
            static const int few[] = {0, 5};
            CHECK(run_jobs(tp, a, input, 1 + r % 3, few, 2, (unsigned)r, 0) == 0);
            CHECK(atomic_load(&a->bad) == 0);
            free(a);
        }
        kvl_threadpool_free(tp);
    }

    /* 4. nested: an outer pool of 2 whose chunks each drive their own inner
     * pool (run() called from a worker thread, pools independent) */
    {
        kvl_threadpool *outer = kvl_threadpool_create(2);
        nest_arg na;
        memset(&na, 0, sizeof na);
        na.rounds = (int)(100 * scale) + 5;
        for (int i = 0; i < 2; i++) {
            na.inner[i] = kvl_threadpool_create(2 + i);
            na.inner_arg[i] = new_arg(2 + i, 2);
            na.inner_input[i] = malloc(sizeof(uint32_t) * MAXC);
            CHECK(na.inner[i] && na.inner_input[i]);
        }
        if (outer && na.inner[0] && na.inner[1] && na.inner_input[0] && na.inner_input[1]) {
            for (int r = 0; r < 10; r++) kvl_threadpool_run(outer, nest_fn, &na, 2);
            for (int i = 0; i < 2; i++) {
                CHECK_MSG(na.errors[i] == 0, "nested pool %d: %d chunk errors", i, na.errors[i]);
                CHECK(atomic_load(&na.inner_arg[i]->bad) == 0);
            }
        }
        for (int i = 0; i < 2; i++) {
            kvl_threadpool_free(na.inner[i]);
            free(na.inner_arg[i]);
            free(na.inner_input[i]);
        }
        kvl_threadpool_free(outer);
    }

    /* 5. default size */
    kvl_threadpool *tp = kvl_threadpool_create(0);
    CHECK(tp && kvl_threadpool_n(tp) == kvl_n_cores());
    kvl_threadpool_free(tp);
    free(input);
    KVL_TEST_END();
}
