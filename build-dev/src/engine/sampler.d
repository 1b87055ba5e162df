build-dev/src/engine/sampler.o: src/engine/sampler.c include/kvlite.h
include/kvlite.h:
