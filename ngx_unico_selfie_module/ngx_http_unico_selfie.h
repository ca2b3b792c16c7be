
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
#include "unico_selfie_hash.h"


/*
 * The key of a flight or a cache entry: the processId and 16 bytes of a
 * digest of the API prefix and the credentials.
 */
#define UNICO_SELFIE_KEY_LEN  (UNICO_UUID_LEN + 16)


/*
 * Every way a request can end.  The order is the order of
 * ngx_http_unico_selfie_outcomes[] in ngx_http_unico_selfie_outcome.c: the
 * one table that maps an outcome to its status, log level, log text and
 * $unico_selfie_reason.
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
    NGX_HTTP_UNICO_BAD_REQUEST_BODY,
    NGX_HTTP_UNICO_CLIENT_CLOSED,
    NGX_HTTP_UNICO_REDIRECTED,
    NGX_HTTP_UNICO_INTERNAL,
    NGX_HTTP_UNICO_OUTCOMES_N
} ngx_http_unico_selfie_outcome_e;


/*
 * The request is a pipeline of stages in this order; the handler owns the
 * order and ctx->stage (ngx_http_unico_selfie_handler.c).  A stage takes
 * the request and answers
 *
 *     NGX_OK     go on to the next stage;
 *     NGX_AGAIN  wait: the stage has arranged to be woken, and the request
 *                then re-enters the pipeline at the same stage;
 *     NGX_DONE   the answer is known: ctx->outcome (and ctx->image when it
 *                is NGX_HTTP_UNICO_OK); the handler responds.
 *
 * No stage calls the handler: a stage wakes its request with an event
 * whose handler is ngx_http_unico_selfie_wake(), which re-runs nginx's
 * phase engine, as ngx_http_auth_request_module's subrequests re-enter
 * its handler.
 */
typedef enum {
    NGX_HTTP_UNICO_STAGE_REQUEST = 0,   /* method, processId, body */
    NGX_HTTP_UNICO_STAGE_SIGNATURE,     /* a signed URL */
    NGX_HTTP_UNICO_STAGE_CREDENTIALS,   /* who asks Unico */
    NGX_HTTP_UNICO_STAGE_CACHE,         /* the shared cache */
    NGX_HTTP_UNICO_STAGE_COALESCE,      /* another request's call */
    NGX_HTTP_UNICO_STAGE_BUDGET,        /* the Unico call budget */
    NGX_HTTP_UNICO_STAGE_TOKEN,         /* a service account's token */
    NGX_HTTP_UNICO_STAGE_FETCH,         /* the call to Get Selfie */
    NGX_HTTP_UNICO_STAGE_DECODE,        /* its answer, into an image */
    NGX_HTTP_UNICO_STAGE_RESPOND
} ngx_http_unico_selfie_stage_e;


typedef struct ngx_http_unico_selfie_account_s  ngx_http_unico_selfie_account_t;
typedef struct ngx_http_unico_selfie_ctx_s  ngx_http_unico_selfie_ctx_t;
typedef struct ngx_http_unico_selfie_fetch_s  ngx_http_unico_selfie_fetch_t;
typedef struct ngx_http_unico_selfie_cache_s  ngx_http_unico_selfie_cache_t;
typedef struct ngx_http_unico_selfie_budget_s  ngx_http_unico_selfie_budget_t;

typedef ngx_int_t (*ngx_http_unico_selfie_stage_pt)(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx);

/* called with the parent request when a fetch has come to an end */
typedef void (*ngx_http_unico_selfie_fetch_pt)(ngx_http_request_t *r,
    ngx_http_unico_selfie_fetch_t *f, ngx_int_t rc);


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

    /* the credentials' part of the key, when the configuration fixes it */
    u_char                     credentials_id[UNICO_SELFIE_KEY_LEN
                                              - UNICO_UUID_LEN];

    unsigned                   credentials_fixed:1;
    unsigned                   metrics:1;     /* unico_selfie_metrics */
} ngx_http_unico_selfie_loc_conf_t;


/*
 * One call through an internal location, the selfie's or a token's: what
 * the subrequest sends through the module's variables, and its answer as
 * the module's body filter collects it.  Set as the subrequest's context.
 */
struct ngx_http_unico_selfie_fetch_s {
    ngx_http_request_t        *subrequest;
    ngx_str_t                  authorization; /* "Bearer <token>" */
    ngx_str_t                  form;          /* a token request's body */

    ngx_uint_t                 status;
    ngx_str_t                  retry_after;
    u_char                    *body;
    size_t                     body_len;
    size_t                     body_size;
    size_t                     body_max;

    ngx_msec_t                 start;
    ngx_msec_t                 time;
    ngx_http_unico_selfie_outcome_e  outcome; /* of the transfer */

    ngx_http_unico_selfie_fetch_pt   handler;
    void                      *data;

    /*
     * The selfie's answer, with a Content-Length, is decoded as it arrives
     * (unico_payload_stream): its base64 straight into the image buffer,
     * nothing of the JSON kept.  max_image 0: the body is collected whole.
     */
    size_t                     max_image;
    unico_payload_stream_t    *stream;
    unico_payload_rc_e         stream_rc;
    unico_pool_alloc_t         alloc;

    unsigned                   done:1;        /* post_subrequest has run */
    unsigned                   last:1;        /* saw the final buffer */
    unsigned                   timed_out:1;
    unsigned                   aborted:1;     /* the client left */
    unsigned                   quiet:1;       /* holds a quiet_count */
    unsigned                   error_body:1;  /* read an error's body too */
};


/* The main request's context. */
struct ngx_http_unico_selfie_ctx_s {
    ngx_http_unico_selfie_stage_e    stage;
    ngx_http_unico_selfie_outcome_e  outcome;

    ngx_str_t                  process_id;
    ngx_str_t                  authorization; /* "Bearer <token>" */
    u_char                     key[UNICO_SELFIE_KEY_LEN];

    ngx_http_unico_selfie_fetch_t    fetch;   /* the call to Get Selfie */

    /* the answer: Unico's, a cache hit's or another request's */
    unico_image_t              image;
    ngx_uint_t                 status;        /* Unico's status */
    ngx_str_t                  retry_after;
    ngx_msec_t                 upstream_time;

    /* nginx's debug log, paused while a token is in use */
    ngx_uint_t                 log_level;
    ngx_uint_t                 quiet_count;

    /* the token stage */
    ngx_http_unico_selfie_account_t  *account;
    ngx_uint_t                 generation;    /* of the token used */
    ngx_event_t                token_ev;
    ngx_msec_t                 token_wait;

    /* the cache stage: another worker's call for the same selfie, or the
     * flight this request marked in the zone */
    ngx_event_t                cache_ev;
    ngx_http_unico_selfie_cache_t   *flight_cache;

    /* a hit, sent from the zone: the entry it holds, and how */
    ngx_http_unico_selfie_cache_t   *hit_cache;
    void                      *hit_entry;
    void                      *hit_holder;
    u_char                     etag[UNICO_ETAG_LEN];

    /* the budget stage */
    ngx_event_t                budget_ev;
    ngx_msec_t                 budget_wait;

    /* the coalescing stage: the leader's flight and followers, or a
     * follower's link */
    ngx_str_node_t             flight;
    ngx_queue_t                followers;
    ngx_queue_t                follower;
    ngx_event_t                follow_ev;

    unsigned                   waiting:1;     /* a stage waits */
    unsigned                   waited:1;      /* its client may have gone */
    unsigned                   logged:1;
    unsigned                   retried:1;     /* after a 401 */
    unsigned                   token_fresh:1; /* waited for a new token */
    unsigned                   token_polling:1;
    unsigned                   refreshing:1;  /* its own token request */
    unsigned                   budget_waiting:1;
    unsigned                   budget_taken:1;
    unsigned                   leading:1;
    unsigned                   following:1;
    unsigned                   answered:1;    /* its leader answered */
    unsigned                   rejoin:1;      /* its leader ended early */
    unsigned                   cached:1;      /* served from the cache */
    unsigned                   etag_set:1;
    unsigned                   cache_waiting:1;
};


extern ngx_module_t  ngx_http_unico_selfie_module;


/*
 * A worker that marked something in shared memory as its own (a call in
 * flight, a token refresh) and has died since: nginx's master releases a
 * dead worker's mutexes, not what it marked.  Its pid is free again only
 * once the master has reaped it; until then, or should another process
 * have it by now, the mark holds until it expires.
 */
static ngx_inline ngx_uint_t
ngx_http_unico_selfie_worker_gone(ngx_pid_t pid)
{
    return pid > 0 && pid != ngx_pid
           && kill(pid, 0) == -1 && ngx_errno == NGX_ESRCH;
}


/*
 * The handler of every waiting stage's event (ev->data is the request):
 * the request re-enters the pipeline (nginx's content phase calls the
 * handler again).
 */
static ngx_inline void
ngx_http_unico_selfie_wake(ngx_event_t *ev)
{
    ngx_connection_t             *c;
    ngx_http_request_t           *r;
    ngx_http_unico_selfie_ctx_t  *ctx;

    r = ev->data;
    c = r->connection;

    ctx = ngx_http_get_module_ctx(r, ngx_http_unico_selfie_module);
    ctx->waiting = 0;

    r->write_event_handler = ngx_http_core_run_phases;
    ngx_http_core_run_phases(r);

    ngx_http_run_posted_requests(c);
}


/* the handler: ngx_http_unico_selfie_handler.c */
ngx_int_t ngx_http_unico_selfie_handler(ngx_http_request_t *r);
ngx_http_unico_selfie_ctx_t *ngx_http_unico_selfie_get_ctx(
    ngx_http_request_t *r);

/* the outcome table: ngx_http_unico_selfie_outcome.c */
const ngx_str_t *ngx_http_unico_selfie_outcome_name(
    ngx_http_unico_selfie_outcome_e outcome);
ngx_uint_t ngx_http_unico_selfie_outcome_status(
    ngx_http_unico_selfie_outcome_e outcome);
void ngx_http_unico_selfie_outcome_log(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx);
ngx_http_unico_selfie_outcome_e ngx_http_unico_selfie_payload_outcome(
    unico_payload_rc_e rc);

/* method, processId, credentials: ngx_http_unico_selfie_request.c */
ngx_int_t ngx_http_unico_selfie_request_stage(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx);
ngx_int_t ngx_http_unico_selfie_credentials_stage(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx);
ngx_int_t ngx_http_unico_selfie_credentials_id(ngx_str_t *api,
    ngx_uint_t account, ngx_str_t *cred, u_char *out);

/* signed URLs: ngx_http_unico_selfie_signature.c */
char *ngx_http_unico_selfie_signature_keys(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
ngx_int_t ngx_http_unico_selfie_signature_stage(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx);

/* the cache: ngx_http_unico_selfie_cache.c */
char *ngx_http_unico_selfie_cache_zone(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_unico_selfie_cache(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_unico_selfie_cache_merge(ngx_conf_t *cf,
    ngx_http_unico_selfie_loc_conf_t *conf,
    ngx_http_unico_selfie_loc_conf_t *prev);
ngx_int_t ngx_http_unico_selfie_cache_init_process(ngx_cycle_t *cycle);
ngx_int_t ngx_http_unico_selfie_cache_stage(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx);
void ngx_http_unico_selfie_cache_put(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx);
void ngx_http_unico_selfie_cache_flight_end(ngx_http_unico_selfie_ctx_t *ctx);
void ngx_http_unico_selfie_cache_cleanup(ngx_http_unico_selfie_ctx_t *ctx);
size_t ngx_http_unico_selfie_cache_metrics_len(ngx_cycle_t *cycle);
u_char *ngx_http_unico_selfie_cache_metrics(ngx_cycle_t *cycle, u_char *p);

/* coalescing: ngx_http_unico_selfie_coalesce.c */
ngx_int_t ngx_http_unico_selfie_coalesce_stage(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx);
void ngx_http_unico_selfie_coalesce_publish(ngx_http_unico_selfie_ctx_t *ctx);
void ngx_http_unico_selfie_coalesce_cleanup(ngx_http_unico_selfie_ctx_t *ctx);

/* the call budget: ngx_http_unico_selfie_budget.c */
char *ngx_http_unico_selfie_budget(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_unico_selfie_budget_stage(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx);
void ngx_http_unico_selfie_budget_refund(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx);
void ngx_http_unico_selfie_budget_cleanup(ngx_http_unico_selfie_ctx_t *ctx);

/* service accounts: ngx_http_unico_selfie_token.c */
char *ngx_http_unico_selfie_service_account(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
char *ngx_http_unico_selfie_account(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_unico_selfie_token_init(ngx_cycle_t *cycle);
void ngx_http_unico_selfie_account_id(ngx_http_unico_selfie_account_t *acct,
    ngx_str_t *id);
ngx_int_t ngx_http_unico_selfie_token_stage(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx);
void ngx_http_unico_selfie_token_reject(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx);
void ngx_http_unico_selfie_token_cleanup(ngx_http_unico_selfie_ctx_t *ctx);
void ngx_http_unico_selfie_token_counts(ngx_cycle_t *cycle,
    ngx_atomic_uint_t *ok, ngx_atomic_uint_t *failed);

/* subrequests and their answers: ngx_http_unico_selfie_fetch.c */
ngx_int_t ngx_http_unico_selfie_fetch_stage(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx);
ngx_int_t ngx_http_unico_selfie_fetch(ngx_http_request_t *r,
    ngx_http_unico_selfie_fetch_t *f, ngx_str_t *uri, ngx_uint_t flags);
void ngx_http_unico_selfie_fetch_reset(ngx_http_request_t *r,
    ngx_http_unico_selfie_fetch_t *f);
ngx_uint_t ngx_http_unico_selfie_client_gone(ngx_http_request_t *r);
ngx_int_t ngx_http_unico_selfie_filter_init(ngx_conf_t *cf);
void ngx_http_unico_selfie_quiet(ngx_http_request_t *r,
    ngx_http_unico_selfie_fetch_t *f);
void ngx_http_unico_selfie_unquiet(ngx_http_request_t *r,
    ngx_http_unico_selfie_fetch_t *f);

/* Unico's answer, into an image: ngx_http_unico_selfie_decode.c */
ngx_int_t ngx_http_unico_selfie_decode_stage(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx);

/* the response: ngx_http_unico_selfie_respond.c */
char *ngx_http_unico_selfie_cache_control(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_unico_selfie_send_image(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx);
ngx_int_t ngx_http_unico_selfie_send_failure(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx);

/* counters: ngx_http_unico_selfie_metrics.c */
char *ngx_http_unico_selfie_metrics(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_unico_selfie_metrics_init(ngx_conf_t *cf);


#endif /* _NGX_HTTP_UNICO_SELFIE_H_INCLUDED_ */
