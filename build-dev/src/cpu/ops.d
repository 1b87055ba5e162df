build-dev/src/cpu/ops.o: src/cpu/ops.c src/cpu/ops.h
src/cpu/ops.h:
