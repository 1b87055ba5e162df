build-dev/tools/cmd_codecs.o: tools/cmd_codecs.c tools/cli.h \
 include/kvlite.h
tools/cli.h:
include/kvlite.h:
