/* Numerical agreement with a Hugging Face transformers reference (float32,
 * eager attention, same de-quantized GGUF weights), read from the committed
 * dump tests/data/ref_logits.txt written by scripts/ref_dump.py. Skipped
 * without the model (KVL_MODEL).
 *
 * For each reference prompt (chat 37 tokens, sentence 16, wikitext 1024,
 * Shakespeare 4096 tokens; token ids are stored, so the tokenizer plays no
 * part) the prompt is prefilled with the f32 KV codec and, at the sampled
 * positions: (1) top-1 id equals the reference's unless the reference's own
 * top1-top2 margin is a near-tie; (2) our logits at the reference's top-32 ids
 * are close to the reference logits; (3) log-softmax of those ids (our full-row
 * logsumexp vs the stored one) agrees, per position and as a top-32 KL; plus
 * per-prompt means and the mean next-token NLL. Then 64 greedy kvl_decode
 * steps from the two short prompts must reproduce the reference ids exactly (a
 * divergence is tolerated only if the reference's margin at the first
 * diverging step is a near-tie); the decode goes on feeding the reference's
 * ids, so every one of the 64 steps is compared and any later flip must be a
 * near-tie too. The same greedy run with the f16 codec is reported, not
 * asserted. Measured errors are printed for docs/RESULTS.md
 * (KVL_REF_VERBOSE=1: per position). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvlite.h"
#include "test.h"

/* Tolerances. kvlite quantizes matmul activations to int8 per block of 32
 * with an fp16 scale (as llama.cpp does for Q4_x/Q8_0 weights), so its logits
 * carry a quantization error, not float32 round-off. Measured on this model
 * (SmolLM2-135M Q4_1, logits ~10..40): emulating exactly that activation
 * quantization inside transformers (every nn.Linear input rounded to int8
 * blocks) moves logits by 0.25 mean / 2.4 max (full rows, chat prompt), gives
 * a KL(ref||emul) of 0.006 mean / 0.04 max per position, moves the ref's
 * top1-top2 margin by up to 0.68 and flips the argmax at ref margins of 0.04,
 * 0.08 and 0.43. kvlite against the reference measures the same: 0.32 mean /
 * 2.8 max, KL 0.006 / 0.05, margin shifts up to 0.74 (kvlite vs the
 * emulation differs as much again: the rounding is chaotic, so only the error
 * level, not the exact values, can be matched). So the tolerances sit at
 * about 1.5-2x the errors int8 activations alone produce; a real bug (wrong
 * RoPE, off-by-one position, bad dequant, KV corruption) gives errors of many
 * logits and top-1 flips at large margins, far outside them.
 *
 * Per position, over the reference's top-32 ids (measured = max over the 88
 * sampled positions of the 4 prompts):
 *   REL_TOL      max|ours - ref| / max(max|ref|, 10)  (measured 0.087: 2.34
 *                logits at a top logit of 27, after <|im_end|> in the chat)
 *   LOGPROB_TOL  max|log p_ours - log p_ref| nats, each side with its own
 *                full-row logsumexp                   (measured 1.57)
 *   PKL_TOL      sum p_ref (log p_ref - log p_ours), a KL restricted to the
 *                top-32 (most of the mass)             (measured 0.072)
 * Per prompt, means over its sampled positions:
 *   MEAN_ABS_TOL mean of the per-position max abs logit error (measured 0.25-0.66)
 *   MEAN_PKL_TOL mean top-32 KL                        (measured 0.0004-0.014)
 *   NLL_TOL      |mean NLL of the prompt's next tokens, ours - ref| (measured <= 0.045)
 * TIE_MARGIN: a reference top1-top2 margin below this (logits) is a near-tie
 *   where a different argmax is arithmetic, not a bug: the emulation above
 *   flips the argmax at a 0.43 margin from int8 activations alone (kvlite's
 *   own flips so far: margins 0.06-0.17). */
#define REL_TOL 0.15
#define LOGPROB_TOL 2.5
#define PKL_TOL 0.15
#define MEAN_ABS_TOL 1.0
#define MEAN_PKL_TOL 0.03
#define NLL_TOL 0.10
#define TIE_MARGIN 0.5

#define TOPK_MAX 64
#define CHUNK 512 /* prefill chunk for all_logits: CHUNK * n_vocab floats */

typedef struct {
    int pos, next, k;
    double next_logit, lse;
    int ids[TOPK_MAX];
    double logits[TOPK_MAX];
} ref_pos;

typedef struct {
    int id;
    double top1, margin, lse;
} ref_step;

typedef struct {
    char name[64];
    int n;
    kvl_token *tokens;
    int n_pos;
    ref_pos *pos;
    int n_steps;
    ref_step *steps;
} ref_prompt;

/* ---- dump parser: whitespace-separated words; a word starting with '#'
 * comments out the rest of its line. ---- */

static int next_word(FILE *f, char *buf, size_t cap) {
    for (;;) {
        if (fscanf(f, "%255s", buf) != 1) return 0;
        (void)cap;
        if (buf[0] != '#') return 1;
        int ch;
        while ((ch = fgetc(f)) != EOF && ch != '\n') {}
    }
}

static int expect(FILE *f, const char *kw) {
    char w[256];
    if (!next_word(f, w, sizeof w) || strcmp(w, kw) != 0) {
        fprintf(stderr, "ref dump: expected '%s', got '%s'\n", kw, w);
        return 0;
    }
    return 1;
}

static void free_prompts(ref_prompt *p, int n) {
    for (int i = 0; i < n; i++) {
        free(p[i].tokens);
        free(p[i].pos);
        free(p[i].steps);
    }
    free(p);
}

/* Returns the number of prompts (>= 1) or -1 on a malformed/missing file. */
static int load_ref(const char *path, ref_prompt **out) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    ref_prompt *ps = NULL;
    int np = 0, ok = 1;
    char w[256];
    int ver = 0;
    if (!expect(f, "ref_version") || fscanf(f, "%d", &ver) != 1 || ver != 1) ok = 0;
    while (ok && next_word(f, w, sizeof w)) {
        if (strcmp(w, "prompt") != 0) { ok = 0; break; }
        ref_prompt *tmp = realloc(ps, (size_t)(np + 1) * sizeof *ps);
        if (!tmp) { ok = 0; break; }
        ps = tmp;
        ref_prompt *p = &ps[np++];
        memset(p, 0, sizeof *p);
        int n2 = 0;
        if (fscanf(f, "%63s %d", p->name, &p->n) != 2 || p->n <= 0 || !expect(f, "tokens") ||
            fscanf(f, "%d", &n2) != 1 || n2 != p->n) { ok = 0; break; }
        p->tokens = malloc((size_t)p->n * sizeof *p->tokens);
        if (!p->tokens) { ok = 0; break; }
        for (int i = 0; i < p->n && ok; i++)
            if (fscanf(f, "%d", &p->tokens[i]) != 1) ok = 0;
        if (!ok || !expect(f, "positions") || fscanf(f, "%d", &p->n_pos) != 1 || p->n_pos <= 0) { ok = 0; break; }
        p->pos = calloc((size_t)p->n_pos, sizeof *p->pos);
        if (!p->pos) { ok = 0; break; }
        for (int i = 0; i < p->n_pos && ok; i++) {
            ref_pos *r = &p->pos[i];
            if (!expect(f, "pos") ||
                fscanf(f, "%d %d %lf %lf %d", &r->pos, &r->next, &r->next_logit, &r->lse, &r->k) != 5 ||
                r->k < 2 || r->k > TOPK_MAX || r->pos < 0 || r->pos >= p->n) { ok = 0; break; }
            for (int j = 0; j < r->k; j++)
                if (fscanf(f, "%d %lf", &r->ids[j], &r->logits[j]) != 2) { ok = 0; break; }
        }
        if (!ok || !next_word(f, w, sizeof w)) { ok = 0; break; }
        if (strcmp(w, "greedy") == 0) {
            if (fscanf(f, "%d", &p->n_steps) != 1 || p->n_steps <= 0) { ok = 0; break; }
            p->steps = calloc((size_t)p->n_steps, sizeof *p->steps);
            if (!p->steps) { ok = 0; break; }
            for (int j = 0; j < p->n_steps && ok; j++) {
                ref_step *s = &p->steps[j];
                int jj;
                if (!expect(f, "step") ||
                    fscanf(f, "%d %d %lf %lf %lf", &jj, &s->id, &s->top1, &s->margin, &s->lse) != 5 || jj != j)
                    ok = 0;
            }
            if (!ok || !next_word(f, w, sizeof w)) { ok = 0; break; }
        }
        if (strcmp(w, "end") != 0) { ok = 0; break; }
    }
    fclose(f);
    if (!ok || np == 0) {
        fprintf(stderr, "ref dump %s: malformed near prompt %d\n", path, np);
        free_prompts(ps, np);
        return -1;
    }
    *out = ps;
    return np;
}

/* ---- helpers ---- */

static int argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

static double logsumexp(const float *x, int n) {
    double m = x[0], s = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > m) m = x[i];
    for (int i = 0; i < n; i++) s += exp((double)x[i] - m);
    return m + log(s);
}

static kvl_ctx *mkctx(const kvl_model *m, const char *codec, int n_ctx) {
    kvl_ctx_params p;
    kvl_ctx_params_default(&p);
    p.kv_codec = codec;
    p.n_ctx = n_ctx;
    kvl_ctx *c = NULL;
    char err[256] = "";
    kvl_status st = kvl_ctx_create(m, &p, &c, err, sizeof err);
    CHECK_MSG(st == KVL_OK && c, "ctx_create %s n_ctx %d: %s", codec, n_ctx, err);
    return c;
}

static int verbose;

/* Aggregated errors over sampled positions. */
typedef struct {
    int n, top1_ok, top1_tie;
    double abs_max, abs_sum, rel_max, lp_max, lp_sum, pkl_max, pkl_sum, lse_max;
    double nll_ours, nll_ref; /* sums over positions with a next token */
    int n_nll;
} agg;

static void agg_add(agg *t, const agg *a) {
    t->n += a->n;
    t->top1_ok += a->top1_ok;
    t->top1_tie += a->top1_tie;
    t->abs_sum += a->abs_sum;
    t->lp_sum += a->lp_sum;
    t->pkl_sum += a->pkl_sum;
    t->abs_max = fmax(t->abs_max, a->abs_max);
    t->rel_max = fmax(t->rel_max, a->rel_max);
    t->lp_max = fmax(t->lp_max, a->lp_max);
    t->pkl_max = fmax(t->pkl_max, a->pkl_max);
    t->lse_max = fmax(t->lse_max, a->lse_max);
}

/* Compare one row of our logits with a reference position. */
static void check_row(const ref_prompt *p, const ref_pos *r, const float *row, int n_vocab, agg *a) {
    double lse = logsumexp(row, n_vocab);
    int top = argmax(row, n_vocab);
    double ref_margin = r->logits[0] - r->logits[1];
    a->n++;
    if (top == r->ids[0]) a->top1_ok++;
    else if (ref_margin < TIE_MARGIN) {
        a->top1_tie++;
        printf("  %s pos %d: top1 %d vs ref %d at a near-tie (ref margin %.4f)\n", p->name, r->pos, top, r->ids[0],
               ref_margin);
    } else
        CHECK_MSG(0, "%s pos %d: top1 %d (%.4f) vs ref %d (%.4f, ref margin %.4f)", p->name, r->pos, top, row[top],
                  r->ids[0], r->logits[0], ref_margin);
    double err = 0, lperr = 0, pkl = 0, amax = 0;
    for (int j = 0; j < r->k; j++) {
        double ours = row[r->ids[j]];
        double lp_ref = r->logits[j] - r->lse, lp_ours = ours - lse;
        err = fmax(err, fabs(ours - r->logits[j]));
        lperr = fmax(lperr, fabs(lp_ours - lp_ref));
        pkl += exp(lp_ref) * (lp_ref - lp_ours);
        amax = fmax(amax, fabs(r->logits[j]));
    }
    double rel = err / (amax > 10 ? amax : 10);
    CHECK_MSG(rel <= REL_TOL, "%s pos %d: logit err %.4f, rel %.4f", p->name, r->pos, err, rel);
    CHECK_MSG(lperr <= LOGPROB_TOL, "%s pos %d: logprob err %.4f", p->name, r->pos, lperr);
    CHECK_MSG(pkl <= PKL_TOL, "%s pos %d: top-%d KL %.4f", p->name, r->pos, r->k, pkl);
    if (verbose)
        printf("    %s pos %d: abs %.4f rel %.4f logprob %.4f kl %.5f lse %.4f/%.4f\n", p->name, r->pos, err, rel,
               lperr, pkl, lse, r->lse);
    a->abs_sum += err;
    a->lp_sum += lperr;
    a->pkl_sum += pkl;
    a->abs_max = fmax(a->abs_max, err);
    a->rel_max = fmax(a->rel_max, rel);
    a->lp_max = fmax(a->lp_max, lperr);
    a->pkl_max = fmax(a->pkl_max, pkl);
    a->lse_max = fmax(a->lse_max, fabs(lse - r->lse));
    if (r->next >= 0) {
        a->nll_ours += lse - row[r->next];
        a->nll_ref += r->lse - r->next_logit;
        a->n_nll++;
    }
}

/* Prefill p->tokens (in chunks, all_logits) and compare at the sampled positions. */
static void check_prefill(kvl_ctx *c, const ref_prompt *p, int n_vocab, agg *tot) {
    kvl_seq *s = NULL;
    CHECK(kvl_seq_create(c, &s) == KVL_OK && s);
    if (!s) return;
    float *lg = malloc((size_t)CHUNK * n_vocab * sizeof *lg);
    CHECK(lg != NULL);
    if (!lg) {
        kvl_seq_free(s);
        return;
    }
    agg a;
    memset(&a, 0, sizeof a);
    int pi = 0;
    for (int off = 0; off < p->n; off += CHUNK) {
        int n = p->n - off < CHUNK ? p->n - off : CHUNK;
        kvl_status st = kvl_prefill(s, p->tokens + off, n, NULL, lg);
        CHECK_MSG(st == KVL_OK, "%s prefill at %d: %s", p->name, off, kvl_ctx_error(c));
        if (st != KVL_OK) break;
        for (; pi < p->n_pos && p->pos[pi].pos < off + n; pi++)
            check_row(p, &p->pos[pi], lg + (size_t)(p->pos[pi].pos - off) * n_vocab, n_vocab, &a);
    }
    CHECK_MSG(pi == p->n_pos, "%s: compared %d of %d positions", p->name, pi, p->n_pos);
    double mabs = a.n ? a.abs_sum / a.n : 0, mpkl = a.n ? a.pkl_sum / a.n : 0;
    double nll_o = a.n_nll ? a.nll_ours / a.n_nll : 0, nll_r = a.n_nll ? a.nll_ref / a.n_nll : 0;
    CHECK_MSG(mabs <= MEAN_ABS_TOL, "%s: mean logit err %.4f", p->name, mabs);
    CHECK_MSG(mpkl <= MEAN_PKL_TOL, "%s: mean top-32 KL %.5f", p->name, mpkl);
    CHECK_MSG(fabs(nll_o - nll_r) <= NLL_TOL, "%s: next-token NLL %.4f vs ref %.4f", p->name, nll_o, nll_r);
    printf("  %-13s n=%-4d pos=%-2d top1 %d/%d (+%d near-tie) | logit err max %.3f mean %.3f rel max %.4f | "
           "logprob err max %.3f mean %.3f | top32-KL max %.4f mean %.5f | lse err max %.3f | "
           "NLL %.4f ref %.4f\n",
           p->name, p->n, a.n, a.top1_ok, a.n, a.top1_tie, a.abs_max, mabs, a.rel_max, a.lp_max,
           a.n ? a.lp_sum / a.n : 0, a.pkl_max, mpkl, a.lse_max, nll_o, nll_r);
    agg_add(tot, &a);
    free(lg);
    kvl_seq_free(s);
}

/* Greedy decode along the reference trajectory: at each step our argmax is
 * compared with the reference id, and the reference id is fed back (so after a
 * near-tie flip the remaining steps are still compared on the same context).
 * Returns the first mismatching step (= the number of steps a free-running
 * greedy decode reproduces exactly; p->n_steps if none), or -1 on an engine
 * error. *n_tie / *n_bad count mismatches at near-ties / at clear margins;
 * *first_tie tells whether the first mismatch was a near-tie; *lerr is the max
 * |our logit - ref logit| of the reference's token. */
static int greedy_run(kvl_ctx *c, const ref_prompt *p, int n_vocab, int *n_tie, int *n_bad, int *first_tie,
                      double *lerr) {
    *n_tie = *n_bad = *first_tie = 0;
    *lerr = 0;
    kvl_seq *s = NULL;
    if (kvl_seq_create(c, &s) != KVL_OK || !s) return -1;
    float *lg = malloc((size_t)n_vocab * sizeof *lg);
    int first = -1;
    if (lg && kvl_prefill(s, p->tokens, p->n, lg, NULL) == KVL_OK) {
        first = p->n_steps;
        for (int j = 0; j < p->n_steps; j++) {
            const ref_step *r = &p->steps[j];
            int t = argmax(lg, n_vocab);
            *lerr = fmax(*lerr, fabs(lg[r->id] - r->top1));
            if (t != r->id) {
                int tie = r->margin < TIE_MARGIN;
                if (tie) (*n_tie)++;
                else (*n_bad)++;
                if (first == p->n_steps) {
                    first = j;
                    *first_tie = tie;
                }
                printf("    step %d: got %d (%.4f) vs ref %d (ours %.4f, ref %.4f, ref margin %.4f)%s\n", j, t,
                       lg[t], r->id, lg[r->id], r->top1, r->margin, tie ? " near-tie" : "");
            }
            if (j + 1 < p->n_steps && kvl_decode(s, r->id, lg) != KVL_OK) {
                fprintf(stderr, "    decode step %d: %s\n", j, kvl_ctx_error(c));
                first = -1;
                break;
            }
        }
    }
    free(lg);
    kvl_seq_free(s);
    return first;
}

int main(void) {
    const char *mp = kvl_test_model("reference logits of the real model");
    if (!mp) KVL_TEST_END();

    verbose = getenv("KVL_REF_VERBOSE") && *getenv("KVL_REF_VERBOSE") && *getenv("KVL_REF_VERBOSE") != '0';
    const char *dp = getenv("KVL_REF_DATA");
    if (!dp || !*dp) dp = "tests/data/ref_logits.txt";
    ref_prompt *ps = NULL;
    int np = load_ref(dp, &ps);
    CHECK_MSG(np > 0, "cannot read reference dump %s (run from the repo root or set KVL_REF_DATA)", dp);
    if (np <= 0) KVL_TEST_END();

    kvl_model *m = NULL;
    char err[256] = "";
    CHECK_MSG(kvl_model_load(mp, &m, err, sizeof err) == KVL_OK && m, "load %s: %s", mp, err);
    if (!m) {
        free_prompts(ps, np);
        KVL_TEST_END();
    }
    kvl_model_info info;
    kvl_model_get_info(m, &info);
    int n_vocab = info.n_vocab;
    int max_n = 0;
    for (int i = 0; i < np; i++) {
        int need = ps[i].n + ps[i].n_steps;
        if (need > max_n) max_n = need;
        for (int j = 0; j < ps[i].n; j++)
            if (ps[i].tokens[j] < 0 || ps[i].tokens[j] >= n_vocab) {
                CHECK_MSG(0, "%s: token %d out of range", ps[i].name, ps[i].tokens[j]);
                kvl_model_free(m);
                free_prompts(ps, np);
                KVL_TEST_END();
            }
    }

    /* 0. exact matmuls (f32 activations, no int8 rounding): the forward pass
     * itself must match the float32 reference to round-off, on the short
     * prompts, and greedy decoding must reproduce the reference ids exactly. */
    {
        kvl_ctx_params ep;
        kvl_ctx_params_default(&ep);
        ep.kv_codec = "f32";
        ep.n_ctx = 256;
        ep.exact_matmul = 1;
        kvl_ctx *ec = NULL;
        CHECK(kvl_ctx_create(m, &ep, &ec, err, sizeof err) == KVL_OK);
        for (int i = 0; ec && i < np; i++) {
            const ref_prompt *p = &ps[i];
            if (p->n > 64) continue;
            float *all = malloc(sizeof(float) * (size_t)n_vocab * (size_t)p->n);
            kvl_seq *s = NULL;
            kvl_seq_create(ec, &s);
            CHECK(s && kvl_prefill(s, p->tokens, p->n, NULL, all) == KVL_OK);
            double emax = 0;
            int top1 = 0;
            for (int j = 0; j < p->n_pos; j++) {
                const ref_pos *r = &p->pos[j];
                const float *row = all + (size_t)r->pos * (size_t)n_vocab;
                for (int k = 0; k < r->k; k++) emax = fmax(emax, fabs(row[r->ids[k]] - r->logits[k]));
                top1 += argmax(row, n_vocab) == r->ids[0];
            }
            /* transformers and kvlite differ only in float32 summation order
             * (measured max 1e-4 on logits of magnitude ~30) */
            CHECK_MSG(emax < 2e-3, "exact %s: logit err %g", p->name, emax);
            CHECK_MSG(top1 == p->n_pos, "exact %s: top1 %d/%d", p->name, top1, p->n_pos);
            /* greedy decode, exact identity */
            float *lg = malloc(sizeof(float) * (size_t)n_vocab);
            memcpy(lg, all + (size_t)(p->n - 1) * (size_t)n_vocab, sizeof(float) * (size_t)n_vocab);
            int same = 0;
            double derr = 0;
            for (int t = 0; t < p->n_steps; t++) {
                int id = argmax(lg, n_vocab);
                derr = fmax(derr, fabs(lg[id] - p->steps[t].top1));
                if (id != p->steps[t].id) break;
                same++;
                if (kvl_decode(s, id, lg) != KVL_OK) break;
            }
            printf("measured: exact matmul %-9s prefill logit err max %.2e, top1 %d/%d, greedy %d/%d identical "
                   "(top1 logit err max %.2e)\n",
                   p->name, emax, top1, p->n_pos, same, p->n_steps, derr);
            CHECK_MSG(same == p->n_steps, "exact greedy %s: %d/%d identical", p->name, same, p->n_steps);
            kvl_seq_free(s);
            free(lg);
            free(all);
        }
        kvl_ctx_free(ec);
    }

    /* 1. prefill logits vs reference, f32 KV */
    kvl_ctx *c = mkctx(m, "f32", max_n);
    if (c) {
        printf("prefill logits vs transformers (f32 KV):\n");
        agg tot;
        memset(&tot, 0, sizeof tot);
        for (int i = 0; i < np; i++) check_prefill(c, &ps[i], n_vocab, &tot);
        printf("  all: %d positions, top1 %d (+%d near-tie) | logit err max %.3f mean %.3f rel max %.4f | "
               "logprob err max %.3f mean %.3f | top32-KL max %.4f mean %.5f | lse err max %.3f\n",
               tot.n, tot.top1_ok, tot.top1_tie, tot.abs_max, tot.n ? tot.abs_sum / tot.n : 0, tot.rel_max,
               tot.lp_max, tot.n ? tot.lp_sum / tot.n : 0, tot.pkl_max, tot.n ? tot.pkl_sum / tot.n : 0,
               tot.lse_max);
    }

    /* 2. greedy: f32 asserted, f16 reported */
    const char *codecs[2] = {"f32", "f16"};
    for (int ci = 0; ci < 2; ci++) {
        kvl_ctx *cc = ci == 0 ? c : mkctx(m, codecs[ci], max_n);
        if (!cc) continue;
        for (int i = 0; i < np; i++) {
            const ref_prompt *p = &ps[i];
            if (!p->n_steps) continue;
            int n_tie, n_bad, first_tie;
            double lerr;
            int first = greedy_run(cc, p, n_vocab, &n_tie, &n_bad, &first_tie, &lerr);
            printf("greedy %s %-9s free-run identical %d/%d%s; along the ref: %d mismatches (%d near-tie), "
                   "ref-token logit err max %.3f\n",
                   codecs[ci], p->name, first < 0 ? 0 : first, p->n_steps,
                   first == p->n_steps ? "" : first_tie ? " (first divergence at a near-tie)" : " (DIVERGED)",
                   n_tie + n_bad, n_tie, lerr);
            if (ci == 0) {
                CHECK_MSG(first == p->n_steps || (first >= 0 && first_tie), "greedy f32 %s: %d/%d identical",
                          p->name, first, p->n_steps);
                CHECK_MSG(first >= 0 && n_bad == 0, "greedy f32 %s: %d clear mismatches", p->name, n_bad);
            }
        }
        if (ci != 0) kvl_ctx_free(cc);
    }
    kvl_ctx_free(c);
    kvl_model_free(m);
    free_prompts(ps, np);
    KVL_TEST_END();
}
