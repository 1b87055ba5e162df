build-dev/tests/test_policy: tests/test_policy.c src/kv/kv.h \
 src/util/err.h include/kvlite.h src/kv/policy.h tests/test.h
src/kv/kv.h:
src/util/err.h:
include/kvlite.h:
src/kv/policy.h:
tests/test.h:
