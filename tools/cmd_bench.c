/* `kvlite bench`: prefill throughput on a prompt of N real-text tokens (a fixed
 * paragraph repeated) and greedy decode throughput for --gen tokens after it,
 * median over --reps fresh sequences; plus KV bytes per token and peak RSS. */
#include "cli.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char BENCH_TEXT[] =
    "The old lighthouse keeper climbed the spiral stairs every evening, counting the steps as his father "
    "had done before him. From the lamp room he could see the whole bay: the fishing boats coming home, "
    "the gulls circling over the harbour, and the long line of the coast fading into the mist. He wrote "
    "the weather in a notebook, trimmed the wick, and polished the great lens until it shone. Ships he "
    "would never meet relied on that light, and he found a quiet pride in the thought. In winter the "
    "storms shook the tower and salt spray reached the highest windows, yet the lamp never failed. ";

static kvl_token argmax_tok(const float *l, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (l[i] > l[best]) best = i;
    return best;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(const double *v, int n) {
    double *t = malloc((size_t)n * sizeof *t);
    if (!t) cli_die(CLI_EXIT_RUNTIME, "out of memory");
    memcpy(t, v, (size_t)n * sizeof *t);
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    double m = n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
    free(t);
    return m;
}

int cmd_bench(const cli_opts *o) {
    kvl_model *m = cli_load_model(o->model);
    kvl_model_info info;
    kvl_model_get_info(m, &info);
    const int np = o->bench_prompt, ng = o->bench_gen, reps = o->reps;
    int n_ctx = o->n_ctx > 0 ? o->n_ctx : np + ng;
    if (n_ctx < np + ng)
        cli_die(CLI_EXIT_USAGE, "bench: --ctx %d is smaller than --prompt + --gen (%d)", n_ctx, np + ng);

    /* Prompt: BOS (if the model has one) then the paragraph's tokens, repeated. */
    int64_t n_para = 0;
    kvl_token *para = cli_tokenize(m, BENCH_TEXT, strlen(BENCH_TEXT), 0, 0, &n_para);
    if (n_para <= 0) cli_die(CLI_EXIT_RUNTIME, "bench: tokenizer produced no tokens");
    kvl_token *prompt = malloc((size_t)np * sizeof *prompt);
    float *logits = malloc((size_t)info.n_vocab * sizeof *logits);
    double *pf = malloc((size_t)reps * sizeof *pf), *dc = malloc((size_t)reps * sizeof *dc);
    if (!prompt || !logits || !pf || !dc) cli_die(CLI_EXIT_RUNTIME, "out of memory");
    int start = 0;
    if (info.bos >= 0) prompt[start++] = info.bos;
    for (int i = start; i < np; i++) prompt[i] = para[(i - start) % n_para];

    kvl_ctx *ctx = cli_create_ctx(m, o, NULL, n_ctx);
    kvl_kv_stats st;
    memset(&st, 0, sizeof st);
    cli_progress prog;
    cli_progress_begin(&prog, "bench", reps);
    for (int r = 0; r < reps; r++) {
        kvl_seq *seq = NULL;
        kvl_status s = kvl_seq_create(ctx, &seq);
        if (s != KVL_OK) cli_die(CLI_EXIT_RUNTIME, "cannot create sequence: %s", cli_ctx_msg(ctx, s));
        double t0 = cli_now();
        s = kvl_prefill(seq, prompt, np, logits, NULL);
        double t1 = cli_now();
        if (s != KVL_OK) cli_die(CLI_EXIT_RUNTIME, "prefill failed: %s", cli_ctx_msg(ctx, s));
        for (int i = 0; i < ng; i++) {
            s = kvl_decode(seq, argmax_tok(logits, info.n_vocab), logits);
            if (s != KVL_OK) cli_die(CLI_EXIT_RUNTIME, "decode failed: %s", cli_ctx_msg(ctx, s));
        }
        double t2 = cli_now();
        pf[r] = t1 > t0 ? np / (t1 - t0) : 0;
        dc[r] = t2 > t1 && ng > 0 ? ng / (t2 - t1) : 0;
        kvl_seq_kv_stats(seq, &st);
        kvl_seq_free(seq);
        cli_progress_update(&prog, r + 1);
    }
    cli_progress_end(&prog);
    double pf_med = median(pf, reps), dc_med = median(dc, reps);
    size_t rss = cli_peak_rss();
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int threads = o->n_threads > 0 ? o->n_threads : (int)(cores > 0 ? cores : 1);

    if (o->json) {
        cli_json j;
        cli_json_begin(&j, stdout);
        cli_json_str(&j, "model", info.name && info.name[0] ? info.name : o->model);
        cli_json_str(&j, "arch", info.arch ? info.arch : "");
        cli_json_int(&j, "weight_bytes", (long long)info.weight_bytes);
        cli_json_int(&j, "threads", threads);
        cli_json_str(&j, "kv_codec", st.codec ? st.codec : o->kv);
        cli_json_bool(&j, "exact", o->exact);
        cli_json_int(&j, "ctx", n_ctx);
        cli_json_int(&j, "prompt_tokens", np);
        cli_json_int(&j, "gen_tokens", ng);
        cli_json_int(&j, "reps", reps);
        cli_json_num(&j, "prefill_tok_s", pf_med);
        cli_json_num(&j, "decode_tok_s", dc_med);
        cli_json_num_array(&j, "prefill_tok_s_all", pf, reps);
        cli_json_num_array(&j, "decode_tok_s_all", dc, reps);
        cli_json_num(&j, "kv_bytes_per_token", st.bytes_per_token);
        cli_json_int(&j, "kv_bytes_used", (long long)st.bytes_used);
        cli_json_int(&j, "kv_bytes_peak", (long long)st.bytes_peak);
        cli_json_int(&j, "peak_rss_bytes", (long long)rss);
        cli_json_end(&j);
    } else {
        printf("model:       %s (%s, %.1f MiB weights)\n", info.name && info.name[0] ? info.name : o->model,
               info.arch ? info.arch : "?", (double)info.weight_bytes / (1024.0 * 1024.0));
        printf("setup:       %d threads, kv %s, ctx %d, %d reps (median)%s\n", threads, st.codec ? st.codec : o->kv,
               n_ctx, reps, o->exact ? ", exact matmul" : "");
        printf("prefill:     %8.2f tok/s  (%d tokens)\n", pf_med, np);
        printf("decode:      %8.2f tok/s  (%d tokens)\n", dc_med, ng);
        printf("KV:          %.1f bytes/token, %zu bytes used, %zu peak\n", st.bytes_per_token, st.bytes_used,
               st.bytes_peak);
        printf("peak RSS:    %.1f MiB\n", (double)rss / (1024.0 * 1024.0));
        fflush(stdout);
    }

    kvl_ctx_free(ctx);
    kvl_model_free(m);
    free(para);
    free(prompt);
    free(logits);
    free(pf);
    free(dc);
    return CLI_EXIT_OK;
}
