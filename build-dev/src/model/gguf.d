build-dev/src/model/gguf.o: src/model/gguf.c src/model/gguf.h \
 src/cpu/quant.h src/util/err.h include/kvlite.h src/util/hash.h
src/model/gguf.h:
src/cpu/quant.h:
src/util/err.h:
include/kvlite.h:
src/util/hash.h:
