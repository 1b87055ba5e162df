build-dev/tools/tasks.o: tools/tasks.c tools/tasks.h include/kvlite.h
tools/tasks.h:
include/kvlite.h:
