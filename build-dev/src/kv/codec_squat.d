build-dev/src/kv/codec_squat.o: src/kv/codec_squat.c src/kv/codec_squat.h \
 src/kv/codec.h src/kv/kv.h src/util/err.h include/kvlite.h \
 src/kv/codec_spec.h src/kv/codec_kivi.h src/util/fp16.h
src/kv/codec_squat.h:
src/kv/codec.h:
src/kv/kv.h:
src/util/err.h:
include/kvlite.h:
src/kv/codec_spec.h:
src/kv/codec_kivi.h:
src/util/fp16.h:
