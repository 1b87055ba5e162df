/* `kvlite eval stream`: adaptive KV streaming (CacheGen's bandwidth
 * adaptation) measured on a real model. The first --prefix tokens of a text
 * are the context, cut into 256-token chunks, each encoded at every
 * CacheGen level (kvl_seq_save_cachegen_chunk); the next --cont tokens are
 * the request (its first 32 tokens the question, prefilled for the first
 * token). Measured here, before any replay: each level's bytes per chunk,
 * decode speed (chunks appended into a fresh sequence) and quality (KLD of
 * the request's next-token distributions against the f16 cache); int8
 * pages the same way (load speed, bytes, KLD); recompute speed (prefill of
 * the context). Then each bandwidth trace is replayed (engine/stream.c):
 * --requests requests spread over the trace, for the adaptive choice,
 * always-int8 pages, always the best level and always recompute; SLO
 * attainment, TTFT median / p95, mean KLD, bytes and the choices. A few
 * adaptive requests with mixed choices are rebuilt for real (chunks
 * appended at their levels, text chunks prefilled) and their KLD measured,
 * to check the token-weighted estimate. With --redis URL the chunks are
 * published to Redis and --requests requests run for real through
 * kvl_stream_fetch (wall clock, real decode and prefill), e.g. inside a
 * network namespace whose link bench/stream_netem.sh shapes to the trace. */
#include "cli.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { CHUNK = 256, QUESTION = 32, MAX_TRACES = 8, VALIDATE = 4, REPS = 3 };

typedef struct level_data {
    int level;              /* CacheGen level, or -1 for int8 pages */
    void *blob[KVL_STREAM_MAX_CHUNKS];
    size_t len[KVL_STREAM_MAX_CHUNKS];
    double decode_tok_s, kld, bytes;
} level_data;

typedef struct stream_run {
    kvl_model *m;
    kvl_ctx *c;
    kvl_model_info mi;
    const kvl_token *tok;
    int P, Q, cont, n_chunks;
    float *ref;   /* [cont][n_vocab] reference distributions (f16 cache, exact context) */
    float *all;   /* [cont][n_vocab] scratch */
    double prefill_tok_s;
} stream_run;

/* Mean KL(ref || q) over the request's cont positions. */
static double mean_kld(const stream_run *r, const float *q) {
    const int V = r->mi.n_vocab;
    double tot = 0;
    for (int t = 0; t < r->cont; t++) {
        const float *a = r->ref + (size_t)t * V, *b = q + (size_t)t * V;
        tot += cli_kl_div(a, cli_logsumexp(a, V, NULL), b, cli_logsumexp(b, V, NULL), V);
    }
    return tot / r->cont;
}

static kvl_seq *fresh(const stream_run *r) {
    kvl_seq *s = NULL;
    const kvl_status st = kvl_seq_create(r->c, &s);
    if (st) cli_die(CLI_EXIT_RUNTIME, "eval stream: %s", cli_ctx_msg(r->c, st));
    return s;
}

/* Prefill the request on s (all logits into r->all) and return its KLD. */
static double request_kld(stream_run *r, kvl_seq *s) {
    const kvl_status st = kvl_prefill(s, r->tok + r->P, r->cont, NULL, r->all);
    if (st) cli_die(CLI_EXIT_RUNTIME, "eval stream: prefill: %s", cli_ctx_msg(r->c, st));
    return mean_kld(r, r->all);
}

static int chunk_tokens(const stream_run *r, int i) { return i + 1 < r->n_chunks ? CHUNK : r->P - i * CHUNK; }

/* Append chunk i to s at option ch (a level of lv, or text). */
static void apply_chunk(stream_run *r, kvl_seq *s, level_data *lv, int ch, int i) {
    kvl_status st;
    if (ch == KVL_STREAM_TEXT) st = kvl_prefill(s, r->tok + i * CHUNK, chunk_tokens(r, i), NULL, NULL);
    else st = kvl_seq_append_cachegen(s, lv[ch].blob[i], lv[ch].len[i]);
    if (st) cli_die(CLI_EXIT_RUNTIME, "eval stream: chunk %d: %s", i, cli_ctx_msg(r->c, st));
}

static int cmp_d(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double *v, int n, double q) {
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    const int k = (int)ceil(q * n) - 1;
    return v[k < 0 ? 0 : k >= n ? n - 1 : k];
}

typedef struct mode_stats {
    const char *name;
    int met, n, text, per_level[KVL_STREAM_MAX_LEVELS];
    double *ttft;
    double loss, bytes;
} mode_stats;

static void stats_add(mode_stats *ms, const kvl_stream_result *res) {
    ms->ttft[ms->n++] = res->ttft_s;
    ms->met += res->met;
    ms->loss += res->loss;
    ms->bytes += res->bytes;
    for (int i = 0; i < res->n_chunks; i++) {
        if (res->choice[i] == KVL_STREAM_TEXT) ms->text++;
        else if (res->choice[i] >= 0 && res->choice[i] < KVL_STREAM_MAX_LEVELS) ms->per_level[res->choice[i]]++;
    }
}

static void stats_json(FILE *f, const mode_stats *ms, int n_levels, const level_data *lv, int first) {
    double *t = malloc(sizeof *t * (size_t)(ms->n ? ms->n : 1));
    memcpy(t, ms->ttft, sizeof *t * (size_t)ms->n);
    const double med = ms->n ? pct(t, ms->n, 0.5) : 0, p95 = ms->n ? pct(t, ms->n, 0.95) : 0;
    free(t);
    fprintf(f, "%s\"%s\": {\"requests\": %d, \"slo_attainment\": %.4f, \"ttft_ms_median\": %.2f, \"ttft_ms_p95\": %.2f, "
               "\"kld_mean\": %.6g, \"mbytes_mean\": %.4f, \"choices\": {\"text\": %d",
            first ? "" : ", ", ms->name, ms->n, ms->n ? (double)ms->met / ms->n : 0, med * 1e3, p95 * 1e3,
            ms->n ? ms->loss / ms->n : 0, ms->n ? ms->bytes / ms->n / 1e6 : 0, ms->text);
    for (int l = 0; l < n_levels; l++) {
        if (lv[l].level < 0) fprintf(f, ", \"int8\": %d", ms->per_level[l]);
        else fprintf(f, ", \"level%d\": %d", lv[l].level, ms->per_level[l]);
    }
    fputs("}}", f);
}

static void stats_line(const mode_stats *ms) {
    double *t = malloc(sizeof *t * (size_t)(ms->n ? ms->n : 1));
    memcpy(t, ms->ttft, sizeof *t * (size_t)ms->n);
    fprintf(stderr, "  %-10s SLO met %5.1f%%  TTFT median %8.1f ms  p95 %8.1f ms  KLD %.4f  %.2f MB/request  text chunks %d\n",
            ms->name, ms->n ? 100.0 * ms->met / ms->n : 0, ms->n ? pct(t, ms->n, 0.5) * 1e3 : 0,
            ms->n ? pct(t, ms->n, 0.95) * 1e3 : 0, ms->n ? ms->loss / ms->n : 0, ms->n ? ms->bytes / ms->n / 1e6 : 0, ms->text);
    free(t);
}

/* Parse "0,1,2,3" into levels [*n] (0..3). */
static void parse_levels(const char *s, int *lv, int *n) {
    *n = 0;
    if (!s) {
        for (int i = 0; i < 4; i++) lv[(*n)++] = i;
        return;
    }
    const char *p = s;
    while (*p) {
        char *end;
        const long v = strtol(p, &end, 10);
        if (end == p || v < 0 || v > 3 || *n >= KVL_STREAM_MAX_LEVELS - 1)
            cli_die(CLI_EXIT_USAGE, "eval stream: --levels: want comma-separated levels 0..3, got '%s'", s);
        lv[(*n)++] = (int)v;
        p = end;
        if (*p == ',') p++;
        else if (*p) cli_die(CLI_EXIT_USAGE, "eval stream: --levels: want comma-separated levels 0..3, got '%s'", s);
    }
}

typedef struct fetch_ctx {
    stream_run *r;
    kvl_seq *s;
} fetch_ctx;

static kvl_status on_chunk(void *user, int chunk, int level, const uint8_t *data, size_t len) {
    fetch_ctx *f = user;
    stream_run *r = f->r;
    if (chunk < 0 || chunk >= r->n_chunks) return KVL_ERR_FORMAT;
    if (level == KVL_STREAM_TEXT) {
        const int n = chunk_tokens(r, chunk);
        if (len != (size_t)n * 4) return KVL_ERR_FORMAT;
        kvl_token t[CHUNK];
        memcpy(t, data, len);
        return kvl_prefill(f->s, t, n, NULL, NULL);
    }
    return kvl_seq_append_cachegen(f->s, data, len);
}

int cmd_stream(const cli_opts *o) {
    if (!o->bandwidth) cli_die(CLI_EXIT_USAGE, "eval stream: missing --bandwidth TRACE[,TRACE...]");
    if (!o->slo_ms) cli_die(CLI_EXIT_USAGE, "eval stream: missing --slo-ms N");
    int slos[MAX_TRACES], n_slo = 0;
    for (const char *p = o->slo_ms; *p;) {
        char *end;
        const long v = strtol(p, &end, 10);
        if (end == p || v < 1 || v > 1000000000L || n_slo == MAX_TRACES || (*end && *end != ','))
            cli_die(CLI_EXIT_USAGE, "eval stream: --slo-ms: want up to %d comma-separated milliseconds, got '%s'", MAX_TRACES,
                    o->slo_ms);
        slos[n_slo++] = (int)v;
        p = *end ? end + 1 : end;
    }
    if (!n_slo) cli_die(CLI_EXIT_USAGE, "eval stream: missing --slo-ms N");
    int lvl[KVL_STREAM_MAX_LEVELS], n_lvl = 0;
    parse_levels(o->cg_levels, lvl, &n_lvl);
    /* traces first: a bad file fails before any model work */
    const char *names[MAX_TRACES];
    double *mbps[MAX_TRACES];
    int n_samp[MAX_TRACES], n_tr = 0;
    char *list = strdup(o->bandwidth);
    if (!list) cli_die(CLI_EXIT_RUNTIME, "out of memory");
    for (char *save = NULL, *p = strtok_r(list, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
        if (n_tr == MAX_TRACES) cli_die(CLI_EXIT_USAGE, "eval stream: at most %d traces", MAX_TRACES);
        size_t len = 0;
        char *text = cli_read_file(p, &len);
        char err[256];
        const kvl_status pst = kvl_stream_trace_parse(text, len, o->trace_step_ms / 1e3, &mbps[n_tr], &n_samp[n_tr], err,
                                                      sizeof err);
        free(text);
        if (pst) {
            char name[256];
            snprintf(name, sizeof name, "%s", p);
            for (int t = 0; t < n_tr; t++) free(mbps[t]);
            free(list); /* before the exit: the leak checker counts them */
            cli_die(CLI_EXIT_RUNTIME, "eval stream: %s: %s", name, err);
        }
        names[n_tr++] = p;
    }

    if (o->redis) { /* a store that is down fails before any model work */
        char err[256];
        if (kvl_stream_ping(o->redis, err, sizeof err)) cli_die(CLI_EXIT_RUNTIME, "eval stream: %s", err);
    }
    stream_run r = {0};
    r.m = cli_load_model(o->model);
    kvl_model_get_info(r.m, &r.mi);
    r.P = o->kv_prefix > 0 ? o->kv_prefix : 2048;
    r.cont = o->kv_cont > 0 ? o->kv_cont : 64;
    r.Q = r.cont < QUESTION ? r.cont : QUESTION;
    r.n_chunks = (r.P + CHUNK - 1) / CHUNK;
    if (r.n_chunks > KVL_STREAM_MAX_CHUNKS) cli_die(CLI_EXIT_USAGE, "eval stream: --prefix too long");
    size_t tlen = 0;
    char *text = cli_read_file(o->file, &tlen);
    int64_t n_tok = 0;
    kvl_token *tok = cli_tokenize(r.m, text, tlen, 1, 0, &n_tok);
    free(text);
    if (n_tok < r.P + r.cont)
        cli_die(CLI_EXIT_RUNTIME, "eval stream: %s has %lld tokens, --prefix %d + --cont %d needed", o->file, (long long)n_tok,
                r.P, r.cont);
    r.tok = tok;
    cli_opts oc = *o;
    const int n_ctx = r.P + r.cont + 1;
    if (!oc.kv_budget) /* a few sequences of f32 rows at once */
        oc.kv_budget = (size_t)8 * r.mi.n_layer * r.mi.n_head_kv * r.mi.head_dim * 2 * 4 * (size_t)n_ctx;
    r.c = cli_create_ctx(r.m, &oc, NULL, n_ctx);
    const size_t V = (size_t)r.mi.n_vocab;
    r.ref = malloc(sizeof(float) * V * (size_t)r.cont);
    r.all = malloc(sizeof(float) * V * (size_t)r.cont);
    if (!r.ref || !r.all) cli_die(CLI_EXIT_RUNTIME, "out of memory");
    const double values = (double)r.P * r.mi.n_layer * r.mi.n_head_kv * r.mi.head_dim * 2;

    /* the context, timed (recompute speed: the fastest of REPS prefills, as
     * every speed here, so a busy machine skews them less), and the reference
     * distributions */
    kvl_seq *ctxs = NULL;
    kvl_status st = KVL_OK;
    double best_t = INFINITY, t0;
    for (int rep = 0; rep < REPS; rep++) {
        kvl_seq_free(ctxs);
        ctxs = fresh(&r);
        t0 = cli_now();
        if ((st = kvl_prefill(ctxs, tok, r.P, NULL, NULL))) cli_die(CLI_EXIT_RUNTIME, "eval stream: prefill: %s", cli_ctx_msg(r.c, st));
        if (cli_now() - t0 < best_t) best_t = cli_now() - t0;
    }
    r.prefill_tok_s = r.P / best_t;
    kvl_seq *refs = NULL;
    if ((st = kvl_seq_fork(ctxs, &refs))) cli_die(CLI_EXIT_RUNTIME, "eval stream: fork: %s", cli_ctx_msg(r.c, st));
    if ((st = kvl_prefill(refs, tok + r.P, r.cont, NULL, r.ref)))
        cli_die(CLI_EXIT_RUNTIME, "eval stream: prefill: %s", cli_ctx_msg(r.c, st));
    kvl_seq_free(refs);
    fprintf(stderr, "eval stream: %d context tokens in %d chunks, request %d tokens (question %d); recompute %.0f tok/s\n",
            r.P, r.n_chunks, r.cont, r.Q, r.prefill_tok_s);

    /* CacheGen levels: bytes, decode speed, quality */
    level_data *lv = calloc((size_t)n_lvl + 1, sizeof *lv);
    if (!lv) cli_die(CLI_EXIT_RUNTIME, "out of memory");
    for (int k = 0; k < n_lvl; k++) {
        lv[k].level = lvl[k];
        kvl_cachegen_opts cg = {.level = lvl[k]};
        for (int i = 0; i < r.n_chunks; i++) {
            if ((st = kvl_seq_save_cachegen_chunk(ctxs, i * CHUNK, chunk_tokens(&r, i), &cg, &lv[k].blob[i], &lv[k].len[i])))
                cli_die(CLI_EXIT_RUNTIME, "eval stream: encode: %s", cli_ctx_msg(r.c, st));
            lv[k].bytes += (double)lv[k].len[i];
        }
        kvl_seq *s = NULL;
        best_t = INFINITY;
        for (int rep = 0; rep < REPS; rep++) {
            kvl_seq_free(s);
            s = fresh(&r);
            t0 = cli_now();
            for (int i = 0; i < r.n_chunks; i++) apply_chunk(&r, s, lv, k, i);
            if (cli_now() - t0 < best_t) best_t = cli_now() - t0;
        }
        lv[k].decode_tok_s = r.P / best_t;
        lv[k].kld = request_kld(&r, s);
        kvl_seq_free(s);
        fprintf(stderr, "  level %d: %.3f bits/value, %.2f MB, decode %.0f tok/s, KLD %.5f\n", lvl[k], lv[k].bytes * 8 / values,
                lv[k].bytes / 1e6, lv[k].decode_tok_s, lv[k].kld);
    }
    /* int8 pages: another context, the same text; bytes of the pages, load speed, KLD */
    level_data *i8 = &lv[n_lvl];
    i8->level = -1;
    {
        cli_opts o8 = oc;
        o8.kv = "int8";
        o8.kv_k = o8.kv_v = o8.kv_layers = NULL;
        kvl_ctx *c8 = cli_create_ctx(r.m, &o8, "int8", n_ctx);
        kvl_seq *s8 = NULL;
        if ((st = kvl_seq_create(c8, &s8)) || (st = kvl_prefill(s8, tok, r.P, NULL, NULL)))
            cli_die(CLI_EXIT_RUNTIME, "eval stream: int8: %s", cli_ctx_msg(c8, st));
        void *buf = NULL;
        size_t blen = 0;
        if ((st = kvl_seq_save(s8, &buf, &blen))) cli_die(CLI_EXIT_RUNTIME, "eval stream: int8 save: %s", cli_ctx_msg(c8, st));
        kvl_seq_free(s8); /* the context's budget holds one sequence */
        kvl_seq *l8 = NULL;
        best_t = INFINITY;
        for (int rep = 0; rep < REPS; rep++) {
            kvl_seq_free(l8);
            l8 = NULL;
            t0 = cli_now();
            if ((st = kvl_seq_load(c8, buf, blen, &l8)))
                cli_die(CLI_EXIT_RUNTIME, "eval stream: int8 load: %s", cli_ctx_msg(c8, st));
            if (cli_now() - t0 < best_t) best_t = cli_now() - t0;
        }
        i8->decode_tok_s = r.P / best_t;
        i8->bytes = (double)blen;
        if ((st = kvl_prefill(l8, tok + r.P, r.cont, NULL, r.all)))
            cli_die(CLI_EXIT_RUNTIME, "eval stream: int8: %s", cli_ctx_msg(c8, st));
        i8->kld = mean_kld(&r, r.all);
        free(buf);
        kvl_seq_free(l8);
        kvl_ctx_free(c8);
        fprintf(stderr, "  int8 pages: %.3f bits/value, %.2f MB, load %.0f tok/s, KLD %.5f\n", i8->bytes * 8 / values,
                i8->bytes / 1e6, i8->decode_tok_s, i8->kld);
    }

    /* profiles: the CacheGen levels (adaptive, best level, recompute) and int8 pages */
    kvl_stream_profile pc, p8;
    kvl_stream_profile_default(&pc);
    pc.n_levels = n_lvl;
    pc.prefill_tok_per_s = r.prefill_tok_s;
    pc.question_tokens = r.Q;
    pc.rtt_s = o->rtt_ms / 1e3;
    for (int k = 0; k < n_lvl; k++) {
        pc.level_loss[k] = lv[k].kld;
        pc.decode_tok_per_s[k] = lv[k].decode_tok_s;
    }
    p8 = pc;
    p8.n_levels = 1;
    p8.level_loss[0] = i8->kld;
    p8.decode_tok_per_s[0] = i8->decode_tok_s;
    kvl_stream_chunk *ch = calloc((size_t)r.n_chunks, sizeof *ch), *ch8 = calloc((size_t)r.n_chunks, sizeof *ch8);
    if (!ch || !ch8) cli_die(CLI_EXIT_RUNTIME, "out of memory");
    for (int i = 0; i < r.n_chunks; i++) {
        ch[i].n_tokens = ch8[i].n_tokens = chunk_tokens(&r, i);
        for (int k = 0; k < n_lvl; k++) ch[i].bytes[k] = (int64_t)lv[k].len[i];
        ch8[i].bytes[0] = (int64_t)(i8->bytes * ch[i].n_tokens / r.P);
    }
    int best = 0; /* the level of least loss */
    for (int k = 1; k < n_lvl; k++)
        if (lv[k].kld < lv[best].kld) best = k;

    const int R = o->stream_requests > 0 ? o->stream_requests : 100;
    const double slo0 = slos[0] / 1e3; /* real transfers */
    FILE *js = o->json ? stdout : NULL;
    if (js) {
        fprintf(js, "{\"model\": ");
        cli_json_escape(js, o->model);
        fprintf(js, ", \"text\": ");
        cli_json_escape(js, o->file);
        fprintf(js, ", \"kv\": ");
        cli_json_escape(js, o->kv);
        fprintf(js, ", \"context_tokens\": %d, \"chunk_tokens\": %d, \"request_tokens\": %d, \"question_tokens\": %d, "
                    "\"slo_ms\": %d, \"rtt_ms\": %g, \"recompute_tok_s\": %.1f, \"levels\": [",
                r.P, CHUNK, r.cont, r.Q, slos[0], o->rtt_ms, r.prefill_tok_s);
        for (int k = 0; k <= n_lvl; k++) {
            char name[16];
            if (lv[k].level < 0) snprintf(name, sizeof name, "int8");
            else snprintf(name, sizeof name, "level%d", lv[k].level);
            fprintf(js, "%s{\"name\": \"%s\", \"bits_per_value\": %.4f, \"mbytes\": %.4f, \"decode_tok_s\": %.1f, \"kld\": %.6g}",
                    k ? ", " : "", name, lv[k].bytes * 8 / values, lv[k].bytes / 1e6, lv[k].decode_tok_s, lv[k].kld);
        }
        fputs("], \"traces\": [", js);
    }
    for (int run = 0; run < n_slo * n_tr; run++) {
        const int tr = run % n_tr;
        const double slo = slos[run / n_tr] / 1e3;
        const kvl_stream_trace trace = {mbps[tr], n_samp[tr], o->trace_step_ms / 1e3};
        const double span = n_samp[tr] * trace.step_s;
        mode_stats ms[4] = {{.name = "adaptive"}, {.name = "int8"}, {.name = "best_level"}, {.name = "recompute"}};
        for (int k = 0; k < 4; k++) ms[k].ttft = malloc(sizeof(double) * (size_t)R);
        double bw[4] = {0, 0, 0, 0};
        kvl_stream_result *res = malloc(sizeof *res);
        int *ach = malloc(sizeof(int) * (size_t)R * (size_t)r.n_chunks); /* adaptive choices per request */
        double *attft = malloc(sizeof(double) * (size_t)R);
        if (!res || !ach || !attft) cli_die(CLI_EXIT_RUNTIME, "out of memory");
        int n_val = 0;
        double val_est[VALIDATE], val_real[VALIDATE];
        for (int q = 0; q < R; q++) {
            const double start = span * q / R;
            char err[256];
            const kvl_stream_profile *prof[4] = {&pc, &p8, &pc, &pc};
            const kvl_stream_chunk *cc[4] = {ch, ch8, ch, ch};
            const int mode[4] = {KVL_STREAM_ADAPTIVE, 0, best, KVL_STREAM_TEXT};
            for (int k = 0; k < 4; k++) {
                if (kvl_stream_run(prof[k], cc[k], r.n_chunks, &trace, start, mode[k], slo, &bw[k], res, err, sizeof err))
                    cli_die(CLI_EXIT_RUNTIME, "eval stream: %s", err);
                stats_add(&ms[k], res);
                if (k == 0) {
                    memcpy(ach + (size_t)q * r.n_chunks, res->choice, sizeof(int) * (size_t)r.n_chunks);
                    attft[q] = res->ttft_s;
                }
                if (k == 0 && n_val < VALIDATE) {
                    /* a mixed choice: rebuild it for real and measure its KLD */
                    int kinds = 0, seen[KVL_STREAM_MAX_LEVELS + 1] = {0};
                    for (int i = 0; i < r.n_chunks; i++) seen[res->choice[i] + 1]++;
                    for (int i = 0; i <= KVL_STREAM_MAX_LEVELS; i++) kinds += seen[i] > 0;
                    if (kinds > 1) {
                        kvl_seq *s = fresh(&r);
                        for (int i = 0; i < r.n_chunks; i++) apply_chunk(&r, s, lv, res->choice[i], i);
                        val_est[n_val] = res->loss;
                        val_real[n_val] = request_kld(&r, s);
                        n_val++;
                        kvl_seq_free(s);
                    }
                }
            }
        }
        fprintf(stderr, "trace %s (%.0f s, %d requests, SLO %d ms):\n", names[tr], span, R, slos[run / n_tr]);
        for (int k = 0; k < 4; k++) stats_line(&ms[k]);
        for (int v = 0; v < n_val; v++)
            fprintf(stderr, "  mixed adaptive request %d rebuilt: KLD %.5f measured, %.5f estimated\n", v, val_real[v], val_est[v]);
        if (js) {
            fprintf(js, "%s{\"trace\": ", run ? ", " : "");
            cli_json_escape(js, names[tr]);
            fprintf(js, ", \"slo_ms\": %d, \"seconds\": %.1f, \"modes\": {", slos[run / n_tr], span);
            const level_data *lvs[4] = {lv, i8, lv, lv};
            for (int k = 0; k < 4; k++) stats_json(js, &ms[k], k == 1 ? 1 : n_lvl, lvs[k], k == 0);
            fputs("}, \"adaptive_requests\": [", js);
            for (int q = 0; q < R; q++) {
                fprintf(js, "%s{\"start_s\": %.3f, \"ttft_ms\": %.2f, \"choices\": [", q ? ", " : "", span * q / R, attft[q] * 1e3);
                for (int i = 0; i < r.n_chunks; i++) fprintf(js, "%s%d", i ? ", " : "", ach[(size_t)q * r.n_chunks + i]);
                fputs("]}", js);
            }
            fputs("], \"mixed_rebuilt\": [", js);
            for (int v = 0; v < n_val; v++) fprintf(js, "%s{\"kld_measured\": %.6g, \"kld_estimated\": %.6g}", v ? ", " : "", val_real[v], val_est[v]);
            fputs("]}", js);
        }
        for (int k = 0; k < 4; k++) free(ms[k].ttft);
        free(res);
        free(ach);
        free(attft);
    }
    if (js) fputs("]", js);

    /* real transfers through Redis: the same choices, wall clock */
    if (o->redis) {
        char prefix[64], err[256];
        snprintf(prefix, sizeof prefix, "kvlite:stream:%d", (int)(cli_now() * 1000) % 1000000);
        for (int i = 0; i < r.n_chunks; i++) {
            for (int k = 0; k < n_lvl; k++)
                if (kvl_stream_put(o->redis, prefix, i, k, lv[k].blob[i], lv[k].len[i], err, sizeof err))
                    cli_die(CLI_EXIT_RUNTIME, "eval stream: %s", err);
            if (kvl_stream_put(o->redis, prefix, i, KVL_STREAM_TEXT, tok + i * CHUNK, (size_t)chunk_tokens(&r, i) * 4, err,
                               sizeof err))
                cli_die(CLI_EXIT_RUNTIME, "eval stream: %s", err);
        }
        const int RR = o->stream_requests > 0 ? o->stream_requests : 20;
        const double spacing = o->real_spacing_ms > 0 ? o->real_spacing_ms / 1e3 : 0;
        mode_stats ms[3] = {{.name = "adaptive"}, {.name = "best_level"}, {.name = "recompute"}};
        const int mode[3] = {KVL_STREAM_ADAPTIVE, best, KVL_STREAM_TEXT};
        double kld_sum[3] = {0, 0, 0};
        for (int k = 0; k < 3; k++) ms[k].ttft = malloc(sizeof(double) * (size_t)RR);
        double bw[3] = {0, 0, 0};
        kvl_stream_result *res = malloc(sizeof *res);
        const double T0 = cli_now();
        fprintf(stderr, "real transfers through %s (%d requests per mode%s):\n", o->redis, RR,
                spacing > 0 ? ", paced to the trace clock" : "");
        for (int q = 0; q < RR; q++)
            for (int k = 0; k < 3; k++) {
                if (spacing > 0) { /* request (q, k) starts at its slot of the trace clock */
                    const double at = T0 + spacing * (q * 3 + k), now = cli_now();
                    if (at > now) {
                        struct timespec ts = {(time_t)(at - now), (long)((at - now - (double)(time_t)(at - now)) * 1e9)};
                        nanosleep(&ts, NULL);
                    }
                }
                kvl_seq *s = fresh(&r);
                fetch_ctx fc = {&r, s};
                const double a = cli_now();
                if (kvl_stream_fetch(o->redis, prefix, &pc, ch, r.n_chunks, mode[k], slo0, &bw[k], on_chunk, &fc, res, err,
                                     sizeof err))
                    cli_die(CLI_EXIT_RUNTIME, "eval stream: %s", err);
                /* the question: its first token's logits end the TTFT */
                if ((st = kvl_prefill(s, tok + r.P, r.Q, NULL, r.all)))
                    cli_die(CLI_EXIT_RUNTIME, "eval stream: %s", cli_ctx_msg(r.c, st));
                res->ttft_s = cli_now() - a;
                res->met = res->ttft_s <= slo0;
                if (r.cont > r.Q && (st = kvl_prefill(s, tok + r.P + r.Q, r.cont - r.Q, NULL, r.all + V * (size_t)r.Q)))
                    cli_die(CLI_EXIT_RUNTIME, "eval stream: %s", cli_ctx_msg(r.c, st));
                res->loss = mean_kld(&r, r.all); /* measured, not estimated */
                kld_sum[k] += res->loss;
                stats_add(&ms[k], res);
                kvl_seq_free(s);
            }
        for (int k = 0; k < 3; k++) stats_line(&ms[k]);
        if (js) {
            fputs(", \"real\": {\"redis\": ", js);
            cli_json_escape(js, o->redis);
            fprintf(js, ", \"spacing_ms\": %.1f, \"modes\": {", spacing * 1e3);
            for (int k = 0; k < 3; k++) stats_json(js, &ms[k], n_lvl, lv, k == 0);
            fputs("}}", js);
        }
        for (int k = 0; k < 3; k++) free(ms[k].ttft);
        free(res);
    }
    if (js) fputs("}\n", js);

    for (int k = 0; k <= n_lvl; k++)
        for (int i = 0; i < r.n_chunks; i++) free(lv[k].blob[i]);
    free(lv);
    free(ch);
    free(ch8);
    for (int t = 0; t < n_tr; t++) free(mbps[t]);
    free(list);
    free(r.ref);
    free(r.all);
    free(tok);
    kvl_seq_free(ctxs);
    kvl_ctx_free(r.c);
    kvl_model_free(r.m);
    return CLI_EXIT_OK;
}
