#!/usr/bin/env python3
"""Greedy-decoding reference for `kvlite run --exact` (tests/test_exact.sh),
produced with Hugging Face transformers (float32, eager attention, CPU) from the
same GGUF file kvlite loads (transformers de-quantizes it to float32, so both
sides use the same weights).

For each prompt below it writes the prompt's token ids and the first N_NEW (40)
greedy token ids, never stopping at end-of-generation (the test cuts the
reference at the first end-of-generation id, where `kvlite run` stops), plus
the smallest top1-top2 logit margin along the path: a margin near float32
round-off (~1e-4) would be a tie no implementation can be required to break the
same way.

Prompt ids: plain prompts are tokenized with the model's tokenizer rebuilt as
SmolLM2's original tokenizer.json has it (digits split one by one; see
scripts/ref_tokenizer.py for why the GGUF conversion in transformers differs);
the chat prompt is rendered with the model's own chat template
(apply_chat_template, generation prompt on), special tokens parsed. The test
checks that kvlite produces the same prompt ids, so tokenizer drift shows as
such and not as a decoding mismatch.

The script also cross-checks its KV-cached greedy loop against
model.generate(do_sample=False) (up to the first end-of-generation id).

Not run by make test (no torch there): it writes the committed file
tests/data/ref_greedy.txt. Environment: bash scripts/ref_venv.sh (creates
~/.cache/kvlite/refvenv with torch, transformers, gguf, accelerate from PyPI),
then
  ~/.cache/kvlite/refvenv/bin/python scripts/ref_greedy.py [--out FILE]
  ~/.cache/kvlite/refvenv/bin/python scripts/ref_greedy.py --prompt TEXT [--chat]
      (prints the greedy continuation of one prompt, writes nothing)

Format of ref_greedy.txt: one record per line, words separated by spaces,
'#' starts a comment line.
  ref_greedy 1
  prompt NAME MODE            MODE: text (kvlite run -p) or chat (kvlite run --chat -p)
  text "JSON string"          the -p argument
  prompt_ids N id...          token ids kvlite must feed the model
  greedy N id...              N greedy ids after the prompt
  eog K                       index of the first end-of-generation id in greedy (-1: none)
  margin_min M STEP           smallest top1-top2 logit margin over the compared steps
                              (those before eog), and where
  margins N m...              top1-top2 logit margin at each of the N steps
  continuation "JSON string"  tokenizer.decode of the greedy ids before eog: what
                              `kvlite run` must print on stdout
  end
"""
import argparse
import json
import os
import sys

import torch

MODEL_DIR = os.path.expanduser("~/.cache/kvlite")
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_NEW = 40

# New prompts (none of them is in ref_logits.txt / tok_ref.txt): code,
# numbers, French, German, a list, and one chat turn (six: the exact path runs
# at ~5-8 s a prompt in make test). Chosen so that no
# compared step is a near-tie (margin_min >= 0.01, ~100x the measured
# exact-path logit error); e.g. "function add(a, b) {\n  return" was dropped for
# a 0.0013 margin at step 19.
PROMPTS = [
    ("code", "text", "# Python: compute the factorial of a number\ndef factorial(n):\n"),
    ("numbers", "text", "The first ten prime numbers are 2, 3, 5, 7,"),
    ("french", "text", "La tour Eiffel a été construite à Paris en"),
    ("german", "text", "Die wichtigsten Flüsse in Deutschland sind der Rhein,"),
    ("recipe", "text", "How to make a cup of tea:\n1."),
    ("chat_haiku", "chat", "Write a haiku about autumn leaves."),
]


def load():
    from tokenizers import Tokenizer, pre_tokenizers
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(2)
    transformers.utils.logging.disable_progress_bar()
    tok = AutoTokenizer.from_pretrained(MODEL_DIR, gguf_file=MODEL_FILE)
    fixed = Tokenizer.from_str(tok.backend_tokenizer.to_str())
    fixed.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    model = AutoModelForCausalLM.from_pretrained(
        MODEL_DIR, gguf_file=MODEL_FILE, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    return tok, fixed, model


def prompt_ids(tok, fixed, mode, text):
    if mode == "chat":
        text = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                       tokenize=False)
    fixed.encode_special_tokens = False  # parse special-token text (the template's markers)
    return fixed.encode(text, add_special_tokens=False).ids


@torch.no_grad()
def greedy(model, ids, steps):
    out = model(torch.tensor([ids]), use_cache=True)
    past, row = out.past_key_values, out.logits[0, -1].double()
    res, margins = [], []
    for _ in range(steps):
        top2 = torch.topk(row, 2)
        t = int(top2.indices[0])
        res.append(t)
        margins.append(float(top2.values[0] - top2.values[1]))
        out = model(torch.tensor([[t]]), past_key_values=past, use_cache=True)
        past, row = out.past_key_values, out.logits[0, -1].double()
    return res, margins


def eog_ids(tok, model):
    ids = set()
    for t in ("<|endoftext|>", "<|im_end|>"):
        i = tok.convert_tokens_to_ids(t)
        if isinstance(i, int) and i >= 0:
            ids.add(i)
    e = model.generation_config.eos_token_id
    ids.update(e if isinstance(e, list) else [e] if e is not None else [])
    return ids


@torch.no_grad()
def generate_check(model, ids, ref, eogs):
    out = model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=len(ref),
                         attention_mask=torch.ones(1, len(ids), dtype=torch.long))
    gen = out[0, len(ids):].tolist()
    cut = next((i for i, t in enumerate(ref) if t in eogs), len(ref))
    return gen[:cut] == ref[:cut]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "data", "ref_greedy.txt"))
    ap.add_argument("--prompt", help="print the greedy continuation of this prompt only")
    ap.add_argument("--chat", action="store_true", help="with --prompt: wrap it in the chat template")
    ap.add_argument("-n", type=int, default=N_NEW)
    a = ap.parse_args()

    import transformers
    from importlib.metadata import version

    tok, fixed, model = load()
    eogs = eog_ids(tok, model)
    prompts = [("cli", "chat" if a.chat else "text", a.prompt)] if a.prompt else PROMPTS
    lines = [
        "# kvlite greedy reference (scripts/ref_greedy.py); model " + MODEL_FILE,
        "# torch=%s transformers=%s gguf=%s float32 eager cpu; end-of-generation ids %s" % (
            torch.__version__, transformers.__version__, version("gguf"), sorted(eogs)),
        "ref_greedy 1",
    ]
    for name, mode, text in prompts:
        ids = prompt_ids(tok, fixed, mode, text)
        g, margins = greedy(model, ids, a.n)
        eog = next((i for i, t in enumerate(g) if t in eogs), -1)
        n_cmp = eog if eog >= 0 else len(g)  # steps kvlite reproduces (it stops at eog)
        mm = min(range(max(n_cmp, 1)), key=lambda i: margins[i])
        same = generate_check(model, ids, g, eogs)
        cont = tok.decode(g[:eog] if eog >= 0 else g)
        print(f"{name}: {len(ids)} prompt ids, eog at {eog}, min margin {margins[mm]:.4f} at step {mm}, "
              f"generate() agrees: {same}\n  {cont!r}", flush=True)
        if not same:
            print(f"{name}: model.generate disagrees with the greedy loop", file=sys.stderr)
            return 1
        lines += [
            f"prompt {name} {mode}",
            "text " + json.dumps(text, ensure_ascii=False),
            f"prompt_ids {len(ids)} " + " ".join(map(str, ids)),
            f"greedy {len(g)} " + " ".join(map(str, g)),
            f"eog {eog}",
            f"margin_min {margins[mm]:.6f} {mm}",
            f"margins {len(margins)} " + " ".join(f"{x:.4f}" for x in margins),
            "continuation " + json.dumps(cont, ensure_ascii=False),
            "end",
        ]
    if a.prompt:
        return 0
    with open(a.out, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
