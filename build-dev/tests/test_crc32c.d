build-dev/tests/test_crc32c: tests/test_crc32c.c tests/test.h \
 src/util/crc32c.h
tests/test.h:
src/util/crc32c.h:
