build-dev/tests/test_tasks: tests/test_tasks.c tests/test.h \
 tests/../tools/png.c tests/../tools/png.h tests/../tools/tasks.c \
 tests/../tools/tasks.h include/kvlite.h
tests/test.h:
tests/../tools/png.c:
tests/../tools/png.h:
tests/../tools/tasks.c:
tests/../tools/tasks.h:
include/kvlite.h:
