
/*
 * Copyright (C) ngx_unico_selfie_module authors
 *
 * Unit tests of the service-account core, unico_selfie_jwt.c, printing TAP:
 * RS256 assertions signed with freshly generated RSA keys and checked with
 * OpenSSL, the RFC 6750 b64token check, and the token endpoint's answers.
 *
 *     test_jwt
 *
 * Every buffer handed to the code under test is malloc()ed to its exact
 * size, without a terminating NUL, so that AddressSanitizer sees any read
 * or write past its end.
 */


#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/rsa.h>

#include "unico_selfie_base64.h"
#include "unico_selfie_jwt.h"


#define HEADER   "{\"alg\":\"RS256\",\"typ\":\"JWT\"}"
#define ISS      "svc-selfie@0a1b2c3d-4e5f-6789-abcd-ef0123456789.iam.acesso.io"
#define AUD      "https://identity.acesso.io"
#define FALHA    "Falha na autentica\xc3\xa7\xc3\xa3o "


#include "tap.h"


/* an exact-size heap copy of s[0 .. len), no NUL */

static unsigned char *
dup_exact(const void *s, size_t len)
{
    unsigned char  *p;

    p = xmalloc(len);

    if (len) {
        memcpy(p, s, len);
    }

    return p;
}


/* ' stands for " in the tables below: the JSON reads better */

static unsigned char *
json_exact(const char *s, size_t len)
{
    size_t          i;
    unsigned char  *p;

    p = dup_exact(s, len);

    for (i = 0; i < len; i++) {
        if (p[i] == '\'') {
            p[i] = '"';
        }
    }

    return p;
}


static int
b64url_char(int c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
           || (c >= '0' && c <= '9') || c == '-' || c == '_';
}


/*
 * a strict base64url decoder: no padding, no blanks; -1 on error (the
 * module's own, unico_selfie_base64.c, which test_payload.c checks against
 * RFC 4648's vectors)
 */

static long
b64url_decode(unsigned char *out, const unsigned char *in, size_t len)
{
    long  n;

    n = unico_base64url_decode(out, len, in, len);

    return (n < 0) ? -1 : n;
}


static EVP_PKEY *
rsa_key(unsigned bits)
{
    EVP_PKEY  *key;

    key = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t) bits);
    if (key == NULL) {
        die("RSA key generation failed");
    }

    return key;
}


/* RS256 by OpenSSL directly: RSASSA-PKCS1-v1_5 with SHA-256 */

static int
rs256_verify(EVP_PKEY *key, const unsigned char *data, size_t len,
    const unsigned char *sig, size_t sig_len)
{
    int            rc;
    EVP_MD_CTX    *md;
    EVP_PKEY_CTX  *pctx;

    md = EVP_MD_CTX_new();
    if (md == NULL) {
        die("EVP_MD_CTX_new");
    }

    rc = EVP_DigestVerifyInit(md, &pctx, EVP_sha256(), NULL, key) == 1
         && EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) == 1
         && EVP_DigestVerify(md, sig, sig_len, data, len) == 1;

    EVP_MD_CTX_free(md);

    return rc;
}


static size_t
rs256_sign(EVP_PKEY *key, const unsigned char *data, size_t len,
    unsigned char *sig, size_t size)
{
    int            rc;
    EVP_MD_CTX    *md;
    EVP_PKEY_CTX  *pctx;

    md = EVP_MD_CTX_new();
    if (md == NULL) {
        die("EVP_MD_CTX_new");
    }

    rc = EVP_DigestSignInit(md, &pctx, EVP_sha256(), NULL, key) == 1
         && EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) == 1
         && EVP_DigestSign(md, sig, &size, data, len) == 1;

    EVP_MD_CTX_free(md);

    return rc ? size : 0;
}


/*
 * Signs claims into an exact-size buffer and checks the assertion all the
 * way: three base64url parts, the header and the claims byte for byte, the
 * signature against OpenSSL; other_key must not verify it.
 */

static void
check_jwt(const char *desc, EVP_PKEY *key, EVP_PKEY *other_key,
    const unico_jwt_claims_t *claims)
{
    int             good;
    char            want[1200];
    long            hlen, clen, slen;
    size_t          i, n, max, dots, d1, d2;
    unsigned char  *out, *big, *dec, *again;

    snprintf(want, sizeof(want),
             "{\"iss\":\"%.*s\",\"aud\":\"%.*s\",\"scope\":\"*\","
             "\"iat\":%lld,\"exp\":%lld}",
             (int) claims->iss_len, claims->iss,
             (int) claims->aud_len, claims->aud,
             (long long) claims->iat, (long long) claims->exp);

    max = unico_jwt_max_len(claims, key);
    out = xmalloc(max);

    n = unico_jwt_sign(claims, key, out, max);

    if (!ok(n > 0, "%s: signed into exactly unico_jwt_max_len() bytes",
            desc))
    {
        free(out);
        return;
    }

    ok(n <= max && max - n <= 4, "%s: max_len %zu >= length %zu, tight",
       desc, max, n);

    dots = 0;
    d1 = 0;
    d2 = 0;
    good = 1;

    for (i = 0; i < n; i++) {
        if (out[i] == '.') {
            if (dots++ == 0) {
                d1 = i;

            } else {
                d2 = i;
            }

        } else if (!b64url_char(out[i])) {
            good = 0;
        }
    }

    ok(dots == 2 && d1 > 0 && d2 > d1 + 1 && d2 + 1 < n,
       "%s: three non-empty parts", desc);
    ok(good, "%s: base64url characters only, no '=' padding", desc);

    if (dots != 2 || !good) {
        free(out);
        return;
    }

    dec = xmalloc(n);

    hlen = b64url_decode(dec, out, d1);
    ok(hlen == (long) sizeof(HEADER) - 1
       && memcmp(dec, HEADER, sizeof(HEADER) - 1) == 0,
       "%s: header is exactly %s", desc, HEADER);

    clen = b64url_decode(dec, out + d1 + 1, d2 - d1 - 1);

    if (!ok(clen == (long) strlen(want) && memcmp(dec, want, clen) == 0,
            "%s: claims are exactly %s", desc, want))
    {
        if (clen > 0) {
            diag("got %.*s", (int) clen, dec);
        }
    }

    slen = b64url_decode(dec, out + d2 + 1, n - d2 - 1);
    ok(slen == EVP_PKEY_get_size(key),
       "%s: signature of %ld bytes, the modulus size", desc, slen);

    ok(slen > 0 && rs256_verify(key, out, d2, dec, slen),
       "%s: EVP_DigestVerify (SHA-256, PKCS#1 v1.5) over header.claims",
       desc);

    ok(slen > 0 && !rs256_verify(other_key, out, d2, dec, slen),
       "%s: another key does not verify it", desc);

    /* PKCS#1 v1.5 is deterministic: OpenSSL's own signature is the same */

    again = xmalloc(EVP_PKEY_get_size(key));

    ok(slen > 0
       && rs256_sign(key, out, d2, again, EVP_PKEY_get_size(key))
          == (size_t) slen
       && memcmp(again, dec, slen) == 0,
       "%s: signature identical to OpenSSL's RS256", desc);

    free(again);

    /* a changed claims byte breaks it */

    out[d1 + 1] ^= 0x01;
    ok(slen > 0 && !rs256_verify(key, out, d2, dec, slen),
       "%s: a changed claims byte does not verify", desc);
    out[d1 + 1] ^= 0x01;

    /* a larger buffer: the same bytes, nothing written past them */

    big = xmalloc(max + 16);
    memset(big, 0xa5, max + 16);

    ok(unico_jwt_sign(claims, key, big, max + 16) == n
       && memcmp(big, out, n) == 0,
       "%s: same assertion into a larger buffer", desc);

    good = 1;

    for (i = n; i < max + 16; i++) {
        if (big[i] != 0xa5) {
            good = 0;
        }
    }

    ok(good, "%s: no byte written past the assertion (no NUL)", desc);

    free(big);
    free(dec);
    free(out);
}


static void
test_sign(void)
{
    char                 s257[257], *iss, *aud;
    size_t               i, n, max, sizes[6];
    EVP_PKEY            *k1024, *k2048, *k4096;
    unsigned char       *buf, *good;
    unico_jwt_claims_t   c;

    k1024 = rsa_key(1024);
    k2048 = rsa_key(2048);
    k4096 = rsa_key(4096);

    /* iss and aud as exact heap copies without NUL */

    iss = (char *) dup_exact(ISS, sizeof(ISS) - 1);
    aud = (char *) dup_exact(AUD, sizeof(AUD) - 1);

    c.iss = iss;
    c.iss_len = sizeof(ISS) - 1;
    c.aud = aud;
    c.aud_len = sizeof(AUD) - 1;
    c.iat = 1700000000;
    c.exp = 1700003600;

    check_jwt("RSA-2048", k2048, k4096, &c);
    check_jwt("RSA-4096", k4096, k2048, &c);
    check_jwt("RSA-1024", k1024, k2048, &c);

    c.iat = 0;
    c.exp = 1;
    check_jwt("RSA-2048, iat 0", k2048, k1024, &c);

    c.iat = INT64_MIN;
    c.exp = INT64_MAX;
    check_jwt("RSA-2048, iat INT64_MIN, exp INT64_MAX", k2048, k1024, &c);

    /* the longest claims allowed: 256 bytes each */

    memset(s257, 'a', sizeof(s257));
    memcpy(s257, "acct@", 5);

    c.iss = s257;
    c.iss_len = 256;
    c.aud = s257;
    c.aud_len = 256;
    c.iat = -1;
    c.exp = 9999999999LL;
    check_jwt("RSA-2048, iss and aud of 256 bytes", k2048, k1024, &c);

    c.iss = iss;
    c.iss_len = sizeof(ISS) - 1;
    c.aud = aud;
    c.aud_len = sizeof(AUD) - 1;
    c.iat = 1700000000;
    c.exp = 1700003600;

    /*
     * the same claims give the same assertion (RS256 is deterministic):
     * Unico accepts each assertion once (1.2.7), so callers must not mint
     * twice in one second
     */

    max = unico_jwt_max_len(&c, k2048);
    good = xmalloc(max);
    buf = xmalloc(max);

    n = unico_jwt_sign(&c, k2048, good, max);
    ok(n > 0 && unico_jwt_sign(&c, k2048, buf, max) == n
       && memcmp(good, buf, n) == 0,
       "same claims and key: the same assertion");

    free(buf);

    /* too small: 0, and the buffer untouched */

    sizes[0] = 0;
    sizes[1] = 1;
    sizes[2] = 37;
    sizes[3] = max / 2;
    sizes[4] = n - 1;
    sizes[5] = max - 1;

    for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        if (sizes[i] >= max) {
            continue;
        }

        buf = sizes[i] ? xmalloc(sizes[i]) : NULL;

        if (buf) {
            memset(buf, 0x5a, sizes[i]);
        }

        ok(unico_jwt_sign(&c, k2048, buf, sizes[i]) == 0,
           "out of %zu bytes (need %zu): 0", sizes[i], max);

        if (buf) {
            n = 0;

            while (n < sizes[i] && buf[n] == 0x5a) {
                n++;
            }

            ok(n == sizes[i], "out of %zu bytes: untouched", sizes[i]);

            free(buf);
        }
    }

    free(good);

    /* invalid iss and aud are refused */

    {
        static const struct {
            const char  *desc;
            const char  *s;
            size_t       len;
        } bad[] = {
            { "empty", "", 0 },
            { "a quote", "acct\"@x.io", 10 },
            { "a backslash", "acct\\@x.io", 10 },
            { "a space", "acct @x.io", 10 },
            { "a tab", "acct\t@x.io", 10 },
            { "a NUL", "acct\0@x.io", 10 },
            { "a CR LF", "acct\r\n@x.io", 11 },
            { "'&'", "acct&@x.io", 10 },
            { "'='", "acct=@x.io", 10 },
            { "'+'", "acct+@x.io", 10 },
            { "'%'", "acct%40x.io", 11 },
            { "'?'", "https://x.io/?a", 15 },
            { "'#'", "https://x.io/#a", 15 },
            { "a UTF-8 letter", "acct\xc3\xa7@x.io", 11 },
            { "a DEL", "acct\x7f@x.io", 10 },
            { "a control byte", "acct\x01@x.io", 10 }
        };

        unsigned char  *p, *out;

        out = xmalloc(4096);

        for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
            p = dup_exact(bad[i].s, bad[i].len);

            ok(unico_jwt_claim_valid((char *) p, bad[i].len) == 0,
               "claim with %s: invalid", bad[i].desc);

            c.iss = (char *) p;
            c.iss_len = bad[i].len;
            c.aud = aud;
            c.aud_len = sizeof(AUD) - 1;

            ok(unico_jwt_sign(&c, k2048, out, 4096) == 0,
               "iss with %s: refused", bad[i].desc);

            c.iss = iss;
            c.iss_len = sizeof(ISS) - 1;
            c.aud = (char *) p;
            c.aud_len = bad[i].len;

            ok(unico_jwt_sign(&c, k2048, out, 4096) == 0,
               "aud with %s: refused", bad[i].desc);

            free(p);
        }

        ok(unico_jwt_claim_valid(NULL, 0) == 0, "claim NULL: invalid");

        ok(unico_jwt_claim_valid(ISS, sizeof(ISS) - 1)
           && unico_jwt_claim_valid(AUD, sizeof(AUD) - 1)
           && unico_jwt_claim_valid("https://identityhomolog.acesso.io",
                                    33)
           && unico_jwt_claim_valid("aZ09@.-_:/", 10),
           "claims of letters, digits and @.-_:/ valid");

        /* 257 bytes, otherwise valid */

        memset(s257, 'a', sizeof(s257));
        p = dup_exact(s257, sizeof(s257));

        ok(unico_jwt_claim_valid((char *) p, sizeof(s257)) == 1,
           "257 letters: a valid claim in itself");

        c.iss = (char *) p;
        c.iss_len = sizeof(s257);
        c.aud = aud;
        c.aud_len = sizeof(AUD) - 1;

        ok(unico_jwt_sign(&c, k2048, out, 4096) == 0,
           "iss of 257 bytes: refused");

        c.iss = iss;
        c.iss_len = sizeof(ISS) - 1;
        c.aud = (char *) p;
        c.aud_len = sizeof(s257);

        ok(unico_jwt_sign(&c, k2048, out, 4096) == 0,
           "aud of 257 bytes: refused");

        free(p);
        free(out);
    }

    free(iss);
    free(aud);

    EVP_PKEY_free(k1024);
    EVP_PKEY_free(k2048);
    EVP_PKEY_free(k4096);
}


static void
test_bearer(void)
{
    static const struct {
        const char  *desc;
        const char  *s;
        size_t       len;
        int          valid;
    } cases[] = {
        { "one letter", "a", 1, 1 },
        { "a JWT", "eyJhbGciOi.eyJpc3Mi.c2lnbmF0dXJl", 32, 1 },
        { "every b64token character",
          "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
          "-._~+/", 68, 1 },
        { "one trailing '='", "abc=", 4, 1 },
        { "two trailing '='", "abc==", 5, 1 },
        { "three trailing '='", "a===", 4, 1 },
        { "empty", "", 0, 0 },
        { "only '='", "=", 1, 0 },
        { "only '=='", "==", 2, 0 },
        { "'=' in the middle", "ab=c", 4, 0 },
        { "'=' then a letter at the end", "abc=d", 5, 0 },
        { "'=' twice apart", "a=b=", 4, 0 },
        { "a leading '='", "=abc", 4, 0 },
        { "a space", "ab c", 4, 0 },
        { "a leading space", " abc", 4, 0 },
        { "a trailing space", "abc ", 4, 0 },
        { "a tab", "ab\tc", 4, 0 },
        { "a CR", "abc\r", 4, 0 },
        { "a LF", "abc\n", 4, 0 },
        { "CR LF inside", "ab\r\nX-Evil: 1", 14, 0 },
        { "a quote", "ab\"c", 4, 0 },
        { "quoted", "\"abc\"", 5, 0 },
        { "a comma", "ab,c", 4, 0 },
        { "a semicolon", "ab;c", 4, 0 },
        { "a colon", "ab:c", 4, 0 },
        { "a backslash", "ab\\c", 4, 0 },
        { "a '%'", "ab%20c", 6, 0 },
        { "a NUL", "ab\0c", 4, 0 },
        { "a trailing NUL", "abc\0", 4, 0 },
        { "a DEL", "ab\x7f" "c", 4, 0 },
        { "a UTF-8 letter", "ab\xc3\xa7", 4, 0 },
        { "a high byte", "ab\xff", 3, 0 },
        { "'=' then a space", "abc= ", 5, 0 }
    };

    size_t          i;
    unsigned char  *p;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        p = dup_exact(cases[i].s, cases[i].len);

        ok(unico_bearer_token_valid(p, cases[i].len) == cases[i].valid,
           "b64token %s: %s", cases[i].desc,
           cases[i].valid ? "valid" : "invalid");

        free(p);
    }

    ok(unico_bearer_token_valid(NULL, 0) == 0, "b64token NULL: invalid");
}


typedef struct {
    const char        *desc;
    const char        *json;     /* ' stands for " */
    size_t             len;      /* 0: strlen(json) */
    unico_token_rc_e   rc;
    const char        *token;    /* on UNICO_TOKEN_OK */
    int64_t            expires_in;
    const char        *code;     /* error_code; NULL: "" */
} token_case_t;


static const token_case_t  token_cases[] = {

    /* good answers */

    { "documented answer",
      "{'access_token':'tok.en-1_~+/=','token_type':'Bearer',"
      "'expires_in':3600}", 0,
      UNICO_TOKEN_OK, "tok.en-1_~+/=", 3600, NULL },
    { "expires_in a string",
      "{'access_token':'t','token_type':'Bearer','expires_in':'3600'}", 0,
      UNICO_TOKEN_OK, "t", 3600, NULL },
    { "blanks everywhere",
      " \r\n\t{ 'access_token' : 't' ,\n 'expires_in' : 60 } \n", 0,
      UNICO_TOKEN_OK, "t", 60, NULL },
    { "fields reordered, no token_type",
      "{'expires_in':1,'access_token':'t'}", 0,
      UNICO_TOKEN_OK, "t", 1, NULL },
    { "token_type bearer",
      "{'access_token':'t','token_type':'bearer','expires_in':1}", 0,
      UNICO_TOKEN_OK, "t", 1, NULL },
    { "token_type BEARER",
      "{'access_token':'t','token_type':'BEARER','expires_in':1}", 0,
      UNICO_TOKEN_OK, "t", 1, NULL },
    { "token_type bEaReR",
      "{'access_token':'t','token_type':'bEaReR','expires_in':1}", 0,
      UNICO_TOKEN_OK, "t", 1, NULL },
    { "expires_in of 9 digits",
      "{'access_token':'t','expires_in':999999999}", 0,
      UNICO_TOKEN_OK, "t", 999999999, NULL },
    { "expires_in '000003600'",
      "{'access_token':'t','expires_in':'000003600'}", 0,
      UNICO_TOKEN_OK, "t", 3600, NULL },
    { "token \\u0041-escaped",
      "{'access_token':'\\u0041bc\\u002e\\/','expires_in':1}", 0,
      UNICO_TOKEN_OK, "Abc./", 1, NULL },
    { "extra fields and nested objects ignored",
      "{'scope':'*','access_token':'t','id_token':null,'n':1.5e3,"
      "'ok':true,'list':[1,'a',{'access_token':7},[[]]],"
      "'nested':{'access_token':'evil','expires_in':'x',"
      "'token_type':'mac','error':'e','a':{'b':[null,false]}},"
      "'expires_in':60,'refresh_token':'r'}", 0,
      UNICO_TOKEN_OK, "t", 60, NULL },
    { "error and error_description null",
      "{'access_token':'t','expires_in':1,'error':null,"
      "'error_description':null}", 0,
      UNICO_TOKEN_OK, "t", 1, NULL },
    { "key case matters: Access_Token ignored",
      "{'Access_Token':'x','access_token':'t','expires_in':1}", 0,
      UNICO_TOKEN_OK, "t", 1, NULL },

    /* a duplicated field: each value is checked, the last one wins */

    { "access_token twice: the last wins",
      "{'access_token':'first','access_token':'second','expires_in':1}", 0,
      UNICO_TOKEN_OK, "second", 1, NULL },
    { "access_token twice, longer then shorter: the last wins",
      "{'access_token':'abcdefgh','access_token':'xy','expires_in':1}", 0,
      UNICO_TOKEN_OK, "xy", 1, NULL },
    { "access_token twice, the first bad: bad_token",
      "{'access_token':'a b','access_token':'t','expires_in':1}", 0,
      UNICO_TOKEN_BAD_TOKEN, NULL, 0, NULL },
    { "access_token twice, the last a number: wrong_type",
      "{'access_token':'t','access_token':1,'expires_in':1}", 0,
      UNICO_TOKEN_WRONG_TYPE, NULL, 0, NULL },
    { "expires_in twice: the last wins",
      "{'access_token':'t','expires_in':1,'expires_in':'7200'}", 0,
      UNICO_TOKEN_OK, "t", 7200, NULL },
    { "expires_in twice, the last 0: bad_expiry",
      "{'access_token':'t','expires_in':1,'expires_in':0}", 0,
      UNICO_TOKEN_BAD_EXPIRY, NULL, 0, NULL },

    /* token_type */

    { "token_type mac",
      "{'access_token':'t','token_type':'mac','expires_in':1}", 0,
      UNICO_TOKEN_BAD_TYPE, NULL, 0, NULL },
    { "token_type empty",
      "{'access_token':'t','token_type':'','expires_in':1}", 0,
      UNICO_TOKEN_BAD_TYPE, NULL, 0, NULL },
    { "token_type 'Bearer '",
      "{'access_token':'t','token_type':'Bearer ','expires_in':1}", 0,
      UNICO_TOKEN_BAD_TYPE, NULL, 0, NULL },
    { "token_type 'Bearerx'",
      "{'access_token':'t','token_type':'Bearerx','expires_in':1}", 0,
      UNICO_TOKEN_BAD_TYPE, NULL, 0, NULL },
    { "token_type 'Beare'",
      "{'access_token':'t','token_type':'Beare','expires_in':1}", 0,
      UNICO_TOKEN_BAD_TYPE, NULL, 0, NULL },
    { "token_type 'Beare\\u0000'",
      "{'access_token':'t','token_type':'Beare\\u0000','expires_in':1}", 0,
      UNICO_TOKEN_BAD_TYPE, NULL, 0, NULL },
    { "token_type null",
      "{'access_token':'t','token_type':null,'expires_in':1}", 0,
      UNICO_TOKEN_WRONG_TYPE, NULL, 0, NULL },
    { "token_type a number",
      "{'access_token':'t','token_type':1,'expires_in':1}", 0,
      UNICO_TOKEN_WRONG_TYPE, NULL, 0, NULL },

    /* missing fields */

    { "empty object", "{}", 0,
      UNICO_TOKEN_MISSING, NULL, 0, NULL },
    { "no access_token",
      "{'token_type':'Bearer','expires_in':3600}", 0,
      UNICO_TOKEN_MISSING, NULL, 0, NULL },
    { "no expires_in",
      "{'access_token':'t','token_type':'Bearer'}", 0,
      UNICO_TOKEN_MISSING, NULL, 0, NULL },
    { "access_token only nested",
      "{'data':{'access_token':'t','expires_in':1}}", 0,
      UNICO_TOKEN_MISSING, NULL, 0, NULL },

    /* access_token of the wrong type */

    { "access_token a number",
      "{'access_token':12345,'expires_in':1}", 0,
      UNICO_TOKEN_WRONG_TYPE, NULL, 0, NULL },
    { "access_token true",
      "{'access_token':true,'expires_in':1}", 0,
      UNICO_TOKEN_WRONG_TYPE, NULL, 0, NULL },
    { "access_token null",
      "{'access_token':null,'expires_in':1}", 0,
      UNICO_TOKEN_WRONG_TYPE, NULL, 0, NULL },
    { "access_token an object",
      "{'access_token':{'v':'t'},'expires_in':1}", 0,
      UNICO_TOKEN_WRONG_TYPE, NULL, 0, NULL },
    { "access_token an array",
      "{'access_token':['t'],'expires_in':1}", 0,
      UNICO_TOKEN_WRONG_TYPE, NULL, 0, NULL },

    /* expires_in */

    { "expires_in 0",
      "{'access_token':'t','expires_in':0}", 0,
      UNICO_TOKEN_BAD_EXPIRY, NULL, 0, NULL },
    { "expires_in '0'",
      "{'access_token':'t','expires_in':'0'}", 0,
      UNICO_TOKEN_BAD_EXPIRY, NULL, 0, NULL },
    { "expires_in -0",
      "{'access_token':'t','expires_in':-0}", 0,
      UNICO_TOKEN_BAD_EXPIRY, NULL, 0, NULL },
    { "expires_in -1",
      "{'access_token':'t','expires_in':-1}", 0,
      UNICO_TOKEN_BAD_EXPIRY, NULL, 0, NULL },
    { "expires_in '-3600'",
      "{'access_token':'t','expires_in':'-3600'}", 0,
      UNICO_TOKEN_BAD_EXPIRY, NULL, 0, NULL },
    { "expires_in 3600.5",
      "{'access_token':'t','expires_in':3600.5}", 0,
      UNICO_TOKEN_BAD_EXPIRY, NULL, 0, NULL },
    { "expires_in '3600.5'",
      "{'access_token':'t','expires_in':'3600.5'}", 0,
      UNICO_TOKEN_BAD_EXPIRY, NULL, 0, NULL },
    { "expires_in 3600.0",
      "{'access_token':'t','expires_in':3600.0}", 0,
      UNICO_TOKEN_BAD_EXPIRY, NULL, 0, NULL },
    { "expires_in 3.6e3",
      "{'access_token':'t','expires_in':3.6e3}", 0,
      UNICO_TOKEN_BAD_EXPIRY, NULL, 0, NULL },
    { "expires_in of 10 digits",
      "{'access_token':'t','expires_in':1000000000}", 0,
      UNICO_TOKEN_BAD_EXPIRY, NULL, 0, NULL },
    { "expires_in '1000000000'",
      "{'access_token':'t','expires_in':'1000000000'}", 0,
      UNICO_TOKEN_BAD_EXPIRY, NULL, 0, NULL },
    { "expires_in of 30 digits",
      "{'access_token':'t','expires_in':123456789012345678901234567890}",
      0, UNICO_TOKEN_BAD_EXPIRY, NULL, 0, NULL },
    { "expires_in 'abc'",
      "{'access_token':'t','expires_in':'abc'}", 0,
      UNICO_TOKEN_BAD_EXPIRY, NULL, 0, NULL },
    { "expires_in ''",
      "{'access_token':'t','expires_in':''}", 0,
      UNICO_TOKEN_BAD_EXPIRY, NULL, 0, NULL },
    { "expires_in ' 3600'",
      "{'access_token':'t','expires_in':' 3600'}", 0,
      UNICO_TOKEN_BAD_EXPIRY, NULL, 0, NULL },
    { "expires_in '3600s'",
      "{'access_token':'t','expires_in':'3600s'}", 0,
      UNICO_TOKEN_BAD_EXPIRY, NULL, 0, NULL },
    { "expires_in '+3600'",
      "{'access_token':'t','expires_in':'+3600'}", 0,
      UNICO_TOKEN_BAD_EXPIRY, NULL, 0, NULL },
    { "expires_in null",
      "{'access_token':'t','expires_in':null}", 0,
      UNICO_TOKEN_WRONG_TYPE, NULL, 0, NULL },
    { "expires_in true",
      "{'access_token':'t','expires_in':true}", 0,
      UNICO_TOKEN_WRONG_TYPE, NULL, 0, NULL },
    { "expires_in an array",
      "{'access_token':'t','expires_in':[3600]}", 0,
      UNICO_TOKEN_WRONG_TYPE, NULL, 0, NULL },

    /* unsafe tokens */

    { "access_token empty",
      "{'access_token':'','expires_in':1}", 0,
      UNICO_TOKEN_BAD_TOKEN, NULL, 0, NULL },
    { "access_token with a space",
      "{'access_token':'ab cd','expires_in':1}", 0,
      UNICO_TOKEN_BAD_TOKEN, NULL, 0, NULL },
    { "access_token with a CR",
      "{'access_token':'ab\\rcd','expires_in':1}", 0,
      UNICO_TOKEN_BAD_TOKEN, NULL, 0, NULL },
    { "access_token with CR LF and a header",
      "{'access_token':'ab\\r\\nX-Evil: 1','expires_in':1}", 0,
      UNICO_TOKEN_BAD_TOKEN, NULL, 0, NULL },
    { "access_token with a LF",
      "{'access_token':'ab\\n','expires_in':1}", 0,
      UNICO_TOKEN_BAD_TOKEN, NULL, 0, NULL },
    { "access_token with a quote",
      "{'access_token':'ab\\'cd','expires_in':1}", 0,
      UNICO_TOKEN_BAD_TOKEN, NULL, 0, NULL },
    { "access_token with \\u0000",
      "{'access_token':'ab\\u0000','expires_in':1}", 0,
      UNICO_TOKEN_BAD_TOKEN, NULL, 0, NULL },
    { "access_token with a UTF-8 letter",
      "{'access_token':'ab\xc3\xa7','expires_in':1}", 0,
      UNICO_TOKEN_BAD_TOKEN, NULL, 0, NULL },
    { "access_token '=' in the middle",
      "{'access_token':'ab=cd','expires_in':1}", 0,
      UNICO_TOKEN_BAD_TOKEN, NULL, 0, NULL },

    /* OAuth2 error answers, the description in UTF-8 */

    { "error 1.2.4",
      "{'error':'server_error','error_description':'" FALHA "1.2.4'}", 0,
      UNICO_TOKEN_ERROR, NULL, 0, "1.2.4" },
    { "error 1.2.7",
      "{'error':'server_error','error_description':'" FALHA "1.2.7'}", 0,
      UNICO_TOKEN_ERROR, NULL, 0, "1.2.7" },
    { "error 1.2.18",
      "{'error':'server_error','error_description':'" FALHA "1.2.18'}", 0,
      UNICO_TOKEN_ERROR, NULL, 0, "1.2.18" },
    { "error 1.2.21",
      "{'error':'server_error','error_description':'" FALHA "1.2.21'}", 0,
      UNICO_TOKEN_ERROR, NULL, 0, "1.2.21" },
    { "error 1.2.22",
      "{'error':'server_error','error_description':'" FALHA "1.2.22'}", 0,
      UNICO_TOKEN_ERROR, NULL, 0, "1.2.22" },
    { "error 1.2.7, the description \\u-escaped",
      "{'error':'server_error','error_description':"
      "'Falha na autentica\\u00e7\\u00e3o 1.2.7'}", 0,
      UNICO_TOKEN_ERROR, NULL, 0, "1.2.7" },
    { "error, the description first",
      "{'error_description':'" FALHA "1.2.21','error':'server_error'}", 0,
      UNICO_TOKEN_ERROR, NULL, 0, "1.2.21" },
    { "error 1.2.7 followed by a dot",
      "{'error':'server_error','error_description':'" FALHA "1.2.7.'}", 0,
      UNICO_TOKEN_ERROR, NULL, 0, "1.2.7" },
    { "error code alone",
      "{'error_description':'1.2.4'}", 0,
      UNICO_TOKEN_ERROR, NULL, 0, "1.2.4" },
    { "error: two codes, the last one",
      "{'error':'server_error','error_description':'1.2.4 then 1.2.7'}", 0,
      UNICO_TOKEN_ERROR, NULL, 0, "1.2.7" },
    { "error 11.2.7 not extracted",
      "{'error':'server_error','error_description':'" FALHA "11.2.7'}", 0,
      UNICO_TOKEN_ERROR, NULL, 0, "" },
    { "error 1.2. not extracted",
      "{'error':'server_error','error_description':'" FALHA "1.2.'}", 0,
      UNICO_TOKEN_ERROR, NULL, 0, "" },
    { "error 1.2.x not extracted",
      "{'error':'server_error','error_description':'" FALHA "1.2.x'}", 0,
      UNICO_TOKEN_ERROR, NULL, 0, "" },
    { "error 0.1.2.7 not extracted",
      "{'error':'server_error','error_description':'" FALHA "0.1.2.7'}", 0,
      UNICO_TOKEN_ERROR, NULL, 0, "" },
    { "error 1.3.7 not extracted",
      "{'error':'server_error','error_description':'" FALHA "1.3.7'}", 0,
      UNICO_TOKEN_ERROR, NULL, 0, "" },
    { "error code of 30 digits: cut to 15 bytes",
      "{'error_description':'1.2.123456789012345678901234567890'}", 0,
      UNICO_TOKEN_ERROR, NULL, 0, "1.2.12345678901" },
    { "error code in the error field: not extracted",
      "{'error':'1.2.7'}", 0,
      UNICO_TOKEN_ERROR, NULL, 0, "" },
    { "error without a description",
      "{'error':'invalid_grant'}", 0,
      UNICO_TOKEN_ERROR, NULL, 0, "" },
    { "error description empty",
      "{'error_description':''}", 0,
      UNICO_TOKEN_ERROR, NULL, 0, "" },
    { "error plus a token",
      "{'access_token':'t','token_type':'Bearer','expires_in':3600,"
      "'error':'server_error','error_description':'" FALHA "1.2.7'}", 0,
      UNICO_TOKEN_ERROR, NULL, 0, "1.2.7" },
    { "error only nested: not an error",
      "{'meta':{'error':'x','error_description':'1.2.7'},"
      "'access_token':'t','expires_in':1}", 0,
      UNICO_TOKEN_OK, "t", 1, NULL },

    /* not a JSON object */

    { "empty", "", 0,
      UNICO_TOKEN_BAD_JSON, NULL, 0, NULL },
    { "blanks", " \r\n\t ", 0,
      UNICO_TOKEN_BAD_JSON, NULL, 0, NULL },
    { "top-level array",
      "[{'access_token':'t','expires_in':1}]", 0,
      UNICO_TOKEN_BAD_JSON, NULL, 0, NULL },
    { "top-level empty array", "[]", 0,
      UNICO_TOKEN_BAD_JSON, NULL, 0, NULL },
    { "top-level string", "'access_token'", 0,
      UNICO_TOKEN_BAD_JSON, NULL, 0, NULL },
    { "top-level number", "3600", 0,
      UNICO_TOKEN_BAD_JSON, NULL, 0, NULL },
    { "top-level null", "null", 0,
      UNICO_TOKEN_BAD_JSON, NULL, 0, NULL },
    { "top-level true", "true", 0,
      UNICO_TOKEN_BAD_JSON, NULL, 0, NULL },
    { "truncated",
      "{'access_token':'t','expires_in':3600", 0,
      UNICO_TOKEN_BAD_JSON, NULL, 0, NULL },
    { "truncated in a string",
      "{'access_token':'t','expires_in':'36", 0,
      UNICO_TOKEN_BAD_JSON, NULL, 0, NULL },
    { "truncated after a key",
      "{'access_token'", 0,
      UNICO_TOKEN_BAD_JSON, NULL, 0, NULL },
    { "only '{'", "{", 0,
      UNICO_TOKEN_BAD_JSON, NULL, 0, NULL },
    { "trailing garbage",
      "{'access_token':'t','expires_in':1}x", 0,
      UNICO_TOKEN_BAD_JSON, NULL, 0, NULL },
    { "two objects",
      "{'access_token':'t','expires_in':1}{}", 0,
      UNICO_TOKEN_BAD_JSON, NULL, 0, NULL },
    { "a trailing NUL",
      "{'access_token':'t','expires_in':1}\0", 36,
      UNICO_TOKEN_BAD_JSON, NULL, 0, NULL },
    { "a trailing comma",
      "{'access_token':'t','expires_in':1,}", 0,
      UNICO_TOKEN_BAD_JSON, NULL, 0, NULL },
    { "a UTF-8 BOM",
      "\xef\xbb\xbf{'access_token':'t','expires_in':1}", 0,
      UNICO_TOKEN_BAD_JSON, NULL, 0, NULL },
    { "invalid UTF-8 in a string",
      "{'access_token':'t','expires_in':1,'x':'\xc3('}", 0,
      UNICO_TOKEN_BAD_JSON, NULL, 0, NULL },
    { "a raw LF in a string",
      "{'access_token':'t\n','expires_in':1}", 0,
      UNICO_TOKEN_BAD_JSON, NULL, 0, NULL },
    { "a form body",
      "access_token=t&expires_in=1", 0,
      UNICO_TOKEN_BAD_JSON, NULL, 0, NULL },
    { "an HTML error page",
      "<html><body>502 Bad Gateway</body></html>", 0,
      UNICO_TOKEN_BAD_JSON, NULL, 0, NULL }
};


static void
check_token_case(const token_case_t *tc, unico_token_response_t *r)
{
    size_t            len;
    const char       *code;
    unsigned char    *buf;
    unico_token_rc_e  rc;

    len = tc->len ? tc->len : strlen(tc->json);
    buf = json_exact(tc->json, len);

    /* garbage from an earlier answer must not show through */

    memset(r, 0x41, sizeof(unico_token_response_t));

    rc = unico_token_parse(buf, len, r);

    if (!ok(rc == tc->rc, "token %s: %s", tc->desc,
            unico_token_strerror(tc->rc)))
    {
        diag("got %s", unico_token_strerror(rc));
    }

    if (tc->rc == UNICO_TOKEN_OK) {
        ok(rc == UNICO_TOKEN_OK
           && r->token_len == strlen(tc->token)
           && memcmp(r->token, tc->token, r->token_len) == 0
           && r->expires_in == tc->expires_in,
           "token %s: token '%s', expires_in %lld", tc->desc, tc->token,
           (long long) tc->expires_in);

    } else {
        ok(r->token_len == 0, "token %s: token_len 0", tc->desc);
    }

    if (tc->rc == UNICO_TOKEN_ERROR) {
        code = tc->code ? tc->code : "";

        ok(memchr(r->error_code, '\0', UNICO_ERROR_CODE_MAX) != NULL
           && strcmp(r->error_code, code) == 0,
           "token %s: error_code '%s'", tc->desc, code);
    }

    free(buf);
}


/* a token of len bytes, valid: letters and digits */

static void
test_token_length(unico_token_response_t *r)
{
    size_t             i, len, tlen;
    unsigned char     *buf;
    unico_token_rc_e   rc;

    static const char  pre[] = "{\"access_token\":\"";
    static const char  post[] = "\",\"expires_in\":\"3600\"}";

    for (tlen = UNICO_TOKEN_MAX - 1; tlen <= UNICO_TOKEN_MAX + 1; tlen++) {
        len = sizeof(pre) - 1 + tlen + sizeof(post) - 1;
        buf = xmalloc(len);

        memcpy(buf, pre, sizeof(pre) - 1);

        for (i = 0; i < tlen; i++) {
            buf[sizeof(pre) - 1 + i] = "0123456789abcdefXYZ-._~+/"[i % 25];
        }

        memcpy(buf + sizeof(pre) - 1 + tlen, post, sizeof(post) - 1);

        rc = unico_token_parse(buf, len, r);

        if (tlen <= UNICO_TOKEN_MAX) {
            ok(rc == UNICO_TOKEN_OK && r->token_len == tlen
               && memcmp(r->token, buf + sizeof(pre) - 1, tlen) == 0
               && r->expires_in == 3600,
               "access_token of %zu bytes: ok, all of it", tlen);

        } else {
            ok(rc == UNICO_TOKEN_BAD_TOKEN && r->token_len == 0,
               "access_token of %zu bytes (over UNICO_TOKEN_MAX): "
               "bad_token", tlen);
        }

        free(buf);
    }
}


/* {"access_token":"t","expires_in":1,"n": and depth more objects or arrays */

static unico_token_rc_e
nested(unico_token_response_t *r, size_t depth, int arrays)
{
    size_t             i, len;
    unsigned char     *buf, *p;
    unico_token_rc_e   rc;

    static const char  pre[] =
        "{\"access_token\":\"t\",\"expires_in\":1,\"n\":";

    len = sizeof(pre) - 1 + depth * (arrays ? 2 : 6) + 1 + 1;
    buf = xmalloc(len);
    p = buf;

    memcpy(p, pre, sizeof(pre) - 1);
    p += sizeof(pre) - 1;

    for (i = 0; i < depth; i++) {
        if (arrays) {
            *p++ = '[';

        } else {
            memcpy(p, "{\"n\":", 5);
            p += 5;
        }
    }

    *p++ = '1';

    for (i = 0; i < depth; i++) {
        *p++ = arrays ? ']' : '}';
    }

    *p++ = '}';

    if ((size_t) (p - buf) != len) {
        die("nested(): length");
    }

    rc = unico_token_parse(buf, len, r);

    free(buf);

    return rc;
}


static void
test_token_nesting(unico_token_response_t *r)
{
    size_t             i, len;
    unsigned char     *buf;
    unico_token_rc_e   rc;

    /* the top-level object is depth 1: 63 more levels are fine */

    ok(nested(r, 63, 0) == UNICO_TOKEN_OK && r->token_len == 1,
       "objects nested 64 deep: ok");
    ok(nested(r, 64, 0) == UNICO_TOKEN_BAD_JSON && r->token_len == 0,
       "objects nested 65 deep: bad_json");
    ok(nested(r, 63, 1) == UNICO_TOKEN_OK && r->token_len == 1,
       "arrays nested 64 deep: ok");
    ok(nested(r, 64, 1) == UNICO_TOKEN_BAD_JSON && r->token_len == 0,
       "arrays nested 65 deep: bad_json");
    ok(nested(r, 100000, 0) == UNICO_TOKEN_BAD_JSON,
       "objects nested 100001 deep: bad_json, no crash");
    ok(nested(r, 1000000, 1) == UNICO_TOKEN_BAD_JSON,
       "arrays nested 1000001 deep: bad_json, no crash");

    /* unclosed: only '[' or '{"a":' */

    len = 200000;
    buf = xmalloc(len);
    memset(buf, '[', len);

    rc = unico_token_parse(buf, len, r);
    ok(rc == UNICO_TOKEN_BAD_JSON, "200000 x '[': bad_json");

    for (i = 0; i + 5 <= len; i += 5) {
        memcpy(buf + i, "{\"a\":", 5);
    }

    rc = unico_token_parse(buf, len, r);
    ok(rc == UNICO_TOKEN_BAD_JSON, "40000 x '{\"a\":': bad_json");

    free(buf);
}


static void
test_token(void)
{
    size_t                   i;
    unsigned char           *buf;
    unico_token_rc_e         rc;
    unico_token_response_t  *r;

    /* exact size: an overflow of token or error_code is an ASan report */

    r = xmalloc(sizeof(unico_token_response_t));

    for (i = 0; i < sizeof(token_cases) / sizeof(token_cases[0]); i++) {
        check_token_case(&token_cases[i], r);
    }

    test_token_length(r);
    test_token_nesting(r);

    /* a good answer then a bad one into the same response */

    buf = json_exact("{'access_token':'t','expires_in':1}", 35);
    rc = unico_token_parse(buf, 35, r);
    free(buf);

    buf = json_exact("{'access_token':'t','expires_in':0}", 35);

    ok(rc == UNICO_TOKEN_OK
       && unico_token_parse(buf, 35, r) == UNICO_TOKEN_BAD_EXPIRY
       && r->token_len == 0 && r->error_code[0] == '\0',
       "a bad answer after a good one: token_len 0, no error_code");

    free(buf);

    /* every prefix of a good answer: never ok, never a crash */

    {
        static const char  good[] =
            "{'access_token':'abc','token_type':'Bearer','expires_in':'60',"
            "'error_description':'x'}";

        int  all;

        all = 1;

        for (i = 0; i < sizeof(good) - 1; i++) {
            buf = json_exact(good, i);

            rc = unico_token_parse(buf, i, r);

            if (rc == UNICO_TOKEN_OK || r->token_len != 0) {
                diag("prefix of %zu bytes: %s", i, unico_token_strerror(rc));
                all = 0;
            }

            free(buf);
        }

        ok(all, "every proper prefix of an answer: not ok, token_len 0");
    }

    free(r);
}


static void
test_strerror(void)
{
    static const char  *names[] = {
        "ok", "bad_json", "oauth_error", "missing_field", "wrong_type",
        "bad_token", "bad_expiry", "bad_token_type", "no_memory"
    };

    int  i, all;

    all = 1;

    for (i = UNICO_TOKEN_OK; i <= UNICO_TOKEN_NO_MEMORY; i++) {
        if (strcmp(unico_token_strerror((unico_token_rc_e) i), names[i])
            != 0)
        {
            all = 0;
        }
    }

    ok(all, "unico_token_strerror() names every code");
    ok(strcmp(unico_token_strerror((unico_token_rc_e) 99), "unknown") == 0,
       "unico_token_strerror(99): unknown");
}


int
main(void)
{
    test_sign();
    test_bearer();
    test_token();
    test_strerror();

    printf("1..%u\n", tests);

    if (failed) {
        diag("failed %u of %u", failed, tests);
        return 1;
    }

    return 0;
}
