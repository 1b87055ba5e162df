#!/usr/bin/env python3
"""Reference dumps for tests/test_reference.c and the perplexity line of
docs/RESULTS.md, produced with Hugging Face transformers (float32, eager
attention, CPU) from the same GGUF file kvlite loads.

transformers de-quantizes the GGUF weights to float32, so the reference uses
exactly the weights kvlite uses: any difference the C test measures comes from
kvlite's arithmetic (int8-quantized activations in the matmuls, accumulation
order, KV codec), not from the weights.

Not run in CI (CI has no torch): it writes committed files that the C test reads.

  ref_dump.py            -> tests/data/ref_logits.txt   (prompts, top-32 logits, greedy runs)
  ref_dump.py --ppl      -> tests/data/ref_ppl.json     (wikitext-2 test perplexity, ctx 1024)
  ref_dump.py --q8-emul  prints how far int8 activation quantization alone (every
                         nn.Linear input rounded to int8 blocks of 32 with an fp16
                         scale, as kvlite's matmuls do) moves the logits of the
                         short prompts: the error level test_reference.c allows

Env: the private venv with torch, transformers, gguf, accelerate (bash scripts/ref_venv.sh)
(e.g. /root/.cache/kvlite/refvenv/bin/python scripts/ref_dump.py).

Format of ref_logits.txt: whitespace-separated words, '#' starts a comment line.
  ref_version 1
  prompt NAME N               start of a prompt with N input tokens
  tokens N id...              the input token ids
  positions P                 P sampled positions follow, one line each:
  pos I NEXT NEXT_LOGIT LSE K id logit ... (K pairs, logits descending)
        I: position; NEXT: the prompt's token at I+1 (-1 for the last position);
        NEXT_LOGIT: its logit (0 when NEXT = -1); LSE: logsumexp of the full row
  greedy G                    G greedy steps follow, one line each:
  step J ID TOP1_LOGIT MARGIN LSE
        ID: the token chosen at step J (argmax of the logits after the prompt
        plus the J ids chosen before it); MARGIN: top1 - top2 logit
  end
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch

MODEL_DIR = "/root/.cache/kvlite"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.environ.get("KVL_DATA", os.path.join(os.path.dirname(ROOT), "shared", "data"))
if not os.path.isdir(DATA):
    DATA = "/work/shared/data"
OUT_DIR = os.path.join(ROOT, "tests", "data")

TOPK = 32
N_GREEDY = 64


def load():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(MODEL_DIR, gguf_file=MODEL_FILE)
    model = AutoModelForCausalLM.from_pretrained(
        MODEL_DIR, gguf_file=MODEL_FILE, dtype=torch.float32, attn_implementation="eager"
    )
    model.eval()
    return tok, model


def versions():
    import transformers

    try:
        from importlib.metadata import version

        gguf_v = version("gguf")
    except Exception:  # pragma: no cover
        gguf_v = "?"
    return {"torch": torch.__version__, "transformers": transformers.__version__, "gguf": gguf_v,
            "numpy": np.__version__}


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def build_prompts(tok):
    chat = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True, tokenize=False)
    prompts = [
        ("chat", tok(chat, add_special_tokens=False).input_ids, True),
        ("sentence", tok("The quick brown fox jumps over the lazy dog. In the morning, the farmer",
                         add_special_tokens=False).input_ids, True),
    ]
    wiki = read(os.path.join(DATA, "wikitext-2", "test.txt"))
    ids = tok(wiki[20000:40000], add_special_tokens=False).input_ids
    assert len(ids) >= 1024, len(ids)
    prompts.append(("wiki1k", ids[:1024], False))
    shak = read(os.path.join(DATA, "tinyshakespeare", "input.txt"))
    ids = tok(shak[100000:140000], add_special_tokens=False).input_ids
    assert len(ids) >= 4096, len(ids)
    prompts.append(("shakespeare4k", ids[:4096], False))
    return prompts, chat


def sample_positions(n, k=24):
    if n <= 32:
        return list(range(n))
    return sorted(set(int(round(x)) for x in np.linspace(0, n - 1, k)))


@torch.no_grad()
def greedy(model, ids, steps):
    """Greedy decode with the KV cache, never stopping at end-of-generation tokens
    (kvlite's test decodes all steps, so the reference must too)."""
    out = model(torch.tensor([ids]), use_cache=True)
    past = out.past_key_values
    row = out.logits[0, -1].double()
    res = []
    for _ in range(steps):
        top2 = torch.topk(row, 2)
        t = int(top2.indices[0])
        res.append((t, float(top2.values[0]), float(top2.values[0] - top2.values[1]),
                    float(torch.logsumexp(row, 0))))
        out = model(torch.tensor([[t]]), past_key_values=past, use_cache=True)
        past = out.past_key_values
        row = out.logits[0, -1].double()
    return res


def dump(args):
    tok, model = load()
    prompts, chat_text = build_prompts(tok)
    v = versions()
    lines = [
        "# kvlite reference logits (scripts/ref_dump.py); model " + MODEL_FILE,
        "# " + " ".join(f"{k}={val}" for k, val in v.items()) + " float32 eager cpu",
        "# chat prompt text: " + json.dumps(chat_text),
        "ref_version 1",
    ]
    for name, ids, do_greedy in prompts:
        t0 = time.time()
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].double()  # [n, vocab]
        n = len(ids)
        lines.append(f"prompt {name} {n}")
        lines.append(f"tokens {n} " + " ".join(map(str, ids)))
        pos = sample_positions(n)
        lines.append(f"positions {len(pos)}")
        for i in pos:
            row = logits[i]
            lse = float(torch.logsumexp(row, 0))
            top = torch.topk(row, TOPK)
            nxt = ids[i + 1] if i + 1 < n else -1
            nl = float(row[nxt]) if nxt >= 0 else 0.0
            pairs = " ".join(f"{int(a)} {float(b):.5f}" for a, b in zip(top.indices, top.values))
            lines.append(f"pos {i} {nxt} {nl:.5f} {lse:.5f} {TOPK} {pairs}")
        if do_greedy:
            g = greedy(model, ids, N_GREEDY)
            lines.append(f"greedy {len(g)}")
            for j, (t, l1, mg, lse) in enumerate(g):
                lines.append(f"step {j} {t} {l1:.5f} {mg:.6f} {lse:.5f}")
            text = tok.decode([t for t, _, _, _ in g])
            lines.append("# greedy text: " + json.dumps(text))
            print(f"{name}: greedy min margin {min(m for _, _, m, _ in g):.4f}; {text!r}")
        lines.append("end")
        print(f"{name}: {n} tokens, {time.time() - t0:.1f}s", flush=True)
    path = os.path.join(OUT_DIR, "ref_logits.txt")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


@torch.no_grad()
def ppl(args):
    tok, model = load()
    text = read(os.path.join(DATA, "wikitext-2", "test.txt"))
    ids = tok(text, add_special_tokens=False).input_ids
    ctx = args.ctx
    n_win_total = len(ids) // ctx
    n_win = n_win_total if args.windows <= 0 else min(args.windows, n_win_total)
    print(f"{len(ids)} tokens, {n_win_total} full windows of {ctx}; scoring {n_win}", flush=True)
    per_win = []
    t0 = time.time()
    for w in range(n_win):
        x = torch.tensor([ids[w * ctx:(w + 1) * ctx]])
        lp = torch.log_softmax(model(x).logits[0].double(), -1)
        # NLL of token i+1 given logits at i, for i = 0..ctx-2 (positions 1..ctx-1 scored)
        nll = -lp[:-1].gather(1, x[0, 1:, None]).squeeze(1)
        per_win.append(float(nll.sum()))
        if w == 0 or (w + 1) % 10 == 0:
            done = (w + 1) * (ctx - 1)
            print(f"window {w + 1}/{n_win}: ppl so far {math.exp(sum(per_win) / done):.4f} "
                  f"({(time.time() - t0) / (w + 1):.2f}s/window)", flush=True)
    scored = n_win * (ctx - 1)
    res = {
        "dataset": "wikitext-2/test.txt",
        "model": MODEL_FILE,
        "ctx": ctx,
        "windows": n_win,
        "windows_in_file": n_win_total,
        "tokens_in_file": len(ids),
        "tokens_scored": scored,
        "ppl": math.exp(sum(per_win) / scored),
        "mean_nll": sum(per_win) / scored,
        "method": "tokenize whole file without BOS; window w = tokens[w*ctx:(w+1)*ctx]; "
                  "score NLL of token i+1 from logits at i for i = 0..ctx-2; ppl = exp(mean NLL)",
        "window_nll_sum": [round(s, 4) for s in per_win],
        "seconds": round(time.time() - t0, 1),
        "versions": versions(),
        "settings": "float32, eager attention, torch.set_num_threads(2), CPU",
    }
    path = os.path.join(OUT_DIR, "ref_ppl.json")
    with open(path, "w") as f:
        json.dump(res, f, indent=1)
        f.write("\n")
    print(f"ppl {res['ppl']:.4f} over {n_win} windows ({scored} tokens); wrote {path}")


def q8_blocks(x):
    """Round x to int8 blocks of 32 with an fp16 scale d = amax/127 (round half away)."""
    b = x.reshape(-1, 32).double()
    amax = b.abs().amax(1, keepdim=True)
    d = (amax / 127).float().half().double()
    y = b * torch.where(amax > 0, 127 / amax, torch.zeros_like(amax))
    return (torch.sign(y) * torch.floor(y.abs() + 0.5) * d).reshape(x.shape).float()


@torch.no_grad()
def q8_emul(args):
    tok, model = load()
    prompts, _ = build_prompts(tok)
    lin = torch.nn.Linear.forward
    for name, ids, short in prompts:
        if not short:
            continue
        x = torch.tensor([ids])
        torch.nn.Linear.forward = lin
        ref = model(x).logits[0].double()
        torch.nn.Linear.forward = lambda self, v: torch.nn.functional.linear(q8_blocks(v), self.weight, self.bias)
        em = model(x).logits[0].double()
        torch.nn.Linear.forward = lin
        d = (em - ref).abs()
        lr, le = torch.log_softmax(ref, -1), torch.log_softmax(em, -1)
        kl = (lr.exp() * (lr - le)).sum(-1)
        t2 = ref.topk(2, -1)
        g = em.gather(1, t2.indices)
        dm = ((g[:, 0] - g[:, 1]) - (t2.values[:, 0] - t2.values[:, 1])).abs()
        flips = [round(float(t2.values[i, 0] - t2.values[i, 1]), 3)
                 for i in range(len(ids)) if int(em[i].argmax()) != int(t2.indices[i, 0])]
        print(f"{name}: logit err mean {d.mean():.4f} max {d.max():.4f}; KL mean {kl.mean():.5f} "
              f"max {kl.max():.5f}; top1-top2 margin shift max {dm.max():.3f}; "
              f"argmax flips {len(flips)}/{len(ids)} at ref margins {flips}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ppl", action="store_true", help="wikitext-2 perplexity instead of the logit dump")
    ap.add_argument("--q8-emul", action="store_true", help="report the int8-activation emulation error")
    ap.add_argument("--ctx", type=int, default=1024)
    ap.add_argument("--windows", type=int, default=40, help="windows to score (<= 0: all)")
    args = ap.parse_args()
    os.makedirs(OUT_DIR, exist_ok=True)
    (ppl if args.ppl else q8_emul if args.q8_emul else dump)(args)


if __name__ == "__main__":
    sys.exit(main())
