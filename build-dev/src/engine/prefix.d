build-dev/src/engine/prefix.o: src/engine/prefix.c src/engine/engine.h \
 include/kvlite.h src/cpu/quant.h src/kv/kv.h src/util/err.h \
 src/model/model.h src/model/gguf.h src/model/tok.h src/util/threadpool.h \
 src/kv/serial.h src/util/crc32c.h
src/engine/engine.h:
include/kvlite.h:
src/cpu/quant.h:
src/kv/kv.h:
src/util/err.h:
src/model/model.h:
src/model/gguf.h:
src/model/tok.h:
src/util/threadpool.h:
src/kv/serial.h:
src/util/crc32c.h:
