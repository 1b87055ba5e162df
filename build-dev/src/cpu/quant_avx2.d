build-dev/src/cpu/quant_avx2.o: src/cpu/quant_avx2.c src/cpu/quant.h \
 src/util/fp16.h
src/cpu/quant.h:
src/util/fp16.h:
