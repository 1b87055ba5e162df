/* The CacheBlend disk tier's layer reader (engine/blend.h): one I/O thread
 * per kvl_prefill_blend call streams the rows of the prompt's disk-tier
 * chunks layer by layer (pread of each version-2 file's layer range into
 * the chunk's rows, then that layer's CRC32C and finiteness checked) while
 * the blended pass computes; a mutex/condvar counter "layers ready" tells
 * the pass when layer l of every chunk may be used. Serial mode reads the
 * same ranges in the calling thread before the pass. An optional rate cap
 * (MB/s) sleeps the reader to emulate a slower (network) tier. Chunks of
 * the Redis tier (blend_redis.c) stream the same way, one GET per layer on
 * the reader's own connection (a handle is used by one thread). A chunk
 * reaches the RAM tier only after every layer of it was verified. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/blend.h"
#include "engine/redis.h"

typedef struct pend {
    kvl_blend_chunk *ch;
    kvl_blend_head h;
    uint32_t *crc; /* [n_layer] */
    int fd;        /* disk tier, or -1 */
    char *path;    /* the file, or the Redis head key (layer l: "path:l") */
    int redis;     /* rows from Redis */
} pend;

struct kvl_blend_reader {
    kvl_blend *b;
    int pipeline;
    double mbps;
    pend *p;
    int n, cap, n_layer;
    kvl_redis *rr; /* the reader's own Redis connection (Redis-tier chunks) */
    pthread_t th;
    int started; /* the thread runs (pipelined) */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int ready;   /* layers read and verified in every chunk (mu) */
    int failed;  /* err holds the failure (mu) */
    int stop;    /* the caller gives up: the thread ends early (mu) */
    kvl_err err; /* the reader's error (written before failed is set) */
    double ms_busy, ms_wait;
    int64_t bytes;
};

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static void sleep_ms(double ms) {
    if (ms <= 0) return;
    struct timespec ts = {.tv_sec = (time_t)(ms / 1e3), .tv_nsec = (long)((ms - 1e3 * (double)(time_t)(ms / 1e3)) * 1e6)};
    while (nanosleep(&ts, &ts) && errno == EINTR) {
    }
}

kvl_status kvl_blend_reader_new(kvl_blend *b, int pipeline, double read_mbps, kvl_blend_reader **out, kvl_err *err) {
    *out = NULL;
    kvl_blend_reader *rd = calloc(1, sizeof *rd);
    if (!rd) return kvl_err_set(err, KVL_ERR_NOMEM, "blend: out of memory for the reader");
    rd->b = b;
    rd->pipeline = pipeline != 0;
    rd->mbps = read_mbps > 0 ? read_mbps : 0;
    rd->n_layer = b->x.n_layer;
    if (pthread_mutex_init(&rd->mu, NULL)) {
        free(rd);
        return kvl_err_set(err, KVL_ERR_NOMEM, "blend: cannot create the reader's mutex");
    }
    if (pthread_cond_init(&rd->cv, NULL)) {
        pthread_mutex_destroy(&rd->mu);
        free(rd);
        return kvl_err_set(err, KVL_ERR_NOMEM, "blend: cannot create the reader's condition variable");
    }
    kvl_err_clear(&rd->err);
    *out = rd;
    return KVL_OK;
}

int kvl_blend_reader_count(const kvl_blend_reader *rd) { return rd ? rd->n : 0; }

kvl_blend_chunk *kvl_blend_reader_find(const kvl_blend_reader *rd, uint64_t key, const kvl_token *toks, int n) {
    for (int i = 0; rd && i < rd->n; i++) {
        const kvl_blend_chunk *ch = rd->p[i].ch;
        if (ch->key == key && ch->n == n && !memcmp(ch->toks, toks, sizeof(kvl_token) * (size_t)n)) return rd->p[i].ch;
    }
    return NULL;
}

static kvl_status add(kvl_blend_reader *rd, kvl_blend_chunk *ch, const kvl_blend_head *h, const uint32_t *layer_crc,
                      int fd, const char *path, int redis, kvl_err *err) {
    if (rd->started) return kvl_err_set(err, KVL_ERR_ARG, "blend: reader already started");
    if (h->n_layer != rd->n_layer) return kvl_err_set(err, KVL_ERR_ARG, "blend: reader: %d layers, %d expected", h->n_layer, rd->n_layer);
    if (rd->n == rd->cap) {
        const int cap = rd->cap ? 2 * rd->cap : 8;
        pend *p = realloc(rd->p, sizeof *p * (size_t)cap);
        if (!p) return kvl_err_set(err, KVL_ERR_NOMEM, "blend: out of memory for the reader");
        rd->p = p;
        rd->cap = cap;
    }
    pend *e = &rd->p[rd->n];
    e->crc = malloc(sizeof(uint32_t) * (size_t)h->n_layer);
    e->path = strdup(path);
    if (!e->crc || !e->path) {
        free(e->crc);
        free(e->path);
        return kvl_err_set(err, KVL_ERR_NOMEM, "blend: out of memory for the reader");
    }
    memcpy(e->crc, layer_crc, sizeof(uint32_t) * (size_t)h->n_layer);
    e->ch = ch;
    e->h = *h;
    e->fd = fd;
    e->redis = redis;
    rd->n++;
    return KVL_OK;
}

kvl_status kvl_blend_reader_add(kvl_blend_reader *rd, kvl_blend_chunk *ch, const kvl_blend_head *h,
                                const uint32_t *layer_crc, int fd, const char *path, kvl_err *err) {
    return add(rd, ch, h, layer_crc, fd, path, 0, err);
}

kvl_status kvl_blend_reader_add_redis(kvl_blend_reader *rd, kvl_blend_chunk *ch, const kvl_blend_head *h,
                                      const uint32_t *layer_crc, const char *rkey, kvl_err *err) {
    if (!rd->b->url) return kvl_err_set(err, KVL_ERR_ARG, "blend: reader: the store has no Redis tier");
    if (!rd->rr) {
        kvl_redis_params rp = {.connect_ms = 500, .command_ms = 2000, .retry_ms = -1};
        kvl_status st = kvl_redis_create(rd->b->url, &rp, &rd->rr, err);
        if (st) return st;
    }
    return add(rd, ch, h, layer_crc, -1, rkey, 1, err);
}

/* Layer l of a Redis-tier chunk e into dst [lb]: *got bytes. */
static kvl_status get_layer(kvl_blend_reader *rd, pend *e, int l, uint8_t *dst, size_t lb, size_t *got) {
    char k[96];
    snprintf(k, sizeof k, "%s:%d", e->path, l);
    const uint8_t *v = NULL;
    size_t len = 0;
    void *hold = NULL;
    kvl_err re;
    kvl_err_clear(&re);
    *got = 0;
    if (kvl_redis_get(rd->rr, k, &v, &len, &hold, &re))
        return kvl_err_set(&rd->err, KVL_ERR_IO, "blend: Redis %s: layer %d of %d: %s", k, l, e->h.n_layer, re.msg);
    if (!v) return kvl_err_set(&rd->err, KVL_ERR_FORMAT, "blend: Redis %s: layer %d of %d missing", k, l, e->h.n_layer);
    if (len != lb) {
        kvl_redis_release(hold);
        return kvl_err_set(&rd->err, KVL_ERR_FORMAT, "blend: Redis %s: layer %d of %d: %zu bytes, %zu expected", k, l,
                           e->h.n_layer, len, lb);
    }
    memcpy(dst, v, len);
    *got = len;
    kvl_redis_release(hold);
    return KVL_OK;
}

/* Layer l of a disk-tier chunk e into dst [lb]: *got bytes (short at end of file). */
static kvl_status pread_layer(kvl_blend_reader *rd, pend *e, int l, uint8_t *dst, size_t lb, size_t *got) {
    const off_t off = (off_t)(e->h.head_len + (size_t)l * lb);
    *got = 0;
    while (*got < lb) {
        const ssize_t r = pread(e->fd, dst + *got, lb - *got, off + (off_t)*got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0)
            return kvl_err_set(&rd->err, KVL_ERR_IO, "blend: %s: layer %d of %d: read error: %s", e->path, l, e->h.n_layer,
                               strerror(errno));
        if (r == 0) break;
        *got += (size_t)r;
    }
    return KVL_OK;
}

/* Read and verify layer l of chunk e into its rows; an error into rd->err. */
static kvl_status read_layer(kvl_blend_reader *rd, pend *e, int l) {
    const size_t lb = e->h.layer_bytes;
    uint8_t *dst = e->ch->rows + (size_t)l * lb;
    size_t got = 0;
    kvl_status st = e->redis ? get_layer(rd, e, l, dst, lb, &got) : pread_layer(rd, e, l, dst, lb, &got);
    if (st) return st;
    kvl_err ce;
    kvl_err_clear(&ce);
    if ((st = kvl_blend_layer_check(&e->h, e->crc, l, dst, got, &ce)))
        return kvl_err_set(&rd->err, st, "blend: %s%s: %s", e->redis ? "Redis " : "", e->path,
                           ce.msg + (strncmp(ce.msg, "blend chunk: ", 13) ? 0 : 13));
    rd->bytes += (int64_t)got;
    return KVL_OK;
}

/* Every layer of every chunk in order, publishing each layer when all
 * chunks have it. Runs on the I/O thread (pipelined) or the caller's. */
static void read_all(kvl_blend_reader *rd) {
    const double t0 = now_ms();
    int64_t bytes0 = 0;
    for (int l = 0; l < rd->n_layer; l++) {
        kvl_status st = KVL_OK;
        for (int i = 0; i < rd->n && !st; i++) {
            pthread_mutex_lock(&rd->mu);
            const int stop = rd->stop;
            pthread_mutex_unlock(&rd->mu);
            if (stop) {
                rd->ms_busy = now_ms() - t0;
                return;
            }
            st = read_layer(rd, &rd->p[i], l);
            if (!st && rd->mbps > 0) { /* the emulated link: bytes so far at mbps */
                bytes0 = rd->bytes;
                sleep_ms(t0 + (double)bytes0 / (rd->mbps * 1e3) - now_ms());
            }
        }
        pthread_mutex_lock(&rd->mu);
        if (st) rd->failed = 1;
        else rd->ready = l + 1;
        rd->ms_busy = now_ms() - t0;
        pthread_cond_broadcast(&rd->cv);
        pthread_mutex_unlock(&rd->mu);
        if (st) return;
    }
}

static void *reader_main(void *arg) {
    read_all(arg);
    return NULL;
}

kvl_status kvl_blend_reader_start(kvl_blend_reader *rd, kvl_err *err) {
    if (!rd->n) return KVL_OK;
    if (rd->pipeline) {
        if (pthread_create(&rd->th, NULL, reader_main, rd))
            return kvl_err_set(err, KVL_ERR_NOMEM, "blend: cannot start the reader thread");
        rd->started = 1;
        return KVL_OK;
    }
    read_all(rd);
    if (rd->failed) {
        *err = rd->err;
        return rd->err.status;
    }
    return KVL_OK;
}

kvl_status kvl_blend_reader_wait(kvl_blend_reader *rd, int layer, kvl_err *err) {
    if (!rd || !rd->n) return KVL_OK;
    kvl_status st = KVL_OK;
    pthread_mutex_lock(&rd->mu);
    if (!rd->failed && rd->ready <= layer) {
        const double t0 = now_ms();
        while (!rd->failed && rd->ready <= layer) pthread_cond_wait(&rd->cv, &rd->mu);
        rd->ms_wait += now_ms() - t0;
    }
    if (rd->failed) {
        *err = rd->err;
        st = rd->err.status ? rd->err.status : KVL_ERR_IO;
    }
    pthread_mutex_unlock(&rd->mu);
    return st;
}

void kvl_blend_reader_free(kvl_blend_reader *rd, int keep, kvl_blend_reader_stats *st) {
    if (!rd) return;
    if (rd->started) {
        pthread_mutex_lock(&rd->mu);
        rd->stop = 1;
        pthread_mutex_unlock(&rd->mu);
        pthread_join(rd->th, NULL);
        rd->started = 0;
    }
    if (st) *st = (kvl_blend_reader_stats){.ms_busy = rd->ms_busy, .ms_wait = rd->ms_wait, .bytes = rd->bytes};
    const int all = !rd->failed && rd->ready == rd->n_layer;
    for (int i = 0; i < rd->n; i++) {
        if (keep && all) kvl_blend_keep(rd->b, rd->p[i].ch);
        else kvl_blend_chunk_free(rd->p[i].ch);
        if (rd->p[i].fd >= 0) close(rd->p[i].fd);
        free(rd->p[i].crc);
        free(rd->p[i].path);
    }
    free(rd->p);
    kvl_redis_free(rd->rr);
    pthread_cond_destroy(&rd->cv);
    pthread_mutex_destroy(&rd->mu);
    free(rd);
}
