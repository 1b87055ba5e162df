#!/usr/bin/env python3
"""Cross-check of how bench.py times the native llama-bench prefill.

bench.py runs `llama-bench -p 0 -n 64 -d P` and takes the prefill from
llama.cpp's perf counter for the test's untimed depth run. This script
alternates that with llama-bench's own prompt test (`-p P -n 0`, timed by
llama-bench) at the same P, flash attention off and on, each run a fresh
process in its own scheduler autogroup (like bench.py), and writes the medians
to bench/results/native_prefill_check.md (copied into docs/RESULTS.md).
  bench/check_native_prefill.py [--ctx 1024] [--reps 3] [--llama-bench PATH]
Needs a quiet machine, like any timing.
"""
import argparse
import datetime
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ctx", type=int, default=1024)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--gen", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default=os.environ.get("KVL_MODEL") or bench.DEFAULT_MODEL)
    ap.add_argument("--llama-bench", default=os.environ.get("KVL_LLAMA_BENCH") or bench.DEFAULT_LLAMA_BENCH)
    ap.add_argument("--out", default=os.path.join(bench.ROOT, "bench", "results", "native_prefill_check.md"))
    a = ap.parse_args()
    P = a.ctx
    boost = -20 if bench.autogroup_boost_works(-20) else None
    base = [a.llama_bench, "-m", a.model, "-t", str(a.threads), "-b", "512", "-ub", "512", "-r", "1", "--no-warmup",
            "-o", "json"]
    res = {}
    shim = argparse.Namespace(gen=a.gen, threads=a.threads, model=a.model)
    b = bench.Bench.__new__(bench.Bench)
    b.a, b.llama_bench, b.res = shim, a.llama_bench, {"versions": {}}
    for rep in range(a.reps):
        for fa in (False, True):
            # llama-bench's own prompt test
            r = bench.run_child(base + ["-p", str(P), "-n", "0", "-fa", "1" if fa else "0"], autogroup_nice=boost)
            if r["rc"] != 0:
                sys.exit("llama-bench failed: " + r["stderr"][-1000:])
            t = json.loads(r["stdout"][r["stdout"].index("["):])[-1]
            res.setdefault(("pp", fa), []).append(t["avg_ts"])
            # bench.py's way: perf counter of the depth run of tg<gen> @ d<P>
            r = bench.run_child(b.llama_bench_cmd("f16", fa, P), autogroup_nice=boost)
            if r["rc"] != 0:
                sys.exit("llama-bench failed: " + r["stderr"][-1000:])
            j = b.parse_llama_bench(r, P)
            res.setdefault(("depth", fa), []).append(j["prefill_tok_s"])
            print("rep %d FA %d: pp%d %.1f tok/s, depth-run prefill %.1f tok/s" % (
                rep + 1, fa, P, res[("pp", fa)][-1], res[("depth", fa)][-1]), file=sys.stderr)
    date = datetime.date.today().isoformat()
    lines = ["### Native llama-bench prefill: perf counter of the depth run vs llama-bench's own pp%d (%s)" % (P, date),
             "",
             "`bench/check_native_prefill.py --ctx %d --reps %d` right after the speed run, same machine, each run a "
             "fresh process at autogroup nice %s: llama-bench's prompt test (`-p %d -n 0`, timed by llama-bench) "
             "alternated with the way `bench/bench.py` times native prefill (`-p 0 -n %d -d %d -v`, llama.cpp's "
             "*prompt eval time* for the depth run). f16 cache, medians [min–max] of %d runs, tok/s:" % (
                 P, a.reps, boost, P, a.gen, P, a.reps),
             "",
             "| flash attention | llama-bench pp%d | depth-run perf counter | ratio |" % P,
             "|:--|--:|--:|--:|"]
    for fa in (False, True):
        pp, dp = res[("pp", fa)], res[("depth", fa)]
        lines.append("| %s | %.1f [%.0f–%.0f] | %.1f [%.0f–%.0f] | %.3f |" % (
            "on" if fa else "off", statistics.median(pp), min(pp), max(pp), statistics.median(dp), min(dp), max(dp),
            statistics.median(dp) / statistics.median(pp)))
    with open(a.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("wrote %s" % a.out, file=sys.stderr)


if __name__ == "__main__":
    main()
