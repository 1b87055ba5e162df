#!/usr/bin/env bash
"exec" "${KVL_REF_PY:-/root/.cache/kvlite/refvenv/bin/python}" "$0" "$@"
# Dumps raw block bytes and the gguf package's dequantized values for a few
# rows of real Q4_1 / Q8_0 tensors of the default model, so tests/test_quant.c
# can check kvlite's dequantization without a GGUF reader.
# Usage: scripts/ref_dequant.py [model.gguf] [out.txt]
import sys
import numpy as np
import gguf

model = sys.argv[1] if len(sys.argv) > 1 else "/root/.cache/kvlite/SmolLM2-135M-Instruct.Q4_1.gguf"
out = sys.argv[2] if len(sys.argv) > 2 else "tests/data/dequant_ref.txt"
NV = 64  # values per row (2 blocks of 32)
WANT = {"blk.0.attn_q.weight": [0, 1, 575], "token_embd.weight": [0, 7, 49151]}

r = gguf.GGUFReader(model)
lines = ["# tensor type row nvals / hex block bytes / expected floats (gguf.quants.dequantize)"]
for t in r.tensors:
    if t.name not in WANT:
        continue
    qt = t.tensor_type
    bs, ts = gguf.GGML_QUANT_SIZES[qt]
    nbytes = NV // bs * ts
    for row in WANT[t.name]:
        raw = np.ascontiguousarray(t.data[row][:nbytes])
        vals = gguf.quants.dequantize(raw, qt).reshape(-1)[:NV]
        lines.append(f"{t.name} {int(qt)} {row} {NV}")
        lines.append(raw.tobytes().hex())
        lines.append(" ".join(repr(float(v)) for v in vals))
with open(out, "w") as f:
    f.write("\n".join(lines) + "\n")
print(f"wrote {out}")
