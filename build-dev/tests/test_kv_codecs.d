build-dev/tests/test_kv_codecs: tests/test_kv_codecs.c src/kv/codec.h \
 src/kv/kv.h src/util/err.h include/kvlite.h src/kv/codec_spec.h \
 tests/test.h
src/kv/codec.h:
src/kv/kv.h:
src/util/err.h:
include/kvlite.h:
src/kv/codec_spec.h:
tests/test.h:
