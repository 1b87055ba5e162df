build-dev/src/kv/codec_kivi_avx2.o: src/kv/codec_kivi_avx2.c \
 src/kv/codec_kivi.h src/kv/codec.h src/kv/kv.h src/util/err.h \
 include/kvlite.h src/util/fp16.h
src/kv/codec_kivi.h:
src/kv/codec.h:
src/kv/kv.h:
src/util/err.h:
include/kvlite.h:
src/util/fp16.h:
