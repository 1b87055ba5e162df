build-dev/src/kv/codec_oaken_avx2.o: src/kv/codec_oaken_avx2.c \
 src/kv/codec.h src/kv/kv.h src/util/err.h include/kvlite.h \
 src/kv/codec_oaken.h src/kv/codec_q_avx2.h src/util/fp16.h
src/kv/codec.h:
src/kv/kv.h:
src/util/err.h:
include/kvlite.h:
src/kv/codec_oaken.h:
src/kv/codec_q_avx2.h:
src/util/fp16.h:
