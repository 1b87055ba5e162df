/* `kvlite kv eval`: the CacheGen levels against page codecs as transport
 * formats. The first --prefix tokens of TEXT are prefilled with an f16
 * cache (the reference); the reference continues over the next --cont
 * tokens (all logits kept). Each CacheGen level encodes the prefix's KV,
 * decodes it into a fresh f16 sequence and continues; each baseline codec
 * prefills the prefix into its own pages, which are transcoded into f16
 * (kvl_seq_transcode) before continuing. Reported per point: bits/value of
 * the prefix KV (every byte of the CacheGen file; codec bytes of the pages;
 * zstd of the int8 session file), mean KL(P_ref || P) over the continuation,
 * top-1 agreement, continuation perplexity and its change, encode / decode
 * MB/s of f16 KV bytes; and per level the rANS coder against zstd (levels 3
 * and 19) on the same symbol streams (bits/value, MB/s). */
#include "cli.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/engine.h"
#include "kv/cachegen.h"
#include "util/rans.h"
#ifdef KVL_HAVE_ZSTD
#include <zstd.h>
#endif

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct cont_ref {
    int M, nv;
    const kvl_token *tok; /* [M] continuation tokens */
    float *logits;        /* [M][nv] reference */
    double *lse;          /* [M] */
    int *top;             /* [M] */
    double nll;           /* mean over the M-1 predictions inside the continuation */
} cont_ref;

typedef struct point {
    char name[64];
    double bits, kld, top1, ppl, dppl, enc_mbs, dec_mbs;
} point;

/* Continue s over the continuation; KLD, top-1 and perplexity against ref. */
static void score(kvl_ctx *c, kvl_seq *s, const cont_ref *r, float *buf, point *pt) {
    kvl_status st = kvl_prefill(s, r->tok, r->M, NULL, buf);
    if (st != KVL_OK) cli_die(CLI_EXIT_RUNTIME, "kv eval: prefill failed: %s", cli_ctx_msg(c, st));
    double kl = 0, nll = 0;
    int agree = 0;
    for (int i = 0; i < r->M; i++) {
        const float *a = r->logits + (size_t)i * r->nv, *b = buf + (size_t)i * r->nv;
        int top = 0;
        const double lb = cli_logsumexp(b, r->nv, &top), la = r->lse[i];
        kl += cli_kl_div(a, la, b, lb, r->nv);
        agree += top == r->top[i];
        if (i + 1 < r->M) nll += lb - (double)b[r->tok[i + 1]];
    }
    pt->kld = kl / r->M;
    pt->top1 = (double)agree / r->M;
    pt->ppl = exp(nll / (r->M - 1));
    pt->dppl = pt->ppl / exp(r->nll) - 1;
}

#ifdef KVL_HAVE_ZSTD
/* zstd of n bytes at level lv: compressed bytes, compress / decompress seconds. */
static size_t zstd_of(const void *src, size_t n, int lv, double *tc, double *td) {
    const size_t cap = ZSTD_compressBound(n);
    void *dst = malloc(cap), *back = malloc(n ? n : 1);
    if (!dst || !back) cli_die(CLI_EXIT_RUNTIME, "out of memory");
    double t0 = now_s();
    const size_t z = ZSTD_compress(dst, cap, src, n, lv);
    *tc = now_s() - t0;
    if (ZSTD_isError(z)) cli_die(CLI_EXIT_RUNTIME, "zstd: %s", ZSTD_getErrorName(z));
    t0 = now_s();
    const size_t d = ZSTD_decompress(back, n, dst, z);
    *td = now_s() - t0;
    if (ZSTD_isError(d) || d != n || memcmp(back, src, n)) cli_die(CLI_EXIT_RUNTIME, "zstd: round trip failed");
    free(dst), free(back);
    return z;
}
#endif

/* rANS vs zstd on the symbol streams of every layer of s at parameters prm. */
static void coder_compare(const kvl_seq *s, const kvl_cachegen_params *prm, int json, int level) {
    const kvl_kv_table *t = s->t;
    const kvl_kv_config *cfg = kvl_kv_pool_config(kvl_kv_table_pool(t));
    const int L = cfg->n_layer, C = cfg->n_head_kv * cfg->head_dim, T = kvl_seq_pos(s);
    const size_t cap = (size_t)T * 2 * C;
    uint8_t *sym = malloc(cap * L), *dec = malloc(cap), *out = malloc(kvl_rans_bound(cap));
    uint16_t *ctx = malloc(cap * L * sizeof *ctx);
    if (!sym || !dec || !out || !ctx) cli_die(CLI_EXIT_RUNTIME, "out of memory");
    kvl_err e;
    int nc = 0;
    size_t per = 0;
    for (int l = 0; l < L; l++)
        if (kvl_cachegen_layer_symbols(t, T, l, prm, sym + per * l, ctx + per * l, &nc, &per, &e))
            cli_die(CLI_EXIT_RUNTIME, "kv eval: %s", e.msg);
    const size_t all = per * L;
    kvl_rans_models *m = NULL;
    if (kvl_rans_models_create(nc, &m, &e)) cli_die(CLI_EXIT_RUNTIME, "kv eval: %s", e.msg);
    size_t rbytes = 0;
    double tenc = 0, tdec = 0;
    for (int l = 0; l < L; l++) {
        const uint8_t *sy = sym + per * l;
        const uint16_t *cx = ctx + per * l;
        double t0 = now_s();
        kvl_rans_models_reset(m);
        kvl_rans_count(m, sy, cx, per, &e);
        kvl_rans_normalize(m);
        size_t len = 0;
        if (kvl_rans_encode(m, sy, cx, per, out, kvl_rans_bound(per), &len, &e)) cli_die(CLI_EXIT_RUNTIME, "kv eval: %s", e.msg);
        tenc += now_s() - t0;
        rbytes += len + kvl_rans_models_bytes(m);
        t0 = now_s();
        if (kvl_rans_decoder_prepare(m, &e) || kvl_rans_decode(m, cx, per, out, len, dec, &e) || memcmp(dec, sy, per))
            cli_die(CLI_EXIT_RUNTIME, "kv eval: rANS round trip failed: %s", e.msg);
        tdec += now_s() - t0;
    }
    const double mb = (double)all / 1e6;
    if (json) {
        printf("{\"kind\":\"coder\",\"level\":%d,\"coder\":\"rans\",\"symbols\":%zu,\"bits_per_value\":%.4f,\"enc_MBps\":%.1f,"
               "\"dec_MBps\":%.1f}\n",
               level, all, 8.0 * (double)rbytes / (double)all, mb / tenc, mb / tdec);
    } else {
        printf("  coder level %d: %zu symbols; rANS (models included) %.4f bits/value, encode %.1f MB/s, decode %.1f MB/s\n",
               level, all, 8.0 * (double)rbytes / (double)all, mb / tenc, mb / tdec);
    }
#ifdef KVL_HAVE_ZSTD
    static const int lvs[2] = {3, 19};
    for (int z = 0; z < 2; z++) {
        double tc = 0, td = 0;
        size_t zb = 0;
        for (int l = 0; l < L; l++) {
            double a, b;
            zb += zstd_of(sym + per * l, per, lvs[z], &a, &b);
            tc += a, td += b;
        }
        if (json)
            printf("{\"kind\":\"coder\",\"level\":%d,\"coder\":\"zstd-%d\",\"symbols\":%zu,\"bits_per_value\":%.4f,"
                   "\"enc_MBps\":%.1f,\"dec_MBps\":%.1f}\n",
                   level, lvs[z], all, 8.0 * (double)zb / (double)all, mb / tc, mb / td);
        else
            printf("  coder level %d: zstd -%d %.4f bits/value, encode %.1f MB/s, decode %.1f MB/s\n", level, lvs[z],
                   8.0 * (double)zb / (double)all, mb / tc, mb / td);
    }
#else
    if (!json) printf("  coder level %d: zstd not built in (install libzstd-dev and rebuild)\n", level);
#endif
    kvl_rans_models_free(m);
    free(sym), free(dec), free(out), free(ctx);
}

static void print_point(const point *p, int json) {
    if (json)
        printf("{\"kind\":\"point\",\"name\":\"%s\",\"bits_per_value\":%.4f,\"kld\":%.6g,\"top1\":%.4f,\"ppl\":%.4f,"
               "\"dppl\":%.5f,\"enc_MBps\":%.1f,\"dec_MBps\":%.1f}\n",
               p->name, p->bits, p->kld, p->top1, p->ppl, p->dppl, p->enc_mbs, p->dec_mbs);
    else
        printf("%-14s %8.4f %12.3e %7.4f %9.4f %+8.3f%% %9.1f %9.1f\n", p->name, p->bits, p->kld, p->top1, p->ppl,
               100 * p->dppl, p->enc_mbs, p->dec_mbs);
    fflush(stdout);
}

int cmd_kv_eval(const cli_opts *o) {
    const int P = o->kv_prefix > 0 ? o->kv_prefix : 2048, M = o->kv_cont > 0 ? o->kv_cont : 256;
    size_t len = 0;
    char *text = cli_read_file(o->file, &len);
    kvl_model *m = cli_load_model(o->model);
    kvl_model_info info;
    kvl_model_get_info(m, &info);
    int64_t n = 0;
    kvl_token *toks = cli_tokenize(m, text, len, 1, 0, &n);
    if (n < P + M) cli_die(CLI_EXIT_RUNTIME, "kv eval: %s has %lld tokens, fewer than --prefix + --cont = %d", o->file, (long long)n, P + M);
    const int n_ctx = P + M;
    const int nv = info.n_vocab;
    const double values = (double)P * info.n_layer * info.n_head_kv * info.head_dim * 2, f16mb = values * 2 / 1e6;
    kvl_ctx *ref = cli_create_ctx(m, o, "f16", 3 * n_ctx); /* budget for the prefix, a restored copy and a continuation */
    kvl_seq *pre = NULL, *s = NULL;
    kvl_status st = kvl_seq_create(ref, &pre);
    if (!st) st = kvl_prefill(pre, toks, P, NULL, NULL);
    if (st) cli_die(CLI_EXIT_RUNTIME, "kv eval: prefill failed: %s", cli_ctx_msg(ref, st));
    cont_ref r = {.M = M, .nv = nv, .tok = toks + P};
    r.logits = malloc((size_t)M * nv * sizeof(float));
    r.lse = malloc((size_t)M * sizeof(double));
    r.top = malloc((size_t)M * sizeof(int));
    float *buf = malloc((size_t)M * nv * sizeof(float));
    if (!r.logits || !r.lse || !r.top || !buf) cli_die(CLI_EXIT_RUNTIME, "out of memory");
    if ((st = kvl_seq_fork(pre, &s)) || (st = kvl_prefill(s, r.tok, M, NULL, r.logits)))
        cli_die(CLI_EXIT_RUNTIME, "kv eval: reference continuation failed: %s", cli_ctx_msg(ref, st));
    kvl_seq_free(s);
    for (int i = 0; i < M; i++) r.lse[i] = cli_logsumexp(r.logits + (size_t)i * nv, nv, &r.top[i]);
    for (int i = 0; i + 1 < M; i++) r.nll += r.lse[i] - (double)r.logits[(size_t)i * nv + r.tok[i + 1]];
    r.nll /= M - 1;
    if (o->json)
        printf("{\"kind\":\"setup\",\"file\":\"%s\",\"prefix\":%d,\"cont\":%d,\"exact\":%s,\"ppl_ref\":%.4f,\"values\":%.0f}\n", o->file, P,
               M, o->exact ? "true" : "false", exp(r.nll), values);
    else
        printf("kv eval: %s, prefix %d tokens, continuation %d, %s path; reference (f16 cache) ppl %.4f\n"
               "%-14s %8s %12s %7s %9s %9s %9s %9s\n",
               o->file, P, M, o->exact ? "exact" : "default", exp(r.nll), "point", "bits/val", "KLD", "top1", "ppl", "dppl",
               "enc MB/s", "dec MB/s");

    /* CacheGen levels */
    const char *lv = o->cg_levels ? o->cg_levels : "0,1,2,3";
    for (const char *p = lv; *p;) {
        char *endp;
        const long L = strtol(p, &endp, 10);
        if (endp == p || L < 0 || L >= KVL_CG_LEVELS) cli_die(CLI_EXIT_USAGE, "kv eval: --levels: bad list '%s'", lv);
        p = *endp == ',' ? endp + 1 : endp;
        const kvl_cachegen_opts cg = {(int)L, o->cg_scale, o->cg_group, o->cg_chan};
        void *fb = NULL;
        size_t fl = 0;
        point pt = {0};
        snprintf(pt.name, sizeof pt.name, "cachegen-%ld", L);
        kvl_cachegen_params prm;
        kvl_err e;
        kvl_cachegen_level((int)L, o->cg_scale > 0 ? o->cg_scale : 1.0f, &prm, &e);
        if (o->cg_group > 0) prm.group = o->cg_group;
        if (o->cg_chan > 0) prm.chan_group = o->cg_chan;
        const char *tune = getenv("KVL_CG_TUNE"); /* tuning hook (bench/cachegen_tune.sh): steps and shape by hand */
        double t0 = now_s();
        if (tune) {
            float v[9];
            if (sscanf(tune, "%f,%f,%f,%f,%f,%f,%f,%f,%f", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7], &v[8]) != 9)
                cli_die(CLI_EXIT_USAGE, "KVL_CG_TUNE: want ka,kd,va,vd,depth0,depth1,depth2,n_sink,group");
            prm.anchor[0] = v[0], prm.delta[0] = v[1], prm.anchor[1] = v[2], prm.delta[1] = v[3];
            prm.depth[0] = v[4], prm.depth[1] = v[5], prm.depth[2] = v[6], prm.n_sink = (int)v[7], prm.group = (int)v[8];
            prm.level = -1;
            kvl_ser_buf sb = {0};
            if (kvl_cachegen_encode(pre->t, pre->pos, pre->toks, m->identity, "", &prm, &sb, NULL, &e) != KVL_OK)
                cli_die(CLI_EXIT_RUNTIME, "kv eval: %s", e.msg);
            /* the file's identity must be the model's for the load */
            fb = sb.p, fl = sb.n;
        } else if ((st = kvl_seq_save_cachegen(pre, &cg, &fb, &fl))) {
            cli_die(CLI_EXIT_RUNTIME, "kv eval: %s", cli_ctx_msg(ref, st));
        }
        const double te = now_s() - t0;
        t0 = now_s();
        if ((st = kvl_seq_load_cachegen(ref, fb, fl, &s))) cli_die(CLI_EXIT_RUNTIME, "kv eval: %s", cli_ctx_msg(ref, st));
        const double td = now_s() - t0;
        pt.bits = 8.0 * (double)fl / values;
        pt.enc_mbs = f16mb / te;
        pt.dec_mbs = f16mb / td;
        score(ref, s, &r, buf, &pt);
        kvl_seq_free(s);
        free(fb);
        print_point(&pt, o->json);
        if (!tune) coder_compare(pre, &prm, o->json, (int)L);
    }

    /* page codecs as transport formats */
    const char *bl = o->kv_baselines ? o->kv_baselines : "int8,int4,kivi2";
    char *blc = strdup(bl);
    for (char *save = NULL, *name = strtok_r(blc, ",", &save); name; name = strtok_r(NULL, ",", &save)) {
        kvl_ctx *cx = cli_create_ctx(m, o, name, 2 * n_ctx);
        kvl_seq *sx = NULL;
        point pt = {0};
        snprintf(pt.name, sizeof pt.name, "%s", name);
        if ((st = kvl_seq_create(cx, &sx)) || (st = kvl_prefill(sx, toks, P, NULL, NULL)))
            cli_die(CLI_EXIT_RUNTIME, "kv eval: %s prefill failed: %s", name, cli_ctx_msg(cx, st));
        kvl_kv_stats ks;
        kvl_seq_kv_stats(sx, &ks);
        pt.bits = ks.bits_per_value;
        if ((st = kvl_seq_transcode(ref, sx, &s))) cli_die(CLI_EXIT_RUNTIME, "kv eval: %s", cli_ctx_msg(ref, st));
        score(ref, s, &r, buf, &pt);
        kvl_seq_free(s);
        print_point(&pt, o->json);
#ifdef KVL_HAVE_ZSTD
        if (!strcmp(name, "int8")) { /* zstd of the int8 session file (pages + headers) */
            void *sb = NULL;
            size_t sl = 0;
            if ((st = kvl_seq_save(sx, &sb, &sl))) cli_die(CLI_EXIT_RUNTIME, "kv eval: %s", cli_ctx_msg(cx, st));
            for (int z = 0; z < 2; z++) {
                const int zl = z ? 19 : 3;
                double tc, td;
                const size_t zb = zstd_of(sb, sl, zl, &tc, &td);
                point pz = pt;
                snprintf(pz.name, sizeof pz.name, "zstd%d-int8", zl);
                pz.bits = 8.0 * (double)zb / values;
                pz.enc_mbs = f16mb / tc; /* zstd alone (the int8 encode runs in the prefill) */
                pz.dec_mbs = f16mb / td;
                print_point(&pz, o->json);
            }
            free(sb);
        }
#endif
        kvl_seq_free(sx);
        kvl_ctx_free(cx);
    }
    free(blc);
    kvl_seq_free(pre);
    kvl_ctx_free(ref);
    kvl_model_free(m);
    free(r.logits), free(r.lse), free(r.top), free(buf);
    free(toks);
    free(text);
    return CLI_EXIT_OK;
}
