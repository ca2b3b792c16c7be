
/*
 * Copyright (C) ngx_unico_selfie_module authors
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * libFuzzer target: unico_token_parse() on arbitrary bytes, into a
 * response first filled with garbage, checking what its callers rely on:
 *
 *   - ok: a token of 1 .. UNICO_TOKEN_MAX bytes that
 *     unico_bearer_token_valid() accepts, expires_in of 1 .. 999999999,
 *     no error_code;
 *   - anything else: token_len 0;
 *   - error_code always NUL-terminated, empty or "1.2." and digits;
 *   - the same answer twice gives the same result.
 *
 * It also checks unico_bearer_token_valid() and unico_jwt_claim_valid()
 * on the raw bytes against plain reference versions.
 */


#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "unico_selfie_jwt.h"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


static int
ref_b64token_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
           || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_'
           || c == '~' || c == '+' || c == '/';
}


/* b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=" */

static int
ref_b64token(const unsigned char *p, size_t len)
{
    size_t  i, n;

    n = len;

    while (n > 0 && p[n - 1] == '=') {
        n--;
    }

    if (n == 0) {
        return 0;
    }

    for (i = 0; i < n; i++) {
        if (!ref_b64token_char(p[i])) {
            return 0;
        }
    }

    return 1;
}


static int
ref_claim(const unsigned char *p, size_t len)
{
    size_t  i;

    if (len == 0) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if (p[i] == '\0' || strchr("abcdefghijklmnopqrstuvwxyz"
                                   "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                   "0123456789@.-_:/", p[i]) == NULL)
        {
            return 0;
        }
    }

    return 1;
}


static void
check_error_code(const unico_token_response_t *r)
{
    size_t       i;
    const char  *e;

    e = memchr(r->error_code, '\0', UNICO_ERROR_CODE_MAX);
    if (e == NULL) {
        abort();
    }

    if (e == r->error_code) {
        return;
    }

    if (e - r->error_code < 5 || memcmp(r->error_code, "1.2.", 4) != 0) {
        abort();
    }

    for (i = 4; r->error_code + i < e; i++) {
        if (r->error_code[i] < '0' || r->error_code[i] > '9') {
            abort();
        }
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unico_token_rc_e         rc, rc2;
    unico_token_response_t  *r, *r2;

    if (unico_bearer_token_valid(data, size) != ref_b64token(data, size)) {
        abort();
    }

    if (unico_jwt_claim_valid((const char *) data, size)
        != ref_claim(data, size))
    {
        abort();
    }

    /* exact size, so that ASan sees an overflow of token or error_code */

    r = malloc(sizeof(unico_token_response_t));
    r2 = malloc(sizeof(unico_token_response_t));

    if (r == NULL || r2 == NULL) {
        abort();
    }

    memset(r, 0x41, sizeof(unico_token_response_t));
    memset(r2, 0x7f, sizeof(unico_token_response_t));

    rc = unico_token_parse(data, size, r);

    if ((unsigned) rc > UNICO_TOKEN_NO_MEMORY
        || strcmp(unico_token_strerror(rc), "unknown") == 0)
    {
        abort();
    }

    check_error_code(r);

    if (rc == UNICO_TOKEN_OK) {
        if (r->token_len == 0 || r->token_len > UNICO_TOKEN_MAX
            || !unico_bearer_token_valid(r->token, r->token_len)
            || r->expires_in <= 0 || r->expires_in > 999999999
            || r->error_code[0] != '\0')
        {
            abort();
        }

    } else if (r->token_len != 0) {
        abort();
    }

    /* again, into other garbage: the same answer */

    rc2 = unico_token_parse(data, size, r2);

    if (rc2 != rc
        || r2->token_len != r->token_len
        || memcmp(r2->token, r->token, r->token_len) != 0
        || strcmp(r2->error_code, r->error_code) != 0
        || (rc == UNICO_TOKEN_OK && r2->expires_in != r->expires_in))
    {
        abort();
    }

    free(r);
    free(r2);

    return 0;
}
