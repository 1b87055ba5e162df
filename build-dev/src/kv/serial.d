build-dev/src/kv/serial.o: src/kv/serial.c src/kv/serial.h src/kv/kv.h \
 src/util/err.h include/kvlite.h src/kv/kv_internal.h src/kv/codec.h \
 src/kv/policy.h src/util/crc32c.h
src/kv/serial.h:
src/kv/kv.h:
src/util/err.h:
include/kvlite.h:
src/kv/kv_internal.h:
src/kv/codec.h:
src/kv/policy.h:
src/util/crc32c.h:
