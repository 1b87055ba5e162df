/* Sessions in Redis (include/kvlite.h, "sessions"; the store argument of
 * kvl_session_* is a redis:// URL): session NAME is the value of key
 * "kvlite:session:NAME", the same self-contained bytes as a session file
 * (kvl_seqs_save: header, CRC32C per section). A save is one SET of the
 * whole buffer, which Redis applies only once it has received every byte,
 * so a reader sees the previous session or the new one, never a part, and a
 * writer killed mid-transfer leaves the previous committed turn in place.
 * Loads go through kvl_seqs_load's hostile-input checks: a garbage or
 * truncated value is rejected with a message and nothing is loaded. Each
 * call opens its own connection (connect 500 ms, command 2 s timeouts). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "engine/redis.h"

#define KEY_PREFIX "kvlite:session:"

static kvl_status open_store(const char *url, const char *name, char *key, size_t cap, kvl_redis **r, kvl_err *e) {
    *r = NULL;
    if (name && !kvl_session_name_ok(name))
        return kvl_err_set(e, KVL_ERR_ARG, "session: invalid name '%.80s' (1-64 of [A-Za-z0-9._-], not starting with '.')",
                           name);
    if (name) snprintf(key, cap, KEY_PREFIX "%s", name);
    kvl_redis_params par = {0};
    par.retry_ms = -1;
    return kvl_redis_create(url, &par, r, e);
}

static void prefix_err(kvl_err *e, const char *name) {
    char msg[sizeof e->msg];
    snprintf(msg, sizeof msg, "%s", e->msg);
    kvl_err_set(e, e->status, "session %s: %s", name, msg);
}

kvl_status kvl_session_redis_save(kvl_ctx *c, const kvl_seq *s, const char *url, const char *name,
                                  const kvl_chat_msg *msgs, int n_msgs) {
    char key[96];
    kvl_redis *r = NULL;
    kvl_status st = open_store(url, name, key, sizeof key, &r, &c->err);
    if (st) return st;
    void *buf = NULL;
    size_t len = 0;
    if ((st = kvl_seqs_save(&s, 1, msgs, n_msgs, &buf, &len)) == KVL_OK) {
        if ((st = kvl_redis_set(r, key, buf, len, &c->err))) prefix_err(&c->err, name);
        free(buf);
    }
    kvl_redis_free(r);
    return st;
}

kvl_status kvl_session_redis_load(kvl_ctx *c, const char *url, const char *name, kvl_seq **out, kvl_chat_msg **msgs,
                                  int *n_msgs) {
    char key[96];
    kvl_redis *r = NULL;
    kvl_status st = open_store(url, name, key, sizeof key, &r, &c->err);
    if (st) return st;
    const uint8_t *val = NULL;
    size_t len = 0;
    void *hold = NULL;
    st = kvl_redis_get(r, key, &val, &len, &hold, &c->err);
    if (st) prefix_err(&c->err, name);
    else if (!val) st = kvl_err_set(&c->err, KVL_ERR_IO, "session %s: not in %s", name, url);
    if (st == KVL_OK) {
        kvl_seq *one[1] = {NULL};
        int n = 0;
        st = kvl_seqs_load(c, val, len, one, 1, &n, msgs, n_msgs);
        if (st == KVL_OK) *out = one[0];
    }
    kvl_redis_release(hold);
    kvl_redis_free(r);
    return st;
}

kvl_status kvl_session_redis_read(const char *url, const char *name, void **buf, size_t *len, kvl_err *e) {
    char key[96];
    kvl_redis *r = NULL;
    kvl_status st = open_store(url, name, key, sizeof key, &r, e);
    if (st) return st;
    const uint8_t *val = NULL;
    void *hold = NULL;
    st = kvl_redis_get(r, key, &val, len, &hold, e);
    if (st) prefix_err(e, name);
    else if (val) {
        *buf = malloc(*len ? *len : 1);
        if (!*buf) st = kvl_err_set(e, KVL_ERR_NOMEM, "session %s: out of memory for %zu bytes", name, *len);
        else memcpy(*buf, val, *len);
    } else {
        *len = 0;
    }
    kvl_redis_release(hold);
    kvl_redis_free(r);
    return st;
}

typedef struct list_ctx {
    int (*cb)(const char *name, void *user);
    void *user;
} list_ctx;

static int list_one(const char *key, size_t len, void *user) {
    const list_ctx *l = user;
    const size_t pl = strlen(KEY_PREFIX);
    if (len <= pl || len - pl > 64) return 0;
    char name[65];
    memcpy(name, key + pl, len - pl);
    name[len - pl] = 0;
    if (strlen(name) != len - pl || !kvl_session_name_ok(name)) return 0;
    return l->cb(name, l->user);
}

kvl_status kvl_session_redis_list(const char *url, int (*cb)(const char *name, void *user), void *user, kvl_err *e) {
    kvl_redis *r = NULL;
    kvl_status st = open_store(url, NULL, NULL, 0, &r, e);
    if (st) return st;
    list_ctx l = {cb, user};
    st = kvl_redis_scan(r, KEY_PREFIX, list_one, &l, e);
    kvl_redis_free(r);
    return st;
}

kvl_status kvl_session_redis_delete(const char *url, const char *name, kvl_err *e) {
    char key[96];
    kvl_redis *r = NULL;
    kvl_status st = open_store(url, name, key, sizeof key, &r, e);
    if (st) return st;
    int deleted = 0;
    st = kvl_redis_del(r, key, &deleted, e);
    if (st) prefix_err(e, name);
    else if (!deleted) st = kvl_err_set(e, KVL_ERR_IO, "session %s: not in %s", name, url);
    kvl_redis_free(r);
    return st;
}
