build-dev/src/kv/policy_h2o.o: src/kv/policy_h2o.c src/kv/policy.h \
 src/kv/kv.h src/util/err.h include/kvlite.h
src/kv/policy.h:
src/kv/kv.h:
src/util/err.h:
include/kvlite.h:
