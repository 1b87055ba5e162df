/* Oaken KV codec (see codec_oaken.h): per token, values split by per-layer
 * offline thresholds into outer / middle / inner groups; middle dense 4-bit
 * with group shift, outer and inner 5-bit sparse reusing the vacated dense
 * slots, a fixed number C = ceil(3D/32) of sparse entries per token so every
 * page has the same size. Scalar reference here, AVX2 in codec_oaken_avx2.c;
 * the calibration-file reader/writer and the codec state are here too.
 *
 * Groups (as the reference implementation's masks): with thresholds
 * lo_out <= lo_in <= hi_in <= hi_out (per layer, K and V separately),
 *   outer   x <= lo_out or x >= hi_out        (~4% of values)
 *   inner   lo_in < x < hi_in                 (~6%, the band around the median)
 *   middle  lo_out < x <= lo_in or hi_in <= x < hi_out   (~90%)
 * Group shift: each side of a group is coded as its distance from the
 * threshold it lies beyond, so the 4/5-bit ranges cover only the group's own
 * band: middle  + side: hi_in + m * s_pos, - side: lo_in - m * s_neg (m 0..7:
 * the dense nibble is 8 + m / m, i.e. a side bit and 3 magnitude bits);
 * outer  hi_out + m * s_out / lo_out - m * s_out (m 0..15 in the dense slot,
 * the side in the entry's extra bit); inner  lo_in + (u + 1/2) (hi_in - lo_in)/32,
 * u 0..31 (low 4 bits in the dense slot, the 5th in the entry's extra bit).
 * Scales are per token (online, from the token's own values): s_pos / s_neg =
 * largest shifted middle magnitude / 7, s_out = largest outer excess / 15,
 * each stored as an unsigned e5m3 byte (the upper byte of an IEEE half less
 * its sign, rounded up so the range is always covered).
 *
 * Segment (bytes; P rows; C entries, es = 1 (D <= 128) or 2 bytes each):
 *   header  f32 lo_out, lo_in, hi_in, hi_out   (16; written by every encode)
 *   row i at 16 + i * R, R = D/2 + 3 + nb + C * es  (nb = 1 if D <= 128 else 2)
 *     codes [D/2]   nibbles; channels 32b + k: low nibble of byte 16b + k for
 *                   k < 16, high nibble of byte 16b + k - 16 (as int4), the
 *                   last partial block likewise with h = ceil(rest/2)
 *     s_pos, s_neg, s_out  (e5m3 bytes)
 *     counts        D <= 128: n_out << 4 | n_in;  else u8 n_out, u8 n_in
 *     entries [C]   outer entries first, then inner; idx | extra << 7 (u8)
 *                   or idx | extra << 15 (u16)
 * At D = 64, P = 32: 16 + 32 * 42 bytes = 5.3125 bits/value.
 *
 * Capacity: more outer + inner candidates than C in a token: outer values
 * take entries first, largest excess first; inner values next, those farthest
 * from both inner edges first. An outer value left without an entry is coded
 * in the dense middle code of its side (that side's scale grows to cover it:
 * the token degrades towards plain 4-bit, never clips); an inner value left
 * without an entry is coded at its nearer inner edge (middle m = 0), an
 * error of at most half the inner band.
 * Bounds (float rounding aside): middle |x - x'| <= s_side / 2, outer <=
 * s_out / 2, inner <= (hi_in - lo_in) / 64; e5m3 rounding makes each stored
 * scale at most 2^-3 above the exact one. kvl_oaken_row_bound gives them.
 *
 * Copy_row copies the row bytes; the header (thresholds) is the same for
 * every page of one (layer, kv-head, K/V), and pages are never shared
 * between those. Without state (st == NULL) the thresholds are
 * lo_in = hi_in = 0, lo_out = -FLT_MAX, hi_out = FLT_MAX: no outer or inner
 * groups, plain sign + 3-bit per-token coding (uncalibrated). */
#include "kv/codec_oaken.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv/codec_q.h"
#include "kv/codec_spec.h"

#define HDR 16
#define STATE_MAGIC 0x4f414b31u /* "OAK1" */

typedef struct oaken_state {
    uint32_t magic;
    kvl_oaken_thresholds th;
} oaken_state;

int kvl_oaken_capacity(int D) { return (3 * D + 31) / 32; }
static inline int wide(int D) { return D > 128; }
static inline int es(int D) { return wide(D) ? 2 : 1; }
static inline size_t row_bytes(int D) {
    return (size_t)(D + 1) / 2 + 3 + (wide(D) ? 2 : 1) + (size_t)kvl_oaken_capacity(D) * es(D);
}
static size_t oak_seg_bytes(int D, int P) { return HDR + (size_t)P * row_bytes(D); }

/* e5m3 scale bytes: the half with bits b << 7 (non-negative). */
static inline float e5m3(uint8_t b) { return kvl_fp16_to_fp32((uint16_t)(b << 7)); }
static inline uint8_t e5m3_up(float s) {
    if (!(s > 0)) return 0;
    if (s > 57344.f) return 0xF7; /* 0x7B80 = 61440: largest finite e5m3 */
    uint16_t h = kvl_q_f16_up(s);
    uint32_t b = (uint32_t)(h >> 7) + ((h & 0x7f) != 0);
    return (uint8_t)(b > 0xF7 ? 0xF7 : b);
}

/* Nibble position of channel j: byte offset and shift (layout above). */
static inline void nib_pos(int D, int j, int *byte, int *shift) {
    const int b0 = j / 32 * 32, rest = D - b0, h = rest < 32 ? (rest + 1) / 2 : 16, k = j - b0;
    *byte = b0 / 2 + (k < h ? k : k - h);
    *shift = k < h ? 0 : 4;
}
static inline int get_nib(const uint8_t *codes, int D, int j) {
    int b, s;
    nib_pos(D, j, &b, &s);
    return (codes[b] >> s) & 15;
}
static inline void set_nib(uint8_t *codes, int D, int j, int v) {
    int b, s;
    nib_pos(D, j, &b, &s);
    codes[b] = (uint8_t)((codes[b] & ~(15 << s)) | ((v & 15) << s));
}

static void header_get(const uint8_t *seg, kvl_oaken_thresholds *th) { memcpy(th, seg, sizeof *th); }

/* Row view. */
typedef struct {
    const uint8_t *codes, *sc, *cnt, *ent;
    int n_out, n_in;
} rowv;
static inline rowv row_view(const uint8_t *seg, int D, int i) {
    rowv r;
    r.codes = seg + HDR + (size_t)i * row_bytes(D);
    r.sc = r.codes + (D + 1) / 2;
    r.cnt = r.sc + 3;
    r.ent = r.cnt + (wide(D) ? 2 : 1);
    const int C = kvl_oaken_capacity(D);
    if (wide(D)) r.n_out = r.cnt[0], r.n_in = r.cnt[1];
    else r.n_out = r.cnt[0] >> 4, r.n_in = r.cnt[0] & 15;
    /* hostile bytes cannot make decode read past the row */
    if (r.n_out > C) r.n_out = C;
    if (r.n_in > C - r.n_out) r.n_in = C - r.n_out;
    return r;
}
static inline void entry_get(const rowv *r, int D, int e, int *idx, int *extra) {
    if (wide(D)) {
        const uint16_t v = kvl_q_rd16(r->ent + 2 * e);
        *idx = v & 0x7fff, *extra = v >> 15;
    } else {
        *idx = r->ent[e] & 0x7f, *extra = r->ent[e] >> 7;
    }
    if (*idx >= D) *idx = D - 1;
}

/* Dense middle level of code c. */
static inline float mid_level(const kvl_oaken_thresholds *t, float sp, float sn, int c) {
    return c >= 8 ? t->hi_in + (float)(c - 8) * sp : t->lo_in - (float)c * sn;
}

void kvl_oaken_decode_row(const uint8_t *seg, int D, int P, int i, float *x);
void kvl_oaken_decode_row(const uint8_t *seg, int D, int P, int i, float *x) {
    kvl_oaken_thresholds t;
    header_get(seg, &t);
    const rowv r = row_view(seg, D, i);
    const float sp = e5m3(r.sc[0]), sn = e5m3(r.sc[1]), so = e5m3(r.sc[2]);
    for (int j = 0; j < D; j++) x[j] = mid_level(&t, sp, sn, get_nib(r.codes, D, j));
    for (int e = 0; e < r.n_out + r.n_in; e++) {
        int j, ex;
        entry_get(&r, D, e, &j, &ex);
        const int c = get_nib(r.codes, D, j);
        if (e < r.n_out) x[j] = ex ? t.hi_out + (float)c * so : t.lo_out - (float)c * so;
        else x[j] = t.lo_in + ((float)(c | ex << 4) + 0.5f) * ((t.hi_in - t.lo_in) * 0.03125f);
    }
}

/* Candidate for a sparse entry: channel and priority (larger first). */
typedef struct { int j; float pri; } cand;
static void sort_cands(cand *c, int n) { /* insertion sort, stable, descending pri */
    for (int a = 1; a < n; a++) {
        cand v = c[a];
        int b = a;
        while (b > 0 && c[b - 1].pri < v.pri) c[b] = c[b - 1], b--;
        c[b] = v;
    }
}

static void oak_encode(const void *stp, uint8_t *seg, int D, int P, int i, const float *xin) {
    kvl_oaken_thresholds t = {-FLT_MAX, 0, 0, FLT_MAX};
    const oaken_state *st = stp;
    if (st && st->magic == STATE_MAGIC) t = st->th;
    memcpy(seg, &t, sizeof t);
    if (D <= 0 || D > KVL_CODEC_Q_DMAX) return;
    const int C = kvl_oaken_capacity(D);
    uint8_t *codes = seg + HDR + (size_t)i * row_bytes(D), *sc = codes + (D + 1) / 2, *cnt = sc + 3;
    uint8_t *ent = cnt + (wide(D) ? 2 : 1);
    float x[KVL_CODEC_Q_DMAX];
    for (int j = 0; j < D; j++) x[j] = xin[j] == xin[j] ? kvl_q_clamp16(xin[j]) : 0; /* NaN -> 0 */
    /* 1. groups and sparse selection */
    cand co[KVL_CODEC_Q_DMAX], ci[KVL_CODEC_Q_DMAX];
    int no = 0, ni = 0;
    for (int j = 0; j < D; j++) {
        if (x[j] >= t.hi_out) co[no++] = (cand){j, x[j] - t.hi_out};
        else if (x[j] <= t.lo_out) co[no++] = (cand){j, t.lo_out - x[j]};
        else if (x[j] > t.lo_in && x[j] < t.hi_in) ci[ni++] = (cand){j, fminf(x[j] - t.lo_in, t.hi_in - x[j])};
    }
    sort_cands(co, no);
    const int ko = no < C ? no : C;
    sort_cands(ci, ni);
    const int ki = ni < C - ko ? ni : C - ko;
    /* kind: 0 middle (dense), 1 outer entry, 2 inner entry */
    uint8_t kind[KVL_CODEC_Q_DMAX];
    memset(kind, 0, (size_t)D);
    for (int e = 0; e < ko; e++) kind[co[e].j] = 1;
    for (int e = 0; e < ki; e++) kind[ci[e].j] = 2;
    /* 2. per-token scales (everything without an entry is dense middle) */
    float mp = 0, mn = 0, mo = 0;
    for (int j = 0; j < D; j++) {
        if (kind[j] == 1) mo = fmaxf(mo, x[j] >= t.hi_out ? x[j] - t.hi_out : t.lo_out - x[j]);
        else if (kind[j] == 0) {
            if (x[j] >= t.hi_in) mp = fmaxf(mp, x[j] - t.hi_in);
            else if (x[j] <= t.lo_in) mn = fmaxf(mn, t.lo_in - x[j]);
        }
    }
    sc[0] = e5m3_up(mp / 7), sc[1] = e5m3_up(mn / 7), sc[2] = e5m3_up(mo / 15);
    const float sp = e5m3(sc[0]), sn = e5m3(sc[1]), so = e5m3(sc[2]);
    const float step_in = (t.hi_in - t.lo_in) * 0.03125f;
    /* 3. codes */
    memset(codes, 0, (size_t)(D + 1) / 2);
    int e = 0;
    for (int pass = 1; pass <= 2; pass++) /* outer entries first, then inner */
        for (int j = 0; j < D; j++) {
            if (kind[j] != pass) continue;
            int nib, ex;
            if (pass == 1) {
                ex = x[j] >= t.hi_out;
                const float d = ex ? x[j] - t.hi_out : t.lo_out - x[j];
                float m = so > 0 ? nearbyintf(d / so) : 0;
                nib = (int)(m > 15 ? 15 : m);
            } else {
                float u = step_in > 0 ? floorf((x[j] - t.lo_in) / step_in) : 0;
                u = u > 0 ? (u > 31 ? 31 : u) : 0;
                nib = (int)u & 15, ex = (int)u >> 4;
            }
            set_nib(codes, D, j, nib);
            if (wide(D)) kvl_q_wr16(ent + 2 * e, (uint16_t)(j | ex << 15));
            else ent[e] = (uint8_t)(j | ex << 7);
            e++;
        }
    for (; e < C; e++) { /* unused entries: zero bytes */
        if (wide(D)) kvl_q_wr16(ent + 2 * e, 0);
        else ent[e] = 0;
    }
    for (int j = 0; j < D; j++) {
        if (kind[j]) continue;
        int c;
        if (x[j] >= t.hi_in) {
            float m = sp > 0 ? nearbyintf((x[j] - t.hi_in) / sp) : 0;
            c = 8 + (int)(m > 7 ? 7 : m);
        } else if (x[j] <= t.lo_in) {
            float m = sn > 0 ? nearbyintf((t.lo_in - x[j]) / sn) : 0;
            c = (int)(m > 7 ? 7 : m);
        } else /* inner value without an entry: nearer inner edge */
            c = x[j] - t.lo_in < t.hi_in - x[j] ? 0 : 8;
        set_nib(codes, D, j, c);
    }
    if (wide(D)) cnt[0] = (uint8_t)ko, cnt[1] = (uint8_t)ki;
    else cnt[0] = (uint8_t)(ko << 4 | ki);
}

static void oak_copy_row(uint8_t *dst, int di, const uint8_t *src, int si, int D, int P) {
    const size_t rb = row_bytes(D);
    memmove(dst + HDR + (size_t)di * rb, src + HDR + (size_t)si * rb, rb);
    memmove(dst, src, HDR);
}

double kvl_oaken_row_bound(const uint8_t *seg, int D, int P, int i, const float *x, int j) {
    kvl_oaken_thresholds t;
    header_get(seg, &t);
    const rowv r = row_view(seg, D, i);
    const double slack = 2e-7 * (fabs(x[j]) + fabs(t.lo_in) + fabs(t.hi_in) + 1e-30) +
                         (fabs(t.lo_out) < 1e30 ? 2e-7 * (fabs(t.lo_out) + fabs(t.hi_out)) : 0);
    for (int e = 0; e < r.n_out + r.n_in; e++) {
        int jj, ex;
        entry_get(&r, D, e, &jj, &ex);
        if (jj != j) continue;
        if (e < r.n_out) return e5m3(r.sc[2]) / 2 * (1 + 1e-6) + slack;
        return ((double)t.hi_in - t.lo_in) / 64 * (1 + 1e-6) + slack;
    }
    if (x[j] >= t.hi_in) return e5m3(r.sc[0]) / 2 * (1 + 1e-6) + slack;
    if (x[j] <= t.lo_in) return e5m3(r.sc[1]) / 2 * (1 + 1e-6) + slack;
    return fmin(x[j] - t.lo_in, t.hi_in - x[j]) + slack; /* inner without an entry */
}

/* ---- kernels (scalar reference) ------------------------------------------------ */

static void oak_qk_multi(const uint8_t *seg, int D, int P, int n, const float *q, int m, float *scores) {
    kvl_q_qk_multi_ref(kvl_oaken_decode_row, seg, D, P, n, q, m, scores);
}
static void oak_av_multi(const uint8_t *seg, int D, int P, int n, const float *p, int m, float *acc) {
    kvl_q_av_multi_ref(kvl_oaken_decode_row, seg, D, P, n, p, m, acc);
}
static void oak_qk(const uint8_t *seg, int D, int P, int n, const float *q, float *scores) {
    oak_qk_multi(seg, D, P, n, q, 1, scores);
}
static void oak_av(const uint8_t *seg, int D, int P, int n, const float *p, float *acc) {
    oak_av_multi(seg, D, P, n, p, 1, acc);
}

int kvl_codec_oaken_avx2(int D, kvl_codec_kernels *out); /* codec_oaken_avx2.c */

/* ---- state and calibration file ------------------------------------------------ */

static int th_valid(const kvl_oaken_thresholds *t) {
    return isfinite(t->lo_out) && isfinite(t->lo_in) && isfinite(t->hi_in) && isfinite(t->hi_out) &&
           t->lo_out <= t->lo_in && t->lo_in <= t->hi_in && t->hi_in <= t->hi_out &&
           fabsf(t->lo_out) <= 65504.f && fabsf(t->hi_out) <= 65504.f;
}

int kvl_oaken_state_set(void *stp, const kvl_oaken_thresholds *th) {
    if (!th_valid(th)) return -1;
    oaken_state *st = stp;
    st->magic = STATE_MAGIC;
    st->th = *th;
    return 0;
}

static size_t oak_state_bytes(int D) { return sizeof(oaken_state); }

static uint32_t rd32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static void wr32(uint8_t *p, uint32_t v) { p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8), p[2] = (uint8_t)(v >> 16), p[3] = (uint8_t)(v >> 24); }
static float rdf(const uint8_t *p) { uint32_t u = rd32(p); float f; memcpy(&f, &u, 4); return f; }
static void wrf(uint8_t *p, float f) { uint32_t u; memcpy(&u, &f, 4); wr32(p, u); }
static uint32_t fnv1a(const uint8_t *p, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 16777619u;
    return h;
}

kvl_status kvl_oaken_calib_parse(const uint8_t *buf, size_t n, kvl_oaken_calib *out, kvl_err *err) {
    memset(out, 0, sizeof *out);
    if (n < KVL_OAKEN_HDR + 4) return kvl_err_set(err, KVL_ERR_FORMAT, "truncated (%zu bytes)", n);
    if (memcmp(buf, KVL_OAKEN_MAGIC, 8) != 0) return kvl_err_set(err, KVL_ERR_FORMAT, "not an oaken calibration file (bad magic)");
    const uint32_t ver = rd32(buf + 8), nl = rd32(buf + 12), hd = rd32(buf + 16), nt = rd32(buf + 20);
    if (ver != KVL_OAKEN_VERSION) return kvl_err_set(err, KVL_ERR_FORMAT, "unsupported version %u (want %u)", ver, KVL_OAKEN_VERSION);
    if (nl < 1 || nl > 4096) return kvl_err_set(err, KVL_ERR_FORMAT, "bad layer count %u", nl);
    if (hd < 1 || hd > 65536 || nt > 0x7fffffffu) return kvl_err_set(err, KVL_ERR_FORMAT, "bad head_dim %u or token count %u", hd, nt);
    const size_t want = KVL_OAKEN_HDR + (size_t)nl * 32 + 4;
    if (n != want) return kvl_err_set(err, KVL_ERR_FORMAT, "size %zu, want %zu for %u layers (truncated or trailing bytes)", n, want, nl);
    if (fnv1a(buf, n - 4) != rd32(buf + n - 4)) return kvl_err_set(err, KVL_ERR_FORMAT, "checksum mismatch (corrupt file)");
    for (int k = 0; k < 3; k++) {
        out->frac[k] = rdf(buf + 24 + 4 * k);
        if (!(out->frac[k] >= 0 && out->frac[k] <= 1)) return kvl_err_set(err, KVL_ERR_FORMAT, "bad fraction %g", out->frac[k]);
    }
    for (uint32_t l = 0; l < nl; l++)
        for (int v = 0; v < 2; v++) {
            const uint8_t *p = buf + KVL_OAKEN_HDR + ((size_t)l * 2 + v) * 16;
            kvl_oaken_thresholds t = {rdf(p), rdf(p + 4), rdf(p + 8), rdf(p + 12)};
            if (!th_valid(&t))
                return kvl_err_set(err, KVL_ERR_FORMAT, "layer %u %s: thresholds not finite and ordered", l, v ? "V" : "K");
        }
    out->n_layer = (int)nl, out->head_dim = (int)hd, out->n_tokens = (int)nt;
    out->th = buf + KVL_OAKEN_HDR;
    return KVL_OK;
}

void kvl_oaken_calib_get(const kvl_oaken_calib *c, int layer, int is_v, kvl_oaken_thresholds *th) {
    const uint8_t *p = c->th + ((size_t)layer * 2 + (is_v ? 1 : 0)) * 16;
    *th = (kvl_oaken_thresholds){rdf(p), rdf(p + 4), rdf(p + 8), rdf(p + 12)};
}

kvl_status kvl_oaken_calib_write(const char *path, int n_layer, int head_dim, int n_tokens, const float frac[3],
                                 const kvl_oaken_thresholds *th, kvl_err *err) {
    if (n_layer < 1 || n_layer > 4096 || head_dim < 1) return kvl_err_set(err, KVL_ERR_ARG, "oaken calibration: bad sizes");
    const size_t n = KVL_OAKEN_HDR + (size_t)n_layer * 32 + 4;
    uint8_t *b = calloc(1, n);
    if (!b) return kvl_err_set(err, KVL_ERR_NOMEM, "oaken calibration: out of memory");
    memcpy(b, KVL_OAKEN_MAGIC, 8);
    wr32(b + 8, KVL_OAKEN_VERSION), wr32(b + 12, (uint32_t)n_layer), wr32(b + 16, (uint32_t)head_dim);
    wr32(b + 20, (uint32_t)(n_tokens < 0 ? 0 : n_tokens));
    for (int k = 0; k < 3; k++) wrf(b + 24 + 4 * k, frac[k]);
    for (int l = 0; l < 2 * n_layer; l++) {
        if (!th_valid(&th[l])) {
            free(b);
            return kvl_err_set(err, KVL_ERR_ARG, "oaken calibration: layer %d %s thresholds invalid", l / 2, l % 2 ? "V" : "K");
        }
        uint8_t *p = b + KVL_OAKEN_HDR + (size_t)l * 16;
        wrf(p, th[l].lo_out), wrf(p + 4, th[l].lo_in), wrf(p + 8, th[l].hi_in), wrf(p + 12, th[l].hi_out);
    }
    wr32(b + n - 4, fnv1a(b, n - 4));
    FILE *f = fopen(path, "wb");
    kvl_status s = KVL_OK;
    if (!f) s = kvl_err_set(err, KVL_ERR_IO, "cannot write oaken calibration '%s'", path);
    else {
        if (fwrite(b, 1, n, f) != n) s = kvl_err_set(err, KVL_ERR_IO, "cannot write oaken calibration '%s'", path);
        if (fclose(f) != 0 && s == KVL_OK) s = kvl_err_set(err, KVL_ERR_IO, "cannot write oaken calibration '%s'", path);
    }
    free(b);
    return s;
}

/* state_init: thresholds of (layer, K/V) from the calibration file named by
 * calib=PATH, or <model>.oaken next to the model. */
static kvl_status oak_state_init(const kvl_codec_params *prm, int layer, int head, int is_v, int D, void *st,
                                 kvl_err *err) {
    char path[1024];
    const char *cp = prm ? kvl_codec_param(prm, "calib") : NULL;
    if (cp) snprintf(path, sizeof path, "%s", cp);
    else if (prm && prm->model_path) snprintf(path, sizeof path, "%s.oaken", prm->model_path);
    else return kvl_err_set(err, KVL_ERR_ARG, "oaken: no calibration file (give oaken:calib=PATH, or run `kvlite calibrate -m MODEL`)");
    FILE *f = fopen(path, "rb");
    if (!f) return kvl_err_set(err, KVL_ERR_IO, "oaken: calibration file '%s' not found (run `kvlite calibrate -m MODEL`)", path);
    uint8_t *buf = malloc(KVL_OAKEN_HDR + 4096 * 32 + 8);
    size_t n = buf ? fread(buf, 1, KVL_OAKEN_HDR + 4096 * 32 + 8, f) : 0;
    fclose(f);
    if (!buf) return kvl_err_set(err, KVL_ERR_NOMEM, "oaken: out of memory");
    kvl_oaken_calib c;
    kvl_err e2 = {0};
    kvl_status s = kvl_oaken_calib_parse(buf, n, &c, &e2);
    if (s) s = kvl_err_set(err, s, "oaken: calibration file '%s': %s", path, e2.msg);
    else if (layer >= c.n_layer || layer < 0)
        s = kvl_err_set(err, KVL_ERR_FORMAT, "oaken: calibration file '%s' has %d layers, model layer %d", path, c.n_layer, layer);
    else if (c.head_dim != D)
        s = kvl_err_set(err, KVL_ERR_FORMAT, "oaken: calibration file '%s' is for head_dim %d, model has %d", path, c.head_dim, D);
    else {
        kvl_oaken_thresholds th;
        kvl_oaken_calib_get(&c, layer, is_v, &th);
        kvl_oaken_state_set(st, &th);
    }
    free(buf);
    return s;
}

/* Loaded segments: ordered, non-NaN thresholds in the header; per row of
 * [0, n_rows) finite scale bytes, counts within the capacity and entry
 * indices below D (the decoder clamps them too; the kernels rely on it). */
static int oak_validate(const uint8_t *seg, int D, int P, int n_rows) {
    kvl_oaken_thresholds t;
    header_get(seg, &t);
    if (!(t.lo_out <= t.lo_in && t.lo_in <= t.hi_in && t.hi_in <= t.hi_out) || !isfinite(t.lo_out) ||
        !isfinite(t.hi_out))
        return -1;
    const int C = kvl_oaken_capacity(D);
    for (int i = 0; i < n_rows; i++) {
        const uint8_t *codes = seg + HDR + (size_t)i * row_bytes(D), *sc = codes + (D + 1) / 2, *cnt = sc + 3;
        const uint8_t *ent = cnt + (wide(D) ? 2 : 1);
        for (int k = 0; k < 3; k++)
            if (!kvl_codec_e5m3_ok(sc[k])) return -1;
        const int n_out = wide(D) ? cnt[0] : cnt[0] >> 4, n_in = wide(D) ? cnt[1] : cnt[0] & 15;
        if (n_out + n_in > C) return -1;
        for (int e = 0; e < n_out + n_in; e++) {
            const int idx = wide(D) ? (kvl_q_rd16(ent + 2 * e) & 0x7fff) : (ent[e] & 0x7f);
            if (idx >= D) return -1;
        }
    }
    return 0;
}

const kvl_codec kvl_codec_oaken = {
    .name = "oaken",
    .desc = "Oaken: per-layer offline thresholds, dense 4-bit middle + 5-bit sparse outer/inner (5.31 bits/value at D=64)",
    .seg_bytes = oak_seg_bytes, .encode = oak_encode, .decode = kvl_oaken_decode_row, .copy_row = oak_copy_row, .validate = oak_validate,
    .ref = {"scalar", oak_qk, oak_av, oak_qk_multi, oak_av_multi}, .simd = kvl_codec_oaken_avx2,
    .state_bytes = oak_state_bytes, .state_init = oak_state_init, .params = "calib"};
