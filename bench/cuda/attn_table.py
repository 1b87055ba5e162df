#!/usr/bin/env python3
"""Markdown tables of one device call of bench/cuda/device_run.sh (bench, old, sdpa):
kvlite decode attention per codec next to the best SDPA backend (cuDNN) of the
same call, ratios SDPA time / kvlite time, and the replaced kernels.

usage: attn_table.py KVLITE_JSON SDPA_JSON [OLD_JSON]
"""
import json
import sys


def key(r):
    return (r["batch"], r["ctx"])


def main():
    kv = json.load(open(sys.argv[1]))
    sd = json.load(open(sys.argv[2]))
    old = json.load(open(sys.argv[3])) if len(sys.argv) > 3 else []
    best = {}
    for r in sd["rows"]:
        if r.get("median_us") is None:
            continue
        k = key(r)
        if k not in best or r["median_us"] < best[k]["median_us"]:
            best[k] = r
    cud = {key(r): r for r in sd["rows"] if r["backend"] == "cudnn" and r.get("median_us")}
    codecs = []
    rows = {}
    for r in kv["rows"]:
        if r["codec"] not in codecs:
            codecs.append(r["codec"])
        rows[(r["codec"],) + key(r)] = r
    for o in old:
        for r in o["rows"]:
            name = r["codec"] + " v%d" % r["variant"]
            if name not in codecs:
                codecs.append(name)
            rows[(name,) + key(r)] = r
    shapes = sorted({key(r) for r in kv["rows"]})
    print("copy bandwidth: kvlite run %.0f GB/s, SDPA run %.0f GB/s\n" % (kv["copy_gbs"], sd["copy_gbs"]))
    print("| batch, ctx | SDPA cuDNN | best SDPA | " + " | ".join(codecs) + " |")
    print("|---" * (3 + len(codecs)) + "|")
    for b, t in shapes:
        c = cud.get((b, t))
        bs = best.get((b, t))
        cells = ["%d, %dK" % (b, t // 1024), "%.1f" % c["median_us"] if c else "-",
                 "%.1f (%s)" % (bs["median_us"], bs["backend"]) if bs else "-"]
        for cd in codecs:
            r = rows.get((cd, b, t))
            if not r:
                cells.append("-")
                continue
            ratio = c["median_us"] / r["median_us"] if c else float("nan")
            cells.append("%.1f · %.0f GB/s · **%.2fx**" % (r["median_us"], r["gbs"], ratio))
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
