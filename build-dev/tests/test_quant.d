build-dev/tests/test_quant: tests/test_quant.c src/cpu/quant.h \
 tests/test.h src/util/fp16.h
src/cpu/quant.h:
tests/test.h:
src/util/fp16.h:
