/* Redis client of the Redis tier (engine/redis.h): URL parsing, lazy
 * connection with timeouts, one reconnect per command, a retry interval
 * after failures and a log line once per outage. Commands are sent with
 * redisCommandArgv, so keys and values are binary-safe (no format strings). */
#include "engine/redis.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#ifdef KVL_HAVE_HIREDIS
#include <hiredis/hiredis.h>
#endif

int kvl_redis_is_url(const char *s) { return s && !strncmp(s, "redis://", 8); }

static int parse_num(const char *s, size_t n, long lo, long hi, long *out) {
    if (n == 0 || n > 6) return -1;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        v = v * 10 + (s[i] - '0');
    }
    if (v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

kvl_status kvl_redis_url_parse(const char *url, char *host, size_t cap, int *port, int *db, kvl_err *err) {
    if (!url || !host || cap == 0 || !port || !db) return kvl_err_set(err, KVL_ERR_ARG, "redis: no URL");
    if (!kvl_redis_is_url(url))
        return kvl_err_set(err, KVL_ERR_ARG, "redis URL '%.100s': must start with redis://", url);
    if (strlen(url) >= KVL_REDIS_URL_MAX) return kvl_err_set(err, KVL_ERR_ARG, "redis URL: longer than %d bytes", KVL_REDIS_URL_MAX - 1);
    const char *p = url + 8, *h0, *h1;
    if (strchr(p, '@')) return kvl_err_set(err, KVL_ERR_ARG, "redis URL '%s': credentials are not supported", url);
    if (*p == '[') {
        h0 = ++p;
        while (*p && *p != ']') {
            if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f') || (*p >= 'A' && *p <= 'F') || *p == ':' || *p == '.'))
                return kvl_err_set(err, KVL_ERR_ARG, "redis URL '%s': bad character in IPv6 address", url);
            p++;
        }
        if (*p != ']') return kvl_err_set(err, KVL_ERR_ARG, "redis URL '%s': missing ']'", url);
        h1 = p++;
    } else {
        h0 = p;
        while ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '.' || *p == '-') p++;
        h1 = p;
    }
    if (h1 == h0) return kvl_err_set(err, KVL_ERR_ARG, "redis URL '%s': no host", url);
    if ((size_t)(h1 - h0) >= cap) return kvl_err_set(err, KVL_ERR_ARG, "redis URL '%s': host too long", url);
    long pv = 6379, dv = 0;
    if (*p == ':') {
        const char *q = ++p;
        while (*p >= '0' && *p <= '9') p++;
        if (parse_num(q, (size_t)(p - q), 1, 65535, &pv))
            return kvl_err_set(err, KVL_ERR_ARG, "redis URL '%s': port must be 1..65535", url);
    }
    if (*p == '/' && p[1]) {
        const char *q = ++p;
        while (*p >= '0' && *p <= '9') p++;
        if (parse_num(q, (size_t)(p - q), 0, 65535, &dv))
            return kvl_err_set(err, KVL_ERR_ARG, "redis URL '%s': database must be a number 0..65535", url);
    } else if (*p == '/') {
        p++;
    }
    if (*p) return kvl_err_set(err, KVL_ERR_ARG, "redis URL '%s': unexpected '%.20s' (want redis://HOST:PORT[/DB])", url, p);
    memcpy(host, h0, (size_t)(h1 - h0));
    host[h1 - h0] = 0;
    *port = (int)pv;
    *db = (int)dv;
    return KVL_OK;
}

#ifndef KVL_HAVE_HIREDIS

kvl_status kvl_redis_create(const char *url, const kvl_redis_params *par, kvl_redis **out, kvl_err *err) {
    (void)par;
    if (out) *out = NULL;
    char host[KVL_REDIS_URL_MAX];
    int port, db;
    kvl_status st = kvl_redis_url_parse(url, host, sizeof host, &port, &db, err);
    if (st) return st;
    return kvl_err_set(err, KVL_ERR_UNSUPPORTED, "redis: built without hiredis (install libhiredis-dev and rebuild kvlite)");
}
void kvl_redis_free(kvl_redis *r) { (void)r; }
const char *kvl_redis_url(const kvl_redis *r) { return (void)r, ""; }
static kvl_status no_redis(kvl_err *err) { return kvl_err_set(err, KVL_ERR_UNSUPPORTED, "redis: built without hiredis"); }
kvl_status kvl_redis_ping(kvl_redis *r, kvl_err *err) { return (void)r, no_redis(err); }
kvl_status kvl_redis_get(kvl_redis *r, const char *key, const uint8_t **val, size_t *len, void **hold, kvl_err *err) {
    (void)r, (void)key, (void)val, (void)len, (void)hold;
    return no_redis(err);
}
void kvl_redis_release(void *hold) { (void)hold; }
kvl_status kvl_redis_set(kvl_redis *r, const char *key, const void *val, size_t len, kvl_err *err) {
    (void)r, (void)key, (void)val, (void)len;
    return no_redis(err);
}
kvl_status kvl_redis_exists(kvl_redis *r, const char *key, int *exists, kvl_err *err) {
    (void)r, (void)key, (void)exists;
    return no_redis(err);
}
kvl_status kvl_redis_del(kvl_redis *r, const char *key, int *deleted, kvl_err *err) {
    (void)r, (void)key, (void)deleted;
    return no_redis(err);
}
kvl_status kvl_redis_scan(kvl_redis *r, const char *prefix, int (*cb)(const char *key, size_t len, void *user),
                          void *user, kvl_err *err) {
    (void)r, (void)prefix, (void)cb, (void)user;
    return no_redis(err);
}

#else

struct kvl_redis {
    char url[KVL_REDIS_URL_MAX];
    char host[KVL_REDIS_URL_MAX];
    int port, db;
    kvl_redis_params par;
    redisContext *c;
    double retry_at; /* no connection attempt before this (monotonic seconds) */
    int down;        /* an outage was logged; cleared (and logged) by the next success */
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static struct timeval tv_ms(int ms) {
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    return tv;
}

kvl_status kvl_redis_create(const char *url, const kvl_redis_params *par, kvl_redis **out, kvl_err *err) {
    if (!out) return KVL_ERR_ARG;
    *out = NULL;
    kvl_redis *r = calloc(1, sizeof *r);
    if (!r) return kvl_err_set(err, KVL_ERR_NOMEM, "redis: out of memory");
    kvl_status st = kvl_redis_url_parse(url, r->host, sizeof r->host, &r->port, &r->db, err);
    if (st) {
        free(r);
        return st;
    }
    snprintf(r->url, sizeof r->url, "%s", url);
    if (par) r->par = *par;
    if (r->par.connect_ms <= 0) r->par.connect_ms = 500;
    if (r->par.command_ms <= 0) r->par.command_ms = 2000;
    if (r->par.retry_ms == 0) r->par.retry_ms = 1000;
    *out = r;
    return KVL_OK;
}

void kvl_redis_free(kvl_redis *r) {
    if (!r) return;
    if (r->c) redisFree(r->c);
    free(r);
}

const char *kvl_redis_url(const kvl_redis *r) { return r ? r->url : ""; }

/* Record a failure: message in err, the connection dropped, the retry
 * interval started, and the outage logged if it is the first failure. */
static kvl_status fail(kvl_redis *r, kvl_err *err, const char *what) {
    if (r->c) {
        redisFree(r->c);
        r->c = NULL;
    }
    r->retry_at = r->par.retry_ms > 0 ? now_s() + 1e-3 * r->par.retry_ms : 0;
    kvl_err_set(err, KVL_ERR_IO, "redis %s: %s", r->url, what);
    if (!r->down && r->par.log) {
        char msg[600];
        snprintf(msg, sizeof msg, "redis %s: %s (not logged again until it answers)", r->url, what);
        r->par.log(r->par.log_user, msg);
    }
    r->down = 1;
    return KVL_ERR_IO;
}

static void recovered(kvl_redis *r) {
    if (!r->down) return;
    r->down = 0;
    if (r->par.log) {
        char msg[400];
        snprintf(msg, sizeof msg, "redis %s: answering again", r->url);
        r->par.log(r->par.log_user, msg);
    }
}

static kvl_status connect_now(kvl_redis *r, kvl_err *err) {
    if (r->c) return KVL_OK;
    if (r->down && r->retry_at > 0 && now_s() < r->retry_at)
        return kvl_err_set(err, KVL_ERR_IO, "redis %s: down (next connection attempt in %.0f ms)", r->url,
                           1e3 * (r->retry_at - now_s()));
    r->c = redisConnectWithTimeout(r->host, r->port, tv_ms(r->par.connect_ms));
    /* SELECT below runs with SIGPIPE blocked: connect_now is only called from command_once */
    if (!r->c) return fail(r, err, "cannot connect: out of memory");
    if (r->c->err) {
        char what[300];
        snprintf(what, sizeof what, "cannot connect: %s", r->c->errstr);
        return fail(r, err, what);
    }
    if (redisSetTimeout(r->c, tv_ms(r->par.command_ms)) != REDIS_OK) return fail(r, err, "cannot set the command timeout");
    if (r->db) {
        char dbs[16];
        snprintf(dbs, sizeof dbs, "%d", r->db);
        const char *argv[2] = {"SELECT", dbs};
        redisReply *rep = redisCommandArgv(r->c, 2, argv, NULL);
        const int ok = rep && rep->type == REDIS_REPLY_STATUS;
        char what[300];
        snprintf(what, sizeof what, "SELECT %d failed: %s", r->db,
                 rep && rep->type == REDIS_REPLY_ERROR ? rep->str : r->c->errstr[0] ? r->c->errstr : "no reply");
        if (rep) freeReplyObject(rep);
        if (!ok) return fail(r, err, what);
    }
    return KVL_OK;
}

static redisReply *command_once(kvl_redis *r, kvl_err *err, int argc, const char **argv, const size_t *argvlen);

/* A command with a large argument (a session of many MB), written here with
 * writev straight from the caller's bytes: hiredis 0.14 copies the command
 * into its output buffer and, after each partial write(), moves the unsent
 * rest to the front (quadratic in the value's size: seconds for 100 MB).
 * The reply is then read by hiredis (its output buffer is empty). NULL on an
 * I/O error (errno: EAGAIN for the send timeout). */
#define RAW_MIN ((size_t)1 << 16)
static redisReply *send_raw(redisContext *c, int argc, const char **argv, const size_t *argvlen) {
    char top[24], hdr[8][24];
    struct iovec iov[1 + 3 * 8];
    int ni = 0;
    iov[ni++] = (struct iovec){top, (size_t)snprintf(top, sizeof top, "*%d\r\n", argc)};
    for (int i = 0; i < argc; i++) {
        iov[ni++] = (struct iovec){hdr[i], (size_t)snprintf(hdr[i], sizeof hdr[i], "$%zu\r\n", argvlen[i])};
        iov[ni++] = (struct iovec){(void *)argv[i], argvlen[i]};
        iov[ni++] = (struct iovec){(void *)"\r\n", 2};
    }
    for (int k = 0; k < ni;) {
        const ssize_t w = writev(c->fd, iov + k, ni - k > 1024 ? 1024 : ni - k);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return NULL;
        size_t left = (size_t)w;
        while (k < ni && left >= iov[k].iov_len) left -= iov[k++].iov_len;
        if (k < ni) {
            iov[k].iov_base = (char *)iov[k].iov_base + left;
            iov[k].iov_len -= left;
        }
    }
    void *rep = NULL;
    return redisGetReply(c, &rep) == REDIS_OK ? rep : NULL;
}

static redisReply *send_cmd(redisContext *c, int argc, const char **argv, const size_t *argvlen) {
    size_t big = 0;
    for (int i = 0; argvlen && i < argc; i++) big = argvlen[i] > big ? argvlen[i] : big;
    if (big >= RAW_MIN && argc <= 8) return send_raw(c, argc, argv, argvlen);
    return redisCommandArgv(c, argc, argv, argvlen);
}

/* SIGPIPE blocked in this thread around hiredis writes (a server that went
 * away must not kill the process); sigpipe_end consumes any SIGPIPE raised
 * meanwhile (unless one was already pending) and restores the mask. */
typedef struct sigpipe_guard {
    sigset_t set, old;
    int was_pending;
} sigpipe_guard;

static void sigpipe_begin(sigpipe_guard *g) {
    sigset_t pending;
    sigemptyset(&g->set);
    sigaddset(&g->set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &g->set, &g->old);
    sigpending(&pending);
    g->was_pending = sigismember(&pending, SIGPIPE) == 1;
}

static void sigpipe_end(sigpipe_guard *g) {
    if (!g->was_pending) {
        const struct timespec zero = {0, 0};
        while (sigtimedwait(&g->set, NULL, &zero) > 0) {
        }
    }
    pthread_sigmask(SIG_SETMASK, &g->old, NULL);
}

/* Send one command with SIGPIPE blocked in this thread (hiredis write()s;
 * a server that went away must not kill the process) and any SIGPIPE it
 * raised consumed, leaving the process's signal handling as it was. */
static redisReply *command(kvl_redis *r, kvl_err *err, int argc, const char **argv, const size_t *argvlen) {
    sigpipe_guard g;
    sigpipe_begin(&g);
    redisReply *rep = command_once(r, err, argc, argv, argvlen);
    sigpipe_end(&g);
    return rep;
}

/* Send one command; on an I/O failure of an established connection,
 * reconnect once and resend (not after a timeout: a slow server would cost
 * twice). A Redis error reply is an error (KVL_ERR_IO) that keeps the
 * connection. */
static redisReply *command_once(kvl_redis *r, kvl_err *err, int argc, const char **argv, const size_t *argvlen) {
    for (int attempt = 0; attempt < 2; attempt++) {
        const int had = r->c != NULL;
        if (connect_now(r, err)) return NULL;
        errno = 0;
        redisReply *rep = send_cmd(r->c, argc, argv, argvlen);
        if (rep) {
            recovered(r);
            if (rep->type == REDIS_REPLY_ERROR) {
                kvl_err_set(err, KVL_ERR_IO, "redis %s: %s: %.300s", r->url, argv[0], rep->str);
                freeReplyObject(rep);
                return NULL;
            }
            return rep;
        }
        char what[300];
        snprintf(what, sizeof what, "%s failed: %s", argv[0],
                 errno == EAGAIN || errno == EWOULDBLOCK ? "timed out" : r->c->errstr[0] ? r->c->errstr : "connection lost");
        const int timed_out = errno == EAGAIN || errno == EWOULDBLOCK;
        if (!had || attempt == 1 || timed_out) { /* a slow server is not retried: that would double the wait */
            fail(r, err, what);
            return NULL;
        }
        redisFree(r->c); /* broken connection: reconnect once */
        r->c = NULL;
    }
    return NULL;
}

kvl_status kvl_redis_ping(kvl_redis *r, kvl_err *err) {
    if (!r) return KVL_ERR_ARG;
    const char *argv[1] = {"PING"};
    redisReply *rep = command(r, err, 1, argv, NULL);
    if (!rep) return KVL_ERR_IO;
    freeReplyObject(rep);
    return KVL_OK;
}

static kvl_status bad_reply(kvl_redis *r, redisReply *rep, const char *cmd, kvl_err *err) {
    kvl_err_set(err, KVL_ERR_IO, "redis %s: %s: unexpected reply type %d", r->url, cmd, rep->type);
    freeReplyObject(rep);
    return KVL_ERR_IO;
}

/* GET with the reply read here: hiredis reads 16 KiB per read() into a
 * buffer it grows, then copies the value out; a value of many MB is read
 * straight into one buffer of its size instead. The value ends up in a
 * malloc'd block: u64 length, then the bytes (the hold). */
typedef struct raw_get {
    uint8_t *blk; /* NULL: missing */
    int bad;      /* malformed or error reply (msg) */
    char msg[200];
} raw_get;

static int read_full(int fd, uint8_t *p, size_t n) {
    while (n) {
        const ssize_t g = read(fd, p, n);
        if (g < 0 && errno == EINTR) continue;
        if (g <= 0) {
            if (g == 0) errno = ECONNRESET;
            return -1;
        }
        p += g;
        n -= (size_t)g;
    }
    return 0;
}

/* -1: I/O error (errno); 0: done (g filled). */
static int get_raw(redisContext *c, const char *key, raw_get *g) {
    const size_t kl = strlen(key); /* <= 512 (checked by the caller) */
    char cmd[600];
    const int hl = snprintf(cmd, sizeof cmd, "*2\r\n$3\r\nGET\r\n$%zu\r\n", kl);
    memcpy(cmd + hl, key, kl);
    memcpy(cmd + hl + kl, "\r\n", 2);
    const size_t total = (size_t)hl + kl + 2;
    for (size_t sent = 0; sent < total;) {
        const ssize_t w = write(c->fd, cmd + sent, total - sent);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        sent += (size_t)w;
    }
    /* the reply's first line, one byte at a time (at most a few dozen bytes) */
    char line[256];
    size_t n = 0;
    for (;;) {
        if (n == sizeof line - 1) {
            g->bad = 1;
            snprintf(g->msg, sizeof g->msg, "reply line too long");
            return -1;
        }
        if (read_full(c->fd, (uint8_t *)line + n, 1)) return -1;
        if (++n >= 2 && line[n - 2] == '\r' && line[n - 1] == '\n') break;
    }
    line[n - 2] = 0;
    if (line[0] == '-') {
        g->bad = 1;
        snprintf(g->msg, sizeof g->msg, "%.190s", line + 1);
        return 0;
    }
    if (line[0] != '$') {
        g->bad = 1;
        snprintf(g->msg, sizeof g->msg, "unexpected reply '%.40s'", line);
        return -1; /* out of step with the server: drop the connection */
    }
    if (!strcmp(line, "$-1")) return 0;
    char *end = NULL;
    errno = 0;
    const unsigned long long len = strtoull(line + 1, &end, 10);
    if (errno || end == line + 1 || *end || line[1] == '-' || len > ((unsigned long long)1 << 40)) {
        g->bad = 1;
        snprintf(g->msg, sizeof g->msg, "bad bulk length '%.40s'", line);
        return -1;
    }
    uint8_t *blk = malloc(8 + (size_t)len + 2);
    if (!blk) {
        g->bad = 1;
        snprintf(g->msg, sizeof g->msg, "out of memory for %llu bytes", len);
        return -1;
    }
    const uint64_t l64 = len;
    memcpy(blk, &l64, 8);
    if (read_full(c->fd, blk + 8, (size_t)len + 2)) {
        free(blk);
        return -1;
    }
    if (blk[8 + len] != '\r' || blk[8 + len + 1] != '\n') {
        free(blk);
        g->bad = 1;
        snprintf(g->msg, sizeof g->msg, "bulk reply not terminated");
        return -1;
    }
    g->blk = blk;
    return 0;
}

kvl_status kvl_redis_get(kvl_redis *r, const char *key, const uint8_t **val, size_t *len, void **hold, kvl_err *err) {
    if (!r || !key || !val || !len || !hold) return KVL_ERR_ARG;
    *val = NULL;
    *len = 0;
    *hold = NULL;
    if (strlen(key) > 512) return kvl_err_set(err, KVL_ERR_ARG, "redis: key too long");
    sigpipe_guard g;
    sigpipe_begin(&g);
    kvl_status st = KVL_ERR_IO;
    for (int attempt = 0; attempt < 2; attempt++) {
        const int had = r->c != NULL;
        if (connect_now(r, err)) break;
        raw_get g = {0};
        errno = 0;
        if (get_raw(r->c, key, &g) == 0) {
            recovered(r);
            if (g.bad) {
                kvl_err_set(err, KVL_ERR_IO, "redis %s: GET: %s", r->url, g.msg);
            } else {
                if (g.blk) {
                    uint64_t l64;
                    memcpy(&l64, g.blk, 8);
                    *val = g.blk + 8;
                    *len = (size_t)l64;
                    *hold = g.blk;
                }
                st = KVL_OK;
            }
            break;
        }
        const int timed_out = errno == EAGAIN || errno == EWOULDBLOCK;
        char what[300];
        snprintf(what, sizeof what, "GET failed: %s",
                 g.bad ? g.msg : timed_out ? "timed out" : errno ? strerror(errno) : "connection lost");
        if (!had || attempt == 1 || timed_out || g.bad) {
            fail(r, err, what);
            break;
        }
        redisFree(r->c); /* broken connection: reconnect once */
        r->c = NULL;
    }
    sigpipe_end(&g);
    return st;
}

void kvl_redis_release(void *hold) { free(hold); }

kvl_status kvl_redis_set(kvl_redis *r, const char *key, const void *val, size_t len, kvl_err *err) {
    if (!r || !key || (len && !val)) return KVL_ERR_ARG;
    const char *argv[3] = {"SET", key, len ? (const char *)val : ""};
    const size_t argvlen[3] = {3, strlen(key), len};
    redisReply *rep = command(r, err, 3, argv, argvlen);
    if (!rep) return KVL_ERR_IO;
    if (rep->type != REDIS_REPLY_STATUS) return bad_reply(r, rep, "SET", err);
    freeReplyObject(rep);
    return KVL_OK;
}

static kvl_status int_cmd(kvl_redis *r, const char *cmd, const char *key, long long *v, kvl_err *err) {
    const char *argv[2] = {cmd, key};
    redisReply *rep = command(r, err, 2, argv, NULL);
    if (!rep) return KVL_ERR_IO;
    if (rep->type != REDIS_REPLY_INTEGER) return bad_reply(r, rep, cmd, err);
    *v = rep->integer;
    freeReplyObject(rep);
    return KVL_OK;
}

kvl_status kvl_redis_exists(kvl_redis *r, const char *key, int *exists, kvl_err *err) {
    if (!r || !key || !exists) return KVL_ERR_ARG;
    long long v = 0;
    kvl_status st = int_cmd(r, "EXISTS", key, &v, err);
    *exists = st == KVL_OK && v > 0;
    return st;
}

kvl_status kvl_redis_del(kvl_redis *r, const char *key, int *deleted, kvl_err *err) {
    if (!r || !key) return KVL_ERR_ARG;
    long long v = 0;
    kvl_status st = int_cmd(r, "DEL", key, &v, err);
    if (deleted) *deleted = st == KVL_OK && v > 0;
    return st;
}

kvl_status kvl_redis_scan(kvl_redis *r, const char *prefix, int (*cb)(const char *key, size_t len, void *user),
                          void *user, kvl_err *err) {
    if (!r || !prefix || !cb) return KVL_ERR_ARG;
    const size_t pl = strlen(prefix);
    if (pl > 200) return kvl_err_set(err, KVL_ERR_ARG, "redis: key prefix too long");
    char pat[2 * 200 + 2], *w = pat;
    for (size_t i = 0; i < pl; i++) {
        if (strchr("*?[]\\^", prefix[i])) *w++ = '\\';
        *w++ = prefix[i];
    }
    *w++ = '*';
    *w = 0;
    char cursor[32] = "0";
    for (int guard = 0; guard < (1 << 24); guard++) {
        const char *argv[6] = {"SCAN", cursor, "MATCH", pat, "COUNT", "256"};
        redisReply *rep = command(r, err, 6, argv, NULL);
        if (!rep) return KVL_ERR_IO;
        if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 || rep->element[0]->type != REDIS_REPLY_STRING ||
            rep->element[0]->len >= sizeof cursor || rep->element[1]->type != REDIS_REPLY_ARRAY)
            return bad_reply(r, rep, "SCAN", err);
        memcpy(cursor, rep->element[0]->str, rep->element[0]->len);
        cursor[rep->element[0]->len] = 0;
        const redisReply *keys = rep->element[1];
        int stop = 0;
        for (size_t i = 0; i < keys->elements && !stop; i++) {
            const redisReply *k = keys->element[i];
            if (k->type == REDIS_REPLY_STRING && k->len >= pl && !memcmp(k->str, prefix, pl)) stop = cb(k->str, k->len, user);
        }
        freeReplyObject(rep);
        if (stop || !strcmp(cursor, "0")) return KVL_OK;
    }
    return kvl_err_set(err, KVL_ERR_IO, "redis %s: SCAN did not finish", r->url);
}

#endif
