/* `kvlite eval needle|passkey|multikey`: long-context retrieval accuracy over a
 * grid of prompt lengths x needle depths x seeds, each score paired with the
 * KV bytes the sequence really used. Prompts come from tasks.c (deterministic
 * per seed); answers are greedy (argmax) decodes of at most RET_MAX_NEW tokens,
 * stopped at end-of-generation, and scored by exact match (task_score), never
 * by a model judge. One kvl_ctx per length, created through the CLI's common
 * option parsing (cli_create_ctx: --kv, --kv-budget, --threads and whatever
 * KV flags are added there later), and a fresh kvl_seq per cell. Prompts of
 * one (length, seed) differ only from the needle on, so by default the shared
 * prefix is prefilled once into a "trunk" sequence and each cell forks it
 * (kvl_seq_fork); --no-share, or any --kv-budget, prefills every prompt from
 * scratch instead.
 *
 * --json writes one object on stdout:
 *   {"task": "needle"|"passkey"|"multikey",
 *    "model": general.name or the path, "model_path": path,
 *    "kv": codec name, "kv_budget": --kv-budget bytes (0 = default),
 *    "exact": bool (--exact: exact matmuls, f32 activations),
 *    "bytes_per_token": codec bytes per cached token (K+V, all layers/heads),
 *    "kv_bytes_peak": max over cells of the sequence's peak KV bytes,
 *    "kv_bytes_end": max over cells of the sequence's KV bytes after decoding,
 *    "lengths": [target tokens...], "depths": [percent...], "seeds": N,
 *    "keys": K (multikey only), "max_new_tokens": RET_MAX_NEW,
 *    "haystack": essay directory or null (passkey), "prefix_sharing": bool,
 *    "score": correct / cells (0..1), "correct": n, "cells_total": n,
 *    "by_length": {"<length>": accuracy, ...}, "by_depth": {"<depth>": accuracy, ...},
 *    "kv_by_length": {"<length>": {"tokens": mean prompt tokens,
 *                     "kv_bytes_peak": max, "kv_bytes_end": max, "seconds": s}, ...},
 *    "cells": [{"length": target, "tokens": actual prompt tokens, "depth": requested %,
 *               "depth_actual": % of haystack tokens before the needle, "seed": s,
 *               "needle_token_pos": index of the needle's first prompt token,
 *               "expected": "...", "answer": "...", "correct": bool,
 *               "distractor": bool (multikey only: answer holds another key's value),
 *               "kv_bytes_peak": n, "kv_bytes_end": n}, ...],
 *    "prefill_tokens": tokens actually run through prefill (sharing saves some),
 *    "seconds": wall time of the whole grid}
 * Cells are ordered by length, then depth, then seed. */
#include "cli.h"
#include "png.h"
#include "tasks.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum { RET_MAX_NEW = 32, RET_MAX_LIST = 256 };

/* Default grid, sized to where SmolLM2-135M with the full f16 cache still
 * retrieves, so that losses from KV compression show: at 7680 tokens the full
 * cache already misses needles in the first half of the prompt (needle, seed 0:
 * 5/11 depths), at 4096 it gets 9/11, at 1024-2048 everything. Longer lengths
 * stay one flag away (--lengths ...,7680). */
static const int DEFAULT_LENGTHS[] = {1024, 2048, 3072, 4096};
static const int DEFAULT_SEEDS = 2;

typedef struct cell {
    int length, tokens, depth, seed, needle_pos;
    double depth_actual;
    char expected[64];
    char answer[512];
    int correct, distractor;
    size_t kv_peak, kv_end;
    int64_t kv_tokens; /* tokens cached per (layer, kv-head) after the answer */
} cell;

/* Comma-separated integers in [lo, hi], at most RET_MAX_LIST, no duplicates. */
static int parse_list(const char *flag, const char *s, long lo, long hi, int *out) {
    int n = 0;
    const char *p = s;
    while (*p) {
        const char *c = strchr(p, ',');
        size_t l = c ? (size_t)(c - p) : strlen(p);
        char tmp[32];
        if (l == 0 || l >= sizeof tmp) cli_die(CLI_EXIT_USAGE, "%s: malformed list '%s'", flag, s);
        memcpy(tmp, p, l);
        tmp[l] = 0;
        if (n == RET_MAX_LIST) cli_die(CLI_EXIT_USAGE, "%s: at most %d values", flag, RET_MAX_LIST);
        if (cli_parse_int(tmp, lo, hi, &out[n]))
            cli_die(CLI_EXIT_USAGE, "%s: expected integers in [%ld, %ld], got '%s'", flag, lo, hi, tmp);
        for (int i = 0; i < n; i++)
            if (out[i] == out[n]) cli_die(CLI_EXIT_USAGE, "%s: duplicate value %d", flag, out[n]);
        n++;
        if (!c) break;
        p = c + 1;
        if (!*p) cli_die(CLI_EXIT_USAGE, "%s: malformed list '%s'", flag, s);
    }
    if (n == 0) cli_die(CLI_EXIT_USAGE, "%s: empty list", flag);
    return n;
}

static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* --haystack, else ../shared/data/pg_essays next to the repository holding the
 * binary (build/kvlite -> repo), then relative to the working directory, then
 * /work/shared/data/pg_essays. */
static const char *find_haystack(const cli_opts *o, char *buf, size_t n) {
    if (o->ret_haystack) return o->ret_haystack;
    char exe[4096];
    ssize_t l = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (l > 0) {
        exe[l] = 0;
        for (int up = 0; up < 2; up++) { /* strip "kvlite", then "build" */
            char *sl = strrchr(exe, '/');
            if (sl) *sl = 0;
        }
        char cand[4200];
        snprintf(cand, sizeof cand, "%s/../shared/data/pg_essays", exe);
        if (is_dir(cand) && realpath(cand, buf) && strlen(buf) < n) return buf;
    }
    const char *rel[] = {"../shared/data/pg_essays", "/work/shared/data/pg_essays"};
    for (int i = 0; i < 2; i++)
        if (is_dir(rel[i])) return realpath(rel[i], buf) && strlen(buf) < n ? buf : rel[i];
    cli_die(CLI_EXIT_RUNTIME, "haystack essays not found (tried ../shared/data/pg_essays and "
                              "/work/shared/data/pg_essays); give --haystack DIR");
}

static kvl_token argmax(const float *l, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (l[i] > l[best]) best = i;
    return (kvl_token)best;
}

static int lcp(const task_prompt *a, const task_prompt *b) {
    int n = a->n_tokens < b->n_tokens ? a->n_tokens : b->n_tokens, i = 0;
    while (i < n && a->tokens[i] == b->tokens[i]) i++;
    return i;
}

static void die_seq(kvl_ctx *c, kvl_status st, const char *what) {
    cli_die(CLI_EXIT_RUNTIME, "%s failed: %s", what, cli_ctx_msg(c, st));
}

/* Replace bytes that break UTF-8 (partial pieces) with '?', so JSON stays valid. */
static void fix_utf8(char *s) {
    size_t n = strlen(s);
    long bad;
    while ((bad = cli_utf8_invalid_at(s, n)) >= 0) s[bad] = '?';
}

/* The prompt's cached-prefix plan: trunk holds tokens [0, trunk_len) of every
 * prompt processed since it was (re)built. */
typedef struct runner {
    const kvl_model *m;
    kvl_ctx *ctx;
    int n_vocab;
    float *logits;
    char piece[256];
    int share;
    int evicting;       /* a policy evicts: no prefix sharing; the answer is decoded without evicting */
    int query_agnostic; /* compress the haystack, then append the question */
    kvl_seq *trunk;
    int trunk_len;
    long long prefilled;
} runner;

static void trunk_drop(runner *r) {
    kvl_seq_free(r->trunk);
    r->trunk = NULL;
    r->trunk_len = 0;
}

/* Run one prompt: prefill (forking the trunk where it helps), greedy decode.
 * next: the prompt processed after this one (NULL: none). */
static void run_cell(runner *r, const task_prompt *p, const task_prompt *next, cell *out) {
    kvl_status st;
    kvl_seq *s = NULL;
    int start = 0;
    if (r->share) {
        int want = next ? lcp(p, next) : 0;
        if (want > p->n_tokens - 1) want = p->n_tokens - 1;
        if (want > r->trunk_len) {
            if (!r->trunk && (st = kvl_seq_create(r->ctx, &r->trunk)) != KVL_OK) die_seq(r->ctx, st, "sequence");
            st = kvl_prefill(r->trunk, p->tokens + r->trunk_len, want - r->trunk_len, NULL, NULL);
            if (st != KVL_OK) die_seq(r->ctx, st, "prefill");
            r->prefilled += want - r->trunk_len;
            r->trunk_len = want;
        }
        if (r->trunk_len > 0) {
            if ((st = kvl_seq_fork(r->trunk, &s)) != KVL_OK) die_seq(r->ctx, st, "fork");
            start = r->trunk_len;
        }
    }
    if (!s && (st = kvl_seq_create(r->ctx, &s)) != KVL_OK) die_seq(r->ctx, st, "sequence");
    if (r->query_agnostic && p->hay_end > start && p->hay_end < p->n_tokens) {
        /* the haystack alone goes through the policy; the question arrives after */
        if ((st = kvl_prefill(s, p->tokens + start, p->hay_end - start, NULL, NULL)) != KVL_OK)
            die_seq(r->ctx, st, "prefill");
        kvl_seq_set_keep(s, -1);
        st = kvl_prefill(s, p->tokens + p->hay_end, p->n_tokens - p->hay_end, r->logits, NULL);
    } else {
        st = kvl_prefill(s, p->tokens + start, p->n_tokens - start, r->logits, NULL);
    }
    if (st != KVL_OK) die_seq(r->ctx, st, "prefill");
    if (r->evicting) kvl_seq_set_keep(s, -1); /* the answer is decoded from the compressed cache */
    r->prefilled += p->n_tokens - start;
    size_t an = 0;
    out->answer[0] = 0;
    for (int i = 0; i < RET_MAX_NEW; i++) {
        kvl_token t = argmax(r->logits, r->n_vocab);
        if (kvl_model_is_eog(r->m, t)) break;
        int pl = kvl_token_to_piece(r->m, t, 0, r->piece, (int)sizeof r->piece);
        if (pl > 0 && pl < (int)sizeof r->piece && an + (size_t)pl < sizeof out->answer) {
            memcpy(out->answer + an, r->piece, (size_t)pl);
            an += (size_t)pl;
            out->answer[an] = 0;
        }
        if (i + 1 == RET_MAX_NEW) break;
        if ((st = kvl_decode(s, t, r->logits)) != KVL_OK) die_seq(r->ctx, st, "decode");
    }
    kvl_kv_stats ks;
    kvl_seq_kv_stats(s, &ks);
    out->kv_peak = ks.bytes_peak;
    out->kv_end = ks.bytes_used;
    out->kv_tokens = ks.tokens_cached;
    kvl_seq_free(s);
    /* the trunk must stay a prefix of the next prompt */
    if (r->trunk && (!next || lcp(p, next) < r->trunk_len)) trunk_drop(r);
}

static double ratio(int a, int b) { return b ? (double)a / (double)b : NAN; }

static void fmt_bytes(char *buf, size_t n, double b) {
    if (b >= 1024.0 * 1024 * 1024) snprintf(buf, n, "%.2fG", b / (1024.0 * 1024 * 1024));
    else if (b >= 1024.0 * 1024) snprintf(buf, n, "%.1fM", b / (1024.0 * 1024));
    else if (b >= 1024.0) snprintf(buf, n, "%.1fK", b / 1024.0);
    else snprintf(buf, n, "%.0f", b);
}

int cmd_retrieval(const cli_opts *o) {
    task_kind kind;
    if (task_kind_parse(o->subcmd, &kind)) cli_die(CLI_EXIT_USAGE, "eval: unknown task '%s'", o->subcmd);
    int lengths[RET_MAX_LIST], depths[RET_MAX_LIST], nl, nd;
    if (o->ret_lengths) nl = parse_list("--lengths", o->ret_lengths, 16, 1 << 22, lengths);
    else {
        nl = (int)(sizeof DEFAULT_LENGTHS / sizeof DEFAULT_LENGTHS[0]);
        memcpy(lengths, DEFAULT_LENGTHS, sizeof DEFAULT_LENGTHS);
    }
    if (o->ret_depths) nd = parse_list("--depths", o->ret_depths, 0, 100, depths);
    else
        for (nd = 0; nd <= 10; nd++) depths[nd] = nd * 10;
    const int ns = o->ret_seeds > 0 ? o->ret_seeds : DEFAULT_SEEDS;
    const int nk = kind == TASK_MULTIKEY ? (o->ret_keys > 0 ? o->ret_keys : 4) : 1;
    if (kind == TASK_NEEDLE && (o->ret_needle || o->ret_question || o->ret_answer) &&
        !(o->ret_needle && o->ret_question && o->ret_answer))
        cli_die(CLI_EXIT_USAGE, "eval needle: --needle, --question and --answer go together");
    if (kind == TASK_NEEDLE && o->ret_needle && (!o->ret_needle[0] || !o->ret_question[0] || !o->ret_answer[0]))
        cli_die(CLI_EXIT_USAGE, "eval needle: --needle, --question and --answer must not be empty");
    if (o->ret_plot) { /* fail now, not after a long run */
        FILE *pf = o->ret_plot[0] ? fopen(o->ret_plot, "wb") : NULL;
        if (!pf) cli_die(CLI_EXIT_RUNTIME, "cannot write plot '%s': %s", o->ret_plot, o->ret_plot[0] ? strerror(errno) : "empty name");
        fclose(pf);
    }

    kvl_model *m = cli_load_model(o->model);
    kvl_model_info info;
    kvl_model_get_info(m, &info);

    task_corpus corpus;
    memset(&corpus, 0, sizeof corpus);
    char hbuf[4200];
    const char *hdir = NULL;
    char err[512];
    if (kind != TASK_PASSKEY) {
        hdir = find_haystack(o, hbuf, sizeof hbuf);
        if (task_corpus_load(&corpus, hdir, err, sizeof err)) cli_die(CLI_EXIT_RUNTIME, "%s", err);
    }
    task_config cfg = {.kind = kind, .corpus = kind == TASK_PASSKEY ? NULL : &corpus, .n_keys = nk,
                       .needle = o->ret_needle, .question = o->ret_question, .answer = o->ret_answer};

    const int n_cells = nl * nd * ns;
    cell *cells = calloc((size_t)n_cells, sizeof *cells);
    task_prompt *prompts = calloc((size_t)nd, sizeof *prompts);
    int *order = malloc((size_t)nd * sizeof *order);
    double *len_secs = calloc((size_t)nl, sizeof *len_secs);
    const int evicting = o->kv_policy && strcmp(o->kv_policy, "full") != 0 && strncmp(o->kv_policy, "full:", 5) != 0;
    if (o->ret_query_agnostic && !evicting)
        cli_die(CLI_EXIT_USAGE, "eval %s: --query-agnostic needs an evicting --kv-policy", task_kind_name(kind));
    runner r = {.m = m, .n_vocab = info.n_vocab, .share = !o->ret_no_share && o->kv_budget == 0 && !evicting,
                .evicting = evicting, .query_agnostic = o->ret_query_agnostic};
    /* question-aware (default): the whole prompt is one forward call, so the
     * policy evicts each layer right after its attention over every query,
     * the question's included (CAKE's layer-wise prefill) */
    cli_opts oc = *o;
    if (evicting && oc.n_batch <= 0) oc.n_batch = 65536;
    r.logits = malloc((size_t)info.n_vocab * sizeof *r.logits);
    if (!cells || !prompts || !order || !len_secs || !r.logits) cli_die(CLI_EXIT_RUNTIME, "out of memory");
    const char *codec = o->kv;
    char codec_buf[64];
    double bpt = 0;

    double t0 = cli_now();
    cli_progress prog;
    char label[64];
    snprintf(label, sizeof label, "eval %s", task_kind_name(kind));
    cli_progress_begin(&prog, label, n_cells);
    int done = 0;
    for (int li = 0; li < nl; li++) {
        double tl = cli_now();
        const int L = lengths[li];
        /* room for a prompt 2% over target, the answer, and one partly shared page per list */
        int n_ctx = L + L / 50 + 2 + RET_MAX_NEW + 128;
        if (o->n_ctx > 0) n_ctx = o->n_ctx;
        r.ctx = cli_create_ctx(m, &oc, NULL, n_ctx);
        for (int si = 0; si < ns; si++) {
            task_hay *h;
            if (task_hay_build(m, &cfg, (uint64_t)(si + o->ret_seed_base), L, &h, err, sizeof err))
                cli_die(CLI_EXIT_RUNTIME, "eval %s: %s", task_kind_name(kind), err);
            for (int di = 0; di < nd; di++) {
                if (task_hay_prompt(h, depths[di], &prompts[di], err, sizeof err))
                    cli_die(CLI_EXIT_RUNTIME, "eval %s: %s", task_kind_name(kind), err);
                if (prompts[di].n_tokens + RET_MAX_NEW > n_ctx)
                    cli_die(CLI_EXIT_RUNTIME, "eval %s: prompt of %d tokens + %d new does not fit --ctx %d",
                            task_kind_name(kind), prompts[di].n_tokens, RET_MAX_NEW, n_ctx);
                order[di] = di;
            }
            /* shallow needles first: each prompt shares the longest prefix with the next */
            for (int i = 1; i < nd; i++)
                for (int j = i; j > 0 && prompts[order[j]].needle_pos < prompts[order[j - 1]].needle_pos; j--) {
                    int t = order[j];
                    order[j] = order[j - 1];
                    order[j - 1] = t;
                }
            for (int oi = 0; oi < nd; oi++) {
                int di = order[oi];
                const task_prompt *p = &prompts[di];
                cell *c = &cells[((size_t)li * (size_t)nd + (size_t)di) * (size_t)ns + (size_t)si];
                c->length = L;
                c->tokens = p->n_tokens;
                c->depth = depths[di];
                c->depth_actual = p->depth;
                c->seed = si + o->ret_seed_base;
                c->needle_pos = p->needle_pos;
                snprintf(c->expected, sizeof c->expected, "%s", task_hay_expected(h));
                run_cell(&r, p, oi + 1 < nd ? &prompts[order[oi + 1]] : NULL, c);
                fix_utf8(c->answer);
                c->correct = task_score(c->answer, c->expected);
                for (int k = 1; k < task_hay_n_facts(h) && !c->correct; k++) {
                    const char *v;
                    task_hay_fact(h, k, NULL, &v, NULL);
                    if (task_score(c->answer, v)) c->distractor = 1;
                }
                cli_progress_update(&prog, ++done);
            }
            trunk_drop(&r);
            for (int di = 0; di < nd; di++) task_prompt_free(&prompts[di]);
            task_hay_free(h);
        }
        if (li == 0) { /* codec name and bytes/token as the engine reports them */
            kvl_seq *s;
            if (kvl_seq_create(r.ctx, &s) == KVL_OK) {
                kvl_kv_stats ks;
                kvl_seq_kv_stats(s, &ks);
                if (ks.codec && ks.codec[0]) {
                    snprintf(codec_buf, sizeof codec_buf, "%s", ks.codec);
                    codec = codec_buf;
                }
                bpt = ks.bytes_per_token;
                kvl_seq_free(s);
            }
        }
        kvl_ctx_free(r.ctx);
        r.ctx = NULL;
        len_secs[li] = cli_now() - tl;
        if (!prog.enabled) {
            int ok = 0;
            for (int i = 0; i < nd * ns; i++) ok += cells[(size_t)li * (size_t)(nd * ns) + (size_t)i].correct;
            fprintf(stderr, "eval %s: length %d done: %d/%d correct, %.1f s\n", task_kind_name(kind), L, ok, nd * ns,
                    len_secs[li]);
        }
    }
    cli_progress_end(&prog);
    double secs = cli_now() - t0;

    /* ---- aggregate ---- */
    int rc = CLI_EXIT_OK;
    int total_ok = 0;
    size_t peak = 0, end = 0;
    for (int i = 0; i < n_cells; i++) {
        total_ok += cells[i].correct;
        if (cells[i].kv_peak > peak) peak = cells[i].kv_peak;
        if (cells[i].kv_end > end) end = cells[i].kv_end;
    }
    double score = ratio(total_ok, n_cells);
    double *acc = malloc((size_t)(nl * nd) * sizeof *acc); /* [depth][length] */
    if (!acc) cli_die(CLI_EXIT_RUNTIME, "out of memory");
    for (int di = 0; di < nd; di++)
        for (int li = 0; li < nl; li++) {
            int ok = 0;
            for (int si = 0; si < ns; si++) ok += cells[((size_t)li * (size_t)nd + (size_t)di) * (size_t)ns + (size_t)si].correct;
            acc[di * nl + li] = ratio(ok, ns);
        }

    /* ---- human table (stderr) ---- */
    fprintf(stderr, "eval %s: kv %s (%.0f bytes/token)%s, %d seed%s%s%s\n", task_kind_name(kind), codec, bpt,
            o->kv_budget ? ", kv budget set" : "", ns, ns == 1 ? "" : "s", r.share ? ", prefix sharing" : "",
            o->exact ? ", exact matmul" : "");
    if (evicting)
        fprintf(stderr, "policy %s, keep %s, %s\n", o->kv_policy, o->kv_keep ? o->kv_keep : "(from --kv-budget)",
                o->ret_query_agnostic ? "query-agnostic (haystack compressed before the question)"
                                      : "question-aware (policy acts after the whole prompt)");
    fprintf(stderr, "%-9s", "depth");
    for (int li = 0; li < nl; li++) fprintf(stderr, " %8d", lengths[li]);
    fprintf(stderr, "\n");
    for (int di = 0; di < nd; di++) {
        fprintf(stderr, "%7d%% ", depths[di]);
        for (int li = 0; li < nl; li++) fprintf(stderr, " %7.0f%%", 100 * acc[di * nl + li]);
        fprintf(stderr, "\n");
    }
    fprintf(stderr, "%-9s", "all");
    for (int li = 0; li < nl; li++) {
        int ok = 0;
        for (int i = 0; i < nd * ns; i++) ok += cells[(size_t)li * (size_t)(nd * ns) + (size_t)i].correct;
        fprintf(stderr, " %7.1f%%", 100 * ratio(ok, nd * ns));
    }
    fprintf(stderr, "\n%-9s", "KV peak");
    for (int li = 0; li < nl; li++) {
        size_t pk = 0;
        for (int i = 0; i < nd * ns; i++) {
            size_t v = cells[(size_t)li * (size_t)(nd * ns) + (size_t)i].kv_peak;
            if (v > pk) pk = v;
        }
        char b[32];
        fmt_bytes(b, sizeof b, (double)pk);
        fprintf(stderr, " %8s", b);
    }
    fprintf(stderr, "\n%-9s", "seconds");
    for (int li = 0; li < nl; li++) fprintf(stderr, " %8.0f", len_secs[li]);
    if (kind == TASK_MULTIKEY) {
        int dis = 0;
        for (int i = 0; i < n_cells; i++) dis += cells[i].distractor;
        fprintf(stderr, "\nwrong-key answers: %d", dis);
    }
    fprintf(stderr, "\nscore %.4f (%d/%d), %.1f s\n", score, total_ok, n_cells, secs);

    /* ---- JSON (stdout) ---- */
    if (o->json) {
        FILE *f = stdout;
        fputs("{\"task\": ", f);
        cli_json_escape(f, task_kind_name(kind));
        fputs(", \"model\": ", f);
        cli_json_escape(f, info.name && info.name[0] ? info.name : o->model);
        fputs(", \"model_path\": ", f);
        cli_json_escape(f, o->model);
        fputs(", \"kv\": ", f);
        cli_json_escape(f, codec);
        fprintf(f, ", \"kv_budget\": %zu, \"exact\": %s, \"bytes_per_token\": %.17g, \"kv_bytes_peak\": %zu, \"kv_bytes_end\": %zu",
                o->kv_budget, o->exact ? "true" : "false", bpt, peak, end);
        fputs(", \"policy\": ", f);
        cli_json_escape(f, o->kv_policy ? o->kv_policy : "full");
        fputs(", \"keep\": ", f);
        if (o->kv_keep) cli_json_escape(f, o->kv_keep);
        else fputs("null", f);
        fprintf(f, ", \"mode\": \"%s\"", o->ret_query_agnostic ? "query-agnostic" : "question-aware");
        fputs(", \"lengths\": [", f);
        for (int li = 0; li < nl; li++) fprintf(f, "%s%d", li ? ", " : "", lengths[li]);
        fputs("], \"depths\": [", f);
        for (int di = 0; di < nd; di++) fprintf(f, "%s%d", di ? ", " : "", depths[di]);
        fprintf(f, "], \"seeds\": %d", ns);
        if (kind == TASK_MULTIKEY) fprintf(f, ", \"keys\": %d", nk);
        fprintf(f, ", \"max_new_tokens\": %d, \"haystack\": ", RET_MAX_NEW);
        if (hdir) cli_json_escape(f, hdir);
        else fputs("null", f);
        fprintf(f, ", \"prefix_sharing\": %s, \"score\": %.17g, \"correct\": %d, \"cells_total\": %d",
                r.share ? "true" : "false", score, total_ok, n_cells);
        fputs(", \"by_length\": {", f);
        for (int li = 0; li < nl; li++) {
            int ok = 0;
            for (int i = 0; i < nd * ns; i++) ok += cells[(size_t)li * (size_t)(nd * ns) + (size_t)i].correct;
            fprintf(f, "%s\"%d\": %.17g", li ? ", " : "", lengths[li], ratio(ok, nd * ns));
        }
        fputs("}, \"by_depth\": {", f);
        for (int di = 0; di < nd; di++) {
            int ok = 0;
            for (int li = 0; li < nl; li++)
                for (int si = 0; si < ns; si++)
                    ok += cells[((size_t)li * (size_t)nd + (size_t)di) * (size_t)ns + (size_t)si].correct;
            fprintf(f, "%s\"%d\": %.17g", di ? ", " : "", depths[di], ratio(ok, nl * ns));
        }
        fputs("}, \"kv_by_length\": {", f);
        for (int li = 0; li < nl; li++) {
            size_t pk = 0, en = 0;
            double tok = 0;
            for (int i = 0; i < nd * ns; i++) {
                const cell *c = &cells[(size_t)li * (size_t)(nd * ns) + (size_t)i];
                if (c->kv_peak > pk) pk = c->kv_peak;
                if (c->kv_end > en) en = c->kv_end;
                tok += c->tokens;
            }
            fprintf(f, "%s\"%d\": {\"tokens\": %.1f, \"kv_bytes_peak\": %zu, \"kv_bytes_end\": %zu, \"seconds\": %.3f}",
                    li ? ", " : "", lengths[li], tok / (nd * ns), pk, en, len_secs[li]);
        }
        fputs("}, \"cells\": [", f);
        for (int i = 0; i < n_cells; i++) {
            const cell *c = &cells[i];
            fprintf(f, "%s\n  {\"length\": %d, \"tokens\": %d, \"depth\": %d, \"depth_actual\": %.2f, \"seed\": %d, "
                       "\"needle_token_pos\": %d, \"expected\": ",
                    i ? "," : "", c->length, c->tokens, c->depth, c->depth_actual, c->seed, c->needle_pos);
            cli_json_escape(f, c->expected);
            fputs(", \"answer\": ", f);
            cli_json_escape(f, c->answer);
            fprintf(f, ", \"correct\": %s", c->correct ? "true" : "false");
            if (kind == TASK_MULTIKEY) fprintf(f, ", \"distractor\": %s", c->distractor ? "true" : "false");
            fprintf(f, ", \"kv_bytes_peak\": %zu, \"kv_bytes_end\": %zu, \"kv_tokens\": %lld}", c->kv_peak, c->kv_end, (long long)c->kv_tokens);
        }
        fprintf(f, "\n], \"prefill_tokens\": %lld, \"seconds\": %.3f}\n", r.prefilled, secs);
        fflush(f);
    }

    /* ---- plot ---- */
    if (o->ret_plot) {
        char xt[RET_MAX_LIST][16], yt[RET_MAX_LIST][16], title[160];
        const char *xp[RET_MAX_LIST], *yp[RET_MAX_LIST];
        for (int li = 0; li < nl; li++) {
            snprintf(xt[li], sizeof xt[li], "%d", lengths[li]);
            xp[li] = xt[li];
        }
        for (int di = 0; di < nd; di++) {
            snprintf(yt[di], sizeof yt[di], "%d%%", depths[di]);
            yp[di] = yt[di];
        }
        snprintf(title, sizeof title, "%s  kv %s%s  score %.1f%%  (%d seed%s)", task_kind_name(kind), codec,
                 o->exact ? " exact" : "", 100 * score, ns, ns == 1 ? "" : "s");
        png_heatmap hm = {.title = title, .xlabel = "prompt length (tokens)", .ylabel = "needle depth",
                          .nx = nl, .ny = nd, .xticks = xp, .yticks = yp, .val = acc};
        if (png_heatmap_write(o->ret_plot, &hm)) {
            cli_warn("cannot write plot '%s': %s", o->ret_plot, strerror(errno));
            rc = CLI_EXIT_RUNTIME;
        }
    }

    free(acc);
    free(cells);
    free(prompts);
    free(order);
    free(len_secs);
    free(r.logits);
    task_corpus_free(&corpus);
    kvl_model_free(m);
    return rc;
}
