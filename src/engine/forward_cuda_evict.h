/* Eviction policies on the CUDA device (forward_cuda_evict.c): the engine
 * side. Internal to src/engine (and the device tests). */
#ifndef KVL_ENGINE_FORWARD_CUDA_EVICT_H
#define KVL_ENGINE_FORWARD_CUDA_EVICT_H

#include "engine/engine.h"

struct kvl_cuda_lm;
typedef struct kvl_cuda_evict kvl_cuda_evict;

/* What eviction cost a sequence on the device (tests, benchmarks). */
typedef struct kvl_cuda_evict_stats {
    int64_t calls;        /* forward calls replayed on the mirror table */
    int64_t events;       /* calls that evicted (one compaction each) */
    double event_ms;      /* host wall time of those calls' replay + compaction (statistics downloads included) */
    double quiet_ms;      /* the same for the calls that evicted nothing (bookkeeping per call) */
    int64_t pages_now;    /* device pages holding rows (sum of ceil(rows / P) over the lists) */
    int64_t pages_peak;   /* the most seen after a call's appends (before its eviction) */
    int64_t pages_before; /* before the last event's compaction */
    int64_t bytes_down;   /* statistics bytes downloaded */
    int list_rows;        /* rows each device list holds (the pool's size per list) */
} kvl_cuda_evict_stats;

/* With an evicting policy: the rows each device list needs (0 = n_ctx) and
 * the statistics; the lm is created with list_rows, then
 * kvl_engine_cuda_evict_create enables eviction on it. */
int kvl_engine_cuda_evict_list_rows(const kvl_ctx *c, int max_batch);
kvl_status kvl_engine_cuda_evict_create(kvl_ctx *c, struct kvl_cuda_lm *lm, int n_slots, kvl_cuda_evict **out,
                                        kvl_err *err);
void kvl_engine_cuda_evict_free(kvl_cuda_evict *e);
/* A new sequence in slot. */
kvl_status kvl_engine_cuda_evict_slot(kvl_cuda_evict *e, int slot, kvl_err *err);
/* Before a device batch of entries [off, off + nc) of an engine call of n tokens. */
void kvl_engine_cuda_evict_batch(kvl_cuda_evict *e, kvl_seq *s, int n, int off, int nc);
/* After the engine call's device batches: the CPU's per-layer policy hooks
 * replayed on s->t (the mirror), then the drops repeated on the device. */
kvl_status kvl_engine_cuda_evict_after(kvl_cuda_evict *e, kvl_seq *s, int pos0, int n, kvl_err *err);
/* Tests: every layer's device statistics of s's slot into the rows of
 * s->t (the mirror table), as an eviction event's fetch would. */
kvl_status kvl_engine_cuda_evict_fetch(kvl_cuda_evict *e, kvl_seq *s, kvl_err *err);
/* The same through s's context (KVL_ERR_UNSUPPORTED without device eviction). */
kvl_status kvl_engine_cuda_evict_fetch_stats(kvl_seq *s);
/* Statistics of slot's sequence. */
void kvl_engine_cuda_evict_get(const kvl_cuda_evict *e, int slot, kvl_cuda_evict_stats *out);
/* Statistics of s (zeros without eviction; forward_cuda.c). */
void kvl_engine_cuda_evict_stats(const kvl_seq *s, kvl_cuda_evict_stats *out);

#endif
