
/*
 * Copyright (C) ngx_unico_selfie_module authors
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * The content handler: it owns the pipeline.  A request runs the stages in
 * order (ngx_http_unico_selfie.h): request, signature, credentials, cache,
 * coalescing, budget, token, fetch, decode, and then responds.  A stage
 * that waits arranges its own wake-up; the request then re-enters this
 * handler, which runs it again from ctx->stage.  Every ending goes through
 * one place, ngx_http_unico_selfie_respond(), and the outcome table.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_unico_selfie.h"


static ngx_int_t ngx_http_unico_selfie_run(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx);
static ngx_uint_t ngx_http_unico_selfie_retry(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx);
static ngx_int_t ngx_http_unico_selfie_respond(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx);
static void ngx_http_unico_selfie_wait_reading(ngx_http_request_t *r);
static void ngx_http_unico_selfie_cleanup(void *data);


static ngx_http_unico_selfie_stage_pt  ngx_http_unico_selfie_stages[] = {
    ngx_http_unico_selfie_request_stage,       /* STAGE_REQUEST */
    ngx_http_unico_selfie_signature_stage,     /* STAGE_SIGNATURE */
    ngx_http_unico_selfie_credentials_stage,   /* STAGE_CREDENTIALS */
    ngx_http_unico_selfie_cache_stage,         /* STAGE_CACHE */
    ngx_http_unico_selfie_coalesce_stage,      /* STAGE_COALESCE */
    ngx_http_unico_selfie_budget_stage,        /* STAGE_BUDGET */
    ngx_http_unico_selfie_token_stage,         /* STAGE_TOKEN */
    ngx_http_unico_selfie_fetch_stage,         /* STAGE_FETCH */
    ngx_http_unico_selfie_decode_stage         /* STAGE_DECODE */
};


ngx_int_t
ngx_http_unico_selfie_handler(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t           *cln;
    ngx_http_unico_selfie_ctx_t  *ctx;

    if (r != r->main) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "unico selfie: \"unico_selfie\" does not serve "
                      "subrequests: check \"unico_selfie_api\"");
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_unico_selfie_module);

    if (ctx) {
        /* a waiting stage woke the request */

        if (ctx->waiting || ctx->stage == NGX_HTTP_UNICO_STAGE_RESPOND) {
            /* not its own event: it goes on waiting, or has answered */
            r->main->count++;
            return NGX_DONE;
        }

        return ngx_http_unico_selfie_run(r, ctx);
    }

    if (ngx_http_unico_selfie_get_ctx(r)) {
        /* an internal redirect (error_page) back into this location */
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "unico selfie: location entered twice in one request");
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_unico_selfie_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     ctx->stage = NGX_HTTP_UNICO_STAGE_REQUEST;
     *     ctx->outcome = NGX_HTTP_UNICO_OK;
     */

    /* the context survives error_page redirects for the log variables */

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_unico_selfie_cleanup;
    cln->data = ctx;

    ngx_http_set_ctx(r, ctx, ngx_http_unico_selfie_module);

    return ngx_http_unico_selfie_run(r, ctx);
}


static ngx_int_t
ngx_http_unico_selfie_run(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx)
{
    ngx_int_t  rc;

    while (ctx->stage < NGX_HTTP_UNICO_STAGE_RESPOND) {

        rc = ngx_http_unico_selfie_stages[ctx->stage](r, ctx);

        if (rc == NGX_OK) {
            ctx->stage++;
            continue;
        }

        if (rc == NGX_AGAIN) {
            /*
             * Nothing else wakes a content handler: the stage's event
             * will.  Meanwhile a client that closes its connection, or
             * resets its HTTP/2 stream, ends the request at once: it then
             * makes no call and takes no budget.
             */

            ctx->waiting = 1;
            ctx->waited = 1;

            if (!r->discard_body) {
                r->read_event_handler = ngx_http_unico_selfie_wait_reading;
            }

            r->main->count++;
            return NGX_DONE;
        }

        /* NGX_DONE: the answer is known */

        if (!ngx_http_unico_selfie_retry(r, ctx)) {
            break;
        }
    }

    ctx->stage = NGX_HTTP_UNICO_STAGE_RESPOND;

    return ngx_http_unico_selfie_respond(r, ctx);
}


/*
 * Unico's 401 to a service account's token: that token is dropped, and
 * the request goes back to the budget (a second call is a call) and the
 * token stage once, with a new token.
 */

static ngx_uint_t
ngx_http_unico_selfie_retry(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx)
{
    if (ctx->outcome != NGX_HTTP_UNICO_UNICO_401 || ctx->account == NULL
        || ctx->retried)
    {
        return 0;
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "unico selfie: Unico refused the service account's token, "
                  "retrying with a new one, processId: \"%V\"",
                  &ctx->process_id);

    ctx->retried = 1;
    ctx->outcome = NGX_HTTP_UNICO_OK;
    ctx->status = 0;
    ctx->retry_after.len = 0;
    ctx->budget_taken = 0;
    ctx->authorization.len = 0;

    ngx_http_unico_selfie_token_reject(r, ctx);
    ngx_http_unico_selfie_fetch_reset(r, &ctx->fetch);

    ctx->stage = NGX_HTTP_UNICO_STAGE_BUDGET;

    return 1;
}


/*
 * The end of every request that ran the pipeline: the requests waiting for
 * its call get its answer, the cache gets a fetched image, the outcome is
 * logged once, and the client gets the image or the outcome's status.
 */

static ngx_int_t
ngx_http_unico_selfie_respond(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx)
{
    ngx_http_unico_selfie_coalesce_publish(ctx);

    if (ctx->budget_taken && ctx->fetch.subrequest == NULL) {
        /* no call was made after all: its share of the budget goes back */
        ngx_http_unico_selfie_budget_refund(r, ctx);
    }

    ngx_http_unico_selfie_outcome_log(r, ctx);

    if (ctx->outcome != NGX_HTTP_UNICO_OK) {
        ngx_http_unico_selfie_cache_flight_end(ctx);
        return ngx_http_unico_selfie_send_failure(r, ctx);
    }

    if (ctx->fetch.done) {
        ngx_http_unico_selfie_cache_put(r, ctx);
    }

    ngx_http_unico_selfie_cache_flight_end(ctx);

    return ngx_http_unico_selfie_send_image(r, ctx);
}


/*
 * The read handler of a waiting request, as ngx_http_test_reading(), with
 * the ending recorded as client_closed.
 */

static void
ngx_http_unico_selfie_wait_reading(ngx_http_request_t *r)
{
    ngx_event_t                  *rev;
    ngx_http_unico_selfie_ctx_t  *ctx;

    rev = r->connection->read;

    if (!ngx_http_unico_selfie_client_gone(r)) {

        /* aio does not call this handler */

        if ((ngx_event_flags & NGX_USE_LEVEL_EVENT) && rev->active) {
            if (ngx_del_event(rev, NGX_READ_EVENT, 0) != NGX_OK) {
                ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
            }
        }

        return;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_unico_selfie_module);

    if (ctx) {
        ctx->outcome = NGX_HTTP_UNICO_CLIENT_CLOSED;
        ngx_http_unico_selfie_outcome_log(r, ctx);
    }

    ngx_http_finalize_request(r, NGX_HTTP_CLIENT_CLOSED_REQUEST);
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

    if (r != r->main) {
        return NULL;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_unico_selfie_module);

    if (ctx != NULL || !r->internal) {
        return ctx;
    }

    for (cln = r->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler == ngx_http_unico_selfie_cleanup) {
            return cln->data;
        }
    }

    return NULL;
}


/* the request is gone: each stage lets go of what it holds */

static void
ngx_http_unico_selfie_cleanup(void *data)
{
    ngx_http_unico_selfie_ctx_t  *ctx = data;

    /* the body lives in the request pool and goes with it */

    ngx_http_unico_selfie_coalesce_cleanup(ctx);
    ngx_http_unico_selfie_cache_cleanup(ctx);
    ngx_http_unico_selfie_budget_cleanup(ctx);
    ngx_http_unico_selfie_token_cleanup(ctx);
}
