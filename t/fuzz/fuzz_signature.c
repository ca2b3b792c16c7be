
/*
 * Copyright (C) ngx_unico_selfie_module authors
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * libFuzzer target: the signed-URL core.  The input is split at NUL bytes
 * into a key file, a processId, "expires" and "sig" (a missing part is an
 * absent argument), each copied to a buffer of its exact size.  The key
 * file goes to unico_sig_keys_parse(); the URL parts are verified against
 * it when it parses, and against two fixed keys always.  Invariants:
 *
 *   - a parsed key file has 1 to UNICO_SIG_KEYS_MAX keys;
 *   - nothing verifies without a sig of UNICO_SIG_LEN base64url bytes and
 *     an "expires" of 1 to UNICO_SIG_EXPIRES_MAX digits;
 *   - what unico_sig_sign() makes, unico_sig_verify() accepts (or finds
 *     expired), and a changed character is refused;
 *   - the ETag hash is deterministic.
 */


#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "unico_selfie_signature.h"
#include "unico_selfie_hash.h"


#define NOW   1700000000
#define SKEW  30


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


static unico_sig_keys_t  fixed;


static unsigned char *
part(const uint8_t **p, const uint8_t *end, size_t *len)
{
    const uint8_t  *start, *nul;
    unsigned char  *copy;

    if (*p == NULL || *p > end) {
        *len = 0;
        return NULL;
    }

    start = *p;
    nul = memchr(start, '\0', end - start);

    if (nul == NULL) {
        *len = end - start;
        *p = NULL;

    } else {
        *len = nul - start;
        *p = nul + 1;
    }

    copy = malloc(*len ? *len : 1);
    if (copy == NULL) {
        abort();
    }

    memcpy(copy, start, *len);

    return copy;
}


static int
well_formed(const unsigned char *e, size_t elen, const unsigned char *s,
    size_t slen)
{
    size_t  i;

    if (e == NULL || s == NULL || elen == 0 || elen > UNICO_SIG_EXPIRES_MAX
        || slen != UNICO_SIG_LEN)
    {
        return 0;
    }

    for (i = 0; i < elen; i++) {
        if (e[i] < '0' || e[i] > '9') {
            return 0;
        }
    }

    for (i = 0; i < slen; i++) {
        if (!((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= 'a' && s[i] <= 'z')
              || (s[i] >= '0' && s[i] <= '9') || s[i] == '-' || s[i] == '_'))
        {
            return 0;
        }
    }

    return 1;
}


static void
check_verify(const unico_sig_keys_t *keys, const unsigned char *id,
    size_t id_len, const unsigned char *e, size_t elen,
    const unsigned char *s, size_t slen)
{
    size_t          i, key;
    unico_sig_rc_e  rc;
    unsigned char   sig[UNICO_SIG_LEN];

    key = (size_t) -1;

    rc = unico_sig_verify(keys, id, id_len, e, elen, s, slen, NOW, SKEW,
                          &key);

    if ((rc == UNICO_SIG_OK || rc == UNICO_SIG_EXPIRED)
        && !well_formed(e, elen, s, slen))
    {
        abort();
    }

    if (rc == UNICO_SIG_OK && key >= keys->n) {
        abort();
    }

    if (rc == UNICO_SIG_ERROR) {
        abort();
    }

    /* round trip with the last key */

    if (keys->n == 0
        || unico_sig_sign(keys, keys->n - 1, id, id_len, e, elen, sig)
           != UNICO_SIG_OK)
    {
        return;
    }

    rc = unico_sig_verify(keys, id, id_len, e, elen, sig, UNICO_SIG_LEN,
                          NOW, SKEW, &key);

    if (rc != UNICO_SIG_OK && rc != UNICO_SIG_EXPIRED) {
        abort();
    }

    /* any one character changed */

    i = id_len % UNICO_SIG_LEN;
    sig[i] = (sig[i] == 'A') ? 'B' : 'A';

    rc = unico_sig_verify(keys, id, id_len, e, elen, sig, UNICO_SIG_LEN,
                          NOW, SKEW, &key);

    if (rc == UNICO_SIG_OK || rc == UNICO_SIG_EXPIRED) {
        abort();
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t             tlen, ilen, elen, slen, line;
    uint8_t            h1[UNICO_ETAG_LEN], h2[UNICO_ETAG_LEN];
    unsigned char     *text, *id, *e, *s;
    unico_keys_rc_e    krc;
    unico_sig_keys_t   keys;
    const uint8_t     *p, *end;

    if (fixed.n == 0) {
        static const char  k[] =
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n"
            "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8\n";

        if (unico_sig_keys_parse(&fixed, (const unsigned char *) k,
                                 sizeof(k) - 1, &line)
            != UNICO_KEYS_OK)
        {
            abort();
        }
    }

    p = data;
    end = data + size;

    text = part(&p, end, &tlen);
    id = part(&p, end, &ilen);
    e = part(&p, end, &elen);
    s = part(&p, end, &slen);

    memset(&keys, 0, sizeof(keys));

    krc = unico_sig_keys_parse(&keys, text, tlen, &line);

    if (krc == UNICO_KEYS_OK) {
        if (keys.n == 0 || keys.n > UNICO_SIG_KEYS_MAX) {
            abort();
        }

        if (id) {
            check_verify(&keys, id, ilen, e, elen, s, slen);
        }

        unico_sig_keys_free(&keys);

    } else if (keys.n != 0) {
        abort();
    }

    if (id) {
        check_verify(&fixed, id, ilen, e, elen, s, slen);
    }

    unico_etag(h1, data, size);
    unico_etag(h2, data, size);

    if (memcmp(h1, h2, UNICO_ETAG_LEN) != 0 || h1[0] != '"'
        || h1[UNICO_ETAG_LEN - 1] != '"')
    {
        abort();
    }

    free(text);
    free(id);
    free(e);
    free(s);

    return 0;
}
