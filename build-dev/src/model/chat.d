build-dev/src/model/chat.o: src/model/chat.c src/model/chat.h \
 include/kvlite.h src/model/gguf.h src/cpu/quant.h src/util/err.h \
 src/model/tok.h src/util/utf8.h
src/model/chat.h:
include/kvlite.h:
src/model/gguf.h:
src/cpu/quant.h:
src/util/err.h:
src/model/tok.h:
src/util/utf8.h:
