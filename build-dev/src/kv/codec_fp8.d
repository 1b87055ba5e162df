build-dev/src/kv/codec_fp8.o: src/kv/codec_fp8.c src/kv/codec_q.h \
 src/kv/codec.h src/kv/kv.h src/util/err.h include/kvlite.h \
 src/util/fp16.h
src/kv/codec_q.h:
src/kv/codec.h:
src/kv/kv.h:
src/util/err.h:
include/kvlite.h:
src/util/fp16.h:
