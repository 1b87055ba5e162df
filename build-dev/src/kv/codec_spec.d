build-dev/src/kv/codec_spec.o: src/kv/codec_spec.c src/kv/codec_spec.h \
 src/kv/codec.h src/kv/kv.h src/util/err.h include/kvlite.h
src/kv/codec_spec.h:
src/kv/codec.h:
src/kv/kv.h:
src/util/err.h:
include/kvlite.h:
