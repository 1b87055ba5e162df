build-dev/src/kv/attn.o: src/kv/attn.c src/kv/kv_internal.h \
 src/kv/codec.h src/kv/kv.h src/util/err.h include/kvlite.h \
 src/kv/policy.h src/util/threadpool.h
src/kv/kv_internal.h:
src/kv/codec.h:
src/kv/kv.h:
src/util/err.h:
include/kvlite.h:
src/kv/policy.h:
src/util/threadpool.h:
