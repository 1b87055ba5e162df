#!/usr/bin/env bash
# Create the private Python environment the reference scripts run in
# (scripts/ref_dump.py, scripts/ref_greedy.py, scripts/ref_tokenizer.py): torch
# (CPU is enough), transformers, gguf, accelerate, numpy, from PyPI. Not needed
# by make / make test: the reference dumps they write are committed.
#   bash scripts/ref_venv.sh [DIR]     (default ~/.cache/kvlite/refvenv)
# then e.g. ~/.cache/kvlite/refvenv/bin/python scripts/ref_greedy.py
# torch from PyPI is large (~1 GB with its CUDA wheels); fine for a one-off.
set -euo pipefail
VENV="${1:-${KVL_REFVENV:-$HOME/.cache/kvlite/refvenv}}"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q torch transformers gguf accelerate numpy sentencepiece
"$VENV/bin/python" -c 'import torch, transformers, gguf; print("refvenv ok:", "torch", torch.__version__, "transformers", transformers.__version__)'
