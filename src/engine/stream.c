/* Adaptive KV streaming (CacheGen, SIGCOMM 2024, section 5.3): a context is
 * fetched chunk by chunk over a link whose bandwidth varies; each chunk is
 * available at several encoding levels (smaller = lossier) or as text that
 * the receiver recomputes. For each chunk the planner picks the option of
 * best quality whose predicted completion of the whole request, with the
 * remaining chunks sent the same way, fits the time-to-first-token target,
 * using the throughput measured on the previous chunk and measured
 * decode / prefill speeds. This file is the planner and a deterministic
 * replay of a bandwidth trace (include/kvlite.h, "adaptive streaming");
 * the transfer itself is the caller's (kvlite eval stream).
 *
 * Time model (one link, one compute resource, both in order): a KV chunk
 * is on the link for rtt + bytes / bandwidth, then decoded on the compute
 * side (decode of chunk i may overlap the transfer of chunk i + 1); a text
 * chunk sends its token ids (4 bytes each) and is prefilled once the
 * chunks before it are in the cache. The question is prefilled last. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvlite.h"
#include "util/err.h"

static kvl_status fail(char *err, size_t cap, kvl_status st, const char *msg, long line) {
    if (err && cap) {
        if (line > 0) snprintf(err, cap, "bandwidth trace line %ld: %s", line, msg);
        else snprintf(err, cap, "%s", msg);
    }
    return st;
}

kvl_status kvl_stream_trace_parse(const char *text, size_t len, double step_s, double **mbps, int *n, char *err,
                                  size_t err_len) {
    *mbps = NULL;
    *n = 0;
    if (!(step_s > 0) || !isfinite(step_s)) return fail(err, err_len, KVL_ERR_ARG, "trace step must be > 0", 0);
    int cap = 0, cnt = 0;
    double *v = NULL;
    long line = 1;
    size_t i = 0;
    while (i < len) {
        size_t e = i;
        while (e < len && text[e] != '\n') e++;
        /* one line [i, e): blank or '#' comment, else one number */
        size_t a = i;
        while (a < e && (text[a] == ' ' || text[a] == '\t' || text[a] == '\r')) a++;
        if (a < e && text[a] != '#') {
            char buf[64];
            size_t b = e;
            while (b > a && (text[b - 1] == ' ' || text[b - 1] == '\t' || text[b - 1] == '\r')) b--;
            if (b - a >= sizeof buf) {
                free(v);
                return fail(err, err_len, KVL_ERR_FORMAT, "value too long", line);
            }
            memcpy(buf, text + a, b - a);
            buf[b - a] = 0;
            char *end = NULL;
            const double x = strtod(buf, &end);
            if (end == buf || *end || !isfinite(x) || x < 0 || x > 1e6) {
                free(v);
                return fail(err, err_len, KVL_ERR_FORMAT, "want one bandwidth in Mbit/s (0..1e6)", line);
            }
            if (cnt == cap) {
                if (cap >= (1 << 24)) {
                    free(v);
                    return fail(err, err_len, KVL_ERR_FORMAT, "trace longer than 2^24 samples", line);
                }
                cap = cap ? 2 * cap : 256;
                double *nv = realloc(v, sizeof *v * (size_t)cap);
                if (!nv) {
                    free(v);
                    return fail(err, err_len, KVL_ERR_NOMEM, "out of memory", 0);
                }
                v = nv;
            }
            v[cnt++] = x;
        }
        i = e + 1;
        line++;
    }
    if (cnt == 0) {
        free(v);
        return fail(err, err_len, KVL_ERR_FORMAT, "bandwidth trace has no samples", 0);
    }
    double sum = 0;
    for (int k = 0; k < cnt; k++) sum += v[k];
    if (!(sum > 0)) {
        free(v);
        return fail(err, err_len, KVL_ERR_FORMAT, "bandwidth trace is zero everywhere", 0);
    }
    *mbps = v;
    *n = cnt;
    return KVL_OK;
}

/* Bytes per second of sample k (the trace repeats). */
static double bw_at(const kvl_stream_trace *tr, long k) {
    return tr->mbps[((k % tr->n) + tr->n) % tr->n] * 1e6 / 8.0;
}

double kvl_stream_transfer_end(const kvl_stream_trace *tr, double t, double bytes) {
    if (!(bytes > 0)) return t;
    const double step = tr->step_s;
    long k = (long)floor(t / step);
    double left = bytes;
    /* the trace is not zero everywhere (parse checks), so a period moves >0 bytes */
    for (long guard = 0; guard < 100000000L; guard++, k++) {
        const double end = (double)(k + 1) * step;
        const double bw = bw_at(tr, k);
        const double span = end - t;
        if (bw * span >= left) return t + left / bw;
        left -= bw * span;
        t = end;
    }
    return INFINITY;
}

void kvl_stream_profile_default(kvl_stream_profile *p) {
    memset(p, 0, sizeof *p);
    p->rtt_s = 0.001;
    p->text_bytes_per_token = 4;
    p->bw_init_bps = 1e6; /* 8 Mbit/s until a transfer has been measured */
}

static int n_opts(const kvl_stream_profile *p) { return p->n_levels + 1; }

/* Option o: 0 = text, 1 + l = level l (0 = best level). Quality loss of an option. */
static double opt_loss(const kvl_stream_profile *p, int o) { return o == 0 ? 0.0 : p->level_loss[o - 1]; }

/* Predicted time, from state (link free at tl, compute free at tc), to load
 * chunks [i, n) all with option o at bandwidth bw, then the question. With
 * p->serial the receiver fetches and computes in turn (no overlap). */
static double predict(const kvl_stream_profile *p, const kvl_stream_chunk *c, int i, int n, int o, double bw,
                      double tl, double tc, double t_question) {
    for (int j = i; j < n; j++) {
        const double sz = o == 0 ? c[j].n_tokens * p->text_bytes_per_token : (double)c[j].bytes[o - 1];
        const double work = o == 0 ? c[j].n_tokens / p->prefill_tok_per_s : c[j].n_tokens / p->decode_tok_per_s[o - 1];
        if (p->serial) tl = tc = (tl > tc ? tl : tc) + p->rtt_s + sz / bw + work;
        else {
            const double arr = tl + p->rtt_s + sz / bw;
            tl = arr;
            tc = (arr > tc ? arr : tc) + work;
        }
    }
    return (tl > tc ? tl : tc) + t_question;
}

int kvl_stream_choose(const kvl_stream_profile *p, const kvl_stream_chunk *c, int i, int n, double bw, double t_link,
                      double t_compute, double deadline) {
    const double t_question = p->question_tokens / p->prefill_tok_per_s;
    int best = -1, fastest = 0;
    double fast_t = INFINITY, best_loss = INFINITY;
    for (int k = 0; k < n_opts(p); k++) {
        const double t = predict(p, c, i, n, k, bw, t_link, t_compute, t_question);
        if (t < fast_t) {
            fast_t = t;
            fastest = k;
        }
        if (t <= deadline && opt_loss(p, k) < best_loss) {
            best_loss = opt_loss(p, k);
            best = k;
        }
    }
    const int o = best >= 0 ? best : fastest;
    return o == 0 ? KVL_STREAM_TEXT : o - 1;
}

kvl_status kvl_stream_profile_check(const kvl_stream_profile *p, int mode, char *err, size_t err_len) {
    if (!p || p->n_levels < 0 || p->n_levels > KVL_STREAM_MAX_LEVELS)
        return fail(err, err_len, KVL_ERR_ARG, "stream: n_levels out of range", 0);
    if (!(p->prefill_tok_per_s > 0) || !(p->text_bytes_per_token >= 0) || !(p->rtt_s >= 0))
        return fail(err, err_len, KVL_ERR_ARG, "stream: profile needs prefill speed > 0, rtt >= 0", 0);
    for (int l = 0; l < p->n_levels; l++)
        if (!(p->decode_tok_per_s[l] > 0) || !(p->level_loss[l] >= 0))
            return fail(err, err_len, KVL_ERR_ARG, "stream: every level needs decode speed > 0, loss >= 0", 0);
    if (mode < KVL_STREAM_ADAPTIVE || mode >= p->n_levels)
        return fail(err, err_len, KVL_ERR_ARG, "stream: mode is ADAPTIVE, TEXT or a level", 0);
    return KVL_OK;
}

kvl_status kvl_stream_run(const kvl_stream_profile *p, const kvl_stream_chunk *c, int n, const kvl_stream_trace *tr,
                          double t0, int mode, double slo_s, double *bw_state, kvl_stream_result *res, char *err,
                          size_t err_len) {
    if (!res) return fail(err, err_len, KVL_ERR_ARG, "stream: bad arguments", 0);
    memset(res, 0, sizeof *res);
    if (!p || !c || !tr || n < 0 || n > KVL_STREAM_MAX_CHUNKS)
        return fail(err, err_len, KVL_ERR_ARG, "stream: bad arguments (at most KVL_STREAM_MAX_CHUNKS chunks)", 0);
    kvl_status st = kvl_stream_profile_check(p, mode, err, err_len);
    if (st) return st;
    if (!tr->mbps || tr->n <= 0 || !(tr->step_s > 0)) return fail(err, err_len, KVL_ERR_ARG, "stream: empty trace", 0);
    double bw = bw_state && *bw_state > 0 ? *bw_state : p->bw_init_bps;
    double tl = t0, tc = t0, bytes = 0, wloss = 0;
    int tokens = 0;
    const double t_question = p->question_tokens / p->prefill_tok_per_s;
    for (int i = 0; i < n; i++) {
        const int ch = mode == KVL_STREAM_ADAPTIVE ? kvl_stream_choose(p, c, i, n, bw, tl, tc, t0 + slo_s) : mode;
        const int o = ch == KVL_STREAM_TEXT ? 0 : ch + 1;
        /* the real transfer of chunk i over the trace */
        const double sz = o == 0 ? c[i].n_tokens * p->text_bytes_per_token : (double)c[i].bytes[o - 1];
        const double work = o == 0 ? c[i].n_tokens / p->prefill_tok_per_s : c[i].n_tokens / p->decode_tok_per_s[o - 1];
        const double start = (p->serial ? (tl > tc ? tl : tc) : tl) + p->rtt_s;
        const double arr = kvl_stream_transfer_end(tr, start, sz);
        if (arr > start && sz > 0) bw = sz / (arr - start); /* measured throughput: the next estimate */
        if (p->serial) tl = tc = arr + work;
        else {
            tl = arr;
            tc = (arr > tc ? arr : tc) + work;
        }
        res->choice[i] = ch;
        bytes += sz;
        wloss += opt_loss(p, o) * c[i].n_tokens;
        tokens += c[i].n_tokens;
        if (o == 0) res->n_text++;
    }
    res->n_chunks = n;
    res->ttft_s = (tl > tc ? tl : tc) + t_question - t0;
    res->bytes = bytes;
    res->loss = tokens ? wloss / tokens : 0;
    res->met = res->ttft_s <= slo_s;
    if (bw_state) *bw_state = bw;
    return KVL_OK;
}
