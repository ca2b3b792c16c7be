
/*
 * Copyright (C) ngx_unico_selfie_module authors
 *
 * libFuzzer target: the vector base64 decoders (SSSE3, AVX2, where the CPU
 * has them) against the scalar one, the reference, on every input: the
 * same result and the same bytes, into another buffer at every 8-byte
 * misalignment the input picks, in place, and overlapping.  The bulk step
 * unico_base64_decode_quanta() must take a prefix of whole quanta of
 * sextets that the scalar decoder decodes to the same bytes, and write
 * nothing past the room it is given.
 */


#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "unico_selfie_base64.h"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


static void
check(unico_base64_impl_e impl, const uint8_t *data, size_t size,
    size_t align, size_t want, const unsigned char *ref)
{
    size_t          n, max;
    unsigned char  *out, *buf;

    max = unico_base64_decoded_max(size);

    out = malloc(max + align + 1);
    buf = malloc(size + 8);

    if (out == NULL || buf == NULL) {
        abort();
    }

    n = unico_base64_decode_with(impl, out + align, data, size);

    if (n != want || (n != (size_t) -1 && memcmp(out + align, ref, n) != 0)) {
        abort();
    }

    memcpy(buf, data, size);
    n = unico_base64_decode_with(impl, buf, buf, size);

    if (n != want || (n != (size_t) -1 && memcmp(buf, ref, n) != 0)) {
        abort();
    }

    memcpy(buf + 8, data, size);
    n = unico_base64_decode_with(impl, buf + align % 8, buf + 8, size);

    if (n != want || (n != (size_t) -1 && memcmp(buf + align % 8, ref, n))) {
        abort();
    }

    free(out);
    free(buf);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t          want, i, k, room, align;
    unsigned char  *ref, *q, *qref;

    static const unico_base64_impl_e  impls[] = {
        UNICO_BASE64_SSSE3, UNICO_BASE64_AVX2, UNICO_BASE64_AUTO
    };

    align = size ? data[0] % 8 : 0;

    ref = malloc(unico_base64_decoded_max(size) + 1);
    if (ref == NULL) {
        abort();
    }

    want = unico_base64_decode_with(UNICO_BASE64_SCALAR, ref, data, size);

    for (i = 0; i < sizeof(impls) / sizeof(impls[0]); i++) {
        check(impls[i], data, size, align, want, ref);
    }

    /* the bulk step, with a room the input picks */

    room = size ? (size_t) data[size - 1] * 2 : 0;
    q = malloc(room + 1);
    qref = malloc(unico_base64_decoded_max(size) + 1);

    if (q == NULL || qref == NULL) {
        abort();
    }

    k = unico_base64_decode_quanta(q, room, data, size);

    if (k % 4 != 0 || k > size || k / 4 * 3 > room) {
        abort();
    }

    for (i = 0; i < k; i++) {
        if (unico_base64_sextet(data[i]) < 0) {
            abort();
        }
    }

    /* it stopped at a quantum with a non-sextet, the end, or the room */

    if (k + 4 <= size && (k + 4) / 4 * 3 <= room) {

        for (i = k; i < k + 4; i++) {
            if (unico_base64_sextet(data[i]) < 0) {
                break;
            }
        }

        if (i == k + 4) {
            abort();
        }
    }

    if (unico_base64_decode_with(UNICO_BASE64_SCALAR, qref, data, k)
        != k / 4 * 3 || memcmp(q, qref, k / 4 * 3) != 0)
    {
        abort();
    }

    free(q);
    free(qref);
    free(ref);

    return 0;
}
