build-dev/src/kv/codec_int4.o: src/kv/codec_int4.c src/kv/codec_q.h \
 src/kv/codec.h src/kv/kv.h src/util/err.h include/kvlite.h \
 src/util/fp16.h
src/kv/codec_q.h:
src/kv/codec.h:
src/kv/kv.h:
src/util/err.h:
include/kvlite.h:
src/util/fp16.h:
