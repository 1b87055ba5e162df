build-dev/src/model/model.o: src/model/model.c src/model/model.h \
 include/kvlite.h src/cpu/quant.h src/model/gguf.h src/util/err.h \
 src/model/tok.h
src/model/model.h:
include/kvlite.h:
src/cpu/quant.h:
src/model/gguf.h:
src/util/err.h:
src/model/tok.h:
