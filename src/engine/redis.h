/* Minimal Redis client for the Redis tier of sessions and the prefix store
 * (src/engine/redis.c, over hiredis): a URL redis://HOST[:PORT][/DB],
 * connect and command timeouts, GET / SET / EXISTS / DEL of binary values,
 * SCAN by key prefix (never KEYS). A broken connection is reconnected once
 * per command; after a failure the handle is "down" and does not try to
 * connect again before retry_ms has passed, so a dead server costs one
 * refused connection per retry interval, not one per request. The first
 * failure of an outage is reported once through the log callback (if set),
 * and the first success after it once more ("reconnected").
 * Built without hiredis (KVL_HAVE_HIREDIS undefined), kvl_redis_create
 * fails with "built without hiredis". One handle is used by one thread at a
 * time (the owners serialize calls). */
#ifndef KVL_ENGINE_REDIS_H
#define KVL_ENGINE_REDIS_H

#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

#define KVL_REDIS_URL_MAX 256

typedef struct kvl_redis kvl_redis;

typedef struct kvl_redis_params {
    int connect_ms; /* connection timeout (<= 0: 500) */
    int command_ms; /* per socket read/write timeout of a command (<= 0: 2000) */
    int retry_ms;   /* after a failure, no new connection attempt for this long (0: 1000; < 0: none) */
    void (*log)(void *user, const char *msg); /* once per outage and recovery; may be NULL */
    void *log_user;
} kvl_redis_params;

/* 1 when s names a Redis store (starts with "redis://"). */
int kvl_redis_is_url(const char *s);

/* Parse "redis://HOST[:PORT][/DB]": HOST a name of [A-Za-z0-9.-] or an IPv6
 * address in brackets, PORT 1..65535 (default 6379), DB 0..65535 (default
 * 0). host: cap bytes. KVL_ERR_ARG with a message naming the bad part. */
kvl_status kvl_redis_url_parse(const char *url, char *host, size_t cap, int *port, int *db, kvl_err *err);

/* A handle for url (parsed now; not connected: the first command, or
 * kvl_redis_ping, connects). par may be NULL (defaults). */
kvl_status kvl_redis_create(const char *url, const kvl_redis_params *par, kvl_redis **out, kvl_err *err);
void kvl_redis_free(kvl_redis *r);
/* The URL the handle was made for. */
const char *kvl_redis_url(const kvl_redis *r);

/* Connect now if not connected and PING. */
kvl_status kvl_redis_ping(kvl_redis *r, kvl_err *err);

/* GET key: on KVL_OK *val / *len point at the value (NULL / 0 when the key
 * does not exist) inside a reply held by *hold until kvl_redis_release. */
kvl_status kvl_redis_get(kvl_redis *r, const char *key, const uint8_t **val, size_t *len, void **hold, kvl_err *err);
void kvl_redis_release(void *hold);
/* SET key val [len] (one command: a reader sees the old or the new value, never part). */
kvl_status kvl_redis_set(kvl_redis *r, const char *key, const void *val, size_t len, kvl_err *err);
/* *exists = 1 when key exists. */
kvl_status kvl_redis_exists(kvl_redis *r, const char *key, int *exists, kvl_err *err);
/* DEL key; *deleted (may be NULL) = 1 when it existed. */
kvl_status kvl_redis_del(kvl_redis *r, const char *key, int *deleted, kvl_err *err);
/* cb(key, key_len, user) for each key starting with prefix (SCAN with MATCH
 * on the escaped prefix; a key may be reported twice if the keyspace is
 * rehashed meanwhile, as SCAN guarantees no more); a non-zero return stops. */
kvl_status kvl_redis_scan(kvl_redis *r, const char *prefix, int (*cb)(const char *key, size_t len, void *user),
                          void *user, kvl_err *err);

/* ---- sessions in Redis (engine/session_redis.c; kvl_session_* dispatch
 * here when their store is a redis:// URL) ---- */
#include "kvlite.h"
kvl_status kvl_session_redis_save(kvl_ctx *c, const kvl_seq *s, const char *url, const char *name,
                                  const kvl_chat_msg *msgs, int n_msgs);
kvl_status kvl_session_redis_load(kvl_ctx *c, const char *url, const char *name, kvl_seq **out, kvl_chat_msg **msgs,
                                  int *n_msgs);
/* The stored bytes (malloc'd) in *buf / *len; *buf NULL when missing. */
kvl_status kvl_session_redis_read(const char *url, const char *name, void **buf, size_t *len, kvl_err *e);
kvl_status kvl_session_redis_list(const char *url, int (*cb)(const char *name, void *user), void *user, kvl_err *e);
kvl_status kvl_session_redis_delete(const char *url, const char *name, kvl_err *e);

#endif
