build-dev/tests/test_arch: tests/test_arch.c include/kvlite.h \
 tests/test.h
include/kvlite.h:
tests/test.h:
