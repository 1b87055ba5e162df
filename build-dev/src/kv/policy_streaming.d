build-dev/src/kv/policy_streaming.o: src/kv/policy_streaming.c \
 src/kv/policy.h src/kv/kv.h src/util/err.h include/kvlite.h
src/kv/policy.h:
src/kv/kv.h:
src/util/err.h:
include/kvlite.h:
