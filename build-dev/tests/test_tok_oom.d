build-dev/tests/test_tok_oom: tests/test_tok_oom.c src/model/chat.h \
 include/kvlite.h src/model/gguf.h src/cpu/quant.h src/util/err.h \
 src/model/tok.h tests/test.h tests/tok_fixture.h tests/gguf_writer.h
src/model/chat.h:
include/kvlite.h:
src/model/gguf.h:
src/cpu/quant.h:
src/util/err.h:
src/model/tok.h:
tests/test.h:
tests/tok_fixture.h:
tests/gguf_writer.h:
