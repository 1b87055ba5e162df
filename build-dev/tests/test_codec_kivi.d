build-dev/tests/test_codec_kivi: tests/test_codec_kivi.c src/kv/codec.h \
 src/kv/kv.h src/util/err.h include/kvlite.h src/kv/codec_kivi.h \
 src/util/fp16.h src/kv/codec_spec.h tests/codec_util.h tests/test.h
src/kv/codec.h:
src/kv/kv.h:
src/util/err.h:
include/kvlite.h:
src/kv/codec_kivi.h:
src/util/fp16.h:
src/kv/codec_spec.h:
tests/codec_util.h:
tests/test.h:
