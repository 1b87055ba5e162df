build-dev/tests/test_kv: tests/test_kv.c src/kv/codec.h src/kv/kv.h \
 src/util/err.h include/kvlite.h tests/test.h
src/kv/codec.h:
src/kv/kv.h:
src/util/err.h:
include/kvlite.h:
tests/test.h:
