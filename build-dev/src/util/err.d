build-dev/src/util/err.o: src/util/err.c src/util/err.h include/kvlite.h
src/util/err.h:
include/kvlite.h:
