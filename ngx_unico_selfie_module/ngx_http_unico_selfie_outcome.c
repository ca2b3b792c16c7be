
/*
 * Copyright (C) ngx_unico_selfie_module authors
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Every way a request can end, in one table: the status the client gets,
 * the log level, the log line and the keyword of $unico_selfie_reason.
 * No status literal lives anywhere else in the request flow.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_unico_selfie.h"


typedef struct {
    ngx_str_t    name;          /* $unico_selfie_reason */
    ngx_uint_t   status;        /* what the client gets */
    ngx_uint_t   level;         /* gateway faults: error, client's: info */
    char        *text;          /* the log line */
} ngx_http_unico_selfie_outcome_t;


#define ngx_http_unico_outcome(kw, st, lv, tx)                               \
    { ngx_string(kw), st, lv, tx }

/*
 * The status table of docs/status-codes.md, in ngx_http_unico_selfie_outcome_e
 * order.
 */

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
    ngx_http_unico_outcome("bad_request_body", NGX_HTTP_BAD_REQUEST,
                           NGX_LOG_INFO,
                           "the request's body could not be discarded"),
    ngx_http_unico_outcome("client_closed", NGX_HTTP_CLIENT_CLOSED_REQUEST,
                           NGX_LOG_INFO,
                           "the client closed the connection before the "
                           "answer"),
    ngx_http_unico_outcome("redirected", NGX_HTTP_BAD_GATEWAY, NGX_LOG_ERR,
                           "an X-Accel-Redirect redirected the call to "
                           "Unico: set \"proxy_ignore_headers X-Accel-"
                           "Redirect\" in its location"),
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


const ngx_str_t *
ngx_http_unico_selfie_outcome_name(ngx_http_unico_selfie_outcome_e outcome)
{
    return &ngx_http_unico_selfie_outcomes[outcome].name;
}


ngx_uint_t
ngx_http_unico_selfie_outcome_status(ngx_http_unico_selfie_outcome_e outcome)
{
    return ngx_http_unico_selfie_outcomes[outcome].status;
}


ngx_http_unico_selfie_outcome_e
ngx_http_unico_selfie_payload_outcome(unico_payload_rc_e rc)
{
    if ((size_t) rc >= sizeof(ngx_http_unico_selfie_payload_map)
                       / sizeof(ngx_http_unico_selfie_payload_map[0]))
    {
        return NGX_HTTP_UNICO_INTERNAL;
    }

    return ngx_http_unico_selfie_payload_map[rc];
}


/*
 * Logs how the request ended, once: failures at the level of their row,
 * with the processId and Unico's status, never a token or an image byte.
 */

void
ngx_http_unico_selfie_outcome_log(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx)
{
    ngx_http_unico_selfie_outcome_t  *o;

    if (ctx->logged || ctx->outcome == NGX_HTTP_UNICO_OK) {
        return;
    }

    ctx->logged = 1;
    o = &ngx_http_unico_selfie_outcomes[ctx->outcome];

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
}
