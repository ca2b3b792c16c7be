
/*
 * Copyright (C) ngx_unico_selfie_module authors
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * The response: the image with its Content-Type, Content-Length,
 * X-Content-Type-Options, Cache-Control, a strong ETag and byte ranges, or
 * a failure's status with the headers it carries (Allow, Retry-After).
 *
 * Conditional and range requests are left to nginx's own filters, as the
 * static module does: the response carries r->headers_out.etag and
 * r->allow_ranges, and its body is one in-memory buffer with last_buf set.
 * The not_modified filter then turns a matching If-None-Match into 304
 * (and refuses a failed If-Match with 412), the range filter answers
 * "Range: bytes=..." with 206 (multipart/byteranges for several ranges)
 * or 416, and If-Range compares against the ETag.  There is no
 * Last-Modified: Unico does not say when a selfie was taken.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_unico_selfie.h"
#include "unico_selfie_hash.h"


static ngx_int_t ngx_http_unico_selfie_set_cache_headers(
    ngx_http_request_t *r, ngx_http_unico_selfie_ctx_t *ctx);
static ngx_int_t ngx_http_unico_selfie_add_header(ngx_http_request_t *r,
    ngx_str_t *key, ngx_str_t *value);
static ngx_table_elt_t *ngx_http_unico_selfie_cache_control_header(
    ngx_http_request_t *r);


/* unico_selfie_cache_control <value> | off; */

char *
ngx_http_unico_selfie_cache_control(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_unico_selfie_loc_conf_t *uslcf = conf;

    u_char     *p;
    ngx_str_t  *value;

    if (uslcf->cache_control.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        uslcf->cache_control.len = 0;
        uslcf->cache_control.data = (u_char *) "";
        return NGX_CONF_OK;
    }

    if (value[1].len == 0) {
        return "must not be empty: use \"off\" for no Cache-Control";
    }

    for (p = value[1].data; p < value[1].data + value[1].len; p++) {
        if (*p < 0x20 || *p == 0x7f) {
            return "must not contain control characters";
        }
    }

    uslcf->cache_control = value[1];

    return NGX_CONF_OK;
}


/*
 * The validators and caching headers of an image about to be sent:
 * Cache-Control, ETag (from the bytes) and the permission to serve ranges.
 */

static ngx_int_t
ngx_http_unico_selfie_set_cache_headers(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx)
{
    ngx_table_elt_t                   *h;
    ngx_http_core_loc_conf_t          *clcf;
    ngx_http_unico_selfie_loc_conf_t  *uslcf;

    uslcf = ngx_http_get_module_loc_conf(r, ngx_http_unico_selfie_module);

    if (uslcf->cache_control.len) {
        h = ngx_http_unico_selfie_cache_control_header(r);
        if (h == NULL) {
            return NGX_ERROR;
        }

        h->value = uslcf->cache_control;
    }

    /* "etag off" turns the validator off here too, as for static files */

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    if (clcf->etag) {
        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            return NGX_ERROR;
        }

        h->value.data = ngx_pnalloc(r->pool, UNICO_ETAG_LEN);
        if (h->value.data == NULL) {
            h->hash = 0;
            return NGX_ERROR;
        }

        if (!ctx->etag_set) {
            unico_etag(ctx->etag, ctx->image.data, ctx->image.len);
            ctx->etag_set = 1;
        }

        ngx_memcpy(h->value.data, ctx->etag, UNICO_ETAG_LEN);

        h->hash = 1;
        ngx_str_set(&h->key, "ETag");
        h->value.len = UNICO_ETAG_LEN;
#if (nginx_version >= 1023000)
        h->next = NULL;
#endif

        r->headers_out.etag = h;
    }

    r->headers_out.last_modified_time = -1;
    r->allow_ranges = 1;

    return NGX_OK;
}


ngx_int_t
ngx_http_unico_selfie_send_image(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx)
{
    ngx_int_t       rc;
    ngx_buf_t      *b;
    ngx_chain_t     out;
    const char     *mime;
    unico_image_t  *image;

    static ngx_str_t  nosniff_key = ngx_string("X-Content-Type-Options");
    static ngx_str_t  nosniff = ngx_string("nosniff");

    image = &ctx->image;
    mime = unico_image_mime(image->type);

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = image->len;
    r->headers_out.content_type.len = ngx_strlen(mime);
    r->headers_out.content_type.data = (u_char *) mime;
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    if (ngx_http_unico_selfie_add_header(r, &nosniff_key, &nosniff) != NGX_OK
        || ngx_http_unico_selfie_set_cache_headers(r, ctx) != NGX_OK)
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


/* A failure: the status of its outcome, for nginx's error page. */

ngx_int_t
ngx_http_unico_selfie_send_failure(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx)
{
    static ngx_str_t  allow_key = ngx_string("Allow");
    static ngx_str_t  allow = ngx_string("GET, HEAD");
    static ngx_str_t  retry_key = ngx_string("Retry-After");

    if (ctx->outcome == NGX_HTTP_UNICO_BAD_METHOD) {
        if (ngx_http_unico_selfie_add_header(r, &allow_key, &allow)
            != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    if ((ctx->outcome == NGX_HTTP_UNICO_UNICO_429
         || ctx->outcome == NGX_HTTP_UNICO_OVER_BUDGET)
        && ctx->retry_after.len)
    {
        if (ngx_http_unico_selfie_add_header(r, &retry_key, &ctx->retry_after)
            != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    return ngx_http_unico_selfie_outcome_status(ctx->outcome);
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


/*
 * The response's one Cache-Control header, found or added the way the
 * "expires" directive of ngx_http_headers_filter_module does, so that
 * "expires", "add_header" and $sent_http_cache_control see it:
 * r->headers_out.cache_control is a list linked through "next" since nginx
 * 1.23.0 and an array of pointers before.  A Cache-Control already there is
 * reused and any further ones are hidden.
 */

static ngx_table_elt_t *
ngx_http_unico_selfie_cache_control_header(ngx_http_request_t *r)
{
    ngx_table_elt_t   *cc;
#if (nginx_version < 1023000)
    ngx_uint_t         i;
    ngx_table_elt_t  **ccp;
#endif

#if (nginx_version >= 1023000)

    cc = r->headers_out.cache_control;

    if (cc) {
        for (cc = cc->next; cc; cc = cc->next) {
            cc->hash = 0;
        }

        cc = r->headers_out.cache_control;
        cc->next = NULL;

        return cc;
    }

    cc = ngx_list_push(&r->headers_out.headers);
    if (cc == NULL) {
        return NULL;
    }

    r->headers_out.cache_control = cc;
    cc->next = NULL;

#else

    ccp = r->headers_out.cache_control.elts;

    if (ccp && r->headers_out.cache_control.nelts) {

        /* $sent_http_cache_control joins every element, hidden or not */

        for (i = 1; i < r->headers_out.cache_control.nelts; i++) {
            ccp[i]->hash = 0;
        }

        r->headers_out.cache_control.nelts = 1;

        return ccp[0];
    }

    if (ccp == NULL
        && ngx_array_init(&r->headers_out.cache_control, r->pool, 1,
                          sizeof(ngx_table_elt_t *))
           != NGX_OK)
    {
        return NULL;
    }

    cc = ngx_list_push(&r->headers_out.headers);
    if (cc == NULL) {
        return NULL;
    }

    ccp = ngx_array_push(&r->headers_out.cache_control);
    if (ccp == NULL) {
        cc->hash = 0;
        return NULL;
    }

    *ccp = cc;

#endif

    cc->hash = 1;
    ngx_str_set(&cc->key, "Cache-Control");

    return cc;
}
