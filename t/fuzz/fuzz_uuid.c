
/*
 * Copyright (C) ngx_unico_selfie_module authors
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * libFuzzer target: unico_uuid_valid() against a reference, on the whole
 * input and on its first 36 bytes, each in a buffer of its exact size.
 */


#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "unico_selfie_payload.h"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


static int
ref_valid(const uint8_t *p, size_t len)
{
    size_t  i;

    if (len != 36) {
        return 0;
    }

    for (i = 0; i < len; i++) {

        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (p[i] != '-') {
                return 0;
            }

        } else if (p[i] == '\0'
                   || strchr("0123456789abcdefABCDEF", p[i]) == NULL)
        {
            return 0;
        }
    }

    return 1;
}


static void
check(const uint8_t *data, size_t size)
{
    unsigned char  *p;

    p = malloc(size ? size : 1);
    if (p == NULL) {
        abort();
    }

    memcpy(p, data, size);

    if (unico_uuid_valid(p, size) != ref_valid(data, size)) {
        abort();
    }

    free(p);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check(data, size);

    if (size > UNICO_UUID_LEN) {
        check(data, UNICO_UUID_LEN);
    }

    return 0;
}
