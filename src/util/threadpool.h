/* A fixed pool of worker threads that run one parallel job at a time:
 * fn(arg, ith, nth) on every thread (the caller is thread 0), then return.
 * Workers spin briefly between jobs (decode dispatches hundreds of small jobs
 * per token) and then sleep on a condition variable. */
#ifndef KVL_UTIL_THREADPOOL_H
#define KVL_UTIL_THREADPOOL_H

typedef struct kvl_threadpool kvl_threadpool;
typedef void (*kvl_task_fn)(void *arg, int ith, int nth);

/* n_threads <= 0 means all online cores. Returns NULL on allocation failure. */
kvl_threadpool *kvl_threadpool_create(int n_threads);
void kvl_threadpool_free(kvl_threadpool *tp);
int kvl_threadpool_n(const kvl_threadpool *tp);
/* Run fn on all threads and wait for all to finish. Not reentrant. */
void kvl_threadpool_run(kvl_threadpool *tp, kvl_task_fn fn, void *arg);
/* Number of online CPU cores (>= 1). */
int kvl_n_cores(void);

/* Split [0, n) evenly: this thread's half-open range. */
static inline void kvl_split(long n, int ith, int nth, long *lo, long *hi) {
    long per = n / nth, rem = n % nth;
    *lo = ith * per + (ith < rem ? ith : rem);
    *hi = *lo + per + (ith < rem ? 1 : 0);
}

#endif
