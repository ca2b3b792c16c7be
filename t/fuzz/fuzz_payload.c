
/*
 * Copyright (C) ngx_unico_selfie_module authors
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * libFuzzer target: unico_payload_parse() on any bytes.
 *
 * The input is copied to a buffer of its exact size, so that ASan sees any
 * access past it.  A document that parses is parsed again with max_image
 * set to its image's length, which must give the same image, and to one
 * byte less, which must give image_too_large.
 *
 * Differential: every parse is repeated with unico_payload_parse_reference(),
 * which has yajl lex the whole document, under the same max_image and a
 * few smaller ones; both must give the same result, and on success the
 * same image and type.
 */


#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "unico_selfie_payload.h"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


static unico_payload_rc_e
parse_with(unico_payload_rc_e (*fn)(unsigned char *, size_t, size_t,
    unico_image_t *), const uint8_t *data, size_t size, size_t max_image,
    unsigned char **copy, unico_image_t *out)
{
    unsigned char       *buf;
    unico_payload_rc_e   rc;

    buf = malloc(size ? size : 1);
    if (buf == NULL) {
        abort();
    }

    memcpy(buf, data, size);

    rc = fn(buf, size, max_image, out);

    if (unico_payload_strerror(rc) == NULL
        || rc > UNICO_PAYLOAD_NO_MEMORY)
    {
        abort();
    }

    if (rc != UNICO_PAYLOAD_OK) {

        if (out->data != NULL || out->len != 0
            || out->type != UNICO_IMAGE_NONE)
        {
            abort();
        }

        free(buf);
        *copy = NULL;
        return rc;
    }

    /* the image is inside the input, and is what its type says */

    if (out->data != buf || out->len == 0 || out->len > size
        || out->len > max_image || unico_image_mime(out->type) == NULL)
    {
        abort();
    }

    if (out->type == UNICO_IMAGE_JPEG
        && (out->len < 3 || memcmp(out->data, "\xff\xd8\xff", 3) != 0))
    {
        abort();
    }

    if (out->type == UNICO_IMAGE_PNG
        && (out->len < 8
            || memcmp(out->data, "\x89PNG\r\n\x1a\n", 8) != 0))
    {
        abort();
    }

    *copy = buf;

    return rc;
}


/* the fast path and the reference must agree */

static unico_payload_rc_e
parse(const uint8_t *data, size_t size, size_t max_image,
    unsigned char **copy, unico_image_t *out)
{
    unsigned char       *ref;
    unico_image_t        out_ref;
    unico_payload_rc_e   rc, rc_ref;

    rc = parse_with(unico_payload_parse, data, size, max_image, copy, out);
    rc_ref = parse_with(unico_payload_parse_reference, data, size,
                        max_image, &ref, &out_ref);

    if (rc != rc_ref) {
        abort();
    }

    if (rc == UNICO_PAYLOAD_OK) {

        if (out->len != out_ref.len || out->type != out_ref.type
            || memcmp(*copy, ref, out->len) != 0)
        {
            abort();
        }

        free(ref);
    }

    return rc;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t  divs[] = { 2, 3, 5, 8 };

    unsigned char       *a, *b;
    size_t               i;
    unico_image_t        out, out2;
    unico_payload_rc_e   rc;

    /* limits that big strings reach, to compare the size checks */

    for (i = 0; i < sizeof(divs) / sizeof(divs[0]); i++) {
        rc = parse(data, size, size / divs[i], &b, &out2);

        if (rc == UNICO_PAYLOAD_OK) {
            free(b);
        }
    }

    rc = parse(data, size, (size_t) -1, &a, &out);

    if (rc != UNICO_PAYLOAD_OK) {
        return 0;
    }

    rc = parse(data, size, out.len, &b, &out2);

    if (rc != UNICO_PAYLOAD_OK || out2.len != out.len
        || out2.type != out.type || memcmp(a, b, out.len) != 0)
    {
        abort();
    }

    free(b);

    rc = parse(data, size, out.len - 1, &b, &out2);

    if (rc != UNICO_PAYLOAD_TOO_LARGE) {
        abort();
    }

    free(a);

    return 0;
}
