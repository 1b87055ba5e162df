/* Adaptive streaming over a real link (include/kvlite.h, "adaptive
 * streaming"): the encodings of a context's chunks are published to a
 * Redis store under "PREFIX:CHUNK:LEVEL" (text: "PREFIX:CHUNK:text"), and
 * a receiver fetches them one chunk at a time, choosing each chunk's
 * option with kvl_stream_choose from the throughput measured on the GETs
 * so far and the time actually spent, then hands the bytes to the caller
 * (which decodes or recomputes them, timed as the compute side). Fetch and
 * compute alternate (the serial time model). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/redis.h"
#include "kvlite.h"
#include "util/err.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static kvl_status key_of(char *buf, size_t cap, const char *prefix, int chunk, int level, kvl_err *e) {
    int n;
    if (level == KVL_STREAM_TEXT) n = snprintf(buf, cap, "%s:%d:text", prefix, chunk);
    else n = snprintf(buf, cap, "%s:%d:%d", prefix, chunk, level);
    if (n < 0 || (size_t)n >= cap) return kvl_err_set(e, KVL_ERR_ARG, "stream: key prefix too long");
    return KVL_OK;
}

static kvl_status args_ok(const char *prefix, int chunk, int level, kvl_err *e) {
    if (!prefix || !*prefix || strlen(prefix) > 128) return kvl_err_set(e, KVL_ERR_ARG, "stream: key prefix must be 1-128 bytes");
    if (chunk < 0 || chunk >= KVL_STREAM_MAX_CHUNKS || level < KVL_STREAM_TEXT || level >= KVL_STREAM_MAX_LEVELS)
        return kvl_err_set(e, KVL_ERR_ARG, "stream: chunk %d / level %d out of range", chunk, level);
    return KVL_OK;
}

kvl_status kvl_stream_ping(const char *url, char *err, size_t err_len) {
    kvl_err e;
    kvl_err_clear(&e);
    kvl_redis *r = NULL;
    kvl_status st = kvl_redis_create(url, NULL, &r, &e);
    if (!st) st = kvl_redis_ping(r, &e);
    kvl_redis_free(r);
    if (st && err && err_len) snprintf(err, err_len, "%s", e.msg);
    return st;
}

kvl_status kvl_stream_put(const char *url, const char *prefix, int chunk, int level, const void *data, size_t len,
                          char *err, size_t err_len) {
    kvl_err e;
    kvl_err_clear(&e);
    char key[192];
    kvl_redis *r = NULL;
    kvl_status st = args_ok(prefix, chunk, level, &e);
    if (!st) st = key_of(key, sizeof key, prefix, chunk, level, &e);
    if (!st) st = kvl_redis_create(url, NULL, &r, &e);
    if (!st) st = kvl_redis_set(r, key, data, len, &e);
    kvl_redis_free(r);
    if (st && err && err_len) snprintf(err, err_len, "%s", e.msg);
    return st;
}

kvl_status kvl_stream_fetch(const char *url, const char *prefix, const kvl_stream_profile *p, const kvl_stream_chunk *c,
                            int n, int mode, double slo_s, double *bw_state, kvl_stream_fetch_cb cb, void *user,
                            kvl_stream_result *res, char *err, size_t err_len) {
    kvl_err e;
    kvl_err_clear(&e);
    if (!res) return kvl_err_set(&e, KVL_ERR_ARG, "stream: bad arguments");
    memset(res, 0, sizeof *res);
    kvl_status st = kvl_stream_profile_check(p, mode, err, err_len);
    if (st) return st;
    if (!c || n < 0 || n > KVL_STREAM_MAX_CHUNKS || !cb || (st = args_ok(prefix, 0, 0, &e))) {
        if (!st) st = kvl_err_set(&e, KVL_ERR_ARG, "stream: bad arguments");
        goto out;
    }
    kvl_redis *r = NULL;
    /* a chunk over a slow link takes seconds: a command may run for a minute */
    const kvl_redis_params rp = {.connect_ms = 2000, .command_ms = 60000, .retry_ms = -1};
    if ((st = kvl_redis_create(url, &rp, &r, &e)) || (st = kvl_redis_ping(r, &e))) {
        kvl_redis_free(r);
        goto out;
    }
    kvl_stream_profile q = *p;
    q.serial = 1;
    double bw = bw_state && *bw_state > 0 ? *bw_state : p->bw_init_bps;
    const double t0 = now_s();
    double bytes = 0, wloss = 0;
    int tokens = 0;
    for (int i = 0; i < n && !st; i++) {
        const double t = now_s() - t0;
        const int ch = mode == KVL_STREAM_ADAPTIVE ? kvl_stream_choose(&q, c, i, n, bw, t, t, slo_s) : mode;
        char key[192];
        if ((st = key_of(key, sizeof key, prefix, i, ch, &e))) break;
        const uint8_t *val = NULL;
        size_t len = 0;
        void *hold = NULL;
        const double g0 = now_s();
        st = kvl_redis_get(r, key, &val, &len, &hold, &e);
        const double g1 = now_s();
        if (!st && !val) st = kvl_err_set(&e, KVL_ERR_IO, "stream: %s is not in the store", key);
        if (!st) {
            if (g1 > g0 && len > 0) bw = (double)len / (g1 - g0);
            bytes += (double)len;
            st = cb(user, i, ch, val, len);
            if (st) kvl_err_set(&e, st, "stream: chunk %d (%s): the receiver failed", i, key);
        }
        kvl_redis_release(hold);
        res->choice[i] = ch;
        if (ch == KVL_STREAM_TEXT) res->n_text++;
        wloss += (ch == KVL_STREAM_TEXT ? 0.0 : p->level_loss[ch]) * c[i].n_tokens;
        tokens += c[i].n_tokens;
        res->n_chunks = i + 1;
    }
    kvl_redis_free(r);
    res->ttft_s = now_s() - t0; /* the caller adds the question's prefill */
    res->bytes = bytes;
    res->loss = tokens ? wloss / tokens : 0;
    res->met = res->ttft_s <= slo_s;
    if (bw_state) *bw_state = bw;
out:
    if (st && err && err_len) snprintf(err, err_len, "%s", e.msg);
    return st;
}
