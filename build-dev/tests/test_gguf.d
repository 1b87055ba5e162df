build-dev/tests/test_gguf: tests/test_gguf.c include/kvlite.h \
 src/model/gguf.h src/cpu/quant.h src/util/err.h src/model/tok.h \
 tests/test.h
include/kvlite.h:
src/model/gguf.h:
src/cpu/quant.h:
src/util/err.h:
src/model/tok.h:
tests/test.h:
