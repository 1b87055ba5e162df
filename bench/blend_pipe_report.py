#!/usr/bin/env python3
"""Tables from bench/blend_pipe.sh's eval rag JSON files (docs/RESULTS.md,
"CacheBlend pipelining"): per setting, serial vs pipelined TTFT medians,
the reader's busy time, the compute's wait, MB read, and the overlap
  (serial TTFT - pipelined TTFT) / min(read time, compute time)
with read time = the serial reader's busy time and compute time = serial
TTFT - that read time, both per question (paired: the two modes ran the
same prompt back to back), then the median over questions.
usage: bench/blend_pipe_report.py DIR"""
import json, os, sys


def med(v):
    v = sorted(v)
    n = len(v)
    return 0 if not n else v[n // 2] if n % 2 else 0.5 * (v[n // 2 - 1] + v[n // 2])


d = sys.argv[1] if len(sys.argv) > 1 else "bench/results/blend_pipe"
print("| setting | load (start, end) | prompts | TTFT serial ms | TTFT pipelined ms | saved ms | read ms (serial) | "
      "read ms (pipelined reader busy) | compute wait ms (pipelined) | MB read | overlap |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
names = [n for n in ["warm", "cold", "cap100", "cap25"]]
names += sorted(n[:-5] for n in os.listdir(d) if n.endswith(".json") and n[:-5] not in names)
for name in names:
    p = os.path.join(d, name + ".json")
    if not os.path.exists(p) or os.path.getsize(p) == 0:
        continue
    j = json.load(open(p))
    load = open(p[:-5] + ".load").read() if os.path.exists(p[:-5] + ".load") else ""
    la = [l.split("load average:")[1].split(",")[0].strip() for l in load.splitlines() if "load average:" in l]
    ser = {(c["seed"], c["q"]): c for c in j["modes"]["blend@0.15/serial"]["cells"]}
    pip = {(c["seed"], c["q"]): c for c in j["modes"]["blend@0.15"]["cells"]}
    keys = sorted(set(ser) & set(pip))
    saved = [ser[k]["ttft_ms"] - pip[k]["ttft_ms"] for k in keys]
    ov = []
    for k in keys:
        rd = ser[k]["read_ms"]
        comp = ser[k]["ttft_ms"] - rd
        m = min(rd, comp)
        if m > 0:
            ov.append((ser[k]["ttft_ms"] - pip[k]["ttft_ms"]) / m)
    print(f"| {name} | {' -> '.join(la)} | {len(keys)} | {med([ser[k]['ttft_ms'] for k in keys]):.0f} | "
          f"{med([pip[k]['ttft_ms'] for k in keys]):.0f} | {med(saved):.0f} | {med([ser[k]['read_ms'] for k in keys]):.0f} | "
          f"{med([pip[k]['read_ms'] for k in keys]):.0f} | {med([pip[k]['wait_ms'] for k in keys]):.0f} | "
          f"{med([pip[k]['mb_read'] for k in keys]):.1f} | {med(ov):.2f} |")
