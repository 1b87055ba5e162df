build-dev/src/engine/calibrate.o: src/engine/calibrate.c \
 src/engine/calibrate.h include/kvlite.h src/engine/engine.h \
 src/cpu/quant.h src/kv/kv.h src/util/err.h src/model/model.h \
 src/model/gguf.h src/model/tok.h src/util/threadpool.h \
 src/kv/codec_oaken.h src/kv/codec.h
src/engine/calibrate.h:
include/kvlite.h:
src/engine/engine.h:
src/cpu/quant.h:
src/kv/kv.h:
src/util/err.h:
src/model/model.h:
src/model/gguf.h:
src/model/tok.h:
src/util/threadpool.h:
src/kv/codec_oaken.h:
src/kv/codec.h:
