build-dev/tests/test_codec: tests/test_codec.c src/kv/codec.h src/kv/kv.h \
 src/util/err.h include/kvlite.h tests/codec_util.h tests/test.h
src/kv/codec.h:
src/kv/kv.h:
src/util/err.h:
include/kvlite.h:
tests/codec_util.h:
tests/test.h:
