/* PNG writer and heat-map renderer (see png.h). The encoder writes IHDR,
 * one IDAT and IEND; scanlines use filter 0 and the zlib stream is a sequence
 * of stored deflate blocks (<= 65535 bytes each), which every decoder reads.
 * The font is a hand-drawn 5x7 bitmap, one 35-character string per glyph. */
#include "png.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- checksums --------------------------------------------------------------------- */

uint32_t png_crc32(const uint8_t *p, size_t n) {
    static uint32_t table[256];
    static int ready;
    if (!ready) { /* reflected polynomial 0xEDB88320; idempotent, so a race only recomputes */
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
        ready = 1;
    }
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) c = table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

uint32_t png_adler32(const uint8_t *p, size_t n) {
    uint32_t a = 1, b = 0;
    while (n > 0) {
        size_t k = n < 5552 ? n : 5552; /* largest run before b can overflow 32 bits */
        n -= k;
        while (k--) {
            a += *p++;
            b += a;
        }
        a %= 65521;
        b %= 65521;
    }
    return (b << 16) | a;
}

/* ---- encoder --------------------------------------------------------------------------- */

static void put32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Writes a chunk at o (length, type, data, CRC over type + data); returns bytes written. */
static size_t put_chunk(uint8_t *o, const char type[4], const uint8_t *data, size_t n) {
    put32(o, (uint32_t)n);
    memcpy(o + 4, type, 4);
    if (n) memcpy(o + 8, data, n);
    put32(o + 8 + n, png_crc32(o + 4, n + 4));
    return n + 12;
}

int png_encode_rgb(const uint8_t *rgb, int w, int h, uint8_t **out, size_t *out_len) {
    *out = NULL;
    *out_len = 0;
    if (w <= 0 || h <= 0 || w > (1 << 16) || h > (1 << 16)) return -1;
    size_t row = (size_t)w * 3 + 1; /* filter byte + pixels */
    size_t raw_n = row * (size_t)h;
    uint8_t *raw = malloc(raw_n);
    if (!raw) return -1;
    for (int y = 0; y < h; y++) {
        raw[(size_t)y * row] = 0; /* filter: none */
        memcpy(raw + (size_t)y * row + 1, rgb + (size_t)y * (size_t)w * 3, (size_t)w * 3);
    }
    size_t n_blocks = raw_n / 65535 + 1;
    size_t z_n = 2 + raw_n + 5 * n_blocks + 4;
    size_t total = 8 + 25 + (12 + z_n) + 12;
    uint8_t *o = malloc(total), *z = malloc(z_n);
    if (!o || !z) {
        free(raw);
        free(o);
        free(z);
        return -1;
    }
    /* zlib: CMF 0x78 (deflate, 32K window), FLG 0x01 (check bits: 0x7801 % 31 == 0) */
    size_t zi = 0;
    z[zi++] = 0x78;
    z[zi++] = 0x01;
    size_t left = raw_n, off = 0;
    do {
        size_t k = left < 65535 ? left : 65535;
        z[zi++] = left == k ? 1 : 0; /* BFINAL, BTYPE 00 = stored */
        z[zi++] = (uint8_t)(k & 0xFF);
        z[zi++] = (uint8_t)(k >> 8);
        z[zi++] = (uint8_t)(~k & 0xFF);
        z[zi++] = (uint8_t)((~k >> 8) & 0xFF);
        memcpy(z + zi, raw + off, k);
        zi += k;
        off += k;
        left -= k;
    } while (left > 0);
    put32(z + zi, png_adler32(raw, raw_n));
    zi += 4;
    free(raw);

    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    size_t oi = 0;
    memcpy(o, sig, 8);
    oi += 8;
    uint8_t ihdr[13];
    put32(ihdr, (uint32_t)w);
    put32(ihdr + 4, (uint32_t)h);
    ihdr[8] = 8;  /* bit depth */
    ihdr[9] = 2;  /* colour type: RGB */
    ihdr[10] = 0; /* compression: deflate */
    ihdr[11] = 0; /* filter method */
    ihdr[12] = 0; /* no interlace */
    oi += put_chunk(o + oi, "IHDR", ihdr, sizeof ihdr);
    oi += put_chunk(o + oi, "IDAT", z, zi);
    oi += put_chunk(o + oi, "IEND", NULL, 0);
    free(z);
    *out = o;
    *out_len = oi;
    return 0;
}

int png_write_rgb(const char *path, const uint8_t *rgb, int w, int h) {
    uint8_t *buf;
    size_t n;
    if (png_encode_rgb(rgb, w, h, &buf, &n)) {
        errno = ENOMEM;
        return -1;
    }
    FILE *f = fopen(path, "wb");
    if (!f) {
        free(buf);
        return -1;
    }
    size_t wr = fwrite(buf, 1, n, f);
    int bad = wr != n;
    if (fclose(f) != 0) bad = 1;
    free(buf);
    return bad ? -1 : 0;
}

/* ---- canvas and font ---------------------------------------------------------------------- */

int png_canvas_init(png_canvas *c, int w, int h, uint8_t r, uint8_t g, uint8_t b) {
    c->w = c->h = 0;
    c->px = NULL;
    if (w <= 0 || h <= 0 || w > (1 << 16) || h > (1 << 16)) return -1;
    c->px = malloc((size_t)w * (size_t)h * 3);
    if (!c->px) return -1;
    c->w = w;
    c->h = h;
    png_fill_rect(c, 0, 0, w, h, r, g, b);
    return 0;
}

void png_canvas_free(png_canvas *c) {
    if (!c) return;
    free(c->px);
    c->px = NULL;
    c->w = c->h = 0;
}

void png_fill_rect(png_canvas *c, int x, int y, int w, int h, uint8_t r, uint8_t g, uint8_t b) {
    int x0 = x < 0 ? 0 : x, y0 = y < 0 ? 0 : y;
    int x1 = x + w > c->w ? c->w : x + w, y1 = y + h > c->h ? c->h : y + h;
    for (int yy = y0; yy < y1; yy++)
        for (int xx = x0; xx < x1; xx++) {
            uint8_t *p = c->px + ((size_t)yy * (size_t)c->w + (size_t)xx) * 3;
            p[0] = r;
            p[1] = g;
            p[2] = b;
        }
}

typedef struct glyph {
    char ch;
    const char *rows; /* 7 rows of 5 pixels, '#' = ink */
} glyph;

static const glyph FONT[] = {
    {'0', ".###.#...##..###.#.###..##...#.###."},
    {'1', "..#...##....#....#....#....#...###."},
    {'2', ".###.#...#....#...#...#...#...#####"},
    {'3', "#####...#...#.....#.....##...#.###."},
    {'4', "...#...##..#.#.#..#.#####...#....#."},
    {'5', "######....####.....#....##...#.###."},
    {'6', "..##..#...#....####.#...##...#.###."},
    {'7', "#####....#...#...#...#....#....#..."},
    {'8', ".###.#...##...#.###.#...##...#.###."},
    {'9', ".###.#...##...#.####....#...#..##.."},
    {'A', ".###.#...##...#######...##...##...#"},
    {'B', "####.#...##...#####.#...##...#####."},
    {'C', ".###.#...##....#....#....#...#.###."},
    {'D', "###..#..#.#...##...##...##..#.###.."},
    {'E', "######....#....####.#....#....#####"},
    {'F', "######....#....####.#....#....#...."},
    {'G', ".###.#...##....#.####...##...#.####"},
    {'H', "#...##...##...#######...##...##...#"},
    {'I', ".###...#....#....#....#....#...###."},
    {'J', "..###...#....#....#....#.#..#..##.."},
    {'K', "#...##..#.#.#..##...#.#..#..#.#...#"},
    {'L', "#....#....#....#....#....#....#####"},
    {'M', "#...###.###.#.##.#.##...##...##...#"},
    {'N', "#...##...###..##.#.##..###...##...#"},
    {'O', ".###.#...##...##...##...##...#.###."},
    {'P', "####.#...##...#####.#....#....#...."},
    {'Q', ".###.#...##...##...##.#.##..#..##.#"},
    {'R', "####.#...##...#####.#.#..#..#.#...#"},
    {'S', ".#####....#.....###.....#....#####."},
    {'T', "#####..#....#....#....#....#....#.."},
    {'U', "#...##...##...##...##...##...#.###."},
    {'V', "#...##...##...##...##...#.#.#...#.."},
    {'W', "#...##...##...##.#.##.#.##.#.#.#.#."},
    {'X', "#...##...#.#.#...#...#.#.#...##...#"},
    {'Y', "#...##...#.#.#...#....#....#....#.."},
    {'Z', "#####....#...#...#...#...#....#####"},
    {'%', "##...##..#...#...#...#...#..##...##"},
    {'.', "..........................##...##.."},
    {',', ".....................##....#...#..."},
    {':', "......##...##........##...##......."},
    {'-', "...............#####..............."},
    {'+', ".......#....#..#####..#....#......."},
    {'(', "...#...#...#....#....#.....#.....#."},
    {')', ".#.....#.....#....#....#...#...#..."},
    {'/', ".........#...#...#...#...#........."},
    {'=', "..........#####.....#####.........."},
    {' ', "..................................."},
};

static const char *glyph_rows(char ch) {
    if (ch >= 'a' && ch <= 'z') ch = (char)(ch - 32);
    for (size_t i = 0; i < sizeof FONT / sizeof FONT[0]; i++)
        if (FONT[i].ch == ch) return FONT[i].rows;
    return NULL;
}

int png_text_width(const char *s, int scale) {
    size_t n = strlen(s);
    return n ? (int)n * 6 * scale - scale : 0;
}

void png_draw_text(png_canvas *c, int x, int y, const char *s, int scale, uint8_t r, uint8_t g, uint8_t b) {
    if (scale < 1) scale = 1;
    for (; *s; s++, x += 6 * scale) {
        const char *rows = glyph_rows(*s);
        for (int ry = 0; ry < 7; ry++)
            for (int rx = 0; rx < 5; rx++) {
                int ink = rows ? rows[ry * 5 + rx] == '#' : (ry == 0 || ry == 6 || rx == 0 || rx == 4);
                if (ink) png_fill_rect(c, x + rx * scale, y + ry * scale, scale, scale, r, g, b);
            }
    }
}

/* ---- heat map ------------------------------------------------------------------------------- */

void png_heat_color(double v, uint8_t rgb[3]) {
    static const double lo[3] = {215, 48, 39}, mid[3] = {250, 215, 90}, hi[3] = {40, 160, 75};
    if (!(v >= 0)) v = 0; /* NaN too */
    if (v > 1) v = 1;
    const double *a = v < 0.5 ? lo : mid, *b = v < 0.5 ? mid : hi;
    double t = v < 0.5 ? v * 2 : (v - 0.5) * 2;
    for (int i = 0; i < 3; i++) rgb[i] = (uint8_t)(a[i] + (b[i] - a[i]) * t + 0.5);
}

int png_heatmap_render(const png_heatmap *hm, png_canvas *out) {
    enum { S = 2, CH = 7 * S, PAD = 12, CW_MIN = 64, CELL_H = 30, BAR_W = 18 };
    if (hm->nx <= 0 || hm->ny <= 0) return -1;
    int ytw = png_text_width(hm->ylabel ? hm->ylabel : "", S);
    for (int i = 0; i < hm->ny; i++) {
        int w = png_text_width(hm->yticks[i], S);
        if (w > ytw) ytw = w;
    }
    int cw = CW_MIN;
    for (int i = 0; i < hm->nx; i++) {
        int w = png_text_width(hm->xticks[i], S) + 10;
        if (w > cw) cw = w;
    }
    int title_h = hm->title ? CH + 10 : 0;
    int left = PAD + ytw + 10;
    int top = PAD + title_h + CH + 8; /* room for the y label above the rows */
    int gw = hm->nx * cw, gh = hm->ny * CELL_H;
    int bar_x = left + gw + 16;
    int w = bar_x + BAR_W + 8 + png_text_width("100%", S) + PAD;
    int xl_w = png_text_width(hm->xlabel ? hm->xlabel : "", S);
    if (left + xl_w + PAD > w) w = left + xl_w + PAD;
    int tw = png_text_width(hm->title ? hm->title : "", S);
    if (PAD + tw + PAD > w) w = PAD + tw + PAD;
    int h = top + gh + 8 + CH + 10 + (hm->xlabel ? CH + 8 : 0) + PAD;
    if (png_canvas_init(out, w, h, 255, 255, 255)) return -1;
    if (hm->title) png_draw_text(out, PAD, PAD, hm->title, S, 20, 20, 20);
    if (hm->ylabel) png_draw_text(out, PAD, top - CH - 8, hm->ylabel, S, 60, 60, 60);
    for (int yi = 0; yi < hm->ny; yi++) {
        int y = top + yi * CELL_H;
        png_draw_text(out, left - 10 - png_text_width(hm->yticks[yi], S), y + (CELL_H - CH) / 2, hm->yticks[yi], S,
                      40, 40, 40);
        for (int xi = 0; xi < hm->nx; xi++) {
            int x = left + xi * cw;
            double v = hm->val[yi * hm->nx + xi];
            uint8_t c[3] = {200, 200, 200};
            char label[16] = "-";
            if (!isnan(v)) {
                png_heat_color(v, c);
                snprintf(label, sizeof label, "%.0f", v * 100);
            }
            png_fill_rect(out, x + 1, y + 1, cw - 2, CELL_H - 2, c[0], c[1], c[2]);
            double lum = 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2];
            uint8_t ink = lum < 120 ? 255 : 20;
            png_draw_text(out, x + (cw - png_text_width(label, S)) / 2, y + (CELL_H - CH) / 2, label, S, ink, ink, ink);
        }
    }
    for (int xi = 0; xi < hm->nx; xi++)
        png_draw_text(out, left + xi * cw + (cw - png_text_width(hm->xticks[xi], S)) / 2, top + gh + 8,
                      hm->xticks[xi], S, 40, 40, 40);
    if (hm->xlabel)
        png_draw_text(out, left + (gw - xl_w) / 2 > PAD ? left + (gw - xl_w) / 2 : PAD, top + gh + 8 + CH + 10,
                      hm->xlabel, S, 60, 60, 60);
    /* colour bar: 100% at the top, 0% at the bottom */
    for (int yy = 0; yy < gh; yy++) {
        uint8_t c[3];
        png_heat_color(1.0 - (double)yy / (double)(gh > 1 ? gh - 1 : 1), c);
        png_fill_rect(out, bar_x, top + yy, BAR_W, 1, c[0], c[1], c[2]);
    }
    png_draw_text(out, bar_x + BAR_W + 6, top, "100%", S, 40, 40, 40);
    png_draw_text(out, bar_x + BAR_W + 6, top + gh - CH, "0%", S, 40, 40, 40);
    return 0;
}

int png_heatmap_write(const char *path, const png_heatmap *hm) {
    png_canvas c;
    if (png_heatmap_render(hm, &c)) return -1;
    int rc = png_write_rgb(path, c.px, c.w, c.h);
    png_canvas_free(&c);
    return rc;
}
