build-dev/tests/test_threadpool: tests/test_threadpool.c tests/test.h \
 src/util/threadpool.h
tests/test.h:
src/util/threadpool.h:
