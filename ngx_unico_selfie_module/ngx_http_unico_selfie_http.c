
/*
 * Copyright (C) ngx_unico_selfie_module authors
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * HTTP semantics of the image response: Cache-Control, a strong ETag and
 * byte ranges.
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

ngx_int_t
ngx_http_unico_selfie_set_cache_headers(ngx_http_request_t *r,
    u_char *image, size_t len)
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

        unico_etag(h->value.data, image, len);

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
