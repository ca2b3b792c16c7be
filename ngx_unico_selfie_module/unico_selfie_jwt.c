
/*
 * Copyright (C) ngx_unico_selfie_module authors
 */


#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>
#include <openssl/rsa.h>

#include <yajl/yajl_parse.h>

#include "unico_selfie_base64.h"
#include "unico_selfie_jwt.h"


#define UNICO_JWT_HEADER  "{\"alg\":\"RS256\",\"typ\":\"JWT\"}"

static int unico_token_null(void *ctx);
static int unico_token_boolean(void *ctx, int v);
static int unico_token_number(void *ctx, const char *s, size_t len);
static int unico_token_string(void *ctx, const unsigned char *s, size_t len);
static int unico_token_map_key(void *ctx, const unsigned char *s, size_t len);
static int unico_token_start_map(void *ctx);
static int unico_token_end_map(void *ctx);
static int unico_token_start_array(void *ctx);
static int unico_token_end_array(void *ctx);


int
unico_jwt_claim_valid(const char *s, size_t len)
{
    size_t  i;
    char    c;

    if (s == NULL || len == 0) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        c = s[i];

        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
            || (c >= '0' && c <= '9')
            || c == '@' || c == '.' || c == '-' || c == '_' || c == ':'
            || c == '/')
        {
            continue;
        }

        return 0;
    }

    return 1;
}


int
unico_bearer_token_valid(const unsigned char *p, size_t len)
{
    size_t         i;
    unsigned char  c;

    if (p == NULL || len == 0) {
        return 0;
    }

    /* b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" )
     *            *"=" */

    for (i = 0; i < len; i++) {
        c = p[i];

        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
            || (c >= '0' && c <= '9')
            || c == '-' || c == '.' || c == '_' || c == '~' || c == '+'
            || c == '/')
        {
            continue;
        }

        break;
    }

    if (i == 0) {
        return 0;
    }

    while (i < len && p[i] == '=') {
        i++;
    }

    return i == len;
}


/* the claims JSON, or its length when buf is NULL */

static size_t
unico_jwt_claims(const unico_jwt_claims_t *c, char *buf, size_t size)
{
    int  n;

    n = snprintf(buf, buf ? size : 0,
                 "{\"iss\":\"%.*s\",\"aud\":\"%.*s\",\"scope\":\"*\","
                 "\"iat\":%lld,\"exp\":%lld}",
                 (int) c->iss_len, c->iss, (int) c->aud_len, c->aud,
                 (long long) c->iat, (long long) c->exp);

    if (n < 0 || (buf && (size_t) n >= size)) {
        return 0;
    }

    return (size_t) n;
}


size_t
unico_jwt_max_len(const unico_jwt_claims_t *claims, EVP_PKEY *key)
{
    size_t  claims_len;

    claims_len = unico_jwt_claims(claims, NULL, 0);
    if (claims_len == 0) {
        return 0;
    }

    return unico_base64url_encoded_len(sizeof(UNICO_JWT_HEADER) - 1) + 1
           + unico_base64url_encoded_len(claims_len) + 1
           + unico_base64url_encoded_len((size_t) EVP_PKEY_get_size(key));
}


size_t
unico_jwt_sign(const unico_jwt_claims_t *claims, EVP_PKEY *key,
    unsigned char *out, size_t size)
{
    int             ok;
    char            json[1024];
    size_t          n, json_len, sig_len;
    unsigned char  *p, sig[UNICO_JWT_RSA_BITS_MAX / 8];
    EVP_MD_CTX     *md;

    if (claims->iss_len > 256 || claims->aud_len > 256
        || !unico_jwt_claim_valid(claims->iss, claims->iss_len)
        || !unico_jwt_claim_valid(claims->aud, claims->aud_len)
        || (size_t) EVP_PKEY_get_size(key) > sizeof(sig)
        || size < unico_jwt_max_len(claims, key))
    {
        return 0;
    }

    json_len = unico_jwt_claims(claims, json, sizeof(json));
    if (json_len == 0) {
        return 0;
    }

    p = out;
    p += unico_base64url_encode(p, (const unsigned char *) UNICO_JWT_HEADER,
                             sizeof(UNICO_JWT_HEADER) - 1);
    *p++ = '.';
    p += unico_base64url_encode(p, (const unsigned char *) json, json_len);

    /* RS256: RSASSA-PKCS1-v1_5 with SHA-256 over "header.claims" */

    md = EVP_MD_CTX_new();
    if (md == NULL) {
        return 0;
    }

    sig_len = sizeof(sig);

    ok = EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) == 1
         && EVP_DigestSign(md, sig, &sig_len, out, p - out) == 1;

    EVP_MD_CTX_free(md);

    if (!ok) {
        return 0;
    }

    *p++ = '.';
    n = unico_base64url_encode(p, sig, sig_len);

    return (size_t) (p - out) + n;
}


/* the token endpoint's answer */

typedef enum {
    UNICO_TK_NONE = 0,
    UNICO_TK_ACCESS_TOKEN,
    UNICO_TK_TOKEN_TYPE,
    UNICO_TK_EXPIRES_IN,
    UNICO_TK_ERROR,
    UNICO_TK_ERROR_DESCRIPTION
} unico_token_field_e;


typedef struct {
    unico_token_response_t  *out;
    unico_token_rc_e         rc;
    unsigned                 depth;
    unico_token_field_e      field;
    unsigned                 have_token:1;
    unsigned                 have_expiry:1;
    unsigned                 have_error:1;
} unico_token_ctx_t;


static const yajl_callbacks  unico_token_callbacks = {
    unico_token_null,
    unico_token_boolean,
    NULL,
    NULL,
    unico_token_number,
    unico_token_string,
    unico_token_start_map,
    unico_token_map_key,
    unico_token_end_map,
    unico_token_start_array,
    unico_token_end_array
};


/* a value of a field that must be a string or a number arrived otherwise */

static int
unico_token_other(unico_token_ctx_t *ctx)
{
    if (ctx->depth == 1 && ctx->field != UNICO_TK_NONE
        && ctx->field != UNICO_TK_ERROR
        && ctx->field != UNICO_TK_ERROR_DESCRIPTION)
    {
        ctx->rc = UNICO_TOKEN_WRONG_TYPE;
        return 0;
    }

    ctx->field = UNICO_TK_NONE;
    return 1;
}


static int
unico_token_null(void *data)
{
    return unico_token_other(data);
}


static int
unico_token_boolean(void *data, int v)
{
    (void) v;
    return unico_token_other(data);
}


static int
unico_expiry(unico_token_ctx_t *ctx, const unsigned char *s, size_t len)
{
    size_t   i;
    int64_t  v;

    /* a positive decimal integer of at most 9 digits: seconds */

    if (len == 0 || len > 9) {
        ctx->rc = UNICO_TOKEN_BAD_EXPIRY;
        return 0;
    }

    v = 0;

    for (i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            ctx->rc = UNICO_TOKEN_BAD_EXPIRY;
            return 0;
        }

        v = v * 10 + (s[i] - '0');
    }

    if (v == 0) {
        ctx->rc = UNICO_TOKEN_BAD_EXPIRY;
        return 0;
    }

    ctx->out->expires_in = v;
    ctx->have_expiry = 1;

    return 1;
}


static int
unico_token_number(void *data, const char *s, size_t len)
{
    unico_token_ctx_t  *ctx = data;

    if (ctx->depth != 1 || ctx->field != UNICO_TK_EXPIRES_IN) {
        return unico_token_other(ctx);
    }

    ctx->field = UNICO_TK_NONE;

    return unico_expiry(ctx, (const unsigned char *) s, len);
}


static void
unico_error_code(unico_token_ctx_t *ctx, const unsigned char *s, size_t len)
{
    size_t  i, j;

    /* the last "1.2.N" in "Falha na autenticação 1.2.N" */

    for (i = 0; i + 4 < len; i++) {
        if (s[i] != '1' || s[i + 1] != '.' || s[i + 2] != '2'
            || s[i + 3] != '.' || s[i + 4] < '0' || s[i + 4] > '9'
            || (i > 0 && ((s[i - 1] >= '0' && s[i - 1] <= '9')
                          || s[i - 1] == '.')))
        {
            continue;
        }

        for (j = i + 4;
             j < len && j - i < UNICO_ERROR_CODE_MAX - 1
             && s[j] >= '0' && s[j] <= '9';
             j++)
        {
            /* void */
        }

        memcpy(ctx->out->error_code, &s[i], j - i);
        ctx->out->error_code[j - i] = '\0';
    }
}


static int
unico_token_string(void *data, const unsigned char *s, size_t len)
{
    unico_token_ctx_t  *ctx = data;

    unico_token_field_e  field;

    if (ctx->depth != 1) {
        return 1;
    }

    field = ctx->field;
    ctx->field = UNICO_TK_NONE;

    switch (field) {

    case UNICO_TK_ACCESS_TOKEN:
        if (len > UNICO_TOKEN_MAX || !unico_bearer_token_valid(s, len)) {
            ctx->rc = UNICO_TOKEN_BAD_TOKEN;
            return 0;
        }

        memcpy(ctx->out->token, s, len);
        ctx->out->token_len = len;
        ctx->have_token = 1;
        return 1;

    case UNICO_TK_EXPIRES_IN:
        return unico_expiry(ctx, s, len);

    case UNICO_TK_TOKEN_TYPE:
        if (len != 6 || strncasecmp((const char *) s, "Bearer", 6) != 0) {
            ctx->rc = UNICO_TOKEN_BAD_TYPE;
            return 0;
        }

        return 1;

    case UNICO_TK_ERROR:
        ctx->have_error = 1;
        return 1;

    case UNICO_TK_ERROR_DESCRIPTION:
        ctx->have_error = 1;
        unico_error_code(ctx, s, len);
        return 1;

    default:
        return 1;
    }
}


static int
unico_token_map_key(void *data, const unsigned char *s, size_t len)
{
    unico_token_ctx_t  *ctx = data;

    static const struct {
        const char           *name;
        unico_token_field_e   field;
    } keys[] = {
        { "access_token", UNICO_TK_ACCESS_TOKEN },
        { "token_type", UNICO_TK_TOKEN_TYPE },
        { "expires_in", UNICO_TK_EXPIRES_IN },
        { "error", UNICO_TK_ERROR },
        { "error_description", UNICO_TK_ERROR_DESCRIPTION }
    };

    size_t  i;

    ctx->field = UNICO_TK_NONE;

    if (ctx->depth != 1) {
        return 1;
    }

    for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        if (strlen(keys[i].name) == len
            && memcmp(keys[i].name, s, len) == 0)
        {
            ctx->field = keys[i].field;
            break;
        }
    }

    return 1;
}


static int
unico_token_start_map(void *data)
{
    unico_token_ctx_t  *ctx = data;

    if (ctx->depth == 1 && !unico_token_other(ctx)) {
        return 0;
    }

    if (ctx->depth == 0 && ctx->rc == UNICO_TOKEN_BAD_JSON) {
        ctx->rc = UNICO_TOKEN_OK;
    }

    if (++ctx->depth > 64) {
        ctx->rc = UNICO_TOKEN_BAD_JSON;
        return 0;
    }

    return 1;
}


static int
unico_token_end_map(void *data)
{
    unico_token_ctx_t  *ctx = data;

    ctx->depth--;
    return 1;
}


static int
unico_token_start_array(void *data)
{
    unico_token_ctx_t  *ctx = data;

    if (ctx->depth == 0) {
        return 0;
    }

    if (ctx->depth == 1 && !unico_token_other(ctx)) {
        return 0;
    }

    if (++ctx->depth > 64) {
        ctx->rc = UNICO_TOKEN_BAD_JSON;
        return 0;
    }

    return 1;
}


static int
unico_token_end_array(void *data)
{
    unico_token_ctx_t  *ctx = data;

    ctx->depth--;
    return 1;
}


unico_token_rc_e
unico_token_parse(const unsigned char *buf, size_t len,
    unico_token_response_t *out)
{
    yajl_handle        h;
    yajl_status        st;
    unico_token_ctx_t  ctx;

    memset(out, 0, sizeof(unico_token_response_t));
    memset(&ctx, 0, sizeof(unico_token_ctx_t));

    ctx.out = out;

    /* stays BAD_JSON unless the top level turns out to be an object */
    ctx.rc = UNICO_TOKEN_BAD_JSON;

    h = yajl_alloc(&unico_token_callbacks, NULL, &ctx);
    if (h == NULL) {
        return UNICO_TOKEN_NO_MEMORY;
    }

    st = yajl_parse(h, buf, len);

    if (st == yajl_status_ok) {
        st = yajl_complete_parse(h);
    }

    yajl_free(h);

    if (st != yajl_status_ok) {
        if (ctx.rc == UNICO_TOKEN_OK) {
            ctx.rc = UNICO_TOKEN_BAD_JSON;
        }

        out->token_len = 0;
        return ctx.rc;
    }

    if (ctx.rc != UNICO_TOKEN_OK) {
        out->token_len = 0;
        return ctx.rc;
    }

    if (ctx.have_error) {
        out->token_len = 0;
        return UNICO_TOKEN_ERROR;
    }

    if (!ctx.have_token || !ctx.have_expiry) {
        out->token_len = 0;
        return UNICO_TOKEN_MISSING;
    }

    return UNICO_TOKEN_OK;
}


const char *
unico_token_strerror(unico_token_rc_e rc)
{
    static const char  *names[] = {
        "ok",
        "bad_json",
        "oauth_error",
        "missing_field",
        "wrong_type",
        "bad_token",
        "bad_expiry",
        "bad_token_type",
        "no_memory"
    };

    if ((size_t) rc >= sizeof(names) / sizeof(names[0])) {
        return "unknown";
    }

    return names[rc];
}
