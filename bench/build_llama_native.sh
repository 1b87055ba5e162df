#!/usr/bin/env bash
# Native llama.cpp build for the peer benchmark: `llama-bench` compiled with
# cmake -DGGML_NATIVE=ON from the llama.cpp vendored in the sdist of the pinned
# llama-cpp-python (so it is the same llama.cpp source as the bench venv's
# wheel). Idempotent: the result is cached under
#   ~/.cache/kvlite/llama-native-<version>/bin/llama-bench   (KVL_LLAMA_NATIVE_DIR)
# and rebuilt only when that binary or its stamp (version, flags, patch) is missing.
#
# One patch, to llama-bench only: its contexts keep llama.cpp's performance
# counters on (cparams.no_perf = false, as llama-cli and llama-server have
# them; upstream llama-bench turns them off). Nothing it computes changes; it
# makes llama_perf_context_print (printed with -v after each test) report the
# time of the test's untimed depth run, so one `llama-bench -n 64 -d P` process
# gives both the P-token prefill and the decode at depth P.
# Prints the binary's path on stdout; everything else goes to stderr.
#   bench/build_llama_native.sh [version]     (default: the pin in bench/run.sh)
# Env: KVL_LLAMA_NATIVE_JOBS (default 2), KVL_LLAMA_NATIVE_NICE (default 10),
#      PYTHON (for `pip download`, default python3).
# Takes ~20-40 min on 2 cores (llama-bench and the libraries it links only).
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION="${1:-${LLAMA_CPP_VERSION:-$(sed -n 's/^LLAMA_CPP_VERSION=//p' bench/run.sh)}}"
[ -n "$VERSION" ] || { echo "build_llama_native: no llama-cpp-python version" >&2; exit 1; }
CACHE="$HOME/.cache/kvlite"
DEST="${KVL_LLAMA_NATIVE_DIR:-$CACHE/llama-native-$VERSION}"
SRC="$CACHE/src"
JOBS="${KVL_LLAMA_NATIVE_JOBS:-2}"
NICE="${KVL_LLAMA_NATIVE_NICE:-10}"
PY="${PYTHON:-python3}"
FLAGS="-DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF"
PATCH_MARK="/* kvlite bench: perf counters on */"
STAMP="llama-cpp-python $VERSION vendor/llama.cpp; cmake $FLAGS; target llama-bench; patch: llama-bench no_perf=false"
log() { echo "[build_llama_native] $*" >&2; }

if [ -x "$DEST/bin/llama-bench" ] && [ -f "$DEST/STAMP" ] && [ "$(head -1 "$DEST/STAMP")" = "$STAMP" ]; then
    echo "$DEST/bin/llama-bench"
    exit 0
fi

# Build tools (Debian): cmake and a C++ compiler.
need=()
command -v cmake >/dev/null || need+=(cmake)
command -v c++ >/dev/null || need+=(g++)
command -v make >/dev/null || need+=(make)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        log "apt-get install ${need[*]}"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
    else
        log "missing ${need[*]}: install them"; exit 1
    fi
fi

# The sdist (it carries vendor/llama.cpp).
mkdir -p "$SRC"
SDIST="$SRC/llama_cpp_python-$VERSION.tar.gz"
if [ ! -f "$SDIST" ]; then
    log "pip download llama-cpp-python==$VERSION (sdist)"
    "$PY" -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$SRC" >&2
fi
TREE="$SRC/llama_cpp_python-$VERSION"
if [ ! -f "$TREE/vendor/llama.cpp/CMakeLists.txt" ]; then
    log "unpacking $SDIST"
    tar -xzf "$SDIST" -C "$SRC"
fi
LLAMA="$TREE/vendor/llama.cpp"
BUILD_DIR="$SRC/llama-native-build-$VERSION"
LB_SRC="$LLAMA/tools/llama-bench/llama-bench.cpp"
if ! grep -qF "$PATCH_MARK" "$LB_SRC"; then
    log "patching $LB_SRC: perf counters on (cparams.no_perf = false)"
    anchor='        cparams.embeddings   = embeddings;'
    grep -qxF "$anchor" "$LB_SRC" || { log "cannot find the line to patch in $LB_SRC"; exit 1; }
    sed -i "s|^$anchor\$|&\n        cparams.no_perf      = false; $PATCH_MARK|" "$LB_SRC"
    grep -qF "$PATCH_MARK" "$LB_SRC" || { log "patch failed"; exit 1; }
fi

log "building llama-bench (GGML_NATIVE=ON, -j$JOBS, nice $NICE) in $BUILD_DIR"
# shellcheck disable=SC2086
nice -n "$NICE" cmake -S "$LLAMA" -B "$BUILD_DIR" $FLAGS >&2
nice -n "$NICE" cmake --build "$BUILD_DIR" --target llama-bench -j "$JOBS" >&2

mkdir -p "$DEST/bin"
cp "$BUILD_DIR/bin/llama-bench" "$DEST/bin/llama-bench.tmp"
mv "$DEST/bin/llama-bench.tmp" "$DEST/bin/llama-bench"
commit=$(git -C "$LLAMA" rev-parse HEAD 2>/dev/null || echo unknown)
{
    echo "$STAMP"
    echo "llama.cpp commit: $commit"
    echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -srm), $(c++ --version | head -1)"
    grep -E '^(GGML_NATIVE|GGML_AVX[^:]*|GGML_FMA|GGML_F16C|GGML_OPENMP|CMAKE_BUILD_TYPE):' "$BUILD_DIR/CMakeCache.txt" || true
} > "$DEST/STAMP"
log "done: $DEST/bin/llama-bench"
echo "$DEST/bin/llama-bench"
