build-dev/src/model/tok.o: src/model/tok.c src/model/tok.h \
 include/kvlite.h src/model/gguf.h src/cpu/quant.h src/util/err.h \
 src/model/chat.h src/util/hash.h src/util/utf8.h
src/model/tok.h:
include/kvlite.h:
src/model/gguf.h:
src/cpu/quant.h:
src/util/err.h:
src/model/chat.h:
src/util/hash.h:
src/util/utf8.h:
