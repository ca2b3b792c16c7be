
/*
 * Copyright (C) ngx_unico_selfie_module authors
 *
 * The request stage: the method, the processId and the request's body.
 * The credentials stage, after the signature: who asks Unico (the token
 * from unico_selfie_token, or the service account, whose token the token
 * stage brings later), and the key under which the cache and the
 * coalescing stage know the selfie: the processId and a digest of the API
 * prefix and the credentials.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <openssl/evp.h>

#include "ngx_http_unico_selfie.h"
#include "unico_selfie_jwt.h"


static ngx_int_t ngx_http_unico_selfie_credentials(ngx_http_request_t *r,
    ngx_http_unico_selfie_loc_conf_t *uslcf, ngx_http_unico_selfie_ctx_t *ctx);
static ngx_int_t ngx_http_unico_selfie_key(ngx_http_request_t *r,
    ngx_http_unico_selfie_loc_conf_t *uslcf, ngx_http_unico_selfie_ctx_t *ctx);


static ngx_str_t  ngx_http_unico_selfie_bearer = ngx_string("Bearer ");


ngx_int_t
ngx_http_unico_selfie_request_stage(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx)
{
    ngx_int_t                          rc;
    ngx_str_t                          id;
    ngx_http_unico_selfie_loc_conf_t  *uslcf;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        ctx->outcome = NGX_HTTP_UNICO_BAD_METHOD;
        return NGX_DONE;
    }

    uslcf = ngx_http_get_module_loc_conf(r, ngx_http_unico_selfie_module);

    if (ngx_http_complex_value(r, uslcf->process_id, &id) != NGX_OK) {
        ctx->outcome = NGX_HTTP_UNICO_INTERNAL;
        return NGX_DONE;
    }

    if (!unico_uuid_valid(id.data, id.len)) {
        ctx->outcome = NGX_HTTP_UNICO_BAD_PROCESS_ID;
        return NGX_DONE;
    }

    ctx->process_id = id;

    /* nothing of the client's body goes to Unico */

    rc = ngx_http_discard_request_body(r);

    if (rc != NGX_OK) {
        /* nginx's own status: 400 for a malformed body, else 500 */
        ctx->outcome = (rc == NGX_HTTP_BAD_REQUEST)
                       ? NGX_HTTP_UNICO_BAD_REQUEST_BODY
                       : NGX_HTTP_UNICO_INTERNAL;
        return NGX_DONE;
    }

    return NGX_OK;
}


/* the credentials stage, after the signature: who asks, and the key */

ngx_int_t
ngx_http_unico_selfie_credentials_stage(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx)
{
    ngx_http_unico_selfie_loc_conf_t  *uslcf;

    uslcf = ngx_http_get_module_loc_conf(r, ngx_http_unico_selfie_module);

    if (ngx_http_unico_selfie_credentials(r, uslcf, ctx) != NGX_OK
        || ngx_http_unico_selfie_key(r, uslcf, ctx) != NGX_OK)
    {
        return NGX_DONE;
    }

    return NGX_OK;
}


/*
 * A token from unico_selfie_token, checked as a bearer token must be; a
 * service account's token comes in the token stage.
 */

static ngx_int_t
ngx_http_unico_selfie_credentials(ngx_http_request_t *r,
    ngx_http_unico_selfie_loc_conf_t *uslcf, ngx_http_unico_selfie_ctx_t *ctx)
{
    u_char     *p;
    ngx_int_t   rc;
    ngx_str_t   token;

    if (uslcf->account) {
        return NGX_OK;
    }

    /* the script engine logs the values it evaluates at debug level */

    ngx_http_unico_selfie_quiet(r, &ctx->fetch);
    rc = ngx_http_complex_value(r, uslcf->token, &token);
    ngx_http_unico_selfie_unquiet(r, &ctx->fetch);

    if (rc != NGX_OK) {
        ctx->outcome = NGX_HTTP_UNICO_INTERNAL;
        return NGX_ERROR;
    }

    if (token.len == 0) {
        ctx->outcome = NGX_HTTP_UNICO_NO_TOKEN;
        return NGX_ERROR;
    }

    /*
     * RFC 6750 b64token: the value goes into a request header, so anything
     * else (CR, LF, blanks, controls) is refused rather than forwarded.
     */

    if (!unico_bearer_token_valid(token.data, token.len)) {
        ctx->outcome = NGX_HTTP_UNICO_BAD_TOKEN;
        return NGX_ERROR;
    }

    ctx->authorization.len = ngx_http_unico_selfie_bearer.len + token.len;
    ctx->authorization.data = ngx_pnalloc(r->pool, ctx->authorization.len);
    if (ctx->authorization.data == NULL) {
        ctx->outcome = NGX_HTTP_UNICO_INTERNAL;
        return NGX_ERROR;
    }

    p = ngx_cpymem(ctx->authorization.data, ngx_http_unico_selfie_bearer.data,
                   ngx_http_unico_selfie_bearer.len);
    ngx_memcpy(p, token.data, token.len);

    return NGX_OK;
}


/*
 * The processId in lower case and 16 bytes of SHA-256 over the API prefix
 * and the credentials (the account's key fingerprint, or the token): the
 * same across reloads, never the same for two tenants.  The digest of an
 * account or of a token written in the configuration is made once, when
 * the configuration loads.
 */

static ngx_int_t
ngx_http_unico_selfie_key(ngx_http_request_t *r,
    ngx_http_unico_selfie_loc_conf_t *uslcf, ngx_http_unico_selfie_ctx_t *ctx)
{
    u_char  *id;
    u_char   digest[UNICO_SELFIE_KEY_LEN - UNICO_UUID_LEN];

    id = uslcf->credentials_id;

    if (!uslcf->credentials_fixed) {
        if (ngx_http_unico_selfie_credentials_id(&uslcf->api, 0,
                                                 &ctx->authorization, digest)
            != NGX_OK)
        {
            ctx->outcome = NGX_HTTP_UNICO_INTERNAL;
            return NGX_ERROR;
        }

        id = digest;
    }

    ngx_strlow(ctx->key, ctx->process_id.data, UNICO_UUID_LEN);
    ngx_memcpy(ctx->key + UNICO_UUID_LEN, id,
               UNICO_SELFIE_KEY_LEN - UNICO_UUID_LEN);

    return NGX_OK;
}


/* the digest itself: out has UNICO_SELFIE_KEY_LEN - UNICO_UUID_LEN bytes */

ngx_int_t
ngx_http_unico_selfie_credentials_id(ngx_str_t *api, ngx_uint_t account,
    ngx_str_t *cred, u_char *out)
{
    u_char        md[EVP_MAX_MD_SIZE];
    unsigned int  n;
    EVP_MD_CTX   *mdctx;

    mdctx = EVP_MD_CTX_new();
    if (mdctx == NULL) {
        return NGX_ERROR;
    }

    n = 0;

    if (EVP_DigestInit_ex(mdctx, EVP_sha256(), NULL) != 1
        || EVP_DigestUpdate(mdctx, api->data, api->len) != 1
        || EVP_DigestUpdate(mdctx, account ? "\na" : "\nt", 2) != 1
        || EVP_DigestUpdate(mdctx, cred->data, cred->len) != 1
        || EVP_DigestFinal_ex(mdctx, md, &n) != 1
        || n < UNICO_SELFIE_KEY_LEN - UNICO_UUID_LEN)
    {
        EVP_MD_CTX_free(mdctx);
        return NGX_ERROR;
    }

    EVP_MD_CTX_free(mdctx);

    ngx_memcpy(out, md, UNICO_SELFIE_KEY_LEN - UNICO_UUID_LEN);

    return NGX_OK;
}
