/* `kvlite eval kv-error`: per-layer K/V reconstruction error and attention-
 * output error of the KV codecs (--kv, --kv-k, --kv-v, --kv-layers) against
 * f32 KV on the first --ctx tokens of a text (kvl_kv_error). */
#include "cli.h"

#include <stdlib.h>
#include <string.h>

int cmd_kverr(const cli_opts *o) {
    size_t len = 0;
    char *text = cli_read_file(o->file, &len);
    kvl_model *m = cli_load_model(o->model);
    kvl_model_info info;
    kvl_model_get_info(m, &info);
    const int n_ctx = o->n_ctx > 0 ? o->n_ctx : 1024;
    int64_t n_tok = 0;
    kvl_token *toks = cli_tokenize(m, text, len, 0, 0, &n_tok);
    if (n_tok < n_ctx)
        cli_die(CLI_EXIT_RUNTIME, "'%s' has %lld tokens, fewer than --ctx %d", o->file, (long long)n_tok, n_ctx);
    const int n_query = n_ctx < 64 ? n_ctx : 64;
    kvl_ctx_params p;
    kvl_ctx_params_default(&p);
    p.n_threads = o->n_threads;
    p.exact_matmul = o->exact;
    p.no_simd = getenv("KVL_NO_SIMD") != NULL;
    p.kv_codec = o->kv_k ? o->kv_k : o->kv;
    p.kv_codec_v = o->kv_v ? o->kv_v : o->kv_k ? o->kv : NULL;
    p.kv_layers = o->kv_layers;
    kvl_kv_error_layer *e = calloc((size_t)info.n_layer, sizeof *e);
    if (!e) cli_die(CLI_EXIT_RUNTIME, "out of memory");
    char err[512] = "";
    double t0 = cli_now();
    kvl_status st = kvl_kv_error(m, &p, toks, n_ctx, n_query, e, err, sizeof err);
    if (st != KVL_OK)
        cli_die(st == KVL_ERR_ARG ? CLI_EXIT_USAGE : CLI_EXIT_RUNTIME, "eval kv-error: %s",
                err[0] ? err : kvl_status_str(st));
    double sk = 0, sv = 0, sa = 0, bk = 0, bv = 0;
    int worst = 0;
    for (int l = 0; l < info.n_layer; l++) {
        sk += e[l].k_rel, sv += e[l].v_rel, sa += e[l].attn_rel, bk += e[l].k_bits, bv += e[l].v_bits;
        if (e[l].attn_rel > e[worst].attn_rel) worst = l;
    }
    const double nl = info.n_layer;
    char spec[400];
    snprintf(spec, sizeof spec, "%s%s%s%s%s", p.kv_codec, p.kv_codec_v ? " / " : "", p.kv_codec_v ? p.kv_codec_v : "",
             p.kv_layers ? " layers " : "", p.kv_layers ? p.kv_layers : "");
    if (o->json) {
        cli_json j;
        cli_json_begin(&j, stdout);
        cli_json_str(&j, "eval", "kv-error");
        cli_json_str(&j, "model", info.name && info.name[0] ? info.name : o->model);
        cli_json_str(&j, "file", o->file);
        cli_json_str(&j, "kv_codec", spec);
        cli_json_int(&j, "ctx", n_ctx);
        cli_json_int(&j, "queries", n_query);
        cli_json_num(&j, "k_rel_mean", sk / nl);
        cli_json_num(&j, "v_rel_mean", sv / nl);
        cli_json_num(&j, "attn_rel_mean", sa / nl);
        cli_json_num(&j, "bits_per_value", (bk + bv) / (2 * nl));
        cli_json_int(&j, "worst_layer", worst);
        cli_json_end(&j);
        /* per-layer rows as a second JSON line */
        printf("{\"layers\": [");
        for (int l = 0; l < info.n_layer; l++)
            printf("%s{\"layer\": %d, \"k_rel\": %.6g, \"v_rel\": %.6g, \"attn_rel\": %.6g, \"k_bits\": %.4f, "
                   "\"v_bits\": %.4f}",
                   l ? ", " : "", l, e[l].k_rel, e[l].v_rel, e[l].attn_rel, e[l].k_bits, e[l].v_bits);
        printf("]}\n");
    } else {
        printf("kv %s vs f32, first %d tokens of %s, queries of the last %d (%.1f s)\n", spec, n_ctx, o->file, n_query,
               cli_now() - t0);
        printf("%5s %11s %11s %11s %7s %7s\n", "layer", "K rel MSE", "V rel MSE", "attn rel", "K bits", "V bits");
        for (int l = 0; l < info.n_layer; l++)
            printf("%5d %11.3e %11.3e %11.3e %7.3f %7.3f%s\n", l, e[l].k_rel, e[l].v_rel, e[l].attn_rel, e[l].k_bits,
                   e[l].v_bits, l == worst ? "  <- worst" : "");
        printf("%5s %11.3e %11.3e %11.3e %7.3f %7.3f\n", "mean", sk / nl, sv / nl, sa / nl, bk / nl, bv / nl);
    }
    free(e);
    free(toks);
    free(text);
    kvl_model_free(m);
    return CLI_EXIT_OK;
}
