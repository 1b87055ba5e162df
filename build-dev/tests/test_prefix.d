build-dev/tests/test_prefix: tests/test_prefix.c src/engine/engine.h \
 include/kvlite.h src/cpu/quant.h src/kv/kv.h src/util/err.h \
 src/model/model.h src/model/gguf.h src/model/tok.h src/util/threadpool.h \
 tests/test.h
src/engine/engine.h:
include/kvlite.h:
src/cpu/quant.h:
src/kv/kv.h:
src/util/err.h:
src/model/model.h:
src/model/gguf.h:
src/model/tok.h:
src/util/threadpool.h:
tests/test.h:
