/* Codec spec parsing ("int4+rot", "kivi2:r=64", per-layer overrides): turns
 * the strings users write into checked codec choices and parameters. */
#include "kv/codec_spec.h"

#include "kvlite.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *kvl_codec_param(const kvl_codec_params *prm, const char *key) {
    for (int i = 0; i < prm->n; i++)
        if (strcmp(prm->key[i], key) == 0) return prm->val[i];
    return NULL;
}

kvl_status kvl_codec_param_int(const kvl_codec_params *prm, const char *key, int def, int lo, int hi, int *out,
                               kvl_err *err) {
    const char *v = kvl_codec_param(prm, key);
    if (!v) {
        *out = def;
        return KVL_OK;
    }
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi)
        return kvl_err_set(err, KVL_ERR_ARG, "codec parameter %s=%s: expected an integer in [%d, %d]", key, v, lo, hi);
    *out = (int)x;
    return KVL_OK;
}

kvl_status kvl_codec_param_float(const kvl_codec_params *prm, const char *key, double def, double lo, double hi,
                                 double *out, kvl_err *err) {
    const char *v = kvl_codec_param(prm, key);
    if (!v) {
        *out = def;
        return KVL_OK;
    }
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !isfinite(x) || x < lo || x > hi)
        return kvl_err_set(err, KVL_ERR_ARG, "codec parameter %s=%s: expected a number in [%g, %g]", key, v, lo, hi);
    *out = x;
    return KVL_OK;
}

/* Is key in the comma-separated list? */
static int in_list(const char *list, const char *key) {
    if (!list) return 0;
    const size_t n = strlen(key);
    for (const char *s = list; *s;) {
        const char *e = strchr(s, ',');
        const size_t m = e ? (size_t)(e - s) : strlen(s);
        if (m == n && strncmp(s, key, n) == 0) return 1;
        if (!e) break;
        s = e + 1;
    }
    return 0;
}

static const kvl_codec *find_visible(const char *name, size_t n) {
    for (const kvl_codec *const *c = kvl_codec_all(); *c; c++)
        if (!(*c)->hidden && strlen((*c)->name) == n && strncmp((*c)->name, name, n) == 0) return *c;
    return NULL;
}

static const char *visible_list(char *buf, size_t cap) {
    size_t o = 0;
    buf[0] = 0;
    for (const kvl_codec *const *c = kvl_codec_all(); *c; c++) {
        if ((*c)->hidden) continue;
        int w = snprintf(buf + o, cap - o, "%s%s", o ? ", " : "", (*c)->name);
        if (w < 0 || (size_t)w >= cap - o) break;
        o += (size_t)w;
    }
    return buf;
}

kvl_status kvl_codec_spec_parse(const char *spec, int is_v, kvl_codec_spec *out, kvl_err *err) {
    memset(out, 0, sizeof *out);
    if (!spec || !spec[0]) return kvl_err_set(err, KVL_ERR_ARG, "empty KV codec spec");
    if (strlen(spec) > 1000) return kvl_err_set(err, KVL_ERR_ARG, "KV codec spec too long");
    const char *colon = strchr(spec, ':');
    size_t nlen = colon ? (size_t)(colon - spec) : strlen(spec);
    const char *plus = memchr(spec, '+', nlen);
    if (plus) {
        if ((size_t)(spec + nlen - plus) != 4 || strncmp(plus, "+rot", 4) != 0)
            return kvl_err_set(err, KVL_ERR_ARG, "KV codec spec '%s': unknown suffix '%.*s' (only +rot)", spec,
                               (int)(spec + nlen - plus), plus);
        out->prm.rot = 1;
        nlen = (size_t)(plus - spec);
    }
    const kvl_codec *c = find_visible(spec, nlen);
    if (!c) {
        char list[512];
        return kvl_err_set(err, KVL_ERR_ARG, "unknown KV codec '%.*s' (available: %s)", (int)nlen, spec,
                           visible_list(list, sizeof list));
    }
    if (colon) {
        const char *s = colon + 1;
        if (!*s) return kvl_err_set(err, KVL_ERR_ARG, "KV codec spec '%s': empty parameter list", spec);
        while (*s) {
            const char *e = strchr(s, ',');
            const size_t m = e ? (size_t)(e - s) : strlen(s);
            const char *eq = memchr(s, '=', m);
            if (!eq || eq == s || (size_t)(eq - s) >= sizeof out->prm.key[0] ||
                m - (size_t)(eq - s) - 1 >= sizeof out->prm.val[0] || eq + 1 == s + m)
                return kvl_err_set(err, KVL_ERR_ARG, "KV codec spec '%s': bad parameter '%.*s' (want key=value)",
                                   spec, (int)m, s);
            if (out->prm.n == KVL_CODEC_MAX_PARAMS)
                return kvl_err_set(err, KVL_ERR_ARG, "KV codec spec '%s': too many parameters", spec);
            char *k = out->prm.key[out->prm.n], *v = out->prm.val[out->prm.n];
            memcpy(k, s, (size_t)(eq - s));
            k[eq - s] = 0;
            memcpy(v, eq + 1, m - (size_t)(eq - s) - 1);
            v[m - (size_t)(eq - s) - 1] = 0;
            const int ok = (c->seal && strcmp(k, "r") == 0) || in_list(c->params, k);
            if (!ok)
                return kvl_err_set(err, KVL_ERR_ARG, "KV codec '%s': unknown parameter '%s' (takes: %s)", c->name, k,
                                   c->seal ? (c->params ? "r and its own" : "r") : (c->params ? c->params : "none"));
            if (kvl_codec_param(&out->prm, k))
                return kvl_err_set(err, KVL_ERR_ARG, "KV codec spec '%s': parameter '%s' given twice", spec, k);
            out->prm.n++;
            if (!e) break;
            s = e + 1;
            if (!*s) return kvl_err_set(err, KVL_ERR_ARG, "KV codec spec '%s': trailing ','", spec);
        }
    }
    if (c->seal) {
        kvl_status st = kvl_codec_param_int(&out->prm, "r", 0, 1, 1 << 20, &out->residual, err);
        if (st) return st;
    }
    out->c = is_v && c->as_v ? c->as_v : c;
    out->named = c;
    return KVL_OK;
}

void kvl_codec_spec_str(const kvl_codec_spec *s, char *buf, size_t cap) {
    if (!cap) return;
    /* the V half of a pair is named after the codec the user named */
    const char *name = s->named ? s->named->name : s->c ? s->c->name : "(none)";
    if (!s->named)
        for (const kvl_codec *const *c = kvl_codec_all(); *c && s->c; c++)
            if ((*c)->as_v == s->c) {
                name = (*c)->name;
                break;
            }
    size_t o = 0;
    int w = snprintf(buf, cap, "%s%s", name, s->prm.rot ? "+rot" : "");
    o = w < 0 ? 0 : ((size_t)w < cap ? (size_t)w : cap - 1);
    for (int i = 0; i < s->prm.n && o < cap - 1; i++) {
        w = snprintf(buf + o, cap - o, "%c%s=%s", i ? ',' : ':', s->prm.key[i], s->prm.val[i]);
        if (w < 0) break;
        o += (size_t)w < cap - o ? (size_t)w : cap - 1 - o;
    }
}

/* Parse one layer index: N, or -N from the end. */
static int layer_index(const char **s, int n_layer, int *out) {
    char *end;
    errno = 0;
    long x = strtol(*s, &end, 10);
    if (errno || end == *s) return 0;
    if (x < 0) x += n_layer;
    if (x < 0 || x >= n_layer) return 0;
    *s = end;
    *out = (int)x;
    return 1;
}

kvl_status kvl_codec_layers_apply(const char *layers, int n_layer, kvl_codec_spec *k, kvl_codec_spec *v,
                                  kvl_err *err) {
    if (!layers || !layers[0]) return KVL_OK;
    char buf[2048];
    if (strlen(layers) >= sizeof buf) return kvl_err_set(err, KVL_ERR_ARG, "KV layer codecs: string too long");
    strcpy(buf, layers);
    char *save = NULL;
    for (char *g = strtok_r(buf, ";", &save); g; g = strtok_r(NULL, ";", &save)) {
        int side = 3; /* 1 = K, 2 = V */
        if (*g == 'k') side = 1, g++;
        else if (*g == 'v') side = 2, g++;
        char *eq = strchr(g, '=');
        if (!eq || eq == g)
            return kvl_err_set(err, KVL_ERR_ARG, "KV layer codecs: group '%s' needs LAYERS=SPEC", g);
        *eq = 0;
        kvl_codec_spec ks, vs;
        kvl_status st = kvl_codec_spec_parse(eq + 1, 0, &ks, err);
        if (st == KVL_OK) st = kvl_codec_spec_parse(eq + 1, 1, &vs, err);
        if (st) return st;
        const char *s = g;
        while (*s) {
            int a, b;
            if (!layer_index(&s, n_layer, &a))
                return kvl_err_set(err, KVL_ERR_ARG, "KV layer codecs: bad layer in '%s' (the model has %d layers)",
                                   g, n_layer);
            b = a;
            if (*s == '-' && s[1] != '-' && s[1]) { /* range A-B (B not negative) */
                s++;
                if (!layer_index(&s, n_layer, &b) || b < a)
                    return kvl_err_set(err, KVL_ERR_ARG, "KV layer codecs: bad range in '%s'", g);
            }
            for (int l = a; l <= b; l++) {
                if (side & 1) k[l] = ks;
                if (side & 2) v[l] = vs;
            }
            if (*s == ',') s++;
            else if (*s)
                return kvl_err_set(err, KVL_ERR_ARG, "KV layer codecs: unexpected '%c' in '%s'", *s, g);
        }
    }
    return KVL_OK;
}

double kvl_codec_bits_per_value(const kvl_codec *c, int D, int P) {
    return 8.0 * (double)c->seg_bytes(D, P) / ((double)D * P);
}

int kvl_codec_info_get(int i, int head_dim, int page_tokens, kvl_codec_info *out) {
    int k = 0;
    for (const kvl_codec *const *c = kvl_codec_all(); *c; c++) {
        if ((*c)->hidden) continue;
        if (k++ != i) continue;
        const kvl_codec *v = (*c)->as_v ? (*c)->as_v : *c;
        out->name = (*c)->name;
        out->desc = (*c)->desc ? (*c)->desc : "";
        out->sealing = (*c)->seal != NULL;
        out->params = (*c)->params ? (*c)->params : out->sealing ? "r" : "";
        out->bits_k = kvl_codec_bits_per_value(*c, head_dim, page_tokens);
        out->bits_v = kvl_codec_bits_per_value(v, head_dim, page_tokens);
        return 1;
    }
    return 0;
}
