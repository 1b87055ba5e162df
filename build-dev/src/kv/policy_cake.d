build-dev/src/kv/policy_cake.o: src/kv/policy_cake.c src/kv/policy.h \
 src/kv/kv.h src/util/err.h include/kvlite.h
src/kv/policy.h:
src/kv/kv.h:
src/util/err.h:
include/kvlite.h:
