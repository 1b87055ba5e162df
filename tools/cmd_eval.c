/* `kvlite eval ppl|kld`: perplexity over non-overlapping windows of --ctx
 * tokens (each window a fresh sequence, token i+1 predicted from the logits at
 * i, NLL accumulated in double), and the KL divergence of a KV codec against
 * f32 KV on the same windows (two contexts, log-softmax in double). Windows are
 * prefilled in chunks so the all-logits buffer stays at chunk * n_vocab. */
#include "cli.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { EVAL_CHUNK = 256 };

static kvl_seq *new_seq(kvl_ctx *c) {
    kvl_seq *s = NULL;
    kvl_status st = kvl_seq_create(c, &s);
    if (st != KVL_OK) cli_die(CLI_EXIT_RUNTIME, "cannot create sequence: %s", cli_ctx_msg(c, st));
    return s;
}

static void prefill_or_die(kvl_ctx *c, kvl_seq *s, const kvl_token *t, int n, float *all) {
    kvl_status st = kvl_prefill(s, t, n, NULL, all);
    if (st != KVL_OK)
        cli_die(CLI_EXIT_RUNTIME, "prefill failed: %s", cli_ctx_msg(c, st));
}

int cmd_eval(const cli_opts *o) {
    const int kld = !strcmp(o->subcmd, "kld");
    size_t len = 0;
    char *text = cli_read_file(o->file, &len);
    kvl_model *m = cli_load_model(o->model);
    kvl_model_info info;
    kvl_model_get_info(m, &info);
    const int nv = info.n_vocab;
    const int n_ctx = o->n_ctx > 0 ? o->n_ctx : 512;
    if (n_ctx < 2) cli_die(CLI_EXIT_USAGE, "eval: --ctx must be at least 2");

    int64_t n_tok = 0;
    kvl_token *toks = cli_tokenize(m, text, len, 0, 0, &n_tok);
    int64_t n_win = n_tok / n_ctx;
    if (n_win == 0)
        cli_die(CLI_EXIT_RUNTIME, "'%s' has %lld tokens, fewer than one window of %d (lower --ctx)", o->file,
                (long long)n_tok, n_ctx);
    if (o->max_windows > 0 && n_win > o->max_windows) n_win = o->max_windows;

    /* ppl: one context with the chosen codec; kld: reference f32 + the codec. */
    kvl_ctx *ca = cli_create_ctx(m, o, kld ? "f32" : NULL, n_ctx);
    kvl_ctx *cb = kld ? cli_create_ctx(m, o, NULL, n_ctx) : NULL;
    /* Tokens per prefill call. Per-token codecs give the same logits for any
     * chunking; sealing codecs (KIVI) keep a call's own rows at full
     * precision, so their default is one page per call, which is what decode
     * sees (at most a page of full-precision residual). */
    kvl_kv_stats ks0;
    {
        kvl_seq *s0 = new_seq(kld ? cb : ca);
        kvl_seq_kv_stats(s0, &ks0);
        kvl_seq_free(s0);
    }
    int chunk = o->eval_chunk > 0 ? o->eval_chunk : ks0.sealing ? 32 : EVAL_CHUNK;
    if (chunk > n_ctx) chunk = n_ctx;
    char codec[340];
    snprintf(codec, sizeof codec, "%s", ks0.codec ? ks0.codec : o->kv);
    double bpt = 0, bpv = 0; /* measured at the end of the last window */
    size_t kv_peak = 0, kv_end = 0; /* max over windows of the evaluated sequence's peak / final KV bytes */
    int64_t kv_tokens = 0, evicted = 0;
    float *la = malloc((size_t)chunk * (size_t)nv * sizeof *la);
    float *lb = kld ? malloc((size_t)chunk * (size_t)nv * sizeof *lb) : NULL;
    if (!la || (kld && !lb)) cli_die(CLI_EXIT_RUNTIME, "out of memory for %d x %d logits", chunk, nv);

    double nll_a = 0, nll_b = 0, kl_sum = 0, kl_max = 0;
    int64_t scored = 0, agree = 0;
    double t0 = cli_now();
    cli_progress prog;
    cli_progress_begin(&prog, kld ? "eval kld" : "eval ppl", (long)n_win);
    for (int64_t w = 0; w < n_win; w++) {
        const kvl_token *win = toks + w * n_ctx;
        kvl_seq *sa = new_seq(ca), *sb = kld ? new_seq(cb) : NULL;
        for (int off = 0; off < n_ctx; off += chunk) {
            int nc = n_ctx - off < chunk ? n_ctx - off : chunk;
            prefill_or_die(ca, sa, win + off, nc, la);
            if (kld) prefill_or_die(cb, sb, win + off, nc, lb);
            for (int j = 0; j < nc; j++) {
                int pos = off + j;
                if (pos + 1 >= n_ctx) break;
                kvl_token target = win[pos + 1];
                const float *ra = la + (size_t)j * nv;
                int top_a, top_b;
                double lse_a = cli_logsumexp(ra, nv, &top_a);
                nll_a += lse_a - (double)ra[target];
                if (kld) {
                    const float *rb = lb + (size_t)j * nv;
                    double lse_b = cli_logsumexp(rb, nv, &top_b);
                    nll_b += lse_b - (double)rb[target];
                    double kl = cli_kl_div(ra, lse_a, rb, lse_b, nv);
                    kl_sum += kl;
                    if (kl > kl_max) kl_max = kl;
                    agree += top_a == top_b;
                }
                scored++;
            }
        }
        {
            kvl_kv_stats ks;
            kvl_seq_kv_stats(kld ? sb : sa, &ks);
            bpt = ks.tokens_cached > 0 ? (double)ks.codec_bytes / (double)ks.tokens_cached : 0;
            bpv = ks.bits_per_value;
            if (ks.bytes_peak > kv_peak) kv_peak = ks.bytes_peak;
            if (ks.bytes_used > kv_end) kv_end = ks.bytes_used;
            kv_tokens = ks.tokens_cached;
            evicted = ks.tokens_evicted;
        }
        kvl_seq_free(sa);
        kvl_seq_free(sb);
        cli_progress_update(&prog, (long)(w + 1));
    }
    cli_progress_end(&prog);
    double secs = cli_now() - t0;
    double ppl_a = exp(nll_a / (double)scored), ppl_b = kld ? exp(nll_b / (double)scored) : 0;
    double kl_mean = kld ? kl_sum / (double)scored : 0, agree_pct = kld ? 100.0 * (double)agree / (double)scored : 0;

    if (o->json) {
        cli_json j;
        cli_json_begin(&j, stdout);
        cli_json_str(&j, "eval", kld ? "kld" : "ppl");
        cli_json_str(&j, "model", info.name && info.name[0] ? info.name : o->model);
        cli_json_str(&j, "file", o->file);
        cli_json_int(&j, "ctx", n_ctx);
        cli_json_str(&j, "kv_codec", codec);
        cli_json_bool(&j, "exact", o->exact);
        cli_json_int(&j, "chunk", chunk);
        cli_json_num(&j, "bytes_per_token", bpt);
        cli_json_num(&j, "bits_per_value", bpv);
        cli_json_int(&j, "windows", (long long)n_win);
        cli_json_str(&j, "policy", o->kv_policy ? o->kv_policy : "full");
        cli_json_str(&j, "keep", o->kv_keep ? o->kv_keep : "");
        cli_json_int(&j, "kv_bytes_peak", (long long)kv_peak);
        cli_json_int(&j, "kv_bytes_end", (long long)kv_end);
        cli_json_int(&j, "kv_tokens_end", (long long)kv_tokens);
        cli_json_int(&j, "tokens_evicted", (long long)evicted);
        cli_json_int(&j, "tokens_scored", (long long)scored);
        if (kld) {
            cli_json_num(&j, "kld_mean", kl_mean);
            cli_json_num(&j, "kld_max", kl_max);
            cli_json_num(&j, "top1_agree_pct", agree_pct);
            cli_json_num(&j, "ppl_f32", ppl_a);
            cli_json_num(&j, "ppl_codec", ppl_b);
        } else {
            cli_json_num(&j, "ppl", ppl_a);
            cli_json_num(&j, "nll_mean", nll_a / (double)scored);
        }
        cli_json_num(&j, "seconds", secs);
        cli_json_end(&j);
    } else if (kld) {
        printf("mean KLD:      %.6f  (max %.6f)\n", kl_mean, kl_max);
        printf("top-1 agree:   %.2f %%\n", agree_pct);
        printf("ppl f32:       %.4f\n", ppl_a);
        char label[64];
        snprintf(label, sizeof label, "ppl %.56s:", codec);
        printf("%-14s %.4f\n", label, ppl_b);
        printf("kv:            %s, %.1f bytes/token, %.3f bits/value at ctx %d\n", codec, bpt, bpv, n_ctx);
        printf("windows:       %lld of %d tokens, %lld tokens scored, chunk %d, %.1f s%s\n", (long long)n_win, n_ctx,
               (long long)scored, chunk, secs, o->exact ? ", exact matmul (both passes)" : "");
    } else {
        printf("ppl:           %.4f\n", ppl_a);
        printf("kv:            %s, %.1f bytes/token, %.3f bits/value at ctx %d\n", codec, bpt, bpv, n_ctx);
        if (o->kv_policy)
            printf("policy:        %s keep %s: %lld tokens cached at the end, KV peak %zu bytes, end %zu\n",
                   o->kv_policy, o->kv_keep ? o->kv_keep : "-", (long long)kv_tokens, kv_peak, kv_end);
        printf("windows:       %lld of %d tokens, %lld tokens scored, chunk %d, %.1f s%s\n", (long long)n_win, n_ctx,
               (long long)scored, chunk, secs, o->exact ? ", exact matmul" : "");
    }
    fflush(stdout);

    free(la);
    free(lb);
    free(toks);
    free(text);
    kvl_ctx_free(ca);
    kvl_ctx_free(cb);
    kvl_model_free(m);
    return CLI_EXIT_OK;
}
