
/*
 * Copyright (C) ngx_unico_selfie_module authors
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Unit tests of the signed-URL core, unico_selfie_signature.c, and of the
 * ETag hash, unico_selfie_hash.c, printing TAP.
 *
 *     test_signature
 *
 * The expected signatures were computed independently, with Python's hmac
 * module; the expected hashes with the reference xxHash library.  Inputs
 * are malloc()ed to their exact size, so that AddressSanitizer sees any
 * read past their end.
 */


#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unico_selfie_signature.h"
#include "unico_selfie_hash.h"


#define KEY_A  "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="      /* 0..31 */
#define KEY_B  "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8"       /* 32..63 */

#define KEY_128                                                              \
    "ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+f4CBgoOEhYaHiImKi4yNjo+QkZKTlJWW" \
    "l5iZmpucnZ6foKGio6SlpqeoqaqrrK2ur7CxsrO0tba3uLm6u7y9vr/AwcLDxMXGx8jJ" \
    "ysvMzc7P0NHS09TV1tfY2drb3N3e3+Dh4uM="
#define KEY_31   "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHg=="
#define KEY_129                                                              \
    "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEy" \
    "MzQ1Njc4OTo7PD0+P0BBQkNERUZHSElKS0xNTk9QUVJTVFVWV1hZWltcXV5fYGFiY2Rl" \
    "ZmdoaWprbG1ub3BxcnN0dXZ3eHl6e3x9fn+A"

#define ID     "53060F52-F146-4C12-A234-5BB5031F6F5B"
#define ID_LC  "53060f52-f146-4c12-a234-5bb5031f6f5b"
#define ID2    "de50b727-3c28-1c95-8d2b-242124c3d443"
#define EXP    "1700000100"

#define SIG_A      "tRGPNG804wv4zq7qVeWrzM_mHDw3H5cZ6ZBEbHUvDTQ"
#define SIG_B      "6lTAvQJGNSTmJzpwEwvDvjx2GacG1NEpkUfbXvmb4p0"
#define SIG_A_ID2  "UoIfQb7g4Wbr_ACgsXcDTObsrIlW_FZ4oPK3HWyZXtg"  /* 0170.. */
#define SIG_128    "vAut6QONLObGMbpovMK8bPYokdoDsiswEUjTvqk0K0w"  /* exp 0 */

#define NOW    1700000000


#include "tap.h"


/* an exact-size heap copy, NULL for NULL */

static unsigned char *
dup(const char *s)
{
    size_t          len;
    unsigned char  *p;

    if (s == NULL) {
        return NULL;
    }

    len = strlen(s);

    p = malloc(len ? len : 1);
    if (p == NULL) {
        die("malloc");
    }

    memcpy(p, s, len);

    return p;
}


static unico_keys_rc_e
parse(unico_sig_keys_t *keys, const char *text, size_t *line)
{
    unico_keys_rc_e   rc;
    unsigned char    *p;

    p = dup(text);
    rc = unico_sig_keys_parse(keys, p, strlen(text), line);
    free(p);

    return rc;
}


static unico_sig_rc_e
verify(const unico_sig_keys_t *keys, const char *id, const char *expires,
    const char *sig, int64_t now, int64_t skew, size_t *key)
{
    unico_sig_rc_e   rc;
    unsigned char   *i, *e, *s;

    i = dup(id);
    e = dup(expires);
    s = dup(sig);

    rc = unico_sig_verify(keys, i, strlen(id), e, e ? strlen(expires) : 0,
                          s, s ? strlen(sig) : 0, now, skew, key);

    free(i);
    free(e);
    free(s);

    return rc;
}


static void
test_keys(void)
{
    size_t            line;
    unico_keys_rc_e   rc;
    unico_sig_keys_t  keys;

    memset(&keys, 0, sizeof(keys));

    rc = parse(&keys, "# current\n" KEY_A "\n\n  # next, base64url\r\n"
               "\t" KEY_B "  \r\n", &line);
    ok(rc == UNICO_KEYS_OK && keys.n == 2,
       "keys: two keys among comments, blanks and CRLF");
    unico_sig_keys_free(&keys);
    ok(keys.n == 0, "keys: freed");
    unico_sig_keys_free(&keys);
    ok(keys.n == 0, "keys: freeing twice is harmless");

    rc = parse(&keys, KEY_A, &line);
    ok(rc == UNICO_KEYS_OK && keys.n == 1, "keys: no final newline");
    unico_sig_keys_free(&keys);

    rc = parse(&keys, "", &line);
    ok(rc == UNICO_KEYS_NONE && line == 0 && keys.n == 0, "keys: empty file");

    rc = parse(&keys, "# nothing yet\n\n   \n", &line);
    ok(rc == UNICO_KEYS_NONE, "keys: only comments");

    rc = parse(&keys, KEY_A "\n" KEY_B "\n" KEY_A "\n" KEY_B "\n# x\n"
               KEY_A "\n", &line);
    ok(rc == UNICO_KEYS_TOO_MANY && line == 6 && keys.n == 0,
       "keys: a fifth key is refused, at its line (%zu)", line);

    rc = parse(&keys, KEY_A "\n" KEY_B "\n" KEY_A "\n" KEY_B "\n", &line);
    ok(rc == UNICO_KEYS_OK && keys.n == 4, "keys: four keys");
    unico_sig_keys_free(&keys);

    rc = parse(&keys, KEY_A "\nnot*base64\n", &line);
    ok(rc == UNICO_KEYS_BAD_BASE64 && line == 2 && keys.n == 0,
       "keys: a bad line is named (%zu), the good one released", line);

    rc = parse(&keys, "AAECAwQFBgcICQoLDA0O DxAREhMUFRYXGBkaGxwdHh8=\n",
               &line);
    ok(rc == UNICO_KEYS_BAD_BASE64, "keys: a blank inside a key");

    rc = parse(&keys, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8 # c\n",
               &line);
    ok(rc == UNICO_KEYS_BAD_BASE64, "keys: no comment after a key");

    rc = parse(&keys, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh9=\n",
               &line);
    ok(rc == UNICO_KEYS_BAD_BASE64, "keys: non-canonical last character");

    rc = parse(&keys, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8==\n",
               &line);
    ok(rc == UNICO_KEYS_BAD_BASE64, "keys: too much padding");

    rc = parse(&keys, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdH=h8\n",
               &line);
    ok(rc == UNICO_KEYS_BAD_BASE64, "keys: padding inside");

    rc = parse(&keys, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8AA\n",
               &line);
    ok(rc == UNICO_KEYS_BAD_BASE64, "keys: a dangling sextet");

    rc = parse(&keys, KEY_31 "\n", &line);
    ok(rc == UNICO_KEYS_TOO_SHORT && line == 1, "keys: 31 bytes refused");

    rc = parse(&keys, KEY_129 "\n", &line);
    ok(rc == UNICO_KEYS_TOO_LONG, "keys: 129 bytes refused");

    rc = parse(&keys, KEY_128 "\n", &line);
    ok(rc == UNICO_KEYS_OK, "keys: 128 bytes accepted");
    unico_sig_keys_free(&keys);

    rc = parse(&keys, "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=\n",
               &line);
    ok(rc == UNICO_KEYS_OK, "keys: base64url with padding");
    unico_sig_keys_free(&keys);

    ok(strcmp(unico_sig_keys_strerror(UNICO_KEYS_TOO_SHORT),
              "the key is shorter than 32 bytes once decoded") == 0
       && unico_sig_keys_strerror(UNICO_KEYS_ERROR) != NULL
       && unico_sig_keys_strerror(UNICO_KEYS_NONE) != NULL,
       "keys: strerror");
}


static void
test_verify(void)
{
    int               i;
    size_t            key, line;
    unico_sig_rc_e    rc;
    unico_sig_keys_t  keys;
    char              sig[UNICO_SIG_LEN + 1];

    memset(&keys, 0, sizeof(keys));

    if (parse(&keys, KEY_A "\n" KEY_B "\n", &line) != UNICO_KEYS_OK) {
        die("parse");
    }

    key = 99;
    rc = verify(&keys, ID, EXP, SIG_A, NOW, 30, &key);
    ok(rc == UNICO_SIG_OK && key == 0, "verify: key A's Python vector");

    rc = verify(&keys, ID, EXP, SIG_B, NOW, 30, &key);
    ok(rc == UNICO_SIG_OK && key == 1, "verify: key B's, second key");

    rc = verify(&keys, ID_LC, EXP, SIG_B, NOW, 30, NULL);
    ok(rc == UNICO_SIG_OK, "verify: the processId is signed in lowercase");

    rc = verify(&keys, ID2, "0" EXP, SIG_A_ID2, NOW, 30, NULL);
    ok(rc == UNICO_SIG_OK, "verify: expires signed as written (0170...)");

    rc = verify(&keys, ID2, EXP, SIG_A_ID2, NOW, 30, NULL);
    ok(rc == UNICO_SIG_MISMATCH, "verify: ... and not as its value");

    rc = verify(&keys, ID2, EXP, SIG_A, NOW, 30, NULL);
    ok(rc == UNICO_SIG_MISMATCH, "verify: another process's signature");

    rc = verify(&keys, ID, "1700000101", SIG_A, NOW, 30, NULL);
    ok(rc == UNICO_SIG_MISMATCH, "verify: expiry moved");

    rc = verify(&keys, ID, EXP, "tRGPNG804wv4zq7qVeWrzM_mHDw3H5cZ6ZBEbHUvDTA",
                NOW, 30, NULL);
    ok(rc == UNICO_SIG_MISMATCH, "verify: last character changed");

    rc = verify(&keys, ID, EXP, "sRGPNG804wv4zq7qVeWrzM_mHDw3H5cZ6ZBEbHUvDTQ",
                NOW, 30, NULL);
    ok(rc == UNICO_SIG_MISMATCH, "verify: first character changed");

    rc = verify(&keys, ID, EXP, "tRGPNG804wv4zq7qVeWrzM_mHDw3H5cZ6ZBEbHUvDTR",
                NOW, 30, NULL);
    ok(rc == UNICO_SIG_MALFORMED, "verify: non-canonical last character");

    rc = verify(&keys, ID, EXP, "tRGPNG804wv4zq7qVeWrzM/mHDw3H5cZ6ZBEbHUvDTQ",
                NOW, 30, NULL);
    ok(rc == UNICO_SIG_MALFORMED, "verify: standard base64 '/' refused");

    rc = verify(&keys, ID, EXP, SIG_A "=", NOW, 30, NULL);
    ok(rc == UNICO_SIG_MALFORMED, "verify: padding refused");

    rc = verify(&keys, ID, EXP, "tRGPNG804wv4zq7qVeWrzM_mHDw3H5cZ6ZBEbHUvDT",
                NOW, 30, NULL);
    ok(rc == UNICO_SIG_MALFORMED, "verify: 42 characters");

    rc = verify(&keys, ID, EXP, "", NOW, 30, NULL);
    ok(rc == UNICO_SIG_MALFORMED, "verify: empty sig is malformed");

    rc = verify(&keys, ID, "", SIG_A, NOW, 30, NULL);
    ok(rc == UNICO_SIG_MALFORMED, "verify: empty expires is malformed");

    rc = verify(&keys, ID, NULL, SIG_A, NOW, 30, NULL);
    ok(rc == UNICO_SIG_MISSING, "verify: no expires");

    rc = verify(&keys, ID, EXP, NULL, NOW, 30, NULL);
    ok(rc == UNICO_SIG_MISSING, "verify: no sig");

    rc = verify(&keys, ID, "+1700000100", SIG_A, NOW, 30, NULL);
    ok(rc == UNICO_SIG_MALFORMED, "verify: a sign in expires");

    rc = verify(&keys, ID, "17000001OO", SIG_A, NOW, 30, NULL);
    ok(rc == UNICO_SIG_MALFORMED, "verify: letters in expires");

    rc = verify(&keys, ID, "9223372036854775808", SIG_A, NOW, 30, NULL);
    ok(rc == UNICO_SIG_MALFORMED, "verify: expires past INT64_MAX");

    rc = verify(&keys, ID, "00000000000000000001", SIG_A, NOW, 30, NULL);
    ok(rc == UNICO_SIG_MALFORMED, "verify: 20 digits");

    /* expiry: expires + skew < now */

    rc = verify(&keys, ID, EXP, SIG_A, 1700000130, 30, NULL);
    ok(rc == UNICO_SIG_OK, "expiry: expires + skew == now is still valid");

    rc = verify(&keys, ID, EXP, SIG_A, 1700000131, 30, NULL);
    ok(rc == UNICO_SIG_EXPIRED, "expiry: one second later it expired");

    rc = verify(&keys, ID, EXP, SIG_A, 1700000101, 0, NULL);
    ok(rc == UNICO_SIG_EXPIRED, "expiry: no skew");

    rc = verify(&keys, ID, EXP, SIG_A, 1700000100, -5, NULL);
    ok(rc == UNICO_SIG_OK, "expiry: a negative skew counts as 0");

    rc = verify(&keys, ID, EXP, "tRGPNG804wv4zq7qVeWrzM_mHDw3H5cZ6ZBEbHUvDTA",
                1800000000, 30, NULL);
    ok(rc == UNICO_SIG_MISMATCH,
       "expiry: a forged expired URL is a bad signature, not expired");

    rc = verify(&keys, ID, EXP, SIG_A, 10, INT64_MAX, NULL);
    ok(rc == UNICO_SIG_OK, "expiry: a huge skew does not overflow");

    /* sign: the same as Python, and round trips */

    memset(sig, 0, sizeof(sig));
    rc = unico_sig_sign(&keys, 0, (const unsigned char *) ID, strlen(ID),
                        (const unsigned char *) EXP, strlen(EXP),
                        (unsigned char *) sig);
    ok(rc == UNICO_SIG_OK && strcmp(sig, SIG_A) == 0, "sign: key A");

    rc = unico_sig_sign(&keys, 1, (const unsigned char *) ID_LC,
                        strlen(ID_LC), (const unsigned char *) EXP,
                        strlen(EXP), (unsigned char *) sig);
    ok(rc == UNICO_SIG_OK && strcmp(sig, SIG_B) == 0, "sign: key B");

    rc = unico_sig_sign(&keys, 2, (const unsigned char *) ID, strlen(ID),
                        (const unsigned char *) EXP, strlen(EXP),
                        (unsigned char *) sig);
    ok(rc == UNICO_SIG_MALFORMED, "sign: no third key");

    rc = unico_sig_sign(&keys, 0, (const unsigned char *) ID, strlen(ID),
                        (const unsigned char *) "x", 1,
                        (unsigned char *) sig);
    ok(rc == UNICO_SIG_MALFORMED, "sign: bad expires");

    /* the contexts are reused: many verifications, alternating keys */

    for (i = 0; i < 1000; i++) {
        rc = verify(&keys, ID, EXP, (i & 1) ? SIG_B : SIG_A, NOW, 30, &key);

        if (rc != UNICO_SIG_OK || key != (size_t) (i & 1)) {
            break;
        }

        rc = verify(&keys, ID, EXP, (i & 1) ? SIG_A_ID2 : "x", NOW, 30,
                    NULL);

        if (rc == UNICO_SIG_OK) {
            break;
        }
    }

    ok(i == 1000, "verify: 1000 rounds, interleaved with failures");

    /* an id too long to be a processId */

    rc = verify(&keys,
                "0123456789012345678901234567890123456789012345678901234567890"
                "1234", EXP, SIG_A, NOW, 30, NULL);
    ok(rc == UNICO_SIG_MALFORMED, "verify: a 65-byte id");

    unico_sig_keys_free(&keys);

    /* the longest key, and expires "0" */

    if (parse(&keys, KEY_128 "\n", &line) != UNICO_KEYS_OK) {
        die("parse 128");
    }

    rc = verify(&keys, ID, "0", SIG_128, 0, 0, NULL);
    ok(rc == UNICO_SIG_OK, "verify: a 128-byte key's Python vector");

    rc = verify(&keys, ID, "0", SIG_128, NOW, 30, NULL);
    ok(rc == UNICO_SIG_EXPIRED, "verify: expires 0 is long gone");

    unico_sig_keys_free(&keys);

    /* no keys: nothing verifies */

    rc = verify(&keys, ID, EXP, SIG_A, NOW, 30, NULL);
    ok(rc == UNICO_SIG_MISMATCH, "verify: without keys, a mismatch");
}


static void
test_hash(void)
{
    size_t          i, j, n;
    unsigned char  *p, etag[UNICO_ETAG_LEN];

    /*
     * XXH64 of the bytes (i * 7 + 3) & 0xff, seeds 0 and 2654435761, from
     * the reference library (libxxhash 0.8.1), across every tail length
     */

    static const struct {
        size_t    len;
        uint64_t  h0;
        uint64_t  h1;
    } v[] = {
        { 0, 0xef46db3751d8e999ULL, 0xac75fda2929b17efULL },
        { 1, 0x1f25c8d0bc1f4bb6ULL, 0x79cf94f5ace37fe1ULL },
        { 3, 0x31d2363f52e564c9ULL, 0x96d2a5e583ddd738ULL },
        { 4, 0x9bb64b7d66ee9fdaULL, 0x4a862fbb4b73776eULL },
        { 7, 0x9a7b149959ce60d8ULL, 0xddc5cf71d37a6368ULL },
        { 8, 0xdab99d95c6f90092ULL, 0xc6e75e2cbd8e07eeULL },
        { 9, 0x170bb6bf975b4c02ULL, 0x3a3e0f8ce693f786ULL },
        { 15, 0x1b47cb8243cc8e32ULL, 0x8120a1eda8ac77daULL },
        { 16, 0x434850232b787be2ULL, 0x17f387ce30885de5ULL },
        { 31, 0xa2aa5f33cc4a6119ULL, 0x381822f33376d6b6ULL },
        { 32, 0x23c3c17ef790fd97ULL, 0x9abd315470ac276aULL },
        { 33, 0x50a7cfc7ba588784ULL, 0x72cdd3262f467933ULL },
        { 63, 0x5e3e54b431c7493cULL, 0x634da7d265979e61ULL },
        { 64, 0x0eb64b3ef6eeb01fULL, 0xbcb3847d70525180ULL },
        { 100, 0xa61f8d4c170fe531ULL, 0x86f549ede5ac87e2ULL },
        { 1000, 0x5f235fa033f1a3fbULL, 0x83080310ee83cc20ULL }
    };

    for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        n = v[i].len;

        p = malloc(n ? n : 1);
        if (p == NULL) {
            die("malloc");
        }

        for (j = 0; j < n; j++) {
            p[j] = (unsigned char) ((j * 7 + 3) & 0xff);
        }

        ok(unico_hash64(p, n, 0) == v[i].h0
           && unico_hash64(p, n, 2654435761ULL) == v[i].h1,
           "xxh64: %zu bytes, two seeds, as the reference library", n);

        free(p);
    }

    p = dup("abc");
    unico_etag(etag, p, 3);
    ok(memcmp(etag, "\"44bc2cf5ad770999\"", UNICO_ETAG_LEN) == 0,
       "etag: \"abc\" is \"44bc2cf5ad770999\"");

    p[2] = 'd';
    unico_etag(etag, p, 3);
    ok(memcmp(etag, "\"44bc2cf5ad770999\"", UNICO_ETAG_LEN) != 0,
       "etag: one byte changed, another tag");
    free(p);
}


int
main(void)
{
    test_keys();
    test_verify();
    test_hash();

    printf("1..%u\n", tests);

    return failed ? 1 : 0;
}
