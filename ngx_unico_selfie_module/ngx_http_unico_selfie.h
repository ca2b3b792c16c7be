
/*
 * Copyright (C) ngx_unico_selfie_module authors
 * SPDX-License-Identifier: BSD-2-Clause
 */


#ifndef _NGX_HTTP_UNICO_SELFIE_H_INCLUDED_
#define _NGX_HTTP_UNICO_SELFIE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "unico_selfie_payload.h"


/*
 * A request waiting for a token, a budget, its leader or its subrequest:
 * distinct from NGX_AGAIN, which the output filter returns for a response
 * not yet written whole.
 */
#define NGX_HTTP_UNICO_WAITING  NGX_BUSY


/* the key of a flight or a cache entry: processId and location */
#define UNICO_SELFIE_KEY_LEN  (UNICO_UUID_LEN + sizeof(void *))


/*
 * Every way a request can end.  The order is the order of
 * ngx_http_unico_selfie_outcomes[] in the handler: the one table that maps
 * an outcome to its status, log level, log text and $unico_selfie_reason.
 */
typedef enum {
    NGX_HTTP_UNICO_OK = 0,
    NGX_HTTP_UNICO_BAD_METHOD,
    NGX_HTTP_UNICO_BAD_PROCESS_ID,
    NGX_HTTP_UNICO_NO_SIGNATURE,
    NGX_HTTP_UNICO_BAD_SIGNATURE,
    NGX_HTTP_UNICO_SIGNATURE_EXPIRED,
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
    NGX_HTTP_UNICO_TOKEN_FAILED,
    NGX_HTTP_UNICO_TOKEN_UNAVAILABLE,
    NGX_HTTP_UNICO_TOKEN_TIMEOUT,
    NGX_HTTP_UNICO_OVER_BUDGET,
    NGX_HTTP_UNICO_INTERNAL,
    NGX_HTTP_UNICO_OUTCOMES_N
} ngx_http_unico_selfie_outcome_e;


typedef struct ngx_http_unico_selfie_account_s  ngx_http_unico_selfie_account_t;
typedef struct ngx_http_unico_selfie_ctx_s  ngx_http_unico_selfie_ctx_t;
typedef struct ngx_http_unico_selfie_cache_s  ngx_http_unico_selfie_cache_t;
typedef struct ngx_http_unico_selfie_budget_s  ngx_http_unico_selfie_budget_t;


typedef struct {
    ngx_http_complex_value_t  *process_id;    /* unico_selfie */
    ngx_str_t                  api;           /* unico_selfie_api */
    ngx_http_complex_value_t  *token;         /* unico_selfie_token */
    ngx_http_unico_selfie_account_t  *account; /* unico_selfie_account */
    size_t                     max_size;      /* unico_selfie_max_size */
    ngx_http_unico_selfie_cache_t   *cache;   /* unico_selfie_cache */
    ngx_shm_zone_t            *cache_zone;
    ngx_http_unico_selfie_budget_t  *budget;  /* unico_selfie_budget */

    /* unico_selfie_signature_keys: NULL when off */
    struct unico_sig_keys_s   *signature_keys;
    time_t                     signature_skew;
    ngx_str_t                  cache_control; /* len 0: off */

    u_char                    *file;          /* where unico_selfie was set */
    ngx_uint_t                 line;
} ngx_http_unico_selfie_loc_conf_t;


/*
 * The main request's context; a token subrequest gets one of its own for
 * collecting the answer, with main pointing to the request's.
 */
struct ngx_http_unico_selfie_ctx_s {
    ngx_http_request_t        *subrequest;
    ngx_http_unico_selfie_ctx_t  *main;
    ngx_str_t                  process_id;
    ngx_str_t                  authorization; /* "Bearer <token>" */
    ngx_str_t                  token_body;    /* the token request's form */

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
    ngx_uint_t                 quiet_count;   /* fetches keeping it quiet */

    /* service account */
    ngx_http_unico_selfie_account_t  *account;
    ngx_uint_t                 generation;    /* of the token used */
    ngx_event_t                wait_ev;       /* token, budget, leader */
    ngx_msec_t                 wait_start;

    /* coalescing: the leader's flight and followers, or a follower's link */
    ngx_str_node_t             flight;
    ngx_queue_t                followers;
    ngx_queue_t                follower;
    u_char                     key[UNICO_SELFIE_KEY_LEN];
    unico_image_t              image;         /* a follower's or a hit */

    unsigned                   waiting:1;     /* subrequest in flight */
    unsigned                   done:1;        /* post_subrequest has run */
    unsigned                   last:1;        /* saw the final buffer */
    unsigned                   timed_out:1;
    unsigned                   quiet:1;       /* holds a quiet_count */
    unsigned                   waiting_token:1;
    unsigned                   retried:1;     /* after a 401 */
    unsigned                   token_fresh:1; /* waited for a new token */
    unsigned                   leading:1;
    unsigned                   following:1;
    unsigned                   rejoin:1;      /* its leader ended early */
    unsigned                   budget_waiting:1;
    unsigned                   cached:1;      /* served from the cache */
};


ngx_int_t ngx_http_unico_selfie_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_unico_selfie_start(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx);
void ngx_http_unico_selfie_continue(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx, ngx_int_t rc);
ngx_int_t ngx_http_unico_selfie_fail(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx, ngx_http_unico_selfie_outcome_e outcome);
void ngx_http_unico_selfie_quiet(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx);
void ngx_http_unico_selfie_unquiet(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx);

ngx_int_t ngx_http_unico_selfie_proceed(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx);
ngx_int_t ngx_http_unico_selfie_deliver(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx);
ngx_int_t ngx_http_unico_selfie_fetch_done(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx, ngx_int_t rc);
ngx_int_t ngx_http_unico_selfie_fetch_rc(ngx_http_request_t *r,
    ngx_int_t rc);

/* coalescing, cache, budget: ngx_http_unico_selfie_cache.c */
char *ngx_http_unico_selfie_cache_zone(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_unico_selfie_cache(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_unico_selfie_cache_merge(ngx_conf_t *cf,
    ngx_http_unico_selfie_loc_conf_t *conf,
    ngx_http_unico_selfie_loc_conf_t *prev);
ngx_int_t ngx_http_unico_selfie_cache_get(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx, unico_image_t *image);
void ngx_http_unico_selfie_cache_put(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx, unico_image_t *image);
ngx_int_t ngx_http_unico_selfie_coalesce_join(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx);
void ngx_http_unico_selfie_coalesce_done(ngx_http_unico_selfie_ctx_t *ctx,
    ngx_http_unico_selfie_outcome_e outcome, unico_image_t *image);
void ngx_http_unico_selfie_coalesce_cleanup(ngx_http_unico_selfie_ctx_t *ctx);
char *ngx_http_unico_selfie_budget(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_unico_selfie_budget_take(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx);

/* the service account: ngx_http_unico_selfie_token.c */
char *ngx_http_unico_selfie_service_account(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
char *ngx_http_unico_selfie_account(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_unico_selfie_account_acquire(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx);
void ngx_http_unico_selfie_account_reject(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx);
void ngx_http_unico_selfie_account_cleanup(ngx_http_unico_selfie_ctx_t *ctx);
ngx_int_t ngx_http_unico_selfie_filter_init(ngx_conf_t *cf);

/* signed URLs: ngx_http_unico_selfie_signature.c */
char *ngx_http_unico_selfie_signature_keys(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
ngx_http_unico_selfie_outcome_e ngx_http_unico_selfie_signature_check(
    ngx_http_request_t *r, ngx_http_unico_selfie_loc_conf_t *uslcf,
    ngx_str_t *id);

/* Cache-Control, ETag, ranges: ngx_http_unico_selfie_http.c */
char *ngx_http_unico_selfie_cache_control(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_unico_selfie_set_cache_headers(ngx_http_request_t *r,
    u_char *image, size_t len);

/* counters: ngx_http_unico_selfie_metrics.c */
char *ngx_http_unico_selfie_metrics(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_unico_selfie_metrics_init(ngx_conf_t *cf);
void ngx_http_unico_selfie_metrics_token_refresh(ngx_uint_t ok);
ngx_http_unico_selfie_ctx_t *ngx_http_unico_selfie_get_ctx(
    ngx_http_request_t *r);
const ngx_str_t *ngx_http_unico_selfie_outcome_name(
    ngx_http_unico_selfie_outcome_e outcome);


extern ngx_module_t  ngx_http_unico_selfie_module;


#endif /* _NGX_HTTP_UNICO_SELFIE_H_INCLUDED_ */
