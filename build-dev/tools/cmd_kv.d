build-dev/tools/cmd_kv.o: tools/cmd_kv.c tools/cli.h include/kvlite.h
tools/cli.h:
include/kvlite.h:
