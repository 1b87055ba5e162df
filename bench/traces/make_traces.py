#!/usr/bin/env python3
"""Writes the committed bandwidth traces (Mbit/s per 100 ms, 60 s each) for
`kvlite eval stream --bandwidth`: steady (10 Mbit/s), stepped (50 -> 5 -> 0.5
-> 20 ... every 6 s) and bursty (a two-state Markov chain between a good
link, 20-50 Mbit/s, and a bad one, 0.5-3 Mbit/s, with ~1.5 s mean dwell).
Deterministic (fixed seed); rerun to regenerate."""
import os
import random

here = os.path.dirname(os.path.abspath(__file__))
N = 600
rng = random.Random(20261202)


def write(name, vals, what):
    with open(os.path.join(here, name + ".txt"), "w") as f:
        f.write("# %s: Mbit/s per 100 ms, %d samples (bench/traces/make_traces.py)\n" % (what, len(vals)))
        for v in vals:
            f.write("%.3f\n" % v)


write("steady", [10.0] * N, "steady 10 Mbit/s")
levels = [50, 5, 0.5, 20, 2, 35, 1, 10, 0.8, 45]
write("stepped", [levels[(k // 60) % len(levels)] for k in range(N)], "steps every 6 s between 0.5 and 50 Mbit/s")
vals, good = [], True
for k in range(N):
    if rng.random() < 1 / 15:
        good = not good
    vals.append(rng.uniform(20, 50) if good else rng.uniform(0.5, 3))
write("bursty", vals, "two-state Markov: good 20-50, bad 0.5-3 Mbit/s, mean dwell 1.5 s")
