/* Content-addressed prefix store (include/kvlite.h, "prefix store"): the KV
 * of 256-token chunks keyed by a chained 64-bit hash (model identity, every
 * layer's K/V codec spec, page size, then each chunk's token ids), in a RAM
 * tier (LRU under a byte budget) and optionally a disk directory tier (one
 * file per chunk, written through a temporary file and rename). A new
 * prompt takes the longest run of cached chunks from its start; the chunks
 * are loaded through kv/serial.c's hostile-input loader, so a damaged disk
 * file only costs a recompute. An optional Redis tier (engine/redis.h) holds
 * the same chunk blobs under "kvlite:chunk:KEY": looked up after RAM and
 * disk, written through by every put; a value that fails the checks is a
 * miss (and is deleted so the next put repairs it), and a Redis that is down
 * or slow costs a recompute, logged once per outage.
 *
 * With remote_level >= 0 the disk and Redis tiers hold CacheGen chunks
 * (kvl_seq_save_cachegen_range, version 2 below) instead of pages: a get
 * loads the leading run of page chunks as pages, then appends the CacheGen
 * ones (kvl_seq_append_cachegen); a page chunk cannot follow a CacheGen one
 * (RAM's copy is then passed over for the lower tiers').
 *
 * Chunk file (little-endian):
 *   0 "KVLCHNK1"  8 u32 version (1: pages, 2: CacheGen)  12 u32 tokens per chunk (256)
 *  16 u64 key  24 u64 parent key (the base key for chunk 0)  32 u32 chunk index
 *  36 u32 tokens per page  40 i32 token ids [256]  1064 u64 payload length
 *  1072 payload (version 1: kv/serial.h chunk payload; 2: a CacheGen file of
 *       the chunk's 256 tokens)  then u32 CRC32C of all bytes before. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/engine.h"
#include "engine/redis.h"
#include "kvlite.h"
#include "kv/serial.h"
#include "util/crc32c.h"

#define CH KVL_PREFIX_CHUNK
#define HDR (40 + 4 * CH + 8)
#define MAX_FILE ((size_t)1 << 31)

typedef struct entry {
    uint64_t key;
    uint8_t *blob;
    size_t len;
    uint64_t tick; /* last use (LRU) */
} entry;

struct kvl_prefix {
    char *dir;
    kvl_redis *redis; /* Redis tier or NULL */
    void (*log)(void *user, const char *msg);
    void *log_user;
    size_t ram_budget, ram_bytes;
    int remote_level; /* -1: pages in every tier; else CacheGen level of disk and Redis */
    entry *e;
    int n, cap;
    uint64_t tick;
    kvl_prefix_stats st;
    kvl_err err;
    pthread_mutex_t mu;
};

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const uint8_t *s = p;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 1099511628211ull;
    return h;
}
static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

/* Key of the context's KV configuration: chunk 0's parent. */
static uint64_t base_key(const kvl_ctx *c) {
    uint64_t h = fnv(1469598103934665603ull, "kvlite-prefix-1", 15);
    h = fnv(h, &c->m->identity, sizeof c->m->identity);
    const int32_t g[3] = {c->m->n_layer, c->p.page_tokens, CH};
    h = fnv(h, g, sizeof g);
    for (int l = 0; l < c->m->n_layer; l++)
        for (int side = 0; side < 2; side++) {
            const char *s = kvl_kv_pool_layer_spec(c->pool, l, side);
            h = fnv(h, s, strlen(s) + 1);
        }
    return h;
}
static uint64_t chain(uint64_t parent, const kvl_token *t) {
    uint64_t h = fnv(parent ^ 0x9E3779B97F4A7C15ull, &parent, sizeof parent);
    return fnv(h, t, sizeof *t * CH);
}

void kvl_prefix_params_default(kvl_prefix_params *pp) {
    memset(pp, 0, sizeof *pp);
    pp->ram_bytes = (size_t)256 << 20;
    pp->remote_level = -1;
}

static void log_stderr(void *user, const char *msg) {
    (void)user;
    fprintf(stderr, "kvlite: prefix cache: %s\n", msg);
}

kvl_status kvl_prefix_create(const char *dir, size_t ram_bytes, kvl_prefix **out, char *err, size_t err_len) {
    kvl_prefix_params pp;
    kvl_prefix_params_default(&pp);
    pp.dir = dir;
    pp.ram_bytes = ram_bytes;
    return kvl_prefix_create_ex(&pp, out, err, err_len);
}

kvl_status kvl_prefix_create_ex(const kvl_prefix_params *pp, kvl_prefix **out, char *err, size_t err_len) {
    if (!out || !pp) return KVL_ERR_ARG;
    *out = NULL;
    const char *dir = pp->dir;
    const size_t ram_bytes = pp->ram_bytes;
    kvl_prefix *p = calloc(1, sizeof *p);
    if (!p || (dir && !(p->dir = strdup(dir)))) {
        free(p);
        if (err && err_len) snprintf(err, err_len, "prefix: out of memory");
        return KVL_ERR_NOMEM;
    }
    if (p->dir && mkdir(p->dir, 0700) != 0 && errno != EEXIST) {
        if (err && err_len) snprintf(err, err_len, "prefix: cannot create directory %s: %s", dir, strerror(errno));
        free(p->dir);
        free(p);
        return KVL_ERR_IO;
    }
    p->ram_budget = ram_bytes;
    if (pp->remote_level < -1 || pp->remote_level > 3) {
        if (err && err_len) snprintf(err, err_len, "prefix: remote_level %d (want -1 or a CacheGen level 0..3)", pp->remote_level);
        free(p->dir);
        free(p);
        return KVL_ERR_ARG;
    }
    p->remote_level = pp->remote_level;
    p->log = pp->log ? pp->log : log_stderr;
    p->log_user = pp->log_user;
    if (pp->redis_url) {
        kvl_redis_params rp = {pp->redis_connect_ms, pp->redis_command_ms, pp->redis_retry_ms, p->log, p->log_user};
        kvl_err e;
        kvl_err_clear(&e);
        const kvl_status st = kvl_redis_create(pp->redis_url, &rp, &p->redis, &e);
        if (st) {
            if (err && err_len) snprintf(err, err_len, "%s", e.msg);
            free(p->dir);
            free(p);
            return st;
        }
        /* connect now: a server that is not up is logged here, once; requests recompute */
        kvl_redis_ping(p->redis, &e);
    }
    pthread_mutex_init(&p->mu, NULL);
    *out = p;
    return KVL_OK;
}

void kvl_prefix_free(kvl_prefix *p) {
    if (!p) return;
    for (int i = 0; i < p->n; i++) free(p->e[i].blob);
    free(p->e);
    free(p->dir);
    kvl_redis_free(p->redis);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

void kvl_prefix_get_stats(const kvl_prefix *p, kvl_prefix_stats *st) {
    kvl_prefix *m = (kvl_prefix *)p;
    pthread_mutex_lock(&m->mu);
    *st = p->st;
    st->ram_bytes = p->ram_bytes;
    st->ram_chunks = p->n;
    pthread_mutex_unlock(&m->mu);
}

const char *kvl_prefix_error(const kvl_prefix *p) { return p ? p->err.msg : ""; }

static entry *ram_find(kvl_prefix *p, uint64_t key) {
    for (int i = 0; i < p->n; i++)
        if (p->e[i].key == key) return &p->e[i];
    return NULL;
}

static void ram_remove(kvl_prefix *p, int i) {
    p->ram_bytes -= p->e[i].len;
    free(p->e[i].blob);
    p->e[i] = p->e[--p->n];
}

/* Keep blob (taking ownership) in RAM if it fits the budget after evicting
 * the least recently used entries; else free it. */
static void ram_insert(kvl_prefix *p, uint64_t key, uint8_t *blob, size_t len) {
    if (len > p->ram_budget || ram_find(p, key)) {
        free(blob);
        return;
    }
    while (p->ram_bytes + len > p->ram_budget && p->n > 0) {
        int lru = 0;
        for (int i = 1; i < p->n; i++)
            if (p->e[i].tick < p->e[lru].tick) lru = i;
        ram_remove(p, lru);
        p->st.evicted++;
    }
    if (p->n == p->cap) {
        const int cap = p->cap ? 2 * p->cap : 16;
        entry *e = realloc(p->e, (size_t)cap * sizeof *e);
        if (!e) {
            free(blob);
            return;
        }
        p->e = e;
        p->cap = cap;
    }
    p->e[p->n++] = (entry){key, blob, len, ++p->tick};
    p->ram_bytes += len;
}

static int disk_path(const kvl_prefix *p, uint64_t key, char *buf, size_t cap) {
    const int w = snprintf(buf, cap, "%s/%016llx.kvc", p->dir, (unsigned long long)key);
    return w > 0 && (size_t)w < cap;
}

/* Check a chunk blob: framing, checksum, and that it is chunk `index` with
 * this key, parent and tokens. Its version (1 pages, 2 CacheGen) when valid, else -1. */
static int blob_check(const uint8_t *b, size_t len, uint64_t key, uint64_t parent, int index, int page,
                      const kvl_token *toks) {
    if (len < HDR + 4 || memcmp(b, "KVLCHNK1", 8) || (rd32(b + 8) != 1 && rd32(b + 8) != 2) || rd32(b + 12) != CH)
        return -1;
    if (rd32(b + len - 4) != kvl_crc32c(b, len - 4)) return -1;
    if (rd64(b + 16) != key || rd64(b + 24) != parent || rd32(b + 32) != (uint32_t)index || rd32(b + 36) != (uint32_t)page)
        return -1;
    if (memcmp(b + 40, toks, 4 * CH) != 0) return -1;
    if (rd64(b + 40 + 4 * CH) != len - HDR - 4) return -1;
    return (int)rd32(b + 8);
}

static uint8_t *disk_read(const kvl_prefix *p, uint64_t key, size_t *len) {
    char path[4096];
    if (!p->dir || !disk_path(p, key, path, sizeof path)) return NULL;
    const int fd = open(path, O_RDONLY);
    if (fd < 0) return NULL;
    struct stat sb;
    uint8_t *b = NULL;
    if (fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) && sb.st_size > 0 && (size_t)sb.st_size <= MAX_FILE &&
        (b = malloc((size_t)sb.st_size))) {
        size_t off = 0;
        while (off < (size_t)sb.st_size) {
            const ssize_t r = read(fd, b + off, (size_t)sb.st_size - off);
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) break;
            off += (size_t)r;
        }
        if (off != (size_t)sb.st_size) {
            free(b);
            b = NULL;
        } else {
            *len = off;
        }
    }
    close(fd);
    return b;
}

static int disk_has(const kvl_prefix *p, uint64_t key) {
    char path[4096];
    return p->dir && disk_path(p, key, path, sizeof path) && access(path, F_OK) == 0;
}

static void disk_write(kvl_prefix *p, uint64_t key, const uint8_t *b, size_t len) {
    char path[4096], tmp[4096];
    if (!p->dir || !disk_path(p, key, path, sizeof path)) return;
    if (snprintf(tmp, sizeof tmp, "%s/.%016llx.tmp.XXXXXX", p->dir, (unsigned long long)key) >= (int)sizeof tmp) return;
    const int fd = mkstemp(tmp);
    if (fd < 0) return;
    size_t off = 0;
    while (off < len) {
        const ssize_t w = write(fd, b + off, len - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break;
        off += (size_t)w;
    }
    if (close(fd) != 0 || off != len || rename(tmp, path) != 0) unlink(tmp);
}

static void redis_key(uint64_t key, char *buf, size_t cap) {
    snprintf(buf, cap, "kvlite:chunk:%016llx", (unsigned long long)key);
}

/* The Redis tier's blob for key (a copy, malloc'd) or NULL: missing (a
 * redis miss) or unreachable (an error; the tier logs the outage once). */
static uint8_t *redis_read(kvl_prefix *p, uint64_t key, size_t *len) {
    if (!p->redis) return NULL;
    char k[64];
    redis_key(key, k, sizeof k);
    const uint8_t *v = NULL;
    void *hold = NULL;
    kvl_err e;
    if (kvl_redis_get(p->redis, k, &v, len, &hold, &e) != KVL_OK) {
        p->st.redis_errors++;
        return NULL;
    }
    uint8_t *b = NULL;
    if (!v) p->st.redis_misses++;
    else if (*len > 0 && *len <= MAX_FILE && (b = malloc(*len))) memcpy(b, v, *len);
    kvl_redis_release(hold);
    return b;
}

static void redis_drop(kvl_prefix *p, uint64_t key) {
    if (!p->redis) return;
    char k[64];
    redis_key(key, k, sizeof k);
    kvl_err e;
    if (kvl_redis_del(p->redis, k, NULL, &e) != KVL_OK) p->st.redis_errors++;
}

/* 1 when the Redis tier has key, or cannot be asked (nothing to write). */
static int redis_has(kvl_prefix *p, uint64_t key) {
    if (!p->redis) return 1;
    char k[64];
    redis_key(key, k, sizeof k);
    int ex = 0;
    kvl_err e;
    if (kvl_redis_exists(p->redis, k, &ex, &e) != KVL_OK) {
        p->st.redis_errors++;
        return 1;
    }
    return ex;
}

static void redis_write(kvl_prefix *p, uint64_t key, const uint8_t *b, size_t len) {
    char k[64];
    redis_key(key, k, sizeof k);
    kvl_err e;
    if (kvl_redis_set(p->redis, k, b, len, &e) != KVL_OK) p->st.redis_errors++;
    else p->st.redis_stored++;
}

/* Every list of s holds exactly its s->pos tokens (nothing evicted). */
static int seq_whole(const kvl_seq *s) {
    const kvl_model *m = s->c->m;
    for (int l = 0; l < m->n_layer; l++)
        for (int h = 0; h < m->n_head_kv; h++)
            if (kvl_kv_table_len(s->t, l, h) != s->pos) return 0;
    return 1;
}

/* The blob of chunk ci of s (version 1: its pages; 2: CacheGen at level)
 * into b. KVL_OK or an error status (nothing to store). */
static kvl_status make_blob(const kvl_seq *s, int ci, uint64_t key, uint64_t parent, int level, kvl_ser_buf *b) {
    const int P = s->c->p.page_tokens, ppc = CH / P;
    const kvl_token *t = s->toks + (size_t)ci * CH;
    kvl_ser_put(b, "KVLCHNK1", 8);
    kvl_ser_put_u32(b, level < 0 ? 1 : 2);
    kvl_ser_put_u32(b, CH);
    kvl_ser_put_u64(b, key);
    kvl_ser_put_u64(b, parent);
    kvl_ser_put_u32(b, (uint32_t)ci);
    kvl_ser_put_u32(b, (uint32_t)P);
    kvl_ser_put(b, t, 4 * CH);
    const size_t at = b->n;
    kvl_ser_put_u64(b, 0);
    if (level < 0) {
        kvl_kv_chunk_write(b, s->t, ci * ppc, ppc);
    } else {
        kvl_cachegen_opts o = {.level = level};
        void *cg = NULL;
        size_t cl = 0;
        const kvl_status st = kvl_seq_save_cachegen_range(s, &o, ci * CH, CH, &cg, &cl);
        if (st) return st;
        kvl_ser_put(b, cg, cl);
        free(cg);
    }
    if (b->oom) return KVL_ERR_NOMEM;
    const uint64_t pl = b->n - at - 8;
    memcpy(b->p + at, &pl, 8);
    kvl_ser_put_u32(b, kvl_crc32c(b->p, b->n));
    return b->oom ? KVL_ERR_NOMEM : KVL_OK;
}

kvl_status kvl_prefix_put(kvl_prefix *p, const kvl_seq *s, int *n_stored) {
    if (n_stored) *n_stored = 0;
    if (!p || !s || s->c->freed) return KVL_ERR_ARG;
    const kvl_ctx *c = s->c;
    const int P = c->p.page_tokens;
    if (c->cuda) return KVL_OK; /* device pages: nothing storable (yet) */
    if (CH % P || !seq_whole(s)) return KVL_OK; /* nothing storable */
    const int ppc = CH / P;
    pthread_mutex_lock(&p->mu);
    uint64_t parent = base_key(c);
    int stored = 0;
    kvl_status st = KVL_OK;
    for (int ci = 0; (ci + 1) * CH <= s->pos; ci++) {
        const kvl_token *t = s->toks + (size_t)ci * CH;
        const uint64_t key = chain(parent, t);
        entry *e = ram_find(p, key);
        if (e) e->tick = ++p->tick;
        const int on_disk = !p->dir || disk_has(p, key);
        const int in_redis = redis_has(p, key);
        if (on_disk && in_redis && (e || p->dir)) { /* stored everywhere (RAM reloads it from disk when asked) */
            parent = key;
            continue;
        }
        if (!kvl_kv_chunk_ready(s->t, ci * ppc, ppc)) break;
        /* pages for RAM (and the lower tiers unless they take CacheGen) */
        kvl_ser_buf b = {0}, g = {0};
        const kvl_ser_buf *low = &b;
        if (!e || p->remote_level < 0) st = make_blob(s, ci, key, parent, -1, &b);
        if (!st && p->remote_level >= 0 && (!on_disk || !in_redis)) {
            st = make_blob(s, ci, key, parent, p->remote_level, &g);
            low = &g;
        }
        if (st) {
            free(b.p);
            free(g.p);
            if (st == KVL_ERR_NOMEM) {
                pthread_mutex_unlock(&p->mu);
                return kvl_err_set(&p->err, KVL_ERR_NOMEM, "prefix: out of memory");
            }
            st = KVL_OK; /* a chunk CacheGen cannot code: stop storing here */
            break;
        }
        if (e && !low->p) low = NULL; /* nothing built: the lower tiers copy RAM's pages */
        const uint8_t *lb = low ? low->p : e->blob;
        const size_t ll = low ? low->n : e->len;
        if (!on_disk) disk_write(p, key, lb, ll);
        if (!in_redis) redis_write(p, key, lb, ll);
        if (!e) {
            ram_insert(p, key, b.p, b.n);
            b.p = NULL;
            stored++;
            p->st.stored++;
        }
        free(b.p);
        free(g.p);
        parent = key;
    }
    pthread_mutex_unlock(&p->mu);
    if (n_stored) *n_stored = stored;
    return KVL_OK;
}

kvl_status kvl_prefix_get(kvl_prefix *p, kvl_seq *s, const kvl_token *toks, int n, int *n_reused) {
    if (n_reused) *n_reused = 0;
    if (!p || !s || !n_reused || (n > 0 && !toks) || s->c->freed) return KVL_ERR_ARG;
    kvl_ctx *c = s->c;
    if (c->cuda) return KVL_OK; /* device pages: no reuse (yet); the caller prefills everything */
    if (s->pos != 0 || kvl_kv_table_n_pages(s->t) != 0)
        return kvl_err_set(&c->err, KVL_ERR_ARG, "prefix: the sequence must be fresh");
    const int P = c->p.page_tokens;
    int kmax = n > 0 ? (n - 1) / CH : 0; /* leave at least one token to compute */
    if (kmax > c->p.n_ctx / CH) kmax = c->p.n_ctx / CH;
    if (CH % P || kmax == 0) return KVL_OK;
    for (int i = 0; i < n; i++)
        if (toks[i] < 0 || toks[i] >= c->m->n_vocab) return KVL_OK; /* kvl_prefill will report it */
    if (kvl_seq_reserve_tokens(s, kmax * CH) != KVL_OK) return kvl_err_set(&c->err, KVL_ERR_NOMEM, "prefix: out of memory");
    const uint8_t **pay = malloc((size_t)kmax * sizeof *pay);
    size_t *plen = malloc((size_t)kmax * sizeof *plen);
    uint64_t *keys = malloc((size_t)kmax * sizeof *keys);
    uint8_t **owned = calloc((size_t)kmax, sizeof *owned); /* blobs read from disk or Redis during this call */
    if (!pay || !plen || !keys || !owned) {
        free(pay);
        free(plen);
        free(keys);
        free(owned);
        return kvl_err_set(&c->err, KVL_ERR_NOMEM, "prefix: out of memory");
    }
    pthread_mutex_lock(&p->mu);
    uint64_t parent = base_key(c);
    int k = 0, n_pages_chunks = 0; /* chunks [0, n_pages_chunks) are pages, the rest CacheGen */
    int *ver = malloc((size_t)kmax * sizeof *ver);
    /* RAM is not changed until the load is done, so pay[] stays valid */
    for (; ver && k < kmax; k++) {
        const kvl_token *t = toks + (size_t)k * CH;
        const uint64_t key = chain(parent, t);
        entry *e = ram_find(p, key);
        const uint8_t *b = NULL;
        size_t len = 0;
        int v = e ? blob_check(e->blob, e->len, key, parent, k, P, t) : -1;
        if (v == 1 && n_pages_chunks < k) v = -1; /* pages cannot follow CacheGen chunks */
        if (v > 0) {
            e->tick = ++p->tick;
            b = e->blob, len = e->len;
            p->st.ram_hits++;
        } else {
            uint8_t *d = disk_read(p, key, &len);
            v = d ? blob_check(d, len, key, parent, k, P, t) : -1;
            if (v == 1 && n_pages_chunks < k) v = -1;
            if (v > 0) {
                p->st.disk_hits++;
                b = owned[k] = d;
            } else {
                if (d) p->st.bad++;
                free(d);
                d = redis_read(p, key, &len);
                v = d ? blob_check(d, len, key, parent, k, P, t) : -1;
                if (v == 1 && n_pages_chunks < k) v = -1;
                if (v > 0) {
                    p->st.redis_hits++;
                    b = owned[k] = d;
                } else if (d) {
                    p->st.bad++;
                    free(d);
                    redis_drop(p, key);
                }
            }
        }
        if (!b) {
            p->st.misses++;
            break;
        }
        ver[k] = v;
        if (v == 1) n_pages_chunks = k + 1;
        pay[k] = b + HDR;
        plen[k] = len - HDR - 4;
        keys[k] = key;
        parent = key;
    }
    kvl_status st = KVL_OK;
    int loaded = 0; /* chunks in s */
    if (n_pages_chunks > 0) {
        st = kvl_kv_chunk_load(c->pool, s->t, pay, plen, n_pages_chunks, CH / P, c->p.n_ctx, &p->err);
        if (st == KVL_OK) {
            memcpy(s->toks, toks, sizeof *toks * (size_t)n_pages_chunks * CH);
            s->pos = n_pages_chunks * CH;
            loaded = n_pages_chunks;
        }
    }
    /* CacheGen chunks after the pages, each appended (transactional) */
    for (int i = n_pages_chunks; st == KVL_OK && i < k; i++) {
        if (kvl_seq_append_cachegen(s, pay[i], plen[i]) != KVL_OK) {
            snprintf(p->err.msg, sizeof p->err.msg, "%s", kvl_ctx_error(c));
            st = KVL_ERR_FORMAT;
            break;
        }
        loaded = i + 1;
    }
    *n_reused = loaded * CH;
    for (int i = 0; i < loaded; i++)
        if (owned[i]) ram_insert(p, keys[i], owned[i], plen[i] + HDR + 4), owned[i] = NULL;
    if (st != KVL_OK) {
        /* a damaged or unusable chunk: drop it (and, for pages, the run) from RAM; the caller recomputes the rest */
        p->st.bad++;
        const int from = loaded, to = loaded < n_pages_chunks ? n_pages_chunks : loaded + 1;
        for (int i = from; i < to && i < k; i++)
            for (int j = 0; j < p->n; j++)
                if (p->e[j].key == keys[i]) {
                    ram_remove(p, j);
                    break;
                }
    }
    free(ver);
    for (int i = 0; i < kmax; i++) free(owned[i]);
    free(owned);
    pthread_mutex_unlock(&p->mu);
    free(pay);
    free(plen);
    free(keys);
    return KVL_OK;
}
