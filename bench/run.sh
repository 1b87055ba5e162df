#!/usr/bin/env bash
# kvlite vs llama.cpp benchmark, one command:
#   bench/run.sh            full run (speed, quality, baselines, retrieval, codecs; ~9-10 h on 2 cores)
#   bench/run.sh --quick    development run (a few minutes)
#   bench/run.sh --help     all options of bench/bench.py
# Creates/reuses the bench venv (~/.cache/kvlite/llamavenv, override with
# KVL_BENCH_VENV) with llama-cpp-python==0.3.16 (compiled from source by pip:
# ~30 min on 2 cores, once) + matplotlib, a native llama-bench of the same
# llama.cpp source (bench/build_llama_native.sh, ~30 min once; skip with
# KVL_BENCH_NO_NATIVE=1), builds kvlite, fetches the model,
# runs bench/bench.py, then regenerates docs/RESULTS.md and docs/img/*.png
# with bench/report.py (skip with KVL_BENCH_NO_REPORT=1).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="${KVL_BENCH_VENV:-$HOME/.cache/kvlite/llamavenv}"
LLAMA_CPP_VERSION=0.3.16
PY_SYS="${PYTHON:-python3}"

for a in "$@"; do
    if [ "$a" = "-h" ] || [ "$a" = "--help" ]; then
        exec "$PY_SYS" bench/bench.py --help
    fi
done

log() { echo "[run.sh] $*" >&2; }

# 1. bench venv with the pinned llama-cpp-python, numpy and matplotlib.
if [ ! -x "$VENV/bin/python" ]; then
    log "creating venv $VENV"
    mkdir -p "$(dirname "$VENV")"
    if ! "$PY_SYS" -m venv "$VENV" 2>/dev/null; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
            rm -rf "$VENV"
            "$PY_SYS" -m venv "$VENV"
        else
            log "cannot create a venv (install python3-venv)"; exit 1
        fi
    fi
fi
have_pkg() { "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(0 if m.version('$1') == '$2' or '$2' == '*' else 1)" 2>/dev/null; }
if ! have_pkg llama_cpp_python "$LLAMA_CPP_VERSION"; then
    command -v cc >/dev/null && command -v c++ >/dev/null || bash scripts/install_deps.sh
    command -v c++ >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++; }
    log "installing llama-cpp-python==$LLAMA_CPP_VERSION into $VENV (compiles llama.cpp: ~30 min on 2 cores)"
    "$VENV/bin/python" -m pip install --quiet "llama-cpp-python==$LLAMA_CPP_VERSION"
fi
have_pkg numpy '*' || "$VENV/bin/python" -m pip install --quiet numpy
have_pkg matplotlib '*' || "$VENV/bin/python" -m pip install --quiet matplotlib

# 1b. native llama.cpp: llama-bench built with -DGGML_NATIVE=ON from the llama.cpp
# vendored in the same pinned sdist (cached under ~/.cache/kvlite/llama-native-*;
# ~30 min on 2 cores the first time). Only when the speed phase runs;
# KVL_BENCH_NO_NATIVE=1 leaves the native configs out.
want_speed=1
prev=
for a in "$@"; do
    if [ "$prev" = "--phases" ]; then case ",$a," in *,speed,*) want_speed=1 ;; *) want_speed=0 ;; esac; fi
    case "$a" in --phases=*) case ",${a#--phases=}," in *,speed,*) want_speed=1 ;; *) want_speed=0 ;; esac ;; esac
    prev=$a
done
NATIVE_ARGS=()
if [ "${KVL_BENCH_NO_NATIVE:-0}" = 1 ]; then
    NATIVE_ARGS=(--llama-bench "")
elif [ "$want_speed" = 1 ]; then
    LLAMA_BENCH=$(PYTHON="$VENV/bin/python" bench/build_llama_native.sh "$LLAMA_CPP_VERSION")
    NATIVE_ARGS=(--llama-bench "$LLAMA_BENCH")
fi

# 2. kvlite (incremental: the bench always measures the current sources) and the model.
command -v cc >/dev/null && command -v make >/dev/null || bash scripts/install_deps.sh
BUILD="${BUILD:-build}"
make -j2 BUILD="$BUILD" "$BUILD/kvlite" >&2
make model >&2

# 3. measure, then report.
export KVL_BENCH_CMD="bench/run.sh${*:+ $*}"
"$VENV/bin/python" bench/bench.py --build "$BUILD" "${NATIVE_ARGS[@]}" "$@"
if [ "${KVL_BENCH_NO_REPORT:-0}" != 1 ]; then
    "$VENV/bin/python" bench/report.py
fi
