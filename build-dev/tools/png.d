build-dev/tools/png.o: tools/png.c tools/png.h
tools/png.h:
