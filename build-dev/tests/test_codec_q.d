build-dev/tests/test_codec_q: tests/test_codec_q.c src/kv/codec.h \
 src/kv/kv.h src/util/err.h include/kvlite.h src/kv/codec_oaken.h \
 src/kv/codec_spec.h src/util/fp16.h tests/codec_util.h tests/test.h
src/kv/codec.h:
src/kv/kv.h:
src/util/err.h:
include/kvlite.h:
src/kv/codec_oaken.h:
src/kv/codec_spec.h:
src/util/fp16.h:
tests/codec_util.h:
tests/test.h:
