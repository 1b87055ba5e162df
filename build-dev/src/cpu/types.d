build-dev/src/cpu/types.o: src/cpu/types.c src/cpu/quant.h
src/cpu/quant.h:
