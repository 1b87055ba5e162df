/* Minimal test harness: CHECK macros count failures; each test binary ends
 * with KVL_TEST_END() printing "N passed, N failed, N skipped" and returning
 * non-zero on failure.
 *
 * Skips: a part of a test that cannot run here (no model, no ../shared/data)
 * calls SKIP("what: why"), which prints one line starting with "skip: ".
 * tests/run.sh counts those lines (shell tests print them too) and, under
 * CI=true, fails the run if there are any. kvl_test_model() finds the model
 * or prints the skip line. */
#ifndef KVL_TEST_H
#define KVL_TEST_H

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

static int kvl_t_pass, kvl_t_fail, kvl_t_skip;

#define CHECK(cond)                                                                      \
    do {                                                                                 \
        if (cond) kvl_t_pass++;                                                          \
        else {                                                                           \
            kvl_t_fail++;                                                                \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);     \
        }                                                                                \
    } while (0)

#define CHECK_MSG(cond, ...)                                                             \
    do {                                                                                 \
        if (cond) kvl_t_pass++;                                                          \
        else {                                                                           \
            kvl_t_fail++;                                                                \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);     \
            fprintf(stderr, __VA_ARGS__);                                                \
            fputc('\n', stderr);                                                         \
        }                                                                                \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                            \
    do {                                                                                 \
        double kvl_a_ = (a), kvl_b_ = (b);                                               \
        if (fabs(kvl_a_ - kvl_b_) <= (tol)) kvl_t_pass++;                                \
        else {                                                                           \
            kvl_t_fail++;                                                                \
            fprintf(stderr, "%s:%d: CHECK_NEAR failed: %s=%g %s=%g tol=%g\n", __FILE__,  \
                    __LINE__, #a, kvl_a_, #b, kvl_b_, (double)(tol));                    \
        }                                                                                \
    } while (0)

#define KVL_TEST_END()                                                                   \
    do {                                                                                 \
        printf("%s: %d passed, %d failed, %d skipped\n", __FILE__, kvl_t_pass, kvl_t_fail, \
               kvl_t_skip);                                                              \
        return kvl_t_fail ? 1 : 0;                                                       \
    } while (0)

/* Print "skip: <message>" on stdout (flushed before later stderr output). */
__attribute__((format(printf, 1, 2))) static inline void kvl_test_skip(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("skip: ", stdout);
    vprintf(fmt, ap);
    va_end(ap);
    fputc('\n', stdout);
    fflush(stdout);
    kvl_t_skip++;
}
#define SKIP(...) kvl_test_skip(__VA_ARGS__)

/* $KVL_MODEL if set and readable, else NULL after SKIP("<what>: ..."). */
static inline const char *kvl_test_model(const char *what) {
    const char *p = getenv("KVL_MODEL");
    struct stat st;
    if (p && *p && stat(p, &st) == 0 && S_ISREG(st.st_mode)) return p;
    SKIP("%s: %s", what, p && *p ? "KVL_MODEL file not found" : "KVL_MODEL not set");
    return NULL;
}

#endif
