#!/usr/bin/env python3
"""Seed corpus for tests/fuzz_gguf.c (stdlib only; output committed under
tests/fuzz/corpus/fuzz_gguf/). Small, hand-made GGUF files that reach every
part of the reader and of the tokenizer build, so that the fuzzer mutates
from structure instead of having to discover it:

  empty-v2, empty-v3     header only
  types-v3, types-v2     one key of every scalar type, strings, arrays of every
                         element type (empty ones too), tensors of every type
                         kvlite knows (1-4 dims), alignment 32 / 8
  align64                the same with general.alignment 64 and padding
  tok-bpe, tok-bpe-l3    GPT-2 byte-level BPE vocab (256 byte tokens, merges,
                         control and user-defined tokens, ChatML / Llama-3
                         chat template, pre-tokenizers smollm / llama-bpe)
  tok-spm                Llama-2 SentencePiece vocab (scores, <0xXX> bytes)
  model-llama            a complete (tiny, f32) llama model: hparams, vocab,
  model-qwen2            every weight kvl_model_load checks; qwen2 with biases
  trunc-*                prefixes of types-v3 cut inside each section
  bad-*                  magic, version 1, big-endian, impossible counts,
                         alignment 1, a tensor past the end of the file

Usage: scripts/make_fuzz_seeds.py [OUT_DIR]   (default tests/fuzz/corpus/fuzz_gguf)
"""
import os
import struct
import sys

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
T_F32, T_F16, T_Q4_0, T_Q4_1, T_Q5_0, T_Q5_1, T_Q8_0 = 0, 1, 2, 3, 6, 7, 8
T_Q2_K, T_Q4_K, T_Q6_K, T_BF16 = 10, 12, 14, 30
BLOCK = {T_F32: (1, 4), T_F16: (1, 2), T_BF16: (1, 2), T_Q4_0: (32, 18), T_Q4_1: (32, 20), T_Q5_0: (32, 22),
         T_Q5_1: (32, 24), T_Q8_0: (32, 34), T_Q2_K: (256, 84), T_Q4_K: (256, 144), T_Q6_K: (256, 210)}
SCALAR = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f", BOOL: "<?", U64: "<Q",
          I64: "<q", F64: "<d"}


def gstr(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def value(t, v):
    if t == STR:
        return gstr(v)
    if t == ARR:
        et, items = v
        out = struct.pack("<IQ", et, len(items))
        return out + b"".join(value(et, x) for x in items)
    return struct.pack(SCALAR[t], v)


def nbytes(ttype, ne):
    elems, size = BLOCK[ttype]
    n = ne[0] // elems * size
    for d in ne[1:]:
        n *= d
    return n


def gguf(kvs, tensors=(), version=3, alignment=None, data_fill=None):
    """kvs: [(key, type, value)]; tensors: [(name, type, ne, data or None)]."""
    align = alignment or 32
    out = bytearray(b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs)))
    for k, t, v in kvs:
        out += gstr(k) + struct.pack("<I", t) + value(t, v)
    off = 0
    blobs = []
    for name, ttype, ne, data in tensors:
        out += gstr(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", d) for d in ne)
        out += struct.pack("<IQ", ttype, off)
        n = nbytes(ttype, ne)
        if data is None:
            data = bytes((i * 37 + len(name) * 11 + 5) & 0xFF for i in range(n))
            if ttype in (T_F32,):
                data = b"".join(struct.pack("<f", ((i % 7) - 3) * 0.25) for i in range(n // 4))
        assert len(data) == n, (name, len(data), n)
        blobs.append((off, data))
        off = (off + n + align - 1) // align * align
    while len(out) % align:
        out.append(0)
    base = len(out)
    for o, data in blobs:
        while len(out) < base + o:
            out.append(0)
        out += data
    return bytes(out)


def all_types_kvs(alignment):
    kvs = [("general.architecture", STR, "llama"), ("general.name", STR, "fuzz seed"),
           ("t.u8", U8, 200), ("t.i8", I8, -100), ("t.u16", U16, 60000), ("t.i16", I16, -30000),
           ("t.u32", U32, 4000000000), ("t.i32", I32, -2000000000), ("t.f32", F32, 1.5), ("t.bool", BOOL, True),
           ("t.u64", U64, 2**63 + 5), ("t.i64", I64, -(2**62)), ("t.f64", F64, -2.25), ("t.str", STR, "héllo"),
           ("t.empty_str", STR, ""),
           ("a.u8", ARR, (U8, [1, 2, 255])), ("a.i8", ARR, (I8, [-1, 0, 1])), ("a.u16", ARR, (U16, [65535])),
           ("a.i16", ARR, (I16, [-2, 2])), ("a.u32", ARR, (U32, [7, 8, 9])), ("a.i32", ARR, (I32, [-7])),
           ("a.f32", ARR, (F32, [0.5, -0.5])), ("a.bool", ARR, (BOOL, [True, False])),
           ("a.str", ARR, (STR, ["a", "", "ccc"])), ("a.u64", ARR, (U64, [2**64 - 1])),
           ("a.i64", ARR, (I64, [-(2**63)])), ("a.f64", ARR, (F64, [1e300])), ("a.empty", ARR, (U32, [])),
           ("a.empty_str", ARR, (STR, []))]
    if alignment:
        kvs.append(("general.alignment", U32, alignment))
    return kvs


ALL_TENSORS = [("f32.2d", T_F32, [8, 3]), ("f16", T_F16, [16, 2]), ("bf16", T_BF16, [4]), ("q8_0", T_Q8_0, [64, 2]),
               ("q4_0", T_Q4_0, [32]), ("q4_1", T_Q4_1, [32]), ("q5_0", T_Q5_0, [32]), ("q5_1", T_Q5_1, [32, 2]),
               ("q4_k", T_Q4_K, [256]), ("q6_k", T_Q6_K, [256]), ("q2_k", T_Q2_K, [256]),
               ("f32.4d", T_F32, [2, 3, 2, 2]), ("empty", T_F32, [0, 4])]


def types_file(version, alignment):
    return gguf(all_types_kvs(alignment), [(n, t, ne, None) for n, t, ne in ALL_TENSORS], version, alignment)


# ---- tokenizers ----

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


CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
LLAMA3 = ("{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' "
          "+ message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 "
          "== 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if "
          "add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")


def bpe_vocab(specials):
    b2u = bytes_to_unicode()
    toks = [b2u[b] for b in range(256)]
    merges = ["Ġ t", "h e", "Ġt he", "i n", "e r", "Ġ a", "o n", "in g", "Ġ w", "o r"]
    for m in merges:
        a, b = m.split(" ")
        toks.append(a + b)
    types = [1] * len(toks)
    for s, ty in specials:
        toks.append(s)
        types.append(ty)
    return toks, types, merges


def bpe_kvs(pre, specials, template, bos, eos):
    toks, types, merges = bpe_vocab(specials)
    return [("tokenizer.ggml.model", STR, "gpt2"), ("tokenizer.ggml.pre", STR, pre),
            ("tokenizer.ggml.tokens", ARR, (STR, toks)), ("tokenizer.ggml.token_type", ARR, (I32, types)),
            ("tokenizer.ggml.merges", ARR, (STR, merges)),
            ("tokenizer.ggml.bos_token_id", U32, toks.index(bos)), ("tokenizer.ggml.eos_token_id", U32, toks.index(eos)),
            ("tokenizer.ggml.add_bos_token", BOOL, False), ("tokenizer.chat_template", STR, template)], len(toks)


SMOL_SPECIALS = [("<|endoftext|>", 3), ("<|im_start|>", 3), ("<|im_end|>", 3), ("<tool>", 4)]
L3_SPECIALS = [("<|begin_of_text|>", 3), ("<|end_of_text|>", 3), ("<|start_header_id|>", 3),
               ("<|end_header_id|>", 3), ("<|eot_id|>", 3)]


def spm_kvs():
    toks = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % b for b in range(256)]
    types = [2, 3, 3] + [6] * 256
    for w in ["▁", "▁t", "▁a", "he", "▁the", "in", "▁in", "er", "▁w", "or", "s", "e", "t", "a", "h", "n", "r", "w"]:
        toks.append(w)
        types.append(1)
    scores = [0.0, 0.0, 0.0] + [0.0] * 256 + [-float(i) for i in range(len(toks) - 259)]
    return [("tokenizer.ggml.model", STR, "llama"), ("tokenizer.ggml.tokens", ARR, (STR, toks)),
            ("tokenizer.ggml.scores", ARR, (F32, scores)), ("tokenizer.ggml.token_type", ARR, (I32, types)),
            ("tokenizer.ggml.bos_token_id", U32, 1), ("tokenizer.ggml.eos_token_id", U32, 2),
            ("tokenizer.ggml.unknown_token_id", U32, 0), ("tokenizer.ggml.add_bos_token", BOOL, True),
            ("tokenizer.ggml.add_space_prefix", BOOL, True)], len(toks)


# ---- complete tiny models ----

def model_file(arch):
    E, H, KV, F, L = 8, 2, 1, 16, 1
    hd = E // H
    tk, V = bpe_kvs("smollm" if arch == "llama" else "qwen2", SMOL_SPECIALS, CHATML, "<|endoftext|>", "<|im_end|>")
    kvs = [("general.architecture", STR, arch), ("general.name", STR, "fuzz-" + arch)]
    for k, v in [("block_count", L), ("embedding_length", E), ("feed_forward_length", F),
                 ("attention.head_count", H), ("attention.head_count_kv", KV), ("context_length", 64)]:
        kvs.append((arch + "." + k, U32, v))
    kvs += [(arch + ".rope.freq_base", F32, 10000.0), (arch + ".attention.layer_norm_rms_epsilon", F32, 1e-5)]
    if arch == "llama":
        kvs += [(arch + ".rope.dimension_count", U32, hd), (arch + ".rope.scaling.type", STR, "linear"),
                (arch + ".rope.scaling.factor", F32, 2.0)]
    kvs += tk
    t = [("token_embd.weight", T_F32, [E, V]), ("output_norm.weight", T_F32, [E])]
    if arch == "llama":
        t += [("output.weight", T_F16, [E, V]), ("rope_freqs.weight", T_F32, [hd // 2])]
    for i in range(L):
        p = "blk.%d." % i
        t += [(p + "attn_norm.weight", T_F32, [E]), (p + "ffn_norm.weight", T_BF16 if arch == "llama" else T_F32, [E]),
              (p + "attn_q.weight", T_F32, [E, H * hd]), (p + "attn_k.weight", T_F32, [E, KV * hd]),
              (p + "attn_v.weight", T_F16, [E, KV * hd]), (p + "attn_output.weight", T_F32, [H * hd, E]),
              (p + "ffn_gate.weight", T_F32, [E, F]), (p + "ffn_up.weight", T_F32, [E, F]),
              (p + "ffn_down.weight", T_F32, [F, E])]
        if arch == "qwen2":
            t += [(p + "attn_q.bias", T_F32, [H * hd]), (p + "attn_k.bias", T_F32, [KV * hd]),
                  (p + "attn_v.bias", T_F32, [KV * hd])]
    tensors = []
    for n, ty, ne in t:
        data = None
        if n == "rope_freqs.weight":
            data = struct.pack("<%df" % (hd // 2), *([1.0] * (hd // 2)))
        tensors.append((n, ty, ne, data))
    return gguf(kvs, tensors)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/fuzz/corpus/fuzz_gguf"
    os.makedirs(out, exist_ok=True)
    seeds = {}
    seeds["empty-v3"] = gguf([], version=3)
    seeds["empty-v2"] = gguf([], version=2)
    seeds["types-v3"] = types_file(3, 32)
    seeds["types-v2"] = types_file(2, 8)
    seeds["align64"] = types_file(3, 64)
    kv, _ = bpe_kvs("smollm", SMOL_SPECIALS, CHATML, "<|endoftext|>", "<|im_end|>")
    seeds["tok-bpe"] = gguf(kv)
    kv, _ = bpe_kvs("llama-bpe", L3_SPECIALS, LLAMA3, "<|begin_of_text|>", "<|eot_id|>")
    seeds["tok-bpe-l3"] = gguf(kv + [("tokenizer.ggml.eot_token_id", U32, 256 + 10 + 4)])
    kv, _ = spm_kvs()
    seeds["tok-spm"] = gguf(kv)
    seeds["model-llama"] = model_file("llama")
    seeds["model-qwen2"] = model_file("qwen2")
    t = seeds["types-v3"]
    for cut in (3, 20, 60, 300, len(t) // 2, len(t) - 1):
        seeds["trunc-%d" % cut] = t[:cut]
    seeds["bad-magic"] = b"GGUG" + t[4:200]
    seeds["bad-version1"] = b"GGUF" + struct.pack("<I", 1) + t[8:200]
    seeds["bad-bigendian"] = b"GGUF" + struct.pack(">I", 3) + t[8:200]
    seeds["bad-counts"] = b"GGUF" + struct.pack("<IQQ", 3, 2**40, 2**62) + t[24:100]
    seeds["bad-align1"] = gguf([("general.alignment", U32, 1)], [("x", T_F32, [3], None)], alignment=1)
    past = bytearray(gguf([("a", U8, 1)], [("x", T_F32, [4], None)]))
    seeds["bad-past-end"] = bytes(past[:-4])
    for name, data in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    print("%d seeds, %d bytes, in %s" % (len(seeds), sum(len(d) for d in seeds.values()), out))


if __name__ == "__main__":
    main()
