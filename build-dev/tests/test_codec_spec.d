build-dev/tests/test_codec_spec: tests/test_codec_spec.c \
 src/kv/codec_spec.h src/kv/codec.h src/kv/kv.h src/util/err.h \
 include/kvlite.h tests/test.h
src/kv/codec_spec.h:
src/kv/codec.h:
src/kv/kv.h:
src/util/err.h:
include/kvlite.h:
tests/test.h:
