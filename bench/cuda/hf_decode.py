"""Baseline for bench_lm's 8B-shaped decode: transformers' LlamaForCausalLM
with SDPA attention and a static KV cache, the same shape (Llama-3-8B
dimensions, random bf16 weights on the GPU), batch 1, contexts filled by a
real prefill of random tokens, then greedy decode steps timed with
torch.cuda.synchronize around each (median), as bench_lm times its steps.
Eager mode (no torch.compile), as transformers runs by default.
    python3 bench/cuda/hf_decode.py [--ctx 4096,32768] [--steps 32] [--json FILE]
"""
import argparse
import json
import statistics
import time

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ctx", default="4096,32768")
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    ctxs = [int(c) for c in a.ctx.split(",")]
    cfg = LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=8, head_dim=128, vocab_size=128256, max_position_embeddings=max(ctxs) + 256,
                      rope_theta=500000.0, tie_word_embeddings=False)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    t0 = time.time()
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16).eval()
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, {torch.cuda.get_device_name()}; "
          f"model built in {time.time() - t0:.1f} s, "
          f"{sum(p.numel() for p in model.parameters()) / 1e9:.2f} B params", flush=True)
    rows = []
    for ctx in ctxs:
        cache_kind = "static"
        try:
            from transformers import StaticCache
            cache = StaticCache(config=cfg, max_cache_len=ctx + a.steps + 16)
        except Exception as e:  # noqa: BLE001 (older / newer signatures)
            print(f"StaticCache unavailable ({e}); DynamicCache", flush=True)
            from transformers import DynamicCache
            cache, cache_kind = DynamicCache(), "dynamic"
        ids = torch.randint(0, cfg.vocab_size, (1, ctx), device="cuda")
        with torch.no_grad():
            torch.cuda.synchronize()
            t0 = time.time()
            for s in range(0, ctx, 4096):  # prefill in chunks (activation memory)
                e = min(ctx, s + 4096)
                out = model(input_ids=ids[:, s:e], past_key_values=cache, use_cache=True,
                            cache_position=torch.arange(s, e, device="cuda"))
            torch.cuda.synchronize()
            tp = time.time() - t0
            tok = out.logits[:, -1:].argmax(-1)
            times = []
            for i in range(a.steps + 3):
                torch.cuda.synchronize()
                t1 = time.time()
                out = model(input_ids=tok, past_key_values=cache, use_cache=True,
                            cache_position=torch.tensor([ctx + i], device="cuda"))
                tok = out.logits[:, -1:].argmax(-1)
                torch.cuda.synchronize()
                if i >= 3:
                    times.append(time.time() - t1)
        md = statistics.median(times)
        print(f"| hf sdpa | {cache_kind} | bf16 | 1 | {ctx} | {1 / md:.1f} tok/s | {1e3 * md:.3f} ms/step | "
              f"prefill {ctx} tokens {tp:.2f} s |", flush=True)
        rows.append({"ctx": ctx, "cache": cache_kind, "tok_s": 1 / md, "ms_per_step": 1e3 * md, "prefill_s": tp})
        del cache, out
        torch.cuda.empty_cache()
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "transformers": transformers.__version__,
                       "rows": rows}, f)


if __name__ == "__main__":
    main()
