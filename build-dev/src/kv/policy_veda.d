build-dev/src/kv/policy_veda.o: src/kv/policy_veda.c src/kv/policy.h \
 src/kv/kv.h src/util/err.h include/kvlite.h
src/kv/policy.h:
src/kv/kv.h:
src/util/err.h:
include/kvlite.h:
