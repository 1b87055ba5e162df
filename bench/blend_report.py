#!/usr/bin/env python3
"""Markdown tables from bench/blend.sh's eval rag JSON files (docs/RESULTS.md, "CacheBlend").
usage: bench/blend_report.py DIR"""
import json, os, sys

d = sys.argv[1] if len(sys.argv) > 1 else "bench/results/blend"
for name in sorted(os.listdir(d)):
    if not name.endswith(".json"):
        continue
    p = os.path.join(d, name)
    if os.path.getsize(p) == 0:
        continue
    j = json.load(open(p))
    load = open(p[:-5] + ".load").read().split() if os.path.exists(p[:-5] + ".load") else []
    la = [w.strip(",") for w in load if w.strip(",").replace(".", "").isdigit()]
    print(f"\n{name[:-5]}: {j['chunks']} chunks x {j['chunk_tokens']} tokens, {j['seeds']} seeds x {j['questions']} "
          f"questions (seed base {j['seed_base']}), kv {j['kv']}, select {j['select'].upper()}, "
          f"full layers {j['full_layers']}, chunks from {j['tier']}")
    print("\n| mode | TTFT median ms | speedup (medians) | speedup (median of per-question ratios) | accuracy | agreement | KLD (first token) | reused tokens recomputed |")
    print("|---|---|---|---|---|---|---|---|")
    fc = {(c["seed"], c["q"]): c["ttft_ms"] for c in j["modes"]["full"]["cells"]}
    full_acc = j["modes"]["full"]["accuracy"]
    for k, e in j["modes"].items():
        if k == "blend":
            continue
        rel = f" ({e['accuracy'] / full_acc:.0%} of full)" if full_acc > 0 and k != "full" else ""
        sel = f"{e['selected']:.0f}" if k.startswith("blend") or k == "reuse" else "-"
        r = sorted(fc[(c["seed"], c["q"])] / c["ttft_ms"] for c in e["cells"])
        pr = (r[len(r) // 2] if len(r) % 2 else 0.5 * (r[len(r) // 2 - 1] + r[len(r) // 2])) if r else 0
        print(f"| {k} | {e['ttft_ms']:.0f} | {e['speedup']:.2f}x | {pr:.2f}x | {e['accuracy']:.3f}{rel} | {e['agreement']:.3f} | "
              f"{e['kld']:.4f} | {sel} |")
