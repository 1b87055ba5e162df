build-dev/tests/test_codec_squat: tests/test_codec_squat.c src/kv/codec.h \
 src/kv/kv.h src/util/err.h include/kvlite.h src/kv/codec_kivi.h \
 src/util/fp16.h src/kv/codec_squat.h tests/codec_util.h tests/test.h
src/kv/codec.h:
src/kv/kv.h:
src/util/err.h:
include/kvlite.h:
src/kv/codec_kivi.h:
src/util/fp16.h:
src/kv/codec_squat.h:
tests/codec_util.h:
tests/test.h:
