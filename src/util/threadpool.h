/* A fixed pool of worker threads that run one parallel job at a time. A job
 * is split into n_chunks chunks that threads grab dynamically (the caller is
 * thread 0 and works too), so a thread that the OS deschedules on a busy
 * machine delays the job by at most one chunk instead of a whole share.
 * Workers spin briefly between jobs (decode dispatches hundreds of small jobs
 * per token), then yield, then sleep on a condition variable. */
#ifndef KVL_UTIL_THREADPOOL_H
#define KVL_UTIL_THREADPOOL_H

typedef struct kvl_threadpool kvl_threadpool;
/* Runs chunk `chunk` of `n_chunks`; tid (0..n_threads-1) identifies the
 * executing thread, e.g. to pick its scratch buffer. */
typedef void (*kvl_task_fn)(void *arg, int chunk, int n_chunks, int tid);

/* n_threads <= 0 means all online cores. Returns NULL on allocation failure. */
kvl_threadpool *kvl_threadpool_create(int n_threads);
void kvl_threadpool_free(kvl_threadpool *tp);
int kvl_threadpool_n(const kvl_threadpool *tp);
/* Run fn once for every chunk 0..n_chunks-1 (n_chunks <= 0: one per thread)
 * and return when all have finished. Not reentrant. */
void kvl_threadpool_run(kvl_threadpool *tp, kvl_task_fn fn, void *arg, int n_chunks);
/* Number of online CPU cores (>= 1). */
int kvl_n_cores(void);

/* Split [0, n) evenly: part ith of nth as a half-open range. */
static inline void kvl_split(long n, int ith, int nth, long *lo, long *hi) {
    long per = n / nth, rem = n % nth;
    *lo = ith * per + (ith < rem ? ith : rem);
    *hi = *lo + per + (ith < rem ? 1 : 0);
}

#endif
