#!/usr/bin/env bash
# Pack the device binaries for a `run` call (the working tree that travels is
# limited to 64 MiB; the two binaries are ~30 MB each with their fatbins):
# stripped copies of build-cuda/cuda/{test_cuda,bench_attn}, gzipped, in
# build-cuda/pack/bins.tgz (git-ignored). Carry build-cuda/pack; the device
# script unpacks them into build-cuda/cuda/.
set -euo pipefail
d=build-cuda/pack
rm -rf "$d" && mkdir -p "$d/t/build-cuda/cuda"
for b in test_cuda bench_attn; do strip -o "$d/t/build-cuda/cuda/$b" "build-cuda/cuda/$b"; done
tar czf "$d/bins.tgz" -C "$d/t" build-cuda/cuda
rm -rf "$d/t"
ls -la "$d"
