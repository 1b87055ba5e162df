/* Thread pool with dynamic chunk scheduling.
 *
 * Protocol: `gen` is even while a job is published and odd while the caller
 * rewrites the job fields. A worker announces itself in `users`, then
 * re-checks `gen`; the caller, after making `gen` odd, waits for `users` to
 * drain before writing. Both sides use sequentially consistent atomics, so a
 * worker either sees the odd generation and backs off, or the caller sees the
 * worker and waits for it: a worker never reads half-written job fields. A
 * job is complete when all its chunks are done; workers that arrive late find
 * no chunk left. */
#define _GNU_SOURCE
#include "util/threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define KVL_PAUSE() _mm_pause()
#else
#define KVL_PAUSE() ((void)0)
#endif

typedef struct {
    struct kvl_threadpool *tp;
    int tid;
} kvl_worker;

struct kvl_threadpool {
    int n;
    pthread_t *threads;
    kvl_worker *workers;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_uint gen;
    atomic_int users;
    atomic_int stop;
    atomic_int sleepers;
    /* the current job (written only while gen is odd and users == 0) */
    kvl_task_fn fn;
    void *arg;
    int n_chunks;
    atomic_int next; /* next chunk to grab */
    atomic_int done; /* chunks finished */
};

/* Grab and run chunks until none is left. */
static void work(kvl_threadpool *tp, kvl_task_fn fn, void *arg, int nc, int tid) {
    for (;;) {
        const int i = atomic_fetch_add_explicit(&tp->next, 1, memory_order_relaxed);
        if (i >= nc) return;
        fn(arg, i, nc, tid);
        atomic_fetch_add_explicit(&tp->done, 1, memory_order_release);
    }
}

static void *worker_main(void *p) {
    kvl_worker *w = p;
    kvl_threadpool *tp = w->tp;
    unsigned seen = 0;
    for (;;) {
        unsigned g;
        int spins = 0;
        while (((g = atomic_load(&tp->gen)) == seen || (g & 1)) && !atomic_load(&tp->stop)) {
            if (++spins < 4000) {
                KVL_PAUSE();
            } else if (spins < 4200) {
                sched_yield(); /* give the core away if the machine is oversubscribed */
            } else {
                pthread_mutex_lock(&tp->mu);
                atomic_fetch_add(&tp->sleepers, 1);
                while (((g = atomic_load(&tp->gen)) == seen || (g & 1)) && !atomic_load(&tp->stop))
                    pthread_cond_wait(&tp->cv, &tp->mu);
                atomic_fetch_sub(&tp->sleepers, 1);
                pthread_mutex_unlock(&tp->mu);
                spins = 0;
            }
        }
        if (atomic_load(&tp->stop)) break;
        atomic_fetch_add(&tp->users, 1);
        if (atomic_load(&tp->gen) != g) { /* the caller is rewriting the job: retry */
            atomic_fetch_sub(&tp->users, 1);
            continue;
        }
        seen = g;
        work(tp, tp->fn, tp->arg, tp->n_chunks, w->tid);
        atomic_fetch_sub(&tp->users, 1);
    }
    return NULL;
}

int kvl_n_cores(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (int)n;
}

kvl_threadpool *kvl_threadpool_create(int n_threads) {
    if (n_threads <= 0) n_threads = kvl_n_cores();
    kvl_threadpool *tp = calloc(1, sizeof *tp);
    if (!tp) return NULL;
    tp->n = n_threads;
    pthread_mutex_init(&tp->mu, NULL);
    pthread_cond_init(&tp->cv, NULL);
    atomic_init(&tp->gen, 0);
    atomic_init(&tp->users, 0);
    atomic_init(&tp->stop, 0);
    atomic_init(&tp->sleepers, 0);
    atomic_init(&tp->next, 0);
    atomic_init(&tp->done, 0);
    tp->threads = calloc((size_t)n_threads, sizeof(pthread_t));
    tp->workers = calloc((size_t)n_threads, sizeof(kvl_worker));
    if (!tp->threads || !tp->workers) {
        free(tp->threads);
        free(tp->workers);
        free(tp);
        return NULL;
    }
    for (int i = 1; i < n_threads; i++) {
        tp->workers[i].tp = tp;
        tp->workers[i].tid = i;
        if (pthread_create(&tp->threads[i], NULL, worker_main, &tp->workers[i]) != 0) {
            tp->n = i; /* run with the threads we got */
            break;
        }
    }
    return tp;
}

void kvl_threadpool_free(kvl_threadpool *tp) {
    if (!tp) return;
    pthread_mutex_lock(&tp->mu);
    atomic_store(&tp->stop, 1);
    pthread_cond_broadcast(&tp->cv);
    pthread_mutex_unlock(&tp->mu);
    for (int i = 1; i < tp->n; i++) pthread_join(tp->threads[i], NULL);
    pthread_mutex_destroy(&tp->mu);
    pthread_cond_destroy(&tp->cv);
    free(tp->threads);
    free(tp->workers);
    free(tp);
}

int kvl_threadpool_n(const kvl_threadpool *tp) { return tp->n; }

static void wait_zero(atomic_int *v) {
    int spins = 0;
    while (atomic_load(v) != 0) {
        if (++spins < 2000) KVL_PAUSE();
        else sched_yield();
    }
}

void kvl_threadpool_run(kvl_threadpool *tp, kvl_task_fn fn, void *arg, int n_chunks) {
    if (n_chunks <= 0) n_chunks = tp->n;
    if (tp->n == 1) {
        for (int i = 0; i < n_chunks; i++) fn(arg, i, n_chunks, 0);
        return;
    }
    const unsigned g = atomic_load(&tp->gen);
    atomic_store(&tp->gen, g + 1); /* odd: job fields being rewritten */
    wait_zero(&tp->users);
    tp->fn = fn;
    tp->arg = arg;
    tp->n_chunks = n_chunks;
    atomic_store(&tp->next, 0);
    atomic_store(&tp->done, 0);
    atomic_store(&tp->gen, g + 2); /* even: published */
    if (atomic_load(&tp->sleepers) > 0) {
        pthread_mutex_lock(&tp->mu);
        pthread_cond_broadcast(&tp->cv);
        pthread_mutex_unlock(&tp->mu);
    }
    work(tp, fn, arg, n_chunks, 0);
    int spins = 0;
    while (atomic_load_explicit(&tp->done, memory_order_acquire) < n_chunks) {
        if (++spins < 2000) KVL_PAUSE();
        else sched_yield(); /* a worker holding a chunk is descheduled */
    }
}
