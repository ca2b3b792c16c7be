
/*
 * Copyright (C) ngx_unico_selfie_module authors
 *
 * The decode stage: Unico's answer to the call becomes an image, or the
 * outcome that says why it did not.  The JSON, the base64 and the image
 * check are the pure core's (unico_selfie_payload.c).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_unico_selfie.h"


static ngx_http_unico_selfie_outcome_e ngx_http_unico_selfie_classify(
    ngx_http_unico_selfie_fetch_t *f);


ngx_int_t
ngx_http_unico_selfie_decode_stage(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx)
{
    unico_payload_rc_e                 rc;
    ngx_http_unico_selfie_fetch_t     *f;
    ngx_http_unico_selfie_loc_conf_t  *uslcf;

    f = &ctx->fetch;

    ctx->status = f->status;
    ctx->retry_after = f->retry_after;
    ctx->upstream_time = f->time;

    ctx->outcome = ngx_http_unico_selfie_classify(f);

    if (ctx->outcome != NGX_HTTP_UNICO_OK) {
        return NGX_DONE;
    }

    if (f->stream) {
        /* decoded as it arrived: the first problem met, or the image */

        rc = (f->stream_rc != UNICO_PAYLOAD_OK)
             ? f->stream_rc
             : unico_payload_stream_finish(f->stream, &ctx->image);

        unico_payload_stream_destroy(f->stream);
        f->stream = NULL;

    } else {
        uslcf = ngx_http_get_module_loc_conf(r, ngx_http_unico_selfie_module);

        rc = unico_payload_parse(f->body, f->body_len, uslcf->max_size,
                                 &ctx->image);
    }

    if (rc != UNICO_PAYLOAD_OK) {
        ctx->outcome = ngx_http_unico_selfie_payload_outcome(rc);
        return NGX_DONE;
    }

    return NGX_OK;
}


static ngx_http_unico_selfie_outcome_e
ngx_http_unico_selfie_classify(ngx_http_unico_selfie_fetch_t *f)
{
    if (f->outcome != NGX_HTTP_UNICO_OK) {
        return f->outcome;
    }

    switch (f->status) {

    case NGX_HTTP_OK:
        break;

    case 0:
        return f->timed_out ? NGX_HTTP_UNICO_UPSTREAM_TIMEOUT
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
        return (f->status >= 500 && f->status <= 599)
               ? NGX_HTTP_UNICO_UNICO_5XX : NGX_HTTP_UNICO_UNICO_STATUS;
    }

    if (!f->last) {
        return f->timed_out ? NGX_HTTP_UNICO_UPSTREAM_TIMEOUT
                            : NGX_HTTP_UNICO_TRUNCATED;
    }

    return NGX_HTTP_UNICO_OK;
}
