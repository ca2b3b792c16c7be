
/*
 * Copyright (C) ngx_unico_selfie_module authors
 *
 * Instructions per JSON byte of the pure core, for bench/core-ipb.sh: reads
 * an image, wraps it as Unico does ({"fileContents":"<base64>",
 * "contentType":"image/jpeg"}), and runs one of
 *
 *     parse    unico_payload_parse() in place
 *     stream   the streaming decoder, in chunks of argv[3] bytes (4096)
 *     base64   unico_base64_decode() of the base64 text alone
 *     base64-ssse3  the same, with the SSSE3 decoder even if AVX2 is there
 *
 * inside measure(), which callgrind counts alone (--toggle-collect).
 * Built with -DUNICO_IPB_BEFORE, only "parse", against an older core.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unico_selfie_payload.h"


static const char  b64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";


size_t measure(const char *mode, unsigned char *json, size_t len,
    unsigned char *out, size_t chunk, size_t b64_off, size_t b64_len);


__attribute__((noinline)) size_t
measure(const char *mode, unsigned char *json, size_t len,
    unsigned char *out, size_t chunk, size_t b64_off, size_t b64_len)
{
    unico_image_t  img;

    (void) out;
    (void) chunk;
    (void) b64_off;
    (void) b64_len;

    if (strcmp(mode, "parse") == 0) {
        if (unico_payload_parse(json, len, (size_t) -1, &img)
            != UNICO_PAYLOAD_OK)
        {
            return 0;
        }

        return img.len;
    }

#ifndef UNICO_IPB_BEFORE

    if (strcmp(mode, "stream") == 0) {
        size_t                   off, n;
        unico_payload_stream_t  *st;

        st = unico_payload_stream_create(out, len, (size_t) -1, len, NULL);
        if (st == NULL) {
            return 0;
        }

        for (off = 0; off < len; off += n) {
            n = (len - off < chunk) ? len - off : chunk;
            (void) unico_payload_stream_feed(st, json + off, n);
        }

        if (unico_payload_stream_finish(st, &img) != UNICO_PAYLOAD_OK) {
            img.len = 0;
        }

        unico_payload_stream_destroy(st);

        return img.len;
    }

    if (strcmp(mode, "base64") == 0) {
        return unico_base64_decode(out, json + b64_off, b64_len);
    }

    if (strcmp(mode, "base64-ssse3") == 0) {
        return unico_base64_decode_with(UNICO_BASE64_SSSE3, out,
                                        json + b64_off, b64_len);
    }

#endif

    return 0;
}


int
main(int argc, char **argv)
{
    long            size;
    FILE           *f;
    size_t          i, len, n, chunk;
    uint32_t        v;
    unsigned char  *img, *json, *out, *p;

    if (argc < 3) {
        fprintf(stderr, "usage: %s parse|stream|base64 image [chunk]\n",
                argv[0]);
        return 2;
    }

    chunk = (argc > 3) ? (size_t) atol(argv[3]) : 4096;

    f = fopen(argv[2], "rb");
    if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) <= 0
        || fseek(f, 0, SEEK_SET) != 0)
    {
        perror(argv[2]);
        return 1;
    }

    img = malloc((size_t) size);
    json = malloc((size_t) size * 2 + 64);
    out = malloc((size_t) size * 2 + 64);

    if (img == NULL || json == NULL || out == NULL
        || fread(img, 1, (size_t) size, f) != (size_t) size)
    {
        return 1;
    }

    fclose(f);

    p = json;
    p += sprintf((char *) p, "{\"fileContents\":\"");

    for (i = 0; i < (size_t) size; i += 3) {
        v = (uint32_t) img[i] << 16;
        v |= (i + 1 < (size_t) size) ? (uint32_t) img[i + 1] << 8 : 0;
        v |= (i + 2 < (size_t) size) ? img[i + 2] : 0;

        *p++ = b64[v >> 18 & 0x3f];
        *p++ = b64[v >> 12 & 0x3f];
        *p++ = (i + 1 < (size_t) size) ? b64[v >> 6 & 0x3f] : '=';
        *p++ = (i + 2 < (size_t) size) ? b64[v & 0x3f] : '=';
    }

    n = (size_t) (p - json) - 17;
    p += sprintf((char *) p, "\",\"contentType\":\"image/jpeg\"}");
    len = (size_t) (p - json);

    i = measure(argv[1], json, len, out, chunk, 17, n);

    printf("json %zu bytes, image %ld bytes, decoded %zu\n", len, size, i);

    return (i == (strcmp(argv[1], "base64") ? (size_t) size : (size_t) size))
           ? 0 : 1;
}
