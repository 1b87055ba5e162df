build-dev/src/kv/rot.o: src/kv/rot.c src/kv/kv_internal.h src/kv/codec.h \
 src/kv/kv.h src/util/err.h include/kvlite.h src/kv/policy.h
src/kv/kv_internal.h:
src/kv/codec.h:
src/kv/kv.h:
src/util/err.h:
include/kvlite.h:
src/kv/policy.h:
