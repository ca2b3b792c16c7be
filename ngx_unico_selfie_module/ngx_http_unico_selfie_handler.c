
/*
 * Copyright (C) ngx_unico_selfie_module authors
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * The request flow: validate -> subrequest to Unico -> collect its answer
 * in a body filter -> decode -> respond.
 *
 * The subrequest's output never reaches the client: the header and body
 * filters below sit above the postpone filter, recognise the module's own
 * subrequest by its context, record the status and copy the body into one
 * buffer bounded by unico_selfie_max_size.  This replaces
 * NGX_HTTP_SUBREQUEST_IN_MEMORY, whose buffer is sized by
 * subrequest_output_buffer_size of another location.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_unico_selfie.h"
#include "unico_selfie_payload.h"
#include "unico_selfie_jwt.h"


typedef struct {
    ngx_str_t    name;          /* $unico_selfie_reason */
    ngx_uint_t   status;        /* what the client gets */
    ngx_uint_t   level;         /* gateway faults: error, client's: info */
    char        *text;          /* the log line */
} ngx_http_unico_selfie_outcome_t;


static ngx_int_t ngx_http_unico_selfie_token(ngx_http_request_t *r,
    ngx_http_unico_selfie_loc_conf_t *uslcf, ngx_http_unico_selfie_ctx_t *ctx);
static ngx_int_t ngx_http_unico_selfie_retry(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx);
static ngx_int_t ngx_http_unico_selfie_post_subrequest(ngx_http_request_t *r,
    void *data, ngx_int_t rc);
static void ngx_http_unico_selfie_resume(ngx_http_request_t *r);
static ngx_http_unico_selfie_outcome_e ngx_http_unico_selfie_classify(
    ngx_http_unico_selfie_ctx_t *ctx);
static ngx_int_t ngx_http_unico_selfie_respond(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx);
static ngx_int_t ngx_http_unico_selfie_send_image(ngx_http_request_t *r,
    unico_image_t *image);
static ngx_int_t ngx_http_unico_selfie_add_header(ngx_http_request_t *r,
    ngx_str_t *key, ngx_str_t *value);
static ngx_int_t ngx_http_unico_selfie_header_filter(ngx_http_request_t *r);
static ngx_int_t ngx_http_unico_selfie_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in);
static ngx_int_t ngx_http_unico_selfie_collect(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx, ngx_buf_t *b);
static void ngx_http_unico_selfie_cleanup(void *data);


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;
static ngx_http_output_body_filter_pt    ngx_http_next_body_filter;


#define ngx_http_unico_outcome(kw, st, lv, tx)                               \
    { ngx_string(kw), st, lv, tx }

/* The status table of docs/status-codes.md, in ngx_http_unico_selfie_outcome_e
 * order. */

static ngx_http_unico_selfie_outcome_t  ngx_http_unico_selfie_outcomes[] = {
    ngx_http_unico_outcome("ok", NGX_HTTP_OK, NGX_LOG_INFO,
                           "served"),
    ngx_http_unico_outcome("bad_method", NGX_HTTP_NOT_ALLOWED, NGX_LOG_INFO,
                           "method is not GET or HEAD"),
    ngx_http_unico_outcome("bad_process_id", NGX_HTTP_BAD_REQUEST,
                           NGX_LOG_INFO,
                           "processId is not a canonical UUID"),
    ngx_http_unico_outcome("no_signature", NGX_HTTP_FORBIDDEN, NGX_LOG_INFO,
                           "the URL has no \"expires\" or no \"sig\""),
    ngx_http_unico_outcome("bad_signature", NGX_HTTP_FORBIDDEN, NGX_LOG_INFO,
                           "the URL's signature is malformed or wrong"),
    ngx_http_unico_outcome("signature_expired", NGX_HTTP_FORBIDDEN,
                           NGX_LOG_INFO,
                           "the signed URL has expired"),
    ngx_http_unico_outcome("no_token", NGX_HTTP_BAD_GATEWAY, NGX_LOG_ERR,
                           "unico_selfie_token is empty"),
    ngx_http_unico_outcome("bad_token", NGX_HTTP_BAD_GATEWAY, NGX_LOG_ERR,
                           "unico_selfie_token has characters not allowed "
                           "in a bearer token"),
    ngx_http_unico_outcome("unico_400", NGX_HTTP_BAD_REQUEST, NGX_LOG_INFO,
                           "Unico refused the processId (400)"),
    ngx_http_unico_outcome("unico_401", NGX_HTTP_BAD_GATEWAY, NGX_LOG_ERR,
                           "Unico refused the gateway's token (401)"),
    ngx_http_unico_outcome("unico_403", NGX_HTTP_FORBIDDEN, NGX_LOG_ERR,
                           "Unico denied access to the selfie (403)"),
    ngx_http_unico_outcome("unico_404", NGX_HTTP_NOT_FOUND, NGX_LOG_INFO,
                           "Unico has no selfie for the process (404)"),
    ngx_http_unico_outcome("unico_429", NGX_HTTP_SERVICE_UNAVAILABLE,
                           NGX_LOG_ERR,
                           "Unico rate limit reached (429)"),
    ngx_http_unico_outcome("unico_5xx", NGX_HTTP_BAD_GATEWAY, NGX_LOG_ERR,
                           "Unico failed"),
    ngx_http_unico_outcome("unico_status", NGX_HTTP_BAD_GATEWAY, NGX_LOG_ERR,
                           "Unico answered an unexpected status"),
    ngx_http_unico_outcome("upstream_error", NGX_HTTP_BAD_GATEWAY,
                           NGX_LOG_ERR,
                           "Unico could not be reached or answered no HTTP"),
    ngx_http_unico_outcome("upstream_timeout", NGX_HTTP_GATEWAY_TIME_OUT,
                           NGX_LOG_ERR,
                           "Unico timed out"),
    ngx_http_unico_outcome("truncated", NGX_HTTP_BAD_GATEWAY, NGX_LOG_ERR,
                           "Unico's response ended early"),
    ngx_http_unico_outcome("response_too_large", NGX_HTTP_BAD_GATEWAY,
                           NGX_LOG_ERR,
                           "Unico's response is larger than "
                           "unico_selfie_max_size allows"),
    ngx_http_unico_outcome("encoded", NGX_HTTP_BAD_GATEWAY, NGX_LOG_ERR,
                           "Unico's response has a Content-Encoding"),
    ngx_http_unico_outcome("file_buffer", NGX_HTTP_BAD_GATEWAY, NGX_LOG_ERR,
                           "Unico's response was buffered to a file: set "
                           "\"proxy_max_temp_file_size 0\" in the API "
                           "location"),
    ngx_http_unico_outcome("bad_json", NGX_HTTP_BAD_GATEWAY, NGX_LOG_ERR,
                           "Unico's response is not valid JSON"),
    ngx_http_unico_outcome("not_object", NGX_HTTP_BAD_GATEWAY, NGX_LOG_ERR,
                           "Unico's response is not a JSON object"),
    ngx_http_unico_outcome("missing_field", NGX_HTTP_BAD_GATEWAY,
                           NGX_LOG_ERR,
                           "Unico's response lacks fileContents or "
                           "contentType"),
    ngx_http_unico_outcome("wrong_type", NGX_HTTP_BAD_GATEWAY, NGX_LOG_ERR,
                           "Unico's fileContents or contentType is not "
                           "a string"),
    ngx_http_unico_outcome("duplicate_field", NGX_HTTP_BAD_GATEWAY,
                           NGX_LOG_ERR,
                           "Unico's response repeats a field"),
    ngx_http_unico_outcome("bad_content_type", NGX_HTTP_BAD_GATEWAY,
                           NGX_LOG_ERR,
                           "Unico's contentType is not image/jpeg or "
                           "image/png"),
    ngx_http_unico_outcome("bad_base64", NGX_HTTP_BAD_GATEWAY, NGX_LOG_ERR,
                           "Unico's fileContents is not base64"),
    ngx_http_unico_outcome("empty_image", NGX_HTTP_BAD_GATEWAY, NGX_LOG_ERR,
                           "Unico's fileContents is empty"),
    ngx_http_unico_outcome("image_mismatch", NGX_HTTP_BAD_GATEWAY,
                           NGX_LOG_ERR,
                           "Unico's image is not of the contentType "
                           "it claims"),
    ngx_http_unico_outcome("image_too_large", NGX_HTTP_BAD_GATEWAY,
                           NGX_LOG_ERR,
                           "Unico's image is larger than "
                           "unico_selfie_max_size"),
    ngx_http_unico_outcome("token_failed", NGX_HTTP_BAD_GATEWAY, NGX_LOG_ERR,
                           "the token endpoint did not give a token"),
    ngx_http_unico_outcome("token_unavailable", NGX_HTTP_BAD_GATEWAY,
                           NGX_LOG_ERR,
                           "no token: the token endpoint failed recently, "
                           "backing off"),
    ngx_http_unico_outcome("token_timeout", NGX_HTTP_GATEWAY_TIME_OUT,
                           NGX_LOG_ERR,
                           "no token: waited too long for the refresh"),
    ngx_http_unico_outcome("over_budget", NGX_HTTP_SERVICE_UNAVAILABLE,
                           NGX_LOG_ERR,
                           "the Unico call budget is spent"),
    ngx_http_unico_outcome("internal", NGX_HTTP_INTERNAL_SERVER_ERROR,
                           NGX_LOG_ERR,
                           "internal error")
};


/* unico_payload_rc_e -> outcome */

static ngx_http_unico_selfie_outcome_e  ngx_http_unico_selfie_payload_map[] = {
    NGX_HTTP_UNICO_OK,                  /* UNICO_PAYLOAD_OK */
    NGX_HTTP_UNICO_BAD_JSON,            /* UNICO_PAYLOAD_BAD_JSON */
    NGX_HTTP_UNICO_NOT_OBJECT,          /* UNICO_PAYLOAD_NOT_OBJECT */
    NGX_HTTP_UNICO_MISSING_FIELD,       /* UNICO_PAYLOAD_MISSING_FIELD */
    NGX_HTTP_UNICO_WRONG_TYPE,          /* UNICO_PAYLOAD_WRONG_TYPE */
    NGX_HTTP_UNICO_DUPLICATE_FIELD,     /* UNICO_PAYLOAD_DUPLICATE_FIELD */
    NGX_HTTP_UNICO_BAD_CONTENT_TYPE,    /* UNICO_PAYLOAD_BAD_CONTENT_TYPE */
    NGX_HTTP_UNICO_BAD_BASE64,          /* UNICO_PAYLOAD_BAD_BASE64 */
    NGX_HTTP_UNICO_EMPTY_IMAGE,         /* UNICO_PAYLOAD_EMPTY_IMAGE */
    NGX_HTTP_UNICO_IMAGE_MISMATCH,      /* UNICO_PAYLOAD_IMAGE_MISMATCH */
    NGX_HTTP_UNICO_IMAGE_TOO_LARGE,     /* UNICO_PAYLOAD_TOO_LARGE */
    NGX_HTTP_UNICO_INTERNAL             /* UNICO_PAYLOAD_NO_MEMORY */
};


static ngx_str_t  ngx_http_unico_selfie_bearer = ngx_string("Bearer ");
static ngx_str_t  ngx_http_unico_selfie_path = ngx_string("/client/v1/process/");
static ngx_str_t  ngx_http_unico_selfie_suffix = ngx_string("/selfie");


ngx_int_t
ngx_http_unico_selfie_handler(ngx_http_request_t *r)
{
    ngx_int_t                          rc;
    ngx_str_t                          id;
    ngx_pool_cleanup_t                *cln;
    ngx_http_unico_selfie_ctx_t       *ctx;
    ngx_http_unico_selfie_loc_conf_t  *uslcf;

    if (r != r->main) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "unico selfie: \"unico_selfie\" does not serve "
                      "subrequests: check \"unico_selfie_api\"");
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx = ngx_http_unico_selfie_get_ctx(r);
    if (ctx != NULL) {
        /* an internal redirect (error_page) back into this location */
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "unico selfie: location entered twice in one request");
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_unico_selfie_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->main = ctx;

    /* the context survives error_page redirects for the log variables */

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_unico_selfie_cleanup;
    cln->data = ctx;

    ngx_http_set_ctx(r, ctx, ngx_http_unico_selfie_module);

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return ngx_http_unico_selfie_fail(r, ctx, NGX_HTTP_UNICO_BAD_METHOD);
    }

    uslcf = ngx_http_get_module_loc_conf(r, ngx_http_unico_selfie_module);

    if (ngx_http_complex_value(r, uslcf->process_id, &id) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (!unico_uuid_valid(id.data, id.len)) {
        return ngx_http_unico_selfie_fail(r, ctx,
                                          NGX_HTTP_UNICO_BAD_PROCESS_ID);
    }

    ctx->process_id = id;

    /* a signed URL is checked before anything is asked of Unico */

    if (uslcf->signature_keys) {
        ctx->outcome = ngx_http_unico_selfie_signature_check(r, uslcf, &id);

        if (ctx->outcome != NGX_HTTP_UNICO_OK) {
            return ngx_http_unico_selfie_fail(r, ctx, ctx->outcome);
        }
    }

    if (ngx_http_discard_request_body(r) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_http_unico_selfie_proceed(r, ctx);

    if (rc == NGX_HTTP_UNICO_WAITING) {
        /* nothing else wakes a content handler: see the post_subrequest */
        r->main->count++;
        return NGX_DONE;
    }

    return rc;
}


/*
 * A valid request: from the cache, or with the call of a request already
 * asking Unico for the same selfie, or with a call of its own.
 * NGX_HTTP_UNICO_WAITING while it waits, else what to finalize it with.
 */

ngx_int_t
ngx_http_unico_selfie_proceed(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx)
{
    ngx_int_t                          rc;
    ngx_http_unico_selfie_loc_conf_t  *uslcf;

    uslcf = ngx_http_get_module_loc_conf(r, ngx_http_unico_selfie_module);

    if (ngx_http_unico_selfie_cache_get(r, ctx, &ctx->image) == NGX_OK) {
        ctx->cached = 1;
        return ngx_http_unico_selfie_deliver(r, ctx);
    }

    if (ngx_http_unico_selfie_coalesce_join(r, ctx) == NGX_AGAIN) {
        return NGX_HTTP_UNICO_WAITING;
    }

    if (uslcf->account) {
        rc = ngx_http_unico_selfie_account_acquire(r, ctx);

    } else {
        rc = ngx_http_unico_selfie_token(r, uslcf, ctx);
    }

    if (rc == NGX_OK) {
        return ngx_http_unico_selfie_start(r, ctx);
    }

    if (rc == NGX_ERROR) {
        return ngx_http_unico_selfie_fail(r, ctx, ctx->outcome);
    }

    return NGX_HTTP_UNICO_WAITING;
}


/* A follower's or a cache hit's answer: ctx->outcome and ctx->image. */

ngx_int_t
ngx_http_unico_selfie_deliver(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx)
{
    if (ctx->outcome != NGX_HTTP_UNICO_OK) {
        return ngx_http_unico_selfie_fail(r, ctx, ctx->outcome);
    }

    ctx->image_len = ctx->image.len;

    return ngx_http_unico_selfie_send_image(r, &ctx->image);
}


/*
 * Where a request waiting for a token goes on: rc is NGX_OK with
 * ctx->authorization set, or NGX_ERROR with ctx->outcome.
 */

void
ngx_http_unico_selfie_continue(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx, ngx_int_t rc)
{
    if (rc == NGX_OK) {
        rc = ngx_http_unico_selfie_start(r, ctx);

    } else {
        rc = ngx_http_unico_selfie_fail(r, ctx, ctx->outcome);
    }

    if (rc == NGX_HTTP_UNICO_WAITING) {
        return;
    }

    r->write_event_handler = ngx_http_request_empty_handler;

    ngx_http_finalize_request(r, rc);
}


static ngx_int_t
ngx_http_unico_selfie_token(ngx_http_request_t *r,
    ngx_http_unico_selfie_loc_conf_t *uslcf, ngx_http_unico_selfie_ctx_t *ctx)
{
    u_char     *p;
    ngx_int_t   rc;
    ngx_str_t   token;

    /* the script engine logs the values it evaluates at debug level */

    ngx_http_unico_selfie_quiet(r, ctx);
    rc = ngx_http_complex_value(r, uslcf->token, &token);
    ngx_http_unico_selfie_unquiet(r, ctx);

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


/* Sends the selfie subrequest: NGX_HTTP_UNICO_WAITING while in flight. */

ngx_int_t
ngx_http_unico_selfie_start(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx)
{
    u_char                            *p;
    size_t                             b64;
    ngx_int_t                          rc;
    ngx_str_t                          uri;
    ngx_http_request_t                *sr;
    ngx_http_post_subrequest_t        *ps;
    ngx_http_unico_selfie_loc_conf_t  *uslcf;

    /* within the Unico call budget, if there is one */

    rc = ngx_http_unico_selfie_budget_take(r, ctx);

    if (rc == NGX_AGAIN) {
        return NGX_HTTP_UNICO_WAITING;
    }

    if (rc == NGX_DECLINED) {
        return ngx_http_unico_selfie_fail(r, ctx, NGX_HTTP_UNICO_OVER_BUDGET);
    }

    uslcf = ngx_http_get_module_loc_conf(r, ngx_http_unico_selfie_module);

    /* the processId is a validated UUID: nothing in it needs escaping */

    uri.len = uslcf->api.len + ngx_http_unico_selfie_path.len
              + ctx->process_id.len + ngx_http_unico_selfie_suffix.len;

    uri.data = ngx_pnalloc(r->pool, uri.len);
    if (uri.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_cpymem(uri.data, uslcf->api.data, uslcf->api.len);
    p = ngx_cpymem(p, ngx_http_unico_selfie_path.data,
                   ngx_http_unico_selfie_path.len);
    p = ngx_cpymem(p, ctx->process_id.data, ctx->process_id.len);
    ngx_memcpy(p, ngx_http_unico_selfie_suffix.data,
               ngx_http_unico_selfie_suffix.len);

    /*
     * The JSON envelope of the largest image accepted: its base64, plus
     * room for escapes (\/, \n line breaks) and the other fields.
     */

    b64 = (uslcf->max_size + 2) / 3 * 4;
    ctx->body_max = b64 + b64 / 8 + 4096;

    ps = ngx_palloc(r->pool, sizeof(ngx_http_post_subrequest_t));
    if (ps == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ps->handler = ngx_http_unico_selfie_post_subrequest;
    ps->data = ctx;

    if (ngx_http_subrequest(r, &uri, NULL, &sr, ps,
                            NGX_HTTP_SUBREQUEST_WAITED)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->subrequest = sr;
    ctx->waiting = 1;
    ctx->start = ngx_current_msec;

    ngx_http_set_ctx(sr, ctx, ngx_http_unico_selfie_module);

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "unico selfie: subrequest \"%V\"", &uri);

    /*
     * The proxy logs the request it sends to Unico, Authorization and all,
     * at debug level: keep the connection's debug log quiet until Unico's
     * headers arrive or the subrequest ends.
     */

    ngx_http_unico_selfie_quiet(r, ctx);

    return NGX_HTTP_UNICO_WAITING;
}


/*
 * The common start of the module's post-subrequest handlers (the selfie's
 * and the token's): NGX_DECLINED on a second call for the same subrequest,
 * which comes after an error page of its own (never produced here, as the
 * first call returns NGX_OK, but a proxy_intercept_errors location may
 * have one).
 */

ngx_int_t
ngx_http_unico_selfie_fetch_done(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx, ngx_int_t rc)
{
    if (ctx->done) {
        return NGX_DECLINED;
    }

    ctx->done = 1;
    ctx->upstream_time = ngx_current_msec - ctx->start;

    ngx_http_unico_selfie_unquiet(r, ctx);

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "unico selfie: subrequest done rc:%i status:%ui last:%d",
                   rc, ctx->status, ctx->last);

    if (rc == NGX_HTTP_GATEWAY_TIME_OUT) {
        ctx->timed_out = 1;
    }

    return NGX_OK;
}


/* ... and their common end: what the subrequest is finalized with */

ngx_int_t
ngx_http_unico_selfie_fetch_rc(ngx_http_request_t *r, ngx_int_t rc)
{
    if (rc == NGX_HTTP_REQUEST_TIME_OUT
        || rc == NGX_HTTP_CLIENT_CLOSED_REQUEST
        || r->connection->error)
    {
        /* the client is gone: let nginx terminate the whole request */
        return rc;
    }

    /*
     * Everything else, an upstream NGX_ERROR included, is the parent's to
     * answer: finish the subrequest quietly, as OpenResty's
     * ngx.location.capture does, instead of terminating the main request
     * or rendering an error page nobody reads.
     */

    return NGX_OK;
}


static ngx_int_t
ngx_http_unico_selfie_post_subrequest(ngx_http_request_t *r, void *data,
    ngx_int_t rc)
{
    ngx_http_unico_selfie_ctx_t  *ctx = data;

    ngx_http_request_t  *pr;

    if (ngx_http_unico_selfie_fetch_done(r, ctx, rc) != NGX_OK) {
        return rc;
    }

    if (ctx->status == 0 && rc >= NGX_HTTP_SPECIAL_RESPONSE
        && ctx->outcome == NGX_HTTP_UNICO_OK)
    {
        ctx->outcome = ctx->timed_out ? NGX_HTTP_UNICO_UPSTREAM_TIMEOUT
                                      : NGX_HTTP_UNICO_UPSTREAM_ERROR;
    }

    pr = r->parent;
    pr->write_event_handler = ngx_http_unico_selfie_resume;

    return ngx_http_unico_selfie_fetch_rc(r, rc);
}


static void
ngx_http_unico_selfie_resume(ngx_http_request_t *r)
{
    ngx_int_t                     rc;
    ngx_http_unico_selfie_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_unico_selfie_module);

    if (ctx == NULL || !ctx->done || !ctx->waiting) {
        return;
    }

    ctx->waiting = 0;

    rc = ngx_http_unico_selfie_retry(r, ctx);

    if (rc == NGX_HTTP_UNICO_WAITING) {
        return;
    }

    r->write_event_handler = ngx_http_request_empty_handler;

    if (rc == NGX_DECLINED) {
        rc = ngx_http_unico_selfie_respond(r, ctx);
    }

    ngx_http_finalize_request(r, rc);
}


/*
 * Unico's 401 to a service account's token: that token is dropped, and the
 * request tries once more with a new one.  NGX_DECLINED: no retry.
 */

static ngx_int_t
ngx_http_unico_selfie_retry(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx)
{
    ngx_int_t                          rc;
    ngx_http_unico_selfie_loc_conf_t  *uslcf;

    uslcf = ngx_http_get_module_loc_conf(r, ngx_http_unico_selfie_module);

    if (ctx->status != NGX_HTTP_UNAUTHORIZED || uslcf->account == NULL
        || ctx->retried || ctx->outcome != NGX_HTTP_UNICO_OK)
    {
        return NGX_DECLINED;
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "unico selfie: Unico refused the service account's token, "
                  "retrying with a new one, processId: \"%V\"",
                  &ctx->process_id);

    ctx->retried = 1;

    ngx_http_unico_selfie_account_reject(r, ctx);

    /* forget the first answer */

    if (ctx->body) {
        ngx_pfree(r->pool, ctx->body);
    }

    ctx->subrequest = NULL;
    ctx->status = 0;
    ctx->retry_after.len = 0;
    ctx->body = NULL;
    ctx->body_len = 0;
    ctx->body_size = 0;
    ctx->done = 0;
    ctx->last = 0;
    ctx->timed_out = 0;
    ctx->authorization.len = 0;

    rc = ngx_http_unico_selfie_account_acquire(r, ctx);

    if (rc == NGX_OK) {
        return ngx_http_unico_selfie_start(r, ctx);
    }

    if (rc == NGX_ERROR) {
        return ngx_http_unico_selfie_fail(r, ctx, ctx->outcome);
    }

    return NGX_HTTP_UNICO_WAITING;
}


static ngx_http_unico_selfie_outcome_e
ngx_http_unico_selfie_classify(ngx_http_unico_selfie_ctx_t *ctx)
{
    if (ctx->outcome != NGX_HTTP_UNICO_OK) {
        return ctx->outcome;
    }

    switch (ctx->status) {

    case NGX_HTTP_OK:
        break;

    case 0:
        return ctx->timed_out ? NGX_HTTP_UNICO_UPSTREAM_TIMEOUT
                              : NGX_HTTP_UNICO_UPSTREAM_ERROR;

    case NGX_HTTP_BAD_REQUEST:
        return NGX_HTTP_UNICO_UNICO_400;

    case NGX_HTTP_UNAUTHORIZED:
        return NGX_HTTP_UNICO_UNICO_401;

    case NGX_HTTP_FORBIDDEN:
        return NGX_HTTP_UNICO_UNICO_403;

    case NGX_HTTP_NOT_FOUND:
        return NGX_HTTP_UNICO_UNICO_404;

    case NGX_HTTP_TOO_MANY_REQUESTS:
        return NGX_HTTP_UNICO_UNICO_429;

    default:
        return (ctx->status >= 500 && ctx->status <= 599)
               ? NGX_HTTP_UNICO_UNICO_5XX : NGX_HTTP_UNICO_UNICO_STATUS;
    }

    if (!ctx->last) {
        return ctx->timed_out ? NGX_HTTP_UNICO_UPSTREAM_TIMEOUT
                              : NGX_HTTP_UNICO_TRUNCATED;
    }

    return NGX_HTTP_UNICO_OK;
}


static ngx_int_t
ngx_http_unico_selfie_respond(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx)
{
    unico_image_t                      image;
    unico_payload_rc_e                 prc;
    ngx_http_unico_selfie_outcome_e    outcome;
    ngx_http_unico_selfie_loc_conf_t  *uslcf;

    outcome = ngx_http_unico_selfie_classify(ctx);

    if (outcome != NGX_HTTP_UNICO_OK) {
        return ngx_http_unico_selfie_fail(r, ctx, outcome);
    }

    uslcf = ngx_http_get_module_loc_conf(r, ngx_http_unico_selfie_module);

    prc = unico_payload_parse(ctx->body, ctx->body_len, uslcf->max_size,
                              &image);

    if (prc != UNICO_PAYLOAD_OK) {
        if ((size_t) prc >= sizeof(ngx_http_unico_selfie_payload_map)
                            / sizeof(ngx_http_unico_selfie_payload_map[0]))
        {
            return ngx_http_unico_selfie_fail(r, ctx,
                                              NGX_HTTP_UNICO_INTERNAL);
        }

        return ngx_http_unico_selfie_fail(r, ctx,
                                        ngx_http_unico_selfie_payload_map[prc]);
    }

    ctx->image_len = image.len;

    ngx_http_unico_selfie_cache_put(r, ctx, &image);
    ngx_http_unico_selfie_coalesce_done(ctx, NGX_HTTP_UNICO_OK, &image);

    return ngx_http_unico_selfie_send_image(r, &image);
}


static ngx_int_t
ngx_http_unico_selfie_send_image(ngx_http_request_t *r, unico_image_t *image)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;
    const char   *mime;

    static ngx_str_t  nosniff_key = ngx_string("X-Content-Type-Options");
    static ngx_str_t  nosniff = ngx_string("nosniff");

    mime = unico_image_mime(image->type);

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = image->len;
    r->headers_out.content_type.len = ngx_strlen(mime);
    r->headers_out.content_type.data = (u_char *) mime;
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    if (ngx_http_unico_selfie_add_header(r, &nosniff_key, &nosniff) != NGX_OK
        || ngx_http_unico_selfie_set_cache_headers(r, image->data, image->len)
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->pos = image->data;
    b->last = image->data + image->len;
    b->memory = 1;
    b->last_buf = 1;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


/* Logs the outcome once and returns the status the client gets. */

ngx_int_t
ngx_http_unico_selfie_fail(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx, ngx_http_unico_selfie_outcome_e outcome)
{
    ngx_http_unico_selfie_outcome_t  *o;

    static ngx_str_t  allow_key = ngx_string("Allow");
    static ngx_str_t  allow = ngx_string("GET, HEAD");
    static ngx_str_t  retry_key = ngx_string("Retry-After");

    ctx->outcome = outcome;
    o = &ngx_http_unico_selfie_outcomes[outcome];

    /* the requests waiting for this one's call share its failure */

    ngx_http_unico_selfie_coalesce_done(ctx, outcome, NULL);

    if (ctx->status) {
        ngx_log_error(o->level, r->connection->log, 0,
                      "unico selfie: %s (reason: %V, Unico status: %ui), "
                      "processId: \"%V\"",
                      o->text, &o->name, ctx->status, &ctx->process_id);

    } else {
        ngx_log_error(o->level, r->connection->log, 0,
                      "unico selfie: %s (reason: %V), processId: \"%V\"",
                      o->text, &o->name, &ctx->process_id);
    }

    if (outcome == NGX_HTTP_UNICO_BAD_METHOD) {
        if (ngx_http_unico_selfie_add_header(r, &allow_key, &allow)
            != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    if ((outcome == NGX_HTTP_UNICO_UNICO_429
         || outcome == NGX_HTTP_UNICO_OVER_BUDGET)
        && ctx->retry_after.len)
    {
        if (ngx_http_unico_selfie_add_header(r, &retry_key, &ctx->retry_after)
            != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    return o->status;
}


static ngx_int_t
ngx_http_unico_selfie_add_header(ngx_http_request_t *r, ngx_str_t *key,
    ngx_str_t *value)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key = *key;
    h->value = *value;
#if (nginx_version >= 1023000)
    h->next = NULL;
#endif

    return NGX_OK;
}


const ngx_str_t *
ngx_http_unico_selfie_outcome_name(ngx_http_unico_selfie_outcome_e outcome)
{
    return &ngx_http_unico_selfie_outcomes[outcome].name;
}


/*
 * The module context, also after an internal redirect (error_page) has
 * cleared r->ctx: it is found again through the pool cleanup it registered.
 */

ngx_http_unico_selfie_ctx_t *
ngx_http_unico_selfie_get_ctx(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t           *cln;
    ngx_http_unico_selfie_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_unico_selfie_module);

    if (ctx != NULL || r != r->main || !r->internal) {
        return ctx;
    }

    for (cln = r->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler == ngx_http_unico_selfie_cleanup) {
            return cln->data;
        }
    }

    return NULL;
}


static void
ngx_http_unico_selfie_cleanup(void *data)
{
    ngx_http_unico_selfie_ctx_t  *ctx = data;

    /* the body lives in the request pool and goes with it */

    ngx_http_unico_selfie_coalesce_cleanup(ctx);
    ngx_http_unico_selfie_account_cleanup(ctx);
}


/*
 * nginx's debug log prints header and variable values: while the token is
 * being evaluated or sent, the connection's debug bits are masked.
 */

void
ngx_http_unico_selfie_quiet(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx)
{
#if (NGX_DEBUG)
    ngx_log_t                    *log;
    ngx_http_unico_selfie_ctx_t  *mctx;

    /* the selfie and a token subrequest may overlap: count the holders */

    if (ctx->quiet) {
        return;
    }

    log = r->connection->log;
    mctx = ctx->main;

    ctx->quiet = 1;

    if (mctx->quiet_count++ > 0) {
        return;
    }

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, log, 0,
                   "unico selfie: debug log paused while the token is used");

    mctx->log_level = log->log_level;
    log->log_level &= ~NGX_LOG_DEBUG_ALL;
#endif
}


void
ngx_http_unico_selfie_unquiet(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx)
{
#if (NGX_DEBUG)
    ngx_http_unico_selfie_ctx_t  *mctx;

    if (!ctx->quiet) {
        return;
    }

    mctx = ctx->main;
    ctx->quiet = 0;

    if (--mctx->quiet_count > 0) {
        return;
    }

    r->connection->log->log_level = mctx->log_level;

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "unico selfie: debug log resumed");
#endif
}


ngx_int_t
ngx_http_unico_selfie_filter_init(ngx_conf_t *cf)
{
    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_unico_selfie_header_filter;

    ngx_http_next_body_filter = ngx_http_top_body_filter;
    ngx_http_top_body_filter = ngx_http_unico_selfie_body_filter;

    return NGX_OK;
}


static ngx_int_t
ngx_http_unico_selfie_header_filter(ngx_http_request_t *r)
{
    off_t                         len;
    ngx_uint_t                    i;
    ngx_list_part_t              *part;
    ngx_table_elt_t              *h;
    ngx_http_unico_selfie_ctx_t  *ctx;

    if (r == r->main) {
        return ngx_http_next_header_filter(r);
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_unico_selfie_module);

    if (ctx == NULL || ctx->subrequest != r) {
        return ngx_http_next_header_filter(r);
    }

    /* the module's own subrequest: nothing of it goes further */

    ngx_http_unico_selfie_unquiet(r, ctx);

    ctx->status = r->headers_out.status;

    /* file buffers are read into memory by the copy filter */

    r->filter_need_in_memory = 1;

    if (ctx->status == NGX_HTTP_TOO_MANY_REQUESTS) {
        part = &r->headers_out.headers.part;
        h = part->elts;

        for (i = 0; /* void */; i++) {

            if (i >= part->nelts) {
                if (part->next == NULL) {
                    break;
                }

                part = part->next;
                h = part->elts;
                i = 0;
            }

            if (h[i].hash == 0
                || h[i].key.len != sizeof("Retry-After") - 1
                || ngx_strncasecmp(h[i].key.data, (u_char *) "Retry-After",
                                   sizeof("Retry-After") - 1)
                   != 0)
            {
                continue;
            }

            /* delay-seconds or an HTTP-date: nothing else passes on */

            if (h[i].value.len > 0 && h[i].value.len <= 64
                && ngx_strlchr(h[i].value.data,
                               h[i].value.data + h[i].value.len, '\r') == NULL
                && ngx_strlchr(h[i].value.data,
                               h[i].value.data + h[i].value.len, '\n') == NULL)
            {
                ctx->retry_after = h[i].value;
            }

            break;
        }
    }

    /* a token request's error answer is read too: it names the error */

    if (ctx->status != NGX_HTTP_OK && ctx->token_body.len == 0) {
        return NGX_OK;
    }

    if (r->headers_out.content_encoding
        && r->headers_out.content_encoding->value.len
        && ngx_strncasecmp(r->headers_out.content_encoding->value.data,
                           (u_char *) "identity", 8) != 0)
    {
        ctx->outcome = NGX_HTTP_UNICO_ENCODED;
        return NGX_ERROR;
    }

    len = r->headers_out.content_length_n;

    if (len > (off_t) ctx->body_max) {
        ctx->outcome = NGX_HTTP_UNICO_RESPONSE_TOO_LARGE;
        return NGX_ERROR;
    }

    /* with a Content-Length the body is collected without a reallocation */

    if (len > 0) {
        ctx->body = ngx_palloc(r->pool, (size_t) len);
        if (ctx->body == NULL) {
            ctx->outcome = NGX_HTTP_UNICO_INTERNAL;
            return NGX_ERROR;
        }

        ctx->body_size = (size_t) len;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_unico_selfie_body_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    ngx_int_t                     rc;
    ngx_buf_t                    *b;
    ngx_chain_t                  *cl;
    ngx_http_unico_selfie_ctx_t  *ctx;

    if (r == r->main) {
        return ngx_http_next_body_filter(r, in);
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_unico_selfie_module);

    if (ctx == NULL || ctx->subrequest != r) {
        return ngx_http_next_body_filter(r, in);
    }

    rc = NGX_OK;

    for (cl = in; cl; cl = cl->next) {
        b = cl->buf;

        if (rc == NGX_OK && !ctx->done && ctx->outcome == NGX_HTTP_UNICO_OK
            && (ctx->status == NGX_HTTP_OK || ctx->token_body.len))
        {
            rc = ngx_http_unico_selfie_collect(r, ctx, b);
        }

        /* consumed: the upstream may reuse the buffer */

        b->pos = b->last;

        if (b->in_file) {
            b->file_pos = b->file_last;
        }

        if (b->last_buf || b->last_in_chain) {
            ctx->last = 1;
        }
    }

    return rc;
}


static ngx_int_t
ngx_http_unico_selfie_collect(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx, ngx_buf_t *b)
{
    u_char  *p;
    size_t   size, need;

    if (b->in_file && !ngx_buf_in_memory(b)) {
        ctx->outcome = NGX_HTTP_UNICO_FILE_BUFFER;
        return NGX_ERROR;
    }

    size = b->last - b->pos;

    if (size == 0) {
        return NGX_OK;
    }

    need = ctx->body_len + size;

    if (need > ctx->body_max) {
        ctx->outcome = NGX_HTTP_UNICO_RESPONSE_TOO_LARGE;
        return NGX_ERROR;
    }

    if (need > ctx->body_size) {

        /* no or a wrong Content-Length: grow geometrically, bounded */

        ctx->body_size = ngx_max(need, ngx_max(ctx->body_size * 2, 16384));
        ctx->body_size = ngx_min(ctx->body_size, ctx->body_max);

        p = ngx_palloc(r->pool, ctx->body_size);
        if (p == NULL) {
            ctx->outcome = NGX_HTTP_UNICO_INTERNAL;
            return NGX_ERROR;
        }

        if (ctx->body) {
            ngx_memcpy(p, ctx->body, ctx->body_len);
            ngx_pfree(r->pool, ctx->body);
        }

        ctx->body = p;
    }

    ngx_memcpy(ctx->body + ctx->body_len, b->pos, size);
    ctx->body_len = need;

    return NGX_OK;
}
