/* The Redis tier (src/engine/redis.c, session_redis.c, prefix.c) against a
 * real redis-server that this test starts on 127.0.0.1 at a free port
 * (--save '' --appendonly no, killed with the test: PR_SET_PDEATHSIG) and
 * kills and restarts itself: URL parsing; GET/SET of binary values, EXISTS,
 * DEL, SCAN by prefix; sessions through Redis (bit-identical next-token
 * logits vs the unsaved sequence for f16 and kivi2 on the tiny model, and
 * on KVL_MODEL when set; list, delete; garbage / truncated / bit-flipped
 * values rejected with nothing loaded; a writer killed at random points 25
 * times never loses an acknowledged save nor leaves a value that loads
 * wrong); the prefix store's Redis tier with
 * RAM and disk off (reuse with bit-identical logits, garbage chunks are a
 * miss and get repaired by the next put); Redis killed mid-run (requests
 * recompute and succeed, the outage logged once, its end once, hits resume
 * after a restart), Redis never up (one log line, requests succeed) and a
 * stopped (SIGSTOP) Redis (bounded by the command timeout); the client's
 * GET reply reader against a fake server sending malformed and cut replies. Without
 * redis-server: a skip, a failure under CI=true. Built without hiredis:
 * checks the "built without hiredis" errors only. */
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "engine/blend.h"
#include "engine/engine.h"
#include "engine/redis.h"
#include "test.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* A port nothing listens on right now (bind to 0, read it back, close). */
static int free_port(void) {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t n = sizeof a;
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(fd, (struct sockaddr *)&a, &n) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0) close(fd);
    return port;
}

/* Start redis-server on port; wait until PING answers (10 s). Returns its pid or -1. */
static pid_t start_redis(int port) {
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    fflush(NULL); /* the child's freopen would write out buffered output again */
    const pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (!freopen("/dev/null", "w", stdout) || !freopen("/dev/null", "w", stderr)) _exit(126);
        execlp("redis-server", "redis-server", "--port", ps, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
               "--daemonize", "no", (char *)NULL);
        _exit(127);
    }
    if (pid < 0) return -1;
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", port);
    kvl_redis_params par = {0};
    par.retry_ms = -1;
    kvl_redis *r = NULL;
    kvl_err e;
    if (kvl_redis_create(url, &par, &r, &e) != KVL_OK) return -1;
    for (int i = 0; i < 200; i++) {
        if (kvl_redis_ping(r, &e) == KVL_OK) {
            kvl_redis_free(r);
            return pid;
        }
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) break; /* exited: port taken, or not installed */
        sleep_ms(50);
    }
    kvl_redis_free(r);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

static void stop_redis(pid_t pid) {
    if (pid <= 0) return;
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

typedef struct logbook {
    int n;
    char last[700];
} logbook;
static void log_cb(void *user, const char *msg) {
    logbook *l = user;
    l->n++;
    snprintf(l->last, sizeof l->last, "%s", msg);
}

static int count_cb(const char *key, size_t len, void *user) {
    (void)key, (void)len;
    ++*(int *)user;
    return 0;
}
static int stop_cb(const char *key, size_t len, void *user) {
    (void)key, (void)len;
    return ++*(int *)user >= 3;
}

static void test_url(void) {
    char h[KVL_REDIS_URL_MAX];
    int port = 0, db = 0;
    kvl_err e;
    CHECK(kvl_redis_url_parse("redis://127.0.0.1:6380", h, sizeof h, &port, &db, &e) == KVL_OK && !strcmp(h, "127.0.0.1") &&
          port == 6380 && db == 0);
    CHECK(kvl_redis_url_parse("redis://localhost", h, sizeof h, &port, &db, &e) == KVL_OK && port == 6379 && db == 0);
    CHECK(kvl_redis_url_parse("redis://[::1]:7000/3", h, sizeof h, &port, &db, &e) == KVL_OK && !strcmp(h, "::1") &&
          port == 7000 && db == 3);
    CHECK(kvl_redis_url_parse("redis://h-1.x:1/", h, sizeof h, &port, &db, &e) == KVL_OK && port == 1);
    const char *bad[] = {"http://x:1",    "redis://",       "redis://:6379", "redis://h:0",         "redis://h:70000",
                         "redis://h:12ab", "redis://u:p@h", "redis://h/abc", "redis://h:1/2/3",     "redis://h:1x",
                         "redis://[::1",  "redis://[zz]:1", "redis://h h",   "redis://h:1/99999999", "redis://h:"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        kvl_err_clear(&e);
        CHECK_MSG(kvl_redis_url_parse(bad[i], h, sizeof h, &port, &db, &e) == KVL_ERR_ARG && e.msg[0], "%s", bad[i]);
    }
    char longu[400] = "redis://";
    memset(longu + 8, 'a', 300);
    longu[308] = 0;
    CHECK(kvl_redis_url_parse(longu, h, sizeof h, &port, &db, &e) == KVL_ERR_ARG);
    CHECK(kvl_redis_is_url("redis://x") && !kvl_redis_is_url("/tmp/redis://") && !kvl_redis_is_url(NULL));
}

static void test_client(const char *url) {
    kvl_redis *r = NULL;
    kvl_err e;
    CHECK(kvl_redis_create(url, NULL, &r, &e) == KVL_OK);
    const size_t n = 100000;
    uint8_t *v = malloc(n);
    for (size_t i = 0; i < n; i++) v[i] = (uint8_t)(i * 7 % 251); /* zeros and "\r\n" included */
    CHECK(kvl_redis_set(r, "t:bin", v, n, &e) == KVL_OK);
    const uint8_t *g = NULL;
    size_t gl = 0;
    void *hold = NULL;
    CHECK(kvl_redis_get(r, "t:bin", &g, &gl, &hold, &e) == KVL_OK && g && gl == n && !memcmp(g, v, n));
    kvl_redis_release(hold);
    CHECK(kvl_redis_get(r, "t:missing", &g, &gl, &hold, &e) == KVL_OK && !g && gl == 0 && !hold);
    CHECK(kvl_redis_set(r, "t:empty", NULL, 0, &e) == KVL_OK);
    CHECK(kvl_redis_get(r, "t:empty", &g, &gl, &hold, &e) == KVL_OK && g && gl == 0);
    kvl_redis_release(hold);
    int ex = 0, del = 0;
    CHECK(kvl_redis_exists(r, "t:bin", &ex, &e) == KVL_OK && ex == 1);
    CHECK(kvl_redis_del(r, "t:bin", &del, &e) == KVL_OK && del == 1);
    CHECK(kvl_redis_del(r, "t:bin", &del, &e) == KVL_OK && del == 0);
    CHECK(kvl_redis_exists(r, "t:bin", &ex, &e) == KVL_OK && ex == 0);
    char k[64];
    for (int i = 0; i < 300; i++) {
        snprintf(k, sizeof k, "t:scan:%d", i);
        CHECK(kvl_redis_set(r, k, "x", 1, &e) == KVL_OK);
    }
    CHECK(kvl_redis_set(r, "t:scanx", "x", 1, &e) == KVL_OK);
    CHECK(kvl_redis_set(r, "t:sca*", "x", 1, &e) == KVL_OK);
    int cnt = 0;
    CHECK(kvl_redis_scan(r, "t:scan:", count_cb, &cnt, &e) == KVL_OK);
    CHECK_MSG(cnt == 300, "SCAN found %d keys", cnt);
    cnt = 0;
    CHECK(kvl_redis_scan(r, "t:sca*", count_cb, &cnt, &e) == KVL_OK && cnt == 1); /* '*' matched literally */
    cnt = 0;
    CHECK(kvl_redis_scan(r, "t:scan:", stop_cb, &cnt, &e) == KVL_OK && cnt == 3);
    free(v);
    kvl_redis_free(r);
}

#ifdef KVL_HAVE_HIREDIS
/* GET against a fake server that sends canned replies, one per connection:
 * the client's own reply reader (bulk strings read straight into a buffer)
 * takes a valid value, a nil, an error reply, and refuses every malformed or
 * cut reply with a message, never reading past what it was sent. */
static void test_fake_server(void) {
    static const struct {
        const char *reply;
        int ok; /* 1: value "hello", 2: missing, 0: error containing msg */
        const char *msg;
    } cases[] = {
        {"$5\r\nhello\r\n", 1, NULL},
        {"$-1\r\n", 2, NULL},
        {"-ERR wrong kind\r\n", 0, "wrong kind"},
        {"+OK\r\n", 0, "unexpected reply"},
        {":12\r\n", 0, "unexpected reply"},
        {"$10\r\nabc", 0, "GET failed"},
        {"$99999999999999999999\r\n", 0, "bad bulk length"},
        {"$-5\r\n", 0, "bad bulk length"},
        {"$\r\n", 0, "bad bulk length"},
        {"$3\r\nabcXY", 0, "not terminated"},
        {"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
         "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
         "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
         0, "too long"},
        {"", 0, "GET failed"},
    };
    const int nc = (int)(sizeof cases / sizeof *cases);
    const int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    CHECK(lfd >= 0 && bind(lfd, (struct sockaddr *)&a, sizeof a) == 0 && listen(lfd, 4) == 0 &&
          getsockname(lfd, (struct sockaddr *)&a, &al) == 0);
    fflush(NULL);
    const pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        for (int i = 0; i < nc; i++) {
            const int fd = accept(lfd, NULL, NULL);
            if (fd < 0) _exit(1);
            char req[1024];
            if (read(fd, req, sizeof req) <= 0) _exit(2); /* the GET (one small write) */
            const size_t n = strlen(cases[i].reply);
            if (n && write(fd, cases[i].reply, n) != (ssize_t)n) _exit(3);
            close(fd);
        }
        _exit(0);
    }
    close(lfd);
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", ntohs(a.sin_port));
    kvl_redis_params par = {0};
    par.retry_ms = -1;
    par.command_ms = 3000;
    for (int i = 0; i < nc; i++) {
        kvl_redis *r = NULL;
        kvl_err e;
        kvl_err_clear(&e);
        CHECK(kvl_redis_create(url, &par, &r, &e) == KVL_OK);
        const uint8_t *v = NULL;
        size_t len = 0;
        void *hold = NULL;
        const kvl_status st = kvl_redis_get(r, "k", &v, &len, &hold, &e);
        if (cases[i].ok == 1) CHECK_MSG(st == KVL_OK && v && len == 5 && !memcmp(v, "hello", 5), "case %d: %s", i, e.msg);
        else if (cases[i].ok == 2) CHECK_MSG(st == KVL_OK && !v && len == 0, "case %d: %s", i, e.msg);
        else CHECK_MSG(st == KVL_ERR_IO && !v && strstr(e.msg, cases[i].msg), "case %d: status %d, '%s'", i, st, e.msg);
        kvl_redis_release(hold);
        kvl_redis_free(r);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}
#endif

static kvl_ctx *mkctx(const kvl_model *m, const char *codec, int n_ctx) {
    kvl_ctx_params p;
    kvl_ctx_params_default(&p);
    p.n_ctx = n_ctx;
    p.n_threads = 1;
    p.kv_codec = codec;
    p.page_tokens = 8;
    p.n_seq_max = 2; /* the original and the restored sequence */
    kvl_ctx *c = NULL;
    char err[256] = "";
    CHECK_MSG(kvl_ctx_create(m, &p, &c, err, sizeof err) == KVL_OK, "%s", err);
    return c;
}

/* Save a prefilled sequence to Redis, load it, and compare the next token's logits. */
static void session_roundtrip(const kvl_model *m, const char *codec, const char *url, const char *name, int n) {
    kvl_ctx *c = mkctx(m, codec, 1024);
    if (!c) return;
    const int V = m->n_vocab;
    kvl_token *t = malloc(sizeof *t * (size_t)n);
    for (int i = 0; i < n; i++) t[i] = (kvl_token)((7 + 13 * i + (i * i) % 11) % V);
    float *la = malloc(sizeof(float) * V), *lb = malloc(sizeof(float) * V);
    kvl_seq *a = NULL, *b = NULL;
    CHECK(kvl_seq_create(c, &a) == KVL_OK && kvl_prefill(a, t, n, la, NULL) == KVL_OK);
    const kvl_chat_msg msgs[2] = {{"user", "hello"}, {"assistant", "hi there"}};
    CHECK_MSG(kvl_session_save(c, a, url, name, msgs, 2) == KVL_OK, "%s", kvl_ctx_error(c));
    /* the stored bytes are those of kvl_seqs_save */
    void *buf = NULL, *mine = NULL;
    size_t len = 0, mlen = 0;
    char err[600] = "";
    CHECK(kvl_session_read(url, name, &buf, &len, err, sizeof err) == KVL_OK && buf && len > 0);
    CHECK(kvl_seqs_save((const kvl_seq *const *)&a, 1, msgs, 2, &mine, &mlen) == KVL_OK && mlen == len &&
          !memcmp(buf, mine, len));
    free(buf);
    free(mine);
    kvl_chat_msg *got = NULL;
    int nm = 0;
    CHECK_MSG(kvl_session_load(c, url, name, &b, &got, &nm) == KVL_OK, "%s", kvl_ctx_error(c));
    if (b) {
        CHECK(kvl_seq_pos(b) == n && nm == 2 && got && !strcmp(got[1].content, "hi there"));
        CHECK(kvl_decode(a, t[0], la) == KVL_OK && kvl_decode(b, t[0], lb) == KVL_OK);
        CHECK_MSG(!memcmp(la, lb, sizeof(float) * V), "%s: next-token logits after a Redis restore differ", codec);
        kvl_seq_free(b);
    }
    free(got);
    kvl_seq_free(a);
    kvl_ctx_free(c);
    free(t);
    free(la);
    free(lb);
}

static int name_cb(const char *name, void *user) {
    char *acc = user;
    if (strlen(acc) + strlen(name) + 2 < 512) strcat(strcat(acc, name), ",");
    return 0;
}

static void test_sessions(const kvl_model *m, const char *url) {
    session_roundtrip(m, "f16", url, "s-f16", 300);
    session_roundtrip(m, "kivi2", url, "s-kivi2", 300);
    char acc[512] = "", err[600] = "";
    CHECK(kvl_session_list(url, name_cb, acc, err, sizeof err) == KVL_OK);
    CHECK_MSG(strstr(acc, "s-f16,") && strstr(acc, "s-kivi2,") && !strstr(acc, "t:"), "list: %s", acc);
    CHECK(kvl_session_delete(url, "s-kivi2", err, sizeof err) == KVL_OK);
    CHECK(kvl_session_delete(url, "s-kivi2", err, sizeof err) == KVL_ERR_IO && strstr(err, "not in"));
    acc[0] = 0;
    CHECK(kvl_session_list(url, name_cb, acc, err, sizeof err) == KVL_OK && !strcmp(acc, "s-f16,"));
    CHECK(kvl_session_delete(url, "../x", err, sizeof err) == KVL_ERR_ARG);

    kvl_ctx *c = mkctx(m, "f16", 1024);
    kvl_seq *s = NULL;
    CHECK(kvl_session_load(c, url, "nope", &s, NULL, NULL) == KVL_ERR_IO && !s && strstr(kvl_ctx_error(c), "not in"));
    void *buf = NULL;
    size_t len = 0;
    CHECK(kvl_session_read(url, "nope", &buf, &len, err, sizeof err) == KVL_OK && !buf && len == 0);
    /* hostile values under a session key: garbage, truncated, one bit flipped */
    CHECK(kvl_session_read(url, "s-f16", &buf, &len, err, sizeof err) == KVL_OK && buf);
    kvl_redis *r = NULL;
    kvl_err e;
    CHECK(kvl_redis_create(url, NULL, &r, &e) == KVL_OK);
    uint8_t junk[4096];
    for (size_t i = 0; i < sizeof junk; i++) junk[i] = (uint8_t)(i * 131 + 7);
    uint8_t *flip = malloc(len);
    memcpy(flip, buf, len);
    flip[len / 2] ^= 0x10;
    const struct {
        const void *v;
        size_t n;
    } bad[] = {{junk, sizeof junk}, {buf, len / 2}, {buf, 40}, {flip, len}, {"", 0}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        CHECK(kvl_redis_set(r, "kvlite:session:bad", bad[i].v, bad[i].n, &e) == KVL_OK);
        const size_t used = kvl_kv_pool_used(c->pool);
        s = NULL;
        CHECK_MSG(kvl_session_load(c, url, "bad", &s, NULL, NULL) != KVL_OK && !s && kvl_ctx_error(c)[0], "bad value %zu", i);
        CHECK(kvl_kv_pool_used(c->pool) == used);
    }
    free(flip);
    free(buf);
    kvl_redis_free(r);
    kvl_ctx_free(c);
}

/* A writer killed at random points loses no committed save and never
 * leaves a value that loads wrong: the child saves a growing sequence
 * (STEP more tokens each time) and reports each acknowledged save on a
 * pipe; after SIGKILL the session must load and hold the last reported
 * length or the one after it (sent, not yet acknowledged). */
static void test_kill(const kvl_model *m, const char *url, int rounds) {
    enum { STEP = 24, MAXT = 960 };
    kvl_redis *r = NULL;
    kvl_err e;
    CHECK(kvl_redis_create(url, NULL, &r, &e) == KVL_OK);
    kvl_ctx *c = mkctx(m, "int8", 1024);
    unsigned seed = 12345;
    int ok_rounds = 0;
    for (int round = 0; round < rounds && c; round++) {
        kvl_redis_del(r, "kvlite:session:kill", NULL, &e);
        int fd[2];
        if (pipe(fd) != 0) break;
        fflush(NULL);
        const pid_t pid = fork();
        if (pid == 0) {
            close(fd[0]);
            kvl_ctx *cc = mkctx(m, "int8", 1024);
            kvl_seq *s = NULL;
            kvl_token t[STEP];
            if (!cc || kvl_seq_create(cc, &s) != KVL_OK) _exit(2);
            for (int pos = STEP; pos <= MAXT; pos += STEP) {
                for (int i = 0; i < STEP; i++) t[i] = (kvl_token)((pos + 3 * i) % m->n_vocab);
                if (kvl_prefill(s, t, STEP, NULL, NULL) != KVL_OK) _exit(3);
                if (kvl_session_save(cc, s, url, "kill", NULL, 0) != KVL_OK) _exit(4);
                if (write(fd[1], &pos, sizeof pos) != (ssize_t)sizeof pos) _exit(5);
            }
            _exit(0);
        }
        close(fd[1]);
        seed = seed * 1103515245u + 12345u;
        sleep_ms(5 + (int)(seed >> 16) % 120);
        kill(pid, SIGKILL);
        int status = 0;
        waitpid(pid, &status, 0);
        int last = 0, v;
        while (read(fd[0], &v, sizeof v) == (ssize_t)sizeof v) last = v;
        close(fd[0]);
        kvl_seq *s = NULL;
        const kvl_status st = kvl_session_load(c, url, "kill", &s, NULL, NULL);
        const int got = s ? kvl_seq_pos(s) : 0;
        const int good = (st == KVL_OK && (got == last || got == last + STEP)) ||
                         (st == KVL_ERR_IO && last == 0 && strstr(kvl_ctx_error(c), "not in"));
        CHECK_MSG(good, "round %d: last acknowledged %d, loaded %d (%s)", round, last, got, st ? kvl_ctx_error(c) : "ok");
        ok_rounds += good && last > 0;
        kvl_seq_free(s);
    }
    printf("note: Redis writer kill test: %d rounds, %d with a committed save before the kill\n", rounds, ok_rounds);
    CHECK(ok_rounds > 0);
    kvl_ctx_free(c);
    kvl_redis_free(r);
}

static void fill_tokens(kvl_token *t, int n, int V, int salt) {
    for (int i = 0; i < n; i++) t[i] = (kvl_token)((5 + 31 * i + (i * i) % 17 + salt) % V);
}

/* Fresh sequence: prefix from pf, rest prefilled; logits in out; returns tokens reused (-1 on an error). */
static int run_prompt(kvl_prefix *pf, kvl_ctx *c, const kvl_token *t, int n, float *out) {
    kvl_seq *s = NULL;
    int reused = -1;
    if (kvl_seq_create(c, &s) != KVL_OK) return -1;
    if (kvl_prefix_get(pf, s, t, n, &reused) != KVL_OK || kvl_prefill(s, t + reused, n - reused, out, NULL) != KVL_OK ||
        kvl_prefix_put(pf, s, NULL) != KVL_OK)
        reused = -1;
    kvl_seq_free(s);
    return reused;
}

typedef struct chunk_keys {
    char k[16][64];
    int n;
} chunk_keys;
static int key_cb(const char *key, size_t len, void *user) {
    chunk_keys *ck = user;
    if (ck->n < 16 && len < 64) {
        memcpy(ck->k[ck->n], key, len);
        ck->k[ck->n++][len] = 0;
    }
    return 0;
}
static int set_all_chunks(kvl_redis *r, const void *v, size_t n) {
    chunk_keys ck = {.n = 0};
    kvl_err e;
    if (kvl_redis_scan(r, "kvlite:chunk:", key_cb, &ck, &e) != KVL_OK) return -1;
    for (int i = 0; i < ck.n; i++)
        if (kvl_redis_set(r, ck.k[i], v, n, &e) != KVL_OK) return -1;
    return ck.n;
}

static void test_prefix(const kvl_model *m, const char *url, int port, pid_t *server) {
    enum { N = 700 };
    const int V = m->n_vocab;
    kvl_token t[N];
    fill_tokens(t, N, V, 0);
    float *ref = malloc(sizeof(float) * V), *got = malloc(sizeof(float) * V);
    kvl_ctx *c = mkctx(m, "f16", 1024);
    kvl_prefix *none = NULL;
    char err[600] = "";
    CHECK(kvl_prefix_create(NULL, 0, &none, err, sizeof err) == KVL_OK);
    CHECK(run_prompt(none, c, t, N, ref) == 0); /* the recomputed reference */
    kvl_prefix_free(none);

    /* Redis only (no RAM, no disk): one store writes, a new one reuses */
    logbook lb = {0};
    kvl_prefix_params pp;
    kvl_prefix_params_default(&pp);
    pp.ram_bytes = 0;
    pp.redis_url = url;
    pp.redis_retry_ms = 50;
    pp.log = log_cb;
    pp.log_user = &lb;
    kvl_prefix *pa = NULL, *pb = NULL;
    CHECK(kvl_prefix_create_ex(&pp, &pa, err, sizeof err) == KVL_OK);
    CHECK(run_prompt(pa, c, t, N, got) == 0);
    kvl_prefix_stats st;
    kvl_prefix_get_stats(pa, &st);
    CHECK_MSG(st.redis_stored == 2 && st.redis_misses == 1 && st.ram_chunks == 0, "stored %lld misses %lld",
              (long long)st.redis_stored, (long long)st.redis_misses);
    CHECK(kvl_prefix_create_ex(&pp, &pb, err, sizeof err) == KVL_OK);
    CHECK(run_prompt(pb, c, t, N, got) == 512);
    CHECK_MSG(!memcmp(ref, got, sizeof(float) * V), "logits with a prefix from Redis differ");
    kvl_prefix_get_stats(pb, &st);
    CHECK(st.redis_hits == 2 && st.ram_hits == 0 && st.disk_hits == 0 && st.redis_errors == 0);
    CHECK(lb.n == 0);

    /* garbage and truncated values under the chunk keys: the first bad chunk
     * of a lookup is a miss (recompute), its key is dropped and rewritten by
     * the put; the next lookup reaches the next bad chunk */
    kvl_redis *r = NULL;
    kvl_err e;
    CHECK(kvl_redis_create(url, NULL, &r, &e) == KVL_OK);
    uint8_t junk[3000];
    for (size_t i = 0; i < sizeof junk; i++) junk[i] = (uint8_t)(i * 29 + 3);
    memcpy(junk, "KVLCHNK1", 8);
    const size_t cut[2] = {sizeof junk, 1100};
    for (int round = 0; round < 2; round++) {
        CHECK(set_all_chunks(r, junk, cut[round]) == 2);
        const size_t used = kvl_kv_pool_used(c->pool);
        kvl_prefix_get_stats(pb, &st);
        const int64_t bad0 = st.bad, stored0 = st.redis_stored;
        CHECK(run_prompt(pb, c, t, N, got) == 0);
        CHECK(!memcmp(ref, got, sizeof(float) * V));
        CHECK(kvl_kv_pool_used(c->pool) == used);
        kvl_prefix_get_stats(pb, &st);
        CHECK_MSG(st.bad == bad0 + 1 && st.redis_stored == stored0 + 1, "bad %lld stored %lld", (long long)st.bad,
                  (long long)st.redis_stored);
        CHECK(run_prompt(pb, c, t, N, got) == 256 && !memcmp(ref, got, sizeof(float) * V));
        CHECK(run_prompt(pb, c, t, N, got) == 512 && !memcmp(ref, got, sizeof(float) * V)); /* repaired */
        kvl_prefix_get_stats(pb, &st);
        CHECK(st.bad == bad0 + 2 && st.redis_stored == stored0 + 2);
    }
    kvl_redis_free(r);
    kvl_prefix_free(pa);

    /* Redis killed mid-run: requests recompute and succeed, logged once; back after a restart */
    *server = (stop_redis(*server), -1);
    for (int i = 0; i < 4; i++) {
        CHECK(run_prompt(pb, c, t, N, got) == 0);
        CHECK(!memcmp(ref, got, sizeof(float) * V));
        sleep_ms(60); /* past the retry interval: each request tries to connect again */
    }
    CHECK_MSG(lb.n == 1 && strstr(lb.last, url), "%d log lines, last: %s", lb.n, lb.last);
    kvl_prefix_get_stats(pb, &st);
    CHECK(st.redis_errors >= 4);
    *server = start_redis(port);
    CHECK(*server > 0);
    sleep_ms(60);
    CHECK(run_prompt(pb, c, t, N, got) == 0); /* the new server is empty: a miss, then the put writes */
    CHECK(run_prompt(pb, c, t, N, got) == 512 && !memcmp(ref, got, sizeof(float) * V));
    CHECK_MSG(lb.n == 2 && strstr(lb.last, "answering again"), "%d log lines, last: %s", lb.n, lb.last);

    /* a stopped server (accepts, never answers): bounded by the command timeout, logged once */
    pp.redis_command_ms = 200;
    pp.redis_retry_ms = 5000;
    logbook ls = {0};
    pp.log_user = &ls;
    kvl_prefix *ps = NULL;
    CHECK(kvl_prefix_create_ex(&pp, &ps, err, sizeof err) == KVL_OK);
    kill(*server, SIGSTOP);
    double t0 = now_s();
    CHECK(run_prompt(ps, c, t, N, got) == 0 && !memcmp(ref, got, sizeof(float) * V));
    CHECK(run_prompt(ps, c, t, N, got) == 0);
    const double dt = now_s() - t0;
    kill(*server, SIGCONT);
    CHECK_MSG(dt < 3.0 && ls.n == 1 && strstr(ls.last, "timed out"), "%.2f s, %d log lines: %s", dt, ls.n, ls.last);
    kvl_prefix_free(ps);
    kvl_prefix_free(pb);

    /* never up: create succeeds with one log line, requests recompute */
    char dead[64];
    snprintf(dead, sizeof dead, "redis://127.0.0.1:%d", free_port());
    logbook ld = {0};
    pp.redis_url = dead;
    pp.redis_retry_ms = -1; /* try every request: still one line */
    pp.log_user = &ld;
    kvl_prefix *pd = NULL;
    CHECK(kvl_prefix_create_ex(&pp, &pd, err, sizeof err) == KVL_OK);
    CHECK(ld.n == 1 && strstr(ld.last, "cannot connect"));
    for (int i = 0; i < 3; i++) CHECK(run_prompt(pd, c, t, N, got) == 0 && !memcmp(ref, got, sizeof(float) * V));
    CHECK(ld.n == 1);
    kvl_prefix_free(pd);
    /* a bad URL fails the create */
    pp.redis_url = "redis://h:0";
    CHECK(kvl_prefix_create_ex(&pp, &pd, err, sizeof err) == KVL_ERR_ARG && !pd && strstr(err, "port"));
    kvl_ctx_free(c);
    free(ref);
    free(got);
}

/* One blended prefill of the 3-chunk prompt into a fresh sequence of c:
 * status, logits in out, stats in bs. */
static kvl_status blend_prompt(kvl_ctx *c, kvl_blend *b, const kvl_token *ch, int CT, const kvl_token *q, int nq,
                               int pipeline, float *out, kvl_blend_stats *bs, int *pos) {
    kvl_blend_seg sg[4] = {{ch + 2 * CT, CT, 1}, {ch, CT, 1}, {ch + CT, CT, 1}, {q, nq, 0}};
    kvl_blend_params bp;
    kvl_blend_params_default(&bp);
    bp.ratio = 0.3f;
    bp.pipeline = pipeline;
    kvl_seq *s = NULL;
    if (kvl_seq_create(c, &s) != KVL_OK) return KVL_ERR_NOMEM;
    const kvl_status st = kvl_prefill_blend(s, b, sg, 4, &bp, out, bs);
    *pos = kvl_seq_pos(s);
    kvl_seq_free(s);
    return st;
}

/* The CacheBlend store's Redis tier: chunks written by one store are
 * streamed layer by layer by another (pipelined and serial) with logits
 * bit-identical to a RAM store's; a damaged or missing layer value is an
 * error naming the layer and the sequence is unchanged; an unreachable
 * Redis is a miss that recomputes (same logits). */
static void test_blend_redis(const kvl_model *m, const char *url) {
    enum { CT = 40, NQ = 9, NB = 4 };
    const int V = m->n_vocab;
    kvl_token base[NB], ch[3 * CT], q[NQ];
    fill_tokens(base, NB, V, 101);
    fill_tokens(ch, 3 * CT, V, 202);
    fill_tokens(q, NQ, V, 303);
    kvl_ctx *c = mkctx(m, "f16", 512);
    if (!c) return;
    float *ref = malloc(sizeof(float) * V), *got = malloc(sizeof(float) * V);
    char err[512] = "";
    kvl_blend_stats bs;
    int pos = 0;
    kvl_blend *ram = NULL, *w = NULL, *r = NULL, *dead = NULL;
    CHECK(kvl_blend_create(c, base, NB, NULL, (size_t)64 << 20, 0, &ram, err, sizeof err) == KVL_OK);
    CHECK(blend_prompt(c, ram, ch, CT, q, NQ, 1, ref, &bs, &pos) == KVL_OK && bs.misses == 3);
    /* a writer store (no RAM tier): every chunk goes to Redis */
    CHECK_MSG(kvl_blend_create(c, base, NB, url, 0, 0, &w, err, sizeof err) == KVL_OK, "%s", err);
    for (int k = 0; k < 3; k++) {
        int stored = 0;
        CHECK(kvl_blend_put(w, ch + k * CT, CT, &stored) == KVL_OK && stored == 1);
    }
    kvl_blend_store_stats st;
    kvl_blend_get_stats(w, &st);
    CHECK_MSG(st.stored == 3 && st.remote_errors == 0, "stored %lld, remote errors %lld", (long long)st.stored,
              (long long)st.remote_errors);
    {
        int stored = 1; /* found whole (no reader) in Redis: not computed again */
        CHECK(kvl_blend_put(w, ch, CT, &stored) == KVL_OK && stored == 0);
    }
    /* a reader store: pipelined and serial, no RAM tier */
    CHECK(kvl_blend_create(c, base, NB, url, 0, 0, &r, err, sizeof err) == KVL_OK);
    for (int pipe = 1; pipe >= 0; pipe--) {
        CHECK_MSG(blend_prompt(c, r, ch, CT, q, NQ, pipe, got, &bs, &pos) == KVL_OK, "%s", kvl_ctx_error(c));
        CHECK_MSG(bs.remote_hits == 3 && bs.misses == 0, "pipeline %d: %d remote hits, %d misses", pipe, bs.remote_hits,
                  bs.misses);
        CHECK_MSG(memcmp(ref, got, sizeof(float) * (size_t)V) == 0, "pipeline %d: logits differ from the RAM store's", pipe);
    }
    /* a damaged layer value, then a missing one */
    kvl_redis *cl = NULL;
    kvl_err e;
    CHECK(kvl_redis_create(url, NULL, &cl, &e) == KVL_OK);
    const uint64_t key = kvl_blend_key(r, ch + CT, CT);
    char k[64];
    const int lbad = m->n_layer - 1;
    kvl_blend_redis_key(key, lbad, k, sizeof k);
    const uint8_t *v = NULL;
    size_t len = 0;
    void *hold = NULL;
    CHECK(kvl_redis_get(cl, k, &v, &len, &hold, &e) == KVL_OK && v && len > 100);
    uint8_t *bad = malloc(len ? len : 1);
    if (v && bad) {
        memcpy(bad, v, len);
        bad[len / 2] ^= 0x10;
        CHECK(kvl_redis_set(cl, k, bad, len, &e) == KVL_OK);
        for (int pipe = 1; pipe >= 0; pipe--) {
            CHECK(blend_prompt(c, r, ch, CT, q, NQ, pipe, got, &bs, &pos) == KVL_ERR_FORMAT && pos == 0);
            char want[32];
            snprintf(want, sizeof want, "layer %d", lbad);
            CHECK_MSG(strstr(kvl_ctx_error(c), want) != NULL, "%s", kvl_ctx_error(c));
            if (pipe) printf("blend Redis tier, damaged layer: %s\n", kvl_ctx_error(c));
        }
        CHECK(kvl_redis_set(cl, k, v, len, &e) == KVL_OK); /* repaired */
        CHECK(blend_prompt(c, r, ch, CT, q, NQ, 1, got, &bs, &pos) == KVL_OK &&
              !memcmp(ref, got, sizeof(float) * (size_t)V));
        CHECK(kvl_redis_del(cl, k, NULL, &e) == KVL_OK);
        CHECK(blend_prompt(c, r, ch, CT, q, NQ, 1, got, &bs, &pos) == KVL_ERR_FORMAT && pos == 0);
        CHECK_MSG(strstr(kvl_ctx_error(c), "missing") != NULL, "%s", kvl_ctx_error(c));
        printf("blend Redis tier, missing layer: %s\n", kvl_ctx_error(c));
        CHECK(kvl_redis_set(cl, k, v, len, &e) == KVL_OK);
    }
    free(bad);
    kvl_redis_release(hold);
    /* a head value of the wrong size */
    kvl_blend_redis_key(key, -1, k, sizeof k);
    CHECK(kvl_redis_set(cl, k, "KVLBLND1", 8, &e) == KVL_OK);
    CHECK(blend_prompt(c, r, ch, CT, q, NQ, 1, got, &bs, &pos) != KVL_OK && pos == 0);
    kvl_redis_free(cl);
    /* Redis unreachable: a miss, computed, the same logits */
    CHECK(kvl_blend_create(c, base, NB, "redis://127.0.0.1:1", 0, 0, &dead, err, sizeof err) == KVL_OK);
    CHECK_MSG(blend_prompt(c, dead, ch, CT, q, NQ, 1, got, &bs, &pos) == KVL_OK && bs.misses == 3, "%s", kvl_ctx_error(c));
    CHECK(!memcmp(ref, got, sizeof(float) * (size_t)V));
    kvl_blend_get_stats(dead, &st);
    CHECK(st.remote_errors >= 3);
    kvl_blend_free(ram);
    kvl_blend_free(w);
    kvl_blend_free(r);
    kvl_blend_free(dead);
    kvl_ctx_free(c);
    free(ref);
    free(got);
}

int main(void) {
    test_url();
#ifdef KVL_HAVE_HIREDIS
    test_fake_server();
#endif
#ifndef KVL_HAVE_HIREDIS
    {
        kvl_redis *r = NULL;
        kvl_err e;
        CHECK(kvl_redis_create("redis://127.0.0.1:1", NULL, &r, &e) == KVL_ERR_UNSUPPORTED && strstr(e.msg, "without hiredis"));
        kvl_prefix_params pp;
        kvl_prefix_params_default(&pp);
        pp.redis_url = "redis://127.0.0.1:1";
        kvl_prefix *p = NULL;
        char err[600] = "";
        CHECK(kvl_prefix_create_ex(&pp, &p, err, sizeof err) != KVL_OK && strstr(err, "without hiredis"));
        const char *ci = getenv("CI");
        if (ci && !strcmp(ci, "true")) CHECK_MSG(0, "built without hiredis under CI=true (scripts/install_deps.sh)");
        else SKIP("test_redis: built without hiredis");
        KVL_TEST_END();
    }
#endif
    const char *ci = getenv("CI");
    if (system("command -v redis-server >/dev/null 2>&1") != 0) {
        if (ci && !strcmp(ci, "true")) CHECK_MSG(0, "redis-server not found (scripts/install_deps.sh installs it)");
        else SKIP("test_redis: redis-server not found");
        KVL_TEST_END();
    }
    pid_t server = -1;
    int port = -1;
    for (int i = 0; i < 5 && server < 0; i++) server = start_redis(port = free_port());
    CHECK_MSG(server > 0, "cannot start redis-server");
    if (server <= 0) KVL_TEST_END();
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", port);
    test_client(url);

    const char *d = getenv("KVL_TINY_DIR");
    char path[512], err[256] = "";
    snprintf(path, sizeof path, "%s/llama_q.gguf", d && *d ? d : "tests/data/tiny");
    kvl_model *m = NULL;
    CHECK_MSG(kvl_model_load(path, &m, err, sizeof err) == KVL_OK, "cannot load %s: %s", path, err);
    if (m) {
        test_sessions(m, url);
        test_kill(m, url, 25);
        test_blend_redis(m, url);
        test_prefix(m, url, port, &server);
        kvl_model_free(m);
    }
    /* the default model: the session round trip through Redis */
    const char *mp = getenv("KVL_MODEL");
    if (mp && *mp && access(mp, R_OK) == 0) {
        kvl_model *big = NULL;
        CHECK_MSG(kvl_model_load(mp, &big, err, sizeof err) == KVL_OK, "%s", err);
        if (big) {
            session_roundtrip(big, "f16", url, "big-f16", 600);
            session_roundtrip(big, "int8", url, "big-int8", 600);
            kvl_model_free(big);
        }
    } else {
        SKIP("test_redis: the default model's Redis round trip needs KVL_MODEL");
    }
    stop_redis(server);
    KVL_TEST_END();
}
