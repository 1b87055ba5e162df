/* The CacheBlend chunk store (include/kvlite.h, "CacheBlend"): chunk KV rows
 * keyed by content hash in a RAM tier (LRU under a byte budget, entries in
 * use by a call pinned) and an optional disk tier (one file per chunk,
 * DIR/KEY.kvb, written through a temporary file and rename), plus the chunk
 * file codec. The decoder treats the file as hostile: every field is
 * checked before use and the CRC32C covers every byte.
 *
 * Chunk file (little-endian):
 *   0 "KVLBLND1"  8 u32 version (1)  12 u32 flags (bit 0: f32 rows, else f16)
 *  16 u64 key  24 u64 model identity  32 u32 n_layer  36 u32 kv (n_head_kv * head_dim)
 *  40 u32 tokens n  44 i32 base position  48 u32 config length C  52 config text [C]
 *  then i32 token ids [n], rows [n_layer][K, V][n][kv] (f32 or f16),
 *  then u32 CRC32C of every byte before it.
 *
 * Not unified with the prefix store (engine/prefix.c) yet: that one keeps
 * encoded pages of 256-token prefix chunks whose keys chain on the chunks
 * before them; these are position-free rows of arbitrary chunks. A common
 * tiered blob store (RAM LRU + disk + Redis) under both is the next step. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/blend.h"
#include "engine/engine.h"
#include "kv/serial.h"
#include "util/crc32c.h"

#define BLEND_MAGIC "KVLBLND1"
#define BLEND_VERSION 1u
#define BLEND_HDR 52
#define BLEND_MAX_CONFIG 65536u

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const uint8_t *s = p;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 1099511628211ull;
    return h;
}

kvl_blend_chunk *kvl_blend_chunk_new(int n, int n_layer, int kv, int f32, int base_pos) {
    if (n <= 0 || n_layer <= 0 || kv <= 0) return NULL;
    kvl_blend_chunk *ch = calloc(1, sizeof *ch);
    if (!ch) return NULL;
    ch->n = n;
    ch->n_layer = n_layer;
    ch->kv = kv;
    ch->f32 = f32 != 0;
    ch->base_pos = base_pos;
    ch->row_bytes = (size_t)n_layer * 2 * (size_t)n * (size_t)kv * (f32 ? 4 : 2);
    ch->toks = malloc(sizeof(kvl_token) * (size_t)n);
    ch->rows = calloc(1, ch->row_bytes);
    if (!ch->toks || !ch->rows) {
        kvl_blend_chunk_free(ch);
        return NULL;
    }
    return ch;
}

void kvl_blend_chunk_free(kvl_blend_chunk *ch) {
    if (!ch) return;
    free(ch->toks);
    free(ch->rows);
    free(ch);
}

static size_t chunk_bytes(const kvl_blend_chunk *ch) { return ch->row_bytes + sizeof(kvl_token) * (size_t)ch->n + sizeof *ch; }

/* ---- chunk file codec ---------------------------------------------------------- */

static void put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

kvl_status kvl_blend_chunk_encode(const kvl_blend_chunk *ch, const kvl_blend_expect *x, uint8_t **buf, size_t *len,
                                  kvl_err *err) {
    *buf = NULL;
    *len = 0;
    const size_t C = strlen(x->config);
    kvl_ser_buf b = {0};
    kvl_ser_put(&b, BLEND_MAGIC, 8);
    kvl_ser_put_u32(&b, BLEND_VERSION);
    kvl_ser_put_u32(&b, ch->f32 ? 1u : 0u);
    kvl_ser_put_u64(&b, ch->key);
    kvl_ser_put_u64(&b, x->identity);
    kvl_ser_put_u32(&b, (uint32_t)ch->n_layer);
    kvl_ser_put_u32(&b, (uint32_t)ch->kv);
    kvl_ser_put_u32(&b, (uint32_t)ch->n);
    kvl_ser_put_u32(&b, (uint32_t)ch->base_pos);
    kvl_ser_put_u32(&b, (uint32_t)C);
    kvl_ser_put(&b, x->config, C);
    for (int i = 0; i < ch->n; i++) kvl_ser_put_u32(&b, (uint32_t)ch->toks[i]);
    kvl_ser_put(&b, ch->rows, ch->row_bytes); /* little-endian hosts (as the session format) */
    uint8_t crc[4];
    put_u32(crc, b.oom ? 0 : kvl_crc32c(b.p, b.n));
    kvl_ser_put(&b, crc, 4);
    if (b.oom) {
        free(b.p);
        return kvl_err_set(err, KVL_ERR_NOMEM, "blend: out of memory encoding a chunk");
    }
    *buf = b.p;
    *len = b.n;
    return KVL_OK;
}

kvl_status kvl_blend_chunk_decode(const uint8_t *buf, size_t len, const kvl_blend_expect *x, uint64_t want_key,
                                  const kvl_token *want, int n_want, kvl_blend_chunk **out, kvl_err *err) {
    *out = NULL;
    if (!buf || len < BLEND_HDR + 4) return kvl_err_set(err, KVL_ERR_FORMAT, "blend chunk: truncated (%zu bytes)", len);
    if (memcmp(buf, BLEND_MAGIC, 8)) return kvl_err_set(err, KVL_ERR_FORMAT, "blend chunk: not a chunk file (bad magic)");
    kvl_ser_rd r = {.p = buf, .n = len - 4, .off = 8};
    const uint32_t version = kvl_ser_get_u32(&r);
    if (version != BLEND_VERSION)
        return kvl_err_set(err, KVL_ERR_FORMAT, "blend chunk: version %u (this build reads %u)", version, BLEND_VERSION);
    const uint32_t stored_crc = (uint32_t)buf[len - 4] | (uint32_t)buf[len - 3] << 8 | (uint32_t)buf[len - 2] << 16 |
                                (uint32_t)buf[len - 1] << 24;
    if (kvl_crc32c(buf, len - 4) != stored_crc) return kvl_err_set(err, KVL_ERR_FORMAT, "blend chunk: checksum mismatch (damaged)");
    const uint32_t flags = kvl_ser_get_u32(&r);
    const uint64_t key = kvl_ser_get_u64(&r), identity = kvl_ser_get_u64(&r);
    const uint32_t n_layer = kvl_ser_get_u32(&r), kv = kvl_ser_get_u32(&r), n = kvl_ser_get_u32(&r);
    const int32_t base_pos = (int32_t)kvl_ser_get_u32(&r);
    const uint32_t C = kvl_ser_get_u32(&r);
    if (r.bad) return kvl_err_set(err, KVL_ERR_FORMAT, "blend chunk: truncated header");
    if (flags > 1u) return kvl_err_set(err, KVL_ERR_FORMAT, "blend chunk: unknown flags 0x%x", flags);
    if (identity != x->identity)
        return kvl_err_set(err, KVL_ERR_ARG, "blend chunk: made by another model (identity %016llx, model %016llx)",
                           (unsigned long long)identity, (unsigned long long)x->identity);
    if (C > BLEND_MAX_CONFIG || C > kvl_ser_left(&r))
        return kvl_err_set(err, KVL_ERR_FORMAT, "blend chunk: configuration length %u past the end", C);
    const uint8_t *cfg = kvl_ser_get(&r, C);
    if (!cfg || C != strlen(x->config) || memcmp(cfg, x->config, C))
        return kvl_err_set(err, KVL_ERR_ARG, "blend chunk: made for another KV configuration (file '%.*s', context '%s')",
                           (int)(C < 200 ? C : 200), cfg ? (const char *)cfg : "", x->config);
    if ((int)n_layer != x->n_layer || (int)kv != x->kv)
        return kvl_err_set(err, KVL_ERR_ARG, "blend chunk: geometry %u layers x %u differs from the model's %d x %d",
                           n_layer, kv, x->n_layer, x->kv);
    if ((int)(flags & 1u) != (x->f32 != 0))
        return kvl_err_set(err, KVL_ERR_ARG, "blend chunk: rows are %s, the store keeps %s", flags & 1u ? "f32" : "f16",
                           x->f32 ? "f32" : "f16");
    if (base_pos != x->base_pos)
        return kvl_err_set(err, KVL_ERR_ARG, "blend chunk: computed at base position %d, the store's is %d", base_pos,
                           x->base_pos);
    if (n == 0 || n > (uint32_t)x->max_tokens)
        return kvl_err_set(err, KVL_ERR_FORMAT, "blend chunk: %u tokens outside [1, %d]", n, x->max_tokens);
    const size_t esz = flags & 1u ? 4 : 2;
    const size_t rows = (size_t)n_layer * 2 * (size_t)n * (size_t)kv * esz;
    if (kvl_ser_left(&r) != 4 * (size_t)n + rows)
        return kvl_err_set(err, KVL_ERR_FORMAT, "blend chunk: %zu payload bytes, %zu expected", kvl_ser_left(&r),
                           4 * (size_t)n + rows);
    if (want_key && key != want_key)
        return kvl_err_set(err, KVL_ERR_FORMAT, "blend chunk: key %016llx under the name %016llx",
                           (unsigned long long)key, (unsigned long long)want_key);
    if (want && (int)n != n_want)
        return kvl_err_set(err, KVL_ERR_FORMAT, "blend chunk: %u tokens, the looked-up chunk has %d", n, n_want);
    kvl_blend_chunk *ch = kvl_blend_chunk_new((int)n, (int)n_layer, (int)kv, (int)(flags & 1u), base_pos);
    if (!ch) return kvl_err_set(err, KVL_ERR_NOMEM, "blend chunk: out of memory (%u tokens)", n);
    ch->key = key;
    for (uint32_t i = 0; i < n; i++) {
        const int32_t t = (int32_t)kvl_ser_get_u32(&r);
        if (t < 0 || t >= x->n_vocab || (want && t != want[i])) {
            kvl_blend_chunk_free(ch);
            return kvl_err_set(err, KVL_ERR_FORMAT, "blend chunk: token %u is %d (%s)", i, t,
                               t < 0 || t >= x->n_vocab ? "out of the vocabulary" : "not the looked-up chunk's");
        }
        ch->toks[i] = t;
    }
    const uint8_t *p = kvl_ser_get(&r, rows);
    if (!p) {
        kvl_blend_chunk_free(ch);
        return kvl_err_set(err, KVL_ERR_FORMAT, "blend chunk: truncated rows");
    }
    memcpy(ch->rows, p, rows);
    const size_t nv = rows / esz;
    for (size_t i = 0; i < nv; i++) {
        const float v = esz == 4 ? ((const float *)ch->rows)[i] : kvl_fp16_to_fp32(((const uint16_t *)ch->rows)[i]);
        if (!isfinite(v)) {
            kvl_blend_chunk_free(ch);
            return kvl_err_set(err, KVL_ERR_FORMAT, "blend chunk: row value %zu is not finite", i);
        }
    }
    *out = ch;
    return KVL_OK;
}

/* ---- configuration and keys ---------------------------------------------------- */

char *kvl_blend_config(const kvl_ctx *c) {
    const int nl = c->m->n_layer;
    size_t cap = 64 + (size_t)nl * 330, n = 0;
    char *s = malloc(cap);
    if (!s) return NULL;
    n += (size_t)snprintf(s + n, cap - n, "model=%016llx;page=%d;", (unsigned long long)c->m->identity,
                          c->p.page_tokens);
    /* runs of layers with the same specs written once */
    for (int l = 0; l < nl;) {
        const char *k = kvl_kv_pool_layer_spec(c->pool, l, 0), *v = kvl_kv_pool_layer_spec(c->pool, l, 1);
        int e = l + 1;
        while (e < nl && !strcmp(kvl_kv_pool_layer_spec(c->pool, e, 0), k) &&
               !strcmp(kvl_kv_pool_layer_spec(c->pool, e, 1), v))
            e++;
        n += (size_t)snprintf(s + n, cap - n, "%d-%d=%s/%s;", l, e - 1, k, v);
        if (n >= cap) n = cap - 1;
        l = e;
    }
    return s;
}

uint64_t kvl_blend_key(const kvl_blend *b, const kvl_token *toks, int n) {
    uint64_t h = fnv(b->salt, &n, sizeof n);
    h = fnv(h, toks, sizeof(kvl_token) * (size_t)n);
    return h ? h : 1;
}

/* ---- store ----------------------------------------------------------------------- */

void kvl_blend_free(kvl_blend *b) {
    if (!b) return;
    for (int i = 0; i < b->n; i++) kvl_blend_chunk_free(b->e[i]);
    free(b->e);
    free(b->config);
    free(b->base);
    free(b->dir);
    free(b);
}

kvl_status kvl_blend_create(kvl_ctx *c, const kvl_token *base, int n_base, const char *dir, size_t ram_bytes, int f32,
                            kvl_blend **out, char *errbuf, size_t err_len) {
    kvl_err e;
    kvl_err_clear(&e);
    kvl_status st = KVL_OK;
    if (!out) return KVL_ERR_ARG;
    *out = NULL;
    if (!c || c->freed || n_base < 0 || (n_base > 0 && !base)) {
        st = kvl_err_set(&e, KVL_ERR_ARG, "blend: bad arguments (context or base prefix)");
        goto done;
    }
    if (n_base >= c->p.n_ctx) {
        st = kvl_err_set(&e, KVL_ERR_ARG, "blend: base prefix of %d tokens leaves no room in a context of %d", n_base,
                         c->p.n_ctx);
        goto done;
    }
    for (int i = 0; i < n_base; i++)
        if (base[i] < 0 || base[i] >= c->m->n_vocab) {
            st = kvl_err_set(&e, KVL_ERR_ARG, "blend: base token %d at index %d out of range", base[i], i);
            goto done;
        }
    kvl_blend *b = calloc(1, sizeof *b);
    if (!b) {
        st = kvl_err_set(&e, KVL_ERR_NOMEM, "blend: out of memory");
        goto done;
    }
    b->c = c;
    b->config = kvl_blend_config(c);
    b->base = malloc(sizeof(kvl_token) * (size_t)(n_base ? n_base : 1));
    if (dir) b->dir = strdup(dir);
    if (!b->config || !b->base || (dir && !b->dir)) {
        kvl_blend_free(b);
        st = kvl_err_set(&e, KVL_ERR_NOMEM, "blend: out of memory");
        goto done;
    }
    if (n_base) memcpy(b->base, base, sizeof(kvl_token) * (size_t)n_base);
    b->n_base = n_base;
    b->ram_budget = ram_bytes;
    b->x = (kvl_blend_expect){.identity = c->m->identity, .config = b->config, .n_layer = c->m->n_layer,
                              .kv = c->m->n_head_kv * c->m->head_dim, .f32 = f32 != 0, .base_pos = n_base,
                              .n_vocab = c->m->n_vocab, .max_tokens = c->p.n_ctx};
    uint64_t h = fnv(1469598103934665603ull, b->config, strlen(b->config));
    h = fnv(h, &b->x.f32, sizeof b->x.f32);
    h = fnv(h, &n_base, sizeof n_base);
    b->salt = fnv(h, b->base, sizeof(kvl_token) * (size_t)n_base);
    if (dir && mkdir(dir, 0755) && errno != EEXIST) {
        st = kvl_err_set(&e, KVL_ERR_IO, "blend: cannot create '%s': %s", dir, strerror(errno));
        kvl_blend_free(b);
        goto done;
    }
    *out = b;
done:
    if (st && errbuf && err_len) snprintf(errbuf, err_len, "%s", e.msg);
    return st;
}

void kvl_blend_get_stats(const kvl_blend *b, kvl_blend_store_stats *st) {
    *st = b->st;
    st->ram_bytes = b->ram_bytes;
    st->ram_chunks = b->n;
}

static void chunk_path(const kvl_blend *b, uint64_t key, char *p, size_t cap, int tmp) {
    snprintf(p, cap, "%s/%s%016llx.kvb%s", b->dir, tmp ? "." : "", (unsigned long long)key, tmp ? ".tmp" : "");
}

/* Make room for `need` bytes by evicting least recently used unpinned chunks;
 * 0 when it fits. */
static int ram_make_room(kvl_blend *b, size_t need) {
    if (need > b->ram_budget) return -1;
    while (b->ram_bytes + need > b->ram_budget) {
        int victim = -1;
        for (int i = 0; i < b->n; i++)
            if (!b->e[i]->pins && (victim < 0 || b->e[i]->tick < b->e[victim]->tick)) victim = i;
        if (victim < 0) return -1;
        b->ram_bytes -= chunk_bytes(b->e[victim]);
        kvl_blend_chunk_free(b->e[victim]);
        b->e[victim] = b->e[--b->n];
        b->st.evicted++;
    }
    return 0;
}

/* Keep ch in RAM (pinned) when it fits: 0, else -1 (caller owns it). */
static int ram_add(kvl_blend *b, kvl_blend_chunk *ch) {
    const size_t sz = chunk_bytes(ch);
    if (ram_make_room(b, sz)) return -1;
    if (b->n == b->cap) {
        const int cap = b->cap ? 2 * b->cap : 16;
        kvl_blend_chunk **e = realloc(b->e, sizeof *e * (size_t)cap);
        if (!e) return -1;
        b->e = e;
        b->cap = cap;
    }
    b->e[b->n++] = ch;
    b->ram_bytes += sz;
    ch->tick = ++b->tick;
    ch->pins = 1;
    return 0;
}

static kvl_status read_file(const char *path, uint8_t **buf, size_t *len, kvl_err *err) {
    *buf = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errno == ENOENT) return KVL_OK;
        return kvl_err_set(err, KVL_ERR_IO, "blend: cannot open '%s': %s", path, strerror(errno));
    }
    struct stat sb;
    if (fstat(fileno(f), &sb) || sb.st_size < 0 || (uint64_t)sb.st_size > ((uint64_t)1 << 34)) {
        fclose(f);
        return kvl_err_set(err, KVL_ERR_IO, "blend: cannot size '%s'", path);
    }
    uint8_t *p = malloc((size_t)sb.st_size + 1);
    if (!p) {
        fclose(f);
        return kvl_err_set(err, KVL_ERR_NOMEM, "blend: out of memory reading '%s'", path);
    }
    const size_t got = fread(p, 1, (size_t)sb.st_size, f);
    fclose(f);
    if (got != (size_t)sb.st_size) {
        free(p);
        return kvl_err_set(err, KVL_ERR_IO, "blend: short read of '%s'", path);
    }
    *buf = p;
    *len = got;
    return KVL_OK;
}

kvl_status kvl_blend_lookup(kvl_blend *b, const kvl_token *toks, int n, kvl_blend_chunk **out, int *owned, int *tier,
                            kvl_err *err) {
    *out = NULL;
    *owned = 0;
    *tier = 0;
    const uint64_t key = kvl_blend_key(b, toks, n);
    for (int i = 0; i < b->n; i++) {
        kvl_blend_chunk *ch = b->e[i];
        if (ch->key == key && ch->n == n && !memcmp(ch->toks, toks, sizeof(kvl_token) * (size_t)n)) {
            ch->tick = ++b->tick;
            ch->pins++;
            *out = ch;
            *tier = 1;
            b->st.ram_hits++;
            return KVL_OK;
        }
    }
    if (b->dir) {
        char path[4096];
        chunk_path(b, key, path, sizeof path, 0);
        uint8_t *buf = NULL;
        size_t len = 0;
        kvl_status st = read_file(path, &buf, &len, err);
        if (st) return st;
        if (buf) {
            kvl_blend_chunk *ch = NULL;
            st = kvl_blend_chunk_decode(buf, len, &b->x, key, toks, n, &ch, err);
            free(buf);
            if (st) {
                char msg[sizeof err->msg];
                snprintf(msg, sizeof msg, "%s", err->msg);
                return kvl_err_set(err, st, "%s: %s", path, msg);
            }
            if (ram_add(b, ch)) *owned = 1;
            *out = ch;
            *tier = 2;
            b->st.disk_hits++;
            return KVL_OK;
        }
    }
    b->st.misses++;
    return KVL_OK;
}

static kvl_status write_file(const kvl_blend *b, const kvl_blend_chunk *ch, kvl_err *err) {
    uint8_t *buf = NULL;
    size_t len = 0;
    kvl_status st = kvl_blend_chunk_encode(ch, &b->x, &buf, &len, err);
    if (st) return st;
    char tmp[4096], path[4096];
    chunk_path(b, ch->key, tmp, sizeof tmp, 1);
    chunk_path(b, ch->key, path, sizeof path, 0);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        free(buf);
        return kvl_err_set(err, KVL_ERR_IO, "blend: cannot write '%s': %s", tmp, strerror(errno));
    }
    const int ok = fwrite(buf, 1, len, f) == len;
    free(buf);
    if (fclose(f) || !ok || rename(tmp, path)) {
        unlink(tmp);
        return kvl_err_set(err, KVL_ERR_IO, "blend: cannot write '%s'", path);
    }
    return KVL_OK;
}

kvl_status kvl_blend_insert(kvl_blend *b, kvl_blend_chunk *ch, int *owned, kvl_err *err) {
    *owned = 0;
    if (b->dir) {
        kvl_status st = write_file(b, ch, err);
        if (st) return st;
    }
    b->st.stored++;
    if (ram_add(b, ch)) *owned = 1;
    return KVL_OK;
}

void kvl_blend_release(kvl_blend_chunk *ch, int owned) {
    if (!ch) return;
    if (owned) kvl_blend_chunk_free(ch);
    else if (ch->pins > 0) ch->pins--;
}
