build-dev/tools/kvlite.o: tools/kvlite.c tools/cli.h include/kvlite.h
tools/cli.h:
include/kvlite.h:
