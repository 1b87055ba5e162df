build-dev/src/kv/pool.o: src/kv/pool.c src/kv/kv_internal.h \
 src/kv/codec.h src/kv/kv.h src/util/err.h include/kvlite.h \
 src/kv/policy.h src/kv/codec_spec.h
src/kv/kv_internal.h:
src/kv/codec.h:
src/kv/kv.h:
src/util/err.h:
include/kvlite.h:
src/kv/policy.h:
src/kv/codec_spec.h:
