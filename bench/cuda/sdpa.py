#!/usr/bin/env python3
"""PyTorch SDPA decode attention on the shapes of bench_attn.cu, same method.

One query token per sequence, Llama-3-8B attention (32 query / 8 KV heads,
head_dim 128), contiguous bf16 K/V [B, 8, T, 128], enable_gqa=True, through
each SDPA backend that is available (flash, cuDNN, efficient). GB/s = bytes
of K and V (B*8*T*128*2 bytes each) / median time. Buffers are cycled until
they span >= 1 GiB (>= 16x the L2); 5 warm-ups; a sleep kernel holds the GPU
while the timed calls are queued (each timed by its own pair of events); the
median of the timed calls. The device-to-device copy bandwidth is measured
in the same run.

usage: sdpa.py [--ctx 4096,32768,131072] [--batch 1,16,64] [--reps 50] [--json FILE]
"""
import argparse
import json
import math
import statistics

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

HQ, HKV, D = 32, 8, 128
RING = 1 << 30


def copy_gbs():
    n = 1 << 30
    a = torch.empty(n, dtype=torch.uint8, device="cuda").fill_(1)
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    ts = []
    for _ in range(20):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        b.copy_(a)
        e1.record()
        e1.synchronize()
        ts.append(e0.elapsed_time(e1))
    del a, b
    ms = statistics.median(ts)
    return 2 * n / (ms * 1e-3) / 1e9, ms


def time_calls(fn, n_buf, reps):
    for i in range(5):
        fn(i % n_buf)
    torch.cuda.synchronize()
    evs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
    torch.cuda._sleep(40_000_000)  # ~20 ms at ~2 GHz: the queue fills before the GPU reaches it
    for i, (e0, e1) in enumerate(evs):
        e0.record()
        fn((i + 5) % n_buf)
        e1.record()
    torch.cuda.synchronize()
    ts = [e0.elapsed_time(e1) * 1000 for e0, e1 in evs]
    return statistics.median(ts), min(ts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ctx", default="4096,32768,131072")
    ap.add_argument("--batch", default="1,16,64")
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--json")
    a = ap.parse_args()
    ctxs = [int(x) for x in a.ctx.split(",")]
    batches = [int(x) for x in a.batch.split(",")]
    bw, ms = copy_gbs()
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}")
    print(f"d2d copy: 1 GiB in {ms:.3f} ms = {bw:.0f} GB/s (read + written)")
    backends = [("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION),
                ("efficient", SDPBackend.EFFICIENT_ATTENTION)]
    rows = []
    print("\n| backend | batch | context | KV MB | median us | min us | GB/s | % of copy | buffers |")
    print("|---|---|---|---|---|---|---|---|---|")
    g = torch.Generator(device="cuda").manual_seed(0)
    for B in batches:
        for T in ctxs:
            kv_bytes = 2 * B * HKV * T * D * 2
            n_buf = max(1, math.ceil(RING / kv_bytes))
            free, _ = torch.cuda.mem_get_info()
            n_buf = max(1, min(n_buf, int(0.8 * free // kv_bytes)))
            ks = [torch.randn(B, HKV, T, D, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(n_buf)]
            vs = [torch.randn(B, HKV, T, D, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(n_buf)]
            q = torch.randn(B, HQ, 1, D, device="cuda", dtype=torch.bfloat16, generator=g)
            ref = None  # fp32 reference (default backend choice), small shapes only
            if kv_bytes < (2 << 30):
                ref = F.scaled_dot_product_attention(q.float(), ks[0].float(), vs[0].float(), enable_gqa=True)
            for name, be in backends:
                row = {"backend": name, "batch": B, "ctx": T, "kv_bytes": kv_bytes, "buffers": n_buf}
                try:
                    with sdpa_kernel([be]):
                        def fn(i):
                            return F.scaled_dot_product_attention(q, ks[i], vs[i], enable_gqa=True)
                        o = fn(0).float()
                        rel = ((o - ref).norm() / ref.norm()).item() if ref is not None else None
                        med, mn = time_calls(fn, n_buf, a.reps)
                    gbs = kv_bytes / (med * 1e-6) / 1e9
                    row.update(median_us=round(med, 2), min_us=round(mn, 2), gbs=round(gbs, 1), rel_err=rel)
                    print(f"| {name} | {B} | {T} | {kv_bytes / 1e6:.1f} | {med:.1f} | {mn:.1f} | {gbs:.0f} | "
                          f"{100 * gbs / bw:.0f}% | {n_buf} |", flush=True)
                except Exception as e:  # backend not available for this shape
                    row.update(error=str(e).splitlines()[0][:200])
                    print(f"| {name} | {B} | {T} | {kv_bytes / 1e6:.1f} | n/a: {row['error'][:80]} | | | | {n_buf} |",
                          flush=True)
                rows.append(row)
            del ks, vs, q, ref
            torch.cuda.empty_cache()
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "copy_gbs": bw,
                       "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
