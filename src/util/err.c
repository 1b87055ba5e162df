/* Error reporting: status codes with messages. */
#include "util/err.h"

#include <stdarg.h>
#include <stdio.h>

kvl_status kvl_err_set(kvl_err *err, kvl_status status, const char *fmt, ...) {
    if (!err) return status;
    err->status = status;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return status;
}

void kvl_err_clear(kvl_err *err) {
    if (!err) return;
    err->status = KVL_OK;
    err->msg[0] = 0;
}

const char *kvl_status_str(kvl_status s) {
    switch (s) {
    case KVL_OK: return "ok";
    case KVL_ERR_IO: return "io error";
    case KVL_ERR_FORMAT: return "format error";
    case KVL_ERR_UNSUPPORTED: return "unsupported";
    case KVL_ERR_ARG: return "invalid argument";
    case KVL_ERR_NOMEM: return "out of memory";
    case KVL_ERR_CTX_FULL: return "context full";
    case KVL_ERR_INTERNAL: return "internal error";
    }
    return "unknown";
}
