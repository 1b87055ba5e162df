build-dev/tools/cmd_calibrate.o: tools/cmd_calibrate.c tools/cli.h \
 include/kvlite.h src/engine/calibrate.h
tools/cli.h:
include/kvlite.h:
src/engine/calibrate.h:
