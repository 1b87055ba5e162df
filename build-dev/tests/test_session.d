build-dev/tests/test_session: tests/test_session.c src/engine/engine.h \
 include/kvlite.h src/cpu/quant.h src/kv/kv.h src/util/err.h \
 src/model/model.h src/model/gguf.h src/model/tok.h src/util/threadpool.h \
 src/kv/codec.h src/kv/kv_internal.h src/kv/policy.h src/kv/serial.h \
 tests/test.h src/util/crc32c.h
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
src/kv/kv_internal.h:
src/kv/policy.h:
src/kv/serial.h:
tests/test.h:
src/util/crc32c.h:
