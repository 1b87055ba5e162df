/* KV page tables to bytes and back (kv/serial.h): the file framing (header,
 * sections with CRC32C), the KV sections (geometry and codec specs, policy,
 * distinct pages, per-table lists and codec state), their hostile-input
 * loader and a describer for `kvlite kv info`. Layout and the checks are
 * documented in docs/ARCHITECTURE.md ("Sessions and serialization"). */
#include "kv/serial.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv/kv_internal.h"
#include "util/crc32c.h"

#define SPEC_MAX 255 /* longest codec spec / name string accepted */

/* ---- writing ---------------------------------------------------------------------------- */

static int buf_room(kvl_ser_buf *b, size_t n) {
    if (b->oom) return 0;
    if (n > SIZE_MAX / 2 - b->n) {
        b->oom = 1;
        return 0;
    }
    if (b->n + n <= b->cap) return 1;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->n + n) cap *= 2;
    uint8_t *q = realloc(b->p, cap);
    if (!q) {
        b->oom = 1;
        return 0;
    }
    b->p = q;
    b->cap = cap;
    return 1;
}

void kvl_ser_put(kvl_ser_buf *b, const void *data, size_t n) {
    if (!n || !buf_room(b, n)) return;
    memcpy(b->p + b->n, data, n);
    b->n += n;
}
void kvl_ser_put_u32(kvl_ser_buf *b, uint32_t v) {
    uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    kvl_ser_put(b, x, 4);
}
void kvl_ser_put_u64(kvl_ser_buf *b, uint64_t v) {
    kvl_ser_put_u32(b, (uint32_t)v);
    kvl_ser_put_u32(b, (uint32_t)(v >> 32));
}
void kvl_ser_put_str(kvl_ser_buf *b, const char *s, size_t n) {
    kvl_ser_put_u32(b, (uint32_t)n);
    kvl_ser_put(b, s, n);
}

void kvl_ser_printf(kvl_ser_buf *b, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    kvl_ser_put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

static void wr32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8), p[2] = (uint8_t)(v >> 16), p[3] = (uint8_t)(v >> 24);
}
static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

void kvl_ser_header(kvl_ser_buf *b, uint64_t identity) {
    kvl_ser_put(b, KVL_SER_MAGIC, 8);
    kvl_ser_put_u32(b, KVL_SER_VERSION);
    kvl_ser_put_u32(b, 0); /* flags */
    kvl_ser_put_u64(b, identity);
    kvl_ser_put_u32(b, 0); /* n_sections: kvl_ser_finish */
    kvl_ser_put_u32(b, 0); /* header crc: kvl_ser_finish */
}

size_t kvl_ser_section_begin(kvl_ser_buf *b, uint32_t type) {
    const size_t at = b->n;
    kvl_ser_put_u32(b, type);
    kvl_ser_put_u32(b, 0);
    kvl_ser_put_u64(b, 0);
    return at;
}

void kvl_ser_section_end(kvl_ser_buf *b, size_t at) {
    if (b->oom) return;
    const size_t len = b->n - at - KVL_SER_SECTION_BYTES;
    const uint8_t *pl = b->p + at + KVL_SER_SECTION_BYTES;
    wr32(b->p + at + 4, kvl_crc32c(pl, len));
    wr32(b->p + at + 8, (uint32_t)len);
    wr32(b->p + at + 12, (uint32_t)((uint64_t)len >> 32));
}

kvl_status kvl_ser_finish(kvl_ser_buf *b, kvl_err *err) {
    if (b->oom || b->n < KVL_SER_HEADER_BYTES)
        return kvl_err_set(err, KVL_ERR_NOMEM, "session: out of memory writing %zu bytes", b->n);
    uint32_t n = 0;
    for (size_t off = KVL_SER_HEADER_BYTES; off + KVL_SER_SECTION_BYTES <= b->n; n++)
        off += KVL_SER_SECTION_BYTES + (size_t)rd64(b->p + off + 8);
    wr32(b->p + 24, n);
    wr32(b->p + 28, kvl_crc32c(b->p, 28));
    return KVL_OK;
}

/* ---- reading ------------------------------------------------------------------------------ */

const uint8_t *kvl_ser_get(kvl_ser_rd *r, size_t n) {
    if (r->bad || n > r->n - r->off) {
        r->bad = 1;
        return NULL;
    }
    const uint8_t *p = r->p + r->off;
    r->off += n;
    return p;
}
uint32_t kvl_ser_get_u32(kvl_ser_rd *r) {
    const uint8_t *p = kvl_ser_get(r, 4);
    return p ? rd32(p) : 0;
}
uint64_t kvl_ser_get_u64(kvl_ser_rd *r) {
    const uint8_t *p = kvl_ser_get(r, 8);
    return p ? rd64(p) : 0;
}
const char *kvl_ser_get_str(kvl_ser_rd *r, size_t max, size_t *len) {
    const uint32_t n = kvl_ser_get_u32(r);
    *len = 0;
    if (r->bad || n > max) {
        r->bad = 1;
        return NULL;
    }
    const char *s = (const char *)kvl_ser_get(r, n);
    if (s) *len = n;
    return s;
}

static const char *sec_name(uint32_t t) {
    switch (t) {
    case KVL_SER_KV_CONFIG: return "kv-config";
    case KVL_SER_POLICY: return "policy";
    case KVL_SER_PAGES: return "pages";
    case KVL_SER_TABLES: return "tables";
    case KVL_SER_SEQS: return "sequences";
    case KVL_SER_MESSAGES: return "messages";
    default: return "unknown";
    }
}

kvl_status kvl_kv_ser_parse(const void *buf, size_t len, kvl_ser_file *f, kvl_err *err) {
    memset(f, 0, sizeof *f);
    const uint8_t *p = buf;
    if (!p || len < KVL_SER_HEADER_BYTES)
        return kvl_err_set(err, KVL_ERR_FORMAT, "session: file too short (%zu bytes, header is %d)", len,
                           KVL_SER_HEADER_BYTES);
    if (memcmp(p, KVL_SER_MAGIC, 8) != 0) return kvl_err_set(err, KVL_ERR_FORMAT, "session: bad magic (not a kvlite session file)");
    if (rd32(p + 28) != kvl_crc32c(p, 28)) return kvl_err_set(err, KVL_ERR_FORMAT, "session: header checksum mismatch");
    f->version = rd32(p + 8);
    if (f->version != KVL_SER_VERSION)
        return kvl_err_set(err, KVL_ERR_UNSUPPORTED, "session: format version %u (this build reads %u)", f->version,
                           KVL_SER_VERSION);
    if (rd32(p + 12) != 0) return kvl_err_set(err, KVL_ERR_FORMAT, "session: unknown header flags 0x%x", rd32(p + 12));
    f->identity = rd64(p + 16);
    const uint32_t ns = rd32(p + 24);
    if (ns > KVL_SER_MAX_SECTIONS)
        return kvl_err_set(err, KVL_ERR_FORMAT, "session: %u sections (at most %d)", ns, KVL_SER_MAX_SECTIONS);
    size_t off = KVL_SER_HEADER_BYTES;
    for (uint32_t i = 0; i < ns; i++) {
        if (len - off < KVL_SER_SECTION_BYTES)
            return kvl_err_set(err, KVL_ERR_FORMAT, "session: truncated at section %u header (offset %zu)", i, off);
        const uint32_t type = rd32(p + off), crc = rd32(p + off + 4);
        const uint64_t sl = rd64(p + off + 8);
        off += KVL_SER_SECTION_BYTES;
        if (sl > len - off)
            return kvl_err_set(err, KVL_ERR_FORMAT, "session: section %u (%s) length %llu runs past the end (%zu bytes left)",
                               i, sec_name(type), (unsigned long long)sl, len - off);
        if (type < KVL_SER_KV_CONFIG || type > KVL_SER_MESSAGES)
            return kvl_err_set(err, KVL_ERR_FORMAT, "session: section %u has unknown type %u", i, type);
        if (kvl_kv_ser_find(f, type)) return kvl_err_set(err, KVL_ERR_FORMAT, "session: section %s repeated", sec_name(type));
        if (kvl_crc32c(p + off, (size_t)sl) != crc)
            return kvl_err_set(err, KVL_ERR_FORMAT, "session: section %s checksum mismatch", sec_name(type));
        f->sec[f->n_sec++] = (kvl_ser_section){type, p + off, (size_t)sl};
        off += (size_t)sl;
    }
    if (off != len) return kvl_err_set(err, KVL_ERR_FORMAT, "session: %zu trailing bytes after the last section", len - off);
    return KVL_OK;
}

const kvl_ser_section *kvl_kv_ser_find(const kvl_ser_file *f, uint32_t type) {
    for (int i = 0; i < f->n_sec; i++)
        if (f->sec[i].type == type) return &f->sec[i];
    return NULL;
}

/* ---- writing the KV sections -------------------------------------------------------------- */

typedef struct idmap {
    uint32_t *key; /* page id + 1 (0: empty) */
    uint32_t *val;
    size_t mask;
} idmap;

static int idmap_init(idmap *m, size_t n) {
    size_t cap = 64;
    while (cap < 2 * n) cap *= 2;
    m->key = calloc(cap, sizeof *m->key);
    m->val = malloc(cap * sizeof *m->val);
    m->mask = cap - 1;
    return m->key && m->val ? 0 : -1;
}
static void idmap_free(idmap *m) {
    free(m->key);
    free(m->val);
}
/* Index of id, inserting `next` when absent (*added = 1). */
static uint32_t idmap_get(idmap *m, uint32_t id, uint32_t next, int *added) {
    size_t h = ((uint64_t)id * 0x9E3779B97F4A7C15ull) >> 20 & m->mask;
    *added = 0;
    for (;; h = (h + 1) & m->mask) {
        if (m->key[h] == id + 1) return m->val[h];
        if (!m->key[h]) {
            m->key[h] = id + 1;
            m->val[h] = next;
            *added = 1;
            return next;
        }
    }
}

/* The kv-config and policy sections of pool p. */
static void write_config(kvl_ser_buf *b, const kvl_kv_pool *p, int n_ctx, const kvl_kv_table *const *t, int n) {
    const int NL = p->cfg.n_layer, H = p->cfg.n_head_kv;
    size_t s = kvl_ser_section_begin(b, KVL_SER_KV_CONFIG);
    kvl_ser_put_u32(b, (uint32_t)NL);
    kvl_ser_put_u32(b, (uint32_t)H);
    kvl_ser_put_u32(b, (uint32_t)p->D);
    kvl_ser_put_u32(b, (uint32_t)p->P);
    kvl_ser_put_u32(b, (uint32_t)n_ctx);
    kvl_ser_put_u32(b, (uint32_t)p->n_cls);
    for (int l = 0; l < NL; l++)
        for (int side = 0; side < 2; side++) kvl_ser_put_str(b, p->layers[l].spec[side], strlen(p->layers[l].spec[side]));
    for (int c = 0; c < p->n_cls; c++) {
        const kvi_class *k = &p->cls[c];
        kvl_ser_put_str(b, k->fk->name, strlen(k->fk->name));
        kvl_ser_put_str(b, k->fv->name, strlen(k->fv->name));
        const uint32_t v[6] = {(uint32_t)k->sealed, (uint32_t)k->page_bytes, (uint32_t)k->koff,
                               (uint32_t)k->voff,   (uint32_t)k->kseg,       (uint32_t)k->vseg};
        for (int i = 0; i < 6; i++) kvl_ser_put_u32(b, v[i]);
    }
    kvl_ser_section_end(b, s);

    s = kvl_ser_section_begin(b, KVL_SER_POLICY);
    kvl_ser_put_str(b, p->pol.ops->name, strlen(p->pol.ops->name));
    /* policy state (kv/serial_policy.c): statistics and per-sequence policy
     * state of tables t [n]; none for chunks (t NULL) or a policy that keeps none */
    if (t && kvi_ser_policy_state_used(t, n)) {
        const size_t at = b->n;
        kvl_ser_put_u64(b, 0);
        kvi_ser_policy_state_write(b, t, n);
        if (!b->oom) {
            const uint64_t sl = (uint64_t)(b->n - at - 8);
            for (int i = 0; i < 8; i++) b->p[at + (size_t)i] = (uint8_t)(sl >> (8 * i));
        }
    } else {
        kvl_ser_put_u64(b, 0);
    }
    kvl_ser_section_end(b, s);
}

kvl_status kvl_kv_ser_write(kvl_ser_buf *b, const kvl_kv_table *const *t, int n, int n_ctx, kvl_err *err) {
    if (n <= 0 || !t || !t[0]) return kvl_err_set(err, KVL_ERR_ARG, "session: no sequences to save");
    const kvl_kv_pool *p = t[0]->pool;
    const int NL = p->cfg.n_layer, H = p->cfg.n_head_kv, nl = kvi_n_lists(p);
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        if (!t[i] || t[i]->pool != p) return kvl_err_set(err, KVL_ERR_ARG, "session: sequences of different contexts");
        if (t[i]->txn) return kvl_err_set(err, KVL_ERR_ARG, "session: a sequence has an open transaction");
        for (int l = 0; l < nl; l++) total += (size_t)t[i]->lists[l].n_pages;
    }
    if (total > UINT32_MAX / 2) return kvl_err_set(err, KVL_ERR_ARG, "session: too many pages (%zu)", total);

    write_config(b, p, n_ctx, t, n);
    size_t s;

    /* distinct pages in order of first reference */
    idmap m;
    uint32_t *order = malloc((total ? total : 1) * sizeof *order);
    if (!order || idmap_init(&m, total)) {
        free(order);
        if (order) idmap_free(&m);
        return kvl_err_set(err, KVL_ERR_NOMEM, "session: out of memory");
    }
    uint32_t n_fp = 0;
    for (int i = 0; i < n; i++)
        for (int l = 0; l < nl; l++)
            for (int j = 0; j < t[i]->lists[l].n_pages; j++) {
                int added;
                const uint32_t id = t[i]->lists[l].pages[j].id;
                idmap_get(&m, id, n_fp, &added);
                if (added) order[n_fp++] = id;
            }
    s = kvl_ser_section_begin(b, KVL_SER_PAGES);
    kvl_ser_put_u32(b, n_fp);
    for (uint32_t i = 0; i < n_fp; i++) {
        kvl_ser_put_u32(b, order[i] >> KVI_CLS_SHIFT);
        kvl_ser_put(b, kvi_page_mem(p, order[i]), kvi_cls(p, order[i])->page_bytes);
    }
    kvl_ser_section_end(b, s);

    s = kvl_ser_section_begin(b, KVL_SER_TABLES);
    kvl_ser_put_u32(b, (uint32_t)n);
    for (int i = 0; i < n; i++) {
        for (int l = 0; l < nl; l++) {
            const kvlist *L = &t[i]->lists[l];
            kvl_ser_put_u32(b, (uint32_t)L->len);
            kvl_ser_put_u32(b, (uint32_t)L->n_sealed);
            kvl_ser_put_u32(b, (uint32_t)L->n_pages);
            for (int j = 0; j < L->n_pages; j++) {
                int added;
                kvl_ser_put_u32(b, idmap_get(&m, L->pages[j].id, 0, &added));
            }
        }
        for (int l = 0; l < NL; l++)
            for (int side = 0; side < 2; side++) {
                const size_t sb = (side ? p->layers[l].vseq_bytes : p->layers[l].kseq_bytes) * (size_t)H;
                const uint8_t *st = t[i]->cst ? t[i]->cst[l * 2 + side] : NULL;
                kvl_ser_put_u64(b, st ? sb : 0);
                if (st) kvl_ser_put(b, st, sb);
            }
    }
    kvl_ser_section_end(b, s);
    idmap_free(&m);
    free(order);
    return b->oom ? kvl_err_set(err, KVL_ERR_NOMEM, "session: out of memory writing %zu bytes", b->n) : KVL_OK;
}

/* ---- loading the KV sections -------------------------------------------------------------- */

typedef struct fpage {
    const uint8_t *mem;
    int cls;       /* pool class */
    uint32_t refs; /* references from the file's lists */
    int rows;      /* rows used (max over references) */
    pref r;        /* the pool page once taken */
} fpage;

typedef struct flist {
    int len, n_sealed, n_pages;
    const uint8_t *idx; /* [n_pages] u32 in the file */
} flist;

static kvl_status bad(kvl_err *err, const char *what) {
    return kvl_err_set(err, KVL_ERR_FORMAT, "session: malformed %s section", what);
}

static int streq(const char *a, size_t n, const char *b) { return strlen(b) == n && memcmp(a, b, n) == 0; }

/* CONFIG: geometry and codecs against the pool; cmap[file class] = pool class. */
static kvl_status load_config(const kvl_kv_pool *p, const kvl_ser_section *s, int *cmap, int *n_fcls, kvl_err *err) {
    kvl_ser_rd r = {s->data, s->len, 0, 0};
    const uint32_t g[6] = {kvl_ser_get_u32(&r), kvl_ser_get_u32(&r), kvl_ser_get_u32(&r),
                           kvl_ser_get_u32(&r), kvl_ser_get_u32(&r), kvl_ser_get_u32(&r)};
    if (r.bad) return bad(err, "kv-config");
    const char *names[4] = {"n_layer", "n_head_kv", "head_dim", "page size"};
    const int have[4] = {p->cfg.n_layer, p->cfg.n_head_kv, p->D, p->P};
    for (int i = 0; i < 4; i++)
        if (g[i] != (uint32_t)have[i])
            return kvl_err_set(err, KVL_ERR_ARG, "session: %s differs (file %u, context %d)", names[i], g[i], have[i]);
    for (int l = 0; l < p->cfg.n_layer; l++)
        for (int side = 0; side < 2; side++) {
            size_t n;
            const char *sp = kvl_ser_get_str(&r, SPEC_MAX, &n);
            if (r.bad) return bad(err, "kv-config");
            if (!streq(sp, n, p->layers[l].spec[side]))
                return kvl_err_set(err, KVL_ERR_ARG, "session: codec spec of layer %d %s differs (file '%.*s', context '%s')",
                                   l, side ? "V" : "K", (int)n, sp, p->layers[l].spec[side]);
        }
    if (g[5] > KVI_MAX_CLASSES) return kvl_err_set(err, KVL_ERR_FORMAT, "session: %u page classes (at most %d)", g[5], KVI_MAX_CLASSES);
    *n_fcls = (int)g[5];
    for (uint32_t c = 0; c < g[5]; c++) {
        size_t nk, nv;
        const char *fk = kvl_ser_get_str(&r, SPEC_MAX, &nk), *fv = kvl_ser_get_str(&r, SPEC_MAX, &nv);
        uint32_t v[6];
        for (int i = 0; i < 6; i++) v[i] = kvl_ser_get_u32(&r);
        if (r.bad) return bad(err, "kv-config");
        cmap[c] = -1;
        for (int k = 0; k < p->n_cls; k++) {
            const kvi_class *q = &p->cls[k];
            if (streq(fk, nk, q->fk->name) && streq(fv, nv, q->fv->name) && v[0] == (uint32_t)q->sealed) cmap[c] = k;
        }
        if (cmap[c] < 0)
            return kvl_err_set(err, KVL_ERR_ARG, "session: page class %u (K %.*s, V %.*s%s) is not used by the context", c,
                               (int)nk, fk, (int)nv, fv, v[0] ? ", sealed" : "");
        const kvi_class *q = &p->cls[cmap[c]];
        if (v[1] != q->page_bytes || v[2] != q->koff || v[3] != q->voff || v[4] != q->kseg || v[5] != q->vseg)
            return kvl_err_set(err, KVL_ERR_ARG, "session: page layout of class %u differs (file %u bytes, context %zu)", c,
                               v[1], q->page_bytes);
    }
    if (kvl_ser_left(&r)) return bad(err, "kv-config");
    return KVL_OK;
}

static kvl_status load_policy(const kvl_kv_pool *p, const kvl_ser_section *s, const uint8_t **state, size_t *state_len,
                              kvl_err *err) {
    kvl_ser_rd r = {s->data, s->len, 0, 0};
    size_t n;
    const char *name = kvl_ser_get_str(&r, SPEC_MAX, &n);
    const uint64_t sl = kvl_ser_get_u64(&r);
    if (r.bad || sl > kvl_ser_left(&r)) return bad(err, "policy");
    if (!streq(name, n, p->pol.ops->name))
        return kvl_err_set(err, KVL_ERR_ARG, "session: KV policy differs (file '%.*s', context '%s')", (int)n, name,
                           p->pol.ops->name);
    *state = kvl_ser_get(&r, (size_t)sl);
    *state_len = (size_t)sl;
    if (kvl_ser_left(&r)) return bad(err, "policy");
    return KVL_OK;
}

static int table_fresh(const kvl_kv_table *t) {
    if (t->txn || t->n_pages) return 0;
    for (int i = 0; i < kvi_n_lists(t->pool); i++)
        if (t->lists[i].len || t->lists[i].n_pages) return 0;
    return 1;
}

kvl_status kvl_kv_ser_load(kvl_kv_pool *p, const kvl_ser_file *f, kvl_kv_table *const *t, int n, int n_ctx,
                           kvl_err *err) {
    if (!p || !f || n <= 0 || !t) return kvl_err_set(err, KVL_ERR_ARG, "session: bad arguments");
    for (int i = 0; i < n; i++)
        if (!t[i] || t[i]->pool != p || !table_fresh(t[i]))
            return kvl_err_set(err, KVL_ERR_ARG, "session: load needs fresh sequences of this context");
    const kvl_ser_section *sc = kvl_kv_ser_find(f, KVL_SER_KV_CONFIG), *sp = kvl_kv_ser_find(f, KVL_SER_POLICY),
                          *spg = kvl_kv_ser_find(f, KVL_SER_PAGES), *st = kvl_kv_ser_find(f, KVL_SER_TABLES);
    if (!sc || !sp || !spg || !st)
        return kvl_err_set(err, KVL_ERR_FORMAT, "session: missing %s section",
                           !sc ? "kv-config" : !sp ? "policy" : !spg ? "pages" : "tables");
    int cmap[KVI_MAX_CLASSES], n_fcls = 0;
    kvl_status s = load_config(p, sc, cmap, &n_fcls, err);
    if (s) return s;
    const uint8_t *pstate = NULL;
    size_t pstate_len = 0;
    if ((s = load_policy(p, sp, &pstate, &pstate_len, err))) return s;
    int *plen = NULL; /* [n][n lists] lengths, for the policy state */

    const int NL = p->cfg.n_layer, H = p->cfg.n_head_kv, nl = kvi_n_lists(p), P = p->P, D = p->D;
    fpage *fp = NULL;
    flist *fl = NULL;
    const uint8_t **cst = NULL;
    pref **arr = NULL;
    /* pages: each a u32 class and page_bytes of that class */
    kvl_ser_rd r = {spg->data, spg->len, 0, 0};
    const uint32_t n_fp = kvl_ser_get_u32(&r);
    if (r.bad || n_fp > kvl_ser_left(&r) / 68) { /* every page is at least 64 + 4 bytes */
        s = bad(err, "pages");
        goto out;
    }
    fp = calloc(n_fp ? n_fp : 1, sizeof *fp);
    if (!fp) {
        s = kvl_err_set(err, KVL_ERR_NOMEM, "session: out of memory");
        goto out;
    }
    for (uint32_t i = 0; i < n_fp; i++) {
        const uint32_t c = kvl_ser_get_u32(&r);
        if (r.bad || c >= (uint32_t)n_fcls) {
            s = kvl_err_set(err, KVL_ERR_FORMAT, "session: page %u has a bad class %u", i, c);
            goto out;
        }
        fp[i].cls = cmap[c];
        fp[i].mem = kvl_ser_get(&r, p->cls[fp[i].cls].page_bytes);
        if (!fp[i].mem) {
            s = kvl_err_set(err, KVL_ERR_FORMAT, "session: page %u truncated", i);
            goto out;
        }
    }
    if (kvl_ser_left(&r)) {
        s = bad(err, "pages");
        goto out;
    }

    /* tables: lists, then codec state */
    r = (kvl_ser_rd){st->data, st->len, 0, 0};
    const uint32_t nt = kvl_ser_get_u32(&r);
    if (r.bad || nt != (uint32_t)n) {
        s = r.bad ? bad(err, "tables") : kvl_err_set(err, KVL_ERR_ARG, "session: file holds %u sequences, %d asked for", nt, n);
        goto out;
    }
    fl = calloc((size_t)n * nl, sizeof *fl);
    cst = calloc((size_t)n * NL * 2, sizeof *cst);
    if (!fl || !cst) {
        s = kvl_err_set(err, KVL_ERR_NOMEM, "session: out of memory");
        goto out;
    }
    for (int ti = 0; ti < n; ti++) {
        for (int i = 0; i < nl; i++) {
            const int layer = i / H, head = i % H;
            const kvi_layer *ly = &p->layers[layer];
            flist *L = &fl[(size_t)ti * nl + i];
            const uint32_t len = kvl_ser_get_u32(&r), ns = kvl_ser_get_u32(&r), np = kvl_ser_get_u32(&r);
            if (r.bad) {
                s = bad(err, "tables");
                goto out;
            }
            if (len > (uint32_t)n_ctx) {
                s = kvl_err_set(err, KVL_ERR_ARG, "session: context too small (layer %d head %d holds %u tokens, context %d)",
                                layer, head, len, n_ctx);
                goto out;
            }
            if (np != (len + (uint32_t)P - 1) / (uint32_t)P || ns > np || (ns && !ly->seals)) {
                s = kvl_err_set(err, KVL_ERR_FORMAT, "session: layer %d head %d: %u pages (%u sealed) for %u tokens", layer,
                                head, np, ns, len);
                goto out;
            }
            L->len = (int)len, L->n_sealed = (int)ns, L->n_pages = (int)np;
            L->idx = kvl_ser_get(&r, (size_t)np * 4);
            if (!L->idx) {
                s = bad(err, "tables");
                goto out;
            }
            for (uint32_t j = 0; j < np; j++) {
                const uint32_t v = rd32(L->idx + 4 * j);
                const int want = j < ns ? ly->seal_cls : ly->open_cls;
                if (v >= n_fp || fp[v].cls != want || fp[v].refs == UINT32_MAX) {
                    s = kvl_err_set(err, KVL_ERR_FORMAT, "session: layer %d head %d page %u: bad page %u", layer, head, j, v);
                    goto out;
                }
                const int rows = (int)(len - j * (uint32_t)P) < P ? (int)(len - j * (uint32_t)P) : P;
                if (rows > fp[v].rows) fp[v].rows = rows;
                fp[v].refs++;
            }
        }
        for (int l = 0; l < NL; l++)
            for (int side = 0; side < 2; side++) {
                const uint64_t bl = kvl_ser_get_u64(&r);
                const size_t want = (side ? p->layers[l].vseq_bytes : p->layers[l].kseq_bytes) * (size_t)H;
                if (r.bad || bl != want) {
                    s = r.bad ? bad(err, "tables")
                              : kvl_err_set(err, KVL_ERR_FORMAT, "session: layer %d %s codec state is %llu bytes, expected %zu",
                                            l, side ? "V" : "K", (unsigned long long)bl, want);
                    goto out;
                }
                cst[((size_t)ti * NL + l) * 2 + side] = kvl_ser_get(&r, want);
                if (r.bad) {
                    s = bad(err, "tables");
                    goto out;
                }
            }
    }
    if (kvl_ser_left(&r)) {
        s = bad(err, "tables");
        goto out;
    }
    if (pstate_len) {
        if (!(plen = malloc((size_t)n * nl * sizeof *plen))) {
            s = kvl_err_set(err, KVL_ERR_NOMEM, "session: out of memory");
            goto out;
        }
        for (size_t i = 0; i < (size_t)n * nl; i++) plen[i] = fl[i].len;
        if ((s = kvi_ser_policy_state_check(pstate, pstate_len, t, n, plen, n_ctx, err))) goto out;
    }

    /* every page referenced; positions and codec metadata of the rows in use */
    size_t need = 0;
    int64_t per_cls[KVI_MAX_CLASSES] = {0};
    for (uint32_t i = 0; i < n_fp; i++) {
        const kvi_class *c = &p->cls[fp[i].cls];
        if (!fp[i].refs) {
            s = kvl_err_set(err, KVL_ERR_FORMAT, "session: page %u is not referenced", i);
            goto out;
        }
        for (int k = 0; k < fp[i].rows; k++) {
            const int32_t pos = (int32_t)rd32(fp[i].mem + 4 * (size_t)k);
            if (pos < 0 || pos >= n_ctx) {
                s = kvl_err_set(err, KVL_ERR_FORMAT, "session: page %u row %d: position %d outside [0, %d)", i, k, (int)pos,
                                n_ctx);
                goto out;
            }
        }
        const int rows = c->sealed ? P : fp[i].rows;
        if (!c->fk->validate || c->fk->validate(fp[i].mem + c->koff, D, P, rows) ||
            !c->fv->validate || c->fv->validate(fp[i].mem + c->voff, D, P, rows)) {
            s = kvl_err_set(err, KVL_ERR_FORMAT, "session: page %u: invalid %s/%s codec metadata (non-finite scale or bad index)",
                            i, c->fk->name, c->fv->name);
            goto out;
        }
        need += c->page_bytes;
        per_cls[fp[i].cls]++;
    }

    /* allocate everything that can fail before a page is taken */
    arr = calloc((size_t)n * nl, sizeof *arr);
    if (!arr) {
        s = kvl_err_set(err, KVL_ERR_NOMEM, "session: out of memory");
        goto out;
    }
    for (size_t i = 0; i < (size_t)n * nl; i++)
        if (fl[i].n_pages && !(arr[i] = malloc((size_t)fl[i].n_pages * sizeof **arr))) {
            s = kvl_err_set(err, KVL_ERR_NOMEM, "session: out of memory");
            goto out;
        }
    for (int ti = 0; ti < n; ti++)
        for (int l = 0; l < NL; l++) {
            int mx = 0;
            for (int h = 0; h < H; h++)
                if (fl[(size_t)ti * nl + l * H + h].len > mx) mx = fl[(size_t)ti * nl + l * H + h].len;
            if (kvi_stats_reserve(t[ti], l, mx) != KVL_OK) {
                s = kvl_err_set(err, KVL_ERR_NOMEM, "session: out of memory for attention statistics");
                goto out;
            }
        }

    pthread_mutex_lock(&p->mu);
    const size_t budget = p->cfg.budget_bytes, used = p->used_bytes;
    if (used > budget || need > budget - used) {
        pthread_mutex_unlock(&p->mu);
        s = kvl_err_set(err, KVL_ERR_NOMEM, "session: KV budget too small (file needs %zu bytes, %zu of %zu free)", need,
                        used > budget ? 0 : budget - used, budget);
        goto out;
    }
    for (int c = 0; c < p->n_cls; c++)
        if (per_cls[c] && (s = kvi_pool_reserve(p, c, per_cls[c], err)) != KVL_OK) {
            pthread_mutex_unlock(&p->mu);
            goto out;
        }
    for (uint32_t i = 0; i < n_fp; i++) {
        fp[i].r = kvi_page_take(p, fp[i].cls);
        memcpy(fp[i].r.mem, fp[i].mem, p->cls[fp[i].cls].page_bytes);
        *kvi_page_ref(p, fp[i].r.id) = fp[i].refs;
    }
    pthread_mutex_unlock(&p->mu);
    for (int ti = 0; ti < n; ti++) {
        kvl_kv_table *T = t[ti];
        for (int i = 0; i < nl; i++) {
            const flist *L = &fl[(size_t)ti * nl + i];
            kvlist *d = &T->lists[i];
            free(d->pages);
            d->pages = arr[(size_t)ti * nl + i];
            arr[(size_t)ti * nl + i] = NULL;
            d->cap_pages = d->n_pages = L->n_pages;
            d->len = L->len;
            d->n_sealed = L->n_sealed;
            for (int j = 0; j < L->n_pages; j++) {
                d->pages[j] = fp[rd32(L->idx + 4 * (size_t)j)].r;
                T->bytes += kvi_pref_bytes(p, d->pages[j]);
            }
            T->n_pages += L->n_pages;
        }
        for (int l = 0; l < NL; l++)
            for (int side = 0; side < 2; side++) {
                const uint8_t *src = cst[((size_t)ti * NL + l) * 2 + side];
                const size_t sb = (side ? p->layers[l].vseq_bytes : p->layers[l].kseq_bytes) * (size_t)H;
                if (sb && T->cst && T->cst[l * 2 + side]) memcpy(T->cst[l * 2 + side], src, sb);
            }
        if (T->stat_flags) kvl_kv_table_stats_reset(T);
        kvi_table_note_bytes(T);
    }
    if (pstate_len) kvi_ser_policy_state_apply(pstate, pstate_len, t, n, plen, n_ctx);
    s = KVL_OK;
out:
    if (arr)
        for (size_t i = 0; i < (size_t)n * nl; i++) free(arr[i]);
    free(arr);
    free(fp);
    free(fl);
    free(cst);
    free(plen);
    return s;
}

kvl_status kvl_kv_ser_config(const kvl_ser_file *f, char *k, char *v, char *layers, size_t cap, int *page_tokens,
                             kvl_err *err) {
    const kvl_ser_section *sc = kvl_kv_ser_find(f, KVL_SER_KV_CONFIG);
    if (!sc) return kvl_err_set(err, KVL_ERR_FORMAT, "session: missing kv-config section");
    if (cap < SPEC_MAX + 1) return kvl_err_set(err, KVL_ERR_ARG, "session: spec buffers too small");
    kvl_ser_rd r = {sc->data, sc->len, 0, 0};
    uint32_t g[6];
    for (int i = 0; i < 6; i++) g[i] = kvl_ser_get_u32(&r);
    if (r.bad || g[0] == 0 || g[3] == 0 || g[3] > 4096) return bad(err, "kv-config");
    *page_tokens = (int)g[3];
    size_t o = 0;
    layers[0] = 0;
    for (uint32_t l = 0; l < g[0]; l++)
        for (int side = 0; side < 2; side++) {
            size_t n;
            const char *sp = kvl_ser_get_str(&r, SPEC_MAX, &n);
            if (r.bad || memchr(sp, 0, n) || memchr(sp, ';', n)) return bad(err, "kv-config");
            char *first = side ? v : k;
            if (l == 0) {
                memcpy(first, sp, n);
                first[n] = 0;
            } else if (!streq(sp, n, first)) {
                const int w = snprintf(layers + o, cap - o, "%s%c%u=%.*s", o ? ";" : "", side ? 'v' : 'k', l, (int)n, sp);
                if (w < 0 || (size_t)w >= cap - o) return kvl_err_set(err, KVL_ERR_ARG, "session: layer overrides too long");
                o += (size_t)w;
            }
        }
    return KVL_OK;
}

int kvl_kv_ser_n_tables(const kvl_ser_file *f) {
    const kvl_ser_section *s = kvl_kv_ser_find(f, KVL_SER_TABLES);
    if (!s || s->len < 4) return -1;
    const uint32_t n = rd32(s->data);
    return n > 0 && n <= 1u << 20 ? (int)n : -1;
}

/* ---- description (kvlite kv info) --------------------------------------------------------- */

kvl_status kvl_kv_ser_describe(const kvl_ser_file *f, kvl_ser_buf *b, kvl_err *err) {
    const kvl_ser_section *sc = kvl_kv_ser_find(f, KVL_SER_KV_CONFIG), *sp = kvl_kv_ser_find(f, KVL_SER_POLICY),
                          *spg = kvl_kv_ser_find(f, KVL_SER_PAGES), *st = kvl_kv_ser_find(f, KVL_SER_TABLES);
    if (!sc || !sp || !spg || !st) return kvl_err_set(err, KVL_ERR_FORMAT, "session: missing KV section");
    kvl_ser_rd r = {sc->data, sc->len, 0, 0};
    uint32_t g[6];
    for (int i = 0; i < 6; i++) g[i] = kvl_ser_get_u32(&r);
    if (r.bad || g[0] == 0 || g[0] > 4096 || g[1] == 0 || g[1] > 4096 || g[3] == 0 || g[5] > KVI_MAX_CLASSES)
        return bad(err, "kv-config");
    kvl_ser_printf(b, "kv: %u layers, %u kv-heads, head_dim %u, %u tokens per page, saved with context %u\n", g[0], g[1],
                   g[2], g[3], g[4]);
    const char *pk = NULL, *pv = NULL;
    size_t pkn = 0, pvn = 0;
    uint32_t run0 = 0;
    for (uint32_t l = 0; l < g[0]; l++) {
        size_t nk, nv;
        const char *k = kvl_ser_get_str(&r, SPEC_MAX, &nk), *v = kvl_ser_get_str(&r, SPEC_MAX, &nv);
        if (r.bad) return bad(err, "kv-config");
        if (l > 0 && !(nk == pkn && nv == pvn && !memcmp(k, pk, nk) && !memcmp(v, pv, nv))) {
            kvl_ser_printf(b, "  layers %u-%u: K %.*s, V %.*s\n", run0, l - 1, (int)pkn, pk, (int)pvn, pv);
            run0 = l;
        }
        pk = k, pkn = nk, pv = v, pvn = nv;
    }
    kvl_ser_printf(b, "  layers %u-%u: K %.*s, V %.*s\n", run0, g[0] - 1, (int)pkn, pk ? pk : "", (int)pvn, pv ? pv : "");
    uint32_t pbytes[KVI_MAX_CLASSES];
    for (uint32_t c = 0; c < g[5]; c++) {
        size_t a, bb;
        const char *fk = kvl_ser_get_str(&r, SPEC_MAX, &a), *fv = kvl_ser_get_str(&r, SPEC_MAX, &bb);
        uint32_t v[6];
        for (int i = 0; i < 6; i++) v[i] = kvl_ser_get_u32(&r);
        if (r.bad || v[1] < 64 || v[1] > (1u << 28)) return bad(err, "kv-config");
        pbytes[c] = v[1];
        kvl_ser_printf(b, "  page class %u: K %.*s, V %.*s, %s, %u bytes\n", c, (int)a, fk, (int)bb, fv,
                       v[0] ? "sealed" : "open", v[1]);
    }
    if (kvl_ser_left(&r)) return bad(err, "kv-config");
    r = (kvl_ser_rd){sp->data, sp->len, 0, 0};
    size_t n;
    const char *pol = kvl_ser_get_str(&r, SPEC_MAX, &n);
    const uint64_t psl = kvl_ser_get_u64(&r);
    if (r.bad || psl != kvl_ser_left(&r)) return bad(err, "policy");
    kvl_ser_printf(b, "policy: %.*s (%llu bytes of state)\n", (int)n, pol, (unsigned long long)psl);
    r = (kvl_ser_rd){spg->data, spg->len, 0, 0};
    const uint32_t n_fp = kvl_ser_get_u32(&r);
    uint64_t per[KVI_MAX_CLASSES] = {0}, bytes = 0;
    for (uint32_t i = 0; i < n_fp && !r.bad; i++) {
        const uint32_t c = kvl_ser_get_u32(&r);
        if (r.bad || c >= g[5]) return bad(err, "pages");
        if (!kvl_ser_get(&r, pbytes[c])) return bad(err, "pages");
        per[c]++;
        bytes += pbytes[c];
    }
    if (r.bad || kvl_ser_left(&r)) return bad(err, "pages");
    kvl_ser_printf(b, "pages: %u distinct (%llu bytes)", n_fp, (unsigned long long)bytes);
    for (uint32_t c = 0; c < g[5]; c++) kvl_ser_printf(b, "%s class %u: %llu", c ? "," : ";", c, (unsigned long long)per[c]);
    kvl_ser_printf(b, "\n");
    r = (kvl_ser_rd){st->data, st->len, 0, 0};
    const uint32_t nt = kvl_ser_get_u32(&r);
    if (r.bad) return bad(err, "tables");
    for (uint32_t ti = 0; ti < nt; ti++) {
        uint64_t refs = 0, sum = 0, stb = 0;
        uint32_t mn = UINT32_MAX, mx = 0;
        for (uint64_t i = 0; i < (uint64_t)g[0] * g[1]; i++) {
            const uint32_t len = kvl_ser_get_u32(&r);
            kvl_ser_get_u32(&r);
            const uint32_t np = kvl_ser_get_u32(&r);
            if (r.bad || !kvl_ser_get(&r, (size_t)np * 4)) return bad(err, "tables");
            refs += np, sum += len;
            if (len < mn) mn = len;
            if (len > mx) mx = len;
        }
        for (uint32_t l = 0; l < 2 * g[0]; l++) {
            const uint64_t bl = kvl_ser_get_u64(&r);
            if (r.bad || bl > kvl_ser_left(&r)) return bad(err, "tables");
            kvl_ser_get(&r, (size_t)bl);
            stb += bl;
        }
        kvl_ser_printf(b, "sequence %u: %llu page references, tokens per (layer, kv-head) %u..%u (mean %.1f), codec state %llu bytes\n",
                       ti, (unsigned long long)refs, mn, mx, (double)sum / ((double)g[0] * g[1]), (unsigned long long)stb);
    }
    if (kvl_ser_left(&r)) return bad(err, "tables");
    return KVL_OK;
}

/* ---- prefix chunks (engine/prefix.c) ------------------------------------------------------ */

int kvl_kv_chunk_ready(const kvl_kv_table *t, int page0, int n_pages) {
    const kvl_kv_pool *p = t->pool;
    if (p->has_seq_state || page0 < 0 || n_pages <= 0 || t->txn) return 0;
    for (int i = 0; i < kvi_n_lists(p); i++) {
        const kvlist *L = &t->lists[i];
        if (L->n_pages < page0 + n_pages || L->len < (page0 + n_pages) * p->P) return 0;
        if (p->layers[i / p->cfg.n_head_kv].seals && L->n_sealed < page0 + n_pages) return 0;
    }
    return 1;
}

void kvl_kv_chunk_write(kvl_ser_buf *b, const kvl_kv_table *t, int page0, int n_pages) {
    const kvl_kv_pool *p = t->pool;
    for (int i = 0; i < kvi_n_lists(p); i++)
        for (int j = page0; j < page0 + n_pages; j++) {
            const pref r = t->lists[i].pages[j];
            kvl_ser_put_u32(b, r.id >> KVI_CLS_SHIFT);
            kvl_ser_put(b, r.mem, kvi_cls(p, r.id)->page_bytes);
        }
}

kvl_status kvl_kv_chunk_load(kvl_kv_pool *p, kvl_kv_table *t, const uint8_t *const *payload, const size_t *len, int n,
                             int n_pages, int n_ctx, kvl_err *err) {
    const int nl = kvi_n_lists(p), NL = p->cfg.n_layer, H = p->cfg.n_head_kv;
    if (n <= 0 || n_pages <= 0 || p->has_seq_state || (int64_t)n * n_pages * p->P > n_ctx)
        return kvl_err_set(err, KVL_ERR_ARG, "prefix: bad chunk load (%d chunks of %d pages)", n, n_pages);
    const uint64_t total = (uint64_t)n * (uint64_t)nl * (uint64_t)n_pages;
    if (total > UINT32_MAX / 2) return kvl_err_set(err, KVL_ERR_ARG, "prefix: too many pages");
    kvl_ser_buf b = {0};
    write_config(&b, p, n_ctx, NULL, 0);
    size_t at = kvl_ser_section_begin(&b, KVL_SER_PAGES);
    kvl_ser_put_u32(&b, (uint32_t)total);
    for (int c = 0; c < n; c++) kvl_ser_put(&b, payload[c], len[c]);
    kvl_ser_section_end(&b, at);
    at = kvl_ser_section_begin(&b, KVL_SER_TABLES);
    kvl_ser_put_u32(&b, 1);
    const uint32_t np = (uint32_t)n * (uint32_t)n_pages;
    for (int i = 0; i < nl; i++) {
        kvl_ser_put_u32(&b, np * (uint32_t)p->P);
        kvl_ser_put_u32(&b, p->layers[i / H].seals ? np : 0);
        kvl_ser_put_u32(&b, np);
        for (int c = 0; c < n; c++)
            for (int j = 0; j < n_pages; j++)
                kvl_ser_put_u32(&b, (uint32_t)(((uint64_t)c * nl + (uint64_t)i) * (uint64_t)n_pages + (uint64_t)j));
    }
    for (int l = 0; l < 2 * NL; l++) kvl_ser_put_u64(&b, 0);
    kvl_ser_section_end(&b, at);
    if (b.oom) {
        free(b.p);
        return kvl_err_set(err, KVL_ERR_NOMEM, "prefix: out of memory");
    }
    /* sections of the assembled buffer (written here: no framing to check) */
    kvl_ser_file f;
    memset(&f, 0, sizeof f);
    for (size_t off = 0; off + KVL_SER_SECTION_BYTES <= b.n && f.n_sec < KVL_SER_MAX_SECTIONS;) {
        const size_t sl = (size_t)rd64(b.p + off + 8);
        f.sec[f.n_sec++] = (kvl_ser_section){rd32(b.p + off), b.p + off + KVL_SER_SECTION_BYTES, sl};
        off += KVL_SER_SECTION_BYTES + sl;
    }
    kvl_kv_table *one[1] = {t};
    const kvl_status s = kvl_kv_ser_load(p, &f, one, 1, n_ctx, err);
    free(b.p);
    return s;
}
