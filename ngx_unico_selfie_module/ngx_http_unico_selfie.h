
/*
 * Copyright (C) ngx_unico_selfie_module authors
 */


#ifndef _NGX_HTTP_UNICO_SELFIE_H_INCLUDED_
#define _NGX_HTTP_UNICO_SELFIE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


/*
 * Every way a request can end.  The order is the order of
 * ngx_http_unico_selfie_outcomes[] in the handler: the one table that maps
 * an outcome to its status, log level, log text and $unico_selfie_reason.
 */
typedef enum {
    NGX_HTTP_UNICO_OK = 0,
    NGX_HTTP_UNICO_BAD_METHOD,
    NGX_HTTP_UNICO_BAD_PROCESS_ID,
    NGX_HTTP_UNICO_NO_TOKEN,
    NGX_HTTP_UNICO_BAD_TOKEN,
    NGX_HTTP_UNICO_UNICO_400,
    NGX_HTTP_UNICO_UNICO_401,
    NGX_HTTP_UNICO_UNICO_403,
    NGX_HTTP_UNICO_UNICO_404,
    NGX_HTTP_UNICO_UNICO_429,
    NGX_HTTP_UNICO_UNICO_5XX,
    NGX_HTTP_UNICO_UNICO_STATUS,
    NGX_HTTP_UNICO_UPSTREAM_ERROR,
    NGX_HTTP_UNICO_UPSTREAM_TIMEOUT,
    NGX_HTTP_UNICO_TRUNCATED,
    NGX_HTTP_UNICO_RESPONSE_TOO_LARGE,
    NGX_HTTP_UNICO_ENCODED,
    NGX_HTTP_UNICO_FILE_BUFFER,
    NGX_HTTP_UNICO_BAD_JSON,
    NGX_HTTP_UNICO_NOT_OBJECT,
    NGX_HTTP_UNICO_MISSING_FIELD,
    NGX_HTTP_UNICO_WRONG_TYPE,
    NGX_HTTP_UNICO_DUPLICATE_FIELD,
    NGX_HTTP_UNICO_BAD_CONTENT_TYPE,
    NGX_HTTP_UNICO_BAD_BASE64,
    NGX_HTTP_UNICO_EMPTY_IMAGE,
    NGX_HTTP_UNICO_IMAGE_MISMATCH,
    NGX_HTTP_UNICO_IMAGE_TOO_LARGE,
    NGX_HTTP_UNICO_INTERNAL,
    NGX_HTTP_UNICO_OUTCOMES_N
} ngx_http_unico_selfie_outcome_e;


typedef struct {
    ngx_http_complex_value_t  *process_id;    /* unico_selfie */
    ngx_str_t                  api;           /* unico_selfie_api */
    ngx_http_complex_value_t  *token;         /* unico_selfie_token */
    size_t                     max_size;      /* unico_selfie_max_size */

    u_char                    *file;          /* where unico_selfie was set */
    ngx_uint_t                 line;
} ngx_http_unico_selfie_loc_conf_t;


typedef struct {
    ngx_http_request_t        *subrequest;
    ngx_str_t                  process_id;
    ngx_str_t                  authorization; /* "Bearer <token>" */

    /* Unico's answer as it arrives through the body filter */
    ngx_uint_t                 status;
    ngx_str_t                  retry_after;
    u_char                    *body;
    size_t                     body_len;
    size_t                     body_size;
    size_t                     body_max;

    ngx_msec_t                 start;
    ngx_msec_t                 upstream_time;
    size_t                     image_len;
    ngx_http_unico_selfie_outcome_e  outcome;
    ngx_uint_t                 log_level;     /* saved while quiet */

    unsigned                   waiting:1;     /* subrequest in flight */
    unsigned                   done:1;        /* post_subrequest has run */
    unsigned                   last:1;        /* saw the final buffer */
    unsigned                   timed_out:1;
    unsigned                   quiet:1;       /* debug log masked */
} ngx_http_unico_selfie_ctx_t;


ngx_int_t ngx_http_unico_selfie_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_unico_selfie_filter_init(ngx_conf_t *cf);
ngx_http_unico_selfie_ctx_t *ngx_http_unico_selfie_get_ctx(
    ngx_http_request_t *r);
const ngx_str_t *ngx_http_unico_selfie_outcome_name(
    ngx_http_unico_selfie_outcome_e outcome);


extern ngx_module_t  ngx_http_unico_selfie_module;


#endif /* _NGX_HTTP_UNICO_SELFIE_H_INCLUDED_ */
