build-dev/tools/cmd_kverr.o: tools/cmd_kverr.c tools/cli.h \
 include/kvlite.h
tools/cli.h:
include/kvlite.h:
