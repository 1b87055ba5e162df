build-dev/tools/cmd_bench.o: tools/cmd_bench.c tools/cli.h \
 include/kvlite.h
tools/cli.h:
include/kvlite.h:
