build-dev/src/kv/codec_oaken.o: src/kv/codec_oaken.c src/kv/codec_oaken.h \
 src/kv/codec.h src/kv/kv.h src/util/err.h include/kvlite.h \
 src/kv/codec_q.h src/util/fp16.h src/kv/codec_spec.h
src/kv/codec_oaken.h:
src/kv/codec.h:
src/kv/kv.h:
src/util/err.h:
include/kvlite.h:
src/kv/codec_q.h:
src/util/fp16.h:
src/kv/codec_spec.h:
