build-dev/tests/test_reference: tests/test_reference.c include/kvlite.h \
 tests/test.h
include/kvlite.h:
tests/test.h:
