/* `kvlite eval rag`: chunk reuse for retrieval-augmented prompts, side by
 * side. Per seed a knowledge base of --chunks chunks (--chunk-tokens each,
 * cut from essays, one made-up fact planted in each) and --questions
 * questions, each over every chunk in its own shuffled order (odd questions
 * need the facts of two chunks). Modes on the same token ids: full prefill;
 * prefix caching only (kvl_prefix RAM store warmed by the earlier prompts);
 * reuse (chunks' stored KV spliced, nothing recomputed); CacheBlend at each
 * --blend-ratio. TTFT is the wall time of the prefill call(s) giving the
 * first token's logits (store lookups and splicing included; chunks are
 * computed into the store before the questions, as a RAG system does when
 * it indexes them). Greedy answers, exact-match scoring (every asked value),
 * agreement with the full prefill's answer (the same numbers in the same
 * order, or for an answer without digits the same letters and digits:
 * "24143." agrees with "24143"; agreement_exact compares the strings),
 * KL(full || mode) of the first answer token; --floor adds the full
 * prefill on the other activation path (the agreement a change as small as
 * the activations' rounding gives). With --blend-store the chunks also live
 * in the disk tier (--blend-ram 0: only there); --blend-pipeline says
 * whether their layers stream in during the pass (reader busy time,
 * compute wait and bytes read per mode), --blend-cold drops the files from
 * the page cache before each prompt, --blend-read-mbps caps the reads (an
 * emulated slower tier). Table on stderr, --json one object on stdout. */
#include "cli.h"
#include "rag_tasks.h"

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_MODES 12
#define ANSWER_MAX 28

typedef struct cellr {
    int seed, q, correct, agree, agree_exact;
    double ttft, kld;
    int selected;
    double read_ms, wait_ms, mb_read; /* disk-tier reader (blend / reuse modes) */
    char answer[96];
} cellr;

typedef struct mode {
    char name[32];
    int kind;       /* 0 full, 1 prefix, 2 reuse, 3 blend, 4 floor */
    float ratio;
    int pipeline;   /* blend / reuse: kvl_blend_params.pipeline */
    cellr *cells;
    int n;
} mode;

static const char *find_essays(const cli_opts *o) {
    if (o->ret_haystack) return o->ret_haystack;
    static char buf[4200];
    char exe[4096];
    ssize_t l = readlink("/proc/self/exe", exe, sizeof exe - 1);
    struct stat st;
    if (l > 0) {
        exe[l] = 0;
        for (int up = 0; up < 2; up++) {
            char *sl = strrchr(exe, '/');
            if (sl) *sl = 0;
        }
        snprintf(buf, sizeof buf, "%s/../shared/data/pg_essays", exe);
        if (stat(buf, &st) == 0 && S_ISDIR(st.st_mode)) return buf;
    }
    const char *rel[] = {"../shared/data/pg_essays", "/work/shared/data/pg_essays"};
    for (int i = 0; i < 2; i++)
        if (stat(rel[i], &st) == 0 && S_ISDIR(st.st_mode)) return rel[i];
    cli_die(CLI_EXIT_RUNTIME, "essays not found (tried ../shared/data/pg_essays and /work/shared/data/pg_essays); "
                              "give --haystack DIR");
}

static double kl(const float *a, const float *b, int n) {
    return cli_kl_div(a, cli_logsumexp(a, n, NULL), b, cli_logsumexp(b, n, NULL), n);
}

/* Completed digit runs of at least 3 digits in s (numbers given so far). */
static int numbers_done(const char *s) {
    int k = 0, run = 0;
    for (; *s; s++) {
        if (*s >= '0' && *s <= '9') run++;
        else {
            k += run >= 3;
            run = 0;
        }
    }
    return k;
}

/* Greedy answer from logits (modified: decoding overwrites them), stopped at
 * end of generation, a line break, n_numbers completed numbers or ANSWER_MAX tokens. */
static void answer(const kvl_model *m, kvl_ctx *c, kvl_seq *s, float *logits, int nv, int n_numbers, char *out,
                   size_t cap) {
    size_t n = 0;
    out[0] = 0;
    for (int i = 0; i < ANSWER_MAX; i++) {
        int best = 0;
        for (int j = 1; j < nv; j++)
            if (logits[j] > logits[best]) best = j;
        if (kvl_model_is_eog(m, best)) break;
        char piece[64];
        int pl = kvl_token_to_piece(m, best, 0, piece, sizeof piece);
        if (pl < 0 || pl >= (int)sizeof piece) pl = 0;
        if (memchr(piece, '\n', (size_t)pl) && n > 0) break;
        for (int k = 0; k < pl && n + 1 < cap; k++)
            if (piece[k] != '\n') out[n++] = (char)(piece[k] >= 32 && piece[k] < 127 ? piece[k] : '?');
        out[n] = 0;
        if (numbers_done(out) >= n_numbers) break;
        const kvl_status st = kvl_decode(s, best, logits);
        if (st) cli_die(CLI_EXIT_RUNTIME, "decode failed: %s", cli_ctx_msg(c, st));
    }
    while (n > 0 && out[n - 1] == ' ') out[--n] = 0;
}

/* The answer's value key into out: its digit runs joined by spaces, or
 * without digits its lowercased letters and digits. */
static void answer_key(const char *a, char *out, size_t cap) {
    size_t n = 0;
    int digits = 0;
    for (const char *p = a; *p; p++) digits |= *p >= '0' && *p <= '9';
    for (const char *p = a; *p && n + 2 < cap; p++) {
        const char ch = *p;
        if (ch >= '0' && ch <= '9') out[n++] = ch;
        else if (digits) {
            if (n && out[n - 1] != ' ') out[n++] = ' ';
        } else if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z'))
            out[n++] = (char)(ch | 0x20);
    }
    while (n && out[n - 1] == ' ') n--;
    out[n] = 0;
}

static int same_answer(const char *a, const char *b) {
    char ka[128], kb[128];
    answer_key(a, ka, sizeof ka);
    answer_key(b, kb, sizeof kb);
    return !strcmp(ka, kb);
}

static int cmp_d(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Median of the field at byte offset off (a double) of cells c [n]. */
static double median_of(const cellr *c, int n, size_t off) {
    double *v = malloc(sizeof(double) * (size_t)(n ? n : 1));
    for (int i = 0; i < n; i++) memcpy(&v[i], (const char *)&c[i] + off, sizeof(double));
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    const double r = n ? (n & 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2])) : 0;
    free(v);
    return r;
}
static double median(const cellr *c, int n) { return median_of(c, n, offsetof(cellr, ttft)); }

int cmd_rag(const cli_opts *o) {
    const int n_chunks = o->rag_chunks > 0 ? o->rag_chunks : 6, T = o->rag_chunk_tokens > 0 ? o->rag_chunk_tokens : 512;
    const int n_seeds = o->ret_seeds > 0 ? o->ret_seeds : 2, n_q = o->rag_questions > 0 ? o->rag_questions : 4;
    if (n_chunks > RAG_MAX_CHUNKS) cli_die(CLI_EXIT_USAGE, "eval rag: --chunks at most %d", RAG_MAX_CHUNKS);
    kvl_blend_params bp;
    kvl_blend_params_default(&bp);
    if (o->blend_layers >= 0) bp.full_layers = o->blend_layers;
    if (o->blend_select) {
        const char *sel = o->blend_select;
        if (!strcmp(sel, "k")) bp.select_k = 1;
        else if (!strcmp(sel, "qv")) bp.select_query = 1;
        else if (!strcmp(sel, "qk")) bp.select_k = 1, bp.select_query = 1;
        else if (!strcmp(sel, "q")) bp.select_query = 2;
        else if (strcmp(sel, "v"))
            cli_die(CLI_EXIT_USAGE, "--blend-select: 'v', 'k', 'qv', 'qk' or 'q', not '%s'", sel);
    }
    int pipes[2] = {1, -1}, n_pipes = 1; /* --blend-pipeline 0|1|0,1 */
    if (o->blend_pipeline) {
        if (!strcmp(o->blend_pipeline, "0") || !strcmp(o->blend_pipeline, "1")) pipes[0] = o->blend_pipeline[0] - '0';
        else if (!strcmp(o->blend_pipeline, "0,1") || !strcmp(o->blend_pipeline, "1,0")) pipes[1] = 0, n_pipes = 2;
        else cli_die(CLI_EXIT_USAGE, "--blend-pipeline: 0, 1 or 0,1, not '%s'", o->blend_pipeline);
    }
    if (o->blend_cold && !o->blend_store) cli_die(CLI_EXIT_USAGE, "--blend-cold needs --blend-store DIR");
    mode modes[MAX_MODES];
    int nm = 0;
    const char *names[3] = {"full", "prefix", "reuse"};
    for (int i = 0; i < 3; i++) {
        memset(&modes[nm], 0, sizeof modes[nm]);
        snprintf(modes[nm].name, sizeof modes[nm].name, "%s", names[i]);
        modes[nm].pipeline = pipes[0];
        modes[nm++].kind = i;
    }
    {
        const char *list = o->blend_ratio ? o->blend_ratio : "0.05,0.15,0.3";
        char buf[256];
        snprintf(buf, sizeof buf, "%s", list);
        for (char *sv = NULL, *t = strtok_r(buf, ",", &sv); t; t = strtok_r(NULL, ",", &sv)) {
            float r;
            if (cli_parse_float(t, 0, 1, &r)) cli_die(CLI_EXIT_USAGE, "--blend-ratio: '%s' is not a number in [0, 1]", t);
            for (int pi = 0; pi < n_pipes; pi++) {
                if (nm == MAX_MODES) cli_die(CLI_EXIT_USAGE, "--blend-ratio: at most %d modes", MAX_MODES - 3);
                memset(&modes[nm], 0, sizeof modes[nm]);
                snprintf(modes[nm].name, sizeof modes[nm].name, "blend@%g%s", (double)r, pipes[pi] ? "" : "/serial");
                modes[nm].kind = 3;
                modes[nm].pipeline = pipes[pi];
                modes[nm++].ratio = r;
            }
        }
    }
    if (nm == 3) cli_die(CLI_EXIT_USAGE, "--blend-ratio: no ratio given");
    if (o->rag_floor) { /* the noise floor: an equally valid full prefill (the other activation path) */
        if (nm == MAX_MODES) cli_die(CLI_EXIT_USAGE, "--floor: at most %d modes in all", MAX_MODES);
        memset(&modes[nm], 0, sizeof modes[nm]);
        snprintf(modes[nm].name, sizeof modes[nm].name, "%s", o->exact ? "full-default" : "full-exact");
        modes[nm++].kind = 4;
    }
    int main_blend = -1; /* the `blend` entry of --json: r = 0.15 (pipelined when both run) when run, else the first ratio */
    for (int i = 3; i < nm; i++)
        if (fabsf(modes[i].ratio - 0.15f) < 1e-6f && (main_blend < 0 || modes[i].pipeline)) main_blend = i;
    if (main_blend < 0) main_blend = 3;

    kvl_model *m = cli_load_model(o->model);
    kvl_model_info info;
    kvl_model_get_info(m, &info);
    const int nv = info.n_vocab;
    char err[512] = "";
    task_corpus corpus;
    if (task_corpus_load(&corpus, find_essays(o), err, sizeof err)) cli_die(CLI_EXIT_RUNTIME, "%s", err);
    const int n_ctx = o->n_ctx > 0 ? o->n_ctx : 128 + n_chunks * T + 64 + ANSWER_MAX + 64;
    kvl_ctx *c = cli_create_ctx(m, o, NULL, n_ctx), *c_floor = NULL;
    if (o->rag_floor) {
        cli_opts o2 = *o;
        o2.exact = !o->exact;
        c_floor = cli_create_ctx(m, &o2, NULL, n_ctx);
    }
    const size_t ram = o->blend_ram != SIZE_MAX ? o->blend_ram : (size_t)4 << 30;
    kvl_prefix *pf = NULL;
    if (kvl_prefix_create(NULL, (size_t)4 << 30, &pf, err, sizeof err)) cli_die(CLI_EXIT_RUNTIME, "%s", err);
    kvl_blend *store = NULL;
    for (int i = 0; i < nm; i++) modes[i].cells = calloc((size_t)n_seeds * n_q, sizeof(cellr));
    float *lfull = malloc(sizeof(float) * (size_t)nv), *lm = malloc(sizeof(float) * (size_t)nv);
    kvl_token *all = NULL; /* the prompt's tokens (may exceed --ctx: the prefill reports it) */
    double ms_index = 0;
    int n_indexed = 0;
    cli_progress pr;
    cli_progress_begin(&pr, "rag", (long)n_seeds * n_q);
    for (int si = 0; si < n_seeds; si++) {
        const int seed = o->ret_seed_base + si;
        rag_set set;
        if (rag_set_build(m, &corpus, (uint64_t)seed, n_chunks, T, &set, err, sizeof err))
            cli_die(CLI_EXIT_RUNTIME, "%s", err);
        if (!store && kvl_blend_create(c, set.head, set.n_head, o->blend_store, ram, 0, &store, err, sizeof err))
            cli_die(CLI_EXIT_RUNTIME, "%s", err);
        /* index the chunks (a RAG system computes them once, when it stores them) */
        for (int k = 0; k < n_chunks; k++) {
            const double t0 = cli_now();
            int stored = 0;
            const kvl_status st = kvl_blend_put(store, set.chunk[k], T, &stored);
            if (st) cli_die(CLI_EXIT_RUNTIME, "blend store: %s", cli_ctx_msg(c, st));
            if (stored) ms_index += 1e3 * (cli_now() - t0), n_indexed++;
        }
        for (int qi = 0; qi < n_q; qi++) {
            rag_question q;
            if (rag_question_make(m, &set, (uint64_t)seed, qi, &q, err, sizeof err)) cli_die(CLI_EXIT_RUNTIME, "%s", err);
            kvl_blend_seg segs[RAG_MAX_CHUNKS + 2];
            int ns = 0, n = 0;
            kvl_token *grown = realloc(all, sizeof(kvl_token) * ((size_t)set.n_head + (size_t)n_chunks * T + (size_t)q.n_q));
            if (!grown) cli_die(CLI_EXIT_RUNTIME, "eval rag: out of memory");
            all = grown;
            segs[ns++] = (kvl_blend_seg){set.head, set.n_head, 0};
            memcpy(all, set.head, sizeof(kvl_token) * (size_t)set.n_head), n += set.n_head;
            for (int k = 0; k < n_chunks; k++) {
                segs[ns++] = (kvl_blend_seg){set.chunk[q.order[k]], T, 1};
                memcpy(all + n, set.chunk[q.order[k]], sizeof(kvl_token) * (size_t)T), n += T;
            }
            segs[ns++] = (kvl_blend_seg){q.q, q.n_q, 0};
            memcpy(all + n, q.q, sizeof(kvl_token) * (size_t)q.n_q), n += q.n_q;
            char full_ans[96] = "";
            for (int mi = 0; mi < nm; mi++) {
                mode *md = &modes[mi];
                cellr *ce = &md->cells[md->n++];
                ce->seed = seed;
                ce->q = qi;
                kvl_seq *s = NULL;
                kvl_ctx *cm = md->kind == 4 ? c_floor : c;
                kvl_status st = kvl_seq_create(cm, &s);
                if (st) cli_die(CLI_EXIT_RUNTIME, "sequence: %s", cli_ctx_msg(cm, st));
                float *lo = md->kind == 0 ? lfull : lm;
                if (o->blend_cold && (md->kind == 2 || md->kind == 3) && kvl_blend_drop_cache(store, NULL))
                    cli_die(CLI_EXIT_RUNTIME, "--blend-cold: %s", cli_ctx_msg(c, KVL_ERR_IO));
                const double t0 = cli_now();
                if (md->kind == 0 || md->kind == 4) {
                    st = kvl_prefill(s, all, n, lo, NULL);
                } else if (md->kind == 1) {
                    int reused = 0;
                    st = kvl_prefix_get(pf, s, all, n, &reused);
                    if (!st) st = kvl_prefill(s, all + reused, n - reused, lo, NULL);
                    ce->selected = reused;
                } else {
                    kvl_blend_params p = bp;
                    if (md->kind == 2) p.ratio = 0, p.full_layers = 0;
                    else p.ratio = md->ratio;
                    p.pipeline = md->pipeline;
                    p.read_mbps = o->blend_read_mbps;
                    kvl_blend_stats bs;
                    st = kvl_prefill_blend(s, store, segs, ns, &p, lo, &bs);
                    ce->selected = bs.n_selected;
                    ce->read_ms = bs.ms_read;
                    ce->wait_ms = bs.ms_wait;
                    ce->mb_read = (double)bs.bytes_read / 1e6;
                }
                ce->ttft = 1e3 * (cli_now() - t0);
                if (st) cli_die(CLI_EXIT_RUNTIME, "%s prefill failed: %s", md->name, cli_ctx_msg(cm, st));
                if (md->kind == 1) kvl_prefix_put(pf, s, NULL);
                ce->kld = md->kind == 0 ? 0 : kl(lfull, lo, nv);
                float *work = md->kind == 0 ? lm : lo;
                if (md->kind == 0) memcpy(work, lfull, sizeof(float) * (size_t)nv);
                answer(m, cm, s, work, nv, q.n_facts, ce->answer, sizeof ce->answer);
                if (md->kind == 0) snprintf(full_ans, sizeof full_ans, "%s", ce->answer);
                ce->correct = rag_score(&q, &set, ce->answer);
                ce->agree_exact = !strcmp(ce->answer, full_ans);
                ce->agree = same_answer(ce->answer, full_ans);
                kvl_seq_free(s);
            }
            rag_question_free(&q);
            cli_progress_update(&pr, (long)si * n_q + qi + 1);
        }
        rag_set_free(&set);
    }
    cli_progress_end(&pr);
    const double t_full = median(modes[0].cells, modes[0].n);
    const int remote = o->blend_store && !strncmp(o->blend_store, "redis://", 8);
    const char *sel_name = bp.select_query == 2 ? "q" : bp.select_query ? (bp.select_k ? "qk" : "qv") : bp.select_k ? "k" : "v";
    kvl_blend_store_stats bst;
    kvl_blend_get_stats(store, &bst);
    fprintf(stderr, "eval rag: %d seeds x %d questions, %d chunks x %d tokens, kv %s, select %s, full layers %d%s\n",
            n_seeds, n_q, n_chunks, T, o->kv, sel_name, bp.full_layers,
            o->blend_store && !ram ? (remote ? ", chunks from the Redis tier" : ", chunks from the disk tier") : ", chunks in RAM");
    if (o->blend_store) {
        char cap[96] = "uncapped";
        if (o->blend_read_mbps > 0)
            snprintf(cap, sizeof cap, "capped at %g MB/s (an emulated slower tier)", (double)o->blend_read_mbps);
        fprintf(stderr, "%s tier: %s, reads %s, pipeline %s\n", remote ? "Redis" : "disk",
                remote ? "GETs from the server" : o->blend_cold ? "cold (files dropped from the page cache before each prompt)"
                                                : "warm (page cache)",
                cap,
                n_pipes == 2 ? "0 and 1" : pipes[0] ? "1" : "0");
    }
    fprintf(stderr, "%-17s %10s %8s %9s %10s %8s %10s %9s %9s %9s %8s\n", "mode", "ttft_ms", "speedup", "accuracy", "agreement",
            "(exact)", "kld", "selected", "read_ms", "wait_ms", "MB_read");
    for (int i = 0; i < nm; i++) {
        const mode *md = &modes[i];
        double acc = 0, agr = 0, agx = 0, kld = 0, sel = 0;
        for (int k = 0; k < md->n; k++)
            acc += md->cells[k].correct, agr += md->cells[k].agree, agx += md->cells[k].agree_exact,
                kld += md->cells[k].kld, sel += md->cells[k].selected;
        const double tm = median(md->cells, md->n), nn = md->n ? md->n : 1;
        double mb = 0;
        for (int k = 0; k < md->n; k++) mb += md->cells[k].mb_read;
        fprintf(stderr, "%-17s %10.1f %7.2fx %9.3f %10.3f %8.3f %10.4f %9.1f %9.1f %9.1f %8.1f\n", md->name, tm,
                tm > 0 ? t_full / tm : 0, acc / nn, agr / nn, agx / nn, kld / nn, sel / nn,
                median_of(md->cells, md->n, offsetof(cellr, read_ms)), median_of(md->cells, md->n, offsetof(cellr, wait_ms)),
                mb / nn);
    }
    fprintf(stderr, "chunk indexing: %d chunks computed, %.1f ms each (mean); store %d chunks, %zu bytes in RAM\n",
            n_indexed, n_indexed ? ms_index / n_indexed : 0, bst.ram_chunks, bst.ram_bytes);
    if (o->json) {
        printf("{\"task\":\"rag\",\"model\":");
        cli_json_escape(stdout, o->model);
        printf(",\"kv\":");
        cli_json_escape(stdout, o->kv);
        printf(",\"chunks\":%d,\"chunk_tokens\":%d,\"seeds\":%d,\"seed_base\":%d,\"questions\":%d,\"full_layers\":%d,"
               "\"select\":\"%s\",\"tier\":\"%s\",\"cold\":%d,\"read_mbps\":%g,\"modes\":{",
               n_chunks, T, n_seeds, o->ret_seed_base, n_q, bp.full_layers, sel_name,
               o->blend_store && !ram ? (remote ? "redis" : "disk") : "ram", o->blend_cold != 0, (double)o->blend_read_mbps);
        int first = 1;
        for (int i = 0; i < nm; i++) {
            for (int dup = 0; dup < (i == main_blend ? 2 : 1); dup++) {
                const mode *md = &modes[i];
                double acc = 0, agr = 0, agx = 0, kld = 0, sel = 0;
                for (int k = 0; k < md->n; k++)
                    acc += md->cells[k].correct, agr += md->cells[k].agree, agx += md->cells[k].agree_exact,
                        kld += md->cells[k].kld, sel += md->cells[k].selected;
                const double nn = md->n ? md->n : 1, tm = median(md->cells, md->n);
                double mb = 0;
                for (int k = 0; k < md->n; k++) mb += md->cells[k].mb_read;
                printf("%s\"%s\":{\"ttft_ms\":%.3f,\"speedup\":%.4f,\"accuracy\":%.4f,\"agreement\":%.4f,"
                       "\"agreement_exact\":%.4f,\"kld\":%.6g,\"ratio\":%g,\"selected\":%.2f,\"pipeline\":%d,"
                       "\"read_ms\":%.3f,\"wait_ms\":%.3f,\"mb_read\":%.3f,\"cells\":[",
                       first ? "" : ",", dup ? "blend" : md->name, tm, tm > 0 ? t_full / tm : 0, acc / nn, agr / nn,
                       agx / nn, kld / nn, md->kind == 3 ? (double)md->ratio : 0.0, sel / nn,
                       md->kind == 2 || md->kind == 3 ? md->pipeline : 0,
                       median_of(md->cells, md->n, offsetof(cellr, read_ms)),
                       median_of(md->cells, md->n, offsetof(cellr, wait_ms)), mb / nn);
                first = 0;
                for (int k = 0; k < md->n; k++) {
                    const cellr *ce = &md->cells[k];
                    printf("%s{\"seed\":%d,\"q\":%d,\"ttft_ms\":%.3f,\"correct\":%d,\"agree\":%d,\"agree_exact\":%d,"
                           "\"kld\":%.6g,\"selected\":%d,\"read_ms\":%.3f,\"wait_ms\":%.3f,\"mb_read\":%.3f,\"answer\":",
                           k ? "," : "", ce->seed, ce->q, ce->ttft, ce->correct, ce->agree, ce->agree_exact, ce->kld,
                           ce->selected, ce->read_ms, ce->wait_ms, ce->mb_read);
                    cli_json_escape(stdout, ce->answer);
                    printf("}");
                }
                printf("]}");
            }
        }
        printf("}}\n");
    }
    for (int i = 0; i < nm; i++) free(modes[i].cells);
    free(lfull);
    free(lm);
    free(all);
    kvl_blend_free(store);
    kvl_prefix_free(pf);
    kvl_ctx_free(c_floor);
    kvl_ctx_free(c);
    task_corpus_free(&corpus);
    kvl_model_free(m);
    return 0;
}
