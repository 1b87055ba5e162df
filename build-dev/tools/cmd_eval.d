build-dev/tools/cmd_eval.o: tools/cmd_eval.c tools/cli.h include/kvlite.h
tools/cli.h:
include/kvlite.h:
