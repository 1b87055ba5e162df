build-dev/src/cpu/quant.o: src/cpu/quant.c src/cpu/quant.h \
 src/util/fp16.h
src/cpu/quant.h:
src/util/fp16.h:
