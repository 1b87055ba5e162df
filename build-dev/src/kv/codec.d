build-dev/src/kv/codec.o: src/kv/codec.c src/kv/codec.h src/kv/kv.h \
 src/util/err.h include/kvlite.h src/util/fp16.h
src/kv/codec.h:
src/kv/kv.h:
src/util/err.h:
include/kvlite.h:
src/util/fp16.h:
