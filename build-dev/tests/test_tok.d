build-dev/tests/test_tok: tests/test_tok.c src/model/chat.h \
 include/kvlite.h src/model/gguf.h src/cpu/quant.h src/util/err.h \
 src/model/tok.h tests/gguf_writer.h tests/test.h tests/tok_fixture.h
src/model/chat.h:
include/kvlite.h:
src/model/gguf.h:
src/cpu/quant.h:
src/util/err.h:
src/model/tok.h:
tests/gguf_writer.h:
tests/test.h:
tests/tok_fixture.h:
