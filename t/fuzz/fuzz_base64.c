
/*
 * Copyright (C) ngx_unico_selfie_module authors
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * libFuzzer target: unico_base64_decode() against a plain, bit-by-bit
 * reference decoder of the same dialect, into a separate buffer of exactly
 * unico_base64_decoded_max() bytes, in place, and into a buffer that
 * starts before the input.
 */


#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "unico_selfie_payload.h"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


static const char  alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";


/*
 * Blanks (CR, LF, TAB, SP) are skipped anywhere; '=' may only end the
 * input, and then must complete the last quantum; a last quantum of one
 * sextet is an error; left-over bits are dropped.
 */

static size_t
ref_decode(unsigned char *out, const unsigned char *in, size_t len)
{
    int          bits;
    size_t       i, n, pads, o;
    uint32_t     acc;
    const char  *v;

    n = 0;
    o = 0;
    pads = 0;
    acc = 0;
    bits = 0;

    for (i = 0; i < len; i++) {

        if (in[i] == '\r' || in[i] == '\n' || in[i] == '\t' || in[i] == ' ') {
            continue;
        }

        if (in[i] == '=') {
            pads++;
            continue;
        }

        if (pads || in[i] == '\0') {
            return (size_t) -1;
        }

        v = strchr(alphabet, in[i]);
        if (v == NULL) {
            return (size_t) -1;
        }

        n++;
        acc = acc << 6 | (uint32_t) (v - alphabet);
        bits += 6;

        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char) (acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }

    if (n % 4 == 1) {
        return (size_t) -1;
    }

    if (pads != 0
        && !(n % 4 == 2 && pads == 2)
        && !(n % 4 == 3 && pads == 1))
    {
        return (size_t) -1;
    }

    return o;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t          want, n, max;
    unsigned char  *ref, *out, *in, *before;

    max = unico_base64_decoded_max(size);

    ref = malloc(max + 1);
    out = malloc(max ? max : 1);
    in = malloc(size ? size : 1);
    before = malloc(size + 7);

    if (ref == NULL || out == NULL || in == NULL || before == NULL) {
        abort();
    }

    want = ref_decode(ref, data, size);

    if (want != (size_t) -1 && want > max) {
        abort();
    }

    /* a separate buffer of the promised size */

    memcpy(in, data, size);
    n = unico_base64_decode(out, in, size);

    if (n != want || (n != (size_t) -1 && memcmp(out, ref, n) != 0)) {
        abort();
    }

    if (memcmp(in, data, size) != 0) {
        abort();
    }

    /* in place */

    n = unico_base64_decode(in, in, size);

    if (n != want || (n != (size_t) -1 && memcmp(in, ref, n) != 0)) {
        abort();
    }

    /* dst 7 bytes before src, overlapping */

    memcpy(before + 7, data, size);
    n = unico_base64_decode(before, before + 7, size);

    if (n != want || (n != (size_t) -1 && memcmp(before, ref, n) != 0)) {
        abort();
    }

    free(ref);
    free(out);
    free(in);
    free(before);

    return 0;
}
