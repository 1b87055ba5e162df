build-dev/tests/test_sampler: tests/test_sampler.c include/kvlite.h \
 tests/test.h
include/kvlite.h:
tests/test.h:
