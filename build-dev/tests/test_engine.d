build-dev/tests/test_engine: tests/test_engine.c include/kvlite.h \
 tests/test.h
include/kvlite.h:
tests/test.h:
