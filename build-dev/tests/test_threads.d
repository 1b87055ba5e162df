build-dev/tests/test_threads: tests/test_threads.c include/kvlite.h \
 tests/test.h
include/kvlite.h:
tests/test.h:
