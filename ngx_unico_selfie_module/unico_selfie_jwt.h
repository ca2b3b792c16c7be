
/*
 * Copyright (C) ngx_unico_selfie_module authors
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * The service-account half of the pure core: the RS256 JWT bearer
 * assertion of RFC 7523 as Unico's identity service wants it, and the
 * token endpoint's answer.  No nginx types: unit-tested and fuzzed alone.
 */


#ifndef _UNICO_SELFIE_JWT_H_INCLUDED_
#define _UNICO_SELFIE_JWT_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>


#define UNICO_TOKEN_MAX        4096
#define UNICO_JWT_RSA_BITS_MAX 8192     /* the longest key that can sign */
#define UNICO_ERROR_CODE_MAX   16


/*
 * The assertion's claims, exactly these: iss, aud, scope "*", iat, exp.
 * iss and aud are written as given: unico_jwt_claim_valid() them first.
 */
typedef struct {
    const char  *iss;
    size_t       iss_len;
    const char  *aud;
    size_t       aud_len;
    int64_t      iat;
    int64_t      exp;
} unico_jwt_claims_t;


/* The most bytes unico_jwt_sign() writes for these claims and key. */
size_t unico_jwt_max_len(const unico_jwt_claims_t *claims, EVP_PKEY *key);

/*
 * Writes header.claims.signature (base64url, RS256) into out; returns its
 * length, or 0 when out is too small or OpenSSL fails.
 */
size_t unico_jwt_sign(const unico_jwt_claims_t *claims, EVP_PKEY *key,
    unsigned char *out, size_t size);

/*
 * 1 when s[0 .. len) can stand in a JSON string unescaped and in a URL
 * form body: letters, digits and "@.-_:/" (issuers and audiences).
 */
int unico_jwt_claim_valid(const char *s, size_t len);

/* 1 when p[0 .. len) is an RFC 6750 b64token: safe in a header. */
int unico_bearer_token_valid(const unsigned char *p, size_t len);


typedef enum {
    UNICO_TOKEN_OK = 0,
    UNICO_TOKEN_BAD_JSON,       /* not JSON, or not an object */
    UNICO_TOKEN_ERROR,          /* an OAuth2 error answer */
    UNICO_TOKEN_MISSING,        /* no access_token or expires_in */
    UNICO_TOKEN_WRONG_TYPE,     /* a field of the wrong type */
    UNICO_TOKEN_BAD_TOKEN,      /* access_token empty, too long or unsafe */
    UNICO_TOKEN_BAD_EXPIRY,     /* expires_in not a positive integer */
    UNICO_TOKEN_BAD_TYPE,       /* token_type present and not Bearer */
    UNICO_TOKEN_NO_MEMORY
} unico_token_rc_e;


typedef struct {
    unsigned char  token[UNICO_TOKEN_MAX];
    size_t         token_len;
    int64_t        expires_in;

    /* "1.2.7" of "Falha na autenticação 1.2.7", or empty */
    char           error_code[UNICO_ERROR_CODE_MAX];
} unico_token_response_t;


/*
 * Parses the token endpoint's answer: {"access_token": "...",
 * "token_type": "Bearer", "expires_in": 3600 | "3600"} or
 * {"error": "...", "error_description": "... 1.2.N"}.
 */
unico_token_rc_e unico_token_parse(const unsigned char *buf, size_t len,
    unico_token_response_t *out);

const char *unico_token_strerror(unico_token_rc_e rc);


#endif /* _UNICO_SELFIE_JWT_H_INCLUDED_ */
