build-dev/tools/cmd_retrieval.o: tools/cmd_retrieval.c tools/cli.h \
 include/kvlite.h tools/png.h tools/tasks.h
tools/cli.h:
include/kvlite.h:
tools/png.h:
tools/tasks.h:
