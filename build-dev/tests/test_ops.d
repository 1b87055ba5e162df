build-dev/tests/test_ops: tests/test_ops.c src/cpu/ops.h tests/test.h \
 src/util/fp16.h src/util/threadpool.h
src/cpu/ops.h:
tests/test.h:
src/util/fp16.h:
src/util/threadpool.h:
