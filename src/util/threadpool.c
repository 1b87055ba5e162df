/* Thread pool: generation counter + spin-then-sleep workers. */
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

struct kvl_threadpool {
    int n;
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_uint gen;      /* incremented for each job */
    atomic_int pending;   /* workers still running the current job */
    atomic_int stop;
    atomic_int sleepers;
    kvl_task_fn fn;
    void *arg;
};

typedef struct {
    kvl_threadpool *tp;
    int ith;
} kvl_worker;

static kvl_worker *workers_of(kvl_threadpool *tp);

static void *worker_main(void *p) {
    kvl_worker *w = p;
    kvl_threadpool *tp = w->tp;
    unsigned seen = 0;
    for (;;) {
        unsigned g;
        int spins = 0;
        while ((g = atomic_load_explicit(&tp->gen, memory_order_acquire)) == seen &&
               !atomic_load(&tp->stop)) {
            if (++spins < 4000) {
                KVL_PAUSE();
                continue;
            }
            if (spins < 4200) { /* give the core away if the machine is oversubscribed */
                sched_yield();
                continue;
            }
            pthread_mutex_lock(&tp->mu);
            atomic_fetch_add(&tp->sleepers, 1);
            while (atomic_load(&tp->gen) == seen && !atomic_load(&tp->stop))
                pthread_cond_wait(&tp->cv, &tp->mu);
            atomic_fetch_sub(&tp->sleepers, 1);
            pthread_mutex_unlock(&tp->mu);
        }
        if (atomic_load(&tp->stop)) break;
        seen = g;
        tp->fn(tp->arg, w->ith, tp->n);
        atomic_fetch_sub_explicit(&tp->pending, 1, memory_order_acq_rel);
    }
    return NULL;
}

int kvl_n_cores(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (int)n;
}

kvl_threadpool *kvl_threadpool_create(int n_threads) {
    if (n_threads <= 0) n_threads = kvl_n_cores();
    kvl_threadpool *tp = calloc(1, sizeof *tp + sizeof(kvl_worker) * (size_t)n_threads);
    if (!tp) return NULL;
    tp->n = n_threads;
    pthread_mutex_init(&tp->mu, NULL);
    pthread_cond_init(&tp->cv, NULL);
    atomic_init(&tp->gen, 0);
    atomic_init(&tp->pending, 0);
    atomic_init(&tp->stop, 0);
    atomic_init(&tp->sleepers, 0);
    tp->threads = calloc((size_t)n_threads, sizeof(pthread_t));
    if (!tp->threads) {
        free(tp);
        return NULL;
    }
    kvl_worker *ws = workers_of(tp);
    for (int i = 1; i < n_threads; i++) {
        ws[i].tp = tp;
        ws[i].ith = i;
        if (pthread_create(&tp->threads[i], NULL, worker_main, &ws[i]) != 0) {
            tp->n = i; /* run with the threads we got */
            break;
        }
    }
    return tp;
}

static kvl_worker *workers_of(kvl_threadpool *tp) { return (kvl_worker *)(tp + 1); }

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
    free(tp);
}

int kvl_threadpool_n(const kvl_threadpool *tp) { return tp->n; }

void kvl_threadpool_run(kvl_threadpool *tp, kvl_task_fn fn, void *arg) {
    if (tp->n == 1) {
        fn(arg, 0, 1);
        return;
    }
    tp->fn = fn;
    tp->arg = arg;
    atomic_store_explicit(&tp->pending, tp->n - 1, memory_order_release);
    atomic_fetch_add_explicit(&tp->gen, 1, memory_order_acq_rel);
    if (atomic_load(&tp->sleepers) > 0) {
        pthread_mutex_lock(&tp->mu);
        pthread_cond_broadcast(&tp->cv);
        pthread_mutex_unlock(&tp->mu);
    }
    fn(arg, 0, tp->n);
    int spins = 0;
    while (atomic_load_explicit(&tp->pending, memory_order_acquire) > 0) {
        if (++spins < 2000) KVL_PAUSE();
        else sched_yield(); /* a worker is descheduled: don't burn its core */
    }
}
