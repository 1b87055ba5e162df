build-dev/tools/cli_util.o: tools/cli_util.c tools/cli.h include/kvlite.h
tools/cli.h:
include/kvlite.h:
