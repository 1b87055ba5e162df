#!/usr/bin/env bash
"exec" "${KVL_REF_PY:-/root/.cache/kvlite/refvenv/bin/python}" "$0" "$@"
"""Tiny synthetic GGUF models (random, seeded weights) and their Hugging Face
transformers references, for tests/test_arch.c: they exercise the loader and
kernel paths the default model (SmolLM2-135M: llama, Q4_1 + Q8_0, tied
embeddings) does not reach.

Variants (tests/data/tiny/NAME.gguf + NAME.ref):
  llama_q      llama, separate output.weight, Q4_0 / Q5_0 / Q5_1 / Q8_0 mixed
               over the tensors (each type on several roles), GQA 2/1, n_ff 192
  llama_k      llama, Q4_K + Q6_K (Q6_K token_embd, tied: no output.weight),
               GQA 4/1, head_dim 64
  llama_f16    llama, F16 / BF16 matrices (two F32 ones), F16 output.weight, an
               F16 and a BF16 norm vector, linear RoPE scaling (factor 2)
  qwen2_q8     qwen2, Q8_0, F32 Q/K/V biases, NeoX RoPE, theta 1e6, tied
  llama3_rope  llama, Q8_0 + Q4_1, rope_freqs.weight (Llama-3.1 style RoPE
               scaling, factors computed as llama.cpp's converter does), MHA,
               n_ff 192 (not a power of two)

How a reference is made: random float weights (numpy, seeded) are laid out as
llama.cpp's convert_hf_to_gguf.py lays out a Hugging Face checkpoint (for
llama, the Q and K rows of each head permuted so the rotated pairs are
adjacent: gguf row 2i+j of a head = HF row j*head_dim/2 + i; qwen2 keeps HF
order, NeoX rotation), quantized and written with the gguf package. The file is
then read back with gguf.GGUFReader, every tensor de-quantized with
gguf.quants.dequantize (Q/K rows un-permuted), and loaded into a
LlamaForCausalLM / Qwen2ForCausalLM (float32, eager attention). So kvlite and
the reference run the same weights and differ only in arithmetic.

The gguf package (0.19) cannot quantize K-quants, so Q4_K and Q6_K are
encoded here (simple min/max and signed-absmax encoders; any valid encoding
will do since the reference de-quantizes what is in the file). Round trips are
checked against the original floats.

The reference run: a fixed sequence of N_TOK token ids (seeded), full logits at
a few positions, N_GREEDY greedy ids (full re-computation each step), and an
emulation of kvlite's default (non-exact) matmul path: every nn.Linear input
rounded to int8 blocks the way kvlite quantizes activations for that weight's
type (Q8_0/Q8_1 blocks of 32 with an fp16 scale; Q8_K blocks of 256 with an
f32 scale; none for float weights). Its error against the float reference is
written into the .ref as comment lines and printed: the level the C test's
quantized-path tolerance is derived from. (kvlite's default path reproduces
this emulation to ~6e-6 on the 48-token prefill; --emul-out DIR writes .ref
files holding the emulated logits, so `KVL_TINY_DIR=DIR build/tests/test_arch`
measures kvlite against the emulation instead of the float reference. The
emulated greedy rows differ more, because transformers' float32 matmuls over a
longer sequence round differently and int8 rounding amplifies 1-ulp changes.)

.ref format (whitespace-separated words; a word starting with '#' comments out
the rest of its line):
  tiny_ref 1
  file NAME.gguf
  info arch A n_layer L n_embd E n_head H n_head_kv K head_dim D n_ff F
       n_vocab V n_ctx_train C rope_theta T norm_eps EPS bos B eos S eot U
  tokens N id...
  logits P V            P rows follow:
  pos I logit*V         logits of position I (after tokens[0..I])
  greedy G              G rows follow:
  step J ID TOP1 MARGIN greedy step J: argmax ID after the prompt + J chosen ids,
                        its logit and the top1 - top2 margin
  end

Usage: scripts/make_tiny_models.py [--only NAME] [--out DIR] [--emul-out DIR]
Deterministic: re-running it reproduces the committed files byte for byte
(with the same numpy / gguf / torch / transformers).
Not run in CI (needs torch, transformers, gguf); the outputs are committed.
"""
import argparse
import math
import os

import numpy as np

import gguf
from gguf import GGMLQuantizationType as QT
from gguf.quants import dequantize, quantize

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "tiny")
N_TOK = 48
POSITIONS = [0, 1, 9, 23, 40, 47]
N_GREEDY = 16
EMUL_OUT = None
MIN_MARGIN = 0.02  # reference top1-top2 margins below this are re-seeded away (see pick_tokens)

# ---------------------------------------------------------------- tokenizer


def bytes_to_unicode():
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


MERGES = ["Ġ t", "h e", "Ġt he", "i n", "e r", "a n", "o n", "Ġ a", "r e", "Ġ s", "e n", "a t", "o r",
          "Ġ w", "e s", "Ġ o", "i s", "Ġ c", "i t", "Ġ b", "a l", "a r", "Ġ f", "Ġ p", "o u", "Ġ m",
          "e d", "l e", "Ġ in", "n d", "in g", "Ġ d", "Ġ h", "i c", "Ġo f", "a s", "Ġ l", "l l",
          "Ġa n", "Ġan d", "o m"]
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
          "{% endif %}")


def vocab():
    b2u = bytes_to_unicode()
    toks = [b2u[b] for b in range(256)]
    types = [gguf.TokenType.NORMAL] * 256
    for m in MERGES:
        a, b = m.split(" ")
        assert a in toks and b in toks, m
        toks.append(a + b)
        types.append(gguf.TokenType.NORMAL)
    for s in SPECIALS:
        toks.append(s)
        types.append(gguf.TokenType.CONTROL)
    assert len(set(toks)) == len(toks)
    return toks, types


TOKENS, TOKEN_TYPES = vocab()
N_VOCAB = len(TOKENS)  # 300
BOS = TOKENS.index("<|endoftext|>")
EOS = TOKENS.index("<|im_end|>")

# ---------------------------------------------------------------- K-quant encoders

QK_K = 256


def f16(x):
    return np.asarray(x, dtype=np.float32).astype(np.float16)


def quant_q4_k(x):
    """x [rows][cols], cols % 256 == 0 -> uint8 [rows][cols/256*144]. x = d*sc*q - dmin*m."""
    rows, cols = x.shape
    xb = x.reshape(-1, 8, 32).astype(np.float32)
    nb = xb.shape[0]
    lo = np.minimum(xb.min(-1), 0)
    hi = np.maximum(xb.max(-1), 0)
    scale = (hi - lo) / 15
    mins = -lo
    d = f16(scale.max(-1) / 63)
    dmin = f16(mins.max(-1) / 63)
    df, dminf = d.astype(np.float32)[:, None], dmin.astype(np.float32)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        sc = np.where(df > 0, np.rint(scale / df), 0).clip(0, 63).astype(np.uint8)
        m = np.where(dminf > 0, np.rint(mins / dminf), 0).clip(0, 63).astype(np.uint8)
        es = (df * sc)[..., None]
        em = (dminf * m)[..., None]
        q = np.where(es > 0, np.rint((xb + em) / es), 0).clip(0, 15).astype(np.uint8)
    scales = np.zeros((nb, 12), np.uint8)
    scales[:, 0:4] = (sc[:, 0:4] & 63) | ((sc[:, 4:8] >> 4) << 6)
    scales[:, 4:8] = (m[:, 0:4] & 63) | ((m[:, 4:8] >> 4) << 6)
    scales[:, 8:12] = (sc[:, 4:8] & 15) | ((m[:, 4:8] & 15) << 4)
    q = q.reshape(nb, 4, 2, 32)
    qs = (q[:, :, 0, :] | (q[:, :, 1, :] << 4)).reshape(nb, 128)
    blk = np.concatenate([d.reshape(nb, 1).view(np.uint8), dmin.reshape(nb, 1).view(np.uint8), scales, qs], axis=1)
    assert blk.shape[1] == 144
    return blk.reshape(rows, -1)


def quant_q6_k(x):
    """x [rows][cols] -> uint8 [rows][cols/256*210]. x = d*scales[j]*(q-32), signed scales
    (signed-absmax as llama.cpp: the largest-magnitude value maps to -32, d may be negative)."""
    rows, cols = x.shape
    xb = x.reshape(-1, 16, 16).astype(np.float32)
    nb = xb.shape[0]
    idx = np.abs(xb).argmax(-1)
    smax = np.take_along_axis(xb, idx[..., None], -1)[..., 0]  # signed value of largest magnitude
    scale = smax / -32
    j = np.abs(scale).argmax(-1)
    big = np.take_along_axis(scale, j[:, None], -1)[:, 0]
    d = f16(big / -128)
    df = d.astype(np.float32)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        sc = np.where(df != 0, np.rint(scale / df), 0).clip(-128, 127).astype(np.int8)
        es = (df * sc)[..., None]
        q = (np.where(es != 0, np.rint(xb / es), 0).clip(-32, 31) + 32).astype(np.uint8)
    q = q.reshape(nb, 256)
    q4 = q.reshape(nb, 2, 2, 64)
    ql = ((q4[:, :, 0, :] & 15) | ((q4[:, :, 1, :] & 15) << 4)).reshape(nb, 128)
    q2 = q.reshape(nb, 2, 4, 32)
    qh = np.zeros((nb, 2, 32), np.uint8)
    for s in range(4):
        qh |= ((q2[:, :, s, :] >> 4) & 3) << (2 * s)
    blk = np.concatenate([ql, qh.reshape(nb, 64), sc.view(np.uint8), d.reshape(nb, 1).view(np.uint8)], axis=1)
    assert blk.shape[1] == 210
    return blk.reshape(rows, -1)


def encode(x, t):
    """float32 [rows][cols] -> array to write with raw_dtype t (None for F32/F16)."""
    if t == QT.F32:
        return x.astype(np.float32)
    if t == QT.F16:
        return x.astype(np.float16)
    if t == QT.Q4_K:
        return quant_q4_k(x)
    if t == QT.Q6_K:
        return quant_q6_k(x)
    return quantize(x.astype(np.float32), t)


# ---------------------------------------------------------------- variants


MATS = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"]


def types_rot(pool):
    """Tensor type per matrix: rotates through pool so each type lands on several roles."""
    return lambda l, k: pool[(l * 3 + MATS.index(k)) % len(pool)]


VARIANTS = {
    "llama_q": dict(arch="llama", E=64, H=2, KV=1, F=192, L=2, theta=10000.0, eps=1e-6, tied=False, ctx=2048,
                    mat=types_rot([QT.Q4_0, QT.Q5_0, QT.Q5_1, QT.Q8_0]), embd=QT.Q5_0, out=QT.Q8_0, seed=1),
    "llama_k": dict(arch="llama", E=256, H=4, KV=1, F=256, L=2, theta=10000.0, eps=1e-5, tied=True, ctx=4096,
                    mat=types_rot([QT.Q4_K, QT.Q6_K]), embd=QT.Q6_K, seed=2),
    "llama_f16": dict(arch="llama", E=64, H=2, KV=1, F=128, L=2, theta=10000.0, eps=1e-6, tied=False, ctx=1024,
                      mat=types_rot([QT.F16, QT.BF16]), embd=QT.BF16, out=QT.F16, rope_linear=2.0,
                      mat_override={(0, "attn_v"): QT.F32, (1, "attn_k"): QT.F32},
                      norm_types={(1, "attn_norm"): QT.F16, (1, "ffn_norm"): QT.BF16}, seed=3),
    "qwen2_q8": dict(arch="qwen2", E=128, H=4, KV=2, F=128, L=2, theta=1000000.0, eps=1e-6, tied=True, ctx=32768,
                     mat=types_rot([QT.Q8_0]), embd=QT.Q8_0, seed=4),
    "llama3_rope": dict(arch="llama", E=64, H=2, KV=2, F=192, L=2, theta=500000.0, eps=1e-5, tied=False, ctx=512,
                        mat=types_rot([QT.Q8_0, QT.Q4_1]), embd=QT.Q8_0, out=QT.Q4_1,
                        llama3=dict(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                    original_max_position_embeddings=64), seed=5),
}


def hf_config(v):
    from transformers import LlamaConfig, Qwen2Config

    hd = v["E"] // v["H"]
    rope = {"rope_type": "default", "rope_theta": v["theta"]}
    if v.get("rope_linear"):
        rope = {"rope_type": "linear", "factor": v["rope_linear"], "rope_theta": v["theta"]}
    if v.get("llama3"):
        rope = dict(rope_type="llama3", rope_theta=v["theta"], **v["llama3"])
    kw = dict(hidden_size=v["E"], num_attention_heads=v["H"], num_key_value_heads=v["KV"], head_dim=hd,
              intermediate_size=v["F"], num_hidden_layers=v["L"], vocab_size=N_VOCAB, rms_norm_eps=v["eps"],
              max_position_embeddings=v["ctx"], tie_word_embeddings=v["tied"], rope_parameters=rope,
              bos_token_id=BOS, eos_token_id=EOS, pad_token_id=None)
    if v["arch"] == "llama":
        return LlamaConfig(attention_bias=False, mlp_bias=False, **kw)
    return Qwen2Config(use_sliding_window=False, **kw)


def random_weights(v):
    """HF-named float32 tensors."""
    rng = np.random.default_rng(1000 + v["seed"])
    E, H, KV, F, L = v["E"], v["H"], v["KV"], v["F"], v["L"]
    hd = E // H
    g = lambda *shape, s=1.0: (rng.standard_normal(shape) * s).astype(np.float32)
    w = {}
    # tied: the embedding is also the output projection, keep logits ~N(0, 3^2)
    w["model.embed_tokens.weight"] = g(N_VOCAB, E, s=3.0 / math.sqrt(E) if v["tied"] else 1.0)
    if not v["tied"]:
        w["lm_head.weight"] = g(N_VOCAB, E, s=3.0 / math.sqrt(E))
    w["model.norm.weight"] = 1.0 + g(E, s=0.2)
    for l in range(L):
        p = f"model.layers.{l}."
        w[p + "input_layernorm.weight"] = 1.0 + g(E, s=0.2)
        w[p + "post_attention_layernorm.weight"] = 1.0 + g(E, s=0.2)
        w[p + "self_attn.q_proj.weight"] = g(H * hd, E, s=1 / math.sqrt(E))
        w[p + "self_attn.k_proj.weight"] = g(KV * hd, E, s=1 / math.sqrt(E))
        w[p + "self_attn.v_proj.weight"] = g(KV * hd, E, s=1 / math.sqrt(E))
        w[p + "self_attn.o_proj.weight"] = g(E, H * hd, s=1 / math.sqrt(H * hd))
        w[p + "mlp.gate_proj.weight"] = g(F, E, s=1 / math.sqrt(E))
        w[p + "mlp.up_proj.weight"] = g(F, E, s=1 / math.sqrt(E))
        w[p + "mlp.down_proj.weight"] = g(E, F, s=1 / math.sqrt(F))
        if v["arch"] == "qwen2":
            w[p + "self_attn.q_proj.bias"] = g(H * hd, s=0.5)
            w[p + "self_attn.k_proj.bias"] = g(KV * hd, s=0.5)
            w[p + "self_attn.v_proj.bias"] = g(KV * hd, s=0.5)
    return w


def permute(w, n_head):
    """llama.cpp's Q/K permutation (HF rotate-half layout -> adjacent pairs)."""
    r = w.shape[0]
    return w.reshape(n_head, 2, r // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute(w, n_head):
    r = w.shape[0]
    return w.reshape(n_head, r // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


HF2GGUF = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
           "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
           "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}


def gguf_name(hf):
    if hf == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf == "lm_head.weight":
        return "output.weight"
    if hf == "model.norm.weight":
        return "output_norm.weight"
    parts = hf.split(".")  # model.layers.L.<mod...>.weight|bias
    l, mod, kind = parts[2], ".".join(parts[3:-1]), parts[-1]
    return f"blk.{l}.{HF2GGUF[mod]}.{kind}"


def tensor_type(v, hf):
    if hf == "model.embed_tokens.weight":
        return v["embd"]
    if hf == "lm_head.weight":
        return v["out"]
    parts = hf.split(".")
    if hf == "model.norm.weight" or parts[-1] == "bias":
        return QT.F32
    l, mod = int(parts[2]), HF2GGUF[".".join(parts[3:-1])]
    if mod in ("attn_norm", "ffn_norm"):
        return v.get("norm_types", {}).get((l, mod), QT.F32)
    return v.get("mat_override", {}).get((l, mod)) or v["mat"](l, mod)


def llama3_factors(v):
    """rope_freqs.weight as llama.cpp's converter computes it for rope_type llama3."""
    r = v["llama3"]
    hd = v["E"] // v["H"]
    base = v["theta"]
    freqs = 1.0 / (base ** (np.arange(0, hd, 2, dtype=np.float32) / hd))
    factor, lo, hi = r["factor"], r["low_freq_factor"], r["high_freq_factor"]
    old = r["original_max_position_embeddings"]
    lo_wl, hi_wl = old / lo, old / hi
    out = []
    for f in freqs:
        wl = 2 * math.pi / f
        if wl < hi_wl:
            out.append(1.0)
        elif wl > lo_wl:
            out.append(factor)
        else:
            s = (old / wl - lo) / (hi - lo)
            out.append(1.0 / ((1 - s) / factor + s))
    return np.array(out, dtype=np.float32)


def write_gguf(name, v, w, path):
    E, H, KV = v["E"], v["H"], v["KV"]
    hd = E // H
    arch = v["arch"]
    wr = gguf.GGUFWriter(path, arch)
    wr.add_name(f"kvlite-tiny-{name}")
    wr.add_context_length(v["ctx"])
    wr.add_embedding_length(E)
    wr.add_block_count(v["L"])
    wr.add_feed_forward_length(v["F"])
    wr.add_head_count(H)
    wr.add_head_count_kv(KV)
    wr.add_rope_freq_base(v["theta"])
    wr.add_layer_norm_rms_eps(v["eps"])
    if arch == "llama":
        wr.add_rope_dimension_count(hd)
        wr.add_vocab_size(N_VOCAB)
    if v.get("rope_linear"):
        wr.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        wr.add_rope_scaling_factor(v["rope_linear"])
    wr.add_tokenizer_model("gpt2")
    wr.add_tokenizer_pre("gpt2")
    wr.add_token_list(TOKENS)
    wr.add_token_types(TOKEN_TYPES)
    wr.add_token_merges(MERGES)
    wr.add_bos_token_id(BOS)
    wr.add_eos_token_id(EOS)
    wr.add_add_bos_token(False)
    wr.add_chat_template(CHATML)
    if v.get("llama3"):
        wr.add_tensor("rope_freqs.weight", llama3_factors(v))
    stats = []
    for hf, x in w.items():
        t = tensor_type(v, hf)
        gx = x
        if arch == "llama" and ".q_proj." in hf:
            gx = permute(x, H)
        elif arch == "llama" and ".k_proj." in hf:
            gx = permute(x, KV)
        data = encode(gx if gx.ndim == 2 else gx.reshape(1, -1), t)
        if gx.ndim == 1:
            data = data.reshape(-1)
        if t in (QT.F32, QT.F16):
            wr.add_tensor(gguf_name(hf), data)
        else:
            wr.add_tensor(gguf_name(hf), data, raw_dtype=t)
        stats.append((gguf_name(hf), t.name))
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()
    return stats


def read_back(v, path, w_orig):
    """HF state dict from the written file (de-quantized, Q/K un-permuted)."""
    import torch

    r = gguf.GGUFReader(path)
    by_name = {t.name: t for t in r.tensors}
    sd = {}
    for hf, x in w_orig.items():
        t = by_name[gguf_name(hf)]
        y = dequantize(t.data, t.tensor_type).astype(np.float32).reshape(x.shape)
        if v["arch"] == "llama" and ".q_proj." in hf:
            y = unpermute(y, v["H"])
        elif v["arch"] == "llama" and ".k_proj." in hf:
            y = unpermute(y, v["KV"])
        # the quantization round trip must be close (catches a wrong K-quant packing)
        rel = float(np.abs(y - x).max() / (np.abs(x).max() + 1e-12))
        lim = {QT.F32: 0, QT.F16: 1e-3, QT.BF16: 8e-3, QT.Q8_0: 1e-2, QT.Q6_K: 5e-2, QT.Q5_0: 0.05,
               QT.Q5_1: 0.05, QT.Q4_0: 0.1, QT.Q4_1: 0.1, QT.Q4_K: 0.1}[t.tensor_type]
        assert rel <= lim, (hf, t.tensor_type.name, rel)
        sd[hf] = torch.from_numpy(y.copy())
    if v["tied"]:
        sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
    rf = by_name.get("rope_freqs.weight")
    return sd, (np.array(rf.data, dtype=np.float32) if rf is not None else None)


def build_hf(v, sd):
    import torch
    from transformers import LlamaForCausalLM, Qwen2ForCausalLM

    cfg = hf_config(v)
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    cls = LlamaForCausalLM if v["arch"] == "llama" else Qwen2ForCausalLM
    model = cls(cfg).float().eval()
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.endswith("rotary_emb.inv_freq")]
    assert not missing and not unexpected, (missing, unexpected)
    if v["tied"]:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr() or torch.equal(
            model.lm_head.weight, model.model.embed_tokens.weight)
    return model


# ---------------------------------------------------------------- activation-quantization emulation


def q8_blocks(x, bs, fp16_scale):
    """kvlite's activation rounding: blocks of bs, d = amax/127 (fp16 or f32), round half away."""
    import torch

    b = x.reshape(-1, bs).double()
    amax = b.abs().amax(1, keepdim=True)
    d = amax / 127
    d = d.float().half().double() if fp16_scale else d.float().double()
    y = b * torch.where(amax > 0, 127 / amax, torch.zeros_like(amax))
    return (torch.sign(y) * torch.floor(y.abs() + 0.5) * d).reshape(x.shape).float()


def act_quant_for(t):
    if t in (QT.Q8_0, QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1):
        return lambda x: q8_blocks(x, 32, True)
    if t in (QT.Q4_K, QT.Q6_K):
        return lambda x: q8_blocks(x, 256, False)
    return lambda x: x


def run_ref(model, ids, emul_types=None):
    """logits [n][V] (float64 numpy) of model on ids; with emul_types (module -> type), Linear inputs
    are rounded as kvlite's default matmuls round them."""
    import torch

    hooks = []
    if emul_types:
        for mod, t in emul_types.items():
            f = act_quant_for(t)
            hooks.append(mod.register_forward_pre_hook(lambda m, a, f=f: (f(a[0]),)))
    try:
        with torch.no_grad():
            out = model(torch.tensor([ids])).logits[0].double().numpy()
    finally:
        for h in hooks:
            h.remove()
    return out


def greedy(model, ids, n, emul_types=None):
    ids = list(ids)
    steps = []
    for _ in range(n):
        row = run_ref(model, ids, emul_types)[-1]
        o = np.argsort(-row)
        steps.append((int(o[0]), float(row[o[0]]), float(row[o[0]] - row[o[1]])))
        ids.append(int(o[0]))
    return steps


def emul_types_of(v, model):
    m = {}
    for name, mod in model.named_modules():
        if name.endswith(("_proj",)) and hasattr(mod, "weight"):
            m[mod] = tensor_type(v, name + ".weight")
    m[model.lm_head] = v["embd"] if v["tied"] else v["out"]
    return m


def pick_tokens(model, seed):
    """A seeded id sequence whose reference margins (sampled positions and greedy steps) are all
    >= MIN_MARGIN, so float32 round-off (~1e-5) cannot flip an argmax in the exact-path checks."""
    for k in range(50):
        rng = np.random.default_rng(seed * 100 + k)
        ids = [int(i) for i in rng.integers(0, N_VOCAB, N_TOK)]
        lg = run_ref(model, ids)
        margins = [np.diff(np.sort(lg[p])[-2:])[0] for p in POSITIONS]
        if min(margins) < MIN_MARGIN:
            continue
        st = greedy(model, ids, N_GREEDY)
        if min(s[2] for s in st) < MIN_MARGIN:
            continue
        return ids, lg, st
    raise SystemExit("no token sequence with clear margins")


def fmt(x):
    return "%.7g" % x


def make(name, v, out_dir):
    import torch

    torch.set_num_threads(2)
    path = os.path.join(out_dir, name + ".gguf")
    w = random_weights(v)
    stats = write_gguf(name, v, w, path)
    sd, rf = read_back(v, path, w)
    if v.get("llama3"):
        assert np.allclose(rf, llama3_factors(v))
    model = build_hf(v, sd)
    ids, lg, steps = pick_tokens(model, v["seed"])

    # emulation of the int8-activation path
    et = emul_types_of(v, model)
    em = run_ref(model, ids, et)
    d = np.abs(em - lg)
    flips = [round(float(np.diff(np.sort(lg[i])[-2:])[0]), 4) for i in range(len(ids))
             if int(em[i].argmax()) != int(lg[i].argmax())]
    esteps = greedy(model, ids, N_GREEDY, et)
    gsame = next((j for j in range(N_GREEDY) if esteps[j][0] != steps[j][0]), N_GREEDY)
    amax = float(np.abs(lg).max())
    summary = (f"{name}: logits |max| {amax:.2f}, ref margins min {min(s[2] for s in steps):.3f} (greedy); "
               f"int8-activation emulation: logit err max {d.max():.4f} mean {d.mean():.5f} over all {len(ids)} "
               f"positions, at the sampled positions max {d[POSITIONS].max():.4f}; argmax flips {len(flips)} "
               f"at ref margins {flips}; emulated greedy identical {gsame}/{N_GREEDY}")
    print(summary)

    hd = v["E"] // v["H"]
    lines = ["tiny_ref 1",
             "# written by scripts/make_tiny_models.py; transformers float32 eager on the de-quantized weights",
             "# tensor types: " + " ".join(f"{n}={t}" for n, t in stats),
             "# " + summary,
             f"file {name}.gguf",
             f"info arch {v['arch']} n_layer {v['L']} n_embd {v['E']} n_head {v['H']} n_head_kv {v['KV']} "
             f"head_dim {hd} n_ff {v['F']} n_vocab {N_VOCAB} n_ctx_train {v['ctx']} rope_theta {fmt(v['theta'])} "
             f"norm_eps {fmt(v['eps'])} bos {BOS} eos {EOS} eot {EOS}",
             f"tokens {len(ids)} " + " ".join(map(str, ids)),
             f"logits {len(POSITIONS)} {N_VOCAB}"]
    for p in POSITIONS:
        lines.append(f"pos {p} " + " ".join(fmt(x) for x in lg[p]))
    lines.append(f"greedy {N_GREEDY}")
    for j, (i, top, mg) in enumerate(steps):
        lines.append(f"step {j} {i} {fmt(top)} {fmt(mg)}")
    lines.append("end")
    with open(os.path.join(out_dir, name + ".ref"), "w") as f:
        f.write("\n".join(lines) + "\n")
    if EMUL_OUT:  # debugging aid: the same .ref with the emulated logits
        os.makedirs(EMUL_OUT, exist_ok=True)
        el = [l for l in lines if not l.startswith(("pos ", "step "))]
        i = el.index("greedy %d" % N_GREEDY)
        rows = [f"pos {p} " + " ".join(fmt(x) for x in em[p]) for p in POSITIONS]
        st = [f"step {j} {a} {fmt(b)} {fmt(c)}" for j, (a, b, c) in enumerate(esteps)]
        el = el[:i] + rows + [el[i]] + st + el[i + 1:]
        with open(os.path.join(EMUL_OUT, name + ".ref"), "w") as f:
            f.write("\n".join(el) + "\n")
        dst = os.path.join(EMUL_OUT, name + ".gguf")
        if not os.path.exists(dst):
            os.symlink(os.path.abspath(path), dst)
    return os.path.getsize(path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", help="variant name (repeatable)")
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--emul-out", help="also write .ref files holding the int8-emulation logits here")
    args = ap.parse_args()
    global EMUL_OUT
    EMUL_OUT = args.emul_out
    os.makedirs(args.out, exist_ok=True)
    for name, v in VARIANTS.items():
        if args.only and name not in args.only:
            continue
        sz = make(name, v, args.out)
        print(f"  wrote {name}.gguf ({sz} bytes) and {name}.ref")


if __name__ == "__main__":
    main()
