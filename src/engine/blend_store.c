/* The CacheBlend chunk store (include/kvlite.h, "CacheBlend"): chunk KV rows
 * keyed by content hash in a RAM tier (LRU under a byte budget, entries in
 * use by a call pinned) and an optional disk tier (one file per chunk,
 * DIR/KEY.kvb, written through a temporary file and rename), plus the chunk
 * file codec. The decoder treats the file as hostile: every field is
 * checked before use and checksums cover every byte.
 *
 * Chunk file, version 2 (little-endian; docs/ARCHITECTURE.md, "CacheBlend"):
 *   0 "KVLBLND1"  8 u32 version (2)  12 u32 flags (bit 0: f32 rows, else f16)
 *  16 u64 key  24 u64 model identity  32 u32 n_layer  36 u32 kv (n_head_kv * head_dim)
 *  40 u32 tokens n  44 i32 base position  48 u32 config length C  52 config text [C]
 *  then i32 token ids [n], u32 CRC32C of each layer's rows [n_layer],
 *  u32 CRC32C of every byte before it (the head), then the rows
 *  [n_layer][K, V][n][kv] (f32 or f16): layer l is one byte range that can
 *  be read and verified on its own (blend_read.c streams them).
 * Version 1 (still read, whole): the same header, token ids, rows, then a
 * u32 CRC32C of every byte before it.
 *
 * Not unified with the prefix store (engine/prefix.c) yet: that one keeps
 * encoded pages of 256-token prefix chunks whose keys chain on the chunks
 * before them; these are position-free rows of arbitrary chunks. A common
 * tiered blob store (RAM LRU + disk + Redis) under both is the next step. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/blend.h"
#include "engine/engine.h"
#include "engine/redis.h"
#include "kv/serial.h"
#include "util/crc32c.h"

#define BLEND_MAGIC "KVLBLND1"
#define BLEND_VERSION 2u
#define BLEND_HDR KVL_BLEND_FIXED_HDR
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
static uint32_t get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Index of the first non-finite value of rows [nbytes] (f32 or f16 bits), or
 * SIZE_MAX. Eight bytes at a time: t = (w & E) ^ E is zero in a lane whose
 * exponent bits are all ones; adding 0x7fff (0x7fffffff) per lane cannot
 * carry across lanes (t <= E < 0x8000...) and sets a lane's top bit iff
 * the lane is non-zero. The exact index is then found value by value. */
static size_t first_nonfinite(const uint8_t *p, size_t nbytes, int f32) {
    const uint64_t E = f32 ? 0x7f8000007f800000ull : 0x7c007c007c007c00ull;
    const uint64_t A = f32 ? 0x7fffffff7fffffffull : 0x7fff7fff7fff7fffull;
    const uint64_t H = f32 ? 0x8000000080000000ull : 0x8000800080008000ull;
    size_t i = 0;
    for (; i + 8 <= nbytes; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        if (((((w & E) ^ E) + A) & H) != H) break;
    }
    if (f32) {
        for (; i + 4 <= nbytes; i += 4)
            if ((get_u32(p + i) & 0x7f800000u) == 0x7f800000u) return i / 4;
    } else {
        for (; i + 2 <= nbytes; i += 2)
            if (((uint32_t)p[i + 1] << 8 & 0x7c00u) == 0x7c00u) return i / 2;
    }
    return SIZE_MAX;
}

kvl_status kvl_blend_chunk_encode(const kvl_blend_chunk *ch, const kvl_blend_expect *x, uint8_t **buf, size_t *len,
                                  kvl_err *err) {
    *buf = NULL;
    *len = 0;
    const size_t C = strlen(x->config);
    const size_t lb = ch->row_bytes / (size_t)ch->n_layer;
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
    for (int l = 0; l < ch->n_layer; l++) kvl_ser_put_u32(&b, kvl_crc32c(ch->rows + (size_t)l * lb, lb));
    uint8_t crc[4];
    put_u32(crc, b.oom ? 0 : kvl_crc32c(b.p, b.n));
    kvl_ser_put(&b, crc, 4);
    kvl_ser_put(&b, ch->rows, ch->row_bytes); /* little-endian hosts (as the session format) */
    if (b.oom) {
        free(b.p);
        return kvl_err_set(err, KVL_ERR_NOMEM, "blend: out of memory encoding a chunk");
    }
    *buf = b.p;
    *len = b.n;
    return KVL_OK;
}

/* The fixed fields (bytes 0..51) of either version. */
typedef struct fixed_hdr {
    uint32_t version, flags, n_layer, kv, n, C;
    uint64_t key, identity;
    int32_t base_pos;
} fixed_hdr;

static kvl_status read_fixed(const uint8_t *buf, size_t len, fixed_hdr *f, kvl_err *err) {
    if (!buf || len < BLEND_HDR)
        return kvl_err_set(err, KVL_ERR_FORMAT, "blend chunk: truncated header (%zu bytes, %d needed)", len, BLEND_HDR);
    if (memcmp(buf, BLEND_MAGIC, 8)) return kvl_err_set(err, KVL_ERR_FORMAT, "blend chunk: not a chunk file (bad magic)");
    kvl_ser_rd r = {.p = buf, .n = BLEND_HDR, .off = 8};
    f->version = kvl_ser_get_u32(&r);
    f->flags = kvl_ser_get_u32(&r);
    f->key = kvl_ser_get_u64(&r);
    f->identity = kvl_ser_get_u64(&r);
    f->n_layer = kvl_ser_get_u32(&r);
    f->kv = kvl_ser_get_u32(&r);
    f->n = kvl_ser_get_u32(&r);
    f->base_pos = (int32_t)kvl_ser_get_u32(&r);
    f->C = kvl_ser_get_u32(&r);
    if (r.bad) return kvl_err_set(err, KVL_ERR_FORMAT, "blend chunk: truncated header");
    return KVL_OK;
}

/* The checks of the fields against x (both versions; cfg: the config text [f->C]). */
static kvl_status check_fields(const fixed_hdr *f, const uint8_t *cfg, const kvl_blend_expect *x, uint64_t want_key,
                               const kvl_token *want, int n_want, kvl_err *err) {
    if (f->flags > 1u) return kvl_err_set(err, KVL_ERR_FORMAT, "blend chunk: unknown flags 0x%x", f->flags);
    if (f->identity != x->identity)
        return kvl_err_set(err, KVL_ERR_ARG, "blend chunk: made by another model (identity %016llx, model %016llx)",
                           (unsigned long long)f->identity, (unsigned long long)x->identity);
    if (f->C != strlen(x->config) || memcmp(cfg, x->config, f->C))
        return kvl_err_set(err, KVL_ERR_ARG, "blend chunk: made for another KV configuration (file '%.*s', context '%s')",
                           (int)(f->C < 200 ? f->C : 200), (const char *)cfg, x->config);
    if ((int64_t)f->n_layer != x->n_layer || (int64_t)f->kv != x->kv)
        return kvl_err_set(err, KVL_ERR_ARG, "blend chunk: geometry %u layers x %u differs from the model's %d x %d",
                           f->n_layer, f->kv, x->n_layer, x->kv);
    if ((int)(f->flags & 1u) != (x->f32 != 0))
        return kvl_err_set(err, KVL_ERR_ARG, "blend chunk: rows are %s, the store keeps %s", f->flags & 1u ? "f32" : "f16",
                           x->f32 ? "f32" : "f16");
    if (f->base_pos != x->base_pos)
        return kvl_err_set(err, KVL_ERR_ARG, "blend chunk: computed at base position %d, the store's is %d", f->base_pos,
                           x->base_pos);
    if (f->n == 0 || f->n > (uint32_t)x->max_tokens)
        return kvl_err_set(err, KVL_ERR_FORMAT, "blend chunk: %u tokens outside [1, %d]", f->n, x->max_tokens);
    if (want_key && f->key != want_key)
        return kvl_err_set(err, KVL_ERR_FORMAT, "blend chunk: key %016llx under the name %016llx",
                           (unsigned long long)f->key, (unsigned long long)want_key);
    if (want && (int64_t)f->n != n_want)
        return kvl_err_set(err, KVL_ERR_FORMAT, "blend chunk: %u tokens, the looked-up chunk has %d", f->n, n_want);
    return KVL_OK;
}

/* Token ids p [n] (i32) checked against the vocabulary and want; copied into toks when not NULL. */
static kvl_status check_tokens(const uint8_t *p, uint32_t n, const kvl_blend_expect *x, const kvl_token *want,
                               kvl_token *toks, kvl_err *err) {
    for (uint32_t i = 0; i < n; i++) {
        const int32_t t = (int32_t)get_u32(p + 4 * (size_t)i);
        if (t < 0 || t >= x->n_vocab || (want && t != want[i]))
            return kvl_err_set(err, KVL_ERR_FORMAT, "blend chunk: token %u is %d (%s)", i, t,
                               t < 0 || t >= x->n_vocab ? "out of the vocabulary" : "not the looked-up chunk's");
        if (toks) toks[i] = t;
    }
    return KVL_OK;
}

kvl_status kvl_blend_head_size(const uint8_t *buf, size_t len, const kvl_blend_expect *x, size_t *head_len,
                               kvl_err *err) {
    *head_len = 0;
    fixed_hdr f;
    kvl_status st = read_fixed(buf, len, &f, err);
    if (st) return st;
    if (f.version == 1)
        return kvl_err_set(err, KVL_ERR_FORMAT,
                           "blend chunk: version 1 file (one checksum over the whole file: no per-layer reads)");
    if (f.version != BLEND_VERSION)
        return kvl_err_set(err, KVL_ERR_FORMAT, "blend chunk: version %u (this build reads 1 and %u)", f.version,
                           BLEND_VERSION);
    if (f.C > BLEND_MAX_CONFIG)
        return kvl_err_set(err, KVL_ERR_FORMAT, "blend chunk: configuration length %u over %u", f.C, BLEND_MAX_CONFIG);
    if (f.n == 0 || f.n > (uint32_t)x->max_tokens)
        return kvl_err_set(err, KVL_ERR_FORMAT, "blend chunk: %u tokens outside [1, %d]", f.n, x->max_tokens);
    if (f.n_layer == 0 || f.n_layer > KVL_BLEND_MAX_LAYERS)
        return kvl_err_set(err, KVL_ERR_FORMAT, "blend chunk: %u layers outside [1, %d]", f.n_layer, KVL_BLEND_MAX_LAYERS);
    *head_len = (size_t)BLEND_HDR + f.C + 4 * (size_t)f.n + 4 * (size_t)f.n_layer + 4;
    return KVL_OK;
}

kvl_status kvl_blend_head_decode(const uint8_t *buf, size_t len, const kvl_blend_expect *x, uint64_t want_key,
                                 const kvl_token *want, int n_want, kvl_blend_head *h, uint32_t *layer_crc,
                                 kvl_blend_chunk **out, kvl_err *err) {
    memset(h, 0, sizeof *h);
    if (out) *out = NULL;
    size_t hl = 0;
    kvl_status st = kvl_blend_head_size(buf, len, x, &hl, err);
    if (st) return st;
    if (len < hl) return kvl_err_set(err, KVL_ERR_FORMAT, "blend chunk: truncated head (%zu of %zu bytes)", len, hl);
    if (kvl_crc32c(buf, hl - 4) != get_u32(buf + hl - 4))
        return kvl_err_set(err, KVL_ERR_FORMAT, "blend chunk: head checksum mismatch (damaged header, tokens or layer table)");
    fixed_hdr f;
    if ((st = read_fixed(buf, len, &f, err))) return st;
    const uint8_t *cfg = buf + BLEND_HDR, *toks = cfg + f.C, *crcs = toks + 4 * (size_t)f.n;
    if ((st = check_fields(&f, cfg, x, want_key, want, n_want, err))) return st;
    if ((st = check_tokens(toks, f.n, x, want, NULL, err))) return st;
    const size_t esz = f.flags & 1u ? 4 : 2;
    h->version = f.version;
    h->key = f.key;
    h->n = (int)f.n;
    h->f32 = (int)(f.flags & 1u);
    h->n_layer = (int)f.n_layer;
    h->kv = (int)f.kv;
    h->base_pos = f.base_pos;
    h->head_len = hl;
    h->layer_bytes = 2 * (size_t)f.n * (size_t)f.kv * esz;
    h->file_len = hl + (size_t)f.n_layer * h->layer_bytes;
    if (layer_crc)
        for (uint32_t l = 0; l < f.n_layer; l++) layer_crc[l] = get_u32(crcs + 4 * (size_t)l);
    if (out) {
        kvl_blend_chunk *ch = kvl_blend_chunk_new(h->n, h->n_layer, h->kv, h->f32, h->base_pos);
        if (!ch) return kvl_err_set(err, KVL_ERR_NOMEM, "blend chunk: out of memory (%u tokens)", f.n);
        ch->key = f.key;
        check_tokens(toks, f.n, x, want, ch->toks, err);
        *out = ch;
    }
    return KVL_OK;
}

kvl_status kvl_blend_layer_check(const kvl_blend_head *h, const uint32_t *layer_crc, int layer, const uint8_t *rows,
                                 size_t len, kvl_err *err) {
    if (layer < 0 || layer >= h->n_layer)
        return kvl_err_set(err, KVL_ERR_ARG, "blend chunk: layer %d outside [0, %d)", layer, h->n_layer);
    if (len != h->layer_bytes)
        return kvl_err_set(err, KVL_ERR_FORMAT, "blend chunk: layer %d of %d: %zu bytes, %zu expected (truncated)", layer,
                           h->n_layer, len, h->layer_bytes);
    if (kvl_crc32c(rows, len) != layer_crc[layer])
        return kvl_err_set(err, KVL_ERR_FORMAT, "blend chunk: layer %d of %d: checksum mismatch (damaged rows)", layer,
                           h->n_layer);
    const size_t bad = first_nonfinite(rows, len, h->f32);
    if (bad != SIZE_MAX)
        return kvl_err_set(err, KVL_ERR_FORMAT, "blend chunk: layer %d of %d: row value %zu is not finite", layer,
                           h->n_layer, bad);
    return KVL_OK;
}

/* Version 1: one CRC32C over the whole file, checked first. */
static kvl_status decode_v1(const uint8_t *buf, size_t len, const kvl_blend_expect *x, uint64_t want_key,
                            const kvl_token *want, int n_want, kvl_blend_chunk **out, kvl_err *err) {
    if (len < BLEND_HDR + 4) return kvl_err_set(err, KVL_ERR_FORMAT, "blend chunk: truncated (%zu bytes)", len);
    if (kvl_crc32c(buf, len - 4) != get_u32(buf + len - 4))
        return kvl_err_set(err, KVL_ERR_FORMAT, "blend chunk: checksum mismatch (damaged)");
    fixed_hdr f;
    kvl_status st = read_fixed(buf, len, &f, err);
    if (st) return st;
    if (f.C > BLEND_MAX_CONFIG || f.C > len - 4 - BLEND_HDR)
        return kvl_err_set(err, KVL_ERR_FORMAT, "blend chunk: configuration length %u past the end", f.C);
    const uint8_t *cfg = buf + BLEND_HDR;
    if ((st = check_fields(&f, cfg, x, want_key, want, n_want, err))) return st;
    const size_t esz = f.flags & 1u ? 4 : 2;
    const size_t rows = (size_t)f.n_layer * 2 * (size_t)f.n * (size_t)f.kv * esz;
    const size_t left = len - 4 - BLEND_HDR - f.C;
    if (left != 4 * (size_t)f.n + rows)
        return kvl_err_set(err, KVL_ERR_FORMAT, "blend chunk: %zu payload bytes, %zu expected", left, 4 * (size_t)f.n + rows);
    const uint8_t *tp = cfg + f.C, *rp = tp + 4 * (size_t)f.n;
    const size_t bad = first_nonfinite(rp, rows, (int)(f.flags & 1u));
    if (bad != SIZE_MAX) return kvl_err_set(err, KVL_ERR_FORMAT, "blend chunk: row value %zu is not finite", bad);
    kvl_blend_chunk *ch = kvl_blend_chunk_new((int)f.n, (int)f.n_layer, (int)f.kv, (int)(f.flags & 1u), f.base_pos);
    if (!ch) return kvl_err_set(err, KVL_ERR_NOMEM, "blend chunk: out of memory (%u tokens)", f.n);
    ch->key = f.key;
    if ((st = check_tokens(tp, f.n, x, want, ch->toks, err))) {
        kvl_blend_chunk_free(ch);
        return st;
    }
    memcpy(ch->rows, rp, rows);
    *out = ch;
    return KVL_OK;
}

kvl_status kvl_blend_chunk_decode(const uint8_t *buf, size_t len, const kvl_blend_expect *x, uint64_t want_key,
                                  const kvl_token *want, int n_want, kvl_blend_chunk **out, kvl_err *err) {
    *out = NULL;
    if (buf && len >= 12 && !memcmp(buf, BLEND_MAGIC, 8) && get_u32(buf + 8) == 1)
        return decode_v1(buf, len, x, want_key, want, n_want, out, err);
    kvl_blend_head h;
    uint32_t *crc = malloc(sizeof(uint32_t) * (size_t)(x->n_layer > 0 ? x->n_layer : 1));
    if (!crc) return kvl_err_set(err, KVL_ERR_NOMEM, "blend chunk: out of memory");
    kvl_blend_chunk *ch = NULL;
    kvl_status st = kvl_blend_head_decode(buf, len, x, want_key, want, n_want, &h, crc, &ch, err);
    if (!st && len != h.file_len)
        st = kvl_err_set(err, KVL_ERR_FORMAT, "blend chunk: %zu bytes, %zu expected (%s)", len, h.file_len,
                         len < h.file_len ? "truncated" : "trailing bytes");
    for (int l = 0; !st && l < h.n_layer; l++) {
        const uint8_t *p = buf + h.head_len + (size_t)l * h.layer_bytes;
        st = kvl_blend_layer_check(&h, crc, l, p, h.layer_bytes, err);
        if (!st) memcpy(ch->rows + (size_t)l * h.layer_bytes, p, h.layer_bytes);
    }
    free(crc);
    if (st) {
        kvl_blend_chunk_free(ch);
        return st;
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
    kvl_redis_free(b->redis);
    free(b->url);
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
    const int redis = dir && kvl_redis_is_url(dir);
    if (redis) b->url = strdup(dir);
    else if (dir) b->dir = strdup(dir);
    if (!b->config || !b->base || (dir && !b->dir && !b->url)) {
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
    if (redis) {
        kvl_redis_params rp = {.connect_ms = 500, .command_ms = 2000, .retry_ms = 1000};
        if ((st = kvl_redis_create(dir, &rp, &b->redis, &e))) {
            kvl_blend_free(b);
            goto done;
        }
    } else if (dir && mkdir(dir, 0755) && errno != EEXIST) {
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

/* pread all of [n] at off: bytes read (short at the end of the file), -1 on error. */
static ssize_t pread_all(int fd, void *p, size_t n, off_t off) {
    size_t got = 0;
    while (got < n) {
        const ssize_t r = pread(fd, (uint8_t *)p + got, n - got, off + (off_t)got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return -1;
        if (r == 0) break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

/* Open a version-2 file's head for rd: 1 when handed to rd, 0 when the file
 * is version 1 (read it whole), or an error. */
static kvl_status open_for_reader(kvl_blend *b, kvl_blend_reader *rd, const char *path, int fd, uint64_t key,
                                  const kvl_token *toks, int n, kvl_blend_chunk **out, int *handed, kvl_err *err) {
    *handed = 0;
    uint8_t fx[KVL_BLEND_FIXED_HDR];
    const ssize_t got = pread_all(fd, fx, sizeof fx, 0);
    if (got < 0) return kvl_err_set(err, KVL_ERR_IO, "blend: cannot read '%s': %s", path, strerror(errno));
    if (got >= 12 && !memcmp(fx, BLEND_MAGIC, 8) && get_u32(fx + 8) == 1) return KVL_OK;
    size_t hl = 0;
    kvl_status st = kvl_blend_head_size(fx, (size_t)got, &b->x, &hl, err);
    if (st) return st;
    uint8_t *head = malloc(hl);
    uint32_t *crc = malloc(sizeof(uint32_t) * (size_t)b->x.n_layer);
    kvl_blend_chunk *ch = NULL;
    kvl_blend_head h;
    struct stat sb;
    if (!head || !crc) st = kvl_err_set(err, KVL_ERR_NOMEM, "blend: out of memory reading '%s'", path);
    else if (pread_all(fd, head, hl, 0) != (ssize_t)hl)
        st = kvl_err_set(err, KVL_ERR_FORMAT, "blend chunk: truncated head (under %zu bytes)", hl);
    else if (!(st = kvl_blend_head_decode(head, hl, &b->x, key, toks, n, &h, crc, NULL, err))) {
        /* the size before any allocation it would justify */
        if (fstat(fd, &sb) || sb.st_size < 0) st = kvl_err_set(err, KVL_ERR_IO, "blend: cannot size '%s'", path);
        else if ((uint64_t)sb.st_size != (uint64_t)h.file_len)
            st = kvl_err_set(err, KVL_ERR_FORMAT, "blend chunk: %lld bytes, %zu expected (%s)", (long long)sb.st_size,
                             h.file_len, (uint64_t)sb.st_size < (uint64_t)h.file_len ? "truncated" : "trailing bytes");
        else if (!(ch = kvl_blend_chunk_new(h.n, h.n_layer, h.kv, h.f32, h.base_pos)))
            st = kvl_err_set(err, KVL_ERR_NOMEM, "blend: out of memory for a chunk of %d tokens", h.n);
        else {
            ch->key = h.key;
            memcpy(ch->toks, toks, sizeof(kvl_token) * (size_t)n); /* the head's tokens are these (checked) */
            if (!(st = kvl_blend_reader_add(rd, ch, &h, crc, fd, path, err))) *handed = 1, *out = ch, ch = NULL;
        }
    }
    kvl_blend_chunk_free(ch);
    free(head);
    free(crc);
    return st;
}

kvl_status kvl_blend_lookup(kvl_blend *b, const kvl_token *toks, int n, kvl_blend_chunk **out, int *owned, int *tier,
                            kvl_err *err) {
    return kvl_blend_lookup_rd(b, NULL, toks, n, out, owned, tier, err);
}

kvl_status kvl_blend_lookup_rd(kvl_blend *b, kvl_blend_reader *rd, const kvl_token *toks, int n, kvl_blend_chunk **out,
                               int *owned, int *tier, kvl_err *err) {
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
    if (rd && (*out = kvl_blend_reader_find(rd, key, toks, n))) { /* the same chunk twice in one prompt */
        *owned = 2;
        *tier = 2;
        b->st.disk_hits++;
        return KVL_OK;
    }
    if (b->dir) {
        char path[4096];
        chunk_path(b, key, path, sizeof path, 0);
        kvl_status st = KVL_OK;
        if (rd) {
            const int fd = open(path, O_RDONLY | O_CLOEXEC);
            if (fd < 0 && errno != ENOENT)
                return kvl_err_set(err, KVL_ERR_IO, "blend: cannot open '%s': %s", path, strerror(errno));
            if (fd >= 0) {
                int handed = 0;
                st = open_for_reader(b, rd, path, fd, key, toks, n, out, &handed, err);
                if (!handed) close(fd);
                if (!st && handed) {
                    *owned = 2;
                    *tier = 2;
                    b->st.disk_hits++;
                    return KVL_OK;
                }
            }
        }
        uint8_t *buf = NULL;
        size_t len = 0;
        if (!st) st = read_file(path, &buf, &len, err);
        if (!st && buf) {
            kvl_blend_chunk *ch = NULL;
            st = kvl_blend_chunk_decode(buf, len, &b->x, key, toks, n, &ch, err);
            free(buf);
            if (!st) {
                if (ram_add(b, ch)) *owned = 1;
                *out = ch;
                *tier = 2;
                b->st.disk_hits++;
                return KVL_OK;
            }
        }
        if (st) {
            char msg[sizeof err->msg];
            snprintf(msg, sizeof msg, "%s", err->msg);
            return kvl_err_set(err, st, "%s: %s", path, msg);
        }
    }
    if (b->redis) {
        int found = 0, down = 0;
        kvl_blend_chunk *ch = NULL;
        const kvl_status st = kvl_blend_redis_get(b, rd, key, toks, n, &ch, &found, &down, err);
        if (st) {
            char msg[sizeof err->msg], k[64];
            snprintf(msg, sizeof msg, "%s", err->msg);
            kvl_blend_redis_key(key, -1, k, sizeof k);
            return kvl_err_set(err, st, "Redis %s: %s", k, msg);
        }
        b->st.remote_errors += down;
        if (found) {
            if (rd) *owned = 2;
            else if (ram_add(b, ch)) *owned = 1;
            *out = ch;
            *tier = 3;
            b->st.remote_hits++;
            return KVL_OK;
        }
    }
    b->st.misses++;
    return KVL_OK;
}

void kvl_blend_keep(kvl_blend *b, kvl_blend_chunk *ch) {
    if (ram_add(b, ch)) kvl_blend_chunk_free(ch);
    else ch->pins = 0;
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
    if (b->redis) { /* an unreachable Redis loses the remote copy only */
        kvl_err re;
        kvl_err_clear(&re);
        if (kvl_blend_redis_put(b, ch, &re)) b->st.remote_errors++;
    }
    b->st.stored++;
    if (ram_add(b, ch)) *owned = 1;
    return KVL_OK;
}

void kvl_blend_release(kvl_blend_chunk *ch, int owned) {
    if (!ch || owned == 2) return;
    if (owned) kvl_blend_chunk_free(ch);
    else if (ch->pins > 0) ch->pins--;
}

kvl_status kvl_blend_drop_cache(kvl_blend *b, int *n_files) {
    if (n_files) *n_files = 0;
    if (!b) return KVL_ERR_ARG;
    kvl_err *err = &b->c->err;
    kvl_err_clear(err);
    if (!b->dir) return KVL_OK;
    DIR *d = opendir(b->dir);
    if (!d) return kvl_err_set(err, KVL_ERR_IO, "blend: cannot list '%s': %s", b->dir, strerror(errno));
    kvl_status st = KVL_OK;
    for (struct dirent *de; (de = readdir(d));) {
        const size_t l = strlen(de->d_name);
        if (de->d_name[0] == '.' || l < 5 || strcmp(de->d_name + l - 4, ".kvb")) continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", b->dir, de->d_name);
        const int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue; /* removed meanwhile */
        /* dirty pages are not dropped: write them back first */
        if (fdatasync(fd) || posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED))
            if (!st) st = kvl_err_set(err, KVL_ERR_IO, "blend: cannot drop '%s' from the page cache: %s", path, strerror(errno));
        close(fd);
        if (n_files) (*n_files)++;
    }
    closedir(d);
    return st;
}
