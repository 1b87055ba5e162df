/* Session restore vs re-prefill (docs/RESULTS.md, "Session restore and the
 * Redis tier"): for each KV codec and context length N, the median over
 * REPS runs of
 *   prefill: kvl_prefill of the first N tokens of a text into a fresh sequence;
 *   ram:     kvl_seq_load of the session bytes already in memory;
 *   disk:    kvl_session_load from a directory (the file just written and read
 *            once, so the page cache is warm: read + checks + load);
 *   redis:   kvl_session_load from a redis:// store on loopback (connect, GET,
 *            checks, load).
 * Every restored sequence's next-token logits are checked bit-identical to
 * the prefilled sequence's (exit 1 otherwise). Prints one table row per
 * (codec, N) and the speedups prefill / restore.
 * Usage: bench_restore MODEL TEXT DIR REDIS_URL [lengths (1024,4096,8192)]
 *        [codecs (f16,int8)] [reps (5)] [threads (0 = all)]
 * Run through bench/restore.sh (starts a redis-server, takes the benchmark lock). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kvlite.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_d(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    const long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    if (b) b[n] = 0, *len = (size_t)n;
    return b;
}

static void die(const char *what, const char *msg) {
    fprintf(stderr, "bench_restore: %s: %s\n", what, msg);
    exit(1);
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: bench_restore MODEL TEXT DIR REDIS_URL [lengths] [codecs] [reps] [threads]\n");
        return 2;
    }
    const char *mpath = argv[1], *tpath = argv[2], *dir = argv[3], *url = argv[4];
    const char *lens_s = argc > 5 ? argv[5] : "1024,4096,8192", *codecs_s = argc > 6 ? argv[6] : "f16,int8";
    const int reps = argc > 7 ? atoi(argv[7]) : 5, threads = argc > 8 ? atoi(argv[8]) : 0;
    if (reps < 1 || reps > 100) die("reps", "want 1..100");
    int lens[16], nl = 0, maxl = 0;
    for (const char *p = lens_s; *p && nl < 16;) {
        lens[nl] = atoi(p);
        if (lens[nl] < 2) die("lengths", lens_s);
        if (lens[nl] > maxl) maxl = lens[nl];
        nl++;
        p = strchr(p, ',');
        if (!p) break;
        p++;
    }
    char err[512] = "";
    kvl_model *m = NULL;
    if (kvl_model_load(mpath, &m, err, sizeof err) != KVL_OK) die(mpath, err);
    size_t tl = 0;
    char *text = read_all(tpath, &tl);
    if (!text) die(tpath, "cannot read");
    /* tokenize enough text: 6 bytes per token is plenty for English */
    size_t take = tl < (size_t)maxl * 8 ? tl : (size_t)maxl * 8;
    while (take < tl && (text[take] & 0xC0) == 0x80) take++;
    kvl_token *toks = malloc(sizeof *toks * (take + 2));
    const int64_t nt = kvl_tokenize(m, text, take, 1, 0, toks, (int64_t)take + 2);
    if (nt <= maxl) die(tpath, "text too short for the longest length");
    kvl_model_info info;
    kvl_model_get_info(m, &info);
    float *la = malloc(sizeof(float) * info.n_vocab), *lb = malloc(sizeof(float) * info.n_vocab);
    double *tp = malloc(sizeof(double) * reps), *tr = malloc(sizeof(double) * reps), *td = malloc(sizeof(double) * reps),
           *tx = malloc(sizeof(double) * reps);
    printf("| codec | tokens | session bytes | re-prefill ms | RAM restore ms | disk restore ms | Redis restore ms | "
           "prefill/RAM | prefill/disk | prefill/Redis |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|\n");
    fflush(stdout);
    for (const char *cp = codecs_s; *cp;) {
        char codec[64];
        const char *ce = strchr(cp, ',');
        const size_t cl = ce ? (size_t)(ce - cp) : strlen(cp);
        if (cl >= sizeof codec) die("codec", cp);
        memcpy(codec, cp, cl);
        codec[cl] = 0;
        cp = ce ? ce + 1 : cp + cl;
        kvl_ctx_params p;
        kvl_ctx_params_default(&p);
        p.n_ctx = maxl + 8;
        p.n_threads = threads;
        p.kv_codec = codec;
        p.n_seq_max = 2;
        kvl_ctx *c = NULL;
        if (kvl_ctx_create(m, &p, &c, err, sizeof err) != KVL_OK) die(codec, err);
        for (int li = 0; li < nl; li++) {
            const int n = lens[li];
            kvl_seq *ref = NULL;
            for (int r = 0; r < reps; r++) {
                kvl_seq *s = NULL;
                if (kvl_seq_create(c, &s) != KVL_OK) die("seq", kvl_ctx_error(c));
                const double t0 = now();
                if (kvl_prefill(s, toks, n, la, NULL) != KVL_OK) die("prefill", kvl_ctx_error(c));
                tp[r] = now() - t0;
                if (r == reps - 1) ref = s;
                else kvl_seq_free(s);
            }
            void *buf = NULL;
            size_t len = 0;
            if (kvl_seq_save(ref, &buf, &len) != KVL_OK) die("save", kvl_ctx_error(c));
            if (kvl_session_save(c, ref, dir, "bench", NULL, 0) != KVL_OK) die("disk save", kvl_ctx_error(c));
            if (kvl_session_save(c, ref, url, "bench", NULL, 0) != KVL_OK) die("redis save", kvl_ctx_error(c));
            if (kvl_decode(ref, toks[n], la) != KVL_OK) die("decode", kvl_ctx_error(c));
            for (int tier = 0; tier < 3; tier++) {
                double *t = tier == 0 ? tr : tier == 1 ? td : tx;
                for (int r = -1; r < reps; r++) { /* r = -1: warm-up (page cache, connection path) */
                    kvl_seq *s = NULL;
                    kvl_status st;
                    const double t0 = now();
                    if (tier == 0) st = kvl_seq_load(c, buf, len, &s);
                    else st = kvl_session_load(c, tier == 1 ? dir : url, "bench", &s, NULL, NULL);
                    const double dt = now() - t0;
                    if (st != KVL_OK) die(tier == 0 ? "ram load" : tier == 1 ? "disk load" : "redis load", kvl_ctx_error(c));
                    if (r >= 0) t[r] = dt;
                    if (r == reps - 1) { /* restored == prefilled: the next token's logits bit-identical */
                        if (kvl_decode(s, toks[n], lb) != KVL_OK) die("decode", kvl_ctx_error(c));
                        if (memcmp(la, lb, sizeof(float) * info.n_vocab)) die(codec, "restored logits differ");
                    }
                    kvl_seq_free(s);
                }
            }
            const double mp = median(tp, reps), mr = median(tr, reps), md = median(td, reps), mx = median(tx, reps);
            printf("| %s | %d | %zu | %.1f | %.2f | %.2f | %.2f | %.0fx | %.0fx | %.0fx |\n", codec, n, len, 1e3 * mp,
                   1e3 * mr, 1e3 * md, 1e3 * mx, mp / mr, mp / md, mp / mx);
            fflush(stdout);
            free(buf);
            kvl_seq_free(ref);
        }
        kvl_ctx_free(c);
    }
    char e2[512];
    kvl_session_delete(url, "bench", e2, sizeof e2);
    free(tp), free(tr), free(td), free(tx);
    free(la), free(lb), free(toks), free(text);
    kvl_model_free(m);
    return 0;
}
