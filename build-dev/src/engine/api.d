build-dev/src/engine/api.o: src/engine/api.c src/engine/engine.h \
 include/kvlite.h src/cpu/quant.h src/kv/kv.h src/util/err.h \
 src/model/model.h src/model/gguf.h src/model/tok.h src/util/threadpool.h \
 src/kv/policy.h src/kv/codec.h src/model/chat.h
src/engine/engine.h:
include/kvlite.h:
src/cpu/quant.h:
src/kv/kv.h:
src/util/err.h:
src/model/model.h:
src/model/gguf.h:
src/model/tok.h:
src/util/threadpool.h:
src/kv/policy.h:
src/kv/codec.h:
src/model/chat.h:
