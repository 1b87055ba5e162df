/* Sessions (include/kvlite.h, "sessions"): sequences to bytes and back at
 * the engine level — the model identity in the header, each sequence's
 * position and token ids (SEQS section), chat messages (MESSAGES), around
 * the KV sections of kv/serial.c — and session files in a directory,
 * written atomically (temporary dot-file, fsync, rename, fsync of the
 * directory). The byte layout is in docs/ARCHITECTURE.md. A store that is
 * a redis:// URL goes to engine/session_redis.c instead. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/engine.h"
#include "engine/redis.h"
#include "kv/serial.h"

#define ROLE_MAX 64
#define SESSION_EXT ".kvls"

static void copy_err(const kvl_err *e, char *buf, size_t len) {
    if (buf && len) snprintf(buf, len, "%s", e->msg);
}

/* ---- bytes -------------------------------------------------------------------------------- */

kvl_status kvl_seqs_save(const kvl_seq *const *seqs, int n, const kvl_chat_msg *msgs, int n_msgs, void **buf,
                         size_t *len) {
    if (!buf || !len || !seqs || n <= 0 || !seqs[0] || n_msgs < 0 || (n_msgs && !msgs)) return KVL_ERR_ARG;
    *buf = NULL;
    *len = 0;
    kvl_ctx *c = seqs[0]->c;
    if (c->freed) return KVL_ERR_ARG;
    kvl_err_clear(&c->err);
    if (c->cuda) return kvl_err_set(&c->err, KVL_ERR_UNSUPPORTED, "session: a cuda context keeps its KV pages on the device (no save/load yet)");
    const kvl_kv_table **t = malloc((size_t)n * sizeof *t);
    if (!t) return kvl_err_set(&c->err, KVL_ERR_NOMEM, "session: out of memory");
    for (int i = 0; i < n; i++) {
        if (!seqs[i] || seqs[i]->c != c) {
            free(t);
            return kvl_err_set(&c->err, KVL_ERR_ARG, "session: sequences of different contexts");
        }
        t[i] = seqs[i]->t;
    }
    for (int i = 0; i < n_msgs; i++)
        if (!msgs[i].role || !msgs[i].content || strlen(msgs[i].role) > ROLE_MAX) {
            free(t);
            return kvl_err_set(&c->err, KVL_ERR_ARG, "session: message %d has no role/content or a role over %d bytes", i,
                               ROLE_MAX);
        }
    kvl_ser_buf b = {0};
    kvl_ser_header(&b, c->m->identity);
    kvl_status st = kvl_kv_ser_write(&b, t, n, c->p.n_ctx, &c->err);
    free(t);
    if (st == KVL_OK) {
        size_t at = kvl_ser_section_begin(&b, KVL_SER_SEQS);
        kvl_ser_put_u32(&b, (uint32_t)n);
        for (int i = 0; i < n; i++) {
            kvl_ser_put_u32(&b, (uint32_t)seqs[i]->pos);
            kvl_ser_put_u32(&b, (uint32_t)seqs[i]->pos);
            for (int j = 0; j < seqs[i]->pos; j++) kvl_ser_put_u32(&b, (uint32_t)seqs[i]->toks[j]);
        }
        kvl_ser_section_end(&b, at);
        if (msgs) {
            at = kvl_ser_section_begin(&b, KVL_SER_MESSAGES);
            kvl_ser_put_u32(&b, (uint32_t)n_msgs);
            for (int i = 0; i < n_msgs; i++) {
                kvl_ser_put_str(&b, msgs[i].role, strlen(msgs[i].role));
                kvl_ser_put_str(&b, msgs[i].content, strlen(msgs[i].content));
            }
            kvl_ser_section_end(&b, at);
        }
        st = kvl_ser_finish(&b, &c->err);
    }
    if (st) {
        free(b.p);
        return st;
    }
    *buf = b.p;
    *len = b.n;
    return KVL_OK;
}

kvl_status kvl_seq_save(const kvl_seq *s, void **buf, size_t *len) {
    if (!s) return KVL_ERR_ARG;
    return kvl_seqs_save(&s, 1, NULL, 0, buf, len);
}

/* MESSAGES section -> one malloc'd block: kvl_chat_msg [n], then the strings. */
static kvl_status parse_msgs(const kvl_ser_section *s, kvl_chat_msg **out, int *n_out, kvl_err *err) {
    kvl_ser_rd r = {s->data, s->len, 0, 0};
    const uint32_t n = kvl_ser_get_u32(&r);
    if (r.bad || n > kvl_ser_left(&r) / 8 || n > (1u << 24))
        return kvl_err_set(err, KVL_ERR_FORMAT, "session: malformed messages section");
    /* strings total at most the section's bytes: the block is bounded by the file */
    const size_t bytes = (size_t)n * sizeof(kvl_chat_msg) + s->len + 2 * (size_t)n;
    char *blk = malloc(bytes ? bytes : 1);
    if (!blk) return kvl_err_set(err, KVL_ERR_NOMEM, "session: out of memory for %u messages", n);
    kvl_chat_msg *m = (kvl_chat_msg *)(void *)blk;
    char *w = blk + (size_t)n * sizeof *m;
    for (uint32_t i = 0; i < n; i++) {
        size_t rl, cl;
        const char *role = kvl_ser_get_str(&r, ROLE_MAX, &rl);
        const char *content = kvl_ser_get_str(&r, s->len, &cl);
        if (r.bad || memchr(role, 0, rl) || memchr(content, 0, cl)) {
            free(blk);
            return kvl_err_set(err, KVL_ERR_FORMAT, "session: malformed message %u", i);
        }
        memcpy(w, role, rl);
        w[rl] = 0;
        m[i].role = w;
        w += rl + 1;
        memcpy(w, content, cl);
        w[cl] = 0;
        m[i].content = w;
        w += cl + 1;
    }
    if (kvl_ser_left(&r)) {
        free(blk);
        return kvl_err_set(err, KVL_ERR_FORMAT, "session: malformed messages section");
    }
    *out = m;
    *n_out = (int)n;
    return KVL_OK;
}

/* Parse, check and load: into `into` (a fresh sequence, n must be 1) or
 * into new sequences out [*n_out]. */
static kvl_status load_impl(kvl_ctx *c, const void *buf, size_t len, kvl_seq *into, kvl_seq **out, int cap, int *n_out,
                            kvl_chat_msg **msgs, int *n_msgs) {
    if (n_out) *n_out = 0;
    if (msgs) *msgs = NULL;
    if (n_msgs) *n_msgs = 0;
    if (!c || c->freed) return KVL_ERR_ARG;
    kvl_err_clear(&c->err);
    if (c->cuda) return kvl_err_set(&c->err, KVL_ERR_UNSUPPORTED, "session: a cuda context keeps its KV pages on the device (no save/load yet)");
    const kvl_model *m = c->m;
    kvl_ser_file f;
    kvl_status st = kvl_kv_ser_parse(buf, len, &f, &c->err);
    if (st) return st;
    if (f.identity != m->identity)
        return kvl_err_set(&c->err, KVL_ERR_ARG, "session: model identity differs (file 0x%016llx, model 0x%016llx)",
                           (unsigned long long)f.identity, (unsigned long long)m->identity);
    const kvl_ser_section *ss = kvl_kv_ser_find(&f, KVL_SER_SEQS), *sm = kvl_kv_ser_find(&f, KVL_SER_MESSAGES);
    if (!ss) return kvl_err_set(&c->err, KVL_ERR_FORMAT, "session: missing sequences section");
    kvl_ser_rd r = {ss->data, ss->len, 0, 0};
    const uint32_t n = kvl_ser_get_u32(&r);
    if (r.bad || n == 0) return kvl_err_set(&c->err, KVL_ERR_FORMAT, "session: malformed sequences section");
    if (n > (uint32_t)cap)
        return kvl_err_set(&c->err, KVL_ERR_ARG, "session: file holds %u sequences, room for %d", n, cap);
    const uint8_t *tok[64];
    const uint8_t **toks = n <= 64 ? tok : malloc(n * sizeof *toks);
    uint32_t pos_s[64];
    uint32_t *pos = n <= 64 ? pos_s : malloc(n * sizeof *pos);
    kvl_seq **made = calloc(n, sizeof *made);
    kvl_kv_table **tabs = calloc(n, sizeof *tabs);
    kvl_chat_msg *mb = NULL;
    int nm = 0;
    uint32_t made_n = 0;
    if (!toks || !pos || !made || !tabs) {
        st = kvl_err_set(&c->err, KVL_ERR_NOMEM, "session: out of memory");
        goto out;
    }
    for (uint32_t i = 0; i < n; i++) {
        pos[i] = kvl_ser_get_u32(&r);
        const uint32_t nt = kvl_ser_get_u32(&r);
        if (r.bad || nt != pos[i]) {
            st = kvl_err_set(&c->err, KVL_ERR_FORMAT, "session: sequence %u: malformed position / token count", i);
            goto out;
        }
        if (pos[i] > (uint32_t)c->p.n_ctx) {
            st = kvl_err_set(&c->err, KVL_ERR_ARG, "session: context too small (sequence %u has %u tokens, context %d)", i,
                             pos[i], c->p.n_ctx);
            goto out;
        }
        toks[i] = kvl_ser_get(&r, (size_t)nt * 4);
        if (!toks[i]) {
            st = kvl_err_set(&c->err, KVL_ERR_FORMAT, "session: sequence %u: token ids truncated", i);
            goto out;
        }
        for (uint32_t j = 0; j < nt; j++) {
            int32_t t;
            memcpy(&t, toks[i] + 4 * (size_t)j, 4);
            if (t < 0 || t >= m->n_vocab) {
                st = kvl_err_set(&c->err, KVL_ERR_FORMAT, "session: sequence %u: token id %d at %u out of range [0, %d)", i,
                                 (int)t, j, m->n_vocab);
                goto out;
            }
        }
    }
    if (kvl_ser_left(&r)) {
        st = kvl_err_set(&c->err, KVL_ERR_FORMAT, "session: malformed sequences section");
        goto out;
    }
    if (sm && (st = parse_msgs(sm, &mb, &nm, &c->err))) goto out;
    if (into) {
        if (into->c != c || into->pos != 0 || kvl_kv_table_n_pages(into->t) != 0) {
            st = kvl_err_set(&c->err, KVL_ERR_ARG, "session: load into a fresh sequence only");
            goto out;
        }
        made[0] = into;
        made_n = 1;
    } else {
        for (; made_n < n; made_n++)
            if ((st = kvl_seq_create(c, &made[made_n]))) goto out;
    }
    for (uint32_t i = 0; i < n; i++) {
        if (kvl_seq_reserve_tokens(made[i], (int)pos[i])) {
            st = kvl_err_set(&c->err, KVL_ERR_NOMEM, "session: out of memory for token ids");
            goto out;
        }
        tabs[i] = made[i]->t;
    }
    if ((st = kvl_kv_ser_load(c->pool, &f, tabs, (int)n, c->p.n_ctx, &c->err))) goto out;
    for (uint32_t i = 0; i < n; i++) {
        memcpy(made[i]->toks, toks[i], (size_t)pos[i] * 4);
        made[i]->pos = (int)pos[i];
    }
    if (out)
        for (uint32_t i = 0; i < n; i++) out[i] = made[i];
    if (n_out) *n_out = (int)n;
    if (msgs) *msgs = mb, mb = NULL;
    if (n_msgs) *n_msgs = msgs ? nm : 0;
    made_n = 0; /* handed over */
out:
    if (!into)
        for (uint32_t i = 0; i < made_n; i++) kvl_seq_free(made[i]);
    free(mb);
    if (toks != tok) free(toks);
    if (pos != pos_s) free(pos);
    free(made);
    free(tabs);
    return st;
}

kvl_status kvl_seq_load(kvl_ctx *c, const void *buf, size_t len, kvl_seq **out) {
    if (!out) return KVL_ERR_ARG;
    *out = NULL;
    return load_impl(c, buf, len, NULL, out, 1, NULL, NULL, NULL);
}

kvl_status kvl_seq_load_into(kvl_seq *s, const void *buf, size_t len) {
    if (!s) return KVL_ERR_ARG;
    return load_impl(s->c, buf, len, s, NULL, 1, NULL, NULL, NULL);
}

kvl_status kvl_seqs_load(kvl_ctx *c, const void *buf, size_t len, kvl_seq **out, int cap, int *n_out,
                         kvl_chat_msg **msgs, int *n_msgs) {
    if (!out || cap <= 0) return KVL_ERR_ARG;
    return load_impl(c, buf, len, NULL, out, cap, n_out, msgs, n_msgs);
}

kvl_status kvl_session_describe(const void *buf, size_t len, char **text, char *err, size_t err_len) {
    kvl_err e;
    kvl_err_clear(&e);
    if (!text) return KVL_ERR_ARG;
    *text = NULL;
    kvl_ser_file f;
    kvl_status st = kvl_kv_ser_parse(buf, len, &f, &e);
    kvl_ser_buf b = {0};
    if (st == KVL_OK) {
        kvl_ser_printf(&b, "session file: format version %u, %zu bytes, model identity 0x%016llx\n", f.version, len,
                       (unsigned long long)f.identity);
        kvl_ser_printf(&b, "sections (%d, checksums ok):", f.n_sec);
        static const char *const nm[] = {"", "kv-config", "policy", "pages", "tables", "sequences", "messages"};
        for (int i = 0; i < f.n_sec; i++) kvl_ser_printf(&b, " %s %zu B;", nm[f.sec[i].type], f.sec[i].len);
        kvl_ser_printf(&b, "\n");
        st = kvl_kv_ser_describe(&f, &b, &e);
    }
    const kvl_ser_section *ss = st == KVL_OK ? kvl_kv_ser_find(&f, KVL_SER_SEQS) : NULL;
    if (st == KVL_OK && !ss) st = kvl_err_set(&e, KVL_ERR_FORMAT, "session: missing sequences section");
    if (st == KVL_OK) {
        kvl_ser_rd r = {ss->data, ss->len, 0, 0};
        const uint32_t n = kvl_ser_get_u32(&r);
        for (uint32_t i = 0; i < n && !r.bad; i++) {
            const uint32_t pos = kvl_ser_get_u32(&r), nt = kvl_ser_get_u32(&r);
            if (r.bad || nt != pos || !kvl_ser_get(&r, (size_t)nt * 4)) break;
            kvl_ser_printf(&b, "sequence %u: position %u, %u token ids\n", i, pos, nt);
        }
        if (r.bad || kvl_ser_left(&r)) st = kvl_err_set(&e, KVL_ERR_FORMAT, "session: malformed sequences section");
        if (kvl_kv_ser_n_tables(&f) != (int)n)
            st = kvl_err_set(&e, KVL_ERR_FORMAT, "session: %u sequences but %d page tables", n, kvl_kv_ser_n_tables(&f));
    }
    const kvl_ser_section *sm = st == KVL_OK ? kvl_kv_ser_find(&f, KVL_SER_MESSAGES) : NULL;
    if (sm) {
        kvl_chat_msg *m = NULL;
        int n = 0;
        st = parse_msgs(sm, &m, &n, &e);
        if (st == KVL_OK) {
            kvl_ser_printf(&b, "messages: %d", n);
            for (int i = 0; i < n && i < 16; i++) kvl_ser_printf(&b, "%s%s", i ? ", " : " (", m[i].role);
            kvl_ser_printf(&b, "%s\n", n > 16 ? ", ...)" : n ? ")" : "");
        }
        free(m);
    }
    kvl_ser_put(&b, "", 1);
    if (st == KVL_OK && b.oom) st = kvl_err_set(&e, KVL_ERR_NOMEM, "session: out of memory");
    if (st) {
        free(b.p);
        copy_err(&e, err, err_len);
        return st;
    }
    *text = (char *)b.p;
    return KVL_OK;
}

kvl_status kvl_session_kv_params(const void *buf, size_t len, char *k_spec, char *v_spec, char *layers, size_t cap,
                                 int *page_tokens, int *max_pos, char *err, size_t err_len) {
    kvl_err e;
    kvl_err_clear(&e);
    if (!k_spec || !v_spec || !layers || !page_tokens || !max_pos) return KVL_ERR_ARG;
    kvl_ser_file f;
    kvl_status st = kvl_kv_ser_parse(buf, len, &f, &e);
    if (!st) st = kvl_kv_ser_config(&f, k_spec, v_spec, layers, cap, page_tokens, &e);
    const kvl_ser_section *ss = st ? NULL : kvl_kv_ser_find(&f, KVL_SER_SEQS);
    if (!st && !ss) st = kvl_err_set(&e, KVL_ERR_FORMAT, "session: missing sequences section");
    if (!st) {
        kvl_ser_rd r = {ss->data, ss->len, 0, 0};
        const uint32_t n = kvl_ser_get_u32(&r);
        *max_pos = 0;
        for (uint32_t i = 0; i < n && !r.bad; i++) {
            const uint32_t pos = kvl_ser_get_u32(&r), nt = kvl_ser_get_u32(&r);
            if (r.bad || nt != pos || pos > (1u << 24) || !kvl_ser_get(&r, (size_t)nt * 4)) r.bad = 1;
            else if ((int)pos > *max_pos) *max_pos = (int)pos;
        }
        if (r.bad) st = kvl_err_set(&e, KVL_ERR_FORMAT, "session: malformed sequences section");
    }
    copy_err(&e, err, err_len);
    return st;
}

/* ---- files -------------------------------------------------------------------------------- */

int kvl_session_name_ok(const char *name) {
    if (!name || !name[0] || name[0] == '.') return 0;
    size_t n = 0;
    for (const char *p = name; *p; p++, n++) {
        const char ch = *p;
        if (n >= 64) return 0;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' ||
              ch == '_' || ch == '-'))
            return 0;
    }
    return 1;
}

static kvl_status session_path(const char *dir, const char *name, char *path, size_t cap, kvl_err *e) {
    if (!dir || !dir[0]) return kvl_err_set(e, KVL_ERR_ARG, "session: no directory given");
    if (!kvl_session_name_ok(name))
        return kvl_err_set(e, KVL_ERR_ARG, "session: invalid name '%.80s' (1-64 of [A-Za-z0-9._-], not starting with '.')",
                           name ? name : "(null)");
    const int w = snprintf(path, cap, "%s/%s" SESSION_EXT, dir, name);
    if (w < 0 || (size_t)w >= cap) return kvl_err_set(e, KVL_ERR_ARG, "session: directory path too long");
    return KVL_OK;
}

static kvl_status fsync_dir(const char *dir, kvl_err *e) {
    const int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return kvl_err_set(e, KVL_ERR_IO, "session: cannot open directory %s: %s", dir, strerror(errno));
    const int r = fsync(fd);
    const int en = errno;
    close(fd);
    if (r != 0 && en != EINVAL) return kvl_err_set(e, KVL_ERR_IO, "session: fsync of %s failed: %s", dir, strerror(en));
    return KVL_OK;
}

kvl_status kvl_session_save(kvl_ctx *c, const kvl_seq *s, const char *dir, const char *name, const kvl_chat_msg *msgs,
                            int n_msgs) {
    if (!c || !s || s->c != c) return KVL_ERR_ARG;
    if (kvl_redis_is_url(dir)) return kvl_session_redis_save(c, s, dir, name, msgs, n_msgs);
    char path[4096], tmp[4096];
    kvl_status st = session_path(dir, name, path, sizeof path, &c->err);
    if (st) return st;
    if (snprintf(tmp, sizeof tmp, "%s/.%s" SESSION_EXT ".tmp.XXXXXX", dir, name) >= (int)sizeof tmp)
        return kvl_err_set(&c->err, KVL_ERR_ARG, "session: directory path too long");
    void *buf = NULL;
    size_t len = 0;
    if ((st = kvl_seqs_save(&s, 1, msgs, n_msgs, &buf, &len))) return st;
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        free(buf);
        return kvl_err_set(&c->err, KVL_ERR_IO, "session: cannot create directory %s: %s", dir, strerror(errno));
    }
    const int fd = mkstemp(tmp);
    if (fd < 0) {
        free(buf);
        return kvl_err_set(&c->err, KVL_ERR_IO, "session: cannot create a file in %s: %s", dir, strerror(errno));
    }
    size_t off = 0;
    while (off < len) {
        const ssize_t w = write(fd, (const char *)buf + off, len - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break;
        off += (size_t)w;
    }
    const int en = errno;
    free(buf);
    if (off < len || fsync(fd) != 0) {
        const int en2 = off < len ? en : errno;
        close(fd);
        unlink(tmp);
        return kvl_err_set(&c->err, KVL_ERR_IO, "session: writing %s failed: %s", tmp, strerror(en2));
    }
    if (close(fd) != 0 || rename(tmp, path) != 0) {
        const int en2 = errno;
        unlink(tmp);
        return kvl_err_set(&c->err, KVL_ERR_IO, "session: cannot commit %s: %s", path, strerror(en2));
    }
    return fsync_dir(dir, &c->err);
}

kvl_status kvl_session_load(kvl_ctx *c, const char *dir, const char *name, kvl_seq **out, kvl_chat_msg **msgs,
                            int *n_msgs) {
    if (!c || !out) return KVL_ERR_ARG;
    *out = NULL;
    if (msgs) *msgs = NULL;
    if (n_msgs) *n_msgs = 0;
    if (c->freed) return KVL_ERR_ARG;
    if (kvl_redis_is_url(dir)) return kvl_session_redis_load(c, dir, name, out, msgs, n_msgs);
    char path[4096];
    kvl_status st = session_path(dir, name, path, sizeof path, &c->err);
    if (st) return st;
    const int fd = open(path, O_RDONLY);
    if (fd < 0) return kvl_err_set(&c->err, KVL_ERR_IO, "session %s: cannot open %s: %s", name, path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size < 0 || (uint64_t)sb.st_size > (uint64_t)SIZE_MAX / 2) {
        close(fd);
        return kvl_err_set(&c->err, KVL_ERR_IO, "session %s: %s is not a readable file", name, path);
    }
    const size_t len = (size_t)sb.st_size;
    char *buf = malloc(len ? len : 1);
    if (!buf) {
        close(fd);
        return kvl_err_set(&c->err, KVL_ERR_NOMEM, "session %s: out of memory for %zu bytes", name, len);
    }
    size_t off = 0;
    while (off < len) {
        const ssize_t r = read(fd, buf + off, len - off);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        off += (size_t)r;
    }
    close(fd);
    if (off < len) {
        free(buf);
        return kvl_err_set(&c->err, KVL_ERR_IO, "session %s: short read of %s", name, path);
    }
    kvl_seq *one[1];
    int n = 0;
    st = load_impl(c, buf, len, NULL, one, 1, &n, msgs, n_msgs);
    free(buf);
    if (st == KVL_OK) *out = one[0];
    return st;
}

kvl_status kvl_session_list(const char *dir, int (*cb)(const char *name, void *user), void *user, char *err,
                            size_t err_len) {
    kvl_err e;
    kvl_err_clear(&e);
    if (!dir || !cb) return KVL_ERR_ARG;
    if (kvl_redis_is_url(dir)) {
        const kvl_status st = kvl_session_redis_list(dir, cb, user, &e);
        copy_err(&e, err, err_len);
        return st;
    }
    DIR *d = opendir(dir);
    if (!d) {
        kvl_err_set(&e, KVL_ERR_IO, "session: cannot read directory %s: %s", dir, strerror(errno));
        copy_err(&e, err, err_len);
        return KVL_ERR_IO;
    }
    const size_t xl = strlen(SESSION_EXT);
    struct dirent *de;
    while ((de = readdir(d))) {
        const size_t n = strlen(de->d_name);
        if (n <= xl || n - xl > 64 || strcmp(de->d_name + n - xl, SESSION_EXT)) continue;
        char name[65];
        memcpy(name, de->d_name, n - xl);
        name[n - xl] = 0;
        if (!kvl_session_name_ok(name)) continue;
        if (cb(name, user)) break;
    }
    closedir(d);
    return KVL_OK;
}

kvl_status kvl_session_delete(const char *dir, const char *name, char *err, size_t err_len) {
    kvl_err e;
    kvl_err_clear(&e);
    if (kvl_redis_is_url(dir)) {
        const kvl_status st = kvl_session_redis_delete(dir, name, &e);
        copy_err(&e, err, err_len);
        return st;
    }
    char path[4096];
    kvl_status st = session_path(dir, name, path, sizeof path, &e);
    if (st == KVL_OK && unlink(path) != 0)
        st = kvl_err_set(&e, KVL_ERR_IO, "session %s: cannot delete %s: %s", name, path, strerror(errno));
    if (st == KVL_OK) st = fsync_dir(dir, &e);
    copy_err(&e, err, err_len);
    return st;
}

kvl_status kvl_session_read(const char *store, const char *name, void **buf, size_t *len, char *err, size_t err_len) {
    kvl_err e;
    kvl_err_clear(&e);
    if (!buf || !len) return KVL_ERR_ARG;
    *buf = NULL;
    *len = 0;
    kvl_status st;
    if (kvl_redis_is_url(store)) {
        st = kvl_session_redis_read(store, name, buf, len, &e);
    } else {
        char path[4096];
        st = session_path(store, name, path, sizeof path, &e);
        const int fd = st ? -1 : open(path, O_RDONLY);
        struct stat sb;
        if (st) {
        } else if (fd < 0) {
            if (errno != ENOENT) st = kvl_err_set(&e, KVL_ERR_IO, "session %s: cannot open %s: %s", name, path, strerror(errno));
        } else if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || (uint64_t)sb.st_size > (uint64_t)SIZE_MAX / 2) {
            st = kvl_err_set(&e, KVL_ERR_IO, "session %s: %s is not a readable file", name, path);
        } else if (!(*buf = malloc(sb.st_size ? (size_t)sb.st_size : 1))) {
            st = kvl_err_set(&e, KVL_ERR_NOMEM, "session %s: out of memory for %lld bytes", name, (long long)sb.st_size);
        } else {
            size_t off = 0;
            while (off < (size_t)sb.st_size) {
                const ssize_t r = read(fd, (char *)*buf + off, (size_t)sb.st_size - off);
                if (r < 0 && errno == EINTR) continue;
                if (r <= 0) break;
                off += (size_t)r;
            }
            if (off < (size_t)sb.st_size) {
                st = kvl_err_set(&e, KVL_ERR_IO, "session %s: short read of %s", name, path);
                free(*buf);
                *buf = NULL;
            } else {
                *len = off;
            }
        }
        if (fd >= 0) close(fd);
    }
    copy_err(&e, err, err_len);
    return st;
}
