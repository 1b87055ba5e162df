build-dev/tests/test_ctx: tests/test_ctx.c src/engine/engine.h \
 include/kvlite.h src/cpu/quant.h src/kv/kv.h src/util/err.h \
 src/model/model.h src/model/gguf.h src/model/tok.h src/util/threadpool.h \
 src/kv/codec.h tests/test.h
src/engine/engine.h:
include/kvlite.h:
src/cpu/quant.h:
src/kv/kv.h:
src/util/err.h:
src/model/model.h:
src/model/gguf.h:
src/model/tok.h:
src/util/threadpool.h:
src/kv/codec.h:
tests/test.h:
