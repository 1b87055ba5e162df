/* AVX2/FMA/F16C kernels for the built-in KV codecs (qk: 8 rows at a time with
 * a transposing horizontal sum; av: accumulator columns held in registers while
 * streaming the page's rows) and a vectorised exp for the online softmax.
 * Compiled with -mavx2 -mfma -mf16c; used only when the CPU reports support. */
#include "kv/codec.h"

#include <math.h>
#include <string.h>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <cpuid.h>
#include <immintrin.h>

static int cpu_ok(void) {
    /* F16C via CPUID leaf 1 (clang's __builtin_cpu_supports lacks "f16c") */
    unsigned a, b, c, d;
    __builtin_cpu_init();
    return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) && __builtin_cpu_supports("avx2") &&
           __builtin_cpu_supports("fma");
}

/* [sum(a[0]), ..., sum(a[7])] */
static inline __m256 hsum8(const __m256 a[8]) {
    const __m256 t0 = _mm256_hadd_ps(a[0], a[1]), t1 = _mm256_hadd_ps(a[2], a[3]);
    const __m256 t2 = _mm256_hadd_ps(a[4], a[5]), t3 = _mm256_hadd_ps(a[6], a[7]);
    const __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);
    return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

static inline float hsum1(__m256 a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline __m256 ld_f32(const void *p) { return _mm256_loadu_ps((const float *)p); }
static inline __m256 ld_f16(const void *p) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}
static inline __m256 ld_i8(const void *p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}

/* Generic kernels over an element type: ES = bytes per element, LD = load 8
 * elements as floats. rows: first row, row stride D*ES. */
#define DEFINE_QK(NAME, ES, LD)                                                                   \
    static void NAME(const uint8_t *rows, int D, int n, const float *q, float *scores) {         \
        const size_t stride = (size_t)D * (ES);                                                   \
        int i = 0;                                                                                \
        for (; i + 8 <= n; i += 8) {                                                              \
            const uint8_t *r = rows + (size_t)i * stride;                                         \
            __m256 a[8];                                                                          \
            _Pragma("GCC unroll 8") for (int k = 0; k < 8; k++) a[k] = _mm256_setzero_ps();       \
            for (int j = 0; j < D; j += 8) {                                                      \
                const __m256 qv = _mm256_loadu_ps(q + j);                                         \
                _Pragma("GCC unroll 8") for (int k = 0; k < 8; k++) a[k] =                        \
                    _mm256_fmadd_ps(LD(r + k * stride + (size_t)j * (ES)), qv, a[k]);             \
            }                                                                                     \
            _mm256_storeu_ps(scores + i, hsum8(a));                                               \
        }                                                                                         \
        if (i < n) { /* tail rows: same per-row arithmetic as a full block (batch invariance) */ \
            __m256 a[8];                                                                          \
            float t[8];                                                                           \
            for (int k = 0; k < 8; k++) a[k] = _mm256_setzero_ps();                               \
            for (int k = 0; i + k < n; k++) {                                                     \
                const uint8_t *r = rows + (size_t)(i + k) * stride;                               \
                for (int j = 0; j < D; j += 8)                                                    \
                    a[k] = _mm256_fmadd_ps(LD(r + (size_t)j * (ES)), _mm256_loadu_ps(q + j), a[k]); \
            }                                                                                     \
            _mm256_storeu_ps(t, hsum8(a));                                                        \
            for (int k = 0; i + k < n; k++) scores[i + k] = t[k];                                 \
        }                                                                                         \
    }

/* acc[j] += sum_i w[i] * row_i[j], columns in blocks of 64 / 32 / 8. */
#define DEFINE_AV(NAME, ES, LD)                                                                   \
    static void NAME(const uint8_t *rows, int D, int n, const float *w, float *acc) {            \
        const size_t stride = (size_t)D * (ES);                                                   \
        int j = 0;                                                                                \
        for (; j + 64 <= D; j += 64) {                                                            \
            __m256 a[8];                                                                          \
            _Pragma("GCC unroll 8") for (int k = 0; k < 8; k++) a[k] = _mm256_loadu_ps(acc + j + 8 * k); \
            const uint8_t *r = rows + (size_t)j * (ES);                                           \
            for (int i = 0; i < n; i++, r += stride) {                                            \
                const __m256 wv = _mm256_set1_ps(w[i]);                                           \
                _Pragma("GCC unroll 8") for (int k = 0; k < 8; k++) a[k] =                        \
                    _mm256_fmadd_ps(LD(r + (size_t)(8 * k) * (ES)), wv, a[k]);                    \
            }                                                                                     \
            _Pragma("GCC unroll 8") for (int k = 0; k < 8; k++) _mm256_storeu_ps(acc + j + 8 * k, a[k]); \
        }                                                                                         \
        for (; j + 32 <= D; j += 32) {                                                            \
            __m256 a[4];                                                                          \
            _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++) a[k] = _mm256_loadu_ps(acc + j + 8 * k); \
            const uint8_t *r = rows + (size_t)j * (ES);                                           \
            for (int i = 0; i < n; i++, r += stride) {                                            \
                const __m256 wv = _mm256_set1_ps(w[i]);                                           \
                _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++) a[k] =                        \
                    _mm256_fmadd_ps(LD(r + (size_t)(8 * k) * (ES)), wv, a[k]);                    \
            }                                                                                     \
            _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++) _mm256_storeu_ps(acc + j + 8 * k, a[k]); \
        }                                                                                         \
        for (; j < D; j += 8) {                                                                   \
            __m256 a = _mm256_loadu_ps(acc + j);                                                  \
            const uint8_t *r = rows + (size_t)j * (ES);                                           \
            for (int i = 0; i < n; i++, r += stride) a = _mm256_fmadd_ps(LD(r), _mm256_set1_ps(w[i]), a); \
            _mm256_storeu_ps(acc + j, a);                                                         \
        }                                                                                         \
    }

DEFINE_QK(qk_f32_rows, 4, ld_f32)
DEFINE_QK(qk_f16_rows, 2, ld_f16)
DEFINE_QK(qk_i8_rows, 1, ld_i8)
DEFINE_AV(av_f32_rows, 4, ld_f32)
DEFINE_AV(av_f16_rows, 2, ld_f16)
DEFINE_AV(av_i8_rows, 1, ld_i8)

/* Segment layouts are those of codec.c: f32/f16 rows from offset 0; int8 has
 * float scales[P] then int8 rows. D % 8 != 0 falls back to the reference. */

static void f32_qk(const uint8_t *seg, int D, int P, int n, const float *q, float *scores) {
    qk_f32_rows(seg, D, n, q, scores);
}
static void f32_av(const uint8_t *seg, int D, int P, int n, const float *p, float *acc) {
    av_f32_rows(seg, D, n, p, acc);
}
static void f16_qk(const uint8_t *seg, int D, int P, int n, const float *q, float *scores) {
    qk_f16_rows(seg, D, n, q, scores);
}
static void f16_av(const uint8_t *seg, int D, int P, int n, const float *p, float *acc) {
    av_f16_rows(seg, D, n, p, acc);
}
static void i8_qk(const uint8_t *seg, int D, int P, int n, const float *q, float *scores) {
    const float *sc = (const float *)seg;
    qk_i8_rows(seg + (size_t)P * 4, D, n, q, scores);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(scores + i, _mm256_mul_ps(_mm256_loadu_ps(scores + i), _mm256_loadu_ps(sc + i)));
    for (; i < n; i++) scores[i] *= sc[i];
}
static void i8_av(const uint8_t *seg, int D, int P, int n, const float *p, float *acc) {
    const float *sc = (const float *)seg;
    float w[64];
    for (int i0 = 0; i0 < n; i0 += 64) { /* weights p*scale in blocks (no allocation) */
        const int m = n - i0 < 64 ? n - i0 : 64;
        for (int i = 0; i < m; i++) w[i] = p[i0 + i] * sc[i0 + i];
        av_i8_rows(seg + (size_t)P * 4 + (size_t)i0 * D, D, m, w, acc);
    }
}

/* ---- multi-query kernels ------------------------------------------------------------
 * Rows are converted to floats once, in blocks of RB rows (a multiple of 8)
 * into a stack buffer, and each query then runs the f32 row kernels on the
 * buffer. The f32 kernels on converted values perform exactly the operations
 * the f16 / int8 kernels perform with conversion inlined (the conversions are
 * exact, and every score / accumulator column sees the same FMAs in the same
 * order whatever the row blocking), so each query's result is bit-identical to
 * the single-query kernel's. */

#define CBUF 4096 /* floats of converted rows (16 KiB) */
/* Below these query counts converting into the buffer (an extra store pass)
 * costs more than converting inline per query (measured on Zen, 2-4 queries
 * per page: the inline loads+conversions overlap the FMAs). */
#define F16_MULTI_MIN 8
#define I8_MULTI_MIN 6

static inline int conv_rows(int D) { return (CBUF / D) & ~7; }

static inline void cvt_f16(const uint8_t *src, float *dst, int cnt) {
    for (int i = 0; i < cnt; i += 8) _mm256_storeu_ps(dst + i, ld_f16(src + (size_t)i * 2));
}
static inline void cvt_i8(const uint8_t *src, float *dst, int cnt) {
    for (int i = 0; i < cnt; i += 8) _mm256_storeu_ps(dst + i, ld_i8(src + (size_t)i));
}

static void f32_qk_multi(const uint8_t *seg, int D, int P, int n, const float *q, int m, float *scores) {
    for (int g = 0; g < m; g++) qk_f32_rows(seg, D, n, q + (size_t)g * D, scores + (size_t)g * P);
}
static void f32_av_multi(const uint8_t *seg, int D, int P, int n, const float *p, int m, float *acc) {
    for (int g = 0; g < m; g++) av_f32_rows(seg, D, n, p + (size_t)g * P, acc + (size_t)g * D);
}

static void f16_qk_multi(const uint8_t *seg, int D, int P, int n, const float *q, int m, float *scores) {
    const int rb = conv_rows(D);
    if (m < F16_MULTI_MIN || rb < 8) {
        for (int g = 0; g < m; g++) qk_f16_rows(seg, D, n, q + (size_t)g * D, scores + (size_t)g * P);
        return;
    }
    float buf[CBUF];
    for (int r0 = 0; r0 < n; r0 += rb) {
        const int nr = n - r0 < rb ? n - r0 : rb;
        cvt_f16(seg + (size_t)r0 * D * 2, buf, nr * D);
        for (int g = 0; g < m; g++)
            qk_f32_rows((const uint8_t *)buf, D, nr, q + (size_t)g * D, scores + (size_t)g * P + r0);
    }
}
static void f16_av_multi(const uint8_t *seg, int D, int P, int n, const float *p, int m, float *acc) {
    const int rb = conv_rows(D);
    if (m < F16_MULTI_MIN || rb < 8) {
        for (int g = 0; g < m; g++) av_f16_rows(seg, D, n, p + (size_t)g * P, acc + (size_t)g * D);
        return;
    }
    float buf[CBUF];
    for (int r0 = 0; r0 < n; r0 += rb) {
        const int nr = n - r0 < rb ? n - r0 : rb;
        cvt_f16(seg + (size_t)r0 * D * 2, buf, nr * D);
        for (int g = 0; g < m; g++)
            av_f32_rows((const uint8_t *)buf, D, nr, p + (size_t)g * P + r0, acc + (size_t)g * D);
    }
}

static void i8_qk_multi(const uint8_t *seg, int D, int P, int n, const float *q, int m, float *scores) {
    const int rb = conv_rows(D);
    if (m < I8_MULTI_MIN || rb < 8) {
        for (int g = 0; g < m; g++) i8_qk(seg, D, P, n, q + (size_t)g * D, scores + (size_t)g * P);
        return;
    }
    const float *sc = (const float *)seg;
    float buf[CBUF];
    for (int r0 = 0; r0 < n; r0 += rb) {
        const int nr = n - r0 < rb ? n - r0 : rb;
        cvt_i8(seg + (size_t)P * 4 + (size_t)r0 * D, buf, nr * D);
        for (int g = 0; g < m; g++) {
            float *s = scores + (size_t)g * P + r0;
            qk_f32_rows((const uint8_t *)buf, D, nr, q + (size_t)g * D, s);
            for (int i = 0; i < nr; i++) s[i] *= sc[r0 + i];
        }
    }
}
static void i8_av_multi(const uint8_t *seg, int D, int P, int n, const float *p, int m, float *acc) {
    const int rb = conv_rows(D);
    if (m < I8_MULTI_MIN || rb < 8) {
        for (int g = 0; g < m; g++) i8_av(seg, D, P, n, p + (size_t)g * P, acc + (size_t)g * D);
        return;
    }
    const float *sc = (const float *)seg;
    float buf[CBUF], w[CBUF / 8];
    for (int r0 = 0; r0 < n; r0 += rb) {
        const int nr = n - r0 < rb ? n - r0 : rb;
        cvt_i8(seg + (size_t)P * 4 + (size_t)r0 * D, buf, nr * D);
        for (int g = 0; g < m; g++) {
            const float *pg = p + (size_t)g * P + r0;
            for (int i = 0; i < nr; i++) w[i] = pg[i] * sc[r0 + i];
            av_f32_rows((const uint8_t *)buf, D, nr, w, acc + (size_t)g * D);
        }
    }
}

int kvl_codec_avx2_kernels(const char *name, kvl_codec_kernels *out) {
    if (!cpu_ok()) return 0;
    if (strcmp(name, "f32") == 0) *out = (kvl_codec_kernels){"avx2", f32_qk, f32_av, f32_qk_multi, f32_av_multi};
    else if (strcmp(name, "f16") == 0) *out = (kvl_codec_kernels){"avx2", f16_qk, f16_av, f16_qk_multi, f16_av_multi};
    else if (strcmp(name, "int8") == 0) *out = (kvl_codec_kernels){"avx2", i8_qk, i8_av, i8_qk_multi, i8_av_multi};
    else return 0;
    return 1;
}

/* exp(x) for x in [-87.3, 88.7] (Cephes-style polynomial, ~2 ulp); x below the
 * range (including -inf) gives 0. */
static inline __m256 exp256(__m256 x) {
    const __m256 lo = _mm256_set1_ps(-87.3f);
    const __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    x = _mm256_min_ps(_mm256_max_ps(x, lo), _mm256_set1_ps(88.3f));
    const __m256 fx = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 y = _mm256_set1_ps(1.9875691500E-4f);
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507E-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073E-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894E-2f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459E-1f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201E-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
    y = _mm256_mul_ps(y, _mm256_castsi256_ps(e));
    return _mm256_andnot_ps(under, y);
}

static float expsum_avx2(float *s, int n, float m) {
    const __m256 mv = _mm256_set1_ps(m);
    __m256 sum = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(s + i), mv));
        _mm256_storeu_ps(s + i, e);
        sum = _mm256_add_ps(sum, e);
    }
    if (i < n) {
        float t[8];
        for (int k = 0; k < 8; k++) t[k] = i + k < n ? s[i + k] : -INFINITY;
        const __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(t), mv));
        _mm256_storeu_ps(t, e);
        sum = _mm256_add_ps(sum, e);
        for (int k = 0; i + k < n; k++) s[i + k] = t[k];
    }
    return hsum1(sum);
}

kvl_kv_expsum_fn kvl_kv_expsum_avx2(void) { return cpu_ok() ? expsum_avx2 : NULL; }
int kvl_cpu_has_avx2(void) { return cpu_ok(); }

#else /* no AVX2 in this build */

int kvl_codec_avx2_kernels(const char *name, kvl_codec_kernels *out) {
    (void)name; (void)out;
    return 0;
}
kvl_kv_expsum_fn kvl_kv_expsum_avx2(void) { return NULL; }
int kvl_cpu_has_avx2(void) { return 0; }

#endif
