build-dev/tools/cmd_gen.o: tools/cmd_gen.c tools/cli.h include/kvlite.h
tools/cli.h:
include/kvlite.h:
