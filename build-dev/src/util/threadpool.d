build-dev/src/util/threadpool.o: src/util/threadpool.c \
 src/util/threadpool.h
src/util/threadpool.h:
