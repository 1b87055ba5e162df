#!/usr/bin/env python3
"""Dump Hugging Face reference tokenizations for tests/test_tok.c.

Intent: the C tokenizer (src/model/tok*.c) must agree id-for-id with the
Hugging Face tokenizer of the default model (SmolLM2-135M-Instruct). This
script, run once with the reference venv (transformers, tokenizers, jinja2;
not needed in CI), writes:

  tests/data/tok_ref.txt   texts (byte-exact escaped) + ids with parse_special
                           on ("S") and off ("N"), and whole-file token counts
                           + FNV-1a hashes of the id sequences ("F") for every
                           file of the shared evaluation data.
  tests/data/tok_chat.txt  chat template renderings (ChatML from the model's
                           own template via apply_chat_template; Llama-3 from
                           the official Llama-3-Instruct template rendered with
                           the same jinja2 environment transformers uses).

Pre-tokenizer note: transformers' GGUF -> tokenizers conversion builds a plain
ByteLevel pre-tokenizer (GPT-2 regex) for this model and drops the
Digits(individual_digits=True) step of SmolLM2's original tokenizer.json.
llama.cpp's "smollm" pre-tokenizer (and kvlite) split every \\p{N} first, as the
original tokenizer.json does. The reference therefore rebuilds the original
pipeline: Sequence([Digits(individual_digits=True), ByteLevel(add_prefix_space=
False, use_regex=True)]). The script reports how many texts the raw GGUF
conversion would tokenize differently (mostly whitespace runs before digits).

Usage: /root/.cache/kvlite/refvenv/bin/python scripts/ref_tokenizer.py
       [--model-dir DIR] [--gguf NAME] [--data DIR] [--out-dir tests/data]
"""
import argparse
import json
import os
import random
import sys

MODEL_DIR = os.path.expanduser("~/.cache/kvlite")
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


def esc(b: bytes) -> str:
    """Byte-exact one-line escape: printable ASCII stays (space too, except a
    trailing one), backslash and everything else become \\xHH."""
    out = []
    for i, c in enumerate(b):
        if (0x21 <= c <= 0x7E and c != 0x5C) or (c == 0x20 and i != len(b) - 1):
            out.append(chr(c))
        else:
            out.append("\\x%02x" % c)
    return "".join(out)


def fnv_ids(ids):
    """FNV-1a 64 over the ids as little-endian u32 (same as the C test)."""
    h = 0xCBF29CE484222325
    for t in ids:
        for k in range(4):
            h ^= (t >> (8 * k)) & 0xFF
            h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def edge_cases():
    E = []
    add = lambda name, s: E.append((name, s.encode("utf-8") if isinstance(s, str) else s))
    add("empty", "")
    add("hello", "Hello world")
    add("emoji", "I love 🤗 and 🚀🚀 rockets! 😀😃")
    add("emoji_zwj", "Family: 👨‍👩‍👧‍👦 and 👩🏽‍💻 coder, 🏳️‍🌈 flag")
    add("emoji_skin", "👍🏻👍🏼👍🏽👍🏾👍🏿 ok")
    add("cjk", "你好，世界！日本語のテキスト。한국어 텍스트.")
    add("arabic", "مرحبا بالعالم، هذا نص عربي ١٢٣")
    add("hebrew_hindi", "שלום עולם नमस्ते दुनिया")
    add("combining", "e\u0301 n\u0303 a\u0308\u0304 Z\u0335\u0321\u031b")
    add("nfc_nfd", "café cafe\u0301 Å Å")
    for n in range(1, 11):
        add("spaces%d" % n, "a" + " " * n + "b")
        add("tabs%d" % n, "a" + "\t" * n + "b")
        add("newlines%d" % n, "a" + "\n" * n + "b")
        add("only_spaces%d" % n, " " * n)
        add("sp_digit%d" % n, "x" + " " * n + "12")
    add("mixed_ws1", " \t\n \r\n\t\t  \n\n x \t y\n")
    add("mixed_ws2", "\n\n\n   \t\t\n  foo  \n\t bar \r\n\r\n")
    add("crlf", "line1\r\nline2\r\n\r\nline3")
    add("lead_trail", "   leading and trailing   ")
    add("lead_nl", "\nnewline first")
    add("trail_nl", "newline last\n")
    add("digits1", "1234567")
    add("digits2", "3.14159 and 2,718,281 or 1e-10")
    add("digits3", "In 1984, 42 people paid $19.99 each (total: 838.58).")
    add("digits_uni", "Numbers: ² ½ Ⅻ ٣٤ ५६ ①② 𝟙")
    add("contractions", "I'm sure don't won't they're we've he'll she'd it's")
    add("contractions_caps", "I'M SURE DON'T 'S 'T 'Re 'LL")
    add("quotes", "'quoted' \"double\" 'tis ''s '''")
    add("punct", "Hello!!! What?? ... --- *** ### @@@ ~~~ <<>> {[()]} a->b")
    add("code", "def f(x):\n    return x**2 + 1  # comment\n\nif __name__ == '__main__':\n\tprint(f(3))\n")
    add("url", "https://example.com/path?q=1&r=two#frag user@mail.org")
    add("special_in_text", "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n")
    add("special_adjacent", "<|im_end|><|im_end|>x<|endoftext|> <|im_start|>")
    add("special_partial", "<|im_start <|im_end| <|endoftext|x <|im_start|>")
    add("special_other", "<repo_name>foo<file_sep>bar<jupyter_code>x=1<empty_output>")
    add("special_space", " <|im_end|> spaced <|im_start|> ")
    add("ws_unicode", "a\u00a0b\u2009c\u3000d\u2028e\u0085f\u200bg\ufeffh\u180ei")
    add("long_word", "Pneumonoultramicroscopicsilicovolcanoconiosis " * 3)
    add("repeat_chars", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa " + "=" * 64 + " " + "-" * 33)
    add("mixed_scripts", "Ελληνικά Русский текст ไทย ქართული Tiếng Việt")
    add("math", "∀x∈ℝ: x² ≥ 0 ⇒ √(x²) = |x| ∑∫∂")
    add("control_chars", "a\x00b\x01c\x7fd\x1be[0m")
    add("dropped_bytes", "=\x04= a\x14\x13b \x06x \x1d")  # chars without a byte-level token
    add("smart_quotes", "“Smart” ‘quotes’ — dashes – and … ellipsis’s")
    return E


def data_slices(data_dir, rng):
    """A few 2-4 KB slices of the big files, one 1-2 KB slice of each essay, and
    random single lines. Slices are cut on byte offsets snapped to UTF-8
    character starts (the data is UTF-8)."""
    out = []
    files = []
    for root, _, names in os.walk(data_dir):
        for n in sorted(names):
            if n.endswith(".txt"):
                files.append(os.path.join(root, n))
    files.sort()
    for path in files:
        b = open(path, "rb").read()
        rel = os.path.relpath(path, data_dir)
        big = len(b) > 100_000
        n_slices = 4 if big else 1
        for k in range(n_slices):
            ln = rng.randint(2048, 4096) if big else rng.randint(1024, 2048)
            if ln >= len(b):
                start, ln = 0, len(b)
            else:
                start = rng.randrange(0, len(b) - ln)
            while start > 0 and (b[start] & 0xC0) == 0x80:
                start -= 1
            end = start + ln
            while end < len(b) and (b[end] & 0xC0) == 0x80:
                end += 1
            out.append(("%s@%d" % (rel, start), b[start:end]))
        lines = b.split(b"\n")
        nl = 12 if big else 2
        for k in range(nl):
            i = rng.randrange(len(lines))
            ln = lines[i] + (b"\n" if rng.random() < 0.5 else b"")
            out.append(("%s:L%d" % (rel, i + 1), ln))
    return files, out


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--model-dir", default=MODEL_DIR)
    ap.add_argument("--gguf", default=GGUF)
    ap.add_argument("--data", default=os.path.join(here, "..", "..", "shared", "data"))
    ap.add_argument("--out-dir", default=os.path.join(here, "..", "tests", "data"))
    a = ap.parse_args()

    from tokenizers import Tokenizer, pre_tokenizers
    from transformers import AutoTokenizer
    from transformers.utils.chat_template_utils import _compile_jinja_template

    hf = AutoTokenizer.from_pretrained(a.model_dir, gguf_file=a.gguf)
    raw = hf.backend_tokenizer
    fixed = Tokenizer.from_str(raw.to_str())
    fixed.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])

    def enc(tok, b, special):
        tok.encode_special_tokens = not special
        return tok.encode(b.decode("utf-8"), add_special_tokens=False).ids

    rng = random.Random(1234)
    files, slices = data_slices(a.data, rng)
    texts = edge_cases() + slices

    lines = ["# kvlite tokenizer reference: HF tokenizers %s, model %s" % (
        __import__("tokenizers").__version__, a.gguf),
        "# pre-tokenizer: Digits(individual) + ByteLevel(GPT-2 regex), as SmolLM2's tokenizer.json",
        "# T name <escaped text>; S ids (parse_special=1); N ids (parse_special=0) or '=' if same",
        "# F relpath bytes n_tokens fnv1a64(ids as u32le) -- whole files, parse_special=1"]
    n_tok = 0
    raw_diff = []
    for name, b in texts:
        s = enc(fixed, b, True)
        n = enc(fixed, b, False)
        if enc(raw, b, True) != s:
            raw_diff.append(name)
        lines.append("T %s %s" % (name.replace(" ", "_"), esc(b)))
        lines.append("S " + " ".join(map(str, s)))
        lines.append("N " + ("=" if n == s else " ".join(map(str, n))))
        n_tok += len(s) + len(n)
    n_file_tok = 0
    file_raw_diff = 0
    for path in files:
        b = open(path, "rb").read()
        ids = enc(fixed, b, True)
        if enc(raw, b, True) != ids:
            file_raw_diff += 1
        n_file_tok += len(ids)
        lines.append("F %s %d %d %016x" % (os.path.relpath(path, a.data), len(b), len(ids), fnv_ids(ids)))
    os.makedirs(a.out_dir, exist_ok=True)
    with open(os.path.join(a.out_dir, "tok_ref.txt"), "w", newline="\n") as f:
        f.write("\n".join(lines) + "\n")

    # ---- chat templates ----
    conversations = [
        ("user_only", [{"role": "user", "content": "Hello!"}]),
        ("sys_user", [{"role": "system", "content": "You are terse."},
                      {"role": "user", "content": "What is 2+2?"}]),
        ("multi", [{"role": "user", "content": "Hi"},
                   {"role": "assistant", "content": "Hello! How can I help?"},
                   {"role": "user", "content": "Tell me a joke about caches."}]),
        ("ws_content", [{"role": "user", "content": "  padded content \n\n"},
                        {"role": "assistant", "content": "\tok\t"}]),
        ("empty", [{"role": "user", "content": ""}]),
        ("unicode", [{"role": "system", "content": "Réponds en français 🙂"},
                     {"role": "user", "content": "日本語で答えて"}]),
    ]
    smol_tmpl = hf.chat_template
    l3 = _compile_jinja_template(LLAMA3_TEMPLATE)
    cl = ["# kvlite chat template reference (transformers apply_chat_template / jinja2)",
          "# L <escaped llama-3 template>; C name fmt add_assistant n_msgs; M role content; E expected; I ids (smollm, parse_special=1)",
          "L " + esc(LLAMA3_TEMPLATE.encode())]
    for name, msgs in conversations:
        for add in (0, 1):
            s = hf.apply_chat_template(msgs, tokenize=False, add_generation_prompt=bool(add))
            ids = enc(fixed, s.encode(), True)
            cl.append("C %s smollm %d %d" % (name, add, len(msgs)))
            for m in msgs:
                cl.append("M %s %s" % (m["role"], esc(m["content"].encode())))
            cl.append("E " + esc(s.encode()))
            cl.append("I " + " ".join(map(str, ids)))
            s3 = l3.render(messages=msgs, add_generation_prompt=bool(add), bos_token="<|begin_of_text|>",
                           eos_token="<|end_of_text|>")
            cl.append("C %s llama3 %d %d" % (name, add, len(msgs)))
            for m in msgs:
                cl.append("M %s %s" % (m["role"], esc(m["content"].encode())))
            cl.append("E " + esc(s3.encode()))
    with open(os.path.join(a.out_dir, "tok_chat.txt"), "w", newline="\n") as f:
        f.write("\n".join(cl) + "\n")
    assert smol_tmpl and "<|im_start|>" in smol_tmpl

    print("texts: %d (%d ids compared incl. both parse modes); whole files: %d (%d tokens)" % (
        len(texts), n_tok, len(files), n_file_tok))
    print("raw GGUF-converted HF tokenizer differs on %d texts and %d whole files: %s" % (
        len(raw_diff), file_raw_diff, ", ".join(raw_diff[:20])))


if __name__ == "__main__":
    sys.exit(main())
