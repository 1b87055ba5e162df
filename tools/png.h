/* Minimal PNG output for the CLI's plots: an RGB canvas with filled
 * rectangles and a built-in 5x7 bitmap font, encoded as an 8-bit RGB PNG whose
 * zlib stream uses "stored" (uncompressed) deflate blocks, with CRC-32 and
 * Adler-32 computed here. No external libraries. Also the retrieval heat map
 * (accuracy by depth x length, red -> yellow -> green). */
#ifndef KVL_TOOLS_PNG_H
#define KVL_TOOLS_PNG_H

#include <stddef.h>
#include <stdint.h>

/* CRC-32 (ISO-HDLC, as in PNG chunks) and Adler-32 (zlib) of p[0..n). */
uint32_t png_crc32(const uint8_t *p, size_t n);
uint32_t png_adler32(const uint8_t *p, size_t n);

/* Encode rgb [h][w][3] as PNG into a malloc'd buffer. 0, or -1 (bad size, OOM). */
int png_encode_rgb(const uint8_t *rgb, int w, int h, uint8_t **out, size_t *out_len);
/* Encode and write to path. 0, or -1 with errno from the failing call. */
int png_write_rgb(const char *path, const uint8_t *rgb, int w, int h);

typedef struct png_canvas {
    int w, h;
    uint8_t *px; /* [h][w][3] */
} png_canvas;

/* Canvas filled with (r, g, b). 0 or -1 (OOM / bad size). */
int png_canvas_init(png_canvas *c, int w, int h, uint8_t r, uint8_t g, uint8_t b);
void png_canvas_free(png_canvas *c);
/* Fill a rectangle (clipped to the canvas). */
void png_fill_rect(png_canvas *c, int x, int y, int w, int h, uint8_t r, uint8_t g, uint8_t b);
/* Text in the 5x7 font magnified by scale (>= 1): digits, A-Z (lower case drawn
 * as upper case), space and . , : % - ( ) / = + ; unknown characters draw as
 * a hollow box. (x, y) is the top-left corner. */
void png_draw_text(png_canvas *c, int x, int y, const char *s, int scale, uint8_t r, uint8_t g, uint8_t b);
/* Width in pixels of s drawn at scale (6 * scale per character, minus the last gap). */
int png_text_width(const char *s, int scale);

/* Heat map: ny rows (top to bottom) x nx columns; val [ny][nx] in 0..1 (NaN:
 * no data, drawn grey); each cell shows its value as a percentage. */
typedef struct png_heatmap {
    const char *title, *xlabel, *ylabel;
    int nx, ny;
    const char *const *xticks; /* [nx] */
    const char *const *yticks; /* [ny] */
    const double *val;
} png_heatmap;

/* Draw into a new canvas (freed by the caller). 0 or -1. */
int png_heatmap_render(const png_heatmap *hm, png_canvas *out);
/* Render and write a PNG file. 0 or -1. */
int png_heatmap_write(const char *path, const png_heatmap *hm);
/* Colour of value v (0..1) on the red -> yellow -> green scale. */
void png_heat_color(double v, uint8_t rgb[3]);

#endif
