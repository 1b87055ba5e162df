#!/usr/bin/env bash
# Install what kvlite needs to build and test on Debian 12 (run as root):
# the compiler, PCRE2, python3 + pip (model fetch, test scripts), hiredis and
# redis-server (the Redis tier and its tests), clang with
# libFuzzer (make fuzz) and the TSan runtime (make tsan). Only installs
# packages that are missing.
set -euo pipefail
need=()
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v make >/dev/null 2>&1 || need+=(make)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
pkg-config --exists libpcre2-8 2>/dev/null || need+=(libpcre2-dev)
# optional: kvlite kv eval measures the CacheGen rANS coder against zstd
pkg-config --exists libzstd 2>/dev/null || need+=(libzstd-dev)
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
# the Redis tier (src/engine/redis.c: hiredis) and its tests (a redis-server
# on loopback started by tests/test_redis*)
pkg-config --exists hiredis 2>/dev/null || need+=(libhiredis-dev)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
# make fuzz: clang with libFuzzer and the ASan/UBSan runtimes (Debian 12:
# clang 14, runtimes in libclang-rt-14-dev). make tsan: the compiler's TSan
# runtime (gcc 12: libtsan2). Probed by linking a trivial program.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { (void)d; return (int)(n & 0); }\n' >"$tmp/f.c"
printf 'int main(void) { return 0; }\n' >"$tmp/m.c"
if ! command -v clang >/dev/null 2>&1; then
    need+=(clang libclang-rt-14-dev)
elif ! clang -fsanitize=fuzzer,address,undefined -o "$tmp/f" "$tmp/f.c" >/dev/null 2>&1; then
    need+=("libclang-rt-$(clang -dumpversion | cut -d. -f1)-dev")
fi
if command -v cc >/dev/null 2>&1 && ! cc -fsanitize=thread -o "$tmp/m" "$tmp/m.c" >/dev/null 2>&1; then
    need+=(libtsan2)
fi
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "install_deps: missing ${need[*]}; run as root or install them" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
