
/*
 * Copyright (C) ngx_unico_selfie_module authors
 *
 * libFuzzer target: the streaming decoder against unico_payload_parse().
 *
 * The input is a header and a body: byte 0 says how many cuts (0 .. 15),
 * then two bytes per cut give its position in the body (modulo its
 * length).  The body is fed in the chunks those cuts make, each chunk in
 * a buffer of its exact size, and also whole and, when short, one byte at
 * a time; every way must give what unico_payload_parse() gives on the
 * whole body: the same result and, on success, the same type and bytes,
 * in an output buffer of exactly min(max_image, decoded_max(body)) bytes.
 * Under the same limits as fuzz_payload (max_image from the body's length
 * and none), with libc and with the pool allocator.
 */


#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "unico_selfie_payload.h"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


/* a pool: blocks on a list, freed together at the end */

typedef struct block_s  block_t;

struct block_s {
    block_t  *next;
    size_t    pad;
};


static void *
pool_alloc(void *pool, size_t size)
{
    block_t  *b, **head = pool;

    b = malloc(sizeof(block_t) + size);
    if (b == NULL) {
        return NULL;
    }

    b->next = *head;
    *head = b;

    return b + 1;
}


static void
pool_destroy(block_t *head)
{
    block_t  *next;

    while (head != NULL) {
        next = head->next;
        free(head);
        head = next;
    }
}


static void
run(const uint8_t *body, size_t len, const size_t *cuts, size_t ncuts,
    size_t max_image, unsigned pool, unico_payload_rc_e want,
    const unico_image_t *img)
{
    size_t                   i, from, to, cap;
    block_t                 *head;
    unsigned char           *out, *chunk;
    unico_image_t            got;
    unico_pool_alloc_t       pa;
    unico_payload_rc_e       rc;
    unico_payload_stream_t  *st;

    cap = unico_base64_decoded_max(len);

    if (max_image < cap) {
        cap = max_image;
    }

    out = malloc(cap ? cap : 1);
    if (out == NULL) {
        abort();
    }

    head = NULL;
    unico_pool_alloc_init(&pa, pool_alloc, &head);

    st = unico_payload_stream_create(out, cap, max_image, len,
                                     pool ? &pa.funcs : NULL);
    if (st == NULL) {
        abort();
    }

    from = 0;

    for (i = 0; i <= ncuts; i++) {
        to = (i < ncuts) ? cuts[i] : len;

        if (to <= from) {
            continue;
        }

        chunk = malloc(to - from);
        if (chunk == NULL) {
            abort();
        }

        memcpy(chunk, body + from, to - from);

        if (unico_payload_stream_feed(st, chunk, to - from)
            != UNICO_PAYLOAD_OK)
        {
            abort();
        }

        free(chunk);
        from = to;
    }

    rc = unico_payload_stream_finish(st, &got);

    if (rc != want) {
        abort();
    }

    if (rc == UNICO_PAYLOAD_OK) {

        if (got.data != out || got.len != img->len || got.type != img->type
            || memcmp(got.data, img->data, got.len) != 0)
        {
            abort();
        }

    } else if (got.data != NULL || got.len != 0
               || got.type != UNICO_IMAGE_NONE)
    {
        abort();
    }

    unico_payload_stream_destroy(st);
    pool_destroy(head);
    free(out);
}


static int
cmp_size(const void *a, const void *b)
{
    size_t  x = *(const size_t *) a, y = *(const size_t *) b;

    return (x > y) - (x < y);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t               i, n, len, ncuts, max;
    size_t               cuts[16], bytes[256];
    unsigned char       *buf;
    const uint8_t       *body;
    unico_image_t        img;
    unico_payload_rc_e   want;

    static const size_t  divs[] = { 0, 2, 3, 5 };

    if (size == 0) {
        return 0;
    }

    n = data[0] % 16;

    if (size < 1 + 2 * n) {
        return 0;
    }

    body = data + 1 + 2 * n;
    len = size - 1 - 2 * n;
    ncuts = 0;

    for (i = 0; i < n && len > 0; i++) {
        cuts[ncuts++] = ((size_t) data[1 + 2 * i] << 8 | data[2 + 2 * i])
                        % len;
    }

    qsort(cuts, ncuts, sizeof(size_t), cmp_size);

    for (i = 0; i < len && i < 256; i++) {
        bytes[i] = i;
    }

    for (i = 0; i < sizeof(divs) / sizeof(divs[0]); i++) {
        max = divs[i] ? len / divs[i] : (size_t) -1;

        buf = malloc(len ? len : 1);
        if (buf == NULL) {
            abort();
        }

        memcpy(buf, body, len);
        want = unico_payload_parse(buf, len, max, &img);

        run(body, len, cuts, ncuts, max, i & 1, want, &img);
        run(body, len, NULL, 0, max, 0, want, &img);

        if (len <= 256) {
            run(body, len, bytes, len, max, 1, want, &img);
        }

        free(buf);
    }

    return 0;
}
