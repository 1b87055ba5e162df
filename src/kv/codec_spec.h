/* Codec specs: the strings that name a codec instance, parsed and checked.
 *
 *   SPEC   := NAME ["+rot"] [":" KEY "=" VALUE {"," KEY "=" VALUE}]
 *   e.g.      int4   int4+rot   kivi2:r=64   oaken:calib=/path/file
 *   LAYERS := GROUP {";" GROUP}      GROUP := ["k"|"v"] LIST "=" SPEC
 *   LIST   := ITEM {"," ITEM}        ITEM  := N | A "-" B | "-" N (from the end: -1 = last layer)
 *   e.g.      0,1,-2,-1=int8         k0-3=int8;v29=f16
 *
 * Keys every sealing codec takes: r (residual tokens kept at full precision,
 * a multiple of the page size, default one page). Other keys are the
 * codec's own (kvl_codec.params). An unknown name, key, or a bad value is a
 * KVL_ERR_ARG whose message names it. */
#ifndef KVL_KV_CODEC_SPEC_H
#define KVL_KV_CODEC_SPEC_H

#include "kv/codec.h"

#define KVL_CODEC_MAX_PARAMS 8

struct kvl_codec_params {
    int n;
    char key[KVL_CODEC_MAX_PARAMS][16];
    char val[KVL_CODEC_MAX_PARAMS][256];
    int rot;                /* "+rot" */
    const char *model_path; /* the GGUF's path, for files kept next to it (may be NULL) */
};

/* One side (K or V) of a parsed spec. */
typedef struct kvl_codec_spec {
    const kvl_codec *c;  /* the codec for this side (as_v applied for V) */
    const kvl_codec *named; /* the codec the spec names (c, or its K twin for V) */
    kvl_codec_params prm;
    int residual;        /* r (sealing codecs; 0 = one page) */
} kvl_codec_spec;

/* Parse spec for the K side (is_v = 0) or the V side (is_v = 1). */
kvl_status kvl_codec_spec_parse(const char *spec, int is_v, kvl_codec_spec *out, kvl_err *err);
/* Value of key in prm, or NULL. */
const char *kvl_codec_param(const kvl_codec_params *prm, const char *key);
/* Integer / float parameter with a default; KVL_ERR_ARG naming the key on a bad value or out of [lo, hi]. */
kvl_status kvl_codec_param_int(const kvl_codec_params *prm, const char *key, int def, int lo, int hi, int *out,
                               kvl_err *err);
kvl_status kvl_codec_param_float(const kvl_codec_params *prm, const char *key, double def, double lo, double hi,
                                 double *out, kvl_err *err);
/* Canonical text of a spec side into buf (name[+rot][:k=v,...]). */
void kvl_codec_spec_str(const kvl_codec_spec *s, char *buf, size_t cap);

/* Apply a LAYERS override string to per-layer specs: for each group, the
 * listed layers' K and/or V sides are replaced. k, v: [n_layer]. */
kvl_status kvl_codec_layers_apply(const char *layers, int n_layer, kvl_codec_spec *k, kvl_codec_spec *v,
                                  kvl_err *err);

/* Exact bits per cached value of a codec at head_dim D, page P, for a full
 * page (sealing codecs: sealed size). */
double kvl_codec_bits_per_value(const kvl_codec *c, int D, int P);

#endif
