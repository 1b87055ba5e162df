/* End-to-end device test of the CUDA forward pass through the public API
 * (make test-cuda; needs a GPU and the default model, KVL_MODEL or
 * ~/.cache/kvlite/SmolLM2-135M-Instruct.Q4_1.gguf): greedy decoding with
 * device = KVL_DEVICE_CUDA against the CPU exact path (exact_matmul = 1:
 * f32 activations, weight blocks dequantized, as the device does) with the
 * same KV codec, for f16, int8, int4z, fp8, kivi2z and kivi4z pages (the
 * last three: bounds at N_CODECS below): the prompt's last logits
 * (relative L2 error) and 48 greedy tokens. Both sides dequantize the same
 * weights and KV bytes; the CPU sums in double, the device in f32, so the
 * K/V rows entering the cache differ by ~1e-6 relative, and a value that
 * sits on a rounding boundary of the KV codec takes the neighbouring code
 * on the other side: one f16 ulp (2^-11) or a whole int8 / 4-bit step,
 * amplified through 30 layers. Seen on the H200 (2026-12-02): f16 1.2e-4
 * and 48/48 tokens, int8 3e-7 and 48/48, int4z 1.6e-2 and 33/48 (against
 * the CPU's scalar attention: int8 1.4e-2, int4z 1.7e-2 and 28/48). Bounds:
 * f16 1e-3 and all 48 tokens; int8 5e-2 and 32; int4z 5e-2 and 16 (a wrong
 * kernel gives logits off by ~1 and tokens that differ at once). Both
 * numerics are tested: exact_matmul = 1 on both sides (above), and the
 * default on both sides (the device's 8-bit activation blocks and integer
 * matvec against the CPU default path; bounds at Q8_SAME). Also the prefill in several device calls (n_batch 7), two
 * sequences sharing the device pool, and the errors: codecs without an
 * append kernel, an evicting policy with a sealing codec, fork, session save; device sampling
 * through the engine (device_sampling below), a second build
 * without CUDA is covered by tests/test_cli.sh. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kvlite.h"
#include "test.h"
#include "cuda_test.h"

#define NGEN 48
/* The default path (8-bit activation blocks, integer dot products) is a
 * discontinuous function of its inputs: a value within rounding of a code
 * boundary takes the neighbouring code (1/254 of its block's amax), so f32
 * differences of 1e-6 become whole steps, amplified over 30 layers. The
 * CPU's own default paths disagree as much: measured on this model with
 * this prompt (2026-12-02), scalar vs AVX2 default 1.9e-2 / 2.4e-2 / 0.43
 * rel. L2 of the prompt logits (f16 / int8 / int4z KV) and 48 / 16 / 0
 * equal greedy tokens; CPU default vs CPU exact 2.5e-2 / 3.1e-2 / 0.34 and
 * 16 / 16 / 0 tokens. So the device's default path is checked for being
 * as close to the exact path as the CPU default is: rel(device, CPU exact)
 * <= 2 rel(CPU default, CPU exact) + 1e-3 (a wrong buffer, stride or
 * missing wait gives logits off by ~1), and against the CPU default for
 * the first greedy tokens (seen on the H200: 48 / 40 / 1 of 48; int4z has
 * no token bound: the CPU's own scalar and AVX2 default paths share none): */
static const int Q8_SAME[6] = {8, 8, 0, 0, 0, 0};
/* The KV codecs of 2026-12-03 (fp8, and the sealing kivi2z / kivi4z: rows
 * appended at f16 into open pages, sealed on the device after the engine
 * call that filled a page, byte-identical to the CPU seal of the same open
 * rows). Their CPU reference runs with the same n_batch as the device run:
 * where forward calls end decides which rows a call sees sealed. Bounds of
 * the exact path: a code boundary turns the ~1e-6 differences of the rows
 * into whole steps (an fp8 step is 2^-4 of the value; a kivi2z step a
 * third of the channel's range over the page), so as int4z: logits within
 * 1e-1 relative and the first 8 greedy tokens equal (a wrong seal gives
 * logits off by ~1 from the first sealed page on). */
#define N_CODECS 6
static int sealing(const char *codec) { return !strncmp(codec, "kivi", 4); }

static double rel_l2(const float *a, const float *ref, int n) {
    double num = 0, den = 0;
    for (int i = 0; i < n; i++) {
        num += (double)(a[i] - ref[i]) * (a[i] - ref[i]);
        den += (double)ref[i] * ref[i];
    }
    return sqrt(num / den);
}

static int same_prefix(const kvl_token *a, const kvl_token *b) {
    int k = 0;
    while (k < NGEN && a[k] == b[k]) k++;
    return k;
}

static kvl_token argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

/* prompt -> prefill, then greedy NGEN tokens; logits0: the prompt's last logits */
static int generate(const kvl_model *m, int device, int exact, const char *codec, int n_batch, const kvl_token *prompt,
                    int np, kvl_token *out, float *logits0) {
    kvl_ctx_params p;
    kvl_ctx_params_default(&p);
    p.n_ctx = 512;
    p.kv_codec = codec;
    p.device = device;
    p.exact_matmul = exact;
    p.n_batch = n_batch;
    p.n_seq_max = 2;
    char err[256] = "";
    kvl_ctx *c = NULL;
    if (kvl_ctx_create(m, &p, &c, err, sizeof err) != KVL_OK) {
        fprintf(stderr, "ctx (%s, device %d): %s\n", codec, device, err);
        return 0;
    }
    kvl_model_info mi;
    kvl_model_get_info(m, &mi);
    float *lg = malloc(sizeof(float) * mi.n_vocab);
    kvl_seq *s = NULL, *s2 = NULL;
    int ok = kvl_seq_create(c, &s) == KVL_OK && kvl_seq_create(c, &s2) == KVL_OK;
    /* a second sequence in the same pool with other tokens, interleaved */
    ok = ok && kvl_prefill(s2, prompt + 1, np - 1, lg, NULL) == KVL_OK;
    ok = ok && kvl_prefill(s, prompt, np, lg, NULL) == KVL_OK;
    if (ok) memcpy(logits0, lg, sizeof(float) * mi.n_vocab);
    for (int i = 0; ok && i < NGEN; i++) {
        out[i] = argmax(lg, mi.n_vocab);
        ok = kvl_decode(s, out[i], lg) == KVL_OK;
        if (ok && i % 5 == 0) ok = kvl_decode(s2, out[i], NULL) == KVL_OK;
    }
    if (!ok) fprintf(stderr, "generate (%s, device %d): %s\n", codec, device, kvl_ctx_error(c));
    kvl_seq_free(s);
    kvl_seq_free(s2);
    kvl_ctx_free(c);
    free(lg);
    return ok;
}

/* a device context (8-bit default path, f16 KV, graphs as the environment says) with one sequence */
static kvl_ctx *dev_ctx(const kvl_model *m, kvl_seq **s) {
    kvl_ctx_params p;
    kvl_ctx_params_default(&p);
    p.n_ctx = 512;
    p.kv_codec = "f16";
    p.device = KVL_DEVICE_CUDA;
    char err[256] = "";
    kvl_ctx *c = NULL;
    *s = NULL;
    if (kvl_ctx_create(m, &p, &c, err, sizeof err) != KVL_OK) {
        fprintf(stderr, "device ctx: %s\n", err);
        return NULL;
    }
    if (kvl_seq_create(c, s) != KVL_OK) {
        kvl_ctx_free(c);
        return NULL;
    }
    return c;
}

/* 1 if token t has probability > 0 under the CPU sampler's pipeline on
 * logits l [V] (temperature > 0, top-k, min-p, top-p; no penalty: l is
 * already penalized), in double as tests/cuda/lm_sample_cases.h */
typedef struct ecand { float v; int id; } ecand;
static int ecand_cmp(const void *pa, const void *pb) {
    const ecand *a = pa, *b = pb;
    if (a->v != b->v) return a->v > b->v ? -1 : 1;
    return a->id - b->id;
}
static int in_support(const float *l, int V, const kvl_sampler_params *p, int t, int *n_cand) {
    ecand *c = malloc(sizeof *c * (size_t)V);
    int n = 0;
    for (int i = 0; i < V; i++)
        if (!isnan(l[i]) && l[i] != -INFINITY) c[n].v = l[i] / p->temperature, c[n].id = i, n++;
    qsort(c, (size_t)n, sizeof *c, ecand_cmp);
    if (p->top_k > 0 && p->top_k < n) n = p->top_k;
    const double maxl = c[0].v;
    double z = 0;
    for (int i = 0; i < n; i++) z += exp((double)c[i].v - maxl);
    int keep = n;
    if (p->min_p > 0) {
        const double thr = log((double)p->min_p);
        keep = 0;
        while (keep < n && (double)c[keep].v - maxl >= thr) keep++;
    }
    if (p->top_p < 1) {
        double cum = 0;
        for (int i = 0; i < keep; i++) {
            cum += exp((double)c[i].v - maxl) / z;
            if (cum >= (double)p->top_p) {
                keep = i + 1;
                break;
            }
        }
    }
    int found = 0;
    for (int i = 0; i < keep; i++) found |= c[i].id == t;
    *n_cand = keep;
    free(c);
    return found;
}

/* Device sampling through the engine (kvl_ctx_set_device_sampling, what
 * `--device cuda` uses): (1) greedy with the repetition penalty (1.3 over
 * 16 tokens), logits not downloaded: each kvl_seq_sampled token equal to
 * the CPU sampler's (temperature 0, the same penalty and accepted tokens)
 * on the raw logits of a second device context fed the same tokens (the
 * same device kernels, so the same floats); (2) sampled (the CLI defaults
 * T 0.8 / top-k 40 / top-p 0.95 / min-p 0.05, penalty 1.1 over 64), logits
 * downloaded (penalized on the device): every drawn token inside the CPU
 * pipeline's candidate set of those logits, and the same seed gives the
 * same tokens in a second run. */
static void device_sampling(const kvl_model *m, const kvl_token *prompt, int np) {
    kvl_model_info mi;
    kvl_model_get_info(m, &mi);
    const int V = mi.n_vocab;
    float *lg = malloc(sizeof(float) * V);
    kvl_seq *sr = NULL, *sd = NULL;
    kvl_ctx *cr = dev_ctx(m, &sr), *cd = dev_ctx(m, &sd);
    CHECK(cr && cd);
    if (!cr || !cd) return;
    kvl_sampler_params sp;
    kvl_sampler_params_default(&sp);
    sp.temperature = 0, sp.repeat_penalty = 1.3f, sp.repeat_last_n = 16;
    CHECK(kvl_ctx_set_device_sampling(cd, &sp) == KVL_OK);
    CHECK(kvl_ctx_set_device_sampling(cr, NULL) == KVL_OK); /* off: logits as before */
    CHECK(kvl_seq_sampled(sd) == -1);
    kvl_sampler *cpu = NULL;
    CHECK(kvl_sampler_create(&sp, V, &cpu) == KVL_OK);
    for (int i = 0; i < np; i++) kvl_sampler_accept(cpu, prompt[i]);
    int ok = kvl_prefill(sr, prompt, np, lg, NULL) == KVL_OK && kvl_prefill(sd, prompt, np, NULL, NULL) == KVL_OK;
    CHECK(ok);
    int same = 0, pen_changed = 0;
    for (int i = 0; ok && i < NGEN; i++) {
        const kvl_token raw = argmax(lg, V), t = kvl_sampler_sample(cpu, lg), d = kvl_seq_sampled(sd);
        pen_changed += raw != t;
        if (d != t) break;
        same++;
        kvl_sampler_accept(cpu, t);
        ok = kvl_decode(sr, t, lg) == KVL_OK && kvl_decode(sd, t, NULL) == KVL_OK;
    }
    printf("note: device greedy + repeat penalty 1.3/16 vs the CPU sampler on the same logits: %d of %d tokens equal "
           "(the penalty changed the argmax %d times)\n", same, NGEN, pen_changed);
    CHECK_MSG(same == NGEN, "device greedy with penalty: tokens differ from %d on", same);
    kvl_sampler_free(cpu);
    kvl_seq_free(sr), kvl_ctx_free(cr);
    kvl_seq_free(sd), kvl_ctx_free(cd);
    /* sampled, twice with one seed */
    kvl_sampler_params ss;
    kvl_sampler_params_default(&ss);
    ss.repeat_penalty = 1.1f, ss.seed = 1234;
    kvl_token run[2][NGEN];
    int outside = 0, cand_sum = 0;
    for (int r = 0; r < 2; r++) {
        kvl_seq *s = NULL;
        kvl_ctx *c = dev_ctx(m, &s);
        CHECK(c && kvl_ctx_set_device_sampling(c, &ss) == KVL_OK);
        if (!c) break;
        ok = kvl_prefill(s, prompt, np, lg, NULL) == KVL_OK;
        for (int i = 0; ok && i < NGEN; i++) {
            const kvl_token t = kvl_seq_sampled(s);
            int nc = 0;
            if (!in_support(lg, V, &ss, t, &nc)) outside++;
            cand_sum += nc;
            run[r][i] = t;
            ok = kvl_decode(s, t, lg) == KVL_OK;
        }
        CHECK(ok);
        kvl_seq_free(s), kvl_ctx_free(c);
    }
    int rep_same = 0;
    while (rep_same < NGEN && run[0][rep_same] == run[1][rep_same]) rep_same++;
    printf("note: device sampling (T 0.8, top-k 40, top-p 0.95, min-p 0.05, penalty 1.1/64, seed 1234): %d of %d draws "
           "outside the CPU candidate set (mean %.1f candidates); second run with the seed: %d of %d tokens equal\n",
           outside, 2 * NGEN, cand_sum / (2.0 * NGEN), rep_same, NGEN);
    CHECK_MSG(outside == 0, "device sampling: %d draws outside the candidate set", outside);
    CHECK_MSG(rep_same == NGEN, "device sampling: the same seed gave other tokens from %d on", rep_same);
    free(lg);
}

static void expect_refused(const kvl_model *m, const char *codec, const char *policy) {
    kvl_ctx_params p;
    kvl_ctx_params_default(&p);
    p.n_ctx = 256;
    p.kv_codec = codec;
    p.kv_policy = policy;
    p.kv_keep = policy ? 64 : 0;
    p.device = KVL_DEVICE_CUDA;
    char err[256] = "";
    kvl_ctx *c = NULL;
    const kvl_status st = kvl_ctx_create(m, &p, &c, err, sizeof err);
    CHECK_MSG(st == KVL_ERR_UNSUPPORTED && !c, "%s / %s not refused (%d)", codec, policy ? policy : "full", st);
    printf("note: %s%s%s refused: %s\n", codec, policy ? " + " : "", policy ? policy : "", err);
    kvl_ctx_free(c);
}

int main(void) {
    char buf[512];
    const char *path = cuda_test_model_path(buf, sizeof buf);
    kvl_model *m = NULL;
    char err[256] = "";
    if (kvl_model_load(path, &m, err, sizeof err) != KVL_OK) {
        fprintf(stderr, "FAIL: model %s: %s\n", path, err);
        return 1;
    }
    kvl_model_info mi;
    kvl_model_get_info(m, &mi);
    const char *text = "The history of the printing press begins in the fifteenth century, when";
    kvl_token prompt[64];
    const int np = (int)kvl_tokenize(m, text, strlen(text), 1, 0, prompt, 64);
    CHECK(np > 4 && np < 64);
    const size_t lb = sizeof(float) * mi.n_vocab;
    float *l_ex = malloc(lb), *l_def = malloc(lb), *l_gpu = malloc(lb);
    const char *codecs[N_CODECS] = {"f16", "int8", "int4z", "fp8", "kivi2z", "kivi4z"};
    for (int ci = 0; ci < N_CODECS; ci++) {
        kvl_token t_ex[NGEN], t_def[NGEN], t_gpu[NGEN];
        CHECK(generate(m, KVL_DEVICE_CPU, 1, codecs[ci], 512, prompt, np, t_ex, l_ex));
        CHECK(generate(m, KVL_DEVICE_CPU, 0, codecs[ci], 512, prompt, np, t_def, l_def));
        const double rel_cpu = rel_l2(l_def, l_ex, mi.n_vocab);
        printf("note: CPU default vs CPU exact, %s: prompt logits rel err %.2e, greedy tokens equal for %d of %d\n",
               codecs[ci], rel_cpu, same_prefix(t_def, t_ex), NGEN);
        for (int ex = 1; ex >= 0; ex--) {
            const int batches[2] = {512, 7};
            for (int bi = 0; bi < 2; bi++) {
                /* the second run replays CUDA graphs (kvl_cuda_lm_set_graphs) */
                if (bi) setenv("KVL_CUDA_GRAPHS", "1", 1);
                else unsetenv("KVL_CUDA_GRAPHS");
                if (sealing(codecs[ci])) { /* the CPU with the device run's call boundaries */
                    CHECK(generate(m, KVL_DEVICE_CPU, 1, codecs[ci], batches[bi], prompt, np, t_ex, l_ex));
                    CHECK(generate(m, KVL_DEVICE_CPU, 0, codecs[ci], batches[bi], prompt, np, t_def, l_def));
                }
                CHECK(generate(m, KVL_DEVICE_CUDA, ex, codecs[ci], batches[bi], prompt, np, t_gpu, l_gpu));
                const double rel = rel_l2(l_gpu, ex ? l_ex : l_def, mi.n_vocab), rel_x = rel_l2(l_gpu, l_ex, mi.n_vocab);
                const int same = same_prefix(t_gpu, ex ? t_ex : t_def);
                if (ex) {
                    printf("note: exact %s (n_batch %d%s) vs CPU exact: prompt logits rel err %.2e, greedy tokens "
                           "equal for %d of %d\n", codecs[ci], batches[bi], bi ? ", graphs" : "", rel, same, NGEN);
                    CHECK_MSG(rel < (ci == 0 ? 1e-3 : ci < 3 ? 5e-2 : 1e-1), "%s: logits rel err %.3g", codecs[ci], rel);
                    CHECK_MSG(same >= (ci == 0 ? NGEN : ci == 1 ? 32 : ci == 2 ? 16 : 8), "%s: tokens differ from %d on",
                              codecs[ci], same);
                } else {
                    printf("note: 8-bit activations %s (n_batch %d%s) vs CPU default: prompt logits rel err %.2e, "
                           "greedy tokens equal for %d of %d; vs CPU exact: rel err %.2e (CPU default: %.2e)\n",
                           codecs[ci], batches[bi], bi ? ", graphs" : "", rel, same, NGEN, rel_x, rel_cpu);
                    CHECK_MSG(rel_x <= 3 * rel_cpu + 1e-3, "8-bit activations %s: %.3g from the exact path (CPU "
                              "default: %.3g)", codecs[ci], rel_x, rel_cpu);
                    CHECK_MSG(same >= Q8_SAME[ci], "8-bit activations %s: tokens differ from %d on", codecs[ci], same);
                }
                if (ci == 0 && bi == 0) {
                    printf("note: tokens:");
                    for (int i = 0; i < NGEN; i++) printf(" %d", t_gpu[i]);
                    printf("\n");
                }
            }
        }
    }
    device_sampling(m, prompt, np);
    expect_refused(m, "kivi2", NULL);      /* sealing, no device kernel */
    expect_refused(m, "kivi2z+rot", NULL); /* rotation not on the device */
    expect_refused(m, "int4", NULL);
    expect_refused(m, "kivi2z", "streaming"); /* eviction with a sealing codec (test_cuda_evict: the rest) */
    /* fork and session save refused on a cuda context */
    {
        kvl_ctx_params p;
        kvl_ctx_params_default(&p);
        p.n_ctx = 128;
        p.device = KVL_DEVICE_CUDA;
        kvl_ctx *c = NULL;
        CHECK(kvl_ctx_create(m, &p, &c, err, sizeof err) == KVL_OK);
        kvl_seq *s = NULL, *f = NULL, *s2 = NULL;
        CHECK(c && kvl_seq_create(c, &s) == KVL_OK);
        CHECK(kvl_seq_create(c, &s2) == KVL_ERR_NOMEM); /* n_seq_max 1: one device slot */
        CHECK(kvl_prefill(s, prompt, np, NULL, NULL) == KVL_OK);
        CHECK(kvl_seq_fork(s, &f) == KVL_ERR_UNSUPPORTED && !f);
        void *sb = NULL;
        size_t sl = 0;
        CHECK(kvl_seq_save(s, &sb, &sl) == KVL_ERR_UNSUPPORTED && !sb);
        printf("note: save refused: %s\n", kvl_ctx_error(c));
        kvl_seq_free(s);
        CHECK(kvl_seq_create(c, &s2) == KVL_OK); /* the slot came back */
        kvl_seq_free(s2);
        kvl_ctx_free(c);
    }
    unsetenv("KVL_CUDA_GRAPHS");
    free(l_ex), free(l_def), free(l_gpu);
    kvl_model_free(m);
    KVL_TEST_END();
}
